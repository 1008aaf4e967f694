//! The binary: serves on the command line's address and exits 0 on SIGTERM; refuses plain HTTP
//! off loopback; with a GPU required (as the operator configures it) on a machine without one,
//! stays unready and says why.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p2pcamera_api::pod_env;

fn free_port() -> u16 {
    p2pcamera_tests::free_port().unwrap()
}

fn healthz(port: u16) -> bool {
    get(port, "/healthz").is_some_and(|response| response.starts_with("HTTP/1.1 200"))
}

/// The whole HTTP response (status line, headers, body) to `GET path`, if the server answers.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    Some(response)
}

/// Waits up to 30 s for `/healthz`; kills the child and panics (with its log, if any) when it
/// exits or never answers.
fn wait_for_healthz(child: &mut Child, port: u16, log: Option<&Path>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthz(port) {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            let log = log
                .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                .unwrap_or_default();
            panic!("camera-pod did not serve /healthz: {log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The child's exit status once it exits, or `None` (child killed) after `seconds`.
fn exit_within(child: &mut Child, seconds: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_stops_the_server_with_status_zero() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_camera-pod"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--filter",
            "passthrough",
            "--plain-http",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_healthz(&mut child, port, None);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = exit_within(&mut child, 15).expect("camera-pod did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn plain_http_off_loopback_is_a_clear_start_up_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_camera-pod"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--plain-http",
            "--filter",
            "passthrough",
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--plain-http is only allowed on a loopback address"),
        "{stderr}"
    );
}

#[test]
fn a_media_port_another_process_holds_is_a_clear_start_up_error() {
    let media_port = free_port();
    let _holder = std::net::UdpSocket::bind(("127.0.0.1", media_port)).unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    // Where a kubelet would read the termination message from.
    let termination_log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_camera-pod"))
        .args(["--filter", "passthrough", "--plain-http"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--udp-port", &media_port.to_string()])
        .arg("--termination-log")
        .arg(termination_log.path())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let status = exit_within(&mut child, 15);
    let stderr = std::fs::read_to_string(log.path()).unwrap();
    assert!(status.is_some_and(|s| !s.success()), "{status:?}: {stderr}");
    let expected = format!("the media UDP port 127.0.0.1:{media_port} is not available");
    assert!(stderr.contains(&expected), "{stderr}");
    let termination_message = std::fs::read_to_string(termination_log.path()).unwrap();
    assert!(
        termination_message.starts_with("camera-pod failed: ")
            && termination_message.contains(&expected),
        "{termination_message}"
    );
}

#[test]
fn a_required_gpu_that_is_missing_keeps_the_pod_unready_and_says_why() {
    let port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    // The environment the operator gives camera pods; this machine has no GPU.
    let mut child = Command::new(env!("CARGO_BIN_EXE_camera-pod"))
        .args(["--filter", "passthrough", "--plain-http"])
        .env(pod_env::LISTEN, format!("127.0.0.1:{port}"))
        .env(pod_env::REQUIRE_GPU, "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    wait_for_healthz(&mut child, port, Some(log.path()));
    // Passthrough is ready within milliseconds when allowed to be: give it ample time.
    let until = Instant::now() + Duration::from_secs(2);
    let mut readyz = String::new();
    while Instant::now() < until {
        readyz = get(port, "/readyz").unwrap_or_default();
        if !readyz.starts_with("HTTP/1.1 503") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let offer = get(port, "/status").unwrap_or_default();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = exit_within(&mut child, 15);
    let stderr = std::fs::read_to_string(log.path()).unwrap();

    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    assert!(readyz.contains(r#""status":"unready""#), "{readyz}");
    assert!(
        readyz
            .contains("a GPU is required (--require-gpu) but no GPU execution provider works here"),
        "{readyz}"
    );
    assert!(offer.starts_with("HTTP/1.1 503"), "{offer}");
    assert!(offer.contains("a GPU is required"), "{offer}");
    let error_line = stderr
        .lines()
        .find(|line| line.contains("ERROR") && line.contains("NOT READY: no GPU"));
    assert!(
        error_line.is_some(),
        "no error-level log line says why:\n{stderr}"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "SIGTERM still stops it: {stderr}"
    );
}
