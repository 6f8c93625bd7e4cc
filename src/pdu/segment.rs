//! Splitting a text into SMS parts, smart encoding, and the segment calculator.
//!
//! One part holds 160 GSM septets or 70 UTF-16 units; a concatenated part loses 6 octets to its UDH and holds
//! 153 septets or 67 units. Parts are cut between characters as a reader sees them (grapheme clusters), so
//! an escape sequence (2 septets), a surrogate pair (2 units), an accent typed as a combining mark or an
//! emoji sequence never straddles two parts: a part may hold a few units less than the limit.

use std::borrow::Cow;
use std::ops::Range;

use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

use super::{Encoding, EncodingChoice, PduError, SegmentInfo, gsm7};

/// Most parts one 8-bit concatenation reference can number.
const MAX_PARTS: usize = 255;

/// The two alphabets we write text in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextCoding {
    Gsm7,
    Ucs2,
}

impl TextCoding {
    fn encoding(self) -> Encoding {
        match self {
            TextCoding::Gsm7 => Encoding::Gsm7,
            TextCoding::Ucs2 => Encoding::Ucs2,
        }
    }

    /// Septets or UTF-16 units in a message that fits one part.
    fn single_limit(self) -> usize {
        match self {
            TextCoding::Gsm7 => 160,
            TextCoding::Ucs2 => 70,
        }
    }

    /// Septets or UTF-16 units in each part of a concatenated message.
    fn part_limit(self) -> usize {
        match self {
            TextCoding::Gsm7 => 153,
            TextCoding::Ucs2 => 67,
        }
    }

    fn cost(self, c: char) -> usize {
        match self {
            TextCoding::Gsm7 => gsm7::lookup(c).map_or(1, gsm7::GsmChar::len),
            TextCoding::Ucs2 => c.len_utf16(),
        }
    }
}

/// How a text will be sent: its alphabet, the text after smart replacement, and where each part begins and ends.
pub(crate) struct Plan<'t> {
    pub(crate) coding: TextCoding,
    pub(crate) text: Cow<'t, str>,
    /// Byte ranges of `text`, one per part.
    ranges: Vec<Range<usize>>,
    remaining_in_last: usize,
}

impl Plan<'_> {
    /// The text of each part, in order.
    pub(crate) fn parts(&self) -> impl ExactSizeIterator<Item = &str> {
        self.ranges
            .iter()
            .map(|range| self.text.get(range.clone()).unwrap_or_default())
    }

    pub(crate) fn info(&self) -> SegmentInfo {
        SegmentInfo {
            encoding: self.coding.encoding(),
            parts: self.ranges.len(),
            remaining_in_last: self.remaining_in_last,
            text: self.text.clone().into_owned(),
        }
    }
}

/// Choose the alphabet and the cuts for `text`.
///
/// Smart replacement only happens when it makes the whole text GSM 7-bit: if some other character keeps the
/// message in UCS-2 anyway, the original punctuation is kept, since replacing it would save nothing.
pub(crate) fn plan(text: &str, choice: EncodingChoice, smart: bool) -> Result<Plan<'_>, PduError> {
    let (coding, text) = match choice {
        EncodingChoice::Ucs2 => (TextCoding::Ucs2, Cow::Borrowed(text)),
        EncodingChoice::Gsm7 | EncodingChoice::Auto => {
            // The first character neither GSM nor (when smart) replaceable decides; positions count in the
            // caller's text, before any replacement.
            let blocks = |c: char| gsm7::lookup(c).is_none() && !(smart && look_alike(c).is_some());
            let blocker = text.chars().enumerate().find(|&(_, c)| blocks(c));
            // A letter typed as base + combining accent (`e` + U+0301, as some systems store text) is
            // the same text as the precomposed `é`, which GSM has: composed, it costs one part, not three.
            let composed = blocker
                .is_some()
                .then(|| text.nfc().collect::<String>())
                .filter(|composed| !composed.chars().any(blocks));
            match blocker {
                Some(_) if let Some(composed) = composed => {
                    let text = if smart {
                        smart_replace(&composed)
                    } else {
                        composed
                    };
                    (TextCoding::Gsm7, Cow::Owned(text))
                }
                None if gsm7::is_gsm7(text) => (TextCoding::Gsm7, Cow::Borrowed(text)),
                None => (TextCoding::Gsm7, Cow::Owned(smart_replace(text))),
                Some((position, character)) if choice == EncodingChoice::Gsm7 => {
                    return Err(PduError::NotGsm7 {
                        character,
                        position,
                    });
                }
                Some(_) => (TextCoding::Ucs2, Cow::Borrowed(text)),
            }
        }
    };
    let total: usize = text.chars().map(|c| coding.cost(c)).sum();
    if total <= coding.single_limit() {
        return Ok(Plan {
            coding,
            ranges: std::iter::once(0..text.len()).collect(),
            remaining_in_last: coding.single_limit() - total,
            text,
        });
    }
    let limit = coding.part_limit();
    let mut ranges = Vec::with_capacity(total.div_ceil(limit));
    let (mut start, mut used) = (0, 0);
    // Cut between what a reader sees as one character: a letter and its combining accents, an emoji with
    // its skin tone or joined family, a flag's two letters. A phone shows each part as it arrives, and a
    // cut inside one shows a stray accent or half a flag (libgammu's and phones' splitters avoid it too).
    // A cluster longer than a whole part (a pile of combining marks) is cut between its characters.
    for (cluster_at, cluster) in text.grapheme_indices(true) {
        let cost: usize = cluster.chars().map(|c| coding.cost(c)).sum();
        if cost <= limit {
            if used + cost > limit {
                ranges.push(start..cluster_at);
                start = cluster_at;
                used = 0;
            }
            used += cost;
            continue;
        }
        for (offset, c) in cluster.char_indices() {
            let cost = coding.cost(c);
            if used + cost > limit {
                ranges.push(start..cluster_at + offset);
                start = cluster_at + offset;
                used = 0;
            }
            used += cost;
        }
    }
    ranges.push(start..text.len());
    if ranges.len() > MAX_PARTS {
        return Err(PduError::TooManyParts {
            parts: ranges.len(),
        });
    }
    Ok(Plan {
        coding,
        ranges,
        remaining_in_last: limit - used,
        text,
    })
}

/// `text` with every look-alike character replaced by its GSM equivalent.
pub fn smart_replace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match look_alike(c) {
            Some(replacement) => out.push_str(replacement),
            None => out.push(c),
        }
    }
    out
}

/// The first control character in `text` that no SMS alphabet gives a meaning to, with its position in
/// characters (from 0), or `None`. GSM 03.38 has line feed, carriage return and form feed (its page break);
/// tab is ordinary whitespace that phones show. Anything else from C0, DEL or C1 (a NUL from a database
/// column, a vertical tab that FileMaker exports for a line break) would force the whole text into UCS-2,
/// doubling its cost, and phones show it as a box or cut the text at it. With `smart`, the ones it maps to
/// GSM characters (vertical tab and NEL become a line feed) are not counted.
pub fn stray_control(text: &str, smart: bool) -> Option<(usize, char)> {
    text.chars().enumerate().find(|&(_, c)| {
        c.is_control()
            && !matches!(c, '\t' | '\n' | '\r' | '\u{0C}')
            && !(smart && look_alike(c).is_some())
    })
}

/// Characters that only look like GSM ones (typographic punctuation from word processors and phones),
/// with what to send instead. Invisible characters are dropped.
fn look_alike(c: char) -> Option<&'static str> {
    Some(match c {
        // Single quotes, apostrophes, primes and accents used as apostrophes.
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{2035}'
        | '\u{00B4}' | '\u{02B9}' | '\u{02BC}' | '\u{02C8}' | '`' | '\u{FF07}' => "'",
        // Double quotes, double primes and guillemets.
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{2036}'
        | '\u{00AB}' | '\u{00BB}' | '\u{02BA}' | '\u{FF02}' => "\"",
        '\u{2039}' => "<",
        '\u{203A}' => ">",
        // Hyphens, dashes and the minus sign.
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
        | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => "-",
        // Bullets and middle dots.
        '\u{2022}' | '\u{2023}' | '\u{2043}' | '\u{2219}' | '\u{25E6}' | '\u{25AA}'
        | '\u{00B7}' => "-",
        '\u{2024}' => ".",
        '\u{2025}' => "..",
        '\u{2026}' => "...",
        // Non-breaking and other spaces, and tab (not in GSM 03.38).
        '\t'
        | '\u{00A0}'
        | '\u{1680}'
        | '\u{2000}'..='\u{200A}'
        | '\u{202F}'
        | '\u{205F}'
        | '\u{3000}' => " ",
        // Line and paragraph separators; vertical tab and NEL, used for line breaks by some exports.
        '\u{2028}' | '\u{2029}' | '\u{0B}' | '\u{85}' => "\n",
        // Zero-width characters, word joiner, byte-order mark and soft hyphen: invisible, dropped.
        '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}' => "",
        '\u{02C6}' => "^",
        '\u{02DC}' | '\u{FF5E}' => "~",
        '\u{00A6}' => "|",
        '\u{2044}' | '\u{2215}' => "/",
        '\u{FF0C}' => ",",
        '\u{FF01}' => "!",
        '\u{FF1F}' => "?",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(text: &str, choice: EncodingChoice, smart: bool) -> SegmentInfo {
        plan(text, choice, smart).unwrap().info()
    }

    #[test]
    fn single_part_limits_are_160_septets_and_70_units() {
        let s = info(&"a".repeat(160), EncodingChoice::Auto, false);
        assert_eq!(
            (s.encoding, s.parts, s.remaining_in_last),
            (Encoding::Gsm7, 1, 0)
        );
        let s = info(&"a".repeat(161), EncodingChoice::Auto, false);
        assert_eq!((s.parts, s.remaining_in_last), (2, 153 * 2 - 161));
        let s = info(&"ж".repeat(70), EncodingChoice::Auto, false);
        assert_eq!(
            (s.encoding, s.parts, s.remaining_in_last),
            (Encoding::Ucs2, 1, 0)
        );
        let s = info(&"ж".repeat(71), EncodingChoice::Auto, false);
        assert_eq!((s.parts, s.remaining_in_last), (2, 67 * 2 - 71));
        let s = info("", EncodingChoice::Auto, false);
        assert_eq!((s.parts, s.remaining_in_last), (1, 160));
    }

    #[test]
    fn escapes_count_two_septets_and_are_never_split() {
        let s = info(&"€".repeat(80), EncodingChoice::Auto, false);
        assert_eq!(
            (s.encoding, s.parts, s.remaining_in_last),
            (Encoding::Gsm7, 1, 0)
        );
        // 152 plain septets then an escape: the escape cannot fit the first part's last septet.
        let text = format!("{}€{}", "a".repeat(152), "b".repeat(10));
        let p = plan(&text, EncodingChoice::Auto, false).unwrap();
        let parts: Vec<&str> = p.parts().collect();
        assert_eq!(parts[0], "a".repeat(152));
        assert_eq!(parts[1], format!("€{}", "b".repeat(10)));
    }

    #[test]
    fn surrogate_pairs_are_never_split() {
        let text = format!("{}😀{}", "ж".repeat(66), "ж".repeat(10));
        let p = plan(&text, EncodingChoice::Auto, false).unwrap();
        let parts: Vec<&str> = p.parts().collect();
        assert_eq!(parts[0], "ж".repeat(66));
        assert!(parts[1].starts_with('😀'));
        assert_eq!(p.info().remaining_in_last, 67 - 12);
    }

    /// Found against libgammu: a combining accent, a flag's second letter or a skin tone began the next
    /// part, so a phone showing the first part alone showed a bare letter or half a flag.
    #[test]
    fn what_a_reader_sees_as_one_character_is_never_split() {
        for (unit, what) in [
            (
                "\u{0928}\u{093F}",
                "Devanagari syllable (consonant + vowel sign)",
            ),
            ("\u{1F1FA}\u{1F1F8}", "flag"),
            ("\u{1F44D}\u{1F3FD}", "thumbs up with skin tone"),
        ] {
            // 66 units, then the cluster straddles the 67-unit boundary.
            let text = format!("{}{unit}{}", "ж".repeat(66), "ж".repeat(10));
            let p = plan(&text, EncodingChoice::Auto, false).unwrap();
            let parts: Vec<&str> = p.parts().collect();
            assert_eq!(parts[0], "ж".repeat(66), "{what}");
            assert!(parts[1].starts_with(unit), "{what}");
            assert_eq!(parts.concat(), text, "{what}");
        }
        // A cluster longer than a part is cut inside it rather than refused.
        let pile = format!("a{}", "\u{0301}".repeat(200));
        let p = plan(&pile, EncodingChoice::Ucs2, false).unwrap();
        assert_eq!(p.parts().collect::<String>(), pile);
        assert!(p.parts().all(|part| part.encode_utf16().count() <= 67));
    }

    #[test]
    fn decomposed_accents_are_composed_to_stay_in_gsm() {
        // "Café" with e + COMBINING ACUTE ACCENT: GSM 7-bit has é.
        let decomposed = "Cafe\u{301} r\u{E9}sum\u{E9}";
        let composed = info(decomposed, EncodingChoice::Auto, false);
        assert_eq!(composed.encoding, Encoding::Gsm7);
        assert_eq!(composed.text, "Caf\u{E9} r\u{E9}sum\u{E9}");
        assert!(info(decomposed, EncodingChoice::Gsm7, false).parts == 1);
        // A combining mark with no precomposed GSM letter (ḉ has no GSM form) stays as it came, in UCS-2.
        let other = info("c\u{327}\u{301}a", EncodingChoice::Auto, false);
        assert_eq!(other.encoding, Encoding::Ucs2);
        assert_eq!(other.text, "c\u{327}\u{301}a");
    }

    #[test]
    fn smart_encoding_turns_look_alikes_into_gsm() {
        let text =
            "\u{201C}Pay\u{201D} \u{2014} it\u{2019}s due\u{2026}\u{00A0}\u{2022} now\u{200B}";
        let plain = info(text, EncodingChoice::Auto, false);
        assert_eq!(plain.encoding, Encoding::Ucs2);
        let smart = info(text, EncodingChoice::Auto, true);
        assert_eq!(smart.encoding, Encoding::Gsm7);
        assert_eq!(smart.text, "\"Pay\" - it's due... - now");
        assert_eq!(smart.parts, 1);
    }

    #[test]
    fn smart_encoding_keeps_the_original_when_it_cannot_reach_gsm() {
        let s = info("\u{2019} Привет", EncodingChoice::Auto, true);
        assert_eq!(
            (s.encoding, s.text.as_str()),
            (Encoding::Ucs2, "\u{2019} Привет")
        );
    }

    #[test]
    fn smart_text_that_looks_unicode_costs_one_part_not_three() {
        let text = "\u{2019}".repeat(150);
        assert_eq!(info(&text, EncodingChoice::Auto, false).parts, 3);
        assert_eq!(info(&text, EncodingChoice::Auto, true).parts, 1);
    }

    #[test]
    fn stray_controls_are_found_but_gsm_ones_and_tab_are_not() {
        assert_eq!(stray_control("a\tb\r\nc\u{0C}d", false), None);
        assert_eq!(stray_control("due\u{0}now", false), Some((3, '\u{0}')));
        assert_eq!(stray_control("ж\u{7F}", false), Some((1, '\u{7F}')));
        assert_eq!(stray_control("x\u{9B}", true), Some((1, '\u{9B}')));
        // Smart encoding turns vertical tab and NEL into line feeds; BEL stays stray.
        assert_eq!(stray_control("a\u{0B}b\u{85}c", false), Some((1, '\u{0B}')));
        assert_eq!(stray_control("a\u{0B}b\u{85}c", true), None);
        assert_eq!(stray_control("a\u{0B}b\u{7}", true), Some((3, '\u{7}')));
        let smart = info("Line one\u{0B}line two", EncodingChoice::Auto, true);
        assert_eq!(
            (smart.text.as_str(), smart.encoding),
            ("Line one\nline two", Encoding::Gsm7)
        );
    }

    #[test]
    fn forced_encodings() {
        assert_eq!(
            info("abc", EncodingChoice::Ucs2, false).encoding,
            Encoding::Ucs2
        );
        assert_eq!(
            plan("ab\u{2019}ж", EncodingChoice::Gsm7, true).err(),
            Some(PduError::NotGsm7 {
                character: 'ж',
                position: 3
            })
        );
        assert_eq!(
            plan("ab\u{2019}", EncodingChoice::Gsm7, false).err(),
            Some(PduError::NotGsm7 {
                character: '\u{2019}',
                position: 2
            })
        );
        assert_eq!(info("ab\u{2019}", EncodingChoice::Gsm7, true).text, "ab'");
    }

    #[test]
    fn more_than_255_parts_is_refused() {
        assert!(plan(&"a".repeat(153 * 255), EncodingChoice::Auto, false).is_ok());
        assert_eq!(
            plan(&"a".repeat(153 * 255 + 1), EncodingChoice::Auto, false).err(),
            Some(PduError::TooManyParts { parts: 256 })
        );
    }
}
