//! The HTTPS app browsers talk to: offers, session status, the script, health and metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ipnet::IpNet;
use p2pcamera_api::SessionKey;
use p2pcamera_api::wire::{OfferRequest, REQUEST_BODY_LIMIT, TYPE_OFFER};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::client_address::{X_FORWARDED_FOR, client_address};
use super::error::ApiError;
use super::forward::PodClients;
use super::metrics::Metrics;
use super::ratelimit::KeyedLimiter;
use super::sessions::{self, PublicStatus, SessionCache};
use super::tls::SwappableCertificate;
use super::watch::WatchHealth;

const SCRIPT: &str = include_str!("../../../static/p2pcamera.js");

/// Whether the routing caches are current (synced, watches unbroken) and a certificate is loaded.
pub struct Readiness {
    pub watches: Vec<Arc<WatchHealth>>,
    pub certificate: Arc<SwappableCertificate>,
}

impl Readiness {
    pub fn new(certificate: Arc<SwappableCertificate>, watches: Vec<Arc<WatchHealth>>) -> Self {
        Self {
            watches,
            certificate,
        }
    }

    /// What is missing; empty when ready.
    pub fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = self.watches.iter().filter_map(|w| w.problem()).collect();
        if !self.certificate.is_loaded() {
            missing.push("no serving certificate".into());
        }
        missing
    }
}

pub struct RouterState {
    pub sessions: SessionCache,
    pub pods: PodClients,
    pub per_session: KeyedLimiter<SessionKey>,
    pub per_client: KeyedLimiter<IpAddr>,
    /// Proxies whose `X-Forwarded-For` names the client ([`client_address`]).
    pub trusted_proxies: Vec<IpNet>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// Origins allowed to call the router from a page (CORS). Never `*`.
    pub allowed_origins: Vec<HeaderValue>,
}

type AppState = Arc<RouterState>;

fn parse_offer(body: &[u8]) -> Result<OfferRequest, ApiError> {
    let offer: OfferRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if offer.kind != TYPE_OFFER {
        return Err(ApiError::NotAnOffer);
    }
    if offer.sdp.trim().is_empty() {
        return Err(ApiError::EmptySdp);
    }
    Ok(offer)
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
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

/// Oversized bodies up to this size are read to the end before answering 413, so the client
/// gets the JSON error instead of a connection reset mid-upload.
const DRAIN_LIMIT: usize = 1024 * 1024;

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    if content_length(headers).is_some_and(|length| length > DRAIN_LIMIT) {
        return Err(ApiError::TooLarge);
    }
    let bytes = axum::body::to_bytes(body, DRAIN_LIMIT)
        .await
        .map_err(|error| {
            let inner = error.into_inner();
            if is_length_limit(inner.as_ref()) {
                ApiError::TooLarge
            } else {
                ApiError::BadBody
            }
        })?;
    if bytes.len() > REQUEST_BODY_LIMIT {
        return Err(ApiError::TooLarge);
    }
    Ok(bytes)
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn offer(
    state: &RouterState,
    peer: IpAddr,
    path_key: Option<SessionKey>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let forwarded_for = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let client = client_address(peer, forwarded_for, &state.trusted_proxies);
    state
        .per_client
        .check(&client, Instant::now())
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let body = read_body(headers, body).await?;
    let mut offer = parse_offer(&body)?;
    // The pod gets the original `/offer` shape, without the router's `session` field.
    let session = offer.session.take();
    let key = match path_key {
        Some(key) => key,
        None => session
            .ok_or(ApiError::MissingSession)?
            .parse::<SessionKey>()?,
    };
    let status = state.sessions.status(&key);
    let credentials = state.sessions.credentials(&key);
    let (status, credentials) = sessions::authorize(
        &key,
        status.as_ref(),
        credentials.as_ref(),
        authorization(headers),
    )?;
    state
        .per_session
        .check(&key, Instant::now())
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let target = sessions::resolve(status, credentials)?;
    let started = Instant::now();
    let answer = state.pods.forward(&target, &offer).await;
    let elapsed = started.elapsed();
    state
        .metrics
        .forward_duration
        .observe(elapsed.as_secs_f64());
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
            state.metrics.offer(error.code().as_str());
            if error.status().is_server_error() {
                tracing::warn!(code = %error.code(), %error, "offer failed");
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
    let (status, _) = sessions::authorize(
        &key,
        status.as_ref(),
        credentials.as_ref(),
        authorization(&headers),
    )?;
    Ok(axum::Json(PublicStatus::from(status)))
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
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

fn cors(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600))
}

/// The router's HTTPS app. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`:
/// the per-client rate limit keys on the peer address (or, behind a trusted proxy, on the client
/// it forwards for).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::ratelimit::Rate;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::DynamicObject;
    use kube::runtime::{reflector, watcher};
    use std::time::Duration;
    use tower::ServiceExt;

    const OFFER: &str = r#"{"sdp":"v=0\r\n","type":"offer"}"#;

    struct Fixture {
        sessions: reflector::store::Writer<DynamicObject>,
        secrets: reflector::store::Writer<Secret>,
    }

    impl Fixture {
        fn session(&mut self, name: &str, status: serde_json::Value, token: Option<&str>) {
            let mut object =
                DynamicObject::new(name, &sessions::camera_session_resource()).within("ns");
            object.data = serde_json::json!({ "status": status });
            self.sessions
                .apply_watcher_event(&watcher::Event::Apply(object));
            if let Some(token) = token {
                let mut secret = Secret::default();
                secret.metadata.name = Some(p2pcamera_api::objects::child_name(name));
                secret.metadata.namespace = Some("ns".into());
                secret.data =
                    Some([("token".to_owned(), ByteString(token.as_bytes().to_vec()))].into());
                self.secrets
                    .apply_watcher_event(&watcher::Event::Apply(secret));
            }
        }
    }

    fn router(session_burst: u32, client_burst: u32) -> (Fixture, Arc<RouterState>) {
        let sessions = reflector::store::Writer::new(sessions::camera_session_resource());
        let (secret_store, secrets) = reflector::store::<Secret>();
        let state = Arc::new(RouterState {
            sessions: SessionCache::new(sessions.as_reader(), secret_store),
            pods: PodClients::new(Duration::from_millis(500)).unwrap_or_else(|e| panic!("{e}")),
            per_session: KeyedLimiter::new(Rate {
                per_second: 0.001,
                burst: session_burst,
            }),
            per_client: KeyedLimiter::new(Rate {
                per_second: 0.001,
                burst: client_burst,
            }),
            trusted_proxies: Vec::new(),
            metrics: Arc::new(Metrics::new()),
            readiness: Readiness::new(
                Arc::default(),
                vec![
                    Arc::new(WatchHealth::new("camerasessions")),
                    Arc::new(WatchHealth::new("session-secrets")),
                ],
            ),
            allowed_origins: vec![HeaderValue::from_static("https://meet.example")],
        });
        (Fixture { sessions, secrets }, state)
    }

    async fn call(
        state: &Arc<RouterState>,
        request: Request<Body>,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let app =
            app(state.clone()).layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
        let Ok(response) = app.oneshot(request).await;
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
            String::from_utf8_lossy(&bytes).into(),
        ));
        (parts.status, parts.headers, json)
    }

    fn post(path: &str, token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
        let mut builder = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(body.into()).unwrap_or_default()
    }

    fn code(body: &serde_json::Value) -> &str {
        body["error"]["code"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn error_codes_for_auth_lookup_and_readiness() {
        let (mut fixture, state) = router(10, 100);
        fixture.session(
            "ready",
            serde_json::json!({"phase": "Ready", "endpoint": "http://127.0.0.1:9"}),
            Some("tok"),
        );
        fixture.session(
            "waiting",
            serde_json::json!({"phase": "Scheduling", "conditions": [
                {"type": "Scheduled", "status": "False", "reason": "Unschedulable", "message": "no free GPU"}]}),
            Some("tok2"),
        );
        let path = "/v1/sessions/ns/ready/offer";
        let (status, _, body) = call(&state, post(path, None, OFFER)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, "missing_token")
        );
        let (status, _, body) = call(&state, post(path, Some("wrong"), OFFER)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "wrong_token")
        );
        let (status, _, body) = call(
            &state,
            post("/v1/sessions/ns/nope/offer", Some("tok"), OFFER),
        )
        .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "session_not_found")
        );
        let (status, headers, body) = call(
            &state,
            post("/v1/sessions/ns/waiting/offer", Some("tok2"), OFFER),
        )
        .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::SERVICE_UNAVAILABLE, "session_not_ready")
        );
        assert_eq!(
            headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("2")
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no free GPU"))
        );

        let status_request = |token: &str| {
            Request::get("/v1/sessions/ns/waiting")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap_or_default()
        };
        let (status, _, body) = call(&state, status_request("tok2")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"phase": "Scheduling", "ready": false, "reason": "Unschedulable", "message": "no free GPU"})
        );
        let (status, _, _) = call(&state, status_request("tok")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn malformed_and_oversized_bodies() {
        let (mut fixture, state) = router(100, 100);
        fixture.session(
            "cam",
            serde_json::json!({"phase": "Ready", "endpoint": "http://127.0.0.1:9"}),
            Some("tok"),
        );
        let path = "/v1/sessions/ns/cam/offer";
        for (bad, expected) in [
            ("not json", "invalid_json"),
            (r#"{"type":"offer"}"#, "invalid_json"),
            (r#"{"sdp":"v=0","type":"offer","client":7}"#, "invalid_json"),
            (r#"{"sdp":"v=0","type":"answer"}"#, "not_an_offer"),
            (r#"{"sdp":" ","type":"offer"}"#, "invalid_sdp"),
        ] {
            let (status, _, body) = call(&state, post(path, Some("tok"), bad)).await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::BAD_REQUEST, expected),
                "{bad}"
            );
        }
        for bad in [
            OFFER,
            r#"{"sdp":"v=0","type":"offer","session":"cam"}"#,
            r#"{"sdp":"v=0","type":"offer","session":"a/b/c"}"#,
        ] {
            let (status, _, body) = call(&state, post("/offer", Some("tok"), bad)).await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::BAD_REQUEST, "invalid_session"),
                "{bad}"
            );
        }
        // A body that breaks off mid-stream.
        let broken = futures::stream::iter([
            Ok(Bytes::from_static(b"{\"sdp\"")),
            Err(std::io::Error::other("reset")),
        ]);
        let (status, _, body) =
            call(&state, post(path, Some("tok"), Body::from_stream(broken))).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "bad_body"));
        let huge =
            serde_json::json!({"sdp": "a".repeat(REQUEST_BODY_LIMIT), "type": "offer"}).to_string();
        let (status, _, body) = call(&state, post(path, Some("tok"), huge.clone())).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        );
        // Without a Content-Length (a streamed body) the limit still holds.
        let chunks = futures::stream::iter(
            huge.into_bytes()
                .chunks(4096)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let (status, _, body) =
            call(&state, post(path, Some("tok"), Body::from_stream(chunks))).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        );
    }

    #[tokio::test]
    async fn rate_limits_per_client_and_per_session() {
        let (mut fixture, state) = router(2, 100);
        fixture.session("cam", serde_json::json!({"phase": "Starting"}), Some("tok"));
        let path = "/v1/sessions/ns/cam/offer";
        for _ in 0..2 {
            let (status, _, _) = call(&state, post(path, Some("tok"), OFFER)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        }
        let (status, headers, body) = call(&state, post(path, Some("tok"), OFFER)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        assert!(headers.contains_key(header::RETRY_AFTER));
        // Wrong tokens do not spend the session's budget...
        let (mut fixture, state) = router(1, 3);
        fixture.session("cam", serde_json::json!({"phase": "Starting"}), Some("tok"));
        let (status, _, _) = call(&state, post(path, Some("bad"), OFFER)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = call(&state, post(path, Some("tok"), OFFER)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        // ...but every request spends the client address's budget.
        let (status, _, body) = call(&state, post(path, Some("bad"), OFFER)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, _, body) = call(&state, post(path, Some("bad"), OFFER)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
    }

    #[tokio::test]
    async fn cors_allows_listed_origins_only() {
        let (_, state) = router(1, 100);
        let preflight = |origin: &str| {
            Request::builder()
                .method(Method::OPTIONS)
                .uri("/v1/sessions/ns/cam/offer")
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(
                    header::ACCESS_CONTROL_REQUEST_HEADERS,
                    "authorization,content-type",
                )
                .body(Body::empty())
                .unwrap_or_default()
        };
        let (status, headers, _) = call(&state, preflight("https://meet.example")).await;
        assert!(status.is_success());
        assert_eq!(
            headers
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .and_then(|v| v.to_str().ok()),
            Some("https://meet.example")
        );
        let allowed = headers
            .get(header::ACCESS_CONTROL_ALLOW_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(allowed.contains("authorization"), "{allowed}");
        let (_, headers, _) = call(&state, preflight("https://evil.example")).await;
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[tokio::test]
    async fn script_health_readiness_and_metrics() {
        let (mut fixture, state) = router(10, 100);
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap_or_default();
        let (status, headers, body) = call(&state, get("/p2pcamera.js")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("text/javascript"))
        );
        assert!(body.as_str().is_some_and(|s| s.contains("getUserMedia")));
        assert_eq!(call(&state, get("/healthz")).await.0, StatusCode::OK);
        let (status, _, body) = call(&state, get("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.as_str()
                .is_some_and(|s| s.contains("no serving certificate")
                    && s.contains("camerasessions cache not synced"))
        );
        for watch in &state.readiness.watches {
            watch.synced();
        }
        let Ok(cert) = rcgen::generate_simple_self_signed(vec!["router".into()]) else {
            panic!("rcgen")
        };
        let Ok(key) = super::super::tls::certified_key(
            cert.cert.pem().as_bytes(),
            cert.signing_key.serialize_pem().as_bytes(),
        ) else {
            panic!("key")
        };
        state.readiness.certificate.replace(key);
        assert_eq!(call(&state, get("/readyz")).await.0, StatusCode::OK);
        // A broken watch (API server away) makes the router unready until its cache is listed again.
        state.readiness.watches[1].broken("connection refused".into());
        let (status, _, body) = call(&state, get("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.as_str()
                .is_some_and(|s| s.contains("session-secrets watch broken")),
            "{body}"
        );
        state.readiness.watches[1].synced();
        assert_eq!(call(&state, get("/readyz")).await.0, StatusCode::OK);

        fixture.session("cam", serde_json::json!({"phase": "Pending"}), Some("tok"));
        call(
            &state,
            post("/v1/sessions/ns/cam/offer", Some("tok"), OFFER),
        )
        .await;
        call(&state, post("/v1/sessions/ns/cam/offer", None, OFFER)).await;
        let (_, _, body) = call(&state, get("/metrics")).await;
        let text = body.as_str().unwrap_or_default();
        assert!(
            text.contains(r#"p2pcamera_router_offers_total{result="session_not_ready"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"p2pcamera_router_offers_total{result="missing_token"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("p2pcamera_router_forward_duration_seconds_bucket"),
            "{text}"
        );
    }
}
