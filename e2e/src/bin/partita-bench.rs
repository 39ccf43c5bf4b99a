//! `partita-bench`: Partita against Redis on loopback with identical generators (issue #10).
//! A thin main: flags, then [`partita_e2e::bench`] does the work. See BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use partita_e2e::bench::{self, Config, Workload, report};
use partita_e2e::{Error, Result};

/// Partita against redis-server on this machine: W1 throughput, W2 catch-up, W3 visibility
/// lag, W4 acknowledged writes, W5 full sync, W6 resync and failover. Ratios above 1 mean
/// Partita wins. Needs redis-server (apt install redis-server) and a partita-node binary.
#[derive(Debug, Parser)]
#[command(name = "partita-bench", version)]
struct Args {
    /// Smoke mode for CI: 1 run, small counts, every correctness gate, no timing claims.
    #[arg(long)]
    quick: bool,
    /// Alternated runs per system for W1–W4 [default: 5; 1 with --quick].
    #[arg(long)]
    runs: Option<usize>,
    /// W5 runs per system [default: --runs].
    #[arg(long)]
    w5_runs: Option<usize>,
    /// W5 keys [default: 1000000; 10000 with --quick].
    #[arg(long)]
    w5_keys: Option<u64>,
    /// W1 seconds per load [default: 3].
    #[arg(long)]
    w1_secs: Option<f64>,
    /// Comma-separated workloads to run (W1,…,W6) [default: all].
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Write the JSON summary here ("-": stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the Markdown section for BENCHMARKS.md here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// The partita-node binary [default: next to this one].
    #[arg(long, env = "PARTITA_NODE_BINARY")]
    node: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("[partita-bench] some correctness gates failed: see the report");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("partita-bench: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn write(path: &PathBuf, text: &str) -> Result<()> {
    if path.as_os_str() == "-" {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        return out.write_all(text.as_bytes()).map_err(|source| Error::Io {
            what: "writing stdout".into(),
            source,
        });
    }
    std::fs::write(path, text).map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

fn real_main() -> Result<bool> {
    let args = Args::parse();
    let node = match args.node.clone() {
        Some(n) => n,
        None => partita_e2e::inbox::node_binary()?,
    };
    let mut cfg = if args.quick {
        Config::quick(node)
    } else {
        Config::full(node)
    };
    if let Some(r) = args.runs {
        cfg.runs = r;
        cfg.w5_runs = r;
    }
    if let Some(r) = args.w5_runs {
        cfg.w5_runs = r;
    }
    if let Some(k) = args.w5_keys {
        cfg.w5_keys = k;
    }
    if let Some(s) = args.w1_secs {
        cfg.w1_secs = s;
    }
    if !args.workloads.is_empty() {
        cfg.workloads = args
            .workloads
            .iter()
            .map(|w| {
                Workload::parse(w).ok_or_else(|| Error::Invalid(format!("unknown workload {w}")))
            })
            .collect::<Result<_>>()?;
    }
    let machine_before = bench::machine();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "starting the runtime".into(),
            source,
        })?;
    let started = Instant::now();
    let res = runtime.block_on(bench::run(&cfg))?;
    let elapsed = started.elapsed().as_secs_f64();
    let machine = bench::machine_after(machine_before);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let config = serde_json::to_value(&cfg).unwrap_or_default();
    if let Some(path) = &args.json {
        let mut j = report::json(&res, &machine, &config, elapsed);
        j["command"] = serde_json::json!(command);
        let text = serde_json::to_string_pretty(&j).unwrap_or_default();
        write(path, &(text + "\n"))?;
    }
    if let Some(path) = &args.markdown {
        let pre = bench::preamble(&cfg, &machine, &command, elapsed);
        write(
            path,
            &report::markdown(
                &res,
                "partita-bench: Partita vs Redis, identical generators (issue #10)",
                &pre,
            ),
        )?;
    }
    eprintln!(
        "[partita-bench] done in {elapsed:.1} s; {} of {} gates passed",
        res.gates.iter().filter(|g| g.passed).count(),
        res.gates.len()
    );
    Ok(res.all_gates_passed())
}
