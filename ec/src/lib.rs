//! Erasure coding for cairn's pools: the Reed-Solomon codec (`codec`) and the stripe
//! planner (`stripe`) that says which shard bytes a read, write or truncate of an object
//! needs. Pure: no I/O, no clock; the OSD's EC backend drives it.

pub mod codec;
pub mod stripe;

pub use codec::{Codec, Parity};
pub use stripe::{Layout, ReadPlan, WritePlan};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EcError {
    #[error("erasure-code profile: {0}")]
    Profile(String),
    #[error("{got} shards given, {want} expected")]
    ShardCount { got: usize, want: usize },
    #[error("shard of {len} bytes: shards are a non-zero multiple of {align} bytes")]
    ShardSize { len: usize, align: usize },
    #[error("shards of different lengths: {len} and {other} bytes")]
    Mismatch { len: usize, other: usize },
    #[error("{have} shards readable, {need} needed to decode")]
    TooFewShards { have: usize, need: usize },
    #[error("offset and length out of range")]
    Range,
    #[error("codec: {0}")]
    Codec(String),
}
