//! The one error type at the HTTP edge.
//!
//! Every failure a client can see goes through [`ApiError`], so the body is always
//! `{"error": {"code": "...", "message": "...", "field": ...}}` and never axum's plain-text default. `code` is
//! stable and meant for programs; `message` is for people; `field` names the request field at fault (or null).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Defines [`ErrorCode`] from one list of variants and their wire names, so the names, the list
/// `/openapi.json` enumerates and the match that spells them cannot drift apart.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $code:literal,)*) => {
        /// The stable `code` of every error the API answers: what a CMS branches on (`message` is for
        /// people and may change). README's "Error codes" lists each one (a test holds it to this list).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order README and `/openapi.json` list them.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    /// 400: the body is not JSON (or form encoding).
    MalformedJson => "malformed_json",
    /// 400: a path segment that cannot be what the route takes.
    InvalidPath => "invalid_path",
    /// 400: `after` is not a cursor this server issued.
    InvalidCursor => "invalid_cursor",
    /// 401.
    Unauthorized => "unauthorized",
    /// 403.
    Forbidden => "forbidden",
    /// 404.
    NotFound => "not_found",
    /// 405.
    MethodNotAllowed => "method_not_allowed",
    /// 409: an `Idempotency-Key` used before with another body.
    IdempotencyConflict => "idempotency_conflict",
    /// 409: the message or modem is in a state that forbids it (cancelling a sent message).
    InvalidState => "invalid_state",
    /// 413.
    PayloadTooLarge => "payload_too_large",
    /// 415.
    UnsupportedMediaType => "unsupported_media_type",
    /// 408: the request was not complete (its body, in practice) within the server's time.
    RequestTimeout => "request_timeout",
    /// 422: the body (or a batch item) is not a JSON object.
    InvalidBody => "invalid_body",
    MissingField => "missing_field",
    UnknownField => "unknown_field",
    DuplicateField => "duplicate_field",
    /// 422: a field of the wrong JSON type.
    InvalidType => "invalid_type",
    InvalidNumber => "invalid_number",
    EmptyText => "empty_text",
    TextTooLong => "text_too_long",
    /// 422: a character the encoding asked for cannot carry.
    UnencodableText => "unencodable_text",
    ControlCharacter => "control_character",
    /// 422: `[optout] notice` is required and does not fit the text's parts.
    OptoutNoticeMissing => "optout_notice_missing",
    InvalidTime => "invalid_time",
    InvalidPriority => "invalid_priority",
    InvalidEncoding => "invalid_encoding",
    InvalidTz => "invalid_tz",
    InvalidRegion => "invalid_region",
    InvalidLanguage => "invalid_language",
    ReferenceTooLong => "reference_too_long",
    MetadataTooLarge => "metadata_too_large",
    InvalidIdempotencyKey => "invalid_idempotency_key",
    InvalidBatchSize => "invalid_batch_size",
    InvalidLimit => "invalid_limit",
    InvalidDirection => "invalid_direction",
    InvalidStatus => "invalid_status",
    /// 422: the recipient opted out.
    OptedOut => "opted_out",
    /// 422: the message could not be composed or stored as given.
    InvalidMessage => "invalid_message",
    /// 429.
    RateLimited => "rate_limited",
    /// 503.
    Unavailable => "unavailable",
}

/// A request that failed, with everything needed to answer it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not syntactically valid JSON (or form encoding).
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    /// 400: a well-formed request that makes no sense (e.g. a bad cursor).
    #[error("{message}")]
    BadRequest {
        code: ErrorCode,
        message: String,
        field: Option<String>,
    },
    /// 401: no bearer token, or one that matches no key.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 403: a valid key without the scope this route needs.
    #[error("this API key lacks the `{0}` scope")]
    Forbidden(&'static str),
    /// 404: nothing at this id.
    #[error("{0} not found")]
    NotFound(String),
    /// 405: the path exists, the method does not.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 409: the request clashes with what is stored (idempotency key reuse, a state that forbids it).
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    /// 413: the body is over `[server] body_limit`.
    #[error("request body is larger than this server accepts ([server] body_limit)")]
    PayloadTooLarge,
    /// 415: a body type the route does not read; `accepted` names what it reads.
    #[error("unsupported content type {given:?}: use {accepted}")]
    UnsupportedMediaType {
        given: String,
        accepted: &'static str,
    },
    /// 422: syntactically fine, but a field is wrong.
    #[error("{message}")]
    Invalid {
        code: ErrorCode,
        message: String,
        field: Option<String>,
    },
    /// 408: the request took longer than the server allows (a body sent a byte at a time).
    #[error("the request was not complete within {}s", .0.as_secs())]
    Timeout(Duration),
    /// 429: this key is over its request rate.
    #[error("rate limit exceeded; retry in {}s", retry_after_secs(*.0))]
    RateLimited(Duration),
    /// 503: the store or the daemon behind us cannot answer right now; safe to retry.
    #[error("service unavailable: {0}")]
    Unavailable(String),
}

/// What a 503 tells the client to wait: the store's own retries (a locked database, a full disk being
/// cleared) work on this scale, and a CMS that retries at once only adds load.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// Whole seconds for `Retry-After`, rounded up so a client that obeys it is never early.
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl ApiError {
    /// A 422 on one field.
    pub fn invalid(code: ErrorCode, field: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            code,
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedBody(_) | ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable code, as on the wire.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            ApiError::MalformedBody(_) => ErrorCode::MalformedJson,
            ApiError::BadRequest { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Invalid { code, .. } => *code,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType { .. } => ErrorCode::UnsupportedMediaType,
            ApiError::Timeout(_) => ErrorCode::RequestTimeout,
            ApiError::RateLimited(_) => ErrorCode::RateLimited,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } | ApiError::Invalid { field, .. } => {
                field.as_deref()
            }
            _ => None,
        }
    }

    /// The JSON body, also used for per-item results of a batch.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.to_string(),
            field: self.field().map(str::to_owned),
        }
    }
}

/// `{"code", "message", "field"}`: the inside of the `error` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Serialize)]
struct Envelope {
    error: ErrorBody,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status(), axum::Json(Envelope { error: self.body() })).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"modemgate\""),
                );
            }
            ApiError::RateLimited(wait) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs(*wait)),
                );
            }
            ApiError::Unavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY.as_secs()),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_body_has_code_message_and_field() {
        let response =
            ApiError::invalid(ErrorCode::InvalidNumber, "to", "not a phone number").into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "invalid_number", "message": "not a phone number", "field": "to"}})
        );
    }

    /// A CMS developer reads the codes there: each one the API can answer is in its table, and the table
    /// names no other.
    #[test]
    fn readme_lists_every_error_code_and_no_other() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("### Error codes")
            .expect("README has an Error codes section");
        let table: Vec<&str> = readme[start..]
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .skip(2)
            .collect();
        let mut listed: Vec<&str> = table
            .iter()
            .filter_map(|row| row.split('|').nth(2))
            .flat_map(|codes| codes.split(',').map(|code| code.trim().trim_matches('`')))
            .collect();
        listed.sort_unstable();
        let mut codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        codes.sort_unstable();
        assert_eq!(listed, codes);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn unauthorized_carries_www_authenticate() {
        let response = ApiError::Unauthorized.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        let response = ApiError::RateLimited(Duration::from_millis(1500)).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
