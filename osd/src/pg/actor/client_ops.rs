//! Client ops on the primary: admitted as `admission` decides (refused, waiting for the
//! PG, held behind their busy object, or run), executed on the local copy
//! (`ops`), logged and replicated to the acting set and the backfill targets, and
//! answered once every copy has committed. Also the listing of the PG's objects.

use super::*;

/// A write applied on the primary, for `send_entry`.
pub(super) struct AppliedWrite {
    head: Version,
    entry: LogEntry,
    committed_before: Version,
    peers: Vec<(u32, bool, Vec<proto::osd::RepOp>, Bytes)>,
    results: Vec<proto::osd::OpResult>,
}

impl Pg {
    pub(super) fn client_op(&mut self, op: ClientOp) {
        self.shared.client_ops.fetch_add(1, Ordering::Relaxed);
        let pg = admission::Pg {
            primary: self.is_primary(),
            serving: match self.state {
                State::Active => Serving::Yes,
                State::Blocked => Serving::No,
                State::Peering | State::Replica => Serving::Soon,
            },
            waiting: self.waiting.len(),
        };
        let object = self.admission_view(&op.object);
        let write = op.ops.iter().any(ObjectOp::is_write);
        let refusal = match admission::admit(&pg, &object, write) {
            Admit::Run => return self.execute(op),
            Admit::Wait => {
                tracing::debug!(pg = %self.id, object = %op.object, state = ?self.state, "op waits for the PG");
                return self.waiting.push_back(op);
            }
            Admit::Hold { recover } => {
                tracing::debug!(pg = %self.id, object = %op.object, ?object, "op held");
                if recover {
                    self.recover(op.object.clone(), true);
                }
                return self.held.entry(op.object.clone()).or_default().push_back(op);
            }
            Admit::NotPrimary => {
                let why = format!(
                    "osd.{} is not the primary of pg {} at epoch {}",
                    self.me(),
                    self.id,
                    self.map.epoch()
                );
                err(ErrorCode::StaleEpoch, why)
            }
            Admit::Blocked => {
                let Blocked { state, why, .. } = &self.blocked;
                err(ErrorCode::Unavailable, format!("pg {} is {state}: {why}", self.id))
            }
            Admit::TooManyHeld => {
                let why = format!("too many ops wait for {} in pg {}", op.object, self.id);
                err(ErrorCode::Busy, why)
            }
            Admit::TooManyWaiting => {
                err(ErrorCode::Busy, format!("pg {} has too many waiting ops", self.id))
            }
        };
        let _ = op.reply.send(Err(refusal));
    }

    /// `object` as an op's admission sees it.
    pub(super) fn admission_view(&self, object: &ObjectName) -> admission::Object {
        admission::Object {
            in_flight: self.in_flight.contains_key(object),
            missing: self.is_missing_anywhere(object),
            recovering: self.recovering.contains(object),
            pushing: self.bf.pushing.contains_key(object),
            scrubbing: self.in_scrub_range(object),
            copying: self.copying.contains(object),
            held: self.held.get(object).map_or(0, VecDeque::len),
        }
    }

    /// The primary's copy of the op's object failed its checksum: the object counts as
    /// missing here, is recovered from another copy at once, and the op waits for that
    /// (read repair). Without another copy it stays unfound and the op waits for one.
    pub(super) fn repair(&mut self, op: ClientOp, error: RemoteError) {
        let me = self.me();
        // The metadata record is apart from the data; if it is unreadable too, any
        // version another copy has will do.
        let meta = self.shared.store.stat(self.c, &object_id(&op.object));
        let version = meta.ok().flatten().map(|m| m.version).unwrap_or_default();
        tracing::error!(
            pg = %self.id,
            object = %op.object,
            %version,
            error = %error.message,
            "local copy is corrupt; recovering it from another copy"
        );
        self.missing.entry(me).or_default().insert(op.object.clone(), version);
        self.shared.quarantined.fetch_add(1, Ordering::Relaxed);
        if !self.recovering.contains(&op.object) {
            self.recover(op.object.clone(), true);
        }
        self.held.entry(op.object.clone()).or_default().push_back(op);
    }

    pub(super) fn release(&mut self, object: &ObjectName) {
        if self.ec.is_some()
            && self.state == State::Active
            && self.bf.batch.is_some()
            && !self.in_flight.contains_key(object)
        {
            // The walk may be waiting for this object (`walk`).
            self.walk();
        }
        if self.state != State::Active {
            // Peering again: held ops wait with the rest and are replayed on activation.
            if let Some(queue) = self.held.remove(object) {
                self.waiting.extend(queue);
            }
            return;
        }
        while admission::may_release(&self.admission_view(object)) {
            let Some(queue) = self.held.get_mut(object) else { return };
            let Some(op) = queue.pop_front() else {
                self.held.remove(object);
                return;
            };
            if queue.is_empty() {
                self.held.remove(object);
            }
            self.execute(op);
        }
    }

    pub(super) fn execute(&mut self, op: ClientOp) {
        // Fencing is checked as the op runs, on this PG's map: an op that waited here (for
        // peering, or behind another op) from before its client was blocklisted is refused
        // too, so a fenced holder never writes after its lock was broken.
        if self.map.contents().blocklists_instance(&op.addr, self.shared.clock.now_ms()) {
            let why = format!("{} at {} is blocklisted", op.client, op.addr);
            let _ = op.reply.send(Err(err(ErrorCode::PermissionDenied, why)));
            return;
        }
        let reqid = ReqId { client: op.client.clone(), id: op.reqid };
        let is_write = op.ops.iter().any(ObjectOp::is_write);
        if is_write && let Some(version) = self.log.find_reqid(&reqid) {
            // A resend of a write that is in the log: every copy has it (peering made sure).
            let _ =
                op.reply.send(Ok((Response::ObjectOps { version, results: vec![] }, Bytes::new())));
            return;
        }
        if is_write && !op.ops.iter().all(ObjectOp::frees_space) {
            let onto: Vec<u32> = self.writers.iter().chain(&self.backfill).copied().collect();
            if let Some(why) = self.shared.space.refuse_write(&onto) {
                let _ = op.reply.send(Err(err(ErrorCode::NoSpace, why)));
                return;
            }
        }
        if op.ops.iter().any(|o| o.copy_source().is_some()) {
            return self.read_copy_sources(op);
        }
        if self.ec.is_some() {
            return self.ec_execute(op, reqid, is_write);
        }
        let caller = op.caller(self.shared.clock.now_ms());
        let store = self.shared.store.as_ref();
        let snap = self.snap_args(&op.snap);
        if let Some(why) = self.removed_in_context(&snap) {
            let _ = op.reply.send(Err(err(ErrorCode::Invalid, why)));
            return;
        }
        let executed =
            match ops::execute(store, self.c, &op.object, caller, &op.ops, &op.bulk, &snap) {
                Ok(executed) => executed,
                Err(e) if e.code == ErrorCode::Corrupt => return self.repair(op, e),
                Err(e) => {
                    let _ = op.reply.send(Err(e));
                    return;
                }
            };
        if executed.rep_ops.is_empty() {
            let response =
                Response::ObjectOps { version: executed.prior, results: executed.results };
            let _ = op.reply.send(Ok((response, Bytes::from(executed.read_data))));
            return;
        }
        match self.apply_write(&op.object, reqid, executed) {
            Ok(applied) => self.send_applied(applied, op.reply),
            Err(e) if e.code == ErrorCode::Corrupt => self.repair(op, e),
            Err(e) => {
                let _ = op.reply.send(Err(e));
            }
        }
    }

    /// Sends a write `apply_write` applied to the peers; `reply` has the answer once
    /// every copy is durable.
    pub(super) fn send_applied(&mut self, w: AppliedWrite, reply: Reply) {
        self.send_entry(w.head, w.entry, w.committed_before, w.peers, w.results, reply);
    }

    /// Applies a write the primary executed on `object` to the local store and logs it;
    /// what `send_entry` then sends to the peers.
    pub(super) fn apply_write(
        &mut self,
        object: &ObjectName,
        reqid: ReqId,
        executed: ops::Executed,
    ) -> Result<AppliedWrite, RemoteError> {
        let head = self.log.head();
        let entry = self.next_entry(object, reqid, &executed);
        let mut rep_ops = executed.rep_ops;
        rep_ops.push(proto::osd::RepOp::SetVersion { mtime_ms: self.shared.clock.now_ms() });
        let data = executed.rep_data;
        let committed_before = self.committed_before(entry.version);
        self.apply_entry(&entry, Some((&rep_ops, &data)), committed_before)?;
        // Backfill targets get the write in full once backfill has passed the object,
        // else only its log entry.
        let log_only = !self.bf.covers(object);
        let peers = peer_targets(self.me(), &self.writers, &self.backfill, log_only)
            .into_iter()
            .map(|(osd, backfill_only)| (osd, backfill_only, rep_ops.clone(), data.clone()))
            .collect();
        Ok(AppliedWrite { head, entry, committed_before, peers, results: executed.results })
    }

    /// What a request says about snapshots, with a pool's own snapshot context where it
    /// is newer than the writer's (a pool with pool snapshots: `cairn pool mksnap`).
    fn snap_args(&self, asked: &proto::osd::SnapArgs) -> proto::osd::SnapArgs {
        let mut snap = asked.clone();
        let pool = self.map.pool(self.id.pool).map(|p| &p.snaps);
        if let Some(snaps) = pool.filter(|s| s.mode == placement::SnapMode::Pool) {
            let (seq, ids) = snaps.pool_context();
            if snap.context.as_ref().is_none_or(|c| c.seq < seq) {
                snap.context = Some(proto::osd::SnapContext { seq, snaps: ids });
            }
        }
        snap
    }

    /// Why a write's snapshot context is stale: it lists a snapshot the pool removed
    /// (a clone kept for it would never be trimmed).
    fn removed_in_context(&self, snap: &proto::osd::SnapArgs) -> Option<String> {
        let removed = &self.map.pool(self.id.pool)?.snaps.removed;
        let context = snap.context.as_ref()?;
        let id = context.snaps.iter().find(|&&s| removed.contains(s))?;
        Some(format!(
            "the snapshot context lists snapshot {id}, which was removed; refresh the context"
        ))
    }

    /// The log entry of a write the primary executed.
    pub(super) fn next_entry(
        &self,
        object: &ObjectName,
        reqid: ReqId,
        executed: &ops::Executed,
    ) -> LogEntry {
        LogEntry {
            version: Version::new(self.map.epoch().0, self.log.head().seq + 1),
            prior_version: executed.prior,
            object: object.clone(),
            op: if executed.kept_after { LogOp::Modify } else { LogOp::Delete },
            reqid: Some(reqid),
            delta: CountsDelta::of(executed.size_before, executed.size_after),
        }
    }

    /// The version before which every entry is committed on every copy, for an entry at
    /// `version` about to be sent: the oldest one still on its way, else this one.
    pub(super) fn committed_before(&self, version: Version) -> Version {
        self.uncommitted.first().copied().unwrap_or(version)
    }

    /// Sends an entry the primary applied to its peers, each with its own changes
    /// (`backfill_only`: the log entry alone), and answers the client once every copy
    /// and this one are durable.
    pub(super) fn send_entry(
        &mut self,
        head: Version,
        entry: LogEntry,
        committed_before: Version,
        peers: Vec<(u32, bool, Vec<proto::osd::RepOp>, Bytes)>,
        results: Vec<proto::osd::OpResult>,
        reply: Reply,
    ) {
        crate::crash_point!("osd::write_applied");
        *self.in_flight.entry(entry.object.clone()).or_default() += 1;
        self.uncommitted.insert(entry.version);
        let (interval, inbox, shared, map, pg) =
            (self.interval, self.inbox.clone(), self.shared.clone(), self.map.clone(), self.id);
        tokio::spawn(async move {
            let epoch = map.epoch();
            let local = shared.syncer.sync();
            let remote = peers.into_iter().map(|(osd, backfill_only, ops, data)| {
                let request = PeerRequest::Replicate {
                    after: head,
                    committed_before,
                    entry: entry.clone(),
                    ops: if backfill_only { Vec::new() } else { ops },
                    backfill_only,
                };
                let data = if backfill_only { Bytes::new() } else { data };
                let (shared, map) = (shared.clone(), map.clone());
                async move {
                    call_peer(&shared.conns, &map, osd, pg, epoch, interval, request, data)
                        .await
                        .map(|_| ())
                        .map_err(|e| {
                            err(
                                ErrorCode::Unavailable,
                                format!("replication to osd.{osd} failed: {e}"),
                            )
                        })
                }
            });
            let (local, remote) = tokio::join!(local, futures::future::join_all(remote));
            let result = remote
                .into_iter()
                .chain(std::iter::once(local.map_err(store_error)))
                .collect::<Result<Vec<()>, _>>()
                .map(|_| ());
            if result.is_ok() {
                crate::crash_point!("osd::write_replicated");
            }
            let (object, version) = (entry.object, entry.version);
            let reply_with_results = reply;
            let result = result.map(|()| results);
            let (tx, rx) = oneshot::channel();
            let _ = inbox
                .send(Event::Committed {
                    interval,
                    object,
                    version,
                    result: result.as_ref().map(|_| ()).map_err(Clone::clone),
                    reply: tx,
                })
                .await;
            let _ = rx.await;
            let _ = reply_with_results.send(
                result.map(|results| (Response::ObjectOps { version, results }, Bytes::new())),
            );
        });
    }

    /// Applies a log entry and its changes (none on a backfill target that does not have
    /// the object yet) to the local store, not yet durably. An erasure-coded shard keeps
    /// what the changes overwrite (`rollback`) in the same transaction, unless the entry
    /// creates the object (undone by removing it, as `merge_authoritative` says), and
    /// drops the stashes of entries before `committed_before`, which every shard has.
    pub(super) fn apply_entry(
        &mut self,
        entry: &LogEntry,
        change: Option<(&[proto::osd::RepOp], &Bytes)>,
        committed_before: Version,
    ) -> Result<(), RemoteError> {
        let mut txn = Transaction::new();
        if !self.exists {
            txn.push(TxOp::CreateCollection(self.c));
        }
        let erasure = self.c.shard != objectstore::NO_SHARD;
        let mut stashed = false;
        if let Some((rep_ops, data)) = change {
            self.shared.space.wrote(data.len() as u64);
            let oid = object_id(&entry.object);
            if erasure && entry.prior_version != Version::ZERO {
                // Bytes that cannot be read (rotten, say) are not kept: the write replaces
                // them all the same, and were it torn, recovery would rebuild the object.
                match rollback::stash(self.shared.store.as_ref(), self.c, &oid, rep_ops) {
                    Ok(stash) => {
                        txn.push(persist::put_rollback(self.c, entry.version, &stash));
                        stashed = true;
                    }
                    Err(e) => {
                        tracing::warn!(pg = %self.id, object = %entry.object, error = %e, "cannot keep what a write replaces; it applies without a rollback stash");
                    }
                }
            }
            ops::transaction(self.c, &oid, rep_ops, data, entry.version, &mut txn)?;
        }
        let done: Vec<Version> = self.rollbacks.range(..committed_before).copied().collect();
        for &version in &done {
            txn.push(persist::delete_rollback(self.c, version));
        }
        txn.push(persist::put_entry(self.c, entry));
        let mut info = self.info.clone();
        info.last_update = entry.version;
        info.stats.apply(entry.delta);
        txn.push(persist::put_info(self.c, &info));
        apply_waiting(&*self.shared.store, &txn).map_err(store_error)?;
        self.exists = true;
        self.info = info;
        for version in done {
            self.rollbacks.remove(&version);
        }
        if stashed {
            self.rollbacks.insert(entry.version);
        }
        self.log.append(entry.clone());
        self.trim_log();
        Ok(())
    }

    /// Keeps the log bounded while writes go on (`log::trim_keep`): without this it was
    /// trimmed only when the PG became clean, and grew by an entry per write, in memory
    /// and on disk, for as long as the interval lasted.
    pub(super) fn trim_log(&mut self) {
        let clean = self.info.last_epoch_clean == self.interval;
        let Some(keep) = crate::pg::log::trim_keep(self.log.len(), clean) else { return };
        let tail = self.log.trim(keep);
        self.info.log_tail = tail;
        self.ensure_collection_and(vec![
            persist::trim_to(self.c, tail),
            persist::put_info(self.c, &self.info),
        ]);
    }

    pub(super) fn committed(
        &mut self,
        interval: Epoch,
        object: ObjectName,
        version: Version,
        result: Result<(), RemoteError>,
        reply: Reply,
    ) {
        let _ = reply.send(Ok((Response::Ack, Bytes::new())));
        self.uncommitted.remove(&version);
        if interval != self.interval {
            return;
        }
        if let Some(n) = self.in_flight.get_mut(&object) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&object);
                self.scrub_gather_when_quiet();
            }
        }
        match result {
            Ok(()) => {
                if self.info.last_complete < version && self.in_flight.is_empty() {
                    self.info.last_complete = self.log.head();
                }
            }
            Err(e) => {
                // The entry is in our log but maybe not in a replica's. Peering again makes
                // every reachable copy adopt it (or waits for the map to drop the copy), so
                // the client's resend, answered from the log, is true everywhere.
                tracing::info!(pg = %self.id, %object, error = %e, "a write did not commit everywhere; peering again");
                if self.state == State::Active {
                    self.state = State::Peering;
                    self.missing.clear();
                    self.start_peering();
                }
            }
        }
        self.release(&object);
    }

    pub(super) fn list(&mut self, after: Option<ObjectName>, max: u32, reply: Reply) {
        if !self.is_primary() || self.state != State::Active {
            let _ = reply.send(Err(err(
                ErrorCode::StaleEpoch,
                format!("pg {} is not active on osd.{}", self.id, self.me()),
            )));
            return;
        }
        let max = max.clamp(1, proto::osd::LIST_PAGE_MAX) as usize;
        let erasure = self.ec.is_some();
        let answer =
            self.visible_objects(after.as_ref().map(object_id), max).map(|(objects, more)| {
                let objects = objects
                    .into_iter()
                    .map(|(oid, meta)| {
                        let size = if erasure { logical_size(&meta) } else { meta.size };
                        (ops::object_name(&oid), size)
                    })
                    .collect();
                (Response::Objects { objects, more }, Bytes::new())
            });
        let _ = reply.send(answer);
    }

    /// Up to `max` objects after `after` that clients see (heads, not whiteouts kept for
    /// their clones), and whether more follow: pages are read until `max` are found, so a
    /// run of whiteouts never makes a page empty while more follow.
    fn visible_objects(
        &self,
        mut after: Option<objectstore::ObjectId>,
        max: usize,
    ) -> Result<(Vec<(objectstore::ObjectId, objectstore::ObjectMeta)>, bool), RemoteError> {
        let mut out = Vec::with_capacity(max + 1);
        loop {
            let page = self
                .shared
                .store
                .list_heads(self.c, after.as_ref(), max + 1)
                .map_err(store_error)?;
            let done = page.len() <= max;
            after = page.last().map(|(oid, _)| oid.clone());
            out.extend(
                page.into_iter().filter(|(_, meta)| {
                    !meta.xattrs.contains_key(crate::pg::snaps::WHITEOUT_XATTR)
                }),
            );
            if out.len() > max || done {
                let more = out.len() > max;
                out.truncate(max);
                return Ok((out, more));
            }
        }
    }
}
