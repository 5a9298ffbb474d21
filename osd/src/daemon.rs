//! The OSD daemon: its directory, start-up, the map loop that drives every PG, the beacon,
//! and the service that routes requests to PG tasks.
//!
//! A directory holds `osd.toml` (id, address), `client.toml` (the monitors, this OSD's
//! identity), its credentials, and `store/` (RocksDB). Its pid goes to `osd.pid` once it
//! has booted, until it stops.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use net::config::OsdTransport;
use net::frame::Limits;
use net::identity::Credentials;
use net::osd_conn::OsdConnections;
use net::rpc::{self, Reply};
use net::transport::quic::{QuicEndpoint, Tuning};
use net::transport::tcp::TcpEndpoint;
use net::transport::{BoxFuture, Endpoint, Peer};
use net::{ClientConfig, MonClient};
use objectstore::{BlockFile, KvObjectStore, ObjectStore, Transaction, TxOp};
use placement::{Epoch, OsdId, OsdMap, PgId};
use proto::error::{ErrorCode, RemoteError};
use proto::message::{MonRequest, OsdRequest, Response};
use proto::osd::{OSD_BULK_BYTES_MAX, ObjectOp, OsdStat, PgStat};
use proto::{Access, EntityKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::caps::CapsCache;
use crate::pg::actor::{self, ClientOp, Event, Pg, Shared};
use crate::rocks::RocksEngine;
use crate::space::{MEASURE_INTERVAL, Space};
use crate::tracker::OpTracker;
use proto::clock::{Clock, SystemClock};

pub const CONFIG_FILE: &str = "osd.toml";
pub const CLIENT_FILE: &str = "client.toml";
pub const PID_FILE: &str = "osd.pid";
/// Whole data chunks, next to the RocksDB store (`store/`) that references them.
pub const BLOCK_FILE: &str = "block";
/// How often the OSD tells the monitors it is alive.
pub const BEACON_INTERVAL: Duration = Duration::from_secs(2);
/// How long a request waits for this OSD's map to reach the epoch it names.
pub const MAP_WAIT: Duration = Duration::from_secs(5);
/// How long a client op may wait inside the OSD (peering, recovery, replication).
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// A request that takes this long is logged (Ceph's "slow request").
pub const SLOW_OP: Duration = Duration::from_secs(5);
/// Recovery pushes and pulls at once on one OSD, until the monitors say otherwise
/// (`osd.recovery_max_active`).
pub const RECOVERY_ACTIVE_MAX: u32 = 4;
/// Backfill pushes in flight on one OSD, until the monitors say otherwise
/// (`osd.backfill_max_active`).
pub const BACKFILL_ACTIVE_MAX: u32 = 4;
/// How often the OSD pings the OSDs it shares PGs with.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A peer that has not answered a ping for this long is reported to the monitors (who
/// mark it down once enough OSDs from distinct hosts agree). Ceph's default is 20 s; a
/// QUIC ping on loopback or a LAN answers in well under a millisecond, so 6 s is still
/// hundreds of missed answers.
pub const HEARTBEAT_GRACE: Duration = Duration::from_secs(6);
/// How long the map must show this OSD down, while it runs, before it boots again.
pub const REBOOT_AFTER: Duration = Duration::from_secs(5);
/// How often the OSD reports its PGs' states and its usage to the monitors.
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// How long the OSD gathers its PGs' pg_temp requests into one (one map epoch for all the
/// PGs a map change sent to backfill).
pub const PG_TEMP_GATHER: Duration = Duration::from_millis(100);
/// pg_temp entries per request to the monitors.
pub const PG_TEMP_REQUEST_MAX: usize = 1024;
/// pg_temp asks the PGs may have queued for the daemon; one that finds the queue full is
/// dropped, and its PG asks again (`actor::PG_TEMP_RETRY`).
pub const PG_TEMP_QUEUE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsdConfig {
    pub id: u32,
    /// Where it serves clients and peers (`ip:port`); port 0 for one the system picks at
    /// each start, which the OSD boots with.
    pub addr: String,
    /// The space the OSD may fill, in bytes, as a block device's size bounds a Ceph OSD;
    /// without it, the filesystem its store is on. Either way the OSD is full when what is
    /// free of it falls below the monitors' full level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
}

impl OsdConfig {
    pub fn load(dir: &Path) -> anyhow::Result<OsdConfig> {
        let path = dir.join(CONFIG_FILE);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let config: OsdConfig =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        config
            .addr
            .parse::<SocketAddr>()
            .with_context(|| format!("addr '{}' is not ip:port", config.addr))?;
        Ok(config)
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join(CONFIG_FILE), toml::to_string(self)?)?;
        Ok(())
    }
}

/// The PGs' tasks, and the newest map handed to them all.
#[derive(Default)]
struct Pgs {
    tasks: HashMap<PgId, mpsc::Sender<Event>>,
    /// What `apply_map` handed to every task: one started later, for a request of an older
    /// epoch, starts from this map instead, so that no task misses it.
    newest: Option<Arc<OsdMap>>,
}

pub struct Osd {
    shared: Arc<Shared>,
    pgs: Mutex<Pgs>,
    map: watch::Receiver<Option<Arc<OsdMap>>>,
    /// The OSDs this one shares a PG with in the current map (heartbeat peers).
    peers: Mutex<BTreeSet<u32>>,
    caps: CapsCache,
    /// Client ops in flight, for SLOW_OPS.
    tracker: Arc<OpTracker>,
    /// The current map's epoch and hash (`placement::encoding::map_hash`).
    map_hash: Mutex<(Epoch, u32)>,
    /// This OSD's clock minus the monitors', from its recent pings of them.
    clock: Mutex<ClockSamples>,
}

impl Osd {
    /// Makes `map` the current one: requests of its epoch are handed to the PGs from now
    /// on. Its PGs must have it first (`apply_map`): a PG asked by a peer of a new
    /// interval while it is still in the one that ended could take writes there after it
    /// answered, and its answer would leave them out of the new interval's history.
    fn set_map(&self, map_tx: &watch::Sender<Option<Arc<OsdMap>>>, map: Arc<OsdMap>) {
        *self.map_hash.lock().expect("map hash lock") =
            (map.epoch(), placement::encoding::map_hash(&map));
        map_tx.send_replace(Some(map));
    }

    fn current_map(&self) -> Option<Arc<OsdMap>> {
        self.map.borrow().clone()
    }

    /// The map at `epoch` or newer, waiting a little for it to arrive.
    async fn map_at(&self, epoch: Epoch) -> Result<Arc<OsdMap>, RemoteError> {
        let mut watch = self.map.clone();
        let wait = watch.wait_for(|m| m.as_ref().is_some_and(|m| m.epoch() >= epoch));
        match tokio::time::timeout(MAP_WAIT, wait).await {
            Ok(Ok(map)) => Ok(map.clone().expect("checked")),
            _ => Err(RemoteError::new(
                ErrorCode::Unavailable,
                format!("osd.{} has no map at epoch {epoch} yet", self.shared.me),
            )),
        }
    }

    /// The task of a PG, started if this OSD has none for it yet (an erasure-coded PG
    /// moves to its shard's collection with its first map).
    fn pg(&self, pg: PgId, map: &Arc<OsdMap>) -> mpsc::Sender<Event> {
        self.pg_from(pg, objectstore::NO_SHARD, map)
    }

    /// The task of a PG, started from the collection of `shard` (found on disk) if this
    /// OSD has none yet.
    fn pg_from(&self, pg: PgId, shard: u8, map: &Arc<OsdMap>) -> mpsc::Sender<Event> {
        let mut pgs = self.pgs.lock().expect("pgs lock");
        let Pgs { tasks, newest } = &mut *pgs;
        let map = match newest {
            Some(newest) if newest.epoch() > map.epoch() => newest,
            _ => map,
        };
        tasks
            .entry(pg)
            .or_insert_with(|| Pg::spawn(pg, shard, self.shared.clone(), map.clone()))
            .clone()
    }

    /// Hands a new map to every PG this OSD serves or holds. Every PG must see every map
    /// (a missed one could leave it in an ended interval), so this waits for room in a
    /// busy PG's inbox rather than dropping the map.
    async fn apply_map(&self, map: &Arc<OsdMap>) {
        crate::failpoints::delay("osd::map_arrived").await;
        let me = OsdId(self.shared.me);
        let mut peers = BTreeSet::new();
        for pool in map.contents().pools.values() {
            for pg in map.pgs(pool) {
                let Ok(mapping) = map.pg_mapping(pg) else { continue };
                if mapping.up.contains(me) || mapping.acting.contains(me) {
                    self.pg(pg, map);
                    peers.extend(mapping.up.osds().chain(mapping.acting.osds()).map(|o| o.0));
                }
            }
        }
        peers.remove(&me.0);
        *self.peers.lock().expect("peers lock") = peers;
        let senders: Vec<mpsc::Sender<Event>> = {
            let mut pgs = self.pgs.lock().expect("pgs lock");
            pgs.newest = Some(map.clone());
            pgs.tasks.values().cloned().collect()
        };
        for sender in senders {
            let _ = sender.send(Event::Map(map.clone())).await;
        }
    }

    async fn ask(
        &self,
        pg: PgId,
        epoch: Epoch,
        make: impl FnOnce(actor::Reply) -> Event,
    ) -> Result<(Response, Bytes), RemoteError> {
        let map = self.map_at(epoch).await?;
        if map.pool(pg.pool).is_none_or(|p| pg.seed >= p.pg_num) {
            return Err(RemoteError::new(
                ErrorCode::NotFound,
                format!("pg {pg} does not exist at epoch {}", map.epoch()),
            ));
        }
        let (tx, rx) = oneshot::channel();
        let sender = self.pg(pg, &map);
        sender
            .send(make(tx))
            .await
            .map_err(|_| RemoteError::new(ErrorCode::Unavailable, "the PG stopped"))?;
        let started = Instant::now();
        let answer = tokio::time::timeout(OP_TIMEOUT, rx).await;
        if started.elapsed() >= SLOW_OP {
            tracing::warn!(%pg, waited_ms = started.elapsed().as_millis() as u64, "slow request");
        }
        match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(RemoteError::new(
                ErrorCode::Unavailable,
                format!("pg {pg} dropped the request; resend"),
            )),
            Err(_) => Err(RemoteError::new(
                ErrorCode::Timeout,
                format!("pg {pg} did not answer within {OP_TIMEOUT:?}"),
            )),
        }
    }

    /// A client's caps must allow `access` to the PG's pool (daemons pass). A pool the
    /// map does not have is left to the PG lookup, which says so.
    async fn check_caps(
        &self,
        peer: &Peer,
        pg: PgId,
        epoch: Epoch,
        access: Access,
    ) -> Result<(), RemoteError> {
        if peer.entity.kind() != EntityKind::Client {
            return Ok(());
        }
        let map = match self.current_map() {
            Some(map) if map.epoch() >= epoch => map,
            _ => self.map_at(epoch).await?,
        };
        match map.pool(pg.pool) {
            Some(pool) => self.caps.check(&peer.entity, &pool.name, access).await,
            None => Ok(()),
        }
    }

    async fn dispatch(
        &self,
        peer: Peer,
        request: OsdRequest,
        bulk: Bytes,
    ) -> Result<(Response, Bytes), RemoteError> {
        match request {
            OsdRequest::Ping { sent_ms } => {
                let (epoch, map_hash) = *self.map_hash.lock().expect("map hash lock");
                let pong = Response::Pong {
                    sent_ms,
                    now_ms: self.shared.clock.now_ms(),
                    from: format!("osd.{}", self.shared.me).parse().expect("osd name"),
                    removed_at: None,
                    epoch,
                    map_hash,
                };
                Ok((pong, Bytes::new()))
            }
            OsdRequest::ObjectOps { pg, epoch, reqid, object, ops, instance, snap } => {
                if ops.is_empty() || ops.len() > proto::osd::OPS_PER_REQUEST_MAX {
                    return Err(RemoteError::new(
                        ErrorCode::Invalid,
                        format!("a request carries 1 to {} ops", proto::osd::OPS_PER_REQUEST_MAX),
                    ));
                }
                let access = if ops.iter().any(ObjectOp::is_write) {
                    Access::ReadWrite
                } else {
                    Access::Read
                };
                self.check_caps(&peer, pg, epoch, access).await?;
                let client = peer.entity.to_string();
                let mut what = format!("pg {pg} object {object} from {client}");
                if what.len() > proto::osd::OP_DESCRIPTION_MAX {
                    let mut end = proto::osd::OP_DESCRIPTION_MAX;
                    while !what.is_char_boundary(end) {
                        end -= 1;
                    }
                    what.truncate(end);
                }
                let _tracked = self.tracker.start(what);
                self.ask(pg, epoch, |reply| {
                    let addr = format!("{}/{instance}", peer.addr);
                    Event::Client(ClientOp {
                        client,
                        addr,
                        reqid,
                        epoch,
                        object,
                        ops,
                        bulk,
                        snap,
                        reply,
                    })
                })
                .await
            }
            OsdRequest::ListObjects { pg, epoch, after, max } => {
                self.check_caps(&peer, pg, epoch, Access::Read).await?;
                self.ask(pg, epoch, |reply| Event::List { after, max, reply }).await
            }
            OsdRequest::PgScrub { pg, epoch, deep } => {
                self.caps.check_admin(&peer.entity, "scrub PGs").await?;
                self.ask(pg, epoch, |reply| Event::Scrub { deep, reply: Some(reply) }).await
            }
            OsdRequest::Peer { pg, epoch, interval, request } => {
                if peer.entity.osd_id().is_none() {
                    return Err(RemoteError::new(
                        ErrorCode::PermissionDenied,
                        format!("{} is not an OSD", peer.entity),
                    ));
                }
                self.ask(pg, epoch, |reply| Event::Peer { interval, request, bulk, reply }).await
            }
        }
    }
}

impl Osd {
    /// Pings every heartbeat peer once a second and reports to the monitors those that
    /// have not answered for `HEARTBEAT_GRACE`, so a dead OSD is marked down in seconds
    /// rather than after the monitors' beacon grace.
    async fn heartbeats(self: Arc<Self>, mon: Arc<MonClient>) {
        let mut last_answer: HashMap<u32, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            tick.tick().await;
            let Some(map) = self.current_map() else { continue };
            let peers: Vec<u32> = self
                .peers
                .lock()
                .expect("peers lock")
                .iter()
                .copied()
                .filter(|&o| map.is_up(OsdId(o)))
                .collect();
            let now = Instant::now();
            // A peer newly seen (or back up) starts with a full grace.
            last_answer.retain(|o, _| peers.contains(o));
            for &osd in &peers {
                last_answer.entry(osd).or_insert(now);
            }
            let pings = peers.iter().map(|&osd| {
                let addr = map.osd(OsdId(osd)).and_then(|s| s.addr.clone());
                let (conns, clock) = (self.shared.conns.clone(), self.shared.clock.clone());
                async move {
                    let Some(addr) = addr else { return (osd, false) };
                    let ping = OsdRequest::Ping { sent_ms: clock.now_ms() };
                    let answered = conns
                        .call(osd, &addr, &ping, &[], HEARTBEAT_INTERVAL)
                        .await
                        .is_ok_and(|(r, _)| matches!(r, Response::Pong { .. }));
                    (osd, answered)
                }
            });
            for (osd, answered) in futures::future::join_all(pings).await {
                let since = last_answer.get(&osd).copied().unwrap_or(now);
                if answered {
                    last_answer.insert(osd, Instant::now());
                } else if since.elapsed() >= HEARTBEAT_GRACE {
                    let failed_for_ms = since.elapsed().as_millis() as u64;
                    tracing::info!(
                        target_osd = osd,
                        failed_for_ms,
                        "reporting an unreachable peer"
                    );
                    if let Err(e) =
                        mon.send(MonRequest::OsdFailure { target: osd, failed_for_ms }).await
                    {
                        tracing::warn!(error = %e, "failure report not delivered");
                    }
                }
            }
        }
    }

    /// The states of the PGs this OSD is primary of, and its usage.
    async fn stats(&self) -> (Vec<PgStat>, OsdStat) {
        let senders: Vec<mpsc::Sender<Event>> =
            self.pgs.lock().expect("pgs lock").tasks.values().cloned().collect();
        // A PG whose inbox stays full for a whole interval is left out of this report
        // (the monitors keep its last one) rather than holding up the others.
        let asks = senders.into_iter().map(|sender| async move {
            let ask = async {
                let (tx, rx) = oneshot::channel();
                sender.send(Event::Stat(tx)).await.ok()?;
                rx.await.ok()
            };
            tokio::time::timeout(STATS_INTERVAL, ask).await.ok()?
        });
        let answers = futures::future::join_all(asks).await;
        let held = answers.iter().flatten().filter(|(exists, _)| *exists).count() as u32;
        let pgs: Vec<PgStat> = answers.into_iter().flatten().filter_map(|(_, s)| s).collect();
        // Measured every second by its own task, off the runtime's threads.
        let (total_bytes, avail_bytes) = self.shared.space.last();
        let (map_epoch, map_hash) = *self.map_hash.lock().expect("map hash lock");
        let complaint =
            Duration::from_secs(self.shared.op_complaint_time_s.load(Ordering::Relaxed));
        let slow = self.tracker.slow(complaint, Instant::now());
        let (oldest_op_ms, oldest_op) =
            slow.oldest.map(|(age, what)| (age.as_millis() as u64, what)).unwrap_or_default();
        let shared = &self.shared;
        let usage = OsdStat {
            osd: self.shared.me,
            used_bytes: self.shared.store.used_bytes(),
            total_bytes,
            avail_bytes,
            pgs: held,
            primary_pgs: pgs.len() as u32,
            recovered_objects: self.shared.recovered_objects.load(Ordering::Relaxed),
            recovered_bytes: self.shared.recovered_bytes.load(Ordering::Relaxed),
            map_epoch,
            map_hash,
            clock_offset_ms: self.clock.lock().expect("clock lock").offset_ms(),
            slow_ops: slow.count,
            oldest_op_ms,
            oldest_op,
            last_recovery_ms: shared.last_recovery_ms.load(Ordering::Relaxed),
            last_backfill_ms: shared.last_backfill_ms.load(Ordering::Relaxed),
            last_scrub_ms: shared.last_scrub_ms.load(Ordering::Relaxed),
            quarantined: shared.quarantined.load(Ordering::Relaxed),
            load_milli: load_average_milli(),
            report_age_ms: None,
        };
        (pgs, usage)
    }

    async fn report_stats(self: Arc<Self>, mon: Arc<MonClient>) {
        let mut tick = tokio::time::interval(STATS_INTERVAL);
        loop {
            tick.tick().await;
            self.measure_clock(&mon).await;
            let epoch = self.current_map().map(|m| m.epoch()).unwrap_or_default();
            let (pgs, usage) = self.stats().await;
            let request = MonRequest::PgStats { osd: self.shared.me, epoch, pgs, usage };
            if let Err(e) = mon.send(request).await {
                tracing::debug!(error = %e, "PG stats not delivered");
            }
        }
    }

    /// Pings a monitor for its clock, as the monitors measure each other's: the monitor's
    /// clock against the middle of the round trip.
    async fn measure_clock(&self, mon: &MonClient) {
        let sent = self.shared.clock.now_ms();
        let ping = MonRequest::Ping { sent_ms: sent };
        let answer = tokio::time::timeout(STATS_INTERVAL, mon.request(&ping)).await;
        let received = self.shared.clock.now_ms();
        if let Ok(Ok((Response::Pong { now_ms, .. }, _))) = answer {
            let offset = (sent + received) / 2 - now_ms;
            self.clock.lock().expect("clock lock").record(offset, received - sent);
        }
    }
}

/// Clock offsets from the last few pings. A round trip is seldom symmetric (a new
/// connection's handshake, a busy machine), and the error of one sample is up to half its
/// round trip, so the offset reported is that of the quickest recent round trip, as NTP
/// filters its samples.
#[derive(Default)]
struct ClockSamples {
    /// (offset, round trip), in ms, newest last.
    samples: std::collections::VecDeque<(i64, i64)>,
}

/// Pings a clock offset is chosen from (one per stats report: 16 s).
const CLOCK_SAMPLES: usize = 8;

impl ClockSamples {
    fn record(&mut self, offset_ms: i64, round_trip_ms: i64) {
        if self.samples.len() == CLOCK_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((offset_ms, round_trip_ms.max(0)));
    }

    fn offset_ms(&self) -> Option<i64> {
        self.samples.iter().min_by_key(|(_, rtt)| *rtt).map(|(offset, _)| *offset)
    }
}

/// The host's one-minute load average times 1000 (0 if `/proc/loadavg` cannot be read).
fn load_average_milli() -> u32 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |load| (load * 1000.0) as u32)
}

/// Passes the PGs' pg_temp requests to the monitors, those made together in one request.
/// A request that is lost is not retried here: each PG asks again until its map changes.
async fn send_pg_temp(
    mon: Arc<MonClient>,
    me: u32,
    mut requests: mpsc::Receiver<(PgId, Vec<Option<u32>>)>,
) {
    while let Some((pg, osds)) = requests.recv().await {
        let mut wanted = BTreeMap::from([(pg, osds)]);
        tokio::time::sleep(PG_TEMP_GATHER).await;
        while let Ok((pg, osds)) = requests.try_recv() {
            wanted.insert(pg, osds);
        }
        let wanted: Vec<(PgId, Vec<Option<u32>>)> = wanted.into_iter().collect();
        for chunk in wanted.chunks(PG_TEMP_REQUEST_MAX) {
            let request = MonRequest::PgTemp { osd: me, pgs: chunk.to_vec() };
            if let Err(e) = mon.send(request).await {
                tracing::warn!(error = %e, "pg_temp request not delivered");
            }
        }
    }
}

struct Service(Arc<Osd>);

impl rpc::Service for Service {
    type Request = OsdRequest;

    /// The transport proved the peer's certificate is the cluster CA's.
    fn admit(&self, _peer: &Peer) -> Result<(), RemoteError> {
        Ok(())
    }

    fn limits(&self, _peer: &Peer, default: Limits) -> Limits {
        Limits { bulk_bytes_max: OSD_BULK_BYTES_MAX, ..default }
    }

    fn handle(
        self: Arc<Self>,
        peer: Peer,
        request: OsdRequest,
        bulk: Bytes,
    ) -> BoxFuture<'static, Reply> {
        Box::pin(async move {
            match self.0.dispatch(peer, request, bulk).await {
                Ok((response, bulk)) => Reply::One(response, bulk),
                Err(e) => Reply::from(e),
            }
        })
    }
}

/// glibc malloc arenas an OSD uses (glibc's default is 8 per core). The `cairn` binary
/// allocates Rust's memory with mimalloc, so this now bounds RocksDB's C++ allocations.
/// Measured when client buffers still came from glibc: they are allocated on one thread
/// and freed on another; with many arenas each kept its own freed megabytes, and under
/// 4 MiB writes an OSD's RSS was ~300 MiB with the default and ~150 MiB with 2.
const MALLOC_ARENAS: i32 = 2;

/// Sets the allocator up for an OSD. Call before any threads start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// Where the store records the map epoch it first served at.
const BORN_KEY: &[u8] = b"born_epoch";

/// Tries at a port the system picks, for an OSD configured with port 0: the TCP port of
/// the same number may be taken.
const PICK_PORT_TRIES: usize = 16;

/// The OSD's QUIC endpoint and its TCP one for the data path, at the same port. Port 0
/// in the configuration means one the system picks at each start (the OSD boots with
/// it, so clients and peers learn it from the map), as Ceph's OSDs pick theirs.
fn listen(
    addr: SocketAddr,
    credentials: &Credentials,
) -> anyhow::Result<(Arc<dyn Endpoint>, Arc<dyn Endpoint>)> {
    let tries = if addr.port() == 0 { PICK_PORT_TRIES } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let quic = QuicEndpoint::bind(addr, credentials, &Tuning::default(), true)
            .with_context(|| format!("listen on {addr}"))?;
        let at = quic.local_addr();
        match TcpEndpoint::bind(at, credentials) {
            Ok(tcp) => return Ok((Arc::new(quic), Arc::new(tcp))),
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("listen on {at} (TCP)"))),
        }
    }
    Err(last.expect("at least one try"))
}

/// The map epoch this store first served at: recorded (durably) at its first start, with
/// the map it starts with. A store from before the record existed counts from now.
fn born_epoch(store: &dyn ObjectStore, now: Epoch) -> anyhow::Result<Epoch> {
    if let Some(value) = store.osd_get(BORN_KEY)? {
        let bytes = <[u8; 8]>::try_from(value.as_slice())
            .map_err(|_| anyhow::anyhow!("the store's born_epoch record is not 8 bytes"))?;
        return Ok(Epoch(u64::from_le_bytes(bytes)));
    }
    let put = TxOp::OsdPut { key: BORN_KEY.to_vec(), value: now.0.to_le_bytes().to_vec() };
    store.apply(&Transaction { ops: vec![put] })?;
    store.sync()?;
    Ok(now)
}

/// What an OSD runs on. `run` makes them from the OSD's folder (RocksDB and its block
/// file, QUIC and TCP endpoints on the configured address); `start` takes any, so a
/// cluster of OSDs can run in one process on other stores and transports. Timers still
/// come from tokio (a paused runtime controls them) and wall time from the system.
pub struct Parts {
    pub config: OsdConfig,
    /// How the OSD reaches the monitors (and which transport it uses to other OSDs).
    pub client: ClientConfig,
    pub store: Arc<dyn ObjectStore>,
    /// The folder whose file system the store fills (for `osd df` and the full ratios).
    pub store_dir: PathBuf,
    /// For clients and monitors (QUIC).
    pub endpoint: Arc<dyn Endpoint>,
    /// For the data path between OSDs where it is TCP, at the same address.
    pub tcp: Arc<dyn Endpoint>,
    /// Wall time.
    pub clock: Arc<dyn Clock>,
}

/// Runs the OSD in `dir` until the process is stopped.
pub async fn run(dir: &Path) -> anyhow::Result<()> {
    crate::failpoints::configure_from_env()?;
    let parts = open(dir)?;
    let running = start(parts).await?;
    let pid_path = dir.join(PID_FILE);
    std::fs::write(&pid_path, std::process::id().to_string())
        .with_context(|| format!("write {}", pid_path.display()))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let result = running.follow_maps(stop).await;
    let _ = std::fs::remove_file(&pid_path);
    result
}

/// The OSD's configuration, its RocksDB store and its endpoints, from its folder.
fn open(dir: &Path) -> anyhow::Result<Parts> {
    let config = OsdConfig::load(dir)?;
    let client =
        ClientConfig::load(&dir.join(CLIENT_FILE)).context("load the OSD's client.toml")?;
    let credentials = client.credentials().map_err(anyhow::Error::msg)?;
    if credentials.entity.osd_id() != Some(config.id) {
        bail!(
            "the credentials in {} are {}, not osd.{}",
            dir.display(),
            credentials.entity,
            config.id
        );
    }
    let store_dir: PathBuf = dir.join("store");
    let engine = RocksEngine::open(&store_dir)
        .with_context(|| format!("open the object store in {}", store_dir.display()))?;
    let block_path = dir.join(BLOCK_FILE);
    let blocks = BlockFile::open(&block_path)?;
    let store = KvObjectStore::with_blocks(engine, blocks)
        .with_context(|| format!("read the object store in {}", store_dir.display()))?;
    let (endpoint, tcp) = listen(config.addr.parse()?, &credentials)?;
    let clock = Arc::new(SystemClock::from_env());
    Ok(Parts { config, client, store: Arc::new(store), store_dir, endpoint, tcp, clock })
}

/// A started OSD: booted, serving, and its background tasks running.
pub struct Running {
    pub osd: Arc<Osd>,
    pub addr: SocketAddr,
    mon: Arc<MonClient>,
    first: Arc<OsdMap>,
    map_tx: watch::Sender<Option<Arc<OsdMap>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts an OSD on `parts`: serves its endpoints, fetches the map, starts the PGs its
/// store holds and boots with the monitors.
pub async fn start(parts: Parts) -> anyhow::Result<Running> {
    let Parts { config, client, store, store_dir, endpoint, tcp, clock } = parts;
    let addr = endpoint.local_addr();
    let to_osds = match client.osd_transport {
        OsdTransport::Tcp => tcp.clone(),
        OsdTransport::Quic => endpoint.clone(),
    };
    let (pg_temp_tx, pg_temp_rx) = mpsc::channel(PG_TEMP_QUEUE);
    let space = Space::new(config.id, store_dir, config.capacity_bytes);
    let conns = Arc::new(OsdConnections::new(to_osds));
    let shared = Shared::new(config.id, store, space, conns, pg_temp_tx, clock)
        .context("start the sync thread")?;
    let shared = Arc::new(shared);
    shared.space.measure(shared.store.as_ref());
    let (map_tx, map_rx) = watch::channel(None);
    let osd = Arc::new(Osd {
        shared,
        pgs: Mutex::default(),
        map: map_rx,
        peers: Mutex::new(BTreeSet::new()),
        caps: CapsCache::default(),
        tracker: Arc::default(),
        map_hash: Mutex::new((Epoch(0), 0)),
        clock: Mutex::default(),
    });
    let mut tasks = vec![
        tokio::spawn(rpc::serve(
            endpoint.clone(),
            Arc::new(Service(osd.clone())),
            Limits::default(),
        )),
        tokio::spawn(rpc::serve(tcp, Arc::new(Service(osd.clone())), Limits::default())),
    ];
    let mon = Arc::new(MonClient::with_endpoint(client, endpoint));
    osd.caps.connect(mon.clone());
    // The first map, then boot: PGs that already exist here start from it.
    let first = mon.map().await.context("fetch the map from the monitors")?;
    let first = Arc::new(first);
    let born = born_epoch(osd.shared.store.as_ref(), first.epoch())?;
    osd.shared.born.store(born.0, Ordering::Relaxed);
    for c in osd.shared.store.collections()? {
        if first.pool(c.pg.pool).is_some_and(|p| c.pg.seed < p.pg_num) {
            osd.pg_from(c.pg, c.shard, &first);
        }
    }
    osd.apply_map(&first).await;
    osd.set_map(&map_tx, first.clone());
    mon.send(MonRequest::OsdBoot { osd: config.id, addr: addr.to_string() })
        .await
        .context("boot")?;
    tracing::info!(osd = config.id, %addr, epoch = %first.epoch(), "booted");
    tasks.extend([
        tokio::spawn(beacons(mon.clone(), osd.clone(), addr.to_string())),
        tokio::spawn(osd.clone().heartbeats(mon.clone())),
        tokio::spawn(osd.clone().report_stats(mon.clone())),
        tokio::spawn(measure_space(osd.shared.clone())),
        tokio::spawn(send_pg_temp(mon.clone(), config.id, pg_temp_rx)),
    ]);
    Ok(Running { osd, addr, mon, first, map_tx, tasks })
}

impl Running {
    /// Applies every new map until `stop` completes, then stops the background tasks and
    /// syncs the store.
    pub async fn follow_maps(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Running { osd, mon, first, map_tx, tasks, .. } = self;
        // Every epoch in turn: a PG's interval starts at the epoch its mapping changed, and
        // peers agree on it only if each of them saw that epoch.
        let mut watch = mon.watch_every_epoch(Some((*first).clone()));
        tokio::pin!(stop);
        let result = loop {
            tokio::select! {
                next = watch.next() => {
                    let map = match next.context("follow the map") {
                        Ok(map) => Arc::new(map.clone()),
                        Err(e) => break Err(e),
                    };
                    osd.apply_map(&map).await;
                    osd.set_map(&map_tx, map.clone());
                }
                _ = &mut stop => break Ok(()),
            }
        };
        tracing::info!("stopping");
        for task in tasks {
            task.abort();
        }
        osd.shared.store.sync()?;
        result
    }
}

/// Beacons to the monitors, which answer with the OSDs' settings; boots again when marked
/// down while alive (a false failure report), once the map has said so for a while. Not
/// on every map that shows it down: the monitors mark a restarted OSD down and then up in
/// the next epoch.
async fn beacons(mon: Arc<MonClient>, osd: Arc<Osd>, addr: String) {
    let me = OsdId(osd.shared.me);
    let mut tick = tokio::time::interval(BEACON_INTERVAL);
    let mut booted = Instant::now();
    loop {
        tick.tick().await;
        let map = osd.current_map();
        let epoch = map.as_ref().map(|m| m.epoch()).unwrap_or_default();
        let down = map.is_some_and(|m| m.osd(me).is_some_and(|s| !s.up));
        if down && booted.elapsed() >= REBOOT_AFTER {
            booted = Instant::now();
            let boot = MonRequest::OsdBoot { osd: osd.shared.me, addr: addr.clone() };
            if let Err(e) = mon.send(boot).await {
                tracing::warn!(error = %e, "boot again failed");
            }
        }
        match mon.beacon(osd.shared.me, epoch).await {
            Ok(config) => osd.shared.configure(&config),
            Err(e) => tracing::warn!(error = %e, "beacon failed"),
        }
    }
}

/// Measures the store's space and the machine's load, off the runtime's threads.
async fn measure_space(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(MEASURE_INTERVAL);
    loop {
        tick.tick().await;
        let shared = shared.clone();
        let measured = tokio::task::spawn_blocking(move || {
            shared.space.measure(shared.store.as_ref());
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let per_cpu = u64::from(load_average_milli()) / 10 / cpus as u64;
            shared.load_per_cpu_percent.store(per_cpu, Ordering::Relaxed);
        });
        let _ = measured.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_offset_is_the_quickest_round_trips() {
        let mut clock = ClockSamples::default();
        assert_eq!(clock.offset_ms(), None);
        // A first ping over a new connection: slow and lopsided.
        clock.record(-40, 90);
        clock.record(3, 2);
        clock.record(-25, 60);
        assert_eq!(clock.offset_ms(), Some(3));
        // The quick sample ages out after CLOCK_SAMPLES newer ones.
        for _ in 0..CLOCK_SAMPLES - 1 {
            clock.record(9, 5);
        }
        assert_eq!(clock.offset_ms(), Some(9));
    }
}
