//! modemgate: an on-premises SMS gateway for USB GSM/LTE modems.
//!
//! # Layout
//! - [`pdu`]: 3GPP TS 23.040/23.038 SMS PDU codec (GSM 7-bit, UCS-2, UDH, SUBMIT/DELIVER/STATUS-REPORT).

pub mod pdu;
