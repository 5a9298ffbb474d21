//! The monitor daemon: its files, its start (storage, Raft, transport), the loops that
//! keep it informed (peer pings, failure detection) and its orderly stop.
//!
//! A monitor's directory holds `mon.toml` (name, Raft id, address), `genesis.bin` (the
//! state every initial monitor starts from, made by bootstrap), its credentials
//! (`ca.crt`, `mon.NAME.crt`, `mon.NAME.key`, and `ca.key` to issue identities), and
//! `store/` (RocksDB). Its pid goes to `mon.pid` while it runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use net::frame::Limits;
use net::identity::{ClusterCa, Credentials};
use net::rpc;
use net::transport::Endpoint;
use net::transport::quic::{QuicEndpoint, Tuning};
use openraft::{Config, ServerState, SnapshotPolicy};
use proto::EntityName;
use serde::{Deserialize, Serialize};

use crate::network::Network;
use crate::service::Monitor;
use crate::state::{Genesis, Identity};
use crate::store::{LogStore, MonNode, NodeId, Raft, StateMachine, open_db};
use proto::clock::{Clock, SystemClock};

pub const CONFIG_FILE: &str = "mon.toml";
pub const GENESIS_FILE: &str = "genesis.bin";
pub const PID_FILE: &str = "mon.pid";
pub const STORE_DIR: &str = "store";
const GENESIS_MAGIC: &[u8; 8] = b"CAIRNGEN";
/// How often the leader runs failure detection and confirms its quorum when idle.
const TICK: Duration = Duration::from_secs(1);
/// How often a monitor pings its peers (liveness and clock offsets for status); often
/// enough that a monitor which starts or returns shows in quorum within a fraction of a
/// second, cheap at a handful of monitors.
const PING_INTERVAL: Duration = Duration::from_millis(250);

/// Raft timing, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Log entries between snapshots.
    pub snapshot_every: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 150,
            election_min_ms: 600,
            election_max_ms: 1200,
            snapshot_every: 1000,
        }
    }
}

/// A monitor's own configuration (`mon.toml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonConfig {
    /// The monitor's name: it is `mon.NAME`.
    pub name: String,
    /// Its Raft node id.
    pub id: NodeId,
    /// Where it listens for everyone, `ip:port`.
    pub addr: String,
    #[serde(default)]
    pub raft: RaftTiming,
    /// Monitors to ask to be added, as `NAME@IP:PORT`, for a monitor that was not in the
    /// initial quorum (`cairn mon add` writes them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<String>,
}

impl MonConfig {
    pub fn load(dir: &Path) -> Result<MonConfig> {
        let path = dir.join(CONFIG_FILE);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let config: MonConfig =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        config.validate().with_context(|| format!("check {}", path.display()))?;
        Ok(config)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(CONFIG_FILE);
        std::fs::write(&path, toml::to_string(self)?)
            .with_context(|| format!("write {}", path.display()))
    }

    pub fn validate(&self) -> Result<()> {
        EntityName::mon(&self.name).map_err(anyhow::Error::msg)?;
        if self.id == 0 {
            bail!("id must be at least 1");
        }
        self.addr
            .parse::<std::net::SocketAddr>()
            .with_context(|| format!("addr '{}' is not ip:port", self.addr))?;
        let t = &self.raft;
        if t.heartbeat_ms == 0
            || t.election_min_ms <= t.heartbeat_ms * 2
            || t.election_max_ms <= t.election_min_ms
        {
            bail!("raft timing needs 0 < 2 x heartbeat < election_min < election_max");
        }
        if t.snapshot_every == 0 {
            bail!("raft.snapshot_every must be at least 1");
        }
        for peer in &self.join {
            parse_peer(peer)?;
        }
        Ok(())
    }

    pub fn entity(&self) -> EntityName {
        EntityName::mon(&self.name).expect("validated")
    }
}

/// `NAME@IP:PORT` as a monitor node.
pub fn parse_peer(text: &str) -> Result<MonNode> {
    let (name, addr) =
        text.split_once('@').with_context(|| format!("'{text}' is not NAME@IP:PORT"))?;
    EntityName::mon(name).map_err(anyhow::Error::msg)?;
    addr.parse::<std::net::SocketAddr>()
        .with_context(|| format!("'{addr}' in '{text}' is not IP:PORT"))?;
    Ok(MonNode { name: name.to_owned(), addr: addr.to_owned() })
}

/// What bootstrap hands every initial monitor: the genesis state and the initial members.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenesisFile {
    pub fsid: [u8; 16],
    pub ca_pem: String,
    pub identities: Vec<(EntityName, Identity)>,
    pub members: BTreeMap<NodeId, MonNode>,
}

impl GenesisFile {
    pub fn genesis(&self) -> Genesis {
        Genesis {
            fsid: self.fsid,
            ca_pem: self.ca_pem.clone(),
            identities: self.identities.clone(),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(GENESIS_FILE);
        std::fs::write(&path, self.encode()?).with_context(|| format!("write {}", path.display()))
    }

    pub fn load(dir: &Path) -> Result<GenesisFile> {
        let path = dir.join(GENESIS_FILE);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        GenesisFile::decode(&bytes).with_context(|| format!("read {}", path.display()))
    }

    /// The file's bytes, as `save` writes them.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let payload = postcard::to_stdvec(self)?;
        let mut bytes = GENESIS_MAGIC.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<GenesisFile> {
        if bytes.len() < 12 || &bytes[..8] != GENESIS_MAGIC {
            bail!("not a cairn genesis file");
        }
        let stored = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if crc32c::crc32c(&bytes[12..]) != stored {
            bail!("corrupt (checksum mismatch)");
        }
        postcard::from_bytes(&bytes[12..]).context("does not decode")
    }
}

/// Everything a running monitor is, for the loops and for tests in one process.
pub struct Running {
    pub monitor: Arc<Monitor>,
    pub raft: Raft,
    pub endpoint: Arc<dyn Endpoint>,
}

/// What a monitor runs on, opened from its directory by `open`; tests and a later
/// simulation may build these otherwise (another endpoint, a clock they drive).
pub struct Parts {
    pub config: MonConfig,
    pub genesis: GenesisFile,
    /// The RocksDB store of the Raft log and the state machine.
    pub db: Arc<rocksdb::DB>,
    pub endpoint: Arc<dyn Endpoint>,
    /// The cluster CA's key, on a monitor that issues identities.
    pub ca: Option<ClusterCa>,
    pub clock: Arc<dyn Clock>,
}

/// Opens a monitor's directory: its files, its store, and its QUIC endpoint listening
/// on the configured address.
pub fn open(dir: &Path) -> Result<Parts> {
    let config = MonConfig::load(dir)?;
    let genesis = GenesisFile::load(dir)?;
    let credentials =
        Credentials::load(dir, &config.entity()).context("load the monitor's credentials")?;
    let ca_key = dir.join("ca.key");
    let ca = match std::fs::read_to_string(&ca_key) {
        Ok(key) => Some(
            ClusterCa::from_pem(credentials.ca_pem.clone(), key).context("load the cluster CA")?,
        ),
        Err(_) => None,
    };
    // The address first, as before: a second monitor on the same folder or port fails on
    // it without touching the store.
    let addr = config.addr.parse().expect("validated");
    let endpoint: Arc<dyn Endpoint> = Arc::new(
        QuicEndpoint::bind(addr, &credentials, &Tuning::default(), true)
            .with_context(|| format!("listen on {addr}"))?,
    );
    let store_dir = dir.join(STORE_DIR);
    let db = open_db(&store_dir)
        .with_context(|| format!("open the store in {}", store_dir.display()))?;
    Ok(Parts { config, genesis, db, endpoint, ca, clock: Arc::new(SystemClock::from_env()) })
}

/// Starts a monitor on the parts it is given: Raft on the store, the service on the
/// endpoint, and the loops that keep it informed.
pub async fn start(parts: Parts) -> Result<Running> {
    let Parts { config, genesis, db, endpoint, ca, clock } = parts;
    let log = LogStore::new(db.clone());
    let state = StateMachine::open(db, genesis.genesis().state())?;
    let fsid = placement::describe::format_uuid(&genesis.fsid);
    let raft_config = Config {
        cluster_name: fsid,
        heartbeat_interval: config.raft.heartbeat_ms,
        election_timeout_min: config.raft.election_min_ms,
        election_timeout_max: config.raft.election_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.raft.snapshot_every),
        max_in_snapshot_log_to_keep: config.raft.snapshot_every / 2,
        ..Config::default()
    }
    .validate()
    .context("raft configuration")?;
    let network = Network { endpoint: endpoint.clone() };
    let raft = Raft::new(config.id, Arc::new(raft_config), network, log, state.clone())
        .await
        .context("start raft")?;
    // Only initial monitors initialise; one that joins later learns the quorum from it.
    if let Some(rank) = genesis.members.keys().position(|id| *id == config.id)
        && config.join.is_empty()
        && !raft.is_initialized().await.context("raft state")?
    {
        // Every initial monitor may initialise Raft with the same members (openraft allows
        // it), and initialising starts an election at once. They take turns, in id order,
        // so that they do not split the first vote: the first one's vote request reaches
        // the others before their turn, and their own attempt is then refused harmlessly.
        let raft = raft.clone();
        let members = genesis.members.clone();
        let turn = Duration::from_millis(config.raft.election_min_ms / 2) * rank as u32;
        tokio::spawn(async move {
            tokio::time::sleep(turn).await;
            if matches!(raft.is_initialized().await, Ok(false))
                && let Err(e) = raft.initialize(members).await
            {
                tracing::info!(error = %e, "the cluster was initialised by another monitor");
            }
        });
    }
    let genesis_bytes = bytes::Bytes::from(genesis.encode()?);
    let monitor = Arc::new(Monitor::new(
        config.entity(),
        config.id,
        raft.clone(),
        state,
        endpoint.clone(),
        ca,
        genesis_bytes,
        clock,
    )?);
    tokio::spawn(rpc::serve(endpoint.clone(), monitor.clone(), Limits::default()));
    tokio::spawn(tick_loop(monitor.clone()));
    tokio::spawn(ping_loop(monitor.clone()));
    if !config.join.is_empty() {
        tokio::spawn(join(monitor.clone(), config.clone()));
    }
    tracing::info!(name = %config.name, id = config.id, addr = %config.addr, "monitor started");
    Ok(Running { monitor, raft, endpoint })
}

/// A monitor that was not in the initial quorum asks to be added, until it is a voter.
async fn join(monitor: Arc<Monitor>, config: MonConfig) {
    let peers: Vec<MonNode> = config.join.iter().filter_map(|p| parse_peer(p).ok()).collect();
    let command = proto::Command::MonAdd {
        name: config.name.clone(),
        addr: config.addr.clone(),
        id: config.id,
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        if monitor.voters().contains(&config.id) {
            tracing::info!("joined the quorum");
            return;
        }
        for peer in &peers {
            let Ok(conn) = monitor.connect(peer).await else { continue };
            let request = proto::MonRequest::Command { id: None, command: command.clone() };
            match rpc::call(conn.as_ref(), &request, &[], crate::service::PROPOSE_TIMEOUT * 3).await
            {
                Ok(_) => break,
                // "mon.NAME is already a monitor": an earlier attempt went through.
                Err(e) if e.remote_code() == Some(proto::ErrorCode::AlreadyExists) => break,
                Err(e) => tracing::warn!(peer = %peer, error = %e, "not joined yet"),
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Pings the peers every `PING_INTERVAL`, each round at once, until Raft stops.
async fn ping_loop(monitor: Arc<Monitor>) {
    let mut ticks = tokio::time::interval(PING_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if monitor.raft.metrics().borrow().running_state.is_err() {
            return;
        }
        monitor.ping_peers().await;
    }
}

/// Once a second, and at once when leadership changes: on the leader, confirm the quorum
/// and run failure detection.
async fn tick_loop(monitor: Arc<Monitor>) {
    let mut was_leader = false;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = monitor.raft.metrics();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            // Leadership changes are acted on at once, not at the next tick: a new leader
            // confirms its quorum and hears its peers now, so status is right sooner.
            changed = watch.wait_for(|m| (m.state == ServerState::Leader) != was_leader) => {
                if changed.is_err() {
                    return;
                }
                ticks.reset();
            }
        }
        let metrics = monitor.raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        let leader = metrics.state == ServerState::Leader;
        if leader && !was_leader {
            tracing::info!(term = metrics.current_term, "this monitor leads");
            monitor.became_leader();
        }
        was_leader = leader;
        if leader {
            // Keeps `status` honest about the quorum on an idle cluster.
            let _ = monitor.confirm_quorum().await;
            monitor.failure_tick().await;
        }
    }
}

/// Runs a monitor until SIGINT or SIGTERM (`cairn mon run`).
pub async fn run(dir: &Path) -> Result<()> {
    let pid_path: PathBuf = dir.join(PID_FILE);
    let running = start(open(dir)?).await?;
    std::fs::write(&pid_path, std::process::id().to_string())
        .with_context(|| format!("write {}", pid_path.display()))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut removed = running.monitor.removed.subscribe();
    let mut metrics = running.raft.metrics();
    let mut failure = None;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        Ok(reason) = removed.wait_for(Option::is_some) => {
            tracing::warn!(reason = reason.as_deref().unwrap_or_default(), "stopping");
        }
        // Raft stops for good on a storage error: a monitor that cannot take part any more
        // must not go on answering pings as if it could.
        state = metrics.wait_for(|m| m.running_state.is_err()) => {
            let reason = match state {
                Ok(m) => format!("{:?}", m.running_state),
                Err(_) => "raft is gone".to_owned(),
            };
            tracing::error!(%reason, "raft stopped");
            failure = Some(reason);
        }
    }
    tracing::info!("stopping");
    let _ = running.raft.shutdown().await;
    running.endpoint.close();
    let _ = std::fs::remove_file(&pid_path);
    match failure {
        Some(reason) => bail!("raft stopped: {reason}"),
        None => Ok(()),
    }
}
