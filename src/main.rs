//! The `modemgate` binary: parse the command line, call the library, report errors as one line.

use std::path::PathBuf;
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
    /// Run the gateway daemon.
    Serve {
        /// The config file.
        #[arg(long, default_value = modemgate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Encode and decode SMS PDUs.
    #[command(subcommand)]
    Pdu(modemgate::cli::pdu::PduCommand),
    /// Validate a config file; print every problem as PATH:LINE: message and exit 1 if there are errors.
    CheckConfig {
        /// The config file.
        #[arg(long, default_value = modemgate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Simulate modems on pseudo-terminals, print their device paths, serve until interrupted.
    Simulate(modemgate::sim::cli::SimulateArgs),
    /// The modems and the queue at a glance, from the running daemon.
    Status(modemgate::cli::status::StatusArgs),
    /// Send a test message through the running daemon's API.
    Send(modemgate::cli::send::SendArgs),
    /// Find and set up modems.
    #[command(subcommand)]
    Modems(modemgate::cli::detect::ModemsCommand),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve { config } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(modemgate::daemon::serve(&config))),
        Command::Pdu(command) => modemgate::cli::pdu::run(command, &mut std::io::stdout().lock()),
        Command::CheckConfig { config } => {
            return modemgate::config::check::check_config_cli(&config);
        }
        Command::Simulate(args) => modemgate::logging::init(&Default::default())
            .map_err(anyhow::Error::from)
            .and_then(|()| tokio::runtime::Runtime::new().map_err(anyhow::Error::from))
            .and_then(|rt| Ok(rt.block_on(modemgate::sim::cli::run(args))?)),
        Command::Status(args) => {
            modemgate::cli::block_on(modemgate::cli::status::run(args, &mut std::io::stdout()))
        }
        Command::Send(args) => {
            modemgate::cli::block_on(modemgate::cli::send::run(args, &mut std::io::stdout()))
        }
        Command::Modems(modemgate::cli::detect::ModemsCommand::Detect(args)) => {
            modemgate::cli::block_on(modemgate::cli::detect::run(args, &mut std::io::stdout()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `modemgate status | head -3`: the reader has what it wanted; no error to report.
        Err(error) if reader_went_away(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", modemgate::cli::one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// Whether the command failed only because whoever reads its output closed the pipe.
fn reader_went_away(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
