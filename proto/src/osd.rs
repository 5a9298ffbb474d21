//! What clients say to OSDs, and OSDs to each other, about objects and PGs.
//!
//! A client sends `ObjectOps` to the PG's primary: ops on one object, executed atomically,
//! with write data concatenated in the frame's bulk payload in op order and read data
//! coming back the same way. Between OSDs, `Peer` carries replication (`RepOp`), peering
//! (`Query`, `GetLog`, `Activate`) and recovery (`Push`, `Pull`, `Scan`).

use std::collections::BTreeMap;

use placement::{Epoch, PgId, Version};
use serde::{Deserialize, Serialize};

use crate::reqid::RequestId;

/// Ops in one compound request at most.
pub const OPS_PER_REQUEST_MAX: usize = 64;
/// Bulk bytes (write data, read data, a pushed object) in one OSD frame at most.
pub const OSD_BULK_BYTES_MAX: usize = 132 << 20;
/// Objects one listing page returns at most.
pub const LIST_PAGE_MAX: u32 = 1024;
/// Log entries one `GetLog` answer carries at most.
pub const LOG_PAGE_MAX: usize = 4096;

/// An object as clients name it within a pool.
/// Settings an OSD takes from the monitors at runtime (with each beacon's answer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsdConfig {
    /// Objects an OSD recovers at once, over all its PGs (Ceph's `osd_recovery_max_active`).
    pub recovery_max_active: u32,
    /// Backfill pushes an OSD makes at once, over all its PGs (like `osd_max_backfills`).
    pub backfill_max_active: u32,
    /// The fill levels, in percent of an OSD's space (`OsdStat::used_percent`).
    pub ratios: FullRatios,
    /// OSDs at or above the full level, as the monitors last heard: a primary refuses
    /// writes that would land on one.
    pub full_osds: Vec<u32>,
    /// OSDs at or above the backfillfull level: backfill does not move data onto them.
    pub backfillfull_osds: Vec<u32>,
    /// How often each PG is scrubbed and deep-scrubbed, in seconds.
    pub scrub_interval_s: u64,
    pub deep_scrub_interval_s: u64,
    /// The pause between scrub chunks, in ms, which lets client ops through.
    pub scrub_sleep_ms: u64,
    /// A client op in flight longer than this is slow (SLOW_OPS), in seconds.
    pub op_complaint_time_s: u64,
    /// Scheduled scrubs wait while the load per CPU is above this, in percent.
    pub scrub_load_threshold_percent: u64,
    /// The pause between batches of objects snapshot trimming goes through, in ms.
    pub snap_trim_sleep_ms: u64,
}

/// How full an OSD may get, in percent of its space (Ceph's nearfull, backfillfull and
/// full ratios). Always `nearfull <= backfillfull <= full`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullRatios {
    pub nearfull: u32,
    pub backfillfull: u32,
    pub full: u32,
}

impl Default for FullRatios {
    fn default() -> Self {
        FullRatios { nearfull: 85, backfillfull: 90, full: 95 }
    }
}

/// An OSD's fill level against the ratios, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fill {
    Ok,
    Nearfull,
    Backfillfull,
    Full,
}

impl FullRatios {
    /// The level of an OSD that uses `used_percent` of its space.
    pub fn fill(&self, used_percent: f64) -> Fill {
        if used_percent >= f64::from(self.full) {
            Fill::Full
        } else if used_percent >= f64::from(self.backfillfull) {
            Fill::Backfillfull
        } else if used_percent >= f64::from(self.nearfull) {
            Fill::Nearfull
        } else {
            Fill::Ok
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectName {
    pub namespace: String,
    pub name: Vec<u8>,
}

impl ObjectName {
    pub fn new(name: impl Into<Vec<u8>>) -> ObjectName {
        ObjectName { namespace: String::new(), name: name.into() }
    }
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}", String::from_utf8_lossy(&self.name))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// One op of a compound request. Guards that fail cancel the whole request (nothing is
/// changed, the answer is `Canceled` naming the op).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectOp {
    // Reads.
    Read {
        offset: u64,
        len: u64,
    },
    Stat,
    /// Which ranges of `offset..offset + len` hold data (`OpResult::Extents`): a sparse
    /// read's map, at the store's chunk granularity (64 KiB); what is not listed reads as
    /// zeros. An erasure-coded object lists its whole range.
    Extents {
        offset: u64,
        len: u64,
    },
    GetXattr {
        name: String,
    },
    GetXattrs,
    OmapGet {
        keys: Vec<Vec<u8>>,
    },
    OmapList {
        after: Option<Vec<u8>>,
        max: u32,
    },
    // Guards.
    AssertExists,
    /// Compares the xattr's bytes (a missing xattr compares as empty).
    CmpXattr {
        name: String,
        op: CmpOp,
        value: Vec<u8>,
    },
    /// The object's version must be exactly this (optimistic concurrency).
    AssertVersion {
        version: Version,
    },
    // Writes: data comes from the bulk payload, `len` bytes each, in op order.
    Create {
        exclusive: bool,
    },
    Write {
        offset: u64,
        len: u64,
    },
    WriteFull {
        len: u64,
    },
    Append {
        len: u64,
    },
    Truncate {
        size: u64,
    },
    Zero {
        offset: u64,
        len: u64,
    },
    Remove,
    SetXattr {
        name: String,
        value: Vec<u8>,
    },
    RemoveXattr {
        name: String,
    },
    OmapSet {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    },
    OmapRemove {
        keys: Vec<Vec<u8>>,
    },
    OmapRemoveRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
    OmapClear,
    // Advisory locks (Ceph's cls_lock); a lock's name, cookie and tag are at most
    // `LOCK_FIELD_MAX` bytes.
    /// Takes lock `name` for this client and `cookie`: exclusive, or shared with holders
    /// of the same `tag`. It expires `duration_ms` after (none: never). With `renew`, a
    /// holder taking it again moves its expiry (its description stays unless a new one is
    /// given) rather than being refused.
    Lock {
        name: String,
        kind: LockKind,
        cookie: String,
        tag: String,
        description: String,
        duration_ms: Option<u64>,
        renew: bool,
    },
    /// Releases this client's hold of lock `name` with `cookie`.
    Unlock {
        name: String,
        cookie: String,
    },
    /// Removes `locker`'s hold of lock `name` with `cookie` (its holder died, or an
    /// operator says so).
    BreakLock {
        name: String,
        locker: String,
        cookie: String,
    },
    /// Lock `name`: its kind, tag and live holders (`OpResult::Lock`).
    GetLockInfo {
        name: String,
    },
    /// The names of the object's locks with a holder (`OpResult::Locks`).
    ListLocks,
    /// A guard: this client holds lock `name` with `cookie`, of `kind`, with `tag`.
    AssertLocked {
        name: String,
        kind: LockKind,
        cookie: String,
        tag: String,
    },
    // Snapshots.
    /// The object's clones (`OpResult::Snaps`); an op of its own.
    ListSnaps,
    /// Makes the object what it was at snapshot `snap` (removes it if it did not exist
    /// then), keeping its locks; an op of its own, with the request's snapshot context
    /// as for any write.
    Rollback {
        snap: u64,
    },
    // Server-side copies within a pool: the primary reads the source from its own primary,
    // with no round trip through the client, and writes it with the request's other ops.
    /// Makes this object a copy of `source` (or of what it was at snapshot `snap`): its
    /// data, xattrs and omap, replacing this object's; this object's locks stay.
    CopyFrom {
        source: ObjectName,
        snap: Option<u64>,
    },
    /// Writes `len` bytes (at most `COPY_RANGE_BYTES_MAX`) of `source` (at snapshot
    /// `snap`) from `offset` into this object at `to`: fewer where the source ends.
    CopyRange {
        source: ObjectName,
        snap: Option<u64>,
        offset: u64,
        len: u64,
        to: u64,
    },
}

/// Bytes one `CopyRange` copies at most.
pub const COPY_RANGE_BYTES_MAX: u64 = 64 << 20;
/// Copy ops one request carries at most.
pub const COPIES_PER_REQUEST_MAX: usize = 4;

/// Snapshot ids one snapshot context lists at most.
pub const SNAP_CONTEXT_SNAPS_MAX: usize = 4096;

/// What a request says about snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapArgs {
    /// The writer's snapshot context (Ceph's SnapContext): a write is the first after a
    /// snapshot when its `seq` is newer than any the object has seen, and then keeps the
    /// object as it was as a clone first. For a pool with pool snapshots the primary uses
    /// the newer of this and the pool's own.
    pub context: Option<SnapContext>,
    /// Reads: the snapshot to read the object as it was at (`None`: the head).
    pub read: Option<u64>,
}

/// The newest snapshot id a writer knows and the snapshots that exist, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapContext {
    pub seq: u64,
    pub snaps: Vec<u64>,
}

impl SnapContext {
    /// Snapshot ids strictly newest first, none above `seq`, within the limit.
    pub fn validate(&self) -> Result<(), String> {
        if self.snaps.len() > SNAP_CONTEXT_SNAPS_MAX {
            return Err(format!(
                "a snapshot context lists {} snapshots; at most {SNAP_CONTEXT_SNAPS_MAX}",
                self.snaps.len()
            ));
        }
        if self.snaps.first().is_some_and(|&newest| newest > self.seq) {
            return Err(format!(
                "snapshot {} is newer than the context's seq {}",
                self.snaps[0], self.seq
            ));
        }
        if self.snaps.windows(2).any(|w| w[0] <= w[1]) || self.snaps.contains(&0) {
            return Err("a snapshot context lists nonzero ids, newest first, once each".into());
        }
        Ok(())
    }
}

/// An object's clones and what each shares with the next newer one (`ListSnaps`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapList {
    /// The newest snapshot context seq a write to the object carried.
    pub seq: u64,
    /// Oldest first.
    pub clones: Vec<CloneInfo>,
    /// Whether the head (the current object) exists.
    pub head_exists: bool,
}

/// A clone: the object as it was before the first write after snapshot `id`, which
/// serves reads at each of `snaps` (newest first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneInfo {
    pub id: u64,
    pub snaps: Vec<u64>,
    pub size: u64,
    /// `(offset, len)` ranges, in order, where the clone's bytes are those of the next
    /// newer clone (or of the head, for the newest): what did not change since.
    pub overlap: Vec<(u64, u64)>,
}

/// Bytes a lock's name, cookie or tag may have (a description four times as many).
pub const LOCK_FIELD_MAX: usize = 256;
/// Holders one shared lock may have.
pub const LOCK_HOLDERS_MAX: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Exclusive,
    Shared,
}

/// A lock on an object: its kind, the tag its shared holders agree on, and its holders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub kind: LockKind,
    pub tag: String,
    pub holders: Vec<Locker>,
}

/// One holder of a lock: the client and its cookie, where it was connected from, and
/// when its hold expires (ms since the Unix epoch, on the primary's clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locker {
    pub client: String,
    pub cookie: String,
    pub addr: String,
    pub description: String,
    pub expires_ms: Option<i64>,
}

impl ObjectOp {
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            ObjectOp::Create { .. }
                | ObjectOp::Write { .. }
                | ObjectOp::WriteFull { .. }
                | ObjectOp::Append { .. }
                | ObjectOp::Truncate { .. }
                | ObjectOp::Zero { .. }
                | ObjectOp::Remove
                | ObjectOp::SetXattr { .. }
                | ObjectOp::RemoveXattr { .. }
                | ObjectOp::OmapSet { .. }
                | ObjectOp::OmapRemove { .. }
                | ObjectOp::OmapRemoveRange { .. }
                | ObjectOp::OmapClear
                | ObjectOp::Lock { .. }
                | ObjectOp::Unlock { .. }
                | ObjectOp::BreakLock { .. }
                | ObjectOp::Rollback { .. }
                | ObjectOp::CopyFrom { .. }
                | ObjectOp::CopyRange { .. }
        )
    }

    /// A copy op's source and the snapshot it is read at.
    pub fn copy_source(&self) -> Option<(&ObjectName, Option<u64>)> {
        match self {
            ObjectOp::CopyFrom { source, snap } | ObjectOp::CopyRange { source, snap, .. } => {
                Some((source, *snap))
            }
            _ => None,
        }
    }

    /// Whether the op only gives space back (or changes nothing): what a full OSD still
    /// takes, so that deleting is how space is freed.
    pub fn frees_space(&self) -> bool {
        matches!(
            self,
            ObjectOp::Truncate { .. }
                | ObjectOp::Remove
                | ObjectOp::RemoveXattr { .. }
                | ObjectOp::OmapRemove { .. }
                | ObjectOp::OmapRemoveRange { .. }
                | ObjectOp::OmapClear
                | ObjectOp::Unlock { .. }
                | ObjectOp::BreakLock { .. }
        ) || !self.is_write()
    }

    /// Bytes of write data the op takes from the bulk payload.
    pub fn data_len(&self) -> u64 {
        match self {
            ObjectOp::Write { len, .. }
            | ObjectOp::WriteFull { len }
            | ObjectOp::Append { len } => *len,
            _ => 0,
        }
    }
}

/// The result of one op, in op order. Read data is in the answer's bulk payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Done,
    /// `len` bytes of the bulk payload.
    Data {
        len: u64,
    },
    Stat {
        size: u64,
        version: Version,
        mtime_ms: i64,
    },
    Xattr(Option<Vec<u8>>),
    Xattrs(BTreeMap<String, Vec<u8>>),
    Omap(Vec<Option<Vec<u8>>>),
    OmapList {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        more: bool,
    },
    /// A lock (`None`: it has no holder).
    Lock(Option<LockInfo>),
    Locks(Vec<String>),
    Snaps(SnapList),
    /// `(offset, len)` of each range that holds data, in order.
    Extents(Vec<(u64, u64)>),
}

/// Who made a change, so a resend is recognised: the client's identity and request id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReqId {
    pub client: String,
    pub id: RequestId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogOp {
    Modify,
    Delete,
}

/// One entry of a PG log: which object changed to which version, and by whose request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub version: Version,
    /// The object's version before (ZERO if it did not exist).
    pub prior_version: Version,
    pub object: ObjectName,
    pub op: LogOp,
    pub reqid: Option<ReqId>,
    /// How the change moved the PG's object and byte counts.
    pub delta: CountsDelta,
}

/// A PG's logical contents (as its authoritative history says, not as one copy holds
/// them): kept by every copy, moved by each log entry's delta.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCounts {
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountsDelta {
    pub objects: i64,
    pub bytes: i64,
}

impl ObjectCounts {
    pub fn apply(&mut self, delta: CountsDelta) {
        self.objects = self.objects.saturating_add_signed(delta.objects);
        self.bytes = self.bytes.saturating_add_signed(delta.bytes);
    }
}

impl CountsDelta {
    /// The delta of a change from an object of `before` bytes to one of `after` (`None`:
    /// the object does not exist).
    pub fn of(before: Option<u64>, after: Option<u64>) -> CountsDelta {
        CountsDelta {
            objects: i64::from(after.is_some()) - i64::from(before.is_some()),
            bytes: after.unwrap_or(0) as i64 - before.unwrap_or(0) as i64,
        }
    }
}

/// A PG's history on one OSD, as exchanged in peering.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgInfo {
    /// The newest log entry applied.
    pub last_update: Version,
    /// Every object is current up to this version (nothing older is missing).
    pub last_complete: Version,
    /// The log holds entries after this version.
    pub log_tail: Version,
    /// The last epoch an acting set of this PG went active (that this OSD knows of).
    pub last_epoch_started: Epoch,
    /// The last epoch the PG was clean (all copies complete).
    pub last_epoch_clean: Epoch,
    /// Backfill: objects up to this one are complete here; `None` when all are.
    pub backfill_incomplete: Option<BackfillMark>,
    /// Intervals since `last_epoch_started`, as this OSD saw them.
    pub past_intervals: Vec<PastInterval>,
    /// The PG's contents as of `last_update`.
    pub stats: ObjectCounts,
    /// When the last scrub and the last deep scrub of the PG ended (ms since the epoch;
    /// at creation, the PG's creation: a new PG is not due at once).
    pub last_scrub_ms: i64,
    pub last_deep_scrub_ms: i64,
}

/// How far backfill got on an OSD: objects at or before `last` (in store order) are
/// complete. `None` inside means none is yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillMark {
    pub last: Option<ObjectName>,
}

/// A span of map epochs during which a PG's acting set and primary did not change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastInterval {
    pub first: Epoch,
    pub last: Epoch,
    pub acting: Vec<u32>,
    pub primary: Option<u32>,
    /// Whether the PG could have accepted writes then (enough OSDs for min_size).
    pub maybe_went_rw: bool,
}

/// A change a replica applies, as the primary computed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RepOp {
    Create,
    Write {
        offset: u64,
        len: u64,
    },
    WriteFull {
        len: u64,
    },
    Truncate {
        size: u64,
    },
    Zero {
        offset: u64,
        len: u64,
    },
    Remove,
    SetXattr {
        name: String,
        value: Vec<u8>,
    },
    RemoveXattr {
        name: String,
    },
    OmapSet {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    },
    OmapRemove {
        keys: Vec<Vec<u8>>,
    },
    OmapRemoveRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
    OmapClear,
    SetVersion {
        mtime_ms: i64,
    },
    /// Keeps the object as it is as its clone `snap`, without the reserved xattrs named
    /// (the head's locks and snapshot set are not the clone's).
    Clone {
        snap: u64,
        drop_xattrs: Vec<String>,
    },
    /// Makes the object a copy of its clone `snap`, then sets `keep` (the head's own
    /// reserved xattrs: locks).
    RollbackTo {
        snap: u64,
        keep: Vec<(String, Vec<u8>)>,
    },
    /// Removes the object's clone `snap` (snapshot trimming: no snapshot needs it).
    RemoveClone {
        snap: u64,
    },
}

/// One object's whole state, pushed by recovery or backfill (data in the bulk payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectState {
    pub object: ObjectName,
    pub version: Version,
    /// `None`: the object does not exist at this version (remove it).
    pub body: Option<ObjectBody>,
    /// Its clones (snapshots), oldest first; their data follows the head's in the bulk
    /// payload, in this order.
    pub clones: Vec<ClonePush>,
}

/// A clone of a pushed object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClonePush {
    pub snap: u64,
    pub version: Version,
    pub body: ObjectBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectBody {
    pub size: u64,
    pub mtime_ms: i64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub omap: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One copy of an object as scrub sees it on one OSD.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubObject {
    pub object: ObjectName,
    pub version: Version,
    pub size: u64,
    /// crc32c over the xattrs and the omap, names and values in order.
    pub meta_digest: u32,
    /// crc32c over the data: deep scrub only, which reads every byte.
    pub data_digest: Option<u32>,
    /// Why the copy could not be read (a checksum mismatch): it is bad, whatever it holds.
    pub error: Option<String>,
}

/// OSD to OSD, about one PG. `interval` is the first epoch of the sender's current
/// interval for the PG: a receiver in another interval answers `StaleEpoch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// "What do you have of this PG?" Answered with `Info`.
    Query,
    /// The log entries after `after`. Answered with `Log`.
    GetLog { after: Version },
    /// The primary's authoritative history: entries the replica lacks (after its
    /// `last_update`), and the info it must adopt. Answered with `Activated` and the
    /// objects the replica is missing.
    Activate { info: PgInfo, entries: Vec<LogEntry>, backfill: bool },
    /// A client write, replicated. Applied after the entry before it (`entry.prior` on
    /// the PG log, i.e. `after`). Every entry before `committed_before` is committed on
    /// every copy: an erasure-coded shard drops its rollback stashes for them.
    Replicate {
        after: Version,
        committed_before: Version,
        entry: LogEntry,
        ops: Vec<RepOp>,
        backfill_only: bool,
    },
    /// Recovery/backfill: take this object's state.
    Push { state: ObjectState },
    /// Recovery: send me this object's state from shard `shard` (`u8::MAX` for a
    /// replicated PG's copy); an OSD that holds another shard of the PG refuses.
    Pull { object: ObjectName, shard: u8 },
    /// Backfill: your objects after `after` and up to `until` (to the end if `None`), in
    /// store order, with their versions; at most `max`. Answered with `Scanned`.
    Scan { after: Option<ObjectName>, until: Option<ObjectName>, max: u32 },
    /// Backfill of this copy is done: every object is current.
    BackfillDone,
    /// Recovery and backfill are done: adopt `info` (clean).
    Complete { info: PgInfo },
    /// The PG is clean without this OSD, which holds a copy outside its up and acting
    /// sets: delete it.
    RemoveStray,
    /// Scrub: this copy's objects after `after` and up to `until` (`None`: the end), with
    /// sizes and digests; `deep` reads every byte. Answered with `ScrubMap`.
    ScrubMap { after: Option<ObjectName>, until: Option<ObjectName>, deep: bool },
    /// Erasure coding: these byte ranges (offset, length) of the receiver's shard of
    /// `object`, which must be shard `shard` and at `version`. Answered with `ShardRead`,
    /// the bytes in the bulk payload, the ranges in order.
    ReadShard { object: ObjectName, shard: u8, version: Version, ranges: Vec<(u64, u64)> },
}

impl PeerRequest {
    /// The kind of request, for errors that say what was asked.
    pub fn name(&self) -> &'static str {
        match self {
            PeerRequest::Query => "query",
            PeerRequest::GetLog { .. } => "get log",
            PeerRequest::Activate { .. } => "activate",
            PeerRequest::Replicate { .. } => "replicate",
            PeerRequest::Push { .. } => "push",
            PeerRequest::Pull { .. } => "pull",
            PeerRequest::Scan { .. } => "scan",
            PeerRequest::BackfillDone => "backfill done",
            PeerRequest::Complete { .. } => "complete",
            PeerRequest::RemoveStray => "remove stray",
            PeerRequest::ScrubMap { .. } => "scrub map",
            PeerRequest::ReadShard { .. } => "read shard",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The receiver's info of the PG (`None`: it has no copy), and for an erasure-coded
    /// PG the shard position its copy is for (`u8::MAX` for a replicated one), whether it
    /// also keeps a shard of another position (from before its position moved), and the
    /// map epoch its store first served at.
    Info {
        /// Boxed: the largest answer otherwise, and every response would be its size.
        info: Option<Box<PgInfo>>,
        shard: u8,
        kept: bool,
        born: Epoch,
    },
    Log {
        entries: Vec<LogEntry>,
        tail: Version,
        more: bool,
    },
    Activated {
        missing: Vec<(ObjectName, Version)>,
    },
    Done,
    Object(ObjectState),
    Scanned {
        objects: Vec<(ObjectName, Version)>,
        more: bool,
    },
    /// A push is durable; `backfillfull`: the receiver is now at backfillfull or above,
    /// so backfill onto it stops before the monitors have heard.
    Pushed {
        backfillfull: bool,
    },
    /// The receiver's copies of the objects in a scrub's range.
    ScrubMap {
        objects: Vec<ScrubObject>,
    },
    /// The ranges of a `ReadShard`, in the bulk payload.
    ShardRead,
}

impl PeerResponse {
    /// The kind of answer, for errors that say what came instead of what was asked.
    pub fn name(&self) -> &'static str {
        match self {
            PeerResponse::Info { .. } => "info",
            PeerResponse::Log { .. } => "log",
            PeerResponse::Activated { .. } => "activated",
            PeerResponse::Done => "done",
            PeerResponse::Object(_) => "object",
            PeerResponse::Scanned { .. } => "scanned",
            PeerResponse::Pushed { .. } => "pushed",
            PeerResponse::ScrubMap { .. } => "scrub map",
            PeerResponse::ShardRead => "shard read",
        }
    }
}

/// A PG's state as its primary reports it to the monitors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgStat {
    pub pg: PgId,
    /// Ceph's state words: active, clean, peering, degraded, undersized, recovering,
    /// backfilling, backfill_toofull, scrubbing, deep, inconsistent, inactive,
    /// incomplete, down.
    pub state: Vec<String>,
    pub up: Vec<u32>,
    pub acting: Vec<u32>,
    pub epoch: Epoch,
    pub last_update: Version,
    /// Entries in the primary's PG log (Ceph's LOG column).
    pub log_entries: u64,
    pub objects: u64,
    pub bytes: u64,
    /// Object copies that should exist and do not (missing on an acting OSD).
    pub degraded: u64,
    /// Object copies waiting to move to a backfill target.
    pub misplaced: u64,
    /// Objects no OSD that was asked has.
    pub unfound: u64,
    /// Bytes recovered or backfilled since the PG last went active.
    pub recovered_bytes: u64,
    pub recovered_objects: u64,
    /// When the last scrub and the last deep scrub ended (ms since the epoch).
    pub last_scrub_ms: i64,
    pub last_deep_scrub_ms: i64,
    /// Bad copies the last scrub found (repair then rewrites them).
    pub last_scrub_errors: u64,
    /// Objects with a bad copy not yet repaired, and the first few of them with why.
    pub inconsistent: u64,
    pub inconsistent_detail: Vec<String>,
    /// Why a PG that is not active cannot go active (empty when it is active or peering).
    pub blocked_reason: String,
    /// The OSDs such a PG waits for: those of a past interval that must answer.
    pub blocked_by: Vec<u32>,
}

impl PgStat {
    /// A PG in the given state and sets with every count zero and nothing blocked: what
    /// the monitors show for a PG no primary has reported, and the start of a test's stat.
    pub fn empty(
        pg: PgId,
        state: Vec<String>,
        up: Vec<u32>,
        acting: Vec<u32>,
        epoch: Epoch,
    ) -> Self {
        PgStat {
            pg,
            state,
            up,
            acting,
            epoch,
            last_update: Version::default(),
            log_entries: 0,
            objects: 0,
            bytes: 0,
            degraded: 0,
            misplaced: 0,
            unfound: 0,
            recovered_bytes: 0,
            recovered_objects: 0,
            last_scrub_ms: 0,
            last_deep_scrub_ms: 0,
            last_scrub_errors: 0,
            inconsistent: 0,
            inconsistent_detail: Vec::new(),
            blocked_reason: String::new(),
            blocked_by: Vec::new(),
        }
    }
}

/// An OSD's usage as it reports it to the monitors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsdStat {
    pub osd: u32,
    /// What the store takes on disk.
    pub used_bytes: u64,
    /// The OSD's space and what is free of it: its configured capacity if it has one
    /// (free is then also bounded by the filesystem), else the filesystem it is on.
    pub total_bytes: u64,
    pub avail_bytes: u64,
    /// PGs this OSD holds a copy of.
    pub pgs: u32,
    /// Primary PGs, and how many of them are active.
    pub primary_pgs: u32,
    /// Objects and bytes recovered or backfilled by this OSD since it started (counters:
    /// the monitors turn them into rates).
    pub recovered_objects: u64,
    pub recovered_bytes: u64,
    /// The map epoch the OSD had, and that map's hash (`placement::encoding::map_hash`):
    /// daemons at one epoch must agree on it.
    pub map_epoch: Epoch,
    pub map_hash: u32,
    /// Its clock minus the monitors', in ms, as its last ping of a monitor measured it.
    pub clock_offset_ms: Option<i64>,
    /// Client ops in flight for longer than the monitors' `osd.op_complaint_time`, and
    /// the age and a description of the oldest op in flight.
    pub slow_ops: u32,
    pub oldest_op_ms: u64,
    pub oldest_op: String,
    /// When this OSD last recovered an object, finished a backfill and finished a scrub
    /// (wall clock, ms since the Unix epoch; 0: not since it started).
    pub last_recovery_ms: i64,
    pub last_backfill_ms: i64,
    pub last_scrub_ms: i64,
    /// Copies this OSD found bad since it started (a checksum failure on read, or a
    /// scrub it led) and set aside, never to be served, until recovery rewrote them.
    pub quarantined: u64,
    /// The host's load average over one minute, times 1000.
    pub load_milli: u32,
    /// Set by the monitors: how long ago this report arrived (`None`: never).
    pub report_age_ms: Option<u64>,
}

/// Xattr names starting with this are the OSD's own (an erasure-coded shard's logical
/// size, say): clients can neither set, read nor compare them, and listings leave them out.
pub const RESERVED_XATTR_PREFIX: char = '\0';

/// Longest `OsdStat::oldest_op` an OSD sends.
pub const OP_DESCRIPTION_MAX: usize = 256;

impl OsdStat {
    /// How much of its space the OSD has used, in percent: what is not free, so that
    /// anything else filling the same filesystem counts too. 0 when the size is unknown.
    pub fn used_percent(&self) -> f64 {
        used_percent(self.total_bytes, self.avail_bytes)
    }
}

/// The share of `total` that is not `avail`, in percent.
pub fn used_percent(total: u64, avail: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    100.0 * total.saturating_sub(avail) as f64 / total as f64
}
