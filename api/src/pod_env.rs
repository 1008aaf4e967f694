//! Environment variables that configure camera-pod. camera-pod's command line reads each of them
//! as the fallback of its flag; the operator sets them on the pods it creates.

pub const LISTEN: &str = "P2PCAMERA_LISTEN";
pub const PLAIN_HTTP: &str = "P2PCAMERA_PLAIN_HTTP";
pub const TLS_CERT: &str = "P2PCAMERA_TLS_CERT";
pub const TLS_KEY: &str = "P2PCAMERA_TLS_KEY";
pub const TOKEN: &str = "P2PCAMERA_TOKEN";
pub const TOKEN_FILE: &str = "P2PCAMERA_TOKEN_FILE";
pub const UDP_BIND: &str = "P2PCAMERA_UDP_BIND";
pub const UDP_PORT: &str = "P2PCAMERA_UDP_PORT";
pub const PUBLIC_IP: &str = "P2PCAMERA_PUBLIC_IP";
pub const MIN_BITRATE: &str = "P2PCAMERA_MIN_BITRATE";
pub const MAX_BITRATE: &str = "P2PCAMERA_MAX_BITRATE";
pub const START_BITRATE: &str = "P2PCAMERA_START_BITRATE";
pub const MAX_WIDTH: &str = "P2PCAMERA_MAX_WIDTH";
pub const MAX_HEIGHT: &str = "P2PCAMERA_MAX_HEIGHT";
pub const MAX_FPS: &str = "P2PCAMERA_MAX_FPS";
pub const CODECS: &str = "P2PCAMERA_CODECS";
pub const TRANSCODE_PASSTHROUGH: &str = "P2PCAMERA_TRANSCODE_PASSTHROUGH";
pub const REQUIRE_GPU: &str = "P2PCAMERA_REQUIRE_GPU";
pub const LOG_FORMAT: &str = "P2PCAMERA_LOG_FORMAT";
pub const TERMINATION_LOG: &str = "P2PCAMERA_TERMINATION_LOG";
pub const FILTER: &str = "P2PCAMERA_FILTER";
pub const BLUR_STRENGTH: &str = "P2PCAMERA_BLUR_STRENGTH";
pub const STYLE_INDEX: &str = "P2PCAMERA_STYLE_INDEX";
pub const BACKGROUND_COLOR: &str = "P2PCAMERA_BACKGROUND_COLOR";
pub const BACKGROUND_IMAGE: &str = "P2PCAMERA_BACKGROUND_IMAGE";
pub const POSE_MODEL: &str = "P2PCAMERA_POSE_MODEL";
pub const PARTS_OPACITY: &str = "P2PCAMERA_PARTS_OPACITY";
pub const MODEL: &str = "P2PCAMERA_MODEL";
pub const SHA256: &str = "P2PCAMERA_SHA256";
pub const MANIFEST: &str = "P2PCAMERA_MANIFEST";
pub const MODEL_CACHE_DIR: &str = "P2PCAMERA_MODEL_CACHE_DIR";
pub const MODEL_CA_FILE: &str = "P2PCAMERA_MODEL_CA_FILE";
pub const ONNXRUNTIME_LIB: &str = "P2PCAMERA_ONNXRUNTIME_LIB";
pub const EXECUTION_PROVIDER: &str = "P2PCAMERA_EXECUTION_PROVIDER";
pub const INTRA_OP_THREADS: &str = "P2PCAMERA_INTRA_OP_THREADS";
pub const DEDICATED_MACHINE: &str = "P2PCAMERA_DEDICATED_MACHINE";
pub const MODEL_ALLOWED_HOSTS: &str = "P2PCAMERA_MODEL_ALLOWED_HOSTS";
pub const MODEL_ALLOWED_DIGESTS: &str = "P2PCAMERA_MODEL_ALLOWED_DIGESTS";
pub const MODEL_MAX_BYTES: &str = "P2PCAMERA_MODEL_MAX_BYTES";
pub const MODEL_DOWNLOAD_TIMEOUT: &str = "P2PCAMERA_MODEL_DOWNLOAD_TIMEOUT";
/// Largest decoded camera picture, width in pixels.
pub const MAX_DECODE_WIDTH: &str = "P2PCAMERA_MAX_DECODE_WIDTH";
/// Largest decoded camera picture, height in pixels.
pub const MAX_DECODE_HEIGHT: &str = "P2PCAMERA_MAX_DECODE_HEIGHT";
/// Separate plain-HTTP listener of `/metrics`.
pub const METRICS_LISTEN: &str = "P2PCAMERA_METRICS_LISTEN";
/// Most seconds from the answer until the camera's peer connection is connected.
pub const CONNECT_DEADLINE: &str = "P2PCAMERA_CONNECT_DEADLINE";
/// Serve without a bearer token although listening off loopback (loud warnings).
pub const INSECURE_NO_TOKEN: &str = "P2PCAMERA_INSECURE_NO_TOKEN";
/// Seconds an HTTP client has to send a request's headers, and again its body.
pub const REQUEST_TIMEOUT: &str = "P2PCAMERA_REQUEST_TIMEOUT";
/// Most HTTP connections served at once, per listener.
pub const MAX_CONNECTIONS: &str = "P2PCAMERA_MAX_CONNECTIONS";
/// Seconds a connected camera may send no media before a new offer takes the camera over.
pub const TAKEOVER_AFTER: &str = "P2PCAMERA_TAKEOVER_AFTER";
/// Whether the pod gathers TURN relay candidates: `off`, `also`, `only` (its CameraClass's `relay`).
pub const RELAY_CANDIDATES: &str = "P2PCAMERA_RELAY_CANDIDATES";
/// Comma-separated TURN URLs the pod relays through (`turn:host:port?transport=udp`); the
/// credential comes with each offer.
pub const TURN_URLS: &str = "P2PCAMERA_TURN_URLS";
/// File holding the claim token of a warm-pool pod. When set, camera-pod starts unclaimed: it
/// warms its filter up, reports ready, serves no camera, and waits for `POST /claim` with this
/// token to hand it a session ([`crate::wire::ClaimRequest`]).
pub const CLAIM_TOKEN_FILE: &str = "P2PCAMERA_CLAIM_TOKEN_FILE";
/// `true`: the pod is not ready until the operator hands it its node's public address
/// (`POST /public-address`, [`crate::wire::PublicAddress`], authenticated by the
/// [`crate::operator_token`] of the pod's TLS key). The operator learns a node's public address
/// only once the pod is on the node, and hands it to the running pod instead of starting it again.
pub const AWAIT_PUBLIC_IP: &str = "P2PCAMERA_AWAIT_PUBLIC_IP";
