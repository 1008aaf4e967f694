//! What a client cannot make camera-pod hold, against a real server and real WebRTC peers: a
//! frame that never ends, pictures over the decode cap, a second data channel, an offer that
//! never connects, a connected camera that stopped sending (taken over by the next offer, while
//! one that sends keeps the camera), an offer naming many ICE candidates; and the HTTP server's
//! limits (slow clients, connection cap, /metrics on its own listener, a token off loopback).

mod common;

use std::time::{Duration, Instant};

use camera_pod::codec::CodecKind;
use camera_pod::media::rtp::MAX_FRAME_BYTES;
use camera_pod::media::sdp::MAX_REMOTE_CANDIDATES;
use common::raw_http::{self, closed_within};
use common::{TestPeer, TestServer, metric_value, post_offer};
use tokio::net::TcpStream;
use webrtc::data_channel::DataChannelEvent;

async fn metrics(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = metrics(server).await;
    metric_value(&text, name).unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Offers `peer`'s camera as `client`, accepts the answer and waits for the connection.
async fn connect(server: &TestServer, peer: &mut TestPeer, client: &str) {
    let offer = peer.offer().await;
    let response = post_offer(&server.base, &offer, Some(client), None).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    peer.accept(answer["sdp"].as_str().unwrap().to_owned())
        .await;
    peer.wait_connected().await;
}

/// Pings on the peer's data channel until the pod answers (the channel opens shortly after the
/// connection).
async fn ping(peer: &mut TestPeer, tag: &str) {
    for _ in 0..50 {
        if peer.channel.send_text(&format!("ping{tag}")).await.is_ok() {
            let pong = peer.next_message(|m| m.starts_with("pong")).await;
            assert_eq!(pong, format!("pong{tag}"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the data channel never opened");
}

/// Sends pattern frames from `first` and returns how many came back filtered.
async fn frames_back(peer: &TestPeer, first: u32, count: u32) -> usize {
    let before = peer.received.lock().unwrap().len();
    peer.send_pattern(first, count).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    peer.received.lock().unwrap().len() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_never_ends_is_dropped_once_and_the_session_goes_on() {
    let server = TestServer::start(&[]).await;
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    connect(&server, &mut peer, "flood").await;
    // The camera's first RTP is the flood: a key frame that never ends, half as much again as
    // the cap so that the cap is reached even if loopback loses some. (That the video resumes
    // at the next key frame is `media::rtp`'s unit test: the test camera starts a new sequence
    // for every batch it sends, which SRTP replay protection may refuse.)
    peer.send_endless_frame(MAX_FRAME_BYTES * 3 / 2).await;
    let mut dropped = 0.0;
    for _ in 0..50 {
        dropped = metric(&server, "p2pcamera_pod_frames_over_assembly_cap_total").await;
        if dropped > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dropped, 1.0, "dropped once, when it reached the cap");
    ping(&mut peer, "after-flood").await;
    let status: serde_json::Value = reqwest::get(format!("{}/status", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["camera_connected"], true, "{status}");
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_over_the_decode_cap_are_dropped_undecoded() {
    for codec in [CodecKind::Vp8, CodecKind::H264] {
        // The test camera sends 320x240 pictures; the cap is 200x150.
        let server =
            TestServer::start(&["--max-decode-width", "200", "--max-decode-height", "150"]).await;
        let mut peer = TestPeer::new(codec).await;
        connect(&server, &mut peer, "large").await;
        assert_eq!(frames_back(&peer, 0, 45).await, 0, "{codec:?}");
        let text = metrics(&server).await;
        let over = metric_value(&text, "p2pcamera_pod_frames_over_max_decode_size_total").unwrap();
        assert!(over >= 30.0, "{codec:?}: {over} frames refused: {text}");
        assert_eq!(
            metric_value(&text, "p2pcamera_pod_frames_in_total"),
            Some(0.0),
            "{codec:?}: nothing was decoded"
        );
        peer.close().await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_data_channel_is_closed_and_closing_it_leaves_the_camera_busy() {
    let server = TestServer::start(&[]).await;
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    connect(&server, &mut peer, "first-client").await;
    ping(&mut peer, "1").await;

    let second = peer.pc.create_data_channel("second", None).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = second.poll().await {
            if matches!(event, DataChannelEvent::OnClose) {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the pod did not close the second data channel"
    );
    // The client closes its side too (the pod already did).
    let _ = second.close().await;
    drop(second);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The camera is still this peer's while it sends: another client is refused, and the
    // session goes on.
    let mut other = TestPeer::new(CodecKind::Vp8).await;
    let other_offer = other.offer().await;
    let (back, response) = tokio::join!(frames_back(&peer, 0, 45), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        post_offer(&server.base, &other_offer, Some("other"), None).await
    });
    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "camera_busy", "{body}");
    assert!(back >= 20, "only {back} of 45 frames came back");
    ping(&mut peer, "2").await;
    assert_eq!(
        metric(&server, "p2pcamera_pod_data_channels_refused_total").await,
        1.0
    );
    let status: serde_json::Value = reqwest::get(format!("{}/status", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["camera_connected"], true, "{status}");

    for peer in [peer, other] {
        peer.close().await;
    }
    server.stop().await;
}

/// Retries `offer` from `client` until it is answered; returns how long that took and the
/// answer's SDP.
async fn until_answered(server: &TestServer, offer: &str, client: &str) -> (Duration, String) {
    let start = Instant::now();
    loop {
        let response = post_offer(&server.base, offer, Some(client), None).await;
        match response.status().as_u16() {
            200 => {
                let answer: serde_json::Value = response.json().await.unwrap();
                return (start.elapsed(), answer["sdp"].as_str().unwrap().to_owned());
            }
            409 => {}
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the camera stayed busy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_that_never_connect_hold_the_camera_only_until_the_connect_deadline() {
    let deadline = Duration::from_secs(1);
    let slack = Duration::from_millis(1500);
    let server = TestServer::start(&["--connect-deadline", "1"]).await;
    // Answered, but this client never starts ICE.
    let mut silent = TestPeer::new(CodecKind::Vp8).await;
    let response = post_offer(&server.base, &silent.offer().await, Some("silent"), None).await;
    assert_eq!(response.status(), 200);
    let answered = Instant::now();

    // Another client that never connects either: refused while the first holds the camera,
    // answered once the first one's deadline is over.
    let mut also_silent = TestPeer::new(CodecKind::Vp8).await;
    let (waited, _) = until_answered(&server, &also_silent.offer().await, "also-silent").await;
    assert!(
        answered.elapsed() >= deadline - Duration::from_millis(100),
        "answered {:?} after the first offer, before its deadline",
        answered.elapsed()
    );
    assert!(
        waited <= deadline + slack,
        "the first offer held the camera {waited:?}"
    );

    // It holds the camera no longer than its own deadline: a real client gets it then.
    let mut real = TestPeer::new(CodecKind::Vp8).await;
    let (waited, answer) = until_answered(&server, &real.offer().await, "real").await;
    assert!(
        waited <= deadline + slack,
        "the second offer held the camera {waited:?}"
    );
    real.accept(answer).await;
    real.wait_connected().await;

    // A client that connects keeps the camera past the deadline while its video flows.
    let mut intruder = TestPeer::new(CodecKind::Vp8).await;
    let intruder_offer = intruder.offer().await;
    let (back, response) = tokio::join!(frames_back(&real, 0, 60), async {
        tokio::time::sleep(deadline + Duration::from_millis(500)).await;
        post_offer(&server.base, &intruder_offer, Some("intruder"), None).await
    });
    assert_eq!(response.status(), 409, "a connected camera is kept");
    assert!(back >= 20, "only {back} of 60 frames came back");
    assert_eq!(
        metric(&server, "p2pcamera_pod_peer_connect_timeouts_total").await,
        2.0
    );

    for peer in [silent, also_silent, real, intruder] {
        peer.close().await;
    }
    server.stop().await;
}

/// `--takeover-after`'s default.
const TAKEOVER_AFTER: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_stops_sending_is_taken_over_by_the_next_offer_after_a_second() {
    let server = TestServer::start(&[]).await;
    let mut gone = TestPeer::new(CodecKind::Vp8).await;
    connect(&server, &mut gone, "gone").await;
    let mut back = TestPeer::new(CodecKind::Vp8).await;
    let back_offer = back.offer().await;
    // Its video flows, then stops as if the laptop slept; ICE and DTLS stay up.
    gone.send_pattern(0, 30).await;
    let stopped = Instant::now();
    let response = post_offer(&server.base, &back_offer, Some("back"), None).await;
    assert_eq!(
        response.status(),
        409,
        "taken over {:?} after its last frame",
        stopped.elapsed()
    );

    let (_, answer) = until_answered(&server, &back_offer, "back").await;
    let silent = stopped.elapsed();
    assert!(
        silent >= TAKEOVER_AFTER - Duration::from_millis(50),
        "taken over after only {silent:?} without media"
    );
    assert!(
        silent <= TAKEOVER_AFTER + Duration::from_millis(700),
        "a silent camera held on for {silent:?}"
    );
    back.accept(answer).await;
    back.wait_connected().await;
    let returned = frames_back(&back, 0, 30).await;
    assert!(
        returned >= 20,
        "only {returned} of 30 frames came back to the new client"
    );
    assert_eq!(
        metric(&server, "p2pcamera_pod_peer_takeovers_total").await,
        1.0
    );
    // The pod closed the silent connection.
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        gone.connected.wait_for(|connected| !connected),
    )
    .await
    .is_ok();
    assert!(closed, "the taken-over connection is still connected");

    for peer in [gone, back] {
        peer.close().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_keeps_sending_keeps_it_against_every_new_offer() {
    let server = TestServer::start(&[]).await;
    let mut live = TestPeer::new(CodecKind::Vp8).await;
    connect(&server, &mut live, "live").await;
    let mut other = TestPeer::new(CodecKind::Vp8).await;
    let other_offer = other.offer().await;
    // A second live tab offers every 250 ms for 2.5 s, well past the takeover time.
    let (returned, statuses) = tokio::join!(frames_back(&live, 0, 90), async {
        let mut statuses = Vec::new();
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let response = post_offer(&server.base, &other_offer, Some("other"), None).await;
            statuses.push(response.status().as_u16());
        }
        statuses
    });
    assert_eq!(statuses, [409; 10], "a sending camera was taken over");
    assert!(returned >= 60, "only {returned} of 90 frames came back");
    assert_eq!(
        metric(&server, "p2pcamera_pod_peer_takeovers_total").await,
        0.0
    );

    for peer in [live, other] {
        peer.close().await;
    }
    server.stop().await;
}

/// `count` extra host candidates at distinct documentation addresses, as SDP lines.
fn candidate_lines(count: usize, address: impl Fn(usize) -> String) -> String {
    (0..count)
        .map(|i| {
            format!(
                "a=candidate:{} 1 udp 2122260223 {} {} typ host\r\n",
                900 + i,
                address(i),
                40_000 + i
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_naming_too_many_or_non_unicast_candidates_are_refused() {
    let server = TestServer::start(&[]).await;
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    let offer = peer.offer().await;
    let many = format!(
        "{offer}{}",
        candidate_lines(MAX_REMOTE_CANDIDATES + 1, |i| format!("192.0.2.{}", i + 1))
    );
    let multicast = format!(
        "{offer}{}",
        candidate_lines(1, |_| "239.255.255.250".into())
    );
    for (sdp, expected) in [
        (many, "at most 16 are accepted"),
        (multicast, "239.255.255.250 is not a unicast address"),
    ] {
        let response = post_offer(&server.base, &sdp, None, None).await;
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_sdp", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
    assert_eq!(
        metric(
            &server,
            "p2pcamera_pod_offers_total{result=\"invalid_sdp\"}"
        )
        .await,
        2.0
    );
    // The browser's own offer, with its few candidates, is answered.
    connect(&server, &mut peer, "honest").await;
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_disconnected_within_the_request_timeout_while_others_are_served() {
    let timeout = Duration::from_secs(1);
    let server = TestServer::start(&["--request-timeout", "1"]).await;
    let address = raw_http::address(&server.base).to_owned();
    // Headers a byte at a time, for far longer than the timeout.
    let slow_headers = {
        let address = address.clone();
        tokio::spawn(async move {
            let endless = format!(
                "GET /healthz HTTP/1.1\r\nHost: camera\r\nX-Slow: {}",
                "a".repeat(200)
            );
            raw_http::trickle(
                &address,
                b"",
                endless.as_bytes(),
                Duration::from_millis(50),
                Duration::from_secs(6),
            )
            .await
        })
    };
    // Complete headers, then a body a byte at a time.
    let slow_body = {
        let address = address.clone();
        tokio::spawn(async move {
            let head = "POST /offer HTTP/1.1\r\nHost: camera\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n";
            raw_http::trickle(
                &address,
                head.as_bytes(),
                &[b' '; 200],
                Duration::from_millis(50),
                Duration::from_secs(6),
            )
            .await
        })
    };
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let health = client
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slack = Duration::from_millis(1500);
    let headers = slow_headers.await.unwrap();
    let closed = headers
        .closed_after
        .expect("the slow-headers client is still connected");
    assert!(
        closed >= timeout - Duration::from_millis(100) && closed <= timeout + slack,
        "closed after {closed:?}"
    );
    assert!(!headers.answer.contains("200 OK"), "{}", headers.answer);

    let body = slow_body.await.unwrap();
    let closed = body
        .closed_after
        .expect("the slow-body client is still connected");
    assert!(closed <= timeout + slack, "closed after {closed:?}");
    assert!(body.answer.starts_with("HTTP/1.1 400"), "{}", body.answer);
    assert!(
        body.answer.contains("\"bad_body\"") && body.answer.contains("did not arrive within 1 s"),
        "{}",
        body.answer
    );
    assert_eq!(
        metric(&server, "p2pcamera_pod_http_request_timeouts_total").await,
        1.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_until_one_is_free() {
    let server = TestServer::start(&["--max-connections", "3"]).await;
    let address = raw_http::address(&server.base).to_owned();
    // The start-up readiness client's connection closes first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        assert!(
            !closed_within(&mut stream, Duration::from_millis(200)).await,
            "an idle connection within the cap was closed"
        );
        idle.push(stream);
    }
    let mut refused = TcpStream::connect(&address).await.unwrap();
    assert!(
        closed_within(&mut refused, Duration::from_secs(2)).await,
        "a connection beyond the cap was kept"
    );
    let client = reqwest::Client::new();
    assert!(
        client
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .is_err()
    );

    drop(idle.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Read to the end, so the next request reuses this connection rather than opening a fourth.
    let health = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    health.bytes().await.unwrap();
    // The metrics read is not what is tested: on a loaded machine the freed slot may still be
    // counted when it opens its own connection, so it is retried for a moment.
    let mut text = None;
    for _ in 0..20 {
        match client.get(format!("{}/metrics", server.base)).send().await {
            Ok(response) => {
                text = Some(response.text().await.unwrap());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let text = text.expect("metrics within 2 s once a slot is free");
    let refused_count =
        metric_value(&text, "p2pcamera_pod_http_connections_refused_total").unwrap();
    assert!(refused_count >= 2.0, "{text}");
    drop(idle);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_to_their_own_listener_when_one_is_given() {
    let port = p2pcamera_tests::free_port().unwrap();
    let server = TestServer::start(&["--metrics-listen", &format!("127.0.0.1:{port}")]).await;
    let on_signaling = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap();
    assert_eq!(on_signaling.status(), 404);
    let own = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert!(
        own.text()
            .await
            .unwrap()
            .contains("p2pcamera_pod_frames_in_total 0")
    );
    for path in ["/healthz", "/status", "/"] {
        let other = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .unwrap();
        assert_eq!(other.status(), 404, "{path} on the metrics listener");
    }
    server.stop().await;
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .is_err(),
        "the metrics listener stops with the server"
    );
}

#[test]
fn a_listener_off_loopback_without_a_token_is_a_clear_start_up_error() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_camera-pod"))
        .args(["--listen", "0.0.0.0:0", "--filter", "passthrough"])
        .env_remove(p2pcamera_api::pod_env::TOKEN)
        .env_remove(p2pcamera_api::pod_env::TOKEN_FILE)
        .env_remove(p2pcamera_api::pod_env::INSECURE_NO_TOKEN)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a loopback address, without a bearer token")
            && stderr.contains("--insecure-no-token"),
        "{stderr}"
    );
}
