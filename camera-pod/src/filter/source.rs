//! Where model bytes come from: embedded built-ins, files, or https URLs cached on disk. Every
//! model is checked against its sha256 before ONNX Runtime sees it.
//!
//! A URL is fetched only when the administrator's allow-list ([`ModelPolicy`]) allows it, checked
//! before anything else; the body is streamed into a temporary file in the cache directory while
//! it is hashed, within a size and a time limit, and renamed into place once it matches. The
//! cache keeps the [`CACHED_MODELS`] most recently used models.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use p2pcamera_api::ModelPolicy;
use reqwest::Url;
use sha2::{Digest, Sha256};

use super::FilterError;
use super::spec::{ModelSource, PoseModel};

/// The vendored MediaPipe landscape selfie segmentation model (see `models/README.md`).
pub const SELFIE_MODEL: &[u8] = include_bytes!("../../models/selfie_segmentation_landscape.onnx");
pub const SELFIE_MODEL_SHA256: &str =
    "70f5a1a2a34b8ae6091d4e0d0f8727594b008ab9750ea51b3fd00824142fa1d3";
/// The vendored multistyle26 style transfer model.
pub const STYLE_MODEL: &[u8] = include_bytes!("../../models/multistyle26.onnx");
pub const STYLE_MODEL_SHA256: &str =
    "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e";

/// The vendored MediaPipe BlazePose landmark models (`pose`, `body-parts`).
pub const POSE_LITE_MODEL: &[u8] = include_bytes!("../../models/pose_landmark_lite.onnx");
pub const POSE_LITE_MODEL_SHA256: &str =
    "cab5dfc13425e80e8156a50d9c4b7ac5b3404b170f95f2a4c162d4cd2838108c";
pub const POSE_FULL_MODEL: &[u8] = include_bytes!("../../models/pose_landmark_full.onnx");
pub const POSE_FULL_MODEL_SHA256: &str =
    "411bcf803afc189c28b2424ad835bf12f6b3c4fe3eb76d088b343b4b0a3f0464";

/// The embedded BlazePose model of a size: its label, bytes and sha256.
pub fn pose_model(model: PoseModel) -> (&'static str, &'static [u8], &'static str) {
    match model {
        PoseModel::Lite => (
            "pose landmark lite (built in)",
            POSE_LITE_MODEL,
            POSE_LITE_MODEL_SHA256,
        ),
        PoseModel::Full => (
            "pose landmark full (built in)",
            POSE_FULL_MODEL,
            POSE_FULL_MODEL_SHA256,
        ),
    }
}

/// Default of `--model-max-bytes`: the largest model read from a file or downloaded.
pub const DEFAULT_MODEL_MAX_BYTES: u64 = 256 << 20;
/// Default of `--model-download-timeout`.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a connection, within the download timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Most redirects a download follows (each to a URL the allow-list allows).
const MAX_REDIRECTS: usize = 5;
/// How many downloaded models the cache keeps (the most recently used); with the download in
/// progress, the cache holds at most `CACHED_MODELS + 1` times `--model-max-bytes`.
pub const CACHED_MODELS: usize = 3;
/// Marks a download in progress in the cache directory: `<sha256>.onnx.part-<pid>-<n>`.
const PART_MARKER: &str = ".onnx.part-";

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Fails with both hashes when `bytes` does not hash to `expected` (lower-case hex).
pub fn verify_sha256(model: &str, bytes: &[u8], expected: &str) -> Result<(), FilterError> {
    let actual = sha256_hex(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(FilterError::ChecksumMismatch {
            model: model.to_owned(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

/// Why a model download failed. The detail is for the log: a remote caller is told only that the
/// download failed (see [`FilterError::client_message`]).
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{}", error_chain(.0))]
    Request(#[source] reqwest::Error),
    #[error("the server answered HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("the model is larger than {limit} bytes (--model-max-bytes)")]
    TooLarge { limit: u64 },
    #[error("the download took longer than {} s (--model-download-timeout)", .0.as_secs())]
    TimedOut(Duration),
    #[error("the body's sha256 is {actual}, expected {expected}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("writing {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the download thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the download thread panicked")]
    Panicked,
}

/// What the administrator lets camera-pod download, and how much.
#[derive(Clone, Debug)]
pub struct DownloadRules {
    /// Which model URLs may be fetched (`--model-allowed-hosts`, `--model-allowed-digests`).
    pub policy: ModelPolicy,
    /// Largest model read from a file or downloaded (`--model-max-bytes`).
    pub max_bytes: u64,
    /// Longest a download may take, connecting included (`--model-download-timeout`).
    pub timeout: Duration,
}

impl Default for DownloadRules {
    /// Nothing may be downloaded; the default size and time limits.
    fn default() -> Self {
        DownloadRules {
            policy: ModelPolicy::default(),
            max_bytes: DEFAULT_MODEL_MAX_BYTES,
            timeout: DEFAULT_DOWNLOAD_TIMEOUT,
        }
    }
}

/// Loads custom models: reads files, downloads allowed https URLs once into `cache_dir`.
#[derive(Clone, Debug)]
pub struct ModelFetcher {
    cache_dir: PathBuf,
    /// Extra PEM CA certificates trusted for downloads, on top of the system's.
    extra_ca_pem: Option<Vec<u8>>,
    rules: DownloadRules,
}

impl ModelFetcher {
    pub fn new(
        cache_dir: PathBuf,
        extra_ca_file: Option<&Path>,
        rules: DownloadRules,
    ) -> Result<ModelFetcher, FilterError> {
        let extra_ca_pem = match extra_ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| FilterError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                let certs =
                    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| FilterError::Io {
                        path: path.to_owned(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    })?;
                if certs.is_empty() {
                    return Err(FilterError::Io {
                        path: path.to_owned(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "no PEM certificate in the file",
                        ),
                    });
                }
                Some(pem)
            }
            None => None,
        };
        Ok(ModelFetcher {
            cache_dir,
            extra_ca_pem,
            rules,
        })
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The model's bytes, verified against `sha256`. A URL must be allowed by the administrator's
    /// allow-list; it is checked before the cache or the network is looked at. Blocks; a URL is
    /// fetched on a helper thread with its own runtime, so this may be called from inside or
    /// outside an async runtime (inside one, prefer `spawn_blocking`).
    pub fn load(&self, source: &ModelSource, sha256: &str) -> Result<Vec<u8>, FilterError> {
        match source {
            ModelSource::Path(path) => {
                let bytes = read_model_file(path, self.rules.max_bytes)?;
                verify_sha256(&path.display().to_string(), &bytes, sha256)?;
                Ok(bytes)
            }
            ModelSource::Url(url) => self.load_url(url, sha256),
        }
    }

    /// Path of the cached copy of a model with this checksum.
    pub fn cached_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir.join(format!("{sha256}.onnx"))
    }

    fn load_url(&self, url: &str, sha256: &str) -> Result<Vec<u8>, FilterError> {
        let failed = |source: DownloadError| FilterError::Download {
            url: url.to_owned(),
            source,
        };
        // The check runs on the URL as the client will request it.
        let parsed = Url::parse(url)
            .map_err(|e| FilterError::InvalidSpec(format!("model URL `{url}`: {e}")))?;
        if !self.rules.policy.allows(parsed.as_str(), sha256) {
            return Err(FilterError::ModelNotAllowed {
                url: url.to_owned(),
                sha256: sha256.to_owned(),
            });
        }
        if let Some(bytes) = self.read_cached(sha256) {
            tracing::debug!(%url, "model found in cache");
            return Ok(bytes);
        }
        tracing::info!(%url, max_bytes = self.rules.max_bytes, timeout_s = self.rules.timeout.as_secs(), "downloading model");
        let started = std::time::Instant::now();
        let download = Download {
            url: parsed,
            sha256: sha256.to_owned(),
            cached: self.cached_path(sha256),
            cache_dir: self.cache_dir.clone(),
            extra_ca_pem: self.extra_ca_pem.clone(),
            rules: self.rules.clone(),
        };
        let size = download.run_on_own_thread().map_err(failed)?;
        tracing::info!(%url, size, elapsed_s = started.elapsed().as_secs_f64(), "model downloaded");
        self.prune_cache();
        // Read back like any cached model: ONNX Runtime gets bytes just checked.
        self.read_cached(sha256).ok_or_else(|| {
            failed(DownloadError::Cache {
                path: self.cached_path(sha256),
                source: std::io::ErrorKind::NotFound.into(),
            })
        })
    }

    /// The cached model with this checksum, checked; an entry that is corrupt or over
    /// `--model-max-bytes` is removed (and downloaded again).
    fn read_cached(&self, sha256: &str) -> Option<Vec<u8>> {
        let path = self.cached_path(sha256);
        let bytes = match read_model_file(&path, self.rules.max_bytes) {
            Ok(bytes) => bytes,
            Err(FilterError::ModelMissing { .. }) => return None,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cached model unusable; downloading again");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        if sha256_hex(&bytes) != sha256 {
            tracing::warn!(path = %path.display(), "cached model has a wrong checksum; downloading again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // Recently used: pruning keeps it.
        if let Err(error) = std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()))
        {
            tracing::debug!(path = %path.display(), %error, "cannot mark the cached model as used");
        }
        Some(bytes)
    }

    /// Keeps the [`CACHED_MODELS`] most recently used models and removes the rest, and removes
    /// partial downloads older than the download timeout (left by a process that was killed
    /// mid-way: a failed download removes its own).
    fn prune_cache(&self) {
        let Ok(entries) = std::fs::read_dir(&self.cache_dir) else {
            return;
        };
        let mut models = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if is_cached_model_name(name) {
                models.push((modified, entry.path()));
            } else if name.contains(PART_MARKER)
                && modified.elapsed().is_ok_and(|age| age > self.rules.timeout)
            {
                tracing::info!(path = %entry.path().display(), "removing an abandoned partial download");
                let _ = std::fs::remove_file(entry.path());
            }
        }
        models.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        for (_, path) in models.into_iter().skip(CACHED_MODELS) {
            tracing::info!(path = %path.display(), kept = CACHED_MODELS, "removing the least recently used model from the cache");
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `<64 lower-case hex>.onnx`: a model this fetcher cached.
fn is_cached_model_name(name: &str) -> bool {
    name.strip_suffix(".onnx").is_some_and(|hash| {
        hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// One model download into the cache.
struct Download {
    url: Url,
    /// Lower-case hex, as the request named it.
    sha256: String,
    /// Where the model goes once complete and checked.
    cached: PathBuf,
    cache_dir: PathBuf,
    extra_ca_pem: Option<Vec<u8>>,
    rules: DownloadRules,
}

impl Download {
    /// Runs the download on a thread of its own with a one-thread runtime, so that the caller may
    /// be inside or outside an async runtime; returns the model's size.
    fn run_on_own_thread(self) -> Result<u64, DownloadError> {
        std::thread::Builder::new()
            .name("model-download".into())
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(DownloadError::Thread)?
                    .block_on(self.run())
            })
            .map_err(DownloadError::Thread)?
            .join()
            .map_err(|_| DownloadError::Panicked)?
    }

    async fn run(&self) -> Result<u64, DownloadError> {
        tokio::time::timeout(self.rules.timeout, self.fetch())
            .await
            .map_err(|_| DownloadError::TimedOut(self.rules.timeout))?
    }

    /// Streams the body into a partial file while hashing it; past the size limit, on a wrong
    /// checksum, on any error, or when the timeout drops this future, the partial file is removed.
    async fn fetch(&self) -> Result<u64, DownloadError> {
        let mut response = self
            .client()?
            .get(self.url.clone())
            .send()
            .await
            .map_err(DownloadError::Request)?;
        let status = response.status();
        if !status.is_success() {
            return Err(DownloadError::Status(status));
        }
        let limit = self.rules.max_bytes;
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(DownloadError::TooLarge { limit });
        }
        let mut part = PartialModel::create(&self.cache_dir, &self.sha256)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(DownloadError::Request)? {
            size += chunk.len() as u64;
            if size > limit {
                return Err(DownloadError::TooLarge { limit });
            }
            hasher.update(&chunk);
            part.write(&chunk)?;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != self.sha256 {
            return Err(DownloadError::ChecksumMismatch {
                expected: self.sha256.clone(),
                actual,
            });
        }
        part.keep_as(&self.cached)?;
        Ok(size)
    }

    /// An https-only client that follows redirects only to URLs the allow-list allows.
    fn client(&self) -> Result<reqwest::Client, DownloadError> {
        // reqwest is built without a default crypto provider; install ring's unless one is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (policy, sha256) = (self.rules.policy.clone(), self.sha256.clone());
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if policy.allows(attempt.url().as_str(), &sha256) {
                attempt.follow()
            } else {
                attempt.error("redirected to a URL the allow-list does not allow")
            }
        });
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .redirect(redirects)
            .connect_timeout(CONNECT_TIMEOUT.min(self.rules.timeout));
        if let Some(pem) = &self.extra_ca_pem {
            for cert in
                reqwest::Certificate::from_pem_bundle(pem).map_err(DownloadError::Request)?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map_err(DownloadError::Request)
    }
}

/// A download being written into the cache under a unique temporary name, renamed into place
/// once complete (readers never see a partial model) and removed otherwise.
struct PartialModel {
    path: PathBuf,
    file: std::fs::File,
    kept: bool,
}

impl PartialModel {
    fn create(cache_dir: &Path, sha256: &str) -> Result<PartialModel, DownloadError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let cache_error = |source| DownloadError::Cache {
            path: cache_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(cache_dir).map_err(cache_error)?;
        let path = cache_dir.join(format!(
            "{sha256}{PART_MARKER}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create_new(&path).map_err(cache_error)?;
        Ok(PartialModel {
            path,
            file,
            kept: false,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), DownloadError> {
        self.file
            .write_all(bytes)
            .map_err(|source| DownloadError::Cache {
                path: self.path.clone(),
                source,
            })
    }

    fn keep_as(mut self, path: &Path) -> Result<(), DownloadError> {
        self.file
            .sync_all()
            .and_then(|()| std::fs::rename(&self.path, path))
            .map_err(|source| DownloadError::Cache {
                path: path.to_owned(),
                source,
            })?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for PartialModel {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// reqwest's top-level message hides the cause (a TLS or connect error); include the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A model file's bytes, refused when larger than `max_bytes`.
fn read_model_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FilterError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FilterError::ModelMissing {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(FilterError::Io {
                path: path.to_owned(),
                source,
            });
        }
        Ok(m) if m.len() > max_bytes => {
            return Err(FilterError::ModelLoad {
                model: path.display().to_string(),
                reason: format!("larger than {max_bytes} bytes (--model-max-bytes)"),
            });
        }
        Ok(_) => {}
    }
    std::fs::read(path).map_err(|source| FilterError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_models_match_their_checksums() {
        verify_sha256("selfie", SELFIE_MODEL, SELFIE_MODEL_SHA256).unwrap();
        verify_sha256("style", STYLE_MODEL, STYLE_MODEL_SHA256).unwrap();
        for model in [PoseModel::Lite, PoseModel::Full] {
            let (label, bytes, sha256) = pose_model(model);
            verify_sha256(label, bytes, sha256).unwrap();
        }
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn file_models_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"abc").unwrap();
        let fetcher =
            ModelFetcher::new(dir.path().join("cache"), None, DownloadRules::default()).unwrap();
        let good = sha256_hex(b"abc");
        assert_eq!(
            fetcher
                .load(&ModelSource::Path(path.clone()), &good)
                .unwrap(),
            b"abc"
        );
        let wrong = "0".repeat(64);
        let err = fetcher
            .load(&ModelSource::Path(path.clone()), &wrong)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&wrong) && err.contains(&good), "{err}");
        let err = fetcher
            .load(&ModelSource::Path(dir.path().join("none.onnx")), &good)
            .unwrap_err();
        assert!(matches!(err, FilterError::ModelMissing { .. }), "{err}");
        assert!(err.to_string().contains("none.onnx"));
    }

    #[test]
    fn file_models_over_the_size_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, [0u8; 100]).unwrap();
        let rules = DownloadRules {
            max_bytes: 99,
            ..DownloadRules::default()
        };
        let fetcher = ModelFetcher::new(dir.path().join("cache"), None, rules).unwrap();
        let err = fetcher
            .load(&ModelSource::Path(path), &sha256_hex(&[0u8; 100]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than 99 bytes"), "{err}");
    }

    #[test]
    fn urls_off_the_allow_list_are_refused_even_when_cached() {
        let dir = tempfile::tempdir().unwrap();
        let sha256 = sha256_hex(b"model");
        let only_other_host = DownloadRules {
            policy: ModelPolicy::new(["models.example"], [sha256_hex(b"other")]),
            ..DownloadRules::default()
        };
        let fetcher = ModelFetcher::new(dir.path().into(), None, only_other_host).unwrap();
        std::fs::write(fetcher.cached_path(&sha256), b"model").unwrap();
        // Port 1 on loopback: a request would fail differently, and nothing listens there.
        let url = ModelSource::Url("https://127.0.0.1:1/m.onnx".into());
        let err = fetcher.load(&url, &sha256).unwrap_err();
        assert!(matches!(err, FilterError::ModelNotAllowed { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        assert_eq!(
            err.client_message(),
            crate::filter::MODEL_NOT_ALLOWED_MESSAGE
        );
        // Allowed by its digest, the cached copy is used without a request.
        let by_digest = DownloadRules {
            policy: ModelPolicy::new(Vec::<String>::new(), [&sha256]),
            ..DownloadRules::default()
        };
        let fetcher = ModelFetcher::new(dir.path().into(), None, by_digest).unwrap();
        assert_eq!(fetcher.load(&url, &sha256).unwrap(), b"model");
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used_models() {
        let dir = tempfile::tempdir().unwrap();
        let rules = DownloadRules {
            timeout: Duration::from_secs(60),
            ..DownloadRules::default()
        };
        let fetcher = ModelFetcher::new(dir.path().into(), None, rules).unwrap();
        let now = SystemTime::now();
        let write = |name: &str, content: &[u8], age_s: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(now - Duration::from_secs(age_s))
                .unwrap();
        };
        // Model i holds the byte i and is 100 i seconds old.
        let model = |i: u8| format!("{}.onnx", sha256_hex(&[i]));
        for i in 0..5u8 {
            write(&model(i), &[i], 100 * u64::from(i));
        }
        let abandoned = format!("{}{PART_MARKER}1-0", sha256_hex(b"x"));
        let in_progress = format!("{}{PART_MARKER}2-0", sha256_hex(b"y"));
        write(&abandoned, b"x", 61);
        write(&in_progress, b"y", 1);
        write("notes.txt", b"not a model", 1000);
        // Using the oldest model makes it the most recently used.
        assert_eq!(fetcher.read_cached(&sha256_hex(&[4])).unwrap(), [4]);
        fetcher.prune_cache();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected = vec![
            model(0),
            model(1),
            model(4),
            in_progress,
            "notes.txt".into(),
        ];
        expected.sort();
        assert_eq!(left, expected);
    }

    #[test]
    fn cached_model_names_are_digests() {
        assert!(is_cached_model_name(&format!("{}.onnx", "0a".repeat(32))));
        assert!(!is_cached_model_name(&format!("{}.onnx", "0A".repeat(32))));
        assert!(!is_cached_model_name("model.onnx"));
        assert!(!is_cached_model_name(&format!(
            "{}.onnx.part-1-0",
            "0a".repeat(32)
        )));
    }

    #[test]
    fn a_partial_download_is_removed_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sha256 = "ab".repeat(32);
        let mut part = PartialModel::create(dir.path(), &sha256).unwrap();
        part.write(b"partial").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(part);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut part = PartialModel::create(dir.path(), &sha256).unwrap();
        part.write(b"complete").unwrap();
        let kept = dir.path().join(format!("{sha256}.onnx"));
        part.keep_as(&kept).unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"complete");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, b"not a certificate").unwrap();
        let err = ModelFetcher::new(dir.path().into(), Some(&path), DownloadRules::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }
}
