//! Checks and copies between tightly packed `VideoFrame` planes and codec buffers with strides.

use crate::frame::{VideoFrame, chroma_size};

/// Why a picture handed to an encoder cannot be encoded as it is.
pub(crate) fn layout_problem(frame: &VideoFrame) -> Option<String> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    if w == 0 || h == 0 {
        return Some(format!("empty picture {}x{}", frame.width, frame.height));
    }
    let (cw, ch) = chroma_size(frame.width, frame.height);
    let chroma = cw as usize * ch as usize;
    if frame.y.len() != w * h || frame.u.len() != chroma || frame.v.len() != chroma {
        return Some(format!(
            "planes of {}/{}/{} bytes do not match a {}x{} I420 picture ({}/{}/{})",
            frame.y.len(),
            frame.u.len(),
            frame.v.len(),
            frame.width,
            frame.height,
            w * h,
            chroma,
            chroma
        ));
    }
    None
}

/// Copies `rows` rows of `width` bytes, `stride` bytes apart, out of `src` into a packed plane.
/// `None` when `src` is too short for that shape or the stride is narrower than a row, so a
/// decoder that reports an inconsistent picture produces an error instead of a panic.
pub(crate) fn packed_plane(
    src: &[u8],
    stride: usize,
    width: usize,
    rows: usize,
) -> Option<Vec<u8>> {
    if stride < width {
        return None;
    }
    let needed = match rows {
        0 => 0,
        _ => stride.checked_mul(rows - 1)?.checked_add(width)?,
    };
    let src = src.get(..needed)?;
    let mut out = Vec::with_capacity(width * rows);
    for row in 0..rows {
        out.extend_from_slice(&src[row * stride..row * stride + width]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_rows_are_packed() {
        let src = [1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9];
        assert_eq!(
            packed_plane(&src, 4, 3, 3),
            Some(vec![1, 2, 3, 4, 5, 6, 7, 8, 9])
        );
    }

    #[test]
    fn short_source_or_narrow_stride_is_refused() {
        let src = [1, 2, 3, 0, 4, 5];
        assert_eq!(packed_plane(&src, 4, 3, 2), None);
        assert_eq!(packed_plane(&src, 2, 3, 2), None);
        assert_eq!(packed_plane(&src, usize::MAX, 3, 3), None);
    }

    #[test]
    fn mismatched_planes_are_reported() {
        let good = VideoFrame::filled(6, 4, 16, 128, 128);
        assert_eq!(layout_problem(&good), None);
        let mut bad = good.clone();
        bad.u.pop();
        assert!(layout_problem(&bad).is_some());
        let empty = VideoFrame::filled(0, 4, 16, 128, 128);
        assert!(layout_problem(&empty).is_some());
    }
}
