//! Names of the Kubernetes objects, labels, annotations and Secret keys that the operator writes
//! and the router (or a camera pod) reads.

/// API group of p2pcamera's custom resources.
pub const GROUP: &str = "p2pcamera.io";
/// Version of the CameraSession resource.
pub const VERSION: &str = "v1alpha1";
/// Kind of the session resource.
pub const SESSION_KIND: &str = "CameraSession";
/// Plural (URL) name of the session resource.
pub const SESSION_PLURAL: &str = "camerasessions";
/// CameraClass annotation: `"true"` marks the class of sessions that name none.
pub const ANNOTATION_DEFAULT_CLASS: &str = "p2pcamera.io/is-default-class";

/// Field manager of the operator's server-side applies.
pub const FIELD_MANAGER: &str = "p2pcamera-operator";
/// Value of `app.kubernetes.io/managed-by` on everything the operator creates.
pub const MANAGED_BY: &str = "p2pcamera-operator";
/// Label key `app.kubernetes.io/managed-by`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label on a session's Pod and Secret: the session's name.
pub const LABEL_SESSION: &str = "p2pcamera.io/session";

/// Label on a warm-pool pod and its Secret: the CameraClass whose pool it belongs to. A pool pod
/// without [`LABEL_SESSION`] is idle; claiming adds [`LABEL_SESSION`] (the pod never goes back).
pub const LABEL_POOL: &str = "p2pcamera.io/pool";
/// Pod annotation on a claimed warm-pool pod: `namespace/name` of the session that claimed it.
pub const ANNOTATION_CLAIMED_BY: &str = "p2pcamera.io/claimed-by";
/// Pod annotation: the session's media UDP port.
pub const ANNOTATION_PORT: &str = "p2pcamera.io/port";
/// Pod annotation: hash of what the pod was built from (a change replaces the pod).
pub const ANNOTATION_POD_HASH: &str = "p2pcamera.io/pod-hash";
/// Pod annotation: the custom model's manifest (mounted into the pod as a file).
pub const ANNOTATION_MANIFEST: &str = "p2pcamera.io/manifest";
/// Session annotation: wake an Idle session (the operator removes it).
pub const ANNOTATION_WAKE: &str = "p2pcamera.io/wake";

/// Session Secret key: the bearer token camera-pod accepts (only the router holds it otherwise).
pub const SECRET_TOKEN: &str = "token";
/// Session Secret key: camera-pod's self-signed certificate (the router and operator pin it).
pub const SECRET_TLS_CERT: &str = "tls.crt";
/// Session Secret key: camera-pod's private key.
pub const SECRET_TLS_KEY: &str = "tls.key";
/// Warm-pool pod Secret key: the token the operator claims the pod with (only the operator and
/// the pod hold it). The pool pod's Secret also has its own `tls.crt` / `tls.key`.
pub const SECRET_CLAIM_TOKEN: &str = "claim-token";

/// Name of the camera container in the session's pod.
pub const CONTAINER: &str = "camera-pod";
/// Where the session Secret is mounted in the pod.
pub const SECRET_MOUNT_DIR: &str = "/var/run/p2pcamera";
/// Where a custom model's manifest is mounted in the pod.
pub const MANIFEST_MOUNT_DIR: &str = "/var/run/p2pcamera-model";

/// `<session>-p2pcamera`: the name of a session's Pod and Secret.
pub fn child_name(session: &str) -> String {
    format!("{session}-p2pcamera")
}

/// The label selector of the Secrets and Pods the operator manages.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_objects_are_named_after_the_session() {
        assert_eq!(child_name("cam"), "cam-p2pcamera");
        assert_eq!(
            managed_selector(),
            "app.kubernetes.io/managed-by=p2pcamera-operator"
        );
    }
}
