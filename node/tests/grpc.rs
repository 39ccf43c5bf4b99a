//! The gRPC KV and Admin services of a real node, and the `partita` CLI on top of them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

mod common;

use common::start;
use partita_node::proto::admin_client::AdminClient;
use partita_node::proto::kv_client::KvClient;
use partita_node::proto::*;
use prost::Message;
use std::process::Command;

async fn clients(
    node: &common::Node,
) -> (
    KvClient<tonic::transport::Channel>,
    AdminClient<tonic::transport::Channel>,
) {
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", node.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (KvClient::new(ch.clone()), AdminClient::new(ch))
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn kv_and_admin_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        &dir.path().join("data"),
        &["--partitions", "4", "--max-key-bytes", "32"],
    );
    let (mut kv, mut admin) = clients(&node).await;

    let r = kv.put(put("alpha", "1")).await.unwrap().into_inner();
    assert!(r.applied);
    let ack = r.ack.unwrap();
    assert_eq!((ack.acked_copies, ack.required_copies), (1, 1));
    assert!(ack.offset >= 1 && ack.epoch >= 1);
    let got = kv
        .get(GetRequest {
            key: "alpha".into(),
            read: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert_eq!(got.value, b"1");
    assert_eq!(got.ttl_ms, -1);
    assert_eq!(got.info.unwrap().partition, ack.partition);

    let nx = kv
        .put(PutRequest {
            condition: PutCondition::IfAbsent as i32,
            ..put("alpha", "2")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !nx.applied && nx.ack.is_none(),
        "NX on an existing key writes nothing"
    );
    let ttl = kv
        .put(PutRequest {
            ttl_ms: 60_000,
            ..put("beta", "b")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ttl.applied);
    let got = kv
        .get(GetRequest {
            key: "beta".into(),
            read: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!((59_000..=60_000).contains(&got.ttl_ms), "{}", got.ttl_ms);

    // Scan pages through a partition in key order.
    for i in 0..30 {
        kv.put(put(&format!("{{tag}}:{i:02}"), "v")).await.unwrap();
    }
    let partition = node_partition(&mut kv, "{tag}:00").await;
    let mut seen = Vec::new();
    let mut start = Vec::new();
    loop {
        let page = kv
            .scan(ScanRequest {
                partition,
                start_key: start.clone(),
                r#match: b"{tag}:*".to_vec(),
                limit: 7,
                keys_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 7);
        seen.extend(
            page.entries
                .into_iter()
                .map(|e| String::from_utf8(e.key).unwrap()),
        );
        if page.next_start_key.is_empty() {
            break;
        }
        start = page.next_start_key;
    }
    let want: Vec<String> = (0..30).map(|i| format!("{{tag}}:{i:02}")).collect();
    assert_eq!(seen, want);

    // A batch on one partition applies atomically; across partitions it is refused.
    let op = |o| BatchOp { op: Some(o) };
    let batch = kv
        .batch(BatchRequest {
            ops: vec![
                op(batch_op::Op::Put(put("{tag}:x", "1"))),
                op(batch_op::Op::Get(GetRequest {
                    key: "{tag}:x".into(),
                    read: None,
                })),
                op(batch_op::Op::Delete(DeleteRequest {
                    key: "{tag}:00".into(),
                    write: None,
                })),
            ],
            write: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.results.len(), 3);
    assert!(batch.ack.is_some());
    let cross = kv
        .batch(BatchRequest {
            ops: (0..20)
                .map(|i| op(batch_op::Op::Put(put(&format!("spread-{i}"), "v"))))
                .collect(),
            write: None,
        })
        .await
        .unwrap_err();
    assert_eq!(cross.code(), tonic::Code::InvalidArgument);
    let info = ErrorInfo::decode(cross.details()).unwrap();
    assert_eq!(info.code, ErrorCode::CrossPartition as i32);

    // A reversed range is an empty page, not a crash.
    let reversed = kv
        .scan(ScanRequest {
            partition,
            start_key: b"{tag}:20".to_vec(),
            end_key: b"{tag}:10".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reversed.entries.is_empty() && reversed.next_start_key.is_empty());

    let too_long = kv.put(put(&"k".repeat(33), "v")).await.unwrap_err();
    let info = ErrorInfo::decode(too_long.details()).unwrap();
    assert_eq!(info.code, ErrorCode::LimitExceeded as i32);
    assert_eq!(info.limit, "max-key-bytes=32");

    let status = admin
        .status(StatusRequest { partitions: None })
        .await
        .unwrap()
        .into_inner();
    assert!(status.ready && status.standalone);
    assert_eq!(status.partitions.len(), 4);
    let keys: u64 = status.partitions.iter().map(|p| p.keys).sum();
    assert_eq!(keys, 2 + 30 + 1 - 1);
    assert!(
        status
            .partitions
            .iter()
            .all(|p| p.role == Role::Primary as i32)
    );
    let digest = admin
        .digest(DigestRequest { partitions: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(digest.digest.len(), 40);
    let mut c = node.client();
    assert_eq!(
        c.cmd(&["DEBUG", "DIGEST"]).text(),
        digest.digest,
        "RESP and gRPC agree"
    );

    let missing = admin
        .status(StatusRequest {
            partitions: Some(PartitionSelector {
                all: false,
                ids: vec![9],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

async fn node_partition(kv: &mut KvClient<tonic::transport::Channel>, key: &str) -> u32 {
    kv.get(GetRequest {
        key: key.into(),
        read: None,
    })
    .await
    .unwrap()
    .into_inner()
    .info
    .unwrap()
    .partition
}

#[test]
fn the_partita_cli_reads_writes_and_shows_status() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("data"), &["--partitions", "2"]);
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_partita"))
            .arg("--addr")
            .arg(node.grpc.to_string())
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["put", "city", "Lisbon"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK partition="));
    let out = cli(&["get", "city"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Lisbon\n");
    let out = cli(&["put", "city", "Porto", "--if-absent"]);
    assert_eq!(out.status.code(), Some(1), "a condition that fails exits 1");
    let out = cli(&["scan", "--values"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "city\tLisbon\n");
    let out = cli(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(json["partitions"][0]["role"], "primary");
    let out = cli(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("PARTITION"));
    let out = cli(&["del", "city"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "deleted\n");
    let out = cli(&["get", "city"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "(not found)\n");
    let out = Command::new(env!("CARGO_BIN_EXE_partita"))
        .args(["--addr", "127.0.0.1:1", "get", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach 127.0.0.1:1"));
}

#[tokio::test]
async fn grpc_connections_past_the_limit_are_refused_and_the_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("data"), &["--max-connections", "1"]);
    let (mut kv, _) = clients(&node).await;
    kv.put(put("a", "1")).await.unwrap();
    let second = async {
        let ch = tonic::transport::Channel::from_shared(format!("http://{}", node.grpc))
            .unwrap()
            .connect()
            .await?;
        KvClient::new(ch)
            .get(GetRequest {
                key: "a".into(),
                read: None,
            })
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error>)?;
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    let refused = tokio::time::timeout(std::time::Duration::from_secs(20), second).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "a second connection is refused: {refused:?}"
    );
    assert!(
        kv.get(GetRequest {
            key: "a".into(),
            read: None
        })
        .await
        .is_ok()
    );
    common::wait_until(
        std::time::Duration::from_secs(10),
        "the refusal in the log",
        || node.stderr().contains("refusing a gRPC connection"),
    );
}
