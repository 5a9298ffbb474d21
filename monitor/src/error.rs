//! What the monitor's own work fails with, each error naming the setting, identity or
//! stored record it concerns. What clients are answered stays a `RemoteError` with its
//! stable `ErrorCode`; these convert into one where they reach a client.

use placement::MapError;
use proto::{EntityName, ErrorCode, RemoteError};
use thiserror::Error;

/// A `config set` refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingError {
    #[error("unknown setting '{key}' (known: {known})")]
    Unknown { key: String, known: String },
    #[error("'{value}' is not a whole number")]
    NotANumber { key: &'static str, value: String },
    #[error("{key} = {value} is outside {low}..={high}")]
    OutOfRange { key: &'static str, value: u64, low: u64, high: u64 },
    #[error(
        "{key} = {value} would break nearfull ({nearfull}) <= backfillfull ({backfillfull}) \
         <= full ({full})"
    )]
    FullOrder { key: &'static str, value: u64, nearfull: u32, backfillfull: u32, full: u32 },
}

impl From<SettingError> for RemoteError {
    fn from(error: SettingError) -> RemoteError {
        RemoteError::new(ErrorCode::Invalid, error.to_string())
    }
}

/// A connection refused: its identity is not (or no longer) the registered one.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AdmitError {
    #[error("identity {entity} is unknown to this cluster (or was revoked)")]
    Unknown { entity: EntityName },
    #[error("the certificate of {entity} was replaced or revoked ({fingerprint} is not current)")]
    Replaced { entity: EntityName, fingerprint: String },
}

impl From<AdmitError> for RemoteError {
    fn from(error: AdmitError) -> RemoteError {
        RemoteError::new(ErrorCode::PermissionDenied, error.to_string())
    }
}

/// The monitor's stored state (its snapshot) cannot be loaded.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("read the {what}: {reason}")]
    Read { what: &'static str, reason: String },
    #[error("the {what} does not decode: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("the snapshot's map: {0}")]
    Map(#[from] MapError),
}
