//! The router over real HTTPS, with sessions and Secrets in a real API server and a stand-in
//! camera pod (HTTPS with its own self-signed certificate) on loopback: every error code a
//! browser can get, the happy path through both offer forms, and the status endpoint.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use p2pcamera_api::{ErrorBody, ErrorCode};
use p2pcamera_operator::crd::CRD_FILE;
use p2pcamera_operator::router::sessions::camera_session_resource;
use p2pcamera_operator::router::{self, Listeners, RouterArgs};
use p2pcamera_tests::{ControlPlane, eventually};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const OFFER: &str = r#"{"sdp":"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n","type":"offer","client":"c1"}"#;

/// A stand-in camera pod: checks the bearer token, answers `{"sdp","type":"answer"}`, or the
/// error set in `refusal` (with its code's status, as camera-pod does), or answers after `delay`.
struct StandIn {
    address: SocketAddr,
    cert_pem: String,
    refusal: Arc<Mutex<Option<ErrorBody>>>,
}

impl StandIn {
    /// From now on the pod refuses every offer with `code` and `message` (`None`: answers).
    fn refuse(&self, refusal: Option<(ErrorCode, &str)>) {
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) =
            refusal.map(|(code, message)| ErrorBody::new(code, message));
    }
}

/// How camera-pod answers an error: the code's status and the contract's body.
fn refused(error: ErrorBody) -> (StatusCode, axum::Json<Value>) {
    let status =
        StatusCode::from_u16(error.error.code.http_status()).unwrap_or_else(|e| panic!("{e}"));
    (
        status,
        axum::Json(serde_json::to_value(error).unwrap_or_else(|e| panic!("{e}"))),
    )
}

async fn stand_in(token: &'static str, delay: Duration) -> StandIn {
    let cert = rcgen::generate_simple_self_signed(vec!["camera-pod".into()])
        .unwrap_or_else(|e| panic!("{e}"));
    let cert_pem = cert.cert.pem();
    let refusal = Arc::new(Mutex::new(None::<ErrorBody>));
    let current = refusal.clone();
    let app = Router::new().route(
        "/offer",
        post(move |headers: HeaderMap, body: String| {
            let current = current.clone();
            async move {
                tokio::time::sleep(delay).await;
                let expected = format!("Bearer {token}");
                if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                    return refused(ErrorBody::new(ErrorCode::WrongToken, "wrong bearer token"));
                }
                if let Some(error) = current.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                    return refused(error);
                }
                let offer: Value = serde_json::from_str(&body).unwrap_or_default();
                // The pod sees the original /offer shape: no router-only fields.
                let clean = offer.get("session").is_none() && offer["type"] == "offer";
                (StatusCode::OK, axum::Json(json!({"sdp": format!("answer-to:{}", offer["sdp"].as_str().unwrap_or("")), "type": "answer", "clean": clean})))
            }
        }),
    );
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert_pem.clone().into_bytes(),
        cert.signing_key.serialize_pem().into_bytes(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let server = axum_server::from_tcp_rustls(listener, config).unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(server.serve(app.into_make_service()));
    StandIn {
        address,
        cert_pem,
        refusal,
    }
}

struct Env {
    client: kube::Client,
    namespace: String,
    https: SocketAddr,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Env {
    async fn session(&self, name: &str, status: Value, token: &str, pod_cert: Option<&str>) {
        let sessions: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &camera_session_resource(),
        );
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "p2pcamera.io/v1alpha1", "kind": "CameraSession", "metadata": {"name": name}, "spec": {}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        sessions
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sessions
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut data = json!({"token": token});
        if let Some(cert) = pod_cert {
            data["tls.crt"] = cert.into();
        }
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-p2pcamera"), "labels": {
                "app.kubernetes.io/managed-by": "p2pcamera-operator", "p2pcamera.io/session": name}},
            "stringData": data
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn url(&self, path: &str) -> String {
        format!("https://router.p2pcamera.test:{}{path}", self.https.port())
    }

    async fn offer(
        &self,
        path: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = self
            .http
            .post(self.url(path))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Self::outcome(request).await
    }

    /// An offer (token `t`) as a proxy forwarding for `forwarded_for` sends it.
    async fn offer_from(
        &self,
        path: &str,
        forwarded_for: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Option<String>, Value) {
        let request = self
            .http
            .post(self.url(path))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-forwarded-for", forwarded_for)
            .bearer_auth("t")
            .body(body);
        Self::outcome(request).await
    }

    async fn outcome(request: reqwest::RequestBuilder) -> (StatusCode, Option<String>, Value) {
        let response = request.send().await.unwrap_or_else(|e| panic!("{e}"));
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::IM_A_TEAPOT);
        let retry = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.json().await.unwrap_or(Value::Null);
        (status, retry, body)
    }
}

async fn env(prefix: &str, session_burst: u32, client_burst: u32) -> Env {
    env_behind(prefix, session_burst, client_burst, &[]).await
}

/// A router whose `--trusted-proxies` are `trusted_proxies`.
async fn env_behind(
    prefix: &str,
    session_burst: u32,
    client_burst: u32,
    trusted_proxies: &[&str],
) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plane = ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    plane
        .apply_crds(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(CRD_FILE),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let namespace = plane
        .namespace(prefix)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = plane.client().unwrap_or_else(|e| panic!("{e}"));

    // The router's certificate comes from an existing TLS Secret (the cert-manager path).
    let cert = rcgen::generate_simple_self_signed(vec!["router.p2pcamera.test".into()])
        .unwrap_or_else(|e| panic!("{e}"));
    let tls: Secret = serde_json::from_value(json!({
        "metadata": {"name": "router-tls"}, "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert.cert.pem(), "tls.key": cert.signing_key.serialize_pem()}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &tls)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let args = RouterArgs {
        listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        http_listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        namespace: namespace.clone(),
        tls_secret: "router-tls".into(),
        challenge_config_map: router::DEFAULT_CHALLENGE_CONFIG_MAP.into(),
        session_namespace: Some(namespace.clone()),
        session_secret_selector:
            "app.kubernetes.io/managed-by=p2pcamera-operator,p2pcamera.io/session".into(),
        allowed_origins: vec!["https://meet.example".into()],
        forward_timeout: 1.0,
        session_rate: 0.01,
        session_burst,
        client_rate: 0.01,
        client_burst,
        trusted_proxies: trusted_proxies
            .iter()
            .map(|net| net.parse().unwrap_or_else(|e| panic!("{e}")))
            .collect(),
    };
    let listeners = Listeners::bind(&args).unwrap_or_else(|e| panic!("{e}"));
    let https = listeners
        .https
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"));
    let shutdown = CancellationToken::new();
    tokio::spawn(router::serve(
        client.clone(),
        args,
        listeners,
        shutdown.clone(),
    ));
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert.cert.pem().as_bytes())
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .resolve("router.p2pcamera.test", https)
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let env = Env {
        client,
        namespace,
        https,
        http,
        shutdown,
    };
    eventually("router ready", Duration::from_secs(30), || {
        let request = env.http.get(env.url("/readyz"));
        async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(response.text().await.unwrap_or_default())
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    env
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

fn ready(endpoint: String) -> Value {
    json!({"phase": "Ready", "endpoint": endpoint})
}

/// Waits until the router's cache has the session (its watch lags the create a little).
async fn until_known(env: &Env, name: &str, token: &str) {
    let path = format!("/v1/sessions/{}/{name}", env.namespace);
    eventually(
        "session in the router's cache",
        Duration::from_secs(10),
        || {
            let request = env.http.get(env.url(&path)).bearer_auth(token);
            async move {
                let response = request.send().await.map_err(|e| e.to_string())?;
                if response.status() == reqwest::StatusCode::OK {
                    Ok(())
                } else {
                    Err(response.status().to_string())
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_offers_and_maps_every_pod_outcome() {
    let env = env("router-fwd", 100, 1000).await;
    let ns = env.namespace.clone();
    let pod = stand_in("tok-a", Duration::ZERO).await;
    env.session(
        "cam",
        ready(format!("https://127.0.0.1:{}", pod.address.port())),
        "tok-a",
        Some(&pod.cert_pem),
    )
    .await;
    until_known(&env, "cam", "tok-a").await;

    let path = format!("/v1/sessions/{ns}/cam/offer");
    let (status, _, body) = env.offer(&path, Some("tok-a"), OFFER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["type"], "answer");
    assert_eq!(body["clean"], true);
    assert!(
        body["sdp"]
            .as_str()
            .is_some_and(|s| s.starts_with("answer-to:v=0"))
    );
    // The original form with a "session" field reaches the same pod.
    let legacy =
        json!({"sdp": "v=0\r\n", "type": "offer", "session": format!("{ns}/cam")}).to_string();
    let (status, _, body) = env.offer("/offer", Some("tok-a"), legacy).await;
    assert_eq!(
        (status, body["type"].clone(), body["clean"].clone()),
        (StatusCode::OK, json!("answer"), json!(true))
    );

    // The pod's refusals of the browser's offer pass through with its message: 409 (a camera is
    // connected), 422 (no codec in common, e.g. an H264-only browser for a VP8-only session).
    for (refusal, message) in [
        (ErrorCode::CameraBusy, "a camera is already connected"),
        (
            ErrorCode::UnsupportedCodec,
            "the offer has no video codec the session accepts (VP8); it offers H264",
        ),
    ] {
        pod.refuse(Some((refusal, message)));
        let (status, retry, body) = env.offer(&path, Some("tok-a"), OFFER).await;
        assert_eq!(
            (
                status.as_u16(),
                retry,
                code(&body),
                body["error"]["message"].as_str()
            ),
            (refusal.http_status(), None, refusal.as_str(), Some(message)),
            "{body}"
        );
    }
    // A pod not ready to serve makes the session not ready, with its reason and a retry hint.
    pod.refuse(Some((
        ErrorCode::MediaPortUnavailable,
        "the media UDP port 10.0.0.5:40001 is not available",
    )));
    let (status, retry, body) = env.offer(&path, Some("tok-a"), OFFER).await;
    assert_eq!(
        (status, retry.as_deref(), code(&body)),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("2"),
            "session_not_ready"
        )
    );
    assert_eq!(
        body["error"]["message"],
        "the media UDP port 10.0.0.5:40001 is not available"
    );
    pod.refuse(None);

    // 504: the pod answers after the router's 1 s forward timeout.
    let slow = stand_in("tok-slow", Duration::from_secs(3)).await;
    env.session(
        "slow",
        ready(format!("https://127.0.0.1:{}", slow.address.port())),
        "tok-slow",
        Some(&slow.cert_pem),
    )
    .await;
    until_known(&env, "slow", "tok-slow").await;
    let (status, _, body) = env
        .offer(
            &format!("/v1/sessions/{ns}/slow/offer"),
            Some("tok-slow"),
            OFFER,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::GATEWAY_TIMEOUT, "pod_timeout")
    );

    // 502: nothing listens at the endpoint.
    let closed = p2pcamera_tests::free_port().unwrap_or_else(|e| panic!("{e}"));
    env.session(
        "gone",
        ready(format!("https://127.0.0.1:{closed}")),
        "tok-g",
        Some(&pod.cert_pem),
    )
    .await;
    until_known(&env, "gone", "tok-g").await;
    let (status, _, body) = env
        .offer(
            &format!("/v1/sessions/{ns}/gone/offer"),
            Some("tok-g"),
            OFFER,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_GATEWAY, "pod_unreachable")
    );

    // 502: the pod presents a certificate other than the pinned one (the token never leaves).
    let other = stand_in("tok-x", Duration::ZERO).await;
    env.session(
        "impostor",
        ready(format!("https://127.0.0.1:{}", other.address.port())),
        "tok-x",
        Some(&pod.cert_pem),
    )
    .await;
    until_known(&env, "impostor", "tok-x").await;
    let (status, _, body) = env
        .offer(
            &format!("/v1/sessions/{ns}/impostor/offer"),
            Some("tok-x"),
            OFFER,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_GATEWAY, "pod_unreachable")
    );

    // Metrics count the outcomes.
    let metrics = env
        .http
        .get(env.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains(r#"p2pcamera_router_offers_total{result="answered"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"p2pcamera_router_offers_total{result="pod_timeout"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_limits_and_not_ready_sessions() {
    let env = env("router-err", 3, 1000).await;
    let ns = env.namespace.clone();
    let pod = stand_in("tok-b", Duration::ZERO).await;
    env.session(
        "cam",
        ready(format!("https://127.0.0.1:{}", pod.address.port())),
        "tok-b",
        Some(&pod.cert_pem),
    )
    .await;
    env.session(
        "waiting",
        json!({"phase": "Scheduling", "conditions": [{"type": "Scheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
        "tok-w",
        None,
    )
    .await;
    until_known(&env, "cam", "tok-b").await;
    until_known(&env, "waiting", "tok-w").await;
    let path = format!("/v1/sessions/{ns}/cam/offer");

    let (status, _, body) = env.offer(&path, Some("tok-b"), "{not json").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let (status, _, body) = env.offer(&path, None, OFFER).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "missing_token")
    );
    let (status, _, body) = env.offer(&path, Some("tok-w"), OFFER).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "wrong_token")
    );
    let (status, _, body) = env
        .offer(
            &format!("/v1/sessions/{ns}/nobody/offer"),
            Some("tok-b"),
            OFFER,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "session_not_found")
    );
    let big = json!({"sdp": "a".repeat(70 * 1024), "type": "offer"}).to_string();
    let (status, _, body) = env.offer(&path, Some("tok-b"), big).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );

    let waiting = format!("/v1/sessions/{ns}/waiting/offer");
    let (status, retry, body) = env.offer(&waiting, Some("tok-w"), OFFER).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "session_not_ready")
    );
    assert_eq!(retry.as_deref(), Some("2"));
    let status_body: Value = env
        .http
        .get(env.url(&format!("/v1/sessions/{ns}/waiting")))
        .bearer_auth("tok-w")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or(Value::Null);
    assert_eq!(status_body["phase"], "Scheduling");
    assert_eq!(status_body["reason"], "Unschedulable");
    assert_eq!(status_body["ready"], false);

    // Session "cam" has a burst of 3 authorized offers: one answered, then 429.
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let (status, retry, _) = env.offer(&path, Some("tok-b"), OFFER).await;
        outcomes.push((status, retry.is_some()));
    }
    assert_eq!(
        outcomes,
        vec![
            (StatusCode::OK, false),
            (StatusCode::OK, false),
            (StatusCode::OK, false),
            (StatusCode::TOO_MANY_REQUESTS, true)
        ]
    );
    // Becoming ready is picked up from the watch: the waiting session now routes.
    let sessions: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &ns, &camera_session_resource());
    sessions
        .patch_status("waiting", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Ready", "endpoint": format!("http://127.0.0.1:{}", pod.address.port()), "conditions": []}})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eventually(
        "the session routes once Ready",
        Duration::from_secs(10),
        || {
            let request = env
                .http
                .post(env.url(&waiting))
                .bearer_auth("tok-w")
                .body(OFFER);
            async move {
                let response = request.send().await.map_err(|e| e.to_string())?;
                // The stand-in speaks HTTPS only: a plain-HTTP endpoint reaches it and fails as 502.
                if response.status() == reqwest::StatusCode::BAD_GATEWAY {
                    Ok(())
                } else {
                    Err(response.status().to_string())
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_address_limit() {
    let env = env("router-client", 100, 2).await;
    let path = format!("/v1/sessions/{}/none/offer", env.namespace);
    // /readyz polling in setup does not count; offers do.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(env.offer(&path, Some("t"), OFFER).await.0);
    }
    assert_eq!(
        statuses,
        vec![
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // No proxy is trusted: a client cannot escape its limit by naming another address.
    let (status, _, _) = env.offer_from(&path, "203.0.113.50", OFFER).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_limit_counts_the_forwarded_client() {
    // The test client connects from 127.0.0.1, which plays the load balancer here.
    let env = env_behind("router-proxy", 100, 2, &["127.0.0.0/8"]).await;
    let path = format!("/v1/sessions/{}/none/offer", env.namespace);
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(env.offer_from(&path, "198.51.100.7", OFFER).await.0);
    }
    assert_eq!(
        first,
        vec![
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Another client behind the same proxy has its own budget.
    assert_eq!(
        env.offer_from(&path, "198.51.100.8", OFFER).await.0,
        StatusCode::NOT_FOUND
    );
    // A client that forges an earlier hop is still counted by the address the proxy saw.
    assert_eq!(
        env.offer_from(&path, "192.0.2.1, 198.51.100.7", OFFER)
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

async fn timed_offers(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    count: usize,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = std::time::Instant::now();
        let response = http
            .post(url)
            .bearer_auth(token)
            .body(OFFER)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let _ = response.bytes().await;
        times.push(started.elapsed());
    }
    times.sort();
    times
}

async fn offers_per_second(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    count: usize,
    concurrency: usize,
) -> f64 {
    let started = std::time::Instant::now();
    let per_task = count / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, token) = (http.clone(), url.to_owned(), token.to_owned());
            tokio::spawn(async move { timed_offers(&http, &url, &token, per_task).await.len() })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        // A task that panicked (an offer failed) fails the benchmark: no throughput is reported
        // for offers that were never answered.
        done += task
            .await
            .unwrap_or_else(|error| panic!("an offer task failed: {error}"));
    }
    done as f64 / started.elapsed().as_secs_f64()
}

/// Forwarding overhead: the same offers sent to a stand-in pod directly and through the router,
/// in the same run. `P2PCAMERA_BENCH_OFFERS` sets the count (default 200); bench/router/run.sh
/// runs it in release mode with more offers and prints the table for docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_forwarding_overhead() {
    let count: usize = std::env::var("P2PCAMERA_BENCH_OFFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let env = env("router-bench", u32::MAX, u32::MAX).await;
    let pod = stand_in("tok-bench", Duration::ZERO).await;
    env.session(
        "bench",
        ready(format!("https://127.0.0.1:{}", pod.address.port())),
        "tok-bench",
        Some(&pod.cert_pem),
    )
    .await;
    until_known(&env, "bench", "tok-bench").await;
    // The router pins the certificate, so it needs no name for the pod's address; the direct
    // client trusts the same certificate under the name it carries.
    let direct = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(pod.cert_pem.as_bytes())
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .resolve("camera-pod", pod.address)
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let direct_url = format!("https://camera-pod:{}/offer", pod.address.port());
    let routed_url = env.url(&format!("/v1/sessions/{}/bench/offer", env.namespace));
    // Warm connections on both paths.
    timed_offers(&direct, &direct_url, "tok-bench", 20).await;
    timed_offers(&env.http, &routed_url, "tok-bench", 20).await;

    let direct_times = timed_offers(&direct, &direct_url, "tok-bench", count).await;
    let routed_times = timed_offers(&env.http, &routed_url, "tok-bench", count).await;
    let direct_rate = offers_per_second(&direct, &direct_url, "tok-bench", count, 8).await;
    let routed_rate = offers_per_second(&env.http, &routed_url, "tok-bench", count, 8).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (d50, d99, r50, r99) = (
        percentile(&direct_times, 0.5),
        percentile(&direct_times, 0.99),
        percentile(&routed_times, 0.5),
        percentile(&routed_times, 0.99),
    );
    println!("| path | offers | p50 ms | p99 ms | offers/s (8 concurrent) |");
    println!("|---|---|---|---|---|");
    println!(
        "| direct to pod | {count} | {:.2} | {:.2} | {direct_rate:.0} |",
        ms(d50),
        ms(d99)
    );
    println!(
        "| through router | {count} | {:.2} | {:.2} | {routed_rate:.0} |",
        ms(r50),
        ms(r99)
    );
    println!(
        "| added by router | | {:.2} | {:.2} | |",
        ms(r50.saturating_sub(d50)),
        ms(r99.saturating_sub(d99))
    );
    // A sanity bound that holds even in debug builds on a busy machine; the target (2 ms at p99)
    // is checked with the release numbers in docs/benchmarks.md.
    assert!(
        r50.saturating_sub(d50) < Duration::from_millis(50),
        "router adds {:?} at p50",
        r50.saturating_sub(d50)
    );
}
