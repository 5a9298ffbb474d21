//! The store against a naive model: random writes, truncates, zeroes and removes, each
//! checked by reading back every object whole and in pieces.

use std::collections::BTreeMap;

use bytes::Bytes;
use objectstore::{
    BlockFile, CHUNK_BYTES, ChunkPlace, CollectionId, KvObjectStore, MemoryEngine,
    OBJECT_BYTES_MAX, ObjectId, ObjectStore, StoreError, Transaction, TxOp,
};
use placement::{PgId, PoolId};
use proptest::prelude::*;

fn coll() -> CollectionId {
    CollectionId::replicated(PgId { pool: PoolId(1), seed: 0 })
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        obj: u8,
        offset: u64,
        len: usize,
        fill: u8,
    },
    WriteFull {
        obj: u8,
        len: usize,
        fill: u8,
    },
    Truncate {
        obj: u8,
        size: u64,
    },
    Zero {
        obj: u8,
        offset: u64,
        len: u64,
    },
    Remove {
        obj: u8,
    },
    /// `to` becomes a copy of `from` (another object).
    Clone {
        from: u8,
        to: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let span = 4 * CHUNK_BYTES;
    prop_oneof![
        (0..3u8, 0..span, 0..(2 * CHUNK_BYTES as usize), any::<u8>())
            .prop_map(|(obj, offset, len, fill)| Op::Write { obj, offset, len, fill }),
        (0..3u8, 0..(2 * CHUNK_BYTES as usize), any::<u8>())
            .prop_map(|(obj, len, fill)| Op::WriteFull { obj, len, fill }),
        (0..3u8, 0..span).prop_map(|(obj, size)| Op::Truncate { obj, size }),
        (0..3u8, 0..span, 0..span).prop_map(|(obj, offset, len)| Op::Zero { obj, offset, len }),
        (0..3u8).prop_map(|obj| Op::Remove { obj }),
        (0..3u8, 1..3u8).prop_map(|(from, step)| Op::Clone { from, to: (from + step) % 3 }),
    ]
}

fn oid(obj: u8) -> ObjectId {
    ObjectId::head(format!("obj{obj}"))
}

/// Applies an op to the model; `false` if the store must refuse it (missing object).
fn model_apply(model: &mut BTreeMap<u8, Vec<u8>>, op: &Op) -> bool {
    match *op {
        Op::Write { obj, offset, len, fill } => {
            let data = model.entry(obj).or_default();
            let end = offset as usize + len;
            if data.len() < end {
                data.resize(end, 0);
            }
            data[offset as usize..end].fill(fill);
        }
        Op::WriteFull { obj, len, fill } => {
            model.insert(obj, vec![fill; len]);
        }
        Op::Truncate { obj, size } => match model.get_mut(&obj) {
            Some(data) => data.resize(size as usize, 0),
            None => return false,
        },
        Op::Zero { obj, offset, len } => match model.get_mut(&obj) {
            Some(data) => {
                let end = ((offset + len) as usize).min(data.len());
                if (offset as usize) < end {
                    data[offset as usize..end].fill(0);
                }
            }
            None => return false,
        },
        Op::Remove { obj } => {
            model.remove(&obj);
        }
        Op::Clone { from, to } => match model.get(&from) {
            Some(data) => {
                let data = data.clone();
                model.insert(to, data);
            }
            None => return false,
        },
    }
    true
}

fn tx_op(op: &Op) -> TxOp {
    let c = coll();
    match *op {
        Op::Write { obj, offset, len, fill } => {
            TxOp::Write { c, oid: oid(obj), offset, data: Bytes::from(vec![fill; len]) }
        }
        Op::WriteFull { obj, len, fill } => {
            TxOp::WriteFull { c, oid: oid(obj), data: Bytes::from(vec![fill; len]) }
        }
        Op::Truncate { obj, size } => TxOp::Truncate { c, oid: oid(obj), size },
        Op::Zero { obj, offset, len } => TxOp::Zero { c, oid: oid(obj), offset, len },
        Op::Remove { obj } => TxOp::Remove { c, oid: oid(obj) },
        Op::Clone { from, to } => TxOp::Clone { c, from: oid(from), to: oid(to) },
    }
}

fn check(store: &impl ObjectStore, model: &BTreeMap<u8, Vec<u8>>) {
    for obj in 0..3u8 {
        let meta = store.stat(coll(), &oid(obj)).unwrap();
        match model.get(&obj) {
            None => {
                assert!(meta.is_none(), "obj{obj} should not exist");
                assert!(store.stat_read(coll(), &oid(obj), 0, 1).unwrap().is_none());
            }
            Some(data) => {
                assert_eq!(meta.unwrap().size, data.len() as u64, "size of obj{obj}");
                let whole = store.read(coll(), &oid(obj), 0, u64::MAX).unwrap();
                assert!(whole == *data, "contents of obj{obj}");
                let mid = data.len() as u64 / 3;
                let part = store.read(coll(), &oid(obj), mid, CHUNK_BYTES + 7).unwrap();
                let end = (mid as usize + CHUNK_BYTES as usize + 7).min(data.len());
                assert!(part[..] == data[mid as usize..end], "a piece of obj{obj}");
                let (meta, piece) =
                    store.stat_read(coll(), &oid(obj), mid, CHUNK_BYTES + 7).unwrap().unwrap();
                assert_eq!(meta.size, data.len() as u64, "stat_read's size of obj{obj}");
                assert!(piece == part, "stat_read's piece of obj{obj}");
                check_extents(store, obj, data);
            }
        }
    }
}

/// The extents an object lists are in order, apart, within it, and every byte outside
/// them is zero; a window lists the whole listing clipped to it.
fn check_extents(store: &impl ObjectStore, obj: u8, data: &[u8]) {
    let extents = store.extents(coll(), &oid(obj), 0, u64::MAX).unwrap();
    let mut end = 0;
    for &(at, len) in &extents {
        assert!(len > 0 && at >= end, "obj{obj}: extents in order and apart: {extents:?}");
        assert!(data[end as usize..at as usize].iter().all(|&b| b == 0), "obj{obj}: a hole");
        end = at + len;
    }
    assert!(end <= data.len() as u64, "obj{obj}: extents within the object");
    assert!(data[end as usize..].iter().all(|&b| b == 0), "obj{obj}: the tail hole");
    let (from, to) = (data.len() as u64 / 3, data.len() as u64 / 3 + CHUNK_BYTES + 7);
    let clipped: Vec<(u64, u64)> = extents
        .iter()
        .map(|&(at, len)| (at.max(from), (at + len).min(to)))
        .filter(|(a, b)| a < b)
        .map(|(a, b)| (a, b - a))
        .collect();
    let window = store.extents(coll(), &oid(obj), from, to - from).unwrap();
    assert_eq!(window, clipped, "obj{obj}: extents of a window");
}

/// Applies `ops` in transactions of `per_txn` and checks the store against the model after
/// each; then removes every object.
fn run_against_model<E: objectstore::Engine>(
    store: &KvObjectStore<E>,
    ops: &[Op],
    per_txn: usize,
) -> Result<(), TestCaseError> {
    let mut model = BTreeMap::new();
    for group in ops.chunks(per_txn) {
        let mut next = model.clone();
        let valid = group.iter().all(|op| model_apply(&mut next, op));
        let txn = Transaction { ops: group.iter().map(tx_op).collect() };
        let result = store.apply(&txn);
        if valid {
            result.unwrap();
            model = next;
        } else {
            prop_assert!(matches!(result, Err(StoreError::NotFound(_))));
        }
        check(store, &model);
    }
    for obj in 0..3u8 {
        store.apply(&Transaction { ops: vec![tx_op(&Op::Remove { obj })] }).unwrap();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..24), per_txn in 1..4usize) {
        let store = KvObjectStore::new(MemoryEngine::new());
        run_against_model(&store, &ops, per_txn)?;
    }

    /// Whole chunks in a block file, the rest in the engine: the same contents, and every
    /// unit is free again once the objects are gone and that is durable.
    #[test]
    fn store_with_a_block_file_matches_model(
        ops in proptest::collection::vec(op(), 1..24),
        per_txn in 1..4usize,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let blocks = BlockFile::open(&dir.path().join("block")).unwrap();
        let store = KvObjectStore::with_blocks(MemoryEngine::new(), blocks).unwrap();
        run_against_model(&store, &ops, per_txn)?;
        store.sync().unwrap();
        let (used, _) = store.blocks().unwrap().units();
        prop_assert_eq!(used, 0, "units still in use after every object was removed");
        prop_assert_eq!(store.blocks().unwrap().shared_references(), 0);
    }
}

#[test]
fn a_failed_transaction_changes_nothing() {
    let store = KvObjectStore::new(MemoryEngine::new());
    let c = coll();
    let mut txn = Transaction::new();
    txn.push(TxOp::Write { c, oid: oid(0), offset: 0, data: Bytes::from_static(b"first") });
    store.apply(&txn).unwrap();
    let mut txn = Transaction::new();
    txn.push(TxOp::Write { c, oid: oid(0), offset: 0, data: Bytes::from_static(b"SECOND") })
        .push(TxOp::SetXattr { c, oid: oid(0), name: "v".into(), value: b"1".to_vec() })
        .push(TxOp::Create { c, oid: oid(0), exclusive: true });
    assert!(matches!(store.apply(&txn), Err(StoreError::AlreadyExists(_))));
    assert_eq!(store.read(c, &oid(0), 0, 100).unwrap(), b"first");
    assert!(store.stat(c, &oid(0)).unwrap().unwrap().xattrs.is_empty());
}

#[test]
fn limits_are_refused_with_clear_errors() {
    let store = KvObjectStore::new(MemoryEngine::new());
    let c = coll();
    let long = ObjectId::head(vec![b'x'; 4096]);
    let txn = Transaction { ops: vec![TxOp::Create { c, oid: long, exclusive: false }] };
    let error = store.apply(&txn).unwrap_err().to_string();
    assert!(error.contains("object name") && error.contains("limit"), "{error}");
    let txn = Transaction {
        ops: vec![TxOp::Write {
            c,
            oid: oid(1),
            offset: OBJECT_BYTES_MAX,
            data: Bytes::from_static(b"x"),
        }],
    };
    let error = store.apply(&txn).unwrap_err().to_string();
    assert!(error.contains("object size limit"), "{error}");
    let txn = Transaction {
        ops: vec![TxOp::Write { c, oid: oid(1), offset: u64::MAX, data: Bytes::from_static(b"x") }],
    };
    assert!(store.apply(&txn).is_err());
    assert!(store.stat(c, &oid(1)).unwrap().is_none());
}

#[test]
fn listing_resumes_after_the_last_id_while_objects_change() {
    let store = KvObjectStore::new(MemoryEngine::new());
    let c = coll();
    let mut txn = Transaction::new();
    for i in 0..10 {
        txn.push(TxOp::Create { c, oid: oid(i), exclusive: true });
    }
    store.apply(&txn).unwrap();
    let first = store.list(c, None, 4).unwrap();
    assert_eq!(first.len(), 4);
    // Remove one already listed and one not yet listed: the rest of the listing has each
    // remaining object exactly once.
    let mut txn = Transaction::new();
    txn.push(TxOp::Remove { c, oid: first[0].0.clone() }).push(TxOp::Remove { c, oid: oid(9) });
    store.apply(&txn).unwrap();
    let mut seen: Vec<ObjectId> = first.iter().map(|(o, _)| o.clone()).collect();
    let mut after = seen.last().cloned();
    loop {
        let page = store.list(c, after.as_ref(), 4).unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|(o, _)| o.clone());
        seen.extend(page.into_iter().map(|(o, _)| o));
    }
    let expected: Vec<ObjectId> = (0..9).map(oid).collect();
    assert_eq!(seen.len(), 9);
    for o in expected {
        assert_eq!(seen.iter().filter(|s| **s == o).count(), 1, "{o}");
    }
}

#[test]
fn omap_set_list_remove_and_clear() {
    let store = KvObjectStore::new(MemoryEngine::new());
    let c = coll();
    let o = oid(0);
    let mut txn = Transaction::new();
    txn.push(TxOp::Create { c, oid: o.clone(), exclusive: true }).push(TxOp::OmapSet {
        c,
        oid: o.clone(),
        entries: (0..5u8).map(|i| (vec![b'k', i], vec![i])).collect(),
    });
    store.apply(&txn).unwrap();
    let page = store.omap_list(c, &o, Some(&[b'k', 1]), 2).unwrap();
    assert_eq!(page, vec![(vec![b'k', 2], vec![2]), (vec![b'k', 3], vec![3])]);
    let txn = Transaction {
        ops: vec![TxOp::OmapRemoveRange {
            c,
            oid: o.clone(),
            start: vec![b'k', 1],
            end: vec![b'k', 3],
        }],
    };
    store.apply(&txn).unwrap();
    let got = store.omap_get(c, &o, &[vec![b'k', 0], vec![b'k', 2], vec![b'k', 4]]).unwrap();
    assert_eq!(got, vec![Some(vec![0]), None, Some(vec![4])]);
    store.apply(&Transaction { ops: vec![TxOp::OmapClear { c, oid: o.clone() }] }).unwrap();
    assert!(store.omap_list(c, &o, None, 100).unwrap().is_empty());
    // Removing an object drops its omap: a new object of that name starts empty.
    let mut txn = Transaction::new();
    txn.push(TxOp::OmapSet { c, oid: o.clone(), entries: vec![(b"a".to_vec(), b"1".to_vec())] })
        .push(TxOp::Remove { c, oid: o.clone() })
        .push(TxOp::Create { c, oid: o.clone(), exclusive: true });
    store.apply(&txn).unwrap();
    assert!(store.omap_list(c, &o, None, 100).unwrap().is_empty());
}

#[test]
fn a_whole_omap_is_read_across_pages() {
    let store = KvObjectStore::new(MemoryEngine::new());
    let (c, o) = (coll(), oid(0));
    let n = objectstore::store::SCAN_ENTRIES_MAX as u32 * 2 + 3;
    let entries: Vec<(Vec<u8>, Vec<u8>)> =
        (0..n).map(|i| (i.to_be_bytes().to_vec(), i.to_le_bytes().to_vec())).collect();
    let mut txn = Transaction::new();
    txn.push(TxOp::Create { c, oid: o.clone(), exclusive: true }).push(TxOp::OmapSet {
        c,
        oid: o.clone(),
        entries: entries.clone(),
    });
    store.apply(&txn).unwrap();
    assert_eq!(store.omap_all(c, &o).unwrap(), entries);
    assert!(matches!(store.omap_all(c, &oid(1)), Err(StoreError::NotFound(_))));
}

#[test]
fn collections_are_registered_and_removed_whole() {
    let store = KvObjectStore::new(MemoryEngine::new());
    let a = coll();
    let b = CollectionId::replicated(PgId { pool: PoolId(1), seed: 1 });
    let mut txn = Transaction::new();
    txn.push(TxOp::CreateCollection(a))
        .push(TxOp::CreateCollection(b))
        .push(TxOp::Write { c: a, oid: oid(0), offset: 0, data: Bytes::from_static(b"a") })
        .push(TxOp::Write { c: b, oid: oid(0), offset: 0, data: Bytes::from_static(b"b") })
        .push(TxOp::CollectionPut { c: a, key: b"info".to_vec(), value: b"x".to_vec() });
    store.apply(&txn).unwrap();
    assert_eq!(store.collections().unwrap(), vec![a, b]);
    store.apply(&Transaction { ops: vec![TxOp::RemoveCollection(a)] }).unwrap();
    assert_eq!(store.collections().unwrap(), vec![b]);
    assert!(store.stat(a, &oid(0)).unwrap().is_none());
    assert!(store.collection_get(a, b"info").unwrap().is_none());
    assert_eq!(store.read(b, &oid(0), 0, 10).unwrap(), b"b");
}

#[test]
fn objects_of_a_collection_removed_earlier_in_the_transaction_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = BlockFile::open(&dir.path().join("block")).unwrap();
    let store = KvObjectStore::with_blocks(MemoryEngine::new(), blocks).unwrap();
    let c = coll();
    let old = Bytes::from(vec![7u8; 3 * CHUNK_BYTES as usize + 10]);
    store.apply(&Transaction { ops: vec![TxOp::WriteFull { c, oid: oid(0), data: old }] }).unwrap();
    assert_eq!(store.blocks().unwrap().units().0, 3);
    // Remove the collection, then write a few bytes into the same object name.
    let mut txn = Transaction::new();
    txn.push(TxOp::RemoveCollection(c)).push(TxOp::CreateCollection(c)).push(TxOp::Write {
        c,
        oid: oid(0),
        offset: 5,
        data: Bytes::from_static(b"new"),
    });
    store.apply(&txn).unwrap();
    assert_eq!(store.read(c, &oid(0), 0, u64::MAX).unwrap(), b"\0\0\0\0\0new");
    store.sync().unwrap();
    assert_eq!(store.blocks().unwrap().units().0, 0, "the old object's units are free");
}

#[test]
fn corrupt_byte_rots_one_stored_byte_where_it_lives_and_refuses_what_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = BlockFile::open(&dir.path().join("block")).unwrap();
    let store = KvObjectStore::with_blocks(MemoryEngine::new(), blocks).unwrap();
    let c = coll();
    // A hole, then one whole chunk (block file), then a partial one (engine).
    let data: Vec<u8> = (0..CHUNK_BYTES + 100).map(|i| (i % 249) as u8).collect();
    let mut txn = Transaction::new();
    txn.push(TxOp::Write { c, oid: oid(1), offset: CHUNK_BYTES, data: Bytes::from(data.clone()) });
    store.apply(&txn).unwrap();
    store.sync().unwrap();
    let places = store.chunk_places(c, &oid(1)).unwrap();
    assert!(
        matches!(
            places[..],
            [(1, ChunkPlace::Block { .. }), (2, ChunkPlace::Engine { bytes: 100, .. })]
        ),
        "{places:?}"
    );
    let extents = store.extents(c, &oid(1), 0, u64::MAX).unwrap();
    assert_eq!(extents, [(CHUNK_BYTES, CHUNK_BYTES + 100)], "the hole is not listed");
    let missing = store.extents(c, &oid(2), 0, 1).unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");
    // Zeroing the whole chunk punches it out; truncating drops the partial one.
    let mut txn = Transaction::new();
    txn.push(TxOp::Zero { c, oid: oid(1), offset: CHUNK_BYTES, len: CHUNK_BYTES });
    store.apply(&txn).unwrap();
    let extents = store.extents(c, &oid(1), 0, u64::MAX).unwrap();
    assert_eq!(extents, [(2 * CHUNK_BYTES, 100)], "zeroed chunks are holes");
    assert_eq!(store.extents(c, &oid(1), 0, 2 * CHUNK_BYTES).unwrap(), []);
    assert_eq!(store.extents(c, &oid(1), 9 * CHUNK_BYTES, 1).unwrap(), []);
    let mut txn = Transaction::new();
    txn.push(TxOp::Write { c, oid: oid(1), offset: CHUNK_BYTES, data: Bytes::from(data) });
    store.apply(&txn).unwrap();
    let hole = store.corrupt_byte(c, &oid(1), 10).unwrap_err();
    assert!(hole.to_string().contains("in a hole"), "{hole}");
    let past = store.corrupt_byte(c, &oid(1), 2 * CHUNK_BYTES + 100).unwrap_err();
    assert!(past.to_string().contains("the object is"), "{past}");
    let missing = store.corrupt_byte(c, &oid(2), 0).unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");
    // Each rotten chunk is caught on read; the hole still reads as zeros.
    for offset in [CHUNK_BYTES + 5, 2 * CHUNK_BYTES + 99] {
        store.corrupt_byte(c, &oid(1), offset).unwrap();
        let error = store.read(c, &oid(1), offset, 1).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }
    assert_eq!(store.read(c, &oid(1), 0, 16).unwrap(), vec![0u8; 16]);
}

#[test]
fn a_clone_shares_whole_chunks_until_either_side_changes_them_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let engine = std::sync::Arc::new(MemoryEngine::new());
    let open = || {
        let blocks = BlockFile::open(&dir.path().join("block")).unwrap();
        KvObjectStore::with_blocks(engine.clone(), blocks).unwrap()
    };
    let store = open();
    let c = coll();
    // Four whole chunks (block file) and a partial one (engine), an xattr and omap.
    let data: Vec<u8> = (0..4 * CHUNK_BYTES + 100).map(|i| (i % 251) as u8).collect();
    let mut txn = Transaction::new();
    txn.push(TxOp::WriteFull { c, oid: oid(0), data: Bytes::from(data.clone()) })
        .push(TxOp::SetXattr { c, oid: oid(0), name: "x".into(), value: b"1".to_vec() })
        .push(TxOp::OmapSet { c, oid: oid(0), entries: vec![(b"k".to_vec(), b"v".to_vec())] });
    store.apply(&txn).unwrap();
    let snap = ObjectId { snap: 4, ..oid(0) };
    // The clone and a 4 KiB write to the head in one transaction, as a first write after a
    // snapshot: only the written chunk gets a unit of its own.
    let mut txn = Transaction::new();
    txn.push(TxOp::Clone { c, from: oid(0), to: snap.clone() }).push(TxOp::Write {
        c,
        oid: oid(0),
        offset: CHUNK_BYTES,
        data: Bytes::from(vec![0xee; 4096]),
    });
    store.apply(&txn).unwrap();
    let blocks = store.blocks().unwrap();
    assert_eq!(blocks.units().0, 5, "four shared-or-own units and the rewritten chunk");
    assert_eq!(blocks.shared_references(), 3);
    assert_eq!(store.read(c, &snap, 0, u64::MAX).unwrap(), data, "the clone is the old object");
    let meta = store.stat(c, &snap).unwrap().unwrap();
    assert_eq!(meta.xattrs.get("x").map(Vec::as_slice), Some(&b"1"[..]));
    assert_eq!(store.omap_get(c, &snap, &[b"k".to_vec()]).unwrap(), vec![Some(b"v".to_vec())]);
    let mut changed = data.clone();
    changed[CHUNK_BYTES as usize..CHUNK_BYTES as usize + 4096].fill(0xee);
    assert_eq!(store.read(c, &oid(0), 0, u64::MAX).unwrap(), changed);
    // A clone onto itself, of a missing object, or after an omap change in the same
    // transaction is refused, and changes nothing.
    let refused = [
        vec![TxOp::Clone { c, from: oid(0), to: oid(0) }],
        vec![TxOp::Clone { c, from: oid(2), to: oid(1) }],
        vec![
            TxOp::OmapSet { c, oid: oid(0), entries: vec![(b"k2".to_vec(), vec![])] },
            TxOp::Clone { c, from: oid(0), to: oid(1) },
        ],
    ];
    for ops in refused {
        assert!(store.apply(&Transaction { ops }).is_err());
    }
    assert!(store.stat(c, &oid(1)).unwrap().is_none());
    store.sync().unwrap();
    drop(store);
    // Reopened: the references are counted again from the records.
    let store = open();
    assert_eq!(store.blocks().unwrap().shared_references(), 3);
    assert_eq!(store.read(c, &snap, 0, u64::MAX).unwrap(), data);
    // Rolling back (the clone copied onto the head) shares all four again.
    store
        .apply(&Transaction { ops: vec![TxOp::Clone { c, from: snap.clone(), to: oid(0) }] })
        .unwrap();
    store.sync().unwrap();
    assert_eq!(store.blocks().unwrap().units().0, 4, "the head's own chunk is free");
    assert_eq!(store.blocks().unwrap().shared_references(), 4);
    assert_eq!(store.read(c, &oid(0), 0, u64::MAX).unwrap(), data);
    assert_eq!(store.omap_get(c, &oid(0), &[b"k".to_vec()]).unwrap(), vec![Some(b"v".to_vec())]);
    let mut txn = Transaction::new();
    txn.push(TxOp::Remove { c, oid: oid(0) });
    store.apply(&txn).unwrap();
    store.sync().unwrap();
    assert_eq!(store.blocks().unwrap().units().0, 4, "the clone still holds every unit");
    assert_eq!(store.read(c, &snap, 0, u64::MAX).unwrap(), data);
    store.apply(&Transaction { ops: vec![TxOp::Remove { c, oid: snap }] }).unwrap();
    store.sync().unwrap();
    assert_eq!(store.blocks().unwrap().units().0, 0);
    assert_eq!(store.blocks().unwrap().shared_references(), 0);
}
