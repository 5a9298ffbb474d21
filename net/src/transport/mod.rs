//! The transport: authenticated connections carrying independent bidirectional streams.
//!
//! Daemons see it through two traits, `Endpoint` (connect and accept) and `Connection`
//! (open and accept streams, know the verified peer). Between processes: `quic` (QUIC over
//! UDP with mutual TLS 1.3; monitors and their clients) and `tcp` (TCP with mutual TLS 1.3,
//! one stream at a time per connection; the OSDs' data path, where QUIC cost too much CPU).
//! `memory` connects endpoints in one process for tests, with identities given rather than
//! proven. Streams are plain
//! `AsyncRead`/`AsyncWrite` halves; `crate::rpc` puts frames on them.

pub mod memory;
pub mod quic;
pub mod tcp;

use std::fmt::Display;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::identity::Fingerprint;
use proto::entity::EntityName;
use proto::error::TransportError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// The writing half of a stream; shutting it down ends the stream for the reader. Like any
/// buffered writer it may hold written data until it is flushed or shut down.
pub type SendHalf = Box<dyn AsyncWrite + Send + Unpin>;
pub type RecvHalf = Box<dyn AsyncRead + Send + Unpin>;

/// The other end of a connection, as its certificate proved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub entity: EntityName,
    /// The certificate's fingerprint (`None` on in-memory connections).
    pub fingerprint: Option<Fingerprint>,
    pub addr: SocketAddr,
}

pub trait Connection: Send + Sync + 'static {
    fn peer(&self) -> &Peer;
    /// Opens a new stream to the peer.
    fn open(&self) -> BoxFuture<'_, Result<(SendHalf, RecvHalf), TransportError>>;
    /// The next stream the peer opened; `None` once the connection is closed.
    fn accept(&self) -> BoxFuture<'_, Option<(SendHalf, RecvHalf)>>;
    /// Refuses the peer: closes the connection, and the peer's calls fail with
    /// `TransportError::Refused` carrying `reason`.
    fn close(&self, reason: &str);
    /// Why the connection ended, once it has.
    fn close_error(&self) -> Option<TransportError>;
    fn is_closed(&self) -> bool {
        self.close_error().is_some()
    }
}

pub trait Endpoint: Send + Sync + 'static {
    /// Connects to the entity `server` at `addr`; the peer must prove it is `server`.
    fn connect(
        &self,
        addr: SocketAddr,
        server: &EntityName,
    ) -> BoxFuture<'_, Result<Arc<dyn Connection>, TransportError>>;
    /// The next authenticated incoming connection; `None` once the endpoint is closed.
    /// Failed handshakes are logged and skipped.
    fn accept(&self) -> BoxFuture<'_, Option<Arc<dyn Connection>>>;
    fn local_addr(&self) -> SocketAddr;
    fn close(&self);
}

/// A server's side of a handshake from `remote`, bounded by `timeout`. A failure gives
/// `None` and is logged at debug level only: clients that connect to several servers at
/// once abandon all but the first handshake, so failures are routine.
pub(crate) async fn handshake<T, E: Display>(
    remote: SocketAddr,
    timeout: Duration,
    handshake: impl IntoFuture<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%remote, "handshake timed out");
            None
        }
    }
}
