//! The one error type of the HTTP API: every refusal a client can see, rendered as the contract's
//! [`ErrorBody`] with the status of its [`ErrorCode`] (and `Retry-After` for codes worth retrying).
//! Refusals of the client's request are logged at debug level; a 500 is logged with its detail,
//! which the client does not get.

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use p2pcamera_api::{ErrorBody, ErrorCode};

use super::claim::ClaimError;
use crate::filter::SwitchError;
use crate::media::{MediaError, SdpError};

/// Seconds a client waits before retrying a request refused with a retryable code.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// What a 500 tells the client instead of its detail.
const INTERNAL_MESSAGE: &str = "internal error, see the camera pod's log";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body could not be read.
    #[error("{0}")]
    BadBody(String),
    #[error("the body must be application/json")]
    UnsupportedContentType,
    /// The body is not the JSON the endpoint takes.
    #[error("{0}")]
    InvalidJson(String),
    #[error("type must be \"offer\", not {0:?}")]
    NotAnOffer(String),
    #[error("missing bearer token")]
    MissingToken,
    #[error("wrong bearer token")]
    WrongToken,
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    /// The initial filter is warming up, or the pod cannot serve at all (the reason says which).
    #[error("{0}")]
    NotReady(String),
    #[error("this camera pod is in a warm pool: it serves no camera until a session claims it")]
    NotClaimed,
    #[error("this camera pod is already claimed by another session")]
    AlreadyClaimed,
    /// A warm-pool claim's body was refused.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    FilterSwitch(#[from] SwitchError),
}

impl ApiError {
    /// The contract's code: decides the status, and is the `result` label of the offers metric.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadBody(_) => ErrorCode::BadBody,
            ApiError::UnsupportedContentType => ErrorCode::UnsupportedContentType,
            ApiError::InvalidJson(_) => ErrorCode::InvalidJson,
            ApiError::NotAnOffer(_) => ErrorCode::NotAnOffer,
            ApiError::MissingToken => ErrorCode::MissingToken,
            ApiError::WrongToken => ErrorCode::WrongToken,
            ApiError::TooLarge(_) => ErrorCode::TooLarge,
            ApiError::NotReady(_) => ErrorCode::NotReady,
            ApiError::NotClaimed => ErrorCode::NotClaimed,
            ApiError::AlreadyClaimed => ErrorCode::AlreadyClaimed,
            ApiError::Claim(error) => error.code(),
            ApiError::Media(error) => match error {
                MediaError::Sdp(
                    SdpError::Unparsable(_)
                    | SdpError::TooManyCandidates { .. }
                    | SdpError::NonUnicastCandidate { .. },
                ) => ErrorCode::InvalidSdp,
                MediaError::Sdp(SdpError::NoVideo) => ErrorCode::NoVideo,
                MediaError::Sdp(SdpError::UnsupportedCodecs { .. }) => ErrorCode::UnsupportedCodec,
                MediaError::Busy => ErrorCode::CameraBusy,
                MediaError::PortUnavailable { .. } => ErrorCode::MediaPortUnavailable,
                MediaError::WebRtc(_)
                | MediaError::GatheringTimeout
                | MediaError::NoSendCodec
                | MediaError::Threads(_) => ErrorCode::Internal,
                MediaError::RelayUnavailable => ErrorCode::RelayUnavailable,
                MediaError::ConnectionGone => ErrorCode::ConnectionGone,
            },
            ApiError::FilterSwitch(error) => error.code(),
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let message = match code {
            ErrorCode::Internal => {
                tracing::error!(%code, error = %self, "request failed");
                INTERNAL_MESSAGE.to_owned()
            }
            // Not the client's doing: whoever runs the pod must see it.
            ErrorCode::MediaPortUnavailable => {
                tracing::error!(%code, error = %self, "request refused");
                self.to_string()
            }
            _ => {
                tracing::debug!(%code, error = %self, "request refused");
                self.to_string()
            }
        };
        let mut response = (self.status(), Json(ErrorBody::new(code, message))).into_response();
        if code.retryable() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, RETRY_AFTER_SECONDS.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{DownloadError, FilterError};
    use axum::body::to_bytes;

    async fn render(error: ApiError) -> (StatusCode, Option<String>, ErrorBody) {
        let response = error.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (
            status,
            retry_after,
            ErrorBody::parse(&body).expect("an error body"),
        )
    }

    #[tokio::test]
    async fn status_and_body_come_from_the_code() {
        let (status, retry_after, body) = render(ApiError::Media(MediaError::Busy)).await;
        assert_eq!((status, retry_after), (StatusCode::CONFLICT, None));
        assert_eq!(
            body,
            ErrorBody::new(ErrorCode::CameraBusy, "a camera is already connected")
        );
        let (status, _, body) = render(ApiError::TooLarge(65536)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            body,
            ErrorBody::new(ErrorCode::TooLarge, "request body over 65536 bytes")
        );
        let unknown =
            SwitchError::Filter(crate::filter::FilterError::UnknownFilter("sepia".into()));
        let (status, _, body) = render(unknown.into()).await;
        assert_eq!(
            (status, body.error.code),
            (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidFilter)
        );
    }

    #[tokio::test]
    async fn refused_and_failed_model_downloads_say_nothing_about_the_server() {
        let url = "https://10.0.0.7:8443/internal/m.onnx";
        let sha256 = "ab".repeat(32);
        let refused = SwitchError::Filter(FilterError::ModelNotAllowed {
            url: url.into(),
            sha256: sha256.clone(),
        });
        let (status, _, body) = render(refused.into()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            ErrorBody::new(
                ErrorCode::ModelNotAllowed,
                "this model is not allowed on this camera"
            )
        );
        let actual = "cd".repeat(32);
        for source in [
            DownloadError::Status(reqwest::StatusCode::NOT_FOUND),
            DownloadError::ChecksumMismatch {
                expected: sha256.clone(),
                actual: actual.clone(),
            },
            DownloadError::TooLarge { limit: 1000 },
        ] {
            let failed = SwitchError::Filter(FilterError::Download {
                url: url.into(),
                source,
            });
            let (status, _, body) = render(failed.into()).await;
            assert_eq!(
                (status, body.error.code),
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidFilter)
            );
            let message = &body.error.message;
            for secret in [url, "404", &actual, "1000"] {
                assert!(!message.contains(secret), "{message}");
            }
            assert!(message.contains("could not be downloaded"), "{message}");
        }
        let (status, _, body) = render(SwitchError::Superseded.into()).await;
        assert_eq!(
            (status, body.error.code),
            (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidFilter)
        );
        assert!(body.error.message.contains("superseded"), "{body:?}");
    }

    #[tokio::test]
    async fn retryable_codes_say_when_to_retry() {
        let (status, retry_after, body) = render(ApiError::NotReady("warming up".into())).await;
        assert_eq!(
            (status, retry_after.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
        );
        assert_eq!(body, ErrorBody::new(ErrorCode::NotReady, "warming up"));
        let port = MediaError::PortUnavailable {
            addr: ([127, 0, 0, 1], 31000).into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let (status, retry_after, body) = render(port.into()).await;
        assert_eq!(
            (status, retry_after.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
        );
        assert_eq!(body.error.code, ErrorCode::MediaPortUnavailable);
        assert!(
            body.error.message.contains("127.0.0.1:31000"),
            "{}",
            body.error.message
        );
    }

    #[tokio::test]
    async fn an_unclaimed_pod_asks_to_retry_and_a_claimed_one_refuses_other_claims() {
        let (status, retry_after, body) = render(ApiError::NotClaimed).await;
        assert_eq!(
            (status, retry_after.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
        );
        assert_eq!(body.error.code, ErrorCode::NotClaimed);
        let (status, retry_after, body) = render(ApiError::AlreadyClaimed).await;
        assert_eq!((status, retry_after), (StatusCode::CONFLICT, None));
        assert_eq!(body.error.code, ErrorCode::AlreadyClaimed);
        let (status, _, body) = render(ClaimError::PublicIp("node".into()).into()).await;
        assert_eq!(
            (status, body.error.code),
            (StatusCode::BAD_REQUEST, ErrorCode::InvalidJson)
        );
        assert!(body.error.message.contains("public_ip"), "{body:?}");
    }

    #[tokio::test]
    async fn internal_errors_hide_their_detail() {
        for error in [
            ApiError::Media(MediaError::GatheringTimeout),
            ApiError::FilterSwitch(SwitchError::Stopped),
        ] {
            let (status, retry_after, body) = render(error).await;
            assert_eq!(
                (status, retry_after),
                (StatusCode::INTERNAL_SERVER_ERROR, None)
            );
            assert_eq!(body, ErrorBody::new(ErrorCode::Internal, INTERNAL_MESSAGE));
        }
    }
}
