//! One PG on one OSD: a task that owns the PG's state and handles its events in order —
//! new maps, client ops, requests from peers, and the results of work it started
//! (peering rounds, commits, recovery). Decisions come from the pure modules (`peering`,
//! `log`, `ops`); this task moves the bytes and keeps the state.
//!
//! Interval discipline: anything started in one interval (a peering round, a replicated
//! write, a recovery push) carries the interval's first epoch, and its result is dropped
//! if the PG has since moved on. Peers refuse requests from another interval.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use client::osd_conn::OsdConnections;
use objectstore::{CollectionId, ObjectStore, Transaction, TxOp};
use placement::{Epoch, OsdMap, PgId, Version};
use proto::error::{ErrorCode, RemoteError};
use proto::message::{Request, Response};
use proto::osd::{
    CountsDelta, LogEntry, LogOp, ObjectBody, ObjectCounts, ObjectName, ObjectOp, ObjectState,
    PastInterval, PeerRequest, PeerResponse, PgInfo, PgStat, ReqId,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::log::{LOG_ENTRIES_KEPT, PgLog};
use super::ops::{self, object_id, store_error};
use super::peering::{self, Decision, Plan};
use super::persist;

/// How long one request to a peer may take.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Client ops a PG holds while it cannot serve them (peering, inactive).
pub const WAITING_OPS_MAX: usize = 1024;
/// Replicated writes a replica holds that arrived before their predecessor.
pub const PENDING_REPLICATIONS_MAX: usize = 1024;
/// How long after a failed peering round the PG tries again.
pub const PEERING_RETRY: Duration = Duration::from_millis(500);

pub type Reply = oneshot::Sender<Result<(Response, Bytes), RemoteError>>;

/// What every PG of an OSD shares.
pub struct Shared {
    pub me: u32,
    pub store: Arc<dyn ObjectStore>,
    pub conns: Arc<OsdConnections>,
    /// Recovery pushes and pulls in flight on this OSD (`osd.recovery_max_active`).
    pub recovery: Arc<Semaphore>,
    /// Objects and bytes this OSD recovered (pulled or pushed) since it started.
    pub recovered_objects: AtomicU64,
    pub recovered_bytes: AtomicU64,
}

pub struct ClientOp {
    pub client: String,
    pub reqid: u64,
    pub epoch: Epoch,
    pub object: ObjectName,
    pub ops: Vec<ObjectOp>,
    pub bulk: Bytes,
    pub reply: Reply,
}

pub enum Event {
    Map(Arc<OsdMap>),
    Client(ClientOp),
    List {
        after: Option<ObjectName>,
        max: u32,
        reply: Reply,
    },
    Peer {
        interval: Epoch,
        request: PeerRequest,
        bulk: Bytes,
        reply: Reply,
    },
    Peered {
        interval: Epoch,
        result: Result<Peered, String>,
    },
    Activated {
        interval: Epoch,
        result: Result<BTreeMap<u32, BTreeMap<ObjectName, Version>>, String>,
    },
    Committed {
        interval: Epoch,
        object: ObjectName,
        version: Version,
        result: Result<(), RemoteError>,
        reply: Reply,
    },
    Recovered {
        interval: Epoch,
        object: ObjectName,
        result: Result<u64, RecoveryError>,
    },
    Retry {
        interval: Epoch,
    },
    /// The PG's state for the monitors; `None` unless this OSD is its primary.
    Stat(oneshot::Sender<Option<PgStat>>),
}

pub enum Peered {
    Blocked(&'static str, String),
    Plan { plan: Plan, auth_log: Option<(Version, Vec<LogEntry>)>, auth_stats: ObjectCounts },
}

/// Why an object was not recovered.
#[derive(Debug)]
pub enum RecoveryError {
    /// No OSD asked has the version the log calls for.
    Unfound(String),
    Failed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not primary: a replica (or a stray copy).
    Replica,
    Peering,
    /// Primary, but cannot serve: the reason is in `blocked`.
    Blocked,
    Active,
}

pub struct Pg {
    id: PgId,
    c: CollectionId,
    shared: Arc<Shared>,
    inbox: mpsc::Sender<Event>,
    map: Arc<OsdMap>,
    interval: Epoch,
    up: Vec<u32>,
    acting: Vec<u32>,
    primary: Option<u32>,
    min_size: usize,
    size: usize,
    /// Whether this OSD has a collection (info and log) for the PG.
    exists: bool,
    info: PgInfo,
    log: PgLog,
    state: State,
    blocked: (&'static str, String),
    /// The acting OSDs that hold complete copies (after log recovery) and take writes;
    /// the others wait for backfill and get no writes, which would land on objects they
    /// do not have.
    writers: Vec<u32>,
    /// The OSD whose history won the last peering (a recovery source of last resort).
    auth: Option<u32>,
    /// Objects each OSD of the acting set (this one too) must recover, with the version.
    missing: BTreeMap<u32, BTreeMap<ObjectName, Version>>,
    /// Objects being recovered now.
    recovering: HashSet<ObjectName>,
    /// Objects whose logged version no reachable copy has.
    unfound: BTreeSet<ObjectName>,
    /// Acting OSDs waiting for backfill (no writes reach them).
    backfill: Vec<u32>,
    /// Objects and bytes recovered since the PG last went active.
    recovered: ObjectCounts,
    waiting: VecDeque<ClientOp>,
    /// Ops held per object until its in-flight write commits or it is recovered.
    held: HashMap<ObjectName, VecDeque<ClientOp>>,
    /// Writes applied locally but not yet committed everywhere, per object.
    in_flight: HashMap<ObjectName, u32>,
    /// Replica: replicated writes waiting for their predecessor, by predecessor version.
    pending: BTreeMap<Version, (Epoch, PeerRequest, Bytes, Reply)>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> RemoteError {
    RemoteError::new(code, message)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Pg {
    /// Starts the PG's task; `map` is the map it is created under.
    pub fn spawn(id: PgId, shared: Arc<Shared>, map: Arc<OsdMap>) -> mpsc::Sender<Event> {
        let (tx, rx) = mpsc::channel(WAITING_OPS_MAX * 2);
        let c = CollectionId::replicated(id);
        let (exists, info, log) = match persist::load(shared.store.as_ref(), c) {
            Ok(Some((info, log))) => (true, info, log),
            Ok(None) => (false, PgInfo::default(), PgLog::default()),
            Err(e) => {
                tracing::error!(pg = %id, error = %e, "cannot load the PG's log; serving it empty");
                (false, PgInfo::default(), PgLog::default())
            }
        };
        let pg = Pg {
            id,
            c,
            shared,
            inbox: tx.clone(),
            map: map.clone(),
            interval: Epoch(0),
            up: Vec::new(),
            acting: Vec::new(),
            primary: None,
            min_size: 1,
            size: 1,
            exists,
            info,
            log,
            state: State::Replica,
            blocked: ("", String::new()),
            writers: Vec::new(),
            auth: None,
            missing: BTreeMap::new(),
            recovering: HashSet::new(),
            unfound: BTreeSet::new(),
            backfill: Vec::new(),
            recovered: ObjectCounts::default(),
            waiting: VecDeque::new(),
            held: HashMap::new(),
            in_flight: HashMap::new(),
            pending: BTreeMap::new(),
        };
        tokio::spawn(pg.run(rx, map));
        tx
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Event>, map: Arc<OsdMap>) {
        self.new_map(map);
        while let Some(event) = rx.recv().await {
            self.handle(event);
        }
    }

    fn me(&self) -> u32 {
        self.shared.me
    }

    fn is_primary(&self) -> bool {
        self.primary == Some(self.me())
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Map(map) => self.new_map(map),
            Event::Client(op) => self.client_op(op),
            Event::List { after, max, reply } => self.list(after, max, reply),
            Event::Peer { interval, request, bulk, reply } => {
                self.peer_request(interval, request, bulk, reply)
            }
            Event::Peered { interval, result } if interval == self.interval => self.peered(result),
            Event::Activated { interval, result } if interval == self.interval => {
                self.activated(result)
            }
            Event::Committed { interval, object, version, result, reply } => {
                self.committed(interval, object, version, result, reply)
            }
            Event::Recovered { interval, object, result } if interval == self.interval => {
                self.recovered(object, result)
            }
            Event::Retry { interval }
                if interval == self.interval && self.state == State::Peering =>
            {
                self.start_peering()
            }
            Event::Stat(reply) => {
                let _ = reply.send(self.is_primary().then(|| self.stat()));
            }
            // Results of an interval that has ended.
            Event::Peered { .. }
            | Event::Activated { .. }
            | Event::Recovered { .. }
            | Event::Retry { .. } => {}
        }
    }

    // ---- Maps and intervals ----

    fn new_map(&mut self, map: Arc<OsdMap>) {
        let Some(pool) = map.pool(self.id.pool) else {
            // The pool was deleted: the PG goes with it.
            self.remove_collection();
            self.map = map;
            return;
        };
        let (min_size, size) = (pool.min_size(), pool.size());
        let Ok(mapping) = map.pg_mapping(self.id) else {
            self.map = map;
            return;
        };
        let up: Vec<u32> = mapping.up.osds().map(|o| o.0).collect();
        let acting: Vec<u32> = mapping.acting.osds().map(|o| o.0).collect();
        let primary = mapping.acting_primary.map(|o| o.0);
        let changed = up != self.up
            || acting != self.acting
            || primary != self.primary
            || self.interval == Epoch(0);
        let previous = std::mem::replace(&mut self.map, map);
        (self.min_size, self.size) = (min_size, size);
        if !changed {
            return;
        }
        if self.interval != Epoch(0) && self.exists {
            // Close the interval that ended with the previous map.
            self.info.past_intervals.push(PastInterval {
                first: self.interval,
                last: previous.epoch(),
                acting: self.acting.clone(),
                primary: self.primary,
                maybe_went_rw: self.acting.len() >= self.min_size && !self.acting.is_empty(),
            });
            self.save_info();
        }
        self.interval = self.map.epoch();
        (self.up, self.acting, self.primary) = (up, acting, primary);
        self.missing.clear();
        self.writers.clear();
        self.auth = None;
        self.recovering.clear();
        self.unfound.clear();
        self.backfill.clear();
        self.recovered = ObjectCounts::default();
        self.pending.clear();
        // Ops of the old interval: their clients resend to the new primary.
        let stale = err(
            ErrorCode::StaleEpoch,
            format!("pg {} changed at epoch {}; resend", self.id, self.interval),
        );
        for op in self.waiting.drain(..).chain(self.held.drain().flat_map(|(_, q)| q)) {
            let _ = op.reply.send(Err(stale.clone()));
        }
        if self.is_primary() {
            self.state = State::Peering;
            self.start_peering();
        } else {
            self.state = State::Replica;
        }
    }

    fn remove_collection(&mut self) {
        if self.exists {
            let txn = Transaction { ops: vec![TxOp::RemoveCollection(self.c)] };
            if let Err(e) = self.shared.store.apply(&txn) {
                tracing::error!(pg = %self.id, error = %e, "cannot remove the PG's collection");
            }
            self.exists = false;
        }
    }

    fn save_info(&mut self) {
        self.ensure_collection_and(vec![persist::put_info(self.c, &self.info)]);
    }

    fn ensure_collection_and(&mut self, mut ops: Vec<TxOp>) {
        if !self.exists {
            ops.insert(0, TxOp::CreateCollection(self.c));
            self.exists = true;
        }
        if let Err(e) = self.shared.store.apply(&Transaction { ops }) {
            tracing::error!(pg = %self.id, error = %e, "cannot write the PG's info");
        }
    }

    // ---- Peering (primary) ----

    fn my_info(&self) -> Option<PgInfo> {
        self.exists.then(|| {
            let mut info = self.info.clone();
            info.last_update = self.log.head();
            info.log_tail = self.log.tail();
            info
        })
    }

    fn start_peering(&mut self) {
        let interval = self.interval;
        let inbox = self.inbox.clone();
        let task = PeeringTask {
            pg: self.id,
            me: self.me(),
            epoch: self.map.epoch(),
            interval,
            map: self.map.clone(),
            up: self.up.clone(),
            acting: self.acting.clone(),
            min_size: self.min_size,
            mine: self.my_info(),
            conns: self.shared.conns.clone(),
        };
        tokio::spawn(async move {
            let result = task.run().await;
            let _ = inbox.send(Event::Peered { interval, result }).await;
        });
    }

    fn retry_later(&self) {
        let (inbox, interval) = (self.inbox.clone(), self.interval);
        tokio::spawn(async move {
            tokio::time::sleep(PEERING_RETRY).await;
            let _ = inbox.send(Event::Retry { interval }).await;
        });
    }

    fn peered(&mut self, result: Result<Peered, String>) {
        let (plan, auth_log, auth_stats) = match result {
            Err(e) => {
                tracing::info!(pg = %self.id, error = %e, "peering round failed; retrying");
                return self.retry_later();
            }
            Ok(Peered::Blocked(state, why)) => {
                self.state = State::Blocked;
                self.blocked = (state, why);
                return;
            }
            Ok(Peered::Plan { plan, auth_log, auth_stats }) => (plan, auth_log, auth_stats),
        };
        if !plan.active {
            self.state = State::Blocked;
            let why = format!(
                "{} complete copies of min_size {} (acting {:?}, backfill needed on {:?})",
                plan.complete, self.min_size, self.acting, plan.backfill
            );
            self.blocked =
                (if plan.complete == 0 { "incomplete" } else { "undersized+peered" }, why);
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
        let mut info = self.my_info().unwrap_or_default();
        info.last_epoch_started = self.interval;
        info.past_intervals.clear();
        info.backfill_incomplete = None;
        self.info = info.clone();
        self.save_info();
        let entries: Vec<LogEntry> = self.log.entries().cloned().collect();
        let peers: Vec<u32> =
            plan.log_recovery.iter().copied().filter(|&o| o != self.me()).collect();
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
            for osd in peers {
                let request = PeerRequest::Activate {
                    info: info.clone(),
                    entries: entries.clone(),
                    backfill: false,
                };
                match call_peer(&conns, &map, osd, pg, epoch, interval, request, Bytes::new()).await
                {
                    Ok((PeerResponse::Activated { missing: m }, _)) => {
                        missing.insert(osd, m.into_iter().collect());
                    }
                    Ok((other, _)) => {
                        failure = Some(format!("osd.{osd} answered activate with {other:?}"))
                    }
                    Err(e) => failure = Some(format!("osd.{osd}: {e}")),
                }
            }
            let result = match failure {
                Some(e) => Err(e),
                None => Ok(missing),
            };
            let _ = inbox.send(Event::Activated { interval, result }).await;
        });
    }

    /// Merges an authoritative log into ours: rewinds divergent changes, removes what the
    /// authority deleted, persists the result. Returns what we must recover.
    fn merge_log(
        &mut self,
        tail: Version,
        entries: &[LogEntry],
    ) -> Result<BTreeMap<ObjectName, Version>, String> {
        let before: Vec<Version> = self.log.entries().map(|e| e.version).collect();
        let merge = self.log.merge_authoritative(tail, entries);
        let mut ops = Vec::new();
        for entry in &merge.divergent {
            ops.push(persist::delete_entry(self.c, entry.version));
        }
        for entry in self.log.entries().filter(|e| !before.contains(&e.version)) {
            ops.push(persist::put_entry(self.c, entry));
        }
        for object in &merge.remove {
            ops.push(TxOp::Remove { c: self.c, oid: object_id(object) });
        }
        self.info.last_update = self.log.head();
        self.info.log_tail = self.log.tail();
        ops.push(persist::put_info(self.c, &self.info));
        if !self.exists {
            ops.insert(0, TxOp::CreateCollection(self.c));
            self.exists = true;
        }
        self.shared.store.apply(&Transaction { ops }).map_err(|e| e.to_string())?;
        Ok(merge.missing)
    }

    fn activated(&mut self, result: Result<BTreeMap<u32, BTreeMap<ObjectName, Version>>, String>) {
        match result {
            Err(e) => {
                tracing::info!(pg = %self.id, error = %e, "activation failed; peering again");
                self.retry_later();
            }
            Ok(missing) => {
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

    // ---- Recovery ----

    fn degraded_objects(&self) -> u64 {
        self.missing.values().map(|m| m.len() as u64).sum()
    }

    fn is_missing_anywhere(&self, object: &ObjectName) -> bool {
        self.missing.values().any(|m| m.contains_key(object))
    }

    /// Starts recovering objects missing somewhere, a few at a time.
    fn kick_recovery(&mut self) {
        let objects: Vec<ObjectName> = {
            let mut all: Vec<&ObjectName> = self.missing.values().flat_map(|m| m.keys()).collect();
            all.sort();
            all.dedup();
            all.into_iter().filter(|o| !self.recovering.contains(*o)).take(8).cloned().collect()
        };
        for object in objects {
            self.recover(object);
        }
        if self.state == State::Active
            && self.degraded_objects() == 0
            && self.writers.len() >= self.size
        {
            self.clean();
        }
    }

    fn recover(&mut self, object: ObjectName) {
        self.recovering.insert(object.clone());
        let me = self.me();
        let i_lack = self.missing.get(&me).is_some_and(|m| m.contains_key(&object));
        let targets: Vec<u32> = self
            .missing
            .iter()
            .filter(|(osd, m)| **osd != me && m.contains_key(&object))
            .map(|(osd, _)| *osd)
            .collect();
        // A source that has it: a complete acting copy not missing it, else the authority.
        let source = self
            .writers
            .iter()
            .copied()
            .find(|o| !self.missing.get(o).is_some_and(|m| m.contains_key(&object)))
            .or(self.auth);
        let (interval, inbox, shared, map, pg, c) = (
            self.interval,
            self.inbox.clone(),
            self.shared.clone(),
            self.map.clone(),
            self.id,
            self.c,
        );
        let want = self.missing.get(&me).and_then(|m| m.get(&object)).copied().unwrap_or_default();
        tokio::spawn(async move {
            use RecoveryError::Failed;
            let _permit = shared.recovery.acquire().await;
            let result = async {
                let epoch = map.epoch();
                let mut moved = 0u64;
                if i_lack {
                    let source = source.filter(|&s| s != me).ok_or_else(|| {
                        RecoveryError::Unfound(format!("no other copy of {object} is reachable"))
                    })?;
                    let request = PeerRequest::Pull { object: object.clone() };
                    let (response, bulk) = call_peer(
                        &shared.conns,
                        &map,
                        source,
                        pg,
                        epoch,
                        interval,
                        request,
                        Bytes::new(),
                    )
                    .await
                    .map_err(Failed)?;
                    let PeerResponse::Object(state) = response else {
                        return Err(Failed(format!(
                            "osd.{source} answered a pull with {response:?}"
                        )));
                    };
                    if state.version < want {
                        return Err(RecoveryError::Unfound(format!(
                            "osd.{source} has version {} of {object}, not {want}",
                            state.version
                        )));
                    }
                    apply_state(shared.store.as_ref(), c, &state, &bulk)
                        .map_err(|e| Failed(e.message))?;
                    shared.store.sync().map_err(|e| Failed(e.to_string()))?;
                    moved += bulk.len() as u64;
                }
                if !targets.is_empty() {
                    let (state, bulk) = read_state(shared.store.as_ref(), c, &object)
                        .map_err(|e| Failed(e.message))?;
                    for osd in targets {
                        let request = PeerRequest::Push { state: state.clone() };
                        call_peer(
                            &shared.conns,
                            &map,
                            osd,
                            pg,
                            epoch,
                            interval,
                            request,
                            bulk.clone(),
                        )
                        .await
                        .map_err(Failed)?;
                        moved += bulk.len() as u64;
                    }
                }
                Ok(moved)
            }
            .await;
            if let Ok(bytes) = result {
                shared.recovered_objects.fetch_add(1, Ordering::Relaxed);
                shared.recovered_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            if result.is_err() {
                tokio::time::sleep(PEERING_RETRY).await;
            }
            let _ = inbox.send(Event::Recovered { interval, object, result }).await;
        });
    }

    fn recovered(&mut self, object: ObjectName, result: Result<u64, RecoveryError>) {
        self.recovering.remove(&object);
        match result {
            Ok(bytes) => {
                self.unfound.remove(&object);
                self.recovered.apply(CountsDelta { objects: 1, bytes: bytes as i64 });
                for missing in self.missing.values_mut() {
                    missing.remove(&object);
                }
                self.release(&object);
            }
            Err(RecoveryError::Unfound(e)) => {
                if self.unfound.insert(object.clone()) {
                    tracing::warn!(pg = %self.id, %object, error = %e, "object unfound; will retry");
                }
            }
            Err(RecoveryError::Failed(e)) => {
                tracing::warn!(pg = %self.id, %object, error = %e, "recovery failed; will retry");
            }
        }
        self.kick_recovery();
    }

    /// The PG as the monitors see it (primary only).
    fn stat(&self) -> PgStat {
        let words: Vec<&str> = match self.state {
            State::Replica => vec!["stray"],
            State::Peering => vec!["peering"],
            State::Blocked => self.blocked.0.split('+').collect(),
            State::Active => {
                let mut words = vec!["active"];
                let short = self.acting.len() < self.size;
                let missing = self.degraded_objects() > 0;
                if missing || short {
                    words.push("degraded");
                }
                if short {
                    words.push("undersized");
                }
                if missing {
                    words.push("recovering");
                }
                if !self.backfill.is_empty() {
                    words.push("backfill_wait");
                }
                if !missing && !short && self.backfill.is_empty() {
                    words.push("clean");
                }
                words
            }
        };
        let objects = self.info.stats.objects;
        let absent = self.size.saturating_sub(self.acting.len()) as u64;
        PgStat {
            pg: self.id,
            state: words.into_iter().map(String::from).collect(),
            up: self.up.clone(),
            acting: self.acting.clone(),
            epoch: self.map.epoch(),
            last_update: self.log.head(),
            objects,
            bytes: self.info.stats.bytes,
            degraded: self.degraded_objects() + absent * objects,
            misplaced: self.backfill.len() as u64 * objects,
            unfound: self.unfound.len() as u64,
            recovered_bytes: self.recovered.bytes,
            recovered_objects: self.recovered.objects,
        }
    }

    fn clean(&mut self) {
        if self.info.last_epoch_clean == self.interval {
            return;
        }
        self.info.last_epoch_clean = self.interval;
        // Keep the log short once every copy is complete.
        let tail = self.log.trim(LOG_ENTRIES_KEPT);
        self.info.log_tail = tail;
        self.info.last_update = self.log.head();
        self.info.last_complete = self.log.head();
        let ops = vec![persist::trim_to(self.c, tail), persist::put_info(self.c, &self.info)];
        self.ensure_collection_and(ops);
        let info = self.info.clone();
        let peers: Vec<u32> = self.acting.iter().copied().filter(|&o| o != self.me()).collect();
        let (interval, conns, map, pg) =
            (self.interval, self.shared.conns.clone(), self.map.clone(), self.id);
        tokio::spawn(async move {
            for osd in peers {
                let request = PeerRequest::Complete { info: info.clone() };
                if let Err(e) =
                    call_peer(&conns, &map, osd, pg, map.epoch(), interval, request, Bytes::new())
                        .await
                {
                    tracing::debug!(%pg, osd, error = %e, "could not tell a replica the PG is clean");
                }
            }
        });
    }

    // ---- Client ops (primary) ----

    fn client_op(&mut self, op: ClientOp) {
        if !self.is_primary() {
            let _ = op.reply.send(Err(err(
                ErrorCode::StaleEpoch,
                format!(
                    "osd.{} is not the primary of pg {} at epoch {}",
                    self.me(),
                    self.id,
                    self.map.epoch()
                ),
            )));
            return;
        }
        if self.state != State::Active {
            if self.waiting.len() >= WAITING_OPS_MAX {
                let _ = op.reply.send(Err(err(
                    ErrorCode::Busy,
                    format!("pg {} has too many waiting ops", self.id),
                )));
                return;
            }
            if self.state == State::Blocked {
                let (state, why) = &self.blocked;
                let _ = op.reply.send(Err(err(
                    ErrorCode::Unavailable,
                    format!("pg {} is {state}: {why}", self.id),
                )));
                return;
            }
            self.waiting.push_back(op);
            return;
        }
        // One change per object at a time, and nothing on an object being recovered.
        let busy = self.in_flight.contains_key(&op.object)
            || self.is_missing_anywhere(&op.object)
            || self.held.contains_key(&op.object);
        if busy {
            if self.is_missing_anywhere(&op.object) && !self.recovering.contains(&op.object) {
                self.recover(op.object.clone());
            }
            self.held.entry(op.object.clone()).or_default().push_back(op);
            return;
        }
        self.execute(op);
    }

    fn release(&mut self, object: &ObjectName) {
        if self.state != State::Active {
            // Peering again: held ops wait with the rest and are replayed on activation.
            if let Some(queue) = self.held.remove(object) {
                self.waiting.extend(queue);
            }
            return;
        }
        while !self.in_flight.contains_key(object) && !self.is_missing_anywhere(object) {
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

    fn execute(&mut self, op: ClientOp) {
        let reqid = ReqId { client: op.client.clone(), id: op.reqid };
        let is_write = op.ops.iter().any(ObjectOp::is_write);
        if is_write && let Some(version) = self.log.find_reqid(&reqid) {
            // A resend of a write that is in the log: every copy has it (peering made sure).
            let _ =
                op.reply.send(Ok((Response::ObjectOps { version, results: vec![] }, Bytes::new())));
            return;
        }
        let executed =
            match ops::execute(self.shared.store.as_ref(), self.c, &op.object, &op.ops, &op.bulk) {
                Ok(executed) => executed,
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
        let head = self.log.head();
        let version = Version::new(self.map.epoch().0, head.seq + 1);
        let entry = LogEntry {
            version,
            prior_version: executed.prior,
            object: op.object.clone(),
            op: if executed.exists_after { LogOp::Modify } else { LogOp::Delete },
            reqid: Some(reqid),
            delta: CountsDelta::of(executed.size_before, executed.size_after),
        };
        let mut rep_ops = executed.rep_ops;
        rep_ops.push(proto::osd::RepOp::SetVersion { mtime_ms: now_ms() });
        let data = Bytes::from(executed.rep_data);
        if let Err(e) = self.apply_entry(&entry, &rep_ops, &data) {
            let _ = op.reply.send(Err(e));
            return;
        }
        *self.in_flight.entry(op.object.clone()).or_default() += 1;
        let peers: Vec<u32> = self.writers.iter().copied().filter(|&o| o != self.me()).collect();
        let (interval, inbox, shared, map, pg) =
            (self.interval, self.inbox.clone(), self.shared.clone(), self.map.clone(), self.id);
        let results = executed.results;
        let reply = op.reply;
        tokio::spawn(async move {
            let epoch = map.epoch();
            let local = {
                let store = shared.store.clone();
                async move {
                    tokio::task::spawn_blocking(move || store.sync())
                        .await
                        .map_err(|e| err(ErrorCode::Internal, e.to_string()))?
                        .map_err(store_error)
                }
            };
            let remote = peers.iter().map(|&osd| {
                let request = PeerRequest::Replicate {
                    after: head,
                    entry: entry.clone(),
                    ops: rep_ops.clone(),
                    backfill_only: false,
                };
                let (shared, map, data) = (shared.clone(), map.clone(), data.clone());
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
                .chain(std::iter::once(local))
                .collect::<Result<Vec<()>, _>>()
                .map(|_| ());
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

    /// Applies a log entry and its changes to the local store (not yet durable).
    fn apply_entry(
        &mut self,
        entry: &LogEntry,
        rep_ops: &[proto::osd::RepOp],
        data: &Bytes,
    ) -> Result<(), RemoteError> {
        let mut txn = Transaction::new();
        if !self.exists {
            txn.push(TxOp::CreateCollection(self.c));
        }
        ops::transaction(
            self.c,
            &object_id(&entry.object),
            rep_ops,
            data,
            entry.version,
            &mut txn,
        )?;
        txn.push(persist::put_entry(self.c, entry));
        let mut info = self.info.clone();
        info.last_update = entry.version;
        info.stats.apply(entry.delta);
        txn.push(persist::put_info(self.c, &info));
        self.shared.store.apply(&txn).map_err(store_error)?;
        self.exists = true;
        self.info = info;
        self.log.append(entry.clone());
        Ok(())
    }

    fn committed(
        &mut self,
        interval: Epoch,
        object: ObjectName,
        version: Version,
        result: Result<(), RemoteError>,
        reply: Reply,
    ) {
        let _ = reply.send(Ok((Response::Ack, Bytes::new())));
        if interval != self.interval {
            return;
        }
        if let Some(n) = self.in_flight.get_mut(&object) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&object);
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

    fn list(&mut self, after: Option<ObjectName>, max: u32, reply: Reply) {
        if !self.is_primary() || self.state != State::Active {
            let _ = reply.send(Err(err(
                ErrorCode::StaleEpoch,
                format!("pg {} is not active on osd.{}", self.id, self.me()),
            )));
            return;
        }
        let max = max.clamp(1, proto::osd::LIST_PAGE_MAX) as usize;
        let after = after.as_ref().map(object_id);
        let answer =
            self.shared.store.list(self.c, after.as_ref(), max + 1).map_err(store_error).map(
                |mut page| {
                    let more = page.len() > max;
                    page.truncate(max);
                    let objects = page
                        .into_iter()
                        .map(|(oid, meta)| (ops::object_name(&oid), meta.size))
                        .collect();
                    (Response::Objects { objects, more }, Bytes::new())
                },
            );
        let _ = reply.send(answer);
    }

    // ---- Requests from peers ----

    fn peer_request(&mut self, interval: Epoch, request: PeerRequest, bulk: Bytes, reply: Reply) {
        let answer = |r: PeerResponse| Ok((Response::Peer(r), Bytes::new()));
        match request {
            // Queries are answered in any interval: they only read.
            PeerRequest::Query => {
                let _ = reply.send(answer(PeerResponse::Info(self.my_info())));
            }
            PeerRequest::GetLog { after } => {
                let entries = self.log.entries_after(after, usize::MAX);
                let _ = reply.send(answer(PeerResponse::Log {
                    entries,
                    tail: self.log.tail(),
                    more: false,
                }));
            }
            PeerRequest::Pull { object } => {
                let _ = reply.send(
                    read_state(self.shared.store.as_ref(), self.c, &object)
                        .map(|(s, b)| (Response::Peer(PeerResponse::Object(s)), b)),
                );
            }
            _ if interval != self.interval => {
                let _ = reply.send(Err(err(
                    ErrorCode::StaleEpoch,
                    format!(
                        "osd.{} is in interval {} of pg {}, not {interval}",
                        self.me(),
                        self.interval,
                        self.id
                    ),
                )));
            }
            PeerRequest::Activate { info, entries, .. } => {
                let result = if self.log.head() < info.log_tail {
                    Err(err(
                        ErrorCode::Invalid,
                        "this copy's log does not reach the authority's; backfill",
                    ))
                } else {
                    self.merge_log(info.log_tail, &entries)
                        .map_err(|e| err(ErrorCode::Internal, e))
                        .map(|missing| {
                            self.info.last_epoch_started = info.last_epoch_started;
                            self.info.stats = info.stats;
                            self.info.past_intervals.clear();
                            self.save_info();
                            PeerResponse::Activated { missing: missing.into_iter().collect() }
                        })
                };
                let _ = reply.send(result.map(|r| (Response::Peer(r), Bytes::new())));
            }
            PeerRequest::Replicate { after, entry, ops, backfill_only } => {
                if after > self.log.head() {
                    if self.pending.len() >= PENDING_REPLICATIONS_MAX {
                        let _ = reply.send(Err(err(
                            ErrorCode::Busy,
                            "too many replicated writes out of order",
                        )));
                        return;
                    }
                    self.pending.insert(
                        after,
                        (
                            interval,
                            PeerRequest::Replicate { after, entry, ops, backfill_only },
                            bulk,
                            reply,
                        ),
                    );
                    return;
                }
                self.replicate(entry, ops, bulk, reply);
                // Writes that were waiting for this one.
                while let Some(next) = self.pending.first_key_value().map(|(v, _)| *v) {
                    if next > self.log.head() {
                        break;
                    }
                    let (_, request, bulk, reply) = self.pending.remove(&next).expect("present");
                    if let PeerRequest::Replicate { entry, ops, .. } = request {
                        self.replicate(entry, ops, bulk, reply);
                    }
                }
            }
            PeerRequest::Push { state } => {
                let result = apply_state(self.shared.store.as_ref(), self.c, &state, &bulk);
                let result = result.and_then(|()| self.shared.store.sync().map_err(store_error));
                let _ =
                    reply.send(result.map(|()| (Response::Peer(PeerResponse::Done), Bytes::new())));
            }
            PeerRequest::Complete { info } => {
                self.info.last_epoch_clean = info.last_epoch_clean;
                self.info.last_complete = self.log.head();
                let tail = self.log.trim(LOG_ENTRIES_KEPT);
                self.info.log_tail = tail;
                self.ensure_collection_and(vec![
                    persist::trim_to(self.c, tail),
                    persist::put_info(self.c, &self.info),
                ]);
                let _ = reply.send(answer(PeerResponse::Done));
            }
            PeerRequest::Scan { .. } => {
                let _ = reply.send(Err(err(ErrorCode::Unsupported, "scan is not served yet")));
            }
        }
    }

    fn replicate(
        &mut self,
        entry: LogEntry,
        rep_ops: Vec<proto::osd::RepOp>,
        bulk: Bytes,
        reply: Reply,
    ) {
        if entry.version <= self.log.head() {
            // A resend of an entry we have.
            let _ = reply.send(Ok((Response::Peer(PeerResponse::Done), Bytes::new())));
            return;
        }
        if let Err(e) = self.apply_entry(&entry, &rep_ops, &bulk) {
            let _ = reply.send(Err(e));
            return;
        }
        let store = self.shared.store.clone();
        tokio::spawn(async move {
            let synced = tokio::task::spawn_blocking(move || store.sync()).await;
            let result = match synced {
                Ok(Ok(())) => Ok((Response::Peer(PeerResponse::Done), Bytes::new())),
                Ok(Err(e)) => Err(store_error(e)),
                Err(e) => Err(err(ErrorCode::Internal, e.to_string())),
            };
            let _ = reply.send(result);
        });
    }
}

/// An object's whole state for a push: metadata, omap, and its data as the bulk payload.
pub fn read_state(
    store: &dyn ObjectStore,
    c: CollectionId,
    object: &ObjectName,
) -> Result<(ObjectState, Bytes), RemoteError> {
    let oid = object_id(object);
    let Some(meta) = store.stat(c, &oid).map_err(store_error)? else {
        return Ok((
            ObjectState { object: object.clone(), version: Version::ZERO, body: None },
            Bytes::new(),
        ));
    };
    let data = store.read(c, &oid, 0, meta.size).map_err(store_error)?;
    let mut omap = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .omap_list(c, &oid, after.as_deref(), objectstore::store::SCAN_ENTRIES_MAX)
            .map_err(store_error)?;
        let done = page.len() < objectstore::store::SCAN_ENTRIES_MAX;
        after = page.last().map(|(k, _)| k.clone());
        omap.extend(page);
        if done {
            break;
        }
    }
    let body = ObjectBody { size: meta.size, mtime_ms: meta.mtime_ms, xattrs: meta.xattrs, omap };
    Ok((
        ObjectState { object: object.clone(), version: meta.version, body: Some(body) },
        Bytes::from(data),
    ))
}

/// Replaces an object with a pushed state.
pub fn apply_state(
    store: &dyn ObjectStore,
    c: CollectionId,
    state: &ObjectState,
    data: &Bytes,
) -> Result<(), RemoteError> {
    let oid = object_id(&state.object);
    let mut txn = Transaction::new();
    txn.push(TxOp::CreateCollection(c)).push(TxOp::Remove { c, oid: oid.clone() });
    if let Some(body) = &state.body {
        if data.len() as u64 != body.size {
            return Err(err(
                ErrorCode::Invalid,
                format!("pushed {} bytes for an object of {}", data.len(), body.size),
            ));
        }
        txn.push(TxOp::WriteFull { c, oid: oid.clone(), data: data.clone() });
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
        txn.push(TxOp::SetVersion { c, oid, version: state.version, mtime_ms: body.mtime_ms });
    }
    store.apply(&txn).map_err(store_error)
}

#[allow(clippy::too_many_arguments)]
async fn call_peer(
    conns: &OsdConnections,
    map: &OsdMap,
    osd: u32,
    pg: PgId,
    epoch: Epoch,
    interval: Epoch,
    request: PeerRequest,
    bulk: Bytes,
) -> Result<(PeerResponse, Bytes), String> {
    let addr = map
        .osd(placement::OsdId(osd))
        .and_then(|s| s.addr.clone())
        .ok_or_else(|| format!("osd.{osd} has no address in the map"))?;
    let request = Request::Peer { pg, epoch, interval, request };
    match conns.call(osd, &addr, &request, &bulk, PEER_TIMEOUT).await {
        Ok((Response::Peer(response), bulk)) => Ok((response, bulk)),
        Ok((other, _)) => Err(format!("osd.{osd} answered with {}", other.name())),
        Err(e) => Err(format!("osd.{osd}: {e}")),
    }
}

/// One peering round, off the PG's task: gather infos until the decision is made, then
/// fetch the authority's log if it is not ours.
struct PeeringTask {
    pg: PgId,
    me: u32,
    epoch: Epoch,
    interval: Epoch,
    map: Arc<OsdMap>,
    up: Vec<u32>,
    acting: Vec<u32>,
    min_size: usize,
    mine: Option<PgInfo>,
    conns: Arc<OsdConnections>,
}

impl PeeringTask {
    async fn run(self) -> Result<Peered, String> {
        let mut infos = BTreeMap::from([(self.me, self.mine.clone())]);
        let plan = loop {
            let past = peering::merge_intervals(
                infos.values().flatten().map(|i| i.past_intervals.as_slice()),
            );
            let input = peering::Peering {
                me: self.me,
                acting: &self.acting,
                up: &self.up,
                min_size: self.min_size,
                infos: &infos,
                past_intervals: &past,
            };
            match peering::decide(&input, |o| self.map.is_up(placement::OsdId(o))) {
                Decision::Probe(osds) => {
                    let this = &self;
                    let queries = osds.iter().map(|&osd| async move {
                        let answer = call_peer(
                            &this.conns,
                            &this.map,
                            osd,
                            this.pg,
                            this.epoch,
                            this.interval,
                            PeerRequest::Query,
                            Bytes::new(),
                        )
                        .await;
                        (osd, answer)
                    });
                    for (osd, answer) in futures::future::join_all(queries).await {
                        match answer {
                            Ok((PeerResponse::Info(info), _)) => {
                                infos.insert(osd, info);
                            }
                            Ok((other, _)) => {
                                return Err(format!("osd.{osd} answered a query with {other:?}"));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Decision::Down { interval } => {
                    return Ok(Peered::Blocked(
                        "down",
                        format!(
                            "interval {}-{} (acting {:?}) may have taken writes and none of its OSDs is up",
                            interval.first, interval.last, interval.acting
                        ),
                    ));
                }
                Decision::Incomplete => {
                    return Ok(Peered::Blocked("incomplete", "no complete copy answered".into()));
                }
                Decision::Plan(plan) => break plan,
            }
        };
        let auth_log = if plan.auth != self.me && plan.active {
            let request = PeerRequest::GetLog { after: Version::ZERO };
            match call_peer(
                &self.conns,
                &self.map,
                plan.auth,
                self.pg,
                self.epoch,
                self.interval,
                request,
                Bytes::new(),
            )
            .await?
            {
                (PeerResponse::Log { entries, tail, .. }, _) => Some((tail, entries)),
                (other, _) => {
                    return Err(format!("osd.{} answered get-log with {other:?}", plan.auth));
                }
            }
        } else {
            None
        };
        let auth_stats = infos.get(&plan.auth).cloned().flatten().unwrap_or_default().stats;
        Ok(Peered::Plan { plan, auth_log, auth_stats })
    }
}
