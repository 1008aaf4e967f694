//! The install story, against real parts: the Helm chart (`helm lint`, schema rejections, server-side
//! dry runs of its output, a real `helm install` into the test control plane, then the operator and
//! router binaries running with exactly the rights the chart grants their ServiceAccounts), the
//! CameraSession examples, the container images' configuration, and the configuration reference.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use p2pcamera_tests::{
    ControlPlane, ManagedProcess, binaries, eventually, free_port, pki::CertificateAuthority,
};
use serde_json::{Value, json};

const HELM_VERSION: &str = "v3.22.0";
const WAIT: Duration = Duration::from_secs(90);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/p2pcamera")
}

fn helm_binary() -> PathBuf {
    let path = binaries::cache_dir()
        .join("bin")
        .join(format!("helm-{HELM_VERSION}"))
        .join("helm");
    assert!(
        path.is_file(),
        "{} missing: build it with `tests/bin/install-test-binaries.sh helm`",
        path.display()
    );
    path
}

/// A workspace binary (`operator`, `camera-pod`) next to this test's own executable.
fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Output of a finished command.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn run(program: &Path, args: &[&str], input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("writing stdin");
    }
    let out = child
        .wait_with_output()
        .await
        .expect("waiting for the command");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn helm(args: &[&str]) -> Output {
    run(&helm_binary(), args, "").await
}

/// `helm template` of the chart with `--set` values; panics with helm's message on failure.
async fn template(namespace: &str, sets: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        "p2pcamera",
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "--include-crds",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args).await;
    assert!(out.ok, "helm template {sets:?} failed: {}", out.stderr);
    out.stdout
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The chart on its own

#[tokio::test]
async fn chart_crds_are_the_generated_crds() {
    for file in [
        "camerasessions.p2pcamera.io.yaml",
        "cameraclasses.p2pcamera.io.yaml",
    ] {
        let generated = read(format!("crds/{file}"));
        let chart = read(format!("charts/p2pcamera/crds/{file}"));
        assert!(
            chart == generated,
            "charts/p2pcamera/crds/{file} differs from crds/: run `make crd`"
        );
    }
}

#[tokio::test]
async fn chart_passes_helm_lint() {
    let chart = chart_dir();
    for sets in [
        vec![],
        vec![
            "router.hosts={camera.example.com}",
            "acme.agreeTerms=true",
            "acme.email=ops@example.com",
        ],
    ] {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let out = helm(&args).await;
        assert!(out.ok, "helm lint {sets:?}: {}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("0 chart(s) failed"), "{}", out.stdout);
    }
}

/// Sections whose contents are Kubernetes objects passed through as they are, not chart values.
const PASS_THROUGH: [&str; 3] = ["resources", "podSecurityContext", "securityContext"];

/// Every value of values.yaml as (line index, dotted path), sections included; list items and the
/// contents of pass-through sections are data, not values.
fn chart_value_paths(values: &str) -> Vec<(usize, String)> {
    // (indent, path, holds data)
    let mut stack: Vec<(usize, String, bool)> = Vec::new();
    let mut paths = Vec::new();
    for (i, line) in values.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        stack.retain(|(d, _, _)| *d < indent);
        if trimmed.starts_with('-') || stack.last().is_some_and(|(_, _, data)| *data) {
            stack.push((indent, String::new(), true));
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let full = stack
            .last()
            .map_or(key.to_string(), |(_, p, _)| format!("{p}.{key}"));
        stack.push((indent, full.clone(), PASS_THROUGH.contains(&key)));
        paths.push((i, full));
    }
    paths
}

#[tokio::test]
async fn every_value_has_a_doc_comment() {
    let values = read("charts/p2pcamera/values.yaml");
    let lines: Vec<&str> = values.lines().collect();
    let paths = chart_value_paths(&values);
    assert!(
        paths
            .iter()
            .any(|(_, p)| p == "router.rateLimits.sessionRate"),
        "{paths:?}"
    );
    for (i, path) in paths {
        let comments = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'));
        let documented = comments
            .into_iter()
            .any(|l| l.trim_start().starts_with("# --"));
        assert!(
            documented,
            "values.yaml line {}: `{path}` has no `# --` doc comment above it",
            i + 1
        );
    }
}

#[tokio::test]
async fn bad_values_are_rejected_before_anything_is_installed() {
    let chart = chart_dir();
    let cases: &[(&[&str], &str)] = &[
        (&["router.service.type=Ingress"], "/router/service/type"),
        (&["cameraPod.portRange=40000"], "/cameraPod/portRange"),
        (
            &["cameraPod.portRange=41000-40000"],
            "the first port is larger than the last",
        ),
        (&["operator.replicas=-1"], "/operator/replicas"),
        (&["operator.crashBackoff=5d"], "/operator/crashBackoff"),
        (&["operator.publicIpSource=pod"], "/operator/publicIpSource"),
        (&["router.allowedOrigins={*}"], "/router/allowedOrigins/0"),
        (
            &["router.rateLimits.sessionRate=0"],
            "/router/rateLimits/sessionRate",
        ),
        (
            &["router.trustedProxies={proxy.example}"],
            "/router/trustedProxies/0",
        ),
        (&["router.hosts={not a host}"], "/router/hosts/0"),
        (&["logFormat=xml"], "/logFormat"),
        (
            &["operater.replicas=2"],
            "additional properties 'operater' not allowed",
        ),
        (
            &["router.hosts={camera.example.com}"],
            "acme.agreeTerms=true",
        ),
        (
            &[
                "router.hosts={camera.example.com}",
                "acme.agreeTerms=true",
                "acme.eab.keyId=kid",
            ],
            "acme.eab.keyId needs",
        ),
        (
            &["cameraPod.tolerations[0].operator=Maybe"],
            "/cameraPod/tolerations/0/operator",
        ),
        (&["prePull.enabled=yes"], "/prePull/enabled"),
        (
            &["prePull.image=camera-pod:1"],
            "additional properties 'image' not allowed",
        ),
        (
            &["prePull.resources.limits.nvidia\\.com/gpu=1"],
            "additional properties 'nvidia.com/gpu' not allowed",
        ),
        (
            &[
                "turn.enabled=true",
                "turn.host=turn.example.com",
                "turn.tls.existingSecret=turn-cert",
                "turn.external.urls={turn:turn.example.com:3478}",
                "turn.external.existingSecret=coturn",
            ],
            "set one of them, not both",
        ),
        (
            &["turn.enabled=true", "turn.tls.existingSecret=turn-cert"],
            "turn.host: the DNS name browsers reach coturn at is required",
        ),
        (
            &[
                "turn.enabled=true",
                "turn.host=turn.example.com",
                "router.hosts={camera.example.com}",
                "acme.agreeTerms=true",
            ],
            "turn.host turn.example.com is not among router.hosts",
        ),
        (
            &["turn.enabled=true", "turn.host=turn.example.com"],
            "turn.enabled needs a certificate for turn.host",
        ),
        (
            &[
                "turn.enabled=true",
                "turn.host=turn.example.com",
                "turn.tls.existingSecret=turn-cert",
                "turn.relayPortRange=50099-50000",
            ],
            "turn.relayPortRange 50099-50000: the first port is larger than the last",
        ),
        // coturn takes no CIDR: it would silently drop the entry.
        (
            &["turn.allowedPeerIps={10.0.0.0/8}"],
            "/turn/allowedPeerIps/0",
        ),
    ];
    for (sets, expected) in cases {
        let mut args = vec!["template", "p2pcamera", chart.to_str().unwrap()];
        for set in *sets {
            args.extend(["--set", set]);
        }
        let out = helm(&args).await;
        assert!(!out.ok, "{sets:?} was accepted");
        assert!(
            out.stderr.contains(expected),
            "{sets:?}: expected {expected:?} in: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn a_bad_value_fails_a_real_install_and_creates_nothing() {
    let plane = ControlPlane::shared().await.unwrap();
    let ns = plane.namespace("helm-bad").await.unwrap();
    let chart = chart_dir();
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap().to_owned();
    let args = [
        "install",
        "bad",
        chart.to_str().unwrap(),
        "--namespace",
        &ns,
        "--kubeconfig",
        &kubeconfig,
        "--skip-crds",
        "--set",
        "router.service.type=Ingress",
    ];
    let out = helm(&args).await;
    assert!(!out.ok, "install with a bad value succeeded");
    assert!(
        out.stderr.contains("/router/service/type"),
        "{}",
        out.stderr
    );
    let left = plane
        .kubectl(&[
            "get",
            "deployments,serviceaccounts,roles",
            "-n",
            &ns,
            "-o",
            "name",
        ])
        .await
        .unwrap();
    assert!(
        !left.contains("bad-p2pcamera"),
        "objects left behind: {left}"
    );
}

#[tokio::test]
async fn service_monitors_scrape_both_components_when_enabled() {
    let off = template("p2p", &[]).await;
    assert!(!off.contains("kind: ServiceMonitor"));
    let on = template(
        "p2p",
        &[
            "serviceMonitor.enabled=true",
            "serviceMonitor.labels.release=prom",
        ],
    )
    .await;
    assert_eq!(on.matches("kind: ServiceMonitor").count(), 2, "{on}");
    assert_eq!(on.matches("kind: PodMonitor").count(), 1, "{on}");
    assert!(on.contains("release: prom"));
    // Every component is scraped on its own plain-HTTP metrics port, never on a public one.
    assert_eq!(on.matches("- port: metrics").count(), 3, "{on}");
    assert!(!on.contains("scheme: https"), "{on}");
}

/// Server-side dry run of the rendered chart for several value sets: the real API server checks
/// every object against its schema (and RBAC escalation rules, Service rules, ...).
#[tokio::test]
async fn rendered_chart_passes_server_side_dry_run() {
    let plane = ControlPlane::shared().await.unwrap();
    plane.apply_crds(&repo_root().join("crds")).await.unwrap();
    let ns = plane.namespace("helm-dry").await.unwrap();
    let sessions = plane.namespace("helm-dry-sessions").await.unwrap();
    let watch = format!("operator.watchNamespace={sessions}");
    let route = format!("router.sessionNamespace={sessions}");
    let value_sets: Vec<Vec<&str>> = vec![
        vec![],
        vec![
            "router.hosts={camera.example.com,cam2.example.com}",
            "acme.agreeTerms=true",
            "acme.email=ops@example.com",
            "acme.eab.keyId=kid",
            "acme.eab.hmacKey=c2VjcmV0",
            "acme.caBundle=-----BEGIN CERTIFICATE-----",
            &watch,
            &route,
        ],
        vec![
            "router.service.type=NodePort",
            "router.service.nodePorts.https=30443",
            "router.service.nodePorts.http=30080",
            "operator.replicas=1",
            "router.replicas=1",
        ],
        vec![
            "router.service.type=ClusterIP",
            "router.tls.existingSecret=my-cert",
            "router.hosts={camera.example.com}",
            "turn.external.urls={turns:turn.example.com:443?transport=tcp}",
            "turn.external.existingSecret=coturn",
        ],
        vec![
            "router.service.loadBalancerSourceRanges={10.0.0.0/8}",
            "router.service.externalTrafficPolicy=Cluster",
            "cameraPod.nodeSelector.gpu=l4",
            "operator.extraEnv[0].name=RUST_LOG",
            "operator.extraEnv[0].value=debug",
        ],
        vec![
            "turn.enabled=true",
            "turn.host=turn.example.com",
            "turn.existingSecret=coturn",
            "turn.tls.existingSecret=turn-cert",
            "turn.externalIp=203.0.113.7",
            "turn.allowedPeerIps={192.168.10.0-192.168.10.255}",
            "turn.tolerations[0].key=dedicated",
            "turn.tolerations[0].operator=Exists",
            "turn.metrics.enabled=false",
        ],
    ];
    for sets in value_sets {
        let manifest = template(&ns, &sets).await;
        let out = plane
            .kubectl_with_input(
                &["apply", "--dry-run=server", "-f", "-", "-o", "name"],
                &manifest,
            )
            .await
            .unwrap_or_else(|e| panic!("dry run of {sets:?} failed: {e}\n{manifest}"));
        for kind in [
            "deployment.apps/",
            "service/",
            "clusterrole.rbac",
            "role.rbac",
            "serviceaccount/",
        ] {
            assert!(out.contains(kind), "{sets:?}: no {kind} in {out}");
        }
    }
}

/// The objects of `manifest` as the API server would store them (server-side dry run).
async fn dry_run_objects(plane: &ControlPlane, manifest: &str) -> Vec<Value> {
    let out = plane
        .kubectl_with_input(
            &["apply", "--dry-run=server", "-f", "-", "-o", "json"],
            manifest,
        )
        .await
        .unwrap_or_else(|e| panic!("dry run failed: {e}\n{manifest}"));
    let answer: Value = serde_json::from_str(&out).expect("kubectl prints JSON");
    match answer["items"].as_array() {
        Some(items) if answer["kind"] == "List" => items.clone(),
        _ => vec![answer],
    }
}

// ---------------------------------------------------------------------------------------------
// The chart's coturn (turn.enabled)

/// Values of a release with the chart's coturn whose certificate is the router's ACME one. No
/// cluster-scoped objects (default class, admission policy): a release another test installs
/// for real may create the same ones between a dry run's lookup and its create.
const TURN_VALUES: [&str; 7] = [
    "turn.enabled=true",
    "turn.host=turn.example.com",
    "router.hosts={camera.example.com,turn.example.com}",
    "acme.agreeTerms=true",
    "turn.relayPortRange=20000-20019",
    "defaultClass.create=false",
    "admissionPolicy.enabled=false",
];

/// The object of `kind` named `name` among `objects`.
fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The container `name` of a workload's pod template.
fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|containers| containers.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The shared secret of the chart's generated TURN Secret.
fn turn_secret(objects: &[Value]) -> String {
    use base64::Engine;
    let encoded = object(objects, "Secret", "p2pcamera-turn")["data"]["static-auth-secret"]
        .as_str()
        .expect("static-auth-secret in the TURN Secret")
        .to_owned();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64 Secret data");
    String::from_utf8(decoded).expect("a text secret")
}

/// `turn.enabled` deploys coturn on the labelled nodes' own network with the secret from a
/// Secret (never in the ConfigMap or the pod spec), serves `turns:` with the router's
/// certificate, and gives the router the three URLs of `turn.host` and the same secret as a
/// file; the API server accepts all of it.
#[tokio::test]
async fn turn_enabled_deploys_coturn_and_points_the_router_at_it() {
    let plane = ControlPlane::shared().await.unwrap();
    plane.apply_crds(&repo_root().join("crds")).await.unwrap();
    let ns = plane.namespace("helm-turn").await.unwrap();
    let manifest = template(&ns, &TURN_VALUES).await;
    let objects = dry_run_objects(plane, &manifest).await;

    let secret = turn_secret(&objects);
    assert_eq!(secret.len(), 48, "generated secret {secret:?}");
    assert!(secret.chars().all(|c| c.is_ascii_alphanumeric()));
    // The secret only ever travels in its Secret.
    for (kind, name) in [
        ("ConfigMap", "p2pcamera-turn"),
        ("DaemonSet", "p2pcamera-turn"),
        ("Deployment", "p2pcamera-router"),
    ] {
        let text = object(&objects, kind, name).to_string();
        assert!(!text.contains(&secret), "{kind} {name} holds the secret");
    }

    let daemon_set = object(&objects, "DaemonSet", "p2pcamera-turn");
    let pod = &daemon_set["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["nodeSelector"], json!({"p2pcamera.io/turn": "true"}));
    assert_eq!(pod["automountServiceAccountToken"], false);
    let coturn = container(daemon_set, "coturn");
    let ports: BTreeSet<(i64, String)> = coturn["ports"]
        .as_array()
        .expect("coturn ports")
        .iter()
        .map(|p| {
            (
                p["containerPort"].as_i64().unwrap_or_default(),
                p["protocol"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for port in [(3478, "UDP"), (3478, "TCP"), (443, "TCP"), (9641, "TCP")] {
        assert!(
            ports.contains(&(port.0, port.1.to_owned())),
            "coturn does not declare {port:?}: {ports:?}"
        );
    }
    assert!(
        strings(&coturn["args"]).contains(&"--static-auth-secret=$(TURN_SECRET)".to_owned()),
        "{}",
        coturn["args"]
    );
    let secret_env = coturn["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "TURN_SECRET"))
        .expect("TURN_SECRET env");
    assert_eq!(
        secret_env["valueFrom"]["secretKeyRef"],
        json!({"name": "p2pcamera-turn", "key": "static-auth-secret"})
    );
    let volumes = pod["volumes"].as_array().expect("coturn volumes");
    let tls = volumes
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("tls volume");
    assert_eq!(
        tls["secret"]["secretName"], "p2pcamera-router-tls",
        "coturn serves the router's ACME certificate"
    );
    assert_eq!(
        pod["shareProcessNamespace"], true,
        "the reloader signals coturn"
    );
    let reloader = container(daemon_set, "cert-reloader");
    assert!(
        reloader["command"].to_string().contains("kill -USR2"),
        "{}",
        reloader["command"]
    );

    let config = object(&objects, "ConfigMap", "p2pcamera-turn")["data"]["turnserver.conf"]
        .as_str()
        .expect("turnserver.conf")
        .to_owned();
    for line in [
        "listening-port=3478",
        "tls-listening-port=443",
        "min-port=20000",
        "max-port=20019",
        "use-auth-secret",
        "realm=turn.example.com",
        "no-cli",
        "fingerprint",
        "no-multicast-peers",
        "prometheus",
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=169.254.0.0-169.254.255.255",
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "no {line:?} in:\n{config}"
        );
    }
    assert!(
        !config.lines().any(|l| l.starts_with("static-auth-secret")),
        "{config}"
    );

    let router = object(&objects, "Deployment", "p2pcamera-router");
    let env = deployment_env(router, "p2pcamera-router-test");
    let env_value = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("router has no {key}"))
    };
    assert_eq!(
        env_value("P2PCAMERA_ROUTER_TURN_URLS"),
        "turn:turn.example.com:3478?transport=udp,turn:turn.example.com:3478?transport=tcp,\
         turns:turn.example.com:443?transport=tcp"
    );
    assert_eq!(
        env_value("P2PCAMERA_ROUTER_TURN_SECRET_FILE"),
        "/etc/p2pcamera/turn/static-auth-secret"
    );
    let router_pod = &router["spec"]["template"]["spec"];
    assert_eq!(
        router_pod["volumes"],
        json!([{"name": "turn-secret", "secret": {
            "secretName": "p2pcamera-turn", "defaultMode": 420,
            "items": [{"key": "static-auth-secret", "path": "static-auth-secret"}]}}])
    );
    assert_eq!(
        router_pod["containers"][0]["volumeMounts"],
        json!([{"name": "turn-secret", "mountPath": "/etc/p2pcamera/turn", "readOnly": true}])
    );

    // Camera pods of relaying classes relay through the chart's coturn over UDP.
    let operator_env = &object(&objects, "Deployment", "p2pcamera-operator")["spec"]["template"]["spec"]
        ["containers"][0]["env"];
    let pod_turn_urls = operator_env
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "P2PCAMERA_CAMERA_POD_TURN_URLS");
    assert_eq!(
        pod_turn_urls.map(|e| &e["value"]),
        Some(&json!("turn:turn.example.com:3478?transport=udp")),
        "{operator_env}"
    );

    // With monitoring on, coturn's exporter is scraped on the port the DaemonSet declares.
    let mut monitored: Vec<&str> = TURN_VALUES.to_vec();
    monitored.push("serviceMonitor.enabled=true");
    let monitored = template(&ns, &monitored).await;
    assert_eq!(
        monitored.matches("kind: PodMonitor").count(),
        2,
        "{monitored}"
    );
    let turn_monitor = monitored
        .split("\n---")
        .find(|doc| doc.contains("kind: PodMonitor") && doc.contains("name: p2pcamera-turn"))
        .expect("a PodMonitor for coturn");
    assert!(
        turn_monitor.contains("app.kubernetes.io/component: turn")
            && turn_monitor.contains("- port: metrics"),
        "{turn_monitor}"
    );
    assert!(
        coturn["ports"].as_array().is_some_and(|p| p
            .iter()
            .any(|p| p["name"] == "metrics" && p["containerPort"] == 9641)),
        "{}",
        coturn["ports"]
    );
}

/// What coturn says to an allocation (tests/peers/turn_allocate.py run inside `namespace`).
fn allocate(
    namespace: &p2pcamera_tests::netns::NetworkNamespace,
    ca: &Path,
    url: &str,
    username: &str,
    credential: &str,
) -> Value {
    let python = binaries::cache_dir().join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: make the venv with tests/peers/run.sh",
        python.display()
    );
    let output = namespace
        .command(&python)
        .arg(repo_root().join("tests/peers/turn_allocate.py"))
        .args(["--url", url, "--username", username])
        .arg(format!("--credential={credential}"))
        .env("SSL_CERT_FILE", ca)
        .output()
        .expect("turn_allocate.py runs");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "turn_allocate.py ({}): {e}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The coturn the chart deploys, run from exactly its rendered configuration (ConfigMap and
/// arguments; only the mounted files, the secret and the node's address are this machine's) by
/// Debian's `turnserver` in a network namespace of the test's own: it grants relays on UDP, TCP
/// and TLS to credentials the router mints from the chart's generated secret for the router's
/// rendered URLs, and refuses a forged credential with 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_as_rendered_relays_with_router_credentials_and_refuses_forged_ones() {
    use p2pcamera_operator::router::ice::TurnConfig;
    use p2pcamera_tests::netns::NetworkNamespace;
    use p2pcamera_tests::turn::TURNSERVER;

    if let Some(why) = NetworkNamespace::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let plane = ControlPlane::shared().await.unwrap();
    plane.apply_crds(&repo_root().join("crds")).await.unwrap();
    let ns = plane.namespace("helm-turn-run").await.unwrap();
    let manifest = template(&ns, &TURN_VALUES).await;
    let objects = dry_run_objects(plane, &manifest).await;
    let secret = turn_secret(&objects);
    let daemon_set = object(&objects, "DaemonSet", "p2pcamera-turn");
    let coturn = container(daemon_set, "coturn");
    let config_map = object(&objects, "ConfigMap", "p2pcamera-turn");

    // Each volume of the coturn container becomes a directory here, filled as the kubelet would.
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::new("p2pcamera test TURN CA").unwrap();
    let serving = ca.server("turn", &["localhost", "127.0.0.1"]).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let volumes = daemon_set["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    let mut mounts = Vec::new();
    for mount in coturn["volumeMounts"].as_array().expect("volumeMounts") {
        let name = mount["name"].as_str().expect("mount name");
        let mount_path = mount["mountPath"].as_str().expect("mountPath");
        let volume = volumes
            .iter()
            .find(|v| v["name"] == name)
            .expect("mounted volume");
        let local = dir.path().join(name);
        std::fs::create_dir(&local).unwrap();
        if volume["configMap"]["name"] == "p2pcamera-turn" {
            for (file, contents) in config_map["data"].as_object().expect("ConfigMap data") {
                std::fs::write(local.join(file), contents.as_str().unwrap()).unwrap();
            }
        } else if volume["secret"]["secretName"] == "p2pcamera-router-tls" {
            std::fs::write(local.join("tls.crt"), &serving.cert_pem).unwrap();
            std::fs::write(local.join("tls.key"), &serving.key_pem).unwrap();
        } else {
            assert!(volume["emptyDir"].is_object(), "unexpected volume {volume}");
        }
        mounts.push((mount_path.to_owned(), local.to_string_lossy().into_owned()));
    }
    // Longest mount paths first, so that no mount path is rewritten inside another.
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    let localize = |text: &str| {
        let mut text = text.to_owned();
        for (mount_path, local) in &mounts {
            text = text.replace(mount_path.as_str(), local);
        }
        text
    };
    let config_file = dir.path().join("config/turnserver.conf");
    let config = std::fs::read_to_string(&config_file).unwrap();
    // Debian's coturn is built without the Prometheus exporter: it logs "Bad configuration
    // format: prometheus" and goes on, so the line stays as rendered.
    std::fs::write(&config_file, localize(&config)).unwrap();
    let args: Vec<String> = strings(&coturn["args"])
        .iter()
        .map(|arg| {
            localize(arg)
                .replace("$(TURN_SECRET)", &secret)
                .replace("$(TURN_NODE_IP)", "127.0.0.1")
        })
        .collect();
    assert!(
        args.iter().all(|arg| !arg.contains("$(")),
        "an environment variable this test does not stand in for: {args:?}"
    );
    assert_eq!(strings(&coturn["command"]), [TURNSERVER]);

    let namespace = NetworkNamespace::create(dir.path()).unwrap();
    let mut command = namespace.command(TURNSERVER);
    command.args(&args);
    let server = ManagedProcess::spawn("coturn", command, &dir.path().join("coturn.log")).unwrap();
    let listeners = [3478, 443].map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    eventually("coturn's TCP and TLS listeners", WAIT, || {
        let exited = server.exited();
        let reachable = namespace.on_thread(move || {
            listeners.iter().all(|address| {
                std::net::TcpStream::connect_timeout(address, Duration::from_secs(1)).is_ok()
            })
        });
        async move {
            match (exited, reachable) {
                (Some(status), _) => Err(format!("coturn exited: {status}")),
                (None, Ok(true)) => Ok(()),
                (None, Ok(false)) => Err("not listening yet".to_owned()),
                (None, Err(error)) => Err(error.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log_tail(30)));

    // The router's URLs, with turn.example.com resolved to where coturn listens here.
    let router = object(&objects, "Deployment", "p2pcamera-router");
    let urls: Vec<String> = deployment_env(router, "p2pcamera-router-test")
        .into_iter()
        .find(|(k, _)| k == "P2PCAMERA_ROUTER_TURN_URLS")
        .expect("the router's TURN URLs")
        .1
        .split(',')
        .map(|url| url.replace("turn.example.com", "127.0.0.1"))
        .collect();
    assert_eq!(urls.len(), 3, "{urls:?}");
    let session = p2pcamera_api::SessionKey::new("default", "cam");
    let now = std::time::SystemTime::now();
    let mint = |secret: &str| {
        TurnConfig::new(
            urls.clone(),
            secret.as_bytes().to_vec(),
            Duration::from_secs(600),
        )
        .expect("valid TURN configuration")
        .ice_servers(&session, now)
        .ice_servers
        .remove(0)
    };
    let minted = mint(&secret);
    let forged = mint("not-the-chart-secret");
    for url in &urls {
        let answer = allocate(
            &namespace,
            &ca_path,
            url,
            &minted.username,
            &minted.credential,
        );
        assert_eq!(
            answer["allocated"],
            true,
            "{url}: {answer}\n{}",
            server.log_tail(20)
        );
        let relayed = answer["relayed"][1].as_u64().unwrap_or_default();
        assert!(
            (20000..=20019).contains(&relayed),
            "{url}: relayed from port {relayed}, outside turn.relayPortRange"
        );
        let refused = allocate(
            &namespace,
            &ca_path,
            url,
            &forged.username,
            &forged.credential,
        );
        assert_eq!(
            (&refused["allocated"], &refused["code"]),
            (&json!(false), &json!(401)),
            "forged credential over {url}: {refused}"
        );
    }
    drop(server);
    drop(namespace);
}

#[tokio::test]
async fn image_prepull_is_off_by_default() {
    let rendered = template("p2p", &[]).await;
    assert!(!rendered.contains("kind: DaemonSet"), "{rendered}");
}

/// With `prePull.enabled`, one DaemonSet pulls each camera-pod image once on the nodes camera pods
/// go to, holds no GPU and no API token, and the API server accepts it.
#[tokio::test]
async fn image_prepull_pulls_each_camera_pod_image_on_camera_pod_nodes_without_a_gpu() {
    let plane = ControlPlane::shared().await.unwrap();
    plane.apply_crds(&repo_root().join("crds")).await.unwrap();
    let ns = plane.namespace("helm-prepull").await.unwrap();
    let camera_image = "registry.example.com/camera-pod:1.0";
    let extra = [
        "registry.example.com/camera-pod:a",
        "registry.example.com/camera-pod:b",
    ];
    let camera_image_set = format!("cameraPod.image={camera_image}");
    let images_set = format!(
        "prePull.images={{{},{},{camera_image}}}",
        extra[0], extra[1]
    );
    let manifest = template(
        &ns,
        &[
            "prePull.enabled=true",
            &camera_image_set,
            &images_set,
            "cameraPod.nodeSelector.gpu=l4",
            "cameraPod.nodeSelector.pool=cameras",
        ],
    )
    .await;
    let objects = dry_run_objects(plane, &manifest).await;
    let daemon_sets: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "DaemonSet")
        .collect();
    assert_eq!(daemon_sets.len(), 1, "{manifest}");
    let daemon_set = daemon_sets[0];
    assert_eq!(daemon_set["metadata"]["name"], "p2pcamera-image-prepull");
    let pod = &daemon_set["spec"]["template"]["spec"];

    let init = pod["initContainers"].as_array().expect("init containers");
    let pulled: Vec<&str> = init.iter().filter_map(|c| c["image"].as_str()).collect();
    assert_eq!(pulled, [camera_image, extra[0], extra[1]]);
    let entrypoint = "/usr/local/bin/camera-pod";
    for container in init {
        assert_eq!(container["command"], json!([entrypoint, "--version"]));
        assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    }
    // The command is the image's entrypoint, and it exits 0 without a GPU or a configuration.
    assert!(
        read("images/camera-pod.Dockerfile").contains(&format!("ENTRYPOINT [\"{entrypoint}\"]")),
        "the camera-pod image's entrypoint is no longer {entrypoint}"
    );
    let version = run(&workspace_binary("camera-pod"), &["--version"], "").await;
    assert!(version.ok, "camera-pod --version: {}", version.stderr);

    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0]["image"], "registry.k8s.io/pause:3.10");
    for container in init.iter().chain(containers) {
        let name = &container["name"];
        let resources = &container["resources"];
        assert!(
            !resources.to_string().contains("nvidia.com/gpu"),
            "{name} asks for a GPU: {resources}"
        );
        assert_eq!(resources["requests"]["cpu"], "10m", "{name}");
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
    }
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );

    // The placement the operator gives every camera pod.
    let operator = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "p2pcamera-operator")
        .expect("the operator Deployment");
    let env = deployment_env(operator, "p2pcamera-operator-test");
    let camera_pod_json = |key: &str| -> Value {
        let (_, value) = env
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("operator has no {key}"));
        serde_json::from_str(value).unwrap_or_else(|e| panic!("{key}={value}: {e}"))
    };
    assert_eq!(
        pod["nodeSelector"],
        camera_pod_json("P2PCAMERA_GPU_NODE_SELECTOR")
    );
    assert_eq!(pod["nodeSelector"], json!({"gpu": "l4", "pool": "cameras"}));
    assert_eq!(
        pod["tolerations"],
        camera_pod_json("P2PCAMERA_GPU_TOLERATIONS")
    );
    assert!(
        pod["tolerations"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["key"] == "nvidia.com/gpu")),
        "{}",
        pod["tolerations"]
    );
}

#[tokio::test]
async fn examples_are_valid_camera_sessions_and_classes() {
    let plane = ControlPlane::shared().await.unwrap();
    plane.apply_crds(&repo_root().join("crds")).await.unwrap();
    let ns = plane.namespace("helm-examples").await.unwrap();
    let dir = repo_root().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = plane
            .kubectl(&[
                "apply",
                "--dry-run=server",
                "-n",
                &ns,
                "-f",
                path.to_str().unwrap(),
                "-o",
                "name",
            ])
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            out.contains("camerasession.p2pcamera.io/")
                || out.contains("cameraclass.p2pcamera.io/"),
            "{out}"
        );
        seen += 1;
    }
    assert!(seen >= 3, "only {seen} examples");
}

// ---------------------------------------------------------------------------------------------
// A real install, and the components running with the rights it grants

/// With the chart installed (its default class `standard` and its admission policy), sessions in
/// namespace `ns` are refused at apply time when their class does not allow them, and admitted
/// when it does.
async fn admission_policy_refuses_what_the_class_does_not_allow(plane: &ControlPlane, ns: &str) {
    let class = json!({
        "apiVersion": "p2pcamera.io/v1alpha1", "kind": "CameraClass",
        "metadata": {"name": "helm-blur-only"},
        "spec": {"allowedFilters": ["selfie-blur"], "video": {"maxFps": 15, "codecs": ["VP8"]}},
    });
    plane
        .kubectl_with_input(&["apply", "-f", "-"], &class.to_string())
        .await
        .unwrap();
    let dry_run = |name: &str, spec: Value| {
        let session = json!({
            "apiVersion": "p2pcamera.io/v1alpha1", "kind": "CameraSession",
            "metadata": {"name": name, "namespace": ns}, "spec": spec,
        });
        async move {
            plane
                .kubectl_with_input(
                    &["apply", "--dry-run=server", "-f", "-"],
                    &session.to_string(),
                )
                .await
                .map_err(|e| e.to_string())
        }
    };
    let custom = json!({"name": "custom", "model": {
        "url": "https://models.example/m.onnx", "sha256": "a".repeat(64),
        "manifest": {"input": "x", "layout": "NCHW", "width": 8, "height": 8, "output": "image"},
    }});
    let cases = [
        (
            "styled",
            json!({"className": "helm-blur-only", "filter": {"name": "style", "styleIndex": 1}}),
            "CameraClass helm-blur-only does not allow filter style",
        ),
        (
            "fast",
            json!({"className": "helm-blur-only", "video": {"maxFps": 30}}),
            "spec.video is above the limits of CameraClass helm-blur-only",
        ),
        (
            "h264",
            json!({"className": "helm-blur-only", "video": {"codecs": ["H264"]}}),
            "does not allow the codecs",
        ),
        // No className: the chart's default class, which allows no custom model.
        (
            "custom",
            json!({"filter": custom}),
            "CameraClass standard does not allow filter custom",
        ),
    ];
    // A new policy takes a moment to be enforced.
    eventually("the admission policy enforces classes", WAIT, || async {
        for (name, spec, expected) in &cases {
            match dry_run(name, spec.clone()).await {
                Err(message) if message.contains(expected) => {}
                other => return Err(format!("{name}: want {expected:?}, got {other:?}")),
            }
        }
        Ok(())
    })
    .await
    .unwrap();
    dry_run(
        "fits",
        json!({"className": "helm-blur-only", "video": {"maxFps": 10, "codecs": ["VP8"]}}),
    )
    .await
    .expect("a session that fits its class is admitted");
    dry_run(
        "plain",
        json!({"filter": {"name": "style", "styleIndex": 3}}),
    )
    .await
    .expect("the default class allows every built-in filter");
    plane
        .kubectl(&["delete", "cameraclass", "helm-blur-only"])
        .await
        .unwrap();
}

fn service_account_user(namespace: &str, name: &str) -> (String, Vec<String>) {
    (
        format!("system:serviceaccount:{namespace}:{name}"),
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    )
}

/// One access question: `verb group/resource[/subresource][/name]` in `namespace` ("" = cluster).
struct Access<'a> {
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    namespace: &'a str,
    name: &'a str,
}

const fn access<'a>(
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    namespace: &'a str,
    name: &'a str,
) -> Access<'a> {
    Access {
        verb,
        group,
        resource,
        namespace,
        name,
    }
}

async fn allowed(client: &kube::Client, user: &(String, Vec<String>), a: &Access<'_>) -> bool {
    let (resource, subresource) = match a.resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (a.resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.0.clone()),
            groups: Some(user.1.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(a.verb.into()),
                group: Some(a.group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: (!a.namespace.is_empty()).then(|| a.namespace.into()),
                name: (!a.name.is_empty()).then(|| a.name.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    answer.status.expect("review status").allowed
}

async fn assert_access(
    client: &kube::Client,
    who: &str,
    user: &(String, Vec<String>),
    yes: &[Access<'_>],
    no: &[Access<'_>],
) {
    let mut wrong = Vec::new();
    for a in yes {
        if !allowed(client, user, a).await {
            wrong.push(format!(
                "{who} may not {} {}.{} {}/{} (needed)",
                a.verb, a.resource, a.group, a.namespace, a.name
            ));
        }
    }
    for a in no {
        if allowed(client, user, a).await {
            wrong.push(format!(
                "{who} may {} {}.{} {}/{} (more than it needs)",
                a.verb, a.resource, a.group, a.namespace, a.name
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A kubeconfig for `sa` in `namespace`, with a real ServiceAccount token from the API server.
async fn service_account_kubeconfig(plane: &ControlPlane, namespace: &str, sa: &str, path: &Path) {
    let token = plane
        .kubectl(&["create", "token", sa, "-n", namespace, "--duration=1h"])
        .await
        .unwrap();
    let admin: Value =
        serde_json::from_str(&std::fs::read_to_string(plane.kubeconfig_path()).unwrap()).unwrap();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": sa, "context": {"cluster": admin["clusters"][0]["name"], "user": sa}}],
        "current-context": sa,
    });
    std::fs::write(path, serde_json::to_string(&config).unwrap()).unwrap();
}

/// The container's environment as the chart renders it, with downward-API values filled in.
fn deployment_env(deployment: &Value, pod_name: &str) -> Vec<(String, String)> {
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    env.as_array()
        .expect("container env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match (
                e["value"].as_str(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            ) {
                (Some(v), _) => v.to_string(),
                (None, Some("metadata.name")) => pod_name.to_string(),
                other => panic!("{name}: unexpected env source {other:?}"),
            };
            (name, value)
        })
        .collect()
}

fn spawn_component(
    name: &str,
    args: &[&str],
    env: &[(String, String)],
    kubeconfig: &Path,
    log: &Path,
) -> ManagedProcess {
    let mut command = std::process::Command::new(workspace_binary("operator"));
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("P2PCAMERA_")) {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    ManagedProcess::spawn(name, command, log).unwrap()
}

fn forbidden_lines(process: &ManagedProcess) -> Vec<String> {
    let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
    log.lines()
        .filter(|l| l.to_lowercase().contains("forbidden"))
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn installed_chart_runs_operator_and_router_with_least_rights() {
    let plane = ControlPlane::shared().await.unwrap();
    let client = plane.client().unwrap();
    let ns = plane.namespace("helm-install").await.unwrap();
    let other_ns = plane.namespace("helm-other").await.unwrap();
    let chart = chart_dir();
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap().to_owned();
    let out = helm(&[
        "install",
        "cams",
        chart.to_str().unwrap(),
        "--namespace",
        &ns,
        "--kubeconfig",
        &kubeconfig,
        "--set",
        "cameraPod.image=registry.invalid/camera-pod:helm-test",
        "--set",
        "cameraPod.portRange=41000-41009",
        "--set",
        "router.service.type=ClusterIP",
        "--set",
        "router.trustedProxies={10.0.0.0/8,fd00::/8}",
    ])
    .await;
    assert!(out.ok, "helm install failed: {}", out.stderr);
    assert!(
        out.stdout.contains("get secret demo-p2pcamera"),
        "NOTES do not say how to get the token:\n{}",
        out.stdout
    );

    // The CRD from the chart's crds/ and every RBAC object.
    plane
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/camerasessions.p2pcamera.io",
        ])
        .await
        .unwrap();
    for object in [
        "clusterrole/cams-p2pcamera-operator-sessions",
        "clusterrole/cams-p2pcamera-operator-nodes",
        "clusterrole/cams-p2pcamera-operator-classes",
        "clusterrolebinding/cams-p2pcamera-operator-nodes",
        "clusterrolebinding/cams-p2pcamera-operator-classes",
        "clusterrole/cams-p2pcamera-router-sessions",
        "cameraclass/standard",
        "validatingadmissionpolicy/cams-p2pcamera-camera-class",
        "validatingadmissionpolicybinding/cams-p2pcamera-camera-class",
    ] {
        plane
            .kubectl(&["get", object])
            .await
            .unwrap_or_else(|e| panic!("{object}: {e}"));
    }
    // By default nothing grants pod or Secret rights cluster-wide: the session rights are bound in
    // the release namespace only.
    for object in [
        "clusterrolebinding/cams-p2pcamera-operator-sessions",
        "clusterrolebinding/cams-p2pcamera-router-sessions",
    ] {
        assert!(
            plane.kubectl(&["get", object]).await.is_err(),
            "{object} exists: the default install must not be cluster-wide"
        );
    }
    for object in [
        "rolebinding/cams-p2pcamera-operator-sessions",
        "rolebinding/cams-p2pcamera-router-sessions",
        "role/cams-p2pcamera-operator",
        "rolebinding/cams-p2pcamera-operator",
        "role/cams-p2pcamera-router",
        "rolebinding/cams-p2pcamera-router",
        "serviceaccount/cams-p2pcamera-operator",
        "serviceaccount/cams-p2pcamera-router",
        "poddisruptionbudget/cams-p2pcamera-operator",
        "deployment/cams-p2pcamera-router",
        "service/cams-p2pcamera-router",
    ] {
        plane
            .kubectl(&["get", "-n", &ns, object])
            .await
            .unwrap_or_else(|e| panic!("{object}: {e}"));
    }

    // What each ServiceAccount may and may not do.
    let operator = service_account_user(&ns, "cams-p2pcamera-operator");
    let g = "p2pcamera.io";
    // Sessions live in the release namespace (the default); `o` is any other namespace.
    let s = ns.as_str();
    let o = other_ns.as_str();
    assert_access(
        &client,
        "operator",
        &operator,
        &[
            access("watch", g, "camerasessions", s, ""),
            access("list", g, "camerasessions", s, ""),
            access("list", g, "cameraclasses", "", ""),
            access("watch", g, "cameraclasses", "", ""),
            access("patch", g, "cameraclasses/status", "", "standard"),
            access("update", g, "cameraclasses/finalizers", "", "standard"),
            access("patch", g, "camerasessions", s, "demo"),
            access("patch", g, "camerasessions/status", s, "demo"),
            access("update", g, "camerasessions/finalizers", s, "demo"),
            access("list", "", "pods", s, ""),
            access("watch", "", "pods", s, ""),
            access("create", "", "pods", s, ""),
            access("patch", "", "pods", s, "demo-p2pcamera"),
            access("delete", "", "pods", s, "demo-p2pcamera"),
            access("create", "", "secrets", s, ""),
            access("get", "", "secrets", s, "demo-p2pcamera"),
            access("watch", "", "secrets", s, ""),
            access("create", "events.k8s.io", "events", s, ""),
            access("patch", "events.k8s.io", "events", s, "x"),
            access("get", "", "nodes", "", "gpu-1"),
            access("create", "coordination.k8s.io", "leases", &ns, ""),
            access(
                "update",
                "coordination.k8s.io",
                "leases",
                &ns,
                "p2pcamera-operator",
            ),
            access(
                "get",
                "coordination.k8s.io",
                "leases",
                &ns,
                "p2pcamera-operator-acme",
            ),
        ],
        &[
            // Nothing outside the sessions namespace: no pods, no Secrets, no sessions.
            access("list", "", "secrets", "", ""),
            access("watch", "", "secrets", "", ""),
            access("get", "", "secrets", o, "anything"),
            access("list", "", "secrets", o, ""),
            access("create", "", "pods", o, ""),
            access("delete", "", "pods", o, "x"),
            access("list", "", "pods", "", ""),
            access("watch", g, "camerasessions", "", ""),
            access("patch", g, "camerasessions/status", o, "demo"),
            access("create", g, "cameraclasses", "", ""),
            access("patch", g, "cameraclasses", "", "standard"),
            access("create", g, "camerasessions", s, ""),
            access("delete", g, "camerasessions", s, "demo"),
            access("update", g, "camerasessions", s, "demo"),
            access("create", "", "pods/exec", s, "demo-p2pcamera"),
            access("update", "", "secrets", s, "demo-p2pcamera"),
            access("patch", "", "secrets", s, "demo-p2pcamera"),
            access("delete", "", "secrets", s, "demo-p2pcamera"),
            access("patch", "", "secrets", &ns, "p2pcamera-router-tls"),
            access("patch", "", "configmaps", &ns, "p2pcamera-acme-challenges"),
            access("list", "", "nodes", "", ""),
            access("patch", "", "nodes", "", "gpu-1"),
            access(
                "update",
                "coordination.k8s.io",
                "leases",
                &ns,
                "someone-else",
            ),
            access(
                "get",
                "coordination.k8s.io",
                "leases",
                &other_ns,
                "p2pcamera-operator",
            ),
            access("create", "apps", "deployments", s, ""),
            access("create", "", "events", s, ""),
            access(
                "create",
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                "",
                "",
            ),
        ],
    )
    .await;
    // The router only reads: sessions and their Secrets (list and watch, what its caches do),
    // its TLS Secret and the challenge ConfigMap by name. It writes nothing, reads no Secret one
    // by one, and has no way to more rights. Where session Secrets may be listed (every
    // namespace; every one only with watchAllNamespaces) is the chart's choice, asserted by
    // what the router needs in the sessions namespace and by it running below.
    let router = service_account_user(&ns, "cams-p2pcamera-router");
    let mut router_may_not = vec![
        access("list", "", "secrets", "", ""),
        access("watch", "", "secrets", "", ""),
        access("list", "", "secrets", o, ""),
        access("watch", g, "camerasessions", "", ""),
        access("list", g, "camerasessions", o, ""),
        access("list", g, "cameraclasses", "", ""),
        access("get", g, "camerasessions", s, "demo"),
        access("create", g, "camerasessions", s, ""),
        access("patch", g, "camerasessions", s, "demo"),
        access("delete", g, "camerasessions", s, "demo"),
        access("patch", g, "camerasessions/status", s, "demo"),
        access("get", "", "secrets", s, "demo-p2pcamera"),
        access("get", "", "secrets", &ns, "p2pcamera-router-tls"),
        access("get", "", "secrets", &ns, "p2pcamera-acme-account"),
        access("list", "", "configmaps", &ns, ""),
        access("list", "", "configmaps", &ns, "something-else"),
        access("get", "", "configmaps", &ns, "p2pcamera-acme-challenges"),
        access("get", "", "pods", s, "demo-p2pcamera"),
        access("list", "", "pods", s, ""),
        access("get", "", "nodes", "", "gpu-1"),
        access("create", "coordination.k8s.io", "leases", &ns, ""),
        access("create", "", "events", s, ""),
        access("create", "events.k8s.io", "events", s, ""),
        access(
            "create",
            "",
            "serviceaccounts/token",
            &ns,
            "cams-p2pcamera-operator",
        ),
        access(
            "impersonate",
            "",
            "serviceaccounts",
            &ns,
            "cams-p2pcamera-operator",
        ),
        access(
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            &ns,
            "",
        ),
        access(
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "",
            "",
        ),
        access(
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            "",
        ),
        access("bind", "rbac.authorization.k8s.io", "clusterroles", "", ""),
    ];
    // No writes to any Secret, ConfigMap or Pod: not the sessions', not its own certificate
    // (the operator's ACME client renews that), not the challenges (the operator's).
    for (resource, namespace, name) in [
        ("secrets", s, "demo-p2pcamera"),
        ("secrets", ns.as_str(), "p2pcamera-router-tls"),
        ("configmaps", ns.as_str(), "p2pcamera-acme-challenges"),
        ("pods", s, "demo-p2pcamera"),
    ] {
        for verb in ["create", "update", "patch", "delete"] {
            router_may_not.push(access(verb, "", resource, namespace, name));
        }
    }
    router_may_not.push(access("create", "", "pods/exec", s, "demo-p2pcamera"));
    assert_access(
        &client,
        "router",
        &router,
        &[
            access("list", g, "camerasessions", s, ""),
            access("watch", g, "camerasessions", s, ""),
            access("list", "", "secrets", s, ""),
            access("watch", "", "secrets", s, ""),
            access("list", "", "secrets", &ns, "p2pcamera-router-tls"),
            access("watch", "", "secrets", &ns, "p2pcamera-router-tls"),
            access("list", "", "configmaps", &ns, "p2pcamera-acme-challenges"),
            access("watch", "", "configmaps", &ns, "p2pcamera-acme-challenges"),
        ],
        &router_may_not,
    )
    .await;

    // The operator, configured exactly as the chart's Deployment, with its ServiceAccount's token.
    let work = tempfile::tempdir().unwrap();
    let deployment: Value = serde_json::from_str(
        &plane
            .kubectl(&[
                "get",
                "deployment",
                "-n",
                &ns,
                "cams-p2pcamera-operator",
                "-o",
                "json",
            ])
            .await
            .unwrap(),
    )
    .unwrap();
    let mut env = deployment_env(&deployment, "cams-p2pcamera-operator-test");
    env.retain(|(k, _)| k != "P2PCAMERA_METRICS_LISTEN");
    env.push((
        "P2PCAMERA_METRICS_LISTEN".into(),
        format!("127.0.0.1:{}", free_port().unwrap()),
    ));
    let operator_kubeconfig = work.path().join("operator.kubeconfig");
    service_account_kubeconfig(plane, &ns, "cams-p2pcamera-operator", &operator_kubeconfig).await;
    let operator_process = spawn_component(
        "operator",
        &["run"],
        &env,
        &operator_kubeconfig,
        &work.path().join("operator.log"),
    );

    plane
        .add_gpu_node("helm-gpu-1", 1, "127.0.0.7".parse().unwrap())
        .await
        .unwrap();
    admission_policy_refuses_what_the_class_does_not_allow(plane, s).await;
    let example = repo_root().join("examples/camerasession.yaml");
    plane
        .kubectl(&["apply", "-n", s, "-f", example.to_str().unwrap()])
        .await
        .unwrap();
    let status = eventually(
        "the example session Ready under the chart's operator",
        WAIT,
        || async {
            if let Some(exit) = operator_process.exited() {
                panic!(
                    "operator exited ({exit}): {}",
                    operator_process.log_tail(30)
                );
            }
            let text = plane
                .kubectl(&["get", "camerasession", "demo", "-n", s, "-o", "json"])
                .await
                .map_err(|e| e.to_string())?;
            let session: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            match session["status"]["phase"].as_str() {
                Some("Ready") => Ok(session["status"].clone()),
                other => Err(format!(
                    "phase {other:?}; operator log: {}",
                    operator_process.log_tail(2)
                )),
            }
        },
    )
    .await
    .unwrap();
    let port = status["udpPort"].as_u64().expect("udpPort in status");
    assert!(
        (41000..=41009).contains(&port),
        "port {port} outside the chart's cameraPod.portRange"
    );
    let pod: Value = serde_json::from_str(
        &plane
            .kubectl(&["get", "pod", "demo-p2pcamera", "-n", s, "-o", "json"])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "registry.invalid/camera-pod:helm-test"
    );
    let tolerations = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "nvidia.com/gpu" && t["operator"] == "Exists"),
        "{tolerations:?}"
    );
    let lease = plane
        .kubectl(&[
            "get",
            "lease",
            "p2pcamera-operator",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await
        .unwrap();
    assert_eq!(lease, "cams-p2pcamera-operator-test");
    assert!(
        forbidden_lines(&operator_process).is_empty(),
        "operator was refused: {:?}",
        forbidden_lines(&operator_process)
    );

    // The router, likewise: it becomes ready only when it could list and watch sessions, their
    // Secrets and its TLS Secret, and answers ACME challenges from the ConfigMap it may watch.
    let ca = CertificateAuthority::new("helm test CA").unwrap();
    let serving = ca.server("localhost", &["localhost", "127.0.0.1"]).unwrap();
    let tls_secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "p2pcamera-router-tls"},
        "stringData": {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem},
    });
    plane
        .kubectl_with_input(&["apply", "-n", &ns, "-f", "-"], &tls_secret.to_string())
        .await
        .unwrap();
    let challenge = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "p2pcamera-acme-challenges"},
        "data": {"helm-token": "helm-token.key-authorization"},
    });
    plane
        .kubectl_with_input(&["apply", "-n", &ns, "-f", "-"], &challenge.to_string())
        .await
        .unwrap();
    let deployment: Value = serde_json::from_str(
        &plane
            .kubectl(&[
                "get",
                "deployment",
                "-n",
                &ns,
                "cams-p2pcamera-router",
                "-o",
                "json",
            ])
            .await
            .unwrap(),
    )
    .unwrap();
    let (https_port, http_port) = (free_port().unwrap(), free_port().unwrap());
    let mut env = deployment_env(&deployment, "cams-p2pcamera-router-test");
    assert!(
        env.contains(&(
            "P2PCAMERA_ROUTER_TRUSTED_PROXIES".into(),
            "10.0.0.0/8,fd00::/8".into()
        )),
        "{env:?}"
    );
    env.retain(|(k, _)| {
        ![
            "P2PCAMERA_ROUTER_LISTEN",
            "P2PCAMERA_ROUTER_HTTP_LISTEN",
            "P2PCAMERA_ROUTER_METRICS_LISTEN",
        ]
        .contains(&k.as_str())
    });
    env.push((
        "P2PCAMERA_ROUTER_METRICS_LISTEN".into(),
        format!("127.0.0.1:{}", free_port().unwrap()),
    ));
    env.push((
        "P2PCAMERA_ROUTER_LISTEN".into(),
        format!("127.0.0.1:{https_port}"),
    ));
    env.push((
        "P2PCAMERA_ROUTER_HTTP_LISTEN".into(),
        format!("127.0.0.1:{http_port}"),
    ));
    let router_kubeconfig = work.path().join("router.kubeconfig");
    service_account_kubeconfig(plane, &ns, "cams-p2pcamera-router", &router_kubeconfig).await;
    let router_process = spawn_component(
        "router",
        &["router"],
        &env,
        &router_kubeconfig,
        &work.path().join("router.log"),
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    eventually("router ready with the chart's rights", WAIT, || async {
        if let Some(exit) = router_process.exited() {
            panic!("router exited ({exit}): {}", router_process.log_tail(30));
        }
        let response = https
            .get(format!("https://127.0.0.1:{https_port}/readyz"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let code = response.status();
        let body = response.text().await.unwrap_or_default();
        if code.is_success() {
            Ok(())
        } else {
            Err(format!("{code}: {body}"))
        }
    })
    .await
    .unwrap();
    let answer = eventually("router answers the ACME challenge", WAIT, || async {
        let url = format!("http://127.0.0.1:{http_port}/.well-known/acme-challenge/helm-token");
        let response = reqwest::get(url).await.map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(response.text().await.unwrap_or_default())
        } else {
            Err(response.status().to_string())
        }
    })
    .await
    .unwrap();
    assert_eq!(answer.trim(), "helm-token.key-authorization");
    assert!(
        forbidden_lines(&router_process).is_empty(),
        "router was refused: {:?}",
        forbidden_lines(&router_process)
    );
    router_process.stop();
    operator_process.stop();
}

/// With ACME on, the operator may read and change only the ACME objects it names, and
/// server-side apply (how it writes them, creating them the first time) works with those rights.
#[tokio::test]
async fn acme_rights_cover_only_the_named_objects() {
    let plane = ControlPlane::shared().await.unwrap();
    let client = plane.client().unwrap();
    let ns = plane.namespace("helm-acme").await.unwrap();
    let cameras = plane.namespace("helm-cameras").await.unwrap();
    let watch = format!("operator.watchNamespace={cameras}");
    let chart = chart_dir();
    let kubeconfig = plane.kubeconfig_path().to_str().unwrap().to_owned();
    let out = helm(&[
        "install",
        "tls",
        chart.to_str().unwrap(),
        "--namespace",
        &ns,
        "--kubeconfig",
        &kubeconfig,
        "--skip-crds",
        // One default class per cluster: the other install's.
        "--set",
        "defaultClass.create=false",
        "--set",
        "router.hosts={camera.example.com}",
        "--set",
        "acme.agreeTerms=true",
        "--set",
        "acme.directory=https://127.0.0.1:1/dir",
        "--set",
        &watch,
        "--set",
        "router.service.type=ClusterIP",
    ])
    .await;
    assert!(out.ok, "helm install failed: {}", out.stderr);
    assert!(
        out.stdout.contains("http://camera.example.com/"),
        "NOTES miss the ACME reachability hint:\n{}",
        out.stdout
    );
    let operator = service_account_user(&ns, "tls-p2pcamera-operator");
    assert_access(
        &client,
        "operator",
        &operator,
        &[
            access("get", "", "secrets", &ns, "p2pcamera-acme-account"),
            access("patch", "", "secrets", &ns, "p2pcamera-router-tls"),
            access("patch", "", "configmaps", &ns, "p2pcamera-acme-challenges"),
            access("get", "", "configmaps", &ns, "p2pcamera-acme-status"),
            access("create", "events.k8s.io", "events", &ns, ""),
            // Server-side apply creates each object the first time.
            access("create", "", "configmaps", &ns, ""),
            access("create", "", "secrets", &ns, ""),
            access("list", "p2pcamera.io", "camerasessions", &cameras, ""),
        ],
        &[
            access("patch", "", "secrets", &ns, "other"),
            access("get", "", "secrets", &ns, "other"),
            access("update", "", "secrets", &ns, "p2pcamera-router-tls"),
            access("patch", "", "configmaps", &ns, "other"),
            access("create", "", "configmaps", "default", ""),
            access("delete", "", "configmaps", &ns, "p2pcamera-acme-challenges"),
            // watchNamespace confines sessions, pods and secrets to that namespace.
            access("list", "p2pcamera.io", "camerasessions", "", ""),
            access("list", "p2pcamera.io", "camerasessions", &ns, ""),
            access("patch", "", "pods", &ns, "x"),
        ],
    )
    .await;
    let status = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "p2pcamera-acme-status", "namespace": ns},
        "data": {"conditions": "[]"},
    });
    let sa = format!("--as=system:serviceaccount:{ns}:tls-p2pcamera-operator");
    plane
        .kubectl_with_input(
            &[
                "apply",
                "--server-side",
                "--field-manager=p2pcamera-operator",
                &sa,
                "-f",
                "-",
            ],
            &status.to_string(),
        )
        .await
        .expect("server-side apply creates the status ConfigMap with the chart's rights");
}

// ---------------------------------------------------------------------------------------------
// Images and the configuration reference

/// `ENV` settings of a Dockerfile's final stage (`ENV KEY=VALUE ...`, one or more per line).
fn dockerfile_env(text: &str) -> Vec<(String, String)> {
    let last_stage = text.rfind("\nFROM ").map_or(text, |i| &text[i..]);
    let joined = last_stage.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .flat_map(|rest| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn help_text(binary: &str, args: &[&str]) -> String {
    let out = run(&workspace_binary(binary), args, "").await;
    assert!(out.ok, "{binary} {args:?}: {}", out.stderr);
    out.stdout
}

/// `--flag` names and `P2PCAMERA_*` variables listed in a `--help` text.
fn flags_and_env(help: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for word in
        help.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == ',' || c == '=')
    {
        let word = word.trim_end_matches(['.', ':']);
        if (word.starts_with("--")
            && word.len() > 2
            && word[2..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            || (word.starts_with("P2PCAMERA_")
                && word
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        {
            found.insert(word.to_string());
        }
    }
    found.remove("--help");
    found.remove("--version");
    found
}

#[tokio::test]
async fn camera_pod_image_sets_variables_camera_pod_reads() {
    let dockerfile = read("images/camera-pod.Dockerfile");
    let env = dockerfile_env(&dockerfile);
    let known = flags_and_env(&help_text("camera-pod", &["--help"]).await);
    let ours: Vec<_> = env
        .iter()
        .filter(|(k, _)| k.starts_with("P2PCAMERA_"))
        .collect();
    assert!(!ours.is_empty(), "the image sets no P2PCAMERA_ variable");
    for (key, _) in &ours {
        assert!(
            known.contains(key.as_str()),
            "the image sets {key}, which camera-pod does not read"
        );
    }
    let lib = env
        .iter()
        .find(|(k, _)| k == "P2PCAMERA_ONNXRUNTIME_LIB")
        .map(|(_, v)| v.clone())
        .expect("image sets P2PCAMERA_ONNXRUNTIME_LIB");
    let lib_dir = Path::new(&lib)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        dockerfile.contains(&lib_dir),
        "nothing in the image puts ONNX Runtime into {lib_dir}"
    );
    let file = Path::new(&lib).file_name().unwrap().to_str().unwrap();
    assert!(
        file.starts_with("libonnxruntime.so"),
        "{lib} is not the ONNX Runtime library"
    );
    // The model cache must sit on the writable volume the operator mounts (the root FS is read-only).
    let cache = env
        .iter()
        .find(|(k, _)| k == "P2PCAMERA_MODEL_CACHE_DIR")
        .map(|(_, v)| v.clone())
        .expect("image sets P2PCAMERA_MODEL_CACHE_DIR");
    let desired = read("operator/src/desired.rs");
    let mount = "/var/cache/p2pcamera";
    assert!(
        desired.contains(&format!("\"{mount}\"")),
        "the operator no longer mounts its cache volume at {mount}"
    );
    assert!(
        cache.starts_with(mount),
        "model cache {cache} is not under the operator's writable mount {mount}"
    );
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !["root", "0", "0:0"].contains(&user.trim()),
        "camera-pod runs as root"
    );
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/camera-pod\"]"),
        "entrypoint is not camera-pod"
    );
}

#[tokio::test]
async fn operator_image_runs_the_operator_as_non_root() {
    let dockerfile = read("images/operator.Dockerfile");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !["root", "0", "0:0"].contains(&user.trim()),
        "operator runs as root"
    );
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/operator\"]"),
        "entrypoint is not the operator"
    );
    // The chart runs both subcommands from this one image.
    let rendered = template("p2p", &[]).await;
    assert!(
        rendered.contains("args: [\"run\"]") && rendered.contains("args: [\"router\"]"),
        "{rendered}"
    );
}

#[tokio::test]
async fn configuration_reference_covers_every_flag_and_value() {
    let doc = read("docs/configuration.md");
    let mut missing = Vec::new();
    for (binary, args) in [
        ("camera-pod", vec!["--help"]),
        ("operator", vec!["--help"]),
        ("operator", vec!["run", "--help"]),
        ("operator", vec!["router", "--help"]),
    ] {
        for item in flags_and_env(&help_text(binary, &args).await) {
            if !doc.contains(&format!("`{item}`")) {
                missing.push(format!("{binary} {}: {item}", args.join(" ")));
            }
        }
    }
    // Every value path of the chart (`router.rateLimits.sessionRate`), leaves and sections alike.
    for (_, path) in chart_value_paths(&read("charts/p2pcamera/values.yaml")) {
        if !doc.contains(&format!("`{path}`")) {
            missing.push(format!("chart value {path}"));
        }
    }
    // Every field of the CRD's spec.
    let crd = read("crds/camerasessions.p2pcamera.io.yaml");
    for field in [
        "filter",
        "backgroundColor",
        "model",
        "manifest",
        "styleIndex",
        "className",
        "gpu",
        "idleTimeout",
        "image",
        "nodeSelector",
        "tolerations",
        "video",
        "codecs",
        "maxFps",
        "maxHeight",
        "maxWidth",
    ] {
        assert!(
            crd.contains(&format!("{field}:")),
            "CRD has no {field}: update this list"
        );
        if !doc.contains(&format!("`{field}`")) && !doc.contains(&format!(".{field}`")) {
            missing.push(format!("CRD field {field}"));
        }
    }
    let class_crd = read("crds/cameraclasses.p2pcamera.io.yaml");
    for field in [
        "allowedFilters",
        "allowedHosts",
        "allowedDigests",
        "ephemeralStorage",
        "modelCache",
        "maxDecodeWidth",
        "maxDecodeHeight",
    ] {
        assert!(
            class_crd.contains(&format!("{field}:")),
            "CameraClass CRD has no {field}: update this list"
        );
        if !doc.contains(&format!("`{field}`")) && !doc.contains(&format!(".{field}`")) {
            missing.push(format!("CameraClass field {field}"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not mention:\n{}",
        missing.join("\n")
    );
}
