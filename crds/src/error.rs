//! Errors of the API crate.

use thiserror::Error;

/// Errors from the API crate.
#[derive(Debug, Error)]
pub enum Error {
    /// A duration string that is not a number followed by a unit (`ms`, `s`, `m`, `h`).
    #[error("invalid duration {input:?}: {reason} (use a value such as 500ms, 5s, 1m30s)")]
    InvalidDuration {
        /// The string as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The CRD could not be serialized to YAML.
    #[error("serializing the CRD to YAML: {0}")]
    Yaml(#[source] serde_yaml::Error),
}
