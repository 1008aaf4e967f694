//! What a real camera-pod does with the signals its peer sends besides video: a closed peer
//! connection frees the camera at once; PLI and FIR bring a key frame from the encoder; lost
//! camera packets are NACKed; REMB sets the encoder's bitrate within the configured bounds; and
//! while the camera's frames are forwarded (passthrough), PLI and REMB go on to the camera.
//! (Answering NACKs from the send buffer is tested on the interceptor chain itself, in
//! `media::feedback`.)

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use camera_pod::codec::CodecKind;
use common::{TestPeer, TestServer, post_offer};
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};

/// Connects `peer` to `server` as `client` and waits until its data channel answers a ping.
async fn connect(server: &TestServer, peer: &mut TestPeer, client: &str) {
    let offer = peer.offer().await;
    let response = post_offer(&server.base, &offer, Some(client), None).await;
    assert_eq!(response.status(), 200, "{client}");
    let answer: serde_json::Value = response.json().await.unwrap();
    peer.accept(answer["sdp"].as_str().unwrap().to_owned())
        .await;
    peer.wait_connected().await;
    for attempt in 0..100 {
        if peer
            .channel
            .send_text(&format!("ping{attempt}"))
            .await
            .is_ok()
        {
            peer.next_message(|m| m.starts_with("pong")).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{client}: the data channel did not open");
}

async fn metric(server: &TestServer, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_peer_connection_frees_the_camera_at_once() {
    let server = TestServer::start(&[]).await;
    let mut alice = TestPeer::new(CodecKind::Vp8).await;
    connect(&server, &mut alice, "alice").await;
    alice.send_pattern(0, 10).await;

    let mut bob = TestPeer::new(CodecKind::Vp8).await;
    let bob_offer = bob.offer().await;
    let busy = post_offer(&server.base, &bob_offer, Some("bob"), None).await;
    assert_eq!(
        busy.status(),
        409,
        "the camera is alice's while she is connected"
    );

    alice.close().await;
    let closed = Instant::now();
    let mut status = 0;
    while closed.elapsed() < Duration::from_secs(3) {
        status = post_offer(&server.base, &bob_offer, Some("bob"), None)
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status,
        200,
        "a new client still refused {:?} after the first closed its connection",
        closed.elapsed()
    );
    bob.close().await;
    server.stop().await;
}

/// Key frames the client has received so far.
fn keyframes(peer: &TestPeer) -> usize {
    peer.reception
        .lock()
        .unwrap()
        .keyframes
        .iter()
        .filter(|k| **k)
        .count()
}

/// The encoder's answers are tested with passthrough transcoded; forwarded frames are the
/// camera's, and so are its key frames.
const TRANSCODE: &[&str] = &["--transcode-passthrough"];

async fn keyframe_requests_are_answered(codec: CodecKind) {
    let server = TestServer::start(TRANSCODE).await;
    let mut peer = TestPeer::new(codec).await;
    connect(&server, &mut peer, "camera").await;
    let requests = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let media_ssrc = peer.filtered_ssrc().await;
        let before = keyframes(&peer);
        assert_eq!(
            before, 1,
            "{codec:?}: only the first frame is a key frame unasked"
        );
        peer.send_feedback(vec![Box::new(PictureLossIndication {
            sender_ssrc: peer.camera_ssrc(),
            media_ssrc,
        })])
        .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let after_pli = keyframes(&peer);
        peer.send_feedback(vec![Box::new(FullIntraRequest {
            sender_ssrc: peer.camera_ssrc(),
            media_ssrc,
            fir: vec![FirEntry {
                ssrc: media_ssrc,
                sequence_number: 1,
            }],
        })])
        .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        (after_pli, keyframes(&peer))
    };
    let (_, (after_pli, after_fir)) = tokio::join!(peer.send_pattern(0, 130), requests);
    assert_eq!(
        after_pli, 2,
        "{codec:?}: a PLI brings exactly one key frame"
    );
    assert_eq!(
        after_fir, 3,
        "{codec:?}: a FIR brings exactly one key frame"
    );
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pli_and_fir_bring_a_vp8_key_frame() {
    keyframe_requests_are_answered(CodecKind::Vp8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pli_and_fir_bring_an_h264_key_frame() {
    keyframe_requests_are_answered(CodecKind::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_are_sent_for_lost_camera_packets() {
    let server = TestServer::start(&[]).await;
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    connect(&server, &mut peer, "camera").await;
    let lost = Mutex::new(Vec::new());
    // Two camera packets go missing about a second into the stream.
    peer.send_pattern_losing(0, 60, |i| (40..42).contains(&i), &lost)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lost = lost.into_inner().unwrap();
    assert_eq!(lost.len(), 2);
    let requested: Vec<u16> = peer
        .camera_feedback
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
        .inspect(|nack| assert_eq!(nack.media_ssrc, peer.camera_ssrc()))
        .flat_map(|nack| nack.nacks.iter().flat_map(NackPair::packet_list))
        .collect();
    for seq in &lost {
        assert!(
            requested.contains(seq),
            "camera-pod did not NACK lost packet {seq}: asked for {requested:?}"
        );
    }
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remb_sets_the_encoder_bitrate_within_the_bounds() {
    let server = TestServer::start(&[
        TRANSCODE[0],
        "--min-bitrate",
        "200000",
        "--max-bitrate",
        "2000000",
        "--start-bitrate",
        "1000000",
    ])
    .await;
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    connect(&server, &mut peer, "camera").await;
    const GAUGE: &str = "p2pcamera_pod_encoder_target_bitrate_bits_per_second";
    let estimates = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut seen = vec![metric(&server, GAUGE).await];
        let media_ssrc = peer.filtered_ssrc().await;
        for estimate in [350_000.0, 1_000.0, 50_000_000.0] {
            peer.send_feedback(vec![Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: peer.camera_ssrc(),
                bitrate: estimate,
                ssrcs: vec![media_ssrc],
            })])
            .await;
            tokio::time::sleep(Duration::from_millis(700)).await;
            seen.push(metric(&server, GAUGE).await);
        }
        seen
    };
    let (_, seen) = tokio::join!(peer.send_pattern(0, 90), estimates);
    assert_eq!(
        seen,
        [
            Some(1_000_000.0),
            Some(350_000.0),
            Some(200_000.0),
            Some(2_000_000.0)
        ],
        "start, REMB 350k, REMB below the minimum, REMB above the maximum"
    );
    peer.close().await;
    server.stop().await;
}

/// The camera feedback of `kind` the pod sent so far.
fn camera_feedback<T: Clone + 'static>(peer: &TestPeer) -> Vec<T> {
    peer.camera_feedback
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<T>().cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_frames_are_forwarded_pli_and_remb_go_on_to_the_camera() {
    let server = TestServer::start(&["--max-bitrate", "2000000"]).await;
    let mut peer = TestPeer::new(CodecKind::Vp8).await;
    connect(&server, &mut peer, "camera").await;
    let requests = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            metric(&server, "p2pcamera_pod_forwarding").await,
            Some(1.0),
            "passthrough within the limits is forwarded"
        );
        let media_ssrc = peer.filtered_ssrc().await;
        let plis_before = camera_feedback::<PictureLossIndication>(&peer).len();
        peer.send_feedback(vec![Box::new(PictureLossIndication {
            sender_ssrc: peer.camera_ssrc(),
            media_ssrc,
        })])
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let plis = camera_feedback::<PictureLossIndication>(&peer);
        for estimate in [350_000.0, 50_000_000.0] {
            peer.send_feedback(vec![Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: peer.camera_ssrc(),
                bitrate: estimate,
                ssrcs: vec![media_ssrc],
            })])
            .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        (plis_before, plis)
    };
    let (_, (plis_before, plis)) = tokio::join!(peer.send_pattern(0, 45), requests);
    assert_eq!(
        plis.len(),
        plis_before + 1,
        "the viewer's PLI reaches the camera: {plis:?}"
    );
    assert!(
        plis.iter().all(|pli| pli.media_ssrc == peer.camera_ssrc()),
        "{plis:?}"
    );
    let rembs: Vec<(f32, Vec<u32>)> = camera_feedback::<ReceiverEstimatedMaximumBitrate>(&peer)
        .into_iter()
        .map(|remb| (remb.bitrate, remb.ssrcs))
        .collect();
    assert_eq!(
        rembs,
        [
            (350_000.0, vec![peer.camera_ssrc()]),
            (2_000_000.0, vec![peer.camera_ssrc()])
        ],
        "the viewer's estimates reach the camera, within --max-bitrate"
    );
    assert_eq!(
        metric(&server, "p2pcamera_pod_encode_duration_seconds_count").await,
        Some(0.0),
        "nothing was encoded"
    );
    peer.close().await;
    server.stop().await;
}
