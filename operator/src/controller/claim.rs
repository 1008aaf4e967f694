//! The executor's answer to [`Lookup::WarmPod`](super::decide::Lookup::WarmPod): claims an idle
//! warm pod for a session and hands the session over ([`crate::pool::claim`] has the protocol).
//!
//! Candidates are the pool's warm idle pods, oldest first; one this operator is claiming for
//! another session at the same moment is skipped ([`Claiming`]), and of two operators (or two
//! reconciles) that pick the same pod, the claim write's resourceVersion precondition lets one
//! win. At most [`claim::MAX_CLAIM_ATTEMPTS`] pods are tried. A pod that was claimed but did not
//! accept its session is deleted (it is the session's now, and it never returns to the pool); the
//! session then starts cold.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use p2pcamera_api::SessionKey;
use p2pcamera_api::objects::{
    ANNOTATION_PORT, SECRET_CLAIM_TOKEN, SECRET_TLS_CERT, SECRET_TLS_KEY, SECRET_TOKEN, child_name,
};

use super::decide::WarmClaim;
use super::{Context, Error};
use crate::class_fit::ResolvedClass;
use crate::config::PublicIpSource;
use crate::crd::CameraSession;
use crate::desired;
use crate::pool::claim::{self, PoolTarget, SessionMaterial};
use crate::status;

/// Pool pods this operator is claiming right now, so concurrent reconciles pick different ones.
#[derive(Debug, Default)]
pub(super) struct Claiming(Mutex<HashSet<(String, String)>>);

impl Claiming {
    /// Reserves pod `name` in `namespace`; false when another reconcile holds it.
    fn reserve(&self, namespace: &str, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((namespace.to_string(), name.to_string()))
    }

    fn release(&self, namespace: &str, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

/// Why one pod could not be claimed.
enum Attempt {
    /// Claimed and accepted.
    Claimed(WarmClaim),
    /// Another session got it first (or it went away): try the next.
    Lost,
    /// It was claimed but did not accept the session (deleted), or the claim failed: this.
    Failed(String),
}

/// Claims a warm pod of `pool` for `session` (whose Secret is `secret`), publishes the outcome as
/// an Event and counts it.
pub(super) async fn claim_warm_pod(
    ctx: &Context,
    session: &CameraSession,
    key: &SessionKey,
    class: &ResolvedClass,
    pool: &PoolTarget,
    secret: &Secret,
) -> Result<WarmClaim, Error> {
    let started = Instant::now();
    let pods = ctx.pods.state();
    let mut failure = None;
    let mut tried = 0;
    for pod in claim::candidates(&pods, pool) {
        if tried == claim::MAX_CLAIM_ATTEMPTS {
            break;
        }
        let name = pod.name_any();
        if !ctx.claiming.reserve(&pool.namespace, &name) {
            continue;
        }
        tried += 1;
        let attempt = claim_pod(ctx, session, key, class, pod, secret).await;
        ctx.claiming.release(&pool.namespace, &name);
        match attempt? {
            Attempt::Claimed(claimed) => {
                let seconds = started.elapsed().as_secs_f64();
                ctx.metrics
                    .warm_claim(&pool.class, "claimed", Some(seconds));
                tracing::info!(namespace = %key.namespace, name = %key.name, pod = %name, seconds, "claimed a warm pod");
                let note = format!(
                    "claimed warm pod {name} of class {} in {:.0} ms",
                    pool.class,
                    seconds * 1000.0
                );
                publish(
                    ctx,
                    session,
                    EventType::Normal,
                    claim::REASON_WARM_POD_CLAIMED,
                    note,
                )
                .await;
                return Ok(claimed);
            }
            Attempt::Lost => {}
            Attempt::Failed(message) => {
                failure = Some(message);
                break;
            }
        }
    }
    let (reason, result, message) = match failure {
        Some(message) => (claim::REASON_WARM_CLAIM_FAILED, "failed", message),
        None => (
            claim::REASON_WARM_POOL_EMPTY,
            "empty",
            format!(
                "no idle warm pod in the pool of class {}: starting the session's own pod",
                pool.class
            ),
        ),
    };
    ctx.metrics.warm_claim(&pool.class, result, None);
    tracing::info!(namespace = %key.namespace, name = %key.name, reason, %message, "cold start");
    publish(ctx, session, EventType::Normal, reason, message.clone()).await;
    Ok(WarmClaim::Missed { reason, message })
}

async fn claim_pod(
    ctx: &Context,
    session: &CameraSession,
    key: &SessionKey,
    class: &ResolvedClass,
    pod: &Pod,
    secret: &Secret,
) -> Result<Attempt, Error> {
    let name = pod.name_any();
    let Some(port) = desired::pod_annotation(pod, ANNOTATION_PORT).and_then(|p| p.parse().ok())
    else {
        return Ok(Attempt::Lost);
    };
    let hash = desired::claimed_pod_hash(session, class, port)?;
    let Some(patch) = claim::claim_patch(pod, session, &hash) else {
        return Ok(Attempt::Lost);
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let claimed = match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(claimed) => claimed,
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            return Ok(Attempt::Lost);
        }
        Err(error) => return Err(error.into()),
    };
    // The pod is the session's from here on, whatever happens next.
    ctx.claimed.claimed(key, claimed.clone());
    match hand_over(ctx, session, key, class, &claimed, port, secret).await {
        Ok(warm_filter) => {
            // The session takes the pod's port over; a failed claim leaves it its own.
            if let Err(error) = ctx.allocator.claim(key, port) {
                tracing::warn!(session = %key, %error, "claimed pod's port not reusable");
            }
            ctx.allocator
                .release(&claim::pool_key(&key.namespace, &name));
            Ok(Attempt::Claimed(WarmClaim::Claimed {
                pod: Box::new(claimed),
                port,
                warm_filter,
            }))
        }
        Err(message) => {
            tracing::warn!(namespace = %key.namespace, name = %key.name, pod = %name, %message, "the claimed pod did not accept its session; deleting it");
            ctx.claimed.refused(key);
            let params = DeleteParams::default();
            if let Err(error) = api.delete(&name, &params).await {
                tracing::warn!(pod = %name, %error, "deleting the claimed pod failed");
            }
            Ok(Attempt::Failed(format!(
                "warm pod {name} did not accept the session ({message}): starting the session's own pod"
            )))
        }
    }
}

/// Hands the session to the claimed pod; answers whether the pod had warmed up the session's
/// filter, or why the hand-over failed.
async fn hand_over(
    ctx: &Context,
    session: &CameraSession,
    key: &SessionKey,
    class: &ResolvedClass,
    pod: &Pod,
    port: u16,
    secret: &Secret,
) -> Result<bool, String> {
    let seen = status::observe_pod(pod);
    let host_ip = seen.host_ip.ok_or("the pod has no host IP")?;
    let pod_secret = secret_of(ctx, &key.namespace, &pod.name_any())
        .await
        .map_err(|e| format!("reading the pool pod's Secret: {e}"))?;
    let claim_token = text(&pod_secret, SECRET_CLAIM_TOKEN).ok_or("no claim token")?;
    let pod_cert = text(&pod_secret, SECRET_TLS_CERT).ok_or("no pool certificate")?;
    let session_secret = match text(secret, SECRET_TLS_KEY) {
        // Created by this reconcile: the API server's answer holds every key.
        Some(_) => secret.clone(),
        // From the cache, which keeps no private key.
        None => Api::<Secret>::namespaced(ctx.client.clone(), &key.namespace)
            .get(&child_name(&key.name))
            .await
            .map_err(|e| format!("reading the session Secret: {e}"))?,
    };
    let material = SessionMaterial {
        token: &text(&session_secret, SECRET_TOKEN).ok_or("no session token")?,
        tls_cert: &text(&session_secret, SECRET_TLS_CERT).ok_or("no session certificate")?,
        tls_key: &text(&session_secret, SECRET_TLS_KEY).ok_or("no session key")?,
    };
    let public_ip = match (ctx.config.public_ip_source, &seen.node_name) {
        (PublicIpSource::Node, Some(node)) => ctx
            .node_public_address(node)
            .await
            .map_err(|e| format!("reading the node's address: {e}"))?,
        _ => None,
    };
    let request = claim::claim_request(session, class, &material, public_ip);
    let endpoint = status::endpoint(&host_ip, port);
    claim::send_claim(&endpoint, &claim_token, pod_cert.as_bytes(), &request)
        .await
        .map(|reply| reply.warm_filter)
        .map_err(|e| e.to_string())
}

/// Secret `name`: from the cache, else from the API server.
async fn secret_of(ctx: &Context, namespace: &str, name: &str) -> Result<Secret, kube::Error> {
    match ctx.secrets.get(&ObjectRef::new(name).within(namespace)) {
        Some(secret) => Ok((*secret).clone()),
        None => {
            Api::<Secret>::namespaced(ctx.client.clone(), namespace)
                .get(name)
                .await
        }
    }
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

async fn publish(
    ctx: &Context,
    session: &CameraSession,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Claim".to_string(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &session.object_ref(&())).await {
        tracing::warn!(name = %session.name_any(), %error, "publishing event failed");
    }
}
