//! Prometheus metrics of the operator (prefix `p2pcamera_operator_`, seconds as the unit, no
//! per-session labels): reconciles, reconcile errors by reason, reconcile duration, sessions by
//! phase, sessions whose pod waits to be placed by reason (`NoFreeGpu`, `NoFreePort`,
//! `PortConflict`, `Unschedulable`), port moves, whether this replica leads, and the warm pools
//! (claims by class and result, claim duration, pool pods by class and state), and how long
//! session starts take (to the pod bound, to Ready; warm or cold).
//!
//! The session gauges are kept by counting each session's change (constant time per reconcile,
//! whatever the number of sessions).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::{CameraSessionStatus, Phase};
use crate::status;
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

/// Label of waiting session counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WaitingLabels {
    /// The session's reason, one of [`status::WAITING_REASONS`].
    pub reason: String,
}

/// Labels of warm-pool claim counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    /// The CameraClass.
    pub class: String,
    /// `claimed`, or why the session started cold: `empty` (no idle warm pod), `failed` (the
    /// claim did not go through).
    pub result: String,
}

/// Label of public-address hand-overs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandOverLabels {
    /// `accepted`, or `failed` (not listening yet, refused, another address kept).
    pub result: String,
}

/// Labels of warm-pool pod counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// The CameraClass.
    pub class: String,
    /// `idle` (warm), `starting` or `claimed`.
    pub state: String,
}

/// Labels of session start durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StartLabels {
    /// `scheduled` (pod bound), `ready` (session Ready), `first_answer` (the pod's first answer to
    /// an offer) or `first_frame` (its first filtered frame sent).
    pub stage: String,
    /// `warm` (a claimed pool pod) or `cold`.
    pub start: String,
}

/// Buckets of session start durations: 10 ms to about 160 s.
fn start_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// What the session gauges count of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counted {
    phase: Phase,
    /// The waiting reason, when the session waits to be placed.
    waiting: Option<&'static str>,
}

/// All operator metrics and their registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    sessions: Family<PhaseLabels, Gauge<i64, AtomicI64>>,
    waiting: Family<WaitingLabels, Gauge<i64, AtomicI64>>,
    port_moves: Counter,
    address_handovers: Family<HandOverLabels, Counter>,
    leader: Gauge<i64, AtomicI64>,
    warm_claims: Family<ClaimLabels, Counter>,
    warm_claim_duration: Histogram,
    warm_pool_pods: Family<PoolLabels, Gauge<i64, AtomicI64>>,
    session_start: Family<StartLabels, Histogram, fn() -> Histogram>,
    counted: Mutex<HashMap<SessionKey, Counted>>,
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
        let waiting = Family::<WaitingLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "sessions_waiting",
            "CameraSessions whose pod cannot be placed, by reason",
            waiting.clone(),
        );
        let port_moves = Counter::default();
        registry.register(
            "port_moves",
            "Sessions moved to another port because the scheduler found theirs taken",
            port_moves.clone(),
        );
        let address_handovers = Family::<HandOverLabels, Counter>::default();
        registry.register(
            "public_address_handovers",
            "Node public addresses handed to starting camera pods, by result (accepted, failed: tried again)",
            address_handovers.clone(),
        );
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let warm_claims = Family::<ClaimLabels, Counter>::default();
        registry.register(
            "warm_claims",
            "New sessions of classes with a warm pool, by result: claimed a warm pod, or started cold (empty, failed)",
            warm_claims.clone(),
        );
        let warm_claim_duration = Histogram::new(exponential_buckets(0.002, 2.0, 12));
        registry.register(
            "warm_claim_duration_seconds",
            "Time to claim a warm pod: the claim write and the pod accepting its session",
            warm_claim_duration.clone(),
        );
        let warm_pool_pods = Family::<PoolLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "warm_pool_pods",
            "Warm-pool pods by class and state (idle, starting, claimed)",
            warm_pool_pods.clone(),
        );
        let session_start =
            Family::<StartLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                start_histogram,
            );
        registry.register(
            "session_start_seconds",
            "Session starts: from the operator first seeing the session wait for a pod to its pod bound (stage scheduled), to Ready (ready), to the pod's first answer (first_answer) and first filtered frame (first_frame), warm or cold",
            session_start.clone(),
        );
        for phase in Phase::ALL {
            sessions
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().into(),
                })
                .set(0);
        }
        for reason in status::WAITING_REASONS {
            waiting
                .get_or_create(&WaitingLabels {
                    reason: reason.into(),
                })
                .set(0);
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            sessions,
            waiting,
            port_moves,
            address_handovers,
            leader,
            warm_claims,
            warm_claim_duration,
            warm_pool_pods,
            session_start,
            counted: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// Counts a hand-over of a node's public address to a pod: `accepted` or `failed`.
    pub fn address_handed(&self, result: &str) {
        self.address_handovers
            .get_or_create(&HandOverLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Counts a new session of a class with a warm pool: `result` is `claimed`, `empty` or
    /// `failed`; a successful claim's duration is observed.
    pub fn warm_claim(&self, class: &str, result: &str, seconds: Option<f64>) {
        self.warm_claims
            .get_or_create(&ClaimLabels {
                class: class.into(),
                result: result.into(),
            })
            .inc();
        if let Some(seconds) = seconds {
            self.warm_claim_duration.observe(seconds);
        }
    }

    /// Observes a session start's durations.
    pub fn session_started(&self, times: &crate::crd::StartTimes) {
        let start = if times.warm { "warm" } else { "cold" };
        let stages = [
            ("scheduled", times.scheduled_millis),
            ("ready", Some(times.ready_millis)),
        ];
        for (stage, millis) in stages {
            if let Some(millis) = millis {
                self.session_start
                    .get_or_create(&StartLabels {
                        stage: stage.into(),
                        start: start.into(),
                    })
                    .observe(millis as f64 / 1000.0);
            }
        }
    }

    /// Observes a session's first answer and first frame (stages `first_answer`, `first_frame`).
    pub fn session_streamed(&self, first: &crate::start_times::FirstFrame) {
        let start = if first.warm { "warm" } else { "cold" };
        let stages = [
            ("first_answer", first.answer_millis),
            ("first_frame", Some(first.frame_millis)),
        ];
        for (stage, millis) in stages.into_iter().filter_map(|(s, m)| Some((s, m?))) {
            self.session_start
                .get_or_create(&StartLabels {
                    stage: stage.into(),
                    start: start.into(),
                })
                .observe(millis as f64 / 1000.0);
        }
    }

    /// Sets the pod counts of the warm pool of `class`.
    pub fn set_warm_pool(&self, class: &str, idle: u32, starting: u32, claimed: u32) {
        for (state, value) in [("idle", idle), ("starting", starting), ("claimed", claimed)] {
            self.warm_pool_pods
                .get_or_create(&PoolLabels {
                    class: class.into(),
                    state: state.into(),
                })
                .set(i64::from(value));
        }
    }

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

    /// Counts one session moved to another port.
    pub fn port_moved(&self) {
        self.port_moves.inc();
    }

    /// Records the status of a session (`None`: the session is gone).
    pub fn set_session(&self, key: &SessionKey, status: Option<&CameraSessionStatus>) {
        let now = status.and_then(|status| {
            let waiting = status
                .reason
                .as_deref()
                .and_then(|r| status::WAITING_REASONS.into_iter().find(|w| *w == r));
            status.phase.map(|phase| Counted { phase, waiting })
        });
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        let before = match now {
            Some(now) => counted.insert(key.clone(), now),
            None => counted.remove(key),
        };
        if before != now {
            self.count(before, -1);
            self.count(now, 1);
        }
    }

    /// Forgets sessions for which `is_live` is false.
    pub fn retain_sessions(&self, is_live: impl Fn(&SessionKey) -> bool) {
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        counted.retain(|key, session| {
            let live = is_live(key);
            if !live {
                self.count(Some(*session), -1);
            }
            live
        });
    }

    fn count(&self, session: Option<Counted>, by: i64) {
        let Some(session) = session else { return };
        self.sessions
            .get_or_create(&PhaseLabels {
                phase: session.phase.as_str().into(),
            })
            .inc_by(by);
        if let Some(reason) = session.waiting {
            self.waiting
                .get_or_create(&WaitingLabels {
                    reason: reason.into(),
                })
                .inc_by(by);
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
        let status = |phase, reason: Option<&str>| CameraSessionStatus {
            phase: Some(phase),
            reason: reason.map(Into::into),
            ..CameraSessionStatus::default()
        };
        let ready = status(Phase::Ready, None);
        let no_port = status(Phase::Scheduling, Some(status::REASON_NO_FREE_PORT));
        m.set_session(&SessionKey::new("a", "1"), Some(&ready));
        m.set_session(&SessionKey::new("a", "2"), Some(&ready));
        m.set_session(&SessionKey::new("a", "3"), Some(&no_port));
        m.set_session(&SessionKey::new("a", "4"), Some(&no_port));
        assert!(
            m.encode()
                .unwrap()
                .contains(r#"p2pcamera_operator_sessions_waiting{reason="NoFreePort"} 2"#)
        );
        m.set_session(&SessionKey::new("a", "3"), Some(&ready));
        m.set_session(&SessionKey::new("a", "3"), Some(&ready));
        m.set_session(&SessionKey::new("a", "2"), None);
        m.port_moved();
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
            text.contains(r#"p2pcamera_operator_sessions{phase="Scheduling"} 1"#),
            "{text}"
        );
        assert!(text.contains("p2pcamera_operator_leader 1"), "{text}");
        assert!(
            text.contains(r#"p2pcamera_operator_sessions_waiting{reason="NoFreePort"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"p2pcamera_operator_sessions_waiting{reason="NoFreeGpu"} 0"#),
            "{text}"
        );
        assert!(
            text.contains("p2pcamera_operator_port_moves_total 1"),
            "{text}"
        );
        m.retain_sessions(|_| false);
        let text = m.encode().unwrap();
        assert!(
            text.contains(r#"p2pcamera_operator_sessions{phase="Ready"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"p2pcamera_operator_sessions_waiting{reason="NoFreePort"} 0"#),
            "{text}"
        );
    }
}
