//! A PG's state in Ceph's words, pure: the words of an active PG from what its primary
//! knows of its copies, and why a PG that peered cannot go active (`Blocked`). The actor
//! (`actor/stats.rs`, `actor/peering_round.rs`) describes its PG and reports the words.

use proto::osd::PastInterval;

use crate::pg::peering::Plan;

/// Why a PG cannot go active: its state words, in a sentence, and the OSDs it waits for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocked {
    pub state: &'static str,
    pub why: String,
    pub waiting_for: Vec<u32>,
}

impl Blocked {
    fn new(state: &'static str, why: String) -> Blocked {
        Blocked { state, why, waiting_for: Vec::new() }
    }

    /// `interval` may have taken writes and too few of its OSDs answered with a copy:
    /// one for a replicated PG, `k` shards for an erasure-coded one.
    pub fn down(interval: &PastInterval, waiting_for: Vec<u32>, k: Option<usize>) -> Blocked {
        let needed = match k {
            Some(k) => format!("{k} of them with a shard"),
            None => "one of them".to_owned(),
        };
        let why = format!(
            "interval {}-{} (acting {:?}, primary {}) may have taken writes, and {needed} \
             must answer; waiting for {}",
            interval.first,
            interval.last,
            interval.acting,
            interval.primary.map_or("none".to_owned(), |o| format!("osd.{o}")),
            osd_list(&waiting_for),
        );
        Blocked { state: "down", why, waiting_for }
    }

    /// Copies exist, but none with a complete history answered.
    pub fn incomplete() -> Blocked {
        Blocked::new("incomplete", "no complete copy answered".to_owned())
    }

    /// A plan that does not let the PG go active (`Plan::active` is false): too few
    /// complete copies for `min_size` (or `k`), or the primary's own must be rebuilt.
    pub fn inactive(
        plan: &Plan,
        me: u32,
        min_size: usize,
        acting: &[u32],
        k: Option<usize>,
    ) -> Blocked {
        let why = format!(
            "{} complete copies of min_size {min_size} (acting {acting:?}, backfill needed on {:?})",
            plan.complete, plan.backfill
        );
        if plan.complete == 0 {
            Blocked::new("incomplete", why)
        } else if let Some(k) = k.filter(|&k| plan.complete < k) {
            let why = format!("{} complete shards, fewer than k={k}: {why}", plan.complete);
            Blocked::new("down", why)
        } else if plan.backfill.contains(&me) {
            let why = format!("the primary's own copy must be rebuilt first: {why}");
            Blocked::new("peered", why)
        } else {
            Blocked::new("undersized+peered", why)
        }
    }
}

/// How an active PG's backfill stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filling {
    /// Nothing to backfill.
    No,
    /// Backfilling.
    Running,
    /// Waiting for the primary's own recovery first.
    Waiting,
    /// Held up by a target at backfillfull or above.
    Toofull,
}

/// What the words of an active PG say.
#[derive(Clone, Copy, Debug)]
pub struct Active {
    /// Enough copies take writes: active, else peered (an erasure-coded PG with k
    /// shards or more but fewer than min_size serves reads only).
    pub writable: bool,
    /// The acting set is an override of the up set.
    pub remapped: bool,
    /// Fewer acting copies than the pool's size.
    pub undersized: bool,
    /// Objects are missing on some copy.
    pub missing: bool,
    /// An acting copy is being backfilled.
    pub filling_acting: bool,
    pub backfill: Filling,
    /// A scrub runs: `Some(deep)`.
    pub scrub: Option<bool>,
    pub inconsistent: bool,
    /// Snapshot trimming runs.
    pub snaptrim: bool,
}

/// Ceph's words for an active PG, in Ceph's order.
pub fn active_words(a: &Active) -> Vec<&'static str> {
    let mut words = vec![if a.writable { "active" } else { "peered" }];
    if a.remapped {
        words.push("remapped");
    }
    if a.missing || a.undersized || a.filling_acting {
        words.push("degraded");
    }
    if a.undersized {
        words.push("undersized");
    }
    if a.missing {
        words.push("recovering");
    }
    match a.backfill {
        Filling::No => {}
        Filling::Running => words.push("backfilling"),
        Filling::Waiting => words.push("backfill_wait"),
        Filling::Toofull => words.push("backfill_toofull"),
    }
    if !a.missing && !a.undersized && !a.remapped && a.backfill == Filling::No {
        words.push("clean");
    }
    if a.snaptrim {
        words.push("snaptrim");
    }
    if let Some(deep) = a.scrub {
        words.push("scrubbing");
        if deep {
            words.push("deep");
        }
    }
    if a.inconsistent {
        words.push("inconsistent");
    }
    words
}

/// `osd.1, osd.4`, or `nobody`.
pub fn osd_list(osds: &[u32]) -> String {
    if osds.is_empty() {
        return "nobody".to_owned();
    }
    osds.iter().map(|o| format!("osd.{o}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use placement::Epoch;

    const HEALTHY: Active = Active {
        writable: true,
        remapped: false,
        undersized: false,
        missing: false,
        filling_acting: false,
        backfill: Filling::No,
        scrub: None,
        inconsistent: false,
        snaptrim: false,
    };

    #[test]
    fn active_pgs_get_cephs_words_in_cephs_order() {
        assert_eq!(active_words(&HEALTHY), ["active", "clean"]);
        let recovering = Active { missing: true, undersized: true, ..HEALTHY };
        assert_eq!(active_words(&recovering), ["active", "degraded", "undersized", "recovering"]);
        let moving = Active { remapped: true, backfill: Filling::Running, ..HEALTHY };
        assert_eq!(active_words(&moving), ["active", "remapped", "backfilling"]);
        let filling = Active { filling_acting: true, backfill: Filling::Toofull, ..HEALTHY };
        assert_eq!(active_words(&filling), ["active", "degraded", "backfill_toofull"]);
        let waiting = Active { backfill: Filling::Waiting, missing: true, ..HEALTHY };
        assert_eq!(active_words(&waiting), ["active", "degraded", "recovering", "backfill_wait"]);
        let scrubbing = Active { scrub: Some(true), inconsistent: true, ..HEALTHY };
        assert_eq!(
            active_words(&scrubbing),
            ["active", "clean", "scrubbing", "deep", "inconsistent"]
        );
        let reads_only = Active { writable: false, undersized: true, ..HEALTHY };
        assert_eq!(active_words(&reads_only), ["peered", "degraded", "undersized"]);
    }

    fn plan(complete: usize, backfill: Vec<u32>) -> Plan {
        Plan {
            auth: 1,
            log_recovery: Vec::new(),
            backfill,
            complete,
            active: false,
            want_acting: None,
            strays: Vec::new(),
        }
    }

    #[test]
    fn an_inactive_plan_says_what_holds_it() {
        let acting = [1, 2, 3];
        assert_eq!(
            Blocked::inactive(&plan(0, vec![1, 2, 3]), 1, 2, &acting, None).state,
            "incomplete"
        );
        let ec = Blocked::inactive(&plan(1, vec![2, 3]), 1, 2, &acting, Some(2));
        assert_eq!(ec.state, "down");
        assert!(ec.why.starts_with("1 complete shards, fewer than k=2: "), "{}", ec.why);
        let rebuilt = Blocked::inactive(&plan(2, vec![1]), 1, 2, &acting, None);
        assert_eq!(rebuilt.state, "peered");
        assert!(rebuilt.why.contains("the primary's own copy"), "{}", rebuilt.why);
        let short = Blocked::inactive(&plan(1, vec![3]), 1, 2, &acting, None);
        assert_eq!(short.state, "undersized+peered");
        assert_eq!(
            short.why,
            "1 complete copies of min_size 2 (acting [1, 2, 3], backfill needed on [3])"
        );
    }

    #[test]
    fn a_down_pg_names_the_interval_and_whom_it_waits_for() {
        let interval = PastInterval {
            first: Epoch(4),
            last: Epoch(9),
            acting: vec![2, 5],
            primary: Some(2),
            maybe_went_rw: true,
        };
        let down = Blocked::down(&interval, vec![2, 5], None);
        assert_eq!(down.state, "down");
        assert_eq!(down.waiting_for, [2, 5]);
        assert!(
            down.why.contains("one of them must answer; waiting for osd.2, osd.5"),
            "{}",
            down.why
        );
        let ec = Blocked::down(&interval, vec![], Some(4));
        assert!(
            ec.why.contains("4 of them with a shard must answer; waiting for nobody"),
            "{}",
            ec.why
        );
        assert_eq!(Blocked::incomplete().state, "incomplete");
    }
}
