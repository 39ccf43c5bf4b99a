//! The e2e crate's errors: one enum, so the box, the scenarios and the binaries report failures
//! the same way.

/// What can go wrong in the box or a scenario.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A local I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A condition was not reached before its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        after: std::time::Duration,
    },
    /// A scenario's check failed.
    #[error("{0}")]
    Check(String),
    /// The request or setup is not valid (bad flags, a fault on a pod that has no process).
    #[error("{0}")]
    Invalid(String),
    /// A Partita node call failed.
    #[error("node: {0}")]
    Node(String),
    /// The operator failed.
    #[error("operator: {0}")]
    Operator(#[from] partita_operator::Error),
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
