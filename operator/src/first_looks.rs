//! A new leader's first look at the sessions the last leader left Ready.
//!
//! When a replica starts to lead, its watch caches list every session, pod and Secret, and each
//! listed object asks for a reconcile of its session: with 10,000 sessions, 10,000 reconciles at
//! once. kube-runtime's controller runs at most
//! [`MAX_CONCURRENT_RECONCILES`](crate::controller::MAX_CONCURRENT_RECONCILES) of them at a time
//! and keeps the others in an unordered set, so a session created at the failover, which needs
//! two reconciles (apply its pod, then report it Ready), waits each time behind a random share of
//! that pass.
//!
//! Most of those sessions need nothing: their status says Ready for their current spec, and the
//! cached pod is the one the status names, bound to the same node, ready, not going away, on the
//! session's port ([`left_settled`]). Their first reconcile in a term only counts them in the
//! metrics and comes back at a time spread over [`FIRST_LOOK_WINDOW`] ([`FirstLooks::wait`]), so
//! the first pass over them is a glance each, and the sessions that do need work (new, waiting,
//! changed while no replica led) are reconciled right away. A settled session's full look is
//! never put off twice, and any change that makes it unsettled (its pod no longer ready, its spec
//! changed, a wake) brings the full look at once. What the settled test does not read (a change
//! of the session's CameraClass, of the operator's flags, an idle timeout to poll for) waits for
//! the full look, at most [`FIRST_LOOK_WINDOW`].

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use p2pcamera_api::SessionKey;
use p2pcamera_api::objects::{ANNOTATION_PORT, ANNOTATION_WAKE};

use crate::crd::{CameraSession, CameraSessionStatus, Phase};
use crate::desired;
use crate::status::{self, Scheduling};

/// How long after its first reconcile in a term a new leader takes for its full first look at the
/// sessions it found settled (30 s: 10,000 sessions are about 330 a second).
pub const FIRST_LOOK_WINDOW: Duration = Duration::from_secs(30);

/// Whether the session is as the last leader left it once Ready, as far as the caches show:
/// `prev` (its status) says Ready for the session's current generation and no wake was asked
/// for, and `pod` (its cached pod) is the pod `prev` names, bound to the node `prev` names,
/// ready, not terminating, and holds the port `prev` names.
pub fn left_settled(
    session: &CameraSession,
    prev: &CameraSessionStatus,
    pod: Option<&Pod>,
) -> bool {
    let Some(pod) = pod else { return false };
    let observed = status::observe_pod(pod);
    let port = desired::pod_annotation(pod, ANNOTATION_PORT).and_then(|p| p.parse::<u16>().ok());
    prev.phase == Some(Phase::Ready)
        && prev.observed_generation == session.metadata.generation
        && !session.annotations().contains_key(ANNOTATION_WAKE)
        && session.metadata.deletion_timestamp.is_none()
        && observed.ready
        && !observed.terminating
        && observed.scheduling == Scheduling::Bound
        && prev.pod_name.as_deref() == Some(observed.name.as_str())
        && prev.node_name == observed.node_name
        && port.is_some()
        && prev.udp_port == port
}

/// Where in `window` the full first look at the session `key` falls: the same for a session
/// every time, and spread evenly over many sessions.
pub fn spread(key: &SessionKey, window: Duration) -> Duration {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(hasher.finish() % window_ms)
}

/// The sessions a leadership term has looked at in full, and when its first look began.
#[derive(Debug, Default)]
pub struct FirstLooks {
    began: OnceLock<Instant>,
    looked: Mutex<HashSet<SessionKey>>,
}

impl FirstLooks {
    fn looked(&self) -> MutexGuard<'_, HashSet<SessionKey>> {
        // Every update is a single insert or retain, so a poisoned set is still consistent.
        self.looked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the full look at session `key`, reconciled at `now`, may still wait: `None`
    /// (look now) when it was looked at in full already this term, when it is not `settled`
    /// ([`left_settled`]), or once its time within [`FIRST_LOOK_WINDOW`] after the term's first
    /// reconcile has come; from then on it is never put off again this term.
    pub fn wait(&self, key: &SessionKey, settled: bool, now: Instant) -> Option<Duration> {
        let began = *self.began.get_or_init(|| now);
        let mut looked = self.looked();
        if looked.contains(key) {
            return None;
        }
        let due = began + spread(key, FIRST_LOOK_WINDOW);
        if settled && now < due {
            return Some(due - now);
        }
        looked.insert(key.clone());
        None
    }

    /// Forgets sessions for which `keep` is false (deleted sessions).
    pub fn retain(&self, keep: impl Fn(&SessionKey) -> bool) {
        self.looked().retain(|k| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{HOST_IP, NODE, PodFixture, camera_pod, session, ts};
    use serde_json::json;

    fn key(name: &str) -> SessionKey {
        SessionKey::new("team", name)
    }

    #[test]
    fn a_ready_session_with_its_ready_pod_is_settled() {
        let session = session(json!({}));
        let pod = camera_pod(&session).bound(NODE, HOST_IP).ready();
        let ready = CameraSessionStatus::ready_since(ts(100));
        assert!(left_settled(&session, &ready, Some(&pod)));
    }

    #[test]
    fn anything_to_act_on_is_not_settled() {
        let session = session(json!({}));
        let ready_pod = camera_pod(&session).bound(NODE, HOST_IP).ready();
        let ready = CameraSessionStatus::ready_since(ts(100));
        let on_port = |port: &str| {
            let mut pod = ready_pod.clone();
            pod.annotations_mut()
                .insert(ANNOTATION_PORT.into(), port.into());
            pod
        };
        let cases: [(&str, CameraSession, CameraSessionStatus, Option<Pod>); 10] = [
            (
                "no status",
                session.clone(),
                CameraSessionStatus::default(),
                Some(ready_pod.clone()),
            ),
            (
                "not Ready",
                session.clone(),
                CameraSessionStatus::idle(),
                Some(ready_pod.clone()),
            ),
            ("no pod", session.clone(), ready.clone(), None),
            (
                "spec changed",
                session.clone().changed(),
                ready.clone(),
                Some(ready_pod.clone()),
            ),
            (
                "wake asked for",
                session.clone().woken(),
                ready.clone(),
                Some(ready_pod.clone()),
            ),
            (
                "pod not ready",
                session.clone(),
                ready.clone(),
                Some(camera_pod(&session).bound(NODE, HOST_IP).running()),
            ),
            (
                "pod terminating",
                session.clone(),
                ready.clone(),
                Some(ready_pod.clone().terminating()),
            ),
            (
                "pod on another node",
                session.clone(),
                ready.clone(),
                Some(camera_pod(&session).bound("gpu-2", HOST_IP).ready()),
            ),
            (
                "pod on another port",
                session.clone(),
                ready.clone(),
                Some(on_port("40011")),
            ),
            (
                "pod without a port",
                session.clone(),
                ready.clone(),
                Some(on_port("none")),
            ),
        ];
        for (case, session, prev, pod) in cases {
            assert!(!left_settled(&session, &prev, pod.as_ref()), "{case}");
        }
    }

    #[test]
    fn first_looks_are_spread_over_the_window_and_stable_per_session() {
        let spreads: Vec<Duration> = (0..1000)
            .map(|i| spread(&key(&format!("cam-{i}")), FIRST_LOOK_WINDOW))
            .collect();
        assert!(spreads.iter().all(|s| *s < FIRST_LOOK_WINDOW));
        // Each tenth of the window gets some of 1,000 sessions, none more than twice its share.
        for tenth in 0..10u32 {
            let (from, to) = (
                FIRST_LOOK_WINDOW * tenth / 10,
                FIRST_LOOK_WINDOW * (tenth + 1) / 10,
            );
            let n = spreads.iter().filter(|s| (from..to).contains(*s)).count();
            assert!((1..=200).contains(&n), "{n} sessions in tenth {tenth}");
        }
        assert_eq!(spread(&key("cam-1"), FIRST_LOOK_WINDOW), spreads[1]);
    }

    #[test]
    fn a_settled_session_waits_once_until_its_time_and_others_never_wait() {
        let looks = FirstLooks::default();
        let start = Instant::now();
        let cam = key("cam-1");
        let due = spread(&cam, FIRST_LOOK_WINDOW);
        assert_eq!(looks.wait(&key("new"), false, start), None);
        assert_eq!(
            looks.wait(&cam, true, start),
            Some(due).filter(|d| !d.is_zero())
        );
        let later = start + due / 2;
        if !due.is_zero() {
            assert_eq!(looks.wait(&cam, true, later), Some(due - due / 2));
        }
        assert_eq!(looks.wait(&cam, true, start + due), None, "its time came");
        assert_eq!(looks.wait(&cam, true, start + due), None);
        assert_eq!(looks.wait(&cam, true, later), None, "never put off again");
    }

    #[test]
    fn a_session_that_needed_work_is_not_put_off_once_settled() {
        let looks = FirstLooks::default();
        let start = Instant::now();
        let cam = key("cam-7");
        assert_eq!(looks.wait(&cam, false, start), None);
        assert_eq!(looks.wait(&cam, true, start), None);

        let gone = key("gone");
        looks.wait(&gone, false, start);
        looks.retain(|k| *k != gone);
        let due = spread(&gone, FIRST_LOOK_WINDOW);
        assert_eq!(
            looks.wait(&gone, true, start),
            Some(due).filter(|d| !d.is_zero()),
            "forgotten"
        );
    }
}
