//! VP8 through the system libvpx (`env-libvpx-sys` bindings).
//!
//! The encoder is tuned for a live camera: one-pass CBR, no lookahead, error resilient, fixed
//! real-time speed, no dropped pictures (the filter already drops what it cannot keep up with),
//! key frames on demand. All libvpx calls stay in this file behind two safe types.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_uint, c_ulong};
use std::ptr;

use vpx_sys as vpx;

use super::clock::{EncodeClock, TICKS_PER_SECOND, Tick};
use super::planes::{layout_problem, packed_plane};
use super::{CodecError, CodecKind, Decoder, EncodedFrame, Encoder};
use crate::frame::{VideoFrame, chroma_size};

/// Largest picture side VP8 can code (14-bit size fields).
const MAX_SIDE: u32 = 16383;

fn decode_error(message: impl Into<String>) -> CodecError {
    CodecError::Decode {
        codec: CodecKind::Vp8,
        message: message.into(),
    }
}

fn encode_error(message: impl Into<String>) -> CodecError {
    CodecError::Encode {
        codec: CodecKind::Vp8,
        message: message.into(),
    }
}

/// libvpx's description of `err`, with the context's detail when it has one.
fn describe(ctx: &mut vpx::vpx_codec_ctx_t, err: vpx::vpx_codec_err_t) -> String {
    // SAFETY: both functions return null or a NUL-terminated string owned by libvpx that stays
    // valid until the next call on `ctx`; it is copied out at once.
    unsafe {
        let text = vpx::vpx_codec_err_to_string(err);
        let mut message = if text.is_null() {
            format!("{err:?}")
        } else {
            CStr::from_ptr(text).to_string_lossy().into_owned()
        };
        let detail = vpx::vpx_codec_error_detail(ctx);
        if !detail.is_null() {
            message.push_str(": ");
            message.push_str(&CStr::from_ptr(detail).to_string_lossy());
        }
        message
    }
}

/// An initialised libvpx codec context (encoder or decoder), destroyed on drop. Boxed so its
/// address never changes while libvpx holds it.
struct Context(Box<vpx::vpx_codec_ctx_t>);

// SAFETY: a libvpx context is plain heap state with no thread affinity; `&mut self` on every
// call keeps it from being used by two threads at once.
unsafe impl Send for Context {}

impl Context {
    /// A zeroed context for an `*_init_ver` call to fill in.
    fn blank() -> Box<vpx::vpx_codec_ctx_t> {
        // SAFETY: every field is a pointer, an integer, a union of pointers, or `err`, whose
        // zero value is `VPX_CODEC_OK`: all-zero bytes are a valid value.
        Box::new(unsafe { std::mem::zeroed() })
    }

    fn raw(&mut self) -> &mut vpx::vpx_codec_ctx_t {
        &mut self.0
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: only contexts whose init succeeded are wrapped in `Context`.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.0);
        }
    }
}

pub(crate) struct Vp8Decoder {
    ctx: Context,
}

impl Vp8Decoder {
    pub fn new() -> Result<Self, CodecError> {
        // One thread: decoding runs as packets arrive and VP8 decodes 720p well within a frame
        // time on one core; extra threads would compete with the filter.
        let cfg = vpx::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        };
        let mut ctx = Context::blank();
        // SAFETY: `ctx` is a valid blank context and `cfg` outlives the call (libvpx copies it).
        let err = unsafe {
            vpx::vpx_codec_dec_init_ver(
                &mut *ctx,
                vpx::vpx_codec_vp8_dx(),
                &cfg,
                0,
                vpx::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        if err != vpx::VPX_CODEC_OK {
            return Err(decode_error(format!("init: {}", describe(&mut ctx, err))));
        }
        Ok(Vp8Decoder { ctx: Context(ctx) })
    }

    /// Takes every picture libvpx has ready, keeping the last one.
    fn take_picture(&mut self, rtp_timestamp: u32) -> Result<Option<VideoFrame>, CodecError> {
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        let mut picture = None;
        loop {
            // SAFETY: the context is initialised; the image it returns stays valid until the
            // next decode call and is copied out before that.
            let image = unsafe { vpx::vpx_codec_get_frame(self.ctx.raw(), &mut iter) };
            // SAFETY: libvpx returns null or a pointer to a valid image.
            let Some(image) = (unsafe { image.as_ref() }) else {
                break;
            };
            picture = Some(picture_from_image(image, rtp_timestamp)?);
        }
        Ok(picture)
    }
}

impl Decoder for Vp8Decoder {
    fn decode(
        &mut self,
        encoded: &[u8],
        rtp_timestamp: u32,
    ) -> Result<Option<VideoFrame>, CodecError> {
        if encoded.is_empty() {
            return Err(decode_error("empty frame"));
        }
        let len = c_uint::try_from(encoded.len()).map_err(|_| decode_error("frame too large"))?;
        // SAFETY: `encoded` is valid for `len` bytes for the whole call; libvpx does not keep it.
        let err = unsafe {
            vpx::vpx_codec_decode(self.ctx.raw(), encoded.as_ptr(), len, ptr::null_mut(), 0)
        };
        if err != vpx::VPX_CODEC_OK {
            let message = describe(self.ctx.raw(), err);
            // Discard whatever partial output there is so it cannot leak into the next call.
            let _ = self.take_picture(rtp_timestamp);
            return Err(decode_error(message));
        }
        let mut corrupted: c_int = 0;
        // SAFETY: VP8D_GET_FRAME_CORRUPTED takes a pointer to an int that it writes.
        let err = unsafe {
            vpx::vpx_codec_control_(
                self.ctx.raw(),
                vpx::vp8_dec_control_id::VP8D_GET_FRAME_CORRUPTED as c_int,
                &mut corrupted as *mut c_int,
            )
        };
        let picture = self.take_picture(rtp_timestamp)?;
        if err == vpx::VPX_CODEC_OK && corrupted != 0 {
            return Err(decode_error("picture is corrupted; a key frame is needed"));
        }
        Ok(picture)
    }
}

/// Copies a decoded I420 image into a tightly packed frame.
fn picture_from_image(
    image: &vpx::vpx_image_t,
    rtp_timestamp: u32,
) -> Result<VideoFrame, CodecError> {
    if image.fmt != vpx::vpx_img_fmt::VPX_IMG_FMT_I420 {
        return Err(decode_error(format!(
            "unexpected picture format {:?}",
            image.fmt
        )));
    }
    let (width, height) = (image.d_w, image.d_h);
    let (cw, ch) = chroma_size(width, height);
    let plane = |index: usize, w: u32, h: u32| {
        // SAFETY: libvpx guarantees plane `index` holds `h` rows of `stride` bytes, of which the
        // first `w` are picture; `image_plane` checks the stride before reading.
        unsafe {
            image_plane(
                image.planes[index],
                image.stride[index],
                w as usize,
                h as usize,
            )
        }
        .ok_or_else(|| decode_error(format!("decoded plane {index} has an unusable layout")))
    };
    Ok(VideoFrame {
        width,
        height,
        y: plane(0, width, height)?,
        u: plane(1, cw, ch)?,
        v: plane(2, cw, ch)?,
        rtp_timestamp,
    })
}

/// # Safety
/// When `data` is not null and `stride >= width`, it must point to at least `rows` rows of
/// `stride` bytes (the last row needs only `width`).
unsafe fn image_plane(
    data: *const u8,
    stride: c_int,
    width: usize,
    rows: usize,
) -> Option<Vec<u8>> {
    let stride = usize::try_from(stride).ok()?;
    if data.is_null() || stride < width || rows == 0 {
        return None;
    }
    let len = stride.checked_mul(rows - 1)?.checked_add(width)?;
    // SAFETY: per this function's contract.
    let src = unsafe { std::slice::from_raw_parts(data, len) };
    packed_plane(src, stride, width, rows)
}

pub(crate) struct Vp8Encoder {
    bitrate_bps: u32,
    clock: EncodeClock,
    session: Option<EncoderSession>,
}

/// A libvpx encoder set up for one picture size.
struct EncoderSession {
    ctx: Context,
    cfg: vpx::vpx_codec_enc_cfg_t,
    width: u32,
    height: u32,
}

// SAFETY: the context is `Send` (see `Context`); the only pointers in `cfg` are the two-pass
// statistics buffers, which one-pass encoding leaves null.
unsafe impl Send for EncoderSession {}

impl Vp8Encoder {
    pub fn new(bitrate_bps: u32) -> Result<Self, CodecError> {
        // Fail here rather than on the first picture when libvpx has no VP8 encoder.
        EncoderSession::new(64, 64, bitrate_bps)?;
        Ok(Vp8Encoder {
            bitrate_bps,
            clock: EncodeClock::default(),
            session: None,
        })
    }
}

impl Encoder for Vp8Encoder {
    fn encode(
        &mut self,
        frame: &VideoFrame,
        force_keyframe: bool,
    ) -> Result<EncodedFrame, CodecError> {
        if let Some(problem) = layout_problem(frame) {
            return Err(encode_error(problem));
        }
        if frame.width > MAX_SIDE || frame.height > MAX_SIDE {
            return Err(encode_error(format!(
                "{}x{} is larger than VP8 allows",
                frame.width, frame.height
            )));
        }
        let session = match self.session.take() {
            Some(s) if (s.width, s.height) == (frame.width, frame.height) => s,
            old => {
                // Free the old encoder before making the new one; its first picture is a key frame.
                drop(old);
                EncoderSession::new(frame.width, frame.height, self.bitrate_bps)?
            }
        };
        let session = self.session.insert(session);
        let tick = self.clock.next(frame.rtp_timestamp);
        session.encode(frame, tick, force_keyframe)
    }

    fn set_bitrate(&mut self, bits_per_second: u32) {
        self.bitrate_bps = bits_per_second;
        if let Some(session) = &mut self.session
            && let Err(e) = session.set_bitrate(bits_per_second)
        {
            tracing::warn!(error = %e, bits_per_second, "VP8 bitrate change refused");
        }
    }
}

fn kbps(bits_per_second: u32) -> c_uint {
    (bits_per_second / 1000).max(1)
}

/// Encoder threads for a picture size. libvpx's VP8 threads wait on each other by spinning, so
/// they only pay off with cores to spare: on two cores a second thread made 640x480 encoding
/// twenty times slower. One thread up to 640x480 or on up to two cores, more for larger
/// pictures on larger machines.
fn encoder_threads(width: u32, height: u32, cores: usize) -> c_uint {
    let pixels = u64::from(width) * u64::from(height);
    if pixels >= 1920 * 1080 && cores > 8 {
        8
    } else if pixels > 1280 * 960 && cores >= 6 {
        3
    } else if pixels > 640 * 480 && cores >= 3 {
        2
    } else {
        1
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// libvpx speed (VP8E_SET_CPUUSED): negative values fix the real-time speed; -6 is the usual
/// real-time setting, -8 trades a little quality for speed on large pictures.
fn encoder_speed(width: u32, height: u32) -> c_int {
    if u64::from(width) * u64::from(height) >= 1280 * 720 {
        -8
    } else {
        -6
    }
}

impl EncoderSession {
    fn new(width: u32, height: u32, bitrate_bps: u32) -> Result<Self, CodecError> {
        let mut cfg = MaybeUninit::<vpx::vpx_codec_enc_cfg_t>::uninit();
        // SAFETY: on success libvpx writes a complete default configuration into `cfg`.
        let err = unsafe {
            vpx::vpx_codec_enc_config_default(vpx::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0)
        };
        if err != vpx::VPX_CODEC_OK {
            return Err(encode_error(format!("default configuration: {err:?}")));
        }
        // SAFETY: initialised by the successful call above.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.g_w = width;
        cfg.g_h = height;
        cfg.g_threads = encoder_threads(width, height, available_cores());
        cfg.g_timebase = vpx::vpx_rational {
            num: 1,
            den: TICKS_PER_SECOND as c_int,
        };
        cfg.g_error_resilient = vpx::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.g_pass = vpx::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.g_lag_in_frames = 0;
        cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = kbps(bitrate_bps);
        cfg.rc_dropframe_thresh = 0;
        cfg.rc_resize_allowed = 0;
        cfg.rc_min_quantizer = 2;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        // Key frames come on request (PLI/FIR); a periodic one every few minutes is a safety net.
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_max_dist = 9000;

        let mut ctx = Context::blank();
        // SAFETY: `ctx` is blank, `cfg` is a complete configuration that libvpx copies.
        let err = unsafe {
            vpx::vpx_codec_enc_init_ver(
                &mut *ctx,
                vpx::vpx_codec_vp8_cx(),
                &cfg,
                0,
                vpx::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        if err != vpx::VPX_CODEC_OK {
            return Err(encode_error(format!(
                "init {width}x{height}: {}",
                describe(&mut ctx, err)
            )));
        }
        let mut session = EncoderSession {
            ctx: Context(ctx),
            cfg,
            width,
            height,
        };
        use vpx::vp8e_enc_control_id as id;
        session.control(id::VP8E_SET_CPUUSED, encoder_speed(width, height))?;
        session.control(id::VP8E_SET_NOISE_SENSITIVITY, 0)?;
        session.control(id::VP8E_SET_STATIC_THRESHOLD, 1)?;
        // Caps key frame size at 3x an average frame so a key frame does not stall the stream.
        session.control(id::VP8E_SET_MAX_INTRA_BITRATE_PCT, 300)?;
        Ok(session)
    }

    fn control(&mut self, id: vpx::vp8e_enc_control_id, value: c_int) -> Result<(), CodecError> {
        // SAFETY: every control used here takes one int argument.
        let err = unsafe { vpx::vpx_codec_control_(self.ctx.raw(), id as c_int, value) };
        if err != vpx::VPX_CODEC_OK {
            return Err(encode_error(format!(
                "{id:?}={value}: {}",
                describe(self.ctx.raw(), err)
            )));
        }
        Ok(())
    }

    fn set_bitrate(&mut self, bits_per_second: u32) -> Result<(), CodecError> {
        self.cfg.rc_target_bitrate = kbps(bits_per_second);
        // SAFETY: the context is initialised and `cfg` is the complete configuration it runs.
        let err = unsafe { vpx::vpx_codec_enc_config_set(self.ctx.raw(), &self.cfg) };
        if err != vpx::VPX_CODEC_OK {
            return Err(encode_error(format!(
                "bitrate {bits_per_second}: {}",
                describe(self.ctx.raw(), err)
            )));
        }
        Ok(())
    }

    /// Encodes one picture, which `layout_problem` has accepted and whose size matches this
    /// session.
    fn encode(
        &mut self,
        frame: &VideoFrame,
        tick: Tick,
        force_keyframe: bool,
    ) -> Result<EncodedFrame, CodecError> {
        let cw = frame.chroma_width() as c_int;
        // SAFETY: all-zero is valid for every field (pointers, integers, enums whose zero is a
        // listed value); the fields libvpx reads are set below.
        let mut image: vpx::vpx_image_t = unsafe { std::mem::zeroed() };
        image.fmt = vpx::vpx_img_fmt::VPX_IMG_FMT_I420;
        image.cs = vpx::vpx_color_space::VPX_CS_BT_601;
        image.range = vpx::vpx_color_range::VPX_CR_STUDIO_RANGE;
        image.w = frame.width;
        image.h = frame.height;
        image.d_w = frame.width;
        image.d_h = frame.height;
        image.r_w = frame.width;
        image.r_h = frame.height;
        image.bit_depth = 8;
        image.bps = 12;
        image.x_chroma_shift = 1;
        image.y_chroma_shift = 1;
        // libvpx only reads the source picture; the pointers are `*mut` because the struct is
        // shared with the decoder side.
        image.planes = [
            frame.y.as_ptr().cast_mut(),
            frame.u.as_ptr().cast_mut(),
            frame.v.as_ptr().cast_mut(),
            ptr::null_mut(),
        ];
        image.stride = [frame.width as c_int, cw, cw, 0];

        let flags = if force_keyframe {
            vpx::VPX_EFLAG_FORCE_KF as vpx::vpx_enc_frame_flags_t
        } else {
            0
        };
        // SAFETY: `image` describes planes that `layout_problem` checked and that outlive the
        // call; libvpx copies the picture before returning.
        let err = unsafe {
            vpx::vpx_codec_encode(
                self.ctx.raw(),
                &image,
                tick.pts,
                tick.duration as c_ulong,
                flags,
                vpx::VPX_DL_REALTIME as c_ulong,
            )
        };
        if err != vpx::VPX_CODEC_OK {
            return Err(encode_error(describe(self.ctx.raw(), err)));
        }

        let mut data = Vec::new();
        let mut keyframe = false;
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: packets stay valid until the next encode call and are copied out now.
            let packet = unsafe { vpx::vpx_codec_get_cx_data(self.ctx.raw(), &mut iter) };
            // SAFETY: libvpx returns null or a pointer to a valid packet.
            let Some(packet) = (unsafe { packet.as_ref() }) else {
                break;
            };
            if packet.kind != vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: `frame` is the active union member for frame packets; `buf` holds `sz` bytes.
            unsafe {
                let f = packet.data.frame;
                if !f.buf.is_null() {
                    data.extend_from_slice(std::slice::from_raw_parts(
                        f.buf.cast::<u8>(),
                        f.sz as usize,
                    ));
                }
                keyframe |= f.flags & vpx::VPX_FRAME_IS_KEY != 0;
            }
        }
        if data.is_empty() {
            return Err(encode_error("encoder produced no frame for the picture"));
        }
        Ok(EncodedFrame {
            data,
            keyframe,
            rtp_timestamp: frame.rtp_timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;

    /// VP8 frame tag: bit 0 of the first byte is 0 for a key frame, which also carries the
    /// start code 9d 01 2a.
    fn is_keyframe(data: &[u8]) -> bool {
        data.len() > 6 && data[0] & 1 == 0 && data[3..6] == [0x9d, 0x01, 0x2a]
    }

    #[test]
    fn round_trip_keeps_quality() {
        conformance::round_trip_keeps_quality(CodecKind::Vp8);
    }

    #[test]
    fn forced_keyframe_starts_a_new_receiver() {
        conformance::forced_keyframe_starts_a_new_receiver(CodecKind::Vp8, is_keyframe);
    }

    #[test]
    fn follows_size_changes() {
        conformance::follows_size_changes(CodecKind::Vp8);
    }

    #[test]
    fn follows_bitrate_changes() {
        conformance::follows_bitrate_changes(CodecKind::Vp8);
    }

    #[test]
    fn keeps_bitrate_at_lower_frame_rates() {
        conformance::keeps_bitrate_at_lower_frame_rates(CodecKind::Vp8);
    }

    #[test]
    fn survives_extreme_bitrates() {
        conformance::survives_extreme_bitrates(CodecKind::Vp8);
    }

    #[test]
    fn refuses_malformed_pictures() {
        conformance::refuses_malformed_pictures(CodecKind::Vp8);
    }

    #[test]
    fn recovers_from_garbage() {
        let noise = conformance::random_bytes(3000, 7);
        // A key frame header with a broken start code, and one announcing a huge picture.
        let bad_sync = [
            0x50, 0x2c, 0x00, 0x9d, 0x01, 0x2b, 0x40, 0x01, 0xf0, 0x00, 0, 0, 0, 0,
        ];
        let mut huge = vec![0x50, 0x2c, 0x00, 0x9d, 0x01, 0x2a, 0xff, 0x3f, 0xff, 0x3f];
        huge.extend(conformance::random_bytes(200, 3));
        conformance::recovers_from_garbage(
            CodecKind::Vp8,
            &[&noise, &bad_sync, &huge, &[0x00], &[]],
        );
    }

    #[test]
    fn threads_only_with_cores_to_spare() {
        assert_eq!(encoder_threads(1280, 720, 2), 1);
        assert_eq!(encoder_threads(640, 480, 16), 1);
        assert_eq!(encoder_threads(1280, 720, 4), 2);
        assert_eq!(encoder_threads(1920, 1080, 16), 8);
    }

    #[test]
    fn odd_sizes_round_trip() {
        let (mut encoder, mut decoder) = (
            Vp8Encoder::new(800_000).unwrap(),
            Vp8Decoder::new().unwrap(),
        );
        let input = conformance::moving_pattern(321, 241, 0);
        let encoded = encoder.encode(&input, false).unwrap();
        let output = decoder.decode(&encoded.data, 5).unwrap().unwrap();
        assert_eq!(
            (output.width, output.height, output.u.len()),
            (321, 241, 161 * 121)
        );
        assert!(conformance::psnr(&input.y, &output.y) > 30.0);
    }
}
