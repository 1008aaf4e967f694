//! Filter and ONNX Runtime flags; the binary flattens [`FilterArgs`] into its own `Args`.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use p2pcamera_api::{ModelPolicy, pod_env};

use super::FilterError;
use super::manifest::Manifest;
use super::source::{self, DownloadRules};
use super::spec::{self, Background, BodyParts, CustomModel, FilterSpec, ModelSource, PoseModel};

/// Which ONNX Runtime execution provider runs the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ExecutionProviderChoice {
    /// CPU only.
    Cpu,
    /// NVIDIA CUDA (needs the `cuda` feature and onnxruntime-gpu).
    Cuda,
    /// NVIDIA TensorRT, with CUDA for what TensorRT does not take (needs the `tensorrt` feature).
    Tensorrt,
    /// The GPU providers compiled in, if they work here, else CPU.
    #[default]
    Auto,
}

/// Filter selection and model runtime settings.
#[derive(Clone, Debug, clap::Args)]
pub struct FilterArgs {
    /// Filter to start with: passthrough, selfie-blur, selfie-replace, style, pose, body-parts,
    /// custom, or a JSON filter spec such as '{"filter":"style","style":3}'.
    #[arg(long, env = pod_env::FILTER, default_value = "selfie-blur")]
    pub filter: String,

    /// selfie-blur: blur radius in per cent of the picture height (1..=25).
    #[arg(long, env = pod_env::BLUR_STRENGTH)]
    pub blur_strength: Option<u32>,

    /// style: which of the 26 styles (0..=25).
    #[arg(long, env = pod_env::STYLE_INDEX)]
    pub style_index: Option<u32>,

    /// selfie-replace: background colour as #rrggbb (default #00ff00). body-parts: colour of
    /// everything but the person (default: the camera picture stays).
    #[arg(long, env = pod_env::BACKGROUND_COLOR, conflicts_with = "background_image")]
    pub background_color: Option<String>,

    /// selfie-replace: background picture (PNG or JPEG).
    #[arg(long, env = pod_env::BACKGROUND_IMAGE)]
    pub background_image: Option<PathBuf>,

    /// pose, body-parts: which BlazePose landmark model runs [default: lite].
    #[arg(long, env = pod_env::POSE_MODEL, value_enum)]
    pub pose_model: Option<PoseModel>,

    /// body-parts: how strongly the part colours cover the person, per cent (0..=100)
    /// [default: 70].
    #[arg(long, env = pod_env::PARTS_OPACITY)]
    pub parts_opacity: Option<u32>,

    /// Custom ONNX model: a file path or an https:// URL. With --sha256 and --manifest it
    /// selects the custom filter.
    #[arg(long, env = pod_env::MODEL, requires_all = ["sha256", "manifest"])]
    pub model: Option<String>,

    /// Required sha256 (hex) of --model; a model that does not match is refused.
    #[arg(long, env = pod_env::SHA256, requires = "model")]
    pub sha256: Option<String>,

    /// Manifest (JSON or YAML) describing --model's tensors and how its output is composited.
    #[arg(long, env = pod_env::MANIFEST, requires = "model")]
    pub manifest: Option<PathBuf>,

    /// Where downloaded models are kept [default: $XDG_CACHE_HOME or ~/.cache, then p2pcamera/models].
    #[arg(long, env = pod_env::MODEL_CACHE_DIR)]
    pub model_cache_dir: Option<PathBuf>,

    /// Extra PEM CA certificates to trust when downloading models (on top of the system's).
    #[arg(long, env = pod_env::MODEL_CA_FILE)]
    pub model_ca_file: Option<PathBuf>,

    /// Hosts models may be downloaded from, comma-separated: `host` (the https port, 443) or
    /// `host:port`, each matched exactly (no wildcards). A model by URL is allowed when its host is
    /// listed here or its sha256 in --model-allowed-digests; with both lists empty (the default)
    /// no model is downloaded. The --model given at start-up must be allowed too.
    #[arg(
        long,
        env = pod_env::MODEL_ALLOWED_HOSTS,
        value_delimiter = ',',
        value_parser = allowed_host
    )]
    pub model_allowed_hosts: Vec<String>,

    /// sha256 digests (hex) of models that may be downloaded from any https URL, comma-separated.
    #[arg(
        long,
        env = pod_env::MODEL_ALLOWED_DIGESTS,
        value_delimiter = ',',
        value_parser = allowed_digest
    )]
    pub model_allowed_digests: Vec<String>,

    /// Largest model, in bytes, read from a file or downloaded; a download is stopped past it.
    #[arg(
        long,
        env = pod_env::MODEL_MAX_BYTES,
        default_value_t = source::DEFAULT_MODEL_MAX_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub model_max_bytes: u64,

    /// Seconds a model download may take, connecting included; a download still running after
    /// that is stopped.
    #[arg(
        long,
        env = pod_env::MODEL_DOWNLOAD_TIMEOUT,
        default_value = "60",
        value_parser = crate::config::parse_seconds
    )]
    pub model_download_timeout: Duration,

    /// ONNX Runtime shared library [default: $ORT_DYLIB_PATH, else
    /// ~/.cache/p2pcamera/onnxruntime-1.32.0/libonnxruntime.so.1.32.0, as fetched by
    /// camera-pod/scripts/fetch-onnxruntime.sh].
    #[arg(long, env = pod_env::ONNXRUNTIME_LIB)]
    pub onnxruntime_lib: Option<PathBuf>,

    /// Execution provider; `auto` uses the GPU providers compiled in when they work, else CPU.
    #[arg(long, env = pod_env::EXECUTION_PROVIDER, value_enum, default_value_t = ExecutionProviderChoice::Auto)]
    pub execution_provider: ExecutionProviderChoice,

    /// Threads ONNX Runtime uses inside one model run [default: every core when the machine is
    /// dedicated to this camera (--dedicated-machine, or running in Kubernetes), else half the
    /// cores, leaving the rest to decoding, encoding and the user's other programs].
    #[arg(long, env = pod_env::INTRA_OP_THREADS, value_parser = clap::value_parser!(u16).range(1..))]
    pub intra_op_threads: Option<u16>,

    /// The machine (or pod) serves only this camera: use all its cores.
    #[arg(long, env = pod_env::DEDICATED_MACHINE)]
    pub dedicated_machine: bool,
}

/// ONNX Runtime version that camera-pod/scripts/fetch-onnxruntime.sh fetches.
pub const ONNXRUNTIME_VERSION: &str = "1.32.0";

impl FilterArgs {
    /// The filter to start with, from --filter and its parameters (or --model/--sha256/--manifest).
    /// Parameters for other filters than the chosen one are ignored, so one environment can carry
    /// them all.
    pub fn initial_spec(&self) -> Result<FilterSpec, FilterError> {
        if let Some(model) = &self.model {
            let name = self.filter.trim();
            if name != "custom" && name != "selfie-blur" {
                // selfie-blur is the default, so `--model` alone means custom.
                return Err(FilterError::InvalidSpec(format!(
                    "--model selects the custom filter, but --filter is `{name}`"
                )));
            }
            let (Some(sha256), Some(manifest)) = (&self.sha256, &self.manifest) else {
                return Err(FilterError::InvalidSpec(
                    "--model needs --sha256 and --manifest".into(),
                ));
            };
            return Ok(FilterSpec::Custom(CustomModel {
                model: ModelSource::parse(model)?,
                sha256: spec::normalize_sha256(sha256)?,
                manifest: Manifest::load(manifest)?,
            }));
        }
        let base: FilterSpec = self.filter.parse()?;
        if self.filter.trim_start().starts_with('{') {
            return Ok(base);
        }
        Ok(match base {
            FilterSpec::SelfieBlur { strength } => FilterSpec::SelfieBlur {
                strength: self
                    .blur_strength
                    .map_or(Ok(strength), spec::blur_strength)?,
            },
            FilterSpec::SelfieReplace(background) => {
                FilterSpec::SelfieReplace(match (&self.background_color, &self.background_image) {
                    (Some(c), _) => Background::Color(c.parse()?),
                    (None, Some(p)) => Background::Image(p.clone()),
                    (None, None) => background,
                })
            }
            FilterSpec::Style { style } => FilterSpec::Style {
                style: self.style_index.map_or(Ok(style), spec::style_index)?,
            },
            FilterSpec::Pose { model } => FilterSpec::Pose {
                model: self.pose_model.unwrap_or(model),
            },
            FilterSpec::BodyParts(parts) => FilterSpec::BodyParts(BodyParts {
                model: self.pose_model.unwrap_or(parts.model),
                opacity: self
                    .parts_opacity
                    .map_or(Ok(parts.opacity), |o| spec::parts_opacity(i64::from(o)))?,
                background: match &self.background_color {
                    Some(c) => Some(c.parse()?),
                    None => parts.background,
                },
            }),
            other => other,
        })
    }

    /// The ONNX Runtime library to load: --onnxruntime-lib, $ORT_DYLIB_PATH, or the cache path.
    pub fn onnxruntime_path(&self) -> PathBuf {
        resolve_onnxruntime_path(
            self.onnxruntime_lib.clone(),
            std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
            home_cache(),
        )
    }

    /// Where downloaded models go: --model-cache-dir, else `p2pcamera/models` under
    /// $XDG_CACHE_HOME (the operator sets it on camera pods), ~/.cache, or the temp directory.
    pub fn model_cache_path(&self) -> PathBuf {
        resolve_model_cache(self.model_cache_dir.clone(), home_cache())
    }

    /// What may be downloaded, and how much: the allow-list, --model-max-bytes and
    /// --model-download-timeout.
    pub fn download_rules(&self) -> DownloadRules {
        DownloadRules {
            policy: ModelPolicy::new(&self.model_allowed_hosts, &self.model_allowed_digests),
            max_bytes: self.model_max_bytes,
            timeout: self.model_download_timeout,
        }
    }

    /// Intra-op threads: --intra-op-threads, else see [`default_intra_op_threads`].
    pub fn intra_op_thread_count(&self) -> usize {
        match self.intra_op_threads {
            Some(n) => usize::from(n),
            None => {
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                let dedicated =
                    self.dedicated_machine || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
                default_intra_op_threads(cores, dedicated)
            }
        }
    }
}

/// A `--model-allowed-hosts` entry: a host name or IP address (IPv6 in brackets), optionally
/// with `:port`; lower-cased. An empty entry (as in `a.example,`) is kept and ignored.
fn allowed_host(entry: &str) -> Result<String, String> {
    let entry = entry.trim().to_ascii_lowercase();
    if entry.is_empty() {
        return Ok(entry);
    }
    let refuse = |why: &str| Err(format!("allowed host `{entry}`: {why}"));
    if entry.contains("://") {
        return refuse("give the host name alone, without a scheme");
    }
    if let Some(c) = entry
        .chars()
        .find(|c| matches!(c, '/' | '?' | '#' | '@' | '*' | '\\') || c.is_whitespace())
    {
        return refuse(&format!(
            "`{c}` is not allowed: give `host` or `host:port`, matched exactly"
        ));
    }
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return refuse("an IPv6 address needs its closing `]`");
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return refuse("not an IPv6 address");
        }
        match after {
            "" => (rest, None),
            port => match port.strip_prefix(':') {
                Some(port) => (rest, Some(port)),
                None => return refuse("expected `:port` after the IPv6 address"),
            },
        }
    } else {
        match entry.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return refuse("put an IPv6 address in brackets: [::1]:8443");
            }
            Some((host, port)) => (host, Some(port)),
            None => (entry.as_str(), None),
        }
    };
    if host.is_empty() {
        return refuse("the host is empty");
    }
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return refuse("the port must be a number from 1 to 65535");
    }
    Ok(entry.clone())
}

/// A `--model-allowed-digests` entry: a sha256 in hex, lower-cased; an empty entry is ignored.
fn allowed_digest(entry: &str) -> Result<String, String> {
    if entry.trim().is_empty() {
        return Ok(String::new());
    }
    spec::normalize_sha256(entry).map_err(|e| e.to_string())
}

/// Every core on a machine dedicated to this camera (a GPU pod), half of them on a laptop or
/// shared machine: decoding, encoding and the browser need the rest, and ONNX Runtime's threads
/// fighting them for cores makes every frame slower.
pub fn default_intra_op_threads(cores: usize, dedicated: bool) -> usize {
    if dedicated {
        cores.max(1)
    } else {
        (cores / 2).max(1)
    }
}

fn home_cache() -> Option<PathBuf> {
    cache_root(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// The user's cache directory: $XDG_CACHE_HOME when it is absolute (the XDG base directory
/// specification says to ignore a relative one), else $HOME/.cache.
fn cache_root(
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    xdg_cache_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| PathBuf::from(h).join(".cache")))
}

fn resolve_model_cache(flag: Option<PathBuf>, cache: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| {
        cache
            .unwrap_or_else(std::env::temp_dir)
            .join("p2pcamera")
            .join("models")
    })
}

fn resolve_onnxruntime_path(
    flag: Option<PathBuf>,
    ort_dylib_path: Option<PathBuf>,
    cache: Option<PathBuf>,
) -> PathBuf {
    flag.or(ort_dylib_path).unwrap_or_else(|| {
        cache
            .unwrap_or_else(std::env::temp_dir)
            .join("p2pcamera")
            .join(format!("onnxruntime-{ONNXRUNTIME_VERSION}"))
            .join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"))
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::filter::manifest::MaskComposite;
    use crate::filter::tensor::Rgb;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        filter: FilterArgs,
    }

    fn parse(args: &[&str]) -> Result<FilterArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("camera-pod").chain(args.iter().copied()))
            .map(|c| c.filter)
    }

    #[test]
    fn default_is_selfie_blur_on_auto() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.initial_spec().unwrap(), FilterSpec::default());
        assert_eq!(a.execution_provider, ExecutionProviderChoice::Auto);
    }

    #[test]
    fn parameters_apply_to_their_filter() {
        let a = parse(&["--filter", "style", "--style-index", "7"]).unwrap();
        assert_eq!(a.initial_spec().unwrap(), FilterSpec::Style { style: 7 });
        let a = parse(&[
            "--filter",
            "selfie-replace",
            "--background-color",
            "#112233",
        ])
        .unwrap();
        assert_eq!(
            a.initial_spec().unwrap(),
            FilterSpec::SelfieReplace(Background::Color(Rgb {
                r: 0x11,
                g: 0x22,
                b: 0x33
            }))
        );
        let a = parse(&[
            "--filter",
            "selfie-replace",
            "--background-image",
            "/bg.jpg",
        ])
        .unwrap();
        assert_eq!(
            a.initial_spec().unwrap(),
            FilterSpec::SelfieReplace(Background::Image("/bg.jpg".into()))
        );
        let a = parse(&[
            "--filter",
            "selfie-blur",
            "--blur-strength",
            "9",
            "--style-index",
            "3",
        ])
        .unwrap();
        assert_eq!(
            a.initial_spec().unwrap(),
            FilterSpec::SelfieBlur { strength: 9 }
        );
        let a = parse(&["--filter", r#"{"filter":"style","style":2}"#]).unwrap();
        assert_eq!(a.initial_spec().unwrap(), FilterSpec::Style { style: 2 });
        let a = parse(&["--filter", "pose", "--pose-model", "full"]).unwrap();
        assert_eq!(
            a.initial_spec().unwrap(),
            FilterSpec::Pose {
                model: PoseModel::Full
            }
        );
        let a = parse(&[
            "--filter",
            "body-parts",
            "--parts-opacity",
            "35",
            "--background-color",
            "#000000",
            "--pose-model",
            "full",
        ])
        .unwrap();
        assert_eq!(
            a.initial_spec().unwrap(),
            FilterSpec::BodyParts(BodyParts {
                model: PoseModel::Full,
                opacity: 35,
                background: Some(Rgb { r: 0, g: 0, b: 0 }),
            })
        );
        let a = parse(&["--execution-provider", "cpu", "--intra-op-threads", "3"]).unwrap();
        assert_eq!(a.execution_provider, ExecutionProviderChoice::Cpu);
        assert_eq!(a.intra_op_thread_count(), 3);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let err = parse(&["--filter", "style", "--style-index", "26"])
            .unwrap()
            .initial_spec()
            .unwrap_err();
        assert!(err.to_string().contains("style index 26"), "{err}");
        let err = parse(&["--filter", "selfie-replace", "--background-color", "red"])
            .unwrap()
            .initial_spec()
            .unwrap_err();
        assert!(err.to_string().contains("bad colour `red`"), "{err}");
        let err = parse(&["--filter", "warp"])
            .unwrap()
            .initial_spec()
            .unwrap_err();
        assert!(matches!(err, FilterError::UnknownFilter(_)), "{err}");
        assert!(
            parse(&["--model", "/m.onnx"]).is_err(),
            "--model needs --sha256 and --manifest"
        );
        assert!(parse(&["--sha256", "ab"]).is_err());
        assert!(parse(&["--pose-model", "huge"]).is_err());
        let err = parse(&["--filter", "body-parts", "--parts-opacity", "150"])
            .unwrap()
            .initial_spec()
            .unwrap_err();
        assert!(err.to_string().contains("opacity 150"), "{err}");
        assert!(parse(&["--intra-op-threads", "0"]).is_err());
        assert!(parse(&["--execution-provider", "tpu"]).is_err());
    }

    #[test]
    fn model_flags_select_the_custom_filter() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.yaml");
        std::fs::write(
            &manifest,
            serde_json::to_string(&Manifest::selfie(MaskComposite::ShowMask)).unwrap(),
        )
        .unwrap();
        let sha = "Ab".repeat(32);
        let m = manifest.to_str().unwrap();
        let a = parse(&[
            "--model",
            "https://x.example/m.onnx",
            "--sha256",
            &sha,
            "--manifest",
            m,
        ])
        .unwrap();
        match a.initial_spec().unwrap() {
            FilterSpec::Custom(c) => {
                assert_eq!(c.model, ModelSource::Url("https://x.example/m.onnx".into()));
                assert_eq!(c.sha256, "ab".repeat(32));
                assert_eq!(c.manifest, Manifest::selfie(MaskComposite::ShowMask));
            }
            other => panic!("{other:?}"),
        }
        let a = parse(&[
            "--filter",
            "style",
            "--model",
            "/m.onnx",
            "--sha256",
            &sha,
            "--manifest",
            m,
        ])
        .unwrap();
        assert!(a.initial_spec().unwrap_err().to_string().contains("custom"));
        let a = parse(&[
            "--model",
            "/m.onnx",
            "--sha256",
            &sha,
            "--manifest",
            "/missing.yaml",
        ])
        .unwrap();
        assert!(
            a.initial_spec()
                .unwrap_err()
                .to_string()
                .contains("/missing.yaml")
        );
    }

    #[test]
    fn the_allow_list_is_empty_unless_given() {
        let rules = parse(&[]).unwrap().download_rules();
        assert!(rules.policy.is_empty());
        assert_eq!(rules.max_bytes, 256 << 20);
        assert_eq!(rules.timeout, Duration::from_secs(60));
        let (listed, other) = ("AB".repeat(32), "cd".repeat(32));
        let a = parse(&[
            "--model-allowed-hosts",
            "Models.Example,127.0.0.1:8443,[::1]:9000,",
            "--model-allowed-digests",
            &listed,
            "--model-max-bytes",
            "1000",
            "--model-download-timeout",
            "5",
        ])
        .unwrap();
        assert_eq!(
            a.model_allowed_hosts,
            ["models.example", "127.0.0.1:8443", "[::1]:9000", ""]
        );
        let rules = a.download_rules();
        for url in [
            "https://models.example/m.onnx",
            "https://127.0.0.1:8443/m.onnx",
            "https://[::1]:9000/m.onnx",
        ] {
            assert!(rules.policy.allows(url, &other), "{url}");
        }
        assert!(
            rules
                .policy
                .allows("https://elsewhere.example/m.onnx", &listed.to_lowercase())
        );
        assert!(
            !rules
                .policy
                .allows("https://elsewhere.example/m.onnx", &other)
        );
        assert!(!rules.policy.allows("https://127.0.0.1/m.onnx", &other));
        assert_eq!(
            (rules.max_bytes, rules.timeout),
            (1000, Duration::from_secs(5))
        );
    }

    #[test]
    fn allow_list_entries_that_are_not_exact_hosts_are_refused() {
        for bad in [
            "https://models.example",
            "models.example/models",
            "*.models.example",
            "user@models.example",
            "models.example:0",
            "models.example:https",
            "models.example:",
            "::1",
            "[::1",
            "[models.example]:443",
            "[::1]8443",
            ":443",
            "models .example",
        ] {
            let err = parse(&["--model-allowed-hosts", bad]).err();
            assert!(err.is_some(), "{bad} accepted");
        }
        assert!(parse(&["--model-allowed-digests", "abc"]).is_err());
        for bad in ["0", "1m", "-5", "7200"] {
            assert!(
                parse(&["--model-download-timeout", bad]).is_err(),
                "{bad} accepted"
            );
        }
        assert!(parse(&["--model-max-bytes", "0"]).is_err());
    }

    #[test]
    fn thread_defaults() {
        assert_eq!(default_intra_op_threads(16, true), 16);
        assert_eq!(default_intra_op_threads(16, false), 8);
        assert_eq!(default_intra_op_threads(2, false), 1);
        assert_eq!(default_intra_op_threads(1, false), 1);
        assert_eq!(default_intra_op_threads(0, true), 1);
    }

    #[test]
    fn model_cache_honours_xdg_cache_home() {
        let root = |xdg: Option<&str>, home: Option<&str>| {
            cache_root(xdg.map(Into::into), home.map(Into::into))
        };
        // The operator sets XDG_CACHE_HOME=/var/cache/p2pcamera, its writable volume.
        let pod = root(Some("/var/cache/p2pcamera"), Some("/home/camera"));
        assert_eq!(
            resolve_model_cache(None, pod),
            PathBuf::from("/var/cache/p2pcamera/p2pcamera/models")
        );
        assert_eq!(
            root(Some("relative/cache"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache"))
        );
        assert_eq!(
            root(None, Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache"))
        );
        assert_eq!(root(None, None), None);
        assert_eq!(
            resolve_model_cache(None, None),
            std::env::temp_dir().join("p2pcamera").join("models")
        );
        let flag = Some(PathBuf::from("/models"));
        assert_eq!(
            resolve_model_cache(flag, root(Some("/xdg"), None)),
            PathBuf::from("/models")
        );
    }

    #[test]
    fn onnxruntime_path_order() {
        let flag = Some(PathBuf::from("/flag.so"));
        let env = Some(PathBuf::from("/env.so"));
        let cache = Some(PathBuf::from("/home/u/.cache"));
        assert_eq!(
            resolve_onnxruntime_path(flag, env.clone(), cache.clone()),
            PathBuf::from("/flag.so")
        );
        assert_eq!(
            resolve_onnxruntime_path(None, env, cache.clone()),
            PathBuf::from("/env.so")
        );
        assert_eq!(
            resolve_onnxruntime_path(None, None, cache),
            PathBuf::from("/home/u/.cache/p2pcamera/onnxruntime-1.32.0/libonnxruntime.so.1.32.0")
        );
    }
}
