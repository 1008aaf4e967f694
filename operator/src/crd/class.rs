//! The `CameraClass` custom resource (cluster-scoped, short name `camclass`): what a cluster
//! administrator lets camera users run, in the manner of StorageClass and IngressClass.
//!
//! A class holds everything that decides where and with what rights a camera pod runs (image, GPU
//! resource and count, node selector, tolerations, memory and disk limits) and the ceilings of what
//! a session may ask for (filters, models by URL, video limits). A `CameraSession` names its class
//! in `spec.className`; without one it gets the class annotated
//! `p2pcamera.io/is-default-class: "true"`. The operator checks every session against its class
//! ([`crate::class_fit`]) and creates nothing for a session that does not fit.
//!
//! The generated YAML lives in `crds/cameraclasses.p2pcamera.io.yaml` (`operator crd --kind
//! camera-class`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use p2pcamera_api::relay::RelayCandidates;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FilterName, VideoSpec};

/// Path of the committed CameraClass CRD file, relative to the repository root.
pub const CLASS_CRD_FILE: &str = "crds/cameraclasses.p2pcamera.io.yaml";

/// What camera pods of this class run with, and what sessions of the class may ask for.
// Clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "p2pcamera.io",
    version = "v1alpha1",
    kind = "CameraClass",
    shortname = "camclass",
    derive = "PartialEq",
    status = "CameraClassStatus",
    doc = "What camera pods of a class run with (image, GPUs, nodes, limits) and what its sessions may ask for; written by cluster administrators.",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "GPU", type_ = "string", json_path = ".spec.gpu.resourceName"),
    printcolumn(
        name = "Default",
        type_ = "string",
        json_path = ".metadata.annotations.p2pcamera\\.io/is-default-class"
    ),
    printcolumn(name = "Relay", type_ = "string", json_path = ".spec.relay"),
    printcolumn(name = "Idle", type_ = "integer", json_path = ".status.warmPool.idle"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CameraClassSpec {
    /// camera-pod image of the class's pods; the operator's `--camera-pod-image` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,
    /// GPUs of each pod.
    #[serde(default)]
    pub gpu: ClassGpu,
    /// Node labels the pods must match (added to the operator's `--gpu-node-selector`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods (added to the operator's `--gpu-tolerations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Memory and disk limits of each pod.
    #[serde(default)]
    pub resources: ClassResources,
    /// Filters sessions of the class may run. Absent or empty: every built-in filter but `custom`
    /// (a custom model must be allowed here by name and by `models`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_filters: Vec<FilterName>,
    /// Which models a session (in its spec) or a browser (switching filters) may load by URL.
    /// Empty: none.
    #[serde(default)]
    pub models: ModelAllowList,
    /// Video ceilings and defaults of the class's sessions.
    #[serde(default)]
    pub video: ClassVideo,
    /// Idle camera pods kept running, warmed up, for new sessions of the class to claim. Absent:
    /// none (every session starts its own pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<WarmPool>,
    /// Whether the class's pods offer TURN relay candidates of their own: `Off` (the default):
    /// host candidates and the node's public address only; `Also`: the pod also offers a TURN
    /// relay candidate (nodes without a public address, cameras behind symmetric NAT); `Only`:
    /// relay candidates only, the node's address never reaches cameras. `Also` and `Only` relay
    /// through the operator's `--camera-pod-turn-urls` (without them the class's sessions are
    /// not accepted) and apply to the class's next pods, not to running ones.
    #[serde(default)]
    pub relay: ClassRelay,
}

/// Whether camera pods of a class gather TURN relay candidates of their own (camera-pod's
/// `--relay-candidates`). Browsers behind firewalls relay through TURN by themselves; a pod needs
/// a relay of its own only when cameras cannot reach its node at all. A class that relays needs
/// the operator's `--camera-pod-turn-urls` (a TURN server over UDP): without it, its sessions are
/// not accepted (`RelayNotConfigured`). A change applies to the class's next pods, not to running
/// ones.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClassRelay {
    /// Host candidates and the node's public address only: cameras reach the node directly.
    #[default]
    Off,
    /// The pod also offers a TURN relay candidate, for nodes without a public address and
    /// cameras behind symmetric NAT; ICE picks the direct pair when it works.
    Also,
    /// Relay candidates only: the camera always reaches the pod through the relay, and the
    /// node's address never reaches cameras.
    Only,
}

impl From<ClassRelay> for RelayCandidates {
    fn from(relay: ClassRelay) -> Self {
        match relay {
            ClassRelay::Off => Self::Off,
            ClassRelay::Also => Self::Also,
            ClassRelay::Only => Self::Only,
        }
    }
}

/// The warm pool of a class: camera pods started ahead of their sessions (image pulled, process
/// running, filter model loaded and warmed up with one inference), each claimed by one new session
/// and never reused after it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.maxIdle) || self.maxIdle >= self.minIdle").message("warmPool.maxIdle must be at least minIdle"),
    validation = Rule::new("!has(self.filter) || self.filter != 'custom'").message("warmPool.filter must be a built-in filter: a custom model is loaded per session")
)]
pub struct WarmPool {
    /// Idle pods kept ready (starting ones count); 0 runs none, the cost-saving default.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub min_idle: u32,
    /// Most idle pods; idle pods above it are deleted. `minIdle` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_idle: Option<u32>,
    /// The filter idle pods warm up (a session that asks for another one switches at claim and
    /// waits for its model to load); `selfie-blur` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterName>,
    /// Namespace of the pool's pods: only sessions in it claim them. The operator's namespace
    /// when it serves one; required when it serves every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: Option<String>,
}

impl WarmPool {
    /// Most idle pods: `maxIdle`, else `minIdle`.
    pub fn max_idle(&self) -> u32 {
        self.max_idle.unwrap_or(self.min_idle).max(self.min_idle)
    }

    /// The filter idle pods run.
    pub fn filter(&self) -> FilterName {
        self.filter.unwrap_or(FilterName::SelfieBlur)
    }
}

/// What the operator observes of a class.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CameraClassStatus {
    /// The warm pool's pods, when the class has a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<WarmPoolStatus>,
}

/// Counts of a warm pool's pods, and why it is short when it is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WarmPoolStatus {
    /// Warm and ready to be claimed.
    pub idle: u32,
    /// Created, not ready yet (scheduling, pulling, warming up).
    pub starting: u32,
    /// Claimed by a session and still running (they never return to the pool).
    pub claimed: u32,
    /// Why the pool holds fewer idle pods than `minIdle`, e.g. the scheduler's reason; absent
    /// when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// GPUs of each pod of a class.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClassGpu {
    /// Extended resource name; the operator's `--gpu-resource-name` (`nvidia.com/gpu`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub resource_name: Option<String>,
    /// GPUs per pod; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8))]
    pub count: Option<u32>,
}

/// Memory and disk limits of each pod of a class (Kubernetes quantities, e.g. `8Gi`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClassResources {
    /// Memory limit (and request) of the camera container; `8Gi` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self))").message("must be a Kubernetes quantity, e.g. 8Gi"))]
    pub memory: Option<Quantity>,
    /// Ephemeral-storage limit of the camera container; `4Gi` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self))").message("must be a Kubernetes quantity, e.g. 8Gi"))]
    pub ephemeral_storage: Option<Quantity>,
    /// `sizeLimit` of the pod's model cache volume; `2Gi` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self))").message("must be a Kubernetes quantity, e.g. 8Gi"))]
    pub model_cache: Option<Quantity>,
}

/// Models that may be loaded by URL: a URL is allowed when its host is in `allowedHosts` or its
/// sha256 is in `allowedDigests`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelAllowList {
    /// Host names (optionally `host:port`) models may be downloaded from, matched exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_hosts: Vec<AllowedHost>,
    /// SHA-256 digests of model files that may be loaded from any https URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_digests: Vec<Digest>,
}

/// A host name, optionally with `:port`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct AllowedHost(
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$"))] pub String,
);

/// A SHA-256 digest, 64 lowercase hex digits.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct Digest(#[schemars(regex(pattern = r"^[0-9a-f]{64}$"))] pub String);

/// Video ceilings of a class: a session may ask for less, never more; what a session leaves out,
/// it gets from here.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClassVideo {
    /// Largest returned width, height and frame rate, and the codecs sessions may use (both when
    /// absent): the same fields as a session's `video`.
    #[serde(flatten)]
    pub limits: VideoSpec,
    /// Largest camera picture the pod decodes, width; 1920 when absent (up to 3840).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 160, max = 3840))]
    pub max_decode_width: Option<u32>,
    /// Largest camera picture the pod decodes, height; 1080 when absent (up to 2160).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 120, max = 2160))]
    pub max_decode_height: Option<u32>,
}
