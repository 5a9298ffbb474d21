//! A monitor's answers to requests: status and maps from its own copy of the state, changes
//! through Raft (forwarded to the leader when it is not the leader), OSD messages to the
//! leader's failure detector, Raft's own RPCs to openraft.
//!
//! Who may ask what: any registered identity may read status and maps; changes need the
//! capabilities `ClusterState::apply` checks; OSD messages only from that very `osd.N`;
//! Raft and forwarding only from monitors. Connections from identities the registry does
//! not know (or whose certificate was replaced) are refused outright.
//!
//! Here: the monitor's state, its quorum and proposals, and the dispatch of requests.
//! `membership` (adding and removing monitors, pinging them), `osds` (the leader's side
//! of OSD messages and failure detection) and `views` (status, maps, subscriptions) are
//! `impl Monitor` blocks of their own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use net::frame::Limits;
use net::identity::ClusterCa;
use net::rpc::{self, Reply};
use net::transport::{BoxFuture, Connection, Endpoint, Peer};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use placement::{Epoch, OsdId, OsdMap};
use proto::clock::Clock;
use proto::message::{
    ClusterPgStats, MonStatus, OsdCounts, OsdMessage, RaftRpc, RequestId, StatusReport,
};
use proto::{
    Access, Command, CommandOutput, EntityKind, EntityName, ErrorCode, MonRequest, RemoteError,
    Response, WireRequest,
};
use tokio::sync::mpsc;

use crate::error::StateError;
use crate::failure::FailureDetector;
use crate::health::{self, DaemonEpoch};
use crate::pgstats::PgStatsTable;
use crate::state::{Issued, LogEntry, OsdEvent};
use crate::store::{MonNode, NodeId, Raft, StateMachine, members};

mod membership;
mod osds;
mod views;

/// How long a forwarded request or a proposal may take.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the leader waits for a majority to confirm its leadership before a change.
const QUORUM_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new monitor may take to catch up as a learner before it is made a voter.
const LEARNER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a follower waits for the leader's answer to a forwarded change: longer than
/// the leader may take itself, so a slow commit is not mistaken for a lost one.
const FORWARD_TIMEOUT: Duration =
    Duration::from_secs(PROPOSE_TIMEOUT.as_secs() + QUORUM_CHECK_TIMEOUT.as_secs() + 1);
/// A leader that has not confirmed a majority for this long reports no quorum.
const QUORUM_STALE_MS: i64 = 3000;
/// How long connecting to another monitor may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a follower waits for the leader's status before answering with its own.
const STATUS_FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Election timeouts a monitor that knows no leader waits for one before it answers a
/// status request itself (two candidates can split the vote once or twice).
const ELECTIONS_AWAITED: u32 = 3;
/// How long a ping may take, connecting included.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest bulk payload a monitor accepts from anyone but another monitor.
const CLIENT_BULK_BYTES_MAX: usize = 64 << 10;
/// Heartbeats a follower may miss before it stops forwarding to the leader.
const LEADER_SILENT_HEARTBEATS: i64 = 4;
/// PG overrides one pg_temp request may carry.
const PG_TEMP_REQUEST_MAX: usize = 4096;
/// Monitors whose liveness is tracked (bounds what unknown monitor identities can add).
const MONITORS_TRACKED_MAX: usize = 64;
/// Daemons whose map epochs are tracked for MAP_EPOCH_LAG.
const DAEMONS_TRACKED_MAX: usize = 1 << 16;

/// What this monitor last heard from each of its peers.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerView {
    /// When it was last heard from, on `Clock::mono_ms`.
    pub last_seen_ms: Option<i64>,
    pub clock_offset_ms: Option<i64>,
    /// The map epoch and map hash its last pong carried.
    pub map: Option<(Epoch, u32)>,
}

pub struct Monitor {
    pub name: String,
    pub entity: EntityName,
    pub node_id: NodeId,
    pub raft: Raft,
    pub state: StateMachine,
    pub endpoint: Arc<dyn Endpoint>,
    /// The CA, to issue identities (`auth add`); every monitor bootstrap made has it.
    pub ca: Option<ClusterCa>,
    /// The genesis file this monitor started from, for monitors that join later.
    pub genesis: Bytes,
    pub clock: Arc<dyn Clock>,
    pub failure: Mutex<FailureDetector>,
    pub peers: Mutex<BTreeMap<String, PeerView>>,
    pub daemons: Mutex<BTreeMap<EntityName, DaemonEpoch>>,
    /// PG and OSD statistics as the OSDs report them (kept by the leader).
    pub pg_stats: Mutex<PgStatsTable>,
    /// When a majority last confirmed this monitor's leadership.
    quorum_confirmed_ms: Mutex<Option<i64>>,
    /// Set, with the reason, once this monitor learns it was removed; the daemon stops.
    pub removed: tokio::sync::watch::Sender<Option<String>>,
    connections: Mutex<HashMap<String, Arc<dyn Connection>>>,
    /// The hash of the current map, computed once per epoch.
    map_hash: Mutex<Option<(Epoch, u32)>>,
}

fn error(code: ErrorCode, message: impl Into<String>) -> RemoteError {
    RemoteError::new(code, message)
}

impl Monitor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        entity: EntityName,
        node_id: NodeId,
        raft: Raft,
        state: StateMachine,
        endpoint: Arc<dyn Endpoint>,
        ca: Option<ClusterCa>,
        genesis: Bytes,
        clock: Arc<dyn Clock>,
    ) -> Result<Monitor, StateError> {
        Ok(Monitor {
            name: entity.id().to_owned(),
            entity,
            node_id,
            raft,
            state,
            endpoint,
            ca,
            genesis,
            failure: Mutex::new(FailureDetector::new(clock.mono_ms())),
            clock,
            peers: Mutex::new(BTreeMap::new()),
            daemons: Mutex::new(BTreeMap::new()),
            pg_stats: Mutex::new(PgStatsTable::default()),
            quorum_confirmed_ms: Mutex::new(None),
            removed: tokio::sync::watch::Sender::new(None),
            connections: Mutex::new(HashMap::new()),
            map_hash: Mutex::new(None),
        })
    }

    /// The voting monitors of the configuration in effect.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    fn leader(&self) -> Option<(NodeId, MonNode)> {
        let metrics = self.raft.metrics().borrow().clone();
        let id = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// A connection to monitor `node`, reused while it lasts.
    pub async fn connect(&self, node: &MonNode) -> Result<Arc<dyn Connection>, RemoteError> {
        if let Some(conn) = self.connections.lock().expect("connections lock").get(&node.name)
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        let unavailable = |reason: String| error(ErrorCode::Unavailable, reason);
        let addr = node
            .addr
            .parse()
            .map_err(|_| unavailable(format!("mon.{} has no valid address", node.name)))?;
        let entity = EntityName::mon(&node.name).map_err(unavailable)?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.endpoint.connect(addr, &entity))
            .await
            .map_err(|_| unavailable(format!("mon.{} at {addr} did not answer", node.name)))?
            .map_err(|e| unavailable(e.to_string()))?;
        self.connections.lock().expect("connections lock").insert(node.name.clone(), conn.clone());
        Ok(conn)
    }

    /// Records that monitor `name` was just heard from.
    fn note_seen(&self, name: &str) {
        let now = self.clock.mono_ms();
        let mut peers = self.peers.lock().expect("peers lock");
        if let Some(view) = peers.get_mut(name) {
            view.last_seen_ms = Some(now);
        } else if peers.len() < MONITORS_TRACKED_MAX {
            peers.insert(
                name.to_owned(),
                PeerView { last_seen_ms: Some(now), ..PeerView::default() },
            );
        }
    }

    /// Whether the leader `name` has been silent for several heartbeats, which means it died
    /// or was cut off and an election is about to follow.
    fn leader_silent(&self, name: &str) -> bool {
        let silent_ms = self.raft.config().heartbeat_interval as i64 * LEADER_SILENT_HEARTBEATS;
        let last = self.peers.lock().expect("peers lock").get(name).and_then(|v| v.last_seen_ms);
        last.is_none_or(|t| self.clock.mono_ms() - t > silent_ms)
    }

    /// Sends `request` to the leader and relays its answer.
    ///
    /// A leader that has gone silent gets nothing: the caller hears at once, with a retryable
    /// error, that an election is under way. If the leader goes silent while it has the
    /// request, the answer is a `Timeout`, because the request may or may not have taken
    /// effect.
    async fn to_leader(
        &self,
        request: MonRequest,
        timeout: Duration,
    ) -> Result<(Response, Bytes), RemoteError> {
        let (_, leader) = self.leader().ok_or_else(|| {
            error(ErrorCode::Unavailable, "no leader: the monitors have no quorum")
        })?;
        let unreachable = |why: &str| {
            error(
                ErrorCode::Unavailable,
                format!(
                    "the leader mon.{} is unreachable ({why}): an election may be under way, or \
                     there is no quorum",
                    leader.name
                ),
            )
        };
        if self.leader_silent(&leader.name) {
            return Err(unreachable("not heard from for several heartbeats"));
        }
        let conn = self.connect(&leader).await.map_err(|e| unreachable(&e.message))?;
        let call = rpc::call(conn.as_ref(), &request, &[], timeout);
        let went_silent = async {
            loop {
                tokio::time::sleep(Duration::from_millis(self.raft.config().heartbeat_interval))
                    .await;
                if self.leader_silent(&leader.name) {
                    return;
                }
            }
        };
        tokio::select! {
            answer = call => answer.map_err(|e| match e {
                proto::TransportError::Remote { error, .. } => error,
                // Never sent: safe to try elsewhere.
                e @ (proto::TransportError::Connect { .. } | proto::TransportError::Refused { .. }) => {
                    unreachable(&e.to_string())
                }
                // Sent, perhaps received: the outcome is unknown.
                other => error(
                    ErrorCode::Timeout,
                    format!(
                        "leader mon.{}: {other}; the request may or may not have taken effect",
                        leader.name
                    ),
                ),
            }),
            () = went_silent => Err(error(
                ErrorCode::Timeout,
                format!(
                    "the leader mon.{} went silent while handling the request; it may or may \
                     not have taken effect",
                    leader.name
                ),
            )),
        }
    }

    /// Confirms, by a round of heartbeats, that a majority still follows this leader.
    /// Openraft keeps a leader that lost its majority in office; without this check it
    /// would append changes that cannot commit now and might commit much later.
    pub async fn confirm_quorum(&self) -> Result<(), RemoteError> {
        let no_quorum = || {
            error(
                ErrorCode::Unavailable,
                format!(
                    "no quorum: mon.{} cannot reach a majority of the monitors; nothing was changed",
                    self.name
                ),
            )
        };
        match tokio::time::timeout(QUORUM_CHECK_TIMEOUT, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {
                *self.quorum_confirmed_ms.lock().expect("quorum lock") = Some(self.clock.mono_ms());
                Ok(())
            }
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                _,
            )))) => Err(error(ErrorCode::NotLeader, "leadership changed; retry")),
            Ok(Err(_)) | Err(_) => Err(no_quorum()),
        }
    }

    /// Whether there is a leader with a majority, as far as this monitor knows.
    fn has_quorum(&self, metrics: &openraft::RaftMetrics<NodeId, MonNode>) -> bool {
        match metrics.current_leader {
            Some(leader) if leader == self.node_id => self
                .quorum_confirmed_ms
                .lock()
                .expect("quorum lock")
                .is_some_and(|at| self.clock.mono_ms() - at <= QUORUM_STALE_MS),
            // A follower believes in a leader it hears from.
            Some(leader) => metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .is_some_and(|node| !self.leader_silent(&node.name)),
            None => false,
        }
    }

    /// Appends `entry` to the log and waits for its result (leader only).
    async fn propose(&self, entry: LogEntry) -> Result<CommandOutput, RemoteError> {
        self.confirm_quorum().await?;
        let write = self.raft.client_write(entry);
        match tokio::time::timeout(PROPOSE_TIMEOUT, write).await {
            Err(_) => {
                Err(error(ErrorCode::Timeout, "the change did not commit in time (no quorum?)"))
            }
            Ok(Ok(response)) => response.data,
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(error(ErrorCode::NotLeader, "leadership changed; retry"))
            }
            Ok(Err(e)) => Err(error(ErrorCode::Unavailable, e.to_string())),
        }
    }

    /// A command from `origin`, on the leader.
    async fn execute(
        &self,
        origin: EntityName,
        id: Option<RequestId>,
        command: Command,
    ) -> Result<(Response, Bytes), RemoteError> {
        if !self.is_leader() {
            return self
                .to_leader(MonRequest::Forward { origin, id, command }, FORWARD_TIMEOUT)
                .await;
        }
        let at_ms = self.clock.now_ms();
        let output = match command {
            Command::MonAdd { name, addr, id } => self.mon_add(&origin, name, addr, id).await?,
            Command::MonRemove { name } => self.mon_remove(&origin, &name).await?,
            Command::AuthAdd { ref entity, .. } => {
                let ca = self.ca.as_ref().ok_or_else(|| {
                    error(
                        ErrorCode::Unsupported,
                        format!("mon.{} does not hold the cluster CA", self.name),
                    )
                })?;
                let credentials =
                    ca.issue(entity).map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
                let fingerprint = credentials
                    .fingerprint()
                    .map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
                let issued = Some(Issued { entity: entity.clone(), fingerprint });
                self.propose(LogEntry::Command {
                    origin,
                    id: None,
                    command: command.clone(),
                    issued,
                    at_ms,
                })
                .await?;
                CommandOutput::Identity {
                    entity: credentials.entity,
                    ca_pem: credentials.ca_pem,
                    cert_pem: credentials.cert_pem,
                    key_pem: credentials.key_pem,
                }
            }
            // A read, linearizable without a log entry: this leader still leads.
            Command::AuthList => {
                self.confirm_quorum().await?;
                self.state.read(|a| {
                    a.state.authorize(&origin, &Command::AuthList).map(|()| a.state.identities())
                })?
            }
            command => {
                let id = id.filter(|_| command.resends_safely());
                self.propose(LogEntry::Command { origin, id, command, issued: None, at_ms }).await?
            }
        };
        Ok((Response::Done(output), Bytes::new()))
    }

    fn require_admin(&self, origin: &EntityName) -> Result<(), RemoteError> {
        let allowed = origin.kind() == EntityKind::Mon
            || self.state.read(|a| {
                a.state.registry().get(origin).is_some_and(|i| i.caps.allows_mon(Access::All))
            });
        if allowed {
            Ok(())
        } else {
            Err(error(ErrorCode::PermissionDenied, format!("{origin} lacks mon 'allow *'")))
        }
    }

    async fn raft_rpc(&self, kind: RaftRpc, bulk: Bytes) -> Result<(Response, Bytes), RemoteError> {
        let malformed =
            |e: postcard::Error| error(ErrorCode::Malformed, format!("raft {kind:?}: {e}"));
        let encoded = match kind {
            RaftRpc::AppendEntries => postcard::to_stdvec(
                &self.raft.append_entries(postcard::from_bytes(&bulk).map_err(malformed)?).await,
            ),
            RaftRpc::Vote => postcard::to_stdvec(
                &self.raft.vote(postcard::from_bytes(&bulk).map_err(malformed)?).await,
            ),
            RaftRpc::InstallSnapshot => postcard::to_stdvec(
                &self.raft.install_snapshot(postcard::from_bytes(&bulk).map_err(malformed)?).await,
            ),
        };
        let bulk = encoded.map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
        Ok((Response::Raft, Bytes::from(bulk)))
    }

    async fn dispatch(
        self: Arc<Self>,
        peer: Peer,
        request: MonRequest,
        bulk: Bytes,
    ) -> Result<Reply, RemoteError> {
        let from_monitor = peer.entity.kind() == EntityKind::Mon;
        let reply = |(response, bulk)| Reply::One(response, bulk);
        if from_monitor {
            self.note_seen(peer.entity.id());
        }
        match request {
            MonRequest::Ping { sent_ms } => Ok(Reply::ok(self.pong(&peer, sent_ms))),
            MonRequest::Status => Ok(self.status_reply(from_monitor).await),
            MonRequest::GetMaps { have } => {
                if let Some(have) = have {
                    self.note_epoch(&peer.entity, have);
                }
                self.maps(have).map(reply)
            }
            MonRequest::Subscribe { have } => Ok(self.subscribe(have)),
            MonRequest::Command { id, command } => {
                self.execute(peer.entity, id, command).await.map(reply)
            }
            ref request @ (MonRequest::OsdBoot { .. }
            | MonRequest::OsdBeacon { .. }
            | MonRequest::OsdFailure { .. }
            | MonRequest::PgStats { .. }
            | MonRequest::PgTemp { .. }) => {
                let message = OsdMessage::from_request(request).expect("an OSD request");
                self.osd_message(peer.entity, message).await.map(reply)
            }
            request @ (MonRequest::Raft(_)
            | MonRequest::Forward { .. }
            | MonRequest::ForwardOsd { .. }) => self.monitors_only(&peer, request, bulk).await,
            MonRequest::GetGenesis => {
                self.require_admin(&peer.entity)?;
                let ca_key_pem = self.ca.as_ref().map(|ca| ca.key_pem().to_owned());
                Ok(Reply::One(Response::Genesis { ca_key_pem }, self.genesis.clone()))
            }
            MonRequest::GetPgStats => Ok(self.pg_stats_reply(from_monitor).await),
            // OSDs check their clients' caps; nobody else needs another identity's.
            MonRequest::GetCaps { entity } => {
                if peer.entity.kind() != EntityKind::Osd && !from_monitor {
                    return Err(error(
                        ErrorCode::PermissionDenied,
                        format!("{} may not read other identities' caps", peer.entity),
                    ));
                }
                let caps =
                    self.state.read(|a| a.state.registry().get(&entity).map(|i| i.caps.clone()));
                Ok(Reply::ok(Response::Caps(caps)))
            }
        }
    }

    fn pong(&self, peer: &Peer, sent_ms: i64) -> Response {
        let (epoch, map_hash) = self.state.read(|a| {
            let map = a.state.map();
            (map.epoch(), self.map_hash(map))
        });
        Response::Pong {
            sent_ms,
            now_ms: self.clock.now_ms(),
            from: self.entity.clone(),
            removed_at: self.removed_at(&peer.entity),
            epoch,
            map_hash,
        }
    }

    /// The leader's view is the complete one (failure detection and daemons' beacons live
    /// there); a monitor answers for itself when there is none to ask. One that knows no
    /// leader yet (it just started, or lost an election) gives the election a moment, as
    /// Ceph's monitors serve clients only in a quorum.
    async fn status_reply(&self, from_monitor: bool) -> Reply {
        if !from_monitor && !self.is_leader() {
            let election = Duration::from_millis(self.raft.config().election_timeout_max);
            let _ = self
                .raft
                .wait(Some(election * ELECTIONS_AWAITED))
                .metrics(|m| m.current_leader.is_some(), "a leader")
                .await;
            if let Ok((response, bulk)) =
                self.to_leader(MonRequest::Status, STATUS_FORWARD_TIMEOUT).await
            {
                return Reply::One(response, bulk);
            }
        }
        Reply::ok(Response::Status(Box::new(self.status())))
    }

    /// PG statistics live on the leader; a monitor answers with its own when it cannot ask.
    async fn pg_stats_reply(&self, from_monitor: bool) -> Reply {
        if !from_monitor
            && !self.is_leader()
            && let Ok((response, bulk)) =
                self.to_leader(MonRequest::GetPgStats, STATUS_FORWARD_TIMEOUT).await
        {
            return Reply::One(response, bulk);
        }
        Reply::ok(Response::PgStats(Box::new(self.pg_stats_view())))
    }

    /// Raft's messages and forwarded requests, which only monitors send. A request is
    /// forwarded once only: a monitor that is no longer the leader says so, and the
    /// client tries again, rather than monitors passing the request around.
    async fn monitors_only(
        &self,
        peer: &Peer,
        request: MonRequest,
        bulk: Bytes,
    ) -> Result<Reply, RemoteError> {
        let reply = |(response, bulk)| Reply::One(response, bulk);
        if peer.entity.kind() != EntityKind::Mon {
            return Err(error(
                ErrorCode::PermissionDenied,
                format!("{} is not a monitor", peer.entity),
            ));
        }
        if !matches!(request, MonRequest::Raft(_)) && !self.is_leader() {
            let why = format!("mon.{} no longer leads; retry", self.name);
            return Err(error(ErrorCode::NotLeader, why));
        }
        match request {
            MonRequest::Raft(kind) => self.raft_rpc(kind, bulk).await.map(reply),
            MonRequest::Forward { origin, id, command } => {
                self.execute(origin, id, command).await.map(reply)
            }
            MonRequest::ForwardOsd { origin, message } => {
                self.osd_message(origin, message).await.map(reply)
            }
            other => unreachable!("{} is not a monitor's request", other.name()),
        }
    }
}

impl rpc::Service for Monitor {
    type Request = MonRequest;

    fn admit(&self, peer: &Peer) -> Result<(), RemoteError> {
        Ok(self.state.read(|a| a.state.admit(&peer.entity, peer.fingerprint.as_ref()))?)
    }

    /// Only monitors send bulk payloads (Raft's messages); anyone else's requests are
    /// small, so a client cannot make a monitor buffer a map-sized payload.
    fn limits(&self, peer: &Peer, default: Limits) -> Limits {
        if peer.entity.kind() == EntityKind::Mon {
            default
        } else {
            Limits { bulk_bytes_max: CLIENT_BULK_BYTES_MAX, ..default }
        }
    }

    fn handle(
        self: Arc<Self>,
        peer: Peer,
        request: MonRequest,
        bulk: Bytes,
    ) -> BoxFuture<'static, Reply> {
        Box::pin(async move {
            let name = request.name();
            match self.dispatch(peer.clone(), request, bulk).await {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::debug!(peer = %peer.entity, request = name, error = %e, "request failed");
                    Reply::from(e)
                }
            }
        })
    }
}
