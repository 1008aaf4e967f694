//! Per-frame times of the built-in filters alone (no WebRTC, no codec): what one picture costs on
//! the filter thread, at the sizes a camera sends. Prints a Markdown table; `bench/bench.py` adds
//! it to the benchmark report. selfie-blur has a budget per size (12 ms up to 640x480, 30 ms
//! above, on an optimised build); the table says whether it was met.
//!
//!     cargo bench --workspace --bench filter_timings [-- --runs 20 --execution-provider cpu]
//!
//! Takes camera-pod's filter and ONNX Runtime flags (and their `P2PCAMERA_...` environment
//! variables) with the pod's defaults, so it measures what a pod configured the same way runs.

use std::process::ExitCode;
use std::time::Instant;

use camera_pod::filter::composite::cover_rgb_to_i420;
use camera_pod::filter::spec::{DEFAULT_BACKGROUND, DEFAULT_PARTS_OPACITY};
use camera_pod::filter::{
    Background, BodyParts, FilterArgs, FilterError, FilterFactory, FilterSpec, PoseModel,
};
use camera_pod::frame::VideoFrame;
use clap::Parser;
use image::{Rgb, RgbImage, imageops};

#[derive(Parser)]
#[command(about = "Per-frame times of camera-pod's built-in filters")]
struct Cli {
    /// Timed runs per filter and size (after one untimed warm-up run).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Passed by `cargo bench`; nothing to do.
    #[arg(long, hide = true)]
    bench: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// One measured filter at one size.
struct Timing {
    spec: FilterSpec,
    width: u32,
    height: u32,
    ms_per_frame: f64,
}

impl Timing {
    /// The per-frame budget, in milliseconds, where there is one.
    fn budget_ms(&self) -> Option<f64> {
        matches!(self.spec, FilterSpec::SelfieBlur { .. }).then_some(if self.width <= 640 {
            12.0
        } else {
            30.0
        })
    }
}

/// The filters and sizes measured.
fn cases() -> [(FilterSpec, u32, u32); 11] {
    let pose = |model| FilterSpec::Pose { model };
    let parts = FilterSpec::BodyParts(BodyParts {
        model: PoseModel::default(),
        opacity: DEFAULT_PARTS_OPACITY,
        background: None,
    });
    [
        (FilterSpec::default(), 640, 480),
        (FilterSpec::default(), 1280, 720),
        (
            FilterSpec::SelfieReplace(Background::Color(DEFAULT_BACKGROUND)),
            640,
            480,
        ),
        (FilterSpec::Style { style: 3 }, 640, 480),
        (FilterSpec::Style { style: 3 }, 1280, 720),
        (pose(PoseModel::Lite), 640, 480),
        (pose(PoseModel::Lite), 1280, 720),
        (pose(PoseModel::Full), 640, 480),
        (pose(PoseModel::Full), 1280, 720),
        (parts.clone(), 640, 480),
        (parts, 1280, 720),
    ]
}

/// The test portrait (a person from the head to the waist, `tests/data/astronaut.png`).
const PORTRAIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/astronaut.png");

/// The portrait scaled to the frame's height and centred between grey bars, as I420: what a
/// camera facing a person sends. The pose filters' cost depends on it (they track, draw and paint
/// a person; without one they only look for her), the other filters' does not.
fn portrait_frame(portrait: &RgbImage, width: u32, height: u32) -> VideoFrame {
    let side = height.min(width);
    let scaled = imageops::resize(portrait, side, side, imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([128, 128, 128]));
    imageops::overlay(&mut canvas, &scaled, i64::from((width - side) / 2), 0);
    cover_rgb_to_i420(canvas.as_raw(), width, height, width, height)
}

/// Times `runs` applications of each case's filter to the portrait, after one untimed run (in
/// which the pose filters find the person they then track).
fn measure(
    factory: &FilterFactory,
    portrait: &RgbImage,
    runs: u32,
) -> Result<Vec<Timing>, FilterError> {
    let mut timings = Vec::new();
    for (spec, width, height) in cases() {
        let mut filter = factory.build(&spec)?;
        let original = portrait_frame(portrait, width, height);
        let mut frame = original.clone();
        filter.apply(&mut frame)?;
        let started = Instant::now();
        for _ in 0..runs {
            frame.clone_from(&original);
            filter.apply(&mut frame)?;
        }
        let ms_per_frame = started.elapsed().as_secs_f64() * 1000.0 / f64::from(runs);
        timings.push(Timing {
            spec,
            width,
            height,
            ms_per_frame,
        });
    }
    Ok(timings)
}

/// The filter's name, with the pose model size where there is one.
fn label(spec: &FilterSpec) -> String {
    let model = match spec {
        FilterSpec::Pose { model } => Some(*model),
        FilterSpec::BodyParts(p) => Some(p.model),
        _ => None,
    };
    match model {
        Some(PoseModel::Lite) => format!("{} (lite)", spec.name()),
        Some(PoseModel::Full) => format!("{} (full)", spec.name()),
        None => spec.name().to_owned(),
    }
}

fn report(factory: &FilterFactory, runs: u32, timings: &[Timing]) -> String {
    let profile = if cfg!(debug_assertions) {
        "debug build (the budgets are for optimised builds)"
    } else {
        "optimised build"
    };
    let mut lines = vec![
        format!(
            "Filter timings: the filter alone on the test portrait (a person), {runs} runs each; \
             {profile}, execution provider {}, {} intra-op threads.",
            factory.execution_provider(),
            factory.intra_op_threads()
        ),
        String::new(),
        "| filter | size | ms per frame | budget ms | met |".to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];
    for t in timings {
        let (budget, met) = match t.budget_ms() {
            Some(budget) => (
                format!("{budget:.0}"),
                if t.ms_per_frame < budget { "yes" } else { "no" },
            ),
            None => ("-".to_owned(), "-"),
        };
        lines.push(format!(
            "| {} | {}x{} | {:.1} | {budget} | {met} |",
            label(&t.spec),
            t.width,
            t.height,
            t.ms_per_frame
        ));
    }
    lines.join("\n")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let portrait = match image::open(PORTRAIT) {
        Ok(picture) => picture.to_rgb8(),
        Err(error) => {
            eprintln!("filter_timings: {PORTRAIT}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = FilterFactory::new(&cli.filter).and_then(|factory| {
        let timings = measure(&factory, &portrait, cli.runs)?;
        Ok(report(&factory, cli.runs, &timings))
    });
    match result {
        Ok(table) => {
            println!("{table}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("filter_timings: {error}");
            ExitCode::FAILURE
        }
    }
}
