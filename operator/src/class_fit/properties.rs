//! Property tests of what a CameraSession creator controls: any spec the API server could store
//! (and arbitrary JSON besides) parses or fails cleanly, and a spec that parses is judged against
//! any class and turned into a pod without a panic, with every value it passes to camera-pod
//! within the class's ceilings.

use p2pcamera_api::pod_env;
use p2pcamera_api::relay::RelayCandidates;
use proptest::prelude::*;

use crate::class_fit::{self, EffectiveVideo, ResolvedClass};
use crate::crd::{CameraSession, CameraSessionSpec};
use crate::desired;
use crate::fixtures;
use serde_json::{Value, json};

const FILTERS: [&str; 8] = [
    "passthrough",
    "selfie-blur",
    "selfie-replace",
    "style",
    "pose",
    "body-parts",
    "custom",
    "sepia",
];

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Session specs shaped as users write them, with values in and out of every range.
fn session_spec() -> impl Strategy<Value = Value> {
    let number = prop_oneof![0u32..100, 100u32..5000, any::<u32>()];
    (
        prop::sample::select(FILTERS.to_vec()),
        prop::option::of(number.clone()),
        prop::option::of((number.clone(), number.clone(), number.clone())),
        prop::option::of(prop::collection::vec(
            prop::sample::select(vec!["VP8", "H264"]),
            0..3,
        )),
        prop::option::of("[a-z0-9.:-]{0,20}"),
        prop::option::of("(https|http)://[a-z.]{0,12}(:[0-9]{1,5})?/[a-z]{0,6}"),
        prop::option::of("[0-9a-f]{64}"),
        prop::option::of("[a-z0-9-]{1,20}"),
    )
        .prop_map(
            |(filter, index, video, codecs, _host, url, sha, class)| {
                let mut spec = json!({"filter": {"name": filter}});
                if let Some(index) = index {
                    spec["filter"]["styleIndex"] = json!(index);
                }
                if let Some((w, h, fps)) = video {
                    spec["video"] = json!({"maxWidth": w, "maxHeight": h, "maxFps": fps});
                    if let Some(codecs) = codecs {
                        spec["video"]["codecs"] = json!(codecs);
                    }
                }
                if let Some(url) = url {
                    spec["filter"]["model"] = json!({
                        "url": url, "sha256": sha.unwrap_or_default(),
                        "manifest": {"input": "x", "layout": "NCHW", "width": 8, "height": 8, "output": "image"},
                    });
                }
                if let Some(class) = class {
                    spec["className"] = json!(class);
                }
                spec
            },
        )
}

/// Classes with any allow-lists and ceilings.
fn class_spec() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(prop::sample::select(FILTERS[..7].to_vec()), 0..4),
        prop::collection::vec("[a-z.]{1,12}(:[0-9]{1,4})?", 0..3),
        prop::collection::vec("[0-9a-f]{64}", 0..2),
        prop::option::of((160u32..3841, 120u32..2161, 1u32..61)),
        prop::sample::select(vec!["Off", "Also", "Only"]),
    )
        .prop_map(|(mut filters, hosts, digests, video, relay)| {
            filters.sort_unstable();
            filters.dedup();
            let mut spec = json!({
                "allowedFilters": filters,
                "models": {"allowedHosts": hosts, "allowedDigests": digests},
                "relay": relay,
            });
            if let Some((w, h, fps)) = video {
                spec["video"] = json!({"maxWidth": w, "maxHeight": h, "maxFps": fps});
            }
            spec
        })
}

fn env_number(pod: &k8s_openapi::api::core::v1::Pod, name: &str) -> Option<u32> {
    pod.spec.as_ref()?.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .value
        .as_deref()?
        .parse()
        .ok()
}

proptest! {
    #![proptest_config(p2pcamera_tests::properties::config())]

    #[test]
    fn arbitrary_json_never_panics_the_spec_parser(value in any_json()) {
        let _ = serde_json::from_value::<CameraSessionSpec>(value);
    }

    #[test]
    fn a_parsed_spec_is_judged_and_built_without_panic_and_within_its_class(
        spec in session_spec(),
        class in class_spec(),
        turn_urls in prop::collection::vec(
            prop::sample::select(vec![
                "turn:turn.example:3478?transport=udp",
                "turns:turn.example:443?transport=tcp",
                "stun:turn.example:3478",
            ]),
            0..3,
        ),
    ) {
        let Ok(parsed) = serde_json::from_value::<CameraSessionSpec>(spec) else {
            return Ok(());
        };
        let class = ResolvedClass {
            name: Some("prop".into()),
            spec: serde_json::from_value(class).expect("generated classes parse"),
        };
        let config = crate::config::Config {
            camera_pod_turn_urls: turn_urls.into_iter().map(String::from).collect(),
            ..fixtures::config()
        };
        let fits = class_fit::check(&parsed, &class, &config).is_ok();
        let session: CameraSession = fixtures::session(serde_json::to_value(&parsed).unwrap());
        let pod = desired::build_pod(&session, &class, 40000, &config)
            .expect("a pod builds for any parsed spec");
        if fits {
            // A pod that relays starts: it has a TURN URL over UDP (camera-pod refuses none).
            let relays = RelayCandidates::from(class.spec.relay).gathers_relay();
            let env = |name| pod.spec.as_ref().and_then(|spec| {
                spec.containers[0].env.iter().flatten().find(|e| e.name == name)?.value.clone()
            });
            prop_assert_eq!(env(pod_env::RELAY_CANDIDATES).is_some(), relays);
            if relays {
                let urls = env(pod_env::TURN_URLS).unwrap_or_default();
                prop_assert!(urls.split(',').any(p2pcamera_api::relay::is_udp_turn_url), "{urls}");
            }
            let video = EffectiveVideo::of(&parsed, &class);
            let ceilings = &class.spec.video.limits;
            for (name, limit) in [
                (pod_env::MAX_WIDTH, ceilings.max_width),
                (pod_env::MAX_HEIGHT, ceilings.max_height),
                (pod_env::MAX_FPS, ceilings.max_fps),
            ] {
                if let (Some(value), Some(limit)) = (env_number(&pod, name), limit) {
                    prop_assert!(value <= limit, "{name} {value} over the class's {limit}");
                }
            }
            prop_assert!(class.allows_filter(parsed.filter.name));
            prop_assert_eq!(video.max_decode, (1920, 1080));
            if let Some(model) = &parsed.filter.model {
                prop_assert!(class.model_policy().allows(&model.url, &model.sha256));
            }
        }
    }
}
