//! Starting and stopping the two systems on loopback, and what the workloads ask of them:
//! replication set-up, offsets, and the correctness gate.
//!
//! Every server is a child process of this one, started with `kill_on_drop`, so a benchmark
//! that fails or is interrupted leaves nothing running, and only processes this binary started
//! are ever stopped. Redis gets a port the kernel reported free and must then answer `INFO`
//! with the process id we started (a stray server on the port is refused); Partita binds port 0
//! and its ready line says where it listens. Replication links that a workload needs to cut go
//! through a [`Proxy`], the same for both systems, so "the network dropped" means the same
//! thing to Redis and to Partita.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use partita_node::proto::admin_client::AdminClient;
use partita_node::proto::{
    AssignRoleRequest, DigestRequest, FollowRequest, NodeAddress, NodeStatus, PartitionSelector,
    PrimaryRole, PromoteRequest, ReplicaRole, StatusRequest, assign_role_request,
};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::resp::{Conn, Reply, parse_info};
use crate::{Error, Result};

/// Partitions of every Partita node in the benchmark (the node's default).
pub const PARTITIONS: usize = 16;

/// The two systems under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// Debian's redis-server.
    Redis,
    /// partita-node.
    Partita,
}

impl System {
    /// Lower-case name, as in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            System::Redis => "redis",
            System::Partita => "partita",
        }
    }
}

/// The order of run `run`: Redis first on even runs, Partita first on odd ones (A/B, B/A).
pub fn order(run: usize) -> [System; 2] {
    if run.is_multiple_of(2) {
        [System::Redis, System::Partita]
    } else {
        [System::Partita, System::Redis]
    }
}

/// What the harness needs from its environment.
#[derive(Debug, Clone)]
pub struct Env {
    /// The partita-node binary.
    pub node: PathBuf,
    /// Timeout of one request.
    pub op_timeout: Duration,
    /// Deadline of any one wait (link up, catch-up, full sync).
    pub deadline: Duration,
}

/// One running server.
pub struct Server {
    /// Which system.
    pub system: System,
    /// Its name: `r0`, `r1`… or the Partita node id `n1`, `n2`…
    pub name: String,
    /// host:port of its RESP listener.
    pub resp: String,
    /// host:port of its gRPC listener (Partita only).
    pub grpc: Option<String>,
    child: Child,
    log: PathBuf,
    poll: Option<Conn>,
    op_timeout: Duration,
}

impl Server {
    /// Fails if the process has exited, naming its log.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Check(format!(
                "{} {} exited ({status}); log: {}",
                self.system.name(),
                self.name,
                log_tail(&self.log)
            ))),
            Err(source) => Err(Error::Io {
                what: format!("checking {}", self.name),
                source,
            }),
        }
    }

    /// The connection kept for polling.
    async fn conn(&mut self) -> Result<&mut Conn> {
        if self.poll.is_none() {
            self.poll = Some(Conn::connect(&self.resp, self.op_timeout).await?);
        }
        self.poll
            .as_mut()
            .ok_or_else(|| Error::Check("no polling connection".into()))
    }

    /// Sends one command on the polling connection (dropped on error, so the next call
    /// reconnects).
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply> {
        let r = self.conn().await?.call(args).await;
        if r.is_err() {
            self.poll = None;
        }
        r
    }

    /// `INFO section`, parsed.
    pub async fn info(&mut self, section: &str) -> Result<BTreeMap<String, String>> {
        match self.call(&[b"INFO", section.as_bytes()]).await? {
            Reply::Bulk(Some(b)) => Ok(parse_info(&String::from_utf8_lossy(&b))),
            other => Err(Error::Check(format!(
                "INFO on {} answered {}",
                self.name,
                other.text()
            ))),
        }
    }

    /// DBSIZE.
    pub async fn dbsize(&mut self) -> Result<u64> {
        match self.call(&[b"DBSIZE"]).await? {
            Reply::Int(n) => Ok(u64::try_from(n).unwrap_or(0)),
            other => Err(Error::Check(format!(
                "DBSIZE on {} answered {}",
                self.name,
                other.text()
            ))),
        }
    }

    /// An Admin client (Partita only).
    pub async fn admin(&self) -> Result<AdminClient<Channel>> {
        let grpc = self
            .grpc
            .as_deref()
            .ok_or_else(|| Error::Invalid(format!("{} has no gRPC listener", self.name)))?;
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .map_err(|e| Error::Node(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(120))
            .connect()
            .await
            .map_err(|e| Error::Node(format!("connecting to {}: {e}", self.name)))?;
        Ok(AdminClient::new(channel))
    }

    /// Admin Status (Partita only).
    pub async fn status(&self) -> Result<NodeStatus> {
        let mut a = self.admin().await?;
        a.status(StatusRequest { partitions: None })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| Error::Node(format!("status of {}: {e}", self.name)))
    }

    /// (digest, keys) of every copy this server holds: `DEBUG DIGEST` and DBSIZE on Redis,
    /// Admin Digest on Partita.
    pub async fn digest(&mut self) -> Result<(String, u64)> {
        match self.system {
            System::Redis => {
                let d = self.call(&[b"DEBUG", b"DIGEST"]).await?;
                let keys = self.dbsize().await?;
                Ok((d.text(), keys))
            }
            System::Partita => {
                let mut a = self.admin().await?;
                let d = a
                    .digest(DigestRequest { partitions: None })
                    .await
                    .map_err(|e| Error::Node(format!("digest of {}: {e}", self.name)))?
                    .into_inner();
                Ok((d.digest, d.keys))
            }
        }
    }

    /// The replication offset this server has written as a primary (Redis: bytes; Partita:
    /// entries, summed over partitions).
    pub async fn primary_offset(&mut self) -> Result<u64> {
        let f = self.info("replication").await?;
        field_u64(&f, "master_repl_offset", &self.name)
    }

    /// The offset this replica has applied; `None` unless its link is up (on Partita: every
    /// partition streaming).
    pub async fn replica_offset(&mut self) -> Result<Option<u64>> {
        let f = self.info("replication").await?;
        if f.get("master_link_status").map(String::as_str) != Some("up") {
            return Ok(None);
        }
        if self.system == System::Partita {
            let parts: Vec<&String> = f
                .iter()
                .filter(|(k, _)| is_partition_line(k))
                .map(|(_, v)| v)
                .collect();
            if parts.len() != PARTITIONS || parts.iter().any(|v| !v.contains("link=streaming")) {
                return Ok(None);
            }
        }
        Ok(Some(field_u64(&f, "slave_repl_offset", &self.name)?))
    }

    /// Stops the process now (SIGKILL to our own child) and waits for it.
    pub async fn kill(&mut self) {
        self.poll = None;
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

fn is_partition_line(key: &str) -> bool {
    key.strip_prefix("partition")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn field_u64(f: &BTreeMap<String, String>, key: &str, who: &str) -> Result<u64> {
    f.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Check(format!("{who}: INFO has no {key}")))
}

fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().rev().take(5).collect();
            let lines: Vec<&str> = lines.into_iter().rev().collect();
            format!("{}: {}", path.display(), lines.join(" | "))
        }
        Err(_) => path.display().to_string(),
    }
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::File::create(path).map_err(|source| Error::Io {
        what: format!("creating {}", path.display()),
        source,
    })
}

fn spawn(cmd: &mut Command, what: &str) -> Result<Child> {
    cmd.kill_on_drop(true)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| Error::Io {
            what: format!("starting {what}"),
            source,
        })
}

/// A loopback port the kernel reports free (Redis needs one up front).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| Error::Io {
        what: "finding a free port".into(),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| Error::Io {
            what: "finding a free port".into(),
            source,
        })
}

/// Starts a redis-server with persistence off (`--save "" --appendonly no`), its working
/// directory under `dir`, optionally replicating from `replicaof` (host:port).
pub async fn start_redis(
    env: &Env,
    dir: &Path,
    name: &str,
    replicaof: Option<&str>,
    extra: &[&str],
) -> Result<Server> {
    let work = work_dir(dir, name)?;
    let port = free_port()?;
    let log = work.join("server.log");
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--protected-mode", "no", "--enable-debug-command", "local"])
        // Redis's default 5 s wait for more replicas before a full sync would dominate W5.
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(&work)
        .args(extra);
    if let Some(addr) = replicaof {
        let (host, p) = addr
            .rsplit_once(':')
            .ok_or_else(|| Error::Invalid(format!("bad address {addr}")))?;
        cmd.args(["--replicaof", host, p]);
    }
    cmd.stdout(log_file(&log)?)
        .stderr(log_file(&work.join("stderr.log"))?);
    let child = spawn(&mut cmd, "redis-server (apt install redis-server)")?;
    let mut server = Server {
        system: System::Redis,
        name: name.to_string(),
        resp: format!("127.0.0.1:{port}"),
        grpc: None,
        child,
        log,
        poll: None,
        op_timeout: env.op_timeout,
    };
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        server.check_alive()?;
        if let Ok(Reply::Simple(p)) = server.call(&[b"PING"]).await
            && p == "PONG"
        {
            break;
        }
        if Instant::now() > until {
            return Err(Error::Timeout {
                what: format!("redis {name} on port {port}"),
                after: Duration::from_secs(30),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    verify_pid(&mut server).await?;
    Ok(server)
}

/// Server `name`'s own directory under `dir`, created: its data and logs.
fn work_dir(dir: &Path, name: &str) -> Result<PathBuf> {
    let work = dir.join(name);
    std::fs::create_dir_all(&work).map_err(|source| Error::Io {
        what: format!("creating {}", work.display()),
        source,
    })?;
    Ok(work)
}

/// Refuses a server whose port is answered by a process we did not start.
async fn verify_pid(server: &mut Server) -> Result<()> {
    let f = server.info("server").await?;
    let pid = server.child.id().map(|p| p.to_string());
    if f.get("process_id") != pid.as_ref() {
        return Err(Error::Check(format!(
            "{} is answered by process {:?}, not by the {} we started ({pid:?})",
            server.resp,
            f.get("process_id"),
            server.system.name()
        )));
    }
    Ok(())
}

/// Starts a partita-node in memory (`--in-memory`: persistence off, as the Redis side),
/// 16 partitions, listening on ports the kernel picks.
pub async fn start_partita(
    env: &Env,
    dir: &Path,
    name: &str,
    standalone: bool,
    extra: &[&str],
) -> Result<Server> {
    let work = work_dir(dir, name)?;
    let log = work.join("server.log");
    let mut cmd = Command::new(&env.node);
    if standalone {
        cmd.arg("--standalone");
    }
    cmd.args(["--node-id", name, "--in-memory"])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args([
            "--resp-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .args(["--http-listen", "127.0.0.1:0"])
        .current_dir(&work)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log_file(&log)?);
    let mut child = spawn(&mut cmd, &format!("{}", env.node.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Check("partita-node has no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("partita-node ready") {
                return Some(line);
            }
        }
        None
    })
    .await;
    let line = match ready {
        Ok(Some(line)) => line,
        _ => {
            return Err(Error::Check(format!(
                "partita {name} printed no ready line; log: {}",
                log_tail(&log)
            )));
        }
    };
    // Keep reading its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let addr = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
            .ok_or_else(|| Error::Check(format!("no {key} in ready line {line:?}")))
    };
    let mut server = Server {
        system: System::Partita,
        name: name.to_string(),
        resp: addr("resp=")?,
        grpc: Some(addr("grpc=")?),
        child,
        log,
        poll: None,
        op_timeout: env.op_timeout,
    };
    verify_pid(&mut server).await?;
    Ok(server)
}

fn all() -> Option<PartitionSelector> {
    Some(PartitionSelector {
        all: true,
        ids: Vec::new(),
    })
}

/// Assigns every partition of `server` the primary role at `epoch`.
pub async fn partita_assign_primary(
    server: &Server,
    epoch: u64,
    replicas: &[String],
    min_in_sync: u32,
) -> Result<()> {
    let role = PrimaryRole {
        replicas: replicas.to_vec(),
        copies: 1 + u32::try_from(replicas.len()).unwrap_or(0),
        min_in_sync_replicas: min_in_sync,
    };
    let mut a = server.admin().await?;
    a.assign_role(AssignRoleRequest {
        partitions: all(),
        epoch,
        role: Some(assign_role_request::Role::Primary(role)),
    })
    .await
    .map_err(|e| Error::Node(format!("assign primary on {}: {e}", server.name)))?;
    Ok(())
}

/// The address a replica dials to reach `primary`: its own gRPC address, or a proxy's.
fn primary_address(primary: &Server, dial: Option<&str>) -> NodeAddress {
    NodeAddress {
        node_id: primary.name.clone(),
        grpc_addr: dial
            .map(str::to_string)
            .or_else(|| primary.grpc.clone())
            .unwrap_or_default(),
        resp_addr: primary.resp.clone(),
    }
}

/// Assigns every partition of `server` the replica role of `primary` at `epoch`, dialling
/// `dial` (a proxy) instead of the primary's own address when given.
pub async fn partita_assign_follow(
    server: &Server,
    epoch: u64,
    primary: &Server,
    dial: Option<&str>,
) -> Result<()> {
    let mut a = server.admin().await?;
    a.assign_role(AssignRoleRequest {
        partitions: all(),
        epoch,
        role: Some(assign_role_request::Role::Replica(ReplicaRole {
            primary: Some(primary_address(primary, dial)),
        })),
    })
    .await
    .map_err(|e| Error::Node(format!("assign follow on {}: {e}", server.name)))?;
    Ok(())
}

/// Promotes `server` to primary of every partition at `epoch`.
pub async fn partita_promote(
    server: &Server,
    epoch: u64,
    replicas: &[String],
    min_in_sync: u32,
) -> Result<()> {
    let mut a = server.admin().await?;
    a.promote(PromoteRequest {
        partitions: all(),
        epoch,
        primary: Some(PrimaryRole {
            replicas: replicas.to_vec(),
            copies: 1 + u32::try_from(replicas.len()).unwrap_or(0),
            min_in_sync_replicas: min_in_sync,
        }),
        min_offset: 0,
        catch_up_timeout_ms: 0,
    })
    .await
    .map_err(|e| Error::Node(format!("promote {}: {e}", server.name)))?;
    Ok(())
}

/// Makes `server` follow `primary` at `epoch` (after a failover).
pub async fn partita_follow(server: &Server, epoch: u64, primary: &Server) -> Result<()> {
    let mut a = server.admin().await?;
    a.follow(FollowRequest {
        partitions: all(),
        epoch,
        primary: Some(primary_address(primary, None)),
    })
    .await
    .map_err(|e| Error::Node(format!("follow on {}: {e}", server.name)))?;
    Ok(())
}

/// `REPLICAOF host port` (or `NO ONE`) on a Redis server.
pub async fn redis_replicaof(server: &mut Server, addr: Option<&str>) -> Result<()> {
    let (host, port) = match addr {
        Some(a) => a
            .rsplit_once(':')
            .ok_or_else(|| Error::Invalid(format!("bad address {a}")))?,
        None => ("NO", "ONE"),
    };
    server
        .call(&[b"REPLICAOF", host.as_bytes(), port.as_bytes()])
        .await
        .and_then(|r| match r {
            Reply::Error(e) => Err(Error::Check(format!("REPLICAOF on {}: {e}", server.name))),
            _ => Ok(()),
        })
}

/// A TCP proxy on loopback that can cut every connection through it and refuse new ones,
/// then heal: a network drop that means the same to both systems.
pub struct Proxy {
    /// Where it listens.
    pub addr: String,
    cut: Arc<AtomicBool>,
    conns: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream`.
    pub async fn start(upstream: &str) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io {
                what: "binding a proxy".into(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Io {
                what: "binding a proxy".into(),
                source,
            })?
            .to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream = upstream.to_string();
        let (cut2, conns2) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if cut2.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(&upstream).await {
                        let _ = up.set_nodelay(true);
                        let _ = down.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                let mut c = conns2.lock();
                c.retain(|t| !t.is_finished());
                c.push(task);
            }
        });
        Ok(Proxy {
            addr,
            cut,
            conns,
            accept,
        })
    }

    /// Closes every connection through the proxy and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for t in self.conns.lock().drain(..) {
            t.abort();
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for t in self.conns.lock().drain(..) {
            t.abort();
        }
    }
}

/// A primary and its replicas.
pub struct Cluster {
    /// The system.
    pub system: System,
    /// The primary.
    pub primary: Server,
    /// The replicas, in order.
    pub replicas: Vec<Server>,
    /// One proxy per replica when the links go through proxies.
    pub proxies: Vec<Proxy>,
}

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOpts {
    /// Replicas to start and link.
    pub replicas: usize,
    /// Route each replica's link through its own [`Proxy`].
    pub via_proxy: bool,
    /// Extra partita-node flags of the primary.
    pub partita_primary: Vec<String>,
    /// Extra redis-server flags of the primary.
    pub redis_primary: Vec<String>,
    /// Partita: refuse writes with fewer in-sync replicas than this.
    pub min_in_sync: u32,
}

/// Starts a primary and `opts.replicas` linked replicas, and waits until they stream.
pub async fn start_cluster(
    env: &Env,
    dir: &Path,
    system: System,
    opts: &ClusterOpts,
) -> Result<Cluster> {
    let n = opts.replicas;
    let mut replicas = Vec::new();
    let mut proxies = Vec::new();
    let primary = match system {
        System::Redis => {
            let extra: Vec<&str> = opts.redis_primary.iter().map(String::as_str).collect();
            let primary = start_redis(env, dir, "r0", None, &extra).await?;
            for i in 1..=n {
                let dial = if opts.via_proxy {
                    let p = Proxy::start(&primary.resp).await?;
                    let a = p.addr.clone();
                    proxies.push(p);
                    a
                } else {
                    primary.resp.clone()
                };
                replicas.push(start_redis(env, dir, &format!("r{i}"), Some(&dial), &[]).await?);
            }
            primary
        }
        System::Partita => {
            let extra: Vec<&str> = opts.partita_primary.iter().map(String::as_str).collect();
            let primary = start_partita(env, dir, "n1", n == 0, &extra).await?;
            let names: Vec<String> = (2..n + 2).map(|i| format!("n{i}")).collect();
            if n > 0 {
                partita_assign_primary(&primary, 1, &names, opts.min_in_sync).await?;
            }
            for name in &names {
                let r = start_partita(env, dir, name, false, &[]).await?;
                let dial = if opts.via_proxy {
                    let up = primary.grpc.clone().unwrap_or_default();
                    let p = Proxy::start(&up).await?;
                    let a = p.addr.clone();
                    proxies.push(p);
                    Some(a)
                } else {
                    None
                };
                partita_assign_follow(&r, 1, &primary, dial.as_deref()).await?;
                replicas.push(r);
            }
            primary
        }
    };
    let mut c = Cluster {
        system,
        primary,
        replicas,
        proxies,
    };
    c.wait_caught_up(env.deadline).await?;
    Ok(c)
}

impl Cluster {
    /// Fails if any server has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.primary.check_alive()?;
        for r in &mut self.replicas {
            r.check_alive()?;
        }
        Ok(())
    }

    /// Offsets the replicas are behind the primary right now (max over replicas), read in one
    /// pass: the primary first, then each replica.
    pub async fn behind(&mut self) -> Result<u64> {
        let target = self.primary.primary_offset().await?;
        let mut worst = 0;
        for r in &mut self.replicas {
            let at = r.replica_offset().await?.unwrap_or(0);
            worst = worst.max(target.saturating_sub(at));
        }
        Ok(worst)
    }

    /// Waits until every replica's link is up and its offset reaches the primary's current
    /// one; returns how long that took.
    pub async fn wait_caught_up(&mut self, deadline: Duration) -> Result<Duration> {
        let start = Instant::now();
        let target = self.primary.primary_offset().await?;
        self.wait_offset(target, start, deadline).await
    }

    /// Waits until every replica has applied `target`; the time is measured from `start`.
    pub async fn wait_offset(
        &mut self,
        target: u64,
        start: Instant,
        deadline: Duration,
    ) -> Result<Duration> {
        let mut pending: Vec<usize> = (0..self.replicas.len()).collect();
        loop {
            let mut still = Vec::new();
            for i in pending {
                let Some(r) = self.replicas.get_mut(i) else {
                    continue;
                };
                if r.replica_offset().await?.is_none_or(|at| at < target) {
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(start.elapsed());
            }
            self.check_alive()?;
            if start.elapsed() > deadline {
                return Err(Error::Timeout {
                    what: format!("{} replicas to reach offset {target}", self.system.name()),
                    after: deadline,
                });
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    /// The correctness gate: once the replicas have caught up, every copy holds the same
    /// number of keys and the same digest, and (when given) that number is `expect`.
    pub async fn gate(&mut self, deadline: Duration, expect: Option<u64>) -> Result<u64> {
        self.check_alive()?;
        if !self.replicas.is_empty() {
            // Redis's primary adds a PING to its stream every 10 s; re-read the target until
            // the replicas meet it.
            let until = Instant::now() + deadline;
            loop {
                self.wait_caught_up(deadline).await?;
                let target = self.primary.primary_offset().await?;
                let mut all = true;
                for r in &mut self.replicas {
                    all &= r.replica_offset().await? == Some(target);
                }
                if all || Instant::now() > until {
                    break;
                }
            }
        }
        let (digest, keys) = self.primary.digest().await?;
        let size = self.primary.dbsize().await?;
        if size != keys {
            return Err(Error::Check(format!(
                "{}: DBSIZE {size} but the digest counts {keys} keys",
                self.primary.name
            )));
        }
        for r in &mut self.replicas {
            let (d, k) = r.digest().await?;
            if (d.as_str(), k) != (digest.as_str(), keys) {
                return Err(Error::Check(format!(
                    "{} holds {k} keys, digest {d}; primary {} holds {keys}, digest {digest}",
                    r.name, self.primary.name
                )));
            }
        }
        if let Some(want) = expect
            && want != keys
        {
            return Err(Error::Check(format!(
                "{} keys on every copy, expected {want}",
                keys
            )));
        }
        Ok(keys)
    }

    /// Kills every server (our own children).
    pub async fn stop(mut self) {
        for r in self.replicas.iter_mut().rev() {
            r.kill().await;
        }
        self.primary.kill().await;
    }
}
