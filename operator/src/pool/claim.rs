//! Claiming a warm-pool pod for a new session: which pool a session may claim from, which pods
//! are candidates, the claim write and the hand-over to the pod.
//!
//! A claim is two steps, in this order:
//! 1. The claim write: a JSON merge patch of the pod carrying its `metadata.resourceVersion` as a
//!    precondition, so of two sessions that picked the same idle pod exactly one wins (the other
//!    gets `409 Conflict` and tries the next pod). It labels the pod with the session
//!    (`p2pcamera.io/session`: the pod has left the pool for good), records the session in
//!    `p2pcamera.io/claimed-by` with the claimed pod's hash ([`desired::claimed_pod_hash`]), and
//!    makes the session the pod's only owner, so deleting the session deletes the pod.
//! 2. The hand-over, `POST /claim` on the pod ([`send_claim`]) over HTTPS pinned to the pool pod's
//!    own certificate, authenticated by the pod's claim token (both from the pool pod's Secret,
//!    which only the operator and the pod read): the session's token, certificate and key, the
//!    filter and the video limits ([`claim_request`]). Repeating it is harmless (the pod answers
//!    a repeat of the same session as the first time), so a hand-over the operator is unsure of
//!    is simply sent again.
//!
//! Nothing of a session reaches a pod through files the kubelet refreshes later, and a claimed
//! pod never returns to the pool: it is deleted with its session, on idle timeout, or when the
//! session's spec changes.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::{Resource, ResourceExt};
use p2pcamera_api::SessionKey;
use p2pcamera_api::objects::{
    ANNOTATION_CLAIMED_BY, ANNOTATION_POD_HASH, LABEL_POOL, LABEL_SESSION,
};
use p2pcamera_api::wire::{CLAIM_PATH, ClaimReply, ClaimRequest};
use serde_json::json;

use crate::class_fit::{EffectiveVideo, ResolvedClass};
use crate::config::Config;
use crate::crd::{CameraSession, FilterName, FilterSpec, WarmPool};
use crate::pod_api::{self, PodCallError};
use crate::status;

/// Most idle pods one reconcile tries to claim before it starts the session cold.
pub const MAX_CLAIM_ATTEMPTS: usize = 3;

/// The session condition that tells whether its pod came from the warm pool.
pub const WARM_START: &str = "WarmStart";
/// `WarmStart=True`: a warm pod was claimed.
pub const REASON_WARM_POD_CLAIMED: &str = "WarmPodClaimed";
/// `WarmStart=False`: the pool had no idle warm pod; the session started its own pod.
pub const REASON_WARM_POOL_EMPTY: &str = "WarmPoolEmpty";
/// `WarmStart=False`: claiming failed (the pod did not accept its session); cold start.
pub const REASON_WARM_CLAIM_FAILED: &str = "WarmClaimFailed";

/// The pool a session may claim from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolTarget {
    /// The CameraClass.
    pub class: String,
    /// The pool's namespace (the session's).
    pub namespace: String,
}

/// Prefix of the port allocator's keys of idle pool pods (`:` never occurs in a session name).
const POOL_KEY_PREFIX: &str = "pool:";

/// The port allocator's key of idle pool pod `pod` in `namespace`.
pub fn pool_key(namespace: &str, pod: &str) -> SessionKey {
    SessionKey::new(namespace, format!("{POOL_KEY_PREFIX}{pod}"))
}

/// The pool pod an allocator key stands for, when it is a pool key.
pub fn pool_pod_of(key: &SessionKey) -> Option<&str> {
    key.name.strip_prefix(POOL_KEY_PREFIX)
}

/// The namespace of `pool`'s pods: its own, else the one the operator serves.
pub fn pool_namespace<'a>(pool: &'a WarmPool, config: &'a Config) -> Option<&'a str> {
    pool.namespace.as_deref().or(config.namespace.as_deref())
}

/// The pool a new pod of `session` in `class` may be claimed from: the class has a pool (even
/// one scaled to zero, so its sessions say they started cold) in the session's namespace, and the
/// session's filter is a built-in one (a custom model is loaded per session, from its manifest).
/// `None`: the session starts its own pod.
pub fn pool_for(
    session: &CameraSession,
    class: &ResolvedClass,
    config: &Config,
) -> Option<PoolTarget> {
    let name = class.name.as_ref()?;
    let pool = class.spec.warm_pool.as_ref()?;
    let namespace = session.namespace()?;
    (session.spec.filter.name != FilterName::Custom
        && pool_namespace(pool, config) == Some(namespace.as_str()))
    .then(|| PoolTarget {
        class: name.clone(),
        namespace,
    })
}

/// The idle pods of `target`'s pool that are warm (ready), oldest first.
pub fn candidates<'a>(pods: &'a [Arc<Pod>], target: &PoolTarget) -> Vec<&'a Arc<Pod>> {
    let mut idle: Vec<_> = pods
        .iter()
        .filter(|pod| {
            pod.namespace().as_deref() == Some(target.namespace.as_str())
                && pod.labels().get(LABEL_POOL) == Some(&target.class)
                && !pod.labels().contains_key(LABEL_SESSION)
                && pod.metadata.deletion_timestamp.is_none()
                && status::observe_pod(pod).ready
        })
        .collect();
    idle.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });
    idle
}

/// The claim write of `pod` for `session` (see the module documentation), with the claimed
/// pod's `hash`; `None` when the pod has no resourceVersion or the session no owner reference
/// (neither comes from the API server then).
pub fn claim_patch(pod: &Pod, session: &CameraSession, hash: &str) -> Option<serde_json::Value> {
    let resource_version = pod.metadata.resource_version.as_ref()?;
    let owner = session.controller_owner_ref(&())?;
    let name = session.name_any();
    let namespace = session.namespace()?;
    Some(json!({
        "metadata": {
            "resourceVersion": resource_version,
            "labels": {
                LABEL_SESSION: name,
                "app.kubernetes.io/instance": name,
            },
            "annotations": {
                ANNOTATION_CLAIMED_BY: format!("{namespace}/{name}"),
                ANNOTATION_POD_HASH: hash,
            },
            "ownerReferences": [owner],
        }
    }))
}

/// Whether `pod` is a warm-pool pod claimed by a session.
pub fn is_claimed(pod: &Pod) -> bool {
    pod.annotations().contains_key(ANNOTATION_CLAIMED_BY)
}

/// `filter` in camera-pod's filter-spec form (the JSON `POST /filter` takes).
pub fn claim_filter(filter: &FilterSpec) -> String {
    let mut spec = json!({"filter": filter.name.as_str()});
    if let Some(index) = filter.style_index {
        spec["style"] = json!(index);
    }
    if let Some(colour) = &filter.background_color {
        spec["color"] = json!(colour);
    }
    if let Some(model) = filter.pose_model {
        spec["model"] = json!(model.as_str());
    }
    if let Some(opacity) = filter.parts_opacity {
        spec["opacity"] = json!(opacity);
    }
    spec.to_string()
}

/// The session material handed to a claimed pod.
#[derive(Clone)]
pub struct SessionMaterial<'a> {
    /// The session's bearer token.
    pub token: &'a str,
    /// The session's certificate (PEM).
    pub tls_cert: &'a str,
    /// Its key (PEM).
    pub tls_key: &'a str,
}

/// The hand-over of `session` (in `class`) to a claimed pod advertising `public_ip`.
pub fn claim_request(
    session: &CameraSession,
    class: &ResolvedClass,
    material: &SessionMaterial<'_>,
    public_ip: Option<String>,
) -> ClaimRequest {
    let video = EffectiveVideo::of(&session.spec, class);
    ClaimRequest {
        session: format!(
            "{}/{}",
            session.namespace().unwrap_or_default(),
            session.name_any()
        ),
        token: material.token.to_string(),
        tls_cert: material.tls_cert.to_string(),
        tls_key: material.tls_key.to_string(),
        filter: claim_filter(&session.spec.filter),
        max_width: video.max_width,
        max_height: video.max_height,
        max_fps: video.max_fps,
        codecs: video
            .codecs
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        public_ip,
    }
}

/// Sends `request` to the pool pod at `endpoint` with its `claim_token`, trusting only its
/// certificate `pod_cert_pem`.
pub async fn send_claim(
    endpoint: &str,
    claim_token: &str,
    pod_cert_pem: &[u8],
    request: &ClaimRequest,
) -> Result<ClaimReply, PodCallError> {
    pod_api::post_json(endpoint, CLAIM_PATH, claim_token, pod_cert_pem, request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class_fit::ResolvedClass;
    use crate::crd::CameraClassSpec;
    use crate::fixtures::{config, session};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;
    use std::collections::BTreeMap;

    fn class_with_pool(pool: serde_json::Value) -> ResolvedClass {
        ResolvedClass {
            name: Some("gpu".into()),
            spec: CameraClassSpec {
                warm_pool: Some(serde_json::from_value(pool).unwrap()),
                ..CameraClassSpec::default()
            },
        }
    }

    fn pool_pod(name: &str, class: &str, ready: bool, created: i64, claimed: bool) -> Arc<Pod> {
        let mut labels = BTreeMap::from([(LABEL_POOL.to_string(), class.to_string())]);
        if claimed {
            labels.insert(LABEL_SESSION.into(), "someone".into());
        }
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                labels: Some(labels),
                resource_version: Some("7".into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        })
    }

    #[test]
    fn only_sessions_in_the_pool_namespace_with_a_built_in_filter_claim() {
        let mut config = config();
        config.namespace = Some("team".into());
        let s = session(json!({}));
        let class = class_with_pool(json!({"minIdle": 1}));
        assert_eq!(
            pool_for(&s, &class, &config),
            Some(PoolTarget {
                class: "gpu".into(),
                namespace: "team".into()
            })
        );
        let elsewhere = class_with_pool(json!({"minIdle": 1, "namespace": "other"}));
        assert_eq!(pool_for(&s, &elsewhere, &config), None);
        let empty = class_with_pool(json!({"minIdle": 0}));
        assert!(
            pool_for(&s, &empty, &config).is_some(),
            "a pool scaled to zero: its sessions start cold and say so"
        );
        let custom = session(json!({"filter": {"name": "custom", "model": {
            "url": "https://models.example/m.onnx", "sha256": "0".repeat(64),
            "manifest": {"input": "x", "width": 8, "height": 8, "layout": "NHWC", "output": "image"}
        }}}));
        assert_eq!(pool_for(&custom, &class, &config), None);
        let mut all_namespaces = config.clone();
        all_namespaces.namespace = None;
        assert_eq!(pool_for(&s, &class, &all_namespaces), None);
        assert!(pool_for(&s, &ResolvedClass::built_in(), &config).is_none());
    }

    #[test]
    fn candidates_are_warm_idle_pods_of_the_pool_oldest_first() {
        let target = PoolTarget {
            class: "gpu".into(),
            namespace: "team".into(),
        };
        let pods = vec![
            pool_pod("new", "gpu", true, 20, false),
            pool_pod("old", "gpu", true, 10, false),
            pool_pod("cold", "gpu", false, 5, false),
            pool_pod("taken", "gpu", true, 1, true),
            pool_pod("other", "cpu", true, 1, false),
        ];
        let names: Vec<_> = candidates(&pods, &target)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, ["old", "new"]);
    }

    #[test]
    fn the_claim_write_is_conditional_and_hands_the_pod_to_the_session() {
        let s = session(json!({}));
        let pod = pool_pod("gpu-warm-a", "gpu", true, 1, false);
        let patch = claim_patch(&pod, &s, "abc").unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        assert_eq!(patch["metadata"]["labels"][LABEL_SESSION], "cam1");
        assert_eq!(
            patch["metadata"]["annotations"][ANNOTATION_CLAIMED_BY],
            "team/cam1"
        );
        assert_eq!(patch["metadata"]["annotations"][ANNOTATION_POD_HASH], "abc");
        let owners = patch["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(owners.len(), 1, "the class is no longer an owner");
        assert_eq!(owners[0]["kind"], "CameraSession");
        assert_eq!(owners[0]["controller"], true);
        let mut unversioned = (*pod).clone();
        unversioned.metadata.resource_version = None;
        assert_eq!(claim_patch(&unversioned, &s, "abc"), None);
    }

    #[test]
    fn the_filter_is_handed_over_in_camera_pods_form() {
        let s = session(json!({"filter": {"name": "style", "styleIndex": 3}}));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&claim_filter(&s.spec.filter)).unwrap(),
            json!({"filter": "style", "style": 3})
        );
        let s = session(
            json!({"filter": {"name": "body-parts", "poseModel": "full", "partsOpacity": 40, "backgroundColor": "#000000"}}),
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&claim_filter(&s.spec.filter)).unwrap(),
            json!({"filter": "body-parts", "model": "full", "opacity": 40, "color": "#000000"})
        );
    }

    #[test]
    fn the_hand_over_carries_the_session_and_its_limits() {
        let s = session(json!({"video": {"maxWidth": 640, "codecs": ["H264"]}}));
        let class = class_with_pool(json!({"minIdle": 1}));
        let material = SessionMaterial {
            token: "t",
            tls_cert: "cert",
            tls_key: "key",
        };
        let request = claim_request(&s, &class, &material, Some("203.0.113.7".into()));
        assert_eq!(request.session, "team/cam1");
        assert_eq!(request.max_width, Some(640));
        assert_eq!(request.codecs, ["H264"]);
        assert_eq!(request.public_ip.as_deref(), Some("203.0.113.7"));
        let logged = format!("{request:?}");
        assert!(
            !logged.contains("token") && !logged.contains("tls_key"),
            "{logged}"
        );
    }

    #[test]
    fn pool_keys_never_clash_with_session_names() {
        let key = pool_key("team", "gpu-warm-x1");
        assert_eq!(pool_pod_of(&key), Some("gpu-warm-x1"));
        assert_eq!(pool_pod_of(&SessionKey::new("team", "cam1")), None);
    }
}
