//! What a session allows the pod to process: a largest picture (`--max-width`/`--max-height`)
//! and a highest frame rate (`--max-fps`). Both apply between the decoder and the filter, so the
//! filter and the encoder never work on more than that. Also the bitrate bounds the encoder adapts
//! within (`--min-bitrate`, `--start-bitrate`, `--max-bitrate`). Pure functions and small state
//! machines.

use crate::filter::composite::PlaneScaler;
use crate::frame::{VideoFrame, chroma_size};

/// RTP video clock rate (ticks per second).
const RTP_CLOCK: u32 = 90_000;

/// Limits on the pictures that reach the filter; `None` means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PictureLimits {
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    pub max_fps: Option<u32>,
}

/// A picture limit out of the range the flags (and a warm-pool claim) accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PictureLimitError {
    #[error("max_width {0} is below {min}", min = PictureLimits::MIN_SIDE)]
    Width(u32),
    #[error("max_height {0} is below {min}", min = PictureLimits::MIN_SIDE)]
    Height(u32),
    #[error("max_fps {0} is not within 1 to {max}", max = PictureLimits::MAX_FPS)]
    Fps(u32),
}

impl PictureLimits {
    /// Smallest accepted largest width or height (`--max-width`, `--max-height`): the smallest
    /// even side a picture is scaled to.
    pub const MIN_SIDE: u32 = 2;
    /// Highest frame rate limit (`--max-fps`); the smallest is 1.
    pub const MAX_FPS: u32 = 240;

    /// The limits, when each one is within the range the flags accept.
    pub fn checked(self) -> Result<Self, PictureLimitError> {
        let too_small = |side: Option<u32>| side.filter(|&side| side < Self::MIN_SIDE);
        if let Some(width) = too_small(self.max_width) {
            return Err(PictureLimitError::Width(width));
        }
        if let Some(height) = too_small(self.max_height) {
            return Err(PictureLimitError::Height(height));
        }
        if let Some(fps) = self
            .max_fps
            .filter(|fps| !(1..=Self::MAX_FPS).contains(fps))
        {
            return Err(PictureLimitError::Fps(fps));
        }
        Ok(self)
    }

    /// These limits, each one replaced by `other`'s where `other` sets it.
    pub fn overridden_by(self, other: PictureLimits) -> PictureLimits {
        PictureLimits {
            max_width: other.max_width.or(self.max_width),
            max_height: other.max_height.or(self.max_height),
            max_fps: other.max_fps.or(self.max_fps),
        }
    }
}

/// Bitrate bounds the encoder adapts within, in bits per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitrateBounds {
    pub min: u32,
    pub start: u32,
    pub max: u32,
}

impl BitrateBounds {
    /// Clamps an estimate from the receiver into the bounds.
    pub fn clamp(&self, bits_per_second: u32) -> u32 {
        bits_per_second.clamp(self.min, self.max)
    }
}

/// The size a `width` x `height` picture is scaled to so that it fits the limits: unchanged when
/// it already fits, else the largest size with the same aspect ratio that fits, rounded down to
/// even sides (H264 codes only even sizes), at least 2x2.
pub fn fit_within(
    width: u32,
    height: u32,
    max_width: Option<u32>,
    max_height: Option<u32>,
) -> (u32, u32) {
    let max_w = max_width.unwrap_or(u32::MAX);
    let max_h = max_height.unwrap_or(u32::MAX);
    if width <= max_w && height <= max_h || width == 0 || height == 0 {
        return (width, height);
    }
    // Scale by the tighter of the two ratios, in exact integer arithmetic.
    let (w, h) = (u64::from(width), u64::from(height));
    let (mw, mh) = (u64::from(max_w), u64::from(max_h));
    let (new_w, new_h) = if mw * h <= mh * w {
        (mw, h * mw / w)
    } else {
        (w * mh / h, mh)
    };
    let even = |v: u64| (v.min(u64::from(u32::MAX)) as u32 & !1).max(2);
    (even(new_w), even(new_h))
}

/// Scales I420 pictures down to a given size (bilinear, per plane); keeps its tables between
/// pictures of the same size.
#[derive(Debug, Default)]
pub struct Downscaler {
    planes: [PlaneScaler; 3],
}

impl Downscaler {
    /// `frame` scaled to `width` x `height`, with the same RTP timestamp.
    pub fn scale(&mut self, frame: &VideoFrame, width: u32, height: u32) -> VideoFrame {
        let mut out = VideoFrame::filled(width, height, 0, 128, 128);
        out.rtp_timestamp = frame.rtp_timestamp;
        let (scw, sch) = chroma_size(frame.width, frame.height);
        let (dcw, dch) = chroma_size(width, height);
        let [y, u, v] = &mut self.planes;
        y.resize(
            &frame.y,
            frame.width,
            frame.height,
            &mut out.y,
            width,
            height,
        );
        u.resize(&frame.u, scw, sch, &mut out.u, dcw, dch);
        v.resize(&frame.v, scw, sch, &mut out.v, dcw, dch);
        out
    }
}

/// Drops pictures that come faster than `max_fps`, judged by their RTP timestamps (the camera's
/// capture clock, so network jitter does not cause drops). Keeps an even cadence: at 30 fps in
/// and 24 out, four of every five pictures pass.
#[derive(Debug, Clone)]
pub struct FrameRateLimiter {
    /// Minimum spacing in RTP ticks.
    interval: u32,
    /// RTP timestamp from which the next picture is due; `None` before the first picture.
    next_due: Option<u32>,
}

impl FrameRateLimiter {
    /// A limiter letting through at most `max_fps` pictures per second (`max_fps` >= 1).
    pub fn new(max_fps: u32) -> Self {
        FrameRateLimiter {
            interval: RTP_CLOCK / max_fps.clamp(1, RTP_CLOCK),
            next_due: None,
        }
    }

    /// Whether the picture with this RTP timestamp goes on to the filter (`false`: drop it).
    pub fn admit(&mut self, rtp_timestamp: u32) -> bool {
        let interval = i64::from(self.interval);
        // Capture clocks jitter by a few milliseconds: a picture a little early (a quarter
        // interval, at most 15 ms) still counts as on time; the cadence below keeps the average
        // rate at the limit.
        let tolerance = (interval / 4).min(i64::from(RTP_CLOCK) * 15 / 1000);
        let Some(due) = self.next_due else {
            self.next_due = Some(rtp_timestamp.wrapping_add(self.interval));
            return true;
        };
        // Signed distance on the wrapping 32-bit RTP clock.
        let early_by = -i64::from(rtp_timestamp.wrapping_sub(due) as i32);
        if early_by > tolerance && early_by <= 2 * interval {
            return false;
        }
        self.next_due = Some(if early_by < -interval || early_by > 2 * interval {
            // A pause (or a sender whose clock jumped): start a new cadence at this picture.
            rtp_timestamp.wrapping_add(self.interval)
        } else {
            due.wrapping_add(self.interval)
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_against_the_flag_ranges_and_overridden_one_by_one() {
        let limits = |max_width, max_height, max_fps| PictureLimits {
            max_width,
            max_height,
            max_fps,
        };
        for fine in [
            PictureLimits::default(),
            limits(Some(2), Some(2), Some(1)),
            limits(Some(3840), None, Some(240)),
        ] {
            assert_eq!(fine.checked(), Ok(fine));
        }
        assert_eq!(
            limits(Some(1), None, None).checked(),
            Err(PictureLimitError::Width(1))
        );
        assert_eq!(
            limits(None, Some(0), None).checked(),
            Err(PictureLimitError::Height(0))
        );
        for fps in [0, 241] {
            assert_eq!(
                limits(None, None, Some(fps)).checked(),
                Err(PictureLimitError::Fps(fps))
            );
        }
        let start = limits(Some(1280), Some(720), None);
        assert_eq!(
            start.overridden_by(limits(None, Some(480), Some(15))),
            limits(Some(1280), Some(480), Some(15))
        );
        assert_eq!(start.overridden_by(PictureLimits::default()), start);
    }

    #[test]
    fn pictures_that_fit_are_left_alone() {
        assert_eq!(fit_within(640, 480, None, None), (640, 480));
        assert_eq!(fit_within(640, 480, Some(640), Some(480)), (640, 480));
        assert_eq!(
            fit_within(641, 481, Some(1280), None),
            (641, 481),
            "no scaling, no rounding"
        );
    }

    #[test]
    fn larger_pictures_keep_their_aspect_ratio_with_even_sides() {
        assert_eq!(fit_within(1280, 720, Some(640), Some(480)), (640, 360));
        assert_eq!(fit_within(1920, 1080, None, Some(720)), (1280, 720));
        assert_eq!(
            fit_within(640, 480, Some(500), None),
            (500, 374),
            "375 rounds down to even"
        );
        assert_eq!(
            fit_within(480, 640, Some(640), Some(480)),
            (360, 480),
            "portrait"
        );
        assert_eq!(
            fit_within(1280, 720, Some(641), Some(641)),
            (640, 360),
            "odd limits give even sides"
        );
        assert_eq!(
            fit_within(4000, 2, Some(100), None),
            (100, 2),
            "never below 2x2"
        );
    }

    #[test]
    fn downscaling_keeps_the_picture() {
        let mut frame = VideoFrame::filled(64, 48, 0, 90, 200);
        for (i, y) in frame.y.iter_mut().enumerate() {
            *y = if (i % 64) < 32 { 40 } else { 220 };
        }
        frame.rtp_timestamp = 1234;
        let small = Downscaler::default().scale(&frame, 32, 24);
        assert_eq!(
            (small.width, small.height, small.rtp_timestamp),
            (32, 24, 1234)
        );
        assert_eq!(
            (small.y.len(), small.u.len(), small.v.len()),
            (32 * 24, 16 * 12, 16 * 12)
        );
        assert_eq!(
            (small.y[32 * 10 + 2], small.y[32 * 10 + 29]),
            (40, 220),
            "left dark, right bright"
        );
        assert!(small.u.iter().all(|&u| u == 90) && small.v.iter().all(|&v| v == 200));
    }

    /// Which of `count` pictures at `fps_in` (RTP timestamps from `start`) pass a `max_fps` limiter.
    fn passed(max_fps: u32, fps_in: u32, start: u32, count: u32) -> Vec<u32> {
        let mut limiter = FrameRateLimiter::new(max_fps);
        (0..count)
            .filter(|i| limiter.admit(start.wrapping_add(i * RTP_CLOCK / fps_in)))
            .collect()
    }

    #[test]
    fn a_faster_camera_is_thinned_to_the_limit_evenly() {
        let kept = passed(24, 30, 0, 300);
        assert_eq!(kept.len(), 240, "10 s at 30 fps -> 24 fps");
        assert!(
            kept.windows(2).all(|w| w[1] - w[0] <= 2),
            "no long gaps: {kept:?}"
        );
        assert_eq!(passed(15, 30, 0, 300).len(), 150);
        assert_eq!(passed(30, 60, 0, 600).len(), 300);
        assert_eq!(passed(1, 30, 0, 90).len(), 3);
    }

    #[test]
    fn a_camera_within_the_limit_loses_nothing() {
        assert_eq!(passed(30, 30, 0, 300).len(), 300);
        assert_eq!(passed(30, 15, 0, 300).len(), 300);
        assert_eq!(passed(24, 24, 7, 240).len(), 240);
    }

    #[test]
    fn capture_jitter_at_the_limit_drops_nothing() {
        let mut limiter = FrameRateLimiter::new(30);
        // 30 fps with +-2 ms of capture jitter.
        let jitter = [0i64, 180, -180, 90, -90, 0, 150, -150];
        let kept = (0..300i64)
            .filter(|&i| {
                limiter.admit((i * 3000 + jitter[i as usize % jitter.len()] + 1000) as u32)
            })
            .count();
        assert_eq!(kept, 300);
    }

    #[test]
    fn the_rtp_clock_may_wrap_and_jump() {
        let start = u32::MAX - 3000 * 10;
        assert_eq!(
            passed(15, 30, start, 60).len(),
            30,
            "across the 32-bit wrap"
        );
        let mut limiter = FrameRateLimiter::new(10);
        assert!(limiter.admit(900_000));
        assert!(!limiter.admit(903_000));
        // The sender restarts its clock far back, or pauses for a minute: both resume at once.
        assert!(limiter.admit(5_000));
        assert!(!limiter.admit(8_000));
        assert!(limiter.admit(5_000 + 60 * RTP_CLOCK));
    }
}
