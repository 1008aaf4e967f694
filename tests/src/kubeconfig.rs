//! Kubeconfig files for the plane's users (admin, scheduler, controller manager, kwok).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::pki::CertifiedKey;

/// A kubeconfig (JSON, which every Kubernetes client reads as YAML) with one cluster, one user
/// authenticated by a client certificate, and one current context.
pub fn render(server: &str, ca_pem: &str, user: &str, credentials: &CertifiedKey) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "p2pcamera-test",
            "cluster": {"server": server, "certificate-authority-data": STANDARD.encode(ca_pem)},
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": STANDARD.encode(&credentials.cert_pem),
                "client-key-data": STANDARD.encode(&credentials.key_pem),
            },
        }],
        "contexts": [{"name": user, "context": {"cluster": "p2pcamera-test", "user": user}}],
        "current-context": user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_reads_the_rendered_kubeconfig() {
        let creds = CertifiedKey {
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
        };
        let text = serde_json::to_string(&render("https://127.0.0.1:6443", "CA", "admin", &creds))
            .unwrap();
        let parsed = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("admin"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some(STANDARD.encode("CA").as_str())
        );
        let auth = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            auth.client_certificate_data.as_deref(),
            Some(STANDARD.encode("CERT").as_str())
        );
    }
}
