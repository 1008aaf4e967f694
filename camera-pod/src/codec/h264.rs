//! H264 through OpenH264 (built from the source bundled with the `openh264` crate).
//!
//! The encoder writes Annex-B constrained baseline (profile_idc 66 with constraint_set0 and
//! constraint_set1), one slice per picture, no B-frames, real-time camera mode, bitrate rate
//! control without frame skipping, and SPS+PPS in front of every IDR so a receiver can start at
//! any key frame. That suits RTP packetization-mode=1 (FU-A for large NAL units).

use std::os::raw::{c_int, c_void};

use openh264::decoder::{Decoder as OpenH264Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Complexity, Encoder as OpenH264Encoder, EncoderConfig, FrameRate, FrameType,
    IntraFramePeriod, Profile, RateControlMode, SpsPpsStrategy, UsageType, VuiConfig,
};
use openh264::formats::YUVSource;
use openh264::{OpenH264API, Timestamp};

use super::clock::{EncodeClock, TICKS_PER_SECOND};
use super::planes::{layout_problem, packed_plane};
use super::{CodecError, CodecKind, Decoder, EncodedFrame, Encoder};
use crate::frame::{VideoFrame, chroma_size};

/// Values from OpenH264's `codec_app_def.h` / `codec_def.h` (stable ABI) for the encoder options
/// the `openh264` crate has no safe call for.
mod abi {
    use std::os::raw::c_int;

    pub const ENCODER_OPTION_FRAME_RATE: c_int = 4;
    pub const ENCODER_OPTION_BITRATE: c_int = 5;
    pub const ENCODER_OPTION_MAX_BITRATE: c_int = 6;
    pub const ENCODER_OPTION_TRACE_LEVEL: c_int = 25;
    pub const WELS_LOG_QUIET: u32 = 0;
    pub const SPATIAL_LAYER_0: c_int = 0;
    pub const SPATIAL_LAYER_ALL: c_int = 4;

    /// `SBitrateInfo`.
    #[repr(C)]
    pub struct BitrateInfo {
        pub layer: c_int,
        pub bitrate: c_int,
    }
}

/// Frame rate the rate control budgets for until the input shows its own (the camera's usual
/// rate); OpenH264 supports 1 to 30.
const FRAME_RATE: f32 = 30.0;

/// Pictures between periodic IDRs: key frames come on request (PLI/FIR); this is a safety net.
const IDR_PERIOD: u32 = 9000;

fn decode_error(message: impl Into<String>) -> CodecError {
    CodecError::Decode {
        codec: CodecKind::H264,
        message: message.into(),
    }
}

fn encode_error(message: impl Into<String>) -> CodecError {
    CodecError::Encode {
        codec: CodecKind::H264,
        message: message.into(),
    }
}

pub(crate) struct H264Decoder {
    decoder: OpenH264Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<Self, CodecError> {
        let decoder =
            OpenH264Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
                .map_err(|e| decode_error(format!("init: {e}")))?;
        Ok(H264Decoder { decoder })
    }
}

/// OpenH264's `DECODING_STATE` bits in words.
fn decoding_state_words(state: i64) -> String {
    const STATES: [(i64, &str); 11] = [
        (0x1, "frame pending"),
        (0x2, "reference lost"),
        (0x4, "bitstream error"),
        (0x8, "dependency layer lost"),
        (0x10, "no parameter sets"),
        (0x20, "data error concealed"),
        (0x40, "reference list missing"),
        (0x1000, "invalid argument"),
        (0x2000, "decoder not initialised"),
        (0x4000, "out of memory"),
        (0x8000, "output buffer too small"),
    ];
    let words: Vec<&str> = STATES
        .iter()
        .filter(|(bit, _)| state & bit != 0)
        .map(|(_, word)| *word)
        .collect();
    if words.is_empty() {
        format!("OpenH264 state {state}")
    } else {
        words.join(", ")
    }
}

/// Whether `data` begins with an Annex-B start code (00 00 01 or 00 00 00 01).
fn starts_with_start_code(data: &[u8]) -> bool {
    data.starts_with(&[0, 0, 1]) || data.starts_with(&[0, 0, 0, 1])
}

impl Decoder for H264Decoder {
    /// `encoded` is one access unit in Annex-B form (what the RTP depacketizer reassembles).
    fn decode(
        &mut self,
        encoded: &[u8],
        rtp_timestamp: u32,
    ) -> Result<Option<VideoFrame>, CodecError> {
        if !starts_with_start_code(encoded) {
            return Err(decode_error("not an Annex-B access unit (no start code)"));
        }
        let decoded = self
            .decoder
            .decode(encoded)
            .map_err(|e| match e.native_code() {
                0 => decode_error(e.to_string()),
                state => decode_error(decoding_state_words(state)),
            });
        let Some(picture) = decoded? else {
            return Ok(None);
        };
        let (width, height) = picture.dimensions();
        let (y_stride, u_stride, v_stride) = picture.strides();
        let (w32, h32) = (
            u32::try_from(width).map_err(|_| decode_error("picture too wide"))?,
            u32::try_from(height).map_err(|_| decode_error("picture too tall"))?,
        );
        let (cw, ch) = chroma_size(w32, h32);
        let plane = |src: &[u8], stride, w, h, name| {
            packed_plane(src, stride, w, h)
                .ok_or_else(|| decode_error(format!("decoded {name} plane is too small")))
        };
        Ok(Some(VideoFrame {
            width: w32,
            height: h32,
            y: plane(picture.y(), y_stride, width, height, "Y")?,
            u: plane(picture.u(), u_stride, cw as usize, ch as usize, "U")?,
            v: plane(picture.v(), v_stride, cw as usize, ch as usize, "V")?,
            rtp_timestamp,
        }))
    }
}

/// A tightly packed `VideoFrame` as OpenH264's source picture.
struct FrameSource<'a>(&'a VideoFrame);

impl YUVSource for FrameSource<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width as usize, self.0.height as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let cw = self.0.chroma_width() as usize;
        (self.0.width as usize, cw, cw)
    }

    fn y(&self) -> &[u8] {
        &self.0.y
    }

    fn u(&self) -> &[u8] {
        &self.0.u
    }

    fn v(&self) -> &[u8] {
        &self.0.v
    }
}

pub(crate) struct H264Encoder {
    bitrate_bps: u32,
    clock: EncodeClock,
    session: Option<EncoderSession>,
}

/// An OpenH264 encoder for one picture size.
struct EncoderSession {
    encoder: OpenH264Encoder,
    width: u32,
    height: u32,
    /// Target bitrate the encoder was created with.
    start_target: u32,
    /// Rates the running encoder uses; `None` until its first picture initialises it.
    applied: Option<Rates>,
}

/// Target and ceiling bitrate and frame rate of OpenH264's rate control, which spends
/// `target / fps` bits per picture.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    target: u32,
    max: u32,
    fps: f32,
}

impl Rates {
    /// The ceiling leaves rate control room above the target (OpenH264 undershoots when they
    /// are equal). The frame rate is rounded to whole pictures per second so that jitter in the
    /// input does not reconfigure the encoder on every picture.
    fn new(target: u32, fps: f64) -> Self {
        let target = target.max(1000);
        Rates {
            target,
            max: target.saturating_add(target / 2),
            fps: fps.round().clamp(1.0, f64::from(FRAME_RATE)) as f32,
        }
    }
}

impl H264Encoder {
    pub fn new(bitrate_bps: u32) -> Result<Self, CodecError> {
        // Fail here rather than on the first picture when OpenH264 cannot make an encoder.
        EncoderSession::new(64, 64, bitrate_bps)?;
        Ok(H264Encoder {
            bitrate_bps,
            clock: EncodeClock::default(),
            session: None,
        })
    }
}

impl Encoder for H264Encoder {
    fn encode(
        &mut self,
        frame: &VideoFrame,
        force_keyframe: bool,
    ) -> Result<EncodedFrame, CodecError> {
        if let Some(problem) = layout_problem(frame) {
            return Err(encode_error(problem));
        }
        if !frame.width.is_multiple_of(2) || !frame.height.is_multiple_of(2) {
            return Err(encode_error(format!(
                "{}x{}: H264 needs even picture sides",
                frame.width, frame.height
            )));
        }
        let session = match self.session.take() {
            Some(s) if (s.width, s.height) == (frame.width, frame.height) => s,
            old => {
                // Free the old encoder before making the new one; its first picture is an IDR.
                drop(old);
                EncoderSession::new(frame.width, frame.height, self.bitrate_bps)?
            }
        };
        let session = self.session.insert(session);
        let tick = self.clock.next(frame.rtp_timestamp);
        session.apply_rates(Rates::new(self.bitrate_bps, self.clock.frame_rate()));
        let millis = u64::try_from(tick.pts * 1000 / TICKS_PER_SECOND).unwrap_or(0);
        session.encode(frame, Timestamp::from_millis(millis), force_keyframe)
    }

    fn set_bitrate(&mut self, bits_per_second: u32) {
        // Applied before the next picture: OpenH264 takes rate changes only once initialised.
        self.bitrate_bps = bits_per_second;
    }
}

/// Sets an OpenH264 option, logging a refusal. Except for the trace level, OpenH264 refuses
/// options until its first picture has initialised it.
///
/// # Safety
/// `T` must be the type OpenH264 reads for `option` (an `unsigned int` for the trace level, a
/// `float` for the frame rate, `SBitrateInfo` for bitrates).
unsafe fn set_option<T>(encoder: &mut OpenH264Encoder, option: c_int, value: &mut T) {
    // SAFETY: `value` is live and of the right type (this function's contract); OpenH264 reads
    // it only during the call.
    let status = unsafe {
        encoder
            .raw_api()
            .set_option(option, (value as *mut T).cast::<c_void>())
    };
    if status != 0 {
        tracing::warn!(option, status, "OpenH264 refused an option change");
    }
}

impl EncoderSession {
    fn new(width: u32, height: u32, bitrate_bps: u32) -> Result<Self, CodecError> {
        let rates = Rates::new(bitrate_bps, f64::from(FRAME_RATE));
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(rates.target))
            .max_frame_rate(FrameRate::from_hz(FRAME_RATE))
            // One output per input: the filter already drops what cannot be kept up with.
            .skip_frames(false)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .intra_frame_period(IntraFramePeriod::from_num_frames(IDR_PERIOD))
            .complexity(Complexity::Low)
            // Background detection skips blocks whose luma is still, so colour-only changes
            // (a filter recolouring a still background) would never reach the receiver.
            .background_detection(false)
            // One thread and one slice per picture: low latency, simple packetization.
            .num_threads(1)
            .vui(VuiConfig::bt601());
        let mut encoder = OpenH264Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| encode_error(format!("init: {e}")))?;
        // Silence OpenH264's own console log before its initialisation runs (the `openh264` crate
        // quiets it only afterwards, so each new encoder printed a parameter warning). The trace
        // level is the one option OpenH264 takes before initialisation.
        let mut quiet = abi::WELS_LOG_QUIET;
        // SAFETY: the trace level is an unsigned int.
        unsafe { set_option(&mut encoder, abi::ENCODER_OPTION_TRACE_LEVEL, &mut quiet) };
        Ok(EncoderSession {
            encoder,
            width,
            height,
            start_target: rates.target,
            applied: None,
        })
    }

    /// Moves the running encoder to `want`. Ceiling and target change in the order that keeps
    /// target <= ceiling at every step, which OpenH264 insists on.
    fn apply_rates(&mut self, want: Rates) {
        let Some(current) = self.applied else { return };
        if current == want {
            return;
        }
        if (current.target, current.max) != (want.target, want.max) {
            let max = (
                abi::ENCODER_OPTION_MAX_BITRATE,
                abi::SPATIAL_LAYER_0,
                want.max,
            );
            let target = (
                abi::ENCODER_OPTION_BITRATE,
                abi::SPATIAL_LAYER_ALL,
                want.target,
            );
            let steps = if want.target > current.target {
                [max, target]
            } else {
                [target, max]
            };
            for (option, layer, bitrate) in steps {
                let mut info = abi::BitrateInfo {
                    layer,
                    bitrate: c_int::try_from(bitrate).unwrap_or(c_int::MAX),
                };
                // SAFETY: both bitrate options read an `SBitrateInfo`.
                unsafe { set_option(&mut self.encoder, option, &mut info) };
            }
        }
        if current.fps != want.fps {
            let mut fps = want.fps;
            // SAFETY: the frame rate is a float.
            unsafe { set_option(&mut self.encoder, abi::ENCODER_OPTION_FRAME_RATE, &mut fps) };
        }
        self.applied = Some(want);
    }

    /// Encodes one picture whose size matches this session.
    fn encode(
        &mut self,
        frame: &VideoFrame,
        at: Timestamp,
        force_keyframe: bool,
    ) -> Result<EncodedFrame, CodecError> {
        if force_keyframe && self.applied.is_some() {
            self.encoder.force_intra_frame();
        }
        let bitstream = self
            .encoder
            .encode_at(&FrameSource(frame), at)
            .map_err(|e| encode_error(e.to_string()))?;
        let frame_type = bitstream.frame_type();
        let data = bitstream.to_vec();
        if data.is_empty() || frame_type == FrameType::Skip {
            return Err(encode_error("encoder produced no frame for the picture"));
        }
        if self.applied.is_none() {
            // The `openh264` crate starts the encoder with ceiling == target.
            self.applied = Some(Rates {
                target: self.start_target,
                max: self.start_target,
                fps: FRAME_RATE,
            });
        }
        Ok(EncodedFrame {
            data,
            keyframe: frame_type == FrameType::IDR,
            rtp_timestamp: frame.rtp_timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;

    /// NAL unit types in an Annex-B access unit, in order.
    fn nal_types(data: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        let mut i = 0;
        while i + 3 < data.len() {
            if data[i..i + 3] == [0, 0, 1] {
                types.push(data[i + 3] & 0x1f);
                i += 3;
            } else {
                i += 1;
            }
        }
        types
    }

    /// An IDR that carries its own SPS and PPS in front, so a new receiver can start there.
    fn is_keyframe(data: &[u8]) -> bool {
        let types = nal_types(data);
        let (sps, pps, idr) = (
            types.iter().position(|&t| t == 7),
            types.iter().position(|&t| t == 8),
            types.iter().position(|&t| t == 5),
        );
        match (sps, pps, idr) {
            (Some(s), Some(p), Some(i)) => s < i && p < i,
            _ => false,
        }
    }

    #[test]
    fn round_trip_keeps_quality() {
        conformance::round_trip_keeps_quality(CodecKind::H264);
    }

    #[test]
    fn forced_keyframe_starts_a_new_receiver() {
        conformance::forced_keyframe_starts_a_new_receiver(CodecKind::H264, is_keyframe);
    }

    #[test]
    fn follows_size_changes() {
        conformance::follows_size_changes(CodecKind::H264);
    }

    #[test]
    fn follows_bitrate_changes() {
        conformance::follows_bitrate_changes(CodecKind::H264);
    }

    #[test]
    fn keeps_bitrate_at_lower_frame_rates() {
        conformance::keeps_bitrate_at_lower_frame_rates(CodecKind::H264);
    }

    #[test]
    fn survives_extreme_bitrates() {
        conformance::survives_extreme_bitrates(CodecKind::H264);
    }

    #[test]
    fn refuses_malformed_pictures() {
        conformance::refuses_malformed_pictures(CodecKind::H264);
        let mut encoder = H264Encoder::new(500_000).unwrap();
        assert!(
            encoder
                .encode(&conformance::moving_pattern(321, 240, 0), false)
                .is_err()
        );
    }

    #[test]
    fn recovers_from_garbage() {
        let noise = conformance::random_bytes(3000, 11);
        // Slices whose bodies are noise, a PPS that cannot parse, and no start code at all.
        let mut idr = vec![0, 0, 0, 1, 0x65];
        idr.extend(conformance::random_bytes(500, 5));
        let mut p_slice = vec![0, 0, 0, 1, 0x41];
        p_slice.extend(conformance::random_bytes(500, 6));
        let pps = [0, 0, 0, 1, 0x68, 0xff, 0xff, 0xff];
        conformance::recovers_from_garbage(CodecKind::H264, &[&noise, &idr, &p_slice, &pps, &[]]);
    }

    #[test]
    fn lost_frame_is_an_error_until_the_next_idr() {
        let mut encoder = H264Encoder::new(1_000_000).unwrap();
        let mut decoder = H264Decoder::new().unwrap();
        for i in 0..8 {
            let encoded = encoder
                .encode(&conformance::moving_pattern(320, 240, i), i == 6)
                .unwrap();
            match i {
                3 => continue, // lost on the way
                0..=2 | 6.. => assert!(
                    decoder.decode(&encoded.data, 0).unwrap().is_some(),
                    "frame {i}"
                ),
                _ => assert!(
                    decoder.decode(&encoded.data, 0).is_err(),
                    "frame {i} decoded past a lost reference"
                ),
            }
        }
    }

    #[test]
    fn decoding_errors_are_described() {
        assert_eq!(decoding_state_words(4), "bitstream error");
        assert_eq!(
            decoding_state_words(20),
            "bitstream error, no parameter sets"
        );
        assert_eq!(decoding_state_words(1 << 20), "OpenH264 state 1048576");
    }

    #[test]
    fn stream_is_constrained_baseline_single_slice() {
        let mut encoder = H264Encoder::new(1_000_000).unwrap();
        for i in 0..5 {
            let encoded = encoder
                .encode(&conformance::moving_pattern(640, 480, i), false)
                .unwrap();
            let types = nal_types(&encoded.data);
            let slices = types.iter().filter(|&&t| t == 1 || t == 5).count();
            assert_eq!(slices, 1, "frame {i}: NAL types {types:?}");
            if i == 0 {
                assert_eq!(types, [7, 8, 5]);
                let sps = &encoded.data[encoded.data.iter().position(|&b| b == 0x67).unwrap()..];
                // profile_idc 66 (baseline), constraint_set0 and constraint_set1 (constrained).
                assert_eq!(sps[1], 66);
                assert_eq!(sps[2] & 0xc0, 0xc0);
            }
        }
    }

    #[test]
    fn parameter_sets_alone_give_no_picture() {
        let mut encoder = H264Encoder::new(1_000_000).unwrap();
        let encoded = encoder
            .encode(&conformance::moving_pattern(320, 240, 0), false)
            .unwrap();
        let idr_at = encoded
            .data
            .windows(5)
            .position(|w| w == [0, 0, 0, 1, 0x65])
            .unwrap();
        let mut decoder = H264Decoder::new().unwrap();
        assert!(
            decoder
                .decode(&encoded.data[..idr_at], 1)
                .unwrap()
                .is_none()
        );
        assert!(
            decoder
                .decode(&encoded.data[idr_at..], 1)
                .unwrap()
                .is_some()
        );
    }
}
