//! `partita-box`: the whole system on one machine, without Kubernetes, to watch it work.
//!
//! It starts the in-memory API, the box's StatefulSet controller and kubelet, the operator,
//! and a `ReplicatedPartitionSet`; every pod is a real `partita-node` process on its own
//! loopback address. It prints a `kubectl get rps`-like line and the partition map whenever
//! they change, and the RESP address of every pod, so `redis-cli -c -h <ip> -p 6379` can be
//! used against the cluster. Commands on stdin inject faults and make changes, so a failover
//! can be watched live (`help` lists them). Ctrl-C (or `quit`) stops everything cleanly.

use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use partita_e2e::cluster::Cluster;
use partita_e2e::inbox::{BoxConfig, InBox};
use partita_e2e::scenarios::set::Set;
use partita_operator::plugin::format;
use partita_operator::resources::ports;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// Runs a Partita cluster in a box: the operator and real node processes, no Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "partita-box", version, about)]
struct Args {
    /// The set's name.
    #[arg(long, default_value = "demo")]
    name: String,
    /// Nodes (pods).
    #[arg(long, default_value_t = 3)]
    nodes: i32,
    /// Partitions.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Copies of each partition.
    #[arg(long, default_value_t = 3)]
    replication_factor: i32,
    /// Where volumes and node logs go; a temporary directory (removed on exit) when unset.
    #[arg(long)]
    root: Option<std::path::PathBuf>,
}

/// A command typed on stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Command {
    Kill { pod: String, down_for: Duration },
    Freeze(String),
    Thaw(String),
    Cut(String),
    Heal(String),
    Scale(i32),
    Switchover { partition: i32, to: String },
    Status,
    Help,
    Quit,
}

const HELP: &str = "commands:
  kill <pod> [seconds]          SIGKILL the pod's node; it stays down that long (default 10)
  freeze <pod> | thaw <pod>     SIGSTOP / SIGCONT the pod's node
  cut <pod> | heal <pod>        cut the pod off the network / reconnect it
  scale <nodes>                 change spec.nodes
  switchover <partition> <pod>  move a partition's primary to <pod>
  status                        print the status now
  quit                          stop everything (as Ctrl-C)";

/// Parses one line of input.
fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let pod = |w: Option<&&str>| {
        w.map(|s| s.to_string())
            .ok_or_else(|| "name a pod, such as demo-0".to_string())
    };
    let number = |w: Option<&&str>, what: &str| -> Result<i64, String> {
        w.ok_or_else(|| format!("give {what}"))?
            .parse()
            .map_err(|_| format!("{what} must be a whole number"))
    };
    let command = match words.first().copied() {
        Some("kill") => Command::Kill {
            pod: pod(words.get(1))?,
            down_for: match words.get(2) {
                Some(_) => Duration::from_secs(
                    u64::try_from(number(words.get(2), "seconds")?)
                        .map_err(|_| "seconds must not be negative".to_string())?,
                ),
                None => Duration::from_secs(10),
            },
        },
        Some("freeze") => Command::Freeze(pod(words.get(1))?),
        Some("thaw") => Command::Thaw(pod(words.get(1))?),
        Some("cut") => Command::Cut(pod(words.get(1))?),
        Some("heal") => Command::Heal(pod(words.get(1))?),
        Some("scale") => Command::Scale(
            i32::try_from(number(words.get(1), "a number of nodes")?)
                .map_err(|_| "too many nodes".to_string())?,
        ),
        Some("switchover") => Command::Switchover {
            partition: i32::try_from(number(words.get(1), "a partition")?)
                .map_err(|_| "no such partition".to_string())?,
            to: pod(words.get(2))?,
        },
        Some("status") => Command::Status,
        Some("help" | "?") => Command::Help,
        Some("quit" | "exit") => Command::Quit,
        Some(other) => return Err(format!("unknown command {other:?}; type help")),
        None => return Err(String::new()),
    };
    Ok(command)
}

/// The `kubectl get rps`-like line, the status report, and the pods' addresses.
fn render(set: &partita_api::ReplicatedPartitionSet, pods: &BTreeMap<String, Pod>) -> String {
    let status = set.status.clone().unwrap_or_default();
    let summary = format::table(
        &["NAME", "NODES", "PARTITIONS", "RF", "READY", "PHASE"],
        &[vec![
            set.metadata.name.clone().unwrap_or_default(),
            set.spec.nodes.to_string(),
            set.spec.partitions.to_string(),
            set.spec.replication_factor.to_string(),
            status.ready_nodes.to_string(),
            format::phase_name(status.phase).to_string(),
        ]],
    );
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|(name, pod)| {
            let s = pod.status.clone().unwrap_or_default();
            let ready = s
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let ip = s.pod_ip.unwrap_or_else(|| "-".into());
            let terminating = pod.metadata.deletion_timestamp.is_some();
            vec![
                name.clone(),
                if terminating {
                    "Terminating".into()
                } else if ready {
                    "Ready".into()
                } else {
                    "NotReady".into()
                },
                format!("{ip}:{}", ports::RESP),
                format!("redis-cli -c -h {ip} -p {}", ports::RESP),
            ]
        })
        .collect();
    let pods = format::table(&["POD", "STATE", "RESP", "TRY"], &rows);
    format!(
        "{summary}\n{}\n{pods}",
        format::status_report(set).trim_end()
    )
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARTITA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("partita-box: starting the runtime failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("partita-box: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> partita_e2e::Result<()> {
    let config = BoxConfig {
        root: args.root.clone(),
        ..BoxConfig::from_env()
    };
    say("partita-box: starting the in-memory API, the operator and the kubelet");
    let mut cluster = InBox::start(config).await?;
    let outcome = serve(&mut cluster, &args).await;
    say("partita-box: stopping");
    cluster.stop().await;
    outcome
}

async fn serve(cluster: &mut InBox, args: &Args) -> partita_e2e::Result<()> {
    let spec = format!(
        "nodes: {}\npartitions: {}\nreplicationFactor: {}",
        args.nodes, args.partitions, args.replication_factor
    );
    let set = Set::create(cluster, &args.name, &spec).await?;
    say(&format!(
        "partita-box: created ReplicatedPartitionSet {}/{} ({} nodes, {} partitions, replicationFactor {}); type help for commands",
        cluster.namespace(),
        args.name,
        args.nodes,
        args.partitions,
        args.replication_factor
    ));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut shown = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut nonce = 0u32;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { return Ok(()) };
                let command = match parse(&line) {
                    Ok(c) => c,
                    Err(e) if e.is_empty() => continue,
                    Err(e) => { say(&format!("partita-box: {e}")); continue }
                };
                if command == Command::Quit {
                    return Ok(());
                }
                if command == Command::Status {
                    shown.clear();
                }
                nonce += 1;
                if let Err(e) = execute(cluster, &set, command, nonce).await {
                    say(&format!("partita-box: {e}"));
                }
            }
            _ = tick.tick() => {
                let (Ok(rps), Ok(pods)) = (set.get().await, set.pods().await) else { continue };
                let text = render(&rps, &pods);
                if text != shown {
                    say(&format!("\n{text}"));
                    shown = text;
                }
            }
        }
    }
}

async fn execute(
    cluster: &mut InBox,
    set: &Set,
    command: Command,
    nonce: u32,
) -> partita_e2e::Result<()> {
    match command {
        Command::Kill { pod, down_for } => {
            cluster.kill(&pod, down_for).await?;
            say(&format!(
                "partita-box: killed {pod}; it stays down for {down_for:?}"
            ));
        }
        Command::Freeze(pod) => cluster.freeze(&pod).await?,
        Command::Thaw(pod) => cluster.thaw(&pod).await?,
        Command::Cut(pod) => cluster.cut(&pod).await?,
        Command::Heal(pod) => cluster.heal(&pod).await?,
        Command::Scale(n) => set.patch(serde_json::json!({"spec": {"nodes": n}})).await?,
        Command::Switchover { partition, to } => {
            let value = format!("{partition}={to}@{nonce}");
            set.patch(
                serde_json::json!({"metadata": {"annotations": {"partita.dev/switchover": value}}}),
            )
            .await?;
        }
        Command::Help => say(HELP),
        Command::Status | Command::Quit => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse("kill demo-1 3"),
            Ok(Command::Kill {
                pod: "demo-1".into(),
                down_for: Duration::from_secs(3)
            })
        );
        assert_eq!(
            parse("kill demo-1"),
            Ok(Command::Kill {
                pod: "demo-1".into(),
                down_for: Duration::from_secs(10)
            })
        );
        assert_eq!(parse("freeze demo-0"), Ok(Command::Freeze("demo-0".into())));
        assert_eq!(parse("scale 5"), Ok(Command::Scale(5)));
        assert_eq!(
            parse("switchover 2 demo-1"),
            Ok(Command::Switchover {
                partition: 2,
                to: "demo-1".into()
            })
        );
        assert_eq!(parse("  "), Err(String::new()));
        assert_eq!(parse("kill"), Err("name a pod, such as demo-0".into()));
        assert_eq!(
            parse("scale many"),
            Err("a number of nodes must be a whole number".into())
        );
        assert_eq!(
            parse("kill demo-0 -1"),
            Err("seconds must not be negative".into())
        );
        assert!(parse("reboot").unwrap_err().contains("unknown command"));
    }

    #[test]
    fn the_view_shows_the_set_the_map_and_where_to_point_redis_cli() {
        let mut set = partita_api::ReplicatedPartitionSet::new(
            "demo",
            serde_yaml::from_str("nodes: 1\npartitions: 1").unwrap(),
        );
        set.status = Some(partita_api::ReplicatedPartitionSetStatus {
            phase: Some(partita_api::Phase::Ready),
            ready_nodes: 1,
            partitions: vec![partita_api::PartitionStatus {
                id: 0,
                primary: Some("demo-0".into()),
                epoch: 1,
                ..Default::default()
            }],
            ..Default::default()
        });
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo-0"},
            "status": {"podIP": "127.9.9.1",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let text = render(&set, &BTreeMap::from([("demo-0".to_string(), pod)]));
        assert!(text.contains("Ready"), "{text}");
        assert!(text.contains("demo-0"), "{text}");
        assert!(text.contains("redis-cli -c -h 127.9.9.1 -p 6379"), "{text}");
    }
}
