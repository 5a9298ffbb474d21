//! Request-rate benchmark: what the OSD data path's transport costs per small request,
//! without an OSD behind it. A client keeps `--in-flight` requests going for `--secs`
//! seconds against a server in a second process (this program re-executed with `--serve`)
//! that answers each at once with 4 KiB, the shape of a 4 KiB read; it prints requests per
//! second, latency percentiles and the CPU each side spent per request.
//!
//!     cargo run --release -p cairn-bench --bin rpc-bench [-- --secs N] [--in-flight N]
//!                                                         [--format json]
//!
//! Three ways of carrying the same requests, measured in the same run:
//! - `cairn`: `net::rpc::call` and `net::rpc::serve` over `net::transport::tcp`
//!   (mutual TLS 1.3, one TCP connection per request in flight), as clients reach OSDs;
//! - `plain`: the same connection per request in flight, with no TLS and no framing
//!   beyond a length: the kernel's share of that design;
//! - `mux` and `mux-tls`: every request on one TCP connection (plain, and with the same
//!   TLS as `cairn`), tagged with an id, each side writing whatever has queued in one
//!   system call, as Ceph's messenger does. The gap between `cairn` and `mux-tls` is what
//!   multiplexing would save.
//!
//! Both processes run a tokio runtime with a worker per core, as the daemons do; the
//! client and the server share this machine's cores, as `cairn bench` and the OSDs do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use cairn_bench::{ServerProcess, cpu_time, flag, load_average, percentile, serve_control};
use net::frame::Limits;
use net::identity::{ClusterCa, Credentials, server_name};
use net::rpc::{self, Reply, Service};
use net::transport::tcp::TcpEndpoint;
use net::transport::{BoxFuture, Connection, Endpoint, Peer};
use proto::EntityName;
use proto::message::{OsdRequest, Response};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// The answer to every request: a 4 KiB read's data.
const ANSWER_BYTES: usize = 4096;
/// The request of the `plain` and `mux` ways (about what an encoded read op is).
const REQUEST_BYTES: usize = 64;
const SECS_DEFAULT: u64 = 10;
const IN_FLIGHT_DEFAULT: usize = 16;
/// A multiplexed writer gathers queued messages up to this many bytes per system call.
const GATHER_BYTES: usize = 64 << 10;
/// Neither side accepts a message longer than this.
const MESSAGE_BYTES_MAX: usize = 1 << 20;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The identity the server proves, as an OSD does.
const SERVER_OSD: u32 = 0;
const WAYS: [&str; 4] = ["cairn", "plain", "mux", "mux-tls"];

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

// ---- Messages of the plain and multiplexed ways: a u32 length, a u64 id, the body ----

async fn read_message<R: AsyncRead + Unpin>(io: &mut R) -> std::io::Result<Option<(u64, Bytes)>> {
    let mut header = [0u8; 12];
    match io.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let id = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
    if len > MESSAGE_BYTES_MAX {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message too long"));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(Some((id, body.into())))
}

fn put_message(out: &mut Vec<u8>, id: u64, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(body);
}

/// Writes what the channel holds, as much as has queued per system call, until it closes.
async fn write_queued<W: AsyncWrite + Unpin>(
    mut io: W,
    mut queue: mpsc::UnboundedReceiver<(u64, Bytes)>,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(GATHER_BYTES);
    while let Some((id, body)) = queue.recv().await {
        put_message(&mut out, id, &body);
        while out.len() < GATHER_BYTES {
            match queue.try_recv() {
                Ok((id, body)) => put_message(&mut out, id, &body),
                Err(_) => break,
            }
        }
        io.write_all(&out).await?;
        io.flush().await?;
        out.clear();
    }
    Ok(())
}

/// The server side of one plain or multiplexed connection: each request answered by a
/// task of its own (as an OSD hands each to a PG), the answers gathered by one writer.
async fn serve_messages<S: AsyncRead + AsyncWrite + Send + 'static>(io: S) {
    let (read, write) = tokio::io::split(io);
    let mut read = tokio::io::BufReader::with_capacity(GATHER_BYTES, read);
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_queued(write, rx));
    let answer = Bytes::from(vec![7u8; ANSWER_BYTES]);
    while let Ok(Some((id, _request))) = read_message(&mut read).await {
        let (tx, answer) = (tx.clone(), answer.clone());
        tokio::spawn(async move {
            let _ = tx.send((id, answer));
        });
    }
    drop(tx);
    let _ = writer.await;
}

// ---- The server: `--serve WAY [--keys DIR]` ----

struct Answerer;

impl Service for Answerer {
    type Request = OsdRequest;

    fn admit(&self, _peer: &Peer) -> Result<(), proto::RemoteError> {
        Ok(())
    }

    fn handle(
        self: Arc<Self>,
        _peer: Peer,
        _request: OsdRequest,
        _bulk: Bytes,
    ) -> BoxFuture<'static, Reply> {
        Box::pin(async {
            let response = Response::Objects { objects: Vec::new(), more: false };
            Reply::One(response, Bytes::from(vec![7u8; ANSWER_BYTES]))
        })
    }
}

fn bind_server(args: &[String], runtime: &tokio::runtime::Runtime) -> Result<SocketAddr> {
    let _guard = runtime.enter();
    let way = flag(args, "--serve").context("--serve WAY")?;
    let credentials = || -> Result<Credentials> {
        let keys = flag(args, "--keys").context("--keys DIR")?;
        Ok(Credentials::load(Path::new(&keys), &EntityName::osd(SERVER_OSD))?)
    };
    if way == "cairn" {
        let endpoint = Arc::new(TcpEndpoint::bind(loopback(), &credentials()?)?);
        let addr = endpoint.local_addr();
        runtime.spawn(rpc::serve(endpoint, Arc::new(Answerer), Limits::default()));
        return Ok(addr);
    }
    let tls = match way.as_str() {
        "plain" | "mux" => None,
        "mux-tls" => Some(tokio_rustls::TlsAcceptor::from(Arc::new(credentials()?.server_tls()?))),
        other => bail!("--serve {}, not {other}", WAYS.join("|")),
    };
    let listener = runtime.block_on(tokio::net::TcpListener::bind(loopback()))?;
    let addr = listener.local_addr()?;
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_messages(tcp).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve_messages(stream).await;
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// The server's main.
fn serve(args: &[String]) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    serve_control(bind_server(args, &runtime)?)
}

// ---- The client ----

/// One multiplexed connection's client side: a writer task, a reader task, and the
/// requests waiting for their answers.
struct Mux {
    queue: mpsc::UnboundedSender<(u64, Bytes)>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Mux {
    fn start<S: AsyncRead + AsyncWrite + Send + 'static>(io: S) -> Mux {
        let (read, write) = tokio::io::split(io);
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_queued(write, rx));
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>> = Arc::default();
        let answers = waiting.clone();
        tokio::spawn(async move {
            let mut read = tokio::io::BufReader::with_capacity(GATHER_BYTES, read);
            while let Ok(Some((id, body))) = read_message(&mut read).await {
                if let Some(tx) = answers.lock().expect("waiting").remove(&id) {
                    let _ = tx.send(body);
                }
            }
            // Dropping the senders fails every request still waiting.
            answers.lock().expect("waiting").clear();
        });
        Mux { queue, waiting, next: Default::default() }
    }

    async fn call(&self, request: Bytes) -> Result<Bytes> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiting").insert(id, tx);
        self.queue.send((id, request)).ok().context("the writer stopped")?;
        rx.await.ok().context("the connection closed")
    }
}

/// How the client reaches the server in one way.
enum Link {
    Cairn(Arc<dyn Connection>),
    Plain(SocketAddr),
    Mux(Arc<Mux>),
}

async fn connect(way: &str, addr: SocketAddr, client: &Credentials) -> Result<Link> {
    let server = EntityName::osd(SERVER_OSD);
    Ok(match way {
        "cairn" => {
            let endpoint = TcpEndpoint::client(client)?;
            Link::Cairn(endpoint.connect(addr, &server).await?)
        }
        "plain" => Link::Plain(addr),
        "mux" => {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Link::Mux(Arc::new(Mux::start(tcp)))
        }
        "mux-tls" => {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client.client_tls()?));
            let tls = connector.connect(server_name(&server)?, tcp).await?;
            Link::Mux(Arc::new(Mux::start(tls)))
        }
        other => bail!("no way {other}"),
    })
}

/// One worker: requests one after another until `stop`, each latency recorded.
async fn worker(link: Arc<Link>, stop: Arc<AtomicBool>) -> Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    let request = Bytes::from(vec![1u8; REQUEST_BYTES]);
    // `plain`: this worker's own connection, reused.
    let mut plain = match &*link {
        Link::Plain(addr) => {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Some(tcp)
        }
        _ => None,
    };
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let answer_len = match (&*link, plain.as_mut()) {
            (Link::Cairn(conn), _) => {
                let (_, bulk) =
                    rpc::call(&**conn, &OsdRequest::Ping { sent_ms: 0 }, &[], CALL_TIMEOUT).await?;
                bulk.len()
            }
            (Link::Mux(mux), _) => mux.call(request.clone()).await?.len(),
            (Link::Plain(_), Some(tcp)) => {
                out.clear();
                put_message(&mut out, 0, &request);
                tcp.write_all(&out).await?;
                let (_, body) = read_message(tcp).await?.context("the server closed")?;
                body.len()
            }
            (Link::Plain(_), None) => unreachable!("connected above"),
        };
        ensure!(answer_len == ANSWER_BYTES, "an answer of {answer_len} bytes");
        latencies.push(start.elapsed());
    }
    Ok(latencies)
}

struct Figures {
    way: &'static str,
    per_s: f64,
    p50: Duration,
    p99: Duration,
    client_us: f64,
    server_us: f64,
}

async fn measure(
    way: &'static str,
    server: &mut ServerProcess,
    client: &Credentials,
    secs: u64,
    in_flight: usize,
) -> Result<Figures> {
    let link = Arc::new(connect(way, server.addr, client).await?);
    let stop = Arc::new(AtomicBool::new(false));
    let (server0, client0, start) = (server.cpu()?, cpu_time(), Instant::now());
    let workers: Vec<_> =
        (0..in_flight).map(|_| tokio::spawn(worker(link.clone(), stop.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = start.elapsed();
    let (server_cpu, client_cpu) = (server.cpu()? - server0, cpu_time() - client0);
    ensure!(!latencies.is_empty(), "{way}: no request answered");
    latencies.sort_unstable();
    let n = latencies.len() as f64;
    Ok(Figures {
        way,
        per_s: n / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        client_us: client_cpu.as_secs_f64() * 1e6 / n,
        server_us: server_cpu.as_secs_f64() * 1e6 / n,
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if flag(&args, "--serve").is_some() {
        return serve(&args);
    }
    let secs = flag(&args, "--secs").map_or(Ok(SECS_DEFAULT), |s| s.parse())?;
    let in_flight = flag(&args, "--in-flight").map_or(Ok(IN_FLIGHT_DEFAULT), |s| s.parse())?;
    ensure!(in_flight > 0, "--in-flight must be at least 1");
    let json_out = flag(&args, "--format").as_deref() == Some("json");

    let keys = tempfile::tempdir().context("make a key directory")?;
    let ca = ClusterCa::generate("rpc-bench")?;
    ca.issue(&EntityName::osd(SERVER_OSD))?.save(keys.path())?;
    let client = ca.issue(&EntityName::client("bench").map_err(anyhow::Error::msg)?)?;
    let keys_arg = keys.path().to_str().context("non-UTF-8 temp path")?;
    let load_before = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut figures = Vec::new();
    for way in WAYS {
        let mut server = ServerProcess::start(&[way, "--keys", keys_arg])?;
        figures.push(runtime.block_on(measure(way, &mut server, &client, secs, in_flight))?);
    }
    let load_after = load_average();
    if json_out {
        let rows: Vec<_> = figures
            .iter()
            .map(|f| {
                json!({"way": f.way, "requests_per_s": f.per_s,
                       "p50_us": f.p50.as_micros() as u64, "p99_us": f.p99.as_micros() as u64,
                       "client_cpu_us_per_request": f.client_us,
                       "server_cpu_us_per_request": f.server_us})
            })
            .collect();
        let out = json!({"in_flight": in_flight, "secs": secs, "answer_bytes": ANSWER_BYTES,
                         "load_before": load_before, "load_after": load_after, "ways": rows});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{in_flight} requests in flight, {secs} s each, {ANSWER_BYTES}-byte answers; load \
         {load_before} before, {load_after} after"
    );
    println!(
        "| way | requests/s | p50 µs | p99 µs | client CPU µs/req | server CPU µs/req | both |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for f in &figures {
        println!(
            "| {} | {:.0} | {} | {} | {:.1} | {:.1} | {:.1} |",
            f.way,
            f.per_s,
            f.p50.as_micros(),
            f.p99.as_micros(),
            f.client_us,
            f.server_us,
            f.client_us + f.server_us
        );
    }
    Ok(())
}
