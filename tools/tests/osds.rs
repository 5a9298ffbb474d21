//! OSDs in a real cluster: 3 monitors and 3 OSDs as separate processes on loopback,
//! objects through `cairn obj`, OSDs killed with SIGKILL and restarted.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BIN, Cluster, path_str};

struct Osds {
    dirs: Vec<PathBuf>,
    children: Vec<Option<Child>>,
}

impl Osds {
    /// `n` OSDs of 4 GiB each: fill levels that do not depend on the disk under the test.
    fn create(c: &Cluster, n: usize) -> Osds {
        Osds::create_with(c, n, &["--capacity", "4G"])
    }

    /// `n` OSDs made with `extra` arguments to `osd create`.
    fn create_with(c: &Cluster, n: usize, extra: &[&str]) -> Osds {
        let mut osds = Osds { dirs: Vec::new(), children: Vec::new() };
        for _ in 0..n {
            osds.prepare(c, extra);
        }
        for i in 0..n {
            osds.start(i);
        }
        osds
    }

    /// `n` OSDs, OSD i started with the environment `env(i)` adds.
    fn create_with_env(
        c: &Cluster,
        n: usize,
        env: impl Fn(usize) -> Vec<(String, String)>,
    ) -> Osds {
        let mut osds = Osds { dirs: Vec::new(), children: Vec::new() };
        for _ in 0..n {
            osds.prepare(c, &["--capacity", "4G"]);
        }
        for i in 0..n {
            let env = env(i);
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            osds.start_with_env(i, &env);
        }
        osds
    }

    /// Waits for OSD `i` to exit by itself; its exit status.
    fn wait_exit(&mut self, i: usize, timeout: Duration) -> std::process::ExitStatus {
        let child = self.children[i].as_mut().expect("the OSD runs");
        let status = common::wait_for(&format!("OSD {i} to exit"), timeout, || {
            child.try_wait().unwrap().ok_or_else(|| "still running".to_owned())
        });
        self.children[i] = None;
        status
    }

    /// Prepares one more OSD (not started): its index.
    fn prepare(&mut self, c: &Cluster, extra: &[&str]) -> usize {
        let i = self.dirs.len();
        let dir = c.dir.path().join(format!("osd{i}"));
        // Port 0: the OSD binds a free port at each start. A port picked here could be
        // taken (by any connection's local end) before the OSD starts.
        let mut args = vec!["osd", "create", "--data", path_str(&dir), "--addr", "127.0.0.1:0"];
        args.extend(extra);
        c.ok(&args);
        self.dirs.push(dir);
        self.children.push(None);
        i
    }

    fn start(&mut self, i: usize) {
        self.start_with_env(i, &[]);
    }

    fn start_with_env(&mut self, i: usize, env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.dirs[i].join("osd.log")).unwrap();
        let child = Command::new(BIN)
            .args(["osd", "run", "--data", path_str(&self.dirs[i])])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
    }

    /// Sends a signal (SIGSTOP, SIGCONT) to a running OSD.
    fn signal(&self, i: usize, signal: libc::c_int) {
        let pid = self.children[i].as_ref().expect("the OSD runs").id();
        // SAFETY: kill(2) on our own child's pid has no memory-safety requirements.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Osds {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            // What the OSDs said last, for the failure report.
            for dir in &self.dirs {
                let log = std::fs::read_to_string(dir.join("osd.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                eprintln!("--- {} (last lines) ---\n{tail}", dir.display());
            }
        }
    }
}

fn up_osds(c: &Cluster) -> u64 {
    c.status().map(|s| s["osds"]["up"].as_u64().unwrap_or(0)).unwrap_or(0)
}

fn wait_up(c: &Cluster, n: u64) {
    c.wait_status(&format!("{n} OSDs up"), Duration::from_secs(30), |s| s["osds"]["up"] == n);
}

/// Waits until every PG is active+clean, and returns the status.
fn wait_clean(c: &Cluster, pgs: u64) -> serde_json::Value {
    c.wait_status(&format!("{pgs} pgs active+clean"), Duration::from_secs(60), |s| {
        s["pg_summary"]["states"]["active+clean"] == pgs && s["pg_summary"]["pgs"] == pgs
    })
}

fn check_codes(s: &serde_json::Value) -> Vec<String> {
    s["checks"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap().to_owned()).collect()
}

fn put(c: &Cluster, dir: &std::path::Path, name: &str, bytes: &[u8]) {
    put_in(c, dir, "rbd", name, bytes)
}

fn put_in(c: &Cluster, dir: &std::path::Path, pool: &str, name: &str, bytes: &[u8]) {
    let file = dir.join(format!("{name}.in"));
    std::fs::write(&file, bytes).unwrap();
    c.ok(&["obj", "put", pool, name, path_str(&file), "--timeout", "60"]);
}

fn get(c: &Cluster, dir: &std::path::Path, name: &str) -> Vec<u8> {
    get_in(c, dir, "rbd", name)
}

fn get_in(c: &Cluster, dir: &std::path::Path, pool: &str, name: &str) -> Vec<u8> {
    let file = dir.join(format!("{name}.out"));
    c.ok(&["obj", "get", pool, name, path_str(&file), "--timeout", "60"]);
    std::fs::read(file).unwrap()
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8).collect()
}

#[test]
fn objects_survive_a_killed_osd_and_a_returning_one_catches_up() {
    let c = Cluster::start(3);
    let mut osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "8"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

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
    assert!(osd_df.as_array().unwrap().iter().all(|o| o["pgs"] == 8), "{osd_df}");

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

/// Waits (at most 30 s) for a line of the OSD's log that contains both strings.
fn wait_log(dir: &std::path::Path, what: &str, detail: &str) {
    let awaited = format!("'{what}' with '{detail}' in {}", dir.display());
    common::wait_for(&awaited, Duration::from_secs(30), || {
        let log = std::fs::read_to_string(dir.join("osd.log")).unwrap_or_default();
        match log.lines().any(|l| l.contains(what) && l.contains(detail)) {
            true => Ok(()),
            false => Err(format!("the log:\n{log}")),
        }
    })
}

fn osd_df(c: &Cluster) -> Vec<serde_json::Value> {
    c.json(&["osd", "df"]).as_array().unwrap().clone()
}

fn recovered_objects(c: &Cluster) -> u64 {
    osd_df(c).iter().map(|o| o["recovered_objects"].as_u64().unwrap()).sum()
}

/// Waits until `osd df` satisfies `check`.
fn wait_df(c: &Cluster, what: &str, check: impl Fn(&[serde_json::Value]) -> bool) {
    common::wait_for(what, Duration::from_secs(30), || {
        let df = osd_df(c);
        if check(&df) { Ok(()) } else { Err(format!("osd df: {df:?}")) }
    })
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

#[test]
fn writes_stop_below_min_size_with_a_clear_error_and_resume_when_a_copy_returns() {
    let c = Cluster::start(3);
    let mut osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "4"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    put(&c, &work, "before", &pattern(1, 10_000));
    wait_clean(&c, 4);

    // Two of three copies gone: min_size is 2, so no PG may take writes.
    osds.kill(1);
    osds.kill(2);
    c.ok(&["osd", "down", "1", "2"]);
    let status = c.wait_status("PGs inactive", Duration::from_secs(30), |s| {
        check_codes(s).contains(&"PG_INACTIVE".to_owned())
    });
    assert_eq!(status["osds"]["up"], 1, "{status}");
    let file = work.join("during.in");
    std::fs::write(&file, pattern(2, 10_000)).unwrap();
    let refused = c.fails(&["obj", "put", "rbd", "during", path_str(&file), "--timeout", "3"]);
    assert!(refused.contains("min_size 2"), "{refused}");
    // The OSD keeps answering: the refusal is an answer, not a hang.
    assert!(refused.contains("osd.0"), "{refused}");

    // One copy back: writes resume, and nothing written before is lost.
    osds.start(1);
    wait_up(&c, 2);
    c.wait_status("PGs active again", Duration::from_secs(60), |s| {
        !check_codes(s).contains(&"PG_INACTIVE".to_owned())
            && s["pg_summary"]["states"]
                .as_object()
                .unwrap()
                .keys()
                .all(|k| k.starts_with("active"))
    });
    put(&c, &work, "during", &pattern(2, 10_000));
    assert!(get(&c, &work, "during") == pattern(2, 10_000));
    assert!(get(&c, &work, "before") == pattern(1, 10_000));
}

#[test]
fn a_flipped_byte_in_the_primarys_copy_is_never_served_and_is_repaired_from_a_replica() {
    let c = Cluster::start(3);
    let mut osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    // One PG, so one OSD is the primary of every object.
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "1"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
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

/// Objects by name with their contents.
type Named = Vec<(String, Vec<u8>)>;

/// Puts objects one after another until told to stop; the ones acknowledged, in order.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<Named>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(c: &Cluster, work: &std::path::Path) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (conf, work) = (c.config(), work.to_owned());
        let thread = {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Whole chunks (block file) and a partial one (RocksDB) in each.
                    let (name, data) =
                        (format!("s{i}"), pattern(100 + i, 150_000 + 977 * i as usize));
                    let file = work.join(format!("{name}.in"));
                    std::fs::write(&file, &data).unwrap();
                    let status = Command::new(BIN)
                        .arg("--conf")
                        .arg(&conf)
                        .args(["obj", "put", "rbd", &name, path_str(&file), "--timeout", "60"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap();
                    if status.success() {
                        acked.lock().unwrap().push((name, data));
                    }
                    i += 1;
                }
            })
        };
        Writer { stop, acked, thread: Some(thread) }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits (at most 60 s) until `n` puts were acknowledged in all.
    fn wait_acked(&self, n: usize) {
        common::wait_for(&format!("{n} puts acknowledged"), Duration::from_secs(60), || {
            let acked = self.acked();
            if acked >= n { Ok(()) } else { Err(format!("{acked} acknowledged")) }
        })
    }

    fn finish(mut self) -> Named {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

#[test]
fn an_osd_killed_during_a_stream_of_writes_loses_no_acknowledged_write() {
    writes_survive_an_osd_that_dies(None);
}

#[test]
fn a_primary_that_dies_after_applying_a_write_before_replicating_it_loses_no_acknowledged_write() {
    writes_survive_an_osd_that_dies(Some("osd::write_applied"));
}

#[test]
fn a_primary_that_dies_after_replicating_a_write_before_answering_loses_no_acknowledged_write() {
    writes_survive_an_osd_that_dies(Some("osd::write_replicated"));
}

/// A stream of writes goes on while osd.2 dies: at a crash point (`osd/src/failpoints.rs`)
/// after some writes it is primary of, so the window is hit for sure, or by SIGKILL at a
/// moment when some writes are in flight. It returns; no acknowledged write is lost.
fn writes_survive_an_osd_that_dies(crash_point: Option<&str>) {
    let c = Cluster::start(3);
    let mut osds = Osds::create_with_env(&c, 4, |i| match crash_point {
        Some(point) if i == 2 => vec![("FAILPOINTS".to_owned(), format!("{point}=8*off->return"))],
        _ => Vec::new(),
    });
    wait_up(&c, 4);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "16"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let writer = Writer::start(&c, &work);
    match crash_point {
        Some(point) => {
            let exit = osds.wait_exit(2, Duration::from_secs(60));
            assert_eq!(exit.code(), Some(osd::failpoints::CRASH_EXIT_CODE), "osd.2: {exit}");
            wait_log(&osds.dirs[2], "crash point reached", point);
        }
        None => {
            writer.wait_acked(8);
            // SIGKILL in the middle of the stream: some of its writes are in flight.
            osds.kill(2);
        }
    }
    let killed_at = writer.acked();
    c.wait_status("osd.2 down", Duration::from_secs(30), |s| s["osds"]["up"] == 3);
    writer.wait_acked(killed_at + 8);
    osds.start(2);
    wait_up(&c, 4);
    let restarted_at = writer.acked();
    writer.wait_acked(restarted_at + 8);
    let acked = writer.finish();
    // PG stats reach the monitors every few seconds: the last puts may take that long to
    // be counted.
    let n = acked.len() as u64;
    let status = c.wait_status(
        "16 clean PGs counting every acknowledged put",
        Duration::from_secs(60),
        |s| s["pg_summary"]["states"]["active+clean"] == 16 && s["pg_summary"]["objects"] == n,
    );
    assert_eq!(status["pg_summary"]["degraded"], 0, "{status}");
    for (name, data) in &acked {
        assert!(get(&c, &work, name) == *data, "{name} (acknowledged) reads back");
    }
}

/// Increments of a counter xattr, each a guarded compound op that also appends a record:
/// only serialised, atomic ops leave every increment counted once and every record once.
#[test]
fn concurrent_writers_to_one_object_are_serialised() {
    use bytes::Bytes;
    use proto::ErrorCode;
    use proto::osd::{CmpOp, ObjectName, ObjectOp, OpResult};

    let c = Cluster::start(3);
    let _osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "4"]);
    wait_clean(&c, 4);
    const TASKS: u32 = 6;
    const EACH: u32 = 8;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = client::ClientConfig::load(&c.config()).unwrap();
    let (data, counter) = runtime.block_on(async move {
        let mon = std::sync::Arc::new(client::MonClient::connect(config).unwrap());
        let objects = std::sync::Arc::new(client::objects::Objects::new(mon).await.unwrap());
        let name = ObjectName { namespace: String::new(), name: b"counter".to_vec() };
        let init = vec![
            ObjectOp::Create { exclusive: true },
            ObjectOp::SetXattr { name: "n".into(), value: b"0".to_vec() },
        ];
        objects.op("rbd", &name, init, Bytes::new()).await.unwrap();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (objects, name) = (objects.clone(), name.clone());
                tokio::spawn(async move {
                    let mut done = 0;
                    let mut conflicts = 0u32;
                    while done < EACH {
                        let get = vec![ObjectOp::GetXattr { name: "n".into() }];
                        let answer = objects.op("rbd", &name, get, Bytes::new()).await.unwrap();
                        let OpResult::Xattr(Some(n)) = &answer.results[0] else {
                            panic!("no counter: {:?}", answer.results)
                        };
                        let next =
                            String::from_utf8(n.clone()).unwrap().parse::<u32>().unwrap() + 1;
                        let record = format!("{task:02}:{done:02};");
                        let ops = vec![
                            ObjectOp::CmpXattr {
                                name: "n".into(),
                                op: CmpOp::Eq,
                                value: n.clone(),
                            },
                            ObjectOp::SetXattr { name: "n".into(), value: next.to_string().into() },
                            ObjectOp::Append { len: record.len() as u64 },
                        ];
                        match objects.op("rbd", &name, ops, Bytes::from(record)).await {
                            Ok(_) => done += 1,
                            Err(e) if e.code() == Some(ErrorCode::Canceled) => conflicts += 1,
                            Err(e) => panic!("task {task}: {e}"),
                        }
                    }
                    conflicts
                })
            })
            .collect();
        let mut conflicts = 0;
        for task in tasks {
            conflicts += task.await.unwrap();
        }
        eprintln!("{conflicts} guarded increments lost a race and were retried");
        // Bad ops are refused with clear errors, and nothing is changed.
        let past_limit = vec![ObjectOp::Write { offset: 128 << 20, len: 1 }];
        let e = objects.op("rbd", &name, past_limit, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let short = vec![ObjectOp::WriteFull { len: 10 }];
        let e = objects.op("rbd", &name, short, Bytes::from_static(b"12345")).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Invalid), "{e}");
        assert!(e.to_string().contains("ops take 10 bytes"), "{e}");
        let all = vec![
            ObjectOp::Read { offset: 0, len: 1 << 20 },
            ObjectOp::GetXattr { name: "n".into() },
        ];
        let answer = objects.op("rbd", &name, all, Bytes::new()).await.unwrap();
        let OpResult::Xattr(Some(n)) = &answer.results[1] else { panic!("{:?}", answer.results) };
        (answer.data, String::from_utf8(n.clone()).unwrap())
    });
    assert_eq!(counter, (TASKS * EACH).to_string());
    let text = String::from_utf8(data.to_vec()).unwrap();
    let records: Vec<&str> = text.split_terminator(';').collect();
    assert_eq!(records.len() as u32, TASKS * EACH, "{text}");
    for task in 0..TASKS {
        // Each task's records appear once each, in its own order.
        let mine: Vec<String> = records
            .iter()
            .filter(|r| r.starts_with(&format!("{task:02}:")))
            .map(|r| r.to_string())
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{task:02}:{i:02}")).collect();
        assert_eq!(mine, expected, "{text}");
    }
    drop(runtime);
}

#[test]
fn a_striped_object_spans_pieces_reads_sparse_ranges_as_zeros_and_is_removed_whole() {
    use bytes::Bytes;
    use client::striper::Striper;

    let c = Cluster::start(3);
    let _osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "8"]);
    wait_clean(&c, 8);
    const MIB: u64 = 1 << 20;
    let first = pattern(7, (3 * MIB + MIB / 2) as usize);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = client::ClientConfig::load(&c.config()).unwrap();
    let first_c = first.clone();
    let pieces_listed = runtime.block_on(async move {
        let mon = std::sync::Arc::new(client::MonClient::connect(config).unwrap());
        let objects = std::sync::Arc::new(client::objects::Objects::new(mon).await.unwrap());
        let striper = Striper::new(objects, "rbd", MIB);
        assert_eq!(striper.stat("img").await.unwrap(), None);
        striper.write("img", 0, Bytes::from(first_c.clone())).await.unwrap();
        assert_eq!(striper.stat("img").await.unwrap(), Some((first_c.len() as u64, MIB)));
        assert!(striper.read("img", 0, u64::MAX).await.unwrap() == first_c);
        // Across a piece boundary.
        let across = striper.read("img", MIB - 10, 20).await.unwrap();
        assert!(across == first_c[(MIB - 10) as usize..(MIB + 10) as usize]);
        // Past the end, leaving pieces 4 and 5 unwritten: they read as zeros.
        striper.write("img", 6 * MIB + 100, Bytes::from_static(b"0123456789")).await.unwrap();
        assert_eq!(striper.stat("img").await.unwrap(), Some((6 * MIB + 110, MIB)));
        let gap = striper.read("img", 3 * MIB, 3 * MIB + 110).await.unwrap();
        assert_eq!(gap.len() as u64, 3 * MIB + 110);
        assert!(gap[..(MIB / 2) as usize] == first_c[(3 * MIB) as usize..]);
        assert!(gap[(MIB / 2) as usize..(3 * MIB + 100) as usize].iter().all(|&b| b == 0));
        assert_eq!(&gap[(3 * MIB + 100) as usize..], b"0123456789");
        // A smaller write later does not shrink the size.
        striper.write("img", 5, Bytes::from_static(b"xy")).await.unwrap();
        assert_eq!(striper.stat("img").await.unwrap().unwrap().0, 6 * MIB + 110);
        striper
    });
    let mut names: Vec<String> = c.ok(&["obj", "ls", "rbd"]).lines().map(String::from).collect();
    names.sort();
    assert_eq!(
        names,
        (0..4).chain([6]).map(|i| format!("img.{i:016x}")).collect::<Vec<_>>(),
        "pieces 4 and 5 were never written"
    );
    let mut expected = first.clone();
    expected[5..7].copy_from_slice(b"xy");
    runtime.block_on(async {
        let read = pieces_listed.read("img", 0, 3 * MIB + MIB / 2).await.unwrap();
        assert!(read == expected);
        pieces_listed.remove("img").await.unwrap();
        assert_eq!(pieces_listed.stat("img").await.unwrap(), None);
    });
    assert_eq!(c.ok(&["obj", "ls", "rbd"]).trim(), "", "every piece is removed");
    drop(pieces_listed);
    drop(runtime);
}

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

    let c = Cluster::start(3);
    let _osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "4"]);
    wait_clean(&c, 4);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
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
        };
        let e = call(at_primary.clone(), empty).await.unwrap_err();
        assert_eq!(e.remote_code(), Some(ErrorCode::Invalid), "{e}");
        let write = OsdRequest::ObjectOps {
            pg,
            epoch: map.epoch(),
            reqid: new_request_id(),
            object: object.clone(),
            ops: vec![ObjectOp::WriteFull { len: 3 }],
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

/// Tries to write `bytes` as `name`: the CLI's error text if the write was refused.
fn try_put(c: &Cluster, dir: &std::path::Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let file = dir.join(format!("{name}.in"));
    std::fs::write(&file, bytes).unwrap();
    let out = c.cairn(&["obj", "put", "rbd", name, path_str(&file), "--timeout", "60"]);
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into()) }
}

#[test]
fn a_full_osd_refuses_writes_while_reads_and_deletes_work_and_nothing_is_lost() {
    let c = Cluster::start(3);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let bad = c.fails(&["osd", "create", "--data", path_str(&work.join("x")), "--capacity", "0"]);
    assert!(bad.contains("--capacity must be above 0"), "{bad}");
    let bad = c.fails(&["osd", "create", "--data", path_str(&work.join("x")), "--capacity", "9Q"]);
    assert!(bad.contains("the unit must be K, M, G or T"), "{bad}");
    // Small OSDs: each holds a copy of everything, so all three fill together.
    let _osds = Osds::create_with(&c, 3, &["--capacity", "160M"]);
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "8"]);
    wait_clean(&c, 8);

    const OBJECT: usize = 4 << 20;
    let mut written = Vec::new();
    let refused = loop {
        let i = written.len() as u32;
        assert!(i < 60, "60 objects of 4 MiB went into OSDs of 160 MiB");
        match try_put(&c, &work, &format!("o{i}"), &pattern(i, OBJECT)) {
            Ok(()) => written.push(i),
            Err(e) => break e,
        }
    };
    assert!(refused.contains("is full"), "{refused}");
    assert!(refused.contains("deletes work"), "{refused}");
    // Full at 95% of 160 MiB: some 38 objects, less what the store itself takes.
    assert!((25..=39).contains(&written.len()), "{} objects written", written.len());
    let status = c.wait_status("OSD_FULL", Duration::from_secs(30), |s| {
        check_codes(s).contains(&"OSD_FULL".to_owned())
    });
    assert_eq!(status["health"], "HEALTH_ERR", "{status}");
    // Small writes too, to any object; reads of everything written still work.
    let small = try_put(&c, &work, "small", b"x").expect_err("a write to a full cluster");
    assert!(small.contains("is full"), "{small}");
    for &i in &written {
        assert!(get(&c, &work, &format!("o{i}")) == pattern(i, OBJECT), "o{i} read back");
    }

    // Deleting frees space, and writes resume once the OSDs have measured it.
    let (gone, kept) = written.split_at(written.len() / 2);
    for i in gone {
        c.ok(&["obj", "rm", "rbd", &format!("o{i}")]);
    }
    common::wait_for("writes to resume", Duration::from_secs(30), || {
        try_put(&c, &work, "after", &pattern(999, OBJECT))
    });
    c.wait_status("OSD_FULL cleared", Duration::from_secs(30), |s| {
        !check_codes(s).contains(&"OSD_FULL".to_owned())
    });
    for &i in kept {
        assert!(get(&c, &work, &format!("o{i}")) == pattern(i, OBJECT), "o{i} read back");
    }
    assert!(get(&c, &work, "after") == pattern(999, OBJECT));
    let gone_read = c.fails(&["obj", "get", "rbd", &format!("o{}", gone[0]), "/dev/null"]);
    assert!(gone_read.contains("does not exist"), "{gone_read}");
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

/// The single PG of pool rbd in `pg dump`.
fn only_pg(c: &Cluster) -> serde_json::Value {
    c.json(&["pg", "dump"])["pgs"][0].clone()
}

/// Waits until the single PG's entry in `pg dump` satisfies `check`, and returns it.
fn wait_pg(
    c: &Cluster,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    common::wait_for(what, Duration::from_secs(60), || {
        let pg = only_pg(c);
        if check(&pg) { Ok(pg) } else { Err(pg.to_string()) }
    })
}

#[test]
fn deep_scrub_finds_a_rotten_replica_copy_and_repair_rewrites_it() {
    let c = Cluster::start(3);
    let mut osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "1"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
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
    assert!(!c.fails(&["pg", "scrub", "rbd"]).is_empty());

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
    assert!(c.ok(&["pg", "ls-inconsistent"]).trim().is_empty());

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
    let c = Cluster::start(3);
    let osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "1"]);
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

#[test]
fn recon_shows_every_daemon_and_health_names_a_skewed_clock_and_slow_ops() {
    let c = Cluster::start(3);
    let mut osds = Osds { dirs: Vec::new(), children: Vec::new() };
    for _ in 0..3 {
        osds.prepare(&c, &["--capacity", "4G"]);
    }
    osds.start(0);
    osds.start(1);
    // osd.2's clock runs 4 s ahead (the test hook the monitors have too).
    osds.start_with_env(2, &[("CAIRN_CLOCK_OFFSET_MS", "4000")]);
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "1"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    put(&c, &work, "before", &pattern(1, 50_000));
    wait_clean(&c, 1);

    let status = c.wait_status("CLOCK_SKEW on osd.2", Duration::from_secs(30), |s| {
        s["checks"].as_array().unwrap().iter().any(|c| {
            c["code"] == "CLOCK_SKEW"
                && c["detail"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d.as_str().unwrap().starts_with("osd.2 clock is"))
        })
    });
    let skew = status["checks"].as_array().unwrap().iter().find(|c| c["code"] == "CLOCK_SKEW");
    assert_eq!(skew.unwrap()["detail"].as_array().unwrap().len(), 1, "only osd.2: {status}");

    // Every daemon at the monitors' epoch with one map hash, and the offsets measured.
    let recon = common::wait_for("the daemons to settle", Duration::from_secs(30), || {
        let recon = c.json(&["recon"]);
        let daemons = recon["daemons"].as_array().unwrap();
        let settled = daemons.len() == 6
            && daemons.iter().all(|d| d["up"] == true && d["epoch"] == recon["epoch"]);
        if settled { Ok(recon) } else { Err(recon.to_string()) }
    });
    let daemons = recon["daemons"].as_array().unwrap();
    let hashes: std::collections::BTreeSet<&str> =
        daemons.iter().map(|d| d["map_hash"].as_str().unwrap()).collect();
    assert_eq!(hashes.len(), 1, "{recon}");
    for d in daemons {
        let offset = d["clock_offset_ms"].as_i64().unwrap();
        if d["name"] == "osd.2" {
            assert!((3_500..=4_500).contains(&offset), "{recon}");
        } else {
            assert!(offset.abs() < 500, "{recon}");
        }
        assert_eq!(d["slow_ops"].as_u64().unwrap_or(0), 0, "{recon}");
    }
    let findings = recon["findings"].as_array().unwrap();
    assert!(findings[0].as_str().unwrap().starts_with("map: 6/6 running daemons"), "{recon}");
    assert!(findings[0].as_str().unwrap().contains("all with map hash"), "{recon}");
    let plain = c.ok(&["recon"]);
    let row = plain.lines().find(|l| l.starts_with("osd.2 ")).expect("a row for osd.2");
    let offset: i64 = row
        .split_whitespace()
        .find_map(|w| w.strip_prefix('+').and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("no clock offset in {row}"));
    assert!((3_500..=4_500).contains(&offset), "{plain}");

    // A replica hangs (its disk, say): with nodown it stays in the map, so the primary
    // holds the write, and after osd.op_complaint_time the op is slow.
    c.ok(&["config", "set", "osd.op_complaint_time", "2"]);
    c.ok(&["osd", "set", "nodown"]);
    let pg = only_pg(&c);
    let primary = pg["acting"][0].as_u64().unwrap() as usize;
    let replica = (0..3).find(|&o| o != primary).unwrap();
    osds.signal(replica, libc::SIGSTOP);
    let file = work.join("during.in");
    std::fs::write(&file, pattern(2, 50_000)).unwrap();
    let mut writer = Command::new(BIN)
        .args(["--conf", path_str(&c.config()), "obj", "put", "rbd", "during"])
        .args([path_str(&file), "--timeout", "90"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = c.wait_status("SLOW_OPS", Duration::from_secs(30), |s| {
        check_codes(s).contains(&"SLOW_OPS".to_owned())
    });
    let slow = status["checks"].as_array().unwrap().iter().find(|c| c["code"] == "SLOW_OPS");
    let slow = slow.unwrap();
    assert!(
        slow["summary"].as_str().unwrap().ends_with(&format!("osd.{primary} has slow ops")),
        "{slow}"
    );
    assert!(slow["detail"][0].as_str().unwrap().contains("object during from client.admin"));
    let plain = c.ok(&["recon"]);
    assert!(plain.contains(&format!("on osd.{primary} (the oldest")), "{plain}");

    // The replica wakes: the write completes, and the slow ops are gone.
    osds.signal(replica, libc::SIGCONT);
    let exit = common::wait_for("the held write to finish", Duration::from_secs(60), || {
        writer.try_wait().unwrap().ok_or_else(|| "still running".to_owned())
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut writer.stderr.take().unwrap(), &mut err).unwrap();
    assert!(exit.success(), "{err}");
    c.ok(&["osd", "unset", "nodown"]);
    c.wait_status("no slow ops", Duration::from_secs(30), |s| {
        !check_codes(s).contains(&"SLOW_OPS".to_owned())
    });
    assert!(get(&c, &work, "during") == pattern(2, 50_000));
    assert!(get(&c, &work, "before") == pattern(1, 50_000));
}

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
    c.wait_status("PGs active", Duration::from_secs(60), |s| {
        s["pg_summary"]["states"].as_object().unwrap().keys().all(|k| k.starts_with("active"))
    });
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
    c.wait_status("PGs active again", Duration::from_secs(60), |s| {
        s["pg_summary"]["states"].as_object().unwrap().keys().all(|k| k.starts_with("active"))
    });
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
        s["osds"]["up"] == total - 1 - m
            && s["pg_summary"]["states"]
                .as_object()
                .unwrap()
                .keys()
                .all(|k| k.starts_with("active"))
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
    // The rebuilt shard is right: with the primary gone, it and the third serve.
    let stamp = pg["last_deep_scrub_ms"].as_i64().unwrap();
    c.ok(&["pg", "deep-scrub", &id]);
    let pg =
        wait_pg(&c, "a second deep scrub", |pg| pg["last_deep_scrub_ms"].as_i64().unwrap() > stamp);
    assert_eq!(pg["last_scrub_errors"], 0, "{pg}");
    c.ok(&["pool", "set", "ec", "min_size", "2"]);
    osds.kill(primary);
    c.ok(&["osd", "down", &primary.to_string()]);
    c.wait_status("the PG active on two shards", Duration::from_secs(60), |s| {
        s["osds"]["up"] == 2
            && s["pg_summary"]["states"]
                .as_object()
                .unwrap()
                .keys()
                .all(|k| k.starts_with("active"))
    });
    for (name, data) in &objects {
        assert!(get_in(&c, &work, "ec", name) == *data, "{name} read through the rebuilt shard");
    }
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

/// A clean PG's log is trimmed as writes go on (it used to grow by an entry per write for
/// as long as the PG stayed clean), and stays bounded while degraded too; an OSD that
/// returns after the log moved past it is backfilled, and every object reads back.
#[test]
fn a_pg_log_stays_bounded_under_writes_and_a_copy_it_left_behind_is_backfilled() {
    use osd::pg::log::{LOG_ENTRIES_KEPT, LOG_ENTRIES_MAX};

    let c = Cluster::start(3);
    let mut osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "1"]);
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

/// A `cairn dev up --dir` cluster, stopped with `cairn dev down` however the test ends.
struct DevCluster(Cluster);

impl DevCluster {
    fn dir(&self) -> &str {
        path_str(self.0.dir.path())
    }

    fn dev(&self, args: &[&str]) -> std::process::Output {
        self.dev_with_env(args, &[])
    }

    /// `cairn dev ARGS`, with `env` added to its environment (and the daemons it starts).
    fn dev_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut dev = Command::new(BIN);
        dev.arg("dev").args(args).args(["--dir", self.dir()]).envs(env.iter().copied());
        dev.output().unwrap()
    }

    fn osd_pid(&self, osd: u32) -> libc::pid_t {
        let path = self.0.dir.path().join(format!("osd.{osd}/osd.pid"));
        let text = std::fs::read_to_string(&path).unwrap();
        text.trim().parse().unwrap_or_else(|e| panic!("{}: {e}: {text:?}", path.display()))
    }

    /// The first lines of each OSD's log that say why a PG could not go active.
    fn blocked_lines(&self) -> String {
        let mut out = String::new();
        for osd in 0..4 {
            let log = self.0.dir.path().join(format!("osd.{osd}/osd.log"));
            let text = std::fs::read_to_string(log).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("cannot go active")).take(10) {
                out.push_str(&format!("osd.{osd}: {line}\n"));
            }
        }
        out
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = self.dev(&["down"]);
    }
}

/// Whether a process runs (a zombie nobody reaped yet has ended).
fn running(pid: libc::pid_t) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
}

/// How a round of the restart test treats the first peering.
#[derive(Clone, Copy, Debug)]
enum FirstPeering {
    /// Every OSD runs until the whole cluster stops, this long after the pools were made.
    StopAfterMs(u64),
    /// This OSD is killed (SIGKILL) as the pools are made, and the cluster stops once the
    /// monitors have marked it down (so the others recorded the interval it ended).
    KillThenStop(u32),
    /// Every OSD dies at its first peering decision (the crash point
    /// `osd::peering_decided`), and the monitors stop after them.
    CrashAtDecision,
}

/// A whole cluster stopped and started again while its new pools' PGs first peer (at
/// several delays after the pools were made, and with an OSD killed during that first
/// peering): every PG of a replicated and an erasure-coded pool goes active+clean. An
/// interval whose primary never went active took no writes, so it never makes a PG down.
#[test]
fn a_cluster_restarted_during_its_first_peering_goes_active_and_clean() {
    use FirstPeering::*;
    let rounds =
        [StopAfterMs(0), StopAfterMs(1_500), KillThenStop(0), KillThenStop(2), CrashAtDecision];
    for round in rounds {
        let c = DevCluster(Cluster { dir: tempfile::tempdir().unwrap(), mons: Vec::new() });
        let base = common::free_port().to_string();
        let crash = match round {
            CrashAtDecision => vec![("FAILPOINTS", "osd::peering_decided=return")],
            _ => Vec::new(),
        };
        let up = c.dev_with_env(&["up", "--osds", "4", "--base-port", &base], &crash);
        assert!(up.status.success(), "{round:?}: first dev up: {up:?}");
        c.0.ok(&["pool", "create", "thrash-rep", "--size", "3", "--pg-num", "32"]);
        c.0.ok(&[
            "pool",
            "create",
            "thrash-ec",
            "erasure",
            "--k",
            "2",
            "--m",
            "1",
            "--pg-num",
            "32",
        ]);
        match round {
            // The delay is the point of the first peering at which the cluster stops.
            StopAfterMs(ms) => std::thread::sleep(Duration::from_millis(ms)),
            KillThenStop(osd) => {
                // SAFETY: kill(2) on the pid the OSD wrote; no memory is involved.
                assert_eq!(unsafe { libc::kill(c.osd_pid(osd), libc::SIGKILL) }, 0);
                c.0.wait_status(&format!("osd.{osd} marked down"), Duration::from_secs(30), |s| {
                    s["osds"]["up"] == 3
                });
            }
            CrashAtDecision => {
                // Each OSD is the primary of some of the 64 PGs, so each reaches the point.
                let pids: Vec<libc::pid_t> = (0..4).map(|osd| c.osd_pid(osd)).collect();
                common::wait_for(
                    "every OSD to die at its crash point",
                    Duration::from_secs(60),
                    || {
                        let alive: Vec<_> = pids.iter().filter(|&&pid| running(pid)).collect();
                        if alive.is_empty() { Ok(()) } else { Err(format!("alive: {alive:?}")) }
                    },
                );
                for osd in 0..4 {
                    let dir = c.0.dir.path().join(format!("osd.{osd}"));
                    wait_log(&dir, "crash point reached", "osd::peering_decided");
                }
            }
        }
        let down = c.dev(&["down"]);
        assert!(down.status.success(), "{round:?}: dev down: {down:?}");
        // `dev up` waits (up to a minute) for HEALTH_OK, which needs every PG active.
        let up = c.dev(&["up"]);
        if !up.status.success() {
            let health = c.0.cairn(&["health", "detail"]);
            panic!(
                "{round:?}: dev up again: {up:?}\n{}\n{}",
                String::from_utf8_lossy(&health.stdout),
                c.blocked_lines()
            );
        }
        let what = format!("64 pgs active+clean after {round:?}");
        c.0.wait_status(&what, Duration::from_secs(30), |s| {
            s["pg_summary"]["states"]["active+clean"] == 64 && s["pg_summary"]["pgs"] == 64
        });
    }
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
