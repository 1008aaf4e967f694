//! The HTTP API's answers to bad input, through the router (`oneshot`) and over a real TLS
//! socket, the one-camera rule (409 / same-client replacement), and the warm-up (serving before
//! the filter is ready).

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use camera_pod::codec::CodecKind;
use camera_pod::filter::manifest::{Manifest, MaskComposite};
use camera_pod::filter::{
    CustomModel, Filter, FilterBuilder, FilterError, FilterSpec, FilterWorker, ModelSource,
    Passthrough,
};
use camera_pod::media::limits::BitrateBounds;
use camera_pod::media::{Camera, MediaConfig};
use camera_pod::metrics::Metrics;
use camera_pod::signaling::{AppState, Readiness, app};
use common::TestPeer;
use http_body_util::BodyExt;
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token";

/// Builds passthrough only; refuses every other spec as an unknown filter.
fn passthrough_builder() -> FilterBuilder {
    Box::new(
        |spec: &FilterSpec| -> Result<Box<dyn Filter>, FilterError> {
            match spec {
                FilterSpec::Passthrough => Ok(Box::new(Passthrough)),
                other => Err(FilterError::UnknownFilter(other.name().to_owned())),
            }
        },
    )
}

async fn state(token: Option<&str>) -> AppState {
    state_with(token, passthrough_builder()).await
}

async fn state_with(token: Option<&str>, builder: FilterBuilder) -> AppState {
    state_with_udp(token, builder, "127.0.0.1:0".parse().unwrap()).await
}

/// A ready server whose media uses one fixed UDP port, as in a pod (`--udp-port`).
async fn state_on_udp_port(port: u16) -> AppState {
    state_with_udp(None, passthrough_builder(), ([127, 0, 0, 1], port).into()).await
}

async fn state_with_udp(
    token: Option<&str>,
    builder: FilterBuilder,
    udp_addr: std::net::SocketAddr,
) -> AppState {
    let metrics = Arc::new(Metrics::default());
    let worker = Arc::new(
        FilterWorker::start(builder, FilterSpec::Passthrough, metrics.clone())
            .await
            .unwrap(),
    );
    let media = MediaConfig {
        udp_addr,
        public_ip: None,
        bitrate: BitrateBounds {
            min: 150_000,
            start: 1_000_000,
            max: 4_000_000,
        },
        codecs: vec![CodecKind::Vp8, CodecKind::H264],
        limits: Default::default(),
        decode_cap: Default::default(),
        connect_deadline: std::time::Duration::from_secs(10),
        takeover_after: std::time::Duration::from_secs(1),
        forward_passthrough: true,
        relay: Default::default(),
    };
    let camera = Arc::new(Camera::new(media, worker, metrics.clone()));
    let state = AppState::warming(token.map(str::to_owned), metrics, "passthrough");
    state.set_ready(
        camera,
        Readiness {
            filter: "passthrough".into(),
            execution_provider: "cpu".into(),
        },
    );
    state
}

struct Reply {
    status: StatusCode,
    json: serde_json::Value,
}

async fn call(state: &AppState, request: Request<Body>) -> Reply {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

fn post(
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::post(path).header("content-type", content_type);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(body.into()).unwrap()
}

fn offer_json(sdp: &str) -> String {
    serde_json::json!({ "sdp": sdp, "type": "offer" }).to_string()
}

fn sdp_with(media: &str) -> String {
    format!("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{media}")
}

async fn assert_healthy(state: &AppState) {
    let reply = call(state, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_offer_gets_its_json_error_and_the_server_keeps_serving() {
    let state = state(Some(TOKEN)).await;
    let vp9_only =
        sdp_with("m=video 9 UDP/TLS/RTP/SAVPF 98\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:98 VP9/90000\r\n");
    let audio_only = sdp_with(
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n",
    );
    let huge = offer_json(&"a".repeat(70 * 1024));
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post("/offer", None, "application/json", offer_json("x")),
            StatusCode::UNAUTHORIZED,
            "missing_token",
        ),
        (
            post("/offer", Some("wrong"), "application/json", offer_json("x")),
            StatusCode::FORBIDDEN,
            "wrong_token",
        ),
        (
            post("/offer", Some(TOKEN), "application/json", "{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            post(
                "/offer",
                Some(TOKEN),
                "application/json",
                r#"{"type":"offer"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            post(
                "/offer",
                Some(TOKEN),
                "application/json",
                r#"{"sdp":"v=0","type":"answer"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "not_an_offer",
        ),
        (
            post("/offer", Some(TOKEN), "text/plain", offer_json("x")),
            StatusCode::BAD_REQUEST,
            "unsupported_content_type",
        ),
        (
            post(
                "/offer",
                Some(TOKEN),
                "application/json",
                offer_json("hello"),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
        ),
        (
            post(
                "/offer",
                Some(TOKEN),
                "application/json",
                offer_json(&audio_only),
            ),
            StatusCode::BAD_REQUEST,
            "no_video",
        ),
        (
            post(
                "/offer",
                Some(TOKEN),
                "application/json",
                offer_json(&vp9_only),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_codec",
        ),
        (
            post("/offer", Some(TOKEN), "application/json", huge),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            post(
                "/filter",
                None,
                "application/json",
                r#"{"filter":"passthrough"}"#,
            ),
            StatusCode::UNAUTHORIZED,
            "missing_token",
        ),
        (
            post(
                "/filter",
                Some(TOKEN),
                "application/json",
                r#"{"filter":"nope"}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_filter",
        ),
        (
            post("/filter", Some(TOKEN), "application/json", "[]"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Request::get("/status").body(Body::empty()).unwrap(),
            StatusCode::UNAUTHORIZED,
            "missing_token",
        ),
    ];
    for (request, status, code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let reply = call(&state, request).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.json);
        assert_eq!(reply.json["error"]["code"], code, "{what}: {}", reply.json);
        assert!(
            reply.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            reply.json
        );
        assert_healthy(&state).await;
    }
    let metrics = call(
        &state,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(metrics.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_switch_and_status_with_the_token() {
    let state = state(Some(TOKEN)).await;
    let reply = call(
        &state,
        post(
            "/filter",
            Some(TOKEN),
            "application/json",
            r#"{"filter":"passthrough"}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["filter"], "passthrough");
    let request = Request::get("/status")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let reply = call(&state, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["camera_connected"], false);
    assert_eq!(reply.json["filter"], "passthrough");
    assert!(reply.json["last_active"].as_u64().unwrap() > 1_700_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_switches_over_http_may_not_name_pod_files() {
    // This builder would build anything: only the server's own check stands in the way.
    let built = Arc::new(std::sync::Mutex::new(Vec::<FilterSpec>::new()));
    let builder: FilterBuilder = {
        let built = built.clone();
        Box::new(
            move |spec: &FilterSpec| -> Result<Box<dyn Filter>, FilterError> {
                built.lock().unwrap().push(spec.clone());
                Ok(Box::new(Passthrough))
            },
        )
    };
    let state = state_with(None, builder).await;
    let manifest = serde_json::to_value(Manifest::selfie(MaskComposite::ShowMask)).unwrap();
    let sha256 = "ab".repeat(32);
    let local = [
        serde_json::json!({"filter": "selfie-replace", "image": "/etc/passwd"}),
        serde_json::json!({"filter": "custom", "model": "/var/run/p2pcamera/token", "sha256": sha256, "manifest": manifest}),
    ];
    for spec in local {
        let reply = call(
            &state,
            post("/filter", None, "application/json", spec.to_string()),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{spec}: {}",
            reply.json
        );
        assert_eq!(
            reply.json["error"]["code"], "invalid_filter",
            "{}",
            reply.json
        );
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("may not read files on the pod"),
            "{message}"
        );
    }
    assert_eq!(
        built.lock().unwrap().len(),
        1,
        "only the initial filter was built: {:?}",
        built.lock().unwrap()
    );
    // A custom model by https URL (with its required sha256) is still allowed.
    let url = serde_json::json!({"filter": "custom", "model": "https://models.example/seg.onnx", "sha256": sha256, "manifest": manifest});
    let reply = call(
        &state,
        post("/filter", None, "application/json", url.to_string()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let last = built.lock().unwrap().last().cloned().unwrap();
    assert!(
        matches!(&last, FilterSpec::Custom(CustomModel { model: ModelSource::Url(url), .. }) if url == "https://models.example/seg.onnx"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_filter_parameters_out_of_range_are_refused_before_anything_is_built() {
    let built = Arc::new(std::sync::Mutex::new(Vec::<FilterSpec>::new()));
    let builder: FilterBuilder = {
        let built = built.clone();
        Box::new(
            move |spec: &FilterSpec| -> Result<Box<dyn Filter>, FilterError> {
                built.lock().unwrap().push(spec.clone());
                Ok(Box::new(Passthrough))
            },
        )
    };
    let state = state_with(None, builder).await;
    for (spec, names) in [
        (r#"{"filter":"pose","model":"huge"}"#, "huge"),
        (r#"{"filter":"body-parts","opacity":101}"#, "101"),
        (r#"{"filter":"body-parts","opacity":-1}"#, "opacity -1"),
        (r#"{"filter":"body-parts","color":"black"}"#, "black"),
    ] {
        let reply = call(
            &state,
            post("/filter", None, "application/json", spec.to_owned()),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{spec}: {}",
            reply.json
        );
        assert_eq!(
            reply.json["error"]["code"], "invalid_filter",
            "{}",
            reply.json
        );
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{spec}: {message}");
    }
    assert_eq!(
        built.lock().unwrap().len(),
        1,
        "only the initial filter was built"
    );
    assert_healthy(&state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_camera_is_refused_but_the_same_client_replaces_itself() {
    common::install_crypto();
    // On the one UDP port a pod has: the replaced connection must give it up for the new one.
    let state = state_on_udp_port(p2pcamera_tests::free_port().unwrap()).await;
    let offer_from = |sdp: &str, client: &str| {
        let body = serde_json::json!({ "sdp": sdp, "type": "offer", "client": client }).to_string();
        post("/offer", None, "application/json", body)
    };
    let mut alice = TestPeer::new(CodecKind::Vp8).await;
    let mut bob = TestPeer::new(CodecKind::H264).await;
    let (alice_offer, bob_offer) = (alice.offer().await, bob.offer().await);

    let reply = call(&state, offer_from(&alice_offer, "alice")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["type"], "answer");
    let reply = call(&state, offer_from(&bob_offer, "bob")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.json);
    assert_eq!(reply.json["error"]["code"], "camera_busy");
    // An offer without a client id cannot claim the camera either.
    let reply = call(
        &state,
        post("/offer", None, "application/json", offer_json(&bob_offer)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);

    // Alice reconnects with a fresh offer: her old connection is replaced.
    let mut alice_again = TestPeer::new(CodecKind::Vp8).await;
    let reply = call(&state, offer_from(&alice_again.offer().await, "alice")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let answer = reply.json["sdp"].as_str().unwrap().to_owned();
    alice_again.accept(answer).await;
    alice_again.wait_connected().await;
    // The server sees the connection complete shortly after the client does.
    let mut reply = call(&state, Request::get("/status").body(Body::empty()).unwrap()).await;
    for _ in 0..50 {
        if reply.json["camera_connected"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        reply = call(&state, Request::get("/status").body(Body::empty()).unwrap()).await;
    }
    assert_eq!(reply.json["camera_connected"], true, "{}", reply.json);

    let metrics = call(
        &state,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(metrics.status, StatusCode::OK);
    for peer in [alice, bob, alice_again] {
        peer.close().await;
    }
}

/// Candidates a browser trickles after its offer join the live connection whose offer had the
/// same ICE username fragment, and only it; each is checked as an offer's candidates are, at most
/// 16 distinct ones per connection, and a request with one bad candidate adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_candidates_join_only_the_live_connection_and_are_checked_as_offers_are() {
    common::install_crypto();
    let state = state(None).await;
    let trickle = |ufrag: &str, candidates: Vec<serde_json::Value>| {
        let body = serde_json::json!({ "ufrag": ufrag, "candidates": candidates }).to_string();
        post("/candidates", None, "application/json", body)
    };
    let at = |address: &str, port: u32| {
        serde_json::json!({
            "candidate": format!("candidate:{port} 1 udp 2122260223 {address} {port} typ host generation 0"),
            "sdpMid": "0",
            "sdpMLineIndex": 0
        })
    };

    // No connection yet: nothing to add to.
    let reply = call(&state, trickle("nobody", vec![at("127.0.0.1", 50000)])).await;
    assert_eq!(
        (reply.status, &reply.json["error"]["code"]),
        (StatusCode::GONE, &serde_json::json!("connection_gone")),
        "{}",
        reply.json
    );

    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    let offer = peer.offer().await;
    let ufrag = offer
        .lines()
        .find_map(|line| line.strip_prefix("a=ice-ufrag:"))
        .expect("the offer has an ICE username fragment")
        .trim()
        .to_owned();
    let reply = call(
        &state,
        post("/offer", None, "application/json", offer_json(&offer)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);

    // Another offer's fragment (an old connection's): gone.
    let reply = call(
        &state,
        trickle("someone-else", vec![at("127.0.0.1", 50000)]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::GONE, "{}", reply.json);
    // Checked as offers are: a multicast address, or text that is no candidate.
    for (bad, says) in [
        (at("224.0.0.251", 5353), "not a unicast address"),
        (
            serde_json::json!({"candidate": "candidate:1 1 udp"}),
            "not an ICE candidate",
        ),
    ] {
        let reply = call(&state, trickle(&ufrag, vec![at("127.0.0.1", 50001), bad])).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.json);
        assert_eq!(reply.json["error"]["code"], "invalid_sdp", "{}", reply.json);
        assert!(
            reply.json["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{}",
            reply.json
        );
    }
    let reply = call(
        &state,
        post("/candidates", None, "application/json", "{not json"),
    )
    .await;
    assert_eq!(
        reply.json["error"]["code"], "invalid_json",
        "{}",
        reply.json
    );

    // Good ones are added: 3 now, then 14 more distinct ones are one too many for the
    // connection, and that whole request adds none.
    let reply = call(
        &state,
        trickle(
            &ufrag,
            (50010..50013).map(|port| at("127.0.0.1", port)).collect(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.json);
    let reply = call(
        &state,
        trickle(
            &ufrag,
            (50020..50034).map(|port| at("127.0.0.1", port)).collect(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.json);
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("17 distinct ICE candidates"),
        "{}",
        reply.json
    );
    // A repeat of one already added is not a new one.
    let reply = call(&state, trickle(&ufrag, vec![at("127.0.0.1", 50010)])).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.json);
    let metrics = app(state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("p2pcamera_pod_trickled_candidates_total 4"),
        "{metrics}"
    );
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_while_another_process_holds_the_media_port_gets_503_and_says_so() {
    common::install_crypto();
    let port = p2pcamera_tests::free_port().unwrap();
    let state = state_on_udp_port(port).await;
    let holder = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    let offer = offer_json(&peer.offer().await);

    let reply = call(
        &state,
        post("/offer", None, "application/json", offer.clone()),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.json
    );
    assert_eq!(reply.json["error"]["code"], "media_port_unavailable");
    let message = reply.json["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");

    // Once the port is free again, the same offer is answered.
    drop(holder);
    let reply = call(&state, post("/offer", None, "application/json", offer)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_signed_certificate_over_a_real_socket() {
    common::install_crypto();
    use clap::Parser;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let args = camera_pod::config::Args::parse_from([
        "camera-pod",
        "--filter",
        "passthrough",
        "--token",
        TOKEN,
    ]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(camera_pod::server::serve(args, listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let base = format!("https://{addr}");
    let mut ready = false;
    for _ in 0..100 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "HTTPS server answers /readyz");
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP is not served"
    );

    let cases = [
        (None, "application/json", offer_json("x"), 401),
        (Some("nope"), "application/json", offer_json("x"), 403),
        (Some(TOKEN), "application/json", "{".to_owned(), 400),
        (
            Some(TOKEN),
            "application/json",
            offer_json(&"b".repeat(65 * 1024)),
            413,
        ),
    ];
    for (token, content_type, body, status) in cases {
        let mut request = client
            .post(format!("{base}/offer"))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        let json: serde_json::Value = response.json().await.unwrap();
        assert!(json["error"]["code"].is_string(), "{json}");
        let health = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert!(health.status().is_success());
    }
    stop_server(stop, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_warming_up_only_health_answers_and_offers_are_asked_to_retry() {
    let warming = AppState::warming(None, Arc::new(Metrics::default()), "selfie-blur");
    assert_healthy(&warming).await;
    let response = app(warming.clone())
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["status"], "warming", "{json}");
    assert_eq!(json["filter"], "selfie-blur", "{json}");

    let offer =
        sdp_with("m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n");
    for request in [
        post("/offer", None, "application/json", offer_json(&offer)),
        post(
            "/filter",
            None,
            "application/json",
            r#"{"filter":"passthrough"}"#,
        ),
        Request::get("/status").body(Body::empty()).unwrap(),
    ] {
        let what = request.uri().to_string();
        let response = app(warming.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
        assert_eq!(response.headers()["retry-after"], "1", "{what}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "not_ready", "{what}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("selfie-blur"),
            "{what}: {json}"
        );
    }

    let ready = state(None).await;
    let reply = call(&ready, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["status"], "ready", "{}", reply.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_listens_before_a_slow_filter_is_warm_then_becomes_ready() {
    use clap::Parser;
    common::install_crypto();
    const WARM_UP: std::time::Duration = std::time::Duration::from_millis(1500);
    let mut fast = passthrough_builder();
    let slow: FilterBuilder = Box::new(move |spec: &FilterSpec| {
        std::thread::sleep(WARM_UP);
        fast(spec)
    });
    let filter = camera_pod::server::InitialFilter {
        builder: slow,
        spec: FilterSpec::Passthrough,
        execution_provider: "cpu".into(),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let args = camera_pod::config::Args::parse_from([
        "camera-pod",
        "--filter",
        "passthrough",
        "--plain-http",
    ]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = std::time::Instant::now();
    let server = tokio::spawn(camera_pod::server::serve_filter(
        args,
        filter,
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let readyz = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 503);
    assert!(
        started.elapsed() < WARM_UP,
        "answered only after the warm-up"
    );
    let json: serde_json::Value = readyz.json().await.unwrap();
    assert_eq!(json["status"], "warming");
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    let offer = peer.offer().await;
    let refused = common::post_offer(&base, &offer, None, None).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");

    let mut ready = false;
    while started.elapsed() < WARM_UP * 4 {
        let readyz = client.get(format!("{base}/readyz")).send().await.unwrap();
        if readyz.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "not ready {:?} after start", started.elapsed());
    assert!(
        started.elapsed() >= WARM_UP,
        "ready before the filter was built"
    );
    let answered = common::post_offer(&base, &offer, None, None).await;
    assert_eq!(answered.status(), 200);
    peer.close().await;
    stop_server(stop, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_filter_that_cannot_be_built_stops_the_server_with_its_error() {
    use clap::Parser;
    let filter = camera_pod::server::InitialFilter {
        builder: passthrough_builder(),
        spec: FilterSpec::Style { style: 3 },
        execution_provider: "cpu".into(),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let args = camera_pod::config::Args::parse_from([
        "camera-pod",
        "--filter",
        "passthrough",
        "--plain-http",
    ]);
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        camera_pod::server::serve_filter(args, filter, listener, std::future::pending()),
    )
    .await
    .expect("the server stops by itself");
    let error = result.unwrap_err().to_string();
    assert!(
        error.contains("building the initial filter: unknown filter `style`"),
        "{error}"
    );
}

/// Stops an in-process server started with a oneshot shutdown signal; it must end cleanly
/// within 10 s.
async fn stop_server<E: std::fmt::Debug>(
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), E>>,
) {
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
