//! What the HTTP API needs from the rest of the daemon: the seam between routes and the store, dispatcher
//! and modem workers.
//!
//! The types here are the HTTP contract's shapes (they serialise to exactly what clients see); the daemon
//! implements [`Backend`] by mapping its store rows and worker state onto them. Keeping the shapes here, not
//! in the store, means a change of storage layout can never change the API by accident.

use futures_util::future::BoxFuture;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::validate::{Priority, SendRequest};
use crate::modem::job::ModemHealth;
use crate::msisdn::Msisdn;
use crate::pdu::Encoding;

/// Every status a message can be in (outbound, then `received` for inbound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Scheduled,
    Queued,
    Sending,
    Sent,
    Delivered,
    Failed,
    Cancelled,
    Expired,
    /// The modem may or may not have sent it: never resent silently.
    Unknown,
    Received,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Scheduled,
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Failed,
        Status::Cancelled,
        Status::Expired,
        Status::Unknown,
        Status::Received,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
            Status::Unknown => "unknown",
            Status::Received => "received",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Outbound,
    Inbound,
}

/// A message as listed (`GET /v1/messages`, conversations, export).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageView {
    pub id: Uuid,
    pub direction: Direction,
    pub status: Status,
    /// Recipient (outbound) or our modem's number when known (inbound), E.164.
    pub to: Option<String>,
    /// Sender (inbound) or our modem's number when known (outbound).
    pub from: Option<String>,
    pub text: String,
    pub parts: usize,
    pub encoding: Encoding,
    pub priority: Option<Priority>,
    pub reference: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// The modem that sent or received it.
    pub modem: Option<String>,
    pub send_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Why it failed / is unknown, for people.
    pub error: Option<String>,
}

/// One SMS part of a message (`GET /v1/messages/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartView {
    /// 1-based.
    pub part: u16,
    pub status: Status,
    pub modem: Option<String>,
    /// TP-MR the network gave the part.
    pub reference: Option<u8>,
    pub sent_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
}

/// One entry of a message's append-only history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    pub at: Timestamp,
    /// e.g. `accepted`, `submitting`, `part_sent`, `delivered`, `failed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub detail: Option<Value>,
}

/// `GET /v1/messages/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: MessageView,
    /// Per-part detail (`parts` is the count, as everywhere).
    pub part_list: Vec<PartView>,
    pub events: Vec<EventView>,
}

/// The `202` answer to a send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcceptedView {
    pub id: Uuid,
    pub status: Status,
    pub to: String,
    pub parts: usize,
    pub encoding: Encoding,
}

/// What the store did with a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored now (`202`).
    New(AcceptedView),
    /// Same idempotency key and same request as before: the original (`200`).
    Repeat(AcceptedView),
}

/// A send as handed to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub request: SendRequest,
    pub idempotency_key: Option<String>,
    /// `[[api_keys]] name` of the caller (idempotency keys are scoped per API key).
    pub api_key: String,
}

/// `GET /v1/messages` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub direction: Option<Direction>,
    /// The other party (recipient of outbound, sender of inbound messages).
    pub to: Option<Msisdn>,
    pub status: Option<Status>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub reference: Option<String>,
    pub limit: usize,
    /// The `next` cursor of the previous page, as the client gave it back.
    pub after: Option<String>,
}

/// One page of messages: `{"messages": [...], "next": "CURSOR" | null}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub messages: Vec<MessageView>,
    pub next: Option<String>,
}

/// Totals per modem from the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ModemCounters {
    pub sent: u64,
    pub failed: u64,
    pub received: u64,
    pub delivered: u64,
}

/// `GET /v1/modems` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModemView {
    pub id: String,
    #[serde(flatten)]
    pub health: ModemHealth,
    pub counters: ModemCounters,
}

/// A number that asked not to be contacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Optout {
    pub number: String,
    pub created_at: Timestamp,
    /// `keyword` (a STOP reply) or `api` (added by an admin), with the keyword or note.
    pub source: String,
    pub note: Option<String>,
}

/// Why the backend could not do it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("{0} not found")]
    NotFound(String),
    /// The idempotency key was used before with a different request.
    #[error("Idempotency-Key {0:?} was already used with a different request")]
    IdempotencyConflict(String),
    /// The message is not in a state that allows it (e.g. cancelling a sent message).
    #[error("{0}")]
    InvalidState(String),
    /// The cursor is not one we issued.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The store or a worker cannot answer now.
    #[error("{0}")]
    Unavailable(String),
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotFound(what) => ApiError::NotFound(what),
            BackendError::IdempotencyConflict(_) => ApiError::Conflict {
                code: "idempotency_conflict",
                message: e.to_string(),
            },
            BackendError::InvalidState(message) => ApiError::Conflict {
                code: "invalid_state",
                message,
            },
            BackendError::InvalidCursor => ApiError::BadRequest {
                code: "invalid_cursor",
                message: "`after` is not a cursor this server issued".into(),
                field: Some("after".into()),
            },
            BackendError::Unavailable(why) => ApiError::Unavailable(why),
        }
    }
}

pub type BackendResult<'a, T> = BoxFuture<'a, Result<T, BackendError>>;

/// Everything the routes ask of the daemon. Implemented by the daemon over the store, the dispatcher and
/// the modem workers; tests use an in-memory fake.
pub trait Backend: Send + Sync + 'static {
    /// Stores a send durably (and wakes the dispatcher); idempotent per (api key, idempotency key).
    fn accept(&self, message: NewMessage) -> BackendResult<'_, Accepted>;
    /// Stores many sends in one transaction-group; one result per item, in order.
    fn accept_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> BackendResult<'_, Vec<Result<Accepted, BackendError>>>;
    fn message(&self, id: Uuid) -> BackendResult<'_, MessageDetail>;
    fn list(&self, filter: ListFilter) -> BackendResult<'_, Page>;
    /// Both directions with `number` (E.164), oldest first.
    fn conversation(
        &self,
        number: Msisdn,
        limit: usize,
        after: Option<String>,
    ) -> BackendResult<'_, Page>;
    /// Cancels a message not yet handed to a modem; `InvalidState` otherwise.
    fn cancel(&self, id: Uuid) -> BackendResult<'_, MessageView>;
    fn modems(&self) -> BackendResult<'_, Vec<ModemView>>;
    /// Pauses (or resumes) a modem: the dispatcher gives it nothing new while paused.
    fn set_paused(&self, modem: String, paused: bool) -> BackendResult<'_, ModemView>;
    fn optouts(&self) -> BackendResult<'_, Vec<Optout>>;
    fn add_optout(&self, number: Msisdn, note: Option<String>) -> BackendResult<'_, Optout>;
    fn remove_optout(&self, number: Msisdn) -> BackendResult<'_, ()>;
    /// Ready to accept traffic (store open, migrations done); `Err` says why not.
    fn ready(&self) -> BackendResult<'_, ()>;
}
