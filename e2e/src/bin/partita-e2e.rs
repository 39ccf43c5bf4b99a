//! `partita-e2e`: runs the scenarios and prints their `SCENARIO` lines.
//!
//! - With `PARTITA_E2E_KUBECONFIG` set (or `--in-cluster`), on that real cluster, where the
//!   operator and its chart are already installed (see `e2e/kind.sh`).
//! - Otherwise in a cluster in a box: the in-memory API (or the kube-apiserver of
//!   `PARTITA_E2E_APISERVER_KUBECONFIG`), the box's StatefulSet controller and kubelet running
//!   real `partita-node` processes, and the operator in-process.
//!
//! Exits 0 when every scenario passed, 1 when one failed, 2 on bad arguments.

use clap::Parser;
use partita_e2e::cluster::Cluster;
use partita_e2e::inbox::{BoxConfig, InBox};
use partita_e2e::real::{RealCluster, RealConfig};
use partita_e2e::scenarios::{self, NAMES};
use std::process::ExitCode;

/// Runs Partita's end-to-end scenarios.
#[derive(Debug, Parser)]
#[command(name = "partita-e2e", version, about)]
struct Args {
    /// Scenarios to run (repeatable); all of them when none is named.
    #[arg(long = "scenario", value_parser = clap::builder::PossibleValuesParser::new(NAMES))]
    scenarios: Vec<String>,
    /// Run on the cluster this process runs in (as a Job), with in-cluster configuration.
    #[arg(long)]
    in_cluster: bool,
    /// The namespace the scenarios create their sets in on a real cluster.
    #[arg(long, default_value = "partita-e2e")]
    namespace: String,
    /// Keep the namespace on a real cluster after the run, for a look around.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARTITA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("partita-e2e: starting the runtime failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let names: Vec<String> = if args.scenarios.is_empty() {
        NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    let failed = runtime.block_on(async {
        let real = std::env::var_os("PARTITA_E2E_KUBECONFIG").is_some() || args.in_cluster;
        if real {
            let config = RealConfig::from_env();
            let mut cluster = match RealCluster::connect(config, &args.namespace).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("partita-e2e: {e}");
                    return names.len();
                }
            };
            let failed = run_all(&names, &mut cluster).await;
            if !args.keep
                && let Err(e) = cluster.cleanup().await
            {
                eprintln!("partita-e2e: deleting namespace {}: {e}", args.namespace);
            }
            failed
        } else {
            let mut failed = 0;
            // A box per scenario, as in the test suite: no scenario sees another's leftovers.
            for name in &names {
                let mut cluster = match InBox::start(BoxConfig::from_env()).await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("partita-e2e: starting the box: {e}");
                        return names.len();
                    }
                };
                failed += run_all(std::slice::from_ref(name), &mut cluster).await;
                cluster.stop().await;
            }
            failed
        }
    });
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("partita-e2e: {failed} of {} scenarios failed", names.len());
        ExitCode::FAILURE
    }
}

/// Runs `names` on `cluster`, printing each outcome; returns how many failed.
async fn run_all(names: &[String], cluster: &mut impl Cluster) -> usize {
    let mut failed = 0;
    for name in names {
        match scenarios::run(name, cluster).await {
            #[allow(clippy::print_stdout)]
            Ok(outcome) => println!("{outcome}"),
            Err(e) => {
                failed += 1;
                #[allow(clippy::print_stdout)]
                {
                    println!("SCENARIO {name} FAILED: {e}");
                }
            }
        }
    }
    failed
}
