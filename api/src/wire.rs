//! The JSON bodies of the signaling APIs and their size limits.
//!
//! `POST /offer` (camera-pod) and `POST /v1/sessions/{ns}/{name}/offer` (router) take an
//! [`OfferRequest`] and answer a [`SessionDescription`] of type `answer` with every ICE candidate
//! in it. camera-pod's `POST /filter` answers a [`FilterReply`], `GET /status` a [`CameraStatus`].

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

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
                session: None
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
        };
        let text = serde_json::to_string(&status).expect("serialises");
        assert_eq!(
            serde_json::from_str::<CameraStatus>(&text).ok(),
            Some(status)
        );
    }
}
