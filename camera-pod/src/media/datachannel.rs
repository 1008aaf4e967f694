//! The data channel protocol: `ping<x>` is answered `pong<x>`; a JSON filter spec switches the
//! filter and is answered `{"type":"filter","ok":...}` (a failure carries `"code":"invalid_filter"`
//! and the reason; specs naming files on the pod are refused); `{"type":"path","local":...,
//! "protocol":...}` is the camera's selected candidate and its transport (p2pcamera.js sends it
//! once connected; unanswered); once a second the pod sends
//! `{"type":"stats",...}`, with `pod_latency_ms`, the mean of the pod's own latency per frame
//! over that second (see `latency`; null when no frame was sent).

use p2pcamera_api::relay::Transport;
use p2pcamera_api::wire::FilterReply;
use serde::{Deserialize, Serialize};

use super::latency::LatencyTotals;
use crate::filter::SwitchError;

/// What a text message from the client asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    Ping(&'a str),
    /// A JSON object: a filter spec to switch to.
    SwitchFilter(&'a str),
    /// `{"type":"path","local":"relay","protocol":"tcp"}`: the transport of the camera's leg, as
    /// the camera sees it (kept only where the pod sees the camera relaying).
    CameraTransport(Transport),
    Unknown,
}

/// The camera's report of its selected candidate pair (p2pcamera.js's `path`: `local`, `remote`,
/// `protocol`). Only the transport is read: the pod trusts its own view of the candidate types.
#[derive(Debug, Deserialize)]
struct CameraPathReport {
    protocol: Transport,
}

pub fn parse(text: &str) -> ClientMessage<'_> {
    if let Some(rest) = text.strip_prefix("ping") {
        return ClientMessage::Ping(rest);
    }
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        return ClientMessage::Unknown;
    }
    let Ok(object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(trimmed)
    else {
        return ClientMessage::Unknown;
    };
    if object.get("type").and_then(serde_json::Value::as_str) != Some("path") {
        return ClientMessage::SwitchFilter(trimmed);
    }
    match serde_json::from_value::<CameraPathReport>(serde_json::Value::Object(object)) {
        Ok(report) => ClientMessage::CameraTransport(report.protocol),
        Err(_) => ClientMessage::Unknown,
    }
}

pub fn pong(rest: &str) -> String {
    format!("pong{rest}")
}

/// The reply to a filter switch: the contract's [`FilterReply`], as `POST /filter` answers it.
pub fn filter_reply(result: &Result<String, SwitchError>) -> String {
    let reply = match result {
        Ok(name) => FilterReply::switched(name),
        Err(error) => FilterReply::refused(error.code(), error.to_string()),
    };
    serde_json::to_string(&reply).unwrap_or_default()
}

/// Reply to a message that is neither a ping nor a JSON object.
pub fn unknown_reply() -> String {
    serde_json::json!({ "type": "error", "error": "expected ping<x>, a JSON filter spec or a path report" })
        .to_string()
}

/// The once-a-second stats message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub input_fps: f64,
    pub output_fps: f64,
    pub model_ms: f64,
    pub dropped_frames: u64,
    pub pod_latency_ms: Option<f64>,
    pub filter: String,
    /// The camera's own frames go back as they came (passthrough, nothing decoded or encoded).
    pub forwarded: bool,
}

/// Counter readings at one instant, to compute rates between two of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub seconds: f64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub latency: LatencyTotals,
}

impl Stats {
    pub fn between(
        earlier: Reading,
        now: Reading,
        model_micros: u64,
        dropped_frames: u64,
        filter: String,
        forwarded: bool,
    ) -> Self {
        let span = (now.seconds - earlier.seconds).max(1e-3);
        let rate = |a: u64, b: u64| ((b.saturating_sub(a)) as f64 / span * 10.0).round() / 10.0;
        Stats {
            kind: "stats",
            input_fps: rate(earlier.frames_in, now.frames_in),
            output_fps: rate(earlier.frames_out, now.frames_out),
            model_ms: (model_micros as f64 / 100.0).round() / 10.0,
            dropped_frames,
            pod_latency_ms: now.latency.mean_ms_since(earlier.latency),
            filter,
            forwarded,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FilterError;

    #[test]
    fn ping_keeps_its_suffix() {
        assert_eq!(parse("ping 12345"), ClientMessage::Ping(" 12345"));
        assert_eq!(pong(" 12345"), "pong 12345");
        assert_eq!(parse("ping"), ClientMessage::Ping(""));
    }

    #[test]
    fn json_objects_are_filter_switches() {
        assert_eq!(
            parse(r#" {"filter":"style","style":3} "#),
            ClientMessage::SwitchFilter(r#"{"filter":"style","style":3}"#)
        );
        assert_eq!(parse("[1,2]"), ClientMessage::Unknown);
        assert_eq!(parse("{nope"), ClientMessage::Unknown);
        assert_eq!(parse("hello"), ClientMessage::Unknown);
    }

    #[test]
    fn a_path_report_is_the_cameras_transport_and_never_a_filter_switch() {
        assert_eq!(
            parse(r#"{"type":"path","local":"relay","remote":"host","protocol":"tls"}"#),
            ClientMessage::CameraTransport(Transport::Tls)
        );
        assert_eq!(
            parse(r#"{"type":"path","local":"host","remote":"host","protocol":"udp"}"#),
            ClientMessage::CameraTransport(Transport::Udp)
        );
        for malformed in [
            r#"{"type":"path"}"#,
            r#"{"type":"path","local":"relay","protocol":"quic"}"#,
            r#"{"type":"path","local":"relay","protocol":7}"#,
        ] {
            assert_eq!(parse(malformed), ClientMessage::Unknown, "{malformed}");
        }
    }

    #[test]
    fn a_model_off_the_allow_list_gets_its_own_code_and_the_generic_message() {
        let refused = Err(SwitchError::Filter(FilterError::ModelNotAllowed {
            url: "https://internal.example/secret.onnx".into(),
            sha256: "ab".repeat(32),
        }));
        let reply: serde_json::Value = serde_json::from_str(&filter_reply(&refused)).unwrap();
        assert_eq!(reply["code"], "model_not_allowed");
        assert_eq!(
            reply["error"],
            crate::filter::MODEL_NOT_ALLOWED_MESSAGE,
            "nothing about the URL goes back"
        );
    }

    #[test]
    fn replies_are_json_with_a_type() {
        let ok: serde_json::Value =
            serde_json::from_str(&filter_reply(&Ok("style".into()))).unwrap();
        assert_eq!(
            ok,
            serde_json::json!({"type":"filter","ok":true,"filter":"style"})
        );
        let refused = Err(SwitchError::Filter(FilterError::UnknownFilter(
            "sepia".into(),
        )));
        let err: serde_json::Value = serde_json::from_str(&filter_reply(&refused)).unwrap();
        assert_eq!(err["ok"], false);
        assert_eq!(
            err["code"], "invalid_filter",
            "the code POST /filter answers with"
        );
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .starts_with("unknown filter `sepia`"),
            "{err}"
        );
    }

    #[test]
    fn stats_compute_rates_over_the_interval() {
        let a = Reading {
            seconds: 10.0,
            frames_in: 100,
            frames_out: 90,
            latency: LatencyTotals {
                micros: 1_000_000,
                frames: 90,
            },
        };
        let b = Reading {
            seconds: 12.0,
            frames_in: 160,
            frames_out: 120,
            latency: LatencyTotals {
                micros: 1_000_000 + 30 * 15_250,
                frames: 120,
            },
        };
        let stats = Stats::between(a, b, 12_345, 7, "passthrough".into(), true);
        let json: serde_json::Value = serde_json::from_str(&stats.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"stats","input_fps":30.0,"output_fps":15.0,"model_ms":12.3,"dropped_frames":7,"pod_latency_ms":15.3,"filter":"passthrough","forwarded":true})
        );
        let idle = Stats::between(b, b, 0, 7, "passthrough".into(), false);
        assert_eq!(idle.pod_latency_ms, None, "no frame sent, no latency");
    }
}
