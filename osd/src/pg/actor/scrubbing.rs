//! Scrub on the primary: on schedule or on demand, a chunk of objects at a time in store
//! order, writes to the chunk held while every copy lists it (`scrub_map`; a deep scrub
//! reads and checksums every byte), the copies compared (`scrub`), inconsistencies
//! reported and repaired from the authoritative copy. Scrub yields to client load.

use super::*;

impl Pg {
    /// Starts a scheduled scrub when one is due (called with each stats report).
    pub(super) fn schedule_scrub(&mut self) {
        if !self.is_primary() || self.state != State::Active {
            return;
        }
        let now = self.shared.clock.now_ms();
        if self.info.last_scrub_ms == 0 {
            // A new PG: not due before its intervals have passed.
            self.info.last_scrub_ms = now;
            self.info.last_deep_scrub_ms = now;
            self.save_info();
            return;
        }
        let flags = &self.map.contents().flags;
        let shared = &self.shared;
        let busy = shared.load_per_cpu_percent.load(Ordering::Relaxed)
            > shared.scrub_load_threshold_percent.load(Ordering::Relaxed);
        let interval = |ms: &AtomicU64| ms.load(Ordering::Relaxed) as i64;
        let deep_due = scrub_due(
            now,
            self.info.last_deep_scrub_ms,
            interval(&shared.deep_scrub_interval_ms),
            busy,
        ) && !flags.contains(&placement::MapFlag::Nodeepscrub);
        let due =
            scrub_due(now, self.info.last_scrub_ms, interval(&shared.scrub_interval_ms), busy);
        if (deep_due || due) && !flags.contains(&placement::MapFlag::Noscrub) {
            self.request_scrub(deep_due, None);
        }
    }

    /// Queues a scrub for the OSD's scrub slot.
    pub(super) fn request_scrub(&mut self, deep: bool, reply: Option<Reply>) {
        if !self.is_primary() || self.state != State::Active {
            if let Some(reply) = reply {
                let _ = reply.send(Err(err(
                    ErrorCode::Unavailable,
                    format!("pg {} is not active on osd.{}: not scrubbed", self.id, self.me()),
                )));
            }
            return;
        }
        if let Some(reply) = reply {
            let _ = reply.send(Ok((Response::Ack, Bytes::new())));
        }
        if self.scrub.is_some() || self.scrub_queued {
            return;
        }
        self.scrub_queued = true;
        let (slots, inbox, interval) =
            (self.shared.scrubs.clone(), self.inbox.clone(), self.interval);
        tokio::spawn(async move {
            if let Ok(permit) = slots.acquire_owned().await {
                let _ = inbox.send(Event::ScrubGo { interval, deep, permit }).await;
            }
        });
    }

    pub(super) fn scrub_go(&mut self, deep: bool, permit: tokio::sync::OwnedSemaphorePermit) {
        self.scrub_queued = false;
        let clean = self.degraded_objects() == 0 && self.backfill.is_empty();
        if !self.is_primary() || self.state != State::Active || !clean {
            // Scrub compares complete copies; the schedule tries again.
            tracing::info!(pg = %self.id, "scrub put off: the PG is not active and clean");
            return;
        }
        tracing::info!(pg = %self.id, deep, "scrub starts");
        // What an earlier scrub recorded and no repair cleared (say, one cut short by a
        // new interval) a deep scrub finds again if it is still so; a light one cannot see
        // data damage, so it keeps the record.
        if deep {
            self.inconsistent.clear();
        }
        self.scrub = Some(ScrubRun {
            deep,
            after: None,
            until: None,
            ranged: false,
            chunk_began: (Instant::now(), 0),
            gathering: false,
            errors: 0,
            _permit: permit,
        });
        self.scrub_chunk();
    }

    /// Whether writes to `object` wait for the scrub of its chunk.
    pub(super) fn in_scrub_range(&self, object: &ObjectName) -> bool {
        let Some(run) = self.scrub.as_ref().filter(|r| r.ranged) else { return false };
        let order = objectstore::keys::object_order(&object_id(object));
        run.after.as_ref().is_none_or(|(a, _)| order > *a)
            && run.until.as_ref().is_none_or(|(u, _)| order <= *u)
    }

    /// Picks the next chunk: up to `SCRUB_CHUNK` of the primary's objects.
    pub(super) fn scrub_chunk(&mut self) {
        let Some(run) = &self.scrub else { return };
        let after = run.after.as_ref().map(|(_, name)| object_id(name));
        let page = match self.shared.store.list_heads(self.c, after.as_ref(), SCRUB_CHUNK) {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(pg = %self.id, error = %e, "scrub cannot list objects; stopped");
                self.scrub = None;
                return;
            }
        };
        // A deep chunk also stops at a byte budget, so writes to it wait less.
        let mut end = page.len();
        if run.deep {
            let mut bytes = 0;
            if let Some(at) = page.iter().position(|(_, meta)| {
                bytes += meta.size;
                bytes >= SCRUB_CHUNK_BYTES
            }) {
                end = at + 1;
            }
        }
        let until = (page.len() >= SCRUB_CHUNK || end < page.len())
            .then(|| {
                page[..end]
                    .last()
                    .map(|(oid, _)| (objectstore::keys::object_order(oid), object_name(oid)))
            })
            .flatten();
        let ops = self.shared.client_ops.load(Ordering::Relaxed);
        if let Some(run) = self.scrub.as_mut() {
            run.until = until;
            run.ranged = true;
            run.chunk_began = (Instant::now(), ops);
        }
        self.scrub_gather_when_quiet();
    }

    /// Gathers every copy of the chunk once no write to it is in flight.
    pub(super) fn scrub_gather_when_quiet(&mut self) {
        let Some(run) = &self.scrub else { return };
        if !run.ranged || run.gathering {
            return;
        }
        if self.in_flight.keys().any(|o| self.in_scrub_range(o)) {
            return;
        }
        let (deep, after, until) = (
            run.deep,
            run.after.as_ref().map(|(_, n)| n.clone()),
            run.until.as_ref().map(|(_, n)| n.clone()),
        );
        if let Some(run) = self.scrub.as_mut() {
            run.gathering = true;
        }
        let me = self.me();
        let others: Vec<u32> = self.acting.iter().copied().filter(|&o| o != me).collect();
        let (peers, store, c) = (self.peers(), self.shared.store.clone(), self.c);
        let source = self.shard_source();
        tokio::spawn(async move {
            let gather = async {
                let (a, u) = (after.clone(), until.clone());
                let local = tokio::task::spawn_blocking(move || {
                    scrub_map(store.as_ref(), c, a.as_ref(), u.as_ref(), deep)
                })
                .await??;
                let mut maps = BTreeMap::from([(me, local)]);
                for osd in others {
                    let request =
                        PeerRequest::ScrubMap { after: after.clone(), until: until.clone(), deep };
                    match peers.call(osd, request, Bytes::new()).await? {
                        (PeerResponse::ScrubMap { objects }, _) => {
                            maps.insert(osd, objects);
                        }
                        (other, _) => {
                            return Err(PeerError::unexpected(osd, "scrub map", &other).into());
                        }
                    }
                }
                let Some(source) = source else { return Ok(scrub::compare(me, &maps)) };
                // Shards hold different bytes: each is checked against its own checksums
                // as it is read (a bad one reads as an error), and the copies are
                // compared by version, size and metadata; then a deep scrub checks that
                // the parity of every object the shards agree on fits its data.
                for copy in maps.values_mut().flatten() {
                    copy.data_digest = None;
                }
                let mut found = scrub::compare(me, &maps);
                if deep {
                    let flagged: BTreeSet<ObjectName> =
                        found.iter().map(|f| f.object.clone()).collect();
                    for copy in maps.get(&me).into_iter().flatten() {
                        if copy.size > 0 && !flagged.contains(&copy.object) {
                            found.extend(source.check_parity(me, copy).await);
                        }
                    }
                }
                Ok(found)
            };
            let result = gather.await;
            peers.report(Event::ScrubChunk { interval: peers.interval, result }).await;
        });
    }

    /// A chunk compared: bad copies are recorded and marked missing where they are, so
    /// none is served and recovery rewrites each from the authority.
    pub(super) fn scrubbed(&mut self, result: Result<Vec<scrub::Inconsistency>, TaskError>) {
        let held: Vec<ObjectName> =
            self.held.keys().filter(|o| self.in_scrub_range(o)).cloned().collect();
        let Some(run) = self.scrub.as_mut() else { return };
        run.gathering = false;
        run.ranged = false;
        let until = run.until.take();
        let result = if self.state == State::Active { result } else { Err(TaskError::Superseded) };
        let Some(run) = self.scrub.as_mut() else { return };
        let found = match result {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(pg = %self.id, error = %e, "scrub stopped; the schedule tries again");
                self.scrub = None;
                for object in &held {
                    self.release(object);
                }
                return;
            }
        };
        for finding in found {
            let why: Vec<String> =
                finding.bad.iter().map(|b| format!("osd.{}: {}", b.osd, b.why)).collect();
            tracing::error!(
                pg = %self.id,
                object = %finding.object,
                version = %finding.version,
                auth = ?finding.auth,
                bad = %why.join("; "),
                "scrub found bad copies"
            );
            run.errors += finding.bad.len() as u64;
            self.shared.quarantined.fetch_add(finding.bad.len() as u64, Ordering::Relaxed);
            self.inconsistent.insert(finding.object.clone(), why.join("; "));
            if finding.auth.is_some() {
                for bad in &finding.bad {
                    self.missing
                        .entry(bad.osd)
                        .or_default()
                        .insert(finding.object.clone(), finding.version);
                }
            }
        }
        match until {
            None => {
                let now = self.shared.clock.now_ms();
                self.info.last_scrub_ms = now;
                if run.deep {
                    self.info.last_deep_scrub_ms = now;
                }
                self.last_scrub_errors = run.errors;
                self.shared.last_scrub_ms.store(now, Ordering::Relaxed);
                tracing::info!(pg = %self.id, deep = run.deep, errors = run.errors, "scrub done");
                self.scrub = None;
                self.save_info();
            }
            Some(until) => {
                run.after = Some(until);
                let (inbox, interval) = (self.inbox.clone(), self.interval);
                let (began, ops_then) = run.chunk_began;
                let busy = self.shared.client_ops.load(Ordering::Relaxed) != ops_then;
                let sleep =
                    Duration::from_millis(self.shared.scrub_sleep_ms.load(Ordering::Relaxed));
                let pause = scrub_pause(sleep, began.elapsed(), busy);
                tokio::spawn(async move {
                    tokio::time::sleep(pause).await;
                    let _ = inbox.send(Event::ScrubNext { interval }).await;
                });
            }
        }
        for object in &held {
            self.release(object);
        }
        self.kick_recovery();
    }
}

/// The pause after a scrub chunk that took `took`: `osd.scrub_sleep_ms`, and while client
/// ops came in during the chunk at least as long as the chunk took, so that a scrub under
/// client load keeps at most half of the OSD's time (its disk reads compete with the
/// clients' writes; Ceph's scrub yields to clients by queue priority).
pub(super) fn scrub_pause(sleep: Duration, took: Duration, busy: bool) -> Duration {
    if busy { sleep.max(took) } else { sleep }
}

/// Whether a scheduled scrub last done at `last_ms` is due: once its interval has passed,
/// unless the host is busy; a busy host still scrubs once twice the interval has passed,
/// so that load alone never stops auditing (as Ceph's osd_scrub_max_interval).
pub(super) fn scrub_due(now_ms: i64, last_ms: i64, interval_ms: i64, busy: bool) -> bool {
    let since = now_ms - last_ms;
    since >= interval_ms && (!busy || since >= interval_ms.saturating_mul(2))
}

/// This copy's objects after `after` and up to `until` (`None`: the end) as scrub
/// compares them; `deep` reads and checksums every byte.
pub fn scrub_map(
    store: &dyn ObjectStore,
    c: CollectionId,
    after: Option<&ObjectName>,
    until: Option<&ObjectName>,
    deep: bool,
) -> Result<Vec<proto::osd::ScrubObject>, RemoteError> {
    let until = until.map(|u| objectstore::keys::object_order(&object_id(u)));
    let mut cursor = after.map(object_id);
    let mut out = Vec::new();
    loop {
        let page = store.list_heads(c, cursor.as_ref(), SCAN_MAX as usize).map_err(store_error)?;
        let more = page.len() >= SCAN_MAX as usize;
        for (oid, meta) in page {
            if until.as_ref().is_some_and(|u| objectstore::keys::object_order(&oid) > *u) {
                return Ok(out);
            }
            if out.len() >= SCRUB_MAP_MAX {
                return Err(err(
                    ErrorCode::TooLarge,
                    format!("more than {SCRUB_MAP_MAX} objects in one scrub chunk"),
                ));
            }
            out.push(scrub_object(store, c, &oid, meta, deep));
            cursor = Some(oid);
        }
        if !more {
            return Ok(out);
        }
    }
}

pub(super) fn scrub_object(
    store: &dyn ObjectStore,
    c: CollectionId,
    oid: &objectstore::ObjectId,
    meta: objectstore::ObjectMeta,
    deep: bool,
) -> proto::osd::ScrubObject {
    let field = |crc: u32, bytes: &[u8]| {
        let crc = crc32c::crc32c_append(crc, &(bytes.len() as u64).to_le_bytes());
        crc32c::crc32c_append(crc, bytes)
    };
    let mut error = None;
    let mut meta_digest = 0;
    for (name, value) in &meta.xattrs {
        meta_digest = field(field(meta_digest, name.as_bytes()), value);
    }
    let mut after: Option<Vec<u8>> = None;
    loop {
        match store.omap_list(c, oid, after.as_deref(), objectstore::store::SCAN_ENTRIES_MAX) {
            Ok(page) => {
                let done = page.len() < objectstore::store::SCAN_ENTRIES_MAX;
                for (key, value) in &page {
                    meta_digest = field(field(meta_digest, key), value);
                }
                after = page.last().map(|(k, _)| k.clone());
                if done {
                    break;
                }
            }
            Err(e) => {
                error = Some(format!("omap: {e}"));
                break;
            }
        }
    }
    let data_digest = deep.then(|| {
        let mut crc = 0;
        let mut offset = 0;
        while offset < meta.size && error.is_none() {
            let len = SCRUB_READ_BYTES.min(meta.size - offset);
            match store.read(c, oid, offset, len) {
                Ok(bytes) => crc = crc32c::crc32c_append(crc, &bytes),
                Err(e) => error = Some(e.to_string()),
            }
            offset += len;
        }
        crc
    });
    proto::osd::ScrubObject {
        object: object_name(oid),
        version: meta.version,
        size: meta.size,
        meta_digest,
        data_digest,
        error,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{scrub_due, scrub_pause};

    #[test]
    fn a_scrub_under_client_load_pauses_as_long_as_its_chunk_took() {
        let (sleep, took) = (Duration::from_millis(20), Duration::from_millis(70));
        assert_eq!(scrub_pause(sleep, took, false), sleep);
        assert_eq!(scrub_pause(sleep, took, true), took);
        assert_eq!(scrub_pause(sleep, Duration::from_millis(5), true), sleep);
    }

    #[test]
    fn a_busy_host_puts_scrubs_off_until_twice_their_interval() {
        let day = 86_400_000;
        assert!(!scrub_due(day - 1, 0, day, false));
        assert!(scrub_due(day, 0, day, false));
        // Busy: not yet, but never later than twice the interval.
        assert!(!scrub_due(day, 0, day, true));
        assert!(!scrub_due(2 * day - 1, 0, day, true));
        assert!(scrub_due(2 * day, 0, day, true));
    }
}
