//! Partita node: partition storage, replication, and the gRPC and RESP front ends.
//!
//! Today this crate holds the wire contract ([`proto`]) and the key-to-partition mapping
//! ([`slot`]); storage, replication and the servers grow here (DESIGN.md, "Node").

pub mod error;
pub mod proto;
pub mod slot;

pub use error::Error;
