//! OSDs in a real cluster: 3 monitors and 3 OSDs as separate processes on loopback,
//! objects through `cairn obj`, OSDs killed with SIGKILL and restarted.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BIN, Cluster, free_port, path_str};

struct Osds {
    dirs: Vec<PathBuf>,
    children: Vec<Option<Child>>,
}

impl Osds {
    fn create(c: &Cluster, n: usize) -> Osds {
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = c.dir.path().join(format!("osd{i}"));
            let addr = format!("127.0.0.1:{}", free_port());
            c.ok(&["osd", "create", "--data", path_str(&dir), "--addr", &addr]);
            dirs.push(dir);
        }
        let mut osds = Osds { dirs, children: (0..n).map(|_| None).collect() };
        for i in 0..n {
            osds.start(i);
        }
        osds
    }

    fn start(&mut self, i: usize) {
        let log = std::fs::File::create(self.dirs[i].join("osd.log")).unwrap();
        let child = Command::new(BIN)
            .args(["osd", "run", "--data", path_str(&self.dirs[i])])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
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
    }
}

fn up_osds(c: &Cluster) -> u64 {
    c.status().map(|s| s["osds"]["up"].as_u64().unwrap_or(0)).unwrap_or(0)
}

fn wait_up(c: &Cluster, n: u64) {
    c.wait_status(&format!("{n} OSDs up"), Duration::from_secs(30), |s| s["osds"]["up"] == n);
}

fn put(c: &Cluster, dir: &std::path::Path, name: &str, bytes: &[u8]) {
    let file = dir.join(format!("{name}.in"));
    std::fs::write(&file, bytes).unwrap();
    c.ok(&["obj", "put", "rbd", name, path_str(&file), "--timeout", "60"]);
}

fn get(c: &Cluster, dir: &std::path::Path, name: &str) -> Vec<u8> {
    let file = dir.join(format!("{name}.out"));
    c.ok(&["obj", "get", "rbd", name, path_str(&file), "--timeout", "60"]);
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

    // Kill osd.1; mark it down (as its peers' reports would) and keep writing.
    osds.kill(1);
    c.ok(&["osd", "down", "1"]);
    for i in 0..5 {
        put(&c, &work, &format!("w{i}"), &pattern(10 + i, 100_000));
    }
    put(&c, &work, "big", &pattern(2, 200_000));

    // It returns, peers, and catches up from the log. Then the two others die: with
    // min_size 1, osd.1 alone must serve everything written while it was dead.
    osds.start(1);
    wait_up(&c, 3);
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
