//! JSON bodies read with repeated keys refused (and a leading byte order mark skipped).
//!
//! serde_json keeps the last of a repeated key, so `{"to": "+1415...", "to": "+1650..."}` would text the
//! second number without a word: for a collection agency that is a message to the wrong debtor. A form body
//! that repeats a field is refused (`Fields::from_urlencoded`); a JSON body is now refused the same way, at
//! any depth (a batch item, `metadata`), naming the field by its path.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body could not be read.
#[derive(Debug, PartialEq)]
pub enum StrictError {
    /// Not JSON (serde_json's message, with line and column).
    Malformed(String),
    /// A key given twice in one object: its path (`to`, `messages[2].to`, `metadata.account`).
    Repeated(String),
}

/// Parses `bytes` as one JSON value, refusing an object that gives a key twice. A leading UTF-8 byte order
/// mark is skipped (RFC 8259 allows a parser to ignore it): .NET's `Encoding.UTF8` writes one by default,
/// and refusing a CMS's every request over three invisible bytes helps nobody.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let repeated = RefCell::new(None);
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict {
        repeated: &repeated,
    }
    .deserialize(&mut reader)
    .and_then(|value| reader.end().map(|()| value));
    match (parsed, repeated.into_inner()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(path)) => Err(StrictError::Repeated(path)),
        (Err(error), None) => Err(StrictError::Malformed(error.to_string())),
    }
}

/// Builds a [`Value`] like serde_json's own, recording the path of the first repeated key it meets. The path
/// is built on the way out: each enclosing object or array prefixes its key or index as the error passes.
#[derive(Clone, Copy)]
struct Strict<'a> {
    repeated: &'a RefCell<Option<String>>,
}

impl Strict<'_> {
    /// Prefixes `step` to the path of a repeated key found inside.
    fn within(&self, step: impl FnOnce(&str) -> String) {
        if let Some(path) = self.repeated.borrow_mut().as_mut() {
            *path = step(path);
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity: serde_json never hands one over.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Value::Array(items)),
                Err(error) => {
                    let index = items.len();
                    self.within(|inner| format!("[{index}]{}", dotted(inner)));
                    return Err(error);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let message = format!("field `{key}` is given more than once");
                *self.repeated.borrow_mut() = Some(key);
                return Err(de::Error::custom(message));
            }
            match map.next_value_seed(self) {
                Ok(value) => {
                    object.insert(key, value);
                }
                Err(error) => {
                    self.within(|inner| format!("{key}{}", dotted(inner)));
                    return Err(error);
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// How an inner path follows its parent: `[2]` directly, a key after a dot.
fn dotted(inner: &str) -> String {
    if inner.starts_with('[') {
        inner.to_owned()
    } else {
        format!(".{inner}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_serde_json_reads() {
        let text =
            r#"{"to": "+14158906431", "n": [1, -2, 3.5, true, null, {"a": {}}], "s": "\u00e9"}"#;
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn a_repeated_key_is_refused_by_its_path() {
        let cases = [
            (r#"{"to": "+1", "to": "+2"}"#, "to"),
            (r#"{"metadata": {"a": 1, "a": 2}}"#, "metadata.a"),
            (
                r#"{"messages": [{"to": "+1"}, {"text": "x", "to": "+1", "to": "+2"}]}"#,
                "messages[1].to",
            ),
            (r#"[[{"k": 1}], [{"k": 1, "k": 1}]]"#, "[1][0].k"),
        ];
        for (text, path) in cases {
            assert_eq!(
                parse(text.as_bytes()),
                Err(StrictError::Repeated(path.into())),
                "{text}"
            );
        }
        // The same key in sibling objects is not a repeat.
        assert!(parse(br#"[{"to": "+1"}, {"to": "+2"}]"#).is_ok());
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        assert_eq!(
            parse(b"\xEF\xBB\xBF{\"to\": \"+1\"}").unwrap(),
            serde_json::json!({"to": "+1"})
        );
        assert!(matches!(
            parse(b"{}\xEF\xBB\xBF"),
            Err(StrictError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_json_keeps_serde_json_s_message() {
        let Err(StrictError::Malformed(message)) = parse(b"{\"to\": ") else {
            panic!("not malformed")
        };
        assert!(message.contains("line 1"), "{message}");
        assert!(matches!(parse(b"{} x"), Err(StrictError::Malformed(_))));
    }
}
