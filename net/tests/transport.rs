//! The transport and request layer between real endpoints: QUIC and TCP with mutual TLS on
//! loopback, and the in-memory transport, with the bad peers and bad frames a daemon must
//! survive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use net::frame::{self, Limits};
use net::identity::{ClusterCa, Credentials};
use net::rpc::{self, Reply, Service};
use net::transport::memory::{MemoryEndpoint, MemoryNetwork};
use net::transport::quic::{QuicEndpoint, Tuning};
use net::transport::tcp::TcpEndpoint;
use net::transport::{BoxFuture, Endpoint, Peer};
use proto::message::{MonRequest, Response};
use proto::{EntityName, ErrorCode, RemoteError, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Answers pings, with `now_ms` the caller's port (which connection it came on); admits
/// everyone but `client.banned`, and `client.late` once `revoked` is set.
struct Echo {
    me: EntityName,
    revoked: Arc<std::sync::atomic::AtomicBool>,
}

impl Echo {
    fn new(me: EntityName) -> Echo {
        Echo { me, revoked: Default::default() }
    }
}

impl Service for Echo {
    type Request = MonRequest;

    fn admit(&self, peer: &Peer) -> Result<(), RemoteError> {
        let name = peer.entity.to_string();
        if name == "client.banned"
            || (name == "client.late" && self.revoked.load(std::sync::atomic::Ordering::SeqCst))
        {
            Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!("identity {name} was revoked"),
            ))
        } else {
            Ok(())
        }
    }

    fn handle(
        self: Arc<Self>,
        peer: Peer,
        request: MonRequest,
        bulk: Bytes,
    ) -> BoxFuture<'static, Reply> {
        Box::pin(async move {
            match request {
                MonRequest::Ping { sent_ms } => Reply::One(
                    Response::Pong {
                        sent_ms,
                        now_ms: i64::from(peer.addr.port()),
                        from: self.me.clone(),
                        removed_at: None,
                        epoch: placement::Epoch(0),
                        map_hash: 0,
                    },
                    bulk,
                ),
                _ => Reply::error(ErrorCode::Unsupported, "only pings here"),
            }
        })
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct Cluster {
    ca: ClusterCa,
    server: Arc<dyn Endpoint>,
    server_name: EntityName,
}

fn quic_cluster() -> Cluster {
    let ca = ClusterCa::generate("test").unwrap();
    let server_name = EntityName::mon("a").unwrap();
    let server_creds = ca.issue(&server_name).unwrap();
    let server: Arc<dyn Endpoint> =
        Arc::new(QuicEndpoint::bind(loopback(), &server_creds, &Tuning::default(), true).unwrap());
    tokio::spawn(rpc::serve(
        server.clone(),
        Arc::new(Echo::new(server_name.clone())),
        Limits::default(),
    ));
    Cluster { ca, server, server_name }
}

fn client_endpoint(creds: &Credentials) -> Arc<dyn Endpoint> {
    Arc::new(QuicEndpoint::bind(loopback(), creds, &Tuning::default(), false).unwrap())
}

async fn ping(
    client: &Arc<dyn Endpoint>,
    cluster: &Cluster,
) -> Result<(Response, Bytes), TransportError> {
    let conn = client.connect(cluster.server.local_addr(), &cluster.server_name).await?;
    rpc::call(conn.as_ref(), &MonRequest::Ping { sent_ms: 7 }, b"payload", TIMEOUT).await
}

#[tokio::test]
async fn mutual_tls_connects_members_of_the_cluster() {
    let cluster = quic_cluster();
    let admin = cluster.ca.issue(&EntityName::client("admin").unwrap()).unwrap();
    let (response, bulk) = ping(&client_endpoint(&admin), &cluster).await.unwrap();
    assert!(
        matches!(&response, Response::Pong { sent_ms: 7, from, .. } if from == &cluster.server_name),
        "{response:?}"
    );
    assert_eq!(&bulk[..], b"payload");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let cluster = quic_cluster();
    let other = ClusterCa::generate("other").unwrap();
    let stranger = other.issue(&EntityName::client("admin").unwrap()).unwrap();
    let err = ping(&client_endpoint(&stranger), &cluster).await.unwrap_err();
    // The client also refuses the server: its certificate is from a CA it does not trust.
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let cluster = quic_cluster();
    // A client that trusts the cluster CA but presents no certificate of its own.
    let admin = cluster.ca.issue(&EntityName::client("admin").unwrap()).unwrap();
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(admin.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![net::identity::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(loopback()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let outcome = async {
        let conn = endpoint
            .connect(cluster.server.local_addr(), &cluster.server_name.cert_name())?
            .await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&frame::encode(&MonRequest::Ping { sent_ms: 1 }, &[]).unwrap()).await?;
        send.finish()?;
        let answer = recv.read_to_end(1 << 16).await?;
        Ok::<_, Box<dyn std::error::Error>>(answer)
    };
    let result = tokio::time::timeout(TIMEOUT, outcome).await.expect("the refusal is prompt");
    assert!(result.is_err(), "a client without a certificate got an answer: {result:?}");
}

#[tokio::test]
async fn a_refused_identity_learns_why() {
    let cluster = quic_cluster();
    let banned = cluster.ca.issue(&EntityName::client("banned").unwrap()).unwrap();
    let err = ping(&client_endpoint(&banned), &cluster).await.unwrap_err();
    match err {
        TransportError::Refused { reason, .. } => assert!(reason.contains("revoked"), "{reason}"),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_server_with_the_wrong_identity_is_refused() {
    let cluster = quic_cluster();
    let admin = cluster.ca.issue(&EntityName::client("admin").unwrap()).unwrap();
    let client = client_endpoint(&admin);
    // The certificate says mon.a; the client meant mon.b.
    let err = client
        .connect(cluster.server.local_addr(), &EntityName::mon("b").unwrap())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
}

/// Bad frames get an error answer on their stream; the connection keeps serving.
async fn bad_frames_are_answered(client: Arc<dyn Endpoint>, server: SocketAddr, name: EntityName) {
    let conn = client.connect(server, &name).await.unwrap();
    // Garbage where a message should be.
    let (mut send, mut recv) = conn.open().await.unwrap();
    let mut garbage = frame::encode(&MonRequest::Status, &[]).unwrap();
    garbage.truncate(frame::PREFIX_BYTES);
    garbage[4..8].copy_from_slice(&4u32.to_le_bytes());
    garbage.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    send.write_all(&garbage).await.unwrap();
    send.shutdown().await.unwrap();
    let (answer, _) =
        frame::read::<_, Response>(&mut recv, Limits::default()).await.unwrap().unwrap();
    assert!(matches!(&answer, Response::Error(e) if e.code == ErrorCode::Malformed), "{answer:?}");
    // A frame claiming a huge body: refused from the prefix alone.
    let (mut send, mut recv) = conn.open().await.unwrap();
    let mut huge = frame::encode(&MonRequest::Status, &[]).unwrap();
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    send.write_all(&huge[..frame::PREFIX_BYTES]).await.unwrap();
    send.flush().await.unwrap();
    let (answer, _) =
        frame::read::<_, Response>(&mut recv, Limits::default()).await.unwrap().unwrap();
    assert!(matches!(&answer, Response::Error(e) if e.code == ErrorCode::TooLarge), "{answer:?}");
    // A stream that ends inside a frame.
    let (mut send, mut recv) = conn.open().await.unwrap();
    send.write_all(&[1, 0, 0]).await.unwrap();
    send.shutdown().await.unwrap();
    let (answer, _) =
        frame::read::<_, Response>(&mut recv, Limits::default()).await.unwrap().unwrap();
    assert!(matches!(&answer, Response::Error(e) if e.code == ErrorCode::Malformed), "{answer:?}");
    // The same connection still answers.
    let (response, _) =
        rpc::call(conn.as_ref(), &MonRequest::Ping { sent_ms: 3 }, &[], TIMEOUT).await.unwrap();
    assert!(matches!(response, Response::Pong { sent_ms: 3, .. }));
    // Unknown requests get Unsupported, not silence.
    let err = rpc::call(conn.as_ref(), &MonRequest::Status, &[], TIMEOUT).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::Unsupported));
}

#[tokio::test]
async fn bad_frames_over_quic_get_errors_and_the_server_keeps_serving() {
    let cluster = quic_cluster();
    let admin = cluster.ca.issue(&EntityName::client("admin").unwrap()).unwrap();
    bad_frames_are_answered(
        client_endpoint(&admin),
        cluster.server.local_addr(),
        cluster.server_name.clone(),
    )
    .await;
}

#[tokio::test]
async fn the_memory_transport_behaves_the_same() {
    let network = MemoryNetwork::new();
    let name = EntityName::mon("a").unwrap();
    let addr: SocketAddr = "10.0.0.1:6789".parse().unwrap();
    let server: Arc<dyn Endpoint> =
        Arc::new(MemoryEndpoint::bind(&network, addr, name.clone()).unwrap());
    tokio::spawn(rpc::serve(server, Arc::new(Echo::new(name.clone())), Limits::default()));
    let client: Arc<dyn Endpoint> = Arc::new(
        MemoryEndpoint::bind(
            &network,
            "10.0.0.2:1".parse().unwrap(),
            EntityName::client("admin").unwrap(),
        )
        .unwrap(),
    );
    bad_frames_are_answered(client.clone(), addr, name.clone()).await;
    let wrong = client.connect(addr, &EntityName::mon("b").unwrap()).await.err().unwrap();
    assert!(matches!(wrong, TransportError::Refused { .. }));
    let nobody = client.connect("10.0.0.9:1".parse().unwrap(), &name).await.err().unwrap();
    assert!(matches!(nobody, TransportError::Connect { .. }));
    let banned: Arc<dyn Endpoint> = Arc::new(
        MemoryEndpoint::bind(
            &network,
            "10.0.0.3:1".parse().unwrap(),
            EntityName::client("banned").unwrap(),
        )
        .unwrap(),
    );
    let conn = banned.connect(addr, &name).await.unwrap();
    let err =
        rpc::call(conn.as_ref(), &MonRequest::Ping { sent_ms: 1 }, &[], TIMEOUT).await.unwrap_err();
    match err {
        TransportError::Refused { reason, .. } => assert!(reason.contains("revoked"), "{reason}"),
        other => panic!("expected a refusal, got {other}"),
    }
}

/// A TCP server for `Echo` in a runtime of its own, so that a test can stop it the way a
/// killed daemon stops: every connection closed at once.
struct TcpServer {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    revoked: Arc<std::sync::atomic::AtomicBool>,
}

impl TcpServer {
    fn start(ca: &ClusterCa, name: &EntityName, addr: SocketAddr) -> TcpServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let creds = ca.issue(name).unwrap();
        let echo = Echo::new(name.clone());
        let revoked = echo.revoked.clone();
        let server: Arc<dyn Endpoint> = {
            let _inside = runtime.enter();
            Arc::new(TcpEndpoint::bind(addr, &creds).unwrap())
        };
        let addr = server.local_addr();
        runtime.spawn(rpc::serve(server, Arc::new(echo), Limits::default()));
        TcpServer { runtime: Some(runtime), addr, revoked }
    }

    /// Stops it and waits until its tasks (and so its sockets) are gone.
    async fn kill(mut self) {
        let runtime = self.runtime.take().unwrap();
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(TIMEOUT)).await.unwrap();
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn tcp_client(ca: &ClusterCa, name: &str) -> Arc<dyn Endpoint> {
    let creds = ca.issue(&EntityName::client(name).unwrap()).unwrap();
    Arc::new(TcpEndpoint::client(&creds).unwrap())
}

/// The port the server saw a ping come from, and its payload.
async fn tcp_ping(
    conn: &dyn net::transport::Connection,
    payload: &[u8],
) -> Result<(i64, Bytes), TransportError> {
    let (response, bulk) =
        rpc::call(conn, &MonRequest::Ping { sent_ms: 1 }, payload, TIMEOUT).await?;
    match response {
        Response::Pong { now_ms: port, .. } => Ok((port, bulk)),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[tokio::test]
async fn tcp_carries_requests_of_every_size_and_reuses_its_connections() {
    let ca = ClusterCa::generate("test").unwrap();
    let name = EntityName::osd(0);
    let server = TcpServer::start(&ca, &name, loopback());
    let client = tcp_client(&ca, "admin");
    let conn = client.connect(server.addr, &name).await.unwrap();
    assert_eq!(conn.peer().entity, name);
    // One after another: every request on the same connection.
    let mut ports = std::collections::BTreeSet::new();
    for size in [0usize, 1, 4096, 65_532, 65_536, (4 << 20) + 3] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let (port, echoed) = tcp_ping(conn.as_ref(), &payload).await.unwrap();
        assert_eq!(echoed.len(), size);
        assert!(echoed[..] == payload[..], "payload of {size} bytes came back changed");
        ports.insert(port);
    }
    assert_eq!(ports.len(), 1, "sequential requests used connections from ports {ports:?}");
    // At once: each on a connection of its own, every answer to its own request.
    let calls = (0..24u8).map(|i| {
        let conn = conn.clone();
        async move {
            let payload = vec![i; 1000 + usize::from(i) * 3000];
            let (port, echoed) = tcp_ping(conn.as_ref(), &payload).await.unwrap();
            assert!(echoed[..] == payload[..], "request {i} got another's answer");
            port
        }
    });
    let ports: std::collections::BTreeSet<i64> =
        futures::future::join_all(calls).await.into_iter().collect();
    assert!(ports.len() > 1 && ports.len() <= 24, "{} connections", ports.len());
}

#[tokio::test]
async fn tcp_refuses_strangers_and_wrong_servers_and_says_why() {
    let ca = ClusterCa::generate("test").unwrap();
    let name = EntityName::osd(1);
    let server = TcpServer::start(&ca, &name, loopback());
    let other = ClusterCa::generate("other").unwrap();
    let err = tcp_client(&other, "admin").connect(server.addr, &name).await.err().unwrap();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    let err =
        tcp_client(&ca, "admin").connect(server.addr, &EntityName::osd(2)).await.err().unwrap();
    match err {
        TransportError::Refused { reason, .. } => assert!(reason.contains("osd.1"), "{reason}"),
        other => panic!("expected a refusal, got {other}"),
    }
    // A revoked identity: refused at its first request, with the server's reason.
    let conn = tcp_client(&ca, "banned").connect(server.addr, &name).await.unwrap();
    let err = tcp_ping(conn.as_ref(), b"x").await.unwrap_err();
    match err {
        TransportError::Refused { reason, .. } => assert!(reason.contains("revoked"), "{reason}"),
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(conn.is_closed());
    // Revoked while connected: the next request learns it.
    let conn = tcp_client(&ca, "late").connect(server.addr, &name).await.unwrap();
    tcp_ping(conn.as_ref(), b"x").await.unwrap();
    server.revoked.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = tcp_ping(conn.as_ref(), b"x").await.unwrap_err();
    match err {
        TransportError::Refused { reason, .. } => {
            assert!(reason.contains("client.late was revoked"), "{reason}")
        }
        other => panic!("expected a refusal, got {other}"),
    }
    let again = tcp_ping(conn.as_ref(), b"x").await.unwrap_err();
    assert!(matches!(again, TransportError::Refused { .. }), "{again}");
}

#[tokio::test]
async fn bad_frames_and_bad_chunks_over_tcp_get_errors_and_the_server_keeps_serving() {
    let ca = ClusterCa::generate("test").unwrap();
    let name = EntityName::osd(3);
    let server = TcpServer::start(&ca, &name, loopback());
    bad_frames_are_answered(tcp_client(&ca, "admin"), server.addr, name.clone()).await;
    // Not TLS at all.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(TIMEOUT, async {
        while raw.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "a peer speaking HTTP was not dropped");
    // TLS, then a chunk header announcing more than any chunk may hold.
    let creds = ca.issue(&EntityName::client("admin").unwrap()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(creds.client_tls().unwrap()));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut tls = connector.connect(net::identity::server_name(&name).unwrap(), tcp).await.unwrap();
    tls.write_all(&u32::MAX.wrapping_sub(1).to_le_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let closed = tokio::time::timeout(TIMEOUT, async {
        while tls.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "a connection announcing a 4 GiB chunk was not dropped");
    let conn = tcp_client(&ca, "admin").connect(server.addr, &name).await.unwrap();
    tcp_ping(conn.as_ref(), b"still here").await.unwrap();
}

#[tokio::test]
async fn a_tcp_client_survives_its_server_dying_and_coming_back() {
    let ca = ClusterCa::generate("test").unwrap();
    let name = EntityName::osd(4);
    let server = TcpServer::start(&ca, &name, loopback());
    let addr = server.addr;
    let conn = tcp_client(&ca, "admin").connect(addr, &name).await.unwrap();
    let calls = (0..4).map(|_| tcp_ping(conn.as_ref(), b"before"));
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    server.kill().await;
    // Dead: a prompt error, not a hang.
    let err = tcp_ping(conn.as_ref(), b"while down").await.unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err}");
    // Back on the same port: the pool's idle connections to the old process are found
    // dead before use, and the very first request succeeds.
    let _server = TcpServer::start(&ca, &name, addr);
    let (_, echoed) = tcp_ping(conn.as_ref(), b"after").await.unwrap();
    assert_eq!(&echoed[..], b"after");
}

#[tokio::test]
async fn tcp_calls_cut_short_leave_the_pool_in_step() {
    let ca = ClusterCa::generate("test").unwrap();
    let name = EntityName::osd(5);
    let server = TcpServer::start(&ca, &name, loopback());
    let conn = tcp_client(&ca, "admin").connect(server.addr, &name).await.unwrap();
    // Calls abandoned mid-request or mid-answer (8 MiB each way in 1 ms cannot finish).
    let big = vec![7u8; 8 << 20];
    for _ in 0..6 {
        let cut = rpc::call(
            conn.as_ref(),
            &MonRequest::Ping { sent_ms: 1 },
            &big,
            Duration::from_millis(1),
        );
        let err = cut.await.unwrap_err();
        assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    }
    // Every later call gets its own answer, promptly.
    for i in 0..12u8 {
        let payload = vec![i; 100 + usize::from(i)];
        let (_, echoed) = tokio::time::timeout(TIMEOUT, tcp_ping(conn.as_ref(), &payload))
            .await
            .expect("a call after cut-short ones answers within the timeout")
            .unwrap();
        assert_eq!(&echoed[..], &payload[..], "call {i} got another stream's bytes");
    }
}
