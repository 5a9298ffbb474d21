//! Snapshot benchmark: what the first write after a snapshot costs next to a plain one.
//! A real `cairn dev up` cluster (three monitors, three OSDs on loopback), a replicated
//! pool of size 3 holding 4 MiB objects; each round writes 4 KiB into every object with
//! the current snapshot context (plain writes), takes a self-managed snapshot, and writes
//! 4 KiB into every object again: each of those is the first after the snapshot and keeps
//! the object as a clone first. One write in flight, so each latency is one write's.
//!
//!     cargo build --release -p cairn      # the benchmark runs target/release/cairn
//!     cargo run --release -p cairn-bench --bin snap-bench [-- --objects N] [--rounds N]
//!
//! The target: the first write after a snapshot costs less than twice a plain one.
//! Then every snapshot is removed, and the time until no object has a clone left gives
//! the snapshot trimming throughput (at the default `osd.snap_trim_sleep_ms`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use cairn_bench::dev::{DevCluster, cairn_binary, free_ports, run_cairn};
use cairn_bench::{flag, load_average, percentile};
use client::objects::Objects;
use client::{ClientConfig, MonClient};
use proto::osd::{ObjectName, ObjectOp, SnapArgs, SnapContext};

const OBJECT_BYTES: usize = 4 << 20;
const WRITE_BYTES: u64 = 4096;
const OBJECTS_DEFAULT: usize = 32;
const ROUNDS_DEFAULT: usize = 4;
const POOL: &str = "snapbench";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let objects_n: usize = flag(&args, "--objects").map_or(Ok(OBJECTS_DEFAULT), |v| v.parse())?;
    let rounds: usize = flag(&args, "--rounds").map_or(Ok(ROUNDS_DEFAULT), |v| v.parse())?;
    let load_before = load_average();
    let cairn = cairn_binary()?;
    let port = free_ports(3)?.to_string();
    let dir = tempfile::tempdir().context("make a temporary directory")?;
    let cluster = DevCluster { cairn: cairn.clone(), dir };
    run_cairn(&cairn, cluster.dir.path(), &["dev", "up", "--base-port", &port, "--osds", "3"])?;
    let create = ["pool", "create", POOL, "replicated", "--size", "3", "--pg-num", "32"];
    run_cairn(&cairn, cluster.dir.path(), &create)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (plain, first, trim) = runtime.block_on(measure(&cluster, objects_n, rounds))?;
    drop(runtime);
    drop(cluster);
    let mean = |s: &[Duration]| s.iter().sum::<Duration>() / s.len() as u32;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("4 KiB writes into 4 MiB objects, one in flight, {} of each:", plain.len());
    println!("{:<30} {:>9} {:>9} {:>9}", "", "mean ms", "p50 ms", "p99 ms");
    for (label, s) in [("plain write", &plain), ("first write after a snapshot", &first)] {
        let (m, p50, p99) = (mean(s), percentile(s, 0.5), percentile(s, 0.99));
        println!("{label:<30} {:>9.2} {:>9.2} {:>9.2}", ms(m), ms(p50), ms(p99));
    }
    let ratio = |f: fn(&[Duration]) -> Duration| ms(f(&first)) / ms(f(&plain));
    println!(
        "first / plain: mean {:.2}x, p50 {:.2}x (target < 2x)",
        ratio(|s| s.iter().sum::<Duration>() / s.len() as u32),
        ratio(|s| percentile(s, 0.5))
    );
    let (clones, took) = trim;
    println!(
        "snapshot trimming: {clones} clones in {:.2} s after the last removal, {:.0} clones/s",
        took.as_secs_f64(),
        clones as f64 / took.as_secs_f64()
    );
    println!("load average before: {load_before}; after: {}", load_average());
    Ok(())
}

/// Plain and first-after-snapshot write latencies, each sorted; the clones trimmed once
/// every snapshot is removed, and how long that took from the last removal.
async fn measure(
    cluster: &DevCluster,
    objects_n: usize,
    rounds: usize,
) -> Result<(Vec<Duration>, Vec<Duration>, (usize, Duration))> {
    let config = ClientConfig::load(&cluster.data().join("client.toml"))?;
    let objects = Objects::new(Arc::new(MonClient::connect(config)?)).await?;
    let names: Vec<ObjectName> =
        (0..objects_n).map(|i| ObjectName::new(format!("obj.{i}"))).collect();
    let fill = Bytes::from(vec![0x5a; OBJECT_BYTES]);
    for name in &names {
        objects.write_full(POOL, name, fill.clone()).await?;
    }
    let data = Bytes::from(vec![0xa5; WRITE_BYTES as usize]);
    let mut context = SnapContext::default();
    let (mut plain, mut first) = (Vec::new(), Vec::new());
    let write = |name: &ObjectName, offset: u64, context: &SnapContext| {
        let ops = vec![ObjectOp::Write { offset, len: WRITE_BYTES }];
        let args = SnapArgs { context: Some(context.clone()), read: None };
        let (objects, name, data) = (&objects, name.clone(), data.clone());
        async move {
            let start = Instant::now();
            objects.op_with(POOL, &name, ops, data, &args).await?;
            anyhow::Ok(start.elapsed())
        }
    };
    for round in 0..rounds {
        // Offsets spread over the object, a different 4 KiB each time.
        let offset =
            |i: usize, k: u64| ((i as u64 * 7 + round as u64 * 13 + k) % 1024) * WRITE_BYTES;
        for (i, name) in names.iter().enumerate() {
            plain.push(write(name, offset(i, 0), &context).await?);
        }
        let snap = objects.snap_create(POOL).await?;
        context.seq = snap;
        context.snaps.insert(0, snap);
        for (i, name) in names.iter().enumerate() {
            first.push(write(name, offset(i, 500), &context).await?);
        }
    }
    let clones = objects.list_snaps(POOL, &names[0]).await?.clones.len();
    ensure!(clones == rounds, "obj.0 has {clones} clones after {rounds} snapshots");
    plain.sort();
    first.sort();
    let trim = trim(&objects, &names, &context.snaps).await?;
    Ok((plain, first, trim))
}

/// Removes `snaps` and waits (at most 5 minutes) until no object in `names` has a clone.
async fn trim(objects: &Objects, names: &[ObjectName], snaps: &[u64]) -> Result<(usize, Duration)> {
    let mut clones = 0;
    for name in names {
        clones += objects.list_snaps(POOL, name).await?.clones.len();
    }
    for &snap in snaps {
        objects.snap_remove(POOL, snap).await?;
    }
    let start = Instant::now();
    let mut left = names.to_vec();
    while !left.is_empty() {
        ensure!(start.elapsed() < Duration::from_secs(300), "{} objects kept clones", left.len());
        let mut still = Vec::new();
        for name in left {
            if !objects.list_snaps(POOL, &name).await?.clones.is_empty() {
                still.push(name);
            }
        }
        left = still;
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok((clones, start.elapsed()))
}
