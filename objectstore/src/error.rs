//! What the store can fail with. Corruption and I/O failures are kept apart from a caller's
//! mistakes, so the OSD can answer the former from another copy and refuse the latter.

use thiserror::Error;

#[derive(Clone, Debug, Error)]
pub enum StoreError {
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error("object {0} does not exist")]
    NotFound(String),
    #[error("object {0} already exists")]
    AlreadyExists(String),
    #[error("{what} does not match what was stored ({detail})")]
    Corrupt { what: String, detail: String },
    #[error("store I/O: {0}")]
    Io(String),
}

impl StoreError {
    pub fn invalid(what: impl Into<String>, detail: impl Into<String>) -> StoreError {
        StoreError::Invalid { what: what.into(), detail: detail.into() }
    }

    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt { what: what.into(), detail: detail.into() }
    }
}
