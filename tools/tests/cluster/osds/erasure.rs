//! Erasure-coded pools end to end: reads from any k shards, rebuilt shards, bit rot and
//! parity disagreement, torn writes rolled back, down PGs that say what they wait for.

use super::*;

/// The PG of `name` in pool `pool`, and its up set by shard position.
fn ec_placement(
    map: &placement::OsdMap,
    pool: &str,
    name: &str,
) -> (placement::PgId, Vec<Option<u32>>) {
    let pool = map.pool_by_name(pool).unwrap().id;
    let pg = map.object_pg(pool, "", name.as_bytes()).unwrap();
    let up = map.pg_mapping(pg).unwrap().up.iter().map(|o| o.map(|o| o.0)).collect();
    (pg, up)
}

#[test]
fn an_erasure_coded_2_1_pool_serves_from_any_2_shards_and_rebuilds_a_lost_one() {
    ec_round_trip(2, 1);
}

#[test]
fn an_erasure_coded_4_2_pool_serves_from_any_4_shards_and_rebuilds_a_lost_one() {
    ec_round_trip(4, 2);
}

/// An erasure-coded k+m pool on k+m+1 OSDs, end to end: whole and partial writes,
/// appends, truncates and small reads byte-exact; m of a PG's OSDs down: reads go on
/// (decoding), writes wait for min_size and resume when it is lowered; one more down: that
/// PG is down, with a clear error, until one returns; an OSD out: its shards are rebuilt
/// on the spare, which then serves reads in its place.
fn ec_round_trip(k: usize, m: usize) {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use proto::osd::{ObjectName, ObjectOp, OpResult};

    let total = k + m + 1;
    let c = Cluster::start(3);
    let mut osds = Osds::create(&c, total);
    wait_up(&c, total as u64);
    let (ks, ms) = (k.to_string(), m.to_string());
    let mut create = vec!["pool", "create", "ec", "erasure", "--k", &ks, "--m", &ms];
    create.extend(["--pg-num", "4", "--failure-domain", "host"]);
    c.ok(&create);
    let rules = c.ok(&["rule", "ls"]);
    let own = rules.lines().find(|l| l.split_whitespace().nth(1) == Some("ec"));
    assert!(own.is_some_and(|l| l.contains("erasure")), "the pool's own rule: {rules}");
    wait_clean(&c, 4);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = client::ClientConfig::load(&c.config()).unwrap();
    let objects = runtime.block_on(async {
        let mon = std::sync::Arc::new(client::MonClient::connect(config).unwrap());
        client::objects::Objects::new(mon).await.unwrap()
    });
    let name = |s: &str| ObjectName { namespace: String::new(), name: s.as_bytes().to_vec() };
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // The PG the failures below aim at, and an object in it.
    let map = objects.map();
    let (pg0, up0) = ec_placement(&map, "ec", "o0");
    // m of pg0's OSDs fail (not its primary), then one more.
    let doomed: Vec<usize> = up0[1..=m].iter().map(|o| o.unwrap() as usize).collect();
    let (first, second) = (doomed[0], up0[m + 1].unwrap() as usize);
    let spare = (0..total).find(|o| !up0.contains(&Some(*o as u32))).unwrap();

    let check_all = |model: &BTreeMap<String, Vec<u8>>, when: &str| {
        runtime.block_on(async {
            for (object, want) in model {
                let got = objects.read_full("ec", &name(object)).await.unwrap();
                assert!(got == want.as_slice(), "{object} differs {when}");
                let (size, _, _) = objects.stat("ec", &name(object)).await.unwrap();
                assert_eq!(size, want.len() as u64, "{object} {when}");
                // A small read inside one chunk, and one across a stripe boundary.
                for (offset, len) in [(4000u64, 7u64), (8190, 5)] {
                    let part = objects.read("ec", &name(object), offset, len).await.unwrap();
                    let from = (offset as usize).min(want.len());
                    let to = ((offset + len) as usize).min(want.len());
                    assert!(part == want[from..to], "{object} at {offset} {when}");
                }
            }
        })
    };

    // Sizes around the 4 KiB chunk and 8 KiB stripe, and one of 3 MiB.
    let sizes = [100_000usize, 0, 1, 4095, 8192, 8193, 3 << 20];
    runtime.block_on(async {
        for (i, len) in sizes.iter().enumerate() {
            let data = pattern(i as u32, *len);
            objects.write_full("ec", &name(&format!("o{i}")), Bytes::from(data)).await.unwrap();
        }
    });
    for (i, len) in sizes.iter().enumerate() {
        model.insert(format!("o{i}"), pattern(i as u32, *len));
    }
    // Partial changes: an unaligned overwrite, an append, and a shrink then a growth in
    // one op (the bytes between must read as zeros).
    let op = |object: &str, ops: Vec<ObjectOp>, data: Vec<u8>| {
        runtime.block_on(objects.op("ec", &name(object), ops, Bytes::from(data))).unwrap()
    };
    op("o0", vec![ObjectOp::Write { offset: 5000, len: 9000 }], pattern(50, 9000));
    model.get_mut("o0").unwrap()[5000..14_000].copy_from_slice(&pattern(50, 9000));
    op("o3", vec![ObjectOp::Append { len: 3000 }], pattern(53, 3000));
    model.get_mut("o3").unwrap().extend(pattern(53, 3000));
    op(
        "o6",
        vec![ObjectOp::Truncate { size: 10_000 }, ObjectOp::Write { offset: 20_000, len: 10 }],
        b"0123456789".to_vec(),
    );
    let o6 = model.get_mut("o6").unwrap();
    o6.truncate(10_000);
    o6.resize(20_000, 0);
    o6.extend_from_slice(b"0123456789");
    // Xattrs and omap live on every shard.
    op(
        "o1",
        vec![
            ObjectOp::SetXattr { name: "user.kind".into(), value: b"tiny".to_vec() },
            ObjectOp::OmapSet { entries: vec![(b"k".to_vec(), b"v".to_vec())] },
        ],
        Vec::new(),
    );
    let meta = op(
        "o1",
        vec![ObjectOp::GetXattrs, ObjectOp::OmapGet { keys: vec![b"k".to_vec()] }],
        Vec::new(),
    );
    let OpResult::Xattrs(xattrs) = &meta.results[0] else { panic!("{meta:?}") };
    assert_eq!(xattrs.keys().collect::<Vec<_>>(), ["user.kind"], "the size xattr is hidden");
    assert_eq!(meta.results[1], OpResult::Omap(vec![Some(b"v".to_vec())]));
    check_all(&model, "when healthy");
    let listed = c.json(&["obj", "ls", "ec"]);
    let big = listed.as_array().unwrap().iter().find(|o| o["name"] == "o6").unwrap().clone();
    assert_eq!(big["size"], 20_010, "listings give logical sizes: {listed}");

    // m OSDs of pg0 down: every PG keeps k shards. Reads go on; writes to a PG that lost
    // a shard wait for min_size (k+1).
    for &osd in &doomed {
        osds.kill(osd);
    }
    // What the first held of o0 is a shard: 100,000 bytes are stripes of k 4 KiB chunks,
    // one chunk of each on every shard.
    let dir = path_str(&osds.dirs[first]).to_owned();
    let held = c.json(&["osd", "store-tool", "--data", &dir, "list", &pg0.to_string()]);
    let shard = held.as_array().unwrap().iter().find(|o| o["name"] == "o0").unwrap().clone();
    assert_eq!(shard["size"], 100_000u64.div_ceil(k as u64 * 4096) * 4096, "{held}");
    let mut down = vec!["osd", "down"];
    let names: Vec<String> = doomed.iter().map(|o| o.to_string()).collect();
    down.extend(names.iter().map(String::as_str));
    c.ok(&down);
    let status = c.wait_status("PGs peered or active", Duration::from_secs(60), |s| {
        let states = s["pg_summary"]["states"].as_object().unwrap();
        s["osds"]["up"] == total - m
            && states.keys().all(|k| k.starts_with("active") || k.starts_with("peered"))
            && states.keys().any(|k| k.starts_with("peered"))
    });
    assert!(check_codes(&status).contains(&"PG_INACTIVE".to_owned()), "{status}");
    check_all(&model, "with m OSDs down");
    let file = c.dir.path().join("refused.in");
    std::fs::write(&file, b"x").unwrap();
    let refused = c.fails(&["obj", "put", "ec", "o0", path_str(&file), "--timeout", "3"]);
    assert!(refused.contains(&format!("min_size is {}", k + 1)), "{refused}");
    // min_size lowered to k: writes resume on k shards.
    c.ok(&["pool", "set", "ec", "min_size", &ks]);
    c.wait_status("PGs active", Duration::from_secs(60), all_active);
    op("o0", vec![ObjectOp::Write { offset: 99_990, len: 20 }], pattern(60, 20));
    let o0 = model.get_mut("o0").unwrap();
    o0.truncate(99_990);
    o0.extend(pattern(60, 20));
    runtime
        .block_on(objects.write_full("ec", &name("new"), Bytes::from(pattern(61, 50_000))))
        .unwrap();
    model.insert("new".into(), pattern(61, 50_000));
    check_all(&model, "after writes on k shards");

    // One more OSD of pg0 down: fewer than k shards are left. The PG says it is down and
    // refuses, rather than answer wrongly.
    osds.kill(second);
    c.ok(&["osd", "down", &second.to_string()]);
    c.wait_status(&format!("pg {pg0} down"), Duration::from_secs(60), |s| {
        s["pg_summary"]["states"].as_object().unwrap().keys().any(|k| k.contains("down"))
    });
    let failed = c.fails(&["obj", "get", "ec", "o0", "/dev/null", "--timeout", "3"]);
    assert!(failed.contains("down"), "{failed}");
    // It returns: everything is there, including what was written on k shards.
    osds.start(second);
    wait_up(&c, (total - m) as u64);
    c.wait_status("PGs active again", Duration::from_secs(60), all_active);
    check_all(&model, "after a shard returned");

    // The first OSD is gone for good (the other failed ones return): marked out, its
    // shards are rebuilt from the others onto the spare OSD (and, where it led a PG, a
    // complete shard leads meanwhile).
    for &osd in &doomed[1..] {
        osds.start(osd);
    }
    wait_up(&c, (total - 1) as u64);
    c.ok(&["osd", "out", &first.to_string()]);
    wait_clean(&c, 4);
    let pgs = c.json(&["pg", "dump"])["pgs"].clone();
    let entry = pgs.as_array().unwrap().iter().find(|p| p["pg"] == pg0.to_string()).unwrap();
    assert!(
        entry["acting"].as_array().unwrap().contains(&serde_json::json!(spare)),
        "pg {pg0} moved onto osd.{spare}: {entry}"
    );
    // Only the rebuilt shard and k - 1 others are left for pg0: reads need it.
    let others: Vec<usize> = entry["acting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap() as usize)
        .filter(|&o| o != spare)
        .take(m)
        .collect();
    let mut down = vec!["osd", "down"];
    let names: Vec<String> = others.iter().map(|o| o.to_string()).collect();
    down.extend(names.iter().map(String::as_str));
    for &osd in &others {
        osds.kill(osd);
    }
    c.ok(&down);
    c.wait_status("m OSDs down", Duration::from_secs(60), |s| {
        s["osds"]["up"] == total - 1 - m && all_active(s)
    });
    check_all(&model, "read through the rebuilt shards");
    drop(objects);
    drop(runtime);
}

/// Writes `objects` to pool ec (one PG) and waits until it is clean: its id, primary, the
/// OSD of shard 1 and its deep-scrub stamp.
fn fill_ec_pg(
    c: &Cluster,
    work: &std::path::Path,
    objects: &[(&str, Vec<u8>)],
) -> (String, usize, usize, i64) {
    for (name, data) in objects {
        put_in(c, work, "ec", name, data);
    }
    wait_clean(c, 1);
    let pg = only_pg(c);
    let osd = |i: usize| pg["acting"][i].as_u64().unwrap() as usize;
    let stamp = pg["last_deep_scrub_ms"].as_i64().unwrap();
    (pg["pg"].as_str().unwrap().to_owned(), osd(0), osd(1), stamp)
}

/// Starts the stopped `osd` again after marking it down, so that its return is an epoch of
/// its own (a restart the monitors have not noticed is first marked down, then up, an
/// epoch or two later), and waits until the single PG is clean in a report of that map
/// (an earlier one may still say clean), so that what follows uses its copy.
fn restart_in_new_epoch(c: &Cluster, osds: &mut Osds, osd: usize, total: u64) {
    c.ok(&["osd", "down", &osd.to_string()]);
    wait_up(c, total - 1);
    osds.start(osd);
    wait_up(c, total);
    let back = c.status().unwrap()["epoch"].as_u64().unwrap();
    wait_pg(c, "the PG clean with the OSD back", |pg| {
        pg["epoch"].as_u64().unwrap() >= back
            && pg["state"] == serde_json::json!(["active", "clean"])
    });
}

/// Bit rot in one shard of an erasure-coded PG: reads decode around it (never serving
/// its bytes) and have the shard rebuilt (read repair); a deep scrub finds what no read
/// touched, and recovery rebuilds that too.
#[test]
fn a_rotten_erasure_coded_shard_is_read_around_found_by_deep_scrub_and_rebuilt() {
    let c = Cluster::start(3);
    let mut osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    // The pool comes from a named profile.
    let set = ["osd", "erasure-code-profile", "set", "p21", "--k", "2", "--m", "1"];
    c.ok(&set);
    let listed = c.ok(&["osd", "erasure-code-profile", "ls"]);
    assert!(listed.contains("p21: k=2 m=1 stripe_unit=4096"), "{listed}");
    let refused = c.fails(&["osd", "erasure-code-profile", "set", "p21", "--k", "4", "--m", "2"]);
    assert!(refused.contains("exists"), "{refused}");
    c.ok(&["pool", "create", "ec", "erasure", "--profile", "p21", "--pg-num", "1"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // Shards of 151,552 bytes (block-file chunks) and of 8,192 (engine-held data).
    let objects = [
        ("whole", pattern(1, 300_000)),
        ("small", pattern(2, 10_000)),
        ("cold", pattern(3, 300_000)),
    ];
    let (id, primary, rotten, created_stamp) = fill_ec_pg(&c, &work, &objects);

    // Shard 1 holds data the primary reads directly: it rots while its OSD is stopped.
    osds.kill(rotten);
    let dir = osds.dirs[rotten].display().to_string();
    for (name, offset) in [("whole", "70000"), ("small", "5000"), ("cold", "1000")] {
        c.ok(&["osd", "store-tool", "--data", &dir, "corrupt", &id, name, "--offset", offset]);
    }
    restart_in_new_epoch(&c, &mut osds, rotten, 3);
    for (name, data) in &objects[..2] {
        assert!(get_in(&c, &work, "ec", name) == *data, "{name} read around the rot");
    }
    // Both reads had their shard rebuilt (a report from before them may still say clean).
    wait_pg(&c, "the read repairs", |pg| {
        pg["recovered_objects"].as_u64().unwrap() >= 2
            && pg["state"] == serde_json::json!(["active", "clean"])
    });
    let primary_log = || std::fs::read_to_string(osds.dirs[primary].join("osd.log")).unwrap();
    let log = primary_log();
    for name in ["whole", "small"] {
        let repaired = log.lines().any(|l| {
            l.contains("shard is corrupt; rebuilding it")
                && l.contains(&format!("object={name}"))
                && l.contains(&format!("osd={rotten}"))
        });
        assert!(repaired, "no read repair of {name}:\n{log}");
    }

    // What no read touched, a deep scrub finds.
    c.ok(&["pg", "deep-scrub", &id]);
    let pg = wait_pg(&c, "the deep scrub and its repair", |pg| {
        let state: Vec<&str> =
            pg["state"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
        pg["last_deep_scrub_ms"].as_i64().unwrap() > created_stamp && state == ["active", "clean"]
    });
    assert_eq!(pg["last_scrub_errors"], 1, "{pg}");
    let log = primary_log();
    let found = log.lines().any(|l| {
        l.contains("scrub found bad copies")
            && l.contains("object=cold")
            && l.contains(&format!("osd.{rotten}: unreadable"))
    });
    assert!(found, "no scrub finding for cold:\n{log}");
    // The rebuilt shard is right: with the primary gone, it and the third serve. A lock
    // is an xattr of every shard: the scrub finds the shards equal, and it outlives the
    // primary.
    c.ok(&["obj", "lock", "get", "ec", "small", "owner", "--cookie", "a"]);
    let stamp = pg["last_deep_scrub_ms"].as_i64().unwrap();
    c.ok(&["pg", "deep-scrub", &id]);
    let pg =
        wait_pg(&c, "a second deep scrub", |pg| pg["last_deep_scrub_ms"].as_i64().unwrap() > stamp);
    assert_eq!(pg["last_scrub_errors"], 0, "{pg}");
    c.ok(&["pool", "set", "ec", "min_size", "2"]);
    osds.kill(primary);
    c.ok(&["osd", "down", &primary.to_string()]);
    c.wait_status("the PG active on two shards", Duration::from_secs(60), |s| {
        s["osds"]["up"] == 2 && all_active(s)
    });
    for (name, data) in &objects {
        assert!(get_in(&c, &work, "ec", name) == *data, "{name} read through the rebuilt shard");
    }
    let info = c.json(&["obj", "lock", "info", "ec", "small", "owner"]);
    assert_eq!(info["lockers"][0]["cookie"], "a", "{info}");
    let busy = c.fails(&["obj", "lock", "get", "ec", "small", "owner", "--cookie", "b"]);
    assert!(busy.contains("is held by client.admin"), "{busy}");
}

/// A cluster of `n` OSDs with pool ec (k+m, one PG) and a work folder.
fn ec_cluster(n: usize, k: &str, m: &str) -> (Cluster, Osds, PathBuf) {
    let c = Cluster::start(3);
    let osds = Osds::create(&c, n);
    wait_up(&c, n as u64);
    c.ok(&["pool", "create", "ec", "erasure", "--k", k, "--m", m, "--pg-num", "1"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    (c, osds, work)
}

/// A shard whose bytes read clean (their checksums fit) but are not what the others
/// encode to, as a bug or a mistaken hand would leave: only a deep scrub's parity check
/// sees it, and with m = 2 it tells which shard is wrong, which recovery then rebuilds.
#[test]
fn a_shard_that_disagrees_with_parity_is_found_by_deep_scrub_and_rebuilt() {
    let (c, mut osds, work) = ec_cluster(4, "2", "2");
    let objects = [("forged", pattern(4, 300_000)), ("plain", pattern(5, 10_000))];
    let (id, primary, victim, stamp) = fill_ec_pg(&c, &work, &objects);

    // Shard 1 (data) gets other bytes, checksummed, at the same version.
    osds.kill(victim);
    let forged = work.join("forged.bytes");
    std::fs::write(&forged, [0xab; 100]).unwrap();
    let dir = osds.dirs[victim].display().to_string();
    let set = ["osd", "store-tool", "--data", &dir, "set-bytes", &id, "forged", "--offset", "4096"];
    let mut set = set.to_vec();
    set.push(path_str(&forged));
    c.ok(&set);
    // Past the end is refused: set-bytes never grows an object.
    let mut past = set.clone();
    past[8] = "151500";
    let refused = c.fails(&past);
    assert!(refused.contains("run past the end"), "{refused}");
    // A shard can be named: this OSD holds shard 1 only.
    let shard = |s: &str| format!("{id}s{s}");
    let listed = c.ok(&["osd", "store-tool", "--data", &dir, "list", &shard("1")]);
    assert!(listed.contains("forged"), "{listed}");
    let other = c.fails(&["osd", "store-tool", "--data", &dir, "list", &shard("3")]);
    assert!(other.contains(&format!("holds no copy of pg {}", shard("3"))), "{other}");
    let bad = c.fails(&["osd", "store-tool", "--data", &dir, "list", &shard("x")]);
    assert!(bad.contains("must be a number"), "{bad}");
    restart_in_new_epoch(&c, &mut osds, victim, 4);

    c.ok(&["pg", "deep-scrub", &id]);
    let pg = wait_pg(&c, "the deep scrub and its repair", |pg| {
        pg["last_deep_scrub_ms"].as_i64().unwrap() > stamp
            && pg["state"] == serde_json::json!(["active", "clean"])
    });
    assert_eq!(pg["last_scrub_errors"], 1, "{pg}");
    let log = std::fs::read_to_string(osds.dirs[primary].join("osd.log")).unwrap();
    let found = log.lines().any(|l| {
        l.contains("scrub found bad copies")
            && l.contains("object=forged")
            && l.contains(&format!("osd.{victim}: shard 1 disagrees"))
    });
    assert!(found, "no parity finding for forged:\n{log}");
    wait_pg(&c, "the rebuild", |pg| pg["recovered_objects"].as_u64().unwrap() >= 1);
    for (name, data) in &objects {
        assert!(get_in(&c, &work, "ec", name) == *data, "{name} after the rebuild");
    }
    let stamp = pg["last_deep_scrub_ms"].as_i64().unwrap();
    c.ok(&["pg", "deep-scrub", &id]);
    let pg =
        wait_pg(&c, "a second deep scrub", |pg| pg["last_deep_scrub_ms"].as_i64().unwrap() > stamp);
    assert_eq!(pg["last_scrub_errors"], 0, "{pg}");
}

/// Two OSDs of an erasure-coded 2+1 PG marked out at once: their replacements hold
/// nothing and only one shard is left in the up set, but the two still hold theirs. They
/// keep serving at their positions while the replacements are rebuilt (it was `down`),
/// then their copies are removed as strays.
#[test]
fn an_ec_pg_whose_two_osds_are_marked_out_at_once_serves_from_them_while_rebuilding() {
    let c = Cluster::start(3);
    let mut osds = Osds::create(&c, 5);
    wait_up(&c, 5);
    c.ok(&["pool", "create", "ec", "erasure", "--k", "2", "--m", "1", "--pg-num", "1"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let objects = [("a", pattern(7, 300_000)), ("b", pattern(8, 5_000)), ("c", pattern(9, 1))];
    let (id, first, second, _) = fill_ec_pg(&c, &work, &objects);
    c.ok(&["osd", "out", &first.to_string(), &second.to_string()]);
    let pg = wait_pg(&c, "the PG clean without the two", |pg| {
        let acting = pg["acting"].as_array().unwrap();
        pg["state"] == serde_json::json!(["active", "clean"])
            && !acting.contains(&serde_json::json!(first))
            && !acting.contains(&serde_json::json!(second))
    });
    assert_eq!(pg["up"], pg["acting"], "{pg}");
    // The first led the override and backfilled the replacements.
    wait_log(&osds.dirs[first], "backfill done", &format!("pg={id}"));
    // The two held strays, removed once the PG was clean; what they held was rebuilt.
    for osd in [first, second] {
        wait_log(&osds.dirs[osd], "removed a stray copy", &format!("pg={id}"));
        osds.kill(osd);
        let dir = osds.dirs[osd].display().to_string();
        let listed = c.ok(&["osd", "store-tool", "--data", &dir, "list"]);
        assert!(!listed.lines().any(|l| l.starts_with(&id)), "osd.{osd} still holds {listed}");
    }
    for (name, data) in &objects {
        assert!(get_in(&c, &work, "ec", name) == *data, "{name} from the rebuilt shards");
    }
}

/// A write torn by its primary's failure: it reached the primary's shard and one other,
/// never the third, and then the primary and the third OSD died. The one shard that is
/// up again with the write cannot decode it, and the old version's other shard is the
/// only one left of that: the shard that has the write puts its own old bytes back from
/// the stash it kept (peering has it do so), and the object reads back as it was. The
/// old primary, back, does the same with its shard, and a deep scrub finds all three
/// agree.
#[test]
fn a_write_torn_by_a_failed_primary_is_rolled_back_from_the_shards_stashes() {
    use bytes::Bytes;
    use proto::osd::{ObjectName, ObjectOp, OpResult};

    let (c, mut osds, work) = ec_cluster(3, "2", "1");
    let old = pattern(7, 300_000);
    put_in(&c, &work, "ec", "torn", &old);
    wait_clean(&c, 1);
    let pg = only_pg(&c);
    let osd = |i: usize| pg["acting"][i].as_u64().unwrap() as usize;
    let (primary, kept, late) = (osd(0), osd(1), osd(2));

    // The third shard's OSD hangs; nodown keeps it in the map, so the primary holds the
    // write (applied on its shard and the second) until the op is slow.
    c.ok(&["config", "set", "osd.op_complaint_time", "1"]);
    c.ok(&["osd", "set", "nodown"]);
    osds.signal(late, libc::SIGSTOP);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = client::ClientConfig::load(&c.config()).unwrap();
    let objects = std::sync::Arc::new(runtime.block_on(async {
        let mon = std::sync::Arc::new(client::MonClient::connect(config).unwrap());
        client::objects::Objects::new(mon).await.unwrap()
    }));
    let name = ObjectName { namespace: String::new(), name: b"torn".to_vec() };
    // Part of some stripes (read, modified, written) and whole others, and an xattr.
    let ops = vec![
        ObjectOp::Write { offset: 100_000, len: 50_000 },
        ObjectOp::SetXattr { name: "v".into(), value: b"2".to_vec() },
    ];
    let (client, torn) = (objects.clone(), name.clone());
    let data = Bytes::from(pattern(8, 50_000));
    let writer = runtime.spawn(async move { client.op("ec", &torn, ops, data).await });
    c.wait_status("SLOW_OPS", Duration::from_secs(30), |s| {
        check_codes(s).contains(&"SLOW_OPS".to_owned())
    });
    // The client gives up (were it to resend, the write would rightly be applied anew),
    // and the primary and the hung OSD die.
    writer.abort();
    osds.kill(primary);
    osds.kill(late);
    c.ok(&["osd", "unset", "nodown"]);
    for gone in [primary, late] {
        c.ok(&["osd", "down", &gone.to_string()]);
    }
    wait_up(&c, 1);

    // The hung OSD returns: with the second shard it is k shards, of two versions.
    osds.start(late);
    wait_up(&c, 2);
    wait_log(&osds.dirs[kept], "rolled back a torn write from its stash", "object=torn");
    assert!(get_in(&c, &work, "ec", "torn") == old, "the object as it was before the torn write");
    let answer =
        runtime.block_on(objects.op("ec", &name, vec![ObjectOp::GetXattrs], Bytes::new())).unwrap();
    let OpResult::Xattrs(xattrs) = &answer.results[0] else { panic!("{answer:?}") };
    assert!(xattrs.is_empty(), "the torn write's xattr is gone: {xattrs:?}");

    // The old primary returns and rolls its shard back too: all three agree.
    osds.start(primary);
    wait_up(&c, 3);
    let back = c.status().unwrap()["epoch"].as_u64().unwrap();
    wait_log(&osds.dirs[primary], "rolled back a torn write from its stash", "object=torn");
    let pg = wait_pg(&c, "the PG clean with all three", |pg| {
        pg["epoch"].as_u64().unwrap() >= back
            && pg["state"] == serde_json::json!(["active", "clean"])
    });
    let stamp = pg["last_deep_scrub_ms"].as_i64().unwrap();
    c.ok(&["pg", "deep-scrub", pg["pg"].as_str().unwrap()]);
    let pg = wait_pg(&c, "a deep scrub", |pg| pg["last_deep_scrub_ms"].as_i64().unwrap() > stamp);
    assert_eq!(pg["last_scrub_errors"], 0, "{pg}");
    assert!(get_in(&c, &work, "ec", "torn") == old, "the object read from all three shards");
}

/// A shard whose bytes rotted cannot keep them for a rollback: an overwrite of the object
/// applies there without a stash (it replaces the rotten bytes anyway), rather than
/// failing the write on that shard again and again.
#[test]
fn an_overwrite_replaces_rotten_bytes_it_cannot_stash() {
    let (c, mut osds, work) = ec_cluster(3, "2", "1");
    let (id, _, _, _) = fill_ec_pg(&c, &work, &[("rot", pattern(1, 300_000))]);
    // The parity shard rots: no read of the data needs it, so only the write meets it.
    let parity = only_pg(&c)["acting"][2].as_u64().unwrap() as usize;
    osds.kill(parity);
    let dir = osds.dirs[parity].display().to_string();
    c.ok(&["osd", "store-tool", "--data", &dir, "corrupt", &id, "rot", "--offset", "1000"]);
    restart_in_new_epoch(&c, &mut osds, parity, 3);
    let new = pattern(2, 200_000);
    put_in(&c, &work, "ec", "rot", &new);
    wait_log(&osds.dirs[parity], "applies without a rollback stash", "object=rot");
    assert!(get_in(&c, &work, "ec", "rot") == new);
    let stamp = only_pg(&c)["last_deep_scrub_ms"].as_i64().unwrap();
    c.ok(&["pg", "deep-scrub", &id]);
    let pg = wait_pg(&c, "a deep scrub", |pg| pg["last_deep_scrub_ms"].as_i64().unwrap() > stamp);
    assert_eq!(pg["last_scrub_errors"], 0, "the rotten bytes were replaced: {pg}");
}

/// An erasure-coded PG whose last active interval's other shards are all gone (their
/// OSDs down and out) is down, and says which OSDs it waits for (`pg query`, `health
/// detail`); once they are back it serves what it held.
#[test]
fn a_down_erasure_coded_pg_names_the_osds_it_waits_for_and_serves_once_they_return() {
    let (c, mut osds, work) = ec_cluster(4, "2", "1");
    let data = pattern(26, 100_000);
    put_in(&c, &work, "ec", "kept", &data);
    wait_clean(&c, 1);
    let pg = only_pg(&c);
    let id = pg["pg"].as_str().unwrap().to_owned();
    let acting: Vec<u64> =
        pg["acting"].as_array().unwrap().iter().flat_map(|o| o.as_u64()).collect();
    let (primary, gone) = (acting[0], [acting[1], acting[2]]);
    for osd in gone {
        osds.kill(osd as usize);
    }
    let gone_args: Vec<String> = gone.iter().map(u64::to_string).collect();
    let gone_args: Vec<&str> = gone_args.iter().map(String::as_str).collect();
    c.ok(&[["osd", "down"].as_slice(), &gone_args].concat());
    c.ok(&[["osd", "out"].as_slice(), &gone_args].concat());
    let down = wait_pg(&c, "the PG down", |pg| pg["state"] == serde_json::json!(["down"]));
    let mut waiting = gone.to_vec();
    waiting.sort_unstable();
    assert_eq!(down["blocked_by"], serde_json::json!(waiting), "{down}");
    let query = c.json(&["pg", "query", &id]);
    assert_eq!(query["blocked_by"], serde_json::json!(waiting), "{query}");
    let text = c.ok(&["pg", "query", &id]);
    let named = format!("blocked by: osd.{}, osd.{}", waiting[0], waiting[1]);
    assert!(text.contains(&named) && text.contains("may have taken writes"), "{text}");
    let detail = c.ok(&["health", "detail"]);
    assert!(
        detail.contains(&format!("waiting for osd.{}, osd.{}", waiting[0], waiting[1])),
        "{detail}"
    );
    assert!(c.fails(&["pg", "query", "9.0"]).contains("no pg 9.0"));
    for osd in gone {
        osds.start(osd as usize);
    }
    c.ok(&[["osd", "in"].as_slice(), &gone_args].concat());
    wait_clean(&c, 1);
    assert_eq!(get_in(&c, &work, "ec", "kept"), data, "primary osd.{primary}");
}
