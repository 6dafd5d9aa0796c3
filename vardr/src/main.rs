use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// vardr: eBPF runtime security. Watches and enforces what processes may
/// open, execute and connect to, in the kernel.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: loads the BPF programs and prints one JSON event per
    /// line on stdout until SIGINT or SIGTERM, then detaches everything.
    /// Needs root.
    Agent,
    /// Report what this kernel supports (BTF, BPF LSM, program types,
    /// helpers, mounts) and which enforcement backend each hook gets, and why.
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("VARDR_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vardr: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Agent => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(vardr::agent::run(std::io::stdout().lock()))?;
        }
        Command::Probe { json } => {
            let report = vardr::probe::run();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", vardr::probe::table(&report));
            }
        }
    }
    Ok(())
}
