//! Router metrics, prefixed `p2pcamera_router_`, served on their own plain HTTP address
//! (`--metrics-listen`), never on the public ports.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use p2pcamera_api::SessionKey;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OfferLabels {
    /// `answered` or an error code such as `camera_busy`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    pub namespace: String,
    pub name: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub offers: Family<OfferLabels, Counter>,
    /// Trickled-candidate requests (`POST .../candidates`), by result.
    pub trickles: Family<OfferLabels, Counter>,
    pub forward_duration: Histogram,
    pub certificate_reloads: Counter,
    pub certificate_not_after: Gauge,
    /// Offers not forwarded because the session's endpoint failed the checks, per session (only
    /// sessions with a bad endpoint get a series).
    pub endpoint_rejections: Family<SessionLabels, Counter>,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    /// TURN credentials handed out by `/ice-servers`.
    pub turn_credentials_issued: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("p2pcamera_router");
        let offers = Family::<OfferLabels, Counter>::default();
        registry.register("offers", "Offers received, by result", offers.clone());
        let trickles = Family::<OfferLabels, Counter>::default();
        registry.register(
            "trickles",
            "Requests with candidates a browser trickled after its offer, by result (added, or the error code)",
            trickles.clone(),
        );
        // 0.5 ms .. ~16 s
        let forward_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "forward_duration_seconds",
            "Time from receiving an offer to having the pod's answer",
            forward_duration.clone(),
        );
        let certificate_reloads = Counter::default();
        registry.register(
            "certificate_reloads",
            "Serving certificates loaded",
            certificate_reloads.clone(),
        );
        let certificate_not_after = Gauge::default();
        registry.register(
            "certificate_not_after_seconds",
            "Expiry of the serving certificate, seconds since the Unix epoch",
            certificate_not_after.clone(),
        );
        let endpoint_rejections = Family::<SessionLabels, Counter>::default();
        registry.register(
            "endpoint_rejections",
            "Offers not forwarded because the session's status.endpoint failed the router's checks",
            endpoint_rejections.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Open connections on the public ports",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because --max-connections were open",
            connections_refused.clone(),
        );
        let turn_credentials_issued = Counter::default();
        registry.register(
            "turn_credentials_issued",
            "TURN credentials handed to browsers by the ice-servers route",
            turn_credentials_issued.clone(),
        );
        Self {
            registry,
            offers,
            trickles,
            forward_duration,
            certificate_reloads,
            certificate_not_after,
            endpoint_rejections,
            connections_open,
            connections_refused,
            turn_credentials_issued,
        }
    }

    pub fn offer(&self, result: &'static str) {
        self.offers.get_or_create(&OfferLabels { result }).inc();
    }

    pub fn trickle(&self, result: &'static str) {
        self.trickles.get_or_create(&OfferLabels { result }).inc();
    }

    pub fn endpoint_rejected(&self, session: &SessionKey) {
        self.endpoint_rejections
            .get_or_create(&SessionLabels {
                namespace: session.namespace.clone(),
                name: session.name.clone(),
            })
            .inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The metrics listener's app: `GET /metrics` only.
pub fn app(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve))
        .with_state(metrics)
}

async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
