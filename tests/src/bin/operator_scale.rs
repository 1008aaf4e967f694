//! Operator scale benchmark: N CameraSessions across kwok GPU nodes on a fresh control plane.
//! Measures the time until every session is Ready, API server requests per session (from the
//! API server's own `apiserver_request_total`), and the operator's peak RSS and CPU time; with
//! `--failover`, how long a standby replica takes to lead and place a new session after the
//! leader stops, and that no session changed its port or pod meanwhile. While it waits it prints
//! progress, and the sessions not Ready by their `status.reason`; it stops with that breakdown
//! after `--timeout-seconds`. Prints a markdown report. Run through `tests/bin/bench-operator.sh`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use p2pcamera_api::objects::LABEL_SESSION;
use p2pcamera_tests::{ControlPlane, GpuNode, ManagedProcess, PlaneTuning, eventually};
use serde_json::json;

#[derive(Parser)]
#[command(about = "CameraSession scale benchmark against a real control plane")]
struct Args {
    /// The operator binary to measure.
    #[arg(long, env = "P2PCAMERA_BENCH_OPERATOR")]
    operator: PathBuf,
    /// The CRD manifests (a file or a folder).
    #[arg(long, env = "P2PCAMERA_BENCH_CRD", default_value = "crds")]
    crd: PathBuf,
    /// CameraSessions to create.
    #[arg(long, env = "P2PCAMERA_BENCH_SESSIONS", default_value_t = 500)]
    sessions: usize,
    /// kwok GPU nodes.
    #[arg(long, env = "P2PCAMERA_BENCH_NODES", default_value_t = 50)]
    nodes: usize,
    /// GPUs per node.
    #[arg(long, env = "P2PCAMERA_BENCH_GPUS_PER_NODE", default_value_t = 10)]
    gpus_per_node: u32,
    /// Concurrent create requests.
    #[arg(long, env = "P2PCAMERA_BENCH_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Give up after this many seconds without all sessions Ready.
    #[arg(long, env = "P2PCAMERA_BENCH_TIMEOUT_SECONDS", default_value_t = 600)]
    timeout_seconds: u64,
    /// The operator's port range (fewer ports than sessions: ports are shared across nodes).
    #[arg(
        long,
        env = "P2PCAMERA_BENCH_PORT_RANGE",
        default_value = "40000-40999"
    )]
    port_range: String,
    /// Also run a standby replica and measure a leader failover once all sessions are Ready.
    #[arg(long, env = "P2PCAMERA_BENCH_FAILOVER")]
    failover: bool,
    /// The control plane: `tuned` for 10,000 pods (kube-scheduler's client rate limit and kwok's
    /// pod workers raised, `PlaneTuning::TEN_THOUSAND_PODS`), or every component at its
    /// `defaults`, as the tests run it (which places about 25 pods a second).
    #[arg(
        long,
        env = "P2PCAMERA_BENCH_CONTROL_PLANE",
        value_enum,
        default_value_t = PlaneKind::Tuned
    )]
    control_plane: PlaneKind,
    /// The operator replicas' log filter (`RUST_LOG`); their logs are in the plane's directory.
    #[arg(long, env = "P2PCAMERA_BENCH_OPERATOR_LOG", default_value = "warn")]
    operator_log: String,
}

/// Which control plane the benchmark runs against.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PlaneKind {
    /// Tuned for 10,000 pods.
    Tuned,
    /// Every component at its defaults.
    Defaults,
}

impl PlaneKind {
    fn tuning(self) -> PlaneTuning {
        match self {
            Self::Tuned => PlaneTuning::TEN_THOUSAND_PODS,
            Self::Defaults => PlaneTuning::DEFAULTS,
        }
    }
}

/// One `operator run` process of the benchmark.
struct Replica {
    process: ManagedProcess,
    admin: String,
}

impl Replica {
    fn spawn(args: &Args, plane: &ControlPlane, ns: &str, identity: &str) -> anyhow::Result<Self> {
        let admin_port = p2pcamera_tests::free_port()?;
        let mut command = Command::new(&args.operator);
        command
            .args(["run", "--namespace", ns, "--lease-namespace", ns])
            .args(["--identity", identity])
            .args(["--metrics-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--port-range", &args.port_range])
            .args(["--camera-pod-image", "registry.invalid/camera-pod:bench"])
            .env("KUBECONFIG", plane.kubeconfig_path())
            .env("RUST_LOG", &args.operator_log);
        let log = plane.dir().join(format!("operator-{identity}.log"));
        Ok(Self {
            process: ManagedProcess::spawn(identity, command, &log)?,
            admin: format!("http://127.0.0.1:{admin_port}"),
        })
    }

    async fn metric(&self, series: &str) -> f64 {
        get(&format!("{}/metrics", self.admin))
            .await
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix(series)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
            })
            .unwrap_or(f64::NAN)
    }

    async fn leading(&self) -> bool {
        self.metric("p2pcamera_operator_leader").await == 1.0
    }
}

/// Sessions by readiness: how many are Ready, and the others counted by `status.reason`
/// (`no status` when the operator wrote none yet).
fn readiness(sessions: &[DynamicObject]) -> (usize, BTreeMap<String, usize>) {
    let mut ready = 0;
    let mut waiting = BTreeMap::new();
    for session in sessions {
        let status = |field: &str| {
            session
                .data
                .pointer(&format!("/status/{field}"))
                .and_then(|v| v.as_str())
        };
        if status("phase") == Some("Ready") {
            ready += 1;
        } else {
            let why = match (status("phase"), status("reason")) {
                (None, _) => "no status".to_owned(),
                (Some(phase), None) => phase.to_owned(),
                (Some(phase), Some(reason)) => format!("{phase}/{reason}"),
            };
            *waiting.entry(why).or_insert(0) += 1;
        }
    }
    (ready, waiting)
}

/// Each session's port and pod uid.
async fn placements(
    sessions: &Api<DynamicObject>,
    pods: &Api<Pod>,
) -> anyhow::Result<BTreeMap<String, (Option<u64>, Option<String>)>> {
    let ports: BTreeMap<String, Option<u64>> = sessions
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|s| {
            let port = s.data.pointer("/status/udpPort").and_then(|p| p.as_u64());
            (s.name_any(), port)
        })
        .collect();
    let uids: BTreeMap<String, String> = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| Some((p.labels().get(LABEL_SESSION)?.clone(), p.uid()?)))
        .collect();
    Ok(ports
        .into_iter()
        .map(|(name, port)| {
            let uid = uids.get(&name).cloned();
            (name, (port, uid))
        })
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The failover places one more session.
    let placed = args.sessions + usize::from(args.failover);
    if (args.nodes as u64) * u64::from(args.gpus_per_node) < placed as u64 {
        bail!(
            "{} nodes x {} GPUs cannot hold {placed} sessions",
            args.nodes,
            args.gpus_per_node,
        );
    }
    let tuning = args.control_plane.tuning();
    let plane = ControlPlane::start_tuned(tuning).await?;
    plane.apply_crds(&args.crd).await?;
    let client = plane.client()?;

    let started = Instant::now();
    stream::iter(0..args.nodes)
        .map(|i| {
            let node = GpuNode::new(&format!("bench-gpu-{i:03}"), args.gpus_per_node);
            let plane = &plane;
            async move { plane.add_node(&node).await }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let ready_nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .len();
    eprintln!(
        "[bench] {ready_nodes} nodes Ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let ns = plane.namespace("bench").await?;

    let leader = Replica::spawn(&args, &plane, &ns, "bench")?;
    eventually("operator leading", Duration::from_secs(60), || async {
        if leader.leading().await {
            Ok(())
        } else {
            Err("not leading".to_owned())
        }
    })
    .await?;
    let standby = if args.failover {
        Some(Replica::spawn(&args, &plane, &ns, "bench-standby")?)
    } else {
        None
    };
    let operator = &leader.process;
    let cpu_before = cpu_seconds(operator.pid())?;
    let requests_before = request_counts(&plane).await?;

    let sessions = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("p2pcamera.io", "v1alpha1", "CameraSession"),
            "camerasessions",
        ),
    );
    let first_create = Instant::now();
    let created: Vec<_> = stream::iter(0..args.sessions)
        .map(|i| {
            let sessions = &sessions;
            async move {
                let object = serde_json::from_value(json!({
                    "apiVersion": "p2pcamera.io/v1alpha1",
                    "kind": "CameraSession",
                    "metadata": {"name": format!("cam-{i:04}")},
                    "spec": {"filter": {"name": "selfie-blur"}},
                }))?;
                sessions
                    .create(&PostParams::default(), &object)
                    .await
                    .context("creating a session")
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    created.into_iter().collect::<Result<Vec<_>, _>>()?;
    let last_create = Instant::now();
    let create_seconds = (last_create - first_create).as_secs_f64();
    eprintln!(
        "[bench] {} sessions created in {create_seconds:.1}s",
        args.sessions
    );

    let mut peak_rss_samples = 0u64;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    // A list of 10,000 sessions is itself work for the API server: poll less often at scale.
    let poll = Duration::from_millis((args.sessions as u64 / 4).clamp(250, 2000));
    let mut progress_at = Instant::now();
    loop {
        let list = sessions.list(&ListParams::default()).await?;
        let (ready, waiting) = readiness(&list.items);
        peak_rss_samples = peak_rss_samples.max(rss_kib(operator.pid(), "VmRSS")?);
        if ready == args.sessions {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {ready}/{} sessions Ready {}s after the last create; not Ready by reason: {waiting:?}; operator log: {}",
                args.sessions,
                args.timeout_seconds,
                operator.log_path().display()
            );
        }
        if progress_at.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "[bench] {:.0}s after the last create: {ready}/{} Ready; not Ready by reason: {waiting:?}",
                last_create.elapsed().as_secs_f64(),
                args.sessions
            );
            progress_at = Instant::now();
        }
        tokio::time::sleep(poll).await;
    }
    let all_ready = Instant::now();
    let cpu_used = cpu_seconds(operator.pid())? - cpu_before;
    let peak_rss = rss_kib(operator.pid(), "VmHWM")?;
    let requests_after = request_counts(&plane).await?;
    let reconciles = leader.metric("p2pcamera_operator_reconciles_total").await;
    let port_moves = leader.metric("p2pcamera_operator_port_moves_total").await;

    let n = args.sessions as f64;
    let diff = request_diff(&requests_before, &requests_after);
    let total: f64 = diff.iter().map(|(_, d)| d).sum();

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| sessions / nodes / GPUs per node | {} / {} / {} |",
        args.sessions, args.nodes, args.gpus_per_node
    );
    println!("| control plane | {tuning} |");
    println!(
        "| creating all sessions ({} in flight) | {create_seconds:.1} s |",
        args.concurrency
    );
    println!(
        "| all Ready after the last create | {:.1} s |",
        (all_ready - last_create).as_secs_f64()
    );
    println!(
        "| all Ready after the first create | {:.1} s |",
        (all_ready - first_create).as_secs_f64()
    );
    println!(
        "| operator peak RSS (VmHWM) | {:.1} MiB |",
        peak_rss as f64 / 1024.0
    );
    println!(
        "| operator RSS, highest sample (VmRSS) | {:.1} MiB |",
        peak_rss_samples as f64 / 1024.0
    );
    println!("| operator CPU time, first create to all Ready | {cpu_used:.1} s |");
    println!(
        "| operator reconciles per session | {:.1} |",
        reconciles / n
    );
    println!("| port range | {} |", args.port_range);
    println!("| port moves (scheduler found the port taken) | {port_moves} |");
    println!(
        "| API requests per session, all clients | {:.1} |",
        total / n
    );
    println!();
    println!(
        "API requests per session by resource and verb (all clients: operator, scheduler, kwok,"
    );
    println!("controller manager, this harness), top 12:");
    println!();
    println!("| resource | verb | per session |");
    println!("|---|---|---|");
    for (key, d) in diff.iter().take(12) {
        let (resource, verb) = key.split_once(' ').unwrap_or((key.as_str(), ""));
        println!("| {resource} | {verb} | {:.2} |", d / n);
    }
    if let Some(standby) = &standby {
        failover(&plane, &ns, &sessions, &leader, standby).await?;
    }
    leader.process.stop();
    if let Some(standby) = standby {
        standby.process.stop();
    }
    Ok(())
}

/// Stops the leader (SIGTERM: it releases its Lease), then measures until the standby leads and
/// until a session created at that moment is Ready, and checks that no session changed its port
/// or pod. Also reports the standby's reconciles and the API requests (all clients) in between.
async fn failover(
    plane: &ControlPlane,
    ns: &str,
    sessions: &Api<DynamicObject>,
    leader: &Replica,
    standby: &Replica,
) -> anyhow::Result<()> {
    let pods = Api::<Pod>::namespaced(plane.client()?, ns);
    let before = placements(sessions, &pods).await?;
    let requests_before = request_counts(plane).await?;
    let stopped = Instant::now();
    leader.process.stop();
    let object = serde_json::from_value(json!({
        "apiVersion": "p2pcamera.io/v1alpha1",
        "kind": "CameraSession",
        "metadata": {"name": "after-failover"},
        "spec": {"filter": {"name": "selfie-blur"}},
    }))?;
    sessions.create(&PostParams::default(), &object).await?;
    eventually("standby leading", Duration::from_secs(60), || async {
        if standby.leading().await {
            Ok(())
        } else {
            Err("not leading".to_owned())
        }
    })
    .await?;
    let leading = stopped.elapsed();
    eventually(
        "a new session Ready after the failover",
        Duration::from_secs(120),
        || async {
            let session = sessions
                .get("after-failover")
                .await
                .map_err(|e| e.to_string())?;
            match session
                .data
                .pointer("/status/phase")
                .and_then(|p| p.as_str())
            {
                Some("Ready") => Ok(()),
                other => Err(format!("phase {other:?}")),
            }
        },
    )
    .await?;
    let resumed = stopped.elapsed();
    let reconciles = standby.metric("p2pcamera_operator_reconciles_total").await;
    let requests = request_diff(&requests_before, &request_counts(plane).await?);
    let after = placements(sessions, &pods).await?;
    let changed = before
        .iter()
        .filter(|(name, placed)| after.get(*name) != Some(*placed))
        .count();
    println!();
    println!("| leader failover (SIGTERM to the leader) | value |");
    println!("|---|---|");
    println!("| standby leading after | {:.1} s |", leading.as_secs_f64());
    println!(
        "| a session created at the SIGTERM Ready after | {:.1} s |",
        resumed.as_secs_f64()
    );
    println!(
        "| sessions whose port or pod changed | {changed} of {} |",
        before.len()
    );
    println!("| the new leader's reconciles until then | {reconciles} |");
    println!();
    println!("API requests from the SIGTERM until the new session was Ready (all clients), top 8:");
    println!();
    println!("| resource | verb | requests |");
    println!("|---|---|---|");
    for (key, d) in requests.iter().take(8) {
        let (resource, verb) = key.split_once(' ').unwrap_or((key.as_str(), ""));
        println!("| {resource} | {verb} | {d} |");
    }
    Ok(())
}

/// The requests counted in `after` and not in `before`, by `resource verb`, most first.
fn request_diff(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> Vec<(String, f64)> {
    let mut diff: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    diff.sort_by(|a, b| b.1.total_cmp(&a.1));
    diff
}

async fn get(url: &str) -> Result<String, String> {
    let response = reqwest::get(url).await.map_err(|e| e.to_string())?;
    response.text().await.map_err(|e| e.to_string())
}

/// `apiserver_request_total` summed by `resource[/subresource] verb`.
async fn request_counts(plane: &ControlPlane) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = plane.kubectl(&["get", "--raw", "/metrics"]).await?;
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\"")[..])
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_owned()
        };
        let subresource = label("subresource");
        let resource = if subresource.is_empty() {
            label("resource")
        } else {
            format!("{}/{subresource}", label("resource"))
        };
        *counts
            .entry(format!("{resource} {}", label("verb")))
            .or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(counts)
}

/// User plus system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(14) + ticks(15)) / hz)
}

/// A memory field of `/proc/<pid>/status` (VmRSS, VmHWM), in KiB.
fn rss_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("{field} missing in /proc/{pid}/status"))
}
