//! The router's one error type: every failure a browser can see, rendered as the contract's
//! [`ErrorBody`] with the HTTP status of its [`ErrorCode`].

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use p2pcamera_api::session::SessionKeyError;
use p2pcamera_api::wire::REQUEST_BODY_LIMIT;
use p2pcamera_api::{ErrorBody, ErrorCode};

use super::pod_endpoint::EndpointError;
use super::sessions::NOT_READY_RETRY;

/// An error answered to the client. 4xx are the client's doing and are not logged;
/// 5xx are logged where they are produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("unreadable request body")]
    BadBody,
    #[error("the request body did not arrive within {} s", .0.as_secs_f64())]
    BodyTimeout(Duration),
    #[error("invalid offer JSON: {0}")]
    InvalidJson(String),
    #[error("type must be \"offer\"")]
    NotAnOffer,
    #[error("sdp is empty")]
    EmptySdp,
    #[error("missing \"session\" field")]
    MissingSession,
    #[error(transparent)]
    InvalidSession(#[from] SessionKeyError),
    #[error("missing bearer token")]
    MissingToken,
    /// Also the answer for a session that does not exist: the two are not told apart.
    #[error("the token does not grant access to this session")]
    WrongToken,
    #[error("request body is larger than {limit} bytes", limit = REQUEST_BODY_LIMIT)]
    TooLarge,
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    PodUnreachable(String),
    #[error("session is {phase}: {detail}")]
    NotReady {
        phase: String,
        detail: String,
        retry_after: Duration,
    },
    #[error("camera pod did not answer in time")]
    PodTimeout,
    /// The session's `status.endpoint` is not one the router connects to; why is logged, not told.
    #[error("the router does not connect to this session's camera pod address")]
    EndpointRejected(EndpointError),
    /// The camera pod refused the offer: `code` is what the browser gets for the pod's code
    /// ([`ErrorCode::forwarded`]), `message` the pod's.
    #[error("{message}")]
    Pod { code: ErrorCode, message: String },
}

impl ApiError {
    /// The contract's code, also the `result` label of the offers metric.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadBody | ApiError::BodyTimeout(_) => ErrorCode::BadBody,
            ApiError::InvalidJson(_) => ErrorCode::InvalidJson,
            ApiError::NotAnOffer => ErrorCode::NotAnOffer,
            ApiError::EmptySdp => ErrorCode::InvalidSdp,
            ApiError::MissingSession | ApiError::InvalidSession(_) => ErrorCode::InvalidSession,
            ApiError::MissingToken => ErrorCode::MissingToken,
            ApiError::WrongToken => ErrorCode::WrongToken,
            ApiError::TooLarge => ErrorCode::TooLarge,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::PodUnreachable(_) => ErrorCode::PodUnreachable,
            ApiError::NotReady { .. } => ErrorCode::SessionNotReady,
            ApiError::PodTimeout => ErrorCode::PodTimeout,
            ApiError::EndpointRejected(_) => ErrorCode::EndpointRejected,
            ApiError::Pod { code, .. } => *code,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// When the client may try again; set exactly for the retryable codes.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } | ApiError::NotReady { retry_after, .. } => {
                Some(*retry_after)
            }
            ApiError::Pod { code, .. } if code.retryable() => Some(NOT_READY_RETRY),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(self.code(), self.to_string());
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
pub(crate) mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// What a client sees of an error: status, `Retry-After` and the parsed body.
    pub(crate) async fn render(error: ApiError) -> (StatusCode, Option<String>, Option<ErrorBody>) {
        let response = error.into_response();
        let status = response.status();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (status, retry, ErrorBody::parse(&bytes))
    }

    #[tokio::test]
    async fn renders_the_contract_body_with_code_and_message() {
        let (status, retry, body) = render(ApiError::WrongToken).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(retry, None);
        assert_eq!(
            body,
            Some(ErrorBody::new(
                ErrorCode::WrongToken,
                "the token does not grant access to this session"
            ))
        );
        let (status, _, body) = render(ApiError::EndpointRejected(EndpointError::NotHttps)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            body,
            Some(ErrorBody::new(
                ErrorCode::EndpointRejected,
                "the router does not connect to this session's camera pod address"
            ))
        );
        let (status, _, body) = render(ApiError::BodyTimeout(Duration::from_secs(15))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            Some(ErrorBody::new(
                ErrorCode::BadBody,
                "the request body did not arrive within 15 s"
            ))
        );
        let (status, _, body) = render(ApiError::EmptySdp).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            Some(ErrorBody::new(ErrorCode::InvalidSdp, "sdp is empty"))
        );
        let (status, _, body) = render(ApiError::TooLarge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            body,
            Some(ErrorBody::new(
                ErrorCode::TooLarge,
                "request body is larger than 65536 bytes"
            ))
        );
    }

    #[tokio::test]
    async fn retry_after_is_rounded_up_to_whole_seconds() {
        let (status, retry, body) = render(ApiError::RateLimited {
            retry_after: Duration::from_millis(1200),
        })
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("2"));
        assert_eq!(body.map(|b| b.error.code), Some(ErrorCode::RateLimited));
        let (status, retry, _) = render(ApiError::NotReady {
            phase: "Scheduling".into(),
            detail: "waiting for a GPU".into(),
            retry_after: Duration::from_millis(10),
        })
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
    }

    #[test]
    fn every_variant_has_its_codes_status_and_retries_exactly_when_retryable() {
        let key_error = "cam"
            .parse::<p2pcamera_api::SessionKey>()
            .expect_err("not namespace/name");
        let second = Duration::from_secs(1);
        let mut errors = vec![
            ApiError::BadBody,
            ApiError::InvalidJson("eof".into()),
            ApiError::NotAnOffer,
            ApiError::EmptySdp,
            ApiError::MissingSession,
            ApiError::InvalidSession(key_error),
            ApiError::MissingToken,
            ApiError::WrongToken,
            ApiError::BodyTimeout(second),
            ApiError::EndpointRejected(EndpointError::UserInfo),
            ApiError::TooLarge,
            ApiError::RateLimited {
                retry_after: second,
            },
            ApiError::PodUnreachable("gone".into()),
            ApiError::NotReady {
                phase: "Pending".into(),
                detail: String::new(),
                retry_after: second,
            },
            ApiError::PodTimeout,
        ];
        errors.extend(ErrorCode::ALL.map(|code| ApiError::Pod {
            code: code.forwarded(),
            message: String::new(),
        }));
        for error in errors {
            let code = error.code();
            assert_eq!(error.status().as_u16(), code.http_status(), "{error:?}");
            assert_eq!(error.retry_after().is_some(), code.retryable(), "{error:?}");
        }
    }
}
