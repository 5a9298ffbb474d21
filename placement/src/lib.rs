//! Placement for cairn: the cluster map and the pure, deterministic computation of where
//! every object lives.
//!
//! Every client and daemon computes placement from the map alone, with no lookup service on
//! the data path: object name → PG by a stable hash and a stable modulo
//! ([`OsdMap::object_pg`]); PG → OSDs by a CRUSH rule over a hierarchy of failure domains
//! with straw2 buckets ([`OsdMap::pg_mapping`]). The same map gives the same answer on every
//! machine, and a change to the map moves only the data it must.
//!
//! The crate does no I/O and has no async: it is a library of values and functions. It holds
//! the map types ([`OsdMap`], [`CrushMap`], [`Pool`]), their versioned binary encoding
//! ([`encoding`]), incremental maps ([`Incremental`]), the readable description operators
//! write ([`describe`]), the analyses behind `cairn map test` and `cairn map diff`
//! ([`analysis`]), and the upmap balancer ([`balance`]).

pub mod analysis;
pub mod autoscale;
pub mod balance;
pub mod crush;
pub mod describe;
pub mod encoding;
mod error;
pub mod hash;
mod ids;
pub mod incremental;
pub mod osdmap;
pub mod pool;
pub mod snaps;

pub use crush::SHARDS_MAX;
pub use crush::map::{Bucket, CrushMap, Device};
pub use crush::rule::{ChooseMode, Rule, RuleKind, SimpleRule, Step};
pub use error::{DecodeError, MapError};
pub use ids::{
    BUCKET_ID_MIN, BucketId, Epoch, ItemId, OSD_ID_LIMIT, OsdId, PgId, PoolId, Reweight, RuleId,
    Version, Weight,
};
pub use incremental::{Incremental, MapChange, PoolSetting};
pub use osdmap::{Blocklisted, MapContents, MapFlag, OsdMap, OsdSet, OsdState, PgMapping};
pub use pool::{ErasureProfile, Pool, PoolKind};
pub use snaps::{PoolSnaps, SnapMode};
