//! A pool's snapshots as the map keeps them: the last snapshot id handed out, the pool
//! snapshots by name, and the ids removed since (an interval set, as Ceph's
//! `removed_snaps`). A pool uses either pool snapshots (`cairn pool mksnap`, taken by the
//! monitors for the whole pool) or self-managed ones (ids clients ask for and put in the
//! snapshot contexts of their writes, as block images do), never both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::MapError;

/// Pool snapshots one pool holds at most.
pub const POOL_SNAPS_MAX: usize = 1024;
/// Snapshot ids stop below this (ids at and above it are reserved: an object's head is
/// `u64::MAX` in the store).
pub const SNAP_ID_LIMIT: u64 = u64::MAX - 1;
/// Runs of removed ids a pool keeps at most: removing snapshots in an order that would
/// fragment the set further is refused.
pub const REMOVED_RUNS_MAX: usize = 1 << 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapMode {
    /// No snapshot was ever taken.
    #[default]
    Unused,
    Pool,
    SelfManaged,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSnap {
    pub name: String,
    /// When the monitors logged its creation (wall ms).
    pub created_ms: i64,
}

/// Snapshot ids as disjoint, non-adjacent runs: start → end (exclusive).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapIntervals(BTreeMap<u64, u64>);

impl SnapIntervals {
    pub fn contains(&self, id: u64) -> bool {
        self.0.range(..=id).next_back().is_some_and(|(_, &end)| id < end)
    }

    /// Adds `id`, merging it with the runs it touches; `false` if it was in already.
    pub fn insert(&mut self, id: u64) -> bool {
        if self.contains(id) {
            return false;
        }
        let (mut start, mut end) = (id, id + 1);
        if let Some((&before, &before_end)) = self.0.range(..id).next_back()
            && before_end == id
        {
            self.0.remove(&before);
            start = before;
        }
        if let Some(after_end) = self.0.remove(&end) {
            end = after_end;
        }
        self.0.insert(start, end);
        true
    }

    /// The runs, lowest first, as `(start, end)` with `end` exclusive.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().map(|(&s, &e)| (s, e))
    }

    pub fn run_count(&self) -> usize {
        self.0.len()
    }

    /// Runs after adding `id` (without adding it).
    fn runs_with(&self, id: u64) -> usize {
        let joins_before = id > 0 && self.contains(id - 1);
        let joins_after = self.contains(id + 1);
        match (joins_before, joins_after) {
            (true, true) => self.0.len() - 1,
            (false, false) => self.0.len() + 1,
            _ => self.0.len(),
        }
    }
}

/// A pool's snapshot state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSnaps {
    /// The last id handed out (0: none yet). Ids are never reused.
    pub seq: u64,
    pub mode: SnapMode,
    /// Pool snapshots by id.
    pub named: BTreeMap<u64, PoolSnap>,
    /// Ids handed out and removed since; every other id in `1..=seq` exists.
    pub removed: SnapIntervals,
}

impl PoolSnaps {
    /// Whether snapshot `id` was handed out and not removed.
    pub fn exists(&self, id: u64) -> bool {
        (1..=self.seq).contains(&id) && !self.removed.contains(id)
    }

    pub fn by_name(&self, name: &str) -> Option<u64> {
        self.named.iter().find(|(_, s)| s.name == name).map(|(&id, _)| id)
    }

    /// The snapshot context of writes to a pool with pool snapshots: the last id and the
    /// snapshots that exist, newest first.
    pub fn pool_context(&self) -> (u64, Vec<u64>) {
        (self.seq, self.named.keys().rev().copied().collect())
    }

    fn next_id(&self, pool: &str) -> Result<u64, MapError> {
        self.seq
            .checked_add(1)
            .filter(|&id| id < SNAP_ID_LIMIT)
            .ok_or(MapError::Limit { what: "snapshot ids", limit: SNAP_ID_LIMIT })
            .map_err(|e| MapError::BadPool { pool: pool.to_owned(), reason: e.to_string() })
    }

    fn set_mode(&mut self, pool: &str, mode: SnapMode) -> Result<(), MapError> {
        match (self.mode, mode) {
            (SnapMode::Unused, _) => self.mode = mode,
            (have, want) if have == want => {}
            (SnapMode::Pool, _) => return Err(mode_error(pool, "pool snapshots")),
            (_, _) => return Err(mode_error(pool, "self-managed snapshots")),
        }
        Ok(())
    }

    fn remove_id(&mut self, pool: &str, id: u64) -> Result<(), MapError> {
        if self.removed.runs_with(id) > REMOVED_RUNS_MAX {
            return Err(MapError::BadPool {
                pool: pool.to_owned(),
                reason: format!(
                    "removing snapshot {id} would keep more than {REMOVED_RUNS_MAX} runs of \
                     removed ids"
                ),
            });
        }
        self.removed.insert(id);
        Ok(())
    }

    /// Takes pool snapshot `name` as the next id.
    pub fn create_named(&mut self, pool: &str, name: &str, at_ms: i64) -> Result<u64, MapError> {
        crate::crush::map::check_name("snapshot", name)?;
        if self.by_name(name).is_some() {
            return Err(MapError::AlreadyExists { what: "snapshot", name: name.to_owned() });
        }
        if self.named.len() >= POOL_SNAPS_MAX {
            return Err(MapError::Limit { what: "pool snapshots", limit: POOL_SNAPS_MAX as u64 });
        }
        let id = self.next_id(pool)?;
        self.set_mode(pool, SnapMode::Pool)?;
        self.seq = id;
        self.named.insert(id, PoolSnap { name: name.to_owned(), created_ms: at_ms });
        Ok(id)
    }

    pub fn remove_named(&mut self, pool: &str, name: &str) -> Result<u64, MapError> {
        let id = self.by_name(name).ok_or_else(|| MapError::BadPool {
            pool: pool.to_owned(),
            reason: format!("no snapshot '{name}'"),
        })?;
        self.remove_id(pool, id)?;
        self.named.remove(&id);
        Ok(id)
    }

    /// Hands out the next id for a client's own snapshot.
    pub fn create_self_managed(&mut self, pool: &str) -> Result<u64, MapError> {
        let id = self.next_id(pool)?;
        self.set_mode(pool, SnapMode::SelfManaged)?;
        self.seq = id;
        Ok(id)
    }

    pub fn remove_self_managed(&mut self, pool: &str, id: u64) -> Result<(), MapError> {
        self.set_mode(pool, SnapMode::SelfManaged)?;
        if !self.exists(id) {
            return Err(MapError::BadPool {
                pool: pool.to_owned(),
                reason: format!("snapshot {id} does not exist"),
            });
        }
        self.remove_id(pool, id)
    }
}

fn mode_error(pool: &str, uses: &str) -> MapError {
    MapError::BadPool { pool: pool.to_owned(), reason: format!("the pool uses {uses}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_ids_merge_into_runs() {
        let mut set = SnapIntervals::default();
        for id in [5, 7, 6, 1, 2, 9] {
            assert!(set.insert(id));
        }
        assert!(!set.insert(6), "in already");
        assert_eq!(set.runs().collect::<Vec<_>>(), vec![(1, 3), (5, 8), (9, 10)]);
        assert!(set.contains(7) && set.contains(1) && set.contains(9));
        assert!(!set.contains(3) && !set.contains(8) && !set.contains(0) && !set.contains(10));
        assert_eq!(set.runs_with(8), 2, "8 joins two runs");
        assert_eq!(set.runs_with(20), 4);
        assert_eq!(set.runs_with(3), 3);
    }

    #[test]
    fn a_pool_takes_one_kind_of_snapshot_and_never_reuses_an_id() {
        let mut snaps = PoolSnaps::default();
        assert_eq!(snaps.create_self_managed("rbd").unwrap(), 1);
        assert_eq!(snaps.create_self_managed("rbd").unwrap(), 2);
        let refused = snaps.create_named("rbd", "s", 0).unwrap_err();
        assert!(refused.to_string().contains("self-managed"), "{refused}");
        snaps.remove_self_managed("rbd", 1).unwrap();
        assert!(!snaps.exists(1) && snaps.exists(2) && !snaps.exists(3));
        let again = snaps.remove_self_managed("rbd", 1).unwrap_err();
        assert!(again.to_string().contains("does not exist"), "{again}");
        assert!(snaps.remove_self_managed("rbd", 3).is_err(), "never handed out");
        assert_eq!(snaps.create_self_managed("rbd").unwrap(), 3);

        let mut pool = PoolSnaps::default();
        assert_eq!(pool.create_named("data", "monday", 10).unwrap(), 1);
        assert_eq!(pool.create_named("data", "tuesday", 20).unwrap(), 2);
        assert!(pool.create_named("data", "monday", 30).is_err(), "names are unique");
        assert_eq!(pool.pool_context(), (2, vec![2, 1]));
        assert_eq!(pool.remove_named("data", "monday").unwrap(), 1);
        assert_eq!(pool.pool_context(), (2, vec![2]));
        assert!(pool.removed.contains(1));
        assert!(pool.create_self_managed("data").is_err());
    }
}
