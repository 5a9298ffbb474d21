//! The OSD: a daemon that keeps objects in RocksDB and serves the PGs the map gives it.

pub mod caps;
pub mod daemon;
pub mod error;
pub mod failpoints;
pub mod pg;
pub mod rocks;
pub mod space;
pub mod syncer;
pub mod throttle;
pub mod tracker;
