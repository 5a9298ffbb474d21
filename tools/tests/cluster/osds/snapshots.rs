//! Snapshots: pool snapshots through `cairn pool mksnap` and `cairn obj get --snap`, as
//! `rados mksnap`, and self-managed ones through the client library, as block images take
//! them: the first write after a snapshot keeps the object as a clone, reads at the
//! snapshot find it, a rollback brings it back.

use super::*;

#[test]
fn writes_after_a_snapshot_keep_what_they_change_for_reads_at_it_and_rollbacks() {
    let (c, _osds, work) = replicated_cluster(4);
    let v1 = pattern(1, 300_000);
    put(&c, &work, "a", &v1);
    put(&c, &work, "b", b"b1");
    let taken = c.json(&["pool", "mksnap", "rbd", "s1"]);
    assert_eq!(taken["id"], 1, "{taken}");
    let v2 = pattern(2, 200_000);
    put(&c, &work, "a", &v2);
    c.ok(&["obj", "rm", "rbd", "b"]);
    put(&c, &work, "c", b"c1");

    let at = |name: &str, snap: &str| {
        let file = work.join(format!("{name}@{snap}.out"));
        c.ok(&["obj", "get", "rbd", name, path_str(&file), "--snap", snap]);
        std::fs::read(file).unwrap()
    };
    let at_fails = |name: &str, snap: &str| {
        c.fails(&["obj", "get", "rbd", name, path_str(&work.join("x")), "--snap", snap])
    };
    assert!(at("a", "s1") == v1, "the snapshot reads the object as it was");
    assert!(get(&c, &work, "a") == v2);
    assert_eq!(at("b", "s1"), b"b1", "a removed object is still in the snapshot");
    let gone = c.fails(&["obj", "get", "rbd", "b", path_str(&work.join("b.out"))]);
    assert!(gone.contains("does not exist"), "{gone}");
    let later = at_fails("c", "s1");
    assert!(later.contains("does not exist"), "created after the snapshot: {later}");
    let listed = c.json(&["obj", "listsnaps", "rbd", "a"]);
    assert_eq!(listed["clones"][0]["id"], 1, "{listed}");
    assert_eq!(listed["clones"][0]["snaps"], serde_json::json!([1]), "{listed}");
    assert_eq!(listed["clones"][0]["size"], 300_000, "{listed}");
    assert_eq!(listed["head_exists"], true, "{listed}");
    // Listings show heads only: no clone, no removed object kept for its snapshot.
    let names: Vec<String> = c
        .json(&["obj", "ls", "rbd"])
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["a", "c"], "{names:?}");
    let lssnap = c.json(&["pool", "lssnap", "rbd"]);
    assert_eq!(lssnap["named"]["1"]["name"], "s1", "{lssnap}");

    // Rollbacks: to what the object was, and back into existence.
    c.ok(&["obj", "rollback", "rbd", "a", "s1"]);
    assert!(get(&c, &work, "a") == v1);
    c.ok(&["obj", "rollback", "rbd", "b", "s1"]);
    assert_eq!(get(&c, &work, "b"), b"b1");

    // Bad input: a clear error, nothing changed.
    let twice = c.fails(&["pool", "mksnap", "rbd", "s1"]);
    assert!(twice.contains("already exists"), "{twice}");
    let unknown = at_fails("a", "nosuch");
    assert!(unknown.contains("has no snapshot 'nosuch'"), "{unknown}");
    c.ok(&["pool", "create", "ec", "erasure", "--k", "2", "--m", "1", "--pg-num", "1"]);
    let ec = c.fails(&["pool", "mksnap", "ec", "s1"]);
    assert!(ec.contains("not supported yet"), "{ec}");
    let file = work.join("sparse");
    std::fs::write(&file, vec![0u8; 100_000]).unwrap();
    c.ok(&["obj", "put", "ec", "e", path_str(&file)]);
    let whole = c.json(&["obj", "extents", "ec", "e"]);
    assert_eq!(whole, serde_json::json!([{ "offset": 0, "length": 100_000 }]), "EC: all of it");
    c.ok(&["obj", "cp", "ec", "e", "e2"]);
    assert!(get_in(&c, &work, "ec", "e2") == vec![0u8; 100_000], "a copy within an EC pool");
    c.ok(&["obj", "cp", "rbd", "a", "a@s1", "--snap", "s1"]);
    assert!(get(&c, &work, "a@s1") == v1, "a copy of what the object was at the snapshot");
    assert!(get(&c, &work, "a") == v1);

    // Self-managed snapshots, as a block image takes them: ids from the monitors, the
    // snapshot context in each write.
    use bytes::Bytes;
    use proto::osd::{ObjectName, ObjectOp, SnapArgs, SnapContext};
    c.ok(&["pool", "create", "vols", "replicated", "--size", "3", "--pg-num", "4"]);
    let (runtime, objects) = client_objects(&c);
    let image = ObjectName::new("rbd_data.1");
    let write = |data: &'static [u8], seq: u64, snaps: &[u64]| {
        let ops = vec![ObjectOp::Write { offset: 0, len: data.len() as u64 }];
        let args =
            SnapArgs { context: Some(SnapContext { seq, snaps: snaps.to_vec() }), read: None };
        runtime.block_on(objects.op_with("vols", &image, ops, Bytes::from_static(data), &args))
    };
    write(b"one", 0, &[]).unwrap();
    let s1 = runtime.block_on(objects.snap_create("vols")).unwrap();
    write(b"two", s1, &[s1]).unwrap();
    let s2 = runtime.block_on(objects.snap_create("vols")).unwrap();
    assert!(s2 > s1);
    write(b"six", s2, &[s2, s1]).unwrap();
    let read_at = |snap| runtime.block_on(objects.read_full_at("vols", &image, snap)).unwrap();
    assert_eq!(
        (read_at(Some(s1)), read_at(Some(s2)), read_at(None)),
        (Bytes::from_static(b"one"), Bytes::from_static(b"two"), Bytes::from_static(b"six"))
    );
    let list = runtime.block_on(objects.list_snaps("vols", &image)).unwrap();
    assert_eq!(list.clones.iter().map(|c| c.id).collect::<Vec<_>>(), vec![s1, s2]);
    let disorder = write(b"bad", s2, &[s1, s2]).unwrap_err();
    assert_eq!(disorder.code(), Some(proto::ErrorCode::Invalid), "{disorder}");
    // Extents: a write 1 MiB in leaves a hole the head lists and the clone does not have.
    let far = vec![ObjectOp::Write { offset: 1 << 20, len: 3 }];
    let args = SnapArgs { context: Some(SnapContext { seq: s2, snaps: vec![s2, s1] }), read: None };
    runtime
        .block_on(objects.op_with("vols", &image, far, Bytes::from_static(b"end"), &args))
        .unwrap();
    let extents = |snap: Option<u64>| {
        let mut args = vec!["obj".to_owned(), "extents".into(), "vols".into(), "rbd_data.1".into()];
        args.extend(snap.map(|s| format!("--snap={s}")));
        c.json(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let span = |offset: u64, length: u64| serde_json::json!({ "offset": offset, "length": length });
    assert_eq!(extents(None), serde_json::json!([span(0, 3), span(1 << 20, 3)]));
    assert_eq!(extents(Some(s2)), serde_json::json!([span(0, 3)]), "the clone before it");
    let missing = c.fails(&["obj", "extents", "vols", "nosuch"]);
    assert!(missing.contains("does not exist"), "{missing}");
    runtime.block_on(objects.snap_remove("vols", s1)).unwrap();
    let again = runtime.block_on(objects.snap_remove("vols", s1)).unwrap_err();
    assert!(again.to_string().contains("does not exist"), "{again}");
    assert_eq!(read_at(Some(s2)), Bytes::from_static(b"two"), "snapshot 2 outlives 1");

    // Trimming: the clone only snapshot 1 needed goes, in the background; snapshot 2's
    // stays. A writer whose context still lists snapshot 1 is told to refresh it.
    let stale = write(b"bad", s2, &[s2, s1]).unwrap_err();
    assert!(stale.to_string().contains("was removed"), "{stale}");
    let clones = || {
        let list = runtime.block_on(objects.list_snaps("vols", &image)).unwrap();
        list.clones.iter().map(|c| c.id).collect::<Vec<_>>()
    };
    let trimmed = |ids: Vec<u64>| if ids == [s2] { Ok(()) } else { Err(format!("{ids:?}")) };
    common::wait_for("snapshot 1's clone trimmed", Duration::from_secs(30), || trimmed(clones()));
    assert_eq!(read_at(Some(s2)), Bytes::from_static(b"two"));
    // A pool snapshot's clones go with it; the head stays.
    c.ok(&["pool", "rmsnap", "rbd", "s1"]);
    let listed = || c.json(&["obj", "listsnaps", "rbd", "a"]);
    common::wait_for("pool snapshot s1's clones trimmed", Duration::from_secs(30), || {
        let listed = listed();
        if listed["clones"] == serde_json::json!([]) { Ok(()) } else { Err(listed.to_string()) }
    });
    assert!(get(&c, &work, "a") == v1);
}

#[test]
fn clones_are_recovered_with_their_heads_by_a_copy_that_missed_the_writes() {
    let (c, mut osds, work) = replicated_cluster(4);
    let (v1, v2, v3) = (pattern(1, 300_000), pattern(2, 200_000), pattern(3, 100_000));
    put(&c, &work, "a", &v1);
    put(&c, &work, "b", b"b1");
    c.ok(&["pool", "mksnap", "rbd", "s1"]);
    // osd.1 misses the writes that make clones, and the removal that leaves a whiteout.
    osds.kill(1);
    c.wait_status("osd.1 reported down", Duration::from_secs(15), |s| s["osds"]["up"] == 2);
    put(&c, &work, "a", &v2);
    c.ok(&["obj", "rm", "rbd", "b"]);
    c.ok(&["pool", "mksnap", "rbd", "s2"]);
    put(&c, &work, "a", &v3);
    osds.start(1);
    wait_up(&c, 3);
    wait_clean(&c, 4);
    // Then the two others die: osd.1 alone serves the heads and every clone.
    c.ok(&["pool", "set", "rbd", "min_size", "1"]);
    assert!(get(&c, &work, "a") == v3);
    osds.kill(0);
    osds.kill(2);
    c.ok(&["osd", "down", "0", "2"]);
    assert_eq!(up_osds(&c), 1);
    let at = |name: &str, snap: &str| {
        let file = work.join(format!("{name}@{snap}.out"));
        c.ok(&["obj", "get", "rbd", name, path_str(&file), "--snap", snap, "--timeout", "60"]);
        std::fs::read(file).unwrap()
    };
    assert!(get(&c, &work, "a") == v3, "the head on osd.1 alone");
    assert!(at("a", "s1") == v1, "clone 1 on osd.1 alone");
    assert!(at("a", "s2") == v2, "clone 2 on osd.1 alone");
    assert_eq!(at("b", "s1"), b"b1", "a removed object's clone on osd.1 alone");
    let gone = c.fails(&["obj", "get", "rbd", "b", path_str(&work.join("b.out"))]);
    assert!(gone.contains("does not exist"), "{gone}");
    let listed = c.json(&["obj", "listsnaps", "rbd", "a"]);
    let ids: Vec<u64> =
        listed["clones"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2], "{listed}");
}
