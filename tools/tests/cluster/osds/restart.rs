//! The whole cluster: `recon` and health across daemons, and a cluster stopped and started
//! during its first peering.

use super::*;

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
        // An OSD reports its slow ops (none here); a monitor has no such figure.
        if d["name"].as_str().unwrap().starts_with("osd.") {
            assert_eq!(d["slow_ops"].as_u64(), Some(0), "{recon}");
        } else {
            assert!(d["slow_ops"].is_null(), "{recon}");
        }
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
