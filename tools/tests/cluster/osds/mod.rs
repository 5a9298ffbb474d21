//! OSDs in a real cluster: monitors and OSDs as separate processes on loopback, objects
//! through `cairn obj`, OSDs killed with SIGKILL or at crash points and restarted. A module
//! per story; the helpers they share are here.

mod copies;
mod erasure;
mod locks;
mod recovery;
mod requests;
mod restart;
mod scrub;
mod snapshots;
mod writes;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{self, BIN, Cluster, path_str};

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

/// Three monitors and three OSDs, all up, a replicated pool `rbd` of size 3 with `pg_num`
/// PGs, and a work folder for the objects' files: where most tests start.
fn replicated_cluster(pg_num: u32) -> (Cluster, Osds, PathBuf) {
    let c = Cluster::start(3);
    let osds = Osds::create(&c, 3);
    wait_up(&c, 3);
    let pg_num = pg_num.to_string();
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", &pg_num]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    (c, osds, work)
}

/// The client library on the test's cluster, with the runtime that drives it (the test
/// process is then a client of its own, as block images are).
fn client_objects(c: &Cluster) -> (tokio::runtime::Runtime, client::objects::Objects) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = client::ClientConfig::load(&c.config()).unwrap();
    let objects = runtime.block_on(async {
        let mon = std::sync::Arc::new(client::MonClient::connect(config).unwrap());
        client::objects::Objects::new(mon).await.unwrap()
    });
    (runtime, objects)
}

/// Whether every PG in the status is in an active state.
fn all_active(s: &serde_json::Value) -> bool {
    s["pg_summary"]["states"].as_object().unwrap().keys().all(|k| k.starts_with("active"))
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
