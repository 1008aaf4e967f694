//! WebRTC media for the one camera this process serves: answering offers, receiving the camera,
//! and sending the filtered video back on the same transceiver.
//!
//! RTP in -> `rtp::FrameAssembler` -> decode thread -> [`FilterWorker`] (the filter thread, one-slot
//! mailbox) -> encode thread (one-slot mailbox) -> `outgoing::OutgoingVideo` -> RTP out. While the
//! filter is passthrough the decode thread forwards the camera's frames to `OutgoingVideo` as they
//! are, with nothing decoded or encoded (`forward`).

pub mod datachannel;
pub mod feedback;
pub mod forward;
pub mod latency;
pub mod limits;
pub mod liveness;
pub mod outgoing;
pub mod path;
pub mod pipeline;
pub mod reorder;
pub mod rtp;
pub mod sdp;
pub mod timeline;

mod peer;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use p2pcamera_api::relay::{RelayCandidates, RelayCredential};
use p2pcamera_api::wire::{CameraStatus, TrickledCandidate};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::codec::{CodecKind, DecodeSizeCap};
use crate::filter::{FilterSpec, FilterWorker, SwitchError};
use crate::metrics::Metrics;
use limits::{BitrateBounds, PictureLimits};
use liveness::Hold;
use peer::LivePeer;
pub use sdp::SdpError;

/// Where and how WebRTC media is exchanged.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Local UDP address (port 0: ephemeral).
    pub udp_addr: SocketAddr,
    /// Advertised instead of the local address (NAT 1:1).
    pub public_ip: Option<IpAddr>,
    pub bitrate: BitrateBounds,
    /// Codecs this pod accepts (`--codecs`); the offerer's order decides among them.
    pub codecs: Vec<CodecKind>,
    /// Largest picture and frame rate the filter gets (`--max-width`, `--max-height`, `--max-fps`).
    pub limits: PictureLimits,
    /// Largest camera picture decoded at all (`--max-decode-width`, `--max-decode-height`).
    pub decode_cap: DecodeSizeCap,
    /// How long after the answer the peer connection must be connected (`--connect-deadline`).
    pub connect_deadline: Duration,
    /// How long a connected peer may send no media before a new offer takes the camera over
    /// (`--takeover-after`).
    pub takeover_after: Duration,
    /// Whether the camera's frames go back as they came while the filter is passthrough and
    /// they keep within the limits (`--transcode-passthrough` turns it off; see `forward`).
    pub forward_passthrough: bool,
    /// The pod's own TURN relay candidates (`--relay-candidates`, `--turn-urls`).
    pub relay: RelaySettings,
}

/// Whether and through which TURN servers the pod gathers relay candidates.
#[derive(Clone, Debug, Default)]
pub struct RelaySettings {
    pub candidates: RelayCandidates,
    /// TURN URLs over UDP (what webrtc-rs relays through); the credential comes with each offer.
    pub urls: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Sdp(#[from] SdpError),
    #[error("a camera is already connected")]
    Busy,
    #[error(
        "the media UDP port {addr} is not available ({source}): another process on this host holds it; \
         give this pod another --udp-port"
    )]
    PortUnavailable {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("WebRTC: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    #[error("ICE candidate gathering did not complete in time")]
    GatheringTimeout,
    #[error("the answer has no negotiated video codec")]
    NoSendCodec,
    #[error(
        "this camera connects only through a TURN relay (--relay-candidates only) and the offer \
         brought no relay credential: the router that forwards offers needs --turn-urls and \
         --turn-secret-file"
    )]
    RelayUnavailable,
    #[error(
        "no live connection has this ICE username fragment: the connection was closed, taken over \
         or replaced by a newer offer"
    )]
    ConnectionGone,
    #[error("starting the pipeline threads: {0}")]
    Threads(#[from] std::io::Error),
}

/// Checks that a fixed media UDP port (`--udp-port`) can be bound, so that a port another process
/// holds is reported as such, not as a failed WebRTC setup. Port 0 (ephemeral) always can.
pub fn check_udp_port(addr: SocketAddr) -> Result<(), MediaError> {
    if addr.port() == 0 {
        return Ok(());
    }
    std::net::UdpSocket::bind(addr)
        .map(drop)
        .map_err(|source| MediaError::PortUnavailable { addr, source })
}

/// Switches `worker` to a filter spec that came over the network (`POST /filter`, the data
/// channel) and returns the new filter's name; specs that would read files on the pod are
/// refused before anything is built.
pub(crate) async fn switch_from_network(
    worker: &FilterWorker,
    spec: &str,
) -> Result<String, SwitchError> {
    let spec = FilterSpec::from_remote(spec)
        .inspect_err(|error| tracing::warn!(%error, "filter switch refused"))?;
    worker.switch(spec).await
}

/// The one camera this process serves: at most one live peer connection at a time.
pub struct Camera {
    config: MediaConfig,
    worker: Arc<FilterWorker>,
    metrics: Arc<Metrics>,
    live: tokio::sync::Mutex<Option<LivePeer>>,
    last_active: Arc<AtomicU64>,
    firsts: Arc<timeline::FirstTimes>,
    path: Arc<path::PathRecord>,
}

impl Camera {
    pub fn new(config: MediaConfig, worker: Arc<FilterWorker>, metrics: Arc<Metrics>) -> Self {
        Camera {
            config,
            worker,
            metrics,
            live: tokio::sync::Mutex::new(None),
            last_active: Arc::new(AtomicU64::new(pipeline::unix_now())),
            firsts: Arc::default(),
            path: Arc::default(),
        }
    }

    /// Answers an offer (all ICE candidates included), received at `offer_received`. Refused
    /// with `Busy` while another client's camera is live and sending media; one that has sent
    /// none for the takeover time is replaced (see `liveness`), and so is the same `client` id's
    /// own earlier connection. A connection not connected within the connect deadline is closed
    /// and no longer holds the camera.
    pub async fn answer(
        &self,
        offer_sdp: String,
        client: Option<String>,
        relay_credential: Option<RelayCredential>,
        offer_received: Instant,
    ) -> Result<String, MediaError> {
        let codecs = sdp::check_offer(&offer_sdp, &self.config.codecs)?;
        let mut live = self.live.lock().await;
        if let Some(current) = live.as_ref() {
            let same_client = client.is_some() && current.client == client;
            match current.hold(self.config.takeover_after) {
                Hold::Active if !same_client => return Err(MediaError::Busy),
                Hold::Silent(silent) if !same_client => {
                    tracing::info!(
                        silent_seconds = silent.as_secs_f64(),
                        "taking the camera over from a peer that has sent no media for --takeover-after"
                    );
                    self.metrics.peer_takeovers.inc();
                }
                _ => {}
            }
        }
        if let Some(previous) = live.take() {
            tracing::info!(replaced_state = %previous.state(), "replacing the previous peer connection");
            previous.close().await;
        }
        check_udp_port(self.config.udp_addr)?;
        let (peer, answer) = LivePeer::connect(peer::PeerSetup {
            offer_sdp,
            codec: codecs[0],
            client,
            config: self.config.clone(),
            worker: self.worker.clone(),
            metrics: self.metrics.clone(),
            last_active: self.last_active.clone(),
            offer_received,
            firsts: self.firsts.clone(),
            relay_credential,
            path: self.path.clone(),
        })
        .await?;
        self.last_active
            .store(pipeline::unix_now(), Ordering::Relaxed);
        *live = Some(peer);
        Ok(answer)
    }

    /// Adds candidates the browser trickled after its offer to the live connection whose offer
    /// had `ufrag`; returns how many were added.
    pub async fn add_candidates(
        &self,
        ufrag: &str,
        candidates: Vec<TrickledCandidate>,
    ) -> Result<usize, MediaError> {
        let mut live = self.live.lock().await;
        let peer = live.as_mut().ok_or(MediaError::ConnectionGone)?;
        let added = peer.add_candidates(ufrag, candidates).await?;
        self.metrics.trickled_candidates.inc_by(added as u64);
        Ok(added)
    }

    pub async fn status(&self) -> CameraStatus {
        let state = self.live.lock().await.as_ref().map(LivePeer::state);
        CameraStatus {
            camera_connected: state == Some(RTCPeerConnectionState::Connected),
            peer_state: state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "none".into()),
            last_active: self.last_active.load(Ordering::Relaxed),
            filter: self.worker.current(),
            first_answer_ms: self.firsts.answer_sent(),
            first_frame_ms: self.firsts.frame_sent(),
            connection: self.path.get(),
        }
    }

    /// Switches the filter (for every frame from now on) to a spec from the network.
    pub async fn switch_filter(&self, spec: &str) -> Result<String, SwitchError> {
        switch_from_network(&self.worker, spec).await
    }

    /// Closes the live peer connection, if any.
    pub async fn close(&self) {
        if let Some(peer) = self.live.lock().await.take() {
            peer.close().await;
        }
    }
}
