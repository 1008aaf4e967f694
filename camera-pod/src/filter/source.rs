//! Where model bytes come from: embedded built-ins, files, or https URLs cached on disk. Every
//! model is checked against its sha256 before ONNX Runtime sees it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Largest model accepted from a file or a download.
pub const MAX_MODEL_BYTES: u64 = 1 << 30;
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

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

/// Loads custom models: reads files, downloads https URLs once into `cache_dir`.
#[derive(Clone, Debug)]
pub struct ModelFetcher {
    cache_dir: PathBuf,
    /// Extra PEM CA certificates trusted for downloads, on top of the system's.
    extra_ca_pem: Option<Vec<u8>>,
}

impl ModelFetcher {
    pub fn new(
        cache_dir: PathBuf,
        extra_ca_file: Option<&Path>,
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
        })
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The model's bytes, verified against `sha256`. Blocks; a URL is fetched on a helper thread
    /// with its own runtime, so this may be called from inside or outside an async runtime (inside
    /// one, prefer `spawn_blocking`).
    pub fn load(&self, source: &ModelSource, sha256: &str) -> Result<Vec<u8>, FilterError> {
        match source {
            ModelSource::Path(path) => {
                let bytes = read_model_file(path)?;
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
        let cached = self.cached_path(sha256);
        if let Ok(bytes) = std::fs::read(&cached) {
            if sha256_hex(&bytes) == sha256 {
                tracing::debug!(%url, path = %cached.display(), "model found in cache");
                return Ok(bytes);
            }
            tracing::warn!(path = %cached.display(), "cached model has a wrong checksum; downloading again");
            let _ = std::fs::remove_file(&cached);
        }
        tracing::info!(%url, "downloading model");
        let bytes = self.download(url)?;
        verify_sha256(url, &bytes, sha256)?;
        std::fs::create_dir_all(&self.cache_dir).map_err(|source| FilterError::Io {
            path: self.cache_dir.clone(),
            source,
        })?;
        // Write to a unique temporary name, then rename: readers never see a partial model.
        let part = self
            .cache_dir
            .join(format!("{sha256}.onnx.part-{}", std::process::id()));
        let written = std::fs::File::create(&part)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&part, &cached));
        if let Err(source) = written {
            let _ = std::fs::remove_file(&part);
            return Err(FilterError::Io {
                path: cached,
                source,
            });
        }
        tracing::info!(%url, path = %cached.display(), size = bytes.len(), "model cached");
        Ok(bytes)
    }

    fn download(&self, url: &str) -> Result<Vec<u8>, FilterError> {
        let url_owned = url.to_owned();
        let ca = self.extra_ca_pem.clone();
        let fail = |reason: String| FilterError::Download {
            url: url.to_owned(),
            reason,
        };
        let worker = std::thread::Builder::new()
            .name("model-download".into())
            .spawn(move || -> Result<Vec<u8>, String> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(fetch(&url_owned, ca.as_deref()))
            })
            .map_err(|e| fail(e.to_string()))?;
        worker
            .join()
            .map_err(|_| fail("the download thread panicked".into()))?
            .map_err(fail)
    }
}

async fn fetch(url: &str, extra_ca_pem: Option<&[u8]>) -> Result<Vec<u8>, String> {
    // reqwest is built without a default crypto provider; install ring's unless one is set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(DOWNLOAD_TIMEOUT);
    if let Some(pem) = extra_ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())? {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| format!("{e:#}"))?;
    let mut response = client.get(url).send().await.map_err(|e| error_chain(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP status {status}"));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_MODEL_BYTES)
    {
        return Err(format!("the model is larger than {MAX_MODEL_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() as u64 + chunk.len() as u64 > MAX_MODEL_BYTES {
            return Err(format!("the model is larger than {MAX_MODEL_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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

fn read_model_file(path: &Path) -> Result<Vec<u8>, FilterError> {
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
        Ok(m) if m.len() > MAX_MODEL_BYTES => {
            return Err(FilterError::ModelLoad {
                model: path.display().to_string(),
                reason: format!("larger than {MAX_MODEL_BYTES} bytes"),
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
        let fetcher = ModelFetcher::new(dir.path().join("cache"), None).unwrap();
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
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, b"not a certificate").unwrap();
        let err = ModelFetcher::new(dir.path().into(), Some(&path))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }
}
