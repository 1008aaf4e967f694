//! The `operator run` binary as deployed: two replicas against the real control plane. Exactly
//! one leads and acts (only it reconciles, by the replicas' own metrics), the other takes over
//! when the leader shuts down, and both serve /healthz, /readyz and /metrics.

mod common;

use std::process::Command;

use common::{TestEnv, WAIT};
use p2pcamera_tests::{ManagedProcess, eventually, free_port};
use serde_json::json;

struct Replica {
    identity: &'static str,
    admin: String,
    process: ManagedProcess,
}

fn start_replica(env: &TestEnv, identity: &'static str) -> Replica {
    let port = free_port().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_operator"));
    command
        .arg("run")
        .args(env.operator_args(
            identity,
            &["--metrics-listen", &format!("127.0.0.1:{port}")],
        ))
        .env("KUBECONFIG", env.plane.kubeconfig_path())
        .env("RUST_LOG", "info");
    let log = env
        .plane
        .dir()
        .join(format!("operator-{}-{identity}.log", env.ns));
    let process = ManagedProcess::spawn(&format!("operator {identity}"), command, &log).unwrap();
    Replica {
        identity,
        admin: format!("http://127.0.0.1:{port}"),
        process,
    }
}

async fn get(url: &str) -> Result<String, String> {
    let response = reqwest::get(url).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    response.text().await.map_err(|e| e.to_string())
}

/// The value of an unlabelled or fully labelled metric line, e.g. `p2pcamera_operator_leader`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn leaders(replicas: &[&Replica]) -> Result<Vec<&'static str>, String> {
    let mut leading = Vec::new();
    for r in replicas {
        let text = get(&format!("{}/metrics", r.admin)).await?;
        match metric(&text, "p2pcamera_operator_leader") {
            Some(1.0) => leading.push(r.identity),
            Some(_) => {}
            None => return Err(format!("{}: no leader metric", r.identity)),
        }
    }
    Ok(leading)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_acts_and_the_other_takes_over() {
    let env = TestEnv::new("operator-ha").await;
    env.add_node("gpu", 4, None).await;
    let a = start_replica(&env, "replica-a");
    let b = start_replica(&env, "replica-b");
    for r in [&a, &b] {
        let log = r.process.log_path().display().to_string();
        eventually(
            &format!("{} ready (log {log})", r.identity),
            WAIT,
            || async {
                get(&format!("{}/healthz", r.admin)).await?;
                get(&format!("{}/readyz", r.admin)).await
            },
        )
        .await
        .unwrap();
    }
    let leader = eventually("exactly one leader", WAIT, || async {
        let now = leaders(&[&a, &b]).await?;
        if now.len() == 1 {
            Ok(now[0])
        } else {
            Err(format!("leaders {now:?}"))
        }
    })
    .await
    .unwrap();
    let (leading, standby) = if leader == a.identity { (a, b) } else { (b, a) };

    env.create_session("first", json!({})).await;
    env.create_session("second", json!({})).await;
    env.wait_ready("first").await;
    env.wait_ready("second").await;
    assert_eq!(
        leaders(&[&leading, &standby]).await.unwrap(),
        [leading.identity],
        "two leaders at once"
    );

    let text = get(&format!("{}/metrics", leading.admin)).await.unwrap();
    assert!(
        metric(&text, "p2pcamera_operator_reconciles_total").unwrap_or(0.0) >= 2.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "p2pcamera_operator_sessions{phase=\"Ready\"}"),
        Some(2.0),
        "{text}"
    );
    assert!(
        text.contains("p2pcamera_operator_reconcile_duration_seconds_bucket"),
        "{text}"
    );
    let idle = get(&format!("{}/metrics", standby.admin)).await.unwrap();
    assert_eq!(
        metric(&idle, "p2pcamera_operator_reconciles_total"),
        Some(0.0),
        "standby reconciled: {idle}"
    );

    // Graceful shutdown (SIGTERM) releases the Lease; the standby takes over and acts.
    leading.process.stop();
    eventually("standby leads after the leader stopped", WAIT, || async {
        let now = leaders(&[&standby]).await?;
        if now == [standby.identity] {
            Ok(())
        } else {
            Err("standby not leading".to_owned())
        }
    })
    .await
    .unwrap();
    env.create_session("third", json!({})).await;
    env.wait_ready("third").await;
    // The new leader made the third session Ready: it reconciles, and counts all three Ready.
    eventually(
        "the new leader counts three Ready sessions",
        WAIT,
        || async {
            let text = get(&format!("{}/metrics", standby.admin)).await?;
            let reconciles = metric(&text, "p2pcamera_operator_reconciles_total").unwrap_or(0.0);
            let ready = metric(&text, "p2pcamera_operator_sessions{phase=\"Ready\"}");
            if reconciles >= 1.0 && ready == Some(3.0) {
                Ok(())
            } else {
                Err(format!("{reconciles} reconciles, Ready {ready:?}"))
            }
        },
    )
    .await
    .unwrap();
    standby.process.stop();
}
