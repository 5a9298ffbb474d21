//! `cairn bench`, as `rados bench`: write objects for a while with many in flight, then
//! read them back in order (`seq`) or at random (`rand`), and report bandwidth, IOPS and
//! latency percentiles.
//!
//! `write` names its objects `RUN_objN` and, with `--no-cleanup`, leaves them and a
//! `RUN_meta` object (how many, how large) for `seq` and `rand` to read; without it, it
//! removes them at the end. `cleanup` removes what a `--no-cleanup` run left.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use client::objects::Objects;
use proto::osd::ObjectName;
use serde::{Deserialize, Serialize};

use crate::Format;
use crate::connect::Connect;
use crate::map::print_json;
use crate::units::parse_size;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Write,
    Seq,
    Rand,
    /// Remove the objects a `write --no-cleanup` left.
    Cleanup,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    pub pool: String,
    /// How long to run, in seconds (`seq` also stops once every object was read).
    pub seconds: u64,
    #[arg(value_enum)]
    pub mode: Mode,
    /// Object size for `write`: bytes, or with K, M (KiB, MiB).
    #[arg(short = 'b', long = "block-size", default_value = "4M", value_parser = parse_size)]
    pub size: u64,
    /// Operations in flight at once.
    #[arg(short = 't', long = "concurrent-ios", default_value_t = 16)]
    pub concurrency: usize,
    /// Keep the written objects (for `seq` and `rand`).
    #[arg(long)]
    pub no_cleanup: bool,
    /// Prefix of the benchmark's object names.
    #[arg(long, default_value = "cairn_bench")]
    pub run_name: String,
}

/// What `write --no-cleanup` leaves for the reads.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    objects: u64,
    object_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub object_bytes: u64,
    pub concurrency: usize,
    pub seconds: f64,
    pub ops: u64,
    pub bytes: u64,
    pub mib_per_s: f64,
    pub iops: f64,
    pub latency_ms: Latency,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub avg: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    Latency {
        avg: samples.iter().map(|&d| ms(d)).sum::<f64>() / samples.len() as f64,
        p50: at(0.50),
        p99: at(0.99),
        max: ms(*samples.last().expect("not empty")),
    }
}

fn object(run: &str, i: u64) -> ObjectName {
    ObjectName::new(format!("{run}_obj{i}"))
}

fn meta_name(run: &str) -> ObjectName {
    ObjectName::new(format!("{run}_meta"))
}

/// A small fast generator for `rand`'s object choice (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Runs `concurrency` workers until `seconds` pass or `next` says there is no more work;
/// each op's latency is recorded. The first error stops the run and is returned.
async fn drive<F, Fut>(
    concurrency: usize,
    seconds: u64,
    next: Arc<dyn Fn(u64) -> Option<u64> + Send + Sync>,
    op: F,
) -> Result<(Vec<Duration>, Vec<u64>, Duration)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u64>> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (op, counter, stop, next) = (op.clone(), counter.clone(), stop.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut done = Vec::new();
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let ticket = counter.fetch_add(1, Ordering::Relaxed);
                let Some(index) = next(ticket) else { break };
                let began = Instant::now();
                match op(index).await {
                    Ok(bytes) => {
                        samples.push(began.elapsed());
                        done.push(bytes);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e.context(format!("op on object {index}")));
                    }
                }
            }
            Ok((samples, done))
        }));
    }
    let mut samples = Vec::new();
    let mut bytes = Vec::new();
    for worker in workers {
        let (s, b) = worker.await.context("a bench worker panicked")??;
        samples.extend(s);
        bytes.extend(b);
    }
    Ok((samples, bytes, started.elapsed()))
}

pub async fn run(connect: &Connect, args: BenchArgs) -> Result<()> {
    if args.concurrency == 0 || args.concurrency > 1024 {
        bail!("--concurrent-ios must be 1 to 1024");
    }
    let mon = Arc::new(connect.client()?);
    let mut objects = Objects::new(mon).await?;
    objects.op_timeout = Duration::from_secs(connect.timeout.max(1));
    let objects = Arc::new(objects);
    objects.pool_id(&args.pool)?;
    let report = match args.mode {
        Mode::Write => write_run(&objects, &args).await?,
        Mode::Seq | Mode::Rand => read_run(&objects, &args).await?,
        Mode::Cleanup => return cleanup(&objects, &args).await,
    };
    match connect.format {
        Format::Json => print_json(&report)?,
        Format::Plain => print!("{}", render(&report)),
    }
    Ok(())
}

/// Writes objects of `args.size` for `args.seconds`; keeps them with a meta object for the
/// read runs (`--no-cleanup`), else removes them.
async fn write_run(objects: &Arc<Objects>, args: &BenchArgs) -> Result<Report> {
    let (pool, run) = (&args.pool, &args.run_name);
    let data = Bytes::from(vec![0x5au8; args.size as usize]);
    let (o, p, r) = (objects.clone(), pool.clone(), run.clone());
    let next: Arc<dyn Fn(u64) -> Option<u64> + Send + Sync> = Arc::new(Some);
    let (samples, done, elapsed) = drive(args.concurrency, args.seconds, next, move |i| {
        let (o, p, name, data) = (o.clone(), p.clone(), object(&r, i), data.clone());
        async move {
            let len = data.len() as u64;
            o.write_full(&p, &name, data).await?;
            Ok(len)
        }
    })
    .await?;
    // Every ticket taken is written before its worker looks at the clock again (an error
    // ends the whole run), so the objects written are 0..written.
    let written = done.len() as u64;
    if args.no_cleanup {
        let meta = Meta { objects: written, object_bytes: args.size };
        let body = Bytes::from(serde_json::to_vec(&meta)?);
        objects.write_full(pool, &meta_name(run), body).await?;
    } else {
        remove_objects(objects, pool, run, written).await?;
    }
    Ok(report(args, args.size, samples, done, elapsed))
}

/// Reads the objects a `write --no-cleanup` run left, in order or at random, for
/// `args.seconds`; each read must return the whole object.
async fn read_run(objects: &Arc<Objects>, args: &BenchArgs) -> Result<Report> {
    let (pool, run) = (&args.pool, &args.run_name);
    let meta = objects
        .read(pool, &meta_name(run), 0, 4096)
        .await
        .with_context(|| format!("no objects of a `write --no-cleanup` run '{run}'"))?;
    let meta: Meta = serde_json::from_slice(&meta).context("the bench's meta object")?;
    let count = meta.objects;
    if count == 0 {
        bail!("run '{run}' wrote no objects");
    }
    let next: Arc<dyn Fn(u64) -> Option<u64> + Send + Sync> = if args.mode == Mode::Seq {
        Arc::new(move |ticket| Some(ticket).filter(|&i| i < count))
    } else {
        Arc::new(move |ticket| {
            let mut rng = Rng(ticket.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            Some(rng.below(count))
        })
    };
    let (o, p, r, size) = (objects.clone(), pool.clone(), run.clone(), meta.object_bytes);
    let (samples, done, elapsed) = drive(args.concurrency, args.seconds, next, move |i| {
        let (o, p, name) = (o.clone(), p.clone(), object(&r, i));
        async move {
            let data = o.read(&p, &name, 0, size).await?;
            if data.len() as u64 != size {
                bail!("{name} has {} bytes, not {size}", data.len());
            }
            Ok(size)
        }
    })
    .await?;
    Ok(report(args, meta.object_bytes, samples, done, elapsed))
}

/// Removes the objects of a `write --no-cleanup` run and its meta object.
async fn cleanup(objects: &Arc<Objects>, args: &BenchArgs) -> Result<()> {
    let (pool, run) = (&args.pool, &args.run_name);
    let meta: Meta = match objects.read(pool, &meta_name(run), 0, 4096).await {
        Ok(m) => serde_json::from_slice(&m).context("the bench's meta object")?,
        Err(e) => bail!("no bench run '{run}' to clean up: {e}"),
    };
    let removed = remove_objects(objects, pool, run, meta.objects).await?;
    objects.remove(pool, &meta_name(run)).await?;
    println!("removed {removed} objects of run '{run}'");
    Ok(())
}

/// Removes `RUN_obj0..upto` (those that exist), 32 at a time. Returns how many existed.
async fn remove_objects(objects: &Arc<Objects>, pool: &str, run: &str, upto: u64) -> Result<u64> {
    use futures::StreamExt;
    let results: Vec<Result<bool>> = futures::stream::iter(0..upto)
        .map(|i| {
            let (objects, name) = (objects.clone(), object(run, i));
            async move {
                match objects.remove(pool, &name).await {
                    Ok(()) => Ok(true),
                    Err(e) if e.code() == Some(proto::error::ErrorCode::NotFound) => Ok(false),
                    Err(e) => Err(anyhow::Error::from(e).context(format!("remove {name}"))),
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut removed = 0;
    for r in results {
        removed += u64::from(r?);
    }
    Ok(removed)
}

fn report(
    args: &BenchArgs,
    object_bytes: u64,
    samples: Vec<Duration>,
    done: Vec<u64>,
    elapsed: Duration,
) -> Report {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let bytes: u64 = done.iter().sum();
    Report {
        mode: args.mode,
        object_bytes,
        concurrency: args.concurrency,
        seconds: secs,
        ops: done.len() as u64,
        bytes,
        mib_per_s: bytes as f64 / secs / (1 << 20) as f64,
        iops: done.len() as f64 / secs,
        latency_ms: latency(samples),
    }
}

pub fn render(r: &Report) -> String {
    format!(
        "{:?} of {} objects, {} in flight: {} ops in {:.2} s\n\
         bandwidth {:.1} MiB/s, {:.0} IOPS\n\
         latency ms: avg {:.2}, p50 {:.2}, p99 {:.2}, max {:.2}\n",
        r.mode,
        crate::units::bytes(r.object_bytes),
        r.concurrency,
        r.ops,
        r.seconds,
        r.mib_per_s,
        r.iops,
        r.latency_ms.avg,
        r.latency_ms.p50,
        r.latency_ms.p99,
        r.latency_ms.max
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = latency(samples);
        assert_eq!((l.p50, l.p99, l.max), (51.0, 99.0, 100.0));
        assert!((l.avg - 50.5).abs() < 1e-9);
    }
}
