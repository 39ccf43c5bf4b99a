//! Property test: random sequences of puts, deletes, expiries, snapshots, the clock moving and
//! restarts, run on the real engine over a real data directory, end in the same state as a plain
//! in-memory model.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

use bytes::Bytes;
use partita_node::engine::{Engine, EngineConfig};
use partita_node::storage::{FsyncPolicy, KvState, SetCondition, SetExpiry};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        value: u16,
        ttl_ms: Option<u16>,
    },
    Delete {
        key: u8,
    },
    Expire {
        key: u8,
        in_ms: u16,
    },
    Persist {
        key: u8,
    },
    Advance {
        ms: u16,
    },
    ExpireCycle,
    Snapshot,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..24, any::<u16>(), proptest::option::of(1u16..500))
            .prop_map(|(key, value, ttl_ms)| Op::Put { key, value, ttl_ms }),
        2 => (0u8..24).prop_map(|key| Op::Delete { key }),
        2 => (0u8..24, 0u16..500).prop_map(|(key, in_ms)| Op::Expire { key, in_ms }),
        1 => (0u8..24).prop_map(|key| Op::Persist { key }),
        2 => (1u16..400).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::ExpireCycle),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Restart),
    ]
}

/// The model: key -> (value, absolute expiry or 0).
type Model = BTreeMap<Vec<u8>, (Vec<u8>, i64)>;

fn live(model: &Model, key: &[u8], now: i64) -> bool {
    model.get(key).is_some_and(|(_, at)| *at == 0 || *at > now)
}

fn open(dir: &std::path::Path) -> Engine {
    Engine::open(EngineConfig {
        data_dir: Some(dir.to_path_buf()),
        partitions: 4,
        fsync: FsyncPolicy::Never,
        backlog_bytes: 4096,
        segment_bytes: 4096,
        // Snapshots are taken when the test asks.
        snapshot_log_bytes: 0,
        replicated: false,
        ..EngineConfig::default()
    })
    .expect("open the engine")
}

fn key(k: u8) -> Vec<u8> {
    format!("key:{k}").into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_matches_a_model_across_snapshots_and_restarts(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = open(dir.path());
        let mut model = Model::new();
        let mut now: i64 = 1_800_000_000_000;
        for op in &ops {
            match op {
                Op::Put { key: k, value, ttl_ms } => {
                    let (k, v) = (key(*k), value.to_string().into_bytes());
                    let expiry = ttl_ms.map_or(SetExpiry::Clear, |t| SetExpiry::At(now + i64::from(t)));
                    let p = engine.partition_of(&k).clone();
                    p.write(now, |s| {
                        let o = s.decide_set(Bytes::from(k.clone()), Bytes::from(v.clone()), SetCondition::Always, expiry, false, now);
                        ((), o.command)
                    }).unwrap();
                    model.insert(k, (v, ttl_ms.map_or(0, |t| now + i64::from(t))));
                }
                Op::Delete { key: k } => {
                    let k = key(*k);
                    let p = engine.partition_of(&k).clone();
                    let (existed, _) = p.write(now, |s| s.decide_delete(&k, now)).unwrap();
                    prop_assert_eq!(existed, live(&model, &k, now));
                    model.remove(&k);
                }
                Op::Expire { key: k, in_ms } => {
                    let k = key(*k);
                    let at = now + i64::from(*in_ms);
                    let p = engine.partition_of(&k).clone();
                    let (existed, _) = p.write(now, |s| s.decide_expire(&k, at, now)).unwrap();
                    prop_assert_eq!(existed, live(&model, &k, now));
                    if existed {
                        if at <= now {
                            model.remove(&k);
                        } else if let Some(e) = model.get_mut(&k) {
                            e.1 = at;
                        }
                    }
                }
                Op::Persist { key: k } => {
                    let k = key(*k);
                    let p = engine.partition_of(&k).clone();
                    let (removed, _) = p.write(now, |s| s.decide_persist(&k, now)).unwrap();
                    let had = live(&model, &k, now) && model.get(&k).is_some_and(|e| e.1 != 0);
                    prop_assert_eq!(removed, had);
                    if removed && let Some(e) = model.get_mut(&k) {
                        e.1 = 0;
                    }
                }
                Op::Advance { ms } => now += i64::from(*ms),
                Op::ExpireCycle => {
                    let (_, more) = engine.expire_cycle(now, 1000);
                    prop_assert!(!more, "every due key fits one batch here");
                    model.retain(|_, (_, at)| *at == 0 || *at > now);
                }
                Op::Snapshot => {
                    for p in engine.partitions() {
                        p.flush().unwrap();
                        p.maybe_snapshot(0).unwrap();
                    }
                }
                Op::Restart => {
                    // A clean stop hands every queued entry to the log.
                    engine.flush_and_sync().unwrap();
                    drop(engine);
                    engine = open(dir.path());
                    prop_assert!(engine.recovery_warnings.is_empty(), "{:?}", engine.recovery_warnings);
                }
            }
            // Every key reads as the model says, at the current time.
            for k in 0..24u8 {
                let k = key(k);
                let got = engine.partition_of(&k).read(|s| s.get(&k, now).map(|i| i.value.to_vec()));
                let want = model.get(&k).filter(|(_, at)| *at == 0 || *at > now).map(|(v, _)| v.clone());
                prop_assert_eq!(got, want, "key {:?} after {:?}", String::from_utf8_lossy(&k), op);
            }
        }
        // And the whole held state, expiries included, is the model's.
        engine.flush_and_sync().unwrap();
        drop(engine);
        let engine = open(dir.path());
        let mut held = Model::new();
        for p in engine.partitions() {
            p.read(|s: &KvState| {
                for (k, i) in s.iter() {
                    held.insert(k.to_vec(), (i.value.to_vec(), i.expire_at_ms));
                }
            });
        }
        prop_assert_eq!(held, model);
    }
}
