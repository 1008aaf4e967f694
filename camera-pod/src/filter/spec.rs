//! [`FilterSpec`]: which filter to run, as given on the command line, the data channel or HTTP.
//!
//! JSON form: `{"filter":"passthrough"}`, `{"filter":"selfie-blur","strength":4}`,
//! `{"filter":"selfie-replace","color":"#00ff00"}`, `{"filter":"selfie-replace","image":"/bg.jpg"}`,
//! `{"filter":"style","style":3}`, `{"filter":"pose","model":"full"}`,
//! `{"filter":"body-parts","opacity":70,"color":"#000000"}`,
//! `{"filter":"custom","model":"https://...","sha256":"<64 hex>","manifest":{...}}`.
//! A bare name (`selfie-blur`, `style`, ...) means that filter with its defaults.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::FilterError;
use super::manifest::{LandmarkDraw, Manifest, MaskComposite, OutputSpec, STYLE_COUNT};
use super::tensor::Rgb;

/// Background blur radius of `selfie-blur` when none is given, in per cent of the picture height.
pub const DEFAULT_BLUR_STRENGTH: u8 = 4;
/// Largest accepted blur strength.
pub const MAX_BLUR_STRENGTH: u8 = 25;
/// Background colour of `selfie-replace` when none is given.
pub const DEFAULT_BACKGROUND: Rgb = Rgb { r: 0, g: 255, b: 0 };

/// How strongly `body-parts` paints the part colours over the person when not told, per cent.
pub const DEFAULT_PARTS_OPACITY: u8 = 70;

/// The filter names accepted by `--filter` and the `filter` field.
pub const FILTER_NAMES: [&str; 7] = [
    "passthrough",
    "selfie-blur",
    "selfie-replace",
    "style",
    "pose",
    "body-parts",
    "custom",
];

/// A validated description of a filter. Build one with [`FilterSpec::from_str`], serde, or
/// [`super::FilterArgs::initial_spec`]; turn it into a running filter with
/// [`super::FilterFactory::build`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SpecWire", into = "SpecWire")]
pub enum FilterSpec {
    Passthrough,
    /// Person kept sharp, background blurred; `strength` is the blur radius in per cent of the
    /// picture height (1..=25).
    SelfieBlur {
        strength: u8,
    },
    SelfieReplace(Background),
    /// multistyle26, `style` in `0..26`.
    Style {
        style: u8,
    },
    /// The body's keypoints drawn as a skeleton (BlazePose).
    Pose {
        model: PoseModel,
    },
    /// The person coloured by body part (BlazePose's keypoints and person mask).
    BodyParts(BodyParts),
    Custom(CustomModel),
}

/// Which BlazePose landmark model `pose` and `body-parts` run: `lite` (the default: about twice
/// as fast, see docs/benchmarks.md) or `full` (steadier points).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PoseModel {
    #[default]
    Lite,
    Full,
}

/// Parameters of `body-parts`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BodyParts {
    pub model: PoseModel,
    /// How strongly the part colours cover the person, per cent (0..=100).
    pub opacity: u8,
    /// What replaces everything but the person; `None` keeps the camera picture.
    pub background: Option<Rgb>,
}

impl BodyParts {
    /// How the landmarks manifest draws these parameters.
    pub fn draw(&self) -> LandmarkDraw {
        LandmarkDraw::Parts {
            opacity: self.opacity,
            background: self.background,
        }
    }
}

/// What replaces the background in `selfie-replace`.
#[derive(Clone, Debug, PartialEq)]
pub enum Background {
    Color(Rgb),
    /// A PNG or JPEG file on the pod's file system.
    Image(PathBuf),
}

/// Where a custom model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    Path(PathBuf),
    /// An `https://` URL; downloaded once into the model cache.
    Url(String),
}

/// A model described by a manifest, checked against a required sha256.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomModel {
    pub model: ModelSource,
    /// Lower-case hex.
    pub sha256: String,
    pub manifest: Manifest,
}

impl FilterSpec {
    /// The filter's name, as on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            FilterSpec::Passthrough => "passthrough",
            FilterSpec::SelfieBlur { .. } => "selfie-blur",
            FilterSpec::SelfieReplace(_) => "selfie-replace",
            FilterSpec::Style { .. } => "style",
            FilterSpec::Pose { .. } => "pose",
            FilterSpec::BodyParts(_) => "body-parts",
            FilterSpec::Custom(_) => "custom",
        }
    }

    /// True when building this filter reads files on the pod (a model or background picture
    /// given as a path). Specs from remote callers (data channel, HTTP) may be refused on this:
    /// a path lets a caller probe the pod's file system.
    pub fn uses_local_files(&self) -> bool {
        match self {
            FilterSpec::SelfieReplace(Background::Image(_)) => true,
            FilterSpec::Custom(c) => {
                matches!(c.model, ModelSource::Path(_))
                    || matches!(
                        c.manifest.output,
                        OutputSpec::Mask {
                            composite: MaskComposite::Image(_),
                            ..
                        }
                    )
            }
            _ => false,
        }
    }

    /// A spec sent by a remote caller (data channel, `POST /filter`): parsed like any other, and
    /// refused when building it would read files on the pod (see [`Self::uses_local_files`]).
    /// Custom models by https URL pass here: their sha256 is required, and the model fetcher
    /// downloads them only when the administrator's allow-list allows them.
    pub fn from_remote(text: &str) -> Result<FilterSpec, FilterError> {
        let spec: FilterSpec = text.parse()?;
        if spec.uses_local_files() {
            let what = match &spec {
                FilterSpec::SelfieReplace(Background::Image(p)) => {
                    format!("background image {}", p.display())
                }
                FilterSpec::Custom(CustomModel {
                    model: ModelSource::Path(p),
                    ..
                }) => format!("model {}", p.display()),
                _ => "a background image named in the manifest".to_owned(),
            };
            return Err(FilterError::LocalFilesRefused(what));
        }
        Ok(spec)
    }

    /// The named filter with its default parameters (`custom` has none: it needs a model).
    pub fn with_defaults(name: &str) -> Result<FilterSpec, FilterError> {
        match name {
            "passthrough" => Ok(FilterSpec::Passthrough),
            "selfie-blur" => Ok(FilterSpec::SelfieBlur {
                strength: DEFAULT_BLUR_STRENGTH,
            }),
            "selfie-replace" => Ok(FilterSpec::SelfieReplace(Background::Color(
                DEFAULT_BACKGROUND,
            ))),
            "style" => Ok(FilterSpec::Style { style: 0 }),
            "pose" => Ok(FilterSpec::Pose {
                model: PoseModel::default(),
            }),
            "body-parts" => Ok(FilterSpec::BodyParts(BodyParts {
                model: PoseModel::default(),
                opacity: DEFAULT_PARTS_OPACITY,
                background: None,
            })),
            "custom" => Err(FilterError::InvalidSpec(
                "the custom filter needs a model, its sha256 and a manifest".into(),
            )),
            other => Err(FilterError::UnknownFilter(other.to_owned())),
        }
    }
}

impl Default for FilterSpec {
    fn default() -> Self {
        FilterSpec::SelfieBlur {
            strength: DEFAULT_BLUR_STRENGTH,
        }
    }
}

impl FromStr for FilterSpec {
    type Err = FilterError;

    /// A JSON object (see the module documentation) or a bare filter name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.starts_with('{') {
            serde_json::from_str(s).map_err(|e| spec_error_from_json(&e))
        } else {
            FilterSpec::with_defaults(s)
        }
    }
}

/// serde_json wraps our validation errors in its own; keep their text, which is what users need.
fn spec_error_from_json(e: &serde_json::Error) -> FilterError {
    let text = e.to_string();
    // serde_json appends " at line L column C"; it is kept, it helps with hand-written JSON.
    if let Some(name) = text
        .strip_prefix("unknown variant `")
        .and_then(|t| t.split('`').next())
    {
        return FilterError::UnknownFilter(name.to_owned());
    }
    FilterError::InvalidSpec(text)
}

impl fmt::Display for FilterSpec {
    /// The JSON form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

impl ModelSource {
    /// `https://...` is a URL; any other `scheme://` is refused; anything else is a path.
    pub fn parse(s: &str) -> Result<ModelSource, FilterError> {
        if s.is_empty() {
            return Err(FilterError::InvalidSpec(
                "the model location is empty".into(),
            ));
        }
        if s.starts_with("https://") {
            if let Err(error) = reqwest::Url::parse(s) {
                return Err(FilterError::InvalidSpec(format!(
                    "model URL `{s}` is not a valid URL: {error}"
                )));
            }
            return Ok(ModelSource::Url(s.to_owned()));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(FilterError::InvalidSpec(format!(
                "model URL scheme `{scheme}` is not allowed: use https:// (or a file path)"
            )));
        }
        Ok(ModelSource::Path(PathBuf::from(s)))
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Path(p) => write!(f, "{}", p.display()),
            ModelSource::Url(u) => f.write_str(u),
        }
    }
}

/// Checks a sha256 given as 64 hex digits and returns it in lower case.
pub fn normalize_sha256(s: &str) -> Result<String, FilterError> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FilterError::InvalidSpec(format!(
            "sha256 `{s}` is not 64 hex digits"
        )));
    }
    Ok(s.to_ascii_lowercase())
}

/// Checks a style index.
pub fn style_index(style: u32) -> Result<u8, FilterError> {
    u8::try_from(style)
        .ok()
        .filter(|&s| s < STYLE_COUNT)
        .ok_or(FilterError::StyleOutOfRange(style))
}

/// Checks a blur strength.
pub fn blur_strength(strength: u32) -> Result<u8, FilterError> {
    u8::try_from(strength)
        .ok()
        .filter(|s| (1..=MAX_BLUR_STRENGTH).contains(s))
        .ok_or_else(|| {
            FilterError::InvalidSpec(format!(
                "blur strength {strength} must be within 1..={MAX_BLUR_STRENGTH}"
            ))
        })
}

/// Checks a body-parts opacity (signed, so a negative one from JSON gets this message too).
pub fn parts_opacity(opacity: i64) -> Result<u8, FilterError> {
    u8::try_from(opacity)
        .ok()
        .filter(|o| *o <= 100)
        .ok_or_else(|| {
            FilterError::InvalidSpec(format!(
                "body-parts opacity {opacity} must be within 0..=100 per cent"
            ))
        })
}

/// The JSON shape, before validation.
#[derive(Serialize, Deserialize)]
#[serde(tag = "filter", rename_all = "kebab-case", deny_unknown_fields)]
enum SpecWire {
    Passthrough,
    SelfieBlur {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strength: Option<u32>,
    },
    SelfieReplace {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        color: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<PathBuf>,
    },
    Style {
        #[serde(default)]
        style: u32,
    },
    Pose {
        #[serde(default)]
        model: PoseModel,
    },
    BodyParts {
        #[serde(default)]
        model: PoseModel,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opacity: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        color: Option<String>,
    },
    Custom {
        model: String,
        sha256: String,
        manifest: Manifest,
    },
}

impl TryFrom<SpecWire> for FilterSpec {
    type Error = FilterError;

    fn try_from(w: SpecWire) -> Result<Self, Self::Error> {
        Ok(match w {
            SpecWire::Passthrough => FilterSpec::Passthrough,
            SpecWire::SelfieBlur { strength } => FilterSpec::SelfieBlur {
                strength: strength.map_or(Ok(DEFAULT_BLUR_STRENGTH), blur_strength)?,
            },
            SpecWire::SelfieReplace { color, image } => {
                FilterSpec::SelfieReplace(match (color, image) {
                    (Some(_), Some(_)) => {
                        return Err(FilterError::InvalidSpec(
                            "selfie-replace takes a color or an image, not both".into(),
                        ));
                    }
                    (Some(c), None) => Background::Color(c.parse()?),
                    (None, Some(p)) => Background::Image(p),
                    (None, None) => Background::Color(DEFAULT_BACKGROUND),
                })
            }
            SpecWire::Style { style } => FilterSpec::Style {
                style: style_index(style)?,
            },
            SpecWire::Pose { model } => FilterSpec::Pose { model },
            SpecWire::BodyParts {
                model,
                opacity,
                color,
            } => FilterSpec::BodyParts(BodyParts {
                model,
                opacity: opacity.map_or(Ok(DEFAULT_PARTS_OPACITY), parts_opacity)?,
                background: color.map(|c| c.parse()).transpose()?,
            }),
            SpecWire::Custom {
                model,
                sha256,
                manifest,
            } => {
                manifest.validate()?;
                FilterSpec::Custom(CustomModel {
                    model: ModelSource::parse(&model)?,
                    sha256: normalize_sha256(&sha256)?,
                    manifest,
                })
            }
        })
    }
}

impl From<FilterSpec> for SpecWire {
    fn from(s: FilterSpec) -> Self {
        match s {
            FilterSpec::Passthrough => SpecWire::Passthrough,
            FilterSpec::SelfieBlur { strength } => SpecWire::SelfieBlur {
                strength: Some(u32::from(strength)),
            },
            FilterSpec::SelfieReplace(Background::Color(c)) => SpecWire::SelfieReplace {
                color: Some(c.to_string()),
                image: None,
            },
            FilterSpec::SelfieReplace(Background::Image(p)) => SpecWire::SelfieReplace {
                color: None,
                image: Some(p),
            },
            FilterSpec::Style { style } => SpecWire::Style {
                style: u32::from(style),
            },
            FilterSpec::Pose { model } => SpecWire::Pose { model },
            FilterSpec::BodyParts(p) => SpecWire::BodyParts {
                model: p.model,
                opacity: Some(i64::from(p.opacity)),
                color: p.background.map(|c| c.to_string()),
            },
            FilterSpec::Custom(c) => SpecWire::Custom {
                model: c.model.to_string(),
                sha256: c.sha256,
                manifest: c.manifest,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_json_forms_parse() {
        assert_eq!(
            "{\"filter\":\"style\",\"style\":3}"
                .parse::<FilterSpec>()
                .unwrap(),
            FilterSpec::Style { style: 3 }
        );
        assert_eq!(
            r##"{"filter":"selfie-replace","color":"#00ff00"}"##
                .parse::<FilterSpec>()
                .unwrap(),
            FilterSpec::SelfieReplace(Background::Color(Rgb { r: 0, g: 255, b: 0 }))
        );
        assert_eq!(
            r#"{"filter":"selfie-blur"}"#.parse::<FilterSpec>().unwrap(),
            FilterSpec::default()
        );
        assert_eq!(
            r#"{"filter":"passthrough"}"#.parse::<FilterSpec>().unwrap(),
            FilterSpec::Passthrough
        );
        assert_eq!(
            r#"{"filter":"selfie-replace","image":"/srv/beach.jpg"}"#
                .parse::<FilterSpec>()
                .unwrap(),
            FilterSpec::SelfieReplace(Background::Image("/srv/beach.jpg".into()))
        );
        assert_eq!(
            r#"{"filter":"selfie-blur","strength":9}"#.parse::<FilterSpec>().unwrap(),
            FilterSpec::SelfieBlur { strength: 9 }
        );
        assert_eq!(
            r#"{"filter":"pose","model":"full"}"#.parse::<FilterSpec>().unwrap(),
            FilterSpec::Pose {
                model: PoseModel::Full
            }
        );
        assert_eq!(
            r##"{"filter":"body-parts","opacity":40,"color":"#000000"}"##
                .parse::<FilterSpec>()
                .unwrap(),
            FilterSpec::BodyParts(BodyParts {
                model: PoseModel::Lite,
                opacity: 40,
                background: Some(Rgb { r: 0, g: 0, b: 0 }),
            })
        );
    }

    #[test]
    fn specs_that_read_pod_files_are_recognised() {
        let custom = |model: ModelSource, composite: MaskComposite| {
            FilterSpec::Custom(CustomModel {
                model,
                sha256: "ab".repeat(32),
                manifest: Manifest::selfie(composite),
            })
        };
        let url = || ModelSource::Url("https://models.example/m.onnx".into());
        assert!(
            FilterSpec::SelfieReplace(Background::Image("/etc/bg.png".into())).uses_local_files()
        );
        assert!(
            custom(
                ModelSource::Path("/etc/m.onnx".into()),
                MaskComposite::ShowMask
            )
            .uses_local_files()
        );
        assert!(custom(url(), MaskComposite::Image("/etc/bg.png".into())).uses_local_files());
        assert!(!custom(url(), MaskComposite::ShowMask).uses_local_files());
        assert!(
            !FilterSpec::SelfieReplace(Background::Color(DEFAULT_BACKGROUND)).uses_local_files()
        );
        assert!(!FilterSpec::default().uses_local_files());
        assert!(!FilterSpec::Style { style: 2 }.uses_local_files());
    }

    #[test]
    fn remote_specs_may_not_name_pod_files() {
        let manifest =
            |composite: MaskComposite| serde_json::to_string(&Manifest::selfie(composite)).unwrap();
        let custom = |model: &str, manifest: String| {
            format!(
                r#"{{"filter":"custom","model":"{model}","sha256":"{}","manifest":{manifest}}}"#,
                "ab".repeat(32)
            )
        };
        let refused = [
            (
                r#"{"filter":"selfie-replace","image":"/etc/p2pcamera/bg.png"}"#.to_owned(),
                "background image /etc/p2pcamera/bg.png",
            ),
            (
                custom("/var/run/secrets/token", manifest(MaskComposite::ShowMask)),
                "model /var/run/secrets/token",
            ),
            (
                custom(
                    "https://models.example/m.onnx",
                    manifest(MaskComposite::Image("/etc/bg.png".into())),
                ),
                "background image named in the manifest",
            ),
        ];
        for (text, needle) in refused {
            let err = FilterSpec::from_remote(&text).unwrap_err();
            assert!(
                matches!(err, FilterError::LocalFilesRefused(_)),
                "{text}: {err}"
            );
            assert!(err.to_string().contains(needle), "{err}");
        }
        let url = custom(
            "https://models.example/m.onnx",
            manifest(MaskComposite::ShowMask),
        );
        assert!(matches!(
            FilterSpec::from_remote(&url).unwrap(),
            FilterSpec::Custom(_)
        ));
        assert_eq!(
            FilterSpec::from_remote("style").unwrap(),
            FilterSpec::Style { style: 0 }
        );
        assert!(matches!(
            FilterSpec::from_remote(r#"{"filter":"sepia"}"#),
            Err(FilterError::UnknownFilter(_))
        ));
    }

    #[test]
    fn bare_names_mean_defaults() {
        assert_eq!(
            "selfie-blur".parse::<FilterSpec>().unwrap(),
            FilterSpec::SelfieBlur {
                strength: DEFAULT_BLUR_STRENGTH
            }
        );
        assert_eq!(
            "style".parse::<FilterSpec>().unwrap(),
            FilterSpec::Style { style: 0 }
        );
        assert_eq!(
            "selfie-replace".parse::<FilterSpec>().unwrap(),
            FilterSpec::SelfieReplace(Background::Color(DEFAULT_BACKGROUND))
        );
        assert_eq!(
            "pose".parse::<FilterSpec>().unwrap(),
            FilterSpec::Pose {
                model: PoseModel::Lite
            }
        );
        assert_eq!(
            "body-parts".parse::<FilterSpec>().unwrap(),
            FilterSpec::BodyParts(BodyParts {
                model: PoseModel::Lite,
                opacity: DEFAULT_PARTS_OPACITY,
                background: None,
            })
        );
        for name in FILTER_NAMES {
            let parsed = FilterSpec::with_defaults(name);
            assert!(
                parsed
                    .as_ref()
                    .map_or(name == "custom", |s| s.name() == name),
                "{name}: {parsed:?}"
            );
        }
        assert!(
            "custom"
                .parse::<FilterSpec>()
                .unwrap_err()
                .to_string()
                .contains("needs a model")
        );
    }

    #[test]
    fn specs_round_trip_through_json() {
        let custom = FilterSpec::Custom(CustomModel {
            model: ModelSource::Url("https://models.example/seg.onnx".into()),
            sha256: "ab".repeat(32),
            manifest: Manifest::selfie(MaskComposite::ShowMask),
        });
        for spec in [
            FilterSpec::Passthrough,
            FilterSpec::SelfieBlur { strength: 7 },
            FilterSpec::SelfieReplace(Background::Color(Rgb { r: 1, g: 2, b: 3 })),
            FilterSpec::SelfieReplace(Background::Image("/bg.png".into())),
            FilterSpec::Style { style: 25 },
            FilterSpec::Pose {
                model: PoseModel::Full,
            },
            FilterSpec::BodyParts(BodyParts {
                model: PoseModel::Full,
                opacity: 0,
                background: Some(Rgb { r: 9, g: 8, b: 7 }),
            }),
            custom,
        ] {
            let json = spec.to_string();
            assert_eq!(json.parse::<FilterSpec>().unwrap(), spec, "{json}");
        }
    }

    #[test]
    fn bad_specs_give_clear_errors() {
        let cases = [
            (r#"{"filter":"sepia"}"#, "unknown filter `sepia`"),
            ("sepia", "unknown filter `sepia`"),
            (
                r#"{"filter":"style","style":26}"#,
                "style index 26 is out of range",
            ),
            (
                r#"{"filter":"style","style":4000000000}"#,
                "style index 4000000000 is out of range",
            ),
            (
                r#"{"filter":"selfie-replace","color":"green"}"#,
                "bad colour `green`",
            ),
            (
                r##"{"filter":"selfie-replace","color":"#00ff0"}"##,
                "bad colour `#00ff0`",
            ),
            (
                r##"{"filter":"selfie-replace","color":"#00ff00","image":"/x.png"}"##,
                "not both",
            ),
            (r#"{"filter":"selfie-blur","strength":0}"#, "strength 0"),
            (r#"{"filter":"style","styel":2}"#, "styel"),
            (r#"{"filter":"pose","model":"huge"}"#, "huge"),
            (r#"{"filter":"body-parts","opacity":101}"#, "opacity 101"),
            (
                r#"{"filter":"body-parts","color":"black"}"#,
                "bad colour `black`",
            ),
            (r#"{"style":2}"#, "filter"),
            ("{not json", "invalid filter spec"),
        ];
        for (text, needle) in cases {
            let err = text.parse::<FilterSpec>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn custom_specs_check_source_and_checksum() {
        let manifest = serde_json::to_string(&Manifest::selfie(MaskComposite::ShowMask)).unwrap();
        let spec = |model: &str, sha: &str| {
            format!(
                r#"{{"filter":"custom","model":"{model}","sha256":"{sha}","manifest":{manifest}}}"#
            )
            .parse::<FilterSpec>()
        };
        let good = "AB".repeat(32);
        match spec("/models/seg.onnx", &good).unwrap() {
            FilterSpec::Custom(c) => {
                assert_eq!(c.model, ModelSource::Path("/models/seg.onnx".into()));
                assert_eq!(c.sha256, "ab".repeat(32));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            spec("http://models.example/x.onnx", &good)
                .unwrap_err()
                .to_string()
                .contains("use https://")
        );
        assert!(
            spec("/m.onnx", "abc")
                .unwrap_err()
                .to_string()
                .contains("not 64 hex digits")
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Names the parser knows (filters, fields, enum values), so that mutations reach its checks.
    const WORDS: &[&str] = &[
        "filter",
        "passthrough",
        "selfie-blur",
        "selfie-replace",
        "style",
        "pose",
        "body-parts",
        "custom",
        "strength",
        "color",
        "image",
        "model",
        "opacity",
        "sha256",
        "manifest",
        "full",
        "lite",
        "input",
        "output",
        "constantInputs",
        "name",
        "layout",
        "NHWC",
        "NCHW",
        "width",
        "height",
        "colorOrder",
        "range",
        "fit",
        "contain",
        "kind",
        "mask",
        "landmarks",
        "channel",
        "feather",
        "composite",
        "blur",
        "radiusPercent",
        "showMask",
        "shape",
        "values",
        "count",
        "valuesPerPoint",
        "x",
        "y",
        "visibility",
        "space",
        "normalized",
        "presence",
        "threshold",
        "roi",
        "center",
        "edge",
        "scale",
        "smoothing",
        "skeleton",
        "draw",
        "parts",
        "#00ff00",
        "https://models.example/m.onnx",
        "/etc/passwd",
    ];

    /// Valid bodies of every kind, the custom models' (with the most to check) three times as
    /// often: where the mutations start.
    fn valid_body() -> impl Strategy<Value = Value> {
        let bodies = valid_bodies();
        let (custom, simple): (Vec<_>, Vec<_>) =
            bodies.into_iter().partition(|b| b["filter"] == "custom");
        prop_oneof![
            1 => prop::sample::select(simple),
            3 => prop::sample::select(custom),
        ]
    }

    fn valid_bodies() -> Vec<Value> {
        let custom = |manifest: Manifest| {
            json!({
                "filter": "custom",
                "model": "https://models.example/m.onnx",
                "sha256": "ab".repeat(32),
                "manifest": manifest,
            })
        };
        let parts = BodyParts {
            model: PoseModel::Full,
            opacity: 40,
            background: None,
        };
        vec![
            json!({"filter": "passthrough"}),
            json!({"filter": "selfie-blur", "strength": 9}),
            json!({"filter": "selfie-replace", "color": "#123456"}),
            json!({"filter": "style", "style": 3}),
            json!({"filter": "pose", "model": "full"}),
            json!({"filter": "body-parts", "opacity": 40, "color": "#000000"}),
            custom(Manifest::selfie(MaskComposite::Blur {
                radius_percent: 4.0,
            })),
            custom(Manifest::style(3)),
            custom(Manifest::pose(LandmarkDraw::Skeleton).unwrap()),
            custom(Manifest::pose(parts.draw()).unwrap()),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(WORDS).prop_map(str::to_owned),
            "\\PC{0,8}",
        ]
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::Bool),
            1 => any::<i64>().prop_map(Value::from),
            2 => (0u64..300).prop_map(Value::from),
            2 => any::<f64>().prop_filter_map("JSON has no NaN or infinity", |f| {
                serde_json::Number::from_f64(f).map(Value::Number)
            }),
            // Past f32's range, and past u32's.
            1 => prop::sample::select(&[1e39, -1e300, 3.5e38, 4294967296.0, -0.0][..])
                .prop_map(Value::from),
            2 => key().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    #[derive(Clone, Debug)]
    enum Mutation {
        Replace(Value),
        /// Replaces a leaf (the path's first step picks which), however deep, when it has the new
        /// value's type (a number by a number, a string by a string): the body keeps its shape.
        ReplaceLeaf(Value),
        Remove,
        Insert(String, Value),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            1 => any_json().prop_map(Mutation::Replace),
            6 => any_json().prop_map(Mutation::ReplaceLeaf),
            1 => Just(Mutation::Remove),
            1 => (key(), any_json()).prop_map(|(k, v)| Mutation::Insert(k, v)),
        ]
    }

    /// Every leaf of `value` (numbers, strings, ...), depth first.
    fn leaves(value: &mut Value) -> Vec<&mut Value> {
        match value {
            Value::Object(map) => map.values_mut().flat_map(leaves).collect(),
            Value::Array(items) => items.iter_mut().flat_map(leaves).collect(),
            leaf => vec![leaf],
        }
    }

    /// Applies `mutation` to the part of `value` that `path` leads to (each step picks a child,
    /// modulo their number; the walk stops early at a leaf).
    fn mutate(value: &mut Value, path: &[usize], mutation: Mutation) {
        let mutation = match mutation {
            Mutation::ReplaceLeaf(new) => {
                let mut leaves = leaves(value);
                let count = leaves.len();
                let choice = path.first().copied().unwrap_or_default() % count.max(1);
                if let Some(old) = leaves.get_mut(choice)
                    && std::mem::discriminant(&**old) == std::mem::discriminant(&new)
                {
                    **old = new;
                }
                return;
            }
            other => other,
        };
        let children = match value {
            Value::Object(map) => map.len(),
            Value::Array(items) => items.len(),
            _ => 0,
        };
        match (path.split_first(), mutation) {
            (Some((&step, rest)), mutation) if children > 0 => {
                let index = step % children;
                let last = rest.is_empty();
                match value {
                    Value::Object(map) if last && matches!(mutation, Mutation::Remove) => {
                        let name = map.keys().nth(index).cloned().unwrap_or_default();
                        map.remove(&name);
                    }
                    Value::Array(items) if last && matches!(mutation, Mutation::Remove) => {
                        items.remove(index);
                    }
                    Value::Object(map) => {
                        if let Some(child) = map.values_mut().nth(index) {
                            mutate(child, rest, mutation);
                        }
                    }
                    Value::Array(items) => mutate(&mut items[index], rest, mutation),
                    _ => {}
                }
            }
            (_, Mutation::Insert(name, new)) => match value {
                Value::Object(map) => {
                    map.insert(name, new);
                }
                Value::Array(items) => items.push(new),
                other => *other = new,
            },
            (_, Mutation::Replace(new) | Mutation::ReplaceLeaf(new)) => *value = new,
            (_, Mutation::Remove) => *value = Value::Null,
        }
    }

    /// Filter-switch bodies: valid ones changed in one to three places, arbitrary JSON, and
    /// arbitrary text.
    fn bodies() -> impl Strategy<Value = String> {
        let mutated = (
            valid_body(),
            prop::collection::vec(
                (prop::collection::vec(any::<usize>(), 0..6), mutation()),
                1..4,
            ),
        )
            .prop_map(|(mut body, mutations)| {
                for (path, mutation) in mutations {
                    mutate(&mut body, &path, mutation);
                }
                body.to_string()
            });
        prop_oneof![
            6 => mutated,
            2 => any_json().prop_map(|v| v.to_string()),
            1 => "\\PC{0,64}",
        ]
    }

    proptest! {
        #![proptest_config(p2pcamera_tests::properties::config())]

        /// Whatever the network sends, parsing a filter switch does not panic, and a spec it
        /// accepts prints as JSON that parses back to the same spec.
        #[test]
        fn filter_switch_bodies_parse_without_panicking(body in bodies()) {
            if let Ok(spec) = FilterSpec::from_remote(&body) {
                let printed = spec.to_string();
                prop_assert_eq!(FilterSpec::from_remote(&printed).ok(), Some(spec), "{}", printed);
            }
        }
    }
}
