//! The `CameraSession` custom resource (group `p2pcamera.io`, version `v1alpha1`, namespaced,
//! short name `cams`).
//!
//! A `CameraSession` asks for one camera pod on one GPU. The schema carries as much validation as
//! the API server can enforce, so bad specs are rejected at apply time:
//! - enums for filter names, tensor layouts, colour orders, output kinds and codecs;
//! - ranges for video limits, the GPU count and the style index; patterns for the model's sha256,
//!   its https URL, the background colour and the idle timeout;
//! - CEL rules for cross-field checks: the `custom` filter needs a `model` (and only it may have
//!   one), the `style` filter needs a `styleIndex`, only `selfie-replace` and `body-parts` take a
//!   `backgroundColor`, only `pose` and `body-parts` a `poseModel`, only `body-parts` a
//!   `partsOpacity`, a `mask` model output needs a `composite` mode, a value range must be
//!   increasing.
//!
//! `gpu.resourceName` has no schema default on purpose: when absent, the operator's configured
//! default (`nvidia.com/gpu` unless changed) applies, so a cluster can switch the default without
//! rewriting every session.
//!
//! The generated YAML lives in `crds/camerasessions.p2pcamera.io.yaml`; `operator crd` prints it
//! and a unit test fails when the committed file drifts from these types.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every p2pcamera resource.
pub const GROUP: &str = "p2pcamera.io";
/// Path of the committed CRD file, relative to the repository root.
pub const CRD_FILE: &str = "crds/camerasessions.p2pcamera.io.yaml";
/// The folder of every committed CRD file, relative to the repository root.
pub const CRD_DIR: &str = "crds";

mod class;
mod connection;

pub use class::{
    AllowedHost, CLASS_CRD_FILE, CameraClass, CameraClassSpec, CameraClassStatus, ClassGpu,
    ClassRelay, ClassResources, ClassVideo, Digest, ModelAllowList, WarmPool, WarmPoolStatus,
};
pub use connection::{IceCandidateType, MediaRoute, MediaTransport, SessionConnection};

/// Desired state of one camera session: which filter runs, within which video limits, on which GPU.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "p2pcamera.io",
    version = "v1alpha1",
    kind = "CameraSession",
    namespaced,
    shortname = "cams",
    status = "CameraSessionStatus",
    derive = "PartialEq",
    doc = "A live AI video filter for one browser camera, running on one GPU pod.",
    validation = Rule::new("size(self.metadata.name) <= 53").message("name must be at most 53 characters (it names the pod and its labels)"),
    printcolumn(name = "Class", type_ = "string", json_path = ".spec.className"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.nodeName"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Path", type_ = "string", json_path = ".status.connection.path"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CameraSessionSpec {
    /// The CameraClass the session runs in; the default class (annotation
    /// `p2pcamera.io/is-default-class: "true"`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub class_name: Option<String>,
    /// The filter applied to the camera. Defaults to `selfie-blur`.
    #[serde(default)]
    pub filter: FilterSpec,
    /// Limits for the returned video, within the class's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoSpec>,
    /// Delete the pod after this long without a connected camera, e.g. `30s`, `15m`, `1h30m`.
    /// Absent: never idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}(h|m|s))+$"))]
    pub idle_timeout: Option<String>,
    /// Deprecated: moved to CameraClass (`spec.gpu`). Refused on new sessions; a session that
    /// still carries a count other than 1 or a resource name is not accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!has(self.resourceName) && self.count == 1").message("spec.gpu moved to CameraClass: remove it and name a class that provides the GPUs (docs/operations.md, Migrating to CameraClass)"))]
    pub gpu: Option<GpuSpec>,
    /// Deprecated: moved to CameraClass (`spec.nodeSelector`). Refused on new sessions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("size(self) == 0").message("spec.nodeSelector moved to CameraClass: remove it and name a class (docs/operations.md, Migrating to CameraClass)"))]
    pub node_selector: BTreeMap<String, String>,
    /// Deprecated: moved to CameraClass (`spec.tolerations`). Refused on new sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("size(self) == 0").message("spec.tolerations moved to CameraClass: remove it and name a class (docs/operations.md, Migrating to CameraClass)"))]
    pub tolerations: Vec<Toleration>,
    /// Deprecated: moved to CameraClass (`spec.image`). Refused on new sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("size(self) == 0").message("spec.image moved to CameraClass: remove it and name a class (docs/operations.md, Migrating to CameraClass)"))]
    pub image: Option<String>,
}

/// Which filter runs on the camera.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.name == 'custom' ? has(self.model) : !has(self.model)").message("filter 'custom' requires model, and only 'custom' takes one"),
    validation = Rule::new("self.name == 'style' ? has(self.styleIndex) : !has(self.styleIndex)").message("filter 'style' requires styleIndex, and only 'style' takes one"),
    validation = Rule::new("!has(self.backgroundColor) || self.name == 'selfie-replace' || self.name == 'body-parts'").message("backgroundColor is only for filters 'selfie-replace' and 'body-parts'"),
    validation = Rule::new("!has(self.poseModel) || self.name == 'pose' || self.name == 'body-parts'").message("poseModel is only for filters 'pose' and 'body-parts'"),
    validation = Rule::new("!has(self.partsOpacity) || self.name == 'body-parts'").message("partsOpacity is only for filter 'body-parts'")
)]
#[serde(rename_all = "camelCase")]
pub struct FilterSpec {
    /// Built-in filter name, or `custom` for an ONNX model given in `model`.
    pub name: FilterName,
    /// Style of the `style` filter (multistyle26: 0 to 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 25))]
    pub style_index: Option<u32>,
    /// Background colour of `selfie-replace`, `#rrggbb`; for `body-parts`, the colour of
    /// everything but the person (the camera picture stays when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^#[0-9a-fA-F]{6}$"))]
    pub background_color: Option<String>,
    /// Which BlazePose landmark model `pose` and `body-parts` run; camera-pod's default (`lite`)
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pose_model: Option<PoseModel>,
    /// How strongly `body-parts` paints the part colours over the person, per cent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub parts_opacity: Option<u32>,
    /// The ONNX model of the `custom` filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
}

impl Default for FilterSpec {
    fn default() -> Self {
        Self {
            name: FilterName::SelfieBlur,
            style_index: None,
            background_color: None,
            pose_model: None,
            parts_opacity: None,
            model: None,
        }
    }
}

/// Built-in filters, plus `custom`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FilterName {
    /// Returns the camera unchanged.
    Passthrough,
    /// Blurs the background (selfie segmentation).
    SelfieBlur,
    /// Replaces the background with a colour (selfie segmentation).
    SelfieReplace,
    /// Style transfer (multistyle26).
    Style,
    /// The body's skeleton drawn over the picture (BlazePose landmarks).
    Pose,
    /// The person coloured by body part (BlazePose landmarks and person mask).
    BodyParts,
    /// Any ONNX image model described by `model`.
    Custom,
}

/// Size of the BlazePose landmark model.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PoseModel {
    /// Faster (camera-pod's default).
    Lite,
    /// Larger, steadier points.
    Full,
}

impl PoseModel {
    /// The value camera-pod's `--pose-model` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lite => "lite",
            Self::Full => "full",
        }
    }
}

impl FilterName {
    /// The name as written in the spec and passed to camera-pod.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passthrough => "passthrough",
            Self::SelfieBlur => "selfie-blur",
            Self::SelfieReplace => "selfie-replace",
            Self::Style => "style",
            Self::Pose => "pose",
            Self::BodyParts => "body-parts",
            Self::Custom => "custom",
        }
    }
}

/// An ONNX model fetched by the pod, verified by its checksum.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Where the pod downloads the model (https only).
    #[schemars(regex(pattern = r"^https://[^\s]+$"))]
    pub url: String,
    /// SHA-256 of the model file, 64 lowercase hex digits.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// How the model's tensors are fed and its output composited.
    pub manifest: ModelManifest,
}

/// Tensor description of a custom model.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.output != 'mask' || has(self.composite)").message("a mask output requires composite")
)]
#[serde(rename_all = "camelCase")]
pub struct ModelManifest {
    /// Name of the input tensor.
    #[schemars(length(min = 1, max = 253))]
    pub input: String,
    /// Name of the output tensor; the model's first output when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub output_name: Option<String>,
    /// Memory layout of the input tensor.
    pub layout: TensorLayout,
    /// Input width in pixels.
    #[schemars(range(min = 1, max = 4096))]
    pub width: u32,
    /// Input height in pixels.
    #[schemars(range(min = 1, max = 4096))]
    pub height: u32,
    /// Channel order of the input.
    #[serde(default)]
    pub color_order: ColorOrder,
    /// Value range that pixel values are mapped to. Defaults to 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_range: Option<ValueRange>,
    /// Whether the output is a picture or a person mask.
    pub output: OutputKind,
    /// How a mask is composited with the camera picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite: Option<CompositeMode>,
}

/// A numeric interval `[min, max]`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.min < self.max").message("min must be below max"))]
pub struct ValueRange {
    /// Lower end.
    pub min: f64,
    /// Upper end.
    pub max: f64,
}

/// Tensor memory layout.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorLayout {
    /// Batch, channels, height, width.
    #[serde(rename = "NCHW")]
    Nchw,
    /// Batch, height, width, channels.
    #[serde(rename = "NHWC")]
    Nhwc,
}

/// Channel order.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorOrder {
    /// Red, green, blue.
    #[default]
    #[serde(rename = "RGB")]
    Rgb,
    /// Blue, green, red.
    #[serde(rename = "BGR")]
    Bgr,
}

/// What a model outputs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    /// A picture that replaces the camera picture.
    Image,
    /// A per-pixel person mask composited with the camera picture.
    Mask,
}

/// How a mask output is composited.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CompositeMode {
    /// Blur where the mask is background.
    Blur,
    /// Replace the background with a colour.
    Replace,
    /// Tint the masked area (body-part colouring).
    Colorize,
}

/// Video limits for the returned track.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VideoSpec {
    /// Largest width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 160, max = 3840))]
    pub max_width: Option<u32>,
    /// Largest height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 120, max = 2160))]
    pub max_height: Option<u32>,
    /// Largest frame rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub max_fps: Option<u32>,
    /// Codecs the camera pod accepts (default: both); the browser's offer decides the order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub codecs: Vec<Codec>,
}

/// Video codecs camera-pod speaks.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// VP8.
    #[serde(rename = "VP8")]
    Vp8,
    /// H.264 constrained baseline.
    #[serde(rename = "H264")]
    H264,
}

impl Codec {
    /// The codec name as passed to camera-pod.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vp8 => "VP8",
            Self::H264 => "H264",
        }
    }
}

/// GPUs requested by the pod (deprecated in a session: see [`CameraClassSpec::gpu`]).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    /// Number of GPUs.
    #[serde(default = "default_gpu_count")]
    #[schemars(range(min = 1, max = 8))]
    pub count: u32,
    /// Extended resource name; the operator's default (`nvidia.com/gpu`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub resource_name: Option<String>,
}

impl Default for GpuSpec {
    fn default() -> Self {
        Self {
            count: default_gpu_count(),
            resource_name: None,
        }
    }
}

fn default_gpu_count() -> u32 {
    1
}

/// Lifecycle phase, derived from the conditions.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Accepted, nothing created yet.
    Pending,
    /// Pod created, waiting for the scheduler to bind it.
    Scheduling,
    /// Pod bound, waiting for it to become ready.
    Starting,
    /// Pod ready; `endpoint` is set.
    Ready,
    /// No camera for `idleTimeout`: the pod was deleted, the session is kept.
    Idle,
    /// The pod crashed repeatedly or the spec cannot be served.
    Failed,
    /// The old pod is being removed (spec change, crash recovery).
    Terminating,
}

impl Phase {
    /// Every phase, for metrics.
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Scheduling,
        Phase::Starting,
        Phase::Ready,
        Phase::Idle,
        Phase::Failed,
        Phase::Terminating,
    ];

    /// The phase name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Scheduling => "Scheduling",
            Self::Starting => "Starting",
            Self::Ready => "Ready",
            Self::Idle => "Idle",
            Self::Failed => "Failed",
            Self::Terminating => "Terminating",
        }
    }
}

/// Observed state of a camera session.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CameraSessionStatus {
    /// Summary of the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Why the session is not Ready: the reason of the condition that holds it back, e.g.
    /// `NoFreeGpu`, `NoFreePort`, `PortConflict`, `Unschedulable`, `CrashLoopBackOff`; absent
    /// once Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `Scheduled`, `PodReady`, `Healthy`, `Active`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the camera pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Node the pod is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// HTTPS signaling endpoint of the pod, `https://<address>:<udpPort>`, once ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Address ICE advertises (the node's ExternalIP, else its InternalIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    /// The session's port: TCP for signaling and UDP for media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub udp_port: Option<u16>,
    /// Last time a camera was seen connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<Time>,
    /// Human-readable detail of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Where the time of the last start went, as the operator saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartTimes>,
    /// How the camera is connected to the pod (directly or through a TURN relay), as the pod
    /// reported it at the operator's last poll that told it; absent before the pod's first
    /// connection and once the pod is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<SessionConnection>,
}

/// How long the session's last start took, in milliseconds after the operator first saw the
/// session waiting for a pod (within moments of `kubectl apply`, or of a wake or a crash).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StartTimes {
    /// Until its pod was bound to a node (a claimed warm pod: the claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_millis: Option<u64>,
    /// Until the session was Ready (the pod ready: its filter loaded and warmed up).
    pub ready_millis: u64,
    /// The pod was a claimed warm-pool pod.
    #[serde(default)]
    pub warm: bool,
    /// Until the pod answered its first offer (the pod's clock: a few milliseconds of skew
    /// between its node and the operator's are possible). Written with the first frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_answer_millis: Option<u64>,
    /// Until the pod sent its first filtered frame: written when the operator learns it (it asks
    /// the pod at most every `--idle-poll-interval`, for up to 2 minutes after Ready, for at most
    /// 256 sessions at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_frame_millis: Option<u64>,
}

/// The CameraSession CRD as YAML, exactly as committed in [`CRD_FILE`].
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(&CameraSession::crd())
}

/// The CameraClass CRD as YAML, exactly as committed in [`CLASS_CRD_FILE`].
pub fn class_crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(&CameraClass::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_match_types() {
        for (file, generated) in [
            (CRD_FILE, crd_yaml().expect("CRD serializes")),
            (CLASS_CRD_FILE, class_crd_yaml().expect("CRD serializes")),
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(file);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "{file} is out of date; regenerate it with: make crd"
            );
        }
    }

    #[test]
    fn class_crd_is_cluster_scoped() {
        let crd = CameraClass::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("cameraclasses.p2pcamera.io")
        );
        assert_eq!(crd.spec.scope, "Cluster");
    }

    #[test]
    fn crd_names_and_columns() {
        let crd = CameraSession::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("camerasessions.p2pcamera.io")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["cams".to_string()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Class", "Phase", "Reason", "Node", "Endpoint", "Path", "Age"
            ]
        );
    }

    #[test]
    fn schema_carries_cel_rules_and_patterns() {
        let yaml = crd_yaml().unwrap();
        for needle in [
            "filter 'custom' requires model",
            "filter 'style' requires styleIndex",
            "poseModel is only for filters 'pose' and 'body-parts'",
            "partsOpacity is only for filter 'body-parts'",
            "a mask output requires composite",
            "^[0-9a-f]{64}$",
            "x-kubernetes-list-map-keys",
            "spec.image moved to CameraClass",
            "spec.gpu moved to CameraClass",
        ] {
            assert!(yaml.contains(needle), "CRD lacks {needle}");
        }
    }

    #[test]
    fn minimal_spec_defaults_to_selfie_blur_in_the_default_class() {
        let spec: CameraSessionSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.filter.name, FilterName::SelfieBlur);
        assert_eq!(spec.class_name, None);
        assert_eq!(spec.gpu, None);
    }

    #[test]
    fn unknown_filter_name_is_rejected_by_serde() {
        let err = serde_json::from_str::<FilterSpec>(r#"{"name":"sepia"}"#);
        assert!(err.is_err());
    }
}
