//! Erasure-coded I/O on the primary. An op is evaluated on the logical object with
//! placeholder bytes (`ops::execute_on`), which says what it reads; `ShardSource` gathers
//! those ranges from the readable shards (decoding around a missing or rotten one), and a
//! write is then translated into each shard's ops (`ec::translate`) and replicated with one
//! log entry. `ShardSource` also rebuilds whole shards for recovery and backfill.

use super::*;

/// A logical object's bytes as `execute_on` sees them on an erasure-coded primary: zeros
/// standing in for the ranges `wanted` records, gathered from the shards afterwards. Its
/// extents are its whole range: the shards' chunks are not the object's.
struct Placeholder {
    size: u64,
    wanted: Vec<std::ops::Range<u64>>,
}

impl Placeholder {
    fn clip(&self, offset: u64, len: u64) -> std::ops::Range<u64> {
        let end = offset.saturating_add(len).min(self.size);
        offset.min(end)..end
    }
}

impl ops::ObjectBytes for Placeholder {
    fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, RemoteError> {
        let range = self.clip(offset, len);
        self.wanted.push(range.clone());
        Ok(vec![0; (range.end - range.start) as usize])
    }

    fn extents(&mut self, offset: u64, len: u64) -> Result<Vec<(u64, u64)>, RemoteError> {
        let range = self.clip(offset, len);
        Ok(if range.is_empty() { Vec::new() } else { vec![(range.start, range.end - range.start)] })
    }
}

impl Pg {
    /// An op on an erasure-coded PG: evaluated against the logical object (this shard's
    /// metadata, the logical size from `EC_SIZE_XATTR`) with placeholder bytes, which
    /// says what it reads; the bytes are gathered from the shards, then `ec_gathered`
    /// answers a read, or turns a write into each shard's changes.
    pub(super) fn ec_execute(&mut self, op: ClientOp, reqid: ReqId, is_write: bool) {
        let Some(ec) = self.ec.clone() else { return };
        if op.snap.read.is_some() || op.snap.context.as_ref().is_some_and(|c| c.seq > 0) {
            let why = "snapshots of erasure-coded objects are not supported yet";
            let _ = op.reply.send(Err(err(ErrorCode::Unsupported, why)));
            return;
        }
        if is_write && self.writers.len() < self.min_size {
            let _ = op.reply.send(Err(err(
                ErrorCode::Unavailable,
                format!(
                    "pg {} is undersized: {} shards take writes, min_size is {}",
                    self.id,
                    self.writers.len(),
                    self.min_size
                ),
            )));
            return;
        }
        let oid = object_id(&op.object);
        let meta = match self.shared.store.stat(self.c, &oid).map_err(store_error) {
            Ok(meta) => meta,
            Err(e) if e.code == ErrorCode::Corrupt => return self.repair(op, e),
            Err(e) => {
                let _ = op.reply.send(Err(e));
                return;
            }
        };
        let before =
            Logical { exists: meta.is_some(), size: meta.as_ref().map_or(0, logical_size) };
        let view = meta.map(|mut m| {
            m.size = before.size;
            m
        });
        let mut placeholder = Placeholder { size: before.size, wanted: Vec::new() };
        let executed = ops::execute_on(
            self.shared.store.as_ref(),
            self.c,
            &op.object,
            &oid,
            op.caller(self.shared.clock.now_ms()),
            &op.ops,
            &op.bulk,
            view,
            &mut placeholder,
        );
        let mut wanted = placeholder.wanted;
        let executed = match executed {
            Ok(executed) => executed,
            Err(e) => {
                let _ = op.reply.send(Err(e));
                return;
            }
        };
        let mut rep_ops = executed.rep_ops.clone();
        let reads = wanted.len();
        if !rep_ops.is_empty() {
            rep_ops.push(proto::osd::RepOp::SetVersion { mtime_ms: self.shared.clock.now_ms() });
            match ecw::reads(&ec.layout, before, &rep_ops, &executed.rep_data) {
                Ok(old) => wanted.extend(old),
                Err(e) => {
                    let _ = op.reply.send(Err(err(ErrorCode::Invalid, e.to_string())));
                    return;
                }
            }
        }
        let version = executed.prior;
        let object = op.object.clone();
        let pending = EcOp { op, reqid, executed, before, rep_ops, reads };
        if wanted.iter().all(|r| r.is_empty()) {
            let none = wanted.iter().map(|_| Vec::new()).collect();
            return self.ec_complete(pending, none);
        }
        let Some(source) = self.shard_source() else { return };
        // The object takes no other op until this one is done.
        *self.in_flight.entry(object.clone()).or_default() += 1;
        let available = self.readable_shards(&object);
        let (interval, inbox) = (self.interval, self.inbox.clone());
        tokio::spawn(async move {
            let result = source.gather(&object, version, before.size, &wanted, available).await;
            let op = Box::new(pending);
            let _ = inbox.send(Event::EcGathered { interval, op, result }).await;
        });
    }

    /// Where this PG's shards are read from now (erasure-coded PGs only).
    pub(super) fn shard_source(&self) -> Option<ShardSource> {
        let ec = self.ec.as_ref()?;
        Some(ShardSource {
            peers: self.peers(),
            shared: self.shared.clone(),
            c: self.c,
            osds: ec.acting.clone(),
            layout: ec.layout,
        })
    }

    /// The shards `readable_shards` marks, by position.
    pub(super) fn readable_sources(&self, object: &ObjectName) -> Vec<usize> {
        let Some(ec) = &self.ec else { return Vec::new() };
        recovery_plan::readable_positions(&self.copies(), &ec.acting, object)
    }

    /// The shards reads may use: acting OSDs that are complete and not missing `object`.
    pub(super) fn readable_shards(&self, object: &ObjectName) -> Vec<bool> {
        let Some(ec) = &self.ec else { return Vec::new() };
        recovery_plan::readable_shards(&self.copies(), &ec.acting, object)
    }

    pub(super) fn ec_gathered(
        &mut self,
        interval: Epoch,
        pending: EcOp,
        result: Result<(Vec<Vec<u8>>, Vec<usize>), RemoteError>,
    ) {
        if interval != self.interval {
            let _ = pending.op.reply.send(Err(err(
                ErrorCode::StaleEpoch,
                format!("pg {} changed at epoch {}; resend", self.id, self.interval),
            )));
            return;
        }
        let object = pending.op.object.clone();
        if let Some(n) = self.in_flight.get_mut(&object) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&object);
            }
        }
        match result {
            Ok(_) if self.state != State::Active => {
                // Peering again (a write failed to commit): the op waits to run anew.
                self.waiting.push_back(pending.op);
            }
            Ok((pieces, corrupt)) => {
                // Read repair: a shard that failed its checksums is missing there (no
                // read uses it) and is rebuilt from the others; a read is answered now,
                // a write waits for the rebuild and runs anew (its changes would race it).
                let version = pending.executed.prior;
                let retry = !corrupt.is_empty() && !pending.rep_ops.is_empty();
                for shard in corrupt {
                    let osd = self.ec.as_ref().and_then(|e| e.acting.get(shard).copied().flatten());
                    let Some(osd) = osd else { continue };
                    tracing::error!(pg = %self.id, %object, osd, shard, "shard is corrupt; rebuilding it");
                    self.missing.entry(osd).or_default().insert(object.clone(), version);
                    self.shared.quarantined.fetch_add(1, Ordering::Relaxed);
                }
                if retry {
                    self.held.entry(object.clone()).or_default().push_front(pending.op);
                } else {
                    self.ec_complete(pending, pieces);
                }
            }
            Err(e) => {
                let _ = pending.op.reply.send(Err(e));
            }
        }
        if self.is_missing_anywhere(&object) && !self.recovering.contains(&object) {
            self.recover(object.clone(), false);
        }
        if !self.in_flight.contains_key(&object) {
            self.scrub_gather_when_quiet();
        }
        self.release(&object);
    }

    /// Answers an erasure-coded read, or applies a write: this shard's part here, each
    /// other shard's part sent to its OSD with the same log entry.
    pub(super) fn ec_complete(&mut self, pending: EcOp, mut pieces: Vec<Vec<u8>>) {
        let EcOp { op, reqid, executed, before, rep_ops, reads } = pending;
        let old = pieces.split_off(reads.min(pieces.len()));
        if rep_ops.is_empty() {
            let response =
                Response::ObjectOps { version: executed.prior, results: executed.results };
            let _ = op.reply.send(Ok((response, Bytes::from(pieces.concat()))));
            return;
        }
        let (Some(ec), Some(mine)) =
            (self.ec.clone(), self.ec.as_ref().and_then(|e| e.shard_of(self.me())))
        else {
            let why = format!("osd.{} holds no shard of pg {}", self.me(), self.id);
            let _ = op.reply.send(Err(err(ErrorCode::Internal, why)));
            return;
        };
        let write = match ecw::translate(&ec.layout, before, &rep_ops, &executed.rep_data, old) {
            Ok(write) => write,
            Err(e) => {
                let _ = op.reply.send(Err(err(ErrorCode::Internal, e.to_string())));
                return;
            }
        };
        let mut shards: Vec<(Vec<proto::osd::RepOp>, Bytes)> =
            write.shards.into_iter().map(|s| (s.ops, Bytes::from(s.data))).collect();
        let head = self.log.head();
        let entry = self.next_entry(&op.object, reqid, &executed);
        let (my_ops, my_data) = std::mem::take(&mut shards[mine]);
        let committed_before = self.committed_before(entry.version);
        if let Err(e) = self.apply_entry(&entry, Some((&my_ops, &my_data)), committed_before) {
            let _ = op.reply.send(Err(e));
            return;
        }
        let log_only = !self.bf.covers(&op.object);
        let peers = peer_targets(self.me(), &self.writers, &self.backfill, log_only)
            .into_iter()
            .filter_map(|(osd, backfill_only)| {
                let (ops, data) = shards.get(ec.shard_of(osd)?)?.clone();
                Some((osd, backfill_only, ops, data))
            })
            .collect();
        self.send_entry(head, entry, committed_before, peers, executed.results, op.reply);
    }
}

/// An erasure-coded object's logical size, from the xattr every shard keeps it in.
pub(super) fn logical_size(meta: &objectstore::ObjectMeta) -> u64 {
    meta.xattrs
        .get(EC_SIZE_XATTR)
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Where an erasure-coded PG's primary reads shards from: its own store for its shard,
/// the OSD at each other position for theirs.
pub(super) struct ShardSource {
    pub(super) peers: Peers,
    pub(super) shared: Arc<Shared>,
    pub(super) c: CollectionId,
    /// The OSD at each shard position of the acting set.
    pub(super) osds: Vec<Option<u32>>,
    pub(super) layout: ec::Layout,
}

impl ShardSource {
    /// Ranges of one shard at `version`, concatenated.
    pub(super) async fn read(
        &self,
        shard: usize,
        object: &ObjectName,
        version: Version,
        ranges: Vec<(u64, u64)>,
    ) -> Result<Vec<u8>, RemoteError> {
        let osd =
            self.osds.get(shard).copied().flatten().ok_or_else(|| {
                err(ErrorCode::Unavailable, format!("no OSD holds shard {shard}"))
            })?;
        if osd == self.shared.me {
            return read_shard(self.shared.store.as_ref(), self.c, object, version, &ranges);
        }
        // Not through `Peers::call`: the answer's error code matters (`Corrupt`).
        let map = &self.peers.map;
        let addr =
            map.osd(placement::OsdId(osd)).and_then(|s| s.addr.clone()).ok_or_else(|| {
                err(ErrorCode::Unavailable, format!("osd.{osd} has no address in the map"))
            })?;
        let request = OsdRequest::Peer {
            pg: self.peers.pg,
            epoch: map.epoch(),
            interval: self.peers.interval,
            request: PeerRequest::ReadShard {
                object: object.clone(),
                shard: shard as u8,
                version,
                ranges,
            },
        };
        match self.shared.conns.call(osd, &addr, &request, &[], PEER_TIMEOUT).await {
            Ok((Response::Peer(PeerResponse::ShardRead), bulk)) => Ok(bulk.to_vec()),
            Ok((other, _)) => Err(err(
                ErrorCode::Internal,
                format!("osd.{osd} answered read shard with {}", other.name()),
            )),
            Err(proto::error::TransportError::Remote { error, .. }) => {
                Err(err(error.code, format!("osd.{osd}: {}", error.message)))
            }
            Err(e) => Err(err(ErrorCode::Unavailable, format!("osd.{osd}: {e}"))),
        }
    }

    /// The logical bytes of each of `ranges` of an object of `size` bytes at `version`,
    /// read from the shards `available` marks, decoding where a shard holding wanted
    /// bytes is not among them. A shard that fails to answer is left out and the ranges
    /// planned again (a degraded read), until fewer than k are left. Also returns the
    /// shards whose bytes failed their checksums (to be rebuilt).
    pub(super) async fn gather(
        &self,
        object: &ObjectName,
        version: Version,
        size: u64,
        ranges: &[std::ops::Range<u64>],
        mut available: Vec<bool>,
    ) -> Result<(Vec<Vec<u8>>, Vec<usize>), RemoteError> {
        let layout = &self.layout;
        let mut corrupt = Vec::new();
        let unavailable = |e: ec::EcError| err(ErrorCode::Unavailable, format!("{object}: {e}"));
        loop {
            let plans = ranges
                .iter()
                .map(|r| layout.plan_read(size, r.start, r.end - r.start, &available))
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            // One request per shard, for every range that needs it.
            let mut per_shard: BTreeMap<usize, Vec<(u64, u64)>> = BTreeMap::new();
            for plan in &plans {
                for (shard, range) in &plan.reads {
                    per_shard
                        .entry(*shard)
                        .or_default()
                        .push((range.start, range.end - range.start));
                }
            }
            let reads = per_shard.iter().map(|(&shard, ranges)| async move {
                (shard, self.read(shard, object, version, ranges.clone()).await)
            });
            let mut got: BTreeMap<usize, (Vec<u8>, usize)> = BTreeMap::new();
            let mut failed = false;
            for (shard, result) in futures::future::join_all(reads).await {
                match result {
                    Ok(bytes) => {
                        got.insert(shard, (bytes, 0));
                    }
                    Err(e) => {
                        tracing::info!(pg = %self.peers.pg, %object, shard, error = %e.message, "shard read failed; reading around it");
                        if e.code == ErrorCode::Corrupt {
                            corrupt.push(shard);
                        }
                        available[shard] = false;
                        failed = true;
                    }
                }
            }
            if failed {
                continue;
            }
            let mut out = Vec::with_capacity(plans.len());
            for plan in &plans {
                let mut shards: Vec<Option<Vec<u8>>> = vec![None; layout.shards()];
                for (shard, range) in &plan.reads {
                    let (bytes, at) = got.get_mut(shard).expect("read");
                    let len = (range.end - range.start) as usize;
                    let piece = bytes.get(*at..*at + len).ok_or_else(|| {
                        err(ErrorCode::Corrupt, format!("shard {shard} of {object} is short"))
                    })?;
                    shards[*shard] = Some(piece.to_vec());
                    *at += len;
                }
                out.push(layout.assemble(plan, shards).map_err(unavailable)?);
            }
            return Ok((out, corrupt));
        }
    }
}

impl ShardSource {
    /// A deep scrub's parity check of an object whose shards agree on `copy`'s version
    /// and size: every shard is read whole, a run of stripes at a time, and the parity
    /// compared with what the data encodes to. A mismatch one shard explains marks that
    /// shard bad (repair rebuilds it from the others); one none does (m = 1) is reported
    /// without an authority. An object that cannot be read is left to the next scrub.
    pub(super) async fn check_parity(
        &self,
        primary: u32,
        copy: &proto::osd::ScrubObject,
    ) -> Option<scrub::Inconsistency> {
        let (object, version) = (&copy.object, copy.version);
        let chunk = self.layout.chunk();
        let step = (SCRUB_READ_BYTES / chunk).max(1) * chunk;
        let mut offset = 0;
        while offset < copy.size {
            let len = step.min(copy.size - offset);
            let reads = (0..self.layout.shards())
                .map(|shard| self.read(shard, object, version, vec![(offset, len)]));
            let shards = match futures::future::try_join_all(reads).await {
                Ok(shards) => shards,
                Err(e) => {
                    tracing::warn!(pg = %self.peers.pg, %object, error = %e.message, "parity check skipped: a shard could not be read");
                    return None;
                }
            };
            let views: Vec<&[u8]> = shards.iter().map(Vec::as_slice).collect();
            let verdict = match self.layout.codec().check(&views) {
                Ok(verdict) => verdict,
                Err(e) => {
                    tracing::warn!(pg = %self.peers.pg, %object, error = %e, "parity check skipped");
                    return None;
                }
            };
            // Every shard was read, so every position has an OSD.
            let osd = |shard: usize| self.osds.get(shard).copied().flatten().unwrap_or(u32::MAX);
            let bad = match verdict {
                ec::Parity::Consistent => {
                    offset += len;
                    continue;
                }
                ec::Parity::Bad(shard) => vec![scrub::BadCopy {
                    osd: osd(shard),
                    why: format!(
                        "shard {shard} disagrees with the other shards' parity at shard offset {offset}"
                    ),
                }],
                ec::Parity::Undecided => (self.layout.k()..self.layout.shards())
                    .map(|shard| scrub::BadCopy {
                        osd: osd(shard),
                        why: format!(
                            "parity shard {shard} does not fit the data shards at shard offset \
                             {offset}, and m = {} cannot tell which shard is wrong",
                            self.layout.m()
                        ),
                    })
                    .collect(),
            };
            // The authority is only a flag here (repair rebuilds from the shards not
            // marked bad): a good shard's OSD, the primary's unless it is the bad one.
            let auth = match verdict {
                ec::Parity::Bad(shard) if osd(shard) == primary => {
                    self.osds.iter().flatten().copied().find(|&o| o != primary)
                }
                ec::Parity::Bad(_) => Some(primary),
                _ => None,
            };
            return Some(scrub::Inconsistency { object: object.clone(), version, auth, bad });
        }
        None
    }

    /// The whole of one shard's copy of `object`.
    pub(super) async fn pull(
        &self,
        shard: usize,
        object: &ObjectName,
    ) -> Result<(ObjectState, Bytes), TaskError> {
        let Some(osd) = self.osds.get(shard).copied().flatten() else {
            return Err(TaskError::NoHolder { shard });
        };
        if osd == self.shared.me {
            return Ok(read_state(self.shared.store.as_ref(), self.c, object)?);
        }
        match self
            .peers
            .call(
                osd,
                PeerRequest::Pull { object: object.clone(), shard: shard as u8 },
                Bytes::new(),
            )
            .await?
        {
            (PeerResponse::Object(state), bulk) => Ok((state, bulk)),
            (other, _) => Err(PeerError::unexpected(osd, "pull", &other).into()),
        }
    }

    /// Rebuilds `object`'s shards on `targets` (OSD, shard) from k of the shards
    /// `sources` (read whole and decoded), at `want` or newer, or at whatever version
    /// they agree on (`None` or `ZERO`, as a repair of an unreadable copy asks); with no
    /// version wanted, k sources without the object remove it from the targets. Returns
    /// the bytes written and the targets that said they are now backfillfull.
    pub(super) async fn rebuild(
        &self,
        object: &ObjectName,
        want: Option<Version>,
        sources: &[usize],
        targets: &[(u32, usize)],
    ) -> Result<(u64, Vec<u32>), RecoveryError> {
        let (state, shards) = self.decode(object, want, sources).await?;
        let mut moved = 0u64;
        let mut full = Vec::new();
        for &(osd, shard) in targets {
            let bulk = Bytes::from(shards[shard].clone().unwrap_or_default());
            let mut state = state.clone();
            if let Some(body) = state.body.as_mut() {
                body.size = bulk.len() as u64;
            }
            if osd == self.shared.me {
                self.shared.space.wrote(bulk.len() as u64);
                apply_state(self.shared.store.as_ref(), self.c, &state, &bulk)?;
                self.shared.syncer.sync().await?;
            } else {
                let request = PeerRequest::Push { state };
                let (response, _) = self.peers.call(osd, request, bulk.clone()).await?;
                if let PeerResponse::Pushed { backfillfull: true } = response {
                    full.push(osd);
                }
            }
            moved += bulk.len() as u64;
        }
        Ok((moved, full))
    }

    /// Pulls k agreeing shards of `object` (at `want` or newer, if given) from `sources`
    /// in order, and decodes every shard: the object's state and each shard's bytes. An
    /// object k sources agree they lack (with no version wanted) decodes as absent.
    async fn decode(
        &self,
        object: &ObjectName,
        want: Option<Version>,
        sources: &[usize],
    ) -> Result<(ObjectState, Vec<Option<Vec<u8>>>), RecoveryError> {
        let layout = &self.layout;
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; layout.shards()];
        let mut state: Option<ObjectState> = None;
        // Sources that have no such object: with no version wanted (ZERO: whatever the
        // shards hold), their agreement removes it from the targets.
        let want = want.filter(|&w| w != Version::ZERO);
        let mut absent = 0;
        let mut found = 0;
        for &shard in sources {
            if found == layout.k() {
                break;
            }
            let (got, bulk) = match self.pull(shard, object).await {
                Ok(got) => got,
                Err(e) => {
                    tracing::info!(pg = %self.peers.pg, %object, shard, error = %e, "shard pull failed");
                    continue;
                }
            };
            let agrees = match (&state, want) {
                (Some(s), _) => s.version == got.version,
                (None, Some(w)) => got.version >= w,
                (None, None) => true,
            };
            if got.body.is_none() {
                absent += 1;
                continue;
            }
            if !agrees {
                continue;
            }
            shards[shard] = Some(bulk.to_vec());
            state = Some(got);
            found += 1;
        }
        let state = match state {
            Some(state) => state,
            None if want.is_none() && absent >= layout.k() => ObjectState {
                object: object.clone(),
                version: Version::ZERO,
                body: None,
                clones: Vec::new(),
            },
            None => return Err(RecoveryError::NoShard { object: object.clone() }),
        };
        if state.body.is_some() {
            if found < layout.k() {
                let (object, version, k) = (object.clone(), state.version, layout.k());
                return Err(RecoveryError::TooFewShards { object, version, found, k });
            }
            if shards.iter().flatten().next().is_some_and(|s| !s.is_empty()) {
                layout.codec().reconstruct(&mut shards).map_err(|e| TaskError::Encode {
                    object: object.clone(),
                    reason: e.to_string(),
                })?;
            } else {
                shards.iter_mut().for_each(|s| *s = Some(Vec::new()));
            }
        }
        Ok((state, shards))
    }
}

/// Ranges of this OSD's shard of `object`, which must be at `version`, concatenated.
pub(super) fn read_shard(
    store: &dyn ObjectStore,
    c: CollectionId,
    object: &ObjectName,
    version: Version,
    ranges: &[(u64, u64)],
) -> Result<Vec<u8>, RemoteError> {
    let oid = object_id(object);
    let total = ranges.iter().try_fold(0u64, |a, (_, len)| a.checked_add(*len));
    if total.is_none_or(|t| t > 2 * ops::READ_BYTES_MAX) {
        return Err(err(ErrorCode::Invalid, "a shard read asks for too many bytes"));
    }
    let meta = store.stat(c, &oid).map_err(store_error)?;
    let have = meta.as_ref().map(|m| m.version).unwrap_or_default();
    if have != version {
        return Err(err(
            ErrorCode::Busy,
            format!("shard {c} has version {have} of {object}, not {version}"),
        ));
    }
    let mut out = Vec::with_capacity(total.unwrap_or(0) as usize);
    for &(offset, len) in ranges {
        let bytes = store.read(c, &oid, offset, len).map_err(store_error)?;
        if bytes.len() as u64 != len {
            return Err(err(
                ErrorCode::Corrupt,
                format!("shard {c} of {object} holds {} bytes at {offset}, not {len}", bytes.len()),
            ));
        }
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}
