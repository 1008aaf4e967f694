//! Warm pools: idle camera pods per CameraClass, started before their sessions, each claimed by
//! one new session and never reused.
//!
//! A class with `spec.warmPool` gets pods named `<class>-warm-<random>` in the pool's namespace
//! ([`claim::pool_namespace`]), kept by the operator that serves that namespace (an operator
//! serving one namespace leaves pools of other namespaces alone; with several operators in a
//! cluster, each class with a pool names its namespace): owned by the class, labelled `p2pcamera.io/pool=<class>`, each with
//! a Secret of its own (owned by the pod) holding a claim token and the pod's certificate. They
//! run camera-pod unclaimed (`P2PCAMERA_CLAIM_TOKEN_FILE`): process started, the pool's filter
//! built and warmed up, Ready, but no session token and no camera.
//!
//! [`run`] keeps each pool at its size while this replica leads: on every class event and pool
//! pod event, and every [`POOL_RESYNC`], [`plan::plan`] decides from the caches, then idle pods
//! are created (port from the shared allocator, under a pool key) or deleted, and the class's
//! `status.warmPool` is written when it changed (idle, starting, claimed, and why the pool is
//! short). The session controller claims pods ([`claim`]); [`ClaimedPods`] tells it which pod a
//! session claimed (a claimed pod keeps its pool name, not `<session>-p2pcamera`).

pub mod claim;
pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use p2pcamera_api::SessionKey;
use p2pcamera_api::objects::{FIELD_MANAGER, LABEL_POOL, LABEL_SESSION};
use tokio::sync::Notify;

use crate::class_fit::{self, ResolvedClass};
use crate::config::Config;
use crate::crd::{CameraClass, CameraSession, WarmPool, WarmPoolStatus};
use crate::desired::{self, SecretMaterial};
use crate::metrics::Metrics;
use crate::ports::UdpPortAllocator;
use crate::runtime::store_ready::store_ready;
use crate::status::REASON_NO_FREE_GPU;

/// How often every pool is looked at without an event.
pub const POOL_RESYNC: Duration = Duration::from_secs(5);
/// Longest class-name part of a pool pod's name (its name is also a label value, at most 63).
const NAME_PREFIX_MAX: usize = 45;

/// Errors keeping a pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A Kubernetes API request failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The pod certificate could not be generated.
    #[error(transparent)]
    Build(#[from] desired::BuildError),
    /// The status could not be serialized.
    #[error("serializing status: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Which pool pod each session claimed, so the session's reconcile finds a pod that is not
/// named after it. Filled from pod events (pods with both a pool and a session label) and by the
/// claim itself; until the cache shows the claim, the pod as the claim write returned it stands in
/// for the cached one (which still looks idle).
#[derive(Debug, Default)]
pub struct ClaimedPods {
    by_session: Mutex<Claims>,
}

#[derive(Debug, Default)]
struct Claims {
    by_session: HashMap<SessionKey, Claimed>,
    /// Pods whose hand-over failed (being deleted): never a session's pod again, whatever event
    /// still shows them claimed.
    refused: std::collections::HashSet<(String, String)>,
}

#[derive(Debug)]
struct Claimed {
    pod: String,
    /// The pod as the claim write returned it, until the cache shows the claim.
    written: Option<Arc<Pod>>,
}

impl ClaimedPods {
    fn lock(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.by_session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `key` claimed `pod` (the claim write's answer).
    pub fn claimed(&self, key: &SessionKey, pod: Pod) {
        self.lock().by_session.insert(
            key.clone(),
            Claimed {
                pod: pod.name_any(),
                written: Some(Arc::new(pod)),
            },
        );
    }

    /// Records a pod as a watch event shows it.
    pub fn seen(&self, pod: &Pod) {
        let (Some(session), Some(_)) = (
            pod.labels().get(LABEL_SESSION),
            pod.labels().get(LABEL_POOL),
        ) else {
            return;
        };
        let key = SessionKey::new(pod.namespace().unwrap_or_default(), session);
        let mut claims = self.lock();
        if claims
            .refused
            .contains(&(key.namespace.clone(), pod.name_any()))
        {
            return;
        }
        match claims.by_session.get_mut(&key) {
            Some(claimed) if claimed.pod == pod.name_any() => claimed.written = None,
            _ => {
                claims.by_session.insert(
                    key,
                    Claimed {
                        pod: pod.name_any(),
                        written: None,
                    },
                );
            }
        }
    }

    /// Forgets the claim of `key`: the hand-over of its pod failed and the pod is being deleted.
    pub fn refused(&self, key: &SessionKey) {
        let mut claims = self.lock();
        if let Some(claimed) = claims.by_session.remove(key) {
            claims.refused.insert((key.namespace.clone(), claimed.pod));
        }
    }

    /// Forgets a deleted pod.
    pub fn gone(&self, pod: &Pod) {
        let name = pod.name_any();
        let namespace = pod.namespace().unwrap_or_default();
        let mut claims = self.lock();
        claims
            .by_session
            .retain(|key, claimed| !(key.namespace == namespace && claimed.pod == name));
        claims.refused.remove(&(namespace, name));
    }

    /// The pod `key` claimed, as cached once the cache shows the claim, else as written.
    pub fn pod_of(&self, key: &SessionKey, pods: &Store<Pod>) -> Option<Arc<Pod>> {
        let claims = self.lock();
        let claimed = claims.by_session.get(key)?;
        let cached = pods.get(&ObjectRef::new(&claimed.pod).within(&key.namespace));
        match (&claimed.written, cached) {
            (_, Some(cached)) if cached.labels().contains_key(LABEL_SESSION) => Some(cached),
            (Some(written), _) => Some(written.clone()),
            (None, cached) => cached,
        }
    }

    /// Keeps only the sessions for which `is_live` is true.
    pub fn retain(&self, is_live: impl Fn(&SessionKey) -> bool) {
        self.lock().by_session.retain(|key, _| is_live(key));
    }
}

/// What the pool keeper reads and writes.
pub struct PoolKeeper {
    /// API client.
    pub client: Client,
    /// Operator configuration.
    pub config: Config,
    /// Classes, pods and sessions, from the controller's caches.
    pub classes: Store<CameraClass>,
    /// Managed pods.
    pub pods: Store<Pod>,
    /// Sessions.
    pub sessions: Store<CameraSession>,
    /// The port allocator shared with the sessions.
    pub allocator: Arc<UdpPortAllocator>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Woken by class and pool pod events.
    pub wake: Arc<Notify>,
    /// The status last written per class.
    written: Mutex<HashMap<String, WarmPoolStatus>>,
    /// Pods created and deleted that the cache does not show so yet, per class.
    expected: Mutex<HashMap<String, Expected>>,
}

/// How long a creation or deletion the cache does not show yet is assumed to be on its way.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// A pool's pods created or deleted moments ago, so that a pass over a lagging cache neither
/// creates them again nor counts them as still there.
#[derive(Debug, Default)]
struct Expected {
    created: HashMap<String, std::time::Instant>,
    deleted: HashMap<String, std::time::Instant>,
}

impl Expected {
    /// Forgets what the cache (`cached`: name -> being deleted) shows, and what is too old.
    fn settle(&mut self, cached: &HashMap<String, bool>, now: std::time::Instant) {
        self.created
            .retain(|name, at| !cached.contains_key(name) && now - *at < EXPECTATION_TTL);
        self.deleted.retain(|name, at| {
            cached.get(name).is_some_and(|deleting| !deleting) && now - *at < EXPECTATION_TTL
        });
    }
}

impl PoolKeeper {
    /// A keeper over the controller's caches.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        config: Config,
        classes: Store<CameraClass>,
        pods: Store<Pod>,
        sessions: Store<CameraSession>,
        allocator: Arc<UdpPortAllocator>,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            client,
            config,
            classes,
            pods,
            sessions,
            allocator,
            metrics,
            wake,
            written: Mutex::new(HashMap::new()),
            expected: Mutex::new(HashMap::new()),
        }
    }
}

/// Keeps every class's pool at its size until dropped (the leadership term's end aborts it).
pub async fn run(keeper: Arc<PoolKeeper>) {
    if store_ready(&keeper.classes).await.is_err()
        || store_ready(&keeper.pods).await.is_err()
        || store_ready(&keeper.sessions).await.is_err()
    {
        return;
    }
    tracing::debug!(classes = keeper.classes.len(), "keeping warm pools");
    loop {
        for class in keeper.classes.state() {
            if let Err(error) = keep(&keeper, &class).await {
                tracing::warn!(class = %class.name_any(), %error, "keeping the warm pool failed");
            }
        }
        tokio::select! {
            () = keeper.wake.notified() => {
                // Let a burst of events settle into one pass.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            () = tokio::time::sleep(POOL_RESYNC) => {}
        }
    }
}

/// Sessions of class `class` whose pod waits for a GPU.
fn sessions_waiting_for_gpu(keeper: &PoolKeeper, class: &str) -> u32 {
    let classes = keeper.classes.state();
    let waiting = keeper
        .sessions
        .state()
        .iter()
        .filter(|s| {
            s.status.as_ref().and_then(|st| st.reason.as_deref()) == Some(REASON_NO_FREE_GPU)
        })
        .filter(|s| {
            class_fit::resolve(&s.spec, &classes)
                .is_ok_and(|resolved| resolved.name.as_deref() == Some(class))
        })
        .count();
    u32::try_from(waiting).unwrap_or(u32::MAX)
}

/// Brings the pool of `class` to its size and writes its status.
async fn keep(keeper: &PoolKeeper, class: &CameraClass) -> Result<(), PoolError> {
    let name = class.name_any();
    // A class whose pool was removed keeps none (its idle pods are deleted).
    let configured = class.spec.warm_pool.is_some();
    let pool = class.spec.warm_pool.clone().unwrap_or_default();
    let pool = &pool;
    let Some(namespace) = claim::pool_namespace(pool, &keeper.config).map(str::to_string) else {
        if !configured {
            return Ok(());
        }
        let status = WarmPoolStatus {
            message: Some("set spec.warmPool.namespace: the operator serves every namespace, so the pool has none".into()),
            ..WarmPoolStatus::default()
        };
        return write_status(keeper, &name, status).await;
    };
    if keeper
        .config
        .namespace
        .as_deref()
        .is_some_and(|served| served != namespace)
    {
        // Another operator's pool (one that serves that namespace keeps it and its status).
        return Ok(());
    }
    let pods = keeper.pods.state();
    let mut observed = plan::observe(
        pods.iter().map(AsRef::as_ref),
        &name,
        &namespace,
        keeper.config.crash_restart_limit,
    );
    {
        let cached: HashMap<String, bool> = pods
            .iter()
            .filter(|p| plan::in_pool(p, &name, &namespace))
            .map(|p| (p.name_any(), p.metadata.deletion_timestamp.is_some()))
            .collect();
        let mut expected = keeper.expected.lock().unwrap_or_else(|p| p.into_inner());
        let expected = expected.entry(name.clone()).or_default();
        expected.settle(&cached, std::time::Instant::now());
        observed
            .idle
            .retain(|p| !expected.deleted.contains_key(&p.name));
        observed
            .idle
            .extend(expected.created.keys().map(|pod| plan::IdlePod {
                name: pod.clone(),
                ready: false,
                unschedulable: None,
                created: None,
                broken: false,
            }));
    }
    if !configured && observed == plan::PoolObservation::default() {
        return Ok(());
    }
    let waiting = sessions_waiting_for_gpu(keeper, &name);
    let plan = plan::plan(pool, &observed, waiting);
    let resolved = ResolvedClass {
        name: Some(name.clone()),
        spec: class.spec.clone(),
    };
    let mut status = plan.status.clone();
    // Pods of a class that relays without the operator's TURN URLs would not start.
    let create = match class_fit::relay_configured(&resolved, &keeper.config) {
        Err(misfit) if plan.create > 0 => {
            status.message = Some(misfit.to_string());
            0
        }
        _ => plan.create,
    };
    for _ in 0..create {
        if let Err(error) = create_pool_pod(keeper, class, &resolved, pool, &namespace).await {
            tracing::warn!(class = %name, %error, "creating a warm pod failed");
            status.message = Some(format!("creating a warm pod failed: {error}"));
            break;
        }
    }
    for pod in &plan.delete {
        if delete_pool_pod(keeper, &namespace, pod).await? {
            keeper
                .expected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name.clone())
                .or_default()
                .deleted
                .insert(pod.clone(), std::time::Instant::now());
        }
    }
    keeper
        .metrics
        .set_warm_pool(&name, status.idle, status.starting, status.claimed);
    write_status(keeper, &name, status).await
}

/// A fresh pool pod name for class `class`: `<class>-warm-<8 random>`.
fn pool_pod_name(class: &str) -> String {
    let prefix: String = class.chars().take(NAME_PREFIX_MAX).collect();
    let prefix = prefix.trim_end_matches(['-', '.']);
    let suffix: String = (0..8)
        .map(|_| {
            let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
            char::from(alphabet[usize::from(rand::random::<u8>()) % alphabet.len()])
        })
        .collect();
    format!("{prefix}-warm-{suffix}").replace('.', "-")
}

async fn create_pool_pod(
    keeper: &PoolKeeper,
    class: &CameraClass,
    resolved: &ResolvedClass,
    pool: &WarmPool,
    namespace: &str,
) -> Result<(), PoolError> {
    let name = pool_pod_name(&class.name_any());
    let key = claim::pool_key(namespace, &name);
    let port = keeper.allocator.port(&key, None);
    let pod = desired::build_pool_pod(
        class,
        resolved,
        pool,
        namespace,
        &name,
        port,
        &keeper.config,
    );
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    let created = match Api::<Pod>::namespaced(keeper.client.clone(), namespace)
        .create(&params, &pod)
        .await
    {
        Ok(created) => created,
        Err(error) => {
            keeper.allocator.release(&key);
            return Err(error.into());
        }
    };
    let material = SecretMaterial::generate(namespace, &name)?;
    let secret = desired::build_pool_secret(&created, &class.name_any(), &material);
    Api::<Secret>::namespaced(keeper.client.clone(), namespace)
        .create(&params, &secret)
        .await?;
    keeper
        .expected
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(class.name_any())
        .or_default()
        .created
        .insert(name.clone(), std::time::Instant::now());
    tracing::info!(class = %class.name_any(), pod = %name, port, "created a warm pod");
    Ok(())
}

/// Deletes idle pool pod `name` unless it changed meanwhile (e.g. claimed); answers whether it
/// is on its way out.
async fn delete_pool_pod(
    keeper: &PoolKeeper,
    namespace: &str,
    name: &str,
) -> Result<bool, PoolError> {
    let Some(pod) = keeper.pods.get(&ObjectRef::new(name).within(namespace)) else {
        return Ok(false);
    };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            // A pod claimed meanwhile has a newer version: it is a session's now, not surplus.
            resource_version: pod.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match Api::<Pod>::namespaced(keeper.client.clone(), namespace)
        .delete(name, &params)
        .await
    {
        Ok(_) => {
            tracing::info!(pod = %name, "deleted a warm pod the pool does not need");
            keeper.allocator.release(&claim::pool_key(namespace, name));
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Writes `status.warmPool` of class `name` when it differs from what was written last.
async fn write_status(
    keeper: &PoolKeeper,
    name: &str,
    status: WarmPoolStatus,
) -> Result<(), PoolError> {
    if keeper
        .written
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        == Some(&status)
    {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": "p2pcamera.io/v1alpha1",
        "kind": "CameraClass",
        "status": {"warmPool": serde_json::to_value(&status)?},
    });
    Api::<CameraClass>::all(keeper.client.clone())
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    keeper
        .written
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_string(), status);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_pod_names_are_valid_label_values() {
        let name = pool_pod_name(&"a.very-long-class-name".repeat(10));
        assert!(name.len() <= 63, "{name}");
        assert!(name.contains("-warm-"));
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        assert_ne!(pool_pod_name("gpu"), pool_pod_name("gpu"));
    }
}
