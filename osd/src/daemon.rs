//! The OSD daemon: its directory, start-up, the map loop that drives every PG, the beacon,
//! and the service that routes requests to PG tasks.
//!
//! A directory holds `osd.toml` (id, address), `client.toml` (the monitors, this OSD's
//! identity), its credentials, and `store/` (RocksDB).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use client::osd_conn::OsdConnections;
use client::{ClientConfig, MonClient};
use objectstore::{KvObjectStore, ObjectStore};
use placement::{Epoch, OsdId, OsdMap, PgId};
use proto::error::{ErrorCode, RemoteError};
use proto::frame::Limits;
use proto::message::{Request, Response};
use proto::osd::OSD_BULK_BYTES_MAX;
use proto::rpc::{self, Reply};
use proto::transport::quic::{QuicEndpoint, Tuning};
use proto::transport::{BoxFuture, Endpoint, Peer};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::pg::actor::{self, ClientOp, Event, Pg, Shared};
use crate::rocks::RocksEngine;

pub const CONFIG_FILE: &str = "osd.toml";
pub const CLIENT_FILE: &str = "client.toml";
/// How often the OSD tells the monitors it is alive.
pub const BEACON_INTERVAL: Duration = Duration::from_secs(2);
/// How long a request waits for this OSD's map to reach the epoch it names.
pub const MAP_WAIT: Duration = Duration::from_secs(5);
/// How long a client op may wait inside the OSD (peering, recovery, replication).
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Recovery pushes and pulls at once on one OSD.
pub const RECOVERY_ACTIVE_MAX: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsdConfig {
    pub id: u32,
    /// Where it serves clients and peers (`ip:port`).
    pub addr: String,
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

pub struct Osd {
    shared: Arc<Shared>,
    pgs: Mutex<HashMap<PgId, mpsc::Sender<Event>>>,
    map: watch::Receiver<Option<Arc<OsdMap>>>,
}

impl Osd {
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

    /// The task of a PG, started if this OSD has none for it yet.
    fn pg(&self, pg: PgId, map: &Arc<OsdMap>) -> mpsc::Sender<Event> {
        let mut pgs = self.pgs.lock().expect("pgs lock");
        pgs.entry(pg).or_insert_with(|| Pg::spawn(pg, self.shared.clone(), map.clone())).clone()
    }

    /// Hands a new map to every PG this OSD serves or holds. Every PG must see every map
    /// (a missed one could leave it in an ended interval), so this waits for room in a
    /// busy PG's inbox rather than dropping the map.
    async fn apply_map(&self, map: &Arc<OsdMap>) {
        let me = OsdId(self.shared.me);
        for pool in map.contents().pools.values() {
            for pg in map.pgs(pool) {
                let Ok(mapping) = map.pg_mapping(pg) else { continue };
                if mapping.up.contains(me) || mapping.acting.contains(me) {
                    self.pg(pg, map);
                }
            }
        }
        let senders: Vec<mpsc::Sender<Event>> =
            self.pgs.lock().expect("pgs lock").values().cloned().collect();
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
        match tokio::time::timeout(OP_TIMEOUT, rx).await {
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

    async fn dispatch(
        &self,
        peer: Peer,
        request: Request,
        bulk: Bytes,
    ) -> Result<(Response, Bytes), RemoteError> {
        match request {
            Request::Ping { sent_ms } => Ok((
                Response::Pong {
                    sent_ms,
                    now_ms: actor::now_ms(),
                    from: format!("osd.{}", self.shared.me).parse().expect("osd name"),
                    removed_at: None,
                },
                Bytes::new(),
            )),
            Request::ObjectOps { pg, epoch, reqid, object, ops } => {
                if ops.is_empty() || ops.len() > proto::osd::OPS_PER_REQUEST_MAX {
                    return Err(RemoteError::new(
                        ErrorCode::Invalid,
                        format!("a request carries 1 to {} ops", proto::osd::OPS_PER_REQUEST_MAX),
                    ));
                }
                let client = peer.entity.to_string();
                self.ask(pg, epoch, |reply| {
                    Event::Client(ClientOp { client, reqid, epoch, object, ops, bulk, reply })
                })
                .await
            }
            Request::ListObjects { pg, epoch, after, max } => {
                self.ask(pg, epoch, |reply| Event::List { after, max, reply }).await
            }
            Request::Peer { pg, epoch, interval, request } => {
                if peer.entity.osd_id().is_none() {
                    return Err(RemoteError::new(
                        ErrorCode::PermissionDenied,
                        format!("{} is not an OSD", peer.entity),
                    ));
                }
                self.ask(pg, epoch, |reply| Event::Peer { interval, request, bulk, reply }).await
            }
            other => Err(RemoteError::new(
                ErrorCode::Unsupported,
                format!("an OSD does not serve {}", other.name()),
            )),
        }
    }
}

struct Service(Arc<Osd>);

impl rpc::Service for Service {
    /// The transport proved the peer's certificate is the cluster CA's.
    fn admit(&self, _peer: &Peer) -> Result<(), String> {
        Ok(())
    }

    fn limits(&self, _peer: &Peer, default: Limits) -> Limits {
        Limits { bulk_bytes_max: OSD_BULK_BYTES_MAX, ..default }
    }

    fn handle(
        self: Arc<Self>,
        peer: Peer,
        request: Request,
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

/// Runs the OSD in `dir` until the process is stopped.
pub async fn run(dir: &Path) -> anyhow::Result<()> {
    let config = OsdConfig::load(dir)?;
    let client_config =
        ClientConfig::load(&dir.join(CLIENT_FILE)).context("load the OSD's client.toml")?;
    let credentials = client_config.credentials().map_err(anyhow::Error::msg)?;
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
    let store: Arc<dyn ObjectStore> = Arc::new(KvObjectStore::new(engine));
    let addr: SocketAddr = config.addr.parse()?;
    let endpoint: Arc<dyn Endpoint> = Arc::new(
        QuicEndpoint::bind(addr, &credentials, &Tuning::default(), true)
            .with_context(|| format!("listen on {addr}"))?,
    );
    let shared = Arc::new(Shared {
        me: config.id,
        store,
        conns: Arc::new(OsdConnections::new(endpoint.clone())),
        recovery: Arc::new(Semaphore::new(RECOVERY_ACTIVE_MAX)),
    });
    let (map_tx, map_rx) = watch::channel(None);
    let osd = Arc::new(Osd { shared, pgs: Mutex::new(HashMap::new()), map: map_rx });
    tokio::spawn(rpc::serve(endpoint.clone(), Arc::new(Service(osd.clone())), Limits::default()));
    let mon = Arc::new(MonClient::with_endpoint(client_config, endpoint));
    // The first map, then boot: PGs that already exist here start from it.
    let first = mon.map().await.context("fetch the map from the monitors")?;
    let first = Arc::new(first);
    map_tx.send_replace(Some(first.clone()));
    for c in osd.shared.store.collections()? {
        if first.pool(c.pg.pool).is_some_and(|p| c.pg.seed < p.pg_num) {
            osd.pg(c.pg, &first);
        }
    }
    osd.apply_map(&first).await;
    mon.send(Request::OsdBoot { osd: config.id, addr: config.addr.clone() })
        .await
        .context("boot")?;
    tracing::info!(osd = config.id, %addr, epoch = %first.epoch(), "booted");
    let beacon = {
        let (mon, osd) = (mon.clone(), osd.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(BEACON_INTERVAL);
            loop {
                tick.tick().await;
                let epoch = osd.current_map().map(|m| m.epoch()).unwrap_or_default();
                if let Err(e) = mon.send(Request::OsdBeacon { osd: osd.shared.me, epoch }).await {
                    tracing::warn!(error = %e, "beacon failed");
                }
            }
        })
    };
    let mut watch = mon.watch(Some((*first).clone()));
    let me = OsdId(config.id);
    loop {
        tokio::select! {
            next = watch.next() => {
                let map = Arc::new(next.context("follow the map")?.clone());
                // Marked down while alive (a false failure report): boot again.
                if map.osd(me).is_some_and(|s| !s.up) && map.epoch() > first.epoch() {
                    let _ = mon.send(Request::OsdBoot { osd: config.id, addr: config.addr.clone() }).await;
                }
                map_tx.send_replace(Some(map.clone()));
                osd.apply_map(&map).await;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    beacon.abort();
    osd.shared.store.sync()?;
    Ok(())
}
