//! `cairn map`: the offline map tool (Ceph's `crushtool` and `osdmaptool` in one).
//!
//! Maps are read from a binary map file (`cairn map build` writes them) or straight from a
//! TOML/JSON description, so every subcommand works on either. Nothing here talks to a
//! cluster.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use placement::analysis::{self, PoolDiff, PoolReport};
use placement::balance;
use placement::describe::{Description, Format as DescFormat, PoolDesc, synthesize};
use placement::encoding::{self, MAP_BYTES_MAX};
use placement::{Incremental, OsdMap, PoolId};
use serde::Serialize;

use crate::Format;
use crate::map_render;

#[derive(Args)]
pub struct MapArgs {
    #[command(subcommand)]
    command: MapCommand,
}

#[derive(Subcommand)]
enum MapCommand {
    /// Build a binary map from a TOML or JSON cluster description.
    Build {
        /// The description (.toml, or .json).
        description: PathBuf,
        /// Where to write the map (default: the description's name with .map).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Show a map: the CRUSH tree with OSD states, rules, pools and flags.
    Show { map: PathBuf },
    /// Map every PG and report the spread over OSDs and any failure-domain violation
    /// (like `osdmaptool --test-map-pgs`); or, with --rule, test a rule over a range of
    /// inputs (like `crushtool --test`).
    Test {
        map: PathBuf,
        /// Only these pools (by name); default all.
        #[arg(long)]
        pool: Vec<String>,
        /// Test this rule directly instead of the pools.
        #[arg(long)]
        rule: Option<String>,
        /// OSDs asked of the rule per input (with --rule).
        #[arg(long, default_value_t = 3)]
        num_rep: usize,
        /// Inputs 0..N fed to the rule (with --rule).
        #[arg(long, default_value_t = 1024)]
        inputs: u32,
        /// List every OSD's count.
        #[arg(long)]
        show_osds: bool,
    },
    /// Compare two maps: how many PGs and what fraction of the data would move, against
    /// the least any placement could move.
    Diff { old: PathBuf, new: PathBuf },
    /// Plan upmap exceptions that bring every OSD within a few PG copies of its
    /// weight-proportional share (Ceph's balancer in upmap mode), and write the balanced map.
    Balance {
        map: PathBuf,
        /// Where to write the balanced map.
        #[arg(short, long)]
        output: PathBuf,
        /// Stop when every OSD is within this many copies of its share.
        #[arg(long, default_value_t = placement::balance::MAX_DEVIATION_DEFAULT)]
        max_deviation: u32,
        /// Move at most this many PG copies.
        #[arg(long, default_value_t = placement::balance::MAX_MOVES_DEFAULT)]
        max_moves: usize,
        /// Only these pools (by name); default all.
        #[arg(long)]
        pool: Vec<String>,
    },
    /// Print a description of a regular cluster, to edit or build.
    Synth {
        /// Levels from the top with their fan-out, e.g. root=1,rack=4,host=10.
        #[arg(long, default_value = "root=1,host=10")]
        layout: String,
        /// OSDs under each lowest bucket.
        #[arg(long, default_value_t = 4)]
        osds_per_leaf: u32,
        /// Weight (capacity) of each OSD.
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
        /// Device class of every OSD.
        #[arg(long)]
        class: Option<String>,
        /// Add a replicated pool of size 3 with this name.
        #[arg(long)]
        replicated_pool: Option<String>,
        /// Add an erasure-coded pool K+M with this name, as NAME:K+M (e.g. ec:4+2).
        #[arg(long)]
        erasure_pool: Option<String>,
    },
    /// Walk through placement on a demo cluster: build, test, lose a host, add one.
    Demo {
        /// Where the demo writes its description and maps.
        #[arg(long, default_value = "cairn-data/demo")]
        dir: PathBuf,
    },
}

pub fn run(args: MapArgs, format: Format) -> Result<()> {
    match args.command {
        MapCommand::Build { description, output } => build(&description, output, format),
        MapCommand::Show { map } => {
            let map = load_map(&map)?;
            match format {
                Format::Plain => print!("{}", map_render::show(&map)),
                Format::Json => print_json(&map)?,
            }
            Ok(())
        }
        MapCommand::Test { map, pool, rule, num_rep, inputs, show_osds } => {
            let map = load_map(&map)?;
            test(&map, &pool, rule.as_deref(), num_rep, inputs, show_osds, format)
        }
        MapCommand::Diff { old, new } => {
            let (old, new) = (load_map(&old)?, load_map(&new)?);
            let diffs = analysis::diff(&old, &new);
            match format {
                Format::Plain => print!("{}", map_render::diff(&old, &new, &diffs)),
                Format::Json => print_json(&DiffOutput {
                    old_epoch: old.epoch().0,
                    new_epoch: new.epoch().0,
                    pools: &diffs,
                })?,
            }
            Ok(())
        }
        MapCommand::Synth {
            layout,
            osds_per_leaf,
            weight,
            class,
            replicated_pool,
            erasure_pool,
        } => {
            let desc = synth(
                &layout,
                osds_per_leaf,
                weight,
                class.as_deref(),
                replicated_pool,
                erasure_pool,
            )?;
            match format {
                Format::Plain => print!("{}", desc.to_toml()),
                Format::Json => print_json(&desc)?,
            }
            Ok(())
        }
        MapCommand::Balance { map, output, max_deviation, max_moves, pool } => {
            let map = load_map(&map)?;
            balance(&map, &output, max_deviation, max_moves, &pool, format)
        }
        MapCommand::Demo { dir } => crate::map_render::demo(&dir),
    }
}

#[derive(Serialize)]
struct DiffOutput<'a> {
    old_epoch: u64,
    new_epoch: u64,
    pools: &'a [PoolDiff],
}

pub(crate) fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Reads a binary map, or builds one from a description.
pub(crate) fn load_map(path: &Path) -> Result<OsdMap> {
    let meta = fs::metadata(path).with_context(|| format!("read {}", path.display()))?;
    if meta.len() > MAP_BYTES_MAX as u64 {
        bail!("{} is {} bytes; maps are at most {MAP_BYTES_MAX}", path.display(), meta.len());
    }
    let bytes = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    if encoding::looks_like_map(&bytes) {
        return encoding::decode_map(&bytes)
            .with_context(|| format!("decode map {}", path.display()));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!("{} is neither a cairn map nor a UTF-8 description", path.display())
    })?;
    let desc = Description::parse(&text, DescFormat::from_path(path))
        .with_context(|| format!("parse description {}", path.display()))?;
    desc.build().with_context(|| format!("build map from {}", path.display()))
}

#[derive(Serialize)]
struct BuildOutput {
    path: PathBuf,
    epoch: u64,
    osds: usize,
    buckets: usize,
    rules: usize,
    pools: usize,
}

fn build(description: &Path, output: Option<PathBuf>, format: Format) -> Result<()> {
    let map = load_map(description)?;
    let output = output.unwrap_or_else(|| description.with_extension("map"));
    if output == description {
        bail!("refusing to overwrite the description {}; give -o", description.display());
    }
    fs::write(&output, encoding::encode_map(&map)?)
        .with_context(|| format!("write {}", output.display()))?;
    let contents = map.contents();
    let built = BuildOutput {
        path: output,
        epoch: map.epoch().0,
        osds: contents.osds.len(),
        buckets: contents.crush.buckets.len(),
        rules: contents.crush.rules.len(),
        pools: contents.pools.len(),
    };
    match format {
        Format::Plain => println!(
            "wrote {}: epoch {}, {} OSDs, {} buckets, {} rules, {} pools",
            built.path.display(),
            built.epoch,
            built.osds,
            built.buckets,
            built.rules,
            built.pools
        ),
        Format::Json => print_json(&built)?,
    }
    Ok(())
}

#[derive(Serialize)]
struct TestOutput {
    epoch: u64,
    pools: Vec<PoolReport>,
    rule: Option<RuleTest>,
}

#[derive(Serialize)]
struct RuleTest {
    rule: String,
    num_rep: usize,
    distribution: analysis::Distribution,
}

fn test(
    map: &OsdMap,
    pools: &[String],
    rule: Option<&str>,
    num_rep: usize,
    inputs: u32,
    show_osds: bool,
    format: Format,
) -> Result<()> {
    let mut output = TestOutput { epoch: map.epoch().0, pools: Vec::new(), rule: None };
    if let Some(name) = rule {
        let rule = map.crush().rule_by_name(name).with_context(|| format!("no rule '{name}'"))?;
        let distribution = analysis::test_rule(map, rule.id, num_rep, inputs)?;
        output.rule = Some(RuleTest { rule: name.to_owned(), num_rep, distribution });
    } else {
        let selected: Vec<_> = if pools.is_empty() {
            map.contents().pools.keys().copied().collect()
        } else {
            pool_ids(map, pools)?
        };
        if selected.is_empty() {
            bail!("the map has no pools; name a rule to test with --rule");
        }
        output.pools = selected.into_iter().filter_map(|id| analysis::test_pool(map, id)).collect();
    }
    match format {
        Format::Plain => print!(
            "{}",
            map_render::test(
                &output.pools,
                output.rule.as_ref().map(|r| (&r.rule[..], r.num_rep, &r.distribution)),
                show_osds
            )
        ),
        Format::Json => print_json(&output)?,
    }
    Ok(())
}

/// Resolves pool names, failing on the first unknown one.
fn pool_ids(map: &OsdMap, names: &[String]) -> Result<Vec<PoolId>> {
    names
        .iter()
        .map(|name| Ok(map.pool_by_name(name).with_context(|| format!("no pool '{name}'"))?.id))
        .collect()
}

fn balance(
    map: &OsdMap,
    output: &Path,
    max_deviation: u32,
    max_moves: usize,
    pools: &[String],
    format: Format,
) -> Result<()> {
    let options = balance::Options { max_deviation, max_moves, pools: pool_ids(map, pools)? };
    let plan = balance::plan(map, &options);
    let balanced = if plan.changes.is_empty() {
        map.clone()
    } else {
        map.apply(&Incremental::new(map, plan.changes.clone()))
            .context("apply the balancer's changes")?
    };
    fs::write(output, encoding::encode_map(&balanced)?)
        .with_context(|| format!("write {}", output.display()))?;
    match format {
        Format::Plain => {
            print!("{}", map_render::balance(&plan));
            println!("wrote {} (epoch {})", output.display(), balanced.epoch());
        }
        Format::Json => print_json(&plan)?,
    }
    Ok(())
}

fn synth(
    layout: &str,
    osds_per_leaf: u32,
    weight: f64,
    class: Option<&str>,
    replicated_pool: Option<String>,
    erasure_pool: Option<String>,
) -> Result<Description> {
    let mut levels = Vec::new();
    for part in layout.split(',') {
        let (name, fanout) = part
            .split_once('=')
            .with_context(|| format!("layout part '{part}' is not TYPE=COUNT"))?;
        let fanout: u32 =
            fanout.parse().with_context(|| format!("'{fanout}' in layout is not a count"))?;
        if fanout == 0 || fanout > 100_000 {
            bail!("layout count {fanout} for '{name}' is not in 1..=100000");
        }
        levels.push((name.trim().to_owned(), fanout));
    }
    let mut desc = synthesize(&levels, osds_per_leaf, weight, class)?;
    if let Some(name) = replicated_pool {
        desc.pools.push(PoolDesc::replicated(&name, 3));
    }
    if let Some(spec) = erasure_pool {
        let (name, km) = spec.split_once(':').context("--erasure-pool is NAME:K+M")?;
        let (k, m) = km.split_once('+').context("--erasure-pool is NAME:K+M")?;
        let k = k.parse().context("K is a number")?;
        let m = m.parse().context("M is a number")?;
        desc.pools.push(PoolDesc::erasure(name, k, m));
    }
    // Fail here rather than when the output is built.
    desc.build().context("the synthesized description does not build")?;
    Ok(desc)
}
