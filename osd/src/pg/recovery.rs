//! Recovery's decisions, pure: which missing objects to start next, where a replicated
//! object is copied from and to, which shards an erasure-coded one is decoded from and
//! written to, and when the PG may go clean. The actor (`actor/recovery.rs`) describes
//! its copies as `Copies`, asks, and carries out the `Step` or `Rebuild` it is given (the
//! decoding of k shards is `ec_io`'s).

use std::collections::{BTreeMap, HashSet};

use placement::Version;
use proto::osd::ObjectName;

/// Objects one kick of recovery starts at most; the OSD's throttle bounds the transfers.
pub const STARTS_PER_KICK: usize = 8;

/// What a primary knows of its PG's copies.
pub struct Copies<'a> {
    pub me: u32,
    /// Acting OSDs with complete copies (they take writes), in acting order.
    pub writers: &'a [u32],
    /// The OSD whose history peering chose as authoritative.
    pub auth: Option<u32>,
    /// Per OSD, the objects its copy lacks and the version each must reach.
    pub missing: &'a BTreeMap<u32, BTreeMap<ObjectName, Version>>,
}

impl Copies<'_> {
    fn lacks(&self, osd: u32, object: &ObjectName) -> bool {
        self.missing.get(&osd).is_some_and(|m| m.contains_key(object))
    }

    /// Objects missing on any copy.
    pub fn degraded(&self) -> u64 {
        self.missing.values().map(|m| m.len() as u64).sum()
    }
}

/// The objects to start recovering now: missing on some copy and not already being
/// recovered, in name order, at most `STARTS_PER_KICK`.
pub fn to_start(copies: &Copies, recovering: &HashSet<ObjectName>) -> Vec<ObjectName> {
    let mut all: Vec<&ObjectName> = copies.missing.values().flat_map(|m| m.keys()).collect();
    all.sort();
    all.dedup();
    all.into_iter().filter(|o| !recovering.contains(*o)).take(STARTS_PER_KICK).cloned().collect()
}

/// How one object of a replicated PG is recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The primary lacks it: pull it from `from` (at `want` or newer), then push it to
    /// the other copies that lack it.
    Pull { from: u32, want: Version, push: Vec<u32> },
    /// The primary has it: push it to the copies that lack it.
    Push { push: Vec<u32> },
    /// The primary lacks it and no other copy can be asked: it is unfound.
    Unfound,
}

/// The step for `object`. A source is a complete acting copy that does not lack it, or
/// else the authority (whose log named the version), never the primary itself.
pub fn replicated(copies: &Copies, object: &ObjectName) -> Step {
    let me = copies.me;
    let push: Vec<u32> = copies
        .missing
        .iter()
        .filter(|(osd, m)| **osd != me && m.contains_key(object))
        .map(|(osd, _)| *osd)
        .collect();
    let Some(want) = copies.missing.get(&me).and_then(|m| m.get(object)).copied() else {
        return Step::Push { push };
    };
    let source = copies
        .writers
        .iter()
        .copied()
        .find(|&o| !copies.lacks(o, object))
        .or(copies.auth)
        .filter(|&o| o != me);
    match source {
        Some(from) => Step::Pull { from, want, push },
        None => Step::Unfound,
    }
}

/// The shard positions reads and rebuilds of `object` may use, by position: acting OSDs
/// (`acting`, by position) that are complete and not missing it.
pub fn readable_shards(copies: &Copies, acting: &[Option<u32>], object: &ObjectName) -> Vec<bool> {
    acting
        .iter()
        .map(|osd| osd.is_some_and(|o| copies.writers.contains(&o) && !copies.lacks(o, object)))
        .collect()
}

/// The positions `readable_shards` marks: where reads and rebuilds of `object` come from.
pub fn readable_positions(
    copies: &Copies,
    acting: &[Option<u32>],
    object: &ObjectName,
) -> Vec<usize> {
    let readable = readable_shards(copies, acting, object);
    (0..readable.len()).filter(|&shard| readable[shard]).collect()
}

/// How an erasure-coded object is rebuilt: the version wanted (the log's), the shard
/// positions to decode from, in order, and the (OSD, position) pairs to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebuild {
    pub want: Option<Version>,
    pub sources: Vec<usize>,
    pub targets: Vec<(u32, usize)>,
}

/// The rebuild of `object` onto every copy that lacks it. `shard_of` gives the position
/// an OSD holds in this interval (acting, else up: a backfill target).
pub fn erasure(
    copies: &Copies,
    acting: &[Option<u32>],
    shard_of: impl Fn(u32) -> Option<usize>,
    object: &ObjectName,
) -> Rebuild {
    Rebuild {
        want: copies.missing.values().find_map(|m| m.get(object)).copied(),
        sources: readable_positions(copies, acting, object),
        targets: copies
            .missing
            .iter()
            .filter(|(_, m)| m.contains_key(object))
            .filter_map(|(&osd, _)| Some((osd, shard_of(osd)?)))
            .collect(),
    }
}

/// What says whether a PG may go clean besides its missing objects.
pub struct Shape {
    pub active: bool,
    /// Complete acting copies, and how many the pool wants.
    pub writers: usize,
    pub size: usize,
    /// Copies still being backfilled.
    pub backfilling: bool,
    /// The acting set is not the up set (an override while the up set backfills).
    pub remapped: bool,
}

/// A PG is clean when it is active with every copy complete, as many as the pool wants,
/// on the OSDs the map puts it on.
pub fn may_go_clean(copies: &Copies, shape: &Shape) -> bool {
    shape.active
        && copies.degraded() == 0
        && shape.writers >= shape.size
        && !shape.backfilling
        && !shape.remapped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ObjectName {
        ObjectName::new(n)
    }

    /// `missing` as (osd, [(object, version)]).
    fn missing(of: &[(u32, &[(&str, u64)])]) -> BTreeMap<u32, BTreeMap<ObjectName, Version>> {
        of.iter()
            .map(|(osd, objects)| {
                let objects =
                    objects.iter().map(|(o, v)| (name(o), Version { epoch: 1, seq: *v })).collect();
                (*osd, objects)
            })
            .collect()
    }

    #[test]
    fn an_object_the_primary_has_is_pushed_to_every_copy_that_lacks_it() {
        let lacking = missing(&[(0, &[]), (1, &[("a", 5)]), (2, &[("a", 5), ("b", 3)])]);
        let copies = Copies { me: 0, writers: &[0, 1, 2], auth: Some(0), missing: &lacking };
        assert_eq!(replicated(&copies, &name("a")), Step::Push { push: vec![1, 2] });
        assert_eq!(replicated(&copies, &name("b")), Step::Push { push: vec![2] });
    }

    #[test]
    fn an_object_the_primary_lacks_is_pulled_from_the_first_complete_copy_that_has_it() {
        let lacking = missing(&[(0, &[("a", 7)]), (1, &[("a", 7)]), (2, &[])]);
        let copies = Copies { me: 0, writers: &[0, 1, 2], auth: Some(1), missing: &lacking };
        let step = replicated(&copies, &name("a"));
        assert_eq!(step, Step::Pull { from: 2, want: Version { epoch: 1, seq: 7 }, push: vec![1] });
    }

    #[test]
    fn with_every_writer_lacking_it_the_authority_is_asked_and_without_one_it_is_unfound() {
        // osd.3 is the authority but not a writer (it is being backfilled away from).
        let lacking = missing(&[(0, &[("a", 4)]), (1, &[("a", 4)])]);
        let copies = Copies { me: 0, writers: &[0, 1], auth: Some(3), missing: &lacking };
        let step = replicated(&copies, &name("a"));
        assert_eq!(step, Step::Pull { from: 3, want: Version { epoch: 1, seq: 4 }, push: vec![1] });
        // The primary is the authority itself, and lacks the object: nobody to ask.
        let copies = Copies { me: 0, writers: &[0, 1], auth: Some(0), missing: &lacking };
        assert_eq!(replicated(&copies, &name("a")), Step::Unfound);
        let copies = Copies { me: 0, writers: &[0, 1], auth: None, missing: &lacking };
        assert_eq!(replicated(&copies, &name("a")), Step::Unfound);
    }

    #[test]
    fn a_kick_starts_at_most_eight_objects_in_name_order_skipping_those_under_way() {
        let objects: Vec<String> = (0..12).map(|i| format!("o{i:02}")).collect();
        let on_1: Vec<(&str, u64)> = objects[..6].iter().map(|o| (o.as_str(), 1)).collect();
        let on_2: Vec<(&str, u64)> = objects[4..].iter().map(|o| (o.as_str(), 1)).collect();
        let lacking = missing(&[(1, &on_1), (2, &on_2)]);
        let copies = Copies { me: 0, writers: &[0, 1, 2], auth: Some(0), missing: &lacking };
        let under_way: HashSet<ObjectName> = [name("o00"), name("o05")].into();
        let started = to_start(&copies, &under_way);
        let expected: Vec<ObjectName> =
            ["o01", "o02", "o03", "o04", "o06", "o07", "o08", "o09"].map(name).into();
        assert_eq!(started, expected);
        assert_eq!(to_start(&copies, &HashSet::new()).len(), STARTS_PER_KICK);
    }

    #[test]
    fn a_pg_goes_clean_only_active_complete_full_sized_and_where_the_map_puts_it() {
        let none = missing(&[(0, &[]), (1, &[]), (2, &[])]);
        let some = missing(&[(0, &[]), (1, &[("a", 1)])]);
        let clean = Copies { me: 0, writers: &[0, 1, 2], auth: Some(0), missing: &none };
        let degraded = Copies { me: 0, writers: &[0, 1, 2], auth: Some(0), missing: &some };
        let shape =
            || Shape { active: true, writers: 3, size: 3, backfilling: false, remapped: false };
        assert!(may_go_clean(&clean, &shape()));
        assert!(!may_go_clean(&degraded, &shape()));
        assert!(!may_go_clean(&clean, &Shape { active: false, ..shape() }));
        assert!(!may_go_clean(&clean, &Shape { writers: 2, ..shape() }));
        assert!(!may_go_clean(&clean, &Shape { backfilling: true, ..shape() }));
        assert!(!may_go_clean(&clean, &Shape { remapped: true, ..shape() }));
    }

    #[test]
    fn an_erasure_coded_object_is_rebuilt_from_the_complete_shards_that_have_it() {
        // 2+1, acting [0, 1, 2]; osd.1 lacks "a", osd.2 is being backfilled (not a
        // writer), osd.5 (up at position 2, not acting) lacks it too.
        let lacking = missing(&[(1, &[("a", 4)]), (5, &[("a", 4)])]);
        let copies = Copies { me: 0, writers: &[0, 1], auth: Some(0), missing: &lacking };
        let acting = [Some(0), Some(1), Some(2)];
        let shard_of = |osd: u32| match osd {
            0..=2 => Some(osd as usize),
            5 => Some(2),
            _ => None,
        };
        assert_eq!(readable_shards(&copies, &acting, &name("a")), [true, false, false]);
        assert_eq!(
            erasure(&copies, &acting, shard_of, &name("a")),
            Rebuild {
                want: Some(Version { epoch: 1, seq: 4 }),
                sources: vec![0],
                targets: vec![(1, 1), (5, 2)],
            }
        );
        // An object nobody lacks: every complete shard reads, nothing to write.
        let b = erasure(&copies, &[Some(0), None, Some(1)], shard_of, &name("b"));
        assert_eq!(b, Rebuild { want: None, sources: vec![0, 2], targets: vec![] });
    }
}
