//! Filters with the real ONNX Runtime and the vendored models.
//!
//! Needs libonnxruntime: run `camera-pod/scripts/fetch-onnxruntime.sh` first. The library is
//! found through P2PCAMERA_ONNXRUNTIME_LIB, ORT_DYLIB_PATH or the script's cache path.

mod common;

use std::path::{Path, PathBuf};

use camera_pod::filter::composite::rgb_to_yuv;
use camera_pod::filter::runtime::{ExecutionProvider, provider_candidates};
use camera_pod::filter::source::sha256_hex;
use camera_pod::filter::tensor::Rgb;
use camera_pod::filter::{
    ExecutionProviderChoice, Filter, FilterArgs, FilterError, FilterFactory, FilterSpec,
};
use camera_pod::frame::VideoFrame;
use clap::Parser;
use common::model_server::{ModelRoute, ModelServer};
use p2pcamera_api::pod_env;

const SQUARE_SELFIE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/selfie_segmentation.onnx"
);
const SQUARE_SELFIE_SHA256: &str =
    "a57e71d778e49eade6e8d54e75ad31d2be6f6d481e9f23a162c825a2a8f1d886";

/// The manifest shipped for the square selfie model: shows the mask itself (white = person).
const SHOW_MASK_MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/selfie_segmentation.manifest.yaml"
);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    filter: FilterArgs,
}

fn onnxruntime_lib() -> PathBuf {
    let path = std::env::var_os(pod_env::ONNXRUNTIME_LIB)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/p2pcamera/onnxruntime-1.32.0/libonnxruntime.so.1.32.0")
        });
    assert!(
        path.is_file(),
        "ONNX Runtime not found at {}: run camera-pod/scripts/fetch-onnxruntime.sh or set P2PCAMERA_ONNXRUNTIME_LIB",
        path.display()
    );
    path
}

/// Filter flags for tests: the real library, CPU, a private model cache.
fn args(cache: &Path, extra: &[&str]) -> FilterArgs {
    let lib = onnxruntime_lib();
    let mut argv = vec![
        "camera-pod".to_owned(),
        "--onnxruntime-lib".into(),
        lib.display().to_string(),
        "--execution-provider".into(),
        "cpu".into(),
        "--intra-op-threads".into(),
        "1".into(),
        "--model-cache-dir".into(),
        cache.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Cli::try_parse_from(argv).expect("valid flags").filter
}

fn factory(cache: &Path) -> FilterFactory {
    FilterFactory::new(&args(cache, &[])).expect("ONNX Runtime starts")
}

/// A deterministic high-frequency texture: per-pixel noise in Y, U and V. Nothing in it looks
/// like a person, so a selfie model's mask is about 0 everywhere.
fn noise_frame(w: u32, h: u32) -> VideoFrame {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 32) as u8
    };
    let mut f = VideoFrame::filled(w, h, 0, 0, 0);
    f.y.iter_mut().for_each(|v| *v = 16 + next() % 220);
    f.u.iter_mut().for_each(|v| *v = 100 + next() % 56);
    f.v.iter_mut().for_each(|v| *v = 100 + next() % 56);
    f
}

/// A smooth colourful picture: gradients and a few blocks.
fn gradient_frame(w: u32, h: u32) -> VideoFrame {
    let mut f = VideoFrame::filled(w, h, 0, 0, 0);
    for y in 0..h {
        for x in 0..w {
            let block = ((x / 80) + (y / 80)) % 2 == 0;
            f.y[(y * w + x) as usize] = (30 + (x * 180 / w) + if block { 20 } else { 0 }) as u8;
        }
    }
    let cw = f.chroma_width();
    for y in 0..f.chroma_height() {
        for x in 0..cw {
            f.u[(y * cw + x) as usize] = (60 + y * 120 / f.chroma_height()) as u8;
            f.v[(y * cw + x) as usize] = (200 - x * 120 / cw) as u8;
        }
    }
    f
}

fn mean(plane: &[u8]) -> f64 {
    plane.iter().map(|&v| f64::from(v)).sum::<f64>() / plane.len() as f64
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x.abs_diff(y)))
        .sum::<f64>()
        / a.len() as f64
}

/// Fraction of pixels within `tolerance` of `value`.
fn fraction_near(plane: &[u8], value: u8, tolerance: u8) -> f64 {
    plane
        .iter()
        .filter(|&&v| v.abs_diff(value) <= tolerance)
        .count() as f64
        / plane.len() as f64
}

fn custom_spec(dir: &Path, model: &str, sha256: &str) -> Result<FilterSpec, FilterError> {
    args(
        dir,
        &[
            "--model",
            model,
            "--sha256",
            sha256,
            "--manifest",
            SHOW_MASK_MANIFEST,
        ],
    )
    .initial_spec()
}

#[test]
fn passthrough_returns_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut filter = factory(dir.path()).build(&FilterSpec::Passthrough).unwrap();
    assert_eq!(filter.name(), "passthrough");
    let original = noise_frame(320, 240);
    let mut frame = original.clone();
    filter.apply(&mut frame).unwrap();
    assert_eq!(frame, original);
}

#[test]
fn the_selfie_mask_of_a_texture_without_a_person_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let spec = custom_spec(dir.path(), SQUARE_SELFIE, SQUARE_SELFIE_SHA256).unwrap();
    let mut filter = factory(dir.path()).build(&spec).unwrap();
    let mut frame = noise_frame(640, 480);
    filter.apply(&mut frame).unwrap();
    // showMask: Y 16 = background, 235 = person.
    let background = fraction_near(&frame.y, 16, 20);
    assert!(
        background > 0.95,
        "only {:.1}% of the noise picture is background",
        background * 100.0
    );
    assert!(
        frame.u.iter().chain(&frame.v).all(|&c| c == 128),
        "the mask view has no colour"
    );
}

#[test]
fn selfie_blur_keeps_the_person_and_blurs_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut filter = factory(dir.path()).build(&FilterSpec::default()).unwrap();
    assert_eq!(filter.name(), "selfie-blur");
    let (original, frame, region) = blurred_person_frame(filter.as_mut(), "cpu");
    let person_change = mean_abs_diff(
        &select(&frame.y, &region, Region::Person),
        &select(&original.y, &region, Region::Person),
    );
    assert!(
        person_change < 3.0,
        "the person changed by {person_change:.1} on average"
    );
    let background = select(&frame.y, &region, Region::Background);
    let original_background = select(&original.y, &region, Region::Background);
    assert!(
        (mean(&background) - mean(&original_background)).abs() < 4.0,
        "blur keeps the brightness"
    );
    let person_before = hf_energy_in(&original.y, 640, &region, Region::Person);
    let person_after = hf_energy_in(&frame.y, 640, &region, Region::Person);
    assert!(
        person_after * 10 > person_before * 9,
        "the person stays sharp: {person_before} -> {person_after}"
    );
}

#[test]
fn selfie_replace_turns_the_background_green_and_keeps_the_person() {
    let dir = tempfile::tempdir().unwrap();
    let spec: FilterSpec = r##"{"filter":"selfie-replace","color":"#00ff00"}"##
        .parse()
        .unwrap();
    let mut filter = factory(dir.path()).build(&spec).unwrap();
    assert_eq!(filter.name(), "selfie-replace");
    let Figure {
        frame: original,
        region,
    } = person_frame(640, 480);
    let mut frame = original.clone();
    filter.apply(&mut frame).unwrap();
    let green = rgb_to_yuv(Rgb { r: 0, g: 255, b: 0 });
    let near = fraction_near(&select(&frame.y, &region, Region::Background), green.y, 6);
    assert!(
        near > 0.95,
        "only {:.1}% of the background is green",
        near * 100.0
    );
    let chroma_region: Vec<Region> = (0..frame.u.len())
        .map(|i| region[i / 320 * 2 * 640 + i % 320 * 2])
        .collect();
    for (plane, value) in [(&frame.u, green.u), (&frame.v, green.v)] {
        let near = fraction_near(&select(plane, &chroma_region, Region::Background), value, 6);
        assert!(
            near > 0.95,
            "only {:.1}% of the background chroma is green",
            near * 100.0
        );
    }
    let person_change = mean_abs_diff(
        &select(&frame.y, &region, Region::Person),
        &select(&original.y, &region, Region::Person),
    );
    assert!(
        person_change < 3.0,
        "the person changed by {person_change:.1} on average"
    );
}

#[test]
fn selfie_replace_with_a_picture_uses_the_picture() {
    let dir = tempfile::tempdir().unwrap();
    let picture = dir.path().join("bg.png");
    image::RgbImage::from_pixel(64, 48, image::Rgb([200, 30, 40]))
        .save(&picture)
        .unwrap();
    let spec = args(
        dir.path(),
        &[
            "--filter",
            "selfie-replace",
            "--background-image",
            picture.to_str().unwrap(),
        ],
    )
    .initial_spec()
    .unwrap();
    let mut filter = factory(dir.path()).build(&spec).unwrap();
    let mut frame = noise_frame(640, 360);
    filter.apply(&mut frame).unwrap();
    let red = rgb_to_yuv(Rgb {
        r: 200,
        g: 30,
        b: 40,
    });
    assert!(fraction_near(&frame.y, red.y, 6) > 0.95);
    assert!(fraction_near(&frame.v, red.v, 6) > 0.95);

    let missing = FilterSpec::SelfieReplace(camera_pod::filter::Background::Image(
        dir.path().join("none.png"),
    ));
    let err = factory(dir.path())
        .build(&missing)
        .err()
        .expect("a missing picture is an error")
        .to_string();
    assert!(err.contains("none.png"), "{err}");
}

#[test]
fn frame_size_changes_and_odd_sizes_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let factory = factory(dir.path());
    for spec in [
        FilterSpec::default(),
        "selfie-replace".parse().unwrap(),
        FilterSpec::Style { style: 1 },
    ] {
        let mut filter = factory.build(&spec).unwrap();
        for (w, h) in [
            (640, 480),
            (1, 1),
            (5, 3),
            (641, 479),
            (2, 720),
            (1280, 720),
            (0, 0),
        ] {
            let mut frame = noise_frame(w, h);
            filter
                .apply(&mut frame)
                .unwrap_or_else(|e| panic!("{} at {w}x{h}: {e}", spec.name()));
            assert_eq!(
                (frame.y.len(), frame.u.len()),
                (noise_frame(w, h).y.len(), noise_frame(w, h).u.len())
            );
        }
        // Planes that do not match the size are refused, not a panic.
        let mut broken = noise_frame(64, 48);
        broken.v.truncate(10);
        assert!(filter.apply(&mut broken).is_err(), "{}", spec.name());
    }
}

#[test]
fn style_changes_the_picture_and_styles_differ() {
    let dir = tempfile::tempdir().unwrap();
    let factory = factory(dir.path());
    let original = gradient_frame(640, 480);
    let mut styled = Vec::new();
    for style in [0, 7] {
        let spec: FilterSpec = format!(r#"{{"filter":"style","style":{style}}}"#)
            .parse()
            .unwrap();
        let mut filter = factory.build(&spec).unwrap();
        assert_eq!(filter.name(), "style");
        let mut frame = original.clone();
        filter.apply(&mut frame).unwrap();
        let changed = mean_abs_diff(&frame.y, &original.y)
            + mean_abs_diff(&frame.u, &original.u)
            + mean_abs_diff(&frame.v, &original.v);
        assert!(
            changed > 15.0,
            "style {style} changed the picture by only {changed:.1}"
        );
        styled.push(frame);
    }
    let between = mean_abs_diff(&styled[0].y, &styled[1].y)
        + mean_abs_diff(&styled[0].u, &styled[1].u)
        + mean_abs_diff(&styled[0].v, &styled[1].v);
    assert!(between > 8.0, "styles 0 and 7 differ by only {between:.1}");
}

#[test]
fn custom_model_file_with_the_right_checksum_runs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = custom_spec(
        dir.path(),
        SQUARE_SELFIE,
        &SQUARE_SELFIE_SHA256.to_uppercase(),
    )
    .unwrap();
    let mut filter = factory(dir.path()).build(&spec).unwrap();
    let mut frame = noise_frame(320, 240);
    filter.apply(&mut frame).unwrap();
    assert!(
        frame.y.iter().all(|&y| y < 60),
        "show-mask output of a texture is dark"
    );
}

#[test]
fn custom_model_file_with_a_wrong_checksum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = "0123456789abcdef".repeat(4);
    let spec = custom_spec(dir.path(), SQUARE_SELFIE, &wrong).unwrap();
    let err = factory(dir.path()).build(&spec).err().expect("refused");
    assert!(matches!(err, FilterError::ChecksumMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&wrong) && text.contains(SQUARE_SELFIE_SHA256),
        "{text}"
    );
}

#[test]
fn missing_model_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-model.onnx");
    let spec = custom_spec(dir.path(), missing.to_str().unwrap(), SQUARE_SELFIE_SHA256).unwrap();
    let err = factory(dir.path())
        .build(&spec)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("not found") && err.contains("no-such-model.onnx"),
        "{err}"
    );
}

#[test]
fn a_manifest_that_does_not_fit_the_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("wrong.yaml");
    let text = std::fs::read_to_string(SHOW_MASK_MANIFEST).unwrap();
    std::fs::write(&manifest, text.replace("activation_10", "segment_back")).unwrap();
    let spec = args(
        dir.path(),
        &[
            "--model",
            SQUARE_SELFIE,
            "--sha256",
            SQUARE_SELFIE_SHA256,
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    )
    .initial_spec()
    .unwrap();
    let err = factory(dir.path())
        .build(&spec)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("segment_back") && err.contains("activation_10"),
        "{err}"
    );
}

#[test]
fn missing_onnxruntime_library_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), &[]);
    a.onnxruntime_lib = Some(dir.path().join("libonnxruntime.so.0.0.0"));
    let err = FilterFactory::new(&a).expect_err("refused").to_string();
    assert!(
        err.contains("libonnxruntime.so.0.0.0") && err.contains("fetch-onnxruntime.sh"),
        "{err}"
    );
}

#[test]
fn factory_reports_its_execution_provider() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(dir.path());
    assert_eq!(f.execution_provider(), "cpu");
    assert!(!f.gpu_fallback());
    // Auto runs on a GPU provider compiled into this build when one works here, else on CPU (the
    // only choice without the cuda or tensorrt feature); either way it is no fallback, and the
    // filters it builds work.
    let mut a = args(dir.path(), &[]);
    a.execution_provider = ExecutionProviderChoice::Auto;
    let f = FilterFactory::new(&a).unwrap();
    let expected: Vec<&str> = provider_candidates(ExecutionProviderChoice::Auto)
        .into_iter()
        .chain([ExecutionProvider::Cpu])
        .map(ExecutionProvider::as_str)
        .collect();
    assert!(
        expected.contains(&f.execution_provider()),
        "{} is not one of {expected:?}",
        f.execution_provider()
    );
    assert!(!f.gpu_fallback());
    let mut filter = f.build(&FilterSpec::default()).unwrap();
    blurred_person_frame(filter.as_mut(), f.execution_provider());
}

/// Runs `filter` (a selfie-blur) on the 640x480 person picture and checks that the background
/// lost most of its detail; returns the picture before and after, and where the person is.
fn blurred_person_frame(
    filter: &mut dyn Filter,
    provider: &str,
) -> (VideoFrame, VideoFrame, Vec<Region>) {
    let Figure {
        frame: original,
        region,
    } = person_frame(640, 480);
    let mut frame = original.clone();
    filter.apply(&mut frame).unwrap();
    let before = hf_energy_in(&original.y, 640, &region, Region::Background);
    let after = hf_energy_in(&frame.y, 640, &region, Region::Background);
    assert!(
        after * 8 < before,
        "{provider}: background high-frequency energy {before} -> {after}"
    );
    (original, frame, region)
}

#[test]
fn https_model_is_downloaded_once_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(SQUARE_SELFIE).unwrap();
    let server = ModelServer::start(dir.path(), vec![ModelRoute::new("/models/seg.onnx", bytes)]);
    let url = server.url("/models/seg.onnx");
    let cache = dir.path().join("cache");
    let flags = |sha: &str, ca: bool| {
        let mut extra = vec![
            "--model",
            &url,
            "--sha256",
            sha,
            "--manifest",
            SHOW_MASK_MANIFEST,
            "--model-allowed-hosts",
            &server.host,
        ];
        if ca {
            extra.extend(["--model-ca-file", server.ca_file.to_str().unwrap()]);
        }
        let mut a = args(&cache, &extra);
        a.model_cache_dir = Some(cache.clone());
        a
    };

    // Without the extra CA the self-signed server is not trusted.
    let a = flags(SQUARE_SELFIE_SHA256, false);
    let err = FilterFactory::new(&a)
        .unwrap()
        .build(&a.initial_spec().unwrap())
        .err()
        .expect("untrusted")
        .to_string();
    assert!(
        err.contains("cannot download model") && err.contains(&url),
        "{err}"
    );

    // A wrong checksum is refused, names both hashes, and nothing is cached.
    let wrong = "ab".repeat(32);
    let a = flags(&wrong, true);
    let err = FilterFactory::new(&a)
        .unwrap()
        .build(&a.initial_spec().unwrap())
        .err()
        .expect("mismatch")
        .to_string();
    assert!(
        err.contains(&wrong) && err.contains(SQUARE_SELFIE_SHA256),
        "{err}"
    );
    assert!(!cache.join(format!("{wrong}.onnx")).exists());
    let hits_before = server.hits("/models/seg.onnx");

    // The right checksum: downloaded once, then served from the cache.
    let a = flags(SQUARE_SELFIE_SHA256, true);
    let factory = FilterFactory::new(&a).unwrap();
    let spec = a.initial_spec().unwrap();
    let mut first = factory.build(&spec).unwrap();
    assert_eq!(server.hits("/models/seg.onnx"), hits_before + 1);
    let cached = cache.join(format!("{SQUARE_SELFIE_SHA256}.onnx"));
    assert_eq!(
        sha256_hex(&std::fs::read(&cached).unwrap()),
        SQUARE_SELFIE_SHA256
    );
    let mut second = FilterFactory::new(&a).unwrap().build(&spec).unwrap();
    assert_eq!(
        server.hits("/models/seg.onnx"),
        hits_before + 1,
        "second build used the cache"
    );
    let (mut f1, mut f2) = (noise_frame(320, 240), noise_frame(320, 240));
    first.apply(&mut f1).unwrap();
    second.apply(&mut f2).unwrap();
    assert_eq!(f1, f2);

    // A corrupted cache entry is replaced by a fresh download.
    std::fs::write(&cached, b"garbage").unwrap();
    factory.build(&spec).unwrap();
    assert_eq!(server.hits("/models/seg.onnx"), hits_before + 2);
}

/// Where a pixel of [`person_frame`] lies, with a margin around the outline left out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Region {
    Person,
    Background,
    Edge,
}

/// A drawn head-and-shoulders figure (hair, skin, eyes, mouth, neck, shirt) in front of a wall
/// covered in fine noise. The selfie model segments it as a person; `region` says, for each
/// pixel, whether it is well inside the figure, well outside, or near the outline.
struct Figure {
    frame: VideoFrame,
    region: Vec<Region>,
}

fn person_frame(w: u32, h: u32) -> Figure {
    let (wf, hf) = (w as f32, h as f32);
    let (cx, cy) = (wf / 2.0, hf * 0.36);
    let (rx, ry) = (wf * 0.11, hf * 0.19);
    let shoulders = hf * 0.66;
    let head = |x: f32, y: f32| ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2);
    let torso_half = |y: f32| wf * 0.2 + (y - shoulders) * 0.6;
    let neck = |x: f32, y: f32| y > cy + ry * 0.8 && y < shoulders && (x - cx).abs() < rx * 0.45;
    // The figure's outline moved outwards by `margin` pixels (inwards when negative).
    let inside = |x: f32, y: f32, margin: f32| {
        let grown = |r: f32| (r + margin) / r;
        head(x, y) < grown(rx.min(ry)).powi(2)
            || (y + margin >= shoulders && (x - cx).abs() < torso_half(y.max(shoulders)) + margin)
            || (y > cy && y < shoulders + margin && (x - cx).abs() < rx * 0.45 + margin)
    };
    let colour = |r, g, b| rgb_to_yuv(Rgb { r, g, b });
    let (skin, hair, shirt, dark) = (
        colour(224, 172, 140),
        colour(50, 35, 25),
        colour(40, 60, 120),
        colour(30, 20, 20),
    );
    let pick = |x: f32, y: f32| {
        let hd = head(x, y);
        let eye = |ex: f32| ((x - ex).powi(2) + (y - (cy - ry * 0.1)).powi(2)).sqrt() < rx * 0.12;
        if hd < 1.0 {
            if y < cy - ry * 0.55 {
                return Some(hair);
            }
            if eye(cx - rx * 0.4) || eye(cx + rx * 0.4) {
                return Some(dark);
            }
            if (y - (cy + ry * 0.5)).abs() < ry * 0.05 && (x - cx).abs() < rx * 0.35 {
                return Some(dark);
            }
            return Some(skin);
        }
        if hd < 1.15 && y < cy {
            return Some(hair);
        }
        if neck(x, y) {
            return Some(skin);
        }
        if y >= shoulders && (x - cx).abs() < torso_half(y) {
            return Some(shirt);
        }
        None
    };
    let mut frame = noise_frame(w, h);
    // Soften the wall's noise around a light grey so it still reads as a wall.
    frame.y.iter_mut().for_each(|v| *v = 150 + *v % 60);
    let mut region = vec![Region::Edge; (w * h) as usize];
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f32 + 0.5, y as f32 + 0.5);
            let i = (y * w + x) as usize;
            if let Some(p) = pick(xf, yf) {
                // Fine texture on the person too (the wall's noise, scaled down), so blurring the
                // person would show.
                frame.y[i] =
                    (i32::from(p.y) + i32::from(frame.y[i] % 24) - 12).clamp(16, 235) as u8;
            }
            region[i] = if inside(xf, yf, -0.05 * hf) {
                Region::Person
            } else if !inside(xf, yf, 0.05 * hf) {
                Region::Background
            } else {
                Region::Edge
            };
        }
    }
    let cw = frame.chroma_width();
    for y in 0..frame.chroma_height() {
        for x in 0..cw {
            if let Some(p) = pick(x as f32 * 2.0 + 1.0, y as f32 * 2.0 + 1.0) {
                let i = (y * cw + x) as usize;
                frame.u[i] = p.u;
                frame.v[i] = p.v;
            }
        }
    }
    Figure { frame, region }
}

fn select(plane: &[u8], region: &[Region], want: Region) -> Vec<u8> {
    plane
        .iter()
        .zip(region)
        .filter(|(_, r)| **r == want)
        .map(|(v, _)| *v)
        .collect()
}

/// Sum of absolute differences between horizontal and vertical neighbours, counting only pairs
/// that both lie in `want`: high-frequency energy of a region.
fn hf_energy_in(plane: &[u8], w: usize, region: &[Region], want: Region) -> u64 {
    let mut e = 0u64;
    for (i, &v) in plane.iter().enumerate() {
        if region[i] != want {
            continue;
        }
        if (i + 1) % w != 0 && region[i + 1] == want {
            e += u64::from(v.abs_diff(plane[i + 1]));
        }
        if i + w < plane.len() && region[i + w] == want {
            e += u64::from(v.abs_diff(plane[i + w]));
        }
    }
    e
}

/// The public-domain portrait (scikit-image's `astronaut.png`, see tests/data/README.md) as an
/// I420 frame of its own size, 512x512.
fn portrait() -> VideoFrame {
    let img = image::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/astronaut.png"
    ))
    .expect("the portrait is vendored")
    .to_rgb8();
    let (w, h) = img.dimensions();
    camera_pod::filter::composite::cover_rgb_to_i420(img.as_raw(), w, h, w, h)
}

/// Runs a filter on the portrait `frames` times, 1/30 s apart (a still camera): the pose filters
/// find the person on the first frame and then track the region around them, as MediaPipe does.
fn on_portrait(filter: &mut dyn Filter, frames: u32) -> VideoFrame {
    let mut frame = portrait();
    for i in 0..frames {
        frame = portrait();
        frame.rtp_timestamp = i * 3000;
        filter.apply(&mut frame).unwrap();
    }
    frame
}

const POSE_LITE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/pose_landmark_lite.onnx"
);
const POSE_LITE_SHA256: &str = "cab5dfc13425e80e8156a50d9c4b7ac5b3404b170f95f2a4c162d4cd2838108c";
const POSE_MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/pose_landmark.manifest.yaml"
);

#[test]
fn pose_landmarks_land_on_the_portrait() {
    let dir = tempfile::tempdir().unwrap();
    let factory = factory(dir.path());
    for model in ["lite", "full"] {
        let spec: FilterSpec = format!(r#"{{"filter":"pose","model":"{model}"}}"#)
            .parse()
            .unwrap();
        let mut filter = factory.build_model(&spec).unwrap();
        let original = portrait();
        let drawn = on_portrait(&mut filter, 8);
        let points = filter.landmarks().expect("a person is found");
        let px = |i: usize| (points[i].x * 512.0, points[i].y * 512.0);
        let (nose, left_shoulder, right_shoulder) = (px(0), px(11), px(12));
        // The face spans about x 175..275, y 55..185 of the 512x512 portrait.
        assert!(
            (190.0..260.0).contains(&nose.0) && (95.0..165.0).contains(&nose.1),
            "{model}: nose at {nose:?}"
        );
        for (side, s) in [("left", left_shoulder), ("right", right_shoulder)] {
            assert!(
                s.1 > nose.1 + 40.0 && s.1 < 300.0,
                "{model}: {side} shoulder at {s:?}, nose at {nose:?}"
            );
        }
        // Not mirrored: the person's left (odd points) is on the picture's right.
        for (left, right) in [(2, 5), (7, 8), (11, 12)] {
            assert!(
                px(left).0 > px(right).0 + 20.0,
                "{model}: point {left} at {:?} is not right of point {right} at {:?}",
                px(left),
                px(right)
            );
        }
        assert!(points[0].visibility > 0.9 && points[11].visibility > 0.9);
        // The skeleton is drawn over the person: the shoulder line is the torso colour.
        let torso = rgb_to_yuv(Rgb {
            r: 0x9c,
            g: 0x27,
            b: 0xb0,
        });
        let mid = (
            ((left_shoulder.0 + right_shoulder.0) / 2.0) as usize,
            ((left_shoulder.1 + right_shoulder.1) / 2.0) as usize,
        );
        let c = mid.1 / 2 * 256 + mid.0 / 2;
        assert!(
            drawn.u[c].abs_diff(torso.u) < 12 && drawn.v[c].abs_diff(torso.v) < 12,
            "{model}: shoulder line at {mid:?} is ({}, {}), torso colour ({}, {})",
            drawn.u[c],
            drawn.v[c],
            torso.u,
            torso.v
        );
        let changed = drawn
            .y
            .iter()
            .zip(&original.y)
            .filter(|(a, b)| a != b)
            .count();
        assert!(
            changed > 2000 && changed < 512 * 512 / 5,
            "{model}: the skeleton changed {changed} pixels"
        );
    }
}

/// The part colours of the pose manifest, by name.
fn part_colours() -> Vec<(&'static str, Rgb)> {
    [
        ("head", "#ffd200"),
        ("torso", "#9c27b0"),
        ("left upper arm", "#ff3d00"),
        ("left forearm", "#ff80ab"),
        ("left hand", "#ffab40"),
        ("right upper arm", "#00b0ff"),
        ("right forearm", "#2962ff"),
        ("right hand", "#18ffff"),
        ("left thigh", "#aeea00"),
        ("left shin", "#8d6e63"),
        ("left foot", "#ff6f00"),
        ("right thigh", "#00e676"),
        ("right shin", "#1de9b6"),
        ("right foot", "#00796b"),
        ("background", "#000000"),
    ]
    .into_iter()
    .map(|(name, hex)| (name, hex.parse().unwrap()))
    .collect()
}

/// The part whose colour is nearest to the frame's pixel at (x, y).
fn part_at(frame: &VideoFrame, x: u32, y: u32) -> &'static str {
    let (l, c) = (
        (y * frame.width + x) as usize,
        (y / 2 * frame.chroma_width() + x / 2) as usize,
    );
    let (py, pu, pv) = (frame.y[l], frame.u[c], frame.v[c]);
    part_colours()
        .into_iter()
        .min_by_key(|(_, rgb)| {
            let q = rgb_to_yuv(*rgb);
            let d = |a: u8, b: u8| u32::from(a.abs_diff(b)).pow(2);
            d(py, q.y) + 4 * (d(pu, q.u) + d(pv, q.v))
        })
        .map(|(name, _)| name)
        .unwrap()
}

#[test]
fn body_parts_colour_head_torso_and_arms_on_the_portrait() {
    let dir = tempfile::tempdir().unwrap();
    let spec: FilterSpec = r##"{"filter":"body-parts","opacity":100,"color":"#000000"}"##
        .parse()
        .unwrap();
    let mut filter = factory(dir.path()).build(&spec).unwrap();
    assert_eq!(filter.name(), "body-parts");
    let frame = on_portrait(filter.as_mut(), 8);
    // Places on the portrait (512x512) and the parts they belong to. Her right arm hangs down
    // the picture's left edge; of her left arm only the upper part shows (the forearm is behind
    // the helmet on the right). The picture ends at her waist, so the model places hips and
    // thighs in the lowest part of the picture: the lap and the lowest part of the forearm
    // take thigh colours, and the places checked here stay above them.
    let expect: [(&str, (u32, u32), &[&str]); 7] = [
        ("hair", (225, 45), &["head"]),
        ("face", (222, 130), &["head"]),
        ("chest", (210, 250), &["torso"]),
        ("suit below the badge", (200, 320), &["torso"]),
        (
            "her right upper arm",
            (70, 270),
            &["right upper arm", "right forearm", "right hand"],
        ),
        (
            "her left shoulder and upper arm",
            (330, 300),
            &["left upper arm", "left forearm"],
        ),
        ("wall", (470, 60), &["background"]),
    ];
    for (what, (x, y), parts) in expect {
        let got = part_at(&frame, x, y);
        assert!(
            parts.contains(&got),
            "{what} at ({x}, {y}) is coloured as {got}, expected one of {parts:?}"
        );
    }
}

#[test]
fn pose_filters_draw_nothing_without_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let factory = factory(dir.path());
    for spec in ["pose", "body-parts"] {
        let mut filter = factory.build_model(&spec.parse().unwrap()).unwrap();
        for (w, h) in [(640, 480), (1280, 720)] {
            let original = noise_frame(w, h);
            for _ in 0..3 {
                let mut frame = original.clone();
                filter.apply(&mut frame).unwrap();
                assert!(
                    frame == original,
                    "{spec} at {w}x{h} changed a picture without a person"
                );
                assert!(filter.landmarks().is_none(), "{spec}");
            }
        }
    }
}

#[test]
fn the_pose_manifest_runs_as_a_custom_model_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |manifest: &str| {
        args(
            dir.path(),
            &[
                "--model",
                POSE_LITE,
                "--sha256",
                POSE_LITE_SHA256,
                "--manifest",
                manifest,
            ],
        )
        .initial_spec()
    };
    // The shipped manifest, as a user's own keypoint model, finds the portrait's nose.
    let mut custom = factory(dir.path())
        .build_model(&spec(POSE_MANIFEST).unwrap())
        .unwrap();
    on_portrait(&mut custom, 3);
    let nose = custom.landmarks().expect("a person")[0];
    assert!((0.35..0.5).contains(&nose.x), "{nose:?}");

    let text = std::fs::read_to_string(POSE_MANIFEST).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    // Refused when read: an edge to a point the output does not have, a bad colour.
    for (name, bad, needle) in [
        (
            "edge.yaml",
            text.replace("{from: 11, to: 13,", "{from: 11, to: 40,"),
            "skeleton edge 11-40 names a point beyond the 33 landmarks",
        ),
        (
            "colour.yaml",
            text.replace(r##""#ff3d00""##, "orange"),
            "bad colour `orange`",
        ),
        (
            "x.yaml",
            text.replace("  x: 0\n", "  x: 7\n"),
            "x is value 7",
        ),
    ] {
        let err = spec(&write(name, bad)).unwrap_err();
        assert!(matches!(err, FilterError::Manifest(_)), "{name}: {err}");
        let err = err.to_string();
        assert!(err.contains(needle) && err.contains(name), "{name}: {err}");
    }
    // Refused when the model is loaded: an output the model does not have.
    let missing = spec(&write(
        "presence.yaml",
        text.replace("{name: Identity_1,", "{name: pose_flag,"),
    ))
    .unwrap();
    let err = factory(dir.path())
        .build(&missing)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("pose_flag") && err.contains("Identity_1"),
        "{err}"
    );
}
