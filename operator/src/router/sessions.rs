//! What the router knows about a session (from the watch-backed caches) and the pure decision
//! of where an offer goes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};

use p2pcamera_api::SessionKey;
use p2pcamera_api::objects::{
    GROUP, SECRET_TLS_CERT, SECRET_TOKEN, SESSION_KIND, SESSION_PLURAL, VERSION, child_name,
};

use super::auth;
use super::error::ApiError;
use super::pod_endpoint;
use super::watch::{self, WatchHealth};
use crate::ports::PortRange;

/// Group, version and kind of the custom resource the router routes to.
pub fn camera_session_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, SESSION_KIND),
        SESSION_PLURAL,
    )
}

/// The parts of a CameraSession's status the router uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The session's port; when set, the endpoint's port must be this one.
    #[serde(default)]
    pub udp_port: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl SessionStatus {
    /// Reads `.status` of a CameraSession; a missing or unreadable status is an empty one.
    pub fn of(object: &DynamicObject) -> Self {
        object
            .data
            .get("status")
            .and_then(|status| serde_json::from_value(status.clone()).ok())
            .unwrap_or_default()
    }

    fn phase(&self) -> &str {
        self.phase.as_deref().unwrap_or("Pending")
    }

    /// The first condition that is not True explains why the session is not ready.
    fn blocking_condition(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.status != "True")
    }
}

/// What the page's script sees from `GET /v1/sessions/{ns}/{name}`: no secrets, no endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublicStatus {
    pub phase: String,
    pub ready: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl From<&SessionStatus> for PublicStatus {
    fn from(status: &SessionStatus) -> Self {
        let blocking = status.blocking_condition();
        Self {
            phase: status.phase().to_owned(),
            ready: routable_endpoint(status).is_some(),
            reason: blocking.and_then(|c| c.reason.clone()),
            message: blocking.and_then(|c| c.message.clone()),
        }
    }
}

/// The session Secret's contents the router needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionCredentials {
    pub token: Vec<u8>,
    /// PEM of the pod's self-signed certificate: the only certificate accepted from the pod.
    pub pod_certificate: Option<Vec<u8>>,
}

impl SessionCredentials {
    pub fn of(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let token = data.get(SECRET_TOKEN)?.0.clone();
        let pod_certificate = data.get(SECRET_TLS_CERT).map(|c| c.0.clone());
        Some(Self {
            token,
            pod_certificate,
        })
    }
}

/// Where an authorized offer goes and with which credential.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The camera pod's signaling address, from a checked `status.endpoint`.
    pub address: SocketAddr,
    pub token: Vec<u8>,
    /// PEM of the only certificate accepted from the pod.
    pub pod_certificate: Vec<u8>,
}

/// How long a browser should wait before asking again while a session is on its way.
pub const NOT_READY_RETRY: Duration = Duration::from_secs(2);

/// The endpoint of a session in a phase that takes offers (not yet checked: see [`resolve`]).
fn routable_endpoint(status: &SessionStatus) -> Option<&str> {
    let routable_phase = matches!(status.phase(), "Ready" | "Idle");
    status.endpoint.as_deref().filter(|_| routable_phase)
}

fn not_ready(status: &SessionStatus, fallback: &str) -> ApiError {
    let detail = status
        .blocking_condition()
        .and_then(|c| c.message.clone().or_else(|| c.reason.clone()))
        .unwrap_or_else(|| fallback.to_owned());
    ApiError::NotReady {
        phase: status.phase().to_owned(),
        detail,
        retry_after: NOT_READY_RETRY,
    }
}

/// Checks the caller's token against the session's; the status (and the credentials to reach
/// its pod) are only revealed to a caller holding the token. A session that does not exist, or
/// whose Secret the router does not have, gets the same answer as a wrong token, so a caller
/// without the token cannot tell which sessions exist.
pub fn authorize<'a, 'c>(
    status: Option<&'a SessionStatus>,
    credentials: Option<&'c SessionCredentials>,
    authorization: Option<&str>,
) -> Result<(&'a SessionStatus, &'c SessionCredentials), ApiError> {
    auth::authorize(authorization, credentials.map(|c| c.token.as_slice()))?;
    match (status, credentials) {
        (Some(status), Some(credentials)) => Ok((status, credentials)),
        // A Secret left behind by a deleted session.
        _ => Err(ApiError::WrongToken),
    }
}

/// Decides where an authorized offer goes: the session must be Ready (or Idle) with an endpoint
/// that passes [`pod_endpoint::check`], and the pod's certificate must be there to pin (the
/// router has no client that would talk to a pod without one).
pub fn resolve(
    status: &SessionStatus,
    credentials: &SessionCredentials,
    ports: PortRange,
) -> Result<Target, ApiError> {
    let endpoint = routable_endpoint(status)
        .ok_or_else(|| not_ready(status, "camera pod is not ready yet"))?;
    let address = pod_endpoint::check(endpoint, status.udp_port, ports)
        .map_err(ApiError::EndpointRejected)?;
    let pod_certificate = credentials
        .pod_certificate
        .clone()
        .ok_or_else(|| not_ready(status, "camera pod certificate not published yet"))?;
    Ok(Target {
        address,
        token: credentials.token.clone(),
        pod_certificate,
    })
}

/// What the router keeps of a session Secret: its name and namespace (the cache key), the token
/// and the pod's certificate. Everything else (the pod's private key, labels, annotations,
/// managed fields) is dropped before the object reaches the cache.
pub fn strip_session_secret(secret: &mut Secret) {
    let kept = ObjectMeta {
        name: secret.metadata.name.take(),
        namespace: secret.metadata.namespace.take(),
        ..ObjectMeta::default()
    };
    let data = secret.data.take().map(|mut data| {
        data.retain(|key, _| key == SECRET_TOKEN || key == SECRET_TLS_CERT);
        data
    });
    *secret = Secret {
        metadata: kept,
        data,
        ..Secret::default()
    };
}

/// What the router keeps of a CameraSession: its name, namespace and status.
pub fn strip_session(object: &mut DynamicObject) {
    object.metadata = ObjectMeta {
        name: object.metadata.name.take(),
        namespace: object.metadata.namespace.take(),
        ..ObjectMeta::default()
    };
    let status = object.data.get_mut("status").map(serde_json::Value::take);
    object.data = match status {
        Some(status) => serde_json::json!({ "status": status }),
        None => serde_json::Value::Null,
    };
}

/// Starts the watch-backed cache of the CameraSessions `api` sees.
pub fn session_cache(api: Api<DynamicObject>, health: Arc<WatchHealth>) -> Store<DynamicObject> {
    let writer = reflector::store::Writer::new(camera_session_resource());
    let store = writer.as_reader();
    tokio::spawn(watch::reflect(
        api,
        watcher::Config::default(),
        writer,
        health,
        strip_session,
    ));
    store
}

/// Starts the watch-backed cache of the session Secrets `api` sees that match `selector`,
/// holding only what [`strip_session_secret`] keeps.
pub fn session_secret_cache(
    api: Api<Secret>,
    selector: &str,
    health: Arc<WatchHealth>,
) -> Store<Secret> {
    let (store, writer) = reflector::store::<Secret>();
    tokio::spawn(watch::reflect(
        api,
        watcher::Config::default().labels(selector),
        writer,
        health,
        strip_session_secret,
    ));
    store
}

/// The watch-backed caches of CameraSessions and their Secrets.
#[derive(Clone)]
pub struct SessionCache {
    pub sessions: Store<DynamicObject>,
    pub secrets: Store<Secret>,
    resource: Arc<ApiResource>,
}

impl SessionCache {
    pub fn new(sessions: Store<DynamicObject>, secrets: Store<Secret>) -> Self {
        Self {
            sessions,
            secrets,
            resource: Arc::new(camera_session_resource()),
        }
    }

    pub fn status(&self, key: &SessionKey) -> Option<SessionStatus> {
        let object_ref = ObjectRef::<DynamicObject>::new_with(&key.name, (*self.resource).clone())
            .within(&key.namespace);
        self.sessions
            .get(&object_ref)
            .map(|object| SessionStatus::of(&object))
    }

    pub fn credentials(&self, key: &SessionKey) -> Option<SessionCredentials> {
        let object_ref = ObjectRef::<Secret>::new(&child_name(&key.name)).within(&key.namespace);
        self.secrets
            .get(&object_ref)
            .and_then(|secret| SessionCredentials::of(&secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: PortRange = PortRange {
        first: 31000,
        last: 31999,
    };

    fn status(phase: &str, endpoint: Option<&str>) -> SessionStatus {
        SessionStatus {
            phase: Some(phase.into()),
            endpoint: endpoint.map(Into::into),
            udp_port: None,
            conditions: vec![],
        }
    }

    fn creds(cert: bool) -> SessionCredentials {
        SessionCredentials {
            token: b"tok".to_vec(),
            pod_certificate: cert.then(|| b"PEM".to_vec()),
        }
    }

    #[test]
    fn only_the_right_token_for_an_existing_session_is_authorized() {
        let ready = status("Ready", Some("https://10.0.0.1:31000"));
        let credentials = creds(true);
        for (status, credentials) in [
            (None, None),
            (Some(&ready), None),
            (None, Some(&credentials)),
            (Some(&ready), Some(&credentials)),
        ] {
            assert_eq!(
                authorize(status, credentials, None),
                Err(ApiError::MissingToken)
            );
            assert_eq!(
                authorize(status, credentials, Some("Bearer nope")),
                Err(ApiError::WrongToken)
            );
        }
        // The right token of a session the router does not (or no longer) know is no key either.
        assert_eq!(
            authorize(None, Some(&credentials), Some("Bearer tok")),
            Err(ApiError::WrongToken)
        );
        assert_eq!(
            authorize(Some(&ready), Some(&credentials), Some("Bearer tok")),
            Ok((&ready, &credentials))
        );
    }

    #[test]
    fn ready_session_resolves_to_its_checked_address_with_the_pinned_certificate() {
        let mut ready = status("Ready", Some("https://10.0.0.1:31000/"));
        ready.udp_port = Some(31000);
        assert_eq!(
            resolve(&ready, &creds(true), PORTS),
            Ok(Target {
                address: "10.0.0.1:31000".parse().unwrap(),
                token: b"tok".to_vec(),
                pod_certificate: b"PEM".to_vec(),
            })
        );
        assert!(
            resolve(
                &status("Idle", Some("https://[fd00::1]:31001")),
                &creds(true),
                PORTS
            )
            .is_ok()
        );
    }

    #[test]
    fn endpoints_failing_the_checks_are_rejected_not_reported_as_not_ready() {
        for endpoint in [
            "http://127.0.0.1:31000",
            "https://pod.example:31000",
            "https://10.0.0.1:443",
            "https://10.0.0.1:31000/x",
        ] {
            assert!(
                matches!(
                    resolve(&status("Ready", Some(endpoint)), &creds(true), PORTS),
                    Err(ApiError::EndpointRejected(_))
                ),
                "{endpoint}"
            );
        }
        let mut moved = status("Ready", Some("https://10.0.0.1:31000"));
        moved.udp_port = Some(31001);
        assert!(matches!(
            resolve(&moved, &creds(true), PORTS),
            Err(ApiError::EndpointRejected(
                pod_endpoint::EndpointError::PortMismatch { .. }
            ))
        ));
    }

    #[test]
    fn not_ready_sessions_explain_why() {
        let mut scheduling = status("Scheduling", None);
        scheduling.conditions = vec![
            Condition {
                kind: "Accepted".into(),
                status: "True".into(),
                reason: None,
                message: None,
            },
            Condition {
                kind: "Scheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.".into()),
            },
        ];
        let Err(ApiError::NotReady {
            phase,
            detail,
            retry_after,
        }) = resolve(&scheduling, &creds(true), PORTS)
        else {
            panic!("expected NotReady");
        };
        assert_eq!(phase, "Scheduling");
        assert_eq!(
            detail,
            "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
        );
        assert_eq!(retry_after, NOT_READY_RETRY);
        let public = PublicStatus::from(&scheduling);
        assert!(!public.ready);
        assert_eq!(public.reason.as_deref(), Some("Unschedulable"));

        for (phase, endpoint) in [
            ("Starting", Some("https://10.0.0.1:31000")),
            ("Starting", Some("ftp://a")),
            ("Ready", None),
        ] {
            assert!(matches!(
                resolve(&status(phase, endpoint), &creds(true), PORTS),
                Err(ApiError::NotReady { .. })
            ));
        }
        // Without a certificate to pin nothing is forwarded.
        assert!(matches!(
            resolve(
                &status("Ready", Some("https://10.0.0.1:31000")),
                &creds(false),
                PORTS
            ),
            Err(ApiError::NotReady { .. })
        ));
    }

    #[test]
    fn status_is_read_from_the_dynamic_object() {
        let mut object = DynamicObject::new("cam", &camera_session_resource()).within("ns");
        object.data = serde_json::json!({"status": {"phase": "Ready", "endpoint": "https://x:1", "podName": "p", "udpPort": 1}});
        let mut expected = status("Ready", Some("https://x:1"));
        expected.udp_port = Some(1);
        assert_eq!(SessionStatus::of(&object), expected);
        object.data = serde_json::json!({"spec": {}});
        assert_eq!(SessionStatus::of(&object), SessionStatus::default());
    }

    #[test]
    fn stripping_keeps_only_what_the_router_reads() {
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "cam-p2pcamera", "namespace": "ns", "labels": {"a": "b"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"tls.key\": \"...\"}"},
                "managedFields": [{"manager": "operator", "operation": "Apply"}]
            },
            "type": "Opaque",
            "data": {"token": "dG9r", "tls.crt": "UEVN", "tls.key": "S0VZ", "other": "eA=="},
            "stringData": {"tls.key": "KEY"}
        }))
        .unwrap();
        strip_session_secret(&mut secret);
        let mut expected: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cam-p2pcamera", "namespace": "ns"},
            "data": {"token": "dG9r", "tls.crt": "UEVN"}
        }))
        .unwrap();
        assert_eq!(secret, expected);
        assert_eq!(
            SessionCredentials::of(&secret).map(|c| c.token),
            Some(b"tok".to_vec())
        );
        // A Secret without data stays without.
        expected.data = None;
        let mut empty = expected.clone();
        strip_session_secret(&mut empty);
        assert_eq!(empty, expected);

        let mut object = DynamicObject::new("cam", &camera_session_resource()).within("ns");
        object.metadata.annotations = Some([("a".to_owned(), "b".to_owned())].into());
        object.data = serde_json::json!({"spec": {"image": "x"}, "status": {"phase": "Ready"}});
        strip_session(&mut object);
        assert_eq!(object.metadata.annotations, None);
        assert_eq!(
            object.data,
            serde_json::json!({"status": {"phase": "Ready"}})
        );
        assert_eq!(SessionStatus::of(&object).phase.as_deref(), Some("Ready"));
    }
}
