//! Scrub and repair of replicated PGs: rotten bytes are never served, deep scrub finds them,
//! repair rewrites them, and writes go on meanwhile.

use super::*;

#[test]
fn a_flipped_byte_in_the_primarys_copy_is_never_served_and_is_repaired_from_a_replica() {
    // One PG, so one OSD is the primary of every object.
    let (c, mut osds, work) = replicated_cluster(1);
    let objects: Vec<(String, Vec<u8>)> =
        (0..4).map(|i| (format!("rot{i}"), pattern(40 + i, 300_000))).collect();
    for (name, data) in &objects {
        put(&c, &work, name, data);
    }
    wait_clean(&c, 1);
    let dump = c.json(&["pg", "dump"]);
    let primary = dump["pgs"][0]["acting"][0].as_u64().unwrap() as usize;

    // The store tool refuses a running OSD's store.
    let primary_dir = osds.dirs[primary].display().to_string();
    let running = c.fails(&["osd", "store-tool", "--data", &primary_dir, "list"]);
    assert!(running.contains("is the OSD still running"), "{running}");

    // The primary stops, its copy rots (a byte of a whole chunk in the block file and one
    // of the partial last chunk in RocksDB, for every object), and it comes back as the
    // primary.
    osds.kill(primary);
    let pg = dump["pgs"][0]["pg"].as_str().unwrap().to_owned();
    let tool = |args: &[&str]| {
        let mut all = vec!["osd", "store-tool", "--data", &primary_dir];
        all.extend(args);
        c.ok(&all)
    };
    let listed = tool(&["list", &pg]);
    for (name, _) in &objects {
        assert!(listed.contains(&format!("{name}\t300000")), "{name} not listed:\n{listed}");
        let dumped = c.json(&["osd", "store-tool", "--data", &primary_dir, "dump", &pg, name]);
        let chunks = dumped["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), 5, "{dumped}");
        assert!(
            chunks[1][1]["block"].is_object() && chunks[4][1]["engine"].is_object(),
            "{dumped}"
        );
        for offset in ["70000", "299999"] {
            tool(&["corrupt", &pg, name, "--offset", offset]);
        }
        let file = work.join("rotten");
        let file = file.to_str().unwrap();
        let rotten =
            c.fails(&["osd", "store-tool", "--data", &primary_dir, "get", &pg, name, file]);
        assert!(rotten.contains("does not match what was stored"), "{rotten}");
    }
    let past = c.fails(&[
        "osd",
        "store-tool",
        "--data",
        &primary_dir,
        "corrupt",
        &pg,
        "rot0",
        "--offset",
        "300000",
    ]);
    assert!(past.contains("the object is 300000 bytes"), "{past}");
    let missing = c.fails(&["osd", "store-tool", "--data", &primary_dir, "dump", &pg, "nope"]);
    assert!(missing.contains("no object 'nope'"), "{missing}");
    osds.start(primary);
    wait_up(&c, 3);
    wait_clean(&c, 1);
    for (name, data) in &objects {
        assert!(get(&c, &work, name) == *data, "{name} read through the rotten primary");
    }
    let log = std::fs::read_to_string(osds.dirs[primary].join("osd.log")).unwrap();
    assert!(log.contains("local copy is corrupt"), "the primary did not notice:\n{log}");

    // The repair rewrote the primary's copy: it alone serves every object.
    c.ok(&["pool", "set", "rbd", "min_size", "1"]);
    let others: Vec<usize> = (0..3).filter(|&i| i != primary).collect();
    for &i in &others {
        osds.kill(i);
    }
    c.ok(&["osd", "down", &others[0].to_string(), &others[1].to_string()]);
    for (name, data) in &objects {
        assert!(get(&c, &work, name) == *data, "{name} from the repaired copy alone");
    }
    // And on disk, read offline: the repaired copy checks out.
    osds.kill(primary);
    for (name, expected) in &objects {
        let file = work.join("offline");
        tool(&["get", &pg, name, file.to_str().unwrap()]);
        assert!(std::fs::read(&file).unwrap() == *expected, "{name} offline after repair");
    }
}

#[test]
fn deep_scrub_finds_a_rotten_replica_copy_and_repair_rewrites_it() {
    let (c, mut osds, work) = replicated_cluster(1);
    let objects: Vec<(String, Vec<u8>)> = vec![
        ("whole".into(), pattern(1, 300_000)),
        ("small".into(), pattern(2, 10_000)),
        ("clean".into(), pattern(3, 50_000)),
    ];
    for (name, data) in &objects {
        put(&c, &work, name, data);
    }
    wait_clean(&c, 1);
    let pg = only_pg(&c);
    let (id, replica) =
        (pg["pg"].as_str().unwrap().to_owned(), pg["acting"][1].as_u64().unwrap() as usize);
    let created_stamp = pg["last_deep_scrub_ms"].as_i64().unwrap();

    // A replica's copies rot while it is stopped: a block-file chunk of one object and
    // the engine-held data of another. Reads go to the primary and stay right.
    osds.kill(replica);
    let replica_dir = osds.dirs[replica].display().to_string();
    for (name, offset) in [("whole", "70000"), ("small", "5000")] {
        c.ok(&[
            "osd",
            "store-tool",
            "--data",
            &replica_dir,
            "corrupt",
            &id,
            name,
            "--offset",
            offset,
        ]);
    }
    osds.start(replica);
    wait_up(&c, 3);
    wait_clean(&c, 1);
    for (name, data) in &objects {
        assert!(get(&c, &work, name) == *data, "{name} read back");
    }

    // Bad input first: PGs that do not exist, and words that are not PGs.
    assert!(c.fails(&["pg", "deep-scrub", "9.0"]).contains("does not exist"));
    assert!(c.fails(&["pg", "scrub", "1.7"]).contains("does not exist"));
    let said = c.fails(&["pg", "scrub", "rbd"]);
    assert!(said.contains("'rbd' is not a PG id"), "{said}");

    // A deep scrub reads every copy, finds the two rotten ones and repairs them.
    let said = c.ok(&["pg", "deep-scrub", &id]);
    assert!(said.contains(&format!("instructed pg {id} to deep-scrub")), "{said}");
    let pg = wait_pg(&c, "the deep scrub and its repair", |pg| {
        let state: Vec<&str> =
            pg["state"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
        pg["last_deep_scrub_ms"].as_i64().unwrap() > created_stamp && state == ["active", "clean"]
    });
    assert_eq!(pg["last_scrub_errors"], 2, "{pg}");
    assert_eq!(pg["inconsistent"], 0, "{pg}");
    let primary_log = |c: &Cluster| {
        let primary = only_pg(c)["acting"][0].as_u64().unwrap() as usize;
        std::fs::read_to_string(osds.dirs[primary].join("osd.log")).unwrap()
    };
    let log = primary_log(&c);
    for name in ["whole", "small"] {
        let line = log
            .lines()
            .find(|l| l.contains("scrub found bad copies") && l.contains(&format!("object={name}")))
            .unwrap_or_else(|| panic!("no scrub finding for {name}:\n{log}"));
        assert!(line.contains(&format!("osd.{replica}: unreadable")), "{line}");
        assert!(log.contains(&format!("object={name}")) && log.contains("repaired"), "{log}");
    }
    assert!(!log.contains("object=clean"), "a clean object was reported:\n{log}");
    assert!(!check_codes(&c.status().unwrap()).contains(&"PG_INCONSISTENT".to_owned()));
    assert_eq!(c.json(&["pg", "ls-inconsistent"]), serde_json::json!([]));

    // Repair is real: another deep scrub finds nothing, and the replica alone serves
    // every object byte-exact.
    let stamp = pg["last_deep_scrub_ms"].as_i64().unwrap();
    c.ok(&["pg", "repair", &id]);
    let pg = wait_pg(&c, "the second deep scrub", |pg| {
        pg["last_deep_scrub_ms"].as_i64().unwrap() > stamp
    });
    assert_eq!(pg["last_scrub_errors"], 0, "{pg}");
    let light = pg["last_scrub_ms"].as_i64().unwrap();
    c.ok(&["pg", "scrub", &id]);
    wait_pg(&c, "a light scrub", |pg| pg["last_scrub_ms"].as_i64().unwrap() > light);
    c.ok(&["pool", "set", "rbd", "min_size", "1"]);
    for i in (0..3).filter(|&i| i != replica) {
        osds.kill(i);
    }
    for (name, data) in &objects {
        assert!(get(&c, &work, name) == *data, "{name} read from the repaired replica");
    }
}

/// Two seconds of 4 KiB writes to pool rbd, 16 in flight, kept as bench run `run`
/// (a second run of the same name overwrites the first's objects).
fn bench_write_4k(c: &Cluster, run: &str) {
    c.ok(&[
        "bench",
        "rbd",
        "2",
        "write",
        "-b",
        "4K",
        "-t",
        "16",
        "--no-cleanup",
        "--run-name",
        run,
    ]);
}

#[test]
fn writes_go_on_during_a_deep_scrub_and_are_no_scrub_errors() {
    let (c, osds, _work) = replicated_cluster(1);
    // Many small objects in one PG, and a pause between chunks: the scrub takes seconds.
    bench_write_4k(&c, "before");
    c.ok(&["config", "set", "osd.scrub_sleep_ms", "100"]);
    for dir in &osds.dirs {
        wait_log(dir, "scrub settings changed", "sleep_ms=100");
    }
    wait_clean(&c, 1);
    let pg = only_pg(&c);
    let (id, stamp) =
        (pg["pg"].as_str().unwrap().to_owned(), pg["last_deep_scrub_ms"].as_i64().unwrap());
    assert!(pg["objects"].as_u64().unwrap() > 3 * 64, "{pg}");

    c.ok(&["pg", "deep-scrub", &id]);
    wait_pg(&c, "the deep scrub to start", |pg| {
        pg["state"].as_array().unwrap().iter().any(|w| w == "scrubbing")
    });
    // New objects all over the key space, and overwrites, while chunks are checked: every
    // write succeeds, and none of them looks like a bad copy to the scrub.
    bench_write_4k(&c, "during");
    bench_write_4k(&c, "before");
    let pg = wait_pg(&c, "the deep scrub to end", |pg| {
        pg["last_deep_scrub_ms"].as_i64().unwrap() > stamp
    });
    assert_eq!(pg["last_scrub_errors"], 0, "{pg}");
    assert_eq!(pg["inconsistent"], 0, "{pg}");
    c.ok(&["bench", "rbd", "2", "seq", "-t", "16", "--run-name", "during"]);
}
