//! The control-plane fixture against the real components: API server version, kwok GPU nodes,
//! the real scheduler counting `nvidia.com/gpu`, and garbage collection of owned objects.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use p2pcamera_tests::{ControlPlane, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn gpu_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{
                "name": "main",
                "image": "registry.invalid/camera-pod:test",
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
            }],
        },
    }))
    .expect("static pod manifest")
}

/// `Ok(pod)` once Running with Ready=True, else the current phase and conditions.
async fn running_and_ready(pods: &Api<Pod>, name: &str) -> Result<Pod, String> {
    let pod = pods.get(name).await.map_err(|e| e.to_string())?;
    let status = pod.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if status.phase.as_deref() == Some("Running") && ready {
        Ok(pod)
    } else {
        Err(format!(
            "phase {:?}, conditions {:?}",
            status.phase, status.conditions
        ))
    }
}

/// The scheduler's PodScheduled=False condition (reason, message), if it has written one.
async fn unschedulable(pods: &Api<Pod>, name: &str) -> Result<(String, String), String> {
    let pod = pods.get(name).await.map_err(|e| e.to_string())?;
    let conditions = pod.status.and_then(|s| s.conditions).unwrap_or_default();
    conditions
        .into_iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| (c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
        .ok_or_else(|| "no PodScheduled=False condition yet".to_owned())
}

#[tokio::test]
async fn api_server_reports_the_pinned_version() {
    let plane = ControlPlane::shared().await.unwrap();
    let info = plane.client().unwrap().apiserver_version().await.unwrap();
    assert_eq!(info.git_version, "v1.36.3");
    let out = plane.kubectl(&["version", "-o", "json"]).await.unwrap();
    assert!(out.contains("\"gitVersion\": \"v1.36.3\""), "{out}");
}

#[tokio::test]
async fn scheduler_places_gpu_pods_only_where_a_gpu_is_free() {
    let plane = ControlPlane::shared().await.unwrap();
    let node = plane
        .add_gpu_node("smoke-gpu-1", 1, "127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    let addresses = node.status.unwrap().addresses.unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "ExternalIP" && a.address == "127.0.0.2"),
        "{addresses:?}"
    );

    let ns = plane.namespace("smoke-gpu").await.unwrap();
    let pods = Api::<Pod>::namespaced(plane.client().unwrap(), &ns);
    pods.create(&PostParams::default(), &gpu_pod("first"))
        .await
        .unwrap();
    let first = eventually("first pod Running and Ready", WAIT, || {
        running_and_ready(&pods, "first")
    })
    .await
    .unwrap();
    assert_eq!(
        first.spec.unwrap().node_name.as_deref(),
        Some("smoke-gpu-1")
    );

    pods.create(&PostParams::default(), &gpu_pod("second"))
        .await
        .unwrap();
    let (reason, message) = eventually("second pod unschedulable", WAIT, || {
        unschedulable(&pods, "second")
    })
    .await
    .unwrap();
    assert_eq!(reason, "Unschedulable");
    assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");
    // Still pending a while later: the GPU is really taken, not just not yet looked at.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = pods.get("second").await.unwrap();
    assert_eq!(second.status.unwrap().phase.as_deref(), Some("Pending"));
    assert!(second.spec.unwrap().node_name.is_none());

    pods.delete("first", &DeleteParams::default())
        .await
        .unwrap();
    let second = eventually("second pod Running after the first is gone", WAIT, || {
        running_and_ready(&pods, "second")
    })
    .await
    .unwrap();
    assert_eq!(
        second.spec.unwrap().node_name.as_deref(),
        Some("smoke-gpu-1")
    );

    pods.delete("second", &DeleteParams::default())
        .await
        .unwrap();
    eventually("second pod gone", WAIT, || async {
        match pods.get_opt("second").await {
            Ok(None) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.map(|p| p.map(|p| p.metadata.deletion_timestamp))
            )),
        }
    })
    .await
    .unwrap();
    plane.delete_node("smoke-gpu-1").await.unwrap();
}

#[tokio::test]
async fn garbage_collector_deletes_objects_whose_owner_is_gone() {
    let plane = ControlPlane::shared().await.unwrap();
    let ns = plane.namespace("smoke-gc").await.unwrap();
    let maps = Api::<ConfigMap>::namespaced(plane.client().unwrap(), &ns);
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap();
    let owner = maps.create(&PostParams::default(), &owner).await.unwrap();
    let uid = owner.metadata.uid.unwrap();
    let child: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "child",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }))
    .unwrap();
    maps.create(&PostParams::default(), &child).await.unwrap();
    let bystander: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "bystander"}})).unwrap();
    maps.create(&PostParams::default(), &bystander)
        .await
        .unwrap();

    maps.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually("child ConfigMap collected", WAIT, || async {
        match maps.get_opt("child").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("child still exists".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap();
    assert!(
        maps.get_opt("bystander").await.unwrap().is_some(),
        "GC deleted an object it did not own"
    );
}
