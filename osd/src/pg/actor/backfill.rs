//! Backfill on the primary, for a copy the log cannot bring up to date (new, or too far
//! behind): the I/O of the walk `pg::backfill` decides. It lists the primary's objects,
//! scans the targets' copies of each batch, pushes where the walk says, and once done ends
//! the acting-set override (pg_temp) that let the old copies serve meanwhile.

use super::*;

impl Pg {
    /// Whether backfill waits for the primary's own recovery: it copies the primary's
    /// objects, which must be current first.
    pub(super) fn backfill_waits(&self) -> bool {
        self.missing.get(&self.me()).is_some_and(|m| !m.is_empty())
    }

    /// Starts the next step of backfill, if one is due: more of the batch, a scan of the
    /// next one, or telling the targets they are done.
    pub(super) fn kick_backfill(&mut self) {
        let gate = backfill_plan::Gate {
            active: self.state == State::Active,
            targets: &self.backfill,
            waits_for_recovery: self.backfill_waits(),
            backfillfull: self.shared.space.backfillfull_among(&self.backfill),
        };
        match self.bf.next(&gate) {
            Next::Idle => {}
            Next::Toofull { osd, first, retry } => {
                if first {
                    tracing::warn!(pg = %self.id, osd, "backfill waits: the target is backfillfull");
                }
                if retry {
                    self.backfill_again_later();
                }
            }
            Next::PushDeferred(objects) => {
                for (object, targets) in objects {
                    self.backfill_push(object, targets);
                }
            }
            Next::Walk => self.walk(),
            Next::Finish => self.finish_backfill(),
            Next::Scan => self.scan_targets(),
        }
    }

    /// Scans the targets' copies of the next batch: the primary's next `BATCH` objects.
    fn scan_targets(&mut self) {
        let after = self.bf.last.as_ref().map(|(_, name)| object_id(name));
        let page = match self.shared.store.list_heads(self.c, after.as_ref(), backfill_plan::BATCH)
        {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(pg = %self.id, error = %e, "cannot list objects to backfill");
                return self.backfill_again_later();
            }
        };
        let until = (page.len() >= backfill_plan::BATCH)
            .then(|| page.last().map(|(oid, _)| object_name(oid)))
            .flatten();
        self.bf.scanning = true;
        let after = self.bf.last.as_ref().map(|(_, name)| name.clone());
        let targets = self.backfill.clone();
        let peers = self.peers();
        tokio::spawn(async move {
            let mut theirs = BTreeMap::new();
            let mut result = Ok(());
            for osd in targets {
                match scan(&peers, osd, after.clone(), until.clone()).await {
                    Ok(objects) => {
                        theirs.insert(osd, objects);
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let result = result.map(|()| theirs);
            peers.report(Event::Scanned { interval: peers.interval, until, result }).await;
        });
    }

    pub(super) fn backfill_again_later(&self) {
        let (inbox, interval) = (self.inbox.clone(), self.interval);
        tokio::spawn(async move {
            tokio::time::sleep(PEERING_RETRY).await;
            let _ = inbox.send(Event::BackfillRetry { interval }).await;
        });
    }

    /// Starts walking the batch up to `until`, with what the targets have of it.
    pub(super) fn scanned(
        &mut self,
        until: Option<ObjectName>,
        result: Result<BTreeMap<u32, Vec<(ObjectName, Version)>>, TaskError>,
    ) {
        match result {
            Ok(theirs) => {
                self.bf.scanned(until, theirs);
                self.walk();
            }
            Err(e) => {
                self.bf.scanning = false;
                tracing::info!(pg = %self.id, error = %e, "backfill scan failed; retrying");
                self.backfill_again_later();
            }
        }
    }

    /// Walks the batch an object at a time, a few pushes at once (`Backfill::step`).
    pub(super) fn walk(&mut self) {
        while self.bf.pushing.len() < backfill_plan::PUSHES_PER_PG {
            if self.shared.space.backfillfull_among(&self.backfill).is_some() {
                // Waits, and tries again later.
                return self.kick_backfill();
            }
            if self.bf.batch.is_none() {
                return;
            }
            let after = self.bf.last.as_ref().map(|(_, name)| object_id(name));
            let ours = match self.shared.store.list_heads(self.c, after.as_ref(), 1) {
                Ok(page) => {
                    page.into_iter().next().map(|(oid, meta)| (object_name(&oid), meta.version))
                }
                Err(e) => {
                    tracing::error!(pg = %self.id, error = %e, "cannot list objects to backfill");
                    return self.backfill_again_later();
                }
            };
            let (ec, in_flight) = (self.ec.is_some(), &self.in_flight);
            match self.bf.step(ours, &self.backfill, |o| ec && in_flight.contains_key(o)) {
                // `release` walks on once the op is done.
                Walked::Wait => return,
                Walked::BatchDone => {
                    if self.bf.pushing.is_empty() {
                        self.kick_backfill();
                    }
                    return;
                }
                Walked::Passed { object, targets } => {
                    if !targets.is_empty() {
                        self.backfill_push(object, targets);
                    }
                }
            }
        }
    }

    /// Pushes the primary's copy of `object` (or its absence) to `targets`.
    pub(super) fn backfill_push(&mut self, object: ObjectName, targets: Vec<u32>) {
        self.bf.pushing(object.clone(), targets.clone());
        let (peers, shared, c) = (self.peers(), self.shared.clone(), self.c);
        let erasure = self.shard_source().map(|source| {
            let ec = self.ec.as_ref().expect("erasure-coded");
            let targets: Vec<(u32, usize)> =
                targets.iter().filter_map(|&o| Some((o, ec.shard_of(o)?))).collect();
            (source, self.readable_sources(&object), targets)
        });
        tokio::spawn(async move {
            let _permit = shared.backfill.acquire().await;
            let result = async {
                // It may have waited for the throttle while a target filled up.
                if shared.space.backfillfull_among(&targets).is_some() {
                    return Ok(None);
                }
                // The primary's own shard says which version the object has; an object it
                // lacks is removed from the targets below, as for copies.
                let oid = object_id(&object);
                let meta = shared.store.stat(c, &oid).map_err(TaskError::from)?;
                if let (Some((source, sources, shard_targets)), Some(meta)) = (erasure, meta) {
                    let (bytes, full) = source
                        .rebuild(&object, Some(meta.version), &sources, &shard_targets)
                        .await?;
                    for osd in full {
                        shared.space.learned_backfillfull(osd);
                    }
                    return Ok(Some(bytes));
                }
                let (state, bulk) = read_state(shared.store.as_ref(), c, &object)?;
                for osd in targets {
                    let request = PeerRequest::Push { state: state.clone() };
                    let (response, _) = peers.call(osd, request, bulk.clone()).await?;
                    if let PeerResponse::Pushed { backfillfull: true } = response {
                        shared.space.learned_backfillfull(osd);
                    }
                }
                Ok(Some(bulk.len() as u64))
            }
            .await;
            match &result {
                Ok(None) => {}
                Ok(Some(bytes)) => {
                    shared.recovered_objects.fetch_add(1, Ordering::Relaxed);
                    shared.last_recovery_ms.store(shared.clock.now_ms(), Ordering::Relaxed);
                    shared.recovered_bytes.fetch_add(*bytes, Ordering::Relaxed);
                }
                Err(_) => tokio::time::sleep(PEERING_RETRY).await,
            }
            peers.report(Event::Backfilled { interval: peers.interval, object, result }).await;
        });
    }

    pub(super) fn backfilled(
        &mut self,
        object: ObjectName,
        result: Result<Option<u64>, RecoveryError>,
    ) {
        match result {
            Ok(None) => {
                // Not pushed: a target filled up.
                self.bf.defer(&object);
                self.release(&object);
                self.kick_backfill();
            }
            Ok(Some(bytes)) => {
                crate::crash_point!("osd::backfill_pushed");
                self.bf.pushing.remove(&object);
                self.recovered.apply(CountsDelta { objects: 1, bytes: bytes as i64 });
                self.release(&object);
                self.kick_backfill();
            }
            Err(e) => {
                tracing::info!(pg = %self.id, %object, error = %e, "backfill push failed; retrying");
                if let Some(targets) = self.bf.pushing.get(&object).cloned() {
                    self.backfill_push(object, targets);
                }
            }
        }
    }

    pub(super) fn finish_backfill(&mut self) {
        self.bf.finishing = true;
        let targets = self.backfill.clone();
        let peers = self.peers();
        tokio::spawn(async move {
            let mut result = Ok(());
            for osd in targets {
                if let Err(e) = peers.call(osd, PeerRequest::BackfillDone, Bytes::new()).await {
                    result = Err(e.into());
                    break;
                }
            }
            peers.report(Event::BackfillFinished { interval: peers.interval, result }).await;
        });
    }

    /// The targets hold complete copies: acting ones take writes as any other, and an
    /// acting-set override ends (the up set peers anew, now complete).
    pub(super) fn backfill_finished(&mut self, result: Result<(), TaskError>) {
        self.bf.finishing = false;
        if let Err(e) = result {
            tracing::info!(pg = %self.id, error = %e, "could not finish backfill; retrying");
            return self.backfill_again_later();
        }
        tracing::info!(pg = %self.id, targets = ?self.backfill, "backfill done");
        self.shared.last_backfill_ms.store(self.shared.clock.now_ms(), Ordering::Relaxed);
        for osd in std::mem::take(&mut self.backfill) {
            if self.acting.contains(&osd) && !self.writers.contains(&osd) {
                self.writers.push(osd);
            }
        }
        if self.remapped() {
            self.end_override();
        }
        self.kick_recovery();
    }

    /// Asks the monitors to end the acting-set override, again after a while until the
    /// map changes (the interval ends).
    pub(super) fn end_override(&self) {
        let up = match &self.ec {
            Some(ec) => ec.up.clone(),
            None => self.up.iter().copied().map(Some).collect(),
        };
        self.ask_pg_temp(up);
        let (inbox, interval) = (self.inbox.clone(), self.interval);
        tokio::spawn(async move {
            tokio::time::sleep(PG_TEMP_RETRY).await;
            let _ = inbox.send(Event::BackfillRetry { interval }).await;
        });
    }
}

/// A target's copies of the objects after `after` up to `until`, page by page.
async fn scan(
    peers: &Peers,
    osd: u32,
    after: Option<ObjectName>,
    until: Option<ObjectName>,
) -> Result<Vec<(ObjectName, Version)>, TaskError> {
    let mut objects: Vec<(ObjectName, Version)> = Vec::new();
    let mut cursor = after;
    loop {
        let request =
            PeerRequest::Scan { after: cursor.clone(), until: until.clone(), max: SCAN_MAX };
        match peers.call(osd, request, Bytes::new()).await? {
            (PeerResponse::Scanned { objects: page, more }, _) => {
                cursor = page.last().map(|(name, _)| name.clone()).or(cursor);
                objects.extend(page);
                if !more {
                    return Ok(objects);
                }
            }
            (other, _) => return Err(PeerError::unexpected(osd, "scan", &other).into()),
        }
    }
}
