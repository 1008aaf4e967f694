//! Certificates and keys for the test control plane: one CA, the API server's serving
//! certificate, client certificates per component, and the service-account signing key.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The plane's certificate authority: signs serving and client certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    pub fn new(common_name: &str) -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            cert_pem,
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A TLS server certificate for the given DNS names and IP addresses.
    pub fn server(&self, common_name: &str, names: &[&str]) -> Result<CertifiedKey, Error> {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A TLS client certificate; Kubernetes reads the user from CN and the groups from O.
    pub fn client(&self, user: &str, groups: &[&str]) -> Result<CertifiedKey, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<CertifiedKey, Error> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The key pair the API server signs service-account tokens with (ECDSA P-256, PEM).
pub struct ServiceAccountKey {
    pub private_pem: String,
    pub public_pem: String,
}

impl ServiceAccountKey {
    pub fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        Ok(Self {
            private_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificate_carries_user_and_groups_and_is_signed_by_the_ca() {
        let ca = CertificateAuthority::new("test-ca").unwrap();
        let admin = ca.client("admin", &["system:masters"]).unwrap();
        let out = openssl_text(&admin.cert_pem);
        assert!(
            out.contains("CN=admin") || out.contains("CN = admin"),
            "{out}"
        );
        assert!(out.contains("system:masters"), "{out}");
        assert!(out.contains("TLS Web Client Authentication"), "{out}");
        assert!(
            openssl_verify(ca.cert_pem(), &admin.cert_pem),
            "client cert does not verify against the CA"
        );
        let other = CertificateAuthority::new("other-ca").unwrap();
        assert!(
            !openssl_verify(other.cert_pem(), &admin.cert_pem),
            "verified against a foreign CA"
        );
    }

    #[test]
    fn server_certificate_names_loopback_ip_and_localhost() {
        let ca = CertificateAuthority::new("test-ca").unwrap();
        let server = ca
            .server("kube-apiserver", &["127.0.0.1", "localhost"])
            .unwrap();
        let out = openssl_text(&server.cert_pem);
        assert!(out.contains("IP Address:127.0.0.1"), "{out}");
        assert!(out.contains("DNS:localhost"), "{out}");
        assert!(out.contains("TLS Web Server Authentication"), "{out}");
        assert!(server.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn service_account_key_pair_is_pem() {
        let key = ServiceAccountKey::generate().unwrap();
        assert!(key.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(key.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    }

    fn openssl_text(pem: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pem");
        std::fs::write(&path, pem).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn openssl_verify(ca_pem: &str, cert_pem: &str) -> bool {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
        std::fs::write(dir.path().join("c.pem"), cert_pem).unwrap();
        std::process::Command::new("openssl")
            .current_dir(dir.path())
            .args(["verify", "-CAfile", "ca.pem", "c.pem"])
            .output()
            .unwrap()
            .status
            .success()
    }
}
