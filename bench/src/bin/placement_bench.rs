//! Placement benchmark: cairn's mapper next to Ceph's `crushtool --test` (Debian package
//! `ceph-base`) on the same hierarchies, measured in the same run.
//!
//!     cargo run --release -p cairn-bench --bin placement-bench [-- --quick] [--crushtool PATH]
//!
//! It prints, for maps of 100 and 10,000 OSDs: mappings per second on one core for a
//! replicated rule (3 copies on distinct hosts) and an erasure rule (6 shards on distinct
//! hosts); the time to map 1M PGs of a pool; the spread of copies over OSDs; and the data
//! moved when 1% capacity is added, against the least possible. Both tools map the same
//! inputs `x = 0..n` with the same rules; cairn's hash functions differ from Ceph's, so the
//! individual placements differ while the statistics are comparable.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use placement::describe::{Description, OsdDesc, PoolDesc, RuleDesc};
use placement::{OsdMap, PoolId, RuleId, RuleKind};

const REPLICAS: usize = 3;
const SHARDS: usize = 6;
/// crushtool's marker for a hole.
const CRUSH_ITEM_NONE: u32 = 0x7fff_ffff;

/// Hosts and the OSDs in each; every OSD has weight 1.
struct Layout {
    name: &'static str,
    hosts: Vec<u32>,
}

impl Layout {
    fn osds(&self) -> u32 {
        self.hosts.iter().sum()
    }

    /// The same layout with `extra` more hosts of `per_host` OSDs.
    fn grown(&self, extra: usize, per_host: u32) -> Layout {
        let mut hosts = self.hosts.clone();
        hosts.extend(std::iter::repeat_n(per_host, extra));
        Layout { name: self.name, hosts }
    }

    fn description(&self) -> Description {
        let mut desc = Description::default();
        let mut id = 0;
        for (h, &n) in self.hosts.iter().enumerate() {
            for _ in 0..n {
                desc.osds.push(OsdDesc {
                    id,
                    weight: 1.0,
                    class: None,
                    location: [
                        ("root".into(), "default".into()),
                        ("host".into(), format!("host{h}")),
                    ]
                    .into(),
                    up: true,
                    is_in: true,
                    reweight: 1.0,
                });
                id += 1;
            }
        }
        for (name, kind) in
            [("replicated_rule", RuleKind::Replicated), ("erasure_rule", RuleKind::Erasure)]
        {
            let domain = Some("host".into());
            desc.rules.push(RuleDesc {
                name: name.into(),
                kind,
                root: None,
                failure_domain: domain,
                class: None,
                steps: None,
            });
        }
        desc
    }

    /// The equivalent Ceph text map: straw2 everywhere, Ceph's optimal tunables, the
    /// rules Ceph creates for replicated pools and EC profiles.
    fn crush_text(&self) -> String {
        let mut t = String::from(
            "tunable choose_local_tries 0\ntunable choose_local_fallback_tries 0\n\
             tunable choose_total_tries 50\ntunable chooseleaf_descend_once 1\n\
             tunable chooseleaf_vary_r 1\ntunable chooseleaf_stable 1\n\
             tunable straw_calc_version 1\ntunable allowed_bucket_algs 54\n\n",
        );
        for id in 0..self.osds() {
            let _ = writeln!(t, "device {id} osd.{id}");
        }
        t += "\ntype 0 osd\ntype 1 host\ntype 2 root\n\n";
        let mut id = 0;
        for (h, &n) in self.hosts.iter().enumerate() {
            let _ = writeln!(t, "host host{h} {{\n\tid -{}\n\talg straw2\n\thash 0", h + 1);
            for _ in 0..n {
                let _ = writeln!(t, "\titem osd.{id} weight 1.000");
                id += 1;
            }
            t += "}\n";
        }
        let _ =
            writeln!(t, "root default {{\n\tid -{}\n\talg straw2\n\thash 0", self.hosts.len() + 1);
        for (h, &n) in self.hosts.iter().enumerate() {
            let _ = writeln!(t, "\titem host{h} weight {n}.000");
        }
        t += "}\n\n";
        t += "rule replicated_rule {\n\tid 0\n\ttype replicated\n\tmin_size 1\n\tmax_size 10\n\tstep take default\n\
              \tstep chooseleaf firstn 0 type host\n\tstep emit\n}\n";
        t += "rule erasure_rule {\n\tid 1\n\ttype erasure\n\tmin_size 3\n\tmax_size 20\n\tstep set_chooseleaf_tries 5\n\
              \tstep set_choose_tries 100\n\tstep take default\n\
              \tstep chooseleaf indep 0 type host\n\tstep emit\n}\n";
        t
    }
}

struct Crushtool {
    path: PathBuf,
    dir: tempfile::TempDir,
}

impl Crushtool {
    fn find(path: &str) -> Option<Crushtool> {
        let ok = Command::new(path).arg("--help").output().is_ok();
        ok.then(|| Crushtool { path: path.into(), dir: tempfile::tempdir().expect("temp dir") })
    }

    /// Compiles a layout's map; returns its path.
    fn compile(&self, layout: &Layout, tag: &str) -> Result<PathBuf> {
        let text = self.dir.path().join(format!("{tag}.txt"));
        let map = self.dir.path().join(format!("{tag}.map"));
        std::fs::write(&text, layout.crush_text())?;
        self.run(&["-c", path_str(&text)?, "-o", path_str(&map)?])?;
        Ok(map)
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.path).args(args).output().context("run crushtool")?;
        if !out.status.success() {
            bail!("crushtool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn test_args(map: &Path, rule: u32, num_rep: usize, inputs: u32) -> Vec<String> {
        vec![
            "-i".into(),
            map.display().to_string(),
            "--test".into(),
            "--rule".into(),
            rule.to_string(),
            "--num-rep".into(),
            num_rep.to_string(),
            "--min-x".into(),
            "0".into(),
            "--max-x".into(),
            (inputs - 1).to_string(),
        ]
    }

    /// Mappings per second of `crushtool --test` (no output asked, so it only maps).
    fn rate(&self, map: &Path, rule: u32, num_rep: usize, inputs: u32) -> Result<f64> {
        let args = Self::test_args(map, rule, num_rep, inputs);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = Instant::now();
        self.run(&args)?;
        Ok(f64::from(inputs) / start.elapsed().as_secs_f64())
    }

    /// Every input's result, from `--show-mappings`.
    fn mappings(
        &self,
        map: &Path,
        rule: u32,
        num_rep: usize,
        inputs: u32,
    ) -> Result<Vec<Vec<Option<u32>>>> {
        let mut args = Self::test_args(map, rule, num_rep, inputs);
        args.push("--show-mappings".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(&args)?;
        let mut sets = Vec::with_capacity(inputs as usize);
        for line in out.lines().filter(|l| l.starts_with("CRUSH rule")) {
            let list = line
                .rsplit_once('[')
                .and_then(|(_, r)| r.strip_suffix(']'))
                .context("mapping line")?;
            let set = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u32>().map(|o| (o != CRUSH_ITEM_NONE).then_some(o)))
                .collect::<Result<Vec<_>, _>>()?;
            sets.push(set);
        }
        if sets.len() != inputs as usize {
            bail!("crushtool printed {} mappings for {inputs} inputs", sets.len());
        }
        Ok(sets)
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("non-UTF-8 temp path")
}

fn cairn_map(layout: &Layout) -> Result<OsdMap> {
    Ok(layout.description().build()?)
}

fn rule(map: &OsdMap, name: &str) -> RuleId {
    map.crush().rule_by_name(name).expect("bench rules exist").id
}

/// Median of three runs of `inputs` mappings, in mappings per second.
fn cairn_rate(map: &OsdMap, rule: RuleId, width: usize, inputs: u32) -> f64 {
    let mut rates: Vec<f64> = (0..3)
        .map(|_| {
            let start = Instant::now();
            let mut checksum = 0u64;
            for x in 0..inputs {
                let set = map.rule_mapping(rule, x, width).expect("valid rule");
                checksum = checksum.wrapping_add(u64::from(set.primary().map_or(0, |o| o.0)));
            }
            std::hint::black_box(checksum);
            f64::from(inputs) / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[1]
}

fn cairn_mappings(map: &OsdMap, rule: RuleId, width: usize, inputs: u32) -> Vec<Vec<Option<u32>>> {
    (0..inputs)
        .map(|x| {
            map.rule_mapping(rule, x, width)
                .expect("valid rule")
                .iter()
                .map(|o| o.map(|o| o.0))
                .collect()
        })
        .collect()
}

/// Standard deviation and extremes of per-OSD copies relative to an equal share, in %.
fn spread(sets: &[Vec<Option<u32>>], osds: u32) -> (f64, f64, f64) {
    let mut counts = vec![0u64; osds as usize];
    for set in sets {
        for osd in set.iter().flatten() {
            counts[*osd as usize] += 1;
        }
    }
    let expected = counts.iter().sum::<u64>() as f64 / f64::from(osds);
    let deviations: Vec<f64> = counts.iter().map(|&c| (c as f64 - expected) / expected).collect();
    let stddev = (deviations.iter().map(|d| d * d).sum::<f64>() / f64::from(osds)).sqrt();
    let max = deviations.iter().copied().fold(f64::MIN, f64::max);
    let min = deviations.iter().copied().fold(f64::MAX, f64::min);
    (stddev * 100.0, max * 100.0, min * 100.0)
}

/// Fraction of copies that land on an OSD that did not hold them (positions count for
/// erasure sets), and how many of those land on OSDs that existed before.
fn movement(
    before: &[Vec<Option<u32>>],
    after: &[Vec<Option<u32>>],
    positional: bool,
    old_osds: u32,
) -> (f64, u64) {
    let (mut copies, mut moved, mut onto_old) = (0u64, 0u64, 0u64);
    for (old, new) in before.iter().zip(after) {
        copies += new.iter().flatten().count() as u64;
        let arrived: Vec<u32> = if positional {
            new.iter()
                .enumerate()
                .filter_map(|(i, o)| o.filter(|&o| old.get(i).copied().flatten() != Some(o)))
                .collect()
        } else {
            let old: BTreeSet<u32> = old.iter().flatten().copied().collect();
            new.iter().flatten().copied().filter(|o| !old.contains(o)).collect()
        };
        moved += arrived.len() as u64;
        onto_old += arrived.iter().filter(|&&o| o < old_osds).count() as u64;
    }
    (moved as f64 / copies as f64, onto_old)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let crushtool_path = args
        .windows(2)
        .find(|w| w[0] == "--crushtool")
        .map_or("crushtool".to_owned(), |w| w[1].clone());
    let scale = if quick { 10 } else { 1 };
    let crushtool = Crushtool::find(&crushtool_path);
    if crushtool.is_none() {
        println!(
            "crushtool not found ({crushtool_path}); install Debian's ceph-base for the reference columns"
        );
    }

    let small = Layout { name: "100 OSDs (10 hosts x 10)", hosts: vec![10; 10] };
    let large = Layout { name: "10,000 OSDs (1,000 hosts x 10)", hosts: vec![10; 1000] };
    let mixed = Layout {
        name: "10,000 OSDs (1,000 hosts of 8-12)",
        hosts: (0..1000).map(|h| 8 + h % 5).collect(),
    };

    println!("## Mapping throughput, one core (inputs x = 0..n, median of 3 for cairn)\n");
    println!("| map | rule | cairn mappings/s | crushtool mappings/s | ratio |");
    println!("|---|---|---:|---:|---:|");
    for (layout, cairn_inputs, ceph_inputs) in
        [(&small, 2_000_000, 1_000_000), (&large, 500_000, 40_000), (&mixed, 500_000, 40_000)]
    {
        let map = cairn_map(layout)?;
        let ceph = crushtool.as_ref().map(|c| c.compile(layout, "rate")).transpose()?;
        for (name, ceph_rule, width) in
            [("replicated_rule", 0, REPLICAS), ("erasure_rule", 1, SHARDS)]
        {
            let ours = cairn_rate(&map, rule(&map, name), width, cairn_inputs / scale);
            let theirs = match (&crushtool, &ceph) {
                (Some(c), Some(m)) => Some(c.rate(m, ceph_rule, width, ceph_inputs / scale)?),
                _ => None,
            };
            println!(
                "| {} | {name} ({width}) | {:.0} | {} | {} |",
                layout.name,
                ours,
                theirs.map_or("-".into(), |t| format!("{t:.0}")),
                theirs.map_or("-".into(), |t| format!("{:.0}x", ours / t))
            );
        }
    }

    // A pool's full remap: every PG of a 1M-PG pool, as a daemon does on a new map.
    let mut desc = large.description();
    let pool = PoolDesc::replicated("big", 3).with_pg_num((1 << 20) / scale as u32);
    desc.pools.push(PoolDesc { rule: Some("replicated_rule".into()), ..pool });
    let map = desc.build()?;
    let pool = map.pool(PoolId(1)).expect("pool").clone();
    let start = Instant::now();
    let mut checksum = 0u64;
    for pg in map.pgs(&pool) {
        checksum =
            checksum.wrapping_add(u64::from(map.pg_mapping(pg)?.up_primary.map_or(0, |o| o.0)));
    }
    std::hint::black_box(checksum);
    let took = start.elapsed();
    println!(
        "\nFull remap: {} PGs (size 3) on {}: {:.2} s on one core ({:.0} PGs/s; up and acting sets)",
        pool.pg_num,
        large.name,
        took.as_secs_f64(),
        f64::from(pool.pg_num) / took.as_secs_f64()
    );

    println!("\n## Spread and data movement (the same inputs for both tools)\n");
    println!(
        "Spread: per-OSD copies against an equal share (ideal random hashing gives \
         sqrt((1 - 1/osds) / mean copies)). Movement: copies that land on an OSD that did not \
         hold them (erasure shards by position) when hosts are added, against the new OSDs' \
         share of the grown cluster, the least any placement can move.\n"
    );
    println!(
        "| map, change | rule | tool | spread stddev (ideal) | worst over / under | copies moved | vs least | copies onto old OSDs |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    let small_grown = small.grown(1, 10);
    let large_grown = large.grown(10, 10);
    let cases = [
        (&small, &small_grown, "100 OSDs, +1 host (+10%)", 200_000 / scale as u32),
        (&large, &large_grown, "10,000 OSDs, +10 hosts (+1%)", 100_000 / scale as u32),
    ];
    for (before_layout, after_layout, label, inputs) in cases {
        compare(crushtool.as_ref(), before_layout, after_layout, label, inputs)?;
    }
    Ok(())
}

/// One row per rule and tool: spread on `before`, movement from `before` to `after`.
fn compare(
    crushtool: Option<&Crushtool>,
    before_layout: &Layout,
    after_layout: &Layout,
    label: &str,
    inputs: u32,
) -> Result<()> {
    let (map, grown_map) = (cairn_map(before_layout)?, cairn_map(after_layout)?);
    let ceph_maps = match crushtool {
        Some(c) => Some((c.compile(before_layout, "before")?, c.compile(after_layout, "after")?)),
        None => None,
    };
    let osds = before_layout.osds();
    let ideal = 100.0 * f64::from(after_layout.osds() - osds) / f64::from(after_layout.osds());
    for (name, ceph_rule, width, positional) in
        [("replicated_rule", 0u32, REPLICAS, false), ("erasure_rule", 1, SHARDS, true)]
    {
        let mut rows = vec![(
            "cairn",
            cairn_mappings(&map, rule(&map, name), width, inputs),
            cairn_mappings(&grown_map, rule(&grown_map, name), width, inputs),
        )];
        if let (Some(c), Some((before, after))) = (crushtool, &ceph_maps) {
            rows.push((
                "crushtool",
                c.mappings(before, ceph_rule, width, inputs)?,
                c.mappings(after, ceph_rule, width, inputs)?,
            ));
        }
        let mean = f64::from(inputs) * width as f64 / f64::from(osds);
        let random = 100.0 * ((1.0 - 1.0 / f64::from(osds)) / mean).sqrt();
        for (tool, before, after) in rows {
            let (stddev, over, under) = spread(&before, osds);
            let (moved, onto_old) = movement(&before, &after, positional, osds);
            println!(
                "| {label} | {name} ({width}) | {tool} | {stddev:.1}% ({random:.1}%) | \
                 {over:+.1}% / {under:+.1}% | {:.3}% | {:.2}x | {onto_old} |",
                moved * 100.0,
                moved * 100.0 / ideal
            );
        }
    }
    Ok(())
}
