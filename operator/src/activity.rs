//! Camera activity, read from the camera pod itself.
//!
//! camera-pod answers `GET /status` (bearer token from the session Secret) with JSON
//! `{"camera_connected": bool, "last_active": <unix seconds>}` (the last camera frame, or the pod's
//! start when no camera has connected yet). The operator polls it only
//! for Ready sessions with an `idleTimeout`, at most every `--idle-poll-interval` (15 s), over
//! HTTPS pinned to the exact certificate in the session Secret ([`PinnedCertVerifier`]). Camera
//! pods therefore need no Kubernetes API access at all (they get no service account token).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Deserialize;

/// What camera-pod reports on `GET /status`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct CameraPodStatus {
    /// A camera is connected now.
    pub camera_connected: bool,
    /// When a camera was last connected (sent as Unix seconds).
    #[serde(default, deserialize_with = "unix_seconds")]
    pub last_active: Option<Timestamp>,
}

fn unix_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let seconds = Option::<i64>::deserialize(d)?;
    seconds
        .map(|s| Timestamp::from_second(s).map_err(serde::de::Error::custom))
        .transpose()
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
    /// The request failed or the answer was not the expected JSON.
    #[error("GET /status: {0}")]
    Http(#[from] reqwest::Error),
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
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Fetches `<endpoint>/status` with `token`, trusting only `cert_pem`.
pub async fn fetch_status(endpoint: &str, token: &str, cert_pem: &[u8]) -> Result<CameraPodStatus, ActivityError> {
    let tls = PinnedCertVerifier::from_pem(cert_pem)?.client_config()?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(5))
        .build()?;
    Ok(client
        .get(format!("{endpoint}/status"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::SecretMaterial;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one HTTPS response on loopback with the given certificate; returns the URL.
    async fn one_shot_server(material: &SecretMaterial, body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let certs: Vec<_> = rustls_pemfile::certs(&mut material.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut material.key_pem.as_bytes()).unwrap().unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
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
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (url, task)
    }

    #[tokio::test]
    async fn polls_with_token_over_pinned_tls() {
        let material = SecretMaterial::generate("ns", "cam").unwrap();
        let (url, server) = one_shot_server(&material, r#"{"camera_connected":false,"last_active":1767323045}"#).await;
        let status = fetch_status(&url, "tok123", material.cert_pem.as_bytes()).await.unwrap();
        assert!(!status.camera_connected);
        assert_eq!(status.last_active, Some("2026-01-02T03:04:05Z".parse().unwrap()));
        let request = server.await.unwrap().to_lowercase();
        assert!(request.starts_with("get /status "), "{request}");
        assert!(request.contains("authorization: bearer tok123"), "{request}");
    }

    #[tokio::test]
    async fn refuses_a_different_certificate() {
        let served = SecretMaterial::generate("ns", "cam").unwrap();
        let pinned = SecretMaterial::generate("ns", "cam").unwrap();
        let (url, server) = one_shot_server(&served, r#"{"camera_connected":true}"#).await;
        let result = fetch_status(&url, "t", pinned.cert_pem.as_bytes()).await;
        assert!(matches!(result, Err(ActivityError::Http(_))), "{result:?}");
        server.abort();
    }

    #[test]
    fn garbage_pem_is_an_error() {
        assert!(matches!(PinnedCertVerifier::from_pem(b"nope"), Err(ActivityError::NoCertificate)));
    }
}
