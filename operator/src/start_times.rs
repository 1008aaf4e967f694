//! Where a session's start goes, as the operator sees it: from the first reconcile that finds the
//! session waiting for a pod, to its pod bound to a node, to the session Ready, and on to the
//! pod's first answer and first filtered frame. The durations until Ready are written into
//! `status.start` with the status write that says Ready (no extra request); the first answer and
//! frame, which the pod reports in `GET /status` as wall-clock times, with one more status write
//! once the first frame was sent. All are observed in
//! `p2pcamera_operator_session_start_seconds{stage,start}`.
//!
//! The same polls read how the camera connected (`status.connection`). A camera's first frame
//! usually comes with its path known, but a camera that relays reports its own transport (UDP,
//! TCP or TLS to its TURN server) over the data channel, possibly after the first frame: so the
//! polls go on after the first frame until the pod reports a connection with its transport, within
//! the same [`FIRST_FRAME_WAIT`] and [`FIRST_FRAME_WATCH_LIMIT`] (no poll beyond those limits).
//! Later changes of the connection are seen only by the idle-timeout polls.
//!
//! The clock runs in the operator's memory (object timestamps have whole seconds only): a start
//! the operator did not see begin, because it became leader meanwhile, is not measured, and a
//! session nobody streams from within [`FIRST_FRAME_WAIT`] of Ready gets no first frame.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p2pcamera_api::SessionKey;
use p2pcamera_api::relay::ConnectionPath;

use crate::crd::StartTimes;

/// How long after Ready the operator waits for a session's first frame: a browser usually connects
/// within seconds of creating its session, and a session nobody streams from costs one poll per
/// `--idle-poll-interval` only this long.
pub const FIRST_FRAME_WAIT: Duration = Duration::from_secs(120);
/// Most sessions waited for at once: when more become Ready together (a bulk start), the ones
/// beyond are not polled for their first frame, so the polls stay bounded whatever the burst.
pub const FIRST_FRAME_WATCH_LIMIT: usize = 256;

/// Where one session's start is.
#[derive(Clone, Copy, Debug)]
enum Start {
    /// Not Ready yet.
    Running {
        began: Instant,
        bound: Option<Instant>,
    },
    /// Ready; waiting for the first frame, and for the connection with its transport, until
    /// `until`.
    Streaming {
        /// The wall-clock time the start began, in Unix milliseconds.
        began_unix_ms: u64,
        warm: bool,
        until: Instant,
        /// The first frame was reported (and answered by [`StartClock::first_frame`]).
        frame_seen: bool,
    },
}

/// A session's first answer and frame, in milliseconds after its start began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstFrame {
    pub answer_millis: Option<u64>,
    pub frame_millis: u64,
    /// The pod was a claimed warm-pool pod.
    pub warm: bool,
}

/// The starts being timed, per session.
#[derive(Debug, Default)]
pub struct StartClock(Mutex<HashMap<SessionKey, Start>>);

impl StartClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Start>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reconcile of `key`, which `ready` says is Ready already or not, at `now`: starts the
    /// clock of a session that is not Ready and has none running.
    pub fn seen(&self, key: &SessionKey, ready: bool, now: Instant) {
        if ready {
            return;
        }
        let mut starts = self.lock();
        if !matches!(starts.get(key), Some(Start::Running { .. })) {
            starts.insert(
                key.clone(),
                Start::Running {
                    began: now,
                    bound: None,
                },
            );
        }
    }

    /// The session's pod is bound at `now` (kept from the first time).
    pub fn bound(&self, key: &SessionKey, now: Instant) {
        if let Some(Start::Running { bound, .. }) = self.lock().get_mut(key) {
            bound.get_or_insert(now);
        }
    }

    /// The session became Ready at `now`, which is `wall` on the wall clock (its pod a claimed
    /// warm one when `warm`): answers the durations, `None` when the clock did not run, and
    /// waits for the first frame from now on (unless [`FIRST_FRAME_WATCH_LIMIT`] sessions are
    /// waited for already).
    pub fn ready(
        &self,
        key: &SessionKey,
        warm: bool,
        now: Instant,
        wall: SystemTime,
    ) -> Option<StartTimes> {
        let mut starts = self.lock();
        let Some(Start::Running { began, bound }) = starts.get(key).copied() else {
            return None;
        };
        let elapsed = now.saturating_duration_since(began);
        let began_wall = wall.checked_sub(elapsed).unwrap_or(wall);
        let watched = starts
            .values()
            .filter(|start| matches!(start, Start::Streaming { until, .. } if *until > now))
            .count();
        if watched < FIRST_FRAME_WATCH_LIMIT {
            starts.insert(
                key.clone(),
                Start::Streaming {
                    began_unix_ms: unix_ms(began_wall),
                    warm,
                    until: now + FIRST_FRAME_WAIT,
                    frame_seen: false,
                },
            );
        } else {
            starts.remove(key);
        }
        let millis = |at: Instant| millis(at.saturating_duration_since(began));
        Some(StartTimes {
            scheduled_millis: Some(millis(bound.unwrap_or(now))),
            ready_millis: millis(now),
            warm,
            first_answer_millis: None,
            first_frame_millis: None,
        })
    }

    /// Whether the operator still waits at `now` for the session's first frame or its
    /// connection (forgets it once [`FIRST_FRAME_WAIT`] is over).
    pub fn awaits_first_frame(&self, key: &SessionKey, now: Instant) -> bool {
        let mut starts = self.lock();
        match starts.get(key) {
            Some(Start::Streaming { until, .. }) if *until > now => true,
            Some(Start::Streaming { .. }) => {
                starts.remove(key);
                false
            }
            _ => false,
        }
    }

    /// The pod reported its first answer and first frame (Unix milliseconds, `None` before
    /// them) and its `connection`: the first time the frame is there, answers both after the
    /// start's beginning; stops the clock once the frame and the connection with its transport
    /// are there.
    pub fn first_frame(
        &self,
        key: &SessionKey,
        answer_unix_ms: Option<u64>,
        frame_unix_ms: Option<u64>,
        connection: Option<&ConnectionPath>,
    ) -> Option<FirstFrame> {
        let mut starts = self.lock();
        let Some(Start::Streaming {
            began_unix_ms,
            warm,
            frame_seen,
            ..
        }) = starts.get_mut(key)
        else {
            return None;
        };
        let first = match frame_unix_ms {
            Some(frame_unix_ms) if !*frame_seen => {
                *frame_seen = true;
                Some(FirstFrame {
                    answer_millis: answer_unix_ms.map(|ms| ms.saturating_sub(*began_unix_ms)),
                    frame_millis: frame_unix_ms.saturating_sub(*began_unix_ms),
                    warm: *warm,
                })
            }
            _ => None,
        };
        let connection_known = connection.is_some_and(|c| c.transport.is_some());
        if *frame_seen && connection_known {
            starts.remove(key);
        }
        first
    }

    /// Keeps only the sessions for which `is_live` is true.
    pub fn retain(&self, is_live: impl Fn(&SessionKey) -> bool) {
        self.lock().retain(|key, _| is_live(key));
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pcamera_api::relay::{CandidateType, Transport};

    #[test]
    fn a_start_is_timed_from_the_first_sight_to_ready() {
        let clock = StartClock::default();
        let key = SessionKey::new("team", "cam");
        let t0 = Instant::now();
        clock.seen(&key, false, t0);
        clock.seen(&key, false, t0 + Duration::from_millis(50));
        clock.bound(&key, t0 + Duration::from_millis(120));
        clock.bound(&key, t0 + Duration::from_millis(300));
        let times = clock.ready(
            &key,
            false,
            t0 + Duration::from_millis(480),
            SystemTime::now(),
        );
        assert_eq!(
            times,
            Some(StartTimes {
                scheduled_millis: Some(120),
                ready_millis: 480,
                warm: false,
                first_answer_millis: None,
                first_frame_millis: None,
            })
        );
        assert_eq!(
            clock.ready(&key, false, t0 + Duration::from_secs(9), SystemTime::now()),
            None,
            "measured once"
        );
    }

    #[test]
    fn a_session_seen_ready_first_is_not_timed() {
        let clock = StartClock::default();
        let key = SessionKey::new("team", "cam");
        clock.seen(&key, true, Instant::now());
        assert_eq!(
            clock.ready(&key, true, Instant::now(), SystemTime::now()),
            None
        );
        assert!(!clock.awaits_first_frame(&key, Instant::now()));
    }

    #[test]
    fn a_claimed_pod_is_bound_when_ready() {
        let clock = StartClock::default();
        let key = SessionKey::new("team", "cam");
        let t0 = Instant::now();
        clock.seen(&key, false, t0);
        let times = clock
            .ready(
                &key,
                true,
                t0 + Duration::from_millis(40),
                SystemTime::now(),
            )
            .expect("timed");
        assert_eq!(
            (times.scheduled_millis, times.ready_millis, times.warm),
            (Some(40), 40, true)
        );
    }

    #[test]
    fn the_first_frame_is_timed_from_the_same_beginning_on_the_wall_clock() {
        let clock = StartClock::default();
        let key = SessionKey::new("team", "cam");
        let t0 = Instant::now();
        clock.seen(&key, false, t0);
        let ready_wall = UNIX_EPOCH + Duration::from_millis(1_000_000_500);
        clock.ready(&key, true, t0 + Duration::from_millis(500), ready_wall);
        assert!(clock.awaits_first_frame(&key, t0 + Duration::from_secs(1)));
        let direct = ConnectionPath::of_pair(CandidateType::Host, CandidateType::Srflx);
        // The pod answered and sent no frame yet: nothing to write.
        assert_eq!(
            clock.first_frame(&key, Some(1_000_000_700), None, Some(&direct)),
            None
        );
        assert!(clock.awaits_first_frame(&key, t0 + Duration::from_secs(1)));
        let first = clock.first_frame(
            &key,
            Some(1_000_000_700),
            Some(1_000_000_800),
            Some(&direct),
        );
        assert_eq!(
            first,
            Some(FirstFrame {
                answer_millis: Some(700),
                frame_millis: 800,
                warm: true
            })
        );
        assert!(
            !clock.awaits_first_frame(&key, t0 + Duration::from_secs(1)),
            "written once"
        );
        assert_eq!(
            clock.first_frame(&key, Some(1), Some(2), Some(&direct)),
            None
        );
    }

    #[test]
    fn the_polls_go_on_after_the_first_frame_until_a_relaying_cameras_transport_is_known() {
        let clock = StartClock::default();
        let key = SessionKey::new("team", "cam");
        let t0 = Instant::now();
        clock.seen(&key, false, t0);
        let ready_wall = UNIX_EPOCH + Duration::from_millis(1_000_000_000);
        clock.ready(&key, false, t0, ready_wall);
        let camera_relays = ConnectionPath::of_pair(CandidateType::Host, CandidateType::Relay);
        let first = clock.first_frame(&key, None, Some(1_000_000_900), Some(&camera_relays));
        assert_eq!(first.map(|f| f.frame_millis), Some(900));
        assert!(
            clock.awaits_first_frame(&key, t0 + Duration::from_secs(1)),
            "the camera has not said how it reaches its relay"
        );
        // The frame is written once; the wait ends when the transport is known.
        assert_eq!(
            clock.first_frame(&key, None, Some(1_000_000_900), Some(&camera_relays)),
            None
        );
        let told = camera_relays.with_camera_transport(Transport::Tcp);
        assert_eq!(
            clock.first_frame(&key, None, Some(1_000_000_900), Some(&told)),
            None
        );
        assert!(!clock.awaits_first_frame(&key, t0 + Duration::from_secs(2)));
        // A camera that never says: the wait ends with FIRST_FRAME_WAIT as before.
        let other = SessionKey::new("team", "quiet");
        clock.seen(&other, false, t0);
        clock.ready(&other, false, t0, ready_wall);
        clock.first_frame(&other, None, Some(1_000_000_900), Some(&camera_relays));
        assert!(clock.awaits_first_frame(&other, t0 + FIRST_FRAME_WAIT - Duration::from_secs(1)));
        assert!(!clock.awaits_first_frame(&other, t0 + FIRST_FRAME_WAIT));
    }

    #[test]
    fn a_bulk_start_is_watched_for_first_frames_up_to_the_limit() {
        let clock = StartClock::default();
        let t0 = Instant::now();
        let keys: Vec<_> = (0..FIRST_FRAME_WATCH_LIMIT + 10)
            .map(|i| SessionKey::new("team", format!("cam-{i}")))
            .collect();
        for key in &keys {
            clock.seen(key, false, t0);
            assert!(
                clock.ready(key, false, t0, SystemTime::now()).is_some(),
                "timed"
            );
        }
        let watched = keys
            .iter()
            .filter(|key| clock.awaits_first_frame(key, t0))
            .count();
        assert_eq!(watched, FIRST_FRAME_WATCH_LIMIT);
        // Once the wait of the watched ones is over, new starts are watched again.
        let later = t0 + FIRST_FRAME_WAIT;
        let key = SessionKey::new("team", "late");
        clock.seen(&key, false, later);
        clock.ready(&key, false, later, SystemTime::now());
        assert!(clock.awaits_first_frame(&key, later));
    }

    #[test]
    fn nobody_streaming_within_the_wait_is_forgotten_and_a_new_start_starts_over() {
        let clock = StartClock::default();
        let key = SessionKey::new("team", "cam");
        let t0 = Instant::now();
        clock.seen(&key, false, t0);
        clock.ready(&key, false, t0, SystemTime::now());
        assert!(clock.awaits_first_frame(&key, t0 + FIRST_FRAME_WAIT - Duration::from_secs(1)));
        assert!(!clock.awaits_first_frame(&key, t0 + FIRST_FRAME_WAIT));
        assert!(!clock.awaits_first_frame(&key, t0), "forgotten");
        // Ready, then not Ready again (its pod replaced): a new start.
        clock.seen(&key, false, t0);
        clock.ready(&key, false, t0, SystemTime::now());
        clock.seen(&key, false, t0 + Duration::from_secs(5));
        assert!(!clock.awaits_first_frame(&key, t0 + Duration::from_secs(5)));
        let times = clock
            .ready(&key, false, t0 + Duration::from_secs(6), SystemTime::now())
            .expect("timed again");
        assert_eq!(times.ready_millis, 1000);
    }
}
