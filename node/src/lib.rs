//! Partita node: partition storage, replication, and the gRPC and RESP front ends.
//!
//! - [`storage`]: a partition's state, log and snapshots; [`engine`]: the node's partitions;
//! - [`replication`]: roles, epochs, and the primary/replica streams;
//! - [`server`]: the gRPC and RESP front ends; [`proto`]: the wire contract.

pub mod client;
pub mod engine;
pub mod error;
pub mod glob;
pub mod metrics;
pub mod proto;
pub mod replication;
pub mod routing;
pub mod server;
pub mod slot;
pub mod storage;
pub mod topology;

pub use error::Error;
