//! The operator's own calls on camera pods: a warm-pool pod's `POST /claim`
//! ([`crate::pool::claim::send_claim`]) and a starting pod's `POST /public-address`
//! ([`hand_public_address`]). Both go over HTTPS pinned to the exact certificate the operator
//! made for the pod ([`activity::pinned_client`]), with a token only the operator and the pod hold
//! (never the session's bearer token, which the router and browsers have), and read the answer up
//! to a size limit.

use std::time::Duration;

use p2pcamera_api::ErrorBody;
use p2pcamera_api::wire::{PUBLIC_ADDRESS_PATH, PublicAddress};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::activity::{self, ActivityError, BodyError};

/// How long one call may take (the pod answers at once; what it starts runs afterwards).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from a pod.
const REPLY_BODY_LIMIT: usize = 16 * 1024;

/// Why a call on a pod failed.
#[derive(Debug, thiserror::Error)]
pub enum PodCallError {
    /// TLS or HTTP client setup, or the pinned certificate.
    #[error(transparent)]
    Client(#[from] ActivityError),
    /// The request failed (connection, timeout).
    #[error("POST {path}: {source}")]
    Http {
        path: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The answer could not be read whole.
    #[error("POST {path}: {source}")]
    Body {
        path: &'static str,
        #[source]
        source: BodyError,
    },
    /// The pod refused the call.
    #[error("POST {path}: the pod answered {status}: {message}")]
    Refused {
        path: &'static str,
        /// HTTP status.
        status: u16,
        /// The error body's message and code, or the start of the body.
        message: String,
    },
    /// The answer is not what the endpoint answers.
    #[error("POST {path}: {source}")]
    Json {
        path: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// `POST <endpoint><path>` with `request` as JSON and `token` as bearer token, trusting only the
/// certificate `pod_cert_pem`; the pod's JSON answer.
pub async fn post_json<Request: Serialize, Reply: DeserializeOwned>(
    endpoint: &str,
    path: &'static str,
    token: &str,
    pod_cert_pem: &[u8],
    request: &Request,
) -> Result<Reply, PodCallError> {
    let response = activity::pinned_client(pod_cert_pem, CALL_TIMEOUT)?
        .post(format!("{endpoint}{path}"))
        .bearer_auth(token)
        .json(request)
        .send()
        .await
        .map_err(|source| PodCallError::Http { path, source })?;
    let status = response.status();
    let body = activity::read_body(response, REPLY_BODY_LIMIT)
        .await
        .map_err(|source| PodCallError::Body { path, source })?;
    if !status.is_success() {
        let message = ErrorBody::parse(&body).map_or_else(
            || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            |e| format!("{} ({})", e.error.message, e.error.code),
        );
        return Err(PodCallError::Refused {
            path,
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&body).map_err(|source| PodCallError::Json { path, source })
}

/// Hands `address`, its node's public address, to the pod at `endpoint` (authenticated by the
/// session's `operator_token`, trusting only the session's certificate `pod_cert_pem`); the
/// address the pod advertises, which differs only when its camera was set up with another one.
pub async fn hand_public_address(
    endpoint: &str,
    operator_token: &str,
    pod_cert_pem: &[u8],
    address: &str,
) -> Result<String, PodCallError> {
    let request = PublicAddress {
        public_ip: address.to_owned(),
    };
    let reply: PublicAddress = post_json(
        endpoint,
        PUBLIC_ADDRESS_PATH,
        operator_token,
        pod_cert_pem,
        &request,
    )
    .await?;
    Ok(reply.public_ip)
}
