//! What the OSD's own work fails with: the tasks a PG runs against its peers and its store
//! (peering rounds, activation, recovery, backfill, scrub). Each variant names the OSD or
//! object it concerns, so the log and a PG's blocked reason say who; code tells a peer it
//! could not reach from one that answered wrongly and from a failure of its own store.
//!
//! What clients are answered stays a `RemoteError` with its stable `ErrorCode`.

use objectstore::StoreError;
use placement::Version;
use proto::RemoteError;
use proto::error::TransportError;
use proto::osd::{ObjectName, PeerResponse};
use thiserror::Error;

/// A call to another OSD of the PG that did not give the answer asked for.
#[derive(Debug, Error)]
pub enum PeerError {
    #[error("osd.{osd} has no address in the map")]
    NoAddress { osd: u32 },
    /// Not reachable, timed out, or it refused the request with an error.
    #[error("osd.{osd}: {source}")]
    Call {
        osd: u32,
        #[source]
        source: TransportError,
    },
    /// It answered with another kind of answer: a bug, or builds that disagree. `asked`
    /// is the request's `PeerRequest::name`.
    #[error("osd.{osd} answered {asked} with {got}")]
    Unexpected { osd: u32, asked: &'static str, got: &'static str },
    /// Log pages that do not follow each other.
    #[error("osd.{osd} answered a log page out of order")]
    OutOfOrder { osd: u32 },
}

impl PeerError {
    /// The answer a call got when it was not the one asked for.
    pub fn unexpected(osd: u32, asked: &'static str, got: &PeerResponse) -> PeerError {
        PeerError::Unexpected { osd, asked, got: got.name() }
    }
}

/// Why a PG's task failed; the PG retries it (peering again, or the next round).
#[derive(Debug, Error)]
pub enum TaskError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    /// Work on this copy failed as it would for a peer asking (a scrub chunk too large).
    #[error("{0}")]
    Local(RemoteError),
    /// An erasure-coded PG's shard that no OSD holds in this interval.
    #[error("no OSD holds shard {shard}")]
    NoHolder { shard: usize },
    #[error("{object} does not encode: {reason}")]
    Encode { object: ObjectName, reason: String },
    /// Work handed to a blocking thread did not return (it panicked).
    #[error("a blocking task did not return: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The PG peered again while the task ran: its result is for an interval that ended.
    #[error("the PG is peering again")]
    Superseded,
}

impl From<RemoteError> for TaskError {
    fn from(error: RemoteError) -> TaskError {
        TaskError::Local(error)
    }
}

/// Why an object was not recovered.
#[derive(Debug, Error)]
pub enum RecoveryError {
    /// No OSD asked has the version the log calls for (the object is unfound).
    #[error("no other copy of {object} is reachable")]
    NoSource { object: ObjectName },
    #[error("osd.{osd} has version {has} of {object}, not {want}")]
    Older { osd: u32, object: ObjectName, has: Version, want: Version },
    #[error("no shard of {object} at the version wanted answered")]
    NoShard { object: ObjectName },
    #[error("{found} shards of {object} at version {version} answered; decoding needs {k}")]
    TooFewShards { object: ObjectName, version: Version, found: usize, k: usize },
    /// It may work when tried again.
    #[error(transparent)]
    Failed(#[from] TaskError),
}

impl RecoveryError {
    /// Whether no copy that could be asked has the object: it is counted unfound.
    pub fn is_unfound(&self) -> bool {
        !matches!(self, RecoveryError::Failed(_))
    }
}

impl From<PeerError> for RecoveryError {
    fn from(error: PeerError) -> RecoveryError {
        RecoveryError::Failed(error.into())
    }
}

impl From<StoreError> for RecoveryError {
    fn from(error: StoreError) -> RecoveryError {
        RecoveryError::Failed(error.into())
    }
}
