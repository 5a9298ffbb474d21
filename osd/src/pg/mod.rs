//! Placement groups: the pure decisions (log, peering) and the per-PG task that runs them.

pub mod actor;
pub mod ec;
pub mod log;
pub mod ops;
pub mod peering;
pub mod persist;
pub mod rollback;
pub mod scrub;
