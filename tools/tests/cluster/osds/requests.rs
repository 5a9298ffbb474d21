//! What an OSD refuses: stale epochs, wrong primaries, malformed frames, clients outside
//! their caps.

use super::*;

/// Requests sent straight to OSDs, the way a client with an old map or a broken encoder
/// would send them.
#[test]
fn stale_epochs_wrong_primaries_and_malformed_requests_get_clear_errors() {
    use bytes::Bytes;
    use net::identity::Credentials;
    use net::transport::Endpoint;
    use net::transport::quic::{QuicEndpoint, Tuning};
    use proto::message::{OsdRequest, new_request_id};
    use proto::osd::{ObjectName, ObjectOp};
    use proto::{EntityName, ErrorCode};

    let (c, _osds, work) = replicated_cluster(4);
    wait_clean(&c, 4);
    put(&c, &work, "kept", &pattern(5, 70_000));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = client::ClientConfig::load(&c.config()).unwrap();
    let admin = Credentials::load(c.dir.path(), &EntityName::client("admin").unwrap()).unwrap();
    runtime.block_on(async move {
        let mon = std::sync::Arc::new(client::MonClient::connect(config).unwrap());
        let map = mon.map().await.unwrap();
        let pool = map.pool_by_name("rbd").unwrap().id;
        let object = ObjectName { namespace: String::new(), name: b"kept".to_vec() };
        let pg = map.object_pg(pool, "", &object.name).unwrap();
        let mapping = map.pg_mapping(pg).unwrap();
        let primary = mapping.acting_primary.unwrap();
        let replica = mapping.acting.osds().find(|&o| o != primary).unwrap();
        let endpoint =
            QuicEndpoint::bind("127.0.0.1:0".parse().unwrap(), &admin, &Tuning::default(), false)
                .unwrap();
        let connect = |osd: placement::OsdId| {
            let addr = map.osd(osd).unwrap().addr.clone().unwrap();
            let endpoint = &endpoint;
            async move {
                endpoint
                    .connect(addr.parse().unwrap(), &EntityName::osd(osd.0))
                    .await
                    .unwrap()
            }
        };
        let read = |epoch| OsdRequest::ObjectOps {
            pg,
            epoch,
            reqid: new_request_id(),
            object: object.clone(),
            ops: vec![ObjectOp::Read { offset: 0, len: 100 }],
            instance: 1,
            snap: Default::default(),
        };
        let call = |conn: std::sync::Arc<dyn net::transport::Connection>, request: OsdRequest| async move {
            net::rpc::call(conn.as_ref(), &request, &[], Duration::from_secs(10)).await
        };
        let at_replica = connect(replica).await;
        let at_primary = connect(primary).await;
        // A replica is not the primary: the client is told to fetch a newer map.
        let e = call(at_replica.clone(), read(map.epoch())).await.unwrap_err();
        assert_eq!(e.remote_code(), Some(ErrorCode::StaleEpoch), "{e}");
        assert!(e.to_string().contains("not the primary"), "{e}");
        // An epoch from the future waits for the map, then says so.
        let future = placement::Epoch(map.epoch().0 + 1000);
        let e = call(at_primary.clone(), read(future)).await.unwrap_err();
        assert_eq!(e.remote_code(), Some(ErrorCode::Unavailable), "{e}");
        assert!(e.to_string().contains("no map at epoch"), "{e}");
        // No ops, or data the ops do not account for.
        let empty = OsdRequest::ObjectOps {
            pg,
            epoch: map.epoch(),
            reqid: new_request_id(),
            object: object.clone(),
            ops: vec![],
            instance: 1,
            snap: Default::default(),
        };
        let e = call(at_primary.clone(), empty).await.unwrap_err();
        assert_eq!(e.remote_code(), Some(ErrorCode::Invalid), "{e}");
        let write = OsdRequest::ObjectOps {
            pg,
            epoch: map.epoch(),
            reqid: new_request_id(),
            object: object.clone(),
            ops: vec![ObjectOp::WriteFull { len: 3 }],
            instance: 1,
            snap: Default::default(),
        };
        let e = net::rpc::call(at_primary.as_ref(), &write, b"too long", Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(e.remote_code(), Some(ErrorCode::Invalid), "{e}");
        // A PG the pool does not have.
        let nowhere = OsdRequest::ObjectOps {
            pg: placement::PgId { pool, seed: 999 },
            epoch: map.epoch(),
            reqid: new_request_id(),
            object: object.clone(),
            ops: vec![ObjectOp::Stat],
            instance: 1,
            snap: Default::default(),
        };
        let e = call(at_primary.clone(), nowhere).await.unwrap_err();
        assert_eq!(e.remote_code(), Some(ErrorCode::NotFound), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
        // And the primary still serves the object, unchanged.
        let (_, data) = call(at_primary, read(map.epoch())).await.unwrap();
        assert!(data == Bytes::from(pattern(5, 70_000)).slice(..100));
    });
    drop(runtime);
}

#[test]
fn osd_caps_limit_clients_to_their_pools_and_revocation_takes_effect() {
    let c = Cluster::start(3);
    let _osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    for pool in ["rbd", "images"] {
        c.ok(&["pool", "create", pool, "replicated", "--size", "3", "--pg-num", "4"]);
    }
    wait_clean(&c, 8);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    put(&c, &work, "admins", &pattern(1, 5000));
    // An identity's client.toml, as `auth add --out` leaves its certificate.
    let identity = |entity: &str, osd_caps: &str| {
        let dir = c.dir.path().join(entity);
        let caps = ["--mon-caps", "allow r", "--osd-caps", osd_caps];
        c.ok(&[&["auth", "add", entity][..], &caps, &["--out", path_str(&dir)]].concat());
        c.config_for(entity, &dir)
    };
    let glance = identity("client.glance", "allow rw pool=images");
    let viewer = identity("client.viewer", "allow r pool=rbd");
    let file = work.join("img.in");
    std::fs::write(&file, pattern(2, 70_000)).unwrap();
    let as_ = |conf: &std::path::Path, args: &[&str]| {
        Command::new(BIN).arg("--conf").arg(conf).args(args).output().unwrap()
    };
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let refused = |out: std::process::Output| -> String {
        assert!(!out.status.success(), "should have been refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    ok(as_(&glance, &["obj", "put", "images", "img", path_str(&file)]));
    ok(as_(&glance, &["obj", "stat", "images", "img"]));
    let e = refused(as_(&glance, &["obj", "put", "rbd", "img", path_str(&file)]));
    assert!(e.contains("client.glance may not write to pool 'rbd'"), "{e}");
    let e = refused(as_(&glance, &["obj", "stat", "rbd", "admins"]));
    assert!(e.contains("may not read from pool 'rbd'"), "{e}");
    // Read-only on one pool.
    ok(as_(&viewer, &["obj", "get", "rbd", "admins", path_str(&work.join("v.out"))]));
    assert!(std::fs::read(work.join("v.out")).unwrap() == pattern(1, 5000));
    let e = refused(as_(&viewer, &["obj", "put", "rbd", "v", path_str(&file)]));
    assert!(e.contains("may not write to pool 'rbd'"), "{e}");
    // Nothing refused reached the store.
    assert!(c.fails(&["obj", "stat", "rbd", "img"]).contains("does not exist"));
    assert!(c.fails(&["obj", "stat", "rbd", "v"]).contains("does not exist"));

    // Revoked: a session opened before keeps its connections to the OSDs, and they stop
    // serving it once their cached caps expire (10 s).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = client::ClientConfig::load(&viewer).unwrap();
    let objects = runtime.block_on(async {
        let mon = std::sync::Arc::new(client::MonClient::connect(config).unwrap());
        client::objects::Objects::new(mon).await.unwrap()
    });
    let name = proto::osd::ObjectName { namespace: String::new(), name: b"admins".to_vec() };
    runtime.block_on(objects.read("rbd", &name, 0, 10)).unwrap();
    c.ok(&["auth", "rm", "client.viewer"]);
    let refusal = common::wait_for("client.viewer refused", Duration::from_secs(30), || {
        match runtime.block_on(objects.read("rbd", &name, 0, 10)) {
            Ok(_) => Err("still served after rm".to_owned()),
            Err(e) => Ok(e),
        }
    });
    assert_eq!(refusal.code(), Some(proto::ErrorCode::PermissionDenied), "{refusal}");
    assert!(refusal.to_string().contains("unknown to this cluster"), "{refusal}");
    drop(objects);
    drop(runtime);
    // The admin is not affected by any of it.
    assert!(get(&c, &work, "admins") == pattern(1, 5000));
}
