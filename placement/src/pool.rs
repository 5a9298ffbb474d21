//! Pools: how many copies or shards each object gets, by which rule, over how many PGs.

use serde::{Deserialize, Serialize};

use crate::MapError;
use crate::crush::SHARDS_MAX;
use crate::ids::{PoolId, RuleId};
use crate::snaps::PoolSnaps;

/// Replicated pools keep at most this many copies.
pub const REPLICAS_MAX: u8 = 10;
/// Upper bound on a pool's `pg_num`.
pub const PG_NUM_MAX: u32 = 1 << 22;
/// Bytes per EC chunk in a stripe unless the profile says otherwise.
pub const STRIPE_UNIT_BYTES_DEFAULT: u32 = 4096;

const _: () = assert!(REPLICAS_MAX as usize <= SHARDS_MAX);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// `size` full copies; writes need `min_size` of them up.
    Replicated { size: u8, min_size: u8 },
    /// `k` data and `m` coding shards per stripe, from the named profile; writes need
    /// `min_size` shards up (`k + 1` by default).
    Erasure { profile: String, k: u8, m: u8, min_size: u8 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub id: PoolId,
    pub name: String,
    pub kind: PoolKind,
    pub rule: RuleId,
    /// Number of PGs objects hash into.
    pub pg_num: u32,
    /// Number of distinct placements among them. It trails `pg_num` while a split's new PGs
    /// are still placed with their parents, so a split and its data movement can be paced.
    pub pgp_num: u32,
    pub snaps: PoolSnaps,
}

impl Pool {
    /// Copies (replicated) or shards (erasure) per PG.
    pub fn size(&self) -> usize {
        match self.kind {
            PoolKind::Replicated { size, .. } => usize::from(size),
            PoolKind::Erasure { k, m, .. } => usize::from(k) + usize::from(m),
        }
    }

    pub fn min_size(&self) -> usize {
        match self.kind {
            PoolKind::Replicated { min_size, .. } | PoolKind::Erasure { min_size, .. } => {
                usize::from(min_size)
            }
        }
    }

    pub fn is_erasure(&self) -> bool {
        matches!(self.kind, PoolKind::Erasure { .. })
    }

    /// Checks the pool on its own; its rule and profile are checked by the OSD map.
    pub fn validate(&self) -> Result<(), MapError> {
        let bad = |reason: String| MapError::BadPool { pool: self.name.clone(), reason };
        crate::crush::map::check_name("pool", &self.name)?;
        match &self.kind {
            PoolKind::Replicated { size, min_size } => {
                if !(1..=REPLICAS_MAX).contains(size) {
                    return Err(bad(format!("size {size} is not in 1..={REPLICAS_MAX}")));
                }
                if !(1..=*size).contains(min_size) {
                    return Err(bad(format!("min_size {min_size} is not in 1..={size}")));
                }
            }
            PoolKind::Erasure { k, m, min_size, .. } => {
                check_k_m(*k, *m).map_err(bad)?;
                if !(*k..=k + m).contains(min_size) {
                    return Err(bad(format!(
                        "min_size {min_size} is not in k..=k+m ({k}..={})",
                        k + m
                    )));
                }
            }
        }
        if !(1..=PG_NUM_MAX).contains(&self.pg_num) {
            return Err(bad(format!("pg_num {} is not in 1..={PG_NUM_MAX}", self.pg_num)));
        }
        if !(1..=self.pg_num).contains(&self.pgp_num) {
            return Err(bad(format!("pgp_num {} is not in 1..=pg_num", self.pgp_num)));
        }
        Ok(())
    }
}

/// Ceph's defaults: `min_size` is `size - size/2` for replicated pools, `k + 1` for EC.
pub fn default_min_size(kind_size: u8, erasure_k: Option<u8>) -> u8 {
    match erasure_k {
        Some(k) => k.saturating_add(1).min(kind_size),
        None => kind_size - kind_size / 2,
    }
}

/// An erasure-code profile: the code's shape, shared by the pools created from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureProfile {
    pub k: u8,
    pub m: u8,
    /// Bytes of each data chunk in a stripe.
    pub stripe_unit_bytes: u32,
    /// Pools created from the profile get a rule of their own placing shards on distinct
    /// buckets of this type (Ceph's crush-failure-domain), on OSDs of `class` if given
    /// (crush-device-class); with neither, the default erasure rule.
    #[serde(default)]
    pub failure_domain: Option<String>,
    #[serde(default)]
    pub class: Option<String>,
}

impl ErasureProfile {
    /// A profile for the default rule.
    pub fn new(k: u8, m: u8, stripe_unit_bytes: u32) -> ErasureProfile {
        ErasureProfile { k, m, stripe_unit_bytes, failure_domain: None, class: None }
    }

    pub fn validate(&self, name: &str) -> Result<(), MapError> {
        crate::crush::map::check_name("erasure-code profile", name)?;
        let bad =
            |reason: String| MapError::invalid(format!("erasure-code profile '{name}'"), reason);
        check_k_m(self.k, self.m).map_err(bad)?;
        for (what, value) in [("failure domain", &self.failure_domain), ("class", &self.class)] {
            if let Some(value) = value {
                crate::crush::map::check_name(what, value)?;
            }
        }
        // The OSDs' stripe planner takes chunks up to 1 MiB (a stripe is read and
        // rewritten whole); a profile it could not serve is refused here.
        let unit = self.stripe_unit_bytes;
        if !unit.is_power_of_two() || !(512..=1 << 20).contains(&unit) {
            return Err(bad(format!(
                "stripe_unit_bytes {unit} is not a power of two in 512..=1 MiB"
            )));
        }
        Ok(())
    }
}

fn check_k_m(k: u8, m: u8) -> Result<(), String> {
    if k == 0 || m == 0 {
        return Err(format!("k={k} m={m}: both must be at least 1"));
    }
    if usize::from(k) + usize::from(m) > SHARDS_MAX {
        return Err(format!("k+m = {} is above {SHARDS_MAX}", usize::from(k) + usize::from(m)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_takes_only_stripe_units_the_osds_can_serve() {
        let profile = |unit| ErasureProfile::new(2, 1, unit);
        for good in [512, 4096, 1 << 20] {
            profile(good).validate("p").unwrap();
        }
        for bad in [0, 100, 3000, 2 << 20, 1 << 24] {
            let e = profile(bad).validate("p").unwrap_err();
            assert!(e.to_string().contains("stripe_unit_bytes"), "{e}");
        }
    }
}
