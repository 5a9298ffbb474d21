//! Requests and replies over a transport: one stream per request, one frame each way (or a
//! frame per update for subscriptions), every wait bounded.
//!
//! The server side (`serve`) admits each connection by the identity its certificate proved
//! (a `Service` may refuse unknown or revoked identities), then answers each stream in its
//! own task. A frame that is too large or does not decode gets an error answer on its
//! stream; the connection and the daemon carry on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

use crate::frame::{self, FrameError, Limits};
use crate::transport::{BoxFuture, Connection, Endpoint, Peer, RecvHalf, SendHalf};
use proto::entity::EntityKind;
use proto::error::{ErrorCode, RemoteError, TransportError};
use proto::message::{Response, WireRequest};

/// How long a request waits for its answer unless told otherwise.
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Streams one server handles at once, over all connections (monitors' and everyone
/// else's each).
pub const STREAMS_IN_FLIGHT_MAX: usize = 4096;
/// How long a peer may take to send a whole request once it opened its stream.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Updates a subscription may have queued before the server stops producing.
pub const SUBSCRIPTION_QUEUE: usize = 64;

/// Sends `request` and waits up to `timeout` for the answer. An error answer becomes
/// `TransportError::Remote`.
pub async fn call<R: WireRequest>(
    conn: &dyn Connection,
    request: &R,
    bulk: &[u8],
    timeout: Duration,
) -> Result<(Response, Bytes), TransportError> {
    let peer = conn.peer().entity.to_string();
    let exchange = async {
        let (mut send, mut recv) = conn.open().await?;
        let framing = |e: FrameError| TransportError::Frame { peer: peer.clone(), source: e };
        frame::write(&mut send, request, bulk).await.map_err(framing)?;
        send.shutdown().await.map_err(|e| framing(e.into()))?;
        let answer =
            frame::read::<_, Response>(&mut recv, Limits::default()).await.map_err(framing)?;
        let (response, bulk) = answer.ok_or_else(|| TransportError::Closed {
            peer: peer.clone(),
            reason: format!("the stream ended before an answer to {}", request.name()),
        })?;
        match response {
            Response::Error(error) => Err(TransportError::Remote { peer: peer.clone(), error }),
            response => Ok((response, bulk)),
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        // A stream cut short by the connection closing: the connection knows why (a
        // refusal carries the server's reason).
        Ok(Err(error @ (TransportError::Frame { .. } | TransportError::Closed { .. }))) => {
            Err(conn.close_error().unwrap_or(error))
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(TransportError::Timeout {
            peer: peer.clone(),
            what: request.name().to_owned(),
            after_ms: timeout.as_millis() as u64,
        }),
    }
}

/// A stream of answers to one request (a map subscription).
pub struct Subscription {
    peer: String,
    _send: SendHalf,
    recv: RecvHalf,
}

impl Subscription {
    /// Opens the stream and sends `request`.
    pub async fn open<R: WireRequest>(
        conn: &dyn Connection,
        request: &R,
    ) -> Result<Subscription, TransportError> {
        let peer = conn.peer().entity.to_string();
        let (mut send, recv) = conn.open().await?;
        frame::write(&mut send, request, &[])
            .await
            .map_err(|e| TransportError::Frame { peer: peer.clone(), source: e })?;
        send.flush()
            .await
            .map_err(|e| TransportError::Frame { peer: peer.clone(), source: e.into() })?;
        Ok(Subscription { peer, _send: send, recv })
    }

    /// The next answer; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<(Response, Bytes)>, TransportError> {
        let framing = |e| TransportError::Frame { peer: self.peer.clone(), source: e };
        match frame::read::<_, Response>(&mut self.recv, Limits::default())
            .await
            .map_err(framing)?
        {
            Some((Response::Error(error), _)) => {
                Err(TransportError::Remote { peer: self.peer.clone(), error })
            }
            other => Ok(other),
        }
    }
}

/// What a service answers with.
pub enum Reply {
    One(Response, Bytes),
    /// Answers as they come; the stream ends when the sender is dropped.
    Stream(mpsc::Receiver<(Response, Bytes)>),
}

impl Reply {
    pub fn ok(response: Response) -> Reply {
        Reply::One(response, Bytes::new())
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply::One(Response::Error(RemoteError::new(code, message)), Bytes::new())
    }
}

impl From<RemoteError> for Reply {
    fn from(error: RemoteError) -> Reply {
        Reply::One(Response::Error(error), Bytes::new())
    }
}

/// A daemon's request handling.
pub trait Service: Send + Sync + 'static {
    /// What this service is asked: a frame that does not decode as one is refused.
    type Request: WireRequest;
    /// Whether `peer` may talk to this daemon at all; `Err` closes the connection with the
    /// reason (an unknown or revoked identity: `PermissionDenied`).
    fn admit(&self, peer: &Peer) -> Result<(), RemoteError>;
    /// The frame limits for requests from `peer` (by default, what `serve` was given).
    fn limits(&self, peer: &Peer, default: Limits) -> Limits {
        let _ = peer;
        default
    }
    fn handle(
        self: Arc<Self>,
        peer: Peer,
        request: Self::Request,
        bulk: Bytes,
    ) -> BoxFuture<'static, Reply>;
}

/// Accepts connections on `endpoint` and answers their requests with `service` until the
/// endpoint closes.
///
/// Monitors' streams (Raft among them) draw on a budget of their own, so that no number of
/// clients or subscriptions can starve the traffic that keeps the quorum alive.
pub async fn serve<S: Service>(endpoint: Arc<dyn Endpoint>, service: Arc<S>, limits: Limits) {
    let for_monitors = Arc::new(Semaphore::new(STREAMS_IN_FLIGHT_MAX));
    let for_others = Arc::new(Semaphore::new(STREAMS_IN_FLIGHT_MAX));
    while let Some(conn) = endpoint.accept().await {
        let peer = conn.peer().clone();
        if let Err(refusal) = service.admit(&peer) {
            let reason = refusal.message;
            tracing::warn!(peer = %peer.entity, addr = %peer.addr, %reason, "refused a connection");
            conn.close(&reason);
            continue;
        }
        let permits =
            if peer.entity.kind() == EntityKind::Mon { &for_monitors } else { &for_others };
        let limits = service.limits(&peer, limits);
        tokio::spawn(serve_connection(conn, service.clone(), permits.clone(), limits));
    }
}

async fn serve_connection<S: Service>(
    conn: Arc<dyn Connection>,
    service: Arc<S>,
    permits: Arc<Semaphore>,
    limits: Limits,
) {
    let peer = conn.peer().clone();
    while let Some((send, recv)) = conn.accept().await {
        // Admission holds for each request, not just the handshake: an identity revoked
        // while connected is cut off at its next request.
        if let Err(refusal) = service.admit(&peer) {
            let reason = refusal.message;
            tracing::warn!(peer = %peer.entity, addr = %peer.addr, %reason, "closed a connection");
            conn.close(&reason);
            return;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (service, peer) = (service.clone(), peer.clone());
        tokio::spawn(async move {
            serve_stream(service, peer, send, recv, limits).await;
            drop(permit);
        });
    }
}

async fn serve_stream<S: Service>(
    service: Arc<S>,
    peer: Peer,
    mut send: SendHalf,
    mut recv: RecvHalf,
    limits: Limits,
) {
    let read =
        tokio::time::timeout(REQUEST_READ_TIMEOUT, frame::read::<_, S::Request>(&mut recv, limits));
    let request = match read.await {
        Ok(Ok(Some(request))) => request,
        // An empty stream: answered with an empty one.
        Ok(Ok(None)) => {
            let _ = send.shutdown().await;
            return;
        }
        Err(_) => {
            tracing::warn!(peer = %peer.entity, "request frame not complete in time");
            let answer = Response::Error(RemoteError::new(
                ErrorCode::Timeout,
                format!("the request did not arrive within {} s", REQUEST_READ_TIMEOUT.as_secs()),
            ));
            let _ = frame::write(&mut send, &answer, &[]).await;
            let _ = send.shutdown().await;
            return;
        }
        Ok(Err(error)) => {
            let code = match error {
                FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                FrameError::Version(_) => ErrorCode::Unsupported,
                _ => ErrorCode::Malformed,
            };
            tracing::warn!(peer = %peer.entity, %error, "bad request frame");
            let answer = Response::Error(RemoteError::new(code, error.to_string()));
            let _ = frame::write(&mut send, &answer, &[]).await;
            let _ = send.shutdown().await;
            return;
        }
    };
    let (request, bulk) = request;
    match service.handle(peer.clone(), request, bulk).await {
        Reply::One(response, bulk) => {
            if let Err(error) = frame::write(&mut send, &response, &bulk).await {
                tracing::debug!(peer = %peer.entity, %error, "answer not delivered");
            }
        }
        Reply::Stream(mut updates) => {
            // The subscriber sends nothing more; its side ending (or failing) means it is
            // gone, which is noticed at once rather than at the next update.
            let mut probe = [0u8; 1];
            loop {
                tokio::select! {
                    update = updates.recv() => {
                        let Some((response, bulk)) = update else { break };
                        if frame::write(&mut send, &response, &bulk).await.is_err() {
                            break;
                        }
                        let _ = send.flush().await;
                    }
                    _ = recv.read(&mut probe) => break,
                }
            }
        }
    }
    let _ = send.shutdown().await;
}
