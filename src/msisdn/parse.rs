//! Reading a number as a CMS or a person wrote it into a calling code and a national significant number,
//! step for step as libphonenumber's `PhoneNumberUtil.parse` does: the reference every carrier, CRM and
//! phone agrees with, and the one a debtor's number must be read by.
//!
//! The `phonenumber` crate's parser departs from it where it hurts a collection agency most: it strips
//! the *default* region's national prefix from a number written with another country's code, so with
//! region US `+49 151 23456789` lost the `1` after the code and became another valid German number (a
//! text about a debt to a stranger); it strips a region's prefix when what is left is no number, and
//! reads a national number that begins with the country's code (`9123456789` in India) as if the code
//! were written. Only libphonenumber's numbering plans are used here, through [`super::plan`].

use std::sync::LazyLock;

use phonenumber::metadata::Metadata;
use regex::Regex;

use super::MsisdnError;
use super::plan::{self, Length, Plan};

/// libphonenumber's limits: characters of input, digits of a national significant number.
const MAX_INPUT_CHARS: usize = 250;
const MIN_NATIONAL: usize = 2;
const MAX_NATIONAL: usize = 17;

/// A number as read; validity is [`plan::is_valid`]'s business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parsed {
    pub code: u16,
    /// ASCII digits, leading zeros kept (Italian landlines have them).
    pub national: String,
}

/// Reads `input`; numbers written without `+` (or an international prefix) are read in `region`.
pub(super) fn parse(input: &str, region: Option<&'static Metadata>) -> Result<Parsed, MsisdnError> {
    if input.chars().count() > MAX_INPUT_CHARS {
        return Err(MsisdnError::NotANumber);
    }
    let mut number = for_parsing(input)?;
    if !viable(&number) {
        return Err(MsisdnError::NotANumber);
    }
    if region.is_none() && !PLUS_START.is_match(&number) {
        return Err(MsisdnError::NoRegion);
    }
    strip_extension(&mut number);
    let default = match region {
        Some(meta) => Some((meta, Plan::of(meta).ok_or(MsisdnError::NotANumber)?)),
        None => None,
    };
    let default = default.as_ref().map(|(meta, plan)| (*meta, plan.as_ref()));
    let extracted = match extract_code(&number, default) {
        Err(Unread::UnknownCode) => {
            // A `+` before an international prefix (`+011 44 ...`) or before digits that start with the
            // region's own code: read again without it.
            let plus = PLUS_START.find(&number).ok_or(MsisdnError::NotANumber)?;
            let retried = extract_code(&number[plus.end()..], default).ok().flatten();
            Some(retried.ok_or(MsisdnError::NotANumber)?)
        }
        Err(Unread::NotANumber) => return Err(MsisdnError::NotANumber),
        Ok(found) => found,
    };
    // The national prefix is read with the plan of the country the number is in, not the default region's.
    let (code, mut national, meta) = match extracted {
        Some((code, national)) => (code, national, plan::code_meta(code)),
        None => {
            let (meta, _) = default.ok_or(MsisdnError::NoRegion)?;
            (meta.country_code(), normalize(&number), Some(meta))
        }
    };
    if national.len() < MIN_NATIONAL {
        return Err(MsisdnError::NotANumber);
    }
    if let Some(plan) = meta.and_then(Plan::of)
        && let Some(stripped) = plan.strip_national_prefix(&national)
        && !matches!(
            plan.length(&stripped),
            Length::TooShort | Length::LocalOnly | Length::Invalid
        )
    {
        national = stripped;
    }
    if !(MIN_NATIONAL..=MAX_NATIONAL).contains(&national.len()) {
        return Err(MsisdnError::NotANumber);
    }
    Ok(Parsed { code, national })
}

/// Why a calling code could not be read.
enum Unread {
    /// `+` or an international prefix followed by digits that start no calling code.
    UnknownCode,
    NotANumber,
}

/// The calling code and what follows it, when the number says which: after `+`, after the region's
/// international prefix, or when it starts with the region's own code and reads better without it
/// (libphonenumber's `maybeExtractCountryCode`). `None`: a national number of the region.
fn extract_code(
    number: &str,
    default: Option<(&'static Metadata, &Plan)>,
) -> Result<Option<(u16, String)>, Unread> {
    if number.is_empty() {
        return Ok(None);
    }
    if let Some(plus) = PLUS_START.find(number) {
        return international(&normalize(&number[plus.end()..])).map(Some);
    }
    let full = normalize(number);
    let Some((meta, plan)) = default else {
        return Ok(None);
    };
    if let Some(rest) = plan.after_idd(&full) {
        return international(rest).map(Some);
    }
    let code = meta.country_code();
    if let Some(rest) = full.strip_prefix(&code.to_string()) {
        let national = plan
            .strip_national_prefix(rest)
            .unwrap_or_else(|| rest.to_owned());
        let better =
            !plan.general_pattern_matches(&full) && plan.general_pattern_matches(&national);
        if better || plan.length(&full) == Length::TooLong {
            return Ok(Some((code, national)));
        }
    }
    Ok(None)
}

/// Digits after `+` or an international prefix: a calling code of one to three digits, then the rest.
fn international(digits: &str) -> Result<(u16, String), Unread> {
    if digits.len() <= MIN_NATIONAL {
        return Err(Unread::NotANumber);
    }
    if digits.starts_with('0') {
        return Err(Unread::UnknownCode);
    }
    (1..=3)
        .filter_map(|len| {
            let code: u16 = digits.get(..len)?.parse().ok()?;
            plan::numbering()
                .region(&code)
                .map(|_| (code, digits[len..].to_owned()))
        })
        .next()
        .ok_or(Unread::UnknownCode)
}

/// The part of `input` that can be a number: a `tel:` URI's number with its global `phone-context`, or
/// the text from the first digit or `+` without trailing punctuation or a second number; an ISDN
/// subaddress is dropped (libphonenumber's `buildNationalNumberForParsing`).
fn for_parsing(input: &str) -> Result<String, MsisdnError> {
    const CONTEXT: &str = ";phone-context=";
    let mut number = match input.find(CONTEXT) {
        Some(at) => {
            let rest = &input[at + CONTEXT.len()..];
            let context = rest.split(';').next().unwrap_or("");
            if !(GLOBAL_DIGITS.is_match(context) || DOMAIN_NAME.is_match(context)) {
                return Err(MsisdnError::NotANumber);
            }
            let mut number = String::new();
            if context.starts_with('+') {
                number.push_str(context);
            }
            let from = input.find("tel:").map_or(0, |tel| tel + "tel:".len());
            number.push_str(input.get(from..at).unwrap_or(""));
            number
        }
        None => possible_number(input).to_owned(),
    };
    if let Some(at) = number.find(";isub=")
        && at > 0
    {
        number.truncate(at);
    }
    Ok(number)
}

/// libphonenumber's `extractPossibleNumber`.
fn possible_number(input: &str) -> &str {
    let Some(start) = VALID_START.find(input) else {
        return "";
    };
    let mut number = &input[start.start()..];
    if let Some(end) = UNWANTED_END.find(number) {
        number = &number[..end.start()];
    }
    if let Some(second) = SECOND_NUMBER.find(number) {
        number = &number[..second.start()];
    }
    number
}

/// Shaped like a phone number at all: two digits, or three digits among punctuation, letters and an
/// extension (libphonenumber's `isViablePhoneNumber`).
fn viable(number: &str) -> bool {
    number.chars().count() >= MIN_NATIONAL && VALID_NUMBER.is_match(number)
}

/// Drops an extension (`x123`, `ext. 123`, `;ext=123`, `,,123`): SMS cannot reach one.
fn strip_extension(number: &mut String) {
    if let Some(extension) = EXTENSION_AT_END.find(number)
        && viable(&number[..extension.start()])
    {
        number.truncate(extension.start());
    }
}

/// Digits only, in ASCII: letters become keypad digits when there are three or more of them
/// (`1-800-FLOWERS`), otherwise everything but digits (of any script) is dropped.
fn normalize(number: &str) -> String {
    if number.chars().filter(char::is_ascii_alphabetic).count() >= 3 {
        number.chars().filter_map(keypad).collect()
    } else {
        number
            .chars()
            .filter_map(decimal)
            .filter_map(|digit| char::from_digit(digit, 10))
            .collect()
    }
}

/// An ASCII digit as it is, a letter as the phone keypad has it.
fn keypad(c: char) -> Option<char> {
    let digit = match c.to_ascii_uppercase() {
        '0'..='9' => return Some(c),
        'A'..='C' => '2',
        'D'..='F' => '3',
        'G'..='I' => '4',
        'J'..='L' => '5',
        'M'..='O' => '6',
        'P'..='S' => '7',
        'T'..='V' => '8',
        'W'..='Z' => '9',
        _ => return None,
    };
    Some(digit)
}

/// The value of a decimal digit of any script (full-width `５`, Arabic-Indic `٥`). Unicode encodes each
/// script's digits as runs of ten from zero, so the value is the distance from the run's start.
fn decimal(c: char) -> Option<u32> {
    if let Some(digit) = c.to_digit(10) {
        return Some(digit);
    }
    let is_digit = |c: char| {
        let mut buffer = [0; 4];
        DIGIT.is_match(c.encode_utf8(&mut buffer))
    };
    if !is_digit(c) {
        return None;
    }
    let mut start = u32::from(c);
    while let Some(before) = start.checked_sub(1).and_then(char::from_u32) {
        if !is_digit(before) {
            break;
        }
        start -= 1;
    }
    Some((u32::from(c) - start) % 10)
}

const PLUS_CHARS: &str = "+\u{FF0B}";
/// Punctuation people write in numbers, as libphonenumber lists it (inside a character class).
const PUNCTUATION: &str = "-x\u{2010}-\u{2015}\u{2212}\u{30FC}\u{FF0D}-\u{FF0F} \u{00A0}\u{00AD}\u{200B}\u{2060}\u{3000}()\u{FF08}\u{FF09}\u{FF3B}\u{FF3D}.\\[\\]/~\u{2053}\u{223C}\u{FF5E}";

/// libphonenumber's extension notations, for parsing.
fn extension_patterns() -> String {
    let separator = "[ \u{00A0}\\t,]*";
    let after_label = "[:\\.\u{FF0E}]?[ \u{00A0}\\t,-]*";
    let explicit_labels = "(?:e?xt(?:ensi(?:o\u{0301}?|\u{00F3}))?n?|\u{FF45}?\u{FF58}\u{FF54}\u{FF4E}?|\u{0434}\u{043E}\u{0431}|anexo)";
    let ambiguous_labels = "(?:[x\u{FF58}#\u{FF03}~\u{FF5E}]|int|\u{FF49}\u{FF4E}\u{FF54})";
    let no_comma = "[ \u{00A0}\\t]*";
    let digits = |max: u8| format!("(\\p{{Nd}}{{1,{max}}})");
    [
        format!(";ext={}", digits(20)),
        format!("{separator}{explicit_labels}{after_label}{}#?", digits(20)),
        format!("{separator}{ambiguous_labels}{after_label}{}#?", digits(9)),
        format!("[- ]+{}#", digits(6)),
        format!("{no_comma}(?:,{{2}}|;){after_label}{}#?", digits(15)),
        format!("{no_comma}(?:,)+{after_label}{}#?", digits(9)),
    ]
    .join("|")
}

fn regex(pattern: &str) -> Regex {
    // The patterns are constants of this file; a test compiles every one.
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern}: {e}"))
}

static PLUS_START: LazyLock<Regex> = LazyLock::new(|| regex(&format!("^[{PLUS_CHARS}]+")));
static VALID_START: LazyLock<Regex> = LazyLock::new(|| regex(&format!("[{PLUS_CHARS}\\p{{Nd}}]")));
static UNWANTED_END: LazyLock<Regex> = LazyLock::new(|| regex(r"[^\p{N}\p{L}#]+$"));
static SECOND_NUMBER: LazyLock<Regex> = LazyLock::new(|| regex(r"[\\/] *x"));
static DIGIT: LazyLock<Regex> = LazyLock::new(|| regex(r"^\p{Nd}$"));
static VALID_NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        "(?i)^(?:\\p{{Nd}}{{{MIN_NATIONAL}}}|[{PLUS_CHARS}]*(?:[{PUNCTUATION}*]*\\p{{Nd}}){{3,}}[{PUNCTUATION}*A-Za-z\\p{{Nd}}]*(?:{})?)$",
        extension_patterns()
    ))
});
static EXTENSION_AT_END: LazyLock<Regex> =
    LazyLock::new(|| regex(&format!("(?i)(?:{})$", extension_patterns())));
static GLOBAL_DIGITS: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^\+(?:\p{Nd}|[\-\.\(\)]?)*\p{Nd}(?:\p{Nd}|[\-\.\(\)]?)*$"));
static DOMAIN_NAME: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"^(?:[A-Za-z\p{Nd}]+(?:-*[A-Za-z\p{Nd}])*\.)*[A-Za-z]+(?:-*[A-Za-z\p{Nd}])*\.?$")
});

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &str, region: &str) -> Result<(u16, String), MsisdnError> {
        parse(input, plan::region_meta(region)).map(|parsed| (parsed.code, parsed.national))
    }

    fn ok(code: u16, national: &str) -> Result<(u16, String), MsisdnError> {
        Ok((code, national.to_owned()))
    }

    #[test]
    fn every_built_in_pattern_compiles() {
        for pattern in [
            &PLUS_START,
            &VALID_START,
            &UNWANTED_END,
            &SECOND_NUMBER,
            &DIGIT,
            &VALID_NUMBER,
            &EXTENSION_AT_END,
            &GLOBAL_DIGITS,
            &DOMAIN_NAME,
        ] {
            LazyLock::force(pattern);
        }
    }

    #[test]
    fn another_countrys_number_keeps_its_digits_whatever_the_default_region() {
        // With region US the crate stripped `1` (the US national prefix) after +49: another valid number.
        assert_eq!(read("+4915123456789", "US"), ok(49, "15123456789"));
        assert_eq!(read("+1 805 555 0123", "RU"), ok(1, "8055550123"));
        assert_eq!(read("011 49 151 23456789", "US"), ok(49, "15123456789"));
        // The number's own country's prefix is stripped, not the default region's: +44 (0)20 ...
        assert_eq!(read("+44 (0)20 7946 0958", "US"), ok(44, "2079460958"));
    }

    #[test]
    fn national_numbers_that_start_like_the_country_code_are_national() {
        assert_eq!(read("9123456789", "IN"), ok(91, "9123456789"));
        assert_eq!(read("3912345678", "IT"), ok(39, "3912345678"));
        // Too long for a US national number: the leading 1 is the country code.
        assert_eq!(read("14158906431", "US"), ok(1, "4158906431"));
        assert_eq!(read("8 (812) 123-45-67", "RU"), ok(7, "8121234567"));
    }

    #[test]
    fn digits_letters_and_extensions_are_read_as_libphonenumber_reads_them() {
        assert_eq!(read("＋１２０１５５５０１２３", "US"), ok(1, "2015550123"));
        assert_eq!(read("+1\u{a0}201-555-0123", "US"), ok(1, "2015550123"));
        assert_eq!(read("+12015550123;ext=123", "US"), ok(1, "2015550123"));
        assert_eq!(
            read("tel:+1-201-555-0123;isub=12", "US"),
            ok(1, "2015550123")
        );
        assert_eq!(
            read("tel:201-555-0123;phone-context=+1", "GB"),
            ok(1, "2015550123")
        );
        assert_eq!(read("(201) 555-0123 ext. 45", "US"), ok(1, "2015550123"));
        assert_eq!(read("1-800-FLOWERS", "US"), ok(1, "8003569377"));
        // Fewer than three letters are not a vanity number: they are dropped, not dialled.
        assert_eq!(read("+1415555267a", "US"), ok(1, "415555267"));
        assert_eq!(read("hello", "US"), Err(MsisdnError::NotANumber));
        assert_eq!(read("4158906431", "ZZ"), Err(MsisdnError::NoRegion));
        assert_eq!(decimal('٣'), Some(3));
        assert_eq!(decimal('𝟗'), Some(9));
        assert_eq!(decimal('x'), None);
    }
}
