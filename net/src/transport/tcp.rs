//! TCP with mutual TLS 1.3: the OSDs' data path (clients to primaries, primaries to
//! replicas), where QUIC's CPU cost per byte and per request stood between the OSDs and
//! their targets (bench/RESULTS.md, transport and OSD sections). Monitors stay on QUIC.
//!
//! A TCP connection carries one stream at a time. Inside TLS a stream is a run of chunks,
//! each a little-endian `u32` header and what it announces:
//! - `1..=CHUNK_MAX`: that many bytes of the stream's data;
//! - `0`: the end of the stream (the writer shut its half down);
//! - `REFUSED`: the server refuses the peer; a `u32` length and the reason follow, then the
//!   connection closes.
//!
//! Once both ends have ended a stream, the connection carries the next one. So the client
//! side of a `Connection` is a pool of TCP connections to one server: `open` takes an idle
//! one (or dials and handshakes a new one), parallel streams run on separate sockets, and
//! TCP's own flow control bounds what each has in flight. The server side of a `Connection`
//! is one TCP connection, whose streams `accept` yields one after another, each when its
//! first bytes arrive; idle connections cost the server nothing but a parked task.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use super::{BoxFuture, Connection, Endpoint, Peer, RecvHalf, SendHalf};
use crate::identity::{Credentials, peer_identity, server_name};
use proto::entity::EntityName;
use proto::error::TransportError;

/// The largest chunk a header may announce.
const CHUNK_MAX: u32 = 16 << 20;
const END: u32 = 0;
const REFUSED: u32 = u32::MAX;
/// The longest refusal reason sent or accepted.
const REASON_MAX: usize = 4096;
/// Writes up to this size are gathered, with their chunk headers and the end marker, into
/// one TLS record and one system call: a small request is one write, not five.
const GATHER_BYTES: usize = 64 << 10;
/// What may be left unread of a stream before its connection is reused; beyond this,
/// dropping the connection is cheaper than reading the rest.
const DRAIN_MAX: usize = 1 << 20;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a peer has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections handshaken but not yet taken by `accept`.
const ACCEPT_QUEUE: usize = 64;
/// Handshakes in progress at once: a flood of connects waits for these rather than
/// spending memory and file descriptors on unauthenticated peers.
const HANDSHAKES_MAX: usize = 256;
/// Idle connections a client keeps to one server.
const IDLE_MAX: usize = 64;
/// TCP keepalive: a peer whose host vanished is noticed after about 16 s of silence.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_PROBES: u32 = 3;

type Tls = TlsStream<TcpStream>;

fn closed_early() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed inside a stream")
}

/// Reads into `buf` what `io` has, at least a byte; the connection's end is an error.
fn read_some<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut rb = ReadBuf::new(buf);
    ready!(Pin::new(io).poll_read(cx, &mut rb))?;
    match rb.filled().len() {
        0 => Poll::Ready(Err(closed_early())),
        n => Poll::Ready(Ok(n)),
    }
}

/// Where a stream's reading side is; survives the stream so that the connection can be
/// reused (or read to the end of a stream nobody finished).
#[derive(Debug, Default)]
enum Reader {
    /// A chunk header, `got` bytes of it so far.
    Header {
        buf: [u8; 4],
        got: usize,
    },
    Data {
        left: u32,
    },
    /// The end marker was read; the next stream starts with a fresh header.
    #[default]
    Ended,
    RefusalLength {
        buf: [u8; 4],
        got: usize,
    },
    Refusal {
        text: Vec<u8>,
        got: usize,
    },
    /// The connection is unusable (it ended, or broke the protocol).
    Broken,
}

impl Reader {
    fn start(&mut self) {
        *self = Reader::Header { buf: [0; 4], got: 0 };
    }

    /// Reads up to the start of a chunk's data or the stream's end. Every step keeps its
    /// progress in `self`, so this can be dropped and polled again without losing bytes.
    /// A refusal becomes an error of kind `ConnectionRefused` carrying the reason.
    fn poll_header<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match self {
                Reader::Header { buf, got } | Reader::RefusalLength { buf, got } => {
                    match read_some(io, cx, &mut buf[*got..]) {
                        Poll::Ready(Ok(n)) => *got += n,
                        Poll::Ready(Err(e)) => return self.broke(e),
                        Poll::Pending => return Poll::Pending,
                    }
                    if *got < 4 {
                        continue;
                    }
                    let value = u32::from_le_bytes(*buf);
                    if matches!(self, Reader::RefusalLength { .. }) {
                        let len = value as usize;
                        if len > REASON_MAX {
                            return self.broke(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("a refusal of {len} bytes"),
                            ));
                        }
                        *self = Reader::Refusal { text: vec![0; len], got: 0 };
                        continue;
                    }
                    *self = match value {
                        END => Reader::Ended,
                        REFUSED => Reader::RefusalLength { buf: [0; 4], got: 0 },
                        left if left <= CHUNK_MAX => Reader::Data { left },
                        other => {
                            return self.broke(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("a chunk of {other} bytes (at most {CHUNK_MAX})"),
                            ));
                        }
                    };
                }
                Reader::Refusal { text, got } => {
                    if *got < text.len() {
                        match read_some(io, cx, &mut text[*got..]) {
                            Poll::Ready(Ok(n)) => *got += n,
                            Poll::Ready(Err(e)) => return self.broke(e),
                            Poll::Pending => return Poll::Pending,
                        }
                        continue;
                    }
                    let reason = String::from_utf8_lossy(text).into_owned();
                    return self.broke(io::Error::new(io::ErrorKind::ConnectionRefused, reason));
                }
                Reader::Data { .. } | Reader::Ended => return Poll::Ready(Ok(())),
                Reader::Broken => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the connection broke earlier",
                    )));
                }
            }
        }
    }

    fn broke(&mut self, error: io::Error) -> Poll<io::Result<()>> {
        *self = Reader::Broken;
        Poll::Ready(Err(error))
    }

    /// The stream's data; nothing read (an empty `out`) at its end.
    fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_header(io, cx))?;
        let left = match self {
            Reader::Data { left } => *left,
            _ => return Poll::Ready(Ok(())),
        };
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let before = out.filled().len();
        let mut limited = (&mut *io).take(u64::from(left));
        match Pin::new(&mut limited).poll_read(cx, out) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return self.broke(e),
            Poll::Pending => return Poll::Pending,
        }
        let n = (out.filled().len() - before) as u32;
        if n == 0 {
            return self.broke(closed_early());
        }
        if n == left {
            self.start();
        } else {
            *self = Reader::Data { left: left - n };
        }
        Poll::Ready(Ok(()))
    }

    /// Reads and discards the rest of the current stream (at most `DRAIN_MAX` bytes).
    async fn drain<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> io::Result<()> {
        let mut scratch = vec![0u8; 16 << 10];
        let mut total = 0;
        let rest = std::future::poll_fn(|cx| {
            loop {
                let mut rb = ReadBuf::new(&mut scratch);
                ready!(self.poll_read(io, cx, &mut rb))?;
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Ok(()));
                }
                total += n;
                if total > DRAIN_MAX {
                    return Poll::Ready(Err(io::Error::other("too much of a stream left unread")));
                }
            }
        });
        tokio::time::timeout(DRAIN_TIMEOUT, rest)
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the rest of a stream did not arrive")))
    }
}

fn header(value: u32) -> [u8; 4] {
    value.to_le_bytes()
}

/// A stream's writing side.
#[derive(Debug, Default)]
struct Writer {
    /// Chunks (headers and small data) not yet handed to TLS; `sent` of them were.
    gather: Vec<u8>,
    sent: usize,
    /// Data still owed to a large chunk whose header is written.
    left: u32,
    /// The end marker is queued.
    ended: bool,
    /// ... and was flushed to the socket.
    flushed: bool,
    /// Anything was written on this stream.
    wrote: bool,
}

impl Writer {
    /// Whether the stream ended cleanly: everything, end marker included, flushed to the
    /// socket (a shutdown cut short by a timeout may leave the tail in TLS's buffer).
    fn is_clean(&self) -> bool {
        self.flushed
    }

    fn poll_send_gathered<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.sent < self.gather.len() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.gather[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.gather.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.ended {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the stream was shut down",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if self.left > 0 {
                ready!(self.poll_send_gathered(io, cx))?;
                let n = buf.len().min(self.left as usize);
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &buf[..n]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.left -= n as u32;
                return Poll::Ready(Ok(n));
            }
            let small = buf.len() + 4 <= GATHER_BYTES;
            if small && self.gather.len() + buf.len() + 4 <= GATHER_BYTES {
                self.gather.extend_from_slice(&header(buf.len() as u32));
                self.gather.extend_from_slice(buf);
                self.wrote = true;
                return Poll::Ready(Ok(buf.len()));
            }
            if small {
                ready!(self.poll_send_gathered(io, cx))?;
                continue;
            }
            // A large write: its header goes with what is gathered, its data straight on.
            // The header commits the stream to `n` more bytes, so a caller that sees
            // `Pending` must offer them again (as `write_all` does); shutting down short
            // of them is an error.
            let n = buf.len().min(CHUNK_MAX as usize) as u32;
            self.gather.extend_from_slice(&header(n));
            self.left = n;
            self.wrote = true;
        }
    }

    fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_send_gathered(io, cx))?;
        Pin::new(io).poll_flush(cx)
    }

    fn poll_end<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left > 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the stream was shut down {} bytes short of its chunk", self.left),
            )));
        }
        if !self.ended {
            self.gather.extend_from_slice(&header(END));
            self.ended = true;
        }
        ready!(self.poll_flush(io, cx))?;
        self.flushed = true;
        Poll::Ready(Ok(()))
    }
}

/// Where a connection goes when both halves of its stream are dropped.
enum Home {
    /// Back to the client's pool, if the stream ended cleanly.
    Pool(Weak<PoolShared>),
    /// Back to the server connection's task, which decides. A connection has one stream
    /// out at a time (its task waits for it before reading the next), so the channel
    /// holds at most one.
    Server(mpsc::Sender<Returned>),
}

struct Returned {
    tls: Tls,
    reader: Reader,
    writer: Writer,
}

/// The halves of one stream, gathered again as they are dropped.
struct Parts {
    read: Option<(ReadHalf<Tls>, Reader)>,
    write: Option<(WriteHalf<Tls>, Writer)>,
    home: Home,
}

type Slot = Arc<Mutex<Parts>>;

fn stream(tls: Tls, reader: Reader, home: Home) -> (SendHalf, RecvHalf) {
    let pool = match &home {
        Home::Pool(pool) => Some(pool.clone()),
        Home::Server(_) => None,
    };
    let slot = Arc::new(Mutex::new(Parts { read: None, write: None, home }));
    let (read, write) = tokio::io::split(tls);
    let send = TcpSend { io: Some(write), writer: Writer::default(), slot: slot.clone() };
    let recv = TcpRecv { io: Some(read), reader, slot, pool };
    (Box::new(send), Box::new(recv))
}

/// Called as each half is dropped, with `put` storing its part: once both are in, the
/// connection goes home.
fn give_back(slot: &Slot, put: impl FnOnce(&mut Parts)) {
    let mut parts = slot.lock().expect("stream parts");
    put(&mut parts);
    if parts.read.is_none() || parts.write.is_none() {
        return;
    }
    let (read, reader) = parts.read.take().expect("checked");
    let (write, writer) = parts.write.take().expect("checked");
    let tls = read.unsplit(write);
    match &parts.home {
        Home::Pool(pool) => {
            // Reused only if what is left to read is at most the end marker: a caller that
            // dropped an answer halfway (a cancelled or timed-out call) closes the socket,
            // so the server's write fails at once instead of waiting on a buried socket.
            let at_boundary = matches!(reader, Reader::Ended | Reader::Header { .. });
            if writer.is_clean()
                && at_boundary
                && let Some(pool) = pool.upgrade()
            {
                pool.put(Idle { tls, reader });
            }
        }
        Home::Server(task) => {
            let _ = task.try_send(Returned { tls, reader, writer });
        }
    }
}

struct TcpSend {
    io: Option<WriteHalf<Tls>>,
    writer: Writer,
    slot: Slot,
}

impl AsyncWrite for TcpSend {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let io = this.io.as_mut().expect("present until drop");
        this.writer.poll_write(io, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = this.io.as_mut().expect("present until drop");
        this.writer.poll_flush(io, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = this.io.as_mut().expect("present until drop");
        this.writer.poll_end(io, cx)
    }
}

impl Drop for TcpSend {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            let writer = std::mem::take(&mut self.writer);
            give_back(&self.slot, |parts| parts.write = Some((io, writer)));
        }
    }
}

struct TcpRecv {
    io: Option<ReadHalf<Tls>>,
    reader: Reader,
    slot: Slot,
    /// The client's pool, told when the server refuses us.
    pool: Option<Weak<PoolShared>>,
}

impl AsyncRead for TcpRecv {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = this.io.as_mut().expect("present until drop");
        let result = ready!(this.reader.poll_read(io, cx, buf));
        if let Err(e) = &result
            && e.kind() == io::ErrorKind::ConnectionRefused
            && let Some(pool) = this.pool.as_ref().and_then(Weak::upgrade)
        {
            pool.refused(e.to_string());
        }
        Poll::Ready(result)
    }
}

impl Drop for TcpRecv {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            let reader = std::mem::take(&mut self.reader);
            give_back(&self.slot, |parts| parts.read = Some((io, reader)));
        }
    }
}

fn tune_socket(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive);
}

/// The verified identity of a TLS peer.
fn peer_of(certs: Option<&[CertificateDer<'static>]>, addr: SocketAddr) -> Result<Peer, String> {
    let leaf = certs.and_then(|c| c.first()).ok_or("the peer presented no certificate")?;
    let (entity, fingerprint) = peer_identity(leaf).map_err(|e| e.to_string())?;
    Ok(Peer { entity, fingerprint: Some(fingerprint), addr })
}

/// A TLS-over-TCP endpoint that makes connections as one entity and, when bound as a
/// server, accepts them.
pub struct TcpEndpoint {
    connector: TlsConnector,
    local: SocketAddr,
    accepted: Option<tokio::sync::Mutex<mpsc::Receiver<Arc<dyn Connection>>>>,
    listening: Option<tokio::task::AbortHandle>,
}

impl TcpEndpoint {
    /// An endpoint that only connects.
    pub fn client(credentials: &Credentials) -> Result<TcpEndpoint, TransportError> {
        let tls = credentials
            .client_tls()
            .map_err(|e| TransportError::Setup(format!("client TLS: {e}")))?;
        Ok(TcpEndpoint {
            connector: TlsConnector::from(Arc::new(tls)),
            local: SocketAddr::from(([0, 0, 0, 0], 0)),
            accepted: None,
            listening: None,
        })
    }

    /// An endpoint that also listens on `addr` (port 0 for any). Must be called inside a
    /// tokio runtime: each handshake runs on a task of its own.
    pub fn bind(
        addr: SocketAddr,
        credentials: &Credentials,
    ) -> Result<TcpEndpoint, TransportError> {
        let mut endpoint = TcpEndpoint::client(credentials)?;
        let tls = credentials
            .server_tls()
            .map_err(|e| TransportError::Setup(format!("server TLS: {e}")))?;
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| TransportError::Setup(format!("bind {addr} (TCP): {e}")))?;
        let listener = TcpListener::from_std(listener).map_err(|e| {
            TransportError::Setup(format!("a TCP server needs a tokio runtime: {e}"))
        })?;
        endpoint.local = listener
            .local_addr()
            .map_err(|e| TransportError::Setup(format!("bind {addr} (TCP): {e}")))?;
        let (queue, accepted) = mpsc::channel(ACCEPT_QUEUE);
        let task = tokio::spawn(listen(listener, TlsAcceptor::from(Arc::new(tls)), queue));
        endpoint.accepted = Some(tokio::sync::Mutex::new(accepted));
        endpoint.listening = Some(task.abort_handle());
        Ok(endpoint)
    }
}

impl Drop for TcpEndpoint {
    fn drop(&mut self) {
        self.close();
    }
}

/// Accepts TCP connections until aborted, each handshake on its own task.
async fn listen(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    queue: mpsc::Sender<Arc<dyn Connection>>,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: give other tasks a moment to
                // release some rather than spinning.
                tracing::warn!(error = %e, "accepting a TCP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tune_socket(&tcp);
        let (acceptor, queue) = (acceptor.clone(), queue.clone());
        tokio::spawn(async move {
            let accept = acceptor.accept(tcp);
            let handshake = super::handshake(remote, HANDSHAKE_TIMEOUT, accept).await;
            drop(permit);
            let Some(tls) = handshake else { return };
            let peer = match peer_of(tls.get_ref().1.peer_certificates(), remote) {
                Ok(peer) => peer,
                Err(reason) => {
                    tracing::warn!(%remote, %reason, "refused a connection");
                    return;
                }
            };
            let _ = queue.send(ServerConnection::start(TlsStream::Server(tls), peer)).await;
        });
    }
}

impl Endpoint for TcpEndpoint {
    fn connect(
        &self,
        addr: SocketAddr,
        server: &EntityName,
    ) -> BoxFuture<'_, Result<Arc<dyn Connection>, TransportError>> {
        let server = server.clone();
        Box::pin(async move {
            let shared = Arc::new(PoolShared::new(server.to_string()));
            let (tls, peer) = dial(&self.connector, addr, &server).await?;
            shared.put(Idle { tls, reader: Reader::Ended });
            let pool = Pool { shared, peer, connector: self.connector.clone() };
            Ok(Arc::new(pool) as Arc<dyn Connection>)
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<Arc<dyn Connection>>> {
        Box::pin(async move { self.accepted.as_ref()?.lock().await.recv().await })
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn close(&self) {
        if let Some(task) = &self.listening {
            task.abort();
        }
    }
}

/// A new TLS connection to `server` at `addr`, whose certificate must name it.
async fn dial(
    connector: &TlsConnector,
    addr: SocketAddr,
    server: &EntityName,
) -> Result<(Tls, Peer), TransportError> {
    let peer_name = server.to_string();
    let tcp = TcpStream::connect(addr).await.map_err(|e| TransportError::Connect {
        peer: peer_name.clone(),
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    tune_socket(&tcp);
    let name = server_name(server).map_err(|e| TransportError::Setup(e.to_string()))?;
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            return Err(TransportError::Refused { peer: peer_name, reason: format!("TLS: {e}") });
        }
        Err(_) => {
            return Err(TransportError::Connect {
                peer: peer_name,
                addr: addr.to_string(),
                reason: "the TLS handshake timed out".into(),
            });
        }
    };
    let peer = peer_of(tls.get_ref().1.peer_certificates(), addr)
        .map_err(|reason| TransportError::Refused { peer: peer_name.clone(), reason })?;
    if &peer.entity != server {
        return Err(TransportError::Refused {
            peer: peer_name,
            reason: format!("it presented the certificate of {}", peer.entity),
        });
    }
    Ok((TlsStream::Client(tls), peer))
}

struct Idle {
    tls: Tls,
    /// `Ended`, or where the last stream's reading stopped (to be drained).
    reader: Reader,
}

/// Why a connection ended.
#[derive(Clone, Debug)]
enum Ending {
    Refused(String),
    Closed(String),
}

impl Ending {
    fn error(&self, peer: &str) -> TransportError {
        let peer = peer.to_owned();
        match self {
            Ending::Refused(reason) => TransportError::Refused { peer, reason: reason.clone() },
            Ending::Closed(reason) => TransportError::Closed { peer, reason: reason.clone() },
        }
    }
}

struct PoolShared {
    /// The server, for errors.
    peer: String,
    idle: Mutex<Vec<Idle>>,
    closed: Mutex<Option<Ending>>,
}

impl PoolShared {
    fn new(peer: String) -> PoolShared {
        PoolShared { peer, idle: Mutex::new(Vec::new()), closed: Mutex::new(None) }
    }

    fn put(&self, idle: Idle) {
        if self.closed.lock().expect("pool").is_some() {
            return;
        }
        let mut all = self.idle.lock().expect("pool");
        if all.len() < IDLE_MAX {
            all.push(idle);
        }
    }

    fn refused(&self, reason: String) {
        *self.closed.lock().expect("pool") = Some(Ending::Refused(reason));
        self.idle.lock().expect("pool").clear();
    }
}

/// The client side: TCP connections to one server, each carrying one stream at a time.
struct Pool {
    shared: Arc<PoolShared>,
    peer: Peer,
    connector: TlsConnector,
}

impl Pool {
    /// An idle connection made ready for a new stream, or `None` if it turned out dead.
    async fn revive(&self, mut idle: Idle) -> Option<(Tls, Reader)> {
        if !matches!(idle.reader, Reader::Ended) && idle.reader.drain(&mut idle.tls).await.is_err()
        {
            return None;
        }
        idle.reader.start();
        // One look without waiting: a healthy idle connection has nothing to read. The
        // server's end, or its refusal, shows here rather than as a failed request.
        let mut reader = idle.reader;
        let tls = &mut idle.tls;
        let look = std::future::poll_fn(|cx| match reader.poll_header(tls, cx) {
            Poll::Pending => Poll::Ready(None),
            Poll::Ready(result) => Poll::Ready(Some(result)),
        })
        .await;
        match look {
            None => Some((idle.tls, reader)),
            Some(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                self.shared.refused(e.to_string());
                None
            }
            // Data nobody asked for, or the connection's end.
            Some(_) => None,
        }
    }
}

impl Connection for Pool {
    fn peer(&self) -> &Peer {
        &self.peer
    }

    fn open(&self) -> BoxFuture<'_, Result<(SendHalf, RecvHalf), TransportError>> {
        Box::pin(async move {
            loop {
                if let Some(error) = self.close_error() {
                    return Err(error);
                }
                let idle = self.shared.idle.lock().expect("pool").pop();
                let Some(idle) = idle else { break };
                if let Some((tls, reader)) = self.revive(idle).await {
                    let home = Home::Pool(Arc::downgrade(&self.shared));
                    return Ok(stream(tls, reader, home));
                }
            }
            let (tls, _) = dial(&self.connector, self.peer.addr, &self.peer.entity).await?;
            let mut reader = Reader::default();
            reader.start();
            Ok(stream(tls, reader, Home::Pool(Arc::downgrade(&self.shared))))
        })
    }

    /// Servers open no streams towards clients on TCP.
    fn accept(&self) -> BoxFuture<'_, Option<(SendHalf, RecvHalf)>> {
        Box::pin(async { None })
    }

    fn close(&self, reason: &str) {
        *self.shared.closed.lock().expect("pool") = Some(Ending::Closed(reason.to_owned()));
        self.shared.idle.lock().expect("pool").clear();
    }

    fn close_error(&self) -> Option<TransportError> {
        let ending = self.shared.closed.lock().expect("pool").clone()?;
        Some(ending.error(&self.shared.peer))
    }
}

/// The server side: one TCP connection, its streams one after another.
struct ServerConnection {
    peer: Peer,
    streams: tokio::sync::Mutex<mpsc::Receiver<(SendHalf, RecvHalf)>>,
    closing: watch::Sender<Option<String>>,
    ended: Arc<Mutex<Option<Ending>>>,
}

impl ServerConnection {
    fn start(tls: Tls, peer: Peer) -> Arc<dyn Connection> {
        let (streams_tx, streams) = mpsc::channel(1);
        let (closing, closing_rx) = watch::channel(None);
        let ended = Arc::new(Mutex::new(None));
        tokio::spawn(serve_streams(
            tls,
            peer.entity.to_string(),
            streams_tx,
            closing_rx,
            ended.clone(),
        ));
        Arc::new(ServerConnection {
            peer,
            streams: tokio::sync::Mutex::new(streams),
            closing,
            ended,
        })
    }
}

impl Connection for ServerConnection {
    fn peer(&self) -> &Peer {
        &self.peer
    }

    fn open(&self) -> BoxFuture<'_, Result<(SendHalf, RecvHalf), TransportError>> {
        Box::pin(async {
            Err(TransportError::Setup("a TCP server does not open streams to its clients".into()))
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<(SendHalf, RecvHalf)>> {
        Box::pin(async move { self.streams.lock().await.recv().await })
    }

    fn close(&self, reason: &str) {
        self.closing.send_replace(Some(reason.to_owned()));
    }

    fn close_error(&self) -> Option<TransportError> {
        let ending = self.ended.lock().expect("ended").clone()?;
        Some(ending.error(&self.peer.entity.to_string()))
    }
}

enum Next {
    Stream(io::Result<()>),
    Refuse(String),
    /// The connection object is gone: nobody will accept more streams.
    Dropped,
}

/// Hands out the connection's streams as they start, until it ends or is refused.
async fn serve_streams(
    mut tls: Tls,
    peer: String,
    streams: mpsc::Sender<(SendHalf, RecvHalf)>,
    mut closing: watch::Receiver<Option<String>>,
    ended: Arc<Mutex<Option<Ending>>>,
) {
    let (home, mut returned) = mpsc::channel(1);
    let mut reader = Reader::default();
    reader.start();
    let why = loop {
        let next = tokio::select! {
            biased;
            reason = closing.wait_for(Option::is_some) => match reason {
                Ok(reason) => Next::Refuse((*reason).clone().unwrap_or_default()),
                Err(_) => Next::Dropped,
            },
            started = std::future::poll_fn(|cx| reader.poll_header(&mut tls, cx)) => {
                Next::Stream(started)
            }
        };
        match next {
            Next::Stream(Ok(())) => {}
            // The client closed its idle connection (or broke the protocol).
            Next::Stream(Err(e)) => break e.to_string(),
            Next::Refuse(reason) => {
                refuse(&mut tls, &reason).await;
                break format!("refused: {reason}");
            }
            Next::Dropped => break "nobody accepts its streams".to_owned(),
        }
        let halves = stream(tls, reader, Home::Server(home.clone()));
        // Not taken (the connection was dropped, refused): the halves come straight back.
        if let Err(mpsc::error::SendError(halves)) = streams.send(halves).await {
            drop(halves);
        }
        let Some(back) = returned.recv().await else { break "lost".to_owned() };
        (tls, reader) = (back.tls, back.reader);
        let refusal = closing.borrow().clone();
        if let Some(reason) = refusal {
            // Refused while a request was in hand: the refusal is its answer.
            if !back.writer.wrote {
                refuse(&mut tls, &reason).await;
            }
            break format!("refused: {reason}");
        }
        if streams.is_closed() {
            break "nobody accepts its streams".to_owned();
        }
        if !back.writer.is_clean() {
            break "a stream was abandoned".to_owned();
        }
        if !matches!(reader, Reader::Ended)
            && let Err(e) = reader.drain(&mut tls).await
        {
            break e.to_string();
        }
        reader.start();
    };
    tracing::trace!(%peer, %why, "TCP connection ended");
    *ended.lock().expect("ended") = Some(Ending::Closed(why));
}

/// Tells the client why, then closes. What the client still sends is read and dropped for
/// a moment: closing a socket with unread data makes the kernel reset the connection,
/// which could destroy the refusal before the client reads it.
async fn refuse(tls: &mut Tls, reason: &str) {
    let mut text = reason.as_bytes();
    if text.len() > REASON_MAX {
        text = &text[..REASON_MAX];
    }
    let mut message = Vec::with_capacity(8 + text.len());
    message.extend_from_slice(&header(REFUSED));
    message.extend_from_slice(&(text.len() as u32).to_le_bytes());
    message.extend_from_slice(text);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        tls.write_all(&message).await?;
        tls.shutdown().await?;
        let mut scratch = [0u8; 4096];
        while tls.read(&mut scratch).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte pipe for driving `Reader` and `Writer` without TLS.
    fn chunks_of(writes: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = Writer::default();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for w in writes {
            let mut rest: &[u8] = w;
            while !rest.is_empty() {
                match writer.poll_write(&mut out, &mut cx, rest) {
                    Poll::Ready(Ok(n)) => rest = &rest[n..],
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(matches!(writer.poll_end(&mut out, &mut cx), Poll::Ready(Ok(()))));
        assert!(writer.is_clean());
        out
    }

    fn read_stream(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut io = bytes;
        let mut reader = Reader::default();
        reader.start();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut got = Vec::new();
        loop {
            let mut buf = [0u8; 1000];
            let mut rb = ReadBuf::new(&mut buf);
            match reader.poll_read(&mut io, &mut cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Ok(got),
                Poll::Ready(Ok(())) => got.extend_from_slice(rb.filled()),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => panic!("a slice never blocks"),
            }
        }
    }

    #[test]
    fn writes_of_any_size_come_back_as_one_stream() {
        let big = vec![7u8; GATHER_BYTES * 3 + 5];
        let writes: Vec<&[u8]> = vec![b"head", &big, b"", b"tail", &big[..GATHER_BYTES - 4]];
        let wire = chunks_of(&writes);
        assert_eq!(read_stream(&wire).unwrap(), writes.concat());
        // Small writes were gathered: one header each plus the end marker.
        let small = chunks_of(&[b"ab", b"cd"]);
        assert_eq!(small.len(), 4 + 2 + 4 + 2 + 4);
        // An empty stream is just its end.
        assert_eq!(read_stream(&chunks_of(&[])).unwrap(), b"");
    }

    #[test]
    fn bad_chunk_headers_and_early_ends_are_errors() {
        let mut wire = header(CHUNK_MAX + 1).to_vec();
        wire.extend_from_slice(&[0; 8]);
        let e = read_stream(&wire).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let mut short = header(10).to_vec();
        short.extend_from_slice(b"abc");
        assert_eq!(read_stream(&short).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(read_stream(&[1, 0]).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut refusal = header(REFUSED).to_vec();
        refusal.extend_from_slice(&5u32.to_le_bytes());
        refusal.extend_from_slice(b"go on");
        let e = read_stream(&refusal).unwrap_err();
        assert_eq!((e.kind(), e.to_string()), (io::ErrorKind::ConnectionRefused, "go on".into()));
        let mut long = header(REFUSED).to_vec();
        long.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read_stream(&long).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
