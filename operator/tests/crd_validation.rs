//! The committed CRD against the real API server: every schema and CEL rule rejects what it
//! should at create time, and valid sessions (minimal and complete) are accepted.

use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use p2pcamera_api::objects::FIELD_MANAGER;
use p2pcamera_api::relay::{CandidateType, ConnectionPath, Transport};
use p2pcamera_operator::crd::{
    CRD_DIR, CameraClass, CameraSession, CameraSessionStatus, ClassRelay, FilterName,
    SessionConnection,
};
use p2pcamera_tests::ControlPlane;
use serde_json::{Value, json};

async fn plane() -> &'static ControlPlane {
    let plane = ControlPlane::shared().await.expect("control plane");
    let crd = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CRD_DIR);
    plane
        .apply_crds(&crd)
        .await
        .expect("CRD applies and becomes Established");
    plane
}

fn sessions(plane: &ControlPlane, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("p2pcamera.io", "v1alpha1", "CameraSession");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "camerasessions");
    Api::namespaced_with(plane.client().unwrap(), ns, &resource)
}

fn session(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "p2pcamera.io/v1alpha1",
        "kind": "CameraSession",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn custom_model(manifest: Value) -> Value {
    json!({
        "name": "custom",
        "model": {
            "url": "https://models.example/seg.onnx",
            "sha256": "a".repeat(64),
            "manifest": manifest,
        },
    })
}

fn mask_manifest() -> Value {
    json!({"input": "input", "layout": "NCHW", "width": 256, "height": 256, "output": "mask", "composite": "blur"})
}

/// Creates the session and returns the API server's rejection message (fails if accepted).
async fn rejected(api: &Api<DynamicObject>, name: &str, spec: Value) -> String {
    match api
        .create(&PostParams::default(), &session(name, spec.clone()))
        .await
    {
        Ok(_) => panic!("API server accepted invalid spec {spec}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(e) => panic!("unexpected error for {spec}: {e}"),
    }
}

#[tokio::test]
async fn valid_sessions_are_accepted_and_defaulted() {
    let plane = plane().await;
    let ns = plane.namespace("crd-valid").await.unwrap();
    let api = sessions(plane, &ns);
    let minimal = api
        .create(&PostParams::default(), &session("minimal", json!({})))
        .await
        .unwrap();
    let typed: CameraSession =
        serde_json::from_value(serde_json::to_value(&minimal).unwrap()).unwrap();
    assert_eq!(typed.spec.gpu, None);
    assert_eq!(typed.spec.filter.name, FilterName::SelfieBlur);

    let full = json!({
        "filter": custom_model(json!({
            "input": "input", "outputName": "mask", "layout": "NHWC", "width": 256, "height": 144,
            "colorOrder": "BGR", "valueRange": {"min": -1.0, "max": 1.0}, "output": "mask", "composite": "replace",
        })),
        "video": {"maxWidth": 1280, "maxHeight": 720, "maxFps": 30, "codecs": ["H264", "VP8"]},
        "className": "gpu.large",
        "idleTimeout": "1h30m",
    });
    api.create(&PostParams::default(), &session("complete", full))
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &session(
            "styled",
            json!({"filter": {"name": "style", "styleIndex": 25}}),
        ),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &session(
            "replaced",
            json!({"filter": {"name": "selfie-replace", "backgroundColor": "#00ff7F"}}),
        ),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &session(
            "parts",
            json!({"filter": {"name": "body-parts", "poseModel": "full", "partsOpacity": 100, "backgroundColor": "#000000"}}),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn filter_rules_are_enforced_by_the_api_server() {
    let plane = plane().await;
    let ns = plane.namespace("crd-filter").await.unwrap();
    let api = sessions(plane, &ns);

    let msg = rejected(&api, "unknown", json!({"filter": {"name": "sepia"}})).await;
    assert!(
        msg.contains("spec.filter.name") && msg.contains("Unsupported value"),
        "{msg}"
    );

    let msg = rejected(
        &api,
        "custom-no-model",
        json!({"filter": {"name": "custom"}}),
    )
    .await;
    assert!(msg.contains("filter 'custom' requires model"), "{msg}");

    let mut blur_with_model = custom_model(mask_manifest());
    blur_with_model["name"] = json!("selfie-blur");
    let msg = rejected(&api, "model-on-builtin", json!({"filter": blur_with_model})).await;
    assert!(msg.contains("filter 'custom' requires model"), "{msg}");

    let msg = rejected(&api, "style-no-index", json!({"filter": {"name": "style"}})).await;
    assert!(msg.contains("filter 'style' requires styleIndex"), "{msg}");

    let msg = rejected(
        &api,
        "index-on-blur",
        json!({"filter": {"name": "selfie-blur", "styleIndex": 3}}),
    )
    .await;
    assert!(msg.contains("filter 'style' requires styleIndex"), "{msg}");

    let msg = rejected(
        &api,
        "style-26",
        json!({"filter": {"name": "style", "styleIndex": 26}}),
    )
    .await;
    assert!(msg.contains("spec.filter.styleIndex"), "{msg}");

    let msg = rejected(
        &api,
        "colour-on-blur",
        json!({"filter": {"name": "selfie-blur", "backgroundColor": "#000000"}}),
    )
    .await;
    assert!(
        msg.contains("backgroundColor is only for filters 'selfie-replace' and 'body-parts'"),
        "{msg}"
    );

    let msg = rejected(
        &api,
        "pose-model-on-blur",
        json!({"filter": {"name": "selfie-blur", "poseModel": "lite"}}),
    )
    .await;
    assert!(
        msg.contains("poseModel is only for filters 'pose' and 'body-parts'"),
        "{msg}"
    );

    let msg = rejected(
        &api,
        "opacity-on-pose",
        json!({"filter": {"name": "pose", "partsOpacity": 50}}),
    )
    .await;
    assert!(
        msg.contains("partsOpacity is only for filter 'body-parts'"),
        "{msg}"
    );

    let msg = rejected(
        &api,
        "huge-pose-model",
        json!({"filter": {"name": "pose", "poseModel": "huge"}}),
    )
    .await;
    assert!(msg.contains("spec.filter.poseModel"), "{msg}");

    let msg = rejected(
        &api,
        "colour-name",
        json!({"filter": {"name": "selfie-replace", "backgroundColor": "green"}}),
    )
    .await;
    assert!(msg.contains("spec.filter.backgroundColor"), "{msg}");
}

#[tokio::test]
async fn model_rules_are_enforced_by_the_api_server() {
    let plane = plane().await;
    let ns = plane.namespace("crd-model").await.unwrap();
    let api = sessions(plane, &ns);

    let mut http = custom_model(mask_manifest());
    http["model"]["url"] = json!("http://models.example/seg.onnx");
    let msg = rejected(&api, "plain-http", json!({"filter": http})).await;
    assert!(msg.contains("spec.filter.model.url"), "{msg}");

    for (name, sum) in [
        ("short-sum", "abc".to_owned()),
        ("upper-sum", "A".repeat(64)),
    ] {
        let mut bad = custom_model(mask_manifest());
        bad["model"]["sha256"] = json!(sum);
        let msg = rejected(&api, name, json!({"filter": bad})).await;
        assert!(msg.contains("spec.filter.model.sha256"), "{msg}");
    }

    let mut no_composite = mask_manifest();
    no_composite.as_object_mut().unwrap().remove("composite");
    let msg = rejected(
        &api,
        "mask-no-composite",
        json!({"filter": custom_model(no_composite)}),
    )
    .await;
    assert!(msg.contains("a mask output requires composite"), "{msg}");

    let mut range = mask_manifest();
    range["valueRange"] = json!({"min": 1.0, "max": 1.0});
    let msg = rejected(&api, "empty-range", json!({"filter": custom_model(range)})).await;
    assert!(msg.contains("min must be below max"), "{msg}");

    let mut layout = mask_manifest();
    layout["layout"] = json!("CHW");
    let msg = rejected(&api, "bad-layout", json!({"filter": custom_model(layout)})).await;
    assert!(
        msg.contains("spec.filter.model.manifest.layout") && msg.contains("Unsupported value"),
        "{msg}"
    );

    let mut huge = mask_manifest();
    huge["width"] = json!(4097);
    let msg = rejected(&api, "huge-input", json!({"filter": custom_model(huge)})).await;
    assert!(msg.contains("spec.filter.model.manifest.width"), "{msg}");
}

#[tokio::test]
async fn video_gpu_and_session_rules_are_enforced_by_the_api_server() {
    let plane = plane().await;
    let ns = plane.namespace("crd-limits").await.unwrap();
    let api = sessions(plane, &ns);

    let cases = [
        (
            "narrow",
            json!({"video": {"maxWidth": 100}}),
            "spec.video.maxWidth",
        ),
        (
            "tall",
            json!({"video": {"maxHeight": 4320}}),
            "spec.video.maxHeight",
        ),
        (
            "fast",
            json!({"video": {"maxFps": 61}}),
            "spec.video.maxFps",
        ),
        (
            "av1",
            json!({"video": {"codecs": ["AV1"]}}),
            "Unsupported value",
        ),
        (
            "three-codecs",
            json!({"video": {"codecs": ["VP8", "H264", "VP8"]}}),
            "spec.video.codecs",
        ),
        ("no-gpu", json!({"gpu": {"count": 0}}), "spec.gpu.count"),
        ("nine-gpus", json!({"gpu": {"count": 9}}), "spec.gpu.count"),
        (
            "empty-resource",
            json!({"gpu": {"resourceName": ""}}),
            "spec.gpu.resourceName",
        ),
        ("empty-image", json!({"image": ""}), "spec.image"),
        // What moved to CameraClass is refused on new sessions, with where it went.
        (
            "own-image",
            json!({"image": "registry.example/miner:1"}),
            "spec.image moved to CameraClass",
        ),
        (
            "cpu-resource",
            json!({"gpu": {"resourceName": "cpu"}}),
            "spec.gpu moved to CameraClass",
        ),
        (
            "two-gpus",
            json!({"gpu": {"count": 2}}),
            "spec.gpu moved to CameraClass",
        ),
        (
            "control-plane",
            json!({"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}),
            "spec.nodeSelector moved to CameraClass",
        ),
        (
            "tolerate-all",
            json!({"tolerations": [{"operator": "Exists"}]}),
            "spec.tolerations moved to CameraClass",
        ),
        (
            "bad-class",
            json!({"className": "Not_A_Name"}),
            "spec.className",
        ),
        (
            "words-timeout",
            json!({"idleTimeout": "5 minutes"}),
            "spec.idleTimeout",
        ),
        (
            "days-timeout",
            json!({"idleTimeout": "2d"}),
            "spec.idleTimeout",
        ),
    ];
    for (name, spec, expected) in cases {
        let msg = rejected(&api, name, spec).await;
        assert!(
            msg.contains(expected),
            "{name}: expected {expected:?} in {msg}"
        );
    }

    let long = "a".repeat(54);
    let msg = rejected(&api, &long, json!({})).await;
    assert!(msg.contains("name must be at most 53 characters"), "{msg}");
    // 53 is the limit, not 52.
    api.create(&PostParams::default(), &session(&"b".repeat(53), json!({})))
        .await
        .unwrap();
}

/// A CameraClass named `name` (cluster-scoped) with `spec`.
fn class(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "p2pcamera.io/v1alpha1",
        "kind": "CameraClass",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn camera_class_fields_are_checked_by_the_api_server() {
    let plane = plane().await;
    let gvk = GroupVersionKind::gvk("p2pcamera.io", "v1alpha1", "CameraClass");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "cameraclasses");
    let classes: Api<DynamicObject> = Api::all_with(plane.client().unwrap(), &resource);
    let prefix = plane.namespace("crd-class").await.unwrap();
    let full = json!({
        "image": "registry.example/camera-pod:1",
        "gpu": {"resourceName": "nvidia.com/gpu", "count": 2},
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "resources": {"memory": "6Gi", "ephemeralStorage": "3Gi", "modelCache": "1Gi"},
        "allowedFilters": ["selfie-blur", "custom"],
        "models": {"allowedHosts": ["models.example", "cdn.example:8443"], "allowedDigests": ["a".repeat(64)]},
        "video": {"maxWidth": 1280, "maxHeight": 720, "maxFps": 30, "codecs": ["VP8"], "maxDecodeWidth": 3840, "maxDecodeHeight": 2160},
        "warmPool": {"minIdle": 2, "maxIdle": 4, "filter": "style", "namespace": "cameras"},
        "relay": "Only",
    });
    let created = classes
        .create(
            &PostParams::default(),
            &class(&format!("{prefix}-full"), full),
        )
        .await
        .unwrap();
    let created: CameraClass =
        serde_json::from_value(serde_json::to_value(&created).unwrap()).unwrap();
    assert_eq!(created.spec.gpu.count, Some(2));
    assert_eq!(
        created.spec.allowed_filters,
        [FilterName::SelfieBlur, FilterName::Custom]
    );
    assert_eq!(created.spec.relay, ClassRelay::Only);
    let pool = created.spec.warm_pool.as_ref().expect("warmPool kept");
    assert_eq!(
        (pool.min_idle, pool.max_idle(), pool.filter()),
        (2, 4, FilterName::Style)
    );
    classes
        .delete(&created.name_any(), &DeleteParams::default())
        .await
        .unwrap();

    let cases = [
        ("no-gpu", json!({"gpu": {"count": 0}}), "spec.gpu.count"),
        (
            "sepia",
            json!({"allowedFilters": ["sepia"]}),
            "spec.allowedFilters",
        ),
        (
            "twice",
            json!({"allowedFilters": ["pose", "pose"]}),
            "spec.allowedFilters",
        ),
        (
            "scheme-host",
            json!({"models": {"allowedHosts": ["https://models.example"]}}),
            "spec.models.allowedHosts",
        ),
        (
            "short-digest",
            json!({"models": {"allowedDigests": ["abc"]}}),
            "spec.models.allowedDigests",
        ),
        (
            "8k-decode",
            json!({"video": {"maxDecodeWidth": 7680}}),
            "spec.video.maxDecodeWidth",
        ),
        (
            "bad-memory",
            json!({"resources": {"memory": "lots"}}),
            "spec.resources.memory",
        ),
        (
            "pool-upside-down",
            json!({"warmPool": {"minIdle": 3, "maxIdle": 1}}),
            "maxIdle must be at least minIdle",
        ),
        (
            "pool-custom",
            json!({"warmPool": {"minIdle": 1, "filter": "custom"}}),
            "warmPool.filter must be a built-in filter",
        ),
        (
            "pool-negative",
            json!({"warmPool": {"minIdle": -1}}),
            "spec.warmPool.minIdle",
        ),
        ("relay-lower", json!({"relay": "only"}), "spec.relay"),
    ];
    for (suffix, spec, expected) in cases {
        let name = format!("{prefix}-{suffix}");
        match classes
            .create(&PostParams::default(), &class(&name, spec))
            .await
        {
            Ok(_) => {
                let _ = classes.delete(&name, &DeleteParams::default()).await;
                panic!("{suffix}: accepted, want {expected}");
            }
            Err(kube::Error::Api(status)) => assert!(
                status.code == 422 && status.message.contains(expected),
                "{suffix}: expected 422 with {expected:?}, got {} {}",
                status.code,
                status.message
            ),
            Err(other) => panic!("{suffix}: {other}"),
        }
    }
}

#[tokio::test]
async fn a_class_relays_off_unless_it_says_otherwise() {
    let plane = plane().await;
    let gvk = GroupVersionKind::gvk("p2pcamera.io", "v1alpha1", "CameraClass");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "cameraclasses");
    let classes: Api<DynamicObject> = Api::all_with(plane.client().unwrap(), &resource);
    let name = format!("{}-minimal", plane.namespace("crd-relay").await.unwrap());
    let created = classes
        .create(&PostParams::default(), &class(&name, json!({})))
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["relay"], "Off");
    classes
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_connection_the_operator_writes_fits_the_status_schema() {
    let plane = plane().await;
    let ns = plane.namespace("crd-connection").await.unwrap();
    sessions(plane, &ns)
        .create(&PostParams::default(), &session("cam", json!({})))
        .await
        .unwrap();
    let typed: Api<CameraSession> = Api::namespaced(plane.client().unwrap(), &ns);
    let apply = |status: Value| {
        let typed = typed.clone();
        async move {
            let patch = json!({
                "apiVersion": "p2pcamera.io/v1alpha1", "kind": "CameraSession", "status": status,
            });
            typed
                .patch_status(
                    "cam",
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await
        }
    };
    let mut connection = SessionConnection::from(
        ConnectionPath::of_pair(CandidateType::Host, CandidateType::Relay)
            .with_camera_transport(Transport::Tls),
    );
    connection.observed_time = Some(Time(Timestamp::from_second(1_700_000_000).unwrap()));
    let status = CameraSessionStatus {
        connection: Some(connection.clone()),
        ..CameraSessionStatus::default()
    };
    let written = apply(serde_json::to_value(&status).unwrap()).await.unwrap();
    assert_eq!(
        written.status.and_then(|s| s.connection),
        Some(connection),
        "written and read back as is"
    );
    let written = typed.get("cam").await.unwrap();
    assert_eq!(
        serde_json::to_value(&written).unwrap()["status"]["connection"]["path"],
        "Relay"
    );
    // The contract's own spelling is not the CRD's.
    let lower = json!({"connection": {"path": "relay", "podCandidate": "host", "cameraCandidate": "relay"}});
    match apply(lower).await {
        Err(kube::Error::Api(status)) => assert!(
            status.code == 422 && status.message.contains("status.connection.path"),
            "{status:?}"
        ),
        other => panic!("accepted a lower-case path: {other:?}"),
    }
}
