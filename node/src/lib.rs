//! Partita node: partition storage, replication, and the gRPC and RESP front ends.
//!
//! Today this crate holds the wire contract ([`proto`]) and the key-to-partition mapping
//! ([`slot`]); storage, replication and the servers grow here (DESIGN.md, "Node").

pub mod engine;
pub mod error;
pub mod glob;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod slot;
pub mod storage;

pub use error::Error;
