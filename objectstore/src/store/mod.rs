//! `ObjectStore`, and its implementation over a key-value `Engine`.
//!
//! A transaction is turned into one engine batch: object metadata and data chunks are staged
//! in an overlay (so later ops in the transaction see earlier ones), checked against the
//! limits, and written in one atomic batch. Nothing is written if any op fails. Reads check
//! every chunk's crc32c; a mismatch is a `Corrupt` error and no bytes are returned.
//! The staging of a transaction is `staging`'s; this module reads, and applies batches.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::blocks::{BlockFile, Extent};

/// Where a stored chunk of an object lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkPlace {
    /// A whole chunk in the block file, at `unit`.
    Block { unit: u64, crc: u32 },
    /// A partial chunk in the key-value engine.
    Engine { bytes: usize, crc: u32 },
}
use crate::engine::{Batch, Cf, Engine, Entries};
use crate::error::StoreError;
use crate::keys;
use crate::txn::{Transaction, TxOp};
use crate::types::{
    CHUNK_BYTES, CollectionId, OBJECT_BYTES_MAX, OMAP_KEY_BYTES_MAX, ObjectId, ObjectMeta,
    XATTR_BYTES_MAX,
};

mod staging;

use staging::{Staged, Staging};

/// Entries one scan of the engine returns at most (bounds memory per call).
pub const SCAN_ENTRIES_MAX: usize = 4096;
/// Engine-held chunks a read looks up one by one; more are read with one scan.
const POINT_READS_MAX: usize = 4;

/// What the OSD needs from its store. Implementations are shared between threads.
pub trait ObjectStore: Send + Sync + 'static {
    /// Applies a transaction atomically. It is visible at once and durable after `sync`.
    fn apply(&self, txn: &Transaction) -> Result<(), StoreError>;
    /// Makes everything applied so far durable (group commit: concurrent callers share).
    fn sync(&self) -> Result<(), StoreError>;
    fn stat(&self, c: CollectionId, oid: &ObjectId) -> Result<Option<ObjectMeta>, StoreError>;
    /// `stat` and `read` in one look-up of the object's record (`None`: no such object).
    fn stat_read(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
        len: u64,
    ) -> Result<Option<(ObjectMeta, Vec<u8>)>, StoreError>;
    /// Up to `len` bytes from `offset` (fewer at the end of the object).
    fn read(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError>;
    /// The ranges of `offset..offset + len` that hold data, as `(offset, len)` in order,
    /// none past the object's end: every stored chunk counts whole (a chunk's bytes may
    /// be zeros), and what no chunk holds (never written, zeroed or truncated away) is a
    /// hole. `NotFound` if there is no such object.
    fn extents(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, u64)>, StoreError>;
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
    /// An object's whole omap, in key order (`omap_list` page by page).
    fn omap_all(&self, c: CollectionId, oid: &ObjectId) -> Result<Entries, StoreError> {
        let mut omap = Vec::new();
        loop {
            let after = omap.last().map(|(k, _): &(Vec<u8>, Vec<u8>)| k.clone());
            let page = self.omap_list(c, oid, after.as_deref(), SCAN_ENTRIES_MAX)?;
            let done = page.len() < SCAN_ENTRIES_MAX;
            omap.extend(page);
            if done {
                return Ok(omap);
            }
        }
    }
    /// Objects after `after` (or from the first), at most `max`, in key order: a listing
    /// resumed from the last id seen is stable while objects come and go.
    fn list(
        &self,
        c: CollectionId,
        after: Option<&ObjectId>,
        max: usize,
    ) -> Result<Vec<(ObjectId, ObjectMeta)>, StoreError>;
    /// `list` without clones (objects whose `snap` is not `SNAP_HEAD`): up to `max`
    /// heads after `after`, however many clones lie between them.
    fn list_heads(
        &self,
        c: CollectionId,
        after: Option<&ObjectId>,
        max: usize,
    ) -> Result<Vec<(ObjectId, ObjectMeta)>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = after.cloned();
        loop {
            let page = self.list(c, cursor.as_ref(), SCAN_ENTRIES_MAX.min(max.max(1) * 2))?;
            let done = page.is_empty();
            cursor = page.last().map(|(oid, _)| oid.clone());
            for (oid, meta) in page {
                if oid.snap == crate::types::SNAP_HEAD {
                    out.push((oid, meta));
                    if out.len() >= max {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
        }
    }
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

/// The record version of an object's metadata record with its extent map (version 1 records
/// hold an `ObjectMeta` alone: every chunk in the engine).
const ONODE_RECORD_VERSION: u8 = 2;

/// An object's metadata record: what `stat` answers, and which of its chunks live in the
/// block file (every other chunk is in `Cf::Data`, or absent and reads as zeros).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Onode {
    meta: ObjectMeta,
    /// Chunk index → extent.
    extents: BTreeMap<u32, Extent>,
}

fn encode_onode(onode: &Onode) -> Vec<u8> {
    let mut out = vec![ONODE_RECORD_VERSION];
    out.extend_from_slice(&postcard::to_stdvec(onode).expect("records encode"));
    out
}

fn decode_onode(oid: impl std::fmt::Display, bytes: &[u8]) -> Result<Onode, StoreError> {
    let what = || format!("metadata of {oid}");
    match bytes.first() {
        Some(&ONODE_RECORD_VERSION) => postcard::from_bytes(&bytes[1..])
            .map_err(|e| StoreError::corrupt(what(), format!("does not decode: {e}"))),
        _ => Ok(Onode { meta: keys::decode(&what(), bytes)?, extents: BTreeMap::new() }),
    }
}

pub struct KvObjectStore<E: Engine> {
    engine: E,
    /// Where whole chunks go; without it every chunk is kept in the engine.
    blocks: Option<BlockFile>,
}

impl<E: Engine> KvObjectStore<E> {
    /// A store that keeps all data in the engine.
    pub fn new(engine: E) -> KvObjectStore<E> {
        KvObjectStore { engine, blocks: None }
    }

    /// A store that keeps whole chunks in `blocks`. Reads every metadata record once to
    /// learn which units are in use.
    pub fn with_blocks(engine: E, blocks: BlockFile) -> Result<KvObjectStore<E>, StoreError> {
        let used = units_in(&engine, &[], None)?;
        blocks.mark_used(used)?;
        Ok(KvObjectStore { engine, blocks: Some(blocks) })
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }

    pub fn blocks(&self) -> Option<&BlockFile> {
        self.blocks.as_ref()
    }

    /// Where each stored chunk of an object lives (chunks never written are holes and
    /// absent), for offline inspection.
    pub fn chunk_places(
        &self,
        c: CollectionId,
        oid: &ObjectId,
    ) -> Result<Vec<(u32, ChunkPlace)>, StoreError> {
        let key = keys::object(c, oid);
        let onode =
            self.load_onode(&key, oid)?.ok_or_else(|| StoreError::NotFound(oid.to_string()))?;
        let chunks = onode.meta.size.div_ceil(CHUNK_BYTES) as u32;
        self.stored_chunks(&key, &onode, 0..chunks)
    }

    /// The stored chunks of an object with an index in `range`, by index.
    fn stored_chunks(
        &self,
        key: &[u8],
        onode: &Onode,
        range: std::ops::Range<u32>,
    ) -> Result<Vec<(u32, ChunkPlace)>, StoreError> {
        let mut places: Vec<(u32, ChunkPlace)> = onode
            .extents
            .range(range.clone())
            .map(|(&index, e)| (index, ChunkPlace::Block { unit: e.unit, crc: e.crc }))
            .collect();
        let (start, end) = (keys::chunk(key, range.start), keys::chunk(key, range.end));
        let most = range.len();
        for (chunk_key, value) in self.engine.scan(Cf::Data, &start, Some(&end), most)? {
            let index = chunk_key[key.len()..].try_into().map(u32::from_be_bytes);
            if let (Ok(index), Some(crc)) = (index, value.get(..4)) {
                let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
                places.push((index, ChunkPlace::Engine { bytes: value.len() - 4, crc }));
            }
        }
        places.sort_by_key(|(index, _)| *index);
        Ok(places)
    }

    /// Flips every bit of the stored byte at `offset` of an object, behind its checksum:
    /// what bit rot does. For rehearsing detection and repair on a stopped OSD. Returns
    /// where the byte was.
    pub fn corrupt_byte(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
    ) -> Result<String, StoreError> {
        let key = keys::object(c, oid);
        let onode =
            self.load_onode(&key, oid)?.ok_or_else(|| StoreError::NotFound(oid.to_string()))?;
        if offset >= onode.meta.size {
            return Err(StoreError::invalid(
                format!("byte {offset} of {oid}"),
                format!("the object is {} bytes", onode.meta.size),
            ));
        }
        let index = (offset / CHUNK_BYTES) as u32;
        let within = offset % CHUNK_BYTES;
        if let Some(extent) = onode.extents.get(&index) {
            let blocks = self.blocks.as_ref().ok_or_else(|| no_block_file(oid, index))?;
            let at = extent.unit * crate::blocks::UNIT_BYTES + within;
            blocks.flip_byte(at)?;
            return Ok(format!("block file byte {at} (unit {}, chunk {index})", extent.unit));
        }
        let chunk_key = keys::chunk(&key, index);
        let mut value = self.engine.get(Cf::Data, &chunk_key)?.ok_or_else(|| {
            StoreError::invalid(
                format!("byte {offset} of {oid}"),
                "it is in a hole (never written)",
            )
        })?;
        let at = 4 + within as usize;
        let byte = value.get_mut(at).ok_or_else(|| {
            StoreError::invalid(format!("byte {offset} of {oid}"), "past its stored chunk")
        })?;
        *byte ^= 0xff;
        let mut batch = Batch::default();
        batch.put(Cf::Data, chunk_key, value);
        self.engine.write(batch)?;
        self.engine.sync()?;
        Ok(format!("engine chunk {index}, byte {within}"))
    }

    fn load_onode(&self, key: &[u8], oid: &ObjectId) -> Result<Option<Onode>, StoreError> {
        match self.engine.get(Cf::Meta, key)? {
            Some(bytes) => Ok(Some(decode_onode(oid, &bytes)?)),
            None => Ok(None),
        }
    }

    fn load_meta(&self, key: &[u8], oid: &ObjectId) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(self.load_onode(key, oid)?.map(|o| o.meta))
    }

    /// A chunk from the block file.
    fn read_extent(
        &self,
        extent: Extent,
        oid: &ObjectId,
        index: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let blocks = self.blocks.as_ref().ok_or_else(|| no_block_file(oid, index))?;
        blocks.read(extent, || format!("chunk {index} of {oid}"))
    }

    /// Reads `[offset, end)` of an object whose record is `onode` into `out`.
    /// Up to `len` bytes from `offset` of the object `onode` describes, and the record
    /// the bytes were read by.
    fn read_onode(
        &self,
        key: &[u8],
        oid: &ObjectId,
        mut onode: Onode,
        offset: u64,
        len: u64,
    ) -> Result<(Onode, Vec<u8>), StoreError> {
        let end = offset.saturating_add(len).min(onode.meta.size);
        if offset >= end {
            return Ok((onode, Vec::new()));
        }
        let mut out = vec![0u8; (end - offset) as usize];
        match self.read_range(key, oid, &onode, offset, &mut out) {
            // A write that raced this read may have replaced the chunk and its old unit
            // been reused: read again what the object is now before calling it corrupt.
            Err(StoreError::Corrupt { .. }) if !onode.extents.is_empty() => {
                onode = self
                    .load_onode(key, oid)?
                    .ok_or_else(|| StoreError::NotFound(oid.to_string()))?;
                let end = offset.saturating_add(len).min(onode.meta.size);
                if offset >= end {
                    return Ok((onode, Vec::new()));
                }
                out = vec![0u8; (end - offset) as usize];
                self.read_range(key, oid, &onode, offset, &mut out)?;
            }
            result => result?,
        }
        Ok((onode, out))
    }

    fn read_range(
        &self,
        key: &[u8],
        oid: &ObjectId,
        onode: &Onode,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), StoreError> {
        let end = offset + out.len() as u64;
        let first = (offset / CHUNK_BYTES) as u32;
        let last = ((end - 1) / CHUNK_BYTES) as u32;
        // Copies what the answer wants of a chunk.
        let copy = |out: &mut [u8], index: u32, data: &[u8]| {
            let chunk_start = u64::from(index) * CHUNK_BYTES;
            let from = offset.max(chunk_start);
            let to = end.min(chunk_start + data.len() as u64);
            if from < to {
                let src = &data[(from - chunk_start) as usize..(to - chunk_start) as usize];
                out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
            }
        };
        let inline = (first..=last).filter(|i| !onode.extents.contains_key(i)).count();
        if inline > 0 && inline <= POINT_READS_MAX {
            // A few chunks: point lookups, which cost far less than setting up an
            // iterator over every memtable and level (a 4 KiB read spent most of its OSD
            // time there).
            for index in (first..=last).filter(|i| !onode.extents.contains_key(i)) {
                if let Some(value) = self.engine.get(Cf::Data, &keys::chunk(key, index))? {
                    let data = keys::decode_chunk(|| format!("chunk {index} of {oid}"), &value)?;
                    copy(out, index, data);
                }
            }
        } else if inline > 0 {
            let start_key = keys::chunk(key, first);
            let end_key = keys::chunk(key, last + 1);
            let entries = self.engine.scan(
                Cf::Data,
                &start_key,
                Some(&end_key),
                (last - first + 1) as usize,
            )?;
            for (chunk_key, value) in entries {
                let index_bytes = &chunk_key[key.len()..];
                let index = u32::from_be_bytes(index_bytes.try_into().map_err(|_| {
                    StoreError::corrupt(format!("data of {oid}"), "a chunk key of the wrong length")
                })?);
                if onode.extents.contains_key(&index) {
                    continue;
                }
                let data = keys::decode_chunk(|| format!("chunk {index} of {oid}"), &value)?;
                copy(out, index, data);
            }
        }
        for (&index, &extent) in onode.extents.range(first..=last) {
            let chunk_start = u64::from(index) * CHUNK_BYTES;
            if chunk_start >= offset && chunk_start + CHUNK_BYTES <= end {
                // Wholly wanted: straight into the answer.
                let at = (chunk_start - offset) as usize;
                let blocks = self.blocks.as_ref().ok_or_else(|| no_block_file(oid, index))?;
                blocks.read_into(extent, &mut out[at..at + CHUNK_BYTES as usize], || {
                    format!("chunk {index} of {oid}")
                })?;
            } else {
                copy(out, index, &self.read_extent(extent, oid, index)?);
            }
        }
        Ok(())
    }
}

fn registry_key(c: CollectionId) -> Vec<u8> {
    let mut key = COLLECTION_REGISTRY.to_vec();
    key.extend_from_slice(&keys::collection(c));
    key
}

fn no_block_file(oid: &ObjectId, index: u32) -> StoreError {
    StoreError::corrupt(
        format!("chunk {index} of {oid}"),
        "is in a block file, and this store has none",
    )
}

/// The block-file units of every object whose metadata key is in `[start, end)`, read a
/// page at a time.
fn units_in<E: Engine>(
    engine: &E,
    start: &[u8],
    end: Option<&[u8]>,
) -> Result<Vec<u64>, StoreError> {
    let mut units = Vec::new();
    let mut from = start.to_vec();
    loop {
        let entries = engine.scan(Cf::Meta, &from, end, SCAN_ENTRIES_MAX)?;
        for (key, value) in &entries {
            let onode = decode_onode(object_display(key), value)?;
            units.extend(onode.extents.values().map(|e| e.unit));
        }
        match entries.last() {
            Some((key, _)) if entries.len() == SCAN_ENTRIES_MAX => {
                from = key.clone();
                from.push(0);
            }
            _ => return Ok(units),
        }
    }
}

/// How an error names the object of a metadata key.
fn object_display(key: &[u8]) -> String {
    keys::parse_object(key).map_or_else(|| "an object".to_owned(), |(_, oid)| oid.to_string())
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
            loaded: HashMap::new(),
            chunks: HashMap::new(),
            adopted: HashMap::new(),
            omaps: HashMap::new(),
            freed: Vec::new(),
            removed: Vec::new(),
            batch: Batch::default(),
        };
        for op in &txn.ops {
            staging.op(op)?;
        }
        let Staged { batch, mut writes, freed, shared } = staging.into_staged()?;
        if batch.is_empty() {
            return Ok(());
        }
        let Some(blocks) = self.blocks.as_ref() else {
            return self.engine.write(batch);
        };
        // The chunks are durable before the batch that references them is even written:
        // the engine may make a batch durable at any moment after that.
        let written = if writes.is_empty() {
            Ok(())
        } else {
            blocks.write(&mut writes).and_then(|()| blocks.sync())
        }
        .and_then(|()| self.engine.write(batch));
        match written {
            Ok(()) => {
                blocks.share(&shared);
                blocks.free_after_sync(freed);
                Ok(())
            }
            Err(e) => {
                blocks.release_now(&writes.iter().map(|(unit, _)| *unit).collect::<Vec<_>>());
                Err(e)
            }
        }
    }

    fn sync(&self) -> Result<(), StoreError> {
        let Some(blocks) = self.blocks.as_ref() else {
            return self.engine.sync();
        };
        // Units freed by batches written before this sync are free once it returns.
        let freed = blocks.take_freed();
        match self.engine.sync() {
            Ok(()) => {
                blocks.release_now(&freed);
                Ok(())
            }
            Err(e) => {
                blocks.free_after_sync(freed);
                Err(e)
            }
        }
    }

    fn stat(&self, c: CollectionId, oid: &ObjectId) -> Result<Option<ObjectMeta>, StoreError> {
        self.load_meta(&keys::object(c, oid), oid)
    }

    fn stat_read(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
        len: u64,
    ) -> Result<Option<(ObjectMeta, Vec<u8>)>, StoreError> {
        let key = keys::object(c, oid);
        let Some(onode) = self.load_onode(&key, oid)? else { return Ok(None) };
        let (onode, bytes) = self.read_onode(&key, oid, onode, offset, len)?;
        Ok(Some((onode.meta, bytes)))
    }

    fn extents(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let key = keys::object(c, oid);
        let onode =
            self.load_onode(&key, oid)?.ok_or_else(|| StoreError::NotFound(oid.to_string()))?;
        let end = offset.saturating_add(len).min(onode.meta.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let chunks = (offset / CHUNK_BYTES) as u32..end.div_ceil(CHUNK_BYTES) as u32;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (index, place) in self.stored_chunks(&key, &onode, chunks)? {
            let start = u64::from(index) * CHUNK_BYTES;
            let held = match place {
                ChunkPlace::Block { .. } => CHUNK_BYTES,
                ChunkPlace::Engine { bytes, .. } => bytes as u64,
            };
            let (from, to) = (start.max(offset), (start + held).min(end));
            if from >= to {
                continue;
            }
            match out.last_mut() {
                Some((at, n)) if *at + *n == from => *n += to - from,
                _ => out.push((from, to - from)),
            }
        }
        Ok(out)
    }

    fn read(
        &self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let key = keys::object(c, oid);
        let onode =
            self.load_onode(&key, oid)?.ok_or_else(|| StoreError::NotFound(oid.to_string()))?;
        Ok(self.read_onode(&key, oid, onode, offset, len)?.1)
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
                Ok((oid.clone(), decode_onode(&oid, &v)?.meta))
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
        self.engine.used_bytes() + self.blocks.as_ref().map_or(0, BlockFile::used_bytes)
    }
}
