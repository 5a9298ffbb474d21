//! A transaction on its way into one engine batch: object metadata and chunks staged in
//! an overlay, so that later ops in the transaction see what earlier ones did, each op
//! checked against the limits, and the whole turned into a batch, the block writes it
//! needs and the block units it frees. Nothing reaches the engine if any op fails.

use std::collections::HashSet;

use super::*;

/// What an object was in the engine before the transaction.
#[derive(Default)]
pub(super) struct Loaded {
    pub(super) extents: BTreeMap<u32, Extent>,
    pub(super) size: u64,
    pub(super) existed: bool,
}

/// What an object's omap is after the ops of a transaction so far.
#[derive(Clone)]
pub(super) enum Omap {
    Empty,
    /// As the object of this key has it committed.
    Committed(Vec<u8>),
    /// Changed by ops whose result is only in the batch.
    Changed,
}

/// The changes of one transaction before they become a batch.
pub(super) struct Staging<'a, E: Engine> {
    pub(super) store: &'a KvObjectStore<E>,
    /// Object key → its metadata after the ops so far (`None`: removed).
    pub(super) metas: HashMap<Vec<u8>, Option<ObjectMeta>>,
    /// Object key → what it was in the engine, recorded when its metadata is first loaded.
    pub(super) loaded: HashMap<Vec<u8>, Loaded>,
    /// Object key → chunk index → its bytes after the ops so far (`None`: absent, reads as
    /// zeros). A chunk not staged is as it was in the engine.
    pub(super) chunks: HashMap<Vec<u8>, BTreeMap<u32, Option<Bytes>>>,
    /// Object key → the extents it took from the object it was cloned from, which replace
    /// what it had in the engine; its chunks not in them are all staged.
    pub(super) adopted: HashMap<Vec<u8>, BTreeMap<u32, Extent>>,
    /// Object key → what its omap is after the ops so far, for objects an op changed the
    /// omap of (the changes are in the batch, not readable yet).
    pub(super) omaps: HashMap<Vec<u8>, Omap>,
    /// Units of objects in removed collections.
    pub(super) freed: Vec<u64>,
    /// Collections removed by an earlier op: their objects are gone, whatever the engine
    /// still says.
    pub(super) removed: Vec<[u8; keys::COLLECTION_KEY_BYTES]>,
    /// Changes that need no staging, in op order.
    pub(super) batch: Batch,
}

/// A transaction turned into writes: block-file chunks to write first, then the batch.
pub(super) struct Staged {
    pub(super) batch: Batch,
    /// (unit, bytes) to write to the block file before the batch.
    pub(super) writes: Vec<(u64, Bytes)>,
    /// Units the batch stops referencing, once per reference.
    pub(super) freed: Vec<u64>,
    /// Units the batch references once more than before (shared by a clone).
    pub(super) shared: Vec<u64>,
}

impl<'a, E: Engine> Staging<'a, E> {
    pub(super) fn meta(
        &mut self,
        key: &[u8],
        oid: &ObjectId,
    ) -> Result<Option<ObjectMeta>, StoreError> {
        if let Some(meta) = self.metas.get(key) {
            return Ok(meta.clone());
        }
        let gone = self.removed.iter().any(|prefix| key.starts_with(prefix));
        let onode = if gone { None } else { self.store.load_onode(key, oid)? };
        let loaded = onode
            .as_ref()
            .map(|o| Loaded { extents: o.extents.clone(), size: o.meta.size, existed: true })
            .unwrap_or_default();
        self.loaded.insert(key.to_vec(), loaded);
        let meta = onode.map(|o| o.meta);
        self.metas.insert(key.to_vec(), meta.clone());
        Ok(meta)
    }

    pub(super) fn stage_chunk(&mut self, key: &[u8], index: u32, bytes: Option<Bytes>) {
        self.chunks.entry(key.to_vec()).or_default().insert(index, bytes);
    }

    /// The chunk's bytes after the ops so far (metadata of the object must be loaded).
    pub(super) fn chunk(
        &mut self,
        key: &[u8],
        oid: &ObjectId,
        index: u32,
    ) -> Result<Vec<u8>, StoreError> {
        if let Some(chunk) = self.chunks.get(key).and_then(|c| c.get(&index)) {
            return Ok(chunk.as_deref().map(<[u8]>::to_vec).unwrap_or_default());
        }
        if let Some(adopted) = self.adopted.get(key) {
            return match adopted.get(&index) {
                Some(&extent) => self.store.read_extent(extent, oid, index),
                None => Ok(Vec::new()),
            };
        }
        let loaded = self.loaded.get(key);
        if let Some(&extent) = loaded.and_then(|l| l.extents.get(&index)) {
            return self.store.read_extent(extent, oid, index);
        }
        // Past the object's end as it was, the engine holds nothing (truncates drop chunks).
        if loaded.is_none_or(|l| u64::from(index) >= l.size.div_ceil(CHUNK_BYTES)) {
            return Ok(Vec::new());
        }
        match self.store.engine.get(Cf::Data, &keys::chunk(key, index))? {
            Some(value) => {
                let data = keys::decode_chunk(|| format!("chunk {index} of {oid}"), &value)?;
                Ok(data.to_vec())
            }
            None => Ok(Vec::new()),
        }
    }

    pub(super) fn exists(&mut self, key: &[u8], oid: &ObjectId) -> Result<ObjectMeta, StoreError> {
        self.meta(key, oid)?.ok_or_else(|| StoreError::NotFound(oid.to_string()))
    }

    pub(super) fn write(
        &mut self,
        c: CollectionId,
        oid: &ObjectId,
        offset: u64,
        data: &Bytes,
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
            let source = data.slice((at - offset) as usize..(at - offset) as usize + take);
            let bytes = if within == 0 && take as u64 == CHUNK_BYTES {
                source
            } else {
                let mut bytes = self.chunk(&key, oid, index)?;
                // Bytes past the old end of the object are stale if it was truncated
                // inside this chunk; they were dropped then, so only zero-fill here.
                if bytes.len() < within + take {
                    bytes.resize(within + take, 0);
                }
                bytes[within..within + take].copy_from_slice(&source);
                Bytes::from(bytes)
            };
            self.stage_chunk(&key, index, Some(bytes));
            at += take as u64;
        }
        meta.size = meta.size.max(end);
        self.metas.insert(key, Some(meta));
        Ok(())
    }

    /// Drops data at and past `size` (shrinking), and sets the size.
    pub(super) fn truncate(
        &mut self,
        c: CollectionId,
        oid: &ObjectId,
        size: u64,
    ) -> Result<(), StoreError> {
        if size > OBJECT_BYTES_MAX {
            return Err(too_large(oid, size, 0));
        }
        let key = keys::object(c, oid);
        let mut meta = self.exists(&key, oid)?;
        if size < meta.size {
            let first_dropped = size.div_ceil(CHUNK_BYTES);
            let last = meta.size.div_ceil(CHUNK_BYTES);
            for index in first_dropped..last {
                self.stage_chunk(&key, index as u32, None);
            }
            if !size.is_multiple_of(CHUNK_BYTES) {
                let index = (size / CHUNK_BYTES) as u32;
                let mut bytes = self.chunk(&key, oid, index)?;
                bytes.truncate((size % CHUNK_BYTES) as usize);
                self.stage_chunk(&key, index, Some(Bytes::from(bytes)));
            }
        }
        meta.size = size;
        self.metas.insert(key, Some(meta));
        Ok(())
    }

    pub(super) fn zero(
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
            if within == 0 && take as u64 == CHUNK_BYTES {
                self.stage_chunk(&key, index, None);
            } else {
                let mut bytes = self.chunk(&key, oid, index)?;
                let stop = (within + take).min(bytes.len());
                if within < stop {
                    bytes[within..stop].fill(0);
                }
                self.stage_chunk(&key, index, Some(Bytes::from(bytes)));
            }
            at += take as u64;
        }
        Ok(())
    }

    pub(super) fn remove(&mut self, c: CollectionId, oid: &ObjectId) -> Result<(), StoreError> {
        let key = keys::object(c, oid);
        let Some(meta) = self.meta(&key, oid)? else {
            return Ok(());
        };
        for index in 0..meta.size.div_ceil(CHUNK_BYTES) {
            self.stage_chunk(&key, index as u32, None);
        }
        self.omap_clear(&key);
        self.metas.insert(key, None);
        Ok(())
    }

    pub(super) fn omap_clear(&mut self, object_key: &[u8]) {
        self.omaps.insert(object_key.to_vec(), Omap::Empty);
        if let Some(end) = keys::prefix_end(object_key) {
            self.batch.delete_range(Cf::Omap, object_key.to_vec(), end);
        }
    }

    pub(super) fn update_meta(
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

    pub(super) fn op(&mut self, op: &TxOp) -> Result<(), StoreError> {
        match op {
            TxOp::CreateCollection(c) => self.batch.put(Cf::Osd, registry_key(*c), vec![]),
            TxOp::RemoveCollection(c) => self.remove_collection(*c)?,
            TxOp::Create { c, oid, exclusive } => self.create(*c, oid, *exclusive)?,
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
            TxOp::Clone { c, from, to } => self.clone_object(*c, from, to)?,
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
                let key = self.existing(*c, oid)?;
                self.omaps.insert(key.clone(), Omap::Changed);
                for (k, v) in entries {
                    check_omap_key(oid, k)?;
                    self.batch.put(Cf::Omap, keys::omap(&key, k), v.clone());
                }
            }
            TxOp::OmapRemove { c, oid, keys: user_keys } => {
                let key = self.existing(*c, oid)?;
                self.omaps.insert(key.clone(), Omap::Changed);
                for k in user_keys {
                    check_omap_key(oid, k)?;
                    self.batch.delete(Cf::Omap, keys::omap(&key, k));
                }
            }
            TxOp::OmapRemoveRange { c, oid, start, end } => {
                let key = self.existing(*c, oid)?;
                self.omaps.insert(key.clone(), Omap::Changed);
                if start < end {
                    self.batch.delete_range(
                        Cf::Omap,
                        keys::omap(&key, start),
                        keys::omap(&key, end),
                    );
                }
            }
            TxOp::OmapClear { c, oid } => {
                let key = self.existing(*c, oid)?;
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

    /// Deletes a collection's keys in every key space, and forgets what this transaction
    /// staged for it; its block-file units are freed once the batch commits.
    fn remove_collection(&mut self, c: CollectionId) -> Result<(), StoreError> {
        let prefix = keys::collection(c);
        let end = keys::prefix_end(&prefix).expect("collection keys end");
        for cf in [Cf::Meta, Cf::Data, Cf::Omap, Cf::Pg] {
            self.batch.delete_range(cf, prefix.to_vec(), end.clone());
        }
        self.batch.delete(Cf::Osd, registry_key(c));
        let doomed = |k: &Vec<u8>| k.starts_with(&prefix);
        self.metas.retain(|k, _| !doomed(k));
        self.loaded.retain(|k, _| !doomed(k));
        self.chunks.retain(|k, _| !doomed(k));
        self.adopted.retain(|k, _| !doomed(k));
        self.omaps.retain(|k, _| !doomed(k));
        if self.store.blocks.is_some() {
            self.freed.extend(units_in(&self.store.engine, &prefix, Some(&end))?);
        }
        self.removed.push(prefix);
        Ok(())
    }

    /// Creates an empty object; `exclusive`: refuse one that exists.
    fn create(
        &mut self,
        c: CollectionId,
        oid: &ObjectId,
        exclusive: bool,
    ) -> Result<(), StoreError> {
        oid.validate()?;
        let key = keys::object(c, oid);
        match self.meta(&key, oid)? {
            Some(_) if exclusive => Err(StoreError::AlreadyExists(oid.to_string())),
            Some(_) => Ok(()),
            None => {
                self.metas.insert(key, Some(ObjectMeta::default()));
                Ok(())
            }
        }
    }

    /// `to` becomes a copy of `from`: unchanged whole chunks are shared (adopted), chunks
    /// staged or in the engine are staged for `to`, the omap is copied, and whatever `to`
    /// held in the engine goes.
    fn clone_object(
        &mut self,
        c: CollectionId,
        from: &ObjectId,
        to: &ObjectId,
    ) -> Result<(), StoreError> {
        from.validate()?;
        to.validate()?;
        if from == to {
            return Err(StoreError::invalid(format!("clone of {from}"), "onto itself"));
        }
        let (from_key, to_key) = (keys::object(c, from), keys::object(c, to));
        let meta = self.exists(&from_key, from)?;
        let gone = self.removed.iter().any(|prefix| from_key.starts_with(prefix));
        let omap = match self.omaps.get(&from_key) {
            Some(omap) => omap.clone(),
            None if gone => Omap::Empty,
            None => Omap::Committed(from_key.clone()),
        };
        let omap_entries = match &omap {
            Omap::Empty => Vec::new(),
            Omap::Committed(key) => omap_of(&self.store.engine, key)?,
            Omap::Changed => {
                return Err(StoreError::invalid(
                    format!("clone of {from}"),
                    "after a change to its omap in the same transaction",
                ));
            }
        };
        self.meta(&to_key, to)?;
        let end = keys::prefix_end(&to_key);
        if let Some(end) = end.filter(|_| self.loaded.get(&to_key).is_some_and(|l| l.existed)) {
            self.batch.delete_range(Cf::Data, to_key.clone(), end);
        }
        self.omap_clear(&to_key);
        let staged = self.chunks.get(&from_key).cloned().unwrap_or_default();
        let mut adopted = BTreeMap::new();
        let mut chunks = BTreeMap::new();
        for index in 0..meta.size.div_ceil(CHUNK_BYTES) as u32 {
            if let Some(bytes) = staged.get(&index) {
                chunks.insert(index, bytes.clone());
                continue;
            }
            let extent = match self.adopted.get(&from_key) {
                Some(adopted) => adopted.get(&index),
                None => self.loaded.get(&from_key).and_then(|l| l.extents.get(&index)),
            };
            if let Some(&extent) = extent {
                adopted.insert(index, extent);
                continue;
            }
            let bytes = self.chunk(&from_key, from, index)?;
            if !bytes.is_empty() {
                chunks.insert(index, Some(Bytes::from(bytes)));
            }
        }
        for (k, v) in omap_entries {
            self.batch.put(Cf::Omap, keys::omap(&to_key, &k), v);
        }
        self.omaps.insert(to_key.clone(), omap);
        self.chunks.insert(to_key.clone(), chunks);
        self.adopted.insert(to_key.clone(), adopted);
        self.metas.insert(to_key, Some(meta));
        Ok(())
    }

    /// The key of an object that must exist (for its omap).
    fn existing(&mut self, c: CollectionId, oid: &ObjectId) -> Result<Vec<u8>, StoreError> {
        let key = keys::object(c, oid);
        self.exists(&key, oid)?;
        Ok(key)
    }

    /// The batch, with whole chunks moved to freshly allocated block-file units when the
    /// store has a block file. Allocates the units; the caller writes them or releases them.
    pub(super) fn into_staged(mut self) -> Result<Staged, StoreError> {
        let blocks = self.store.blocks.as_ref();
        let whole = |bytes: &Option<Bytes>| {
            blocks.is_some() && bytes.as_ref().is_some_and(|b| b.len() as u64 == CHUNK_BYTES)
        };
        let wanted = self.chunks.values().flat_map(|c| c.values()).filter(|b| whole(b)).count();
        let mut units = match blocks {
            Some(blocks) if wanted > 0 => blocks.allocate(wanted as u64)?.into_iter(),
            _ => Vec::new().into_iter(),
        };
        let mut writes = Vec::with_capacity(wanted);
        let mut freed = std::mem::take(&mut self.freed);
        let mut shared = Vec::new();
        let mut batch = std::mem::take(&mut self.batch);
        for (key, meta) in self.metas {
            let loaded = self.loaded.remove(&key).unwrap_or_default();
            let loaded_chunks = loaded.size.div_ceil(CHUNK_BYTES);
            let adopted = self.adopted.remove(&key);
            let mut extents = adopted.clone().unwrap_or_else(|| loaded.extents.clone());
            for (index, bytes) in self.chunks.remove(&key).unwrap_or_default() {
                let was_extent = extents.remove(&index).is_some();
                let maybe_inline = !was_extent && u64::from(index) < loaded_chunks;
                let chunk_key = keys::chunk(&key, index);
                if whole(&bytes) {
                    let bytes = bytes.expect("a whole chunk has bytes");
                    let unit = units.next().expect("a unit was allocated for every whole chunk");
                    extents.insert(index, Extent { unit, crc: crc32c::crc32c(&bytes) });
                    writes.push((unit, bytes));
                    if maybe_inline {
                        batch.delete(Cf::Data, chunk_key);
                    }
                    continue;
                }
                match bytes {
                    Some(bytes) if !bytes.is_empty() => {
                        batch.put(Cf::Data, chunk_key, keys::encode_chunk(&bytes))
                    }
                    _ => batch.delete(Cf::Data, chunk_key),
                }
            }
            let extents = if meta.is_some() { extents } else { BTreeMap::new() };
            // Each unit is referenced at most once by one object.
            let before: HashSet<u64> = loaded.extents.values().map(|e| e.unit).collect();
            let after: HashSet<u64> = extents.values().map(|e| e.unit).collect();
            freed.extend(before.difference(&after));
            if let Some(adopted) = adopted {
                shared.extend(
                    adopted
                        .values()
                        .map(|e| e.unit)
                        .filter(|u| after.contains(u) && !before.contains(u)),
                );
            }
            match meta {
                Some(meta) => batch.put(Cf::Meta, key, encode_onode(&Onode { meta, extents })),
                None => batch.delete(Cf::Meta, key),
            }
        }
        if let Some(blocks) = blocks {
            // Units counted for chunks of objects the transaction did not keep.
            blocks.release_now(&units.collect::<Vec<_>>());
        }
        Ok(Staged { batch, writes, freed, shared })
    }
}

/// An object's omap as committed, read a page at a time.
fn omap_of<E: Engine>(engine: &E, object_key: &[u8]) -> Result<Entries, StoreError> {
    let Some(end) = keys::prefix_end(object_key) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut from = object_key.to_vec();
    loop {
        let page = engine.scan(Cf::Omap, &from, Some(&end), SCAN_ENTRIES_MAX)?;
        let done = page.len() < SCAN_ENTRIES_MAX;
        if let Some((last, _)) = page.last() {
            from = last.clone();
            from.push(0);
        }
        out.extend(page.into_iter().map(|(k, v)| (k[object_key.len()..].to_vec(), v)));
        if done {
            return Ok(out);
        }
    }
}
