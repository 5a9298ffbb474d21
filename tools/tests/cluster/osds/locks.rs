//! Advisory locks on objects through `cairn obj lock`, as `rados lock`: exclusive and
//! shared holders, renewal, expiry, break, a lock that outlives its primary, and the
//! fencing of a holder whose lock is broken (`cairn osd blocklist`).

use super::*;

fn lock(c: &Cluster, args: &[&str]) -> String {
    let all: Vec<&str> = ["obj", "lock"].iter().chain(args).copied().collect();
    c.ok(&all)
}

fn lock_fails(c: &Cluster, args: &[&str]) -> String {
    let all: Vec<&str> = ["obj", "lock"].iter().chain(args).copied().collect();
    c.fails(&all)
}

#[test]
fn locks_refuse_other_holders_expire_are_broken_and_outlive_their_primary() {
    let (c, mut osds, work) = replicated_cluster(1);
    put(&c, &work, "header", b"v1");

    // Exclusive: another cookie is refused, the same one too unless it renews.
    lock(&c, &["get", "rbd", "header", "owner", "--cookie", "a", "--description", "image owner"]);
    let busy = lock_fails(&c, &["get", "rbd", "header", "owner", "--cookie", "b"]);
    assert!(busy.contains("lock owner is held by client.admin (cookie 'a')"), "{busy}");
    let shared = lock_fails(&c, &["get", "rbd", "header", "owner", "--cookie", "b", "--shared"]);
    assert!(shared.contains("is held by"), "{shared}");
    let again = lock_fails(&c, &["get", "rbd", "header", "owner", "--cookie", "a"]);
    assert!(again.contains("already holds lock owner"), "{again}");
    lock(&c, &["get", "rbd", "header", "owner", "--cookie", "a", "--renew"]);
    let info = c.json(&["obj", "lock", "info", "rbd", "header", "owner"]);
    assert_eq!(info["type"], "exclusive", "{info}");
    let holder = &info["lockers"][0];
    assert_eq!((&holder["name"], &holder["cookie"]), (&"client.admin".into(), &"a".into()));
    assert_eq!(holder["description"], "image owner", "{info}");
    assert!(holder["address"].as_str().unwrap().starts_with("127.0.0.1:"), "{info}");
    assert!(holder["expires_ms"].is_null(), "{info}");
    assert_eq!(info["lockers"].as_array().unwrap().len(), 1, "renewed, not added: {info}");

    // Shared: holders agree on a tag.
    for cookie in ["r1", "r2"] {
        lock(
            &c,
            &["get", "rbd", "header", "readers", "--shared", "--tag", "t", "--cookie", cookie],
        );
    }
    let other_tag = lock_fails(
        &c,
        &["get", "rbd", "header", "readers", "--shared", "--tag", "u", "--cookie", "r3"],
    );
    assert!(other_tag.contains("shared under tag 't'"), "{other_tag}");
    let names = c.json(&["obj", "lock", "list", "rbd", "header"]);
    assert_eq!(names, serde_json::json!(["owner", "readers"]));
    // Locks are the object's own: its data and xattrs are untouched.
    assert_eq!(get(&c, &work, "header"), b"v1");

    // The PG's primary dies: the locks were replicated with the object.
    let dump = c.json(&["pg", "dump"]);
    let primary = dump["pgs"][0]["acting"][0].as_u64().unwrap();
    osds.kill(primary as usize);
    c.ok(&["osd", "down", &primary.to_string()]);
    c.wait_status("the PG active without its primary", Duration::from_secs(60), |s| {
        s["osds"]["up"] == 2 && all_active(s)
    });
    let info = c.json(&["obj", "lock", "info", "rbd", "header", "owner"]);
    assert_eq!(info["lockers"][0]["cookie"], "a", "{info}");
    let readers = c.json(&["obj", "lock", "info", "rbd", "header", "readers"]);
    assert_eq!(readers["lockers"].as_array().unwrap().len(), 2, "{readers}");

    // Broken by another client (one that saw the holder die), then taken and released.
    let nobody =
        lock_fails(&c, &["break", "rbd", "header", "owner", "client.admin", "--cookie", "z"]);
    assert!(nobody.contains("has no holder client.admin with cookie 'z'"), "{nobody}");
    lock(&c, &["break", "rbd", "header", "owner", "client.admin", "--cookie", "a"]);
    lock(&c, &["get", "rbd", "header", "owner", "--cookie", "b"]);
    let not_mine = lock_fails(&c, &["unlock", "rbd", "header", "owner", "--cookie", "a"]);
    assert!(not_mine.contains("holds no lock owner with cookie 'a'"), "{not_mine}");
    lock(&c, &["unlock", "rbd", "header", "owner", "--cookie", "b"]);
    let info = c.json(&["obj", "lock", "info", "rbd", "header", "owner"]);
    assert_eq!(info["lockers"], serde_json::json!([]), "{info}");
    let names = c.json(&["obj", "lock", "list", "rbd", "header"]);
    assert_eq!(names, serde_json::json!(["readers"]));

    // A hold with a duration lapses by itself: refused at once, taken once it expired.
    lock(&c, &["get", "rbd", "header", "lease", "--cookie", "x", "--duration", "8"]);
    let info = c.json(&["obj", "lock", "info", "rbd", "header", "lease"]);
    assert!(info["lockers"][0]["expires_ms"].as_i64().is_some(), "{info}");
    let held = lock_fails(&c, &["get", "rbd", "header", "lease", "--cookie", "y"]);
    assert!(held.contains("is held by"), "{held}");
    common::wait_for("the lease to expire", Duration::from_secs(40), || {
        let out = c.cairn(&["obj", "lock", "get", "rbd", "header", "lease", "--cookie", "y"]);
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    });
    let info = c.json(&["obj", "lock", "info", "rbd", "header", "lease"]);
    assert_eq!(info["lockers"][0]["cookie"], "y", "{info}");

    // Bad input: clear errors, nothing changed.
    let missing = lock_fails(&c, &["get", "rbd", "nosuch", "owner"]);
    assert!(missing.contains("does not exist"), "{missing}");
    assert!(c.fails(&["obj", "stat", "rbd", "nosuch"]).contains("does not exist"));
    let long = "x".repeat(300);
    let too_long = lock_fails(&c, &["get", "rbd", "header", "owner", "--cookie", &long]);
    assert!(too_long.contains("at most 256 bytes"), "{too_long}");
    let unnamed = lock_fails(&c, &["get", "rbd", "header", ""]);
    assert!(unnamed.contains("a lock needs a name"), "{unnamed}");
    let missing_info = lock_fails(&c, &["info", "rbd", "nosuch", "owner"]);
    assert!(missing_info.contains("does not exist"), "{missing_info}");
}

/// A holder whose lock is broken is fenced first: every OSD refuses its writes from the
/// epoch that blocklists it (it may be cut off rather than dead, and must never write
/// after its lock was taken), other clients write, and it writes again once the entry is
/// lifted. This test's process is the holder.
#[test]
fn a_broken_lock_fences_its_holder_until_the_entry_is_lifted() {
    use bytes::Bytes;
    use proto::ErrorCode;
    use proto::osd::{LockKind, ObjectName, ObjectOp};

    let (c, _osds, work) = replicated_cluster(4);
    put(&c, &work, "header", b"v1");
    let (runtime, objects) = client_objects(&c);
    let header = ObjectName::new("header");
    let write = |data: &'static [u8]| {
        let ops = vec![ObjectOp::WriteFull { len: data.len() as u64 }];
        runtime.block_on(objects.op("rbd", &header, ops, Bytes::from_static(data)))
    };
    // The lock and a write in one op.
    let take = ObjectOp::Lock {
        name: "owner".into(),
        kind: LockKind::Exclusive,
        cookie: "me".into(),
        tag: String::new(),
        description: String::new(),
        duration_ms: None,
        renew: false,
    };
    let ops = vec![take, ObjectOp::WriteFull { len: 2 }];
    runtime.block_on(objects.op("rbd", &header, ops, Bytes::from_static(b"v2"))).unwrap();
    let info = c.json(&["obj", "lock", "info", "rbd", "header", "owner"]);
    let entry = info["lockers"][0]["address"].as_str().unwrap().to_owned();
    assert!(entry.ends_with(&format!("/{}", proto::reqid::instance())), "{info}");

    let broke = lock(&c, &["break", "rbd", "header", "owner", "client.admin", "--cookie", "me"]);
    assert!(broke.contains(&format!("blocklisted {entry}")), "{broke}");
    let listed = c.json(&["osd", "blocklist", "ls"]);
    assert!(listed[&entry].as_i64().is_some(), "{listed}");
    let e = write(b"v3").unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::PermissionDenied), "{e}");
    assert!(e.to_string().contains("is blocklisted"), "{e}");
    // Another client (a process of the same identity) is not fenced.
    put(&c, &work, "header", b"v4");
    assert_eq!(get(&c, &work, "header"), b"v4");

    c.ok(&["osd", "blocklist", "rm", &entry]);
    common::wait_for("the holder to write again", Duration::from_secs(30), || {
        write(b"v5").map_err(|e| e.to_string())
    });
    assert_eq!(get(&c, &work, "header"), b"v5");

    // Bad input: clear errors.
    let bad = c.fails(&["osd", "blocklist", "add", "not-an-address"]);
    assert!(bad.contains("neither IP:PORT/NONCE"), "{bad}");
    let absent = c.fails(&["osd", "blocklist", "rm", "10.9.9.9"]);
    assert!(absent.contains("is not on it"), "{absent}");
}
