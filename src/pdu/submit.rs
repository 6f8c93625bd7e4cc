//! SMS-SUBMIT (3GPP TS 23.040 9.2.2.2): encoding what we send, and decoding stored copies for logs.

use std::time::Duration;

use super::reader::Reader;
use super::{EncodedPart, PduError, Submit, SubmitOptions, UDHI, address, segment, udh, user_data};

/// TP-MTI of SMS-SUBMIT.
const MTI_SUBMIT: u8 = 0x01;
/// TP-VPF bits (3-4): relative validity period.
const VPF_RELATIVE: u8 = 0x10;
/// TP-SRR: ask for a status report.
const SRR: u8 = 0x20;

pub(crate) fn decode(r: &mut Reader, first: u8) -> Result<Submit, PduError> {
    let reference = r.u8("TP-MR")?;
    let recipient = address::decode_tp(r, "TP-DA")?;
    r.u8("TP-PID")?;
    let dcs_offset = r.offset();
    let encoding = user_data::encoding_from_dcs(r.u8("TP-DCS")?, dcs_offset)?;
    let validity_octets = match (first >> 3) & 0x03 {
        0 => 0,
        2 => 1,
        _ => 7, // enhanced or absolute
    };
    r.take(validity_octets, "TP-VP")?;
    let decoded = user_data::decode(r, encoding, first & UDHI != 0)?;
    Ok(Submit {
        reference,
        recipient,
        encoding,
        concat: decoded.concat,
        user_data: decoded.user_data,
        status_report_request: first & SRR != 0,
    })
}

pub(crate) fn encode(
    to: &str,
    text: &str,
    opts: &SubmitOptions,
) -> Result<Vec<EncodedPart>, PduError> {
    let plan = segment::plan(text, opts.encoding, opts.smart)?;
    let mut destination = Vec::with_capacity(12);
    address::encode_number(&mut destination, to)?;
    let validity = opts.validity.map(relative_validity);
    let parts = plan.parts();
    let total = parts.len();
    let mut encoded = Vec::with_capacity(total);
    for (index, part_text) in parts.enumerate() {
        let header = if total > 1 {
            udh::concat_8bit(opts.concat_reference, index as u8 + 1, total as u8).to_vec()
        } else {
            Vec::new()
        };
        let mut first = MTI_SUBMIT;
        if validity.is_some() {
            first |= VPF_RELATIVE;
        }
        if opts.status_report {
            first |= SRR;
        }
        if !header.is_empty() {
            first |= UDHI;
        }
        // `00`: no SMSC in the PDU, the modem uses the SIM's.
        let mut bytes = Vec::with_capacity(160);
        bytes.extend_from_slice(&[0x00, first, opts.message_reference]);
        bytes.extend_from_slice(&destination);
        bytes.extend_from_slice(&[0x00, user_data::dcs_for(plan.coding)]);
        bytes.extend(validity);
        user_data::encode_into(&mut bytes, plan.coding, &header, part_text)?;
        encoded.push(EncodedPart {
            tpdu_length: bytes.len() - 1,
            bytes,
        });
    }
    Ok(encoded)
}

/// The relative TP-VP (23.040 9.2.3.12.1) for `validity`, rounded up to the next step the octet can express
/// (so a message never expires earlier than asked), from 5 minutes to 63 weeks.
fn relative_validity(validity: Duration) -> u8 {
    let minutes = validity.as_secs().div_ceil(60);
    let octet = if minutes <= 12 * 60 {
        minutes.div_ceil(5).max(1) - 1
    } else if minutes <= 24 * 60 {
        143 + (minutes - 12 * 60).div_ceil(30)
    } else {
        let days = minutes.div_ceil(24 * 60);
        if days <= 30 {
            166 + days
        } else {
            192 + days.div_ceil(7).clamp(5, 63)
        }
    };
    octet.min(255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_validity_matches_the_23_040_table() {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        let days = |d: u64| minutes(d * 24 * 60);
        assert_eq!(relative_validity(Duration::ZERO), 0);
        assert_eq!(relative_validity(minutes(5)), 0);
        assert_eq!(relative_validity(minutes(6)), 1);
        assert_eq!(relative_validity(minutes(12 * 60)), 143);
        assert_eq!(relative_validity(minutes(12 * 60 + 1)), 144);
        assert_eq!(relative_validity(minutes(24 * 60)), 167);
        assert_eq!(relative_validity(days(3)), 0xA9);
        assert_eq!(relative_validity(days(4)), 0xAA);
        assert_eq!(relative_validity(days(7)), 0xAD);
        assert_eq!(relative_validity(days(30)), 196);
        assert_eq!(relative_validity(days(31)), 197);
        assert_eq!(relative_validity(days(52 * 7)), 0xF4);
        assert_eq!(relative_validity(days(10_000)), 255);
    }

    #[test]
    fn single_part_submit_matches_a_known_pdu() {
        // python-messaging's "hola" to +34616585119.
        let parts = encode("+34616585119", "hola", &SubmitOptions::default()).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].hex(), "0001000B914316565811F9000004E8373B0C");
        assert_eq!(parts[0].tpdu_length, 17);
    }

    #[test]
    fn flags_and_validity_land_in_the_first_octet() {
        let opts = SubmitOptions {
            status_report: true,
            message_reference: 7,
            validity: Some(Duration::from_secs(4 * 24 * 3600)),
            ..SubmitOptions::default()
        };
        let parts = encode("0612345678", "hola", &opts).unwrap();
        assert_eq!(parts[0].hex(), "0031070A8160214365870000AA04E8373B0C");
    }
}
