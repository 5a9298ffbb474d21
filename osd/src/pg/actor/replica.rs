//! Requests from peers, which a replica (or a stray) answers for the primary of the
//! PG's current interval: infos and logs for peering (in any interval: they only read),
//! activation, replicated writes in log order, pushes, scans, scrub maps and the end of
//! backfill. Each request from another interval is refused as stale.

use super::*;

impl Pg {
    /// A request from a peer: reads are answered in any interval, anything else only from
    /// the primary of the current one. Writes, pushes and scrub maps are answered once
    /// their work is done; the rest at once.
    pub(super) fn peer_request(
        &mut self,
        interval: Epoch,
        request: PeerRequest,
        bulk: Bytes,
        reply: Reply,
    ) {
        let done = || answer(PeerResponse::Done);
        let answered = match request {
            PeerRequest::Query => answer(self.query()),
            PeerRequest::GetLog { after } => {
                let (entries, more) = self.log.page_after(after, LOG_PAGE_MAX);
                answer(PeerResponse::Log { entries, tail: self.log.tail(), more })
            }
            PeerRequest::Pull { object, shard } => self.answer_pull(&object, shard),
            PeerRequest::ReadShard { object, shard, version, ranges } => {
                self.answer_read_shard(&object, shard, version, &ranges)
            }
            _ if interval != self.interval => Err(self.stale(interval)),
            PeerRequest::Activate { info, entries, backfill: true } => self
                .start_backfill_here(info, entries)
                .map_err(store_error)
                .and_then(|()| answer(PeerResponse::Activated { missing: vec![] })),
            PeerRequest::Activate { info, entries, backfill: false } => {
                self.activate_here(info, entries).and_then(answer)
            }
            PeerRequest::Complete { info } => {
                self.complete_here(&info);
                done()
            }
            PeerRequest::Scan { after, until, max } => self.answer_scan(after, until, max),
            PeerRequest::BackfillDone => {
                self.backfill_done_here();
                done()
            }
            PeerRequest::RemoveStray => self.remove_stray().and_then(|()| done()),
            request @ PeerRequest::Replicate { after, .. } => {
                return self.replicate_in_order(interval, after, request, bulk, reply);
            }
            PeerRequest::Push { state } => return self.push_here(state, bulk, reply),
            PeerRequest::ScrubMap { after, until, deep } => {
                return self.answer_scrub_map(after, until, deep, reply);
            }
        };
        let _ = reply.send(answered);
    }

    /// A pull is answered in any interval: this OSD may hold another position's shard by
    /// now, which is no copy of the one wanted.
    fn answer_pull(
        &self,
        object: &ObjectName,
        shard: u8,
    ) -> Result<(Response, Bytes), RemoteError> {
        if shard != self.c.shard {
            return Err(self.not_shard(shard));
        }
        let (state, bulk) =
            read_state(self.shared.store.as_ref(), self.c, object).map_err(store_error)?;
        Ok((Response::Peer(PeerResponse::Object(state)), bulk))
    }

    fn answer_read_shard(
        &self,
        object: &ObjectName,
        shard: u8,
        version: Version,
        ranges: &[(u64, u64)],
    ) -> Result<(Response, Bytes), RemoteError> {
        if shard != self.c.shard {
            // This OSD's position changed: it holds another shard now.
            return Err(self.not_shard(shard));
        }
        let bytes = read_shard(self.shared.store.as_ref(), self.c, object, version, ranges)?;
        Ok((Response::Peer(PeerResponse::ShardRead), Bytes::from(bytes)))
    }

    fn stale(&self, interval: Epoch) -> RemoteError {
        let why = format!(
            "osd.{} is in interval {} of pg {}, not {interval}",
            self.me(),
            self.interval,
            self.id
        );
        err(ErrorCode::StaleEpoch, why)
    }

    /// Each batch of backfill begins with a scan: a target too full for more data stops
    /// it here, before the monitors have told the primary.
    fn answer_scan(
        &self,
        after: Option<ObjectName>,
        until: Option<ObjectName>,
        max: u32,
    ) -> Result<(Response, Bytes), RemoteError> {
        if let Some(why) = self.shared.space.refuse_backfill() {
            return Err(err(ErrorCode::NoSpace, why));
        }
        let (objects, more) = self.scan(after, until, max)?;
        answer(PeerResponse::Scanned { objects, more })
    }

    fn backfill_done_here(&mut self) {
        self.info.backfill_incomplete = None;
        self.info.last_complete = self.log.head();
        self.save_info();
        tracing::info!(pg = %self.id, "backfill of this copy done");
    }

    /// This OSD's info for a peering round (its own round's too: `start_peering`).
    pub(super) fn query(&self) -> PeerResponse {
        PeerResponse::Info {
            info: self.my_info().map(Box::new),
            shard: self.c.shard,
            // A store that cannot list its collections says it keeps one: peering then
            // assumes the least.
            kept: self.other_shards().map_or(true, |others| !others.is_empty()),
            born: Epoch(self.shared.born.load(Ordering::Relaxed)),
        }
    }

    /// A replica activates: it takes the authority's log, and answers with the objects it
    /// lacks.
    fn activate_here(
        &mut self,
        info: PgInfo,
        entries: Vec<LogEntry>,
    ) -> Result<PeerResponse, RemoteError> {
        if self.log.head() < info.log_tail {
            return Err(err(
                ErrorCode::Invalid,
                "this copy's log does not reach the authority's; backfill",
            ));
        }
        let missing = self.merge_log(info.log_tail, &entries).map_err(store_error)?;
        self.info.last_epoch_started = info.last_epoch_started;
        self.info.stats = info.stats;
        self.info.past_intervals.clear();
        self.save_info();
        Ok(PeerResponse::Activated { missing: missing.into_iter().collect() })
    }

    /// Replicated writes are applied in log order: one that arrives before its predecessor
    /// waits for it (at most `PENDING_REPLICATIONS_MAX`).
    fn replicate_in_order(
        &mut self,
        interval: Epoch,
        after: Version,
        request: PeerRequest,
        bulk: Bytes,
        reply: Reply,
    ) {
        if after > self.log.head() {
            if self.pending.len() >= PENDING_REPLICATIONS_MAX {
                let _ = reply
                    .send(Err(err(ErrorCode::Busy, "too many replicated writes out of order")));
            } else {
                self.pending.insert(after, (interval, request, bulk, reply));
            }
            return;
        }
        self.replicate_request(request, bulk, reply);
        // Writes that were waiting for this one.
        while let Some(next) = self.pending.first_key_value().map(|(v, _)| *v) {
            if next > self.log.head() {
                break;
            }
            let (_, request, bulk, reply) = self.pending.remove(&next).expect("present");
            self.replicate_request(request, bulk, reply);
        }
    }

    fn replicate_request(&mut self, request: PeerRequest, bulk: Bytes, reply: Reply) {
        let PeerRequest::Replicate { entry, committed_before, ops, backfill_only, .. } = request
        else {
            unreachable!("only replicated writes wait in order");
        };
        self.replicate(entry, committed_before, ops, bulk, backfill_only, reply);
    }

    /// A pushed object replaces this copy's, answered once it is durable.
    fn push_here(&mut self, state: ObjectState, bulk: Bytes, reply: Reply) {
        self.shared.space.wrote(bulk.len() as u64);
        if let Err(e) = apply_state(self.shared.store.as_ref(), self.c, &state, &bulk) {
            let _ = reply.send(Err(store_error(e)));
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let result = shared.syncer.sync().await.map_err(store_error);
            let backfillfull = shared.space.refuse_backfill().is_some();
            let _ = reply.send(result.and_then(|()| answer(PeerResponse::Pushed { backfillfull })));
        });
    }

    /// The primary says the PG is clean: this copy is complete, and trims its log.
    fn complete_here(&mut self, info: &PgInfo) {
        self.info.last_epoch_clean = info.last_epoch_clean;
        self.info.last_complete = self.log.head();
        let tail = self.log.trim(LOG_ENTRIES_KEPT);
        self.info.log_tail = tail;
        self.ensure_collection_and(vec![
            persist::trim_to(self.c, tail),
            persist::put_info(self.c, &self.info),
        ]);
        self.remove_other_shards();
    }

    /// This copy's scrub map of a chunk, read off the PG's task: a deep scrub reads every
    /// byte of the chunk.
    fn answer_scrub_map(
        &self,
        after: Option<ObjectName>,
        until: Option<ObjectName>,
        deep: bool,
        reply: Reply,
    ) {
        let (store, c) = (self.shared.store.clone(), self.c);
        tokio::spawn(async move {
            let map = tokio::task::spawn_blocking(move || {
                scrub_map(store.as_ref(), c, after.as_ref(), until.as_ref(), deep)
            })
            .await
            .unwrap_or_else(|e| Err(err(ErrorCode::Internal, e.to_string())));
            let _ = reply.send(map.and_then(|objects| answer(PeerResponse::ScrubMap { objects })));
        });
    }

    /// A stray copy (this OSD serves the PG no more) is deleted once the PG is clean.
    fn remove_stray(&mut self) -> Result<(), RemoteError> {
        let me = self.me();
        if self.acting.contains(&me) || self.up.contains(&me) {
            return Err(err(
                ErrorCode::Invalid,
                format!("osd.{me} serves pg {}: its copy is not a stray", self.id),
            ));
        }
        self.remove_collection();
        self.remove_other_shards();
        tracing::info!(pg = %self.id, "removed a stray copy");
        self.info = PgInfo::default();
        self.log = PgLog::default();
        Ok(())
    }

    /// The answer to a request for a shard this OSD does not hold (its position changed).
    pub(super) fn not_shard(&self, shard: u8) -> RemoteError {
        err(ErrorCode::StaleEpoch, format!("osd.{} holds {}, not shard {shard}", self.me(), self.c))
    }

    /// A backfill target starts over: the primary's log and info, marked incomplete, and
    /// its objects as they are (the primary's scans compare and replace them).
    pub(super) fn start_backfill_here(
        &mut self,
        info: PgInfo,
        entries: Vec<LogEntry>,
    ) -> Result<(), objectstore::StoreError> {
        let log = PgLog::new(info.log_tail, entries);
        let mut info = PgInfo {
            last_update: log.head(),
            last_complete: Version::ZERO,
            backfill_incomplete: Some(proto::osd::BackfillMark { last: None }),
            past_intervals: Vec::new(),
            ..info
        };
        info.log_tail = log.tail();
        let mut ops = vec![persist::clear_log(self.c), persist::clear_rollbacks(self.c)];
        ops.extend(log.entries().map(|e| persist::put_entry(self.c, e)));
        ops.push(persist::put_info(self.c, &info));
        if !self.exists {
            ops.insert(0, TxOp::CreateCollection(self.c));
        }
        self.shared.store.apply(&Transaction { ops })?;
        self.exists = true;
        self.info = info;
        self.log = log;
        self.rollbacks.clear();
        tracing::info!(pg = %self.id, "backfill of this copy starts");
        Ok(())
    }

    /// This copy's objects after `after` and up to `until`, with their versions.
    pub(super) fn scan(
        &self,
        after: Option<ObjectName>,
        until: Option<ObjectName>,
        max: u32,
    ) -> Result<(Vec<(ObjectName, Version)>, bool), RemoteError> {
        let max = max.clamp(1, SCAN_MAX) as usize;
        let until = until.map(|u| objectstore::keys::object_order(&object_id(&u)));
        let after = after.as_ref().map(object_id);
        let page =
            self.shared.store.list_heads(self.c, after.as_ref(), max + 1).map_err(store_error)?;
        let mut objects: Vec<(ObjectName, Version)> = page
            .into_iter()
            .take_while(|(oid, _)| {
                until.as_ref().is_none_or(|u| objectstore::keys::object_order(oid) <= *u)
            })
            .map(|(oid, meta)| (object_name(&oid), meta.version))
            .collect();
        let more = objects.len() > max;
        objects.truncate(max);
        Ok((objects, more))
    }

    pub(super) fn replicate(
        &mut self,
        entry: LogEntry,
        committed_before: Version,
        rep_ops: Vec<proto::osd::RepOp>,
        bulk: Bytes,
        log_only: bool,
        reply: Reply,
    ) {
        if entry.version <= self.log.head() {
            // A resend of an entry we have.
            let _ = reply.send(answer(PeerResponse::Done));
            return;
        }
        let change = (!log_only).then_some((rep_ops.as_slice(), &bulk));
        if let Err(e) = self.apply_entry(&entry, change, committed_before) {
            let _ = reply.send(Err(e));
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let result = shared.syncer.sync().await.map_err(store_error);
            let _ = reply.send(result.and_then(|()| answer(PeerResponse::Done)));
        });
    }
}

/// A peer request's answer, without bulk bytes.
fn answer(response: PeerResponse) -> Result<(Response, Bytes), RemoteError> {
    Ok((Response::Peer(response), Bytes::new()))
}
