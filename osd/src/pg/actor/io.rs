//! The store and network helpers every part of the PG uses: its collection (loading it,
//! saving the info, switching an erasure-coded shard, removing old ones), an object's
//! whole state for a push, and `Peers`, what a task the PG starts needs to call the OSDs of
//! its interval and report back.

use objectstore::{ObjectId, ObjectMeta, SNAP_HEAD};
use proto::osd::{ClonePush, ObjectBody};

use super::*;
use crate::pg::snaps::SnapSet;

impl Pg {
    /// Moves to another shard's collection: this OSD's position in an erasure-coded PG
    /// changed, so the shard it held is not the one it serves now. The new position's
    /// collection is used as it is (empty, or what this OSD kept from an earlier time at
    /// that position) and recovered or backfilled. The old shard is kept until the PG is
    /// clean (`remove_other_shards`): until every position is complete again, it may be
    /// the only copy of that shard left, and a move back finds it.
    pub(super) fn switch_shard(&mut self, shard: u8) {
        if self.exists {
            tracing::warn!(pg = %self.id, from = self.c.shard, to = shard, "shard position changed; the old shard is kept until the PG is clean");
        }
        self.c = CollectionId { pg: self.id, shard };
        (self.exists, self.info, self.log, self.rollbacks) =
            load(self.shared.store.as_ref(), self.c);
    }

    /// This PG's collections other than the current one: shards this OSD held at another
    /// position. A replicated PG has only its one collection, so the store is not listed.
    pub(super) fn other_shards(&self) -> Result<Vec<CollectionId>, StoreError> {
        if self.c.shard == objectstore::NO_SHARD {
            return Ok(Vec::new());
        }
        let all = self.shared.store.collections()?;
        Ok(all.into_iter().filter(|c| c.pg == self.id && *c != self.c).collect())
    }

    /// Removes this PG's collections other than the current one (`other_shards`), once the
    /// PG no longer needs them (clean, or a stray).
    pub(super) fn remove_other_shards(&self) {
        let others = match self.other_shards() {
            Ok(others) => others,
            Err(e) => {
                tracing::error!(pg = %self.id, error = %e, "cannot list collections; old shards stay");
                return;
            }
        };
        for c in others {
            tracing::info!(pg = %self.id, collection = %c, "removing a shard this OSD held at another position");
            let txn = Transaction { ops: vec![TxOp::RemoveCollection(c)] };
            if let Err(e) = self.shared.store.apply(&txn) {
                tracing::error!(pg = %self.id, collection = %c, error = %e, "cannot remove an old shard");
            }
        }
    }

    pub(super) fn remove_collection(&mut self) {
        if self.exists {
            let txn = Transaction { ops: vec![TxOp::RemoveCollection(self.c)] };
            if let Err(e) = self.shared.store.apply(&txn) {
                tracing::error!(pg = %self.id, error = %e, "cannot remove the PG's collection");
            }
            self.exists = false;
            self.rollbacks.clear();
        }
    }

    pub(super) fn save_info(&mut self) {
        self.ensure_collection_and(vec![persist::put_info(self.c, &self.info)]);
    }

    pub(super) fn ensure_collection_and(&mut self, mut ops: Vec<TxOp>) {
        if !self.exists {
            ops.insert(0, TxOp::CreateCollection(self.c));
            self.exists = true;
        }
        if let Err(e) = self.shared.store.apply(&Transaction { ops }) {
            tracing::error!(pg = %self.id, error = %e, "cannot write the PG's info");
        }
    }

    /// Asks the daemon to pass an acting set to the monitors (`pg_temp`). A full queue
    /// drops the ask: every caller asks again after `PG_TEMP_RETRY` until the map changes.
    pub(super) fn ask_pg_temp(&self, osds: Vec<Option<u32>>) {
        if self.shared.pg_temp.try_send((self.id, osds)).is_err() {
            tracing::debug!(pg = %self.id, "the pg_temp queue is full; asking again later");
        }
    }

    pub(super) fn peers(&self) -> Peers {
        Peers {
            pg: self.id,
            interval: self.interval,
            inbox: self.inbox.clone(),
            conns: self.shared.conns.clone(),
            map: self.map.clone(),
        }
    }
}

/// An object's whole state for a push: metadata, omap, and its clones', and their data as
/// the bulk payload (the head's, then each clone's).
pub fn read_state(
    store: &dyn ObjectStore,
    c: CollectionId,
    object: &ObjectName,
) -> Result<(ObjectState, Bytes), StoreError> {
    let oid = object_id(object);
    let Some(meta) = store.stat(c, &oid)? else {
        let state = ObjectState {
            object: object.clone(),
            version: Version::ZERO,
            body: None,
            clones: vec![],
        };
        return Ok((state, Bytes::new()));
    };
    let mut data = store.read(c, &oid, 0, meta.size)?;
    let set = snap_set(&meta, object)?;
    let mut clones = Vec::with_capacity(set.clones.len());
    for clone in &set.clones {
        let clone_oid = ObjectId { snap: clone.id, ..oid.clone() };
        let clone_meta = store.stat(c, &clone_oid)?.ok_or_else(|| {
            StoreError::corrupt(
                format!("clone {} of {object}", clone.id),
                "is in its snap set but not in the store",
            )
        })?;
        if data.len() as u64 + clone_meta.size > proto::osd::OSD_BULK_BYTES_MAX as u64 {
            return Err(StoreError::invalid(
                format!("the push of {object}"),
                format!("it and its clones are above {} bytes", proto::osd::OSD_BULK_BYTES_MAX),
            ));
        }
        data.extend(store.read(c, &clone_oid, 0, clone_meta.size)?);
        let body = body(store, c, &clone_oid, clone_meta.clone())?;
        clones.push(ClonePush { snap: clone.id, version: clone_meta.version, body });
    }
    let version = meta.version;
    let body = body(store, c, &oid, meta)?;
    let state = ObjectState { object: object.clone(), version, body: Some(body), clones };
    Ok((state, Bytes::from(data)))
}

fn body(
    store: &dyn ObjectStore,
    c: CollectionId,
    oid: &ObjectId,
    meta: ObjectMeta,
) -> Result<ObjectBody, StoreError> {
    let omap = store.omap_all(c, oid)?;
    Ok(ObjectBody { size: meta.size, mtime_ms: meta.mtime_ms, xattrs: meta.xattrs, omap })
}

fn snap_set(meta: &ObjectMeta, object: &ObjectName) -> Result<SnapSet, StoreError> {
    SnapSet::load(Some(&meta.xattrs), object)
        .map_err(|e| StoreError::corrupt(format!("the snap set of {object}"), e.message))
}

/// Replaces an object and its clones with a pushed state.
pub fn apply_state(
    store: &dyn ObjectStore,
    c: CollectionId,
    state: &ObjectState,
    data: &Bytes,
) -> Result<(), StoreError> {
    let oid = object_id(&state.object);
    let mut txn = Transaction::new();
    txn.push(TxOp::CreateCollection(c));
    // The clones this copy has go, whatever the push brings.
    if let Some(meta) = store.stat(c, &oid)?
        && let Ok(set) = snap_set(&meta, &state.object)
    {
        for clone in set.clones {
            txn.push(TxOp::Remove { c, oid: ObjectId { snap: clone.id, ..oid.clone() } });
        }
    }
    txn.push(TxOp::Remove { c, oid: oid.clone() });
    let Some(head) = &state.body else { return apply_waiting(store, &txn) };
    let want =
        state.clones.iter().try_fold(head.size, |sum, clone| sum.checked_add(clone.body.size));
    if want != Some(data.len() as u64) {
        return Err(StoreError::invalid(
            format!("the push of {}", state.object),
            format!("{} bytes for an object of {}", data.len(), head.size),
        ));
    }
    let mut at = 0usize;
    let parts = std::iter::once((SNAP_HEAD, state.version, head))
        .chain(state.clones.iter().map(|clone| (clone.snap, clone.version, &clone.body)));
    for (snap, version, body) in parts {
        let oid = ObjectId { snap, ..oid.clone() };
        let bytes = data.slice(at..at + body.size as usize);
        at += body.size as usize;
        txn.push(TxOp::Remove { c, oid: oid.clone() });
        txn.push(TxOp::WriteFull { c, oid: oid.clone(), data: bytes });
        for (name, value) in &body.xattrs {
            txn.push(TxOp::SetXattr {
                c,
                oid: oid.clone(),
                name: name.clone(),
                value: value.clone(),
            });
        }
        if !body.omap.is_empty() {
            txn.push(TxOp::OmapSet { c, oid: oid.clone(), entries: body.omap.clone() });
        }
        txn.push(TxOp::SetVersion { c, oid, version, mtime_ms: body.mtime_ms });
    }
    apply_waiting(store, &txn)
}

/// A PG's info and log from its collection, if it has one.
/// A collection's info, log and rollback stashes (`Loaded::exists`: whether it has an info).
pub(super) fn load(store: &dyn ObjectStore, c: CollectionId) -> Loaded {
    // Only erasure-coded shards keep stashes: a replicated PG starts without the scan.
    let rollbacks = if c.shard == objectstore::NO_SHARD {
        Vec::new()
    } else {
        persist::rollback_versions(store, c).unwrap_or_else(|e| {
            tracing::error!(%c, error = %e, "cannot list the PG's rollback stashes; none kept");
            Vec::new()
        })
    };
    let rollbacks = rollbacks.into_iter().collect();
    match persist::load(store, c) {
        Ok(Some((info, log))) => (true, info, log, rollbacks),
        Ok(None) => (false, PgInfo::default(), PgLog::default(), rollbacks),
        Err(e) => {
            tracing::error!(%c, error = %e, "cannot load the PG's log; serving it empty");
            (false, PgInfo::default(), PgLog::default(), rollbacks)
        }
    }
}

pub(super) type Loaded = (bool, PgInfo, PgLog, BTreeSet<Version>);

/// The other OSDs of `copies` (flagged `false`) and the backfill targets (flagged
/// `backfill_flag`), the shape in which activation and replication address their peers.
pub(super) fn peer_targets(
    me: u32,
    copies: &[u32],
    backfill: &[u32],
    backfill_flag: bool,
) -> Vec<(u32, bool)> {
    copies
        .iter()
        .filter(|&&o| o != me)
        .map(|&o| (o, false))
        .chain(backfill.iter().map(|&o| (o, backfill_flag)))
        .collect()
}

/// Applies a transaction. One that writes whole chunks waits for the block file's
/// fdatasync: the worker thread hands its other tasks on while it waits.
pub(super) fn apply_waiting(store: &dyn ObjectStore, txn: &Transaction) -> Result<(), StoreError> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread && txn.data_bytes() >= objectstore::CHUNK_BYTES {
        tokio::task::block_in_place(|| store.apply(txn))
    } else {
        store.apply(txn)
    }
}

/// What a task the PG starts needs to talk to its peers in the PG's current interval and
/// report back.
pub(super) struct Peers {
    pub(super) pg: PgId,
    pub(super) interval: Epoch,
    pub(super) inbox: mpsc::Sender<Event>,
    pub(super) conns: Arc<OsdConnections>,
    pub(super) map: Arc<OsdMap>,
}

impl Peers {
    pub(super) async fn call(
        &self,
        osd: u32,
        request: PeerRequest,
        bulk: Bytes,
    ) -> Result<(PeerResponse, Bytes), PeerError> {
        let (map, epoch) = (&self.map, self.map.epoch());
        call_peer(&self.conns, map, osd, self.pg, epoch, self.interval, request, bulk).await
    }

    pub(super) async fn report(&self, event: Event) {
        let _ = self.inbox.send(event).await;
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn call_peer(
    conns: &OsdConnections,
    map: &OsdMap,
    osd: u32,
    pg: PgId,
    epoch: Epoch,
    interval: Epoch,
    request: PeerRequest,
    bulk: Bytes,
) -> Result<(PeerResponse, Bytes), PeerError> {
    let addr = map
        .osd(placement::OsdId(osd))
        .and_then(|s| s.addr.clone())
        .ok_or(PeerError::NoAddress { osd })?;
    let asked = request.name();
    let request = OsdRequest::Peer { pg, epoch, interval, request };
    match conns.call(osd, &addr, &request, &bulk, PEER_TIMEOUT).await {
        Ok((Response::Peer(response), bulk)) => Ok((response, bulk)),
        Ok((other, _)) => Err(PeerError::Unexpected { osd, asked, got: other.name() }),
        Err(source) => Err(PeerError::Call { osd, source }),
    }
}
