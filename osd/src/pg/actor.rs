//! One PG on one OSD: a task that owns the PG's state and handles its events in order —
//! new maps, client ops, requests from peers, and the results of work it started
//! (peering rounds, commits, recovery). Decisions come from the pure modules (`peering`,
//! `log`, `ops`); this task moves the bytes and keeps the state.
//!
//! Interval discipline: anything started in one interval (a peering round, a replicated
//! write, a recovery push) carries the interval's first epoch, and its result is dropped
//! if the PG has since moved on. Peers refuse requests from another interval.
//!
//! Backfill (a copy the log cannot bring up to date: new, or too far behind) walks the
//! primary's objects in store order: scan the targets' copies of a batch, then go through
//! it an object at a time, pushing the primary's copy where a target's version differs
//! (or removing the target's copy where the primary has none). `Backfill::last` divides
//! the key space: writes to objects up to it replicate to the targets in full, writes
//! beyond it only append to their logs (the walk will copy the object), and an object
//! being pushed takes no writes until it is there. The primary's version is read when
//! the walk reaches the object, so a write between the scan and the walk is not missed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::osd_conn::OsdConnections;
use objectstore::{CollectionId, ObjectStore, StoreError, Transaction, TxOp};
use placement::{Epoch, OsdMap, PgId, Version};
use proto::error::{ErrorCode, RemoteError};
use proto::message::{Request, Response};
use proto::osd::{
    CountsDelta, LogEntry, LogOp, ObjectBody, ObjectCounts, ObjectName, ObjectOp, ObjectState,
    OsdConfig, PastInterval, PeerRequest, PeerResponse, PgInfo, PgStat, ReqId,
};
use tokio::sync::{mpsc, oneshot};

use super::ec::{self as ecw, EC_SIZE_XATTR, Logical};
use super::log::{LOG_ENTRIES_KEPT, PgLog};
use super::ops::{self, object_id, object_name, store_error};
use super::peering::{self, Decision, Plan};
use super::persist;
use super::rollback::{self, Rollback};
use super::scrub;
use crate::space::Space;
use crate::syncer::Syncer;
use crate::throttle::Throttle;

/// How long one request to a peer may take.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Client ops a PG holds while it cannot serve them (peering, inactive).
pub const WAITING_OPS_MAX: usize = 1024;
/// Replicated writes a replica holds that arrived before their predecessor.
pub const PENDING_REPLICATIONS_MAX: usize = 1024;
/// How long after a failed peering round the PG tries again.
pub const PEERING_RETRY: Duration = Duration::from_millis(500);
/// How long a PG waits for the acting set it asked the monitors for before asking again.
pub const PG_TEMP_RETRY: Duration = Duration::from_secs(5);
/// Objects of the primary one backfill scan compares with the targets.
pub const BACKFILL_BATCH: usize = 256;
/// Times a clean PG asks a stray to delete its copy.
pub const STRAY_REMOVAL_ATTEMPTS: u32 = 10;
/// Backfill pushes one PG has in flight: client writes to those objects wait for them.
pub const BACKFILL_PUSHES_PER_PG: usize = 2;
/// Objects one scan answer carries.
pub const SCAN_MAX: u32 = 1024;
/// Objects of the primary one scrub chunk checks (writes to them wait meanwhile).
pub const SCRUB_CHUNK: usize = 64;
/// Bytes one deep-scrub chunk reads at most on each copy (at least one object): writes
/// to a chunk wait while every copy of it is read.
pub const SCRUB_CHUNK_BYTES: u64 = 8 << 20;
/// Copies one scrub map may list (a replica's extra objects in a chunk's range included).
pub const SCRUB_MAP_MAX: usize = 4096;
/// Bytes a deep scrub reads at a time.
const SCRUB_READ_BYTES: u64 = 4 << 20;
/// Inconsistent objects a PG's report names at most.
const INCONSISTENT_DETAIL_MAX: usize = 16;

pub type Reply = oneshot::Sender<Result<(Response, Bytes), RemoteError>>;

/// What every PG of an OSD shares.
pub struct Shared {
    pub me: u32,
    pub store: Arc<dyn ObjectStore>,
    /// Makes applied changes durable, many at once.
    pub syncer: Syncer,
    /// How full this OSD and its peers are.
    pub space: Space,
    pub conns: Arc<OsdConnections>,
    /// Log-recovery pushes and pulls in flight on this OSD (`osd.recovery_max_active`);
    /// recovery a client op waits on does not wait for these.
    pub recovery: Throttle,
    /// Backfill pushes in flight on this OSD, apart from recovery so that a long
    /// backfill does not starve it.
    pub backfill: Throttle,
    /// Objects and bytes this OSD recovered (pulled or pushed) since it started.
    pub recovered_objects: AtomicU64,
    pub recovered_bytes: AtomicU64,
    /// Acting sets for the monitors' `pg_temp` (the daemon batches them).
    pub pg_temp: mpsc::UnboundedSender<(PgId, Vec<Option<u32>>)>,
    /// Scrubs this OSD leads at once (Ceph's `osd_max_scrubs`, 1).
    pub scrubs: Arc<tokio::sync::Semaphore>,
    /// How often each PG is scrubbed and deep-scrubbed, in ms (from the monitors).
    pub scrub_interval_ms: AtomicU64,
    pub deep_scrub_interval_ms: AtomicU64,
    /// The pause between scrub chunks (`osd.scrub_sleep_ms`), which lets held ops through.
    pub scrub_sleep_ms: AtomicU64,
    /// Client ops this OSD has taken as a primary since it started: a scrub that sees
    /// them come in while it reads yields as long again (see `scrub_pause`).
    pub client_ops: AtomicU64,
    /// Scheduled scrubs wait while `load_per_cpu_percent` is above this (percent).
    pub scrub_load_threshold_percent: AtomicU64,
    /// The host's one-minute load average per CPU, in percent, measured every second.
    pub load_per_cpu_percent: AtomicU64,
    /// A client op in flight longer than this is slow (`osd.op_complaint_time`), in s.
    pub op_complaint_time_s: AtomicU64,
    /// When this OSD last recovered an object, finished a backfill as primary and finished
    /// a scrub (`now_ms`; 0: not since it started), for `cairn recon`.
    pub last_recovery_ms: AtomicI64,
    pub last_backfill_ms: AtomicI64,
    pub last_scrub_ms: AtomicI64,
    /// The map epoch this OSD's store first served at (`u64::MAX` until known): it has
    /// existed since then, so an answer that it holds nothing of a PG covers every
    /// interval after it (see `peering::Erasure::born`).
    pub born: AtomicU64,
    /// Copies found bad (a checksum failure on read, or by a scrub this OSD led) and set
    /// aside since it started.
    pub quarantined: AtomicU64,
}

impl Shared {
    /// Applies the settings the monitors sent.
    pub fn configure(&self, config: &OsdConfig) {
        self.space.configure(config);
        self.op_complaint_time_s.store(config.op_complaint_time_s, Ordering::Relaxed);
        self.scrub_load_threshold_percent
            .store(config.scrub_load_threshold_percent, Ordering::Relaxed);
        let scrub = (
            config.scrub_interval_s * 1000,
            config.deep_scrub_interval_s * 1000,
            config.scrub_sleep_ms,
        );
        let before = (
            self.scrub_interval_ms.swap(scrub.0, Ordering::Relaxed),
            self.deep_scrub_interval_ms.swap(scrub.1, Ordering::Relaxed),
            self.scrub_sleep_ms.swap(scrub.2, Ordering::Relaxed),
        );
        if before != scrub {
            tracing::info!(
                interval_s = config.scrub_interval_s,
                deep_interval_s = config.deep_scrub_interval_s,
                sleep_ms = config.scrub_sleep_ms,
                "scrub settings changed"
            );
        }
        let (recovery, backfill) = (self.recovery.limit(), self.backfill.limit());
        if (recovery, backfill) != (config.recovery_max_active, config.backfill_max_active) {
            self.recovery.set(config.recovery_max_active);
            self.backfill.set(config.backfill_max_active);
            tracing::info!(
                recovery_max_active = config.recovery_max_active,
                backfill_max_active = config.backfill_max_active,
                "recovery throttles changed"
            );
        }
    }
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
    /// The targets' objects in the backfill batch that ends at `until` (`None`: the end).
    Scanned {
        interval: Epoch,
        until: Option<ObjectName>,
        result: Result<BTreeMap<u32, Vec<(ObjectName, Version)>>, String>,
    },
    /// One object backfilled (pushed to, or removed from, its targets).
    Backfilled {
        interval: Epoch,
        object: ObjectName,
        /// Bytes pushed, or `None`: not pushed, a target was backfillfull.
        result: Result<Option<u64>, String>,
    },
    /// The targets have been told their backfill is done.
    BackfillFinished {
        interval: Epoch,
        result: Result<(), String>,
    },
    /// Try backfill (or ending the acting-set override) again after a failure.
    BackfillRetry {
        interval: Epoch,
    },
    /// Whether this OSD holds a copy, and the PG's state for the monitors (`None` unless
    /// this OSD is its primary).
    Stat(oneshot::Sender<(bool, Option<PgStat>)>),
    /// Scrub the PG (an operator's command answers `reply` once queued).
    Scrub {
        deep: bool,
        reply: Option<Reply>,
    },
    /// The OSD's scrub slot is this PG's: start.
    ScrubGo {
        interval: Epoch,
        deep: bool,
        permit: tokio::sync::OwnedSemaphorePermit,
    },
    /// The copies of one chunk compared.
    ScrubChunk {
        interval: Epoch,
        result: Result<Vec<scrub::Inconsistency>, String>,
    },
    /// Time for the next chunk.
    ScrubNext {
        interval: Epoch,
    },
    /// An erasure-coded op's bytes gathered from the shards.
    EcGathered {
        interval: Epoch,
        op: Box<EcOp>,
        /// The bytes, and the shards that failed their checksums.
        result: Result<(Vec<Vec<u8>>, Vec<usize>), RemoteError>,
    },
}

/// An erasure-coded op between its evaluation (on the logical object, with placeholder
/// bytes) and its completion once the bytes it reads are gathered from the shards.
pub struct EcOp {
    op: ClientOp,
    reqid: ReqId,
    executed: ops::Executed,
    before: Logical,
    /// Its changes (empty: a read), stamped with the version's mtime.
    rep_ops: Vec<proto::osd::RepOp>,
    /// The gathered ranges: the first `reads` are the op's reads, the rest the old bytes
    /// of the stripes its writes change in part.
    reads: usize,
}

/// Why a PG cannot go active: its state words, in a sentence, and the OSDs it waits for.
#[derive(Clone, Debug, Default)]
pub struct Blocked {
    pub state: &'static str,
    pub why: String,
    pub waiting_for: Vec<u32>,
}

impl Blocked {
    fn new(state: &'static str, why: String) -> Blocked {
        Blocked { state, why, waiting_for: Vec::new() }
    }
}

pub enum Peered {
    Blocked(Blocked),
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

/// An erasure-coded PG's coding, and which OSD holds each shard: shard i lives on the OSD
/// at position i of the acting set (holes are shards nobody holds now), in collection
/// `pg`s`i`. Every shard keeps the same log, so peering is as for copies; what differs is
/// how objects are read, written and rebuilt.
#[derive(Clone)]
struct Ec {
    layout: ec::Layout,
    acting: Vec<Option<u32>>,
    up: Vec<Option<u32>>,
}

impl Ec {
    /// The shard `osd` holds in this interval: its acting position, else its up position
    /// (a backfill target that is not acting).
    fn shard_of(&self, osd: u32) -> Option<usize> {
        let at = |set: &[Option<u32>]| set.iter().position(|&o| o == Some(osd));
        at(&self.acting).or_else(|| at(&self.up))
    }
}

/// The OSD at each position of a set, holes kept.
fn positions(set: &placement::OsdSet) -> Vec<Option<u32>> {
    set.iter().map(|o| o.map(|o| o.0)).collect()
}

pub struct Pg {
    id: PgId,
    c: CollectionId,
    /// Set for an erasure-coded pool.
    ec: Option<Ec>,
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
    blocked: Blocked,
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
    /// OSDs of the up or acting set being backfilled.
    backfill: Vec<u32>,
    /// Backfill progress (primary).
    bf: Backfill,
    /// OSDs outside the up and acting sets holding a copy, deleted once the PG is clean.
    strays: Vec<u32>,
    /// Objects and bytes recovered since the PG last went active.
    recovered: ObjectCounts,
    waiting: VecDeque<ClientOp>,
    /// Ops held per object until its in-flight write commits or it is recovered.
    held: HashMap<ObjectName, VecDeque<ClientOp>>,
    /// Writes applied locally but not yet committed everywhere, per object.
    in_flight: HashMap<ObjectName, u32>,
    /// Replica: replicated writes waiting for their predecessor, by predecessor version.
    pending: BTreeMap<Version, (Epoch, PeerRequest, Bytes, Reply)>,
    /// Erasure-coded shard: the log entries whose rollback stash it keeps (`rollback`).
    rollbacks: BTreeSet<Version>,
    /// Erasure-coded primary: entries sent to the shards and not yet committed by all,
    /// so the shards keep their stashes.
    uncommitted: BTreeSet<Version>,
    /// The scrub in progress (primary), and whether one waits for the OSD's slot.
    scrub: Option<ScrubRun>,
    scrub_queued: bool,
    /// Objects with a bad copy found by scrub and not yet repaired, with why.
    inconsistent: BTreeMap<ObjectName, String>,
    /// Bad copies the last scrub found.
    last_scrub_errors: u64,
}

/// A scrub going through the PG a chunk at a time, in store order.
struct ScrubRun {
    deep: bool,
    /// Objects up to this one are checked.
    after: Option<(Vec<u8>, ObjectName)>,
    /// The chunk being checked ends here (`None`: at the PG's end); writes to objects in
    /// `(after, until]` wait while `ranged`.
    until: Option<(Vec<u8>, ObjectName)>,
    ranged: bool,
    /// When the chunk began, and the OSD's client op count then (`Shared::client_ops`).
    chunk_began: (Instant, u64),
    /// The copies are being gathered and compared.
    gathering: bool,
    errors: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// How far the primary's backfill of `Pg::backfill` got.
#[derive(Default)]
struct Backfill {
    /// Objects up to this one (store order) are on every target, or being pushed there.
    last: Option<(Vec<u8>, ObjectName)>,
    /// Every object is covered.
    end: bool,
    /// A scan of the targets is in flight.
    scanning: bool,
    /// The scanned batch, where the walk has not reached yet: each object (by store
    /// order) with its version on the targets that have it.
    queue: BTreeMap<Vec<u8>, (ObjectName, BTreeMap<u32, Version>)>,
    /// Where the batch being walked ends (`None`: at the PG's end); `None` outside one.
    batch: Option<Option<(Vec<u8>, ObjectName)>>,
    /// Objects being pushed now, to these targets (writes to them wait).
    pushing: HashMap<ObjectName, Vec<u32>>,
    /// The targets are being told they are done.
    finishing: bool,
    /// Objects of the primary covered so far.
    covered: u64,
    /// A target at backfillfull or above holds backfill up: it, and whether a retry is
    /// already due.
    toofull: Option<(u32, bool)>,
    /// Objects the walk passed whose push waited for space, with their targets: writes
    /// to them reach the targets' logs only, as beyond `last`, until they are pushed.
    deferred: BTreeMap<Vec<u8>, (ObjectName, Vec<u32>)>,
}

impl Backfill {
    /// Whether writes to `object` replicate to the targets in full.
    fn covers(&self, object: &ObjectName) -> bool {
        let order = objectstore::keys::object_order(&object_id(object));
        (self.end || self.last.as_ref().is_some_and(|(last, _)| order <= *last))
            && !self.deferred.contains_key(&order)
    }
}

/// `osd.1, osd.4`, or `nobody`.
fn osd_list(osds: &[u32]) -> String {
    if osds.is_empty() {
        return "nobody".to_owned();
    }
    osds.iter().map(|o| format!("osd.{o}")).collect::<Vec<_>>().join(", ")
}

fn err(code: ErrorCode, message: impl Into<String>) -> RemoteError {
    RemoteError::new(code, message)
}

/// The pause after a scrub chunk that took `took`: `osd.scrub_sleep_ms`, and while client
/// ops came in during the chunk at least as long as the chunk took, so that a scrub under
/// client load keeps at most half of the OSD's time (its disk reads compete with the
/// clients' writes; Ceph's scrub yields to clients by queue priority).
fn scrub_pause(sleep: Duration, took: Duration, busy: bool) -> Duration {
    if busy { sleep.max(took) } else { sleep }
}

/// Whether a scheduled scrub last done at `last_ms` is due: once its interval has passed,
/// unless the host is busy; a busy host still scrubs once twice the interval has passed,
/// so that load alone never stops auditing (as Ceph's osd_scrub_max_interval).
fn scrub_due(now_ms: i64, last_ms: i64, interval_ms: i64, busy: bool) -> bool {
    let since = now_ms - last_ms;
    since >= interval_ms && (!busy || since >= interval_ms.saturating_mul(2))
}

/// The wall clock in ms since the Unix epoch, shifted by `CAIRN_CLOCK_OFFSET_MS` (a test
/// hook, as the monitors have, to exercise CLOCK_SKEW): for times that leave this process
/// (scrub stamps, mtimes, pongs).
pub(crate) fn now_ms() -> i64 {
    static OFFSET_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let offset = *OFFSET_MS.get_or_init(|| {
        std::env::var("CAIRN_CLOCK_OFFSET_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
    });
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    since_epoch + offset
}

impl Pg {
    /// Starts the PG's task; `map` is the map it is created under.
    /// Starts the PG's task; `map` is the map it is created under, `shard` the collection
    /// it starts from (`objectstore::NO_SHARD` for a replicated pool).
    pub fn spawn(
        id: PgId,
        shard: u8,
        shared: Arc<Shared>,
        map: Arc<OsdMap>,
    ) -> mpsc::Sender<Event> {
        let (tx, rx) = mpsc::channel(WAITING_OPS_MAX * 2);
        let c = CollectionId { pg: id, shard };
        let (exists, info, log, rollbacks) = load(shared.store.as_ref(), c);
        let pg = Pg {
            id,
            c,
            ec: None,
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
            blocked: Blocked::default(),
            writers: Vec::new(),
            auth: None,
            missing: BTreeMap::new(),
            recovering: HashSet::new(),
            unfound: BTreeSet::new(),
            backfill: Vec::new(),
            bf: Backfill::default(),
            scrub: None,
            scrub_queued: false,
            inconsistent: BTreeMap::new(),
            last_scrub_errors: 0,
            strays: Vec::new(),
            recovered: ObjectCounts::default(),
            waiting: VecDeque::new(),
            held: HashMap::new(),
            in_flight: HashMap::new(),
            pending: BTreeMap::new(),
            rollbacks,
            uncommitted: BTreeSet::new(),
        };
        tokio::spawn(pg.run(rx, map));
        tx
    }

    /// Moves to another shard's collection: this OSD's position in an erasure-coded PG
    /// changed, so the shard it held is not the one it serves now. The new position's
    /// collection is used as it is (empty, or what this OSD kept from an earlier time at
    /// that position) and recovered or backfilled. The old shard is kept until the PG is
    /// clean (`remove_other_shards`): until every position is complete again, it may be
    /// the only copy of that shard left, and a move back finds it.
    fn switch_shard(&mut self, shard: u8) {
        if self.exists {
            tracing::warn!(pg = %self.id, from = self.c.shard, to = shard, "shard position changed; the old shard is kept until the PG is clean");
        }
        self.c = CollectionId { pg: self.id, shard };
        (self.exists, self.info, self.log, self.rollbacks) =
            load(self.shared.store.as_ref(), self.c);
    }

    /// This PG's collections other than the current one: shards this OSD held at another
    /// position. A replicated PG has only its one collection, so the store is not listed.
    fn other_shards(&self) -> Result<Vec<CollectionId>, StoreError> {
        if self.c.shard == objectstore::NO_SHARD {
            return Ok(Vec::new());
        }
        let all = self.shared.store.collections()?;
        Ok(all.into_iter().filter(|c| c.pg == self.id && *c != self.c).collect())
    }

    /// Removes this PG's collections other than the current one (`other_shards`), once the
    /// PG no longer needs them (clean, or a stray).
    fn remove_other_shards(&self) {
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

    /// Whether the acting set is not the up set (an override is in place): by position
    /// for an erasure-coded PG, where the same OSDs in other places differ.
    fn remapped(&self) -> bool {
        match &self.ec {
            Some(ec) => ec.acting != ec.up,
            None => self.acting != self.up,
        }
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
            Event::Scanned { interval, until, result } if interval == self.interval => {
                self.scanned(until, result)
            }
            Event::Backfilled { interval, object, result } if interval == self.interval => {
                self.backfilled(object, result)
            }
            Event::BackfillFinished { interval, result } if interval == self.interval => {
                self.backfill_finished(result)
            }
            Event::BackfillRetry { interval } if interval == self.interval => {
                if let Some((osd, _)) = self.bf.toofull {
                    self.bf.toofull = Some((osd, false));
                }
                if !self.backfill.is_empty() {
                    self.kick_backfill();
                } else if self.bf.end && self.remapped() && self.state == State::Active {
                    self.end_override();
                }
            }
            Event::Stat(reply) => {
                self.schedule_scrub();
                let _ = reply.send((self.exists, self.is_primary().then(|| self.stat())));
            }
            Event::Scrub { deep, reply } => self.request_scrub(deep, reply),
            Event::ScrubGo { interval, deep, permit } if interval == self.interval => {
                self.scrub_go(deep, permit)
            }
            Event::ScrubChunk { interval, result } if interval == self.interval => {
                self.scrubbed(result)
            }
            Event::ScrubNext { interval } if interval == self.interval => self.scrub_chunk(),
            Event::EcGathered { interval, op, result } => self.ec_gathered(interval, *op, result),
            Event::ScrubGo { .. } => self.scrub_queued = false,
            // Results of an interval that has ended.
            Event::ScrubChunk { .. }
            | Event::ScrubNext { .. }
            | Event::Peered { .. }
            | Event::Activated { .. }
            | Event::Recovered { .. }
            | Event::Retry { .. }
            | Event::Scanned { .. }
            | Event::Backfilled { .. }
            | Event::BackfillFinished { .. }
            | Event::BackfillRetry { .. } => {}
        }
    }

    // ---- Maps and intervals ----

    fn new_map(&mut self, map: Arc<OsdMap>) {
        let Some(pool) = map.pool(self.id.pool) else {
            // The pool was deleted: the PG goes with it.
            self.remove_collection();
            self.remove_other_shards();
            self.map = map;
            return;
        };
        let (min_size, size) = (pool.min_size(), pool.size());
        let Ok(mapping) = map.pg_mapping(self.id) else {
            self.map = map;
            return;
        };
        let ec = match &pool.kind {
            placement::PoolKind::Erasure { profile, k, m, .. } => {
                let chunk = map
                    .contents()
                    .erasure_profiles
                    .get(profile)
                    .map_or(ec::stripe::DEFAULT_CHUNK, |p| u64::from(p.stripe_unit_bytes));
                match ec::Layout::new(usize::from(*k), usize::from(*m), chunk) {
                    Ok(layout) => Some(Ec {
                        layout,
                        acting: positions(&mapping.acting),
                        up: positions(&mapping.up),
                    }),
                    Err(e) => {
                        tracing::error!(pg = %self.id, error = %e, "unusable erasure-code profile");
                        self.map = map;
                        return;
                    }
                }
            }
            placement::PoolKind::Replicated { .. } => None,
        };
        let up: Vec<u32> = mapping.up.osds().map(|o| o.0).collect();
        let acting: Vec<u32> = mapping.acting.osds().map(|o| o.0).collect();
        let primary = mapping.acting_primary.map(|o| o.0);
        let moved = |a: &Option<Ec>, b: &Option<Ec>| match (a, b) {
            (Some(a), Some(b)) => a.acting != b.acting || a.up != b.up,
            (None, None) => false,
            _ => true,
        };
        let changed = up != self.up
            || acting != self.acting
            || primary != self.primary
            || moved(&ec, &self.ec)
            || self.interval == Epoch(0);
        let previous = std::mem::replace(&mut self.map, map);
        (self.min_size, self.size) = (min_size, size);
        if !changed {
            self.ec = ec;
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
        self.ec = ec;
        if let Some(shard) = self.ec.as_ref().and_then(|e| e.shard_of(self.me()))
            && shard as u8 != self.c.shard
        {
            self.switch_shard(shard as u8);
        }
        self.missing.clear();
        self.writers.clear();
        self.auth = None;
        self.recovering.clear();
        self.unfound.clear();
        self.backfill.clear();
        self.bf = Backfill::default();
        // A scrub in progress ends (its slot is freed); the next one starts over.
        self.scrub = None;
        self.strays.clear();
        self.recovered = ObjectCounts::default();
        self.pending.clear();
        // Writes of the old interval: their results are dropped (`committed`), so they
        // must not keep their objects busy in this one.
        self.in_flight.clear();
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
            self.rollbacks.clear();
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
        // Peering rolls every entry forward or back: none is waiting to commit.
        self.uncommitted.clear();
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
            size: self.size,
            erasure: self.ec.clone(),
            mine: self.my_info(),
            conns: self.shared.conns.clone(),
        };
        tokio::spawn(async move {
            let result = task.run().await;
            let _ = inbox.send(Event::Peered { interval, result }).await;
        });
    }

    fn retry_later(&self) {
        self.peer_again_after(PEERING_RETRY);
    }

    fn peer_again_after(&self, delay: Duration) {
        let (inbox, interval) = (self.inbox.clone(), self.interval);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = inbox.send(Event::Retry { interval }).await;
        });
    }

    fn peered(&mut self, result: Result<Peered, String>) {
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
            let _ = self.shared.pg_temp.send((self.id, want));
            return self.peer_again_after(PG_TEMP_RETRY);
        }
        if !plan.active {
            self.state = State::Blocked;
            let why = format!(
                "{} complete copies of min_size {} (acting {:?}, backfill needed on {:?})",
                plan.complete, self.min_size, self.acting, plan.backfill
            );
            tracing::info!(pg = %self.id, %why, "cannot go active");
            let k = self.ec.as_ref().map(|e| e.layout.k());
            self.blocked = if plan.complete == 0 {
                Blocked::new("incomplete", why)
            } else if let Some(k) = k.filter(|&k| plan.complete < k) {
                let why = format!("{} complete shards, fewer than k={k}: {why}", plan.complete);
                Blocked::new("down", why)
            } else if plan.backfill.contains(&self.me()) {
                let why = format!("the primary's own copy must be rebuilt first: {why}");
                Blocked::new("peered", why)
            } else {
                Blocked::new("undersized+peered", why)
            };
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

    /// Merges an authoritative log into ours: rewinds divergent changes (an
    /// erasure-coded shard puts back what it stashed, where it can), removes what the
    /// authority deleted, persists the result in one transaction. Returns what we must
    /// recover. The merged history is every copy's from now on: no stash is needed after.
    fn merge_log(
        &mut self,
        tail: Version,
        entries: &[LogEntry],
    ) -> Result<BTreeMap<ObjectName, Version>, String> {
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
        self.rollbacks.clear();
        Ok(merge.missing)
    }

    /// The ops that undo this shard's divergent writes from their stashes, for each
    /// object whose every divergent entry has one and which is at the newest of them (a
    /// copy not at that version was not written by them alone). An object put back at the
    /// version the merge wants is no longer missing; any other is recovered as before. An
    /// object the divergent entries created is removed by the merge, and needs none.
    fn roll_back(&self, merge: &mut super::log::Merge) -> Vec<TxOp> {
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

    fn activated(&mut self, result: Result<BTreeMap<u32, BTreeMap<ObjectName, Version>>, String>) {
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
            self.recover(object, false);
        }
        self.kick_backfill();
        if self.state == State::Active
            && self.degraded_objects() == 0
            && self.writers.len() >= self.size
            && self.backfill.is_empty()
            && !self.remapped()
        {
            self.clean();
        }
    }

    /// Recovers `object` where it is missing. `urgent`: a client op waits for it, so it
    /// does not queue behind the background recovery.
    fn recover(&mut self, object: ObjectName, urgent: bool) {
        self.recovering.insert(object.clone());
        if self.ec.is_some() {
            return self.ec_recover(object, urgent);
        }
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
            let _permit = if urgent { None } else { shared.recovery.acquire().await.ok() };
            let result = async {
                let epoch = map.epoch();
                let mut moved = 0u64;
                if i_lack {
                    let source = source.filter(|&s| s != me).ok_or_else(|| {
                        RecoveryError::Unfound(format!("no other copy of {object} is reachable"))
                    })?;
                    let request =
                        PeerRequest::Pull { object: object.clone(), shard: objectstore::NO_SHARD };
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
                    shared.space.wrote(bulk.len() as u64);
                    apply_state(shared.store.as_ref(), c, &state, &bulk)
                        .map_err(|e| Failed(e.message))?;
                    shared.syncer.sync().await.map_err(|e| Failed(e.message))?;
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
                shared.last_recovery_ms.store(now_ms(), Ordering::Relaxed);
                shared.recovered_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            if result.is_err() {
                tokio::time::sleep(PEERING_RETRY).await;
            }
            let _ = inbox.send(Event::Recovered { interval, object, result }).await;
        });
    }

    /// Rebuilds the shards of `object` the OSDs missing it should hold, from k others.
    fn ec_recover(&mut self, object: ObjectName, urgent: bool) {
        let Some(source) = self.shard_source() else { return };
        let want = self.missing.values().find_map(|m| m.get(&object)).copied();
        let targets: Vec<(u32, usize)> = self
            .missing
            .iter()
            .filter(|(_, m)| m.contains_key(&object))
            .filter_map(|(&osd, _)| Some((osd, self.ec.as_ref()?.shard_of(osd)?)))
            .collect();
        let sources = self.readable_sources(&object);
        let (interval, inbox, shared) = (self.interval, self.inbox.clone(), self.shared.clone());
        tokio::spawn(async move {
            let _permit = if urgent { None } else { shared.recovery.acquire().await.ok() };
            let result =
                source.rebuild(&object, want, &sources, &targets).await.map(|(bytes, _)| bytes);
            if let Ok(bytes) = result {
                shared.recovered_objects.fetch_add(1, Ordering::Relaxed);
                shared.last_recovery_ms.store(now_ms(), Ordering::Relaxed);
                shared.recovered_bytes.fetch_add(bytes, Ordering::Relaxed);
            } else {
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
                if self.inconsistent.remove(&object).is_some() {
                    tracing::info!(pg = %self.id, %object, "repaired");
                }
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

    // ---- Backfill (primary) ----

    /// Whether backfill waits for the primary's own recovery: it copies the primary's
    /// objects, which must be current first.
    fn backfill_waits(&self) -> bool {
        self.missing.get(&self.me()).is_some_and(|m| !m.is_empty())
    }

    /// Starts the next step of backfill, if one is due: more of the batch, a scan of the
    /// next one, or telling the targets they are done.
    fn kick_backfill(&mut self) {
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
                                return Err(format!("osd.{osd} answered a scan with {other:?}"));
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

    fn backfill_again_later(&self) {
        let (inbox, interval) = (self.inbox.clone(), self.interval);
        tokio::spawn(async move {
            tokio::time::sleep(PEERING_RETRY).await;
            let _ = inbox.send(Event::BackfillRetry { interval }).await;
        });
    }

    /// Starts walking the batch up to `until`, with what the targets have of it.
    fn scanned(
        &mut self,
        until: Option<ObjectName>,
        result: Result<BTreeMap<u32, Vec<(ObjectName, Version)>>, String>,
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
    fn walk(&mut self) {
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
    fn backfill_push(&mut self, object: ObjectName, targets: Vec<u32>) {
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
                let meta = shared.store.stat(c, &oid).map_err(|e| e.to_string())?;
                if let (Some((source, sources, shard_targets)), Some(meta)) = (erasure, meta) {
                    let (bytes, full) = source
                        .rebuild(&object, Some(meta.version), &sources, &shard_targets)
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    for osd in full {
                        shared.space.learned_backfillfull(osd);
                    }
                    return Ok(Some(bytes));
                }
                let (state, bulk) =
                    read_state(shared.store.as_ref(), c, &object).map_err(|e| e.message)?;
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

    fn backfilled(&mut self, object: ObjectName, result: Result<Option<u64>, String>) {
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

    fn finish_backfill(&mut self) {
        self.bf.finishing = true;
        let targets = self.backfill.clone();
        let peers = self.peers();
        tokio::spawn(async move {
            let mut result = Ok(());
            for osd in targets {
                if let Err(e) = peers.call(osd, PeerRequest::BackfillDone, Bytes::new()).await {
                    result = Err(e);
                    break;
                }
            }
            peers.report(Event::BackfillFinished { interval: peers.interval, result }).await;
        });
    }

    fn peers(&self) -> Peers {
        Peers {
            pg: self.id,
            interval: self.interval,
            inbox: self.inbox.clone(),
            conns: self.shared.conns.clone(),
            map: self.map.clone(),
        }
    }

    /// The targets hold complete copies: acting ones take writes as any other, and an
    /// acting-set override ends (the up set peers anew, now complete).
    fn backfill_finished(&mut self, result: Result<(), String>) {
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
    fn end_override(&self) {
        let up = match &self.ec {
            Some(ec) => ec.up.clone(),
            None => self.up.iter().copied().map(Some).collect(),
        };
        let _ = self.shared.pg_temp.send((self.id, up));
        let (inbox, interval) = (self.inbox.clone(), self.interval);
        tokio::spawn(async move {
            tokio::time::sleep(PG_TEMP_RETRY).await;
            let _ = inbox.send(Event::BackfillRetry { interval }).await;
        });
    }

    /// The PG as the monitors see it (primary only).
    fn stat(&self) -> PgStat {
        let words: Vec<&str> = match self.state {
            State::Replica => vec!["stray"],
            State::Peering => vec!["peering"],
            State::Blocked => self.blocked.state.split('+').collect(),
            State::Active => {
                // An erasure-coded PG with k shards or more but fewer than min_size
                // taking writes serves reads only: peered, as Ceph says, not active.
                let writable = self.ec.is_none() || self.writers.len() >= self.min_size;
                let mut words = vec![if writable { "active" } else { "peered" }];
                let remapped = self.remapped();
                let short = self.acting.len() < self.size;
                let missing = self.degraded_objects() > 0;
                let filling = self.backfill.iter().any(|o| self.acting.contains(o));
                if remapped {
                    words.push("remapped");
                }
                if missing || short || filling {
                    words.push("degraded");
                }
                if short {
                    words.push("undersized");
                }
                if missing {
                    words.push("recovering");
                }
                if !self.backfill.is_empty() {
                    words.push(if self.bf.toofull.is_some() {
                        "backfill_toofull"
                    } else if self.backfill_waits() {
                        "backfill_wait"
                    } else {
                        "backfilling"
                    });
                }
                if !missing && !short && !remapped && self.backfill.is_empty() {
                    words.push("clean");
                }
                if let Some(run) = &self.scrub {
                    words.push("scrubbing");
                    if run.deep {
                        words.push("deep");
                    }
                }
                if !self.inconsistent.is_empty() {
                    words.push("inconsistent");
                }
                words
            }
        };
        let objects = self.info.stats.objects;
        let absent = self.size.saturating_sub(self.acting.len()) as u64;
        // Copies backfill has yet to make: degraded on an acting OSD, misplaced elsewhere.
        let unfilled = objects.saturating_sub(self.bf.covered);
        let (filling, moving) = self.backfill.iter().fold((0u64, 0u64), |(f, m), o| {
            if self.acting.contains(o) { (f + unfilled, m) } else { (f, m + unfilled) }
        });
        PgStat {
            pg: self.id,
            state: words.into_iter().map(String::from).collect(),
            up: self.up.clone(),
            acting: self.acting.clone(),
            epoch: self.map.epoch(),
            last_update: self.log.head(),
            log_entries: self.log.len() as u64,
            objects,
            bytes: self.info.stats.bytes,
            degraded: self.degraded_objects() + absent * objects + filling,
            misplaced: moving,
            unfound: self.unfound.len() as u64,
            recovered_bytes: self.recovered.bytes,
            recovered_objects: self.recovered.objects,
            last_scrub_ms: self.info.last_scrub_ms,
            last_deep_scrub_ms: self.info.last_deep_scrub_ms,
            last_scrub_errors: self.last_scrub_errors,
            inconsistent: self.inconsistent.len() as u64,
            inconsistent_detail: self
                .inconsistent
                .iter()
                .take(INCONSISTENT_DETAIL_MAX)
                .map(|(object, why)| format!("{object}: {why}"))
                .collect(),
            blocked_reason: match self.state {
                State::Blocked => self.blocked.why.clone(),
                _ => String::new(),
            },
            blocked_by: match self.state {
                State::Blocked => self.blocked.waiting_for.clone(),
                _ => Vec::new(),
            },
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
        self.remove_other_shards();
        let info = self.info.clone();
        let peers: Vec<u32> = self.acting.iter().copied().filter(|&o| o != self.me()).collect();
        let strays = std::mem::take(&mut self.strays);
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
            // Every copy the PG needs is complete: the old ones elsewhere can go. A stray
            // that has the map but has not yet handed it to the PG answers `StaleEpoch`
            // for a moment: ask again a few times.
            for osd in strays {
                for attempt in 1..=STRAY_REMOVAL_ATTEMPTS {
                    let request = PeerRequest::RemoveStray;
                    let epoch = map.epoch();
                    match call_peer(&conns, &map, osd, pg, epoch, interval, request, Bytes::new())
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if attempt == STRAY_REMOVAL_ATTEMPTS => {
                            tracing::info!(%pg, osd, error = %e, "could not remove a stray copy")
                        }
                        Err(_) => tokio::time::sleep(PEERING_RETRY).await,
                    }
                }
            }
        });
    }

    // ---- Client ops (primary) ----

    fn client_op(&mut self, op: ClientOp) {
        self.shared.client_ops.fetch_add(1, Ordering::Relaxed);
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
                let Blocked { state, why, .. } = &self.blocked;
                let _ = op.reply.send(Err(err(
                    ErrorCode::Unavailable,
                    format!("pg {} is {state}: {why}", self.id),
                )));
                return;
            }
            tracing::debug!(pg = %self.id, object = %op.object, state = ?self.state, "op waits for the PG");
            self.waiting.push_back(op);
            return;
        }
        // One change per object at a time, and nothing on an object being recovered.
        let busy = self.in_flight.contains_key(&op.object)
            || self.is_missing_anywhere(&op.object)
            || self.bf.pushing.contains_key(&op.object)
            || self.held.contains_key(&op.object)
            || (op.ops.iter().any(ObjectOp::is_write) && self.in_scrub_range(&op.object));
        if busy {
            tracing::debug!(
                pg = %self.id,
                object = %op.object,
                in_flight = self.in_flight.contains_key(&op.object),
                missing = self.is_missing_anywhere(&op.object),
                pushing = self.bf.pushing.contains_key(&op.object),
                "op held"
            );
            if self.is_missing_anywhere(&op.object) && !self.recovering.contains(&op.object) {
                self.recover(op.object.clone(), true);
            }
            self.held.entry(op.object.clone()).or_default().push_back(op);
            return;
        }
        self.execute(op);
    }

    /// The primary's copy of the op's object failed its checksum: the object counts as
    /// missing here, is recovered from another copy at once, and the op waits for that
    /// (read repair). Without another copy it stays unfound and the op waits for one.
    fn repair(&mut self, op: ClientOp, error: RemoteError) {
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

    fn release(&mut self, object: &ObjectName) {
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
        while !self.in_flight.contains_key(object)
            && !self.is_missing_anywhere(object)
            && !self.bf.pushing.contains_key(object)
            && !self.in_scrub_range(object)
        {
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
        if is_write && !op.ops.iter().all(ObjectOp::frees_space) {
            let onto: Vec<u32> = self.writers.iter().chain(&self.backfill).copied().collect();
            if let Some(why) = self.shared.space.refuse_write(&onto) {
                let _ = op.reply.send(Err(err(ErrorCode::NoSpace, why)));
                return;
            }
        }
        if self.ec.is_some() {
            return self.ec_execute(op, reqid, is_write);
        }
        let executed =
            match ops::execute(self.shared.store.as_ref(), self.c, &op.object, &op.ops, &op.bulk) {
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
        let head = self.log.head();
        let entry = self.next_entry(&op.object, reqid, &executed);
        let mut rep_ops = executed.rep_ops;
        rep_ops.push(proto::osd::RepOp::SetVersion { mtime_ms: now_ms() });
        let data = executed.rep_data;
        let committed_before = self.committed_before(entry.version);
        if let Err(e) = self.apply_entry(&entry, Some((&rep_ops, &data)), committed_before) {
            if e.code == ErrorCode::Corrupt {
                return self.repair(op, e);
            }
            let _ = op.reply.send(Err(e));
            return;
        }
        // Backfill targets get the write in full once backfill has passed the object,
        // else only its log entry.
        let log_only = !self.bf.covers(&op.object);
        let peers = peer_targets(self.me(), &self.writers, &self.backfill, log_only)
            .into_iter()
            .map(|(osd, backfill_only)| (osd, backfill_only, rep_ops.clone(), data.clone()))
            .collect();
        self.send_entry(head, entry, committed_before, peers, executed.results, op.reply);
    }

    /// The log entry of a write the primary executed.
    fn next_entry(&self, object: &ObjectName, reqid: ReqId, executed: &ops::Executed) -> LogEntry {
        LogEntry {
            version: Version::new(self.map.epoch().0, self.log.head().seq + 1),
            prior_version: executed.prior,
            object: object.clone(),
            op: if executed.exists_after { LogOp::Modify } else { LogOp::Delete },
            reqid: Some(reqid),
            delta: CountsDelta::of(executed.size_before, executed.size_after),
        }
    }

    /// The version before which every entry is committed on every copy, for an entry at
    /// `version` about to be sent: the oldest one still on its way, else this one.
    fn committed_before(&self, version: Version) -> Version {
        self.uncommitted.first().copied().unwrap_or(version)
    }

    /// Sends an entry the primary applied to its peers, each with its own changes
    /// (`backfill_only`: the log entry alone), and answers the client once every copy
    /// and this one are durable.
    fn send_entry(
        &mut self,
        head: Version,
        entry: LogEntry,
        committed_before: Version,
        peers: Vec<(u32, bool, Vec<proto::osd::RepOp>, Bytes)>,
        results: Vec<proto::osd::OpResult>,
        reply: Reply,
    ) {
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

    /// An op on an erasure-coded PG: evaluated against the logical object (this shard's
    /// metadata, the logical size from `EC_SIZE_XATTR`) with placeholder bytes, which
    /// says what it reads; the bytes are gathered from the shards, then `ec_gathered`
    /// answers a read, or turns a write into each shard's changes.
    fn ec_execute(&mut self, op: ClientOp, reqid: ReqId, is_write: bool) {
        let Some(ec) = self.ec.clone() else { return };
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
        let mut wanted: Vec<std::ops::Range<u64>> = Vec::new();
        let executed = ops::execute_on(
            self.shared.store.as_ref(),
            self.c,
            &op.object,
            &op.ops,
            &op.bulk,
            view,
            &mut |offset, len| {
                let end = offset.saturating_add(len).min(before.size);
                let start = offset.min(end);
                wanted.push(start..end);
                Ok(vec![0; (end - start) as usize])
            },
        );
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
            rep_ops.push(proto::osd::RepOp::SetVersion { mtime_ms: now_ms() });
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
    fn shard_source(&self) -> Option<ShardSource> {
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
    fn readable_sources(&self, object: &ObjectName) -> Vec<usize> {
        let readable = self.readable_shards(object);
        (0..readable.len()).filter(|&shard| readable[shard]).collect()
    }

    /// The shards reads may use: acting OSDs that are complete and not missing `object`.
    fn readable_shards(&self, object: &ObjectName) -> Vec<bool> {
        let Some(ec) = &self.ec else { return Vec::new() };
        ec.acting
            .iter()
            .map(|osd| {
                osd.is_some_and(|o| {
                    self.writers.contains(&o)
                        && !self.missing.get(&o).is_some_and(|m| m.contains_key(object))
                })
            })
            .collect()
    }

    fn ec_gathered(
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
    fn ec_complete(&mut self, pending: EcOp, mut pieces: Vec<Vec<u8>>) {
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

    /// Applies a log entry and its changes (none on a backfill target that does not have
    /// the object yet) to the local store, not yet durably. An erasure-coded shard keeps
    /// what the changes overwrite (`rollback`) in the same transaction, unless the entry
    /// creates the object (undone by removing it, as `merge_authoritative` says), and
    /// drops the stashes of entries before `committed_before`, which every shard has.
    fn apply_entry(
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
    fn trim_log(&mut self) {
        let clean = self.info.last_epoch_clean == self.interval;
        let Some(keep) = super::log::trim_keep(self.log.len(), clean) else { return };
        let tail = self.log.trim(keep);
        self.info.log_tail = tail;
        self.ensure_collection_and(vec![
            persist::trim_to(self.c, tail),
            persist::put_info(self.c, &self.info),
        ]);
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
        let erasure = self.ec.is_some();
        let answer =
            self.shared.store.list(self.c, after.as_ref(), max + 1).map_err(store_error).map(
                |mut page| {
                    let more = page.len() > max;
                    page.truncate(max);
                    let objects = page
                        .into_iter()
                        .map(|(oid, meta)| {
                            let size = if erasure { logical_size(&meta) } else { meta.size };
                            (ops::object_name(&oid), size)
                        })
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
                let info = PeerResponse::Info {
                    info: self.my_info().map(Box::new),
                    shard: self.c.shard,
                    // A store that cannot list its collections says it keeps one:
                    // peering then assumes the least.
                    kept: self.other_shards().map_or(true, |others| !others.is_empty()),
                    born: Epoch(self.shared.born.load(Ordering::Relaxed)),
                };
                let _ = reply.send(answer(info));
            }
            PeerRequest::GetLog { after } => {
                let entries = self.log.entries_after(after, usize::MAX);
                let _ = reply.send(answer(PeerResponse::Log {
                    entries,
                    tail: self.log.tail(),
                    more: false,
                }));
            }
            PeerRequest::Pull { object, shard } => {
                let answer = if shard != self.c.shard {
                    // A pull is answered in any interval: this OSD may hold another
                    // position's shard by now, which is no copy of the one wanted.
                    Err(self.not_shard(shard))
                } else {
                    read_state(self.shared.store.as_ref(), self.c, &object)
                };
                let _ =
                    reply.send(answer.map(|(s, b)| (Response::Peer(PeerResponse::Object(s)), b)));
            }
            PeerRequest::ReadShard { object, shard, version, ranges } => {
                let (store, c) = (self.shared.store.as_ref(), self.c);
                let answer = if shard != c.shard {
                    // This OSD's position changed: it holds another shard now.
                    Err(self.not_shard(shard))
                } else {
                    read_shard(store, c, &object, version, &ranges)
                };
                let _ = reply.send(
                    answer.map(|b| (Response::Peer(PeerResponse::ShardRead), Bytes::from(b))),
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
            PeerRequest::Activate { info, entries, backfill: true } => {
                let result = self.start_backfill_here(info, entries).map_err(store_error);
                let _ = reply.send(result.map(|()| {
                    (Response::Peer(PeerResponse::Activated { missing: vec![] }), Bytes::new())
                }));
            }
            PeerRequest::Activate { info, entries, backfill: false } => {
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
            PeerRequest::Replicate { after, committed_before, entry, ops, backfill_only } => {
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
                            PeerRequest::Replicate {
                                after,
                                committed_before,
                                entry,
                                ops,
                                backfill_only,
                            },
                            bulk,
                            reply,
                        ),
                    );
                    return;
                }
                self.replicate(entry, committed_before, ops, bulk, backfill_only, reply);
                // Writes that were waiting for this one.
                while let Some(next) = self.pending.first_key_value().map(|(v, _)| *v) {
                    if next > self.log.head() {
                        break;
                    }
                    let (_, request, bulk, reply) = self.pending.remove(&next).expect("present");
                    if let PeerRequest::Replicate {
                        entry,
                        committed_before,
                        ops,
                        backfill_only,
                        ..
                    } = request
                    {
                        self.replicate(entry, committed_before, ops, bulk, backfill_only, reply);
                    }
                }
            }
            PeerRequest::Push { state } => {
                self.shared.space.wrote(bulk.len() as u64);
                if let Err(e) = apply_state(self.shared.store.as_ref(), self.c, &state, &bulk) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    let result = shared.syncer.sync().await;
                    let backfillfull = shared.space.refuse_backfill().is_some();
                    let pushed = PeerResponse::Pushed { backfillfull };
                    let _ = reply.send(result.map(|()| (Response::Peer(pushed), Bytes::new())));
                });
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
                self.remove_other_shards();
                let _ = reply.send(answer(PeerResponse::Done));
            }
            PeerRequest::ScrubMap { after, until, deep } => {
                // Off the PG's task: a deep scrub reads every byte of the chunk.
                let (store, c) = (self.shared.store.clone(), self.c);
                tokio::spawn(async move {
                    let map = tokio::task::spawn_blocking(move || {
                        scrub_map(store.as_ref(), c, after.as_ref(), until.as_ref(), deep)
                    })
                    .await
                    .unwrap_or_else(|e| Err(err(ErrorCode::Internal, e.to_string())));
                    let _ = reply.send(map.map(|objects| {
                        (Response::Peer(PeerResponse::ScrubMap { objects }), Bytes::new())
                    }));
                });
            }
            PeerRequest::Scan { after, until, max } => {
                // Each batch of backfill begins with a scan: a target too full for more
                // data stops it here, before the monitors have told the primary.
                if let Some(why) = self.shared.space.refuse_backfill() {
                    let _ = reply.send(Err(err(ErrorCode::NoSpace, why)));
                    return;
                }
                let _ = reply.send(self.scan(after, until, max).map(|(objects, more)| {
                    (Response::Peer(PeerResponse::Scanned { objects, more }), Bytes::new())
                }));
            }
            PeerRequest::BackfillDone => {
                self.info.backfill_incomplete = None;
                self.info.last_complete = self.log.head();
                self.save_info();
                tracing::info!(pg = %self.id, "backfill of this copy done");
                let _ = reply.send(answer(PeerResponse::Done));
            }
            PeerRequest::RemoveStray => {
                let me = self.me();
                if self.acting.contains(&me) || self.up.contains(&me) {
                    let _ = reply.send(Err(err(
                        ErrorCode::Invalid,
                        format!("osd.{me} serves pg {}: its copy is not a stray", self.id),
                    )));
                    return;
                }
                self.remove_collection();
                self.remove_other_shards();
                tracing::info!(pg = %self.id, "removed a stray copy");
                self.info = PgInfo::default();
                self.log = PgLog::default();
                let _ = reply.send(answer(PeerResponse::Done));
            }
        }
    }

    /// The answer to a request for a shard this OSD does not hold (its position changed).
    fn not_shard(&self, shard: u8) -> RemoteError {
        err(ErrorCode::StaleEpoch, format!("osd.{} holds {}, not shard {shard}", self.me(), self.c))
    }

    /// A backfill target starts over: the primary's log and info, marked incomplete, and
    /// its objects as they are (the primary's scans compare and replace them).
    fn start_backfill_here(
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
    fn scan(
        &self,
        after: Option<ObjectName>,
        until: Option<ObjectName>,
        max: u32,
    ) -> Result<(Vec<(ObjectName, Version)>, bool), RemoteError> {
        let max = max.clamp(1, SCAN_MAX) as usize;
        let until = until.map(|u| objectstore::keys::object_order(&object_id(&u)));
        let after = after.as_ref().map(object_id);
        let page = self.shared.store.list(self.c, after.as_ref(), max + 1).map_err(store_error)?;
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

    fn replicate(
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
            let _ = reply.send(Ok((Response::Peer(PeerResponse::Done), Bytes::new())));
            return;
        }
        let change = (!log_only).then_some((rep_ops.as_slice(), &bulk));
        if let Err(e) = self.apply_entry(&entry, change, committed_before) {
            let _ = reply.send(Err(e));
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let result = shared.syncer.sync().await;
            let _ = reply.send(result.map(|()| (Response::Peer(PeerResponse::Done), Bytes::new())));
        });
    }
}

// ---- Scrub (primary) ----
impl Pg {
    /// Starts a scheduled scrub when one is due (called with each stats report).
    fn schedule_scrub(&mut self) {
        if !self.is_primary() || self.state != State::Active {
            return;
        }
        let now = now_ms();
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
    fn request_scrub(&mut self, deep: bool, reply: Option<Reply>) {
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

    fn scrub_go(&mut self, deep: bool, permit: tokio::sync::OwnedSemaphorePermit) {
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
    fn in_scrub_range(&self, object: &ObjectName) -> bool {
        let Some(run) = self.scrub.as_ref().filter(|r| r.ranged) else { return false };
        let order = objectstore::keys::object_order(&object_id(object));
        run.after.as_ref().is_none_or(|(a, _)| order > *a)
            && run.until.as_ref().is_none_or(|(u, _)| order <= *u)
    }

    /// Picks the next chunk: up to `SCRUB_CHUNK` of the primary's objects.
    fn scrub_chunk(&mut self) {
        let Some(run) = &self.scrub else { return };
        let after = run.after.as_ref().map(|(_, name)| object_id(name));
        let page = match self.shared.store.list(self.c, after.as_ref(), SCRUB_CHUNK) {
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
    fn scrub_gather_when_quiet(&mut self) {
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
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.message)?;
                let mut maps = BTreeMap::from([(me, local)]);
                for osd in others {
                    let request =
                        PeerRequest::ScrubMap { after: after.clone(), until: until.clone(), deep };
                    match peers.call(osd, request, Bytes::new()).await? {
                        (PeerResponse::ScrubMap { objects }, _) => {
                            maps.insert(osd, objects);
                        }
                        (other, _) => {
                            return Err(format!("osd.{osd} answered a scrub with {other:?}"));
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
    fn scrubbed(&mut self, result: Result<Vec<scrub::Inconsistency>, String>) {
        let held: Vec<ObjectName> =
            self.held.keys().filter(|o| self.in_scrub_range(o)).cloned().collect();
        let Some(run) = self.scrub.as_mut() else { return };
        run.gathering = false;
        run.ranged = false;
        let until = run.until.take();
        let result = if self.state == State::Active {
            result
        } else {
            Err("the PG is peering again".to_owned())
        };
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
                let now = now_ms();
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
        let page = store.list(c, cursor.as_ref(), SCAN_MAX as usize).map_err(store_error)?;
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

fn scrub_object(
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
    let omap = store.omap_all(c, &oid).map_err(store_error)?;
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
    apply_waiting(store, &txn).map_err(store_error)
}

/// An erasure-coded object's logical size, from the xattr every shard keeps it in.
fn logical_size(meta: &objectstore::ObjectMeta) -> u64 {
    meta.xattrs
        .get(EC_SIZE_XATTR)
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Where an erasure-coded PG's primary reads shards from: its own store for its shard,
/// the OSD at each other position for theirs.
struct ShardSource {
    peers: Peers,
    shared: Arc<Shared>,
    c: CollectionId,
    /// The OSD at each shard position of the acting set.
    osds: Vec<Option<u32>>,
    layout: ec::Layout,
}

impl ShardSource {
    /// Ranges of one shard at `version`, concatenated.
    async fn read(
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
        let request = Request::Peer {
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
                format!("osd.{osd} answered a shard read with {}", other.name()),
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
    async fn gather(
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
    async fn check_parity(
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
    async fn pull(
        &self,
        shard: usize,
        object: &ObjectName,
    ) -> Result<(ObjectState, Bytes), String> {
        let osd = self.osds.get(shard).copied().flatten().ok_or("no OSD holds the shard")?;
        if osd == self.shared.me {
            return read_state(self.shared.store.as_ref(), self.c, object).map_err(|e| e.message);
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
            (other, _) => Err(format!("osd.{osd} answered a pull with {other:?}")),
        }
    }

    /// Rebuilds `object`'s shards on `targets` (OSD, shard) from k of the shards
    /// `sources` (read whole and decoded), at `want` or newer, or at whatever version
    /// they agree on (`None` or `ZERO`, as a repair of an unreadable copy asks); with no
    /// version wanted, k sources without the object remove it from the targets. Returns
    /// the bytes written and the targets that said they are now backfillfull.
    async fn rebuild(
        &self,
        object: &ObjectName,
        want: Option<Version>,
        sources: &[usize],
        targets: &[(u32, usize)],
    ) -> Result<(u64, Vec<u32>), RecoveryError> {
        let layout = &self.layout;
        use RecoveryError::{Failed, Unfound};
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
            None if want.is_none() && absent >= layout.k() => {
                ObjectState { object: object.clone(), version: Version::ZERO, body: None }
            }
            None => {
                return Err(Unfound(format!(
                    "no shard of {object} at the version wanted answered"
                )));
            }
        };
        if state.body.is_some() {
            if found < layout.k() {
                return Err(Unfound(format!(
                    "{found} shards of {object} at version {} answered; decoding needs {}",
                    state.version,
                    layout.k()
                )));
            }
            if shards.iter().flatten().next().is_some_and(|s| !s.is_empty()) {
                layout.codec().reconstruct(&mut shards).map_err(|e| Failed(e.to_string()))?;
            } else {
                shards.iter_mut().for_each(|s| *s = Some(Vec::new()));
            }
        }
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
                apply_state(self.shared.store.as_ref(), self.c, &state, &bulk)
                    .map_err(|e| Failed(e.message))?;
                self.shared.syncer.sync().await.map_err(|e| Failed(e.message))?;
            } else {
                let request = PeerRequest::Push { state };
                let (response, _) =
                    self.peers.call(osd, request, bulk.clone()).await.map_err(Failed)?;
                if let PeerResponse::Pushed { backfillfull: true } = response {
                    full.push(osd);
                }
            }
            moved += bulk.len() as u64;
        }
        Ok((moved, full))
    }
}

/// Ranges of this OSD's shard of `object`, which must be at `version`, concatenated.
fn read_shard(
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

/// A PG's info and log from its collection, if it has one.
/// A collection's info, log and rollback stashes (`Loaded::exists`: whether it has an info).
fn load(store: &dyn ObjectStore, c: CollectionId) -> Loaded {
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

type Loaded = (bool, PgInfo, PgLog, BTreeSet<Version>);

/// The other OSDs of `copies` (flagged `false`) and the backfill targets (flagged
/// `backfill_flag`), the shape in which activation and replication address their peers.
fn peer_targets(
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
fn apply_waiting(store: &dyn ObjectStore, txn: &Transaction) -> Result<(), StoreError> {
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
struct Peers {
    pg: PgId,
    interval: Epoch,
    inbox: mpsc::Sender<Event>,
    conns: Arc<OsdConnections>,
    map: Arc<OsdMap>,
}

impl Peers {
    async fn call(
        &self,
        osd: u32,
        request: PeerRequest,
        bulk: Bytes,
    ) -> Result<(PeerResponse, Bytes), String> {
        let (map, epoch) = (&self.map, self.map.epoch());
        call_peer(&self.conns, map, osd, self.pg, epoch, self.interval, request, bulk).await
    }

    async fn report(&self, event: Event) {
        let _ = self.inbox.send(event).await;
    }
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
    size: usize,
    /// k and the acting and up sets by position, for an erasure-coded PG.
    erasure: Option<Ec>,
    mine: Option<PgInfo>,
    conns: Arc<OsdConnections>,
}

impl PeeringTask {
    async fn run(self) -> Result<Peered, String> {
        let mut infos = BTreeMap::from([(self.me, self.mine.clone())]);
        // The shard position each answering OSD's copy is for (erasure-coded PGs).
        let mut held: BTreeMap<u32, usize> = BTreeMap::new();
        // OSDs that keep a shard of another position besides the one they answered for,
        // and the epoch each answering OSD's store first served at.
        let mut kept: BTreeSet<u32> = BTreeSet::new();
        let mut born: BTreeMap<u32, Epoch> = BTreeMap::new();
        if let Some(e) = &self.erasure
            && let Some(mine) = e.shard_of(self.me)
        {
            held.insert(self.me, mine);
        }
        let plan = loop {
            let past = peering::merge_intervals(
                infos.values().flatten().map(|i| i.past_intervals.as_slice()),
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
                    held: &held,
                    kept: &kept,
                    born: &born,
                }),
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
                            Ok((PeerResponse::Info { info, shard, kept: other, born: b }, _)) => {
                                born.insert(osd, b);
                                if shard != objectstore::NO_SHARD {
                                    held.insert(osd, usize::from(shard));
                                }
                                if other {
                                    kept.insert(osd);
                                }
                                infos.insert(osd, info.map(|i| *i));
                            }
                            Ok((other, _)) => {
                                return Err(format!("osd.{osd} answered a query with {other:?}"));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Decision::Down { interval, waiting_for } => {
                    let needed = match &self.erasure {
                        Some(e) => format!("{} of them with a shard", e.layout.k()),
                        None => "one of them".to_owned(),
                    };
                    let why = format!(
                        "interval {}-{} (acting {:?}, primary {}) may have taken writes, and \
                         {needed} must answer; waiting for {}",
                        interval.first,
                        interval.last,
                        interval.acting,
                        interval.primary.map_or("none".to_owned(), |o| format!("osd.{o}")),
                        osd_list(&waiting_for),
                    );
                    return Ok(Peered::Blocked(Blocked { state: "down", why, waiting_for }));
                }
                Decision::Incomplete => {
                    let why = "no complete copy answered".to_owned();
                    return Ok(Peered::Blocked(Blocked::new("incomplete", why)));
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
