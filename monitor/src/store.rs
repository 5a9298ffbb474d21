//! The monitors' Raft storage: the log, the vote and snapshots in RocksDB, the state machine
//! (`ClusterState`) in memory.
//!
//! One RocksDB per monitor, two column families: `log` (entry index, big-endian, to the
//! postcard-encoded entry) and `meta` (vote, committed id, last purged id, the latest
//! snapshot). Log appends and votes are written with a synced WAL before openraft is told
//! they are durable; a vote or entry that was acknowledged survives a crash. The state
//! machine lives in memory and is rebuilt at start from the latest snapshot (or the genesis
//! state) plus the committed log after it, which openraft replays.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use proto::RemoteError;
use proto::message::CommandOutput;
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::StateError;
use crate::state::{ClusterState, LogEntry, Snapshot as StateSnapshot};

/// A monitor in the Raft membership: its name (`mon.NAME`) and address.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MonNode {
    pub name: String,
    pub addr: String,
}

impl std::fmt::Display for MonNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mon.{}@{}", self.name, self.addr)
    }
}

/// What applying one log entry answers.
pub type ApplyResult = Result<CommandOutput, RemoteError>;

openraft::declare_raft_types!(
    /// The monitors' Raft: entries are `LogEntry`s, nodes are monitors.
    pub TypeConfig:
        D = LogEntry,
        R = ApplyResult,
        NodeId = u64,
        Node = MonNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;

const CF_LOG: &str = "log";
const CF_META: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
/// Memtable size per column family.
const MEMTABLE_BYTES: usize = 4 << 20;

/// Opens (or creates) the monitor's RocksDB.
pub fn open_db(path: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // The monitor's data is small; keep the background work small too.
    options.set_max_background_jobs(2);
    options.set_keep_log_file_num(4);
    // Small memtables: the log is purged after every snapshot, and RocksDB's default (64 MiB
    // per column family) would let a busy monitor's memory grow to that before a flush.
    let cfs = [CF_LOG, CF_META].map(|name| {
        let mut cf = Options::default();
        cf.set_write_buffer_size(MEMTABLE_BYTES);
        ColumnFamilyDescriptor::new(name, cf)
    });
    Ok(Arc::new(DB::open_cf_descriptors(&options, path, cfs)?))
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, AnyError> {
    postcard::from_bytes(bytes).map_err(|e| AnyError::error(format!("corrupt record: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, AnyError> {
    postcard::to_stdvec(value).map_err(|e| AnyError::error(format!("unencodable record: {e}")))
}

fn io(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> LogStore {
        LogStore { db }
    }

    fn log(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_LOG).expect("the log column family exists")
    }

    fn meta(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_META).expect("the meta column family exists")
    }

    fn get_meta<T: for<'a> Deserialize<'a>>(&self, key: &[u8]) -> Result<Option<T>, AnyError> {
        match self.db.get_cf(self.meta(), key).map_err(io)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), AnyError> {
        self.db.put_cf_opt(self.meta(), key, encode(value)?, &synced()).map_err(io)
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, AnyError> {
        let mut iter = self.db.iterator_cf(self.log(), IteratorMode::End);
        match iter.next() {
            Some(item) => decode(&item.map_err(io)?.1).map(Some),
            None => Ok(None),
        }
    }
}

impl LogStore {
    /// Writes `entries` in one batch with a synced WAL: when this returns, they are durable.
    fn write_entries(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<(), std::io::Error> {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let record = encode(&entry).map_err(|e| std::io::Error::other(e.to_string()))?;
            batch.put_cf(self.log(), key(entry.log_id.index), record);
        }
        self.db.write_opt(batch, &synced()).map_err(std::io::Error::other)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in
            self.db.iterator_cf(self.log(), IteratorMode::From(&key(start), Direction::Forward))
        {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(io(e)))?;
            let index = u64::from_be_bytes(
                k.as_ref().try_into().map_err(|_| StorageIOError::read_logs(io("bad key")))?,
            );
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(&v).map_err(StorageIOError::read_logs)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged: Option<LogId<NodeId>> =
            self.get_meta(KEY_PURGED).map_err(StorageIOError::read_logs)?;
        let last = self.last_entry().map_err(StorageIOError::read_logs)?.map(|e| e.log_id);
        Ok(LogState { last_purged_log_id: purged, last_log_id: last.or(purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(KEY_VOTE, vote).map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(KEY_VOTE).map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.put_meta(KEY_COMMITTED, &committed).map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed: Option<Option<LogId<NodeId>>> =
            self.get_meta(KEY_COMMITTED).map_err(StorageIOError::read)?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = self.write_entries(entries);
        let failed = result.as_ref().err().map(|e| StorageIOError::write_logs(io(e)));
        callback.log_io_completed(result);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Removes every entry from `log_id.index` on (a conflicting suffix).
        self.db
            .delete_range_cf(self.log(), key(log_id.index), key(u64::MAX))
            .and_then(|_| self.db.flush_wal(true))
            .map_err(|e| StorageIOError::write_logs(io(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: a crash in between leaves extra entries, never a gap.
        self.put_meta(KEY_PURGED, &log_id).map_err(StorageIOError::write_logs)?;
        self.db
            .delete_range_cf(self.log(), key(0), key(log_id.index + 1))
            .map_err(|e| StorageIOError::write_logs(io(e)).into())
    }
}

/// The snapshot as kept in `meta`: Raft's metadata and the state.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, MonNode>,
    data: Vec<u8>,
}

/// What the rest of the monitor reads of the state machine.
pub struct Applied {
    pub state: ClusterState,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, MonNode>,
}

/// The state machine: `ClusterState` shared with the daemon, plus the snapshot it last made.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<DB>,
    applied: Arc<RwLock<Applied>>,
    /// Every new map epoch, for subscriptions.
    epochs: watch::Sender<placement::Epoch>,
    /// Serialises snapshot writes.
    persisting: Arc<std::sync::Mutex<()>>,
}

impl StateMachine {
    /// Loads the latest snapshot, or starts from `genesis`.
    pub fn open(db: Arc<DB>, genesis: ClusterState) -> Result<StateMachine, StateError> {
        let meta = db.cf_handle(CF_META).expect("the meta column family exists");
        let stored = db
            .get_cf(meta, KEY_SNAPSHOT)
            .map_err(|e| StateError::Read { what: "snapshot", reason: e.to_string() })?;
        let decoding = |what| move |e: AnyError| StateError::Decode { what, reason: e.to_string() };
        let applied = match stored {
            Some(bytes) => {
                let stored: StoredSnapshot = decode(&bytes).map_err(decoding("snapshot"))?;
                let snapshot: StateSnapshot =
                    decode(&stored.data).map_err(decoding("snapshot's state"))?;
                Applied {
                    state: ClusterState::from_snapshot(snapshot)?,
                    last_applied: stored.meta.last_log_id,
                    membership: stored.meta.last_membership,
                }
            }
            None => Applied {
                state: genesis,
                last_applied: None,
                membership: StoredMembership::default(),
            },
        };
        let (epochs, _) = watch::channel(applied.state.map().epoch());
        Ok(StateMachine {
            db,
            applied: Arc::new(RwLock::new(applied)),
            epochs,
            persisting: Arc::new(std::sync::Mutex::new(())),
        })
    }

    /// Reads the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        f(&self.applied.read().expect("state lock"))
    }

    pub fn epochs(&self) -> watch::Receiver<placement::Epoch> {
        self.epochs.subscribe()
    }

    /// Stores `snapshot` unless a newer one is stored: openraft builds snapshots on a task
    /// of its own, so a build that read the state before an installed snapshot can finish
    /// after it, and must not replace it (the log before the newer one is purged).
    fn persist_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), AnyError> {
        let _one_at_a_time = self.persisting.lock().expect("snapshot lock");
        if let Some(stored) = self.stored_snapshot()?
            && stored.meta.last_log_id > snapshot.meta.last_log_id
        {
            return Ok(());
        }
        let meta = self.db.cf_handle(CF_META).expect("the meta column family exists");
        self.db.put_cf_opt(meta, KEY_SNAPSHOT, encode(snapshot)?, &synced()).map_err(io)
    }

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, AnyError> {
        let meta = self.db.cf_handle(CF_META).expect("the meta column family exists");
        match self.db.get_cf(meta, KEY_SNAPSHOT).map_err(io)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (data, last_log_id, last_membership) =
            self.read(|a| (encode(&a.state.snapshot()), a.last_applied, a.membership.clone()));
        let data = data.map_err(|e| StorageIOError::write_snapshot(None, e))?;
        let snapshot_id = last_log_id
            .map_or_else(|| "empty".to_owned(), |id| format!("{}-{}", id.leader_id, id.index));
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.persist_snapshot(&stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, MonNode>), StorageError<NodeId>>
    {
        Ok(self.read(|a| (a.last_applied, a.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let epoch = {
            let mut applied = self.applied.write().expect("state lock");
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let result = match entry.payload {
                    EntryPayload::Blank => Ok(CommandOutput::Done),
                    EntryPayload::Normal(ref log_entry) => applied.state.apply(log_entry),
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Ok(CommandOutput::Done)
                    }
                };
                results.push(result);
            }
            applied.state.map().epoch()
        };
        self.epochs.send_if_modified(|e| std::mem::replace(e, epoch) != epoch);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MonNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let invalid = |e: AnyError| StorageIOError::read_snapshot(Some(meta.signature()), e);
        let state: StateSnapshot = decode(&data).map_err(invalid)?;
        let state = ClusterState::from_snapshot(state).map_err(|e| invalid(AnyError::error(e)))?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.persist_snapshot(&stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        let epoch = state.map().epoch();
        *self.applied.write().expect("state lock") = Applied {
            state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.epochs.send_replace(epoch);
        tracing::info!(
            last_log_id = ?meta.last_log_id,
            %epoch,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = self.stored_snapshot().map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

/// Nodes of a membership by id, for configuration and status.
pub fn members(membership: &StoredMembership<NodeId, MonNode>) -> BTreeMap<NodeId, MonNode> {
    membership.membership().nodes().map(|(id, node)| (*id, node.clone())).collect()
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{RaftLogReader, StorageError};

    use super::*;
    use crate::state::Genesis;

    fn genesis() -> ClusterState {
        Genesis { fsid: [3; 16], ca_pem: String::new(), identities: vec![] }.state()
    }

    /// A fresh store in a temporary directory, which lives as long as the store.
    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let db = open_db(dir.path()).expect("open RocksDB");
            let state = StateMachine::open(db.clone(), genesis()).expect("a state machine");
            Ok((dir, LogStore::new(db), state))
        }
    }

    /// openraft's own conformance suite: log reads, appends, truncation, purging, votes,
    /// applying entries and snapshots, each against what Raft needs of storage.
    #[test]
    fn the_store_passes_openraft_storage_suite() {
        Suite::test_all(Builder).unwrap();
    }

    #[test]
    fn votes_entries_and_snapshots_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let vote = openraft::Vote::new_committed(4, 2);
            let entries: Vec<openraft::Entry<TypeConfig>> = (1..=5)
                .map(|i| openraft::Entry {
                    log_id: LogId::new(openraft::CommittedLeaderId::new(4, 2), i),
                    payload: openraft::EntryPayload::Blank,
                })
                .collect();
            {
                let db = open_db(dir.path()).unwrap();
                let mut log = LogStore::new(db.clone());
                log.save_vote(&vote).await.unwrap();
                log.write_entries(entries.clone()).unwrap();
                log.truncate(entries[3].log_id).await.unwrap();
                log.purge(entries[0].log_id).await.unwrap();
                let mut state = StateMachine::open(db, genesis()).unwrap();
                state.apply(entries[..3].to_vec()).await.unwrap();
                state.build_snapshot().await.unwrap();
            }
            let db = open_db(dir.path()).unwrap();
            let mut log = LogStore::new(db.clone());
            assert_eq!(log.read_vote().await.unwrap(), Some(vote));
            let read = log.try_get_log_entries(0..10).await.unwrap();
            let indexes: Vec<u64> = read.iter().map(|e| e.log_id.index).collect();
            assert_eq!(indexes, [2, 3], "purged 1, truncated 4 and after");
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(entries[0].log_id));
            let mut machine = StateMachine::open(db, genesis()).unwrap();
            let (applied, _) = machine.applied_state().await.unwrap();
            assert_eq!(applied, Some(entries[2].log_id), "the snapshot was reloaded");
        });
    }
}
