//! The reconciler: reads, builds (pure, [`crate::desired`]), applies, writes status
//! ([`crate::status`]), all gated by leader election ([`crate::leader`]).
//!
//! Sessions, pods and Secrets are read from the watch caches ([`crate::caches`]) that also
//! trigger the reconciles; the only reads sent to the API server are the node of a bound pod
//! (remembered per node, [`crate::node_addresses`]) and a Secret that exists but is not cached
//! yet. At most [`MAX_CONCURRENT_RECONCILES`] sessions are reconciled at once (a session is never
//! reconciled twice at the same time), which bounds the connections and buffers in flight.
//!
//! Per reconcile of a session:
//! 1. Port: claim `status.udpPort`, else allocate one ([`crate::ports`]).
//! 2. Secret `<session>-p2pcamera`: created once (plain create, so a race never overwrites a token).
//! 3. Pod `<session>-p2pcamera`:
//!    - Idle session (phase Idle, spec unchanged, no `p2pcamera.io/wake` annotation): no pod.
//!    - Crash loop ([`status::crash_loop`]): pod deleted, phase Failed, new pod after the backoff.
//!    - Missing: created by server-side apply (field manager [`FIELD_MANAGER`]). When the API
//!      server rejects the pod as invalid (`422`, e.g. a node selector that is no label), the spec
//!      is at fault: condition `SpecValid=False` with the server's message, phase Failed, and no
//!      retry until the session changes.
//!    - `p2pcamera.io/pod-hash` differs from the desired pod (spec change, port change, pinning to
//!      the node's public address): deleted, recreated once gone (a pinning replacement keeps the
//!      node and address in status while the old pod terminates, and the new pod names them). The hash only depends on the
//!      spec and the port, so an unchanged spec never replaces a pod (no flapping).
//!    - Ready with `idleTimeout`: camera activity polled ([`crate::activity`]); idle too long ->
//!      pod deleted, phase Idle (the Secret and port stay).
//! 4. Status written by server-side apply when it changed; a Kubernetes Event for each phase change.
//!    Decisions use the status this operator wrote last until the cache shows it
//!    ([`crate::status_memo`]), so a reconcile right after a write never acts on the older status.
//!
//! A failed reconcile (API errors, no free port, ...) is retried with per-session exponential
//! backoff ([`crate::retry`]: 1 s doubling to 5 min, reset by a success).
//!
//! Shutdown: when the leadership term ends (Lease lost, or SIGTERM), the controller stops taking
//! new work and lets the reconciles in flight finish (at most [`SHUTDOWN_GRACE`], then they are
//! cancelled); [`run`] returns once the Lease is released.
//!
//! Deleting a session needs no finalizer: the Pod and Secret are garbage-collected through their
//! owner reference, and the port is reclaimed from the in-memory allocator once the session is
//! gone from the cache (periodic sweep and on exhaustion).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::store::WriterDropped;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{OnceCell, watch};
use tokio_util::sync::CancellationToken;

use crate::activity;
use crate::admin::AdminState;
use crate::caches;
use crate::config::{Config, PublicIpSource};
use crate::crd::{CameraSession, CameraSessionStatus, Phase};
use crate::desired::{
    self, ANNOTATION_POD_HASH, ANNOTATION_PORT, ANNOTATION_WAKE, BuildError, FIELD_MANAGER, LABEL_SESSION,
    MANAGED_BY, Placement, SECRET_TLS_CERT, SECRET_TOKEN,
};
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::node_addresses::{self, NODE_ADDRESS_TTL, NodeAddressCache};
use crate::ports::{PortError, SessionKey, UdpPortAllocator};
use crate::retry::RetryBackoff;
use crate::status::{self, Situation, StatusInputs};
use crate::status_memo::StatusMemo;
use crate::watch_backoff::watch_with_backoff;

/// Most sessions reconciled at the same time.
pub const MAX_CONCURRENT_RECONCILES: u16 = 32;
/// How long the reconciles in flight may take to finish when a leadership term ends.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Errors of a reconciliation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API request failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The desired objects could not be built.
    #[error("building objects: {0}")]
    Build(#[from] BuildError),
    /// No port could be allocated.
    #[error("port allocation: {0}")]
    Ports(#[from] PortError),
    /// The status could not be serialized.
    #[error("serializing status: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A watch cache ended before it was filled (the controller is stopping).
    #[error("watch cache closed: {0}")]
    Cache(#[from] WriterDropped),
}

impl Error {
    /// Short class for the `reason` label of the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Build(_) => "build",
            Self::Ports(_) => "ports",
            Self::Serialize(_) => "serialize",
            Self::Cache(_) => "cache",
        }
    }
}

/// State shared by the reconciles of one leadership term.
struct Context {
    client: Client,
    config: Config,
    allocator: UdpPortAllocator,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    sessions: Store<CameraSession>,
    pods: Store<Pod>,
    secrets: Store<Secret>,
    nodes: NodeAddressCache,
    retries: RetryBackoff<SessionKey>,
    statuses: StatusMemo,
    seeded: OnceCell<()>,
    last_poll: std::sync::Mutex<HashMap<SessionKey, Instant>>,
}

impl Context {
    fn is_live(&self, key: &SessionKey) -> bool {
        self.sessions
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
            .is_some()
    }

    /// Waits until every cache holds its first full list, then seeds the port allocator from
    /// them (once per leadership term), so no port is handed out before the taken ones are known.
    async fn caches_ready(&self) -> Result<(), Error> {
        self.seeded
            .get_or_try_init(|| async {
                self.sessions.wait_until_ready().await?;
                self.pods.wait_until_ready().await?;
                self.secrets.wait_until_ready().await?;
                seed_allocator(&self.allocator, &self.sessions.state(), &self.pods.state());
                tracing::info!(sessions = self.sessions.len(), pods = self.pods.len(), "caches filled");
                Ok::<(), Error>(())
            })
            .await?;
        Ok(())
    }

    /// The public address of `node`, remembered for [`NODE_ADDRESS_TTL`].
    async fn node_public_address(&self, node: &str) -> Result<Option<String>, Error> {
        if let Some(address) = self.nodes.get(node, Instant::now()) {
            return Ok(address);
        }
        let address = Api::<Node>::all(self.client.clone())
            .get_opt(node)
            .await?
            .as_ref()
            .and_then(node_addresses::public_address);
        self.nodes.insert(node, address.clone(), Instant::now());
        Ok(address)
    }

    fn poll_due(&self, key: &SessionKey) -> bool {
        let mut polls = self.last_poll.lock().unwrap_or_else(|p| p.into_inner());
        let interval = self.config.idle_poll_interval.max(Duration::from_secs(1));
        match polls.get(key) {
            Some(at) if at.elapsed() < interval => false,
            _ => {
                polls.insert(key.clone(), Instant::now());
                true
            }
        }
    }
}

/// Runs the operator until `shutdown`: campaigns for the Lease and reconciles only while leading.
/// Sets `admin.ready` once running and keeps `admin.metrics` up to date.
pub async fn run(client: Client, config: Config, admin: AdminState, shutdown: CancellationToken) -> Result<(), Error> {
    let identity = config.identity();
    let elector = LeaderElector::new(client.clone(), &config.lease_namespace, &config.lease_name, &identity);
    let (leading_tx, mut leading) = watch::channel(false);
    let election = tokio::spawn(elector.run(leading_tx, shutdown.clone()));
    admin.ready.store(true, Ordering::Relaxed);
    tracing::info!(%identity, lease = %config.lease_name, "operator started");
    loop {
        tokio::select! {
            // Shutdown first: a replica that leads while stopping must not start a new term.
            biased;
            _ = shutdown.cancelled() => break,
            became = leading.wait_for(|l| *l) => if became.is_err() { break },
        }
        admin.metrics.set_leader(true);
        let mut lost = leading.clone();
        let stop = shutdown.clone();
        let term_end = async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => {},
                _ = stop.cancelled() => {},
            }
        };
        let result = run_controller(client.clone(), config.clone(), &identity, admin.metrics.clone(), term_end).await;
        admin.metrics.set_leader(false);
        if let Err(error) = result {
            tracing::error!(%error, "controller term failed");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    if let Err(error) = election.await {
        tracing::warn!(%error, "leader election task ended abnormally");
    }
    tracing::info!("operator stopped");
    Ok(())
}

fn namespaced<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_controller(
    client: Client,
    config: Config,
    identity: &str,
    metrics: Arc<Metrics>,
    term_end: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let ns = config.namespace.as_deref();
    let stopping = CancellationToken::new();
    let managed = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let (sessions, session_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let (secrets, secret_writer) = reflector::store();
    let session_events = watch_with_backoff(namespaced::<CameraSession>(&client, ns), watcher::Config::default())
        .modify(caches::trim_session)
        .reflect(session_writer)
        .applied_objects();
    let pod_events = watch_with_backoff(namespaced::<Pod>(&client, ns), managed.clone())
        .modify(caches::trim_pod)
        .reflect(pod_writer)
        .touched_objects();
    let secret_events = watch_with_backoff(namespaced::<Secret>(&client, ns), managed)
        .modify(caches::trim_secret)
        .reflect(secret_writer)
        .touched_objects();
    tracing::info!("leading: reconciling camera sessions");

    let controller = Controller::for_stream(session_events, sessions.clone())
        .owns_stream(pod_events)
        .owns_stream(secret_events)
        .with_config(controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES))
        .graceful_shutdown_on(stopping.clone().cancelled_owned());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGED_BY.to_string(),
            instance: Some(identity.to_string()),
        },
    );
    let ctx = Arc::new(Context {
        allocator: UdpPortAllocator::new(config.port_range),
        client,
        config,
        metrics,
        recorder,
        sessions,
        pods,
        secrets,
        nodes: NodeAddressCache::new(NODE_ADDRESS_TTL),
        retries: RetryBackoff::default(),
        statuses: StatusMemo::default(),
        seeded: OnceCell::new(),
        last_poll: Default::default(),
    });
    let sweeper = tokio::spawn(sweep(ctx.clone()));
    let mut running = std::pin::pin!(controller.run(reconcile, error_policy, ctx).for_each(|result| async move {
        if let Err(error) = result {
            tracing::debug!(%error, "reconcile loop event");
        }
    }));
    tokio::select! {
        () = &mut running => {}
        () = term_end => {
            // Graceful: no new reconciles, the ones in flight finish. A controller stopped
            // before its caches were filled would wait for them forever, hence the bound;
            // dropping it then cancels what is left.
            stopping.cancel();
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut running).await.is_err() {
                tracing::warn!(grace_seconds = SHUTDOWN_GRACE.as_secs(), "reconciles still running at the end of the grace period; cancelled");
            }
        }
    }
    sweeper.abort();
    Ok(())
}

/// Forgets deleted sessions in the allocator, retry counts and metrics, and stale node
/// addresses, every few seconds.
async fn sweep(ctx: Arc<Context>) {
    // A cache that is not filled yet would make every session look deleted.
    if ctx.sessions.wait_until_ready().await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        ctx.allocator.retain(|k| ctx.is_live(k));
        ctx.retries.retain(|k| ctx.is_live(k));
        ctx.statuses.retain(|k| ctx.is_live(k));
        ctx.metrics.retain_sessions(|k| ctx.is_live(k));
        ctx.nodes.expire(Instant::now());
    }
}

/// Claims the ports recorded in the sessions' status, then those on pods whose session has none.
fn seed_allocator(allocator: &UdpPortAllocator, sessions: &[Arc<CameraSession>], pods: &[Arc<Pod>]) {
    for session in sessions {
        let key = SessionKey::new(session.namespace().unwrap_or_default(), session.name_any());
        if let Some(port) = session.status.as_ref().and_then(|s| s.udp_port)
            && let Err(error) = allocator.claim(&key, port)
        {
            tracing::warn!(session = %key, %error, "port from status not reusable");
        }
    }
    for pod in pods {
        let Some(session) = pod.labels().get(LABEL_SESSION) else { continue };
        let key = SessionKey::new(pod.namespace().unwrap_or_default(), session);
        let port = desired::pod_annotation(pod, ANNOTATION_PORT).and_then(|p| p.parse().ok());
        if let Some(port) = port
            && allocator.port_of(&key).is_none()
            && let Err(error) = allocator.claim(&key, port)
        {
            tracing::warn!(session = %key, %error, "port from pod not reusable");
        }
    }
}

fn session_key(session: &CameraSession) -> SessionKey {
    SessionKey::new(session.namespace().unwrap_or_default(), session.name_any())
}

fn error_policy(session: Arc<CameraSession>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.metric_label());
    let key = session_key(&session);
    let retry_in = ctx.retries.failed(&key);
    tracing::warn!(namespace = %key.namespace, name = %key.name, %error, retry_in_seconds = retry_in.as_secs(), "reconcile failed");
    Action::requeue(retry_in)
}

async fn reconcile(session: Arc<CameraSession>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_session(&session, &ctx).await;
    ctx.metrics.reconciled(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.retries.succeeded(&session_key(&session));
    }
    result
}

/// The session Secret: from the cache, else created; read from the API server only when it
/// exists but is not cached yet.
async fn ensure_secret(ctx: &Context, session: &CameraSession, name: &str, ns: &str) -> Result<Arc<Secret>, Error> {
    let child = desired::child_name(name);
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

async fn delete_pod(api: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn secret_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret.data.as_ref()?.get(key).map(|b| b.0.as_slice())
}

async fn reconcile_session(session: &CameraSession, ctx: &Context) -> Result<Action, Error> {
    let name = session.name_any();
    let ns = session.namespace().unwrap_or_default();
    let key = SessionKey::new(&ns, &name);
    if session.metadata.deletion_timestamp.is_some() {
        ctx.allocator.release(&key);
        ctx.metrics.set_phase(&key, None);
        return Ok(Action::await_change());
    }
    ctx.caches_ready().await?;
    let client = &ctx.client;
    let config = &ctx.config;
    let sessions: Api<CameraSession> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let generation = session.metadata.generation;
    let prev = ctx
        .statuses
        .current(&key, session.metadata.resource_version.as_deref(), session.status.as_ref());
    // The session versions this reconcile decides from, all older than its status write.
    let mut read_versions: Vec<String> = session.metadata.resource_version.iter().cloned().collect();

    let port = match prev.udp_port.map(|p| ctx.allocator.claim(&key, p)) {
        Some(Ok(())) => prev.udp_port.unwrap_or_default(),
        _ => ctx.allocator.allocate(&key, |k| ctx.is_live(k))?,
    };

    let wake = session.annotations().contains_key(ANNOTATION_WAKE);
    if wake {
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_WAKE: null}}});
        let woken = sessions.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        read_versions.extend(woken.metadata.resource_version);
    }
    let stays_idle = !wake && prev.phase == Some(Phase::Idle) && prev.observed_generation == generation;

    let secret = ensure_secret(ctx, session, &name, &ns).await?;
    let pod = ctx.pods.get(&ObjectRef::new(&desired::child_name(&name)).within(&ns));
    let observed = pod.as_deref().map(status::observe_pod);
    tracing::debug!(namespace = %ns, name = %name, pod = ?observed, "reconciling session");
    let now = Timestamp::now();
    let mut public_address: Option<String> = None;
    let mut last_active = None;

    // During the crash backoff the crashed pod is going away or gone, and the session stays Failed.
    let crash_wait = status::crash_backoff_remaining(&prev, now, config.crash_backoff)
        .filter(|_| observed.as_ref().is_none_or(|obs| obs.terminating));
    let (situation, action) = match (&pod, &observed, crash_wait) {
        _ if stays_idle => {
            if let Some(pod) = &pod {
                delete_pod(&pods, pod).await?;
            }
            (Situation::Idle, Action::await_change())
        }
        (Some(pod), Some(obs), _) if !obs.terminating && status::crash_loop(obs, config.crash_restart_limit).is_some() => {
            let message = status::crash_loop(obs, config.crash_restart_limit).unwrap_or_default();
            delete_pod(&pods, pod).await?;
            (Situation::CrashLoop { message }, Action::requeue(config.crash_backoff))
        }
        (_, _, Some(left)) => (
            Situation::CrashLoop {
                message: prev.message.clone().unwrap_or_default(),
            },
            Action::requeue(left),
        ),
        (None, _, None) | (_, None, None) => {
            let pin = match (config.public_ip_source, prev.phase, &prev.node_name, &prev.public_address) {
                (PublicIpSource::Node, Some(Phase::Terminating), Some(node), Some(_)) => ctx
                    .node_public_address(node)
                    .await?
                    .map(|address| Placement {
                        node: node.clone(),
                        address,
                    }),
                _ => None,
            };
            let desired = desired::build_pod(session, port, config, pin.as_ref())?;
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match pods.patch(&desired::child_name(&name), &params, &Patch::Apply(&desired)).await {
                Ok(_) => (Situation::NoPod, Action::requeue(Duration::from_secs(300))),
                Err(kube::Error::Api(status)) if status.code == 422 => {
                    tracing::warn!(namespace = %ns, name = %name, message = %status.message, "pod rejected as invalid; waiting for a spec change");
                    (Situation::InvalidSpec { message: status.message }, Action::await_change())
                }
                Err(e) => return Err(e.into()),
            }
        }
        (Some(_), Some(obs), None) if obs.terminating => (Situation::Replacing(obs), Action::requeue(Duration::from_secs(2))),
        (Some(pod), Some(obs), None) => {
            let bound_node = obs.node_name.as_deref().filter(|_| obs.scheduling == status::Scheduling::Bound);
            if let Some(node) = bound_node {
                public_address = match config.public_ip_source {
                    PublicIpSource::Host => obs.host_ip.clone(),
                    PublicIpSource::Node => ctx.node_public_address(node).await?,
                };
            }
            let placement = desired::pinned_placement(pod).or_else(|| match (bound_node, &public_address, &obs.host_ip) {
                (Some(node), Some(address), Some(host_ip)) if address != host_ip => Some(Placement {
                    node: node.to_string(),
                    address: address.clone(),
                }),
                _ => None,
            });
            let wanted = desired::build_pod(session, port, config, placement.as_ref())?;
            let current_hash = desired::pod_annotation(pod, ANNOTATION_POD_HASH);
            if current_hash != desired::pod_annotation(&wanted, ANNOTATION_POD_HASH) {
                let unpinned = desired::build_pod(session, port, config, None)?;
                let pinning = placement.is_some() && current_hash == desired::pod_annotation(&unpinned, ANNOTATION_POD_HASH);
                if !pinning {
                    public_address = None;
                }
                tracing::info!(namespace = %ns, name = %name, pinning, "replacing pod");
                delete_pod(&pods, pod).await?;
                (Situation::Replacing(obs), Action::requeue(Duration::from_secs(2)))
            } else {
                let timeout = session
                    .spec
                    .idle_timeout
                    .as_deref()
                    .and_then(|t| crate::config::parse_duration(t).ok());
                let mut idle = false;
                if let (true, Some(timeout), Some(host_ip)) = (obs.ready, timeout, obs.host_ip.as_deref())
                    && ctx.poll_due(&key)
                {
                    let token = secret_value(&secret, SECRET_TOKEN).map(String::from_utf8_lossy).unwrap_or_default();
                    let cert = secret_value(&secret, SECRET_TLS_CERT).unwrap_or_default();
                    match activity::fetch_status(&status::endpoint(host_ip, port), &token, cert).await {
                        Ok(report) => {
                            last_active = if report.camera_connected { Some(now) } else { report.last_active };
                            let known = last_active.or(prev.last_active_time.as_ref().map(|t| t.0));
                            idle = status::idle_expired(now, timeout, report.camera_connected, known, status::ready_since(&prev));
                        }
                        Err(error) => tracing::warn!(namespace = %ns, name = %name, %error, "activity poll failed"),
                    }
                }
                if idle {
                    delete_pod(&pods, pod).await?;
                    (Situation::Idle, Action::await_change())
                } else if obs.ready && timeout.is_some() {
                    (Situation::Running(obs), Action::requeue(config.idle_poll_interval.max(Duration::from_secs(1))))
                } else {
                    (Situation::Running(obs), Action::requeue(Duration::from_secs(300)))
                }
            }
        }
    };

    let inputs = StatusInputs {
        generation,
        port,
        public_address: public_address.as_deref(),
        last_active,
    };
    let next = status::next_status(&prev, &situation, &inputs, now);
    if next != prev {
        let written = write_status(&sessions, &name, &next).await?;
        ctx.statuses.wrote(&key, read_versions, written.metadata.resource_version, next.clone());
    }
    if next.phase != prev.phase {
        publish_event(ctx, session, &next).await;
    }
    ctx.metrics.set_phase(&key, next.phase);
    Ok(action)
}

/// Writes the status by server-side apply; returns the session as written.
async fn write_status(api: &Api<CameraSession>, name: &str, status: &CameraSessionStatus) -> Result<CameraSession, Error> {
    let patch = serde_json::json!({
        "apiVersion": CameraSession::api_version(&()),
        "kind": CameraSession::kind(&()),
        "status": serde_json::to_value(status)?,
    });
    Ok(api
        .patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?)
}

async fn publish_event(ctx: &Context, session: &CameraSession, status: &CameraSessionStatus) {
    let Some(phase) = status.phase else { return };
    let event = Event {
        type_: if phase == Phase::Failed { EventType::Warning } else { EventType::Normal },
        reason: phase.as_str().to_string(),
        note: status.message.clone(),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &session.object_ref(&())).await {
        tracing::warn!(name = %session.name_any(), %error, "publishing event failed");
    }
}
