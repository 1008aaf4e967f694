//! Video codecs: VP8 (libvpx) and H264 (OpenH264) behind one `Decoder`/`Encoder` pair of traits.

use crate::frame::VideoFrame;

mod clock;
#[cfg(test)]
mod conformance;
mod h264;
mod planes;
mod vp8;

/// Codecs camera-pod negotiates, in no particular order (the offerer's order wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodecKind {
    Vp8,
    H264,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{codec:?} decoder: {message}")]
    Decode { codec: CodecKind, message: String },
    #[error("{codec:?} encoder: {message}")]
    Encode { codec: CodecKind, message: String },
}

/// Turns one complete encoded frame (as reassembled from RTP) into a picture.
pub trait Decoder: Send {
    /// `Ok(None)` when the codec needs more data before it can output a picture.
    fn decode(&mut self, encoded: &[u8], rtp_timestamp: u32) -> Result<Option<VideoFrame>, CodecError>;
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
    fn encode(&mut self, frame: &VideoFrame, force_keyframe: bool) -> Result<EncodedFrame, CodecError>;
    /// Target bitrate in bits per second, applied from the next frame on.
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
