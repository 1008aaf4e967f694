//! Pre- and post-processing around a model, and compositing, as pure functions over planes.
//!
//! Everything here runs once per picture, so it works on the I420 planes directly (no full-size RGB
//! picture is ever made), uses integer arithmetic on the full-resolution paths, and writes into
//! buffers owned by the caller so nothing is allocated per frame once sizes are stable.
//!
//! Colour conversions are BT.601 limited range, the same as [`VideoFrame`].

use crate::frame::{VideoFrame, chroma_size};

use super::tensor::{Rgb, TensorFormat, ValueRange, View};

/// One Y, U, V triple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Yuv {
    pub y: u8,
    pub u: u8,
    pub v: u8,
}

fn clamp_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// BT.601 limited range RGB -> YUV.
pub fn rgb_to_yuv(c: Rgb) -> Yuv {
    let (r, g, b) = (i32::from(c.r), i32::from(c.g), i32::from(c.b));
    Yuv {
        y: clamp_u8(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16),
        u: clamp_u8(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128),
        v: clamp_u8(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128),
    }
}

/// BT.601 limited range YUV -> RGB.
pub fn yuv_to_rgb(p: Yuv) -> Rgb {
    let c = 298 * (i32::from(p.y) - 16);
    let d = i32::from(p.u) - 128;
    let e = i32::from(p.v) - 128;
    Rgb {
        r: clamp_u8((c + 409 * e + 128) >> 8),
        g: clamp_u8((c - 100 * d - 208 * e + 128) >> 8),
        b: clamp_u8((c + 516 * d + 128) >> 8),
    }
}

/// One bilinear tap along an axis: the two source indices and the weight of the second (0..=256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tap {
    i0: u32,
    i1: u32,
    w1: u32,
}

/// Pixel-centre aligned bilinear tap for destination index `i` when `src_len` maps onto `dst_len`.
fn tap(i: u32, src_len: u32, dst_len: u32) -> Tap {
    let centre = (f64::from(i) + 0.5) * f64::from(src_len) / f64::from(dst_len.max(1));
    tap_at(centre, src_len).unwrap_or(Tap {
        i0: 0,
        i1: 0,
        w1: 0,
    })
}

/// Bilinear tap at `centre` in a line of `len` pixels (pixel `i` spans `i..i + 1`); `None`
/// when `centre` lies outside the line.
fn tap_at(centre: f64, len: u32) -> Option<Tap> {
    if len == 0 || !(0.0..=f64::from(len)).contains(&centre) {
        return None;
    }
    let pos = (centre - 0.5).clamp(0.0, f64::from(len - 1));
    let i0 = pos.floor();
    let w1 = ((pos - i0) * 256.0).round() as u32;
    let i0 = i0 as u32;
    Some(if w1 >= 256 {
        Tap {
            i0: (i0 + 1).min(len - 1),
            i1: (i0 + 1).min(len - 1),
            w1: 0,
        }
    } else {
        Tap {
            i0,
            i1: (i0 + 1).min(len - 1),
            w1,
        }
    })
}

fn fill_taps(taps: &mut Vec<Tap>, src_len: u32, dst_len: u32) {
    taps.clear();
    taps.extend((0..dst_len).map(|i| tap(i, src_len, dst_len)));
}

/// Bilinear resampler for one plane size pair; keeps its tap tables and row buffers between frames.
#[derive(Debug, Default)]
pub struct PlaneScaler {
    sizes: (u32, u32, u32, u32),
    x_taps: Vec<Tap>,
    y_taps: Vec<Tap>,
    row0: Vec<u16>,
    row1: Vec<u16>,
}

impl PlaneScaler {
    fn prepare(&mut self, sw: u32, sh: u32, dw: u32, dh: u32) {
        if self.sizes != (sw, sh, dw, dh) || self.x_taps.len() != dw as usize {
            self.sizes = (sw, sh, dw, dh);
            fill_taps(&mut self.x_taps, sw, dw);
            fill_taps(&mut self.y_taps, sh, dh);
            self.row0.resize(dw as usize, 0);
            self.row1.resize(dw as usize, 0);
        }
    }

    /// Resizes `src` (`sw` x `sh`) into `dst` (`dw` x `dh`) with bilinear interpolation.
    ///
    /// Each source row is interpolated horizontally at most once per call (two rows are kept), so
    /// upscaling costs about one multiply-add per destination pixel and axis.
    pub fn resize(&mut self, src: &[u8], sw: u32, sh: u32, dst: &mut [u8], dw: u32, dh: u32) {
        debug_assert_eq!(src.len(), (sw * sh) as usize);
        debug_assert_eq!(dst.len(), (dw * dh) as usize);
        if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
            return;
        }
        if (sw, sh) == (dw, dh) {
            dst.copy_from_slice(src);
            return;
        }
        self.prepare(sw, sh, dw, dh);
        let sw = sw as usize;
        let dw = dw as usize;
        let mut cached = (u32::MAX, u32::MAX);
        for (dy, out) in dst.chunks_exact_mut(dw).enumerate() {
            let ty = self.y_taps[dy];
            if cached.0 != ty.i0 {
                if cached.1 == ty.i0 {
                    std::mem::swap(&mut self.row0, &mut self.row1);
                    cached.1 = u32::MAX;
                } else {
                    horizontal(
                        &src[ty.i0 as usize * sw..][..sw],
                        &self.x_taps,
                        &mut self.row0,
                    );
                }
                cached.0 = ty.i0;
            }
            if cached.1 != ty.i1 {
                horizontal(
                    &src[ty.i1 as usize * sw..][..sw],
                    &self.x_taps,
                    &mut self.row1,
                );
                cached.1 = ty.i1;
            }
            // Rows hold value * 256; weights scaled to 16 bits make each product's high half
            // value * weight, which vectorises as 16-bit multiply-high.
            let w1 = (ty.w1 << 8).min(0xffff);
            let w0 = ((256 - ty.w1) << 8).min(0xffff);
            for ((o, &a), &b) in out.iter_mut().zip(&self.row0).zip(&self.row1) {
                let sum = ((u32::from(a) * w0) >> 16) + ((u32::from(b) * w1) >> 16);
                *o = ((sum + 128) >> 8).min(255) as u8;
            }
        }
    }
}

/// One source row interpolated horizontally, values scaled by 256 (at most 65280).
fn horizontal(row: &[u8], taps: &[Tap], out: &mut [u16]) {
    for (o, t) in out.iter_mut().zip(taps) {
        let a = u32::from(row[t.i0 as usize]);
        let b = u32::from(row[t.i1 as usize]);
        *o = (a * (256 - t.w1) + b * t.w1) as u16;
    }
}

/// Maps an 8-bit channel value to the model's value range.
pub fn to_range(v: u8, range: ValueRange) -> f32 {
    let v = f32::from(v);
    match range {
        ValueRange::ZeroToOne => v / 255.0,
        ValueRange::ZeroTo255 => v,
        ValueRange::MinusOneToOne => v / 127.5 - 1.0,
    }
}

/// Maps a model value back to an 8-bit channel value (clamped; NaN becomes 0).
pub fn from_range(v: f32, range: ValueRange) -> u8 {
    let v = match range {
        ValueRange::ZeroToOne => v * 255.0,
        ValueRange::ZeroTo255 => v,
        ValueRange::MinusOneToOne => (v + 1.0) * 127.5,
    };
    // `as` saturates and maps NaN to 0.
    (v + 0.5) as u8
}

fn sample(plane: &[u8], stride: usize, tx: Tap, ty: Tap) -> u32 {
    let r0 = ty.i0 as usize * stride;
    let r1 = ty.i1 as usize * stride;
    let top = u32::from(plane[r0 + tx.i0 as usize]) * (256 - tx.w1)
        + u32::from(plane[r0 + tx.i1 as usize]) * tx.w1;
    let bot = u32::from(plane[r1 + tx.i0 as usize]) * (256 - tx.w1)
        + u32::from(plane[r1 + tx.i1 as usize]) * tx.w1;
    (top * (256 - ty.w1) + bot * ty.w1 + (1 << 15)) >> 16
}

/// Writes the model's input tensor straight from an I420 frame: each tensor pixel samples Y, U and
/// V bilinearly at its position in the frame and is converted to RGB there, so only
/// `width * height` pixels of the tensor are ever converted. `view` says which part of the frame
/// the tensor shows (see [`Fit::view`](super::tensor::Fit::view)); tensor pixels outside the
/// frame are black.
pub fn frame_to_tensor(frame: &VideoFrame, format: &TensorFormat, view: View, out: &mut [f32]) {
    debug_assert_eq!(out.len(), format.len());
    let (cw, ch) = chroma_size(frame.width, frame.height);
    out.fill(to_range(0, format.range));
    if frame.width == 0 || frame.height == 0 {
        return;
    }
    let lut: [f32; 256] = std::array::from_fn(|v| to_range(v as u8, format.range));
    // Luma and chroma taps of the tensor pixel centre `i` along an axis.
    let taps = |i: u32, origin: f32, extent: f32, tensor: u32, luma: u32, chroma: u32| {
        let at = f64::from(origin) + (f64::from(i) + 0.5) * f64::from(extent) / f64::from(tensor);
        let chroma_at = at * f64::from(chroma) / f64::from(luma);
        tap_at(at, luma).zip(tap_at(chroma_at, chroma))
    };
    // Column taps once per call; row taps once per row.
    let columns: Vec<Option<(Tap, Tap)>> = (0..format.width)
        .map(|tx| taps(tx, view.x, view.width, format.width, frame.width, cw))
        .collect();
    for ty in 0..format.height {
        let Some((ly, cy)) = taps(ty, view.y, view.height, format.height, frame.height, ch) else {
            continue;
        };
        for (tx, column) in (0..).zip(&columns) {
            let Some((lx, cx)) = *column else {
                continue;
            };
            let p = Yuv {
                y: sample(&frame.y, frame.width as usize, lx, ly) as u8,
                u: sample(&frame.u, cw as usize, cx, cy) as u8,
                v: sample(&frame.v, cw as usize, cx, cy) as u8,
            };
            let rgb = yuv_to_rgb(p);
            out[format.index(tx, ty, 0)] = lut[rgb.r as usize];
            out[format.index(tx, ty, 1)] = lut[rgb.g as usize];
            out[format.index(tx, ty, 2)] = lut[rgb.b as usize];
        }
    }
}

/// Brings a plane in model space (`sw` x `sh`, showing `view` of a `frame_w` x `frame_h` frame)
/// back into frame space: `out` covers the whole frame at about the plane's own resolution, 0
/// where the model did not see. Returns `out`'s size.
pub fn view_to_frame(
    src: &[u8],
    (sw, sh): (u32, u32),
    view: View,
    (frame_w, frame_h): (u32, u32),
    out: &mut Vec<u8>,
) -> (u32, u32) {
    let size = |frame: u32, plane: u32, extent: f32| {
        ((f64::from(frame) * f64::from(plane) / f64::from(extent)).round() as u32)
            .clamp(1, frame.max(1))
    };
    let (ow, oh) = (
        size(frame_w, sw, view.width),
        size(frame_h, sh, view.height),
    );
    out.clear();
    out.resize((ow * oh) as usize, 0);
    if src.len() < (sw * sh) as usize || view.width <= 0.0 || view.height <= 0.0 {
        return (ow, oh);
    }
    // Output pixel centre -> frame position -> position in the plane.
    let taps = |i: u32, out_len: u32, frame: u32, origin: f32, extent: f32, plane: u32| {
        let at = (f64::from(i) + 0.5) * f64::from(frame) / f64::from(out_len);
        tap_at(
            (at - f64::from(origin)) * f64::from(plane) / f64::from(extent),
            plane,
        )
    };
    let columns: Vec<Option<Tap>> = (0..ow)
        .map(|x| taps(x, ow, frame_w, view.x, view.width, sw))
        .collect();
    for (y, row) in (0..oh).zip(out.chunks_exact_mut(ow as usize)) {
        let Some(ty) = taps(y, oh, frame_h, view.y, view.height, sh) else {
            continue;
        };
        for (o, column) in row.iter_mut().zip(&columns) {
            if let Some(tx) = *column {
                *o = sample(src, sw as usize, tx, ty) as u8;
            }
        }
    }
    (ow, oh)
}

/// A small I420-like picture at model resolution, with chroma kept at full (small) resolution so
/// it can be upscaled straight to the frame's chroma size.
#[derive(Debug, Default)]
pub struct SmallYuv {
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

/// Converts a model's RGB image output (`format` describes its layout, order and range) to
/// small Y, U, V planes.
pub fn tensor_to_small_yuv(data: &[f32], format: &TensorFormat, out: &mut SmallYuv) {
    let n = (format.width * format.height) as usize;
    out.width = format.width;
    out.height = format.height;
    out.y.resize(n, 0);
    out.u.resize(n, 0);
    out.v.resize(n, 0);
    if data.len() < format.len() {
        return;
    }
    for ty in 0..format.height {
        for tx in 0..format.width {
            let rgb = Rgb {
                r: from_range(data[format.index(tx, ty, 0)], format.range),
                g: from_range(data[format.index(tx, ty, 1)], format.range),
                b: from_range(data[format.index(tx, ty, 2)], format.range),
            };
            let p = rgb_to_yuv(rgb);
            let i = (ty * format.width + tx) as usize;
            out.y[i] = p.y;
            out.u[i] = p.u;
            out.v[i] = p.v;
        }
    }
}

/// Upscales a small picture onto the whole frame, replacing its content.
pub fn small_yuv_to_frame(
    small: &SmallYuv,
    scalers: &mut [PlaneScaler; 3],
    frame: &mut VideoFrame,
) {
    let (cw, ch) = chroma_size(frame.width, frame.height);
    let (sw, sh) = (small.width, small.height);
    scalers[0].resize(&small.y, sw, sh, &mut frame.y, frame.width, frame.height);
    scalers[1].resize(&small.u, sw, sh, &mut frame.u, cw, ch);
    scalers[2].resize(&small.v, sw, sh, &mut frame.v, cw, ch);
}

/// Converts a probability mask (0..1) to 8-bit alpha (255 = person / keep the foreground).
pub fn mask_to_alpha(mask: impl IntoIterator<Item = f32>, out: &mut Vec<u8>) {
    out.clear();
    // `as` saturates and maps NaN to 0.
    out.extend(mask.into_iter().map(|p| (p * 255.0 + 0.5) as u8));
}

/// Buffers reused by [`box_blur`].
#[derive(Debug, Default)]
pub struct BlurScratch {
    line: Vec<u32>,
    sums: Vec<u32>,
    copy: Vec<u8>,
}

/// Separable box blur of a plane in place, `passes` times (three passes approximate a gaussian
/// with sigma about `radius`). Edges repeat the border pixel.
pub fn box_blur(
    plane: &mut [u8],
    w: u32,
    h: u32,
    radius: u32,
    passes: u32,
    scratch: &mut BlurScratch,
) {
    let (w, h, r) = (w as usize, h as usize, radius as usize);
    if r == 0 || w == 0 || h == 0 {
        return;
    }
    for _ in 0..passes {
        scratch.line.resize(w, 0);
        for row in plane.chunks_exact_mut(w) {
            blur_line(row, r, &mut scratch.line);
        }
        vertical_blur(plane, w, h, r, scratch);
    }
}

fn blur_line(row: &mut [u8], r: usize, copy: &mut [u32]) {
    let n = row.len() as isize;
    let div = (2 * r + 1) as u32;
    for (c, &v) in copy.iter_mut().zip(row.iter()) {
        *c = u32::from(v);
    }
    let at = |i: isize| copy[i.clamp(0, n - 1) as usize];
    let r = r as isize;
    let mut sum: u32 = (-r..=r).map(at).sum();
    for (i, out) in row.iter_mut().enumerate() {
        *out = ((sum + div / 2) / div) as u8;
        let i = i as isize;
        sum = sum + at(i + r + 1) - at(i - r);
    }
}

/// Vertical box blur with one running sum per column, walking rows (cache friendly).
fn vertical_blur(plane: &mut [u8], w: usize, h: usize, r: usize, scratch: &mut BlurScratch) {
    let div = (2 * r + 1) as u32;
    scratch.copy.clear();
    scratch.copy.extend_from_slice(plane);
    let src = &scratch.copy;
    let row = |i: isize| -> &[u8] {
        let i = i.clamp(0, h as isize - 1) as usize;
        &src[i * w..][..w]
    };
    let sums = &mut scratch.sums;
    sums.clear();
    sums.resize(w, 0);
    let r = r as isize;
    for i in -r..=r {
        for (s, &v) in sums.iter_mut().zip(row(i)) {
            *s += u32::from(v);
        }
    }
    for (y, out) in plane.chunks_exact_mut(w).enumerate() {
        for (o, &s) in out.iter_mut().zip(sums.iter()) {
            *o = ((s + div / 2) / div) as u8;
        }
        let y = y as isize;
        for ((s, &a), &b) in sums.iter_mut().zip(row(y + r + 1)).zip(row(y - r)) {
            *s = *s + u32::from(a) - u32::from(b);
        }
    }
}

/// Area-average downscale by an integer `factor`; the output is `ceil(w / factor)` x
/// `ceil(h / factor)` and border blocks average only the pixels that exist.
pub fn downscale_box(src: &[u8], w: u32, h: u32, factor: u32, out: &mut Vec<u8>) -> (u32, u32) {
    let f = factor.max(1) as usize;
    let (w, h) = (w as usize, h as usize);
    let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
    out.clear();
    out.resize(ow * oh, 0);
    for oy in 0..oh {
        let ys = oy * f..((oy + 1) * f).min(h);
        for (ox, o) in out[oy * ow..][..ow].iter_mut().enumerate() {
            let xs = ox * f..((ox + 1) * f).min(w);
            let mut sum = 0u32;
            for y in ys.clone() {
                sum += src[y * w..][xs.clone()]
                    .iter()
                    .map(|&v| u32::from(v))
                    .sum::<u32>();
            }
            let n = (ys.len() * xs.len()) as u32;
            *o = ((sum + n / 2) / n) as u8;
        }
    }
    (ow as u32, oh as u32)
}

/// Blurs a whole plane cheaply: shrink by an integer factor, box-blur three times at the small
/// size, and scale back up bilinearly into `out`. `radius` is in full-resolution pixels.
#[derive(Debug, Default)]
pub struct PlaneBlur {
    small: Vec<u8>,
    scratch: BlurScratch,
    scaler: PlaneScaler,
}

impl PlaneBlur {
    pub fn blur(&mut self, src: &[u8], w: u32, h: u32, radius: u32, out: &mut Vec<u8>) {
        out.resize((w * h) as usize, 0);
        let factor = (radius / 4).clamp(1, 16);
        let small_radius = (radius + factor / 2) / factor;
        let (sw, sh) = downscale_box(src, w, h, factor, &mut self.small);
        box_blur(&mut self.small, sw, sh, small_radius, 3, &mut self.scratch);
        self.scaler.resize(&self.small, sw, sh, out, w, h);
    }
}

/// `fg = fg * a + bg * (1 - a)` per pixel, `a` in 0..=255.
pub fn blend(fg: &mut [u8], bg: &[u8], alpha: &[u8]) {
    for ((f, &b), &a) in fg.iter_mut().zip(bg).zip(alpha) {
        let a = u32::from(a);
        *f = ((u32::from(*f) * a + u32::from(b) * (255 - a) + 127) / 255) as u8;
    }
}

/// `fg = fg * a + value * (1 - a)` per pixel, `a` in 0..=255.
pub fn blend_constant(fg: &mut [u8], value: u8, alpha: &[u8]) {
    let b = u32::from(value);
    for (f, &a) in fg.iter_mut().zip(alpha) {
        let a = u32::from(a);
        *f = ((u32::from(*f) * a + b * (255 - a) + 127) / 255) as u8;
    }
}

/// Draws the mask itself: white where the person is, black elsewhere, no colour.
pub fn show_alpha(frame: &mut VideoFrame, alpha_y: &[u8]) {
    for (y, &a) in frame.y.iter_mut().zip(alpha_y) {
        *y = (16 + (u32::from(a) * 219 + 127) / 255) as u8;
    }
    frame.u.fill(128);
    frame.v.fill(128);
}

/// Scales a picture to cover `w` x `h` (keeping its aspect ratio, cropping the overflow
/// centrally) and converts it to I420. Used once per frame size for background images.
pub fn cover_rgb_to_i420(rgb: &[u8], iw: u32, ih: u32, w: u32, h: u32) -> VideoFrame {
    let mut out = VideoFrame::filled(w, h, 16, 128, 128);
    if iw == 0 || ih == 0 || w == 0 || h == 0 || rgb.len() < (iw * ih * 3) as usize {
        return out;
    }
    // Crop window in the image with the frame's aspect ratio.
    let (cw_img, ch_img) = if u64::from(iw) * u64::from(h) > u64::from(ih) * u64::from(w) {
        (
            ((u64::from(ih) * u64::from(w)) / u64::from(h)).max(1) as u32,
            ih,
        )
    } else {
        (
            iw,
            ((u64::from(iw) * u64::from(h)) / u64::from(w)).max(1) as u32,
        )
    };
    let (x_off, y_off) = ((iw - cw_img) / 2, (ih - ch_img) / 2);
    let at = |x: u32, y: u32| -> Rgb {
        let i = (((y_off + y) * iw + x_off + x) * 3) as usize;
        Rgb {
            r: rgb[i],
            g: rgb[i + 1],
            b: rgb[i + 2],
        }
    };
    let pixel = |x: u32, y: u32, ow: u32, oh: u32| -> Rgb {
        let tx = tap(x, cw_img, ow);
        let ty = tap(y, ch_img, oh);
        let lerp =
            |a: u8, b: u8, wt: u32| (u32::from(a) * (256 - wt) + u32::from(b) * wt) as f32 / 256.0;
        let p00 = at(tx.i0, ty.i0);
        let p10 = at(tx.i1, ty.i0);
        let p01 = at(tx.i0, ty.i1);
        let p11 = at(tx.i1, ty.i1);
        let mix = |a: u8, b: u8, c: u8, d: u8| {
            let top = lerp(a, b, tx.w1);
            let bot = lerp(c, d, tx.w1);
            (top + (bot - top) * ty.w1 as f32 / 256.0 + 0.5) as u8
        };
        Rgb {
            r: mix(p00.r, p10.r, p01.r, p11.r),
            g: mix(p00.g, p10.g, p01.g, p11.g),
            b: mix(p00.b, p10.b, p01.b, p11.b),
        }
    };
    for y in 0..h {
        for x in 0..w {
            out.y[(y * w + x) as usize] = rgb_to_yuv(pixel(x, y, w, h)).y;
        }
    }
    let (cw, ch) = chroma_size(w, h);
    for y in 0..ch {
        for x in 0..cw {
            let p = rgb_to_yuv(pixel(x, y, cw, ch));
            out.u[(y * cw + x) as usize] = p.u;
            out.v[(y * cw + x) as usize] = p.v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::tensor::{ColorOrder, Fit, Layout};

    /// The view of a stretched frame.
    fn whole(frame: &VideoFrame, f: &TensorFormat) -> View {
        Fit::Stretch.view(frame.width, frame.height, f.width, f.height)
    }

    fn format(
        w: u32,
        h: u32,
        layout: Layout,
        color_order: ColorOrder,
        range: ValueRange,
    ) -> TensorFormat {
        TensorFormat {
            width: w,
            height: h,
            layout,
            color_order,
            range,
        }
    }

    /// Sum of absolute horizontal and vertical neighbour differences: high-frequency energy.
    fn hf_energy(plane: &[u8], w: usize) -> u64 {
        let h = plane.len() / w;
        let mut e = 0u64;
        for y in 0..h {
            for x in 0..w {
                let v = i32::from(plane[y * w + x]);
                if x + 1 < w {
                    e += (v - i32::from(plane[y * w + x + 1])).unsigned_abs() as u64;
                }
                if y + 1 < h {
                    e += (v - i32::from(plane[(y + 1) * w + x])).unsigned_abs() as u64;
                }
            }
        }
        e
    }

    #[test]
    fn bt601_known_colours() {
        assert_eq!(
            rgb_to_yuv(Rgb { r: 0, g: 0, b: 0 }),
            Yuv {
                y: 16,
                u: 128,
                v: 128
            }
        );
        assert_eq!(
            rgb_to_yuv(Rgb {
                r: 255,
                g: 255,
                b: 255
            }),
            Yuv {
                y: 235,
                u: 128,
                v: 128
            }
        );
        assert_eq!(
            rgb_to_yuv(Rgb { r: 0, g: 255, b: 0 }),
            Yuv {
                y: 144,
                u: 54,
                v: 34
            }
        );
        assert_eq!(
            yuv_to_rgb(Yuv {
                y: 16,
                u: 128,
                v: 128
            }),
            Rgb { r: 0, g: 0, b: 0 }
        );
        assert_eq!(
            yuv_to_rgb(Yuv {
                y: 235,
                u: 128,
                v: 128
            }),
            Rgb {
                r: 255,
                g: 255,
                b: 255
            }
        );
        // Round trips stay within rounding error for saturated colours.
        for c in [
            Rgb { r: 255, g: 0, b: 0 },
            Rgb { r: 0, g: 255, b: 0 },
            Rgb { r: 0, g: 0, b: 255 },
            Rgb {
                r: 90,
                g: 160,
                b: 30,
            },
        ] {
            let back = yuv_to_rgb(rgb_to_yuv(c));
            for (a, b) in [(c.r, back.r), (c.g, back.g), (c.b, back.b)] {
                assert!(a.abs_diff(b) <= 3, "{c:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn bilinear_taps_align_pixel_centres() {
        // 2 -> 4: destination centres at 0.25, 0.75 ... of a source pixel.
        assert_eq!(
            tap(0, 2, 4),
            Tap {
                i0: 0,
                i1: 1,
                w1: 0
            }
        );
        assert_eq!(
            tap(1, 2, 4),
            Tap {
                i0: 0,
                i1: 1,
                w1: 64
            }
        );
        assert_eq!(
            tap(2, 2, 4),
            Tap {
                i0: 0,
                i1: 1,
                w1: 192
            }
        );
        assert_eq!(
            tap(3, 2, 4),
            Tap {
                i0: 1,
                i1: 1,
                w1: 0
            }
        );
        // Identity size maps each pixel to itself.
        for i in 0..7 {
            assert_eq!(
                tap(i, 7, 7),
                Tap {
                    i0: i,
                    i1: (i + 1).min(6),
                    w1: 0
                }
            );
        }
    }

    #[test]
    fn resize_upscales_with_known_values() {
        let mut s = PlaneScaler::default();
        let src = [0u8, 100];
        let mut dst = [0u8; 4];
        s.resize(&src, 2, 1, &mut dst, 4, 1);
        assert_eq!(dst, [0, 25, 75, 100]);
        // Vertical too, with the same scaler reused at another size.
        let src = [0u8, 200];
        let mut dst = [0u8; 4];
        s.resize(&src, 1, 2, &mut dst, 1, 4);
        assert_eq!(dst, [0, 50, 150, 200]);
        // Constant planes stay constant at any size.
        let src = vec![77u8; 16 * 9];
        let mut dst = vec![0u8; 61 * 37];
        s.resize(&src, 16, 9, &mut dst, 61, 37);
        assert!(dst.iter().all(|&v| v == 77));
        // Downscaling a two-tone plane keeps the halves.
        let src: Vec<u8> = (0..64 * 8)
            .map(|i| if i % 64 < 32 { 10 } else { 200 })
            .collect();
        let mut dst = vec![0u8; 8 * 2];
        s.resize(&src, 64, 8, &mut dst, 8, 2);
        assert_eq!(&dst[..8], &[10, 10, 10, 10, 200, 200, 200, 200]);
    }

    #[test]
    fn tensor_from_flat_frame_has_the_colour_in_every_layout() {
        let green = rgb_to_yuv(Rgb { r: 0, g: 255, b: 0 });
        let frame = VideoFrame::filled(64, 48, green.y, green.u, green.v);
        let expect = yuv_to_rgb(green);
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for order in [ColorOrder::Rgb, ColorOrder::Bgr] {
                for range in [
                    ValueRange::ZeroToOne,
                    ValueRange::ZeroTo255,
                    ValueRange::MinusOneToOne,
                ] {
                    let f = format(8, 6, layout, order, range);
                    let mut t = vec![f32::NAN; f.len()];
                    frame_to_tensor(&frame, &f, whole(&frame, &f), &mut t);
                    for y in 0..6 {
                        for x in 0..8 {
                            assert_eq!(t[f.index(x, y, 0)], to_range(expect.r, range));
                            assert_eq!(t[f.index(x, y, 1)], to_range(expect.g, range));
                            assert_eq!(t[f.index(x, y, 2)], to_range(expect.b, range));
                        }
                    }
                }
            }
        }
        // The raw positions: NHWC RGB interleaves, BGR puts blue first.
        let f = format(8, 6, Layout::Nhwc, ColorOrder::Bgr, ValueRange::ZeroTo255);
        let mut t = vec![0.0; f.len()];
        frame_to_tensor(&frame, &f, whole(&frame, &f), &mut t);
        assert_eq!(
            &t[..3],
            &[
                f32::from(expect.b),
                f32::from(expect.g),
                f32::from(expect.r)
            ]
        );
        let f = format(8, 6, Layout::Nchw, ColorOrder::Rgb, ValueRange::ZeroTo255);
        frame_to_tensor(&frame, &f, whole(&frame, &f), &mut t);
        assert_eq!(
            (t[0], t[48], t[96]),
            (
                f32::from(expect.r),
                f32::from(expect.g),
                f32::from(expect.b)
            )
        );
    }

    #[test]
    fn tensor_keeps_left_and_right_halves() {
        let red = rgb_to_yuv(Rgb { r: 255, g: 0, b: 0 });
        let blue = rgb_to_yuv(Rgb { r: 0, g: 0, b: 255 });
        let mut frame = VideoFrame::filled(64, 32, 0, 0, 0);
        for (i, v) in frame.y.iter_mut().enumerate() {
            *v = if i % 64 < 32 { red.y } else { blue.y };
        }
        for (i, (u, v)) in frame.u.iter_mut().zip(frame.v.iter_mut()).enumerate() {
            let p = if i % 32 < 16 { red } else { blue };
            (*u, *v) = (p.u, p.v);
        }
        let f = format(16, 8, Layout::Nchw, ColorOrder::Rgb, ValueRange::ZeroToOne);
        let mut t = vec![0.0; f.len()];
        frame_to_tensor(&frame, &f, whole(&frame, &f), &mut t);
        for y in 0..8 {
            assert!(
                t[f.index(1, y, 0)] > 0.95 && t[f.index(1, y, 2)] < 0.05,
                "left is red"
            );
            assert!(
                t[f.index(14, y, 2)] > 0.95 && t[f.index(14, y, 0)] < 0.05,
                "right is blue"
            );
        }
    }

    #[test]
    fn contain_pads_the_tensor_and_the_mask_comes_back_to_the_frame() {
        let red = rgb_to_yuv(Rgb { r: 255, g: 0, b: 0 });
        let frame = VideoFrame::filled(64, 32, red.y, red.u, red.v);
        let f = format(16, 16, Layout::Nhwc, ColorOrder::Rgb, ValueRange::ZeroToOne);
        let mut t = vec![f32::NAN; f.len()];
        let view = Fit::Contain.view(64, 32, 16, 16);
        frame_to_tensor(&frame, &f, view, &mut t);
        // 64x32 in 16x16: rows 4..12 hold the picture, the rest is black padding.
        for y in 0..16 {
            let expect = if (4..12).contains(&y) { 1.0 } else { 0.0 };
            assert!((t[f.index(8, y, 0)] - expect).abs() < 0.02, "row {y}");
            assert!(t[f.index(8, y, 2)] < 0.02, "row {y}");
        }
        // A model-space plane whose value is its row: back in the frame, rows 4..12 only.
        let plane: Vec<u8> = (0..16 * 16).map(|i| (i / 16 * 10) as u8).collect();
        let mut out = Vec::new();
        assert_eq!(
            view_to_frame(&plane, (16, 16), view, (64, 32), &mut out),
            (16, 8)
        );
        assert_eq!((out[0], out[16 * 8 - 1]), (40, 110));
        // A view of the frame's left half and what lies left of it: the right half is unseen.
        let half = View {
            x: -32.0,
            y: 0.0,
            width: 64.0,
            height: 32.0,
        };
        let plane = vec![200u8; 16 * 16];
        let size = view_to_frame(&plane, (16, 16), half, (64, 32), &mut out);
        assert_eq!(size, (16, 16));
        assert_eq!((out[0], out[7], out[8], out[15]), (200, 200, 0, 0));
    }

    #[test]
    fn value_ranges_map_both_ways() {
        for range in [
            ValueRange::ZeroToOne,
            ValueRange::ZeroTo255,
            ValueRange::MinusOneToOne,
        ] {
            for v in [0u8, 1, 127, 128, 254, 255] {
                assert_eq!(from_range(to_range(v, range), range), v, "{range:?} {v}");
            }
        }
        assert_eq!(to_range(0, ValueRange::MinusOneToOne), -1.0);
        assert_eq!(to_range(255, ValueRange::MinusOneToOne), 1.0);
        assert_eq!(from_range(7.0, ValueRange::ZeroToOne), 255);
        assert_eq!(from_range(-3.0, ValueRange::ZeroToOne), 0);
        assert_eq!(from_range(f32::NAN, ValueRange::ZeroToOne), 0);
    }

    #[test]
    fn style_output_becomes_the_frame() {
        // A 4x2 NCHW tensor: left half red, right half blue, range 0..1.
        let f = format(4, 2, Layout::Nchw, ColorOrder::Rgb, ValueRange::ZeroToOne);
        let mut t = vec![0.0; f.len()];
        for y in 0..2 {
            for x in 0..4 {
                let c = if x < 2 { 0 } else { 2 };
                t[f.index(x, y, c)] = 1.0;
            }
        }
        let mut small = SmallYuv::default();
        tensor_to_small_yuv(&t, &f, &mut small);
        let red = rgb_to_yuv(Rgb { r: 255, g: 0, b: 0 });
        let blue = rgb_to_yuv(Rgb { r: 0, g: 0, b: 255 });
        assert_eq!((small.y[0], small.u[0], small.v[0]), (red.y, red.u, red.v));
        assert_eq!(
            (small.y[3], small.u[3], small.v[3]),
            (blue.y, blue.u, blue.v)
        );
        let mut frame = VideoFrame::filled(40, 20, 0, 0, 0);
        let mut scalers: [PlaneScaler; 3] = Default::default();
        small_yuv_to_frame(&small, &mut scalers, &mut frame);
        assert_eq!((frame.y[0], frame.u[0], frame.v[0]), (red.y, red.u, red.v));
        assert_eq!(
            (frame.y[39], frame.u[19], frame.v[19]),
            (blue.y, blue.u, blue.v)
        );
    }

    #[test]
    fn box_blur_keeps_constants_and_spreads_an_impulse() {
        let mut scratch = BlurScratch::default();
        let mut flat = vec![90u8; 20 * 10];
        box_blur(&mut flat, 20, 10, 3, 3, &mut scratch);
        assert!(flat.iter().all(|&v| v == 90));

        let mut p = vec![0u8; 11 * 11];
        p[5 * 11 + 5] = 255;
        let mut once = p.clone();
        box_blur(&mut once, 11, 11, 1, 1, &mut scratch);
        // One 3x3 pass: 255/9 = 28.3 on the 3x3 block, 0 outside.
        for y in 0..11 {
            for x in 0..11 {
                let inside = (4..=6).contains(&x) && (4..=6).contains(&y);
                let v = once[y * 11 + x];
                if inside {
                    assert!((27..=29).contains(&v), "({x},{y}) = {v}");
                } else {
                    assert_eq!(v, 0, "({x},{y})");
                }
            }
        }
        // Radius 0 is the identity.
        let before = p.clone();
        box_blur(&mut p, 11, 11, 0, 3, &mut scratch);
        assert_eq!(p, before);
    }

    #[test]
    fn downscale_averages_blocks_including_partial_ones() {
        // 5x1 by 2: [10,20 | 30,40 | 50]
        let mut out = Vec::new();
        assert_eq!(
            downscale_box(&[10, 20, 30, 40, 50], 5, 1, 2, &mut out),
            (3, 1)
        );
        assert_eq!(out, [15, 35, 50]);
        assert_eq!(
            downscale_box(&[0, 100, 200, 100], 2, 2, 2, &mut out),
            (1, 1)
        );
        assert_eq!(out, [100]);
    }

    #[test]
    fn plane_blur_removes_high_frequencies_and_keeps_the_mean() {
        let (w, h) = (160u32, 120u32);
        let checker: Vec<u8> = (0..w * h)
            .map(|i| {
                if ((i % w) / 2 + (i / w) / 2) % 2 == 0 {
                    40
                } else {
                    200
                }
            })
            .collect();
        let mut out = Vec::new();
        let mut blur = PlaneBlur::default();
        blur.blur(&checker, w, h, 12, &mut out);
        assert_eq!(out.len(), checker.len());
        let before = hf_energy(&checker, w as usize);
        let after = hf_energy(&out, w as usize);
        assert!(
            after * 20 < before,
            "high-frequency energy {before} -> {after}"
        );
        let mean = out.iter().map(|&v| u64::from(v)).sum::<u64>() / out.len() as u64;
        assert!((115..=125).contains(&mean), "mean {mean}");
    }

    #[test]
    fn blend_follows_alpha() {
        let mut fg = [200u8, 200, 200];
        blend(&mut fg, &[0, 0, 0], &[255, 0, 128]);
        assert_eq!(fg, [200, 0, 100]);
        let mut fg = [200u8, 200, 200];
        blend_constant(&mut fg, 100, &[255, 0, 51]);
        assert_eq!(fg, [200, 100, 120]);
    }

    #[test]
    fn mask_alpha_and_show_mask() {
        let mut alpha = Vec::new();
        mask_to_alpha([0.0, 1.0, 0.5, -2.0, 3.0, f32::NAN], &mut alpha);
        assert_eq!(alpha, [0, 255, 128, 0, 255, 0]);
        let mut frame = VideoFrame::filled(2, 1, 100, 90, 170);
        show_alpha(&mut frame, &[0, 255]);
        assert_eq!(frame.y, [16, 235]);
        assert_eq!((frame.u[0], frame.v[0]), (128, 128));
    }

    #[test]
    fn cover_crops_the_long_side_centrally() {
        // A 4x1 image: red, green, green, blue; covering a 2x2 frame keeps the green middle.
        let img = [255, 0, 0, 0, 255, 0, 0, 255, 0, 0, 0, 255];
        let f = cover_rgb_to_i420(&img, 4, 1, 2, 2);
        let green = rgb_to_yuv(Rgb { r: 0, g: 255, b: 0 });
        assert!(f.y.iter().all(|&y| y == green.y), "{:?}", f.y);
        assert_eq!((f.u[0], f.v[0]), (green.u, green.v));
    }
}
