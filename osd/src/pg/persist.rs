//! A PG's info, log and rollback stashes in its collection's key space: `info`, `log/` +
//! version, and `rb/` + version (erasure-coded shards only, see `rollback`).

use objectstore::{CollectionId, ObjectStore, StoreError, TxOp, keys};
use placement::Version;
use proto::osd::{LogEntry, PgInfo};

use super::log::PgLog;
use super::rollback::Rollback;

const INFO_KEY: &[u8] = b"info";
const LOG_PREFIX: &[u8] = b"log/";
const ROLLBACK_PREFIX: &[u8] = b"rb/";

pub fn log_key(version: Version) -> Vec<u8> {
    let mut key = LOG_PREFIX.to_vec();
    key.extend_from_slice(&version.to_key());
    key
}

pub fn put_info(c: CollectionId, info: &PgInfo) -> TxOp {
    TxOp::CollectionPut { c, key: INFO_KEY.to_vec(), value: keys::encode(info) }
}

pub fn put_entry(c: CollectionId, entry: &LogEntry) -> TxOp {
    TxOp::CollectionPut { c, key: log_key(entry.version), value: keys::encode(entry) }
}

pub fn delete_entry(c: CollectionId, version: Version) -> TxOp {
    TxOp::CollectionDelete { c, key: log_key(version) }
}

/// Deletes log entries at or before `version`.
pub fn trim_to(c: CollectionId, version: Version) -> TxOp {
    let mut end = log_key(version);
    end.push(0);
    TxOp::CollectionDeleteRange { c, start: LOG_PREFIX.to_vec(), end }
}

/// Deletes every log entry.
pub fn clear_log(c: CollectionId) -> TxOp {
    let end = keys::prefix_end(LOG_PREFIX).expect("prefix has an end");
    TxOp::CollectionDeleteRange { c, start: LOG_PREFIX.to_vec(), end }
}

/// The info and log of a collection, if it has an info.
pub fn load(
    store: &dyn ObjectStore,
    c: CollectionId,
) -> Result<Option<(PgInfo, PgLog)>, StoreError> {
    let Some(bytes) = store.collection_get(c, INFO_KEY)? else {
        return Ok(None);
    };
    let info: PgInfo = keys::decode(&format!("info of {c}"), &bytes)?;
    let end = keys::prefix_end(LOG_PREFIX).expect("prefix has an end");
    let mut entries: Vec<LogEntry> = Vec::new();
    let mut start = LOG_PREFIX.to_vec();
    loop {
        let page =
            store.collection_scan(c, &start, Some(&end), objectstore::store::SCAN_ENTRIES_MAX)?;
        let more = page.len() == objectstore::store::SCAN_ENTRIES_MAX;
        for (key, value) in &page {
            entries.push(keys::decode(&format!("log of {c}"), value)?);
            start = key.clone();
            start.push(0);
        }
        if !more {
            break;
        }
    }
    entries.retain(|e| e.version > info.log_tail);
    Ok(Some((info.clone(), PgLog::new(info.log_tail, entries))))
}

fn rollback_key(version: Version) -> Vec<u8> {
    let mut key = ROLLBACK_PREFIX.to_vec();
    key.extend_from_slice(&version.to_key());
    key
}

pub fn put_rollback(c: CollectionId, version: Version, rollback: &Rollback) -> TxOp {
    TxOp::CollectionPut { c, key: rollback_key(version), value: keys::encode(rollback) }
}

pub fn delete_rollback(c: CollectionId, version: Version) -> TxOp {
    TxOp::CollectionDelete { c, key: rollback_key(version) }
}

/// Deletes every rollback stash.
pub fn clear_rollbacks(c: CollectionId) -> TxOp {
    let end = keys::prefix_end(ROLLBACK_PREFIX).expect("prefix has an end");
    TxOp::CollectionDeleteRange { c, start: ROLLBACK_PREFIX.to_vec(), end }
}

pub fn get_rollback(
    store: &dyn ObjectStore,
    c: CollectionId,
    version: Version,
) -> Result<Option<Rollback>, StoreError> {
    store
        .collection_get(c, &rollback_key(version))?
        .map(|bytes| keys::decode(&format!("rollback {version} of {c}"), &bytes))
        .transpose()
}

/// The versions of the rollback stashes a collection holds.
pub fn rollback_versions(
    store: &dyn ObjectStore,
    c: CollectionId,
) -> Result<Vec<Version>, StoreError> {
    let end = keys::prefix_end(ROLLBACK_PREFIX).expect("prefix has an end");
    let mut versions = Vec::new();
    let mut start = ROLLBACK_PREFIX.to_vec();
    loop {
        // Stashes can be large: only the keys are wanted, but a scan returns values too,
        // so pages stay small.
        let page = store.collection_scan(c, &start, Some(&end), 64)?;
        for (key, _) in &page {
            let version = Version::from_key(&key[ROLLBACK_PREFIX.len()..]).ok_or_else(|| {
                StoreError::corrupt(format!("rollbacks of {c}"), "a key is not a version")
            })?;
            versions.push(version);
            start = key.clone();
            start.push(0);
        }
        if page.len() < 64 {
            return Ok(versions);
        }
    }
}
