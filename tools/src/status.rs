//! `cairn status` and `cairn health`: what `ceph -s` and `ceph health [detail]` show.

use anyhow::Result;
use proto::message::{Severity, StatusReport};

use crate::Format;
use crate::connect::Connect;
use crate::map::print_json;

pub async fn status(connect: &Connect) -> Result<()> {
    let status = connect.client()?.status().await?;
    match connect.format {
        Format::Plain => print!("{}", render_status(&status)),
        Format::Json => print_json(&status)?,
    }
    Ok(())
}

pub fn render_status(s: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ =
        writeln!(out, "  cluster:\n    id:     {}\n    health: {}", s.fsid, s.health.health_name());
    for check in &s.checks {
        let _ = writeln!(out, "            {}", check.summary);
    }
    let quorum: Vec<&str> =
        s.monitors.iter().filter(|m| m.in_quorum).map(|m| m.name.as_str()).collect();
    let leader = s.leader.as_deref().map_or("none".to_owned(), |l| format!("mon.{l}"));
    let _ = writeln!(
        out,
        "\n  services:\n    mon: {} daemons, quorum {} (leader {leader}, term {})",
        s.monitors.len(),
        if quorum.is_empty() { "none".into() } else { quorum.join(",") },
        s.term
    );
    let _ = writeln!(out, "    osd: {} osds: {} up, {} in", s.osds.total, s.osds.up, s.osds.r#in);
    let flags =
        if s.flags.is_empty() { String::new() } else { format!("; flags {}", s.flags.join(",")) };
    let _ = writeln!(
        out,
        "\n  data:\n    pools:   {} pools, {} pgs\n    map:     epoch {}{flags}",
        s.pools, s.pgs, s.epoch
    );
    let pgs = &s.pg_summary;
    if pgs.pgs > 0 {
        let _ = writeln!(
            out,
            "    objects: {} objects, {}\n    pgs:     {}",
            pgs.objects,
            crate::units::bytes(pgs.bytes),
            crate::pg::states(pgs)
        );
        for line in crate::pg::progress(pgs) {
            let _ = writeln!(out, "             {line}");
        }
    }
    out
}

pub async fn health(connect: &Connect, detail: bool) -> Result<()> {
    let status = connect.client()?.status().await?;
    match connect.format {
        Format::Json => print_json(
            &serde_json::json!({ "status": status.health.health_name(), "checks": status.checks }),
        )?,
        Format::Plain => {
            let summaries: Vec<&str> = status.checks.iter().map(|c| c.summary.as_str()).collect();
            if summaries.is_empty() {
                println!("{}", status.health.health_name());
            } else {
                println!("{} {}", status.health.health_name(), summaries.join("; "));
            }
            if detail {
                for check in &status.checks {
                    let tag = match check.severity {
                        Severity::Err => "ERR",
                        Severity::Warn => "WRN",
                        Severity::Ok => "OK",
                    };
                    println!("[{tag}] {}: {}", check.code, check.summary);
                    for line in &check.detail {
                        println!("    {line}");
                    }
                }
            }
        }
    }
    Ok(())
}
