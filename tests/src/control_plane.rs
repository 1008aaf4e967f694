//! A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-scheduler,
//! kube-controller-manager and kwok, on random free ports, with certificates made here.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

use crate::binaries::ControlPlaneBinaries;
use crate::nodes::GpuNode;
use crate::pki::{CertificateAuthority, CertifiedKey, ServiceAccountKey};
use crate::ports::{free_port, retry_start};
use crate::process::{ManagedProcess, remove_at_exit};
use crate::wait::{eventually, eventually_while_running};
use crate::{Error, kubeconfig};

/// The service CIDR; the API server's own Service takes its first address.
const SERVICE_CIDR: &str = "10.96.0.0/16";
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(180);
const CONTROLLERS_READY_TIMEOUT: Duration = Duration::from_secs(120);
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Controllers that manage real machines or cloud resources. The node lifecycle controller is
/// off too: it would taint kwok nodes whose heartbeat is late on a busy machine. Without it nobody
/// would lift the `node.kubernetes.io/not-ready` taint that the TaintNodesByCondition admission
/// plugin puts on new nodes, so that plugin is off as well.
const DISABLED_CONTROLLERS: &[&str] = &[
    "node-ipam-controller",
    "node-lifecycle-controller",
    "cloud-node-lifecycle-controller",
    "node-route-controller",
    "service-lb-controller",
    "persistentvolume-attach-detach-controller",
];

/// Keeps the plane's directory (logs, certificates, etcd data) after the tests when set.
const KEEP_ENV: &str = "P2PCAMERA_KEEP_PLANE";

static SHARED: OnceCell<Result<ControlPlane, String>> = OnceCell::const_new();

/// How much the plane's scheduler and kwok may do at once. Each component's own defaults
/// ([`PlaneTuning::DEFAULTS`], what the tests run with) hold a plane that places thousands of
/// pods to about 25 a second: kube-scheduler's client sends at most 50 requests a second (burst
/// 100) and spends two on each pod (its binding and its `Scheduled` Event), and kwok plays the
/// stages of 4 pods at a time. A cluster that runs 10,000 pods raises these, as
/// [`PlaneTuning::TEN_THOUSAND_PODS`] does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlaneTuning {
    /// kube-scheduler's client rate limit (`clientConnection` of its configuration file);
    /// `None`: its default.
    pub scheduler_client: Option<ClientRateLimit>,
    /// How many pods kwok plays stages for at once (`podPlayStageParallelism`); `None`: its
    /// default, 4.
    pub kwok_pod_workers: Option<u32>,
}

/// A Kubernetes client's rate limit: a token bucket of `burst` requests refilled at `qps` a
/// second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientRateLimit {
    pub qps: f32,
    pub burst: u32,
}

impl PlaneTuning {
    /// Every component with its own defaults.
    pub const DEFAULTS: Self = Self {
        scheduler_client: None,
        kwok_pod_workers: None,
    };

    /// A control plane tuned for 10,000 pods: the scheduler's client may send 500 requests a
    /// second (burst 1,000) and kwok plays 16 pods' stages at once, so the API server, not a
    /// client's limit, bounds how fast pods are placed and turn Ready.
    pub const TEN_THOUSAND_PODS: Self = Self {
        scheduler_client: Some(ClientRateLimit {
            qps: 500.0,
            burst: 1000,
        }),
        kwok_pod_workers: Some(16),
    };
}

impl std::fmt::Display for PlaneTuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.scheduler_client {
            Some(limit) => write!(
                f,
                "kube-scheduler client {} requests/s (burst {})",
                limit.qps, limit.burst
            )?,
            None => write!(f, "kube-scheduler client at its defaults")?,
        }
        match self.kwok_pod_workers {
            Some(workers) => write!(f, ", kwok {workers} pods at a time"),
            None => write!(f, ", kwok at its defaults"),
        }
    }
}

/// A running control plane. Dropping it stops every process it started.
pub struct ControlPlane {
    dir: PathBuf,
    server: String,
    kubeconfig: PathBuf,
    config: Config,
    kubectl: PathBuf,
    /// kube-apiserver's program and arguments, to start it again the same way.
    apiserver: Launch,
    /// In start order; stopped in reverse.
    processes: Mutex<Vec<ManagedProcess>>,
}

/// How a plane process was started.
#[derive(Clone, Debug)]
struct Launch {
    program: OsString,
    args: Vec<OsString>,
}

impl Launch {
    fn of(command: &Command) -> Self {
        Self {
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }
}

impl ControlPlane {
    /// The plane shared by every test in this test binary, started by the first caller. A failed
    /// start is remembered, so the other tests fail fast with the same message.
    pub async fn shared() -> Result<&'static ControlPlane, Error> {
        let result = SHARED
            .get_or_init(|| async { Self::start().await.map_err(|e| e.to_string()) })
            .await;
        result
            .as_ref()
            .map_err(|e| Error::SharedStartFailed(e.clone()))
    }

    /// Starts a new plane with every component at its defaults; progress goes to stderr. A start
    /// in which a component exits (a port taken, most likely) is repeated on other ports.
    pub async fn start() -> Result<Self, Error> {
        Self::start_tuned(PlaneTuning::DEFAULTS).await
    }

    /// Starts a new plane as [`ControlPlane::start`] does, its scheduler and kwok set up as
    /// `tuning` says.
    pub async fn start_tuned(tuning: PlaneTuning) -> Result<Self, Error> {
        retry_start("control-plane", || Self::start_once(tuning)).await
    }

    async fn start_once(tuning: PlaneTuning) -> Result<Self, Error> {
        let started = Instant::now();
        let bins = ControlPlaneBinaries::locate()?;
        let dir = tempfile::Builder::new()
            .prefix("p2pcamera-plane-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "creating the plane directory".into(),
                source,
            })?
            .keep();
        if std::env::var_os(KEEP_ENV).is_none() {
            remove_at_exit(&dir);
        }
        progress(&format!(
            "starting in {} (set {KEEP_ENV}=1 to keep it); {tuning}",
            dir.display()
        ));

        let mut plane = PlaneBuilder {
            dir: dir.clone(),
            processes: Vec::new(),
        };
        match plane.run(&bins, tuning, started).await {
            Ok((server, kubeconfig, config, apiserver)) => Ok(Self {
                dir,
                server,
                kubeconfig,
                config,
                kubectl: bins.kubectl,
                apiserver,
                processes: Mutex::new(std::mem::take(&mut plane.processes)),
            }),
            Err(e) => {
                progress(&format!(
                    "start failed after {:.1}s: {e}",
                    started.elapsed().as_secs_f64()
                ));
                Err(e)
            }
        }
    }

    /// A new client for the admin user (group system:masters). Clients are per call because a
    /// client belongs to the async runtime it was made in, and each test has its own.
    pub fn client(&self) -> Result<Client, Error> {
        Ok(Client::try_from(self.config.clone())?)
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The plane's directory: component logs, certificates, etcd data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs the pinned kubectl against this plane as admin; returns stdout.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String, Error> {
        self.kubectl_with_input(args, "").await
    }

    /// Runs kubectl with `input` on stdin (for `apply -f -`); returns stdout.
    pub async fn kubectl_with_input(&self, args: &[&str], input: &str) -> Result<String, Error> {
        let mut child = tokio::process::Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                name: "kubectl".into(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(|source| Error::Io {
                    what: "writing kubectl's stdin".into(),
                    source,
                })?;
        }
        let out = child.wait_with_output().await.map_err(|source| Error::Io {
            what: "waiting for kubectl".into(),
            source,
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Kubectl {
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Applies a manifest file (server-side) and waits until every CustomResourceDefinition in it
    /// is Established, so its resources can be created right away.
    pub async fn apply_crds(&self, manifest: &Path) -> Result<(), Error> {
        let file = manifest.to_string_lossy();
        self.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=p2pcamera-tests",
            "-f",
            &file,
        ])
        .await?;
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &file,
        ])
        .await?;
        Ok(())
    }

    /// Creates a namespace named `<prefix>-<random>` and waits until pods can be created in it
    /// (its `default` ServiceAccount exists). Returns the name.
    pub async fn namespace(&self, prefix: &str) -> Result<String, Error> {
        let client = self.client()?;
        let prefix: String = prefix.chars().take(50).collect();
        let name = format!(
            "{prefix}-{}",
            Alphanumeric
                .sample_string(&mut rand::rng(), 6)
                .to_lowercase()
        );
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        let accounts = Api::<ServiceAccount>::namespaced(client, &name);
        eventually(
            &format!("ServiceAccount default in namespace {name}"),
            CONTROLLERS_READY_TIMEOUT,
            || default_service_account(&accounts),
        )
        .await?;
        Ok(name)
    }

    /// Adds a kwok-managed node with `gpus` GPUs and the given ExternalIP, and waits until it is
    /// Ready.
    pub async fn add_gpu_node(
        &self,
        name: &str,
        gpus: u32,
        external_ip: IpAddr,
    ) -> Result<Node, Error> {
        self.add_node(&GpuNode::new(name, gpus).external_ip(external_ip))
            .await
    }

    /// Adds the described kwok-managed node and waits until it is Ready.
    pub async fn add_node(&self, node: &GpuNode) -> Result<Node, Error> {
        let nodes = Api::<Node>::all(self.client()?);
        nodes
            .create(&PostParams::default(), &node.to_node()?)
            .await?;
        eventually(
            &format!("node {} Ready", node.name),
            NODE_READY_TIMEOUT,
            || async {
                let node = nodes.get(&node.name).await.map_err(|e| e.to_string())?;
                let ready = node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .map(|c| c.status.clone());
                match ready.as_deref() {
                    Some("True") => Ok(node),
                    other => Err(format!("Ready condition {other:?}")),
                }
            },
        )
        .await
    }

    /// Deletes a node and waits until it is gone.
    pub async fn delete_node(&self, name: &str) -> Result<(), Error> {
        let nodes = Api::<Node>::all(self.client()?);
        nodes.delete(name, &DeleteParams::default()).await?;
        eventually(
            &format!("node {name} deleted"),
            NODE_READY_TIMEOUT,
            || async {
                match nodes.get_opt(name).await {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => Err("still exists".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
    }

    /// A component's log file (`etcd`, `kube-apiserver`, `kube-scheduler`,
    /// `kube-controller-manager`, `kwok`).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    /// Restarts kube-apiserver as an operator restarting a control plane would: stops it by PID
    /// (SIGTERM, SIGKILL after the grace period), starts it again with the same flags and port
    /// (etcd keeps every object), and waits until `/readyz` answers `ok`. Meanwhile every client
    /// sees its connections end and new ones refused. Returns how long the API was unavailable.
    pub async fn restart_apiserver(&self) -> Result<Duration, Error> {
        let stopped_at = Instant::now();
        let (index, old) = {
            let mut processes = lock(&self.processes);
            let index = processes
                .iter()
                .position(|p| p.name() == "kube-apiserver")
                .ok_or_else(|| Error::Exited {
                    name: "kube-apiserver".into(),
                    status: "not running".into(),
                    log: String::new(),
                })?;
            (index, processes.remove(index))
        };
        let pid = old.pid();
        tokio::task::spawn_blocking(move || old.stop())
            .await
            .map_err(|e| Error::Io {
                what: "stopping kube-apiserver".into(),
                source: std::io::Error::other(e),
            })?;
        progress(&format!("kube-apiserver (pid {pid}) stopped"));
        let process = ManagedProcess::spawn(
            "kube-apiserver",
            self.apiserver.command(),
            &self.log_path("kube-apiserver"),
        )?;
        progress(&format!(
            "kube-apiserver started again (pid {})",
            process.pid()
        ));
        {
            let mut processes = lock(&self.processes);
            let at = index.min(processes.len());
            processes.insert(at, process);
        }
        let client = self.client()?;
        eventually(
            "kube-apiserver /readyz after its restart",
            APISERVER_READY_TIMEOUT,
            || {
                let exit = lock(&self.processes)
                    .iter()
                    .find(|p| p.name() == "kube-apiserver")
                    .and_then(|p| p.exited().map(|status| (status, p.log_tail(40))));
                let client = client.clone();
                async move {
                    if let Some((status, log)) = exit {
                        return Ok(Err(Error::Exited {
                            name: "kube-apiserver".into(),
                            status,
                            log,
                        }));
                    }
                    apiserver_ready(&client).await.map(Ok)
                }
            },
        )
        .await??;
        let unavailable = stopped_at.elapsed();
        progress(&format!(
            "kube-apiserver ready again after {:.1}s",
            unavailable.as_secs_f64()
        ));
        Ok(unavailable)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `Ok` once kube-apiserver's `/readyz` answers `ok`.
async fn apiserver_ready(client: &Client) -> Result<(), String> {
    let request = hyper::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(body),
        Err(e) => Err(e.to_string()),
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for p in lock(&self.processes).iter().rev() {
            p.stop();
        }
        if std::env::var_os(KEEP_ENV).is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The processes of a plane being started; on failure they are dropped (stopped) with it.
struct PlaneBuilder {
    dir: PathBuf,
    processes: Vec<ManagedProcess>,
}

impl PlaneBuilder {
    async fn run(
        &mut self,
        bins: &ControlPlaneBinaries,
        tuning: PlaneTuning,
        started: Instant,
    ) -> Result<(String, PathBuf, Config, Launch), Error> {
        let ca = CertificateAuthority::new("p2pcamera-test-ca")?;
        let serving = ca.server(
            "kube-apiserver",
            &[
                "127.0.0.1",
                "localhost",
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        let sa_key = ServiceAccountKey::generate()?;
        let ca_file = self.write("ca.crt", ca.cert_pem())?;
        let serving_cert = self.write("apiserver.crt", &serving.cert_pem)?;
        let serving_key = self.write("apiserver.key", &serving.key_pem)?;
        let sa_private = self.write("sa.key", &sa_key.private_pem)?;
        let sa_public = self.write("sa.pub", &sa_key.public_pem)?;

        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let apiserver_port = free_port()?;
        let server = format!("https://127.0.0.1:{apiserver_port}");

        let mut etcd = Command::new(&bins.etcd);
        etcd.arg("--name=default")
            .arg(format!("--data-dir={}", self.dir.join("etcd").display()))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"
            ))
            .arg(format!(
                "--initial-cluster=default=http://127.0.0.1:{etcd_peer}"
            ))
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        self.spawn("etcd", etcd)?;

        let mut apiserver = Command::new(&bins.kube_apiserver);
        apiserver
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={apiserver_port}"))
            .arg(format!(
                "--cert-dir={}",
                self.dir.join("apiserver-certs").display()
            ))
            .arg(format!("--tls-cert-file={}", serving_cert.display()))
            .arg(format!("--tls-private-key-file={}", serving_key.display()))
            .arg(format!("--client-ca-file={}", ca_file.display()))
            .arg("--authorization-mode=Node,RBAC")
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                sa_public.display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                sa_private.display()
            ))
            .arg("--disable-admission-plugins=TaintNodesByCondition")
            .arg("--allow-privileged=true")
            .arg("--profiling=false");
        let at = Instant::now();
        let apiserver_launch = Launch::of(&apiserver);
        self.spawn("kube-apiserver", apiserver)?;

        let admin = self.write_kubeconfig(
            "admin",
            &server,
            &ca,
            &ca.client("admin", &["system:masters"])?,
        )?;
        let config = load_config(&admin).await?;
        let client = Client::try_from(config.clone())?;
        self.wait_for("kube-apiserver /readyz", APISERVER_READY_TIMEOUT, || {
            apiserver_ready(&client)
        })
        .await?;
        progress(&format!(
            "kube-apiserver ready at {server} in {:.1}s",
            at.elapsed().as_secs_f64()
        ));

        let scheduler_kubeconfig = self.write_kubeconfig(
            "kube-scheduler",
            &server,
            &ca,
            &ca.client("system:kube-scheduler", &[])?,
        )?;
        let mut scheduler = Command::new(&bins.kube_scheduler);
        match tuning.scheduler_client {
            // Its client's rate limit can be set only in a configuration file, which then
            // replaces the flags for what it holds.
            Some(limit) => {
                let config = scheduler_configuration(&scheduler_kubeconfig, limit);
                let path = self.write("kube-scheduler.json", &config.to_string())?;
                scheduler.arg(format!("--config={}", path.display()));
            }
            None => {
                scheduler
                    .arg(format!("--kubeconfig={}", scheduler_kubeconfig.display()))
                    .arg("--leader-elect=false");
            }
        }
        scheduler.arg("--secure-port=0");
        self.spawn("kube-scheduler", scheduler)?;

        let kcm_kubeconfig = self.write_kubeconfig(
            "kube-controller-manager",
            &server,
            &ca,
            &ca.client("system:kube-controller-manager", &[])?,
        )?;
        let controllers = std::iter::once("*".to_owned())
            .chain(DISABLED_CONTROLLERS.iter().map(|c| format!("-{c}")))
            .collect::<Vec<_>>()
            .join(",");
        let mut kcm = Command::new(&bins.kube_controller_manager);
        kcm.arg(format!("--kubeconfig={}", kcm_kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .arg("--use-service-account-credentials=true")
            .arg(format!(
                "--service-account-private-key-file={}",
                sa_private.display()
            ))
            .arg(format!("--root-ca-file={}", ca_file.display()))
            .arg(format!("--controllers={controllers}"));
        self.spawn("kube-controller-manager", kcm)?;

        let kwok_kubeconfig = self.write_kubeconfig(
            "kwok",
            &server,
            &ca,
            &ca.client("kwok", &["system:masters"])?,
        )?;
        let mut kwok = Command::new(&bins.kwok);
        kwok.arg(format!("--kubeconfig={}", kwok_kubeconfig.display()))
            .arg("--manage-all-nodes=false")
            .arg(format!(
                "--manage-nodes-with-annotation-selector={}={}",
                crate::nodes::KWOK_NODE_ANNOTATION.0,
                crate::nodes::KWOK_NODE_ANNOTATION.1
            ))
            .arg("--node-ip=127.0.0.1");
        for stage in stage_files(&bins.kwok_stages)? {
            kwok.arg(format!("--config={}", stage.display()));
        }
        if let Some(workers) = tuning.kwok_pod_workers {
            let config = kwok_configuration(workers);
            let path = self.write("kwok-configuration.json", &config.to_string())?;
            kwok.arg(format!("--config={}", path.display()));
        }
        // kwok reads ~/.kwok/kwok.yaml when no config is named; keep it away from the user's.
        kwok.env("HOME", &self.dir);
        self.spawn("kwok", kwok)?;

        // The controller manager is working once the service-account controller has populated
        // kube-system, and the token controller signs with the key the API server trusts.
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), "default");
        self.wait_for(
            "kube-controller-manager (ServiceAccount default/default)",
            CONTROLLERS_READY_TIMEOUT,
            || default_service_account(&accounts),
        )
        .await?;
        progress(&format!(
            "ready in {:.1}s (kubeconfig {})",
            started.elapsed().as_secs_f64(),
            admin.display()
        ));
        Ok((server, admin, config, apiserver_launch))
    }

    fn write(&self, name: &str, contents: &str) -> Result<PathBuf, Error> {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).map_err(|source| Error::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        Ok(path)
    }

    fn write_kubeconfig(
        &self,
        user: &str,
        server: &str,
        ca: &CertificateAuthority,
        credentials: &CertifiedKey,
    ) -> Result<PathBuf, Error> {
        let text = serde_json::to_string_pretty(&kubeconfig::render(
            server,
            ca.cert_pem(),
            user,
            credentials,
        ))?;
        self.write(&format!("{user}.kubeconfig"), &text)
    }

    fn spawn(&mut self, name: &str, command: Command) -> Result<(), Error> {
        let process = ManagedProcess::spawn(name, command, &self.dir.join(format!("{name}.log")))?;
        progress(&format!("{name} started (pid {})", process.pid()));
        self.processes.push(process);
        Ok(())
    }

    /// Polls like [`eventually`], failing at once with the log of any process that exited.
    async fn wait_for<F, Fut>(&self, what: &str, timeout: Duration, check: F) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let processes: Vec<&ManagedProcess> = self.processes.iter().collect();
        eventually_while_running(what, timeout, &processes, check).await
    }
}

async fn load_config(path: &Path) -> Result<Config, Error> {
    // kube's rustls needs a process-wide crypto provider; the workspace builds rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(path)?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

/// kwok's stage files (node and pod life cycles), sorted for a stable command line.
fn stage_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read = std::fs::read_dir(dir).map_err(|source| Error::Io {
        what: format!("reading {}", dir.display()),
        source,
    })?;
    let mut files: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// kube-scheduler's configuration file: its kubeconfig, no leader election (as the flags say
/// when there is no file), and the client rate limit.
fn scheduler_configuration(kubeconfig: &Path, limit: ClientRateLimit) -> serde_json::Value {
    json!({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {
            "kubeconfig": kubeconfig,
            "qps": limit.qps,
            "burst": limit.burst,
        },
        "leaderElection": {"leaderElect": false},
    })
}

/// kwok's configuration with `pod_workers` pods played at once. kwok fills in no defaults for a
/// configuration it reads, so every option it would otherwise default is written out, with the
/// value it defaults to (kwok v0.8).
fn kwok_configuration(pod_workers: u32) -> serde_json::Value {
    json!({
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {
            "cidr": "10.0.0.0/24",
            "manageAllNodes": false,
            "enableDebuggingHandlers": true,
            "enableContentionProfiling": false,
            "enableProfilingHandler": true,
            "podPlayStageParallelism": pod_workers,
            "nodePlayStageParallelism": 4,
            "nodeLeaseParallelism": 4,
            "podsOnNodeSyncParallelism": 1,
            "enablePodsOnNodeSyncListPager": true,
            "enablePodsOnNodeSyncStreamWatch": false,
        },
    })
}

fn progress(message: &str) {
    eprintln!("[control-plane] {message}");
}

/// Whether the namespace's `default` ServiceAccount exists yet (the controller manager makes it;
/// pods cannot be created before it does).
async fn default_service_account(accounts: &Api<ServiceAccount>) -> Result<(), String> {
    match accounts.get_opt("default").await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("not created yet".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubeconfig the components can load; nothing is asked of its server.
    fn unreachable_kubeconfig(dir: &Path) -> PathBuf {
        let path = dir.join("unreachable.kubeconfig");
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "none", "user": {}}],
            "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
            "current-context": "none",
        });
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    #[test]
    fn the_scheduler_reads_the_tuned_client_rate_limit_from_its_file() {
        let bins = ControlPlaneBinaries::locate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = unreachable_kubeconfig(dir.path());
        let limit = PlaneTuning::TEN_THOUSAND_PODS.scheduler_client.unwrap();
        let config = dir.path().join("kube-scheduler.json");
        std::fs::write(
            &config,
            scheduler_configuration(&kubeconfig, limit).to_string(),
        )
        .unwrap();
        let effective = dir.path().join("effective.yaml");
        let out = Command::new(&bins.kube_scheduler)
            .arg(format!("--config={}", config.display()))
            .arg("--secure-port=0")
            .arg(format!("--write-config-to={}", effective.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let effective = std::fs::read_to_string(&effective).unwrap();
        for line in [
            "  qps: 500\n",
            "  burst: 1000\n",
            &format!("  kubeconfig: {}\n", kubeconfig.display()),
            "  leaderElect: false\n",
        ] {
            assert!(effective.contains(line), "{line:?} not in {effective}");
        }
    }

    #[test]
    fn kwok_reads_the_tuned_workers_and_keeps_its_other_defaults() {
        let bins = ControlPlaneBinaries::locate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kwok.json");
        std::fs::write(&config, kwok_configuration(16).to_string()).unwrap();
        // Without stage files kwok stops right after loading its configuration, which it logs.
        let out = Command::new(&bins.kwok)
            .arg(format!(
                "--kubeconfig={}",
                unreachable_kubeconfig(dir.path()).display()
            ))
            .arg(format!("--config={}", config.display()))
            .arg("-v=DEBUG")
            .env("HOME", dir.path())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        let loaded: serde_json::Value = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["msg"] == "Load config")
            .unwrap_or_else(|| panic!("no \"Load config\" line in {log}"));
        let options = &loaded["content"][0]["Options"];
        assert_eq!(options["PodPlayStageParallelism"], 16, "{options}");
        // kwok's defaults (v0.8), which it does not fill in for a file it reads.
        assert_eq!(options["NodePlayStageParallelism"], 4, "{options}");
        assert_eq!(options["NodeLeaseParallelism"], 4, "{options}");
        assert_eq!(options["PodsOnNodeSyncParallelism"], 1, "{options}");
        assert_eq!(options["CIDR"], "10.0.0.0/24", "{options}");
        assert_eq!(options["EnablePodsOnNodeSyncListPager"], true, "{options}");
        assert_eq!(options["EnableDebuggingHandlers"], true, "{options}");
    }
}
