//! Camera activity, read from the camera pod itself.
//!
//! camera-pod answers `GET /status` (bearer token from the session Secret) with the contract's
//! [`CameraStatus`]: whether a camera is connected and `last_active` (Unix seconds of the last
//! camera frame, or of the pod's start when no camera has connected yet). The operator polls it only
//! for Ready sessions with an `idleTimeout`, at most every `--idle-poll-interval` (15 s), over
//! HTTPS pinned to the exact certificate in the session Secret ([`PinnedCertVerifier`]). Camera
//! pods therefore need no Kubernetes API access at all (they get no service account token).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use k8s_openapi::jiff::Timestamp;
use p2pcamera_api::wire::{CameraStatus, STATUS_BODY_LIMIT};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// When the camera pod last saw its camera ([`CameraStatus::last_active`] as a time); `None`
/// when the seconds are beyond what a timestamp holds.
pub fn last_active(status: &CameraStatus) -> Option<Timestamp> {
    i64::try_from(status.last_active)
        .ok()
        .and_then(|seconds| Timestamp::from_second(seconds).ok())
}

/// A camera pod's answer body that could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed or timed out while reading.
    #[error("reading the body: {0}")]
    Read(#[from] reqwest::Error),
    /// The body is over the limit; the rest of it is not read.
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// Reads a camera pod's answer body, refusing (not buffering) one larger than `limit` bytes.
pub async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Bytes, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Errors polling a camera pod.
#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    /// The Secret holds no usable certificate.
    #[error("the session secret holds no PEM certificate")]
    NoCertificate,
    /// TLS setup failed.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The request failed or the pod answered an error status.
    #[error("GET /status: {0}")]
    Http(#[from] reqwest::Error),
    /// The answer could not be read whole.
    #[error("GET /status: {0}")]
    Body(#[from] BodyError),
    /// The answer is not a [`CameraStatus`].
    #[error("GET /status: {0}")]
    Json(#[from] serde_json::Error),
}

/// An HTTPS client that trusts only the certificate `cert_pem` (its first one), whatever name or
/// address the pod is reached under, and gives each request `timeout`.
pub fn pinned_client(cert_pem: &[u8], timeout: Duration) -> Result<reqwest::Client, ActivityError> {
    let tls = PinnedCertVerifier::from_pem(cert_pem)?.client_config()?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .build()?)
}

/// Accepts exactly one certificate, whatever name or address it is reached under, and checks
/// the handshake signatures with it.
#[derive(Debug)]
pub struct PinnedCertVerifier {
    pinned: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCertVerifier {
    /// A verifier that accepts only `pinned`.
    pub fn new(pinned: CertificateDer<'static>) -> Self {
        Self {
            pinned,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    /// Parses the first certificate of a PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ActivityError> {
        let cert = rustls_pemfile::certs(&mut &pem[..])
            .next()
            .and_then(Result::ok)
            .ok_or(ActivityError::NoCertificate)?;
        Ok(Self::new(cert))
    }

    /// A rustls client configuration trusting only the pinned certificate.
    pub fn client_config(self) -> Result<rustls::ClientConfig, ActivityError> {
        let provider = self.provider.clone();
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(self))
            .with_no_client_auth())
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Fetches `<endpoint>/status` with `token`, trusting only `cert_pem`.
pub async fn fetch_status(
    endpoint: &str,
    token: &str,
    cert_pem: &[u8],
) -> Result<CameraStatus, ActivityError> {
    let response = pinned_client(cert_pem, Duration::from_secs(5))?
        .get(format!("{endpoint}/status"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    let body = read_body(response, STATUS_BODY_LIMIT).await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::SecretMaterial;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one HTTPS response (`response`, raw) on loopback with the given certificate; returns
    /// the URL and the request it got.
    async fn one_shot_server(
        material: &SecretMaterial,
        response: String,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let certs: Vec<_> = rustls_pemfile::certs(&mut material.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut material.key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return String::new();
            };
            let mut request = vec![0u8; 4096];
            let n = tls.read(&mut request).await.unwrap_or(0);
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (url, task)
    }

    fn json_response(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// The same body in one chunk of `Transfer-Encoding: chunked`: no length known up front.
    fn chunked_json_response(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    }

    const STATUS: &str = r#"{"camera_connected":false,"peer_state":"none","last_active":1767323045,"filter":"passthrough"}"#;

    #[tokio::test]
    async fn polls_with_token_over_pinned_tls() {
        let material = SecretMaterial::generate("ns", "cam").unwrap();
        let (url, server) = one_shot_server(&material, json_response(STATUS)).await;
        let status = fetch_status(&url, "tok123", material.cert_pem.as_bytes())
            .await
            .unwrap();
        assert!(!status.camera_connected);
        assert_eq!(
            last_active(&status),
            Some("2026-01-02T03:04:05Z".parse().unwrap())
        );
        let request = server.await.unwrap().to_lowercase();
        assert!(request.starts_with("get /status "), "{request}");
        assert!(
            request.contains("authorization: bearer tok123"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_status_over_the_limit_is_an_error_with_or_without_a_length() {
        let material = SecretMaterial::generate("ns", "cam").unwrap();
        let padded = STATUS.replace("passthrough", &"p".repeat(STATUS_BODY_LIMIT));
        for response in [json_response(&padded), chunked_json_response(&padded)] {
            let (url, server) = one_shot_server(&material, response).await;
            let result = fetch_status(&url, "t", material.cert_pem.as_bytes()).await;
            assert!(
                matches!(
                    result,
                    Err(ActivityError::Body(BodyError::TooLarge {
                        limit: STATUS_BODY_LIMIT
                    }))
                ),
                "{result:?}"
            );
            server.abort();
        }
        // Under the limit, the chunked form reads like the other.
        let (url, _) = one_shot_server(&material, chunked_json_response(STATUS)).await;
        assert!(
            fetch_status(&url, "t", material.cert_pem.as_bytes())
                .await
                .is_ok()
        );
    }

    #[test]
    fn last_active_beyond_a_timestamp_is_unknown() {
        let status = |last_active| CameraStatus {
            camera_connected: false,
            peer_state: "none".into(),
            last_active,
            filter: "passthrough".into(),
            first_answer_ms: None,
            first_frame_ms: None,
            connection: None,
        };
        assert_eq!(last_active(&status(0)), Some(Timestamp::UNIX_EPOCH));
        assert_eq!(last_active(&status(u64::MAX)), None);
    }

    #[tokio::test]
    async fn refuses_a_different_certificate() {
        let served = SecretMaterial::generate("ns", "cam").unwrap();
        let pinned = SecretMaterial::generate("ns", "cam").unwrap();
        let (url, server) = one_shot_server(&served, json_response(STATUS)).await;
        let result = fetch_status(&url, "t", pinned.cert_pem.as_bytes()).await;
        assert!(matches!(result, Err(ActivityError::Http(_))), "{result:?}");
        server.abort();
    }

    #[test]
    fn garbage_pem_is_an_error() {
        assert!(matches!(
            PinnedCertVerifier::from_pem(b"nope"),
            Err(ActivityError::NoCertificate)
        ));
    }
}
