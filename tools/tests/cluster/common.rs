//! Real clusters for tests: monitors started as separate `cairn mon run` processes on
//! loopback ports, driven through the `cairn` CLI, stopped or killed with signals.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// How often a wait looks again.
pub const POLL: Duration = Duration::from_millis(100);

/// Waits for `probe` to give a value: it is asked every `POLL` for at most `timeout`. Its
/// `Err` says what it saw, which the panic after `timeout` reports with what was awaited.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}; last saw: {seen}");
        std::thread::sleep(POLL);
    }
}

pub struct Mon {
    pub name: String,
    pub dir: PathBuf,
    pub addr: String,
    pub child: Option<Child>,
    pub env: Vec<(String, String)>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub mons: Vec<Mon>,
}

/// A port nobody listens on right now, for UDP and TCP alike (an OSD listens on both).
pub fn free_port() -> u16 {
    loop {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Bootstraps a cluster of `n` monitors (not started).
    pub fn bootstrap(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let names = ["a", "b", "c", "d", "e"];
        let mut args =
            vec!["bootstrap".to_owned(), "--dir".to_owned(), dir.path().display().to_string()];
        let mut mons = Vec::new();
        for name in names.iter().take(n) {
            let addr = format!("127.0.0.1:{}", free_port());
            args.push("--mon".into());
            args.push(format!("{name}={addr}"));
            mons.push(Mon {
                name: (*name).into(),
                dir: dir.path().join(format!("mon.{name}")),
                addr,
                child: None,
                env: vec![],
            });
        }
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(out.status.success(), "bootstrap: {}", String::from_utf8_lossy(&out.stderr));
        Cluster { dir, mons }
    }

    /// Bootstraps and starts `n` monitors, and waits for a healthy quorum.
    pub fn start(n: usize) -> Cluster {
        let mut cluster = Cluster::bootstrap(n);
        for i in 0..n {
            cluster.start_mon(i);
        }
        cluster.wait_status("a healthy quorum", Duration::from_secs(30), |s| {
            s["health"] == "HEALTH_OK"
                && s["monitors"]
                    .as_array()
                    .is_some_and(|m| m.iter().all(|m| m["in_quorum"] == true))
        });
        cluster
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("client.toml")
    }

    pub fn index(&self, name: &str) -> usize {
        self.mons.iter().position(|m| m.name == name).unwrap_or_else(|| panic!("no mon.{name}"))
    }

    pub fn start_mon(&mut self, i: usize) {
        let mon = &mut self.mons[i];
        assert!(mon.child.is_none(), "mon.{} already runs", mon.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(mon.dir.join("mon.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["mon", "run", "--data"])
            .arg(&mon.dir)
            .envs(mon.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        mon.child = Some(child);
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill_mon(&mut self, i: usize) {
        if let Some(mut child) = self.mons[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, waiting for the exit.
    pub fn stop_mon(&mut self, i: usize) {
        if let Some(mut child) = self.mons[i].child.take() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let what = format!("mon.{} to stop on SIGTERM", self.mons[i].name);
            wait_for(&what, Duration::from_secs(10), || {
                child.try_wait().unwrap().ok_or_else(|| "still running".to_owned())
            });
        }
    }

    /// Waits for monitor `i` to exit on its own; its exit status.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> std::process::ExitStatus {
        let what = format!("mon.{} to exit", self.mons[i].name);
        let child = self.mons[i].child.as_mut().unwrap_or_else(|| panic!("{what}: not running"));
        let status = wait_for(&what, timeout, || {
            child.try_wait().unwrap().ok_or_else(|| "still running".to_owned())
        });
        self.mons[i].child = None;
        status
    }

    /// A `client.toml` (written into `keyring`) for `entity`, whose credentials are there.
    pub fn config_for(&self, entity: &str, keyring: &Path) -> PathBuf {
        let mut config = client::ClientConfig::load(&self.config()).unwrap();
        config.entity = entity.into();
        config.keyring = keyring.display().to_string();
        let path = keyring.join("client.toml");
        config.save(&path).unwrap();
        path
    }

    /// Runs `cairn --conf <cluster> ARGS`.
    pub fn cairn(&self, args: &[&str]) -> Output {
        Command::new(BIN).arg("--conf").arg(self.config()).args(args).output().unwrap()
    }

    /// Runs a command that must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cairn(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; its error output.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cairn(args);
        assert!(
            !out.status.success(),
            "cairn {args:?} should fail but printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// The status, or `None` when no monitor answers right now.
    pub fn status(&self) -> Option<Value> {
        let out = self.cairn(&["status", "--format", "json", "--timeout", "3"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Waits until the status satisfies `check`; panics with the last status after `timeout`.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = None;
        wait_for(what, timeout, || {
            if let Some(status) = self.status() {
                if check(&status) {
                    return Ok(status);
                }
                last = Some(status);
            }
            let last = last
                .as_ref()
                .map_or("no status".into(), |s| serde_json::to_string_pretty(s).unwrap());
            Err(format!("{last}{}", self.logs()))
        })
    }

    /// The tail of every monitor's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for mon in &self.mons {
            let log = std::fs::read_to_string(mon.dir.join("mon.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!("\n--- mon.{} log (last lines) ---\n", mon.name));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    pub fn leader(&self) -> String {
        let status =
            self.wait_status("a leader", Duration::from_secs(20), |s| s["leader"].is_string());
        status["leader"].as_str().unwrap().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.mons.len() {
            self.kill_mon(i);
        }
    }
}

/// Milliseconds since `start`.
pub fn ms(start: Instant) -> u128 {
    start.elapsed().as_millis()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}
