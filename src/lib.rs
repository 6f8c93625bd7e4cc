//! modemgate: an on-premises SMS gateway for USB GSM/LTE modems.
//!
//! # Layout
//! - [`pdu`]: 3GPP TS 23.040/23.038 SMS PDU codec (GSM 7-bit, UCS-2, UDH, SUBMIT/DELIVER/STATUS-REPORT).
//! - [`at`]: AT protocol framing, response and URC parsing, command builders.
//! - [`modem`]: one worker per modem over tokio-serial, and its contract with the daemon ([`modem::job`]).
//! - [`store`]: SQLite store: durable accept with group commit, message life cycle, events, inbound, caps.
//! - [`dispatch`]: which pending message goes to which modem, when: limits, caps, stickiness, retries.

pub mod at;
pub mod dispatch;
pub mod modem;
pub mod pdu;
pub mod store;
