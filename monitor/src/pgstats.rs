//! PG and OSD statistics, as the PGs' primaries report them to the leader every few
//! seconds: kept in memory (like Ceph's manager, not in the Raft log: they are
//! reported again within seconds, so a new leader starts empty and fills up), and summed
//! into what `status`, `pg stat`, `pg dump`, `osd df` and `pool df` show.
//!
//! A pure core: reports and the map in, views out, so it is tested without daemons.

use std::collections::{BTreeMap, HashMap, VecDeque};

use placement::{OsdId, OsdMap, PgId};
use proto::message::{ClusterPgStats, PgSummary};
use proto::osd::{Fill, FullRatios, OsdStat, PgStat};

/// A PG whose last report is older than this (its primary went silent) is stale: its
/// state is unknown since. So is one whose reporter is down.
pub const STALE_MS: i64 = 15_000;
/// Recovery rates are averaged over this window.
pub const RATE_WINDOW_MS: i64 = 10_000;

#[derive(Clone, Debug)]
struct Reported {
    stat: PgStat,
    reporter: u32,
    at_ms: i64,
}

/// One OSD's counters as last reported, to turn them into cluster-wide totals that only
/// grow (an OSD's counters restart at zero when it does).
#[derive(Clone, Debug)]
struct OsdReported {
    stat: OsdStat,
    at_ms: i64,
}

#[derive(Debug, Default)]
pub struct PgStatsTable {
    pgs: HashMap<PgId, Reported>,
    osds: BTreeMap<u32, OsdReported>,
    /// Cluster-wide recovered objects and bytes since this monitor started keeping stats.
    recovered: (u64, u64),
    samples: VecDeque<(i64, u64, u64)>,
}

impl PgStatsTable {
    /// An OSD's report. A PG's entry is replaced unless it holds a report from a newer
    /// epoch (a late report from a former primary does not undo the new one's).
    pub fn report(&mut self, osd: u32, pgs: Vec<PgStat>, usage: OsdStat, now_ms: i64) {
        for stat in pgs {
            let newer = self.pgs.get(&stat.pg).is_none_or(|r| r.stat.epoch <= stat.epoch);
            if newer {
                self.pgs.insert(stat.pg, Reported { stat, reporter: osd, at_ms: now_ms });
            }
        }
        let before = self.osds.get(&osd).map(|r| &r.stat);
        let grown = |now: u64, then: Option<u64>| match then {
            Some(then) if now >= then => now - then,
            // First report, or the OSD restarted: its counters began again at zero.
            Some(_) => now,
            None => 0,
        };
        self.recovered.0 += grown(usage.recovered_objects, before.map(|b| b.recovered_objects));
        self.recovered.1 += grown(usage.recovered_bytes, before.map(|b| b.recovered_bytes));
        self.osds.insert(osd, OsdReported { stat: OsdStat { osd, ..usage }, at_ms: now_ms });
        self.samples.push_back((now_ms, self.recovered.0, self.recovered.1));
        while self.samples.front().is_some_and(|&(t, ..)| now_ms - t > RATE_WINDOW_MS) {
            self.samples.pop_front();
        }
    }

    /// Forgets PGs and OSDs the map no longer has.
    pub fn retain(&mut self, map: &OsdMap) {
        self.pgs.retain(|pg, _| map.pool(pg.pool).is_some_and(|p| pg.seed < p.pg_num));
        let osds = &map.contents().osds;
        self.osds.retain(|osd, _| osds.contains_key(&OsdId(*osd)));
    }

    /// The OSDs whose last report puts them at the full level, and those at backfillfull
    /// or above.
    pub fn filled(&self, ratios: &FullRatios) -> (Vec<u32>, Vec<u32>) {
        let (mut full, mut backfillfull) = (Vec::new(), Vec::new());
        for (&osd, reported) in &self.osds {
            let fill = ratios.fill(reported.stat.used_percent());
            if fill >= Fill::Backfillfull {
                backfillfull.push(osd);
            }
            if fill == Fill::Full {
                full.push(osd);
            }
        }
        (full, backfillfull)
    }

    /// Every PG of `map` as last reported (or unknown, or stale), every OSD's usage, and
    /// the sums.
    pub fn view(&self, map: &OsdMap, now_ms: i64) -> ClusterPgStats {
        let mut pgs = Vec::new();
        let mut summary = PgSummary::default();
        for pool in map.contents().pools.values() {
            for pg in map.pgs(pool) {
                let stat = self.pg_view(map, pg, now_ms);
                summary.pgs += 1;
                *summary.states.entry(stat.state.join("+")).or_default() += 1;
                summary.objects += stat.objects;
                summary.bytes += stat.bytes;
                summary.copies += stat.objects * pool.size() as u64;
                summary.degraded += stat.degraded;
                summary.misplaced += stat.misplaced;
                summary.unfound += stat.unfound;
                pgs.push(stat);
            }
        }
        if let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) {
            let span = last.0 - first.0;
            if span > 0 {
                summary.recovery_objects_per_s = (last.1 - first.1) * 1000 / span as u64;
                summary.recovery_bytes_per_s = (last.2 - first.2) * 1000 / span as u64;
            }
        }
        ClusterPgStats { epoch: map.epoch(), pgs, osds: self.osd_views(map, now_ms), summary }
    }

    /// A PG as its primary last reported it, `stale` if that primary is down or silent;
    /// `unknown` (with the map's sets) if none has.
    fn pg_view(&self, map: &OsdMap, pg: PgId, now_ms: i64) -> PgStat {
        if let Some(r) = self.pgs.get(&pg) {
            let reporter_gone = !map.is_up(OsdId(r.reporter));
            let old = now_ms - r.at_ms > STALE_MS;
            let mut stat = r.stat.clone();
            if reporter_gone || old {
                stat.state.insert(0, "stale".into());
            }
            return stat;
        }
        let (up, acting) = map
            .pg_mapping(pg)
            .map(|m| (m.up.osds().map(|o| o.0).collect(), m.acting.osds().map(|o| o.0).collect()))
            .unwrap_or_default();
        PgStat::empty(pg, vec!["unknown".into()], up, acting, map.epoch())
    }

    /// Every OSD of `map` with the usage it last reported.
    fn osd_views(&self, map: &OsdMap, now_ms: i64) -> Vec<OsdStat> {
        let age = |r: &OsdReported| (now_ms - r.at_ms).max(0) as u64;
        map.contents()
            .osds
            .keys()
            .map(|osd| match self.osds.get(&osd.0) {
                // A silent OSD's usage is what it last said; a stale count of PGs is not.
                Some(r) if now_ms - r.at_ms <= STALE_MS => {
                    OsdStat { report_age_ms: Some(age(r)), ..r.stat.clone() }
                }
                Some(r) => OsdStat {
                    pgs: 0,
                    primary_pgs: 0,
                    report_age_ms: Some(age(r)),
                    ..r.stat.clone()
                },
                None => OsdStat { osd: osd.0, ..OsdStat::default() },
            })
            .collect()
    }
}

/// Whether a PG in these states serves I/O.
pub fn is_active(state: &[String]) -> bool {
    state.first().is_some_and(|w| w == "active")
}

#[cfg(test)]
mod tests {
    use super::*;
    use placement::describe::{PoolDesc, synthesize};
    use placement::{Epoch, Version};

    fn map() -> OsdMap {
        let levels = [("root".to_string(), 1), ("host".to_string(), 3)];
        let mut desc = synthesize(&levels, 1, 1.0, None).expect("a layout");
        desc.pools.push(PoolDesc::replicated("p", 3).with_pg_num(4));
        desc.build().expect("a valid description")
    }

    fn stat(pg: PgId, words: &[&str], epoch: u64, objects: u64, degraded: u64) -> PgStat {
        let words = words.iter().map(|w| w.to_string()).collect();
        let mut stat = PgStat::empty(pg, words, vec![0, 1, 2], vec![0, 1, 2], Epoch(epoch));
        stat.last_update = Version::new(epoch, 1);
        stat.objects = objects;
        stat.bytes = objects * 10;
        stat.degraded = degraded;
        stat
    }

    fn usage(osd: u32, recovered_objects: u64) -> OsdStat {
        OsdStat {
            osd,
            recovered_objects,
            recovered_bytes: recovered_objects * 100,
            ..OsdStat::default()
        }
    }

    #[test]
    fn unreported_pgs_are_unknown_and_reports_sum_up() {
        let map = map();
        let mut table = PgStatsTable::default();
        let view = table.view(&map, 0);
        assert_eq!(view.pgs.len(), 4);
        assert_eq!(view.summary.states, BTreeMap::from([("unknown".to_string(), 4)]));
        let pool = map.contents().pools.keys().next().copied().expect("a pool");
        let pg = |seed| PgId { pool, seed };
        table.report(
            0,
            vec![
                stat(pg(0), &["active", "clean"], 3, 5, 0),
                stat(pg(1), &["active", "degraded"], 3, 2, 2),
            ],
            usage(0, 0),
            1_000,
        );
        let view = table.view(&map, 1_000);
        assert_eq!(view.summary.objects, 7);
        assert_eq!(view.summary.bytes, 70);
        assert_eq!(view.summary.copies, 21);
        assert_eq!(view.summary.degraded, 2);
        assert_eq!(
            view.summary.states,
            BTreeMap::from([
                ("active+clean".to_string(), 1),
                ("active+degraded".to_string(), 1),
                ("unknown".to_string(), 2)
            ])
        );
        // A late report from an older epoch does not undo a newer one.
        table.report(1, vec![stat(pg(0), &["peering"], 2, 5, 0)], usage(1, 0), 1_500);
        assert_eq!(table.view(&map, 1_500).pgs[0].state, ["active", "clean"]);
    }

    #[test]
    fn osds_are_full_by_what_is_not_free_of_their_space() {
        let mut table = PgStatsTable::default();
        let fill =
            |osd, avail_bytes| OsdStat { osd, total_bytes: 1000, avail_bytes, ..usage(osd, 0) };
        // 50%, 85% (nearfull), 90% (backfillfull), 95% (full), 99.9%, and one of unknown size.
        for (osd, avail) in [(0, 500), (1, 150), (2, 100), (3, 50), (4, 1)] {
            table.report(osd, vec![], fill(osd, avail), 0);
        }
        table.report(5, vec![], usage(5, 0), 0);
        let ratios = FullRatios::default();
        assert_eq!(table.filled(&ratios), (vec![3, 4], vec![2, 3, 4]));
        // Freed space counts at the next report.
        table.report(3, vec![], fill(3, 200), 1);
        assert_eq!(table.filled(&ratios), (vec![4], vec![2, 4]));
    }

    #[test]
    fn silent_reporters_make_their_pgs_stale() {
        let map = map();
        let pool = map.contents().pools.keys().next().copied().expect("a pool");
        let mut table = PgStatsTable::default();
        table.report(
            0,
            vec![stat(PgId { pool, seed: 0 }, &["active", "clean"], 3, 1, 0)],
            usage(0, 0),
            0,
        );
        assert_eq!(table.view(&map, STALE_MS).pgs[0].state, ["active", "clean"]);
        assert_eq!(table.view(&map, STALE_MS + 1).pgs[0].state, ["stale", "active", "clean"]);
        assert!(!is_active(&table.view(&map, STALE_MS + 1).pgs[0].state));
    }

    #[test]
    fn recovery_rates_come_from_counters_that_survive_osd_restarts() {
        let map = map();
        let mut table = PgStatsTable::default();
        table.report(0, vec![], usage(0, 10), 0);
        table.report(0, vec![], usage(0, 30), 2_000);
        // osd.0 restarted: its counter began again, and the 5 it counted since are new.
        table.report(0, vec![], usage(0, 5), 4_000);
        let summary = table.view(&map, 4_000).summary;
        assert_eq!(summary.recovery_objects_per_s, (20 + 5) * 1000 / 4_000);
        assert_eq!(summary.recovery_bytes_per_s, (2_000 + 500) * 1000 / 4_000);
        // Samples older than the window drop out, and with them the rate.
        table.report(0, vec![], usage(0, 5), 4_000 + RATE_WINDOW_MS + 1);
        assert_eq!(table.view(&map, 4_000 + RATE_WINDOW_MS + 1).summary.recovery_objects_per_s, 0);
    }
}
