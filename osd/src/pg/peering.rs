//! Peering decisions, pure: whom to ask, whether the PG may go active, whose history is
//! authoritative, which copies recover from the log and which by backfill, and which
//! acting set to ask the monitors for while the up set backfills.
//!
//! The acting set (Ceph's `pg_temp`): when some of the up set must backfill and complete
//! copies exist outside it (on OSDs just marked out, or that CRUSH moved the PG away
//! from), those copies keep serving until backfill is done, so the PG never has fewer
//! copies than exist. When the up primary itself must backfill, a complete copy leads.
//!
//! The shell gathers `PgInfo`s from the OSDs `probe_set` names (asking again as infos
//! bring more past intervals), then calls `decide`. A PG never goes active on a stale or
//! partial history: every past interval that may have accepted writes must be represented
//! by an OSD that answered, and the authority is chosen among complete copies only.

use std::collections::{BTreeMap, BTreeSet};

use placement::Epoch;
use proto::osd::{PastInterval, PgInfo};

#[derive(Clone, Copy)]
pub struct Erasure<'a> {
    pub k: usize,
    pub acting: &'a [Option<u32>],
    pub up: &'a [Option<u32>],
    /// The shard position each answering OSD's copy is for (a stray's too: the position
    /// it held).
    pub held: &'a BTreeMap<u32, usize>,
    /// Answering OSDs that keep a shard of another position (from before their position
    /// moved) besides the copy they answered for.
    pub kept: &'a BTreeSet<u32>,
    /// The map epoch each answering OSD's store first served at: an answer of "nothing"
    /// says nothing about intervals before it (the OSD may have been re-created since).
    pub born: &'a BTreeMap<u32, Epoch>,
}

/// What a PG's primary knows when it decides.
pub struct Peering<'a> {
    pub me: u32,
    pub acting: &'a [u32],
    pub up: &'a [u32],
    pub min_size: usize,
    pub size: usize,
    /// An erasure-coded PG's k and its acting and up sets by shard position (holes kept):
    /// it serves reads (and rebuilds shards) with k complete shards, takes writes with
    /// `min_size`, and its acting-set override keeps positions.
    pub erasure: Option<Erasure<'a>>,
    /// Answers so far: `None` for an OSD that has no copy of the PG.
    pub infos: &'a BTreeMap<u32, Option<PgInfo>>,
    /// The intervals since the PG last went active, from this OSD and its peers.
    pub past_intervals: &'a [PastInterval],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ask these OSDs first.
    Probe(BTreeSet<u32>),
    /// An interval that may have accepted writes has too few OSDs up to tell what it
    /// wrote (none for a replicated PG, fewer than k with a shard for an erasure-coded one).
    Down {
        interval: PastInterval,
        /// Its OSDs that did not answer with a copy: down, or up and holding nothing.
        waiting_for: Vec<u32>,
    },
    /// Copies exist, but none with a complete history answered.
    Incomplete,
    Plan(Plan),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The OSD whose history wins.
    pub auth: u32,
    /// Acting OSDs (the primary too, if not the authority) that catch up from the log.
    pub log_recovery: Vec<u32>,
    /// OSDs of the acting and up sets that need a full scan and copy.
    pub backfill: Vec<u32>,
    /// Acting OSDs that are or will be complete copies once log recovery is done.
    pub complete: usize,
    /// Whether enough complete copies exist to accept writes (with the acting set wanted).
    pub active: bool,
    /// The acting set to ask the monitors for (the up set ends an override); the PG
    /// waits for it rather than going active.
    pub want_acting: Option<Vec<Option<u32>>>,
    /// OSDs outside the up and acting sets that hold a copy: deleted once the PG is clean.
    pub strays: Vec<u32>,
}

/// The newest `last_epoch_started` among the infos: intervals before it are history that
/// has already been peered.
pub fn last_epoch_started(infos: &BTreeMap<u32, Option<PgInfo>>) -> Epoch {
    infos.values().flatten().map(|i| i.last_epoch_started).max().unwrap_or_default()
}

/// Past intervals from several copies, each once, oldest first.
pub fn merge_intervals<'a>(
    lists: impl IntoIterator<Item = &'a [PastInterval]>,
) -> Vec<PastInterval> {
    let mut merged: Vec<PastInterval> = Vec::new();
    for list in lists {
        for interval in list {
            if !merged.contains(interval) {
                merged.push(interval.clone());
            }
        }
    }
    merged.sort_by_key(|i| (i.first, i.last));
    merged
}

/// The intervals that matter: may have accepted writes, and ended at or after `les`.
/// An interval whose primary answered that it holds nothing of the PG took none
/// (`never_active`).
fn relevant<'a>(p: &'a Peering<'a>, les: Epoch) -> impl Iterator<Item = &'a PastInterval> + 'a {
    p.past_intervals.iter().filter(move |i| i.maybe_went_rw && i.last >= les && !never_active(p, i))
}

/// Whether an erasure-coded PG's interval never went active, by its primary's word. A PG
/// goes active only on its primary, which creates its copy first and records the
/// interval's first epoch in it as `last_epoch_started` before it takes a write (and every
/// later write's sync makes that record durable). So a primary that answers from a store
/// that existed when the interval began, keeping no shard of another position, with no
/// copy at all or with a copy that went active last before the interval began, took no
/// writes then. Without this, an interval that never went active would look like one that
/// wrote on OSDs holding nothing, and the PG would be down for good: one that only asked
/// for another acting set (as when the up set holds too few shards), one whose primary
/// created its copy but could not activate the others (a peer unreachable for a moment),
/// or one that the map showed while its OSDs were not running (a whole cluster restarted).
/// (A replicated PG needs any one answer per interval, so it has no need.)
fn never_active(p: &Peering<'_>, interval: &PastInterval) -> bool {
    let Some(e) = p.erasure else { return false };
    interval.primary.is_some_and(|primary| {
        let went_active_before = match p.infos.get(&primary) {
            Some(None) => true,
            Some(Some(info)) => info.last_epoch_started < interval.first,
            None => false,
        };
        went_active_before
            && !e.kept.contains(&primary)
            && e.born.get(&primary).is_some_and(|&b| b <= interval.first)
    })
}

/// The OSDs of a past interval that must answer with a copy for it to be represented,
/// and have not: what a down PG waits for.
fn unanswered(p: &Peering<'_>, interval: &PastInterval) -> Vec<u32> {
    let answered: fn(Option<&Option<PgInfo>>) -> bool = match p.erasure {
        Some(_) => |i| i.is_some_and(Option::is_some),
        None => |i| i.is_some(),
    };
    interval.acting.iter().copied().filter(|o| !answered(p.infos.get(o))).collect()
}

pub fn decide(p: &Peering<'_>, is_up: impl Fn(u32) -> bool) -> Decision {
    let les = last_epoch_started(p.infos);
    let unasked = unasked(p, les, &is_up);
    if !unasked.is_empty() {
        return Decision::Probe(unasked);
    }
    if let Some(down) = unrepresented(p, les) {
        return down;
    }
    let Some(auth) = authority(p) else { return Decision::Incomplete };
    let auth_info = p.infos.get(&auth).cloned().flatten().unwrap_or_default();
    let complete = Complete { p, auth, auth_info: &auth_info };
    let want_acting = match p.erasure {
        Some(e) => want_acting_ec(p, e, &complete, &is_up),
        None => want_acting_replicated(p, &complete, &is_up),
    };
    let mut plan = Plan {
        auth,
        log_recovery: Vec::new(),
        backfill: Vec::new(),
        complete: 0,
        active: false,
        want_acting,
        strays: p
            .infos
            .keys()
            .copied()
            .filter(|&o| complete.has_copy(o) && !p.acting.contains(&o) && !p.up.contains(&o))
            .collect(),
    };
    for &osd in p.acting {
        if osd == auth {
            plan.complete += 1;
        } else if complete.is(osd) {
            plan.log_recovery.push(osd);
            plan.complete += 1;
        } else {
            // A copy the authority's log does not reach, or none at all.
            plan.backfill.push(osd);
        }
    }
    // Up OSDs the acting set stands in for fill up in the background.
    plan.backfill
        .extend(p.up.iter().copied().filter(|o| !p.acting.contains(o) && !complete.is(*o)));
    let serves = p.erasure.map_or(p.min_size, |e| e.k);
    plan.active = plan.complete >= serves && complete.is(p.me) && plan.want_acting.is_none();
    Decision::Plan(plan)
}

/// Everyone who might know something and can answer, and has not yet: the acting and up
/// sets, this OSD, and the up OSDs of the past intervals that may have taken writes.
fn unasked(p: &Peering<'_>, les: Epoch, is_up: &impl Fn(u32) -> bool) -> BTreeSet<u32> {
    let mut probe: BTreeSet<u32> = p.acting.iter().chain(p.up).copied().collect();
    probe.insert(p.me);
    for interval in relevant(p, les) {
        probe.extend(interval.acting.iter().copied().filter(|&o| is_up(o)));
    }
    probe.into_iter().filter(|o| !p.infos.contains_key(o)).collect()
}

/// `Down` for the first past interval that may have taken writes and that the answers
/// do not represent.
fn unrepresented(p: &Peering<'_>, les: Epoch) -> Option<Decision> {
    relevant(p, les).find_map(|interval| {
        let represented = match p.erasure {
            // Its writes can be read back only from k of its shards (Ceph's rule for
            // erasure-coded PGs): fewer, and what it wrote may be lost or torn.
            Some(e) => interval.acting.len() - unanswered(p, interval).len() >= e.k,
            None => interval.acting.iter().any(|o| p.infos.contains_key(o)),
        };
        (!represented).then(|| Decision::Down {
            interval: interval.clone(),
            waiting_for: unanswered(p, interval),
        })
    })
}

/// The authority among complete copies: newest `last_epoch_started`, then newest
/// `last_update` (for an erasure-coded PG, no newer than k shard positions reach),
/// longer log, this OSD, the lowest id. With no copy anywhere this OSD starts the
/// history; with copies but none complete there is none (`None`: incomplete).
fn authority(p: &Peering<'_>) -> Option<u32> {
    let candidates: Vec<(u32, &PgInfo)> = p
        .infos
        .iter()
        .filter_map(|(&osd, info)| info.as_ref().map(|i| (osd, i)))
        .filter(|(_, i)| i.backfill_incomplete.is_none())
        .collect();
    if candidates.is_empty() {
        // No copy anywhere: a new PG, and this primary starts its history.
        return (!p.infos.values().any(Option::is_some)).then_some(p.me);
    }
    let best_les = candidates.iter().map(|(_, i)| i.last_epoch_started).max()?;
    let newest: Vec<&(u32, &PgInfo)> =
        candidates.iter().filter(|(_, i)| i.last_epoch_started == best_les).collect();
    let reached = p.erasure.and_then(|e| reached_by_k_positions(e, &newest));
    newest
        .into_iter()
        .filter(|(_, i)| reached.is_none_or(|v| i.last_update <= v))
        .max_by_key(|(osd, i)| {
            (i.last_update, std::cmp::Reverse(i.log_tail), *osd == p.me, std::cmp::Reverse(*osd))
        })
        .map(|(osd, _)| *osd)
}

/// An erasure-coded write is readable only once k distinct shards have it: the history
/// is the newest that k shard positions reach (two copies of one position, such as a
/// stray's and its replacement's, count once), and entries past it (a write torn by a
/// failed primary, never acknowledged) are rewound on the shards that have them.
fn reached_by_k_positions(
    e: Erasure<'_>,
    newest: &[&(u32, &PgInfo)],
) -> Option<placement::Version> {
    let mut heads: BTreeMap<usize, placement::Version> = BTreeMap::new();
    for (osd, info) in newest {
        if let Some(&position) = e.held.get(osd) {
            let head = heads.entry(position).or_default();
            *head = (*head).max(info.last_update);
        }
    }
    let mut heads: Vec<placement::Version> = heads.into_values().collect();
    heads.sort_unstable_by(|a, b| b.cmp(a));
    heads.get(e.k - 1).copied()
}

/// Which copies are complete against the authority's history.
struct Complete<'a> {
    p: &'a Peering<'a>,
    auth: u32,
    auth_info: &'a PgInfo,
}

impl Complete<'_> {
    fn is(&self, osd: u32) -> bool {
        if osd == self.auth || self.auth_info.last_update == placement::Version::ZERO {
            // Nothing was ever written: every copy, even none, is complete.
            return true;
        }
        // Within the authority's log (divergent entries are rewound by log recovery).
        self.p.infos.get(&osd).cloned().flatten().is_some_and(|i| {
            i.backfill_incomplete.is_none() && i.last_update >= self.auth_info.log_tail
        })
    }

    fn has_copy(&self, osd: u32) -> bool {
        self.p.infos.get(&osd).is_some_and(Option::is_some)
    }
}

/// The acting set an erasure-coded PG asks for, if it differs. Shards keep their
/// positions. Where the up OSD must be rebuilt, a complete shard of that position keeps
/// serving: the one acting there now, else one an OSD outside the sets still holds (as
/// when two OSDs of a PG are marked out at once). The positions before the first
/// complete shard are left empty, so that a complete shard leads (the up OSDs there are
/// rebuilt as backfill targets meanwhile). Nothing else is overridden: a shard is
/// rebuilt in place from any k others.
fn want_acting_ec(
    p: &Peering<'_>,
    e: Erasure<'_>,
    complete: &Complete<'_>,
    is_up: &impl Fn(u32) -> bool,
) -> Option<Vec<Option<u32>>> {
    let complete_up = |o: &Option<u32>| o.is_some_and(|o| complete.is(o) && is_up(o));
    let holds = |o: u32, i: usize| e.held.get(&o) == Some(&i) && complete.has_copy(o);
    let in_sets = |o: u32| e.up.contains(&Some(o)) || e.acting.contains(&Some(o));
    let mut led = false;
    let want: Vec<Option<u32>> =
        e.up.iter()
            .enumerate()
            .map(|(i, &up)| {
                let acting = e.acting.get(i).copied().flatten();
                let stray = p
                    .infos
                    .keys()
                    .copied()
                    .find(|&o| !in_sets(o) && holds(o, i) && complete_up(&Some(o)));
                let pick = if complete_up(&up) {
                    up
                } else if complete_up(&acting) && acting.is_some_and(|o| holds(o, i)) {
                    acting
                } else if stray.is_some() {
                    stray
                } else if led {
                    up
                } else {
                    None
                };
                led |= complete_up(&pick);
                pick
            })
            .collect();
    (led && want != e.acting).then_some(want)
}

/// The acting set a replicated PG asks for, if it differs: the complete up OSDs, then
/// complete copies outside the up set (those acting now first, so an override in place
/// stays as it is) up to the pool's size; the up set itself when no override is needed.
fn want_acting_replicated(
    p: &Peering<'_>,
    complete: &Complete<'_>,
    is_up: &impl Fn(u32) -> bool,
) -> Option<Vec<Option<u32>>> {
    let mut want: Vec<u32> = p.up.iter().copied().filter(|&o| complete.is(o)).collect();
    let outside = p
        .acting
        .iter()
        .chain(p.infos.keys())
        .copied()
        .filter(|&o| !p.up.contains(&o) && complete.has_copy(o) && complete.is(o) && is_up(o));
    for osd in outside {
        if want.len() >= p.size {
            break;
        }
        if !want.contains(&osd) {
            want.push(osd);
        }
    }
    let up_primary_backfills = p.up.first().is_some_and(|&o| !complete.is(o));
    let override_needed =
        want.iter().any(|o| !p.up.contains(o)) || (up_primary_backfills && !want.is_empty());
    let desired = if override_needed { want } else { p.up.to_vec() };
    (desired != p.acting).then(|| desired.into_iter().map(Some).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use placement::Version;

    fn info(les: u64, last_update: (u64, u64), tail: (u64, u64)) -> Option<PgInfo> {
        Some(PgInfo {
            last_update: Version::new(last_update.0, last_update.1),
            last_complete: Version::new(last_update.0, last_update.1),
            log_tail: Version::new(tail.0, tail.1),
            last_epoch_started: Epoch(les),
            ..PgInfo::default()
        })
    }

    fn interval(first: u64, last: u64, acting: &[u32], rw: bool) -> PastInterval {
        PastInterval {
            first: Epoch(first),
            last: Epoch(last),
            acting: acting.to_vec(),
            primary: acting.first().copied(),
            maybe_went_rw: rw,
        }
    }

    static NONE_KEPT: BTreeSet<u32> = BTreeSet::new();
    /// Every OSD's store as old as the tests' histories.
    static BORN_EARLY: std::sync::LazyLock<BTreeMap<u32, Epoch>> =
        std::sync::LazyLock::new(|| (0..10).map(|o| (o, Epoch(1))).collect());

    /// Answers from OSDs holding `copy` and from OSDs holding nothing.
    fn copies(
        holding: &[u32],
        empty: &[u32],
        copy: Option<PgInfo>,
    ) -> BTreeMap<u32, Option<PgInfo>> {
        let held = holding.iter().map(|&o| (o, copy.clone()));
        held.chain(empty.iter().map(|&o| (o, None))).collect()
    }

    fn decide_all_up(p: &Peering<'_>) -> Decision {
        decide(p, |_| true)
    }

    #[test]
    fn asks_acting_up_and_past_acting_first() {
        let infos = BTreeMap::from([(0, info(5, (5, 10), (1, 1)))]);
        let past = [interval(6, 8, &[0, 3], true), interval(4, 5, &[7], true)];
        let p = Peering {
            me: 0,
            acting: &[0, 1],
            up: &[0, 2],
            min_size: 2,
            size: 3,
            erasure: None,
            infos: &infos,
            past_intervals: &past,
        };
        // Interval 4-5 ended before last_epoch_started 5? No: it ends at 5 >= 5, so osd.7
        // is asked too; osd.3 only if up.
        assert_eq!(decide(&p, |o| o != 3), Decision::Probe(BTreeSet::from([1, 2, 7])));
        assert_eq!(decide_all_up(&p), Decision::Probe(BTreeSet::from([1, 2, 3, 7])));
    }

    #[test]
    fn an_unrepresented_write_interval_makes_the_pg_down() {
        let infos = BTreeMap::from([(0, info(5, (5, 10), (1, 1))), (1, info(5, (5, 10), (1, 1)))]);
        let past = [interval(6, 8, &[3], true)];
        let p = Peering {
            me: 0,
            acting: &[0, 1],
            up: &[0, 1],
            min_size: 2,
            size: 3,
            erasure: None,
            infos: &infos,
            past_intervals: &past,
        };
        let down = Decision::Down { interval: past[0].clone(), waiting_for: vec![3] };
        assert_eq!(decide(&p, |o| o != 3), down);
        // An interval that could not have taken writes does not block.
        let past = [interval(6, 8, &[3], false)];
        let p = Peering { past_intervals: &past, ..p };
        assert!(matches!(decide(&p, |o| o != 3), Decision::Plan(_)));
    }

    #[test]
    fn the_newest_history_wins_and_short_logs_backfill() {
        let infos = BTreeMap::from([
            (0, info(5, (5, 10), (3, 1))),
            (1, info(6, (6, 20), (4, 2))),
            (2, info(2, (2, 3), (1, 1))),
            (4, None),
        ]);
        let p = Peering {
            me: 0,
            acting: &[0, 2, 4],
            up: &[0, 2, 4],
            min_size: 2,
            size: 3,
            erasure: None,
            infos: &infos,
            past_intervals: &[],
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.auth, 1);
        // osd.0 at 5.10 is within osd.1's log (tail 4.2); osd.2 at 2.3 is not; osd.4 has
        // nothing.
        assert_eq!(plan.log_recovery, vec![0]);
        assert_eq!(plan.backfill, vec![2, 4]);
        assert_eq!(plan.complete, 1);
        // osd.1 is complete but outside the acting set: it is asked for, and until then
        // the PG waits.
        assert_eq!(plan.want_acting, Some(vec![Some(0), Some(1)]));
        assert_eq!(plan.strays, vec![1]);
        assert!(!plan.active);
    }

    #[test]
    fn ties_prefer_the_primary_then_the_longer_log() {
        let infos = BTreeMap::from([
            (0, info(5, (5, 10), (3, 1))),
            (1, info(5, (5, 10), (2, 1))),
            (2, info(5, (5, 10), (3, 1))),
        ]);
        let p = Peering {
            me: 2,
            acting: &[2, 0, 1],
            up: &[2, 0, 1],
            min_size: 2,
            size: 3,
            erasure: None,
            infos: &infos,
            past_intervals: &[],
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.auth, 1);
        assert_eq!(plan.log_recovery, vec![2, 0]);
        assert!(plan.active);
    }

    #[test]
    fn backfilling_copies_never_become_the_authority() {
        let mut partial = info(9, (9, 50), (9, 1));
        partial.as_mut().unwrap().backfill_incomplete =
            Some(proto::osd::BackfillMark { last: None });
        let infos = BTreeMap::from([(0, partial.clone()), (1, partial)]);
        let p = Peering {
            me: 0,
            acting: &[0, 1],
            up: &[0, 1],
            min_size: 1,
            size: 3,
            erasure: None,
            infos: &infos,
            past_intervals: &[],
        };
        assert_eq!(decide_all_up(&p), Decision::Incomplete);
    }

    #[test]
    fn a_new_pg_starts_everywhere_empty_and_active() {
        let infos = BTreeMap::from([(0, None), (1, None), (2, None)]);
        let p = Peering {
            me: 0,
            acting: &[0, 1, 2],
            up: &[0, 1, 2],
            min_size: 2,
            size: 3,
            erasure: None,
            infos: &infos,
            past_intervals: &[],
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!((plan.auth, plan.log_recovery, plan.backfill), (0, vec![1, 2], vec![]));
        assert!(plan.active);
    }

    #[test]
    fn too_few_complete_copies_stay_inactive() {
        let infos = BTreeMap::from([(0, info(5, (5, 10), (3, 1))), (1, None)]);
        let p = Peering {
            me: 0,
            acting: &[0, 1],
            up: &[0, 1],
            min_size: 2,
            size: 3,
            erasure: None,
            infos: &infos,
            past_intervals: &[],
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.backfill, vec![1]);
        assert!(!plan.active);
    }

    /// osd.3 was marked out: CRUSH now maps the PG to [1, 2, 5], and osd.5 has nothing.
    fn marked_out() -> BTreeMap<u32, Option<PgInfo>> {
        BTreeMap::from([
            (1, info(5, (5, 10), (3, 1))),
            (2, info(5, (5, 10), (3, 1))),
            (3, info(5, (5, 10), (3, 1))),
            (5, None),
        ])
    }

    #[test]
    fn a_marked_out_copy_keeps_serving_while_its_replacement_backfills() {
        let infos = marked_out();
        let past = [interval(2, 7, &[3, 1, 2], true)];
        let p = Peering {
            me: 1,
            acting: &[1, 2, 5],
            up: &[1, 2, 5],
            min_size: 2,
            size: 3,
            erasure: None,
            infos: &infos,
            past_intervals: &past,
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.want_acting, Some(vec![Some(1), Some(2), Some(3)]));
        assert!(!plan.active);
        assert_eq!(plan.strays, vec![3]);

        // With the override in place: active on the three complete copies, osd.5 fills.
        let p = Peering { acting: &[1, 2, 3], ..p };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.want_acting, None);
        assert!(plan.active);
        assert_eq!((plan.log_recovery, plan.backfill), (vec![2, 3], vec![5]));
        assert_eq!(plan.strays, Vec::<u32>::new());

        // Backfill done: the override ends.
        let mut infos = marked_out();
        infos.insert(5, info(5, (5, 10), (3, 1)));
        let p = Peering { infos: &infos, ..p };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.want_acting, Some(vec![Some(1), Some(2), Some(5)]));
        assert!(!plan.active);
    }

    #[test]
    fn a_primary_that_must_backfill_hands_the_lead_to_a_complete_copy() {
        // osd.3 returns after its log fell behind osd.1's tail; CRUSH makes it primary.
        let infos = BTreeMap::from([
            (1, info(8, (8, 40), (6, 1))),
            (2, info(8, (8, 40), (6, 1))),
            (3, info(5, (5, 10), (3, 1))),
        ]);
        let p = Peering {
            me: 3,
            acting: &[3, 1, 2],
            up: &[3, 1, 2],
            min_size: 2,
            size: 3,
            erasure: None,
            infos: &infos,
            past_intervals: &[],
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.want_acting, Some(vec![Some(1), Some(2)]));
        assert!(!plan.active);
        // osd.1 leads the override and backfills osd.3.
        let p = Peering { me: 1, acting: &[1, 2], ..p };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.want_acting, None);
        assert!(plan.active);
        assert_eq!(plan.backfill, vec![3]);
    }

    #[test]
    fn a_down_osd_alone_asks_for_no_override() {
        let infos = BTreeMap::from([(1, info(5, (5, 10), (3, 1))), (2, info(5, (5, 10), (3, 1)))]);
        let p = Peering {
            me: 1,
            acting: &[1, 2],
            up: &[1, 2],
            min_size: 2,
            size: 3,
            erasure: None,
            infos: &infos,
            past_intervals: &[],
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.want_acting, None);
        assert!(plan.active);
        assert!(plan.backfill.is_empty() && plan.strays.is_empty());
    }

    /// An erasure-coded 2+1 PG whose acting and up sets are `flat` (positions `set`).
    fn ec_2_1<'a>(
        me: u32,
        flat: &'a [u32],
        set: &'a [Option<u32>],
        infos: &'a BTreeMap<u32, Option<PgInfo>>,
        past_intervals: &'a [PastInterval],
    ) -> Peering<'a> {
        Peering {
            me,
            acting: flat,
            up: flat,
            min_size: 2,
            size: 3,
            erasure: Some(Erasure {
                k: 2,
                acting: set,
                up: set,
                held: positions(set),
                kept: &NONE_KEPT,
                born: &BORN_EARLY,
            }),
            infos,
            past_intervals,
        }
    }

    /// Each OSD of `set` holding the shard of its position (leaked: test-only).
    fn positions(set: &[Option<u32>]) -> &'static BTreeMap<u32, usize> {
        let held = set.iter().enumerate().filter_map(|(i, o)| o.map(|o| (o, i))).collect();
        Box::leak(Box::new(held))
    }

    #[test]
    fn an_erasure_coded_pg_keeps_shard_positions_and_a_complete_shard_leads() {
        // osd.7 replaced osd.0 at position 0 (the primary's) and holds nothing yet.
        let infos = BTreeMap::from([
            (1, info(5, (5, 10), (3, 1))),
            (2, info(5, (5, 10), (3, 1))),
            (7, None),
        ]);
        let up = [Some(7), Some(1), Some(2)];
        let p = ec_2_1(7, &[7, 1, 2], &up, &infos, &[]);
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        // Position 0 stays empty while osd.7 is rebuilt; osd.1 leads from position 1.
        assert_eq!(plan.want_acting, Some(vec![None, Some(1), Some(2)]));
        assert!(!plan.active);
        let acting = [None, Some(1), Some(2)];
        let p = Peering {
            me: 1,
            acting: &[1, 2],
            erasure: Some(Erasure { acting: &acting, ..p.erasure.unwrap() }),
            ..p
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.want_acting, None);
        assert!(plan.active, "two complete shards of k=2 serve");
        assert_eq!(plan.backfill, vec![7]);
        // A rebuilt non-leading shard needs no override; one shard is too few.
        let up = [Some(1), Some(7), Some(2)];
        let p = Peering {
            acting: &[1, 7, 2],
            up: &[1, 7, 2],
            erasure: Some(Erasure {
                k: 2,
                acting: &up,
                up: &up,
                held: positions(&up),
                kept: &NONE_KEPT,
                born: &BORN_EARLY,
            }),
            ..p
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!((plan.want_acting, plan.active), (None, true));
        let infos = BTreeMap::from([(1, info(5, (5, 10), (3, 1))), (7, None)]);
        let p = Peering { infos: &infos, acting: &[1, 7], up: &[1, 7], ..p };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert!(!plan.active && plan.complete == 1, "{plan:?}");
    }

    #[test]
    fn complete_shards_outside_the_sets_serve_at_their_positions() {
        // osd.0 and osd.1 (positions 0 and 1) were marked out at once: osd.5 and osd.6
        // replace them and hold nothing; osd.2 alone has its shard in the up set.
        let infos = copies(&[0, 1, 2], &[5, 6], info(5, (5, 10), (3, 1)));
        let up = [Some(5), Some(6), Some(2)];
        let held = BTreeMap::from([(0, 0), (1, 1), (2, 2)]);
        let p = Peering {
            erasure: Some(Erasure {
                k: 2,
                acting: &up,
                up: &up,
                held: &held,
                kept: &NONE_KEPT,
                born: &BORN_EARLY,
            }),
            ..ec_2_1(5, &[5, 6, 2], &up, &infos, &[])
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.want_acting, Some(vec![Some(0), Some(1), Some(2)]));
        // With that acting set, osd.0 leads and osd.5 and osd.6 are rebuilt.
        let acting = [Some(0), Some(1), Some(2)];
        let p = Peering {
            me: 0,
            acting: &[0, 1, 2],
            erasure: Some(Erasure { acting: &acting, ..p.erasure.unwrap() }),
            ..p
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.want_acting, None);
        assert!(plan.active, "{plan:?}");
        assert_eq!(plan.backfill, vec![5, 6]);
        // A stray's shard serves only at its own position.
        let swapped = BTreeMap::from([(0, 1), (1, 0), (2, 2)]);
        let e = Erasure { acting: &up, held: &swapped, ..p.erasure.unwrap() };
        let p = Peering { me: 5, acting: &[5, 6, 2], erasure: Some(e), ..p };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.want_acting, Some(vec![Some(1), Some(0), Some(2)]));
    }

    #[test]
    fn an_interval_whose_primary_never_activated_took_no_writes() {
        // Interval 10-17 on osd.0, 2 and 3 went active; 18-18 on osd.4, 1 and 3 (whose
        // first two hold nothing) only asked for the old acting set back.
        let infos = copies(&[0, 2, 3], &[4, 1], info(10, (10, 3), (10, 1)));
        let past = [interval(10, 17, &[0, 2, 3], true), interval(18, 18, &[4, 1, 3], true)];
        let acting = [Some(0), Some(2), Some(3)];
        let up = [Some(4), Some(1), Some(3)];
        let held = BTreeMap::from([(0, 0), (2, 1), (3, 2)]);
        let p = Peering {
            erasure: Some(Erasure {
                k: 2,
                acting: &acting,
                up: &up,
                held: &held,
                kept: &NONE_KEPT,
                born: &BORN_EARLY,
            }),
            up: &[4, 1, 3],
            ..ec_2_1(0, &[0, 2, 3], &acting, &infos, &past)
        };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("not a plan") };
        assert!(plan.active, "{plan:?}");
        assert_eq!(plan.backfill, vec![4, 1]);
        // Had osd.4 kept a shard from another position, it may have gone active then
        // and written on one shard only: down.
        let kept = BTreeSet::from([4]);
        let e = Erasure { kept: &kept, ..p.erasure.unwrap() };
        let down = Decision::Down { interval: past[1].clone(), waiting_for: vec![4, 1] };
        assert_eq!(decide_all_up(&Peering { erasure: Some(e), ..p }), down);
        // Nor does an osd.4 whose store is newer than the interval (re-created since).
        let born = BTreeMap::from([(4, Epoch(19))]);
        let e = Erasure { born: &born, ..p.erasure.unwrap() };
        assert_eq!(decide_all_up(&Peering { erasure: Some(e), ..p }), down);
    }

    /// A new 2+1 PG on osd.0, 1 and 2 at epoch 5: osd.0 created its copy to go active,
    /// but could not activate osd.1 (unreachable for a moment) before the map changed at
    /// 10. Then every OSD restarted: the map showed 0, 1 and 2 up from 10 to 14 while none
    /// of them ran.
    fn activation_that_never_finished() -> (BTreeMap<u32, Option<PgInfo>>, Vec<PastInterval>) {
        let created = info(0, (0, 0), (0, 0));
        let infos = BTreeMap::from([(0, created), (1, None), (2, None)]);
        let past = vec![interval(5, 9, &[0, 1, 2], true), interval(10, 14, &[0, 1, 2], true)];
        (infos, past)
    }

    #[test]
    fn an_interval_whose_primary_could_not_activate_the_others_took_no_writes() {
        let (infos, past) = activation_that_never_finished();
        let set = [Some(0), Some(1), Some(2)];
        let p = ec_2_1(0, &[0, 1, 2], &set, &infos, &past);
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("not a plan") };
        assert!(plan.active, "{plan:?}");
        assert_eq!((plan.auth, plan.log_recovery, plan.backfill), (0, vec![1, 2], vec![]));
        // Had osd.0 gone active at 5 (its copy says so), the shards it wrote on are
        // gone: down, waiting for the OSDs that should hold them.
        let mut infos = infos.clone();
        infos.insert(0, info(5, (5, 3), (5, 1)));
        let down = Decision::Down { interval: past[0].clone(), waiting_for: vec![1, 2] };
        assert_eq!(decide_all_up(&Peering { infos: &infos, ..p }), down);
        // A primary that went active at 5 says nothing of a later interval it did not go
        // active in (10-14 on osd.0, 3 and 4, the last two holding nothing).
        let infos = copies(&[0, 1, 2], &[3, 4], info(5, (5, 3), (5, 1)));
        let past = [interval(5, 9, &[0, 1, 2], true), interval(10, 14, &[0, 3, 4], true)];
        let p = ec_2_1(0, &[0, 1, 2], &set, &infos, &past);
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("not a plan") };
        assert!(plan.active, "{plan:?}");
        // One that did go active then may have written on osd.0 alone of them.
        let mut infos = infos.clone();
        infos.insert(0, info(10, (10, 1), (5, 1)));
        let down = Decision::Down { interval: past[1].clone(), waiting_for: vec![3, 4] };
        assert_eq!(decide_all_up(&Peering { infos: &infos, ..p }), down);
    }

    /// Found by crashing every OSD at its first peering decision and restarting the
    /// cluster: osd.3 kept a copy recording interval 18, which osd.0 led as the map had it
    /// but never peered in, and osd.0, primary again, decided. Its own store (no copy, born
    /// before 18) proves 18 took no writes, but only if the round counts it: the shell
    /// once gave the core the born epochs of the OSDs it asked and not its own, and the
    /// PG stayed down waiting for the very OSD deciding.
    #[test]
    fn the_deciding_primary_is_a_witness_of_the_intervals_it_led() {
        let mut copy = info(17, (0, 0), (0, 0));
        copy.as_mut().unwrap().past_intervals = vec![interval(18, 18, &[0, 3, 1], true)];
        let infos = BTreeMap::from([(0, None), (1, None), (3, copy)]);
        let past = [interval(18, 18, &[0, 3, 1], true)];
        let set = [Some(0), Some(3), Some(1)];
        let p = ec_2_1(0, &[0, 3, 1], &set, &infos, &past);
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("not a plan") };
        assert!(plan.active, "{plan:?}");
        // Without its own born epoch, the primary's word is no proof.
        let others: BTreeMap<u32, Epoch> =
            BORN_EARLY.iter().filter(|(o, _)| **o != 0).map(|(o, e)| (*o, *e)).collect();
        let Some(e) = &p.erasure else { unreachable!() };
        let blind = Peering { erasure: Some(Erasure { born: &others, ..*e }), ..p };
        let down = Decision::Down { interval: past[0].clone(), waiting_for: vec![0, 1] };
        assert_eq!(decide_all_up(&blind), down);
    }

    #[test]
    fn an_erasure_coded_write_on_fewer_than_k_shards_is_rewound() {
        // osd.1 applied (5, 12) and failed before the other shards had it.
        let infos = BTreeMap::from([
            (1, info(5, (5, 12), (3, 1))),
            (2, info(5, (5, 10), (3, 1))),
            (7, info(5, (5, 10), (3, 1))),
        ]);
        let set = [Some(1), Some(2), Some(7)];
        let p = ec_2_1(1, &[1, 2, 7], &set, &infos, &[]);
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.auth, 2, "the history two shards reach");
        assert!(plan.log_recovery.contains(&1) && plan.active, "{plan:?}");
        // Two shards have it: it stands.
        let infos = BTreeMap::from([
            (1, info(5, (5, 12), (3, 1))),
            (2, info(5, (5, 12), (3, 1))),
            (7, info(5, (5, 10), (3, 1))),
        ]);
        let Decision::Plan(plan) = decide_all_up(&Peering { infos: &infos, ..p }) else {
            panic!("no plan")
        };
        assert_eq!(plan.auth, 1);
        // Two copies of one position count once: osd.3, a stray holding position 0 as
        // osd.1 does, has the write too, but only one shard position does.
        let infos = BTreeMap::from([
            (1, info(5, (5, 12), (3, 1))),
            (2, info(5, (5, 10), (3, 1))),
            (3, info(5, (5, 12), (3, 1))),
            (7, info(5, (5, 10), (3, 1))),
        ]);
        let held = BTreeMap::from([(1, 0), (2, 1), (3, 0), (7, 2)]);
        let e = Erasure { held: &held, ..p.erasure.unwrap() };
        let p = Peering { infos: &infos, erasure: Some(e), ..p };
        let Decision::Plan(plan) = decide_all_up(&p) else { panic!("no plan") };
        assert_eq!(plan.auth, 2, "{plan:?}");
    }

    #[test]
    fn an_erasure_coded_pg_is_down_until_k_shards_of_a_write_interval_answer() {
        // Interval 6-8 led by osd.2: osd.1's copy, last active at 5, says nothing of it.
        let infos = BTreeMap::from([(1, info(5, (5, 10), (3, 1))), (4, None)]);
        let past = [interval(6, 8, &[2, 1, 3], true)];
        let set = [Some(1), None, Some(4)];
        let p = ec_2_1(1, &[1, 4], &set, &infos, &past);
        let down = Decision::Down { interval: past[0].clone(), waiting_for: vec![2, 3] };
        assert_eq!(decide(&p, |o| o != 2 && o != 3), down);
        // A replicated PG needs one copy of the interval.
        assert!(matches!(
            decide(&Peering { erasure: None, ..p }, |o| o != 2 && o != 3),
            Decision::Plan(_)
        ));
    }
}
