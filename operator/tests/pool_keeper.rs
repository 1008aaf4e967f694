//! Warm pools against the real control plane with kwok's fake GPU nodes: the pool fills to
//! `minIdle` with pods owned by the class (each with its own claim Secret), reports why it cannot
//! fill when GPUs run out, empties at `minIdle: 0`, and a claim whose pod does not accept its
//! session (kwok runs no process) deletes that pod and starts the session cold, saying why. A
//! class that relays keeps no pool while the operator has no TURN URLs for its pods.
//!
//! Claims that succeed need real camera-pod processes: `tests/tests/e2e.rs` covers them with the
//! test kubelet (warm claim, refill, no reuse, 50 concurrent sessions against a pool of 10).

mod common;

use common::{TestEnv, WAIT, classes, condition, create_class};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use p2pcamera_api::objects::{LABEL_POOL, LABEL_SESSION, SECRET_CLAIM_TOKEN, child_name};
use p2pcamera_api::pod_env;
use p2pcamera_operator::crd::WarmPoolStatus;
use p2pcamera_tests::eventually;
use serde_json::json;

/// Waits until the class's `status.warmPool` satisfies `check`.
async fn wait_pool(
    env: &TestEnv,
    class: &str,
    what: &str,
    check: impl Fn(&WarmPoolStatus) -> bool,
) -> WarmPoolStatus {
    eventually(&format!("class {class}: {what}"), WAIT, || async {
        let class = classes(env).get(class).await.map_err(|e| e.to_string())?;
        match class.status.clone().and_then(|s| s.warm_pool) {
            Some(pool) if check(&pool) => Ok(pool),
            other => {
                let pods: Vec<_> = pool_pods(env, &class.name_any())
                    .await
                    .iter()
                    .map(|p| {
                        let conditions: Vec<_> = p
                            .status
                            .iter()
                            .flat_map(|s| s.conditions.iter().flatten())
                            .map(|c| format!("{}={}", c.type_, c.status))
                            .collect();
                        format!("{} {conditions:?}", p.name_any())
                    })
                    .collect();
                Err(format!("{other:?}; pods {pods:?}"))
            }
        }
    })
    .await
    .expect("the pool reaches the expected state")
}

/// The class's pool pods that are not being deleted.
async fn pool_pods(env: &TestEnv, class: &str) -> Vec<Pod> {
    env.pods
        .list(&ListParams::default().labels(&format!("{LABEL_POOL}={class}")))
        .await
        .expect("listing pool pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

#[tokio::test]
async fn a_pool_fills_to_min_idle_says_why_it_cannot_and_empties_at_zero() {
    let env = TestEnv::new("warm-fill").await;
    env.add_node("gpu", 2, None).await;
    let _operator = env.start_operator("warm-fill", &[]);
    let class = create_class(
        &env,
        "pool",
        json!({"warmPool": {"minIdle": 3, "filter": "passthrough", "namespace": env.ns}}),
    )
    .await;

    // Two GPUs: two pods warm, the third cannot be placed and the status says why.
    let pool = wait_pool(
        &env,
        &class,
        "2 idle, 1 starting, the scheduler's reason",
        |p| {
            p.idle == 2
                && p.starting == 1
                && p.message
                    .as_deref()
                    .is_some_and(|m| m.contains("Insufficient nvidia.com/gpu"))
        },
    )
    .await;
    assert_eq!(pool.claimed, 0);
    let pods = pool_pods(&env, &class).await;
    assert_eq!(pods.len(), 3, "no more pods while one cannot be placed");
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let uid = classes(&env).get(&class).await.expect("class").uid();
    for pod in &pods {
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), Some(&owner.uid)),
            ("CameraClass", uid.as_ref())
        );
        assert!(
            !pod.labels().contains_key(LABEL_SESSION),
            "idle pods have no session"
        );
        let env_names: Vec<_> = pod.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.clone())
            .collect();
        assert!(
            env_names.contains(&"P2PCAMERA_CLAIM_TOKEN_FILE".to_string()),
            "{env_names:?}"
        );
        assert!(
            !env_names.contains(&"P2PCAMERA_TOKEN_FILE".to_string()),
            "no session token"
        );
        let secret = secrets
            .get(&pod.name_any())
            .await
            .expect("the pod's claim Secret");
        assert!(
            secret
                .data
                .as_ref()
                .is_some_and(|d| d.contains_key(SECRET_CLAIM_TOKEN))
        );
        assert_eq!(secret.owner_references()[0].name, pod.name_any());
    }

    // minIdle 0: the pool runs no pods.
    classes(&env)
        .patch(
            &class,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"warmPool": {"minIdle": 0}}})),
        )
        .await
        .expect("class patched");
    wait_pool(&env, &class, "empty", |p| p.idle == 0 && p.starting == 0).await;
    eventually("pool pods gone", WAIT, || async {
        let left = pool_pods(&env, &class).await.len();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} left"))
        }
    })
    .await
    .expect("minIdle 0 runs no pods");
    classes(&env)
        .delete(&class, &DeleteParams::default())
        .await
        .expect("class deleted");
}

#[tokio::test]
async fn a_claimed_pod_that_does_not_accept_its_session_is_deleted_and_the_session_starts_cold() {
    let env = TestEnv::new("warm-fail").await;
    env.add_node("gpu", 4, None).await;
    let _operator = env.start_operator("warm-fail", &[]);
    let class = create_class(
        &env,
        "pool",
        json!({"warmPool": {"minIdle": 1, "filter": "passthrough", "namespace": env.ns}}),
    )
    .await;
    wait_pool(&env, &class, "1 idle", |p| p.idle == 1).await;
    let warm = pool_pods(&env, &class).await[0].name_any();

    // kwok reports the pod Ready but runs no camera-pod: the hand-over cannot go through.
    env.create_session(
        "cam",
        json!({"className": class, "filter": {"name": "passthrough"}}),
    )
    .await;
    let session = env
        .wait_session(
            "cam",
            "cold start after a failed claim",
            |s| match condition(s, "WarmStart") {
                Some((status, reason, message))
                    if status == "False" && reason == "WarmClaimFailed" =>
                {
                    Ok(message)
                }
                other => Err(format!("WarmStart {other:?}")),
            },
        )
        .await;
    let (_, _, message) = condition(&session, "WarmStart").expect("WarmStart");
    assert!(message.contains(&warm), "{message}");
    env.wait_event("cam", "Normal", "WarmClaimFailed").await;
    env.wait_ready("cam").await;
    assert!(
        env.pod_of("cam").await.is_some(),
        "the session's own pod: {}",
        child_name("cam")
    );
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    eventually("the claimed pod is deleted", WAIT, || async {
        match pods.get_opt(&warm).await.map_err(|e| e.to_string())? {
            Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
                Err(format!("{warm} still there"))
            }
            _ => Ok(()),
        }
    })
    .await
    .expect("a pod that failed its claim never returns to the pool");
    // The pool refills with a new pod.
    let refilled = wait_pool(&env, &class, "refilled", |p| p.idle + p.starting == 1).await;
    assert_eq!(refilled.claimed, 0, "{refilled:?}");
    assert!(
        pool_pods(&env, &class)
            .await
            .iter()
            .all(|p| p.name_any() != warm)
    );
    env.delete_session("cam").await;
    classes(&env)
        .delete(&class, &DeleteParams::default())
        .await
        .expect("class deleted");
}

#[tokio::test]
async fn a_relaying_class_keeps_no_pool_without_turn_urls_and_its_pods_relay_with_them() {
    let env = TestEnv::new("warm-relay").await;
    env.add_node("gpu", 1, None).await;
    let class = create_class(
        &env,
        "relayed",
        json!({"relay": "Also", "warmPool": {"minIdle": 1, "filter": "passthrough", "namespace": env.ns}}),
    )
    .await;
    let operator = env.start_operator("warm-relay", &[]);
    wait_pool(&env, &class, "short for want of TURN URLs", |p| {
        p.message
            .as_deref()
            .is_some_and(|m| m.contains("--camera-pod-turn-urls"))
    })
    .await;
    assert!(
        pool_pods(&env, &class).await.is_empty(),
        "pods that cannot start"
    );
    operator.stop().await;

    let turn = "turn:turn.example:3478";
    let _operator = env.start_operator("warm-relay", &["--camera-pod-turn-urls", turn]);
    wait_pool(&env, &class, "1 idle", |p| p.idle == 1).await;
    let pods = pool_pods(&env, &class).await;
    let env_value = |name: &str| {
        pods[0].spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        env_value(pod_env::RELAY_CANDIDATES).as_deref(),
        Some("also")
    );
    assert_eq!(env_value(pod_env::TURN_URLS).as_deref(), Some(turn));
    classes(&env)
        .delete(&class, &DeleteParams::default())
        .await
        .expect("deleting the class");
}
