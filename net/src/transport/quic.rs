//! QUIC between processes: quinn over UDP, mutual TLS 1.3 with the cluster's certificates.
//!
//! QUIC costs more CPU per byte than TCP (~3-4 vs ~0.3 CPU-s per GiB on loopback with
//! 1,452-byte packets), so the defaults here are tuned for throughput on a LAN: packets up
//! to 6,000 bytes where the path allows (halves the CPU per byte), large flow-control
//! windows so one stream can fill a fast link, large socket buffers so bursts are not
//! dropped, GSO/GRO (on by default in quinn-udp on Linux), connections reused for many
//! streams. `transport-bench` measures the result against plain TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;

use super::{BoxFuture, Connection, Endpoint, Peer, RecvHalf, SendHalf};
use crate::identity::{Credentials, peer_identity};
use proto::entity::EntityName;
use proto::error::TransportError;

/// The application error code a server closes a refused connection with.
const REFUSED: VarInt = VarInt::from_u32(1);

/// Transport settings; the defaults suit a data-centre LAN.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Bytes one stream may have in flight unacknowledged.
    pub stream_window_bytes: u32,
    /// Bytes all streams of a connection may have in flight.
    pub connection_window_bytes: u32,
    /// Kernel socket buffer size, each way.
    pub socket_buffer_bytes: usize,
    /// Streams a peer may have open at once on one connection.
    pub streams_max: u32,
    pub keep_alive: Duration,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// The largest UDP payload this endpoint sends or accepts. Path MTU discovery starts at
    /// 1200 bytes and probes up to this, so it only helps where the path allows it
    /// (loopback, jumbo-frame LANs); a 1500-byte Ethernet stays at ~1450.
    pub udp_payload_max_bytes: u16,
    /// The round-trip time assumed before one is measured. It sets how soon a lost
    /// handshake packet is sent again (about 3x this), e.g. the first one to a daemon that
    /// was still starting; quinn's default of 333 ms suits the internet, not a LAN.
    pub initial_rtt: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            stream_window_bytes: 16 << 20,
            connection_window_bytes: 64 << 20,
            socket_buffer_bytes: 8 << 20,
            streams_max: 1024,
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            udp_payload_max_bytes: UDP_PAYLOAD_MAX_DEFAULT,
            initial_rtt: Duration::from_millis(30),
        }
    }
}

/// Bigger packets are the one setting that cuts QUIC's CPU per byte substantially (about
/// half at 6,000 bytes on loopback, bench/RESULTS.md). The cap stays under 64 KiB / 10:
/// with segmentation offload quinn sends 10 packets per `sendmsg`, and a batch over 64 KiB
/// fails with EMSGSIZE, which quinn takes for loss and answers by dropping to 1,200 bytes.
const UDP_PAYLOAD_MAX_DEFAULT: u16 = 6_000;

impl Tuning {
    fn transport(&self) -> Result<Arc<TransportConfig>, TransportError> {
        self.transport_config().map(Arc::new)
    }

    /// quinn's transport settings for this tuning (public so benchmarks can start from
    /// exactly what the endpoints use and vary one setting).
    pub fn transport_config(&self) -> Result<TransportConfig, TransportError> {
        let mut t = TransportConfig::default();
        t.stream_receive_window(VarInt::from_u32(self.stream_window_bytes));
        t.receive_window(VarInt::from_u32(self.connection_window_bytes));
        t.send_window(u64::from(self.connection_window_bytes));
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.streams_max));
        t.max_concurrent_uni_streams(VarInt::from_u32(0));
        t.keep_alive_interval(Some(self.keep_alive));
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| TransportError::Setup(format!("idle timeout: {e}")))?;
        t.max_idle_timeout(Some(idle));
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.udp_payload_max_bytes);
        t.mtu_discovery_config(Some(mtu));
        t.initial_rtt(self.initial_rtt);
        Ok(t)
    }
}

/// How long a peer has to finish its handshake once its first packet arrived.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections handshaken but not yet taken by `accept`.
const ACCEPT_QUEUE: usize = 64;

/// A QUIC endpoint that both accepts and makes connections as one entity.
pub struct QuicEndpoint {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    entity: EntityName,
    /// Authenticated incoming connections, fed by the handshake task (servers only).
    accepted: Option<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Arc<dyn Connection>>>>,
}

impl QuicEndpoint {
    /// Binds `addr` (port 0 for any) with `credentials`; `accept_connections` makes it a
    /// server as well as a client. Must be called inside a tokio runtime: a server runs its
    /// handshakes on tasks of their own, so that a peer that stalls or gives up halfway
    /// through one (a client hunting for a monitor drops the losers) delays nobody else.
    pub fn bind(
        addr: SocketAddr,
        credentials: &Credentials,
        tuning: &Tuning,
        accept_connections: bool,
    ) -> Result<QuicEndpoint, TransportError> {
        let setup = |what: &str| {
            let what = what.to_owned();
            move |e: &dyn std::fmt::Display| TransportError::Setup(format!("{what}: {e}"))
        };
        let transport = tuning.transport()?;
        let client_tls = credentials.client_tls().map_err(|e| setup("client TLS")(&e))?;
        let client_crypto =
            QuicClientConfig::try_from(client_tls).map_err(|e| setup("client TLS")(&e))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport.clone());
        let server = if accept_connections {
            let tls = credentials.server_tls().map_err(|e| setup("server TLS")(&e))?;
            let crypto = QuicServerConfig::try_from(tls).map_err(|e| setup("server TLS")(&e))?;
            let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
            server.transport_config(transport);
            Some(server)
        } else {
            None
        };
        let socket = udp_socket(addr, tuning.socket_buffer_bytes)
            .map_err(|e| TransportError::Setup(format!("bind {addr}: {e}")))?;
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(tuning.udp_payload_max_bytes.max(1_472))
            .map_err(|e| TransportError::Setup(format!("UDP payload size: {e}")))?;
        let endpoint =
            quinn::Endpoint::new(endpoint_config, server, socket, Arc::new(quinn::TokioRuntime))
                .map_err(|e| TransportError::Setup(format!("bind {addr}: {e}")))?;
        let accepted = if accept_connections {
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|_| TransportError::Setup("a QUIC server needs a tokio runtime".into()))?;
            let (queue, accepted) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
            runtime.spawn(handshakes(endpoint.clone(), queue));
            Some(tokio::sync::Mutex::new(accepted))
        } else {
            None
        };
        Ok(QuicEndpoint { endpoint, client, entity: credentials.entity.clone(), accepted })
    }

    pub fn entity(&self) -> &EntityName {
        &self.entity
    }
}

fn udp_socket(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Accepts incoming connections until the endpoint closes, each handshake on its own task,
/// and queues the authenticated ones.
async fn handshakes(
    endpoint: quinn::Endpoint,
    queue: tokio::sync::mpsc::Sender<Arc<dyn Connection>>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let queue = queue.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let Some(conn) = super::handshake(remote, HANDSHAKE_TIMEOUT, incoming).await else {
                return;
            };
            match peer_of(&conn) {
                Ok(peer) => {
                    let conn = Arc::new(QuicConnection { conn, peer }) as Arc<dyn Connection>;
                    // A full queue means nobody accepts: the server is shutting down.
                    let _ = queue.send(conn).await;
                }
                Err(reason) => {
                    tracing::warn!(%remote, %reason, "refused a connection");
                    conn.close(REFUSED, reason.as_bytes());
                }
            }
        });
    }
}

/// The verified identity of a connection's peer.
fn peer_of(conn: &quinn::Connection) -> Result<Peer, String> {
    let identity = conn.peer_identity().ok_or("the peer presented no certificate")?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "the peer's identity is not a certificate chain".to_owned())?;
    let leaf = chain.first().ok_or("the peer presented an empty certificate chain")?;
    let (entity, fingerprint) = peer_identity(leaf).map_err(|e| e.to_string())?;
    Ok(Peer { entity, fingerprint: Some(fingerprint), addr: conn.remote_address() })
}

/// Turns a QUIC connection error into what the caller can act on.
fn connection_error(peer: &str, error: ConnectionError) -> TransportError {
    match error {
        ConnectionError::ApplicationClosed(close) if close.error_code == REFUSED => {
            TransportError::Refused {
                peer: peer.to_owned(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            }
        }
        ConnectionError::ConnectionClosed(close)
            if close.error_code.to_string().contains("crypto") =>
        {
            TransportError::Refused { peer: peer.to_owned(), reason: format!("TLS: {close}") }
        }
        ConnectionError::TransportError(e) if e.code.to_string().contains("crypto") => {
            TransportError::Refused { peer: peer.to_owned(), reason: format!("TLS: {e}") }
        }
        other => TransportError::Closed { peer: peer.to_owned(), reason: other.to_string() },
    }
}

impl Endpoint for QuicEndpoint {
    fn connect(
        &self,
        addr: SocketAddr,
        server: &EntityName,
    ) -> BoxFuture<'_, Result<Arc<dyn Connection>, TransportError>> {
        let server = server.clone();
        Box::pin(async move {
            let name = server.to_string();
            let connect_error = |reason: String| TransportError::Connect {
                peer: name.clone(),
                addr: addr.to_string(),
                reason,
            };
            let connecting = self
                .endpoint
                .connect_with(self.client.clone(), addr, &server.cert_name())
                .map_err(|e| connect_error(e.to_string()))?;
            let conn = connecting.await.map_err(|e| match e {
                ConnectionError::TimedOut => connect_error("no answer (timed out)".into()),
                other => connection_error(&name, other),
            })?;
            let peer = peer_of(&conn)
                .map_err(|reason| TransportError::Refused { peer: name.clone(), reason })?;
            if peer.entity != server {
                conn.close(REFUSED, b"wrong entity");
                return Err(TransportError::Refused {
                    peer: name,
                    reason: format!("it presented the certificate of {}", peer.entity),
                });
            }
            Ok(Arc::new(QuicConnection { conn, peer }) as Arc<dyn Connection>)
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<Arc<dyn Connection>>> {
        Box::pin(async move { self.accepted.as_ref()?.lock().await.recv().await })
    }

    fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("a bound endpoint has an address")
    }

    fn close(&self) {
        self.endpoint.close(VarInt::from_u32(0), b"endpoint closed");
    }
}

struct QuicConnection {
    conn: quinn::Connection,
    peer: Peer,
}

impl Connection for QuicConnection {
    fn peer(&self) -> &Peer {
        &self.peer
    }

    fn open(&self) -> BoxFuture<'_, Result<(SendHalf, RecvHalf), TransportError>> {
        Box::pin(async move {
            let (send, recv) = self
                .conn
                .open_bi()
                .await
                .map_err(|e| connection_error(&self.peer.entity.to_string(), e))?;
            Ok((Box::new(send) as SendHalf, Box::new(recv) as RecvHalf))
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<(SendHalf, RecvHalf)>> {
        Box::pin(async move {
            let (send, recv) = self.conn.accept_bi().await.ok()?;
            Some((Box::new(send) as SendHalf, Box::new(recv) as RecvHalf))
        })
    }

    fn close(&self, reason: &str) {
        self.conn.close(REFUSED, reason.as_bytes());
    }

    fn close_error(&self) -> Option<TransportError> {
        let reason = self.conn.close_reason()?;
        Some(connection_error(&self.peer.entity.to_string(), reason))
    }
}
