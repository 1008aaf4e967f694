//! The largest camera picture camera-pod decodes (`--max-decode-width` x `--max-decode-height`).
//!
//! A camera chooses its picture size, and a decoder allocates its picture buffers (several, for
//! reference frames) for whatever size the bitstream announces: up to 16383x16383 for VP8. So
//! the size is read from the frame's headers before the decoder sees it: a VP8 key frame's size
//! fields, an H264 sequence parameter set's macroblock counts. A frame announcing a larger
//! picture, and every frame after it until a key frame of an allowed size, is refused with
//! [`CodecError::TooLarge`] without being decoded. Pictures the decoder returns are checked
//! again at their exact size.

use super::{CodecError, CodecKind, Decoder};
use crate::frame::VideoFrame;

/// The largest picture decoded, in either orientation: a portrait camera's 1080x1920 fits a
/// 1920x1080 cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeSizeCap {
    pub width: u32,
    pub height: u32,
}

impl DecodeSizeCap {
    /// Full HD: what a pod decodes unless its session's class allows more.
    pub const DEFAULT: DecodeSizeCap = DecodeSizeCap {
        width: p2pcamera_api::wire::DEFAULT_MAX_DECODE.0,
        height: p2pcamera_api::wire::DEFAULT_MAX_DECODE.1,
    };
    /// 4K UHD: the most a class may allow.
    pub const LARGEST: DecodeSizeCap = DecodeSizeCap {
        width: 3840,
        height: 2160,
    };

    /// Whether a `width` x `height` picture fits, in either orientation.
    pub fn allows(&self, width: u32, height: u32) -> bool {
        let (long, short) = (width.max(height), width.min(height));
        long <= self.width.max(self.height) && short <= self.width.min(self.height)
    }

    /// Whether a coded size (H264 codes whole 16x16 macroblocks: 1080 lines are coded as 1088
    /// and cropped) may hold an allowed picture.
    pub(crate) fn allows_coded(&self, width: u32, height: u32) -> bool {
        let macroblocks = |side: u32| side.div_ceil(16).saturating_mul(16);
        DecodeSizeCap {
            width: macroblocks(self.width),
            height: macroblocks(self.height),
        }
        .allows(width, height)
    }
}

impl Default for DecodeSizeCap {
    fn default() -> Self {
        DecodeSizeCap::DEFAULT
    }
}

/// A decoder that refuses pictures larger than its cap before decoding them (see the module
/// documentation).
pub struct CappedDecoder {
    inner: Box<dyn Decoder>,
    codec: CodecKind,
    cap: DecodeSizeCap,
    /// The size of the stream being refused, until a key frame of an allowed size.
    refusing: Option<(u32, u32)>,
}

impl CappedDecoder {
    pub fn new(inner: Box<dyn Decoder>, codec: CodecKind, cap: DecodeSizeCap) -> Self {
        CappedDecoder {
            inner,
            codec,
            cap,
            refusing: None,
        }
    }

    fn too_large(&self, (width, height): (u32, u32)) -> CodecError {
        CodecError::TooLarge {
            codec: self.codec,
            width,
            height,
            max_width: self.cap.width,
            max_height: self.cap.height,
        }
    }
}

impl Decoder for CappedDecoder {
    fn decode(
        &mut self,
        encoded: &[u8],
        rtp_timestamp: u32,
    ) -> Result<Option<VideoFrame>, CodecError> {
        match announced_size(self.codec, encoded) {
            Some(size) if !self.cap.allows_coded(size.0, size.1) => {
                self.refusing = Some(size);
                return Err(self.too_large(size));
            }
            Some(_) => self.refusing = None,
            None => {
                if let Some(size) = self.refusing {
                    return Err(self.too_large(size));
                }
            }
        }
        let picture = self.inner.decode(encoded, rtp_timestamp)?;
        match picture {
            Some(picture) if !self.cap.allows(picture.width, picture.height) => {
                Err(self.too_large((picture.width, picture.height)))
            }
            picture => Ok(picture),
        }
    }
}

/// The picture size an encoded frame announces, read from its headers without decoding it: a
/// VP8 key frame's size, or the macroblock-rounded size in an H264 access unit's SPS. `None`
/// when it announces none (VP8 inter frames, H264 access units without an SPS) or its headers
/// cannot be read.
pub fn announced_size(codec: CodecKind, data: &[u8]) -> Option<(u32, u32)> {
    match codec {
        CodecKind::Vp8 => vp8_keyframe_size(data),
        CodecKind::H264 => annexb_nal_units(data)
            .filter(|nal| nal.first().is_some_and(|header| header & 0x1f == 7))
            .find_map(|sps| h264_sps_size(&sps[1..])),
    }
}

/// A VP8 key frame: 3-byte frame tag (bit 0 clear), start code 9d 01 2a, then 14-bit width and
/// height (the top two bits are an upscaling hint, not part of the size).
fn vp8_keyframe_size(data: &[u8]) -> Option<(u32, u32)> {
    if data.len() < 10 || data[0] & 1 != 0 || data[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let side = |lo: u8, hi: u8| u32::from(u16::from_le_bytes([lo, hi]) & 0x3fff);
    Some((side(data[6], data[7]), side(data[8], data[9])))
}

/// The NAL units of an Annex B access unit (without their start codes).
fn annexb_nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let starts: Vec<usize> = data
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0, 0, 1])
        .map(|(i, _)| i + 3)
        .collect();
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&next| next - 3)
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(start, end)| &data[start..end.max(start)])
}

/// Reads an SPS RBSP (emulation prevention bytes removed) bit by bit.
struct BitReader {
    bytes: Vec<u8>,
    position: usize,
}

impl BitReader {
    fn new(escaped: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(escaped.len());
        let mut zeros = 0;
        for &byte in escaped {
            if zeros >= 2 && byte == 3 {
                zeros = 0;
                continue;
            }
            zeros = if byte == 0 { zeros + 1 } else { 0 };
            bytes.push(byte);
        }
        BitReader { bytes, position: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = self.bytes.get(self.position / 8)?;
        let bit = (byte >> (7 - self.position % 8)) & 1;
        self.position += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, count: u32) -> Option<u32> {
        (0..count).try_fold(0, |value, _| Some(value << 1 | self.bit()?))
    }

    /// Unsigned Exp-Golomb, as the SPS codes its sizes (at most 32 bits).
    fn ue(&mut self) -> Option<u32> {
        let mut leading_zeros = 0;
        while self.bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(leading_zeros)?;
        Some(((1u64 << leading_zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// Signed Exp-Golomb; only skipped here.
    fn se(&mut self) -> Option<()> {
        self.ue().map(drop)
    }
}

/// Profiles whose SPS carries chroma format, bit depths and scaling matrices (H.264 7.3.2.1.1).
const HIGH_PROFILES: [u32; 12] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134];

/// The coded size (whole macroblocks, before cropping) in an SPS without its NAL header byte.
fn h264_sps_size(sps: &[u8]) -> Option<(u32, u32)> {
    let mut r = BitReader::new(sps);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    if HIGH_PROFILES.contains(&profile_idc) {
        let chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for list in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if list < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_in_macroblocks = u64::from(r.ue()?) + 1;
    let height_in_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    let width = width_in_macroblocks * 16;
    let height = height_in_map_units * 16 * (2 - frame_mbs_only);
    let side = |pixels: u64| u32::try_from(pixels).unwrap_or(u32::MAX);
    Some((side(width), side(height)))
}

fn skip_scaling_list(r: &mut BitReader, size: u32) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let code = i64::from(r.ue()?);
            let delta = if code % 2 == 1 {
                (code + 1) / 2
            } else {
                -(code / 2)
            };
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{new_decoder, new_encoder};

    fn encoded(codec: CodecKind, width: u32, height: u32) -> Vec<u8> {
        let mut encoder = new_encoder(codec, 1_000_000).unwrap();
        let frame = VideoFrame::filled(width, height, 90, 128, 128);
        let encoded = encoder.encode(&frame, true).unwrap();
        assert!(encoded.keyframe);
        encoded.data
    }

    #[test]
    fn either_orientation_fits() {
        let cap = DecodeSizeCap::DEFAULT;
        assert!(cap.allows(1920, 1080) && cap.allows(1080, 1920) && cap.allows(640, 480));
        assert!(!cap.allows(1921, 1080) && !cap.allows(1080, 1921) && !cap.allows(1200, 1200));
        assert!(
            cap.allows_coded(1920, 1088),
            "1080p H264 is coded as 1088 lines"
        );
        assert!(!cap.allows_coded(1936, 1088));
    }

    #[test]
    fn sizes_are_read_from_real_key_frames() {
        for codec in [CodecKind::Vp8, CodecKind::H264] {
            let key = encoded(codec, 320, 240);
            assert_eq!(announced_size(codec, &key), Some((320, 240)), "{codec:?}");
            let odd = encoded(codec, 1282, 722);
            let (w, h) = announced_size(codec, &odd).unwrap();
            assert!(
                (1282..1282 + 16).contains(&w) && (722..722 + 16).contains(&h),
                "{codec:?}: {w}x{h}"
            );
        }
        assert_eq!(
            announced_size(CodecKind::Vp8, &[0x11; 20]),
            None,
            "inter frame"
        );
        assert_eq!(
            announced_size(CodecKind::H264, &[0, 0, 0, 1, 0x41, 0x9a]),
            None
        );
        assert_eq!(
            announced_size(CodecKind::H264, &[0, 0, 1, 0x67]),
            None,
            "cut short"
        );
    }

    #[test]
    fn a_high_profile_sps_with_scaling_lists_is_read() {
        // High profile (100), 4:2:0, 8 bit, scaling matrix present with one 4x4 list (all
        // deltas 0), POC type 2, 1 ref frame, 1280x720 (80x45 macroblocks), frame_mbs_only.
        let mut bits = String::new();
        let ue = |v: u32| {
            let code = v + 1;
            let len = 32 - code.leading_zeros();
            format!(
                "{}{:0width$b}",
                "0".repeat(len as usize - 1),
                code,
                width = len as usize
            )
        };
        bits += "01100100"; // profile_idc 100
        bits += "0000000000101000"; // constraints, level 40
        bits += &ue(0); // sps id
        bits += &ue(1); // chroma_format_idc
        bits += &ue(0);
        bits += &ue(0);
        bits += "0"; // qpprime
        bits += "1"; // seq_scaling_matrix_present_flag
        bits += "1"; // list 0 present
        bits += &ue(0).repeat(16); // 16 zero deltas
        bits += &"0".repeat(7); // lists 1..8 absent
        bits += &ue(0); // log2_max_frame_num_minus4
        bits += &ue(2); // poc type 2
        bits += &ue(1); // max_num_ref_frames
        bits += "0";
        bits += &ue(79);
        bits += &ue(44);
        bits += "1";
        bits += "1"; // direct_8x8, then stop bit padding
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        let mut au = vec![0, 0, 0, 1, 0x67];
        au.extend(
            bits.as_bytes()
                .chunks(8)
                .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap()),
        );
        assert_eq!(announced_size(CodecKind::H264, &au), Some((1280, 720)));
    }

    #[test]
    fn a_larger_stream_is_refused_undecoded_until_an_allowed_key_frame() {
        for codec in [CodecKind::Vp8, CodecKind::H264] {
            let cap = DecodeSizeCap {
                width: 320,
                height: 240,
            };
            let mut decoder = CappedDecoder::new(new_decoder(codec).unwrap(), codec, cap);
            let mut encoder = new_encoder(codec, 1_000_000).unwrap();
            let mut encode = |w, h, key| {
                let frame = VideoFrame::filled(w, h, 90, 128, 128);
                encoder.encode(&frame, key).unwrap().data
            };
            let large_key = encode(640, 480, true);
            let large_delta = encode(640, 480, false);
            let err = decoder.decode(&large_key, 0).unwrap_err();
            assert!(
                matches!(
                    err,
                    CodecError::TooLarge {
                        width: 640,
                        height: 480,
                        ..
                    }
                ),
                "{codec:?}: {err}"
            );
            assert!(err.to_string().contains("640x480"), "{err}");
            assert!(matches!(
                decoder.decode(&large_delta, 3000),
                Err(CodecError::TooLarge { .. })
            ));
            let portrait = encode(240, 320, true);
            let picture = decoder.decode(&portrait, 6000).unwrap().unwrap();
            assert_eq!((picture.width, picture.height), (240, 320), "{codec:?}");
        }
    }
}
