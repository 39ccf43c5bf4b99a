//! Errors of the operator crate.
//!
//! A spec the operator cannot act on is *not* an error here: it is reported as a status
//! condition and the reconcile succeeds (see [`crate::validate`]). Errors are what a retry may
//! fix: the API server refusing or timing out, a conflict, a lost lease.

use thiserror::Error;

/// Errors from the operator.
#[derive(Debug, Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer could not be added, run or removed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// An object could not be turned into JSON for comparison or applying.
    #[error("serializing {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The resource has no name or namespace, which the API server never sends.
    #[error("the ReplicatedPartitionSet has no {0}")]
    MissingMetadata(&'static str),
    /// The operator's configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A node call failed or timed out; the next reconcile retries from what is then true.
    #[error("node {node}: {message}")]
    Node {
        /// The node (pod name).
        node: String,
        /// What failed.
        message: String,
    },
    /// A listener or the metrics registry failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A short label for the `reason` of the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Serialize { .. } => "serialize",
            Error::MissingMetadata(_) => "metadata",
            Error::Config(_) => "config",
            Error::Io { .. } => "io",
            Error::Node { .. } => "node",
        }
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
