//! The node's front ends: RESP (the Redis protocol), gRPC (KV and Admin), and HTTP (health and
//! metrics). Each decodes a request, hands it to the engine's partitions, and encodes the
//! answer; decisions live in the engine and the storage state machine, not here.

pub mod grpc;
pub mod http;
pub mod resp;

/// Limits every front end enforces, each with a clear error past it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest value, in bytes.
    pub max_value_bytes: usize,
    /// Largest request (all of one command's arguments, or one gRPC message), in bytes.
    pub max_request_bytes: usize,
    /// Most client connections at once, RESP and gRPC counted separately.
    pub max_connections: usize,
    /// Most keys one KEYS or MGET-like call may return, and the largest scan page.
    pub max_keys_per_call: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 64 * 1024,
            max_value_bytes: 64 << 20,
            max_request_bytes: 128 << 20,
            max_connections: 10_000,
            max_keys_per_call: 1_000_000,
        }
    }
}
