//! TURN relays between the camera and its pod: whether a pod gathers relay candidates of its own
//! ([`RelayCandidates`], from its CameraClass), the short-lived credential the router hands it
//! with each offer ([`RelayCredential`]), and which way a connection's media went
//! ([`ConnectionPath`], in camera-pod's `/status` and the session's status).

use serde::{Deserialize, Serialize};

/// Whether a camera pod offers TURN relay candidates of its own.
///
/// Browsers behind firewalls relay through TURN by themselves (the router hands them
/// credentials); the pod needs a relay of its own only when cameras cannot reach its node at all:
/// GPU nodes without a public address (`Also`), or nodes whose address must not leave the cluster
/// (`Only`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RelayCandidates {
    /// Host candidates only (and the node's public address): the default.
    #[default]
    Off,
    /// Host candidates and a TURN relay candidate; ICE picks the direct pair when it works.
    Also,
    /// A TURN relay candidate only: the camera reaches the pod through the relay, always.
    Only,
}

impl RelayCandidates {
    pub const ALL: [RelayCandidates; 3] = [Self::Off, Self::Also, Self::Only];

    /// The value camera-pod's `--relay-candidates` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Also => "also",
            Self::Only => "only",
        }
    }

    /// Whether the pod gathers a relay candidate at all.
    pub fn gathers_relay(self) -> bool {
        self != Self::Off
    }
}

impl std::fmt::Display for RelayCandidates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--relay-candidates` value that is not one of `off`, `also`, `only`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relay candidates must be off, also or only, not {0:?}")]
pub struct UnknownRelayCandidates(pub String);

impl std::str::FromStr for RelayCandidates {
    type Err = UnknownRelayCandidates;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|value| value.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| UnknownRelayCandidates(text.to_owned()))
    }
}

/// Whether `url` is TURN over UDP, the only kind camera-pod relays through (webrtc-rs allocates
/// relays over UDP only): `turn:` with no `transport` or `transport=udp`. `turns:` and
/// `transport=tcp` are for browsers.
pub fn is_udp_turn_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("turn:") else {
        return false;
    };
    match rest.split_once('?') {
        None => !rest.is_empty(),
        Some((host, query)) => {
            !host.is_empty()
                && query
                    .split('&')
                    .filter_map(|pair| pair.strip_prefix("transport="))
                    .all(|transport| transport.eq_ignore_ascii_case("udp"))
        }
    }
}

/// A TURN REST credential (`username` = `<expiry>:<namespace>/<name>`, `credential` = base64
/// HMAC-SHA1 of it under the TURN server's shared secret) for the session's pod. The router adds
/// it to every offer it forwards when TURN is configured, replacing whatever the browser sent; the
/// pod uses it only with the TURN URLs its operator gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayCredential {
    pub username: String,
    pub credential: String,
}

/// Whether a connection's media went directly between camera and pod or through a TURN relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaPath {
    Direct,
    Relay,
}

/// An ICE candidate's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateType {
    Host,
    Srflx,
    Prflx,
    Relay,
}

/// The transport of the camera's leg: UDP, or TCP / TLS to its TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// The way the live (or last) connection's media goes, from the pod's selected candidate pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionPath {
    /// `relay` when either side's candidate of the pair is a TURN relay.
    pub path: MediaPath,
    /// The pod's candidate of the selected pair.
    pub pod_candidate: CandidateType,
    /// The camera's candidate of the selected pair.
    pub camera_candidate: CandidateType,
    /// How the camera's packets travel to the first hop (the pod, or the camera's TURN server):
    /// `udp` unless the camera relays; then what the camera reported on the data channel
    /// (`tcp`/`tls` through firewalls), absent until it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
}

impl ConnectionPath {
    /// The path of a pair of candidate types; the transport is UDP where the pod sees the camera's
    /// own address (webrtc-rs relays and connects over UDP only), unknown when the camera relays.
    pub fn of_pair(pod_candidate: CandidateType, camera_candidate: CandidateType) -> Self {
        let relayed = |candidate| candidate == CandidateType::Relay;
        Self {
            path: if relayed(pod_candidate) || relayed(camera_candidate) {
                MediaPath::Relay
            } else {
                MediaPath::Direct
            },
            pod_candidate,
            camera_candidate,
            transport: (!relayed(camera_candidate)).then_some(Transport::Udp),
        }
    }

    /// With the camera's own report of its leg's transport, where the pod cannot see it.
    pub fn with_camera_transport(mut self, transport: Transport) -> Self {
        if self.camera_candidate == CandidateType::Relay {
            self.transport = Some(transport);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_candidates_round_trip_their_flag_values_and_refuse_others() {
        for value in RelayCandidates::ALL {
            assert_eq!(value.as_str().parse::<RelayCandidates>(), Ok(value));
        }
        assert_eq!("ONLY".parse(), Ok(RelayCandidates::Only));
        assert_eq!(
            "prefer".parse::<RelayCandidates>(),
            Err(UnknownRelayCandidates("prefer".into()))
        );
        assert!(!RelayCandidates::default().gathers_relay());
    }

    #[test]
    fn only_turn_over_udp_is_a_url_pods_relay_through() {
        for udp in [
            "turn:t.example:3478",
            "turn:t.example:3478?transport=udp",
            "turn:10.0.0.1?transport=UDP",
        ] {
            assert!(is_udp_turn_url(udp), "{udp}");
        }
        for other in [
            "turn:t.example:3478?transport=tcp",
            "turns:t.example:443?transport=tcp",
            "stun:t.example:3478",
            "turn:",
            "turn:?transport=udp",
            " turn:t.example",
        ] {
            assert!(!is_udp_turn_url(other), "{other}");
        }
    }

    #[test]
    fn a_pair_is_relayed_when_either_side_relays_and_the_camera_reports_its_own_transport() {
        use CandidateType::*;
        let direct = ConnectionPath::of_pair(Host, Srflx);
        assert_eq!(
            (direct.path, direct.transport),
            (MediaPath::Direct, Some(Transport::Udp))
        );
        // The pod relays, the camera sends UDP straight to the pod's relay address.
        let pod_relays = ConnectionPath::of_pair(Relay, Host);
        assert_eq!(
            (pod_relays.path, pod_relays.transport),
            (MediaPath::Relay, Some(Transport::Udp))
        );
        // A camera's report cannot change what the pod saw for itself.
        assert_eq!(pod_relays.with_camera_transport(Transport::Tls), pod_relays);
        // The camera relays: its transport is unknown until it says.
        let camera_relays = ConnectionPath::of_pair(Host, Relay);
        assert_eq!(
            (camera_relays.path, camera_relays.transport),
            (MediaPath::Relay, None)
        );
        assert_eq!(
            camera_relays
                .with_camera_transport(Transport::Tcp)
                .transport,
            Some(Transport::Tcp)
        );
        assert_eq!(
            serde_json::to_value(camera_relays).ok(),
            Some(
                serde_json::json!({"path": "relay", "pod_candidate": "host", "camera_candidate": "relay"})
            )
        );
    }
}
