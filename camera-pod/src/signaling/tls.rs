//! TLS for the signaling server: a given PEM certificate and key, or a self-signed certificate
//! for localhost generated at start-up.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} is not valid PEM: {source}")]
    Pem {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("{0} holds no PEM private key")]
    NoKey(String),
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server certificate chain and its key.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ServerIdentity {
    /// Loads a PEM certificate chain and private key from files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        Self::from_pem(
            &cert.display().to_string(),
            &read(cert)?,
            &key.display().to_string(),
            &read(key)?,
        )
    }

    /// Parses a PEM certificate chain and private key; `cert_name` and `key_name` say in errors
    /// where each came from (a file, a request's field). Whether the key fits the certificate is
    /// checked by [`Self::server_config`].
    pub fn from_pem(
        cert_name: &str,
        cert_pem: &[u8],
        key_name: &str,
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let chain = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                name: cert_name.to_owned(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert_name.to_owned()));
        }
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|source| TlsError::Pem {
                name: key_name.to_owned(),
                source,
            })?
            .ok_or_else(|| TlsError::NoKey(key_name.to_owned()))?;
        Ok(ServerIdentity { chain, key })
    }

    /// A fresh self-signed certificate for `localhost`, `127.0.0.1` and `::1`.
    pub fn self_signed() -> Result<Self, TlsError> {
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        let certified = rcgen::generate_simple_self_signed(names)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        Ok(ServerIdentity {
            chain: vec![certified.cert.der().clone()],
            key,
        })
    }

    /// SHA-256 fingerprint of the leaf certificate, as colon-separated upper-case hex.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.chain[0].as_ref());
        digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// A rustls server configuration (HTTP/1.1 and HTTP/2) using the process's crypto provider;
    /// fails when the key does not belong to the leaf certificate.
    pub fn server_config(self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_identity_round_trips_through_pem_files() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let identity = ServerIdentity::from_pem_files(&cert, &key).unwrap();
        assert_eq!(identity.fingerprint().len(), 32 * 3 - 1);
        identity.server_config().unwrap();
        let generated = ServerIdentity::self_signed().unwrap();
        assert_ne!(
            generated.fingerprint(),
            ServerIdentity::self_signed().unwrap().fingerprint()
        );
    }

    #[test]
    fn pem_text_needs_a_certificate_and_its_own_key() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (certified.cert.pem(), certified.signing_key.serialize_pem());
        let identity =
            ServerIdentity::from_pem("tls_cert", cert.as_bytes(), "tls_key", key.as_bytes())
                .unwrap();
        identity.server_config().unwrap();

        let err = ServerIdentity::from_pem("tls_cert", b"hello", "tls_key", key.as_bytes())
            .err()
            .unwrap();
        assert!(
            matches!(err, TlsError::NoCertificate(ref name) if name == "tls_cert"),
            "{err}"
        );
        let err = ServerIdentity::from_pem("tls_cert", cert.as_bytes(), "tls_key", cert.as_bytes())
            .err()
            .unwrap();
        assert!(
            matches!(err, TlsError::NoKey(ref name) if name == "tls_key"),
            "{err}"
        );
        let garbage =
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
        let err =
            ServerIdentity::from_pem("tls_cert", garbage.as_bytes(), "tls_key", key.as_bytes())
                .and_then(ServerIdentity::server_config)
                .err()
                .unwrap();
        assert!(matches!(err, TlsError::Rustls(_)), "{err}");
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let err = ServerIdentity::from_pem(
            "tls_cert",
            cert.as_bytes(),
            "tls_key",
            other.signing_key.serialize_pem().as_bytes(),
        )
        .and_then(ServerIdentity::server_config)
        .err()
        .unwrap();
        assert!(
            matches!(err, TlsError::Rustls(_)),
            "a key of another certificate: {err}"
        );
    }

    #[test]
    fn key_file_without_key_is_a_clear_error() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        let err = ServerIdentity::from_pem_files(&cert, &cert).err().unwrap();
        assert!(matches!(err, TlsError::NoKey(_)), "{err}");
        let err = ServerIdentity::from_pem_files(&dir.path().join("nope"), &cert)
            .err()
            .unwrap();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
    }
}
