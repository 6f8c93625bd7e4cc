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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pdu(command) => modemgate::cli::pdu::run(command, &mut std::io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", modemgate::cli::one_line(&error));
            ExitCode::FAILURE
        }
    }
}
