//! The operator's watch caches: sessions, their pods and their Secrets, each kept in memory by
//! one watch (reflector store) that also triggers the reconciles. A reconcile reads the pod and
//! the Secret from these caches instead of asking the API server.
//!
//! Pods and Secrets are watched only with the label `app.kubernetes.io/managed-by=p2pcamera-operator`.
//! Each object is trimmed before it is stored to what the operator reads ([`trim_session`],
//! [`trim_pod`], [`trim_secret`]): no `managedFields`, no last-applied copy, no pod spec beyond
//! the node name, no private key.
//!
//! A cache can lag behind a write by the operator itself. That is harmless by construction:
//! - Pods are created by server-side apply of the same desired object, so applying again for a
//!   pod that exists but is not cached yet changes nothing.
//! - A Secret is created with a plain create; if it exists but is not cached yet, the create
//!   answers `409 AlreadyExists` and the Secret is read once from the API server.
//! - Deleting a pod that is already gone answers 404 (or 409 for another pod with the same name);
//!   both count as done.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, PodSpec, Secret};
use kube::ResourceExt;

use crate::crd::CameraSession;
use p2pcamera_api::objects::{
    ANNOTATION_CLAIMED_BY, ANNOTATION_POD_HASH, ANNOTATION_PORT, SECRET_CLAIM_TOKEN,
    SECRET_TLS_CERT, SECRET_TLS_KEY, SECRET_TOKEN,
};

/// Annotation `kubectl apply` stores a full copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Trims a session for the cache: drops `managedFields` and kubectl's last-applied copy.
pub fn trim_session(session: &mut CameraSession) {
    session.managed_fields_mut().clear();
    session.annotations_mut().remove(LAST_APPLIED);
}

/// Trims a camera pod for the cache: keeps metadata (without `managedFields` and with only the
/// operator's port, hash and claimed-by annotations), the node name of the spec,
/// and the status.
pub fn trim_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.annotations_mut().retain(|key, _| {
        [ANNOTATION_PORT, ANNOTATION_POD_HASH, ANNOTATION_CLAIMED_BY].contains(&key.as_str())
    });
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        ..PodSpec::default()
    });
    if let Some(status) = pod.status.as_mut() {
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
        status.pod_ips = None;
        status.host_ips = None;
    }
}

/// Not a key of any stored Secret: where a cached session Secret keeps the operator token
/// derived from its private key ([`operator_token`]), in place of the key.
pub const CACHED_OPERATOR_TOKEN: &str = "p2pcamera.io/operator-token";

/// Trims a session or warm-pool Secret for the cache: drops `managedFields` and every key but the
/// token (a pool pod's claim token) and the pod's certificate, and keeps the operator token in
/// place of the private key (a session's private key is read from the API server only when a warm
/// pod is claimed for it).
pub fn trim_secret(secret: &mut Secret) {
    secret.managed_fields_mut().clear();
    if let Some(data) = secret.data.as_mut() {
        if let Some(key) = data.get(SECRET_TLS_KEY) {
            let token = p2pcamera_api::operator_token::operator_token(&key.0);
            data.insert(
                CACHED_OPERATOR_TOKEN.to_owned(),
                ByteString(token.into_bytes()),
            );
        }
        data.retain(|key, _| {
            [
                SECRET_TOKEN,
                SECRET_TLS_CERT,
                SECRET_CLAIM_TOKEN,
                CACHED_OPERATOR_TOKEN,
            ]
            .contains(&key.as_str())
        });
    }
    secret.string_data = None;
}

/// The operator token of a session Secret's pod: derived from its private key, or as the cache
/// keeps it ([`trim_secret`]); `None` without either.
pub fn operator_token(secret: &Secret) -> Option<String> {
    let data = secret.data.as_ref()?;
    match data.get(SECRET_TLS_KEY) {
        Some(key) => Some(p2pcamera_api::operator_token::operator_token(&key.0)),
        None => String::from_utf8(data.get(CACHED_OPERATOR_TOKEN)?.0.clone()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{self, SecretMaterial};
    use crate::fixtures;
    use crate::status;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodIP, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use p2pcamera_api::objects::{ANNOTATION_MANIFEST, ANNOTATION_WAKE, SECRET_TLS_KEY};

    fn managed() -> Vec<ManagedFieldsEntry> {
        vec![ManagedFieldsEntry {
            manager: Some("p2pcamera-operator".into()),
            ..ManagedFieldsEntry::default()
        }]
    }

    #[test]
    fn trimmed_pod_reads_the_same_to_the_operator() {
        let session = fixtures::session(serde_json::json!({"filter": {"name": "selfie-blur"}}));
        let config = fixtures::config();
        let mut pod = desired::build_pod(
            &session,
            &crate::class_fit::ResolvedClass::built_in(),
            40001,
            &config,
        )
        .unwrap();
        pod.metadata.managed_fields = Some(managed());
        pod.status = Some(PodStatus {
            host_ip: Some("10.0.0.5".into()),
            pod_ips: Some(vec![PodIP {
                ip: "10.0.0.5".into(),
            }]),
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "camera-pod".into(),
                restart_count: 2,
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        pod.annotations_mut()
            .insert(ANNOTATION_MANIFEST.into(), "{\"big\": true}".into());
        pod.annotations_mut()
            .insert("other.example/x".into(), "y".into());
        let before = (
            status::observe_pod(&pod),
            desired::pod_annotation(&pod, ANNOTATION_POD_HASH).map(String::from),
            desired::pod_annotation(&pod, ANNOTATION_PORT).map(String::from),
        );
        let owners = pod.owner_references().to_vec();
        let labels = pod.labels().clone();
        trim_pod(&mut pod);
        let after = (
            status::observe_pod(&pod),
            desired::pod_annotation(&pod, ANNOTATION_POD_HASH).map(String::from),
            desired::pod_annotation(&pod, ANNOTATION_PORT).map(String::from),
        );
        assert_eq!(before, after);
        assert!(
            after.0.ready
                && after.0.restarts == 2
                && after.0.host_ip.as_deref() == Some("10.0.0.5")
        );
        assert!(
            pod.metadata
                .managed_fields
                .as_deref()
                .unwrap_or_default()
                .is_empty()
        );
        assert_eq!(pod.annotations().len(), 2, "{:?}", pod.annotations());
        assert!(pod.spec.as_ref().unwrap().containers.is_empty());
        assert_eq!(
            pod.owner_references(),
            owners,
            "owner references route events to the session"
        );
        assert_eq!(pod.labels(), &labels);
    }

    #[test]
    fn trimmed_secret_keeps_tokens_and_certificate_only() {
        let session = fixtures::session(serde_json::json!({"filter": {"name": "selfie-blur"}}));
        let material = SecretMaterial::generate("ns", "cam").unwrap();
        let mut secret = desired::build_secret(&session, &material).unwrap();
        secret.metadata.managed_fields = Some(managed());
        let owners = secret.owner_references().to_vec();
        trim_secret(&mut secret);
        let data = secret.data.as_ref().unwrap();
        assert_eq!(
            data.get(SECRET_TOKEN).map(|b| b.0.as_slice()),
            Some(material.token.as_bytes())
        );
        let derived = p2pcamera_api::operator_token::operator_token(material.key_pem.as_bytes());
        assert_eq!(operator_token(&secret), Some(derived.clone()));
        assert_eq!(
            operator_token(&desired::build_secret(&session, &material).unwrap()),
            Some(derived),
            "the same from the Secret as written"
        );
        assert_eq!(
            data.get(SECRET_TLS_CERT).map(|b| b.0.as_slice()),
            Some(material.cert_pem.as_bytes())
        );
        assert!(
            !data.contains_key(SECRET_TLS_KEY),
            "the private key is not kept"
        );
        assert!(
            secret
                .metadata
                .managed_fields
                .as_deref()
                .unwrap_or_default()
                .is_empty()
        );
        assert_eq!(secret.owner_references(), owners);
    }

    #[test]
    fn trimmed_session_keeps_spec_status_and_operator_annotations() {
        let mut session = fixtures::session(serde_json::json!({"filter": {"name": "selfie-blur"}}));
        session.metadata.managed_fields = Some(managed());
        session
            .annotations_mut()
            .insert(LAST_APPLIED.into(), "{...}".into());
        session
            .annotations_mut()
            .insert(ANNOTATION_WAKE.into(), "now".into());
        let spec = session.spec.clone();
        trim_session(&mut session);
        assert_eq!(session.spec, spec);
        assert!(
            session
                .metadata
                .managed_fields
                .as_deref()
                .unwrap_or_default()
                .is_empty()
        );
        assert!(!session.annotations().contains_key(LAST_APPLIED));
        assert!(session.annotations().contains_key(ANNOTATION_WAKE));
    }
}
