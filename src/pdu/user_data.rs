//! TP-DCS and TP-UDL/TP-UD, shared by SMS-DELIVER, SMS-SUBMIT and the optional user data of a status report.

use super::reader::Reader;
use super::segment::TextCoding;
use super::{Concat, Encoding, PduError, UserData, gsm7, ucs2, udh};

/// The alphabet TP-DCS announces (3GPP TS 23.038 4).
///
/// Reserved alphabets and coding groups read as GSM 7-bit, as 23.038 tells receivers to assume. In group
/// 1111 a set reserved bit 3 reads as 8-bit data, as libgammu does: such messages are not GSM text.
/// Compressed user data is refused: no phone in the field sends it and we cannot decompress it.
pub(crate) fn encoding_from_dcs(dcs: u8, offset: usize) -> Result<Encoding, PduError> {
    Ok(match dcs >> 4 {
        0x0..=0x7 if dcs & 0x20 != 0 => {
            return Err(PduError::Unsupported {
                field: "TP-DCS",
                offset,
                what: format!("compressed user data (DCS {dcs:#04X})"),
            });
        }
        0x0..=0x7 => match (dcs >> 2) & 0x03 {
            1 => Encoding::EightBit,
            2 => Encoding::Ucs2,
            _ => Encoding::Gsm7,
        },
        0xE => Encoding::Ucs2,
        0xF if dcs & 0x0C != 0 => Encoding::EightBit,
        _ => Encoding::Gsm7,
    })
}

/// TP-DCS for a text we send: class-less, uncompressed.
pub(crate) fn dcs_for(coding: TextCoding) -> u8 {
    match coding {
        TextCoding::Gsm7 => 0x00,
        TextCoding::Ucs2 => 0x08,
    }
}

pub(crate) struct Decoded {
    pub(crate) concat: Option<Concat>,
    pub(crate) user_data: UserData,
}

/// Read TP-UDL and TP-UD (with its header when TP-UDHI is set).
pub(crate) fn decode(
    r: &mut Reader,
    encoding: Encoding,
    has_header: bool,
) -> Result<Decoded, PduError> {
    let udl = usize::from(r.u8("TP-UDL")?);
    let ud_offset = r.offset();
    let octets = match encoding {
        Encoding::Gsm7 => gsm7::packed_len(udl),
        Encoding::Ucs2 | Encoding::EightBit => udl,
    };
    let ud = r.take(octets, "TP-UD")?;
    let (concat, header_octets) = match ud.split_first() {
        Some((&udhl, after)) if has_header => {
            let Some(header) = after.get(..usize::from(udhl)) else {
                return Err(PduError::invalid(
                    "TP-UDHL",
                    ud_offset,
                    format!("a header of {udhl} octets runs past the {octets} octets of user data"),
                ));
            };
            (udh::parse(header), 1 + usize::from(udhl))
        }
        // No header, or a set TP-UDHI with no user data at all, which phones send (gammu at-sms/20).
        _ => (None, 0),
    };
    let body = ud.get(header_octets..).unwrap_or_default();
    let user_data = match encoding {
        Encoding::Gsm7 => {
            let header_septets = (header_octets * 8).div_ceil(7);
            if header_septets > udl {
                return Err(PduError::invalid(
                    "TP-UDHL",
                    ud_offset,
                    format!("a header of {header_septets} septets is longer than TP-UDL ({udl})"),
                ));
            }
            UserData::Text(gsm7::decode_packed(ud, header_septets, udl))
        }
        Encoding::Ucs2 => UserData::Text(ucs2::decode(body)),
        Encoding::EightBit => UserData::Binary(body.to_vec()),
    };
    Ok(Decoded { concat, user_data })
}

/// Append TP-UDL and TP-UD for one part: `header` is a whole UDH (UDHL included) or empty.
/// The caller has checked that `text` fits one part in `coding`.
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    coding: TextCoding,
    header: &[u8],
    text: &str,
) -> Result<(), PduError> {
    match coding {
        TextCoding::Gsm7 => {
            let septets = gsm7::to_septets(text)?;
            let header_septets = (header.len() * 8).div_ceil(7);
            let fill_bits = header_septets * 7 - header.len() * 8;
            out.push((header_septets + septets.len()) as u8);
            out.extend_from_slice(header);
            gsm7::pack_into(out, &septets, fill_bits as u32);
        }
        TextCoding::Ucs2 => {
            let udl_at = out.len();
            out.push(0);
            out.extend_from_slice(header);
            ucs2::encode_into(out, text);
            let udl = out.len() - udl_at - 1;
            if let Some(slot) = out.get_mut(udl_at) {
                *slot = udl as u8;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcs_groups_map_to_alphabets() {
        let cases = [
            (0x00, Encoding::Gsm7),
            (0x04, Encoding::EightBit),
            (0x08, Encoding::Ucs2),
            (0x0C, Encoding::Gsm7),
            (0x10, Encoding::Gsm7),
            (0x18, Encoding::Ucs2),
            (0x48, Encoding::Ucs2),
            (0xC0, Encoding::Gsm7),
            (0xE0, Encoding::Ucs2),
            (0xF1, Encoding::Gsm7),
            (0xF5, Encoding::EightBit),
            (0xF9, Encoding::EightBit),
        ];
        for (dcs, encoding) in cases {
            assert_eq!(
                encoding_from_dcs(dcs, 0).unwrap(),
                encoding,
                "DCS {dcs:#04X}"
            );
        }
        assert!(matches!(
            encoding_from_dcs(0x39, 7),
            Err(PduError::Unsupported { offset: 7, .. })
        ));
    }

    #[test]
    fn udl_past_the_end_is_truncated_at_the_user_data() {
        let bytes = [0x05, 0xE8, 0x32];
        let err = decode(&mut Reader::new(&bytes), Encoding::Gsm7, false)
            .err()
            .unwrap();
        assert_eq!(
            err,
            PduError::Truncated {
                field: "TP-UD",
                offset: 1,
                needed: 5,
                available: 2
            }
        );
    }

    #[test]
    fn header_longer_than_the_user_data_is_refused() {
        let bytes = [0x04, 0x09, 0x00, 0x03, 0x01];
        let err = decode(&mut Reader::new(&bytes), Encoding::EightBit, true)
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                PduError::Invalid {
                    field: "TP-UDHL",
                    offset: 1,
                    ..
                }
            ),
            "{err}"
        );
        let err = decode(&mut Reader::new(&[0x01, 0x00]), Encoding::Gsm7, true)
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                PduError::Invalid {
                    field: "TP-UDHL",
                    ..
                }
            ),
            "{err}"
        );
    }
}
