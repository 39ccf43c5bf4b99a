//! The real `kubectl-partita` binary against the in-memory API server served over HTTP on
//! loopback, through a kubeconfig: what `status` prints, what `switchover` and `rebalance`
//! write, how `--wait` follows the status the operator writes (played here by the test), and
//! the exit codes of mistakes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{FakeApi, Process, wait_until};
use partita_api::{REBALANCE_ANNOTATION, ReplicatedPartitionSet, SWITCHOVER_ANNOTATION};
use partita_operator::requests::parse_switchover;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// A served fake API, a scratch directory and a kubeconfig (context namespace `default`).
struct Fixture {
    api: FakeApi,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Fixture {
    async fn start() -> Fixture {
        let api = FakeApi::new();
        let addr = api.serve().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = FakeApi::kubeconfig(addr, dir.path());
        Fixture {
            api,
            addr,
            dir,
            kubeconfig,
        }
    }

    /// The plugin, with no kubeconfig of its own: `--kubeconfig` or `KUBECONFIG` must be given.
    fn command(&self, args: &[&str]) -> (Command, PathBuf, PathBuf) {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let stdout = self.dir.path().join(format!("stdout-{n}"));
        let stderr = self.dir.path().join(format!("stderr-{n}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-partita"));
        cmd.args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        (cmd, stdout, stderr)
    }

    /// Starts the plugin with `--kubeconfig` and `args`.
    fn spawn(&self, args: &[&str]) -> Running {
        let kubeconfig = self.kubeconfig.to_str().unwrap();
        let mut all = vec!["--kubeconfig", kubeconfig];
        all.extend_from_slice(args);
        let (mut cmd, stdout, stderr) = self.command(&all);
        Running {
            process: Process(cmd.spawn().unwrap()),
            stdout,
            stderr,
        }
    }

    /// Runs the plugin with `--kubeconfig` and `args` to its end.
    async fn run(&self, args: &[&str]) -> Ran {
        self.spawn(args).finish().await
    }

    /// The set's stored object, as JSON.
    fn stored(&self, namespace: &str, name: &str) -> Value {
        serde_json::to_value(
            self.api
                .get::<ReplicatedPartitionSet>(namespace, name)
                .unwrap(),
        )
        .unwrap()
    }

    /// Waits until the plugin has set annotation `key` on the set, and returns its value.
    async fn annotation_set(&self, namespace: &str, name: &str, key: &str) -> String {
        let mut value = None;
        wait_until(&format!("the {key} annotation"), DEADLINE, || {
            value = self
                .api
                .annotation::<ReplicatedPartitionSet>(namespace, name, key);
            value.is_some()
        })
        .await;
        value.unwrap()
    }

    /// Forgets the calls so far, then waits until the set has been read `n` more times: a
    /// polling plugin has then seen what was written before, and decided to look again.
    async fn reads_of(&self, namespace: &str, name: &str, n: usize) {
        self.api.take_calls();
        let path = format!(
            "/apis/partita.dev/v1alpha1/namespaces/{namespace}/replicatedpartitionsets/{name}"
        );
        let mut seen = 0;
        wait_until(&format!("{n} reads of {name}"), DEADLINE, || {
            seen += self
                .api
                .take_calls()
                .iter()
                .filter(|c| c.method == "GET" && c.path == path)
                .count();
            seen >= n
        })
        .await;
    }
}

/// A plugin process in flight.
struct Running {
    process: Process,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    async fn finish(mut self) -> Ran {
        let status = self.process.wait(DEADLINE).await;
        Ran {
            code: status.code(),
            stdout: read(&self.stdout),
            stderr: read(&self.stderr),
        }
    }
}

/// A finished plugin run.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-11-22T00:00:00Z"})
}

/// The status of `orders`: four partitions, one moving, one without a primary, lag, a failover.
fn sample_status() -> Value {
    json!({
        "phase": "Degraded",
        "observedGeneration": 1,
        "readyNodes": 3,
        "mapVersion": 12,
        "partitions": [
            {"id": 0, "primary": "orders-0", "replicas": ["orders-1", "orders-2"], "epoch": 2,
             "inSyncReplicas": ["orders-1", "orders-2"],
             "lag": [{"node": "orders-1", "entries": 0, "millis": 0},
                     {"node": "orders-2", "entries": 3, "millis": 12}]},
            {"id": 1, "primary": "orders-1", "replicas": ["orders-2", "orders-3"], "epoch": 5,
             "inSyncReplicas": ["orders-2"],
             "lag": [{"node": "orders-3", "entries": 1200, "millis": 4500}],
             "moving": {"from": "orders-3", "to": "orders-0"}},
            {"id": 2, "primary": "orders-2", "replicas": ["orders-0", "orders-3"], "epoch": 1,
             "inSyncReplicas": ["orders-0", "orders-3"]},
            {"id": 3, "replicas": ["orders-0"], "epoch": 7,
             "message": "no replica can be promoted safely: orders-0 is behind"}
        ],
        "lastFailover": {"partition": 1, "from": "orders-0", "to": "orders-1", "epoch": 5,
                         "durationMillis": 850, "time": "2026-11-22T00:00:05Z", "planned": false},
        "conditions": [
            condition("Ready", "False", "PartitionUnavailable", "partition 3 has no primary"),
            condition("Progressing", "True", "Rebalancing", "moving partition 1"),
            condition("Degraded", "True", "NoPrimary", "partition 3 has no primary"),
            condition("FailingOver", "False", "NoFailover", "no failover in progress"),
            condition("Rebalancing", "True", "Moving", "1 partition moving"),
        ],
    })
}

/// Stores set `name` in `namespace` with 4 nodes, 4 partitions, replicationFactor 3 and
/// `status` (none when null).
fn insert_set(api: &FakeApi, namespace: &str, name: &str, status: Value) {
    let mut set: ReplicatedPartitionSet = serde_json::from_value(json!({
        "apiVersion": "partita.dev/v1alpha1",
        "kind": "ReplicatedPartitionSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodes": 4, "partitions": 4, "replicationFactor": 3},
    }))
    .unwrap();
    if !status.is_null() {
        set.status = Some(serde_json::from_value(status).unwrap());
    }
    api.insert(&set);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_the_summary_the_last_failover_the_partition_map_and_conditions() {
    let fx = Fixture::start().await;
    insert_set(&fx.api, "shop", "orders", sample_status());

    let ran = fx
        .run(&["status", "orders", "-n", "shop", "--context", "fake"])
        .await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let expected = "\
orders: Degraded, 3/4 nodes ready, 4 partitions, replicationFactor 3, mapVersion 12
Last failover: partition 1, orders-0 -> orders-1, epoch 5, took 850ms, automatic failover, at 2026-11-22T00:00:05Z

PARTITION   PRIMARY    REPLICAS            EPOCH   IN-SYNC   LAG                      MOVING               MESSAGE
0           orders-0   orders-1,orders-2   2       2/2       3 entries / 12 ms        -
1           orders-1   orders-2,orders-3   5       1/2       1200 entries / 4500 ms   orders-3->orders-0
2           orders-2   orders-0,orders-3   1       2/2       -                        -
3           -          orders-0            7       0/1       -                        -                    no replica can be promoted safely: orders-0 is behind

TYPE          STATUS   REASON                 MESSAGE
Ready         False    PartitionUnavailable   partition 3 has no primary
Progressing   True     Rebalancing            moving partition 1
Degraded      True     NoPrimary              partition 3 has no primary
FailingOver   False    NoFailover             no failover in progress
Rebalancing   True     Moving                 1 partition moving
";
    assert_eq!(ran.stdout, expected, "stderr: {}", ran.stderr);
    assert_eq!(ran.stderr, "");
    assert!(
        fx.api.take_writes().is_empty(),
        "status must only read the set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_as_json_is_the_status_itself() {
    let fx = Fixture::start().await;
    insert_set(&fx.api, "shop", "orders", sample_status());

    let ran = fx
        .run(&["status", "orders", "-n", "shop", "-o", "json"])
        .await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let printed: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(printed, fx.stored("shop", "orders")["status"]);
    assert_eq!(printed["partitions"][1]["moving"]["to"], "orders-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_uses_kubeconfig_from_the_environment_and_its_namespace_and_says_when_there_is_no_status()
 {
    let fx = Fixture::start().await;
    insert_set(&fx.api, "shop", "fresh", Value::Null);
    let kubeconfig = FakeApi::kubeconfig_in_namespace(fx.addr, fx.dir.path(), "shop");

    let (mut cmd, stdout, stderr) = fx.command(&["status", "fresh"]);
    let child = cmd.env("KUBECONFIG", &kubeconfig).spawn().unwrap();
    let ran = Running {
        process: Process(child),
        stdout,
        stderr,
    }
    .finish()
    .await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout.starts_with(
            "fresh: no status yet: the operator has not reported on this set (is partita-operator running"
        ),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("Wanted: 4 nodes, 4 partitions, replicationFactor 3"),
        "{}",
        ran.stdout
    );

    let ran = fx
        .run(&["status", "fresh", "-n", "shop", "-o", "json"])
        .await;
    assert_eq!((ran.code, ran.stdout.as_str()), (Some(0), "null\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_set_is_exit_code_1_naming_the_set_and_namespace() {
    let fx = Fixture::start().await;
    insert_set(&fx.api, "shop", "orders", sample_status());

    // The kubeconfig's context namespace is `default`, where there is no `orders`.
    for args in [
        &["status", "orders"][..],
        &[
            "switchover",
            "orders",
            "--partition",
            "0",
            "--to",
            "orders-1",
        ],
        &["rebalance", "ghost", "-n", "shop"],
    ] {
        let ran = fx.run(args).await;
        assert_eq!(ran.code, Some(1), "{args:?}: {ran:?}");
        let ns = if args.contains(&"shop") {
            "shop"
        } else {
            "default"
        };
        let name = args[1];
        assert_eq!(
            ran.stderr,
            format!("error: replicatedpartitionset {name} not found in namespace {ns}\n"),
            "{args:?}"
        );
        assert_eq!(ran.stdout, "");
    }
    assert!(fx.api.take_writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_are_exit_code_2() {
    let fx = Fixture::start().await;
    for args in [
        &[
            "switchover",
            "orders",
            "--partition",
            "x",
            "--to",
            "orders-1",
        ][..],
        &["switchover", "orders", "--partition", "1"],
        &[
            "switchover",
            "orders",
            "--partition",
            "1",
            "--to",
            "a",
            "--timeout",
            "5s",
        ],
        &["rebalance", "orders", "--wait", "--timeout", "soon"],
        &["status"],
        &["status", "orders", "-o", "yaml"],
        &["frobnicate"],
    ] {
        let ran = fx.run(args).await;
        assert_eq!(ran.code, Some(2), "{args:?}: {ran:?}");
        assert!(!ran.stderr.is_empty(), "{args:?}");
    }
}

/// `switchover orders -n shop --partition <partition> --to <to>`, then `extra`.
fn switchover_in_shop<'a>(partition: &'a str, to: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "switchover",
        "orders",
        "-n",
        "shop",
        "--partition",
        partition,
        "--to",
        to,
    ];
    args.extend_from_slice(extra);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_to_a_pod_without_a_replica_or_a_missing_partition_is_refused() {
    let fx = Fixture::start().await;
    insert_set(&fx.api, "shop", "orders", sample_status());
    fx.api.take_calls();

    for (partition, to, refusal) in [
        (
            "1",
            "orders-0",
            "error: orders-0 holds no replica of partition 1; choose one of: orders-2, orders-3\n",
        ),
        (
            "1",
            "orders-1",
            "error: orders-1 is already the primary of partition 1; choose one of its replicas: orders-2, orders-3\n",
        ),
        (
            "4",
            "orders-1",
            "error: partition 4 does not exist: orders has 4 partitions (0 to 3)\n",
        ),
    ] {
        let ran = fx.run(&switchover_in_shop(partition, to, &[])).await;
        assert_eq!(ran.code, Some(1), "{ran:?}");
        assert_eq!(ran.stderr, refusal);
    }

    assert!(
        fx.api.take_writes().is_empty(),
        "a refused request writes nothing"
    );
    assert_eq!(
        fx.api
            .annotation::<ReplicatedPartitionSet>("shop", "orders", SWITCHOVER_ANNOTATION),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_to_a_replica_sets_the_annotation_with_a_merge_patch() {
    let fx = Fixture::start().await;
    insert_set(&fx.api, "shop", "orders", sample_status());
    let before = fx.stored("shop", "orders");
    fx.api.take_calls();

    let ran = fx.run(&switchover_in_shop("1", "orders-3", &[])).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let value = fx
        .api
        .annotation::<ReplicatedPartitionSet>("shop", "orders", SWITCHOVER_ANNOTATION)
        .unwrap();
    assert_eq!(parse_switchover(&value), Ok((1, "orders-3".to_string())));
    let (request, nonce) = value.split_once('@').unwrap();
    assert_eq!(request, "1=orders-3");
    assert!(nonce.parse::<u64>().is_ok(), "{value}");
    assert_eq!(
        ran.stdout,
        format!(
            "requested switchover of partition 1 of shop/orders to orders-3 (partita.dev/switchover={value})\n"
        )
    );

    let writes: Vec<_> = fx
        .api
        .take_calls()
        .into_iter()
        .filter(|c| c.is_write())
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        writes[0].summary(),
        "MERGEPATCH replicatedpartitionsets/orders"
    );
    assert_eq!(
        writes[0].body,
        Some(json!({"metadata": {"annotations": {SWITCHOVER_ANNOTATION: value}}}))
    );
    let after = fx.stored("shop", "orders");
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(after["status"], before["status"]);

    // The same request again is a new value, so the operator sees it as new.
    let again = fx.run(&switchover_in_shop("1", "orders-3", &[])).await;
    assert_eq!(again.code, Some(0), "{again:?}");
    let second = fx
        .api
        .annotation::<ReplicatedPartitionSet>("shop", "orders", SWITCHOVER_ANNOTATION)
        .unwrap();
    assert!(second.starts_with("1=orders-3@"), "{second}");
    assert_ne!(second, value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_with_wait_follows_the_status_until_done() {
    let fx = Fixture::start().await;
    insert_set(&fx.api, "shop", "orders", sample_status());

    let mut running = fx.spawn(&switchover_in_shop(
        "0",
        "orders-2",
        &["--wait", "--timeout", "30s"],
    ));
    let value = fx
        .annotation_set("shop", "orders", SWITCHOVER_ANNOTATION)
        .await;
    assert!(value.starts_with("0=orders-2@"), "{value}");

    // An older request's outcome is not this one's.
    fx.api
        .edit::<ReplicatedPartitionSet>("shop", "orders", |o| {
            o["status"]["switchover"] = json!({"request": "0=orders-2@1", "state": "Done"});
        });
    fx.reads_of("shop", "orders", 2).await;
    assert!(
        running.process.running(),
        "exited on another request's outcome"
    );

    // In progress.
    fx.api.edit::<ReplicatedPartitionSet>("shop", "orders", |o| {
        o["status"]["switchover"] =
            json!({"request": value, "state": "Pending", "message": "waiting for orders-2 to catch up"});
    });
    fx.reads_of("shop", "orders", 2).await;
    assert!(running.process.running(), "exited while Pending");

    fx.api.edit::<ReplicatedPartitionSet>("shop", "orders", |o| {
        o["status"]["switchover"] =
            json!({"request": value, "state": "Done", "message": "orders-2 is primary of partition 0 at epoch 3"});
    });
    let ran = running.finish().await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout.ends_with(&format!(
            "switchover {value} done: orders-2 is primary of partition 0 at epoch 3\n"
        )),
        "{}",
        ran.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_with_wait_fails_when_refused_or_out_of_time() {
    let fx = Fixture::start().await;
    insert_set(&fx.api, "shop", "orders", sample_status());

    let running = fx.spawn(&switchover_in_shop("2", "orders-3", &["--wait"]));
    let value = fx
        .annotation_set("shop", "orders", SWITCHOVER_ANNOTATION)
        .await;
    fx.api
        .edit::<ReplicatedPartitionSet>("shop", "orders", |o| {
            o["status"]["switchover"] =
                json!({"request": value, "state": "Refused", "message": "orders-3 is not in sync"});
        });
    let ran = running.finish().await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stderr,
        format!("error: the operator refused switchover {value}: orders-3 is not in sync\n")
    );

    // Nobody answers: the wait ends at its timeout.
    let started = std::time::Instant::now();
    let ran = fx
        .run(&[
            "switchover",
            "orders",
            "-n",
            "shop",
            "--partition",
            "2",
            "--to",
            "orders-0",
            "--wait",
            "--timeout",
            "1s",
        ])
        .await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        ran.stderr
            .starts_with("error: timed out after 1s waiting for switchover 2=orders-0@")
            && ran.stderr.contains("has not picked the request up yet"),
        "{}",
        ran.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_sets_the_annotation_to_the_current_time() {
    let fx = Fixture::start().await;
    insert_set(&fx.api, "shop", "orders", sample_status());
    let before = jiff::Timestamp::now();

    let ran = fx.run(&["rebalance", "orders", "-n", "shop"]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let value = fx
        .api
        .annotation::<ReplicatedPartitionSet>("shop", "orders", REBALANCE_ANNOTATION)
        .unwrap();
    let at: jiff::Timestamp = value.parse().unwrap();
    let after = jiff::Timestamp::now();
    assert!(
        at >= before
            .checked_sub(jiff::SignedDuration::from_millis(1))
            .unwrap()
            && at <= after,
        "{value} not between {before} and {after}"
    );
    assert_eq!(
        ran.stdout,
        format!("requested a rebalance of shop/orders (partita.dev/rebalance={value})\n")
    );
    assert_eq!(
        fx.api.take_writes().last().map(String::as_str),
        Some("MERGEPATCH replicatedpartitionsets/orders")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_with_wait_ends_when_handled_and_no_longer_rebalancing() {
    let fx = Fixture::start().await;
    insert_set(&fx.api, "shop", "orders", sample_status());

    let mut running = fx.spawn(&["rebalance", "orders", "-n", "shop", "--wait"]);
    let value = fx
        .annotation_set("shop", "orders", REBALANCE_ANNOTATION)
        .await;

    // Handled, but partitions are still moving (the sample's Rebalancing is True).
    fx.api
        .edit::<ReplicatedPartitionSet>("shop", "orders", |o| {
            o["status"]["rebalanceHandled"] = json!(value);
        });
    fx.reads_of("shop", "orders", 2).await;
    assert!(running.process.running(), "exited while still rebalancing");

    fx.api
        .edit::<ReplicatedPartitionSet>("shop", "orders", |o| {
            o["status"]["conditions"][4] = condition(
                "Rebalancing",
                "False",
                "Balanced",
                "no partition moves in progress",
            );
        });
    let ran = running.finish().await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(
        ran.stdout,
        format!(
            "requested a rebalance of shop/orders (partita.dev/rebalance={value})\nrebalance done: no partition moves in progress\n"
        )
    );

    // Out of time while the operator never echoes the request.
    let ran = fx
        .run(&[
            "rebalance",
            "orders",
            "-n",
            "shop",
            "--wait",
            "--timeout",
            "500ms",
        ])
        .await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr
            .starts_with("error: timed out after 500ms waiting for rebalance "),
        "{}",
        ran.stderr
    );
}
