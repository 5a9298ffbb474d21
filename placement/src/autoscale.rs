//! pg_num without operator arithmetic: the PG count a pool should have from the size of the
//! cluster under its rule, and when a pool should split.
//!
//! Ceph's rule of thumb, which its autoscaler applies: about `target_pgs_per_osd` PG copies
//! per OSD, spread over pools by their expected share of the data, rounded to a power of two
//! (so every PG holds the same share of the hash space), and changed only when off by a
//! factor of `SPLIT_THRESHOLD` (so pg_num does not flap). PGs split but never merge here.

use crate::ids::RuleId;
use crate::osdmap::OsdMap;
use crate::pool::{PG_NUM_MAX, Pool};

/// PG copies per OSD a cluster aims for (Ceph's `mon_target_pg_per_osd`).
pub const TARGET_PGS_PER_OSD_DEFAULT: u32 = 100;
/// Act only when the ideal pg_num is this many times the current one.
pub const SPLIT_THRESHOLD: u32 = 3;
/// The smallest pg_num suggested: fewer PGs than this spread badly even on one OSD.
pub const PG_NUM_MIN: u32 = 8;

/// What to do with a pool's pg_num.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    Keep {
        ideal: u32,
    },
    /// Split to this pg_num.
    Split {
        pg_num: u32,
    },
    /// More PGs than the cluster needs; merging is not supported, so this is only reported.
    TooMany {
        ideal: u32,
    },
}

/// The ideal pg_num for a pool of `size` copies over `osds` OSDs holding `share` (0..=1) of
/// the data: `osds * target / size * share`, rounded to the nearest power of two.
/// A size of 0 (an invalid pool) is treated as 1.
pub fn ideal_pg_num(osds: usize, size: usize, target_pgs_per_osd: u32, share: f64) -> u32 {
    let size = size.max(1);
    let share = if share.is_finite() { share.clamp(0.0, 1.0) } else { 1.0 };
    let raw = osds as f64 * f64::from(target_pgs_per_osd) * share / size as f64;
    nearest_power_of_two(raw).clamp(PG_NUM_MIN, PG_NUM_MAX)
}

fn nearest_power_of_two(x: f64) -> u32 {
    if x.is_nan() || x <= 1.0 {
        return 1;
    }
    let x = x.min(f64::from(1u32 << 31));
    let high = (x.ceil() as u64).next_power_of_two();
    let low = high / 2;
    (if x - low as f64 <= high as f64 - x { low } else { high }) as u32
}

/// Advice for one pool holding `share` of the data.
pub fn advise(map: &OsdMap, pool: &Pool, target_pgs_per_osd: u32, share: f64) -> Advice {
    let osds = map.rule_osds(pool.rule).len();
    let ideal = ideal_pg_num(osds, pool.size(), target_pgs_per_osd, share);
    if ideal >= pool.pg_num.saturating_mul(SPLIT_THRESHOLD) {
        Advice::Split { pg_num: ideal }
    } else if ideal.saturating_mul(SPLIT_THRESHOLD) <= pool.pg_num {
        Advice::TooMany { ideal }
    } else {
        Advice::Keep { ideal }
    }
}

/// How many pools share the OSDs of `rule` (for an even split of the target when pools
/// give no expected share).
pub fn pools_on_rule_osds(map: &OsdMap, rule: RuleId) -> usize {
    let osds: std::collections::BTreeSet<_> =
        map.rule_osds(rule).into_iter().map(|(o, _)| o).collect();
    map.contents()
        .pools
        .values()
        .filter(|p| map.rule_osds(p.rule).iter().any(|(o, _)| osds.contains(o)))
        .count()
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ideal_pg_num_follows_ceph_rule_of_thumb() {
        // 3 OSDs, size 3, one pool: 100 PGs -> 128.
        assert_eq!(ideal_pg_num(3, 3, 100, 1.0), 128);
        // 100 OSDs, size 3: 3333 -> 4096.
        assert_eq!(ideal_pg_num(100, 3, 100, 1.0), 4096);
        // Half the data: 1666 -> 2048.
        assert_eq!(ideal_pg_num(100, 3, 100, 0.5), 2048);
        // Tiny shares stay at the floor, huge clusters at the ceiling.
        assert_eq!(ideal_pg_num(3, 3, 100, 0.0001), PG_NUM_MIN);
        assert_eq!(ideal_pg_num(10_000_000, 1, 100, 1.0), PG_NUM_MAX);
        assert_eq!(ideal_pg_num(0, 3, 100, 1.0), PG_NUM_MIN);
    }

    #[test]
    fn advice_splits_only_past_the_threshold() {
        let mut desc =
            crate::describe::synthesize(&[("root".into(), 1), ("host".into(), 10)], 10, 1.0, None)
                .unwrap();
        for (name, pg_num) in [("tiny", 64), ("quarter", 1024), ("huge", 65536)] {
            desc.pools.push(crate::describe::PoolDesc::replicated(name, 3).with_pg_num(pg_num));
        }
        let map = desc.build().unwrap();
        // 100 OSDs x 100 / size 3 = 3333 -> 4096 for a pool with all the data.
        let advice = |name: &str| advise(&map, map.pool_by_name(name).unwrap(), 100, 1.0);
        assert_eq!(advice("tiny"), Advice::Split { pg_num: 4096 });
        assert_eq!(advice("quarter"), Advice::Split { pg_num: 4096 });
        // With half the data, 1024 is within the threshold of the ideal 2048.
        assert_eq!(
            advise(&map, map.pool_by_name("quarter").unwrap(), 100, 0.5),
            Advice::Keep { ideal: 2048 }
        );
        assert_eq!(advice("huge"), Advice::TooMany { ideal: 4096 });
        assert_eq!(pools_on_rule_osds(&map, map.pool_by_name("tiny").unwrap().rule), 3);
    }

    #[test]
    fn nearest_power_of_two_rounds_both_ways() {
        assert_eq!(nearest_power_of_two(0.3), 1);
        assert_eq!(nearest_power_of_two(5.0), 4);
        assert_eq!(nearest_power_of_two(6.0), 4);
        assert_eq!(nearest_power_of_two(6.1), 8);
        assert_eq!(nearest_power_of_two(1000.0), 1024);
        assert_eq!(nearest_power_of_two(1e300), 1 << 31);
        assert_eq!(nearest_power_of_two(f64::INFINITY), 1 << 31);
        assert_eq!(nearest_power_of_two(f64::NAN), 1);
    }
}
