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
    /// Most bytes of keys and values one reply may carry (MGET, KEYS, scan pages, batches).
    pub max_reply_bytes: usize,
}

impl Limits {
    /// Checks that the limits fit together and fit the log's largest record, so nothing that is
    /// accepted can be written but not read back.
    pub fn validate(&self) -> Result<(), String> {
        let record = crate::storage::MAX_RECORD_LEN;
        // Room for the entry's own fields around the command.
        let overhead = 1 << 20;
        if self.max_request_bytes + overhead > record {
            return Err(format!(
                "--max-request-bytes must be at most {} (the log's largest record is {record} \
                 bytes)",
                record - overhead
            ));
        }
        if self.max_value_bytes > self.max_request_bytes {
            return Err("--max-value-bytes must not exceed --max-request-bytes".into());
        }
        if self.max_key_bytes > self.max_request_bytes {
            return Err("--max-key-bytes must not exceed --max-request-bytes".into());
        }
        if self.max_reply_bytes < self.max_value_bytes {
            return Err(
                "--max-reply-bytes must be at least --max-value-bytes, or a stored \
                        value could not be read"
                    .into(),
            );
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 64 * 1024,
            max_value_bytes: 64 << 20,
            max_request_bytes: 128 << 20,
            max_connections: 10_000,
            max_keys_per_call: 1_000_000,
            max_reply_bytes: 256 << 20,
        }
    }
}
