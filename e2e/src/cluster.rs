//! The one interface the scenarios are written against, so the same scenario runs in the box
//! and on a real cluster.
//!
//! Everything a scenario reads or changes in Kubernetes goes through `kube::Client`; only what
//! Kubernetes has no API for is here: injecting faults into a pod's process or network, and
//! killing or starting the operator. The box does these to its own processes
//! ([`crate::inbox::InBox`]); a real cluster does them with pod deletion, an ephemeral debug
//! container and a NetworkPolicy ([`crate::real::RealCluster`]).

use crate::{Error, Result};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// A cluster the scenarios can run on.
pub trait Cluster: Send + Sync {
    /// A client of the cluster's API server.
    fn client(&self) -> kube::Client;

    /// The namespace the scenarios create their sets in.
    fn namespace(&self) -> &str;

    /// The node image to put in a set's spec, when the cluster needs a particular one.
    fn node_image(&self) -> Option<String>;

    /// SIGKILLs the node process of `pod`, which stays down for at least `down_for` (as a
    /// machine that is lost, not a container restarted at once), then comes back with its data.
    fn kill(&self, pod: &str, down_for: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Freezes the node process of `pod` (SIGSTOP): it holds its connections but answers
    /// nothing, as a stalled machine does.
    fn freeze(&self, pod: &str) -> impl Future<Output = Result<()>> + Send;

    /// Thaws a frozen pod (SIGCONT).
    fn thaw(&self, pod: &str) -> impl Future<Output = Result<()>> + Send;

    /// Cuts `pod` off the network: open connections to it drop and new ones fail.
    fn cut(&self, pod: &str) -> impl Future<Output = Result<()>> + Send;

    /// Undoes [`Cluster::cut`].
    fn heal(&self, pod: &str) -> impl Future<Output = Result<()>> + Send;

    /// Kills the operator where it stands: nothing is finished or released.
    fn kill_operator(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// Starts the operator (again).
    fn start_operator(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `check` every [`POLL`] until it returns `Some`, or fails with a timeout naming `what`
/// (and the last thing `check` saw, through `last`) after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let end = Instant::now() + deadline;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            // A failed read is retried until the deadline: the API or a node may be mid-fault.
            Err(e) => last_error = Some(e.to_string()),
        }
        if Instant::now() >= end {
            let what = match last_error {
                Some(e) => format!("{what} (last error: {e})"),
                None => what.to_string(),
            };
            return Err(Error::Timeout {
                what,
                after: deadline,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
