//! Backfill's decisions, pure: how far the primary's walk over its objects got, what it
//! does next, and which targets each object is pushed to. The actor (`actor/backfill.rs`)
//! lists the primary's objects, scans the targets, pushes, and feeds what it saw back in.
//!
//! The walk goes through the primary's objects in store order, a batch at a time: the
//! targets' copies of the batch are scanned first, then each object is compared and pushed
//! where a target's version differs (or removed where the primary has none). `last`
//! divides the key space: writes to objects up to it replicate to the targets in full,
//! writes beyond it only append to their logs (the walk will copy the object), and an
//! object being pushed takes no writes until it is there. The primary's version is read
//! when the walk reaches the object, so a write between the scan and the walk is not
//! missed.

use std::collections::{BTreeMap, HashMap};

use placement::Version;
use proto::osd::ObjectName;

use crate::pg::ops::object_id;

/// Objects of the primary one backfill scan compares with the targets.
pub const BATCH: usize = 256;
/// Backfill pushes one PG has in flight: client writes to those objects wait for them.
pub const PUSHES_PER_PG: usize = 2;

/// An object's place in store order, which the walk follows.
pub fn order(object: &ObjectName) -> Vec<u8> {
    objectstore::keys::object_order(&object_id(object))
}

/// How far the primary's backfill of its targets got.
#[derive(Debug, Default)]
pub struct Backfill {
    /// Objects up to this one (store order) are on every target, or being pushed there.
    pub last: Option<(Vec<u8>, ObjectName)>,
    /// Every object is covered.
    pub end: bool,
    /// A scan of the targets is in flight.
    pub scanning: bool,
    /// The scanned batch, where the walk has not reached yet: each object (by store
    /// order) with its version on the targets that have it.
    pub queue: BTreeMap<Vec<u8>, (ObjectName, BTreeMap<u32, Version>)>,
    /// Where the batch being walked ends (`None`: at the PG's end); `None` outside one.
    pub batch: Option<Option<(Vec<u8>, ObjectName)>>,
    /// Objects being pushed now, to these targets (writes to them wait).
    pub pushing: HashMap<ObjectName, Vec<u32>>,
    /// The targets are being told they are done.
    pub finishing: bool,
    /// Objects of the primary covered so far.
    pub covered: u64,
    /// A target at backfillfull or above holds backfill up: it, and whether a retry is
    /// already due.
    pub toofull: Option<(u32, bool)>,
    /// Objects the walk passed whose push waited for space, with their targets: writes
    /// to them reach the targets' logs only, as beyond `last`, until they are pushed.
    pub deferred: BTreeMap<Vec<u8>, (ObjectName, Vec<u32>)>,
}

/// What the next step of backfill depends on besides its own progress.
pub struct Gate<'a> {
    /// The PG is active.
    pub active: bool,
    /// The copies being backfilled.
    pub targets: &'a [u32],
    /// The primary's own copy is being recovered: it is what backfill copies.
    pub waits_for_recovery: bool,
    /// A target known to be at backfillfull or above.
    pub backfillfull: Option<u32>,
}

/// The next step of backfill.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing now: inactive, nothing to fill, a scan or the finish in flight, the
    /// primary's own recovery first, or the last pushes of a batch still running.
    Idle,
    /// `osd` is too full: wait. `first`: it was not holding backfill up before;
    /// `retry`: no retry is due yet, so schedule one.
    Toofull { osd: u32, first: bool, retry: bool },
    /// Push these objects, whose push waited for space, to their targets.
    PushDeferred(Vec<(ObjectName, Vec<u32>)>),
    /// Walk on through the batch.
    Walk,
    /// Scan the targets' copies of the next batch, after `last`.
    Scan,
    /// Every object is on every target: tell them.
    Finish,
}

/// One step of the walk through a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Walked {
    /// The batch is done (the mark is at its end), or none is being walked.
    BatchDone,
    /// The next object has an erasure-coded op under way: its shards are rebuilt once it
    /// is done, never from a version it is about to replace.
    Wait,
    /// The mark moved past `object`; push it (or its absence) to `targets`, if any.
    Passed { object: ObjectName, targets: Vec<u32> },
}

impl Backfill {
    /// Whether writes to `object` replicate to the targets in full.
    pub fn covers(&self, object: &ObjectName) -> bool {
        let order = order(object);
        (self.end || self.last.as_ref().is_some_and(|(last, _)| order <= *last))
            && !self.deferred.contains_key(&order)
    }

    /// Decides the next step. Records the backfillfull target it waits for (or that none
    /// holds it up), and takes the deferred objects it hands out for pushing.
    pub fn next(&mut self, gate: &Gate) -> Next {
        if !gate.active
            || gate.targets.is_empty()
            || self.scanning
            || self.finishing
            || gate.waits_for_recovery
        {
            return Next::Idle;
        }
        if let Some(osd) = gate.backfillfull {
            let first = self.toofull.is_none();
            let retry_due = self.toofull.is_some_and(|(_, due)| due);
            self.toofull = Some((osd, true));
            return Next::Toofull { osd, first, retry: !retry_due };
        }
        self.toofull = None;
        // Objects whose push waited for space go first.
        if !self.deferred.is_empty() {
            let free = PUSHES_PER_PG.saturating_sub(self.pushing.len());
            let mut out = Vec::new();
            while out.len() < free {
                let Some((_, object)) = self.deferred.pop_first() else { break };
                out.push(object);
            }
            return Next::PushDeferred(out);
        }
        if self.batch.is_some() {
            Next::Walk
        } else if !self.pushing.is_empty() {
            Next::Idle
        } else if self.end {
            Next::Finish
        } else {
            Next::Scan
        }
    }

    /// The targets' copies of the batch that ends at `until` (`None`: at the PG's end):
    /// the walk through it starts.
    pub fn scanned(
        &mut self,
        until: Option<ObjectName>,
        theirs: BTreeMap<u32, Vec<(ObjectName, Version)>>,
    ) {
        self.scanning = false;
        for (osd, objects) in theirs {
            for (name, version) in objects {
                let entry =
                    self.queue.entry(order(&name)).or_insert_with(|| (name, BTreeMap::new()));
                entry.1.insert(osd, version);
            }
        }
        self.batch = Some(until.map(|name| (order(&name), name)));
    }

    /// One step of the walk. `ours` is the primary's first object past the mark, read
    /// now (so one created during the walk is not passed over: its writes only reached
    /// the targets' logs), with its version; the next object is it or the first a target
    /// had at the scan, whichever comes first. `busy`: an erasure-coded op on the object
    /// is under way. Compares the primary's version with each target's and moves the mark
    /// past the object; at the batch's end the mark moves to the batch's end.
    pub fn step(
        &mut self,
        ours: Option<(ObjectName, Version)>,
        targets: &[u32],
        busy: impl Fn(&ObjectName) -> bool,
    ) -> Walked {
        let Some(until) = self.batch.clone() else { return Walked::BatchDone };
        let ours = ours
            .map(|(name, version)| (order(&name), name, version))
            .filter(|(key, _, _)| until.as_ref().is_none_or(|(u, _)| key <= u));
        let theirs_first = self.queue.keys().next().cloned();
        let (key, object, ours) = match (ours, theirs_first) {
            (Some((key, name, version)), theirs) if theirs.as_ref().is_none_or(|t| key <= *t) => {
                (key, name, Some(version))
            }
            // Only a target has it: the primary does not.
            (_, Some(key)) => {
                let name = self.queue[&key].0.clone();
                (key, name, None)
            }
            _ => {
                self.batch = None;
                self.end = until.is_none();
                self.last = until;
                return Walked::BatchDone;
            }
        };
        if busy(&object) {
            return Walked::Wait;
        }
        let theirs = self.queue.remove(&key).map(|(_, v)| v).unwrap_or_default();
        let targets = targets.iter().copied().filter(|t| theirs.get(t) != ours.as_ref()).collect();
        self.covered += u64::from(ours.is_some());
        self.last = Some((key, object.clone()));
        Walked::Passed { object, targets }
    }

    /// A push started.
    pub fn pushing(&mut self, object: ObjectName, targets: Vec<u32>) {
        self.pushing.insert(object, targets);
    }

    /// A push did not start for lack of space on a target: the object waits, and writes
    /// to it meanwhile reach the targets' logs only (they do not have it).
    pub fn defer(&mut self, object: &ObjectName) {
        let targets = self.pushing.remove(object).unwrap_or_default();
        self.deferred.insert(order(object), (object.clone(), targets));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ObjectName {
        ObjectName::new(n)
    }

    fn v(n: u64) -> Version {
        Version { epoch: 1, seq: n }
    }

    fn gate(targets: &[u32]) -> Gate<'_> {
        Gate { active: true, targets, waits_for_recovery: false, backfillfull: None }
    }

    /// The objects in store order, as the primary's store lists them.
    fn sorted(names: &[&str]) -> Vec<ObjectName> {
        let mut all: Vec<ObjectName> = names.iter().map(|n| name(n)).collect();
        all.sort_by_key(order);
        all
    }

    #[test]
    fn nothing_happens_while_inactive_busy_or_waiting_for_recovery() {
        let mut bf = Backfill::default();
        assert_eq!(bf.next(&Gate { active: false, ..gate(&[2]) }), Next::Idle);
        assert_eq!(bf.next(&gate(&[])), Next::Idle);
        assert_eq!(bf.next(&Gate { waits_for_recovery: true, ..gate(&[2]) }), Next::Idle);
        bf.scanning = true;
        assert_eq!(bf.next(&gate(&[2])), Next::Idle);
        bf.scanning = false;
        bf.finishing = true;
        assert_eq!(bf.next(&gate(&[2])), Next::Idle);
        bf.finishing = false;
        assert_eq!(bf.next(&gate(&[2])), Next::Scan, "a fresh backfill scans first");
    }

    #[test]
    fn a_backfillfull_target_holds_it_up_with_one_retry_at_a_time() {
        let mut bf = Backfill::default();
        let full = Gate { backfillfull: Some(3), ..gate(&[2, 3]) };
        assert_eq!(bf.next(&full), Next::Toofull { osd: 3, first: true, retry: true });
        // A kick before the retry fired: no second retry.
        assert_eq!(bf.next(&full), Next::Toofull { osd: 3, first: false, retry: false });
        // The retry fired (the actor marks it not due), still full: one more retry.
        bf.toofull = Some((3, false));
        assert_eq!(bf.next(&full), Next::Toofull { osd: 3, first: false, retry: true });
        // Space again: the hold ends and the walk goes on.
        assert_eq!(bf.next(&gate(&[2, 3])), Next::Scan);
        assert_eq!(bf.toofull, None);
    }

    #[test]
    fn deferred_pushes_go_first_up_to_the_free_slots() {
        let mut bf = Backfill::default();
        let [a, b, c] = [name("a"), name("b"), name("c")];
        for o in [&a, &b, &c] {
            bf.pushing(o.clone(), vec![2]);
            bf.defer(o);
        }
        assert!(!bf.covers(&a), "a deferred object takes log-only writes");
        bf.pushing(name("x"), vec![2]);
        let Next::PushDeferred(first) = bf.next(&gate(&[2])) else { panic!("deferred first") };
        assert_eq!(first.len(), PUSHES_PER_PG - 1, "one slot is taken by x");
        for (object, targets) in &first {
            assert_eq!(targets, &vec![2]);
            bf.pushing(object.clone(), targets.clone());
        }
        assert_eq!(bf.next(&gate(&[2])), Next::PushDeferred(vec![]), "no slot free");
        bf.pushing.clear();
        let Next::PushDeferred(rest) = bf.next(&gate(&[2])) else { panic!("the rest") };
        assert_eq!(rest.len(), 3 - first.len());
        assert_eq!(bf.next(&gate(&[2])), Next::Scan);
    }

    #[test]
    fn the_walk_pushes_what_differs_and_removes_what_only_targets_have() {
        let objects = sorted(&["a", "b", "c", "d"]);
        let [o1, o2, o3, o4] = [&objects[0], &objects[1], &objects[2], &objects[3]];
        let mut bf = Backfill::default();
        assert_eq!(bf.next(&gate(&[2, 3])), Next::Scan);
        bf.scanning = true;
        // osd.2 has o1 current and o3, which the primary no longer has; osd.3 has o2 old.
        let theirs = BTreeMap::from([
            (2, vec![(o1.clone(), v(1)), (o3.clone(), v(3))]),
            (3, vec![(o2.clone(), v(1))]),
        ]);
        bf.scanned(None, theirs);
        assert!(!bf.scanning);
        assert_eq!(bf.next(&gate(&[2, 3])), Next::Walk);
        let ours = |o: &ObjectName, n| Some((o.clone(), v(n)));
        let idle = |_: &ObjectName| false;
        assert_eq!(
            bf.step(ours(o1, 1), &[2, 3], idle),
            Walked::Passed { object: o1.clone(), targets: vec![3] },
            "osd.2 has it at this version"
        );
        assert!(bf.covers(o1) && !bf.covers(o2));
        assert_eq!(
            bf.step(ours(o2, 2), &[2, 3], idle),
            Walked::Passed { object: o2.clone(), targets: vec![2, 3] },
        );
        // The primary's next object is o4: o3 comes first, and only osd.2 had it.
        assert_eq!(
            bf.step(ours(o4, 1), &[2, 3], idle),
            Walked::Passed { object: o3.clone(), targets: vec![2] },
            "its absence is pushed to the one that has it"
        );
        assert_eq!(bf.step(ours(o4, 1), &[2, 3], |o| o == o4), Walked::Wait);
        assert_eq!(
            bf.step(ours(o4, 1), &[2, 3], idle),
            Walked::Passed { object: o4.clone(), targets: vec![2, 3] },
        );
        assert_eq!(bf.covered, 3, "o1, o2, o4: the primary's objects");
        assert_eq!(bf.step(None, &[2, 3], idle), Walked::BatchDone);
        assert!(bf.end && bf.batch.is_none());
        assert_eq!(bf.next(&gate(&[2, 3])), Next::Finish);
        assert!(bf.covers(&name("anything")), "after the end every write replicates in full");
    }

    #[test]
    fn a_batch_ends_at_its_bound_and_the_next_one_is_scanned_after_it() {
        let objects = sorted(&["a", "b", "c"]);
        let mut bf = Backfill::default();
        bf.scanned(Some(objects[1].clone()), BTreeMap::new());
        let idle = |_: &ObjectName| false;
        let step = bf.step(Some((objects[0].clone(), v(1))), &[2], idle);
        assert_eq!(step, Walked::Passed { object: objects[0].clone(), targets: vec![2] });
        bf.pushing(objects[0].clone(), vec![2]);
        bf.step(Some((objects[1].clone(), v(1))), &[2], idle);
        // The primary's next object is past the batch: the batch is done, not the walk.
        assert_eq!(bf.step(Some((objects[2].clone(), v(1))), &[2], idle), Walked::BatchDone);
        assert!(!bf.end);
        assert_eq!(bf.last.as_ref().map(|(_, n)| n), Some(&objects[1]));
        assert!(bf.covers(&objects[1]) && !bf.covers(&objects[2]));
        assert_eq!(bf.next(&gate(&[2])), Next::Idle, "the batch's pushes run");
        bf.pushing.clear();
        assert_eq!(bf.next(&gate(&[2])), Next::Scan);
    }
}
