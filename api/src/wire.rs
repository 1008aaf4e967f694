//! The JSON bodies of the signaling APIs and their size limits.
//!
//! `POST /offer` (camera-pod) and `POST /v1/sessions/{ns}/{name}/offer` (router) take an
//! [`OfferRequest`] and answer a [`SessionDescription`] of type `answer` with every ICE candidate
//! in it. camera-pod's `POST /filter` answers a [`FilterReply`], `GET /status` a [`CameraStatus`].

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::relay::{ConnectionPath, RelayCredential};

/// Largest request body either server accepts (offers are a few KiB; SDP with many candidates
/// stays well under this).
pub const REQUEST_BODY_LIMIT: usize = 64 * 1024;
/// Largest answer body the router reads from a camera pod.
pub const ANSWER_BODY_LIMIT: usize = 64 * 1024;
/// Largest `/status` body the operator reads from a camera pod.
pub const STATUS_BODY_LIMIT: usize = 16 * 1024;

/// Largest camera picture (width, height) camera-pod decodes when not told otherwise
/// (`P2PCAMERA_MAX_DECODE_WIDTH` / `_HEIGHT`; the operator passes a CameraClass's, else this).
pub const DEFAULT_MAX_DECODE: (u32, u32) = (1920, 1080);

/// `"type"` of an offer.
pub const TYPE_OFFER: &str = "offer";
/// `"type"` of an answer.
pub const TYPE_ANSWER: &str = "answer";

/// The body of an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferRequest {
    pub sdp: String,
    /// Must be [`TYPE_OFFER`]; kept as text so a wrong value gets a clear error.
    #[serde(rename = "type")]
    pub kind: String,
    /// Identifies the client: an offer with the live client's id replaces its connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// `namespace/name`, only on the router's legacy `POST /offer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The pod's TURN credential: set by the router on every offer it forwards when TURN is
    /// configured (a browser's value never reaches the pod); camera-pod uses it only when it
    /// gathers relay candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_credential: Option<RelayCredential>,
}

/// An SDP with its type: the answer to an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    pub sdp: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl SessionDescription {
    pub fn answer(sdp: impl Into<String>) -> Self {
        Self {
            sdp: sdp.into(),
            kind: TYPE_ANSWER.to_owned(),
        }
    }
}

/// camera-pod's answer to a filter switch (`POST /filter`, and on the data channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterReply {
    /// Always `"filter"` (tells the reply apart from stats on the data channel).
    #[serde(rename = "type")]
    pub kind: String,
    pub ok: bool,
    /// The filter now running, as its spec (`selfie-blur`, `{"filter":"style","style":3}`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// On a refusal: why, as the same code `POST /filter` answers with (`invalid_filter`,
    /// `model_not_allowed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Why the switch was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FilterReply {
    pub fn switched(filter: impl Into<String>) -> Self {
        Self {
            kind: "filter".to_owned(),
            ok: true,
            filter: Some(filter.into()),
            code: None,
            error: None,
        }
    }

    pub fn refused(code: ErrorCode, error: impl Into<String>) -> Self {
        Self {
            kind: "filter".to_owned(),
            ok: false,
            filter: None,
            code: Some(code),
            error: Some(error.into()),
        }
    }
}

/// Path of camera-pod's trickle endpoint; the router's is `/v1/sessions/{ns}/{name}/candidates`.
pub const CANDIDATES_PATH: &str = "/candidates";
/// Most candidates one connection takes by trickle (besides the at most 16 of its offer), and the
/// most one request may carry.
pub const MAX_TRICKLED_CANDIDATES: usize = 16;

/// `POST /candidates`: ICE candidates the browser gathered after its offer went out (trickle ICE,
/// e.g. its TURN relay candidates, which take round trips to the relay). They are for the live
/// connection whose offer had this ICE username fragment; another connection's (an old offer's,
/// or after a takeover) are refused with 410 `connection_gone`. Answered 204. Clients that never
/// send any still work: the pod's answer is complete, and an offer may carry every candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrickledCandidates {
    /// The offer's `a=ice-ufrag`.
    pub ufrag: String,
    /// As `RTCPeerConnection` gives them (`icecandidate` events' `candidate.toJSON()`).
    pub candidates: Vec<TrickledCandidate>,
}

/// One trickled candidate: the `candidate:` attribute's value (with or without the `a=` and
/// `candidate:` prefixes) and the media section it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrickledCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "sdpMLineIndex"
    )]
    pub sdp_m_line_index: Option<u16>,
}

/// Path of a warm-pool pod's claim endpoint.
pub const CLAIM_PATH: &str = "/claim";

/// `POST /claim` on a warm-pool camera pod (`Authorization: Bearer <claim token>`, over HTTPS
/// pinned to the pool pod's own certificate): hands the pod its session. From the answer on the
/// pod serves the session's certificate, accepts only the session's token, runs `filter` within
/// the video limits, and never takes another session. Claiming again with the same `session` and
/// `token` answers as the first time (the operator may repeat a claim it is unsure of); any other
/// claim of a claimed pod is 409 `already_claimed`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// `namespace/name` of the claiming session.
    pub session: String,
    /// The session's bearer token (what the router sends with offers).
    pub token: String,
    /// The session's certificate (PEM) the pod serves from now on; the router pins it.
    pub tls_cert: String,
    /// Its private key (PEM).
    pub tls_key: String,
    /// The filter to run, in camera-pod's filter-spec form (a name or the JSON of `POST /filter`).
    pub filter: String,
    /// Largest returned width, height and frame rate; the pod's defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fps: Option<u32>,
    /// Codec preference (`vp8`, `h264`); empty: the pod's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codecs: Vec<String>,
    /// The address ICE advertises (the node's public address); the pod's start-up value when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
}

impl std::fmt::Debug for ClaimRequest {
    /// Leaves the token and the private key out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimRequest")
            .field("session", &self.session)
            .field("filter", &self.filter)
            .field("max_width", &self.max_width)
            .field("max_height", &self.max_height)
            .field("max_fps", &self.max_fps)
            .field("codecs", &self.codecs)
            .field("public_ip", &self.public_ip)
            .finish_non_exhaustive()
    }
}

/// Path of the endpoint the operator hands a camera pod its node's public address on.
pub const PUBLIC_ADDRESS_PATH: &str = "/public-address";

/// `POST /public-address` on a camera pod started with `P2PCAMERA_AWAIT_PUBLIC_IP`
/// (`Authorization: Bearer <`[`crate::operator_token`]`>`, over HTTPS pinned to the session's
/// certificate),
/// and its answer. The request names the address ICE is to advertise (the node's public address);
/// the answer names the address the pod advertises. Until its camera is set up the pod takes the
/// latest address it is handed; from then on it keeps that one (a new address takes a new pod)
/// and answers with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicAddress {
    /// An IPv4 or IPv6 address.
    pub public_ip: String,
}

/// A warm-pool pod's answer to an accepted claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimReply {
    /// `namespace/name` of the session the pod now serves.
    pub session: String,
    /// The filter the pod runs (or is switching to) for the session, as its spec.
    pub filter: String,
    /// The claim's filter is the one the pod warmed up: the first frame is filtered at once.
    pub warm_filter: bool,
}

/// What camera-pod's `GET /status` reports (the operator polls it for idle timeouts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraStatus {
    /// A camera is connected now.
    pub camera_connected: bool,
    /// The live peer connection's state (`new`, `connecting`, `connected`, ..., `none`).
    pub peer_state: String,
    /// Unix seconds of the last camera frame (or of the pod's start when none came yet).
    pub last_active: u64,
    /// The filter now running.
    pub filter: String,
    /// Unix milliseconds of the pod's first answer to an offer; absent before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_answer_ms: Option<u64>,
    /// Unix milliseconds of the pod's first filtered frame sent; absent before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_frame_ms: Option<u64>,
    /// The way the live (or last) connection's media goes; absent before the first connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionPath>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_keeps_the_original_wire_format() {
        let offer: OfferRequest =
            serde_json::from_str(r#"{"sdp":"v=0","type":"offer"}"#).expect("parses");
        assert_eq!(
            offer,
            OfferRequest {
                sdp: "v=0".into(),
                kind: "offer".into(),
                client: None,
                session: None,
                relay_credential: None,
            }
        );
        assert_eq!(
            serde_json::to_string(&offer).ok().as_deref(),
            Some(r#"{"sdp":"v=0","type":"offer"}"#)
        );
        let answer = serde_json::to_value(SessionDescription::answer("v=0")).ok();
        assert_eq!(
            answer,
            Some(serde_json::json!({"sdp": "v=0", "type": "answer"}))
        );
    }

    #[test]
    fn filter_replies_say_what_runs_or_why_not() {
        assert_eq!(
            serde_json::to_value(FilterReply::switched("style")).ok(),
            Some(serde_json::json!({"type": "filter", "ok": true, "filter": "style"}))
        );
        assert_eq!(
            serde_json::to_value(FilterReply::refused(
                ErrorCode::InvalidFilter,
                "unknown filter"
            ))
            .ok(),
            Some(
                serde_json::json!({"type": "filter", "ok": false, "code": "invalid_filter", "error": "unknown filter"})
            )
        );
    }

    #[test]
    fn status_reads_what_camera_pod_writes() {
        let status = CameraStatus {
            camera_connected: true,
            peer_state: "connected".into(),
            last_active: 17,
            filter: "passthrough".into(),
            first_answer_ms: Some(1_700_000_000_000),
            first_frame_ms: None,
            connection: Some(ConnectionPath::of_pair(
                crate::relay::CandidateType::Relay,
                crate::relay::CandidateType::Host,
            )),
        };
        let text = serde_json::to_string(&status).expect("serialises");
        assert_eq!(
            serde_json::from_str::<CameraStatus>(&text).ok(),
            Some(status)
        );
        assert!(!text.contains("first_frame_ms"), "{text}");
        // A pod of an earlier version reports neither.
        let earlier: CameraStatus = serde_json::from_str(
            r#"{"camera_connected":false,"peer_state":"none","last_active":1,"filter":"passthrough"}"#,
        )
        .expect("parses");
        assert_eq!(
            (earlier.first_answer_ms, earlier.first_frame_ms),
            (None, None)
        );
    }
}
