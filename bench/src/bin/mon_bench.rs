//! Monitor benchmark: a real `cairn dev up` cluster (three monitor processes on loopback,
//! Raft over mutual-TLS QUIC, RocksDB with synced writes) driven through the client library.
//!
//!     cargo build --release -p cairn      # the benchmark runs target/release/cairn
//!     cargo run --release -p cairn-bench --bin mon-bench [-- --quick] [--commits N]
//!                        [--concurrency N] [--mons N] [--no-ceph] [--format json]
//!
//! It builds nothing itself: it runs the `cairn` binary at `$CAIRN_BIN`, or next to its own
//! executable. In a temporary directory it times `cairn dev up` from spawn to exit (dev up
//! returns once the cluster is HEALTH_OK with every monitor in quorum); measures committed
//! administrative changes (`config set`, one at a time and concurrently), map changes,
//! `status` and full map fetches; reads each monitor's resident memory idle and after the
//! load; and always runs `cairn dev down` at the end. There are no OSD daemons yet: OSDs
//! exist only as map entries here.
//!
//! The reference: once cairn's cluster is down, `scripts/ceph_mon_commits.py` measures three
//! Ceph monitors the same way (skipped, with the reason, where Ceph is not installed), and
//! the two are printed side by side with the ratio.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_bench::dev::{DevCluster, cairn_binary, free_ports, run_cairn};
use client::{ClientConfig, MonClient};
use proto::message::PoolSpec;
use proto::{Command, CommandOutput};
use serde_json::{Value, json};

const COMMITS_DEFAULT: usize = 500;
const CONCURRENCY_DEFAULT: usize = 16;
const MONS_DEFAULT: usize = 3;
/// Reads (`status`, map fetches) per measurement.
const READS: usize = 500;
/// The map grown before the second map fetch: OSDs over hosts, and pools of PGs.
const OSDS: u32 = 30;
const OSDS_PER_HOST: u32 = 3;
const POOLS: u32 = 4;
const PGS_PER_POOL: u32 = 256;
/// The setting every `config set` changes; its values stay within its bounds.
const SETTING: &str = "mon.down_out_interval";
const SETTING_BASE_S: usize = 600;
const MIB: f64 = 1024.0 * 1024.0;

/// Each monitor's name and pid, from its pid file.
fn monitor_pids(cluster: &DevCluster) -> Result<Vec<(String, i32)>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(cluster.data())? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if !name.starts_with("mon.") || !path.is_dir() {
            continue;
        }
        let pid_path = path.join("mon.pid");
        let text = std::fs::read_to_string(&pid_path)
            .with_context(|| format!("read {}", pid_path.display()))?;
        pids.push((name.to_owned(), text.trim().parse()?));
    }
    pids.sort();
    Ok(pids)
}

/// VmRSS and VmHWM of a process, in bytes.
fn memory(pid: i32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} for pid {pid}"))?;
        let kib: u64 = line.trim().trim_end_matches("kB").trim().parse()?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// User plus system CPU time of a process so far, from /proc/PID/stat.
fn process_cpu(pid: i32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers,
    // utime and stime being the 12th and 13th after the closing parenthesis.
    let after = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    ensure!(fields.len() > 12, "short /proc/{pid}/stat");
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf only reads a system constant.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(per_s > 0, "sysconf(_SC_CLK_TCK)");
    Ok(Duration::from_secs_f64(ticks as f64 / per_s as f64))
}

/// CPU time of all the monitors, and of this process (the clients), so far.
fn cpu_times(pids: &[(String, i32)]) -> Result<(Duration, Duration)> {
    let mut monitors = Duration::ZERO;
    for (_, pid) in pids {
        monitors += process_cpu(*pid)?;
    }
    Ok((monitors, process_cpu(std::process::id() as i32)?))
}

/// Latencies of one measurement, the wall time it took, and the CPU time spent meanwhile.
struct Sample {
    what: String,
    latencies: Vec<Duration>,
    wall: Duration,
    monitors_cpu: Duration,
    client_cpu: Duration,
}

/// Runs `work` and adds the CPU time the monitors and the clients spent on it.
async fn with_cpu(
    pids: &[(String, i32)],
    work: impl Future<Output = Result<Sample>>,
) -> Result<Sample> {
    let (monitors, client) = cpu_times(pids)?;
    let mut sample = work.await?;
    let (monitors_after, client_after) = cpu_times(pids)?;
    sample.monitors_cpu = monitors_after - monitors;
    sample.client_cpu = client_after - client;
    Ok(sample)
}

impl Sample {
    fn new(what: &str, latencies: Vec<Duration>, wall: Duration) -> Sample {
        let zero = Duration::ZERO;
        Sample { what: what.into(), latencies, wall, monitors_cpu: zero, client_cpu: zero }
    }

    fn row(&self) -> Value {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = |p: f64| cairn_bench::percentile(&sorted, p).as_secs_f64() * 1e3;
        json!({
            "measurement": self.what,
            "count": sorted.len(),
            "per_s": sorted.len() as f64 / self.wall.as_secs_f64(),
            "p50_ms": at(0.50),
            "p99_ms": at(0.99),
            "max_ms": at(1.0),
            "monitors_cpu_ms_per_op": self.monitors_cpu.as_secs_f64() * 1e3 / sorted.len() as f64,
            "client_cpu_ms_per_op": self.client_cpu.as_secs_f64() * 1e3 / sorted.len() as f64,
        })
    }
}

fn config_set(i: usize) -> Command {
    Command::ConfigSet { key: SETTING.into(), value: (SETTING_BASE_S + i % 100_000).to_string() }
}

/// `count` commands one after another, each waited for.
async fn sequential(
    client: &MonClient,
    what: &str,
    commands: impl Iterator<Item = Command>,
) -> Result<Sample> {
    let mut latencies = Vec::new();
    let start = Instant::now();
    for command in commands {
        let t = Instant::now();
        client.command(command).await?;
        latencies.push(t.elapsed());
    }
    Ok(Sample::new(what, latencies, start.elapsed()))
}

/// `count` config changes from `tasks` tasks at once, over the given clients in turn.
async fn concurrent(
    clients: &[Arc<MonClient>],
    tasks: usize,
    count: usize,
    what: &str,
) -> Result<Sample> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let client = clients[task % clients.len()].clone();
        set.spawn(async move {
            let mut latencies = Vec::new();
            for i in (task..count).step_by(tasks) {
                let t = Instant::now();
                client.command(config_set(i)).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(result) = set.join_next().await {
        latencies.extend(result??);
    }
    Ok(Sample::new(what, latencies, start.elapsed()))
}

async fn statuses(client: &MonClient, count: usize) -> Result<Sample> {
    let mut latencies = Vec::new();
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        client.status().await?;
        latencies.push(t.elapsed());
    }
    Ok(Sample::new("status", latencies, start.elapsed()))
}

/// Full map fetches, decoding included; the label gets the encoded map's size.
async fn map_fetches(client: &MonClient, count: usize, label: &str) -> Result<Sample> {
    let mut latencies = Vec::new();
    let mut bytes = 0;
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        let (_, bundle) = client.get_maps(None).await?;
        latencies.push(t.elapsed());
        bytes = bundle.full.as_ref().map_or(0, Vec::len);
    }
    let what = format!("get_maps(None), {label}, {bytes} bytes");
    Ok(Sample::new(&what, latencies, start.elapsed()))
}

/// The commands that grow the map: OSDs placed on hosts, then pools.
fn map_growth() -> Vec<Command> {
    let mut commands = Vec::new();
    for osd in 0..OSDS {
        commands.push(Command::OsdCreate { id: Some(osd) });
        let location: BTreeMap<String, String> = [
            ("root".to_owned(), "default".to_owned()),
            ("host".to_owned(), format!("host{}", osd / OSDS_PER_HOST)),
        ]
        .into();
        commands.push(Command::CrushSetOsd { osd, weight: 1.0, location, class: None });
    }
    for pool in 0..POOLS {
        commands.push(Command::PoolCreate {
            name: format!("pool{pool}"),
            spec: PoolSpec::Replicated { size: 3, min_size: None },
            pg_num: Some(PGS_PER_POOL),
            rule: None,
            new_rule: None,
        });
    }
    commands
}

struct Options {
    commits: usize,
    concurrency: usize,
    mons: usize,
    reads: usize,
    json: bool,
    /// Run Ceph's monitors for the reference columns (unless `--no-ceph`).
    ceph: bool,
}

fn options() -> Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let number = |name: &str, default: usize| -> Result<usize> {
        flag(name).map_or(Ok(default), |v| v.parse().with_context(|| format!("{name} N")))
    };
    let quick = args.iter().any(|a| a == "--quick");
    let scale = if quick { 5 } else { 1 };
    let options = Options {
        commits: number("--commits", COMMITS_DEFAULT / scale)?,
        concurrency: number("--concurrency", CONCURRENCY_DEFAULT)?,
        mons: number("--mons", MONS_DEFAULT)?,
        reads: READS / scale,
        json: flag("--format").is_some_and(|f| f == "json"),
        ceph: !args.iter().any(|a| a == "--no-ceph"),
    };
    ensure!(options.commits > 0 && options.concurrency > 0, "--commits and --concurrency > 0");
    Ok(options)
}

fn main() -> Result<()> {
    let options = options()?;
    let load_before = cairn_bench::load_average();
    let cairn = cairn_binary()?;
    let base_port = free_ports(options.mons)?;
    let dir = tempfile::tempdir().context("make a temporary directory")?;
    let mons = options.mons.to_string();
    let port = base_port.to_string();
    let up_args = ["dev", "up", "--mons", &mons, "--base-port", &port];
    eprintln!("cairn {} in {}", up_args.join(" "), dir.path().display());
    let start = Instant::now();
    // From here on, dropping the cluster stops it, even when dev up itself failed halfway.
    let cluster = DevCluster { cairn: cairn.clone(), dir };
    let up_output = run_cairn(&cairn, cluster.dir.path(), &up_args)?;
    let up_s = start.elapsed().as_secs_f64();
    // dev up's own figure, from its bootstrap to HEALTH_OK.
    let own_s: Option<f64> = up_output
        .split("HEALTH_OK after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|s| s.parse().ok());

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(measure(&cluster, &options))?;
    drop(runtime);

    let down_start = Instant::now();
    drop(cluster);
    let down_s = down_start.elapsed().as_secs_f64();
    let ceph = if options.ceph { ceph_reference(&options) } else { None };
    let load = cairn_bench::load_average();

    if options.json {
        let doc = json!({
            "mons": options.mons,
            "dev_up_s": up_s,
            "dev_up_own_s": own_s,
            "dev_down_s": down_s,
            "load_average_before": load_before,
            "load_average_after": load,
            "report": report,
            "ceph": ceph,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_report(&options, up_s, own_s, down_s, &report);
        println!("\nLoad average (1, 5, 15 min) before: {load_before}; after: {load}");
        if let Some(ceph) = &ceph {
            print_comparison(up_s, &report, ceph);
        }
    }
    Ok(())
}

/// Everything measured on the running cluster, as one JSON document.
async fn measure(cluster: &DevCluster, options: &Options) -> Result<Value> {
    let config_path = cluster.data().join("client.toml");
    let config = ClientConfig::load(&config_path)?;
    let pids = monitor_pids(cluster)?;
    let idle: Vec<(u64, u64)> = pids.iter().map(|(_, pid)| memory(*pid)).collect::<Result<_>>()?;

    let client = Arc::new(MonClient::connect(config.clone())?);
    let status = client.status().await?;
    let (leader, answered_by) = (status.leader.clone(), status.answered_by.clone());

    let mut samples = Vec::new();
    eprintln!("config set: {} sequential", options.commits);
    let commits = (0..options.commits).map(config_set);
    samples.push(with_cpu(&pids, sequential(&client, "config set, sequential", commits)).await?);
    let c = options.concurrency;
    eprintln!("config set: {} from {c} tasks on one client", options.commits);
    let what = format!("config set, {c} tasks sharing one client");
    let shared = std::slice::from_ref(&client);
    samples.push(with_cpu(&pids, concurrent(shared, c, options.commits, &what)).await?);
    eprintln!("config set: {} from {c} clients", options.commits);
    let clients: Vec<Arc<MonClient>> = (0..c)
        .map(|_| MonClient::connect(config.clone()).map(Arc::new))
        .collect::<Result<_, _>>()?;
    // Each client finds a monitor (handshakes included) before the clock starts.
    for client in &clients {
        client.status().await?;
    }
    let what = format!("config set, {c} clients, one task each");
    samples.push(with_cpu(&pids, concurrent(&clients, c, options.commits, &what)).await?);
    drop(clients);

    eprintln!("status and map fetches");
    samples.push(with_cpu(&pids, statuses(&client, options.reads)).await?);
    let fetches = map_fetches(&client, options.reads, "no OSDs or pools");
    samples.push(with_cpu(&pids, fetches).await?);
    let what = format!(
        "map changes, sequential ({OSDS} osd create + crush set, {POOLS} pool create x \
         {PGS_PER_POOL} PGs)"
    );
    samples.push(with_cpu(&pids, sequential(&client, &what, map_growth().into_iter())).await?);
    let label = format!("{OSDS} OSDs, {POOLS} pools x {PGS_PER_POOL} PGs");
    samples.push(with_cpu(&pids, map_fetches(&client, options.reads, &label)).await?);
    let epoch = match client.command(Command::OsdCreate { id: None }).await? {
        CommandOutput::OsdCreated { epoch, .. } => epoch,
        _ => bail!("osd create answered without an epoch"),
    };

    let after: Vec<(u64, u64)> = pids.iter().map(|(_, pid)| memory(*pid)).collect::<Result<_>>()?;
    let monitors: Vec<Value> = pids
        .iter()
        .zip(idle.iter().zip(&after))
        .map(|((name, pid), (idle, after))| {
            json!({
                "monitor": name,
                "pid": pid,
                "rss_idle_bytes": idle.0,
                "rss_after_bytes": after.0,
                "hwm_bytes": after.1,
            })
        })
        .collect();
    Ok(json!({
        "leader": leader,
        "session_on": answered_by,
        "final_epoch": epoch,
        "samples": samples.iter().map(Sample::row).collect::<Vec<_>>(),
        "monitors": monitors,
    }))
}

/// Ceph's figures from `scripts/ceph_mon_commits.py` (or `$CEPH_MON_SCRIPT`), run after
/// cairn's cluster is down; `None`, with the reason on stderr, where that is not possible.
fn ceph_reference(options: &Options) -> Option<Value> {
    let script = std::env::var_os("CEPH_MON_SCRIPT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph_mon_commits.py"),
        PathBuf::from,
    );
    let installed = Process::new("ceph-mon").arg("--version").output().is_ok();
    if !installed || !script.is_file() {
        eprintln!("no Ceph reference: needs ceph-mon installed and {}", script.display());
        return None;
    }
    eprintln!("Ceph reference: {}", script.display());
    let (commits, concurrency) = (options.commits.to_string(), options.concurrency.to_string());
    let output = Process::new("/usr/bin/python3")
        .arg(&script)
        .args(["--format", "json", "--commits", &commits, "--concurrency", &concurrency])
        .stderr(std::process::Stdio::inherit())
        .output();
    match output {
        Ok(out) if out.status.success() => match serde_json::from_slice(&out.stdout) {
            Ok(value) => Some(value),
            Err(e) => {
                eprintln!("no Ceph reference: its output is not JSON: {e}");
                None
            }
        },
        Ok(out) => {
            eprintln!("no Ceph reference: the script failed ({})", out.status);
            None
        }
        Err(e) => {
            eprintln!("no Ceph reference: run /usr/bin/python3: {e}");
            None
        }
    }
}

/// cairn's figures next to Ceph's, with the ratio (above 1: cairn is better).
fn print_comparison(up_s: f64, cairn: &Value, ceph: &Value) {
    // The sample whose name contains `part`.
    let sample = |report: &Value, part: &str, key: &str| {
        report["samples"]
            .as_array()
            .and_then(|s| {
                s.iter().find(|r| r["measurement"].as_str().is_some_and(|m| m.contains(part)))
            })
            .and_then(|r| r[key].as_f64())
            .unwrap_or(f64::NAN)
    };
    let peak = |report: &Value, key: &str| {
        report["monitors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m[key].as_f64())
            .fold(f64::NAN, f64::max)
            / MIB
    };
    println!("\n## Next to Ceph ({})\n", ceph["version"].as_str().unwrap_or("?"));
    println!("| measurement | cairn | Ceph | ratio (>1: cairn better) |");
    println!("|---|---:|---:|---:|");
    // (label, cairn, Ceph, whether more is better)
    let rows = [
        (
            "nothing to quorum, s (cairn: dev up, to HEALTH_OK; Ceph: monmap, mkfs, quorum)",
            up_s,
            ceph["setup_s"].as_f64().unwrap_or(f64::NAN)
                + ceph["spawn_to_quorum_s"].as_f64().unwrap_or(f64::NAN),
            false,
        ),
        (
            "config set, sequential, commits/s",
            sample(cairn, "config set, sequential", "per_s"),
            sample(ceph, "config set, sequential", "per_s"),
            true,
        ),
        (
            "config set, sequential, p50 ms",
            sample(cairn, "config set, sequential", "p50_ms"),
            sample(ceph, "config set, sequential", "p50_ms"),
            false,
        ),
        (
            "config set, sequential, p99 ms",
            sample(cairn, "config set, sequential", "p99_ms"),
            sample(ceph, "config set, sequential", "p99_ms"),
            false,
        ),
        (
            "config set, sequential, monitors' CPU ms per commit",
            sample(cairn, "config set, sequential", "monitors_cpu_ms_per_op"),
            sample(ceph, "config set, sequential", "monitors_cpu_ms_per_op"),
            false,
        ),
        (
            "config set, concurrent on one client/handle, commits/s",
            sample(cairn, "sharing one", "per_s"),
            sample(ceph, "sharing one", "per_s"),
            true,
        ),
        (
            "status, p50 ms",
            sample(cairn, "status", "p50_ms"),
            sample(ceph, "status", "p50_ms"),
            false,
        ),
        (
            "largest monitor VmRSS after load, MiB",
            peak(cairn, "rss_after_bytes"),
            peak(ceph, "rss_after_bytes"),
            false,
        ),
        ("largest monitor VmHWM, MiB", peak(cairn, "hwm_bytes"), peak(ceph, "hwm_bytes"), false),
    ];
    for (label, ours, theirs, more_is_better) in rows {
        let ratio = if more_is_better { ours / theirs } else { theirs / ours };
        println!("| {label} | {ours:.2} | {theirs:.2} | {ratio:.1}x |");
    }
    let f = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nCeph's own figures: monmap, keyring and mkfs {:.2} s, spawn to full quorum {:.2} s, \
         leader mon.{}\n",
        f(ceph, "setup_s"),
        f(ceph, "spawn_to_quorum_s"),
        ceph["leader"].as_str().unwrap_or("?")
    );
    print_samples(&ceph["samples"]);
    print_memory("Ceph monitor", &ceph["monitors"]);
}

fn print_report(options: &Options, up_s: f64, own_s: Option<f64>, down_s: f64, report: &Value) {
    println!(
        "## Monitors: `cairn dev up`, {} monitors on loopback, no OSD daemons\n",
        options.mons
    );
    println!(
        "dev up, spawn to exit (bootstrap, start, HEALTH_OK with all in quorum): {up_s:.2} s \
         (dev up's own figure: {})",
        own_s.map_or("-".into(), |s| format!("{s:.1} s"))
    );
    println!("dev down: {down_s:.2} s");
    println!(
        "leader: mon.{}; the client's session is with {}; final map epoch {}\n",
        report["leader"].as_str().unwrap_or("?"),
        report["session_on"].as_str().map_or("?".into(), |m| format!("mon.{m}")),
        report["final_epoch"]
    );
    print_samples(&report["samples"]);
    print_memory("monitor", &report["monitors"]);
}

/// A table of samples, with the client CPU column where the samples have it.
fn print_samples(samples: &Value) {
    let f = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let rows: Vec<&Value> = samples.as_array().into_iter().flatten().collect();
    let client = rows.iter().any(|r| r.get("client_cpu_ms_per_op").is_some());
    println!(
        "| measurement | count | per second | p50 ms | p99 ms | max ms | monitors CPU ms/op |{}",
        if client { " client CPU ms/op |" } else { "" }
    );
    println!("|---|---:|---:|---:|---:|---:|---:|{}", if client { "---:|" } else { "" });
    for row in rows {
        let client_cpu = match client {
            true => format!(" {:.2} |", f(row, "client_cpu_ms_per_op")),
            false => String::new(),
        };
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |{client_cpu}",
            row["measurement"].as_str().unwrap_or("?"),
            row["count"],
            f(row, "per_s"),
            f(row, "p50_ms"),
            f(row, "p99_ms"),
            f(row, "max_ms"),
            f(row, "monitors_cpu_ms_per_op"),
        );
    }
}

/// Each monitor's resident memory, idle after start and after the load.
fn print_memory(kind: &str, monitors: &Value) {
    let f = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    println!("\n| {kind} | VmRSS idle MiB | VmRSS after load MiB | VmHWM MiB |");
    println!("|---|---:|---:|---:|");
    for mon in monitors.as_array().into_iter().flatten() {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} |",
            mon["monitor"].as_str().unwrap_or("?"),
            f(mon, "rss_idle_bytes") / MIB,
            f(mon, "rss_after_bytes") / MIB,
            f(mon, "hwm_bytes") / MIB
        );
    }
}
