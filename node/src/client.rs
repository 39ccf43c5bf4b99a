//! A topology-aware Rust client for a Partita cluster.
//!
//! It keeps the partition map it last read (`KV.GetTopology`) and sends each request straight to
//! the node that can serve it: the primary of the key's partition, or a replica the map names
//! for a read that allows any copy. A node that is not the right one answers `MOVED` (or
//! `NOT_PRIMARY`) with the primary's address, the slot and its own map's version. The client then
//! goes to that address and reads the newer map, so a client holding an old map after a failover
//! recovers by itself.
//!
//! Everything is bounded:
//! - a request is tried at most [`Config::max_attempts`] times, and redirects count too, with
//!   exponential backoff between tries (so a few tries span a failover);
//! - connecting and each call have time limits;
//! - a request whose outcome is unknown (the connection broke after it was sent) is retried
//!   only when it is idempotent (reads, and puts and deletes without a condition);
//! - a request the node refused without applying it (`NOT_ENOUGH_IN_SYNC`) is retried; any
//!   other refusal is returned at once, and when the tries run out the last error is returned.
//!
//! A node without a pushed map (a standalone node, or a cluster not yet told) answers with a
//! map of version 0 that vouches only for itself. The client then sends everything to the
//! address it was given, and follows `NOT_PRIMARY` answers to the primary they name.
//!
//! The `partita` CLI uses this client.

use crate::Error;
use crate::proto::kv_client::KvClient;
use crate::proto::{
    DeleteRequest, DeleteResponse, ErrorCode, ErrorInfo, GetRequest, GetResponse,
    GetTopologyRequest, NodeAddress, PutCondition, PutRequest, PutResponse, ReadOptions,
    ReadPreference, ScanRequest, ScanResponse, Topology,
};
use crate::slot::SlotMap;
use prost::Message;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tonic::transport::Channel;

/// How a [`Client`] connects and retries.
#[derive(Debug, Clone)]
pub struct Config {
    /// Nodes to read the partition map from at first (gRPC `host:port`); any one will do.
    pub seeds: Vec<String>,
    /// How long connecting to a node may take.
    pub connect_timeout: Duration,
    /// How long one call may take.
    pub call_timeout: Duration,
    /// Most tries of one request, redirects included.
    pub max_attempts: usize,
}

impl Config {
    /// Defaults around `seeds`: 5 s to connect, 30 s per call, 5 attempts.
    pub fn new(seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            seeds: seeds.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            max_attempts: 5,
        }
    }
}

/// What the client knows of the cluster.
#[derive(Default)]
struct Cache {
    /// The newest map read.
    map: Option<Topology>,
    /// Where each partition's primary is, learned from redirects since the map was read.
    moved: HashMap<u32, NodeAddress>,
    /// Open channels, by gRPC address.
    channels: HashMap<String, Channel>,
    /// The address that answered the last refresh: where requests go while the map is version 0.
    origin: Option<String>,
}

/// Where one try of a request went wrong, and what to do about it.
enum Next {
    /// Go at once to the address a redirect named.
    Redirected(Error),
    /// Try again after a pause (after reading the map again); the error is the answer if no
    /// try is left.
    Retry(Error),
    /// Give up with this error.
    Fail(Error),
}

/// A client of a Partita cluster. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Client {
    cfg: Config,
    cache: Mutex<Cache>,
    redirects: AtomicU64,
    spread: AtomicU64,
}

impl Client {
    /// A client that has read the partition map from one of `cfg.seeds`.
    pub async fn connect(cfg: Config) -> Result<Self, Error> {
        if cfg.seeds.is_empty() || cfg.max_attempts == 0 {
            return Err(Error::Client {
                reason: "a client needs at least one seed address and one attempt".into(),
            });
        }
        let client = Self {
            cfg,
            cache: Mutex::new(Cache::default()),
            redirects: AtomicU64::new(0),
            spread: AtomicU64::new(0),
        };
        client.refresh(None).await?;
        Ok(client)
    }

    /// The partition map the client holds.
    pub fn topology(&self) -> Option<Topology> {
        self.lock().map.clone()
    }

    /// Redirects followed so far (MOVED and NOT_PRIMARY answers).
    pub fn redirects(&self) -> u64 {
        self.redirects.load(Ordering::Relaxed)
    }

    /// Reads `req.key`, from its partition's primary or, when `req.read` allows, a replica.
    pub async fn get(&self, req: GetRequest) -> Result<GetResponse, Error> {
        let replica_ok = allows_replica(req.read.as_ref());
        let partition = self.partition_of(&req.key)?;
        self.call(partition, replica_ok, true, move |mut kv| {
            let req = req.clone();
            async move { kv.get(req).await }
        })
        .await
    }

    /// Writes `req.key` on its partition's primary.
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, Error> {
        let partition = self.partition_of(&req.key)?;
        let idempotent = req.condition == PutCondition::Always as i32;
        self.call(partition, false, idempotent, move |mut kv| {
            let req = req.clone();
            async move { kv.put(req).await }
        })
        .await
    }

    /// Deletes `req.key` on its partition's primary.
    pub async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse, Error> {
        let partition = self.partition_of(&req.key)?;
        self.call(partition, false, true, move |mut kv| {
            let req = req.clone();
            async move { kv.delete(req).await }
        })
        .await
    }

    /// One page of `req.partition`'s keys.
    pub async fn scan(&self, req: ScanRequest) -> Result<ScanResponse, Error> {
        let replica_ok = allows_replica(req.read.as_ref());
        self.call(req.partition, replica_ok, true, move |mut kv| {
            let req = req.clone();
            async move { kv.scan(req).await }
        })
        .await
    }

    /// The number of partitions, from the map.
    pub fn partitions(&self) -> u32 {
        self.lock().map.as_ref().map_or(0, |m| m.partitions)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn partition_of(&self, key: &[u8]) -> Result<u32, Error> {
        let partitions = self.partitions();
        Ok(SlotMap::new(partitions)?.partition_of_key(key))
    }

    /// The gRPC address to send a request for `partition` to.
    fn target(&self, partition: u32, replica_ok: bool) -> Option<String> {
        let cache = self.lock();
        if let Some(moved) = cache.moved.get(&partition) {
            return Some(moved.grpc_addr.clone());
        }
        let map = cache.map.as_ref()?;
        if map.version == 0 {
            return cache.origin.clone();
        }
        let route = map.routes.iter().find(|r| r.partition == partition)?;
        let addr_of = |id: &str| {
            map.nodes
                .iter()
                .find(|n| n.node_id == id)
                .map(|n| n.grpc_addr.clone())
        };
        if replica_ok && !route.replicas.is_empty() {
            // Spread reads that allow any copy over the replicas.
            let i = self.spread.fetch_add(1, Ordering::Relaxed) as usize % route.replicas.len();
            if let Some(addr) = addr_of(&route.replicas[i]) {
                return Some(addr);
            }
        }
        addr_of(&route.primary)
    }

    async fn channel(&self, addr: &str) -> Result<Channel, Error> {
        if let Some(ch) = self.lock().channels.get(addr) {
            return Ok(ch.clone());
        }
        let unreachable = |reason: String| Error::Unreachable {
            addr: addr.to_string(),
            reason,
        };
        let endpoint = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(self.cfg.connect_timeout)
            .timeout(self.cfg.call_timeout);
        let ch = tokio::time::timeout(self.cfg.connect_timeout, endpoint.connect())
            .await
            .map_err(|_| unreachable("no connection in time".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        self.lock().channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// Reads the map from `first` if given, else from the seeds and the nodes the map names,
    /// keeping it if it is at least as new as the one held.
    async fn refresh(&self, first: Option<&str>) -> Result<(), Error> {
        let mut candidates: Vec<String> = first.into_iter().map(str::to_string).collect();
        {
            let cache = self.lock();
            candidates.extend(self.cfg.seeds.iter().cloned());
            if let Some(map) = &cache.map {
                candidates.extend(map.nodes.iter().map(|n| n.grpc_addr.clone()));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        candidates.retain(|c| seen.insert(c.clone()));
        let held = self.lock().map.as_ref().map(|m| m.version);
        let mut found = false;
        let mut last = String::new();
        for addr in candidates {
            let ch = match self.channel(&addr).await {
                Ok(ch) => ch,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match KvClient::new(ch).get_topology(GetTopologyRequest {}).await {
                Ok(r) => {
                    let map = r.into_inner();
                    let version = map.version;
                    {
                        let mut cache = self.lock();
                        if cache.map.as_ref().is_none_or(|m| version >= m.version) {
                            cache.map = Some(map);
                            cache.moved.clear();
                            cache.origin = Some(addr.clone());
                        }
                    }
                    found = true;
                    // Good enough once no older than what was held; else ask the next node.
                    if held.is_none_or(|h| version >= h) {
                        return Ok(());
                    }
                }
                Err(status) => {
                    self.lock().channels.remove(&addr);
                    last = format!("{addr}: {}", status.message());
                }
            }
        }
        if found {
            return Ok(());
        }
        Err(Error::Unreachable {
            addr: "every known node".into(),
            reason: last,
        })
    }

    /// What to do after `status` came back from `addr` for `partition`.
    async fn after(
        &self,
        partition: u32,
        addr: &str,
        status: tonic::Status,
        idempotent: bool,
    ) -> Next {
        let info = ErrorInfo::decode(status.details()).unwrap_or_default();
        let code = ErrorCode::try_from(info.code).unwrap_or(ErrorCode::Unspecified);
        let error = || Error::Call(Box::new(status.clone()));
        match code {
            ErrorCode::Moved | ErrorCode::NotPrimary => {
                self.redirects.fetch_add(1, Ordering::Relaxed);
                let held = self.lock().map.as_ref().map_or(0, |m| m.version);
                if info.topology_version > held {
                    // The node has a newer map: read it there.
                    let _ = self.refresh(Some(addr)).await;
                }
                match info.primary {
                    Some(primary) if !primary.grpc_addr.is_empty() && primary.grpc_addr != addr => {
                        self.lock().moved.insert(partition, primary);
                        Next::Redirected(error())
                    }
                    // No one leads it as far as that node knows: read the map elsewhere, and
                    // without a pushed map, ask another of the nodes given.
                    _ => {
                        self.lock().moved.remove(&partition);
                        let _ = self.refresh(None).await;
                        self.next_origin(addr);
                        Next::Retry(error())
                    }
                }
            }
            // Refused before it was applied (too few replicas in sync, or a primary fenced
            // during a failover): worth another try after a pause.
            ErrorCode::NotEnoughInSync | ErrorCode::Fenced => {
                if code == ErrorCode::Fenced {
                    self.lock().moved.remove(&partition);
                    let _ = self.refresh(None).await;
                }
                Next::Retry(error())
            }
            // Any other refusal the node explained is the answer.
            ErrorCode::Unspecified => {
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown
                ) && idempotent
                {
                    // The node may be gone: forget its channel, read the map again.
                    self.lock().channels.remove(addr);
                    self.lock().moved.remove(&partition);
                    let _ = self.refresh(None).await;
                    Next::Retry(error())
                } else {
                    Next::Fail(error())
                }
            }
            _ => Next::Fail(error()),
        }
    }

    /// Without a pushed map, requests go to one of the nodes given (the origin). When `tried`
    /// could not name a primary, the next of them becomes the origin.
    fn next_origin(&self, tried: &str) {
        let mut cache = self.lock();
        if cache.map.as_ref().is_some_and(|m| m.version > 0) {
            return;
        }
        let seeds = &self.cfg.seeds;
        let at = seeds.iter().position(|s| s == tried).map_or(0, |i| i + 1);
        let next = seeds
            .iter()
            .cycle()
            .skip(at)
            .take(seeds.len())
            .find(|s| *s != tried)
            .cloned();
        if let Some(next) = next {
            cache.origin = Some(next);
        }
    }

    /// Sends a request for `partition` to the node the map names, following redirects and
    /// retrying as the module docs say.
    async fn call<R, F, Fut>(
        &self,
        partition: u32,
        replica_ok: bool,
        idempotent: bool,
        mut send: F,
    ) -> Result<R, Error>
    where
        F: FnMut(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut last = None;
        let mut pause = false;
        for attempt in 0..self.cfg.max_attempts {
            if pause {
                tokio::time::sleep(backoff(attempt, salt())).await;
            }
            pause = true;
            let Some(addr) = self.target(partition, replica_ok) else {
                if let Err(e) = self.refresh(None).await {
                    last = Some(e);
                }
                continue;
            };
            let ch = match self.channel(&addr).await {
                Ok(ch) => ch,
                Err(e) => {
                    // Nothing was sent: always safe to try elsewhere.
                    self.lock().moved.remove(&partition);
                    let _ = self.refresh(None).await;
                    last = Some(e);
                    continue;
                }
            };
            match send(KvClient::new(ch)).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) => match self.after(partition, &addr, status, idempotent).await {
                    Next::Redirected(e) => {
                        pause = false;
                        last = Some(e);
                    }
                    Next::Retry(e) => last = Some(e),
                    Next::Fail(e) => return Err(e),
                },
            }
        }
        Err(last.unwrap_or_else(|| Error::Client {
            reason: format!(
                "partition {partition}: no answer after {} attempts",
                self.cfg.max_attempts
            ),
        }))
    }
}

/// Some bits that differ between calls and between processes, for jitter.
fn salt() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(32)
}

/// The pause before try `attempt` (1, 2, ...): 25 ms doubling up to 1 s, plus up to a fifth
/// more, drawn from `salt`, so clients that failed together do not retry together.
fn backoff(attempt: usize, salt: u64) -> Duration {
    let base = Duration::from_millis(25 << attempt.min(6)).min(Duration::from_secs(1));
    let jitter = base.as_millis() as u64 / 5;
    base + Duration::from_millis(if jitter == 0 {
        0
    } else {
        salt.wrapping_mul(2_654_435_761) % jitter
    })
}

fn allows_replica(read: Option<&ReadOptions>) -> bool {
    read.is_some_and(|o| o.preference == ReadPreference::Any as i32)
}
