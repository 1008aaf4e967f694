//! `operator`: the p2pcamera Kubernetes operator.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "p2pcamera operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CameraSession CRD as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", p2pcamera_operator::crd::crd_yaml()?),
    }
    Ok(())
}
