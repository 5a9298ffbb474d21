//! Recovery on the primary: an object the authoritative log says is missing on some copy
//! is pulled to the primary from an OSD that has its version, then pushed to the copies
//! that lack it, a few at a time under the OSD's throttle. A client op to a missing object
//! makes its recovery urgent and waits for it. An erasure-coded object is rebuilt from k
//! shards instead (`ec_io`). An object no OSD asked has is unfound, and says so.

use super::*;

impl Pg {
    pub(super) fn degraded_objects(&self) -> u64 {
        self.copies().degraded()
    }

    pub(super) fn is_missing_anywhere(&self, object: &ObjectName) -> bool {
        self.missing.values().any(|m| m.contains_key(object))
    }

    /// The copies as the recovery decisions see them.
    pub(super) fn copies(&self) -> recovery_plan::Copies<'_> {
        recovery_plan::Copies {
            me: self.me(),
            writers: &self.writers,
            auth: self.auth,
            missing: &self.missing,
        }
    }

    /// Starts recovering objects missing somewhere, a few at a time; goes clean when
    /// nothing is left to do.
    pub(super) fn kick_recovery(&mut self) {
        for object in recovery_plan::to_start(&self.copies(), &self.recovering) {
            self.recover(object, false);
        }
        self.kick_backfill();
        let shape = recovery_plan::Shape {
            active: self.state == State::Active,
            writers: self.writers.len(),
            size: self.size,
            backfilling: !self.backfill.is_empty(),
            remapped: self.remapped(),
        };
        if recovery_plan::may_go_clean(&self.copies(), &shape) {
            self.clean();
        }
    }

    /// Recovers `object` where it is missing. `urgent`: a client op waits for it, so it
    /// does not queue behind the background recovery.
    pub(super) fn recover(&mut self, object: ObjectName, urgent: bool) {
        self.recovering.insert(object.clone());
        if self.ec.is_some() {
            return self.ec_recover(object, urgent);
        }
        let step = recovery_plan::replicated(&self.copies(), &object);
        let (peers, shared, c) = (self.peers(), self.shared.clone(), self.c);
        tokio::spawn(async move {
            let _permit = if urgent { None } else { shared.recovery.acquire().await.ok() };
            let result = async {
                let (pulled, push) = match step {
                    Step::Unfound => {
                        return Err(RecoveryError::NoSource { object: object.clone() });
                    }
                    Step::Push { push } => (0, push),
                    Step::Pull { from, want, push } => {
                        (pull(&peers, &shared, c, &object, from, want).await?, push)
                    }
                };
                Ok(pulled + push_to(&peers, &shared, c, &object, &push).await?)
            }
            .await;
            match result {
                Ok(bytes) => {
                    shared.recovered_objects.fetch_add(1, Ordering::Relaxed);
                    shared.last_recovery_ms.store(shared.clock.now_ms(), Ordering::Relaxed);
                    shared.recovered_bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                Err(_) => tokio::time::sleep(PEERING_RETRY).await,
            }
            peers.report(Event::Recovered { interval: peers.interval, object, result }).await;
        });
    }

    /// Rebuilds the shards of `object` the OSDs missing it should hold, from k others.
    pub(super) fn ec_recover(&mut self, object: ObjectName, urgent: bool) {
        let (Some(source), Some(ec)) = (self.shard_source(), self.ec.as_ref()) else { return };
        let Rebuild { want, sources, targets } =
            recovery_plan::erasure(&self.copies(), &ec.acting, |o| ec.shard_of(o), &object);
        let (interval, inbox, shared) = (self.interval, self.inbox.clone(), self.shared.clone());
        tokio::spawn(async move {
            let _permit = if urgent { None } else { shared.recovery.acquire().await.ok() };
            let result =
                source.rebuild(&object, want, &sources, &targets).await.map(|(bytes, _)| bytes);
            if let Ok(bytes) = result {
                shared.recovered_objects.fetch_add(1, Ordering::Relaxed);
                shared.last_recovery_ms.store(shared.clock.now_ms(), Ordering::Relaxed);
                shared.recovered_bytes.fetch_add(bytes, Ordering::Relaxed);
            } else {
                tokio::time::sleep(PEERING_RETRY).await;
            }
            let _ = inbox.send(Event::Recovered { interval, object, result }).await;
        });
    }

    pub(super) fn recovered(&mut self, object: ObjectName, result: Result<u64, RecoveryError>) {
        self.recovering.remove(&object);
        match result {
            Ok(bytes) => {
                self.unfound.remove(&object);
                if self.inconsistent.remove(&object).is_some() {
                    tracing::info!(pg = %self.id, %object, "repaired");
                }
                self.recovered.apply(CountsDelta { objects: 1, bytes: bytes as i64 });
                for missing in self.missing.values_mut() {
                    missing.remove(&object);
                }
                self.release(&object);
            }
            Err(e) if e.is_unfound() => {
                if self.unfound.insert(object.clone()) {
                    tracing::warn!(pg = %self.id, %object, error = %e, "object unfound; will retry");
                }
            }
            Err(e) => {
                tracing::warn!(pg = %self.id, %object, error = %e, "recovery failed; will retry");
            }
        }
        self.kick_recovery();
    }
}

/// Copies `object` here from `source`, which must have `want` or newer; the bytes moved.
async fn pull(
    peers: &Peers,
    shared: &Shared,
    c: CollectionId,
    object: &ObjectName,
    source: u32,
    want: Version,
) -> Result<u64, RecoveryError> {
    let request = PeerRequest::Pull { object: object.clone(), shard: objectstore::NO_SHARD };
    let (response, bulk) = peers.call(source, request, Bytes::new()).await?;
    let PeerResponse::Object(state) = response else {
        return Err(PeerError::unexpected(source, "pull", &response).into());
    };
    if state.version < want {
        let (object, has) = (object.clone(), state.version);
        return Err(RecoveryError::Older { osd: source, object, has, want });
    }
    shared.space.wrote(bulk.len() as u64);
    apply_state(shared.store.as_ref(), c, &state, &bulk)?;
    shared.syncer.sync().await?;
    Ok(bulk.len() as u64)
}

/// Pushes this copy of `object` to `targets`; the bytes moved.
async fn push_to(
    peers: &Peers,
    shared: &Shared,
    c: CollectionId,
    object: &ObjectName,
    targets: &[u32],
) -> Result<u64, RecoveryError> {
    if targets.is_empty() {
        return Ok(0);
    }
    let (state, bulk) = read_state(shared.store.as_ref(), c, object)?;
    for &osd in targets {
        let request = PeerRequest::Push { state: state.clone() };
        peers.call(osd, request, bulk.clone()).await?;
    }
    Ok(bulk.len() as u64 * targets.len() as u64)
}
