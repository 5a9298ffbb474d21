//! `cairn`: one command for the whole cluster: the daemons (`cairn mon run`), a local
//! cluster (`cairn dev up`), administration (`cairn status`, `cairn osd ...`,
//! `cairn pool ...`) and the offline map tool (`cairn map`).

mod auth;
mod bench;
mod connect;
mod dev;
mod map;
mod map_render;
mod mons;
mod obj;
mod osds;
mod pg;
mod pools;
mod recon;
mod status;
mod store_tool;
mod units;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cairn", version, about = "cairn: a storage cluster")]
struct Cli {
    #[command(flatten)]
    connect: connect::Connect,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The cluster at a glance: health, monitors, OSDs, pools.
    Status,
    /// Health: the status word, or with `detail` every check and what it found.
    Health {
        #[arg(value_parser = ["detail"])]
        detail: Option<String>,
    },
    /// Monitors: run one, list them, add or remove one.
    #[command(subcommand)]
    Mon(mons::MonCommand),
    /// OSDs: tree, dump, create, remove, in, out, reweight, flags, placement.
    #[command(subcommand)]
    Osd(osds::OsdCommand),
    /// Every daemon side by side: map epoch and hash, clock offset, last recovery,
    /// backfill and scrub, quarantined copies, slow ops, disk usage, load.
    Recon,
    /// Load an object pool as `rados bench` does: write, seq, rand (or cleanup).
    Bench(bench::BenchArgs),
    /// Placement groups: states and counts (stat, dump).
    #[command(subcommand)]
    Pg(pg::PgCommand),
    /// Objects in pools (put, get, stat, ls, rm).
    #[command(subcommand)]
    Obj(obj::ObjCommand),
    /// The CRUSH hierarchy: buckets.
    #[command(subcommand)]
    Crush(pools::CrushCommand),
    /// Pools: create, delete, set, list.
    #[command(subcommand)]
    Pool(pools::PoolCommand),
    /// CRUSH rules: create, remove, list.
    #[command(subcommand)]
    Rule(pools::RuleCommand),
    /// Identities and their capabilities.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Cluster settings.
    #[command(subcommand)]
    Config(auth::ConfigCommand),
    /// Make a new cluster's identities and monitor directories.
    Bootstrap {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
        /// Initial monitors as NAME=IP:PORT (repeat).
        #[arg(long = "mon", required = true)]
        mons: Vec<String>,
    },
    /// A local cluster on this machine, as separate processes on loopback.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Build, inspect, test, compare and balance cluster maps offline.
    Map(map::MapArgs),
}

#[derive(Subcommand)]
enum DevCommand {
    /// Start it (bootstrapping it on first use) and wait until it is healthy.
    Up {
        #[arg(long, default_value = "cairn-data")]
        dir: PathBuf,
        /// Monitors to bootstrap with (first use only).
        #[arg(long, default_value_t = 3)]
        mons: usize,
        /// Port of the first monitor; the others follow, and the OSDs' from 11 above
        /// it (6800, as Ceph's) (first use only).
        #[arg(long, default_value_t = 6789)]
        base_port: u16,
        /// OSDs to run; more are created when the cluster has fewer (never removed).
        #[arg(long, default_value_t = 3)]
        osds: usize,
    },
    /// Stop it, keeping its data.
    Down {
        #[arg(long, default_value = "cairn-data")]
        dir: PathBuf,
    },
}

/// How a command prints its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables and sentences for people.
    #[default]
    Plain,
    /// One JSON document for scripts.
    Json,
}

fn init_logging(daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if daemon { "info,openraft=warn" } else { "warn,openraft=error" };
    let filter = EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a terminal: daemons' stderr usually goes to a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let c = &cli.connect;
    match cli.command {
        Command::Status => status::status(c).await,
        Command::Health { detail } => status::health(c, detail.is_some()).await,
        Command::Mon(command) => mons::mon(c, command).await,
        Command::Osd(command) => osds::osd(c, command).await,
        Command::Obj(command) => obj::run(c, command).await,
        Command::Pg(command) => pg::run(c, command).await,
        Command::Recon => recon::run(c).await,
        Command::Bench(args) => bench::run(c, args).await,
        Command::Crush(command) => pools::crush(c, command).await,
        Command::Pool(command) => pools::pool(c, command).await,
        Command::Rule(command) => pools::rule(c, command).await,
        Command::Auth(command) => auth::auth(c, command).await,
        Command::Config(command) => auth::config(c, command).await,
        Command::Bootstrap { dir, mons } => mons::bootstrap(&dir, &mons),
        Command::Dev(DevCommand::Up { dir, mons, base_port, osds }) => {
            dev::up(&dir, mons, base_port, osds).await
        }
        Command::Dev(DevCommand::Down { dir }) => dev::down(&dir),
        Command::Map(args) => map::run(args, c.format),
    }
}

/// mimalloc rather than glibc's malloc for everything Rust allocates (RocksDB's C++ keeps
/// glibc's). Alternating runs on this machine (3 OSDs, 16 ops in flight, 3 pairs): 4 KiB
/// writes +7-19%, 4 KiB random reads +8-10%, OSD CPU per op 8-15% lower, 4 MiB writes
/// 126-129 -> 167-176 MiB/s; OSD peak RSS 153-160 -> 194-198 MiB under 4 MiB writes.
/// Erasure-coded OSDs peak at 274-299 MiB under 4 MiB writes, over the 256 MiB budget;
/// returning freed memory sooner than mimalloc's 1 s costs them 15-30% of their write
/// throughput (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(
        cli.command,
        Command::Mon(mons::MonCommand::Run { .. }) | Command::Osd(osds::OsdCommand::Run { .. })
    ));
    if matches!(cli.command, Command::Osd(osds::OsdCommand::Run { .. })) {
        osd::daemon::tune_allocator();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
