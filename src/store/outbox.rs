//! The webhook outbox: an event row written in the same commit as the state change that caused it (so a
//! crash can lose neither), and the [`crate::webhook::OutboxStore`] the deliverer reads it through.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::Store;
use super::error::{Result, StoreError};
use super::records::OptOutChange;
use super::rows::{self, ms};
use super::types::OptOutSource;
use super::types::{Message, MessageState};
use super::writer::WriteCtx;
use crate::webhook::{
    Attempt, AttemptOutcome, Envelope, Event, EventKind, Lane, MessageEvent, OptoutEvent,
    OutboxError, OutboxItem, OutboxResult, OutboxStore, ReceivedEvent, Subscription,
};

const DB: fn(rusqlite::Error) -> StoreError =
    |e| StoreError::sqlite("writing the webhook outbox")(e);

/// How an inbound reply is labelled in `message.received` (its sender, its text) → (intent, needs_agent):
/// given by the reply rules, so the event written with the message already says what the reply is.
pub type Verdict = std::sync::Arc<dyn Fn(&str, &str) -> (Option<String>, bool) + Send + Sync>;

/// What the outbox writes: a row per event and webhook subscribed to its type (an event no webhook wants
/// is not written at all), and how replies are labelled.
pub(crate) struct Wanted {
    pub webhooks: Vec<Subscription>,
    pub verdict: Option<Verdict>,
}

impl Wanted {
    pub fn wants(&self, kind: EventKind) -> bool {
        self.webhooks.iter().any(|webhook| webhook.wants(kind))
    }
}

/// Writes the event once for each webhook that wants it, all with the same envelope (so the same `id`).
/// The `message_id` column holds what the event must arrive in order with ([`Event::in_order_of`]): a
/// message's id, or `optout:<number>`.
fn insert(ctx: &WriteCtx<'_>, event: Event) -> Result<()> {
    let kind = event.kind();
    let message_id = event.in_order_of();
    let payload = Envelope::new(event, ctx.now()).payload().to_string();
    for webhook in ctx.webhooks_for(kind) {
        ctx.conn
            .prepare_cached(
                "INSERT INTO webhook_outbox (event_type, message_id, payload, next_attempt_at, created_at, \
                 target, target_name) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    kind.as_str(),
                    message_id,
                    payload,
                    ms(ctx.now()),
                    webhook.url,
                    webhook.name
                ])
            })
            .map_err(DB)?;
    }
    Ok(())
}

/// The webhook event a message state announces, if any.
fn kind_for(state: MessageState) -> Option<EventKind> {
    match state {
        MessageState::Sent => Some(EventKind::MessageSent),
        MessageState::Delivered => Some(EventKind::MessageDelivered),
        MessageState::Failed => Some(EventKind::MessageFailed),
        MessageState::Expired => Some(EventKind::MessageExpired),
        MessageState::Unknown => Some(EventKind::MessageUnknown),
        MessageState::Received => Some(EventKind::MessageReceived),
        MessageState::Queued
        | MessageState::Scheduled
        | MessageState::Sending
        | MessageState::Cancelled => None,
    }
}

/// Writes the event announcing that message `id` reached `state`, if a webhook wants it.
pub(crate) fn message_reached(ctx: &WriteCtx<'_>, id: Uuid, state: MessageState) -> Result<()> {
    let Some(kind) = kind_for(state).filter(|kind| ctx.wants(*kind)) else {
        return Ok(());
    };
    let message = ctx
        .conn
        .prepare_cached(&format!(
            "SELECT {} FROM messages WHERE id = ?1",
            rows::MESSAGE_COLUMNS
        ))
        .and_then(|mut st| st.query_row([id.to_string()], rows::message).optional())
        .map_err(DB)?
        .ok_or(StoreError::NotFound(id))?;
    let event = match kind {
        EventKind::MessageReceived => Event::MessageReceived(received(ctx, &message)?),
        kind => {
            let data = MessageEvent {
                message_id: id,
                to: message.peer,
                parts: usize::from(message.part_count),
                modem: message.modem,
                reference: message.reference,
                metadata: match message.metadata {
                    Some(serde_json::Value::Object(map)) => Some(map),
                    _ => None,
                },
                error: message.error,
                error_code: message.error_code,
                category: message.category,
            };
            match kind {
                EventKind::MessageSent => Event::MessageSent(data),
                EventKind::MessageDelivered => Event::MessageDelivered(data),
                EventKind::MessageExpired => Event::MessageExpired(data),
                EventKind::MessageUnknown => Event::MessageUnknown(data),
                _ => Event::MessageFailed(data),
            }
        }
    };
    insert(ctx, event)
}

fn received(ctx: &WriteCtx<'_>, message: &Message) -> Result<ReceivedEvent> {
    let modem = message.modem.clone().unwrap_or_default();
    // When the first part was sent (the message itself carries the last part's time).
    let sent_at: Option<i64> = ctx
        .conn
        .prepare_cached("SELECT min(sent_at) FROM inbound_parts WHERE message_id = ?1")
        .and_then(|mut st| st.query_row(params![message.id.to_string()], |row| row.get(0)))
        .map_err(DB)?;
    // Without a verdict every reply is one a person should read.
    let (intent, needs_agent) = ctx
        .verdict(&message.peer, &message.text)
        .unwrap_or((None, true));
    Ok(ReceivedEvent {
        message_id: message.id,
        from: message.peer.clone(),
        // The SIM's number as stored with the message.
        to: message.modem_number.clone(),
        text: message.text.clone(),
        parts: usize::from(message.part_count),
        modem,
        sent_at: sent_at.and_then(|ms| Timestamp::from_millisecond(ms).ok()),
        intent,
        needs_agent,
    })
}

/// Writes `optout.created` for a number that just opted out, with what caused it in its own field.
pub(crate) fn opted_out(
    ctx: &WriteCtx<'_>,
    change: &OptOutChange,
    how: OptOutSource,
) -> Result<()> {
    if ctx.wants(EventKind::OptoutCreated) {
        insert(ctx, Event::OptoutCreated(optout_event(change, how)))?;
    }
    Ok(())
}

/// Writes `optout.removed` for a number that opted back in: by a reply (START) or through the API.
pub(crate) fn opted_in(ctx: &WriteCtx<'_>, change: &OptOutChange) -> Result<()> {
    if ctx.wants(EventKind::OptoutRemoved) {
        let how = match change.source_message {
            Some(_) => OptOutSource::Keyword,
            None => OptOutSource::Api,
        };
        insert(ctx, Event::OptoutRemoved(optout_event(change, how)))?;
    }
    Ok(())
}

/// The change's data, with what caused it in the field `how` names.
fn optout_event(change: &OptOutChange, how: OptOutSource) -> OptoutEvent {
    let detail = change.detail.clone();
    let (keyword, text, note) = match how {
        OptOutSource::Keyword => (detail, None, None),
        OptOutSource::Review => (None, detail, None),
        OptOutSource::Api => (None, None, detail),
    };
    OptoutEvent {
        number: change.number.clone(),
        source: how.as_str().to_owned(),
        keyword,
        text,
        note,
        message_id: change.source_message,
    }
}

fn outbox_error(error: StoreError) -> OutboxError {
    OutboxError(error.to_string())
}

impl Store {
    /// Moves the undelivered rows of each named webhook (`named`: name and URL now) that was given a new
    /// URL to that URL, where they go out in order; the names whose rows moved, with how many.
    pub async fn follow_renamed_webhooks(
        &self,
        named: Vec<(String, String)>,
    ) -> Result<Vec<(String, u64)>> {
        self.inner
            .writer
            .write(move |ctx| {
                let mut moved = Vec::new();
                for (name, url) in named {
                    let rows = ctx
                        .conn
                        .prepare_cached(
                            "UPDATE webhook_outbox SET target = ?2 \
                             WHERE delivered_at IS NULL AND target_name = ?1 AND target IS NOT ?2",
                        )
                        .and_then(|mut st| st.execute(params![name, url]))
                        .map_err(DB)?;
                    if rows > 0 {
                        moved.push((name, rows as u64));
                    }
                }
                Ok(moved)
            })
            .await
    }
}

impl OutboxStore for Store {
    fn next_due(
        &self,
        lane: &Lane,
        now: Timestamp,
        limit: usize,
    ) -> OutboxResult<'_, Vec<OutboxItem>> {
        let target = lane.target().map(str::to_owned);
        Box::pin(async move {
            let rows = self
                .read(move |conn| {
                    conn.prepare_cached(
                        "SELECT id, event_type, payload, attempts, target FROM webhook_outbox o \
                         WHERE delivered_at IS NULL AND next_attempt_at <= ?1 AND target IS ?3 \
                         AND (message_id IS NULL OR id = \
                         (SELECT min(id) FROM webhook_outbox p WHERE p.message_id = o.message_id \
                          AND p.target IS o.target AND p.delivered_at IS NULL)) ORDER BY id LIMIT ?2",
                    )
                    .and_then(|mut st| {
                        st.query_map(params![ms(now), limit as i64, target], |row| {
                            Ok((
                                row.get::<_, i64>(0)?,
                                row.get::<_, String>(1)?,
                                row.get::<_, String>(2)?,
                                row.get::<_, u32>(3)?,
                                row.get::<_, Option<String>>(4)?,
                            ))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(StoreError::sqlite("reading the webhook outbox"))
                })
                .await
                .map_err(outbox_error)?;
            // A row read may be of a batch still being synced: posted only once it is durable.
            self.inner.durable.settled().await.map_err(outbox_error)?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, kind, payload, attempts, target)| {
                    // A type this build does not know (written by a newer one) is left alone.
                    EventKind::parse(&kind).map(|kind| OutboxItem {
                        id,
                        kind,
                        body: payload.into_bytes(),
                        attempts,
                        target,
                    })
                })
                .collect())
        })
    }

    fn record_attempt(&self, id: i64, attempt: Attempt) -> OutboxResult<'_, ()> {
        let (status, error) = match attempt.outcome {
            AttemptOutcome::Status(status) => (Some(status), None),
            AttemptOutcome::Error(error) => (None, Some(error)),
        };
        Box::pin(async move {
            self.inner
                .writer
                .write(move |ctx| {
                    attempt_row(ctx, id, attempt.at, status, error.as_deref())?;
                    ctx.conn
                        .prepare_cached(
                            "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?2 WHERE id = ?1",
                        )
                        .and_then(|mut st| st.execute(params![id, ms(attempt.next_at)]))
                        .map_err(DB)?;
                    Ok(())
                })
                .await
                .map_err(outbox_error)
        })
    }

    fn mark_delivered(&self, id: i64, at: Timestamp, status: u16) -> OutboxResult<'_, ()> {
        Box::pin(async move {
            self.inner
                .writer
                .write(move |ctx| {
                    attempt_row(ctx, id, at, Some(status), None)?;
                    ctx.conn
                        .prepare_cached(
                            "UPDATE webhook_outbox SET attempts = attempts + 1, delivered_at = ?2 WHERE id = ?1",
                        )
                        .and_then(|mut st| st.execute(params![id, ms(at)]))
                        .map_err(DB)?;
                    Ok(())
                })
                .await
                .map_err(outbox_error)
        })
    }
}

fn attempt_row(
    ctx: &WriteCtx<'_>,
    id: i64,
    at: Timestamp,
    status: Option<u16>,
    error: Option<&str>,
) -> Result<()> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO webhook_attempts (outbox_id, at, status, error, target) \
             VALUES (?1, ?2, ?3, ?4, (SELECT target FROM webhook_outbox WHERE id = ?1))",
        )
        .and_then(|mut st| st.execute(params![id, ms(at), status, error]))
        .map_err(DB)?;
    Ok(())
}
