//! The subcommands of the `modemgate` binary, as library functions: `main.rs` only parses arguments and calls
//! one function per subcommand, so everything here can be tested without spawning a process.

pub mod client;
pub mod detect;
pub mod pdu;
pub mod send;
pub mod status;

/// An error as the single stderr line the CLI contract promises: the whole cause chain, newlines flattened.
pub fn one_line(error: &anyhow::Error) -> String {
    format!("modemgate: {error:#}").replace(['\r', '\n'], " ")
}

/// Run an async subcommand on a runtime of its own: the operator commands are short-lived clients that need
/// no worker threads.
pub fn block_on(
    command: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}
