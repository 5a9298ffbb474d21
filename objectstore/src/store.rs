//! `ObjectStore`, and its implementation over a key-value `Engine`.
//!
//! A transaction is turned into one engine batch: object metadata and data chunks are staged
//! in an overlay (so later ops in the transaction see earlier ones), checked against the
//! limits, and written in one atomic batch. Nothing is written if any op fails. Reads check
//! every chunk's crc32c; a mismatch is a `Corrupt` error and no bytes are returned.

use std::collections::HashMap;

use crate::engine::{Batch, Cf, Engine, Entries};
use crate::error::StoreError;
use crate::keys;
use crate::txn::{Transaction, TxOp};
use crate::types::{
    CHUNK_BYTES, CollectionId, OBJECT_BYTES_MAX, OMAP_KEY_BYTES_MAX, ObjectId, ObjectMeta,
    XATTR_BYTES_MAX,
};

/// Entries one scan of the engine returns at most (bounds memory per call).
pub const SCAN_ENTRIES_MAX: usize = 4096;

/// What the OSD needs from its store. Implementations are shared between threads.
pub trait ObjectStore: Send + Sync + 'static {
    /// Applies a transaction atomically. It is visible at once and durable after `sync`.
    fn apply(&self, txn: &Transaction) -> Result<(), StoreError>;
    /// Makes everything applied so far durable (group commit: concurrent callers share).
    fn sync(&self) -> Result<(), StoreError>;
    fn stat(&self, c: CollectionId, oid: &ObjectId) -> Result<Option<ObjectMeta>, StoreError>;
    /// Up to `len` bytes from `offset` (fewer at the end of the object).
    fn read(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError>;
    fn omap_get(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError>;
    /// Omap entries with key > `after` (or from the first), at most `max`, in key order.
    fn omap_list(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<Entries, StoreError>;
    /// Objects after `after` (or from the first), at most `max`, in key order: a listing
    /// resumed from the last id seen is stable while objects come and go.
    fn list(
        &self,
        c: CollectionId,
        after: Option<&ObjectId>,
        max: usize,
    ) -> Result<Vec<(ObjectId, ObjectMeta)>, StoreError>;
    fn collections(&self) -> Result<Vec<CollectionId>, StoreError>;
    fn collection_get(&self, c: CollectionId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Records of a collection with `start <= key < end`, at most `max`.
    fn collection_scan(
        &self,
        c: CollectionId,
        start: &[u8],
        end: Option<&[u8]>,
        max: usize,
    ) -> Result<Entries, StoreError>;
    fn osd_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn osd_scan(&self, start: &[u8], end: Option<&[u8]>, max: usize)
    -> Result<Entries, StoreError>;
    fn used_bytes(&self) -> u64;
}

/// Usage of the store as the OSD reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub used_bytes: u64,
}

/// The registry of collections lives under this prefix in `Cf::Osd`.
const COLLECTION_REGISTRY: &[u8] = b"coll/";

pub struct KvObjectStore<E: Engine> {
    engine: E,
}

impl<E: Engine> KvObjectStore<E> {
    pub fn new(engine: E) -> KvObjectStore<E> {
        KvObjectStore { engine }
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }

    fn load_meta(&self, key: &[u8], oid: &ObjectId) -> Result<Option<ObjectMeta>, StoreError> {
        match self.engine.get(Cf::Meta, key)? {
            Some(bytes) => Ok(Some(keys::decode(&format!("metadata of {oid}"), &bytes)?)),
            None => Ok(None),
        }
    }
}

fn registry_key(c: CollectionId) -> Vec<u8> {
    let mut key = COLLECTION_REGISTRY.to_vec();
    key.extend_from_slice(&keys::collection(c));
    key
}

/// The changes of one transaction before they become a batch.
struct Staging<'a, E: Engine> {
    store: &'a KvObjectStore<E>,
    /// Object key → its metadata after the ops so far (`None`: removed).
    metas: HashMap<Vec<u8>, Option<ObjectMeta>>,
    /// Chunk key → its bytes after the ops so far (`None`: absent, reads as zeros).
    chunks: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Changes that need no staging, in op order.
    batch: Batch,
}

impl<'a, E: Engine> Staging<'a, E> {
    fn meta(&mut self, key: &[u8], oid: &ObjectId) -> Result<Option<ObjectMeta>, StoreError> {
        if let Some(meta) = self.metas.get(key) {
            return Ok(meta.clone());
        }
        let meta = self.store.load_meta(key, oid)?;
        self.metas.insert(key.to_vec(), meta.clone());
        Ok(meta)
    }

    fn chunk(&mut self, key: &[u8], oid: &ObjectId, index: u32) -> Result<Vec<u8>, StoreError> {
        if let Some(chunk) = self.chunks.get(key) {
            return Ok(chunk.clone().unwrap_or_default());
        }
        match self.store.engine.get(Cf::Data, key)? {
            Some(value) => {
                let data = keys::decode_chunk(|| format!("chunk {index} of {oid}"), &value)?;
                Ok(data.to_vec())
            }
            None => Ok(Vec::new()),
        }
    }

    fn exists(&mut self, key: &[u8], oid: &ObjectId) -> Result<ObjectMeta, StoreError> {
        self.meta(key, oid)?.ok_or_else(|| StoreError::NotFound(oid.to_string()))
    }

    fn write(
        &mut self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= OBJECT_BYTES_MAX)
            .ok_or_else(|| too_large(oid, offset, data.len() as u64))?;
        let key = keys::object(c, oid);
        let mut meta = self.meta(&key, oid)?.unwrap_or_default();
        let mut at = offset;
        while at < end {
            let index = (at / CHUNK_BYTES) as u32;
            let chunk_start = u64::from(index) * CHUNK_BYTES;
            let within = (at - chunk_start) as usize;
            let take = ((CHUNK_BYTES - (at - chunk_start)).min(end - at)) as usize;
            let source = &data[(at - offset) as usize..(at - offset) as usize + take];
            let chunk_key = keys::chunk(&key, index);
            let bytes = if within == 0 && take as u64 == CHUNK_BYTES {
                source.to_vec()
            } else {
                let mut bytes = self.chunk(&chunk_key, oid, index)?;
                // Bytes past the old end of the object are stale if it was truncated
                // inside this chunk; they were dropped then, so only zero-fill here.
                if bytes.len() < within + take {
                    bytes.resize(within + take, 0);
                }
                bytes[within..within + take].copy_from_slice(source);
                bytes
            };
            self.chunks.insert(chunk_key, Some(bytes));
            at += take as u64;
        }
        meta.size = meta.size.max(end);
        self.metas.insert(key, Some(meta));
        Ok(())
    }

    /// Drops data at and past `size` (shrinking), and sets the size.
    fn truncate(&mut self, c: CollectionId, oid: &ObjectId, size: u64) -> Result<(), StoreError> {
        if size > OBJECT_BYTES_MAX {
            return Err(too_large(oid, size, 0));
        }
        let key = keys::object(c, oid);
        let mut meta = self.exists(&key, oid)?;
        if size < meta.size {
            let first_dropped = size.div_ceil(CHUNK_BYTES);
            let last = meta.size.div_ceil(CHUNK_BYTES);
            for index in first_dropped..last {
                self.chunks.insert(keys::chunk(&key, index as u32), None);
            }
            if !size.is_multiple_of(CHUNK_BYTES) {
                let index = (size / CHUNK_BYTES) as u32;
                let chunk_key = keys::chunk(&key, index);
                let mut bytes = self.chunk(&chunk_key, oid, index)?;
                bytes.truncate((size % CHUNK_BYTES) as usize);
                self.chunks.insert(chunk_key, Some(bytes));
            }
        }
        meta.size = size;
        self.metas.insert(key, Some(meta));
        Ok(())
    }

    fn zero(
        &mut self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
        len: u64,
    ) -> Result<(), StoreError> {
        let key = keys::object(c, oid);
        let meta = self.exists(&key, oid)?;
        let end = offset.saturating_add(len).min(meta.size);
        let mut at = offset;
        while at < end {
            let index = (at / CHUNK_BYTES) as u32;
            let chunk_start = u64::from(index) * CHUNK_BYTES;
            let within = (at - chunk_start) as usize;
            let take = ((CHUNK_BYTES - (at - chunk_start)).min(end - at)) as usize;
            let chunk_key = keys::chunk(&key, index);
            if within == 0 && take as u64 == CHUNK_BYTES {
                self.chunks.insert(chunk_key, None);
            } else {
                let mut bytes = self.chunk(&chunk_key, oid, index)?;
                let stop = (within + take).min(bytes.len());
                if within < stop {
                    bytes[within..stop].fill(0);
                }
                self.chunks.insert(chunk_key, Some(bytes));
            }
            at += take as u64;
        }
        Ok(())
    }

    fn remove(&mut self, c: CollectionId, oid: &ObjectId) -> Result<(), StoreError> {
        let key = keys::object(c, oid);
        let Some(meta) = self.meta(&key, oid)? else {
            return Ok(());
        };
        for index in 0..meta.size.div_ceil(CHUNK_BYTES) {
            self.chunks.insert(keys::chunk(&key, index as u32), None);
        }
        self.omap_clear(&key);
        self.metas.insert(key, None);
        Ok(())
    }

    fn omap_clear(&mut self, object_key: &[u8]) {
        if let Some(end) = keys::prefix_end(object_key) {
            self.batch.delete_range(Cf::Omap, object_key.to_vec(), end);
        }
    }

    fn update_meta(
        &mut self,
        c: CollectionId,
        oid: &ObjectId,
        change: impl FnOnce(&mut ObjectMeta) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let key = keys::object(c, oid);
        let mut meta = self.exists(&key, oid)?;
        change(&mut meta)?;
        self.metas.insert(key, Some(meta));
        Ok(())
    }

    fn op(&mut self, op: &TxOp) -> Result<(), StoreError> {
        match op {
            TxOp::CreateCollection(c) => self.batch.put(Cf::Osd, registry_key(*c), vec![]),
            TxOp::RemoveCollection(c) => {
                let prefix = keys::collection(*c);
                let end = keys::prefix_end(&prefix).expect("collection keys end");
                for cf in [Cf::Meta, Cf::Data, Cf::Omap, Cf::Pg] {
                    self.batch.delete_range(cf, prefix.to_vec(), end.clone());
                }
                self.batch.delete(Cf::Osd, registry_key(*c));
                let doomed = |k: &Vec<u8>| k.starts_with(&prefix);
                self.metas.retain(|k, _| !doomed(k));
                self.chunks.retain(|k, _| !doomed(k));
            }
            TxOp::Create { c, oid, exclusive } => {
                oid.validate()?;
                let key = keys::object(*c, oid);
                match self.meta(&key, oid)? {
                    Some(_) if *exclusive => {
                        return Err(StoreError::AlreadyExists(oid.to_string()));
                    }
                    Some(_) => {}
                    None => {
                        self.metas.insert(key, Some(ObjectMeta::default()));
                    }
                }
            }
            TxOp::Write { c, oid, offset, data } => {
                oid.validate()?;
                self.write(*c, oid, *offset, data)?;
            }
            TxOp::WriteFull { c, oid, data } => {
                oid.validate()?;
                let key = keys::object(*c, oid);
                if self.meta(&key, oid)?.is_some() {
                    self.truncate(*c, oid, 0)?;
                }
                self.write(*c, oid, 0, data)?;
            }
            TxOp::Zero { c, oid, offset, len } => self.zero(*c, oid, *offset, *len)?,
            TxOp::Truncate { c, oid, size } => self.truncate(*c, oid, *size)?,
            TxOp::Remove { c, oid } => self.remove(*c, oid)?,
            TxOp::SetXattr { c, oid, name, value } => self.update_meta(*c, oid, |meta| {
                meta.xattrs.insert(name.clone(), value.clone());
                if meta.xattr_bytes() > XATTR_BYTES_MAX {
                    return Err(StoreError::invalid(
                        format!("xattrs of {oid}"),
                        format!("above the limit of {XATTR_BYTES_MAX} bytes"),
                    ));
                }
                Ok(())
            })?,
            TxOp::RemoveXattr { c, oid, name } => self.update_meta(*c, oid, |meta| {
                meta.xattrs.remove(name);
                Ok(())
            })?,
            TxOp::OmapSet { c, oid, entries } => {
                let key = keys::object(*c, oid);
                self.exists(&key, oid)?;
                for (k, v) in entries {
                    check_omap_key(oid, k)?;
                    self.batch.put(Cf::Omap, keys::omap(&key, k), v.clone());
                }
            }
            TxOp::OmapRemove { c, oid, keys: user_keys } => {
                let key = keys::object(*c, oid);
                self.exists(&key, oid)?;
                for k in user_keys {
                    check_omap_key(oid, k)?;
                    self.batch.delete(Cf::Omap, keys::omap(&key, k));
                }
            }
            TxOp::OmapRemoveRange { c, oid, start, end } => {
                let key = keys::object(*c, oid);
                self.exists(&key, oid)?;
                if start < end {
                    self.batch.delete_range(
                        Cf::Omap,
                        keys::omap(&key, start),
                        keys::omap(&key, end),
                    );
                }
            }
            TxOp::OmapClear { c, oid } => {
                let key = keys::object(*c, oid);
                self.exists(&key, oid)?;
                self.omap_clear(&key);
            }
            TxOp::SetVersion { c, oid, version, mtime_ms } => {
                self.update_meta(*c, oid, |meta| {
                    meta.version = *version;
                    meta.mtime_ms = *mtime_ms;
                    Ok(())
                })?
            }
            TxOp::CollectionPut { c, key, value } => {
                self.batch.put(Cf::Pg, keys::collection_meta(*c, key), value.clone());
            }
            TxOp::CollectionDelete { c, key } => {
                self.batch.delete(Cf::Pg, keys::collection_meta(*c, key));
            }
            TxOp::CollectionDeleteRange { c, start, end } => {
                self.batch.delete_range(
                    Cf::Pg,
                    keys::collection_meta(*c, start),
                    keys::collection_meta(*c, end),
                );
            }
            TxOp::OsdPut { key, value } => self.batch.put(Cf::Osd, key.clone(), value.clone()),
            TxOp::OsdDelete { key } => self.batch.delete(Cf::Osd, key.clone()),
        }
        Ok(())
    }

    fn into_batch(self) -> Batch {
        let mut batch = self.batch;
        for (key, meta) in self.metas {
            match meta {
                Some(meta) => batch.put(Cf::Meta, key, keys::encode(&meta)),
                None => batch.delete(Cf::Meta, key),
            }
        }
        for (key, chunk) in self.chunks {
            match chunk {
                Some(bytes) if !bytes.is_empty() => {
                    batch.put(Cf::Data, key, keys::encode_chunk(&bytes))
                }
                _ => batch.delete(Cf::Data, key),
            }
        }
        batch
    }
}

fn too_large(oid: &ObjectId, offset: u64, len: u64) -> StoreError {
    StoreError::invalid(
        format!("write to {oid}"),
        format!(
            "{len} bytes at offset {offset} would end past the object size limit of \
             {OBJECT_BYTES_MAX} bytes"
        ),
    )
}

fn check_omap_key(oid: &ObjectId, key: &[u8]) -> Result<(), StoreError> {
    if key.len() > OMAP_KEY_BYTES_MAX {
        return Err(StoreError::invalid(
            format!("omap key of {oid}"),
            format!("{} bytes is above the limit of {OMAP_KEY_BYTES_MAX}", key.len()),
        ));
    }
    Ok(())
}

impl<E: Engine> ObjectStore for KvObjectStore<E> {
    fn apply(&self, txn: &Transaction) -> Result<(), StoreError> {
        let mut staging = Staging {
            store: self,
            metas: HashMap::new(),
            chunks: HashMap::new(),
            batch: Batch::default(),
        };
        for op in &txn.ops {
            staging.op(op)?;
        }
        let batch = staging.into_batch();
        if batch.is_empty() {
            return Ok(());
        }
        self.engine.write(batch)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.engine.sync()
    }

    fn stat(&self, c: CollectionId, oid: &ObjectId) -> Result<Option<ObjectMeta>, StoreError> {
        self.load_meta(&keys::object(c, oid), oid)
    }

    fn read(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let key = keys::object(c, oid);
        let meta =
            self.load_meta(&key, oid)?.ok_or_else(|| StoreError::NotFound(oid.to_string()))?;
        let end = offset.saturating_add(len).min(meta.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let first = (offset / CHUNK_BYTES) as u32;
        let last = ((end - 1) / CHUNK_BYTES) as u32;
        let start_key = keys::chunk(&key, first);
        let end_key = keys::chunk(&key, last + 1);
        let entries =
            self.engine.scan(Cf::Data, &start_key, Some(&end_key), (last - first + 1) as usize)?;
        for (chunk_key, value) in entries {
            let index_bytes = &chunk_key[key.len()..];
            let index = u32::from_be_bytes(index_bytes.try_into().map_err(|_| {
                StoreError::corrupt(format!("data of {oid}"), "a chunk key of the wrong length")
            })?);
            let data = keys::decode_chunk(|| format!("chunk {index} of {oid}"), &value)?;
            let chunk_start = u64::from(index) * CHUNK_BYTES;
            let from = offset.max(chunk_start);
            let to = end.min(chunk_start + data.len() as u64);
            if from < to {
                let src = &data[(from - chunk_start) as usize..(to - chunk_start) as usize];
                out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
            }
        }
        Ok(out)
    }

    fn omap_get(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        user_keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let key = keys::object(c, oid);
        self.load_meta(&key, oid)?.ok_or_else(|| StoreError::NotFound(oid.to_string()))?;
        user_keys.iter().map(|k| self.engine.get(Cf::Omap, &keys::omap(&key, k))).collect()
    }

    fn omap_list(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<Entries, StoreError> {
        let key = keys::object(c, oid);
        self.load_meta(&key, oid)?.ok_or_else(|| StoreError::NotFound(oid.to_string()))?;
        let start = match after {
            // The first key after `after` is `after` + 0x00.
            Some(after) => {
                let mut start = keys::omap(&key, after);
                start.push(0);
                start
            }
            None => key.clone(),
        };
        let end = keys::prefix_end(&key);
        let entries =
            self.engine.scan(Cf::Omap, &start, end.as_deref(), max.min(SCAN_ENTRIES_MAX))?;
        Ok(entries.into_iter().map(|(k, v)| (k[key.len()..].to_vec(), v)).collect())
    }

    fn list(
        &self,
        c: CollectionId,
        after: Option<&ObjectId>,
        max: usize,
    ) -> Result<Vec<(ObjectId, ObjectMeta)>, StoreError> {
        let prefix = keys::collection(c);
        let start = match after {
            Some(after) => {
                let mut start = keys::object(c, after);
                start.push(0);
                start
            }
            None => prefix.to_vec(),
        };
        let end = keys::prefix_end(&prefix);
        let entries =
            self.engine.scan(Cf::Meta, &start, end.as_deref(), max.min(SCAN_ENTRIES_MAX))?;
        entries
            .into_iter()
            .map(|(k, v)| {
                let (_, oid) = keys::parse_object(&k).ok_or_else(|| {
                    StoreError::corrupt(format!("an object key in {c}"), "does not parse")
                })?;
                let meta = keys::decode(&format!("metadata of {oid}"), &v)?;
                Ok((oid, meta))
            })
            .collect()
    }

    fn collections(&self) -> Result<Vec<CollectionId>, StoreError> {
        let end = keys::prefix_end(COLLECTION_REGISTRY);
        let mut out = Vec::new();
        let mut start = COLLECTION_REGISTRY.to_vec();
        loop {
            let entries = self.engine.scan(Cf::Osd, &start, end.as_deref(), SCAN_ENTRIES_MAX)?;
            let done = entries.len() < SCAN_ENTRIES_MAX;
            for (k, _) in &entries {
                let c = keys::parse_collection(&k[COLLECTION_REGISTRY.len()..])
                    .ok_or_else(|| StoreError::corrupt("the collection registry", "a bad key"))?;
                out.push(c);
            }
            match entries.last() {
                Some((k, _)) if !done => {
                    start = k.clone();
                    start.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    fn collection_get(&self, c: CollectionId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine.get(Cf::Pg, &keys::collection_meta(c, key))
    }

    fn collection_scan(
        &self,
        c: CollectionId,
        start: &[u8],
        end: Option<&[u8]>,
        max: usize,
    ) -> Result<Entries, StoreError> {
        let prefix = keys::collection(c);
        let from = keys::collection_meta(c, start);
        let to = match end {
            Some(end) => Some(keys::collection_meta(c, end)),
            None => keys::prefix_end(&prefix),
        };
        let entries = self.engine.scan(Cf::Pg, &from, to.as_deref(), max.min(SCAN_ENTRIES_MAX))?;
        Ok(entries.into_iter().map(|(k, v)| (k[prefix.len()..].to_vec(), v)).collect())
    }

    fn osd_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine.get(Cf::Osd, key)
    }

    fn osd_scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        max: usize,
    ) -> Result<Entries, StoreError> {
        self.engine.scan(Cf::Osd, start, end, max.min(SCAN_ENTRIES_MAX))
    }

    fn used_bytes(&self) -> u64 {
        self.engine.used_bytes()
    }
}
