//! Filters: what camera-pod does to every picture.
//!
//! [`FilterSpec`] says which filter (parsed from flags, the data channel or HTTP),
//! [`FilterFactory`] owns ONNX Runtime and turns a spec into a running [`Filter`], and
//! [`FilterWorker`] owns the filter thread that runs it on the latest decoded picture and the
//! build thread that prepares the filters switched to. Models by URL come through [`source`], only
//! from the administrator's allow-list. The pure parts (pre/post-processing and compositing) live in [`composite`],
//! model descriptions in [`manifest`], keypoint decoding, smoothing and drawing in [`landmarks`],
//! the pixel and tensor formats they use in [`tensor`].

pub mod args;
pub mod composite;
pub mod landmarks;
pub mod manifest;
pub mod model;
pub mod runtime;
pub mod source;
pub mod spec;
pub mod tensor;
pub mod worker;

use std::borrow::Cow;
use std::path::PathBuf;

pub use args::{ExecutionProviderChoice, FilterArgs};
pub use runtime::FilterFactory;
pub use source::{DownloadError, DownloadRules};
pub use spec::{Background, BodyParts, CustomModel, FilterSpec, ModelSource, PoseModel};
pub use worker::{FilterBuilder, FilterWorker, SwitchError, WorkerError};

use crate::frame::VideoFrame;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("inference failed: {0}")]
    Inference(String),
    #[error(
        "unknown filter `{0}` (known: passthrough, selfie-blur, selfie-replace, style, pose, body-parts, custom)"
    )]
    UnknownFilter(String),
    #[error("style index {0} is out of range (0..{n})", n = manifest::STYLE_COUNT)]
    StyleOutOfRange(u32),
    #[error("bad colour `{0}`: expected #rrggbb")]
    BadColor(String),
    #[error("invalid filter spec: {0}")]
    InvalidSpec(String),
    #[error("invalid model manifest: {0}")]
    Manifest(String),
    #[error(
        "ONNX Runtime library not found at {path}: run camera-pod/scripts/fetch-onnxruntime.sh or set P2PCAMERA_ONNXRUNTIME_LIB"
    )]
    OnnxRuntimeMissing { path: PathBuf },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    OnnxRuntimeLoad { path: PathBuf, reason: String },
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("model file {path} not found")]
    ModelMissing { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sha256 mismatch for model {model}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        model: String,
        expected: String,
        actual: String,
    },
    #[error("cannot download model {url}: {source}")]
    Download {
        url: String,
        #[source]
        source: source::DownloadError,
    },
    #[error(
        "model {url} (sha256 {sha256}) is not allowed on this camera: neither its host is in --model-allowed-hosts nor its sha256 in --model-allowed-digests"
    )]
    ModelNotAllowed { url: String, sha256: String },
    #[error("cannot load model {model}: {reason}")]
    ModelLoad { model: String, reason: String },
    #[error(
        "a filter chosen over the network may not read files on the pod ({0}); use a background colour, or a custom model by https:// URL with its sha256"
    )]
    LocalFilesRefused(String),
    #[error("cannot load background image {path}: {reason}")]
    BackgroundImage { path: PathBuf, reason: String },
}

/// What a remote caller is told when a model by URL is not on the allow-list.
pub const MODEL_NOT_ALLOWED_MESSAGE: &str = "this model is not allowed on this camera";
/// What a remote caller is told when an allowed model could not be downloaded.
pub const MODEL_DOWNLOAD_FAILED_MESSAGE: &str = "the model could not be downloaded, or it did not match its sha256; the camera pod's log says why";

impl FilterError {
    /// What a remote caller (data channel, `POST /filter`) is told. A refused or failed model by
    /// URL says nothing about the URL's server, the network or the body (which would make the pod
    /// a scanner of its network); the log has the detail.
    pub fn client_message(&self) -> Cow<'_, str> {
        match self {
            FilterError::ModelNotAllowed { .. } => MODEL_NOT_ALLOWED_MESSAGE.into(),
            FilterError::Download { .. } => MODEL_DOWNLOAD_FAILED_MESSAGE.into(),
            other => other.to_string().into(),
        }
    }
}

/// A video filter. Owned by the filter thread; `apply` runs once per picture that reaches it.
pub trait Filter: Send {
    /// Stable name, as given on the command line (`passthrough`, `selfie-blur`, ...).
    fn name(&self) -> &str;
    fn apply(&mut self, frame: &mut VideoFrame) -> Result<(), FilterError>;
}

/// The identity filter.
pub struct Passthrough;

impl Filter for Passthrough {
    fn name(&self) -> &str {
        "passthrough"
    }
    fn apply(&mut self, _frame: &mut VideoFrame) -> Result<(), FilterError> {
        Ok(())
    }
}
