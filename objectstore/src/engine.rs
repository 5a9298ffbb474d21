//! The ordered key-value engine under the object store: point reads, ordered scans, and
//! atomic batches that are visible at once and durable after `sync`.
//!
//! Splitting "write" from "sync" is what lets concurrent writers share an fsync (group
//! commit): each PG applies its batches in order without waiting, and whoever needs
//! durability calls `sync`, which covers every batch written before it.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use crate::error::StoreError;

/// The kinds of record, each in its own key space (a RocksDB column family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Object metadata (size, version, xattrs), keyed by collection + object.
    Meta,
    /// Object data in chunks, keyed by object key + chunk index.
    Data,
    /// Omap entries, keyed by object key + user key.
    Omap,
    /// Per-collection records: PG info, PG log.
    Pg,
    /// The OSD's own records (superblock, maps).
    Osd,
}

impl Cf {
    pub const ALL: [Cf; 5] = [Cf::Meta, Cf::Data, Cf::Omap, Cf::Pg, Cf::Osd];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Data => "data",
            Cf::Omap => "omap",
            Cf::Pg => "pg",
            Cf::Osd => "osd",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    /// Every key with `start <= key < end`.
    DeleteRange {
        cf: Cf,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// Changes applied all together or not at all, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<BatchOp>,
}

impl Batch {
    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put { cf, key, value });
    }

    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete { cf, key });
    }

    pub fn delete_range(&mut self, cf: Cf, start: Vec<u8>, end: Vec<u8>) {
        self.ops.push(BatchOp::DeleteRange { cf, start, end });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of keys and values (for accounting).
    pub fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                BatchOp::Put { key, value, .. } => key.len() + value.len(),
                BatchOp::Delete { key, .. } => key.len(),
                BatchOp::DeleteRange { start, end, .. } => start.len() + end.len(),
            })
            .sum()
    }
}

pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

pub trait Engine: Send + Sync + 'static {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with `start <= key < end` (no end: to the last key), in key order, at most
    /// `limit` of them.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// Applies the batch atomically; readers see it at once. Durable after the next `sync`.
    fn write(&self, batch: Batch) -> Result<(), StoreError>;
    /// Makes every batch written so far durable. Concurrent callers may share one fsync.
    fn sync(&self) -> Result<(), StoreError>;
    /// Bytes the engine holds on disk (or in memory), roughly.
    fn used_bytes(&self) -> u64;
}

/// A shared engine (tests reopen a store over the engine of one before).
impl<E: Engine> Engine for std::sync::Arc<E> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(cf, key)
    }
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        (**self).scan(cf, start, end, limit)
    }
    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        (**self).write(batch)
    }
    fn sync(&self) -> Result<(), StoreError> {
        (**self).sync()
    }
    fn used_bytes(&self) -> u64 {
        (**self).used_bytes()
    }
}

/// An engine in memory, for unit tests. `sync` does nothing.
#[derive(Default)]
pub struct MemoryEngine {
    spaces: RwLock<[BTreeMap<Vec<u8>, Vec<u8>>; 5]>,
}

impl MemoryEngine {
    pub fn new() -> MemoryEngine {
        MemoryEngine::default()
    }
}

impl Engine for MemoryEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let spaces = self.spaces.read().expect("memory engine lock");
        Ok(spaces[cf.index()].get(key).cloned())
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let spaces = self.spaces.read().expect("memory engine lock");
        let upper = match end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        Ok(spaces[cf.index()]
            .range::<[u8], _>((Bound::Included(start), upper))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut spaces = self.spaces.write().expect("memory engine lock");
        for op in batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => {
                    spaces[cf.index()].insert(key, value);
                }
                BatchOp::Delete { cf, key } => {
                    spaces[cf.index()].remove(&key);
                }
                BatchOp::DeleteRange { cf, start, end } => {
                    let space = &mut spaces[cf.index()];
                    let doomed: Vec<Vec<u8>> = space
                        .range::<[u8], _>((Bound::Included(&start[..]), Bound::Excluded(&end[..])))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in doomed {
                        space.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        let spaces = self.spaces.read().expect("memory engine lock");
        spaces.iter().flat_map(|s| s.iter()).map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }
}
