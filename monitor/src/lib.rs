//! The monitors: a Raft quorum (openraft, log in RocksDB) holding the cluster map, the
//! identities and the settings; failure detection; health; map subscriptions.
//!
//! `state` is the replicated state and its deterministic `apply`, `command` turns
//! administrative commands into map changes, `failure` and `health` are sans-I/O cores the
//! daemon drives with the time, `store` is openraft's storage, `network` carries Raft over
//! the cluster transport, `service` answers requests, `daemon` starts and runs it all.

pub mod command;
pub mod daemon;
pub mod error;
pub mod failure;
pub mod health;
pub mod network;
pub mod pgstats;
pub mod service;
pub mod settings;
pub mod state;
pub mod store;
