//! How cairn's daemons and clients reach each other: the cluster's certificate authority
//! and mutual TLS (`identity`), frames on streams (`frame`), the transports (QUIC between
//! monitors and their clients, TCP with TLS for the OSDs' data path, in-memory for tests),
//! one request per stream on top (`rpc`), and the sessions every daemon and client keeps:
//! with the monitors (`mon_client`, configured by `config`, maps applied by `maps`) and
//! with the OSDs (`osd_conn`).
//!
//! It guarantees that what arrives is from whom it claims, within its limits, and decodes;
//! what a message means is for the daemons (`monitor`, `osd`) and the client library.

pub mod config;
pub mod frame;
pub mod identity;
pub mod maps;
pub mod mon_client;
pub mod osd_conn;
pub mod rpc;
pub mod transport;

pub use config::ClientConfig;
pub use mon_client::{ClientError, MapWatch, MonClient};
