//! Rollback stashes: what an erasure-coded shard needs to undo a write that turns out
//! torn. A stripe is readable only once k shards have the write; a primary that fails
//! after fewer shards applied it leaves those shards at a version nothing can decode,
//! and peering rewinds it (`log::merge_authoritative`). A replica can be rewound by
//! pulling the prior version from any other copy, but the prior version of a shard
//! exists nowhere else: the shard that applied the torn write must put its own old bytes
//! back. So before a shard applies a write it keeps, in the same transaction, the bytes,
//! xattrs and omap the write changes (Ceph's rollback info for erasure-coded pools); the
//! primary tells the shards with each write which entries every shard has (`Replicate`'s
//! `committed_before`), and their stashes are dropped.
//!
//! The stash holds only what the entry changes: the byte ranges it writes, zeroes or
//! cuts off (within the old size), the xattrs (small, kept whole), and the omap whole if
//! the entry touches it. A write that creates an object stashes nothing but "it did not
//! exist".

use std::collections::BTreeMap;

use objectstore::engine::Entries;
use objectstore::{CollectionId, ObjectId, ObjectStore, StoreError, TxOp};
use placement::Version;
use proto::osd::RepOp;
use serde::{Deserialize, Serialize};

/// What one log entry's write changed on this shard, to undo it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The object before the write; `None`: it did not exist.
    pub prior: Option<Prior>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prior {
    pub version: Version,
    pub mtime_ms: i64,
    pub size: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The bytes the write overwrote, zeroed or cut off, at their offsets.
    pub extents: Vec<(u64, Vec<u8>)>,
    /// The whole omap, if the write changed it.
    pub omap: Option<Entries>,
}

/// The byte ranges of an object of `old_size` that `ops` change, merged and in order.
pub fn changed(ops: &[RepOp], old_size: u64) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = ops
        .iter()
        .filter_map(|op| match *op {
            RepOp::Write { offset, len } | RepOp::Zero { offset, len } => {
                Some((offset, offset.saturating_add(len)))
            }
            RepOp::WriteFull { .. } | RepOp::Remove => Some((0, u64::MAX)),
            RepOp::Truncate { size } => Some((size, u64::MAX)),
            _ => None,
        })
        .map(|(start, end)| (start.min(old_size), end.min(old_size)))
        .filter(|(start, end)| start < end)
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Whether `ops` change the omap.
fn touches_omap(ops: &[RepOp]) -> bool {
    ops.iter().any(|op| {
        matches!(
            op,
            RepOp::OmapSet { .. }
                | RepOp::OmapRemove { .. }
                | RepOp::OmapRemoveRange { .. }
                | RepOp::OmapClear
                | RepOp::Remove
        )
    })
}

/// What applying `ops` to `oid` would change, read from the store before they apply.
pub fn stash(
    store: &dyn ObjectStore,
    c: CollectionId,
    oid: &ObjectId,
    ops: &[RepOp],
) -> Result<Rollback, StoreError> {
    let Some(meta) = store.stat(c, oid)? else {
        return Ok(Rollback { prior: None });
    };
    let mut extents = Vec::new();
    for (start, end) in changed(ops, meta.size) {
        extents.push((start, store.read(c, oid, start, end - start)?));
    }
    let omap = if touches_omap(ops) { Some(store.omap_all(c, oid)?) } else { None };
    Ok(Rollback {
        prior: Some(Prior {
            version: meta.version,
            mtime_ms: meta.mtime_ms,
            size: meta.size,
            xattrs: meta.xattrs,
            extents,
            omap,
        }),
    })
}

/// The ops that put `oid` back as `rollback` found it, given the xattr names it has now
/// (`None`: it does not exist now).
pub fn restore(
    c: CollectionId,
    oid: &ObjectId,
    rollback: &Rollback,
    xattrs_now: Option<&BTreeMap<String, Vec<u8>>>,
) -> Vec<TxOp> {
    let Some(prior) = &rollback.prior else {
        return vec![TxOp::Remove { c, oid: oid.clone() }];
    };
    let oid = || oid.clone();
    let mut ops = vec![
        TxOp::Create { c, oid: oid(), exclusive: false },
        TxOp::Truncate { c, oid: oid(), size: prior.size },
    ];
    for (offset, bytes) in &prior.extents {
        ops.push(TxOp::Write { c, oid: oid(), offset: *offset, data: bytes.clone().into() });
    }
    for name in xattrs_now.into_iter().flat_map(|x| x.keys()) {
        if !prior.xattrs.contains_key(name) {
            ops.push(TxOp::RemoveXattr { c, oid: oid(), name: name.clone() });
        }
    }
    for (name, value) in &prior.xattrs {
        ops.push(TxOp::SetXattr { c, oid: oid(), name: name.clone(), value: value.clone() });
    }
    if let Some(omap) = &prior.omap {
        ops.push(TxOp::OmapClear { c, oid: oid() });
        if !omap.is_empty() {
            ops.push(TxOp::OmapSet { c, oid: oid(), entries: omap.clone() });
        }
    }
    ops.push(TxOp::SetVersion { c, oid: oid(), version: prior.version, mtime_ms: prior.mtime_ms });
    ops
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use objectstore::{KvObjectStore, MemoryEngine, Transaction};
    use placement::{PgId, PoolId};
    use proptest::prelude::*;
    use proto::osd::ObjectName;

    use super::*;
    use crate::pg::actor::read_state;
    use crate::pg::ops::{object_id, transaction};

    #[test]
    fn changed_ranges_are_clipped_to_the_old_size_and_merged() {
        let ops = [
            RepOp::Write { offset: 10, len: 5 },
            RepOp::Zero { offset: 12, len: 10 },
            RepOp::Write { offset: 200, len: 5 },
            RepOp::SetXattr { name: "a".into(), value: vec![] },
        ];
        assert_eq!(changed(&ops, 100), [(10, 22)]);
        assert_eq!(changed(&[RepOp::Truncate { size: 40 }], 100), [(40, 100)]);
        assert_eq!(changed(&[RepOp::Truncate { size: 400 }], 100), []);
        assert_eq!(changed(&[RepOp::WriteFull { len: 1 }], 100), [(0, 100)]);
        assert_eq!(changed(&[RepOp::Write { offset: u64::MAX - 1, len: 9 }], 100), []);
    }

    fn op_strategy() -> impl Strategy<Value = (RepOp, Vec<u8>)> {
        let bytes = |len: u64, seed: u8| (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
        prop_oneof![
            (0u64..300, 1u64..200, any::<u8>())
                .prop_map(move |(o, l, s)| (RepOp::Write { offset: o, len: l }, bytes(l, s))),
            (0u64..300, any::<u8>())
                .prop_map(move |(l, s)| (RepOp::WriteFull { len: l }, bytes(l, s))),
            (0u64..400).prop_map(|size| (RepOp::Truncate { size }, vec![])),
            (0u64..300, 1u64..200).prop_map(|(o, l)| (RepOp::Zero { offset: o, len: l }, vec![])),
            Just((RepOp::Remove, vec![])),
            Just((RepOp::Create, vec![])),
            (0u8..3, any::<u8>()).prop_map(|(n, v)| (
                RepOp::SetXattr { name: format!("x{n}"), value: vec![v] },
                vec![]
            )),
            (0u8..3).prop_map(|n| (RepOp::RemoveXattr { name: format!("x{n}") }, vec![])),
            (0u8..4, any::<u8>())
                .prop_map(|(k, v)| (RepOp::OmapSet { entries: vec![(vec![k], vec![v])] }, vec![])),
            (0u8..4).prop_map(|k| (RepOp::OmapRemove { keys: vec![vec![k]] }, vec![])),
            Just((RepOp::OmapClear, vec![])),
        ]
    }

    fn apply(
        store: &KvObjectStore<MemoryEngine>,
        c: CollectionId,
        oid: &ObjectId,
        ops: &[(RepOp, Vec<u8>)],
        version: Version,
    ) -> Result<(), proto::error::RemoteError> {
        let rep_ops: Vec<RepOp> = ops.iter().map(|(op, _)| op.clone()).collect();
        let data: Vec<u8> = ops.iter().flat_map(|(_, d)| d.clone()).collect();
        let mut txn = Transaction::new();
        transaction(c, oid, &rep_ops, &Bytes::from(data), version, &mut txn)?;
        store.apply(&txn).map_err(crate::pg::ops::store_error)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any sequence of writes, each stashed before it applies, is undone by restoring
        /// the stashes newest first, in one transaction as peering does: every state
        /// along the way comes back exactly.
        #[test]
        fn restoring_stashes_newest_first_undoes_every_write(
            writes in proptest::collection::vec(proptest::collection::vec(op_strategy(), 1..5), 1..5),
        ) {
            let store = KvObjectStore::new(MemoryEngine::new());
            let c = CollectionId::replicated(PgId { pool: PoolId(1), seed: 0 });
            let name = ObjectName { namespace: String::new(), name: b"obj".to_vec() };
            let oid = object_id(&name);
            store.apply(&Transaction { ops: vec![TxOp::CreateCollection(c)] }).unwrap();
            let mut states = Vec::new();
            let mut stashes = Vec::new();
            for (i, ops) in writes.iter().enumerate() {
                let before = read_state(&store, c, &name).unwrap();
                let rep_ops: Vec<RepOp> = ops.iter().map(|(op, _)| op.clone()).collect();
                let rollback = stash(&store, c, &oid, &rep_ops).unwrap();
                if apply(&store, c, &oid, ops, Version::new(1, i as u64 + 1)).is_ok() {
                    states.push(before);
                    stashes.push(rollback);
                }
            }
            // Undo them all in one transaction, newest first.
            let mut txn = Transaction::new();
            let mut xattrs_now = store.stat(c, &oid).unwrap().map(|m| m.xattrs);
            for rollback in stashes.iter().rev() {
                txn.ops.extend(restore(c, &oid, rollback, xattrs_now.as_ref()));
                xattrs_now = rollback.prior.as_ref().map(|p| p.xattrs.clone());
            }
            store.apply(&txn).unwrap();
            if let Some(first) = states.first() {
                prop_assert_eq!(&read_state(&store, c, &name).unwrap(), first);
            }
            // And one at a time, checking each state.
            let mut version = 10;
            for ops in &writes {
                let rep_ops: Vec<RepOp> = ops.iter().map(|(op, _)| op.clone()).collect();
                let before = read_state(&store, c, &name).unwrap();
                let rollback = stash(&store, c, &oid, &rep_ops).unwrap();
                version += 1;
                if apply(&store, c, &oid, ops, Version::new(1, version)).is_err() {
                    continue;
                }
                let now = store.stat(c, &oid).unwrap().map(|m| m.xattrs);
                store.apply(&Transaction { ops: restore(c, &oid, &rollback, now.as_ref()) }).unwrap();
                prop_assert_eq!(&read_state(&store, c, &name).unwrap(), &before);
                apply(&store, c, &oid, ops, Version::new(1, version)).unwrap();
            }
        }
    }
}
