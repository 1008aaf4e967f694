//! The controller: runs the reconciles of CameraSessions while this replica leads.
//!
//! Leadership ([`crate::runtime::lease`]): [`run`] campaigns for the Lease; each term it holds it
//! starts a `kube::runtime::Controller` over watches of sessions, their pods and their Secrets
//! ([`crate::caches`], with [`crate::runtime::watch_backoff`]). When the term ends (Lease lost, or
//! SIGTERM) the controller stops taking new work and lets the reconciles in flight finish (at most
//! [`SHUTDOWN_GRACE`], then they are cancelled); [`run`] returns once the Lease is released.
//!
//! Reads: sessions, pods and Secrets come from the watch caches that also trigger the reconciles;
//! the only reads sent to the API server are the node of a bound pod (remembered per node,
//! [`crate::node_addresses`]) and a Secret that exists but is not cached yet. At most
//! [`MAX_CONCURRENT_RECONCILES`] sessions are reconciled at once (a session is never reconciled
//! twice at the same time), which bounds the connections and buffers in flight.
//!
//! A new leader lists every session, pod and Secret, and each asks for a reconcile: the first
//! reconcile in a term of a session the last leader left Ready, with its pod as the status says,
//! only counts it and comes back within [`crate::first_looks::FIRST_LOOK_WINDOW`]
//! ([`crate::first_looks`]), so the sessions that need work are not stuck behind thousands of
//! full looks at settled ones.
//!
//! One reconcile of a session (`controller/execute.rs`) reads, decides, then acts:
//! 1. Gather: the status this operator knows ([`crate::status_memo`]: the one it wrote last until
//!    the cache shows it, so a reconcile right after a write never acts on the older status); the
//!    pod it applied moments ago that the cache does not show yet ([`crate::applied_pods`], so the
//!    same pod is not applied twice); the port (the one the allocator holds for it, else
//!    `status.udpPort`, else the least-used one, [`crate::ports`]); the Secret
//!    `<session>-p2pcamera` (created once, by plain create, so a race never overwrites a token);
//!    the pod `<session>-p2pcamera` from the cache.
//! 2. Decide ([`decide`], pure): idle, crash loop and its backoff, claim a warm pod or create one,
//!    wait for a terminating pod, replace on a `p2pcamera.io/pod-hash` change, hand a starting
//!    pod its node's public address, idle timeout, move to another port when the scheduler finds
//!    the port taken, or report the running pod; and the next status ([`crate::status`]). The
//!    facts that need I/O or shared state are asked for by `decide` and answered by the executor:
//!    a node's public address, a ready pod's camera activity ([`crate::activity`], at most every
//!    `--idle-poll-interval`), another port, a warm pod claimed, and the address handed over
//!    ([`crate::pod_api`]).
//! 3. Act on the [`decide::Plan`]: apply (server-side, field manager
//!    [`p2pcamera_api::objects::FIELD_MANAGER`]) or delete the pod; a pod the API server refuses
//!    as invalid (`422`) turns the plan into [`decide::rejected`] (`SpecValid=False`, no retry
//!    until the session changes). Then the status is written by server-side apply when it
//!    changed, the `p2pcamera.io/wake` annotation removed when the plan acted on it, a Kubernetes
//!    Event published when the phase or reason changes to one a user needs ([`status::event`]),
//!    and the phase and waiting reason counted in [`crate::metrics`].
//!
//! A failed reconcile (API errors, ...) is retried with per-session exponential backoff
//! ([`crate::runtime::retry`]: 1 s doubling to 5 min, reset by a success). A session that waits
//! (no free GPU, no free port) is no failure: its status says why, and its pod's scheduling
//! brings the next reconcile. When a bound camera pod is deleted, a port came free on a node:
//! the sessions that wait for a port are reconciled again at once
//! ([`crate::ports::UdpPortAllocator::freed`]).
//!
//! Deleting a session needs no finalizer: the Pod and Secret are garbage-collected through their
//! owner reference, and the port is given up in the allocator when the deletion is seen (and by
//! a periodic sweep).

mod claim;
pub mod decide;
mod execute;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::store::WriterDropped;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use p2pcamera_api::SessionKey;
use p2pcamera_api::objects::{
    ANNOTATION_PORT, LABEL_POOL, LABEL_SESSION, MANAGED_BY, managed_selector,
};
use tokio::sync::{Notify, OnceCell, watch};
use tokio_util::sync::CancellationToken;

use crate::applied_pods::AppliedPods;
use crate::caches;
use crate::class_fit;
use crate::config::Config;
use crate::crd::{CameraClass, CameraSession};
use crate::desired::{self, BuildError};
use crate::first_looks::FirstLooks;
use crate::metrics::Metrics;
use crate::node_addresses::{self, NODE_ADDRESS_TTL, NodeAddressCache};
use crate::pool::claim as pool_claim;
use crate::pool::{self, ClaimedPods, PoolKeeper};
use crate::ports::UdpPortAllocator;
use crate::runtime::admin::AdminState;
use crate::runtime::lease::LeaderElector;
use crate::runtime::retry::RetryBackoff;
use crate::runtime::store_ready::store_ready;
use crate::runtime::watch_backoff::watch_with_backoff;
use crate::start_times::StartClock;
use crate::status_memo::StatusMemo;

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
            Self::Serialize(_) => "serialize",
            Self::Cache(_) => "cache",
        }
    }
}

/// State shared by the reconciles of one leadership term.
struct Context {
    client: Client,
    config: Config,
    allocator: Arc<UdpPortAllocator>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    sessions: Store<CameraSession>,
    classes: Store<CameraClass>,
    pods: Store<Pod>,
    secrets: Store<Secret>,
    nodes: NodeAddressCache,
    retries: RetryBackoff<SessionKey>,
    statuses: StatusMemo,
    applied_pods: AppliedPods,
    claimed: Arc<ClaimedPods>,
    claiming: claim::Claiming,
    starts: StartClock,
    first_looks: FirstLooks,
    seeded: OnceCell<()>,
    last_poll: std::sync::Mutex<HashMap<SessionKey, Instant>>,
}

impl Context {
    /// Whether the session `key` exists; for a pool pod's allocator key, whether the pod does.
    fn is_live(&self, key: &SessionKey) -> bool {
        match pool_claim::pool_pod_of(key) {
            Some(pod) => self
                .pods
                .get(&ObjectRef::new(pod).within(&key.namespace))
                .is_some(),
            None => self
                .sessions
                .get(&ObjectRef::new(&key.name).within(&key.namespace))
                .is_some(),
        }
    }

    /// Waits until every cache holds its first full list, then seeds the port allocator from
    /// them (once per leadership term), so no port is handed out before the taken ones are known.
    async fn caches_ready(&self) -> Result<(), Error> {
        self.seeded
            .get_or_try_init(|| async {
                store_ready(&self.sessions).await?;
                store_ready(&self.classes).await?;
                store_ready(&self.pods).await?;
                store_ready(&self.secrets).await?;
                seed_allocator(&self.allocator, &self.sessions.state(), &self.pods.state());
                tracing::info!(
                    sessions = self.sessions.len(),
                    pods = self.pods.len(),
                    "caches filled"
                );
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

    /// Whether the session's pod may be polled now (at most once per poll interval); records
    /// the poll when it may.
    fn poll_due(&self, key: &SessionKey) -> bool {
        let mut polls = self.last_poll.lock().unwrap_or_else(|p| p.into_inner());
        let interval = decide::idle_poll_interval(&self.config);
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
pub async fn run(
    client: Client,
    config: Config,
    admin: AdminState,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let identity = config.identity();
    let elector = LeaderElector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        &identity,
    );
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
        let result = run_controller(
            client.clone(),
            config.clone(),
            &identity,
            admin.metrics.clone(),
            term_end,
        )
        .await;
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
    let managed = watcher::Config::default().labels(&managed_selector());
    let (sessions, session_writer) = reflector::store();
    let (classes, class_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let (secrets, secret_writer) = reflector::store();
    let allocator = Arc::new(UdpPortAllocator::new(config.port_range));
    let (port_freed, waiting_for_port) = futures::channel::mpsc::unbounded();
    let pool_wake = Arc::new(Notify::new());
    let claimed = Arc::new(ClaimedPods::default());
    let session_events = watch_with_backoff(
        namespaced::<CameraSession>(&client, ns),
        watcher::Config::default(),
    )
    .modify(caches::trim_session)
    .reflect(session_writer)
    .inspect_ok({
        let allocator = allocator.clone();
        move |event| {
            if let watcher::Event::Delete(session) = event {
                allocator.release(&session_key(session));
            }
        }
    })
    .applied_objects();
    let pod_events = watch_with_backoff(namespaced::<Pod>(&client, ns), managed.clone())
        .modify(caches::trim_pod)
        .reflect(pod_writer)
        .inspect_ok({
            let (allocator, claimed, pool_wake) =
                (allocator.clone(), claimed.clone(), pool_wake.clone());
            move |event| {
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        claimed.seen(pod);
                    }
                    watcher::Event::Delete(pod) => claimed.gone(pod),
                    _ => {}
                }
                if let watcher::Event::Apply(pod) | watcher::Event::Delete(pod) = event
                    && pod.labels().contains_key(LABEL_POOL)
                {
                    pool_wake.notify_one();
                }
                let bound = |pod: &Pod| {
                    pod.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_some()
                };
                if let watcher::Event::Delete(pod) = event
                    && bound(pod)
                {
                    for key in allocator.freed() {
                        let session = ObjectRef::new(&key.name).within(&key.namespace);
                        // The receiver lives as long as the controller; a send fails only as it stops.
                        let _ = port_freed.unbounded_send(session);
                    }
                }
            }
        })
        .touched_objects();
    let secret_events = watch_with_backoff(namespaced::<Secret>(&client, ns), managed)
        .modify(caches::trim_secret)
        .reflect(secret_writer)
        .touched_objects();
    let class_events = watch_with_backoff(
        Api::<CameraClass>::all(client.clone()),
        watcher::Config::default(),
    )
    .modify(|class| class.managed_fields_mut().clear())
    .reflect(class_writer)
    .inspect_ok({
        let pool_wake = pool_wake.clone();
        move |_| pool_wake.notify_one()
    })
    .touched_objects();
    tracing::info!("leading: reconciling camera sessions");

    let controller = Controller::for_stream(session_events, sessions.clone())
        .owns_stream(pod_events)
        .owns_stream(secret_events)
        .watches_stream(class_events, {
            let (sessions, defaults) = (sessions.clone(), DefaultClasses::default());
            move |class| {
                let default_changed = defaults.seen(&class);
                sessions_of_class(&sessions, &class.name_any(), default_changed)
            }
        })
        .reconcile_on(waiting_for_port)
        .with_config(controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES))
        .graceful_shutdown_on(stopping.clone().cancelled_owned());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGED_BY.to_string(),
            instance: Some(identity.to_string()),
        },
    );
    let keeper = Arc::new(PoolKeeper::new(
        client.clone(),
        config.clone(),
        classes.clone(),
        pods.clone(),
        sessions.clone(),
        allocator.clone(),
        metrics.clone(),
        pool_wake,
    ));
    let ctx = Arc::new(Context {
        allocator,
        client,
        config,
        metrics,
        recorder,
        sessions,
        classes,
        pods,
        secrets,
        nodes: NodeAddressCache::new(NODE_ADDRESS_TTL),
        retries: RetryBackoff::default(),
        statuses: StatusMemo::default(),
        applied_pods: AppliedPods::default(),
        claimed,
        claiming: claim::Claiming::default(),
        starts: StartClock::default(),
        first_looks: FirstLooks::default(),
        seeded: OnceCell::new(),
        last_poll: Default::default(),
    });
    let sweeper = tokio::spawn(sweep(ctx.clone()));
    let pools = tokio::spawn(pool::run(keeper));
    let mut running = std::pin::pin!(controller.run(reconcile, error_policy, ctx).for_each(
        |result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile loop event");
            }
        }
    ));
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
    pools.abort();
    Ok(())
}

/// The sessions a change of class `name` may concern: those that name it, and, when the change
/// may have made it or unmade it the default (`default_changed`), those that name no class.
fn sessions_of_class(
    sessions: &Store<CameraSession>,
    name: &str,
    default_changed: bool,
) -> Vec<ObjectRef<CameraSession>> {
    sessions
        .state()
        .iter()
        .filter(|s| match s.spec.class_name.as_deref() {
            Some(named) => named == name,
            None => default_changed,
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The classes last seen marked as the default, to tell which class events concern the
/// sessions that name no class.
#[derive(Clone, Default)]
struct DefaultClasses(Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl DefaultClasses {
    /// Records `class` (as an event shows it) and answers whether it is, or was until now, the
    /// default. A deleted class shows its last state, so deleting the default counts.
    fn seen(&self, class: &CameraClass) -> bool {
        let name = class.name_any();
        let is_default =
            class_fit::is_default(class) && class.metadata.deletion_timestamp.is_none();
        let mut defaults = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let was_default = if is_default {
            !defaults.insert(name)
        } else {
            defaults.remove(&name)
        };
        is_default || was_default
    }
}

/// Forgets deleted sessions in the allocator, retry counts, memos and metrics, and stale node
/// addresses, every few seconds.
async fn sweep(ctx: Arc<Context>) {
    // A cache that is not filled yet would make every session look deleted.
    if store_ready(&ctx.sessions).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        ctx.allocator.retain(|k| ctx.is_live(k));
        ctx.retries.retain(|k| ctx.is_live(k));
        ctx.statuses.retain(|k| ctx.is_live(k));
        ctx.applied_pods.retain(|k| ctx.is_live(k));
        ctx.claimed.retain(|k| ctx.is_live(k));
        ctx.starts.retain(|k| ctx.is_live(k));
        ctx.first_looks.retain(|k| ctx.is_live(k));
        ctx.metrics.retain_sessions(|k| ctx.is_live(k));
        ctx.nodes.expire(Instant::now());
    }
}

/// Claims the ports the camera pods hold (their annotation; a terminating pod's port is on its
/// way out; an idle pool pod's under its pool key), then the ports recorded in the status of the
/// sessions without such a pod.
fn seed_allocator(
    allocator: &UdpPortAllocator,
    sessions: &[Arc<CameraSession>],
    pods: &[Arc<Pod>],
) {
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let namespace = pod.namespace().unwrap_or_default();
        let key = match (
            pod.labels().get(LABEL_SESSION),
            pod.labels().get(LABEL_POOL),
        ) {
            (Some(session), _) => SessionKey::new(namespace, session),
            (None, Some(_)) => pool_claim::pool_key(&namespace, &pod.name_any()),
            (None, None) => continue,
        };
        let port = desired::pod_annotation(pod, ANNOTATION_PORT).and_then(|p| p.parse().ok());
        if let Some(port) = port
            && let Err(error) = allocator.claim(&key, port)
        {
            tracing::warn!(session = %key, %error, "port from pod not reusable");
        }
    }
    for session in sessions {
        let key = session_key(session);
        if let Some(port) = session.status.as_ref().and_then(|s| s.udp_port)
            && allocator.port_of(&key).is_none()
            && let Err(error) = allocator.claim(&key, port)
        {
            tracing::warn!(session = %key, %error, "port from status not reusable");
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
    let result = execute::reconcile(&session, &ctx).await;
    ctx.metrics.reconciled(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.retries.succeeded(&session_key(&session));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CameraClassSpec;
    use p2pcamera_api::objects::ANNOTATION_DEFAULT_CLASS;

    fn class(name: &str, default: bool) -> CameraClass {
        let mut class = CameraClass::new(name, CameraClassSpec::default());
        if default {
            class
                .annotations_mut()
                .insert(ANNOTATION_DEFAULT_CLASS.into(), "true".into());
        }
        class
    }

    #[test]
    fn only_events_that_touch_the_default_concern_sessions_without_a_class() {
        let defaults = DefaultClasses::default();
        assert!(!defaults.seen(&class("other", false)), "never the default");
        assert!(
            defaults.seen(&class("standard", true)),
            "became the default"
        );
        assert!(defaults.seen(&class("standard", true)), "is the default");
        assert!(defaults.seen(&class("standard", false)), "stopped being it");
        assert!(!defaults.seen(&class("standard", false)), "still not it");
        let mut deleting = class("standard", true);
        assert!(defaults.seen(&deleting));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(defaults.seen(&deleting), "the default going away");
        assert!(!defaults.seen(&class("standard", false)));
    }
}
