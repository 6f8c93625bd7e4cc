//! 3GPP TS 23.040 / 23.038 SMS PDU codec.
//!
//! The simulator, the modem worker and the API code against the functions and types here; the work is done in
//! one submodule per concern:
//! - `gsm7`: the GSM 03.38 alphabet and septet packing; `ucs2`: UTF-16 user data;
//! - `address`, `timestamp`, `udh`, `user_data`: the fields;
//! - `submit`, `deliver`, `status_report`: the three TPDUs;
//! - `segment`: splitting texts into parts, smart encoding, the segment calculator;
//! - `error`: [`PduError`], which names the field and octet offset of every decoding failure.
//!
//! Decoders never panic and never read out of bounds: all reads go through a checked cursor. Octets after
//! the end of the TPDU (as its own length fields place it) are ignored: some phones pad stored PDUs.

mod address;
mod deliver;
mod error;
mod gsm7;
mod reader;
mod segment;
mod status_report;
mod submit;
mod timestamp;
mod ucs2;
mod udh;
mod user_data;

pub use error::PduError;
pub use segment::{smart_replace, stray_control};
pub use status_report::StatusClass;
pub use timestamp::rfc3339;

use reader::Reader;

/// TP-UDHI, bit 6 of the first octet of every TPDU: the user data starts with a header.
const UDHI: u8 = 0x40;

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
        hex::encode_upper(&self.bytes)
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
    /// The SMSC's time stamp; `None` when it is no valid date (some networks send all `FF`): the message
    /// still counts, a STOP above all.
    pub timestamp: Option<jiff::Zoned>,
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
    /// The time stamps; `None` when one is no valid date, which must not cost the report its match.
    pub submitted: Option<jiff::Zoned>,
    pub discharged: Option<jiff::Zoned>,
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

/// Decode a PDU given as hex (SMSC field included), as printed in +CMGR/+CMGL/+CMT/+CDS.
/// Surrounding whitespace is ignored; either case of hex digit is accepted.
pub fn decode_hex(hex: &str) -> Result<Pdu, PduError> {
    decode(&hex_to_octets(hex.trim())?)
}

/// Value of each octet as a hex digit; [`NOT_HEX`] for every other octet.
const HEX_VALUE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};
const NOT_HEX: u8 = 0xFF;

fn hex_to_octets(hex: &str) -> Result<Vec<u8>, PduError> {
    let digits = hex.as_bytes();
    let value = |digit: u8| HEX_VALUE[usize::from(digit)];
    // One pass that converts and notes whether any digit was bad; the error path then finds the first.
    let mut seen = 0u8;
    let octets = digits
        .chunks_exact(2)
        .map(|pair| {
            let (high, low) = (value(pair[0]), value(pair[1]));
            seen |= high | low;
            high << 4 | low
        })
        .collect();
    let odd = !digits.len().is_multiple_of(2);
    if seen == NOT_HEX || odd {
        if let Some(at) = digits.iter().position(|&d| value(d) == NOT_HEX) {
            // Everything before the first non-hex octet is ASCII, so that octet starts a character and its
            // index among characters is its index among octets.
            let character = hex
                .get(at..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or('?');
            return Err(PduError::NotHex {
                character,
                position: at,
            });
        }
        return Err(PduError::OddHexLength {
            digits: digits.len(),
        });
    }
    Ok(octets)
}

/// `pdu_hex` (SMSC field included) with its SMSC field replaced by `smsc`, so the modem submits through that
/// centre instead of the SIM's (a SIM whose own is missing or wrong answers every send `+CMS ERROR: 330`).
/// The TPDU, and so the `AT+CMGS` length, is unchanged.
pub fn with_smsc(pdu_hex: &str, smsc: &str) -> Result<String, PduError> {
    let octets = hex_to_octets(pdu_hex.trim())?;
    let mut r = Reader::new(&octets);
    address::decode_smsc(&mut r)?;
    let tpdu = octets.get(r.offset()..).unwrap_or_default();
    let mut out = Vec::with_capacity(12 + tpdu.len());
    address::encode_smsc(&mut out, Some(smsc))?;
    out.extend_from_slice(tpdu);
    Ok(hex::encode_upper(out))
}

/// Decode a PDU from raw octets (SMSC field included).
pub fn decode(bytes: &[u8]) -> Result<Pdu, PduError> {
    let mut r = Reader::new(bytes);
    let smsc = address::decode_smsc(&mut r)?;
    let offset = r.offset();
    let first = r.u8("TP-MTI")?;
    let tpdu = match first & 0x03 {
        0 => Tpdu::Deliver(deliver::decode(&mut r, first)?),
        1 => Tpdu::Submit(submit::decode(&mut r, first)?),
        2 => Tpdu::StatusReport(status_report::decode(&mut r)?),
        _ => {
            return Err(PduError::invalid(
                "TP-MTI",
                offset,
                format!("message type 3 (first octet {first:02X}) is reserved"),
            ));
        }
    };
    Ok(Pdu { smsc, tpdu })
}

/// Encode a text into one or more SMS-SUBMIT PDUs for `to` (`+E164`, national digits or a short code).
///
/// Several parts carry an 8-bit concatenation UDH with `opts.concat_reference`; each PDU starts with an
/// empty SMSC field (`00`), so the modem uses the SIM's SMSC.
pub fn encode_submit(
    to: &str,
    text: &str,
    opts: &SubmitOptions,
) -> Result<Vec<EncodedPart>, PduError> {
    submit::encode(to, text, opts)
}

/// The segment calculator the API reports to clients.
pub fn segments(
    text: &str,
    encoding: EncodingChoice,
    smart: bool,
) -> Result<SegmentInfo, PduError> {
    Ok(segment::plan(text, encoding, smart)?.info())
}

/// Encode SMS-DELIVER PDUs (SMSC field included) as a network would deliver `text` from `sender`
/// (a number or an alphanumeric sender): used by the simulator to inject inbound messages.
pub fn encode_deliver(
    smsc: Option<&str>,
    sender: &str,
    text: &str,
    encoding: EncodingChoice,
    timestamp: &jiff::Zoned,
    concat_reference: u8,
) -> Result<Vec<Vec<u8>>, PduError> {
    deliver::encode(smsc, sender, text, encoding, timestamp, concat_reference)
}

/// Encode an SMS-STATUS-REPORT PDU (SMSC field included): used by the simulator.
pub fn encode_status_report(
    smsc: Option<&str>,
    reference: u8,
    recipient: &str,
    submitted: &jiff::Zoned,
    discharged: &jiff::Zoned,
    status: u8,
) -> Result<Vec<u8>, PduError> {
    status_report::encode(smsc, reference, recipient, submitted, discharged, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Some networks send a time stamp of all `FF` (or zeros): the message and the report still decode,
    /// with no time, rather than the STOP being stored as undecodable and the report never matched.
    #[test]
    fn an_invalid_time_stamp_costs_only_the_time() {
        let Tpdu::Deliver(stop) = decode_hex("00040B915141608092F80000FFFFFFFFFFFFFF0453EA130A")
            .unwrap()
            .tpdu
        else {
            panic!("not a deliver");
        };
        assert_eq!(stop.user_data, UserData::Text("STOP".into()));
        assert_eq!(
            (stop.sender.value.as_str(), stop.timestamp),
            ("+15140608298", None)
        );
        let Tpdu::StatusReport(report) =
            decode_hex("00062A0B915141608092F862117221500000FFFFFFFFFFFFFF00")
                .unwrap()
                .tpdu
        else {
            panic!("not a status report");
        };
        assert_eq!((report.reference, report.status), (42, 0));
        assert!(report.submitted.is_some());
        assert_eq!(report.discharged, None);
        // Too short to hold a time stamp at all is still an error.
        assert!(matches!(
            decode_hex("00040B915141608092F80000FFFFFF"),
            Err(PduError::Truncated { .. })
        ));
    }

    /// Found against libgammu: what follows TP-ST is optional and unused, so a report whose tail is cut
    /// short or garbled still confirms its message.
    #[test]
    fn a_status_report_with_a_broken_optional_tail_still_decodes() {
        let whole = "0006D60B911326880736F4111011719551401110117195714000";
        for tail in ["", "01", "02", "80", "89EBFAE1", "FF"] {
            let Tpdu::StatusReport(report) = decode_hex(&format!("{whole}{tail}")).unwrap().tpdu
            else {
                panic!("not a status report");
            };
            assert_eq!((report.reference, report.status), (0xD6, 0), "{tail}");
            assert_eq!(report.recipient.value, "+31628870634", "{tail}");
        }
    }

    /// Found against libgammu: a user data header whose last element does not fit is ignored whole
    /// (23.040 9.2.3.24), and the text after it is read: this STOP was undecodable.
    #[test]
    fn a_garbled_header_is_ignored_and_the_text_kept() {
        let Tpdu::Deliver(stop) =
            decode_hex("00440B915141608092F80000423001214365000B0500042A0201A6D42714")
                .unwrap()
                .tpdu
        else {
            panic!("not a deliver");
        };
        assert_eq!(stop.user_data, UserData::Text("STOP".into()));
        assert_eq!(stop.concat, None);
    }

    #[test]
    fn a_configured_smsc_replaces_the_pdus_smsc_field_and_nothing_else() {
        let part = encode_submit("+14158906431", "hi", &SubmitOptions::default())
            .unwrap()
            .remove(0);
        let routed = with_smsc(&part.hex(), "+27381000015").unwrap();
        assert!(routed.starts_with("07917283010010F5"), "{routed}");
        let decoded = decode_hex(&routed).unwrap();
        assert_eq!(decoded.smsc.unwrap().value, "+27381000015");
        assert_eq!(decode_hex(&part.hex()).unwrap().tpdu, decoded.tpdu);
        assert_eq!(routed.len() / 2 - 8, part.tpdu_length);
        // Already routed: replaced again, not nested.
        let rerouted = with_smsc(&routed, "+12063130004").unwrap();
        assert_eq!(
            decode_hex(&rerouted).unwrap().smsc.unwrap().value,
            "+12063130004"
        );
        assert!(with_smsc("0", "+12063130004").is_err());
    }

    #[test]
    fn hex_errors_point_at_the_character() {
        assert_eq!(hex_to_octets("0aF9"), Ok(vec![0x0A, 0xF9]));
        assert_eq!(hex_to_octets(""), Ok(vec![]));
        assert_eq!(
            hex_to_octets("00Z0"),
            Err(PduError::NotHex {
                character: 'Z',
                position: 2
            })
        );
        assert_eq!(
            hex_to_octets("000Z"),
            Err(PduError::NotHex {
                character: 'Z',
                position: 3
            })
        );
        assert_eq!(
            hex_to_octets("00é0"),
            Err(PduError::NotHex {
                character: 'é',
                position: 2
            })
        );
        assert_eq!(
            hex_to_octets("000"),
            Err(PduError::OddHexLength { digits: 3 })
        );
        assert_eq!(
            hex_to_octets("00p"),
            Err(PduError::NotHex {
                character: 'p',
                position: 2
            })
        );
    }
}
