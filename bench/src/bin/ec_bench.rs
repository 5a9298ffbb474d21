//! Erasure-code benchmark: cairn's codec (reed-solomon-simd behind `ec::Codec`) next to
//! reed-solomon-erasure 6 (pure Rust, its default build), on one core.
//!
//!     cargo run --release -p cairn-bench --bin ec-bench [-- --quick]
//!
//! For k=2 m=1 and k=4 m=2 and shards of 4 KiB, 64 KiB and 1 MiB it prints encode and
//! decode throughput in GB of data per CPU-second: encode makes the m parity shards of k
//! data shards; decode rebuilds m lost data shards from the rest (the worst case a read
//! or recovery meets). It also times the stripe planner's whole write path for a 4 MiB
//! write (split into stripes of 4 KiB chunks, encode, parity) to show what the OSD pays.

use std::hint::black_box;
use std::time::Duration;

use anyhow::Result;
use ec::{Codec, Layout};
use reed_solomon_erasure::galois_8::ReedSolomon;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` until `budget` of CPU time is spent; GB of `bytes` per CPU-second.
fn rate(budget: Duration, bytes: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up: allocations, tables, SIMD dispatch
    let (start, mut rounds) = (thread_cpu(), 0u64);
    while thread_cpu() - start < budget {
        f();
        rounds += 1;
    }
    (bytes as f64 * rounds as f64) / (thread_cpu() - start).as_secs_f64() / 1e9
}

fn data(k: usize, len: usize) -> Vec<Vec<u8>> {
    (0..k)
        .map(|i| (0..len).map(|j| (j as u8).wrapping_mul(13).wrapping_add(i as u8)).collect())
        .collect()
}

/// One row: encode and decode GB/s for both libraries, without allocating per call.
fn row(k: usize, m: usize, len: usize, budget: Duration) -> Result<[f64; 4]> {
    let shards = data(k, len);
    let bytes = k * len;
    let mut encoder = ReedSolomonEncoder::new(k, m, len)?;
    let simd_enc = rate(budget, bytes, || {
        encoder.reset(k, m, len).expect("reset");
        for s in &shards {
            encoder.add_original_shard(s).expect("add");
        }
        black_box(encoder.encode().expect("encode").recovery(0).map(|r| r[0]));
    });
    let parity: Vec<Vec<u8>> = {
        encoder.reset(k, m, len)?;
        for s in &shards {
            encoder.add_original_shard(s)?;
        }
        encoder.encode()?.recovery_iter().map(<[u8]>::to_vec).collect()
    };
    // The worst case: the first m data shards lost, rebuilt from the rest and parity.
    let mut decoder = ReedSolomonDecoder::new(k, m, len)?;
    let simd_dec = rate(budget, bytes, || {
        decoder.reset(k, m, len).expect("reset");
        for (i, s) in shards.iter().enumerate().skip(m) {
            decoder.add_original_shard(i, s).expect("add");
        }
        for (j, p) in parity.iter().enumerate() {
            decoder.add_recovery_shard(j, p).expect("add");
        }
        black_box(decoder.decode().expect("decode").restored_original(0).map(|r| r[0]));
    });
    let rse = ReedSolomon::new(k, m)?;
    let mut all: Vec<Vec<u8>> =
        shards.iter().cloned().chain((0..m).map(|_| vec![0; len])).collect();
    let rse_enc = rate(budget, bytes, || rse.encode(black_box(&mut all)).expect("encode"));
    let rse_dec = rate(budget, bytes, || {
        let mut slices: Vec<(&mut [u8], bool)> =
            all.iter_mut().enumerate().map(|(i, s)| (s.as_mut_slice(), i >= m)).collect();
        rse.reconstruct_data(&mut slices).expect("decode");
        black_box(slices[0].0[0]);
    });
    Ok([simd_enc, simd_dec, rse_enc, rse_dec])
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 100 } else { 1000 });
    println!("# ec-bench: GB of data per CPU-second, one thread, no allocation per call");
    println!(
        "{:<6} {:>8} | {:>10} {:>10} | {:>10} {:>10} | {:>6} {:>6}",
        "code", "shard", "simd enc", "simd dec", "rse enc", "rse dec", "enc x", "dec x"
    );
    for (k, m) in [(2usize, 1usize), (4, 2)] {
        for len in [4 << 10, 64 << 10, 1 << 20] {
            let [se, sd, re, rd] = row(k, m, len, budget)?;
            println!(
                "{:<6} {:>8} | {se:>10.2} {sd:>10.2} | {re:>10.2} {rd:>10.2} | {:>6.1} {:>6.1}",
                format!("{k}+{m}"),
                format!("{} KiB", len >> 10),
                se / re,
                sd / rd
            );
        }
    }
    println!("# what the OSD pays, allocations included (glibc defaults):");
    for (k, m) in [(2usize, 1usize), (4, 2)] {
        let layout = Layout::new(k, m, ec::stripe::DEFAULT_CHUNK)?;
        let codec = Codec::new(k, m)?;
        let payload = vec![7u8; 4 << 20];
        let write = rate(budget, payload.len(), || {
            let plan = layout.plan_write(0, 0, payload.len() as u64).expect("plan");
            black_box(layout.encode_write(&plan, 0, &payload, &[]).expect("encode"));
        });
        let small = vec![7u8; 4096];
        let overwrite = rate(budget, small.len(), || {
            let plan = layout.plan_write(1 << 20, 8192, 4096).expect("plan");
            let old: Vec<Vec<u8>> =
                plan.read.iter().map(|r| vec![1u8; (r.end - r.start) as usize]).collect();
            black_box(layout.encode_write(&plan, 8192, &small, &old).expect("encode"));
        });
        let shards = data(k, 1 << 20);
        let refs: Vec<&[u8]> = shards.iter().map(Vec::as_slice).collect();
        let parity = codec.encode(&refs)?;
        let all: Vec<Vec<u8>> = shards.iter().cloned().chain(parity).collect();
        let rebuild = rate(budget, k << 20, || {
            let mut partial: Vec<Option<Vec<u8>>> =
                all.iter().enumerate().map(|(i, s)| (i >= m).then(|| s.clone())).collect();
            codec.reconstruct(&mut partial).expect("decode");
            black_box(partial);
        });
        println!(
            "{k}+{m}: 4 MiB write {write:.2} GB/s; 4 KiB overwrite (read-modify-write of its \
             stripe) {:.0} /s; rebuild of {m} lost 1 MiB data shards {rebuild:.2} GB/s",
            overwrite * 1e9 / 4096.0
        );
    }
    Ok(())
}
