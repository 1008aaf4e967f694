//! Wires the pieces of a camera pod together and serves until told to stop.
//!
//! Every HTTP listener (signaling, and `--metrics-listen`) serves at most `--max-connections`
//! connections at once (further ones are closed at once) and gives a client `--request-timeout`
//! for its TLS handshake, then again for each request's headers; the signaling routes give a
//! request's body the same time (see `signaling`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Args, TokenPolicy};
use crate::filter::runtime::ExecutionProvider;
use crate::filter::{FilterBuilder, FilterFactory, FilterSpec, FilterWorker, WorkerError};
use crate::media::{Camera, MediaConfig, RelaySettings};
use crate::metrics::Metrics;
use crate::signaling::tls::ServerIdentity;
use crate::signaling::{self, AppState, ListenerPolicy, Readiness, WarmPod};

/// Most HTTP/2 streams (requests) one connection may have open at once.
const HTTP2_MAX_STREAMS: u32 = 32;
/// Largest HTTP/2 header block accepted.
const HTTP2_MAX_HEADER_BYTES: u32 = 16 * 1024;
/// How long a stopping server waits for open connections.
const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(2);

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
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    let token_policy = args.token_policy(local)?;
    if token_policy == TokenPolicy::InsecureWithoutToken {
        tracing::warn!(
            address = %local,
            "INSECURE: serving without a bearer token off loopback (--insecure-no-token): anyone who reaches this port can connect a camera and change the filter"
        );
    }
    let token = args.load_token()?;
    let claim_token = args.load_claim_token()?;
    let operator_token = args.load_operator_token()?;
    let metrics = Arc::new(Metrics::default());
    let tls = if args.plain_http {
        None
    } else {
        let identity = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => ServerIdentity::from_pem_files(cert, key)?,
            _ => {
                let identity = ServerIdentity::self_signed()?;
                tracing::info!(sha256 = %identity.fingerprint(), "generated a self-signed certificate for localhost");
                identity
            }
        };
        Some(RustlsConfig::from_config(identity.server_config()?))
    };
    let mut state = match claim_token {
        Some(claim_token) => {
            tracing::info!(
                "warm-pool pod: serving no camera until a session claims it (POST /claim)"
            );
            AppState::warming_unclaimed(
                claim_token,
                tls.clone(),
                metrics.clone(),
                filter.spec.to_string(),
            )
        }
        None => AppState::warming(token, metrics.clone(), filter.spec.to_string()),
    };
    if let Some(operator_token) = operator_token {
        tracing::info!(
            "serving no camera until the operator hands the node's public address (POST /public-address)"
        );
        state = state.awaiting_public_address(operator_token);
    }
    state.policy = ListenerPolicy {
        metrics: args.metrics_on_signaling_listener(local),
        insecure_no_token: token_policy == TokenPolicy::InsecureWithoutToken,
        request_timeout: args.request_timeout,
    };
    let media = MediaConfig {
        udp_addr: args.udp_addr(),
        public_ip: args.public_ip,
        bitrate: args.bitrate_bounds(),
        codecs: args.codecs.clone(),
        limits: args.picture_limits(),
        decode_cap: args.decode_size_cap(),
        connect_deadline: args.connect_deadline,
        takeover_after: args.takeover_after,
        forward_passthrough: !args.transcode_passthrough,
        relay: RelaySettings {
            candidates: args.relay_candidates,
            urls: args.relay_urls(),
        },
    };
    crate::media::check_udp_port(media.udp_addr)?;
    let limits = HttpLimits {
        request_timeout: args.request_timeout,
        max_connections: args.max_connections as usize,
    };
    let metrics_server = match args.metrics_listen {
        Some(addr) => Some(MetricsServer::start(addr, limits, metrics.clone())?),
        None => None,
    };
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
    let served = match tls {
        None => {
            tracing::info!(address = %local, "serving plain HTTP");
            match limited_server(listener, limits, metrics.clone()) {
                Ok(server) => server.handle(handle).serve(app).await,
                Err(error) => Err(error),
            }
        }
        Some(config) => {
            tracing::info!(address = %local, "serving HTTPS");
            match limited_server(listener, limits, metrics.clone()) {
                Ok(server) => {
                    server
                        .map(|limit| {
                            RustlsAcceptor::new(config)
                                .handshake_timeout(limits.request_timeout)
                                .acceptor(limit)
                        })
                        .handle(handle)
                        .serve(app)
                        .await
                }
                Err(error) => Err(error),
            }
        }
    };
    if let Some(metrics_server) = metrics_server {
        metrics_server.stop().await;
    }
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

/// Builds and warms up the initial filter, marks the server ready (a warm-pool pod: warm, waiting
/// for its claim), and on `shutdown` closes the peer connection and stops the HTTP server.
/// Returns the filter thread to stop once the server is down (none when shut down during the
/// warm-up, or when `gpu_missing` keeps the pod unready; the thread then ends with the process).
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
        handle.graceful_shutdown(Some(GRACEFUL_SHUTDOWN));
        return Ok(None);
    }
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(filter = %filter.spec, execution_provider = %filter.execution_provider, "building the initial filter");
    let warm_spec = filter.spec.clone();
    let started = tokio::select! {
        started = FilterWorker::start(filter.builder, filter.spec, state.metrics.clone()) => started,
        () = &mut shutdown => {
            tracing::info!("shut down while warming up");
            handle.graceful_shutdown(Some(GRACEFUL_SHUTDOWN));
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
    let readiness = Readiness {
        filter: worker.current(),
        execution_provider: filter.execution_provider,
    };
    if state.is_pool() {
        state.set_warm(WarmPod {
            worker: worker.clone(),
            spec: warm_spec,
            media,
            readiness,
        });
        tracing::info!(filter = %worker.current(), "warm: ready to be claimed");
    } else {
        let mut media = media;
        if let Some(channel) = state.operator_channel() {
            state.set_awaiting_address(worker.current());
            tracing::info!("warm: waiting for the node's public address");
            media.public_ip = tokio::select! {
                ip = channel.fix() => Some(ip),
                () = &mut shutdown => {
                    tracing::info!("shut down while waiting for the public address");
                    handle.graceful_shutdown(Some(GRACEFUL_SHUTDOWN));
                    return Ok(Some(worker));
                }
            };
        }
        let public_ip = media.public_ip;
        let camera = Camera::new(media, worker.clone(), state.metrics.clone());
        state.set_ready(Arc::new(camera), readiness);
        tracing::info!(filter = %worker.current(), ?public_ip, "ready");
    }
    shutdown.await;
    state.close_camera().await;
    handle.graceful_shutdown(Some(GRACEFUL_SHUTDOWN));
    Ok(Some(worker))
}

/// Connection and timing limits of an HTTP listener (`--max-connections`, `--request-timeout`).
#[derive(Clone, Copy, Debug)]
struct HttpLimits {
    request_timeout: Duration,
    max_connections: usize,
}

/// A plain-HTTP server on `listener` with `limits` applied; TLS wraps its acceptor.
fn limited_server(
    listener: std::net::TcpListener,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
) -> io::Result<axum_server::Server<SocketAddr, ConnectionLimit<DefaultAcceptor>>> {
    let mut server = axum_server::from_tcp(listener)?
        .first_request_timeout(limits.request_timeout)
        .acceptor(ConnectionLimit {
            inner: DefaultAcceptor::new(),
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            metrics,
        });
    let builder = server.http_builder();
    builder.http1().header_read_timeout(limits.request_timeout);
    builder
        .http2()
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .max_header_list_size(HTTP2_MAX_HEADER_BYTES);
    Ok(server)
}

/// The `--metrics-listen` server: plain HTTP, `/metrics` only.
struct MetricsServer {
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl MetricsServer {
    fn start(
        addr: SocketAddr,
        limits: HttpLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        let bind = |source| ServerError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        let server = limited_server(listener, limits, metrics.clone()).map_err(bind)?;
        let handle = axum_server::Handle::new();
        let app = signaling::metrics_app(metrics).into_make_service();
        tracing::info!(address = %addr, "serving /metrics over plain HTTP");
        let task = tokio::spawn(server.handle(handle.clone()).serve(app));
        Ok(MetricsServer { handle, task })
    }

    async fn stop(mut self) {
        self.handle.graceful_shutdown(Some(GRACEFUL_SHUTDOWN));
        match (&mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the /metrics listener failed"),
            Err(error) => tracing::warn!(%error, "the /metrics listener task failed"),
        }
    }
}

impl Drop for MetricsServer {
    /// A server that stops on an error stops its `/metrics` listener too.
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// An acceptor that serves at most as many connections at once as it has permits; a connection
/// beyond them is closed at once (counted in `http_connections_refused`).
#[derive(Clone)]
struct ConnectionLimit<A> {
    inner: A,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl<A, I, S> Accept<I, S> for ConnectionLimit<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = CountedConnection<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.http_connections_refused.inc();
            tracing::debug!("HTTP connection limit reached; closing a new connection");
            return Box::pin(std::future::ready(Err(io::Error::other(
                "HTTP connection limit reached",
            ))));
        };
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((
                CountedConnection {
                    stream,
                    _permit: permit,
                },
                service,
            ))
        })
    }
}

/// A connection holding one of its listener's permits until it closes.
struct CountedConnection<S> {
    stream: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for CountedConnection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountedConnection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
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
