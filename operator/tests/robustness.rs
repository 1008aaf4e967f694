//! How the operator fails and stops, against the real control plane: a spec the API server
//! refuses waits for a change, transient failures (a pod beyond a quota) are retried with
//! growing delays, and
//! `operator run` stops within seconds of SIGTERM while hundreds of sessions are in flight,
//! releasing its Lease.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestEnv, WAIT, condition, phase_is};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use p2pcamera_operator::crd::CameraClass;
use p2pcamera_operator::runtime::admin::AdminState;
use p2pcamera_tests::{ManagedProcess, eventually, free_port};
use serde_json::json;

/// The value of one series (name with labels, exactly as exposed) in the metrics text.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn admin_metric(admin: &AdminState, series: &str) -> f64 {
    metric(&admin.metrics.encode().expect("metrics encode"), series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_spec_fails_once_and_waits_for_a_change() {
    let env = TestEnv::new("spec-rejected").await;
    env.add_node("gpu", 1, None).await;
    let operator = env.start_operator("op", &[]);
    // The class schema allows any node selector; the API server refuses a pod whose selector key
    // is no label.
    let classes: Api<CameraClass> = Api::all(env.client.clone());
    let class_name = format!("{}-bad-selector", env.ns);
    let class: CameraClass = serde_json::from_value(json!({
        "apiVersion": "p2pcamera.io/v1alpha1", "kind": "CameraClass",
        "metadata": {"name": class_name},
        "spec": {"nodeSelector": {"not a label!": "x"}},
    }))
    .unwrap();
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    env.create_session("bad", json!({"className": class_name}))
        .await;
    let session = env
        .wait_session("bad", "SpecValid=False", |s| {
            phase_is(s, "Failed")?;
            match condition(s, "SpecValid") {
                Some((status, reason, message)) if status == "False" && reason == "PodRejected" => {
                    Ok(message)
                }
                other => Err(format!("SpecValid {other:?}")),
            }
        })
        .await;
    let (_, _, message) = condition(&session, "SpecValid").unwrap();
    assert!(
        message.contains("not a label!"),
        "the API server's message names the bad key: {message}"
    );
    assert!(
        env.pod_of("bad").await.is_none(),
        "no pod for a rejected spec"
    );

    // No retries: the reconcile count stays put (a retry policy would have run it again by now).
    let reconciles =
        |admin: &AdminState| admin_metric(admin, "p2pcamera_operator_reconciles_total");
    let settled = eventually("reconciles settle", WAIT, || async {
        let before = reconciles(&operator.admin);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = reconciles(&operator.admin);
        if before == after {
            Ok(after)
        } else {
            Err(format!("{before} -> {after}"))
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        reconciles(&operator.admin),
        settled,
        "a rejected spec was retried without a change"
    );
    let errors = operator.admin.metrics.encode().unwrap();
    assert!(
        !errors.contains("p2pcamera_operator_reconcile_errors_total{"),
        "a rejected spec counted as an error: {errors}"
    );

    // Fixing the spec (out of the broken class) brings the session up and flips the condition back.
    env.sessions
        .patch(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"className": null}})),
        )
        .await
        .unwrap();
    classes
        .delete(&class_name, &DeleteParams::default())
        .await
        .unwrap();
    let ready = env.wait_ready("bad").await;
    assert_eq!(
        condition(&ready, "SpecValid").map(|c| (c.0, c.1)),
        Some(("True".into(), "PodAccepted".into()))
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_back_off_exponentially_per_session() {
    let env = TestEnv::new("retry-backoff").await;
    env.add_node("gpu", 2, None).await;
    // A quota of one pod: the API server refuses the second session's pod until the first is gone.
    let quotas = Api::<ResourceQuota>::namespaced(env.client.clone(), &env.ns);
    let quota = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "one-pod"},
        "spec": {"hard": {"pods": "1"}},
    }))
    .unwrap();
    quotas.create(&Default::default(), &quota).await.unwrap();
    eventually("the quota counted", WAIT, || async {
        let quota = quotas.get("one-pod").await.map_err(|e| e.to_string())?;
        match quota.status.and_then(|s| s.used) {
            Some(used) if used.contains_key("pods") => Ok(()),
            _ => Err("no usage yet".to_owned()),
        }
    })
    .await
    .unwrap();
    let operator = env.start_operator("op", &[]);
    env.create_session("first", json!({})).await;
    env.wait_ready("first").await;
    env.create_session("second", json!({})).await;

    let failures = |admin: &AdminState| {
        admin_metric(
            admin,
            "p2pcamera_operator_reconcile_errors_total{reason=\"kube\"}",
        )
    };
    let mut seen: Vec<Instant> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < 4 && Instant::now() < deadline {
        let count = failures(&operator.admin) as usize;
        while seen.len() < count {
            seen.push(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.len() >= 4, "only {} failures seen", seen.len());
    // Retries after 1 s, 2 s and 4 s: the 4th failure comes about 7 s after the 1st, or 6 s when
    // the Secret's watch event brings a second attempt right after the first failure (a fixed
    // 5 s delay would take 15 s, a fixed 1 s delay 3 s).
    let spread = seen[3] - seen[0];
    assert!(
        (Duration::from_millis(5500)..Duration::from_millis(12000)).contains(&spread),
        "4 failures spread over {spread:?}"
    );
    // The next retry is 8 s after the 4th failure.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        failures(&operator.admin),
        4.0,
        "retried sooner than the doubled delay"
    );
    assert!(
        env.pod_of("second").await.is_none(),
        "a pod beyond the quota"
    );

    // Freeing the quota lets the retry succeed.
    env.delete_session("first").await;
    env.wait_ready("second").await;
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_busy_operator_within_seconds_and_releases_the_lease() {
    const SESSIONS: usize = 300;
    let env = TestEnv::new("shutdown-busy").await;
    env.add_node("gpu", 8, None).await;
    let port = free_port().unwrap();
    let admin = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_operator"));
    command
        .arg("run")
        .args(env.operator_args("busy", &["--metrics-listen", &format!("127.0.0.1:{port}")]))
        .env("KUBECONFIG", env.plane.kubeconfig_path())
        .env("RUST_LOG", "info");
    let log = env.plane.dir().join(format!("operator-{}.log", env.ns));
    let process = ManagedProcess::spawn("operator busy", command, &log).unwrap();
    let scrape = || async {
        let response = reqwest::get(format!("{admin}/metrics"))
            .await
            .map_err(|e| e.to_string())?;
        response.text().await.map_err(|e| e.to_string())
    };
    eventually("the operator leads", WAIT, || async {
        let text = scrape().await?;
        if metric(&text, "p2pcamera_operator_leader") == 1.0 {
            Ok(())
        } else {
            Err("not leading".into())
        }
    })
    .await
    .unwrap();

    let created = futures::stream::iter(0..SESSIONS)
        .map(|i| {
            let env = &env;
            async move { env.create_session(&format!("cam-{i:03}"), json!({})).await }
        })
        .buffer_unordered(16)
        .count()
        .await;
    assert_eq!(created, SESSIONS);
    let reconciles = metric(
        &scrape().await.unwrap(),
        "p2pcamera_operator_reconciles_total",
    );
    assert!(reconciles > 0.0, "the operator is not working yet");

    let sigterm = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &process.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually(
        "the operator exits after SIGTERM",
        Duration::from_secs(30),
        || async { process.exited().ok_or_else(|| "still running".to_string()) },
    )
    .await
    .unwrap();
    let took = sigterm.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM to exit took {took:?}; log: {}",
        process.log_tail(20)
    );
    assert!(
        exit.contains("exit status: 0"),
        "exit {exit}: {}",
        process.log_tail(20)
    );
    let lease = Api::<Lease>::namespaced(env.client.clone(), &env.ns)
        .get("p2pcamera-operator")
        .await
        .unwrap();
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "the Lease is released on shutdown");
    println!("{SESSIONS} sessions, {reconciles} reconciles done at SIGTERM, exit after {took:?}");
}
