//! Client ops on one object: reads and guards evaluated against the object as it was
//! before the request, writes turned into `RepOp`s (what every copy applies) and those
//! into store transactions. The same `RepOp`s go to replicas, so every copy applies
//! exactly the same change, decided once by the primary (appends already have offsets).

use bytes::Bytes;
use objectstore::{CollectionId, ObjectId, ObjectMeta, ObjectStore, StoreError, Transaction, TxOp};
use placement::Version;
use proto::error::{ErrorCode, RemoteError};
use proto::osd::{
    CmpOp, LIST_PAGE_MAX, ObjectName, ObjectOp, OpResult, RESERVED_XATTR_PREFIX, RepOp, SnapArgs,
    SnapContext,
};

use crate::pg::locks::{Caller, LockChange, Locks};
use crate::pg::snaps::{Resolved, SNAPSET_XATTR, SnapSet, WHITEOUT_XATTR};

/// Bytes one request may read at most (the answer must fit a frame).
pub const READ_BYTES_MAX: u64 = 64 << 20;

pub fn object_id(name: &ObjectName) -> ObjectId {
    ObjectId {
        namespace: name.namespace.clone(),
        name: name.name.clone(),
        snap: objectstore::SNAP_HEAD,
    }
}

pub fn object_name(oid: &ObjectId) -> ObjectName {
    ObjectName { namespace: oid.namespace.clone(), name: oid.name.clone() }
}

pub fn store_error(e: StoreError) -> RemoteError {
    let code = match &e {
        StoreError::Invalid { .. } => ErrorCode::Invalid,
        StoreError::NotFound(_) => ErrorCode::NotFound,
        StoreError::AlreadyExists(_) => ErrorCode::AlreadyExists,
        StoreError::Corrupt { .. } => ErrorCode::Corrupt,
        StoreError::Io(_) => ErrorCode::Internal,
    };
    RemoteError::new(code, e.to_string())
}

/// What a request did, before it is applied.
#[derive(Debug, Default)]
pub struct Executed {
    pub results: Vec<OpResult>,
    /// Read data, in op order.
    pub read_data: Vec<u8>,
    /// Changes (empty for a read-only request), and their data in order.
    pub rep_ops: Vec<RepOp>,
    pub rep_data: Bytes,
    /// Whether the object exists after the changes.
    pub exists_after: bool,
    /// Whether a record of it stays in the store (it exists, or is a whiteout that
    /// keeps its clones' snap set): the log entry is then a modification.
    pub kept_after: bool,
    /// The object's version before the request.
    pub prior: Version,
    /// Its size before and after (`None`: it does not exist).
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
}

fn invalid(detail: impl Into<String>) -> RemoteError {
    RemoteError::new(ErrorCode::Invalid, detail)
}

fn canceled(index: usize, what: &str) -> RemoteError {
    RemoteError::new(
        ErrorCode::Canceled,
        format!("op {index} ({what}) failed; nothing was changed"),
    )
}

fn compare(op: CmpOp, have: &[u8], want: &[u8]) -> bool {
    match op {
        CmpOp::Eq => have == want,
        CmpOp::Ne => have != want,
        CmpOp::Gt => have > want,
        CmpOp::Ge => have >= want,
        CmpOp::Lt => have < want,
        CmpOp::Le => have <= want,
    }
}

/// Evaluates a request of `caller` against the local copy. `bulk` holds the write data in
/// op order; `snap` says which snapshot reads are of and the snapshot context of writes.
pub fn execute(
    store: &dyn ObjectStore,
    c: CollectionId,
    name: &ObjectName,
    caller: Caller<'_>,
    ops: &[ObjectOp],
    bulk: &Bytes,
    snap: &SnapArgs,
) -> Result<Executed, RemoteError> {
    let oid = object_id(name);
    oid.validate().map_err(store_error)?;
    check_snap_request(ops, snap)?;
    // A lone read of the head, the commonest op, looks the object up once.
    let (physical, read_ahead) = match ops {
        [ObjectOp::Read { offset, len }] if snap.read.is_none() => {
            let len = (*len).min(READ_BYTES_MAX);
            match store.stat_read(c, &oid, *offset, len).map_err(store_error)? {
                Some((meta, bytes)) => (Some(meta), Some((*offset, len, bytes))),
                None => (None, None),
            }
        }
        _ => (store.stat(c, &oid).map_err(store_error)?, None),
    };
    // A whiteout's version: what a write to it follows.
    let whiteout =
        physical.as_ref().filter(|m| m.xattrs.contains_key(WHITEOUT_XATTR)).map(|m| m.version);
    let head = if whiteout.is_some() { None } else { physical.clone() };
    let mut set = SnapSet::load(physical.as_ref().map(|m| &m.xattrs), name)?;
    match ops {
        [ObjectOp::ListSnaps] => {
            return Ok(Executed {
                results: vec![OpResult::Snaps(set.list(head.is_some()))],
                prior: head.as_ref().map(|m| m.version).unwrap_or_default(),
                ..Executed::default()
            });
        }
        [ObjectOp::Rollback { snap: to }] => {
            let mut out = rollback(store, c, name, &set, head.as_ref(), *to)?;
            snapshot_writes(&mut out, &mut set, snap.context.as_ref(), head.as_ref(), whiteout)?;
            return Ok(out);
        }
        _ => {}
    }
    if let Some(at) = snap.read {
        let (target, meta) = match set.resolve(at, head.is_some()) {
            Resolved::Head => (oid, head),
            Resolved::Missing => (oid, None),
            Resolved::Clone(id) => {
                let clone = ObjectId { snap: id, ..oid };
                let meta = store.stat(c, &clone).map_err(store_error)?.ok_or_else(|| {
                    RemoteError::new(
                        ErrorCode::Corrupt,
                        format!("clone {id} of {name} is in its snap set but not here"),
                    )
                })?;
                (clone, Some(meta))
            }
        };
        let mut bytes = Stored { store, c, oid: &target, ahead: None };
        return execute_on(store, c, name, &target, caller, ops, bulk, meta, &mut bytes);
    }
    let mut bytes = Stored { store, c, oid: &oid, ahead: read_ahead };
    let mut out = execute_on(store, c, name, &oid, caller, ops, bulk, head.clone(), &mut bytes)?;
    if !out.rep_ops.is_empty() {
        snapshot_writes(&mut out, &mut set, snap.context.as_ref(), head.as_ref(), whiteout)?;
    }
    Ok(out)
}

/// The bytes of the object a request reads: what it reads, and which ranges hold data.
pub trait ObjectBytes {
    /// Up to `len` bytes from `offset` (short at the object's end).
    fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, RemoteError>;
    /// The ranges of `offset..offset + len` that hold data (`ObjectStore::extents`).
    fn extents(&mut self, offset: u64, len: u64) -> Result<Vec<(u64, u64)>, RemoteError>;
}

/// A replicated object's bytes in the local store; `ahead` is a read already made with
/// the object's look-up (offset, length, bytes).
struct Stored<'a> {
    store: &'a dyn ObjectStore,
    c: CollectionId,
    oid: &'a ObjectId,
    ahead: Option<(u64, u64, Vec<u8>)>,
}

impl ObjectBytes for Stored<'_> {
    fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, RemoteError> {
        match self.ahead.take() {
            Some((at, wanted, bytes)) if (at, wanted) == (offset, len) => Ok(bytes),
            _ => self.store.read(self.c, self.oid, offset, len).map_err(store_error),
        }
    }

    fn extents(&mut self, offset: u64, len: u64) -> Result<Vec<(u64, u64)>, RemoteError> {
        self.store.extents(self.c, self.oid, offset, len).map_err(store_error)
    }
}

/// What a request must be as to snapshots: a valid context, no writes to a snapshot,
/// `ListSnaps` and `Rollback` alone.
fn check_snap_request(ops: &[ObjectOp], snap: &SnapArgs) -> Result<(), RemoteError> {
    if let Some(context) = &snap.context {
        context.validate().map_err(invalid)?;
    }
    let alone = ops.iter().any(|op| matches!(op, ObjectOp::ListSnaps | ObjectOp::Rollback { .. }));
    if alone && ops.len() > 1 {
        return Err(invalid("ListSnaps and Rollback are ops of their own"));
    }
    if snap.read.is_some() && ops.iter().any(ObjectOp::is_write) {
        return Err(invalid("a snapshot is read-only: a write cannot name a snapshot to read"));
    }
    if snap.read.is_some_and(|s| s == 0 || s == objectstore::SNAP_HEAD) {
        return Err(invalid("snapshot ids are 1 and up"));
    }
    Ok(())
}

/// Snapshot trimming of one object: the changes that drop the clones no snapshot outside
/// `removed` needs and forget the removed ones in its snap set (`None`: nothing to trim).
/// A whiteout left without clones goes too.
pub fn trim(
    store: &dyn ObjectStore,
    c: CollectionId,
    name: &ObjectName,
    removed: impl Fn(u64) -> bool,
) -> Result<Option<Executed>, RemoteError> {
    let oid = object_id(name);
    let Some(physical) = store.stat(c, &oid).map_err(store_error)? else { return Ok(None) };
    let mut set = SnapSet::load(Some(&physical.xattrs), name)?;
    let before = set.clone();
    let dropped = set.trim(removed);
    if set == before {
        return Ok(None);
    }
    let whiteout = physical.xattrs.contains_key(WHITEOUT_XATTR);
    let size = (!whiteout).then_some(physical.size);
    let mut out = Executed {
        results: vec![OpResult::Done],
        prior: physical.version,
        size_before: size,
        size_after: size,
        exists_after: size.is_some(),
        kept_after: true,
        ..Executed::default()
    };
    out.rep_ops = dropped.into_iter().map(|snap| RepOp::RemoveClone { snap }).collect();
    if whiteout && set.clones.is_empty() {
        out.rep_ops.push(RepOp::Remove);
        out.kept_after = false;
    } else {
        out.rep_ops.push(RepOp::SetXattr { name: SNAPSET_XATTR.to_owned(), value: set.encode() });
    }
    Ok(Some(out))
}

/// The changes that make the head what it was at snapshot `to`, before the request's own
/// snapshot context is applied.
fn rollback(
    store: &dyn ObjectStore,
    c: CollectionId,
    name: &ObjectName,
    set: &SnapSet,
    head: Option<&ObjectMeta>,
    to: u64,
) -> Result<Executed, RemoteError> {
    if to == 0 || to == objectstore::SNAP_HEAD {
        return Err(invalid("snapshot ids are 1 and up"));
    }
    let prior = head.map(|m| m.version).unwrap_or_default();
    let size_before = head.map(|m| m.size);
    let mut out =
        Executed { results: vec![OpResult::Done], prior, size_before, ..Executed::default() };
    match set.resolve(to, head.is_some()) {
        // Unchanged since: nothing to do.
        Resolved::Head => {
            out.exists_after = true;
            out.kept_after = true;
            out.size_after = size_before;
        }
        Resolved::Missing if head.is_none() => {}
        Resolved::Missing => out.rep_ops.push(RepOp::Remove),
        Resolved::Clone(id) => {
            let clone = ObjectId { snap: id, ..object_id(name) };
            let meta = store.stat(c, &clone).map_err(store_error)?.ok_or_else(|| {
                RemoteError::new(ErrorCode::Corrupt, format!("clone {id} of {name} is missing"))
            })?;
            let keep = head.map(reserved_xattrs).unwrap_or_default();
            out.rep_ops.push(RepOp::RollbackTo { snap: id, keep });
            out.exists_after = true;
            out.kept_after = true;
            out.size_after = Some(meta.size);
        }
    }
    Ok(out)
}

/// The head's reserved xattrs but its snap set and whiteout mark: what a clone does not
/// take and a rollback keeps (locks).
fn reserved_xattrs(meta: &ObjectMeta) -> Vec<(String, Vec<u8>)> {
    meta.xattrs
        .iter()
        .filter(|(n, _)| n.starts_with(RESERVED_XATTR_PREFIX))
        .filter(|(n, _)| n.as_str() != SNAPSET_XATTR && n.as_str() != WHITEOUT_XATTR)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// Wraps a write's changes in what snapshots need: a whiteout head cleared first, the
/// clone the first write after a snapshot keeps, the snap set moved on and stored, and a
/// head removed while clones remain kept as a whiteout.
fn snapshot_writes(
    out: &mut Executed,
    set: &mut SnapSet,
    context: Option<&SnapContext>,
    head: Option<&ObjectMeta>,
    whiteout: Option<Version>,
) -> Result<(), RemoteError> {
    if out.rep_ops.is_empty() {
        return Ok(());
    }
    let before = set.clone();
    let mut ops = Vec::with_capacity(out.rep_ops.len() + 4);
    if let Some(version) = whiteout {
        ops.push(RepOp::Remove);
        // The write follows the whiteout's record: were its entry divergent, recovery
        // undoes it, rather than peering removing an object it takes for new (and the
        // snap set with it).
        out.prior = version;
    }
    if let Some(context) = context
        && let Some(id) = set.before_write(context, head.map(|m| m.size))?
    {
        let mut drop_xattrs: Vec<String> =
            head.map(reserved_xattrs).unwrap_or_default().into_iter().map(|(n, _)| n).collect();
        drop_xattrs.push(SNAPSET_XATTR.to_owned());
        ops.push(RepOp::Clone { snap: id, drop_xattrs });
    }
    let mut wiped = whiteout.is_some();
    for op in &out.rep_ops {
        match op {
            RepOp::Write { offset, len } | RepOp::Zero { offset, len } => {
                set.head_changed(*offset, *len)
            }
            RepOp::Truncate { size } => set.head_changed(*size, u64::MAX),
            RepOp::WriteFull { .. } => set.head_changed(0, u64::MAX),
            RepOp::Remove | RepOp::RollbackTo { .. } => {
                set.head_changed(0, u64::MAX);
                wiped = true;
            }
            _ => {}
        }
    }
    ops.append(&mut out.rep_ops);
    if out.exists_after {
        if !set.is_empty() && (wiped || *set != before) {
            ops.push(RepOp::SetXattr { name: SNAPSET_XATTR.to_owned(), value: set.encode() });
        }
    } else if !set.clones.is_empty() {
        ops.push(RepOp::Create);
        ops.push(RepOp::SetXattr { name: WHITEOUT_XATTR.to_owned(), value: Vec::new() });
        ops.push(RepOp::SetXattr { name: SNAPSET_XATTR.to_owned(), value: set.encode() });
        out.kept_after = true;
    }
    out.rep_ops = ops;
    Ok(())
}

/// Evaluates a request against an object described by `meta`, whose bytes are `bytes`;
/// omap reads go to the store. An erasure-coded
/// PG's primary passes the logical object here: its own shard's metadata with the
/// logical size, and bytes gathered from the shards.
#[allow(clippy::too_many_arguments)]
pub fn execute_on(
    store: &dyn ObjectStore,
    c: CollectionId,
    name: &ObjectName,
    target: &ObjectId,
    caller: Caller<'_>,
    ops: &[ObjectOp],
    bulk: &Bytes,
    meta: Option<ObjectMeta>,
    bytes: &mut dyn ObjectBytes,
) -> Result<Executed, RemoteError> {
    check_request(name, ops, bulk)?;
    let oid = target.clone();
    let mut out = Executed {
        prior: meta.as_ref().map(|m| m.version).unwrap_or_default(),
        ..Executed::default()
    };
    let mut size = meta.as_ref().map(|m| m.size);
    let mut locks = Locks::new(meta.as_ref().map(|m| &m.xattrs));
    let mut data_at = 0usize;
    for (index, op) in ops.iter().enumerate() {
        if let Some((result, rep)) = lock_op(name, op, caller, &mut locks, meta.is_some(), size)? {
            out.rep_ops.extend(rep);
            out.results.push(result);
        } else if !read_op(store, c, &oid, name, index, op, &meta, bytes, &mut out)? {
            if matches!(op, ObjectOp::Remove) {
                locks.remove_all();
            }
            data_at += op.data_len() as usize;
            out.rep_ops.push(write_op(name, op, &mut size)?);
            out.results.push(OpResult::Done);
        }
    }
    // Every write's data, in op order: the whole payload (its length was checked), passed
    // on to the store and the replicas without a copy.
    out.rep_data = bulk.slice(..data_at);
    out.exists_after = size.is_some();
    out.kept_after = size.is_some();
    out.size_before = meta.as_ref().map(|m| m.size);
    out.size_after = size;
    Ok(out)
}

/// What a request must be before any op runs: a valid object name, a payload exactly as
/// long as its writes, no reserved xattr names.
fn check_request(
    name: &ObjectName,
    ops: &[ObjectOp],
    bulk: &Bytes,
) -> Result<ObjectId, RemoteError> {
    let oid = object_id(name);
    oid.validate().map_err(store_error)?;
    let want: u64 = ops
        .iter()
        .map(ObjectOp::data_len)
        .try_fold(0u64, |a, b| a.checked_add(b))
        .ok_or_else(|| invalid("write lengths overflow"))?;
    if want != bulk.len() as u64 {
        return Err(invalid(format!(
            "ops take {want} bytes of data; the request carries {}",
            bulk.len()
        )));
    }
    if ops.iter().any(|op| op.copy_source().is_some()) {
        return Err(RemoteError::new(
            ErrorCode::Internal,
            "copy ops run only as the writes the primary makes of them",
        ));
    }
    for op in ops {
        let named = match op {
            ObjectOp::GetXattr { name }
            | ObjectOp::CmpXattr { name, .. }
            | ObjectOp::SetXattr { name, .. }
            | ObjectOp::RemoveXattr { name } => Some(name),
            _ => None,
        };
        if named.is_some_and(|n| n.starts_with(RESERVED_XATTR_PREFIX)) {
            return Err(invalid("xattr names starting with a NUL byte are reserved"));
        }
    }
    Ok(oid)
}

fn missing(name: &ObjectName) -> RemoteError {
    RemoteError::new(ErrorCode::NotFound, format!("object {name} does not exist"))
}

/// Runs `op` if it is a lock op (`None` if not): a read or guard against the locks as the
/// request began (`existed`: the object existed then), a change against them as the lock
/// ops before left them, on an object that exists as the ops before left it (`size`).
fn lock_op(
    name: &ObjectName,
    op: &ObjectOp,
    caller: Caller<'_>,
    locks: &mut Locks<'_>,
    existed: bool,
    size: Option<u64>,
) -> Result<Option<(OpResult, Option<RepOp>)>, RemoteError> {
    let existed = || if existed { Ok(()) } else { Err(missing(name)) };
    let (lock, change) = match op {
        ObjectOp::GetLockInfo { name: lock } => {
            existed()?;
            return Ok(Some((OpResult::Lock(locks.before(lock, caller.now_ms)), None)));
        }
        ObjectOp::ListLocks => {
            existed()?;
            return Ok(Some((OpResult::Locks(locks.names(caller.now_ms)), None)));
        }
        ObjectOp::AssertLocked { name: lock, kind, cookie, tag } => {
            existed()?;
            locks.assert_held(lock, caller, *kind, cookie, tag)?;
            return Ok(Some((OpResult::Done, None)));
        }
        ObjectOp::Lock { name: lock, kind, cookie, tag, description, duration_ms, renew } => {
            let take = LockChange::Take {
                kind: *kind,
                cookie,
                tag,
                description,
                duration_ms: *duration_ms,
                renew: *renew,
            };
            (lock, take)
        }
        ObjectOp::Unlock { name: lock, cookie } => (lock, LockChange::Release { cookie }),
        ObjectOp::BreakLock { name: lock, locker, cookie } => {
            (lock, LockChange::Break { locker, cookie })
        }
        _ => return Ok(None),
    };
    size.ok_or_else(|| missing(name))?;
    let rep = locks.change(lock, caller, &change)?;
    Ok(Some((OpResult::Done, Some(rep))))
}

/// Runs `op` if it is a read or a guard, against the object as it was (`meta`), and adds
/// its result to `out`; `false` if it is a write.
#[allow(clippy::too_many_arguments)]
fn read_op(
    store: &dyn ObjectStore,
    c: CollectionId,
    oid: &ObjectId,
    name: &ObjectName,
    index: usize,
    op: &ObjectOp,
    meta: &Option<ObjectMeta>,
    bytes: &mut dyn ObjectBytes,
    out: &mut Executed,
) -> Result<bool, RemoteError> {
    let existing = || meta.as_ref().ok_or_else(|| missing(name));
    let result = match op {
        ObjectOp::Read { offset, len } => {
            existing()?;
            let len = (*len).min(READ_BYTES_MAX.saturating_sub(out.read_data.len() as u64));
            let read = bytes.read(*offset, len)?;
            out.read_data.extend_from_slice(&read);
            OpResult::Data { len: read.len() as u64 }
        }
        ObjectOp::Extents { offset, len } => {
            existing()?;
            OpResult::Extents(bytes.extents(*offset, *len)?)
        }
        ObjectOp::Stat => {
            let m = existing()?;
            OpResult::Stat { size: m.size, version: m.version, mtime_ms: m.mtime_ms }
        }
        ObjectOp::GetXattr { name: x } => OpResult::Xattr(existing()?.xattrs.get(x).cloned()),
        ObjectOp::GetXattrs => {
            let mut xattrs = existing()?.xattrs.clone();
            xattrs.retain(|n, _| !n.starts_with(RESERVED_XATTR_PREFIX));
            OpResult::Xattrs(xattrs)
        }
        ObjectOp::OmapGet { keys } => {
            existing()?;
            OpResult::Omap(store.omap_get(c, oid, keys).map_err(store_error)?)
        }
        ObjectOp::OmapList { after, max } => {
            existing()?;
            let max = (*max).clamp(1, LIST_PAGE_MAX) as usize;
            let mut entries =
                store.omap_list(c, oid, after.as_deref(), max + 1).map_err(store_error)?;
            let more = entries.len() > max;
            entries.truncate(max);
            OpResult::OmapList { entries, more }
        }
        ObjectOp::AssertExists => {
            existing()?;
            OpResult::Done
        }
        ObjectOp::ListSnaps | ObjectOp::Rollback { .. } => {
            return Err(RemoteError::new(
                ErrorCode::Unsupported,
                "snapshots of erasure-coded objects are not supported yet",
            ));
        }
        ObjectOp::CmpXattr { name: x, op: cmp, value } => {
            let have =
                meta.as_ref().and_then(|m| m.xattrs.get(x)).map(Vec::as_slice).unwrap_or(&[]);
            if !compare(*cmp, have, value) {
                return Err(canceled(index, &format!("xattr {x} comparison")));
            }
            OpResult::Done
        }
        ObjectOp::AssertVersion { version } => {
            let have = meta.as_ref().map(|m| m.version).unwrap_or_default();
            if have != *version {
                return Err(canceled(index, &format!("version is {have}, not {version}")));
            }
            OpResult::Done
        }
        _ => return Ok(false),
    };
    out.results.push(result);
    Ok(true)
}

/// The `RepOp` of a write, which every copy applies identically; `size` is the object's
/// size as the ops before left it (`None`: it does not exist) and is updated.
fn write_op(
    name: &ObjectName,
    write: &ObjectOp,
    size: &mut Option<u64>,
) -> Result<RepOp, RemoteError> {
    let exists = |size: &Option<u64>| size.ok_or_else(|| missing(name));
    let rep = match write {
        ObjectOp::Create { exclusive } => {
            if *exclusive && size.is_some() {
                return Err(RemoteError::new(
                    ErrorCode::AlreadyExists,
                    format!("object {name} already exists"),
                ));
            }
            *size = Some(size.unwrap_or(0));
            RepOp::Create
        }
        ObjectOp::Write { offset, len } => {
            let end = offset
                .checked_add(*len)
                .ok_or_else(|| invalid("write past the end of the address space"))?;
            *size = Some(size.unwrap_or(0).max(end));
            RepOp::Write { offset: *offset, len: *len }
        }
        ObjectOp::WriteFull { len } => {
            *size = Some(*len);
            RepOp::WriteFull { len: *len }
        }
        ObjectOp::Append { len } => {
            let offset = size.unwrap_or(0);
            *size = Some(offset.checked_add(*len).ok_or_else(|| invalid("append overflows"))?);
            RepOp::Write { offset, len: *len }
        }
        ObjectOp::Truncate { size: s } => {
            exists(size)?;
            *size = Some(*s);
            RepOp::Truncate { size: *s }
        }
        ObjectOp::Zero { offset, len } => {
            exists(size)?;
            RepOp::Zero { offset: *offset, len: *len }
        }
        ObjectOp::Remove => {
            exists(size)?;
            *size = None;
            RepOp::Remove
        }
        ObjectOp::SetXattr { name: x, value } => {
            exists(size)?;
            RepOp::SetXattr { name: x.clone(), value: value.clone() }
        }
        ObjectOp::RemoveXattr { name: x } => {
            exists(size)?;
            RepOp::RemoveXattr { name: x.clone() }
        }
        ObjectOp::OmapSet { entries } => {
            *size = Some(size.unwrap_or(0));
            RepOp::OmapSet { entries: entries.clone() }
        }
        ObjectOp::OmapRemove { keys } => {
            exists(size)?;
            RepOp::OmapRemove { keys: keys.clone() }
        }
        ObjectOp::OmapRemoveRange { start, end } => {
            exists(size)?;
            RepOp::OmapRemoveRange { start: start.clone(), end: end.clone() }
        }
        ObjectOp::OmapClear => {
            exists(size)?;
            RepOp::OmapClear
        }
        read => unreachable!("{read:?} is a read or a guard, run by read_op"),
    };
    if size.is_some_and(|s| s > objectstore::OBJECT_BYTES_MAX) {
        return Err(RemoteError::new(
            ErrorCode::TooLarge,
            format!("object {name} would be larger than {} bytes", objectstore::OBJECT_BYTES_MAX),
        ));
    }
    Ok(rep)
}

/// The store transaction for `ops` on one object, stamped with `version` if the object
/// exists afterwards. Used by the primary and by every replica.
pub fn transaction(
    c: CollectionId,
    oid: &ObjectId,
    ops: &[RepOp],
    data: &Bytes,
    version: Version,
    txn: &mut Transaction,
) -> Result<(), RemoteError> {
    let mut at = 0usize;
    let mut take = |len: u64| -> Result<Bytes, RemoteError> {
        let end = at
            .checked_add(len as usize)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| invalid("ops take more data than was sent"))?;
        let slice = data.slice(at..end);
        at = end;
        Ok(slice)
    };
    let mut exists = true;
    let mut mtime_ms = 0;
    for op in ops {
        let oid = oid.clone();
        let tx_op = match op {
            RepOp::Create => TxOp::Create { c, oid, exclusive: false },
            RepOp::Write { offset, len } => {
                TxOp::Write { c, oid, offset: *offset, data: take(*len)? }
            }
            RepOp::WriteFull { len } => TxOp::WriteFull { c, oid, data: take(*len)? },
            RepOp::Truncate { size } => TxOp::Truncate { c, oid, size: *size },
            RepOp::Zero { offset, len } => TxOp::Zero { c, oid, offset: *offset, len: *len },
            RepOp::Remove => {
                exists = false;
                txn.push(TxOp::Remove { c, oid });
                continue;
            }
            RepOp::SetXattr { name, value } => {
                TxOp::SetXattr { c, oid, name: name.clone(), value: value.clone() }
            }
            RepOp::RemoveXattr { name } => TxOp::RemoveXattr { c, oid, name: name.clone() },
            RepOp::OmapSet { entries } => {
                txn.push(TxOp::Create { c, oid: oid.clone(), exclusive: false });
                TxOp::OmapSet { c, oid, entries: entries.clone() }
            }
            RepOp::OmapRemove { keys } => TxOp::OmapRemove { c, oid, keys: keys.clone() },
            RepOp::OmapRemoveRange { start, end } => {
                TxOp::OmapRemoveRange { c, oid, start: start.clone(), end: end.clone() }
            }
            RepOp::OmapClear => TxOp::OmapClear { c, oid },
            RepOp::SetVersion { mtime_ms: m } => {
                mtime_ms = *m;
                continue;
            }
            RepOp::Clone { snap, drop_xattrs } => {
                let to = ObjectId { snap: *snap, ..oid.clone() };
                txn.push(TxOp::Clone { c, from: oid, to: to.clone() });
                for name in drop_xattrs {
                    txn.push(TxOp::RemoveXattr { c, oid: to.clone(), name: name.clone() });
                }
                continue;
            }
            RepOp::RollbackTo { snap, keep } => {
                let from = ObjectId { snap: *snap, ..oid.clone() };
                txn.push(TxOp::Clone { c, from, to: oid.clone() });
                for (name, value) in keep {
                    txn.push(TxOp::SetXattr {
                        c,
                        oid: oid.clone(),
                        name: name.clone(),
                        value: value.clone(),
                    });
                }
                exists = true;
                continue;
            }
            RepOp::RemoveClone { snap } => {
                txn.push(TxOp::Remove { c, oid: ObjectId { snap: *snap, ..oid } });
                continue;
            }
        };
        txn.push(tx_op);
        exists = true;
    }
    if exists {
        txn.push(TxOp::SetVersion { c, oid: oid.clone(), version, mtime_ms });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use objectstore::{KvObjectStore, MemoryEngine};
    use placement::{PgId, PoolId};

    use super::*;

    const ME: Caller<'static> =
        Caller { client: "client.admin", addr: "127.0.0.1:1", now_ms: 1_000 };

    #[test]
    fn reserved_xattrs_are_neither_set_read_nor_listed_by_clients() {
        let store = KvObjectStore::new(MemoryEngine::new());
        let c = CollectionId::replicated(PgId { pool: PoolId(1), seed: 0 });
        let name = ObjectName { namespace: String::new(), name: b"obj".to_vec() };
        let oid = object_id(&name);
        let mut txn = Transaction::new();
        txn.push(TxOp::CreateCollection(c));
        let ops = [
            RepOp::Create,
            RepOp::SetXattr { name: "\0ec.size".into(), value: vec![1] },
            RepOp::SetXattr { name: "user".into(), value: vec![2] },
        ];
        transaction(c, &oid, &ops, &Bytes::new(), Version::new(1, 1), &mut txn).unwrap();
        store.apply(&txn).unwrap();
        let reserved = "\0ec.size".to_owned();
        for op in [
            ObjectOp::GetXattr { name: reserved.clone() },
            ObjectOp::SetXattr { name: reserved.clone(), value: vec![9] },
            ObjectOp::RemoveXattr { name: reserved.clone() },
            ObjectOp::CmpXattr { name: reserved.clone(), op: CmpOp::Eq, value: vec![1] },
        ] {
            let e = execute_plain(&store, c, &name, &[op], &Bytes::new()).unwrap_err();
            assert_eq!(e.code, ErrorCode::Invalid, "{e:?}");
        }
        let listed =
            execute_plain(&store, c, &name, &[ObjectOp::GetXattrs], &Bytes::new()).unwrap();
        let OpResult::Xattrs(xattrs) = &listed.results[0] else { panic!("{listed:?}") };
        assert_eq!(xattrs.keys().collect::<Vec<_>>(), ["user"]);
    }

    #[test]
    fn a_compound_op_gives_each_op_its_result_and_the_writes_their_rep_ops_in_order() {
        let store = KvObjectStore::new(MemoryEngine::new());
        let c = CollectionId::replicated(PgId { pool: PoolId(1), seed: 0 });
        let mut txn = Transaction::new();
        txn.push(TxOp::CreateCollection(c));
        store.apply(&txn).unwrap();
        let name = ObjectName { namespace: String::new(), name: b"new".to_vec() };
        let bulk = Bytes::from_static(b"hello world!");
        let ops = [
            ObjectOp::AssertVersion { version: Version::ZERO },
            ObjectOp::Create { exclusive: true },
            ObjectOp::Write { offset: 0, len: 5 },
            ObjectOp::Append { len: 7 },
            ObjectOp::SetXattr { name: "k".into(), value: vec![1] },
            ObjectOp::Truncate { size: 3 },
        ];
        let done = execute_plain(&store, c, &name, &ops, &bulk).unwrap();
        assert_eq!(done.results, vec![OpResult::Done; 6]);
        assert_eq!(
            done.rep_ops,
            [
                RepOp::Create,
                RepOp::Write { offset: 0, len: 5 },
                RepOp::Write { offset: 5, len: 7 },
                RepOp::SetXattr { name: "k".into(), value: vec![1] },
                RepOp::Truncate { size: 3 },
            ]
        );
        assert_eq!(done.rep_data, bulk);
        assert_eq!((done.size_before, done.size_after, done.exists_after), (None, Some(3), true));
        // Reads of an object that does not exist, a failed guard, a payload of the wrong
        // length: each refused with its code, nothing to replicate.
        let stat = execute_plain(&store, c, &name, &[ObjectOp::Stat], &Bytes::new()).unwrap_err();
        assert_eq!(stat.code, ErrorCode::NotFound);
        let guard = [ObjectOp::AssertVersion { version: Version::new(1, 1) }, ObjectOp::Remove];
        let guarded = execute_plain(&store, c, &name, &guard, &Bytes::new()).unwrap_err();
        assert_eq!(guarded.code, ErrorCode::Canceled);
        let short = execute_plain(&store, c, &name, &[ObjectOp::WriteFull { len: 4 }], &bulk);
        assert_eq!(short.unwrap_err().code, ErrorCode::Invalid);
        let remove =
            execute_plain(&store, c, &name, &[ObjectOp::Remove], &Bytes::new()).unwrap_err();
        assert_eq!(remove.code, ErrorCode::NotFound, "a remove of what does not exist");
    }

    #[test]
    fn a_lock_is_taken_with_the_writes_of_its_op_or_not_at_all() {
        let store = KvObjectStore::new(MemoryEngine::new());
        let c = CollectionId::replicated(PgId { pool: PoolId(1), seed: 0 });
        let mut txn = Transaction::new();
        txn.push(TxOp::CreateCollection(c));
        store.apply(&txn).unwrap();
        let name = ObjectName { namespace: String::new(), name: b"header".to_vec() };
        let lock = |cookie: &str| ObjectOp::Lock {
            name: "owner".into(),
            kind: proto::osd::LockKind::Exclusive,
            cookie: cookie.into(),
            tag: String::new(),
            description: String::new(),
            duration_ms: None,
            renew: false,
        };
        // On a missing object: refused, nothing to replicate.
        let e = execute_plain(&store, c, &name, &[lock("a")], &Bytes::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        // Create, take the lock and write in one op: one RepOp each, in order.
        let bulk = Bytes::from_static(b"v1");
        let ops = [ObjectOp::Create { exclusive: true }, lock("a"), ObjectOp::WriteFull { len: 2 }];
        let done = execute_plain(&store, c, &name, &ops, &bulk).unwrap();
        assert!(matches!(
            done.rep_ops.as_slice(),
            [RepOp::Create, RepOp::SetXattr { name, .. }, RepOp::WriteFull { len: 2 }]
                if name == "\0lock.owner"
        ));
        let mut txn = Transaction::new();
        transaction(
            c,
            &object_id(&name),
            &done.rep_ops,
            &done.rep_data,
            Version::new(1, 1),
            &mut txn,
        )
        .unwrap();
        store.apply(&txn).unwrap();
        // Held: a guard of it passes, its xattr is hidden from clients, another cookie
        // is refused.
        let info = ObjectOp::GetLockInfo { name: "owner".into() };
        let answer =
            execute_plain(&store, c, &name, &[info.clone(), ObjectOp::ListLocks], &Bytes::new())
                .unwrap();
        let OpResult::Lock(Some(held)) = &answer.results[0] else { panic!("{answer:?}") };
        assert_eq!(
            (held.holders[0].client.as_str(), held.holders[0].cookie.as_str()),
            ("client.admin", "a")
        );
        assert_eq!(answer.results[1], OpResult::Locks(vec!["owner".into()]));
        let guard = ObjectOp::AssertLocked {
            name: "owner".into(),
            kind: proto::osd::LockKind::Exclusive,
            cookie: "a".into(),
            tag: String::new(),
        };
        execute_plain(&store, c, &name, &[guard], &Bytes::new()).unwrap();
        let hidden =
            execute_plain(&store, c, &name, &[ObjectOp::GetXattrs], &Bytes::new()).unwrap();
        assert_eq!(hidden.results[0], OpResult::Xattrs(Default::default()));
        let e = execute_plain(&store, c, &name, &[lock("b")], &Bytes::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        // A failed guard after an unlock refuses the whole op: the lock is still held.
        let ops = [
            ObjectOp::Unlock { name: "owner".into(), cookie: "a".into() },
            ObjectOp::AssertVersion { version: Version::ZERO },
        ];
        let e = execute_plain(&store, c, &name, &ops, &Bytes::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::Canceled);
        let answer = execute_plain(&store, c, &name, &[info], &Bytes::new()).unwrap();
        assert!(matches!(&answer.results[0], OpResult::Lock(Some(_))), "{answer:?}");
        // A remove takes the locks with it: a lock op after it in the same request, on the
        // object created again, finds none.
        let ops = [
            ObjectOp::Remove,
            ObjectOp::Create { exclusive: true },
            ObjectOp::Unlock { name: "owner".into(), cookie: "a".into() },
        ];
        let e = execute_plain(&store, c, &name, &ops, &Bytes::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(e.message.contains("holds no lock owner"), "{}", e.message);
    }

    /// Executes a request from `ME` with no snapshot context or snapshot read.
    fn execute_plain(
        store: &KvObjectStore<MemoryEngine>,
        c: CollectionId,
        name: &ObjectName,
        ops: &[ObjectOp],
        bulk: &Bytes,
    ) -> Result<Executed, RemoteError> {
        execute(store, c, name, ME, ops, bulk, &SnapArgs::default())
    }

    /// Executes a request and applies its changes as every copy would, at the next version.
    fn run(
        store: &KvObjectStore<MemoryEngine>,
        name: &ObjectName,
        ops: &[ObjectOp],
        bulk: &'static [u8],
        snap: &SnapArgs,
        version: &mut u64,
    ) -> Result<Executed, RemoteError> {
        let c = CollectionId::replicated(PgId { pool: PoolId(1), seed: 0 });
        let out = execute(store, c, name, ME, ops, &Bytes::from_static(bulk), snap)?;
        if !out.rep_ops.is_empty() {
            *version += 1;
            let mut txn = Transaction::new();
            let at = Version::new(1, *version);
            transaction(c, &object_id(name), &out.rep_ops, &out.rep_data, at, &mut txn)?;
            store.apply(&txn).map_err(store_error)?;
        }
        Ok(out)
    }

    #[test]
    fn extents_list_the_chunks_of_the_head_or_of_a_clone_that_hold_data() {
        const CHUNK: u64 = objectstore::CHUNK_BYTES;
        let store = KvObjectStore::new(MemoryEngine::new());
        let c = CollectionId::replicated(PgId { pool: PoolId(1), seed: 0 });
        store.apply(Transaction::new().push(TxOp::CreateCollection(c))).unwrap();
        let name = ObjectName { namespace: String::new(), name: b"disk".to_vec() };
        let v = &mut 0;
        let chunk: &'static [u8] = Vec::leak(vec![7u8; CHUNK as usize]);
        let plain = SnapArgs::default();
        let extents = |snap: &SnapArgs, offset, len, v: &mut u64| {
            let ops = [ObjectOp::Extents { offset, len }];
            match run(&store, &name, &ops, b"", snap, v).map(|out| out.results) {
                Ok(results) => match &results[..] {
                    [OpResult::Extents(extents)] => Ok(extents.clone()),
                    other => panic!("{other:?}"),
                },
                Err(e) => Err(e.code),
            }
        };
        assert_eq!(extents(&plain, 0, u64::MAX, v), Err(ErrorCode::NotFound));
        // Chunk 1 written, the object four chunks long: chunks 0, 2 and 3 are holes.
        run(&store, &name, &[ObjectOp::Write { offset: CHUNK, len: CHUNK }], chunk, &plain, v)
            .unwrap();
        run(&store, &name, &[ObjectOp::Truncate { size: 4 * CHUNK }], b"", &plain, v).unwrap();
        assert_eq!(extents(&plain, 0, u64::MAX, v), Ok(vec![(CHUNK, CHUNK)]));
        assert_eq!(extents(&plain, CHUNK + 10, 20, v), Ok(vec![(CHUNK + 10, 20)]));
        assert_eq!(extents(&plain, 2 * CHUNK, u64::MAX, v), Ok(vec![]));
        // After snapshot 2, chunk 1 is zeroed and ten bytes land in chunk 3: the head
        // and the clone list what each holds.
        let snap2 = SnapArgs { context: Some(SnapContext { seq: 2, snaps: vec![2] }), read: None };
        run(&store, &name, &[ObjectOp::Zero { offset: CHUNK, len: CHUNK }], b"", &snap2, v)
            .unwrap();
        let write = [ObjectOp::Write { offset: 3 * CHUNK, len: 10 }];
        run(&store, &name, &write, &chunk[..10], &snap2, v).unwrap();
        assert_eq!(extents(&plain, 0, u64::MAX, v), Ok(vec![(3 * CHUNK, 10)]));
        let at2 = SnapArgs { context: None, read: Some(2) };
        assert_eq!(extents(&at2, 0, u64::MAX, v), Ok(vec![(CHUNK, CHUNK)]));
    }

    #[test]
    fn writes_after_a_snapshot_keep_clones_that_reads_rollbacks_and_listings_find() {
        let store = KvObjectStore::new(MemoryEngine::new());
        let c = CollectionId::replicated(PgId { pool: PoolId(1), seed: 0 });
        store.apply(Transaction::new().push(TxOp::CreateCollection(c))).unwrap();
        let name = ObjectName { namespace: String::new(), name: b"disk".to_vec() };
        let v = &mut 0;
        let writes = |seq, snaps: &[u64]| SnapArgs {
            context: Some(SnapContext { seq, snaps: snaps.to_vec() }),
            read: None,
        };
        let at = |snap| SnapArgs { context: None, read: Some(snap) };
        let read = [ObjectOp::Read { offset: 0, len: 100 }];
        let read_at = |snap, v: &mut u64| match run(&store, &name, &read, b"", &at(snap), v) {
            Ok(out) => Ok(String::from_utf8(out.read_data).unwrap()),
            Err(e) => Err(e.code),
        };
        run(&store, &name, &[ObjectOp::WriteFull { len: 8 }], b"original", &writes(0, &[]), v)
            .unwrap();
        // Snapshot 3 taken: the next write keeps the object as clone 3 first.
        let write = [ObjectOp::Write { offset: 0, len: 3 }];
        let first = run(&store, &name, &write, b"NEW", &writes(3, &[3]), v).unwrap();
        assert!(matches!(first.rep_ops[0], RepOp::Clone { snap: 3, .. }), "{:?}", first.rep_ops);
        let again = run(&store, &name, &write, b"new", &writes(3, &[3]), v).unwrap();
        assert!(!again.rep_ops.iter().any(|op| matches!(op, RepOp::Clone { .. })));
        assert_eq!(read_at(3, v), Ok("original".into()));
        assert_eq!(read_at(4, v), Ok("newginal".into()), "a later snapshot is the head");
        let listed = run(&store, &name, &[ObjectOp::ListSnaps], b"", &SnapArgs::default(), v);
        let OpResult::Snaps(list) = &listed.unwrap().results[0] else { panic!("not snaps") };
        assert_eq!((list.seq, list.head_exists), (3, true));
        assert_eq!(
            list.clones,
            vec![proto::osd::CloneInfo { id: 3, snaps: vec![3], size: 8, overlap: vec![(3, 5)] }]
        );
        // Snapshot 5, then the head is removed: clone 5 keeps it, the head is a whiteout.
        let removed = run(&store, &name, &[ObjectOp::Remove], b"", &writes(5, &[5, 3]), v).unwrap();
        assert!(removed.kept_after && !removed.exists_after);
        let stat = run(&store, &name, &[ObjectOp::Stat], b"", &SnapArgs::default(), v);
        assert_eq!(stat.unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(read_at(5, v), Ok("newginal".into()));
        assert_eq!(read_at(3, v), Ok("original".into()));
        assert_eq!(read_at(6, v), Err(ErrorCode::NotFound));
        // Rolled back to snapshot 3; a lock taken then stays through a rollback to 5.
        let back = [ObjectOp::Rollback { snap: 3 }];
        let whiteout_version = Version::new(1, *v);
        let back = run(&store, &name, &back, b"", &writes(5, &[5, 3]), v).unwrap();
        assert_eq!(back.prior, whiteout_version, "a whiteout's record is what a write follows");
        assert_eq!(read_at(6, v), Ok("original".into()));
        let lock = ObjectOp::Lock {
            name: "owner".into(),
            kind: proto::osd::LockKind::Exclusive,
            cookie: "c".into(),
            tag: String::new(),
            description: String::new(),
            duration_ms: None,
            renew: false,
        };
        run(&store, &name, &[lock], b"", &writes(5, &[5, 3]), v).unwrap();
        let back = [ObjectOp::Rollback { snap: 5 }];
        run(&store, &name, &back, b"", &writes(5, &[5, 3]), v).unwrap();
        assert_eq!(read_at(6, v), Ok("newginal".into()));
        let info = [ObjectOp::GetLockInfo { name: "owner".into() }];
        let info = run(&store, &name, &info, b"", &SnapArgs::default(), v).unwrap();
        assert!(matches!(&info.results[0], OpResult::Lock(Some(l)) if l.holders.len() == 1));
        // The clones hold no lock and no snap set of their own.
        let clone = ObjectId { snap: 5, ..object_id(&name) };
        let xattrs = store.stat(c, &clone).unwrap().unwrap().xattrs;
        assert!(xattrs.keys().all(|k| !k.starts_with(RESERVED_XATTR_PREFIX)), "{xattrs:?}");
        // Bad requests change nothing.
        let before = *v;
        let bad: [(&[ObjectOp], &[u8], SnapArgs); 5] = [
            (&write, b"bad", at(3)),
            (&[ObjectOp::ListSnaps, ObjectOp::Stat], b"", SnapArgs::default()),
            (&write, b"bad", writes(7, &[3, 5])),
            (&write, b"bad", writes(2, &[3])),
            (&read, b"", at(0)),
        ];
        for (ops, bulk, snap) in bad {
            let e = run(&store, &name, ops, bulk, &snap, v).unwrap_err();
            assert_eq!(e.code, ErrorCode::Invalid, "{e:?}");
        }
        assert_eq!(*v, before);
        assert_eq!(read_at(6, v), Ok("newginal".into()));

        // Trimming snapshot 3 drops its clone; trimming 5 too leaves nothing to keep.
        let removed = [ObjectOp::Remove];
        run(&store, &name, &removed, b"", &writes(5, &[5, 3]), v).unwrap();
        let trim = |gone: &[u64], v: &mut u64| {
            let out = super::trim(&store, c, &name, |s| gone.contains(&s)).unwrap();
            let Some(out) = out else { return false };
            *v += 1;
            let mut txn = Transaction::new();
            let at = Version::new(1, *v);
            transaction(c, &object_id(&name), &out.rep_ops, &out.rep_data, at, &mut txn).unwrap();
            store.apply(&txn).unwrap();
            true
        };
        assert!(trim(&[3], v));
        assert!(!trim(&[3], v), "trimmed already");
        assert_eq!(read_at(3, v), Err(ErrorCode::NotFound));
        assert_eq!(read_at(5, v), Ok("newginal".into()), "snapshot 5 lives");
        assert!(store.stat(c, &ObjectId { snap: 3, ..object_id(&name) }).unwrap().is_none());
        assert!(trim(&[3, 5], v));
        assert!(store.stat(c, &object_id(&name)).unwrap().is_none(), "the whiteout goes");
        assert!(store.stat(c, &ObjectId { snap: 5, ..object_id(&name) }).unwrap().is_none());
    }
}
