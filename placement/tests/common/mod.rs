//! Cluster descriptions shared by the placement integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use placement::OsdMap;
use placement::describe::{Description, OsdDesc, PoolDesc};

/// One host per entry, holding OSDs of the given weights, all under root "default".
pub fn hosts(weights: &[Vec<f64>]) -> Description {
    let mut desc = Description::default();
    let mut id = 0;
    for (h, osds) in weights.iter().enumerate() {
        for &weight in osds {
            desc.osds.push(osd(id, weight, &format!("host{h}")));
            id += 1;
        }
    }
    desc
}

/// `n` hosts of `per_host` OSDs of weight 1.
pub fn uniform(n: usize, per_host: usize) -> Description {
    hosts(&vec![vec![1.0; per_host]; n])
}

pub fn osd(id: u32, weight: f64, host: &str) -> OsdDesc {
    let location: BTreeMap<String, String> =
        [("root".to_owned(), "default".to_owned()), ("host".to_owned(), host.to_owned())].into();
    OsdDesc { id, weight, class: None, location, up: true, is_in: true, reweight: 1.0 }
}

pub fn replicated(name: &str, size: u8, pg_num: u32) -> PoolDesc {
    PoolDesc::replicated(name, size).with_pg_num(pg_num)
}

pub fn erasure(name: &str, k: u8, m: u8, pg_num: u32) -> PoolDesc {
    PoolDesc::erasure(name, k, m).with_pg_num(pg_num)
}

pub fn build(desc: &Description) -> OsdMap {
    desc.build().unwrap_or_else(|e| panic!("description does not build: {e}"))
}
