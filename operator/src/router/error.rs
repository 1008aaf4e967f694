//! The router's one error type: every failure a browser can see, rendered as
//! `{"error": {"code", "message"}}` with its HTTP status.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to the client. 4xx are the client's doing and are not logged;
/// 5xx are logged where they are produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Malformed(String),
    #[error("missing bearer token")]
    MissingToken,
    #[error("token does not match the session")]
    WrongToken,
    #[error("unknown session {0}")]
    UnknownSession(String),
    #[error("{0}")]
    CameraBusy(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    PodUnreachable(String),
    #[error("session is {phase}: {detail}")]
    NotReady { phase: String, detail: String, retry_after: Duration },
    #[error("camera pod did not answer in time")]
    PodTimeout,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: String,
}

impl ApiError {
    /// The stable machine-readable code, also the `result` label of the offers metric.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed",
            ApiError::MissingToken => "missing_token",
            ApiError::WrongToken => "wrong_token",
            ApiError::UnknownSession(_) => "session_not_found",
            ApiError::CameraBusy(_) => "camera_busy",
            ApiError::TooLarge(_) => "too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::PodUnreachable(_) => "pod_unreachable",
            ApiError::NotReady { .. } => "session_not_ready",
            ApiError::PodTimeout => "pod_timeout",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingToken => StatusCode::UNAUTHORIZED,
            ApiError::WrongToken => StatusCode::FORBIDDEN,
            ApiError::UnknownSession(_) => StatusCode::NOT_FOUND,
            ApiError::CameraBusy(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PodUnreachable(_) => StatusCode::BAD_GATEWAY,
            ApiError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PodTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } | ApiError::NotReady { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { error: Detail { code: self.code(), message: self.to_string() } };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let Some(after) = self.retry_after() {
            // Whole seconds, rounded up so a client never retries too early.
            let secs = after.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn render(error: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (status, retry, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn renders_json_body_with_code_and_message() {
        let (status, retry, body) = render(ApiError::UnknownSession("ns/cam".into())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(retry, None);
        assert_eq!(body["error"]["code"], "session_not_found");
        assert_eq!(body["error"]["message"], "unknown session ns/cam");
    }

    #[tokio::test]
    async fn retry_after_is_rounded_up_to_whole_seconds() {
        let (status, retry, body) =
            render(ApiError::RateLimited { retry_after: Duration::from_millis(1200) }).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("2"));
        assert_eq!(body["error"]["code"], "rate_limited");
        let (status, retry, _) = render(ApiError::NotReady {
            phase: "Scheduling".into(),
            detail: "waiting for a GPU".into(),
            retry_after: Duration::from_millis(10),
        })
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
    }
}
