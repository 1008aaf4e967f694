//! The router's serving certificate: read from a `kubernetes.io/tls` Secret (written by the
//! operator's ACME client or by cert-manager) and swapped atomically when it changes. New TLS
//! handshakes get the new certificate; established connections keep the one they started with.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("secret has no {0}")]
    MissingKey(&'static str),
    #[error("no certificate in tls.crt")]
    NoCertificate,
    #[error("no private key in tls.key")]
    NoPrivateKey,
    #[error("PEM: {0}")]
    Pem(#[from] std::io::Error),
    #[error("certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Parses a PEM chain and PEM key into a key rustls can serve, checking that they match.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertificateError> {
    let chain = rustls_pemfile::certs(&mut &chain_pem[..]).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate);
    }
    let key =
        rustls_pemfile::private_key(&mut &key_pem[..])?.ok_or(CertificateError::NoPrivateKey)?;
    Ok(CertifiedKey::from_der(
        chain,
        key,
        &rustls::crypto::ring::default_provider(),
    )?)
}

/// Reads `tls.crt` and `tls.key` of a TLS Secret.
pub fn certified_key_from_secret(secret: &Secret) -> Result<CertifiedKey, CertificateError> {
    let data = secret.data.as_ref();
    let get = |key: &'static str| {
        data.and_then(|d| d.get(key))
            .ok_or(CertificateError::MissingKey(key))
    };
    certified_key(&get("tls.crt")?.0, &get("tls.key")?.0)
}

/// Expiry of the end-entity certificate, seconds since the Unix epoch.
pub fn not_after(key: &CertifiedKey) -> Option<i64> {
    let leaf = key.cert.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// The certificate every new handshake gets; replaced as a whole, never mutated.
#[derive(Debug, Default)]
pub struct SwappableCertificate {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl SwappableCertificate {
    pub fn replace(&self, key: CertifiedKey) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Some(Arc::new(key));
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn is_loaded(&self) -> bool {
        self.current().is_some()
    }
}

impl ResolvesServerCert for SwappableCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// A rustls server configuration that serves whatever `certificate` holds at handshake time.
pub fn server_config(certificate: Arc<SwappableCertificate>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Follows one TLS Secret and loads every valid version of it. An invalid or deleted Secret
/// leaves the current certificate in place.
pub async fn watch_secret(
    client: Client,
    namespace: &str,
    name: &str,
    certificate: Arc<SwappableCertificate>,
    metrics: Arc<super::metrics::Metrics>,
) {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut secrets = crate::runtime::watch_backoff::watch_with_backoff(api, config)
        .applied_objects()
        .boxed();
    while let Some(event) = secrets.next().await {
        match event {
            Ok(secret) => match certified_key_from_secret(&secret) {
                Ok(key) => {
                    let expiry = not_after(&key);
                    certificate.replace(key);
                    metrics.certificate_reloads.inc();
                    if let Some(expiry) = expiry {
                        metrics.certificate_not_after.set(expiry);
                    }
                    tracing::info!(%namespace, %name, not_after = ?expiry, "serving certificate loaded");
                }
                Err(error) => {
                    tracing::warn!(%namespace, %name, %error, "TLS secret unusable, keeping the current certificate")
                }
            },
            Err(error) => tracing::warn!(%namespace, %name, %error, "watching the TLS secret"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let Ok(cert) = rcgen::generate_simple_self_signed(vec![name.into()]) else {
            panic!("rcgen")
        };
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn loads_a_matching_pair_and_rejects_mismatches() {
        let (cert_a, key_a) = self_signed("a.example");
        let (_, key_b) = self_signed("b.example");
        let Ok(key) = certified_key(cert_a.as_bytes(), key_a.as_bytes()) else {
            panic!("valid pair")
        };
        assert!(not_after(&key).is_some_and(|t| t > 0));
        assert!(matches!(
            certified_key(cert_a.as_bytes(), key_b.as_bytes()),
            Err(CertificateError::Rustls(_))
        ));
        assert!(matches!(
            certified_key(b"", key_a.as_bytes()),
            Err(CertificateError::NoCertificate)
        ));
        assert!(matches!(
            certified_key(cert_a.as_bytes(), b""),
            Err(CertificateError::NoPrivateKey)
        ));
    }

    #[test]
    fn replace_swaps_the_whole_key() {
        let swappable = SwappableCertificate::default();
        assert!(!swappable.is_loaded());
        let (cert_a, key_a) = self_signed("a.example");
        let (cert_b, key_b) = self_signed("b.example");
        let (Ok(a), Ok(b)) = (
            certified_key(cert_a.as_bytes(), key_a.as_bytes()),
            certified_key(cert_b.as_bytes(), key_b.as_bytes()),
        ) else {
            panic!("valid pairs")
        };
        swappable.replace(a);
        let held = swappable.current();
        swappable.replace(b);
        let now = swappable.current();
        assert!(
            held.zip(now)
                .is_some_and(|(held, now)| held.cert != now.cert)
        );
    }
}
