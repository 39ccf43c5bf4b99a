//! `partita-box` as a newcomer runs it: a real process, its stdout read line by line, commands
//! typed on its stdin, and `redis-cli -c` pointed at an address it printed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Lines of stdout until one satisfies `wanted`, within `deadline`.
fn until(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    deadline: Duration,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if wanted(&line) {
                    return line;
                }
            }
            Err(_) => panic!(
                "not seen within {deadline:?}; output so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli runs (.ci/setup installs it)");
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_box_shows_the_cluster_serves_redis_cli_takes_commands_and_stops_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_partita-box"))
        .args([
            "--nodes",
            "3",
            "--partitions",
            "4",
            "--replication-factor",
            "2",
        ])
        .env(
            "PARTITA_NODE_BINARY",
            partita_e2e::inbox::node_binary().unwrap(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = Vec::new();
    let deadline = Duration::from_secs(60);

    until(&lines, &mut seen, deadline, |l| {
        l.starts_with("demo ") && l.contains("Ready")
    });
    let try_line = until(&lines, &mut seen, deadline, |l| {
        l.contains("redis-cli -c -h")
    });
    let ip = try_line
        .split_whitespace()
        .skip_while(|w| *w != "-h")
        .nth(1)
        .unwrap()
        .to_string();

    // Any printed address serves the whole cluster to a cluster-aware client.
    for k in 0..20 {
        assert_eq!(
            redis_cli(&[
                "-c",
                "-h",
                &ip,
                "-p",
                "6379",
                "set",
                &format!("k{k}"),
                &format!("v{k}")
            ]),
            "OK"
        );
    }
    for k in 0..20 {
        assert_eq!(
            redis_cli(&["-c", "-h", &ip, "-p", "6379", "get", &format!("k{k}")]),
            format!("v{k}")
        );
    }

    // A bad command is answered, not fatal; a switchover is carried out and shown.
    writeln!(stdin, "reboot").unwrap();
    until(&lines, &mut seen, deadline, |l| {
        l.contains("unknown command \"reboot\"")
    });
    writeln!(stdin, "switchover 0 demo-1").unwrap();
    until(&lines, &mut seen, deadline, |l| {
        l.contains("Last switchover request: 0=demo-1") && l.contains("Done")
    });

    writeln!(stdin, "quit").unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "partita-box did not stop after quit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    until(&lines, &mut seen, deadline, |l| {
        l.contains("partita-box: stopping")
    });
    // Its nodes went with it.
    let probe = std::net::TcpStream::connect_timeout(
        &format!("{ip}:6379").parse().unwrap(),
        Duration::from_millis(500),
    );
    assert!(
        probe.is_err(),
        "a node still answers at {ip} after the box stopped"
    );
}
