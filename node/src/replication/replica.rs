//! The replica's side of replication: one task per followed partition that keeps a stream open
//! to the primary, carries out its answer to the hello (continue, truncate, or load a
//! snapshot), applies entries at exactly the next offset, and acknowledges them.
//!
//! Any broken rule (a gap, a checksum mismatch, an unexpected message) closes the stream, and
//! the task says hello again after a backoff: the primary's answer then repairs the copy,
//! never a silent skip. A primary that refuses the stream (an older or newer epoch, or not
//! primary at all) leaves the link `REFUSED` with the reason, and the task keeps retrying
//! slowly, since an admin call may fix the primary side at any time.

use super::ReplicationConfig;
use super::role::Upstream;
use crate::Error;
use crate::engine::Partition;
use crate::proto::replication_client::ReplicationClient;
use crate::proto::{
    self, Ack, ErrorCode, ErrorInfo, Hello, LinkState, NodeAddress, PrimaryMessage, ReplicaMessage,
    SyncKind, primary_message, replica_message,
};
use crate::storage::{Item, Position, SnapshotData, SnapshotMeta};
use bytes::Bytes;
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tonic::Streaming;
use tonic::transport::Channel;

/// A lazily connected channel to `addr`, which reconnects by itself. One is shared by every
/// partition that follows the same primary: its streams share one HTTP/2 connection.
pub fn channel(addr: &str) -> Result<Channel, Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::BadRole {
            partition: 0,
            reason: format!("bad primary address {addr:?}: {e}"),
        })?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

/// Why a session ended.
enum End {
    /// The primary refused the stream; retry slowly.
    Refused(String),
    /// The link failed or broke a rule; retry with backoff.
    Broken(String),
    /// The node is shutting down, or the role changed.
    Stop,
}

impl From<Error> for End {
    fn from(e: Error) -> Self {
        End::Broken(e.to_string())
    }
}

fn from_status(s: &tonic::Status) -> End {
    let info = ErrorInfo::decode(s.details()).unwrap_or_default();
    match ErrorCode::try_from(info.code) {
        Ok(
            ErrorCode::NotPrimary
            | ErrorCode::StaleEpoch
            | ErrorCode::Fenced
            | ErrorCode::UnknownPartition,
        ) => End::Refused(s.message().to_string()),
        _ if s.code() == tonic::Code::PermissionDenied => End::Refused(s.message().to_string()),
        _ => End::Broken(format!("{}: {}", s.code(), s.message())),
    }
}

/// Follows `primary` for partition `p` at `epoch` until the role changes or the node stops.
///
/// The task is aborted when the role changes, but an abort only lands at the task's next
/// await: every step that changes the copy or speaks for it (applying entries, truncating,
/// loading a snapshot, acknowledging) checks the role under the partition's lock instead, so
/// a stream the copy left can neither change its new history nor acknowledge anything to its
/// old primary.
pub async fn run(
    p: Arc<Partition>,
    cfg: ReplicationConfig,
    channel: Channel,
    epoch: u64,
    primary: NodeAddress,
    mut shutdown: watch::Receiver<bool>,
) {
    let up = Upstream { epoch, primary };
    let primary = &up.primary;
    let min_backoff = Duration::from_millis(50);
    let max_backoff = Duration::from_secs(2);
    let mut backoff = min_backoff;
    loop {
        if *shutdown.borrow() || !p.role().follows(&up) {
            return;
        }
        let started = Instant::now();
        let end = tokio::select! {
            end = stream(&p, &cfg, channel.clone(), &up) => {
                end.err().unwrap_or(End::Stop)
            }
            _ = shutdown.wait_for(|&down| down) => End::Stop,
        };
        let wait = match end {
            End::Stop => return,
            End::Refused(why) => {
                tracing::info!(partition = p.id(), primary = %primary.grpc_addr, "refused: {why}");
                let mut link = p.link();
                link.state = LinkState::Refused;
                link.error = why;
                Duration::from_millis(500)
            }
            End::Broken(why) => {
                tracing::info!(partition = p.id(), primary = %primary.grpc_addr, "link down: {why}");
                let mut link = p.link();
                link.state = LinkState::Connecting;
                link.error = why;
                if started.elapsed() > Duration::from_secs(5) {
                    backoff = min_backoff;
                }
                let w = backoff;
                backoff = (backoff * 2).min(max_backoff);
                w
            }
        };
        // Jitter, so replicas of many partitions do not reconnect in lockstep.
        let jitter = Duration::from_millis(u64::from(p.id() % 7) * 7);
        tokio::select! {
            _ = tokio::time::sleep(wait + jitter) => {}
            _ = shutdown.wait_for(|&down| down) => return,
        }
    }
}

async fn next(inbound: &mut Streaming<PrimaryMessage>) -> Result<primary_message::Msg, End> {
    match inbound.message().await {
        Ok(Some(PrimaryMessage { msg: Some(m) })) => Ok(m),
        Ok(Some(PrimaryMessage { msg: None })) => Err(End::Broken("an empty message".into())),
        Ok(None) => Err(End::Broken("the primary closed the stream".into())),
        Err(s) => Err(from_status(&s)),
    }
}

/// Acknowledges what the copy holds, while it still follows `up`; once it does not, the
/// stream ends without a word: its offsets may now be another primary's entries.
async fn ack(p: &Partition, up: &Upstream, tx: &mpsc::Sender<ReplicaMessage>) -> Result<(), End> {
    let Some((applied, durable)) = p.follower_progress(up) else {
        return Err(End::Stop);
    };
    let msg = ReplicaMessage {
        msg: Some(replica_message::Msg::Ack(Ack {
            applied_offset: applied,
            durable_offset: durable,
        })),
    };
    tx.send(msg)
        .await
        .map_err(|_| End::Broken("the stream to the primary closed".into()))
}

async fn stream(
    p: &Arc<Partition>,
    cfg: &ReplicationConfig,
    channel: Channel,
    up: &Upstream,
) -> Result<(), End> {
    let epoch = up.epoch;
    let max = super::max_message_bytes(cfg);
    let mut client = ReplicationClient::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let (tx, rx) = mpsc::channel(16);
    let (last, history) = p.read(|s| (s.last(), s.epoch_history().to_vec()));
    let hello = Hello {
        partition: p.id(),
        epoch,
        node_id: cfg.node.node_id.clone(),
        last: Some(last.proto()),
        epoch_history: crate::storage::epoch_history_proto(&history),
    };
    tx.send(ReplicaMessage {
        msg: Some(replica_message::Msg::Hello(hello)),
    })
    .await
    .map_err(|_| End::Broken("the stream closed before the hello".into()))?;
    let mut inbound = client
        .replicate(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| from_status(&s))?
        .into_inner();
    let broken = |why: String| End::Broken(why);
    match next(&mut inbound).await? {
        primary_message::Msg::ContinueFrom(c) => {
            if c.epoch != epoch || c.offset != last.offset {
                return Err(broken(format!(
                    "continue from {}@{} does not match our {}@{}",
                    c.offset, c.epoch, last.offset, epoch
                )));
            }
            let mut link = p.link();
            link.last_sync = SyncKind::Partial;
            link.partial_syncs += 1;
        }
        primary_message::Msg::TruncateTo(t) => {
            if t.epoch != epoch {
                return Err(broken(format!("truncate at epoch {}", t.epoch)));
            }
            let (p2, up2) = (Arc::clone(p), up.clone());
            let truncated = tokio::task::spawn_blocking(move || p2.truncate_to(&up2, t.offset))
                .await
                .map_err(|e| broken(format!("truncating: {e}")))?;
            if let Err(e) = truncated {
                // The copy cannot rebuild that point (a snapshot covers more, or the log was
                // trimmed): start over empty, and the next hello gets a full sync.
                tracing::warn!(
                    partition = p.id(),
                    "cannot truncate to {}: {e}; resyncing from empty",
                    t.offset
                );
                let (p2, up2) = (Arc::clone(p), up.clone());
                tokio::task::spawn_blocking(move || {
                    p2.install_snapshot(Some(&up2), SnapshotData::default())
                })
                .await
                .map_err(|e| broken(format!("resetting: {e}")))??;
                return Err(broken(format!("could not truncate to {}: {e}", t.offset)));
            }
            tracing::info!(
                partition = p.id(),
                offset = t.offset,
                "truncated a divergent tail"
            );
            let mut link = p.link();
            link.last_sync = SyncKind::Truncate;
            link.partial_syncs += 1;
        }
        primary_message::Msg::SnapshotBegin(begin) => {
            p.link().state = LinkState::Snapshot;
            let started = Instant::now();
            let snapshot = receive_snapshot(p.id(), cfg, epoch, begin, &mut inbound).await?;
            let keys = snapshot.items.len();
            let (p2, up2) = (Arc::clone(p), up.clone());
            tokio::task::spawn_blocking(move || p2.install_snapshot(Some(&up2), snapshot))
                .await
                .map_err(|e| broken(format!("installing the snapshot: {e}")))??;
            tracing::info!(
                partition = p.id(),
                keys,
                ms = started.elapsed().as_millis() as u64,
                "loaded a full snapshot"
            );
            let mut link = p.link();
            link.last_sync = SyncKind::Full;
            link.full_syncs += 1;
        }
        other => return Err(broken(format!("unexpected first message {other:?}"))),
    }
    {
        let mut link = p.link();
        link.state = LinkState::Streaming;
        link.error.clear();
    }
    ack(p, up, &tx).await?;
    loop {
        let mut applied = follow(p, up, epoch, next(&mut inbound).await?)?;
        // Apply what else has already arrived, then acknowledge it all at once: under load one
        // acknowledgement covers several messages (less work on both sides), and when idle
        // nothing waits, since only messages that are already here are taken.
        for _ in 1..MAX_MESSAGES_PER_ACK {
            let ready = tokio::select! {
                biased;
                m = next(&mut inbound) => Some(m?),
                () = std::future::ready(()) => None,
            };
            let Some(m) = ready else { break };
            applied = follow(p, up, epoch, m)?.max(applied);
        }
        if let Some(last) = applied {
            // Under fsync=always a replica's copy is on disk before it counts as one.
            p.wait_durable(last).await?;
            let mut link = p.link();
            link.lag_entries = link.primary_end.saturating_sub(last);
            if link.lag_entries == 0 {
                link.lag_ms = 0;
            }
        }
        ack(p, up, &tx).await?;
    }
}

/// Most messages applied before one acknowledgement goes out.
const MAX_MESSAGES_PER_ACK: usize = 64;

/// Carries out one message of a streaming session: applies entries (returning the offset of
/// the last one, if any) or takes in a heartbeat.
fn follow(
    p: &Partition,
    up: &Upstream,
    epoch: u64,
    msg: primary_message::Msg,
) -> Result<Option<u64>, End> {
    let broken = End::Broken;
    match msg {
        primary_message::Msg::Entries(batch) => {
            if !p.role().follows(up) {
                return Err(End::Stop);
            }
            if batch.entries.is_empty() {
                return Ok(None);
            }
            Ok(Some(p.apply_replicated(up, batch.entries)?))
        }
        primary_message::Msg::Heartbeat(h) => {
            if h.epoch != epoch {
                return Err(broken(format!("heartbeat at epoch {}", h.epoch)));
            }
            let end = h.end.unwrap_or_default().offset;
            let mut link = p.link();
            link.primary_end = end;
            link.commit_offset = h.commit_offset;
            link.lag_entries = end.saturating_sub(p.last().offset);
            link.lag_ms = h.replica_lag_ms;
            Ok(None)
        }
        other => Err(broken(format!("unexpected message {other:?}"))),
    }
}

async fn receive_snapshot(
    partition: u32,
    cfg: &ReplicationConfig,
    epoch: u64,
    begin: proto::SnapshotBegin,
    inbound: &mut Streaming<PrimaryMessage>,
) -> Result<SnapshotData, End> {
    let broken = |why: String| End::Broken(format!("snapshot: {why}"));
    if begin.epoch != epoch {
        return Err(broken(format!("sent at epoch {}", begin.epoch)));
    }
    if begin.total_bytes > cfg.max_snapshot_bytes {
        return Err(End::Refused(format!(
            "partition {partition}: a snapshot of {} bytes exceeds --max-snapshot-bytes {}",
            begin.total_bytes, cfg.max_snapshot_bytes
        )));
    }
    let at = begin.at.unwrap_or_default();
    let mut items = Vec::with_capacity(begin.total_keys.min(1 << 24) as usize);
    let (mut crc, mut bytes) = (0u32, 0u64);
    for index in 0..begin.total_chunks {
        let chunk = match next(inbound).await? {
            primary_message::Msg::SnapshotChunk(c) => c,
            other => return Err(broken(format!("expected chunk {index}, got {other:?}"))),
        };
        if chunk.index != index {
            return Err(broken(format!(
                "chunk {} arrived where {index} was due",
                chunk.index
            )));
        }
        if crc32c::crc32c(&chunk.data) != chunk.crc32c {
            return Err(broken(format!("chunk {index} failed its checksum")));
        }
        crc = crc32c::crc32c_append(crc, &chunk.data);
        bytes += chunk.data.len() as u64;
        if bytes > begin.total_bytes {
            return Err(broken("more data than announced".into()));
        }
        let mut data = Bytes::from(chunk.data);
        while !data.is_empty() {
            let kv = proto::KeyValue::decode_length_delimited(&mut data)
                .map_err(|e| broken(format!("chunk {index}: {e}")))?;
            items.push((
                Bytes::from(kv.key),
                Item {
                    value: Bytes::from(kv.value),
                    expire_at_ms: kv.expire_at_ms,
                },
            ));
        }
    }
    if crc != begin.crc32c || bytes != begin.total_bytes || items.len() as u64 != begin.total_keys {
        return Err(broken(format!(
            "{} keys, {bytes} bytes, crc {crc:08x}; announced {} keys, {} bytes, crc {:08x}",
            items.len(),
            begin.total_keys,
            begin.total_bytes,
            begin.crc32c
        )));
    }
    Ok(SnapshotData {
        meta: SnapshotMeta {
            at: Position::new(at.epoch, at.offset),
            epoch_history: begin
                .epoch_history
                .iter()
                .map(|e| (e.epoch, e.start_offset))
                .collect(),
        },
        items,
    })
}
