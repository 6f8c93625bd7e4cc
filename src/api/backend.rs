//! What the HTTP API needs from the rest of the daemon: the seam between routes and the store, dispatcher
//! and modem workers ([`Backend`]), and the JSON shapes of the HTTP contract.
//!
//! The views here serialise to exactly what clients see (`status`, `to`/`from`, `parts`); they are built
//! from the store's records, whose field names follow the database (`state`, `peer`, `part_count`).
//! Keeping the shapes here means a change of storage layout can never change the API by accident. Status,
//! direction and encoding are the store's own enums: they already serialise to the contract's strings.

use futures_util::future::BoxFuture;
use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use super::error::{ApiError, ErrorCode};
use super::metrics::Metrics;
use super::validate::SendRequest;
use crate::modem::job::ModemHealth;
use crate::msisdn::Msisdn;
use crate::rules::notice::NoticeError;
use crate::store::{self, Direction, MessageState, StoreError, TextEncoding};

/// A message as listed (`GET /v1/messages`, conversations, export).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageView {
    pub id: Uuid,
    pub direction: Direction,
    pub status: MessageState,
    /// The recipient of an outbound message; for an inbound one, the number of the SIM it came in on.
    pub to: Option<String>,
    /// The sender of an inbound message; for an outbound one, the number of the SIM it went out from.
    /// The SIM's number is known only when its modem reported one (`AT+CNUM`), else null.
    pub from: Option<String>,
    pub text: String,
    pub parts: u16,
    pub encoding: TextEncoding,
    /// Higher goes first.
    pub priority: i32,
    pub reference: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub tz: Option<String>,
    /// The region of the recipient's address, as the send gave it.
    pub region: Option<String>,
    /// The modem that sent or received it.
    pub modem: Option<String>,
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub send_at: Option<Timestamp>,
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub expires_at: Option<Timestamp>,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub updated_at: Timestamp,
    /// When its last part was sent (`sent` and `delivered` messages): when it was said, for the record.
    /// For a reply (`received`), when the sender's phone sent it, by the SMSC's timestamp.
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub sent_at: Option<Timestamp>,
    /// When the last delivery report came (`delivered` messages).
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub delivered_at: Option<Timestamp>,
    /// For a `scheduled` message: when it may go next (its `send_at`, or the end of a hold: a quiet-hours
    /// window opening, a contact cap letting it through, a retry's back-off), which `send_at` alone
    /// does not say.
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub not_before: Option<Timestamp>,
    /// Why it failed, is unknown or held, for people.
    pub error: Option<String>,
    /// The code behind `error`, for programs: the modem's `+CMS ERROR` or a delivery report's TP-Status.
    pub error_code: Option<i64>,
    /// `standard` (from the CMS), `auto_reply` (a reply rule's answer) or `confirmation` (the gateway's
    /// answer to STOP, START or HELP): what the record must tell apart.
    pub category: store::Category,
    /// Who asked for it: the `[[api_keys]]` name, `rules` for the gateway's own answers, null for a reply.
    pub api_key: Option<String>,
}

impl From<store::Message> for MessageView {
    fn from(m: store::Message) -> Self {
        let (to, from) = match m.direction {
            Direction::Outbound => (Some(m.peer), m.modem_number),
            Direction::Inbound => (m.modem_number, Some(m.peer)),
        };
        MessageView {
            id: m.id,
            direction: m.direction,
            status: m.state,
            to,
            from,
            text: m.text,
            parts: m.part_count,
            encoding: m.encoding,
            priority: m.priority,
            reference: m.reference,
            metadata: m.metadata,
            tz: m.tz,
            region: m.region,
            modem: m.modem,
            send_at: m.send_at,
            expires_at: m.expires_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
            sent_at: m.sent_at,
            delivered_at: m.delivered_at,
            not_before: match m.state {
                store::MessageState::Scheduled => m.not_before.max(m.send_at),
                _ => None,
            },
            error: m.error.or(m.hold_reason),
            error_code: m.error_code,
            category: m.category,
            api_key: Some(m.api_key).filter(|key| !key.is_empty()),
        }
    }
}

/// One SMS part of a message (`GET /v1/messages/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartView {
    /// 1-based.
    pub part: u16,
    pub status: store::PartState,
    pub modem: Option<String>,
    /// TP-MR the network gave the part.
    pub reference: Option<u8>,
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub sent_at: Option<Timestamp>,
    /// TP-ST of the delivery report, and when it came.
    pub report_status: Option<u8>,
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub reported_at: Option<Timestamp>,
}

impl From<store::Part> for PartView {
    fn from(p: store::Part) -> Self {
        PartView {
            part: p.part,
            status: p.state,
            modem: p.modem,
            reference: p.tp_mr,
            sent_at: p.sent_at,
            report_status: p.report_status,
            reported_at: p.reported_at,
        }
    }
}

/// `GET /v1/messages/{id}`: the message, then `part_list` (`parts` is the count, as everywhere) and its
/// append-only `events` (`at`, `actor`, `kind`, `state`, `part`, `detail`, `rule`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: MessageView,
    pub part_list: Vec<PartView>,
    pub events: Vec<store::Event>,
}

impl From<store::MessageDetail> for MessageDetail {
    fn from(d: store::MessageDetail) -> Self {
        MessageDetail {
            message: d.message.into(),
            part_list: d.parts.into_iter().map(PartView::from).collect(),
            events: d.events,
        }
    }
}

/// The `202` answer to a send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcceptedView {
    pub id: Uuid,
    pub status: MessageState,
    pub to: String,
    pub parts: usize,
    pub encoding: TextEncoding,
}

/// What the store did with a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored now (`202`).
    New(AcceptedView),
    /// Same idempotency key and same request as before: that message, as it is now (`202` again).
    Repeat(AcceptedView),
}

impl From<store::Accepted> for Accepted {
    fn from(a: store::Accepted) -> Self {
        let view = AcceptedView {
            id: a.id,
            status: a.state,
            to: a.to,
            parts: a.parts,
            encoding: a.encoding,
        };
        if a.duplicate {
            Accepted::Repeat(view)
        } else {
            Accepted::New(view)
        }
    }
}

/// A send as handed to the backend.
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
    pub status: Option<MessageState>,
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

impl From<store::Page> for Page {
    fn from(p: store::Page) -> Self {
        Page {
            messages: p.messages.into_iter().map(MessageView::from).collect(),
            next: p.next,
        }
    }
}

/// Lifetime totals per modem, from the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ModemCounters {
    pub parts_sent: i64,
    pub parts_failed: i64,
    pub received: i64,
}

/// `GET /v1/modems` entry: `id`, the worker's health (`state`, `signal`, `operator`, registration,
/// identity, `last_error`), `counters`, and how much of its daily cap its SIM has used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModemView {
    pub id: String,
    #[serde(flatten)]
    pub health: ModemHealth,
    pub counters: ModemCounters,
    /// Parts its SIM sent on today's cap day: what `daily_cap` counts.
    pub sent_today: u32,
    pub daily_cap: Option<std::num::NonZeroU32>,
}

/// A number that asked not to be contacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Optout {
    pub number: String,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub created_at: Timestamp,
    /// Who added it: `api:KEY`, `rules` (a STOP reply)...
    pub actor: String,
    pub note: Option<String>,
    /// `keyword` (a STOP reply) or `review` (a reply that mentions an opt-out word): lifted by a START
    /// from the number or through the API; `api`: only through the API.
    pub source: Option<&'static str>,
}

impl From<store::OptOutRecord> for Optout {
    fn from(record: store::OptOutRecord) -> Self {
        Optout {
            number: record.number,
            created_at: record.since,
            actor: record.actor,
            note: record.detail,
            source: record.source.map(store::OptOutSource::as_str),
        }
    }
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
    /// The request passed validation but the store refused it.
    #[error("{0}")]
    Invalid(String),
    /// The opt-out notice rule refuses the text (422 `optout_notice_missing`, or `unencodable_text`).
    #[error(transparent)]
    Refused(#[from] NoticeError),
    /// The recipient opted out: nothing is sent to them (422 `opted_out`).
    #[error("{0} has opted out of messages")]
    OptedOut(String),
    /// The cursor is not one we issued.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The store or a worker cannot answer now.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for BackendError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdempotencyConflict { key, .. } => BackendError::IdempotencyConflict(key),
            StoreError::NotFound(id) => BackendError::NotFound(format!("message {id}")),
            StoreError::InvalidTransition { .. } => BackendError::InvalidState(e.to_string()),
            StoreError::Invalid(why) => BackendError::Invalid(why),
            StoreError::InvalidCursor(_) => BackendError::InvalidCursor,
            e => BackendError::Unavailable(e.to_string()),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotFound(what) => ApiError::NotFound(what),
            BackendError::IdempotencyConflict(_) => ApiError::Conflict {
                code: ErrorCode::IdempotencyConflict,
                message: e.to_string(),
            },
            BackendError::InvalidState(message) => ApiError::Conflict {
                code: ErrorCode::InvalidState,
                message,
            },
            BackendError::Invalid(message) => ApiError::Invalid {
                code: ErrorCode::InvalidMessage,
                message,
                field: None,
            },
            BackendError::Refused(refusal) => ApiError::Invalid {
                code: match refusal {
                    NoticeError::Required { .. } | NoticeError::DoesNotFit { .. } => {
                        ErrorCode::OptoutNoticeMissing
                    }
                    NoticeError::Unencodable(_) => ErrorCode::UnencodableText,
                },
                message: refusal.to_string(),
                field: Some("text".into()),
            },
            BackendError::OptedOut(_) => ApiError::Invalid {
                code: ErrorCode::OptedOut,
                message: e.to_string(),
                field: Some("to".into()),
            },
            BackendError::InvalidCursor => ApiError::BadRequest {
                code: ErrorCode::InvalidCursor,
                message: "`after` is not a cursor this server issued".into(),
                field: Some("after".into()),
            },
            BackendError::Unavailable(why) => ApiError::Unavailable(why),
        }
    }
}

pub type BackendResult<'a, T> = BoxFuture<'a, Result<T, BackendError>>;

/// Everything the routes ask of the daemon. [`super::gateway::Gateway`] implements it over the store, the
/// dispatcher and the modem workers.
pub trait Backend: Send + Sync + 'static {
    /// Stores a send durably and hands it to the dispatcher; idempotent per (api key, idempotency key).
    fn accept(&self, message: NewMessage) -> BackendResult<'_, Accepted>;
    /// When the send `api_key` made with idempotency key `key` was accepted, if it was.
    fn accepted_at(&self, api_key: String, key: String) -> BackendResult<'_, Option<Timestamp>>;
    /// Stores many sends in one commit; one result per item, in order.
    fn accept_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> BackendResult<'_, Vec<Result<Accepted, BackendError>>>;
    fn message(&self, id: Uuid) -> BackendResult<'_, MessageDetail>;
    fn list(&self, filter: ListFilter) -> BackendResult<'_, Page>;
    /// Both directions with `number`, in time order.
    fn conversation(
        &self,
        number: Msisdn,
        limit: usize,
        after: Option<String>,
    ) -> BackendResult<'_, Page>;
    /// Cancels a message not yet handed to a modem (`InvalidState` otherwise); `actor` is recorded.
    fn cancel(&self, id: Uuid, actor: String) -> BackendResult<'_, MessageView>;
    fn modems(&self) -> BackendResult<'_, Vec<ModemView>>;
    /// Pauses (or resumes) a modem: the dispatcher gives it nothing new while paused.
    fn set_paused(&self, modem: String, paused: bool) -> BackendResult<'_, ModemView>;
    fn optouts(&self) -> BackendResult<'_, Vec<Optout>>;
    /// Opts `number` out; the record, and whether it is new (an existing opt-out is kept as it was).
    fn add_optout(
        &self,
        number: Msisdn,
        actor: String,
        note: Option<String>,
    ) -> BackendResult<'_, (Optout, bool)>;
    fn remove_optout(&self, number: Msisdn, actor: String) -> BackendResult<'_, ()>;
    /// Every change to an opt-out (or `number`'s), oldest first.
    fn optout_audit(
        &self,
        number: Option<Msisdn>,
    ) -> BackendResult<'_, Vec<store::OptOutAuditEntry>>;
    /// Ready to accept traffic (store open and answering); `Err` says why not.
    fn ready(&self) -> BackendResult<'_, ()>;
    /// Brings the gauges that mirror live state (messages by status and modem, queue depth, webhook
    /// backlog, each modem's state and signal) up to date just before a scrape, so they can never be stale.
    fn refresh_metrics<'a>(&'a self, metrics: &'a Metrics) -> BackendResult<'a, ()>;
}
