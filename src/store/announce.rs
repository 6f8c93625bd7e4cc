//! Webhook events for outbound status changes, written into the outbox in the same transaction as the
//! change itself: a crash can never leave a message `delivered` without its `message.delivered` queued, and
//! changes made by recovery at start-up (`unknown`) are announced like any other.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::error::{Result, StoreError};
use super::rows::ms;
use super::types::MessageState;
use crate::webhook::{Envelope, Event, MessageEvent};

/// The event a message entering `state` produces, if any.
fn event_for(state: MessageState) -> Option<fn(MessageEvent) -> Event> {
    Some(match state {
        MessageState::Sent => Event::MessageSent,
        MessageState::Delivered => Event::MessageDelivered,
        MessageState::Failed => Event::MessageFailed,
        MessageState::Expired => Event::MessageExpired,
        MessageState::Unknown => Event::MessageUnknown,
        _ => return None,
    })
}

/// Queue the webhook event for message `id` having just entered `state` (nothing for states without one).
pub(crate) fn announce(
    conn: &Connection,
    now: Timestamp,
    id: Uuid,
    state: MessageState,
) -> Result<()> {
    let Some(event) = event_for(state) else {
        return Ok(());
    };
    let db = |source| StoreError::sqlite("announcing a status change")(source);
    let row = conn
        .prepare_cached(
            "SELECT peer, part_count, modem, reference, metadata, error FROM messages WHERE id = ?1",
        )
        .and_then(|mut st| {
            st.query_row([id.to_string()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, u16>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<String>>(5)?,
                ))
            })
            .optional()
        })
        .map_err(db)?;
    let Some((to, parts, modem, reference, metadata, error)) = row else {
        return Err(StoreError::NotFound(id));
    };
    let metadata = metadata
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|value| value.as_object().cloned());
    let data = MessageEvent {
        message_id: id,
        to,
        parts: usize::from(parts),
        modem,
        reference,
        metadata,
        error,
    };
    let envelope = Envelope::new(event(data), now);
    conn.prepare_cached(
        "INSERT INTO webhook_outbox (event_type, message_id, payload, next_attempt_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )
    .and_then(|mut st| {
        st.execute(params![
            envelope.event.kind().as_str(),
            id.to_string(),
            envelope.payload().to_string(),
            ms(now)
        ])
    })
    .map_err(db)?;
    Ok(())
}
