//! The threads of one peer's pipeline: decode (frames as they arrive, or forwarded as they are
//! while the filter is passthrough, see [`super::forward`]) and encode (the latest filtered
//! frame). The filter thread in between is shared, see [`FilterWorker`]; both threads send
//! through the peer's [`OutgoingVideo`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedSender;

use super::forward::{Route, RouteDecision, RouteGate};
use super::limits::{Downscaler, PictureLimits, fit_within};
use super::outgoing::{OutgoingVideo, Sent};
use super::rtp::AssembledFrame;
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
    /// The camera's frames are forwarded as they are: key frame requests and bitrate estimates
    /// of the viewer go on to the camera.
    pub forwarding: AtomicBool,
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
            forwarding: AtomicBool::new(false),
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

/// What the pipeline asks of the camera; the receiving task sends it as RTCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameraRequest {
    /// Frames were lost or could not be decoded: drop frames until a key frame and ask for one.
    Resync,
    /// Ask for a key frame and drop nothing: a route change waits for one, or the viewer asked
    /// for one while the camera's frames are forwarded.
    Keyframe,
    /// The most the camera should send, in bits per second (REMB): while its frames are
    /// forwarded, the viewer's own estimate; otherwise the session's `--max-bitrate`.
    MaxBitrate(u32),
}

/// Everything the decode thread needs.
pub struct DecodeStage {
    pub codec: CodecKind,
    pub frames: Receiver<AssembledFrame>,
    pub worker: Arc<FilterWorker>,
    pub stats: Arc<PipelineStats>,
    pub metrics: Arc<Metrics>,
    pub controls: Arc<Controls>,
    /// Where forwarded camera frames go.
    pub outgoing: Arc<OutgoingVideo>,
    /// Key frame and bitrate requests for the camera (the receiving task sends the RTCP).
    pub camera_requests: UnboundedSender<CameraRequest>,
    /// Pictures beyond these are scaled down or dropped before the filter.
    pub limits: PictureLimits,
    /// Pictures beyond this are not decoded at all.
    pub decode_cap: DecodeSizeCap,
    /// The most the pod sends (`--max-bitrate`): a camera sending more is not forwarded.
    pub max_bitrate: u32,
    /// Whether passthrough frames may be forwarded at all (`--transcode-passthrough` unset).
    pub forward_passthrough: bool,
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
        let mut gate = RouteGate::new(self.codec, self.limits, self.decode_cap, self.max_bitrate);
        let mut last_too_large_warning: Option<Instant> = None;
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
            let forwardable = self.forward_passthrough && self.worker.runs_passthrough();
            let route = gate.decide(&assembled, forwardable, Instant::now());
            self.follow(route);
            if route.route == Route::Forward {
                self.count_frame_in();
                self.outgoing
                    .forward(&assembled.data, assembled.rtp_timestamp);
                continue;
            }
            let started = Instant::now();
            match decoder.decode(&assembled.data, assembled.rtp_timestamp) {
                Ok(Some(frame)) => {
                    self.metrics
                        .decode_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.count_frame_in();
                    if !route.within_max_fps {
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
                    let _ = self.camera_requests.send(CameraRequest::Resync);
                }
            }
        }
    }

    /// Acts on a route decision before its frame is handled: asks for the key frame a route
    /// change waits for, and switches the stream at the one that starts a route.
    fn follow(&self, decision: RouteDecision) {
        if decision.ask_keyframe {
            let _ = self.camera_requests.send(CameraRequest::Keyframe);
        }
        if !decision.switched {
            return;
        }
        let forwarding = decision.route == Route::Forward;
        if !forwarding {
            // The viewer's decoder holds the camera's pictures, not the encoder's.
            self.outgoing.stop_forwarding();
            self.controls.force_keyframe.store(true, Ordering::Relaxed);
            // Whatever the viewer's estimate capped the camera to no longer applies.
            let _ = self
                .camera_requests
                .send(CameraRequest::MaxBitrate(self.max_bitrate));
        }
        self.controls
            .forwarding
            .store(forwarding, Ordering::Relaxed);
        self.metrics.forwarding.set(i64::from(forwarding));
        self.metrics.route_switched(decision.route);
        tracing::info!(
            route = decision.route.as_str(),
            reason = ?decision.transcode_reason,
            "the camera's frames switch route at a key frame"
        );
    }

    fn count_frame_in(&self) {
        self.metrics.frames_in.inc();
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.controls
            .last_active
            .store(unix_now(), Ordering::Relaxed);
    }
}

/// Everything the encode thread needs.
pub struct EncodeStage {
    pub codec: CodecKind,
    pub outgoing: Arc<OutgoingVideo>,
    pub metrics: Arc<Metrics>,
    pub controls: Arc<Controls>,
}

impl EncodeStage {
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("encode".into())
            .spawn(move || self.run())
    }

    fn run(self) {
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
            // Newer filtered frames replace older ones in the mailbox while this one is sent.
            let sent = self
                .outgoing
                .send_encoded(&encoded.data, encoded.rtp_timestamp);
            if sent == Sent::Skipped {
                // The viewer never gets this frame, which the next one would refer to.
                self.controls.force_keyframe.store(true, Ordering::Relaxed);
            }
        }
    }
}
