//! Idle sessions against a real camera-pod: the operator polls the pod's `/status` (bearer token
//! and TLS certificate from the session Secret), deletes the pod after `idleTimeout` without a
//! camera, keeps the Secret and port, and brings the pod back on the wake annotation.
//!
//! kwok plays the kubelet, so the camera-pod process is started here on the pod's host IP
//! (127.0.0.1) and port, with the pod's own token and certificate.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{TestEnv, WAIT, condition, phase_is};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use p2pcamera_api::objects::{
    ANNOTATION_WAKE, SECRET_TLS_CERT, SECRET_TLS_KEY, SECRET_TOKEN, child_name,
};
use p2pcamera_tests::{FIRST_FIXTURE_PORT, ManagedProcess, eventually};
use serde_json::json;

/// The camera-pod binary next to this test's build output (`cargo test --workspace` builds it).
fn camera_pod_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile directory");
    let path = dir.join("camera-pod");
    assert!(
        path.is_file(),
        "{} missing: build it with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_without_a_camera_goes_idle_and_wakes_on_request() {
    let env = TestEnv::new("session-idle").await;
    env.add_node("gpu", 1, None).await;
    // A real camera-pod binds the session's port, so the range lies below the ports fixtures
    // and outgoing connections take.
    const PORT_RANGE: (u16, u16) = (15100, 15199);
    const _: () = assert!(PORT_RANGE.1 < FIRST_FIXTURE_PORT);
    let port_range = format!("{}-{}", PORT_RANGE.0, PORT_RANGE.1);
    let _operator = env.start_operator(
        "op-a",
        &["--idle-poll-interval", "1s", "--port-range", &port_range],
    );
    env.create_session(
        "cam",
        json!({"filter": {"name": "passthrough"}, "idleTimeout": "4s"}),
    )
    .await;
    let ready = env.wait_ready("cam").await;
    let port = ready
        .status
        .as_ref()
        .and_then(|s| s.udp_port)
        .expect("port");
    let pod = env.pod_of("cam").await.expect("pod");

    let secret = Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .get(&child_name("cam"))
        .await
        .unwrap();
    let data = secret.data.expect("secret data");
    let dir = tempfile::tempdir().unwrap();
    for key in [SECRET_TOKEN, SECRET_TLS_CERT, SECRET_TLS_KEY] {
        std::fs::write(dir.path().join(key), &data.get(key).expect("secret key").0).unwrap();
    }
    let mut command = Command::new(camera_pod_binary());
    command
        .env("P2PCAMERA_LISTEN", format!("127.0.0.1:{port}"))
        .env("P2PCAMERA_UDP_PORT", port.to_string())
        .env("P2PCAMERA_PUBLIC_IP", "127.0.0.1")
        .env("P2PCAMERA_FILTER", "passthrough")
        .env("P2PCAMERA_TOKEN_FILE", dir.path().join(SECRET_TOKEN))
        .env("P2PCAMERA_TLS_CERT", dir.path().join(SECRET_TLS_CERT))
        .env("P2PCAMERA_TLS_KEY", dir.path().join(SECRET_TLS_KEY));
    let camera_pod =
        ManagedProcess::spawn("camera-pod", command, &dir.path().join("camera-pod.log")).unwrap();

    let idle = eventually("session Idle", WAIT, || async {
        if let Some(status) = camera_pod.exited() {
            return Err(format!(
                "camera-pod exited ({status}): {}",
                camera_pod.log_tail(20)
            ));
        }
        let session = env.sessions.get("cam").await.map_err(|e| e.to_string())?;
        phase_is(&session, "Idle").map(|_| session)
    })
    .await
    .unwrap();
    let (status, reason, _) = condition(&idle, "Idle").expect("Idle condition");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "IdleTimeout"));
    assert_eq!(
        idle.status.as_ref().and_then(|s| s.udp_port),
        Some(port),
        "idle session gave up its port"
    );
    eventually("idle pod deleted", WAIT, || async {
        match env.pod_of("cam").await {
            None => Ok(()),
            Some(p) => Err(format!("pod {} still there", p.name_any())),
        }
    })
    .await
    .unwrap();
    // The deletion's own reconciles must not bring the pod back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        env.pod_of("cam").await.is_none(),
        "an idle session got a new pod"
    );
    let still = env.sessions.get("cam").await.unwrap();
    assert!(phase_is(&still, "Idle").is_ok(), "{:?}", still.status);
    assert!(
        Api::<Secret>::namespaced(env.client.clone(), &env.ns)
            .get_opt(&child_name("cam"))
            .await
            .unwrap()
            .is_some(),
        "idle session lost its token"
    );
    camera_pod.stop();

    let wake = json!({"metadata": {"annotations": {ANNOTATION_WAKE: "now"}}});
    env.sessions
        .patch("cam", &PatchParams::default(), &Patch::Merge(&wake))
        .await
        .unwrap();
    let woken = env.wait_ready("cam").await;
    assert_eq!(woken.status.and_then(|s| s.udp_port), Some(port));
    assert_ne!(
        env.pod_of("cam").await.unwrap().uid(),
        pod.uid(),
        "no new pod after waking"
    );
}
