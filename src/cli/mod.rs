//! The subcommands of the `modemgate` binary, as library functions: `main.rs` only parses arguments and calls
//! one function per subcommand, so everything here can be tested without spawning a process.

pub mod pdu;

/// An error as the single stderr line the CLI contract promises: the whole cause chain, newlines flattened.
pub fn one_line(error: &anyhow::Error) -> String {
    format!("modemgate: {error:#}").replace(['\r', '\n'], " ")
}
