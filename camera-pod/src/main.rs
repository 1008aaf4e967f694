//! `camera-pod`: parse the configuration, set up logging, run the server until SIGTERM/SIGINT.

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
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a TLS crypto provider was already installed"))?;
    args.validate()?;
    camera_pod::server::run(args, camera_pod::server::shutdown_signal())
        .await
        .context("camera-pod failed")
}
