//! Side records: modem identities, opt-outs with their audit trail, and the webhook outbox.

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
    /// What was said (the keyword, e.g. `STOP`), echoed in `optout.created`.
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
    if change.active {
        let source = if change.source_message.is_some() {
            "keyword"
        } else {
            "api"
        };
        super::outbox::opted_out(ctx, &change.number, source, change.detail.as_deref())?;
    }
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
