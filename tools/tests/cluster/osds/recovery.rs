//! Recovery and backfill: an OSD that returns catches up, data moves when OSDs go out and
//! in, a primary dying mid-backfill, a new interval peering with an OSD slow to take its
//! map, a small OSD, a log that moved past a copy.

use super::*;

#[test]
fn objects_survive_a_killed_osd_and_a_returning_one_catches_up() {
    let (c, mut osds, work) = replicated_cluster(8);

    // Byte-exact round trips, an empty object, and a multi-chunk one.
    let big = pattern(1, 3_000_000);
    put(&c, &work, "big", &big);
    assert!(get(&c, &work, "big") == big);
    // Larger than one read request may return (64 MiB): the CLI reads it in pieces.
    let huge = pattern(3, 70 << 20);
    put(&c, &work, "huge", &huge);
    assert!(get(&c, &work, "huge") == huge);
    put(&c, &work, "empty", b"");
    assert_eq!(get(&c, &work, "empty"), b"");
    let stat = c.json(&["obj", "stat", "rbd", "big"]);
    assert_eq!(stat["size"], 3_000_000);
    // The primaries report what their PGs hold.
    let status = c.wait_status("3 objects counted", Duration::from_secs(30), |s| {
        s["pg_summary"]["objects"] == 3 && s["pg_summary"]["states"]["active+clean"] == 8
    });
    assert_eq!(status["pg_summary"]["bytes"], 3_000_000 + (70 << 20), "{status}");
    assert_eq!(status["health"], "HEALTH_OK", "{status}");
    let pool_df = c.json(&["pool", "df"]);
    assert_eq!(pool_df[0]["objects"], 3, "{pool_df}");
    assert_eq!(pool_df[0]["used_bytes"], 3 * (3_000_000 + (70u64 << 20)), "{pool_df}");
    let osd_df = c.json(&["osd", "df"]);
    let rows = osd_df.as_array().unwrap();
    assert!(rows.len() == 3 && rows.iter().all(|o| o["pgs"] == 8), "{osd_df}");

    // Kill osd.1: its peers notice and report it, and the monitors mark it down, without
    // waiting for its beacons to go missing. Writes go on, degraded.
    osds.kill(1);
    let status = c.wait_status("osd.1 reported down", Duration::from_secs(15), |s| {
        s["osds"]["up"] == 2 && check_codes(s).contains(&"PG_UNDERSIZED".to_owned())
    });
    assert!(check_codes(&status).contains(&"OSD_DOWN".to_owned()), "{status}");
    for i in 0..5 {
        put(&c, &work, &format!("w{i}"), &pattern(10 + i, 100_000));
    }
    put(&c, &work, "big", &pattern(2, 200_000));

    // It returns, peers, and catches up from the log. Then the two others die: with
    // min_size 1, osd.1 alone must serve everything written while it was dead.
    let status = c.wait_status("writes counted as degraded", Duration::from_secs(30), |s| {
        s["pg_summary"]["objects"] == 8 && s["pg_summary"]["degraded"] == 8
    });
    assert!(check_codes(&status).contains(&"PG_DEGRADED".to_owned()), "{status}");
    osds.start(1);
    wait_up(&c, 3);
    // Log recovery brings every copy back: clean and healthy, nothing degraded.
    let status = wait_clean(&c, 8);
    assert_eq!(status["pg_summary"]["degraded"], 0, "{status}");
    c.wait_status("HEALTH_OK", Duration::from_secs(30), |s| s["health"] == "HEALTH_OK");
    c.ok(&["pool", "set", "rbd", "min_size", "1"]);
    // Reading every object through the PG primaries lets recovery finish first: a read
    // of an object missing somewhere waits for it.
    for i in 0..5 {
        assert!(get(&c, &work, &format!("w{i}")) == pattern(10 + i, 100_000), "w{i}");
    }
    assert!(get(&c, &work, "big") == pattern(2, 200_000));
    osds.kill(0);
    osds.kill(2);
    c.ok(&["osd", "down", "0", "2"]);
    assert_eq!(up_osds(&c), 1);
    for i in 0..5 {
        assert!(
            get(&c, &work, &format!("w{i}")) == pattern(10 + i, 100_000),
            "w{i} on osd.1 alone"
        );
    }
    assert!(get(&c, &work, "big") == pattern(2, 200_000));
    let mut names: Vec<String> = c.ok(&["obj", "ls", "rbd"]).lines().map(String::from).collect();
    names.sort();
    assert_eq!(names, ["big", "empty", "huge", "w0", "w1", "w2", "w3", "w4"]);

    // Bad input: clear errors, and the OSD keeps serving.
    let missing = c.fails(&["obj", "get", "rbd", "nope", path_str(&work.join("x"))]);
    assert!(missing.contains("does not exist"), "{missing}");
    let no_pool = c.fails(&["obj", "stat", "nosuchpool", "big"]);
    assert!(no_pool.contains("pool 'nosuchpool' does not exist"), "{no_pool}");
    let long = "x".repeat(5000);
    let too_long = c.fails(&["obj", "stat", "rbd", &long]);
    assert!(too_long.contains("object name"), "{too_long}");
    c.ok(&["obj", "rm", "rbd", "w0"]);
    assert!(c.fails(&["obj", "stat", "rbd", "w0"]).contains("does not exist"));
}

#[test]
fn marking_an_osd_out_and_in_moves_data_by_backfill_while_writes_go_on() {
    let c = Cluster::start(3);
    let osds = Osds::create(&c, 4);
    wait_up(&c, 4);
    // The throttle is the operator's, changed at runtime: every OSD takes it from the
    // answer to its next beacon.
    c.ok(&["config", "set", "osd.backfill_max_active", "1"]);
    for dir in &osds.dirs {
        wait_log(dir, "recovery throttles changed", "backfill_max_active=1");
    }
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "16"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..24u32 {
        let (name, data) = (format!("o{i}"), pattern(i, 100_000 + i as usize * 1000));
        put(&c, &work, &name, &data);
        expected.push((name, data));
    }
    c.wait_status("24 objects, 16 pgs active+clean", Duration::from_secs(60), |s| {
        s["pg_summary"]["objects"] == 24 && s["pg_summary"]["states"]["active+clean"] == 16
    });
    // What must move: the copies on osd.3.
    let dump = c.json(&["pg", "dump"]);
    let on_osd3: u64 = dump["pgs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["acting"].as_array().unwrap().contains(&serde_json::json!(3)))
        .map(|p| p["objects"].as_u64().unwrap())
        .sum();
    assert!(on_osd3 > 0, "{dump}");
    let recovered_before = recovered_objects(&c);

    c.ok(&["osd", "out", "3"]);
    // Writes go on while the data moves: new objects and overwrites.
    for i in 0..6u32 {
        let (name, data) = (format!("n{i}"), pattern(100 + i, 50_000));
        put(&c, &work, &name, &data);
        expected.push((name, data));
        let (name, data) = (format!("o{i}"), pattern(200 + i, 70_000));
        put(&c, &work, &name, &data);
        expected.retain(|(n, _)| *n != name);
        expected.push((name, data));
    }
    // The complete copies serve until backfill is done: no object has fewer copies than
    // it had. (A write racing the map change may miss a replica or two until log recovery
    // brings it: one write is in flight at a time here.)
    let status = c.wait_status("backfill off osd.3 done", Duration::from_secs(90), |s| {
        assert!(s["pg_summary"]["degraded"].as_u64().unwrap() <= 2, "{s}");
        s["pg_summary"]["states"]["active+clean"] == 16
            && s["pg_summary"]["misplaced"] == 0
            && s["pg_summary"]["objects"] == 30
    });
    assert_eq!(check_codes(&status), ["OSD_OUT"], "{status}");
    // osd.3's copies are deleted once their PGs are clean elsewhere, and every PG has its
    // three copies on the other OSDs.
    wait_df(&c, "osd.3 to hold no PG and the others 48 copies", |df| {
        let pgs =
            |osd: u64| df.iter().find(|o| o["osd"] == osd).map(|o| o["pgs"].as_u64().unwrap());
        pgs(3) == Some(0) && (0..3).map(|o| pgs(o).unwrap_or(0)).sum::<u64>() == 48
    });
    // Backfill copied what was on osd.3, plus at most the objects written meanwhile.
    let moved = recovered_objects(&c) - recovered_before;
    assert!((on_osd3..=on_osd3 + 12).contains(&moved), "moved {moved}, osd.3 held {on_osd3}");
    for (name, data) in &expected {
        assert!(get(&c, &work, name) == *data, "{name} after backfill");
    }

    // Back in: CRUSH puts PGs on osd.3 again, some with osd.3 as their primary, and it
    // has nothing: a complete copy leads while osd.3 backfills.
    c.ok(&["osd", "in", "3"]);
    for i in 0..4u32 {
        let (name, data) = (format!("m{i}"), pattern(300 + i, 30_000));
        put(&c, &work, &name, &data);
        expected.push((name, data));
    }
    c.wait_status("backfill onto osd.3 done", Duration::from_secs(90), |s| {
        assert!(s["pg_summary"]["degraded"].as_u64().unwrap() <= 2, "{s}");
        s["pg_summary"]["states"]["active+clean"] == 16
            && s["pg_summary"]["misplaced"] == 0
            && s["pg_summary"]["objects"] == 34
    });
    wait_df(&c, "osd.3 to hold PGs again", |df| {
        df.iter().find(|o| o["osd"] == 3).is_some_and(|o| o["pgs"].as_u64().unwrap() > 0)
            && df.iter().map(|o| o["pgs"].as_u64().unwrap()).sum::<u64>() == 48
    });
    for (name, data) in &expected {
        assert!(get(&c, &work, name) == *data, "{name} after osd.3 returned");
    }
}

/// osd.0 dies at a crash point right after its first backfill push, in the middle of
/// moving data off an OSD marked out: the PGs it led peer under another primary, it
/// returns, and the backfill finishes with every object as written.
#[test]
fn a_primary_that_dies_mid_backfill_leaves_nothing_lost_and_the_backfill_finishes() {
    let c = Cluster::start(3);
    let mut osds = Osds::create_with_env(&c, 4, |i| match i {
        0 => vec![("FAILPOINTS".to_owned(), "osd::backfill_pushed=return".to_owned())],
        _ => Vec::new(),
    });
    wait_up(&c, 4);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "16"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..24u32 {
        let (name, data) = (format!("o{i}"), pattern(i, 100_000 + i as usize * 1000));
        put(&c, &work, &name, &data);
        expected.push((name, data));
    }
    c.wait_status("24 objects, 16 pgs active+clean", Duration::from_secs(60), |s| {
        s["pg_summary"]["objects"] == 24 && s["pg_summary"]["states"]["active+clean"] == 16
    });
    c.ok(&["osd", "out", "3"]);
    let exit = osds.wait_exit(0, Duration::from_secs(90));
    assert_eq!(exit.code(), Some(osd::failpoints::CRASH_EXIT_CODE), "osd.0: {exit}");
    wait_log(&osds.dirs[0], "crash point reached", "osd::backfill_pushed");
    osds.start(0);
    wait_up(&c, 4);
    c.wait_status("backfill off osd.3 done", Duration::from_secs(120), |s| {
        s["pg_summary"]["states"]["active+clean"] == 16
            && s["pg_summary"]["misplaced"] == 0
            && s["pg_summary"]["degraded"] == 0
            && s["pg_summary"]["objects"] == 24
    });
    for (name, data) in &expected {
        assert!(get(&c, &work, name) == *data, "{name} after the backfill");
    }
}

/// osd.1 takes two seconds to hand each new map to its PGs (a delay point holds open the
/// window between a map's arrival and its PGs having it). A PG of a new interval peers
/// only with copies that have entered it: one still in the interval that ended could
/// take writes there after answering, and its answer would then be stale. So when osd.0
/// goes down, osd.1's answers wait for its PGs to take the map, and the PGs osd.2 now
/// leads activate osd.1 at their first try, never hearing from an ended interval.
#[test]
fn a_new_interval_peers_only_with_copies_that_have_entered_it() {
    let c = Cluster::start(3);
    let mut osds = Osds::create_with_env(&c, 3, |i| match i {
        1 => vec![("FAILPOINTS".to_owned(), "osd::map_arrived=return(2000)".to_owned())],
        _ => Vec::new(),
    });
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "8"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    for i in 0..8u32 {
        put(&c, &work, &format!("o{i}"), &pattern(i, 20_000));
    }
    wait_clean(&c, 8);
    // The PGs osd.2 leads once osd.0 is gone: the first of their acting sets without it.
    let dump = c.json(&["pg", "dump"]);
    let led_by_osd2 = dump["pgs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            let acting = p["acting"].as_array().unwrap();
            acting.iter().find(|&o| *o != 0) == Some(&serde_json::json!(2))
        })
        .count();
    assert!(led_by_osd2 > 0, "no PG for osd.2 to lead: {dump}");

    osds.kill(0);
    c.ok(&["osd", "down", "0"]);
    c.wait_status("8 PGs active without osd.0", Duration::from_secs(60), |s| {
        let states = s["pg_summary"]["states"].as_object().unwrap();
        s["osds"]["up"] == 2
            && states
                .iter()
                .filter(|(k, _)| k.starts_with("active"))
                .map(|(_, n)| n.as_u64().unwrap())
                .sum::<u64>()
                == 8
    });
    wait_log(&osds.dirs[1], "delay point reached", "osd::map_arrived");
    let log = std::fs::read_to_string(osds.dirs[2].join("osd.log")).unwrap();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("activation failed")).collect();
    assert!(failed.is_empty(), "osd.2 heard from an ended interval: {failed:#?}");
    for i in 0..8u32 {
        assert!(get(&c, &work, &format!("o{i}")) == pattern(i, 20_000), "o{i}");
    }
}

#[test]
fn backfill_stops_short_of_filling_a_small_new_osd() {
    let c = Cluster::start(3);
    let mut osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    // One push at a time per OSD, and backfill stops at 80%: what a push in flight adds
    // on top stays well below full.
    c.ok(&["config", "set", "osd.backfill_max_active", "1"]);
    c.ok(&["config", "set", "mon.nearfull_percent", "70"]);
    c.ok(&["config", "set", "mon.backfillfull_percent", "80"]);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "16"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    const OBJECT: usize = 2 << 20;
    for i in 0..48u32 {
        put(&c, &work, &format!("o{i}"), &pattern(i, OBJECT));
    }
    wait_clean(&c, 16);

    // A new OSD of 64 MiB would take about 72 MiB of the 96 MiB there is.
    let small = osds.prepare(&c, &["--capacity", "64M"]);
    osds.start(small);
    wait_up(&c, 4);
    let status = c.wait_status("backfill_toofull", Duration::from_secs(90), |s| {
        let states = s["pg_summary"]["states"].as_object().unwrap();
        states.keys().any(|k| k.contains("backfill_toofull"))
            && check_codes(s).contains(&"OSD_BACKFILLFULL".to_owned())
    });
    // Client I/O goes on: every PG is active, the new OSD is not full, writes work.
    let states = status["pg_summary"]["states"].as_object().unwrap();
    assert!(states.keys().all(|k| k.starts_with("active")), "{status}");
    put(&c, &work, "during", &pattern(100, OBJECT));
    let used = |df: &[serde_json::Value]| {
        let o = df.iter().find(|o| o["osd"] == small as u64).expect("the new OSD");
        let (total, avail) =
            (o["total_bytes"].as_f64().unwrap(), o["avail_bytes"].as_f64().unwrap());
        100.0 * (total - avail) / total
    };
    // Past 80% by at most the pushes in flight when it got there: one 2 MiB object per
    // primary (3% of 64 MiB each).
    let df = osd_df(&c);
    assert!(used(&df) < 95.0, "osd.{small} at {:.1}%: {df:?}", used(&df));
    for i in 0..48u32 {
        assert!(get(&c, &work, &format!("o{i}")) == pattern(i, OBJECT), "o{i} read back");
    }
    // The reads took a while: backfill stayed stopped meanwhile.
    let df = osd_df(&c);
    eprintln!("osd.{small} stopped at {:.1}% used", used(&df));
    assert!(used(&df) < 95.0, "osd.{small} at {:.1}%: {df:?}", used(&df));
    assert!(!check_codes(&c.status().unwrap()).contains(&"OSD_FULL".to_owned()));
    assert!(get(&c, &work, "during") == pattern(100, OBJECT));
}

/// A clean PG's log is trimmed as writes go on (it used to grow by an entry per write for
/// as long as the PG stayed clean), and stays bounded while degraded too; an OSD that
/// returns after the log moved past it is backfilled, and every object reads back.
#[test]
fn a_pg_log_stays_bounded_under_writes_and_a_copy_it_left_behind_is_backfilled() {
    use osd::pg::log::{LOG_ENTRIES_KEPT, LOG_ENTRIES_MAX};

    let (c, mut osds, _work) = replicated_cluster(1);
    wait_clean(&c, 1);
    // Writes new objects (a bench run of its own each second) until `objects` there are:
    // the log never holds more than `most` entries meanwhile. Returns the PG and the runs.
    let write_until = |phase: &str, objects: u64, most: usize| {
        let mut runs = Vec::new();
        for i in 0..100 {
            let pg = only_pg(&c);
            let entries = pg["log_entries"].as_u64().unwrap() as usize;
            assert!(entries <= most, "{entries} log entries, at most {most} expected: {pg}");
            if pg["objects"].as_u64().unwrap() >= objects {
                return (pg, runs);
            }
            let run = format!("{phase}{i}");
            let args = ["bench", "rbd", "1", "write", "-b", "4K", "-t", "16", "--no-cleanup"];
            c.ok(&args.into_iter().chain(["--run-name", &run]).collect::<Vec<_>>());
            runs.push(run);
        }
        panic!("100 bench runs did not write {objects} objects");
    };
    let kept = LOG_ENTRIES_KEPT as u64;
    let (pg, mut runs) = write_until("clean", 2 * kept + 500, 2 * LOG_ENTRIES_KEPT);
    let entries = pg["log_entries"].as_u64().unwrap();
    assert!(entries >= kept && entries < pg["objects"].as_u64().unwrap(), "trimmed: {pg}");

    // A replica stops; writes go on until its last entry has been trimmed away (the
    // degraded log keeps up to LOG_ENTRIES_MAX).
    let replica = pg["acting"][1].as_u64().unwrap() as usize;
    osds.kill(replica);
    c.ok(&["osd", "down", &replica.to_string()]);
    wait_up(&c, 2);
    let before = pg["objects"].as_u64().unwrap();
    let (pg, more) =
        write_until("degraded", before + LOG_ENTRIES_MAX as u64 + 500, LOG_ENTRIES_MAX);
    runs.extend(more);
    assert!(pg["log_entries"].as_u64().unwrap() >= (LOG_ENTRIES_MAX as u64) - kept, "{pg}");
    // It returns behind the log: backfilled, clean, and every object reads back.
    osds.start(replica);
    wait_up(&c, 3);
    let back = c.status().unwrap()["epoch"].as_u64().unwrap();
    wait_pg(&c, "the returning copy backfilled", |pg| {
        pg["epoch"].as_u64().unwrap() >= back
            && pg["state"] == serde_json::json!(["active", "clean"])
    });
    let log = std::fs::read_to_string(osds.dirs[replica].join("osd.log")).unwrap();
    assert!(log.contains("backfill of this copy done"), "not backfilled:\n{log}");
    // The backfilled copy holds every object at the primary's version.
    let listed = c.json(&["obj", "ls", "rbd"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len() as u64, only_pg(&c)["objects"].as_u64().unwrap());
    assert!(listed.len() > runs.len() * 16, "{} objects from {} runs", listed.len(), runs.len());
    osds.kill(replica);
    let dir = osds.dirs[replica].display().to_string();
    let held = c.json(&["osd", "store-tool", "--data", &dir, "list", pg["pg"].as_str().unwrap()]);
    let held: std::collections::BTreeMap<&str, &serde_json::Value> = held
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap(), &o["version"]))
        .collect();
    assert_eq!(held.len(), listed.len(), "objects on the backfilled copy");
    for object in listed {
        let name = object["name"].as_str().unwrap();
        assert!(held.contains_key(name), "{name} is not on the backfilled copy");
    }
}
