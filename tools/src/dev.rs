//! `cairn bootstrap` and `cairn dev up|down`: making a cluster's identities and genesis
//! state, and running a local cluster as separate processes on loopback.
//!
//! Layout of a cluster directory (`cairn-data/` for `dev up`):
//!
//! ```text
//! client.toml                  the client configuration (`cairn status` finds it here)
//! ca.crt client.admin.{crt,key}
//! mon.a/  mon.toml genesis.bin ca.crt ca.key mon.a.{crt,key} store/ mon.log mon.pid
//! mon.b/  ...
//! osd.0/  osd.toml client.toml ca.crt osd.0.{crt,key} store/ osd.log osd.pid
//! osd.1/  ...
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use client::ClientConfig;
use client::config::MonAddr;
use monitor::daemon::{GenesisFile, MonConfig, PID_FILE, RaftTiming};
use monitor::state::Identity;
use monitor::store::MonNode;
use net::identity::{ClusterCa, write_private};
use proto::message::{Severity, StatusReport};
use proto::{Caps, EntityName};

pub const CLIENT_CONFIG: &str = "client.toml";
/// How long `dev up` waits for the cluster to be healthy.
const UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `dev down` waits for a monitor to stop before killing it.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn random_fsid() -> Result<[u8; 16]> {
    use ring::rand::SecureRandom;
    let mut fsid = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut fsid)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    // A version 4 UUID.
    fsid[6] = (fsid[6] & 0x0f) | 0x40;
    fsid[8] = (fsid[8] & 0x3f) | 0x80;
    Ok(fsid)
}

/// Makes a new cluster in `dir`: its CA, the admin identity, and a directory per initial
/// monitor with its identity, configuration and the genesis state.
pub fn bootstrap(dir: &Path, mons: &[(String, SocketAddr)]) -> Result<ClientConfig> {
    if mons.is_empty() {
        bail!("a cluster needs at least one monitor");
    }
    let config_path = dir.join(CLIENT_CONFIG);
    if config_path.exists() {
        bail!("{} exists: a cluster was bootstrapped there already", config_path.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let fsid = random_fsid()?;
    let fsid_text = placement::describe::format_uuid(&fsid);
    let ca = ClusterCa::generate(&fsid_text).context("make the cluster CA")?;
    let admin_name = EntityName::client("admin").expect("valid name");
    let admin = ca.issue(&admin_name).context("issue client.admin")?;
    admin.save(dir).context("save client.admin")?;
    let mut identities = vec![(
        admin_name.clone(),
        Identity { caps: Caps::all(), fingerprint: admin.fingerprint()? },
    )];
    let mut members = BTreeMap::new();
    let mut mon_credentials = Vec::new();
    for (i, (name, addr)) in mons.iter().enumerate() {
        let entity = EntityName::mon(name).map_err(anyhow::Error::msg)?;
        let credentials = ca.issue(&entity).with_context(|| format!("issue {entity}"))?;
        identities.push((
            entity,
            Identity { caps: Caps::all(), fingerprint: credentials.fingerprint()? },
        ));
        members.insert(i as u64 + 1, MonNode { name: name.clone(), addr: addr.to_string() });
        mon_credentials.push(credentials);
    }
    let genesis = GenesisFile {
        fsid,
        ca_pem: ca.cert_pem().to_owned(),
        identities,
        members: members.clone(),
    };
    for ((id, node), credentials) in members.iter().zip(mon_credentials) {
        let mon_dir = dir.join(format!("mon.{}", node.name));
        credentials.save(&mon_dir).with_context(|| format!("save mon.{}", node.name))?;
        let key_path = mon_dir.join("ca.key");
        write_private(&key_path, ca.key_pem().as_bytes())
            .with_context(|| format!("write {}", key_path.display()))?;
        let config = MonConfig {
            name: node.name.clone(),
            id: *id,
            addr: node.addr.clone(),
            raft: RaftTiming::default(),
            join: vec![],
        };
        config.save(&mon_dir)?;
        genesis.save(&mon_dir)?;
    }
    let config = ClientConfig {
        fsid: fsid_text,
        entity: admin_name.to_string(),
        keyring: ".".into(),
        mons: members
            .values()
            .map(|n| MonAddr { name: n.name.clone(), addr: n.addr.clone() })
            .collect(),
        osd_transport: Default::default(),
        path: Some(config_path.clone()),
    };
    config.save(&config_path)?;
    Ok(config)
}

/// The two kinds of daemon `dev up` runs: their directory prefix, the file that marks a
/// prepared directory, the pid file, and the `cairn` subcommand that runs one.
#[derive(Clone, Copy, Debug)]
struct Kind {
    prefix: &'static str,
    config: &'static str,
    pid_file: &'static str,
    log: &'static str,
}

const MON: Kind = Kind { prefix: "mon", config: "mon.toml", pid_file: PID_FILE, log: "mon.log" };
const OSD: Kind = Kind {
    prefix: "osd",
    config: osd::daemon::CONFIG_FILE,
    pid_file: osd::daemon::PID_FILE,
    log: "osd.log",
};

/// The daemon directories of a cluster directory (`mon.a`, `osd.0`, ...), sorted by name
/// (OSDs by number).
fn daemon_dirs(dir: &Path, kind: Kind) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let is_kind = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.strip_prefix(kind.prefix).is_some_and(|r| r.starts_with('.')));
        if is_kind && path.join(kind.config).exists() {
            dirs.push(path);
        }
    }
    let number = |p: &PathBuf| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        (name.rsplit('.').next().and_then(|n| n.parse::<u64>().ok()), name.to_owned())
    };
    dirs.sort_by_key(number);
    Ok(dirs)
}

/// The pid in a daemon's pid file, if that process still runs and is that cairn daemon
/// (a stale pid file may name a pid the system has since given to something else).
fn running_pid(daemon_dir: &Path, kind: Kind) -> Option<i32> {
    let pid: i32 =
        std::fs::read_to_string(daemon_dir.join(kind.pid_file)).ok()?.trim().parse().ok()?;
    use std::os::unix::ffi::OsStrExt;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    if !args.windows(2).any(|w| w[0] == kind.prefix.as_bytes() && w[1] == b"run") {
        return None;
    }
    // And the daemon of this very directory, not another cluster's.
    let data = args.windows(2).find(|w| w[0] == b"--data").map(|w| w[1])?;
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    let theirs = std::fs::canonicalize(cwd.join(std::ffi::OsStr::from_bytes(data))).ok()?;
    (theirs == std::fs::canonicalize(daemon_dir).ok()?).then_some(pid)
}

/// Starts `cairn mon|osd run` for a daemon directory, detached, logging to its log file.
fn spawn_daemon(daemon_dir: &Path, kind: Kind) -> Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("find the cairn binary")?;
    let log_path = daemon_dir.join(kind.log);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let child = std::process::Command::new(exe)
        .args([kind.prefix, "run", "--data"])
        .arg(daemon_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start the daemon in {}", daemon_dir.display()))?;
    Ok(child)
}

/// Starts every daemon of `kind` in `dir` that is not running, then waits until each has
/// written its pid file (it listens, or for an OSD, has booted). One that exits instead
/// is reported with the end of its log.
async fn start_all(dir: &Path, kind: Kind, deadline: Instant) -> Result<()> {
    let mut started_now = Vec::new();
    for daemon_dir in daemon_dirs(dir, kind)? {
        let name = daemon_dir.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_owned();
        match running_pid(&daemon_dir, kind) {
            Some(pid) => println!("{name} already running (pid {pid})"),
            None => {
                let child = spawn_daemon(&daemon_dir, kind)?;
                println!(
                    "started {name} (pid {}), log {}",
                    child.id(),
                    daemon_dir.join(kind.log).display()
                );
                started_now.push((daemon_dir, child));
            }
        }
    }
    for (daemon_dir, child) in &mut started_now {
        while running_pid(daemon_dir, kind).is_none() {
            let log = daemon_dir.join(kind.log);
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{} exited ({status}); {}:\n{}",
                    daemon_dir.display(),
                    log.display(),
                    tail.join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start within {} s; see {}",
                    daemon_dir.display(),
                    UP_TIMEOUT.as_secs(),
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

/// A port on loopback from `first` up that nothing holds, for UDP and TCP alike (an OSD
/// listens on both).
fn free_port_from(first: u16) -> Result<u16> {
    (first..first.saturating_add(200))
        .find(|&port| {
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        })
        .with_context(|| format!("no free port on 127.0.0.1 from {first}"))
}

/// Prepares OSDs until `dir` has `want`, each in `osd.N/` with its own CRUSH host (so a
/// size-3 pool places its copies on three of them), at ports from 11 above the first
/// monitor's.
async fn add_osds(dir: &Path, client: &client::MonClient, want: usize) -> Result<()> {
    let have = daemon_dirs(dir, OSD)?.len();
    if have >= want {
        return Ok(());
    }
    let first_mon = client.config().mons.first().map(|m| m.addr.clone()).unwrap_or_default();
    let mon_port =
        first_mon.parse::<SocketAddr>().map(|a| a.port()).unwrap_or(6789).saturating_add(11);
    let mut port = mon_port;
    for _ in have..want {
        port = free_port_from(port)?;
        let addr = format!("127.0.0.1:{port}");
        let staging = dir.join(format!("osd.new-{port}"));
        let _ = std::fs::remove_dir_all(&staging);
        let osd = crate::osds::prepare_osd(client, None, &staging, &addr, None, 1.0, None).await?;
        let final_dir = dir.join(format!("osd.{osd}"));
        std::fs::rename(&staging, &final_dir)
            .with_context(|| format!("rename {} to {}", staging.display(), final_dir.display()))?;
        println!("prepared osd.{osd} in {} at {addr}", final_dir.display());
        port += 1;
    }
    Ok(())
}

/// `cairn dev up`: bootstraps `dir` on first use, starts its monitors, prepares OSDs up to
/// `osds`, starts them, and waits for health.
pub async fn up(dir: &Path, monitors: usize, base_port: u16, osds: usize) -> Result<()> {
    let started = Instant::now();
    let config_path = dir.join(CLIENT_CONFIG);
    if osds > 64 {
        bail!("--osds must be at most 64 on one machine");
    }
    if !config_path.exists() {
        bootstrap(dir, &monitor_addrs(monitors, base_port)?)?;
        println!("bootstrapped a new cluster in {}", dir.display());
    }
    let deadline = Instant::now() + UP_TIMEOUT;
    start_all(dir, MON, deadline).await?;
    let config = ClientConfig::load(&config_path)?;
    let client = client::MonClient::connect(config).context("connect to the monitors")?;
    // A quorum first: OSDs are registered through it.
    wait_quorum(&client, deadline).await?;
    add_osds(dir, &client, osds).await?;
    start_all(dir, OSD, deadline).await?;
    let status = wait_healthy(&client, deadline).await?;
    println!(
        "cluster {} is HEALTH_OK after {:.1} s: {} monitors in quorum, leader mon.{}, {} osds up",
        status.fsid,
        started.elapsed().as_secs_f64(),
        status.monitors.len(),
        status.leader.as_deref().unwrap_or("?"),
        status.osds.up
    );
    print_how_to_reach(dir, &config_path);
    Ok(())
}

/// The loopback addresses of a new cluster's `monitors` (named a, b, c, ...), from
/// `base_port` up, each free now.
fn monitor_addrs(monitors: usize, base_port: u16) -> Result<Vec<(String, SocketAddr)>> {
    if monitors == 0 || monitors > 7 {
        bail!("--mons must be 1 to 7");
    }
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    let mut mons = Vec::new();
    for (i, name) in names.iter().take(monitors).enumerate() {
        let port = base_port.checked_add(i as u16).context("port out of range")?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("literal address");
        if std::net::UdpSocket::bind(addr).is_err() {
            bail!("port {port} on 127.0.0.1 is in use; choose other ports with --base-port");
        }
        mons.push(((*name).to_owned(), addr));
    }
    Ok(mons)
}

/// Waits until every monitor is in a quorum with a leader, until `deadline`.
async fn wait_quorum(client: &client::MonClient, deadline: Instant) -> Result<()> {
    loop {
        match client.status().await {
            Ok(status)
                if status.leader.is_some() && status.monitors.iter().all(|m| m.in_quorum) =>
            {
                return Ok(());
            }
            Ok(_) | Err(_) if Instant::now() > deadline => {
                bail!("the monitors did not form a quorum within {} s", UP_TIMEOUT.as_secs())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until the cluster is HEALTH_OK with every monitor in quorum, until `deadline`;
/// past it, the error names the checks that were not clear.
async fn wait_healthy(client: &client::MonClient, deadline: Instant) -> Result<StatusReport> {
    loop {
        match client.status().await {
            Ok(status)
                if status.health == Severity::Ok
                    && status.leader.is_some()
                    && status.monitors.iter().all(|m| m.in_quorum) =>
            {
                return Ok(status);
            }
            Ok(status) if Instant::now() > deadline => {
                let checks: Vec<&str> = status.checks.iter().map(|c| c.summary.as_str()).collect();
                bail!(
                    "the cluster did not become healthy within {} s: {}",
                    UP_TIMEOUT.as_secs(),
                    checks.join("; ")
                );
            }
            Err(e) if Instant::now() > deadline => bail!("the monitors did not answer: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// How to reach the cluster `dir` holds: its client configuration and the commands to try.
fn print_how_to_reach(dir: &Path, config_path: &Path) {
    let abs = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_owned());
    println!("client configuration: {}", abs.display());
    // The binary as this shell can name it: `cairn` on the PATH, else its path.
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    let cairn = match (&exe, &cwd) {
        (Some(exe), _) if which_cairn().as_deref() == Some(exe.as_path()) => "cairn".to_owned(),
        (Some(exe), Some(cwd)) => exe.strip_prefix(cwd).unwrap_or(exe).display().to_string(),
        _ => "cairn".to_owned(),
    };
    println!("try: {cairn} status    (from this directory, or with CAIRN_CONF={})", abs.display());
    println!("     {cairn} pool create data && {cairn} obj put data NAME FILE");
    println!("stop with: {cairn} dev down    (data stays in {})", dir.display());
}

/// The `cairn` the shell would run, if one is on the PATH.
fn which_cairn() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("cairn"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
}

/// `cairn dev down`: stops the OSDs, then the monitors, of `dir`, keeping their data.
pub fn down(dir: &Path) -> Result<()> {
    let mut stopped = 0;
    for kind in [OSD, MON] {
        for daemon_dir in daemon_dirs(dir, kind)? {
            let name = daemon_dir.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_owned();
            let Some(pid) = running_pid(&daemon_dir, kind) else { continue };
            // SAFETY: sending a signal to a process id read from our own pid file.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            // Until the process is gone, not just its pid file: a daemon removes that as
            // it begins to stop, and its store stays locked until it exits.
            let alive = || Path::new(&format!("/proc/{pid}")).exists();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive() {
                // SAFETY: as above; the daemon did not stop in time.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = std::fs::remove_file(daemon_dir.join(kind.pid_file));
                println!(
                    "killed {name} (pid {pid}): it did not stop within {} s",
                    STOP_TIMEOUT.as_secs()
                );
            } else {
                println!("stopped {name} (pid {pid})");
            }
            stopped += 1;
        }
    }
    if stopped == 0 {
        println!("nothing was running in {}", dir.display());
    }
    Ok(())
}
