//! What the router knows about a session (from the watch-backed caches) and the pure decision
//! of where an offer goes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::{Deserialize, Serialize};

use p2pcamera_api::SessionKey;
use p2pcamera_api::objects::{
    GROUP, SECRET_TLS_CERT, SECRET_TOKEN, SESSION_KIND, SESSION_PLURAL, VERSION, child_name,
};

use super::auth;
use super::error::ApiError;

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
    /// Base URL, e.g. `https://10.0.0.7:31000`.
    pub endpoint: String,
    pub token: Vec<u8>,
    pub pod_certificate: Option<Vec<u8>>,
}

/// How long a browser should wait before asking again while a session is on its way.
pub const NOT_READY_RETRY: Duration = Duration::from_secs(2);

fn routable_endpoint(status: &SessionStatus) -> Option<&str> {
    let routable_phase = matches!(status.phase(), "Ready" | "Idle");
    let endpoint = status.endpoint.as_deref()?.trim_end_matches('/');
    let valid = endpoint.starts_with("https://") || endpoint.starts_with("http://");
    (routable_phase && valid).then_some(endpoint)
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

/// Looks a session up and checks the caller's token; the status (and the credentials to reach
/// its pod) are only revealed to a caller holding the token.
pub fn authorize<'a, 'c>(
    key: &SessionKey,
    status: Option<&'a SessionStatus>,
    credentials: Option<&'c SessionCredentials>,
    authorization: Option<&str>,
) -> Result<(&'a SessionStatus, &'c SessionCredentials), ApiError> {
    auth::bearer_token(authorization)?;
    let status = status.ok_or_else(|| ApiError::UnknownSession(key.clone()))?;
    let credentials =
        credentials.ok_or_else(|| not_ready(status, "session credentials not created yet"))?;
    auth::authorize(authorization, &credentials.token)?;
    Ok((status, credentials))
}

/// Decides where an authorized offer goes: the session must be Ready (or Idle) with an endpoint,
/// and an HTTPS endpoint needs the pod's certificate to pin.
pub fn resolve(
    status: &SessionStatus,
    credentials: &SessionCredentials,
) -> Result<Target, ApiError> {
    let endpoint = routable_endpoint(status)
        .ok_or_else(|| not_ready(status, "camera pod is not ready yet"))?;
    if endpoint.starts_with("https://") && credentials.pod_certificate.is_none() {
        return Err(not_ready(
            status,
            "camera pod certificate not published yet",
        ));
    }
    Ok(Target {
        endpoint: endpoint.to_owned(),
        token: credentials.token.clone(),
        pod_certificate: credentials.pod_certificate.clone(),
    })
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

    fn key() -> SessionKey {
        SessionKey::new("ns", "cam")
    }

    fn status(phase: &str, endpoint: Option<&str>) -> SessionStatus {
        SessionStatus {
            phase: Some(phase.into()),
            endpoint: endpoint.map(Into::into),
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
    fn authorization_order_is_token_presence_then_session_then_token_value() {
        let ready = status("Ready", Some("https://10.0.0.1:31000"));
        assert_eq!(
            authorize(&key(), None, None, None),
            Err(ApiError::MissingToken)
        );
        assert_eq!(
            authorize(&key(), None, None, Some("Bearer tok")),
            Err(ApiError::UnknownSession(key()))
        );
        let credentials = creds(true);
        assert_eq!(
            authorize(
                &key(),
                Some(&ready),
                Some(&credentials),
                Some("Bearer nope")
            ),
            Err(ApiError::WrongToken)
        );
        assert_eq!(
            authorize(&key(), Some(&ready), Some(&credentials), Some("Bearer tok")),
            Ok((&ready, &credentials))
        );
        assert!(matches!(
            authorize(&key(), Some(&ready), None, Some("Bearer tok")),
            Err(ApiError::NotReady { .. })
        ));
    }

    #[test]
    fn ready_session_resolves_to_its_endpoint_with_the_pinned_certificate() {
        let target = resolve(
            &status("Ready", Some("https://10.0.0.1:31000/")),
            &creds(true),
        );
        assert_eq!(
            target,
            Ok(Target {
                endpoint: "https://10.0.0.1:31000".into(),
                token: b"tok".to_vec(),
                pod_certificate: Some(b"PEM".to_vec()),
            })
        );
        assert!(resolve(&status("Idle", Some("http://127.0.0.1:9")), &creds(false)).is_ok());
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
        }) = resolve(&scheduling, &creds(true))
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
            ("Starting", Some("https://a:1")),
            ("Ready", None),
            ("Ready", Some("ftp://a")),
        ] {
            assert!(matches!(
                resolve(&status(phase, endpoint), &creds(true)),
                Err(ApiError::NotReady { .. })
            ));
        }
        // HTTPS without a certificate to pin is never forwarded.
        assert!(matches!(
            resolve(&status("Ready", Some("https://a:1")), &creds(false)),
            Err(ApiError::NotReady { .. })
        ));
    }

    #[test]
    fn status_is_read_from_the_dynamic_object() {
        let mut object = DynamicObject::new("cam", &camera_session_resource()).within("ns");
        object.data = serde_json::json!({"status": {"phase": "Ready", "endpoint": "https://x:1", "podName": "p"}});
        assert_eq!(
            SessionStatus::of(&object),
            status("Ready", Some("https://x:1"))
        );
        object.data = serde_json::json!({"spec": {}});
        assert_eq!(SessionStatus::of(&object), SessionStatus::default());
    }
}
