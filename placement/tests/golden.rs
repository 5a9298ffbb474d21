//! Golden placements: these values are the data format. If one changes, every cluster's
//! data would move on upgrade, so a change here needs a new `HASH_VERSION`, not an update.

use placement::describe::{Description, Format};
use placement::{OsdMap, PgId, PoolId};

const CLUSTER: &str = r#"
[[osd]]
id = 0
weight = 1.0
class = "ssd"
location = { root = "default", rack = "r1", host = "a" }
[[osd]]
id = 1
weight = 2.0
class = "hdd"
location = { root = "default", rack = "r1", host = "a" }
[[osd]]
id = 2
weight = 1.0
class = "ssd"
location = { root = "default", rack = "r1", host = "b" }
[[osd]]
id = 3
weight = 0.5
class = "hdd"
location = { root = "default", rack = "r2", host = "c" }
[[osd]]
id = 4
weight = 1.0
class = "ssd"
location = { root = "default", rack = "r2", host = "d" }
[[osd]]
id = 5
weight = 3.0
class = "hdd"
location = { root = "default", rack = "r2", host = "d" }
reweight = 0.5
[[osd]]
id = 6
weight = 1.0
class = "hdd"
location = { root = "default", rack = "r3", host = "e" }
[[osd]]
id = 7
weight = 1.0
class = "ssd"
location = { root = "default", rack = "r3", host = "f" }

[[rule]]
name = "by_host"
failure_domain = "host"
[[rule]]
name = "ssd_by_rack"
failure_domain = "rack"
class = "ssd"
[[rule]]
name = "ec_by_host"
type = "erasure"
failure_domain = "host"

[[pool]]
name = "rbd"
size = 3
rule = "by_host"
pg_num = 16
[[pool]]
name = "fast"
size = 2
rule = "ssd_by_rack"
pg_num = 12
[[pool]]
name = "ec"
type = "erasure"
k = 3
m = 2
rule = "ec_by_host"
pg_num = 8
"#;

fn map() -> OsdMap {
    Description::parse(CLUSTER, Format::Toml).unwrap().build().unwrap()
}

fn placements(map: &OsdMap, pool: u32) -> Vec<String> {
    let pool = map.pool(PoolId(pool)).unwrap();
    map.pgs(pool).map(|pg| format!("{pg}={}", map.pg_placement(pg).unwrap())).collect()
}

#[test]
fn object_names_hash_to_fixed_pgs() {
    let map = map();
    let got: Vec<String> = ["rbd_header.10a2", "vm-disk-1", "", "bucket/key with spaces"]
        .iter()
        .map(|name| map.object_pg(PoolId(1), "", name.as_bytes()).unwrap().to_string())
        .collect();
    assert_eq!(got, GOLDEN_OBJECTS);
    assert_eq!(map.object_pg(PoolId(1), "tenant", b"vm-disk-1").unwrap(), GOLDEN_NAMESPACED);
}

#[test]
fn replicated_placements_are_fixed() {
    assert_eq!(placements(&map(), 1), GOLDEN_RBD);
    assert_eq!(placements(&map(), 2), GOLDEN_FAST);
}

#[test]
fn erasure_placements_are_fixed() {
    assert_eq!(placements(&map(), 3), GOLDEN_EC);
}

const GOLDEN_OBJECTS: [&str; 4] = ["1.1", "1.e", "1.7", "1.b"];
const GOLDEN_NAMESPACED: PgId = PgId { pool: PoolId(1), seed: 6 };
const GOLDEN_RBD: [&str; 16] = [
    "1.0=[1,4,6]",
    "1.1=[1,6,5]",
    "1.2=[2,0,3]",
    "1.3=[7,0,6]",
    "1.4=[2,5,0]",
    "1.5=[4,6,1]",
    "1.6=[2,0,5]",
    "1.7=[1,6,7]",
    "1.8=[7,1,5]",
    "1.9=[6,0,5]",
    "1.a=[6,1,3]",
    "1.b=[7,0,5]",
    "1.c=[6,0,7]",
    "1.d=[6,5,7]",
    "1.e=[0,7,2]",
    "1.f=[2,7,3]",
];
const GOLDEN_FAST: [&str; 12] = [
    "2.0=[2,4]",
    "2.1=[2,4]",
    "2.2=[4,0]",
    "2.3=[7,0]",
    "2.4=[2,7]",
    "2.5=[7,2]",
    "2.6=[4,7]",
    "2.7=[7,4]",
    "2.8=[0,4]",
    "2.9=[2,4]",
    "2.a=[7,2]",
    "2.b=[2,7]",
];
const GOLDEN_EC: [&str; 8] = [
    "3.0=[1,6,4,2,7]",
    "3.1=[1,2,5,3,6]",
    "3.2=[0,6,2,7,4]",
    "3.3=[0,4,6,7,3]",
    "3.4=[0,7,3,4,2]",
    "3.5=[5,6,2,7,0]",
    "3.6=[6,5,0,2,7]",
    "3.7=[7,0,2,6,4]",
];

/// A flat level wide enough for the vectorised straw2 scans: their result, and the scalar
/// one on machines without AVX2, must be these.
#[test]
fn wide_placements_are_fixed() {
    let mut text = String::new();
    for id in 0..80 {
        let host = id / 2;
        text += &format!(
            "[[osd]]\nid = {id}\nlocation = {{ root = \"default\", host = \"h{host}\" }}\n"
        );
    }
    text += "[[pool]]\nname = \"r\"\npg_num = 256\n[[pool]]\nname = \"e\"\ntype = \"erasure\"\nk = 4\nm = 2\npg_num = 128\n";
    let map = Description::parse(&text, Format::Toml).unwrap().build().unwrap();
    let all: String =
        [1, 2].iter().flat_map(|&p| placements(&map, p)).collect::<Vec<_>>().join(";");
    assert_eq!(format!("{:08x}", crc32(all.as_bytes())), GOLDEN_WIDE_CRC);
}

/// Bitwise CRC-32 (IEEE), so the digest does not depend on another crate's version.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

const GOLDEN_WIDE_CRC: &str = "ae71f70f";
