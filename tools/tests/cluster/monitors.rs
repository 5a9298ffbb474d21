//! The monitor quorum as separate processes: failover, persistence, quorum loss, membership,
//! racing commands, identities, bad frames, failure detection, clock skew, `cairn dev up`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{self, BIN, Cluster, free_port, ms};
use net::frame::{self, Limits};
use net::identity::{ClusterCa, Credentials};
use net::transport::Endpoint;
use net::transport::quic::{QuicEndpoint, Tuning};
use proto::message::{MonRequest, Response};
use proto::{EntityName, ErrorCode};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|v| v[key].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_new_leader_commits_after_the_old_one_is_killed_and_nothing_is_lost() {
    let mut c = Cluster::start(3);
    c.ok(&["pool", "create", "before", "--pg-num", "8"]);
    let old = c.leader();
    c.kill_mon(c.index(&old));
    let killed = Instant::now();
    c.ok(&["pool", "create", "after", "--pg-num", "8", "--timeout", "30"]);
    // Election timeouts are 0.6-1.2 s: a few of them, not tens of seconds.
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "took {} ms to commit after the leader died{}",
        ms(killed),
        c.logs()
    );
    let pools = names(&c.json(&["pool", "ls"]), "name");
    assert_eq!(pools, ["before", "after"]);
    let status = c.wait_status("MON_DOWN for the killed leader", Duration::from_secs(15), |s| {
        s["checks"].as_array().unwrap().iter().any(|ch| ch["code"] == "MON_DOWN")
            && s["leader"].is_string()
    });
    assert_ne!(status["leader"].as_str().expect("a leader"), old, "{status}");
    assert_eq!(status["health"], "HEALTH_WARN");
}

#[test]
fn restarting_every_monitor_keeps_the_maps() {
    let mut c = Cluster::start(3);
    c.ok(&["pool", "create", "rbd", "--pg-num", "16"]);
    c.ok(&["osd", "create"]);
    c.ok(&["osd", "crush-set", "0", "1.5", "root=default", "host=node1"]);
    c.ok(&["osd", "set", "noout"]);
    c.ok(&["config", "set", "mon.down_out_interval", "1234"]);
    let before = c.json(&["osd", "dump"]);
    for i in 0..3 {
        c.kill_mon(i);
    }
    for i in 0..3 {
        c.start_mon(i);
    }
    c.wait_status("a quorum again", Duration::from_secs(30), |s| s["leader"].is_string());
    let after = c.json(&["osd", "dump"]);
    assert_eq!(before, after, "the map changed across a restart of every monitor");
    // And the cluster still takes changes.
    c.ok(&["pool", "create", "more", "--pg-num", "8"]);
}

#[test]
fn a_minority_cannot_commit_and_says_why() {
    let mut c = Cluster::start(3);
    c.kill_mon(1);
    c.kill_mon(2);
    let started = Instant::now();
    let err = c.fails(&["pool", "create", "lonely", "--pg-num", "8", "--timeout", "4"]);
    assert!(started.elapsed() < Duration::from_secs(15), "the refusal took {} ms", ms(started));
    assert!(
        err.contains("quorum") || err.contains("no leader") || err.contains("in time"),
        "{err}"
    );
    // The surviving monitor still answers status, and shows itself without a quorum.
    let status = c.wait_status("no quorum", Duration::from_secs(15), |s| s["leader"].is_null());
    assert!(status["monitors"].as_array().unwrap().iter().all(|m| m["in_quorum"] == false));
    // One more monitor back: a majority again.
    c.start_mon(1);
    c.wait_status("a leader", Duration::from_secs(30), |s| s["leader"].is_string());
    c.ok(&["pool", "create", "back", "--pg-num", "8", "--timeout", "30"]);
    assert_eq!(
        names(&c.json(&["pool", "ls"]), "name"),
        ["back"],
        "the refused pool must not exist"
    );
}

#[test]
fn monitors_join_and_leave() {
    let mut c = Cluster::start(3);
    let addr = format!("127.0.0.1:{}", free_port());
    let dir = c.dir.path().join("mon.d");
    c.ok(&["mon", "add", "d", &addr, "--dir", dir.to_str().unwrap()]);
    c.mons.push(common::Mon { name: "d".into(), dir, addr, child: None, env: vec![] });
    c.start_mon(3);
    c.wait_status("four monitors in quorum", Duration::from_secs(30), |s| {
        let mons = s["monitors"].as_array().unwrap();
        mons.len() == 4 && mons.iter().all(|m| m["in_quorum"] == true)
    });
    c.ok(&["mon", "rm", "a"]);
    // A removed monitor learns it from its peers and stops by itself.
    let exit = c.wait_exit(0, Duration::from_secs(30));
    assert!(exit.success(), "mon.a exited with {exit}");
    assert!(c.logs().contains("was removed from the monitors"), "{}", c.logs());
    c.wait_status("mon.a gone", Duration::from_secs(30), |s| {
        names(&s["monitors"], "name") == ["b", "c", "d"]
    });
    c.ok(&["pool", "create", "after-membership", "--pg-num", "8", "--timeout", "30"]);
    // The pool's PGs have no OSDs to live on: the only complaint left is that.
    let status = c.wait_status("b, c, d in quorum", Duration::from_secs(30), |s| {
        let codes: Vec<&str> =
            s["checks"].as_array().unwrap().iter().filter_map(|c| c["code"].as_str()).collect();
        codes == ["PG_INACTIVE"]
    });
    assert_eq!(names(&status["monitors"], "name"), ["b", "c", "d"]);
    assert!(status["monitors"].as_array().unwrap().iter().all(|m| m["in_quorum"] == true));
    assert_eq!(status["pg_summary"]["states"]["unknown"], 8, "{status}");
}

#[test]
fn racing_creates_of_one_pool_make_exactly_one() {
    let c = Cluster::start(3);
    for round in 0..4 {
        let name = format!("race{round}");
        let spawn = || {
            std::process::Command::new(BIN)
                .arg("--conf")
                .arg(c.config())
                .args(["pool", "create", &name, "--pg-num", "8"])
                .output()
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(spawn);
            let b = s.spawn(spawn);
            (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
        });
        let succeeded = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert_eq!(succeeded, 1, "round {round}: {a:?} {b:?}");
        let loser = if a.status.success() { &b } else { &a };
        let err = String::from_utf8_lossy(&loser.stderr);
        assert!(err.contains("already exists"), "round {round}: {err}");
    }
    assert_eq!(names(&c.json(&["pool", "ls"]), "name"), ["race0", "race1", "race2", "race3"]);
}

/// A client configuration for `entity` with credentials in `keyring`.

#[test]
fn identities_are_checked_and_revocation_takes_effect() {
    let c = Cluster::start(3);
    let run = |conf: &std::path::Path, args: &[&str]| {
        std::process::Command::new(BIN)
            .arg("--conf")
            .arg(conf)
            .args(args)
            .args(["--timeout", "3"])
            .output()
            .unwrap()
    };
    // An identity the cluster issued, with read-only caps.
    let x_dir = c.dir.path().join("x");
    c.ok(&["auth", "add", "client.x", "--mon-caps", "allow r", "--out", x_dir.to_str().unwrap()]);
    let x_conf = c.config_for("client.x", &x_dir);
    assert!(run(&x_conf, &["status"]).status.success());
    let denied = run(&x_conf, &["pool", "create", "nope"]);
    assert!(String::from_utf8_lossy(&denied.stderr).contains("lacks mon 'allow rw'"), "{denied:?}");
    // Revoked: refused outright.
    c.ok(&["auth", "rm", "client.x"]);
    let revoked = run(&x_conf, &["status"]);
    assert!(!revoked.status.success());
    let err = String::from_utf8_lossy(&revoked.stderr);
    assert!(err.contains("unknown to this cluster") || err.contains("revoked"), "{err}");
    // A certificate from the right CA for an identity never registered.
    let ca_dir = &c.mons[0].dir;
    let ca = ClusterCa::from_pem(
        std::fs::read_to_string(ca_dir.join("ca.crt")).unwrap(),
        std::fs::read_to_string(ca_dir.join("ca.key")).unwrap(),
    )
    .unwrap();
    let ghost_dir = c.dir.path().join("ghost");
    ca.issue(&EntityName::client("ghost").unwrap()).unwrap().save(&ghost_dir).unwrap();
    let ghost = run(&c.config_for("client.ghost", &ghost_dir), &["status"]);
    assert!(
        String::from_utf8_lossy(&ghost.stderr).contains("unknown to this cluster"),
        "{ghost:?}"
    );
    // A certificate from another cluster's CA.
    let stranger_dir = c.dir.path().join("stranger");
    let other = ClusterCa::generate("other").unwrap();
    other.issue(&EntityName::client("admin").unwrap()).unwrap().save(&stranger_dir).unwrap();
    let stranger = run(&c.config_for("client.admin", &stranger_dir), &["status"]);
    assert!(!stranger.status.success());
    assert!(String::from_utf8_lossy(&stranger.stderr).contains("TLS"), "{stranger:?}");
    // None of that disturbed the cluster.
    assert_eq!(c.status().unwrap()["health"], "HEALTH_OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_get_errors_and_the_monitor_keeps_serving() {
    let c = tokio::task::spawn_blocking(|| Cluster::start(3)).await.unwrap();
    let admin = Credentials::load(c.dir.path(), &EntityName::client("admin").unwrap()).unwrap();
    let endpoint =
        QuicEndpoint::bind("127.0.0.1:0".parse().unwrap(), &admin, &Tuning::default(), false)
            .unwrap();
    let conn = endpoint
        .connect(c.mons[0].addr.parse().unwrap(), &EntityName::mon("a").unwrap())
        .await
        .unwrap();
    let answer = |bytes: Vec<u8>, finish: bool| {
        let conn = conn.clone();
        async move {
            let (mut send, mut recv) = conn.open().await.unwrap();
            send.write_all(&bytes).await.unwrap();
            if finish {
                send.shutdown().await.unwrap();
            }
            frame::read::<_, Response>(&mut recv, Limits::default()).await.unwrap().unwrap().0
        }
    };
    let mut garbage = frame::encode(&MonRequest::Status, &[]).unwrap();
    garbage.truncate(frame::PREFIX_BYTES);
    garbage[4..8].copy_from_slice(&8u32.to_le_bytes());
    garbage.extend_from_slice(&[0xfe; 8]);
    let malformed = answer(garbage, true).await;
    assert!(
        matches!(&malformed, Response::Error(e) if e.code == ErrorCode::Malformed),
        "{malformed:?}"
    );
    let mut huge = frame::encode(&MonRequest::Status, &[]).unwrap();
    huge[4..8].copy_from_slice(&(64u32 << 20).to_le_bytes());
    let oversized = answer(huge[..frame::PREFIX_BYTES].to_vec(), false).await;
    assert!(
        matches!(&oversized, Response::Error(e) if e.code == ErrorCode::TooLarge),
        "{oversized:?}"
    );
    // A client's bulk payload may not be map-sized (only monitors send those).
    let mut bulky = frame::encode(&MonRequest::Status, &[]).unwrap();
    bulky[8..12].copy_from_slice(&(1u32 << 20).to_le_bytes());
    let refused = answer(bulky, false).await;
    assert!(matches!(&refused, Response::Error(e) if e.code == ErrorCode::TooLarge), "{refused:?}");
    let wrong_version = answer(vec![9; 12], true).await;
    assert!(
        matches!(&wrong_version, Response::Error(e) if e.code == ErrorCode::Unsupported),
        "{wrong_version:?}"
    );
    // A request only monitors may send.
    let raft = net::rpc::call(
        conn.as_ref(),
        &MonRequest::Raft(proto::message::RaftRpc::Vote),
        b"junk",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raft.unwrap_err().remote_code(), Some(ErrorCode::PermissionDenied));
    let (status, _) =
        net::rpc::call(conn.as_ref(), &MonRequest::Status, &[], Duration::from_secs(5))
            .await
            .unwrap();
    assert!(matches!(status, Response::Status(_)));
    tokio::task::spawn_blocking(move || drop(c)).await.unwrap();
}

/// Acts as an OSD through the client library.
async fn osd_client(c: &Cluster, osd: u32) -> Arc<client::MonClient> {
    let dir = c.dir.path().join(format!("osd.{osd}"));
    c.ok(&["auth", "add", &format!("osd.{osd}"), "--out", dir.to_str().unwrap()]);
    let config = client::ClientConfig::load(&c.config_for(&format!("osd.{osd}"), &dir)).unwrap();
    Arc::new(client::MonClient::connect(config).unwrap())
}

fn osd_state(c: &Cluster, osd: u32) -> (bool, bool) {
    let dump = c.json(&["osd", "dump"]);
    let state = &dump["osds"][osd.to_string()];
    (state["up"].as_bool().unwrap(), state["in"].as_bool().unwrap())
}

fn wait_osd(c: &Cluster, osd: u32, want: (bool, bool), within: Duration) -> Duration {
    let started = Instant::now();
    common::wait_for(&format!("osd.{osd} to become (up, in) {want:?}"), within, || {
        let state = osd_state(c, osd);
        if state == want { Ok(()) } else { Err(format!("{state:?}{}", c.logs())) }
    });
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_osd_that_stops_beaconing_is_marked_down_then_out_and_back_when_it_boots() {
    let c = tokio::task::spawn_blocking(|| {
        let c = Cluster::start(3);
        c.ok(&["config", "set", "mon.osd_beacon_grace", "2"]);
        c.ok(&["config", "set", "mon.down_out_interval", "3"]);
        c.ok(&["osd", "create"]);
        c.ok(&["osd", "crush-set", "0", "1.0", "root=default", "host=h0"]);
        c
    })
    .await
    .unwrap();
    let osd = osd_client(&c, 0).await;
    // Another identity cannot boot osd.0.
    let impostor = osd_client(&c, 7).await;
    let err = impostor
        .send(MonRequest::OsdBoot { osd: 0, addr: "127.0.0.1:7000".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err}");
    osd.send(MonRequest::OsdBoot { osd: 0, addr: "127.0.0.1:7000".into() }).await.unwrap();
    let c = Arc::new(c);
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || wait_osd(&c2, 0, (true, true), Duration::from_secs(10)))
        .await
        .unwrap();
    // Beaconing for twice the grace keeps it up.
    for _ in 0..8 {
        let config = osd.beacon(0, placement::Epoch(1)).await.unwrap();
        assert_eq!(config.backfill_max_active, 4);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let c2 = c.clone();
    assert_eq!(tokio::task::spawn_blocking(move || osd_state(&c2, 0)).await.unwrap(), (true, true));
    // Silence: down after the grace (2 s, checked each second), out 3 s later.
    let c2 = c.clone();
    let (down, out) = tokio::task::spawn_blocking(move || {
        let down = wait_osd(&c2, 0, (false, true), Duration::from_secs(10));
        let out = wait_osd(&c2, 0, (false, false), Duration::from_secs(10));
        (down, out)
    })
    .await
    .unwrap();
    assert!(down >= Duration::from_millis(1500), "marked down after only {down:?}");
    assert!(out >= Duration::from_secs(2), "marked out {out:?} after down");
    let c2 = c.clone();
    let status = tokio::task::spawn_blocking(move || c2.status().unwrap()).await.unwrap();
    let codes: Vec<&str> = status["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ch| ch["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"OSD_DOWN") && codes.contains(&"OSD_OUT"), "{codes:?}");
    // It boots again: up, and in again because the monitors took it out.
    osd.send(MonRequest::OsdBoot { osd: 0, addr: "127.0.0.1:7001".into() }).await.unwrap();
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || wait_osd(&c2, 0, (true, true), Duration::from_secs(10)))
        .await
        .unwrap();
}

#[test]
fn a_skewed_clock_is_reported() {
    let mut c = Cluster::bootstrap(3);
    c.mons[2].env.push(("CAIRN_CLOCK_OFFSET_MS".into(), "900".into()));
    for i in 0..3 {
        c.start_mon(i);
    }
    let status = c.wait_status("CLOCK_SKEW", Duration::from_secs(30), |s| {
        s["checks"].as_array().unwrap().iter().any(|ch| ch["code"] == "CLOCK_SKEW")
    });
    let check =
        status["checks"].as_array().unwrap().iter().find(|ch| ch["code"] == "CLOCK_SKEW").unwrap();
    let detail = check["detail"].as_array().expect("a detail list");
    assert!(!detail.is_empty(), "{check}");
    // Any monitor may answer: mon.c itself sees the others' clocks off by as much.
    if status["answered_by"] != "c" {
        assert!(detail.iter().any(|l| l.as_str().unwrap().contains("mon.c")), "{check}");
    }
}

#[test]
fn dev_up_starts_a_healthy_cluster_and_keeps_its_data_across_down_and_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cairn-data");
    let port = free_port();
    let up = |args: &[&str]| {
        std::process::Command::new(BIN).current_dir(dir.path()).args(args).output().unwrap()
    };
    // Whatever happens below, the monitors do not outlive the test.
    struct Down(std::path::PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ =
                std::process::Command::new(BIN).current_dir(&self.0).args(["dev", "down"]).output();
        }
    }
    let _down = Down(dir.path().to_owned());
    let base = port.to_string();
    let started = up(&["dev", "up", "--base-port", &base]);
    let text = String::from_utf8_lossy(&started.stdout).into_owned();
    assert!(started.status.success(), "{text}{}", String::from_utf8_lossy(&started.stderr));
    assert!(text.contains("HEALTH_OK") && text.contains("started mon.a"), "{text}");
    // `cairn status` from that directory finds the configuration by itself.
    let status = up(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("HEALTH_OK"),
        "{status:?}\nafter dev up printed:\n{text}"
    );
    assert!(up(&["pool", "create", "kept", "--pg-num", "8"]).status.success());
    let down = up(&["dev", "down"]);
    assert!(String::from_utf8_lossy(&down.stdout).contains("stopped mon.a"), "{down:?}");
    let again = up(&["dev", "up"]);
    assert!(again.status.success(), "{again:?}");
    let pools = up(&["pool", "ls"]);
    assert!(String::from_utf8_lossy(&pools.stdout).contains("kept"), "{pools:?}");
    assert!(up(&["dev", "down"]).status.success());
    assert!(data.join("client.toml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_incrementals_and_follow_the_maps_across_a_monitor_failure() {
    let c = Arc::new(tokio::task::spawn_blocking(|| Cluster::start(3)).await.unwrap());
    let config = client::ClientConfig::load(&c.config()).unwrap();
    let client = client::MonClient::connect(config).unwrap();
    let cli = |args: &'static [&'static str]| {
        let c = c.clone();
        tokio::task::spawn_blocking(move || c.ok(args))
    };
    let mut watch = client.watch(None);
    let first = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("timed out after 20 s waiting for the first map")
        .unwrap()
        .clone();

    // Three changes: a subscriber at the first epoch is sent exactly their incrementals.
    cli(&["pool", "create", "one", "--pg-num", "8"]).await.unwrap();
    cli(&["osd", "create"]).await.unwrap();
    cli(&["osd", "set", "noout"]).await.unwrap();
    // The monitor answering may be a follower that has not applied the last commit yet.
    let target = placement::Epoch(first.epoch().0 + 3);
    let asked = Instant::now();
    let (epoch, bundle) = loop {
        let (epoch, bundle) = client.get_maps(Some(first.epoch())).await.unwrap();
        if epoch >= target {
            break (epoch, bundle);
        }
        assert!(asked.elapsed() < Duration::from_secs(10), "no monitor reached {target:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(epoch, target);
    assert!(bundle.full.is_none(), "a subscriber 3 epochs behind got a full map");
    assert_eq!(bundle.incrementals.len(), 3);
    let caught_up = client::maps::apply_bundle(Some(first.clone()), &bundle).unwrap();
    let full = client.map().await.unwrap();
    assert_eq!(caught_up.epoch(), epoch);
    assert_eq!(caught_up.contents(), full.contents());

    // The watch sees the new epochs (as one or several steps).
    while watch.map().unwrap().epoch() < epoch {
        tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("timed out after 20 s waiting for the watch to reach the latest epoch")
            .unwrap();
    }
    assert_eq!(watch.map().unwrap().contents(), full.contents());

    // Kill the monitor the session uses: the watch subscribes elsewhere and misses nothing.
    let serving = client.current_monitor().expect("the session has a monitor");
    let pid = c.mons[c.index(&serving)].child.as_ref().unwrap().id();
    // SAFETY: killing a monitor process this test started (the cluster is shared with the
    // CLI tasks, so not through `kill_mon`, which needs it exclusively).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    cli(&["pool", "create", "two", "--pg-num", "8"]).await.unwrap();
    loop {
        let map = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("timed out after 30 s waiting for a map from another monitor")
            .unwrap();
        if map.pool_by_name("two").is_some() {
            break;
        }
    }
    let now = client.current_monitor().expect("a session after the failover");
    assert_ne!(now, serving);
}

#[test]
fn a_monitor_that_missed_a_compacted_log_catches_up_from_a_snapshot() {
    let mut c = Cluster::bootstrap(3);
    // Snapshots every 8 entries, so the log mon.c misses is purged before it returns.
    for mon in &c.mons {
        let path = mon.dir.join("mon.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("snapshot_every = 1000", "snapshot_every = 8");
        assert!(text.contains("snapshot_every = 8"), "{text}");
        std::fs::write(&path, text).unwrap();
    }
    for i in 0..3 {
        c.start_mon(i);
    }
    c.wait_status("a healthy quorum", Duration::from_secs(30), |s| {
        s["monitors"].as_array().is_some_and(|m| m.iter().all(|m| m["in_quorum"] == true))
    });
    c.kill_mon(2);
    for i in 0..30 {
        c.ok(&["pool", "create", &format!("p{i}"), "--pg-num", "8"]);
    }
    let expected = c.status().unwrap()["epoch"].clone();
    c.start_mon(2);
    let log = c.mons[2].dir.join("mon.log");
    common::wait_for("mon.c to install a snapshot", Duration::from_secs(30), || {
        match std::fs::read_to_string(&log).unwrap().contains("installed a snapshot") {
            true => Ok(()),
            false => Err(c.logs()),
        }
    });
    let only_c = c.dir.path().join("only-c");
    std::fs::create_dir_all(&only_c).unwrap();
    let mut config = client::ClientConfig::load(&c.config()).unwrap();
    config.mons.retain(|m| m.name == "c");
    config.keyring = c.dir.path().display().to_string();
    config.save(&only_c.join("client.toml")).unwrap();
    // The snapshot may be older than the last commits, which follow it in the log: wait
    // until mon.c's own map (maps are served by any monitor from its state) has them all.
    common::wait_for(&format!("mon.c's map at epoch {expected}"), Duration::from_secs(30), || {
        let out = std::process::Command::new(BIN)
            .arg("--conf")
            .arg(only_c.join("client.toml"))
            .args(["--format", "json", "osd", "dump"])
            .output()
            .unwrap();
        let map: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        match map["epoch"] == expected {
            true => Ok(()),
            false => Err(format!("epoch {}{}", map["epoch"], c.logs())),
        }
    });
    // Alone, mon.c answers from its own state: it has every pool.
    c.kill_mon(0);
    c.kill_mon(1);
    let out = std::process::Command::new(BIN)
        .arg("--conf")
        .arg(only_c.join("client.toml"))
        .args(["--format", "json", "status"])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(status["answered_by"], "c");
    assert_eq!(status["epoch"], expected, "{status}");
    assert_eq!(status["pools"], 30);
    assert_eq!(status["health"], "HEALTH_ERR", "alone, mon.c has no quorum: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_identity_is_cut_off_on_the_connection_it_has_open() {
    let c = Arc::new(tokio::task::spawn_blocking(|| Cluster::start(3)).await.unwrap());
    let keyring = c.dir.path().join("temp");
    let out = keyring.display().to_string();
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || {
        c2.ok(&["auth", "add", "client.temp", "--mon-caps", "allow r", "--out", &out])
    })
    .await
    .unwrap();
    let config = client::ClientConfig::load(&c.config_for("client.temp", &keyring)).unwrap();
    let mut client = client::MonClient::connect(config).unwrap();
    client.timeout = Duration::from_secs(3);
    client.status().await.expect("client.temp may read the status");
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || c2.ok(&["auth", "rm", "client.temp"])).await.unwrap();
    // The same client, its connection still open: refused as soon as its monitor has
    // applied the revocation.
    let started = Instant::now();
    let refusal = loop {
        match client.status().await {
            Ok(_) => {
                assert!(started.elapsed() < Duration::from_secs(10), "still admitted after 10 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => break e.to_string(),
        }
    };
    assert!(refusal.contains("unknown") || refusal.contains("revoked"), "{refusal}");
}
