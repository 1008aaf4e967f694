//! [`FilterFactory`]: loads ONNX Runtime once, picks the execution provider, and builds filters.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use ort::environment::Environment;
use ort::ep::ExecutionProviderDispatch;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

use super::args::{ExecutionProviderChoice, FilterArgs};
use super::manifest::{LandmarkDraw, Manifest, MaskComposite};
use super::model::ModelFilter;
use super::source::{self, ModelFetcher};
use super::spec::{Background, FilterSpec, PoseModel};
use super::{Filter, FilterError, Passthrough};
use crate::frame::VideoFrame;

/// ONNX Runtime allows one environment per process; every factory shares it.
static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// Size of the picture each new filter is warmed up with.
const WARM_UP_SIZE: (u32, u32) = (640, 480);

/// An execution provider camera-pod can run models on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
    TensorRt,
}

impl ExecutionProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda => "cuda",
            ExecutionProvider::TensorRt => "tensorrt",
        }
    }

    fn compiled_in(self) -> bool {
        match self {
            ExecutionProvider::Cpu => true,
            ExecutionProvider::Cuda => cfg!(feature = "cuda"),
            ExecutionProvider::TensorRt => cfg!(feature = "tensorrt"),
        }
    }

    /// The ort registrations; the GPU ones fail loudly so a fallback is never silent. Providers
    /// not compiled in register nothing (they are never chosen, see `compiled_in`).
    fn dispatches(self) -> Vec<ExecutionProviderDispatch> {
        // Only pushed to when a GPU feature is enabled.
        #[allow(unused_mut)]
        let mut dispatches = Vec::new();
        match self {
            ExecutionProvider::Cpu => {}
            ExecutionProvider::Cuda => {
                #[cfg(feature = "cuda")]
                dispatches.push(ort::ep::CUDA::default().build().error_on_failure());
            }
            ExecutionProvider::TensorRt => {
                #[cfg(feature = "tensorrt")]
                dispatches.push(ort::ep::TensorRT::default().build().error_on_failure());
                // CUDA takes the nodes TensorRT does not support.
                #[cfg(feature = "cuda")]
                dispatches.push(ort::ep::CUDA::default().build());
            }
        }
        dispatches
    }
}

/// The GPU providers to try for a choice, best first (CPU is always the last resort).
pub fn provider_candidates(choice: ExecutionProviderChoice) -> Vec<ExecutionProvider> {
    match choice {
        ExecutionProviderChoice::Cpu => Vec::new(),
        ExecutionProviderChoice::Cuda => vec![ExecutionProvider::Cuda],
        ExecutionProviderChoice::Tensorrt => vec![ExecutionProvider::TensorRt],
        ExecutionProviderChoice::Auto => [ExecutionProvider::TensorRt, ExecutionProvider::Cuda]
            .into_iter()
            .filter(|p| p.compiled_in())
            .collect(),
    }
}

/// Builds filters from specs. Create one per process (it is cheap to share by reference); each
/// [`FilterFactory::build`] makes a new filter with its own ONNX Runtime session.
pub struct FilterFactory {
    environment: Environment,
    provider: ExecutionProvider,
    gpu_fallback: bool,
    intra_op_threads: usize,
    fetcher: ModelFetcher,
    library: PathBuf,
}

impl std::fmt::Debug for FilterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterFactory")
            .field("provider", &self.provider)
            .field("gpu_fallback", &self.gpu_fallback)
            .field("intra_op_threads", &self.intra_op_threads)
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

impl FilterFactory {
    /// Loads ONNX Runtime (once per process) and chooses the execution provider by trying the
    /// candidates on the built-in selfie model.
    pub fn new(args: &FilterArgs) -> Result<FilterFactory, FilterError> {
        let library = args.onnxruntime_path();
        let environment = environment(&library)?;
        let intra_op_threads = args.intra_op_thread_count();
        let fetcher = ModelFetcher::new(
            args.model_cache_path(),
            args.model_ca_file.as_deref(),
            args.download_rules(),
        )?;
        let explicit_gpu = matches!(
            args.execution_provider,
            ExecutionProviderChoice::Cuda | ExecutionProviderChoice::Tensorrt
        );
        let mut provider = ExecutionProvider::Cpu;
        for candidate in provider_candidates(args.execution_provider) {
            if !candidate.compiled_in() {
                tracing::error!(
                    provider = candidate.as_str(),
                    "GPU execution provider requested but camera-pod was built without the `{}` feature; running on CPU",
                    candidate.as_str()
                );
                continue;
            }
            let probe =
                session_builder(&environment, intra_op_threads, candidate).and_then(|mut b| {
                    b.commit_from_memory(source::SELFIE_MODEL)
                        .map_err(|e| FilterError::Runtime(e.to_string()))
                });
            match probe {
                Ok(_) => {
                    provider = candidate;
                    break;
                }
                Err(error) if explicit_gpu => tracing::error!(
                    provider = candidate.as_str(),
                    %error,
                    "GPU execution provider requested but it failed to start; falling back to CPU"
                ),
                Err(error) => tracing::warn!(
                    provider = candidate.as_str(),
                    %error,
                    "GPU execution provider is compiled in but failed to start; trying the next one"
                ),
            }
        }
        let gpu_fallback = explicit_gpu && provider == ExecutionProvider::Cpu;
        tracing::info!(
            library = %library.display(),
            provider = provider.as_str(),
            intra_op_threads,
            model_cache = %fetcher.cache_dir().display(),
            "ONNX Runtime ready"
        );
        Ok(FilterFactory {
            environment,
            provider,
            gpu_fallback,
            intra_op_threads,
            fetcher,
            library,
        })
    }

    /// The execution provider models run on: `cpu`, `cuda` or `tensorrt`.
    pub fn execution_provider(&self) -> &str {
        self.provider.as_str()
    }

    /// True when a GPU provider was asked for explicitly and the models run on CPU instead.
    pub fn gpu_fallback(&self) -> bool {
        self.gpu_fallback
    }

    pub fn intra_op_threads(&self) -> usize {
        self.intra_op_threads
    }

    /// Makes a ready filter: loads (or downloads) and verifies the model, creates its session and
    /// runs it once so the first real frame is fast. Blocks for as long as that takes (a download
    /// included); call it off the async runtime's worker threads.
    pub fn build(&self, spec: &FilterSpec) -> Result<Box<dyn Filter>, FilterError> {
        let started = Instant::now();
        let filter: Box<dyn Filter> = match spec {
            FilterSpec::Passthrough => Box::new(Passthrough),
            _ => Box::new(self.build_model(spec)?),
        };
        tracing::info!(
            filter = spec.name(),
            provider = self.provider.as_str(),
            elapsed_s = started.elapsed().as_secs_f64(),
            "filter ready"
        );
        Ok(filter)
    }

    /// The model filter of every spec but `passthrough` (which runs no model), ready as in
    /// [`Self::build`]; a landmarks model's filter tells its points (`ModelFilter::landmarks`).
    pub fn build_model(&self, spec: &FilterSpec) -> Result<ModelFilter, FilterError> {
        let selfie = || {
            builtin(
                "selfie segmentation (built in)",
                source::SELFIE_MODEL,
                source::SELFIE_MODEL_SHA256,
            )
        };
        let pose = |model: PoseModel| {
            let (label, bytes, sha256) = source::pose_model(model);
            builtin(label, bytes, sha256)
        };
        let (bytes, manifest) = match spec {
            FilterSpec::Passthrough => {
                return Err(FilterError::InvalidSpec("passthrough runs no model".into()));
            }
            FilterSpec::SelfieBlur { strength } => (
                selfie()?,
                Manifest::selfie(MaskComposite::Blur {
                    radius_percent: f32::from(*strength),
                }),
            ),
            FilterSpec::SelfieReplace(Background::Color(c)) => {
                (selfie()?, Manifest::selfie(MaskComposite::Color(*c)))
            }
            FilterSpec::SelfieReplace(Background::Image(p)) => {
                (selfie()?, Manifest::selfie(MaskComposite::Image(p.clone())))
            }
            FilterSpec::Style { style } => (
                builtin(
                    "multistyle26 (built in)",
                    source::STYLE_MODEL,
                    source::STYLE_MODEL_SHA256,
                )?,
                Manifest::style(*style),
            ),
            FilterSpec::Pose { model } => (pose(*model)?, Manifest::pose(LandmarkDraw::Skeleton)?),
            FilterSpec::BodyParts(parts) => (pose(parts.model)?, Manifest::pose(parts.draw())?),
            FilterSpec::Custom(custom) => {
                let bytes = self.fetcher.load(&custom.model, &custom.sha256)?;
                return self.model_filter(
                    &custom.model.to_string(),
                    &bytes,
                    custom.manifest.clone(),
                );
            }
        };
        self.model_filter(spec.name(), bytes, manifest)
    }

    /// A warmed-up [`ModelFilter`]; `name` is the filter name for built-ins, the model location
    /// for custom models.
    fn model_filter(
        &self,
        name: &str,
        bytes: &[u8],
        manifest: Manifest,
    ) -> Result<ModelFilter, FilterError> {
        let load_error = |reason: String| FilterError::ModelLoad {
            model: name.to_owned(),
            reason,
        };
        let session: Session =
            session_builder(&self.environment, self.intra_op_threads, self.provider)?
                .commit_from_memory(bytes)
                .map_err(|e| load_error(e.to_string()))?;
        let mut filter = ModelFilter::new(name, session, manifest)?;
        let (w, h) = WARM_UP_SIZE;
        let mut frame = VideoFrame::filled(w, h, 128, 128, 128);
        filter
            .apply(&mut frame)
            .map_err(|e| load_error(format!("warm-up run failed: {e}")))?;
        Ok(filter)
    }
}

/// An embedded model's bytes, checked against its sha256.
fn builtin(label: &str, bytes: &'static [u8], sha256: &str) -> Result<&'static [u8], FilterError> {
    source::verify_sha256(label, bytes, sha256)?;
    Ok(bytes)
}

fn session_builder(
    env: &Environment,
    threads: usize,
    provider: ExecutionProvider,
) -> Result<SessionBuilder, FilterError> {
    let runtime = |e: ort::Error<SessionBuilder>| FilterError::Runtime(e.to_string());
    Session::builder(env)
        .map_err(|e| FilterError::Runtime(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(runtime)?
        .with_intra_threads(threads)
        .map_err(runtime)?
        .with_inter_threads(1)
        .map_err(runtime)?
        // Spinning threads would steal the cores decoding and encoding need.
        .with_intra_op_spinning(false)
        .map_err(runtime)?
        .with_execution_providers(provider.dispatches())
        .map_err(runtime)
}

/// The process's ONNX Runtime environment, loading the library on first use.
fn environment(library: &Path) -> Result<Environment, FilterError> {
    if !library.is_file() {
        return Err(FilterError::OnnxRuntimeMissing {
            path: library.to_owned(),
        });
    }
    let mut slot = ENVIRONMENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    let builder = ort::init_from(library).map_err(|e| FilterError::OnnxRuntimeLoad {
        path: library.to_owned(),
        reason: e.to_string(),
    })?;
    let env = builder
        .with_name("camera-pod")
        .with_telemetry(false)
        .build()
        .map_err(|e| FilterError::Runtime(e.to_string()))?;
    *slot = Some(env.clone());
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_factory_can_be_shared_with_the_filter_thread() {
        fn shareable<T: Send + Sync>() {}
        shareable::<FilterFactory>();
    }

    #[test]
    fn candidates_follow_the_choice() {
        assert!(provider_candidates(ExecutionProviderChoice::Cpu).is_empty());
        assert_eq!(
            provider_candidates(ExecutionProviderChoice::Cuda),
            [ExecutionProvider::Cuda]
        );
        assert_eq!(
            provider_candidates(ExecutionProviderChoice::Tensorrt),
            [ExecutionProvider::TensorRt]
        );
        let auto = provider_candidates(ExecutionProviderChoice::Auto);
        assert_eq!(
            auto.contains(&ExecutionProvider::Cuda),
            cfg!(feature = "cuda")
        );
        assert_eq!(
            auto.contains(&ExecutionProvider::TensorRt),
            cfg!(feature = "tensorrt")
        );
    }
}
