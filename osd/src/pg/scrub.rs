//! Scrub's decision (pure): given what each OSD of the acting set holds of a range of
//! objects, which copies are bad and which copy repair takes as the authority.
//!
//! After peering the primary's copy says which version of an object should exist (its log
//! is the authoritative history), unless it cannot be read, and then the newest readable
//! copy does. Among the readable copies of that version, the largest group that agrees on
//! size, metadata and (deep scrub) data is the authority; a tie goes to the group with the
//! primary, then to the lowest OSD. Every other copy is bad: unreadable, missing, another
//! version, different bytes, or present where the object should not exist.

use std::collections::{BTreeMap, BTreeSet};

use placement::Version;
use proto::osd::{ObjectName, ScrubObject};

/// A bad copy and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadCopy {
    pub osd: u32,
    pub why: String,
}

/// An object with at least one bad copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inconsistency {
    pub object: ObjectName,
    /// The version that should exist everywhere (`Version::ZERO`: none should).
    pub version: Version,
    /// An OSD whose copy is good (`None`: none is, the object cannot be repaired).
    pub auth: Option<u32>,
    pub bad: Vec<BadCopy>,
}

/// What a copy is compared by: everything but where it lives.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Content {
    size: u64,
    meta_digest: u32,
    data_digest: Option<u32>,
}

fn content(copy: &ScrubObject) -> Content {
    Content { size: copy.size, meta_digest: copy.meta_digest, data_digest: copy.data_digest }
}

/// Compares the copies of every object in `maps` (each OSD's copies of one range, every
/// OSD of the acting set present, empty if it holds none). Objects all agree on are left
/// out.
pub fn compare(primary: u32, maps: &BTreeMap<u32, Vec<ScrubObject>>) -> Vec<Inconsistency> {
    let mut objects: BTreeMap<&ObjectName, BTreeMap<u32, &ScrubObject>> = BTreeMap::new();
    for (&osd, copies) in maps {
        for copy in copies {
            objects.entry(&copy.object).or_default().insert(osd, copy);
        }
    }
    let osds: BTreeSet<u32> = maps.keys().copied().collect();
    objects
        .into_iter()
        .filter_map(|(object, copies)| judge(primary, &osds, object, &copies))
        .collect()
}

fn judge(
    primary: u32,
    osds: &BTreeSet<u32>,
    object: &ObjectName,
    copies: &BTreeMap<u32, &ScrubObject>,
) -> Option<Inconsistency> {
    let readable = |c: &&&ScrubObject| c.error.is_none();
    let expected = match copies.get(&primary) {
        Some(mine) if mine.error.is_none() => Some(mine.version),
        Some(_) => copies.values().filter(readable).map(|c| c.version).max(),
        // The primary is complete after peering: an object it lacks should not exist.
        None if osds.contains(&primary) => None,
        None => copies.values().filter(readable).map(|c| c.version).max(),
    };
    let mut bad = Vec::new();
    let Some(version) = expected else {
        if copies.values().all(|c| c.error.is_some()) && copies.contains_key(&primary) {
            // Every copy unreadable: nothing to take as the authority.
            for (&osd, copy) in copies {
                bad.push(BadCopy { osd, why: unreadable(copy) });
            }
            return Some(Inconsistency {
                object: object.clone(),
                version: Version::ZERO,
                auth: None,
                bad,
            });
        }
        for &osd in copies.keys() {
            bad.push(BadCopy { osd, why: "a copy of an object the primary does not have".into() });
        }
        return Some(Inconsistency {
            object: object.clone(),
            version: Version::ZERO,
            auth: Some(primary),
            bad,
        });
    };
    // The groups of readable copies of the expected version, by what they hold.
    let mut groups: BTreeMap<Content, Vec<u32>> = BTreeMap::new();
    for (&osd, copy) in copies {
        if copy.error.is_none() && copy.version == version {
            groups.entry(content(copy)).or_default().push(osd);
        }
    }
    let auth_group = groups
        .iter()
        .max_by_key(|(_, members)| {
            (members.len(), members.contains(&primary), std::cmp::Reverse(members[0]))
        })
        .map(|(content, members)| (*content, members.clone()));
    let Some((auth_content, members)) = auth_group else {
        for (&osd, copy) in copies {
            bad.push(BadCopy { osd, why: unreadable(copy) });
        }
        return Some(Inconsistency { object: object.clone(), version, auth: None, bad });
    };
    for &osd in osds {
        let why = match copies.get(&osd) {
            None => "missing".to_owned(),
            Some(copy) if copy.error.is_some() => unreadable(copy),
            Some(copy) if copy.version != version => {
                format!("version {} where {version} should be", copy.version)
            }
            Some(copy) => {
                let found = content(copy);
                if found == auth_content {
                    continue;
                }
                differs(&found, &auth_content)
            }
        };
        bad.push(BadCopy { osd, why });
    }
    if bad.is_empty() {
        return None;
    }
    let auth = if members.contains(&primary) { primary } else { members[0] };
    Some(Inconsistency { object: object.clone(), version, auth: Some(auth), bad })
}

fn unreadable(copy: &ScrubObject) -> String {
    format!("unreadable: {}", copy.error.as_deref().unwrap_or("no error"))
}

fn differs(found: &Content, auth: &Content) -> String {
    if found.size != auth.size {
        format!("size {} where {} should be", found.size, auth.size)
    } else if found.meta_digest != auth.meta_digest {
        "xattrs or omap differ from the authoritative copy".into()
    } else {
        "data differs from the authoritative copy".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(name: &str, version: u64, size: u64, data: u32) -> ScrubObject {
        ScrubObject {
            object: ObjectName::new(name),
            version: Version::new(1, version),
            size,
            meta_digest: 7,
            data_digest: Some(data),
            error: None,
        }
    }

    fn maps(entries: Vec<(u32, Vec<ScrubObject>)>) -> BTreeMap<u32, Vec<ScrubObject>> {
        entries.into_iter().collect()
    }

    fn bad(found: &Inconsistency) -> Vec<(u32, &str)> {
        found.bad.iter().map(|b| (b.osd, b.why.as_str())).collect()
    }

    #[test]
    fn agreeing_copies_are_consistent() {
        let a = vec![copy("a", 3, 10, 1), copy("b", 4, 20, 2)];
        assert!(compare(0, &maps(vec![(0, a.clone()), (1, a.clone()), (2, a)])).is_empty());
    }

    #[test]
    fn a_replica_that_differs_is_bad_and_the_primary_is_the_authority() {
        let found = compare(
            0,
            &maps(vec![
                (0, vec![copy("a", 3, 10, 1)]),
                (1, vec![copy("a", 3, 10, 9)]),
                (2, vec![copy("a", 3, 10, 1)]),
            ]),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].auth, Some(0));
        assert_eq!(found[0].version, Version::new(1, 3));
        assert_eq!(bad(&found[0]), [(1, "data differs from the authoritative copy")]);
    }

    #[test]
    fn the_majority_outvotes_a_readable_but_different_primary() {
        let found = compare(
            0,
            &maps(vec![
                (0, vec![copy("a", 3, 10, 5)]),
                (1, vec![copy("a", 3, 10, 1)]),
                (2, vec![copy("a", 3, 10, 1)]),
            ]),
        );
        assert_eq!(found[0].auth, Some(1));
        assert_eq!(bad(&found[0]), [(0, "data differs from the authoritative copy")]);
    }

    #[test]
    fn an_unreadable_primary_copy_defers_to_the_newest_readable_one() {
        let mut broken = copy("a", 3, 10, 1);
        broken.error = Some("chunk 0 failed its checksum".into());
        let found = compare(
            0,
            &maps(vec![
                (0, vec![broken]),
                (1, vec![copy("a", 3, 10, 1)]),
                (2, vec![copy("a", 3, 10, 1)]),
            ]),
        );
        assert_eq!(found[0].auth, Some(1));
        assert_eq!(bad(&found[0]), [(0, "unreadable: chunk 0 failed its checksum")]);
    }

    #[test]
    fn missing_extra_and_stale_copies_are_bad() {
        let found = compare(
            0,
            &maps(vec![
                (0, vec![copy("a", 3, 10, 1), copy("b", 5, 4, 2)]),
                (1, vec![copy("b", 4, 4, 2), copy("c", 1, 1, 1)]),
                (2, vec![copy("a", 3, 11, 1), copy("b", 5, 4, 2)]),
            ]),
        );
        let names: Vec<&[u8]> = found.iter().map(|f| f.object.name.as_slice()).collect();
        assert_eq!(names, [b"a".as_slice(), b"b", b"c"]);
        assert_eq!(bad(&found[0]), [(1, "missing"), (2, "size 11 where 10 should be")]);
        assert_eq!(bad(&found[1]), [(1, "version 1.4 where 1.5 should be")]);
        assert_eq!(found[2].version, Version::ZERO);
        assert_eq!(found[2].auth, Some(0));
        assert_eq!(bad(&found[2]), [(1, "a copy of an object the primary does not have")]);
    }

    #[test]
    fn no_readable_copy_leaves_no_authority() {
        let mut broken = copy("a", 3, 10, 1);
        broken.error = Some("corrupt".into());
        let found =
            compare(0, &maps(vec![(0, vec![broken.clone()]), (1, vec![broken]), (2, vec![])]));
        assert_eq!(found[0].auth, None);
        assert_eq!(bad(&found[0]), [(0, "unreadable: corrupt"), (1, "unreadable: corrupt")]);
    }
}
