//! Transactions: ordered changes to objects, collections and records that the store applies
//! all together or not at all. Later ops see the effects of earlier ones.

use bytes::Bytes;

use crate::types::{CollectionId, ObjectId, Version};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxOp {
    CreateCollection(CollectionId),
    /// Removes a collection and everything in it.
    RemoveCollection(CollectionId),
    /// Creates the object if absent; with `exclusive`, fails if it exists.
    Create {
        c: CollectionId,
        oid: ObjectId,
        exclusive: bool,
    },
    /// Writes `data` at `offset`, creating the object and extending it as needed.
    Write {
        c: CollectionId,
        oid: ObjectId,
        offset: u64,
        data: Bytes,
    },
    /// Replaces the whole object's data with `data` (xattrs and omap stay).
    WriteFull {
        c: CollectionId,
        oid: ObjectId,
        data: Bytes,
    },
    /// Zeroes a range inside the object (no-op past its end; the size does not change).
    Zero {
        c: CollectionId,
        oid: ObjectId,
        offset: u64,
        len: u64,
    },
    /// Sets the size: shrinking drops data, growing reads back as zeros.
    Truncate {
        c: CollectionId,
        oid: ObjectId,
        size: u64,
    },
    /// Removes the object with its xattrs and omap; nothing if it does not exist.
    Remove {
        c: CollectionId,
        oid: ObjectId,
    },
    /// Makes `to` a copy of `from` (data, xattrs, omap, version), replacing what `to` was.
    /// Whole chunks in the block file are shared, not copied: cloning an object to keep it
    /// as a snapshot costs its metadata and its partial chunks. `from` must exist and be
    /// another object, and its omap must not have been changed earlier in the transaction
    /// (the copy is of its omap as committed).
    Clone {
        c: CollectionId,
        from: ObjectId,
        to: ObjectId,
    },
    SetXattr {
        c: CollectionId,
        oid: ObjectId,
        name: String,
        value: Vec<u8>,
    },
    RemoveXattr {
        c: CollectionId,
        oid: ObjectId,
        name: String,
    },
    OmapSet {
        c: CollectionId,
        oid: ObjectId,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    },
    OmapRemove {
        c: CollectionId,
        oid: ObjectId,
        keys: Vec<Vec<u8>>,
    },
    /// Removes omap keys with `start <= key < end`.
    OmapRemoveRange {
        c: CollectionId,
        oid: ObjectId,
        start: Vec<u8>,
        end: Vec<u8>,
    },
    OmapClear {
        c: CollectionId,
        oid: ObjectId,
    },
    /// Stamps the object (which must exist) with the PG log version of this change.
    SetVersion {
        c: CollectionId,
        oid: ObjectId,
        version: Version,
        mtime_ms: i64,
    },
    /// A record in the collection's own key space (PG info, log entries).
    CollectionPut {
        c: CollectionId,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    CollectionDelete {
        c: CollectionId,
        key: Vec<u8>,
    },
    CollectionDeleteRange {
        c: CollectionId,
        start: Vec<u8>,
        end: Vec<u8>,
    },
    /// A record of the OSD's own (superblock, maps).
    OsdPut {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    OsdDelete {
        key: Vec<u8>,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    pub ops: Vec<TxOp>,
}

impl Transaction {
    pub fn new() -> Transaction {
        Transaction::default()
    }

    pub fn push(&mut self, op: TxOp) -> &mut Transaction {
        self.ops.push(op);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of object data the transaction writes.
    pub fn data_bytes(&self) -> u64 {
        self.ops
            .iter()
            .map(|op| match op {
                TxOp::Write { data, .. } | TxOp::WriteFull { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }
}
