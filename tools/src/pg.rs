//! What the OSDs report, as `ceph pg stat`, `ceph pg dump`, `ceph osd df` and
//! `ceph df` show it: PG states, object counts, usage and recovery progress.

use std::fmt::Write as _;

use anyhow::Result;
use clap::Subcommand;
use placement::{OsdId, OsdMap};
use proto::message::{ClusterPgStats, PgSummary};

use crate::Format;
use crate::connect::Connect;
use crate::map::print_json;
use crate::units::bytes;

#[derive(Subcommand)]
pub enum PgCommand {
    /// One line: PG states, objects, degraded copies, recovery.
    Stat,
    /// Every PG: state, objects, bytes, degraded, up and acting sets.
    Dump,
    /// Check a PG's copies against each other now (sizes and metadata), repairing bad ones.
    Scrub { pg: placement::PgId },
    /// Read and compare every byte of a PG's copies now, repairing bad ones.
    DeepScrub { pg: placement::PgId },
    /// A deep scrub that repairs what it finds (repair is automatic; this starts it now).
    Repair { pg: placement::PgId },
    /// PGs with bad copies not yet repaired, and which objects.
    LsInconsistent,
    /// One PG as its primary last reported it: state, sets, and for a PG that cannot go
    /// active, why and which OSDs it waits for.
    Query { pg: placement::PgId },
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

/// The states, largest count first: `90 active+clean, 6 active+degraded`.
pub fn states(s: &PgSummary) -> String {
    let mut states: Vec<(&String, &u64)> = s.states.iter().collect();
    states.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = states.iter().map(|(w, n)| format!("{n} {w}")).collect();
    parts.join(", ")
}

/// Degraded, misplaced and unfound counts and recovery progress, as lines (none when
/// everything is in place).
pub fn progress(s: &PgSummary) -> Vec<String> {
    let mut lines = Vec::new();
    for (count, word) in [(s.degraded, "degraded"), (s.misplaced, "misplaced")] {
        if count > 0 {
            let share = percent(count, s.copies);
            lines.push(format!("{count}/{} object copies {word} ({share:.3}%)", s.copies));
        }
    }
    if s.unfound > 0 {
        lines.push(format!("{}/{} objects unfound", s.unfound, s.objects));
    }
    let left = s.degraded + s.misplaced;
    if left > 0 && (s.recovery_objects_per_s > 0 || s.recovery_bytes_per_s > 0) {
        // Bytes left are estimated from the average object: the PGs count copies, not bytes.
        let average = s.bytes.checked_div(s.objects).unwrap_or(0);
        let eta = if s.recovery_objects_per_s == 0 {
            String::new()
        } else {
            format!(", ~{} s left", left.div_ceil(s.recovery_objects_per_s))
        };
        lines.push(format!(
            "recovery: {}/s, {} objects/s; {left} copies (~{}) left{eta}",
            bytes(s.recovery_bytes_per_s),
            s.recovery_objects_per_s,
            bytes(left.saturating_mul(average))
        ));
    }
    lines
}

pub fn render_stat(stats: &ClusterPgStats) -> String {
    let s = &stats.summary;
    let mut line =
        format!("{} pgs: {}; {} objects, {}", s.pgs, states(s), s.objects, bytes(s.bytes));
    for part in progress(s) {
        let _ = write!(line, "; {part}");
    }
    line.push('\n');
    line
}

pub fn render_dump(stats: &ClusterPgStats) -> String {
    let mut out = format!(
        "{:<8} {:<32} {:>8} {:>10} {:>6} {:>8} {:>9} {:>7} {:<14} {:<14} {:>10} {:>6}\n",
        "PG",
        "STATE",
        "OBJECTS",
        "BYTES",
        "LOG",
        "DEGRADED",
        "MISPLACED",
        "UNFOUND",
        "UP",
        "ACTING",
        "VERSION",
        "EPOCH"
    );
    for p in &stats.pgs {
        let _ = writeln!(
            out,
            "{:<8} {:<32} {:>8} {:>10} {:>6} {:>8} {:>9} {:>7} {:<14} {:<14} {:>10} {:>6}",
            p.pg.to_string(),
            p.state.join("+"),
            p.objects,
            bytes(p.bytes),
            p.log_entries,
            p.degraded,
            p.misplaced,
            p.unfound,
            format!("{:?}", p.up),
            format!("{:?}", p.acting),
            p.last_update.to_string(),
            p.epoch.to_string()
        );
    }
    out
}

pub fn render_osd_df(map: &OsdMap, stats: &ClusterPgStats) -> String {
    let mut out = format!(
        "{:<6} {:>8} {:>10} {:>10} {:>10} {:>6} {:>5} {:>8}  {}\n",
        "ID", "REWEIGHT", "SIZE", "USED", "AVAIL", "%USE", "PGS", "PRIMARY", "STATUS"
    );
    let mut used = 0;
    for o in &stats.osds {
        let state = map.osd(OsdId(o.osd));
        let status = match state {
            Some(s) => format!(
                "{},{}",
                if s.up { "up" } else { "down" },
                if s.is_in { "in" } else { "out" }
            ),
            None => "gone".into(),
        };
        let reweight = state.map_or(0.0, |s| s.reweight.to_f64());
        let _ = writeln!(
            out,
            "{:<6} {:>8.5} {:>10} {:>10} {:>10} {:>6.2} {:>5} {:>8}  {status}",
            format!("osd.{}", o.osd),
            reweight,
            bytes(o.total_bytes),
            bytes(o.used_bytes),
            bytes(o.avail_bytes),
            percent(o.used_bytes, o.total_bytes),
            o.pgs,
            o.primary_pgs
        );
        used += o.used_bytes;
    }
    let _ = writeln!(out, "TOTAL  {} used by the stores", bytes(used));
    out
}

/// Per pool: what is stored (one copy), objects, raw use (stored × size) and what more
/// it could take: the fullest-placed OSD's free space times the OSDs in, over the size.
pub fn pool_df(map: &OsdMap, stats: &ClusterPgStats) -> Vec<serde_json::Value> {
    let osds = &map.contents().osds;
    let reporting: Vec<u64> = stats
        .osds
        .iter()
        .filter(|o| osds.get(&OsdId(o.osd)).is_some_and(|s| s.up && s.is_in) && o.total_bytes > 0)
        .map(|o| o.avail_bytes)
        .collect();
    let pool_avail = reporting.iter().min().copied().unwrap_or(0) * reporting.len() as u64;
    map.contents()
        .pools
        .values()
        .map(|pool| {
            let pgs = stats.pgs.iter().filter(|p| p.pg.pool == pool.id);
            let (objects, stored) =
                pgs.fold((0u64, 0u64), |(o, b), p| (o + p.objects, b + p.bytes));
            let size = pool.size() as u64;
            serde_json::json!({
                "name": pool.name,
                "id": pool.id.0,
                "pgs": pool.pg_num,
                "stored_bytes": stored,
                "objects": objects,
                "used_bytes": stored * size,
                "max_avail_bytes": pool_avail / size.max(1),
            })
        })
        .collect()
}

pub fn render_pool_df(rows: &[serde_json::Value]) -> String {
    let mut out = format!(
        "{:<20} {:>4} {:>5} {:>10} {:>8} {:>10} {:>10}\n",
        "POOL", "ID", "PGS", "STORED", "OBJECTS", "USED", "MAX AVAIL"
    );
    for r in rows {
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<20} {:>4} {:>5} {:>10} {:>8} {:>10} {:>10}",
            r["name"].as_str().unwrap_or(""),
            n("id"),
            n("pgs"),
            bytes(n("stored_bytes")),
            n("objects"),
            bytes(n("used_bytes")),
            bytes(n("max_avail_bytes"))
        );
    }
    out
}

pub async fn run(connect: &Connect, command: PgCommand) -> Result<()> {
    let (pg, deep) = match command {
        PgCommand::Scrub { pg } => (pg, false),
        PgCommand::DeepScrub { pg } | PgCommand::Repair { pg } => (pg, true),
        _ => return report(connect, command).await,
    };
    let objects = client::objects::Objects::new(std::sync::Arc::new(connect.client()?)).await?;
    objects.scrub(pg, deep).await?;
    println!("instructed pg {pg} to {}", if deep { "deep-scrub" } else { "scrub" });
    Ok(())
}

async fn report(connect: &Connect, command: PgCommand) -> Result<()> {
    let stats = connect.client()?.pg_stats().await?;
    match (command, connect.format) {
        (PgCommand::LsInconsistent, format) => {
            let bad: Vec<&proto::osd::PgStat> =
                stats.pgs.iter().filter(|p| p.inconsistent > 0).collect();
            match format {
                Format::Json => print_json(&bad)?,
                Format::Plain => {
                    for p in bad {
                        println!("pg {} ({} objects):", p.pg, p.inconsistent);
                        for line in &p.inconsistent_detail {
                            println!("    {line}");
                        }
                    }
                }
            }
        }
        (PgCommand::Scrub { .. } | PgCommand::DeepScrub { .. } | PgCommand::Repair { .. }, _) => {
            unreachable!("sent to the PG's primary")
        }
        (PgCommand::Stat, Format::Json) => print_json(&stats.summary)?,
        (PgCommand::Stat, Format::Plain) => print!("{}", render_stat(&stats)),
        (PgCommand::Dump, Format::Json) => print_json(&stats)?,
        (PgCommand::Dump, Format::Plain) => print!("{}", render_dump(&stats)),
        (PgCommand::Query { pg }, format) => {
            let Some(stat) = stats.pgs.iter().find(|p| p.pg == pg) else {
                anyhow::bail!("no pg {pg}: no pool has it");
            };
            match format {
                Format::Json => print_json(stat)?,
                Format::Plain => print!("{}", render_query(stat)),
            }
        }
    }
    Ok(())
}

/// `cairn pg query`: one PG, a field a line.
pub fn render_query(p: &proto::osd::PgStat) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pg {}: {}", p.pg, p.state.join("+"));
    let _ = writeln!(out, "  up {:?}, acting {:?}, epoch {}", p.up, p.acting, p.epoch);
    let _ = writeln!(out, "  last update {}, {} log entries", p.last_update, p.log_entries);
    let _ = writeln!(out, "  {} objects, {}", p.objects, bytes(p.bytes));
    if !p.blocked_reason.is_empty() {
        let _ = writeln!(out, "  blocked: {}", p.blocked_reason);
    }
    if !p.blocked_by.is_empty() {
        let osds: Vec<String> = p.blocked_by.iter().map(|o| format!("osd.{o}")).collect();
        let _ = writeln!(out, "  blocked by: {}", osds.join(", "));
    }
    out
}

pub async fn osd_df(connect: &Connect) -> Result<()> {
    let client = connect.client()?;
    let (map, stats) = (client.map().await?, client.pg_stats().await?);
    match connect.format {
        Format::Json => print_json(&stats.osds)?,
        Format::Plain => print!("{}", render_osd_df(&map, &stats)),
    }
    Ok(())
}

pub async fn pool_df_command(connect: &Connect) -> Result<()> {
    let client = connect.client()?;
    let (map, stats) = (client.map().await?, client.pg_stats().await?);
    let rows = pool_df(&map, &stats);
    match connect.format {
        Format::Json => print_json(&rows)?,
        Format::Plain => print!("{}", render_pool_df(&rows)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_says_what_is_left() {
        let clean =
            PgSummary { pgs: 8, objects: 10, bytes: 1000, copies: 30, ..Default::default() };
        assert!(progress(&clean).is_empty());
        let s = PgSummary {
            degraded: 10,
            recovery_objects_per_s: 4,
            recovery_bytes_per_s: 4096,
            ..clean
        };
        assert_eq!(
            progress(&s),
            [
                "10/30 object copies degraded (33.333%)",
                "recovery: 4.0 KiB/s, 4 objects/s; 10 copies (~1000 B) left, ~3 s left"
            ]
        );
    }
}
