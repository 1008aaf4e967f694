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

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::FilterError;
use super::tensor::{ColorOrder, Layout, Rgb, TensorFormat, ValueRange};

/// Largest model input side accepted from a manifest.
pub const MAX_INPUT_SIDE: u32 = 4096;
/// Largest background blur radius, in per cent of the picture height.
pub const MAX_BLUR_PERCENT: f32 = 25.0;
/// Largest mask feathering radius, in mask pixels.
pub const MAX_FEATHER: u32 = 16;

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

    pub fn output_name(&self) -> &str {
        match &self.output {
            OutputSpec::Image { name, .. } | OutputSpec::Mask { name, .. } => name,
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
    fn missing_manifest_file_names_the_path() {
        let err = Manifest::load(Path::new("/nonexistent/manifest.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/manifest.yaml"), "{err}");
    }
}
