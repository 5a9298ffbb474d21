//! Server-side copies, as `rados cp` and block images' copy-up: the OSDs read the source
//! themselves, whole (data, xattrs, omap) or a range, and write it with the request's
//! other ops.

use super::*;
use bytes::Bytes;
use proto::osd::{ObjectName, ObjectOp, OpResult};

#[test]
fn copies_carry_data_xattrs_and_omap_from_osd_to_osd() {
    let (c, _osds, work) = replicated_cluster(8);
    let (runtime, objects) = client_objects(&c);
    let data = pattern(7, 3 << 20);
    let src = ObjectName::new("src");
    // More omap entries than one listing page: the copy reads them in pages.
    let omap: Vec<(Vec<u8>, Vec<u8>)> =
        (0..1500u32).map(|i| (format!("k{i:05}").into_bytes(), i.to_le_bytes().to_vec())).collect();
    let ops = vec![
        ObjectOp::WriteFull { len: data.len() as u64 },
        ObjectOp::SetXattr { name: "kind".into(), value: b"parent".to_vec() },
        ObjectOp::OmapSet { entries: omap.clone() },
    ];
    runtime.block_on(objects.op("rbd", &src, ops, Bytes::from(data.clone()))).unwrap();
    let run = |name: &str, ops: Vec<ObjectOp>| {
        runtime.block_on(objects.op("rbd", &ObjectName::new(name), ops, Bytes::new())).unwrap()
    };
    let omap_of = |name: &str| {
        let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        loop {
            let after = all.last().map(|(k, _)| k.clone());
            let answer = run(name, vec![ObjectOp::OmapList { after, max: 1024 }]);
            let [OpResult::OmapList { entries, more }] = &answer.results[..] else {
                panic!("{:?}", answer.results)
            };
            all.extend(entries.iter().cloned());
            if !more {
                return all;
            }
        }
    };
    // A target that had data, an xattr and omap of its own: the copy replaces them all.
    let stale = vec![
        ObjectOp::WriteFull { len: 0 },
        ObjectOp::SetXattr { name: "stale".into(), value: b"x".to_vec() },
        ObjectOp::OmapSet { entries: vec![(b"zz".to_vec(), b"old".to_vec())] },
    ];
    run("dst0", stale);
    // Six targets: their primaries are on every OSD, the source's own among them.
    for i in 0..6 {
        c.ok(&["obj", "cp", "rbd", "src", &format!("dst{i}")]);
    }
    for i in 0..6 {
        let name = format!("dst{i}");
        assert!(get(&c, &work, &name) == data, "{name}: the data");
        let xattrs = run(&name, vec![ObjectOp::GetXattrs]);
        let want = std::collections::BTreeMap::from([("kind".to_owned(), b"parent".to_vec())]);
        assert_eq!(xattrs.results, [OpResult::Xattrs(want)], "{name}: the xattrs");
        assert!(omap_of(&name) == omap, "{name}: the omap");
    }

    // Copy-up and the write that needed it, in one op: a range of the parent, then the
    // child's own bytes over it.
    let ops = vec![
        ObjectOp::CopyRange { source: src.clone(), snap: None, offset: 0, len: 1 << 20, to: 0 },
        ObjectOp::Write { offset: 10, len: 3 },
    ];
    let child = ObjectName::new("child");
    let answer = runtime.block_on(objects.op("rbd", &child, ops, Bytes::from_static(b"NEW")));
    assert_eq!(answer.unwrap().results, [OpResult::Done, OpResult::Done], "one result per op");
    let mut want = data[..1 << 20].to_vec();
    want[10..13].copy_from_slice(b"NEW");
    assert!(get(&c, &work, "child") == want, "the parent's range with the child's write");

    // Bad input: a clear error, nothing written.
    let itself = c.fails(&["obj", "cp", "rbd", "src", "src"]);
    assert!(itself.contains("onto itself"), "{itself}");
    let missing = c.fails(&["obj", "cp", "rbd", "nosuch", "made"]);
    assert!(missing.contains("does not exist"), "{missing}");
    let made = c.fails(&["obj", "stat", "rbd", "made"]);
    assert!(made.contains("does not exist"), "a failed copy creates nothing: {made}");
    let at = c.fails(&["obj", "cp", "rbd", "src", "made", "--snap", "nosuch"]);
    assert!(at.contains("has no snapshot"), "{at}");
    assert!(get(&c, &work, "src") == data);
}
