//! Side records: modem identities, opt-outs with their audit trail, and the webhook outbox.

use rusqlite::params;
use uuid::Uuid;

use super::error::{Result, StoreError};
use super::rows::ms;
use super::types::OptOutSource;
use super::writer::WriteCtx;
use crate::modem::job::ModemIdentity;

const DB: fn(rusqlite::Error) -> StoreError = |e| StoreError::sqlite("writing a record")(e);

/// Records what a modem said about itself at initialisation. Fields it did not report are kept, except
/// the SIM's (IMSI, own number) when it reports another SIM: the old SIM's number is not the new one's.
pub(crate) fn upsert_modem(ctx: &WriteCtx<'_>, id: &str, identity: &ModemIdentity) -> Result<()> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO modems (id, manufacturer, model, revision, imei, imsi, iccid, own_number, first_seen, \
             last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) ON CONFLICT (id) DO UPDATE SET \
             manufacturer = coalesce(?2, manufacturer), model = coalesce(?3, model), \
             revision = coalesce(?4, revision), imei = coalesce(?5, imei), \
             imsi = CASE WHEN ?7 IS NOT iccid AND ?7 IS NOT NULL THEN ?6 ELSE coalesce(?6, imsi) END, \
             iccid = coalesce(?7, iccid), \
             own_number = CASE WHEN ?7 IS NOT iccid AND ?7 IS NOT NULL THEN ?8 ELSE coalesce(?8, own_number) END, \
             last_seen = ?9",
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
                ms(ctx.now())
            ])
        })
        .map_err(DB)?;
    Ok(())
}

/// Why an opt-out changed, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOutChange {
    pub number: String,
    /// `Some`: the number opted out, and how; `None`: it opted back in.
    pub opted_out: Option<OptOutSource>,
    /// `rules`, `api:KEY`, an admin's name.
    pub actor: String,
    /// The inbound message that caused it (STOP, START...).
    pub source_message: Option<Uuid>,
    pub modem: Option<String>,
    /// What was said or noted: the keyword (`STOP`), the reply under review, an admin's note.
    pub detail: Option<String>,
}

pub(crate) fn set_optout(ctx: &WriteCtx<'_>, change: &OptOutChange) -> Result<()> {
    let source = change.source_message.map(|id| id.to_string());
    let active = change.opted_out.is_some();
    ctx.conn
        .prepare_cached(
            "INSERT INTO optouts (number, active, created_at, updated_at, source_message, modem, source) \
             VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6) ON CONFLICT (number) DO UPDATE SET active = ?2, \
             updated_at = ?3, source_message = ?4, modem = ?5, source = ?6",
        )
        .and_then(|mut st| {
            st.execute(params![
                change.number,
                active,
                ms(ctx.now()),
                source,
                change.modem,
                change.opted_out
            ])
        })
        .map_err(DB)?;
    match change.opted_out {
        Some(how) => super::outbox::opted_out(ctx, change, how)?,
        None => super::outbox::opted_in(ctx, change)?,
    }
    // A STOP or an agency's opt-out is final for what waits; a reply under review only holds it back at
    // hand-off, so a person who finds it was no opt-out loses no scheduled message.
    if matches!(
        change.opted_out,
        Some(OptOutSource::Keyword | OptOutSource::Api)
    ) {
        super::write::block_pending_to(ctx, &change.number, &change.actor)?;
    }
    // The audit trail marks a reply under review as such.
    let detail = match (change.opted_out, &change.detail) {
        (Some(OptOutSource::Review), Some(text)) => Some(format!("review: {text}")),
        (_, detail) => detail.clone(),
    };
    ctx.conn
        .prepare_cached(
            "INSERT INTO optout_audit (number, at, active, actor, source_message, modem, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut st| {
            st.execute(params![
                change.number,
                ms(ctx.now()),
                active,
                change.actor,
                source,
                change.modem,
                detail
            ])
        })
        .map_err(DB)?;
    Ok(())
}
