//! `cairn recon`: every daemon's view of the cluster side by side, as `swift-recon` shows
//! a Swift cluster's nodes: map epoch and hash (all must match), clock offset against the
//! monitors, when each last recovered, backfilled and scrubbed, quarantined copies, slow
//! ops, disk usage and load. The monitors' health checks judge the same figures
//! (CLOCK_SKEW, MAP_HASH_MISMATCH, MAP_EPOCH_LAG, SLOW_OPS, OSD_NEARFULL...).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use placement::OsdMap;
use proto::message::{ClusterPgStats, StatusReport};
use serde::Serialize;

use crate::Format;
use crate::connect::Connect;
use crate::map::print_json;

/// One daemon as `cairn recon` shows it; `None` where the daemon does not report that.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DaemonRecon {
    pub name: String,
    /// In quorum (a monitor) or up in the map and reporting (an OSD).
    pub up: bool,
    pub epoch: Option<u64>,
    pub map_hash: Option<String>,
    pub clock_offset_ms: Option<i64>,
    /// Seconds since the last object recovered, backfill finished and scrub finished.
    pub last_recovery_s: Option<u64>,
    pub last_backfill_s: Option<u64>,
    pub last_scrub_s: Option<u64>,
    pub quarantined: Option<u64>,
    pub slow_ops: Option<u32>,
    /// Age of the oldest op in flight, in seconds.
    pub oldest_op_s: Option<u64>,
    pub used_percent: Option<f64>,
    pub load: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Recon {
    /// The monitors' current map epoch.
    pub epoch: u64,
    pub daemons: Vec<DaemonRecon>,
    /// One line per aspect: what matched, and what did not.
    pub findings: Vec<String>,
    /// The health checks that bear on these figures.
    pub checks: Vec<String>,
}

/// Checks `recon` repeats from the monitors' health.
const RECON_CHECKS: &[&str] = &[
    "CLOCK_SKEW",
    "MAP_HASH_MISMATCH",
    "MAP_EPOCH_LAG",
    "SLOW_OPS",
    "OSD_FULL",
    "OSD_BACKFILLFULL",
    "OSD_NEARFULL",
    "SCRUB_ERRORS",
    "PG_NOT_DEEP_SCRUBBED",
];

pub async fn run(connect: &Connect) -> Result<()> {
    let client = connect.client()?;
    let (status, map, stats) =
        (client.status().await?, client.map().await?, client.pg_stats().await?);
    let recon = build(&status, &map, &stats, wall_ms());
    match connect.format {
        Format::Json => print_json(&recon)?,
        Format::Plain => print!("{}", render(&recon)),
    }
    Ok(())
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Seconds from a wall-clock stamp (0: never) to `now_ms`.
fn since(stamp_ms: i64, now_ms: i64) -> Option<u64> {
    (stamp_ms > 0).then(|| ((now_ms - stamp_ms).max(0) / 1000) as u64)
}

pub fn build(status: &StatusReport, map: &OsdMap, stats: &ClusterPgStats, now_ms: i64) -> Recon {
    let mut daemons: Vec<DaemonRecon> = status
        .monitors
        .iter()
        .map(|m| DaemonRecon {
            name: format!("mon.{}", m.name),
            up: m.in_quorum,
            epoch: m.epoch.map(|e| e.0),
            map_hash: m.map_hash.map(|h| format!("{h:08x}")),
            clock_offset_ms: m.clock_offset_ms,
            ..DaemonRecon::default()
        })
        .collect();
    // As the monitors' health judges it: what a silent OSD last said is not current.
    let stale_ms = monitor::pgstats::STALE_MS as u64;
    let fresh = |age: Option<u64>| age.is_some_and(|a| a <= stale_ms);
    for o in &stats.osds {
        let up = map.osd(placement::OsdId(o.osd)).is_some_and(|s| s.up) && fresh(o.report_age_ms);
        let reported = o.report_age_ms.is_some();
        daemons.push(DaemonRecon {
            name: format!("osd.{}", o.osd),
            up,
            epoch: reported.then_some(o.map_epoch.0),
            map_hash: reported.then(|| format!("{:08x}", o.map_hash)),
            clock_offset_ms: if up { o.clock_offset_ms } else { None },
            last_recovery_s: since(o.last_recovery_ms, now_ms),
            last_backfill_s: since(o.last_backfill_ms, now_ms),
            last_scrub_s: since(o.last_scrub_ms, now_ms),
            quarantined: reported.then_some(o.quarantined),
            slow_ops: up.then_some(o.slow_ops),
            oldest_op_s: (up && o.oldest_op_ms > 0).then_some(o.oldest_op_ms / 1000),
            used_percent: (o.total_bytes > 0).then(|| o.used_percent()),
            load: reported.then(|| f64::from(o.load_milli) / 1000.0),
        });
    }
    let findings = findings(map.epoch().0, &daemons);
    let checks = status
        .checks
        .iter()
        .filter(|c| RECON_CHECKS.contains(&c.code.as_str()))
        .map(|c| format!("{}: {}", c.code, c.summary))
        .collect();
    Recon { epoch: map.epoch().0, daemons, findings, checks }
}

/// Names, the first few of them, for a finding.
fn names<'a>(daemons: impl Iterator<Item = &'a DaemonRecon>) -> String {
    let all: Vec<&str> = daemons.map(|d| d.name.as_str()).collect();
    match all.len() {
        0..=6 => all.join(", "),
        n => format!("{} and {} more", all[..6].join(", "), n - 6),
    }
}

fn findings(epoch: u64, daemons: &[DaemonRecon]) -> Vec<String> {
    let up: Vec<&DaemonRecon> = daemons.iter().filter(|d| d.up).collect();
    let mut out = Vec::new();
    let current: Vec<&&DaemonRecon> = up.iter().filter(|d| d.epoch == Some(epoch)).collect();
    let mut hashes: BTreeMap<&str, Vec<&DaemonRecon>> = BTreeMap::new();
    for d in &current {
        hashes.entry(d.map_hash.as_deref().unwrap_or("?")).or_default().push(d);
    }
    let behind = names(up.iter().copied().filter(|d| d.epoch != Some(epoch)));
    let mut line = format!("map: {}/{} running daemons at epoch {epoch}", current.len(), up.len());
    if !behind.is_empty() {
        let _ = write!(line, " (not yet: {behind})");
    }
    match hashes.len() {
        0 => {}
        1 => {
            let _ = write!(line, ", all with map hash {}", hashes.keys().next().expect("one"));
        }
        _ => {
            let groups: Vec<String> = hashes
                .iter()
                .map(|(hash, ds)| format!("{hash} on {}", names(ds.iter().copied())))
                .collect();
            let _ = write!(line, "; MISMATCH: {}", groups.join("; "));
        }
    }
    out.push(line);
    let offsets: Vec<(&DaemonRecon, i64)> =
        up.iter().filter_map(|d| d.clock_offset_ms.map(|o| (*d, o))).collect();
    match offsets.iter().max_by_key(|(_, o)| o.abs()) {
        Some((d, o)) => out.push(format!(
            "clock: {} daemons measured, the largest offset {o} ms ({})",
            offsets.len(),
            d.name
        )),
        None => out.push("clock: no offsets measured yet".into()),
    }
    let slow: Vec<&&DaemonRecon> = up.iter().filter(|d| d.slow_ops.unwrap_or(0) > 0).collect();
    if slow.is_empty() {
        out.push("slow ops: none".into());
    } else {
        let total: u32 = slow.iter().filter_map(|d| d.slow_ops).sum();
        let oldest = slow.iter().filter_map(|d| d.oldest_op_s).max().unwrap_or(0);
        out.push(format!(
            "slow ops: {total} on {} (the oldest {oldest} s)",
            names(slow.iter().map(|d| **d))
        ));
    }
    let quarantined: u64 = daemons.iter().filter_map(|d| d.quarantined).sum();
    out.push(format!("quarantined: {quarantined} bad copies set aside since the OSDs started"));
    for (what, pick) in [
        ("recovery", (|d: &DaemonRecon| d.last_recovery_s) as fn(&DaemonRecon) -> Option<u64>),
        ("backfill", |d: &DaemonRecon| d.last_backfill_s),
        ("scrub", |d: &DaemonRecon| d.last_scrub_s),
    ] {
        match daemons.iter().filter_map(|d| pick(d).map(|s| (d, s))).min_by_key(|(_, s)| *s) {
            Some((d, s)) => out.push(format!("{what}: last {} ago ({})", age(s), d.name)),
            None => out.push(format!("{what}: none since the OSDs started")),
        }
    }
    let used: Vec<(&DaemonRecon, f64)> =
        daemons.iter().filter_map(|d| d.used_percent.map(|u| (d, u))).collect();
    if let (Some(low), Some(high)) = (
        used.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
        used.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
    ) {
        let mean = used.iter().map(|(_, u)| u).sum::<f64>() / used.len() as f64;
        out.push(format!(
            "disk usage: lowest {:.1}% ({}), highest {:.1}% ({}), average {mean:.1}%",
            low.1, low.0.name, high.1, high.0.name
        ));
    }
    out
}

/// "42 s", "5 min", "3 h", "2 d".
fn age(s: u64) -> String {
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

pub fn render(recon: &Recon) -> String {
    let mut out = String::new();
    let header = [
        "DAEMON", "UP", "EPOCH", "MAP HASH", "CLOCK", "RECOVERY", "BACKFILL", "SCRUB", "QUAR",
        "SLOW", "USED", "LOAD",
    ];
    let rows: Vec<Vec<String>> = recon
        .daemons
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                if d.up { "up" } else { "down" }.to_owned(),
                or_dash(d.epoch),
                or_dash(d.map_hash.clone()),
                or_dash(d.clock_offset_ms.map(|o| format!("{o:+} ms"))),
                or_dash(d.last_recovery_s.map(age)),
                or_dash(d.last_backfill_s.map(age)),
                or_dash(d.last_scrub_s.map(age)),
                or_dash(d.quarantined),
                or_dash(d.slow_ops),
                or_dash(d.used_percent.map(|u| format!("{u:.1}%"))),
                or_dash(d.load.map(|l| format!("{l:.2}"))),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    out += &line(header.to_vec());
    for row in &rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out += "\n";
    for f in &recon.findings {
        let _ = writeln!(out, "{f}");
    }
    if recon.checks.is_empty() {
        out += "health: nothing to report on these figures\n";
    }
    for c in &recon.checks {
        let _ = writeln!(out, "health: {c}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(name: &str, epoch: u64, hash: &str, offset: i64) -> DaemonRecon {
        DaemonRecon {
            name: name.into(),
            up: true,
            epoch: Some(epoch),
            map_hash: Some(hash.into()),
            clock_offset_ms: Some(offset),
            ..DaemonRecon::default()
        }
    }

    #[test]
    fn findings_say_what_matches_and_what_does_not() {
        let mut osd1 = daemon("osd.1", 9, "aa", 700);
        osd1.slow_ops = Some(2);
        osd1.oldest_op_s = Some(31);
        osd1.last_scrub_s = Some(400);
        let daemons = vec![
            daemon("mon.a", 9, "aa", 0),
            daemon("mon.b", 9, "aa", -3),
            daemon("osd.0", 8, "bb", 2),
            osd1,
            DaemonRecon { name: "osd.2".into(), ..DaemonRecon::default() },
        ];
        assert_eq!(
            findings(9, &daemons),
            [
                "map: 3/4 running daemons at epoch 9 (not yet: osd.0), all with map hash aa",
                "clock: 4 daemons measured, the largest offset 700 ms (osd.1)",
                "slow ops: 2 on osd.1 (the oldest 31 s)",
                "quarantined: 0 bad copies set aside since the OSDs started",
                "recovery: none since the OSDs started",
                "backfill: none since the OSDs started",
                "scrub: last 6 min ago (osd.1)",
            ]
        );
        let split = vec![daemon("mon.a", 9, "aa", 0), daemon("osd.0", 9, "cc", 0)];
        assert_eq!(
            findings(9, &split)[0],
            "map: 2/2 running daemons at epoch 9; MISMATCH: aa on mon.a; cc on osd.0"
        );
    }
}
