//! The committed CRD against the real API server: every schema and CEL rule rejects what it
//! should at create time, and valid sessions (minimal and complete) are accepted.

use std::path::Path;

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use p2pcamera_operator::crd::{CRD_FILE, CameraSession};
use p2pcamera_tests::ControlPlane;
use serde_json::{Value, json};

async fn plane() -> &'static ControlPlane {
    let plane = ControlPlane::shared().await.expect("control plane");
    let crd = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CRD_FILE);
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
    assert_eq!(typed.spec.gpu.count, 1);

    let full = json!({
        "filter": custom_model(json!({
            "input": "input", "outputName": "mask", "layout": "NHWC", "width": 256, "height": 144,
            "colorOrder": "BGR", "valueRange": {"min": -1.0, "max": 1.0}, "output": "mask", "composite": "replace",
        })),
        "video": {"maxWidth": 1280, "maxHeight": 720, "maxFps": 30, "codecs": ["H264", "VP8"]},
        "gpu": {"count": 2, "resourceName": "amd.com/gpu"},
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "image": "registry.example/camera-pod:1",
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
