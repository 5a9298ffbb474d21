//! Properties of placement that every map must have: determinism, failure domains, even
//! spread, minimal data movement, holes for down OSDs, stable erasure-code positions, and
//! round trips through the encodings and incrementals.

mod common;

use std::collections::BTreeSet;

use common::{build, erasure, hosts, osd, replicated, uniform};
use placement::analysis;
use placement::describe::Description;
use placement::encoding::{decode_incremental, decode_map, encode_incremental, encode_map};
use placement::{
    Epoch, Incremental, MapChange, MapContents, MapError, OsdId, OsdMap, PgId, PoolId, PoolSetting,
    Reweight, Weight,
};
use proptest::prelude::*;

/// Hosts with 1 to 4 OSDs of assorted weights (some zero).
fn weighted_hosts(hosts_max: usize) -> impl Strategy<Value = Vec<Vec<f64>>> {
    let weight = prop_oneof![Just(0.0), Just(0.5), Just(1.0), Just(2.0), Just(4.0), 0.1f64..8.0];
    prop::collection::vec(prop::collection::vec(weight, 1..=4), 1..=hosts_max)
}

fn all_pgs(map: &OsdMap) -> Vec<PgId> {
    map.contents().pools.values().flat_map(|p| map.pgs(p)).collect()
}

fn host_of(map: &OsdMap, osd: OsdId) -> String {
    map.crush().item_name(map.crush().parent_of(osd.into()).expect("placed").into())
}

fn hosts_with_weight(desc: &Description) -> usize {
    let hosts: BTreeSet<&String> =
        desc.osds.iter().filter(|o| o.weight > 0.0).map(|o| &o.location["host"]).collect();
    hosts.len()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn placement_is_deterministic_and_survives_encoding(weights in weighted_hosts(12)) {
        prop_assume!(weights.iter().flatten().any(|&w| w > 0.0));
        let mut desc = hosts(&weights);
        desc.pools.push(replicated("r", 3, 64));
        desc.pools.push(erasure("e", 2, 1, 32));
        let map = build(&desc);
        let again = build(&desc);
        // Overrides too: they are keyed by PG, which JSON needs as a string.
        let pg = PgId { pool: PoolId(1), seed: 3 };
        let first = map.pg_placement(pg).unwrap().osds().next();
        let map = match first {
            Some(osd) => map.apply(&Incremental::new(&map, vec![MapChange::PgTemp { pg, osds: vec![Some(osd)] }])).unwrap(),
            None => map,
        };
        let decoded = decode_map(&encode_map(&map).unwrap()).unwrap();
        let json: MapContents = serde_json::from_str(&serde_json::to_string(map.contents()).unwrap()).unwrap();
        let from_json = OsdMap::new(json).unwrap();
        prop_assert_eq!(map.contents(), decoded.contents());
        prop_assert_eq!(map.contents(), from_json.contents());
        for pg in all_pgs(&map) {
            let want = map.pg_mapping(pg).unwrap();
            prop_assert_eq!(want.up, again.pg_mapping(pg).unwrap().up);
            prop_assert_eq!(want, decoded.pg_mapping(pg).unwrap());
            prop_assert_eq!(want, from_json.pg_mapping(pg).unwrap());
        }
    }

    #[test]
    fn failure_domains_hold_and_satisfiable_rules_fill(weights in weighted_hosts(10), size in 1u8..=4) {
        let mut desc = hosts(&weights);
        let usable = hosts_with_weight(&desc);
        prop_assume!(usable > 0);
        desc.pools.push(replicated("r", size, 128));
        desc.pools.push(erasure("e", 2, 2, 64));
        let map = build(&desc);
        for pg in all_pgs(&map) {
            let set = map.pg_placement(pg).unwrap();
            let pool = map.pool(pg.pool).unwrap();
            let domains: Vec<String> = set.osds().map(|o| host_of(&map, o)).collect();
            let distinct: BTreeSet<&String> = domains.iter().collect();
            prop_assert_eq!(distinct.len(), domains.len(), "{} -> {} shares a host", pg, set);
            // Every OSD picked carries weight.
            for osd in set.osds() {
                prop_assert!(map.crush().devices[&osd].weight > Weight::ZERO, "{} got {}", pg, osd);
            }
            prop_assert_eq!(set.count(), pool.size().min(usable), "{} -> {}", pg, set);
        }
    }

    #[test]
    fn outing_an_osd_moves_only_the_pgs_it_held(weights in weighted_hosts(10), pick in any::<prop::sample::Index>()) {
        let mut desc = hosts(&weights);
        prop_assume!(hosts_with_weight(&desc) >= 3);
        desc.pools.push(replicated("r", 3, 128));
        desc.pools.push(erasure("e", 2, 1, 64));
        let before = build(&desc);
        let victim = OsdId(pick.index(desc.osds.len()) as u32);
        let after = before.apply(&Incremental::new(&before, vec![MapChange::OsdOut { osd: victim }])).unwrap();
        for pg in all_pgs(&before) {
            let (old, new) = (before.pg_placement(pg).unwrap(), after.pg_placement(pg).unwrap());
            prop_assert!(!new.contains(victim), "{} still on the out {}", pg, victim);
            if !old.contains(victim) {
                prop_assert_eq!(old, new, "{} did not hold {} but changed", pg, victim);
            } else if !before.pool(pg.pool).unwrap().is_erasure() {
                // Replicated: every other copy stays where it was.
                for osd in old.osds().filter(|&o| o != victim) {
                    prop_assert!(new.contains(osd), "{}: {} -> {} dropped {}", pg, old, new, osd);
                }
            }
        }
    }

    #[test]
    fn down_osds_leave_holes_and_move_nothing(weights in weighted_hosts(8), down in prop::collection::vec(any::<prop::sample::Index>(), 1..4)) {
        let mut desc = hosts(&weights);
        prop_assume!(hosts_with_weight(&desc) >= 2);
        desc.pools.push(replicated("r", 3, 64));
        desc.pools.push(erasure("e", 2, 1, 64));
        let before = build(&desc);
        let down: BTreeSet<OsdId> = down.iter().map(|i| OsdId(i.index(desc.osds.len()) as u32)).collect();
        let changes = down.iter().map(|&osd| MapChange::OsdDown { osd }).collect();
        let after = before.apply(&Incremental::new(&before, changes)).unwrap();
        for pg in all_pgs(&before) {
            let placement = before.pg_placement(pg).unwrap();
            prop_assert_eq!(placement, after.pg_placement(pg).unwrap(), "{}: a down OSD moved data", pg);
            let mapping = after.pg_mapping(pg).unwrap();
            let erasure = before.pool(pg.pool).unwrap().is_erasure();
            if erasure {
                // The same positions, with holes where the OSD is down.
                prop_assert_eq!(mapping.up.len(), placement.len());
                for (position, osd) in placement.iter().enumerate() {
                    let want = osd.filter(|o| !down.contains(o));
                    prop_assert_eq!(mapping.up.get(position), want, "{} position {}", pg, position);
                }
            } else {
                let want: Vec<OsdId> = placement.osds().filter(|o| !down.contains(o)).collect();
                prop_assert_eq!(mapping.up.osds().collect::<Vec<_>>(), want);
            }
            prop_assert_eq!(mapping.up_primary, mapping.up.osds().next());
            prop_assert_eq!(mapping.acting, mapping.up);
        }
    }

    #[test]
    fn balancing_never_breaks_a_rule_and_never_worsens_the_spread(weights in weighted_hosts(12)) {
        let mut desc = hosts(&weights);
        prop_assume!(hosts_with_weight(&desc) >= 3);
        desc.pools.push(replicated("r", 3, 256));
        desc.pools.push(erasure("e", 2, 1, 128));
        let map = build(&desc);
        let plan = placement::balance::plan(&map, &placement::balance::Options::default());
        let balanced = map.apply(&Incremental::new(&map, plan.changes.clone())).unwrap();
        for pool in [PoolId(1), PoolId(2)] {
            let before = analysis::test_pool(&map, pool).unwrap().distribution;
            let after = analysis::test_pool(&balanced, pool).unwrap().distribution;
            prop_assert_eq!(after.violations, 0);
            prop_assert_eq!(after.placed, before.placed);
            let squares = |d: &analysis::Distribution| -> f64 {
                d.per_osd.iter().map(|o| (o.count as f64 - o.expected).powi(2)).sum()
            };
            prop_assert!(squares(&after) <= squares(&before) + 1e-6);
        }
    }

    #[test]
    fn incrementals_round_trip_and_apply_deterministically(
        weights in weighted_hosts(6),
        ops in prop::collection::vec((0u8..6, any::<prop::sample::Index>(), 0u32..=0x10000), 1..12),
    ) {
        prop_assume!(weights.iter().flatten().any(|&w| w > 0.0));
        let mut desc = hosts(&weights);
        desc.pools.push(replicated("r", 2, 32));
        let base = build(&desc);
        let n = desc.osds.len();
        let changes: Vec<MapChange> = ops
            .iter()
            .map(|(op, i, value)| {
                let osd = OsdId(i.index(n) as u32);
                match op {
                    0 => MapChange::OsdDown { osd },
                    1 => MapChange::OsdUp { osd },
                    2 => MapChange::OsdOut { osd },
                    3 => MapChange::OsdIn { osd },
                    4 => MapChange::OsdReweight { osd, reweight: Reweight(*value) },
                    _ => MapChange::CrushSetWeight { osd, weight: Weight(*value) },
                }
            })
            .collect();
        let inc = Incremental::new(&base, changes);
        let decoded_inc = decode_incremental(&encode_incremental(&inc).unwrap()).unwrap();
        prop_assert_eq!(&inc, &decoded_inc);
        let next = base.apply(&inc).unwrap();
        let via_wire = decode_map(&encode_map(&base).unwrap()).unwrap().apply(&decoded_inc).unwrap();
        prop_assert_eq!(next.epoch(), Epoch(base.epoch().0 + 1));
        prop_assert_eq!(next.contents(), via_wire.contents());
        for pg in all_pgs(&next) {
            prop_assert_eq!(next.pg_mapping(pg).unwrap(), via_wire.pg_mapping(pg).unwrap());
        }
        // The same incremental cannot apply twice: its base is gone.
        let again = next.apply(&inc).unwrap_err();
        prop_assert_eq!(again, MapError::WrongBase { have: next.epoch(), delta_base: base.epoch() });
    }
}

/// Deviation of per-OSD copies from weight-proportional, against what ideal random hashing
/// would give for the same counts.
#[test]
fn spread_is_as_even_as_random_hashing() {
    let cases: Vec<(&str, Description)> = vec![
        ("50 hosts x 4 equal OSDs", uniform(50, 4)),
        // Hosts of equal capacity made of different disks.
        (
            "30 hosts of 1x2 + 2x1 or 4x1",
            hosts(
                &(0..30)
                    .map(|h| if h % 2 == 0 { vec![2.0, 1.0, 1.0] } else { vec![1.0; 4] })
                    .collect::<Vec<_>>(),
            ),
        ),
    ];
    for (name, mut desc) in cases {
        desc.pools.push(replicated("r", 3, 4096));
        desc.pools.push(erasure("e", 4, 2, 2048));
        let map = build(&desc);
        for pool in [PoolId(1), PoolId(2)] {
            let d = analysis::test_pool(&map, pool).unwrap().distribution;
            assert_eq!((d.short, d.violations), (0, 0), "{name}");
            assert!(
                d.stddev_pct <= 1.25 * d.random_stddev_pct,
                "{name}, pool {pool}: stddev {:.2}% vs random hashing {:.2}%",
                d.stddev_pct,
                d.random_stddev_pct
            );
        }
    }
}

/// Adds one OSD as a new host to flat clusters of N hosts.
#[test]
fn adding_an_osd_moves_its_fair_share_only_onto_it() {
    for n in [10usize, 20, 50] {
        let mut desc = uniform(n, 1);
        desc.pools.push(replicated("r", 3, 8192));
        let before = build(&desc);
        desc.osds.push(osd(n as u32, 1.0, "new-host"));
        let after = build(&desc);
        let d = &analysis::diff(&before, &after)[0];
        let ideal = 1.0 / (n as f64 + 1.0);
        assert!((d.ideal_fraction - ideal).abs() < 1e-9);
        let ratio = d.fraction_moved / ideal;
        assert!(
            (0.8..=1.2).contains(&ratio),
            "N={n}: moved {:.4} vs ideal {ideal:.4}",
            d.fraction_moved
        );
        let new = OsdId(n as u32);
        assert_eq!(
            d.moved_to.keys().copied().collect::<Vec<_>>(),
            vec![new],
            "N={n}: arrivals elsewhere"
        );
        // Each changed PG traded exactly one copy.
        assert_eq!(d.pgs_changed, d.copies_moved, "N={n}");
    }
}

/// Adding a host of several OSDs: every arriving copy lands on the new host's OSDs.
#[test]
fn adding_a_host_moves_data_only_onto_it() {
    let mut desc = uniform(12, 4);
    desc.pools.push(replicated("r", 3, 4096));
    let before = build(&desc);
    for i in 0..4 {
        desc.osds.push(osd(48 + i, 1.0, "new-host"));
    }
    let after = build(&desc);
    let d = &analysis::diff(&before, &after)[0];
    assert!(d.moved_to.keys().all(|o| o.0 >= 48), "arrivals on old OSDs: {:?}", d.moved_to);
    let ratio = d.fraction_moved / d.ideal_fraction;
    assert!(
        (0.8..=1.2).contains(&ratio),
        "moved {:.4} vs ideal {:.4}",
        d.fraction_moved,
        d.ideal_fraction
    );
}

/// Removing a whole host from CRUSH moves only the PGs it held.
#[test]
fn removing_a_host_moves_only_its_pgs() {
    let mut desc = uniform(20, 1);
    desc.pools.push(replicated("r", 3, 2048));
    desc.pools.push(erasure("e", 4, 2, 1024));
    let before = build(&desc);
    desc.osds.retain(|o| o.id != 7);
    let after = build(&desc);
    for pg in all_pgs(&before) {
        let (old, new) = (before.pg_placement(pg).unwrap(), after.pg_placement(pg).unwrap());
        if !old.contains(OsdId(7)) {
            assert_eq!(old, new, "{pg} did not hold osd.7 but changed");
        }
    }
    let d = analysis::diff(&before, &after);
    assert!(d[0].moved_from.keys().all(|&o| o == OsdId(7)), "replicated: {:?}", d[0].moved_from);
}

/// When an OSD of an erasure-coded PG goes out, the other shards keep their positions in
/// (almost) every PG: a position can only shift when it collided with the failed one.
#[test]
fn indep_keeps_other_positions_stable() {
    for (n, per_host) in [(20usize, 1usize), (10, 4), (100, 1)] {
        let mut desc = uniform(n, per_host);
        desc.pools.push(erasure("e", 4, 2, 4096));
        let before = build(&desc);
        let after = before
            .apply(&Incremental::new(&before, vec![MapChange::OsdOut { osd: OsdId(0) }]))
            .unwrap();
        let (mut held, mut shifted) = (0, 0);
        for pg in all_pgs(&before) {
            let (old, new) = (before.pg_placement(pg).unwrap(), after.pg_placement(pg).unwrap());
            let Some(position) = old.position(OsdId(0)) else {
                assert_eq!(old, new, "{pg} did not hold osd.0 but changed");
                continue;
            };
            held += 1;
            let others_moved = (0..old.len()).any(|p| p != position && old.get(p) != new.get(p));
            shifted += usize::from(others_moved);
        }
        assert!(held > 0);
        let rate = shifted as f64 / held as f64;
        assert!(rate <= 0.05, "{n}x{per_host}: {shifted} of {held} PGs shifted other positions");
        if per_host > 1 {
            // A sibling in the same host takes the shard over: nothing else needs to move.
            assert_eq!(shifted, 0, "{n}x{per_host}");
        }
    }
}

/// Growing pg_num splits PGs: every object either stays in its PG or moves to a new one.
#[test]
fn pg_split_moves_objects_only_into_new_pgs() {
    let mut desc = uniform(6, 2);
    desc.pools.push(replicated("r", 3, 12));
    let before = build(&desc);
    let pool = PoolId(1);
    let after = before
        .apply(&Incremental::new(
            &before,
            vec![MapChange::PoolSet { pool, setting: PoolSetting::PgNum(20) }],
        ))
        .unwrap();
    let mut moved = 0;
    for i in 0..20_000 {
        let name = format!("object-{i}");
        let old = before.object_pg(pool, "", name.as_bytes()).unwrap();
        let new = after.object_pg(pool, "", name.as_bytes()).unwrap();
        if old != new {
            moved += 1;
            assert!(new.seed >= 12, "{name}: {old} -> {new} is not a new PG");
            // A child PG splits off its parent: same seed modulo the old power of two.
            assert_eq!(new.seed & 7, old.seed & 7, "{name}: {old} -> {new}");
        }
    }
    assert!(moved > 0);
    // pgp_num unchanged: the new PGs are placed with their parents, so no data moves yet.
    for seed in 12..20 {
        let child = PgId { pool, seed };
        let parent = PgId { pool, seed: seed & 7 };
        assert_eq!(after.pg_placement(child).unwrap(), after.pg_placement(parent).unwrap());
    }
}

/// With the balancer's upmap exceptions, every OSD holds within one copy of its
/// weight-proportional share at realistic PG counts (about 100 copies per OSD), and every
/// PG still keeps its copies in distinct failure domains.
#[test]
fn balancer_brings_every_osd_within_a_copy_of_its_share() {
    let cases: Vec<(&str, Description)> = vec![
        ("40 hosts x 4 equal OSDs", uniform(40, 4)),
        (
            "24 hosts of mixed disks",
            hosts(
                &(0..24)
                    .map(|h| match h % 3 {
                        0 => vec![2.0, 1.0, 1.0],
                        1 => vec![1.0; 4],
                        _ => vec![4.0],
                    })
                    .collect::<Vec<_>>(),
            ),
        ),
    ];
    for (name, mut desc) in cases {
        desc.pools.push(replicated("r", 3, 4096));
        desc.pools.push(erasure("e", 4, 2, 2048));
        let map = build(&desc);
        let plan = placement::balance::plan(&map, &placement::balance::Options::default());
        let balanced = map.apply(&Incremental::new(&map, plan.changes.clone())).unwrap();
        for pool in [PoolId(1), PoolId(2)] {
            let before = analysis::test_pool(&map, pool).unwrap().distribution;
            let after = analysis::test_pool(&balanced, pool).unwrap().distribution;
            assert_eq!((after.short, after.violations), (0, 0), "{name}, pool {pool}");
            assert_eq!(after.placed, before.placed, "{name}, pool {pool}: copies lost");
            let worst = after
                .per_osd
                .iter()
                .map(|o| (o.count as f64 - o.expected).abs())
                .fold(0.0, f64::max);
            let share: f64 =
                after.per_osd.iter().map(|o| o.expected).sum::<f64>() / after.per_osd.len() as f64;
            assert!(
                worst <= 1.0 + 1e-9,
                "{name}, pool {pool}: an OSD is {worst:.2} copies from its share (avg share {share:.0}); \
                 stddev before {:.1}%, after {:.1}%",
                before.stddev_pct,
                after.stddev_pct
            );
            let planned = plan.pools.iter().find(|p| p.id == pool).unwrap();
            assert!(planned.after.stddev < planned.before.stddev, "{name}: {planned:?}");
        }
        // Balancing a balanced map plans nothing.
        let again = placement::balance::plan(&balanced, &placement::balance::Options::default());
        assert!(
            again.changes.is_empty(),
            "{name}: second run planned {} changes",
            again.changes.len()
        );
    }
}

/// Changing one OSD's weight moves data in proportion, and only to or from that OSD: a
/// bigger CRUSH weight draws copies onto it; a reweight below 1 sends that fraction of its
/// copies away.
#[test]
fn reweighting_moves_proportionally_and_only_that_osd() {
    let mut desc = uniform(20, 1);
    desc.pools.push(replicated("r", 3, 8192));
    let before = build(&desc);
    let osd = OsdId(0);

    let heavier = before
        .apply(&Incremental::new(
            &before,
            vec![MapChange::CrushSetWeight { osd, weight: Weight::from_f64(2.0).unwrap() }],
        ))
        .unwrap();
    let d = &analysis::diff(&before, &heavier)[0];
    assert_eq!(d.moved_to.keys().copied().collect::<Vec<_>>(), vec![osd], "arrivals elsewhere");
    // Share 1/20 -> 2/21.
    let ideal = 2.0 / 21.0 - 1.0 / 20.0;
    assert!((d.ideal_fraction - ideal).abs() < 1e-9);
    let ratio = d.fraction_moved / ideal;
    assert!(
        (0.8..=1.2).contains(&ratio),
        "weight x2: moved {:.4}, ideal {ideal:.4}",
        d.fraction_moved
    );

    let half = before
        .apply(&Incremental::new(
            &before,
            vec![MapChange::OsdReweight { osd, reweight: Reweight::from_f64(0.5).unwrap() }],
        ))
        .unwrap();
    let d = &analysis::diff(&before, &half)[0];
    assert_eq!(d.moved_from.keys().copied().collect::<Vec<_>>(), vec![osd], "departures elsewhere");
    let held = analysis::test_pool(&before, PoolId(1)).unwrap().distribution.per_osd[0].count;
    let left = d.moved_from[&osd] as f64 / held as f64;
    assert!((0.45..=0.55).contains(&left), "reweight 0.5 moved {left:.3} of osd.0's copies");
}

fn with_rule(mut desc: Description, kind: placement::RuleKind, steps: &[&str]) -> Description {
    desc.rules.push(placement::describe::RuleDesc {
        name: "custom".into(),
        kind,
        root: None,
        failure_domain: None,
        class: None,
        steps: Some(steps.iter().map(|s| s.to_string()).collect()),
    });
    desc
}

/// An out OSD never appears in a placement, whatever the rule's shape.
#[test]
fn out_osds_never_placed_by_any_rule_shape() {
    let shapes: [(placement::RuleKind, &[&str]); 4] = [
        (placement::RuleKind::Erasure, &["take default", "chooseleaf indep 0 type osd", "emit"]),
        (placement::RuleKind::Erasure, &["take default", "choose indep 0 type osd", "emit"]),
        (
            placement::RuleKind::Replicated,
            &["take default", "chooseleaf firstn 0 type osd", "emit"],
        ),
        (placement::RuleKind::Replicated, &["take default", "choose firstn 0 type osd", "emit"]),
    ];
    for (kind, steps) in shapes {
        let mut desc = with_rule(uniform(3, 1), kind, steps);
        let mut pool = if kind == placement::RuleKind::Erasure {
            erasure("p", 2, 1, 64)
        } else {
            replicated("p", 3, 64)
        };
        pool.rule = Some("custom".into());
        desc.pools.push(pool);
        let map = build(&desc);
        let out =
            map.apply(&Incremental::new(&map, vec![MapChange::OsdOut { osd: OsdId(2) }])).unwrap();
        for pg in all_pgs(&out) {
            let set = out.pg_placement(pg).unwrap();
            assert!(!set.contains(OsdId(2)), "{steps:?}: {pg} -> {set} holds the out osd.2");
            assert_eq!(set.count(), 2, "{steps:?}: {pg} -> {set}");
        }
    }
}

/// Rules of several take/emit groups over the same OSDs never place one OSD twice in a PG:
/// the groups draw differently, and a repeat leaves a hole (indep) or is dropped (firstn).
#[test]
fn multi_group_rules_never_repeat_an_osd() {
    let kinds: [(placement::RuleKind, &[&str]); 2] = [
        (
            placement::RuleKind::Erasure,
            &[
                "take default",
                "chooseleaf indep 3 type host",
                "emit",
                "take default",
                "chooseleaf indep 3 type host",
                "emit",
            ],
        ),
        (
            placement::RuleKind::Replicated,
            &[
                "take default",
                "chooseleaf firstn 1 type host",
                "emit",
                "take default",
                "chooseleaf firstn 2 type host",
                "emit",
            ],
        ),
    ];
    for (kind, steps) in kinds {
        let mut desc = with_rule(uniform(8, 2), kind, steps);
        let mut pool = if kind == placement::RuleKind::Erasure {
            erasure("p", 4, 2, 256)
        } else {
            replicated("p", 3, 256)
        };
        pool.rule = Some("custom".into());
        desc.pools.push(pool);
        let map = build(&desc);
        let mut full = 0;
        for pg in all_pgs(&map) {
            let set = map.pg_placement(pg).unwrap();
            let osds: Vec<OsdId> = set.osds().collect();
            let distinct: BTreeSet<&OsdId> = osds.iter().collect();
            assert_eq!(distinct.len(), osds.len(), "{kind:?}: {pg} -> {set} repeats an OSD");
            full += usize::from(osds.len() == map.pool(pg.pool).unwrap().size());
        }
        // The groups draw independently: over 8 hosts of 2 OSDs, a PG is complete when no
        // host both groups pick chose the same OSD twice, about half the time.
        assert!(full > 256 / 3, "{kind:?}: only {full} of 256 PGs complete");
    }
}

/// Balancing a map whose existing exceptions went stale (their target OSD is now out)
/// replaces them with valid ones: no out OSD placed, no entry longer than the pool.
#[test]
fn rebalancing_over_stale_exceptions_stays_valid() {
    let mut desc = uniform(12, 3);
    desc.pools.push(replicated("r", 3, 1024));
    desc.pools.push(erasure("e", 4, 2, 512));
    let map = build(&desc);
    let options = placement::balance::Options::default();
    let plan = placement::balance::plan(&map, &options);
    let balanced = map.apply(&Incremental::new(&map, plan.changes)).unwrap();
    // Take out the OSD that received the most exceptions.
    let mut targets = std::collections::BTreeMap::<OsdId, usize>::new();
    for pairs in balanced.contents().pg_upmap_items.values() {
        for &(_, to) in pairs {
            *targets.entry(to).or_default() += 1;
        }
    }
    let (&victim, _) = targets.iter().max_by_key(|(_, n)| **n).expect("exceptions exist");
    let out = balanced
        .apply(&Incremental::new(&balanced, vec![MapChange::OsdOut { osd: victim }]))
        .unwrap();
    // Even before rebalancing, no stale exception may put two copies in one host.
    for pool in [PoolId(1), PoolId(2)] {
        assert_eq!(
            analysis::test_pool(&out, pool).unwrap().distribution.violations,
            0,
            "pool {pool}"
        );
    }
    let plan = placement::balance::plan(&out, &options);
    let again = out.apply(&Incremental::new(&out, plan.changes)).unwrap();
    for (pg, pairs) in &again.contents().pg_upmap_items {
        assert!(pairs.len() <= again.pool(pg.pool).unwrap().size(), "{pg}: {pairs:?}");
    }
    for pool in [PoolId(1), PoolId(2)] {
        let d = analysis::test_pool(&again, pool).unwrap().distribution;
        assert_eq!(d.violations, 0);
        assert!(
            d.per_osd.iter().all(|o| o.osd != victim || o.count == 0),
            "pool {pool}: out {victim} holds copies"
        );
        let worst = d
            .per_osd
            .iter()
            .filter(|o| o.expected > 0.0)
            .map(|o| (o.count as f64 - o.expected).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1.0 + 1e-9, "pool {pool}: {worst:.2} copies from a share");
    }
}

/// A cluster whose OSDs are all out (a fresh one, before any boots) maps every PG to
/// nothing: empty replicated sets, erasure sets of holes.
#[test]
fn an_all_out_cluster_maps_to_nothing() {
    let mut desc = uniform(50, 2);
    for osd in &mut desc.osds {
        osd.is_in = false;
    }
    desc.pools.push(replicated("r", 3, 1024));
    desc.pools.push(erasure("e", 4, 2, 1024));
    let map = build(&desc);
    for pg in all_pgs(&map) {
        let set = map.pg_placement(pg).unwrap();
        assert_eq!(set.count(), 0, "{pg} -> {set}");
        let erasure = map.pool(pg.pool).unwrap().is_erasure();
        assert_eq!(set.len(), if erasure { 6 } else { 0 }, "{pg} -> {set}");
    }
    // Bringing one host in fills one position of every PG.
    let changes = vec![MapChange::OsdIn { osd: OsdId(0) }, MapChange::OsdIn { osd: OsdId(1) }];
    let one_host = map.apply(&Incremental::new(&map, changes)).unwrap();
    for pg in all_pgs(&one_host) {
        assert_eq!(one_host.pg_placement(pg).unwrap().count(), 1, "{pg}");
    }
}
