//! Prometheus metrics of one camera pod, prefixed `p2pcamera_pod_`. Durations in seconds; no
//! per-frame or per-peer labels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use p2pcamera_api::relay::{ConnectionPath, MediaPath, Transport};

use crate::media::forward::Route;
use crate::media::timeline::ConnectStage;

/// Peer connection states, as exported by the `peer_connection_state` gauge family.
pub const PEER_STATES: [&str; 6] = [
    "new",
    "connecting",
    "connected",
    "disconnected",
    "failed",
    "closed",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// An error code of the contract (`wrong_token`, `already_claimed`, ...).
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    /// `direct`, or `relay` when either side's candidate is a TURN relay.
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathTransportLabel {
    /// `direct` or `relay`.
    pub path: &'static str,
    /// How the camera's packets reach the first hop: `udp`, `tcp`, `tls`, or `unknown` while a
    /// relaying camera has not said.
    pub transport: &'static str,
}

/// Every `transport` label value of [`PathTransportLabel`].
const TRANSPORTS: [&str; 4] = ["udp", "tcp", "tls", "unknown"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

/// Histograms of seconds since an offer, one per connection stage.
type StageHistograms = Family<StageLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub frames_dropped: Counter,
    /// Camera frames dropped before the filter because they came faster than --max-fps.
    pub frames_over_max_fps: Counter,
    /// Camera frames sent back as they came (passthrough within the session's limits).
    pub frames_forwarded: Counter,
    /// 1 while the camera's frames are forwarded, 0 while they are transcoded.
    pub forwarding: Gauge,
    route_switches: Family<RouteLabel, Counter>,
    /// Camera RTP packets that came after a later one, in time to be used (resent on NACK or
    /// reordered on the way).
    pub rtp_packets_recovered: Counter,
    /// Camera RTP packets given up on after the reorder wait.
    pub rtp_packets_lost: Counter,
    /// Camera frames dropped while reassembled from RTP because they grew past the 4 MiB cap.
    pub frames_over_assembly_cap: Counter,
    /// Camera frames dropped undecoded because their picture is larger than the decode cap.
    pub frames_over_max_decode_size: Counter,
    /// Peer connections closed because they were not connected within --connect-deadline.
    pub peer_connect_timeouts: Counter,
    /// Data channels beyond a peer's first one, closed unserved.
    pub data_channels_refused: Counter,
    /// Live peers whose camera a new offer took over because they had sent no media for
    /// --takeover-after.
    pub peer_takeovers: Counter,
    /// HTTP connections closed at once because --max-connections were open.
    pub http_connections_refused: Counter,
    /// HTTP requests whose body did not arrive within --request-timeout (connection closed).
    pub http_request_timeouts: Counter,
    pub decode_seconds: Histogram,
    pub model_seconds: Histogram,
    pub encode_seconds: Histogram,
    /// The pod's own latency per frame: first RTP packet of a camera frame in to the last RTP
    /// packet of its filtered frame out (see `media::latency`).
    pub frame_latency_seconds: Histogram,
    /// Seconds from receiving an offer until its connection reached each stage
    /// (see `media::timeline`).
    connect_stage_seconds: StageHistograms,
    /// Bitrate the video encoder aims at now (bits per second), following the receiver's REMB.
    pub encoder_target_bitrate: Gauge,
    pub peer_connection_state: Family<StateLabel, Gauge>,
    pub offers: Family<ResultLabel, Counter>,
    /// Connected peers by the way the media reaches the pod.
    pub connections: Family<PathLabel, Counter>,
    /// ICE candidates browsers trickled after their offers (`POST /candidates`), added.
    pub trickled_candidates: Counter,
    /// 1 for the path and transport of the live (or last) connection, 0 for the others.
    connection_path: Family<PathTransportLabel, Gauge>,
    /// 1 once a warm-pool pod is claimed by its session; 0 before, and on a pod started with
    /// its session.
    pub claimed: Gauge,
    /// Warm-pool claims refused, by error code.
    claims_refused: Family<CodeLabel, Counter>,
}

fn duration_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.25, 0.5, 1.0,
    ]
    .into_iter()
}

/// From a fast loopback connection (milliseconds) to one that takes the whole connect deadline.
fn connect_stage_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("p2pcamera_pod");
        let metrics = Metrics {
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            frames_dropped: Counter::default(),
            frames_over_max_fps: Counter::default(),
            frames_forwarded: Counter::default(),
            forwarding: Gauge::default(),
            route_switches: Family::default(),
            rtp_packets_recovered: Counter::default(),
            rtp_packets_lost: Counter::default(),
            frames_over_assembly_cap: Counter::default(),
            frames_over_max_decode_size: Counter::default(),
            peer_connect_timeouts: Counter::default(),
            data_channels_refused: Counter::default(),
            peer_takeovers: Counter::default(),
            http_connections_refused: Counter::default(),
            http_request_timeouts: Counter::default(),
            decode_seconds: Histogram::new(duration_buckets()),
            model_seconds: Histogram::new(duration_buckets()),
            encode_seconds: Histogram::new(duration_buckets()),
            frame_latency_seconds: Histogram::new(duration_buckets()),
            connect_stage_seconds: Family::new_with_constructor(connect_stage_histogram),
            encoder_target_bitrate: Gauge::default(),
            peer_connection_state: Family::default(),
            offers: Family::default(),
            connections: Family::default(),
            connection_path: Family::default(),
            trickled_candidates: Counter::default(),
            claimed: Gauge::default(),
            claims_refused: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "frames_in",
            "Camera frames taken in whole: decoded, or forwarded as they came",
            metrics.frames_in.clone(),
        );
        registry.register(
            "frames_out",
            "Frames sent back: filtered and encoded, or the camera's own forwarded (passthrough)",
            metrics.frames_out.clone(),
        );
        registry.register(
            "frames_dropped",
            "Frames dropped because the filter was still busy with an older one",
            metrics.frames_dropped.clone(),
        );
        registry.register(
            "frames_over_max_fps",
            "Camera frames dropped before the filter because they came faster than --max-fps",
            metrics.frames_over_max_fps.clone(),
        );
        registry.register(
            "frames_forwarded",
            "Camera frames sent back as they came, neither decoded nor encoded (passthrough within the session's limits)",
            metrics.frames_forwarded.clone(),
        );
        registry.register(
            "forwarding",
            "1 while the camera's frames are forwarded as they came, 0 while they are decoded, filtered and encoded",
            metrics.forwarding.clone(),
        );
        registry.register(
            "route_switches",
            "Changes of the camera frames' route at a key frame, by the route taken: forward or transcode",
            metrics.route_switches.clone(),
        );
        registry.register(
            "rtp_packets_recovered",
            "Camera RTP packets that came after a later one (resent on NACK or reordered) in time to be used",
            metrics.rtp_packets_recovered.clone(),
        );
        registry.register(
            "rtp_packets_lost",
            "Camera RTP packets given up on after the reorder wait",
            metrics.rtp_packets_lost.clone(),
        );
        registry.register(
            "frames_over_assembly_cap",
            "Camera frames dropped while reassembled from RTP because they grew past 4 MiB",
            metrics.frames_over_assembly_cap.clone(),
        );
        registry.register(
            "frames_over_max_decode_size",
            "Camera frames dropped undecoded because their picture is larger than --max-decode-width x --max-decode-height",
            metrics.frames_over_max_decode_size.clone(),
        );
        registry.register(
            "peer_connect_timeouts",
            "Peer connections closed because they were not connected within --connect-deadline",
            metrics.peer_connect_timeouts.clone(),
        );
        registry.register(
            "data_channels_refused",
            "Data channels beyond a peer connection's first one, closed unserved",
            metrics.data_channels_refused.clone(),
        );
        registry.register(
            "peer_takeovers",
            "Live peer connections whose camera a new offer took over because they had sent no media for --takeover-after",
            metrics.peer_takeovers.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once because --max-connections were open",
            metrics.http_connections_refused.clone(),
        );
        registry.register(
            "http_request_timeouts",
            "HTTP requests whose body did not arrive within --request-timeout; their connection was closed",
            metrics.http_request_timeouts.clone(),
        );
        registry.register(
            "decode_duration_seconds",
            "Time to decode one frame",
            metrics.decode_seconds.clone(),
        );
        registry.register(
            "model_duration_seconds",
            "Time the filter takes for one frame",
            metrics.model_seconds.clone(),
        );
        registry.register(
            "encode_duration_seconds",
            "Time to encode one frame",
            metrics.encode_seconds.clone(),
        );
        registry.register(
            "frame_latency_seconds",
            "Seconds from the first RTP packet of a camera frame in to the last RTP packet of its filtered frame out",
            metrics.frame_latency_seconds.clone(),
        );
        registry.register(
            "connect_stage_seconds",
            "Seconds from receiving an offer until its connection reached a stage: answer_sent, ice_connected, dtls_connected, first_rtp_in, first_frame_out",
            metrics.connect_stage_seconds.clone(),
        );
        registry.register(
            "encoder_target_bitrate_bits_per_second",
            "Bitrate the video encoder aims at, within the configured bounds",
            metrics.encoder_target_bitrate.clone(),
        );
        registry.register(
            "peer_connection_state",
            "1 for the state the camera's peer connection is in",
            metrics.peer_connection_state.clone(),
        );
        registry.register(
            "offers",
            "WebRTC offers handled, by result",
            metrics.offers.clone(),
        );
        registry.register(
            "connections",
            "Connected peers by the way the media reaches the pod: direct, or relay (through a TURN server)",
            metrics.connections.clone(),
        );
        registry.register(
            "trickled_candidates",
            "ICE candidates browsers trickled after their offers (POST /candidates), added to their connections",
            metrics.trickled_candidates.clone(),
        );
        registry.register(
            "connection_path",
            "1 for the way the live (or last) connection's media goes (path direct or relay; transport of the camera's leg: udp, tcp, tls, or unknown until a relaying camera says), 0 for the others",
            metrics.connection_path.clone(),
        );
        registry.register(
            "claimed",
            "1 once this warm-pool pod is claimed by a session; 0 before, and on a pod started with its session",
            metrics.claimed.clone(),
        );
        registry.register(
            "claims_refused",
            "POST /claim requests refused, by error code",
            metrics.claims_refused.clone(),
        );
        for state in PEER_STATES {
            metrics
                .peer_connection_state
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(0);
        }
        // Every stage is exported (count 0) before the first connection reaches it.
        for stage in ConnectStage::ALL {
            drop(metrics.connect_stage_seconds.get_or_create(&StageLabel {
                stage: stage.as_str(),
            }));
        }
        Metrics {
            registry,
            ..metrics
        }
    }
}

fn path_name(path: MediaPath) -> &'static str {
    match path {
        MediaPath::Direct => "direct",
        MediaPath::Relay => "relay",
    }
}

impl Metrics {
    /// Counts a change of the camera frames' route to `route`.
    pub fn route_switched(&self, route: Route) {
        self.route_switches
            .get_or_create(&RouteLabel {
                route: route.as_str(),
            })
            .inc();
    }

    /// Marks `state` (one of [`PEER_STATES`]) as the current peer connection state.
    pub fn set_peer_state(&self, state: &str) {
        for known in PEER_STATES {
            let value = i64::from(known == state);
            self.peer_connection_state
                .get_or_create(&StateLabel {
                    state: known.into(),
                })
                .set(value);
        }
    }

    /// A connection reached `stage` `since_offer` after its offer was received.
    pub fn observe_connect_stage(&self, stage: ConnectStage, since_offer: std::time::Duration) {
        self.connect_stage_seconds
            .get_or_create(&StageLabel {
                stage: stage.as_str(),
            })
            .observe(since_offer.as_secs_f64());
    }

    /// A peer connected over `path`: counted, and the connection path now.
    pub fn count_connection(&self, path: ConnectionPath) {
        self.connections
            .get_or_create(&PathLabel {
                path: path_name(path.path),
            })
            .inc();
        self.set_connection_path(path);
    }

    /// Marks `path` as the live connection's path and transport.
    pub fn set_connection_path(&self, path: ConnectionPath) {
        let transport = match path.transport {
            Some(Transport::Udp) => "udp",
            Some(Transport::Tcp) => "tcp",
            Some(Transport::Tls) => "tls",
            None => "unknown",
        };
        for known_path in [MediaPath::Direct, MediaPath::Relay] {
            for known_transport in TRANSPORTS {
                let current = known_path == path.path && known_transport == transport;
                self.connection_path
                    .get_or_create(&PathTransportLabel {
                        path: path_name(known_path),
                        transport: known_transport,
                    })
                    .set(i64::from(current));
            }
        }
    }

    /// A warm-pool claim was refused with `code`.
    pub fn count_refused_claim(&self, code: p2pcamera_api::ErrorCode) {
        self.claims_refused
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    pub fn count_offer(&self, result: &str) {
        self.offers
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_prefixed_names_and_one_live_state() {
        let metrics = Metrics::default();
        metrics.frames_in.inc();
        metrics.model_seconds.observe(0.012);
        metrics.set_peer_state("connected");
        metrics.count_offer("answered");
        metrics.count_refused_claim(p2pcamera_api::ErrorCode::AlreadyClaimed);
        let text = metrics.encode();
        assert!(text.contains("p2pcamera_pod_claimed 0"), "{text}");
        assert!(
            text.contains("p2pcamera_pod_claims_refused_total{code=\"already_claimed\"} 1"),
            "{text}"
        );
        assert!(text.contains("p2pcamera_pod_frames_in_total 1"), "{text}");
        assert!(
            text.contains("p2pcamera_pod_model_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("p2pcamera_pod_peer_connection_state{state=\"connected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("p2pcamera_pod_peer_connection_state{state=\"new\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("p2pcamera_pod_offers_total{result=\"answered\"} 1"),
            "{text}"
        );
    }
}
