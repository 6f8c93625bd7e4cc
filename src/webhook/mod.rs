//! Durable delivery of events to the CMS's webhooks.
//!
//! # Wire format
//! Each delivery is `POST <url>` with `Content-Type: application/json` and the body
//! `{"id": "<uuid>", "type": "message.delivered", "created_at": "<RFC 3339>", "data": {...}}`.
//! The header `Modemgate-Signature: t=<unix seconds>,v1=<hex>` carries HMAC-SHA256, keyed with the webhook's
//! `secret`, over the bytes `<t>.<body>`. Receivers recompute it, compare in constant time, and reject a `t`
//! too far from their clock (replay protection); [`verify`] does exactly that. `id` is the event's id: the
//! same event retried keeps its id, so receivers de-duplicate on it.
//!
//! # Delivery
//! Events are written to the store's outbox (one row per event and subscribed webhook) in the same commit as
//! the state change that caused them, so none is lost in a crash. The [`Deliverer`] then posts due rows, each
//! webhook's in a loop of its own ([`Lane`]), so a receiver that is down or slow to answer delays only its
//! own events: 2xx marks a row delivered; anything else (or no answer in time) records the attempt and
//! schedules the next after an exponential back-off with jitter ([`Backoff`], 1 s doubling to 1 h by
//! default). Rows of one message go out in order: [`OutboxStore::next_due`] offers only the oldest
//! undelivered row of each message in a lane.
//!
//! `https://` URLs are verified against the system's CA store (rustls with ring); `http://` is for loopback
//! and test rigs (check-config warns about it).

mod backoff;
mod deliver;
mod event;
mod outbox;
mod signature;
mod target;

pub use backoff::Backoff;
pub use deliver::{Deliverer, Round};
pub use event::{Envelope, Event, EventKind, MessageEvent, OptoutEvent, ReceivedEvent};
pub use outbox::{
    Attempt, AttemptOutcome, Lane, OutboxError, OutboxItem, OutboxResult, OutboxStore,
};
pub use signature::verify;
pub use target::{Subscription, Target, label_of, labels, targets};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook url {0:?} is not a valid http:// or https:// URL")]
    BadUrl(String),
    #[error("webhook secret is empty")]
    EmptySecret,
    #[error("Modemgate-Signature header is malformed")]
    MalformedSignature,
    #[error("Modemgate-Signature timestamp is outside the tolerance")]
    StaleSignature,
    #[error("Modemgate-Signature does not match the body")]
    BadSignature,
}
