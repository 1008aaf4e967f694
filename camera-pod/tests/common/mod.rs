//! An in-process WebRTC client built on the same crates as camera-pod, and helpers to run a
//! real camera-pod server on 127.0.0.1:0.

#![allow(dead_code)] // Each test binary uses a different part of this module.

pub mod model_server;
pub mod raw_http;
mod rtp_flood;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use camera_pod::codec::{self, CodecKind};
use camera_pod::frame::VideoFrame;
use camera_pod::media::rtp::{Assembly, FrameAssembler, RtpPacketizer};
use camera_pod::media::sdp::H264_FMTP;
use clap::Parser;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
};

pub const WIDTH: u32 = 320;
pub const HEIGHT: u32 = 240;
/// Payload type the test client offers `codec` with.
pub fn payload_type(codec: CodecKind) -> u8 {
    match codec {
        CodecKind::Vp8 => 96,
        CodecKind::H264 => 102,
    }
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A camera-pod server running in this process with the passthrough filter.
pub struct TestServer {
    pub base: String,
    /// A client for the server (over HTTPS: one that trusts any certificate) that keeps no
    /// connection open between requests.
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts camera-pod (passthrough, plain HTTP on loopback) with `extra` flags and waits until
    /// it is ready.
    pub async fn start(extra: &[&str]) -> TestServer {
        let server = Self::spawn(extra);
        server.wait_ready().await;
        server
    }

    /// Starts camera-pod like [`Self::start`] without waiting for anything.
    pub fn spawn(extra: &[&str]) -> TestServer {
        install_crypto();
        let mut argv = vec!["--plain-http"];
        argv.extend_from_slice(extra);
        Self::spawn_with(&argv, "http", reqwest::Client::builder())
    }

    /// Starts camera-pod (passthrough) over HTTPS with the certificate and key files `tls` and
    /// `extra` flags, without waiting for anything.
    pub fn spawn_https(tls: (&std::path::Path, &std::path::Path), extra: &[&str]) -> TestServer {
        let (cert, key) = (tls.0.to_str().unwrap(), tls.1.to_str().unwrap());
        install_crypto();
        let mut argv = vec!["--tls-cert", cert, "--tls-key", key];
        argv.extend_from_slice(extra);
        let http = reqwest::Client::builder().danger_accept_invalid_certs(true);
        Self::spawn_with(&argv, "https", http)
    }

    fn spawn_with(extra: &[&str], scheme: &str, http: reqwest::ClientBuilder) -> TestServer {
        // No idle connection kept: tests count the server's connections.
        let http = http.pool_max_idle_per_host(0).build().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut argv = vec!["camera-pod", "--filter", "passthrough"];
        argv.extend_from_slice(extra);
        let args = camera_pod::config::Args::parse_from(argv);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(error) = camera_pod::server::serve(args, listener, shutdown).await {
                panic!("server failed: {error}");
            }
        });
        TestServer {
            base: format!("{scheme}://{addr}"),
            http,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Waits until `/readyz` answers 200 (at most 5 s).
    pub async fn wait_ready(&self) {
        for _ in 0..100 {
            if let Ok(response) = self.http.get(format!("{}/readyz", self.base)).send().await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not become ready");
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops")
                .unwrap();
        }
    }
}

/// A test picture: a gradient with a bright square that moves with `index`.
pub fn pattern(index: u32) -> VideoFrame {
    let mut frame = VideoFrame::filled(WIDTH, HEIGHT, 0, 128, 128);
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            frame.y[(y * WIDTH + x) as usize] = (40 + (x * 120 / WIDTH) + (y * 40 / HEIGHT)) as u8;
        }
    }
    let (sx, sy) = ((index * 4) % (WIDTH - 64), (index * 2) % (HEIGHT - 64));
    for y in sy..sy + 64 {
        for x in sx..sx + 64 {
            frame.y[(y * WIDTH + x) as usize] = 230;
        }
    }
    let cw = frame.chroma_width();
    for y in 0..frame.chroma_height() {
        for x in 0..cw {
            frame.u[(y * cw + x) as usize] = (90 + x * 60 / cw) as u8;
            frame.v[(y * cw + x) as usize] = (160 - y * 50 / frame.chroma_height()) as u8;
        }
    }
    frame
}

/// Sends `count` pattern frames through `peer`, waits half a second, and checks that at least
/// `min_back` came back, each within a mean luma difference of 6 of the frame sent with its RTP
/// timestamp (the pod passed them through); `what` names the case in failures. Returns what was
/// sent and what came back.
pub async fn round_trip_unchanged(
    peer: &TestPeer,
    count: u32,
    min_back: usize,
    what: &str,
) -> (Vec<VideoFrame>, Vec<VideoFrame>) {
    let sent = peer.send_pattern(0, count).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let received = peer.received.lock().unwrap().clone();
    assert!(
        received.len() >= min_back,
        "{what}: only {} of {} frames came back",
        received.len(),
        sent.len()
    );
    for frame in &received {
        let original = sent
            .iter()
            .find(|s| s.rtp_timestamp == frame.rtp_timestamp)
            .unwrap_or_else(|| panic!("returned timestamp {} was never sent", frame.rtp_timestamp));
        let mad = luma_mad(original, frame);
        assert!(
            mad < 6.0,
            "{what}: frame {} differs by {mad:.2} on average",
            frame.rtp_timestamp
        );
    }
    (sent, received)
}

/// Mean absolute difference of the luma planes.
pub fn luma_mad(a: &VideoFrame, b: &VideoFrame) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let sum: u64 =
        a.y.iter()
            .zip(&b.y)
            .map(|(p, q)| u64::from(p.abs_diff(*q)))
            .sum();
    sum as f64 / a.y.len() as f64
}

pub fn rtp_codec(codec: CodecKind) -> RTCRtpCodec {
    let (mime_type, sdp_fmtp_line) = match codec {
        CodecKind::Vp8 => ("video/VP8", String::new()),
        CodecKind::H264 => ("video/H264", H264_FMTP.to_owned()),
    };
    RTCRtpCodec {
        mime_type: mime_type.into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line,
        rtcp_feedback: vec![],
    }
}

/// What the client saw of the filtered video, besides the pictures.
#[derive(Debug, Default)]
pub struct Reception {
    /// Sequence numbers of every RTP packet, in arrival order (retransmissions repeat one).
    pub sequence_numbers: Vec<u16>,
    /// Whether each complete frame was a key frame, in arrival order.
    pub keyframes: Vec<bool>,
}

struct ClientHandler {
    codec: CodecKind,
    gathered: watch::Sender<bool>,
    connected: watch::Sender<bool>,
    received: Arc<Mutex<Vec<VideoFrame>>>,
    reception: Arc<Mutex<Reception>>,
    remote_track: watch::Sender<Option<Arc<dyn TrackRemote>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self
            .connected
            .send(state == RTCPeerConnectionState::Connected);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let (codec, received, reception) =
            (self.codec, self.received.clone(), self.reception.clone());
        let _ = self.remote_track.send(Some(track.clone()));
        tokio::spawn(async move {
            let mut assembler = FrameAssembler::new(codec);
            let mut decoder = codec::new_decoder(codec).unwrap();
            while let Some(event) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(packet) = event else {
                    continue;
                };
                reception
                    .lock()
                    .unwrap()
                    .sequence_numbers
                    .push(packet.header.sequence_number);
                if let Assembly::Frame(frame) = assembler.push(&packet.header, &packet.payload) {
                    reception.lock().unwrap().keyframes.push(frame.keyframe);
                    if let Ok(Some(picture)) = decoder.decode(&frame.data, frame.rtp_timestamp) {
                        received.lock().unwrap().push(picture);
                    }
                }
            }
        });
    }
}

/// The browser's side, in-process: sends a camera track and a data channel.
pub struct TestPeer {
    pub pc: Arc<dyn PeerConnection>,
    pub codec: CodecKind,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    gathered: watch::Receiver<bool>,
    pub connected: watch::Receiver<bool>,
    pub received: Arc<Mutex<Vec<VideoFrame>>>,
    pub reception: Arc<Mutex<Reception>>,
    /// RTCP the server sent about the camera track that the client's interceptors pass on
    /// (NACK, PLI and REMB, see `TestPeer::new`).
    pub camera_feedback: Arc<Mutex<Vec<Box<dyn rtc::rtcp::Packet>>>>,
    remote_track: watch::Receiver<Option<Arc<dyn TrackRemote>>>,
    pub channel: Arc<dyn DataChannel>,
    pub messages: mpsc::UnboundedReceiver<String>,
}

fn is_camera_feedback(packet: &dyn rtc::rtcp::Packet) -> bool {
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
    let any = packet.as_any();
    any.is::<TransportLayerNack>()
        || any.is::<PictureLossIndication>()
        || any.is::<ReceiverEstimatedMaximumBitrate>()
}

impl TestPeer {
    /// A client that offers and sends `codec` only.
    pub async fn new(codec: CodecKind) -> TestPeer {
        TestPeer::offering(&[codec], codec).await
    }

    /// A client that offers `offered` in this order of preference and sends `codec`.
    pub async fn offering(offered: &[CodecKind], codec: CodecKind) -> TestPeer {
        let mut engine = MediaEngine::default();
        for &kind in offered {
            engine
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: rtp_codec(kind),
                        payload_type: payload_type(kind),
                    },
                    RtpCodecKind::Video,
                )
                .unwrap();
        }
        // camera-pod's own chain, with the NACKs, PLIs and REMBs it sends about the camera
        // handed to the test.
        let registry =
            camera_pod::media::feedback::interceptors(&mut engine, is_camera_feedback).unwrap();
        let (gathered_tx, gathered) = watch::channel(false);
        let (connected_tx, connected) = watch::channel(false);
        let (remote_track_tx, remote_track) = watch::channel(None);
        let received = Arc::new(Mutex::new(Vec::new()));
        let reception = Arc::new(Mutex::new(Reception::default()));
        let handler = ClientHandler {
            codec,
            gathered: gathered_tx,
            connected: connected_tx,
            received: received.clone(),
            reception: reception.clone(),
            remote_track: remote_track_tx,
        };
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_media_engine(engine)
                .with_interceptor_registry(registry)
                .with_handler(Arc::new(handler))
                .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
                .build()
                .await
                .unwrap(),
        );
        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "camera".to_owned(),
            "camera-video".to_owned(),
            "camera".to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: rtp_codec(codec),
                ..Default::default()
            }],
        )));
        pc.add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        // The track's codec alone would be offered; offer every codec asked for, in order.
        let preferences = offered
            .iter()
            .map(|&kind| RTCRtpCodecParameters {
                rtp_codec: rtp_codec(kind),
                payload_type: payload_type(kind),
            })
            .collect();
        pc.get_transceivers().await[0]
            .set_codec_preferences(preferences)
            .await
            .unwrap();
        let camera_feedback = Arc::new(Mutex::new(Vec::new()));
        {
            let (track, camera_feedback) = (track.clone(), camera_feedback.clone());
            tokio::spawn(async move {
                while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = track.poll().await {
                    camera_feedback.lock().unwrap().extend(packets);
                }
            });
        }
        let channel = pc.create_data_channel("p2pcamera", None).await.unwrap();
        let (messages_tx, messages) = mpsc::unbounded_channel();
        {
            let channel = channel.clone();
            tokio::spawn(async move {
                while let Some(event) = channel.poll().await {
                    if let DataChannelEvent::OnMessage(message) = event {
                        let _ =
                            messages_tx.send(String::from_utf8_lossy(&message.data).into_owned());
                    }
                }
            });
        }
        TestPeer {
            pc,
            codec,
            track,
            ssrc,
            gathered,
            connected,
            received,
            reception,
            camera_feedback,
            remote_track,
            channel,
            messages,
        }
    }

    /// Sends RTCP about the filtered video (PLI, FIR, REMB, NACK) to the server.
    pub async fn send_feedback(&self, packets: Vec<Box<dyn rtc::rtcp::Packet>>) {
        self.filtered_track()
            .await
            .write_rtcp(packets)
            .await
            .unwrap();
    }

    /// SSRC of the filtered video the server sends.
    pub async fn filtered_ssrc(&self) -> u32 {
        self.filtered_track().await.ssrcs().await[0]
    }

    /// SSRC of the camera video this client sends.
    pub fn camera_ssrc(&self) -> u32 {
        self.ssrc
    }

    async fn filtered_track(&self) -> Arc<dyn TrackRemote> {
        let mut remote_track = self.remote_track.clone();
        let track = tokio::time::timeout(
            Duration::from_secs(10),
            remote_track.wait_for(Option::is_some),
        )
        .await
        .expect("the filtered track arrives")
        .unwrap()
        .clone();
        track.unwrap()
    }

    /// The complete offer (all candidates gathered).
    pub async fn offer(&mut self) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.gathered.wait_for(|g| *g))
            .await
            .unwrap()
            .unwrap();
        self.pc.local_description().await.unwrap().sdp
    }

    pub async fn accept(&self, answer_sdp: String) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer_sdp).unwrap())
            .await
            .unwrap();
    }

    pub async fn wait_connected(&mut self) {
        tokio::time::timeout(Duration::from_secs(15), self.connected.wait_for(|c| *c))
            .await
            .expect("peer connection connects")
            .unwrap();
    }

    /// Encodes and sends `count` pattern frames at 30 fps; returns them keyed by RTP timestamp.
    pub async fn send_pattern(&self, first: u32, count: u32) -> Vec<VideoFrame> {
        self.send_pattern_losing(first, count, |_| false, &Mutex::default())
            .await
    }

    /// Like `send_pattern`, but never sends the packets whose index (0, 1, ... over this call)
    /// `lose` selects, as if the network had lost them; their sequence numbers go to `lost`.
    pub async fn send_pattern_losing(
        &self,
        first: u32,
        count: u32,
        lose: impl Fn(usize) -> bool,
        lost: &Mutex<Vec<u16>>,
    ) -> Vec<VideoFrame> {
        let mut packet_index = 0;
        let mut encoder = codec::new_encoder(self.codec, 1_500_000).unwrap();
        let mut packetizer = RtpPacketizer::new(self.codec, self.ssrc, payload_type(self.codec));
        let mut sent = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for index in first..first + count {
            tick.tick().await;
            let mut frame = pattern(index);
            frame.rtp_timestamp = 90_000 + index * 3000;
            // A key frame now and then stands in for the receiver's PLI being answered.
            let encoded = encoder.encode(&frame, index % 30 == 0).unwrap();
            for packet in packetizer.packetize(&encoded.data, encoded.rtp_timestamp) {
                if lose(packet_index) {
                    lost.lock().unwrap().push(packet.header.sequence_number);
                } else {
                    self.track.write_rtp(packet).await.unwrap();
                }
                packet_index += 1;
            }
            sent.push(frame);
        }
        sent
    }

    pub async fn next_message(&mut self, matching: impl Fn(&str) -> bool) -> String {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let message = self.messages.recv().await.expect("data channel open");
                if matching(&message) {
                    return message;
                }
            }
        })
        .await
        .expect("expected data channel message")
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

pub async fn post_offer(
    base: &str,
    sdp: &str,
    client: Option<&str>,
    token: Option<&str>,
) -> reqwest::Response {
    post_offer_with(&reqwest::Client::new(), base, sdp, client, token).await
}

/// [`post_offer`] through `http` (e.g. a client that trusts one pod certificate).
pub async fn post_offer_with(
    http: &reqwest::Client,
    base: &str,
    sdp: &str,
    client: Option<&str>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut body = serde_json::json!({ "sdp": sdp, "type": "offer" });
    if let Some(client) = client {
        body["client"] = client.into();
    }
    let mut request = http.post(format!("{base}/offer")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// The value of an unlabelled metric in a `/metrics` text.
pub fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}
