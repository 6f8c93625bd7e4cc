//! Route handlers: thin, each one reads its input, asks the [`Backend`](super::backend::Backend), answers.

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::backend::{Accepted, AcceptedView, BackendError, ListFilter, NewMessage};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{Fields, JsonObject, JsonOrForm, PathParam, QueryFields, wrong_type};
use super::validate::{self, SendRequest, check_idempotency_key, idempotency_key};
use crate::store::{Direction, MessageState};

/// Most sends in one `POST /v1/messages/batch`.
pub const MAX_BATCH: usize = 1000;
/// Page size when `limit` is absent, and the largest allowed.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

fn key_name(principal: Option<Extension<Principal>>) -> String {
    principal
        .map(|Extension(p)| p.key_name.to_string())
        .unwrap_or_default()
}

/// The audit-trail actor for a request: `api:KEY`.
fn actor(principal: Option<Extension<Principal>>) -> String {
    format!("api:{}", key_name(principal))
}

/// Header on the answer to an idempotent repeat: the status is `202` either way (DESIGN.md's contract, and
/// what a CMS retrying after a timeout checks for), so this is how a client can tell a repeat if it cares.
pub const REPLAYED: &str = "idempotent-replayed";

fn accepted_response(accepted: Accepted) -> Response {
    match accepted {
        Accepted::New(view) => (StatusCode::ACCEPTED, Json(view)).into_response(),
        Accepted::Repeat(view) => {
            (StatusCode::ACCEPTED, [(REPLAYED, "true")], Json(view)).into_response()
        }
    }
}

/// `POST /v1/messages`.
pub async fn send(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    JsonOrForm(fields): JsonOrForm,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let api_key = key_name(principal);
    let validator = state.validator();
    let request = validate_repeat(
        &state,
        &validator,
        &api_key,
        idempotency_key.as_deref(),
        fields,
    )
    .await?;
    let accepted = state
        .backend
        .accept(NewMessage {
            request,
            idempotency_key,
            api_key,
        })
        .await?;
    Ok(accepted_response(accepted))
}

/// Validates a send. The checks that depend on the moment (`send_at` not in the past, `expires_at` still
/// ahead) are made as of when the key's original was accepted when the request repeats a key: a CMS
/// retrying a scheduled send after its time must hear about the message it sent (202, or 409 for another
/// body), not that the time has passed.
async fn validate_repeat(
    state: &AppState,
    validator: &validate::Validator,
    api_key: &str,
    idempotency_key: Option<&str>,
    fields: Fields,
) -> Result<SendRequest, ApiError> {
    let Some(key) = idempotency_key else {
        return validator.send_request(fields);
    };
    match validator.send_request(fields.clone()) {
        Err(error) if error.error_code() == ErrorCode::InvalidTime => {
            match state
                .backend
                .accepted_at(api_key.to_owned(), key.to_owned())
                .await?
            {
                Some(now) => validate::Validator { now, ..*validator }.send_request(fields),
                None => Err(error),
            }
        }
        result => result,
    }
}

/// The batch answer, serialised straight from the items (no intermediate JSON tree for 1,000 of them).
#[derive(Debug, Serialize)]
struct BatchAnswer {
    results: Vec<BatchItem>,
}

/// One item of a batch answer: `{"index", "http_status", "accepted": {...}}` (202; a repeat also says
/// `"replayed": true`) or `{"index", "http_status", "error": {...}}`.
#[derive(Debug, Serialize)]
struct BatchItem {
    index: usize,
    /// The status a single `POST /v1/messages` would have answered.
    http_status: u16,
    /// An idempotent repeat of an earlier send (the header [`REPLAYED`] of a single send).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replayed: bool,
    #[serde(flatten)]
    result: BatchResult,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum BatchResult {
    Accepted(AcceptedView),
    Error(ErrorBody),
}

impl BatchItem {
    fn new(index: usize, outcome: Result<Accepted, ApiError>) -> BatchItem {
        let (http_status, replayed, result) = match outcome {
            Ok(Accepted::New(view)) => (202, false, BatchResult::Accepted(view)),
            Ok(Accepted::Repeat(view)) => (202, true, BatchResult::Accepted(view)),
            Err(e) => (e.status().as_u16(), false, BatchResult::Error(e.body())),
        };
        BatchItem {
            index,
            http_status,
            replayed,
            result,
        }
    }
}

/// `POST /v1/messages/batch`: `{"messages": [send, ...]}`, each item may carry `idempotency_key`. Answers 200
/// with one result per item, in order; valid items are stored even when others are refused.
pub async fn send_batch(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    JsonObject(mut fields): JsonObject,
) -> Result<Response, ApiError> {
    // A client reusing its single-send retry code would think the header makes the batch safe to retry;
    // ignoring it would send every item again.
    if headers.contains_key("idempotency-key") {
        return Err(ApiError::invalid(
            ErrorCode::InvalidIdempotencyKey,
            "Idempotency-Key",
            "a batch takes no Idempotency-Key header: give each item its own `idempotency_key`",
        ));
    }
    let items = match fields.take("messages") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(wrong_type("messages", "an array")),
        None => {
            return Err(ApiError::invalid(
                ErrorCode::MissingField,
                "messages",
                "`messages` is required",
            ));
        }
    };
    fields.finish()?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            ErrorCode::InvalidBatchSize,
            "messages",
            format!(
                "`messages` must hold 1-{MAX_BATCH} items, not {}",
                items.len()
            ),
        ));
    }
    let key = key_name(principal);
    let validator = state.validator();
    let mut outcomes: Vec<Option<Result<Accepted, ApiError>>> = Vec::with_capacity(items.len());
    let mut valid = Vec::new();
    for item in items {
        let parsed = match Fields::from_value(item, None).and_then(|mut item| {
            let idempotency_key = item
                .take_string("idempotency_key")?
                .map(|key| check_idempotency_key("idempotency_key", &key))
                .transpose()?;
            Ok((item, idempotency_key))
        }) {
            Ok((item, idempotency_key)) => {
                validate_repeat(&state, &validator, &key, idempotency_key.as_deref(), item)
                    .await
                    .map(|request| NewMessage {
                        request,
                        idempotency_key,
                        api_key: key.clone(),
                    })
            }
            Err(e) => Err(e),
        };
        match parsed {
            Ok(message) => {
                valid.push(message);
                outcomes.push(None);
            }
            Err(e) => outcomes.push(Some(Err(e))),
        }
    }
    let mut stored = state.backend.accept_batch(valid).await?.into_iter();
    let results: Vec<BatchItem> = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| {
            let outcome = outcome.unwrap_or_else(|| match stored.next() {
                Some(result) => result.map_err(ApiError::from),
                None => Err(ApiError::Unavailable(
                    "the store returned fewer results than items".into(),
                )),
            });
            BatchItem::new(index, outcome)
        })
        .collect();
    Ok(Json(BatchAnswer { results }).into_response())
}

fn message_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(format!("message {raw:?}")))
}

/// `GET /v1/messages/{id}`.
pub async fn get_message(
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let detail = state.backend.message(message_id(&id)?).await?;
    Ok(Json(detail).into_response())
}

/// `POST /v1/messages/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let message = state
        .backend
        .cancel(message_id(&id)?, actor(principal))
        .await?;
    Ok(Json(message).into_response())
}

fn time_param(fields: &mut Fields, name: &str) -> Result<Option<jiff::Timestamp>, ApiError> {
    fields
        .take_string(name)?
        .map(|s| super::validate::time(name, &s))
        .transpose()
}

fn paging(fields: &mut Fields) -> Result<(usize, Option<String>), ApiError> {
    let limit = match fields.take_string("limit")? {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidLimit,
                    "limit",
                    format!("`limit` must be 1-{MAX_LIMIT}"),
                )
            })?,
    };
    Ok((limit, fields.take_string("after")?))
}

/// The list filters, shared by `GET /v1/messages` and the CSV export.
fn list_filter(state: &AppState, mut fields: Fields) -> Result<ListFilter, ApiError> {
    let direction = match fields.take_string("direction")? {
        None => None,
        Some(d) => Some(Direction::parse(&d).ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::InvalidDirection,
                "direction",
                "`direction` must be outbound or inbound",
            )
        })?),
    };
    let to = fields
        .take_string("to")?
        .map(|n| state.validator().number("to", &n))
        .transpose()?;
    let status = match fields.take_string("status")? {
        None => None,
        Some(s) => Some(MessageState::parse(&s).ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::InvalidStatus,
                "status",
                format!("unknown status {s:?}"),
            )
        })?),
    };
    let since = time_param(&mut fields, "since")?;
    let until = time_param(&mut fields, "until")?;
    let reference = fields.take_string("reference")?;
    let (limit, after) = paging(&mut fields)?;
    fields.finish()?;
    Ok(ListFilter {
        direction,
        to,
        status,
        since,
        until,
        reference,
        limit,
        after,
    })
}

/// `GET /v1/messages`.
pub async fn list(
    State(state): State<AppState>,
    QueryFields(fields): QueryFields,
) -> Result<Response, ApiError> {
    let filter = list_filter(&state, fields)?;
    Ok(Json(state.backend.list(filter).await?).into_response())
}

/// `GET /v1/conversations/{number}`.
pub async fn conversation(
    State(state): State<AppState>,
    PathParam(number): PathParam,
    QueryFields(mut fields): QueryFields,
) -> Result<Response, ApiError> {
    let number = state.validator().number("number", &number)?;
    let (limit, after) = paging(&mut fields)?;
    fields.finish()?;
    Ok(Json(state.backend.conversation(number, limit, after).await?).into_response())
}

/// The columns of session 1's export come first, in their order; later ones are added at the end.
const CSV_HEADER: &str = "id,direction,status,to,from,text,parts,encoding,priority,reference,modem,created_at,updated_at,error,sent_at,delivered_at,category,error_code,send_at,expires_at,tz,metadata,api_key,region\r\n";

/// One RFC 4180 field: quoted when it holds a comma, quote or line break. A value a spreadsheet would run
/// as a formula (`=`, `+`, `-`, `@`, tab, CR first: CSV injection, e.g. from an inbound SMS text) gets a
/// leading `'`, except E.164 numbers (`+` and digits), which are data.
fn csv_field(out: &mut String, value: &str) {
    let is_number = value
        .strip_prefix('+')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_number;
    let value = if formula {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&value);
    }
}

fn csv_row(m: &super::backend::MessageView) -> String {
    let fields = [
        m.id.to_string(),
        m.direction.as_str().to_owned(),
        m.status.as_str().to_owned(),
        m.to.clone().unwrap_or_default(),
        m.from.clone().unwrap_or_default(),
        m.text.clone(),
        m.parts.to_string(),
        m.encoding.as_str().to_owned(),
        m.priority.to_string(),
        m.reference.clone().unwrap_or_default(),
        m.modem.clone().unwrap_or_default(),
        crate::wire_time::format(m.created_at),
        crate::wire_time::format(m.updated_at),
        m.error.clone().unwrap_or_default(),
        m.sent_at.map(crate::wire_time::format).unwrap_or_default(),
        m.delivered_at
            .map(crate::wire_time::format)
            .unwrap_or_default(),
        m.category.as_str().to_owned(),
        m.error_code.map(|c| c.to_string()).unwrap_or_default(),
        m.send_at.map(crate::wire_time::format).unwrap_or_default(),
        m.expires_at
            .map(crate::wire_time::format)
            .unwrap_or_default(),
        m.tz.clone().unwrap_or_default(),
        m.metadata
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default(),
        m.api_key.clone().unwrap_or_default(),
        m.region.clone().unwrap_or_default(),
    ];
    let mut row = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            row.push(',');
        }
        csv_field(&mut row, field);
    }
    row.push_str("\r\n");
    row
}

/// `GET /v1/messages/export.csv`: the same filters as the list, every page, streamed as it is read. It
/// takes no `limit` (refused rather than ignored: the export is every matching message); `after`, a message
/// id, resumes one that broke off. A store failure mid-stream ends the body early (the client sees a
/// truncated transfer, not a well-formed short file: chunked encoding without its final chunk).
pub async fn export_csv(
    State(state): State<AppState>,
    QueryFields(mut fields): QueryFields,
) -> Result<Response, ApiError> {
    let bom = fields.take_bool("bom")?.unwrap_or(false);
    if fields.take("limit").is_some() {
        return Err(ApiError::invalid(
            ErrorCode::UnknownField,
            "limit",
            "the export has no `limit`: it streams every matching message (`after`, the last id \
             received, resumes an interrupted one)",
        ));
    }
    let filter = ListFilter {
        limit: MAX_LIMIT,
        ..list_filter(&state, fields)?
    };
    // Read the first page before answering, so a bad cursor or a down store is still a proper error.
    let first = state.backend.list(filter.clone()).await?;
    enum Next {
        Page(super::backend::Page),
        After(String),
        Done,
    }
    let backend = state.backend.clone();
    // Excel reads a CSV file without a byte order mark in the PC's legacy code page ("BÃ¡ja" for
    // "Bája"); CSV libraries would take the mark for part of the first column's name, so it is asked for.
    let header = if bom {
        format!("\u{FEFF}{CSV_HEADER}")
    } else {
        CSV_HEADER.to_owned()
    };
    let head = stream::once(async { Ok::<_, BackendError>(header) });
    let rows = stream::unfold(Next::Page(first), move |next| {
        let backend = backend.clone();
        let filter = filter.clone();
        async move {
            let page = match next {
                Next::Done => return None,
                Next::Page(page) => page,
                Next::After(cursor) => {
                    match backend
                        .list(ListFilter {
                            after: Some(cursor),
                            ..filter
                        })
                        .await
                    {
                        Ok(page) => page,
                        Err(e) => return Some((Err(e), Next::Done)),
                    }
                }
            };
            let chunk: String = page.messages.iter().map(csv_row).collect();
            let next = page.next.map_or(Next::Done, Next::After);
            Some((Ok(chunk), next))
        }
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(head, rows));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"messages.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// `GET /v1/modems`.
pub async fn modems(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "modems": state.backend.modems().await? })).into_response())
}

/// `POST /v1/modems/{id}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    Ok(Json(state.backend.set_paused(id, true).await?).into_response())
}

/// `POST /v1/modems/{id}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    Ok(Json(state.backend.set_paused(id, false).await?).into_response())
}

/// `GET /v1/optouts`.
pub async fn optouts(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "optouts": state.backend.optouts().await? })).into_response())
}

/// `GET /v1/optouts/audit`: every opt-out and its lifting, who did it and why, oldest first; `number`
/// narrows it to one.
pub async fn optout_audit(
    State(state): State<AppState>,
    QueryFields(mut fields): QueryFields,
) -> Result<Response, ApiError> {
    let number = fields.take_string("number")?;
    fields.finish()?;
    let number = number
        .map(|n| state.validator().number("number", &n))
        .transpose()?;
    Ok(Json(json!({ "changes": state.backend.optout_audit(number).await? })).into_response())
}

/// `POST /v1/optouts`: `{"number", "note"?}`; 201 with the opt-out.
pub async fn add_optout(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    JsonObject(mut fields): JsonObject,
) -> Result<Response, ApiError> {
    let number = fields.take_string_or_integer("number")?;
    let note = fields.take_string("note")?;
    fields.finish()?;
    let number = number.ok_or_else(|| {
        ApiError::invalid(ErrorCode::MissingField, "number", "`number` is required")
    })?;
    let number = state.validator().number("number", &number)?;
    let (optout, new) = state
        .backend
        .add_optout(number, actor(principal), note)
        .await?;
    // A number already opted out keeps its record: 200 with it, not a new one.
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(optout)).into_response())
}

/// `DELETE /v1/optouts/{number}`: 204.
pub async fn remove_optout(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    PathParam(number): PathParam,
) -> Result<Response, ApiError> {
    let number = state
        .validator()
        .number("number", &number)
        .map_err(|_| ApiError::NotFound("opt-out".into()))?;
    state
        .backend
        .remove_optout(number, actor(principal))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: the store is open and the daemon accepts traffic.
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.backend.ready().await?;
    Ok(Json(json!({ "status": "ready" })).into_response())
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Err(error) = state.backend.refresh_metrics(&state.metrics).await {
        // Still answer: the modem gauges and the latency histogram are current even when the store is not.
        tracing::warn!(%error, "metrics: could not read the store's totals");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    Json(super::openapi::document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut s = String::new();
        csv_field(&mut s, "plain");
        s.push('|');
        csv_field(&mut s, "a,b \"c\"\nd");
        assert_eq!(s, "plain|\"a,b \"\"c\"\"\nd\"");
    }

    #[test]
    fn csv_formulas_are_defused_but_numbers_are_not() {
        let field = |v: &str| {
            let mut s = String::new();
            csv_field(&mut s, v);
            s
        };
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(field("+4915123456789"), "+4915123456789");
        assert_eq!(field("+1+1"), "'+1+1");
        assert_eq!(field("-"), "'-");
    }
}
