//! The signaling server: `POST /offer`, filter switching, status, static files, health and
//! metrics. `app(state)` builds the router; `serve` runs it over HTTPS or plain HTTP.

pub mod auth;
pub mod error;
pub mod tls;

use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::metrics::Metrics;
pub use error::ApiError;

/// Largest request body accepted (offers are a few KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

const INDEX_HTML: &str = include_str!("../../../static/index.html");
const P2PCAMERA_JS: &str = include_str!("../../../static/p2pcamera.js");

/// What `/readyz` reports once the initial filter is built and warmed up.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub filter: String,
    pub execution_provider: String,
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub token: Option<Arc<str>>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<RwLock<Option<Readiness>>>,
}

impl AppState {
    pub fn new(token: Option<String>, metrics: Arc<Metrics>) -> Self {
        AppState { token: token.map(Arc::from), metrics, readiness: Arc::default() }
    }

    pub fn set_ready(&self, readiness: Readiness) {
        *self.readiness.write().unwrap_or_else(|e| e.into_inner()) = Some(readiness);
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/p2pcamera.js", get(script))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn script() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], P2PCAMERA_JS).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let readiness = state.readiness.read().unwrap_or_else(|e| e.into_inner()).clone();
    match readiness {
        Some(r) => Ok(Json(serde_json::json!({
            "status": "ready",
            "filter": r.filter,
            "execution_provider": r.execution_provider,
        }))),
        None => Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the filter is still loading",
        )),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}
