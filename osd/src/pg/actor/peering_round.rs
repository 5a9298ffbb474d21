//! Peering on the primary. A round runs off the PG's task (`PeeringTask`: ask the OSDs
//! of the current and past intervals for their infos until `peering::decide` can answer,
//! then fetch the authority's log if it is not ours); its result comes back as an event
//! and is acted on here: merge the authority's log into ours, roll back what it lacks,
//! then activate the others and go active. A PG that cannot go active says why
//! (`status::Blocked`). The decisions are `peering`'s, `log`'s and `status`'s; this
//! moves infos and logs.

use super::*;

impl Pg {
    pub(super) fn start_peering(&mut self) {
        // Peering rolls every entry forward or back: none is waiting to commit.
        self.uncommitted.clear();
        let interval = self.interval;
        let inbox = self.inbox.clone();
        // What this OSD says of itself, as it answers a peer's query: the primary's own
        // store is evidence too (an interval it led but never activated took no writes).
        let PeerResponse::Info { kept, born, .. } = self.query() else {
            unreachable!("a query is answered with an info")
        };
        let task = PeeringTask {
            pg: self.id,
            me: self.me(),
            epoch: self.map.epoch(),
            interval,
            map: self.map.clone(),
            up: self.up.clone(),
            acting: self.acting.clone(),
            min_size: self.min_size,
            size: self.size,
            erasure: self.ec.clone(),
            mine: self.my_info(),
            kept,
            born,
            conns: self.shared.conns.clone(),
        };
        tokio::spawn(async move {
            let result = task.run().await.map_err(TaskError::from);
            let _ = inbox.send(Event::Peered { interval, result }).await;
        });
    }

    pub(super) fn retry_later(&self) {
        self.peer_again_after(PEERING_RETRY);
    }

    pub(super) fn peer_again_after(&self, delay: Duration) {
        let (inbox, interval) = (self.inbox.clone(), self.interval);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = inbox.send(Event::Retry { interval }).await;
        });
    }

    pub(super) fn peered(&mut self, result: Result<Peered, TaskError>) {
        let (plan, auth_log, auth_stats) = match result {
            Err(e) => {
                tracing::info!(pg = %self.id, error = %e, "peering round failed; retrying");
                return self.retry_later();
            }
            Ok(Peered::Blocked(blocked)) => {
                tracing::info!(pg = %self.id, state = blocked.state, why = %blocked.why, "cannot go active");
                self.state = State::Blocked;
                self.blocked = blocked;
                return;
            }
            Ok(Peered::Plan { plan, auth_log, auth_stats }) => (plan, auth_log, auth_stats),
        };
        if let Some(want) = plan.want_acting {
            // Complete copies should serve (or the override should end): ask, and peer
            // again when the map changes, or after a while if it does not.
            tracing::info!(pg = %self.id, ?want, acting = ?self.acting, up = ?self.up, "asking for an acting set");
            self.ask_pg_temp(want);
            return self.peer_again_after(PG_TEMP_RETRY);
        }
        if !plan.active {
            let k = self.ec.as_ref().map(|e| e.layout.k());
            self.blocked = Blocked::inactive(&plan, self.me(), self.min_size, &self.acting, k);
            tracing::info!(pg = %self.id, state = self.blocked.state, why = %self.blocked.why, "cannot go active");
            self.state = State::Blocked;
            return;
        }
        // Adopt the authoritative history first.
        let mut my_missing = BTreeMap::new();
        if let Some((tail, entries)) = auth_log {
            match self.merge_log(tail, &entries) {
                Ok(missing) => {
                    my_missing = missing;
                    self.info.stats = auth_stats;
                }
                Err(e) => {
                    tracing::error!(pg = %self.id, error = %e, "cannot merge the authoritative log");
                    return self.retry_later();
                }
            }
        }
        self.missing.insert(self.me(), my_missing);
        self.auth = Some(plan.auth);
        self.writers = self.acting.iter().copied().filter(|o| !plan.backfill.contains(o)).collect();
        self.backfill = plan.backfill.clone();
        self.strays = plan.strays.clone();
        let mut info = self.my_info().unwrap_or_default();
        info.backfill_incomplete = None;
        self.info = info.clone();
        self.save_info();
        self.activate(&plan, info);
    }

    /// Sends the others of the plan the history to start the interval with, and reports
    /// what each lacks (`Event::Activated`).
    fn activate(&self, plan: &Plan, mut info: PgInfo) {
        // The replicas start the interval with this; the primary records it only once they
        // all have (`activated`). If activation fails, peering again must still probe the
        // OSDs of the past intervals: the copies this interval leaves behind (strays) are
        // found, and deleted once the PG is clean, only through them.
        info.last_epoch_started = self.interval;
        info.past_intervals.clear();
        let entries: Vec<LogEntry> = self.log.entries().cloned().collect();
        let peers = peer_targets(self.me(), &plan.log_recovery, &plan.backfill, true);
        let (interval, inbox, conns, map, pg) = (
            self.interval,
            self.inbox.clone(),
            self.shared.conns.clone(),
            self.map.clone(),
            self.id,
        );
        let epoch = map.epoch();
        tokio::spawn(async move {
            let mut missing = BTreeMap::new();
            let mut failure = None;
            for (osd, backfill) in peers {
                let request = PeerRequest::Activate {
                    info: info.clone(),
                    entries: entries.clone(),
                    backfill,
                };
                match call_peer(&conns, &map, osd, pg, epoch, interval, request, Bytes::new()).await
                {
                    Ok((PeerResponse::Activated { missing: m }, _)) => {
                        if !backfill {
                            missing.insert(osd, m.into_iter().collect());
                        }
                    }
                    Ok((other, _)) => {
                        failure = Some(PeerError::unexpected(osd, "activate", &other))
                    }
                    Err(e) => failure = Some(e),
                }
            }
            let result = match failure {
                Some(e) => Err(e.into()),
                None => Ok(missing),
            };
            let _ = inbox.send(Event::Activated { interval, result }).await;
        });
    }

    /// Merges an authoritative log into ours: rewinds divergent changes (an
    /// erasure-coded shard puts back what it stashed, where it can), removes what the
    /// authority deleted, persists the result in one transaction. Returns what we must
    /// recover. The merged history is every copy's from now on: no stash is needed after.
    pub(super) fn merge_log(
        &mut self,
        tail: Version,
        entries: &[LogEntry],
    ) -> Result<BTreeMap<ObjectName, Version>, StoreError> {
        let before: Vec<Version> = self.log.entries().map(|e| e.version).collect();
        let mut merge = self.log.merge_authoritative(tail, entries);
        let mut ops = self.roll_back(&mut merge);
        if !self.rollbacks.is_empty() {
            ops.push(persist::clear_rollbacks(self.c));
        }
        for entry in &merge.divergent {
            ops.push(persist::delete_entry(self.c, entry.version));
        }
        for entry in self.log.entries().filter(|e| !before.contains(&e.version)) {
            ops.push(persist::put_entry(self.c, entry));
        }
        for object in &merge.remove {
            ops.extend(remove_with_clones(self.shared.store.as_ref(), self.c, object));
        }
        self.info.last_update = self.log.head();
        self.info.log_tail = self.log.tail();
        ops.push(persist::put_info(self.c, &self.info));
        if !self.exists {
            ops.insert(0, TxOp::CreateCollection(self.c));
            self.exists = true;
        }
        self.shared.store.apply(&Transaction { ops })?;
        self.rollbacks.clear();
        Ok(merge.missing)
    }

    /// The ops that undo this shard's divergent writes from their stashes, for each
    /// object whose every divergent entry has one and which is at the newest of them (a
    /// copy not at that version was not written by them alone). An object put back at the
    /// version the merge wants is no longer missing; any other is recovered as before. An
    /// object the divergent entries created is removed by the merge, and needs none.
    pub(super) fn roll_back(&self, merge: &mut crate::pg::log::Merge) -> Vec<TxOp> {
        let mut ops = Vec::new();
        if self.rollbacks.is_empty() {
            return ops;
        }
        let store = self.shared.store.as_ref();
        // Newest first, as the merge rewound them.
        let mut by_object: BTreeMap<&ObjectName, Vec<&LogEntry>> = BTreeMap::new();
        for entry in &merge.divergent {
            by_object.entry(&entry.object).or_default().push(entry);
        }
        let mut restored = Vec::new();
        for (object, entries) in by_object {
            let created = entries.last().is_some_and(|e| e.prior_version == Version::ZERO);
            if created || !entries.iter().all(|e| self.rollbacks.contains(&e.version)) {
                continue;
            }
            let oid = object_id(object);
            // An object whose record or stash cannot be read is recovered instead.
            let undo = || -> Result<Option<(Vec<TxOp>, Version)>, StoreError> {
                let meta = store.stat(self.c, &oid)?;
                let newest = entries[0];
                let at_newest = match newest.op {
                    LogOp::Modify => meta.as_ref().is_some_and(|m| m.version == newest.version),
                    LogOp::Delete => meta.is_none(),
                };
                if !at_newest {
                    return Ok(None);
                }
                let mut stashes: Vec<Rollback> = Vec::new();
                for entry in &entries {
                    match persist::get_rollback(store, self.c, entry.version)? {
                        Some(stash) => stashes.push(stash),
                        None => return Ok(None),
                    }
                }
                let mut ops = Vec::new();
                let mut xattrs_now = meta.map(|m| m.xattrs);
                for stash in &stashes {
                    ops.extend(rollback::restore(self.c, &oid, stash, xattrs_now.as_ref()));
                    xattrs_now = stash.prior.as_ref().map(|p| p.xattrs.clone());
                }
                let version = stashes
                    .last()
                    .and_then(|s| s.prior.as_ref())
                    .map_or(Version::ZERO, |p| p.version);
                Ok(Some((ops, version)))
            };
            match undo() {
                Ok(Some((undo, version))) => {
                    ops.extend(undo);
                    restored.push((object.clone(), version, entries.len()));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(pg = %self.id, %object, error = %e, "cannot roll back a torn write from its stash; recovering the object instead");
                }
            }
        }
        for (object, version, entries) in restored {
            if merge.missing.get(&object) == Some(&version) {
                merge.missing.remove(&object);
            }
            tracing::info!(pg = %self.id, %object, %version, entries, "rolled back a torn write from its stash");
        }
        ops
    }

    pub(super) fn activated(
        &mut self,
        result: Result<BTreeMap<u32, BTreeMap<ObjectName, Version>>, TaskError>,
    ) {
        match result {
            Err(e) => {
                tracing::info!(pg = %self.id, error = %e, "activation failed; peering again");
                self.retry_later();
            }
            Ok(missing) => {
                self.info.last_epoch_started = self.interval;
                self.info.past_intervals.clear();
                self.save_info();
                self.missing.extend(missing);
                self.state = State::Active;
                tracing::debug!(pg = %self.id, interval = %self.interval, "active");
                let waiting: Vec<ClientOp> = self.waiting.drain(..).collect();
                for op in waiting {
                    self.client_op(op);
                }
                self.kick_recovery();
            }
        }
    }
}

/// One peering round, off the PG's task: gather infos until the decision is made, then
/// fetch the authority's log if it is not ours.
pub(super) struct PeeringTask {
    pub(super) pg: PgId,
    pub(super) me: u32,
    pub(super) epoch: Epoch,
    pub(super) interval: Epoch,
    pub(super) map: Arc<OsdMap>,
    pub(super) up: Vec<u32>,
    pub(super) acting: Vec<u32>,
    pub(super) min_size: usize,
    pub(super) size: usize,
    /// k and the acting and up sets by position, for an erasure-coded PG.
    pub(super) erasure: Option<Ec>,
    pub(super) mine: Option<PgInfo>,
    /// Whether this OSD keeps a shard of another position, and the epoch its store first
    /// served at: what it would answer a peer's query with.
    pub(super) kept: bool,
    pub(super) born: Epoch,
    pub(super) conns: Arc<OsdConnections>,
}

/// What a peering round heard from the OSDs it asked, itself included.
struct Heard {
    infos: BTreeMap<u32, Option<PgInfo>>,
    /// The shard position each answering OSD's copy is for (erasure-coded PGs).
    held: BTreeMap<u32, usize>,
    /// OSDs that keep a shard of another position besides the one they answered for.
    kept: BTreeSet<u32>,
    /// The epoch each answering OSD's store first served at.
    born: BTreeMap<u32, Epoch>,
}

impl PeeringTask {
    pub(super) async fn run(self) -> Result<Peered, PeerError> {
        let mut heard = Heard {
            infos: BTreeMap::from([(self.me, self.mine.clone())]),
            held: BTreeMap::new(),
            kept: BTreeSet::new(),
            born: BTreeMap::from([(self.me, self.born)]),
        };
        if self.kept {
            heard.kept.insert(self.me);
        }
        if let Some(mine) = self.erasure.as_ref().and_then(|e| e.shard_of(self.me)) {
            heard.held.insert(self.me, mine);
        }
        let plan = loop {
            match self.decide(&heard) {
                Decision::Probe(osds) => self.probe(&osds, &mut heard).await?,
                Decision::Down { interval, waiting_for } => {
                    let k = self.erasure.as_ref().map(|e| e.layout.k());
                    return Ok(Peered::Blocked(Blocked::down(&interval, waiting_for, k)));
                }
                Decision::Incomplete => return Ok(Peered::Blocked(Blocked::incomplete())),
                Decision::Plan(plan) => break plan,
            }
        };
        crate::crash_point!("osd::peering_decided");
        let auth_log = if plan.auth != self.me && plan.active {
            Some(self.fetch_log(plan.auth).await?)
        } else {
            None
        };
        let auth_stats = heard.infos.get(&plan.auth).cloned().flatten().unwrap_or_default().stats;
        Ok(Peered::Plan { plan, auth_log, auth_stats })
    }

    /// `peering::decide` on what was heard so far.
    fn decide(&self, heard: &Heard) -> Decision {
        let past = peering::merge_intervals(
            heard.infos.values().flatten().map(|i| i.past_intervals.as_slice()),
        );
        let input = peering::Peering {
            me: self.me,
            acting: &self.acting,
            up: &self.up,
            min_size: self.min_size,
            size: self.size,
            erasure: self.erasure.as_ref().map(|e| peering::Erasure {
                k: e.layout.k(),
                acting: &e.acting,
                up: &e.up,
                held: &heard.held,
                kept: &heard.kept,
                born: &heard.born,
            }),
            infos: &heard.infos,
            past_intervals: &past,
        };
        peering::decide(&input, |o| self.map.is_up(placement::OsdId(o)))
    }

    /// Asks `osds` for their infos, all at once.
    async fn probe(&self, osds: &BTreeSet<u32>, heard: &mut Heard) -> Result<(), PeerError> {
        let queries = osds.iter().map(|&osd| async move {
            let (conns, map) = (&self.conns, &self.map);
            let (pg, epoch, interval) = (self.pg, self.epoch, self.interval);
            let request = PeerRequest::Query;
            (osd, call_peer(conns, map, osd, pg, epoch, interval, request, Bytes::new()).await)
        });
        for (osd, answer) in futures::future::join_all(queries).await {
            match answer? {
                (PeerResponse::Info { info, shard, kept, born }, _) => {
                    heard.born.insert(osd, born);
                    if shard != objectstore::NO_SHARD {
                        heard.held.insert(osd, usize::from(shard));
                    }
                    if kept {
                        heard.kept.insert(osd);
                    }
                    heard.infos.insert(osd, info.map(|i| *i));
                }
                (other, _) => return Err(PeerError::unexpected(osd, "query", &other)),
            }
        }
        Ok(())
    }

    /// The authority's whole log (its tail and entries), a page of `LOG_PAGE_MAX` entries
    /// at a time. Each page must begin after the last: an authority takes no writes while
    /// its PG peers, so the pages end.
    async fn fetch_log(&self, auth: u32) -> Result<(Version, Vec<LogEntry>), PeerError> {
        let (mut tail, mut entries) = (None, Vec::new());
        loop {
            let after = entries.last().map_or(Version::ZERO, |e: &LogEntry| e.version);
            let request = PeerRequest::GetLog { after };
            let (conns, map) = (&self.conns, &self.map);
            let (pg, epoch, interval) = (self.pg, self.epoch, self.interval);
            match call_peer(conns, map, auth, pg, epoch, interval, request, Bytes::new()).await? {
                (PeerResponse::Log { entries: page, tail: page_tail, more }, _) => {
                    if page.first().is_some_and(|e| e.version <= after) || (more && page.is_empty())
                    {
                        return Err(PeerError::OutOfOrder { osd: auth });
                    }
                    // The first page's tail: a trim between pages leaves entries older
                    // than a later tail in hand, which the merge accepts.
                    tail.get_or_insert(page_tail);
                    entries.extend(page);
                    if !more {
                        return Ok((tail.unwrap_or_default(), entries));
                    }
                }
                (other, _) => return Err(PeerError::unexpected(auth, "get log", &other)),
            }
        }
    }
}

/// Removes an object's head and every clone its snap set names (a snap set that does not
/// decode is logged, and only the head goes).
fn remove_with_clones(store: &dyn ObjectStore, c: CollectionId, object: &ObjectName) -> Vec<TxOp> {
    let oid = object_id(object);
    let mut ops = Vec::new();
    if let Ok(Some(meta)) = store.stat(c, &oid) {
        match crate::pg::snaps::SnapSet::load(Some(&meta.xattrs), object) {
            Ok(set) => ops.extend(set.clones.iter().map(|clone| TxOp::Remove {
                c,
                oid: objectstore::ObjectId { snap: clone.id, ..oid.clone() },
            })),
            Err(e) => tracing::error!(%c, %object, error = %e.message, "its clones stay"),
        }
    }
    ops.push(TxOp::Remove { c, oid });
    ops
}
