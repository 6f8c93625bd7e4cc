//! What the deliverer needs of the durable outbox (the store's `webhook_outbox` table).

use futures_util::future::BoxFuture;
use jiff::Timestamp;

use super::event::EventKind;

/// The outbox rows one delivery loop posts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    /// The rows of the webhook at this URL.
    Webhook(String),
    /// Rows written before rows were per webhook: each goes to every webhook subscribed to its type.
    Shared,
}

impl Lane {
    /// The outbox's `target` for this lane's rows.
    pub fn target(&self) -> Option<&str> {
        match self {
            Lane::Webhook(url) => Some(url),
            Lane::Shared => None,
        }
    }
}

/// An outbox row due for delivery: one event for one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    pub kind: EventKind,
    /// The exact bytes to post (the stored [`Envelope`](super::Envelope)).
    pub body: Vec<u8>,
    /// Attempts made so far.
    pub attempts: u32,
    /// The webhook it is for; `None` for a row written before rows were per webhook, which goes to every
    /// webhook subscribed to its type.
    pub target: Option<String>,
}

/// How an attempt ended for the webhooks that did not accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A receiver answered with this (non-2xx) status.
    Status(u16),
    /// No answer: connection refused, timeout, unknown event type.
    Error(String),
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptOutcome::Status(status) => write!(f, "HTTP {status}"),
            AttemptOutcome::Error(error) => f.write_str(error),
        }
    }
}

/// One failed attempt, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub at: Timestamp,
    pub outcome: AttemptOutcome,
    pub next_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook outbox: {0}")]
pub struct OutboxError(pub String);

pub type OutboxResult<'a, T> = BoxFuture<'a, Result<T, OutboxError>>;

/// The outbox storage (the store's `webhook_outbox` table). Rows are added with the state change that
/// caused them, as an [`Envelope`](super::Envelope) with its [`EventKind`], message id and webhook.
pub trait OutboxStore: Send + Sync + 'static {
    /// `lane`'s undelivered rows due at `now`, oldest first, at most `limit`, and only the oldest
    /// undelivered row of each message: a message's later event waits for its earlier one to reach that
    /// webhook, even when due, and for no other webhook.
    fn next_due(
        &self,
        lane: &Lane,
        now: Timestamp,
        limit: usize,
    ) -> OutboxResult<'_, Vec<OutboxItem>>;
    /// Records a failed attempt and when to try again.
    fn record_attempt(&self, id: i64, attempt: Attempt) -> OutboxResult<'_, ()>;
    /// Records the successful attempt; the row is never offered again.
    fn mark_delivered(&self, id: i64, at: Timestamp, status: u16) -> OutboxResult<'_, ()>;
}
