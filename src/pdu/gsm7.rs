//! The GSM 03.38 (3GPP TS 23.038 6.2.1) default alphabet, its extension table, and septet packing.
//!
//! Characters map to one septet, or to two (ESC 0x1B then the extension code) for `€ [ ] { } ~ ^ | \` and
//! form feed. Packing puts septet *n* at bit 7·n of the user data, least significant bit first; when a user
//! data header precedes the text, the text starts at the next septet boundary and the bits skipped to get
//! there are the "fill bits".

use super::PduError;

/// Escape to the extension table.
const ESCAPE: u8 = 0x1B;

/// The default alphabet, indexed by septet. Index 0x1B (ESC) is never looked up as a character: it holds
/// the space that 23.038 says to show for an escape the receiver cannot resolve.
const DEFAULT: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', ' ', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: (code after ESC, character).
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// Marks an ASCII character outside both tables in [`ASCII_TO_GSM`].
const NONE: u8 = 0xFF;
/// Flags an extension-table code in [`ASCII_TO_GSM`] (extension codes are below 0x80).
const EXTENDED: u8 = 0x80;

/// Direct lookup for ASCII, the common case on the encoding path.
const ASCII_TO_GSM: [u8; 128] = build_ascii_map();

const fn build_ascii_map() -> [u8; 128] {
    let mut map = [NONE; 128];
    let mut septet = 0;
    while septet < 128 {
        let c = DEFAULT[septet] as u32;
        if c < 128 && septet != ESCAPE as usize {
            map[c as usize] = septet as u8;
        }
        septet += 1;
    }
    let mut i = 0;
    while i < EXTENSION.len() {
        let (code, c) = EXTENSION[i];
        if (c as u32) < 128 {
            map[c as usize] = EXTENDED | code;
        }
        i += 1;
    }
    map
}

/// How one character is written in GSM 7-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GsmChar {
    /// One septet of the default table.
    Default(u8),
    /// ESC then this extension code: two septets.
    Extended(u8),
}

impl GsmChar {
    /// Septets this character takes.
    pub(crate) fn len(self) -> usize {
        match self {
            GsmChar::Default(_) => 1,
            GsmChar::Extended(_) => 2,
        }
    }
}

/// The GSM 7-bit form of `c`, or `None` when it is not in the alphabet.
pub(crate) fn lookup(c: char) -> Option<GsmChar> {
    let code = u32::from(c);
    if let Some(&mapped) = ASCII_TO_GSM.get(code as usize) {
        return match mapped {
            NONE => None,
            m if m & EXTENDED != 0 => Some(GsmChar::Extended(m & !EXTENDED)),
            m => Some(GsmChar::Default(m)),
        };
    }
    if c == '€' {
        return Some(GsmChar::Extended(0x65));
    }
    DEFAULT
        .iter()
        .position(|&d| d == c)
        .filter(|&septet| septet != usize::from(ESCAPE))
        .and_then(|septet| u8::try_from(septet).ok())
        .map(GsmChar::Default)
}

/// Whether every character of `text` is in the GSM 7-bit alphabet.
pub(crate) fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| lookup(c).is_some())
}

/// The septets of `text`, escapes included.
pub(crate) fn to_septets(text: &str) -> Result<Vec<u8>, PduError> {
    let mut septets = Vec::with_capacity(text.len());
    for (position, c) in text.chars().enumerate() {
        match lookup(c) {
            Some(GsmChar::Default(s)) => septets.push(s),
            Some(GsmChar::Extended(s)) => septets.extend_from_slice(&[ESCAPE, s]),
            None => {
                return Err(PduError::NotGsm7 {
                    character: c,
                    position,
                });
            }
        }
    }
    Ok(septets)
}

/// Pack septets after `fill_bits` zero bits (0-6), appending to `out`.
pub(crate) fn pack_into(out: &mut Vec<u8>, septets: &[u8], fill_bits: u32) {
    let mut acc: u32 = 0;
    let mut bits = fill_bits;
    for &septet in septets {
        acc |= u32::from(septet & 0x7F) << bits;
        bits += 7;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

/// Octets needed to hold `septets` packed septets.
pub(crate) fn packed_len(septets: usize) -> usize {
    (septets * 7).div_ceil(8)
}

/// Most septets a user data length octet can announce.
const MAX_SEPTETS: usize = 255;

/// Decode septets `skip..count` of packed data into text, resolving escapes.
///
/// Septets are unpacked eight at a time from each group of seven octets; past the end of `packed` they read as
/// zero, so a short buffer cannot panic. An escape followed by a code the extension table lacks shows the
/// default-table character for that code, as 23.038 asks; a trailing lone escape is dropped.
pub(crate) fn decode_packed(packed: &[u8], skip: usize, count: usize) -> String {
    let count = count.min(MAX_SEPTETS);
    let mut unpacked = [0u8; MAX_SEPTETS + 1];
    for (septets, octets) in unpacked
        .chunks_exact_mut(8)
        .zip(packed.chunks(7))
        .take(count.div_ceil(8))
    {
        let word = match <[u8; 7]>::try_from(octets) {
            Ok([a, b, c, d, e, f, g]) => u64::from_le_bytes([a, b, c, d, e, f, g, 0]),
            Err(_) => octets
                .iter()
                .rev()
                .fold(0, |word, &octet| word << 8 | u64::from(octet)),
        };
        for (i, septet) in septets.iter_mut().enumerate() {
            *septet = ((word >> (7 * i)) & 0x7F) as u8;
        }
    }
    let septets = unpacked.get(skip..count).unwrap_or_default();
    // Most texts map to ASCII only: one table lookup per septet into a stack buffer. A set high bit in any
    // looked-up octet (non-ASCII character or escape) sends the text down the general path.
    let mut ascii = [0u8; MAX_SEPTETS];
    let mut high_bits = 0u8;
    for (out, &septet) in ascii.iter_mut().zip(septets) {
        let octet = ASCII_OR_FLAG[usize::from(septet & 0x7F)];
        *out = octet;
        high_bits |= octet;
    }
    if high_bits < 0x80 {
        let ascii = ascii.get(..septets.len()).unwrap_or_default();
        return String::from_utf8(ascii.to_vec()).unwrap_or_default();
    }
    // Otherwise built as UTF-8 octets from the table: pushing chars one by one costs more than the unpacking.
    let mut utf8 = Vec::with_capacity(septets.len() * 2);
    let mut septets = septets.iter().copied();
    while let Some(septet) = septets.next() {
        if septet != ESCAPE {
            let [first, second] = DEFAULT_UTF8[usize::from(septet & 0x7F)];
            utf8.push(first);
            if second != 0 {
                utf8.push(second);
            }
            continue;
        }
        let Some(code) = septets.next() else {
            break;
        };
        let extended = EXTENSION
            .iter()
            .find(|&&(c, _)| c == code)
            .map(|&(_, ch)| ch);
        let ch = extended.unwrap_or_else(|| default_char(code));
        utf8.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
    }
    String::from_utf8(utf8).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// [`DEFAULT`] as UTF-8: every character of the default table is below U+0800, so it takes one or two octets
/// (a zero second octet means one).
const DEFAULT_UTF8: [[u8; 2]; 128] = build_utf8_table();

/// The first UTF-8 octet of each default-table character, with ESC flagged as 0x80: an octet below 0x80 is a
/// whole ASCII character.
const ASCII_OR_FLAG: [u8; 128] = build_ascii_or_flag();

const fn build_ascii_or_flag() -> [u8; 128] {
    let mut table = [0u8; 128];
    let mut septet = 0;
    while septet < 128 {
        table[septet] = DEFAULT_UTF8[septet][0];
        septet += 1;
    }
    table[ESCAPE as usize] = 0x80;
    table
}

const fn build_utf8_table() -> [[u8; 2]; 128] {
    let mut table = [[0u8; 2]; 128];
    let mut septet = 0;
    while septet < 128 {
        let c = DEFAULT[septet] as u32;
        assert!(
            c < 0x800,
            "default alphabet character needs more than two UTF-8 octets"
        );
        table[septet] = if c < 0x80 {
            [c as u8, 0]
        } else {
            [0xC0 | (c >> 6) as u8, 0x80 | (c & 0x3F) as u8]
        };
        septet += 1;
    }
    table
}

fn default_char(septet: u8) -> char {
    DEFAULT[usize::from(septet & 0x7F)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(septets: &[u8], fill: u32) -> Vec<u8> {
        let mut out = Vec::new();
        pack_into(&mut out, septets, fill);
        out
    }

    #[test]
    fn packs_hello_as_in_23_040_examples() {
        // "hellohello" is the classic packing example: E8329BFD4697D9EC37.
        let septets = to_septets("hellohello").unwrap();
        assert_eq!(hex::encode_upper(pack(&septets, 0)), "E8329BFD4697D9EC37");
        assert_eq!(decode_packed(&pack(&septets, 0), 0, 10), "hellohello");
    }

    #[test]
    fn every_default_character_round_trips() {
        for (septet, &c) in DEFAULT.iter().enumerate() {
            if septet == usize::from(ESCAPE) {
                continue;
            }
            let s = c.to_string();
            assert_eq!(to_septets(&s).unwrap(), vec![septet as u8], "{c:?}");
            let packed = pack(&[septet as u8], 0);
            assert_eq!(decode_packed(&packed, 0, 1), s);
        }
    }

    #[test]
    fn extension_characters_take_two_septets_and_round_trip() {
        let text = "€[]{}~^|\\\u{0C}";
        let septets = to_septets(text).unwrap();
        assert_eq!(septets.len(), 20);
        assert_eq!(&septets[..2], &[0x1B, 0x65]);
        assert_eq!(decode_packed(&pack(&septets, 0), 0, septets.len()), text);
    }

    #[test]
    fn unknown_escape_shows_the_default_character_and_lone_escape_is_dropped() {
        let packed = pack(&[0x1B, 0x41, 0x42, 0x1B], 0);
        assert_eq!(decode_packed(&packed, 0, 4), "AB");
    }

    #[test]
    fn fill_bits_shift_the_text_to_a_septet_boundary() {
        // After a 6-octet UDH the text starts at bit 49: one fill bit.
        let septets = to_septets("Hi").unwrap();
        let mut ud = vec![0u8; 6];
        pack_into(&mut ud, &septets, 1);
        assert_eq!(ud.len(), packed_len(7 + 2));
        assert_eq!(decode_packed(&ud, 7, 9), "Hi");
    }

    #[test]
    fn non_gsm_characters_are_refused_with_their_position() {
        assert_eq!(
            to_septets("ab`c"),
            Err(PduError::NotGsm7 {
                character: '`',
                position: 2
            })
        );
        assert!(!is_gsm7("naïve"));
        assert!(!is_gsm7("Ñandú"));
        assert!(is_gsm7("Ñoño €5 {x}"));
    }

    #[test]
    fn short_buffer_reads_as_zero_without_panicking() {
        assert_eq!(decode_packed(&[], 0, 3), "@@@");
    }
}
