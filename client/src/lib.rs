//! The client library: object I/O straight to the OSDs (`objects`), and large logical
//! objects striped over pieces (`striper`). The session with the monitors and the
//! configuration are `net`'s, named here too so that a client needs this crate alone.

pub mod objects;
pub mod striper;

pub use net::{ClientConfig, ClientError, MapWatch, MonClient, config, maps, mon_client, osd_conn};
