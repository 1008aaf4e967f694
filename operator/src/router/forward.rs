//! Forwarding an offer to a camera pod: one HTTPS client per pinned pod certificate (the pod's
//! self-signed certificate is the only one accepted from it; there is no client without a pin),
//! and the mapping of the pod's answer to what the browser gets. The answer is read up to
//! [`ANSWER_BODY_LIMIT`], whatever the pod claims its length is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2pcamera_api::wire::{ANSWER_BODY_LIMIT, CANDIDATES_PATH, OfferRequest, TrickledCandidates};
use p2pcamera_api::{ErrorBody, ErrorCode};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::sessions::Target;
use crate::activity::{self, ActivityError, BodyError, PinnedCertVerifier};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("pod certificate: {0}")]
    Certificate(#[from] ActivityError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Clients to camera pods, reused across offers (connection pooling) and keyed by the pinned
/// certificate so a rotated certificate gets a fresh client.
pub struct PodClients {
    timeout: Duration,
    pinned: Mutex<HashMap<[u8; 32], reqwest::Client>>,
}

/// Bounds the map when certificates churn; clients are cheap to rebuild.
const MAX_PINNED_CLIENTS: usize = 1024;

impl PodClients {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            pinned: Mutex::new(HashMap::new()),
        }
    }

    fn builder(timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
    }

    fn client_for(&self, certificate_pem: &[u8]) -> Result<reqwest::Client, ClientError> {
        let fingerprint: [u8; 32] = Sha256::digest(certificate_pem).into();
        let mut pinned = self
            .pinned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = pinned.get(&fingerprint) {
            return Ok(client.clone());
        }
        // The pod's address is a node IP its certificate need not name: the pin replaces name
        // and chain checks.
        let tls = PinnedCertVerifier::from_pem(certificate_pem)?.client_config()?;
        let client = Self::builder(self.timeout)
            .use_preconfigured_tls(tls)
            .build()?;
        if pinned.len() >= MAX_PINNED_CLIENTS {
            pinned.clear();
        }
        pinned.insert(fingerprint, client.clone());
        Ok(client)
    }

    /// Sends the offer to `https://<address>/offer` with the session's token and returns the
    /// pod's answer body unchanged. The answer must be complete within the forward timeout and
    /// before `deadline` (the end of the browser's request).
    pub async fn forward(
        &self,
        target: &Target,
        offer: &OfferRequest,
        deadline: Instant,
    ) -> Result<Bytes, ApiError> {
        self.post(target, "/offer", offer, deadline).await
    }

    /// Sends candidates the browser trickled to `https://<address>/candidates`, as [`Self::forward`]
    /// sends offers; the pod answers 204 with no body.
    pub async fn trickle(
        &self,
        target: &Target,
        candidates: &TrickledCandidates,
        deadline: Instant,
    ) -> Result<(), ApiError> {
        self.post(target, CANDIDATES_PATH, candidates, deadline)
            .await
            .map(drop)
    }

    /// POSTs `body` as JSON to `path` on the pod, pinned to its certificate and with the
    /// session's token; returns the pod's body when it answered a success.
    async fn post(
        &self,
        target: &Target,
        path: &str,
        body: &impl serde::Serialize,
        deadline: Instant,
    ) -> Result<Bytes, ApiError> {
        let client = self.client_for(&target.pod_certificate).map_err(|error| {
            tracing::warn!(%error, "cannot build a client for the pod certificate");
            ApiError::PodUnreachable("camera pod certificate is unusable".into())
        })?;
        let timeout = self
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        if timeout.is_zero() {
            return Err(ApiError::PodTimeout);
        }
        let mut authorization = b"Bearer ".to_vec();
        authorization.extend_from_slice(&target.token);
        let response = client
            .post(format!("https://{}{path}", target.address))
            .timeout(timeout)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .json(body)
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        let body = activity::read_body(response, ANSWER_BODY_LIMIT)
            .await
            .map_err(|error| match error {
                BodyError::Read(error) => request_error(error),
                BodyError::TooLarge { .. } => {
                    tracing::warn!(%error, %status, "camera pod answer refused");
                    ApiError::PodUnreachable("camera pod answer is too large".into())
                }
            })?;
        pod_answer(status, &body).map(|()| body)
    }
}

fn request_error(error: reqwest::Error) -> ApiError {
    if error.is_timeout() {
        ApiError::PodTimeout
    } else {
        tracing::warn!(error = %error_chain(&error), "camera pod unreachable");
        ApiError::PodUnreachable("camera pod unreachable".into())
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The code a pod's error answer stands for when its body is not an [`ErrorBody`] (another
/// server in the way, or a camera-pod speaking other codes): the code every pod code with that
/// status forwards to, if they agree (409 is `camera_busy`, any 503 makes the session not
/// ready); `None` when the status alone cannot say (400 and 422 have several codes).
fn forwarded_by_status(status: StatusCode) -> Option<ErrorCode> {
    let mut forwarded = ErrorCode::ALL
        .into_iter()
        .filter(|code| code.http_status() == status.as_u16())
        .map(ErrorCode::forwarded);
    let first = forwarded.next()?;
    forwarded.all(|code| code == first).then_some(first)
}

/// Maps the pod's HTTP answer to the browser's: success passes through; an error answers the
/// browser what [`ErrorCode::forwarded`] makes of the pod's code, with the pod's message. What
/// makes the pod look broken (`pod_unreachable`) gets the router's own message, and the pod's
/// is logged: it is about the router's credential or the pod's insides, not the browser's offer.
pub fn pod_answer(status: StatusCode, body: &[u8]) -> Result<(), ApiError> {
    if status.is_success() {
        return Ok(());
    }
    let Some(ErrorBody { error }) = ErrorBody::parse(body) else {
        tracing::warn!(%status, body_bytes = body.len(), "camera pod answered an error without an error body");
        return Err(match forwarded_by_status(status) {
            Some(code) if code != ErrorCode::PodUnreachable => ApiError::Pod {
                code,
                message: format!("camera pod answered {status}"),
            },
            _ => pod_broken(status),
        });
    };
    Err(match error.code.forwarded() {
        ErrorCode::PodUnreachable => {
            tracing::warn!(%status, code = %error.code, message = %error.message, "camera pod refused the forwarded offer");
            pod_broken(status)
        }
        code => ApiError::Pod {
            code,
            message: error.message,
        },
    })
}

fn pod_broken(status: StatusCode) -> ApiError {
    ApiError::PodUnreachable(format!("camera pod answered {}", status.as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::error::tests::render;

    /// Whose message the browser reads.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Message {
        /// The pod's, unchanged.
        Pods,
        /// The router's `camera pod answered <status>`.
        Routers,
    }

    /// What the browser gets when the pod refuses an offer with `pod`: status, code, whose
    /// message, `Retry-After`. Spelled out per code (not computed with `forwarded`), so a change
    /// of the contract shows here.
    fn browser_gets(pod: ErrorCode) -> (u16, ErrorCode, Message, Option<&'static str>) {
        use ErrorCode::*;
        use Message::*;
        match pod {
            BadBody => (400, BadBody, Pods, None),
            UnsupportedContentType => (400, UnsupportedContentType, Pods, None),
            InvalidJson => (400, InvalidJson, Pods, None),
            NotAnOffer => (400, NotAnOffer, Pods, None),
            InvalidSdp => (400, InvalidSdp, Pods, None),
            NoVideo => (400, NoVideo, Pods, None),
            CameraBusy | AlreadyClaimed => (409, CameraBusy, Pods, None),
            TooLarge => (413, TooLarge, Pods, None),
            ConnectionGone => (410, ConnectionGone, Pods, None),
            UnsupportedCodec => (422, UnsupportedCodec, Pods, None),
            InvalidFilter => (422, InvalidFilter, Pods, None),
            // A relay-only pod without a relay credential: the pod's message names the router's
            // missing TURN flags.
            NotReady | MediaPortUnavailable | SessionNotReady | NotClaimed | RelayUnavailable => {
                (503, SessionNotReady, Pods, Some("2"))
            }
            PodTimeout => (504, PodTimeout, Pods, None),
            // The router's credential, the pod's insides or a code no pod answers: the pod is
            // broken from the browser's view, and nothing in its message is the browser's business.
            InvalidSession | MissingToken | WrongToken | SessionNotFound | RateLimited
            | Internal | PodUnreachable | EndpointRejected | ModelNotAllowed => {
                (502, PodUnreachable, Routers, None)
            }
        }
    }

    async fn browser_sees(
        status: StatusCode,
        body: &[u8],
    ) -> (u16, Option<String>, Option<ErrorBody>) {
        let Err(error) = pod_answer(status, body) else {
            panic!("{status} is an error")
        };
        let (status, retry, body) = render(error).await;
        (status.as_u16(), retry, body)
    }

    #[tokio::test]
    async fn every_pod_error_code_reaches_the_browser_as_the_contract_says() {
        for code in ErrorCode::ALL {
            let status =
                StatusCode::from_u16(code.http_status()).unwrap_or_else(|e| panic!("{code}: {e}"));
            let pod_message = format!("the camera pod says {code}");
            let Ok(body) = serde_json::to_vec(&ErrorBody::new(code, pod_message.clone())) else {
                panic!("{code}")
            };
            let (expected_status, expected_code, whose, expected_retry) = browser_gets(code);
            let expected_message = match whose {
                Message::Pods => pod_message,
                Message::Routers => format!("camera pod answered {}", status.as_u16()),
            };
            assert_eq!(
                browser_sees(status, &body).await,
                (
                    expected_status,
                    expected_retry.map(str::to_owned),
                    Some(ErrorBody::new(expected_code, expected_message))
                ),
                "pod answered {code}"
            );
        }
    }

    #[test]
    fn success_passes_through() {
        assert_eq!(
            pod_answer(StatusCode::OK, br#"{"sdp":"v=0","type":"answer"}"#),
            Ok(())
        );
        assert_eq!(pod_answer(StatusCode::CREATED, b""), Ok(()));
    }

    #[tokio::test]
    async fn an_answer_without_an_error_body_falls_back_on_its_status() {
        let cases: [(StatusCode, &[u8], u16, ErrorCode, &str); 10] = [
            (
                StatusCode::CONFLICT,
                b"not json",
                409,
                ErrorCode::CameraBusy,
                "camera pod answered 409 Conflict",
            ),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                b"",
                413,
                ErrorCode::TooLarge,
                "camera pod answered 413 Payload Too Large",
            ),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                b"<html>",
                503,
                ErrorCode::SessionNotReady,
                "camera pod answered 503 Service Unavailable",
            ),
            (
                StatusCode::GATEWAY_TIMEOUT,
                b"",
                504,
                ErrorCode::PodTimeout,
                "camera pod answered 504 Gateway Timeout",
            ),
            // Several codes share 400 and 422: the status alone does not say what was wrong.
            (
                StatusCode::BAD_REQUEST,
                b"<html>",
                502,
                ErrorCode::PodUnreachable,
                "camera pod answered 400",
            ),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                b"{}",
                502,
                ErrorCode::PodUnreachable,
                "camera pod answered 422",
            ),
            // A camera-pod that still says `unauthorized`: the router's credential, not the browser's.
            (
                StatusCode::UNAUTHORIZED,
                br#"{"error":{"code":"unauthorized","message":"missing bearer token"}}"#,
                502,
                ErrorCode::PodUnreachable,
                "camera pod answered 401",
            ),
            (
                StatusCode::NOT_FOUND,
                b"",
                502,
                ErrorCode::PodUnreachable,
                "camera pod answered 404",
            ),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                b"oops",
                502,
                ErrorCode::PodUnreachable,
                "camera pod answered 500",
            ),
            (
                StatusCode::IM_A_TEAPOT,
                b"",
                502,
                ErrorCode::PodUnreachable,
                "camera pod answered 418",
            ),
        ];
        for (status, body, expected_status, code, message) in cases {
            let retry = code.retryable().then(|| "2".to_owned());
            assert_eq!(
                browser_sees(status, body).await,
                (expected_status, retry, Some(ErrorBody::new(code, message))),
                "pod answered {status}"
            );
        }
    }

    #[test]
    fn a_pinned_client_is_reused_and_bad_pem_is_rejected() {
        let clients = PodClients::new(Duration::from_secs(1));
        assert!(matches!(
            clients.client_for(b"not a pem"),
            Err(ClientError::Certificate(ActivityError::NoCertificate))
        ));
        let Ok(cert) = rcgen::generate_simple_self_signed(vec!["pod".into()]) else {
            panic!("rcgen")
        };
        let pem = cert.cert.pem();
        assert!(clients.client_for(pem.as_bytes()).is_ok());
        assert!(clients.client_for(pem.as_bytes()).is_ok());
        assert_eq!(
            clients.pinned.lock().map(|m| m.len()).unwrap_or_default(),
            1
        );
    }
}
