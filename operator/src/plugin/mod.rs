//! `kubectl-partita`, the kubectl plugin: `kubectl partita status | switchover | rebalance`.
//!
//! The plugin reads a `ReplicatedPartitionSet` and writes the request annotations the operator
//! acts on ([`partita_api::SWITCHOVER_ANNOTATION`], [`partita_api::REBALANCE_ANNOTATION`]); it
//! never talks to the nodes. What it prints and what it decides are pure ([`format`],
//! [`check`]); this module holds the command line and the few API calls around them, and the
//! binary (`src/bin/kubectl-partita.rs`) only parses arguments and maps errors to exit codes.

pub mod check;
pub mod format;

use crate::requests;
use check::Progress;
use clap::{Parser, Subcommand, ValueEnum};
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use partita_api::{REBALANCE_ANNOTATION, ReplicatedPartitionSet, SWITCHOVER_ANNOTATION};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// How often a `--wait` looks at the set again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a `--wait` waits when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The field manager of the plugin's patches.
pub const FIELD_MANAGER: &str = "kubectl-partita";

/// Errors of the kubectl plugin. Each ends the plugin with exit code 1.
#[derive(Debug, Error)]
pub enum Error {
    /// No kubeconfig (or in-cluster configuration) could be loaded.
    #[error("loading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// Neither a kubeconfig nor in-cluster configuration was found.
    #[error("finding a cluster to talk to: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The set does not exist.
    #[error("replicatedpartitionset {name} not found in namespace {namespace}")]
    NotFound {
        /// The set's name.
        name: String,
        /// The namespace looked in.
        namespace: String,
    },
    /// The partition is not one of the set's.
    #[error(
        "partition {partition} does not exist: {set} has {partitions} partitions (0 to {last})",
        last = partitions - 1
    )]
    PartitionOutOfRange {
        /// The partition asked for.
        partition: u32,
        /// The set's name.
        set: String,
        /// `spec.partitions`.
        partitions: i32,
    },
    /// The partition map has no entry for the partition yet.
    #[error(
        "partition {partition} of {set} has not been placed yet (no entry in status.partitions); try again once the operator has placed it"
    )]
    NotPlaced {
        /// The partition asked for.
        partition: u32,
        /// The set's name.
        set: String,
    },
    /// The pod holds no replica of the partition.
    #[error(
        "{pod} holds no replica of partition {partition}; choose one of: {}",
        choices(replicas)
    )]
    NotAReplica {
        /// The partition asked for.
        partition: u32,
        /// The pod asked for.
        pod: String,
        /// The pods that do hold one.
        replicas: Vec<String>,
    },
    /// The pod is the partition's primary already.
    #[error(
        "{pod} is already the primary of partition {partition}; choose one of its replicas: {}",
        choices(replicas)
    )]
    AlreadyPrimary {
        /// The partition asked for.
        partition: u32,
        /// The pod asked for.
        pod: String,
        /// The partition's replicas.
        replicas: Vec<String>,
    },
    /// The operator refused the switchover.
    #[error("the operator refused switchover {request}: {message}")]
    Refused {
        /// The annotation value.
        request: String,
        /// Why, as status.switchover says.
        message: String,
    },
    /// `--wait` ran out of time.
    #[error("timed out after {after} waiting for {what}: {last}", after = partita_api::format_duration(*after))]
    Timeout {
        /// What was awaited.
        what: String,
        /// The `--timeout`.
        after: Duration,
        /// What the last look at the set showed.
        last: String,
    },
    /// A request value the plugin built does not parse, which would be a bug.
    #[error(transparent)]
    Request(#[from] requests::Error),
    /// The status could not be printed as JSON.
    #[error("printing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

fn choices(replicas: &[String]) -> String {
    if replicas.is_empty() {
        "none (the partition has no replicas)".into()
    } else {
        replicas.join(", ")
    }
}

/// Inspect and operate Partita's ReplicatedPartitionSets.
#[derive(Debug, Parser)]
#[command(name = "kubectl-partita", bin_name = "kubectl partita", version)]
pub struct Cli {
    /// Path of the kubeconfig; by default $KUBECONFIG, then ~/.kube/config, then in-cluster.
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its current one.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The set's namespace; by default the context's.
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The plugin's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a set's phase, last failover, partition map and conditions.
    Status {
        /// The ReplicatedPartitionSet.
        name: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Ask the operator to make a replica of a partition its primary (planned, no data lost).
    Switchover {
        /// The ReplicatedPartitionSet.
        name: String,
        /// The partition.
        #[arg(long, value_name = "N")]
        partition: u32,
        /// The pod, holding a replica of the partition, that should become its primary.
        #[arg(long, value_name = "POD")]
        to: String,
        /// Wait until the operator reports the switchover done or refused.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, such as 60s or 2m.
        #[arg(long, requires = "wait", value_parser = partita_api::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Ask the operator to rebalance partitions over the nodes now.
    Rebalance {
        /// The ReplicatedPartitionSet.
        name: String,
        /// Wait until the operator has handled the request and no partition is moving.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, such as 60s or 2m.
        #[arg(long, requires = "wait", value_parser = partita_api::parse_duration)]
        timeout: Option<Duration>,
    },
}

/// `-o` of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Summary and tables, for people.
    Table,
    /// The status as JSON, for scripts (`null` before the operator has written one).
    Json,
}

/// A client for the cluster `cli` names, and the namespace to use.
pub async fn connect(cli: &Cli) -> Result<(kube::Client, String), Error> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if cli.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((kube::Client::try_from(config)?, namespace))
}

/// Runs `cli`, printing results to `out` and warnings to `err`.
pub async fn run(cli: Cli, out: &mut impl Write, err: &mut impl Write) -> Result<(), Error> {
    let (client, namespace) = connect(&cli).await?;
    let api: Api<ReplicatedPartitionSet> = Api::namespaced(client, &namespace);
    let sets = Sets {
        api,
        namespace: namespace.clone(),
    };
    match cli.command {
        Command::Status { name, output } => {
            let set = sets.get(&name).await?;
            let text = match output {
                Output::Table => format::status_report(&set),
                Output::Json => format::status_json(&set)?,
            };
            out.write_all(text.as_bytes())?;
        }
        Command::Switchover {
            name,
            partition,
            to,
            wait,
            timeout,
        } => {
            let set = sets.get(&name).await?;
            check::check_switchover(&set, partition, &to)?;
            warn_if_paused(&set, err)?;
            let value = requests::switchover_value(partition, &to, unix_millis());
            requests::parse_switchover(&value)?;
            sets.annotate(&name, SWITCHOVER_ANNOTATION, &value).await?;
            writeln!(
                out,
                "requested switchover of partition {partition} of {namespace}/{name} to {to} ({SWITCHOVER_ANNOTATION}={value})"
            )?;
            out.flush()?;
            if wait {
                let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
                let what = format!("switchover {value}");
                let done = sets
                    .wait(&name, &what, timeout, |set| {
                        check::switchover_progress(set, &value)
                    })
                    .await?;
                writeln!(out, "{done}")?;
            }
        }
        Command::Rebalance {
            name,
            wait,
            timeout,
        } => {
            let set = sets.get(&name).await?;
            warn_if_paused(&set, err)?;
            let value = now_rfc3339();
            sets.annotate(&name, REBALANCE_ANNOTATION, &value).await?;
            writeln!(
                out,
                "requested a rebalance of {namespace}/{name} ({REBALANCE_ANNOTATION}={value})"
            )?;
            out.flush()?;
            if wait {
                let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
                let what = format!("rebalance {value}");
                let done = sets
                    .wait(&name, &what, timeout, |set| {
                        Ok(check::rebalance_progress(set, &value))
                    })
                    .await?;
                writeln!(out, "{done}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn warn_if_paused(set: &ReplicatedPartitionSet, err: &mut impl Write) -> Result<(), Error> {
    if set.spec.paused {
        writeln!(
            err,
            "warning: {} is paused (spec.paused); the operator acts on the request only once it is resumed",
            set.metadata.name.as_deref().unwrap_or_default()
        )?;
    }
    Ok(())
}

/// The current time in RFC 3339, to the millisecond: `2026-11-22T10:04:05.123Z`.
fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_millisecond(now.as_millisecond())
        .unwrap_or(now)
        .to_string()
}

fn unix_millis() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0)
}

/// The sets of one namespace.
struct Sets {
    api: Api<ReplicatedPartitionSet>,
    namespace: String,
}

impl Sets {
    async fn get(&self, name: &str) -> Result<ReplicatedPartitionSet, Error> {
        self.api
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::NotFound {
                name: name.into(),
                namespace: self.namespace.clone(),
            })
    }

    /// Sets one annotation with a JSON merge patch, leaving everything else as it is.
    async fn annotate(&self, name: &str, key: &str, value: &str) -> Result<(), Error> {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match self.api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Err(Error::NotFound {
                name: name.into(),
                namespace: self.namespace.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Looks at the set every [`POLL_INTERVAL`] until `progress` says done (or fails), for at
    /// most `timeout`. A failed look is retried until the deadline; a deleted set ends the wait.
    async fn wait(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        mut progress: impl FnMut(&ReplicatedPartitionSet) -> Result<Progress, Error>,
    ) -> Result<String, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.get(name).await {
                Ok(set) => match progress(&set)? {
                    Progress::Done(message) => return Ok(message),
                    Progress::Waiting(why) => why,
                },
                Err(e @ Error::NotFound { .. }) => return Err(e),
                Err(e) => format!("the last look failed: {e}"),
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: what.into(),
                    after: timeout,
                    last,
                });
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }
}
