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
use proto::identity::{ClusterCa, write_private};
use proto::message::Severity;
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
        path: Some(config_path.clone()),
    };
    config.save(&config_path)?;
    Ok(config)
}

/// The monitor directories of a cluster directory, by name.
fn monitor_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let is_mon =
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("mon."));
        if is_mon && path.join("mon.toml").exists() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The pid in a daemon's pid file, if that process still runs and is a cairn monitor (a
/// stale pid file may name a pid the system has since given to something else).
fn running_pid(daemon_dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(daemon_dir.join(PID_FILE)).ok()?.trim().parse().ok()?;
    use std::os::unix::ffi::OsStrExt;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    if !args.windows(2).any(|w| w[0] == b"mon" && w[1] == b"run") {
        return None;
    }
    // And the monitor of this very directory, not another cluster's.
    let data = args.windows(2).find(|w| w[0] == b"--data").map(|w| w[1])?;
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    let theirs = std::fs::canonicalize(cwd.join(std::ffi::OsStr::from_bytes(data))).ok()?;
    (theirs == std::fs::canonicalize(daemon_dir).ok()?).then_some(pid)
}

/// Starts `cairn mon run` for a monitor directory, detached, logging to `mon.log`.
fn spawn_monitor(mon_dir: &Path) -> Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("find the cairn binary")?;
    let log_path = mon_dir.join("mon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let child = std::process::Command::new(exe)
        .args(["mon", "run", "--data"])
        .arg(mon_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start the monitor in {}", mon_dir.display()))?;
    Ok(child)
}

/// `cairn dev up`: bootstraps `dir` on first use, starts its monitors, waits for health.
pub async fn up(dir: &Path, monitors: usize, base_port: u16) -> Result<()> {
    let started = Instant::now();
    let config_path = dir.join(CLIENT_CONFIG);
    let fresh = !config_path.exists();
    if fresh {
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
        bootstrap(dir, &mons)?;
        println!("bootstrapped a new cluster in {}", dir.display());
    }
    let mut started_now = Vec::new();
    for mon_dir in monitor_dirs(dir)? {
        let name = mon_dir.file_name().and_then(|n| n.to_str()).unwrap_or("mon").to_owned();
        let config = MonConfig::load(&mon_dir)?;
        match running_pid(&mon_dir) {
            Some(pid) => println!("{name} already running (pid {pid}) at {}", config.addr),
            None => {
                let child = spawn_monitor(&mon_dir)?;
                println!(
                    "started {name} (pid {}) at {}, log {}",
                    child.id(),
                    config.addr,
                    mon_dir.join("mon.log").display()
                );
                started_now.push((mon_dir, child));
            }
        }
    }
    // Each monitor writes its pid file once it listens: asking before that would only cost
    // a retransmitted handshake. One that exits instead is reported with its log.
    let deadline = Instant::now() + UP_TIMEOUT;
    for (mon_dir, child) in &mut started_now {
        while running_pid(mon_dir).is_none() {
            let log = mon_dir.join("mon.log");
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{} exited ({status}); {}:\n{}",
                    mon_dir.display(),
                    log.display(),
                    tail.join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start within {} s; see {}",
                    mon_dir.display(),
                    UP_TIMEOUT.as_secs(),
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let config = ClientConfig::load(&config_path)?;
    let client = client::MonClient::connect(config).context("connect to the monitors")?;
    loop {
        match client.status().await {
            Ok(status)
                if status.health == Severity::Ok
                    && status.leader.is_some()
                    && status.monitors.iter().all(|m| m.in_quorum) =>
            {
                println!(
                    "cluster {} is HEALTH_OK after {:.1} s: {} monitors in quorum, leader mon.{}",
                    status.fsid,
                    started.elapsed().as_secs_f64(),
                    status.monitors.len(),
                    status.leader.as_deref().unwrap_or("?")
                );
                break;
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
    let abs = std::fs::canonicalize(&config_path).unwrap_or(config_path);
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
    println!("stop with: {cairn} dev down    (data stays in {})", dir.display());
    Ok(())
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

/// `cairn dev down`: stops the monitors of `dir`, keeping their data.
pub fn down(dir: &Path) -> Result<()> {
    let mut stopped = 0;
    for mon_dir in monitor_dirs(dir)? {
        let name = mon_dir.file_name().and_then(|n| n.to_str()).unwrap_or("mon").to_owned();
        let Some(pid) = running_pid(&mon_dir) else { continue };
        // SAFETY: sending a signal to a process id read from our own pid file.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while running_pid(&mon_dir).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if running_pid(&mon_dir).is_some() {
            // SAFETY: as above; the daemon did not stop in time.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = std::fs::remove_file(mon_dir.join(PID_FILE));
            println!(
                "killed {name} (pid {pid}): it did not stop within {} s",
                STOP_TIMEOUT.as_secs()
            );
        } else {
            println!("stopped {name} (pid {pid})");
        }
        stopped += 1;
    }
    if stopped == 0 {
        println!("nothing was running in {}", dir.display());
    }
    Ok(())
}
