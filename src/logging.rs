//! Logging to stderr, which systemd's journal collects under the unit (no journald socket needed, so it
//! works the same in CI and in a terminal).
//!
//! # What may be logged
//! Collection-agency SMS logs are personal data kept under retention rules, and the logs are not where
//! they are kept. So:
//! - phone numbers appear only through [`Msisdn::masked`](crate::msisdn::Msisdn::masked) (or `{:?}`,
//!   which masks): `+1415***6431`;
//! - message text is never logged at `info` or above; at `debug`/`trace` it may appear, for field
//!   debugging on a box the operator controls;
//! - tokens, PINs and webhook secrets are never logged (their types' `Debug` hides them).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFilter;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` is set but not a valid filter.
    #[error("invalid RUST_LOG: {0}")]
    BadEnv(String),
    /// A global subscriber was already installed (a second `init` in one process).
    #[error("logging already initialised: {0}")]
    AlreadyInitialised(String),
}

/// Install the global subscriber: `RUST_LOG` when set (operators debugging one run), otherwise the
/// config's `[logging] level`. Colours only on a terminal, so the journal gets plain text.
pub fn init(level: &LogFilter) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| LoggingError::BadEnv(e.to_string()))?
        }
        _ => EnvFilter::new(level.as_str()),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| LoggingError::AlreadyInitialised(e.to_string()))
}
