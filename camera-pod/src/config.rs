//! Command line and environment configuration of the `camera-pod` binary.
//!
//! Every flag has a `P2PCAMERA_...` environment variable, named in [`p2pcamera_api::pod_env`]: the
//! operator configures camera pods through the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use p2pcamera_api::pod_env;

use crate::codec::CodecKind;
use crate::media::limits::{BitrateBounds, PictureLimits};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--plain-http is only allowed on a loopback address, not {0}; use TLS (the default)")]
    PlainHttpNotLoopback(SocketAddr),
    #[error("reading the token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {0} is empty")]
    EmptyTokenFile(PathBuf),
    #[error("--min-bitrate ({min}) must not exceed --max-bitrate ({max})")]
    BitrateBounds { min: u32, max: u32 },
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

    /// Local address WebRTC media binds to. Defaults to the IP of --listen (a wildcard
    /// address binds every interface except loopback).
    #[arg(long, env = pod_env::UDP_BIND)]
    pub udp_bind: Option<IpAddr>,

    /// Pin the one UDP port WebRTC media uses (0 or unset: an ephemeral port).
    #[arg(long, env = pod_env::UDP_PORT)]
    pub udp_port: Option<u16>,

    /// Public IP to advertise as the host ICE candidate (NAT 1:1, e.g. the node's external IP).
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
    #[arg(long, env = pod_env::MAX_WIDTH, value_parser = clap::value_parser!(u32).range(2..))]
    pub max_width: Option<u32>,

    /// Largest picture height the filter works on: taller pictures are scaled down first, keeping
    /// their aspect ratio (even sides) [default: no limit].
    #[arg(long, env = pod_env::MAX_HEIGHT, value_parser = clap::value_parser!(u32).range(2..))]
    pub max_height: Option<u32>,

    /// Highest frame rate the filter works on: pictures beyond it are dropped before the filter
    /// (counted in p2pcamera_pod_frames_over_max_fps_total) [default: no limit].
    #[arg(long, env = pod_env::MAX_FPS, value_parser = clap::value_parser!(u32).range(1..=240))]
    pub max_fps: Option<u32>,

    /// Video codecs this pod accepts, comma-separated (VP8, H264). The answer takes the first of
    /// them in the offer's order; an offer with none of them gets 422 unsupported_codec.
    #[arg(
        long,
        env = pod_env::CODECS,
        value_delimiter = ',',
        value_parser = parse_codec,
        default_value = "VP8,H264"
    )]
    pub codecs: Vec<CodecKind>,

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
        Ok(())
    }

    /// The configured bearer token, from --token or --token-file.
    pub fn load_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
            path: path.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError::EmptyTokenFile(path.clone()));
        }
        Ok(Some(token.to_owned()))
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

/// A codec name as `--codecs` takes it (case does not matter).
fn parse_codec(name: &str) -> Result<CodecKind, String> {
    match name.trim().to_ascii_uppercase().as_str() {
        "VP8" => Ok(CodecKind::Vp8),
        "H264" => Ok(CodecKind::H264),
        other => Err(format!("unknown codec `{other}`: use VP8 or H264")),
    }
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
            Err(ConfigError::EmptyTokenFile(_))
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
    fn tls_cert_needs_key() {
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_ok());
    }
}
