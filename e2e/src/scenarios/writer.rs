//! A client's record of acknowledged writes: a few tasks write QUORUM puts through the
//! cluster-aware client while a scenario injects faults, and remember every write the cluster
//! acknowledged, when it was sent, and when it was acknowledged. What was acknowledged must
//! never be lost; when writes to a partition resumed is how long it was unavailable.

use crate::{Error, Result};
use partita_node::client::Client;
use partita_node::proto::{GetRequest, PutRequest, WriteConcern, WriteOptions};
use partita_node::slot::SlotMap;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Most writes one writer task makes, so a load loop is bounded in count as well as in time.
pub const MAX_WRITES_PER_TASK: u64 = 200_000;

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct Ack {
    /// The key.
    pub key: String,
    /// The value written.
    pub value: String,
    /// Its partition.
    pub partition: u32,
    /// When the write was sent.
    pub sent: Instant,
    /// When it was acknowledged.
    pub acked: Instant,
}

/// What the writers saw.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// Every acknowledged write.
    pub acks: Vec<Ack>,
    /// Writes that failed (not acknowledged; they may or may not have been applied).
    pub failures: u64,
    /// The last failure, for reports.
    pub last_error: Option<String>,
}

impl Record {
    /// When the first write sent after `t` to any of `partitions` was acknowledged.
    pub fn first_ack_after(&self, t: Instant, partitions: &[u32]) -> Option<Instant> {
        self.acks
            .iter()
            .filter(|a| a.sent >= t && partitions.contains(&a.partition))
            .map(|a| a.acked)
            .min()
    }

    /// Per partition, the longest time between two consecutive acknowledgements between
    /// `from` and `to`, counting from `from` and up to `to`: how long writes to it stalled.
    pub fn longest_stall(&self, from: Instant, to: Instant, partitions: u32) -> Duration {
        let mut by_partition: BTreeMap<u32, Vec<Instant>> =
            (0..partitions).map(|p| (p, vec![from, to])).collect();
        for a in self
            .acks
            .iter()
            .filter(|a| a.acked >= from && a.acked <= to)
        {
            by_partition.entry(a.partition).or_default().push(a.acked);
        }
        by_partition
            .into_values()
            .map(|mut times| {
                times.sort();
                times
                    .windows(2)
                    .map(|w| w[1] - w[0])
                    .max()
                    .unwrap_or_default()
            })
            .max()
            .unwrap_or_default()
    }
}

/// Writer tasks running against a set.
pub struct Writer {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    record: Arc<Mutex<Record>>,
}

/// A QUORUM put of `value` at `key`.
pub fn quorum_put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        write: Some(WriteOptions {
            concern: WriteConcern::Quorum as i32,
            timeout_ms: 2000,
        }),
        ..PutRequest::default()
    }
}

impl Writer {
    /// Starts `tasks` writers on `client`, writing keys `<prefix>:<task>:<n>` once each.
    pub fn start(client: Arc<Client>, tasks: usize, prefix: &str) -> Result<Self> {
        let slots = SlotMap::new(client.partitions())
            .map_err(|e| Error::Node(format!("the client has no partition map: {e}")))?;
        let (stop, stopped) = watch::channel(false);
        let record = Arc::new(Mutex::new(Record::default()));
        let tasks = (0..tasks)
            .map(|t| {
                let (client, record, stopped) = (client.clone(), record.clone(), stopped.clone());
                let (prefix, slots) = (prefix.to_string(), slots);
                tokio::spawn(async move {
                    for n in 0..MAX_WRITES_PER_TASK {
                        if *stopped.borrow() {
                            break;
                        }
                        let key = format!("{prefix}:{t}:{n}");
                        let value = format!("v{n}.{t}");
                        let sent = Instant::now();
                        let result = client.put(quorum_put(&key, &value)).await;
                        let acked = Instant::now();
                        let mut r = record.lock().unwrap_or_else(|e| e.into_inner());
                        match result {
                            Ok(_) => r.acks.push(Ack {
                                partition: slots.partition_of_key(key.as_bytes()),
                                key,
                                value,
                                sent,
                                acked,
                            }),
                            Err(e) => {
                                r.failures += 1;
                                r.last_error = Some(e.to_string());
                            }
                        }
                    }
                })
            })
            .collect();
        Ok(Self {
            stop,
            tasks,
            record,
        })
    }

    /// What the writers have seen so far.
    pub fn record(&self) -> Record {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the writers, waits for the writes in flight, and returns the record.
    pub async fn stop(mut self) -> Record {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.record()
    }
}

/// What became of a scenario's writes once they stopped.
#[derive(Clone, Debug)]
pub struct Settled {
    /// Every write the writers made.
    pub record: Record,
    /// Copies whose digests were compared (all equal).
    pub copies: usize,
}

impl Settled {
    /// Adds `lost_acked` (always 0: [`settle`] fails otherwise), `acked` and `copies`.
    pub fn report(&self, outcome: super::Outcome) -> super::Outcome {
        outcome
            .with("lost_acked", 0)
            .with("acked", self.record.acks.len())
            .with("copies", self.copies)
    }
}

/// Stops `writer`, then checks that every write it saw acknowledged is there as written and
/// that every copy of every partition agrees.
pub async fn settle(set: &super::set::Set, client: &Client, writer: Writer) -> Result<Settled> {
    let record = writer.stop().await;
    let lost = count_lost(client, &record).await?;
    super::ensure(lost == 0, || {
        format!(
            "{lost} of {} acknowledged writes were lost",
            record.acks.len()
        )
    })?;
    let copies = set.check_copies_agree().await?;
    Ok(Settled { record, copies })
}

/// Reads back every acknowledged write; returns how many are missing or not as written.
pub async fn count_lost(client: &Client, record: &Record) -> Result<usize> {
    let mut lost = 0;
    for a in &record.acks {
        let got = client
            .get(GetRequest {
                key: a.key.as_bytes().to_vec(),
                read: None,
            })
            .await
            .map_err(|e| Error::Node(format!("reading {}: {e}", a.key)))?;
        if !got.found || got.value != a.value.as_bytes() {
            lost += 1;
        }
    }
    Ok(lost)
}
