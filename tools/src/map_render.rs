//! Human output of `cairn map`: the tree, test reports and diffs as tables and sentences,
//! and the guided demo.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use placement::analysis::{self, Distribution, PoolDiff, PoolReport};
use placement::describe::{Description, PoolDesc, format_uuid, synthesize};
use placement::{Incremental, ItemId, MapChange, OsdMap, PoolKind, encoding};

/// How many OSDs a diff names per direction.
const DIFF_OSDS_SHOWN: usize = 8;

/// The CRUSH tree with OSD states, like `ceph osd tree`.
pub fn tree(map: &OsdMap) -> String {
    let mut out = format!(
        "{:<12} {:<6} {:>10}  {:<32} {:<6} {:>8}\n",
        "ID", "CLASS", "WEIGHT", "TYPE NAME", "STATUS", "REWEIGHT"
    );
    for root in map.crush().roots() {
        tree_lines(map, root.into(), 0, &mut out);
    }
    out
}

pub fn show(map: &OsdMap) -> String {
    let c = map.contents();
    let mut out = String::new();
    let up = c.osds.values().filter(|s| s.up).count();
    let is_in = c.osds.values().filter(|s| s.is_in).count();
    let flags: Vec<&str> = c.flags.iter().map(|f| f.name()).collect();
    let _ = writeln!(
        out,
        "cluster {}  epoch {}  {} OSDs: {up} up, {is_in} in  flags: {}",
        format_uuid(&c.fsid),
        map.epoch(),
        c.osds.len(),
        if flags.is_empty() { "none".into() } else { flags.join(",") }
    );
    out.push('\n');
    out.push_str(&tree(map));
    let unplaced: Vec<String> =
        c.osds.keys().filter(|o| !c.crush.devices.contains_key(o)).map(|o| o.to_string()).collect();
    if !unplaced.is_empty() {
        let _ = writeln!(out, "not in CRUSH (get no data): {}", unplaced.join(", "));
    }
    let _ = writeln!(out, "\nrules:");
    for rule in c.crush.rules.values() {
        let steps: Vec<String> = rule.steps.iter().map(|s| c.crush.step_text(s)).collect();
        let _ = writeln!(
            out,
            "  {} {} ({}): {}",
            rule.id,
            rule.name,
            rule.kind.name(),
            steps.join("; ")
        );
    }
    let _ = writeln!(out, "\npools:");
    if c.pools.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for pool in c.pools.values() {
        let rule = c.crush.rules.get(&pool.rule).map_or("?", |r| r.name.as_str());
        let kind = match &pool.kind {
            PoolKind::Replicated { size, min_size } => {
                format!("replicated size {size} min_size {min_size}")
            }
            PoolKind::Erasure { profile, k, m, min_size } => {
                format!("erasure k={k} m={m} (profile {profile}) min_size {min_size}")
            }
        };
        let _ = writeln!(
            out,
            "  {} '{}' {kind} rule '{rule}' pg_num {} pgp_num {}",
            pool.id, pool.name, pool.pg_num, pool.pgp_num
        );
    }
    if !c.pg_upmap_items.is_empty() || !c.pg_temp.is_empty() {
        let _ = writeln!(
            out,
            "\n{} pg_upmap_items, {} pg_temp entries",
            c.pg_upmap_items.len(),
            c.pg_temp.len()
        );
    }
    out
}

fn tree_lines(map: &OsdMap, item: ItemId, depth: usize, out: &mut String) {
    let c = map.contents();
    let indent = "  ".repeat(depth);
    match (item.osd(), item.bucket()) {
        (Some(osd), _) => {
            let device = &c.crush.devices[&osd];
            let state = c.osds.get(&osd);
            let status = state.map_or("?", |s| if s.up { "up" } else { "down" });
            let reweight = state.map_or("?".into(), |s| {
                if s.is_in { s.reweight.to_string() } else { "out".into() }
            });
            let _ = writeln!(
                out,
                "{:<12} {:<6} {:>10}  {:<32} {:<6} {:>8}",
                osd.0,
                device.class.as_deref().unwrap_or("-"),
                device.weight.to_string(),
                format!("{indent}{osd}"),
                status,
                reweight
            );
        }
        (_, Some(bucket)) => {
            let b = &c.crush.buckets[&bucket];
            let weight = c.crush.subtree_weight(item, None) as f64 / 65536.0;
            let name = format!("{indent}{} {}", c.crush.type_name(b.type_id), b.name);
            let _ = writeln!(out, "{:<12} {:<6} {:>10.5}  {:<32}", bucket.0, "", weight, name);
            for &child in &b.children {
                tree_lines(map, child, depth + 1, out);
            }
        }
        _ => {}
    }
}

pub fn test(
    pools: &[PoolReport],
    rule: Option<(&str, usize, &Distribution)>,
    show_osds: bool,
) -> String {
    let mut out = String::new();
    for report in pools {
        let _ = writeln!(
            out,
            "pool '{}' (id {}): {} PGs x {}, rule '{}', failure domain {}",
            report.pool,
            report.id,
            report.pg_num,
            report.size,
            report.rule,
            report.distribution.failure_domain
        );
        let _ = match report.split_to {
            Some(n) => writeln!(
                out,
                "  pg_num {} is too few for the OSDs under its rule: split to {n}",
                report.pg_num
            ),
            None => writeln!(
                out,
                "  pg_num {} (the autoscaler's choice: {})",
                report.pg_num, report.ideal_pg_num
            ),
        };
        distribution(&report.distribution, show_osds, &mut out);
    }
    if let Some((name, num_rep, dist)) = rule {
        let _ = writeln!(
            out,
            "rule '{name}': inputs 0..{} x {num_rep} OSDs, failure domain {}",
            dist.inputs, dist.failure_domain
        );
        distribution(dist, show_osds, &mut out);
    }
    out
}

fn distribution(d: &Distribution, show_osds: bool, out: &mut String) {
    let _ = writeln!(
        out,
        "  placed {} of {} copies; short sets {}; failure-domain violations {}",
        d.placed,
        d.inputs * d.width as u64,
        d.short,
        d.violations
    );
    let candidates: Vec<_> = d.per_osd.iter().filter(|o| o.expected > 0.0).collect();
    if let (Some(min), Some(max)) =
        (candidates.iter().min_by_key(|o| o.count), candidates.iter().max_by_key(|o| o.count))
    {
        let avg = d.placed as f64 / candidates.len() as f64;
        let _ = writeln!(
            out,
            "  copies per OSD over {} OSDs: avg {avg:.1}, min {} ({}), max {} ({})",
            candidates.len(),
            min.count,
            min.osd,
            max.count,
            max.osd
        );
        let _ = writeln!(
            out,
            "  deviation from weight-proportional: stddev {:.1}% (ideal random hashing: {:.1}%), \
             worst {:+.1}% / {:+.1}%",
            d.stddev_pct, d.random_stddev_pct, d.max_over_pct, d.max_under_pct
        );
    }
    for example in &d.bad_examples {
        let _ = writeln!(out, "  bad: {example}");
    }
    if show_osds {
        let _ = writeln!(
            out,
            "  {:<10} {:>9} {:>10} {:>7} {:>8} {:>8}",
            "OSD", "WEIGHT", "EXPECTED", "COPIES", "PRIMARY", "DEV%"
        );
        for o in &d.per_osd {
            let _ = writeln!(
                out,
                "  {:<10} {:>9.5} {:>10.1} {:>7} {:>8} {:>+8.1}",
                o.osd.to_string(),
                o.weight,
                o.expected,
                o.count,
                o.primary,
                o.deviation_pct
            );
        }
    }
}

pub fn diff(old: &OsdMap, new: &OsdMap, diffs: &[PoolDiff]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "epoch {} -> {}", old.epoch(), new.epoch());
    for d in diffs {
        if let Some(reason) = &d.not_comparable {
            let _ = writeln!(out, "pool '{}' (id {}): not compared: {reason}", d.pool, d.id);
            continue;
        }
        let ratio = if d.ideal_fraction > 0.0 {
            format!("{:.2}x", d.fraction_moved / d.ideal_fraction)
        } else if d.copies_moved == 0 {
            "-".into()
        } else {
            "above zero".into()
        };
        let _ = writeln!(
            out,
            "pool '{}' (id {}): {} of {} PGs change; {} of {} copies move ({:.2}%); \
             least possible {:.2}% (ratio {ratio})",
            d.pool,
            d.id,
            d.pgs_changed,
            d.pgs,
            d.copies_moved,
            d.copies,
            d.fraction_moved * 100.0,
            d.ideal_fraction * 100.0
        );
        let name = |m: &std::collections::BTreeMap<placement::OsdId, u64>| {
            let mut v: Vec<_> = m.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let mut parts: Vec<String> =
                v.iter().take(DIFF_OSDS_SHOWN).map(|(o, n)| format!("{o} ({n})")).collect();
            if v.len() > DIFF_OSDS_SHOWN {
                parts.push(format!("and {} more", v.len() - DIFF_OSDS_SHOWN));
            }
            parts.join(", ")
        };
        if !d.moved_to.is_empty() {
            let _ = writeln!(out, "  copies arrive on: {}", name(&d.moved_to));
            let _ = writeln!(out, "  copies leave:     {}", name(&d.moved_from));
        }
    }
    out
}

pub fn balance(plan: &placement::balance::Plan) -> String {
    let mut out = String::new();
    for pool in &plan.pools {
        if let Some(reason) = &pool.skipped {
            let _ = writeln!(out, "pool '{}' (id {}): left alone: {reason}", pool.pool, pool.id);
            continue;
        }
        let _ = writeln!(
            out,
            "pool '{}' (id {}): {} copies moved; copies from share: stddev {:.2} -> {:.2}, \
             worst {:+.1}/{:+.1} -> {:+.1}/{:+.1}",
            pool.pool,
            pool.id,
            pool.moves,
            pool.before.stddev,
            pool.after.stddev,
            pool.before.max_over,
            pool.before.max_under,
            pool.after.max_over,
            pool.after.max_under
        );
    }
    let _ = writeln!(out, "{} PGs get pg_upmap_items", plan.changes.len());
    out
}

/// `cairn map demo`: a guided tour of placement on a small cluster, writing every map it
/// makes so the other subcommands can be tried on them.
pub fn demo(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let levels = [("root".to_owned(), 1), ("rack".to_owned(), 3), ("host".to_owned(), 4)];
    let mut desc: Description = synthesize(&levels, 3, 1.0, Some("ssd"))?;
    desc.pools.push(PoolDesc::replicated("rbd", 3));
    desc.pools.push(PoolDesc::erasure("ec", 4, 2));
    let desc_path = dir.join("cluster.toml");
    fs::write(&desc_path, desc.to_toml())
        .with_context(|| format!("write {}", desc_path.display()))?;
    let map = desc.build()?;
    let map_path = dir.join("cluster.map");
    fs::write(&map_path, encoding::encode_map(&map)?)?;

    println!("== A cluster of 3 racks x 4 hosts x 3 OSDs: {}", desc_path.display());
    print!("{}", show(&map).lines().take(8).map(|l| format!("{l}\n")).collect::<String>());
    println!("   ... (cairn map show {})\n", map_path.display());

    println!("== Where the PGs land (cairn map test {}):", map_path.display());
    let reports: Vec<_> =
        map.contents().pools.keys().filter_map(|&p| analysis::test_pool(&map, p)).collect();
    print!("{}", test(&reports, None, false));

    let rbd = map.pool_by_name("rbd").expect("demo pool").id;
    let obj = b"vm-disk-0001";
    let pg = map.object_pg(rbd, "", obj)?;
    let before = map.pg_mapping(pg)?;
    println!(
        "\n== Object 'vm-disk-0001' in pool rbd -> PG {pg} -> up {} (primary {})",
        before.up,
        fmt_primary(before.up_primary)
    );
    demo_host_fails(dir, &map, pg, before.up_primary.expect("a primary"))?;
    demo_host_joins(dir, &desc, &map)?;
    demo_balancer(dir, &map)?;

    // The command as it was run, so the suggestions work without `cairn` on the PATH.
    let cairn = std::env::args().next().unwrap_or_else(|| "cairn".into());
    println!("\nMaps written to {}. Try:", dir.display());
    println!("  {cairn} map show {}", map_path.display());
    println!("  {cairn} map test {} --show-osds", map_path.display());
    println!("  {cairn} map diff {} {}", map_path.display(), dir.join("host-added.map").display());
    println!(
        "  {cairn} map test {} --rule erasure_rule --num-rep 6 --inputs 100000",
        map_path.display()
    );
    Ok(())
}

/// The demo's host of `primary` goes down, then out.
fn demo_host_fails(
    dir: &Path,
    map: &OsdMap,
    pg: placement::PgId,
    primary: placement::OsdId,
) -> Result<()> {
    // A host goes down: its OSDs are marked down, nothing moves, PGs run degraded.
    let host = host_of(map, primary);
    let host_osds = osds_under(map, host);
    let down = map.apply(&Incremental::new(
        map,
        host_osds.iter().map(|&osd| MapChange::OsdDown { osd }).collect(),
    ))?;
    let during = down.pg_mapping(pg)?;
    println!(
        "\n== Host '{}' goes down (epoch {}): PG {pg} is served by {} -- a hole, not a move",
        map.crush().item_name(host),
        down.epoch(),
        during.up
    );
    print!("{}", diff(map, &down, &analysis::diff(map, &down)));

    // It stays down: marked out, its PGs move to the other hosts, and only those.
    let out = down.apply(&Incremental::new(
        &down,
        host_osds.iter().map(|&osd| MapChange::OsdOut { osd }).collect(),
    ))?;
    fs::write(dir.join("host-out.map"), encoding::encode_map(&out)?)?;
    println!(
        "\n== Still down after the grace period: marked out (epoch {}), data moves:",
        out.epoch()
    );
    print!("{}", diff(map, &out, &analysis::diff(map, &out)));
    Ok(())
}

/// A host joins the demo's cluster.
fn demo_host_joins(dir: &Path, desc: &Description, map: &OsdMap) -> Result<()> {
    // A new host joins rack0 with 3 OSDs: it receives its share, taken from everyone.
    let mut grown = desc.clone();
    let first = grown.osds.len() as u32;
    for id in first..first + 3 {
        let mut osd = grown.osds[0].clone();
        osd.id = id;
        osd.location.insert("host".into(), "host-new".into());
        grown.osds.push(osd);
    }
    for pool in &mut grown.pools {
        let p = map.pool_by_name(&pool.name).expect("same pools");
        pool.pg_num = Some(p.pg_num);
    }
    let grown_map = grown.build()?;
    fs::write(dir.join("host-added.map"), encoding::encode_map(&grown_map)?)?;
    println!("\n== A 13th host joins (3 more OSDs):");
    print!("{}", diff(map, &grown_map, &analysis::diff(map, &grown_map)));
    Ok(())
}

/// The balancer evens out what hashing leaves uneven.
fn demo_balancer(dir: &Path, map: &OsdMap) -> Result<()> {
    let plan = placement::balance::plan(map, &placement::balance::Options::default());
    let balanced = map.apply(&Incremental::new(map, plan.changes.clone()))?;
    fs::write(dir.join("balanced.map"), encoding::encode_map(&balanced)?)?;
    println!(
        "\n== The balancer pins {} PGs with pg_upmap_items (cairn map balance):",
        plan.changes.len()
    );
    print!("{}", balance(&plan));
    let reports: Vec<_> = balanced
        .contents()
        .pools
        .keys()
        .filter_map(|&p| analysis::test_pool(&balanced, p))
        .collect();
    print!("{}", test(&reports, None, false));
    Ok(())
}

fn fmt_primary(osd: Option<placement::OsdId>) -> String {
    osd.map_or("none".into(), |o| o.to_string())
}

fn host_of(map: &OsdMap, osd: placement::OsdId) -> ItemId {
    map.crush().parent_of(osd.into()).map_or(osd.into(), ItemId::from)
}

fn osds_under(map: &OsdMap, item: ItemId) -> BTreeSet<placement::OsdId> {
    let mut osds = BTreeSet::new();
    map.crush().for_each_osd_under(item, &mut |osd, _| {
        osds.insert(osd);
    });
    osds
}
