//! `camera-pod`: parse the configuration, set up logging, run the server until SIGTERM or Ctrl-C.
//! An error that stops it is printed and written as the container's termination message.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use camera_pod::config::{Args, LogFormat};

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format);
    let termination_log = args.termination_log.clone();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            write_termination_message(&termination_log, &format!("{error:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a TLS crypto provider was already installed"))?;
    args.validate()?;
    camera_pod::server::run(args, shutdown())
        .await
        .context("camera-pod failed")
}

/// The shared shutdown signal, logged when it comes.
async fn shutdown() {
    p2pcamera_api::shutdown::signal().await;
    tracing::info!("SIGTERM or Ctrl-C received; stopping");
}

/// Writes `message` to `path` when it exists (the kubelet creates it in every container), so the
/// pod's status, and the operator's `Failed` condition, say why the container stopped.
fn write_termination_message(path: &Path, message: &str) {
    if path.exists()
        && let Err(error) = std::fs::write(path, message)
    {
        eprintln!(
            "writing the termination message to {}: {error}",
            path.display()
        );
    }
}
