use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// modemgate: an on-premises SMS gateway for USB GSM/LTE modems.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file; print every problem as PATH:LINE: message and exit 1 if there are errors.
    CheckConfig {
        /// The config file.
        #[arg(long, default_value = modemgate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { config } => modemgate::config::check::check_config_cli(&config),
    }
}
