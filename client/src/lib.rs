//! The client library. Today: the client configuration, and a session with the monitors
//! (status, administrative commands, maps). Object I/O straight to the OSDs comes with them.

pub mod config;
pub mod maps;
pub mod mon_client;
pub mod objects;
pub mod osd_conn;
pub mod striper;

pub use config::ClientConfig;
pub use mon_client::{ClientError, MapWatch, MonClient};
