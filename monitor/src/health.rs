//! Health checks, computed from what a monitor knows, as `ceph health detail` names them:
//! MON_DOWN, OSD_DOWN, OSD_OUT, OSD_FLAPPING, CLOCK_SKEW, MAP_HASH_MISMATCH, MAP_EPOCH_LAG,
//! OSDMAP_FLAGS, OSD_FULL, OSD_BACKFILLFULL, OSD_NEARFULL, SLOW_OPS, PG_INACTIVE,
//! PG_DEGRADED, PG_UNDERSIZED, PG_BACKFILL_FULL, OBJECT_UNFOUND, SCRUB_ERRORS, PG_INCONSISTENT,
//! PG_NOT_DEEP_SCRUBBED.
//! A pure function of its inputs, so every check is unit-tested with exact expectations.

use std::collections::{BTreeMap, BTreeSet};

use placement::{Epoch, OsdId, OsdMap};
use proto::EntityName;
use proto::message::{ClusterPgStats, HealthCheck, MonStatus, Severity};
use proto::osd::{Fill, FullRatios, OsdStat, PgStat};

use crate::settings::Settings;

/// What a daemon last told the monitors about its map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonEpoch {
    pub epoch: Epoch,
    /// Since when it has been behind by more than the allowed lag (`None`: not behind).
    pub behind_since_ms: Option<i64>,
    /// When it last reported its epoch.
    pub reported_ms: i64,
}

/// A daemon that has not reported its epoch for this long no longer counts for
/// MAP_EPOCH_LAG: it stopped (OSD_DOWN says so for OSDs) or was a one-off client.
pub const EPOCH_REPORT_STALE_MS: i64 = 60_000;

pub struct Inputs<'a> {
    pub map: &'a OsdMap,
    pub settings: &'a Settings,
    pub monitors: &'a [MonStatus],
    pub daemons: &'a BTreeMap<EntityName, DaemonEpoch>,
    pub flapping: &'a BTreeSet<OsdId>,
    pub pgs: &'a ClusterPgStats,
    pub now_ms: i64,
    /// Wall-clock time (ms since the epoch), for the PGs' scrub stamps.
    pub wall_ms: i64,
}

/// PGs listed in a check's detail at most; the summary counts them all.
pub const PG_DETAIL_MAX: usize = 20;

fn check(code: &str, severity: Severity, summary: String, detail: Vec<String>) -> HealthCheck {
    HealthCheck { code: code.into(), severity, summary, detail }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The checks that fail, worst first; empty means HEALTH_OK.
pub fn checks(inputs: &Inputs<'_>) -> Vec<HealthCheck> {
    let mut out = Vec::new();
    mon_checks(inputs.monitors, &mut out);
    osd_checks(inputs, &mut out);
    clock_checks(inputs, &mut out);
    map_hash_checks(inputs, &mut out);
    epoch_lag_checks(inputs, &mut out);
    let flags: Vec<&str> = inputs.map.contents().flags.iter().map(|f| f.name()).collect();
    if !flags.is_empty() {
        out.push(check(
            "OSDMAP_FLAGS",
            Severity::Warn,
            format!("{} flag(s) set", flags.join(",")),
            vec![],
        ));
    }
    fill_checks(&inputs.pgs.osds, &inputs.settings.full_ratios, &mut out);
    slow_op_checks(inputs, &mut out);
    pg_checks(inputs.pgs, &mut out);
    scrub_checks(inputs, &mut out);
    out.sort_by_key(|c| std::cmp::Reverse(c.severity));
    out
}

/// MON_DOWN: an error without a quorum, a warning with monitors outside it.
fn mon_checks(monitors: &[MonStatus], out: &mut Vec<HealthCheck>) {
    let down_mons: Vec<&MonStatus> = monitors.iter().filter(|m| !m.in_quorum).collect();
    let detail: Vec<String> = down_mons
        .iter()
        .map(|m| format!("mon.{} at {} is not in quorum", m.name, m.addr))
        .collect();
    if down_mons.len() == monitors.len() {
        // No leader known (or, before the first one, not even the members): nothing can
        // change until an election succeeds.
        out.push(check(
            "MON_DOWN",
            Severity::Err,
            "no quorum: the monitors are electing a leader, or a majority of them is down".into(),
            detail,
        ));
    } else if !down_mons.is_empty() {
        let names: Vec<String> = down_mons.iter().map(|m| m.name.clone()).collect();
        out.push(check(
            "MON_DOWN",
            Severity::Warn,
            format!(
                "{} down, quorum {}",
                plural(names.len(), "monitor", "monitors"),
                quorum(monitors)
            ),
            detail,
        ));
    }
}

/// OSD_DOWN, OSD_OUT (out but placed in CRUSH: data that would live there lives
/// elsewhere) and OSD_FLAPPING.
fn osd_checks(inputs: &Inputs<'_>, out: &mut Vec<HealthCheck>) {
    let osds = &inputs.map.contents().osds;
    let down: Vec<OsdId> = osds.iter().filter(|(_, s)| !s.up).map(|(o, _)| *o).collect();
    if !down.is_empty() {
        let detail = down.iter().map(|o| format!("{o} is down")).collect();
        out.push(check(
            "OSD_DOWN",
            Severity::Warn,
            format!("{} down", plural(down.len(), "osd", "osds")),
            detail,
        ));
    }
    let crush = &inputs.map.contents().crush;
    let out_osds: Vec<OsdId> = osds
        .iter()
        .filter(|(o, s)| !s.is_in && crush.devices.contains_key(o))
        .map(|(o, _)| *o)
        .collect();
    if !out_osds.is_empty() {
        let detail = out_osds.iter().map(|o| format!("{o} is out")).collect();
        out.push(check(
            "OSD_OUT",
            Severity::Warn,
            format!("{} out", plural(out_osds.len(), "osd", "osds")),
            detail,
        ));
    }
    if !inputs.flapping.is_empty() {
        let detail = inputs
            .flapping
            .iter()
            .map(|o| format!("{o} is flapping: its boots are held back"))
            .collect();
        let summary = format!("{} flapping", plural(inputs.flapping.len(), "osd", "osds"));
        out.push(check("OSD_FLAPPING", Severity::Warn, summary, detail));
    }
}

/// MAP_EPOCH_LAG: daemons reporting recently that stayed behind the current epoch for
/// longer than the grace.
fn epoch_lag_checks(inputs: &Inputs<'_>, out: &mut Vec<HealthCheck>) {
    let grace = inputs.settings.map_epoch_lag_grace_s as i64 * 1000;
    let lagging: Vec<(&EntityName, &DaemonEpoch)> = inputs
        .daemons
        .iter()
        .filter(|(_, d)| inputs.now_ms - d.reported_ms <= EPOCH_REPORT_STALE_MS)
        .filter(|(_, d)| d.behind_since_ms.is_some_and(|since| inputs.now_ms - since >= grace))
        .collect();
    if !lagging.is_empty() {
        let current = inputs.map.epoch();
        let detail = lagging
            .iter()
            .map(|(name, d)| format!("{name} has map epoch {} of {current}", d.epoch))
            .collect();
        let summary = format!(
            "{} behind the current map epoch",
            plural(lagging.len(), "daemon is", "daemons are")
        );
        out.push(check("MAP_EPOCH_LAG", Severity::Warn, summary, detail));
    }
}

/// The OSDs whose reports are recent: what a silent one last said (its clock, its slow
/// ops) is no longer true, and OSD_DOWN speaks for it.
fn reporting<'a>(inputs: &Inputs<'a>) -> impl Iterator<Item = &'a OsdStat> {
    let fresh = crate::pgstats::STALE_MS as u64;
    inputs.pgs.osds.iter().filter(move |o| o.report_age_ms.is_some_and(|age| age <= fresh))
}

/// CLOCK_SKEW: monitors (from the answering monitor's pings) and OSDs (from their own
/// pings of a monitor) whose clock is off by more than `mon.clock_skew_warn_ms`.
fn clock_checks(inputs: &Inputs<'_>, out: &mut Vec<HealthCheck>) {
    let limit = inputs.settings.clock_skew_warn_ms as i64;
    let off = |offset: Option<i64>| offset.filter(|o| o.abs() > limit);
    let mut detail: Vec<String> = inputs
        .monitors
        .iter()
        .filter_map(|m| off(m.clock_offset_ms).map(|o| (format!("mon.{}", m.name), o)))
        .chain(reporting(inputs).filter_map(|o| {
            off(o.clock_offset_ms).map(|offset| (format!("osd.{}", o.osd), offset))
        }))
        .map(|(name, o)| format!("{name} clock is {o} ms off (limit {limit} ms)"))
        .collect();
    if detail.is_empty() {
        return;
    }
    detail.sort();
    let summary = format!("clock skew detected on {}", plural(detail.len(), "daemon", "daemons"));
    out.push(check("CLOCK_SKEW", Severity::Warn, summary, detail));
}

/// MAP_HASH_MISMATCH: daemons at one map epoch whose maps differ. Every daemon applies
/// the same incrementals to the same base, so this is a bug or a damaged store, and what
/// that daemon places where is not what the others think.
fn map_hash_checks(inputs: &Inputs<'_>, out: &mut Vec<HealthCheck>) {
    let mut seen: BTreeMap<Epoch, BTreeMap<u32, Vec<String>>> = BTreeMap::new();
    for m in inputs.monitors {
        if let (Some(epoch), Some(hash)) = (m.epoch, m.map_hash) {
            seen.entry(epoch).or_default().entry(hash).or_default().push(format!("mon.{}", m.name));
        }
    }
    for o in reporting(inputs).filter(|o| o.map_epoch > Epoch(0)) {
        let at = seen.entry(o.map_epoch).or_default();
        at.entry(o.map_hash).or_default().push(format!("osd.{}", o.osd));
    }
    let detail: Vec<String> = seen
        .iter()
        .filter(|(_, hashes)| hashes.len() > 1)
        .flat_map(|(epoch, hashes)| {
            hashes.iter().map(move |(hash, names)| {
                format!("map epoch {} hash {hash:08x}: {}", epoch.0, names.join(", "))
            })
        })
        .collect();
    if !detail.is_empty() {
        let summary = "daemons disagree about the contents of one map epoch".to_owned();
        out.push(check("MAP_HASH_MISMATCH", Severity::Err, summary, detail));
    }
}

/// SLOW_OPS: client ops an OSD has had in flight for longer than
/// `osd.op_complaint_time`, as Ceph reports them.
fn slow_op_checks(inputs: &Inputs<'_>, out: &mut Vec<HealthCheck>) {
    let slow: Vec<&OsdStat> = reporting(inputs).filter(|o| o.slow_ops > 0).collect();
    if slow.is_empty() {
        return;
    }
    let total: u64 = slow.iter().map(|o| u64::from(o.slow_ops)).sum();
    let oldest_s = slow.iter().map(|o| o.oldest_op_ms).max().unwrap_or(0) / 1000;
    let names: Vec<String> = slow.iter().map(|o| format!("osd.{}", o.osd)).collect();
    let summary = format!(
        "{}, oldest one blocked for {oldest_s} sec, {} {} slow ops",
        plural(total as usize, "slow op", "slow ops"),
        names.join(","),
        if names.len() == 1 { "has" } else { "have" }
    );
    let detail = slow
        .iter()
        .map(|o| {
            format!(
                "osd.{} has {} older than {} s; the oldest, for {} s: {}",
                o.osd,
                plural(o.slow_ops as usize, "op", "ops"),
                inputs.settings.osd_op_complaint_time_s,
                o.oldest_op_ms / 1000,
                o.oldest_op
            )
        })
        .collect();
    out.push(check("SLOW_OPS", Severity::Warn, summary, detail));
}

/// OSD_FULL, OSD_BACKFILLFULL and OSD_NEARFULL, each OSD under the highest level it
/// reached.
fn fill_checks(osds: &[OsdStat], ratios: &FullRatios, out: &mut Vec<HealthCheck>) {
    let levels = [
        (Fill::Full, "OSD_FULL", Severity::Err, "full", ratios.full, "writes are refused"),
        (
            Fill::Backfillfull,
            "OSD_BACKFILLFULL",
            Severity::Warn,
            "backfillfull",
            ratios.backfillfull,
            "no data is backfilled onto it",
        ),
        (
            Fill::Nearfull,
            "OSD_NEARFULL",
            Severity::Warn,
            "nearfull",
            ratios.nearfull,
            "add space soon",
        ),
    ];
    for (fill, code, severity, word, percent, effect) in levels {
        let at: Vec<&OsdStat> =
            osds.iter().filter(|o| ratios.fill(o.used_percent()) == fill).collect();
        if at.is_empty() {
            continue;
        }
        let detail = at
            .iter()
            .map(|o| {
                format!(
                    "osd.{} is {word} at {:.1}% used ({percent}% is {word}): {effect}",
                    o.osd,
                    o.used_percent()
                )
            })
            .collect();
        let summary = format!("{} {word}", plural(at.len(), "osd", "osds"));
        out.push(check(code, severity, summary, detail));
    }
}

fn has(stat: &PgStat, word: &str) -> bool {
    stat.state.iter().any(|w| w == word)
}

fn pg_detail<'a>(pgs: impl Iterator<Item = &'a PgStat>) -> Vec<String> {
    pgs.take(PG_DETAIL_MAX)
        .map(|p| {
            let line = format!("pg {} is {}, acting {:?}", p.pg, p.state.join("+"), p.acting);
            if p.blocked_reason.is_empty() { line } else { format!("{line}: {}", p.blocked_reason) }
        })
        .collect()
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

/// What scrub found and has not repaired yet (PG_INCONSISTENT, SCRUB_ERRORS), and PGs
/// whose last deep scrub is a quarter of the interval overdue (PG_NOT_DEEP_SCRUBBED).
fn scrub_checks(inputs: &Inputs<'_>, out: &mut Vec<HealthCheck>) {
    let pgs = &inputs.pgs.pgs;
    let inconsistent: Vec<&PgStat> = pgs.iter().filter(|p| p.inconsistent > 0).collect();
    if !inconsistent.is_empty() {
        let errors: u64 = inconsistent.iter().map(|p| p.inconsistent).sum();
        out.push(check(
            "SCRUB_ERRORS",
            Severity::Err,
            format!(
                "{} with a bad copy not yet repaired",
                plural(errors as usize, "object", "objects")
            ),
            vec![],
        ));
        let detail = inconsistent
            .iter()
            .take(PG_DETAIL_MAX)
            .map(|p| format!("pg {} is inconsistent: {}", p.pg, p.inconsistent_detail.join("; ")))
            .collect();
        out.push(check(
            "PG_INCONSISTENT",
            Severity::Err,
            format!(
                "Possible data damage: {} inconsistent",
                plural(inconsistent.len(), "pg", "pgs")
            ),
            detail,
        ));
    }
    let overdue_ms = inputs.settings.osd_deep_scrub_interval_s as i64 * 1250;
    let late: Vec<&PgStat> = pgs
        .iter()
        .filter(|p| p.last_deep_scrub_ms > 0 && inputs.wall_ms - p.last_deep_scrub_ms > overdue_ms)
        .collect();
    if !late.is_empty() {
        let detail = late
            .iter()
            .take(PG_DETAIL_MAX)
            .map(|p| {
                let hours = (inputs.wall_ms - p.last_deep_scrub_ms) / 3_600_000;
                format!("pg {} not deep-scrubbed for {hours} h", p.pg)
            })
            .collect();
        out.push(check(
            "PG_NOT_DEEP_SCRUBBED",
            Severity::Warn,
            format!("{} not deep-scrubbed in time", plural(late.len(), "pg", "pgs")),
            detail,
        ));
    }
}

/// What the PGs' reports say: anything not serving, short of copies, or lost shows here,
/// so health never reads OK while a PG is degraded or stuck.
fn pg_checks(stats: &ClusterPgStats, out: &mut Vec<HealthCheck>) {
    let summary = &stats.summary;
    let inactive: Vec<&PgStat> =
        stats.pgs.iter().filter(|p| !crate::pgstats::is_active(&p.state)).collect();
    if !inactive.is_empty() {
        // Down and incomplete PGs wait for an OSD or an operator; the rest are on their way.
        let stuck = inactive.iter().any(|p| has(p, "down") || has(p, "incomplete"));
        let mut words: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &inactive {
            *words.entry(p.state.first().map(String::as_str).unwrap_or("unknown")).or_default() +=
                1;
        }
        let words: Vec<String> = words.iter().map(|(w, n)| format!("{n} {w}")).collect();
        out.push(check(
            "PG_INACTIVE",
            if stuck { Severity::Err } else { Severity::Warn },
            format!(
                "Reduced data availability: {} inactive ({})",
                plural(inactive.len(), "pg", "pgs"),
                words.join(", ")
            ),
            pg_detail(inactive.into_iter()),
        ));
    }
    let degraded: Vec<&PgStat> = stats.pgs.iter().filter(|p| has(p, "degraded")).collect();
    if summary.degraded > 0 || !degraded.is_empty() {
        out.push(check(
            "PG_DEGRADED",
            Severity::Warn,
            format!(
                "Degraded data redundancy: {}/{} object copies degraded ({:.3}%), {} degraded",
                summary.degraded,
                summary.copies,
                percent(summary.degraded, summary.copies),
                plural(degraded.len(), "pg", "pgs")
            ),
            pg_detail(degraded.into_iter()),
        ));
    }
    let undersized: Vec<&PgStat> = stats.pgs.iter().filter(|p| has(p, "undersized")).collect();
    if !undersized.is_empty() {
        out.push(check(
            "PG_UNDERSIZED",
            Severity::Warn,
            format!(
                "{} with fewer OSDs than the pool's size",
                plural(undersized.len(), "pg", "pgs")
            ),
            pg_detail(undersized.into_iter()),
        ));
    }
    let toofull: Vec<&PgStat> = stats.pgs.iter().filter(|p| has(p, "backfill_toofull")).collect();
    if !toofull.is_empty() {
        out.push(check(
            "PG_BACKFILL_FULL",
            Severity::Warn,
            format!(
                "Low space hindering backfill: {} waiting for a target below backfillfull",
                plural(toofull.len(), "pg", "pgs")
            ),
            pg_detail(toofull.into_iter()),
        ));
    }
    if summary.unfound > 0 {
        let pgs = stats.pgs.iter().filter(|p| p.unfound > 0);
        out.push(check(
            "OBJECT_UNFOUND",
            Severity::Warn,
            format!(
                "{}/{} objects unfound ({:.3}%)",
                summary.unfound,
                summary.objects,
                percent(summary.unfound, summary.objects)
            ),
            pg_detail(pgs),
        ));
    }
}

/// `a,b` of the monitors in quorum.
pub fn quorum(monitors: &[MonStatus]) -> String {
    let names: Vec<&str> =
        monitors.iter().filter(|m| m.in_quorum).map(|m| m.name.as_str()).collect();
    names.join(",")
}

/// The overall status of a list of checks.
pub fn overall(checks: &[HealthCheck]) -> Severity {
    checks.iter().map(|c| c.severity).max().unwrap_or(Severity::Ok)
}

/// Tracks how far behind each daemon is, from what they report.
pub fn update_lag(
    previous: Option<&DaemonEpoch>,
    epoch: Epoch,
    current: Epoch,
    settings: &Settings,
    now_ms: i64,
) -> DaemonEpoch {
    let behind = current.0.saturating_sub(epoch.0) > settings.map_epoch_lag_epochs;
    let behind_since_ms =
        if behind { previous.and_then(|p| p.behind_since_ms).or(Some(now_ms)) } else { None };
    DaemonEpoch { epoch, behind_since_ms, reported_ms: now_ms }
}

#[cfg(test)]
mod tests {
    use super::*;
    use placement::{Incremental, MapChange, MapContents, MapFlag};

    fn mon(name: &str, in_quorum: bool, offset: Option<i64>) -> MonStatus {
        MonStatus {
            name: name.into(),
            id: 1,
            addr: "127.0.0.1:6789".into(),
            in_quorum,
            leader: false,
            last_seen_ms: Some(0),
            clock_offset_ms: offset,
            epoch: Some(Epoch(2)),
            map_hash: Some(7),
        }
    }

    fn map() -> OsdMap {
        let base = OsdMap::new(MapContents::empty([0; 16])).unwrap();
        base.apply(&Incremental::new(&base, vec![])).unwrap()
    }

    fn codes(checks: &[HealthCheck]) -> Vec<&str> {
        checks.iter().map(|c| c.code.as_str()).collect()
    }

    #[test]
    fn a_quiet_cluster_is_ok() {
        let map = map();
        let settings = Settings::default();
        let mons = [mon("a", true, Some(0)), mon("b", true, Some(3)), mon("c", true, Some(-4))];
        let inputs = Inputs {
            map: &map,
            settings: &settings,
            monitors: &mons,
            daemons: &BTreeMap::new(),
            flapping: &BTreeSet::new(),
            pgs: &ClusterPgStats::default(),
            now_ms: 0,
            wall_ms: 0,
        };
        let checks = checks(&inputs);
        assert!(checks.is_empty(), "{checks:?}");
        assert_eq!(overall(&checks), Severity::Ok);
    }

    #[test]
    fn every_check_fires_on_its_condition() {
        let base = map();
        let mut changes = vec![];
        for osd in (0..3).map(OsdId) {
            changes.push(MapChange::OsdCreate { osd });
        }
        changes.push(MapChange::OsdBoot { osd: OsdId(0), addr: "127.0.0.1:1".into() });
        changes.push(MapChange::OsdIn { osd: OsdId(0) });
        changes.push(MapChange::SetFlag { flag: MapFlag::Noout });
        let map = base.apply(&Incremental::new(&base, changes)).unwrap();
        let settings = Settings { map_epoch_lag_grace_s: 10, ..Settings::default() };
        let mons = [mon("a", true, Some(0)), mon("b", false, None), mon("c", true, Some(120))];
        let mut daemons = BTreeMap::new();
        daemons.insert(
            "osd.0".parse().unwrap(),
            DaemonEpoch { epoch: Epoch(1), behind_since_ms: Some(0), reported_ms: 9_000 },
        );
        daemons.insert(
            "client.x".parse().unwrap(),
            DaemonEpoch { epoch: Epoch(1), behind_since_ms: Some(5_000), reported_ms: 9_000 },
        );
        // Long silent: no longer counted.
        daemons.insert(
            "client.gone".parse().unwrap(),
            DaemonEpoch { epoch: Epoch(1), behind_since_ms: Some(0), reported_ms: -60_000 },
        );
        let flapping = BTreeSet::from([OsdId(2)]);
        let inputs = Inputs {
            map: &map,
            settings: &settings,
            monitors: &mons,
            daemons: &daemons,
            flapping: &flapping,
            pgs: &ClusterPgStats::default(),
            now_ms: 10_000,
            wall_ms: 0,
        };
        let checks = checks(&inputs);
        assert_eq!(
            codes(&checks),
            ["MON_DOWN", "OSD_DOWN", "OSD_FLAPPING", "CLOCK_SKEW", "MAP_EPOCH_LAG", "OSDMAP_FLAGS"]
        );
        assert_eq!(checks[0].summary, "1 monitor down, quorum a,c");
        assert_eq!(checks[1].summary, "2 osds down");
        assert_eq!(checks[3].detail, vec!["mon.c clock is 120 ms off (limit 50 ms)"]);
        assert_eq!(
            checks[4].detail,
            vec!["osd.0 has map epoch 1 of 2"],
            "client.x is not behind for long enough; client.gone stopped reporting"
        );
        assert_eq!(overall(&checks), Severity::Warn);
    }

    fn pg(seed: u32, words: &[&str], degraded: u64, unfound: u64) -> PgStat {
        let pg = placement::PgId { pool: placement::PoolId(1), seed };
        let words = words.iter().map(|w| w.to_string()).collect();
        let mut stat = PgStat::empty(pg, words, vec![0, 1], vec![0, 1], Epoch(5));
        stat.objects = 10;
        stat.bytes = 100;
        stat.degraded = degraded;
        stat.unfound = unfound;
        stat
    }

    fn pg_codes(pgs: Vec<PgStat>) -> Vec<HealthCheck> {
        let mut stats = ClusterPgStats { pgs, ..ClusterPgStats::default() };
        for p in &stats.pgs {
            stats.summary.degraded += p.degraded;
            stats.summary.unfound += p.unfound;
            stats.summary.objects += p.objects;
            stats.summary.copies += p.objects * 3;
        }
        stats_codes(&stats)
    }

    /// The checks of a quiet cluster whose PG and OSD statistics are `stats`.
    fn stats_codes(stats: &ClusterPgStats) -> Vec<HealthCheck> {
        let (map, settings) = (map(), Settings::default());
        checks(&Inputs {
            map: &map,
            settings: &settings,
            monitors: &[mon("a", true, Some(0))],
            daemons: &BTreeMap::new(),
            flapping: &BTreeSet::new(),
            pgs: stats,
            now_ms: 0,
            wall_ms: 0,
        })
    }

    #[test]
    fn osd_reports_raise_clock_skew_slow_ops_and_map_mismatch() {
        let osd = |osd, offset, slow_ops, hash, age| OsdStat {
            osd,
            clock_offset_ms: Some(offset),
            slow_ops,
            oldest_op_ms: 42_500,
            oldest_op: "pg 1.3 object x from client.admin".into(),
            map_epoch: Epoch(2),
            map_hash: hash,
            report_age_ms: Some(age),
            ..OsdStat::default()
        };
        let stats = ClusterPgStats {
            osds: vec![
                osd(0, 3, 0, 7, 1_000),
                osd(1, -900, 2, 7, 1_000),
                osd(2, 5, 0, 9, 1_000),
                // Silent: what it last said no longer counts.
                osd(3, 5_000, 9, 11, 60_000),
            ],
            ..ClusterPgStats::default()
        };
        let checks = stats_codes(&stats);
        assert_eq!(codes(&checks), ["MAP_HASH_MISMATCH", "CLOCK_SKEW", "SLOW_OPS"]);
        assert_eq!(
            checks[0].detail,
            ["map epoch 2 hash 00000007: mon.a, osd.0, osd.1", "map epoch 2 hash 00000009: osd.2"]
        );
        assert_eq!(checks[1].summary, "clock skew detected on 1 daemon");
        assert_eq!(checks[1].detail, ["osd.1 clock is -900 ms off (limit 50 ms)"]);
        assert_eq!(
            checks[2].summary,
            "2 slow ops, oldest one blocked for 42 sec, osd.1 has slow ops"
        );
        assert_eq!(
            checks[2].detail,
            [
                "osd.1 has 2 ops older than 30 s; the oldest, for 42 s: pg 1.3 object x from client.admin"
            ]
        );
    }

    #[test]
    fn scrub_checks_fire_on_bad_copies_and_overdue_deep_scrubs() {
        let week_ms = Settings::default().osd_deep_scrub_interval_s as i64 * 1000;
        let now = 100 * week_ms;
        let mut bad = pg(0, &["active", "clean", "inconsistent"], 0, 0);
        bad.inconsistent = 2;
        bad.inconsistent_detail = vec!["a: osd.1: missing".into(), "b: osd.2: unreadable".into()];
        bad.last_deep_scrub_ms = now - week_ms;
        let mut late = pg(1, &["active", "clean"], 0, 0);
        late.last_deep_scrub_ms = now - week_ms * 13 / 10;
        let mut fresh = pg(2, &["active", "clean"], 0, 0);
        fresh.last_deep_scrub_ms = now - week_ms * 12 / 10;
        let stats = ClusterPgStats { pgs: vec![bad, late, fresh], ..ClusterPgStats::default() };
        let (map, settings) = (map(), Settings::default());
        let checks = checks(&Inputs {
            map: &map,
            settings: &settings,
            monitors: &[mon("a", true, Some(0))],
            daemons: &BTreeMap::new(),
            flapping: &BTreeSet::new(),
            pgs: &stats,
            now_ms: 0,
            wall_ms: now,
        });
        assert_eq!(codes(&checks), ["SCRUB_ERRORS", "PG_INCONSISTENT", "PG_NOT_DEEP_SCRUBBED"]);
        assert_eq!(checks[0].summary, "2 objects with a bad copy not yet repaired");
        assert_eq!(
            checks[1].detail,
            ["pg 1.0 is inconsistent: a: osd.1: missing; b: osd.2: unreadable"]
        );
        assert_eq!(checks[2].detail, ["pg 1.1 not deep-scrubbed for 218 h"]);
    }

    #[test]
    fn fill_checks_name_each_osd_under_its_highest_level() {
        let osd = |osd, avail_bytes| OsdStat {
            osd,
            total_bytes: 1000,
            avail_bytes,
            ..OsdStat::default()
        };
        let stats = ClusterPgStats {
            osds: vec![osd(0, 500), osd(1, 150), osd(2, 100), osd(3, 40), osd(4, 0)],
            ..ClusterPgStats::default()
        };
        let checks = stats_codes(&stats);
        assert_eq!(codes(&checks), ["OSD_FULL", "OSD_BACKFILLFULL", "OSD_NEARFULL"]);
        assert_eq!(checks[0].severity, Severity::Err);
        assert_eq!(checks[0].summary, "2 osds full");
        assert_eq!(
            checks[0].detail[0],
            "osd.3 is full at 96.0% used (95% is full): writes are refused"
        );
        assert_eq!(
            checks[1].detail,
            [
                "osd.2 is backfillfull at 90.0% used (90% is backfillfull): no data is backfilled onto it"
            ]
        );
        assert_eq!(checks[2].summary, "1 osd nearfull");
    }

    #[test]
    fn pg_checks_fire_on_reported_states() {
        assert!(pg_codes(vec![pg(0, &["active", "clean"], 0, 0)]).is_empty());
        let checks = pg_codes(vec![
            pg(0, &["active", "clean"], 0, 0),
            pg(1, &["active", "degraded", "undersized"], 10, 0),
            pg(2, &["peering"], 0, 0),
            pg(3, &["unknown"], 0, 0),
            pg(4, &["active", "degraded", "recovering"], 2, 1),
            pg(5, &["active", "remapped", "backfill_toofull"], 0, 0),
        ]);
        assert_eq!(
            codes(&checks),
            ["PG_INACTIVE", "PG_DEGRADED", "PG_UNDERSIZED", "PG_BACKFILL_FULL", "OBJECT_UNFOUND"]
        );
        assert_eq!(
            checks[3].summary,
            "Low space hindering backfill: 1 pg waiting for a target below backfillfull"
        );
        assert_eq!(
            checks[0].summary,
            "Reduced data availability: 2 pgs inactive (1 peering, 1 unknown)"
        );
        assert_eq!(checks[0].severity, Severity::Warn);
        assert_eq!(
            checks[1].summary,
            "Degraded data redundancy: 12/180 object copies degraded (6.667%), 2 pgs degraded"
        );
        assert_eq!(checks[1].detail[0], "pg 1.1 is active+degraded+undersized, acting [0, 1]");
        assert_eq!(checks[4].summary, "1/60 objects unfound (1.667%)");
        // A PG no OSD can serve without help is an error, not a warning.
        let down = pg_codes(vec![pg(0, &["down"], 0, 0)]);
        assert_eq!((down[0].code.as_str(), down[0].severity), ("PG_INACTIVE", Severity::Err));
        // The detail says why, as the PG's primary put it.
        let mut blocked = pg(0, &["down"], 0, 0);
        blocked.blocked_reason = "interval 5-9 (acting [0, 1, 2]) ...; waiting for osd.2".into();
        blocked.blocked_by = vec![2];
        let down = pg_codes(vec![blocked]);
        assert_eq!(
            down[0].detail,
            [
                "pg 1.0 is down, acting [0, 1]: interval 5-9 (acting [0, 1, 2]) ...; waiting for osd.2"
            ]
        );
    }

    #[test]
    fn lag_is_timed_from_when_it_started() {
        let s = Settings { map_epoch_lag_epochs: 5, ..Settings::default() };
        let fresh = update_lag(None, Epoch(10), Epoch(12), &s, 100);
        assert_eq!(fresh.behind_since_ms, None);
        let behind = update_lag(Some(&fresh), Epoch(10), Epoch(20), &s, 200);
        assert_eq!(behind.behind_since_ms, Some(200));
        let still = update_lag(Some(&behind), Epoch(11), Epoch(20), &s, 300);
        assert_eq!(still.behind_since_ms, Some(200));
        assert_eq!(update_lag(Some(&still), Epoch(20), Epoch(20), &s, 400).behind_since_ms, None);
    }
}
