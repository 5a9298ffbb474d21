//! Identifiers and fixed-point weights shared by every map type.
//!
//! Ids follow Ceph's conventions so operators can read them at a glance: OSDs are
//! non-negative (`osd.3`), CRUSH buckets are negative, a PG is `pool.seed` with the seed in
//! hex (`2.1f`). Weights are 16.16 fixed point (`0x10000` is 1.0) because placement must be
//! bit-for-bit identical on every machine, and floating point is not.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// OSD ids are below this bound. It keeps per-OSD tables dense and leaves the top of the
/// `i32` range free for the internal "no OSD" markers of the mapper.
pub const OSD_ID_LIMIT: u32 = 1 << 20;

/// Bucket ids are at or above this bound (they are negative).
pub const BUCKET_ID_MIN: i32 = -(1 << 30);

/// An OSD, `osd.N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OsdId(pub u32);

impl fmt::Display for OsdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "osd.{}", self.0)
    }
}

impl FromStr for OsdId {
    type Err = String;

    /// Accepts `osd.N` or a bare `N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix("osd.").unwrap_or(s);
        let id: u32 = digits.parse().map_err(|_| format!("'{s}' is not an OSD id (osd.N)"))?;
        if id >= OSD_ID_LIMIT {
            return Err(format!("OSD id {id} is not below the limit {OSD_ID_LIMIT}"));
        }
        Ok(OsdId(id))
    }
}

/// A CRUSH bucket (host, rack, ...): always negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BucketId(pub i32);

impl BucketId {
    pub fn is_valid(self) -> bool {
        (BUCKET_ID_MIN..0).contains(&self.0)
    }
}

impl fmt::Display for BucketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A node of the CRUSH hierarchy: an OSD (`>= 0`) or a bucket (`< 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemId(pub i32);

impl ItemId {
    pub fn osd(self) -> Option<OsdId> {
        u32::try_from(self.0).ok().map(OsdId)
    }

    pub fn bucket(self) -> Option<BucketId> {
        (self.0 < 0).then_some(BucketId(self.0))
    }
}

impl From<OsdId> for ItemId {
    fn from(osd: OsdId) -> Self {
        debug_assert!(osd.0 < OSD_ID_LIMIT);
        ItemId(osd.0 as i32)
    }
}

impl From<BucketId> for ItemId {
    fn from(bucket: BucketId) -> Self {
        ItemId(bucket.0)
    }
}

/// A pool. Pool ids are never reused within a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PoolId(pub u32);

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A CRUSH rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuleId(pub u32);

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A map epoch. Every committed change to the cluster map makes a new one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The following epoch; `None` at the end of the range (a map cannot change further).
    pub fn checked_next(self) -> Option<Epoch> {
        self.0.checked_add(1).map(Epoch)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A PG log position (Ceph's `eversion_t`): the map epoch the primary wrote it in, then a sequence number that
/// only grows within the PG. Ordered by epoch first, as Ceph's `eversion_t`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    pub epoch: u64,
    pub seq: u64,
}

impl Version {
    pub const ZERO: Version = Version { epoch: 0, seq: 0 };

    pub fn new(epoch: u64, seq: u64) -> Version {
        Version { epoch, seq }
    }

    /// Big-endian, so that byte order is version order (log keys).
    pub fn to_key(self) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.epoch.to_be_bytes());
        key[8..].copy_from_slice(&self.seq.to_be_bytes());
        key
    }

    pub fn from_key(key: &[u8]) -> Option<Version> {
        let key: &[u8; 16] = key.try_into().ok()?;
        let epoch = u64::from_be_bytes(key[..8].try_into().ok()?);
        let seq = u64::from_be_bytes(key[8..].try_into().ok()?);
        Some(Version { epoch, seq })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

/// A placement group: `pool.seed`, printed with the seed in hex as Ceph does (`2.1f`).
/// Human-readable encodings (JSON, TOML) write it in that form, so it can key a map there;
/// binary ones write the two numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgId {
    pub pool: PoolId,
    pub seed: u32,
}

impl Serialize for PgId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            (self.pool.0, self.seed).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for PgId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            let (pool, seed) = <(u32, u32)>::deserialize(deserializer)?;
            Ok(PgId { pool: PoolId(pool), seed })
        }
    }
}

impl fmt::Display for PgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:x}", self.pool.0, self.seed)
    }
}

impl FromStr for PgId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a PG id (POOL.SEED, seed in hex, e.g. 2.1f)");
        let (pool, seed) = s.split_once('.').ok_or_else(bad)?;
        let pool = pool.parse().map_err(|_| bad())?;
        let seed = u32::from_str_radix(seed, 16).map_err(|_| bad())?;
        Ok(PgId { pool: PoolId(pool), seed })
    }
}

/// 16.16 fixed point: `ONE` is 1.0.
const FIXED_ONE: u32 = 0x10000;

/// A CRUSH weight: the capacity share of an OSD (by convention its size in TiB), 16.16 fixed
/// point. Bucket weights are sums of these and are kept in `u64`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Weight(pub u32);

impl Weight {
    pub const ZERO: Weight = Weight(0);
    pub const ONE: Weight = Weight(FIXED_ONE);

    /// Converts an operator-facing decimal weight, rounding to the nearest 1/65536.
    pub fn from_f64(value: f64) -> Result<Weight, String> {
        fixed_from_f64(value, u32::MAX).map(Weight)
    }

    pub fn to_f64(self) -> f64 {
        f64::from(self.0) / f64::from(FIXED_ONE)
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.5}", self.to_f64())
    }
}

/// An operator's override on top of the CRUSH weight, in [0, 1] (`ceph osd reweight`):
/// below 1.0 the OSD rejects that fraction of the placements CRUSH gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Reweight(pub u32);

impl Reweight {
    pub const ZERO: Reweight = Reweight(0);
    pub const ONE: Reweight = Reweight(FIXED_ONE);

    pub fn from_f64(value: f64) -> Result<Reweight, String> {
        fixed_from_f64(value, FIXED_ONE).map(Reweight)
    }

    pub fn to_f64(self) -> f64 {
        f64::from(self.0) / f64::from(FIXED_ONE)
    }

    pub fn is_valid(self) -> bool {
        self.0 <= FIXED_ONE
    }
}

impl Default for Reweight {
    fn default() -> Self {
        Reweight::ONE
    }
}

impl fmt::Display for Reweight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.5}", self.to_f64())
    }
}

fn fixed_from_f64(value: f64, max: u32) -> Result<u32, String> {
    let limit = f64::from(max) / f64::from(FIXED_ONE);
    if !value.is_finite() || value < 0.0 {
        return Err(format!("weight {value} is not a finite number >= 0"));
    }
    let scaled = (value * f64::from(FIXED_ONE)).round();
    if scaled > f64::from(max) {
        return Err(format!("weight {value} is above the maximum {limit:.5}"));
    }
    Ok(scaled as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_id_round_trips_through_text() {
        let pg = PgId { pool: PoolId(2), seed: 0x1f };
        assert_eq!(pg.to_string(), "2.1f");
        assert_eq!("2.1f".parse::<PgId>().unwrap(), pg);
        assert!("2".parse::<PgId>().is_err());
        assert!("x.1".parse::<PgId>().is_err());
        assert!("1.zz".parse::<PgId>().is_err());
    }

    #[test]
    fn weights_are_fixed_point_and_bounded() {
        assert_eq!(Weight::from_f64(1.0).unwrap(), Weight::ONE);
        assert_eq!(Weight::from_f64(0.5).unwrap(), Weight(0x8000));
        assert!(Weight::from_f64(-1.0).is_err());
        assert!(Weight::from_f64(f64::NAN).is_err());
        assert!(Weight::from_f64(70000.0).is_err());
        assert_eq!(Reweight::from_f64(1.0).unwrap(), Reweight::ONE);
        assert!(Reweight::from_f64(1.5).is_err());
        assert_eq!(Weight(0x18000).to_string(), "1.50000");
    }

    #[test]
    fn osd_ids_parse_with_or_without_prefix() {
        assert_eq!("osd.7".parse::<OsdId>().unwrap(), OsdId(7));
        assert_eq!("7".parse::<OsdId>().unwrap(), OsdId(7));
        assert!("osd.-1".parse::<OsdId>().is_err());
        assert!(format!("{}", OSD_ID_LIMIT).parse::<OsdId>().is_err());
    }
}
