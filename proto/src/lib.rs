//! The wire of cairn, without a runtime: entity names and capabilities, the messages
//! every daemon and client exchange, request ids, framing with hard bounds, stable error
//! codes, and the clock the times on the wire are read from. No tokio, quinn or rustls: the PG core, the frontends' parsers and tests
//! use it as plain data; `net` moves it between processes.
//!
//! Nothing here knows what a monitor or an OSD does with a message; it only guarantees
//! that what decodes is within its limits.

pub mod caps;
pub mod clock;
pub mod entity;
pub mod error;
pub mod frame;
pub mod message;
pub mod osd;
pub mod reqid;

pub use caps::{Access, Caps};
pub use entity::{EntityKind, EntityName};
pub use error::{ErrorCode, RemoteError, TransportError};
pub use message::{Command, CommandOutput, MonRequest, OsdRequest, Response, WireRequest};
