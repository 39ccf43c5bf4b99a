//! Prints the ReplicatedPartitionSet CustomResourceDefinition as YAML.
//!
//! `cargo run -p partita-api --bin crdgen > crds/partita.dev_replicatedpartitionsets.yaml`
//! regenerates the committed file; a test fails when the two differ.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match partita_api::crd_yaml() {
        Ok(yaml) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(yaml.as_bytes()).and_then(|()| out.flush()) {
                eprintln!("crdgen: writing the CRD: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}
