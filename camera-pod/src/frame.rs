//! Raw video frames as they move between decoder, filter and encoder.

/// One decoded picture in I420 (planar YUV 4:2:0, BT.601 limited range), tightly packed:
/// the Y plane is `width * height` bytes, U and V are `chroma_width() * chroma_height()` each.
///
/// Filters work on this layout directly so a full-resolution RGB conversion is never needed on the
/// hot path; only the model's small input is converted to RGB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoFrame {
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    /// RTP timestamp (90 kHz clock) of the camera frame this picture came from; the encoder's
    /// output keeps it so the returned video keeps the input's timing.
    pub rtp_timestamp: u32,
}

impl VideoFrame {
    /// A frame of one flat colour, for tests and warm-up.
    pub fn filled(width: u32, height: u32, y: u8, u: u8, v: u8) -> Self {
        let (cw, ch) = chroma_size(width, height);
        VideoFrame {
            width,
            height,
            y: vec![y; (width * height) as usize],
            u: vec![u; (cw * ch) as usize],
            v: vec![v; (cw * ch) as usize],
            rtp_timestamp: 0,
        }
    }

    pub fn chroma_width(&self) -> u32 {
        chroma_size(self.width, self.height).0
    }

    pub fn chroma_height(&self) -> u32 {
        chroma_size(self.width, self.height).1
    }
}

/// Size of the U and V planes of an I420 picture.
pub fn chroma_size(width: u32, height: u32) -> (u32, u32) {
    (width.div_ceil(2), height.div_ceil(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_sizes_round_chroma_up() {
        let f = VideoFrame::filled(5, 3, 16, 128, 128);
        assert_eq!((f.chroma_width(), f.chroma_height()), (3, 2));
        assert_eq!(f.u.len(), 6);
        assert_eq!(f.y.len(), 15);
    }
}
