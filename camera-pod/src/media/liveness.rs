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
    /// Whether it ever was connected.
    connected: bool,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            state: RTCPeerConnectionState::New,
            disconnected_since: None,
            closed_by_remote: false,
            connect_by: None,
            connected: false,
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
        self.connected
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
        self.connected |= state == RTCPeerConnectionState::Connected;
        self.state = state;
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
        if !self.connected && self.connect_by.is_some_and(|deadline| now >= deadline) {
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
}
