//! The subcommands of the `modemgate` binary, as library functions: `main.rs` only parses arguments and calls
//! one function per subcommand, so everything here can be tested without spawning a process.

pub mod client;
pub mod detect;
pub mod pdu;
pub mod send;
pub mod status;

/// An error as the single stderr line the CLI contract promises: the whole cause chain, newlines flattened.
/// A cause its effect's message already quotes (our errors name their source in their own text, as log
/// lines need) is not repeated: "cannot lock X: Read-only file system", not that twice.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::from("modemgate:");
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push(' ');
            line.push_str(&text);
            line.push(':');
        }
    }
    line.pop();
    line.replace(['\r', '\n'], " ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ReadOnlyFilesystem,
            "Read-only file system",
        );
        let quoted = anyhow::Error::new(crate::daemon::lock::LockError::Io {
            path: "/ro/gw.db.lock".into(),
            source: io,
        })
        .context("starting");
        assert_eq!(
            one_line(&quoted),
            "modemgate: starting: cannot lock /ro/gw.db.lock: Read-only file system"
        );
        let chained = anyhow::anyhow!("disk\nfull").context("opening the database");
        assert_eq!(
            one_line(&chained),
            "modemgate: opening the database: disk full"
        );
    }
}
