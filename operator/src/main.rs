//! `partita-operator`: a thin main. It parses flags, sets up logging, and runs three things
//! until SIGTERM or Ctrl-C: the HTTP endpoints, the leader election, and, while this replica
//! leads, the controller. Losing the lead stops the controller at once (its reconciles are
//! level-triggered, so an interrupted one is simply redone by the next leader); shutting down
//! lets reconciles in flight finish, then releases the lease.

use clap::Parser;
use partita_operator::controller::{self, Context, Settings};
use partita_operator::error::{Error, Result};
use partita_operator::http;
use partita_operator::leader::{self, Timing};
use partita_operator::metrics::Metrics;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The Partita operator: runs ReplicatedPartitionSets as StatefulSets of partita-node pods.
#[derive(Debug, Parser)]
#[command(name = "partita-operator", version, about)]
struct Args {
    /// Watch sets in this namespace only; all namespaces when unset.
    #[arg(long, env = "PARTITA_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// The node image for sets that name none.
    #[arg(long, env = "PARTITA_NODE_IMAGE",
          default_value = concat!("partita/partita-node:", env!("CARGO_PKG_VERSION")))]
    node_image: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "PARTITA_OPERATOR_HTTP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    http_listen: SocketAddr,
    /// The gRPC port of node pods, which the operator calls at each pod's IP.
    #[arg(long, default_value_t = partita_operator::resources::ports::GRPC as u16)]
    node_grpc_port: u16,
    /// The RESP port of node pods, advertised to clients in the partition map.
    #[arg(long, default_value_t = partita_operator::resources::ports::RESP as u16)]
    node_resp_port: u16,
    /// This replica's identity in the leader election (normally the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Namespace of the leader Lease (normally the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "partita-operator-leader")]
    lease_name: String,
    /// How long the lease lasts without renewal, in seconds.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// How long the leader keeps acting without a successful renewal, in seconds.
    #[arg(long, default_value_t = 10)]
    lease_renew_deadline_seconds: u64,
    /// How often the lease is renewed or checked, in seconds.
    #[arg(long, default_value_t = 2)]
    lease_retry_period_seconds: u64,
    /// Log format: json (the default, for log pipelines) or text.
    #[arg(long, env = "PARTITA_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARTITA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "starting the runtime failed");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "partita-operator failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let timing = Timing {
        lease_duration: Duration::from_secs(args.lease_duration_seconds),
        renew_deadline: Duration::from_secs(args.lease_renew_deadline_seconds),
        retry_period: Duration::from_secs(args.lease_retry_period_seconds),
    };
    timing.check()?;
    let identity = match args.identity {
        Some(id) => id,
        None => std::env::var("HOSTNAME").map_err(|_| {
            Error::Config(
                "set --identity or POD_NAME: the leader election needs a name for this replica"
                    .into(),
            )
        })?,
    };
    let client = kube::Client::try_default().await?;
    // Reaching the API server once is what readiness means.
    client.apiserver_version().await?;

    let metrics = Metrics::default();
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
    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .map_err(|source| Error::Io {
            what: "binding the HTTP listener",
            source,
        })?;
    tracing::info!(addr = %args.http_listen, %identity, "partita-operator started");
    let shared = http::Shared {
        registry: Arc::new(registry),
        ready: ready_rx,
    };
    let http_task = tokio::spawn(http::serve(listener, shared, stopped()));

    let (leading_tx, mut leading) = watch::channel(false);
    let election = leader::Config {
        name: args.lease_name,
        namespace: args.lease_namespace,
        identity: identity.clone(),
        timing,
    };
    // The election stops only after the controller has: a lease released while reconciles
    // were still finishing would let a standby act alongside them.
    let (controller_done_tx, mut controller_done) = watch::channel(false);
    let election_stop = async move {
        let _ = controller_done.wait_for(|d| *d).await;
    };
    let election_task = tokio::spawn(leader::run(
        client.clone(),
        election,
        leading_tx,
        election_stop,
    ));

    let settings = Settings {
        default_image: args.node_image,
        namespace: args.namespace,
        instance: identity,
        node_grpc_port: args.node_grpc_port,
        node_resp_port: args.node_resp_port,
        ..Settings::default()
    };
    let signal = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let shutting_down = stopped();
    tokio::pin!(shutting_down);
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
            r = controller::run(ctx, stopped()) => { r?; metrics.leader.set(0); break }
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
    match http_task.await {
        Ok(r) => r?,
        Err(e) => tracing::warn!(error = %e, "the HTTP task ended abnormally"),
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
