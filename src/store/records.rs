//! Side records: modem identities, opt-outs with their audit trail, and the webhook outbox.

use jiff::Timestamp;
use rusqlite::params;
use uuid::Uuid;

use super::error::{Result, StoreError};
use super::rows::ms;
use super::writer::WriteCtx;
use crate::modem::job::ModemIdentity;

const DB: fn(rusqlite::Error) -> StoreError = |e| StoreError::sqlite("writing a record")(e);

/// Records what a modem said about itself at initialisation (fields it did not report are kept).
pub(crate) fn upsert_modem(ctx: &WriteCtx<'_>, id: &str, identity: &ModemIdentity) -> Result<()> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO modems (id, manufacturer, model, revision, imei, imsi, iccid, own_number, first_seen, \
             last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) ON CONFLICT (id) DO UPDATE SET \
             manufacturer = coalesce(?2, manufacturer), model = coalesce(?3, model), \
             revision = coalesce(?4, revision), imei = coalesce(?5, imei), imsi = coalesce(?6, imsi), \
             iccid = coalesce(?7, iccid), own_number = coalesce(?8, own_number), last_seen = ?9",
        )
        .and_then(|mut st| {
            st.execute(params![
                id,
                identity.manufacturer,
                identity.model,
                identity.revision,
                identity.imei,
                identity.imsi,
                identity.iccid,
                identity.own_number,
                ms(ctx.now)
            ])
        })
        .map_err(DB)?;
    Ok(())
}

/// Why an opt-out changed, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOutChange {
    pub number: String,
    /// `true`: the number opted out; `false`: it opted back in.
    pub active: bool,
    /// `rules`, `api:KEY`, an admin's name.
    pub actor: String,
    /// The inbound message that caused it (STOP, START...).
    pub source_message: Option<Uuid>,
    pub modem: Option<String>,
    pub detail: Option<String>,
}

pub(crate) fn set_optout(ctx: &WriteCtx<'_>, change: &OptOutChange) -> Result<()> {
    let source = change.source_message.map(|id| id.to_string());
    ctx.conn
        .prepare_cached(
            "INSERT INTO optouts (number, active, created_at, updated_at, source_message, modem) \
             VALUES (?1, ?2, ?3, ?3, ?4, ?5) ON CONFLICT (number) DO UPDATE SET active = ?2, updated_at = ?3, \
             source_message = ?4, modem = ?5",
        )
        .and_then(|mut st| {
            st.execute(params![
                change.number,
                change.active,
                ms(ctx.now),
                source,
                change.modem
            ])
        })
        .map_err(DB)?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO optout_audit (number, at, active, actor, source_message, modem, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut st| {
            st.execute(params![
                change.number,
                ms(ctx.now),
                change.active,
                change.actor,
                source,
                change.modem,
                change.detail
            ])
        })
        .map_err(DB)?;
    Ok(())
}

/// Queues a webhook delivery; committed with the state change that caused it when done in the same batch.
pub(crate) fn enqueue_webhook(
    ctx: &WriteCtx<'_>,
    event_type: &str,
    message_id: Option<Uuid>,
    payload: &serde_json::Value,
) -> Result<i64> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO webhook_outbox (event_type, message_id, payload, next_attempt_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )
        .and_then(|mut st| {
            st.execute(params![
                event_type,
                message_id.map(|id| id.to_string()),
                payload.to_string(),
                ms(ctx.now)
            ])
        })
        .map_err(DB)?;
    Ok(ctx.conn.last_insert_rowid())
}

/// The result of one delivery attempt of an outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    pub outbox_id: i64,
    /// HTTP status, when a response came.
    pub status: Option<u16>,
    /// Why it failed; `None` means delivered.
    pub error: Option<String>,
    /// When to try again after a failure; `None` after a failure means give up.
    pub retry_at: Option<Timestamp>,
}

pub(crate) fn record_webhook_attempt(ctx: &WriteCtx<'_>, attempt: &WebhookAttempt) -> Result<()> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO webhook_attempts (outbox_id, at, status, error) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| {
            st.execute(params![
                attempt.outbox_id,
                ms(ctx.now),
                attempt.status,
                attempt.error
            ])
        })
        .map_err(DB)?;
    let delivered = attempt.error.is_none().then_some(ms(ctx.now));
    // Giving up parks the entry undelivered at the end of time: visible, never retried.
    let next = match (delivered, attempt.retry_at) {
        (Some(now), _) => now,
        (None, Some(at)) => ms(at),
        (None, None) => i64::MAX,
    };
    ctx.conn
        .prepare_cached(
            "UPDATE webhook_outbox SET attempts = attempts + 1, delivered_at = ?2, next_attempt_at = ?3 \
             WHERE id = ?1",
        )
        .and_then(|mut st| st.execute(params![attempt.outbox_id, delivered, next]))
        .map_err(DB)?;
    Ok(())
}
