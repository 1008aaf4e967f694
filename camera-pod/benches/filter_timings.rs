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

use camera_pod::filter::spec::DEFAULT_BACKGROUND;
use camera_pod::filter::{Background, FilterArgs, FilterError, FilterFactory, FilterSpec};
use camera_pod::frame::VideoFrame;
use clap::Parser;

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
fn cases() -> [(FilterSpec, u32, u32); 5] {
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
    ]
}

/// Times `runs` applications of each case's filter to a mid-grey picture (a model's cost does not
/// depend on what the picture shows).
fn measure(factory: &FilterFactory, runs: u32) -> Result<Vec<Timing>, FilterError> {
    let mut timings = Vec::new();
    for (spec, width, height) in cases() {
        let mut filter = factory.build(&spec)?;
        let original = VideoFrame::filled(width, height, 128, 128, 128);
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

fn report(factory: &FilterFactory, runs: u32, timings: &[Timing]) -> String {
    let profile = if cfg!(debug_assertions) {
        "debug build (the budgets are for optimised builds)"
    } else {
        "optimised build"
    };
    let mut lines = vec![
        format!(
            "Filter timings: the filter alone on a mid-grey picture, {runs} runs each; {profile}, \
             execution provider {}, {} intra-op threads.",
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
            t.spec.name(),
            t.width,
            t.height,
            t.ms_per_frame
        ));
    }
    lines.join("\n")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = FilterFactory::new(&cli.filter).and_then(|factory| {
        let timings = measure(&factory, cli.runs)?;
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
