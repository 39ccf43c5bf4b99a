//! The RESP2 front end, enough of Redis's protocol that `redis-cli` and `redis-benchmark` work
//! unchanged.
//!
//! A connection reads what the client sent, runs every complete command in it (a pipeline),
//! then makes the batch's writes durable as the fsync policy requires, and only then sends the
//! replies. So a reply is an acknowledgement: under `fsync=always` the write is on disk, under
//! the other policies it is in the operating system and survives the process being killed.
//! Commands live one per file in [`cmd`].

pub mod cmd;
pub mod codec;
mod connection;
pub mod proxy;

pub use cmd::{Cluster, Redirect};
pub use connection::serve;
pub use proxy::Proxy;
