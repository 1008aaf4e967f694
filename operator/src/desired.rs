//! Desired objects of a session, built without a client: the camera Pod and the session Secret.
//!
//! Names and keys other components rely on:
//! - Pod and Secret are both named `<session>-p2pcamera` ([`child_name`]), in the session's
//!   namespace, owned by the session (controller owner reference), so deleting the session lets the
//!   garbage collector remove them.
//! - Labels: `app.kubernetes.io/name=camera-pod`, `app.kubernetes.io/instance=<session>`,
//!   `app.kubernetes.io/managed-by=p2pcamera-operator`, `p2pcamera.io/session=<session>`.
//! - Pod annotations: `p2pcamera.io/port` (the allocated port), `p2pcamera.io/pod-hash` (hash of
//!   everything desired; a different hash means the pod is replaced), `p2pcamera.io/manifest` (the
//!   custom model's manifest as JSON, mounted as a file).
//! - Secret (`Opaque`) keys: `token` (32 random bytes, base64url without padding; the bearer token
//!   camera-pod requires), `tls.crt` / `tls.key` (a self-signed certificate for the pod's HTTPS;
//!   whoever talks to the pod pins this exact certificate; the operator's own calls on the pod
//!   carry the token derived from the key, [`p2pcamera_api::operator_token`]). Mounted read-only at
//!   `/var/run/p2pcamera`; a custom model's manifest is mounted as
//!   `/var/run/p2pcamera-model/manifest.json` (downward API of the annotation).
//!
//! The pod uses `hostNetwork: true` (media goes straight from the browser to the node), declares
//! its one port as containerPort = hostPort for TCP (signaling, HTTPS) and UDP (media), so the
//! scheduler's NodePorts filter also keeps two sessions off the same port on a node, and gets no
//! service account token. camera-pod is configured through environment variables
//! (`P2PCAMERA_*`, listed in [`camera_pod_env`]).

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, Pod,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use p2pcamera_api::objects::{
    ANNOTATION_CLAIMED_BY, ANNOTATION_MANIFEST, ANNOTATION_POD_HASH, ANNOTATION_PORT, CONTAINER,
    LABEL_MANAGED_BY, LABEL_POOL, LABEL_SESSION, MANAGED_BY, MANIFEST_MOUNT_DIR,
    SECRET_CLAIM_TOKEN, SECRET_MOUNT_DIR, SECRET_TLS_CERT, SECRET_TLS_KEY, SECRET_TOKEN,
    child_name,
};
use p2pcamera_api::pod_env;
use p2pcamera_api::relay::RelayCandidates;

use crate::class_fit::{EffectiveVideo, ResolvedClass};
use crate::config::{Config, PublicIpSource};
use crate::crd::{CameraClass, CameraSession, CameraSessionSpec, FilterName, WarmPool};

/// Memory limit (and request) of a camera container when its class sets none.
pub const DEFAULT_MEMORY_LIMIT: &str = "8Gi";
/// Ephemeral-storage limit of a camera container when its class sets none.
pub const DEFAULT_EPHEMERAL_STORAGE_LIMIT: &str = "4Gi";
/// `sizeLimit` of a pod's model cache when its class sets none.
pub const DEFAULT_MODEL_CACHE_LIMIT: &str = "2Gi";

/// Errors building the desired objects.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The session has no name or namespace (not from the API server).
    #[error("session lacks {0}")]
    MissingMetadata(&'static str),
    /// The certificate could not be generated.
    #[error("generating the pod certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The manifest could not be serialized.
    #[error("serializing the model manifest: {0}")]
    Manifest(#[from] serde_json::Error),
}

/// Secret contents generated once per session.
#[derive(Clone, Debug)]
pub struct SecretMaterial {
    /// Bearer token (base64url, no padding).
    pub token: String,
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
}

impl SecretMaterial {
    /// A fresh random token and self-signed certificate for the pod of `session` in `namespace`.
    pub fn generate(namespace: &str, session: &str) -> Result<Self, BuildError> {
        let token =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let names = vec![
            format!("{session}.{namespace}.p2pcamera.internal"),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ];
        let certified = rcgen::generate_simple_self_signed(names)?;
        Ok(Self {
            token,
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
        })
    }
}

fn name_and_namespace(session: &CameraSession) -> Result<(&str, &str), BuildError> {
    let name = session
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = session
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::MissingMetadata("namespace"))?;
    Ok((name, namespace))
}

/// The labels of every object of `session`.
pub fn labels(session: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "camera-pod".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            session.to_string(),
        ),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_SESSION.to_string(), session.to_string()),
    ])
}

fn child_meta(session: &CameraSession) -> Result<ObjectMeta, BuildError> {
    let (name, namespace) = name_and_namespace(session)?;
    Ok(ObjectMeta {
        name: Some(child_name(name)),
        namespace: Some(namespace.to_string()),
        labels: Some(labels(name)),
        owner_references: session.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    })
}

/// The session Secret holding `material`.
pub fn build_secret(
    session: &CameraSession,
    material: &SecretMaterial,
) -> Result<Secret, BuildError> {
    Ok(Secret {
        metadata: child_meta(session)?,
        type_: Some("Opaque".to_string()),
        data: Some(secret_data(&[
            (SECRET_TOKEN, &material.token),
            (SECRET_TLS_CERT, &material.cert_pem),
            (SECRET_TLS_KEY, &material.key_pem),
        ])),
        ..Secret::default()
    })
}

/// The data of a camera pod's Secret from its keys and values.
fn secret_data(entries: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    entries
        .iter()
        .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
        .collect()
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The environment every camera pod of `class` starts with, session or pool alike:
/// `P2PCAMERA_LISTEN=0.0.0.0:<port>`, `P2PCAMERA_UDP_PORT=<port>`, `P2PCAMERA_METRICS_LISTEN`,
/// `P2PCAMERA_PUBLIC_IP` (downward API `status.hostIP`), the class's model
/// allow-list and decode cap, for a class that relays `P2PCAMERA_RELAY_CANDIDATES` (`also`,
/// `only`) and `P2PCAMERA_TURN_URLS` (the `turn:` UDP ones of `--camera-pod-turn-urls`; a class
/// that relays without any is not accepted, [`crate::class_fit`]), `P2PCAMERA_TLS_CERT` / `P2PCAMERA_TLS_KEY` (files of the mounted
/// Secret), `P2PCAMERA_REQUIRE_GPU=true` with `--camera-pod-require-gpu`, and `XDG_CACHE_HOME`.
fn base_env(class: &ResolvedClass, port: u16, config: &Config) -> Vec<EnvVar> {
    let mut vars = vec![
        env(pod_env::LISTEN, format!("0.0.0.0:{port}")),
        env(pod_env::UDP_PORT, port.to_string()),
    ];
    if let Some(metrics_port) = metrics_port(port, config) {
        vars.push(env(
            pod_env::METRICS_LISTEN,
            format!("0.0.0.0:{metrics_port}"),
        ));
    }
    vars.push(EnvVar {
        name: pod_env::PUBLIC_IP.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: "status.hostIP".to_string(),
            }),
            ..EnvVarSource::default()
        }),
    });
    let models = class.model_policy();
    if !models.is_empty() {
        vars.push(env(pod_env::MODEL_ALLOWED_HOSTS, models.hosts_list()));
        vars.push(env(pod_env::MODEL_ALLOWED_DIGESTS, models.digests_list()));
    }
    let decode = EffectiveVideo::decode_cap(class);
    vars.push(env(pod_env::MAX_DECODE_WIDTH, decode.0.to_string()));
    vars.push(env(pod_env::MAX_DECODE_HEIGHT, decode.1.to_string()));
    let relay = RelayCandidates::from(class.spec.relay);
    if relay.gathers_relay() {
        vars.push(env(pod_env::RELAY_CANDIDATES, relay.as_str()));
        vars.push(env(
            pod_env::TURN_URLS,
            config.camera_pod_relay_urls().join(","),
        ));
    }
    vars.push(env(
        pod_env::TLS_CERT,
        format!("{SECRET_MOUNT_DIR}/{SECRET_TLS_CERT}"),
    ));
    vars.push(env(
        pod_env::TLS_KEY,
        format!("{SECRET_MOUNT_DIR}/{SECRET_TLS_KEY}"),
    ));
    if config.camera_pod_require_gpu {
        vars.push(env(pod_env::REQUIRE_GPU, "true"));
    }
    vars.push(env("XDG_CACHE_HOME", "/var/cache/p2pcamera"));
    vars
}

/// The environment that configures the camera pod of `session`: [`base_env`], then the filter
/// (`P2PCAMERA_FILTER`, `P2PCAMERA_STYLE_INDEX`, `P2PCAMERA_BACKGROUND_COLOR`,
/// `P2PCAMERA_POSE_MODEL`, `P2PCAMERA_PARTS_OPACITY`, `P2PCAMERA_MODEL` + `P2PCAMERA_SHA256` +
/// `P2PCAMERA_MANIFEST` (a file path)), the video limits (`P2PCAMERA_MAX_WIDTH`, `_HEIGHT`,
/// `_FPS`, `P2PCAMERA_CODECS` as a comma-separated preference), `P2PCAMERA_TOKEN_FILE`, and with
/// `--public-ip-source node` `P2PCAMERA_AWAIT_PUBLIC_IP=true`: the pod waits for the operator to
/// hand it its node's public address (`POST /public-address`) once it runs there.
pub fn camera_pod_env(
    session: &CameraSession,
    class: &ResolvedClass,
    port: u16,
    config: &Config,
) -> Vec<EnvVar> {
    let spec = &session.spec;
    let mut vars = base_env(class, port, config);
    vars.push(env(pod_env::FILTER, spec.filter.name.as_str()));
    if let Some(index) = spec.filter.style_index {
        vars.push(env(pod_env::STYLE_INDEX, index.to_string()));
    }
    if let Some(colour) = &spec.filter.background_color {
        vars.push(env(pod_env::BACKGROUND_COLOR, colour.clone()));
    }
    if let Some(model) = spec.filter.pose_model {
        vars.push(env(pod_env::POSE_MODEL, model.as_str()));
    }
    if let Some(opacity) = spec.filter.parts_opacity {
        vars.push(env(pod_env::PARTS_OPACITY, opacity.to_string()));
    }
    if let Some(model) = &spec.filter.model {
        vars.push(env(pod_env::MODEL, model.url.clone()));
        vars.push(env(pod_env::SHA256, model.sha256.clone()));
        vars.push(env(
            pod_env::MANIFEST,
            format!("{MANIFEST_MOUNT_DIR}/manifest.json"),
        ));
    }
    let video = EffectiveVideo::of(spec, class);
    for (name, value) in [
        (pod_env::MAX_WIDTH, video.max_width),
        (pod_env::MAX_HEIGHT, video.max_height),
        (pod_env::MAX_FPS, video.max_fps),
    ] {
        if let Some(value) = value {
            vars.push(env(name, value.to_string()));
        }
    }
    if !video.codecs.is_empty() {
        let codecs: Vec<_> = video.codecs.iter().map(|c| c.as_str()).collect();
        vars.push(env(pod_env::CODECS, codecs.join(",")));
    }
    vars.push(env(
        pod_env::TOKEN_FILE,
        format!("{SECRET_MOUNT_DIR}/{SECRET_TOKEN}"),
    ));
    if config.public_ip_source == PublicIpSource::Node {
        vars.push(env(pod_env::AWAIT_PUBLIC_IP, "true"));
    }
    vars
}

/// The environment of a warm-pool pod of `class`: [`base_env`], the pool's filter with its
/// defaults, and `P2PCAMERA_CLAIM_TOKEN_FILE` (it starts unclaimed, with no session token).
pub fn pool_pod_env(
    class: &ResolvedClass,
    pool: &WarmPool,
    port: u16,
    config: &Config,
) -> Vec<EnvVar> {
    let mut vars = base_env(class, port, config);
    vars.push(env(pod_env::FILTER, pool.filter().as_str()));
    vars.push(env(
        pod_env::CLAIM_TOKEN_FILE,
        format!("{SECRET_MOUNT_DIR}/{SECRET_CLAIM_TOKEN}"),
    ));
    vars
}

fn http_probe(path: &str, port: u16, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(port)),
            scheme: Some("HTTPS".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The keys a session's pod mounts from its Secret.
const SESSION_SECRET_KEYS: &[&str] = &[SECRET_TOKEN, SECRET_TLS_CERT, SECRET_TLS_KEY];
/// The keys a warm-pool pod mounts from its Secret.
const POOL_SECRET_KEYS: &[&str] = &[SECRET_CLAIM_TOKEN, SECRET_TLS_CERT, SECRET_TLS_KEY];

fn volumes(secret: &MountedSecret, cache_limit: Quantity, with_manifest: bool) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: "p2pcamera".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                default_mode: Some(0o440),
                items: Some(
                    secret
                        .keys
                        .iter()
                        .map(|key| KeyToPath {
                            key: key.to_string(),
                            path: key.to_string(),
                            mode: None,
                        })
                        .collect(),
                ),
                optional: Some(false),
            }),
            ..Volume::default()
        },
        Volume {
            name: "cache".to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(cache_limit),
            }),
            ..Volume::default()
        },
    ];
    if with_manifest {
        volumes.push(Volume {
            name: "manifest".to_string(),
            downward_api: Some(DownwardAPIVolumeSource {
                default_mode: Some(0o444),
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "manifest.json".to_string(),
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{ANNOTATION_MANIFEST}']"),
                    }),
                    ..DownwardAPIVolumeFile::default()
                }]),
            }),
            ..Volume::default()
        });
    }
    volumes
}

fn merged_tolerations(defaults: &[Toleration], extra: &[Toleration]) -> Vec<Toleration> {
    let mut all = defaults.to_vec();
    for t in extra {
        if !all.contains(t) {
            all.push(t.clone());
        }
    }
    all
}

/// The extended resource pods of `class` ask GPUs of: the class's, else the operator's default.
pub fn gpu_resource<'a>(class: &'a ResolvedClass, config: &'a Config) -> &'a str {
    class
        .spec
        .gpu
        .resource_name
        .as_deref()
        .unwrap_or(&config.gpu_resource_name)
}

/// The port of the pod's separate `/metrics` listener: the session's port plus
/// `--camera-pod-metrics-port-offset`; `None` when the offset is 0 (no metrics listener).
pub fn metrics_port(port: u16, config: &Config) -> Option<u16> {
    (config.camera_pod_metrics_port_offset != 0)
        .then(|| port.checked_add(config.camera_pod_metrics_port_offset))
        .flatten()
}

/// The Secret a camera pod mounts at [`SECRET_MOUNT_DIR`], and which of its keys.
struct MountedSecret {
    name: String,
    keys: &'static [&'static str],
}

/// The spec of a camera pod of `class` on `port` (session or pool alike): one container with
/// `env`, its GPUs and limits, host network, the port as containerPort = hostPort, probes, the
/// mounted `secret` (and the manifest volume when `with_manifest`), locked-down security
/// context and the class's node placement.
fn camera_pod_spec(
    class: &ResolvedClass,
    config: &Config,
    port: u16,
    env: Vec<EnvVar>,
    secret: &MountedSecret,
    with_manifest: bool,
) -> PodSpec {
    let limits = &class.spec.resources;
    let memory = limits
        .memory
        .clone()
        .unwrap_or_else(|| Quantity(DEFAULT_MEMORY_LIMIT.into()));
    let container_limits = BTreeMap::from([
        (
            gpu_resource(class, config).to_string(),
            Quantity(class.spec.gpu.count.unwrap_or(1).to_string()),
        ),
        ("memory".to_string(), memory.clone()),
        (
            "ephemeral-storage".to_string(),
            limits
                .ephemeral_storage
                .clone()
                .unwrap_or_else(|| Quantity(DEFAULT_EPHEMERAL_STORAGE_LIMIT.into())),
        ),
    ]);
    let cache_limit = limits
        .model_cache
        .clone()
        .unwrap_or_else(|| Quantity(DEFAULT_MODEL_CACHE_LIMIT.into()));
    let mut node_selector = config.gpu_node_selector.clone();
    node_selector.extend(class.spec.node_selector.clone());
    let tolerations = merged_tolerations(&config.gpu_tolerations.0, &class.spec.tolerations);
    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(
            class
                .spec
                .image
                .clone()
                .unwrap_or_else(|| config.camera_pod_image.clone()),
        ),
        env: Some(env),
        ports: Some(
            [("signaling", port, "TCP"), ("media", port, "UDP")]
                .into_iter()
                .chain(metrics_port(port, config).map(|m| ("metrics", m, "TCP")))
                .map(|(port_name, number, protocol)| ContainerPort {
                    name: Some(port_name.to_string()),
                    container_port: i32::from(number),
                    host_port: Some(i32::from(number)),
                    protocol: Some(protocol.to_string()),
                    host_ip: None,
                })
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            limits: Some(container_limits),
            requests: Some(BTreeMap::from([("memory".to_string(), memory)])),
            ..ResourceRequirements::default()
        }),
        readiness_probe: Some(http_probe("/readyz", port, 2, 1)),
        // camera-pod writes the error that stops it; a panic or a kill leaves the log's end.
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        liveness_probe: Some(http_probe("/healthz", port, 10, 3)),
        volume_mounts: Some(
            vec![
                VolumeMount {
                    name: "p2pcamera".to_string(),
                    mount_path: SECRET_MOUNT_DIR.to_string(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
                VolumeMount {
                    name: "cache".to_string(),
                    mount_path: "/var/cache/p2pcamera".to_string(),
                    ..VolumeMount::default()
                },
            ]
            .into_iter()
            .chain(with_manifest.then(|| VolumeMount {
                name: "manifest".to_string(),
                mount_path: MANIFEST_MOUNT_DIR.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            }))
            .collect(),
        ),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    PodSpec {
        containers: vec![container],
        host_network: Some(true),
        dns_policy: Some("ClusterFirstWithHostNet".to_string()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        restart_policy: Some("Always".to_string()),
        termination_grace_period_seconds: Some(10),
        node_selector: (!node_selector.is_empty()).then_some(node_selector),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(volumes(secret, cache_limit, with_manifest)),
        ..PodSpec::default()
    }
}

/// The camera Pod of `session`, in `class`, on `port`, with the hash annotation set.
pub fn build_pod(
    session: &CameraSession,
    class: &ResolvedClass,
    port: u16,
    config: &Config,
) -> Result<Pod, BuildError> {
    let (name, _) = name_and_namespace(session)?;
    let spec = &session.spec;
    let manifest = spec
        .filter
        .model
        .as_ref()
        .filter(|_| spec.filter.name == FilterName::Custom);
    let secret = MountedSecret {
        name: child_name(name),
        keys: SESSION_SECRET_KEYS,
    };
    let pod_spec = camera_pod_spec(
        class,
        config,
        port,
        camera_pod_env(session, class, port, config),
        &secret,
        manifest.is_some(),
    );
    let mut annotations = BTreeMap::from([(ANNOTATION_PORT.to_string(), port.to_string())]);
    if let Some(model) = manifest {
        annotations.insert(
            ANNOTATION_MANIFEST.to_string(),
            serde_json::to_string(&model.manifest)?,
        );
    }
    let hash = pod_hash(spec, class, &annotations)?;
    annotations.insert(ANNOTATION_POD_HASH.to_string(), hash);
    let mut metadata = child_meta(session)?;
    metadata.annotations = Some(annotations);
    Ok(Pod {
        metadata,
        spec: Some(pod_spec),
        status: None,
    })
}

/// The pod hash: of the session's spec, its class's name and the pod's annotations (port,
/// manifest). Not of the class's contents nor of the operator's flags: a running pod keeps what it
/// was created with when an administrator edits its class (changes apply to the session's next
/// pod), so an edit never restarts every camera of a class at once.
fn pod_hash(
    spec: &CameraSessionSpec,
    class: &ResolvedClass,
    annotations: &BTreeMap<String, String>,
) -> Result<String, serde_json::Error> {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(spec)?);
    hasher.update(serde_json::to_vec(&class.name)?);
    hasher.update(serde_json::to_vec(annotations)?);
    Ok(hex::encode(&hasher.finalize()[..8]))
}

/// The hash a claimed warm-pool pod carries: of the session's spec, its class's name, the port and
/// the claiming session, so a later change of the spec replaces the pod as it would a session's
/// own pod, while the pod's start-up (the pool's, not the session's) never does.
pub fn claimed_pod_hash(
    session: &CameraSession,
    class: &ResolvedClass,
    port: u16,
) -> Result<String, BuildError> {
    let (name, namespace) = name_and_namespace(session)?;
    let annotations = BTreeMap::from([
        (ANNOTATION_PORT.to_string(), port.to_string()),
        (
            ANNOTATION_CLAIMED_BY.to_string(),
            format!("{namespace}/{name}"),
        ),
    ]);
    Ok(pod_hash(&session.spec, class, &annotations)?)
}

/// The labels of a warm-pool pod of class `class` named `pod` (and of its Secret).
pub fn pool_labels(class: &str, pod: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "camera-pod".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), pod.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_POOL.to_string(), class.to_string()),
    ])
}

/// A warm-pool pod of `class` named `name` in `namespace` on `port`, owned by the class (so
/// deleting the class removes its idle pods): no session, no token, the pool's filter warmed up,
/// a claim token and its own certificate from the Secret of the same name
/// ([`build_pool_secret`]).
pub fn build_pool_pod(
    class: &CameraClass,
    resolved: &ResolvedClass,
    pool: &WarmPool,
    namespace: &str,
    name: &str,
    port: u16,
    config: &Config,
) -> Pod {
    let secret = MountedSecret {
        name: name.to_string(),
        keys: POOL_SECRET_KEYS,
    };
    let spec = camera_pod_spec(
        resolved,
        config,
        port,
        pool_pod_env(resolved, pool, port, config),
        &secret,
        false,
    );
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(pool_labels(&class.name_any(), name)),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_PORT.to_string(),
                port.to_string(),
            )])),
            owner_references: class.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The Secret of warm-pool pod `pod` (created right after it, owned by it): the claim token only
/// the operator and the pod know, and the pod's own certificate, which the operator pins when it
/// claims the pod.
pub fn build_pool_secret(pod: &Pod, class: &str, material: &SecretMaterial) -> Secret {
    let name = pod.name_any();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: pod.metadata.namespace.clone(),
            labels: Some(pool_labels(class, &name)),
            owner_references: pod.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(secret_data(&[
            (SECRET_CLAIM_TOKEN, &material.token),
            (SECRET_TLS_CERT, &material.cert_pem),
            (SECRET_TLS_KEY, &material.key_pem),
        ])),
        ..Secret::default()
    }
}

/// The value of annotation `key` on `pod`.
pub fn pod_annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CameraClassSpec;
    use crate::fixtures::{config, session};

    /// Class `gpu-class` with `spec` (JSON, as an administrator writes it).
    fn class(spec: serde_json::Value) -> ResolvedClass {
        ResolvedClass {
            name: Some("gpu-class".into()),
            spec: serde_json::from_value(spec).expect("a valid class spec"),
        }
    }

    fn env_value<'a>(pod: &'a Pod, name: &str) -> Option<&'a EnvVar> {
        pod.spec.as_ref().unwrap().containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
    }

    #[test]
    fn pod_has_gpu_host_network_port_owner_and_secret_mount() {
        let s = session(serde_json::json!({}));
        let class = class(serde_json::json!({
            "gpu": {"count": 2}, "nodeSelector": {"zone": "a"},
            "resources": {"memory": "6Gi", "modelCache": "1Gi"}
        }));
        let pod = build_pod(&s, &class, 40007, &config()).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("cam1-p2pcamera"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("team"));
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("CameraSession", "uid-1", Some(true))
        );
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_SESSION], "cam1");
        assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(pod_annotation(&pod, ANNOTATION_PORT), Some("40007"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        let selector = spec.node_selector.as_ref().unwrap();
        assert_eq!(
            (selector["gpu"].as_str(), selector["zone"].as_str()),
            ("yes", "a")
        );
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("camera-pod:test"));
        assert_eq!(
            c.resources.as_ref().unwrap().limits.as_ref().unwrap()["nvidia.com/gpu"],
            Quantity("2".into())
        );
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["memory"], Quantity("6Gi".into()));
        assert_eq!(
            limits["ephemeral-storage"],
            Quantity(DEFAULT_EPHEMERAL_STORAGE_LIMIT.into())
        );
        let cache = spec.volumes.as_ref().unwrap()[1]
            .empty_dir
            .as_ref()
            .unwrap();
        assert_eq!(cache.size_limit, Some(Quantity("1Gi".into())));
        let ports: Vec<_> = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p.name.as_deref().unwrap(),
                    p.container_port,
                    p.host_port,
                    p.protocol.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("signaling", 40007, Some(40007), "TCP"),
                ("media", 40007, Some(40007), "UDP"),
                ("metrics", 41007, Some(41007), "TCP"),
            ]
        );
        assert_eq!(
            env_value(&pod, pod_env::METRICS_LISTEN)
                .unwrap()
                .value
                .as_deref(),
            Some("0.0.0.0:41007")
        );
        assert_eq!(
            env_value(&pod, pod_env::MAX_DECODE_WIDTH)
                .unwrap()
                .value
                .as_deref(),
            Some("1920")
        );
        assert!(env_value(&pod, pod_env::MODEL_ALLOWED_HOSTS).is_none());
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        assert_eq!(probe.port, IntOrString::Int(40007));
        assert_eq!(probe.scheme.as_deref(), Some("HTTPS"));
        assert_eq!(
            c.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        assert_eq!(
            env_value(&pod, pod_env::LISTEN).unwrap().value.as_deref(),
            Some("0.0.0.0:40007")
        );
        assert_eq!(
            env_value(&pod, pod_env::UDP_PORT).unwrap().value.as_deref(),
            Some("40007")
        );
        let ip = env_value(&pod, pod_env::PUBLIC_IP).unwrap();
        assert_eq!(
            ip.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "status.hostIP"
        );
        assert_eq!(
            env_value(&pod, pod_env::FILTER).unwrap().value.as_deref(),
            Some("selfie-blur")
        );
        let secret = spec.volumes.as_ref().unwrap()[0].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("cam1-p2pcamera"));
        assert_eq!(
            c.volume_mounts.as_ref().unwrap()[0].mount_path,
            SECRET_MOUNT_DIR
        );
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
        assert_eq!(
            env_value(&pod, pod_env::REQUIRE_GPU)
                .unwrap()
                .value
                .as_deref(),
            Some("true")
        );
    }

    #[test]
    fn camera_pods_may_run_on_cpu_when_the_operator_allows_it() {
        let cpu = Config {
            camera_pod_require_gpu: false,
            ..config()
        };
        let pod = build_pod(
            &session(serde_json::json!({})),
            &ResolvedClass::built_in(),
            40007,
            &cpu,
        )
        .unwrap();
        assert!(env_value(&pod, pod_env::REQUIRE_GPU).is_none());
    }

    #[test]
    fn class_resource_name_overrides_default() {
        let s = session(serde_json::json!({}));
        let class = class(serde_json::json!({"gpu": {"resourceName": "amd.com/gpu"}}));
        let pod = build_pod(&s, &class, 40000, &config()).unwrap();
        let limits = pod.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap()
            .limits
            .unwrap();
        assert_eq!(
            limits.keys().collect::<Vec<_>>(),
            ["amd.com/gpu", "ephemeral-storage", "memory"]
        );
        assert_eq!(limits["amd.com/gpu"], Quantity("1".into()));
    }

    #[test]
    fn custom_model_mounts_manifest_and_sets_env() {
        let s = session(serde_json::json!({"filter": {"name": "custom", "model": {
            "url": "https://models.example/m.onnx", "sha256": "ab".repeat(32),
            "manifest": {"input": "x", "layout": "NCHW", "width": 256, "height": 256, "output": "mask", "composite": "blur"}
        }}, "video": {"maxFps": 24, "codecs": ["H264", "VP8"]}}));
        let class = class(serde_json::json!({
            "allowedFilters": ["custom"],
            "models": {"allowedHosts": ["models.example"]}
        }));
        let pod = build_pod(&s, &class, 40001, &config()).unwrap();
        assert_eq!(
            env_value(&pod, pod_env::MODEL_ALLOWED_HOSTS)
                .unwrap()
                .value
                .as_deref(),
            Some("models.example")
        );
        let manifest: serde_json::Value =
            serde_json::from_str(pod_annotation(&pod, ANNOTATION_MANIFEST).unwrap()).unwrap();
        assert_eq!(manifest["layout"], "NCHW");
        assert_eq!(
            env_value(&pod, pod_env::MODEL).unwrap().value.as_deref(),
            Some("https://models.example/m.onnx")
        );
        assert_eq!(
            env_value(&pod, pod_env::MANIFEST).unwrap().value.as_deref(),
            Some("/var/run/p2pcamera-model/manifest.json")
        );
        assert_eq!(
            env_value(&pod, pod_env::CODECS).unwrap().value.as_deref(),
            Some("H264,VP8")
        );
        assert_eq!(
            env_value(&pod, pod_env::MAX_FPS).unwrap().value.as_deref(),
            Some("24")
        );
        let spec = pod.spec.unwrap();
        assert!(
            spec.volumes
                .unwrap()
                .iter()
                .any(|v| v.downward_api.is_some())
        );
        let mounts = spec.containers[0].volume_mounts.clone().unwrap();
        assert!(mounts.iter().any(|m| m.mount_path == MANIFEST_MOUNT_DIR));
    }

    #[test]
    fn hash_is_stable_and_follows_the_spec() {
        let a = session(serde_json::json!({}));
        let hash = |s: &CameraSession, port| {
            pod_annotation(
                &build_pod(s, &ResolvedClass::built_in(), port, &config()).unwrap(),
                ANNOTATION_POD_HASH,
            )
            .unwrap()
            .to_string()
        };
        assert_eq!(hash(&a, 40000), hash(&a, 40000));
        let b = session(serde_json::json!({"filter": {"name": "passthrough"}}));
        assert_ne!(hash(&a, 40000), hash(&b, 40000));
        assert_ne!(hash(&a, 40000), hash(&a, 40001));
    }

    #[test]
    fn editing_a_class_does_not_replace_its_running_pods() {
        let s = session(serde_json::json!({}));
        let hash = |class: &ResolvedClass| {
            let pod = build_pod(&s, class, 40000, &config()).unwrap();
            pod_annotation(&pod, ANNOTATION_POD_HASH)
                .unwrap()
                .to_string()
        };
        let before = class(serde_json::json!({"image": "camera-pod:1"}));
        let edited =
            class(serde_json::json!({"image": "camera-pod:2", "resources": {"memory": "1Gi"}}));
        assert_eq!(hash(&before), hash(&edited));
        // Moving the session to another class is a change of the session: a new pod.
        assert_ne!(hash(&before), hash(&ResolvedClass::built_in()));
    }

    #[test]
    fn a_pod_waits_for_its_nodes_public_address_only_when_the_node_gives_it() {
        let s = session(serde_json::json!({}));
        let node = build_pod(&s, &ResolvedClass::built_in(), 40000, &config()).unwrap();
        assert_eq!(
            env_value(&node, pod_env::AWAIT_PUBLIC_IP)
                .unwrap()
                .value
                .as_deref(),
            Some("true")
        );
        assert_eq!(node.spec.as_ref().unwrap().node_name, None, "never pinned");
        let host = Config {
            public_ip_source: PublicIpSource::Host,
            ..config()
        };
        let pod = build_pod(&s, &ResolvedClass::built_in(), 40000, &host).unwrap();
        assert!(env_value(&pod, pod_env::AWAIT_PUBLIC_IP).is_none());
        assert_eq!(
            pod_annotation(&pod, ANNOTATION_POD_HASH),
            pod_annotation(&node, ANNOTATION_POD_HASH),
            "switching the source replaces no running pod"
        );
    }

    #[test]
    fn pods_of_a_relaying_class_get_the_turn_urls_over_udp_and_others_nothing_new() {
        let s = session(serde_json::json!({}));
        let turn = Config {
            camera_pod_turn_urls: vec![
                "turns:turn.example:443?transport=tcp".into(),
                "turn:p2pcamera-turn.p2pcamera.svc:3478?transport=udp".into(),
            ],
            ..config()
        };
        let pool = WarmPool::default();
        let camera_class = CameraClass::new("gpu-class", CameraClassSpec::default());
        for (relay, value) in [("Also", "also"), ("Only", "only")] {
            let relaying = class(serde_json::json!({"relay": relay}));
            let session_pod = build_pod(&s, &relaying, 40000, &turn).unwrap();
            let pool_pod =
                build_pool_pod(&camera_class, &relaying, &pool, "team", "w", 40001, &turn);
            for pod in [&session_pod, &pool_pod] {
                assert_eq!(
                    env_value(pod, pod_env::RELAY_CANDIDATES).and_then(|e| e.value.as_deref()),
                    Some(value)
                );
                assert_eq!(
                    env_value(pod, pod_env::TURN_URLS).and_then(|e| e.value.as_deref()),
                    Some("turn:p2pcamera-turn.p2pcamera.svc:3478?transport=udp")
                );
            }
            // The relay is the class's: switching it on replaces no running pod.
            assert_eq!(
                pod_annotation(&session_pod, ANNOTATION_POD_HASH),
                pod_annotation(
                    &build_pod(&s, &class(serde_json::json!({})), 40000, &turn).unwrap(),
                    ANNOTATION_POD_HASH
                )
            );
        }
        // A class that does not relay gets exactly the pod it got before there were TURN URLs.
        let off = class(serde_json::json!({"relay": "Off"}));
        let without = build_pod(&s, &off, 40000, &config()).unwrap();
        assert_eq!(build_pod(&s, &off, 40000, &turn).unwrap(), without);
        assert_eq!(
            build_pod(&s, &class(serde_json::json!({})), 40000, &config()).unwrap(),
            without
        );
        assert!(env_value(&without, pod_env::RELAY_CANDIDATES).is_none());
        assert!(env_value(&without, pod_env::TURN_URLS).is_none());
        assert_eq!(
            build_pool_pod(&camera_class, &off, &pool, "team", "w", 40001, &turn),
            build_pool_pod(&camera_class, &off, &pool, "team", "w", 40001, &config())
        );
    }

    #[test]
    fn secret_holds_token_and_certificate() {
        let s = session(serde_json::json!({}));
        let material = SecretMaterial::generate("team", "cam1").unwrap();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&material.token)
            .unwrap();
        assert_eq!(token.len(), 32);
        assert_ne!(
            material.token,
            SecretMaterial::generate("team", "cam1").unwrap().token
        );
        let secret = build_secret(&s, &material).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("cam1-p2pcamera"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let data = secret.data.unwrap();
        assert!(
            String::from_utf8_lossy(&data[SECRET_TLS_CERT].0)
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(String::from_utf8_lossy(&data[SECRET_TLS_KEY].0).contains("PRIVATE KEY"));
        assert_eq!(data[SECRET_TOKEN].0, material.token.as_bytes());
        assert!(secret.metadata.owner_references.unwrap()[0].controller == Some(true));
    }

    #[test]
    fn session_without_namespace_is_an_error_not_a_panic() {
        let mut s = session(serde_json::json!({}));
        s.metadata.namespace = None;
        assert!(matches!(
            build_pod(&s, &ResolvedClass::built_in(), 1, &config()),
            Err(BuildError::MissingMetadata("namespace"))
        ));
    }
}
