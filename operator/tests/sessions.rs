//! The reconciler against the real control plane: one CameraSession becomes one GPU pod on a
//! kwok node, and the session's status follows the pod through scheduling, readiness,
//! replacement and deletion.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{TestEnv, WAIT, condition, phase_is};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use p2pcamera_api::objects::{ANNOTATION_PORT, child_name};
use p2pcamera_tests::eventually;
use serde_json::json;

/// Finalizer that keeps a deleted pod in Terminating, as a kubelet still stopping it would.
const TERMINATION_HOLD: &str = "p2pcamera.io/test-termination-hold";

fn port_of(pod: &Pod) -> (i32, Vec<(i32, Option<i32>, String)>) {
    let container = &pod.spec.as_ref().unwrap().containers[0];
    let ports = container
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.container_port,
                p.host_port,
                p.protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    let annotated = pod
        .annotations()
        .get(ANNOTATION_PORT)
        .and_then(|p| p.parse().ok())
        .unwrap_or(-1);
    (annotated, ports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_becomes_a_ready_gpu_pod_with_its_own_port_and_token() {
    let env = TestEnv::new("session-ready").await;
    let node = env.add_node("gpu", 1, Some("127.0.0.2")).await;
    let _operator = env.start_operator("op-a", &[]);
    let created = env
        .create_session("cam", json!({"filter": {"name": "selfie-blur"}}))
        .await;

    let session = env.wait_ready("cam").await;
    let status = session.status.clone().unwrap();
    let port = status.udp_port.expect("port in status");
    assert!(
        (40000..=40999).contains(&port),
        "port {port} outside the default range"
    );
    assert_eq!(status.node_name.as_deref(), Some(node.as_str()));
    assert_eq!(
        status.public_address.as_deref(),
        Some("127.0.0.2"),
        "ICE must advertise the node's ExternalIP"
    );
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("https://127.0.0.1:{port}").as_str())
    );
    assert_eq!(status.pod_name.as_deref(), Some(child_name("cam").as_str()));
    assert_eq!(status.observed_generation, created.metadata.generation);
    assert_eq!(
        condition(&session, "Scheduled").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(
        condition(&session, "PodReady").map(|c| c.0),
        Some("True".into())
    );

    let pod = env.pod_of("cam").await.expect("camera pod");
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(spec.node_name.as_deref(), Some(node.as_str()));
    let container = &spec.containers[0];
    let limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    assert_eq!(
        limits.get("nvidia.com/gpu").map(|q| q.0.as_str()),
        Some("1")
    );
    assert!(container.readiness_probe.is_some(), "no readiness probe");
    let (annotated, ports) = port_of(&pod);
    assert_eq!(annotated, i32::from(port));
    assert!(
        ports.contains(&(i32::from(port), Some(i32::from(port)), "UDP".into())),
        "{ports:?}"
    );
    assert!(
        ports.contains(&(i32::from(port), Some(i32::from(port)), "TCP".into())),
        "{ports:?}"
    );
    let env_text = format!("{:?}", container.env);
    assert!(
        env_text.contains("P2PCAMERA_AWAIT_PUBLIC_IP"),
        "camera-pod does not wait for its node's public address: {env_text}"
    );

    let owner = pod
        .owner_references()
        .first()
        .cloned()
        .expect("owner reference");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CameraSession", "cam")
    );
    assert_eq!(Some(owner.uid.clone()), created.metadata.uid);
    assert_eq!(owner.controller, Some(true));

    let secrets = Api::<Secret>::namespaced(env.client.clone(), &env.ns);
    let secret = secrets.get(&child_name("cam")).await.expect("token secret");
    assert_eq!(
        secret.owner_references().first().map(|o| o.uid.clone()),
        created.metadata.uid
    );
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .expect("token key");
    assert!(token.0.len() >= 16, "token too short to be a secret");
    let mounted = spec.volumes.iter().flatten().any(|v| {
        v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(child_name("cam").as_str())
    });
    assert!(mounted, "token secret not mounted into the pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_session_waits_for_a_gpu_and_starts_when_one_is_freed() {
    let env = TestEnv::new("session-gpus").await;
    env.add_node("a", 1, None).await;
    env.add_node("b", 1, None).await;
    let operator = env.start_operator("op-a", &[]);
    for name in ["one", "two", "three"] {
        env.create_session(name, json!({})).await;
    }
    let (ready, waiting) = eventually("two sessions Ready and one unschedulable", WAIT, || async {
        let list = env
            .sessions
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready: Vec<String> = list
            .iter()
            .filter(|s| phase_is(s, "Ready").is_ok())
            .map(|s| s.name_any())
            .collect();
        let waiting: Vec<String> = list
            .iter()
            .filter(|s| condition(s, "Scheduled").is_some_and(|c| c.0 == "False"))
            .map(|s| s.name_any())
            .collect();
        if ready.len() == 2 && waiting.len() == 1 {
            Ok((ready, waiting))
        } else {
            Err(format!("ready {ready:?}, unschedulable {waiting:?}"))
        }
    })
    .await
    .unwrap();
    let blocked = env.sessions.get(&waiting[0]).await.unwrap();
    let (_, reason, message) = condition(&blocked, "Scheduled").unwrap();
    assert_eq!(reason, "NoFreeGpu");
    assert!(
        message.contains("Insufficient nvidia.com/gpu"),
        "scheduler message not passed on: {message}"
    );
    assert_eq!(phase_is(&blocked, "Scheduling"), Ok(()));
    assert_eq!(
        blocked.status.as_ref().unwrap().reason.as_deref(),
        Some("NoFreeGpu")
    );
    env.wait_event(&waiting[0], "Warning", "NoFreeGpu").await;
    assert_eq!(
        operator.metric("p2pcamera_operator_sessions_waiting{reason=\"NoFreeGpu\"}"),
        1.0
    );
    let nodes: BTreeSet<_> = futures::future::join_all(ready.iter().map(|n| env.sessions.get(n)))
        .await
        .into_iter()
        .map(|s| s.unwrap().status.unwrap().node_name)
        .collect();
    assert_eq!(nodes.len(), 2, "both GPUs used: {nodes:?}");

    env.delete_session(&ready[0]).await;
    let started = env.wait_ready(&waiting[0]).await;
    assert_eq!(
        condition(&started, "Scheduled").map(|c| c.0),
        Some("True".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_created_at_once_on_one_node_get_distinct_ports() {
    const SESSIONS: usize = 24;
    let env = TestEnv::new("session-ports").await;
    env.add_node("big", SESSIONS as u32, None).await;
    let _operator = env.start_operator("op-a", &[]);
    let names: Vec<String> = (0..SESSIONS).map(|i| format!("cam-{i}")).collect();
    futures::future::join_all(names.iter().map(|n| env.create_session(n, json!({})))).await;

    let sessions = eventually("all sessions Ready", WAIT * 2, || async {
        let list = env
            .sessions
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready = list.iter().filter(|s| phase_is(s, "Ready").is_ok()).count();
        if ready == SESSIONS {
            Ok(list.items)
        } else {
            Err(format!("{ready}/{SESSIONS} Ready"))
        }
    })
    .await
    .unwrap();
    let ports: BTreeSet<u16> = sessions
        .iter()
        .filter_map(|s| s.status.as_ref()?.udp_port)
        .collect();
    assert_eq!(ports.len(), SESSIONS, "duplicate ports: {ports:?}");
    let pods = env.pods.list(&Default::default()).await.unwrap();
    let pod_ports: BTreeSet<i32> = pods.iter().map(|p| port_of(p).0).collect();
    assert_eq!(pod_ports.len(), SESSIONS, "pods share a port");
    assert_eq!(pod_ports, ports.iter().map(|p| i32::from(*p)).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_change_replaces_the_pod_once_and_unchanged_spec_never_does() {
    let env = TestEnv::new("session-update").await;
    env.add_node("gpu", 1, None).await;
    let _operator = env.start_operator("op-a", &[]);
    env.create_session("cam", json!({"filter": {"name": "selfie-blur"}}))
        .await;
    env.wait_ready("cam").await;
    let before = env.pod_of("cam").await.unwrap();

    // No flapping: the pod of an unchanged session stays the same pod.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        env.pod_of("cam").await.unwrap().uid(),
        before.uid(),
        "pod replaced without a spec change"
    );

    let patch = json!({"spec": {"filter": {"name": "style", "styleIndex": 7}}});
    let updated = env
        .sessions
        .patch("cam", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let generation = updated.metadata.generation;
    let session = env
        .wait_session("cam", "Ready for the new generation", |s| {
            phase_is(s, "Ready")?;
            let observed = s.status.as_ref().and_then(|st| st.observed_generation);
            if observed == generation {
                Ok(())
            } else {
                Err(format!("observedGeneration {observed:?}"))
            }
        })
        .await;
    let after = env.pod_of("cam").await.unwrap();
    assert_ne!(after.uid(), before.uid(), "pod not replaced");
    let container = &after.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("registry.invalid/camera-pod:test")
    );
    assert!(
        format!("{:?}", container.env).contains("style"),
        "new filter not passed to camera-pod"
    );
    assert_eq!(
        session.status.unwrap().udp_port,
        before
            .annotations()
            .get(ANNOTATION_PORT)
            .and_then(|p| p.parse().ok())
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.pod_of("cam").await.unwrap().uid(),
        after.uid(),
        "replacement pod replaced again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pod_is_recreated() {
    let env = TestEnv::new("session-pod-gone").await;
    env.add_node("gpu", 1, None).await;
    let _operator = env.start_operator("op-a", &[]);
    env.create_session("cam", json!({})).await;
    let session = env.wait_ready("cam").await;
    // Without an ExternalIP, the node's InternalIP is what ICE advertises.
    assert_eq!(
        session.status.unwrap().public_address.as_deref(),
        Some("127.0.0.1")
    );
    let first = env.pod_of("cam").await.unwrap();
    env.pods
        .delete(&first.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    eventually("a new Ready pod", WAIT, || async {
        let pod = env
            .pods
            .get_opt(&child_name("cam"))
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no pod")?;
        let ready = pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if pod.uid() != first.uid() && ready {
            Ok(())
        } else {
            Err(format!("pod {:?} ready {ready}", pod.uid()))
        }
    })
    .await
    .unwrap();
    env.wait_ready("cam").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_session_releases_pod_secret_and_port() {
    let env = TestEnv::new("session-delete").await;
    env.add_node("gpu", 1, None).await;
    // One port in the range: the next session can only start if the first one's port came back.
    let _operator = env.start_operator("op-a", &["--port-range", "41000-41000"]);
    env.create_session("first", json!({})).await;
    let first = env.wait_ready("first").await;
    assert_eq!(first.status.unwrap().udp_port, Some(41000));
    env.delete_session("first").await;

    let secrets = Api::<Secret>::namespaced(env.client.clone(), &env.ns);
    eventually("pod and secret garbage-collected", WAIT, || async {
        let pod = env
            .pods
            .get_opt(&child_name("first"))
            .await
            .map_err(|e| e.to_string())?;
        let secret = secrets
            .get_opt(&child_name("first"))
            .await
            .map_err(|e| e.to_string())?;
        match (pod, secret) {
            (None, None) => Ok(()),
            (pod, secret) => Err(format!(
                "pod left: {}, secret left: {}",
                pod.is_some(),
                secret.is_some()
            )),
        }
    })
    .await
    .unwrap();

    env.create_session("second", json!({})).await;
    let second = env.wait_ready("second").await;
    assert_eq!(second.status.unwrap().udp_port, Some(41000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_looping_pod_fails_the_session_then_is_recreated_after_the_backoff() {
    let env = TestEnv::new("session-crash").await;
    env.add_node("gpu", 1, None).await;
    let _operator = env.start_operator(
        "op-a",
        &["--crash-restart-limit", "3", "--crash-backoff", "8s"],
    );
    env.create_session("cam", json!({})).await;
    env.wait_ready("cam").await;
    let crashed = env.pod_of("cam").await.unwrap();
    // A real kubelet takes a while to stop a pod; a finalizer holds the crashed pod in
    // Terminating until the test lets it go.
    let hold = json!({"metadata": {"finalizers": [TERMINATION_HOLD]}});
    env.pods
        .patch(
            &crashed.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&hold),
        )
        .await
        .unwrap();

    // Report what a kubelet reports for a container that keeps crashing, and keep reporting it
    // as a kubelet would: a status write of kwok's that is still in flight when the pod turned
    // Ready must not mask the crash loop.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    // The uid makes every write a precondition: it can only ever reach the crashed pod.
    let status = json!({"metadata": {"uid": crashed.uid()}, "status": {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": [{
            "name": crashed.spec.as_ref().unwrap().containers[0].name,
            "image": "registry.invalid/camera-pod:test",
            "imageID": "",
            "ready": false,
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}},
            "lastState": {"terminated": {
                "exitCode": 1,
                "reason": "Error",
                "message": "camera-pod failed: the media UDP port 127.0.0.1:41000 is not available",
                "startedAt": now,
                "finishedAt": now,
            }},
        }],
    }});
    env.pods
        .patch_status(
            &crashed.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    let kubelet = {
        let (pods, name) = (env.pods.clone(), crashed.name_any());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                // The pod is gone (or replaced) once the operator acts on the crash loop.
                if pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };

    let failed = env
        .wait_session("cam", "Failed", |s| phase_is(s, "Failed"))
        .await;
    let failed_at = std::time::Instant::now();
    let (healthy, reason, message) = condition(&failed, "Healthy").unwrap();
    assert_eq!(
        (healthy.as_str(), reason.as_str()),
        ("False", "CrashLoopBackOff")
    );
    assert!(message.contains("restarted 3 times"), "{message}");
    // What the container said when it stopped (camera-pod writes its termination message).
    assert!(
        message.contains("last exit code 1: camera-pod failed: the media UDP port 127.0.0.1:41000 is not available"),
        "{message}"
    );
    env.wait_event("cam", "Warning", "CrashLoopBackOff").await;

    // While the crashed pod terminates, the session stays Failed and gets no new pod.
    eventually("the crashed pod terminating", WAIT, || async {
        match env.pods.get_opt(&crashed.name_any()).await {
            Ok(Some(pod)) if pod.metadata.deletion_timestamp.is_some() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let session = env.sessions.get("cam").await.unwrap();
        assert!(
            phase_is(&session, "Failed").is_ok(),
            "phase while the crashed pod terminates: {:?}",
            session.status
        );
        assert_eq!(env.pod_of("cam").await.unwrap().uid(), crashed.uid());
    }
    kubelet.abort();
    let release = json!({"metadata": {"finalizers": null}});
    env.pods
        .patch(
            &crashed.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&release),
        )
        .await
        .unwrap();

    let recreated = eventually("a new pod after the backoff", WAIT, || async {
        match env.pod_of("cam").await {
            Some(pod) if pod.uid() != crashed.uid() => Ok(pod),
            Some(_) => Err("crashed pod still there".to_owned()),
            None => Err("no pod".to_owned()),
        }
    })
    .await
    .unwrap();
    let waited = failed_at.elapsed();
    assert!(
        waited >= Duration::from_secs(6),
        "recreated {waited:?} after failing, backoff is 8s"
    );
    env.wait_ready("cam").await;
    assert_eq!(env.pod_of("cam").await.unwrap().uid(), recreated.uid());
}

/// The ports of the camera pods by node (bound pods only).
async fn ports_by_node(env: &TestEnv) -> BTreeMap<String, Vec<i32>> {
    let mut by_node: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for pod in env.pods.list(&Default::default()).await.unwrap() {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            by_node.entry(node).or_default().push(port_of(&pod).0);
        }
    }
    by_node
}

fn assert_ports_unique_per_node(by_node: &BTreeMap<String, Vec<i32>>) {
    for (node, ports) in by_node {
        let unique: BTreeSet<_> = ports.iter().collect();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port twice on {node}: {ports:?}"
        );
    }
}

/// The sessions' ports and pod uids, once all `count` are Ready.
async fn all_ready(env: &TestEnv, count: usize) -> BTreeMap<String, (u16, Option<String>)> {
    let sessions = eventually("all sessions Ready", WAIT * 2, || async {
        let list = env
            .sessions
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready = list.iter().filter(|s| phase_is(s, "Ready").is_ok()).count();
        if ready == count && list.items.len() == count {
            Ok(list.items)
        } else {
            Err(format!("{ready}/{count} Ready"))
        }
    })
    .await
    .unwrap();
    let mut ports = BTreeMap::new();
    for session in sessions {
        let pod = env.pod_of(&session.name_any()).await.expect("pod");
        let port = session.status.as_ref().and_then(|s| s.udp_port).unwrap();
        assert_eq!(port_of(&pod).0, i32::from(port), "status and pod agree");
        ports.insert(session.name_any(), (port, pod.uid()));
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_sessions_than_ports_share_ports_across_nodes_never_on_one() {
    let env = TestEnv::new("session-port-share").await;
    for node in ["a", "b", "c"] {
        env.add_node(node, 3, None).await;
    }
    // 3 ports, 9 sessions: each port on three nodes.
    let _operator = env.start_operator("op-a", &["--port-range", "41000-41002"]);
    let names: Vec<String> = (0..9).map(|i| format!("cam-{i}")).collect();
    futures::future::join_all(names.iter().map(|n| env.create_session(n, json!({})))).await;
    let ports = all_ready(&env, 9).await;
    let used: BTreeSet<u16> = ports.values().map(|(p, _)| *p).collect();
    assert_eq!(used, BTreeSet::from([41000, 41001, 41002]), "{ports:?}");
    let by_node = ports_by_node(&env).await;
    assert_eq!(by_node.len(), 3, "{by_node:?}");
    assert_ports_unique_per_node(&by_node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_nodes_ports_taken_a_session_waits_for_a_port_until_one_is_freed() {
    let env = TestEnv::new("session-no-port").await;
    env.add_node("a", 3, None).await;
    env.add_node("b", 3, None).await;
    // 2 ports on 2 nodes: 4 sessions; GPUs are left over.
    let operator = env.start_operator("op-a", &["--port-range", "41000-41001"]);
    for i in 0..4 {
        env.create_session(&format!("cam-{i}"), json!({})).await;
    }
    all_ready(&env, 4).await;
    env.create_session("late", json!({})).await;
    let waiting = env
        .wait_session("late", "waiting for a port", |s| {
            match s.status.as_ref().and_then(|st| st.reason.as_deref()) {
                Some("NoFreePort") => Ok(()),
                other => Err(format!("reason {other:?}")),
            }
        })
        .await;
    assert_eq!(phase_is(&waiting, "Scheduling"), Ok(()));
    let (status, reason, message) = condition(&waiting, "Scheduled").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NoFreePort"));
    assert!(message.contains("free ports"), "{message}");
    env.wait_event("late", "Warning", "NoFreePort").await;
    assert_eq!(
        operator.metric("p2pcamera_operator_sessions_waiting{reason=\"NoFreePort\"}"),
        1.0
    );
    assert_ports_unique_per_node(&ports_by_node(&env).await);

    env.delete_session("cam-2").await;
    let ready = env.wait_ready("late").await;
    assert!(
        (41000..=41001).contains(&ready.status.unwrap().udp_port.unwrap()),
        "port from the range"
    );
    assert_ports_unique_per_node(&ports_by_node(&env).await);
    eventually("the waiting gauge back to 0", WAIT, || async {
        match operator.metric("p2pcamera_operator_sessions_waiting{reason=\"NoFreePort\"}") {
            0.0 => Ok(()),
            n => Err(format!("{n}")),
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_the_scheduler_finds_taken_moves_the_session_to_another() {
    let env = TestEnv::new("session-port-taken").await;
    let node = env.add_node("gpu", 2, None).await;
    // Another workload holds host port 41000 on the only node.
    let squatter: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "squatter"},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "c",
                "image": "registry.invalid/squatter",
                "ports": [{"containerPort": 41000, "hostPort": 41000, "protocol": "UDP"}],
            }],
        },
    }))
    .unwrap();
    env.pods
        .create(&Default::default(), &squatter)
        .await
        .unwrap();
    let operator = env.start_operator("op-a", &["--port-range", "41000-41001"]);
    env.create_session("cam", json!({})).await;
    let ready = env.wait_ready("cam").await;
    assert_eq!(ready.status.unwrap().udp_port, Some(41001));
    env.wait_event("cam", "Normal", "PortConflict").await;
    assert!(operator.metric("p2pcamera_operator_port_moves_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_keeps_every_port_and_pod() {
    let env = TestEnv::new("session-restart").await;
    for node in ["a", "b", "c"] {
        env.add_node(node, 4, None).await;
    }
    // 3 ports on 3 nodes: room for 9 sessions.
    let args = ["--port-range", "41000-41002"];
    let first = env.start_operator("op-a", &args);
    for i in 0..5 {
        env.create_session(&format!("cam-{i}"), json!({})).await;
    }
    let before = all_ready(&env, 5).await;
    first.stop().await;
    // A new leader rebuilds the table from pods and statuses, then places more sessions.
    let _second = env.start_operator("op-b", &args);
    for i in 5..8 {
        env.create_session(&format!("cam-{i}"), json!({})).await;
    }
    let after = all_ready(&env, 8).await;
    for (name, kept) in &before {
        assert_eq!(after.get(name), Some(kept), "{name} changed port or pod");
    }
    assert_ports_unique_per_node(&ports_by_node(&env).await);
}
