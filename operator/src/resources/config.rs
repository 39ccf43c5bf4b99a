//! The node configuration, as the environment variables `partita-node` reads. It lives in a
//! ConfigMap that the pods load with `envFrom`, so `kubectl get cm <set>-config -o yaml` shows
//! exactly how the nodes were started. Per-pod values (the node id and advertised address) come
//! from the downward API in the StatefulSet instead.

use super::{Names, Owner, ports};
use crate::validate::Valid;
use k8s_openapi::api::core::v1::ConfigMap;
use partita_api::{ReplicatedPartitionSetSpec, WriteConcern};
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;

/// The key holding the partition count, read back to refuse a changed count.
pub(crate) const PARTITIONS_KEY: &str = "PARTITA_PARTITIONS";
/// Where the node's volume is mounted.
pub const DATA_DIR: &str = "/data";

/// The node configuration for `spec`.
pub fn node_config(spec: &ReplicatedPartitionSetSpec, valid: &Valid) -> BTreeMap<String, String> {
    let concern = match spec.write_concern {
        WriteConcern::One => "one",
        WriteConcern::Quorum => "quorum",
        WriteConcern::All => "all",
    };
    let heartbeat_ms = valid.heartbeat.as_millis().max(10);
    [
        (PARTITIONS_KEY, spec.partitions.to_string()),
        ("PARTITA_DATA_DIR", DATA_DIR.to_string()),
        ("PARTITA_GRPC_LISTEN", format!("0.0.0.0:{}", ports::GRPC)),
        ("PARTITA_RESP_LISTEN", format!("0.0.0.0:{}", ports::RESP)),
        ("PARTITA_HTTP_LISTEN", format!("0.0.0.0:{}", ports::HTTP)),
        ("PARTITA_FSYNC", "everysec".to_string()),
        ("PARTITA_WRITE_CONCERN", concern.to_string()),
        (
            "PARTITA_BACKLOG_BYTES",
            spec.replication.backlog_bytes.to_string(),
        ),
        ("PARTITA_HEARTBEAT_MS", heartbeat_ms.to_string()),
        ("PARTITA_SHUTDOWN_TIMEOUT", "20".to_string()),
        ("PARTITA_LOG_FORMAT", "json".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A short stable hash of the configuration, put on the pod template.
pub fn config_hash(config: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha1::new();
    for (k, v) in config {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(v.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The ConfigMap holding `config`.
pub fn config_map(owner: &Owner, names: &Names, config: &BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: owner.meta(&names.config_map),
        data: Some(config.clone()),
        ..ConfigMap::default()
    }
}
