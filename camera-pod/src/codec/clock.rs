//! Encoder time line: RTP timestamps (32-bit, 90 kHz, wrapping) turned into the strictly
//! increasing presentation times that encoders' rate control expects.

/// Default spacing between pictures (one frame at 30 fps) when the input gives no usable spacing.
pub(crate) const DEFAULT_FRAME_TICKS: i64 = 3000;

/// RTP clock rate of video.
pub(crate) const TICKS_PER_SECOND: i64 = 90_000;

#[derive(Debug)]
pub(crate) struct EncodeClock {
    last: Option<(u32, i64)>,
    /// Moving average of the spacing between pictures, in ticks.
    average_spacing: f64,
}

impl Default for EncodeClock {
    fn default() -> Self {
        EncodeClock {
            last: None,
            average_spacing: DEFAULT_FRAME_TICKS as f64,
        }
    }
}

/// One picture's place on the encoder's time line, in 90 kHz ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tick {
    pub pts: i64,
    pub duration: i64,
}

impl EncodeClock {
    /// Places the picture stamped `rtp_timestamp` after the previous one. The RTP timestamp
    /// wraps around; a picture that does not move forward (repeated or reordered timestamp)
    /// carries no timing, so it counts as one frame at 30 fps: time never goes backwards and
    /// rate control never sees a near-zero frame duration.
    pub fn next(&mut self, rtp_timestamp: u32) -> Tick {
        let tick = match self.last {
            None => Tick {
                pts: 0,
                duration: DEFAULT_FRAME_TICKS,
            },
            Some((last_rtp, last_pts)) => {
                // Signed distance handles wrap-around of the 32-bit clock.
                let delta = match i64::from(rtp_timestamp.wrapping_sub(last_rtp) as i32) {
                    d if d > 0 => d,
                    _ => DEFAULT_FRAME_TICKS,
                };
                Tick {
                    pts: last_pts + delta,
                    duration: delta,
                }
            }
        };
        self.last = Some((rtp_timestamp, tick.pts));
        // One long pause (camera stalled) moves the estimate only a little; a lasting change of
        // rate still comes through within a few dozen pictures.
        let spacing = (tick.duration as f64)
            .min(3.0 * self.average_spacing)
            .min(TICKS_PER_SECOND as f64);
        self.average_spacing += (spacing - self.average_spacing) / 8.0;
        tick
    }

    /// Pictures per second over the last few pictures.
    pub fn frame_rate(&self) -> f64 {
        TICKS_PER_SECOND as f64 / self.average_spacing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rtp_spacing_across_wrap_around() {
        let mut clock = EncodeClock::default();
        let start = u32::MAX - 2999;
        assert_eq!(
            clock.next(start),
            Tick {
                pts: 0,
                duration: DEFAULT_FRAME_TICKS
            }
        );
        assert_eq!(
            clock.next(start.wrapping_add(3000)),
            Tick {
                pts: 3000,
                duration: 3000
            }
        );
        assert_eq!(
            clock.next(start.wrapping_add(9000)),
            Tick {
                pts: 9000,
                duration: 6000
            }
        );
    }

    #[test]
    fn frame_rate_follows_the_input() {
        let mut clock = EncodeClock::default();
        assert_eq!(clock.frame_rate(), 30.0);
        for i in 0..40 {
            clock.next(i * 6000);
        }
        assert!(
            (clock.frame_rate() - 15.0).abs() < 0.5,
            "{}",
            clock.frame_rate()
        );
        clock.next(40 * 6000 + 10 * 90_000);
        assert!(
            clock.frame_rate() > 10.0,
            "a stall drags the estimate down only a little"
        );
    }

    #[test]
    fn never_goes_backwards() {
        let mut clock = EncodeClock::default();
        clock.next(90_000);
        assert_eq!(
            clock.next(90_000),
            Tick {
                pts: 3000,
                duration: DEFAULT_FRAME_TICKS
            }
        );
        assert_eq!(clock.next(80_000).pts, 6000);
        assert_eq!(clock.next(83_000).pts, 9000);
        assert_eq!(clock.frame_rate(), 30.0);
    }
}
