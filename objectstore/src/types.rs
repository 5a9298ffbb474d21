//! The values the store is about: collections, object ids, object metadata, versions, and
//! the limits on each.

use std::collections::BTreeMap;
use std::fmt;

use placement::PgId;
pub use placement::Version;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Object data is kept in chunks of this size, each with its own crc32c: a read checks
/// only the chunks it touches, and a small write rewrites at most two chunks.
pub const CHUNK_BYTES: u64 = 64 * 1024;
/// The largest object (Ceph's `osd_max_object_size`).
pub const OBJECT_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// The longest object name (Ceph's `osd_max_object_name_len`).
pub const OBJECT_NAME_BYTES_MAX: usize = 2048;
pub const NAMESPACE_BYTES_MAX: usize = 255;
/// All xattrs of one object together, names included: they live in its metadata record.
pub const XATTR_BYTES_MAX: usize = 64 * 1024;
pub const OMAP_KEY_BYTES_MAX: usize = 4096;
/// The snapshot id of an object's head (the current version); clones get real snap ids.
pub const SNAP_HEAD: u64 = u64::MAX;
/// The shard of a replicated PG's collection; erasure-coded PGs use 0..k+m.
pub const NO_SHARD: u8 = u8::MAX;

const _: () = assert!(OBJECT_BYTES_MAX.is_multiple_of(CHUNK_BYTES));
const _: () = assert!(OBJECT_BYTES_MAX / CHUNK_BYTES <= u32::MAX as u64);

/// A PG's objects on one OSD (for an erasure-coded PG, one shard of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CollectionId {
    pub pg: PgId,
    pub shard: u8,
}

impl CollectionId {
    pub fn replicated(pg: PgId) -> CollectionId {
        CollectionId { pg, shard: NO_SHARD }
    }
}

impl fmt::Display for CollectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shard == NO_SHARD {
            write!(f, "{}", self.pg)
        } else {
            write!(f, "{}s{}", self.pg, self.shard)
        }
    }
}

/// An object within a collection: namespace, name, and which snapshot of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    pub namespace: String,
    pub name: Vec<u8>,
    pub snap: u64,
}

impl ObjectId {
    /// The head of an object in the default namespace.
    pub fn head(name: impl Into<Vec<u8>>) -> ObjectId {
        ObjectId { namespace: String::new(), name: name.into(), snap: SNAP_HEAD }
    }

    pub fn validate(&self) -> Result<(), StoreError> {
        if self.name.is_empty() {
            return Err(StoreError::invalid("object name", "is empty"));
        }
        if self.name.len() > OBJECT_NAME_BYTES_MAX {
            return Err(StoreError::invalid(
                "object name",
                format!("{} bytes is above the limit of {OBJECT_NAME_BYTES_MAX}", self.name.len()),
            ));
        }
        if self.namespace.len() > NAMESPACE_BYTES_MAX {
            return Err(StoreError::invalid(
                "namespace",
                format!(
                    "{} bytes is above the limit of {NAMESPACE_BYTES_MAX}",
                    self.namespace.len()
                ),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}", String::from_utf8_lossy(&self.name))?;
        if self.snap != SNAP_HEAD {
            write!(f, "@{}", self.snap)?;
        }
        Ok(())
    }
}

/// What the store keeps about an object besides its data and omap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub size: u64,
    /// The PG log version of the last change.
    pub version: Version,
    pub mtime_ms: i64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Not maintained (always 0; count with `omap_list`): kept so that the onode
    /// record's encoding stays as it is.
    pub omap_keys: u64,
}

impl ObjectMeta {
    pub fn xattr_bytes(&self) -> usize {
        self.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}
