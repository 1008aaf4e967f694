//! TURN with real components: coturn (Debian's `turnserver`, started by the `TurnServer` fixture
//! with `use-auth-secret`) checks the credentials the router mints ([`ice`]), and an aiortc
//! camera (tests/e2e/aiortc_camera.py) in a network namespace whose firewall drops UDP gets
//! filtered (selfie-replace: green) video back from a real camera-pod through coturn over TCP and
//! over TLS, as does headless Chromium with p2pcamera.js over TCP (tests/e2e/browser.mjs), while
//! the same camera with UDP open connects directly.
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

/// A network namespace with coturn and a selfie-replace camera-pod in it.
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
            .args([
                "--filter",
                r##"{"filter":"selfie-replace","color":"#00ff00"}"##,
            ])
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
        let (first, last) = (RELAY_PORTS.start(), RELAY_PORTS.end());
        self.namespace
            .apply_nftables(
                "drop-udp",
                &format!(
                    "table inet p2pcamera_turn_test {{\n\
                       chain input {{\n\
                         type filter hook input priority filter; policy accept;\n\
                         meta l4proto udp udp sport != {first}-{last} udp dport != {first}-{last} counter drop\n\
                       }}\n\
                     }}\n"
                ),
            )
            .expect("nftables rules load");
    }

    /// How many UDP packets the firewall dropped so far.
    fn dropped_udp_packets(&self) -> u64 {
        let output = self
            .namespace
            .command("nft")
            .args(["list", "table", "inet", "p2pcamera_turn_test"])
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
    /// (tests/e2e/browser.mjs), given `servers`.
    fn browser(&self, what: &str, servers: &IceServers) -> Camera {
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
    // Headless Chromium with p2pcamera.js: relayed over TURN/TCP, and says so in P2PCamera.path.
    let servers = ice_servers(&[lab.turn.tcp_url()], SECRET, SystemTime::now());
    let mut browser = lab.browser("chromium-turn-tcp", &servers);
    let connected = browser.report().await;
    assert_eq!(
        connected["event"],
        "connected",
        "{connected}\n{}",
        lab.logs(&browser)
    );
    assert!(
        connected["green"].as_f64().unwrap_or_default() >= 0.5,
        "not filtered: {connected}"
    );
    assert_eq!(
        (&connected["path"]["local"], &connected["path"]["protocol"]),
        (&json!("relay"), &json!("tcp")),
        "{connected}"
    );
    browser.close().await;
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
