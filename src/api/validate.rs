//! The `POST /v1/messages` request: every field checked, normalised, and its error named.
//!
//! Decisions (also in `/openapi.json`):
//! - `priority`: an integer 0-9, 9 the most urgent, or `low` (2), `normal` (5, the default), `high` (8).
//! - `text`: at most [`MAX_PARTS`] SMS parts after encoding; blank text is refused.
//! - `send_at`, `expires_at`: RFC 3339 with an offset. `send_at` may lie up to [`CLOCK_SKEW`] in the past
//!   (a client's clock a little behind ours) and then means "now"; `expires_at` must be after both now and
//!   `send_at`.
//! - `reference`: at most 128 characters; `metadata`: a JSON object of at most 4 KiB serialised (in a form, a
//!   JSON string); `Idempotency-Key`: 1-255 visible ASCII characters.

use axum::http::HeaderMap;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{ApiError, ErrorCode};
use super::extract::{Fields, repeated, wrong_type};
use super::strict_json::{self, StrictError};
use crate::msisdn::{Msisdn, Region};
use crate::pdu::{self, EncodingChoice, PduError, SegmentInfo};
use crate::rules::Language;

/// Longest message accepted, in SMS parts.
pub const MAX_PARTS: usize = 10;
/// Longest client `reference`, in characters.
pub const MAX_REFERENCE: usize = 128;
/// Largest `metadata`, serialised, in bytes.
pub const MAX_METADATA: usize = 4096;
/// Longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// How far in the past `send_at` may be and still mean "now".
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);

/// Scheduling priority, 0-9, higher first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Priority(u8);

impl Priority {
    pub const LOW: Priority = Priority(2);
    pub const NORMAL: Priority = Priority(5);
    pub const HIGH: Priority = Priority(8);

    pub fn get(self) -> u8 {
        self.0
    }

    fn parse(value: &Value) -> Option<Priority> {
        let n = match value {
            Value::Number(n) => n.as_u64()?,
            Value::String(s) => match s.as_str() {
                "low" => return Some(Priority::LOW),
                "normal" => return Some(Priority::NORMAL),
                "high" => return Some(Priority::HIGH),
                digits => digits.parse().ok()?,
            },
            _ => return None,
        };
        u8::try_from(n).ok().filter(|n| *n <= 9).map(Priority)
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

/// A validated, normalised send request, ready for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    pub to: Msisdn,
    /// The text as it will be sent (after smart replacement when asked).
    pub text: String,
    pub send_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub priority: Priority,
    pub encoding: EncodingChoice,
    pub smart: bool,
    pub reference: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// A valid IANA zone name.
    pub tz: Option<String>,
    /// The region of the recipient's address, upper case (`US-MA`).
    pub region: Option<String>,
    /// The recipient's language: which of the configured opt-out notices the text gets.
    pub language: Language,
    /// What the segment calculator said about `text`.
    pub segments: SegmentInfo,
}

/// Characters a phone shows as nothing (zero-width spaces and joiners, direction marks, the byte order
/// mark, a soft hyphen): a text of them alone would reach the debtor as an empty SMS, or as the opt-out
/// notice alone, and still count against the contact caps.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    )
}

/// What validation needs from outside the request.
#[derive(Debug, Clone, Copy)]
pub struct Validator {
    pub now: Timestamp,
    /// Region for numbers written without `+` (`[server] default_region`).
    pub default_region: Option<Region>,
    /// `smart` when the request does not say (`[pdu] smart_encoding`).
    pub smart_default: bool,
}

impl Validator {
    /// Reads and checks every field; unknown fields are refused before anything else, so a misspelt
    /// `txt` is reported as such rather than as a missing `text`.
    pub fn send_request(&self, mut fields: Fields) -> Result<SendRequest, ApiError> {
        let to = fields.take_string_or_integer("to")?;
        let text = fields.take_string("text")?;
        let send_at = fields.take_string("send_at")?;
        let expires_at = fields.take_string("expires_at")?;
        let priority = fields.take("priority");
        let encoding = fields.take_string("encoding")?;
        let smart = fields.take_bool("smart")?.unwrap_or(self.smart_default);
        let reference = fields.take_string_or_integer("reference")?;
        let metadata = fields.take("metadata");
        let tz = fields.take_string("tz")?;
        let region = fields.take_string("region")?;
        let language = fields.take_string("language")?;
        fields.finish()?;
        let language = match language.as_deref() {
            None | Some("en") => Language::En,
            Some("es") => Language::Es,
            Some("fr") => Language::Fr,
            Some(other) => {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidLanguage,
                    "language",
                    format!("`language` must be en, es or fr, not {other:?}"),
                ));
            }
        };

        let to = self.number("to", to.as_deref().ok_or_else(|| missing("to"))?)?;
        let text = text.ok_or_else(|| missing("text"))?;
        if text.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
            return Err(ApiError::invalid(
                ErrorCode::EmptyText,
                "text",
                "`text` is empty (or only invisible characters)",
            ));
        }
        if let Some((position, c)) = pdu::stray_control(&text, smart) {
            return Err(ApiError::invalid(
                ErrorCode::ControlCharacter,
                "text",
                format!(
                    "`text` has the control character U+{:04X} at character {position} (from 0); only tab, \
                     line feed, carriage return and form feed may appear",
                    u32::from(c)
                ),
            ));
        }
        let send_at = send_at.map(|s| time("send_at", &s)).transpose()?;
        if let Some(at) = send_at
            && at < self.now - CLOCK_SKEW
        {
            return Err(ApiError::invalid(
                ErrorCode::InvalidTime,
                "send_at",
                format!("`send_at` {at} is in the past"),
            ));
        }
        let expires_at = expires_at.map(|s| time("expires_at", &s)).transpose()?;
        if let Some(at) = expires_at {
            let floor = send_at.map_or(self.now, |s| s.max(self.now));
            if at <= floor {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidTime,
                    "expires_at",
                    format!("`expires_at` {at} must be after now and after `send_at`"),
                ));
            }
        }
        let priority = match priority {
            None => Priority::default(),
            Some(v) => Priority::parse(&v).ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidPriority,
                    "priority",
                    "`priority` must be 0-9, low, normal or high",
                )
            })?,
        };
        let encoding = match encoding.as_deref() {
            None | Some("auto") => EncodingChoice::Auto,
            Some("gsm7") => EncodingChoice::Gsm7,
            Some("ucs2") => EncodingChoice::Ucs2,
            Some(_) => {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidEncoding,
                    "encoding",
                    "`encoding` must be auto, gsm7 or ucs2",
                ));
            }
        };
        if let Some(r) = &reference
            && r.chars().count() > MAX_REFERENCE
        {
            return Err(ApiError::invalid(
                ErrorCode::ReferenceTooLong,
                "reference",
                format!("`reference` is longer than {MAX_REFERENCE} characters"),
            ));
        }
        let metadata = metadata.map(parse_metadata).transpose()?;
        if let Some(zone) = &tz {
            if jiff::tz::TimeZone::get(zone).is_err() {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidTz,
                    "tz",
                    format!("unknown IANA time zone {zone:?}"),
                ));
            }
            if crate::rules::is_fixed_offset(zone) {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidTz,
                    "tz",
                    format!(
                        "{zone:?} is a fixed offset with no daylight saving: give the zone of the \
                         recipient's place, such as America/New_York, so quiet hours follow its summer time"
                    ),
                ));
            }
        }
        if let Some(code) = region
            .as_deref()
            .filter(|code| !crate::rules::is_region(code))
        {
            return Err(ApiError::invalid(
                ErrorCode::InvalidRegion,
                "region",
                format!(
                    "{code:?} is not an ISO 3166 region: a country such as \"MX\" or a state or province \
                     such as \"US-MA\" or \"CA-ON\""
                ),
            ));
        }
        let region = region.map(|code| code.to_ascii_uppercase());
        let too_long = |parts: usize| {
            ApiError::invalid(
                ErrorCode::TextTooLong,
                "text",
                format!("`text` needs {parts} SMS parts; the limit is {MAX_PARTS}"),
            )
        };
        let segments = pdu::segments(&text, encoding, smart).map_err(|e| match e {
            PduError::TooManyParts { parts } => too_long(parts),
            e => ApiError::invalid(
                ErrorCode::UnencodableText,
                "text",
                format!("`text` cannot be encoded: {e}"),
            ),
        })?;
        if segments.parts > MAX_PARTS {
            return Err(too_long(segments.parts));
        }
        Ok(SendRequest {
            to,
            text: segments.text.clone(),
            send_at,
            expires_at,
            priority,
            encoding,
            smart,
            reference,
            metadata,
            tz,
            region,
            language,
            segments,
        })
    }

    /// Normalises a number to E.164, reading national numbers in the default region; errors name `field`.
    pub fn number(&self, field: &str, raw: &str) -> Result<Msisdn, ApiError> {
        Msisdn::parse(raw, self.default_region).map_err(|e| {
            // A form body decodes an unescaped `+` as a space: `+44...` arrives as ` 44...`.
            let hint = if raw.starts_with(' ')
                && raw.trim_start().starts_with(|c: char| c.is_ascii_digit())
            {
                " (it starts with a space: in a form body, write + as %2B)"
            } else {
                ""
            };
            ApiError::invalid(
                ErrorCode::InvalidNumber,
                field,
                format!("`{field}` is not a valid phone number: {e}{hint}"),
            )
        })
    }
}

fn missing(field: &str) -> ApiError {
    ApiError::invalid(
        ErrorCode::MissingField,
        field,
        format!("`{field}` is required"),
    )
}

/// An RFC 3339 time with an offset (`send_at`, `expires_at`, and the log's `since` and `until`).
///
/// jiff also takes offsets of 24 hours and more (`+25:00`), which no place uses and RFC 3339 does not
/// allow (hours 00-23): a typo that would move a send by a day is refused, not read.
pub fn time(field: &str, value: &str) -> Result<Timestamp, ApiError> {
    use jiff::fmt::temporal::{Pieces, PiecesOffset};
    let offset_seconds = Pieces::parse(value).ok().and_then(|p| match p.offset() {
        Some(PiecesOffset::Numeric(n)) => Some(n.offset().seconds()),
        _ => None,
    });
    if offset_seconds.is_some_and(|s| s.abs() >= 24 * 3600) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidTime,
            field,
            format!(
                "`{field}` has an offset of 24 hours or more: RFC 3339 offsets run from -23:59 to +23:59"
            ),
        ));
    }
    value.parse::<Timestamp>().map_err(|_| {
        // A query string or form decodes an unescaped `+01:00` as ` 01:00`.
        let hint = if value.contains(' ') {
            " (it has a space: in a query string or form body, write + as %2B)"
        } else {
            ""
        };
        ApiError::invalid(
            ErrorCode::InvalidTime,
            field,
            format!("`{field}` must be an RFC 3339 time with an offset{hint}"),
        )
    })
}

fn parse_metadata(value: Value) -> Result<Map<String, Value>, ApiError> {
    let value = match value {
        // From a form: the JSON text of an object.
        Value::String(s) => strict_json::parse(s.as_bytes()).map_err(|error| match error {
            StrictError::Repeated(path) => repeated(&format!("metadata.{path}")),
            StrictError::Malformed(_) => wrong_type("metadata", "a JSON object"),
        })?,
        other => other,
    };
    let Value::Object(map) = value else {
        return Err(wrong_type("metadata", "a JSON object"));
    };
    let size = serde_json::to_vec(&map).map_or(usize::MAX, |v| v.len());
    if size > MAX_METADATA {
        return Err(ApiError::invalid(
            ErrorCode::MetadataTooLarge,
            "metadata",
            format!("`metadata` is {size} bytes; the limit is {MAX_METADATA}"),
        ));
    }
    Ok(map)
}

/// The `Idempotency-Key` header, if any.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| bad_idempotency_key("Idempotency-Key"))?;
    check_idempotency_key("Idempotency-Key", key).map(Some)
}

/// An idempotency key (the header, or a batch item's `idempotency_key`): 1-255 visible ASCII characters.
pub fn check_idempotency_key(field: &str, key: &str) -> Result<String, ApiError> {
    let key = key.trim();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(bad_idempotency_key(field));
    }
    Ok(key.to_owned())
}

fn bad_idempotency_key(field: &str) -> ApiError {
    ApiError::invalid(
        ErrorCode::InvalidIdempotencyKey,
        field,
        format!("`{field}` must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::Encoding;
    use serde_json::json;

    fn validator() -> Validator {
        Validator {
            now: "2026-11-22T12:00:00Z".parse().unwrap(),
            default_region: Some(Region(phonenumber::country::Id::DE)),
            smart_default: false,
        }
    }

    fn check(body: Value) -> Result<SendRequest, ApiError> {
        validator().send_request(Fields::from_value(body, None).unwrap())
    }

    fn err(body: Value) -> (&'static str, Option<String>) {
        let e = check(body).unwrap_err();
        assert_eq!(e.status().as_u16(), 422, "{e:?}");
        (e.code(), e.field().map(str::to_owned))
    }

    fn is(code: &'static str, field: &str) -> (&'static str, Option<String>) {
        (code, Some(field.to_owned()))
    }

    #[test]
    fn numbers_normalise_to_e164() {
        let v = validator();
        assert_eq!(
            v.number("to", "+49 151 23456789").unwrap().as_str(),
            "+4915123456789"
        );
        assert_eq!(
            v.number("to", "0151 23456789").unwrap().as_str(),
            "+4915123456789"
        );
        assert_eq!(
            v.number("to", "not a number").unwrap_err().code(),
            "invalid_number"
        );
        assert_eq!(
            v.number("number", "+49 1").unwrap_err().field(),
            Some("number")
        );
    }

    #[test]
    fn a_valid_request_is_normalised_and_segmented() {
        let req = check(json!({
            "to": "0151 23456789", "text": "x".repeat(161), "send_at": "2026-11-22T13:00:00+01:00",
            "expires_at": "2026-11-23T12:00:00Z", "priority": "high", "reference": "case-7",
            "metadata": {"debtor": 42}, "tz": "Europe/Berlin", "smart": true
        }))
        .unwrap();
        assert_eq!(req.to.as_str(), "+4915123456789");
        assert_eq!(
            (req.segments.parts, req.segments.encoding),
            (2, Encoding::Gsm7)
        );
        assert_eq!(req.send_at, Some("2026-11-22T12:00:00Z".parse().unwrap()));
        assert_eq!(req.priority, Priority::HIGH);
        assert_eq!(req.metadata.unwrap()["debtor"], 42);
        let ucs2 = check(json!({"to": "+4915123456789", "text": "Zahlung fällig 😀"})).unwrap();
        assert_eq!(ucs2.segments.encoding, Encoding::Ucs2);
        // A smart "’" becomes "'" and stays GSM 7-bit.
        let smart =
            check(json!({"to": "+4915123456789", "text": "it’s due", "smart": true})).unwrap();
        assert_eq!(
            (smart.text.as_str(), smart.segments.encoding),
            ("it's due", Encoding::Gsm7)
        );
    }

    #[test]
    fn long_or_unencodable_text_is_refused() {
        let body = |text: String, encoding: &str| json!({"to": "+4915123456789", "text": text, "encoding": encoding});
        // 10 concatenated GSM parts hold 10 * 153 septets.
        assert!(check(body("x".repeat(1530), "auto")).is_ok());
        assert_eq!(
            err(body("x".repeat(1531), "auto")),
            is("text_too_long", "text")
        );
        assert_eq!(
            err(body("x".repeat(100_000), "auto")),
            is("text_too_long", "text")
        );
        assert_eq!(
            err(body("😀".into(), "gsm7")),
            is("unencodable_text", "text")
        );
    }

    #[test]
    fn field_errors_name_their_field() {
        let ok = json!({"to": "+4915123456789", "text": "hi"});
        let with = |k: &str, v: Value| {
            let mut b = ok.clone();
            b[k] = v;
            b
        };
        assert_eq!(err(json!({"text": "hi"})), is("missing_field", "to"));
        assert_eq!(err(with("to", json!("12"))), is("invalid_number", "to"));
        assert_eq!(err(with("text", json!("  "))), is("empty_text", "text"));
        // Zero-width spaces, a byte order mark, a direction mark: nothing a phone would show.
        assert_eq!(
            err(with("text", json!("\u{200B}\u{200B} \u{FEFF}\u{200E}"))),
            is("empty_text", "text")
        );
        assert!(check(with("text", json!("\u{200B}ok"))).is_ok());
        assert_eq!(
            err(with("text", json!("pay\u{0}now"))),
            is("control_character", "text")
        );
        assert_eq!(
            err(with("text", json!("pay\u{0B}now"))),
            is("control_character", "text")
        );
        let smart =
            check(json!({"to": "+4915123456789", "text": "pay\u{0B}now", "smart": true})).unwrap();
        assert_eq!(smart.text, "pay\nnow");
        assert_eq!(err(with("txt", json!("x"))), is("unknown_field", "txt"));
        assert_eq!(
            err(with("send_at", json!("tomorrow"))),
            is("invalid_time", "send_at")
        );
        assert_eq!(
            err(with("send_at", json!("2026-11-22T11:58:00Z"))),
            is("invalid_time", "send_at")
        );
        assert_eq!(
            err(with("expires_at", json!("2026-11-22T11:59:00Z"))),
            is("invalid_time", "expires_at")
        );
        let mut b = with("send_at", json!("2026-11-23T09:00:00+01:00"));
        b["expires_at"] = json!("2026-11-23T07:00:00Z");
        assert_eq!(err(b), is("invalid_time", "expires_at"));
        assert_eq!(
            err(with("priority", json!(10))),
            is("invalid_priority", "priority")
        );
        assert_eq!(
            err(with("priority", json!("urgent"))),
            is("invalid_priority", "priority")
        );
        assert_eq!(
            err(with("encoding", json!("latin1"))),
            is("invalid_encoding", "encoding")
        );
        assert_eq!(
            err(with("reference", json!("r".repeat(129)))),
            is("reference_too_long", "reference")
        );
        assert_eq!(
            err(with("metadata", json!([1]))),
            is("invalid_type", "metadata")
        );
        assert_eq!(
            err(with("metadata", json!({"k": "v".repeat(4100)}))),
            is("metadata_too_large", "metadata")
        );
        assert_eq!(
            err(with("tz", json!("Mars/Olympus"))),
            is("invalid_tz", "tz")
        );
        assert_eq!(
            err(with("smart", json!("maybe"))),
            is("invalid_type", "smart")
        );
        assert_eq!(err(with("text", json!(["a"]))), is("invalid_type", "text"));
    }

    #[test]
    fn priorities() {
        assert_eq!(Priority::parse(&json!(0)), Some(Priority(0)));
        assert_eq!(Priority::parse(&json!("9")), Some(Priority(9)));
        assert_eq!(Priority::parse(&json!("high")), Some(Priority::HIGH));
        assert_eq!(Priority::parse(&json!(-1)), None);
        assert_eq!(Priority::parse(&json!(1.5)), None);
    }

    #[test]
    fn idempotency_keys() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h).unwrap(), None);
        h.insert("idempotency-key", "order-42".parse().unwrap());
        assert_eq!(idempotency_key(&h).unwrap().as_deref(), Some("order-42"));
        h.insert("idempotency-key", "k".repeat(256).parse().unwrap());
        assert_eq!(
            idempotency_key(&h).unwrap_err().code(),
            "invalid_idempotency_key"
        );
    }

    proptest::proptest! {
        /// Whatever a client sends, the answer is a value or a 4xx naming what is wrong: never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let fields = Fields::from_json(&bytes).or_else(|_| Fields::from_urlencoded(&bytes));
            if let Err(e) = fields.and_then(|fields| validator().send_request(fields)) {
                proptest::prop_assert!(e.status().is_client_error());
            }
        }

        #[test]
        fn arbitrary_field_values_never_panic(
            to in "\\PC{0,20}", text in "\\PC{0,400}", send_at in "\\PC{0,30}", priority in "\\PC{0,6}",
            encoding in proptest::sample::select(vec!["auto", "gsm7", "ucs2", "latin1"]), smart: bool,
            tz in "\\PC{0,20}", pick in 0u8..8,
        ) {
            // Each case keeps a valid recipient and varies the text, plus at most one other field, so the
            // encoder is reached as often as the field checks.
            let mut body = json!({"to": "+4915123456789", "text": text, "encoding": encoding, "smart": smart});
            match pick {
                0 => body["to"] = json!(to),
                1 => body["send_at"] = json!(send_at),
                2 => body["priority"] = json!(priority),
                3 => body["tz"] = json!(tz),
                _ => {}
            }
            if let Err(e) = check(body) {
                proptest::prop_assert_eq!(e.status().as_u16(), 422);
                proptest::prop_assert!(e.field().is_some());
            }
        }
    }
}
