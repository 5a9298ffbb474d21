//! An object's snapshots, decided without I/O: its snap set (kept in the head's reserved
//! xattr `SNAPSET_XATTR`), which clone a read at a snapshot finds, whether a write must
//! keep a clone first, and what each clone still shares with the next newer one.
//!
//! As in Ceph, a clone is made on the first write after a snapshot: the write's snapshot
//! context has a `seq` newer than the snap set's, and the snapshots it lists above the old
//! `seq` are the ones the clone serves. Its id is the newest of them. A head removed while
//! clones remain stays as a whiteout (`WHITEOUT_XATTR`): it holds the snap set, and reads
//! of the head find nothing.

use proto::error::{ErrorCode, RemoteError};
use proto::osd::{CloneInfo, SnapContext, SnapList};
use serde::{Deserialize, Serialize};

/// The head's snap set.
pub const SNAPSET_XATTR: &str = "\0snapset";
/// Present on a head that was removed while it has clones.
pub const WHITEOUT_XATTR: &str = "\0whiteout";
/// Clones one object keeps at most: a write that would make one more is refused until
/// snapshots are removed and trimmed.
pub const CLONES_MAX: usize = 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapSet {
    pub seq: u64,
    /// Oldest first.
    pub clones: Vec<CloneInfo>,
}

/// Where a read at a snapshot goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    Head,
    Clone(u64),
    /// The object did not exist at that snapshot.
    Missing,
}

impl SnapSet {
    /// The snap set in a head's xattrs (none: empty).
    pub fn load(
        xattrs: Option<&std::collections::BTreeMap<String, Vec<u8>>>,
        object: &dyn std::fmt::Display,
    ) -> Result<SnapSet, RemoteError> {
        match xattrs.and_then(|x| x.get(SNAPSET_XATTR)) {
            None => Ok(SnapSet::default()),
            Some(bytes) => postcard::from_bytes(bytes).map_err(|e| {
                RemoteError::new(
                    ErrorCode::Corrupt,
                    format!("the snap set of {object} does not decode: {e}"),
                )
            }),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a snap set encodes")
    }

    pub fn is_empty(&self) -> bool {
        self == &SnapSet::default()
    }

    /// What serves a read at `snap`, for a head that exists (`head`) or not.
    pub fn resolve(&self, snap: u64, head: bool) -> Resolved {
        match self.clones.iter().find(|c| c.id >= snap) {
            Some(clone) if clone.snaps.contains(&snap) => Resolved::Clone(clone.id),
            Some(_) => Resolved::Missing,
            // Every snapshot up to `seq` that saw the head was kept by a clone.
            None if head && snap > self.seq => Resolved::Head,
            None => Resolved::Missing,
        }
    }

    /// Before a write with `context` to a head of `head_size` bytes (`None`: it does not
    /// exist): the clone to keep first, if the write is the first after a snapshot that
    /// saw the head. Moves `seq` on.
    pub fn before_write(
        &mut self,
        context: &SnapContext,
        head_size: Option<u64>,
    ) -> Result<Option<u64>, RemoteError> {
        if context.seq <= self.seq {
            return Ok(None);
        }
        let snaps: Vec<u64> = context.snaps.iter().copied().filter(|&s| s > self.seq).collect();
        self.seq = context.seq;
        let (Some(size), Some(&id)) = (head_size, snaps.first()) else { return Ok(None) };
        if self.clones.len() >= CLONES_MAX {
            return Err(RemoteError::new(
                ErrorCode::TooLarge,
                format!("the object has {CLONES_MAX} clones; remove snapshots first"),
            ));
        }
        let overlap = if size > 0 { vec![(0, size)] } else { Vec::new() };
        self.clones.push(CloneInfo { id, snaps, size, overlap });
        Ok(Some(id))
    }

    /// The head's bytes in `[offset, offset + len)` changed (`len` may reach past the
    /// end): the newest clone no longer shares them.
    pub fn head_changed(&mut self, offset: u64, len: u64) {
        let Some(newest) = self.clones.last_mut() else { return };
        let end = offset.saturating_add(len);
        let mut kept = Vec::with_capacity(newest.overlap.len() + 1);
        for &(start, n) in &newest.overlap {
            let stop = start + n;
            if stop <= offset || start >= end {
                kept.push((start, n));
                continue;
            }
            if start < offset {
                kept.push((start, offset - start));
            }
            if stop > end {
                kept.push((end, stop - end));
            }
        }
        newest.overlap = kept;
    }

    /// Forgets the snapshots `removed` says are gone: each clone stops serving them, and
    /// the clones left serving none are dropped, their ids returned (oldest first) for the
    /// store to remove. The clone before a dropped one then shares with its successor only
    /// what it shared with both. A clone serving a snapshot that still exists is kept.
    pub fn trim(&mut self, removed: impl Fn(u64) -> bool) -> Vec<u64> {
        let mut dropped = Vec::new();
        let mut kept: Vec<CloneInfo> = Vec::with_capacity(self.clones.len());
        // The overlap a dropped clone had with its successor, for the clone before it.
        let mut carried: Option<Vec<(u64, u64)>> = None;
        for mut clone in std::mem::take(&mut self.clones).into_iter().rev() {
            if let Some(overlap) = carried.take() {
                clone.overlap = intersect(&clone.overlap, &overlap);
            }
            clone.snaps.retain(|&s| !removed(s));
            if clone.snaps.is_empty() {
                carried = Some(clone.overlap.clone());
                dropped.push(clone.id);
            } else {
                kept.push(clone);
            }
        }
        kept.reverse();
        dropped.reverse();
        self.clones = kept;
        dropped
    }

    /// What `ListSnaps` answers.
    pub fn list(&self, head: bool) -> SnapList {
        SnapList { seq: self.seq, clones: self.clones.clone(), head_exists: head }
    }
}

/// The ranges both sorted, disjoint range lists cover.
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (a_end, b_end) = (a[i].0 + a[i].1, b[j].0 + b[j].1);
        let (start, end) = (a[i].0.max(b[j].0), a_end.min(b_end));
        if start < end {
            out.push((start, end - start));
        }
        if a_end <= b_end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(seq: u64, snaps: &[u64]) -> SnapContext {
        SnapContext { seq, snaps: snaps.to_vec() }
    }

    #[test]
    fn the_first_write_after_a_snapshot_keeps_a_clone_once() {
        let mut set = SnapSet::default();
        // Written before any snapshot: no clone.
        assert_eq!(set.before_write(&context(0, &[]), Some(10)).unwrap(), None);
        // Snapshots 3 and 5 taken; the next write keeps one clone serving both.
        assert_eq!(set.before_write(&context(5, &[5, 3]), Some(10)).unwrap(), Some(5));
        assert_eq!(set.before_write(&context(5, &[5, 3]), Some(10)).unwrap(), None);
        assert_eq!(set.seq, 5);
        assert_eq!(set.clones[0].snaps, vec![5, 3]);
        // A snapshot whose id was removed before any write saw it makes no clone.
        assert_eq!(set.before_write(&context(7, &[5, 3]), Some(10)).unwrap(), None);
        assert_eq!(set.seq, 7);
        assert_eq!(set.before_write(&context(9, &[9, 5, 3]), Some(4)).unwrap(), Some(9));
        assert_eq!(set.clones.iter().map(|c| c.id).collect::<Vec<_>>(), vec![5, 9]);
        // An object created after a snapshot has no clone for it.
        let mut new = SnapSet::default();
        assert_eq!(new.before_write(&context(5, &[5]), None).unwrap(), None);
        assert_eq!(new.resolve(5, true), Resolved::Missing);
        assert_eq!(new.resolve(6, true), Resolved::Head);
    }

    #[test]
    fn reads_at_a_snapshot_find_the_clone_that_serves_it() {
        let mut set = SnapSet::default();
        set.before_write(&context(0, &[]), Some(10)).unwrap();
        set.before_write(&context(5, &[5, 3]), Some(10)).unwrap();
        set.before_write(&context(9, &[9, 5, 3]), Some(10)).unwrap();
        assert_eq!(set.resolve(1, true), Resolved::Missing, "there was no snapshot 1");
        assert_eq!(set.resolve(3, true), Resolved::Clone(5));
        assert_eq!(set.resolve(5, true), Resolved::Clone(5));
        assert_eq!(set.resolve(9, true), Resolved::Clone(9));
        assert_eq!(set.resolve(7, true), Resolved::Missing, "no snapshot 7 saw the object");
        assert_eq!(set.resolve(10, true), Resolved::Head);
        assert_eq!(set.resolve(10, false), Resolved::Missing, "the head was removed");
    }

    #[test]
    fn trimming_drops_the_clones_no_living_snapshot_needs_and_merges_their_overlap() {
        let clone = |id, snaps: &[u64], overlap: &[(u64, u64)]| CloneInfo {
            id,
            snaps: snaps.to_vec(),
            size: 100,
            overlap: overlap.to_vec(),
        };
        let mut set = SnapSet {
            seq: 9,
            clones: vec![
                clone(3, &[3, 2], &[(0, 50)]),
                clone(5, &[5], &[(20, 80)]),
                clone(9, &[9, 7], &[(0, 30), (60, 40)]),
            ],
        };
        let removed = |s: u64| [2, 5, 7].contains(&s);
        assert_eq!(set.trim(removed), vec![5], "clone 3 still serves 3, clone 9 serves 9");
        assert_eq!(
            set.clones,
            vec![clone(3, &[3], &[(20, 30)]), clone(9, &[9], &[(0, 30), (60, 40)])],
            "clone 3 shares with 9 what it shared with 5 and 5 with 9"
        );
        assert_eq!(set.resolve(5, true), Resolved::Missing);
        assert_eq!(set.resolve(3, true), Resolved::Clone(3));
        assert_eq!(set.trim(removed), Vec::<u64>::new(), "trimming again changes nothing");
        // Every snapshot removed: every clone goes, the newest's overlap with the head too.
        assert_eq!(set.trim(|_| true), vec![3, 9]);
        assert!(set.clones.is_empty());
        assert_eq!(set.seq, 9, "seq stays: a write with an older context makes no clone");
    }

    #[test]
    fn the_newest_clone_shares_what_the_head_did_not_change() {
        let mut set = SnapSet::default();
        set.before_write(&context(2, &[2]), Some(100)).unwrap();
        set.head_changed(10, 5);
        set.head_changed(50, 1000);
        set.head_changed(0, 2);
        assert_eq!(set.clones[0].overlap, vec![(2, 8), (15, 35)]);
        set.before_write(&context(3, &[3, 2]), Some(60)).unwrap();
        set.head_changed(0, u64::MAX);
        assert_eq!(set.clones[0].overlap, vec![(2, 8), (15, 35)], "older clones keep theirs");
        assert!(set.clones[1].overlap.is_empty());
        let decoded = SnapSet::load(
            Some(&[(SNAPSET_XATTR.to_owned(), set.encode())].into_iter().collect()),
            &"obj",
        )
        .unwrap();
        assert_eq!(decoded, set);
        let bad = [(SNAPSET_XATTR.to_owned(), vec![0xff; 3])].into_iter().collect();
        assert_eq!(SnapSet::load(Some(&bad), &"obj").unwrap_err().code, ErrorCode::Corrupt);
    }
}
