//! Command line and environment configuration of the `camera-pod` binary.
//!
//! Every flag has a `P2PCAMERA_...` environment variable, named in [`p2pcamera_api::pod_env`]: the
//! operator configures camera pods through the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use p2pcamera_api::pod_env;
use p2pcamera_api::relay::{RelayCandidates, is_udp_turn_url};

use crate::codec::{CodecKind, DecodeSizeCap};
use crate::media::limits::{BitrateBounds, PictureLimits};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--plain-http is only allowed on a loopback address, not {0}; use TLS (the default)")]
    PlainHttpNotLoopback(SocketAddr),
    /// A token file (`--token-file`, `--claim-token-file`, or `--tls-key` for the operator token)
    /// could not be read.
    #[error("reading {flag} {path}: {source}")]
    TokenFile {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {path} is empty: the file must hold the token")]
    EmptyTokenFile { flag: &'static str, path: PathBuf },
    #[error("--min-bitrate ({min}) must not exceed --max-bitrate ({max})")]
    BitrateBounds { min: u32, max: u32 },
    #[error(
        "camera-pod listens on {0}, not a loopback address, without a bearer token: give it --token or \
         --token-file, or --insecure-no-token to let anyone who reaches the port connect a camera"
    )]
    TokenRequired(SocketAddr),
    #[error(
        "--relay-candidates {0} needs a TURN server camera-pod can relay through: give --turn-urls \
         with at least one turn: URL over UDP (turn:host:port or turn:host:port?transport=udp; \
         camera-pod relays over UDP only, browsers may use TCP and TLS)"
    )]
    NoUdpTurnUrl(RelayCandidates),
}

/// How the signaling server is protected, given its address and the token flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPolicy {
    /// Every offer, filter change and status request must carry the token.
    Token,
    /// No token on a loopback address: only this machine can reach the server (laptop demo).
    LoopbackWithoutToken,
    /// No token off loopback, because `--insecure-no-token` says so: warned about loudly.
    InsecureWithoutToken,
    /// A warm-pool pod (`--claim-token-file`), on any address: until it is claimed it serves
    /// no camera and only `POST /claim` with the claim token changes it; from the claim on,
    /// every offer, filter change and status request must carry the session's token.
    ClaimToken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// camera-pod: receives a camera over WebRTC, runs a video filter on it and sends it back.
#[derive(Clone, Debug, Parser)]
#[command(name = "camera-pod", version, about)]
pub struct Args {
    /// Address of the HTTPS (or, with --plain-http, HTTP) signaling server.
    #[arg(long, env = pod_env::LISTEN, default_value = "127.0.0.1:7860")]
    pub listen: SocketAddr,

    /// Serve plain HTTP instead of HTTPS; only allowed when --listen is a loopback address.
    #[arg(long, env = pod_env::PLAIN_HTTP)]
    pub plain_http: bool,

    /// PEM certificate chain for HTTPS. Without it a self-signed certificate for localhost is
    /// generated at start-up and its SHA-256 fingerprint printed.
    #[arg(long, env = pod_env::TLS_CERT, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key matching --tls-cert.
    #[arg(long, env = pod_env::TLS_KEY, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Bearer token every offer, filter change and status request must carry.
    #[arg(
        long,
        env = pod_env::TOKEN,
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// File holding the bearer token (surrounding white space ignored).
    #[arg(long, env = pod_env::TOKEN_FILE)]
    pub token_file: Option<PathBuf>,

    /// File holding the claim token of a warm-pool pod (surrounding white space ignored). With
    /// it the pod starts unclaimed: it warms --filter up, reports ready ("warm"), serves no
    /// camera (503 not_claimed), and waits for POST /claim with this token to hand it its
    /// session: certificate, bearer token, filter and video limits.
    #[arg(
        long,
        env = pod_env::CLAIM_TOKEN_FILE,
        conflicts_with_all = ["token", "token_file"]
    )]
    pub claim_token_file: Option<PathBuf>,

    /// Not ready until the operator hands the node's public address (POST /public-address,
    /// authenticated by the operator token derived from --tls-key), which ICE then advertises in
    /// place of --public-ip: the operator learns a node's public address only once the pod runs
    /// there.
    #[arg(
        long,
        env = pod_env::AWAIT_PUBLIC_IP,
        requires = "tls_key",
        conflicts_with = "claim_token_file"
    )]
    pub await_public_ip: bool,

    /// Local address WebRTC media binds to. Defaults to the IP of --listen (a wildcard
    /// address binds every interface except loopback).
    #[arg(long, env = pod_env::UDP_BIND)]
    pub udp_bind: Option<IpAddr>,

    /// Pin the one UDP port WebRTC media uses (0 or unset: an ephemeral port).
    #[arg(long, env = pod_env::UDP_PORT)]
    pub udp_port: Option<u16>,

    /// Public IP to advertise as a host ICE candidate next to the socket's own (NAT 1:1, e.g. the
    /// node's external IP).
    #[arg(long, env = pod_env::PUBLIC_IP)]
    pub public_ip: Option<IpAddr>,

    /// Lowest video bitrate the encoder adapts down to, in bits per second.
    #[arg(long, env = pod_env::MIN_BITRATE, default_value_t = 150_000)]
    pub min_bitrate: u32,

    /// Highest video bitrate the encoder adapts up to, in bits per second.
    #[arg(long, env = pod_env::MAX_BITRATE, default_value_t = 4_000_000)]
    pub max_bitrate: u32,

    /// Bitrate the encoder starts at, in bits per second (clamped to the bounds).
    #[arg(long, env = pod_env::START_BITRATE, default_value_t = 1_500_000)]
    pub start_bitrate: u32,

    /// Largest picture width the filter works on: wider pictures are scaled down first, keeping
    /// their aspect ratio (even sides) [default: no limit].
    #[arg(
        long,
        env = pod_env::MAX_WIDTH,
        value_parser = clap::value_parser!(u32).range(i64::from(PictureLimits::MIN_SIDE)..)
    )]
    pub max_width: Option<u32>,

    /// Largest picture height the filter works on: taller pictures are scaled down first, keeping
    /// their aspect ratio (even sides) [default: no limit].
    #[arg(
        long,
        env = pod_env::MAX_HEIGHT,
        value_parser = clap::value_parser!(u32).range(i64::from(PictureLimits::MIN_SIDE)..)
    )]
    pub max_height: Option<u32>,

    /// Highest frame rate the filter works on: pictures beyond it are dropped before the filter
    /// (counted in p2pcamera_pod_frames_over_max_fps_total) [default: no limit].
    #[arg(
        long,
        env = pod_env::MAX_FPS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(PictureLimits::MAX_FPS))
    )]
    pub max_fps: Option<u32>,

    /// Video codecs this pod accepts, comma-separated (VP8, H264). The answer takes the first of
    /// them in the offer's order; an offer with none of them gets 422 unsupported_codec.
    #[arg(
        long,
        env = pod_env::CODECS,
        value_delimiter = ',',
        value_parser = CodecKind::from_str,
        default_value = "VP8,H264"
    )]
    pub codecs: Vec<CodecKind>,

    /// Decode and encode the camera's frames with the passthrough filter too. By default they go
    /// back as they came while they keep within the picture, frame rate and bitrate limits (no
    /// decoding or encoding: a fraction of the CPU); transcoding instead lets the encoder set the
    /// returned bitrate from the viewer's estimate alone.
    #[arg(long, env = pod_env::TRANSCODE_PASSTHROUGH)]
    pub transcode_passthrough: bool,

    /// Stay unready (/readyz 503, offers refused) unless models run on a GPU execution provider
    /// (CUDA or TensorRT), instead of silently running on CPU.
    #[arg(long, env = pod_env::REQUIRE_GPU)]
    pub require_gpu: bool,

    /// Log output format.
    #[arg(long, env = pod_env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// File the error that stops camera-pod is written to, where Kubernetes reads the
    /// container's termination message; nothing is written when the file does not exist.
    #[arg(long, env = pod_env::TERMINATION_LOG, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,

    /// Serve without a bearer token although --listen is not a loopback address: anyone who can
    /// reach the port may connect a camera. Logged as a warning at start and on every offer.
    #[arg(long, env = pod_env::INSECURE_NO_TOKEN)]
    pub insecure_no_token: bool,

    /// Address of a plain-HTTP listener that serves /metrics only. When set, /metrics is served
    /// there and not on --listen; when unset, --listen serves /metrics only if it is a loopback
    /// address.
    #[arg(long, env = pod_env::METRICS_LISTEN)]
    pub metrics_listen: Option<SocketAddr>,

    /// Seconds an HTTP client has to send a request's headers, and again its body (and a TLS
    /// client its handshake); a client still sending after that is disconnected.
    #[arg(long, env = pod_env::REQUEST_TIMEOUT, default_value = "10", value_parser = parse_seconds)]
    pub request_timeout: Duration,

    /// Most HTTP connections served at once, per listener; further connections are closed at
    /// once (counted in p2pcamera_pod_http_connections_refused_total).
    #[arg(
        long,
        env = pod_env::MAX_CONNECTIONS,
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..=65_536)
    )]
    pub max_connections: u32,

    /// Seconds from the answer until the camera's peer connection must be connected (ICE and
    /// DTLS); a peer that is not by then is closed and the camera is free for the next offer.
    #[arg(long, env = pod_env::CONNECT_DEADLINE, default_value = "10", value_parser = parse_seconds)]
    pub connect_deadline: Duration,

    /// Seconds a connected camera may send no media (no RTP) and still keep the camera against
    /// a new offer: a browser that slept or lost its network is taken over by the next offer
    /// after this, not after ICE gives up. A camera that is sending keeps it (`camera_busy`).
    #[arg(long, env = pod_env::TAKEOVER_AFTER, default_value = "1", value_parser = parse_seconds)]
    pub takeover_after: Duration,

    /// Whether the pod offers TURN relay candidates of its own: `off` (host candidates only),
    /// `also` (host and relay: for nodes cameras cannot reach directly, e.g. without a public
    /// address), `only` (relay only: the node's address never reaches the camera). The relay
    /// credential comes with each offer from the router; an offer without one is answered with
    /// host candidates (`also`) or refused with 503 `relay_unavailable` (`only`).
    #[arg(long, env = pod_env::RELAY_CANDIDATES, default_value = "off")]
    pub relay_candidates: RelayCandidates,

    /// TURN URLs the pod relays through, comma-separated (only `turn:` over UDP is used).
    #[arg(long, env = pod_env::TURN_URLS, value_delimiter = ',')]
    pub turn_urls: Vec<String>,

    /// Widest camera picture decoded (at most 3840); larger pictures are dropped undecoded
    /// (counted in p2pcamera_pod_frames_over_max_decode_size_total). A portrait picture is
    /// checked against the limits turned by 90 degrees.
    #[arg(
        long,
        env = pod_env::MAX_DECODE_WIDTH,
        default_value_t = DecodeSizeCap::DEFAULT.width,
        value_parser = clap::value_parser!(u32).range(2..=i64::from(DecodeSizeCap::LARGEST.width))
    )]
    pub max_decode_width: u32,

    /// Tallest camera picture decoded (at most 2160; see --max-decode-width).
    #[arg(
        long,
        env = pod_env::MAX_DECODE_HEIGHT,
        default_value_t = DecodeSizeCap::DEFAULT.height,
        value_parser = clap::value_parser!(u32).range(2..=i64::from(DecodeSizeCap::LARGEST.height))
    )]
    pub max_decode_height: u32,

    #[command(flatten)]
    pub filter: crate::filter::FilterArgs,
}

impl Args {
    /// Checks combinations clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.plain_http && !self.listen.ip().is_loopback() {
            return Err(ConfigError::PlainHttpNotLoopback(self.listen));
        }
        if self.min_bitrate > self.max_bitrate {
            return Err(ConfigError::BitrateBounds {
                min: self.min_bitrate,
                max: self.max_bitrate,
            });
        }
        self.token_policy(self.listen)?;
        if self.relay_candidates.gathers_relay() && self.relay_urls().is_empty() {
            return Err(ConfigError::NoUdpTurnUrl(self.relay_candidates));
        }
        Ok(())
    }

    /// The `--turn-urls` camera-pod can relay through: `turn:` over UDP (webrtc-rs allocates
    /// relays over UDP only); `turns:` and `transport=tcp` are the browsers'.
    pub fn relay_urls(&self) -> Vec<String> {
        self.turn_urls
            .iter()
            .map(|url| url.trim())
            .filter(|url| is_udp_turn_url(url))
            .map(str::to_owned)
            .collect()
    }

    /// How a server listening on `listen` is protected: a token is required off loopback unless
    /// `--insecure-no-token` is given; a warm-pool pod's claim token protects it anywhere (its
    /// claim brings the session's token).
    pub fn token_policy(&self, listen: SocketAddr) -> Result<TokenPolicy, ConfigError> {
        if self.claim_token_file.is_some() {
            Ok(TokenPolicy::ClaimToken)
        } else if self.token.is_some() || self.token_file.is_some() {
            Ok(TokenPolicy::Token)
        } else if listen.ip().is_loopback() {
            Ok(TokenPolicy::LoopbackWithoutToken)
        } else if self.insecure_no_token {
            Ok(TokenPolicy::InsecureWithoutToken)
        } else {
            Err(ConfigError::TokenRequired(listen))
        }
    }

    /// Whether the signaling server on `listen` serves /metrics: only without --metrics-listen,
    /// and only on a loopback address.
    pub fn metrics_on_signaling_listener(&self, listen: SocketAddr) -> bool {
        self.metrics_listen.is_none() && listen.ip().is_loopback()
    }

    /// The largest camera picture decoded: --max-decode-width x --max-decode-height.
    pub fn decode_size_cap(&self) -> DecodeSizeCap {
        DecodeSizeCap {
            width: self.max_decode_width,
            height: self.max_decode_height,
        }
    }

    /// The bearer token the pod starts with, from --token or --token-file; none for a warm-pool
    /// pod (its claim brings the session's token, see [`Self::load_claim_token`]).
    pub fn load_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        self.token_file
            .as_deref()
            .map(|path| read_token_file("--token-file", path))
            .transpose()
    }

    /// A warm-pool pod's claim token, from --claim-token-file; none for a pod started with its
    /// session.
    pub fn load_claim_token(&self) -> Result<Option<String>, ConfigError> {
        self.claim_token_file
            .as_deref()
            .map(|path| read_token_file("--claim-token-file", path))
            .transpose()
    }

    /// With --await-public-ip, the operator token: derived from the --tls-key file.
    pub fn load_operator_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = self.tls_key.as_deref().filter(|_| self.await_public_ip) else {
            return Ok(None);
        };
        let key = std::fs::read(path).map_err(|source| ConfigError::TokenFile {
            flag: "--tls-key",
            path: path.to_owned(),
            source,
        })?;
        Ok(Some(p2pcamera_api::operator_token::operator_token(&key)))
    }

    /// The UDP address WebRTC media binds: --udp-bind (or the IP of --listen) and --udp-port.
    pub fn udp_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.udp_bind.unwrap_or(self.listen.ip()),
            self.udp_port.unwrap_or(0),
        )
    }

    /// What the filter may be given: --max-width, --max-height, --max-fps.
    pub fn picture_limits(&self) -> PictureLimits {
        PictureLimits {
            max_width: self.max_width,
            max_height: self.max_height,
            max_fps: self.max_fps,
        }
    }

    pub fn bitrate_bounds(&self) -> BitrateBounds {
        BitrateBounds {
            min: self.min_bitrate,
            max: self.max_bitrate,
            start: self.start_bitrate.clamp(self.min_bitrate, self.max_bitrate),
        }
    }
}

/// The token in the file `flag` names, surrounding white space removed; an empty one is an
/// error.
fn read_token_file(flag: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
        flag,
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::EmptyTokenFile {
            flag,
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// A positive number of seconds (fractions allowed), at most an hour.
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err(format!(
            "{seconds} s is out of range: give more than 0 and at most 3600"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("camera-pod").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_bind_loopback_with_tls() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen, "127.0.0.1:7860".parse::<SocketAddr>().unwrap());
        assert!(!args.plain_http);
        assert_eq!(
            args.udp_addr(),
            "127.0.0.1:0".parse::<SocketAddr>().unwrap()
        );
        args.validate().unwrap();
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        let args = parse(&["--listen", "0.0.0.0:7860", "--plain-http"]).unwrap();
        let err = args.validate().unwrap_err();
        assert!(matches!(err, ConfigError::PlainHttpNotLoopback(_)), "{err}");
        let args = parse(&["--listen", "[::1]:7860", "--plain-http"]).unwrap();
        args.validate().unwrap();
    }

    #[test]
    fn udp_port_and_bind_are_pinned() {
        let args = parse(&["--listen", "0.0.0.0:7860", "--udp-port", "31000"]).unwrap();
        assert_eq!(
            args.udp_addr(),
            "0.0.0.0:31000".parse::<SocketAddr>().unwrap()
        );
        let args = parse(&["--udp-bind", "10.0.0.5", "--udp-port", "31001"]).unwrap();
        assert_eq!(
            args.udp_addr(),
            "10.0.0.5:31001".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn token_comes_from_flag_or_trimmed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let args = parse(&["--token-file", path.to_str().unwrap()]).unwrap();
        assert_eq!(args.load_token().unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&path, "  \n").unwrap();
        assert!(matches!(
            args.load_token(),
            Err(ConfigError::EmptyTokenFile { .. })
        ));
        let args = parse(&["--token-file", dir.path().join("missing").to_str().unwrap()]).unwrap();
        assert!(matches!(
            args.load_token(),
            Err(ConfigError::TokenFile { .. })
        ));
        assert!(parse(&["--token", "a", "--token-file", "b"]).is_err());
    }

    #[test]
    fn bitrate_bounds_clamp_estimates() {
        let args = parse(&["--min-bitrate", "200000", "--max-bitrate", "1000000"]).unwrap();
        let bounds = args.bitrate_bounds();
        assert_eq!(bounds.start, 1_000_000);
        assert_eq!(bounds.clamp(50_000), 200_000);
        assert_eq!(bounds.clamp(9_000_000), 1_000_000);
        let args = parse(&["--min-bitrate", "2000000", "--max-bitrate", "1000000"]).unwrap();
        assert!(args.validate().is_err());
    }

    #[test]
    fn picture_limits_and_codecs_in_the_operators_formats() {
        // What operator/src/desired.rs writes: decimal integers, `H264,VP8`, `true`.
        let args = parse(&[
            "--max-width",
            "1280",
            "--max-height",
            "720",
            "--max-fps",
            "24",
            "--codecs",
            "H264,VP8",
            "--require-gpu",
        ])
        .unwrap();
        assert_eq!(
            args.picture_limits(),
            PictureLimits {
                max_width: Some(1280),
                max_height: Some(720),
                max_fps: Some(24)
            }
        );
        assert_eq!(args.codecs, vec![CodecKind::H264, CodecKind::Vp8]);
        assert!(args.require_gpu);
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.picture_limits(), PictureLimits::default());
        assert_eq!(defaults.codecs, vec![CodecKind::Vp8, CodecKind::H264]);
        assert!(!defaults.require_gpu);
        assert_eq!(
            parse(&["--codecs", "h264"]).unwrap().codecs,
            vec![CodecKind::H264]
        );
        let err = parse(&["--codecs", "VP8,AV1"]).unwrap_err().to_string();
        assert!(err.contains("unknown codec `AV1`"), "{err}");
        assert!(parse(&["--max-fps", "0"]).is_err());
        assert!(parse(&["--max-width", "1"]).is_err());
        assert!(parse(&["--max-height", "-5"]).is_err());
    }

    #[test]
    fn a_token_is_required_off_loopback_unless_insecure_is_asked_for() {
        let args = parse(&["--listen", "0.0.0.0:7860"]).unwrap();
        let err = args.validate().unwrap_err();
        assert!(matches!(err, ConfigError::TokenRequired(_)), "{err}");
        assert!(
            err.to_string().contains("--insecure-no-token"),
            "the error names the way out: {err}"
        );
        let pod_ip: SocketAddr = "10.1.2.3:7860".parse().unwrap();
        assert!(matches!(
            args.token_policy(pod_ip),
            Err(ConfigError::TokenRequired(addr)) if addr == pod_ip
        ));
        let with_token = parse(&["--listen", "0.0.0.0:7860", "--token", "t"]).unwrap();
        with_token.validate().unwrap();
        assert_eq!(with_token.token_policy(pod_ip).unwrap(), TokenPolicy::Token);
        let with_file = parse(&["--listen", "[::]:7860", "--token-file", "/t"]).unwrap();
        with_file.validate().unwrap();
        let insecure = parse(&["--listen", "0.0.0.0:7860", "--insecure-no-token"]).unwrap();
        insecure.validate().unwrap();
        assert_eq!(
            insecure.token_policy(pod_ip).unwrap(),
            TokenPolicy::InsecureWithoutToken
        );
        let laptop = parse(&[]).unwrap();
        laptop.validate().unwrap();
        assert_eq!(
            laptop.token_policy("[::1]:7860".parse().unwrap()).unwrap(),
            TokenPolicy::LoopbackWithoutToken
        );
    }

    #[test]
    fn metrics_leave_the_signaling_listener_off_loopback_or_with_their_own() {
        let loopback: SocketAddr = "127.0.0.1:7860".parse().unwrap();
        let pod_ip: SocketAddr = "10.1.2.3:7860".parse().unwrap();
        let defaults = parse(&[]).unwrap();
        assert!(defaults.metrics_on_signaling_listener(loopback));
        assert!(!defaults.metrics_on_signaling_listener(pod_ip));
        let separate = parse(&["--metrics-listen", "0.0.0.0:9090"]).unwrap();
        assert_eq!(
            separate.metrics_listen,
            Some("0.0.0.0:9090".parse().unwrap())
        );
        assert!(!separate.metrics_on_signaling_listener(loopback));
        assert!(!separate.metrics_on_signaling_listener(pod_ip));
        assert!(parse(&["--metrics-listen", "9090"]).is_err());
    }

    #[test]
    fn decode_cap_defaults_to_1080p_and_allows_up_to_4k() {
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.decode_size_cap(), DecodeSizeCap::DEFAULT);
        assert_eq!(
            (DecodeSizeCap::DEFAULT.width, DecodeSizeCap::DEFAULT.height),
            (1920, 1080)
        );
        // What the operator writes from a session's class: decimal integers.
        let args = parse(&["--max-decode-width", "3840", "--max-decode-height", "2160"]).unwrap();
        assert_eq!(args.decode_size_cap(), DecodeSizeCap::LARGEST);
        assert!(parse(&["--max-decode-width", "3841"]).is_err());
        assert!(parse(&["--max-decode-height", "2161"]).is_err());
        assert!(parse(&["--max-decode-width", "0"]).is_err());
    }

    #[test]
    fn deadlines_and_connection_caps_have_safe_defaults_and_bounds() {
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.connect_deadline, Duration::from_secs(10));
        assert_eq!(defaults.request_timeout, Duration::from_secs(10));
        assert_eq!(defaults.max_connections, 256);
        assert_eq!(defaults.takeover_after, Duration::from_secs(1));
        assert_eq!(
            parse(&["--takeover-after", "2.5"]).unwrap().takeover_after,
            Duration::from_millis(2500)
        );
        assert!(parse(&["--takeover-after", "0"]).is_err());
        assert_eq!(defaults.relay_candidates, RelayCandidates::Off);
        let args = parse(&["--connect-deadline", "0.5", "--request-timeout", "2"]).unwrap();
        assert_eq!(args.connect_deadline, Duration::from_millis(500));
        assert_eq!(args.request_timeout, Duration::from_secs(2));
        for bad in ["0", "-1", "nan", "inf", "3601", "ten"] {
            assert!(parse(&["--connect-deadline", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["--max-connections", "0"]).is_err());
    }

    #[test]
    fn a_claim_token_file_makes_a_pool_pod_protected_anywhere_and_excludes_a_session_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claim-token");
        std::fs::write(&path, " claim-me\n").unwrap();
        let file = path.to_str().unwrap();
        let pool = parse(&["--listen", "0.0.0.0:7860", "--claim-token-file", file]).unwrap();
        pool.validate().unwrap();
        let pod_ip: SocketAddr = "10.1.2.3:7860".parse().unwrap();
        assert_eq!(pool.token_policy(pod_ip).unwrap(), TokenPolicy::ClaimToken);
        assert_eq!(
            pool.load_claim_token().unwrap().as_deref(),
            Some("claim-me")
        );
        assert_eq!(pool.load_token().unwrap(), None, "the claim brings it");
        assert_eq!(parse(&[]).unwrap().load_claim_token().unwrap(), None);

        std::fs::write(&path, "\n").unwrap();
        let err = pool.load_claim_token().unwrap_err();
        assert!(matches!(err, ConfigError::EmptyTokenFile { .. }), "{err}");
        assert!(
            err.to_string().contains("--claim-token-file") && err.to_string().contains(file),
            "{err}"
        );
        let missing = dir.path().join("missing");
        let err = parse(&["--claim-token-file", missing.to_str().unwrap()])
            .unwrap()
            .load_claim_token()
            .unwrap_err();
        assert!(matches!(err, ConfigError::TokenFile { .. }), "{err}");

        for session_token in [["--token", "t"], ["--token-file", "/t"]] {
            let mut argv = vec!["--claim-token-file", file];
            argv.extend(session_token);
            let err = parse(&argv).unwrap_err().to_string();
            assert!(err.contains("cannot be used with"), "{err}");
        }
    }

    #[test]
    fn picture_limit_flags_accept_exactly_what_the_limits_check_accepts() {
        for value in [0u32, 1, 2, 3, 240, 241, 4096] {
            let text = value.to_string();
            let width = parse(&["--max-width", &text]).is_ok();
            let height = parse(&["--max-height", &text]).is_ok();
            let fps = parse(&["--max-fps", &text]).is_ok();
            let checked = |limits: PictureLimits| limits.checked().is_ok();
            assert_eq!(
                width,
                checked(PictureLimits {
                    max_width: Some(value),
                    ..PictureLimits::default()
                }),
                "{value}"
            );
            assert_eq!(
                height,
                checked(PictureLimits {
                    max_height: Some(value),
                    ..PictureLimits::default()
                }),
                "{value}"
            );
            assert_eq!(
                fps,
                checked(PictureLimits {
                    max_fps: Some(value),
                    ..PictureLimits::default()
                }),
                "{value}"
            );
        }
    }

    #[test]
    fn tls_cert_needs_key() {
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_ok());
    }

    #[test]
    fn relay_candidates_need_a_turn_url_over_udp() {
        let relaying = |urls: &str| {
            parse(&["--relay-candidates", "only", "--turn-urls", urls])
                .unwrap()
                .validate()
        };
        let args = parse(&[
            "--relay-candidates",
            "also",
            "--turn-urls",
            "turn:t.example:3478?transport=udp,turn:t.example:3478?transport=tcp,turns:t.example:443?transport=tcp,turn:t2.example",
        ])
        .unwrap();
        assert_eq!(
            args.relay_urls(),
            ["turn:t.example:3478?transport=udp", "turn:t2.example"]
        );
        assert!(args.validate().is_ok());
        for browser_only in [
            "turns:t.example:443?transport=tcp",
            "turn:t.example:3478?transport=tcp",
            "stun:t.example",
            "turn:",
        ] {
            assert!(
                matches!(
                    relaying(browser_only),
                    Err(ConfigError::NoUdpTurnUrl(RelayCandidates::Only))
                ),
                "{browser_only}"
            );
        }
        assert!(matches!(
            parse(&["--relay-candidates", "only"]).unwrap().validate(),
            Err(ConfigError::NoUdpTurnUrl(_))
        ));
        assert!(parse(&["--relay-candidates", "sometimes"]).is_err());
        // Without relay candidates the URLs are not needed (and not checked).
        assert!(
            parse(&["--turn-urls", "stun:x"])
                .unwrap()
                .validate()
                .is_ok()
        );
    }
}
