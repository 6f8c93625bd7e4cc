//! modemgate: an on-premises SMS gateway for USB GSM/LTE modems.
//!
//! # Layout
//! - [`pdu`]: 3GPP TS 23.040/23.038 SMS PDU codec (GSM 7-bit, UCS-2, UDH, SUBMIT/DELIVER/STATUS-REPORT).
//! - [`at`]: AT protocol framing, response and URC parsing, command builders.
//! - [`modem`]: one worker per modem over tokio-serial, and its contract with the daemon ([`modem::job`]).
//! - [`rules`]: collections-safety rules (opt-out keywords, quiet hours, contact caps), pure functions.
//! - [`cli`]: the subcommands of the `modemgate` binary, one library function each.

pub mod at;
pub mod cli;
pub mod modem;
pub mod pdu;
pub mod rules;
