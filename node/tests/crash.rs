//! SIGKILL during a write load with `--fsync always`: after a restart, every acknowledged write
//! is present, and the node's digest equals the test's own model of the data, give or take the
//! one write each client had in flight when the process died.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

mod common;

use common::{Reply, start};
use partita_node::proto::{Command, PutCommand, command::Cmd};
use partita_node::storage::{KvState, digest_hex};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WRITERS: usize = 4;

/// A small deterministic generator; the seed is printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn digest(model: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    // The node's digest is a XOR over keys, so one state holding every key gives the same value
    // as the node's per-partition states together.
    let mut s = KvState::new(0);
    for (k, v) in model {
        s.apply_next(
            1,
            Command {
                cmd: Some(Cmd::Put(PutCommand {
                    key: k.clone(),
                    value: v.clone(),
                    expire_at_ms: 0,
                })),
            },
        );
    }
    digest_hex(&s.digest())
}

struct Outcome {
    acked: Vec<(Vec<u8>, Vec<u8>)>,
    in_flight: Option<(Vec<u8>, Vec<u8>)>,
}

fn writer(
    addr: std::net::SocketAddr,
    id: usize,
    round: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let mut rng = Rng(seed | 1);
    let mut c = common::Client::connect(addr);
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..20_000u32 {
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            break;
        }
        // Mostly new keys; sometimes overwrite one of this writer's earlier keys.
        let key = if i > 10 && rng.next().is_multiple_of(4) {
            format!("r{round}:w{id}:{}", rng.next() % u64::from(i))
        } else {
            format!("r{round}:w{id}:{i}")
        };
        let value = format!("{}-{}", rng.next(), i);
        let pending = (key.into_bytes(), value.into_bytes());
        let ok = c
            .call(&[b"SET".as_slice(), &pending.0, &pending.1])
            .map(|r| r == Reply::Simple("OK".into()));
        match ok {
            Ok(true) => acked.push(pending),
            Ok(false) => panic!("SET refused"),
            // The node died: this write's fate is unknown.
            Err(_) => {
                return Outcome {
                    acked,
                    in_flight: Some(pending),
                };
            }
        }
    }
    Outcome {
        acked,
        in_flight: None,
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_with_fsync_always() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Small segments and snapshots, so kills also land during rolls and snapshots.
    let flags = [
        "--fsync",
        "always",
        "--partitions",
        "8",
        "--segment-bytes",
        "65536",
        "--snapshot-log-bytes",
        "300000",
        "--backlog-bytes",
        "65536",
    ];
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut total_acked = 0;
    for round in 0..3 {
        let node = start(&data, &flags);
        let mut check = node.client();
        assert_eq!(
            check.cmd(&["DEBUG", "DIGEST"]).text(),
            digest(&model),
            "round {round}: the restarted node holds exactly the model"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|id| {
                let (addr, stop, s) = (node.resp, Arc::clone(&stop), rng.next());
                std::thread::spawn(move || writer(addr, id, round, s, stop))
            })
            .collect();
        // Kill at a random moment once writes are flowing.
        let mut probe = node.client();
        common::wait_until(
            Duration::from_secs(20),
            "writes to flow",
            || matches!(probe.cmd(&["DBSIZE"]), Reply::Int(n) if n as usize > model.len() + 200),
        );
        std::thread::sleep(Duration::from_millis(rng.next() % 700));
        node.kill();
        stop.store(true, Ordering::Relaxed);
        let outcomes: Vec<Outcome> = writers.into_iter().map(|w| w.join().unwrap()).collect();

        for o in &outcomes {
            total_acked += o.acked.len();
            for (k, v) in &o.acked {
                model.insert(k.clone(), v.clone());
            }
        }
        let node = start(&data, &flags);
        let mut c = node.client();
        for o in &outcomes {
            for (k, _) in &o.acked {
                // A later acknowledged write of the same key wins; and the in-flight write may
                // have landed on top.
                let got = c.cmd(&[b"GET".as_slice(), k]);
                let in_flight = o.in_flight.as_ref().filter(|(ik, _)| ik == k);
                let expected = model.get(k).unwrap();
                let ok = got == Reply::Bulk(Some(expected.clone()))
                    || in_flight.is_some_and(|(_, iv)| got == Reply::Bulk(Some(iv.clone())));
                assert!(ok, "round {round}: acknowledged {k:?} reads {got:?}");
            }
        }
        // Exactly the model, plus any subset of the in-flight writes.
        let in_flight: Vec<&(Vec<u8>, Vec<u8>)> = outcomes
            .iter()
            .filter_map(|o| o.in_flight.as_ref())
            .collect();
        let node_digest = c.cmd(&["DEBUG", "DIGEST"]).text();
        let mut matched = None;
        for mask in 0..(1u32 << in_flight.len()) {
            let mut candidate = model.clone();
            for (i, (k, v)) in in_flight.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    candidate.insert(k.clone(), v.clone());
                }
            }
            if digest(&candidate) == node_digest {
                matched = Some(candidate);
                break;
            }
        }
        model = matched.unwrap_or_else(|| {
            panic!("round {round}: the node's digest matches no possible state (seed {seed})")
        });
        node.kill();
    }
    assert!(
        total_acked > 300,
        "the load was too small to mean much: {total_acked}"
    );
}
