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

/// Each code's number is what travels (a postcard varint), fixed here rather than by the
/// order of the variants: a code is never renumbered or reused, and new ones take the next
/// number. A number this build does not know is a decoding error that names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The request is well-formed but asks for something impossible or wrong.
    Invalid = 0,
    NotFound = 1,
    AlreadyExists = 2,
    /// The identity is not allowed to do this.
    PermissionDenied = 3,
    /// This monitor is not the leader and could not forward the request; try another.
    NotLeader = 4,
    /// No quorum, or the service is shutting down; retry later.
    Unavailable = 5,
    Timeout = 6,
    /// A frame or value is above its limit.
    TooLarge = 7,
    /// A frame or message does not decode.
    Malformed = 8,
    /// The request is of a kind this server does not serve.
    Unsupported = 9,
    /// Too many requests in flight; retry later.
    Busy = 10,
    /// A bug or an I/O failure on the server.
    Internal = 11,
    /// The request was made against an older map epoch than the server's.
    StaleEpoch = 12,
    /// A guard of a compound op failed; nothing was changed.
    Canceled = 13,
    /// Stored data failed its checksum and no good copy could be read.
    Corrupt = 14,
    /// An OSD the write would land on is full: nothing was written. Reads and deletes
    /// still work; writes do again once space is freed or added.
    NoSpace = 15,
    /// An advisory lock of the object is held by another holder (a lock op's refusal, or a
    /// guard's): sending it again does not help until that holder lets go.
    Locked = 16,
}

impl ErrorCode {
    /// Every code, in the order of its number.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::Invalid,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::PermissionDenied,
        ErrorCode::NotLeader,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::TooLarge,
        ErrorCode::Malformed,
        ErrorCode::Unsupported,
        ErrorCode::Busy,
        ErrorCode::Internal,
        ErrorCode::StaleEpoch,
        ErrorCode::Canceled,
        ErrorCode::Corrupt,
        ErrorCode::NoSpace,
        ErrorCode::Locked,
    ];

    /// The number a code travels as.
    pub fn wire(self) -> u16 {
        self as u16
    }

    pub fn from_wire(n: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.get(usize::from(n)).copied()
    }

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
            ErrorCode::Locked => "locked",
        }
    }
}

// `ALL` lists the codes in the order of their numbers, so that `from_wire` is an index.
const _: () = {
    let mut i = 0;
    while i < ErrorCode::ALL.len() {
        assert!(ErrorCode::ALL[i] as usize == i);
        i += 1;
    }
};

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.wire())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = u16::deserialize(deserializer)?;
        ErrorCode::from_wire(n)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {n}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_travel_as_their_fixed_numbers() {
        // Golden: the numbers are part of the wire format (and were the variants' order
        // before they were written down, so the bytes did not change).
        assert_eq!(postcard::to_allocvec(&ErrorCode::Invalid).unwrap(), [0]);
        assert_eq!(postcard::to_allocvec(&ErrorCode::StaleEpoch).unwrap(), [12]);
        assert_eq!(postcard::to_allocvec(&ErrorCode::NoSpace).unwrap(), [15]);
        assert_eq!(postcard::to_allocvec(&ErrorCode::Locked).unwrap(), [16]);
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(code.wire()), i);
            let bytes = postcard::to_allocvec(&code).unwrap();
            assert_eq!(postcard::from_bytes::<ErrorCode>(&bytes).unwrap(), code);
        }
        let names: std::collections::BTreeSet<&str> =
            ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "a code is listed twice");
        let unknown = postcard::to_allocvec(&(ErrorCode::ALL.len() as u16)).unwrap();
        assert!(postcard::from_bytes::<ErrorCode>(&unknown).is_err(), "code 17 is not known");
        assert_eq!(ErrorCode::from_wire(17), None);
    }
}
