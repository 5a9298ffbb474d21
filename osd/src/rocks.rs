//! The RocksDB engine under the OSD's object store: one database, a column family per kind
//! of record, and group commit.
//!
//! Batches are written without syncing, in the order the PGs issue them, so they are
//! visible at once; `sync` then fsyncs the WAL for everything written so far. Concurrent
//! callers of `sync` queue on one lock, and whoever gets it covers every batch written
//! before it started, so a busy OSD pays one fsync for many writes (this machine's disk
//! did ~150 fsyncs/s when busy: one per write would cap the OSD there).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use objectstore::engine::{BatchOp, Entries};
use objectstore::{Batch, Cf, Engine, StoreError};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, Direction,
    IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions,
};

/// Memtable bytes for object data (whole chunks go to the block file, so only small
/// objects and partial chunks come here); other column families get less.
const DATA_MEMTABLE_BYTES: usize = 32 << 20;
const META_MEMTABLE_BYTES: usize = 8 << 20;
/// All memtables together: RocksDB flushes the largest when they pass this. With the block
/// cache it is most of an OSD's memory budget (256 MiB under load).
const MEMTABLES_TOTAL_BYTES: usize = 64 << 20;
/// Values this large or larger live in blob files (partial chunks; a small object's
/// only chunk stays in the LSM tree with its neighbours).
const BLOB_MIN_BYTES: u64 = 16 << 10;
/// The block cache for reads, shared by every column family.
const BLOCK_CACHE_BYTES: usize = 32 << 20;
/// Bloom filter bits per key in each table file (about 1% false positives).
const BLOOM_BITS_PER_KEY: f64 = 10.0;
/// The share of each memtable's size given to a bloom filter of its keys.
const MEMTABLE_BLOOM_RATIO: f64 = 0.05;

/// Obsolete WAL files kept for reuse (BlueStore's `recycle_log_file_num=4`).
const WAL_FILES_RECYCLED: usize = 4;

pub struct RocksEngine {
    db: DB,
    /// Batches written (not necessarily durable).
    written: AtomicU64,
    /// Batches known durable; the lock is held across an fsync.
    synced: Mutex<u64>,
}

fn io(e: rocksdb::Error) -> StoreError {
    StoreError::Io(e.into_string())
}

impl RocksEngine {
    pub fn open(path: &Path) -> Result<RocksEngine, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_background_jobs(2);
        options.set_keep_log_file_num(4);
        options.set_db_write_buffer_size(MEMTABLES_TOTAL_BYTES);
        options.set_enable_pipelined_write(true);
        // Reuse old WAL files rather than growing new ones: a sync of a file whose size
        // does not change flushes data without a journal commit of its inode (BlueStore
        // sets the same for the same reason).
        options.set_recycle_log_file_num(WAL_FILES_RECYCLED);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let descriptors = Cf::ALL.iter().map(|cf| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            // Point lookups (an object's record, a chunk) skip the table files that do not
            // hold the key by their bloom filters, rather than searching the index of each
            // overlapping level-0 file.
            table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
            let mut cf_options = Options::default();
            cf_options.set_block_based_table_factory(&table);
            // The same for the memtables: a lookup of a key already flushed skips each
            // memtable's skip list (perf had those searches at 7.6% of all CPU under
            // 4 KiB random reads).
            cf_options.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
            cf_options.set_memtable_whole_key_filtering(true);
            match cf {
                // Data chunks (64 KiB each) go to blob files when their memtable is
                // flushed, so compaction moves keys, not the bytes: without this every
                // byte was rewritten at each level. Not compressed: object data is often
                // compressed already, and LZ4 cost a tenth of the OSD's CPU under writes.
                Cf::Data => {
                    cf_options.set_write_buffer_size(DATA_MEMTABLE_BYTES);
                    cf_options.set_target_file_size_base(64 << 20);
                    cf_options.set_compression_type(DBCompressionType::None);
                    cf_options.set_enable_blob_files(true);
                    cf_options.set_min_blob_size(BLOB_MIN_BYTES);
                    cf_options.set_blob_file_size(256 << 20);
                    cf_options.set_blob_compression_type(DBCompressionType::None);
                    cf_options.set_enable_blob_gc(true);
                }
                _ => cf_options.set_write_buffer_size(META_MEMTABLE_BYTES),
            }
            ColumnFamilyDescriptor::new(cf.name(), cf_options)
        });
        let db = DB::open_cf_descriptors(&options, path, descriptors).map_err(io)?;
        Ok(RocksEngine { db, written: AtomicU64::new(0), synced: Mutex::new(0) })
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(cf.name()).expect("column families are created at open")
    }
}

impl Engine for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(cf), key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let mut read = ReadOptions::default();
        if let Some(end) = end {
            read.set_iterate_upper_bound(end.to_vec());
        }
        let iter = self.db.iterator_cf_opt(
            self.cf(cf),
            read,
            IteratorMode::From(start, Direction::Forward),
        );
        let mut out = Vec::new();
        for entry in iter.take(limit) {
            let (k, v) = entry.map_err(io)?;
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => wb.put_cf(self.cf(cf), key, value),
                BatchOp::Delete { cf, key } => wb.delete_cf(self.cf(cf), key),
                BatchOp::DeleteRange { cf, start, end } => {
                    wb.delete_range_cf(self.cf(cf), start, end)
                }
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.db.write_opt(wb, &options).map_err(io)?;
        self.written.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        let target = self.written.load(Ordering::Acquire);
        let mut synced = self.synced.lock().map_err(|_| StoreError::Io("sync lock".into()))?;
        if *synced >= target {
            return Ok(());
        }
        // Everything counted here was written before the fsync starts, so it covers them.
        let covered = self.written.load(Ordering::Acquire);
        self.db.flush_wal(true).map_err(io)?;
        *synced = covered;
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        // SST and blob files (chunks of data live in blob files), and what is still in
        // memory on its way there.
        const SIZES: [&str; 3] = [
            "rocksdb.live-sst-files-size",
            "rocksdb.total-blob-file-size",
            "rocksdb.cur-size-all-mem-tables",
        ];
        Cf::ALL
            .iter()
            .flat_map(|&cf| SIZES.iter().map(move |p| (cf, *p)))
            .map(|(cf, property)| {
                self.db.property_int_value_cf(self.cf(cf), property).ok().flatten().unwrap_or(0)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use objectstore::{CollectionId, KvObjectStore, ObjectId, ObjectStore, Transaction, TxOp};
    use placement::{PgId, PoolId};

    fn coll() -> CollectionId {
        CollectionId::replicated(PgId { pool: PoolId(2), seed: 5 })
    }

    #[test]
    fn data_survives_reopen_and_a_flipped_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let oid = ObjectId::head("obj");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        {
            let store = KvObjectStore::new(RocksEngine::open(dir.path()).unwrap());
            let txn = Transaction {
                ops: vec![TxOp::WriteFull {
                    c: coll(),
                    oid: oid.clone(),
                    data: Bytes::from(data.clone()),
                }],
            };
            store.apply(&txn).unwrap();
            store.sync().unwrap();
        }
        let store = KvObjectStore::new(RocksEngine::open(dir.path()).unwrap());
        assert!(store.read(coll(), &oid, 0, u64::MAX).unwrap() == data);
        // Corrupt the second chunk behind the store's back, as bit rot would.
        let key = objectstore::keys::chunk(&objectstore::keys::object(coll(), &oid), 1);
        let mut value = store.engine().get(Cf::Data, &key).unwrap().unwrap();
        value[100] ^= 0x40;
        let mut batch = Batch::default();
        batch.put(Cf::Data, key, value);
        store.engine().write(batch).unwrap();
        let error = store.read(coll(), &oid, 0, u64::MAX).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        // The first chunk alone still reads.
        assert!(store.read(coll(), &oid, 0, 1000).unwrap() == data[..1000]);
    }

    fn open_with_blocks(dir: &Path) -> KvObjectStore<RocksEngine> {
        let engine = RocksEngine::open(&dir.join("store")).unwrap();
        let blocks = objectstore::BlockFile::open(&dir.join("block")).unwrap();
        KvObjectStore::with_blocks(engine, blocks).unwrap()
    }

    fn write_full(store: &KvObjectStore<RocksEngine>, name: &str, data: &[u8]) {
        let oid = ObjectId::head(name);
        let data = Bytes::copy_from_slice(data);
        store.apply(&Transaction { ops: vec![TxOp::WriteFull { c: coll(), oid, data }] }).unwrap();
    }

    #[test]
    fn whole_chunks_live_in_the_block_file_and_its_map_is_rebuilt_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = objectstore::CHUNK_BYTES as usize;
        // 3 whole chunks and a partial one (which stays in RocksDB).
        let first: Vec<u8> = (0..3 * chunk + 1000).map(|i| (i % 251) as u8).collect();
        let second: Vec<u8> = (0..2 * chunk).map(|i| (i % 241) as u8).collect();
        {
            let store = open_with_blocks(dir.path());
            write_full(&store, "a", &first);
            write_full(&store, "b", &second);
            assert_eq!(store.blocks().unwrap().units(), (5, 5));
            // An overwrite takes fresh units; the old ones are free once it is durable.
            write_full(&store, "b", &first[..2 * chunk]);
            assert_eq!(store.blocks().unwrap().units().0, 7);
            store.sync().unwrap();
            assert_eq!(store.blocks().unwrap().units(), (5, 7));
        }
        let store = open_with_blocks(dir.path());
        assert_eq!(store.blocks().unwrap().units(), (5, 7));
        assert!(store.read(coll(), &ObjectId::head("a"), 0, u64::MAX).unwrap() == first);
        let b = store.read(coll(), &ObjectId::head("b"), 0, u64::MAX).unwrap();
        assert!(b == first[..2 * chunk]);
        // A piece across a block-file chunk and the RocksDB one.
        let piece = store.read(coll(), &ObjectId::head("a"), 3 * chunk as u64 - 10, 100).unwrap();
        assert!(piece == first[3 * chunk - 10..3 * chunk + 90]);
        // Freed units are reused before the file grows.
        write_full(&store, "c", &second);
        assert_eq!(store.blocks().unwrap().units(), (7, 7));
        // Removing the collection frees its units.
        store.apply(&Transaction { ops: vec![TxOp::RemoveCollection(coll())] }).unwrap();
        store.sync().unwrap();
        assert_eq!(store.blocks().unwrap().units(), (0, 7));
    }

    #[test]
    fn writes_into_recycled_wal_files_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let put = |engine: &RocksEngine, i: u32| {
            let mut batch = Batch::default();
            batch.put(Cf::Meta, format!("k{i}").into_bytes(), i.to_le_bytes().to_vec());
            engine.write(batch).unwrap();
            engine.sync().unwrap();
        };
        {
            let engine = RocksEngine::open(dir.path()).unwrap();
            // Each flush retires the WAL the writes before it went to; later writes go
            // to those files again, over their old records.
            for i in 0..12 {
                put(&engine, i);
                for cf in Cf::ALL {
                    engine.db.flush_cf(engine.cf(cf)).unwrap();
                }
            }
            put(&engine, 12);
            put(&engine, 13);
        }
        let options: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("OPTIONS-"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let recycling = format!("recycle_log_file_num={WAL_FILES_RECYCLED}");
        assert!(!options.is_empty() && options.iter().all(|o| o.contains(&recycling)));
        let log = std::fs::read_to_string(dir.path().join("LOG")).unwrap();
        assert!(log.contains("from recycle list"), "no WAL file was reused");
        let engine = RocksEngine::open(dir.path()).unwrap();
        for i in 0..14u32 {
            let value = engine.get(Cf::Meta, format!("k{i}").as_bytes()).unwrap();
            assert_eq!(value, Some(i.to_le_bytes().to_vec()), "key {i}");
        }
    }

    #[test]
    fn concurrent_syncs_share_fsyncs_and_cover_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(KvObjectStore::new(RocksEngine::open(dir.path()).unwrap()));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let oid = ObjectId::head(format!("t{t}-{i}"));
                        let txn = Transaction {
                            ops: vec![TxOp::Write {
                                c: coll(),
                                oid,
                                offset: 0,
                                data: Bytes::from_static(b"x"),
                            }],
                        };
                        store.apply(&txn).unwrap();
                        store.sync().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let engine = store.engine();
        assert_eq!(engine.written.load(Ordering::Acquire), 400);
        assert_eq!(*engine.synced.lock().unwrap(), 400);
        assert_eq!(store.list(coll(), None, 1000).unwrap().len(), 400);
    }
}
