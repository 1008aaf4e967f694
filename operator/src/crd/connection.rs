//! `status.connection` of a CameraSession: which way the camera's media reaches its pod, as the
//! pod reports it ([`p2pcamera_api::relay::ConnectionPath`] in camera-pod's `GET /status`), in the
//! CRD's spelling (`path` `Direct` / `Relay`; `transport` and the candidate types lower case, as
//! ICE names them).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use p2pcamera_api::relay::{CandidateType, ConnectionPath, MediaPath, Transport};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the camera of a session is connected to its pod, from the pod's selected ICE candidate
/// pair.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SessionConnection {
    /// `Relay` when either side's candidate of the pair is a TURN relay, else `Direct`.
    pub path: MediaRoute,
    /// The transport of the camera's leg ([`MediaTransport`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<MediaTransport>,
    /// The pod's candidate of the pair: `host`, `srflx`, `prflx` or `relay`.
    pub pod_candidate: IceCandidateType,
    /// The camera's candidate of the pair: `host`, `srflx`, `prflx` or `relay`.
    pub camera_candidate: IceCandidateType,
    /// When the operator first saw the connection this way (it asks the pod at its polls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_time: Option<Time>,
}

impl SessionConnection {
    /// Whether `self` and `other` describe the same connection, whenever each was seen.
    pub fn same_path(&self, other: &Self) -> bool {
        (
            self.path,
            self.transport,
            self.pod_candidate,
            self.camera_candidate,
        ) == (
            other.path,
            other.transport,
            other.pod_candidate,
            other.camera_candidate,
        )
    }
}

impl From<ConnectionPath> for SessionConnection {
    fn from(reported: ConnectionPath) -> Self {
        Self {
            path: reported.path.into(),
            transport: reported.transport.map(Into::into),
            pod_candidate: reported.pod_candidate.into(),
            camera_candidate: reported.camera_candidate.into(),
            observed_time: None,
        }
    }
}

/// Whether the media goes directly between camera and pod or through a TURN relay.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaRoute {
    /// Straight between camera and pod (host, server- or peer-reflexive candidates).
    Direct,
    /// Through a TURN relay, the pod's or the camera's.
    Relay,
}

impl From<MediaPath> for MediaRoute {
    fn from(path: MediaPath) -> Self {
        match path {
            MediaPath::Direct => Self::Direct,
            MediaPath::Relay => Self::Relay,
        }
    }
}

/// How the camera's packets travel to the first hop (the pod, or the camera's TURN server):
/// `udp`, or `tcp` / `tls` to a TURN server through a firewall; absent while a camera that relays
/// has not said which (it reports it over the data channel).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MediaTransport {
    /// UDP.
    Udp,
    /// TCP to the camera's TURN server.
    Tcp,
    /// TLS to the camera's TURN server.
    Tls,
}

impl From<Transport> for MediaTransport {
    fn from(transport: Transport) -> Self {
        match transport {
            Transport::Udp => Self::Udp,
            Transport::Tcp => Self::Tcp,
            Transport::Tls => Self::Tls,
        }
    }
}

/// An ICE candidate's type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IceCandidateType {
    /// An address of the host itself.
    Host,
    /// Server-reflexive: the address a STUN server saw, outside a NAT.
    Srflx,
    /// Peer-reflexive: an address the other side saw during the connectivity checks.
    Prflx,
    /// A TURN server's relayed address.
    Relay,
}

impl From<CandidateType> for IceCandidateType {
    fn from(candidate: CandidateType) -> Self {
        match candidate {
            CandidateType::Host => Self::Host,
            CandidateType::Srflx => Self::Srflx,
            CandidateType::Prflx => Self::Prflx,
            CandidateType::Relay => Self::Relay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_path_is_written_in_the_crds_spelling() {
        let relayed = ConnectionPath::of_pair(CandidateType::Relay, CandidateType::Srflx);
        assert_eq!(
            serde_json::to_value(SessionConnection::from(relayed)).ok(),
            Some(serde_json::json!({
                "path": "Relay", "transport": "udp", "podCandidate": "relay", "cameraCandidate": "srflx"
            }))
        );
        let camera_relays = ConnectionPath::of_pair(CandidateType::Host, CandidateType::Relay)
            .with_camera_transport(Transport::Tls);
        assert_eq!(
            serde_json::to_value(SessionConnection::from(camera_relays)).ok(),
            Some(serde_json::json!({
                "path": "Relay", "transport": "tls", "podCandidate": "host", "cameraCandidate": "relay"
            }))
        );
        let direct = ConnectionPath::of_pair(CandidateType::Host, CandidateType::Prflx);
        assert_eq!(
            serde_json::to_value(SessionConnection::from(direct)).ok(),
            Some(serde_json::json!({
                "path": "Direct", "transport": "udp", "podCandidate": "host", "cameraCandidate": "prflx"
            }))
        );
    }
}
