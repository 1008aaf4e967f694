//! The executor of one reconcile: gathers what [`decide`] needs, answers its lookups, and carries
//! out its [`Plan`]. Every branch is in [`decide`]; what is left here is I/O in a fixed order.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use p2pcamera_api::SessionKey;
use p2pcamera_api::objects::{
    ANNOTATION_WAKE, FIELD_MANAGER, SECRET_TLS_CERT, SECRET_TOKEN, child_name,
};

use super::decide::{
    self, Activity, Decision, HandedAddress, Lookup, Lookups, NodeAddress, Observed, OtherPort,
    Plan, PodChange, Polled, PortWait,
};
use super::{Context, Error, claim};
use crate::activity;
use crate::caches;
use crate::class_fit;
use crate::crd::{CameraSession, CameraSessionStatus, Phase};
use crate::desired;
use crate::first_looks;
use crate::pod_api;
use crate::status;

/// Reconciles `session`: gather, [`decide`], act (see the [controller](super) documentation).
pub(super) async fn reconcile(session: &CameraSession, ctx: &Context) -> Result<Action, Error> {
    let name = session.name_any();
    let ns = session.namespace().unwrap_or_default();
    let key = SessionKey::new(&ns, &name);
    if session.metadata.deletion_timestamp.is_some() {
        ctx.allocator.release(&key);
        ctx.metrics.set_session(&key, None);
        return Ok(Action::await_change());
    }
    ctx.caches_ready().await?;
    let prev = ctx.statuses.current(
        &key,
        session.metadata.resource_version.as_deref(),
        session.status.as_ref(),
    );
    let pod = ctx
        .pods
        .get(&ObjectRef::new(&child_name(&name)).within(&ns))
        .or_else(|| ctx.claimed.pod_of(&key, &ctx.pods));
    let settled = first_looks::left_settled(session, &prev, pod.as_deref());
    if let Some(wait) = ctx.first_looks.wait(&key, settled, Instant::now()) {
        ctx.metrics.set_session(&key, Some(&prev));
        return Ok(Action::requeue(wait));
    }
    let was_ready = prev.phase == Some(Phase::Ready);
    ctx.starts.seen(&key, was_ready, Instant::now());
    let port = ctx.allocator.port(&key, prev.udp_port);
    let secret = ensure_secret(ctx, session, &name, &ns).await?;
    let applied_pod = ctx.applied_pods.unseen(&key, pod.is_some(), Instant::now());
    let class = class_fit::resolve(&session.spec, &ctx.classes.state()).and_then(|class| {
        class_fit::check(&session.spec, &class, &ctx.config)?;
        Ok(class)
    });
    tracing::debug!(namespace = %ns, name = %name, pod = ?pod.as_deref().map(status::observe_pod), "reconciling session");
    let mut observed = Observed {
        session,
        class: &class,
        config: &ctx.config,
        prev: &prev,
        port,
        pod: pod.as_deref(),
        applied_pod: applied_pod.as_deref(),
        now: Timestamp::now(),
        awaits_first_frame: ctx.starts.awaits_first_frame(&key, Instant::now()),
        lookups: Lookups::default(),
    };
    let plan = loop {
        match decide::decide(&observed)? {
            Decision::Plan(plan) => break *plan,
            Decision::Lookup(Lookup::NodeAddress { node }) => {
                let address = ctx.node_public_address(&node).await?;
                observed.lookups.node_address = Some(NodeAddress { node, address });
            }
            Decision::Lookup(Lookup::PublicAddress { endpoint, address }) => {
                observed.lookups.public_address =
                    Some(hand_public_address(ctx, &key, &endpoint, &address, &secret).await);
            }
            Decision::Lookup(Lookup::Activity { endpoint }) => {
                observed.lookups.activity =
                    Some(poll_activity(ctx, &key, &endpoint, &secret).await);
            }
            Decision::Lookup(Lookup::WarmPod { pool }) => {
                let claim = match &class {
                    Ok(class) => {
                        claim::claim_warm_pod(ctx, session, &key, class, &pool, &secret).await?
                    }
                    // decide asks only for a session that fits its class.
                    Err(_) => decide::WarmClaim::Missed {
                        reason: crate::pool::claim::REASON_WARM_POOL_EMPTY,
                        message: String::new(),
                    },
                };
                observed.lookups.warm_claim = Some(claim);
            }
            Decision::Lookup(Lookup::OtherPort { taken }) => {
                let port = ctx.allocator.other_port(&key, taken);
                match port {
                    Some(to) => {
                        tracing::info!(namespace = %ns, name = %name, from = taken, to, "port taken on the nodes that fit; moving the session to another port");
                        ctx.metrics.port_moved();
                    }
                    None => {
                        tracing::info!(namespace = %ns, name = %name, port = taken, "port taken on the nodes that fit and no other port to try; waiting");
                    }
                }
                observed.lookups.other_port = Some(OtherPort { taken, port });
            }
        }
    };
    match plan.port_wait {
        PortWait::Unchanged => {}
        PortWait::Over => ctx.allocator.placed(&key),
        PortWait::Waiting => ctx.allocator.waits_for_port(&key),
    }
    let claimed_now = matches!(
        observed.lookups.warm_claim,
        Some(decide::WarmClaim::Claimed { .. })
    );
    let mut plan = change_pod(ctx, &key, &observed, plan).await?;
    if plan.status.node_name.is_some() {
        ctx.starts.bound(&key, Instant::now());
    }
    if plan.status.phase == Some(Phase::Ready)
        && !was_ready
        && let Some(times) = ctx
            .starts
            .ready(&key, claimed_now, Instant::now(), SystemTime::now())
    {
        ctx.metrics.session_started(&times);
        plan.status.start = Some(times);
    }
    if let Some(Polled::Answer(report)) = &observed.lookups.activity
        && let Some(first) = ctx.starts.first_frame(
            &key,
            report.first_answer_ms,
            report.first_frame_ms,
            report.connection.as_ref(),
        )
        && let Some(start) = plan.status.start.as_mut()
    {
        ctx.metrics.session_streamed(&first);
        start.first_answer_millis = first.answer_millis;
        start.first_frame_millis = Some(first.frame_millis);
    }

    let sessions: Api<CameraSession> = Api::namespaced(ctx.client.clone(), &ns);
    if plan.status != prev {
        let written = write_status(&sessions, &name, &plan.status).await?;
        let read = session.metadata.resource_version.clone();
        ctx.statuses.wrote(
            &key,
            read,
            written.metadata.resource_version,
            plan.status.clone(),
        );
    }
    if plan.clear_wake {
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_WAKE: null}}});
        sessions
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if let Some(event) = status::event(&prev, &plan.status) {
        publish_event(ctx, session, event).await;
    }
    ctx.metrics.set_session(&key, Some(&plan.status));
    Ok(plan.then)
}

/// Carries out the plan's pod change; returns the plan that holds afterwards ([`decide::rejected`]
/// when the API server refused the pod as invalid).
async fn change_pod(
    ctx: &Context,
    key: &SessionKey,
    observed: &Observed<'_>,
    plan: Plan,
) -> Result<Plan, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    match &plan.pod {
        PodChange::Keep => Ok(plan),
        PodChange::Delete { name, uid, reason } => {
            tracing::info!(namespace = %key.namespace, name = %key.name, ?reason, "deleting pod");
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pods.delete(name, &params).await {
                // Gone already, or replaced by another pod of the same name meanwhile.
                Ok(_) => Ok(plan),
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                    Ok(plan)
                }
                Err(e) => Err(e.into()),
            }
        }
        PodChange::Apply(pod) => {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match pods
                .patch(&pod.name_any(), &params, &Patch::Apply(pod.as_ref()))
                .await
            {
                Ok(_) => {
                    if let Some(hash) = decide::pod_hash(pod) {
                        ctx.applied_pods.applied(key, hash, Instant::now());
                    }
                    Ok(plan)
                }
                Err(kube::Error::Api(status)) if status.code == 422 => {
                    tracing::warn!(namespace = %key.namespace, name = %key.name, message = %status.message, "pod rejected as invalid; waiting for a spec change");
                    Ok(decide::rejected(observed, status.message))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Polls the camera pod at `endpoint` when the session is due for a poll; a failed poll is no
/// answer (logged), so the session keeps its pod.
async fn poll_activity(ctx: &Context, key: &SessionKey, endpoint: &str, secret: &Secret) -> Polled {
    if !ctx.poll_due(key) {
        return Polled::NoAnswer;
    }
    let token = secret_value(secret, SECRET_TOKEN)
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let cert = secret_value(secret, SECRET_TLS_CERT).unwrap_or_default();
    match activity::fetch_status(endpoint, &token, cert).await {
        Ok(report) => Polled::Answer(Activity {
            camera_connected: report.camera_connected,
            last_active: activity::last_active(&report),
            first_answer_ms: report.first_answer_ms,
            first_frame_ms: report.first_frame_ms,
            connection: report.connection,
        }),
        Err(error) => {
            tracing::warn!(namespace = %key.namespace, name = %key.name, %error, "activity poll failed");
            Polled::NoAnswer
        }
    }
}

/// Hands `address`, the public address of its node, to the session's pod at `endpoint`.
async fn hand_public_address(
    ctx: &Context,
    key: &SessionKey,
    endpoint: &str,
    address: &str,
    secret: &Secret,
) -> HandedAddress {
    let handed = match (
        caches::operator_token(secret),
        secret_value(secret, SECRET_TLS_CERT),
    ) {
        (Some(token), Some(cert)) => {
            match pod_api::hand_public_address(endpoint, &token, cert, address).await {
                Ok(advertised) if advertised == address => HandedAddress::Accepted,
                Ok(advertised) => HandedAddress::Failed(format!(
                    "the pod advertises {advertised}, set up before it was handed {address}"
                )),
                Err(error) => HandedAddress::Failed(error.to_string()),
            }
        }
        _ => HandedAddress::Failed("the session Secret lacks its certificate or key".to_owned()),
    };
    match &handed {
        HandedAddress::Accepted => {
            ctx.metrics.address_handed("accepted");
            tracing::info!(namespace = %key.namespace, name = %key.name, %address, "handed the node's public address to the pod");
        }
        HandedAddress::Failed(error) => {
            ctx.metrics.address_handed("failed");
            // Usual while the pod's server is still starting; retried shortly.
            tracing::debug!(namespace = %key.namespace, name = %key.name, %address, %error, "handing the node's public address failed");
        }
    }
    handed
}

/// The session Secret: from the cache, else created; read from the API server only when it
/// exists but is not cached yet.
async fn ensure_secret(
    ctx: &Context,
    session: &CameraSession,
    name: &str,
    ns: &str,
) -> Result<Arc<Secret>, Error> {
    let child = child_name(name);
    if let Some(secret) = ctx.secrets.get(&ObjectRef::new(&child).within(ns)) {
        return Ok(secret);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let material = desired::SecretMaterial::generate(ns, name)?;
    let secret = desired::build_secret(session, &material)?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    match api.create(&params, &secret).await {
        Ok(created) => Ok(Arc::new(created)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Arc::new(api.get(&child).await?)),
        Err(e) => Err(e.into()),
    }
}

fn secret_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret.data.as_ref()?.get(key).map(|b| b.0.as_slice())
}

/// Writes the status by server-side apply; returns the session as written.
async fn write_status(
    api: &Api<CameraSession>,
    name: &str,
    status: &CameraSessionStatus,
) -> Result<CameraSession, Error> {
    let patch = serde_json::json!({
        "apiVersion": CameraSession::api_version(&()),
        "kind": CameraSession::kind(&()),
        "status": serde_json::to_value(status)?,
    });
    Ok(api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?)
}

/// Publishes `event` about the session. The recorder turns a repeat of the same reason within
/// a few minutes into a series on the first Event (one PATCH that counts it) instead of a new one.
async fn publish_event(ctx: &Context, session: &CameraSession, event: status::SessionEvent) {
    let event = Event {
        type_: if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event.reason,
        note: event.note,
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &session.object_ref(&())).await {
        tracing::warn!(name = %session.name_any(), %error, "publishing event failed");
    }
}
