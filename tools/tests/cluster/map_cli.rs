//! `cairn map` as a user runs it: a separate process, files on disk, exit codes and output.

use std::path::Path;
use std::process::{Command, Output};

fn cairn(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run cairn")
}

fn ok(args: &[&str], dir: &Path) -> String {
    let out = cairn(args, dir);
    assert!(
        out.status.success(),
        "cairn {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn fails(args: &[&str], dir: &Path) -> String {
    let out = cairn(args, dir);
    assert_eq!(out.status.code(), Some(1), "cairn {args:?} should fail with 1: {:?}", out);
    assert!(out.stdout.is_empty(), "a failing command printed to stdout");
    String::from_utf8(out.stderr).expect("UTF-8 error")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn synth_build_show_test_diff() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let desc = ok(
        &[
            "map",
            "synth",
            "--layout",
            "root=1,host=8",
            "--osds-per-leaf",
            "2",
            "--replicated-pool",
            "rbd",
            "--erasure-pool",
            "ec:2+1",
        ],
        d,
    );
    std::fs::write(d.join("cluster.toml"), &desc).unwrap();
    let built = ok(&["map", "build", "cluster.toml"], d);
    assert!(built.contains("wrote cluster.map: epoch 1, 16 OSDs"), "{built}");
    let built =
        json(&ok(&["map", "build", "cluster.toml", "-o", "again.map", "--format", "json"], d));
    assert_eq!((built["osds"].as_u64(), built["pools"].as_u64()), (Some(16), Some(2)));
    let as_json = ok(
        &["map", "synth", "--layout", "root=1,host=8", "--osds-per-leaf", "2", "--format", "json"],
        d,
    );
    assert_eq!(json(&as_json)["osd"].as_array().unwrap().len(), 16);

    let shown = ok(&["map", "show", "cluster.map"], d);
    for want in [
        "root default",
        "host host7",
        "osd.15",
        "replicated_rule",
        "'rbd' replicated size 3",
        "'ec' erasure k=2 m=1",
    ] {
        assert!(shown.contains(want), "show lacks '{want}':\n{shown}");
    }
    let shown = json(&ok(&["map", "show", "cluster.map", "--format", "json"], d));
    assert_eq!(shown["epoch"], 1);
    assert_eq!(shown["osds"].as_object().unwrap().len(), 16);

    let tested = ok(&["map", "test", "cluster.map"], d);
    assert!(tested.contains("pool 'rbd' (id 1)") && tested.contains("violations 0"), "{tested}");
    let tested = json(&ok(&["map", "test", "cluster.toml", "--pool", "ec", "--format", "json"], d));
    let dist = &tested["pools"][0]["distribution"];
    assert_eq!(dist["violations"], 0);
    assert_eq!(dist["short"], 0);
    assert_eq!(dist["per_osd"].as_array().unwrap().len(), 16);
    let rule = json(&ok(
        &[
            "map",
            "test",
            "cluster.map",
            "--rule",
            "erasure_rule",
            "--num-rep",
            "3",
            "--inputs",
            "500",
            "--format",
            "json",
        ],
        d,
    ));
    assert_eq!(rule["rule"]["distribution"]["placed"], 1500);

    // Grow by one host and compare: only the new OSDs receive copies.
    let grown =
        desc.clone() + "\n[[osd]]\nid = 16\nlocation = { host = \"host8\", root = \"default\" }\n";
    std::fs::write(d.join("grown.toml"), grown).unwrap();
    let diff = ok(&["map", "diff", "cluster.toml", "grown.toml"], d);
    assert!(diff.contains("copies arrive on: osd.16"), "{diff}");
    let diff = json(&ok(&["map", "diff", "cluster.map", "grown.toml", "--format", "json"], d));
    let rbd = &diff["pools"][0];
    assert_eq!(rbd["pool"], "rbd");
    assert!(rbd["copies_moved"].as_u64().unwrap() > 0);
    assert_eq!(rbd["moved_to"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["16"]);
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = fails(&["map", "show", "missing.map"], d);
    assert!(err.starts_with("error: read missing.map"), "{err}");

    std::fs::write(
        d.join("broken.toml"),
        "[[osd]]\nid = 0\nlocation = { host = \"a\", rak = \"b\" }\n",
    )
    .unwrap();
    let err = fails(&["map", "build", "broken.toml"], d);
    assert!(err.contains("no bucket type 'rak'") && err.contains("osd.0"), "{err}");

    std::fs::write(d.join("syntax.toml"), "[[osd]\n").unwrap();
    let err = fails(&["map", "test", "syntax.toml"], d);
    assert!(err.contains("parse description syntax.toml") && err.contains("line 1"), "{err}");

    std::fs::write(d.join("binary.map"), [0xffu8, 0xfe, 0x00, 0x01]).unwrap();
    let err = fails(&["map", "show", "binary.map"], d);
    assert!(err.contains("neither a cairn map nor a UTF-8 description"), "{err}");

    let mut corrupt = b"CAIRNMAP".to_vec();
    corrupt.extend_from_slice(&[1, 0, 200, 0, 0, 0, 1, 2, 3, 4, 9, 9]);
    std::fs::write(d.join("corrupt.map"), corrupt).unwrap();
    let err = fails(&["map", "show", "corrupt.map"], d);
    assert!(err.contains("decode map corrupt.map") && err.contains("truncated"), "{err}");

    ok(&["map", "synth", "--layout", "root=1,host=3"], d);
    let err = fails(&["map", "synth", "--layout", "root=1,host"], d);
    assert!(err.contains("not TYPE=COUNT"), "{err}");
    let err = fails(&["map", "synth", "--layout", "root=1,host=1000,osd=1000"], d);
    assert!(err.contains("limit"), "{err}");
    // Layouts whose product overflows, or that make buckets without OSDs, are refused too.
    let huge = "a=100000,b=100000,c=100000,d=100000";
    let err = fails(&["map", "synth", "--layout", huge], d);
    assert!(err.contains("more buckets than the limit"), "{err}");
    let err = fails(
        &["map", "synth", "--layout", "root=1,rack=100000,host=100000", "--osds-per-leaf", "0"],
        d,
    );
    assert!(err.contains("at least one OSD"), "{err}");

    std::fs::write(
        d.join("ok.toml"),
        "[[osd]]\nid = 0\nlocation = { root = \"default\", host = \"a\" }\n",
    )
    .unwrap();
    let err = fails(&["map", "test", "ok.toml"], d);
    assert!(err.contains("no pools"), "{err}");
    let err = fails(&["map", "test", "ok.toml", "--rule", "nope"], d);
    assert!(err.contains("no rule 'nope'"), "{err}");
    let err = fails(&["map", "build", "ok.toml", "-o", "ok.toml"], d);
    assert!(err.contains("refusing to overwrite"), "{err}");

    // clap rejects unknown arguments with its own exit code and message.
    let out = cairn(&["map", "show", "--frobnicate"], d);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn demo_writes_maps_the_other_commands_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(&["map", "demo", "--dir", "demo"], d);
    for want in ["a hole, not a move", "marked out", "13th host", "map show demo/cluster.map"] {
        assert!(out.contains(want), "demo output lacks '{want}':\n{out}");
    }
    for file in ["cluster.toml", "cluster.map", "host-out.map", "host-added.map"] {
        assert!(d.join("demo").join(file).exists(), "demo did not write {file}");
    }
    let diff = ok(&["map", "diff", "demo/cluster.map", "demo/host-out.map"], d);
    assert!(diff.contains("epoch 1 -> 3"), "{diff}");
}

#[test]
fn balance_writes_a_map_within_a_copy_of_every_share() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let desc = ok(
        &[
            "map",
            "synth",
            "--layout",
            "root=1,host=10",
            "--osds-per-leaf",
            "3",
            "--replicated-pool",
            "rbd",
        ],
        d,
    );
    std::fs::write(d.join("c.toml"), desc).unwrap();
    let plan = json(&ok(&["map", "balance", "c.toml", "-o", "b.map", "--format", "json"], d));
    let rbd = &plan["pools"][0];
    assert!(rbd["moves"].as_u64().unwrap() > 0, "{plan}");
    assert!(rbd["after"]["max_over"].as_f64().unwrap() <= 1.0, "{plan}");
    let tested = json(&ok(&["map", "test", "b.map", "--format", "json"], d));
    let dist = &tested["pools"][0]["distribution"];
    assert_eq!(dist["violations"], 0);
    assert_eq!(dist["per_osd"].as_array().unwrap().len(), 30, "10 hosts of 3: {dist}");
    for osd in dist["per_osd"].as_array().unwrap() {
        let off = osd["count"].as_f64().unwrap() - osd["expected"].as_f64().unwrap();
        assert!(off.abs() <= 1.0, "{osd}");
    }
    let shown = ok(&["map", "show", "b.map"], d);
    assert!(shown.contains("pg_upmap_items"), "{shown}");
    let shown = json(&ok(&["map", "show", "b.map", "--format", "json"], d));
    let upmaps = shown["pg_upmap_items"].as_object().unwrap();
    assert!(!upmaps.is_empty() && upmaps.keys().all(|pg| pg.starts_with("1.")), "{upmaps:?}");
    let err = fails(&["map", "balance", "c.toml", "-o", "x.map", "--pool", "nope"], d);
    assert!(err.contains("no pool 'nope'"), "{err}");
}
