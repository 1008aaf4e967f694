//! Forwarding an offer to a camera pod: one HTTPS client per pinned pod certificate (the pod's
//! self-signed certificate is the only one accepted from it), and the mapping of the pod's
//! answer to what the browser gets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::activity::{ActivityError, PinnedCertVerifier};
use super::sessions::Target;

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
    plain: reqwest::Client,
    pinned: Mutex<HashMap<[u8; 32], reqwest::Client>>,
}

/// Bounds the map when certificates churn; clients are cheap to rebuild.
const MAX_PINNED_CLIENTS: usize = 1024;

impl PodClients {
    pub fn new(timeout: Duration) -> Result<Self, ClientError> {
        // Plain-HTTP endpoints only: with no trusted roots, HTTPS through this client always fails.
        let no_trust = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let plain = Self::builder(timeout).use_preconfigured_tls(no_trust).build()?;
        Ok(Self { timeout, plain, pinned: Mutex::new(HashMap::new()) })
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
        let mut pinned = self.pinned.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = pinned.get(&fingerprint) {
            return Ok(client.clone());
        }
        // The pod's address is a node IP its certificate need not name: the pin replaces name
        // and chain checks.
        let tls = PinnedCertVerifier::from_pem(certificate_pem)?.client_config()?;
        let client = Self::builder(self.timeout).use_preconfigured_tls(tls).build()?;
        if pinned.len() >= MAX_PINNED_CLIENTS {
            pinned.clear();
        }
        pinned.insert(fingerprint, client.clone());
        Ok(client)
    }

    /// Sends the offer body to `<endpoint>/offer` with the session's token and returns the pod's
    /// answer body unchanged.
    pub async fn forward(&self, target: &Target, body: Bytes) -> Result<Bytes, ApiError> {
        let client = match &target.pod_certificate {
            Some(pem) if target.endpoint.starts_with("https://") => self.client_for(pem).map_err(|error| {
                tracing::warn!(%error, "cannot build a client for the pod certificate");
                ApiError::PodUnreachable("camera pod certificate is unusable".into())
            })?,
            _ => self.plain.clone(),
        };
        let mut authorization = b"Bearer ".to_vec();
        authorization.extend_from_slice(&target.token);
        let response = client
            .post(format!("{}/offer", target.endpoint))
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        let body = response.bytes().await.map_err(request_error)?;
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

#[derive(Deserialize)]
struct PodError {
    error: PodErrorDetail,
}

#[derive(Deserialize)]
struct PodErrorDetail {
    #[serde(default)]
    message: String,
}

/// Maps the pod's HTTP answer to the browser's: success passes through, the pod's own client
/// errors keep their meaning, anything else means the pod is broken from the browser's view.
pub fn pod_answer(status: StatusCode, body: &[u8]) -> Result<(), ApiError> {
    if status.is_success() {
        return Ok(());
    }
    let message = serde_json::from_slice::<PodError>(body).map(|e| e.error.message).unwrap_or_default();
    let or = |fallback: &str| if message.is_empty() { fallback.to_owned() } else { message.clone() };
    Err(match status {
        StatusCode::CONFLICT => ApiError::CameraBusy(or("camera already connected")),
        StatusCode::BAD_REQUEST => ApiError::Malformed(or("camera pod rejected the offer")),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(super::app::BODY_LIMIT),
        StatusCode::SERVICE_UNAVAILABLE => ApiError::NotReady {
            phase: "Starting".into(),
            detail: or("camera pod is starting"),
            retry_after: super::sessions::NOT_READY_RETRY,
        },
        StatusCode::GATEWAY_TIMEOUT => ApiError::PodTimeout,
        other => {
            // 401/403 here mean the router's credential for the pod is wrong: not the browser's fault.
            tracing::warn!(status = %other, "camera pod refused the forwarded offer");
            ApiError::PodUnreachable(format!("camera pod answered {}", other.as_u16()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> &'static [u8] {
        br#"{"error":{"code":"camera_busy","message":"a camera is already connected"}}"#
    }

    #[test]
    fn success_passes_and_pod_errors_keep_their_meaning() {
        assert_eq!(pod_answer(StatusCode::OK, b"{}"), Ok(()));
        assert_eq!(
            pod_answer(StatusCode::CONFLICT, busy()),
            Err(ApiError::CameraBusy("a camera is already connected".into()))
        );
        assert_eq!(pod_answer(StatusCode::CONFLICT, b"not json"), Err(ApiError::CameraBusy("camera already connected".into())));
        assert!(matches!(pod_answer(StatusCode::BAD_REQUEST, b""), Err(ApiError::Malformed(_))));
        assert!(matches!(pod_answer(StatusCode::SERVICE_UNAVAILABLE, b""), Err(ApiError::NotReady { .. })));
        // The pod's reason reaches the browser, e.g. a media port another process holds.
        let port_taken = br#"{"error":{"code":"media_port_unavailable","message":"the media UDP port 10.0.0.5:40001 is not available"}}"#;
        assert!(matches!(
            pod_answer(StatusCode::SERVICE_UNAVAILABLE, port_taken),
            Err(ApiError::NotReady { detail, .. }) if detail == "the media UDP port 10.0.0.5:40001 is not available"
        ));
        assert_eq!(pod_answer(StatusCode::GATEWAY_TIMEOUT, b""), Err(ApiError::PodTimeout));
    }

    #[test]
    fn pod_auth_failures_and_server_errors_are_bad_gateway() {
        for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN, StatusCode::INTERNAL_SERVER_ERROR] {
            assert_eq!(
                pod_answer(status, b""),
                Err(ApiError::PodUnreachable(format!("camera pod answered {}", status.as_u16())))
            );
        }
    }

    #[test]
    fn a_pinned_client_is_reused_and_bad_pem_is_rejected() {
        let Ok(clients) = PodClients::new(Duration::from_secs(1)) else { panic!("client") };
        assert!(matches!(clients.client_for(b"not a pem"), Err(ClientError::Certificate(ActivityError::NoCertificate))));
        let Ok(cert) = rcgen::generate_simple_self_signed(vec!["pod".into()]) else { panic!("rcgen") };
        let pem = cert.cert.pem();
        assert!(clients.client_for(pem.as_bytes()).is_ok());
        assert!(clients.client_for(pem.as_bytes()).is_ok());
        assert_eq!(clients.pinned.lock().map(|m| m.len()).unwrap_or_default(), 1);
    }
}
