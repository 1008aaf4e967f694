//! Warm-pool pods over real HTTPS on 127.0.0.1: a pod started with `--claim-token-file` warms up,
//! serves no camera, refuses bad claims without changing, and once claimed serves the claim's
//! certificate, token, media settings and filter (real WebRTC media through the claimed pod).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use camera_pod::codec::CodecKind;
use camera_pod::filter::{Filter, FilterBuilder, FilterError, FilterSpec, Passthrough};
use camera_pod::server::{InitialFilter, ServerError};
use clap::Parser;
use common::{TestPeer, metric_value, post_offer_with, round_trip_unchanged};
use p2pcamera_api::wire::{ClaimReply, ClaimRequest};

const CLAIM_TOKEN: &str = "claim-token-of-the-pool-pod";
const SESSION_TOKEN: &str = "c2Vzc2lvbi10b2tlbi1vZi10ZWFtLWNhbQ";

/// A certificate for 127.0.0.1 and its key, PEM.
struct Identity {
    cert_pem: String,
    key_pem: String,
}

impl Identity {
    /// A fresh self-signed certificate for `127.0.0.1` and `localhost`, named `name`.
    fn new(name: &str) -> Identity {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// An HTTPS client that trusts exactly these certificates (no system roots): it connects only to
/// a server presenting one of them. Each call makes a new client, so no connection is reused.
fn trusting(identities: &[&Identity]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .no_proxy()
        .timeout(Duration::from_secs(30));
    for identity in identities {
        let cert = reqwest::Certificate::from_pem(identity.cert_pem.as_bytes()).unwrap();
        builder = builder.add_root_certificate(cert);
    }
    builder.build().unwrap()
}

/// A claim of the session `session` with `token`, serving `identity`, running `filter`.
fn claim_request(session: &str, token: &str, identity: &Identity, filter: &str) -> ClaimRequest {
    ClaimRequest {
        session: session.into(),
        token: token.into(),
        tls_cert: identity.cert_pem.clone(),
        tls_key: identity.key_pem.clone(),
        filter: filter.into(),
        max_width: None,
        max_height: None,
        max_fps: None,
        codecs: vec![],
        public_ip: None,
    }
}

/// What the pod answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    json: serde_json::Value,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let json = response.json().await.unwrap_or(serde_json::Value::Null);
        Answer {
            status,
            retry_after,
            json,
        }
    }

    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or_default()
    }

    /// The status and error code, for one assertion with the whole answer in its message.
    fn refusal(&self) -> (u16, &str) {
        (self.status, self.code())
    }
}

/// A warm-pool camera-pod in this process: its own certificate, a claim token file.
struct PoolPod {
    base: String,
    certificate: Identity,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
}

impl PoolPod {
    /// Starts a pool pod warming `--filter filter` with the real filter factory (CPU).
    async fn start(filter: &str) -> PoolPod {
        PoolPod::start_with(filter, None).await
    }

    /// Starts a pool pod; `initial` replaces the filter the flags describe (tests' builders).
    async fn start_with(filter: &str, initial: Option<InitialFilter>) -> PoolPod {
        common::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let certificate = Identity::new("pool pod");
        let file = |name: &str, contents: &str| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        let cert = file("tls.crt", &certificate.cert_pem);
        let key = file("tls.key", &certificate.key_pem);
        let claim_token = file("claim-token", &format!("{CLAIM_TOKEN}\n"));
        let cache = dir.path().join("models");
        let args = camera_pod::config::Args::parse_from([
            "camera-pod",
            "--filter",
            filter,
            "--execution-provider",
            "cpu",
            "--intra-op-threads",
            "1",
            "--model-cache-dir",
            cache.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--claim-token-file",
            claim_token.to_str().unwrap(),
        ]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = match initial {
            Some(initial) => tokio::spawn(camera_pod::server::serve_filter(
                args, initial, listener, shutdown,
            )),
            None => tokio::spawn(camera_pod::server::serve(args, listener, shutdown)),
        };
        PoolPod {
            base,
            certificate,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client that trusts only this pod's own (pool) certificate.
    fn pool_client(&self) -> reqwest::Client {
        trusting(&[&self.certificate])
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `/readyz` says `warm`; returns its body.
    async fn wait_warm(&self) -> serde_json::Value {
        let client = self.pool_client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if let Ok(response) = client.get(self.url("/readyz")).send().await {
                let answer = Answer::of(response).await;
                if answer.status == 200 {
                    assert_eq!(answer.json["status"], "warm", "{answer:?}");
                    return answer.json;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the pool pod did not become warm");
    }

    async fn get(&self, client: &reqwest::Client, path: &str, token: Option<&str>) -> Answer {
        let mut request = client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Answer::of(request.send().await.unwrap()).await
    }

    /// `offer` (an SDP) posted with the session's token.
    async fn offer_as_session(&self, client: &reqwest::Client, offer: &str) -> Answer {
        Answer::of(post_offer_with(client, &self.base, offer, None, Some(SESSION_TOKEN)).await)
            .await
    }

    async fn claim(
        &self,
        client: &reqwest::Client,
        token: Option<&str>,
        request: &ClaimRequest,
    ) -> Answer {
        let body = serde_json::to_string(request).unwrap();
        self.claim_raw(client, token, "application/json", body)
            .await
    }

    async fn claim_raw(
        &self,
        client: &reqwest::Client,
        token: Option<&str>,
        content_type: &str,
        body: String,
    ) -> Answer {
        let mut request = client
            .post(self.url("/claim"))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Answer::of(request.send().await.unwrap()).await
    }

    async fn metrics(&self, client: &reqwest::Client) -> String {
        client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the pod stops")
                .unwrap()
                .unwrap();
        }
    }
}

/// Asserts that the camera endpoints refuse with 503 `not_claimed`, token or not.
async fn assert_not_claimed(pod: &PoolPod, client: &reqwest::Client) {
    let offer = serde_json::json!({"sdp": "v=0", "type": "offer"}).to_string();
    for token in [None, Some(CLAIM_TOKEN), Some(SESSION_TOKEN)] {
        let answers = [
            pod.get(client, "/status", token).await,
            {
                let mut request = client
                    .post(pod.url("/offer"))
                    .header("content-type", "application/json")
                    .body(offer.clone());
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                Answer::of(request.send().await.unwrap()).await
            },
            {
                let mut request = client
                    .post(pod.url("/filter"))
                    .json(&serde_json::json!({"filter": "passthrough"}));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                Answer::of(request.send().await.unwrap()).await
            },
        ];
        for answer in answers {
            assert_eq!(answer.refusal(), (503, "not_claimed"), "{answer:?}");
            assert_eq!(answer.retry_after.as_deref(), Some("1"), "{answer:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_pod_is_warm_serves_no_camera_and_refused_claims_change_nothing() {
    let pod = PoolPod::start("passthrough").await;
    let readyz = pod.wait_warm().await;
    assert_eq!(readyz["filter"], "passthrough", "{readyz}");
    assert_eq!(readyz["execution_provider"], "cpu", "{readyz}");
    let client = pod.pool_client();
    assert_not_claimed(&pod, &client).await;

    let session_certificate = Identity::new("session");
    let valid = claim_request(
        "team/cam",
        SESSION_TOKEN,
        &session_certificate,
        "passthrough",
    );
    let with = |change: fn(&mut ClaimRequest)| {
        let mut request = claim_request(
            "team/cam",
            SESSION_TOKEN,
            &session_certificate,
            "passthrough",
        );
        change(&mut request);
        request
    };
    let json = serde_json::to_string(&valid).unwrap();
    let raw_cases = [
        (
            None,
            "application/json",
            json.clone(),
            (401, "missing_token"),
        ),
        (
            Some("not-the-claim-token"),
            "application/json",
            json.clone(),
            (403, "wrong_token"),
        ),
        (
            Some(SESSION_TOKEN),
            "application/json",
            json.clone(),
            (403, "wrong_token"),
        ),
        (
            Some(CLAIM_TOKEN),
            "application/json",
            "{not json".to_owned(),
            (400, "invalid_json"),
        ),
        (
            Some(CLAIM_TOKEN),
            "application/json",
            r#"{"session":"team/cam"}"#.to_owned(),
            (400, "invalid_json"),
        ),
        (
            Some(CLAIM_TOKEN),
            "text/plain",
            json.clone(),
            (400, "unsupported_content_type"),
        ),
        (
            Some(CLAIM_TOKEN),
            "application/json",
            "x".repeat(70 * 1024),
            (413, "too_large"),
        ),
    ];
    for (token, content_type, body, expected) in raw_cases {
        let answer = pod.claim_raw(&client, token, content_type, body).await;
        assert_eq!(answer.refusal(), expected, "{answer:?}");
    }
    let other_key = Identity::new("other").key_pem;
    let field_cases: Vec<(ClaimRequest, (u16, &str), &str)> = vec![
        (
            with(|r| r.session = "cam".into()),
            (400, "invalid_json"),
            "namespace/name",
        ),
        (
            with(|r| r.token = String::new()),
            (400, "invalid_json"),
            "token",
        ),
        (
            with(|r| {
                r.tls_cert =
                    "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
                        .into()
            }),
            (400, "invalid_json"),
            "tls_cert",
        ),
        (
            with(|r| r.tls_cert = "no certificate here".into()),
            (400, "invalid_json"),
            "tls_cert",
        ),
        (
            {
                let mut r = valid.clone();
                r.tls_key = other_key;
                r
            },
            (400, "invalid_json"),
            "private key",
        ),
        (
            with(|r| r.filter = r#"{"filter":"selfie-replace","image":"/etc/hostname"}"#.into()),
            (422, "invalid_filter"),
            "may not read files on the pod",
        ),
        (
            with(|r| r.filter = "sepia".into()),
            (422, "invalid_filter"),
            "sepia",
        ),
        (
            with(|r| r.codecs = vec!["vp8".into(), "av1".into()]),
            (400, "invalid_json"),
            "AV1",
        ),
        (
            with(|r| r.public_ip = Some("node-1.example".into())),
            (400, "invalid_json"),
            "public_ip",
        ),
        (
            with(|r| r.max_width = Some(1)),
            (400, "invalid_json"),
            "max_width",
        ),
        (
            with(|r| r.max_fps = Some(241)),
            (400, "invalid_json"),
            "max_fps",
        ),
    ];
    for (request, expected, says) in &field_cases {
        let answer = pod.claim(&client, Some(CLAIM_TOKEN), request).await;
        assert_eq!(answer.refusal(), *expected, "{request:?}: {answer:?}");
        let message = answer.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{request:?}: {message}");
        assert!(!message.contains(SESSION_TOKEN), "{message}");
    }

    // Nothing changed: still warm and unclaimed, still the pool pod's certificate.
    let fresh = pod.pool_client();
    assert_eq!(
        pod.get(&fresh, "/readyz", None).await.json["status"],
        "warm"
    );
    assert_not_claimed(&pod, &fresh).await;
    let metrics = pod.metrics(&fresh).await;
    assert_eq!(
        metric_value(&metrics, "p2pcamera_pod_claimed"),
        Some(0.0),
        "{metrics}"
    );
    for (code, count) in [
        ("missing_token", 1.0),
        ("wrong_token", 2.0),
        ("invalid_json", 11.0),
        ("invalid_filter", 2.0),
    ] {
        let name = format!("p2pcamera_pod_claims_refused_total{{code=\"{code}\"}}");
        assert_eq!(
            metric_value(&metrics, &name),
            Some(count),
            "{name}: {metrics}"
        );
    }
    // And the valid claim is still taken.
    let answer = pod.claim(&fresh, Some(CLAIM_TOKEN), &valid).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    pod.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_hands_the_pod_its_certificate_token_and_media_settings() {
    let pod = PoolPod::start("passthrough").await;
    pod.wait_warm().await;
    let session = Identity::new("session team/cam");
    let mut request = claim_request("team/cam", SESSION_TOKEN, &session, "passthrough");
    request.codecs = vec!["vp8".into()];
    request.max_width = Some(160);
    // The operator's client: it sent the session's certificate, so it trusts both.
    let operator = trusting(&[&pod.certificate, &session]);
    let answer = pod.claim(&operator, Some(CLAIM_TOKEN), &request).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let reply: ClaimReply = serde_json::from_value(answer.json).unwrap();
    let expected = ClaimReply {
        session: "team/cam".into(),
        filter: FilterSpec::Passthrough.to_string(),
        warm_filter: true,
    };
    assert_eq!(reply, expected);

    // New handshakes get the session's certificate, and only it.
    let session_client = trusting(&[&session]);
    let readyz = pod.get(&session_client, "/readyz", None).await;
    assert_eq!(readyz.status, 200, "{readyz:?}");
    assert_eq!(readyz.json["status"], "ready", "{readyz:?}");
    let pool_only = pod.pool_client().get(pod.url("/readyz")).send().await;
    assert!(
        pool_only.is_err(),
        "the pool certificate is still served: {pool_only:?}"
    );

    // Only the session's token opens the camera endpoints.
    let status = pod
        .get(&session_client, "/status", Some(SESSION_TOKEN))
        .await;
    assert_eq!(status.status, 200, "{status:?}");
    assert_eq!(status.json["filter"], "passthrough", "{status:?}");
    assert_eq!(status.json["camera_connected"], false, "{status:?}");
    let answer = pod.get(&session_client, "/status", Some(CLAIM_TOKEN)).await;
    assert_eq!(answer.refusal(), (403, "wrong_token"), "{answer:?}");
    let answer = pod.get(&session_client, "/status", None).await;
    assert_eq!(answer.refusal(), (401, "missing_token"), "{answer:?}");

    // The claim's codecs, not the start-up ones (VP8 and H264).
    let mut h264 = TestPeer::new(CodecKind::H264).await;
    let offer = h264.offer().await;
    let refused = pod.offer_as_session(&session_client, &offer).await;
    assert_eq!(refused.refusal(), (422, "unsupported_codec"), "{refused:?}");
    h264.close().await;
    let mut vp8 = TestPeer::new(CodecKind::Vp8).await;
    let offer = vp8.offer().await;
    let answered = pod.offer_as_session(&session_client, &offer).await;
    assert_eq!(answered.status, 200, "{answered:?}");
    vp8.close().await;

    // The same claim again is answered as the first time; any other is refused.
    let repeated = pod.claim(&operator, Some(CLAIM_TOKEN), &request).await;
    assert_eq!(repeated.status, 200, "{repeated:?}");
    assert_eq!(
        serde_json::from_value::<ClaimReply>(repeated.json).unwrap(),
        expected
    );
    let other_session = claim_request("team/other", "b3RoZXItdG9rZW4", &session, "passthrough");
    let other_token = claim_request("team/cam", "b3RoZXItdG9rZW4", &session, "passthrough");
    for other in [&other_session, &other_token] {
        let answer = pod.claim(&operator, Some(CLAIM_TOKEN), other).await;
        assert_eq!(answer.refusal(), (409, "already_claimed"), "{answer:?}");
    }
    let status = pod
        .get(&session_client, "/status", Some(SESSION_TOKEN))
        .await;
    assert_eq!(
        status.status, 200,
        "the first session keeps the pod: {status:?}"
    );

    let metrics = pod.metrics(&session_client).await;
    assert_eq!(
        metric_value(&metrics, "p2pcamera_pod_claimed"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "p2pcamera_pod_claims_refused_total{code=\"already_claimed\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    pod.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_for_different_sessions_have_exactly_one_winner() {
    const CLAIMS: usize = 8;
    let pod = Arc::new(PoolPod::start("passthrough").await);
    pod.wait_warm().await;
    let claims: Vec<(String, Identity)> = (0..CLAIMS)
        .map(|i| {
            (
                format!("dG9rZW4tb2YtY2FtLXtp{i}"),
                Identity::new(&format!("cam-{i}")),
            )
        })
        .collect();
    // Each claimer holds a connection open first: once a claim is taken, new handshakes get
    // the winner's certificate, and the losers must still hear their 409.
    let mut clients = Vec::new();
    for _ in 0..CLAIMS {
        let client = pod.pool_client();
        assert_eq!(pod.get(&client, "/healthz", None).await.status, 200);
        clients.push(client);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(CLAIMS));
    let tasks =
        clients
            .into_iter()
            .zip(&claims)
            .enumerate()
            .map(|(i, (client, (token, identity)))| {
                let request =
                    claim_request(&format!("team/cam-{i}"), token, identity, "passthrough");
                let (pod, barrier) = (pod.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    pod.claim(&client, Some(CLAIM_TOKEN), &request).await
                })
            });
    let answers: Vec<Answer> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<usize> = (0..CLAIMS).filter(|&i| answers[i].status == 200).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    for (i, answer) in answers.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(answer.refusal(), (409, "already_claimed"), "{answer:?}");
        }
    }
    let winner = winners[0];
    assert_eq!(
        answers[winner].json["session"],
        format!("team/cam-{winner}")
    );
    // The winner's certificate and token, nobody else's.
    let (token, identity) = &claims[winner];
    let client = trusting(&[identity]);
    assert_eq!(pod.get(&client, "/status", Some(token)).await.status, 200);
    for (i, (other_token, _)) in claims.iter().enumerate() {
        if i != winner {
            let answer = pod.get(&client, "/status", Some(other_token)).await;
            assert_eq!(answer.refusal(), (403, "wrong_token"), "{answer:?}");
        }
    }
    let other = (winner + 1) % CLAIMS;
    let other_only = trusting(&[&claims[other].1])
        .get(pod.url("/readyz"))
        .send()
        .await;
    assert!(
        other_only.is_err(),
        "a loser's certificate is served: {other_only:?}"
    );
    Arc::into_inner(pod).expect("no other owner").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_during_the_warm_up_is_asked_to_retry() {
    const WARM_UP: Duration = Duration::from_secs(3);
    let slow: FilterBuilder = Box::new(
        |spec: &FilterSpec| -> Result<Box<dyn Filter>, FilterError> {
            std::thread::sleep(WARM_UP);
            match spec {
                FilterSpec::Passthrough => Ok(Box::new(Passthrough)),
                other => Err(FilterError::UnknownFilter(other.name().to_owned())),
            }
        },
    );
    let initial = InitialFilter {
        builder: slow,
        spec: FilterSpec::Passthrough,
        execution_provider: "cpu".into(),
    };
    let started = std::time::Instant::now();
    let pod = PoolPod::start_with("passthrough", Some(initial)).await;
    let client = pod.pool_client();
    let session = Identity::new("session");
    let request = claim_request("team/cam", SESSION_TOKEN, &session, "passthrough");
    let early = pod.claim(&client, Some(CLAIM_TOKEN), &request).await;
    assert_eq!(early.refusal(), (503, "not_ready"), "{early:?}");
    assert_eq!(early.retry_after.as_deref(), Some("1"), "{early:?}");
    let readyz = pod.get(&client, "/readyz", None).await;
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert_eq!(readyz.json["status"], "warming", "{readyz:?}");
    assert_not_claimed(&pod, &client).await;
    assert!(
        started.elapsed() < WARM_UP,
        "the checks took longer than the warm-up"
    );

    pod.wait_warm().await;
    let operator = trusting(&[&pod.certificate, &session]);
    let answer = pod.claim(&operator, Some(CLAIM_TOKEN), &request).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json["warm_filter"], true, "{answer:?}");
    pod.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_warmed_with_another_filter_switches_at_its_claim_and_media_flows() {
    // selfie-replace paints everything but a person green: the test pattern has no person, so
    // a frame that went through it is far from the one sent.
    let pod = PoolPod::start("selfie-replace").await;
    let readyz = pod.wait_warm().await;
    assert_eq!(readyz["filter"], "selfie-replace", "{readyz}");
    let session = Identity::new("session team/cam");
    let request = claim_request("team/cam", SESSION_TOKEN, &session, "passthrough");
    let operator = trusting(&[&pod.certificate, &session]);
    let answer = pod.claim(&operator, Some(CLAIM_TOKEN), &request).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let reply: ClaimReply = serde_json::from_value(answer.json).unwrap();
    assert!(!reply.warm_filter, "{reply:?}");
    assert_eq!(reply.filter, FilterSpec::Passthrough.to_string());

    let client = trusting(&[&session]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = pod.get(&client, "/status", Some(SESSION_TOKEN)).await;
        assert_eq!(status.status, 200, "{status:?}");
        if status.json["filter"] == "passthrough" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never switched to the claim's filter: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    let offer = peer.offer().await;
    let answer = pod.offer_as_session(&client, &offer).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    peer.accept(answer.json["sdp"].as_str().unwrap().to_owned())
        .await;
    peer.wait_connected().await;
    round_trip_unchanged(&peer, 60, 20, "the claim's passthrough").await;
    let status = pod.get(&client, "/status", Some(SESSION_TOKEN)).await;
    assert_eq!(status.json["camera_connected"], true, "{status:?}");
    peer.close().await;
    pod.stop().await;
}
