//! 3GPP TS 23.040 / 23.038 SMS PDU codec.
//!
//! CONTRACT STUB (to be implemented by the pdu work): the signatures below are what the simulator, the modem
//! worker and the API code against. Implementations may add items but must keep these.

use std::time::Duration;

/// Character set of the user data, from the TP-DCS alphabet bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Gsm7,
    Ucs2,
    #[serde(rename = "8bit")]
    EightBit,
}

/// What the caller asked for when encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodingChoice {
    /// GSM 7-bit when every character fits, else UCS-2.
    #[default]
    Auto,
    Gsm7,
    Ucs2,
}

/// Options for [`encode_submit`].
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub encoding: EncodingChoice,
    /// Replace look-alike Unicode with GSM characters before choosing the encoding.
    pub smart: bool,
    /// Set TP-SRR (ask the SMSC for a status report).
    pub status_report: bool,
    /// TP-MR to put in the PDU (modems usually overwrite it; `--ref` in the CLI).
    pub message_reference: u8,
    /// Concatenation reference for the UDH when the message needs several parts.
    pub concat_reference: u8,
    /// Relative validity period (TP-VPF = relative) when set.
    pub validity: Option<Duration>,
}

/// One encoded SMS-SUBMIT part ready for `AT+CMGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPart {
    /// TPDU octets, SMSC field excluded: the value for `AT+CMGS=<length>`.
    pub tpdu_length: usize,
    /// The whole PDU including the leading SMSC field (`00` = use the SIM's).
    pub bytes: Vec<u8>,
}

impl EncodedPart {
    /// Upper-case hex of [`EncodedPart::bytes`], as written to the modem.
    pub fn hex(&self) -> String {
        todo!()
    }
}

/// Result of the segment calculator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentInfo {
    pub encoding: Encoding,
    pub parts: usize,
    /// Characters (septets for GSM 7-bit, UTF-16 units for UCS-2) still free in the last part.
    pub remaining_in_last: usize,
    /// The text after smart replacement, as it will be sent.
    pub text: String,
}

/// Decoded address (TP-OA / TP-DA / TP-RA / SMSC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub type_of_number: u8,
    pub numbering_plan: u8,
    /// `+` followed by digits for international numbers, the plain digits otherwise, the decoded text for
    /// alphanumeric addresses.
    pub value: String,
}

/// Concatenation information from the UDH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concat {
    pub reference: u16,
    pub part: u8,
    pub parts: u8,
}

/// User data as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserData {
    Text(String),
    Binary(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deliver {
    pub sender: Address,
    pub timestamp: jiff::Zoned,
    pub encoding: Encoding,
    pub concat: Option<Concat>,
    pub user_data: UserData,
    pub status_report_indication: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Submit {
    pub reference: u8,
    pub recipient: Address,
    pub encoding: Encoding,
    pub concat: Option<Concat>,
    pub user_data: UserData,
    pub status_report_request: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// TP-MR of the message reported on.
    pub reference: u8,
    pub recipient: Address,
    pub submitted: jiff::Zoned,
    pub discharged: jiff::Zoned,
    /// TP-ST.
    pub status: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tpdu {
    Deliver(Deliver),
    Submit(Submit),
    StatusReport(StatusReport),
}

/// A whole PDU as modems print it: SMSC field then TPDU.
#[derive(Debug, Clone, PartialEq)]
pub struct Pdu {
    pub smsc: Option<Address>,
    pub tpdu: Tpdu,
}

/// A decoding/encoding failure naming the field and offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("placeholder")]
    Placeholder,
}

/// Decode a PDU given as hex (SMSC field included), as printed in +CMGR/+CMGL/+CMT/+CDS.
pub fn decode_hex(_hex: &str) -> Result<Pdu, PduError> {
    todo!()
}

/// Decode a PDU from raw octets (SMSC field included).
pub fn decode(_bytes: &[u8]) -> Result<Pdu, PduError> {
    todo!()
}

/// Encode a text into one or more SMS-SUBMIT PDUs for `to` (`+E164`, national digits or a short code).
pub fn encode_submit(
    _to: &str,
    _text: &str,
    _opts: &SubmitOptions,
) -> Result<Vec<EncodedPart>, PduError> {
    todo!()
}

/// The segment calculator the API reports to clients.
pub fn segments(
    _text: &str,
    _encoding: EncodingChoice,
    _smart: bool,
) -> Result<SegmentInfo, PduError> {
    todo!()
}

/// Encode SMS-DELIVER PDUs (SMSC field included) as a network would deliver `text` from `sender`
/// (a number or an alphanumeric sender): used by the simulator to inject inbound messages.
pub fn encode_deliver(
    _smsc: Option<&str>,
    _sender: &str,
    _text: &str,
    _encoding: EncodingChoice,
    _timestamp: &jiff::Zoned,
    _concat_reference: u8,
) -> Result<Vec<Vec<u8>>, PduError> {
    todo!()
}

/// Encode an SMS-STATUS-REPORT PDU (SMSC field included): used by the simulator.
pub fn encode_status_report(
    _smsc: Option<&str>,
    _reference: u8,
    _recipient: &str,
    _submitted: &jiff::Zoned,
    _discharged: &jiff::Zoned,
    _status: u8,
) -> Result<Vec<u8>, PduError> {
    todo!()
}
