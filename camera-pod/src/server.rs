//! Wires the pieces of a camera pod together and serves until told to stop.

use std::future::Future;
use std::sync::Arc;

use std::str::FromStr;

use crate::config::Args;
use crate::filter::{FilterFactory, FilterSpec};
use crate::media::worker::FilterBuilder;
use crate::media::{Camera, FilterWorker, MediaConfig};
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
    Worker(#[from] crate::media::worker::WorkerError),
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
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

/// Runs the camera pod on an already bound listener (tests bind `127.0.0.1:0`) until
/// `shutdown` completes. `args.listen` is not used for binding here.
pub async fn serve(
    args: Args,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let token = args.load_token()?;
    let metrics = Arc::new(Metrics::default());

    let initial = args.filter.initial_spec()?;
    let factory = FilterFactory::new(&args.filter)?;
    let execution_provider = factory.execution_provider().to_owned();
    let builder: FilterBuilder = Box::new(move |spec: &str| {
        let spec = FilterSpec::from_str(spec).map_err(|e| e.to_string())?;
        factory.build(&spec).map_err(|e| e.to_string())
    });
    let initial_json =
        serde_json::to_string(&initial).unwrap_or_else(|_| args.filter.filter.clone());
    tracing::info!(filter = %initial_json, %execution_provider, "building the initial filter");
    let worker = Arc::new(FilterWorker::start(builder, &initial_json, metrics.clone()).await?);
    let media = MediaConfig {
        udp_addr: args.udp_addr(),
        public_ip: args.public_ip,
        bitrate: args.bitrate_bounds(),
    };
    let camera = Arc::new(Camera::new(media, worker.clone(), metrics.clone()));
    let state = AppState::new(token, metrics, camera.clone());
    state.set_ready(Readiness {
        filter: worker.current(),
        execution_provider,
    });
    tracing::info!(filter = %worker.current(), "ready");

    let local = listener.local_addr().map_err(ServerError::Serve)?;
    let handle = axum_server::Handle::<std::net::SocketAddr>::new();
    {
        let handle = handle.clone();
        let camera = camera.clone();
        tokio::spawn(async move {
            shutdown.await;
            camera.close().await;
            handle.graceful_shutdown(Some(std::time::Duration::from_secs(2)));
        });
    }
    let app = signaling::app(state).into_make_service();
    if args.plain_http {
        tracing::info!(address = %local, "serving plain HTTP");
        axum_server::from_tcp(listener)
            .map_err(ServerError::Serve)?
            .handle(handle)
            .serve(app)
            .await
            .map_err(ServerError::Serve)?;
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
        axum_server::tls_rustls::from_tcp_rustls(listener, config)
            .map_err(ServerError::Serve)?
            .handle(handle)
            .serve(app)
            .await
            .map_err(ServerError::Serve)?;
    }
    worker.stop();
    tracing::info!("stopped");
    Ok(())
}
