//! Plays the kubelet's part for camera pods: the pod spec the operator builds is run as the real
//! `camera-pod` process on loopback, and its status is reported the way a kubelet reports it.
//!
//! One [`Kubelet`] serves one node, as a real kubelet does. The node is created **without** kwok's
//! annotation, so kwok (which the [`ControlPlane`] runs for its own fake nodes) never touches this
//! node or its pods; the fixture sets the node's `Ready` condition itself. Nothing takes it away:
//! the plane runs without the node lifecycle controller.
//!
//! For every pod bound to the node (watched by `spec.nodeName`, so an API server restart only
//! pauses the fixture), the fixture:
//! - writes each volume to a directory of its own: `secret` volumes get the Secret's items (with
//!   their modes), `emptyDir` volumes stay empty, `downwardAPI` volumes get the field values;
//! - builds the environment from the container's `env` alone (plus the "image" environment given
//!   in [`KubeletConfig::image_env`], such as `ORT_DYLIB_PATH`, and `PATH`): literal values, and
//!   downward-API `fieldRef`s resolved against the pod and this node (`status.hostIP` and
//!   `status.podIP` are the node's InternalIP, which is therefore a 127.x address). Values that
//!   start with a mount path are rewritten to that volume's directory, and values that start with
//!   the wildcard `0.0.0.0:` become `<node IP>:`, because host networking on this fake node means
//!   the node's loopback address;
//! - starts the camera-pod binary (the "image") with the container's `args`, and reports the pod
//!   `Running` with `Ready`/`ContainersReady` false until the readiness probe's URL (scheme, port
//!   and path from the pod spec, on the node's address) answers 200; then Ready. Like a kubelet's
//!   probe it does not verify the pod's self-signed certificate. Probing stops once the pod is
//!   ready; process liveness is then what the fixture watches;
//! - when the process exits on its own (or cannot be started), reports the container terminated
//!   (`lastState`, `restartCount` + 1, not ready) and starts it again, as `restartPolicy: Always`
//!   asks: the first time at once, like a kubelet, then after a back-off that doubles with every
//!   further exit ([`restart_delay`]: a kubelet's 10 s .. 5 min scaled down to 1 s .. 10 s), reset
//!   once a process ran for [`BACKOFF_RESET`]. Meanwhile the container is `waiting` with reason
//!   `CrashLoopBackOff`. A crash is restarted in place: same pod object, same port, new process;
//!   the last readiness probe answer is kept in [`RunningContainer::probe`] for failure messages;
//! - when the pod is being deleted, stops the process by PID (SIGTERM, then SIGKILL after the
//!   grace period of [`ManagedProcess::stop`]) and removes the pod object, as a kubelet does once
//!   its containers are gone.
//!
//! Processes are [`ManagedProcess`]es: they die with the test binary in any case.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Node, Pod, Secret, Volume};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use crate::nodes::{GpuNode, KWOK_NODE_ANNOTATION};
use crate::process::ManagedProcess;

/// How often processes are checked and readiness probed.
const TICK: Duration = Duration::from_millis(250);
/// Timeout of one readiness probe (the Kubernetes default).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The wildcard prefix that becomes the node's address.
const WILDCARD: &str = "0.0.0.0:";
/// A process that ran this long before it exited is restarted at once again.
pub const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// Longest wait before a crashed container is started again.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How long to wait before starting a container that exited `quick_exits` times in a row, each
/// within [`BACKOFF_RESET`] of its start: no wait for the first, then 1 s, 2 s, 4 s, ... up to
/// 10 s.
pub fn restart_delay(quick_exits: u32) -> Duration {
    match quick_exits {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 2).min(8)).min(BACKOFF_MAX),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("pod {0} has no spec or no container")]
    NoContainer(String),
    #[error("pod {pod}: {what} is not supported by the test kubelet")]
    Unsupported { pod: String, what: String },
    #[error("pod {pod}: volume {volume} of mount {mount} does not exist")]
    MissingVolume {
        pod: String,
        volume: String,
        mount: String,
    },
    #[error("pod {pod}: Secret {secret} has no key {key}")]
    MissingSecretKey {
        pod: String,
        secret: String,
        key: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node address {0} is not a loopback address: camera-pod listens on the node's address")]
    NotLoopback(IpAddr),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// What the fixture runs for every container: the "image".
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// The camera-pod binary.
    pub camera_pod: PathBuf,
    /// Environment the image would bring along (e.g. `ORT_DYLIB_PATH`, `RUST_LOG`).
    pub image_env: Vec<(String, String)>,
    /// Where volumes and process logs go.
    pub dir: PathBuf,
}

/// What a test can see of one running pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningContainer {
    pub pid: u32,
    pub restarts: i32,
    pub ready: bool,
    pub log: PathBuf,
    /// The last readiness probe's outcome (`503 Service Unavailable: warming`, a connection
    /// error), until the container is ready.
    pub probe: Option<String>,
}

type Shared = Arc<Mutex<BTreeMap<(String, String), RunningContainer>>>;

/// A test kubelet for one node; dropping it stops its processes.
pub struct Kubelet {
    node: String,
    client: Client,
    running: Shared,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Kubelet {
    /// Creates `node` (without kwok's annotation) as a Ready node and starts serving its pods.
    /// The node's InternalIP must be a loopback address: processes listen there.
    pub async fn start(
        client: Client,
        node: &GpuNode,
        config: KubeletConfig,
    ) -> Result<Self, KubeletError> {
        if !node.internal_ip.is_loopback() {
            return Err(KubeletError::NotLoopback(node.internal_ip));
        }
        std::fs::create_dir_all(&config.dir).map_err(|source| KubeletError::Io {
            what: format!("creating {}", config.dir.display()),
            source,
        })?;
        let nodes = Api::<Node>::all(client.clone());
        nodes
            .create(&PostParams::default(), &kubelet_node(node)?)
            .await?;
        nodes
            .patch_status(
                &node.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": node_ready_status()})),
            )
            .await?;
        let running: Shared = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let worker = Worker {
            node: node.name.clone(),
            address: node.internal_ip,
            client: client.clone(),
            config,
            pods: HashMap::new(),
            running: running.clone(),
            probe: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .timeout(PROBE_TIMEOUT)
                .build()?,
        };
        let task = tokio::spawn(worker.run(stopped));
        Ok(Self {
            node: node.name.clone(),
            client,
            running,
            stop,
            task: Some(task),
        })
    }

    /// The camera-pod process of pod `namespace/name`, if one runs.
    pub fn container(&self, namespace: &str, name: &str) -> Option<RunningContainer> {
        lock(&self.running)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Stops every process and deletes the node.
    pub async fn shutdown(mut self) -> Result<(), KubeletError> {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Api::<Node>::all(self.client.clone())
            .delete(&self.node, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The Node object: the fake node's shape without kwok's annotation.
fn kubelet_node(node: &GpuNode) -> Result<Node, serde_json::Error> {
    let mut object = node.to_node()?;
    if let Some(annotations) = object.metadata.annotations.as_mut() {
        annotations.remove(KWOK_NODE_ANNOTATION.0);
    }
    object
        .metadata
        .labels
        .get_or_insert_default()
        .insert("type".into(), "p2pcamera-test-kubelet".into());
    Ok(object)
}

fn node_ready_status() -> serde_json::Value {
    let now = Timestamp::now().to_string();
    json!({"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "p2pcamera test kubelet is posting ready status",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }]})
}

/// How to start one container: everything comes from the pod spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Directories to create (emptyDir volumes and every mount).
    pub dirs: Vec<PathBuf>,
    /// Files to write: path, contents, mode.
    pub files: Vec<(PathBuf, Vec<u8>, u32)>,
    /// The readiness probe's URL, if the container has an HTTP probe.
    pub readiness_url: Option<String>,
}

/// The value of a downward-API field of `pod` on a node with address `node_ip`.
pub fn field_value(pod: &Pod, path: &str, node_ip: IpAddr) -> Option<String> {
    let meta = &pod.metadata;
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    match path {
        "status.hostIP" | "status.podIP" => Some(node_ip.to_string()),
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        _ => keyed("metadata.annotations['", meta.annotations.as_ref())
            .or_else(|| keyed("metadata.labels['", meta.labels.as_ref())),
    }
}

/// Rewrites a value that names a file under a mount, or binds the wildcard address.
fn rewrite(value: &str, mounts: &[(String, PathBuf)], node_ip: IpAddr) -> String {
    if let Some(rest) = value.strip_prefix(WILDCARD) {
        return format!("{node_ip}:{rest}");
    }
    for (mount, dir) in mounts {
        let mount = mount.trim_end_matches('/');
        if value == mount {
            return dir.display().to_string();
        }
        if let Some(rest) = value.strip_prefix(mount).and_then(|r| r.strip_prefix('/')) {
            return dir.join(rest).display().to_string();
        }
    }
    value.to_owned()
}

/// The launch of `pod`'s first container with volumes under `root`; `secrets` holds every
/// Secret the pod mounts, by name.
pub fn container_launch(
    pod: &Pod,
    secrets: &HashMap<String, Secret>,
    node_ip: IpAddr,
    root: &Path,
) -> Result<Launch, KubeletError> {
    let pod_name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| KubeletError::NoContainer(pod_name.clone()))?;
    let container: &Container = spec
        .containers
        .first()
        .ok_or_else(|| KubeletError::NoContainer(pod_name.clone()))?;
    let unsupported = |what: String| KubeletError::Unsupported {
        pod: pod_name.clone(),
        what,
    };
    if container.command.is_some() {
        return Err(unsupported(
            "a container command (the image's entrypoint is camera-pod)".into(),
        ));
    }
    let volumes: HashMap<&str, &Volume> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let mut launch = Launch {
        args: Vec::new(),
        env: Vec::new(),
        dirs: Vec::new(),
        files: Vec::new(),
        readiness_url: None,
    };
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume =
            volumes
                .get(mount.name.as_str())
                .ok_or_else(|| KubeletError::MissingVolume {
                    pod: pod_name.clone(),
                    volume: mount.name.clone(),
                    mount: mount.mount_path.clone(),
                })?;
        let dir = root.join(&volume.name);
        launch.dirs.push(dir.clone());
        if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            let data = secrets
                .get(&name)
                .and_then(|s| s.data.clone())
                .unwrap_or_default();
            let default_mode = source.default_mode.unwrap_or(0o644) as u32;
            let items: Vec<(String, String, u32)> = match &source.items {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        (
                            i.key.clone(),
                            i.path.clone(),
                            i.mode.map_or(default_mode, |m| m as u32),
                        )
                    })
                    .collect(),
                None => data
                    .keys()
                    .map(|k| (k.clone(), k.clone(), default_mode))
                    .collect(),
            };
            for (key, path, mode) in items {
                let value = data
                    .get(&key)
                    .ok_or_else(|| KubeletError::MissingSecretKey {
                        pod: pod_name.clone(),
                        secret: name.clone(),
                        key: key.clone(),
                    })?;
                // The test's user owns the files, so they must stay readable by it.
                launch
                    .files
                    .push((dir.join(path), value.0.clone(), mode | 0o400));
            }
        } else if let Some(source) = &volume.downward_api {
            for item in source.items.iter().flatten() {
                let field = item
                    .field_ref
                    .as_ref()
                    .ok_or_else(|| unsupported(format!("downward API item {}", item.path)))?;
                let value = field_value(pod, &field.field_path, node_ip)
                    .ok_or_else(|| unsupported(format!("field {}", field.field_path)))?;
                launch
                    .files
                    .push((dir.join(&item.path), value.into_bytes(), 0o444));
            }
        } else if volume.empty_dir.is_none() {
            return Err(unsupported(format!("volume {} of its kind", volume.name)));
        }
        mounts.push((mount.mount_path.clone(), dir));
    }
    // Longest mount path first, so nested mounts win.
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) => {
                let field = from
                    .field_ref
                    .as_ref()
                    .ok_or_else(|| unsupported(format!("env {} source", var.name)))?;
                field_value(pod, &field.field_path, node_ip)
                    .ok_or_else(|| unsupported(format!("field {}", field.field_path)))?
            }
            (None, None) => String::new(),
        };
        launch
            .env
            .push((var.name.clone(), rewrite(&value, &mounts, node_ip)));
    }
    launch.args = container
        .args
        .iter()
        .flatten()
        .map(|a| rewrite(a, &mounts, node_ip))
        .collect();
    if let Some(get) = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
    {
        let port = match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port) => {
                port.to_string()
            }
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port.to_string())
                .ok_or_else(|| unsupported(format!("probe port {name}")))?,
        };
        let scheme = get.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
        let path = get.path.as_deref().unwrap_or("/");
        launch.readiness_url = Some(format!("{scheme}://{node_ip}:{port}{path}"));
    }
    Ok(launch)
}

impl PodRun {
    /// Records that the container ended (or could not start) and when it starts again.
    fn exited(&mut self, status: String) {
        self.last_exit = Some((status, self.started_at, Timestamp::now()));
        self.restarts += 1;
        self.ready = false;
        self.quick_exits = if self.started.elapsed() >= BACKOFF_RESET {
            1
        } else {
            self.quick_exits + 1
        };
        let delay = restart_delay(self.quick_exits);
        if !delay.is_zero() {
            eprintln!(
                "[test-kubelet] camera-pod {}/{}: back-off {delay:?} before restart {}",
                self.namespace, self.name, self.restarts
            );
        }
        self.restart_at = Some(Instant::now() + delay);
    }
}

/// One pod the fixture runs.
struct PodRun {
    namespace: String,
    name: String,
    uid: String,
    container: String,
    image: String,
    dir: PathBuf,
    launch: Launch,
    process: Option<ManagedProcess>,
    started_at: Timestamp,
    /// When the current process started, for the back-off reset.
    started: Instant,
    pod_started_at: Timestamp,
    restarts: i32,
    /// Exits in a row that came soon after their start.
    quick_exits: u32,
    /// When a crashed container is started again.
    restart_at: Option<Instant>,
    last_exit: Option<(String, Timestamp, Timestamp)>,
    ready: bool,
    /// The state last written to the API server, to rewrite it after a failed patch.
    reported: Option<(bool, i32, bool)>,
}

struct Worker {
    node: String,
    address: IpAddr,
    client: Client,
    config: KubeletConfig,
    pods: HashMap<String, PodRun>,
    running: Shared,
    probe: reqwest::Client,
}

impl Worker {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let api = Api::<Pod>::all(self.client.clone());
        let selector = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let mut events = watcher(api, selector).default_backoff().boxed();
        let mut tick = tokio::time::interval(TICK);
        let mut listed: Option<HashSet<String>> = None;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                event = events.next() => match event {
                    Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                        if let Some(seen) = listed.as_mut() {
                            seen.insert(pod.uid().unwrap_or_default());
                        }
                        self.on_pod(pod).await;
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => self.forget(&pod.uid().unwrap_or_default()).await,
                    Some(Ok(watcher::Event::Init)) => listed = Some(HashSet::new()),
                    Some(Ok(watcher::Event::InitDone)) => {
                        let seen = listed.take().unwrap_or_default();
                        let gone: Vec<String> = self.pods.keys().filter(|uid| !seen.contains(*uid)).cloned().collect();
                        for uid in gone {
                            self.forget(&uid).await;
                        }
                    }
                    Some(Err(error)) => tracing::debug!(%error, node = %self.node, "test kubelet watch error"),
                    None => break,
                },
                _ = tick.tick() => self.check().await,
            }
        }
        let uids: Vec<String> = self.pods.keys().cloned().collect();
        for uid in uids {
            self.forget(&uid).await;
        }
    }

    async fn on_pod(&mut self, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        if pod.metadata.deletion_timestamp.is_some() {
            self.forget(&uid).await;
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            if let Err(error) = pods.delete(&name, &params).await {
                tracing::debug!(%error, %namespace, %name, "test kubelet: removing the pod object");
            }
            return;
        }
        if self.pods.contains_key(&uid) {
            return;
        }
        match self.prepare(&pod).await {
            Ok(run) => {
                self.pods.insert(uid.clone(), run);
                self.start_container(&uid);
                self.report(&uid).await;
            }
            Err(error) => {
                tracing::warn!(%error, %namespace, %name, "test kubelet cannot run the pod");
                let patch = json!({"status": {"phase": "Pending", "conditions": [{
                    "type": "Ready", "status": "False", "reason": "TestKubeletError", "message": error.to_string()}]}});
                let _ = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
            }
        }
    }

    async fn prepare(&self, pod: &Pod) -> Result<PodRun, KubeletError> {
        let namespace = pod.namespace().unwrap_or_default();
        let uid = pod.uid().unwrap_or_default();
        let secrets_api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let mut secrets = HashMap::new();
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                secrets.insert(name.clone(), secrets_api.get(&name).await?);
            }
        }
        let dir = self
            .config
            .dir
            .join(format!("{namespace}-{}-{uid}", pod.name_any()));
        let launch = container_launch(pod, &secrets, self.address, &dir.join("volumes"))?;
        for d in &launch.dirs {
            std::fs::create_dir_all(d).map_err(|source| KubeletError::Io {
                what: format!("creating {}", d.display()),
                source,
            })?;
        }
        for (path, contents, mode) in &launch.files {
            write_file(path, contents, *mode)?;
        }
        let container = pod.spec.as_ref().and_then(|s| s.containers.first());
        let now = Timestamp::now();
        Ok(PodRun {
            namespace,
            name: pod.name_any(),
            uid,
            container: container.map(|c| c.name.clone()).unwrap_or_default(),
            image: container.and_then(|c| c.image.clone()).unwrap_or_default(),
            dir,
            launch,
            process: None,
            started_at: now,
            started: Instant::now(),
            pod_started_at: now,
            restarts: 0,
            quick_exits: 0,
            restart_at: None,
            last_exit: None,
            ready: false,
            reported: None,
        })
    }

    fn start_container(&mut self, uid: &str) {
        let Some(run) = self.pods.get_mut(uid) else {
            return;
        };
        let mut command = Command::new(&self.config.camera_pod);
        command.args(&run.launch.args).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.env("HOME", &run.dir);
        command.envs(self.config.image_env.iter().map(|(k, v)| (k, v)));
        command.envs(run.launch.env.iter().map(|(k, v)| (k, v)));
        let log = run.dir.join(format!("camera-pod-{}.log", run.restarts));
        run.started_at = Timestamp::now();
        run.started = Instant::now();
        run.restart_at = None;
        run.ready = false;
        match ManagedProcess::spawn(
            &format!("camera-pod {}/{}", run.namespace, run.name),
            command,
            &log,
        ) {
            Ok(process) => {
                tracing::info!(namespace = %run.namespace, name = %run.name, pid = process.pid(), "test kubelet started camera-pod");
                lock(&self.running).insert(
                    (run.namespace.clone(), run.name.clone()),
                    RunningContainer {
                        pid: process.pid(),
                        restarts: run.restarts,
                        ready: false,
                        log,
                        probe: None,
                    },
                );
                run.process = Some(process);
            }
            Err(error) => {
                eprintln!(
                    "[test-kubelet] cannot start camera-pod {}/{}: {error}",
                    run.namespace, run.name
                );
                run.exited(format!("start failed: {error}"));
            }
        }
    }

    /// Stops the pod's process (if any) and forgets it.
    async fn forget(&mut self, uid: &str) {
        let Some(mut run) = self.pods.remove(uid) else {
            return;
        };
        lock(&self.running).remove(&(run.namespace.clone(), run.name.clone()));
        if let Some(process) = run.process.take() {
            let _ = tokio::task::spawn_blocking(move || process.stop()).await;
        }
        let _ = std::fs::remove_dir_all(&run.dir);
    }

    async fn check(&mut self) {
        let uids: Vec<String> = self.pods.keys().cloned().collect();
        for uid in uids {
            let Some(run) = self.pods.get_mut(&uid) else {
                continue;
            };
            if let Some(status) = run.process.as_ref().and_then(ManagedProcess::exited) {
                let tail = run
                    .process
                    .take()
                    .map(|p| {
                        let tail = p.log_tail(20);
                        p.stop();
                        tail
                    })
                    .unwrap_or_default();
                eprintln!(
                    "[test-kubelet] camera-pod {}/{} exited ({status}). Last log lines:\n{tail}",
                    run.namespace, run.name
                );
                lock(&self.running).remove(&(run.namespace.clone(), run.name.clone()));
                run.exited(status);
            }
            if run.process.is_none() {
                if run.restart_at.is_some_and(|at| Instant::now() >= at) {
                    self.start_container(&uid);
                }
            } else if !run.ready
                && let Some(url) = run.launch.readiness_url.clone()
            {
                let probe = match self.probe.get(&url).send().await {
                    Ok(response) => {
                        let status = response.status();
                        let body = response.text().await.unwrap_or_default();
                        (status.is_success(), format!("{status}: {}", body.trim()))
                    }
                    Err(error) => (false, error.to_string()),
                };
                if let Some(run) = self.pods.get_mut(&uid) {
                    run.ready = probe.0;
                    if let Some(c) =
                        lock(&self.running).get_mut(&(run.namespace.clone(), run.name.clone()))
                    {
                        c.ready = probe.0;
                        c.probe = (!probe.0).then_some(probe.1);
                    }
                }
            }
            self.report(&uid).await;
        }
    }

    /// Writes the pod's status when it differs from what was last written.
    async fn report(&mut self, uid: &str) {
        let Some(run) = self.pods.get_mut(uid) else {
            return;
        };
        let state = (run.ready, run.restarts, run.process.is_some());
        if run.reported == Some(state) {
            return;
        }
        let status = pod_status(run, self.address);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &run.namespace);
        let params = PatchParams::default();
        match pods
            .patch_status(&run.name, &params, &Patch::Merge(json!({"status": status})))
            .await
        {
            Ok(_) => run.reported = Some(state),
            Err(error) => {
                tracing::debug!(%error, namespace = %run.namespace, name = %run.name, "test kubelet: status not written")
            }
        }
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KubeletError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| KubeletError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)
}

/// The pod status a kubelet would write for `run`.
fn pod_status(run: &PodRun, node_ip: IpAddr) -> serde_json::Value {
    let ready = if run.ready { "True" } else { "False" };
    let started = run.pod_started_at.to_string();
    let condition = |kind: &str, status: &str| {
        let mut c = json!({"type": kind, "status": status, "lastTransitionTime": Timestamp::now().to_string()});
        if status == "False" {
            c["reason"] = "ContainersNotReady".into();
            c["message"] = format!("containers with unready status: [{}]", run.container).into();
        }
        c
    };
    let mut container = json!({
        "name": run.container,
        "image": run.image,
        "imageID": "",
        "containerID": format!("p2pcamera-test://{}-{}", run.uid, run.restarts),
        "ready": run.ready,
        "started": true,
        "restartCount": run.restarts,
        "state": if run.process.is_some() {
            json!({"running": {"startedAt": run.started_at.to_string()}})
        } else {
            json!({"waiting": {"reason": "CrashLoopBackOff",
                "message": format!("back-off restarting failed container {}", run.container)}})
        },
    });
    if let Some((status, from, to)) = &run.last_exit {
        container["lastState"] = json!({"terminated": {
            "exitCode": exit_code(status), "reason": "Error", "message": status,
            "startedAt": from.to_string(), "finishedAt": to.to_string()}});
    }
    json!({
        "phase": "Running",
        "hostIP": node_ip.to_string(),
        "hostIPs": [{"ip": node_ip.to_string()}],
        "podIP": node_ip.to_string(),
        "podIPs": [{"ip": node_ip.to_string()}],
        "startTime": started,
        "conditions": [
            condition("PodScheduled", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ],
        "containerStatuses": [container],
    })
}

/// The exit code in a status description such as `exit status: 1` or `signal: 9 (SIGKILL)`
/// (128 + signal, as container runtimes report it).
fn exit_code(status: &str) -> i32 {
    let number = |prefix: &str| {
        status
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<i32>().ok())
    };
    number("exit status: ")
        .or_else(|| number("signal: ").map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn camera_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "cam-p2pcamera", "namespace": "ns", "uid": "u1",
                "annotations": {"p2pcamera.io/manifest": "{\"input\":\"x\"}"}},
            "spec": {
                "nodeName": "gpu-a",
                "containers": [{
                    "name": "camera-pod", "image": "camera-pod:test",
                    "args": ["--log-format", "json"],
                    "env": [
                        {"name": "P2PCAMERA_LISTEN", "value": "0.0.0.0:40001"},
                        {"name": "P2PCAMERA_PUBLIC_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                        {"name": "P2PCAMERA_TOKEN_FILE", "value": "/var/run/p2pcamera/token"},
                        {"name": "P2PCAMERA_MANIFEST", "value": "/var/run/p2pcamera-model/manifest.json"},
                        {"name": "XDG_CACHE_HOME", "value": "/var/cache/p2pcamera"},
                        {"name": "P2PCAMERA_FILTER", "value": "selfie-replace"}
                    ],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 40001, "scheme": "HTTPS"}},
                    "volumeMounts": [
                        {"name": "p2pcamera", "mountPath": "/var/run/p2pcamera", "readOnly": true},
                        {"name": "cache", "mountPath": "/var/cache/p2pcamera"},
                        {"name": "manifest", "mountPath": "/var/run/p2pcamera-model"}
                    ]
                }],
                "volumes": [
                    {"name": "p2pcamera", "secret": {"secretName": "cam-p2pcamera", "defaultMode": 288,
                        "items": [{"key": "token", "path": "token"}]}},
                    {"name": "cache", "emptyDir": {}},
                    {"name": "manifest", "downwardAPI": {"items": [{"path": "manifest.json",
                        "fieldRef": {"fieldPath": "metadata.annotations['p2pcamera.io/manifest']"}}]}}
                ]
            }
        }))
        .unwrap()
    }

    fn secrets() -> HashMap<String, Secret> {
        let secret = Secret {
            data: Some([("token".to_owned(), ByteString(b"s3cret".to_vec()))].into()),
            ..Secret::default()
        };
        HashMap::from([("cam-p2pcamera".to_owned(), secret)])
    }

    #[test]
    fn launch_follows_the_pod_spec_with_mounts_and_addresses_mapped() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let root = Path::new("/tmp/kubelet-root");
        let launch = container_launch(&camera_pod(), &secrets(), ip, root).unwrap();
        let env: BTreeMap<_, _> = launch.env.iter().cloned().collect();
        assert_eq!(env["P2PCAMERA_LISTEN"], "127.0.0.1:40001");
        assert_eq!(env["P2PCAMERA_PUBLIC_IP"], "127.0.0.1");
        assert_eq!(
            env["P2PCAMERA_TOKEN_FILE"],
            "/tmp/kubelet-root/p2pcamera/token"
        );
        assert_eq!(
            env["P2PCAMERA_MANIFEST"],
            "/tmp/kubelet-root/manifest/manifest.json"
        );
        assert_eq!(env["XDG_CACHE_HOME"], "/tmp/kubelet-root/cache");
        assert_eq!(env["P2PCAMERA_FILTER"], "selfie-replace");
        assert_eq!(launch.args, ["--log-format", "json"]);
        assert_eq!(
            launch.readiness_url.as_deref(),
            Some("https://127.0.0.1:40001/readyz")
        );
        let files: Vec<_> = launch
            .files
            .iter()
            .map(|(p, c, m)| (p.display().to_string(), c.clone(), *m))
            .collect();
        assert!(
            files.contains(&(
                "/tmp/kubelet-root/p2pcamera/token".into(),
                b"s3cret".to_vec(),
                0o440 | 0o400
            )),
            "{files:?}"
        );
        assert!(files.contains(&(
            "/tmp/kubelet-root/manifest/manifest.json".into(),
            b"{\"input\":\"x\"}".to_vec(),
            0o444
        )));
    }

    #[test]
    fn missing_secret_keys_and_unknown_sources_are_errors_not_guesses() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let err =
            container_launch(&camera_pod(), &HashMap::new(), ip, Path::new("/tmp/x")).unwrap_err();
        assert!(
            matches!(err, KubeletError::MissingSecretKey { .. }),
            "{err}"
        );
        let mut pod = camera_pod();
        pod.spec.as_mut().unwrap().containers[0]
            .env
            .as_mut()
            .unwrap()[1] = serde_json::from_value(
            json!({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.nope"}}}),
        )
        .unwrap();
        let err = container_launch(&pod, &secrets(), ip, Path::new("/tmp/x")).unwrap_err();
        assert!(err.to_string().contains("status.nope"), "{err}");
    }

    #[test]
    fn rewrites_only_whole_path_components() {
        let mounts = vec![("/var/run/p2pcamera".to_owned(), PathBuf::from("/t/a"))];
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(
            rewrite("/var/run/p2pcamera-model/x", &mounts, ip),
            "/var/run/p2pcamera-model/x"
        );
        assert_eq!(
            rewrite("/var/run/p2pcamera/tls.crt", &mounts, ip),
            "/t/a/tls.crt"
        );
        assert_eq!(rewrite("0.0.0.0:8443", &mounts, ip), "127.0.0.9:8443");
        assert_eq!(rewrite("10.0.0.1:8443", &mounts, ip), "10.0.0.1:8443");
    }

    #[test]
    fn restarts_at_once_then_back_off_doubles_to_a_cap() {
        let delays: Vec<u64> = (0..8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 0, 1, 2, 4, 8, 10, 10]);
        assert_eq!(restart_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn exit_codes_like_a_container_runtime() {
        assert_eq!(exit_code("exit status: 3"), 3);
        assert_eq!(exit_code("signal: 9 (SIGKILL)"), 137);
        assert_eq!(exit_code("weird"), 1);
    }

    #[test]
    fn node_is_not_kwok_managed() {
        let node = kubelet_node(&GpuNode::new("gpu-x", 1)).unwrap();
        assert!(
            !node
                .metadata
                .annotations
                .unwrap()
                .contains_key(KWOK_NODE_ANNOTATION.0)
        );
    }
}
