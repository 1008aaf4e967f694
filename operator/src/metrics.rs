//! Prometheus metrics of the operator (prefix `p2pcamera_operator_`, seconds as the unit, no
//! per-session labels): reconciles, reconcile errors by reason, reconcile duration, sessions by
//! phase, and whether this replica leads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::Phase;
use p2pcamera_api::SessionKey;

/// Label of error counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Short error class, see `controller::Error::metric_label`.
    pub reason: String,
}

/// Label of session counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Phase name.
    pub phase: String,
}

/// All operator metrics and their registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    sessions: Family<PhaseLabels, Gauge<i64, AtomicI64>>,
    leader: Gauge<i64, AtomicI64>,
    phases: Mutex<HashMap<SessionKey, Phase>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("p2pcamera_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by reason",
            errors.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconciliation",
            duration.clone(),
        );
        let sessions = Family::<PhaseLabels, Gauge<i64, AtomicI64>>::default();
        registry.register("sessions", "CameraSessions by phase", sessions.clone());
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        for phase in Phase::ALL {
            sessions
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().into(),
                })
                .set(0);
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            sessions,
            leader,
            phases: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// Counts one reconciliation that took `seconds`.
    pub fn reconciled(&self, seconds: f64) {
        self.reconciles.inc();
        self.duration.observe(seconds);
    }

    /// Counts one failed reconciliation.
    pub fn failed(&self, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Records the leadership state.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records the phase of a session (`None`: the session is gone).
    pub fn set_phase(&self, key: &SessionKey, phase: Option<Phase>) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        match phase {
            Some(phase) => phases.insert(key.clone(), phase),
            None => phases.remove(key),
        };
        self.publish_phases(&phases);
    }

    /// Forgets sessions for which `is_live` is false.
    pub fn retain_sessions(&self, is_live: impl Fn(&SessionKey) -> bool) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        phases.retain(|k, _| is_live(k));
        self.publish_phases(&phases);
    }

    fn publish_phases(&self, phases: &HashMap<SessionKey, Phase>) {
        for phase in Phase::ALL {
            let count = phases.values().filter(|p| **p == phase).count();
            self.sessions
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().into(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_prefixed_metrics_and_phase_counts() {
        let m = Metrics::default();
        m.reconciled(0.02);
        m.failed("kube");
        m.set_leader(true);
        m.set_phase(&SessionKey::new("a", "1"), Some(Phase::Ready));
        m.set_phase(&SessionKey::new("a", "2"), Some(Phase::Ready));
        m.set_phase(&SessionKey::new("a", "3"), Some(Phase::Scheduling));
        m.set_phase(&SessionKey::new("a", "3"), Some(Phase::Ready));
        m.set_phase(&SessionKey::new("a", "2"), None);
        let text = m.encode().unwrap();
        assert!(
            text.contains("p2pcamera_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"p2pcamera_operator_reconcile_errors_total{reason="kube"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("p2pcamera_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"p2pcamera_operator_sessions{phase="Ready"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"p2pcamera_operator_sessions{phase="Scheduling"} 0"#),
            "{text}"
        );
        assert!(text.contains("p2pcamera_operator_leader 1"), "{text}");
        m.retain_sessions(|_| false);
        assert!(
            m.encode()
                .unwrap()
                .contains(r#"p2pcamera_operator_sessions{phase="Ready"} 0"#)
        );
    }
}
