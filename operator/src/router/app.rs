//! The HTTPS app browsers talk to: offers, session status, the script and health. (Metrics
//! have their own listener: [`super::metrics::app`].)

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ipnet::IpNet;
use p2pcamera_api::SessionKey;
use p2pcamera_api::wire::{OfferRequest, REQUEST_BODY_LIMIT, TYPE_OFFER, TrickledCandidates};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::client_address::{X_FORWARDED_FOR, client_address};
use super::error::ApiError;
use super::forward::PodClients;
use super::ice::{IceServers, TurnConfig};
use super::metrics::Metrics;
use super::ratelimit::{ClientKey, KeyedLimiter};
use super::sessions::{self, PublicStatus, SessionCache};
use super::tls::SwappableCertificate;
use super::watch::WatchHealth;
use crate::ports::PortRange;

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
    pub per_client: KeyedLimiter<ClientKey>,
    /// Proxies whose `X-Forwarded-For` names the client ([`client_address`]).
    pub trusted_proxies: Vec<IpNet>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// Origins allowed to call the router from a page (CORS). Never `*`.
    pub allowed_origins: Vec<HeaderValue>,
    /// Ports camera pods listen on: a session endpoint outside them is refused.
    pub port_range: PortRange,
    /// How long an offer may take from its headers to its answer: reading the body and
    /// forwarding it both end by then.
    pub request_timeout: Duration,
    /// TURN servers and their shared secret; `None`: `/ice-servers` answers an empty list.
    pub turn: Option<TurnConfig>,
}

type AppState = Arc<RouterState>;

/// Reads an offer body: the offer as the pod gets it (without the router's `session` field) and
/// the session it is for (`path_key` from the URL, else the body's `session` field).
fn parse_offer(
    body: &[u8],
    path_key: Option<SessionKey>,
) -> Result<(OfferRequest, SessionKey), ApiError> {
    let mut offer: OfferRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if offer.kind != TYPE_OFFER {
        return Err(ApiError::NotAnOffer);
    }
    if offer.sdp.trim().is_empty() {
        return Err(ApiError::EmptySdp);
    }
    let session = offer.session.take();
    let key = match path_key {
        Some(key) => key,
        None => session
            .ok_or(ApiError::MissingSession)?
            .parse::<SessionKey>()?,
    };
    Ok((offer, key))
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

/// Reads the request body, which must be complete by `deadline` (`timeout` after the request
/// began).
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    deadline: Instant,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    if content_length(headers).is_some_and(|length| length > DRAIN_LIMIT) {
        return Err(ApiError::TooLarge);
    }
    let read = axum::body::to_bytes(body, DRAIN_LIMIT);
    let bytes = tokio::time::timeout_at(deadline.into(), read)
        .await
        .map_err(|_| ApiError::BodyTimeout(timeout))?
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

/// The body of a browser's request, once the client's rate limit allows it (the client is
/// `peer`, or the client a trusted proxy forwards for), complete by `deadline`.
async fn client_body(
    state: &RouterState,
    peer: IpAddr,
    headers: &HeaderMap,
    body: Body,
    deadline: Instant,
) -> Result<Bytes, ApiError> {
    let forwarded_for = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let client = client_address(peer, forwarded_for, &state.trusted_proxies);
    state
        .per_client
        .check(&ClientKey::from(client), Instant::now())
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    read_body(headers, body, deadline, state.request_timeout).await
}

async fn offer(
    state: &RouterState,
    peer: IpAddr,
    path_key: Option<SessionKey>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let deadline = Instant::now() + state.request_timeout;
    let body = client_body(state, peer, headers, body, deadline).await?;
    let (mut offer, key) = parse_offer(&body, path_key)?;
    let status = state.sessions.status(&key);
    let credentials = state.sessions.credentials(&key);
    let (status, credentials) = sessions::authorize(
        status.as_ref(),
        credentials.as_ref(),
        authorization(headers),
    )?;
    state
        .per_session
        .check(&key, Instant::now())
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let target = sessions::resolve(status, credentials, state.port_range).inspect_err(|error| {
        if let ApiError::EndpointRejected(reason) = error {
            state.metrics.endpoint_rejected(&key);
            tracing::warn!(
                namespace = %key.namespace,
                name = %key.name,
                endpoint = ?status.endpoint,
                %reason,
                "session endpoint refused; offer not forwarded"
            );
        }
    })?;
    // The pod's own TURN credential (used where its class relays); a browser's is never passed on.
    offer.relay_credential = state
        .turn
        .as_ref()
        .map(|turn| turn.credential(&key, SystemTime::now()));
    let started = Instant::now();
    let answer = state.pods.forward(&target, &offer, deadline).await;
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

/// `POST /v1/sessions/{ns}/{name}/candidates`: candidates the browser trickled after its offer,
/// passed on to the session's pod (which checks them against the live connection's ICE
/// username fragment and its candidate limits). Authorized and rate-limited per client as
/// offers are; not counted against the session's offer limit (a connect trickles a few times).
async fn session_candidates(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = SessionKey { namespace, name };
    let result = trickle(&state, peer.ip(), key, &headers, body).await;
    state.metrics.trickle(match &result {
        Ok(()) => "added",
        Err(error) => error.code().as_str(),
    });
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn trickle(
    state: &RouterState,
    peer: IpAddr,
    key: SessionKey,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ApiError> {
    let deadline = Instant::now() + state.request_timeout;
    let body = client_body(state, peer, headers, body, deadline).await?;
    let candidates: TrickledCandidates =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let status = state.sessions.status(&key);
    let credentials = state.sessions.credentials(&key);
    let (status, credentials) = sessions::authorize(
        status.as_ref(),
        credentials.as_ref(),
        authorization(headers),
    )?;
    let target = sessions::resolve(status, credentials, state.port_range)?;
    state.pods.trickle(&target, &candidates, deadline).await
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
        status.as_ref(),
        credentials.as_ref(),
        authorization(&headers),
    )?;
    Ok(axum::Json(PublicStatus::from(status)))
}

/// The ICE servers (TURN, with a credential for this session) a browser should use for its
/// next offer. Authorized exactly as offers are; never cached by the browser or a proxy.
async fn session_ice_servers(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = SessionKey { namespace, name };
    let status = state.sessions.status(&key);
    let credentials = state.sessions.credentials(&key);
    sessions::authorize(
        status.as_ref(),
        credentials.as_ref(),
        authorization(&headers),
    )?;
    let servers = match &state.turn {
        Some(turn) => {
            state.metrics.turn_credentials_issued.inc();
            turn.ice_servers(&key, SystemTime::now())
        }
        None => IceServers::default(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(servers)).into_response())
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
        .route(
            "/v1/sessions/{namespace}/{name}/ice-servers",
            get(session_ice_servers),
        )
        .route(
            "/v1/sessions/{namespace}/{name}/candidates",
            post(session_candidates),
        )
        .route("/p2pcamera.js", get(script))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(cors)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::ratelimit::Rate;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::Request;
    use futures::StreamExt;
    use http_body_util::BodyExt;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::DynamicObject;
    use kube::runtime::{reflector, watcher};
    use tower::ServiceExt;

    const OFFER: &str = r#"{"sdp":"v=0\r\n","type":"offer"}"#;

    const PORTS: PortRange = PortRange {
        first: 40000,
        last: 40999,
    };

    struct Fixture {
        sessions: reflector::store::Writer<DynamicObject>,
        secrets: reflector::store::Writer<Secret>,
    }

    impl Fixture {
        fn session(&mut self, name: &str, status: serde_json::Value, token: Option<&str>) {
            self.session_with_certificate(name, status, token, None);
        }

        fn session_with_certificate(
            &mut self,
            name: &str,
            status: serde_json::Value,
            token: Option<&str>,
            certificate: Option<&str>,
        ) {
            let mut object =
                DynamicObject::new(name, &sessions::camera_session_resource()).within("ns");
            object.data = serde_json::json!({ "status": status });
            self.sessions
                .apply_watcher_event(&watcher::Event::Apply(object));
            if let Some(token) = token {
                let mut secret = Secret::default();
                secret.metadata.name = Some(p2pcamera_api::objects::child_name(name));
                secret.metadata.namespace = Some("ns".into());
                let mut data = std::collections::BTreeMap::from([(
                    "token".to_owned(),
                    ByteString(token.into()),
                )]);
                if let Some(pem) = certificate {
                    data.insert("tls.crt".into(), ByteString(pem.into()));
                }
                secret.data = Some(data);
                self.secrets
                    .apply_watcher_event(&watcher::Event::Apply(secret));
            }
        }
    }

    fn router(session_burst: u32, client_burst: u32) -> (Fixture, Arc<RouterState>) {
        router_timing_out_after(session_burst, client_burst, Duration::from_secs(5))
    }

    fn router_timing_out_after(
        session_burst: u32,
        client_burst: u32,
        request_timeout: Duration,
    ) -> (Fixture, Arc<RouterState>) {
        router_with(session_burst, client_burst, request_timeout, None)
    }

    fn router_with(
        session_burst: u32,
        client_burst: u32,
        request_timeout: Duration,
        turn: Option<TurnConfig>,
    ) -> (Fixture, Arc<RouterState>) {
        let sessions = reflector::store::Writer::new(sessions::camera_session_resource());
        let (secret_store, secrets) = reflector::store::<Secret>();
        let state = Arc::new(RouterState {
            sessions: SessionCache::new(sessions.as_reader(), secret_store),
            pods: PodClients::new(Duration::from_millis(500)),
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
            port_range: PORTS,
            request_timeout,
            turn,
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
            serde_json::json!({"phase": "Ready", "endpoint": "https://127.0.0.1:40009"}),
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
        let (status, _, wrong_token) = call(&state, post(path, Some("wrong"), OFFER)).await;
        assert_eq!(
            (status, code(&wrong_token)),
            (StatusCode::FORBIDDEN, "wrong_token")
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
        // Ready, but the Secret has no certificate to pin: not ready, and nothing is sent.
        let (status, _, body) = call(&state, post(path, Some("tok"), OFFER)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::SERVICE_UNAVAILABLE, "session_not_ready"),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("certificate not published")),
            "{body}"
        );

        let status_request = |name: &str, token: Option<&str>| {
            let mut request = Request::get(format!("/v1/sessions/ns/{name}"));
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            request.body(Body::empty()).unwrap_or_default()
        };
        let (status, _, body) = call(&state, status_request("waiting", Some("tok2"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"phase": "Scheduling", "ready": false, "reason": "Unschedulable", "message": "no free GPU"})
        );
        let (status, _, body) = call(&state, status_request("waiting", Some("tok"))).await;
        assert_eq!(body, wrong_token);
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    /// A caller without the token learns nothing about which sessions exist: a session that does
    /// not exist answers exactly as a wrong token does, with a token or without, for offers and
    /// for the status.
    #[tokio::test]
    async fn unknown_sessions_answer_as_wrong_tokens_do() {
        let (mut fixture, state) = router(100, 100);
        fixture.session("cam", serde_json::json!({"phase": "Pending"}), Some("tok"));
        // A session whose Secret the router has not seen (yet) is no different.
        fixture.session("fresh", serde_json::json!({"phase": "Pending"}), None);
        let get = |name: &str, token: Option<&str>| {
            let mut request = Request::get(format!("/v1/sessions/ns/{name}"));
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            request.body(Body::empty()).unwrap_or_default()
        };
        for token in [None, Some("guess")] {
            let offer = |name: &str| post(&format!("/v1/sessions/ns/{name}/offer"), token, OFFER);
            let (status, _, existing) = call(&state, offer("cam")).await;
            for other in ["nope", "fresh"] {
                let (other_status, _, body) = call(&state, offer(other)).await;
                assert_eq!(
                    (other_status, &body),
                    (status, &existing),
                    "{other} {token:?}"
                );
                let legacy = serde_json::json!({"sdp": "v=0", "type": "offer", "session": format!("ns/{other}")});
                let (other_status, _, body) =
                    call(&state, post("/offer", token, legacy.to_string())).await;
                assert_eq!(
                    (other_status, &body),
                    (status, &existing),
                    "{other} {token:?}"
                );
            }
            let expected = match token {
                None => (StatusCode::UNAUTHORIZED, "missing_token"),
                Some(_) => (StatusCode::FORBIDDEN, "wrong_token"),
            };
            assert_eq!((status, code(&existing)), expected);

            let (status, _, existing) = call(&state, get("cam", token)).await;
            for other in ["nope", "fresh"] {
                let (other_status, _, body) = call(&state, get(other, token)).await;
                assert_eq!(
                    (other_status, &body),
                    (status, &existing),
                    "{other} {token:?}"
                );
            }
            assert_eq!((status, code(&existing)), expected);
        }
        let (_, _, body) = call(&state, post("/v1/sessions/ns/nope/offer", Some("x"), OFFER)).await;
        assert_eq!(
            body["error"]["message"],
            "the token does not grant access to this session"
        );
    }

    /// `/ice-servers` answers missing, wrong, other sessions' and unknown sessions' tokens
    /// exactly as an offer does, and the right token a credential for that session only.
    /// Trickled candidates are authorized as offers are (same answers for missing, wrong, other
    /// sessions' and unknown sessions' tokens), and a body that is not candidates is refused
    /// before anything is forwarded.
    #[tokio::test]
    async fn trickled_candidates_are_authorized_as_offers_are() {
        let (mut fixture, state) = router_with(100, 100, Duration::from_secs(5), None);
        fixture.session("cam", serde_json::json!({"phase": "Pending"}), Some("tok"));
        fixture.session("other", serde_json::json!({"phase": "Ready"}), Some("tok2"));
        const CANDIDATES: &str = r#"{"ufrag":"u","candidates":[]}"#;
        for token in [None, Some("guess"), Some("tok2")] {
            let (offer_status, _, offer_body) =
                call(&state, post("/v1/sessions/ns/cam/offer", token, OFFER)).await;
            for name in ["cam", "nope"] {
                let path = format!("/v1/sessions/ns/{name}/candidates");
                let (status, _, body) = call(&state, post(&path, token, CANDIDATES)).await;
                assert_eq!(
                    (status, &body),
                    (offer_status, &offer_body),
                    "{name} {token:?}"
                );
            }
        }
        let (status, _, body) = call(
            &state,
            post(
                "/v1/sessions/ns/cam/candidates",
                Some("tok"),
                r#"{"ufrag":"u"}"#,
            ),
        )
        .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::BAD_REQUEST, &serde_json::json!("invalid_json")),
            "{body}"
        );
        // The right token for a session that is not ready: as an offer would be answered.
        let (offer_status, _, _) = call(
            &state,
            post("/v1/sessions/ns/cam/offer", Some("tok"), OFFER),
        )
        .await;
        let (status, _, body) = call(
            &state,
            post("/v1/sessions/ns/cam/candidates", Some("tok"), CANDIDATES),
        )
        .await;
        assert_eq!(status, offer_status, "{body}");
    }

    #[tokio::test]
    async fn ice_servers_are_authorized_as_offers_are() {
        let secret = b"north".to_vec();
        let turn = TurnConfig::new(
            vec!["turn:127.0.0.1:3478?transport=tcp".into()],
            secret.clone(),
            Duration::from_secs(600),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (mut fixture, state) = router_with(100, 100, Duration::from_secs(5), Some(turn));
        fixture.session("cam", serde_json::json!({"phase": "Pending"}), Some("tok"));
        fixture.session("other", serde_json::json!({"phase": "Ready"}), Some("tok2"));
        fixture.session("fresh", serde_json::json!({"phase": "Pending"}), None);
        let ice = |name: &str, token: Option<&str>| {
            let mut request = Request::get(format!("/v1/sessions/ns/{name}/ice-servers"));
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            request.body(Body::empty()).unwrap_or_default()
        };
        for token in [None, Some("guess"), Some("tok2")] {
            let (offer_status, _, offer_body) =
                call(&state, post("/v1/sessions/ns/cam/offer", token, OFFER)).await;
            for name in ["cam", "nope", "fresh"] {
                let (status, _, body) = call(&state, ice(name, token)).await;
                assert_eq!(
                    (status, &body),
                    (offer_status, &offer_body),
                    "{name} {token:?}"
                );
            }
        }
        let before = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let (status, headers, body) = call(&state, ice("cam", Some("tok"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            headers
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        assert_eq!(body["ttl"], 600);
        let server = &body["iceServers"][0];
        assert_eq!(
            server["urls"],
            serde_json::json!(["turn:127.0.0.1:3478?transport=tcp"])
        );
        let username = server["username"].as_str().unwrap_or_default();
        let (expiry, session) = username.split_once(':').unwrap_or_default();
        assert_eq!(session, "ns/cam");
        let expiry: u64 = expiry.parse().unwrap_or_default();
        assert!(
            (before + 600..=before + 602).contains(&expiry),
            "{expiry} {before}"
        );
        assert_eq!(
            server["credential"],
            super::super::ice::rest_credential(&secret, username)
        );
        let text = state.metrics.encode().unwrap_or_default();
        assert!(
            text.contains("p2pcamera_router_turn_credentials_issued_total 1\n"),
            "{text}"
        );

        // Without TURN servers the route answers an empty list (the browser connects directly).
        let (mut fixture, state) = router(100, 100);
        fixture.session("cam", serde_json::json!({"phase": "Pending"}), Some("tok"));
        let (status, _, body) = call(&state, ice("cam", Some("tok"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!({"iceServers": [], "ttl": 0}));
        let text = state.metrics.encode().unwrap_or_default();
        assert!(
            text.contains("p2pcamera_router_turn_credentials_issued_total 0\n"),
            "{text}"
        );
    }

    /// An endpoint that fails the checks is never contacted: 502 `endpoint_rejected` with the
    /// router's generic message, and a metric naming the session.
    #[tokio::test]
    async fn rejected_endpoints_are_not_contacted_and_counted_per_session() {
        let (mut fixture, state) = router(100, 100);
        // A listener in the port range that would see any connection attempt.
        let trap = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let trap_port = trap.local_addr().map(|a| a.port()).unwrap_or_default();
        for (name, endpoint) in [
            ("plain", format!("http://127.0.0.1:{trap_port}")),
            ("named", "https://localhost:40001".to_owned()),
            ("path", "https://127.0.0.1:40001/admin?x=1".to_owned()),
            ("user", "https://a@127.0.0.1:40001".to_owned()),
            ("port", format!("https://127.0.0.1:{trap_port}")),
        ] {
            fixture.session_with_certificate(
                name,
                serde_json::json!({"phase": "Ready", "endpoint": endpoint, "udpPort": 40001}),
                Some("tok"),
                Some("PEM"),
            );
            let (status, _, body) = call(
                &state,
                post(&format!("/v1/sessions/ns/{name}/offer"), Some("tok"), OFFER),
            )
            .await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::BAD_GATEWAY, "endpoint_rejected"),
                "{endpoint}"
            );
            assert_eq!(
                body["error"]["message"],
                "the router does not connect to this session's camera pod address"
            );
        }
        let accepted = tokio::time::timeout(Duration::from_millis(100), trap.accept()).await;
        assert!(
            accepted.is_err(),
            "the router connected to a rejected endpoint"
        );
        let text = state.metrics.encode().unwrap_or_default();
        for name in ["plain", "named", "path", "user", "port"] {
            assert!(
                text.contains(&format!(
                    r#"p2pcamera_router_endpoint_rejections_total{{namespace="ns",name="{name}"}} 1"#
                )),
                "{text}"
            );
        }
        assert!(
            text.contains(r#"p2pcamera_router_offers_total{result="endpoint_rejected"} 5"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_a_bad_body() {
        let (mut fixture, state) = router_timing_out_after(100, 100, Duration::from_millis(300));
        fixture.session("cam", serde_json::json!({"phase": "Pending"}), Some("tok"));
        let trickle = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"{"))])
            .chain(futures::stream::pending());
        let started = Instant::now();
        let (status, _, body) = call(
            &state,
            post(
                "/v1/sessions/ns/cam/offer",
                Some("tok"),
                Body::from_stream(trickle),
            ),
        )
        .await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "bad_body"));
        assert_eq!(
            body["error"]["message"],
            "the request body did not arrive within 0.3 s"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn malformed_and_oversized_bodies() {
        let (mut fixture, state) = router(100, 100);
        fixture.session(
            "cam",
            serde_json::json!({"phase": "Ready", "endpoint": "https://127.0.0.1:40009"}),
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
        // Metrics are not on the public port, only on the metrics listener's app.
        assert_eq!(call(&state, get("/metrics")).await.0, StatusCode::NOT_FOUND);
        let Ok(response) = super::super::metrics::app(state.metrics.clone())
            .oneshot(get("/metrics"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Any JSON value, with numbers beyond every integer type and nesting a few levels deep.
        fn json_value() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_owned()),
                any::<bool>().prop_map(|b| b.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|n| n.to_string()),
                "-?[0-9]{20,60}(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,8})?",
                any::<String>().prop_map(|text| serde_json::Value::String(text).to_string()),
                Just(r#""offer""#.to_owned()),
                Just(r#""v=0\r\n""#.to_owned()),
                Just(r#""ns/cam""#.to_owned()),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6)
                        .prop_map(|items| format!("[{}]", items.join(","))),
                    prop::collection::vec(("[a-z]{0,8}", inner), 0..6).prop_map(|fields| {
                        let fields: Vec<String> = fields
                            .into_iter()
                            .map(|(key, value)| format!("{key:?}:{value}"))
                            .collect();
                        format!("{{{}}}", fields.join(","))
                    }),
                ]
            })
        }

        /// An offer-shaped object whose fields may be missing, repeated, of any type or extra.
        fn offer_like() -> impl Strategy<Value = String> {
            let field = prop_oneof![
                Just("sdp"),
                Just("type"),
                Just("client"),
                Just("session"),
                Just("extra")
            ];
            prop::collection::vec((field, json_value()), 0..6).prop_map(|fields| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(key, value)| format!("{key:?}:{value}"))
                    .collect();
                format!("{{{}}}", fields.join(","))
            })
        }

        /// Arrays or objects nested far past serde_json's recursion limit, within the body limit.
        fn deeply_nested() -> impl Strategy<Value = String> {
            (1usize..20_000, any::<bool>(), any::<bool>()).prop_map(|(depth, arrays, closed)| {
                let (open, close) = if arrays {
                    ("[", "]")
                } else {
                    (r#"{"sdp":"#, "}")
                };
                let mut text = open.repeat(depth);
                text.push('1');
                if closed {
                    text.push_str(&close.repeat(depth));
                }
                text
            })
        }

        fn body() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..512),
                json_value().prop_map(String::into_bytes),
                offer_like().prop_map(String::into_bytes),
                deeply_nested().prop_map(String::into_bytes),
            ]
            .prop_filter("within the body limit", |body| {
                body.len() <= REQUEST_BODY_LIMIT
            })
        }

        proptest! {
            #![proptest_config(p2pcamera_tests::properties::config())]

            /// Whatever body arrives, parsing it never panics: it is a well-formed offer for a
            /// session, or a 4xx error.
            #[test]
            fn any_offer_body_is_an_offer_or_a_client_error(
                body in body(),
                from_path in any::<bool>(),
            ) {
                let path_key = from_path.then(|| SessionKey::new("ns", "cam"));
                match parse_offer(&body, path_key) {
                    Ok((offer, _)) => {
                        prop_assert_eq!(offer.kind.as_str(), TYPE_OFFER);
                        prop_assert!(!offer.sdp.trim().is_empty());
                        prop_assert!(offer.session.is_none());
                    }
                    Err(error) => {
                        prop_assert!(error.status().is_client_error(), "{error:?}");
                    }
                }
            }
        }
    }
}
