//! Backfill on the primary, for a copy the log cannot bring up to date (new, or too far
//! behind). It walks the primary's objects in store order: scan the targets' copies of a
//! batch, then go through it an object at a time, pushing the primary's copy where a
//! target's version differs (or removing the target's copy where the primary has none).
//! `Backfill::last` divides the key space: writes to objects up to it replicate to the
//! targets in full, writes beyond it only append to their logs (the walk will copy the
//! object), and an object being pushed takes no writes until it is there. The primary's
//! version is read when the walk reaches the object, so a write between the scan and the
//! walk is not missed. Once done, the acting-set override (pg_temp) that let the old
//! copies serve meanwhile is ended.

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
        let bf = &self.bf;
        if self.state != State::Active
            || self.backfill.is_empty()
            || bf.scanning
            || bf.finishing
            || self.backfill_waits()
        {
            return;
        }
        if let Some(osd) = self.shared.space.backfillfull_among(&self.backfill) {
            let retry_due = self.bf.toofull.is_some_and(|(_, due)| due);
            if self.bf.toofull.is_none() {
                tracing::warn!(pg = %self.id, osd, "backfill waits: the target is backfillfull");
            }
            self.bf.toofull = Some((osd, true));
            if !retry_due {
                self.backfill_again_later();
            }
            return;
        }
        self.bf.toofull = None;
        // Objects whose push waited for space go first.
        if !self.bf.deferred.is_empty() {
            while self.bf.pushing.len() < BACKFILL_PUSHES_PER_PG {
                let Some((_, (object, targets))) = self.bf.deferred.pop_first() else { break };
                self.backfill_push(object, targets);
            }
            return;
        }
        let bf = &self.bf;
        if bf.batch.is_some() {
            return self.walk();
        }
        if !bf.pushing.is_empty() {
            return;
        }
        if bf.end {
            return self.finish_backfill();
        }
        let after = bf.last.as_ref().map(|(_, name)| object_id(name));
        let page = match self.shared.store.list(self.c, after.as_ref(), BACKFILL_BATCH) {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(pg = %self.id, error = %e, "cannot list objects to backfill");
                return self.backfill_again_later();
            }
        };
        let until = (page.len() >= BACKFILL_BATCH)
            .then(|| page.last().map(|(oid, _)| object_name(oid)))
            .flatten();
        self.bf.scanning = true;
        let after = self.bf.last.as_ref().map(|(_, name)| name.clone());
        let targets = self.backfill.clone();
        let peers = self.peers();
        tokio::spawn(async move {
            let scan = async {
                let mut theirs = BTreeMap::new();
                for osd in targets {
                    let mut objects: Vec<(ObjectName, Version)> = Vec::new();
                    let mut cursor = after.clone();
                    loop {
                        let request = PeerRequest::Scan {
                            after: cursor.clone(),
                            until: until.clone(),
                            max: SCAN_MAX,
                        };
                        match peers.call(osd, request, Bytes::new()).await? {
                            (PeerResponse::Scanned { objects: page, more }, _) => {
                                cursor = page.last().map(|(name, _)| name.clone()).or(cursor);
                                objects.extend(page);
                                if !more {
                                    break;
                                }
                            }
                            (other, _) => {
                                return Err(PeerError::unexpected(osd, "scan", &other).into());
                            }
                        }
                    }
                    theirs.insert(osd, objects);
                }
                Ok(theirs)
            };
            let result = scan.await;
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
        self.bf.scanning = false;
        let theirs = match result {
            Ok(theirs) => theirs,
            Err(e) => {
                tracing::info!(pg = %self.id, error = %e, "backfill scan failed; retrying");
                return self.backfill_again_later();
            }
        };
        let order = |name: &ObjectName| objectstore::keys::object_order(&object_id(name));
        for (osd, objects) in theirs {
            for (name, version) in objects {
                let entry =
                    self.bf.queue.entry(order(&name)).or_insert_with(|| (name, BTreeMap::new()));
                entry.1.insert(osd, version);
            }
        }
        self.bf.batch = Some(until.map(|name| (order(&name), name)));
        self.walk();
    }

    /// Walks the batch an object at a time, a few pushes at once. The next object is the
    /// first past the mark that the primary has now (read at each step, so one created
    /// during the walk is not passed over: its writes only reached the targets' logs) or
    /// that a target had at the scan. Compares the primary's version with each target's,
    /// moves the mark past the object, and pushes where they differ. At the batch's end
    /// the mark moves to the batch's end.
    pub(super) fn walk(&mut self) {
        while self.bf.pushing.len() < BACKFILL_PUSHES_PER_PG {
            if self.shared.space.backfillfull_among(&self.backfill).is_some() {
                // Waits, and tries again later.
                return self.kick_backfill();
            }
            let Some(until) = self.bf.batch.clone() else { return };
            let after = self.bf.last.as_ref().map(|(_, name)| object_id(name));
            let ours = match self.shared.store.list(self.c, after.as_ref(), 1) {
                Ok(page) => page.into_iter().next().and_then(|(oid, meta)| {
                    let key = objectstore::keys::object_order(&oid);
                    let within = until.as_ref().is_none_or(|(u, _)| key <= *u);
                    within.then(|| (key, object_name(&oid), meta.version))
                }),
                Err(e) => {
                    tracing::error!(pg = %self.id, error = %e, "cannot list objects to backfill");
                    return self.backfill_again_later();
                }
            };
            let theirs_first = self.bf.queue.keys().next().cloned();
            let (key, object, ours) = match (ours, theirs_first) {
                (Some((key, name, version)), theirs)
                    if theirs.as_ref().is_none_or(|t| key <= *t) =>
                {
                    (key, name, Some(version))
                }
                // Only a target has it: the primary does not.
                (_, Some(key)) => {
                    let name = self.bf.queue[&key].0.clone();
                    (key, name, None)
                }
                _ => {
                    self.bf.batch = None;
                    self.bf.end = until.is_none();
                    self.bf.last = until;
                    if self.bf.pushing.is_empty() {
                        self.kick_backfill();
                    }
                    return;
                }
            };
            if self.ec.is_some() && self.in_flight.contains_key(&object) {
                // An erasure-coded op on it is gathering or committing: its shards are
                // rebuilt once it is done (`release` walks on), never from a version it
                // is about to replace.
                return;
            }
            let theirs = self.bf.queue.remove(&key).map(|(_, v)| v).unwrap_or_default();
            let targets: Vec<u32> =
                self.backfill.iter().copied().filter(|t| theirs.get(t) != ours.as_ref()).collect();
            self.bf.covered += u64::from(ours.is_some());
            self.bf.last = Some((key, object.clone()));
            if !targets.is_empty() {
                self.backfill_push(object, targets);
            }
        }
    }

    /// Pushes the primary's copy of `object` (or its absence) to `targets`.
    pub(super) fn backfill_push(&mut self, object: ObjectName, targets: Vec<u32>) {
        self.bf.pushing.insert(object.clone(), targets.clone());
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
                    shared.last_recovery_ms.store(now_ms(), Ordering::Relaxed);
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
                // Not pushed: the object waits, and writes to it meanwhile reach the
                // targets' logs only (they do not have it).
                let targets = self.bf.pushing.remove(&object).unwrap_or_default();
                let order = objectstore::keys::object_order(&object_id(&object));
                self.bf.deferred.insert(order, (object.clone(), targets));
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
        self.shared.last_backfill_ms.store(now_ms(), Ordering::Relaxed);
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
