//! One peer connection: building it, answering its offer, and the tasks that move its RTP,
//! RTCP and data channel messages.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use p2pcamera_api::relay::{ConnectionPath, RelayCandidates, RelayCredential};
use p2pcamera_api::wire::{MAX_TRICKLED_CANDIDATES, TrickledCandidate};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::watch;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfiguration, RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceConnectionState,
    RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};

use super::datachannel::{self, ClientMessage, Reading, Stats};
use super::feedback;
use super::latency::FrameLatency;
use super::limits::BitrateBounds;
use super::liveness::{Hold, Liveness};
use super::outgoing::{OutgoingSetup, OutgoingVideo};
use super::path::{self, PathRecord};
use super::pipeline::{CameraRequest, Controls, DecodeStage, EncodeStage};
use super::reorder::{REORDER_CAPACITY, REORDER_WAIT, ReorderBuffer};
use super::rtp::{AssembledFrame, Assembly, FrameAssembler, RtpPacketizer};
use super::sdp::{self, H264_FMTP};
use super::timeline::{ConnectStage, ConnectTimeline, FirstTimes};
use super::{MediaConfig, MediaError, RelaySettings};
use crate::codec::CodecKind;
use crate::filter::worker::{FilterWorker, PipelineStats};
use crate::metrics::Metrics;

const GATHERING_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one key frame request per this interval.
const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// Assembled frames waiting for the decoder; beyond this the stream restarts at a key frame.
const DECODE_QUEUE: usize = 4;

const VP8_PT: u8 = 96;
const H264_PT: u8 = 102;

pub(super) struct PeerSetup {
    pub offer_sdp: String,
    pub codec: CodecKind,
    pub client: Option<String>,
    pub config: MediaConfig,
    pub worker: Arc<FilterWorker>,
    pub metrics: Arc<Metrics>,
    pub last_active: Arc<AtomicU64>,
    /// When the offer was received; the connection's stages are timed from then.
    pub offer_received: Instant,
    /// The pod's first answer and frame, which this connection may be.
    pub firsts: Arc<FirstTimes>,
    /// The TURN credential the router sent with the offer.
    pub relay_credential: Option<RelayCredential>,
    /// Where the connection's path is recorded.
    pub path: Arc<PathRecord>,
}

fn rtp_codec(codec: CodecKind) -> RTCRtpCodec {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    let (mime_type, sdp_fmtp_line) = match codec {
        CodecKind::Vp8 => ("video/VP8", String::new()),
        CodecKind::H264 => ("video/H264", H264_FMTP.to_owned()),
    };
    RTCRtpCodec {
        mime_type: mime_type.into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line,
        rtcp_feedback: vec![feedback("goog-remb", ""), feedback("ccm", "fir")],
    }
}

/// The codecs the answer may name: only those this pod accepts.
fn media_engine(accepted: &[CodecKind]) -> Result<(MediaEngine, Registry), MediaError> {
    let mut engine = MediaEngine::default();
    for (codec, payload_type) in [(CodecKind::Vp8, VP8_PT), (CodecKind::H264, H264_PT)] {
        if !accepted.contains(&codec) {
            continue;
        }
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: rtp_codec(codec),
                payload_type,
            },
            RtpCodecKind::Video,
        )?;
    }
    let registry = feedback::interceptors(&mut engine, feedback::is_sender_feedback)?;
    Ok((engine, registry))
}

/// State shared between the peer connection's event handler and its tasks.
struct PeerShared {
    codec: CodecKind,
    liveness: Mutex<Liveness>,
    gathered: watch::Sender<bool>,
    frames: SyncSender<AssembledFrame>,
    camera_requests: Mutex<Option<UnboundedReceiver<CameraRequest>>>,
    stats: Arc<PipelineStats>,
    controls: Arc<Controls>,
    worker: Arc<FilterWorker>,
    metrics: Arc<Metrics>,
    timeline: Arc<ConnectTimeline>,
    latency: Arc<FrameLatency>,
    /// Set once the first data channel is being served; later ones are closed unserved.
    data_channel_taken: AtomicBool,
    /// The peer connection, once built (to read its selected candidate pair when connected).
    pc: std::sync::OnceLock<Weak<dyn PeerConnection>>,
    /// The camera's path, shared with `/status` (the camera completes it on the data channel).
    path: Arc<PathRecord>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl PeerShared {
    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The remote closed the connection: the camera is free and the pipeline stops.
    fn closed_by_remote(&self) {
        if self.controls.stop.load(Ordering::Relaxed) {
            return;
        }
        tracing::info!("the remote closed the connection; the camera is free");
        self.liveness().on_remote_close();
        self.metrics.set_peer_state("closed");
        self.controls.stop();
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tokio::spawn(task));
    }
}

struct PeerHandler(Arc<PeerShared>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.gathered.send(true);
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if state == RTCIceConnectionState::Connected {
            self.0.timeline.reach(ConnectStage::IceConnected);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::info!(%state, "peer connection state");
        if state == RTCPeerConnectionState::Connected {
            self.0.timeline.reach(ConnectStage::DtlsConnected);
            if let Some(pc) = self.0.pc.get().and_then(Weak::upgrade) {
                self.0
                    .spawn(record_path(pc, self.0.path.clone(), self.0.metrics.clone()));
            }
        }
        let seen = {
            let mut liveness = self.0.liveness();
            liveness.on_state(state, Instant::now());
            liveness.state()
        };
        self.0.metrics.set_peer_state(&seen.to_string());
        if matches!(
            seen,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            self.0.controls.stop();
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if track.kind().await != RtpCodecKind::Video {
            return;
        }
        let Some(camera_requests) = self
            .0
            .camera_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            tracing::warn!("ignoring a second video track");
            return;
        };
        self.0
            .spawn(receive_video(self.0.clone(), track, camera_requests));
    }

    /// Serves the first data channel only: its close frees the camera. Later ones are closed
    /// at once, and their closing frees nothing.
    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        if self.0.data_channel_taken.swap(true, Ordering::Relaxed) {
            self.0.metrics.data_channels_refused.inc();
            tracing::warn!(
                channel_id = ?channel.id(),
                "the peer opened another data channel; only its first one is served, closing this one"
            );
            // Not awaited here: closing talks to the driver that is calling this handler.
            self.0.spawn(async move {
                if let Err(error) = channel.close().await {
                    tracing::debug!(%error, "closing a refused data channel");
                }
            });
            return;
        }
        self.0.spawn(serve_data_channel(self.0.clone(), channel));
    }
}

/// The ICE configuration for `relay` with the offer's `credential`: no servers when the pod
/// gathers no relay candidate; its TURN URLs with the credential otherwise (relay candidates only
/// for [`RelayCandidates::Only`]). `Only` without a credential cannot answer; `Also` answers with
/// host candidates.
fn relay_configuration(
    relay: &RelaySettings,
    credential: Option<&RelayCredential>,
) -> Result<RTCConfiguration, MediaError> {
    let builder = RTCConfigurationBuilder::new();
    if !relay.candidates.gathers_relay() {
        return Ok(builder.build());
    }
    let Some(credential) = credential else {
        if relay.candidates == RelayCandidates::Only {
            return Err(MediaError::RelayUnavailable);
        }
        tracing::warn!(
            "the offer brought no TURN credential (the router has no TURN configuration): answering with host candidates only"
        );
        return Ok(builder.build());
    };
    let policy = match relay.candidates {
        RelayCandidates::Only => RTCIceTransportPolicy::Relay,
        RelayCandidates::Off | RelayCandidates::Also => RTCIceTransportPolicy::All,
    };
    Ok(builder
        .with_ice_servers(vec![RTCIceServer {
            urls: relay.urls.clone(),
            username: credential.username.clone(),
            credential: credential.credential.clone(),
        }])
        .with_ice_transport_policy(policy)
        .build())
}

/// Records, counts and logs the way the connected peer's media goes, from its selected
/// candidate pair.
async fn record_path(pc: Arc<dyn PeerConnection>, record: Arc<PathRecord>, metrics: Arc<Metrics>) {
    let Some(sender) = pc.get_senders().await.into_iter().next() else {
        return;
    };
    let pair = match sender.transport().await {
        Ok(Some(dtls)) => dtls.ice_transport().get_selected_candidate_pair().await,
        Ok(None) => return,
        Err(error) => Err(error),
    };
    match pair {
        Ok(Some(pair)) => {
            let (Some(pod), Some(camera)) = (
                path::candidate_type(pair.local().typ),
                path::candidate_type(pair.remote().typ),
            ) else {
                tracing::debug!(?pair, "selected candidate pair of an unknown type");
                return;
            };
            let connection = ConnectionPath::of_pair(pod, camera);
            tracing::info!(path = ?connection.path, pod_candidate = ?pod, camera_candidate = ?camera, "peer connected");
            record.connected(connection, &metrics);
        }
        Ok(None) => {}
        Err(error) => tracing::debug!(%error, "cannot read the selected candidate pair"),
    }
}

/// Closes the connection when it is not connected `deadline` after the answer: a client that
/// never starts ICE (or whose DTLS never completes) holds the camera no longer than that.
async fn enforce_connect_deadline(
    shared: Arc<PeerShared>,
    pc: Weak<dyn PeerConnection>,
    deadline: Duration,
) {
    tokio::time::sleep(deadline).await;
    if shared.liveness().has_connected() || shared.controls.stop.load(Ordering::Relaxed) {
        return;
    }
    tracing::warn!(
        deadline_seconds = deadline.as_secs_f64(),
        "the peer did not connect within --connect-deadline; closing it, the camera is free"
    );
    shared.metrics.peer_connect_timeouts.inc();
    shared
        .liveness()
        .on_state(RTCPeerConnectionState::Closed, Instant::now());
    shared.metrics.set_peer_state("closed");
    shared.controls.stop();
    if let Some(pc) = pc.upgrade()
        && let Err(error) = pc.close().await
    {
        tracing::debug!(%error, "closing a peer that did not connect");
    }
}

/// RTP of the camera -> in order (waiting briefly for resent packets) -> frames for the
/// decoder; PLI when frames are lost or undecodable, or a key frame is wanted; REMB when the
/// pipeline bounds the camera's bitrate.
async fn receive_video(
    shared: Arc<PeerShared>,
    track: Arc<dyn TrackRemote>,
    mut requests: UnboundedReceiver<CameraRequest>,
) {
    let media_ssrc = track.ssrcs().await.first().copied().unwrap_or_default();
    let mut reorder = ReorderBuffer::new(REORDER_WAIT, REORDER_CAPACITY);
    let mut assembler = FrameAssembler::new(shared.codec);
    let mut last_pli: Option<Instant> = None;
    loop {
        let deadline = reorder.deadline();
        let (in_order, keyframe_wanted) = tokio::select! {
            event = track.poll() => match event {
                None | Some(TrackRemoteEvent::OnEnded) => break,
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                    let now = Instant::now();
                    shared.timeline.reach(ConnectStage::FirstRtpIn);
                    shared.liveness().on_media(now);
                    shared.latency.packet_arrived(packet.header.timestamp, now);
                    (reorder.push(packet.header.sequence_number, packet, now), false)
                }
                Some(_) => continue,
            },
            () = sleep_until(deadline), if deadline.is_some() => (reorder.expire(Instant::now()), false),
            Some(request) = requests.recv() => match request {
                CameraRequest::Resync => {
                    assembler.require_keyframe();
                    (Vec::new(), true)
                }
                CameraRequest::Keyframe => (Vec::new(), true),
                CameraRequest::MaxBitrate(bitrate) => {
                    let remb = ReceiverEstimatedMaximumBitrate {
                        sender_ssrc: 0,
                        bitrate: bitrate as f32,
                        ssrcs: vec![media_ssrc],
                    };
                    if let Err(error) = track.write_rtcp(vec![Box::new(remb)]).await {
                        tracing::debug!(%error, "cannot send REMB");
                    }
                    continue;
                }
            }
        };
        let gaps = reorder.take_counts();
        shared.metrics.rtp_packets_recovered.inc_by(gaps.recovered);
        shared.metrics.rtp_packets_lost.inc_by(gaps.lost);
        let Some(lost) = assemble(&shared, &mut assembler, in_order) else {
            break;
        };
        if (lost || keyframe_wanted) && last_pli.is_none_or(|t| t.elapsed() >= PLI_INTERVAL) {
            last_pli = Some(Instant::now());
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            if let Err(error) = track.write_rtcp(vec![Box::new(pli)]).await {
                tracing::debug!(%error, "cannot send PLI");
            }
        }
    }
}

/// Sleeps until `deadline` (forever without one).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Feeds in-order packets to the assembler and hands complete frames to the decoder. Returns
/// whether a key frame is needed, or `None` once the decoder is gone.
fn assemble(
    shared: &PeerShared,
    assembler: &mut FrameAssembler,
    packets: Vec<rtc::rtp::packet::Packet>,
) -> Option<bool> {
    let mut need_keyframe = false;
    for packet in packets {
        match assembler.push(&packet.header, &packet.payload) {
            Assembly::Pending => {}
            Assembly::NeedKeyframe => need_keyframe = true,
            Assembly::Oversized => {
                shared.metrics.frames_over_assembly_cap.inc();
                tracing::debug!("a camera frame grew past the reassembly cap; dropped");
                need_keyframe = true;
            }
            Assembly::Frame(frame) => match shared.frames.try_send(frame) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    tracing::debug!("decoder behind; restarting at the next key frame");
                    assembler.require_keyframe();
                    need_keyframe = true;
                }
                Err(TrySendError::Disconnected(_)) => return None,
            },
        }
    }
    Some(need_keyframe)
}

/// RTCP about what we send: PLI/FIR force a key frame, REMB sets the encoder's bitrate. While
/// the camera's frames are forwarded, both go on to the camera (the REMB within the bounds).
async fn receive_sender_feedback(
    track: Arc<TrackLocalStaticRTP>,
    controls: Arc<Controls>,
    bounds: BitrateBounds,
    camera_requests: UnboundedSender<CameraRequest>,
) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        for packet in packets {
            let any = packet.as_any();
            let forwarding = controls.forwarding.load(Ordering::Relaxed);
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                controls.force_keyframe.store(true, Ordering::Relaxed);
                if forwarding {
                    let _ = camera_requests.send(CameraRequest::Keyframe);
                }
            } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                let target = bounds.clamp(remb.bitrate as u32);
                controls.bitrate_bps.store(target, Ordering::Relaxed);
                if forwarding {
                    let _ = camera_requests.send(CameraRequest::MaxBitrate(target));
                }
            }
        }
    }
}

/// Ping/pong, filter switches and the once-a-second stats message.
async fn serve_data_channel(shared: Arc<PeerShared>, channel: Arc<dyn DataChannel>) {
    let reading = |shared: &PeerShared, start: Instant| Reading {
        seconds: start.elapsed().as_secs_f64(),
        frames_in: shared.stats.frames_in.load(Ordering::Relaxed),
        frames_out: shared.stats.frames_out.load(Ordering::Relaxed),
        latency: shared.latency.totals(),
    };
    let start = Instant::now();
    let mut previous = reading(&shared, start);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            event = channel.poll() => match event {
                // The data channel lives as long as the session: the remote's DTLS close_notify
                // or SCTP abort closes it, and so does the remote closing the connection.
                None | Some(DataChannelEvent::OnClose) => {
                    shared.closed_by_remote();
                    break;
                }
                Some(DataChannelEvent::OnMessage(message)) => {
                    let text = String::from_utf8_lossy(&message.data).into_owned();
                    let reply = match datachannel::parse(&text) {
                        ClientMessage::Ping(rest) => datachannel::pong(rest),
                        // A switch may wait for a model download: it answers from its own task,
                        // so pings, stats, a newer switch (which supersedes this one) and the
                        // channel's close are served meanwhile.
                        ClientMessage::SwitchFilter(spec) => {
                            let (worker, channel) = (shared.worker.clone(), channel.clone());
                            let spec = spec.to_owned();
                            tokio::spawn(async move {
                                let reply = datachannel::filter_reply(
                                    &super::switch_from_network(&worker, &spec).await,
                                );
                                if let Err(error) = channel.send_text(&reply).await {
                                    tracing::debug!(%error, "cannot answer a filter switch on the data channel");
                                }
                            });
                            continue;
                        }
                        // The camera's own view of its path: nothing to answer.
                        ClientMessage::CameraTransport(transport) => {
                            shared.path.camera_reports(transport, &shared.metrics);
                            continue;
                        }
                        ClientMessage::Unknown => datachannel::unknown_reply(),
                    };
                    if let Err(error) = channel.send_text(&reply).await {
                        tracing::debug!(%error, "cannot answer on the data channel");
                    }
                }
                Some(_) => {}
            },
            _ = tick.tick() => {
                let now = reading(&shared, start);
                let stats = Stats::between(
                    previous,
                    now,
                    shared.stats.model_micros.load(Ordering::Relaxed),
                    shared.stats.dropped.load(Ordering::Relaxed),
                    shared.worker.current(),
                    shared.controls.forwarding.load(Ordering::Relaxed),
                );
                previous = now;
                let _ = channel.send_text(&stats.to_json()).await;
            }
        }
    }
}

/// The live peer connection with its threads and tasks.
pub(super) struct LivePeer {
    pub client: Option<String>,
    /// The offer's ICE username fragment: trickled candidates must name it.
    ufrag: Option<String>,
    /// Distinct candidates trickled so far (`transport address port`).
    trickled: HashSet<String>,
    pc: Arc<dyn PeerConnection>,
    shared: Arc<PeerShared>,
    threads: Vec<JoinHandle<()>>,
}

impl LivePeer {
    pub async fn connect(setup: PeerSetup) -> Result<(LivePeer, String), MediaError> {
        let (engine, registry) = media_engine(&setup.config.codecs)?;
        // The pod answers as the DTLS server (`a=setup:passive`): the client sends the first
        // flight and every reply goes out as its datagram is read. As DTLS client (webrtc-rs
        // 0.21's default for an answer), the ClientHello queued when ICE connects is sent only
        // at the driver's next timer tick, the ICE check interval of 200 ms later: that wait was
        // most of an offer's time to its first frame on loopback (docs/benchmarks.md).
        //
        // No mDNS: a browser's `.local` host names are on its own network and cannot be resolved
        // from a cloud node, and joining the mDNS group fails on hosts without a multicast route
        // (every offer then failed with `No such device`).
        //
        // The public address (`--public-ip`) is added to the answer by `negotiate`: the setting
        // engine's NAT 1:1 addresses are not used by webrtc-rs 0.21 when it gathers candidates.
        let settings = SettingEngineBuilder::new()
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled);
        let (frames_tx, frames_rx) = std::sync::mpsc::sync_channel(DECODE_QUEUE);
        let (camera_requests, camera_requests_rx) = unbounded_channel();
        let (gathered, mut gathered_rx) = watch::channel(false);
        let controls = Arc::new(Controls::new(
            setup.config.bitrate.start,
            setup.last_active.clone(),
        ));
        let timeline = Arc::new(ConnectTimeline::new(
            setup.offer_received,
            setup.metrics.clone(),
            setup.firsts.clone(),
        ));
        let shared = Arc::new(PeerShared {
            codec: setup.codec,
            liveness: Mutex::default(),
            gathered,
            frames: frames_tx,
            camera_requests: Mutex::new(Some(camera_requests_rx)),
            stats: Arc::default(),
            controls: controls.clone(),
            worker: setup.worker.clone(),
            metrics: setup.metrics.clone(),
            timeline: timeline.clone(),
            latency: Arc::default(),
            data_channel_taken: AtomicBool::new(false),
            pc: std::sync::OnceLock::new(),
            path: setup.path.clone(),
            tasks: Mutex::default(),
        });
        let configuration =
            relay_configuration(&setup.config.relay, setup.relay_credential.as_ref())?;
        setup.metrics.set_peer_state("new");
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_configuration(configuration)
                .with_media_engine(engine)
                .with_interceptor_registry(registry)
                .with_setting_engine(settings.build())
                .with_handler(Arc::new(PeerHandler(shared.clone())))
                .with_udp_addrs(vec![setup.config.udp_addr])
                .build()
                .await?,
        );
        let _ = shared.pc.set(Arc::downgrade(&pc));
        let mut peer = LivePeer {
            client: setup.client,
            ufrag: sdp::ice_ufrag(&setup.offer_sdp).map(str::to_owned),
            trickled: HashSet::new(),
            pc,
            shared,
            threads: Vec::new(),
        };
        match peer
            .negotiate(
                &setup.offer_sdp,
                setup.codec,
                // Relay only: the node's own address never reaches the camera.
                setup
                    .config
                    .public_ip
                    .filter(|_| setup.config.relay.candidates != RelayCandidates::Only),
                &mut gathered_rx,
            )
            .await
        {
            Ok((answer, track, payload_type, ssrc)) => {
                let outgoing = Arc::new(OutgoingVideo::new(OutgoingSetup {
                    packetizer: RtpPacketizer::new(setup.codec, ssrc, payload_type),
                    track: track.clone(),
                    runtime: tokio::runtime::Handle::current(),
                    stats: peer.shared.stats.clone(),
                    metrics: setup.metrics.clone(),
                    timeline: timeline.clone(),
                    latency: peer.shared.latency.clone(),
                }));
                let decode = DecodeStage {
                    codec: setup.codec,
                    frames: frames_rx,
                    worker: setup.worker.clone(),
                    stats: peer.shared.stats.clone(),
                    metrics: setup.metrics.clone(),
                    controls: controls.clone(),
                    outgoing: outgoing.clone(),
                    camera_requests: camera_requests.clone(),
                    limits: setup.config.limits,
                    decode_cap: setup.config.decode_cap,
                    max_bitrate: setup.config.bitrate.max,
                    forward_passthrough: setup.config.forward_passthrough,
                };
                let encode = EncodeStage {
                    codec: setup.codec,
                    outgoing,
                    metrics: setup.metrics.clone(),
                    controls: controls.clone(),
                };
                peer.threads.push(decode.spawn()?);
                peer.threads.push(encode.spawn()?);
                peer.shared.spawn(receive_sender_feedback(
                    track,
                    controls,
                    setup.config.bitrate,
                    camera_requests,
                ));
                let deadline = setup.config.connect_deadline;
                peer.shared
                    .liveness()
                    .expect_connection_by(Instant::now() + deadline);
                peer.shared.spawn(enforce_connect_deadline(
                    peer.shared.clone(),
                    Arc::downgrade(&peer.pc),
                    deadline,
                ));
                tracing::info!(codec = ?setup.codec, payload_type, "answered an offer");
                timeline.reach(ConnectStage::AnswerSent);
                Ok((peer, answer))
            }
            Err(error) => {
                peer.close().await;
                Err(error)
            }
        }
    }

    /// Answers `offer_sdp` and returns the answer with every candidate gathered (and, with
    /// `public_ip`, the host candidates at that address too), the filtered video's track, its
    /// payload type and its SSRC.
    async fn negotiate(
        &self,
        offer_sdp: &str,
        codec: CodecKind,
        public_ip: Option<IpAddr>,
        gathered: &mut watch::Receiver<bool>,
    ) -> Result<(String, Arc<TrackLocalStaticRTP>, u8, u32), MediaError> {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(offer_sdp.to_owned())?)
            .await?;
        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "p2pcamera".to_owned(),
            "p2pcamera-filtered".to_owned(),
            "filtered camera".to_owned(),
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
        let sender = self
            .pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        tokio::time::timeout(GATHERING_TIMEOUT, gathered.wait_for(|done| *done))
            .await
            .map_err(|_| MediaError::GatheringTimeout)?
            .map_err(|_| MediaError::GatheringTimeout)?;
        let answer = self
            .pc
            .local_description()
            .await
            .ok_or(MediaError::GatheringTimeout)?
            .sdp;
        let answer = match public_ip {
            Some(public_ip) => {
                let public = sdp::advertise_public_address(&answer, public_ip);
                tracing::debug!(
                    %public_ip,
                    added = ?public.added,
                    "public host candidates in the answer"
                );
                public.sdp
            }
            None => answer,
        };
        let mime = rtp_codec(codec).mime_type;
        let send_codec = sender
            .get_parameters()
            .await?
            .rtp_parameters
            .codecs
            .into_iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime))
            .ok_or(MediaError::NoSendCodec)?;
        let feedback: Vec<String> = send_codec
            .rtp_codec
            .rtcp_feedback
            .iter()
            .map(|f| format!("{} {}", f.typ, f.parameter).trim().to_owned())
            .collect();
        tracing::debug!(?feedback, "RTCP feedback negotiated for the filtered video");
        let payload_type = send_codec.payload_type;
        Ok((answer, track, payload_type, ssrc))
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        self.shared.liveness().state()
    }

    /// Adds candidates the browser trickled after its offer, for the connection whose offer had
    /// `ufrag` (else [`MediaError::ConnectionGone`]). Each is checked as an offer's are, and at
    /// most [`MAX_TRICKLED_CANDIDATES`] distinct ones are taken per connection; a request with
    /// one bad candidate adds none.
    pub async fn add_candidates(
        &mut self,
        ufrag: &str,
        candidates: Vec<TrickledCandidate>,
    ) -> Result<usize, MediaError> {
        if self.ufrag.as_deref() != Some(ufrag) || self.shared.controls.stop.load(Ordering::Relaxed)
        {
            return Err(MediaError::ConnectionGone);
        }
        let mut trickled = self.trickled.clone();
        for candidate in &candidates {
            let destination = sdp::candidate_destination(&candidate.candidate)?;
            sdp::count_distinct(&mut trickled, destination, MAX_TRICKLED_CANDIDATES)?;
        }
        self.trickled = trickled;
        let count = candidates.len();
        for candidate in candidates {
            let value = candidate.candidate.trim();
            let value = value.strip_prefix("a=").unwrap_or(value);
            self.pc
                .add_ice_candidate(RTCIceCandidateInit {
                    candidate: value.to_owned(),
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_m_line_index,
                    username_fragment: Some(ufrag.to_owned()),
                    ..Default::default()
                })
                .await?;
        }
        Ok(count)
    }

    /// How this connection holds the camera against a new offer now (see `liveness`).
    pub fn hold(&self, takeover_after: Duration) -> Hold {
        self.shared.liveness().hold(Instant::now(), takeover_after)
    }

    /// Closes the connection, stops its tasks and waits for its threads.
    pub async fn close(self) {
        self.shared.controls.stop();
        if let Err(error) = self.pc.close().await {
            tracing::debug!(%error, "closing the peer connection");
        }
        for task in self
            .shared
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        self.shared
            .liveness()
            .on_state(RTCPeerConnectionState::Closed, Instant::now());
        self.shared.metrics.set_peer_state("closed");
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}
