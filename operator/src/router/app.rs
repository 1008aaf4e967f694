//! The HTTPS app browsers talk to: offers, session status, the script, health and metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;
use super::forward::PodClients;
use super::metrics::Metrics;
use super::ratelimit::KeyedLimiter;
use super::sessions::{self, PublicStatus, SessionCache, SessionKey};
use super::tls::SwappableCertificate;

/// Largest offer accepted; an SDP offer is a few KiB.
pub const BODY_LIMIT: usize = 64 * 1024;

const SCRIPT: &str = include_str!("../../../static/p2pcamera.js");

/// Whether the caches have synced and a certificate is loaded.
pub struct Readiness {
    pub sessions_synced: Arc<AtomicBool>,
    pub secrets_synced: Arc<AtomicBool>,
    pub certificate: Arc<SwappableCertificate>,
}

impl Readiness {
    pub fn new(certificate: Arc<SwappableCertificate>) -> Self {
        Self { sessions_synced: Arc::default(), secrets_synced: Arc::default(), certificate }
    }

    /// What is still missing; empty when ready.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.sessions_synced.load(Ordering::Acquire) {
            missing.push("session cache not synced");
        }
        if !self.secrets_synced.load(Ordering::Acquire) {
            missing.push("secret cache not synced");
        }
        if !self.certificate.is_loaded() {
            missing.push("no serving certificate");
        }
        missing
    }
}

pub struct RouterState {
    pub sessions: SessionCache,
    pub pods: PodClients,
    pub per_session: KeyedLimiter<SessionKey>,
    pub per_client: KeyedLimiter<IpAddr>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// Origins allowed to call the router from a page (CORS). Never `*`.
    pub allowed_origins: Vec<HeaderValue>,
}

type AppState = Arc<RouterState>;

#[derive(Debug, Deserialize)]
struct OfferRequest {
    sdp: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    client: Option<serde_json::Value>,
}

/// What the pod receives: the original `/offer` shape, without the router's `session` field.
#[derive(Debug, Serialize)]
struct ForwardedOffer<'a> {
    sdp: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a serde_json::Value>,
}

fn parse_offer(body: &[u8]) -> Result<OfferRequest, ApiError> {
    let offer: OfferRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::Malformed(format!("invalid offer JSON: {e}")))?;
    if offer.kind != "offer" {
        return Err(ApiError::Malformed("type must be \"offer\"".into()));
    }
    if offer.sdp.trim().is_empty() {
        return Err(ApiError::Malformed("sdp is empty".into()));
    }
    Ok(offer)
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = error.source();
    }
    false
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    if content_length(headers).is_some_and(|length| length > BODY_LIMIT) {
        return Err(ApiError::TooLarge(BODY_LIMIT));
    }
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|error| {
        let inner = error.into_inner();
        if is_length_limit(inner.as_ref()) {
            ApiError::TooLarge(BODY_LIMIT)
        } else {
            ApiError::Malformed("unreadable request body".into())
        }
    })
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

async fn offer(
    state: &RouterState,
    client: IpAddr,
    path_key: Option<SessionKey>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    state.per_client.check(&client, Instant::now()).map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let body = read_body(headers, body).await?;
    let offer = parse_offer(&body)?;
    let key = match path_key {
        Some(key) => key,
        None => SessionKey::parse(
            offer.session.as_deref().ok_or_else(|| ApiError::Malformed("missing \"session\" field".into()))?,
        )?,
    };
    let status = state.sessions.status(&key);
    let credentials = state.sessions.credentials(&key);
    let status = sessions::authorize(&key, status.as_ref(), credentials.as_ref(), authorization(headers))?;
    state.per_session.check(&key, Instant::now()).map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let credentials = credentials.ok_or_else(|| ApiError::Malformed("unreachable: authorized without credentials".into()))?;
    let target = sessions::resolve(status, &credentials)?;
    let forwarded = serde_json::to_vec(&ForwardedOffer { sdp: &offer.sdp, kind: &offer.kind, client: offer.client.as_ref() })
        .map_err(|e| ApiError::Malformed(e.to_string()))?;
    let started = Instant::now();
    let answer = state.pods.forward(&target, Bytes::from(forwarded)).await;
    let elapsed = started.elapsed();
    state.metrics.forward_duration.observe(elapsed.as_secs_f64());
    tracing::info!(
        namespace = %key.namespace,
        name = %key.name,
        forward_ms = elapsed.as_secs_f64() * 1000.0,
        ok = answer.is_ok(),
        "offer forwarded"
    );
    answer
}

fn offer_response(state: &RouterState, result: Result<Bytes, ApiError>) -> Response {
    match result {
        Ok(answer) => {
            state.metrics.offer("answered");
            ([(header::CONTENT_TYPE, "application/json")], answer).into_response()
        }
        Err(error) => {
            state.metrics.offer(error.code());
            if error.status().is_server_error() {
                tracing::warn!(code = error.code(), %error, "offer failed");
            }
            error.into_response()
        }
    }
}

async fn session_offer(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = SessionKey { namespace, name };
    let result = offer(&state, peer.ip(), Some(key), &headers, body).await;
    offer_response(&state, result)
}

async fn legacy_offer(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = offer(&state, peer.ip(), None, &headers, body).await;
    offer_response(&state, result)
}

async fn session_status(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<PublicStatus>, ApiError> {
    let key = SessionKey { namespace, name };
    let status = state.sessions.status(&key);
    let credentials = state.sessions.credentials(&key);
    let status = sessions::authorize(&key, status.as_ref(), credentials.as_ref(), authorization(&headers))?;
    Ok(axum::Json(PublicStatus::from(status)))
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")],
        SCRIPT,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let missing = state.readiness.missing();
    if missing.is_empty() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, missing.join(", ")).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn cors(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600))
}

/// The router's HTTPS app. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`:
/// the per-client rate limit keys on the peer address.
pub fn app(state: AppState) -> Router {
    let cors = cors(&state.allowed_origins);
    Router::new()
        .route("/v1/sessions/{namespace}/{name}/offer", post(session_offer))
        .route("/offer", post(legacy_offer))
        .route("/v1/sessions/{namespace}/{name}", get(session_status))
        .route("/p2pcamera.js", get(script))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(cors)
        .with_state(state)
}
