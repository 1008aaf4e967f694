//! Keypoints as plain data and pure functions: decoding a `landmarks` output, One Euro smoothing
//! over time, and drawing them on I420 planes (a skeleton, or body parts coloured by their nearest
//! bone).
//!
//! Points are kept in frame coordinates normalised to 0..1 (x right, y down), so smoothing and
//! drawing do not depend on the model's input size, the fit, or the frame's resolution.

use super::composite::{Yuv, rgb_to_yuv};
use super::manifest::{Bone, CoordinateSpace, LandmarkOutput, Smoothing};
use super::tensor::View;
use crate::frame::{VideoFrame, chroma_size};

/// One keypoint: where it is (0..1 of the frame) and how visible (0..1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Landmark {
    pub x: f32,
    pub y: f32,
    pub visibility: f32,
}

pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Where a landmarks tensor's points are: the model input's size, and the part of the frame it
/// showed.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub input: (u32, u32),
    pub view: View,
    pub frame: (u32, u32),
}

impl Placement {
    /// Point `index` of the tensor in frame pixels.
    fn point(&self, data: &[f32], spec: &LandmarkOutput, index: u32) -> Option<(f32, f32)> {
        let stride = spec.values_per_point as usize;
        let p = data.get(index as usize * stride..)?.get(..stride)?;
        let (sx, sy) = match spec.space {
            CoordinateSpace::InputPixels => (1.0, 1.0),
            CoordinateSpace::Normalized => (self.input.0 as f32, self.input.1 as f32),
        };
        let (x, y) = (p[spec.x as usize] * sx, p[spec.y as usize] * sy);
        Some(self.view.to_frame((x, y), self.input.0, self.input.1))
    }
}

/// Reads `spec.count` points from a landmarks tensor into `out`, in 0..1 of the frame.
pub fn decode(
    data: &[f32],
    spec: &LandmarkOutput,
    placement: &Placement,
    out: &mut Vec<Landmark>,
) -> Result<(), String> {
    let (count, stride) = (spec.count as usize, spec.values_per_point as usize);
    if data.len() < count * stride {
        return Err(format!(
            "landmarks output `{}` has {} values, the manifest describes {count} x {stride}",
            spec.name,
            data.len()
        ));
    }
    let (fw, fh) = (
        placement.frame.0.max(1) as f32,
        placement.frame.1.max(1) as f32,
    );
    out.clear();
    out.extend((0..spec.count).map(|i| {
        let (x, y) = placement
            .point(data, spec, i)
            .unwrap_or((f32::NAN, f32::NAN));
        let visibility = spec.visibility.map_or(1.0, |v| {
            let v = data[i as usize * stride + v as usize];
            if spec.visibility_sigmoid {
                sigmoid(v)
            } else {
                v
            }
        });
        Landmark {
            x: x / fw,
            y: y / fh,
            // NaN compares false everywhere: make it "not visible".
            visibility: if visibility.is_nan() { 0.0 } else { visibility },
        }
    }));
    Ok(())
}

/// The next frame's view from this frame's points (see [`RoiSpec`](super::manifest::RoiSpec)),
/// with the `input` aspect ratio; `None` when the manifest has no `roi`, the points are not in the
/// tensor, or they make no usable square (under 8 frame pixels, or not finite).
pub fn next_view(data: &[f32], spec: &LandmarkOutput, placement: &Placement) -> Option<View> {
    let roi = spec.roi?;
    let (cx, cy) = placement.point(data, spec, roi.center)?;
    let (ex, ey) = placement.point(data, spec, roi.edge)?;
    let half = roi.scale * ((ex - cx).powi(2) + (ey - cy).powi(2)).sqrt();
    let (w, h) = placement.input;
    (half.is_finite() && cx.is_finite() && cy.is_finite() && half >= 4.0)
        .then(|| View::around(cx, cy, 2.0 * half, 2.0 * half, w, h))
}

/// Seconds between two frames from their 90 kHz RTP timestamps; `None` when they are the same
/// picture time, out of order, or more than a second apart (then smoothing starts over).
pub fn frame_interval(previous: u32, now: u32) -> Option<f32> {
    let ticks = now.wrapping_sub(previous);
    (1..=90_000)
        .contains(&ticks)
        .then(|| ticks as f32 / 90_000.0)
}

fn smoothing_factor(cutoff: f32, dt: f32) -> f32 {
    let tau = 1.0 / (2.0 * std::f32::consts::PI * cutoff);
    1.0 / (1.0 + tau / dt)
}

/// One Euro filter of one value (Casiez, Roussel, Vogel 2012): a low-pass whose cut-off rises with
/// the speed, so still points stop jittering and moving ones do not lag.
#[derive(Clone, Copy, Debug, Default)]
pub struct OneEuro {
    /// Filtered value and filtered derivative, once started.
    state: Option<(f32, f32)>,
}

impl OneEuro {
    /// The filtered value of `x`, `dt` seconds after the previous one (`None`: start over).
    pub fn filter(&mut self, x: f32, dt: Option<f32>, p: &Smoothing) -> f32 {
        let (Some((prev, prev_dx)), Some(dt)) = (self.state, dt) else {
            self.state = Some((x, 0.0));
            return x;
        };
        let a_d = smoothing_factor(p.derivative_cutoff, dt);
        let dx = prev_dx + a_d * ((x - prev) / dt - prev_dx);
        let a = smoothing_factor(p.min_cutoff + p.beta * dx.abs(), dt);
        let out = prev + a * (x - prev);
        // A NaN input must not poison every later frame.
        self.state = out.is_finite().then_some((out, dx));
        out
    }
}

/// One Euro filters for x and y of every point.
#[derive(Debug)]
pub struct Smoother {
    params: Smoothing,
    axes: Vec<[OneEuro; 2]>,
}

impl Smoother {
    pub fn new(params: Smoothing) -> Smoother {
        Smoother {
            params,
            axes: Vec::new(),
        }
    }

    /// Smooths `points` in place; `dt` as in [`OneEuro::filter`].
    pub fn smooth(&mut self, points: &mut [Landmark], dt: Option<f32>) {
        if self.axes.len() != points.len() {
            self.axes = vec![Default::default(); points.len()];
        }
        for (p, [fx, fy]) in points.iter_mut().zip(&mut self.axes) {
            p.x = fx.filter(p.x, dt, &self.params);
            p.y = fy.filter(p.y, dt, &self.params);
        }
    }

    /// Forgets the past (nobody in the picture).
    pub fn reset(&mut self) {
        self.axes.clear();
    }
}

/// Half the bone line width for a frame `height` pixels high: 3 px at 480, 4.5 px at 720.
pub fn line_radius(height: u32) -> f32 {
    (height as f32 / 160.0).max(1.5)
}

/// Joint dots are this much larger than the bones' half width.
const JOINT_SCALE: f32 = 1.5;
/// Joints are white.
const JOINT: Yuv = Yuv {
    y: 235,
    u: 128,
    v: 128,
};

/// Draws the bones whose two ends are at least `threshold` visible, then their joints, on all
/// three planes (anti-aliased; chroma at half the size).
pub fn draw_skeleton(frame: &mut VideoFrame, points: &[Landmark], bones: &[Bone], threshold: f32) {
    let visible = |i: u32| {
        points
            .get(i as usize)
            .filter(|p| p.visibility >= threshold && p.x.is_finite() && p.y.is_finite())
    };
    let radius = line_radius(frame.height);
    for bone in bones {
        if let (Some(a), Some(b)) = (visible(bone.from), visible(bone.to)) {
            draw_capsule_yuv(frame, a, b, radius, rgb_to_yuv(bone.color));
        }
    }
    for bone in bones {
        for end in [bone.from, bone.to] {
            if let (Some(p), Some(_)) = (visible(end), visible(bone.from).and(visible(bone.to))) {
                draw_capsule_yuv(frame, p, p, radius * JOINT_SCALE, JOINT);
            }
        }
    }
}

/// A thick segment (a disc when `a == b`) in one colour on the three planes.
fn draw_capsule_yuv(frame: &mut VideoFrame, a: &Landmark, b: &Landmark, radius: f32, c: Yuv) {
    let (w, h) = (frame.width, frame.height);
    let (cw, ch) = chroma_size(w, h);
    let at = |p: &Landmark, w: u32, h: u32| (p.x * w as f32, p.y * h as f32);
    draw_capsule(&mut frame.y, (w, h), at(a, w, h), at(b, w, h), radius, c.y);
    let cr = radius * cw as f32 / w.max(1) as f32;
    draw_capsule(
        &mut frame.u,
        (cw, ch),
        at(a, cw, ch),
        at(b, cw, ch),
        cr,
        c.u,
    );
    draw_capsule(
        &mut frame.v,
        (cw, ch),
        at(a, cw, ch),
        at(b, cw, ch),
        cr,
        c.v,
    );
}

/// Paints `value` on the pixels within `radius` of segment `a`-`b` (pixel coordinates, pixel
/// centres at +0.5), with one pixel of anti-aliasing at the edge.
pub fn draw_capsule(
    plane: &mut [u8],
    (w, h): (u32, u32),
    a: (f32, f32),
    b: (f32, f32),
    radius: f32,
    value: u8,
) {
    let reach = radius + 1.0;
    let span = |lo: f32, hi: f32, len: u32| {
        let lo = (lo - reach).floor().clamp(0.0, len as f32) as usize;
        let hi = (hi + reach).ceil().clamp(0.0, len as f32) as usize;
        lo..hi
    };
    let xs = span(a.0.min(b.0), a.0.max(b.0), w);
    let ys = span(a.1.min(b.1), a.1.max(b.1), h);
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let target = f32::from(value);
    for py in ys {
        let row = &mut plane[py * w as usize..][..w as usize];
        let cy = py as f32 + 0.5;
        for px in xs.clone() {
            let cx = px as f32 + 0.5;
            let t = if len2 > 0.0 {
                (((cx - a.0) * dx + (cy - a.1) * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (qx, qy) = (a.0 + t * dx - cx, a.1 + t * dy - cy);
            let cover = (radius + 0.5 - (qx * qx + qy * qy).sqrt()).clamp(0.0, 1.0);
            if cover > 0.0 {
                let v = f32::from(row[px]);
                row[px] = (v + (target - v) * cover + 0.5) as u8;
            }
        }
    }
}

/// A bone as a segment in pixels of some plane, ready for distance queries.
#[derive(Clone, Copy, Debug)]
struct Segment {
    a: (f32, f32),
    d: (f32, f32),
    inv_len2: f32,
}

impl Segment {
    fn new(a: (f32, f32), b: (f32, f32)) -> Segment {
        let d = (b.0 - a.0, b.1 - a.1);
        let len2 = d.0 * d.0 + d.1 * d.1;
        Segment {
            a,
            d,
            inv_len2: if len2 > 0.0 { 1.0 / len2 } else { 0.0 },
        }
    }

    fn distance2(&self, x: f32, y: f32) -> f32 {
        let (px, py) = (x - self.a.0, y - self.a.1);
        let t = ((px * self.d.0 + py * self.d.1) * self.inv_len2).clamp(0.0, 1.0);
        let (qx, qy) = (px - t * self.d.0, py - t * self.d.1);
        qx * qx + qy * qy
    }
}

/// The bones whose ends are finite, as segments in pixels of a `w` x `h` plane.
fn segments(points: &[Landmark], bones: &[Bone], w: u32, h: u32) -> Vec<(usize, Segment)> {
    let at = |i: u32| {
        points
            .get(i as usize)
            .filter(|p| p.x.is_finite() && p.y.is_finite())
            .map(|p| (p.x * w as f32, p.y * h as f32))
    };
    bones
        .iter()
        .enumerate()
        .filter_map(|(i, b)| Some((i, Segment::new(at(b.from)?, at(b.to)?))))
        .collect()
}

/// The bone nearest to `(x, y)`, by index into the skeleton.
fn nearest(segments: &[(usize, Segment)], x: f32, y: f32) -> Option<usize> {
    segments
        .iter()
        .map(|(i, s)| (*i, s.distance2(x, y)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// Small Y, U, V planes (one value per mask pixel) holding each person pixel's body-part colour.
#[derive(Debug, Default)]
pub struct PartColours {
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

/// Colours every pixel of a `w` x `h` person mask (`alpha` > 0) like its nearest bone; pixels
/// off the person keep a neutral grey (their alpha hides them).
pub fn paint_parts(
    alpha: &[u8],
    (w, h): (u32, u32),
    points: &[Landmark],
    bones: &[Bone],
    out: &mut PartColours,
) {
    let n = (w * h) as usize;
    for plane in [&mut out.y, &mut out.u, &mut out.v] {
        plane.clear();
        plane.resize(n, 128);
    }
    let segments = segments(points, bones, w, h);
    let colours: Vec<Yuv> = bones.iter().map(|b| rgb_to_yuv(b.color)).collect();
    for (i, &a) in alpha.iter().enumerate().take(n) {
        if a == 0 {
            continue;
        }
        let (x, y) = ((i as u32 % w) as f32 + 0.5, (i as u32 / w) as f32 + 0.5);
        if let Some(bone) = nearest(&segments, x, y) {
            let c = colours[bone];
            (out.y[i], out.u[i], out.v[i]) = (c.y, c.u, c.v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::manifest::{LandmarkDraw, RoiSpec};
    use crate::filter::tensor::Rgb;

    fn spec(space: CoordinateSpace, sigmoid: bool) -> LandmarkOutput {
        LandmarkOutput {
            name: "points".into(),
            count: 2,
            values_per_point: 4,
            x: 1,
            y: 0,
            visibility: Some(3),
            visibility_sigmoid: sigmoid,
            visibility_threshold: 0.5,
            space,
            presence: None,
            mask: None,
            roi: None,
            smoothing: None,
            skeleton: vec![Bone {
                from: 0,
                to: 1,
                color: Rgb { r: 255, g: 0, b: 0 },
            }],
            draw: LandmarkDraw::Skeleton,
        }
    }

    fn point(x: f32, y: f32) -> Landmark {
        Landmark {
            x,
            y,
            visibility: 1.0,
        }
    }

    #[test]
    fn decoding_follows_the_layout_space_and_view() {
        // Two points of (y, x, unused, visibility); a third point beyond `count` is ignored.
        let data = [
            64.0,
            128.0,
            9.0,
            0.0, //
            224.0,
            32.0,
            9.0,
            f32::NAN, //
            1.0,
            1.0,
            1.0,
            1.0,
        ];
        let placement = |view: View| Placement {
            input: (256, 256),
            view,
            frame: (256, 256),
        };
        let whole = View {
            x: 0.0,
            y: 0.0,
            width: 256.0,
            height: 256.0,
        };
        let mut out = Vec::new();
        let inputs = spec(CoordinateSpace::InputPixels, true);
        decode(&data, &inputs, &placement(whole), &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].x, out[0].y, out[0].visibility), (0.5, 0.25, 0.5));
        assert_eq!((out[1].x, out[1].y, out[1].visibility), (0.125, 0.875, 0.0));
        // The model saw the frame's lower right quarter at double size.
        let zoomed = View {
            x: 128.0,
            y: 128.0,
            width: 128.0,
            height: 128.0,
        };
        decode(
            &data,
            &spec(CoordinateSpace::InputPixels, false),
            &placement(zoomed),
            &mut out,
        )
        .unwrap();
        assert_eq!((out[0].x, out[0].y), (0.75, 0.625));
        assert_eq!(out[0].visibility, 0.0, "no sigmoid: the raw value");
        // Normalised coordinates are scaled by the input size first.
        let data = [0.25, 0.5, 0.0, 3.0, 1.0, 1.0, 0.0, 3.0];
        let normalized = spec(CoordinateSpace::Normalized, false);
        decode(&data, &normalized, &placement(whole), &mut out).unwrap();
        assert_eq!((out[0].x, out[0].y, out[0].visibility), (0.5, 0.25, 3.0));
        // Too few values is an error naming the output.
        let err = decode(&data[..7], &normalized, &placement(whole), &mut out).unwrap_err();
        assert!(err.contains("`points` has 7 values"), "{err}");
    }

    #[test]
    fn the_next_view_is_a_square_around_the_roi_points() {
        let mut s = spec(CoordinateSpace::InputPixels, false);
        s.roi = Some(RoiSpec {
            center: 2,
            edge: 3,
            scale: 1.25,
        });
        // Points 2 and 3 (auxiliary, beyond count) at (y, x) = (100, 120) and (60, 120).
        let data = [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, //
            100.0, 120.0, 0.0, 0.0, 60.0, 120.0, 0.0, 0.0,
        ];
        let placement = Placement {
            input: (256, 256),
            view: View {
                x: 0.0,
                y: -64.0,
                width: 512.0,
                height: 512.0,
            },
            frame: (512, 384),
        };
        // In the frame: centre (240, 136), edge (240, 56): half side 1.25 * 80 = 100.
        assert_eq!(
            next_view(&data, &s, &placement),
            Some(View {
                x: 140.0,
                y: 36.0,
                width: 200.0,
                height: 200.0
            })
        );
        assert_eq!(
            next_view(&data[..12], &s, &placement),
            None,
            "missing point"
        );
        s.roi = None;
        assert_eq!(next_view(&data, &s, &placement), None);
    }

    #[test]
    fn frame_intervals_come_from_rtp_time() {
        assert_eq!(frame_interval(0, 3000), Some(3000.0 / 90_000.0));
        assert_eq!(
            frame_interval(u32::MAX - 1499, 1500),
            Some(3000.0 / 90_000.0)
        );
        assert_eq!(frame_interval(3000, 3000), None, "same picture time");
        assert_eq!(frame_interval(3000, 0), None, "backwards");
        assert_eq!(frame_interval(0, 90_001), None, "over a second");
    }

    #[test]
    fn one_euro_smooths_jitter_and_follows_motion() {
        let p = Smoothing {
            min_cutoff: 1.0,
            beta: 10.0,
            derivative_cutoff: 1.0,
        };
        let dt = Some(1.0 / 30.0);
        // Jitter of +-0.01 around 0.5: the output moves far less.
        let mut f = OneEuro::default();
        let mut spread: f32 = 0.0;
        for i in 0..60 {
            let x = 0.5 + if i % 2 == 0 { 0.01 } else { -0.01 };
            let y = f.filter(x, dt, &p);
            if i > 10 {
                spread = spread.max((y - 0.5).abs());
            }
        }
        assert!(spread < 0.004, "jitter left {spread}");
        // A fast steady move (1 frame width per second) is followed closely.
        let mut f = OneEuro::default();
        let mut y = 0.0;
        for i in 0..30 {
            y = f.filter(i as f32 / 30.0, dt, &p);
        }
        assert!(
            (y - 29.0 / 30.0).abs() < 0.03,
            "lags by {}",
            29.0 / 30.0 - y
        );
        // Without an interval the filter starts over at the input; NaN does not stick.
        assert_eq!(f.filter(0.2, None, &p), 0.2);
        assert!(f.filter(f32::NAN, dt, &p).is_nan());
        assert_eq!(f.filter(0.3, dt, &p), 0.3);
    }

    #[test]
    fn smoother_resets_when_told() {
        let mut s = Smoother::new(Smoothing {
            min_cutoff: 0.5,
            beta: 0.0,
            derivative_cutoff: 1.0,
        });
        let mut pts = [point(0.0, 0.0)];
        s.smooth(&mut pts, None);
        let mut pts = [point(1.0, 1.0)];
        s.smooth(&mut pts, Some(1.0 / 30.0));
        assert!(pts[0].x < 0.2, "smoothed towards the past: {}", pts[0].x);
        s.reset();
        let mut pts = [point(1.0, 1.0)];
        s.smooth(&mut pts, Some(1.0 / 30.0));
        assert_eq!(pts[0].x, 1.0);
    }

    #[test]
    fn capsules_cover_the_segment_and_stop_at_the_radius() {
        let mut plane = vec![0u8; 20 * 10];
        draw_capsule(&mut plane, (20, 10), (2.0, 5.5), (16.0, 5.5), 2.0, 200);
        let at = |x: usize, y: usize| plane[y * 20 + x];
        assert_eq!(at(10, 5), 200, "on the line");
        assert_eq!(at(10, 4), 200);
        assert_eq!(at(10, 3), 100, "half covered at the edge");
        assert_eq!(at(10, 2), 0, "beyond the radius");
        assert_eq!(at(17, 5), 200, "the round end cap");
        assert_eq!(at(18, 5), 0, "beyond the end cap");
        // A disc; coordinates far outside the plane draw nothing and do not panic.
        let mut plane = vec![0u8; 10 * 10];
        draw_capsule(&mut plane, (10, 10), (5.0, 5.0), (5.0, 5.0), 1.0, 255);
        assert_eq!(plane.iter().filter(|&&v| v > 0).count(), 4);
        let before = plane.clone();
        draw_capsule(&mut plane, (10, 10), (-1e9, -5.0), (-1e8, -3.0), 3.0, 9);
        draw_capsule(&mut plane, (10, 10), (f32::NAN, 1.0), (3.0, 1.0), 3.0, 9);
        assert_eq!(plane, before);
    }

    #[test]
    fn the_skeleton_skips_hidden_points_and_colours_bones() {
        let red = Rgb { r: 255, g: 0, b: 0 };
        let bones = [
            Bone {
                from: 0,
                to: 1,
                color: red,
            },
            Bone {
                from: 1,
                to: 2,
                color: Rgb { r: 0, g: 0, b: 255 },
            },
        ];
        // Rows: luma line at y 50.5, chroma at 25.25 (pixel centres 50.5 and 25.5).
        let mut points = vec![point(0.1, 0.505), point(0.5, 0.505), point(0.9, 0.505)];
        points[2].visibility = 0.2;
        let mut frame = VideoFrame::filled(200, 100, 16, 128, 128);
        draw_skeleton(&mut frame, &points, &bones, 0.5);
        let r = rgb_to_yuv(red);
        // The middle of the first bone is red; the second bone (to a hidden point) is absent.
        assert_eq!(frame.y[50 * 200 + 60], r.y);
        assert_eq!(frame.v[25 * 100 + 30], r.v);
        assert_eq!(frame.y[50 * 200 + 150], 16);
        // Joints are white dots at the bone ends.
        assert_eq!(frame.y[50 * 200 + 20], JOINT.y);
        // No visible bone: nothing drawn.
        let mut blank = VideoFrame::filled(200, 100, 16, 128, 128);
        let hidden: Vec<Landmark> = points
            .iter()
            .map(|p| Landmark {
                visibility: 0.0,
                ..*p
            })
            .collect();
        draw_skeleton(&mut blank, &hidden, &bones, 0.5);
        assert_eq!(blank, VideoFrame::filled(200, 100, 16, 128, 128));
    }

    #[test]
    fn parts_take_the_colour_of_the_nearest_bone() {
        let (red, blue) = (Rgb { r: 255, g: 0, b: 0 }, Rgb { r: 0, g: 0, b: 255 });
        // An upright "torso" bone down the middle and an "arm" bone off to the right.
        let points = [
            point(0.5, 0.1),
            point(0.5, 0.9),
            point(0.8, 0.3),
            point(0.9, 0.8),
        ];
        let bones = [
            Bone {
                from: 0,
                to: 1,
                color: red,
            },
            Bone {
                from: 2,
                to: 3,
                color: blue,
            },
        ];
        let (w, h) = (20u32, 10u32);
        let mut alpha = vec![255u8; (w * h) as usize];
        alpha[0] = 0;
        let mut out = PartColours::default();
        paint_parts(&alpha, (w, h), &points, &bones, &mut out);
        let (r, b) = (rgb_to_yuv(red), rgb_to_yuv(blue));
        assert_eq!(out.v[5 * 20 + 9], r.v);
        assert_eq!(out.u[6 * 20 + 18], b.u);
        assert_eq!(
            (out.y[0], out.u[0], out.v[0]),
            (128, 128, 128),
            "off the person"
        );
    }
}
