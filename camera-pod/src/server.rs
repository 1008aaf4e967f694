//! Wires the pieces of a camera pod together and serves until told to stop.

use std::future::Future;
use std::sync::Arc;

use crate::config::Args;
use crate::filter::runtime::ExecutionProvider;
use crate::filter::{FilterBuilder, FilterFactory, FilterSpec, FilterWorker, WorkerError};
use crate::media::{Camera, MediaConfig};
use crate::metrics::Metrics;
use crate::signaling::tls::ServerIdentity;
use crate::signaling::{self, AppState, Readiness};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] signaling::tls::TlsError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("filter: {0}")]
    Filter(#[from] crate::filter::FilterError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Media(#[from] crate::media::MediaError),
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs the camera pod on `--listen` until `shutdown` completes.
pub async fn run(
    args: Args,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener =
        std::net::TcpListener::bind(args.listen).map_err(|source| ServerError::Bind {
            addr: args.listen,
            source,
        })?;
    serve(args, listener, shutdown).await
}

/// The filter a camera pod starts with, and how to build it and every later one.
pub struct InitialFilter {
    /// Builds filters on the filter thread (loads, downloads, warms up models).
    pub builder: FilterBuilder,
    /// The spec of the first filter.
    pub spec: FilterSpec,
    /// Where inference runs (`cpu`, `cuda`, ...), for `/readyz`.
    pub execution_provider: String,
}

impl InitialFilter {
    /// The filter the command line asks for, built by the ONNX Runtime filter factory.
    pub fn from_args(args: &Args) -> Result<Self, ServerError> {
        let spec = args.filter.initial_spec()?;
        let factory = FilterFactory::new(&args.filter)?;
        let execution_provider = factory.execution_provider().to_owned();
        let builder: FilterBuilder = Box::new(move |spec: &FilterSpec| factory.build(spec));
        Ok(InitialFilter {
            builder,
            spec,
            execution_provider,
        })
    }
}

/// Runs the camera pod on an already bound listener (tests bind `127.0.0.1:0`) until
/// `shutdown` completes. `args.listen` is not used for binding here.
pub async fn serve(
    args: Args,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let filter = InitialFilter::from_args(&args)?;
    serve_filter(args, filter, listener, shutdown).await
}

/// Serves HTTP at once and builds and warms up `filter` meanwhile (`/readyz` says `warming`
/// until it is ready); stops when `shutdown` completes or the initial filter cannot be built.
pub async fn serve_filter(
    args: Args,
    filter: InitialFilter,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let token = args.load_token()?;
    let metrics = Arc::new(Metrics::default());
    let state = AppState::warming(token, metrics.clone(), filter.spec.to_string());
    let media = MediaConfig {
        udp_addr: args.udp_addr(),
        public_ip: args.public_ip,
        bitrate: args.bitrate_bounds(),
        codecs: args.codecs.clone(),
        limits: args.picture_limits(),
    };
    crate::media::check_udp_port(media.udp_addr)?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    let handle = axum_server::Handle::<std::net::SocketAddr>::new();
    let gpu_missing = missing_gpu(args.require_gpu, &filter.execution_provider);
    let warm_up = tokio::spawn(warm_up_then_serve(
        filter,
        gpu_missing,
        media,
        state.clone(),
        handle.clone(),
        shutdown,
    ));
    let app = signaling::app(state).into_make_service();
    let served = if args.plain_http {
        tracing::info!(address = %local, "serving plain HTTP");
        match axum_server::from_tcp(listener) {
            Ok(server) => server.handle(handle).serve(app).await,
            Err(error) => Err(error),
        }
    } else {
        let identity = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => ServerIdentity::from_pem_files(cert, key)?,
            _ => {
                let identity = ServerIdentity::self_signed()?;
                tracing::info!(sha256 = %identity.fingerprint(), "generated a self-signed certificate for localhost");
                identity
            }
        };
        let config = axum_server::tls_rustls::RustlsConfig::from_config(identity.server_config()?);
        tracing::info!(address = %local, "serving HTTPS");
        match axum_server::tls_rustls::from_tcp_rustls(listener, config) {
            Ok(server) => server.handle(handle).serve(app).await,
            Err(error) => Err(error),
        }
    };
    if let Err(error) = served {
        warm_up.abort();
        return Err(ServerError::Serve(error));
    }
    let worker = warm_up
        .await
        .map_err(|_| ServerError::Worker(WorkerError::Stopped))??;
    if let Some(worker) = worker {
        worker.stop();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Why the pod must not become ready: `--require-gpu` and models would run on CPU (no GPU
/// execution provider registered). `None` when it may.
pub fn missing_gpu(require_gpu: bool, execution_provider: &str) -> Option<String> {
    (require_gpu && execution_provider == ExecutionProvider::Cpu.as_str()).then(|| {
        format!(
            "a GPU is required (--require-gpu) but no GPU execution provider works here: models would run on {execution_provider}; \
             check that the pod got its GPU, that the image has onnxruntime-gpu with CUDA, and that camera-pod was built with the cuda or tensorrt feature"
        )
    })
}

/// Builds and warms up the initial filter, marks the server ready, and on `shutdown` closes the
/// peer connection and stops the HTTP server. Returns the filter thread to stop once the server
/// is down (none when shut down during the warm-up, or when `gpu_missing` keeps the pod unready;
/// the thread then ends with the process).
async fn warm_up_then_serve(
    filter: InitialFilter,
    gpu_missing: Option<String>,
    media: MediaConfig,
    state: AppState,
    handle: axum_server::Handle<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Option<Arc<FilterWorker>>, ServerError> {
    if let Some(reason) = gpu_missing {
        tracing::error!(execution_provider = %filter.execution_provider, %reason, "NOT READY: no GPU; this pod will stay unready");
        state.set_unready(reason);
        shutdown.await;
        handle.graceful_shutdown(Some(std::time::Duration::from_secs(2)));
        return Ok(None);
    }
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(filter = %filter.spec, execution_provider = %filter.execution_provider, "building the initial filter");
    let started = tokio::select! {
        started = FilterWorker::start(filter.builder, filter.spec, state.metrics.clone()) => started,
        () = &mut shutdown => {
            tracing::info!("shut down while warming up");
            handle.graceful_shutdown(Some(std::time::Duration::from_secs(2)));
            return Ok(None);
        }
    };
    let worker = match started {
        Ok(worker) => Arc::new(worker),
        Err(error) => {
            handle.shutdown();
            return Err(error.into());
        }
    };
    let camera = Arc::new(Camera::new(media, worker.clone(), state.metrics.clone()));
    state.set_ready(
        camera.clone(),
        Readiness {
            filter: worker.current(),
            execution_provider: filter.execution_provider,
        },
    );
    tracing::info!(filter = %worker.current(), "ready");
    shutdown.await;
    camera.close().await;
    handle.graceful_shutdown(Some(std::time::Duration::from_secs(2)));
    Ok(Some(worker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_required_gpu_must_be_the_execution_provider() {
        let reason = missing_gpu(true, "cpu").unwrap();
        assert!(
            reason.contains("--require-gpu") && reason.contains("cpu"),
            "{reason}"
        );
        assert_eq!(missing_gpu(true, "cuda"), None);
        assert_eq!(missing_gpu(true, "tensorrt"), None);
        assert_eq!(
            missing_gpu(false, "cpu"),
            None,
            "CPU is the normal path on a laptop"
        );
    }
}
