//! `kubectl-partita`: the kubectl plugin (`kubectl partita status | switchover | rebalance`).
//! A thin main: the commands live in [`partita_operator::plugin`].
//!
//! Exit codes: 0 on success, 1 on any error (a set that does not exist, a refused or timed-out
//! request, an API failure), 2 on a usage error (clap's).

use clap::Parser;
use partita_operator::plugin::{self, Cli};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    match runtime.block_on(plugin::run(cli, &mut out, &mut err)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::FAILURE
        }
    }
}
