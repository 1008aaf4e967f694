//! Which CameraClass a session runs in, and whether it fits: decided without a client.
//!
//! [`resolve`] picks the class: the one `spec.className` names, else the one class annotated
//! `p2pcamera.io/is-default-class: "true"`. When no class is the default, sessions that name none
//! run in the operator's built-in class: its `--camera-pod-image`, `--gpu-resource-name`, ...
//! flags, every built-in filter, no model by URL. Everything in it is the administrator's, and a
//! cluster upgraded from a version without classes keeps working until one is written.
//!
//! [`check`] holds the session to its class: fields that moved to the class are not set, the
//! filter is one the class allows, a custom model passes the class's allow-list, and the video
//! limits are within the class's, and a class that relays has the operator's TURN URLs
//! ([`relay_configured`]). Every misfit is a [`NotAccepted`] with a condition reason; the
//! operator creates nothing for such a session (status `Accepted=False`, a Warning Event).
//!
//! [`EffectiveVideo`] is what the pod gets: the session's limits where set, else the class's.

use std::sync::Arc;

use kube::ResourceExt;

use crate::config::Config;
use crate::crd::{CameraClass, CameraClassSpec, CameraSessionSpec, ClassRelay, Codec, FilterName};
use p2pcamera_api::ModelPolicy;
use p2pcamera_api::objects::ANNOTATION_DEFAULT_CLASS;
use p2pcamera_api::relay::RelayCandidates;
use p2pcamera_api::wire::DEFAULT_MAX_DECODE;

/// The class a session runs in.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedClass {
    /// The CameraClass's name; `None` for the operator's built-in class.
    pub name: Option<String>,
    /// Its spec (the default spec for the built-in class).
    pub spec: CameraClassSpec,
}

impl ResolvedClass {
    /// The operator's built-in class: everything from its flags.
    pub fn built_in() -> Self {
        Self {
            name: None,
            spec: CameraClassSpec::default(),
        }
    }

    /// The class's name as shown to users.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or("(built-in)")
    }

    /// The class's model allow-list.
    pub fn model_policy(&self) -> ModelPolicy {
        let models = &self.spec.models;
        ModelPolicy::new(
            models.allowed_hosts.iter().map(|h| h.0.as_str()),
            models.allowed_digests.iter().map(|d| d.0.as_str()),
        )
    }

    /// Whether sessions of the class may run `filter`.
    pub fn allows_filter(&self, filter: FilterName) -> bool {
        if self.spec.allowed_filters.is_empty() {
            filter != FilterName::Custom
        } else {
            self.spec.allowed_filters.contains(&filter)
        }
    }
}

/// Why a session is not accepted; each variant is one `Accepted=False` reason.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum NotAccepted {
    #[error("CameraClass {0:?} does not exist")]
    ClassNotFound(String),
    #[error(
        "the session names no class and several CameraClasses are the default ({0}); set spec.className"
    )]
    SeveralDefaultClasses(String),
    #[error(
        "{0} moved to CameraClass in this version: remove it from the session and name a class that provides it (docs/operations.md, Migrating to CameraClass)"
    )]
    MovedToClass(String),
    #[error("CameraClass {class} does not allow filter {filter}")]
    FilterNotAllowed { class: String, filter: &'static str },
    #[error(
        "CameraClass {class} does not allow this model (its host or sha256 is not on the class's models list)"
    )]
    ModelNotAllowed { class: String },
    #[error("spec.video.{field} {asked} is above CameraClass {class}'s limit {limit}")]
    VideoOverLimit {
        class: String,
        field: &'static str,
        asked: u32,
        limit: u32,
    },
    #[error("CameraClass {class} does not allow codec {codec}")]
    CodecNotAllowed { class: String, codec: &'static str },
    #[error(
        "CameraClass {class} has relay {relay:?}, and the operator has no TURN server for camera pods: set --camera-pod-turn-urls (P2PCAMERA_CAMERA_POD_TURN_URLS) to at least one turn: URL over UDP, or set the class's relay to Off"
    )]
    RelayNotConfigured { class: String, relay: ClassRelay },
}

impl NotAccepted {
    /// The `Accepted=False` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ClassNotFound(_) => "ClassNotFound",
            Self::SeveralDefaultClasses(_) => "SeveralDefaultClasses",
            Self::MovedToClass(_) => "MovedToClass",
            Self::FilterNotAllowed { .. } => "FilterNotAllowed",
            Self::ModelNotAllowed { .. } => "ModelNotAllowed",
            Self::VideoOverLimit { .. } => "VideoOverClassLimit",
            Self::CodecNotAllowed { .. } => "CodecNotAllowed",
            Self::RelayNotConfigured { .. } => REASON_RELAY_NOT_CONFIGURED,
        }
    }
}

/// `Accepted=False` reason of a session whose class relays ([`ClassRelay`] `Also` or `Only`)
/// while the operator has no `--camera-pod-turn-urls` over UDP: its pod would not start.
pub const REASON_RELAY_NOT_CONFIGURED: &str = "RelayNotConfigured";

/// Whether `class` is marked as the default class.
pub fn is_default(class: &CameraClass) -> bool {
    class
        .annotations()
        .get(ANNOTATION_DEFAULT_CLASS)
        .is_some_and(|v| v == "true")
}

/// The class of a session with `spec`, among `classes` (every CameraClass).
pub fn resolve(
    spec: &CameraSessionSpec,
    classes: &[Arc<CameraClass>],
) -> Result<ResolvedClass, NotAccepted> {
    let found = |class: &CameraClass| ResolvedClass {
        name: Some(class.name_any()),
        spec: class.spec.clone(),
    };
    if let Some(name) = &spec.class_name {
        return classes
            .iter()
            .find(|c| c.name_any() == *name)
            .map(|c| found(c))
            .ok_or_else(|| NotAccepted::ClassNotFound(name.clone()));
    }
    let mut defaults: Vec<_> = classes.iter().filter(|c| is_default(c)).collect();
    match defaults.len() {
        0 => Ok(ResolvedClass::built_in()),
        1 => Ok(found(defaults[0])),
        _ => {
            defaults.sort_by_key(|c| c.name_any());
            let names: Vec<_> = defaults.iter().map(|c| c.name_any()).collect();
            Err(NotAccepted::SeveralDefaultClasses(names.join(", ")))
        }
    }
}

/// The session fields that moved to CameraClass and are still set in `spec` (a gpu of count 1
/// without a resource name is what older versions wrote by default, and harmless).
pub fn moved_fields(spec: &CameraSessionSpec) -> Vec<&'static str> {
    let gpu = spec
        .gpu
        .as_ref()
        .is_some_and(|g| g.count != 1 || g.resource_name.is_some());
    [
        ("spec.image", spec.image.is_some()),
        ("spec.gpu", gpu),
        ("spec.nodeSelector", !spec.node_selector.is_empty()),
        ("spec.tolerations", !spec.tolerations.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// Whether pods of `class` can start with the operator's `config`: a class that relays needs a
/// TURN URL over UDP in `--camera-pod-turn-urls` (camera-pod refuses to start without one). The
/// warm pool of such a class creates no pods either.
pub fn relay_configured(class: &ResolvedClass, config: &Config) -> Result<(), NotAccepted> {
    let relay = class.spec.relay;
    if RelayCandidates::from(relay).gathers_relay() && config.camera_pod_relay_urls().is_empty() {
        return Err(NotAccepted::RelayNotConfigured {
            class: class.display_name().to_string(),
            relay,
        });
    }
    Ok(())
}

/// Whether a session with `spec` fits `class`, and the class's pods can start with the
/// operator's `config` ([`relay_configured`]).
pub fn check(
    spec: &CameraSessionSpec,
    class: &ResolvedClass,
    config: &Config,
) -> Result<(), NotAccepted> {
    let moved = moved_fields(spec);
    if !moved.is_empty() {
        return Err(NotAccepted::MovedToClass(moved.join(", ")));
    }
    relay_configured(class, config)?;
    let class_name = || class.display_name().to_string();
    let filter = spec.filter.name;
    if !class.allows_filter(filter) {
        return Err(NotAccepted::FilterNotAllowed {
            class: class_name(),
            filter: filter.as_str(),
        });
    }
    if let Some(model) = &spec.filter.model
        && !class.model_policy().allows(&model.url, &model.sha256)
    {
        return Err(NotAccepted::ModelNotAllowed {
            class: class_name(),
        });
    }
    let Some(video) = &spec.video else {
        return Ok(());
    };
    let ceilings = &class.spec.video.limits;
    for (field, asked, limit) in [
        ("maxWidth", video.max_width, ceilings.max_width),
        ("maxHeight", video.max_height, ceilings.max_height),
        ("maxFps", video.max_fps, ceilings.max_fps),
    ] {
        if let (Some(asked), Some(limit)) = (asked, limit)
            && asked > limit
        {
            return Err(NotAccepted::VideoOverLimit {
                class: class_name(),
                field,
                asked,
                limit,
            });
        }
    }
    if !ceilings.codecs.is_empty()
        && let Some(codec) = video.codecs.iter().find(|c| !ceilings.codecs.contains(c))
    {
        return Err(NotAccepted::CodecNotAllowed {
            class: class_name(),
            codec: codec.as_str(),
        });
    }
    Ok(())
}

/// The video limits a pod gets: the session's where set, else the class's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EffectiveVideo {
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    pub max_fps: Option<u32>,
    pub codecs: Vec<Codec>,
    /// Largest decoded camera picture (always set: the class's, else [`DEFAULT_MAX_DECODE`]).
    pub max_decode: (u32, u32),
}

impl EffectiveVideo {
    /// The limits of a session with `spec` in `class` (which it fits).
    pub fn of(spec: &CameraSessionSpec, class: &ResolvedClass) -> Self {
        let session = spec.video.clone().unwrap_or_default();
        let ceilings = &class.spec.video.limits;
        Self {
            max_width: session.max_width.or(ceilings.max_width),
            max_height: session.max_height.or(ceilings.max_height),
            max_fps: session.max_fps.or(ceilings.max_fps),
            codecs: if session.codecs.is_empty() {
                ceilings.codecs.clone()
            } else {
                session.codecs
            },
            max_decode: Self::decode_cap(class),
        }
    }

    /// Largest decoded camera picture of every pod of `class`: the class's, else
    /// [`DEFAULT_MAX_DECODE`].
    pub fn decode_cap(class: &ResolvedClass) -> (u32, u32) {
        let video = &class.spec.video;
        (
            video.max_decode_width.unwrap_or(DEFAULT_MAX_DECODE.0),
            video.max_decode_height.unwrap_or(DEFAULT_MAX_DECODE.1),
        )
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AllowedHost, ClassVideo, Digest, GpuSpec, ModelAllowList, VideoSpec};
    use crate::fixtures::config;

    fn class(name: &str, default: bool, spec: CameraClassSpec) -> Arc<CameraClass> {
        let mut class = CameraClass::new(name, spec);
        if default {
            class
                .annotations_mut()
                .insert(ANNOTATION_DEFAULT_CLASS.into(), "true".into());
        }
        Arc::new(class)
    }

    fn spec(json: serde_json::Value) -> CameraSessionSpec {
        serde_json::from_value(json).expect("session spec")
    }

    /// A `custom` filter with a model from `https://models.example`.
    fn custom() -> CameraSessionSpec {
        spec(serde_json::json!({"filter": {"name": "custom", "model": {
            "url": "https://models.example/m.onnx", "sha256": "ab".repeat(32),
            "manifest": {"input": "x", "layout": "NCHW", "width": 256, "height": 256, "output": "image"}
        }}}))
    }

    #[test]
    fn a_named_class_is_used_and_a_missing_one_is_not_found() {
        let classes = [
            class("standard", true, CameraClassSpec::default()),
            class("big", false, CameraClassSpec::default()),
        ];
        let named = resolve(&spec(serde_json::json!({"className": "big"})), &classes);
        assert_eq!(named.map(|c| c.name), Ok(Some("big".into())));
        assert_eq!(
            resolve(&spec(serde_json::json!({"className": "gone"})), &classes),
            Err(NotAccepted::ClassNotFound("gone".into()))
        );
    }

    #[test]
    fn the_default_class_serves_sessions_that_name_none() {
        let none = spec(serde_json::json!({}));
        let standard = class("standard", true, CameraClassSpec::default());
        let other = class("other", false, CameraClassSpec::default());
        assert_eq!(
            resolve(&none, &[other.clone(), standard.clone()]).map(|c| c.name),
            Ok(Some("standard".into()))
        );
        assert_eq!(
            resolve(&none, std::slice::from_ref(&other)),
            Ok(ResolvedClass::built_in())
        );
        let second = class("second", true, CameraClassSpec::default());
        assert_eq!(
            resolve(&none, &[standard, second]),
            Err(NotAccepted::SeveralDefaultClasses(
                "second, standard".into()
            ))
        );
        assert_eq!(resolve(&none, &[]), Ok(ResolvedClass::built_in()));
    }

    #[test]
    fn fields_that_moved_to_the_class_are_not_accepted() {
        let built_in = ResolvedClass::built_in();
        for (json, field) in [
            (serde_json::json!({"image": "evil:latest"}), "spec.image"),
            (
                serde_json::json!({"gpu": {"resourceName": "cpu"}}),
                "spec.gpu",
            ),
            (serde_json::json!({"gpu": {"count": 2}}), "spec.gpu"),
            (
                serde_json::json!({"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}),
                "spec.nodeSelector",
            ),
            (
                serde_json::json!({"tolerations": [{"operator": "Exists"}]}),
                "spec.tolerations",
            ),
        ] {
            let err = check(&spec(json), &built_in, &config()).expect_err(field);
            assert_eq!(err.reason(), "MovedToClass");
            assert!(err.to_string().contains(field), "{err}");
        }
        // What older versions defaulted is harmless.
        let old_default = CameraSessionSpec {
            gpu: Some(GpuSpec::default()),
            ..spec(serde_json::json!({}))
        };
        assert_eq!(check(&old_default, &built_in, &config()), Ok(()));
    }

    #[test]
    fn filters_are_those_the_class_allows_and_custom_only_when_listed() {
        let built_in = ResolvedClass::built_in();
        assert_eq!(
            check(
                &spec(serde_json::json!({"filter": {"name": "style", "styleIndex": 3}})),
                &built_in,
                &config()
            ),
            Ok(())
        );
        assert_eq!(
            check(&custom(), &built_in, &config()).map_err(|e| e.reason()),
            Err("FilterNotAllowed")
        );
        let blur_only = ResolvedClass {
            name: Some("blur".into()),
            spec: CameraClassSpec {
                allowed_filters: vec![FilterName::SelfieBlur],
                ..CameraClassSpec::default()
            },
        };
        assert_eq!(
            check(&spec(serde_json::json!({})), &blur_only, &config()),
            Ok(())
        );
        let style = spec(serde_json::json!({"filter": {"name": "style", "styleIndex": 3}}));
        assert_eq!(
            check(&style, &blur_only, &config()),
            Err(NotAccepted::FilterNotAllowed {
                class: "blur".into(),
                filter: "style"
            })
        );
    }

    #[test]
    fn custom_models_need_the_class_allow_list() {
        let custom = custom();
        let model = custom.filter.model.clone().expect("model");
        let with = |models: ModelAllowList| ResolvedClass {
            name: Some("models".into()),
            spec: CameraClassSpec {
                allowed_filters: vec![FilterName::Custom],
                models,
                ..CameraClassSpec::default()
            },
        };
        assert_eq!(
            check(&custom, &with(ModelAllowList::default()), &config()).map_err(|e| e.reason()),
            Err("ModelNotAllowed")
        );
        let host = model
            .url
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap_or_default();
        let by_host = with(ModelAllowList {
            allowed_hosts: vec![AllowedHost(host.to_string())],
            ..ModelAllowList::default()
        });
        assert_eq!(check(&custom, &by_host, &config()), Ok(()));
        let by_digest = with(ModelAllowList {
            allowed_digests: vec![Digest(model.sha256.clone())],
            ..ModelAllowList::default()
        });
        assert_eq!(check(&custom, &by_digest, &config()), Ok(()));
    }

    #[test]
    fn video_stays_within_the_class_and_defaults_to_it() {
        let class = ResolvedClass {
            name: Some("hd".into()),
            spec: CameraClassSpec {
                video: ClassVideo {
                    limits: VideoSpec {
                        max_width: Some(1280),
                        max_height: Some(720),
                        max_fps: Some(30),
                        codecs: vec![Codec::Vp8],
                    },
                    max_decode_width: Some(3840),
                    max_decode_height: None,
                },
                ..CameraClassSpec::default()
            },
        };
        let with_video = |video: VideoSpec| CameraSessionSpec {
            video: Some(video),
            ..spec(serde_json::json!({}))
        };
        let small = with_video(VideoSpec {
            max_width: Some(640),
            max_height: None,
            max_fps: Some(30),
            codecs: vec![],
        });
        assert_eq!(check(&small, &class, &config()), Ok(()));
        assert_eq!(
            EffectiveVideo::of(&small, &class),
            EffectiveVideo {
                max_width: Some(640),
                max_height: Some(720),
                max_fps: Some(30),
                codecs: vec![Codec::Vp8],
                max_decode: (3840, 1080),
            }
        );
        let big = with_video(VideoSpec {
            max_width: Some(1920),
            ..small.video.clone().unwrap()
        });
        assert_eq!(
            check(&big, &class, &config()),
            Err(NotAccepted::VideoOverLimit {
                class: "hd".into(),
                field: "maxWidth",
                asked: 1920,
                limit: 1280
            })
        );
        let h264 = with_video(VideoSpec {
            codecs: vec![Codec::H264],
            ..small.video.clone().unwrap()
        });
        assert_eq!(
            check(&h264, &class, &config()).map_err(|e| e.reason()),
            Err("CodecNotAllowed")
        );
    }

    #[test]
    fn a_relaying_class_needs_the_operators_turn_urls_over_udp() {
        let session = spec(serde_json::json!({}));
        let relaying = |relay: ClassRelay| ResolvedClass {
            name: Some("behind-nat".into()),
            spec: CameraClassSpec {
                relay,
                ..CameraClassSpec::default()
            },
        };
        let browsers_only = Config {
            camera_pod_turn_urls: vec!["turns:turn.example:443?transport=tcp".into()],
            ..config()
        };
        let udp = Config {
            camera_pod_turn_urls: vec!["turn:turn.example:3478?transport=udp".into()],
            ..config()
        };
        for relay in [ClassRelay::Also, ClassRelay::Only] {
            for without in [config(), browsers_only.clone()] {
                let err = check(&session, &relaying(relay), &without).expect_err("no relay");
                assert_eq!(err.reason(), "RelayNotConfigured");
                let message = err.to_string();
                assert!(
                    message.contains("--camera-pod-turn-urls")
                        && message.contains("behind-nat")
                        && message.contains(&format!("{relay:?}")),
                    "{message}"
                );
            }
            assert_eq!(check(&session, &relaying(relay), &udp), Ok(()));
        }
        // A class that does not relay needs none.
        assert_eq!(
            check(&session, &relaying(ClassRelay::Off), &config()),
            Ok(())
        );
        // The relay is checked before what the session asks for: the class is at fault.
        let blur_only = ResolvedClass {
            spec: CameraClassSpec {
                allowed_filters: vec![FilterName::SelfieBlur],
                ..relaying(ClassRelay::Only).spec
            },
            ..relaying(ClassRelay::Only)
        };
        let style = spec(serde_json::json!({"filter": {"name": "style", "styleIndex": 3}}));
        assert_eq!(
            check(&style, &blur_only, &config()).map_err(|e| e.reason()),
            Err(REASON_RELAY_NOT_CONFIGURED)
        );
    }
}
