//! A real camera-pod (passthrough) and an in-process WebRTC peer: frames sent as VP8 or H264
//! come back as the same pictures, with the same RTP timestamps, forwarded as they came or
//! transcoded (`--transcode-passthrough`), and the pod times each one; a filter switched on and
//! off mid-stream changes the route at key frames without a broken picture; the data channel
//! answers pings and reports stats; the session's limits (picture size, frame rate, codecs) hold.

mod common;

use std::time::Duration;

use camera_pod::codec::CodecKind;
use camera_pod::media::limits::Downscaler;
use common::{TestPeer, TestServer, luma_mad, metric_value, post_offer, round_trip_unchanged};

/// How passthrough frames come back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Passthrough {
    Forwarded,
    Transcoded,
}

async fn loop_back(codec: CodecKind, passthrough: Passthrough) {
    let flags: &[&str] = match passthrough {
        Passthrough::Forwarded => &[],
        Passthrough::Transcoded => &["--transcode-passthrough"],
    };
    let server = TestServer::start(flags).await;
    let mut peer = TestPeer::new(codec).await;
    let offer = peer.offer().await;
    let response = post_offer(&server.base, &offer, Some("loop"), None).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["type"], "answer");
    let answer_sdp = answer["sdp"].as_str().unwrap().to_owned();
    assert!(
        answer_sdp.contains("a=candidate:"),
        "answer carries its candidates: {answer_sdp}"
    );
    assert!(
        answer_sdp.contains("a=sendrecv"),
        "filtered video returns on the same transceiver"
    );
    peer.accept(answer_sdp).await;
    peer.wait_connected().await;

    let (sent, received) = round_trip_unchanged(&peer, 90, 45, &format!("{codec:?}")).await;
    // The picture moves, so matching its own source (and not a neighbour) is meaningful.
    let last = received.last().unwrap();
    let other = sent
        .iter()
        .find(|s| s.rtp_timestamp + 30 * 3000 == last.rtp_timestamp)
        .or(sent.first())
        .unwrap();
    assert!(
        luma_mad(other, last) > 6.0,
        "the pattern moves between frames"
    );

    let status: serde_json::Value = reqwest::get(format!("{}/status", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["camera_connected"], true, "{status}");
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("p2pcamera_pod_peer_connection_state{state=\"connected\"} 1"),
        "{metrics}"
    );
    // Loopback host candidates on both sides: a direct connection.
    assert_eq!(
        metric_value(&metrics, "p2pcamera_pod_connections_total{path=\"direct\"}"),
        Some(1.0),
        "{metrics}"
    );
    // Every frame the peer got back was encoded and sent by the pod.
    let frames_out = metric_value(&metrics, "p2pcamera_pod_frames_out_total")
        .unwrap_or_else(|| panic!("no p2pcamera_pod_frames_out_total: {metrics}"));
    assert!(
        frames_out >= received.len() as f64,
        "{frames_out} frames out, {} received: {metrics}",
        received.len()
    );
    // Each of them was timed from its camera frame's first packet to its own last packet.
    let timed = metric_value(&metrics, "p2pcamera_pod_frame_latency_seconds_count").unwrap();
    let total = metric_value(&metrics, "p2pcamera_pod_frame_latency_seconds_sum").unwrap();
    assert!(
        timed >= received.len() as f64 && timed <= frames_out,
        "{timed} frames timed, {} received: {metrics}",
        received.len()
    );
    let mean = total / timed;
    assert!(
        mean > 0.0 && mean < 0.5,
        "{codec:?}: {mean} s per frame in the pod"
    );
    let forwarded = metric_value(&metrics, "p2pcamera_pod_frames_forwarded_total").unwrap();
    let encoded = metric_value(&metrics, "p2pcamera_pod_encode_duration_seconds_count").unwrap();
    let decoded = metric_value(&metrics, "p2pcamera_pod_decode_duration_seconds_count").unwrap();
    match passthrough {
        Passthrough::Forwarded => {
            assert!(
                forwarded >= received.len() as f64 && encoded == 0.0 && decoded == 0.0,
                "{codec:?}: {forwarded} forwarded, {decoded} decoded, {encoded} encoded: {metrics}"
            );
            assert_eq!(
                metric_value(&metrics, "p2pcamera_pod_forwarding"),
                Some(1.0)
            );
        }
        Passthrough::Transcoded => assert!(
            forwarded == 0.0 && encoded >= received.len() as f64,
            "{codec:?}: {forwarded} forwarded, {encoded} encoded: {metrics}"
        ),
    }

    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_frames_come_back_unchanged() {
    loop_back(CodecKind::Vp8, Passthrough::Forwarded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_frames_come_back_unchanged() {
    loop_back(CodecKind::H264, Passthrough::Forwarded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoded_vp8_frames_come_back_unchanged() {
    loop_back(CodecKind::Vp8, Passthrough::Transcoded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoded_h264_frames_come_back_unchanged() {
    loop_back(CodecKind::H264, Passthrough::Transcoded).await;
}

/// Mean of a plane.
fn mean(plane: &[u8]) -> f64 {
    plane.iter().map(|&v| f64::from(v)).sum::<f64>() / plane.len() as f64
}

/// Whether a picture is green all over (the background colour replaced everything): a green
/// mean, and luma within 10 of the mean nearly everywhere. A ghost of the camera's moving square
/// (a frame decoded against the wrong reference) is over 4 % of the picture.
fn is_flat_green(frame: &camera_pod::frame::VideoFrame) -> bool {
    let luma = mean(&frame.y);
    let flat = frame
        .y
        .iter()
        .filter(|&&v| (f64::from(v) - luma).abs() <= 10.0)
        .count() as f64
        / frame.y.len() as f64;
    mean(&frame.v) < 60.0 && mean(&frame.u) < 80.0 && flat > 0.99
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_switched_on_and_off_changes_the_route_at_key_frames_without_a_broken_picture() {
    let server = TestServer::start(&[]).await;
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    let offer = peer.offer().await;
    connect(&server, &mut peer, &offer).await;
    // Forwarded passthrough, then a green background (the pattern has no person: all of it is
    // background), passthrough again and green again: the encoder's first frame after forwarding
    // must be a key frame. The peer sends a key frame every 30 frames.
    let filter = |spec: &'static str| {
        let (http, base) = (server.http.clone(), server.base.clone());
        async move {
            let response = http
                .post(format!("{base}/filter"))
                .header("content-type", "application/json")
                .body(spec)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{spec}");
        }
    };
    const GREEN: &str = r##"{"filter":"selfie-replace","color":"#00ff00"}"##;
    let switches = async {
        for spec in [GREEN, r#"{"filter":"passthrough"}"#, GREEN] {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            filter(spec).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (sent, ()) = tokio::join!(peer.send_pattern(0, 240), switches);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = peer.received.lock().unwrap().clone();
    assert!(received.len() >= 180, "{} frames came back", received.len());
    // Every frame is the camera's picture or a green one: none is broken by a frame that
    // refers to pictures the peer never got.
    let mut phases = Vec::new();
    for frame in &received {
        let original = sent
            .iter()
            .find(|s| s.rtp_timestamp == frame.rtp_timestamp)
            .expect("a timestamp that was sent");
        let green = is_flat_green(frame);
        let unchanged = luma_mad(original, frame) < 6.0;
        assert!(
            green ^ unchanged,
            "frame {} is neither the camera's picture nor green (luma differs by {:.1}, V {:.0})",
            frame.rtp_timestamp,
            luma_mad(original, frame),
            mean(&frame.v)
        );
        if phases.last() != Some(&green) {
            phases.push(green);
        }
    }
    assert_eq!(
        phases,
        [false, true, false, true],
        "camera, filtered, camera, filtered"
    );
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let switched = |route: &str| {
        metric_value(
            &metrics,
            &format!("p2pcamera_pod_route_switches_total{{route=\"{route}\"}}"),
        )
    };
    assert_eq!(
        (switched("forward"), switched("transcode")),
        (Some(2.0), Some(2.0)),
        "{metrics}"
    );
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_channel_answers_pings_switches_filters_and_sends_stats() {
    let server = TestServer::start(&[]).await;
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    let offer = peer.offer().await;
    let response = post_offer(&server.base, &offer, None, None).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    peer.accept(answer["sdp"].as_str().unwrap().to_owned())
        .await;
    peer.wait_connected().await;
    // The channel opens shortly after the connection.
    let mut pong = None;
    for attempt in 0..50 {
        if peer
            .channel
            .send_text(&format!("ping{attempt}"))
            .await
            .is_ok()
        {
            pong = Some(peer.next_message(|m| m.starts_with("pong")).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pong = pong.expect("data channel opened");
    assert!(
        pong.starts_with("pong") && pong[4..].parse::<u32>().is_ok(),
        "{pong}"
    );

    let sender = tokio::spawn(async move {
        let _ = peer.send_pattern(0, 60).await;
        peer
    });
    let mut peer = sender.await.unwrap();
    // The stats of a second in which frames went through the pod.
    let stats = peer
        .next_message(|m| m.contains("\"stats\"") && !m.contains("\"pod_latency_ms\":null"))
        .await;
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    for key in ["input_fps", "output_fps", "model_ms", "dropped_frames"] {
        assert!(stats[key].is_number(), "{key} in {stats}");
    }
    assert_eq!(stats["filter"], "passthrough");
    assert_eq!(
        stats["forwarded"], true,
        "passthrough is forwarded: {stats}"
    );
    // Timed (not null); a forwarded frame spends tens of microseconds in the pod, which the
    // stats' 0.1 ms resolution may show as 0.0 (the loop-back tests check the unrounded sum).
    let pod_latency_ms = stats["pod_latency_ms"].as_f64().unwrap();
    assert!(
        (0.0..500.0).contains(&pod_latency_ms),
        "the pod took {pod_latency_ms} ms per frame: {stats}"
    );

    peer.channel
        .send_text(r#"{"filter":"no-such-filter"}"#)
        .await
        .unwrap();
    let reply = filter_reply(&mut peer).await;
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("no-such-filter"),
        "{reply}"
    );
    // A background picture on the pod's disk would load fine, but the network may not name it.
    let dir = tempfile::tempdir().unwrap();
    let picture = dir.path().join("background.png");
    image::RgbImage::from_pixel(32, 24, image::Rgb([200, 30, 30]))
        .save(&picture)
        .unwrap();
    let spec = serde_json::json!({"filter": "selfie-replace", "image": picture});
    peer.channel.send_text(&spec.to_string()).await.unwrap();
    let reply = filter_reply(&mut peer).await;
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["code"], "invalid_filter", "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("may not read files on the pod"),
        "{reply}"
    );
    peer.channel
        .send_text(r#"{"filter":"passthrough"}"#)
        .await
        .unwrap();
    let reply = filter_reply(&mut peer).await;
    assert_eq!(
        reply,
        serde_json::json!({"type":"filter","ok":true,"filter":"passthrough"})
    );

    peer.close().await;
    server.stop().await;
}

/// Connects `peer` to `server` with its `offer` and returns the answer's SDP.
async fn connect(server: &TestServer, peer: &mut TestPeer, offer: &str) -> String {
    let response = post_offer(&server.base, offer, None, None).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    let answer = answer["sdp"].as_str().unwrap().to_owned();
    peer.accept(answer.clone()).await;
    peer.wait_connected().await;
    answer
}

/// The offer's video codecs include `first`, then `second`.
fn assert_offers_in_order(offer: &str, first: &str, second: &str) {
    let at = |codec: &str| {
        offer
            .find(codec)
            .unwrap_or_else(|| panic!("the offer lacks {codec}: {offer}"))
    };
    assert!(at(first) < at(second), "{first} is not preferred: {offer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_gets_no_larger_or_faster_pictures_than_allowed() {
    let limits = [
        "--max-width",
        "160",
        "--max-height",
        "160",
        "--max-fps",
        "15",
    ];
    let server = TestServer::start(&limits).await;
    let mut peer = TestPeer::new(CodecKind::H264).await;
    let offer = peer.offer().await;
    connect(&server, &mut peer, &offer).await;
    // 320x240 at 30 fps for 3 s.
    let sent = peer.send_pattern(0, 90).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = peer.received.lock().unwrap().clone();
    assert!(
        (20..=46).contains(&received.len()),
        "{} of 90 frames came back; at 15 fps at most 45 should",
        received.len()
    );
    let mut downscaler = Downscaler::default();
    for frame in &received {
        assert_eq!(
            (frame.width, frame.height),
            (160, 120),
            "scaled to fit 160x160 with the camera's 4:3 aspect ratio"
        );
        let original = sent
            .iter()
            .find(|s| s.rtp_timestamp == frame.rtp_timestamp)
            .unwrap_or_else(|| panic!("returned timestamp {} was never sent", frame.rtp_timestamp));
        let expected = downscaler.scale(original, 160, 120);
        let mad = luma_mad(&expected, frame);
        assert!(
            mad < 6.0,
            "frame {} differs by {mad:.2}",
            frame.rtp_timestamp
        );
    }
    for pair in received.windows(2) {
        let spacing = pair[1].rtp_timestamp.wrapping_sub(pair[0].rtp_timestamp);
        assert!(
            spacing >= 6000,
            "frames {spacing} ticks apart, closer than 15 fps"
        );
    }
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let over = metric_value(&metrics, "p2pcamera_pod_frames_over_max_fps_total").unwrap();
    assert!(
        (40.0..=46.0).contains(&over),
        "{over} frames dropped for the rate: {metrics}"
    );
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_accepted_codecs_are_answered() {
    let server = TestServer::start(&["--codecs", "H264"]).await;
    let mut vp8_only = TestPeer::new(CodecKind::Vp8).await;
    let response = post_offer(&server.base, &vp8_only.offer().await, None, None).await;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_codec", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("VP8") && message.contains("offer H264"),
        "{message}"
    );
    vp8_only.close().await;

    // VP8 preferred, H264 also offered: the pod answers with H264 alone and the video flows.
    let mut peer = TestPeer::offering(&[CodecKind::Vp8, CodecKind::H264], CodecKind::H264).await;
    let offer = peer.offer().await;
    assert_offers_in_order(&offer, "VP8/90000", "H264/90000");
    let answer = connect(&server, &mut peer, &offer).await;
    assert!(answer.contains("H264/90000"), "{answer}");
    assert!(
        !answer.contains("VP8"),
        "the answer names a codec the pod does not accept: {answer}"
    );
    peer.send_pattern(0, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let returned = peer.received.lock().unwrap().len();
    assert!(returned >= 10, "{returned} of 30 frames came back");
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offerers_order_decides_among_accepted_codecs() {
    // The pod lists VP8 first; the offer prefers H264 and sends it.
    let server = TestServer::start(&["--codecs", "VP8,H264"]).await;
    let mut peer = TestPeer::offering(&[CodecKind::H264, CodecKind::Vp8], CodecKind::H264).await;
    let offer = peer.offer().await;
    assert_offers_in_order(&offer, "H264/90000", "VP8/90000");
    connect(&server, &mut peer, &offer).await;
    peer.send_pattern(0, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let returned = peer.received.lock().unwrap().len();
    assert!(returned >= 10, "{returned} of 30 H264 frames came back");
    peer.close().await;
    server.stop().await;
}

/// The pod's next answer to a filter change on the data channel.
async fn filter_reply(peer: &mut common::TestPeer) -> serde_json::Value {
    let message = peer
        .next_message(|m| m.contains("\"type\":\"filter\""))
        .await;
    serde_json::from_str(&message).unwrap()
}
