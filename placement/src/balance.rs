//! The upmap balancer: per-PG exceptions (`pg_upmap_items`) that bring every OSD's count of
//! PG copies to within a few copies of its weight-proportional share, as Ceph's balancer
//! does in upmap mode.
//!
//! CRUSH spreads PGs the way random hashing does: at 100 copies per OSD, about ±10%, and
//! the fullest OSD decides when a cluster is full. The balancer moves single copies from the
//! fullest OSDs to the emptiest, and only where the rule allows: the target is an OSD the
//! rule can reach (same subtree and class), not already in the PG, and in a failure domain
//! no other copy of the PG uses. Each move strictly lowers the sum of squared deviations, so
//! the search ends; it is deterministic (ids in order), so every run on the same map plans
//! the same moves. Pools whose rule has more than one `take` or `choose` step are left as
//! CRUSH places them (their constraints are more than "distinct failure domains").

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::crush::rule::Step;
use crate::ids::{OsdId, PgId, PoolId};
use crate::incremental::{CHANGES_MAX, MapChange};
use crate::osdmap::{OsdMap, OsdSet};
use crate::pool::Pool;

/// Ceph's default for `upmap_max_deviation` in recent releases.
pub const MAX_DEVIATION_DEFAULT: u32 = 1;
/// Moves planned per run unless told otherwise.
pub const MAX_MOVES_DEFAULT: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Options {
    /// Stop when every OSD is within this many copies of its target.
    pub max_deviation: u32,
    /// Upper bound on the copies moved in one plan.
    pub max_moves: usize,
    /// Pools to balance; empty means all.
    pub pools: Vec<PoolId>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_deviation: MAX_DEVIATION_DEFAULT,
            max_moves: MAX_MOVES_DEFAULT,
            pools: Vec::new(),
        }
    }
}

/// Spread of copies over OSDs, in copies relative to each OSD's target.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Spread {
    /// Largest `count - target` over OSDs.
    pub max_over: f64,
    /// Smallest `count - target` over OSDs.
    pub max_under: f64,
    /// Standard deviation of `count - target`.
    pub stddev: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolPlan {
    pub pool: String,
    pub id: PoolId,
    pub before: Spread,
    pub after: Spread,
    pub moves: usize,
    /// Why the pool was left alone, when it was.
    pub skipped: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub pools: Vec<PoolPlan>,
    /// The `pg_upmap_items` to set, as map changes (an empty list clears a PG's entry).
    #[serde(skip)]
    pub changes: Vec<MapChange>,
}

/// Plans the upmap changes that balance the selected pools of `map`.
pub fn plan(map: &OsdMap, options: &Options) -> Plan {
    let mut plan = Plan { pools: Vec::new(), changes: Vec::new() };
    // Every move changes one PG's entry, so this keeps the plan within one incremental.
    let mut budget = options.max_moves.min(CHANGES_MAX);
    for pool in map.contents().pools.values() {
        if !options.pools.is_empty() && !options.pools.contains(&pool.id) {
            continue;
        }
        let (pool_plan, changes) = match Balancer::new(map, pool) {
            Ok(mut balancer) => {
                let before = balancer.spread();
                let moves = balancer.run(options.max_deviation, budget);
                budget -= moves;
                let after = balancer.spread();
                let plan = PoolPlan {
                    pool: pool.name.clone(),
                    id: pool.id,
                    before,
                    after,
                    moves,
                    skipped: None,
                };
                (plan, balancer.changes())
            }
            Err(reason) => {
                let plan = PoolPlan {
                    pool: pool.name.clone(),
                    id: pool.id,
                    before: Spread::default(),
                    after: Spread::default(),
                    moves: 0,
                    skipped: Some(reason),
                };
                (plan, Vec::new())
            }
        };
        plan.pools.push(pool_plan);
        plan.changes.extend(changes);
    }
    plan
}

struct Balancer<'a> {
    map: &'a OsdMap,
    pool: &'a Pool,
    /// Candidate OSDs of the pool's rule, with their targets.
    osds: Vec<OsdId>,
    target: Vec<f64>,
    domain: HashMap<OsdId, i32>,
    count: Vec<i64>,
    /// Each PG's CRUSH set, and its set now.
    raw: Vec<OsdSet>,
    now: Vec<OsdSet>,
    /// The PGs each candidate holds (by PG index).
    holds: Vec<BTreeSet<usize>>,
    /// The upmap pairs of the PGs touched, by PG index.
    pairs: BTreeMap<usize, Vec<(OsdId, OsdId)>>,
}

impl<'a> Balancer<'a> {
    fn new(map: &'a OsdMap, pool: &'a Pool) -> Result<Balancer<'a>, String> {
        let crush = map.crush();
        let rule = crush.rules.get(&pool.rule).ok_or("its rule is missing")?;
        let takes = rule.steps.iter().filter(|s| matches!(s, Step::Take { .. })).count();
        let chooses = rule.steps.iter().filter(|s| matches!(s, Step::Choose { .. })).count();
        if takes != 1 || chooses != 1 {
            return Err(format!(
                "rule '{}' has {takes} take and {chooses} choose steps; only one of each is balanced",
                rule.name
            ));
        }
        let level = crush.rule_failure_domain(rule);
        let candidates = map.rule_osds(pool.rule);
        if candidates.is_empty() {
            return Err("its rule reaches no OSD that is in".into());
        }
        let osds: Vec<OsdId> = candidates.iter().map(|&(o, _)| o).collect();
        let index: HashMap<OsdId, usize> = osds.iter().enumerate().map(|(i, &o)| (o, i)).collect();
        let parents = crush.parents();
        let domain = osds
            .iter()
            .map(|&osd| {
                let mut item: crate::ItemId = osd.into();
                while crush.item_type(item) < level {
                    match parents.get(&item) {
                        Some(&p) => item = p.into(),
                        None => break,
                    }
                }
                (osd, item.0)
            })
            .collect();
        let mut raw = Vec::new();
        let mut now = Vec::new();
        let mut count = vec![0i64; osds.len()];
        let mut holds = vec![BTreeSet::new(); osds.len()];
        let mut pairs = BTreeMap::new();
        for (i, pg) in map.pgs(pool).enumerate() {
            let r = map.pg_raw(pg).expect("PG of the pool");
            let n = map.pg_placement(pg).expect("PG of the pool");
            for osd in n.osds() {
                if let Some(&c) = index.get(&osd) {
                    count[c] += 1;
                    holds[c].insert(i);
                }
            }
            if let Some(existing) = map.contents().pg_upmap_items.get(&pg) {
                pairs.insert(i, existing.clone());
            }
            raw.push(r);
            now.push(n);
        }
        let total: i64 = count.iter().sum();
        let weight_sum: u64 = candidates.iter().map(|&(_, w)| w).sum();
        let target =
            candidates.iter().map(|&(_, w)| total as f64 * w as f64 / weight_sum as f64).collect();
        Ok(Balancer { map, pool, osds, target, domain, count, raw, now, holds, pairs })
    }

    fn deviation(&self, c: usize) -> f64 {
        self.count[c] as f64 - self.target[c]
    }

    fn spread(&self) -> Spread {
        let n = self.osds.len() as f64;
        let deviations: Vec<f64> = (0..self.osds.len()).map(|c| self.deviation(c)).collect();
        Spread {
            max_over: deviations.iter().copied().fold(f64::MIN, f64::max),
            max_under: deviations.iter().copied().fold(f64::MAX, f64::min),
            stddev: (deviations.iter().map(|d| d * d).sum::<f64>() / n).sqrt(),
        }
    }

    /// Moves copies until every OSD is within `max_deviation` or no move helps; returns how
    /// many moves it made.
    fn run(&mut self, max_deviation: u32, budget: usize) -> usize {
        let limit = f64::from(max_deviation);
        let mut moves = 0;
        while moves < budget {
            let mut order: Vec<usize> = (0..self.osds.len()).collect();
            // Fullest first; ties by OSD id so the plan is the same on every run.
            order.sort_by(|&a, &b| self.deviation(b).total_cmp(&self.deviation(a)).then(a.cmp(&b)));
            let outside = |d: f64| d > limit || d < -limit;
            if !order.iter().any(|&c| outside(self.deviation(c))) {
                break;
            }
            let Some((pg, from, to)) = self.find_move(&order, limit) else {
                break;
            };
            self.apply(pg, from, to);
            moves += 1;
        }
        moves
    }

    /// The first move, fullest OSD first and emptiest target first, that the rule allows
    /// and that lowers the squared deviation.
    fn find_move(&self, order: &[usize], limit: f64) -> Option<(usize, usize, usize)> {
        for &from in order {
            let d_from = self.deviation(from);
            if d_from <= 0.0 {
                break;
            }
            for &to in order.iter().rev() {
                let d_to = self.deviation(to);
                // A move must help (d_from - d_to > 1) and fix an OSD outside the limit.
                if d_from - d_to <= 1.0 {
                    break;
                }
                if d_from <= limit && d_to >= -limit {
                    continue;
                }
                for &pg in &self.holds[from] {
                    if self.allowed(pg, from, to) {
                        return Some((pg, from, to));
                    }
                }
            }
        }
        None
    }

    /// Whether PG `pg` may move its copy on `from` to `to`: `to` is not in the PG, its
    /// failure domain holds no other copy, and the upmap pairs express the result.
    fn allowed(&self, pg: usize, from: usize, to: usize) -> bool {
        let set = &self.now[pg];
        let (from_osd, to_osd) = (self.osds[from], self.osds[to]);
        if set.contains(to_osd) {
            return false;
        }
        let to_domain = self.domain[&to_osd];
        if set.osds().any(|o| o != from_osd && self.domain.get(&o) == Some(&to_domain)) {
            return false;
        }
        self.pairs_for(pg, &self.moved(pg, from_osd, to_osd)).is_some()
    }

    fn moved(&self, pg: usize, from: OsdId, to: OsdId) -> OsdSet {
        let mut set = self.now[pg];
        let position = set.position(from).expect("the PG holds it");
        set.set(position, Some(to));
        set
    }

    /// The upmap pairs that turn the PG's CRUSH set into `target`: one per position that
    /// differs, in an order the OSD map applies correctly (a pair whose target is still in
    /// the set would be skipped, so the pair that frees it must come first). `None` when no
    /// order works (two positions trading OSDs), or a position cannot be expressed.
    fn pairs_for(&self, pg: usize, target: &OsdSet) -> Option<Vec<(OsdId, OsdId)>> {
        let raw = &self.raw[pg];
        let mut pairs = Vec::new();
        for (position, want) in target.iter().enumerate() {
            let have = raw.get(position);
            if have != want {
                pairs.push((have?, want?));
            }
        }
        if self.upmapped(pg, &pairs) == *target {
            return Some(pairs);
        }
        pairs.reverse();
        (self.upmapped(pg, &pairs) == *target).then_some(pairs)
    }

    /// The PG's set from its CRUSH set and `pairs`, as the OSD map applies them.
    fn upmapped(&self, pg: usize, pairs: &[(OsdId, OsdId)]) -> OsdSet {
        self.map.upmapped(self.pool.rule, self.raw[pg], pairs)
    }

    fn apply(&mut self, pg: usize, from: usize, to: usize) {
        let (from_osd, to_osd) = (self.osds[from], self.osds[to]);
        let moved = self.moved(pg, from_osd, to_osd);
        let pairs = self.pairs_for(pg, &moved).expect("allowed() found the pairs");
        self.now[pg] = moved;
        self.pairs.insert(pg, pairs);
        self.count[from] -= 1;
        self.count[to] += 1;
        self.holds[from].remove(&pg);
        self.holds[to].insert(pg);
    }

    /// The map changes for every PG whose pairs differ from the map's.
    fn changes(&self) -> Vec<MapChange> {
        let existing = &self.map.contents().pg_upmap_items;
        self.pairs
            .iter()
            .filter_map(|(&i, pairs)| {
                let pg = PgId { pool: self.pool.id, seed: i as u32 };
                let before = existing.get(&pg).map_or(&[][..], Vec::as_slice);
                (before != pairs.as_slice())
                    .then(|| MapChange::PgUpmapItems { pg, pairs: pairs.clone() })
            })
            .collect()
    }
}
