//! Placement groups: the pure decisions (log, peering, recovery, backfill) and the per-PG task that runs them.

pub mod actor;
pub mod admission;
pub mod backfill;
pub mod copy;
pub mod ec;
pub mod locks;
pub mod log;
pub mod ops;
pub mod peering;
pub mod persist;
pub mod recovery;
pub mod rollback;
pub mod scrub;
pub mod snaps;
pub mod status;
