//! `partita-operator`: a thin main. It parses flags, sets up logging and the client, and hands
//! over to [`partita_operator::run`], which runs the HTTP endpoints, the leader election and,
//! while this replica leads, the controller, until SIGTERM or Ctrl-C.

use clap::Parser;
use partita_operator::controller::Settings;
use partita_operator::error::{Error, Result};
use partita_operator::leader::{self, Timing};
use partita_operator::metrics::Metrics;
use partita_operator::run::{self, Options};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

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

    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .map_err(|source| Error::Io {
            what: "binding the HTTP listener",
            source,
        })?;
    tracing::info!(addr = %args.http_listen, %identity, "partita-operator started");
    let options = Options {
        settings: Settings {
            default_image: args.node_image,
            namespace: args.namespace,
            instance: identity.clone(),
            node_grpc_port: args.node_grpc_port,
            node_resp_port: args.node_resp_port,
            ..Settings::default()
        },
        election: leader::Config {
            name: args.lease_name,
            namespace: args.lease_namespace,
            identity,
            timing,
        },
        http: Some(listener),
    };
    run::run(client, options, Metrics::default(), wait_for_signal()).await
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
