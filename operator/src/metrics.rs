//! Prometheus metrics of the operator: reconciles, their duration and errors, and whether this
//! replica leads. A [`ReconcileMeasurer`] guard records a reconcile's duration when dropped, so
//! a reconcile that returns early, fails or is cancelled (leadership lost) is still counted.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Instant;

/// Label of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// What kind of error.
    pub reason: String,
}

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles started.
    pub reconciliations: Counter,
    /// Reconciles that failed, by reason.
    pub failures: Family<ErrorLabels, Counter>,
    /// How long reconciles take.
    pub duration: Histogram,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    /// How long changes of primary take, from the decision to the new primary accepting
    /// writes, by kind (failover or switchover).
    pub failover_duration: Family<KindLabels, Histogram>,
    /// Node calls that failed, by call.
    pub node_call_failures: Family<KindLabels, Counter>,
}

/// A `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The kind.
    pub kind: String,
}

fn failover_buckets() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciliations: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            leader: Gauge::default(),
            failover_duration: Family::new_with_constructor(failover_buckets),
            node_call_failures: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under the `partita_operator` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("partita_operator");
        r.register(
            "reconciliations",
            "Reconciles started",
            self.reconciliations.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            self.failures.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "How long reconciles take",
            self.duration.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader lease",
            self.leader.clone(),
        );
        r.register(
            "failover_duration_seconds",
            "How long changes of primary take, from the decision to the new primary accepting writes, by kind",
            self.failover_duration.clone(),
        );
        r.register(
            "node_call_failures",
            "Admin calls to nodes that failed, by call",
            self.node_call_failures.clone(),
        );
    }

    /// Records how long a change of primary took.
    pub fn failover(&self, kind: &str, seconds: f64) {
        self.failover_duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(seconds);
    }

    /// Counts a failed node call.
    pub fn node_call_failed(&self, call: &str) {
        self.node_call_failures
            .get_or_create(&KindLabels { kind: call.into() })
            .inc();
    }

    /// Counts a reconcile and returns the guard that records its duration.
    pub fn reconcile(&self) -> ReconcileMeasurer {
        self.reconciliations.inc();
        ReconcileMeasurer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, reason: &str) {
        self.failures
            .get_or_create(&ErrorLabels {
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// Records the duration of a reconcile when dropped.
pub struct ReconcileMeasurer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileMeasurer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
