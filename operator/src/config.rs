//! Configuration of `operator run`: clap derive, every flag also read from a `P2PCAMERA_*`
//! environment variable.
//!
//! Namespaces: one namespace (`--namespace`) or, by default, all of them. The public address:
//! see [`PublicIpSource`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Toleration;
use p2pcamera_api::relay::is_udp_turn_url;

use crate::ports::PortRange;

/// Which address camera pods advertise to browsers (ICE, NAT 1:1).
///
/// A pod is created before the scheduler picks its node, so its first environment takes the
/// node's address from the downward API (`status.hostIP`, the address the kubelet reports).
/// - `host`: that is the public address; `status.publicAddress` is the pod's host IP.
/// - `node` (default): the public address is the Node's ExternalIP, else its InternalIP. The pod
///   starts with `P2PCAMERA_AWAIT_PUBLIC_IP=true` and is not ready until the operator, once the pod
///   runs on its node, hands it that node's address (`POST /public-address` over HTTPS pinned to the
///   session's certificate, with the token derived from its key, [`p2pcamera_api::operator_token`]). The pod starts once;
///   its warm-up and the hand-over overlap. A warm-pool pod gets the address with its claim.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublicIpSource {
    /// The pod's host IP (downward API `status.hostIP`).
    Host,
    /// The node's ExternalIP, else its InternalIP.
    Node,
}

/// Settings of the controller and its leader election.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Namespace to watch; all namespaces when absent.
    #[arg(long, env = "P2PCAMERA_NAMESPACE")]
    pub namespace: Option<String>,

    /// Ports for camera pods, `FIRST-LAST`; each session takes one port for TCP and UDP.
    #[arg(long, env = "P2PCAMERA_PORT_RANGE", default_value = "40000-40999")]
    pub port_range: PortRange,

    /// camera-pod image used when a session names none.
    #[arg(
        long,
        env = "P2PCAMERA_CAMERA_POD_IMAGE",
        default_value = "ghcr.io/p2pcamera/camera-pod:0.1.0"
    )]
    pub camera_pod_image: String,

    /// Extended resource name of GPUs when a session names none.
    #[arg(
        long,
        env = "P2PCAMERA_GPU_RESOURCE_NAME",
        default_value = "nvidia.com/gpu"
    )]
    pub gpu_resource_name: String,

    /// Node selector for every camera pod, as a JSON or YAML map (sessions add to it).
    #[arg(long, env = "P2PCAMERA_GPU_NODE_SELECTOR", default_value = "{}", value_parser = parse_node_selector)]
    pub gpu_node_selector: BTreeMap<String, String>,

    /// Tolerations for every camera pod, as a JSON or YAML list (sessions add to it).
    #[arg(long, env = "P2PCAMERA_GPU_TOLERATIONS", default_value = "[]", value_parser = parse_tolerations, allow_hyphen_values = true)]
    pub gpu_tolerations: Tolerations,

    /// Which address camera pods advertise to browsers.
    #[arg(
        long,
        env = "P2PCAMERA_PUBLIC_IP_SOURCE",
        value_enum,
        default_value = "node"
    )]
    pub public_ip_source: PublicIpSource,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "P2PCAMERA_LEASE_NAME",
        default_value = "p2pcamera-operator"
    )]
    pub lease_name: String,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "P2PCAMERA_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Identity in the Lease; the host name (pod name) when absent.
    #[arg(long, env = "P2PCAMERA_IDENTITY")]
    pub identity: Option<String>,

    /// Camera pods stay unready unless models run on a GPU execution provider (`--require-gpu`);
    /// `false` lets them serve on CPU (clusters or test nodes without a working GPU).
    #[arg(long, env = "P2PCAMERA_CAMERA_POD_REQUIRE_GPU", default_value_t = true, action = clap::ArgAction::Set)]
    pub camera_pod_require_gpu: bool,

    /// Restarts of the camera container after which the session is Failed and its pod recreated.
    #[arg(long, env = "P2PCAMERA_CRASH_RESTART_LIMIT", default_value_t = 5)]
    pub crash_restart_limit: i32,

    /// Wait after a crash loop before the pod is recreated, e.g. `60s`.
    #[arg(long, env = "P2PCAMERA_CRASH_BACKOFF", default_value = "60s", value_parser = parse_duration)]
    pub crash_backoff: Duration,

    /// Interval between polls of a ready camera pod's `/status`: for its idle timeout, and until its
    /// first filtered frame for the start times (at least 1s).
    #[arg(long, env = "P2PCAMERA_IDLE_POLL_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub idle_poll_interval: Duration,
    /// Camera pods serve /metrics on their own port, the session's port plus this offset
    /// (declared as a hostPort, so the scheduler keeps it free); 0: no metrics listener. Keep
    /// these ports closed to the internet (docs/operations.md).
    #[arg(
        long,
        env = "P2PCAMERA_CAMERA_POD_METRICS_PORT_OFFSET",
        default_value_t = 1000
    )]
    pub camera_pod_metrics_port_offset: u16,

    /// TURN URLs the camera pods of relaying classes (CameraClass `spec.relay` `Also` or `Only`)
    /// relay through, comma-separated, e.g. `turn:p2pcamera-turn.<namespace>.svc:3478?transport=udp`;
    /// only `turn:` over UDP is used. The credential comes with each offer, from the router.
    #[arg(long, env = "P2PCAMERA_CAMERA_POD_TURN_URLS", value_delimiter = ',')]
    pub camera_pod_turn_urls: Vec<String>,
}

/// Tolerations list (a named type so clap does not treat it as a repeated flag).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tolerations(pub Vec<Toleration>);

/// Flags that parse but do not fit together.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--camera-pod-metrics-port-offset {offset} puts metrics ports on session ports: it must be 0 or larger than the width of --port-range {first}-{last}"
    )]
    MetricsPortsOverlap { offset: u16, first: u16, last: u16 },
    #[error(
        "--camera-pod-metrics-port-offset {offset} puts the metrics port of --port-range's last port {last} beyond 65535"
    )]
    MetricsPortsBeyondRange { offset: u16, last: u16 },
}

impl Config {
    /// Checks the flags that depend on each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (offset, PortRange { first, last }) =
            (self.camera_pod_metrics_port_offset, self.port_range);
        if offset == 0 {
            return Ok(());
        }
        if offset <= last - first {
            return Err(ConfigError::MetricsPortsOverlap {
                offset,
                first,
                last,
            });
        }
        if last.checked_add(offset).is_none() {
            return Err(ConfigError::MetricsPortsBeyondRange { offset, last });
        }
        Ok(())
    }

    /// The `--camera-pod-turn-urls` camera pods can relay through: `turn:` over UDP
    /// ([`is_udp_turn_url`]), trimmed; empty when there is none.
    pub fn camera_pod_relay_urls(&self) -> Vec<&str> {
        self.camera_pod_turn_urls
            .iter()
            .map(|url| url.trim())
            .filter(|url| is_udp_turn_url(url))
            .collect()
    }

    /// The Lease identity: the configured one, else `HOSTNAME`, else a random one.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("operator-{:016x}", rand::random::<u64>()))
    }
}

/// Parses a JSON or YAML map of node labels.
pub fn parse_node_selector(text: &str) -> Result<BTreeMap<String, String>, String> {
    serde_saphyr::from_str(text).map_err(|e| format!("node selector must be a map of strings: {e}"))
}

/// Parses a JSON or YAML list of tolerations.
pub fn parse_tolerations(text: &str) -> Result<Tolerations, String> {
    serde_saphyr::from_str(text)
        .map(Tolerations)
        .map_err(|e| format!("tolerations must be a list of Kubernetes tolerations: {e}"))
}

/// Parses a duration such as `90s`, `15m`, `1h30m` (units `h`, `m`, `s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}: expected e.g. 30s, 15m, 1h30m");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid()),
        };
        let value: u64 = digits.parse().map_err(|_| invalid())?;
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(invalid)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn metrics_ports_must_stay_off_session_ports() {
        let config = |offset, first, last| Config {
            camera_pod_metrics_port_offset: offset,
            port_range: PortRange { first, last },
            ..crate::fixtures::config()
        };
        assert_eq!(config(1000, 40000, 40999).validate(), Ok(()));
        assert_eq!(config(0, 40000, 40999).validate(), Ok(()));
        assert_eq!(
            config(999, 40000, 40999).validate(),
            Err(ConfigError::MetricsPortsOverlap {
                offset: 999,
                first: 40000,
                last: 40999
            })
        );
        assert_eq!(
            config(30000, 40000, 40999).validate(),
            Err(ConfigError::MetricsPortsBeyondRange {
                offset: 30000,
                last: 40999
            })
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        for bad in ["", "10", "5d", "m", "1h-2m", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn defaults() {
        let c = Wrapper::try_parse_from(["x"]).unwrap().config;
        assert_eq!(
            c.port_range,
            PortRange {
                first: 40000,
                last: 40999
            }
        );
        assert_eq!(c.gpu_resource_name, "nvidia.com/gpu");
        assert!(c.gpu_node_selector.is_empty());
        assert_eq!(c.gpu_tolerations, Tolerations::default());
        assert_eq!(c.public_ip_source, PublicIpSource::Node);
        assert_eq!(c.idle_poll_interval, Duration::from_secs(15));
        assert!(c.camera_pod_turn_urls.is_empty());
    }

    #[test]
    fn camera_pods_relay_through_the_turn_urls_over_udp() {
        let c = Wrapper::try_parse_from([
            "x",
            "--camera-pod-turn-urls",
            "turns:turn.example:443?transport=tcp, turn:p2pcamera-turn.p2pcamera.svc:3478?transport=udp,turn:turn.example:3478?transport=tcp,turn:turn.example:3478",
        ])
        .unwrap()
        .config;
        assert_eq!(c.camera_pod_turn_urls.len(), 4);
        assert_eq!(
            c.camera_pod_relay_urls(),
            [
                "turn:p2pcamera-turn.p2pcamera.svc:3478?transport=udp",
                "turn:turn.example:3478"
            ]
        );
        let browsers_only = Wrapper::try_parse_from([
            "x",
            "--camera-pod-turn-urls",
            "turns:turn.example:443?transport=tcp",
        ])
        .unwrap()
        .config;
        assert!(browsers_only.camera_pod_relay_urls().is_empty());
    }

    #[test]
    fn selectors_and_tolerations_from_json_or_yaml() {
        let c = Wrapper::try_parse_from([
            "x",
            "--gpu-node-selector",
            r#"{"gpu": "true"}"#,
            "--gpu-tolerations",
            "- key: nvidia.com/gpu\n  operator: Exists\n  effect: NoSchedule\n",
        ])
        .unwrap()
        .config;
        assert_eq!(
            c.gpu_node_selector.get("gpu").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            c.gpu_tolerations.0[0].key.as_deref(),
            Some("nvidia.com/gpu")
        );
        assert!(Wrapper::try_parse_from(["x", "--gpu-tolerations", "{not: a list}"]).is_err());
        assert!(Wrapper::try_parse_from(["x", "--port-range", "9-1"]).is_err());
    }
}
