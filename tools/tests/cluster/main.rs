//! The `cairn` command as its users run it, in separate processes: the offline map tools,
//! monitor quorums and OSD clusters on loopback, daemons killed and restarted. One test
//! binary, so the tests share one build and link of it.

mod common;
mod map_cli;
mod monitors;
mod osds;
