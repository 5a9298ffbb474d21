//! A session with the monitors: status, commands and maps, from any monitor that answers.
//!
//! Requests go to the monitor that answered last. Without one, the client hunts: it
//! connects to every monitor at once and keeps the first to answer, so dead monitors cost
//! nothing while one is up. A monitor that answers that it cannot serve right now (no
//! leader during an election, no quorum) is skipped for the round; rounds repeat, with
//! backoff, until the request's deadline. A change carries a request id, so a resend after
//! a lost answer or a leader's death is applied at most once; the few changes without one
//! (identities, monitor membership) are only sent again when they provably did not happen,
//! and one whose commit timed out is reported as such, because it may still commit.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::transport::quic::{QuicEndpoint, Tuning};
use crate::transport::{Connection, Endpoint};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use placement::{Epoch, OsdMap};
use proto::WireRequest;
use proto::message::{ClusterPgStats, MapBundle, StatusReport};
use proto::osd::OsdConfig;
use proto::{
    Command, CommandOutput, EntityName, ErrorCode, MonRequest, RemoteError, Response,
    TransportError,
};
use thiserror::Error;

use crate::config::ClientConfig;
use crate::{maps, rpc};

/// How long a request may take, retries included, unless set otherwise.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(15);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("no monitor reachable within {after_ms} ms; tried {tried}")]
    NoMonitor { after_ms: u64, tried: String },
    /// The cluster refused the request; sending it again will not help.
    #[error("{0}")]
    Refused(RemoteError),
    /// The change was sent but its outcome is unknown.
    #[error("{0}; it may still take effect, check before retrying")]
    Unknown(String),
    #[error("{0}")]
    Setup(String),
    #[error("unexpected answer '{got}' to {request}")]
    Unexpected { request: &'static str, got: &'static str },
    #[error("maps from the monitors: {0}")]
    Maps(String),
}

impl ClientError {
    /// The cluster's error code, when the cluster refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused(e) => Some(e.code),
            _ => None,
        }
    }
}

struct Session {
    /// The monitor to try first, and a connection to it.
    current: usize,
    conn: Option<Arc<dyn Connection>>,
}

pub struct MonClient {
    config: ClientConfig,
    endpoint: Arc<dyn Endpoint>,
    session: Mutex<Session>,
    pub timeout: Duration,
}

impl MonClient {
    /// A client for `config`, on its own QUIC endpoint (call within a tokio runtime).
    pub fn connect(config: ClientConfig) -> Result<MonClient, ClientError> {
        let credentials = config.credentials().map_err(ClientError::Setup)?;
        let any_v6 =
            config.mons.iter().any(|m| m.addr.parse::<SocketAddr>().is_ok_and(|a| a.is_ipv6()));
        let local: SocketAddr =
            if any_v6 { "[::]:0".parse() } else { "0.0.0.0:0".parse() }.expect("literal address");
        let endpoint = QuicEndpoint::bind(local, &credentials, &Tuning::default(), false)
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(MonClient::with_endpoint(config, Arc::new(endpoint)))
    }

    pub fn with_endpoint(config: ClientConfig, endpoint: Arc<dyn Endpoint>) -> MonClient {
        MonClient {
            config,
            endpoint,
            session: Mutex::new(Session { current: 0, conn: None }),
            timeout: REQUEST_TIMEOUT_DEFAULT,
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn endpoint(&self) -> &Arc<dyn Endpoint> {
        &self.endpoint
    }

    /// The session's connection, if it is open and to a monitor not in `skip`.
    fn current(&self, skip: &[bool]) -> Option<(usize, Arc<dyn Connection>)> {
        let session = self.session.lock().expect("session lock");
        let conn = session.conn.as_ref()?;
        (!skip[session.current] && !conn.is_closed()).then(|| (session.current, conn.clone()))
    }

    /// Connects to every monitor not in `skip` at once and keeps the first that answers,
    /// so a dead monitor costs nothing when another is up. Failures land in `errors`.
    async fn hunt(
        &self,
        skip: &[bool],
        left: Duration,
        errors: &mut [String],
    ) -> Option<(usize, Arc<dyn Connection>)> {
        let mut attempts: FuturesUnordered<_> = (0..self.config.mons.len())
            .filter(|&i| !skip[i])
            .map(|index| {
                let mon = &self.config.mons[index];
                let addr: SocketAddr = mon.addr.parse().expect("validated config");
                let entity = EntityName::mon(&mon.name).expect("validated config");
                async move { (index, self.endpoint.connect(addr, &entity).await) }
            })
            .collect();
        let wait = left.min(CONNECT_TIMEOUT);
        let found = tokio::time::timeout(wait, async {
            while let Some((index, result)) = attempts.next().await {
                match result {
                    Ok(conn) => return Some((index, conn)),
                    Err(e) => errors[index] = e.to_string(),
                }
            }
            None
        })
        .await;
        let found = match found {
            Ok(found) => found,
            Err(_) => {
                for (i, error) in errors.iter_mut().enumerate() {
                    if !skip[i] && error.is_empty() {
                        *error = format!("no answer within {} ms", wait.as_millis());
                    }
                }
                None
            }
        }?;
        let mut session = self.session.lock().expect("session lock");
        session.current = found.0;
        session.conn = Some(found.1.clone());
        Some(found)
    }

    /// Sends `request` to the monitors until one answers or the deadline passes. With
    /// `changes` (a resend might apply it twice), only retries when the request provably
    /// did not take effect.
    async fn call(
        &self,
        request: &MonRequest,
        changes: bool,
    ) -> Result<(Response, Bytes), ClientError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let count = self.config.mons.len();
        let mut backoff = BACKOFF_MIN;
        let mut errors: Vec<String> = vec![String::new(); count];
        loop {
            // One round: every monitor at most once.
            let mut tried = vec![false; count];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let found = match self.current(&tried) {
                    Some(found) => Some(found),
                    None => self.hunt(&tried, left, &mut errors).await,
                };
                let Some((index, conn)) = found else { break };
                tried[index] = true;
                let mon = &self.config.mons[index];
                let left = deadline.saturating_duration_since(Instant::now());
                match rpc::call(conn.as_ref(), request, &[], left).await {
                    Ok(answer) => return Ok(answer),
                    Err(TransportError::Remote { error, .. })
                        if error.code.is_retryable() && error.code != ErrorCode::Timeout =>
                    {
                        errors[index] = format!("mon.{}: {error}", mon.name);
                    }
                    Err(TransportError::Remote { error, .. })
                        if changes || !error.code.is_retryable() =>
                    {
                        return Err(match error.code {
                            ErrorCode::Timeout => ClientError::Unknown(error.message),
                            _ => ClientError::Refused(error),
                        });
                    }
                    Err(e) if changes => {
                        self.session.lock().expect("session lock").conn = None;
                        return Err(ClientError::Unknown(format!("mon.{}: {e}", mon.name)));
                    }
                    Err(e) => {
                        self.session.lock().expect("session lock").conn = None;
                        errors[index] = e.to_string();
                    }
                }
            }
            if Instant::now() + backoff >= deadline {
                return Err(self.no_monitor(started, &errors));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// The error for a deadline passed with no monitor answering, naming each one tried.
    fn no_monitor(&self, started: Instant, errors: &[String]) -> ClientError {
        let tried: Vec<String> = self
            .config
            .mons
            .iter()
            .zip(errors)
            .map(|(m, e)| {
                format!(
                    "mon.{} at {} ({})",
                    m.name,
                    m.addr,
                    if e.is_empty() { "not tried" } else { e }
                )
            })
            .collect();
        ClientError::NoMonitor {
            after_ms: started.elapsed().as_millis() as u64,
            tried: tried.join("; "),
        }
    }

    /// A connection to any monitor, hunting (with backoff) until the client's timeout.
    async fn any_monitor(&self) -> Result<Arc<dyn Connection>, ClientError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let skip = vec![false; self.config.mons.len()];
        let mut errors = vec![String::new(); self.config.mons.len()];
        let mut backoff = BACKOFF_MIN;
        loop {
            if let Some((_, conn)) = self.current(&skip) {
                return Ok(conn);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.no_monitor(started, &errors));
            }
            if let Some((_, conn)) = self.hunt(&skip, left, &mut errors).await {
                return Ok(conn);
            }
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Forgets the session's connection, so the next request hunts again.
    fn drop_connection(&self) {
        self.session.lock().expect("session lock").conn = None;
    }

    /// The monitor the session talks to, if it has a connection.
    pub fn current_monitor(&self) -> Option<String> {
        let session = self.session.lock().expect("session lock");
        session.conn.as_ref().map(|_| self.config.mons[session.current].name.clone())
    }

    /// A map kept current by a subscription, starting from `have` (or from nothing).
    pub fn watch(&self, have: Option<OsdMap>) -> MapWatch<'_> {
        MapWatch {
            client: self,
            map: have,
            stream: None,
            queue: Default::default(),
            every_epoch: false,
        }
    }

    /// Like `watch`, but `next` returns every epoch in turn, not just the newest (when the
    /// monitors still have the incrementals): for daemons whose state follows each change
    /// of the map, as an OSD's PG intervals do.
    pub fn watch_every_epoch(&self, have: Option<OsdMap>) -> MapWatch<'_> {
        MapWatch { every_epoch: true, ..self.watch(have) }
    }

    /// Any read-only request, answered as the monitors answer it.
    pub async fn request(&self, request: &MonRequest) -> Result<(Response, Bytes), ClientError> {
        self.call(request, false).await
    }

    pub async fn status(&self) -> Result<StatusReport, ClientError> {
        match self.call(&MonRequest::Status, false).await? {
            (Response::Status(report), _) => Ok(*report),
            (other, _) => Err(ClientError::Unexpected { request: "status", got: other.name() }),
        }
    }

    /// PG states, object counts and OSD usage, as the leader has them.
    pub async fn pg_stats(&self) -> Result<ClusterPgStats, ClientError> {
        match self.call(&MonRequest::GetPgStats, false).await? {
            (Response::PgStats(stats), _) => Ok(*stats),
            (other, _) => Err(ClientError::Unexpected { request: "pg stats", got: other.name() }),
        }
    }

    /// Runs an administrative command; the result once it committed.
    pub async fn command(&self, command: Command) -> Result<CommandOutput, ClientError> {
        let resends_safely = command.resends_safely();
        let request = MonRequest::Command {
            id: resends_safely.then(proto::message::new_request_id),
            command,
        };
        match self.call(&request, !resends_safely).await? {
            (Response::Done(output), _) => Ok(output),
            (other, _) => Err(ClientError::Unexpected { request: "command", got: other.name() }),
        }
    }

    /// Sends a request whose answer is an acknowledgement (OSD messages).
    pub async fn send(&self, request: MonRequest) -> Result<(), ClientError> {
        let name = request.name();
        match self.call(&request, false).await? {
            (Response::Ack, _) => Ok(()),
            (other, _) => Err(ClientError::Unexpected { request: name, got: other.name() }),
        }
    }

    /// An OSD's beacon; the monitors answer with the settings OSDs apply at runtime.
    pub async fn beacon(&self, osd: u32, epoch: Epoch) -> Result<OsdConfig, ClientError> {
        let request = MonRequest::OsdBeacon { osd, epoch };
        match self.call(&request, false).await? {
            (Response::OsdConfig(config), _) => Ok(config),
            (other, _) => {
                Err(ClientError::Unexpected { request: request.name(), got: other.name() })
            }
        }
    }

    /// What `entity` may do (for OSDs checking their clients); `None` if it is unknown.
    pub async fn caps(&self, entity: &EntityName) -> Result<Option<proto::Caps>, ClientError> {
        let request = MonRequest::GetCaps { entity: entity.clone() };
        match self.call(&request, false).await? {
            (Response::Caps(caps), _) => Ok(caps),
            (other, _) => {
                Err(ClientError::Unexpected { request: request.name(), got: other.name() })
            }
        }
    }

    /// The maps after `have`.
    pub async fn get_maps(&self, have: Option<Epoch>) -> Result<(Epoch, MapBundle), ClientError> {
        match self.call(&MonRequest::GetMaps { have }, false).await? {
            (Response::Maps { epoch }, bulk) => {
                Ok((epoch, maps::decode_bundle(&bulk).map_err(ClientError::Maps)?))
            }
            (other, _) => Err(ClientError::Unexpected { request: "get maps", got: other.name() }),
        }
    }

    /// The current map.
    pub async fn map(&self) -> Result<OsdMap, ClientError> {
        let (_, bundle) = self.get_maps(None).await?;
        maps::apply_bundle(None, &bundle).map_err(ClientError::Maps)
    }
}

/// The cluster map, kept current by a subscription to the monitors: each new epoch arrives
/// as the incrementals since the one held (or a full map when the monitors no longer have
/// them). When its monitor goes away it subscribes again at another, from the epoch it has.
pub struct MapWatch<'a> {
    client: &'a MonClient,
    map: Option<OsdMap>,
    stream: Option<rpc::Subscription>,
    /// With `every_epoch`: maps received but not yet returned, oldest first.
    queue: std::collections::VecDeque<OsdMap>,
    every_epoch: bool,
}

impl MapWatch<'_> {
    /// The map held now.
    pub fn map(&self) -> Option<&OsdMap> {
        self.map.as_ref()
    }

    /// Waits for a map newer than the one held (any map, if none is held) and returns it.
    /// Fails only when no monitor can be reached within the client's timeout, or the
    /// cluster refuses the subscription.
    pub async fn next(&mut self) -> Result<&OsdMap, ClientError> {
        let before = self.map.as_ref().map(|m| m.epoch());
        let mut backoff = BACKOFF_MIN;
        loop {
            if let Some(map) = self.queue.pop_front() {
                return Ok(self.map.insert(map));
            }
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let conn = self.client.any_monitor().await?;
                    let have = self.map.as_ref().map(|m| m.epoch());
                    match rpc::Subscription::open(conn.as_ref(), &MonRequest::Subscribe { have })
                        .await
                    {
                        Ok(stream) => self.stream.insert(stream),
                        Err(e) => {
                            self.lost(Some(&e), &mut backoff).await?;
                            continue;
                        }
                    }
                }
            };
            match stream.next().await {
                Ok(Some((Response::Maps { .. }, bulk))) => {
                    backoff = BACKOFF_MIN;
                    let bundle = maps::decode_bundle(&bulk).map_err(ClientError::Maps)?;
                    if self.every_epoch {
                        match maps::apply_bundle_each(self.map.as_ref(), &bundle) {
                            Ok(maps) => {
                                self.queue.extend(maps);
                                continue;
                            }
                            Err(_) => self.stream = None,
                        }
                        continue;
                    }
                    match maps::apply_bundle(self.map.take(), &bundle) {
                        Ok(map) => self.map = Some(map),
                        // A gap: start again from a full map.
                        Err(_) => self.stream = None,
                    }
                    let now = self.map.as_ref().map(|m| m.epoch());
                    if now.is_some() && now > before {
                        return Ok(self.map.as_ref().expect("just checked"));
                    }
                }
                Ok(Some((other, _))) => {
                    return Err(ClientError::Unexpected {
                        request: "subscribe",
                        got: other.name(),
                    });
                }
                // The monitor ended the stream or went away: subscribe elsewhere.
                Ok(None) => self.lost(None, &mut backoff).await?,
                Err(e) => self.lost(Some(&e), &mut backoff).await?,
            }
        }
    }

    /// The subscription ended (with `error`, or cleanly): refusals are final, anything else
    /// is retried elsewhere after a growing pause.
    async fn lost(
        &mut self,
        error: Option<&TransportError>,
        backoff: &mut Duration,
    ) -> Result<(), ClientError> {
        self.stream = None;
        self.client.drop_connection();
        match error {
            Some(TransportError::Remote { error, .. }) if !error.code.is_retryable() => {
                return Err(ClientError::Refused(error.clone()));
            }
            Some(refused @ TransportError::Refused { .. }) => {
                return Err(ClientError::Setup(refused.to_string()));
            }
            _ => {}
        }
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        Ok(())
    }
}
