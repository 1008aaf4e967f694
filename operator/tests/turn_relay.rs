//! TURN with real components: coturn (Debian's `turnserver`, started by the `TurnServer` fixture
//! with `use-auth-secret`) checks the credentials the router mints ([`ice`]), and an aiortc
//! camera (tests/e2e/aiortc_camera.py) in a network namespace whose firewall drops UDP gets
//! filtered (selfie-replace: green) video back from a real camera-pod through coturn over TCP and
//! over TLS, as does headless Chromium with p2pcamera.js over TCP and TLS (tests/e2e/browser.mjs), its
//! relayed candidate trickled after the offer (the relay 50 ms away), while the same camera with
//! UDP open connects directly.
//!
//! Needs coturn and nftables (tests/bin/install-prereqs.sh), the venv with aiortc
//! (`tests/peers/run.sh` makes it), `cargo build --workspace --bins` (camera-pod), Node with
//! tests/browser's playwright-core, Debian chromium and the cached ONNX Runtime library. The namespace tests need root and are skipped, saying so, without it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use p2pcamera_api::SessionKey;
use p2pcamera_operator::router::ice::{IceServers, TurnConfig};
use p2pcamera_tests::netns::NetworkNamespace;
use p2pcamera_tests::stats::percentile;
use p2pcamera_tests::turn::{TurnPorts, TurnServer};
use p2pcamera_tests::{ManagedProcess, binaries, eventually};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SECRET: &str = "p2pcamera-test-turn-secret";
/// Long enough for a loaded two-core machine to start camera-pod with its model.
const WAIT: Duration = Duration::from_secs(120);
/// Saturated-green share of the picture that proves selfie-replace ran (the camera has < 5 %).
const MIN_GREEN: f64 = 0.8;
/// Each namespace test runs a camera-pod with a model; two at once would starve each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ sits in the repository")
        .to_path_buf()
}

fn python() -> PathBuf {
    let python = binaries::cache_dir().join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: make the venv with tests/peers/run.sh (or tests/bin/install-prereqs.sh)",
        python.display()
    );
    python
}

/// The camera-pod binary next to this test's build output (`cargo build --workspace --bins`).
fn camera_pod_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory")
        .join("camera-pod");
    assert!(
        path.is_file(),
        "{} missing: build it with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

fn session() -> SessionKey {
    SessionKey::new("default", "cam")
}

/// The router's credentials for [`session`] from `secret`, for `urls`, as of `now`.
fn ice_servers(urls: &[String], secret: &str, now: SystemTime) -> IceServers {
    TurnConfig::new(
        urls.to_vec(),
        secret.as_bytes().to_vec(),
        Duration::from_secs(600),
    )
    .expect("valid TURN configuration")
    .ice_servers(&session(), now)
}

/// What coturn says to an allocation with this username and credential (tests/peers/turn_allocate.py).
async fn allocate(turn: &TurnServer, url: &str, username: &str, credential: &str) -> Value {
    let output = tokio::process::Command::new(python())
        .arg(repo_root().join("tests/peers/turn_allocate.py"))
        .args(["--url", url, "--username", username])
        .arg(format!("--credential={credential}"))
        .env("SSL_CERT_FILE", turn.ca_bundle_path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("turn_allocate.py finishes")
        .expect("turn_allocate.py runs");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "turn_allocate.py ({}): {e}\n{}{}\ncoturn:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            turn.log_tail(20)
        )
    })
}

/// coturn's `use-auth-secret` accepts what `ice.rs` mints over UDP, TCP and TLS, and refuses it
/// once expired, with the expiry changed, or signed with another secret: the HMAC scheme is
/// coturn's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_accepts_router_credentials_and_refuses_expired_or_forged_ones() {
    let turn = TurnServer::start(SECRET).await.expect("coturn starts");
    let urls = [turn.udp_url(), turn.tcp_url(), turn.tls_url()];
    let now = SystemTime::now();
    let minted = ice_servers(&urls, SECRET, now);
    let server = &minted.ice_servers[0];
    for url in &urls {
        let answer = allocate(&turn, url, &server.username, &server.credential).await;
        assert_eq!(
            answer["allocated"],
            true,
            "{url}: {answer}\n{}",
            turn.log_tail(20)
        );
        let port = answer["relayed"][1].as_u64().unwrap_or_default();
        assert!(
            turn.ports()
                .relay
                .contains(&u16::try_from(port).unwrap_or_default()),
            "{url}: relayed from {port}"
        );
    }

    let expired = ice_servers(&urls, SECRET, now - Duration::from_secs(3600));
    let forged = ice_servers(&urls, "not-the-secret", now);
    // A valid credential whose username claims a later expiry.
    let (expiry, rest) = server.username.split_once(':').expect("expiry:session");
    let extended = format!(
        "{}:{rest}",
        expiry.parse::<u64>().expect("numeric expiry") + 86_400
    );
    for (what, username, credential) in [
        (
            "expired",
            &expired.ice_servers[0].username,
            &expired.ice_servers[0].credential,
        ),
        (
            "forged",
            &forged.ice_servers[0].username,
            &forged.ice_servers[0].credential,
        ),
        ("extended", &extended, &server.credential),
    ] {
        for url in [turn.udp_url(), turn.tcp_url()] {
            let answer = allocate(&turn, &url, username.as_str(), credential.as_str()).await;
            assert_eq!(
                (&answer["allocated"], &answer["code"]),
                (&json!(false), &json!(401)),
                "{what} credential over {url}: {answer}"
            );
        }
    }
}

/// Media ports inside the namespace, where nothing else listens. The relay ports lie below the
/// namespace's ephemeral ports, so no client socket can have one.
const CAMERA_POD_HTTP: u16 = 7860;
const CAMERA_POD_UDP: u16 = 7000;
const RELAY_PORTS: std::ops::RangeInclusive<u16> = 20000..=20019;
const TOKEN: &str = "relay-test-token";
/// Where browser.mjs serves its page inside the namespace.
const PAGE_PORT: u16 = 8000;
/// The tests' filter: its green proves the video was filtered.
const SELFIE_REPLACE: &str = r##"{"filter":"selfie-replace","color":"#00ff00"}"##;
/// The benchmark's filter: it keeps the frame index stamped in the camera's picture readable.
const PASSTHROUGH: &str = r#"{"filter":"passthrough"}"#;
/// The namespace's firewall table.
const FIREWALL_TABLE: &str = "inet p2pcamera_turn_test";
/// How long browser.mjs's proxy holds TURN/TCP traffic each way: a relay 50 ms away, whose
/// allocation (two round trips and the TCP handshake) ends well after p2pcamera.js's offer (30 ms).
const TURN_DELAY_MS: &str = "25";

/// A network namespace with coturn and a camera-pod in it (selfie-replace unless said otherwise).
struct Lab {
    dir: tempfile::TempDir,
    // Dropped in this order: the servers, then the namespace's holder.
    camera_pod: ManagedProcess,
    turn: TurnServer,
    namespace: NetworkNamespace,
}

/// Whether an HTTP server on `address` answers `GET path` with 200 (blocking).
fn answers_ok(address: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response
            .lines()
            .next()
            .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"))
}

impl Lab {
    /// Returns `None` (the caller skips) where namespaces cannot be made.
    async fn start() -> Option<Self> {
        Self::start_with_filter(SELFIE_REPLACE).await
    }

    /// A lab whose camera-pod runs `filter` (camera-pod's `--filter` JSON).
    async fn start_with_filter(filter: &str) -> Option<Self> {
        if let Some(reason) = NetworkNamespace::unavailable() {
            eprintln!("SKIPPED: {reason}");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("p2pcamera-turn-lab-")
            .tempdir()
            .expect("temp dir");
        let namespace = NetworkNamespace::create(dir.path()).expect("network namespace");
        let turn = TurnServer::start_in(&namespace, SECRET, TurnPorts::standard(RELAY_PORTS))
            .await
            .expect("coturn starts in the namespace");
        let onnxruntime = std::env::var_os("P2PCAMERA_ONNXRUNTIME_LIB").unwrap_or_else(|| {
            binaries::cache_dir()
                .join("onnxruntime-1.32.0/libonnxruntime.so.1.32.0")
                .into()
        });
        let mut command = namespace.command(camera_pod_binary());
        command
            .args(["--listen", &format!("127.0.0.1:{CAMERA_POD_HTTP}")])
            .args(["--plain-http", "--token", TOKEN])
            .args(["--udp-port", &CAMERA_POD_UDP.to_string()])
            .args(["--filter", filter])
            .env("P2PCAMERA_ONNXRUNTIME_LIB", onnxruntime)
            .env("RUST_LOG", "info");
        let camera_pod =
            ManagedProcess::spawn("camera-pod", command, &dir.path().join("camera-pod.log"))
                .expect("camera-pod starts");
        let lab = Self {
            dir,
            camera_pod,
            turn,
            namespace,
        };
        let readyz = SocketAddr::from(([127, 0, 0, 1], CAMERA_POD_HTTP));
        eventually("camera-pod ready in the namespace", WAIT, || {
            let ready = lab
                .namespace
                .on_thread(move || answers_ok(readyz, "/readyz"));
            let exited = lab.camera_pod.exited();
            let log = lab.camera_pod.log_tail(20);
            async move {
                match (exited, ready) {
                    (Some(status), _) => Ok(Err(format!("camera-pod exited ({status}):\n{log}"))),
                    (None, Ok(true)) => Ok(Ok(())),
                    (None, Ok(false)) => Err("not ready".to_owned()),
                    (None, Err(error)) => Ok(Err(error.to_string())),
                }
            }
        })
        .await
        .expect("camera-pod readiness")
        .unwrap_or_else(|e| panic!("{e}"));
        Some(lab)
    }

    /// From now on UDP inside the namespace only flows to and from coturn's relay ports: the
    /// camera reaches neither camera-pod's media port nor coturn's UDP port, only TCP is open.
    fn drop_udp_except_relayed(&self) {
        self.set_udp_firewall(UdpFirewall::RelayOnly);
    }

    /// Replaces the namespace's firewall with `firewall` (its drop counter starts at zero).
    fn set_udp_firewall(&self, firewall: UdpFirewall) {
        self.namespace
            .apply_nftables(firewall.name(), &firewall.ruleset(self.turn.ports()))
            .expect("nftables rules load");
    }

    /// How many UDP packets the firewall dropped so far.
    fn dropped_udp_packets(&self) -> u64 {
        let output = self
            .namespace
            .command("nft")
            .args(["list", "table"])
            .args(FIREWALL_TABLE.split_whitespace())
            .output()
            .expect("nft runs");
        let text = String::from_utf8_lossy(&output.stdout);
        text.split_whitespace()
            .skip_while(|word| *word != "packets")
            .nth(1)
            .and_then(|count| count.parse().ok())
            .unwrap_or_default()
    }

    /// Starts an aiortc camera inside the namespace, offering to camera-pod with `servers`
    /// and waiting at most `first_frame` for video.
    fn camera(&self, what: &str, servers: &IceServers, first_frame: Duration) -> Camera {
        let mut command = self.namespace.command(python());
        command
            .arg(repo_root().join("tests/e2e/aiortc_camera.py"))
            .args([
                "--session-url",
                &format!("http://127.0.0.1:{CAMERA_POD_HTTP}"),
            ])
            .arg(format!("--token={TOKEN}"))
            .arg(format!("--timeout={}", first_frame.as_secs_f64()))
            .arg(format!(
                "--ice-servers={}",
                serde_json::to_string(servers).expect("JSON")
            ));
        self.spawn(what, command)
    }

    /// Starts headless Chromium inside the namespace with p2pcamera.js from camera-pod
    /// (tests/e2e/browser.mjs), given `servers` and browser.mjs's `options`.
    fn browser(&self, what: &str, servers: &IceServers, options: &[&str]) -> Camera {
        let mut command = self.namespace.command("node");
        command
            .arg(repo_root().join("tests/e2e/browser.mjs"))
            .args(["--router", &format!("http://127.0.0.1:{CAMERA_POD_HTTP}")])
            .args(["--session", "", "--token", TOKEN])
            .args(["--page-origin", &format!("http://127.0.0.1:{PAGE_PORT}")])
            .args(["--artifact", &format!("turn-relay-{what}")])
            .arg(format!(
                "--ice-servers={}",
                serde_json::to_string(servers).expect("JSON")
            ))
            .args(options)
            .current_dir(repo_root());
        self.spawn(what, command)
    }

    fn spawn(&self, what: &str, mut command: std::process::Command) -> Camera {
        command.env("SSL_CERT_FILE", self.turn.ca_bundle_path());
        let log = self.dir.path().join(format!("{what}.log"));
        let mut child = tokio::process::Command::from(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("client log"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Camera {
            what: what.to_owned(),
            child,
            stdin,
            lines,
            log,
        }
    }

    /// The logs that explain a failed camera: its own, coturn's and camera-pod's.
    fn logs(&self, camera: &Camera) -> String {
        format!(
            "{}\nclient log:\n{}\ncoturn:\n{}\ncamera-pod:\n{}",
            camera.what,
            std::fs::read_to_string(&camera.log).unwrap_or_default(),
            self.turn.log_tail(20),
            self.camera_pod.log_tail(20)
        )
    }

    /// A camera with `servers` that must get filtered video: its `connected` report (with
    /// `path`) and the frames of the next three seconds.
    async fn filtered_video(&self, what: &str, servers: &IceServers) -> (Value, Value) {
        let mut camera = self.camera(what, servers, WAIT);
        let connected = camera.report().await;
        assert_eq!(
            connected["event"],
            "connected",
            "{connected}\n{}",
            self.logs(&camera)
        );
        camera.send("window 3").await;
        let window = camera.report().await;
        assert_eq!(
            window["event"],
            "window",
            "{window}\n{}",
            self.logs(&camera)
        );
        camera.close().await;
        let green = |report: &Value| report["green"].as_f64().unwrap_or_default();
        assert!(
            green(&connected) >= MIN_GREEN,
            "{what}: not filtered: {connected}"
        );
        assert!(
            window["frames"].as_u64().unwrap_or_default() >= 15 && green(&window) >= MIN_GREEN,
            "{what}: {window}"
        );
        (connected, window)
    }
}

/// What UDP the namespace's firewall lets through (TCP always flows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UdpFirewall {
    /// All of it: no firewall.
    Open,
    /// Only to and from coturn's listening port and relay ports: the camera reaches coturn over
    /// UDP, coturn's relay reaches camera-pod's media port, the camera's own packets to that port
    /// are dropped. TURN/UDP or nothing.
    TurnOnly,
    /// Only to and from coturn's relay ports: TURN over TCP or TLS or nothing.
    RelayOnly,
}

impl UdpFirewall {
    /// The name of its ruleset file.
    fn name(self) -> &'static str {
        match self {
            Self::Open => "udp-open",
            Self::TurnOnly => "udp-turn-only",
            Self::RelayOnly => "drop-udp",
        }
    }

    /// An `nft -f` ruleset that replaces the namespace's [`FIREWALL_TABLE`] with this firewall:
    /// one counted rule that drops every UDP packet with neither port among the allowed ones.
    fn ruleset(self, turn: &TurnPorts) -> String {
        let relay = format!("{}-{}", turn.relay.start(), turn.relay.end());
        let allowed = match self {
            Self::Open => None,
            Self::TurnOnly => Some(format!("{{ {}, {relay} }}", turn.listening)),
            Self::RelayOnly => Some(relay),
        };
        // Declaring the table first makes the delete succeed on a namespace without it.
        let mut ruleset = format!("table {FIREWALL_TABLE} {{}}\ndelete table {FIREWALL_TABLE}\n");
        if let Some(allowed) = allowed {
            ruleset.push_str(&format!(
                "table {FIREWALL_TABLE} {{\n\
                   chain input {{\n\
                     type filter hook input priority filter; policy accept;\n\
                     meta l4proto udp udp sport != {allowed} udp dport != {allowed} counter drop\n\
                   }}\n\
                 }}\n"
            ));
        }
        ruleset
    }
}

/// An aiortc camera process (tests/e2e/aiortc_camera.py) that reports JSON lines.
struct Camera {
    what: String,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    log: PathBuf,
}

impl Camera {
    /// The next report (`Null` when none came within [`WAIT`]).
    async fn report(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => serde_json::from_str(&line).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    async fn send(&mut self, command: &str) {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{}: writing a command: {e}", self.what));
    }

    /// Closes the connection and waits for the process (killed if it does not end).
    async fn close(mut self) {
        // A camera that gave up has exited already: nothing reads the command then.
        let _ = self.stdin.write_all(b"close\n").await;
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// With UDP open, a camera that was also given a TURN server connects directly: no relay when
/// none is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_udp_open_a_camera_given_turn_still_connects_directly() {
    let _serial = SERIAL.lock().await;
    let Some(lab) = Lab::start().await else {
        return;
    };
    let servers = ice_servers(&[lab.turn.tcp_url()], SECRET, SystemTime::now());
    let (connected, _) = lab.filtered_video("direct", &servers).await;
    assert_eq!(
        connected["path"],
        json!({"local": "host", "remote": "host", "protocol": "udp"}),
        "{connected}"
    );
}

/// With only TCP open, a camera gets filtered video back through coturn, over TCP and over TLS,
/// and says so; the firewall did drop its direct attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_udp_a_camera_is_relayed_over_turn_tcp_and_tls() {
    let _serial = SERIAL.lock().await;
    let Some(lab) = Lab::start().await else {
        return;
    };
    lab.drop_udp_except_relayed();
    for (what, url, protocol) in [
        ("turn-tcp", lab.turn.tcp_url(), "tcp"),
        ("turn-tls", lab.turn.tls_url(), "tls"),
    ] {
        let dropped_before = lab.dropped_udp_packets();
        let servers = ice_servers(&[url], SECRET, SystemTime::now());
        let (connected, _) = lab.filtered_video(what, &servers).await;
        assert_eq!(
            connected["path"],
            json!({"local": "relay", "remote": "host", "protocol": protocol}),
            "{what}: {connected}"
        );
        assert!(
            lab.dropped_udp_packets() > dropped_before,
            "{what}: the firewall dropped no direct UDP, so the test proves nothing"
        );
    }
    // Headless Chromium with p2pcamera.js: relayed over TURN/TCP and TURN/TLS, and says so in
    // P2PCamera.path. The relay is 50 ms away, so its candidate comes after the offer went out:
    // trickled.
    for (what, url, protocol) in [
        ("chromium-turn-tcp", lab.turn.tcp_url(), "tcp"),
        ("chromium-turn-tls", lab.turn.tls_url(), "tls"),
    ] {
        let servers = ice_servers(&[url], SECRET, SystemTime::now());
        let mut browser = lab.browser(what, &servers, &["--turn-delay-ms", TURN_DELAY_MS]);
        let connected = browser.report().await;
        assert_eq!(
            connected["event"],
            "connected",
            "{what}: {connected}\n{}",
            lab.logs(&browser)
        );
        assert!(
            connected["green"].as_f64().unwrap_or_default() >= 0.5,
            "{what}: not filtered: {connected}"
        );
        assert_eq!(
            (&connected["path"]["local"], &connected["path"]["protocol"]),
            (&json!("relay"), &json!(protocol)),
            "{what}: {connected}"
        );
        let trickle = TrickleReport::of(&connected);
        assert!(
            trickle.offered_host > 0 && trickle.offered_relay == 0,
            "{what}: the offer must leave with host candidates, before the relay's: {connected}"
        );
        assert!(
            trickle.trickled_relay_accepted > 0,
            "{what}: no relayed candidate trickled and taken (204) by camera-pod: {connected}\n{}",
            lab.logs(&browser)
        );
        browser.close().await;
    }
    // Without a TURN server the same camera gets no video at all: UDP is really closed. (The
    // browser's connection holds the camera until camera-pod sees it gone: 409 until then.)
    let (report, logs) = eventually("camera-pod free for another camera", WAIT, || async {
        let mut camera = lab.camera("no-turn", &IceServers::default(), Duration::from_secs(10));
        let report = camera.report().await;
        let logs = lab.logs(&camera);
        camera.close().await;
        if report["status"] == 409 {
            Err(report.to_string())
        } else {
            Ok((report, logs))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (&report["event"], &report["body"]["error"]),
        (&json!("error"), &json!("no frame came back")),
        "an answered offer must get no video without a relay: {report}\n{logs}"
    );
}

/// What a browser.mjs `connected` report says of trickle ICE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TrickleReport {
    /// Host and relayed candidates in the offer.
    offered_host: usize,
    offered_relay: usize,
    /// Candidates posted to `/candidates`, and the relayed ones among them camera-pod answered 204.
    trickled: usize,
    trickled_relay_accepted: usize,
}

impl TrickleReport {
    fn of(connected: &Value) -> Self {
        let types = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .map(|types| {
                    types
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let count = |types: &[String], wanted: &str| types.iter().filter(|t| *t == wanted).count();
        let offered = types(&connected["offer_candidates"]);
        let requests = connected["trickled"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Self {
            offered_host: count(&offered, "host"),
            offered_relay: count(&offered, "relay"),
            trickled: requests
                .iter()
                .map(|request| types(&request["candidates"]).len())
                .sum(),
            trickled_relay_accepted: requests
                .iter()
                .filter(|request| request["status"] == 204)
                .map(|request| count(&types(&request["candidates"]), "relay"))
                .sum(),
        }
    }
}

/// One way the benchmark's camera reaches camera-pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaPath {
    /// UDP open, no ICE servers.
    Direct,
    /// UDP open, given TURN/UDP: it gathers a relayed candidate it does not use.
    DirectTurnOffered,
    /// Direct UDP dropped, TURN/UDP to coturn.
    TurnUdp,
    /// All UDP but the relay's dropped, TURN over TCP.
    TurnTcp,
    /// All UDP but the relay's dropped, TURN over TLS.
    TurnTls,
}

impl MediaPath {
    /// In the order each round connects.
    const ALL: [Self; 5] = [
        Self::Direct,
        Self::DirectTurnOffered,
        Self::TurnUdp,
        Self::TurnTcp,
        Self::TurnTls,
    ];

    /// Its name in logs' file names.
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::DirectTurnOffered => "direct-turn-offered",
            Self::TurnUdp => "turn-udp",
            Self::TurnTcp => "turn-tcp",
            Self::TurnTls => "turn-tls",
        }
    }

    /// Its name in the table.
    fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::DirectTurnOffered => "direct, TURN/UDP offered",
            Self::TurnUdp => "TURN/UDP",
            Self::TurnTcp => "TURN/TCP",
            Self::TurnTls => "TURN/TLS",
        }
    }

    /// The TURN URL the camera is given, if any.
    fn turn_url(self, turn: &TurnServer) -> Option<String> {
        match self {
            Self::Direct => None,
            Self::DirectTurnOffered | Self::TurnUdp => Some(turn.udp_url()),
            Self::TurnTcp => Some(turn.tcp_url()),
            Self::TurnTls => Some(turn.tls_url()),
        }
    }

    fn firewall(self) -> UdpFirewall {
        match self {
            Self::Direct | Self::DirectTurnOffered => UdpFirewall::Open,
            Self::TurnUdp => UdpFirewall::TurnOnly,
            Self::TurnTcp | Self::TurnTls => UdpFirewall::RelayOnly,
        }
    }

    /// The candidate pair the camera must report having taken.
    fn expected_path(self) -> Value {
        let (local, protocol) = match self {
            Self::Direct | Self::DirectTurnOffered => ("host", "udp"),
            Self::TurnUdp => ("relay", "udp"),
            Self::TurnTcp => ("relay", "tcp"),
            Self::TurnTls => ("relay", "tls"),
        };
        json!({"local": local, "remote": "host", "protocol": protocol})
    }
}

/// One benchmark connect's timings (seconds) and its firewall's drops.
#[derive(Debug, Clone, Copy)]
struct ConnectTimings {
    /// Offer started to offer posted: candidate gathering, a TURN allocation included.
    gather: f64,
    /// Offer started to answer received.
    offer: f64,
    /// Answer received to ICE connected.
    ice: f64,
    /// Offer started to the first filtered frame back.
    first_frame: f64,
    /// Median and 95th percentile round trip of the frames of the 3 s window.
    round_trip_p50: f64,
    round_trip_p95: f64,
    /// UDP packets the firewall dropped during the connect.
    dropped_udp: u64,
}

/// A report's number at `pointer` (JSON pointer); panics naming the report when it is missing.
fn seconds(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer}: {report}"))
}

impl Lab {
    /// A camera given `servers` that got a first frame back, with its `connected` report; a
    /// camera-pod still busy with the previous camera (409) is asked again.
    async fn connected_camera(&self, what: &str, servers: &IceServers) -> (Camera, Value) {
        eventually("camera-pod free for another camera", WAIT, || async {
            let mut camera = self.camera(what, servers, WAIT);
            let report = camera.report().await;
            if report["status"] == 409 {
                camera.close().await;
                return Err(report.to_string());
            }
            assert_eq!(
                report["event"],
                "connected",
                "{report}\n{}",
                self.logs(&camera)
            );
            Ok((camera, report))
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// One benchmark connect over `path`: fails unless the camera took that path (and, behind a
    /// firewall, the firewall dropped its direct UDP) and read frame indices back.
    async fn timed_connect(&self, path: MediaPath) -> ConnectTimings {
        let what = path.name();
        self.set_udp_firewall(path.firewall());
        let servers = path
            .turn_url(&self.turn)
            .map(|url| ice_servers(&[url], SECRET, SystemTime::now()))
            .unwrap_or_default();
        let (mut camera, connected) = self.connected_camera(what, &servers).await;
        assert_eq!(
            connected["path"],
            path.expected_path(),
            "{what}: took another path: {connected}\n{}",
            self.logs(&camera)
        );
        camera.send("window 3").await;
        let window = camera.report().await;
        let logs = self.logs(&camera);
        camera.close().await;
        assert!(
            window["round_trip_ms"]["frames"]
                .as_u64()
                .unwrap_or_default()
                >= 15,
            "{what}: too few frames came back with their index: {window}\n{logs}"
        );
        let dropped_udp = self.dropped_udp_packets();
        assert!(
            path.firewall() == UdpFirewall::Open || dropped_udp > 0,
            "{what}: the firewall dropped no direct UDP, so the path proves nothing"
        );
        ConnectTimings {
            gather: seconds(&connected, "/gather_s"),
            offer: seconds(&connected, "/offer_s"),
            ice: seconds(&connected, "/ice_s"),
            first_frame: seconds(&connected, "/offer_s") + seconds(&connected, "/first_frame_s"),
            round_trip_p50: seconds(&window, "/round_trip_ms/p50") / 1000.0,
            round_trip_p95: seconds(&window, "/round_trip_ms/p95") / 1000.0,
            dropped_udp,
        }
    }
}

/// A benchmark's rounds (`P2PCAMERA_BENCH_CONNECTS`, default 5) and its lab, with a passthrough
/// camera-pod (the frame index stays readable).
async fn bench_lab() -> (usize, Lab) {
    let rounds = std::env::var("P2PCAMERA_BENCH_CONNECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let Some(lab) = Lab::start_with_filter(PASSTHROUGH).await else {
        panic!("the benchmark needs a network namespace");
    };
    (rounds, lab)
}

/// Direct and relayed paths side by side in one run (`bench/turn-paths.sh`; numbers in
/// docs/benchmarks.md): `P2PCAMERA_BENCH_CONNECTS` rounds (default 5), each connecting an aiortc
/// camera to a passthrough camera-pod once over every [`MediaPath`], so drift hits all alike.
/// Prints a Markdown table: gathering, offer to answer, ICE, offer to first filtered frame and
/// round trip (frame index read back from the picture) per path, and the ratios to direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/turn-paths.sh"]
async fn bench_direct_and_relayed_paths() {
    let _serial = SERIAL.lock().await;
    let (rounds, lab) = bench_lab().await;
    let mut runs: Vec<Vec<ConnectTimings>> = vec![Vec::new(); MediaPath::ALL.len()];
    for _ in 0..rounds {
        for (path, timings) in MediaPath::ALL.into_iter().zip(&mut runs) {
            timings.push(lab.timed_connect(path).await);
        }
    }
    let ms = |timings: &[ConnectTimings], field: fn(&ConnectTimings) -> f64, p: f64| {
        1000.0 * percentile(&timings.iter().map(field).collect::<Vec<_>>(), p)
    };
    let direct_first_frame = ms(&runs[0], |t| t.first_frame, 50.0);
    let direct_round_trip = ms(&runs[0], |t| t.round_trip_p50, 50.0);
    println!(
        "| path | connects | selected pair | UDP dropped per connect | gathering p50 (ms) | offer to answer p50 (ms) | ICE connect p50 (ms) | offer to first filtered frame p50 / p90 (ms) | round trip p50 / p95 (ms) | first frame p50 / direct | round trip p50 / direct |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (path, timings) in MediaPath::ALL.into_iter().zip(&runs) {
        let expected = path.expected_path();
        let first_frame = ms(timings, |t| t.first_frame, 50.0);
        let round_trip = ms(timings, |t| t.round_trip_p50, 50.0);
        println!(
            "| {} | {} | {}/{} over {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2}x | {:.2}x |",
            path.label(),
            timings.len(),
            expected["local"].as_str().unwrap_or_default(),
            expected["remote"].as_str().unwrap_or_default(),
            expected["protocol"].as_str().unwrap_or_default(),
            percentile(
                &timings
                    .iter()
                    .map(|t| t.dropped_udp as f64)
                    .collect::<Vec<_>>(),
                50.0
            ),
            ms(timings, |t| t.gather, 50.0),
            ms(timings, |t| t.offer, 50.0),
            ms(timings, |t| t.ice, 50.0),
            first_frame,
            ms(timings, |t| t.first_frame, 90.0),
            round_trip,
            ms(timings, |t| t.round_trip_p95, 50.0),
            first_frame / direct_first_frame,
            round_trip / direct_round_trip,
        );
    }
    println!(
        "\nRound trip: per connect the p50 and p95 of the frames of a 3 s window; the table gives the median of each over the connects."
    );
}

/// Chromium's offer to first filtered frame with trickle ICE on and off, given a TURN/TCP server
/// 50 ms away (browser.mjs's delaying proxy: 25 ms each way), on a direct path (UDP open) and on a
/// relayed one (all UDP but the relay's dropped), in one run (`bench/turn-paths.sh`; numbers in
/// docs/benchmarks.md). One Chromium, one page: every connect is a new `getUserMedia` whose
/// connection replaces the last one; `P2PCAMERA_BENCH_CONNECTS` rounds (default 5), each
/// connecting once per path and setting, trickle on and off in alternating order. Prints a Markdown
/// table with the p50 per path and setting and the ratio of trickle off to on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/turn-paths.sh"]
async fn bench_chromium_trickle_with_a_distant_turn_server() {
    let _serial = SERIAL.lock().await;
    let (rounds, lab) = bench_lab().await;
    let paths = [
        (
            "direct, TURN/TCP offered",
            UdpFirewall::Open,
            json!({"local": "host", "remote": "host", "protocol": "udp"}),
        ),
        (
            "TURN/TCP",
            UdpFirewall::RelayOnly,
            json!({"local": "relay", "remote": "host", "protocol": "tcp"}),
        ),
    ];
    let servers = ice_servers(&[lab.turn.tcp_url()], SECRET, SystemTime::now());
    let mut browser = lab.browser(
        "bench-trickle",
        &servers,
        &["--turn-delay-ms", TURN_DELAY_MS, "--passthrough"],
    );
    // The page's own first connection starts Chromium's media stack: not measured.
    let warm_up = browser.report().await;
    assert_eq!(
        warm_up["event"],
        "connected",
        "{warm_up}\n{}",
        lab.logs(&browser)
    );
    // Per path, per setting (trickle on, off): first frame (ms) and what went how.
    let mut runs: Vec<[Vec<(f64, TrickleReport)>; 2]> = vec![[Vec::new(), Vec::new()]; paths.len()];
    for round in 0..rounds {
        for ((what, firewall, expected), runs) in paths.iter().zip(&mut runs) {
            lab.set_udp_firewall(*firewall);
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for setting in order {
                let trickle = setting == 0;
                browser
                    .send(&format!("connect {}", json!({ "trickle": trickle })))
                    .await;
                let connected = browser.report().await;
                assert_eq!(
                    (&connected["event"], &connected["path"]),
                    (&json!("connected"), expected),
                    "{what}, trickle {trickle}: {connected}\n{}",
                    lab.logs(&browser)
                );
                let report = TrickleReport::of(&connected);
                assert!(
                    trickle || report.trickled == 0,
                    "{what}: trickled with trickle off: {connected}"
                );
                runs[setting].push((seconds(&connected, "/first_frame_ms"), report));
            }
        }
    }
    browser.close().await;
    println!(
        "| path | trickle | connects | relayed candidates in the offer / trickled and taken (per connect, p50) | offer to first filtered frame p50 / p90 (ms) | trickle off / on (p50) |"
    );
    println!("|---|---|---|---|---|---|");
    for ((what, _, expected), runs) in paths.iter().zip(&runs) {
        let p50 = |runs: &[(f64, TrickleReport)], p: f64| {
            percentile(&runs.iter().map(|(ms, _)| *ms).collect::<Vec<_>>(), p)
        };
        let ratio = p50(&runs[1], 50.0) / p50(&runs[0], 50.0);
        for (setting, runs) in ["on", "off"].into_iter().zip(runs) {
            let median = |field: fn(&TrickleReport) -> usize| {
                percentile(
                    &runs
                        .iter()
                        .map(|(_, r)| field(r) as f64)
                        .collect::<Vec<_>>(),
                    50.0,
                )
            };
            println!(
                "| {what} ({}/{} over {}) | {setting} | {} | {:.0} / {:.0} | {:.1} / {:.1} | {} |",
                expected["local"].as_str().unwrap_or_default(),
                expected["remote"].as_str().unwrap_or_default(),
                expected["protocol"].as_str().unwrap_or_default(),
                runs.len(),
                median(|r| r.offered_relay),
                median(|r| r.trickled_relay_accepted),
                p50(runs, 50.0),
                p50(runs, 90.0),
                if setting == "off" {
                    format!("{ratio:.2}x")
                } else {
                    String::new()
                },
            );
        }
    }
    println!(
        "\nOffer to first filtered frame: p2pcamera:connecting to p2pcamera:connected in the page (the peer connection made, gathering, the offer, the answer, ICE, DTLS and the first frame back through a passthrough camera-pod); TURN/TCP server 50 ms away (25 ms each way through browser.mjs's proxy)."
    );
}
