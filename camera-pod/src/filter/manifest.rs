//! Model manifests: what a model's tensors look like and how its output becomes a picture.
//!
//! The built-in filters are described with the same type ([`Manifest::selfie`],
//! [`Manifest::style`]), so every model runs through one code path.
//!
//! A manifest is JSON or YAML with camelCase keys, for example:
//!
//! ```yaml
//! input: {name: input_1, layout: NHWC, width: 256, height: 144, colorOrder: RGB, range: "0..1"}
//! output:
//!   kind: mask
//!   name: segment_back
//!   composite: {blur: {radiusPercent: 4}}
//! ```
//!
//! `constantInputs` lists extra inputs fed with fixed values on every run (multistyle26's
//! `style_weights`, for example).
//!
//! A keypoint model (a pose, face-mesh or hand model) has a `landmarks` output: which tensor holds
//! the points and how they are laid out, the optional presence score and person mask, and the
//! skeleton to draw. `camera-pod/models/pose_landmark.manifest.yaml` is the built-in `pose` and
//! `body-parts` filters' manifest and a complete example.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::FilterError;
use super::tensor::{ColorOrder, Fit, Layout, Rgb, TensorFormat, ValueRange};

/// Largest model input side accepted from a manifest.
pub const MAX_INPUT_SIDE: u32 = 4096;
/// Largest background blur radius, in per cent of the picture height.
pub const MAX_BLUR_PERCENT: f32 = 25.0;
/// Largest mask feathering radius, in mask pixels.
pub const MAX_FEATHER: u32 = 16;
/// Most points a landmarks output may describe, and most values per point.
pub const MAX_LANDMARKS: u32 = 1024;
pub const MAX_VALUES_PER_POINT: u32 = 64;
/// Most skeleton edges a landmarks output may draw.
pub const MAX_BONES: usize = 4096;

/// The model's picture input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub layout: Layout,
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub color_order: ColorOrder,
    #[serde(default)]
    pub range: ValueRange,
    /// How the frame fits the input: `stretch` (the default) or `contain` (aspect kept, padded).
    #[serde(default, skip_serializing_if = "Fit::is_stretch")]
    pub fit: Fit,
}

/// An extra input fed with the same values on every run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConstantInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub values: Vec<f32>,
}

/// What the model outputs and how it becomes the returned picture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum OutputSpec {
    /// A picture that replaces the frame (upscaled). Layout, colour order and range default to the
    /// input's.
    Image {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layout: Option<Layout>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        color_order: Option<ColorOrder>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<ValueRange>,
    },
    /// A person (foreground) probability 0..1, shaped `[1,h,w,c]` (NHWC), `[1,c,h,w]` (NCHW) or
    /// `[1,h,w]`; `channel` picks c.
    Mask {
        name: String,
        #[serde(default)]
        channel: u32,
        /// Softens the mask edge: box blur radius in mask pixels.
        #[serde(default = "default_feather")]
        feather: u32,
        composite: MaskComposite,
    },
    /// Keypoints (see [`LandmarkOutput`]), drawn as a skeleton or as body parts.
    Landmarks(Box<LandmarkOutput>),
}

/// A keypoint output: `count` points of `valuesPerPoint` values each, at the start of the
/// tensor `name` (its shape does not matter, only its values in order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LandmarkOutput {
    pub name: String,
    pub count: u32,
    pub values_per_point: u32,
    /// Which of a point's values is x, y and (optionally) visibility.
    pub x: u32,
    pub y: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<u32>,
    /// Visibility is a logit: apply a sigmoid before comparing it with the threshold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub visibility_sigmoid: bool,
    /// Points less visible than this are not drawn (nor the edges that end at them).
    #[serde(default = "default_threshold")]
    pub visibility_threshold: f32,
    /// What x and y are measured in.
    pub space: CoordinateSpace,
    /// A score output saying whether anyone is there; below its threshold nothing is drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<ScoreOutput>,
    /// A person mask output (same layout rules as a `mask` output); `parts` drawing needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<MaskOutput>,
    /// Where the model looks on the next frame, from this frame's points; absent: always the
    /// whole frame (as `fit` says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roi: Option<RoiSpec>,
    /// One Euro smoothing of the points over time; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<Smoothing>,
    /// The skeleton: edges between points, each with its colour.
    pub skeleton: Vec<Bone>,
    pub draw: LandmarkDraw,
}

/// Units of landmark coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CoordinateSpace {
    /// Pixels of the model input (0..width, 0..height).
    InputPixels,
    /// 0..1 across the model input.
    Normalized,
}

/// A one-value score output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoreOutput {
    pub name: String,
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// The score is a logit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sigmoid: bool,
}

/// A person-mask output next to the landmarks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaskOutput {
    pub name: String,
    #[serde(default)]
    pub channel: u32,
    /// The mask holds logits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sigmoid: bool,
}

/// Tracking, as MediaPipe's pose tracker does it: the next frame's model input is a square
/// centred on point `center` whose half side is `scale` times the distance from `center` to point
/// `edge`. The two may be auxiliary points after the first `count` (same layout).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoiSpec {
    pub center: u32,
    pub edge: u32,
    #[serde(default = "default_roi_scale")]
    pub scale: f32,
}

fn default_roi_scale() -> f32 {
    1.0
}

/// One Euro filter parameters (Casiez et al. 2012), for coordinates in 0..1 of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Smoothing {
    /// Cut-off frequency (Hz) when still: lower is smoother.
    pub min_cutoff: f32,
    /// How fast the cut-off rises with speed: higher follows fast moves with less lag.
    pub beta: f32,
    #[serde(default = "default_derivative_cutoff")]
    pub derivative_cutoff: f32,
}

/// A skeleton edge between points `from` and `to`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bone {
    pub from: u32,
    pub to: u32,
    pub color: Rgb,
}

/// How landmarks become the returned picture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum LandmarkDraw {
    /// Bones and joints drawn over the picture.
    Skeleton,
    /// Every person pixel (from the mask) coloured like its nearest bone, `opacity` per cent over
    /// the camera picture; outside the person the picture stays, or becomes `background`.
    Parts {
        opacity: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        background: Option<Rgb>,
    },
}

fn default_threshold() -> f32 {
    0.5
}

fn default_derivative_cutoff() -> f32 {
    1.0
}

fn default_feather() -> u32 {
    1
}

/// How a mask combines the camera picture with a background.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum MaskComposite {
    /// Blur the background; the radius is a percentage of the picture height, so the look does
    /// not depend on the resolution.
    Blur { radius_percent: f32 },
    /// Replace the background with a solid colour.
    Color(Rgb),
    /// Replace the background with a picture file (PNG or JPEG), scaled to cover the frame.
    Image(PathBuf),
    /// Show the mask itself (white = person), for checking a model.
    ShowMask,
}

/// A model description: see the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub input: InputSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constant_inputs: Vec<ConstantInput>,
    pub output: OutputSpec,
}

/// Tensor contract of the vendored MediaPipe landscape selfie model.
const SELFIE_INPUT: &str = "input_1";
const SELFIE_OUTPUT: &str = "segment_back";
/// The BlazePose landmark models' manifest (both sizes share it).
pub const POSE_MANIFEST: &str = include_str!("../../models/pose_landmark.manifest.yaml");
/// Number of styles in multistyle26.
pub const STYLE_COUNT: u8 = 26;
/// Model resolution for the style filter (multiples of 4, 4:3); the output is upscaled.
pub const STYLE_WIDTH: u32 = 320;
pub const STYLE_HEIGHT: u32 = 240;

impl Manifest {
    /// The `selfie-blur` / `selfie-replace` built-ins.
    pub fn selfie(composite: MaskComposite) -> Manifest {
        Manifest {
            input: InputSpec {
                name: SELFIE_INPUT.into(),
                layout: Layout::Nhwc,
                width: 256,
                height: 144,
                color_order: ColorOrder::Rgb,
                range: ValueRange::ZeroToOne,
                fit: Fit::Stretch,
            },
            constant_inputs: Vec::new(),
            output: OutputSpec::Mask {
                name: SELFIE_OUTPUT.into(),
                channel: 0,
                feather: default_feather(),
                composite,
            },
        }
    }

    /// The `style` built-in: multistyle26 with a one-hot `style_weights` picking `index`.
    pub fn style(index: u8) -> Manifest {
        let values = (0..STYLE_COUNT)
            .map(|i| if i == index { 1.0 } else { 0.0 })
            .collect();
        Manifest {
            input: InputSpec {
                name: "image".into(),
                layout: Layout::Nchw,
                width: STYLE_WIDTH,
                height: STYLE_HEIGHT,
                color_order: ColorOrder::Rgb,
                range: ValueRange::ZeroToOne,
                fit: Fit::Stretch,
            },
            constant_inputs: vec![ConstantInput {
                name: "style_weights".into(),
                shape: vec![i64::from(STYLE_COUNT)],
                values,
            }],
            output: OutputSpec::Image {
                name: "stylized".into(),
                layout: None,
                color_order: None,
                range: None,
            },
        }
    }

    /// The `pose` and `body-parts` built-ins: BlazePose's manifest
    /// (`models/pose_landmark.manifest.yaml`) drawn the way `draw` says.
    pub fn pose(draw: LandmarkDraw) -> Result<Manifest, FilterError> {
        let mut manifest = Manifest::parse(POSE_MANIFEST)?;
        if let OutputSpec::Landmarks(l) = &mut manifest.output {
            l.draw = draw;
        }
        manifest.validate()?;
        Ok(manifest)
    }

    /// Parses JSON (text starting with `{`) or YAML, then validates.
    pub fn parse(text: &str) -> Result<Manifest, FilterError> {
        let manifest: Manifest = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| FilterError::Manifest(e.to_string()))?
        } else {
            // YAML 1.2 booleans only: a tensor named `y` or `on` stays a string.
            let options = serde_saphyr::options! { strict_booleans: true };
            serde_saphyr::from_str_with_options(text, options)
                .map_err(|e| FilterError::Manifest(e.to_string()))?
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Reads and parses a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, FilterError> {
        let text = std::fs::read_to_string(path).map_err(|source| FilterError::Io {
            path: path.to_owned(),
            source,
        })?;
        Manifest::parse(&text).map_err(|e| match e {
            FilterError::Manifest(m) => FilterError::Manifest(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Checks the limits a parsed manifest must respect.
    pub fn validate(&self) -> Result<(), FilterError> {
        let bad = |m: String| Err(FilterError::Manifest(m));
        let i = &self.input;
        if i.name.is_empty() {
            return bad("input name is empty".into());
        }
        if !(1..=MAX_INPUT_SIDE).contains(&i.width) || !(1..=MAX_INPUT_SIDE).contains(&i.height) {
            return bad(format!(
                "input size {}x{} must be within 1..={MAX_INPUT_SIDE}",
                i.width, i.height
            ));
        }
        for c in &self.constant_inputs {
            if c.name.is_empty() || c.name == i.name {
                return bad(format!(
                    "constant input name `{}` is empty or clashes with the picture input",
                    c.name
                ));
            }
            if c.shape.iter().any(|&d| d <= 0) {
                return bad(format!(
                    "constant input `{}` has a non-positive dimension in {:?}",
                    c.name, c.shape
                ));
            }
            if c.values.iter().any(|v| !v.is_finite()) {
                return bad(format!(
                    "constant input `{}` has a value beyond the range of a 32-bit float",
                    c.name
                ));
            }
            let n = c.shape.iter().try_fold(1i64, |acc, &d| acc.checked_mul(d));
            if n != Some(c.values.len() as i64) {
                return bad(format!(
                    "constant input `{}` has shape {:?} but {} values",
                    c.name,
                    c.shape,
                    c.values.len()
                ));
            }
        }
        match &self.output {
            OutputSpec::Image { .. } if !i.fit.is_stretch() => {
                bad("input fit `contain` is for mask and landmarks outputs, not image".into())
            }
            OutputSpec::Image { name, .. } if name.is_empty() => bad("output name is empty".into()),
            OutputSpec::Mask { name, .. } if name.is_empty() => bad("output name is empty".into()),
            OutputSpec::Mask { feather, .. } if *feather > MAX_FEATHER => {
                bad(format!("feather {feather} is over {MAX_FEATHER}"))
            }
            OutputSpec::Mask {
                composite: MaskComposite::Blur { radius_percent },
                ..
            } if !(radius_percent.is_finite()
                && (0.0..=MAX_BLUR_PERCENT).contains(radius_percent)) =>
            {
                bad(format!(
                    "blur radiusPercent {radius_percent} must be within 0..={MAX_BLUR_PERCENT}"
                ))
            }
            OutputSpec::Landmarks(l) => l.validate().map_err(FilterError::Manifest),
            _ => Ok(()),
        }
    }

    /// The input tensor format.
    pub fn input_format(&self) -> TensorFormat {
        TensorFormat {
            width: self.input.width,
            height: self.input.height,
            layout: self.input.layout,
            color_order: self.input.color_order,
            range: self.input.range,
        }
    }

    /// The names of the model outputs this manifest reads, the main one first.
    pub fn output_names(&self) -> Vec<&str> {
        match &self.output {
            OutputSpec::Image { name, .. } | OutputSpec::Mask { name, .. } => vec![name],
            OutputSpec::Landmarks(l) => std::iter::once(l.name.as_str())
                .chain(l.presence.as_ref().map(|p| p.name.as_str()))
                .chain(l.mask.as_ref().map(|m| m.name.as_str()))
                .collect(),
        }
    }
}

impl LandmarkOutput {
    /// Checks indices, counts and thresholds; the message says what is wrong.
    fn validate(&self) -> Result<(), String> {
        let finite_in = |v: f32, lo: f32, hi: f32| v.is_finite() && (lo..=hi).contains(&v);
        if self.name.is_empty() {
            return Err("output name is empty".into());
        }
        if !(1..=MAX_LANDMARKS).contains(&self.count) {
            return Err(format!(
                "landmarks count {} must be within 1..={MAX_LANDMARKS}",
                self.count
            ));
        }
        if !(2..=MAX_VALUES_PER_POINT).contains(&self.values_per_point) {
            return Err(format!(
                "valuesPerPoint {} must be within 2..={MAX_VALUES_PER_POINT}",
                self.values_per_point
            ));
        }
        for (what, index) in [
            ("x", Some(self.x)),
            ("y", Some(self.y)),
            ("visibility", self.visibility),
        ] {
            if let Some(i) = index.filter(|&i| i >= self.values_per_point) {
                return Err(format!(
                    "{what} is value {i} of each point, but a point has {} values (0..{})",
                    self.values_per_point, self.values_per_point
                ));
            }
        }
        if self.x == self.y {
            return Err(format!("x and y are both value {} of each point", self.x));
        }
        if !finite_in(self.visibility_threshold, 0.0, 1.0) {
            return Err(format!(
                "visibilityThreshold {} must be within 0..=1",
                self.visibility_threshold
            ));
        }
        if let Some(p) = &self.presence
            && (p.name.is_empty() || !finite_in(p.threshold, 0.0, 1.0))
        {
            return Err(format!(
                "presence output `{}` needs a name and a threshold within 0..=1 (got {})",
                p.name, p.threshold
            ));
        }
        if self.mask.as_ref().is_some_and(|m| m.name.is_empty()) {
            return Err("mask output name is empty".into());
        }
        if let Some(r) = &self.roi
            && (r.center == r.edge
                || r.center.max(r.edge) >= MAX_LANDMARKS
                || !finite_in(r.scale, 0.1, 10.0))
        {
            return Err(format!(
                "roi needs two different points below {MAX_LANDMARKS} and a scale within 0.1..=10 (got {r:?})"
            ));
        }
        if let Some(s) = &self.smoothing {
            let ok = [s.min_cutoff, s.derivative_cutoff]
                .iter()
                .all(|&c| finite_in(c, 0.001, 1000.0))
                && finite_in(s.beta, 0.0, 1.0e6);
            if !ok {
                return Err(format!(
                    "smoothing minCutoff and derivativeCutoff must be within 0.001..=1000 Hz and beta within 0..=1e6 (got {s:?})"
                ));
            }
        }
        if self.skeleton.is_empty() || self.skeleton.len() > MAX_BONES {
            return Err(format!(
                "the skeleton needs 1..={MAX_BONES} edges, has {}",
                self.skeleton.len()
            ));
        }
        if let Some(b) = self
            .skeleton
            .iter()
            .find(|b| b.from >= self.count || b.to >= self.count)
        {
            return Err(format!(
                "skeleton edge {}-{} names a point beyond the {} landmarks (0..{})",
                b.from, b.to, self.count, self.count
            ));
        }
        match self.draw {
            LandmarkDraw::Parts { opacity, .. } if opacity > 100 => Err(format!(
                "parts opacity {opacity} must be within 0..=100 per cent"
            )),
            LandmarkDraw::Parts { .. } if self.mask.is_none() => {
                Err("drawing `parts` needs a `mask` output (which pixels are the person)".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_give_the_same_manifest() {
        let yaml = r#"
input: {name: input_1, layout: NHWC, width: 256, height: 144, colorOrder: RGB, range: "0..1"}
output:
  kind: mask
  name: segment_back
  composite: {blur: {radiusPercent: 4}}
"#;
        let json = r#"{"input":{"name":"input_1","layout":"nhwc","width":256,"height":144},
            "output":{"kind":"mask","name":"segment_back","composite":{"blur":{"radiusPercent":4.0}}}}"#;
        let a = Manifest::parse(yaml).unwrap();
        let b = Manifest::parse(json).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a,
            Manifest::selfie(MaskComposite::Blur {
                radius_percent: 4.0
            })
        );
    }

    #[test]
    fn builtins_round_trip_and_validate() {
        for m in [
            Manifest::selfie(MaskComposite::Color(Rgb { r: 0, g: 255, b: 0 })),
            Manifest::selfie(MaskComposite::ShowMask),
            Manifest::selfie(MaskComposite::Image("/tmp/bg.png".into())),
            Manifest::style(3),
        ] {
            m.validate().unwrap();
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(Manifest::parse(&json).unwrap(), m, "{json}");
        }
    }

    #[test]
    fn style_manifest_is_one_hot() {
        let m = Manifest::style(5);
        let w = &m.constant_inputs[0];
        assert_eq!(w.name, "style_weights");
        assert_eq!(w.values.len(), STYLE_COUNT as usize);
        assert_eq!(w.values.iter().filter(|&&v| v == 1.0).count(), 1);
        assert_eq!(w.values[5], 1.0);
    }

    #[test]
    fn colour_and_show_mask_composites_parse() {
        let m = Manifest::parse(
            "input: {name: x, layout: NCHW, width: 8, height: 8, range: \"-1..1\", colorOrder: BGR}\n\
             output: {kind: mask, name: y, channel: 1, feather: 0, composite: {color: \"#102030\"}}\n",
        )
        .unwrap();
        assert_eq!(m.input.range, ValueRange::MinusOneToOne);
        assert_eq!(m.input.color_order, ColorOrder::Bgr);
        assert_eq!(
            m.output,
            OutputSpec::Mask {
                name: "y".into(),
                channel: 1,
                feather: 0,
                composite: MaskComposite::Color(Rgb {
                    r: 0x10,
                    g: 0x20,
                    b: 0x30
                })
            }
        );
        let m = Manifest::parse(r#"{"input":{"name":"x","layout":"NHWC","width":8,"height":8},"output":{"kind":"mask","name":"y","composite":"showMask"}}"#).unwrap();
        assert!(matches!(
            m.output,
            OutputSpec::Mask {
                composite: MaskComposite::ShowMask,
                ..
            }
        ));
    }

    #[test]
    fn invalid_manifests_are_refused_with_reasons() {
        let cases = [
            (
                r#"{"input":{"name":"x","layout":"NHWC","width":0,"height":8},"output":{"kind":"image","name":"y"}}"#,
                "input size",
            ),
            (
                r#"{"input":{"name":"x","layout":"NHWC","width":8,"height":8},"output":{"kind":"image","name":""}}"#,
                "output name",
            ),
            (
                r#"{"input":{"name":"x","layout":"HWC","width":8,"height":8},"output":{"kind":"image","name":"y"}}"#,
                "HWC",
            ),
            (
                r#"{"input":{"name":"x","layout":"NHWC","width":8,"height":8},"output":{"kind":"picture","name":"y"}}"#,
                "picture",
            ),
            (
                r#"{"input":{"name":"x","layout":"NHWC","width":8,"height":8,"extra":1},"output":{"kind":"image","name":"y"}}"#,
                "extra",
            ),
            (
                r#"{"input":{"name":"x","layout":"NHWC","width":8,"height":8},"constantInputs":[{"name":"w","shape":[3],"values":[1]}],"output":{"kind":"image","name":"y"}}"#,
                "but 1 values",
            ),
            (
                r#"{"input":{"name":"x","layout":"NHWC","width":8,"height":8},"constantInputs":[{"name":"w","shape":[1],"values":[1e39]}],"output":{"kind":"image","name":"y"}}"#,
                "beyond the range of a 32-bit float",
            ),
            (
                r#"{"input":{"name":"x","layout":"NHWC","width":8,"height":8},"output":{"kind":"mask","name":"y","composite":{"blur":{"radiusPercent":90}}}}"#,
                "radiusPercent",
            ),
            (
                r#"{"input":{"name":"x","layout":"NHWC","width":8,"height":8},"output":{"kind":"mask","name":"y","composite":{"color":"green"}}}"#,
                "green",
            ),
        ];
        for (text, needle) in cases {
            let err = Manifest::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn the_pose_manifest_describes_blazepose() {
        let m = Manifest::pose(LandmarkDraw::Skeleton).unwrap();
        assert_eq!(m.input.fit, Fit::Contain);
        assert_eq!(m.output_names(), ["Identity", "Identity_1", "Identity_2"]);
        let OutputSpec::Landmarks(l) = &m.output else {
            panic!("{:?}", m.output)
        };
        assert_eq!(
            (l.count, l.values_per_point, l.visibility),
            (33, 5, Some(3))
        );
        assert_eq!(
            l.roi,
            Some(RoiSpec {
                center: 33,
                edge: 34,
                scale: 1.25
            })
        );
        assert_eq!(l.skeleton.len(), 35, "MediaPipe's POSE_CONNECTIONS");
        // Left (odd) and right (even) limbs have different colours.
        let colour = |from, to| {
            l.skeleton
                .iter()
                .find(|b| (b.from, b.to) == (from, to))
                .unwrap()
                .color
        };
        assert_ne!(colour(11, 13), colour(12, 14));
        assert_ne!(colour(23, 25), colour(24, 26));
        let parts = Manifest::pose(LandmarkDraw::Parts {
            opacity: 50,
            background: None,
        })
        .unwrap();
        let json = serde_json::to_string(&parts).unwrap();
        assert_eq!(Manifest::parse(&json).unwrap(), parts, "{json}");
    }

    #[test]
    fn malformed_landmark_manifests_are_refused_with_reasons() {
        let base = serde_json::to_value(Manifest::pose(LandmarkDraw::Skeleton).unwrap()).unwrap();
        // The manifest with the value at `pointer` (a JSON pointer) replaced; null removes it.
        let with = |pointer: &str, value: serde_json::Value| {
            let mut m = base.clone();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            match (m.pointer_mut(parent).unwrap(), value) {
                (serde_json::Value::Object(o), serde_json::Value::Null) => {
                    o.remove(key);
                }
                (serde_json::Value::Object(o), v) => {
                    o.insert(key.to_owned(), v);
                }
                (other, v) => *other.pointer_mut(&format!("/{key}")).unwrap() = v,
            }
            serde_json::to_string(&m).unwrap()
        };
        use serde_json::json;
        let cases = [
            (with("/output/x", json!(5)), "x is value 5 of each point"),
            (
                with("/output/visibility", json!(9)),
                "visibility is value 9",
            ),
            (with("/output/y", json!(0)), "x and y are both value 0"),
            (with("/output/count", json!(0)), "landmarks count 0"),
            (with("/output/valuesPerPoint", json!(1)), "valuesPerPoint 1"),
            (
                with("/output/skeleton/0/to", json!(40)),
                "skeleton edge 0-40 names a point beyond the 33 landmarks",
            ),
            (with("/output/skeleton", json!([])), "needs 1..=4096 edges"),
            (
                with("/output/skeleton/0/color", json!("yellow")),
                "bad colour `yellow`",
            ),
            (
                with("/output/visibilityThreshold", json!(2.0)),
                "visibilityThreshold 2",
            ),
            (
                with("/output/presence/threshold", json!(-1)),
                "presence output `Identity_1`",
            ),
            (
                with("/output/smoothing/minCutoff", json!(0)),
                "smoothing minCutoff",
            ),
            (
                with("/output/draw", json!({"parts": {"opacity": 101}})),
                "parts opacity 101",
            ),
            (
                with("/output/mask", serde_json::Value::Null)
                    .replace(r#""draw":"skeleton""#, r#""draw":{"parts":{"opacity":50}}"#),
                "drawing `parts` needs a `mask` output",
            ),
            (with("/output/space", json!("metres")), "metres"),
            (
                with("/output/roi/edge", json!(33)),
                "roi needs two different points",
            ),
            (with("/output/roi/scale", json!(0)), "roi needs"),
            (with("/output/name", serde_json::Value::Null), "name"),
            (with("/output/points", json!(3)), "points"),
        ];
        for (text, needle) in cases {
            let err = Manifest::parse(&text).unwrap_err();
            assert!(matches!(err, FilterError::Manifest(_)), "{err}");
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        let image_contain = r#"{"input":{"name":"x","layout":"NHWC","width":8,"height":8,"fit":"contain"},"output":{"kind":"image","name":"y"}}"#;
        let err = Manifest::parse(image_contain).unwrap_err().to_string();
        assert!(err.contains("fit `contain`"), "{err}");
    }

    #[test]
    fn missing_manifest_file_names_the_path() {
        let err = Manifest::load(Path::new("/nonexistent/manifest.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/manifest.yaml"), "{err}");
    }
}
