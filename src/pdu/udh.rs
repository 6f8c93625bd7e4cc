//! User data header (3GPP TS 23.040 9.2.3.24): a walk over the information elements that keeps the
//! concatenation ones (IEI 0x00, 8-bit reference; IEI 0x08, 16-bit reference) and skips the rest.

use super::Concat;

/// IEI of the concatenation element with an 8-bit reference.
const CONCAT_8BIT: u8 = 0x00;
/// IEI of the concatenation element with a 16-bit reference.
const CONCAT_16BIT: u8 = 0x08;

/// Octets a UDH with one 8-bit concatenation element takes, UDHL included.
pub(crate) const CONCAT_UDH_LEN: usize = 6;

/// Walk the information elements of `header` (the UDH without its UDHL octet). A concatenation element
/// with impossible numbers (part 0, or past the part count) is ignored as 23.040 asks; when several appear
/// the last valid one counts. An element that runs past the header's end (or has no length octet) makes
/// the whole header ignored, as 23.040 9.2.3.24 says: the text after it is still read, so a STOP with a
/// garbled header is a STOP, not an undecodable message.
pub(crate) fn parse(header: &[u8]) -> Option<Concat> {
    let mut concat = None;
    let mut rest = header;
    while let [iei, len, data_and_more @ ..] = rest {
        let data = data_and_more.get(..usize::from(*len))?;
        let found = match (*iei, data) {
            (CONCAT_8BIT, &[reference, parts, part]) => Some(Concat {
                reference: u16::from(reference),
                part,
                parts,
            }),
            (CONCAT_16BIT, &[high, low, parts, part]) => Some(Concat {
                reference: u16::from_be_bytes([high, low]),
                part,
                parts,
            }),
            _ => None,
        };
        if let Some(c) = found.filter(|c| c.part >= 1 && c.part <= c.parts) {
            concat = Some(c);
        }
        rest = &data_and_more[usize::from(*len)..];
    }
    // A lone octet left: an element with no length.
    if rest.is_empty() { concat } else { None }
}

/// A UDH (UDHL included) holding one 8-bit concatenation element.
pub(crate) fn concat_8bit(reference: u8, part: u8, parts: u8) -> [u8; CONCAT_UDH_LEN] {
    [5, CONCAT_8BIT, 3, reference, parts, part]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_8_and_16_bit_concatenation() {
        let c = parse(&[0x00, 0x03, 0x2A, 0x02, 0x01]).unwrap();
        assert_eq!((c.reference, c.part, c.parts), (42, 1, 2));
        let c = parse(&[0x08, 0x04, 0x12, 0x34, 0x03, 0x03]).unwrap();
        assert_eq!((c.reference, c.part, c.parts), (0x1234, 3, 3));
    }

    #[test]
    fn unknown_elements_are_skipped() {
        // Port addressing (0x05) then concatenation, then IE 0x70.
        let header = [
            0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x00, 0x03, 0x07, 0x02, 0x02, 0x70, 0x01, 0x00,
        ];
        let c = parse(&header).unwrap();
        assert_eq!((c.reference, c.part, c.parts), (7, 2, 2));
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn impossible_part_numbers_are_ignored() {
        assert_eq!(parse(&[0x00, 0x03, 0x01, 0x02, 0x00]), None);
        assert_eq!(parse(&[0x00, 0x03, 0x01, 0x02, 0x03]), None);
    }

    #[test]
    fn a_header_whose_last_element_does_not_fit_is_ignored_whole() {
        // Runs past the end; a valid concatenation element before one that does; a lone IEI.
        assert_eq!(parse(&[0x00, 0x03, 0x01, 0x02]), None);
        assert_eq!(parse(&[0x00, 0x03, 0x01, 0x02, 0x01, 0x70, 0x05]), None);
        assert_eq!(parse(&[0x00, 0x03, 0x01, 0x02, 0x01, 0x70]), None);
    }
}
