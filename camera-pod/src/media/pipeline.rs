//! The threads of one peer's pipeline: decode (frames as they arrive) and encode + packetize +
//! send (the latest filtered frame). The filter thread in between is shared, see [`FilterWorker`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedSender;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use super::latency::FrameLatency;
use super::limits::{Downscaler, FrameRateLimiter, PictureLimits, fit_within};
use super::rtp::{AssembledFrame, RtpPacketizer};
use super::timeline::{ConnectStage, ConnectTimeline};
use crate::codec::{self, CappedDecoder, CodecError, CodecKind, DecodeSizeCap, Decoder};
use crate::filter::worker::{FilterJob, FilterWorker, PipelineStats};
use crate::frame::VideoFrame;
use crate::mailbox::LatestFrame;
use crate::metrics::Metrics;

const POLL: Duration = Duration::from_millis(100);
/// At most one warning about camera pictures over the decode cap per this interval.
const TOO_LARGE_WARN_INTERVAL: Duration = Duration::from_secs(10);

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Signals shared between a peer's async tasks and its threads.
#[derive(Debug)]
pub struct Controls {
    pub stop: AtomicBool,
    pub force_keyframe: AtomicBool,
    pub bitrate_bps: AtomicU32,
    pub last_active: Arc<AtomicU64>,
    /// Frames that made it through the filter, waiting for the encoder (one slot).
    pub filtered: Arc<LatestFrame<VideoFrame>>,
}

impl Controls {
    /// The first filtered frame is a key frame, asked for explicitly: the client shows nothing
    /// until it has one.
    pub fn new(start_bitrate: u32, last_active: Arc<AtomicU64>) -> Self {
        Controls {
            stop: AtomicBool::new(false),
            force_keyframe: AtomicBool::new(true),
            bitrate_bps: AtomicU32::new(start_bitrate),
            last_active,
            filtered: Arc::new(LatestFrame::new()),
        }
    }

    /// Tells the threads to finish; they exit within one poll interval.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.filtered.close();
    }
}

/// Everything the decode thread needs.
pub struct DecodeStage {
    pub codec: CodecKind,
    pub frames: Receiver<AssembledFrame>,
    pub worker: Arc<FilterWorker>,
    pub stats: Arc<PipelineStats>,
    pub metrics: Arc<Metrics>,
    pub controls: Arc<Controls>,
    /// Asks the receiving task for a key frame (it sends the PLI).
    pub keyframe_requests: UnboundedSender<()>,
    /// Pictures beyond these are scaled down or dropped before the filter.
    pub limits: PictureLimits,
    /// Pictures beyond this are not decoded at all.
    pub decode_cap: DecodeSizeCap,
}

impl DecodeStage {
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("decode".into())
            .spawn(move || self.run())
    }

    fn run(self) {
        let mut decoder = match codec::new_decoder(self.codec) {
            Ok(decoder) => CappedDecoder::new(decoder, self.codec, self.decode_cap),
            Err(error) => {
                tracing::error!(%error, "cannot create the decoder");
                return;
            }
        };
        let mut last_too_large_warning: Option<Instant> = None;
        let mut rate_limiter = self.limits.max_fps.map(FrameRateLimiter::new);
        let mut downscaler = Downscaler::default();
        let mut scaled_from = (0, 0);
        loop {
            let assembled = match self.frames.recv_timeout(POLL) {
                Ok(frame) => frame,
                Err(RecvTimeoutError::Timeout) if !self.controls.stop.load(Ordering::Relaxed) => {
                    continue;
                }
                Err(_) => return,
            };
            let started = Instant::now();
            match decoder.decode(&assembled.data, assembled.rtp_timestamp) {
                Ok(Some(frame)) => {
                    self.metrics
                        .decode_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.frames_in.inc();
                    self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                    self.controls
                        .last_active
                        .store(unix_now(), Ordering::Relaxed);
                    if let Some(limiter) = rate_limiter.as_mut()
                        && !limiter.admit(frame.rtp_timestamp)
                    {
                        self.metrics.frames_over_max_fps.inc();
                        continue;
                    }
                    let (width, height) = fit_within(
                        frame.width,
                        frame.height,
                        self.limits.max_width,
                        self.limits.max_height,
                    );
                    let frame = if (width, height) == (frame.width, frame.height) {
                        frame
                    } else {
                        if scaled_from != (frame.width, frame.height) {
                            scaled_from = (frame.width, frame.height);
                            tracing::info!(
                                from_width = frame.width,
                                from_height = frame.height,
                                width,
                                height,
                                "camera pictures are larger than allowed; scaling them down"
                            );
                        }
                        downscaler.scale(&frame, width, height)
                    };
                    self.worker.submit(FilterJob {
                        frame,
                        output: self.controls.filtered.clone(),
                        stats: self.stats.clone(),
                    });
                }
                Ok(None) => {}
                Err(error @ CodecError::TooLarge { .. }) => {
                    // Not a loss: a key frame would be as large, so none is asked for.
                    self.metrics.frames_over_max_decode_size.inc();
                    if last_too_large_warning.is_none_or(|t| t.elapsed() >= TOO_LARGE_WARN_INTERVAL)
                    {
                        last_too_large_warning = Some(Instant::now());
                        tracing::warn!(%error, "dropping camera frames larger than the decode cap");
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "decoding failed; asking for a key frame");
                    let _ = self.keyframe_requests.send(());
                }
            }
        }
    }
}

/// Everything the encode thread needs.
pub struct EncodeStage {
    pub codec: CodecKind,
    pub packetizer: RtpPacketizer,
    pub track: Arc<TrackLocalStaticRTP>,
    pub runtime: tokio::runtime::Handle,
    pub stats: Arc<PipelineStats>,
    pub metrics: Arc<Metrics>,
    pub controls: Arc<Controls>,
    pub timeline: Arc<ConnectTimeline>,
    pub latency: Arc<FrameLatency>,
}

impl EncodeStage {
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("encode".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let mut applied = self.controls.bitrate_bps.load(Ordering::Relaxed);
        self.metrics.encoder_target_bitrate.set(i64::from(applied));
        let mut encoder = match codec::new_encoder(self.codec, applied) {
            Ok(encoder) => encoder,
            Err(error) => {
                tracing::error!(%error, "cannot create the encoder");
                return;
            }
        };
        loop {
            let Some(frame) = self.controls.filtered.take_timeout(POLL) else {
                if self.controls.filtered.is_closed() {
                    return;
                }
                continue;
            };
            let target = self.controls.bitrate_bps.load(Ordering::Relaxed);
            if target != applied {
                encoder.set_bitrate(target);
                tracing::debug!(bitrate_bps = target, "encoder bitrate changed");
                self.metrics.encoder_target_bitrate.set(i64::from(target));
                applied = target;
            }
            let keyframe = self.controls.force_keyframe.swap(false, Ordering::Relaxed);
            let started = Instant::now();
            let encoded = match encoder.encode(&frame, keyframe) {
                Ok(encoded) => encoded,
                Err(error) => {
                    tracing::warn!(%error, "encoding failed; dropping the frame");
                    self.controls.force_keyframe.store(true, Ordering::Relaxed);
                    continue;
                }
            };
            self.metrics
                .encode_seconds
                .observe(started.elapsed().as_secs_f64());
            // Sending blocks while the transport is busy: this thread holds at most one frame,
            // and newer filtered frames replace older ones in the mailbox meanwhile.
            let mut sent = true;
            for packet in self
                .packetizer
                .packetize(&encoded.data, encoded.rtp_timestamp)
            {
                if let Err(error) = self.runtime.block_on(self.track.write_rtp(packet)) {
                    tracing::debug!(%error, "cannot send RTP yet");
                    sent = false;
                    break;
                }
            }
            if sent {
                self.timeline.reach(ConnectStage::FirstFrameOut);
                if let Some(latency) = self
                    .latency
                    .frame_sent(encoded.rtp_timestamp, Instant::now())
                {
                    self.metrics
                        .frame_latency_seconds
                        .observe(latency.as_secs_f64());
                }
            }
            self.stats.frames_out.fetch_add(1, Ordering::Relaxed);
            self.metrics.frames_out.inc();
        }
    }
}
