//! Leader election: two contenders on one Lease, through the in-memory API server. Only one
//! acts at a time; the other takes over when the leader crashes (after the lease expires),
//! is cut off from the API server (the leader stops first), or shuts down (at once).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{FakeApi, wait_until};
use k8s_openapi::api::coordination::v1::Lease;
use partita_operator::leader::{self, Timing};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TIMING: Timing = Timing {
    lease_duration: Duration::from_secs(2),
    renew_deadline: Duration::from_millis(1200),
    retry_period: Duration::from_millis(200),
};

/// Counts contenders acting at once, and remembers the most ever seen.
#[derive(Default)]
struct Acting {
    now: AtomicUsize,
    most: AtomicUsize,
}

struct Contender {
    leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    election: JoinHandle<()>,
    actor: JoinHandle<()>,
    /// When this contender started acting, each time.
    started: Arc<Mutex<Vec<Instant>>>,
    client_id: usize,
    identity: String,
}

impl Contender {
    fn start(api: &FakeApi, identity: &str, acting: Arc<Acting>) -> Self {
        let (client, client_id) = api.client_with_id();
        let (tx, leading) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let config = leader::Config {
            name: "partita-operator-leader".into(),
            namespace: "partita-system".into(),
            identity: identity.into(),
            timing: TIMING,
        };
        let election = tokio::spawn(async move {
            let mut stop_rx = stop_rx;
            let stopped = async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            leader::run(client, config, tx, stopped).await.unwrap();
        });
        // The "actor" does what the controller would: it acts exactly while the election says
        // this contender leads.
        let started = Arc::new(Mutex::new(Vec::new()));
        let mut rx = leading.clone();
        let log = started.clone();
        let actor = tokio::spawn(async move {
            loop {
                if rx.wait_for(|l| *l).await.is_err() {
                    return;
                }
                log.lock().unwrap().push(Instant::now());
                let n = acting.now.fetch_add(1, Ordering::SeqCst) + 1;
                acting.most.fetch_max(n, Ordering::SeqCst);
                let _ = rx.wait_for(|l| !*l).await;
                acting.now.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Self {
            leading,
            stop,
            election,
            actor,
            started,
            client_id,
            identity: identity.into(),
        }
    }

    fn leads(&self) -> bool {
        *self.leading.borrow()
    }

    /// Stops as if the process were killed: no release, no more renewals.
    fn crash(&self, acting: &Acting) {
        self.election.abort();
        self.actor.abort();
        if self.leads() {
            acting.now.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn holder(api: &FakeApi) -> Option<String> {
    api.get::<Lease>("partita-system", "partita-operator-leader")?
        .spec?
        .holder_identity
}

async fn two(api: &FakeApi, acting: &Arc<Acting>) -> (Contender, Contender) {
    let a = Contender::start(api, "operator-a", acting.clone());
    let b = Contender::start(api, "operator-b", acting.clone());
    wait_until("one contender to lead", Duration::from_secs(10), || {
        a.leads() || b.leads()
    })
    .await;
    // Hold for several renewals: the lead must stay put, never shared.
    let first = if a.leads() {
        "operator-a"
    } else {
        "operator-b"
    };
    tokio::time::sleep(TIMING.lease_duration * 2).await;
    assert_eq!(
        holder(api).as_deref(),
        Some(first),
        "the lead moved while its holder was healthy"
    );
    assert_eq!(a.leads() as u8 + b.leads() as u8, 1);
    if a.leads() { (a, b) } else { (b, a) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_acts_and_the_other_takes_over_after_a_crash_once_the_lease_expires() {
    let api = FakeApi::new();
    let acting = Arc::new(Acting::default());
    let (leader, standby) = two(&api, &acting).await;

    let crashed_at = Instant::now();
    leader.crash(&acting);
    wait_until("the standby to take over", Duration::from_secs(10), || {
        standby.leads()
    })
    .await;
    let took = standby.started.lock().unwrap()[0] - crashed_at;
    // The last renewal was at most one retry period before the crash; the standby may only
    // take over once the lease has gone unrenewed for its whole duration.
    assert!(
        took >= TIMING.lease_duration - TIMING.retry_period,
        "took over {took:?} after the crash, before the lease could expire"
    );
    assert_eq!(holder(&api), Some(standby.identity.clone()));
    assert_eq!(
        acting.most.load(Ordering::SeqCst),
        1,
        "two contenders acted at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_other_starts() {
    let api = FakeApi::new();
    let acting = Arc::new(Acting::default());
    let (leader, standby) = two(&api, &acting).await;

    let cut_at = Instant::now();
    api.set_down(leader.client_id, true);
    wait_until(
        "the cut-off leader to step down",
        Duration::from_secs(10),
        || !leader.leads(),
    )
    .await;
    let stepped_down = cut_at.elapsed();
    wait_until("the standby to take over", Duration::from_secs(10), || {
        standby.leads()
    })
    .await;
    assert!(
        stepped_down <= TIMING.renew_deadline + TIMING.retry_period,
        "stepped down only after {stepped_down:?}"
    );
    assert_eq!(
        acting.most.load(Ordering::SeqCst),
        1,
        "two contenders acted at once"
    );

    // Back in touch, the old leader sees the new holder and stays a standby.
    api.set_down(leader.client_id, false);
    tokio::time::sleep(TIMING.lease_duration).await;
    assert!(!leader.leads() && standby.leads());
    assert_eq!(acting.most.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_shuts_down_releases_the_lease_and_the_other_takes_over_at_once() {
    let api = FakeApi::new();
    let acting = Arc::new(Acting::default());
    let (leader, standby) = two(&api, &acting).await;

    let stopped_at = Instant::now();
    leader.stop.send(true).unwrap();
    wait_until("the standby to take over", Duration::from_secs(10), || {
        standby.leads()
    })
    .await;
    let took = stopped_at.elapsed();
    assert!(
        took < TIMING.lease_duration,
        "a released lease took {took:?} to change hands"
    );
    assert!(!leader.leads());
    assert_eq!(
        acting.most.load(Ordering::SeqCst),
        1,
        "two contenders acted at once"
    );
    let lease: Lease = api
        .get("partita-system", "partita-operator-leader")
        .unwrap();
    assert!(lease.spec.unwrap().lease_transitions.unwrap() >= 1);
}
