//! `operator`: the p2pcamera Kubernetes operator.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use p2pcamera_operator::{admin, config::Config, controller, crd, telemetry};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "p2pcamera operator")]
struct Cli {
    /// Log format.
    #[arg(long, env = "P2PCAMERA_LOG_FORMAT", value_enum, default_value = "plain", global = true)]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (leader-elected) with its admin server.
    Run {
        #[command(flatten)]
        config: Config,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, env = "P2PCAMERA_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
        metrics_listen: SocketAddr,
    },
    /// Print the CameraSession CRD as YAML.
    Crd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", crd::crd_yaml()?),
        Command::Run { config, metrics_listen } => {
            telemetry::init(cli.log_format, "info");
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = kube::Client::try_default().await?;
            let state = admin::AdminState::default();
            let listener = tokio::net::TcpListener::bind(metrics_listen).await?;
            tracing::info!(addr = %listener.local_addr()?, "admin server listening");
            let shutdown = CancellationToken::new();
            let admin_shutdown = shutdown.clone();
            let admin_app = admin::app(state.clone());
            let admin_server = tokio::spawn(async move {
                axum::serve(listener, admin_app)
                    .with_graceful_shutdown(async move { admin_shutdown.cancelled().await })
                    .await
            });
            let signal_shutdown = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutting down");
                signal_shutdown.cancel();
            });
            controller::run(client, config, state, shutdown.clone()).await?;
            shutdown.cancel();
            admin_server.await??;
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
