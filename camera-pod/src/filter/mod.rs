//! Filters: what camera-pod does to every picture.
//!
//! [`FilterSpec`] says which filter (parsed from flags, the data channel or HTTP),
//! [`FilterFactory`] owns ONNX Runtime and turns a spec into a running [`Filter`], and
//! [`FilterWorker`] owns the filter thread that runs it on the latest decoded picture and switches
//! filters on request. The pure parts (pre/post-processing and compositing) live in [`composite`],
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

use std::path::PathBuf;

pub use args::{ExecutionProviderChoice, FilterArgs};
pub use runtime::FilterFactory;
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
    #[error("cannot download model {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("cannot load model {model}: {reason}")]
    ModelLoad { model: String, reason: String },
    #[error(
        "a filter chosen over the network may not read files on the pod ({0}); use a background colour, or a custom model by https:// URL with its sha256"
    )]
    LocalFilesRefused(String),
    #[error("cannot load background image {path}: {reason}")]
    BackgroundImage { path: PathBuf, reason: String },
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
