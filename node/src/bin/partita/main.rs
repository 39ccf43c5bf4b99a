//! `partita`: the command-line client. It talks to a node's gRPC address: read and write keys,
//! scan partitions, show a node's status, and administer it (`partita admin`).

mod admin;
mod connect;
mod topology;

use clap::{Parser, Subcommand};
use connect::{channel, describe};
use partita_node::client::{Client, Config};
use partita_node::proto::{admin_client::AdminClient, *};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Partita command-line client.
#[derive(Debug, Parser)]
#[command(name = "partita", version, about)]
struct Cli {
    /// The node's gRPC address, host:port.
    #[arg(
        long,
        global = true,
        env = "PARTITA_ADDR",
        default_value = "127.0.0.1:7379"
    )]
    addr: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    #[command(flatten)]
    Client(ClientCmd),
    /// Administer the node: its full status and digest, partition role changes, and its
    /// partition map.
    Admin(admin::AdminArgs),
}

/// Reading and writing keys, and the short status.
#[derive(Debug, Subcommand)]
enum ClientCmd {
    /// Print a key's value; exit status 1 when the key is missing.
    Get {
        /// The key.
        key: String,
    },
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Time to live in milliseconds.
        #[arg(long)]
        ttl_ms: Option<u64>,
        /// Write only if the key does not exist.
        #[arg(long, conflicts_with = "if_present")]
        if_absent: bool,
        /// Write only if the key exists.
        #[arg(long)]
        if_present: bool,
        /// Write concern: one, quorum or all (the node's default when unset).
        #[arg(long, value_parser = ["one", "quorum", "all"])]
        concern: Option<String>,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// List keys of a partition (or of every partition) in key order.
    Scan {
        /// The partition; every partition when unset.
        #[arg(long)]
        partition: Option<u32>,
        /// Redis-style glob the keys must match.
        #[arg(long = "match")]
        pattern: Option<String>,
        /// Most keys to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print values too.
        #[arg(long)]
        values: bool,
    },
    /// Show the node's state: every partition's role, epoch, offsets and keys.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Cmd::Client(command) => client(&cli.addr, command).await,
        Cmd::Admin(args) => admin::run(&cli.addr, args).await,
    }
}

#[allow(clippy::print_stdout, reason = "a CLI prints its results")]
async fn client(addr: &str, command: ClientCmd) -> Result<ExitCode, String> {
    if let ClientCmd::Status { json } = command {
        return status(addr, json).await;
    }
    // Keys go straight to their partition's primary, wherever it is; `addr` is where the
    // partition map is read first.
    let mut config = Config::new([addr]);
    config.connect_timeout = Duration::from_secs(5);
    let kv = Client::connect(config).await.map_err(|e| explain(&e))?;
    let mut out = std::io::stdout().lock();
    match command {
        ClientCmd::Get { key } => {
            let r = kv
                .get(GetRequest {
                    key: key.into_bytes(),
                    read: None,
                })
                .await
                .map_err(|e| explain(&e))?;
            if !r.found {
                eprintln!("(not found)");
                return Ok(ExitCode::from(1));
            }
            out.write_all(&r.value).map_err(|e| e.to_string())?;
            writeln!(out).map_err(|e| e.to_string())?;
        }
        ClientCmd::Put {
            key,
            value,
            ttl_ms,
            if_absent,
            if_present,
            concern,
        } => {
            let concern = match concern.as_deref() {
                Some("one") => WriteConcern::One,
                Some("quorum") => WriteConcern::Quorum,
                Some("all") => WriteConcern::All,
                _ => WriteConcern::Unspecified,
            };
            let condition = if if_absent {
                PutCondition::IfAbsent
            } else if if_present {
                PutCondition::IfPresent
            } else {
                PutCondition::Always
            };
            let r = kv
                .put(PutRequest {
                    key: key.into_bytes(),
                    value: value.into_bytes(),
                    ttl_ms: ttl_ms.unwrap_or(0),
                    keep_ttl: false,
                    condition: condition as i32,
                    write: Some(WriteOptions {
                        concern: concern as i32,
                        timeout_ms: 0,
                    }),
                })
                .await
                .map_err(|e| explain(&e))?;
            match r.ack {
                Some(a) if r.applied => println!(
                    "OK partition={} epoch={} offset={} acked={}/{}",
                    a.partition, a.epoch, a.offset, a.acked_copies, a.required_copies
                ),
                _ => {
                    println!("not written: the condition did not hold");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        ClientCmd::Del { key } => {
            let r = kv
                .delete(DeleteRequest {
                    key: key.into_bytes(),
                    write: None,
                })
                .await
                .map_err(|e| explain(&e))?;
            println!("{}", if r.existed { "deleted" } else { "(not found)" });
        }
        ClientCmd::Scan {
            partition,
            pattern,
            limit,
            values,
        } => {
            let partitions = match partition {
                Some(p) => vec![p],
                None => (0..kv.partitions()).collect(),
            };
            let mut printed = 0;
            'all: for p in partitions {
                let mut start = Vec::new();
                loop {
                    let page = kv
                        .scan(ScanRequest {
                            partition: p,
                            start_key: start.clone(),
                            end_key: Vec::new(),
                            r#match: pattern.clone().unwrap_or_default().into_bytes(),
                            limit: (limit - printed).min(1000) as u32,
                            keys_only: !values,
                            read: None,
                        })
                        .await
                        .map_err(|e| explain(&e))?;
                    for e in page.entries {
                        let key = String::from_utf8_lossy(&e.key);
                        if values {
                            println!("{key}\t{}", String::from_utf8_lossy(&e.value));
                        } else {
                            println!("{key}");
                        }
                        printed += 1;
                        if printed >= limit {
                            break 'all;
                        }
                    }
                    if page.next_start_key.is_empty() {
                        break;
                    }
                    start = page.next_start_key;
                }
            }
        }
        ClientCmd::Status { json } => return status(addr, json).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// `partita status`: the state of the node at `addr` itself.
#[allow(clippy::print_stdout, reason = "a CLI prints its results")]
async fn status(addr: &str, json: bool) -> Result<ExitCode, String> {
    let mut admin = AdminClient::new(channel(addr, Duration::from_secs(5)).await?);
    let s = admin
        .status(StatusRequest { partitions: None })
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    if json {
        println!("{}", status_json(&s));
    } else {
        let node = s.node.clone().unwrap_or_default();
        println!(
            "node {} version {} ready={} standalone={} fsync={} partitions={}",
            node.node_id, s.version, s.ready, s.standalone, s.fsync, s.partitions_total
        );
        println!(
            "{:>9}  {:<8} {:>6} {:>12} {:>12} {:>10}",
            "PARTITION", "ROLE", "EPOCH", "OFFSET", "SNAPSHOT", "KEYS"
        );
        for p in &s.partitions {
            println!(
                "{:>9}  {:<8} {:>6} {:>12} {:>12} {:>10}",
                p.partition,
                role_name(p.role),
                p.epoch,
                p.last.as_ref().map_or(0, |l| l.offset),
                p.snapshot_offset,
                p.keys
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line for a failed client call: the node's ErrorInfo when it sent one.
fn explain(e: &partita_node::Error) -> String {
    match e {
        partita_node::Error::Call(status) => describe(status),
        other => other.to_string(),
    }
}

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Primary) => "primary",
        Ok(Role::Replica) => "replica",
        Ok(Role::Fenced) => "fenced",
        _ => "-",
    }
}

fn status_json(s: &NodeStatus) -> serde_json::Value {
    let node = s.node.clone().unwrap_or_default();
    serde_json::json!({
        "node": {"id": node.node_id, "grpc": node.grpc_addr, "resp": node.resp_addr},
        "version": s.version,
        "ready": s.ready,
        "standalone": s.standalone,
        "fsync": s.fsync,
        "uptimeMs": s.uptime_ms,
        "topologyVersion": s.topology_version,
        "partitions": s.partitions.iter().map(|p| {
            let last = p.last.unwrap_or_default();
            serde_json::json!({
                "partition": p.partition,
                "role": role_name(p.role),
                "epoch": p.epoch,
                "last": {"epoch": last.epoch, "offset": last.offset},
                "commitOffset": p.commit_offset,
                "logStartOffset": p.log_start_offset,
                "snapshotOffset": p.snapshot_offset,
                "keys": p.keys,
                "bytes": p.bytes,
                "replicas": p.replicas.iter().map(|r| serde_json::json!({
                    "node": r.node_id, "inSync": r.in_sync, "ackedOffset": r.acked_offset,
                    "lagEntries": r.lag_entries, "lagMs": r.lag_ms,
                })).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    })
}
