//! One PG on one OSD: a task that owns the PG's state and handles its events in order —
//! new maps, client ops, requests from peers, and the results of work it started
//! (peering rounds, commits, recovery). Decisions come from the pure modules (`peering`,
//! `log`, `ops`, `recovery`, `backfill`, `status`, `admission`); this task moves the bytes
//! and keeps the state.
//!
//! Interval discipline: anything started in one interval (a peering round, a replicated
//! write, a recovery push) carries the interval's first epoch, and its result is dropped
//! if the PG has since moved on. Peers refuse requests from another interval.
//!
//! This module holds the PG's state, its events and their dispatch (`handle`, `new_map`);
//! each story the PG tells has a module of its own: `peering_round` (primary), `recovery`,
//! `backfill`, `client_ops` (client ops on the primary), `copies` (server-side copies), `ec_io` (erasure-coded reads, writes
//! and rebuilds), `replica` (requests from peers), `scrubbing`, `snap_trim`, `stats` (reports and
//! going clean) and `io` (the store and network helpers they share). They are `impl Pg`
//! blocks on the state defined here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use net::osd_conn::OsdConnections;
use objectstore::{CollectionId, ObjectStore, StoreError, Transaction, TxOp};
use placement::{Epoch, OsdMap, PgId, Version};
use proto::error::{ErrorCode, RemoteError};
use proto::message::{OsdRequest, Response};
use proto::osd::{
    CountsDelta, LOG_PAGE_MAX, LogEntry, LogOp, ObjectCounts, ObjectName, ObjectOp, ObjectState,
    OsdConfig, PastInterval, PeerRequest, PeerResponse, PgInfo, PgStat, ReqId,
};
use tokio::sync::{mpsc, oneshot};

use crate::error::{PeerError, RecoveryError, TaskError};
use proto::clock::Clock;

use super::admission::{self, Admit, Serving, WAITING_OPS_MAX};
use super::backfill::{self as backfill_plan, Backfill, Next, Walked};
use super::ec::{self as ecw, EC_SIZE_XATTR, Logical};
use super::log::{LOG_ENTRIES_KEPT, PgLog};
use super::ops::{self, object_id, object_name, store_error};
use super::peering::{self, Decision, Plan};
use super::persist;
use super::recovery::{self as recovery_plan, Rebuild, Step};
use super::rollback::{self, Rollback};
use super::scrub;
use super::status::{self, Blocked, Filling};
use crate::space::Space;
use crate::syncer::Syncer;
use crate::throttle::Throttle;

mod backfill;
mod client_ops;
mod copies;
mod ec_io;
mod io;
mod peering_round;
mod recovery;
mod replica;
mod scrubbing;
mod snap_trim;
mod stats;

pub use io::{apply_state, read_state};
pub use scrubbing::scrub_map;

use ec_io::{logical_size, read_shard};
use io::{Peers, apply_waiting, call_peer, load, peer_targets};

/// How long one request to a peer may take.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Replicated writes a replica holds that arrived before their predecessor.
pub const PENDING_REPLICATIONS_MAX: usize = 1024;
/// How long after a failed peering round the PG tries again.
pub const PEERING_RETRY: Duration = Duration::from_millis(500);
/// How long a PG waits for the acting set it asked the monitors for before asking again.
pub const PG_TEMP_RETRY: Duration = Duration::from_secs(5);
/// Times a clean PG asks a stray to delete its copy.
pub const STRAY_REMOVAL_ATTEMPTS: u32 = 10;
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
    /// Wall time (`crate::clock`).
    pub clock: Arc<dyn Clock>,
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
    pub pg_temp: mpsc::Sender<(PgId, Vec<Option<u32>>)>,
    /// Scrubs this OSD leads at once (Ceph's `osd_max_scrubs`, 1).
    pub scrubs: Arc<tokio::sync::Semaphore>,
    /// How often each PG is scrubbed and deep-scrubbed, in ms (from the monitors).
    pub scrub_interval_ms: AtomicU64,
    pub deep_scrub_interval_ms: AtomicU64,
    /// The pause between scrub chunks (`osd.scrub_sleep_ms`), which lets held ops through.
    pub scrub_sleep_ms: AtomicU64,
    /// The pause between batches of snapshot trimming (`osd.snap_trim_sleep_ms`).
    pub snap_trim_sleep_ms: AtomicU64,
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
    /// a scrub (wall ms from `clock`; 0: not since it started), for `cairn recon`.
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
    /// An OSD's shared state with the defaults its settings start from (until the
    /// monitors' first beacon answer); starts the sync thread.
    pub fn new(
        me: u32,
        store: Arc<dyn ObjectStore>,
        space: Space,
        conns: Arc<OsdConnections>,
        pg_temp: mpsc::Sender<(PgId, Vec<Option<u32>>)>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Shared> {
        use crate::daemon::{BACKFILL_ACTIVE_MAX, RECOVERY_ACTIVE_MAX};
        Ok(Shared {
            me,
            clock,
            pg_temp,
            syncer: Syncer::start(store.clone())?,
            space,
            store,
            conns,
            recovery: Throttle::new(RECOVERY_ACTIVE_MAX),
            backfill: Throttle::new(BACKFILL_ACTIVE_MAX),
            recovered_objects: Default::default(),
            recovered_bytes: Default::default(),
            scrubs: Arc::new(tokio::sync::Semaphore::new(1)),
            scrub_interval_ms: AtomicU64::new(24 * 3600 * 1000),
            deep_scrub_interval_ms: AtomicU64::new(7 * 24 * 3600 * 1000),
            scrub_sleep_ms: AtomicU64::new(20),
            snap_trim_sleep_ms: AtomicU64::new(20),
            client_ops: AtomicU64::new(0),
            op_complaint_time_s: AtomicU64::new(30),
            scrub_load_threshold_percent: AtomicU64::new(50),
            load_per_cpu_percent: AtomicU64::new(0),
            last_recovery_ms: Default::default(),
            last_backfill_ms: Default::default(),
            last_scrub_ms: Default::default(),
            born: AtomicU64::new(u64::MAX),
            quarantined: Default::default(),
        })
    }

    /// Applies the settings the monitors sent.
    pub fn configure(&self, config: &OsdConfig) {
        self.space.configure(config);
        self.op_complaint_time_s.store(config.op_complaint_time_s, Ordering::Relaxed);
        self.snap_trim_sleep_ms.store(config.snap_trim_sleep_ms, Ordering::Relaxed);
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
    /// The client instance: its connection's address and its process's nonce,
    /// `IP:PORT/NONCE` (what a lock's holder shows and the blocklist fences).
    pub addr: String,
    pub reqid: u64,
    pub epoch: Epoch,
    pub object: ObjectName,
    pub ops: Vec<ObjectOp>,
    pub bulk: Bytes,
    pub snap: proto::osd::SnapArgs,
    pub reply: Reply,
}

impl ClientOp {
    /// Who asks, at `now_ms`: what lock ops record and check.
    pub fn caller(&self, now_ms: i64) -> crate::pg::locks::Caller<'_> {
        crate::pg::locks::Caller { client: &self.client, addr: &self.addr, now_ms }
    }
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
        result: Result<Peered, TaskError>,
    },
    Activated {
        interval: Epoch,
        result: Result<BTreeMap<u32, BTreeMap<ObjectName, Version>>, TaskError>,
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
        result: Result<BTreeMap<u32, Vec<(ObjectName, Version)>>, TaskError>,
    },
    /// One object backfilled (pushed to, or removed from, its targets).
    Backfilled {
        interval: Epoch,
        object: ObjectName,
        /// Bytes pushed, or `None`: not pushed, a target was backfillfull.
        result: Result<Option<u64>, RecoveryError>,
    },
    /// The targets have been told their backfill is done.
    BackfillFinished {
        interval: Epoch,
        result: Result<(), TaskError>,
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
        result: Result<Vec<scrub::Inconsistency>, TaskError>,
    },
    /// Time for the next chunk.
    ScrubNext {
        interval: Epoch,
    },
    /// Time for the next batch of snapshot trimming.
    SnapTrim {
        interval: Epoch,
    },
    /// The sources of a request's copy ops, read from their primaries.
    CopyRead {
        interval: Epoch,
        op: Box<ClientOp>,
        result: Result<Vec<super::copy::Source>, RemoteError>,
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

pub enum Peered {
    Blocked(Blocked),
    Plan { plan: Plan, auth_log: Option<(Version, Vec<LogEntry>)>, auth_stats: ObjectCounts },
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

/// Where a map puts a PG.
struct Placed {
    min_size: usize,
    size: usize,
    ec: Option<Ec>,
    up: Vec<u32>,
    acting: Vec<u32>,
    primary: Option<u32>,
}

/// Why a map does not place a PG.
enum Unplaced {
    PoolDeleted,
    /// The map cannot map it (no rule result).
    Unmapped,
    /// Its erasure-code profile is unusable.
    Profile(ec::EcError),
}

impl Placed {
    fn in_map(pg: PgId, map: &OsdMap) -> Result<Placed, Unplaced> {
        let pool = map.pool(pg.pool).ok_or(Unplaced::PoolDeleted)?;
        let mapping = map.pg_mapping(pg).map_err(|_| Unplaced::Unmapped)?;
        let ec = match &pool.kind {
            placement::PoolKind::Erasure { profile, k, m, .. } => {
                let chunk = map
                    .contents()
                    .erasure_profiles
                    .get(profile)
                    .map_or(ec::stripe::DEFAULT_CHUNK, |p| u64::from(p.stripe_unit_bytes));
                let layout = ec::Layout::new(usize::from(*k), usize::from(*m), chunk)
                    .map_err(Unplaced::Profile)?;
                Some(Ec { layout, acting: positions(&mapping.acting), up: positions(&mapping.up) })
            }
            placement::PoolKind::Replicated { .. } => None,
        };
        Ok(Placed {
            min_size: pool.min_size(),
            size: pool.size(),
            ec,
            up: mapping.up.osds().map(|o| o.0).collect(),
            acting: mapping.acting.osds().map(|o| o.0).collect(),
            primary: mapping.acting_primary.map(|o| o.0),
        })
    }

    /// Whether the PG's sets or primary differ from `pg`'s: a new interval.
    fn moved(&self, pg: &Pg) -> bool {
        let positions_moved = match (&self.ec, &pg.ec) {
            (Some(a), Some(b)) => a.acting != b.acting || a.up != b.up,
            (None, None) => false,
            _ => true,
        };
        self.up != pg.up
            || self.acting != pg.acting
            || self.primary != pg.primary
            || positions_moved
    }
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
    /// Objects a copy op writes to while its sources are read (`copies`).
    copying: HashSet<ObjectName>,
    /// Snapshot trimming under way (primary), and the removed snapshots this OSD's copy
    /// has been trimmed of (`snap_trim`).
    trim: Option<snap_trim::Trim>,
    trimmed: placement::snaps::SnapIntervals,
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

fn err(code: ErrorCode, message: impl Into<String>) -> RemoteError {
    RemoteError::new(code, message)
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
            copying: HashSet::new(),
            trim: None,
            trimmed: Default::default(),
            pending: BTreeMap::new(),
            rollbacks,
            uncommitted: BTreeSet::new(),
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
            Event::Map(map) => {
                self.new_map(map);
                // A map that removes a snapshot starts trimming at once.
                self.snap_trim_check();
            }
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
                self.snap_trim_check();
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
            Event::SnapTrim { interval } if interval == self.interval => self.snap_trim_batch(),
            Event::EcGathered { interval, op, result } => self.ec_gathered(interval, *op, result),
            Event::CopyRead { interval, op, result } => self.copy_read(interval, *op, result),
            Event::ScrubGo { .. } => self.scrub_queued = false,
            // Results of an interval that has ended.
            Event::ScrubChunk { .. }
            | Event::ScrubNext { .. }
            | Event::SnapTrim { .. }
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

    fn new_map(&mut self, map: Arc<OsdMap>) {
        let placed = match Placed::in_map(self.id, &map) {
            Ok(placed) => placed,
            Err(Unplaced::PoolDeleted) => {
                // The PG goes with its pool.
                self.remove_collection();
                self.remove_other_shards();
                self.map = map;
                return;
            }
            Err(Unplaced::Unmapped) => {
                self.map = map;
                return;
            }
            Err(Unplaced::Profile(e)) => {
                tracing::error!(pg = %self.id, error = %e, "unusable erasure-code profile");
                self.map = map;
                return;
            }
        };
        let changed = self.interval == Epoch(0) || placed.moved(self);
        let previous = std::mem::replace(&mut self.map, map);
        let Placed { min_size, size, ec, up, acting, primary } = placed;
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
        self.forget_interval();
        if self.is_primary() {
            self.state = State::Peering;
            self.start_peering();
        } else {
            self.state = State::Replica;
        }
    }

    /// A new interval begins: what the primary knew of the old one's copies, recovery,
    /// backfill and scrub goes, and so do its ops.
    fn forget_interval(&mut self) {
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
        self.copying.clear();
        self.trim = None;
        // Ops of the old interval: their clients resend to the new primary.
        let stale = err(
            ErrorCode::StaleEpoch,
            format!("pg {} changed at epoch {}; resend", self.id, self.interval),
        );
        for op in self.waiting.drain(..).chain(self.held.drain().flat_map(|(_, q)| q)) {
            let _ = op.reply.send(Err(stale.clone()));
        }
    }

    fn my_info(&self) -> Option<PgInfo> {
        self.exists.then(|| {
            let mut info = self.info.clone();
            info.last_update = self.log.head();
            info.log_tail = self.log.tail();
            info
        })
    }
}
