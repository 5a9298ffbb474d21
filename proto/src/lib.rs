//! The wire of cairn: entity names and capabilities, the cluster's certificate authority
//! and mutual TLS, framing with hard bounds, the messages every daemon and client exchange,
//! stable error codes, the transport (QUIC between processes, in-memory for tests) and the
//! request/reply layer on top of it.
//!
//! Nothing here knows what a monitor or an OSD does with a message; it only guarantees
//! that what arrives is from whom it claims, within its limits, and decodes.

pub mod caps;
pub mod entity;
pub mod error;
pub mod frame;
pub mod identity;
pub mod message;
pub mod osd;
pub mod rpc;
pub mod transport;

pub use caps::{Access, Caps};
pub use entity::{EntityKind, EntityName};
pub use error::{ErrorCode, RemoteError, TransportError};
pub use message::{Command, CommandOutput, Request, Response};
