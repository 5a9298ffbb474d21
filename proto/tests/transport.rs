//! The transport and request layer between real endpoints: QUIC with mutual TLS on
//! loopback, and the in-memory transport, with the bad peers and bad frames a daemon must
//! survive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::frame::{self, Limits};
use proto::identity::{ClusterCa, Credentials};
use proto::message::{Request, Response};
use proto::rpc::{self, Reply, Service};
use proto::transport::memory::{MemoryEndpoint, MemoryNetwork};
use proto::transport::quic::{QuicEndpoint, Tuning};
use proto::transport::{BoxFuture, Endpoint, Peer};
use proto::{EntityName, ErrorCode, TransportError};
use tokio::io::AsyncWriteExt;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Answers pings; admits everyone but `client.banned`.
struct Echo {
    me: EntityName,
}

impl Service for Echo {
    fn admit(&self, peer: &Peer) -> Result<(), String> {
        if peer.entity.to_string() == "client.banned" {
            Err("identity client.banned was revoked".into())
        } else {
            Ok(())
        }
    }

    fn handle(
        self: Arc<Self>,
        _peer: Peer,
        request: Request,
        bulk: Bytes,
    ) -> BoxFuture<'static, Reply> {
        Box::pin(async move {
            match request {
                Request::Ping { sent_ms } => Reply::One(
                    Response::Pong { sent_ms, now_ms: 0, from: self.me.clone(), removed_at: None },
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
        Arc::new(Echo { me: server_name.clone() }),
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
    rpc::call(conn.as_ref(), &Request::Ping { sent_ms: 7 }, b"payload", TIMEOUT).await
}

#[tokio::test]
async fn mutual_tls_connects_members_of_the_cluster() {
    let cluster = quic_cluster();
    let admin = cluster.ca.issue(&EntityName::client("admin").unwrap()).unwrap();
    let (response, bulk) = ping(&client_endpoint(&admin), &cluster).await.unwrap();
    assert_eq!(
        response,
        Response::Pong {
            sent_ms: 7,
            now_ms: 0,
            from: cluster.server_name.clone(),
            removed_at: None
        }
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
    tls.alpn_protocols = vec![proto::identity::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(loopback()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let outcome = async {
        let conn = endpoint
            .connect(cluster.server.local_addr(), &cluster.server_name.cert_name())?
            .await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&frame::encode(&Request::Ping { sent_ms: 1 }, &[]).unwrap()).await?;
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
    let mut garbage = frame::encode(&Request::Status, &[]).unwrap();
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
    let mut huge = frame::encode(&Request::Status, &[]).unwrap();
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    send.write_all(&huge[..frame::PREFIX_BYTES]).await.unwrap();
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
        rpc::call(conn.as_ref(), &Request::Ping { sent_ms: 3 }, &[], TIMEOUT).await.unwrap();
    assert!(matches!(response, Response::Pong { sent_ms: 3, .. }));
    // Unknown requests get Unsupported, not silence.
    let err = rpc::call(conn.as_ref(), &Request::Status, &[], TIMEOUT).await.unwrap_err();
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
    tokio::spawn(rpc::serve(server, Arc::new(Echo { me: name.clone() }), Limits::default()));
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
        rpc::call(conn.as_ref(), &Request::Ping { sent_ms: 1 }, &[], TIMEOUT).await.unwrap_err();
    match err {
        TransportError::Refused { reason, .. } => assert!(reason.contains("revoked"), "{reason}"),
        other => panic!("expected a refusal, got {other}"),
    }
}
