//! The one video stream a peer gets back. Its frames come from the encoder (filtered, or
//! transcoded passthrough) or straight from the camera (forwarded, see [`super::forward`]), all
//! packetized in one sequence of RTP packets with their camera frame's timestamp.
//!
//! A route change must never show the viewer a frame that refers to pictures it did not get: a
//! forwarded camera key frame starts forwarding, after which frames the encoder still finishes are
//! skipped, and so is any encoded frame older than the last frame sent. The encoder makes its next
//! frame a key frame after a skipped one.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use super::latency::FrameLatency;
use super::rtp::RtpPacketizer;
use super::timeline::{ConnectStage, ConnectTimeline};
use crate::filter::worker::PipelineStats;
use crate::metrics::Metrics;

/// What became of a frame handed to [`OutgoingVideo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// All its packets went out.
    Sent,
    /// The transport took not all of its packets (not connected yet, or closing).
    NotSent,
    /// An encoded frame not sent at all: camera frames are forwarded, or a newer frame went out.
    Skipped,
}

/// The sending side of one peer's video (shared by the decode and the encode thread).
pub struct OutgoingVideo {
    track: Arc<TrackLocalStaticRTP>,
    runtime: tokio::runtime::Handle,
    stats: Arc<PipelineStats>,
    metrics: Arc<Metrics>,
    timeline: Arc<ConnectTimeline>,
    latency: Arc<FrameLatency>,
    stream: Mutex<Stream>,
}

struct Stream {
    packetizer: RtpPacketizer,
    forwarding: bool,
    last_timestamp: Option<u32>,
}

impl Stream {
    /// Whether a frame with this RTP timestamp is not newer than the last one sent (on the
    /// wrapping 32-bit RTP clock).
    fn is_stale(&self, rtp_timestamp: u32) -> bool {
        self.last_timestamp
            .is_some_and(|last| rtp_timestamp.wrapping_sub(last) as i32 <= 0)
    }
}

/// Everything [`OutgoingVideo`] sends with and reports to.
pub struct OutgoingSetup {
    pub packetizer: RtpPacketizer,
    pub track: Arc<TrackLocalStaticRTP>,
    pub runtime: tokio::runtime::Handle,
    pub stats: Arc<PipelineStats>,
    pub metrics: Arc<Metrics>,
    pub timeline: Arc<ConnectTimeline>,
    pub latency: Arc<FrameLatency>,
}

impl OutgoingVideo {
    pub fn new(setup: OutgoingSetup) -> Self {
        OutgoingVideo {
            track: setup.track,
            runtime: setup.runtime,
            stats: setup.stats,
            metrics: setup.metrics,
            timeline: setup.timeline,
            latency: setup.latency,
            stream: Mutex::new(Stream {
                packetizer: setup.packetizer,
                forwarding: false,
                last_timestamp: None,
            }),
        }
    }

    fn stream(&self) -> MutexGuard<'_, Stream> {
        self.stream.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a frame the encoder made, unless camera frames are forwarded or a newer frame was
    /// sent ([`Sent::Skipped`]: the encoder's next frame must be a key frame).
    pub fn send_encoded(&self, data: &[u8], rtp_timestamp: u32) -> Sent {
        let mut stream = self.stream();
        if stream.forwarding || stream.is_stale(rtp_timestamp) {
            return Sent::Skipped;
        }
        self.send(&mut stream, data, rtp_timestamp)
    }

    /// Sends a camera frame as it came; from now on encoded frames are skipped until
    /// [`Self::stop_forwarding`]. The first forwarded frame must be a key frame.
    pub fn forward(&self, data: &[u8], rtp_timestamp: u32) -> Sent {
        let mut stream = self.stream();
        stream.forwarding = true;
        self.metrics.frames_forwarded.inc();
        self.send(&mut stream, data, rtp_timestamp)
    }

    /// Frames from the encoder are sent again (the first of them must be a key frame).
    pub fn stop_forwarding(&self) {
        self.stream().forwarding = false;
    }

    /// Packetizes and sends one frame; sending blocks while the transport is busy (the calling
    /// thread holds this one frame meanwhile).
    fn send(&self, stream: &mut Stream, data: &[u8], rtp_timestamp: u32) -> Sent {
        stream.last_timestamp = Some(rtp_timestamp);
        let mut sent = Sent::Sent;
        for packet in stream.packetizer.packetize(data, rtp_timestamp) {
            if let Err(error) = self.runtime.block_on(self.track.write_rtp(packet)) {
                tracing::debug!(%error, "cannot send RTP yet");
                sent = Sent::NotSent;
                break;
            }
        }
        if sent == Sent::Sent {
            self.timeline.reach(ConnectStage::FirstFrameOut);
            if let Some(latency) = self.latency.frame_sent(rtp_timestamp, Instant::now()) {
                self.metrics
                    .frame_latency_seconds
                    .observe(latency.as_secs_f64());
            }
        }
        self.stats
            .frames_out
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.frames_out.inc();
        sent
    }
}
