//! `partita-bench`: Partita against Redis on loopback, driven by identical generators
//! (issue #10).
//!
//! Why a Rust binary rather than the Python scripts in `node/bench/`: the same RESP client and
//! load generator drive both systems in one process, so neither benefits from a different
//! client (`redis-benchmark` pipelines and measures in its own way, and cannot send WRITECONCERN
//! or poll replicas); the correctness gate after every run uses Partita's Admin API directly;
//! and `--quick` runs as an ordinary test in CI.
//!
//! The pieces: [`resp`] (the client), [`load`] (the generator), [`systems`] (starting the
//! servers, replication set-up, the gate), [`workloads`] (W1–W6), [`stats`] and [`report`]
//! (pure: percentiles, ratios, the JSON and the Markdown).

pub mod load;
pub mod report;
pub mod resp;
pub mod stats;
pub mod systems;
pub mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::Result;
use report::Results;
use systems::{Env, order};

/// The workloads of issue #10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Workload {
    /// Throughput, 0 and 2 replicas.
    W1,
    /// Catch-up after W1.
    W2,
    /// Visibility lag.
    W3,
    /// Acknowledged writes.
    W4,
    /// Full sync.
    W5,
    /// Resync and failover (correctness table).
    W6,
}

impl Workload {
    /// Every workload, in order.
    pub const ALL: [Workload; 6] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W6,
    ];

    /// "W1" … "W6".
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::W5 => "W5",
            Workload::W6 => "W6",
        }
    }

    /// Parses "W1"/"w1"/"1".
    pub fn parse(s: &str) -> Option<Workload> {
        let n = s.trim().trim_start_matches(['W', 'w']);
        Workload::ALL.into_iter().find(|w| &w.name()[1..] == n)
    }
}

/// Counts and durations of a benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Smoke mode: small counts, correctness gates only.
    pub quick: bool,
    /// Alternated runs per system (W1–W4).
    pub runs: usize,
    /// The key space of random keys.
    pub keyspace: u64,
    /// W1: clients.
    pub w1_clients: usize,
    /// W1: seconds per load.
    pub w1_secs: f64,
    /// W1: most SETs per load.
    pub w1_max_ops: u64,
    /// W3: most probes per condition.
    pub w3_probes: usize,
    /// W3: most seconds per condition.
    pub w3_secs: f64,
    /// W3: the open-loop background rate, SETs/s.
    pub w3_rate: f64,
    /// W4: seconds per (mode, shape).
    pub w4_secs: f64,
    /// W4: most SETs per (mode, shape).
    pub w4_max_ops: u64,
    /// W5: keys loaded before the replica attaches.
    pub w5_keys: u64,
    /// W5: runs per system.
    pub w5_runs: usize,
    /// W5: background write rate while the second replica attaches, SETs/s.
    pub w5_rate: f64,
    /// W6: runs per system.
    pub w6_runs: usize,
    /// W6: keys loaded first.
    pub w6_keys: u64,
    /// W6: writes made while a replica is cut off, to pass the backlog.
    pub w6_past_backlog: u64,
    /// Which workloads run.
    pub workloads: Vec<Workload>,
    /// Timeout of one request.
    #[serde(skip)]
    pub op_timeout: Duration,
    /// Deadline of one wait.
    #[serde(skip)]
    pub deadline: Duration,
    /// The partita-node binary.
    #[serde(skip)]
    pub node: PathBuf,
}

impl Config {
    /// The full run: about 15 minutes on 2 cores.
    pub fn full(node: PathBuf) -> Config {
        Config {
            quick: false,
            runs: 5,
            keyspace: 1_000_000,
            w1_clients: 50,
            w1_secs: 3.0,
            w1_max_ops: 50_000_000,
            w3_probes: 200,
            w3_secs: 2.0,
            w3_rate: 20_000.0,
            w4_secs: 1.5,
            w4_max_ops: 10_000_000,
            w5_keys: 1_000_000,
            w5_runs: 5,
            w5_rate: 20_000.0,
            w6_runs: 1,
            w6_keys: 10_000,
            w6_past_backlog: 60_000,
            workloads: Workload::ALL.to_vec(),
            op_timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(120),
            node,
        }
    }

    /// The smoke run CI makes: every workload and gate, small counts, about half a minute.
    pub fn quick(node: PathBuf) -> Config {
        Config {
            quick: true,
            runs: 1,
            w1_secs: 0.5,
            w1_max_ops: 10_000,
            w3_probes: 10,
            w3_secs: 1.0,
            w3_rate: 2_000.0,
            w4_secs: 0.3,
            w4_max_ops: 1_000,
            w5_keys: 10_000,
            w5_runs: 1,
            w5_rate: 2_000.0,
            w6_keys: 1_000,
            ..Config::full(node)
        }
    }

    fn env(&self) -> Env {
        Env {
            node: self.node.clone(),
            op_timeout: self.op_timeout,
            deadline: self.deadline,
        }
    }

    fn has(&self, w: Workload) -> bool {
        self.workloads.contains(&w)
    }
}

/// Runs every selected workload, alternating the systems run by run, and returns what was
/// measured and every gate's outcome. Runs that fail are recorded, not returned as errors.
pub async fn run(cfg: &Config) -> Result<Results> {
    let env = cfg.env();
    let values = load::Values::new(0x5eed);
    let mut res = Results {
        workloads: cfg.workloads.iter().map(|w| w.name().to_string()).collect(),
        ..Results::default()
    };
    let replicated = [Workload::W1, Workload::W2, Workload::W3, Workload::W4]
        .iter()
        .any(|w| cfg.has(*w));
    for run in 0..cfg.runs.max(cfg.w5_runs).max(cfg.w6_runs) {
        for system in order(run) {
            let mut ctx = workloads::Ctx {
                cfg,
                env: &env,
                values: &values,
                res: &mut res,
                run,
                system,
            };
            if run < cfg.runs && cfg.has(Workload::W1) {
                ctx.log(&format!("run {}: {} W1 0 replicas", run + 1, system.name()));
                workloads::unreplicated(&mut ctx).await;
            }
            if run < cfg.runs && replicated {
                ctx.log(&format!(
                    "run {}: {} W1–W4 2 replicas",
                    run + 1,
                    system.name()
                ));
                workloads::replicated(&mut ctx).await;
            }
            if run < cfg.w5_runs && cfg.has(Workload::W5) {
                ctx.log(&format!("run {}: {} W5 full sync", run + 1, system.name()));
                workloads::w5::run(&mut ctx).await;
            }
            if run < cfg.w6_runs && cfg.has(Workload::W6) {
                ctx.log(&format!(
                    "run {}: {} W6 resync/failover",
                    run + 1,
                    system.name()
                ));
                workloads::w6::run(&mut ctx).await;
            }
        }
    }
    Ok(res)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The machine: cores, CPU model, kernel, memory, Redis version, and the load average now.
pub fn machine() -> serde_json::Value {
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let redis = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "redis-server not found".into());
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(0),
        "cpu": cpu,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "memory_gib": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "redis": redis,
        "loadavg_before": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

/// [`machine`] with the load average after the run added.
pub fn machine_after(mut before: serde_json::Value) -> serde_json::Value {
    before["loadavg_after"] = serde_json::json!(
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    before
}

/// The lines above the tables: machine, command, settings, counts.
pub fn preamble(
    cfg: &Config,
    machine: &serde_json::Value,
    command: &str,
    elapsed_s: f64,
) -> Vec<String> {
    let s = |k: &str| {
        machine[k]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| machine[k].to_string())
    };
    vec![
        format!(
            "Machine: {} cores ({}), {} GiB, Linux {}; {}. Load average before / after the run: {} / {}.",
            s("cpus"),
            s("cpu"),
            s("memory_gib"),
            s("kernel"),
            s("redis"),
            s("loadavg_before"),
            s("loadavg_after")
        ),
        String::new(),
        format!("Command: `{command}` ({elapsed_s:.0} s)."),
        String::new(),
        format!(
            "Each figure is the median of the runs that passed their gate, min–max in brackets: {} alternated runs per system \
             (Redis first on odd runs, Partita on even) for W1–W4, {} for W5, {} for W6. Ratios: above 1 means Partita wins \
             (throughput Partita/Redis; latency, time and lag Redis/Partita); ⚠ marks a ratio below 1.",
            cfg.runs, cfg.w5_runs, cfg.w6_runs
        ),
        String::new(),
        format!(
            "Settings: keys `key:%012d`, 100-byte random (incompressible) values, {} key space; one RESP client and \
             generator (`e2e/src/bench/load.rs`) for both. Redis `--save \"\" --appendonly no --repl-diskless-sync-delay 0`; \
             Partita `--in-memory` (persistence off), 16 partitions. W1: {} clients, {} s per load. W3: up to {} probes or \
             {} s per condition, open-loop load {} SET/s. W4: {} s per (mode, shape). W5: {} keys, writer at {} SET/s. \
             Every server is started fresh on loopback for its run, replicas linked by `REPLICAOF` / Admin AssignRole.",
            cfg.keyspace,
            cfg.w1_clients,
            cfg.w1_secs,
            cfg.w3_probes,
            cfg.w3_secs,
            cfg.w3_rate,
            cfg.w4_secs,
            cfg.w5_keys,
            cfg.w5_rate
        ),
    ]
}
