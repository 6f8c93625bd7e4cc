//! What can go wrong in the codec. Every decoding error names the TPDU field and the octet offset (counted
//! from the start of the PDU, SMSC field included) so a log line points at the exact byte of a bad modem reply.

/// A decoding/encoding failure naming the field and offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The hex string has an odd number of digits, so it cannot be octets.
    #[error("PDU hex has an odd number of digits ({digits})")]
    OddHexLength { digits: usize },
    /// A character that is not a hex digit.
    #[error("PDU hex has a non-hex character {character:?} at position {position}")]
    NotHex { character: char, position: usize },
    /// The PDU ends inside a field.
    #[error("{field} at octet {offset}: needs {needed} octet(s), only {available} left")]
    Truncated {
        field: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// A field holds a value the specification does not allow.
    #[error("{field} at octet {offset}: {reason}")]
    Invalid {
        field: &'static str,
        offset: usize,
        reason: String,
    },
    /// A valid value this codec deliberately does not handle (e.g. compressed user data).
    #[error("{field} at octet {offset}: {what} is not supported")]
    Unsupported {
        field: &'static str,
        offset: usize,
        what: String,
    },
    /// A number or sender given to an encoder cannot be put in an address field.
    #[error("address {address:?}: {reason}")]
    BadAddress {
        address: String,
        reason: &'static str,
    },
    /// GSM 7-bit was forced but the text holds a character outside GSM 03.38.
    #[error("character {character:?} at position {position} is not in the GSM 7-bit alphabet")]
    NotGsm7 { character: char, position: usize },
    /// The text does not fit the 255 parts one concatenation reference can number.
    #[error("the text needs {parts} parts; a concatenated SMS holds at most 255")]
    TooManyParts { parts: usize },
    /// A time stamp an encoder was given cannot be expressed in the 7-octet TP-SCTS format.
    #[error("time stamp {timestamp}: {reason}")]
    BadTimestamp {
        timestamp: String,
        reason: &'static str,
    },
}

impl PduError {
    pub(crate) fn invalid(field: &'static str, offset: usize, reason: impl Into<String>) -> Self {
        PduError::Invalid {
            field,
            offset,
            reason: reason.into(),
        }
    }
}
