//! Object data outside the key-value engine, the way BlueStore keeps it: whole chunks go to
//! a block file at freshly allocated units, and only where they went (and their crc32c) is
//! committed in the engine, in the object's metadata record.
//!
//! Keeping large data in the engine writes every byte twice (its WAL, then the file it is
//! flushed to). Here a chunk is written once, to a unit nothing references, and made durable
//! before the engine batch that points at it: after a crash a committed reference always
//! finds its bytes, and an uncommitted write only leaves a unit that the next start finds
//! free. A unit that a transaction stops referencing is reused only once that transaction
//! is durable, so a crash can never bring back a reference to overwritten bytes.
//!
//! The allocation map is not stored: at open the store rebuilds it from the metadata
//! records, which are the only references. A unit may be referenced by several records
//! (a clone shares the chunks it did not change with the object it was cloned from); it is
//! counted per reference and freed when the last one goes.
//!
//! Writes bypass the page cache (O_DIRECT, where the filesystem has it): on this machine,
//! copying 4 MiB writes into the page cache and the inode lock buffered writes hold took
//! 40% of an OSD's CPU. Each run of up to `RUN_UNITS` adjacent units is copied into an
//! aligned buffer and written with one call. Reads go through the page cache.
//!
//! The file is grown ahead of the writes, `GROW_BYTES` at a time with fallocate. ext4 lets
//! direct writes into allocated space share the inode lock, so writes of different PGs can
//! run in parallel; a direct write that extends the file or fills a hole takes the lock
//! exclusively. (perf had shown the lock's slow path under 4 MiB writes; throughput did not
//! change measurably, as the disk itself was the limit: bench/RESULTS.md.) The space
//! allocated ahead is not counted as used: usage is the units in use.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::types::CHUNK_BYTES;

/// The allocation unit: one data chunk.
pub const UNIT_BYTES: u64 = CHUNK_BYTES;
/// Units written with one call at most (4 MiB, one whole 4 MiB object): the size of each
/// aligned buffer.
const RUN_UNITS: usize = 64;
/// Aligned buffers kept for reuse.
const BUFFERS_KEPT: usize = 4;
/// O_DIRECT wants memory, offsets and lengths aligned to the logical block size.
const DIRECT_ALIGN: usize = 4096;
/// How much the file grows by when a write reaches its end.
const GROW_BYTES: u64 = 256 << 20;

/// Where a whole chunk lives in the block file, and its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// Unit index: the chunk is at byte `unit * UNIT_BYTES`, `UNIT_BYTES` long.
    pub unit: u64,
    pub crc: u32,
}

/// Free units, as ranges, and the file's end.
#[derive(Debug, Default)]
struct Allocator {
    /// Start unit → number of free units from there; ranges never touch.
    free: BTreeMap<u64, u64>,
    /// Units the file spans; units past it are free and grow the file when used.
    end: u64,
    /// Units referenced or allocated.
    used: u64,
    /// References beyond the first, for units that several objects share (a clone and
    /// the object it was cloned from); a unit is free only when its last one goes.
    extra: HashMap<u64, u32>,
}

impl Allocator {
    /// A map where `used` units (sorted, distinct) are taken and every other unit below the
    /// highest one is free.
    fn from_used(used: &[u64]) -> Allocator {
        let mut alloc = Allocator::default();
        let mut next = 0;
        for &unit in used {
            if unit > next {
                alloc.free.insert(next, unit - next);
            }
            next = unit + 1;
        }
        alloc.end = next;
        alloc.used = used.len() as u64;
        alloc
    }

    /// `n` units, contiguous if a free range allows, else from the lowest free ranges, and
    /// past the end when the free ranges are not enough.
    fn allocate(&mut self, n: u64) -> Vec<u64> {
        let mut out = Vec::with_capacity(n as usize);
        let fit = self.free.iter().find(|&(_, &len)| len >= n).map(|(&start, &len)| (start, len));
        if let Some((start, len)) = fit {
            self.free.remove(&start);
            if len > n {
                self.free.insert(start + n, len - n);
            }
            out.extend(start..start + n);
        } else {
            while (out.len() as u64) < n {
                let Some((&start, &len)) = self.free.iter().next() else { break };
                self.free.remove(&start);
                let take = len.min(n - out.len() as u64);
                if len > take {
                    self.free.insert(start + take, len - take);
                }
                out.extend(start..start + take);
            }
            let rest = n - out.len() as u64;
            out.extend(self.end..self.end + rest);
            self.end += rest;
        }
        self.used += n;
        out
    }

    /// Returns units to the free ranges, merging neighbours.
    fn release(&mut self, units: &[u64]) {
        for &unit in units {
            let mut start = unit;
            let mut len = 1;
            if let Some((&before, &before_len)) = self.free.range(..unit).next_back() {
                debug_assert!(before + before_len <= unit, "unit {unit} freed twice");
                if before + before_len == unit {
                    self.free.remove(&before);
                    start = before;
                    len += before_len;
                }
            }
            if let Some(after_len) = self.free.remove(&(unit + 1)) {
                len += after_len;
            }
            self.free.insert(start, len);
            self.used -= 1;
        }
    }
}

/// The block file with its allocator, its group fdatasync, and the units waiting for the
/// transactions that freed them to become durable.
pub struct BlockFile {
    /// Reads and fdatasync.
    file: File,
    /// Writes: the same file opened O_DIRECT, or buffered where the filesystem refuses it.
    writer: File,
    direct: bool,
    /// The file's length: space allocated ahead of the units in use.
    size: Mutex<u64>,
    buffers: Mutex<Vec<AlignedBuf>>,
    alloc: Mutex<Allocator>,
    /// Writes made (counted), and how many of them are known durable (the lock is held
    /// across an fdatasync, so concurrent callers share one).
    written: AtomicU64,
    synced: Mutex<u64>,
    /// Units freed by batches already written to the engine, not yet known durable.
    freed: Mutex<Vec<u64>>,
}

fn io(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("block file: {what}: {e}"))
}

impl BlockFile {
    /// Opens (or creates) the block file. Every unit counts as free until `mark_used`.
    pub fn open(path: &Path) -> Result<BlockFile, StoreError> {
        let open = |direct: bool| {
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            if direct {
                options.custom_flags(libc::O_DIRECT);
            }
            options.open(path)
        };
        let file = open(false).map_err(|e| io(&format!("open {}", path.display()), e))?;
        let (writer, direct) = match open(true) {
            Ok(writer) => (writer, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let writer = open(false).map_err(|e| io(&format!("open {}", path.display()), e))?;
                (writer, false)
            }
            Err(e) => return Err(io(&format!("open {} for direct I/O", path.display()), e)),
        };
        let size = file.metadata().map_err(|e| io(&format!("stat {}", path.display()), e))?.len();
        Ok(BlockFile {
            file,
            writer,
            direct,
            size: Mutex::new(size),
            buffers: Mutex::new(Vec::new()),
            alloc: Mutex::new(Allocator::default()),
            written: AtomicU64::new(0),
            synced: Mutex::new(0),
            freed: Mutex::new(Vec::new()),
        })
    }

    /// Sets the allocation map from every unit the store references, once per reference.
    pub(crate) fn mark_used(&self, mut used: Vec<u64>) -> Result<(), StoreError> {
        used.sort_unstable();
        let mut extra = HashMap::new();
        used.dedup_by(|a, b| {
            let same = a == b;
            if same {
                *extra.entry(*b).or_insert(0) += 1;
            }
            same
        });
        let mut alloc = Allocator::from_used(&used);
        alloc.extra = extra;
        *self.lock_alloc()? = alloc;
        Ok(())
    }

    fn lock_alloc(&self) -> Result<std::sync::MutexGuard<'_, Allocator>, StoreError> {
        self.alloc.lock().map_err(|_| StoreError::Io("block allocator lock poisoned".into()))
    }

    pub(crate) fn allocate(&self, n: u64) -> Result<Vec<u64>, StoreError> {
        Ok(self.lock_alloc()?.allocate(n))
    }

    /// Returns units that nothing references and nothing committed ever did.
    pub(crate) fn release_now(&self, units: &[u64]) {
        if let Ok(mut alloc) = self.lock_alloc() {
            alloc.release(units);
        }
    }

    /// Units a written batch references once more (it cloned an object that had them).
    pub(crate) fn share(&self, units: &[u64]) {
        if let Ok(mut alloc) = self.lock_alloc() {
            for &unit in units {
                *alloc.extra.entry(unit).or_insert(0) += 1;
            }
        }
    }

    /// Units a written batch stopped referencing once each (call after `share` for the
    /// same batch): a unit whose last reference went is free once the batch is durable.
    pub(crate) fn free_after_sync(&self, units: Vec<u64>) {
        let last: Vec<u64> = match self.lock_alloc() {
            Ok(mut alloc) => units
                .into_iter()
                .filter(|unit| match alloc.extra.get_mut(unit) {
                    Some(n) => {
                        *n -= 1;
                        if *n == 0 {
                            alloc.extra.remove(unit);
                        }
                        false
                    }
                    None => true,
                })
                .collect(),
            Err(_) => return,
        };
        if let Ok(mut freed) = self.freed.lock() {
            freed.extend(last);
        }
    }

    /// How many references a unit has beyond the first (for tests and inspection).
    pub fn shared_references(&self) -> u64 {
        self.lock_alloc().map_or(0, |a| a.extra.values().map(|&n| u64::from(n)).sum())
    }

    /// The units freed by batches written so far (called just before the engine syncs).
    pub(crate) fn take_freed(&self) -> Vec<u64> {
        self.freed.lock().map(|mut f| std::mem::take(&mut *f)).unwrap_or_default()
    }

    /// Writes whole chunks at their units (not durable before `sync`), a run of adjacent
    /// units with one call.
    pub(crate) fn write(&self, chunks: &mut [(u64, bytes::Bytes)]) -> Result<(), StoreError> {
        chunks.sort_unstable_by_key(|(unit, _)| *unit);
        if let Some((last, _)) = chunks.last() {
            self.reserve((last + 1) * UNIT_BYTES)?;
        }
        let mut buffer = self.buffer();
        let mut rest = &chunks[..];
        while let Some(&(first, _)) = rest.first() {
            let run = rest
                .iter()
                .enumerate()
                .take(RUN_UNITS)
                .take_while(|(i, (unit, _))| *unit == first + *i as u64)
                .count();
            let bytes = buffer.fill(rest[..run].iter().map(|(_, data)| &data[..]));
            self.writer
                .write_all_at(bytes, first * UNIT_BYTES)
                .map_err(|e| io(&format!("write units {first}..{}", first + run as u64), e))?;
            rest = &rest[run..];
        }
        if let Ok(mut kept) = self.buffers.lock()
            && kept.len() < BUFFERS_KEPT
        {
            kept.push(buffer);
        }
        self.written.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Grows the file, with allocated space, to at least `end` bytes.
    fn reserve(&self, end: u64) -> Result<(), StoreError> {
        let mut size =
            self.size.lock().map_err(|_| StoreError::Io("block size lock poisoned".into()))?;
        if end <= *size {
            return Ok(());
        }
        let allocate = |to: u64| -> std::io::Result<()> {
            let (offset, len) = (*size as libc::off_t, (to - *size) as libc::off_t);
            // SAFETY: fallocate on a file descriptor this struct owns; no memory is shared.
            let done = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, offset, len) };
            if done == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        };
        let ahead = end.div_ceil(GROW_BYTES) * GROW_BYTES;
        match allocate(ahead) {
            Ok(()) => *size = ahead,
            // A filesystem without fallocate: writes extend the file themselves.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => *size = end,
            // Not room for the step: exactly what this write needs, or a clear error.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                allocate(end).map_err(|e| io(&format!("allocate up to byte {end}"), e))?;
                *size = end;
            }
            Err(e) => return Err(io(&format!("allocate up to byte {ahead}"), e)),
        }
        Ok(())
    }

    fn buffer(&self) -> AlignedBuf {
        self.buffers.lock().ok().and_then(|mut kept| kept.pop()).unwrap_or_else(AlignedBuf::new)
    }

    /// Whether writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Makes every `write` so far durable; concurrent callers share one fdatasync.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let target = self.written.load(Ordering::Acquire);
        let mut synced =
            self.synced.lock().map_err(|_| StoreError::Io("block sync lock poisoned".into()))?;
        if *synced >= target {
            return Ok(());
        }
        let covered = self.written.load(Ordering::Acquire);
        self.file.sync_data().map_err(|e| io("fdatasync", e))?;
        *synced = covered;
        Ok(())
    }

    /// Flips every bit of the byte at `offset`, durably (`store::corrupt_byte`).
    pub(crate) fn flip_byte(&self, offset: u64) -> Result<(), StoreError> {
        let mut byte = [0u8];
        self.file
            .read_exact_at(&mut byte, offset)
            .map_err(|e| io(&format!("read byte {offset}"), e))?;
        byte[0] ^= 0xff;
        self.file
            .write_all_at(&byte, offset)
            .map_err(|e| io(&format!("write byte {offset}"), e))?;
        self.file.sync_data().map_err(|e| io("fdatasync", e))
    }

    /// Reads a chunk and checks it against its crc32c; a mismatch is `Corrupt`.
    pub(crate) fn read(
        &self,
        extent: Extent,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<u8>, StoreError> {
        let mut data = vec![0u8; UNIT_BYTES as usize];
        self.read_into(extent, &mut data, what)?;
        Ok(data)
    }

    /// `read` into a buffer of `UNIT_BYTES`.
    pub(crate) fn read_into(
        &self,
        extent: Extent,
        data: &mut [u8],
        what: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        debug_assert_eq!(data.len() as u64, UNIT_BYTES);
        self.file
            .read_exact_at(data, extent.unit * UNIT_BYTES)
            .map_err(|e| io(&format!("read unit {}", extent.unit), e))?;
        let actual = crc32c::crc32c(data);
        if actual != extent.crc {
            return Err(StoreError::corrupt(
                what(),
                format!(
                    "crc32c {actual:08x}, stored {:08x} (block unit {})",
                    extent.crc, extent.unit
                ),
            ));
        }
        Ok(())
    }

    /// Bytes of units in use.
    pub fn used_bytes(&self) -> u64 {
        self.lock_alloc().map(|a| a.used * UNIT_BYTES).unwrap_or(0)
    }

    /// Units in use and units the file spans (for tests and `osd df`).
    pub fn units(&self) -> (u64, u64) {
        self.lock_alloc().map(|a| (a.used, a.end)).unwrap_or((0, 0))
    }
}

/// A buffer of `RUN_UNITS` units at an address aligned for O_DIRECT: a plain vector with
/// room to start at the first aligned byte.
struct AlignedBuf {
    bytes: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    fn new() -> AlignedBuf {
        let bytes = vec![0u8; RUN_UNITS * UNIT_BYTES as usize + DIRECT_ALIGN];
        let start = bytes.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf { bytes, start }
    }

    /// Copies the chunks in (whole units each, at most `RUN_UNITS`) and returns them as one
    /// aligned slice.
    fn fill<'a>(&mut self, chunks: impl Iterator<Item = &'a [u8]>) -> &[u8] {
        let mut at = self.start;
        for chunk in chunks {
            debug_assert_eq!(chunk.len() as u64, UNIT_BYTES);
            self.bytes[at..at + chunk.len()].copy_from_slice(chunk);
            at += chunk.len();
        }
        &self.bytes[self.start..at]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_prefers_one_contiguous_run_and_merges_what_is_freed() {
        let mut alloc = Allocator::from_used(&[0, 2, 3, 7]);
        assert_eq!(alloc.end, 8);
        assert_eq!(alloc.free, BTreeMap::from([(1, 1), (4, 3)]));
        // A run of 3 fits at 4.
        assert_eq!(alloc.allocate(3), vec![4, 5, 6]);
        // Nothing contiguous for 2: the lone free unit, then the end.
        assert_eq!(alloc.allocate(2), vec![1, 8]);
        assert_eq!(alloc.end, 9);
        assert_eq!(alloc.used, 9);
        alloc.release(&[5, 4, 6]);
        assert_eq!(alloc.free, BTreeMap::from([(4, 3)]));
        alloc.release(&[3, 7]);
        assert_eq!(alloc.free, BTreeMap::from([(3, 5)]));
        assert_eq!(alloc.used, 4);
    }

    #[test]
    fn a_chunk_reads_back_and_a_flipped_bit_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = BlockFile::open(&dir.path().join("block")).unwrap();
        let data: Vec<u8> = (0..UNIT_BYTES).map(|i| (i % 253) as u8).collect();
        let unit = blocks.allocate(1).unwrap()[0];
        blocks.write(&mut [(unit, bytes::Bytes::from(data.clone()))]).unwrap();
        let extent = Extent { unit, crc: crc32c::crc32c(&data) };
        blocks.sync().unwrap();
        assert!(blocks.read(extent, || "c".into()).unwrap() == data);
        let mut byte = [0u8];
        blocks.file.read_exact_at(&mut byte, 77).unwrap();
        blocks.file.write_all_at(&[byte[0] ^ 0x10], 77).unwrap();
        let error = blocks.read(extent, || "c".into()).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn the_file_grows_ahead_of_writes_with_allocated_space() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("block");
        let blocks = BlockFile::open(&path).unwrap();
        let units = GROW_BYTES / UNIT_BYTES;
        // A run of 70 units straddling the first step: one write, in two calls.
        let first = units - 3;
        let mut chunks: Vec<(u64, bytes::Bytes)> = (first..first + 70)
            .map(|u| (u, bytes::Bytes::from(vec![(u % 251) as u8; UNIT_BYTES as usize])))
            .collect();
        blocks.write(&mut chunks).unwrap();
        blocks.sync().unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 2 * GROW_BYTES);
        // Allocated, not sparse (where the filesystem has fallocate, as ext4 and tmpfs do).
        assert!(meta.blocks() * 512 >= 2 * GROW_BYTES, "{} bytes allocated", meta.blocks() * 512);
        for (unit, data) in &chunks {
            let extent = Extent { unit: *unit, crc: crc32c::crc32c(data) };
            assert!(blocks.read(extent, || "c".into()).unwrap() == data[..]);
        }
        // Reopened, the length is where the file was grown to.
        drop(blocks);
        let reopened = BlockFile::open(&path).unwrap();
        assert_eq!(*reopened.size.lock().unwrap(), 2 * GROW_BYTES);
    }
}
