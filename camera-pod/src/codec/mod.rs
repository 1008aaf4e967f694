//! Video codecs: VP8 (libvpx) and H264 (OpenH264) behind one `Decoder`/`Encoder` pair of traits.
//!
//! Decoders take one complete frame per call: for VP8 the payload the VP8 depacketizer
//! reassembles, for H264 one access unit in Annex-B form (start codes in front of every NAL unit,
//! as the H264 depacketizer writes them when not in AVC mode). An `Err` means the frame cannot be
//! shown (garbage, truncated, or for H264 a frame after a lost one): the caller asks the sender
//! for a key frame (PLI) and keeps feeding the same decoder, which resumes at that key frame.
//! VP8 frames carry no frame numbers, so a VP8 decoder cannot notice a lost frame: the caller
//! detects loss from RTP sequence numbers and asks for a key frame itself.
//!
//! Encoders give exactly one frame per picture, timed like the picture, and follow the picture
//! size (each new size starts with a key frame). VP8 takes any size up to 16383x16383; H264 needs
//! even sides up to 3840x2160 and writes constrained baseline with SPS and PPS in front of every
//! IDR, for packetization-mode=1. Rate control spends the bitrate over the pictures' actual
//! spacing, so a slower filter gets larger pictures rather than a thinner stream.
//!
//! [`CappedDecoder`] wraps a decoder and refuses pictures larger than `--max-decode-width` x
//! `--max-decode-height` before decoding them (`size_cap`).

use crate::frame::VideoFrame;

mod clock;
#[cfg(test)]
mod conformance;
mod h264;
mod planes;
mod size_cap;
mod vp8;

pub use size_cap::{CappedDecoder, DecodeSizeCap, announced_size};

/// Codecs camera-pod negotiates, in no particular order (the offerer's order wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodecKind {
    Vp8,
    H264,
}

/// A codec name that is neither VP8 nor H264.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec `{0}`: use VP8 or H264")]
pub struct UnknownCodec(pub String);

impl std::str::FromStr for CodecKind {
    type Err = UnknownCodec;

    /// `VP8` or `H264`, in any case (`--codecs`, a warm-pool claim's `codecs`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.trim().to_ascii_uppercase().as_str() {
            "VP8" => Ok(CodecKind::Vp8),
            "H264" => Ok(CodecKind::H264),
            other => Err(UnknownCodec(other.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{codec:?} decoder: {message}")]
    Decode { codec: CodecKind, message: String },
    #[error("{codec:?} encoder: {message}")]
    Encode { codec: CodecKind, message: String },
    /// The frame's picture is larger than the decode cap; it was not decoded.
    #[error(
        "{codec:?} picture {width}x{height} is larger than allowed ({max_width}x{max_height} in either orientation, \
         --max-decode-width/--max-decode-height)"
    )]
    TooLarge {
        codec: CodecKind,
        width: u32,
        height: u32,
        max_width: u32,
        max_height: u32,
    },
}

/// Turns one complete encoded frame (as reassembled from RTP) into a picture.
pub trait Decoder: Send {
    /// `Ok(None)` when the frame holds no picture (H264 parameter sets alone).
    fn decode(
        &mut self,
        encoded: &[u8],
        rtp_timestamp: u32,
    ) -> Result<Option<VideoFrame>, CodecError>;
}

/// One encoded frame ready to packetize.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
    pub rtp_timestamp: u32,
}

/// Turns pictures into encoded frames, one out for each picture in (no lookahead, no B-frames).
pub trait Encoder: Send {
    /// `force_keyframe` makes this picture a key frame (answer to PLI/FIR). An `Err` (a picture
    /// whose planes do not match its size, or a size the codec cannot code) leaves the encoder
    /// usable for the next picture.
    fn encode(
        &mut self,
        frame: &VideoFrame,
        force_keyframe: bool,
    ) -> Result<EncodedFrame, CodecError>;
    /// Target bitrate in bits per second, applied from the next frame on. Any value is taken;
    /// keeping it within sane bounds is the caller's choice.
    fn set_bitrate(&mut self, bits_per_second: u32);
}

/// A decoder for `kind`.
pub fn new_decoder(kind: CodecKind) -> Result<Box<dyn Decoder>, CodecError> {
    match kind {
        CodecKind::Vp8 => Ok(Box::new(vp8::Vp8Decoder::new()?)),
        CodecKind::H264 => Ok(Box::new(h264::H264Decoder::new()?)),
    }
}

/// An encoder for `kind` starting at `bitrate_bps`; it adapts to the size of the pictures it gets.
pub fn new_encoder(kind: CodecKind, bitrate_bps: u32) -> Result<Box<dyn Encoder>, CodecError> {
    match kind {
        CodecKind::Vp8 => Ok(Box::new(vp8::Vp8Encoder::new(bitrate_bps)?)),
        CodecKind::H264 => Ok(Box::new(h264::H264Encoder::new(bitrate_bps)?)),
    }
}
