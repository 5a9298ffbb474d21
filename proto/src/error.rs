//! Errors that cross the wire, with stable codes, and the errors of the transport itself.
//!
//! A `RemoteError` is what a server answers instead of a result; its `ErrorCode` is stable
//! across versions so that the CLI, the gateways and the block and filesystem frontends can
//! map it precisely (S3 `NoSuchKey`, NBD `EIO`, an exit code). Retryable conditions
//! (`NotLeader`, `Unavailable`, `Busy`, `Timeout`) are kept apart from final ones.

use std::fmt;

use placement::MapError;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::frame::FrameError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request is well-formed but asks for something impossible or wrong.
    Invalid,
    NotFound,
    AlreadyExists,
    /// The identity is not allowed to do this.
    PermissionDenied,
    /// This monitor is not the leader and could not forward the request; try another.
    NotLeader,
    /// No quorum, or the service is shutting down; retry later.
    Unavailable,
    Timeout,
    /// A frame or value is above its limit.
    TooLarge,
    /// A frame or message does not decode.
    Malformed,
    /// The request is of a kind this server does not serve.
    Unsupported,
    /// Too many requests in flight; retry later.
    Busy,
    /// A bug or an I/O failure on the server.
    Internal,
    /// The request was made against an older map epoch than the server's.
    StaleEpoch,
    /// A guard of a compound op failed; nothing was changed.
    Canceled,
    /// Stored data failed its checksum and no good copy could be read.
    Corrupt,
    /// An OSD the write would land on is full: nothing was written. Reads and deletes
    /// still work; writes do again once space is freed or added.
    NoSpace,
}

impl ErrorCode {
    /// Whether the same request may succeed if sent again later or elsewhere.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::Busy | ErrorCode::Timeout
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "invalid",
            ErrorCode::NotFound => "not found",
            ErrorCode::AlreadyExists => "already exists",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::NotLeader => "not leader",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timed out",
            ErrorCode::TooLarge => "too large",
            ErrorCode::Malformed => "malformed",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal error",
            ErrorCode::StaleEpoch => "stale epoch",
            ErrorCode::Canceled => "canceled",
            ErrorCode::Corrupt => "corrupt",
            ErrorCode::NoSpace => "no space",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error a server answered with.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct RemoteError {
    pub code: ErrorCode,
    pub message: String,
}

impl RemoteError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RemoteError {
        RemoteError { code, message: message.into() }
    }
}

impl From<&MapError> for ErrorCode {
    fn from(error: &MapError) -> ErrorCode {
        match error {
            MapError::NoSuchPool(_)
            | MapError::NoSuchPg { .. }
            | MapError::NoSuchOsd(_)
            | MapError::NoSuchBucket(_)
            | MapError::NoSuchRule(_)
            | MapError::NoSuchType { .. }
            | MapError::NoSuchClass(_)
            | MapError::NoSuchProfile(_) => ErrorCode::NotFound,
            MapError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            MapError::Limit { .. } => ErrorCode::TooLarge,
            MapError::WrongBase { .. } => ErrorCode::StaleEpoch,
            _ => ErrorCode::Invalid,
        }
    }
}

impl From<MapError> for RemoteError {
    fn from(error: MapError) -> RemoteError {
        RemoteError::new(ErrorCode::from(&error), error.to_string())
    }
}

/// What can go wrong talking to a peer.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot reach {peer} at {addr}: {reason}")]
    Connect { peer: String, addr: String, reason: String },
    #[error("{peer} refused the connection: {reason}")]
    Refused { peer: String, reason: String },
    #[error("connection to {peer} closed: {reason}")]
    Closed { peer: String, reason: String },
    #[error("no answer from {peer} within {after_ms} ms ({what})")]
    Timeout { peer: String, what: String, after_ms: u64 },
    #[error("frame from {peer}: {source}")]
    Frame {
        peer: String,
        #[source]
        source: FrameError,
    },
    #[error("{peer} answered: {error}")]
    Remote { peer: String, error: RemoteError },
    #[error("{peer} answered {got} to {request}")]
    Unexpected { peer: String, request: String, got: String },
    #[error("transport setup: {0}")]
    Setup(String),
}

impl TransportError {
    /// The server's error code, when it answered with one.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            TransportError::Remote { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// Whether trying again (later, or with another peer) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::Remote { error, .. } => error.code.is_retryable(),
            TransportError::Connect { .. }
            | TransportError::Closed { .. }
            | TransportError::Timeout { .. } => true,
            _ => false,
        }
    }
}
