//! Typed `+CMS ERROR` (27.005 3.2.5) and `+CME ERROR` (27.007 9.2) codes.
//!
//! The one decision the daemon takes on a send error is "retry later, maybe on another modem" or "fail the
//! message". The rule: an error about the *message or its recipient* (bad PDU, unassigned number,
//! destination out of service) is permanent, because no modem will do better; an error about *this modem
//! or the network right now* (busy, congested, not registered, memory full) is transient. The RP causes
//! that 24.011 Annex E gives for the *sending* subscriber (operator barring, not subscribed, not known to
//! the HLR) are a class of their own: no send from that SIM will succeed until its operator acts, but
//! another SIM's may.

/// Whether an error is worth retrying, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Transient,
    /// Our SIM's subscription refuses the send (barred for non-payment or as a suspected spammer, SMS
    /// not provisioned): retry on another modem, and stop giving this one jobs.
    Subscription,
    Permanent,
}

use ErrorClass::{Permanent, Subscription, Transient};

/// A `+CMS ERROR` code with its transient/permanent classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CmsError(pub u16);

/// Known CMS codes: 0-127 are RP causes (24.011 E.2), 128-255 TP-FCS values (23.040 9.2.3.22), 300-
/// are ME/SIM/network errors of 27.005. Codes missing here fall back to [`CmsError::class`]'s ranges.
const CMS_TABLE: &[(u16, &str, ErrorClass)] = &[
    (1, "unassigned (unallocated) number", Permanent),
    (8, "operator determined barring", Subscription),
    (10, "call barred", Subscription),
    (17, "network failure", Transient),
    (21, "short message transfer rejected", Permanent),
    (22, "memory capacity exceeded", Transient),
    (27, "destination out of service", Permanent),
    (28, "unidentified subscriber", Subscription),
    (29, "facility rejected", Subscription),
    (30, "unknown subscriber", Subscription),
    (38, "network out of order", Transient),
    (41, "temporary failure", Transient),
    (42, "congestion", Transient),
    (47, "resources unavailable, unspecified", Transient),
    (50, "requested facility not subscribed", Subscription),
    (69, "requested facility not implemented", Permanent),
    (
        81,
        "invalid short message transfer reference value",
        Permanent,
    ),
    (95, "invalid message, unspecified", Permanent),
    (96, "invalid mandatory information", Permanent),
    (
        97,
        "message type non-existent or not implemented",
        Permanent,
    ),
    (
        98,
        "message not compatible with short message protocol state",
        Permanent,
    ),
    (
        99,
        "information element non-existent or not implemented",
        Permanent,
    ),
    (111, "protocol error, unspecified", Permanent),
    (127, "interworking, unspecified", Permanent),
    (192, "SC busy", Transient),
    (193, "no SC subscription", Subscription),
    (194, "SC system failure", Transient),
    (195, "invalid SME address", Permanent),
    (196, "destination SME barred", Permanent),
    (197, "SM rejected-duplicate SM", Permanent),
    (208, "SIM SMS storage full", Transient),
    (300, "ME failure", Transient),
    (301, "SMS service of ME reserved", Transient),
    (302, "operation not allowed", Transient),
    (303, "operation not supported", Transient),
    (304, "invalid PDU mode parameter", Permanent),
    (305, "invalid text mode parameter", Permanent),
    (310, "SIM not inserted", Transient),
    (311, "SIM PIN required", Transient),
    (312, "PH-SIM PIN required", Transient),
    (313, "SIM failure", Transient),
    (314, "SIM busy", Transient),
    (315, "SIM wrong", Transient),
    (316, "SIM PUK required", Transient),
    (317, "SIM PIN2 required", Transient),
    (318, "SIM PUK2 required", Transient),
    (320, "memory failure", Transient),
    (321, "invalid memory index", Permanent),
    (322, "memory full", Transient),
    (330, "SMSC address unknown", Transient),
    (331, "no network service", Transient),
    (332, "network timeout", Transient),
    (340, "no +CNMA acknowledgement expected", Permanent),
    (500, "unknown error", Transient),
];

impl CmsError {
    pub fn from_code(code: u16) -> Self {
        CmsError(code)
    }

    /// Map a text-form error (`+CMS ERROR: SIM busy`, after `AT+CMEE=2`) to its code; unknown texts become
    /// 500 "unknown error", which is what the modem is saying.
    pub fn from_text(text: &str) -> Self {
        let text = text.trim();
        CMS_TABLE
            .iter()
            .find(|(_, name, _)| name.eq_ignore_ascii_case(text))
            .map_or(CmsError(500), |&(code, _, _)| CmsError(code))
    }

    pub fn code(&self) -> u16 {
        self.0
    }

    /// The 27.005 name of the error, when the code is a known one.
    pub fn description(&self) -> Option<&'static str> {
        CMS_TABLE
            .iter()
            .find(|(c, _, _)| *c == self.0)
            .map(|&(_, name, _)| name)
    }

    pub fn class(&self) -> ErrorClass {
        if let Some(&(_, _, class)) = CMS_TABLE.iter().find(|(c, _, _)| *c == self.0) {
            return class;
        }
        match self.0 {
            // Unlisted network causes and TP-FCS values concern the message: resending will not help.
            0..=299 => Permanent,
            // Unlisted ME codes and manufacturer-specific ones (512-) describe the modem's state.
            _ => Transient,
        }
    }

    /// Errors worth retrying later or on another modem (those about our SIM's subscription included).
    pub fn is_transient(&self) -> bool {
        self.class() != Permanent
    }

    /// The sending SIM's subscription refuses the send: the modem should get no more jobs.
    pub fn is_subscription(&self) -> bool {
        self.class() == Subscription
    }
}

impl std::fmt::Display for CmsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.description() {
            Some(name) => write!(f, "+CMS ERROR: {} ({name})", self.0),
            None => write!(f, "+CMS ERROR: {}", self.0),
        }
    }
}

/// A `+CME ERROR`, numeric (`AT+CMEE=1`) or, from modems that ignore that, text (`+CME ERROR: SIM busy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CmeError {
    Code(u16),
    /// A text we could not map to a code.
    Text(String),
}

const CME_TABLE: &[(u16, &str)] = &[
    (0, "phone failure"),
    (1, "no connection to phone"),
    (3, "operation not allowed"),
    (4, "operation not supported"),
    (5, "PH-SIM PIN required"),
    (10, "SIM not inserted"),
    (11, "SIM PIN required"),
    (12, "SIM PUK required"),
    (13, "SIM failure"),
    (14, "SIM busy"),
    (15, "SIM wrong"),
    (16, "incorrect password"),
    (17, "SIM PIN2 required"),
    (18, "SIM PUK2 required"),
    (20, "memory full"),
    (21, "invalid index"),
    (22, "not found"),
    (23, "memory failure"),
    (30, "no network service"),
    (31, "network timeout"),
    (32, "network not allowed - emergency calls only"),
    (100, "unknown"),
    (515, "device busy"),
];

impl CmeError {
    /// Parse the text after `+CME ERROR:`.
    pub fn parse(body: &str) -> Self {
        let body = body.trim();
        if let Ok(code) = body.parse::<u16>() {
            return CmeError::Code(code);
        }
        CME_TABLE
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(body))
            .map_or_else(
                || CmeError::Text(body.to_owned()),
                |&(code, _)| CmeError::Code(code),
            )
    }

    pub fn code(&self) -> Option<u16> {
        match self {
            CmeError::Code(code) => Some(*code),
            CmeError::Text(_) => None,
        }
    }

    /// SIM busy (14) or device busy (515): seen right after power-up, worth waiting for.
    pub fn is_busy(&self) -> bool {
        matches!(self, CmeError::Code(14 | 515))
    }

    /// The SIM wants a PIN or PUK (5, 11, 12, 17, 18).
    pub fn needs_pin(&self) -> bool {
        matches!(self, CmeError::Code(5 | 11 | 12 | 17 | 18))
    }
}

impl std::fmt::Display for CmeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CmeError::Code(code) => match CME_TABLE.iter().find(|(c, _)| c == code) {
                Some((_, name)) => write!(f, "+CME ERROR: {code} ({name})"),
                None => write!(f, "+CME ERROR: {code}"),
            },
            CmeError::Text(text) => write!(f, "+CME ERROR: {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_is_transient_our_barring_is_the_sims_a_bad_number_is_permanent() {
        for code in [38, 41, 42, 47, 192, 300, 314, 322, 331, 332, 500, 515, 600] {
            let error = CmsError::from_code(code);
            assert!(error.is_transient() && !error.is_subscription(), "{code}");
        }
        // 24.011 Annex E: causes about the sending subscriber. Another SIM may send the message.
        for code in [8, 10, 28, 29, 30, 50, 193] {
            let error = CmsError::from_code(code);
            assert!(error.is_transient() && error.is_subscription(), "{code}");
        }
        for code in [1, 21, 27, 195, 304, 321, 2, 250] {
            let error = CmsError::from_code(code);
            assert!(!error.is_transient() && !error.is_subscription(), "{code}");
        }
    }

    #[test]
    fn text_forms_map_to_codes() {
        assert_eq!(CmeError::parse(" SIM busy"), CmeError::Code(14));
        assert_eq!(CmeError::parse("515"), CmeError::Code(515));
        assert!(CmeError::parse("device busy").is_busy());
        assert_eq!(CmeError::parse("bogus"), CmeError::Text("bogus".into()));
        assert_eq!(CmsError::from_text("memory full"), CmsError(322));
        assert_eq!(CmsError::from_text("what"), CmsError(500));
        assert_eq!(CmsError(322).to_string(), "+CMS ERROR: 322 (memory full)");
    }
}
