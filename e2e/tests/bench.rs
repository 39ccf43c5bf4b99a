//! `partita-bench --quick --json` as CI runs it: a real process starting real redis-server and
//! partita-node processes on loopback. Checks that every workload reported, every correctness
//! gate passed and the JSON has its shape; asserts nothing about timings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn quick_run_reports_every_workload_with_every_gate_passed() {
    let node = partita_e2e::inbox::node_binary()
        .expect("partita-node is built next to the tests (cargo build --workspace)");
    let out_dir = tempfile::tempdir().unwrap();
    let json_path = out_dir.path().join("bench.json");
    let md_path = out_dir.path().join("bench.md");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_partita-bench"))
        .args(["--quick", "--json"])
        .arg(&json_path)
        .arg("--markdown")
        .arg(&md_path)
        .arg("--node")
        .arg(&node)
        .output()
        .expect("partita-bench runs (redis-server: .ci/setup)");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "partita-bench failed ({}):\n{stderr}",
        out.status
    );
    assert!(
        took < Duration::from_secs(110),
        "the quick run took {took:?}"
    );

    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(j["tool"], "partita-bench");
    assert_eq!(j["all_gates_passed"], true, "{stderr}");
    assert!(j["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert_eq!(j["config"]["quick"], true);
    for w in ["W1", "W2", "W3", "W4", "W5", "W6"] {
        let s = &j["workloads"][w];
        assert!(s["gates"].as_u64().unwrap() >= 1, "{w} ran no gate: {s}");
        assert_eq!(s["all_passed"], true, "{w}: {s}");
        if w != "W6" {
            assert!(
                s["metrics"].as_u64().unwrap() >= 1,
                "{w} measured nothing: {s}"
            );
        }
    }
    let metrics = j["metrics"].as_array().unwrap();
    for id in [
        "w1_r0_p16_ops",
        "w1_r2_p1_p99",
        "w1_cost_p16",
        "w2_p16_catchup",
        "w3_open_p99",
        "w4_all_16x16_p999",
        "w5_load_ms",
    ] {
        let m = metrics
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no metric {id}"));
        for system in ["redis", "partita"] {
            assert!(m[system]["median"].is_number(), "{id} {system}: {m}");
        }
        assert!(m["ratio"].is_number() || m["ratio"] == "inf", "{id}: {m}");
        assert!(["higher", "lower"].contains(&m["better"].as_str().unwrap()));
    }
    let w6 = j["w6"].as_array().unwrap();
    assert_eq!(w6.len(), 5, "{w6:?}");
    for row in w6 {
        assert_eq!(row["partita_ok"], true, "Partita: {row}");
    }
    for g in j["gates"].as_array().unwrap() {
        assert_eq!(g["passed"], true, "{g}");
    }
    let md = std::fs::read_to_string(&md_path).unwrap();
    assert!(md.starts_with("## partita-bench"));
    assert!(md.contains("| measurement | unit | Redis | Partita | ratio |"));
}
