//! In-process connections for tests: endpoints registered in a `MemoryNetwork` by address,
//! streams as in-memory pipes, identities given at bind time instead of proven by TLS.
//! Everything above the transport (framing, RPC, authorisation by identity) runs unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{BoxFuture, Connection, Endpoint, Peer, RecvHalf, SendHalf};
use proto::entity::EntityName;
use proto::error::TransportError;

/// Bytes buffered in each direction of an in-memory stream.
const PIPE_BYTES: usize = 1 << 20;
/// Connections waiting to be accepted, and streams waiting per connection.
const BACKLOG: usize = 1024;

/// A bound endpoint as the network sees it: who it is, and where its connections go.
type Listener = (EntityName, mpsc::Sender<Arc<MemoryConnection>>);

/// The address space in-memory endpoints bind in.
#[derive(Default)]
pub struct MemoryNetwork {
    listeners: Mutex<HashMap<SocketAddr, Listener>>,
}

impl MemoryNetwork {
    pub fn new() -> Arc<MemoryNetwork> {
        Arc::new(MemoryNetwork::default())
    }
}

pub struct MemoryEndpoint {
    network: Arc<MemoryNetwork>,
    addr: SocketAddr,
    entity: EntityName,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Arc<MemoryConnection>>>,
}

impl MemoryEndpoint {
    /// Binds `addr` in `network` as `entity`; refused if the address is taken.
    pub fn bind(
        network: &Arc<MemoryNetwork>,
        addr: SocketAddr,
        entity: EntityName,
    ) -> Result<MemoryEndpoint, TransportError> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let mut listeners = network.listeners.lock().expect("network lock");
        if listeners.contains_key(&addr) {
            return Err(TransportError::Setup(format!("{addr} is already bound")));
        }
        listeners.insert(addr, (entity.clone(), tx));
        Ok(MemoryEndpoint {
            network: network.clone(),
            addr,
            entity,
            incoming: tokio::sync::Mutex::new(rx),
        })
    }
}

impl Endpoint for MemoryEndpoint {
    fn connect(
        &self,
        addr: SocketAddr,
        server: &EntityName,
    ) -> BoxFuture<'_, Result<Arc<dyn Connection>, TransportError>> {
        let server = server.clone();
        Box::pin(async move {
            let found = self.network.listeners.lock().expect("network lock").get(&addr).cloned();
            let (entity, listener) = found.ok_or_else(|| TransportError::Connect {
                peer: server.to_string(),
                addr: addr.to_string(),
                reason: "nothing listens there".into(),
            })?;
            if entity != server {
                return Err(TransportError::Refused {
                    peer: server.to_string(),
                    reason: format!("it is {entity}"),
                });
            }
            let (ours, theirs) = MemoryConnection::pair(
                Peer { entity, fingerprint: None, addr },
                Peer { entity: self.entity.clone(), fingerprint: None, addr: self.addr },
            );
            listener.send(theirs).await.map_err(|_| TransportError::Connect {
                peer: server.to_string(),
                addr: addr.to_string(),
                reason: "the endpoint closed".into(),
            })?;
            Ok(ours as Arc<dyn Connection>)
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<Arc<dyn Connection>>> {
        Box::pin(async move {
            let conn = self.incoming.lock().await.recv().await?;
            Some(conn as Arc<dyn Connection>)
        })
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn close(&self) {
        self.network.listeners.lock().expect("network lock").remove(&self.addr);
    }
}

pub struct MemoryConnection {
    peer: Peer,
    /// Streams this side opens, delivered to the other side's `accept`.
    outgoing: mpsc::Sender<(SendHalf, RecvHalf)>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<(SendHalf, RecvHalf)>>,
    /// Shared by both sides: closing either closes both.
    closed: Arc<AtomicBool>,
    close_reason: Arc<Mutex<String>>,
}

impl MemoryConnection {
    fn pair(our_peer: Peer, their_peer: Peer) -> (Arc<MemoryConnection>, Arc<MemoryConnection>) {
        let (to_them, from_us) = mpsc::channel(BACKLOG);
        let (to_us, from_them) = mpsc::channel(BACKLOG);
        let closed = Arc::new(AtomicBool::new(false));
        let reason = Arc::new(Mutex::new(String::new()));
        let ours = MemoryConnection {
            peer: our_peer,
            outgoing: to_them,
            incoming: tokio::sync::Mutex::new(from_them),
            closed: closed.clone(),
            close_reason: reason.clone(),
        };
        let theirs = MemoryConnection {
            peer: their_peer,
            outgoing: to_us,
            incoming: tokio::sync::Mutex::new(from_us),
            closed,
            close_reason: reason,
        };
        (Arc::new(ours), Arc::new(theirs))
    }
}

impl Connection for MemoryConnection {
    fn peer(&self) -> &Peer {
        &self.peer
    }

    fn open(&self) -> BoxFuture<'_, Result<(SendHalf, RecvHalf), TransportError>> {
        Box::pin(async move {
            let closed = || TransportError::Closed {
                peer: self.peer.entity.to_string(),
                reason: self.close_reason.lock().expect("reason lock").clone(),
            };
            if self.closed.load(Ordering::Acquire) {
                return Err(closed());
            }
            let (a, b) = tokio::io::duplex(PIPE_BYTES);
            let (a_read, a_write) = tokio::io::split(a);
            let (b_read, b_write) = tokio::io::split(b);
            self.outgoing
                .send((Box::new(b_write) as SendHalf, Box::new(b_read) as RecvHalf))
                .await
                .map_err(|_| closed())?;
            Ok((Box::new(a_write) as SendHalf, Box::new(a_read) as RecvHalf))
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<(SendHalf, RecvHalf)>> {
        Box::pin(async move {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            self.incoming.lock().await.recv().await
        })
    }

    fn close(&self, reason: &str) {
        *self.close_reason.lock().expect("reason lock") = reason.to_owned();
        self.closed.store(true, Ordering::Release);
    }

    fn close_error(&self) -> Option<TransportError> {
        if !self.closed.load(Ordering::Acquire) {
            return None;
        }
        let reason = self.close_reason.lock().expect("reason lock").clone();
        Some(TransportError::Refused { peer: self.peer.entity.to_string(), reason })
    }
}
