//! Whether a peer connection still holds the camera, from the signals its remote gives.
//!
//! A browser that closes its peer connection says so at once: its DTLS `close_notify` or SCTP
//! abort closes the data channel, and the connection state may go to `closed`. Those free the
//! camera immediately, as `failed` does. A remote that vanishes without a word (a crashed tab, a
//! lost network) only shows as ICE `disconnected` after a few seconds without consent
//! responses; once that has lasted [`DISCONNECTED_GRACE`], the camera is free too, long before
//! ICE would declare the connection `failed`. A `disconnected` that recovers within the grace
//! (a brief network hiccup) keeps the camera.
//!
//! A connection must first get connected (ICE and DTLS) within `--connect-deadline` of the
//! answer: an offer whose client never starts ICE holds the camera that long and no longer.
//!
//! A browser that sleeps or loses its network still looks connected for those seconds. So a
//! connected peer that has sent no camera RTP for `--takeover-after` (since it connected or its
//! last packet) keeps the camera only until a new offer comes: that offer takes it over
//! ([`Hold::Silent`]). A peer that is sending media keeps the camera against any newcomer, so
//! two live tabs do not take it from each other: the second gets `camera_busy`.

use std::time::{Duration, Instant};

use webrtc::peer_connection::RTCPeerConnectionState;

/// How long a connection may stay `disconnected` and still hold the camera.
pub const DISCONNECTED_GRACE: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    state: RTCPeerConnectionState,
    disconnected_since: Option<Instant>,
    closed_by_remote: bool,
    /// When the connection must be connected by, once answered.
    connect_by: Option<Instant>,
    /// When it first got connected.
    connected_at: Option<Instant>,
    /// When the last RTP packet of the camera arrived.
    last_media: Option<Instant>,
}

/// How a connection holds the camera against a new offer from another client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// It does not hold the camera any more (closed, failed, gone, or never connected in time).
    Released,
    /// It holds the camera: connecting within its deadline, or connected and sending media.
    Active,
    /// Connected, but it has sent no media for this long, at least `--takeover-after`: a new
    /// offer takes the camera over.
    Silent(Duration),
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            state: RTCPeerConnectionState::New,
            disconnected_since: None,
            closed_by_remote: false,
            connect_by: None,
            connected_at: None,
            last_media: None,
        }
    }
}

impl Liveness {
    /// The offer was answered: the connection must be connected by `deadline`.
    pub fn expect_connection_by(&mut self, deadline: Instant) {
        self.connect_by = Some(deadline);
    }

    /// Whether the connection ever got connected.
    pub fn has_connected(&self) -> bool {
        self.connected_at.is_some()
    }

    /// A connection state change reported at `now`. `closed` is final.
    pub fn on_state(&mut self, state: RTCPeerConnectionState, now: Instant) {
        if self.state() == RTCPeerConnectionState::Closed {
            return;
        }
        self.disconnected_since = match (state, self.disconnected_since) {
            (RTCPeerConnectionState::Disconnected, Some(since)) => Some(since),
            (RTCPeerConnectionState::Disconnected, None) => Some(now),
            _ => None,
        };
        if state == RTCPeerConnectionState::Connected && self.connected_at.is_none() {
            self.connected_at = Some(now);
        }
        self.state = state;
    }

    /// An RTP packet of the camera arrived at `now`.
    pub fn on_media(&mut self, now: Instant) {
        self.last_media = Some(now);
    }

    /// The remote closed the connection (its data channel closed under us).
    pub fn on_remote_close(&mut self) {
        self.closed_by_remote = true;
    }

    /// The connection state as this process sees it: `closed` once the remote closed it.
    pub fn state(&self) -> RTCPeerConnectionState {
        if self.closed_by_remote {
            RTCPeerConnectionState::Closed
        } else {
            self.state
        }
    }

    /// Whether the connection still holds the camera at `now`.
    pub fn holds_camera(&self, now: Instant) -> bool {
        if !self.has_connected() && self.connect_by.is_some_and(|deadline| now >= deadline) {
            return false;
        }
        match self.state() {
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => false,
            RTCPeerConnectionState::Disconnected => self
                .disconnected_since
                .is_none_or(|since| now.saturating_duration_since(since) < DISCONNECTED_GRACE),
            _ => true,
        }
    }

    /// How the connection holds the camera at `now` against a new offer, with `takeover_after`
    /// as the longest media silence of a connected peer that keeps it.
    pub fn hold(&self, now: Instant, takeover_after: Duration) -> Hold {
        if !self.holds_camera(now) {
            return Hold::Released;
        }
        let Some(connected_at) = self.connected_at else {
            return Hold::Active;
        };
        let silent = now.saturating_duration_since(
            self.last_media
                .map_or(connected_at, |last| last.max(connected_at)),
        );
        if silent >= takeover_after {
            Hold::Silent(silent)
        } else {
            Hold::Active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RTCPeerConnectionState::*;

    #[test]
    fn new_connecting_and_connected_hold_the_camera() {
        let now = Instant::now();
        let mut liveness = Liveness::default();
        assert!(liveness.holds_camera(now));
        for state in [Connecting, Connected] {
            liveness.on_state(state, now);
            assert!(
                liveness.holds_camera(now + Duration::from_secs(600)),
                "{state}"
            );
        }
    }

    #[test]
    fn failed_and_closed_free_the_camera_at_once() {
        let now = Instant::now();
        for state in [Failed, Closed] {
            let mut liveness = Liveness::default();
            liveness.on_state(Connected, now);
            liveness.on_state(state, now);
            assert!(!liveness.holds_camera(now), "{state}");
        }
    }

    #[test]
    fn a_close_from_the_remote_frees_the_camera_and_is_final() {
        let now = Instant::now();
        let mut liveness = Liveness::default();
        liveness.on_state(Connected, now);
        liveness.on_remote_close();
        assert_eq!(liveness.state(), Closed);
        assert!(!liveness.holds_camera(now));
        liveness.on_state(Connected, now);
        assert!(!liveness.holds_camera(now), "closed stays closed");
    }

    #[test]
    fn a_connection_must_connect_by_its_deadline_to_keep_the_camera() {
        let answered = Instant::now();
        let deadline = answered + Duration::from_secs(10);
        let mut never = Liveness::default();
        never.expect_connection_by(deadline);
        assert!(never.holds_camera(answered));
        never.on_state(Connecting, answered + Duration::from_secs(1));
        assert!(never.holds_camera(deadline - Duration::from_millis(1)));
        assert!(
            !never.holds_camera(deadline),
            "still connecting at the deadline"
        );
        assert!(!never.has_connected());

        let mut connected = Liveness::default();
        connected.expect_connection_by(deadline);
        connected.on_state(Connecting, answered);
        connected.on_state(Connected, answered + Duration::from_secs(2));
        assert!(connected.has_connected());
        assert!(connected.holds_camera(deadline + Duration::from_secs(3600)));
        // A connection that once connected is judged by the disconnect grace, not the deadline.
        let later = deadline + Duration::from_secs(60);
        connected.on_state(Disconnected, later);
        assert!(connected.holds_camera(later + DISCONNECTED_GRACE / 2));
    }

    #[test]
    fn disconnected_holds_the_camera_only_for_the_grace() {
        let start = Instant::now();
        let mut liveness = Liveness::default();
        liveness.on_state(Connected, start);
        liveness.on_state(Disconnected, start);
        assert!(liveness.holds_camera(start + DISCONNECTED_GRACE / 2));
        // A repeated report does not restart the grace.
        liveness.on_state(Disconnected, start + DISCONNECTED_GRACE / 2);
        assert!(!liveness.holds_camera(start + DISCONNECTED_GRACE));
        // Recovering within the grace keeps the camera, and a later disconnect starts afresh.
        let mut liveness = Liveness::default();
        liveness.on_state(Disconnected, start);
        liveness.on_state(Connected, start + Duration::from_secs(1));
        let later = start + Duration::from_secs(60);
        liveness.on_state(Disconnected, later);
        assert!(liveness.holds_camera(later + DISCONNECTED_GRACE / 2));
        assert!(!liveness.holds_camera(later + DISCONNECTED_GRACE));
    }

    const TAKEOVER: Duration = Duration::from_secs(1);

    #[test]
    fn a_connected_peer_silent_for_the_takeover_time_yields_to_a_new_offer() {
        let start = Instant::now();
        let mut liveness = Liveness::default();
        liveness.expect_connection_by(start + Duration::from_secs(10));
        // Connecting: judged by its connect deadline, not by media.
        assert_eq!(
            liveness.hold(start + Duration::from_secs(5), TAKEOVER),
            Hold::Active
        );
        liveness.on_state(Connected, start);
        assert_eq!(liveness.hold(start + TAKEOVER / 2, TAKEOVER), Hold::Active);
        // Connected without ever sending media: silent since it connected.
        assert_eq!(
            liveness.hold(start + TAKEOVER, TAKEOVER),
            Hold::Silent(TAKEOVER)
        );
        // Media keeps the camera; silence after the last packet yields it.
        let sent = start + Duration::from_secs(3);
        liveness.on_media(sent);
        assert_eq!(liveness.hold(sent + TAKEOVER / 2, TAKEOVER), Hold::Active);
        assert_eq!(
            liveness.hold(sent + Duration::from_millis(1500), TAKEOVER),
            Hold::Silent(Duration::from_millis(1500))
        );
        // A peer that no longer holds the camera at all is released, silent or not.
        liveness.on_state(Failed, sent);
        assert_eq!(liveness.hold(sent + TAKEOVER * 2, TAKEOVER), Hold::Released);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(p2pcamera_tests::properties::config())]

            /// Two live tabs do not flap: a connected peer whose packets are never further apart
            /// than the takeover time holds the camera against every new offer, and yields it
            /// once it has been silent that long.
            #[test]
            fn a_peer_sending_media_is_never_taken_over(
                gaps_ms in proptest::collection::vec(0u64..1000, 1..50),
                probe in 0.0f64..1.0,
                silence_ms in 1000u64..60_000,
            ) {
                let start = Instant::now();
                let mut liveness = Liveness::default();
                liveness.expect_connection_by(start + Duration::from_secs(10));
                liveness.on_state(Connected, start);
                let mut at = start;
                for gap in gaps_ms {
                    let next = at + Duration::from_millis(gap);
                    // Any moment before the next packet: the camera is the peer's.
                    let between = at + Duration::from_millis(gap).mul_f64(probe);
                    prop_assert_eq!(liveness.hold(between, TAKEOVER), Hold::Active);
                    liveness.on_media(next);
                    at = next;
                }
                let silence = Duration::from_millis(silence_ms);
                prop_assert_eq!(liveness.hold(at + silence, TAKEOVER), Hold::Silent(silence));
            }
        }
    }
}
