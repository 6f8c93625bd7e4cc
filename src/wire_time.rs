//! How times look outside the process (API answers, CSV exports, webhook bodies): RFC 3339 in UTC with
//! exactly three fractional digits, `2026-11-23T03:51:32.720Z`.
//!
//! jiff's own `Display` drops trailing zeros (`.72Z` beside `.721Z`, none at all on a whole second), so the
//! precision changed from one value to the next and such strings did not sort as text, which is how a CSV
//! export or a log shipper compares them. The store keeps milliseconds, so three digits lose nothing.

use jiff::Timestamp;
use serde::Serializer;

/// The wire form of `at`.
pub fn format(at: Timestamp) -> String {
    format!("{at:.3}")
}

/// For `#[serde(serialize_with = "crate::wire_time::serialize")]`.
pub fn serialize<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{at:.3}"))
}

/// For `#[serde(serialize_with = "crate::wire_time::serialize_option")]`.
pub fn serialize_option<S: Serializer>(
    at: &Option<Timestamp>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_three_digits_in_utc() {
        let at = |s: &str| format(s.parse().unwrap());
        assert_eq!(at("2026-11-23T03:51:32.72Z"), "2026-11-23T03:51:32.720Z");
        assert_eq!(at("2026-11-23T03:51:32Z"), "2026-11-23T03:51:32.000Z");
        assert_eq!(
            at("2026-11-23T04:51:32.123456789+01:00"),
            "2026-11-23T03:51:32.123Z"
        );
    }

    #[test]
    fn serialises_as_a_json_string_or_null() {
        #[derive(serde::Serialize)]
        struct Row {
            #[serde(serialize_with = "serialize")]
            at: Timestamp,
            #[serde(serialize_with = "serialize_option")]
            maybe: Option<Timestamp>,
        }
        let row = Row {
            at: "2026-11-23T03:51:32.7Z".parse().unwrap(),
            maybe: None,
        };
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"{"at":"2026-11-23T03:51:32.700Z","maybe":null}"#
        );
    }
}
