//! `operator`: the p2pcamera Kubernetes operator.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use p2pcamera_operator::runtime::{admin, lease, shutdown, telemetry};
use p2pcamera_operator::{acme, config::Config, controller, crd, router};

#[derive(Parser)]
#[command(version, about = "p2pcamera operator")]
struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "P2PCAMERA_LOG_FORMAT",
        value_enum,
        default_value = "plain",
        global = true
    )]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once at start-up")]
enum Command {
    /// Run the controller (leader-elected) with its admin server.
    Run {
        #[command(flatten)]
        config: Config,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, env = "P2PCAMERA_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
        metrics_listen: SocketAddr,
        #[command(flatten)]
        acme: acme::AcmeArgs,
    },
    /// Run the router: the HTTPS front door that forwards offers to camera pods.
    Router(router::RouterArgs),
    /// Print a CRD as YAML.
    Crd {
        /// Which resource's CRD.
        #[arg(long, value_enum, default_value_t = CrdKind::CameraSession)]
        kind: CrdKind,
    },
}

/// The custom resources p2pcamera defines.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CrdKind {
    /// `camerasessions.p2pcamera.io`.
    CameraSession,
    /// `cameraclasses.p2pcamera.io`.
    CameraClass,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { kind } => print!(
            "{}",
            match kind {
                CrdKind::CameraSession => crd::crd_yaml()?,
                CrdKind::CameraClass => crd::class_crd_yaml()?,
            }
        ),
        Command::Run {
            config,
            metrics_listen,
            acme,
        } => {
            telemetry::init(cli.log_format, "info");
            config.validate()?;
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = kube::Client::try_default().await?;
            let shutdown = shutdown::on_signal();
            let state = admin::AdminState::default();
            let listener = tokio::net::TcpListener::bind(metrics_listen).await?;
            tracing::info!(addr = %listener.local_addr()?, "admin server listening");
            let admin_server =
                tokio::spawn(admin::serve(listener, state.clone(), shutdown.clone()));
            // ACME orders run on their own Lease, so only one replica orders at a time.
            let (acme_leading_tx, acme_leading) = tokio::sync::watch::channel(false);
            let acme_lease = format!("{}-acme", config.lease_name);
            let acme_elector = lease::LeaderElector::new(
                client.clone(),
                &config.lease_namespace,
                &acme_lease,
                &config.identity(),
            );
            tokio::spawn(acme_elector.run(acme_leading_tx, shutdown.clone()));
            let acme_task = tokio::spawn(acme::run_while_leading(
                client.clone(),
                acme,
                acme_leading,
                shutdown.clone(),
            ));
            controller::run(client, config, state, shutdown.clone()).await?;
            shutdown.cancel();
            admin_server.await??;
            acme_task.await??;
        }
        Command::Router(args) => {
            telemetry::init(cli.log_format, "info");
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = kube::Client::try_default().await?;
            router::run(client, args, shutdown::on_signal()).await?;
        }
    }
    Ok(())
}
