//! Where a session's start goes, as the operator sees it: from the first reconcile that finds the
//! session waiting for a pod, to its pod bound to a node, to the session Ready. The durations are
//! written into `status.start` with the status write that says Ready (no extra request) and
//! observed in `p2pcamera_operator_session_start_seconds{stage,start}`.
//!
//! The clock runs in the operator's memory (object timestamps have whole seconds only): a start
//! the operator did not see begin, because it became leader meanwhile, is not measured.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use p2pcamera_api::SessionKey;

use crate::crd::StartTimes;

/// One start being timed.
#[derive(Clone, Copy, Debug)]
struct Running {
    began: Instant,
    bound: Option<Instant>,
}

/// The starts being timed, per session.
#[derive(Debug, Default)]
pub struct StartClock(Mutex<HashMap<SessionKey, Running>>);

impl StartClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Running>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reconcile of `key`, which `ready` says is Ready already or not, at `now`: starts the
    /// clock of a session that is not Ready and has none.
    pub fn seen(&self, key: &SessionKey, ready: bool, now: Instant) {
        if !ready {
            self.lock().entry(key.clone()).or_insert(Running {
                began: now,
                bound: None,
            });
        }
    }

    /// The session's pod is bound at `now` (kept from the first time).
    pub fn bound(&self, key: &SessionKey, now: Instant) {
        if let Some(running) = self.lock().get_mut(key) {
            running.bound.get_or_insert(now);
        }
    }

    /// The session became Ready at `now` (its pod a claimed warm one when `warm`): stops the
    /// clock and answers the durations, `None` when it did not run.
    pub fn ready(&self, key: &SessionKey, warm: bool, now: Instant) -> Option<StartTimes> {
        let running = self.lock().remove(key)?;
        let millis = |at: Instant| millis(at.saturating_duration_since(running.began));
        Some(StartTimes {
            scheduled_millis: Some(millis(running.bound.unwrap_or(now))),
            ready_millis: millis(now),
            warm,
        })
    }

    /// Keeps only the sessions for which `is_live` is true.
    pub fn retain(&self, is_live: impl Fn(&SessionKey) -> bool) {
        self.lock().retain(|key, _| is_live(key));
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_timed_from_the_first_sight_to_ready() {
        let clock = StartClock::default();
        let key = SessionKey::new("team", "cam");
        let t0 = Instant::now();
        clock.seen(&key, false, t0);
        clock.seen(&key, false, t0 + Duration::from_millis(50));
        clock.bound(&key, t0 + Duration::from_millis(120));
        clock.bound(&key, t0 + Duration::from_millis(300));
        let times = clock.ready(&key, false, t0 + Duration::from_millis(480));
        assert_eq!(
            times,
            Some(StartTimes {
                scheduled_millis: Some(120),
                ready_millis: 480,
                warm: false
            })
        );
        assert_eq!(
            clock.ready(&key, false, t0 + Duration::from_secs(9)),
            None,
            "measured once"
        );
    }

    #[test]
    fn a_session_seen_ready_first_is_not_timed() {
        let clock = StartClock::default();
        let key = SessionKey::new("team", "cam");
        clock.seen(&key, true, Instant::now());
        assert_eq!(clock.ready(&key, true, Instant::now()), None);
    }

    #[test]
    fn a_claimed_pod_is_bound_when_ready() {
        let clock = StartClock::default();
        let key = SessionKey::new("team", "cam");
        let t0 = Instant::now();
        clock.seen(&key, false, t0);
        let times = clock
            .ready(&key, true, t0 + Duration::from_millis(40))
            .expect("timed");
        assert_eq!(
            (times.scheduled_millis, times.ready_millis, times.warm),
            (Some(40), 40, true)
        );
    }
}
