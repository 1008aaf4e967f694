//! CameraClass against the real control plane: a session runs with what its class gives, a session
//! its class does not allow gets `Accepted=False` and no pod, an edit of a class does not
//! restart the cameras already running in it, and a class that relays runs only where the
//! operator has TURN URLs for its pods.
//!
//! Classes are cluster-scoped and every test binary shares one plane, so each test names its
//! classes after its namespace and none is marked as the default here (that would change the
//! class of every other test's sessions); the default class is covered by the unit tests of
//! `class_fit` and by the chart's install test.

mod common;

use std::time::Duration;

use common::{TestEnv, WAIT, classes, condition, create_class, delete_class, phase_is};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use p2pcamera_api::pod_env;
use p2pcamera_operator::crd::CameraSession;
use p2pcamera_tests::eventually;
use serde_json::json;

/// The session is not accepted for `reason`.
fn not_accepted(session: &CameraSession, reason: &str) -> Result<String, String> {
    phase_is(session, "Failed")?;
    match condition(session, "Accepted") {
        Some((status, why, message)) if status == "False" && why == reason => Ok(message),
        other => Err(format!("Accepted {other:?}")),
    }
}

fn env_of(pod: &Pod, name: &str) -> Option<String> {
    pod.spec.as_ref()?.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .value
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_its_class_does_not_allow_gets_no_pod_until_it_fits() {
    let env = TestEnv::new("class-misfit").await;
    env.add_node("gpu", 2, None).await;
    let class = create_class(
        &env,
        "blur-only",
        json!({"allowedFilters": ["selfie-blur"], "video": {"maxWidth": 1280}}),
    )
    .await;
    let _operator = env.start_operator("op", &[]);

    env.create_session(
        "styled",
        json!({"className": class, "filter": {"name": "style", "styleIndex": 2}}),
    )
    .await;
    let session = env
        .wait_session("styled", "Accepted=False FilterNotAllowed", |s| {
            not_accepted(s, "FilterNotAllowed")
        })
        .await;
    let (_, _, message) = condition(&session, "Accepted").unwrap();
    assert!(
        message.contains(&class) && message.contains("style"),
        "the condition names the class and the filter: {message}"
    );
    env.wait_event("styled", "Warning", "FilterNotAllowed")
        .await;
    // Nothing is created for it, not even after a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(env.pod_of("styled").await.is_none(), "a pod was created");

    // Asking for more video than the class gives is refused the same way.
    env.create_session(
        "wide",
        json!({"className": class, "video": {"maxWidth": 1920}}),
    )
    .await;
    env.wait_session("wide", "Accepted=False VideoOverClassLimit", |s| {
        not_accepted(s, "VideoOverClassLimit")
    })
    .await;

    // A session naming a class that does not exist waits for it.
    env.create_session("later", json!({"className": format!("{}-later", env.ns)}))
        .await;
    env.wait_session("later", "Accepted=False ClassNotFound", |s| {
        not_accepted(s, "ClassNotFound")
    })
    .await;
    let later = create_class(&env, "later", json!({})).await;
    env.wait_ready("later").await;

    // Fitting the class brings the session up, and the condition says so.
    env.sessions
        .patch(
            "styled",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"filter": {"name": "selfie-blur", "styleIndex": null}}}),
            ),
        )
        .await
        .unwrap();
    let ready = env.wait_ready("styled").await;
    assert_eq!(
        condition(&ready, "Accepted").map(|c| (c.0, c.1)),
        Some(("True".into(), "Accepted".into()))
    );
    delete_class(&env, &class).await;
    delete_class(&env, &later).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_gets_what_its_class_gives_and_a_class_edit_does_not_restart_it() {
    let env = TestEnv::new("class-pod").await;
    env.add_node("gpu", 2, None).await;
    let class = create_class(
        &env,
        "hd",
        json!({
            "image": "registry.invalid/camera-pod:hd",
            "gpu": {"count": 2},
            "resources": {"memory": "3Gi", "ephemeralStorage": "2Gi", "modelCache": "512Mi"},
            "models": {"allowedHosts": ["models.example"]},
            "video": {"maxWidth": 1280, "maxHeight": 720, "maxDecodeWidth": 1280, "maxDecodeHeight": 720},
        }),
    )
    .await;
    let _operator = env.start_operator("op", &[]);
    env.create_session(
        "cam",
        json!({"className": class, "video": {"maxWidth": 640}}),
    )
    .await;
    env.wait_ready("cam").await;
    let pod = env.pod_of("cam").await.expect("camera pod");
    let container = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("registry.invalid/camera-pod:hd")
    );
    let limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    assert_eq!(limits["nvidia.com/gpu"].0, "2");
    assert_eq!(limits["memory"].0, "3Gi");
    assert_eq!(limits["ephemeral-storage"].0, "2Gi");
    let cache = pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "cache");
    assert_eq!(
        cache
            .and_then(|v| v.empty_dir.as_ref()?.size_limit.clone())
            .map(|q| q.0),
        Some("512Mi".into())
    );
    // The session's own limit where it set one, the class's elsewhere.
    assert_eq!(env_of(&pod, pod_env::MAX_WIDTH).as_deref(), Some("640"));
    assert_eq!(env_of(&pod, pod_env::MAX_HEIGHT).as_deref(), Some("720"));
    assert_eq!(
        env_of(&pod, pod_env::MAX_DECODE_WIDTH).as_deref(),
        Some("1280")
    );
    assert_eq!(
        env_of(&pod, pod_env::MODEL_ALLOWED_HOSTS).as_deref(),
        Some("models.example")
    );
    assert_eq!(env_of(&pod, pod_env::RELAY_CANDIDATES), None, "no relay");

    // An administrator changes the class: the running camera keeps its pod.
    classes(&env)
        .patch(
            &class,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"image": "registry.invalid/camera-pod:hd2", "resources": {"memory": "4Gi"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = env.pod_of("cam").await.expect("camera pod");
    assert_eq!(
        after.uid(),
        pod.uid(),
        "a class edit replaced a running pod"
    );
    assert!(phase_is(&env.sessions.get("cam").await.unwrap(), "Ready").is_ok());

    // Taking the session's filter away from the class is not silent: the session is no longer
    // accepted and its pod goes.
    classes(&env)
        .patch(
            &class,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"allowedFilters": ["passthrough"]}})),
        )
        .await
        .unwrap();
    env.wait_session("cam", "Accepted=False after the class edit", |s| {
        not_accepted(s, "FilterNotAllowed")
    })
    .await;
    eventually("the pod of cam deleted", WAIT, || async {
        match env.pod_of("cam").await {
            Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
                Err("still there".to_string())
            }
            _ => Ok(()),
        }
    })
    .await
    .unwrap();
    delete_class(&env, &class).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relaying_class_runs_only_where_the_operator_has_a_turn_server_for_its_pods() {
    let env = TestEnv::new("class-relay").await;
    env.add_node("gpu", 1, None).await;
    let class = create_class(&env, "relayed", json!({"relay": "Only"})).await;
    // TURN URLs for browsers only: camera-pod relays over UDP.
    let operator = env.start_operator(
        "op",
        &[
            "--camera-pod-turn-urls",
            "turns:turn.example:443?transport=tcp",
        ],
    );
    env.create_session("cam", json!({"className": class})).await;
    let session = env
        .wait_session("cam", "Accepted=False RelayNotConfigured", |s| {
            not_accepted(s, "RelayNotConfigured")
        })
        .await;
    let (_, _, message) = condition(&session, "Accepted").unwrap();
    assert!(
        message.contains(&class) && message.contains("--camera-pod-turn-urls"),
        "the condition names the class and the flag: {message}"
    );
    env.wait_event("cam", "Warning", "RelayNotConfigured").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.pod_of("cam").await.is_none(), "a pod that cannot start");
    operator.stop().await;

    // Given a TURN server over UDP, the session runs and its pod relays through it.
    let turn = "turn:p2pcamera-turn.p2pcamera.svc:3478?transport=udp";
    let _operator = env.start_operator(
        "op",
        &[
            "--camera-pod-turn-urls",
            &format!("turns:turn.example:443?transport=tcp,{turn}"),
        ],
    );
    let ready = env.wait_ready("cam").await;
    assert_eq!(
        condition(&ready, "Accepted").map(|c| (c.0, c.1)),
        Some(("True".into(), "Accepted".into()))
    );
    let pod = env.pod_of("cam").await.expect("camera pod");
    assert_eq!(
        env_of(&pod, pod_env::RELAY_CANDIDATES).as_deref(),
        Some("only")
    );
    assert_eq!(env_of(&pod, pod_env::TURN_URLS).as_deref(), Some(turn));
    delete_class(&env, &class).await;
}
