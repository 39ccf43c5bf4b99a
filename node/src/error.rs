//! The node crate's error type. One enum for the crate, so callers match on causes instead of
//! parsing strings.

use thiserror::Error;

/// Errors from the node crate.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Error {
    /// A partition count outside 1..=16384 (each partition needs at least one hash slot).
    #[error("partition count must be between 1 and {max}, got {got}")]
    InvalidPartitionCount {
        /// The count that was asked for.
        got: u32,
        /// The largest count allowed: the number of hash slots.
        max: u32,
    },
}
