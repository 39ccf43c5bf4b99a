//! One pod's life on the kubelet: a task per pod that owns its address, proxy and process.
//!
//! Owning the child process in one task is what makes signals safe without `unsafe`: a signal
//! is only ever sent (by the `kill` command) while this task holds the child unreaped, so the
//! pid cannot have been reused by another process. Everything that happens to the pod — its
//! process exiting, a probe answering, the API object changing, a fault request, the kubelet
//! stopping — is an event in one `select!` loop, after which the status is written if the
//! observation changed.

use super::proxy::Proxy;
use super::spec::{self, ContainerPlan, EnvInputs, HttpProbe, VolumeKind};
use super::status::{ContainerObservation, Observation, Phase, State, Terminated, pod_status};
use super::{FIELD_MANAGER, Fault, FaultRequest, PodAddresses, Shared, net, probe};
use crate::{Error, Result};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long a failed container configuration (a missing ConfigMap, say) waits to be retried.
const CONFIG_RETRY: Duration = Duration::from_secs(1);
/// How long the kubelet waits for a SIGKILLed process to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times the final delete of a pod is tried.
const DELETE_ATTEMPTS: u32 = 10;

type ProbeFuture = Pin<Box<dyn Future<Output = bool> + Send + Sync>>;

/// The log file of run `restart` of pod `namespace/name`.
pub(super) fn log_path(root: &Path, namespace: &str, name: &str, restart: i32) -> PathBuf {
    root.join("logs")
        .join(format!("{namespace}_{name}_{restart}.log"))
}

/// Why a pod's life on this kubelet ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The pod got a deletionTimestamp: stop gracefully, then delete it for good.
    Deleted,
    /// The pod is gone from the API (force-deleted): stop at once.
    Gone,
    /// The kubelet stops: stop gracefully, leave the pod in the API.
    Stop,
}

/// What woke a pod's task.
enum Event {
    /// The process exited.
    Exited(std::io::Result<ExitStatus>),
    /// Time to start the container (or, while terminating, the grace period is over).
    Start,
    /// A probe answered.
    Probed(bool),
    /// Time to probe.
    Tick,
    /// The pod object changed (`false`: the main loop is gone).
    Changed(bool),
    /// A fault was requested.
    Fault(FaultRequest),
    /// The kubelet stops.
    Stop,
}

/// Why a container could not be started.
enum StartError {
    /// Its configuration is missing (CreateContainerConfigError), retried shortly.
    Config(String),
    /// The process could not be started (RunContainerError), retried with backoff.
    Run(String),
}

/// The task of one pod.
pub(super) struct Worker {
    shared: Arc<Shared>,
    uid: String,
    namespace: String,
    name: String,
    pod: watch::Receiver<Option<Arc<Pod>>>,
    faults: mpsc::Receiver<FaultRequest>,
    stopping: watch::Receiver<bool>,
    obs: Observation,
    written: Option<Observation>,
    slot: Option<u8>,
    addresses: Option<PodAddresses>,
    proxy: Option<Proxy>,
    child: Option<Child>,
    pid: Option<u32>,
    frozen: bool,
    /// When the current process started.
    since: Option<Instant>,
    /// The last restart delay.
    delay: Option<Duration>,
    /// When the container is to be started next.
    start_at: Option<Instant>,
    /// No restart before this (a [`Fault::KillFor`]: the machine is lost for a while).
    hold_until: Option<Instant>,
    /// Processes started so far.
    runs: i32,
    probe: Option<ProbeFuture>,
    probing_startup: bool,
    successes: u32,
    failures: u32,
}

async fn child_exit(child: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn probe_done(probe: &mut Option<ProbeFuture>) -> bool {
    match probe {
        Some(probe) => probe.await,
        None => std::future::pending().await,
    }
}

/// Sends `signal` (a name such as `STOP`) to `pid` with the `kill` command.
async fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(|source| Error::Io {
            what: format!("running kill -{signal} {pid}"),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "kill -{signal} {pid} failed: {status}"
        )))
    }
}

/// How long a deleted pod has to stop.
fn grace_of(pod: &Pod) -> Duration {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .and_then(|s| u64::try_from(s).ok())
        .map_or(spec::DEFAULT_GRACE, Duration::from_secs)
}

impl Worker {
    pub(super) fn new(
        shared: Arc<Shared>,
        pod: &Pod,
        rx: watch::Receiver<Option<Arc<Pod>>>,
        faults: mpsc::Receiver<FaultRequest>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let obs = Observation::accepted(shared.host_ip, Timestamp::now());
        Self {
            uid: pod.uid().unwrap_or_default(),
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            shared,
            pod: rx,
            faults,
            stopping,
            obs,
            written: None,
            slot: None,
            addresses: None,
            proxy: None,
            child: None,
            pid: None,
            frozen: false,
            since: None,
            delay: None,
            start_at: None,
            hold_until: None,
            runs: 0,
            probe: None,
            probing_startup: false,
            successes: 0,
            failures: 0,
        }
    }

    /// Runs the pod until it ends here; returns its uid.
    pub(super) async fn run(mut self) -> String {
        let end = self.live().await;
        tracing::debug!(pod = %self.name, ?end, "pod ends on this kubelet");
        match end {
            End::Deleted => {
                let grace = self.current().map_or(spec::DEFAULT_GRACE, |p| grace_of(&p));
                self.terminate(grace, false).await;
                self.final_delete().await;
            }
            End::Gone => self.kill_now().await,
            End::Stop => {
                self.terminate(self.shared.config.stop_timeout, true).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), self.write_status()).await;
            }
        }
        self.cleanup().await;
        self.uid
    }

    fn current(&self) -> Option<Arc<Pod>> {
        self.pod.borrow().clone()
    }

    /// The end the latest pod object calls for, if any.
    fn ending(&self) -> Option<End> {
        match self.current() {
            None => Some(End::Gone),
            Some(p) if p.metadata.deletion_timestamp.is_some() => Some(End::Deleted),
            Some(_) => None,
        }
    }

    fn fail(&mut self, reason: &str, message: String) {
        tracing::warn!(pod = %self.name, reason, %message, "pod failed");
        self.obs.phase = Phase::Failed;
        self.obs.reason = Some(reason.into());
        self.obs.message = Some(message);
    }

    async fn live(&mut self) -> End {
        let Some(pod) = self.current() else {
            return End::Gone;
        };
        if let Some(end) = self.ending() {
            return end;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            // Finished before this kubelet saw it: nothing to run, only a deletion to await.
            self.written = Some(self.obs.clone());
            return self.idle().await;
        }
        let plan = match spec::plan(&pod) {
            Ok(plan) => plan,
            Err(message) => {
                self.fail("Unsupported", message);
                self.write_status().await;
                return self.idle().await;
            }
        };
        let Some(slot) = self.shared.slots.lock().allocate() else {
            self.fail(
                "OutOfpods",
                format!(
                    "node {} has no free pod address (at most {} pods)",
                    self.shared.config.node_name, self.shared.config.max_pods
                ),
            );
            self.write_status().await;
            return self.idle().await;
        };
        self.slot = Some(slot);
        let addresses = net::pod_addresses(self.shared.config.net, slot);
        self.addresses = Some(addresses);
        self.shared
            .update(&self.uid, |e| e.addresses = Some(addresses));
        self.obs.pod_ip = Some(addresses.ip);
        self.obs.container = Some(ContainerObservation {
            name: plan.name.clone(),
            image: plan.image.clone(),
            image_id: format!("box://{}", self.shared.config.node_binary.display()),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_state: None,
            ready: false,
            started: false,
            restart_count: 0,
        });
        match self.open_network(&plan, addresses).await {
            Ok(proxy) => self.proxy = Some(proxy),
            Err(e) => {
                self.fail("NetworkNotReady", e.to_string());
                self.write_status().await;
                return self.idle().await;
            }
        }
        self.write_status().await;
        self.start_at = Some(Instant::now());
        let mut tick = tokio::time::interval(self.shared.config.probe_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                exit = child_exit(&mut self.child) => Event::Exited(exit),
                () = until(self.start_at) => Event::Start,
                ok = probe_done(&mut self.probe) => Event::Probed(ok),
                _ = tick.tick() => Event::Tick,
                changed = self.pod.changed() => Event::Changed(changed.is_ok()),
                Some(request) = self.faults.recv() => Event::Fault(request),
                _ = self.stopping.wait_for(|s| *s) => Event::Stop,
            };
            match event {
                Event::Exited(exit) => self.exited(exit, &plan),
                Event::Start => {
                    self.start_at = None;
                    self.start_container(&plan).await;
                }
                Event::Probed(ok) => {
                    self.probe = None;
                    self.probed(ok, &plan);
                }
                Event::Tick => self.start_probe(&plan),
                Event::Changed(false) | Event::Stop => return End::Stop,
                Event::Changed(true) => {
                    if let Some(end) = self.ending() {
                        return end;
                    }
                }
                Event::Fault(request) => self.fault(request).await,
            }
            self.write_status().await;
        }
    }

    /// Binds the pod's proxy, retrying a little: the slot's previous pod may be closing its own.
    async fn open_network(&self, plan: &ContainerPlan, addresses: PodAddresses) -> Result<Proxy> {
        let max = self.shared.config.max_connections_per_pod;
        let mut attempt = 0;
        loop {
            match Proxy::start(addresses.ip, addresses.inner, &plan.ports, max).await {
                Ok(proxy) => return Ok(proxy),
                Err(e) if attempt >= 20 => return Err(e),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Waits, running nothing, for the pod's end; faults are refused.
    async fn idle(&mut self) -> End {
        loop {
            let event = tokio::select! {
                changed = self.pod.changed() => Event::Changed(changed.is_ok()),
                Some(request) = self.faults.recv() => Event::Fault(request),
                _ = self.stopping.wait_for(|s| *s) => Event::Stop,
            };
            match event {
                Event::Changed(true) => {
                    if let Some(end) = self.ending() {
                        return end;
                    }
                }
                Event::Fault(request) => self.fault(request).await,
                _ => return End::Stop,
            }
        }
    }

    fn container(&mut self) -> Option<&mut ContainerObservation> {
        self.obs.container.as_mut()
    }

    async fn start_container(&mut self, plan: &ContainerPlan) {
        let Some(pod) = self.current() else {
            return;
        };
        match self.spawn(&pod, plan).await {
            Ok(child) => {
                let now = Timestamp::now();
                let pid = child.id().unwrap_or_default();
                self.child = Some(child);
                self.pid = Some(pid);
                self.since = Some(Instant::now());
                self.frozen = false;
                self.successes = 0;
                self.failures = 0;
                let restarts = self.runs;
                self.runs += 1;
                self.shared.update(&self.uid, |e| e.pid = Some(pid));
                self.obs.phase = Phase::Running;
                let started = plan.startup.is_none();
                if let Some(c) = self.container() {
                    c.state = State::Running {
                        started_at: now,
                        pid,
                    };
                    c.restart_count = restarts;
                    c.started = started;
                }
                self.obs.set_ready(started && plan.readiness.is_none(), now);
                tracing::debug!(pod = %self.name, pid, restarts, "container started");
            }
            Err(StartError::Config(message)) => {
                tracing::debug!(pod = %self.name, %message, "container configuration incomplete");
                if let Some(c) = self.container() {
                    c.state = State::Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message: Some(message),
                    };
                }
                self.start_at = Some(Instant::now() + CONFIG_RETRY);
            }
            Err(StartError::Run(message)) => {
                tracing::warn!(pod = %self.name, %message, "container failed to start");
                if let Some(c) = self.container() {
                    c.state = State::Waiting {
                        reason: "RunContainerError".into(),
                        message: Some(message),
                    };
                }
                let delay = self.shared.config.backoff.next(self.delay, Duration::ZERO);
                self.delay = Some(delay);
                self.start_at = Some(Instant::now() + delay);
            }
        }
    }

    /// Reads the container's configuration through the API, lays out its volumes and starts
    /// its process.
    async fn spawn(&self, pod: &Pod, plan: &ContainerPlan) -> Result<Child, StartError> {
        let config = &self.shared.config;
        let client = self.shared.client.clone();
        let ns = self.namespace.as_str();
        let addresses = self
            .addresses
            .ok_or_else(|| StartError::Run("no pod address".into()))?;
        let (maps, secrets) = spec::env_sources(pod);
        let mut inputs = EnvInputs {
            pod_ip: addresses.ip.to_string(),
            host_ip: self.shared.host_ip.to_string(),
            node_name: config.node_name.clone(),
            ..EnvInputs::default()
        };
        let map_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        for name in maps {
            match map_api.get_opt(&name).await {
                Ok(Some(cm)) => {
                    inputs.config_maps.insert(name, cm);
                }
                Ok(None) => {}
                Err(e) => return Err(StartError::Config(format!("reading configmap {name}: {e}"))),
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(client.clone(), ns);
        for name in secrets {
            match secret_api.get_opt(&name).await {
                Ok(Some(s)) => {
                    inputs.secrets.insert(name, s);
                }
                Ok(None) => {}
                Err(e) => return Err(StartError::Config(format!("reading secret {name}: {e}"))),
            }
        }
        let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(client, ns);
        for mount in &plan.mounts {
            if let VolumeKind::Claim(claim) = &mount.kind {
                match claim_api.get_opt(claim).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(StartError::Config(format!(
                            "persistentvolumeclaim \"{claim}\" not found"
                        )));
                    }
                    Err(e) => {
                        return Err(StartError::Config(format!(
                            "reading persistentvolumeclaim {claim}: {e}"
                        )));
                    }
                }
            }
        }
        let env = spec::resolve_env(pod, &inputs).map_err(StartError::Config)?;
        let root = &config.root;
        let pod_dir = spec::pod_dir(root, ns, &self.name, &self.uid);
        let mut mounts = Vec::new();
        for mount in &plan.mounts {
            let host = spec::host_dir(root, ns, &self.name, &self.uid, mount);
            mounts.push((mount.mount_path.clone(), host));
        }
        for dir in std::iter::once(&pod_dir).chain(mounts.iter().map(|(_, h)| h)) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StartError::Run(format!("creating {}: {e}", dir.display())))?;
        }
        let inner = addresses.inner;
        let args: Vec<String> = plan
            .args
            .iter()
            .map(|a| spec::rewrite(&spec::expand(a, &env), inner, &mounts))
            .collect();
        let log = log_path(root, ns, &self.name, self.runs);
        let out = std::fs::File::create(&log)
            .map_err(|e| StartError::Run(format!("creating {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| StartError::Run(format!("opening {}: {e}", log.display())))?;
        let mut command = Command::new(&config.node_binary);
        command
            .args(&args)
            .env_clear()
            .envs(&config.image_env)
            .env("HOSTNAME", &self.name)
            .envs(
                env.iter()
                    .map(|(k, v)| (k, spec::rewrite(v, inner, &mounts))),
            )
            .current_dir(&pod_dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        command
            .spawn()
            .map_err(|e| StartError::Run(format!("starting {}: {e}", config.node_binary.display())))
    }

    fn exited(&mut self, exit: std::io::Result<ExitStatus>, plan: &ContainerPlan) {
        let now = Timestamp::now();
        self.child = None;
        self.pid = None;
        self.frozen = false;
        self.probe = None;
        self.shared.update(&self.uid, |e| e.pid = None);
        let ran = self.since.take().map_or(Duration::ZERO, |s| s.elapsed());
        let (exit_code, signal, success) = match &exit {
            Ok(status) => (
                status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                status.signal(),
                status.success(),
            ),
            Err(_) => (255, None, false),
        };
        tracing::info!(pod = %self.name, exit_code, ?signal, "container exited");
        let started_at = match self.obs.container.as_ref().map(|c| &c.state) {
            Some(State::Running { started_at, .. }) => Some(*started_at),
            _ => None,
        };
        let terminated = Terminated {
            exit_code,
            signal,
            reason: if success { "Completed" } else { "Error" }.into(),
            started_at,
            finished_at: now,
        };
        self.obs.set_ready(false, now);
        let restart = plan.restart.restarts(success);
        let delay = self.shared.config.backoff.next(self.delay, ran);
        if let Some(c) = self.container() {
            c.started = false;
            if restart {
                c.last_state = Some(terminated);
                c.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(format!(
                        "back-off {delay:?} restarting failed container {}",
                        c.name
                    )),
                };
            } else {
                c.state = State::Terminated(terminated);
            }
        }
        if restart {
            self.delay = Some(delay);
            let at = Instant::now() + delay;
            self.start_at = Some(self.hold_until.take().map_or(at, |hold| hold.max(at)));
        } else {
            self.obs.phase = if success {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
        }
    }

    fn start_probe(&mut self, plan: &ContainerPlan) {
        if self.probe.is_some() || self.child.is_none() {
            return;
        }
        let Some(addresses) = self.addresses else {
            return;
        };
        let started = self.obs.container.as_ref().is_some_and(|c| c.started);
        let (probe, startup): (&HttpProbe, bool) = match (&plan.startup, &plan.readiness) {
            (Some(p), _) if !started => (p, true),
            (_, Some(p)) => (p, false),
            _ => return,
        };
        let addr = SocketAddr::from((addresses.inner, probe.port));
        let path = probe.path.clone();
        let timeout = probe.timeout.min(self.shared.config.probe_timeout);
        self.probing_startup = startup;
        self.probe = Some(Box::pin(async move {
            probe::http_get(addr, &path, timeout).await
        }));
    }

    fn probed(&mut self, ok: bool, plan: &ContainerPlan) {
        if self.child.is_none() {
            return;
        }
        let now = Timestamp::now();
        if self.probing_startup {
            if ok {
                if let Some(c) = self.container() {
                    c.started = true;
                }
                if plan.readiness.is_none() {
                    self.obs.set_ready(true, now);
                }
            }
            return;
        }
        let Some(readiness) = &plan.readiness else {
            return;
        };
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= readiness.success_threshold {
                self.obs.set_ready(true, now);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= readiness.failure_threshold {
                self.obs.set_ready(false, now);
            }
        }
    }

    async fn fault(&mut self, request: FaultRequest) {
        let no_process = || {
            Error::Invalid(format!(
                "pod {}/{} has no running process",
                self.namespace, self.name
            ))
        };
        let result = match (request.fault, self.child.as_mut(), self.pid) {
            (Fault::Kill, Some(child), _) => child.start_kill().map_err(|source| Error::Io {
                what: format!("killing pod {}/{}", self.namespace, self.name),
                source,
            }),
            (Fault::KillFor(down_for), Some(child), _) => {
                self.hold_until = Some(Instant::now() + down_for);
                child.start_kill().map_err(|source| Error::Io {
                    what: format!("killing pod {}/{}", self.namespace, self.name),
                    source,
                })
            }
            (Fault::Freeze, Some(_), Some(pid)) => {
                let sent = signal(pid, "STOP").await;
                self.frozen |= sent.is_ok();
                sent
            }
            (Fault::Thaw, Some(_), Some(pid)) => {
                let sent = signal(pid, "CONT").await;
                self.frozen &= sent.is_err();
                sent
            }
            (Fault::Kill | Fault::KillFor(_) | Fault::Freeze | Fault::Thaw, _, _) => {
                Err(no_process())
            }
            (Fault::Cut | Fault::Heal, _, _) => match &self.proxy {
                Some(proxy) if request.fault == Fault::Cut => {
                    proxy.cut().await;
                    Ok(())
                }
                Some(proxy) => {
                    proxy.heal();
                    Ok(())
                }
                None => Err(Error::Invalid(format!(
                    "pod {}/{} has no network on this kubelet",
                    self.namespace, self.name
                ))),
            },
        };
        tracing::info!(pod = %self.name, fault = ?request.fault, ok = result.is_ok(), "fault");
        let _ = request.reply.send(result);
    }

    /// Stops the process: SIGTERM (and SIGCONT when `thaw`, so a frozen process can act on
    /// it), SIGKILL after `grace`. A shorter grace from a second delete, or the pod vanishing,
    /// shortens the wait; a stopping kubelet caps it at its stop timeout.
    async fn terminate(&mut self, grace: Duration, thaw: bool) {
        self.start_at = None;
        self.probe = None;
        let Some(pid) = self.pid else {
            return;
        };
        if let Err(e) = signal(pid, "TERM").await {
            tracing::warn!(pod = %self.name, error = %e, "SIGTERM failed");
        }
        if thaw && self.frozen {
            let _ = signal(pid, "CONT").await;
        }
        let mut deadline = Instant::now() + grace;
        let mut watching = true;
        let mut stop_seen = *self.stopping.borrow();
        loop {
            let event = tokio::select! {
                exit = child_exit(&mut self.child) => Event::Exited(exit),
                () = tokio::time::sleep_until(deadline) => Event::Start,
                changed = self.pod.changed(), if watching => Event::Changed(changed.is_ok()),
                Some(request) = self.faults.recv() => Event::Fault(request),
                _ = self.stopping.wait_for(|s| *s), if !stop_seen => Event::Stop,
            };
            match event {
                Event::Exited(exit) => {
                    self.stopped(exit);
                    return;
                }
                // The deadline passed.
                Event::Start => break,
                Event::Changed(ok) => match self.current().filter(|_| ok) {
                    Some(pod) => {
                        if pod.metadata.deletion_timestamp.is_some() {
                            deadline = deadline.min(Instant::now() + grace_of(&pod));
                        }
                    }
                    None => {
                        watching = false;
                        deadline = Instant::now();
                    }
                },
                Event::Fault(request) => self.fault(request).await,
                Event::Stop => {
                    stop_seen = true;
                    deadline = deadline.min(Instant::now() + self.shared.config.stop_timeout);
                    if self.frozen {
                        let _ = signal(pid, "CONT").await;
                    }
                }
                Event::Probed(_) | Event::Tick => {}
            }
        }
        self.kill_now().await;
    }

    /// SIGKILLs the process, if any, and reaps it.
    async fn kill_now(&mut self) {
        self.start_at = None;
        self.probe = None;
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
            let exit = tokio::time::timeout(REAP_TIMEOUT, child.wait()).await;
            match exit {
                Ok(exit) => self.stopped(exit),
                Err(_) => {
                    tracing::warn!(pod = %self.name, "a killed process was not reaped in time");
                    self.child = None;
                }
            }
        }
    }

    /// Records the process's final exit.
    fn stopped(&mut self, exit: std::io::Result<ExitStatus>) {
        let now = Timestamp::now();
        self.child = None;
        self.pid = None;
        self.shared.update(&self.uid, |e| e.pid = None);
        let (exit_code, signal) = match &exit {
            Ok(status) => (
                status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                status.signal(),
            ),
            Err(_) => (255, None),
        };
        self.obs.set_ready(false, now);
        let started_at = match self.obs.container.as_ref().map(|c| &c.state) {
            Some(State::Running { started_at, .. }) => Some(*started_at),
            _ => None,
        };
        if let Some(c) = self.container() {
            c.started = false;
            c.state = State::Terminated(Terminated {
                exit_code,
                signal,
                reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
                started_at,
                finished_at: now,
            });
        }
    }

    /// The real kubelet's last word on a deleted pod: delete it with grace 0, for this uid only.
    async fn final_delete(&self) {
        let api = self.shared.pods_api(&self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        for attempt in 0..DELETE_ATTEMPTS {
            match api.delete(&self.name, &params).await {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(e) => {
                    tracing::warn!(pod = %self.name, attempt, error = %e, "final delete failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Releases everything the pod held: its proxy, address, emptyDirs and handle entry.
    async fn cleanup(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            proxy.close().await;
        }
        if let Some(slot) = self.slot.take() {
            self.shared.slots.lock().release(slot);
        }
        let dir = spec::pod_dir(
            &self.shared.config.root,
            &self.namespace,
            &self.name,
            &self.uid,
        );
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "removing a pod directory failed");
        }
        self.shared.pods.lock().remove(&self.uid);
    }

    /// Writes the pod status if the observation changed since the last write.
    async fn write_status(&mut self) {
        if self.written.as_ref() == Some(&self.obs) {
            return;
        }
        let mut status = match serde_json::to_value(pod_status(&self.obs)) {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "encoding pod status failed");
                return;
            }
        };
        if let Some(fields) = status.as_object_mut() {
            // A merge patch only clears what it names.
            for key in ["reason", "message"] {
                fields.entry(key).or_insert(serde_json::Value::Null);
            }
        }
        let patch = serde_json::json!({
            "metadata": { "uid": self.uid },
            "status": status,
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let api = self.shared.pods_api(&self.namespace);
        match api
            .patch_status(&self.name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.written = Some(self.obs.clone()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                // Gone (or replaced by a pod of the same name): nothing more to report.
                self.written = Some(self.obs.clone());
            }
            Err(e) => {
                tracing::debug!(pod = %self.name, error = %e, "writing pod status failed; retrying");
            }
        }
    }
}
