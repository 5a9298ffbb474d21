//! The object store of an OSD: objects in per-PG collections, changed only by transactions
//! that apply atomically, read back with every byte checked against its crc32c.
//!
//! `ObjectStore` is the trait the OSD programs against. `KvObjectStore` implements it over
//! any ordered key-value `Engine` that can apply a batch atomically: `MemoryEngine` here
//! (for unit tests), RocksDB in the OSD crate. This crate deliberately does not depend on
//! RocksDB, so the PG logic and its tests build without it. It knows nothing of PGs beyond
//! collections and an opaque per-collection key space for their logs and metadata.

pub mod blocks;
pub mod engine;
pub mod error;
pub mod keys;
pub mod store;
pub mod txn;
pub mod types;

pub use blocks::BlockFile;
pub use engine::{Batch, Cf, Engine, MemoryEngine};
pub use error::StoreError;
pub use store::{ChunkPlace, KvObjectStore, ObjectStore, StoreStats};
pub use txn::{Transaction, TxOp};
pub use types::{
    CHUNK_BYTES, CollectionId, NAMESPACE_BYTES_MAX, NO_SHARD, OBJECT_BYTES_MAX,
    OBJECT_NAME_BYTES_MAX, OMAP_KEY_BYTES_MAX, ObjectId, ObjectMeta, SNAP_HEAD, Version,
    XATTR_BYTES_MAX,
};
