//! Prometheus metrics of the operator (`/metrics`), with prometheus-client.

use std::time::Instant;

use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::GuessGame;
use crate::Error;

/// Labels of a failed reconciliation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub instance: String,
    pub error: String,
}

/// The reconciler's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// `guessgame_operator_reconciliations_total`
    pub reconciliations: Counter,
    /// `guessgame_operator_failures_total{instance, error}`
    pub failures: Family<ErrorLabels, Counter>,
    /// `guessgame_operator_reconcile_duration_seconds`
    pub reconcile_duration: Histogram,
    /// `guessgame_operator_member_restarts_total`: member pods deleted by the restart rule.
    pub restarts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciliations: Counter::default(),
            failures: Family::default(),
            reconcile_duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0]),
            restarts: Counter::default(),
        }
    }
}

impl Metrics {
    /// New metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "reconciliations",
            "Reconciliations of GuessGames",
            m.reconciliations.clone(),
        );
        registry.register(
            "failures",
            "Failed reconciliations, by GuessGame and error",
            m.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconciliation",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "member_restarts",
            "Member pods deleted so that their StatefulSet recreates them",
            m.restarts.clone(),
        );
        m
    }

    /// Counts a reconciliation and measures it until the returned guard is dropped.
    pub fn count_and_measure(&self) -> ReconcileTimer {
        self.reconciliations.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.reconcile_duration.clone(),
        }
    }

    pub fn reconcile_failure(&self, gg: &GuessGame, e: &Error) {
        self.failures.get_or_create(&labels(gg.name_any(), e)).inc();
    }

    /// Failures counted for this GuessGame and error.
    pub fn failures_of(&self, instance: &str, e: &Error) -> u64 {
        self.failures
            .get_or_create(&labels(instance.to_string(), e))
            .get()
    }
}

fn labels(instance: String, e: &Error) -> ErrorLabels {
    ErrorLabels {
        instance,
        error: e.metric_label(),
    }
}

/// Observes the reconciliation's duration when dropped.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
