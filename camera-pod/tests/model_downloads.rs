//! Custom models by URL, end to end: a real camera-pod (ONNX Runtime, the vendored selfie models)
//! asked over `POST /filter` for models on a local HTTPS server that counts its requests.
//!
//! Only the administrator's allow-list (hosts or digests) lets a URL through, and a refusal makes
//! no request; an allowed model downloads while the video keeps flowing through the current
//! filter; a body over the size limit is refused and leaves nothing in the cache; failures tell
//! the client nothing about the server; of a burst of switches only the newest takes effect; the
//! start-up model obeys the same list.
//!
//! Needs libonnxruntime (camera-pod/scripts/fetch-onnxruntime.sh, or P2PCAMERA_ONNXRUNTIME_LIB).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use camera_pod::codec::CodecKind;
use camera_pod::filter::manifest::{Manifest, MaskComposite};
use camera_pod::filter::source::SELFIE_MODEL_SHA256;
use clap::Parser;
use common::model_server::{ModelRoute, ModelServer};
use common::{TestPeer, TestServer, luma_mad, pattern, post_offer};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
/// The square selfie model and its manifest (shows the mask: grey picture, flat chroma).
const SQUARE: &str = "selfie_segmentation.onnx";
const SQUARE_SHA256: &str = "a57e71d778e49eade6e8d54e75ad31d2be6f6d481e9f23a162c825a2a8f1d886";
const SQUARE_MANIFEST: &str = "selfie_segmentation.manifest.yaml";
/// The landscape selfie model (the built-in `selfie-blur` runs it); any mask manifest fits it.
const LANDSCAPE: &str = "selfie_segmentation_landscape.onnx";

/// What a refused model is answered, whatever the reason.
const NOT_ALLOWED: &str = "this model is not allowed on this camera";

fn model_bytes(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(MODELS).join(file)).unwrap()
}

/// A `POST /filter` body for the model at `url` with this sha256, showing the model's mask: the
/// landscape model (whose digest the built-in `selfie-blur` uses) gets the built-in selfie
/// manifest, every other the square model's.
fn custom_filter(url: &str, sha256: &str) -> serde_json::Value {
    let manifest = if sha256 == SELFIE_MODEL_SHA256 {
        Manifest::selfie(MaskComposite::ShowMask)
    } else {
        Manifest::load(&Path::new(MODELS).join(SQUARE_MANIFEST)).unwrap()
    };
    serde_json::json!({"filter": "custom", "model": url, "sha256": sha256, "manifest": manifest})
}

/// A camera-pod (passthrough) trusting `server`, with its model cache in `cache` and `allowed`
/// flags (`--model-allowed-hosts ...`, `--model-max-bytes ...`).
async fn start_pod(server: &ModelServer, cache: &Path, allowed: &[&str]) -> TestServer {
    let mut flags = vec![
        "--model-ca-file",
        server.ca_file.to_str().unwrap(),
        "--model-cache-dir",
        cache.to_str().unwrap(),
    ];
    flags.extend_from_slice(allowed);
    TestServer::start(&flags).await
}

struct Answer {
    status: u16,
    json: serde_json::Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or_default()
    }

    fn message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or_default()
    }
}

async fn post_filter(base: &str, body: serde_json::Value) -> Answer {
    let response = reqwest::Client::new()
        .post(format!("{base}/filter"))
        .json(&body)
        .send()
        .await
        .unwrap();
    Answer {
        status: response.status().as_u16(),
        json: response.json().await.unwrap_or_default(),
    }
}

async fn current_filter(base: &str) -> String {
    let status: serde_json::Value = reqwest::get(format!("{base}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["filter"].as_str().unwrap().to_owned()
}

/// Files in the model cache directory (none when it does not exist).
fn cache_files(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache).map_or_else(
        |_| Vec::new(),
        |entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        },
    )
}

/// Polls `done` every 10 ms for up to `limit`.
async fn wait_until(limit: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_models_on_the_allow_list_are_downloaded_and_refusals_make_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start(
        dir.path(),
        vec![
            ModelRoute::new("/square.onnx", model_bytes(SQUARE)),
            ModelRoute::new("/landscape.onnx", model_bytes(LANDSCAPE)),
        ],
    );
    let cache = dir.path().join("cache");
    // Listed: the host `localhost` (on the https port, not the server's) and the square model.
    let pod = start_pod(
        &server,
        &cache,
        &[
            "--model-allowed-hosts",
            "localhost",
            "--model-allowed-digests",
            SQUARE_SHA256,
        ],
    )
    .await;
    let on_localhost = |path: &str| server.url(path).replace("127.0.0.1", "localhost");
    for url in [
        server.url("/landscape.onnx"),
        on_localhost("/landscape.onnx"),
    ] {
        let refused = post_filter(&pod.base, custom_filter(&url, SELFIE_MODEL_SHA256)).await;
        assert_eq!(
            (refused.status, refused.code(), refused.message()),
            (403, "model_not_allowed", NOT_ALLOWED),
            "{url}: {}",
            refused.json
        );
    }
    assert_eq!(server.total_hits(), 0, "a refused model makes no request");
    assert!(cache_files(&cache).is_empty());
    assert_eq!(current_filter(&pod.base).await, "passthrough");

    // A listed digest is allowed from any https URL.
    let url = on_localhost("/square.onnx");
    let allowed = post_filter(&pod.base, custom_filter(&url, SQUARE_SHA256)).await;
    assert_eq!(allowed.status, 200, "{}", allowed.json);
    assert_eq!(allowed.json["filter"], url.as_str());
    assert_eq!(current_filter(&pod.base).await, url);
    assert_eq!((server.hits("/square.onnx"), server.total_hits()), (1, 1));
    assert_eq!(cache_files(&cache), [format!("{SQUARE_SHA256}.onnx")]);
    pod.stop().await;
}

/// How far the chroma of `frame` is from flat grey (128), on average: the show-mask manifest
/// makes it 0 (give or take the codec), the camera pattern about 15.
fn chroma_colour(frame: &camera_pod::frame::VideoFrame) -> f64 {
    let planes = frame.u.iter().chain(&frame.v);
    let total: u64 = planes.clone().map(|&c| u64::from(c.abs_diff(128))).sum();
    total as f64 / planes.count() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_model_downloads_while_the_video_keeps_flowing_then_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start(
        dir.path(),
        vec![ModelRoute::new("/square.onnx", model_bytes(SQUARE)).slowly(Duration::from_secs(3))],
    );
    let cache = dir.path().join("cache");
    let pod = start_pod(&server, &cache, &["--model-allowed-hosts", &server.host]).await;
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    let offer = peer.offer().await;
    let response = post_offer(&pod.base, &offer, None, None).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    peer.accept(answer["sdp"].as_str().unwrap().to_owned())
        .await;
    peer.wait_connected().await;

    let received = peer.received.clone();
    // 8 s of camera at 30 fps, from before the switch to well after it.
    let camera = tokio::spawn(async move {
        peer.send_pattern(0, 240).await;
        peer
    });
    wait_until(Duration::from_secs(10), "the first filtered frame", || {
        !received.lock().unwrap().is_empty()
    })
    .await;
    let url = server.url("/square.onnx");
    let switch = tokio::spawn({
        let (base, body) = (pod.base.clone(), custom_filter(&url, SQUARE_SHA256));
        async move { post_filter(&base, body).await }
    });
    wait_until(Duration::from_secs(10), "the download to start", || {
        server.hits("/square.onnx") == 1
    })
    .await;
    let at_start = received.lock().unwrap().len();
    wait_until(Duration::from_secs(10), "the download to end", || {
        server.completed("/square.onnx") == 1
    })
    .await;
    let during: Vec<_> = received.lock().unwrap()[at_start..].to_vec();
    assert!(
        during.len() >= 20,
        "only {} frames came back during the 3 s download",
        during.len()
    );
    for frame in &during {
        let sent = pattern((frame.rtp_timestamp - 90_000) / 3000);
        let mad = luma_mad(&sent, frame);
        assert!(
            mad < 6.0 && chroma_colour(frame) > 8.0,
            "frame {} was not the camera's picture (luma off by {mad:.1})",
            frame.rtp_timestamp
        );
    }

    let switched = switch.await.unwrap();
    assert_eq!(switched.status, 200, "{}", switched.json);
    assert_eq!(switched.json["filter"], url.as_str());
    let switched_at = received.lock().unwrap().len();
    let peer = camera.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<_> = received.lock().unwrap()[switched_at..].to_vec();
    assert!(after.len() >= 20, "{} frames after the switch", after.len());
    for frame in after.iter().skip(5) {
        assert!(
            chroma_colour(frame) < 3.0,
            "frame {} is not the model's mask (chroma {:.1} from grey)",
            frame.rtp_timestamp,
            chroma_colour(frame)
        );
    }
    assert_eq!(current_filter(&pod.base).await, url);
    assert_eq!(server.hits("/square.onnx"), 1);
    peer.close().await;
    pod.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_over_the_size_limit_is_refused_and_leaves_nothing_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let square = model_bytes(SQUARE);
    let server = ModelServer::start(
        dir.path(),
        vec![
            ModelRoute::new("/declared.onnx", square.clone()),
            ModelRoute::new("/chunked.onnx", square.clone())
                .without_length()
                .slowly(Duration::from_millis(500)),
        ],
    );
    let cache = dir.path().join("cache");
    let limit = (square.len() / 4).to_string();
    let pod = start_pod(
        &server,
        &cache,
        &[
            "--model-allowed-hosts",
            &server.host,
            "--model-max-bytes",
            &limit,
        ],
    )
    .await;
    for path in ["/declared.onnx", "/chunked.onnx"] {
        let refused = post_filter(&pod.base, custom_filter(&server.url(path), SQUARE_SHA256)).await;
        assert_eq!(
            (refused.status, refused.code()),
            (422, "invalid_filter"),
            "{path}: {}",
            refused.json
        );
        assert!(
            refused.message().contains("could not be downloaded")
                && !refused.message().contains(&limit),
            "{path}: {}",
            refused.message()
        );
        assert_eq!(server.hits(path), 1);
        assert_eq!(cache_files(&cache), Vec::<String>::new(), "{path}");
    }
    assert_eq!(
        server.completed("/chunked.onnx"),
        0,
        "the download stopped at the limit"
    );
    assert_eq!(current_filter(&pod.base).await, "passthrough");
    pod.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_failures_tell_the_client_nothing_about_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start(
        dir.path(),
        vec![ModelRoute::new("/square.onnx", model_bytes(SQUARE))],
    );
    let cache = dir.path().join("cache");
    let pod = start_pod(&server, &cache, &["--model-allowed-hosts", &server.host]).await;
    let wrong = "ab".repeat(32);
    for (url, sha256) in [
        (server.url("/missing.onnx"), SQUARE_SHA256),
        (server.url("/square.onnx"), wrong.as_str()),
    ] {
        let failed = post_filter(&pod.base, custom_filter(&url, sha256)).await;
        assert_eq!(
            (failed.status, failed.code()),
            (422, "invalid_filter"),
            "{}",
            failed.json
        );
        let message = failed.message();
        for secret in ["404", "Not Found", SQUARE_SHA256, &server.host] {
            assert!(!message.contains(secret), "{message} tells {secret}");
        }
    }
    assert_eq!(server.total_hits(), 2);
    assert!(cache_files(&cache).is_empty(), "{:?}", cache_files(&cache));
    pod.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_rapid_switches_only_the_newest_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    let square = model_bytes(SQUARE);
    let server = ModelServer::start(
        dir.path(),
        vec![
            ModelRoute::new("/first.onnx", square.clone()).slowly(Duration::from_millis(2500)),
            ModelRoute::new("/second.onnx", square.clone()),
            ModelRoute::new("/third.onnx", square),
            ModelRoute::new("/newest.onnx", model_bytes(LANDSCAPE)),
        ],
    );
    let cache = dir.path().join("cache");
    let pod = start_pod(&server, &cache, &["--model-allowed-hosts", &server.host]).await;
    let switch = |path: &str| {
        let (base, body) = (
            pod.base.clone(),
            custom_filter(
                &server.url(path),
                if path == "/newest.onnx" {
                    SELFIE_MODEL_SHA256
                } else {
                    SQUARE_SHA256
                },
            ),
        );
        tokio::spawn(async move { post_filter(&base, body).await })
    };
    let first = switch("/first.onnx");
    wait_until(
        Duration::from_secs(10),
        "the first download to start",
        || server.hits("/first.onnx") == 1,
    )
    .await;
    // While the first model downloads, three more requests, each well after the previous one.
    let second = switch("/second.onnx");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let third = switch("/third.onnx");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let newest = switch("/newest.onnx");
    for (which, answer) in [("second", second), ("third", third), ("first", first)] {
        let answer = answer.await.unwrap();
        assert_eq!(
            (answer.status, answer.code()),
            (422, "invalid_filter"),
            "{which}: {}",
            answer.json
        );
        assert!(
            answer.message().contains("superseded"),
            "{which}: {}",
            answer.message()
        );
    }
    let newest = newest.await.unwrap();
    assert_eq!(newest.status, 200, "{}", newest.json);
    let newest_url = server.url("/newest.onnx");
    assert_eq!(newest.json["filter"], newest_url.as_str());
    assert_eq!(current_filter(&pod.base).await, newest_url);
    assert_eq!(
        [
            server.hits("/first.onnx"),
            server.hits("/second.onnx"),
            server.hits("/third.onnx"),
            server.hits("/newest.onnx")
        ],
        [1, 0, 0, 1],
        "the superseded requests were never fetched"
    );
    pod.stop().await;
}

/// camera-pod's command line with the start-up model `url` (square manifest), trusting `server`.
fn start_up_args(
    server: &ModelServer,
    cache: &Path,
    url: &str,
    allowed: &[&str],
) -> camera_pod::config::Args {
    let manifest = Path::new(MODELS).join(SQUARE_MANIFEST);
    let mut argv = vec![
        "camera-pod",
        "--plain-http",
        "--model",
        url,
        "--sha256",
        SQUARE_SHA256,
        "--manifest",
        manifest.to_str().unwrap(),
        "--model-ca-file",
        server.ca_file.to_str().unwrap(),
        "--model-cache-dir",
        cache.to_str().unwrap(),
    ];
    argv.extend_from_slice(allowed);
    camera_pod::config::Args::parse_from(argv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_model_must_be_on_the_allow_list_too() {
    common::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start(
        dir.path(),
        vec![ModelRoute::new("/square.onnx", model_bytes(SQUARE))],
    );
    let cache = dir.path().join("cache");
    let url = server.url("/square.onnx");

    let args = start_up_args(&server, &cache, &url, &[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stopped = tokio::time::timeout(
        Duration::from_secs(30),
        camera_pod::server::serve(args, listener, std::future::pending()),
    )
    .await
    .expect("camera-pod stops");
    let error = format!("{:#}", anyhow::Error::from(stopped.expect_err("refused")));
    assert!(
        error.contains(&url)
            && error.contains("not allowed")
            && error.contains("--model-allowed-hosts"),
        "{error}"
    );
    assert_eq!(server.total_hits(), 0);

    // Listed: the pod downloads it and becomes ready with it.
    let args = start_up_args(
        &server,
        &cache,
        &url,
        &["--model-allowed-hosts", &server.host],
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pod = tokio::spawn(camera_pod::server::serve(args, listener, async move {
        let _ = stopped.await;
    }));
    let mut ready = serde_json::Value::Null;
    for _ in 0..200 {
        if let Ok(response) = reqwest::get(format!("{base}/readyz")).await
            && response.status() == 200
        {
            ready = response.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready["filter"], url.as_str(), "{ready}");
    assert_eq!(server.hits("/square.onnx"), 1);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), pod)
        .await
        .expect("camera-pod stops")
        .unwrap()
        .unwrap();
}
