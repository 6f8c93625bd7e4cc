//! The simulator's control channel: a small HTTP/JSON API on loopback, so scripts, demos and tests in other
//! processes can inject messages, flip faults and read the send log of `modemgate simulate`.
//!
//! Modems are addressed by their index in the order the CLI printed them (0-based).
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /modems` | | `[{"index", "profile", "path", "device"}]` |
//! | `POST /modems/{i}/inbound` | `{"from", "text", "encoding": "auto"\|"gsm7"\|"ucs2"}` | `{"parts": n}` |
//! | `GET /modems/{i}/sends` | | `[{"pdu", "length", "recipient", "text", "encoding", "status_report_request", "concat", "outcome"}]` |
//! | `GET /modems/{i}/faults` | | the [`Faults`] |
//! | `PUT /modems/{i}/faults` | a [`Faults`] (absent fields off) | the [`Faults`] now in force |
//! | `POST /modems/{i}/vanish` | `{"seconds": 2.5}` | 204: the port disappears and comes back on a new pty |
//! | `POST /modems/{i}/reboot` | none | 204: it restarts with the port kept open (settings lost, start-up notices printed) |
//! | `POST /modems/{i}/garbage` | `{"hex": "FF00FE"}` | 204: those bytes are written to the line |
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with 400, 404 or 503.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{Faults, Inbound, LoggedSend, SendOutcome, SimError, SimHandle};
use crate::pdu;

type Sims = Arc<Vec<SimHandle>>;

/// The control API over these modems (index = position).
pub fn router(sims: Sims) -> Router {
    Router::new()
        .route("/modems", get(list))
        .route("/modems/{index}/inbound", post(inbound))
        .route("/modems/{index}/sends", get(sends))
        .route("/modems/{index}/faults", get(get_faults).put(put_faults))
        .route("/modems/{index}/vanish", post(vanish))
        .route("/modems/{index}/reboot", post(reboot))
        .route("/modems/{index}/garbage", post(garbage))
        .with_state(sims)
}

#[derive(Debug)]
enum ApiError {
    NoSuchModem(usize),
    BadRequest(String),
    Sim(SimError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::NoSuchModem(i) => (
                StatusCode::NOT_FOUND,
                "no_such_modem",
                format!("no simulated modem with index {i}"),
            ),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Sim(e @ SimError::Encode(_)) => {
                (StatusCode::BAD_REQUEST, "cannot_encode", e.to_string())
            }
            ApiError::Sim(e) => (StatusCode::SERVICE_UNAVAILABLE, "simulator", e.to_string()),
        };
        (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response()
    }
}

impl From<SimError> for ApiError {
    fn from(e: SimError) -> Self {
        ApiError::Sim(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

fn modem(sims: &Sims, index: usize) -> Result<&SimHandle, ApiError> {
    sims.get(index).ok_or(ApiError::NoSuchModem(index))
}

async fn list(State(sims): State<Sims>) -> Json<serde_json::Value> {
    let modems: Vec<_> = sims
        .iter()
        .enumerate()
        .map(|(index, sim)| {
            json!({
                "index": index,
                "profile": sim.profile(),
                "path": sim.path(),
                "device": sim.device(),
            })
        })
        .collect();
    Json(json!(modems))
}

async fn inbound(
    State(sims): State<Sims>,
    Path(index): Path<usize>,
    body: Result<Json<Inbound>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(message) = body?;
    let parts = modem(&sims, index)?.inject(message).await?;
    Ok(Json(json!({ "parts": parts })))
}

async fn sends(
    State(sims): State<Sims>,
    Path(index): Path<usize>,
) -> Result<Json<Vec<SendView>>, ApiError> {
    Ok(Json(
        modem(&sims, index)?
            .sends()
            .iter()
            .map(SendView::from)
            .collect(),
    ))
}

async fn get_faults(
    State(sims): State<Sims>,
    Path(index): Path<usize>,
) -> Result<Json<Faults>, ApiError> {
    Ok(Json(modem(&sims, index)?.faults()))
}

async fn put_faults(
    State(sims): State<Sims>,
    Path(index): Path<usize>,
    body: Result<Json<Faults>, JsonRejection>,
) -> Result<Json<Faults>, ApiError> {
    let Json(faults) = body?;
    modem(&sims, index)?.set_faults(faults.clone())?;
    Ok(Json(faults))
}

#[derive(serde::Deserialize)]
struct VanishBody {
    seconds: f64,
}

async fn vanish(
    State(sims): State<Sims>,
    Path(index): Path<usize>,
    body: Result<Json<VanishBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(VanishBody { seconds }) = body?;
    let away = Duration::try_from_secs_f64(seconds)
        .map_err(|e| ApiError::BadRequest(format!("seconds: {e}")))?;
    modem(&sims, index)?.vanish(away)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reboot(
    State(sims): State<Sims>,
    Path(index): Path<usize>,
) -> Result<StatusCode, ApiError> {
    modem(&sims, index)?.reboot()?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct GarbageBody {
    hex: String,
}

async fn garbage(
    State(sims): State<Sims>,
    Path(index): Path<usize>,
    body: Result<Json<GarbageBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(GarbageBody { hex }) = body?;
    let bytes = hex::decode(&hex).map_err(|e| ApiError::BadRequest(format!("hex: {e}")))?;
    modem(&sims, index)?.inject_garbage(bytes)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A logged send as JSON.
#[derive(serde::Serialize)]
struct SendView {
    pdu: String,
    length: usize,
    recipient: String,
    text: Option<String>,
    encoding: pdu::Encoding,
    status_report_request: bool,
    concat: Option<serde_json::Value>,
    outcome: SendOutcome,
}

impl From<&LoggedSend> for SendView {
    fn from(s: &LoggedSend) -> Self {
        SendView {
            pdu: s.pdu_hex.clone(),
            length: s.length,
            recipient: s.submit.recipient.value.clone(),
            text: match &s.submit.user_data {
                pdu::UserData::Text(t) => Some(t.clone()),
                pdu::UserData::Binary(_) => None,
            },
            encoding: s.submit.encoding,
            status_report_request: s.submit.status_report_request,
            concat: s
                .submit
                .concat
                .map(|c| json!({"ref": c.reference, "part": c.part, "parts": c.parts})),
            outcome: s.outcome,
        }
    }
}
