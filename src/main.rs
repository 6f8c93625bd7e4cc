//! The `modemgate` binary: parse the command line, call the library, report errors as one line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "modemgate",
    version,
    about = "On-premises SMS gateway for USB GSM/LTE modems"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode and decode SMS PDUs.
    #[command(subcommand)]
    Pdu(modemgate::cli::pdu::PduCommand),
    /// Simulate modems on pseudo-terminals, print their device paths, serve until interrupted.
    Simulate(modemgate::sim::cli::SimulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pdu(command) => modemgate::cli::pdu::run(command, &mut std::io::stdout().lock()),
        Command::Simulate(args) => {
            init_tracing();
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| Ok(rt.block_on(modemgate::sim::cli::run(args))?))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", modemgate::cli::one_line(&error));
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}
