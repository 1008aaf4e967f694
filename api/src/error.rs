//! The error body `{"error": {"code": "...", "message": "..."}}` of every p2pcamera HTTP API, and
//! the one vocabulary of codes. camera-pod and the router answer with these codes; the router
//! turns a code a camera pod answered into what the browser gets with [`ErrorCode::forwarded`].

use serde::{Deserialize, Serialize};

/// Every error code an HTTP API of p2pcamera answers with. Serialised in `snake_case`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body could not be read (not a byte stream the server accepts).
    BadBody,
    /// The body is not `application/json`.
    UnsupportedContentType,
    /// The body is not the expected JSON.
    InvalidJson,
    /// `type` is not `"offer"`.
    NotAnOffer,
    /// The offer's SDP is empty or cannot be parsed.
    InvalidSdp,
    /// The offer has no video to filter.
    NoVideo,
    /// The legacy `/offer` body's `session` is missing or not `namespace/name`.
    InvalidSession,
    /// No `Authorization: Bearer` token.
    MissingToken,
    /// The token is not the session's.
    WrongToken,
    /// No such session (or not one this router serves).
    SessionNotFound,
    /// Another client's camera is connected to the session.
    CameraBusy,
    /// The body is over the limit.
    TooLarge,
    /// The offer has no video codec the session accepts.
    UnsupportedCodec,
    /// The filter spec is invalid or cannot be built.
    InvalidFilter,
    /// Too many requests from this client or for this session.
    RateLimited,
    /// camera-pod is still warming up its filter, or cannot serve.
    NotReady,
    /// camera-pod cannot bind its media UDP port (another process holds it).
    MediaPortUnavailable,
    /// The session has no ready camera pod yet (router).
    SessionNotReady,
    /// camera-pod failed; the detail is in its log.
    Internal,
    /// The camera pod could not be reached or answered wrongly (router).
    PodUnreachable,
    /// The camera pod did not answer in time (router).
    PodTimeout,
    /// The model URL or digest is not on the administrator's allow-list.
    ModelNotAllowed,
    /// The session's recorded pod endpoint is not one the router may call (not
    /// `https://<node address>:<port in range>`); the router makes no request (router).
    EndpointRejected,
    /// The camera pod is a warm-pool pod that no session has claimed yet: it serves no camera.
    NotClaimed,
    /// The warm-pool pod is already claimed by another session.
    AlreadyClaimed,
    /// The pod connects cameras only through a TURN relay and the offer brought no relay
    /// credential (the router has no TURN configuration).
    RelayUnavailable,
    /// Trickled candidates for a connection that is not the pod's live one (closed, replaced, or
    /// never answered).
    ConnectionGone,
}

impl ErrorCode {
    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [ErrorCode; 27] = [
        ErrorCode::BadBody,
        ErrorCode::UnsupportedContentType,
        ErrorCode::InvalidJson,
        ErrorCode::NotAnOffer,
        ErrorCode::InvalidSdp,
        ErrorCode::NoVideo,
        ErrorCode::InvalidSession,
        ErrorCode::MissingToken,
        ErrorCode::WrongToken,
        ErrorCode::SessionNotFound,
        ErrorCode::CameraBusy,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedCodec,
        ErrorCode::InvalidFilter,
        ErrorCode::RateLimited,
        ErrorCode::NotReady,
        ErrorCode::MediaPortUnavailable,
        ErrorCode::SessionNotReady,
        ErrorCode::Internal,
        ErrorCode::PodUnreachable,
        ErrorCode::PodTimeout,
        ErrorCode::ModelNotAllowed,
        ErrorCode::EndpointRejected,
        ErrorCode::NotClaimed,
        ErrorCode::AlreadyClaimed,
        ErrorCode::RelayUnavailable,
        ErrorCode::ConnectionGone,
    ];

    /// The wire name, e.g. `"camera_busy"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadBody => "bad_body",
            ErrorCode::UnsupportedContentType => "unsupported_content_type",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::NotAnOffer => "not_an_offer",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::NoVideo => "no_video",
            ErrorCode::InvalidSession => "invalid_session",
            ErrorCode::MissingToken => "missing_token",
            ErrorCode::WrongToken => "wrong_token",
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::CameraBusy => "camera_busy",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedCodec => "unsupported_codec",
            ErrorCode::InvalidFilter => "invalid_filter",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::MediaPortUnavailable => "media_port_unavailable",
            ErrorCode::SessionNotReady => "session_not_ready",
            ErrorCode::Internal => "internal",
            ErrorCode::PodUnreachable => "pod_unreachable",
            ErrorCode::PodTimeout => "pod_timeout",
            ErrorCode::ModelNotAllowed => "model_not_allowed",
            ErrorCode::EndpointRejected => "endpoint_rejected",
            ErrorCode::NotClaimed => "not_claimed",
            ErrorCode::AlreadyClaimed => "already_claimed",
            ErrorCode::RelayUnavailable => "relay_unavailable",
            ErrorCode::ConnectionGone => "connection_gone",
        }
    }

    /// The HTTP status answered with this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadBody
            | ErrorCode::UnsupportedContentType
            | ErrorCode::InvalidJson
            | ErrorCode::NotAnOffer
            | ErrorCode::InvalidSdp
            | ErrorCode::NoVideo
            | ErrorCode::InvalidSession => 400,
            ErrorCode::MissingToken => 401,
            ErrorCode::WrongToken | ErrorCode::ModelNotAllowed => 403,
            ErrorCode::SessionNotFound => 404,
            ErrorCode::CameraBusy | ErrorCode::AlreadyClaimed => 409,
            ErrorCode::ConnectionGone => 410,
            ErrorCode::TooLarge => 413,
            ErrorCode::UnsupportedCodec | ErrorCode::InvalidFilter => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::PodUnreachable | ErrorCode::EndpointRejected => 502,
            ErrorCode::NotReady
            | ErrorCode::MediaPortUnavailable
            | ErrorCode::SessionNotReady
            | ErrorCode::NotClaimed
            | ErrorCode::RelayUnavailable => 503,
            ErrorCode::PodTimeout => 504,
        }
    }

    /// Whether the client should try again later (the server sends `Retry-After`).
    pub fn retryable(self) -> bool {
        matches!(self.http_status(), 429 | 503)
    }

    /// What the router answers the browser when a camera pod answered a forwarded offer with
    /// this code.
    ///
    /// - The browser's own mistakes keep their code, status and message: the pod judged the
    ///   offer the browser wrote (bad SDP, no codec in common, a camera already connected, ...).
    /// - A pod that is not ready yet makes the session not ready (503 with `Retry-After`).
    /// - A pod refusing the router's token, failing inside, or answering a code that is not a
    ///   pod's is broken from the browser's view: 502 `pod_unreachable`.
    pub fn forwarded(self) -> ErrorCode {
        match self {
            ErrorCode::BadBody
            | ErrorCode::UnsupportedContentType
            | ErrorCode::InvalidJson
            | ErrorCode::NotAnOffer
            | ErrorCode::InvalidSdp
            | ErrorCode::NoVideo
            | ErrorCode::CameraBusy
            | ErrorCode::TooLarge
            | ErrorCode::UnsupportedCodec
            | ErrorCode::InvalidFilter
            | ErrorCode::ConnectionGone => self,
            // A relay-only pod without a relay credential is a session that cannot serve yet;
            // the pod's message says why.
            ErrorCode::NotReady
            | ErrorCode::MediaPortUnavailable
            | ErrorCode::SessionNotReady
            | ErrorCode::NotClaimed
            | ErrorCode::RelayUnavailable => ErrorCode::SessionNotReady,
            ErrorCode::PodTimeout => ErrorCode::PodTimeout,
            ErrorCode::InvalidSession
            | ErrorCode::MissingToken
            | ErrorCode::WrongToken
            | ErrorCode::SessionNotFound
            | ErrorCode::RateLimited
            | ErrorCode::Internal
            | ErrorCode::PodUnreachable
            | ErrorCode::EndpointRejected
            | ErrorCode::ModelNotAllowed => ErrorCode::PodUnreachable,
            // Only the operator claims pods; from a browser's view a pod serving another session
            // is a busy camera.
            ErrorCode::AlreadyClaimed => ErrorCode::CameraBusy,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }

    /// Parses an error body; `None` when it is not one (or names a code this version lacks).
    pub fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_the_serde_names_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(serde_json::json!(code.as_str()))
            );
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            let parsed: ErrorCode =
                serde_json::from_value(serde_json::json!(code.as_str())).expect("parses");
            assert_eq!(parsed, code);
        }
    }

    #[test]
    fn every_status_is_an_error_status() {
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.http_status()), "{code}");
            assert_eq!(
                code.retryable(),
                code.http_status() == 429 || code.http_status() == 503
            );
        }
    }

    #[test]
    fn forwarding_keeps_client_errors_and_never_blames_the_browser_for_the_pod() {
        for code in ErrorCode::ALL {
            let forwarded = code.forwarded();
            // Idempotent: forwarding through two routers changes nothing more.
            assert_eq!(forwarded.forwarded(), forwarded, "{code}");
            // The router's own credentials and the pod's internals are never the browser's 401/403/500.
            assert!(
                ![401, 403, 500].contains(&forwarded.http_status()),
                "{code} -> {forwarded}"
            );
        }
        assert_eq!(
            ErrorCode::UnsupportedCodec.forwarded(),
            ErrorCode::UnsupportedCodec
        );
        assert_eq!(
            ErrorCode::MediaPortUnavailable.forwarded(),
            ErrorCode::SessionNotReady
        );
        assert_eq!(ErrorCode::WrongToken.forwarded(), ErrorCode::PodUnreachable);
    }

    #[test]
    fn error_body_round_trips_and_unknown_codes_are_none() {
        let body = ErrorBody::new(ErrorCode::CameraBusy, "a camera is already connected");
        let text = serde_json::to_vec(&body).expect("serialises");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&text).ok(),
            Some(
                serde_json::json!({"error": {"code": "camera_busy", "message": "a camera is already connected"}})
            )
        );
        assert_eq!(ErrorBody::parse(&text), Some(body));
        assert_eq!(
            ErrorBody::parse(br#"{"error":{"code":"from_the_future","message":""}}"#),
            None
        );
        assert_eq!(ErrorBody::parse(b"<html>"), None);
    }
}
