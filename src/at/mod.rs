//! AT protocol (3GPP TS 27.005/27.007): framing, response/URC parsing, command builders.
//!
//! The pipeline the modem session runs on every read: bytes → [`Framer`] → [`Frame`] → [`parse_line`] →
//! [`Line`], then the typed parsers in [`response`] on the lines it decides are answers. Nothing here does
//! I/O or keeps conversation state, so all of it is tested on the corpus of real modem output.
//!
//! - [`framing`]: lines and the `> ` prompt from a byte stream.
//! - [`line`](mod@line): final results, URCs, information responses.
//! - [`response`]: typed `+CMGS`, `+CMGL`/`+CMGR` headers, `+CSQ`, `+CREG` family, `+COPS`, `+CPMS`,
//!   `+CPIN`, `+CSCA`, `+CNMI=?`.
//! - [`errors`]: `+CMS`/`+CME` codes and their transient/permanent classification.
//! - [`command`]: command builders.

pub mod command;
pub mod errors;
mod fields;
pub mod framing;
pub mod line;
pub mod response;

pub use errors::{CmeError, CmsError, ErrorClass};
pub use framing::{Frame, Framer};
pub use line::{CallResult, Final, Info, Line, Urc, parse_line};

/// A response line that does not have the shape its command promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {what} response {line:?}: {reason}")]
pub struct ParseError {
    /// The response prefix, e.g. `+CREG`.
    pub what: &'static str,
    pub line: String,
    pub reason: &'static str,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, line: &str, reason: &'static str) -> Self {
        ParseError {
            what,
            line: line.to_owned(),
            reason,
        }
    }
}
