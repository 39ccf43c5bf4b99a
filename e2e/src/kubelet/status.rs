//! Pod status from what the kubelet observed, as a pure function: the worker keeps an
//! [`Observation`] up to date, and writes [`pod_status`] of it only when the observation
//! changed, so the API sees a write per real change (and every transition keeps its time).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::net::Ipv4Addr;

/// The pod's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, the container not started yet.
    Pending,
    /// The container started (it may be restarting).
    Running,
    /// The container exited successfully and will not restart.
    Succeeded,
    /// The pod cannot run, or its container failed and will not restart.
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

/// A condition's value and when it last changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Whether the condition holds.
    pub status: bool,
    /// When it last changed.
    pub since: Timestamp,
}

impl Transition {
    /// `status` since `now`.
    pub fn new(status: bool, now: Timestamp) -> Self {
        Self { status, since: now }
    }

    /// Sets the condition to `status`, moving its time only if it changes.
    pub fn set(&mut self, status: bool, now: Timestamp) {
        if self.status != status {
            *self = Self::new(status, now);
        }
    }
}

/// How a container's process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    /// The exit code (128 + signal when killed by one, as container runtimes report).
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// `Completed` or `Error`.
    pub reason: String,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Timestamp,
}

/// A container's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not running: why.
    Waiting {
        /// A CamelCase reason (`ContainerCreating`, `CrashLoopBackOff`,
        /// `CreateContainerConfigError`, ...).
        reason: String,
        /// Details.
        message: Option<String>,
    },
    /// Running since.
    Running {
        /// When the process started.
        started_at: Timestamp,
        /// Its process id, reported as the container id `box://<pid>`.
        pid: u32,
    },
    /// Ended and not restarting.
    Terminated(Terminated),
}

/// What the kubelet knows of the pod's one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerObservation {
    /// The container's name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// What the image resolved to (the binary).
    pub image_id: String,
    /// Its state.
    pub state: State,
    /// How its previous run ended.
    pub last_state: Option<Terminated>,
    /// Whether its readiness probe passes.
    pub ready: bool,
    /// Whether it has started (and passed its startup probe).
    pub started: bool,
    /// How many times it was restarted.
    pub restart_count: i32,
}

/// Everything the pod's status is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The phase.
    pub phase: Phase,
    /// Why the pod is in it (for Failed).
    pub reason: Option<String>,
    /// Details.
    pub message: Option<String>,
    /// The node's IP.
    pub host_ip: Option<Ipv4Addr>,
    /// The pod IP.
    pub pod_ip: Option<Ipv4Addr>,
    /// When the kubelet accepted the pod.
    pub start_time: Option<Timestamp>,
    /// PodScheduled.
    pub scheduled: Transition,
    /// Initialized (no init containers: true once accepted).
    pub initialized: Transition,
    /// ContainersReady.
    pub containers_ready: Transition,
    /// Ready.
    pub ready: Transition,
    /// The container, once known.
    pub container: Option<ContainerObservation>,
}

impl Observation {
    /// A pod just accepted at `now`: Pending, scheduled and initialized, nothing ready.
    pub fn accepted(host_ip: Ipv4Addr, now: Timestamp) -> Self {
        Self {
            phase: Phase::Pending,
            reason: None,
            message: None,
            host_ip: Some(host_ip),
            pod_ip: None,
            start_time: Some(now),
            scheduled: Transition::new(true, now),
            initialized: Transition::new(true, now),
            containers_ready: Transition::new(false, now),
            ready: Transition::new(false, now),
            container: None,
        }
    }

    /// Sets readiness of the container and the pod's conditions with it.
    pub fn set_ready(&mut self, ready: bool, now: Timestamp) {
        if let Some(c) = self.container.as_mut() {
            c.ready = ready;
        }
        self.containers_ready.set(ready, now);
        self.ready.set(ready, now);
    }
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        started_at: t.started_at.map(time),
        finished_at: Some(time(t.finished_at)),
        ..ContainerStateTerminated::default()
    }
}

fn condition(type_: &str, t: Transition, reason: Option<&str>) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if t.status { "True" } else { "False" }.into(),
        last_transition_time: Some(time(t.since)),
        reason: if t.status {
            None
        } else {
            reason.map(Into::into)
        },
        ..PodCondition::default()
    }
}

/// The pod status for `o`.
pub fn pod_status(o: &Observation) -> PodStatus {
    let not_ready = o.container.as_ref().map(|_| "ContainersNotReady");
    let container_statuses = o.container.as_ref().map(|c| {
        let state = match &c.state {
            State::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            State::Running { started_at, .. } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time(*started_at)),
                }),
                ..ContainerState::default()
            },
            State::Terminated(t) => ContainerState {
                terminated: Some(terminated(t)),
                ..ContainerState::default()
            },
        };
        let container_id = match &c.state {
            State::Running { pid, .. } => Some(format!("box://{pid}")),
            _ => None,
        };
        vec![ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone(),
            image_id: c.image_id.clone(),
            container_id,
            ready: c.ready,
            started: Some(c.started),
            restart_count: c.restart_count,
            state: Some(state),
            last_state: Some(
                c.last_state
                    .as_ref()
                    .map_or_else(ContainerState::default, |t| ContainerState {
                        terminated: Some(terminated(t)),
                        ..ContainerState::default()
                    }),
            ),
            ..ContainerStatus::default()
        }]
    });
    PodStatus {
        phase: Some(o.phase.as_str().into()),
        reason: o.reason.clone(),
        message: o.message.clone(),
        host_ip: o.host_ip.map(|ip| ip.to_string()),
        host_ips: o.host_ip.map(|ip| vec![HostIP { ip: ip.to_string() }]),
        pod_ip: o.pod_ip.map(|ip| ip.to_string()),
        pod_ips: o.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: o.start_time.map(time),
        conditions: Some(vec![
            condition("PodScheduled", o.scheduled, None),
            condition("Initialized", o.initialized, None),
            condition("ContainersReady", o.containers_ready, not_ready),
            condition("Ready", o.ready, not_ready),
        ]),
        container_statuses,
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn running() -> Observation {
        let mut o = Observation::accepted(Ipv4Addr::new(127, 1, 2, 128), at(0));
        o.phase = Phase::Running;
        o.pod_ip = Some(Ipv4Addr::new(127, 1, 2, 1));
        o.container = Some(ContainerObservation {
            name: "node".into(),
            image: "partita-node:dev".into(),
            image_id: "box:///bin/partita-node".into(),
            state: State::Running {
                started_at: at(1),
                pid: 42,
            },
            last_state: None,
            ready: false,
            started: true,
            restart_count: 0,
        });
        o
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn readiness_moves_conditions_with_their_times() {
        let mut o = running();
        let s = pod_status(&o);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("127.1.2.1"));
        assert_eq!(s.host_ip.as_deref(), Some("127.1.2.128"));
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").reason.as_deref(),
            Some("ContainersNotReady")
        );
        o.set_ready(true, at(5));
        let before = o.clone();
        o.set_ready(true, at(9));
        assert_eq!(o, before, "setting the same value changes nothing");
        let s = pod_status(&o);
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(Time(at(5))));
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        let c = &s.container_statuses.unwrap()[0];
        assert!(c.ready);
        assert_eq!(c.container_id.as_deref(), Some("box://42"));
        assert!(c.state.as_ref().unwrap().running.is_some());
    }

    #[test]
    fn a_restart_reports_the_last_state() {
        let mut o = running();
        let c = o.container.as_mut().unwrap();
        c.last_state = Some(Terminated {
            exit_code: 137,
            signal: Some(9),
            reason: "Error".into(),
            started_at: Some(at(1)),
            finished_at: at(3),
        });
        c.state = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        };
        c.restart_count = 1;
        let s = pod_status(&o);
        let c = &s.container_statuses.unwrap()[0];
        assert_eq!(c.restart_count, 1);
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 137);
        assert_eq!(
            c.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
    }

    #[test]
    fn failed_pod_says_why() {
        let mut o = Observation::accepted(Ipv4Addr::new(127, 1, 2, 128), at(0));
        o.phase = Phase::Failed;
        o.reason = Some("Unsupported".into());
        o.message = Some("image \"nginx\" is not a partita-node image".into());
        let s = pod_status(&o);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert!(s.message.unwrap().contains("nginx"));
        assert!(s.container_statuses.is_none());
        assert!(s.pod_ip.is_none());
    }
}
