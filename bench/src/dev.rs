//! A `cairn dev up` cluster for the benchmarks that drive a real one: the `cairn` binary
//! to run, free loopback ports, and a cluster that `cairn dev down` stops when dropped.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// Where the search for free loopback ports starts, and how many bases it tries.
const PORT_SEARCH_START: u16 = 17_800;
const PORT_SEARCH_TRIES: u16 = 200;
/// How long `cairn dev up` and `dev down` may take before the benchmark gives up.
pub const DEV_TIMEOUT: Duration = Duration::from_secs(90);

/// The `cairn` binary: `$CAIRN_BIN`, or the one next to this program.
pub fn cairn_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("CAIRN_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().context("find this program")?;
            exe.parent().context("this program's directory")?.join("cairn")
        }
    };
    ensure!(
        path.is_file(),
        "no cairn binary at {}: build it with `cargo build --release -p cairn`, or set CAIRN_BIN",
        path.display()
    );
    Ok(path)
}

/// A base port with `count` free UDP ports from it on 127.0.0.1.
pub fn free_ports(count: usize) -> Result<u16> {
    let free = |port: u16| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
    (0..PORT_SEARCH_TRIES)
        .map(|i| PORT_SEARCH_START + i * 10)
        .find(|&base| (0..count as u16).all(|i| free(base + i)))
        .context("no free loopback ports")
}

/// Runs `cairn ARGS` in `dir` to completion, within `DEV_TIMEOUT`; returns its output.
pub fn run_cairn(cairn: &Path, dir: &Path, args: &[&str]) -> Result<String> {
    let mut child = Process::new(cairn)
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("start cairn {}", args.join(" ")))?;
    let deadline = Instant::now() + DEV_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("cairn {} took over {} s", args.join(" "), DEV_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("cairn {} failed: {}{}", args.join(" "), text, String::from_utf8_lossy(&out.stderr));
    }
    Ok(text)
}

/// A cluster started with `cairn dev up` in a temporary directory; dropping it runs
/// `cairn dev down`, on success and on error alike.
pub struct DevCluster {
    pub cairn: PathBuf,
    pub dir: tempfile::TempDir,
}

impl DevCluster {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("cairn-data")
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        match run_cairn(&self.cairn, self.dir.path(), &["dev", "down"]) {
            Ok(_) => eprintln!("cairn dev down: done"),
            Err(e) => eprintln!("cairn dev down: {e:#}"),
        }
    }
}
