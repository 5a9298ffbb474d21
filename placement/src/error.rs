//! The errors of the placement crate. Each names what was wrong and where, so the CLI and the
//! monitors can pass it to an operator as is.

use thiserror::Error;

use crate::ids::{Epoch, OsdId, PgId, PoolId};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MapError {
    #[error("no pool {0}")]
    NoSuchPool(String),
    #[error("PG {pg} does not exist: its pool has pg_num {pg_num}")]
    NoSuchPg { pg: PgId, pg_num: u32 },
    #[error("no OSD {0}")]
    NoSuchOsd(OsdId),
    #[error("no CRUSH bucket '{0}'")]
    NoSuchBucket(String),
    #[error("no CRUSH rule '{0}'")]
    NoSuchRule(String),
    #[error("no bucket type '{name}' (known types: {known})")]
    NoSuchType { name: String, known: String },
    #[error("no device class '{0}': no OSD in the CRUSH map has it")]
    NoSuchClass(String),
    #[error("no erasure-code profile '{0}'")]
    NoSuchProfile(String),
    #[error("{what} '{name}' already exists")]
    AlreadyExists { what: &'static str, name: String },
    #[error("cycle in the CRUSH hierarchy: {0}")]
    Cycle(String),
    #[error(
        "'{parent}' (type {parent_type}) cannot contain '{child}' (type {child_type}): \
         a bucket's children must be of a lower type"
    )]
    TypeOrder { parent: String, parent_type: String, child: String, child_type: String },
    #[error("'{item}' is in two buckets, '{first}' and '{second}'; an item has one parent")]
    TwoParents { item: String, first: String, second: String },
    #[error("bucket '{0}' is not empty; move or remove its items first")]
    BucketNotEmpty(String),
    #[error("{0} is up; it must be down to be removed")]
    OsdIsUp(OsdId),
    #[error("rule '{rule}' is used by pool '{pool}'")]
    RuleInUse { rule: String, pool: String },
    #[error("rule '{rule}': {reason}")]
    BadRule { rule: String, reason: String },
    #[error("pool '{pool}': {reason}")]
    BadPool { pool: String, reason: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("too many {what}: the limit is {limit}")]
    Limit { what: &'static str, limit: u64 },
    #[error("incremental for epoch {delta_base} cannot apply to the map at epoch {have}")]
    WrongBase { have: Epoch, delta_base: Epoch },
    #[error("pool {0} would need more shards than the mapper supports")]
    PoolTooWide(PoolId),
}

impl MapError {
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> MapError {
        MapError::Invalid { what: what.into(), reason: reason.into() }
    }
}

/// Errors decoding an encoded map or incremental.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("not a cairn {expected} (bad magic)")]
    BadMagic { expected: &'static str },
    #[error("{what} is {len} bytes; the limit is {limit}")]
    TooLarge { what: &'static str, len: usize, limit: usize },
    #[error("{what} is truncated: {len} bytes, expected at least {need}")]
    Truncated { what: &'static str, len: usize, need: usize },
    #[error("{what} has format version {version}; this build reads versions up to {supported}")]
    UnsupportedVersion { what: &'static str, version: u16, supported: u16 },
    #[error("{what} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { what: &'static str, stored: u32, computed: u32 },
    #[error("{what} payload does not decode: {reason}")]
    Payload { what: &'static str, reason: String },
    #[error("{what} decodes but is not valid: {source}")]
    Invalid {
        what: &'static str,
        #[source]
        source: MapError,
    },
}
