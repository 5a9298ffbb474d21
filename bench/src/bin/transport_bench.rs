//! Transport benchmark: cairn's QUIC transport (`net::transport::quic`, mutual TLS 1.3)
//! next to plain TCP (tokio `TcpStream`, no encryption) on loopback, measured in the same run.
//!
//!     cargo run --release -p cairn-bench --bin transport-bench [-- --quick] [--gib N]
//!                                                               [--format json]
//!
//! The receiver runs in a second process (this program re-executed with `--serve`), so the
//! CPU time of each side is its own: both read `getrusage(RUSAGE_SELF)`, user plus system
//! time of all threads, around each measurement. It prints, for TCP and for QUIC with a few
//! `Tuning`s: throughput and CPU-seconds per GiB for one stream and for four parallel
//! streams (four streams on one connection for QUIC; TCP has no streams, so four
//! connections), and the latency and CPU cost of a small request and its answer on a reused
//! stream, on a new stream of a reused connection (what `net::rpc::call` does), and on a
//! new connection. Variants named after a quinn setting that `Tuning` lacks (GSO, ACK
//! frequency, jumbo MTU) run on a quinn endpoint built here with the same TLS and `Tuning`
//! as proto's, to show what exposing the setting would bring.
//!
//! It does not measure a real network: loopback has no loss and a 64 KiB MTU that TCP uses
//! whole, while QUIC's packets stay at most `Tuning::udp_payload_max_bytes` (6,000; 1,452
//! in the variant that keeps quinn's default, which is what an Ethernet path allows).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_bench::{ServerProcess, cpu_time, flag, serve_control};
use net::identity::{ClusterCa, Credentials};
use net::transport::quic::{QuicEndpoint, Tuning};
use net::transport::{Connection, Endpoint, RecvHalf, SendHalf};
use proto::EntityName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The size of each write, and of the receiver's read buffer.
const CHUNK_BYTES: usize = 1 << 20;
const GIB: u64 = 1 << 30;
const BULK_GIB_DEFAULT: u64 = 2;
/// Each bulk transfer is measured this many times, interleaved with the others; the
/// median is reported.
const RUNS: usize = 3;
/// The small request of the latency measurements; the answer is its length (8 bytes).
const REQUEST_BYTES: usize = 4096;
/// Requests per latency measurement; a new connection costs more, so it gets fewer.
const REQUESTS: usize = 4000;
const CONNECTIONS: usize = 400;
/// The receiver refuses messages larger than this (it trusts its parent, but bounds anyway).
const MESSAGE_BYTES_MAX: u64 = 64 * GIB;
/// The identity the receiver proves on QUIC, as an OSD will on the data path.
const SERVER_OSD: u32 = 0;

/// Settings quinn has that `Tuning` does not expose. A variant with any of them runs on a
/// quinn endpoint the bench builds itself with the same TLS and `Tuning` as proto's, to show
/// what exposing them would bring.
#[derive(Clone, Copy, Debug)]
struct Extra {
    /// The largest UDP payload path MTU discovery may find (quinn's default: 1452); the
    /// endpoint accepts datagrams of this size too (quinn's default: 1472).
    mtu_max_bytes: u16,
    /// Ask the peer to acknowledge every this many packets (the ACK frequency extension;
    /// without it a receiver acknowledges every second packet).
    ack_every_packets: Option<u32>,
    /// Generic segmentation offload: one `sendmsg` carries up to 10 packets.
    gso: bool,
}

/// What proto's `Tuning::default()` amounts to (its `udp_payload_max_bytes` is 6,000).
const EXTRA_DEFAULT: Extra = Extra { mtu_max_bytes: 6000, ack_every_packets: None, gso: true };

/// The QUIC variants measured, by name. The kernel caps socket buffers at net.core.rmem_max
/// and wmem_max, so buffer sizes above those only take effect where the limits were raised.
fn variants() -> Vec<(&'static str, Tuning, Option<Extra>)> {
    let default = Tuning::default();
    let small = Tuning {
        stream_window_bytes: 1 << 20,
        connection_window_bytes: 4 << 20,
        socket_buffer_bytes: 256 << 10,
        ..default.clone()
    };
    let large = Tuning {
        stream_window_bytes: 64 << 20,
        connection_window_bytes: 256 << 20,
        socket_buffer_bytes: 32 << 20,
        ..default.clone()
    };
    let ack10 = Extra { ack_every_packets: Some(10), ..EXTRA_DEFAULT };
    // 8952 bytes is what a 9000-byte (jumbo frame) IPv6 path carries; 6000 keeps a GSO
    // batch of 10 packets under the 64 KiB a single send can carry.
    let jumbo = Extra { mtu_max_bytes: 8952, ..EXTRA_DEFAULT };
    vec![
        ("small windows", small, None),
        ("default", default.clone(), None),
        ("large windows", large, None),
        ("default, GSO off", default.clone(), Some(Extra { gso: false, ..EXTRA_DEFAULT })),
        ("default, ACK every 10", default.clone(), Some(ack10)),
        (
            "default, MTU 1452 (quinn's)",
            Tuning { udp_payload_max_bytes: 1452, ..default.clone() },
            None,
        ),
        ("default, MTU 8952", default.clone(), Some(jumbo)),
        ("default, MTU 8952, GSO off", default, Some(Extra { gso: false, ..jumbo })),
    ]
}

fn variant(name: &str) -> Result<(Tuning, Option<Extra>)> {
    let found = variants().into_iter().find(|(n, _, _)| *n == name);
    let (_, tuning, extra) = found.with_context(|| format!("no QUIC variant named '{name}'"))?;
    Ok((tuning, extra))
}

/// What proto's `Tuning` sets, plus `extra`.
fn raw_transport(tuning: &Tuning, extra: Extra) -> Result<Arc<quinn::TransportConfig>> {
    use quinn::{AckFrequencyConfig, MtuDiscoveryConfig, VarInt};
    let mut t = tuning.transport_config()?;
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(extra.mtu_max_bytes);
    t.mtu_discovery_config(Some(mtu));
    if let Some(every) = extra.ack_every_packets {
        let mut ack = AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(VarInt::from_u32(every));
        t.ack_frequency_config(Some(ack));
    }
    t.enable_segmentation_offload(extra.gso);
    Ok(Arc::new(t))
}

/// A bench-local quinn endpoint for a variant with `extra` settings, a server as well if
/// `server`, and the client configuration to connect with. Its socket gets proto's buffer
/// sizes.
fn raw_endpoint(
    creds: &Credentials,
    tuning: &Tuning,
    extra: Extra,
    server: bool,
) -> Result<(quinn::Endpoint, quinn::ClientConfig)> {
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    let transport = raw_transport(tuning, extra)?;
    let mut client =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(creds.client_tls()?)?));
    client.transport_config(transport.clone());
    let server = if server {
        let crypto = QuicServerConfig::try_from(creds.server_tls()?)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport);
        Some(config)
    } else {
        None
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let _ = socket.set_recv_buffer_size(tuning.socket_buffer_bytes);
    let _ = socket.set_send_buffer_size(tuning.socket_buffer_bytes);
    socket.bind(&loopback().into())?;
    // Peers refuse datagrams above this (default 1472), whatever path MTU discovery finds.
    let mut config = quinn::EndpointConfig::default();
    config.max_udp_payload_size(extra.mtu_max_bytes.max(1472))?;
    let endpoint =
        quinn::Endpoint::new(config, server, socket.into(), Arc::new(quinn::TokioRuntime))?;
    Ok((endpoint, client))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // The default, as the daemons run: one worker thread per core.
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

// ---- The receiver: `--serve tcp` or `--serve quic --keys DIR --variant NAME` ----

/// Reads messages (an 8-byte length, then that many bytes) until the stream ends, and
/// answers each with the number of bytes it received.
async fn serve_stream(mut send: SendHalf, mut recv: RecvHalf) -> Result<()> {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let mut header = [0u8; 8];
        // Between messages, the end of the stream or of its connection is the sender
        // being done: it has checked every answer, and may close the connection before the
        // end of its last stream reaches us.
        if recv.read_exact(&mut header).await.is_err() {
            return Ok(());
        }
        let len = u64::from_le_bytes(header);
        ensure!(len <= MESSAGE_BYTES_MAX, "message of {len} bytes");
        let mut received = 0u64;
        while received < len {
            let want = (len - received).min(CHUNK_BYTES as u64) as usize;
            let n = recv.read(&mut buffer[..want]).await?;
            ensure!(n > 0, "stream ended {received} bytes into a {len}-byte message");
            received += n as u64;
        }
        send.write_all(&received.to_le_bytes()).await?;
        send.flush().await?;
    }
}

fn spawn_stream(send: SendHalf, recv: RecvHalf) {
    tokio::spawn(async move {
        if let Err(e) = serve_stream(send, recv).await {
            eprintln!("receiver: {e:#}");
        }
    });
}

/// Binds a receiver for `args` and serves on the runtime's workers; returns its address.
fn bind_receiver(args: &[String], runtime: &tokio::runtime::Runtime) -> Result<SocketAddr> {
    let _guard = runtime.enter();
    match flag(args, "--serve").as_deref() {
        Some("tcp") => {
            let listener = runtime.block_on(tokio::net::TcpListener::bind(loopback()))?;
            let addr = listener.local_addr()?;
            runtime.spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let _ = stream.set_nodelay(true);
                    let (recv, send) = stream.into_split();
                    spawn_stream(Box::new(send), Box::new(recv));
                }
            });
            Ok(addr)
        }
        Some("quic") => {
            let keys = flag(args, "--keys").context("--keys DIR")?;
            let (tuning, extra) = variant(&flag(args, "--variant").context("--variant NAME")?)?;
            let creds = Credentials::load(Path::new(&keys), &EntityName::osd(SERVER_OSD))?;
            if let Some(extra) = extra {
                let (endpoint, _) = raw_endpoint(&creds, &tuning, extra, true)?;
                let addr = endpoint.local_addr()?;
                runtime.spawn(async move {
                    while let Some(incoming) = endpoint.accept().await {
                        tokio::spawn(async move {
                            let Ok(conn) = incoming.await else { return };
                            while let Ok((send, recv)) = conn.accept_bi().await {
                                spawn_stream(Box::new(send), Box::new(recv));
                            }
                        });
                    }
                });
                return Ok(addr);
            }
            let endpoint = QuicEndpoint::bind(loopback(), &creds, &tuning, true)?;
            let addr = endpoint.local_addr();
            runtime.spawn(async move {
                while let Some(conn) = endpoint.accept().await {
                    tokio::spawn(async move {
                        while let Some((send, recv)) = conn.accept().await {
                            spawn_stream(send, recv);
                        }
                    });
                }
            });
            Ok(addr)
        }
        other => bail!("--serve tcp|quic, not {other:?}"),
    }
}

/// The receiver's main.
fn serve(args: &[String]) -> Result<()> {
    let runtime = runtime()?;
    serve_control(bind_receiver(args, &runtime)?)
}

// ---- The sender ----

/// Where the sender connects: TCP, QUIC from its own endpoint, or QUIC from a bench-local
/// quinn endpoint.
enum Link {
    Tcp(SocketAddr),
    Quic { endpoint: Arc<dyn Endpoint>, addr: SocketAddr },
    Raw { endpoint: quinn::Endpoint, client: quinn::ClientConfig, addr: SocketAddr },
}

/// A connection: QUIC's carries streams; TCP's each stream is a connection of its own.
enum Conn {
    Tcp(SocketAddr),
    Quic(Arc<dyn Connection>),
    Raw(quinn::Connection),
}

impl Link {
    async fn connect(&self) -> Result<Conn> {
        Ok(match self {
            Link::Tcp(addr) => Conn::Tcp(*addr),
            Link::Quic { endpoint, addr } => {
                Conn::Quic(endpoint.connect(*addr, &EntityName::osd(SERVER_OSD)).await?)
            }
            Link::Raw { endpoint, client, addr } => {
                let name = EntityName::osd(SERVER_OSD).cert_name();
                Conn::Raw(endpoint.connect_with(client.clone(), *addr, &name)?.await?)
            }
        })
    }
}

impl Conn {
    async fn open(&self) -> Result<(SendHalf, RecvHalf)> {
        match self {
            Conn::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (recv, send) = stream.into_split();
                Ok((Box::new(send), Box::new(recv)))
            }
            Conn::Quic(conn) => Ok(conn.open().await?),
            Conn::Raw(conn) => {
                let (send, recv) = conn.open_bi().await?;
                Ok((Box::new(send), Box::new(recv)))
            }
        }
    }
}

/// Sends one message of `len` bytes (repeating `data`) and waits for its answer.
async fn exchange(send: &mut SendHalf, recv: &mut RecvHalf, len: u64, data: &[u8]) -> Result<()> {
    send.write_all(&len.to_le_bytes()).await?;
    let mut left = len;
    while left > 0 {
        let n = left.min(data.len() as u64) as usize;
        send.write_all(&data[..n]).await?;
        left -= n as u64;
    }
    send.flush().await?;
    let mut answer = [0u8; 8];
    recv.read_exact(&mut answer).await?;
    let received = u64::from_le_bytes(answer);
    ensure!(received == len, "sent {len} bytes, the receiver counted {received}");
    Ok(())
}

/// `bytes` in total over `streams` parallel streams of one connection.
async fn bulk(conn: &Conn, streams: usize, bytes: u64, data: Arc<Vec<u8>>) -> Result<()> {
    let per_stream = bytes / streams as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (mut send, mut recv) = conn.open().await?;
        let data = data.clone();
        tasks.spawn(async move {
            exchange(&mut send, &mut recv, per_stream, &data).await?;
            send.shutdown().await?;
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Every request on one stream.
    Stream,
    /// A new stream per request on one connection.
    Connection,
    /// A new connection (and handshake) per request.
    Nothing,
}

impl Reuse {
    fn describe(self) -> &'static str {
        match self {
            Reuse::Stream => "one stream, reused",
            Reuse::Connection => "new stream per request, one connection",
            Reuse::Nothing => "new connection per request",
        }
    }
}

/// The latency of `count` sequential small requests.
async fn requests(link: &Link, reuse: Reuse, count: usize, data: &[u8]) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(count);
    let len = REQUEST_BYTES as u64;
    match reuse {
        Reuse::Stream => {
            let (mut send, mut recv) = link.connect().await?.open().await?;
            for _ in 0..count {
                let start = Instant::now();
                exchange(&mut send, &mut recv, len, data).await?;
                latencies.push(start.elapsed());
            }
            send.shutdown().await?;
        }
        Reuse::Connection => {
            let conn = link.connect().await?;
            for _ in 0..count {
                let start = Instant::now();
                let (mut send, mut recv) = conn.open().await?;
                exchange(&mut send, &mut recv, len, data).await?;
                send.shutdown().await?;
                latencies.push(start.elapsed());
            }
        }
        Reuse::Nothing => {
            for _ in 0..count {
                let start = Instant::now();
                let (mut send, mut recv) = link.connect().await?.open().await?;
                exchange(&mut send, &mut recv, len, data).await?;
                send.shutdown().await?;
                latencies.push(start.elapsed());
            }
        }
    }
    Ok(latencies)
}

/// One transport under test: its name, its receiver, and the sender's side of it.
struct Wire {
    transport: &'static str,
    variant: &'static str,
    receiver: ServerProcess,
    link: Link,
}

/// What `work` returned, how long it took, and the CPU time each side spent meanwhile.
struct Measured<T> {
    value: T,
    wall: Duration,
    sender_cpu: Duration,
    receiver_cpu: Duration,
}

fn measure<T>(
    runtime: &tokio::runtime::Runtime,
    receiver: &mut ServerProcess,
    work: impl Future<Output = Result<T>>,
) -> Result<Measured<T>> {
    let (receiver_before, sender_before) = (receiver.cpu()?, cpu_time());
    let start = Instant::now();
    let value = runtime.block_on(work)?;
    let wall = start.elapsed();
    let (receiver_after, sender_after) = (receiver.cpu()?, cpu_time());
    Ok(Measured {
        value,
        wall,
        sender_cpu: sender_after - sender_before,
        receiver_cpu: receiver_after - receiver_before,
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn read_sysctl(name: &str) -> String {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(path).map_or("?".into(), |s| s.trim().to_owned())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if flag(&args, "--serve").is_some() {
        return serve(&args);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let json = flag(&args, "--format").is_some_and(|f| f == "json");
    let gib: f64 = match flag(&args, "--gib") {
        Some(g) => g.parse().context("--gib N")?,
        None if quick => 0.25,
        None => BULK_GIB_DEFAULT as f64,
    };
    let bytes = (gib * GIB as f64) as u64 / CHUNK_BYTES as u64 * CHUNK_BYTES as u64;
    ensure!(bytes >= 4 * CHUNK_BYTES as u64, "--gib too small");
    let (runs, scale) = if quick { (1, 10) } else { (RUNS, 1) };

    let load_before = cairn_bench::load_average();
    let runtime = runtime()?;
    let mut wires = start_wires(&runtime)?;
    let data = Arc::new((0..CHUNK_BYTES).map(|i| (i * 7 + 1) as u8).collect::<Vec<u8>>());

    let bulk_rows = bulk_table(&runtime, &mut wires, bytes, runs, &data)?;
    let request_rows = request_table(&runtime, &mut wires, scale, &data)?;
    let load_after = cairn_bench::load_average();

    if json {
        let doc = json!({
            "bulk_bytes": bytes,
            "chunk_bytes": CHUNK_BYTES,
            "runs": runs,
            "net.core.rmem_max": read_sysctl("net.core.rmem_max"),
            "net.core.wmem_max": read_sysctl("net.core.wmem_max"),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "bulk": bulk_rows,
            "requests": request_rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_tables(bytes, runs, &bulk_rows, &request_rows);
        println!("\nLoad average (1, 5, 15 min) before: {load_before}; after: {load_after}");
    }
    Ok(())
}

/// A receiver process and a sender link for TCP and for each QUIC variant.
fn start_wires(runtime: &tokio::runtime::Runtime) -> Result<Vec<Wire>> {
    let keys = tempfile::tempdir().context("make a key directory")?;
    let ca = ClusterCa::generate("transport-bench")?;
    ca.issue(&EntityName::osd(SERVER_OSD))?.save(keys.path())?;
    let client = ca.issue(&EntityName::client("bench").map_err(anyhow::Error::msg)?)?;
    let keys_arg = keys.path().to_str().context("non-UTF-8 temp path")?;

    let receiver = ServerProcess::start(&["tcp"])?;
    let link = Link::Tcp(receiver.addr);
    let mut wires = vec![Wire { transport: "TCP", variant: "-", receiver, link }];
    for (name, tuning, extra) in variants() {
        let receiver = ServerProcess::start(&["quic", "--keys", keys_arg, "--variant", name])?;
        let _guard = runtime.enter();
        let link = match extra {
            None => {
                let endpoint = QuicEndpoint::bind(loopback(), &client, &tuning, false)?;
                Link::Quic { endpoint: Arc::new(endpoint), addr: receiver.addr }
            }
            Some(extra) => {
                let (endpoint, client) = raw_endpoint(&client, &tuning, extra, false)?;
                Link::Raw { endpoint, client, addr: receiver.addr }
            }
        };
        wires.push(Wire { transport: "QUIC", variant: name, receiver, link });
    }
    // The receivers have read their keys; the directory may go.
    drop(keys);
    Ok(wires)
}

fn bulk_table(
    runtime: &tokio::runtime::Runtime,
    wires: &mut [Wire],
    bytes: u64,
    runs: usize,
    data: &Arc<Vec<u8>>,
) -> Result<Vec<serde_json::Value>> {
    let gib = bytes as f64 / GIB as f64;
    let mut rows = Vec::new();
    for streams in [1usize, 4] {
        // Per wire: throughput, sender and receiver CPU-s per GiB of each run.
        let mut samples: Vec<[Vec<f64>; 3]> = vec![Default::default(); wires.len()];
        // The path MTU each bench-local QUIC connection ended its last run with.
        let mut mtus: Vec<Option<u16>> = vec![None; wires.len()];
        // Runs interleave the wires, so that drift in the machine's load spreads over all.
        for run in 0..runs {
            for (i, (wire, sample)) in wires.iter_mut().zip(&mut samples).enumerate() {
                eprintln!(
                    "bulk: {} {} x{streams}, run {}/{runs}",
                    wire.transport,
                    wire.variant,
                    run + 1
                );
                let conn = runtime.block_on(wire.link.connect())?;
                let m = measure(
                    runtime,
                    &mut wire.receiver,
                    bulk(&conn, streams, bytes, data.clone()),
                )?;
                if let Conn::Raw(conn) = &conn {
                    mtus[i] = Some(conn.stats().path.current_mtu);
                }
                sample[0].push(bytes as f64 / 1e6 / m.wall.as_secs_f64());
                sample[1].push(m.sender_cpu.as_secs_f64() / gib);
                sample[2].push(m.receiver_cpu.as_secs_f64() / gib);
            }
        }
        for ((wire, [mut rate, mut send, mut recv]), mtu) in wires.iter().zip(samples).zip(mtus) {
            let (low, high) = (
                rate.iter().copied().fold(f64::MAX, f64::min),
                rate.iter().copied().fold(f64::MIN, f64::max),
            );
            let (send, recv) = (median(&mut send), median(&mut recv));
            rows.push(json!({
                "transport": wire.transport,
                "variant": wire.variant,
                "streams": streams,
                "mb_per_s": median(&mut rate),
                "mb_per_s_min": low,
                "mb_per_s_max": high,
                "sender_cpu_s_per_gib": send,
                "receiver_cpu_s_per_gib": recv,
                "total_cpu_s_per_gib": send + recv,
                "path_mtu_bytes": mtu,
            }));
        }
    }
    Ok(rows)
}

fn request_table(
    runtime: &tokio::runtime::Runtime,
    wires: &mut [Wire],
    scale: usize,
    data: &[u8],
) -> Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    // Window sizes do not matter for 4 KiB requests: TCP and QUIC's default only.
    for wire in wires.iter_mut().filter(|w| w.variant == "-" || w.variant == "default") {
        for reuse in [Reuse::Stream, Reuse::Connection, Reuse::Nothing] {
            if matches!(wire.link, Link::Tcp(_)) && reuse == Reuse::Connection {
                continue; // TCP has no streams within a connection.
            }
            let count = if reuse == Reuse::Nothing { CONNECTIONS } else { REQUESTS } / scale;
            eprintln!("requests: {} {}", wire.transport, reuse.describe());
            let m = measure(runtime, &mut wire.receiver, requests(&wire.link, reuse, count, data))?;
            let mut latencies = m.value;
            latencies.sort();
            let micros = |d: Duration| d.as_secs_f64() * 1e6;
            rows.push(json!({
                "transport": wire.transport,
                "reuse": reuse.describe(),
                "requests": count,
                "p50_us": micros(cairn_bench::percentile(&latencies, 0.50)),
                "p99_us": micros(cairn_bench::percentile(&latencies, 0.99)),
                "requests_per_s": count as f64 / m.wall.as_secs_f64(),
                "sender_cpu_us_per_request": micros(m.sender_cpu) / count as f64,
                "receiver_cpu_us_per_request": micros(m.receiver_cpu) / count as f64,
            }));
        }
    }
    Ok(rows)
}

fn print_tables(
    bytes: u64,
    runs: usize,
    bulk_rows: &[serde_json::Value],
    request_rows: &[serde_json::Value],
) {
    let f = |row: &serde_json::Value, key: &str| row[key].as_f64().unwrap_or(f64::NAN);
    let s = |row: &serde_json::Value, key: &str| row[key].as_str().unwrap_or("?").to_owned();
    println!(
        "## Bulk transfer on loopback: {:.2} GiB in {} KiB writes, median of {runs} \
         (MB/s = 10^6 bytes/s)\n",
        bytes as f64 / GIB as f64,
        CHUNK_BYTES >> 10
    );
    println!(
        "Socket buffers are capped by net.core.rmem_max = {}, wmem_max = {}.\n",
        read_sysctl("net.core.rmem_max"),
        read_sysctl("net.core.wmem_max")
    );
    println!(
        "| transport | variant | streams | MB/s (min-max) | sender CPU-s/GiB | \
         receiver CPU-s/GiB | both | vs TCP | path MTU |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in bulk_rows {
        let tcp = bulk_rows
            .iter()
            .find(|r| r["transport"] == "TCP" && r["streams"] == row["streams"])
            .map_or(f64::NAN, |r| f(r, "total_cpu_s_per_gib"));
        println!(
            "| {} | {} | {} | {:.0} ({:.0}-{:.0}) | {:.2} | {:.2} | {:.2} | {:.1}x | {} |",
            s(row, "transport"),
            s(row, "variant"),
            row["streams"],
            f(row, "mb_per_s"),
            f(row, "mb_per_s_min"),
            f(row, "mb_per_s_max"),
            f(row, "sender_cpu_s_per_gib"),
            f(row, "receiver_cpu_s_per_gib"),
            f(row, "total_cpu_s_per_gib"),
            f(row, "total_cpu_s_per_gib") / tcp,
            row["path_mtu_bytes"].as_u64().map_or("-".into(), |m| m.to_string())
        );
    }
    println!(
        "\nVariants with GSO, ACK or MTU 8952 in their name run on a quinn endpoint built here \
         with proto's TLS and Tuning plus that setting; path MTU is where MTU discovery ended \
         (proto's endpoints go up to Tuning::udp_payload_max_bytes)."
    );
    println!(
        "\n## Small requests: {REQUEST_BYTES}-byte request, 8-byte answer, one at a time \
         (QUIC default tuning)\n"
    );
    println!(
        "| transport | reuse | requests | p50 µs | p99 µs | requests/s | \
         sender CPU µs/req | receiver CPU µs/req |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for row in request_rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            s(row, "transport"),
            s(row, "reuse"),
            row["requests"],
            f(row, "p50_us"),
            f(row, "p99_us"),
            f(row, "requests_per_s"),
            f(row, "sender_cpu_us_per_request"),
            f(row, "receiver_cpu_us_per_request")
        );
    }
}
