//! AT protocol (3GPP TS 27.005/27.007): framing, response/URC parsing, command builders.
//!
//! CONTRACT STUB (to be implemented by the at work): keep these signatures.

/// A `+CMS ERROR` code (27.005 3.2.5) with its transient/permanent classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmsError(pub u16);

impl CmsError {
    pub fn from_code(code: u16) -> Self {
        CmsError(code)
    }

    /// Transient errors are worth retrying later or on another modem.
    pub fn is_transient(&self) -> bool {
        todo!()
    }
}
