//! The analyses behind `cairn map test` and `cairn map diff`: how evenly a map spreads PGs
//! over OSDs, whether every placement respects its failure domain, and how much data a map
//! change moves compared with the least any placement could move.
//!
//! Like `crushtool --test` and `osdmaptool --test-map-pgs`, these run the real mapper over
//! every PG (or every input of a rule) and count. Expected counts are proportional to the
//! effective weight (CRUSH weight times reweight) of the OSDs a rule can reach.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::autoscale;
use crate::crush::map::CrushMap;
use crate::ids::{OsdId, PgId, PoolId, RuleId};
use crate::osdmap::{OsdMap, OsdSet};

/// How many bad mappings a report lists by name.
pub const EXAMPLES_MAX: usize = 10;

#[derive(Clone, Debug, Serialize)]
pub struct OsdCount {
    pub osd: OsdId,
    /// Effective weight (CRUSH weight times reweight).
    pub weight: f64,
    pub expected: f64,
    pub count: u64,
    pub primary: u64,
    /// `(count - expected) / expected`, in percent.
    pub deviation_pct: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Distribution {
    /// Inputs mapped (PGs, or rule inputs).
    pub inputs: u64,
    /// OSDs asked per input.
    pub width: usize,
    /// OSD placements made (`inputs * width` less the short ones).
    pub placed: u64,
    pub per_osd: Vec<OsdCount>,
    /// Standard deviation of the per-OSD deviation, in percent of expected.
    pub stddev_pct: f64,
    /// What pure chance (a multinomial draw with the same weights) would give: a placement
    /// as good as random hashing can be has `stddev_pct` close to this.
    pub random_stddev_pct: f64,
    pub max_over_pct: f64,
    pub max_under_pct: f64,
    /// Inputs that got fewer OSDs than asked (the rule could not be satisfied).
    pub short: u64,
    /// Inputs with two OSDs in one failure domain.
    pub violations: u64,
    pub failure_domain: String,
    pub bad_examples: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolReport {
    pub pool: String,
    pub id: PoolId,
    pub rule: String,
    pub pg_num: u32,
    pub size: usize,
    /// The pg_num the autoscaler would choose, sharing the OSDs evenly with the pools on them.
    pub ideal_pg_num: u32,
    /// `Some(n)` when the pool should split to `n` PGs.
    pub split_to: Option<u32>,
    pub distribution: Distribution,
}

/// Maps every PG of a pool and reports the distribution (`osdmaptool --test-map-pgs`).
pub fn test_pool(map: &OsdMap, pool: PoolId) -> Option<PoolReport> {
    let p = map.pool(pool)?;
    let rule = map.crush().rules.get(&p.rule)?;
    let mut tally = Tally::new(map, p.rule, p.size());
    for pg in map.pgs(p) {
        let set = map.pg_placement(pg).expect("PG of its own pool");
        tally.add(&pg.to_string(), &set);
    }
    let share = 1.0 / autoscale::pools_on_rule_osds(map, p.rule) as f64;
    let advice = autoscale::advise(map, p, autoscale::TARGET_PGS_PER_OSD_DEFAULT, share);
    let (ideal_pg_num, split_to) = match advice {
        autoscale::Advice::Keep { ideal } | autoscale::Advice::TooMany { ideal } => (ideal, None),
        autoscale::Advice::Split { pg_num } => (pg_num, Some(pg_num)),
    };
    Some(PoolReport {
        pool: p.name.clone(),
        id: p.id,
        rule: rule.name.clone(),
        pg_num: p.pg_num,
        size: p.size(),
        ideal_pg_num,
        split_to,
        distribution: tally.finish(),
    })
}

/// Runs a rule for inputs `0..inputs` asking for `width` OSDs (`crushtool --test`).
pub fn test_rule(
    map: &OsdMap,
    rule: RuleId,
    width: usize,
    inputs: u32,
) -> Result<Distribution, crate::MapError> {
    let mut tally = Tally::new(map, rule, width);
    for x in 0..inputs {
        let set = map.rule_mapping(rule, x, width)?;
        tally.add(&format!("x={x}"), &set);
    }
    Ok(tally.finish())
}

struct Tally<'a> {
    crush: &'a CrushMap,
    width: usize,
    candidates: Vec<(OsdId, u64)>,
    counts: BTreeMap<OsdId, (u64, u64)>,
    domain_of: HashMap<OsdId, i32>,
    failure_domain: u16,
    inputs: u64,
    placed: u64,
    short: u64,
    violations: u64,
    bad_examples: Vec<String>,
}

impl<'a> Tally<'a> {
    fn new(map: &'a OsdMap, rule: RuleId, width: usize) -> Tally<'a> {
        let crush = map.crush();
        let failure_domain = crush.rules.get(&rule).map_or(0, |r| crush.rule_failure_domain(r));
        Tally {
            crush,
            width,
            candidates: map.rule_osds(rule),
            counts: BTreeMap::new(),
            domain_of: failure_domains(crush, failure_domain),
            failure_domain,
            inputs: 0,
            placed: 0,
            short: 0,
            violations: 0,
            bad_examples: Vec::new(),
        }
    }

    fn add(&mut self, input: &str, set: &OsdSet) {
        self.inputs += 1;
        let count = set.count();
        self.placed += count as u64;
        for (i, osd) in set.osds().enumerate() {
            let entry = self.counts.entry(osd).or_default();
            entry.0 += 1;
            if i == 0 {
                entry.1 += 1;
            }
        }
        let mut problem = None;
        if count < self.width {
            self.short += 1;
            problem = Some(format!("{input} -> {set}: {count} of {} OSDs", self.width));
        }
        let mut domains: Vec<i32> =
            set.osds().map(|o| self.domain_of.get(&o).copied().unwrap_or(i32::MIN)).collect();
        domains.sort_unstable();
        if domains.windows(2).any(|w| w[0] == w[1]) {
            self.violations += 1;
            let domain = self.crush.type_name(self.failure_domain);
            problem = Some(format!("{input} -> {set}: two OSDs share a {domain}"));
        }
        if let Some(problem) = problem
            && self.bad_examples.len() < EXAMPLES_MAX
        {
            self.bad_examples.push(problem);
        }
    }

    fn finish(self) -> Distribution {
        let total_weight: u64 = self.candidates.iter().map(|(_, w)| w).sum();
        let mut per_osd = Vec::new();
        let mut squares = 0.0;
        let mut random_variance = 0.0;
        let mut max_over: f64 = 0.0;
        let mut max_under: f64 = 0.0;
        let mut seen = std::collections::BTreeSet::new();
        for &(osd, weight) in &self.candidates {
            seen.insert(osd);
            let share = weight as f64 / total_weight.max(1) as f64;
            let expected = self.placed as f64 * share;
            let (count, primary) = self.counts.get(&osd).copied().unwrap_or_default();
            let deviation = if expected > 0.0 { (count as f64 - expected) / expected } else { 0.0 };
            squares += deviation * deviation;
            if expected > 0.0 {
                // Binomial variance of one OSD's count, relative to its expectation.
                random_variance += (1.0 - share) / expected;
            }
            max_over = max_over.max(deviation);
            max_under = max_under.min(deviation);
            per_osd.push(OsdCount {
                osd,
                weight: weight as f64 / 65536.0,
                expected,
                count,
                primary,
                deviation_pct: deviation * 100.0,
            });
        }
        // OSDs that got data without being a candidate (only through overrides).
        for (&osd, &(count, primary)) in &self.counts {
            if !seen.contains(&osd) {
                per_osd.push(OsdCount {
                    osd,
                    weight: 0.0,
                    expected: 0.0,
                    count,
                    primary,
                    deviation_pct: 0.0,
                });
            }
        }
        let n = self.candidates.len().max(1) as f64;
        Distribution {
            inputs: self.inputs,
            width: self.width,
            placed: self.placed,
            per_osd,
            stddev_pct: (squares / n).sqrt() * 100.0,
            random_stddev_pct: (random_variance / n).sqrt() * 100.0,
            max_over_pct: max_over * 100.0,
            max_under_pct: max_under * 100.0,
            short: self.short,
            violations: self.violations,
            failure_domain: self.crush.type_name(self.failure_domain).to_owned(),
            bad_examples: self.bad_examples,
        }
    }
}

/// Each OSD's ancestor of type `level` (the OSD itself for level 0), as a bucket id.
fn failure_domains(crush: &CrushMap, level: u16) -> HashMap<OsdId, i32> {
    let parents = crush.parents();
    let mut out = HashMap::new();
    for &osd in crush.devices.keys() {
        let mut item: crate::ItemId = osd.into();
        while crush.item_type(item) < level {
            match parents.get(&item) {
                Some(&parent) => item = parent.into(),
                None => break,
            }
        }
        out.insert(osd, item.0);
    }
    out
}

/// Data movement between two maps for one pool.
#[derive(Clone, Debug, Serialize)]
pub struct PoolDiff {
    pub pool: String,
    pub id: PoolId,
    pub pgs: u64,
    /// PGs whose placement changed at all.
    pub pgs_changed: u64,
    /// PG copies (or shards) in all.
    pub copies: u64,
    /// Copies that must be written to an OSD that did not hold them.
    pub copies_moved: u64,
    pub fraction_moved: f64,
    /// The least any placement could move: the growth of the OSDs whose share grew.
    pub ideal_fraction: f64,
    /// Copies that arrive on each OSD / leave each OSD.
    pub moved_to: BTreeMap<OsdId, u64>,
    pub moved_from: BTreeMap<OsdId, u64>,
    /// Why the pool could not be compared, when it could not.
    pub not_comparable: Option<String>,
}

/// Compares the placement of every pool present in both maps.
pub fn diff(before: &OsdMap, after: &OsdMap) -> Vec<PoolDiff> {
    before
        .contents()
        .pools
        .keys()
        .filter(|id| after.pool(**id).is_some())
        .map(|&id| diff_pool(before, after, id))
        .collect()
}

fn diff_pool(before: &OsdMap, after: &OsdMap, id: PoolId) -> PoolDiff {
    let (a, b) = (before.pool(id).expect("present"), after.pool(id).expect("present"));
    let mut diff = PoolDiff {
        pool: b.name.clone(),
        id,
        pgs: u64::from(a.pg_num),
        pgs_changed: 0,
        copies: 0,
        copies_moved: 0,
        fraction_moved: 0.0,
        ideal_fraction: 0.0,
        moved_to: BTreeMap::new(),
        moved_from: BTreeMap::new(),
        not_comparable: None,
    };
    if (a.pg_num, a.pgp_num, a.size(), a.is_erasure())
        != (b.pg_num, b.pgp_num, b.size(), b.is_erasure())
    {
        diff.not_comparable = Some("pg_num, pgp_num, size or type changed".into());
        return diff;
    }
    for seed in 0..a.pg_num {
        let pg = PgId { pool: id, seed };
        let old = before.pg_placement(pg).expect("PG exists");
        let new = after.pg_placement(pg).expect("PG exists");
        diff.copies += new.len().max(old.len()) as u64;
        if old == new {
            continue;
        }
        diff.pgs_changed += 1;
        let arrived: Vec<OsdId> = if a.is_erasure() {
            // A shard's identity is its position.
            (0..new.len()).filter_map(|i| new.get(i).filter(|&o| old.get(i) != Some(o))).collect()
        } else {
            new.osds().filter(|&o| !old.contains(o)).collect()
        };
        let left: Vec<OsdId> = if a.is_erasure() {
            (0..old.len()).filter_map(|i| old.get(i).filter(|&o| new.get(i) != Some(o))).collect()
        } else {
            old.osds().filter(|&o| !new.contains(o)).collect()
        };
        diff.copies_moved += arrived.len() as u64;
        for osd in arrived {
            *diff.moved_to.entry(osd).or_default() += 1;
        }
        for osd in left {
            *diff.moved_from.entry(osd).or_default() += 1;
        }
    }
    diff.fraction_moved = diff.copies_moved as f64 / diff.copies.max(1) as f64;
    diff.ideal_fraction = ideal_movement(&before.rule_osds(a.rule), &after.rule_osds(b.rule));
    diff
}

/// The fraction of data that must move between two weight distributions: the total growth
/// of the shares that grow (equivalently, half the L1 distance between the shares).
pub fn ideal_movement(before: &[(OsdId, u64)], after: &[(OsdId, u64)]) -> f64 {
    let share = |set: &[(OsdId, u64)]| -> BTreeMap<OsdId, f64> {
        let total: u64 = set.iter().map(|(_, w)| w).sum();
        set.iter().map(|&(o, w)| (o, w as f64 / total.max(1) as f64)).collect()
    };
    let (old, new) = (share(before), share(after));
    new.iter().map(|(osd, s)| (s - old.get(osd).copied().unwrap_or(0.0)).max(0.0)).sum()
}
