//! An HTTPS server on 127.0.0.1 with a self-signed certificate that serves model files and counts
//! what it was asked for: the far end of camera-pod's model downloads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// How one path is served.
#[derive(Clone)]
pub struct ModelRoute {
    pub path: String,
    pub body: Vec<u8>,
    /// The body goes out in ten pieces spread over this time (zero: at once).
    pub spread_over: Duration,
    /// Whether the response says its length up front (else it is chunked).
    pub declare_length: bool,
}

impl ModelRoute {
    /// `body` at `path`, at once, with its length.
    pub fn new(path: &str, body: Vec<u8>) -> Self {
        ModelRoute {
            path: path.to_owned(),
            body,
            spread_over: Duration::ZERO,
            declare_length: true,
        }
    }

    /// The body in ten pieces spread over `time`.
    pub fn slowly(mut self, time: Duration) -> Self {
        self.spread_over = time;
        self
    }

    /// Chunked, without a Content-Length.
    pub fn without_length(mut self) -> Self {
        self.declare_length = false;
        self
    }
}

/// What happened to one path.
#[derive(Default)]
struct Counters {
    /// Requests that reached it.
    hits: AtomicUsize,
    /// Bodies whose last piece went out.
    completed: AtomicUsize,
}

struct Routes {
    routes: HashMap<String, (ModelRoute, Arc<Counters>)>,
    /// Requests for paths without a route.
    unknown: Arc<Counters>,
}

pub struct ModelServer {
    /// `https://127.0.0.1:<port>`.
    pub base: String,
    /// `127.0.0.1:<port>`, as `--model-allowed-hosts` names it.
    pub host: String,
    /// The self-signed certificate, for `--model-ca-file`.
    pub ca_file: PathBuf,
    counters: HashMap<String, Arc<Counters>>,
    unknown: Arc<Counters>,
    handle: axum_server::Handle<std::net::SocketAddr>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ModelServer {
    /// Serves `routes` on a thread of its own (so it works from sync and async tests alike);
    /// writes the CA file into `dir`.
    pub fn start(dir: &Path, routes: Vec<ModelRoute>) -> ModelServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        let ca_file = dir.join("model-server-ca.pem");
        std::fs::write(&ca_file, cert.cert.pem()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let unknown = Arc::new(Counters::default());
        let routes: HashMap<_, _> = routes
            .into_iter()
            .map(|route| (route.path.clone(), (route, Arc::default())))
            .collect();
        let counters = routes
            .iter()
            .map(|(path, (_, counters))| (path.clone(), Arc::clone(counters)))
            .collect();
        let state = Arc::new(Routes {
            routes,
            unknown: unknown.clone(),
        });
        let app = axum::Router::new().fallback(serve).with_state(state);
        let handle = axum_server::Handle::new();
        let server_handle = handle.clone();
        let (cert_pem, key_pem) = (
            cert.cert.pem().into_bytes(),
            cert.signing_key.serialize_pem().into_bytes(),
        );
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let config = axum_server::tls_rustls::RustlsConfig::from_pem(cert_pem, key_pem)
                    .await
                    .unwrap();
                axum_server::from_tcp_rustls(listener, config)
                    .unwrap()
                    .handle(server_handle)
                    .serve(app.into_make_service())
                    .await
                    .unwrap();
            });
        });
        ModelServer {
            base: format!("https://127.0.0.1:{port}"),
            host: format!("127.0.0.1:{port}"),
            ca_file,
            counters,
            unknown,
            handle,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn counters(&self, path: &str) -> &Counters {
        self.counters
            .get(path)
            .unwrap_or_else(|| panic!("no route {path}"))
    }

    /// Requests that reached `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.counters(path).hits.load(Ordering::SeqCst)
    }

    /// Requests of any kind, to any path.
    pub fn total_hits(&self) -> usize {
        self.counters
            .values()
            .chain([&self.unknown])
            .map(|c| c.hits.load(Ordering::SeqCst))
            .sum()
    }

    /// Bodies of `path` whose last piece went out.
    pub fn completed(&self, path: &str) -> usize {
        self.counters(path).completed.load(Ordering::SeqCst)
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(State(state): State<Arc<Routes>>, uri: Uri) -> Response {
    let Some((route, counters)) = state.routes.get(uri.path()) else {
        state.unknown.hits.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NOT_FOUND.into_response();
    };
    counters.hits.fetch_add(1, Ordering::SeqCst);
    const PIECES: usize = 10;
    let piece = route.body.len().div_ceil(PIECES).max(1);
    let pause = route.spread_over / PIECES as u32;
    let body = Bytes::from(route.body.clone());
    let counters = counters.clone();
    if body.is_empty() {
        counters.completed.fetch_add(1, Ordering::SeqCst);
    }
    let stream = futures::stream::unfold(0, move |start| {
        let (body, counters) = (body.clone(), counters.clone());
        async move {
            if start >= body.len() {
                return None;
            }
            if start > 0 {
                tokio::time::sleep(pause).await;
            }
            let end = (start + piece).min(body.len());
            if end == body.len() {
                // With a declared length the server may not ask for more after the last piece.
                counters.completed.fetch_add(1, Ordering::SeqCst);
            }
            Some((Ok::<_, Infallible>(body.slice(start..end)), end))
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    if route.declare_length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, route.body.len().into());
    }
    response
}
