//! Passthrough without re-encoding. While the filter is passthrough and the camera's stream keeps
//! within the session's limits, the camera's own encoded frames go back as they are (packetized
//! anew, same RTP timestamps): nothing is decoded, filtered or encoded, which is most of the CPU a
//! passthrough camera costs. Otherwise every frame is decoded, filtered and encoded again
//! (transcoded), as for any other filter.
//!
//! The route changes only at a camera key frame, in either direction: the viewer's decoder can
//! follow the camera's frames from a key frame on, and the pod's decoder can start at one. Until
//! that key frame arrives the old route goes on (no frozen or broken picture) and the camera is
//! asked for one. The viewer gets a key frame from the pod's encoder when transcoding resumes.
//!
//! Forwarded frames must keep the session's limits without a decoder: the picture size is read
//! from each key frame's headers, the frame rate from RTP timestamps, the bitrate from the bytes
//! of the last two seconds. A stream over any of them is transcoded (scaled, thinned, re-encoded within
//! `--max-bitrate`), and is forwarded again once it has kept within them for [`CALM_PERIOD`].
//! [`RouteGate`] is that decision, a pure state machine; the decode thread acts on it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::limits::{FrameRateLimiter, PictureLimits, fit_within};
use super::rtp::AssembledFrame;
use crate::codec::{CodecKind, DecodeSizeCap, announced_size};

/// How long a stream must keep within the frame rate and bitrate limits, after going over one,
/// before its frames are forwarded again (so a stream near a limit does not flip routes).
pub const CALM_PERIOD: Duration = Duration::from_secs(2);
/// Least time between two key frame requests while a route change waits for a key frame (the
/// receiving task paces the PLIs it sends as well).
pub const KEYFRAME_ASK_INTERVAL: Duration = Duration::from_millis(500);
/// The window the camera's bitrate is measured over: two seconds, so that a key frame (several
/// times an inter frame's size) does not count as going over on its own.
const BITRATE_WINDOW: Duration = Duration::from_secs(2);

/// What happens to the camera's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Sent back as they are.
    Forward,
    /// Decoded, filtered and encoded again.
    Transcode,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Forward => "forward",
            Route::Transcode => "transcode",
        }
    }
}

/// Why the camera's frames are transcoded rather than forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranscodeReason {
    /// The filter is not passthrough (or passthrough is transcoded: `--transcode-passthrough`).
    Filter,
    /// No key frame has announced the picture size yet, or it is over the size limits.
    PictureSize,
    /// Frames came faster than `--max-fps` within the last [`CALM_PERIOD`].
    FrameRate,
    /// The camera sent more than `--max-bitrate` (averaged over two seconds) within the last
    /// [`CALM_PERIOD`].
    Bitrate,
}

/// What to do with one camera frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteDecision {
    /// The route this frame takes.
    pub route: Route,
    /// This frame (a key frame) starts the route.
    pub switched: bool,
    /// The route should change but waits for a key frame: ask the camera for one.
    pub ask_keyframe: bool,
    /// Within `--max-fps` (a transcoded frame that is not is decoded for its references and
    /// dropped before the filter).
    pub within_max_fps: bool,
    /// Why the stream is (or is to be) transcoded; `None` while it may be forwarded.
    pub transcode_reason: Option<TranscodeReason>,
}

/// Decides, frame by frame, whether the camera's frames are forwarded or transcoded (see the
/// module documentation). The first route is transcoding; the first frame, always a key frame,
/// switches to forwarding when it may.
#[derive(Debug)]
pub struct RouteGate {
    codec: CodecKind,
    limits: PictureLimits,
    decode_cap: DecodeSizeCap,
    max_bitrate: u32,
    route: Route,
    /// The picture size the latest key frame announced.
    size: Option<(u32, u32)>,
    rate: Option<FrameRateLimiter>,
    over_rate_at: Option<Instant>,
    /// Frame arrivals and sizes within the bitrate window, oldest first.
    window: VecDeque<(Instant, usize)>,
    window_bytes: usize,
    over_bitrate_at: Option<Instant>,
    asked_at: Option<Instant>,
}

impl RouteGate {
    pub fn new(
        codec: CodecKind,
        limits: PictureLimits,
        decode_cap: DecodeSizeCap,
        max_bitrate: u32,
    ) -> Self {
        RouteGate {
            codec,
            limits,
            decode_cap,
            max_bitrate,
            route: Route::Transcode,
            size: None,
            rate: limits.max_fps.map(FrameRateLimiter::new),
            over_rate_at: None,
            window: VecDeque::new(),
            window_bytes: 0,
            over_bitrate_at: None,
            asked_at: None,
        }
    }

    /// The route of `frame`, received at `now`, with the filter `passthrough` or not.
    pub fn decide(
        &mut self,
        frame: &AssembledFrame,
        passthrough: bool,
        now: Instant,
    ) -> RouteDecision {
        if frame.keyframe {
            self.size = announced_size(self.codec, &frame.data);
        }
        let within_max_fps = self
            .rate
            .as_mut()
            .is_none_or(|rate| rate.admit(frame.rtp_timestamp));
        if !within_max_fps {
            self.over_rate_at = Some(now);
        }
        let budget = u64::from(self.max_bitrate) * BITRATE_WINDOW.as_secs();
        if self.bits_in_window(now, frame.data.len()) > budget {
            self.over_bitrate_at = Some(now);
        }
        let transcode_reason = self.transcode_reason(passthrough, now);
        let wanted = match transcode_reason {
            None => Route::Forward,
            Some(_) => Route::Transcode,
        };
        let mut decision = RouteDecision {
            route: self.route,
            switched: false,
            ask_keyframe: false,
            within_max_fps,
            transcode_reason,
        };
        if wanted != self.route {
            if frame.keyframe {
                self.route = wanted;
                self.asked_at = None;
                decision.route = wanted;
                decision.switched = true;
            } else if self
                .asked_at
                .is_none_or(|at| now.duration_since(at) >= KEYFRAME_ASK_INTERVAL)
            {
                self.asked_at = Some(now);
                decision.ask_keyframe = true;
            }
        }
        decision
    }

    /// Bits of the frames received within the window ending at `now`, this one of `bytes`
    /// included.
    fn bits_in_window(&mut self, now: Instant, bytes: usize) -> u64 {
        while let Some(&(at, old)) = self.window.front()
            && now.duration_since(at) >= BITRATE_WINDOW
        {
            self.window.pop_front();
            self.window_bytes -= old;
        }
        self.window.push_back((now, bytes));
        self.window_bytes += bytes;
        self.window_bytes as u64 * 8
    }

    fn transcode_reason(&self, passthrough: bool, now: Instant) -> Option<TranscodeReason> {
        let recent =
            |at: Option<Instant>| at.is_some_and(|at| now.duration_since(at) < CALM_PERIOD);
        if !passthrough {
            Some(TranscodeReason::Filter)
        } else if !self.size.is_some_and(|size| self.size_allowed(size)) {
            Some(TranscodeReason::PictureSize)
        } else if recent(self.over_rate_at) {
            Some(TranscodeReason::FrameRate)
        } else if recent(self.over_bitrate_at) {
            Some(TranscodeReason::Bitrate)
        } else {
            None
        }
    }

    /// Whether a picture of this announced size goes to the viewer unscaled and may be decoded
    /// at all. H264 announces its coded size, in whole 16x16 macroblocks, so its limits are
    /// rounded up to macroblocks too (1080 lines are coded as 1088).
    fn size_allowed(&self, (width, height): (u32, u32)) -> bool {
        let coded = |side: Option<u32>| match self.codec {
            CodecKind::Vp8 => side,
            CodecKind::H264 => side.map(|side| side.div_ceil(16).saturating_mul(16)),
        };
        let (max_width, max_height) = (coded(self.limits.max_width), coded(self.limits.max_height));
        let decodable = match self.codec {
            CodecKind::Vp8 => self.decode_cap.allows(width, height),
            CodecKind::H264 => self.decode_cap.allows_coded(width, height),
        };
        decodable && fit_within(width, height, max_width, max_height) == (width, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME_TICKS: u32 = 3000;

    /// A VP8 frame: a key frame announcing `width` x `height`, or an inter frame, of `bytes`.
    fn vp8(key: Option<(u16, u16)>, bytes: usize, index: u32) -> AssembledFrame {
        let mut data = vec![0u8; bytes.max(10)];
        match key {
            Some((width, height)) => {
                data[0] = 0x10;
                data[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                data[6..8].copy_from_slice(&width.to_le_bytes());
                data[8..10].copy_from_slice(&height.to_le_bytes());
            }
            None => data[0] = 0x11,
        }
        AssembledFrame {
            data,
            rtp_timestamp: index * FRAME_TICKS,
            keyframe: key.is_some(),
        }
    }

    fn vp8_gate(limits: PictureLimits) -> RouteGate {
        RouteGate::new(CodecKind::Vp8, limits, DecodeSizeCap::DEFAULT, 4_000_000)
    }

    /// Feeds 30 fps frames `from..to` (a key frame every `key_every`) and returns the decisions.
    fn feed(
        gate: &mut RouteGate,
        start: Instant,
        range: std::ops::Range<u32>,
        key_every: u32,
        passthrough: impl Fn(u32) -> bool,
    ) -> Vec<RouteDecision> {
        range
            .map(|i| {
                let key = (i % key_every == 0).then_some((640, 480));
                let at = start + Duration::from_millis(u64::from(i) * 1000 / 30);
                gate.decide(&vp8(key, 2000, i), passthrough(i), at)
            })
            .collect()
    }

    #[test]
    fn a_passthrough_stream_within_limits_is_forwarded_from_its_first_key_frame() {
        let mut gate = vp8_gate(PictureLimits::default());
        let decisions = feed(&mut gate, Instant::now(), 0..60, 30, |_| true);
        assert_eq!(decisions[0].route, Route::Forward);
        assert!(decisions[0].switched);
        assert!(
            decisions[1..]
                .iter()
                .all(|d| d.route == Route::Forward && !d.switched)
        );
        assert!(decisions.iter().all(|d| !d.ask_keyframe));
    }

    #[test]
    fn routes_change_only_at_key_frames_and_ask_for_one_meanwhile() {
        let mut gate = vp8_gate(PictureLimits::default());
        let start = Instant::now();
        // A filter from frame 10 to 40; key frames at 0, 30 and 60.
        let filtered = |i: u32| (10..40).contains(&i);
        let decisions = feed(&mut gate, start, 0..70, 30, |i| !filtered(i));
        let routes: Vec<Route> = decisions.iter().map(|d| d.route).collect();
        // Forwarding goes on until the key frame at 30, transcoding until the one at 60.
        assert!(routes[..30].iter().all(|r| *r == Route::Forward));
        assert!(routes[30..60].iter().all(|r| *r == Route::Transcode));
        assert!(routes[60..].iter().all(|r| *r == Route::Forward));
        let switched: Vec<usize> = (0..70).filter(|&i| decisions[i].switched).collect();
        assert_eq!(switched, vec![0, 30, 60]);
        // Asked at frame 10 and again every half second (15 frames) while waiting.
        let asked: Vec<usize> = (0..70).filter(|&i| decisions[i].ask_keyframe).collect();
        assert_eq!(asked, vec![10, 25, 40, 55]);
        assert_eq!(
            decisions[20].transcode_reason,
            Some(TranscodeReason::Filter)
        );
    }

    #[test]
    fn pictures_over_the_size_limits_or_the_decode_cap_are_transcoded() {
        let limits = PictureLimits {
            max_width: Some(640),
            max_height: Some(360),
            max_fps: None,
        };
        let mut gate = vp8_gate(limits);
        let now = Instant::now();
        let d = gate.decide(&vp8(Some((640, 480)), 2000, 0), true, now);
        assert_eq!(d.route, Route::Transcode);
        assert_eq!(d.transcode_reason, Some(TranscodeReason::PictureSize));
        // The camera sends a smaller picture: forwarded from that key frame on.
        let d = gate.decide(&vp8(Some((480, 360)), 2000, 1), true, now);
        assert_eq!(d.route, Route::Forward);

        let mut gate = vp8_gate(PictureLimits::default());
        let d = gate.decide(&vp8(Some((3840, 2160)), 2000, 0), true, now);
        assert_eq!(d.transcode_reason, Some(TranscodeReason::PictureSize));
        // An inter frame before any key frame announces no size.
        let mut gate = vp8_gate(PictureLimits::default());
        let d = gate.decide(&vp8(None, 2000, 0), true, now);
        assert_eq!(d.route, Route::Transcode);
    }

    #[test]
    fn h264_limits_count_whole_macroblocks() {
        let limits = PictureLimits {
            max_width: Some(1920),
            max_height: Some(1080),
            max_fps: None,
        };
        let gate = RouteGate::new(CodecKind::H264, limits, DecodeSizeCap::DEFAULT, 4_000_000);
        assert!(gate.size_allowed((1920, 1088)));
        assert!(!gate.size_allowed((1936, 1088)));
    }

    #[test]
    fn a_stream_over_max_fps_is_transcoded_until_it_has_kept_the_rate_for_the_calm_period() {
        let limits = PictureLimits {
            max_width: None,
            max_height: None,
            max_fps: Some(15),
        };
        let mut gate = vp8_gate(limits);
        let start = Instant::now();
        // 30 fps against a 15 fps limit: every other frame is over it.
        let decisions = feed(&mut gate, start, 0..90, 30, |_| true);
        assert_eq!(decisions[0].route, Route::Forward);
        assert!(!decisions[1].within_max_fps);
        assert_eq!(
            decisions[1].transcode_reason,
            Some(TranscodeReason::FrameRate)
        );
        assert!(decisions[30..].iter().all(|d| d.route == Route::Transcode));
        // Then 15 fps: forwarded again at the first key frame after the calm period.
        let calm_start = start + Duration::from_secs(3);
        let decisions: Vec<RouteDecision> = (0..90)
            .map(|i| {
                let at = calm_start + Duration::from_millis(u64::from(i) * 1000 / 15);
                let key = (i % 15 == 0).then_some((640, 480));
                gate.decide(&vp8(key, 2000, 1000 + 2 * i), true, at)
            })
            .collect();
        assert!(decisions.iter().all(|d| d.within_max_fps));
        let first_forward = decisions.iter().position(|d| d.route == Route::Forward);
        // Over the rate last at 3 s minus a frame; calm after 2 s: the key frame at 2 s + 0 s.
        assert_eq!(first_forward, Some(30));
    }

    #[test]
    fn a_stream_over_max_bitrate_is_transcoded() {
        let mut gate = RouteGate::new(
            CodecKind::Vp8,
            PictureLimits::default(),
            DecodeSizeCap::DEFAULT,
            1_000_000,
        );
        let start = Instant::now();
        let at = |i: u32| start + Duration::from_millis(u64::from(i) * 1000 / 30);
        // Three seconds of 3000-byte frames (720 kbit/s) with a 30,000-byte key frame every
        // second: within 1 Mbit/s over two seconds, key frames included.
        for i in 0..90 {
            let (key, bytes) = if i % 30 == 0 {
                (Some((640, 480)), 30_000)
            } else {
                (None, 3000)
            };
            let d = gate.decide(&vp8(key, bytes, i), true, at(i));
            assert_eq!(d.route, Route::Forward, "frame {i}");
        }
        // Then 6000 bytes a frame (1.44 Mbit/s): over the limit once they fill enough of the
        // window, transcoded from the next key frame on.
        let decisions: Vec<RouteDecision> = (90..150)
            .map(|i| {
                let key = (i % 30 == 0).then_some((640, 480));
                gate.decide(&vp8(key, 6000, i), true, at(i))
            })
            .collect();
        let asked = decisions.iter().position(|d| d.ask_keyframe);
        assert_eq!(asked, Some(14), "over 2 Mbit in two seconds at frame 104");
        assert_eq!(decisions[29].route, Route::Forward);
        assert_eq!(
            decisions[30].route,
            Route::Transcode,
            "the key frame at 120"
        );
        assert_eq!(
            decisions[30].transcode_reason,
            Some(TranscodeReason::Bitrate)
        );
    }
}
