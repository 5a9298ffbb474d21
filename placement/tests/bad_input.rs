//! Bad input gets a clear error naming what and where, never a panic: descriptions,
//! encoded maps and incrementals, and map changes.

mod common;

use common::{build, replicated, uniform};
use placement::describe::{Description, Format};
use placement::encoding::{decode_incremental, decode_map, encode_incremental, encode_map};
use placement::{
    BucketId, Epoch, Incremental, MapChange, MapError, OsdId, PgId, PoolId, PoolKind, PoolSetting,
    RuleId, RuleKind, Step,
};
use proptest::prelude::*;

fn describe_error(text: &str) -> String {
    describe_error_as(text, Format::Toml)
}

fn describe_error_as(text: &str, format: Format) -> String {
    match Description::parse(text, format).and_then(|d| d.build()) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_mentions(error: &str, words: &[&str]) {
    for word in words {
        assert!(error.contains(word), "error '{error}' does not mention '{word}'");
    }
}

const TWO_HOSTS: &str = r#"
[[osd]]
id = 0
location = { root = "default", host = "h0" }
[[osd]]
id = 1
location = { root = "default", host = "h1" }
"#;

#[test]
fn syntax_errors_name_the_line() {
    assert_mentions(&describe_error("[[osd]\nid = 0"), &["TOML", "line 1"]);
    assert_mentions(&describe_error("[[osd]]\nid = 0\nwieght = 1.0"), &["wieght", "line 3"]);
    assert_mentions(&describe_error("[[osd]]\nid = -1"), &["id"]);
    assert_mentions(&describe_error_as("{\"osd\": [", Format::Json), &["JSON", "line 1"]);
    assert_mentions(&describe_error("[[osd]]\nid = \"zero\""), &["id", "line 2"]);
}

#[test]
fn duplicate_ids_and_names_are_named() {
    let dup_osd = format!("{TWO_HOSTS}[[osd]]\nid = 1\nlocation = {{ host = \"h1\" }}");
    assert_mentions(
        &describe_error(&dup_osd),
        &["osd.1 ([[osd]] #3)", "already used by [[osd]] #2"],
    );
    let dup_bucket =
        "[[bucket]]\nname = \"r\"\ntype = \"rack\"\n[[bucket]]\nname = \"r\"\ntype = \"rack\"";
    assert_mentions(&describe_error(dup_bucket), &["bucket 'r' ([[bucket]] #2)", "already used"]);
    let dup_bucket_id = "[[bucket]]\nname = \"a\"\ntype = \"rack\"\nid = -5\n\
                         [[bucket]]\nname = \"b\"\ntype = \"rack\"\nid = -5";
    assert_mentions(&describe_error(dup_bucket_id), &["bucket 'b'", "id -5", "bucket 'a'"]);
    let positive_id = "[[bucket]]\nname = \"a\"\ntype = \"rack\"\nid = 5";
    assert_mentions(&describe_error(positive_id), &["bucket 'a'", "not a negative bucket id"]);
    let dup_pool =
        format!("{TWO_HOSTS}[[pool]]\nname = \"p\"\nsize = 2\n[[pool]]\nname = \"p\"\nsize = 2");
    assert_mentions(&describe_error(&dup_pool), &["pool 'p'", "twice"]);
    let dup_rule = format!("{TWO_HOSTS}[[rule]]\nname = \"x\"\n[[rule]]\nname = \"x\"");
    assert_mentions(&describe_error(&dup_rule), &["rule 'x'", "already exists"]);
}

#[test]
fn hierarchy_mistakes_are_named() {
    let unknown_type = "[[osd]]\nid = 0\nlocation = { root = \"default\", rak = \"r1\" }";
    assert_mentions(&describe_error(unknown_type), &["osd.0", "no bucket type 'rak'", "rack"]);
    let two_parents = "[[osd]]\nid = 0\nlocation = { root = \"default\", rack = \"r1\", host = \"h\" }\n\
                       [[osd]]\nid = 1\nlocation = { root = \"default\", rack = \"r2\", host = \"h\" }";
    assert_mentions(&describe_error(two_parents), &["osd.1", "puts 'h' under 'r2'", "under 'r1'"]);
    let wrong_type = "[[bucket]]\nname = \"r1\"\ntype = \"rack\"\n\
                      [[osd]]\nid = 0\nlocation = { root = \"default\", host = \"r1\" }";
    assert_mentions(&describe_error(wrong_type), &["osd.0", "host = 'r1'", "is a rack"]);
    let cycle = "[[bucket]]\nname = \"a\"\ntype = \"rack\"\nparent = \"b\"\n\
                 [[bucket]]\nname = \"b\"\ntype = \"rack\"\nparent = \"a\"";
    assert_mentions(&describe_error(cycle), &["cycle", "a", "b"]);
    let long_cycle = "[[bucket]]\nname = \"a\"\ntype = \"row\"\nparent = \"c\"\n\
                      [[bucket]]\nname = \"b\"\ntype = \"rack\"\nparent = \"a\"\n\
                      [[bucket]]\nname = \"c\"\ntype = \"room\"\nparent = \"b\"";
    assert_mentions(&describe_error(long_cycle), &["cycle"]);
    let upside_down = "[[bucket]]\nname = \"h\"\ntype = \"host\"\n\
                       [[bucket]]\nname = \"r\"\ntype = \"rack\"\nparent = \"h\"";
    assert_mentions(
        &describe_error(upside_down),
        &["'h' (type host) cannot contain 'r' (type rack)"],
    );
    let missing_parent = "[[bucket]]\nname = \"r\"\ntype = \"rack\"\nparent = \"nowhere\"";
    assert_mentions(&describe_error(missing_parent), &["bucket 'r'", "parent 'nowhere'"]);
    let osd_type = "[[bucket]]\nname = \"x\"\ntype = \"osd\"";
    assert_mentions(&describe_error(osd_type), &["bucket 'x'", "leaf type"]);
    let bad_types = "types = [\"host\", \"root\"]";
    assert_mentions(&describe_error(bad_types), &["first (leaf) type must be 'osd'"]);
    let bad_name = "[[osd]]\nid = 0\nlocation = { root = \"default\", host = \"my host\" }";
    assert_mentions(&describe_error(bad_name), &["'my host'"]);
    let osd_named = "[[osd]]\nid = 0\nlocation = { root = \"default\", host = \"osd.7\" }";
    assert_mentions(&describe_error(osd_named), &["osd.7", "OSD names"]);
}

#[test]
fn weights_are_checked() {
    let zero = "[[osd]]\nid = 0\nweight = 0.0\nlocation = { root = \"default\", host = \"h\" }";
    assert_mentions(&describe_error(zero), &["zero total weight"]);
    let negative = "[[osd]]\nid = 0\nweight = -1.0\nlocation = { host = \"h\" }";
    assert_mentions(&describe_error(negative), &["osd.0", "weight -1"]);
    let nan = "[[osd]]\nid = 0\nweight = nan\nlocation = { host = \"h\" }";
    assert_mentions(&describe_error(nan), &["osd.0", "weight NaN"]);
    let huge = "[[osd]]\nid = 0\nweight = 1e9\nlocation = { host = \"h\" }";
    assert_mentions(&describe_error(huge), &["osd.0", "above the maximum"]);
    let reweight = "[[osd]]\nid = 0\nreweight = 2.0\nlocation = { host = \"h\" }";
    assert_mentions(&describe_error(reweight), &["osd.0", "reweight"]);
    let id = "[[osd]]\nid = 99999999\nlocation = { host = \"h\" }";
    assert_mentions(&describe_error(id), &["osd.99999999", "limit"]);
    // A pool whose rule reaches only zero weight.
    let class_zero = "[[osd]]\nid = 0\nclass = \"ssd\"\nweight = 0.0\nlocation = { root = \"default\", host = \"a\" }\n\
                      [[osd]]\nid = 1\nlocation = { root = \"default\", host = \"b\" }\n\
                      [[rule]]\nname = \"fast\"\nclass = \"ssd\"\n\
                      [[pool]]\nname = \"p\"\nsize = 1\nrule = \"fast\"";
    assert_mentions(
        &describe_error(class_zero),
        &["pool 'p'", "rule 'fast'", "class ssd", "zero total weight"],
    );
}

#[test]
fn rules_naming_missing_things_are_named() {
    let root = format!("{TWO_HOSTS}[[rule]]\nname = \"x\"\nroot = \"nope\"");
    assert_mentions(&describe_error(&root), &["rule 'x'", "root 'nope'"]);
    let class = format!("{TWO_HOSTS}[[rule]]\nname = \"x\"\nclass = \"nvme\"");
    assert_mentions(&describe_error(&class), &["rule 'x'", "class 'nvme'"]);
    let domain = format!("{TWO_HOSTS}[[rule]]\nname = \"x\"\nfailure_domain = \"galaxy\"");
    assert_mentions(&describe_error(&domain), &["rule 'x'", "galaxy"]);
    let steps = format!(
        "{TWO_HOSTS}[[rule]]\nname = \"x\"\nsteps = [\"take default\", \"chooseleaf sometimes 0 type host\", \"emit\"]"
    );
    assert_mentions(&describe_error(&steps), &["rule 'x', step 2", "firstn or indep"]);
    let step_bucket =
        format!("{TWO_HOSTS}[[rule]]\nname = \"x\"\nsteps = [\"take nowhere\", \"emit\"]");
    assert_mentions(&describe_error(&step_bucket), &["rule 'x', step 1", "no bucket 'nowhere'"]);
    let shape = format!("{TWO_HOSTS}[[rule]]\nname = \"x\"\nsteps = [\"take default\", \"emit\"]");
    assert_mentions(&describe_error(&shape), &["rule 'x'", "emits buckets"]);
    let both = format!("{TWO_HOSTS}[[rule]]\nname = \"x\"\nroot = \"default\"\nsteps = [\"emit\"]");
    assert_mentions(&describe_error(&both), &["rule 'x'", "not both"]);
    let mode = format!(
        "{TWO_HOSTS}[[rule]]\nname = \"x\"\ntype = \"erasure\"\nsteps = [\"take default\", \"chooseleaf firstn 0 type host\", \"emit\"]"
    );
    assert_mentions(&describe_error(&mode), &["rule 'x'", "erasure rules use indep"]);
    let count = format!(
        "{TWO_HOSTS}[[rule]]\nname = \"x\"\nsteps = [\"take default\", \"chooseleaf firstn 99999999999 type host\", \"emit\"]"
    );
    assert_mentions(&describe_error(&count), &["rule 'x', step 2", "too large"]);
}

#[test]
fn pool_mistakes_are_named() {
    let cases = [
        ("[[pool]]\nname = \"p\"\nrule = \"zzz\"", vec!["pool 'p'", "rule 'zzz' does not exist"]),
        ("[[pool]]\nname = \"p\"\nsize = 0", vec!["pool 'p'", "size 0"]),
        ("[[pool]]\nname = \"p\"\nsize = 2\nmin_size = 3", vec!["pool 'p'", "min_size 3"]),
        ("[[pool]]\nname = \"p\"\nsize = 11", vec!["pool 'p'", "size 11"]),
        ("[[pool]]\nname = \"p\"\npg_num = 0", vec!["pool 'p'", "pg_num 0"]),
        ("[[pool]]\nname = \"p\"\npg_num = 99999999", vec!["pool 'p'", "pg_num 99999999"]),
        ("[[pool]]\nname = \"p\"\nid = 0", vec!["pool 'p'", "start at 1"]),
        ("[[pool]]\nname = \"p\"\ntype = \"erasure\"\nsize = 3", vec!["pool 'p'", "k+m"]),
        ("[[pool]]\nname = \"p\"\ntype = \"erasure\"\nk = 30\nm = 3", vec!["k+m = 33"]),
        ("[[pool]]\nname = \"p\"\ntype = \"erasure\"\nk = 0\nm = 1", vec!["k=0"]),
        ("[[pool]]\nname = \"p\"\ntype = \"erasure\"", vec!["pool 'p'", "k and m"]),
        ("[[pool]]\nname = \"p\"\ntype = \"erasure\"\nprofile = \"nope\"", vec!["profile 'nope'"]),
        ("[[pool]]\nname = \"p\"\nk = 2", vec!["pool 'p'", "erasure pools"]),
        ("[[pool]]\nname = \"p\"\ntarget_size_ratio = -1.0", vec!["pool 'p'", "target_size_ratio"]),
        (
            "[[pool]]\nname = \"p\"\nrule = \"ec\"\n[[rule]]\nname = \"ec\"\ntype = \"erasure\"",
            vec!["pool 'p'", "rule 'ec' is erasure"],
        ),
        ("[[pool]]\nname = \"bad name\"", vec!["'bad name'"]),
        ("target_pgs_per_osd = 0", vec!["target_pgs_per_osd"]),
    ];
    for (pool, words) in cases {
        assert_mentions(&describe_error(&format!("{TWO_HOSTS}{pool}")), &words);
    }
}

#[test]
fn oversized_descriptions_are_refused_before_parsing() {
    let big = "#".repeat(placement::describe::DESCRIPTION_BYTES_MAX + 1);
    assert_mentions(&describe_error(&big), &["limit"]);
}

#[test]
fn corrupt_encodings_are_refused() {
    let mut desc = uniform(4, 2);
    desc.pools.push(replicated("r", 3, 32));
    let map = build(&desc);
    let good = encode_map(&map).unwrap();
    let err = |bytes: &[u8]| decode_map(bytes).unwrap_err().to_string();

    assert_mentions(&err(&[]), &["truncated"]);
    assert_mentions(&err(b"hello world, definitely not a map"), &["bad magic"]);
    assert_mentions(&err(&good[..good.len() - 1]), &["truncated"]);
    let mut longer = good.clone();
    longer.push(0);
    assert_mentions(&err(&longer), &["1 bytes after the payload"]);
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x40;
    assert_mentions(&err(&flipped), &["checksum mismatch"]);
    let mut future = good.clone();
    future[8] = 9;
    assert_mentions(&err(&future), &["format version 9", "up to 1"]);
    // A valid envelope around a payload that decodes but breaks an invariant.
    let mut contents = map.contents().clone();
    contents.pools.get_mut(&PoolId(1)).unwrap().pgp_num = 999;
    let bad = reseal(&good, &postcard::to_stdvec(&contents).unwrap());
    assert_mentions(&err(&bad), &["not valid", "pgp_num 999"]);
    // A valid envelope around garbage.
    assert_mentions(&err(&reseal(&good, &[0xff; 40])), &["does not decode"]);
    // An incremental is not a map, nor the other way round.
    let inc = encode_incremental(&Incremental::new(&map, vec![])).unwrap();
    assert_mentions(&err(&inc), &["bad magic"]);
    assert!(decode_incremental(&good).unwrap_err().to_string().contains("bad magic"));
}

/// Rebuilds the envelope of `template` around `payload` with a correct checksum.
fn reseal(template: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = template[..10].to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_map(&bytes);
        let _ = decode_incremental(&bytes);
    }

    #[test]
    fn mangled_maps_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut desc = uniform(3, 2);
        desc.pools.push(replicated("r", 2, 8));
        let good = encode_map(&build(&desc)).unwrap();
        let mut bytes = good.clone();
        for (at, value) in &flips {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        // Past the checksum too: re-seal so the payload parser and the validator see it.
        let resealed = reseal(&good, &bytes[18..]);
        let _ = decode_map(&bytes);
        let _ = decode_map(&resealed);
    }

    #[test]
    fn random_descriptions_never_panic(text in "\\PC{0,300}") {
        for format in [Format::Toml, Format::Json] {
            if let Ok(desc) = Description::parse(&text, format) {
                let _ = desc.build();
            }
        }
    }
}

#[test]
fn incrementals_refuse_bad_changes_and_leave_the_map_alone() {
    let mut desc = uniform(3, 2);
    desc.pools.push(replicated("r", 3, 16));
    let map = build(&desc);
    let apply = |changes: Vec<MapChange>| map.apply(&Incremental::new(&map, changes)).unwrap_err();
    let missing = OsdId(99);
    assert_eq!(apply(vec![MapChange::OsdUp { osd: missing }]), MapError::NoSuchOsd(missing));
    assert_eq!(apply(vec![MapChange::OsdRemove { osd: OsdId(0) }]), MapError::OsdIsUp(OsdId(0)));
    assert!(matches!(
        apply(vec![MapChange::OsdCreate { osd: OsdId(0) }]),
        MapError::AlreadyExists { .. }
    ));
    let rule = RuleId(0);
    assert!(matches!(apply(vec![MapChange::RuleRemove { rule }]), MapError::RuleInUse { .. }));
    let pool = PoolId(1);
    let shrink = MapChange::PoolSet { pool, setting: PoolSetting::PgNum(8) };
    assert!(apply(vec![shrink]).to_string().contains("merging is not supported"));
    let create = |name: &str| MapChange::PoolCreate {
        name: name.into(),
        kind: PoolKind::Replicated { size: 3, min_size: 2 },
        rule,
        pg_num: 8,
    };
    assert!(matches!(apply(vec![create("r")]), MapError::AlreadyExists { .. }));
    // Two creates of one name in one incremental: the second is refused, so is the whole.
    assert!(matches!(apply(vec![create("x"), create("x")]), MapError::AlreadyExists { .. }));
    let erasure_rule = MapChange::PoolSet { pool, setting: PoolSetting::Rule(RuleId(7)) };
    assert!(apply(vec![erasure_rule]).to_string().contains("rule 7 does not exist"));
    let bad_temp = MapChange::PgTemp { pg: PgId { pool, seed: 99 }, osds: vec![Some(OsdId(0))] };
    assert!(matches!(apply(vec![bad_temp]), MapError::NoSuchPg { .. }));
    let hole = MapChange::PgTemp { pg: PgId { pool, seed: 0 }, osds: vec![None] };
    assert!(apply(vec![hole]).to_string().contains("holes are for erasure-coded pools"));
    let self_map =
        MapChange::PgUpmapItems { pg: PgId { pool, seed: 0 }, pairs: vec![(OsdId(1), OsdId(1))] };
    assert!(apply(vec![self_map]).to_string().contains("to itself"));
    let bad_step = MapChange::RuleCreate {
        name: "y".into(),
        kind: RuleKind::Replicated,
        steps: vec![Step::Take { bucket: BucketId(-12345), class: None }, Step::Emit],
    };
    assert!(matches!(apply(vec![bad_step]), MapError::BadRule { .. }));
    let bucket = map.crush().bucket_by_name("host0").unwrap().id;
    assert!(matches!(
        apply(vec![MapChange::CrushRemoveBucket { bucket }]),
        MapError::BucketNotEmpty(_)
    ));
    // A cycle by moves: the root under one of its hosts.
    let root = map.crush().bucket_by_name("default").unwrap().id;
    let under_host = MapChange::CrushMoveBucket { bucket: root, parent: Some(bucket) };
    assert!(matches!(apply(vec![under_host]), MapError::Cycle(_) | MapError::TypeOrder { .. }));

    // Wrong base and wrong cluster.
    let mut stale = Incremental::new(&map, vec![]);
    stale.base = Epoch(0);
    assert_eq!(
        map.apply(&stale).unwrap_err(),
        MapError::WrongBase { have: Epoch(1), delta_base: Epoch(0) }
    );
    let mut foreign = Incremental::new(&map, vec![]);
    foreign.fsid = [7; 16];
    assert!(map.apply(&foreign).unwrap_err().to_string().contains("another cluster"));
    // After all that the map is unchanged and still at epoch 1.
    assert_eq!(map.epoch(), Epoch(1));
}

#[test]
fn lookups_of_missing_things_are_errors() {
    let mut desc = uniform(2, 1);
    desc.pools.push(replicated("r", 2, 8));
    let map = build(&desc);
    assert_eq!(map.object_pg(PoolId(9), "", b"x").unwrap_err(), MapError::NoSuchPool("9".into()));
    let pg = PgId { pool: PoolId(1), seed: 8 };
    assert_eq!(map.pg_mapping(pg).unwrap_err(), MapError::NoSuchPg { pg, pg_num: 8 });
    assert!(map.rule_mapping(RuleId(5), 0, 3).is_err());
    assert!(map.rule_mapping(RuleId(0), 0, 0).is_err());
    assert!(map.rule_mapping(RuleId(0), 0, 1000).is_err());
}
