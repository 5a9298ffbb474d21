//! CRUSH: the hierarchy of failure domains, the rules over it, and the mapper that turns an
//! input into OSDs with straw2 buckets.
//!
//! `map` is the stored form and its edits, `rule` the step programs, `compiled` the dense form
//! the mapper walks, `mapper` the choose algorithms. The OSD map (`crate::osdmap`) owns a
//! compiled CRUSH map and is the only caller of the mapper.

pub(crate) mod compiled;
pub mod map;
pub(crate) mod mapper;
pub mod rule;
mod straw2;

/// The widest set a rule may produce (replicas or EC shards).
pub const SHARDS_MAX: usize = 32;
