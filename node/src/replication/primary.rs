//! The primary's side of replication: the Replication gRPC service. A replica opens one stream
//! per partition and says hello; [`resume::decide`] picks the answer; this module only carries
//! it out and then streams entries from the log, with heartbeats when idle.
//!
//! Memory stays bounded however slow a replica is: messages wait for room in a per-replica byte
//! budget (the send buffer) before they are queued, and entries are read from the log, never
//! kept for a replica. A replica so slow that the log drops the entries it still needs is cut
//! off; when it comes back, its hello gets a snapshot.

use super::ReplicationConfig;
use super::resume::{self, HelloView, PrimaryView, Resume};
use super::role::Role;
use crate::Error;
use crate::engine::{Engine, Partition, now_ms};
use crate::proto::replication_server::{Replication, ReplicationServer};
use crate::proto::{
    ContinueFrom, EntryBatch, ErrorCode, ErrorInfo, Heartbeat, PrimaryMessage, ReplicaMessage,
    SnapshotBegin, SnapshotChunk, SyncKind, TruncateTo, primary_message, replica_message,
};
use crate::server::grpc::{error, status_of};
use crate::storage::{Position, SnapshotData};
use bytes::{BufMut, BytesMut};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The Replication service.
#[derive(Clone)]
pub struct Service {
    engine: Arc<Engine>,
    cfg: ReplicationConfig,
    shutdown: watch::Receiver<bool>,
}

impl Service {
    /// The service for `engine`. Its streams end when `shutdown` turns true, so a graceful
    /// shutdown does not wait for replicas to go away.
    pub fn new(
        engine: Arc<Engine>,
        cfg: ReplicationConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            engine,
            cfg,
            shutdown,
        }
    }

    /// The tonic server, with message limits applied.
    pub fn server(&self) -> ReplicationServer<Self> {
        let max = super::max_message_bytes(&self.cfg);
        ReplicationServer::new(self.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }
}

type Outbound = Pin<Box<dyn Stream<Item = Result<PrimaryMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for Service {
    type ReplicateStream = Outbound;

    async fn replicate(
        &self,
        req: Request<Streaming<ReplicaMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        let mut inbound = req.into_inner();
        let hello = match inbound.message().await? {
            Some(ReplicaMessage {
                msg: Some(replica_message::Msg::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "a replication stream starts with a hello",
                ));
            }
        };
        let p = self
            .engine
            .partitions()
            .get(hello.partition as usize)
            .cloned()
            .ok_or_else(|| {
                error(
                    tonic::Code::NotFound,
                    format!("partition {} does not exist", hello.partition),
                    ErrorInfo {
                        code: ErrorCode::UnknownPartition as i32,
                        partition: hello.partition,
                        ..Default::default()
                    },
                )
            })?;
        let role = p.role();
        if let Some(refused) = role.refusal(p.id()) {
            return Err(status_of(&refused));
        }
        let Role::Primary(settings) = &role.role else {
            return Err(Status::internal("a primary without primary settings"));
        };
        if !settings.replicas.is_empty() && !settings.replicas.contains(&hello.node_id) {
            return Err(Status::permission_denied(format!(
                "{} is not a replica of partition {} (expected one of {})",
                hello.node_id,
                p.id(),
                settings.replicas.join(", ")
            )));
        }
        let replica_history: Vec<(u64, u64)> = hello
            .epoch_history
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect();
        let replica_last = hello.last.unwrap_or_default();
        let (last, history) = p.read(|s| (s.last(), s.epoch_history().to_vec()));
        let decision = resume::decide(
            &PrimaryView {
                epoch: role.epoch,
                last,
                log_start: p.store().first_offset(),
                history: &history,
            },
            &HelloView {
                epoch: hello.epoch,
                last: Position::new(replica_last.epoch, replica_last.offset),
                history: &replica_history,
            },
        );
        let (sync, from) = match decision {
            Resume::StepDown { epoch } => {
                p.step_down(epoch);
                return Err(status_of(&Error::Fenced {
                    partition: p.id(),
                    epoch,
                }));
            }
            Resume::StaleReplica => {
                return Err(status_of(&Error::StaleEpoch {
                    partition: p.id(),
                    got: hello.epoch,
                    held: role.epoch,
                }));
            }
            Resume::Continue { offset } => (SyncKind::Partial, offset),
            Resume::TruncateTo { offset } => (SyncKind::Truncate, offset),
            Resume::Snapshot => (SyncKind::Full, 0),
        };
        tracing::info!(
            partition = p.id(),
            replica = %hello.node_id,
            ?decision,
            "replica attached"
        );
        let session = p.tracker().attach(&hello.node_id, sync, from);
        crate::metrics::replica_sync(sync);

        let budget = self
            .cfg
            .send_buffer_bytes
            .min(Semaphore::MAX_PERMITS as u64) as usize;
        let buffer = Arc::new(Semaphore::new(budget));
        let (tx, rx) = mpsc::channel::<(Result<PrimaryMessage, Status>, usize)>(4096);
        let link = Link {
            p: Arc::clone(&p),
            cfg: self.cfg.clone(),
            epoch: role.epoch,
            node_id: hello.node_id.clone(),
            session,
            buffer: Arc::clone(&buffer),
            budget,
            tx,
        };
        let mut down = self.shutdown.clone();
        tokio::spawn(async move {
            let tx = link.tx.clone();
            let result = tokio::select! {
                r = link.run(decision) => r,
                _ = down.wait_for(|&d| d) => Err(Error::Replication {
                    partition: link.p.id(),
                    reason: "the primary is shutting down".into(),
                }),
            };
            if let Err(e) = result {
                tracing::info!(partition = link.p.id(), replica = %link.node_id, "stream closed: {e}");
                // Best effort: when the queue is full the stream just ends, and the replica
                // says hello again either way.
                let _ = tx.try_send((Err(status_of(&e)), 0));
                // Status shows the replica gone at once, even if it cannot read the error (a
                // frozen process) and so never closes its side.
                link.p.tracker().detach(&link.node_id, link.session);
            }
        });
        let acks = Arc::clone(&p);
        let node_id = hello.node_id.clone();
        let mut down = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = down.wait_for(|&d| d) => break,
                };
                match msg {
                    Ok(Some(ReplicaMessage {
                        msg: Some(replica_message::Msg::Ack(a)),
                    })) => acks.on_ack(&node_id, session, a.applied_offset, a.durable_offset),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            acks.tracker().detach(&node_id, session);
        });
        let (status, budget_total) = (Arc::clone(&p), budget);
        let replica = hello.node_id.clone();
        let out = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |(msg, n)| {
            buffer.add_permits(n);
            let queued = budget_total.saturating_sub(buffer.available_permits()) as u64;
            status.tracker().set_buffer(&replica, session, queued);
            msg
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// One replica's stream, on the primary.
struct Link {
    p: Arc<Partition>,
    cfg: ReplicationConfig,
    epoch: u64,
    node_id: String,
    session: u64,
    buffer: Arc<Semaphore>,
    budget: usize,
    tx: mpsc::Sender<(Result<PrimaryMessage, Status>, usize)>,
}

impl Link {
    /// Queues a message once the send buffer has room for it.
    async fn send(&self, msg: primary_message::Msg, next: u64) -> Result<(), Error> {
        let msg = PrimaryMessage { msg: Some(msg) };
        let n = prost::Message::encoded_len(&msg).clamp(1, self.budget);
        self.until(next, || self.buffer.acquire_many(n as u32))
            .await?
            .map_err(|_| self.closed())?
            .forget();
        self.p.tracker().set_buffer(
            &self.node_id,
            self.session,
            (self.budget - self.buffer.available_permits()) as u64,
        );
        // The queue holds at most as many messages as the byte budget allows, but small
        // messages could still fill its slots: wait for one with the same checks.
        self.until(next, || self.tx.reserve())
            .await?
            .map_err(|_| self.closed())?
            .send((Ok(msg), n));
        Ok(())
    }

    /// Waits for the future `wait` makes. Every heartbeat interval meanwhile, it checks that the
    /// replica's next entry (`next`) is still in the log and that this node still streams it;
    /// once either fails, the replica is cut off.
    async fn until<F: std::future::Future>(
        &self,
        next: u64,
        mut wait: impl FnMut() -> F,
    ) -> Result<F::Output, Error> {
        loop {
            tokio::select! {
                out = wait() => return Ok(out),
                _ = tokio::time::sleep(self.cfg.heartbeat) => {
                    self.check_still_held(next)?;
                    self.draining()?;
                }
            }
        }
    }

    fn closed(&self) -> Error {
        Error::Replication {
            partition: self.p.id(),
            reason: format!("the stream to {} closed", self.node_id),
        }
    }

    fn check_still_held(&self, next: u64) -> Result<(), Error> {
        let first = self.p.store().first_offset();
        if next < first {
            tracing::warn!(
                partition = self.p.id(),
                replica = %self.node_id,
                next,
                first,
                "replica fell out of the backlog: cutting it off; it will resync with a snapshot"
            );
            return Err(Error::Trimmed {
                partition: self.p.id(),
                from: next,
                first,
            });
        }
        Ok(())
    }

    /// Whether the stream goes on: `false` while this node leads at the stream's epoch, `true`
    /// once it is fenced (a switchover: every entry it accepted still goes out, so the
    /// target can catch up before it is promoted), an error for any other role.
    fn draining(&self) -> Result<bool, Error> {
        match self.check_role() {
            Ok(()) => Ok(false),
            Err(Error::Fenced { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    fn check_role(&self) -> Result<(), Error> {
        if self.p.leads_at(self.epoch) {
            return Ok(());
        }
        let role = self.p.role();
        // A primary at another epoch leads a different history than this stream carries.
        Err(role.refusal(self.p.id()).unwrap_or(Error::NotPrimary {
            partition: self.p.id(),
            epoch: role.epoch,
            primary: None,
        }))
    }

    async fn run(&self, decision: Resume) -> Result<(), Error> {
        let epoch = self.epoch;
        let mut next = match decision {
            Resume::Continue { offset } => {
                self.send(
                    primary_message::Msg::ContinueFrom(ContinueFrom { epoch, offset }),
                    offset + 1,
                )
                .await?;
                offset + 1
            }
            Resume::TruncateTo { offset } => {
                self.send(
                    primary_message::Msg::TruncateTo(TruncateTo { epoch, offset }),
                    offset + 1,
                )
                .await?;
                offset + 1
            }
            _ => {
                let p = Arc::clone(&self.p);
                let snapshot = tokio::task::spawn_blocking(move || p.snapshot_for_replica())
                    .await
                    .map_err(|e| Error::Replication {
                        partition: self.p.id(),
                        reason: format!("taking a snapshot: {e}"),
                    })??;
                let at = snapshot.meta.at;
                self.send_snapshot(&snapshot).await?;
                at.offset + 1
            }
        };
        self.p.tracker().streaming(&self.node_id, self.session);
        let mut last_heartbeat = Instant::now();
        loop {
            let draining = self.draining()?;
            let notified = self.p.appended().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut entries = self.p.store().read(next, self.cfg.batch_bytes)?;
            if entries.is_empty() && draining {
                // Fenced: no write is accepted any more, and the flush hands the store every
                // entry accepted before the fence. Once those are sent, the stream ends.
                self.p.flush()?;
                entries = self.p.store().read(next, self.cfg.batch_bytes)?;
                if entries.is_empty() {
                    return self.check_role();
                }
            }
            if let Some(last) = entries.last() {
                next = last.offset + 1;
                let m = crate::metrics::get();
                m.replication_batches.inc();
                m.replication_entries.inc_by(entries.len() as u64);
                self.send(primary_message::Msg::Entries(EntryBatch { entries }), next)
                    .await?;
                if last_heartbeat.elapsed() >= self.cfg.heartbeat {
                    self.heartbeat().await?;
                    last_heartbeat = Instant::now();
                }
                continue;
            }
            tokio::select! {
                _ = &mut notified => {
                    // Let the writers that are ready run first: their entries then go out in
                    // one message instead of one message each. Costs nothing when idle.
                    tokio::task::yield_now().await;
                }
                _ = tokio::time::sleep(self.cfg.heartbeat) => {
                    self.heartbeat().await?;
                    last_heartbeat = Instant::now();
                }
                _ = self.tx.closed() => return Err(self.closed()),
            }
        }
    }

    async fn heartbeat(&self) -> Result<(), Error> {
        let now = now_ms();
        let (lag_ms, commit) = {
            let t = self.p.tracker();
            let acked = t
                .replicas
                .iter()
                .find(|r| r.node_id == self.node_id)
                .map_or(0, |r| r.acked);
            (t.lag_ms(acked, now), t.commit_offset())
        };
        let end = self.p.store().last();
        self.send(
            primary_message::Msg::Heartbeat(Heartbeat {
                epoch: self.epoch,
                end: Some(end.proto()),
                commit_offset: commit,
                sent_at_ms: now,
                replica_lag_ms: lag_ms,
            }),
            end.offset + 1,
        )
        .await
    }

    /// Sends a snapshot in checksummed chunks. The chunks are encoded twice, once to learn
    /// their count, size and checksum for the header and once to send them, so the snapshot
    /// is never held encoded in memory as a whole.
    async fn send_snapshot(&self, snapshot: &SnapshotData) -> Result<(), Error> {
        let at = snapshot.meta.at;
        let chunk_bytes = self.cfg.batch_bytes.max(4096);
        let (mut chunks, mut total_bytes, mut crc) = (0u32, 0u64, 0u32);
        let mut counting = Chunks::new(snapshot, chunk_bytes);
        while let Some(data) = counting.next_chunk() {
            chunks += 1;
            total_bytes += data.len() as u64;
            crc = crc32c::crc32c_append(crc, data);
        }
        self.send(
            primary_message::Msg::SnapshotBegin(SnapshotBegin {
                epoch: self.epoch,
                at: Some(at.proto()),
                epoch_history: crate::storage::epoch_history_proto(&snapshot.meta.epoch_history),
                total_keys: snapshot.items.len() as u64,
                total_bytes,
                total_chunks: chunks,
                crc32c: crc,
            }),
            at.offset + 1,
        )
        .await?;
        let mut sending = Chunks::new(snapshot, chunk_bytes);
        let mut index = 0u32;
        while let Some(data) = sending.next_chunk() {
            let data = data.to_vec();
            self.send_chunk(index, data, at.offset + 1).await?;
            index += 1;
        }
        Ok(())
    }

    async fn send_chunk(&self, index: u32, data: Vec<u8>, next: u64) -> Result<(), Error> {
        let crc32c = crc32c::crc32c(&data);
        self.send(
            primary_message::Msg::SnapshotChunk(SnapshotChunk {
                index,
                data,
                crc32c,
            }),
            next,
        )
        .await
    }
}

/// Encodes one key as a length-delimited KeyValue message, without copying it first.
fn encode_record(buf: &mut BytesMut, key: &[u8], value: &[u8], expire_at_ms: i64) {
    use prost::encoding::{encode_varint, encoded_len_varint};
    let field = |len: usize| 1 + encoded_len_varint(len as u64) + len;
    let expire = (expire_at_ms != 0).then_some(expire_at_ms as u64);
    let body =
        field(key.len()) + field(value.len()) + expire.map_or(0, |e| 1 + encoded_len_varint(e));
    encode_varint(body as u64, buf);
    buf.put_u8(0x0a);
    encode_varint(key.len() as u64, buf);
    buf.put_slice(key);
    buf.put_u8(0x12);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
    if let Some(e) = expire {
        buf.put_u8(0x18);
        encode_varint(e, buf);
    }
}

/// A snapshot's records, encoded chunk by chunk into one reused buffer: every chunk is at least
/// `chunk_bytes` long except the last, and the same snapshot always gives the same chunks.
struct Chunks<'a> {
    items: std::slice::Iter<'a, (bytes::Bytes, crate::storage::Item)>,
    buf: BytesMut,
    chunk_bytes: usize,
}

impl<'a> Chunks<'a> {
    fn new(snapshot: &'a SnapshotData, chunk_bytes: usize) -> Self {
        Self {
            items: snapshot.items.iter(),
            buf: BytesMut::with_capacity(chunk_bytes + 1024),
            chunk_bytes,
        }
    }

    /// The next chunk, or `None` once every record was returned.
    fn next_chunk(&mut self) -> Option<&[u8]> {
        self.buf.clear();
        for (key, item) in self.items.by_ref() {
            encode_record(&mut self.buf, key, &item.value, item.expire_at_ms);
            if self.buf.len() >= self.chunk_bytes {
                break;
            }
        }
        (!self.buf.is_empty()).then_some(&self.buf[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn records_decode_as_key_values() {
        let mut buf = BytesMut::new();
        encode_record(&mut buf, b"k", b"value", 0);
        encode_record(&mut buf, b"", b"", 1_700_000_000_000);
        let mut data = buf.freeze();
        let a = crate::proto::KeyValue::decode_length_delimited(&mut data).unwrap();
        let b = crate::proto::KeyValue::decode_length_delimited(&mut data).unwrap();
        assert_eq!(
            (a.key.as_slice(), a.value.as_slice(), a.expire_at_ms),
            (&b"k"[..], &b"value"[..], 0)
        );
        assert_eq!(b.expire_at_ms, 1_700_000_000_000);
        assert!(data.is_empty());
    }
}
