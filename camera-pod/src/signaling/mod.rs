//! The signaling server: `POST /offer`, filter switching, status, static files, health,
//! metrics, and a warm-pool pod's `POST /claim`. `app(state)` builds the router;
//! `server::serve` runs it over HTTPS or plain HTTP.
//!
//! The server answers from the moment it listens: while the initial filter is being built and
//! warmed up (a model download and its first inference can take seconds), `/healthz` is 200,
//! `/readyz` is 503 `{"status":"warming",...}`, and `/offer`, `/filter` and `/status` are 503
//! `not_ready` with `Retry-After: 1`. `AppState::set_ready` ends the warm-up.
//! `AppState::set_unready` ends it for good (a GPU was required and none works): `/readyz` stays
//! 503 `{"status":"unready","reason":...}` and the other endpoints say why.
//!
//! A warm-pool pod (`--claim-token-file`) starts unclaimed: it warms its filter up the same way,
//! then `/readyz` is 200 `{"status":"warm",...}` (`AppState::set_warm`), while `/offer`, `/filter`
//! and `/status` are 503 `not_claimed` with `Retry-After: 1` (during the warm-up too). Only such a
//! pod routes `POST /claim` (Bearer claim token, a `ClaimRequest` body, see [`claim`]): the
//! accepted claim makes it serve the session's certificate, accept the session's token only, and
//! run the session's filter and video limits, exactly like a pod started with `--token`;
//! `/readyz` then says `ready`. A repeat of the same claim is answered as the first time; any
//! other claim is 409 `already_claimed`, and a claim during the warm-up 503 `not_ready`.
//!
//! A pod started with its session and `--await-public-ip` is not ready after its warm-up until
//! the operator hands it the node's public address (`POST /public-address`, see
//! [`public_address`]): `/readyz` says 503 `{"status":"awaiting_public_address",...}` and the
//! camera endpoints 503 `not_ready` meanwhile.
//!
//! A request's body must arrive within the listener's request timeout: a body still arriving
//! after that fails to read (400 `bad_body`) and its connection is closed after the answer.
//! `/metrics` is served here only when the [`ListenerPolicy`] says so; [`metrics_app`] serves it
//! on a listener of its own.

pub mod auth;
pub mod claim;
pub mod error;
pub mod public_address;
pub mod tls;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_server::ConnectionShutdown;
use axum_server::tls_rustls::RustlsConfig;
use futures::StreamExt;
use p2pcamera_api::wire::{
    CANDIDATES_PATH, CameraStatus, ClaimReply, FilterReply, OfferRequest, REQUEST_BODY_LIMIT,
    SessionDescription, TYPE_OFFER, TrickledCandidates,
};

use crate::filter::{FilterSpec, FilterWorker};
use crate::media::{Camera, MediaConfig};
use crate::metrics::Metrics;
pub use error::ApiError;
use public_address::OperatorChannel;

const INDEX_HTML: &str = include_str!("../../../static/index.html");
const P2PCAMERA_JS: &str = include_str!("../../../static/p2pcamera.js");

/// What `/readyz` reports once the initial filter is built and warmed up.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub filter: String,
    pub execution_provider: String,
}

/// A warm-pool pod's filter, warm and waiting for a claim: what a claim turns into the camera.
pub struct WarmPod {
    /// The filter thread, running the warm filter.
    pub worker: Arc<FilterWorker>,
    /// The filter it warmed up (a claim for the same one is answered `warm_filter: true`).
    pub spec: FilterSpec,
    /// The start-up media configuration; a claim's values replace parts of it.
    pub media: MediaConfig,
    /// What `/readyz` reports while the pod is warm.
    pub readiness: Readiness,
}

/// Where the pod is in its start-up.
enum Phase {
    /// Building and warming up the initial filter (named by its spec).
    Warming { filter: String },
    /// Warm, waiting for the operator to hand the node's public address.
    AwaitingAddress { filter: String },
    /// A warm-pool pod, warm and not claimed yet: no camera until a claim.
    Warm(Arc<WarmPod>),
    Ready {
        camera: Arc<Camera>,
        readiness: Readiness,
    },
    /// The pod cannot serve and never will (e.g. a GPU was required and none works).
    Unready { reason: String },
}

/// What the camera endpoints serve and to whom. A claim replaces all of it at once, so a request
/// reads one [`Serving`] and never sees half a session.
struct Serving {
    phase: Phase,
    /// The bearer token `/offer`, `/filter` and `/status` require; none on loopback without
    /// `--token`, with `--insecure-no-token`, and on a warm-pool pod until its claim.
    token: Option<Arc<str>>,
    /// What a warm-pool pod answered the claim that gave it its session (a repeated claim gets
    /// it again); none before the claim and on a pod started with its session.
    claim: Option<ClaimReply>,
}

/// A warm-pool pod's side of claiming: the claim token, and the TLS configuration an accepted
/// claim's certificate replaces.
struct Pool {
    claim_token: String,
    /// The certificate served to new TLS handshakes; none when serving plain HTTP.
    tls: Option<RustlsConfig>,
}

/// What the signaling listener serves and how it guards itself, decided by `server` from the
/// flags and the listener's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerPolicy {
    /// Serve `/metrics` here too (no `--metrics-listen`, and a loopback listener).
    pub metrics: bool,
    /// No token although the listener is off loopback (`--insecure-no-token`): every offer is
    /// warned about.
    pub insecure_no_token: bool,
    /// How long a request's body may take to arrive (`--request-timeout`).
    pub request_timeout: Duration,
}

impl Default for ListenerPolicy {
    /// A loopback listener: `/metrics` served, 10 s per request body.
    fn default() -> Self {
        ListenerPolicy {
            metrics: true,
            insecure_no_token: false,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub policy: ListenerPolicy,
    serving: Arc<RwLock<Arc<Serving>>>,
    /// Set on a warm-pool pod (`--claim-token-file`): `/claim` is routed.
    pool: Option<Arc<Pool>>,
    /// Set on a pod that waits for its public address (`--await-public-ip`):
    /// `/public-address` is routed.
    operator: Option<Arc<OperatorChannel>>,
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

impl AppState {
    /// The state while the initial `filter` is being built and warmed up; `token` is the
    /// bearer token the camera endpoints require (none: no token).
    pub fn warming(
        token: Option<String>,
        metrics: Arc<Metrics>,
        filter: impl Into<String>,
    ) -> Self {
        Self::starting(token, None, metrics, filter.into())
    }

    /// A warm-pool pod's state while its initial `filter` is being built and warmed up. It
    /// serves no camera until `POST /claim` with `claim_token` hands it a session; the claim's
    /// certificate then replaces the one `tls` serves (none: plain HTTP, nothing to replace).
    pub fn warming_unclaimed(
        claim_token: String,
        tls: Option<RustlsConfig>,
        metrics: Arc<Metrics>,
        filter: impl Into<String>,
    ) -> Self {
        let pool = Pool { claim_token, tls };
        Self::starting(None, Some(Arc::new(pool)), metrics, filter.into())
    }

    fn starting(
        token: Option<String>,
        pool: Option<Arc<Pool>>,
        metrics: Arc<Metrics>,
        filter: String,
    ) -> Self {
        let serving = Serving {
            phase: Phase::Warming { filter },
            token: token.map(Arc::from),
            claim: None,
        };
        AppState {
            metrics,
            policy: ListenerPolicy::default(),
            serving: Arc::new(RwLock::new(Arc::new(serving))),
            pool,
            operator: None,
        }
    }

    /// The same state, waiting after the warm-up for the operator (authenticated by
    /// `operator_token`) to hand the node's public address before it serves a camera.
    pub fn awaiting_public_address(self, operator_token: String) -> Self {
        AppState {
            operator: Some(Arc::new(OperatorChannel::new(operator_token))),
            ..self
        }
    }

    /// The operator's channel of a pod that waits for its public address.
    pub fn operator_channel(&self) -> Option<Arc<OperatorChannel>> {
        self.operator.clone()
    }

    /// Warm, waiting for the public address: `/readyz` says `awaiting_public_address`.
    pub fn set_awaiting_address(&self, filter: String) {
        self.set_phase(Phase::AwaitingAddress { filter });
    }

    /// Whether this is a warm-pool pod (started with a claim token).
    pub fn is_pool(&self) -> bool {
        self.pool.is_some()
    }

    /// The filter is warm and the camera can be served.
    pub fn set_ready(&self, camera: Arc<Camera>, readiness: Readiness) {
        self.set_phase(Phase::Ready { camera, readiness });
    }

    /// A warm-pool pod's filter is warm: `/readyz` says `warm` and claims are taken.
    pub fn set_warm(&self, warm: WarmPod) {
        self.set_phase(Phase::Warm(Arc::new(warm)));
    }

    /// The pod will never be ready, for `reason` (shown by `/readyz` and in refusals).
    pub fn set_unready(&self, reason: impl Into<String>) {
        self.set_phase(Phase::Unready {
            reason: reason.into(),
        });
    }

    /// Closes the camera's live peer connection, if the pod serves a camera.
    pub async fn close_camera(&self) {
        if let Phase::Ready { camera, .. } = &self.serving().phase {
            camera.close().await;
        }
    }

    fn set_phase(&self, phase: Phase) {
        let mut serving = self.serving.write().unwrap_or_else(|e| e.into_inner());
        *serving = Arc::new(Serving {
            phase,
            token: serving.token.clone(),
            claim: serving.claim.clone(),
        });
    }

    /// What is served now, as one consistent snapshot.
    fn serving(&self) -> Arc<Serving> {
        self.serving
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks the request's bearer token against the camera endpoints' token and returns the
    /// snapshot it was checked against: take the camera from it ([`Self::camera`]).
    fn authorize(&self, headers: &HeaderMap) -> Result<Arc<Serving>, ApiError> {
        let serving = self.serving();
        auth::check_bearer(serving.token.as_deref(), headers)?;
        Ok(serving)
    }

    /// The camera of `serving`, or why there is none: 503 `not_ready` with `Retry-After` during
    /// the warm-up, 503 `not_claimed` on a warm-pool pod no session has claimed yet.
    fn camera(&self, serving: &Serving) -> Result<Arc<Camera>, ApiError> {
        match &serving.phase {
            Phase::Ready { camera, .. } => Ok(camera.clone()),
            Phase::Unready { reason } => Err(ApiError::NotReady(reason.clone())),
            Phase::Warm(_) => Err(ApiError::NotClaimed),
            Phase::AwaitingAddress { .. } => Err(ApiError::NotReady(
                "waiting for the operator to hand the node's public address".to_owned(),
            )),
            Phase::Warming { .. } if self.is_pool() => Err(ApiError::NotClaimed),
            Phase::Warming { filter } => Err(ApiError::NotReady(format!(
                "the filter {filter} is still warming up"
            ))),
        }
    }
}

/// The signaling listener's routes (with `/metrics` when `state.policy` says so).
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/", get(index))
        .route("/p2pcamera.js", get(script))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/offer", post(offer))
        .route(CANDIDATES_PATH, post(candidates))
        .route("/filter", post(filter))
        .route("/status", get(status));
    let router = match state.pool.clone() {
        Some(pool) => claim::route(router, pool),
        None => router,
    };
    let router = match state.operator.clone() {
        Some(channel) => public_address::route(router, channel),
        None => router,
    };
    let router = if state.policy.metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_body_time,
        ))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_LIMIT))
        .with_state(state)
}

/// The `--metrics-listen` listener's routes: `/metrics` only.
pub fn metrics_app(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .with_state(metrics)
}

/// Why a request body stopped being read.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s (--request-timeout)", .0.as_secs_f64())]
struct BodyTimeout(Duration);

/// A request body on its way in, with the time it has left.
struct ArrivingBody {
    chunks: BodyDataStream,
    deadline: tokio::time::Instant,
    timeout: Duration,
    connection: Option<ConnectionShutdown>,
    metrics: Arc<Metrics>,
}

/// Gives a request's body `--request-timeout` to arrive. Reading it fails after that (the
/// handler answers 400 `bad_body`) and the connection closes once the answer is sent, so a
/// client trickling a body holds a connection no longer than the timeout.
async fn limit_body_time(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let connection = request.extensions().get::<ConnectionShutdown>().cloned();
    let timeout = state.policy.request_timeout;
    let request = request.map(|body| {
        if body.is_end_stream() {
            return body;
        }
        let arriving = ArrivingBody {
            chunks: body.into_data_stream(),
            deadline: tokio::time::Instant::now() + timeout,
            timeout,
            connection,
            metrics: state.metrics.clone(),
        };
        Body::from_stream(futures::stream::unfold(
            Some(arriving),
            |arriving| async move {
                let mut arriving = arriving?;
                match tokio::time::timeout_at(arriving.deadline, arriving.chunks.next()).await {
                    Ok(Some(chunk)) => Some((chunk, Some(arriving))),
                    Ok(None) => None,
                    Err(_) => {
                        arriving.metrics.http_request_timeouts.inc();
                        if let Some(connection) = &arriving.connection {
                            connection.graceful_shutdown();
                        }
                        let error = BodyTimeout(arriving.timeout);
                        tracing::debug!(%error, "closing a slow client's connection");
                        Some((Err(axum::Error::new(error)), None))
                    }
                }
            },
        ))
    });
    next.run(request).await
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn script() -> Response {
    (
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        P2PCAMERA_JS,
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match &state.serving().phase {
        Phase::Warm(warm) => Json(serde_json::json!({
            "status": "warm",
            "filter": warm.readiness.filter,
            "execution_provider": warm.readiness.execution_provider,
        }))
        .into_response(),
        Phase::Ready { readiness, .. } => Json(serde_json::json!({
            "status": "ready",
            "filter": readiness.filter,
            "execution_provider": readiness.execution_provider,
        }))
        .into_response(),
        Phase::Warming { filter } => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, error::RETRY_AFTER_SECONDS.to_string())],
            Json(serde_json::json!({ "status": "warming", "filter": filter })),
        )
            .into_response(),
        Phase::AwaitingAddress { filter } => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, error::RETRY_AFTER_SECONDS.to_string())],
            Json(serde_json::json!({ "status": "awaiting_public_address", "filter": filter })),
        )
            .into_response(),
        Phase::Unready { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unready", "reason": reason })),
        )
            .into_response(),
    }
}

async fn metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

/// Checks the content type and size of a JSON body and parses it.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(REQUEST_BODY_LIMIT)
        } else {
            ApiError::BadBody(rejection.body_text())
        }
    })?;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(ApiError::UnsupportedContentType);
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

async fn offer(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = answer_offer(&state, &headers, body).await;
    state.metrics.count_offer(match &result {
        Ok(_) => "answered",
        Err(error) => error.code().as_str(),
    });
    match result {
        Ok(answer) => Json(SessionDescription::answer(answer)).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn answer_offer(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    let received = std::time::Instant::now();
    if state.policy.insecure_no_token {
        tracing::warn!(
            "INSECURE: answering an offer without a bearer token on a listener off loopback (--insecure-no-token)"
        );
    }
    let serving = state.authorize(headers)?;
    let request: OfferRequest = json_body(headers, body)?;
    if request.kind != TYPE_OFFER {
        return Err(ApiError::NotAnOffer(request.kind));
    }
    tracing::debug!(sdp = %request.sdp, client = ?request.client, "offer received");
    Ok(state
        .camera(&serving)?
        .answer(
            request.sdp,
            request.client,
            request.relay_credential,
            received,
        )
        .await?)
}

async fn filter(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FilterReply>, ApiError> {
    let serving = state.authorize(&headers)?;
    let spec: serde_json::Value = json_body(&headers, body)?;
    if !spec.is_object() {
        return Err(ApiError::InvalidJson(
            "the body must be a JSON filter spec object".to_owned(),
        ));
    }
    let name = state
        .camera(&serving)?
        .switch_filter(&spec.to_string())
        .await?;
    Ok(Json(FilterReply::switched(name)))
}

/// `POST /candidates`: candidates the browser trickled after its offer (204).
async fn candidates(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let serving = state.authorize(&headers)?;
    let request: TrickledCandidates = json_body(&headers, body)?;
    state
        .camera(&serving)?
        .add_candidates(&request.ufrag, request.candidates)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<CameraStatus>, ApiError> {
    let serving = state.authorize(&headers)?;
    Ok(Json(state.camera(&serving)?.status().await))
}
