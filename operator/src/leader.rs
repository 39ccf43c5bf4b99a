//! Leader election on a `coordination.k8s.io` Lease, so that two operator replicas never act at
//! once.
//!
//! Why not the `kube-lease-manager` crate, which does support kube 5: when it cannot reach the
//! API server, its watch loop logs the error and retries without ever reporting the lease as
//! lost, so a leader cut off from the API server keeps acting after its lease has expired and
//! another replica has taken over. Stepping down on loss is the property that matters here, so
//! this module does it the way client-go's leader election does:
//!
//! - **Acquire** a free, released or expired lease, and **renew** it every retry period with an
//!   update guarded by `resourceVersion`, so two contenders can never both win one round.
//! - **Expire** another holder's lease by the local clock: it is expired once its record has not
//!   changed for its lease duration since this replica saw it change. No clocks are compared.
//! - **Step down** when no renewal has succeeded for the renew deadline (shorter than the lease
//!   duration), timed from when the last successful renewal was *sent*. A partitioned leader
//!   stops acting before any other replica may consider the lease expired.
//! - **Release** on graceful shutdown, so a standby takes over at once.
//!
//! [`Elector`] holds the decisions and is pure: it takes observations and the time and returns
//! what to do. [`run`] is the thin loop that executes them.

use crate::error::{Error, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

/// The timings of an election. `retry_period < renew_deadline < lease_duration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease lasts without renewal, as written in the Lease.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the lease is checked and renewed.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// client-go's defaults: 15s, 10s, 2s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// Checks the ordering the safety argument needs, and that a healthy leader can renew
    /// before its deadline: one attempt waits a retry period and then reads and writes the
    /// Lease, each call bounded by a retry period, so the deadline must exceed three of them or
    /// a slow API server would make the leader step down and come back on every cycle.
    pub fn check(&self) -> Result<()> {
        if !(self.retry_period * 3 < self.renew_deadline
            && self.renew_deadline < self.lease_duration)
            || self.lease_duration < Duration::from_secs(1)
            || self.lease_duration.subsec_nanos() != 0
        {
            return Err(Error::Config(format!(
                "leader election needs 3 x retry period ({:?}) < renew deadline ({:?}) < lease duration ({:?}), and a lease of whole seconds (a Lease records only seconds)",
                self.retry_period, self.renew_deadline, self.lease_duration
            )));
        }
        Ok(())
    }
}

/// The parts of a Lease that matter to the election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Who holds it; `None` when free or released.
    pub holder: Option<String>,
    /// The holder's lease duration.
    pub duration: Duration,
    /// How many times it changed hands.
    pub transitions: i32,
    /// The resourceVersion, which changes on every write.
    pub version: String,
}

impl Record {
    /// Reads a Lease.
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            duration: Duration::from_secs(
                spec.lease_duration_seconds
                    .unwrap_or(0)
                    .max(0)
                    .unsigned_abs()
                    .into(),
            ),
            transitions: spec.lease_transitions.unwrap_or(0),
            version: lease.metadata.resource_version.clone().unwrap_or_default(),
        }
    }
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists: create one that this replica holds.
    Create,
    /// Take over the lease (it is free, released or expired): one more transition.
    Acquire,
    /// This replica holds the lease: renew it.
    Renew,
    /// Another replica holds a live lease: look again after this long.
    Wait(Duration),
}

/// The pure state of one contender.
#[derive(Clone, Debug)]
pub struct Elector {
    identity: String,
    timing: Timing,
    /// The last record seen, and when it was first seen.
    seen: Option<(Record, Instant)>,
    /// When the last successful write of ours as holder was sent.
    renewed: Option<Instant>,
}

impl Elector {
    /// A contender called `identity`.
    pub fn new(identity: impl Into<String>, timing: Timing) -> Self {
        Self {
            identity: identity.into(),
            timing,
            seen: None,
            renewed: None,
        }
    }

    /// This contender's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Notes the record read at `now` (`None`: no Lease exists) and decides what to do.
    pub fn observe(&mut self, record: Option<&Record>, now: Instant) -> Step {
        let Some(record) = record else {
            self.seen = None;
            self.renewed = None;
            return Step::Create;
        };
        if self.seen.as_ref().is_none_or(|(r, _)| r != record) {
            self.seen = Some((record.clone(), now));
        }
        match record.holder.as_deref() {
            Some(h) if h == self.identity => Step::Renew,
            None => {
                self.renewed = None;
                Step::Acquire
            }
            Some(_) => {
                // Someone else holds it: whatever we thought, we do not lead.
                self.renewed = None;
                let since = self.seen.as_ref().map_or(now, |(_, at)| *at);
                let expires = since + record.duration;
                if now >= expires {
                    Step::Acquire
                } else {
                    Step::Wait((expires - now).min(self.timing.retry_period))
                }
            }
        }
    }

    /// Our write as holder, sent at `sent`, succeeded and produced `record`.
    pub fn written(&mut self, record: Record, sent: Instant) {
        self.seen = Some((record, sent));
        self.renewed = Some(sent);
    }

    /// Our write failed (a conflict or an error): nothing changes but the clock.
    pub fn failed(&mut self) {}

    /// Until when this contender may act, if it leads at all.
    pub fn deadline(&self) -> Option<Instant> {
        self.renewed.map(|at| at + self.timing.renew_deadline)
    }

    /// Whether this contender may act at `now`.
    pub fn leading(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now < d)
    }

    /// The Lease this contender writes for `step`, based on `current` (absent for a create).
    pub fn lease(
        &self,
        step: &Step,
        name: &str,
        current: Option<&Lease>,
        now: jiff::Timestamp,
    ) -> Lease {
        let mut lease = current.cloned().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let mut spec = lease.spec.take().unwrap_or_default();
        let micro = MicroTime(now);
        let seconds = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        match step {
            Step::Create | Step::Acquire => {
                spec = LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(micro.clone()),
                    renew_time: Some(micro),
                    lease_transitions: Some(match step {
                        Step::Create => 0,
                        _ => spec.lease_transitions.unwrap_or(0) + 1,
                    }),
                    ..spec
                };
            }
            Step::Renew => {
                spec.renew_time = Some(micro);
                spec.lease_duration_seconds = Some(seconds);
            }
            Step::Wait(_) => {}
        }
        lease.spec = Some(spec);
        lease
    }
}

/// Where the Lease lives and who is contending.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity (normally its pod name).
    pub identity: String,
    /// Timings.
    pub timing: Timing,
}

/// Runs the election until `shutdown` completes, publishing on `leading` whether this replica
/// may act. On shutdown a held lease is released. Errors talking to the API server are retried;
/// they only ever cost the lead, never hand it to two replicas.
pub async fn run(
    client: Client,
    config: Config,
    leading: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    config.timing.check()?;
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut elector = Elector::new(config.identity.clone(), config.timing);
    let retry = config.timing.retry_period;
    tokio::pin!(shutdown);
    loop {
        let deadline = elector.deadline();
        let wait = {
            let round = round(&api, &config.name, &mut elector, retry);
            tokio::pin!(round);
            tokio::select! {
                wait = &mut round => wait,
                () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    // The renewal is overdue: stop acting now, while the round goes on.
                    publish(&leading, false, &config.identity);
                    round.await
                }
                () = &mut shutdown => break,
            }
        };
        publish(&leading, elector.leading(Instant::now()), &config.identity);
        let next = Instant::now() + wait;
        let deadline = elector.deadline().filter(|d| *d < next);
        tokio::select! {
            () = sleep_until(next) => {}
            () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                publish(&leading, false, &config.identity);
                sleep_until(next).await;
            }
            () = &mut shutdown => break,
        }
    }
    if elector.leading(Instant::now()) {
        publish(&leading, false, &config.identity);
        release(&api, &config.name, &elector, retry).await;
    }
    leading.send_replace(false);
    Ok(())
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

fn publish(leading: &watch::Sender<bool>, now: bool, identity: &str) {
    let before = leading.send_replace(now);
    if before != now {
        if now {
            tracing::info!(identity, "became the leader");
        } else {
            tracing::warn!(identity, "stopped leading");
        }
    }
}

/// One look at the Lease and the write it calls for. Returns how long to wait before the next.
async fn round(api: &Api<Lease>, name: &str, elector: &mut Elector, retry: Duration) -> Duration {
    let read = match timeout(retry, api.get_opt(name)).await {
        Ok(Ok(lease)) => lease,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reading the leader lease failed");
            return retry;
        }
        Err(_) => {
            tracing::warn!("reading the leader lease timed out");
            return retry;
        }
    };
    let step = elector.observe(read.as_ref().map(Record::of).as_ref(), Instant::now());
    if let Step::Wait(wait) = step {
        return wait;
    }
    let lease = elector.lease(&step, name, read.as_ref(), jiff::Timestamp::now());
    let sent = Instant::now();
    let write = async {
        match step {
            Step::Create => api.create(&PostParams::default(), &lease).await,
            _ => api.replace(name, &PostParams::default(), &lease).await,
        }
    };
    match timeout(retry, write).await {
        Ok(Ok(written)) => elector.written(Record::of(&written), sent),
        Ok(Err(kube::Error::Api(e))) if e.code == 409 => {
            tracing::debug!("another replica wrote the lease first");
            elector.failed();
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "writing the leader lease failed");
            elector.failed();
        }
        Err(_) => {
            tracing::warn!("writing the leader lease timed out");
            elector.failed();
        }
    }
    retry
}

/// Gives the lease up so that a standby need not wait for it to expire.
async fn release(api: &Api<Lease>, name: &str, elector: &Elector, retry: Duration) {
    let Ok(Ok(Some(mut lease))) = timeout(retry, api.get_opt(name)).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(elector.identity()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
    spec.lease_duration_seconds = Some(1);
    match timeout(retry, api.replace(name, &PostParams::default(), &lease)).await {
        Ok(Ok(_)) => tracing::info!("released the leader lease"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "releasing the leader lease failed; it will expire")
        }
        Err(_) => tracing::warn!("releasing the leader lease timed out; it will expire"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
    fn record(holder: Option<&str>, version: &str) -> Record {
        Record {
            holder: holder.map(String::from),
            duration: Duration::from_secs(15),
            transitions: 0,
            version: version.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn another_holder_expires_by_our_clock_only_after_its_record_stops_changing() {
        let t0 = Instant::now();
        let mut e = Elector::new("b", timing());
        assert_eq!(
            e.observe(Some(&record(Some("a"), "1")), t0),
            Step::Wait(Duration::from_secs(2))
        );
        // Renewed at t0+10s: the 15s start again from when we saw it change.
        let t10 = t0 + Duration::from_secs(10);
        assert!(matches!(
            e.observe(Some(&record(Some("a"), "2")), t10),
            Step::Wait(_)
        ));
        assert!(
            matches!(e.observe(Some(&record(Some("a"), "2")), t0 + Duration::from_secs(24)), Step::Wait(d) if d == Duration::from_secs(1))
        );
        assert_eq!(
            e.observe(Some(&record(Some("a"), "2")), t0 + Duration::from_secs(25)),
            Step::Acquire
        );
        assert!(!e.leading(t0 + Duration::from_secs(25)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_acts_only_until_its_renew_deadline_and_never_past_its_lease() {
        let t0 = Instant::now();
        let mut e = Elector::new("a", timing());
        assert_eq!(e.observe(None, t0), Step::Create);
        e.written(record(Some("a"), "1"), t0);
        assert!(e.leading(t0 + Duration::from_secs(9)));
        assert!(
            !e.leading(t0 + Duration::from_secs(10)),
            "steps down at the renew deadline"
        );
        assert_eq!(
            e.observe(Some(&record(Some("a"), "1")), t0 + Duration::from_secs(11)),
            Step::Renew
        );
        // Someone else took it over: not leading, at once.
        e.written(record(Some("a"), "2"), t0 + Duration::from_secs(11));
        assert!(matches!(
            e.observe(Some(&record(Some("b"), "3")), t0 + Duration::from_secs(12)),
            Step::Wait(_)
        ));
        assert!(!e.leading(t0 + Duration::from_secs(12)));
        // Released: acquire at once.
        assert_eq!(
            e.observe(Some(&record(None, "4")), t0 + Duration::from_secs(13)),
            Step::Acquire
        );
    }

    #[test]
    fn leases_written_carry_holder_times_and_transitions() {
        let e = Elector::new("a", timing());
        let now = jiff::Timestamp::from_second(1_000).unwrap();
        let created = e.lease(&Step::Create, "partita-operator", None, now);
        let spec = created.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        let taken = e.lease(&Step::Acquire, "partita-operator", Some(&created), now);
        assert_eq!(taken.spec.unwrap().lease_transitions, Some(1));
        assert!(timing().check().is_ok());
        let bad = Timing {
            renew_deadline: Duration::from_secs(20),
            ..timing()
        };
        assert!(bad.check().is_err());
        let no_room_to_renew = Timing {
            retry_period: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(5),
            ..timing()
        };
        assert!(no_room_to_renew.check().is_err());
    }
}
