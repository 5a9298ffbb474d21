//! The on-disk layout: how collections, objects, chunks and omap entries become keys, and
//! how records are encoded. Part of the data format: changing it needs a migration.
//!
//! Every key starts with its collection (pool, seed, shard: 9 bytes, big-endian), so one
//! PG's keys are contiguous. An object's key is self-delimiting (length-prefixed namespace
//! and name, then the snap id), so an object's chunks and omap entries share a prefix that
//! no other object's keys start with.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::types::{CollectionId, ObjectId};
use placement::{PgId, PoolId};

pub const COLLECTION_KEY_BYTES: usize = 9;
/// The first byte of every encoded record: the record format's version.
pub const RECORD_VERSION: u8 = 1;

pub fn collection(c: CollectionId) -> [u8; COLLECTION_KEY_BYTES] {
    let mut key = [0u8; COLLECTION_KEY_BYTES];
    key[..4].copy_from_slice(&c.pg.pool.0.to_be_bytes());
    key[4..8].copy_from_slice(&c.pg.seed.to_be_bytes());
    key[8] = c.shard;
    key
}

pub fn parse_collection(key: &[u8]) -> Option<CollectionId> {
    let key: &[u8; COLLECTION_KEY_BYTES] = key.get(..COLLECTION_KEY_BYTES)?.try_into().ok()?;
    let pool = u32::from_be_bytes(key[..4].try_into().ok()?);
    let seed = u32::from_be_bytes(key[4..8].try_into().ok()?);
    Some(CollectionId { pg: PgId { pool: PoolId(pool), seed }, shard: key[8] })
}

/// Collection + object: the key of its metadata, and the prefix of its chunks and omap.
pub fn object(c: CollectionId, oid: &ObjectId) -> Vec<u8> {
    let mut key =
        Vec::with_capacity(COLLECTION_KEY_BYTES + 11 + oid.namespace.len() + oid.name.len());
    key.extend_from_slice(&collection(c));
    push_object(&mut key, oid);
    key
}

/// Where an object sorts among its collection's objects: `list` returns them in this order.
pub fn object_order(oid: &ObjectId) -> Vec<u8> {
    let mut key = Vec::with_capacity(11 + oid.namespace.len() + oid.name.len());
    push_object(&mut key, oid);
    key
}

fn push_object(key: &mut Vec<u8>, oid: &ObjectId) {
    // Lengths were validated (namespace <= 255, name <= 2048).
    key.push(oid.namespace.len() as u8);
    key.extend_from_slice(oid.namespace.as_bytes());
    key.extend_from_slice(&(oid.name.len() as u16).to_be_bytes());
    key.extend_from_slice(&oid.name);
    key.extend_from_slice(&oid.snap.to_be_bytes());
}

/// The object a metadata key names (the inverse of `object`).
pub fn parse_object(key: &[u8]) -> Option<(CollectionId, ObjectId)> {
    let c = parse_collection(key)?;
    let rest = &key[COLLECTION_KEY_BYTES..];
    let ns_len = usize::from(*rest.first()?);
    let namespace = String::from_utf8(rest.get(1..1 + ns_len)?.to_vec()).ok()?;
    let rest = &rest[1 + ns_len..];
    let name_len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
    let name = rest.get(2..2 + name_len)?.to_vec();
    let snap = u64::from_be_bytes(rest.get(2 + name_len..)?.try_into().ok()?);
    Some((c, ObjectId { namespace, name, snap }))
}

pub fn chunk(object_key: &[u8], index: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(object_key.len() + 4);
    key.extend_from_slice(object_key);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

pub fn omap(object_key: &[u8], user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(object_key.len() + user_key.len());
    key.extend_from_slice(object_key);
    key.extend_from_slice(user_key);
    key
}

/// A key in a collection's own key space (PG log and info).
pub fn collection_meta(c: CollectionId, user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(COLLECTION_KEY_BYTES + user_key.len());
    key.extend_from_slice(&collection(c));
    key.extend_from_slice(user_key);
    key
}

/// The first key after every key that starts with `prefix` (for range ends); `None` if
/// there is none (all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A record: version byte, then postcard.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // postcard into a Vec fails only on allocation failure or unsupported types, which
    // our record types are not.
    out.extend_from_slice(&postcard::to_stdvec(value).expect("records encode"));
    out
}

pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => postcard::from_bytes(rest)
            .map_err(|e| StoreError::corrupt(what.to_owned(), format!("does not decode: {e}"))),
        Some((v, _)) => Err(StoreError::corrupt(what.to_owned(), format!("record version {v}"))),
        None => Err(StoreError::corrupt(what.to_owned(), "empty record")),
    }
}

/// A chunk value: crc32c (little-endian) of the bytes, then the bytes.
pub fn encode_chunk(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len());
    out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// The bytes of a chunk value, after checking them against their crc32c.
pub fn decode_chunk(what: impl FnOnce() -> String, value: &[u8]) -> Result<&[u8], StoreError> {
    if value.len() < 4 {
        return Err(StoreError::corrupt(what(), "chunk shorter than its checksum"));
    }
    let stored = u32::from_le_bytes(value[..4].try_into().expect("4 bytes"));
    let data = &value[4..];
    let actual = crc32c::crc32c(data);
    if stored != actual {
        return Err(StoreError::corrupt(
            what(),
            format!("crc32c {actual:08x}, stored {stored:08x}"),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_round_trip_and_are_prefix_free() {
        let c = CollectionId { pg: PgId { pool: PoolId(3), seed: 7 }, shard: 2 };
        let a = ObjectId { namespace: "ns".into(), name: b"ab".to_vec(), snap: 4 };
        let key = object(c, &a);
        assert_eq!(parse_object(&key), Some((c, a.clone())));
        let b = ObjectId { namespace: "ns".into(), name: b"abc".to_vec(), snap: 4 };
        assert!(!object(c, &b).starts_with(&key));
        let shorter = ObjectId { name: b"a".to_vec(), ..a.clone() };
        assert!(!key.starts_with(&object(c, &shorter)));
    }

    #[test]
    fn chunk_checksum_catches_a_flipped_bit() {
        let mut value = encode_chunk(b"hello");
        assert_eq!(decode_chunk(|| "c".into(), &value).unwrap(), b"hello");
        value[6] ^= 1;
        assert!(matches!(decode_chunk(|| "c".into(), &value), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn prefix_end_skips_trailing_ff() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
