//! UCS-2 user data, read and written as UTF-16 big-endian so characters outside the BMP (emoji) travel as
//! surrogate pairs, which is what phones do in practice.

/// Append the UTF-16BE form of `text`.
pub(crate) fn encode_into(out: &mut Vec<u8>, text: &str) {
    for unit in text.encode_utf16() {
        out.extend_from_slice(&unit.to_be_bytes());
    }
}

/// Decode UTF-16BE, tolerating what modems hand over: an unpaired surrogate or an odd trailing octet
/// becomes U+FFFD rather than an error, so the rest of the message is still readable.
pub(crate) fn decode(bytes: &[u8]) -> String {
    let chunks = bytes.chunks_exact(2);
    let odd_tail = !chunks.remainder().is_empty();
    let units = chunks.map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
    let mut text: String = char::decode_utf16(units)
        .map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    if odd_tail {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_travel_as_surrogate_pairs() {
        let mut out = Vec::new();
        encode_into(&mut out, "A😀");
        assert_eq!(hex::encode_upper(&out), "0041D83DDE00");
        assert_eq!(decode(&out), "A😀");
    }

    #[test]
    fn broken_input_degrades_to_replacement_characters() {
        assert_eq!(decode(&[0xD8, 0x3D, 0x00, 0x41]), "\u{FFFD}A");
        assert_eq!(decode(&[0x00, 0x41, 0x00]), "A\u{FFFD}");
    }
}
