//! Address fields (3GPP TS 23.040 9.1.2.5): the SMSC field and TP-OA / TP-DA / TP-RA.
//!
//! The SMSC field counts its length in octets (type octet included); TP addresses count semi-octets of the
//! value. Digits are swapped BCD with an `F` filler; alphanumeric values (type of number 5) are packed GSM 7-bit.

use super::reader::Reader;
use super::{Address, PduError, gsm7};

/// Type of number: international (value gets a `+`).
const TON_INTERNATIONAL: u8 = 1;
/// Type of number: alphanumeric (value is packed GSM 7-bit).
const TON_ALPHANUMERIC: u8 = 5;
/// Numbering plan: ISDN/telephone (E.164).
const NPI_ISDN: u8 = 1;
/// Longest value a TP address can carry: 20 semi-octets (10 octets).
const MAX_SEMI_OCTETS: u8 = 20;
/// Longest SMSC field: the type octet and 10 octets of digits.
const MAX_SMSC_OCTETS: u8 = 11;
/// Longest alphanumeric sender: 11 characters fill the 10 value octets.
const MAX_ALPHANUMERIC: usize = 11;

/// What 23.040 9.1.2.3 allows in a semi-octet; `F` is the filler.
const DIGITS: &[u8; 15] = b"0123456789*#abc";

impl Address {
    fn from_parts(toa: u8, value: String) -> Self {
        Address {
            type_of_number: (toa >> 4) & 0x07,
            numbering_plan: toa & 0x0F,
            value,
        }
    }

    fn toa(&self) -> u8 {
        0x80 | (self.type_of_number & 0x07) << 4 | (self.numbering_plan & 0x0F)
    }
}

/// Read the SMSC field; `None` when it is empty (`00`) or holds a type octet but no digits.
pub(crate) fn decode_smsc(r: &mut Reader) -> Result<Option<Address>, PduError> {
    const FIELD: &str = "SMSC address";
    let offset = r.offset();
    let len = r.u8("SMSC length")?;
    if len == 0 {
        return Ok(None);
    }
    if len > MAX_SMSC_OCTETS {
        return Err(PduError::invalid(
            "SMSC length",
            offset,
            format!("{len} octets, at most {MAX_SMSC_OCTETS} allowed"),
        ));
    }
    let toa = r.u8("SMSC type of address")?;
    let value_octets = usize::from(len - 1);
    let value = r.take(value_octets, FIELD)?;
    let address = decode_value(toa, value, value_octets * 2);
    Ok((!address.value.is_empty()).then_some(address))
}

/// Read a TP address (originator, destination or recipient); `field` names it in errors.
pub(crate) fn decode_tp(r: &mut Reader, field: &'static str) -> Result<Address, PduError> {
    let offset = r.offset();
    let semi_octets = r.u8(field)?;
    if semi_octets > MAX_SEMI_OCTETS {
        return Err(PduError::invalid(
            field,
            offset,
            format!("length {semi_octets} semi-octets, at most {MAX_SEMI_OCTETS} allowed"),
        ));
    }
    let toa = r.u8(field)?;
    let value = r.take(usize::from(semi_octets).div_ceil(2), field)?;
    Ok(decode_value(toa, value, usize::from(semi_octets)))
}

fn decode_value(toa: u8, value: &[u8], semi_octets: usize) -> Address {
    let ton = (toa >> 4) & 0x07;
    let text = if ton == TON_ALPHANUMERIC {
        let mut text = gsm7::decode_packed(value, 0, semi_octets * 4 / 7);
        // Networks that count a 7-character sender's 7 octets as 14 semi-octets make its 7 fill bits
        // an eighth septet, `@` (libgammu drops it too): no sender name ends in one.
        if (semi_octets * 4).is_multiple_of(7) && text.ends_with('@') {
            text.pop();
        }
        text
    } else {
        // `+` and at most 20 digits, written into a stack buffer.
        let mut digits = [0u8; 1 + MAX_SEMI_OCTETS as usize];
        let mut len = 0;
        let mut push = |digit: u8| {
            if let Some(slot) = digits.get_mut(len) {
                *slot = digit;
                len += 1;
            }
        };
        if ton == TON_INTERNATIONAL {
            push(b'+');
        }
        for (i, &octet) in value.iter().enumerate() {
            for (j, nibble) in [octet & 0x0F, octet >> 4].into_iter().enumerate() {
                if 2 * i + j < semi_octets
                    && let Some(&digit) = DIGITS.get(usize::from(nibble))
                {
                    push(digit);
                }
            }
        }
        // Only ASCII from DIGITS went in.
        String::from_utf8(digits.get(..len).unwrap_or_default().to_vec()).unwrap_or_default()
    };
    Address::from_parts(toa, text)
}

/// A number as a caller writes it: `+` and digits (international), or digits only (national number or
/// short code, sent with type "unknown" so the network applies its national dialling rules).
fn parse_number(number: &str) -> Result<Address, PduError> {
    let bad = |reason| PduError::BadAddress {
        address: number.to_owned(),
        reason,
    };
    let (ton, digits) = match number.strip_prefix('+') {
        Some(rest) => (TON_INTERNATIONAL, rest),
        None => (0, number),
    };
    if digits.is_empty() {
        return Err(bad("no digits"));
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("only digits, after an optional leading +, are allowed"));
    }
    if digits.len() > usize::from(MAX_SEMI_OCTETS) {
        return Err(bad("more than 20 digits"));
    }
    Ok(Address {
        type_of_number: ton,
        numbering_plan: NPI_ISDN,
        value: digits.to_owned(),
    })
}

/// A sender for SMS-DELIVER: a number as for [`parse_number`], else an alphanumeric sender of up to 11
/// GSM 7-bit characters.
fn parse_sender(sender: &str) -> Result<Address, PduError> {
    let numeric = sender.strip_prefix('+').unwrap_or(sender);
    if !numeric.is_empty() && numeric.bytes().all(|b| b.is_ascii_digit()) {
        return parse_number(sender);
    }
    let bad = |reason| PduError::BadAddress {
        address: sender.to_owned(),
        reason,
    };
    if sender.is_empty() {
        return Err(bad("empty sender"));
    }
    if sender.chars().count() > MAX_ALPHANUMERIC {
        return Err(bad("alphanumeric senders hold at most 11 characters"));
    }
    if !gsm7::is_gsm7(sender) {
        return Err(bad("alphanumeric senders must be GSM 7-bit characters"));
    }
    Ok(Address {
        type_of_number: TON_ALPHANUMERIC,
        numbering_plan: 0,
        value: sender.to_owned(),
    })
}

fn push_bcd(out: &mut Vec<u8>, digits: &str) {
    for pair in digits.as_bytes().chunks(2) {
        let low = pair.first().map_or(0x0F, |d| d - b'0');
        let high = pair.get(1).map_or(0x0F, |d| d - b'0');
        out.push(high << 4 | low);
    }
}

/// Append the SMSC field: `00` for "use the SIM's SMSC".
pub(crate) fn encode_smsc(out: &mut Vec<u8>, smsc: Option<&str>) -> Result<(), PduError> {
    let Some(number) = smsc else {
        out.push(0);
        return Ok(());
    };
    let address = parse_number(number)?;
    let value_octets = address.value.len().div_ceil(2);
    out.push(value_octets as u8 + 1);
    out.push(address.toa());
    push_bcd(out, &address.value);
    Ok(())
}

/// Append a destination address for SMS-SUBMIT or a recipient address for SMS-STATUS-REPORT.
pub(crate) fn encode_number(out: &mut Vec<u8>, number: &str) -> Result<(), PduError> {
    let address = parse_number(number)?;
    out.push(address.value.len() as u8);
    out.push(address.toa());
    push_bcd(out, &address.value);
    Ok(())
}

/// Append an originator address for SMS-DELIVER: a number or an alphanumeric sender.
pub(crate) fn encode_sender(out: &mut Vec<u8>, sender: &str) -> Result<(), PduError> {
    let address = parse_sender(sender)?;
    if address.type_of_number != TON_ALPHANUMERIC {
        return encode_number(out, sender);
    }
    let septets = gsm7::to_septets(&address.value)?;
    // The length counts the semi-octets the packed septets really use.
    out.push((septets.len() * 7).div_ceil(4) as u8);
    out.push(address.toa());
    gsm7::pack_into(out, &septets, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_tp_hex(hex: &str) -> Result<Address, PduError> {
        let bytes = hex::decode(hex).unwrap();
        decode_tp(&mut Reader::new(&bytes), "TP-OA")
    }

    #[test]
    fn international_numbers_get_a_plus_and_drop_the_filler() {
        let a = decode_tp_hex("0B911326880736F4").unwrap();
        assert_eq!(a.value, "+31628870634");
        assert_eq!((a.type_of_number, a.numbering_plan), (1, 1));
    }

    #[test]
    fn a_seven_character_sender_counted_in_whole_octets_has_no_fill_septet() {
        // "Megafon" with length 14 (its 7 octets) rather than 13 (the semi-octets its septets use).
        assert_eq!(
            decode_tp_hex("0ED0CDF2396C7EBB01").unwrap().value,
            "Megafon"
        );
        assert_eq!(
            decode_tp_hex("0DD0CDF2396C7EBB01").unwrap().value,
            "Megafon"
        );
    }

    #[test]
    fn alphanumeric_senders_unpack_gsm7() {
        assert_eq!(decode_tp_hex("09D0C6A7333904").unwrap().value, "FONIC");
        assert_eq!(
            decode_tp_hex("12D0F7FBDD454FB75D693A").unwrap().value,
            "www.tim.it"
        );
    }

    #[test]
    fn senders_round_trip() {
        for sender in [
            "+447700900123",
            "12345",
            "Megafon",
            "FONIC",
            "www.tim.it",
            "Bank{X}",
        ] {
            let mut out = Vec::new();
            encode_sender(&mut out, sender).unwrap();
            assert_eq!(
                decode_tp(&mut Reader::new(&out), "TP-OA").unwrap().value,
                sender
            );
        }
    }

    #[test]
    fn smsc_field_round_trips_and_empty_is_none() {
        let mut out = Vec::new();
        encode_smsc(&mut out, Some("+447802000332")).unwrap();
        assert_eq!(hex::encode_upper(&out), "0791448720003023");
        let smsc = decode_smsc(&mut Reader::new(&out)).unwrap().unwrap();
        assert_eq!(smsc.value, "+447802000332");
        assert_eq!(decode_smsc(&mut Reader::new(&[0])).unwrap(), None);
        assert_eq!(decode_smsc(&mut Reader::new(&[1, 0x81])).unwrap(), None);
    }

    #[test]
    fn bad_lengths_name_the_field_and_offset() {
        let err = decode_tp_hex("15910000").unwrap_err();
        assert!(
            matches!(
                err,
                PduError::Invalid {
                    field: "TP-OA",
                    offset: 0,
                    ..
                }
            ),
            "{err}"
        );
        let err = decode_tp_hex("0B911326").unwrap_err();
        assert!(
            matches!(
                err,
                PduError::Truncated {
                    field: "TP-OA",
                    offset: 2,
                    needed: 6,
                    available: 2
                }
            ),
            "{err}"
        );
        let err = decode_smsc(&mut Reader::new(&[0x91, 0x94])).unwrap_err();
        assert!(
            matches!(
                err,
                PduError::Invalid {
                    field: "SMSC length",
                    offset: 0,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn encoders_refuse_what_cannot_be_addressed() {
        for bad in ["", "+", "+1 555", "123456789012345678901", "abc"] {
            assert!(encode_number(&mut Vec::new(), bad).is_err(), "{bad:?}");
        }
        assert!(encode_sender(&mut Vec::new(), "TooLongSender").is_err());
        assert!(encode_sender(&mut Vec::new(), "Bänk`").is_err());
    }
}
