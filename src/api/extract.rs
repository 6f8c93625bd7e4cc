//! Body and query extractors whose rejections are [`ApiError`]s.
//!
//! Requests are read into [`Fields`], a JSON object (or a form/query string turned into one, every value a
//! string), and handlers take the fields they know one by one. Whatever is left is an unknown field, reported
//! by name. Reading field by field, instead of deserialising into a struct, is what lets every error name the
//! field at fault and lets one validator serve JSON and form bodies alike.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};

use super::error::{ApiError, ErrorCode};
use super::strict_json::{self, StrictError};

/// Named request fields, consumed as they are read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    map: Map<String, Value>,
}

/// A body that may be JSON or `application/x-www-form-urlencoded` (`POST /v1/messages`).
#[derive(Debug)]
pub struct JsonOrForm(pub Fields);

/// A body that must be a JSON object.
#[derive(Debug)]
pub struct JsonObject(pub Fields);

/// The query string as fields (every value a string).
#[derive(Debug)]
pub struct QueryFields(pub Fields);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = raw
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    // JSON is UTF-8 by definition (RFC 8259); a form in another charset would be decoded as UTF-8 and
    // garbled, so it is refused rather than guessed at.
    let charset = raw.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
    });
    if charset.is_some_and(|c| c != "utf-8" && c != "utf8" && c != "us-ascii") {
        return Err(ApiError::UnsupportedMediaType {
            given: raw,
            accepted: "application/json or application/x-www-form-urlencoded, in UTF-8",
        });
    }
    match essence.as_str() {
        "application/json" => Ok(BodyKind::Json),
        "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
        _ if essence.starts_with("application/") && essence.ends_with("+json") => {
            Ok(BodyKind::Json)
        }
        _ => Err(ApiError::UnsupportedMediaType {
            given: raw,
            accepted: "application/json or application/x-www-form-urlencoded",
        }),
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::MalformedBody(rejection.body_text())
        }
    })
}

impl Fields {
    /// Fields from a JSON document, which must be an object and repeat no key (at any depth).
    pub fn from_json(bytes: &[u8]) -> Result<Fields, ApiError> {
        match strict_json::parse(bytes) {
            Ok(value) => Fields::from_value(value, None),
            Err(StrictError::Malformed(message)) => Err(ApiError::MalformedBody(message)),
            Err(StrictError::Repeated(path)) => Err(repeated(&path)),
        }
    }

    /// Fields from a JSON value; `field` names it in the error when it is not an object.
    pub fn from_value(value: Value, field: Option<&str>) -> Result<Fields, ApiError> {
        match value {
            Value::Object(map) => Ok(Fields { map }),
            _ => Err(ApiError::Invalid {
                code: ErrorCode::InvalidBody,
                message: "expected a JSON object".into(),
                field: field.map(str::to_owned),
            }),
        }
    }

    /// Fields from `a=1&b=2`; a name given twice is an error rather than a silent pick.
    pub fn from_urlencoded(bytes: &[u8]) -> Result<Fields, ApiError> {
        // A form decodes a bare `+` as a space, so `to=+4915...` would be read as a national number of the
        // default region: with region DE that is another valid number (+49 4915...). Refused, not guessed.
        let bare_plus = bytes.split(|&b| b == b'&').any(|pair| {
            pair.strip_prefix(b"to=")
                .is_some_and(|v| v.starts_with(b"+"))
        });
        if bare_plus {
            return Err(ApiError::invalid(
                ErrorCode::InvalidNumber,
                "to",
                "`to` starts with a + that a form body or query string reads as a space: write it as %2B",
            ));
        }
        // `form_urlencoded` decodes bytes that are not UTF-8 (a Latin-1 `caf%E9`) to U+FFFD, which would
        // go to the debtor as "caf�", in UCS-2 at twice the cost: refused instead.
        for piece in bytes.split(|&b| b == b'&' || b == b'=') {
            if percent_encoding::percent_decode(piece)
                .decode_utf8()
                .is_err()
            {
                return Err(ApiError::MalformedBody(format!(
                    "{:?} is not UTF-8 once decoded: send form bodies and query strings in UTF-8",
                    String::from_utf8_lossy(piece)
                )));
            }
        }
        let mut map = Map::new();
        for (name, value) in form_urlencoded::parse(bytes) {
            if map
                .insert(name.to_string(), Value::String(value.into_owned()))
                .is_some()
            {
                return Err(repeated(&name));
            }
        }
        Ok(Fields { map })
    }

    /// Removes and returns a field; JSON `null` counts as absent.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    /// A string field; anything else is 422 `invalid_type`.
    pub fn take_string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    /// A string field that may also be a JSON integer, read as its digits: phone numbers and account
    /// references are often exported as numbers. Only whole numbers: `4.158906431e9` is no phone number.
    pub fn take_string_or_integer(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    /// A boolean field: JSON `true`/`false`, or the strings `true`/`false`/`1`/`0` from a form.
    pub fn take_bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) => match s.as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(wrong_type(name, "true or false")),
            },
            Some(_) => Err(wrong_type(name, "true or false")),
        }
    }

    /// Ends reading: any field not taken is unknown, and reported by name.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(name) => Err(ApiError::invalid(
                ErrorCode::UnknownField,
                name,
                format!("unknown field `{name}`"),
            )),
        }
    }
}

/// 422 `duplicate_field`: a request that names a field twice is ambiguous, not a choice to make for the
/// sender.
pub fn repeated(field: &str) -> ApiError {
    ApiError::invalid(
        ErrorCode::DuplicateField,
        field,
        format!("field `{field}` is given more than once"),
    )
}

/// 422 `invalid_type` on `field`.
pub fn wrong_type(field: &str, expected: &str) -> ApiError {
    ApiError::invalid(
        ErrorCode::InvalidType,
        field,
        format!("`{field}` must be {expected}"),
    )
}

impl<S: Send + Sync> FromRequest<S> for JsonOrForm {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let kind = body_kind(req.headers())?;
        let bytes = read_body(req, state).await?;
        let fields = match kind {
            BodyKind::Json => Fields::from_json(&bytes)?,
            BodyKind::Form => Fields::from_urlencoded(&bytes)?,
        };
        Ok(JsonOrForm(fields))
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_only = |given: String| ApiError::UnsupportedMediaType {
            given,
            accepted: "application/json",
        };
        match body_kind(req.headers()) {
            Ok(BodyKind::Json) => {}
            Ok(BodyKind::Form) => {
                return Err(json_only("application/x-www-form-urlencoded".into()));
            }
            Err(ApiError::UnsupportedMediaType { given, .. }) => return Err(json_only(given)),
            Err(other) => return Err(other),
        }
        let bytes = read_body(req, state).await?;
        Ok(JsonObject(Fields::from_json(&bytes)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryFields {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(QueryFields(Fields::from_urlencoded(query.as_bytes())?))
    }
}

/// A single path parameter; a rejection (bad percent-encoding) becomes a 400 naming the parameter.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| PathParam(p))
            .map_err(|rejection| ApiError::BadRequest {
                code: ErrorCode::InvalidPath,
                message: rejection.body_text(),
                field: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_is_reported_by_name() {
        let mut fields = Fields::from_json(br#"{"to": "+1", "colour": "red"}"#).unwrap();
        assert_eq!(fields.take_string("to").unwrap().as_deref(), Some("+1"));
        let err = fields.finish().unwrap_err();
        assert_eq!(err.code(), "unknown_field");
        assert_eq!(err.field(), Some("colour"));
    }

    #[test]
    fn a_json_field_given_twice_is_422_by_name() {
        let err =
            Fields::from_json(br#"{"to": "+14158906431", "to": "+16505550100"}"#).unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.code(), err.field()),
            (422, "duplicate_field", Some("to"))
        );
    }

    #[test]
    fn malformed_json_is_400_and_non_object_is_422() {
        let err = Fields::from_json(b"{\"to\": ").unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (400, "malformed_json"));
        let err = Fields::from_json(b"[1, 2]").unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (422, "invalid_body"));
    }

    #[test]
    fn form_values_are_strings_and_bools_parse() {
        let mut fields = Fields::from_urlencoded(b"to=%2B4915&smart=true&n=1").unwrap();
        assert_eq!(fields.take_string("to").unwrap().as_deref(), Some("+4915"));
        assert_eq!(fields.take_bool("smart").unwrap(), Some(true));
        assert_eq!(fields.take_bool("n").unwrap(), Some(true));
        for latin1 in [&b"text=caf%E9"[..], b"text=caf\xe9", b"t%E9xt=cafe"] {
            let err = Fields::from_urlencoded(latin1).unwrap_err();
            assert_eq!((err.status().as_u16(), err.code()), (400, "malformed_json"));
        }
        let fields = Fields::from_urlencoded("text=caf%C3%A9&n=\u{e9}".as_bytes()).unwrap();
        assert_eq!(fields.map["text"], "café");
        let err = Fields::from_urlencoded(b"a=1&a=2").unwrap_err();
        assert_eq!((err.code(), err.field()), ("duplicate_field", Some("a")));
    }

    #[test]
    fn null_is_absent_and_wrong_types_name_the_field() {
        let mut fields = Fields::from_json(br#"{"a": null, "b": [1], "c": "x"}"#).unwrap();
        assert_eq!(fields.take_string("a").unwrap(), None);
        assert_eq!(fields.take_string("b").unwrap_err().field(), Some("b"));
        assert_eq!(fields.take_bool("c").unwrap_err().code(), "invalid_type");
    }

    #[test]
    fn only_numbers_and_references_may_be_json_integers() {
        let mut fields =
            Fields::from_json(br#"{"text": 123, "to": 4158906431, "ref": -1, "f": 4.1e9}"#)
                .unwrap();
        let err = fields.take_string("text").unwrap_err();
        assert_eq!((err.code(), err.field()), ("invalid_type", Some("text")));
        assert_eq!(
            fields.take_string_or_integer("to").unwrap().as_deref(),
            Some("4158906431")
        );
        assert!(fields.take_string_or_integer("ref").is_err());
        assert!(fields.take_string_or_integer("f").is_err());
    }

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert!(matches!(
            body_kind(&headers),
            Err(ApiError::UnsupportedMediaType { .. })
        ));
        headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(body_kind(&headers).unwrap(), BodyKind::Json);
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(body_kind(&headers).is_err());
    }
}
