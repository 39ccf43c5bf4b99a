//! The whole operator as one call: the HTTP endpoints, the leader election and, while this
//! replica leads, the controller, until `shutdown` completes.
//!
//! It lives in the library, not in `main`, so that the e2e cluster in a box runs exactly the
//! code the binary runs: `main` only parses flags, builds the client and waits for a signal.
//! Losing the lead stops the controller at once (its reconciles are level-triggered, so an
//! interrupted one is simply redone by the next leader); shutting down lets reconciles in
//! flight finish, then releases the lease.

use crate::controller::{self, Context, Settings};
use crate::error::Result;
use crate::http;
use crate::leader;
use crate::metrics::Metrics;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How the operator runs.
pub struct Options {
    /// What the controller needs.
    pub settings: Settings,
    /// The leader election's Lease and timings; `settings.instance` should be its identity.
    pub election: leader::Config,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; none when `None`.
    pub http: Option<TcpListener>,
}

/// Runs the operator until `shutdown` completes, with `metrics` (registered here).
pub async fn run(
    client: kube::Client,
    options: Options,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    options.election.timing.check()?;
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (ready_tx, ready_rx) = watch::channel(true);
    let http_task = options.http.map(|listener| {
        let shared = http::Shared {
            registry: Arc::new(registry),
            ready: ready_rx,
        };
        tokio::spawn(http::serve(listener, shared, stopped()))
    });

    let (leading_tx, mut leading) = watch::channel(false);
    // The election stops only after the controller has: a lease released while reconciles
    // were still finishing would let a standby act alongside them.
    let (controller_done_tx, mut controller_done) = watch::channel(false);
    let election_stop = async move {
        let _ = controller_done.wait_for(|d| *d).await;
    };
    let election_task = tokio::spawn(leader::run(
        client.clone(),
        options.election,
        leading_tx,
        election_stop,
    ));
    let signal = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let settings = options.settings;
    let shutting_down = stopped();
    tokio::pin!(shutting_down);
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { break },
            () = &mut shutting_down => break,
        }
        metrics.leader.set(1);
        let ctx = Context::new(client.clone(), settings.clone(), metrics.clone());
        let lost = async {
            let _ = leading.wait_for(|l| !*l).await;
        };
        tokio::select! {
            r = controller::run(ctx, stopped()) => { outcome = r; metrics.leader.set(0); break }
            () = lost => tracing::warn!("lost the lead: the controller stops until it is regained"),
        }
        metrics.leader.set(0);
    }
    let _ = ready_tx.send(false);
    let _ = controller_done_tx.send(true);
    signal.abort();
    match election_task.await {
        Ok(r) => r?,
        Err(e) => tracing::warn!(error = %e, "the election task ended abnormally"),
    }
    if let Some(task) = http_task {
        match task.await {
            Ok(r) => r?,
            Err(e) => tracing::warn!(error = %e, "the HTTP task ended abnormally"),
        }
    }
    outcome
}
