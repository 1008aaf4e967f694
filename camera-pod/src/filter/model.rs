//! [`ModelFilter`]: one ONNX model, described by a [`Manifest`], run on every picture.

use std::path::Path;

use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{Tensor, TensorRef};

use super::composite::{self, BlurScratch, PlaneBlur, PlaneScaler, SmallYuv};
use super::landmarks::{self, Landmark, PartColours, Placement, Smoother};
use super::manifest::{LandmarkDraw, LandmarkOutput, Manifest, MaskComposite, OutputSpec};
use super::tensor::{Layout, Rgb, TensorFormat, View};
use super::{Filter, FilterError};
use crate::frame::{VideoFrame, chroma_size};

/// A decoded background picture, kept as RGB and converted once per frame size.
struct BackgroundImage {
    rgb: Vec<u8>,
    width: u32,
    height: u32,
    /// The picture covering the current frame size, in I420.
    fitted: Option<VideoFrame>,
}

impl BackgroundImage {
    fn load(path: &Path) -> Result<BackgroundImage, FilterError> {
        let img = image::open(path)
            .map_err(|e| FilterError::BackgroundImage {
                path: path.to_owned(),
                reason: e.to_string(),
            })?
            .to_rgb8();
        let (width, height) = img.dimensions();
        Ok(BackgroundImage {
            rgb: img.into_raw(),
            width,
            height,
            fitted: None,
        })
    }

    fn fitted(&mut self, w: u32, h: u32) -> &VideoFrame {
        let stale = self
            .fitted
            .as_ref()
            .is_none_or(|f| (f.width, f.height) != (w, h));
        if stale {
            self.fitted = Some(composite::cover_rgb_to_i420(
                &self.rgb,
                self.width,
                self.height,
                w,
                h,
            ));
        }
        self.fitted
            .get_or_insert_with(|| VideoFrame::filled(w, h, 16, 128, 128))
    }
}

/// Per-frame working memory, reused so steady-state frames allocate nothing large.
#[derive(Default)]
struct Buffers {
    alpha_small: Vec<u8>,
    feather: BlurScratch,
    alpha_y: Vec<u8>,
    alpha_c: Vec<u8>,
    alpha_scalers: [PlaneScaler; 2],
    blurs: [PlaneBlur; 3],
    background: Vec<u8>,
    small: SmallYuv,
    image_scalers: [PlaneScaler; 3],
    /// The mask as the model gave it, before it is brought back into frame space.
    mask_model: Vec<u8>,
    parts: PartColours,
    /// Body-part colours at frame size: Y, U, V.
    part_planes: [Vec<u8>; 3],
}

/// What a landmarks filter keeps between frames.
struct Tracking {
    /// The latest points, smoothed; meaningful while `person` is true.
    points: Vec<Landmark>,
    person: bool,
    smoother: Option<Smoother>,
    last_rtp: Option<u32>,
    /// Where to look on the next frame (of this size), from the latest points.
    roi: Option<((u32, u32), View)>,
}

impl Tracking {
    /// The part of `frame` the model sees: the tracked region, else the whole frame as `fit` says.
    fn view(&self, frame: &VideoFrame, manifest: &Manifest) -> View {
        let size = (frame.width, frame.height);
        match self.roi {
            Some((for_size, view)) if for_size == size => view,
            _ => manifest.input.fit.view(
                frame.width,
                frame.height,
                manifest.input.width,
                manifest.input.height,
            ),
        }
    }

    /// Records whether anyone is there and smooths the new points against the previous frames.
    fn update(&mut self, person: bool, rtp_timestamp: u32) {
        let dt = self
            .last_rtp
            .and_then(|previous| landmarks::frame_interval(previous, rtp_timestamp));
        self.last_rtp = Some(rtp_timestamp);
        self.person = person;
        if let Some(smoother) = &mut self.smoother {
            if person {
                smoother.smooth(&mut self.points, dt);
            } else {
                smoother.reset();
            }
        }
    }
}

/// A filter running one ONNX model.
pub struct ModelFilter {
    name: String,
    session: Session,
    manifest: Manifest,
    input_format: TensorFormat,
    input: Vec<f32>,
    constants: Vec<(String, Tensor<f32>)>,
    background: Option<BackgroundImage>,
    buffers: Buffers,
    tracking: Tracking,
}

impl ModelFilter {
    /// Wraps a committed session; checks the manifest's tensor names against the model's.
    pub fn new(
        name: &str,
        session: Session,
        manifest: Manifest,
    ) -> Result<ModelFilter, FilterError> {
        let model_inputs: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
        let model_outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        let load_error = |reason: String| FilterError::ModelLoad {
            model: name.to_owned(),
            reason,
        };
        for input in std::iter::once(&manifest.input.name)
            .chain(manifest.constant_inputs.iter().map(|c| &c.name))
        {
            if !model_inputs.contains(&input.as_str()) {
                return Err(load_error(format!(
                    "the manifest names input `{input}`, the model has {model_inputs:?}"
                )));
            }
        }
        if model_inputs.len() != 1 + manifest.constant_inputs.len() {
            return Err(load_error(format!(
                "the model has inputs {model_inputs:?}; the manifest must describe every one"
            )));
        }
        if let Some(missing) = manifest
            .output_names()
            .into_iter()
            .find(|name| !model_outputs.contains(name))
        {
            return Err(load_error(format!(
                "the manifest names output `{missing}`, the model has {model_outputs:?}"
            )));
        }
        let constants = manifest
            .constant_inputs
            .iter()
            .map(|c| {
                Tensor::from_array((c.shape.clone(), c.values.clone()))
                    .map(|t| (c.name.clone(), t))
                    .map_err(|e| load_error(format!("constant input `{}`: {e}", c.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let background = match &manifest.output {
            OutputSpec::Mask {
                composite: MaskComposite::Image(path),
                ..
            } => Some(BackgroundImage::load(path)?),
            _ => None,
        };
        let input_format = manifest.input_format();
        let tracking = Tracking {
            points: Vec::new(),
            person: false,
            smoother: match &manifest.output {
                OutputSpec::Landmarks(l) => l.smoothing.map(Smoother::new),
                _ => None,
            },
            last_rtp: None,
            roi: None,
        };
        Ok(ModelFilter {
            name: name.to_owned(),
            session,
            input: vec![0.0; input_format.len()],
            input_format,
            manifest,
            constants,
            background,
            buffers: Buffers::default(),
            tracking,
        })
    }

    /// The manifest this filter runs.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// A landmarks model's points on the latest frame (smoothed, 0..1 of the frame), or `None`
    /// when its presence score said nobody is there (or it is no landmarks model).
    pub fn landmarks(&self) -> Option<&[Landmark]> {
        self.tracking.person.then_some(&self.tracking.points[..])
    }
}

impl Filter for ModelFilter {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply(&mut self, frame: &mut VideoFrame) -> Result<(), FilterError> {
        if frame.width == 0 || frame.height == 0 {
            return Ok(());
        }
        check_frame(frame)?;
        let view = self.tracking.view(frame, &self.manifest);
        composite::frame_to_tensor(frame, &self.input_format, view, &mut self.input);
        let ModelFilter {
            session,
            manifest,
            input_format,
            input,
            constants,
            background,
            buffers,
            tracking,
            ..
        } = self;
        let infer = |e: ort::Error| FilterError::Inference(e.to_string());
        let picture =
            TensorRef::from_array_view((input_format.shape(), &input[..])).map_err(infer)?;
        let mut inputs: Vec<(std::borrow::Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(1 + constants.len());
        inputs.push((manifest.input.name.as_str().into(), picture.into()));
        for (name, tensor) in constants.iter() {
            inputs.push((name.as_str().into(), tensor.into()));
        }
        let outputs = session.run(inputs).map_err(infer)?;
        match &manifest.output {
            OutputSpec::Image {
                name,
                layout,
                color_order,
                range,
            } => {
                let (shape, data) = output(&outputs, name)?;
                let layout = layout.unwrap_or(input_format.layout);
                let (w, h, c) = image_dims(shape, layout)?;
                if c != 3 {
                    return Err(FilterError::Inference(format!(
                        "image output has {c} channels, expected 3"
                    )));
                }
                let format = TensorFormat {
                    width: w,
                    height: h,
                    layout,
                    color_order: color_order.unwrap_or(input_format.color_order),
                    range: range.unwrap_or(input_format.range),
                };
                composite::tensor_to_small_yuv(data, &format, &mut buffers.small);
                composite::small_yuv_to_frame(&buffers.small, &mut buffers.image_scalers, frame);
            }
            OutputSpec::Mask {
                name,
                channel,
                feather,
                composite: how,
            } => {
                let (shape, data) = output(&outputs, name)?;
                let mask = MaskTensor {
                    shape,
                    data,
                    layout: input_format.layout,
                    channel: *channel,
                    sigmoid: false,
                };
                let (w, h) = mask.to_alpha(view, frame, buffers)?;
                composite::box_blur(
                    &mut buffers.alpha_small,
                    w,
                    h,
                    *feather,
                    1,
                    &mut buffers.feather,
                );
                composite_mask(frame, (w, h), how, background.as_mut(), buffers);
            }
            OutputSpec::Landmarks(spec) => {
                let (_, data) = output(&outputs, &spec.name)?;
                let placement = Placement {
                    input: (input_format.width, input_format.height),
                    view,
                    frame: (frame.width, frame.height),
                };
                landmarks::decode(data, spec, &placement, &mut tracking.points)
                    .map_err(FilterError::Inference)?;
                let person = match &spec.presence {
                    None => true,
                    Some(presence) => {
                        let (_, score) = output(&outputs, &presence.name)?;
                        let score = score.first().copied().unwrap_or(0.0);
                        let score = if presence.sigmoid {
                            landmarks::sigmoid(score)
                        } else {
                            score
                        };
                        score >= presence.threshold
                    }
                };
                tracking.roi = landmarks::next_view(data, spec, &placement)
                    .filter(|_| person)
                    .map(|next| (placement.frame, next));
                tracking.update(person, frame.rtp_timestamp);
                draw_landmarks(
                    frame,
                    spec,
                    &outputs,
                    input_format.layout,
                    view,
                    tracking,
                    buffers,
                )?;
            }
        }
        Ok(())
    }
}

/// The data and shape of output `name`.
fn output<'a>(
    outputs: &'a SessionOutputs<'_>,
    name: &str,
) -> Result<(&'a [i64], &'a [f32]), FilterError> {
    let value = outputs
        .get(name)
        .ok_or_else(|| FilterError::Inference(format!("no output `{name}`")))?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| FilterError::Inference(format!("output `{name}`: {e}")))?;
    Ok((shape, data))
}

/// A person-mask output as the model gave it.
struct MaskTensor<'a> {
    shape: &'a [i64],
    data: &'a [f32],
    layout: Layout,
    channel: u32,
    /// The values are logits.
    sigmoid: bool,
}

impl MaskTensor<'_> {
    /// Writes the mask as 8-bit alpha into `b.alpha_small`, brought back from the model's `view`
    /// into frame space (0 where the model did not look), and returns its size.
    fn to_alpha(
        &self,
        view: View,
        frame: &VideoFrame,
        b: &mut Buffers,
    ) -> Result<(u32, u32), FilterError> {
        let (w, h, c) = image_dims(self.shape, self.layout)?;
        if self.channel >= c {
            return Err(FilterError::Inference(format!(
                "mask channel {} out of {c}",
                self.channel
            )));
        }
        let (n, c, ch) = ((w * h) as usize, c as usize, self.channel as usize);
        if self.data.len() < n * c {
            return Err(FilterError::Inference(format!(
                "mask output {:?} has {} values",
                self.shape,
                self.data.len()
            )));
        }
        let probability = |v: &f32| {
            if self.sigmoid {
                landmarks::sigmoid(*v)
            } else {
                *v
            }
        };
        match self.layout {
            Layout::Nhwc => composite::mask_to_alpha(
                self.data.iter().skip(ch).step_by(c).map(probability),
                &mut b.mask_model,
            ),
            Layout::Nchw => composite::mask_to_alpha(
                self.data[ch * n..][..n].iter().map(probability),
                &mut b.mask_model,
            ),
        }
        Ok(composite::view_to_frame(
            &b.mask_model,
            (w, h),
            view,
            (frame.width, frame.height),
            &mut b.alpha_small,
        ))
    }
}

/// Draws a landmarks model's result: the skeleton, or the body parts over the person mask.
fn draw_landmarks(
    frame: &mut VideoFrame,
    spec: &LandmarkOutput,
    outputs: &SessionOutputs<'_>,
    layout: Layout,
    view: View,
    tracking: &Tracking,
    buffers: &mut Buffers,
) -> Result<(), FilterError> {
    match &spec.draw {
        LandmarkDraw::Skeleton => {
            if tracking.person {
                landmarks::draw_skeleton(
                    frame,
                    &tracking.points,
                    &spec.skeleton,
                    spec.visibility_threshold,
                );
            }
        }
        LandmarkDraw::Parts {
            opacity,
            background,
        } => {
            let mask = spec.mask.as_ref().ok_or_else(|| {
                FilterError::Manifest("drawing `parts` needs a `mask` output".into())
            })?;
            let (shape, data) = output(outputs, &mask.name)?;
            let mask = MaskTensor {
                shape,
                data,
                layout,
                channel: mask.channel,
                sigmoid: mask.sigmoid,
            };
            let size = mask.to_alpha(view, frame, buffers)?;
            if !tracking.person {
                buffers.alpha_small.fill(0);
            }
            landmarks::paint_parts(
                &buffers.alpha_small,
                size,
                &tracking.points,
                &spec.skeleton,
                &mut buffers.parts,
            );
            composite_parts(frame, size, *opacity, *background, buffers);
        }
    }
    Ok(())
}

/// Refuses frames whose planes do not match their size (a decoder bug must not become a panic).
fn check_frame(frame: &VideoFrame) -> Result<(), FilterError> {
    let (cw, ch) = chroma_size(frame.width, frame.height);
    let luma = frame.width as usize * frame.height as usize;
    let chroma = cw as usize * ch as usize;
    if frame.y.len() != luma || frame.u.len() != chroma || frame.v.len() != chroma {
        return Err(FilterError::Inference(format!(
            "frame {}x{} has planes of {}/{}/{} bytes",
            frame.width,
            frame.height,
            frame.y.len(),
            frame.u.len(),
            frame.v.len()
        )));
    }
    Ok(())
}

/// Width, height and channels of an output tensor: `[1,h,w,c]` (NHWC), `[1,c,h,w]` (NCHW),
/// `[1,h,w]` or `[h,w]`.
fn image_dims(shape: &[i64], layout: Layout) -> Result<(u32, u32, u32), FilterError> {
    let dim = |d: i64| u32::try_from(d).ok().filter(|&d| d > 0);
    let dims = match (shape, layout) {
        ([1, h, w, c], Layout::Nhwc) | ([1, c, h, w], Layout::Nchw) => (dim(*w), dim(*h), dim(*c)),
        ([1, h, w], _) | ([h, w], _) => (dim(*w), dim(*h), Some(1)),
        _ => (None, None, None),
    };
    match dims {
        (Some(w), Some(h), Some(c)) => Ok((w, h, c)),
        _ => Err(FilterError::Inference(format!(
            "unexpected output shape {shape:?}"
        ))),
    }
}

/// Upscales the small alpha (`mw` x `mh`) to the frame's luma and chroma sizes.
fn upscale_alpha(frame: &VideoFrame, (mw, mh): (u32, u32), b: &mut Buffers) {
    let (w, h) = (frame.width, frame.height);
    let (cw, ch) = chroma_size(w, h);
    b.alpha_y.resize((w * h) as usize, 0);
    b.alpha_c.resize((cw * ch) as usize, 0);
    b.alpha_scalers[0].resize(&b.alpha_small, mw, mh, &mut b.alpha_y, w, h);
    b.alpha_scalers[1].resize(&b.alpha_small, mw, mh, &mut b.alpha_c, cw, ch);
}

/// Upscales the small alpha to the frame's planes and combines foreground and background.
fn composite_mask(
    frame: &mut VideoFrame,
    mask_size: (u32, u32),
    how: &MaskComposite,
    background: Option<&mut BackgroundImage>,
    b: &mut Buffers,
) {
    upscale_alpha(frame, mask_size, b);
    let (w, h) = (frame.width, frame.height);
    let (cw, ch) = chroma_size(w, h);
    match how {
        MaskComposite::Blur { radius_percent } => {
            let radius = (h as f32 * radius_percent / 100.0).round() as u32;
            if radius == 0 {
                return;
            }
            let [by, bu, bv] = &mut b.blurs;
            by.blur(&frame.y, w, h, radius, &mut b.background);
            composite::blend(&mut frame.y, &b.background, &b.alpha_y);
            let chroma_radius = radius.div_ceil(2);
            bu.blur(&frame.u, cw, ch, chroma_radius, &mut b.background);
            composite::blend(&mut frame.u, &b.background, &b.alpha_c);
            bv.blur(&frame.v, cw, ch, chroma_radius, &mut b.background);
            composite::blend(&mut frame.v, &b.background, &b.alpha_c);
        }
        MaskComposite::Color(rgb) => {
            let c = composite::rgb_to_yuv(*rgb);
            composite::blend_constant(&mut frame.y, c.y, &b.alpha_y);
            composite::blend_constant(&mut frame.u, c.u, &b.alpha_c);
            composite::blend_constant(&mut frame.v, c.v, &b.alpha_c);
        }
        MaskComposite::Image(_) => {
            if let Some(bg) = background {
                let fitted = bg.fitted(w, h);
                composite::blend(&mut frame.y, &fitted.y, &b.alpha_y);
                composite::blend(&mut frame.u, &fitted.u, &b.alpha_c);
                composite::blend(&mut frame.v, &fitted.v, &b.alpha_c);
            }
        }
        MaskComposite::ShowMask => composite::show_alpha(frame, &b.alpha_y),
    }
}

/// Paints the body-part colours (in `b.parts`, mask-sized) over the person, `opacity` per cent,
/// after replacing what is not the person with `background` when one is given.
fn composite_parts(
    frame: &mut VideoFrame,
    (mw, mh): (u32, u32),
    opacity: u8,
    background: Option<Rgb>,
    b: &mut Buffers,
) {
    upscale_alpha(frame, (mw, mh), b);
    if let Some(colour) = background {
        let c = composite::rgb_to_yuv(colour);
        composite::blend_constant(&mut frame.y, c.y, &b.alpha_y);
        composite::blend_constant(&mut frame.u, c.u, &b.alpha_c);
        composite::blend_constant(&mut frame.v, c.v, &b.alpha_c);
    }
    let (w, h) = (frame.width, frame.height);
    let (cw, ch) = chroma_size(w, h);
    let [py, pu, pv] = &mut b.part_planes;
    let [sy, su, sv] = &mut b.image_scalers;
    py.resize((w * h) as usize, 0);
    pu.resize((cw * ch) as usize, 0);
    pv.resize((cw * ch) as usize, 0);
    sy.resize(&b.parts.y, mw, mh, py, w, h);
    su.resize(&b.parts.u, mw, mh, pu, cw, ch);
    sv.resize(&b.parts.v, mw, mh, pv, cw, ch);
    // From "how much person" to "how much of the picture stays".
    let opacity = u32::from(opacity);
    for a in b.alpha_y.iter_mut().chain(b.alpha_c.iter_mut()) {
        *a = 255 - ((u32::from(*a) * opacity + 50) / 100) as u8;
    }
    composite::blend(&mut frame.y, py, &b.alpha_y);
    composite::blend(&mut frame.u, pu, &b.alpha_c);
    composite::blend(&mut frame.v, pv, &b.alpha_c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shapes_are_understood() {
        assert_eq!(
            image_dims(&[1, 144, 256, 1], Layout::Nhwc).unwrap(),
            (256, 144, 1)
        );
        assert_eq!(
            image_dims(&[1, 3, 240, 320], Layout::Nchw).unwrap(),
            (320, 240, 3)
        );
        assert_eq!(
            image_dims(&[1, 144, 256], Layout::Nchw).unwrap(),
            (256, 144, 1)
        );
        assert_eq!(
            image_dims(&[144, 256], Layout::Nhwc).unwrap(),
            (256, 144, 1)
        );
        assert!(image_dims(&[2, 3, 4, 5], Layout::Nchw).is_err());
        assert!(image_dims(&[1, -1, 4, 5], Layout::Nchw).is_err());
        assert!(image_dims(&[5], Layout::Nchw).is_err());
    }

    #[test]
    fn mismatched_planes_are_an_error_not_a_panic() {
        let mut f = VideoFrame::filled(4, 4, 16, 128, 128);
        f.u.pop();
        assert!(check_frame(&f).is_err());
        assert!(check_frame(&VideoFrame::filled(5, 3, 16, 128, 128)).is_ok());
    }
}
