//! Retention: deleting what is older than `[storage] retain_days`, so a box that sends for years does not
//! fill its disk. Nothing is deleted unless the admin sets it: the record is the agency's proof of what was
//! said to whom and when.
//!
//! - Messages go only once final (sent, delivered, failed, cancelled, expired, unknown, received) and last
//!   changed before the cutoff, each with its parts, events and received parts. A message still queued or
//!   sending is kept however old.
//! - Webhook events and their attempts go by age, delivered or not (a receiver that has not taken an event
//!   in years will not), as do the contact-cap history and the per-SIM daily counters.
//! - Opt-outs and their audit trail are never deleted: a STOP is honoured for good. The message that
//!   asked (the STOP, the START) is kept too, with its parts and events, as the audit's evidence of what
//!   the debtor wrote.
//!
//! Each call deletes at most a chunk, in one writer transaction, so accepts queued behind it wait
//! milliseconds; the caller walks the tables with a [`PruneCursor`]. Both walks go in row order, which is
//! the order rows were written, and stop at the first row written after the cutoff, so a pass reads only
//! what it deletes and what it keeps among the old.

use jiff::Timestamp;
use rusqlite::params;

use super::error::{Result, StoreError};
use super::keys::MessageKeys;
use super::rows::ms;
use super::types::MessageState;
use super::writer::WriteCtx;

const DB: fn(rusqlite::Error) -> StoreError = |e| StoreError::sqlite("pruning old records")(e);

/// Where a pass has got to: the last message row and webhook event it looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCursor {
    message_row: i64,
    outbox_row: i64,
    /// Both walks reached rows written after the cutoff; what is left goes by an index.
    walked: bool,
}

/// What one call deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub messages: usize,
    pub webhook_events: usize,
    /// Contact-cap history rows, daily counters and received parts that never made a message.
    pub other_rows: usize,
    /// Where the next call goes on from, or `None` when the pass is complete.
    pub next: Option<PruneCursor>,
}

/// Deletes up to `chunk` messages and `chunk` webhook events written before `cutoff`, going on from
/// `cursor`; once both walks are done, the rest (contact-cap history, counters) in chunks too.
pub(crate) fn prune(
    ctx: &WriteCtx<'_>,
    cutoff: Timestamp,
    cursor: PruneCursor,
    chunk: usize,
) -> Result<Pruned> {
    let cutoff_ms = ms(cutoff);
    let limit = i64::try_from(chunk.max(1)).unwrap_or(i64::MAX);
    if cursor.walked {
        let (other_rows, more) = prune_by_index(ctx, cutoff, limit)?;
        return Ok(Pruned {
            other_rows,
            next: more.then_some(cursor),
            ..Pruned::default()
        });
    }
    let (messages, message_row, messages_done) =
        prune_messages(ctx, cutoff_ms, cursor.message_row, limit)?;
    let (webhook_events, outbox_row, outbox_done) =
        prune_outbox(ctx, cutoff_ms, cursor.outbox_row, limit)?;
    Ok(Pruned {
        messages,
        webhook_events,
        other_rows: 0,
        next: Some(PruneCursor {
            message_row,
            outbox_row,
            walked: messages_done && outbox_done,
        }),
    })
}

/// A message retention may delete: what decides it, and what its rows are found by.
struct Candidate {
    id: String,
    state: MessageState,
    updated_at: i64,
    peer: String,
    reference: Option<String>,
    api_key: String,
    idempotency_key: Option<String>,
}

/// Walks up to `limit` message rows after `after`; returns as [`walk`] does.
fn prune_messages(
    ctx: &WriteCtx<'_>,
    cutoff_ms: i64,
    after: i64,
    limit: i64,
) -> Result<(usize, i64, bool)> {
    let rows: Vec<(i64, i64, Candidate)> = ctx
        .conn
        .prepare_cached(
            "SELECT rowid, created_at, id, state, updated_at, peer, reference, api_key, idempotency_key \
             FROM messages WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )
        .and_then(|mut st| {
            st.query_map(params![after, limit], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    Candidate {
                        id: row.get(2)?,
                        state: row.get(3)?,
                        updated_at: row.get(4)?,
                        peer: row.get(5)?,
                        reference: row.get(6)?,
                        api_key: row.get(7)?,
                        idempotency_key: row.get(8)?,
                    },
                ))
            })?
            .collect()
        })
        .map_err(DB)?;
    // Taken out of the look-ups a key at a time: a key's rows hold many ids each.
    let mut deleted = Vec::new();
    let walked = walk(rows, after, limit, cutoff_ms, |_, candidate| {
        let Candidate {
            id,
            state,
            updated_at,
            ..
        } = &candidate;
        let delete = state.is_final() && *updated_at < cutoff_ms && !is_optout_evidence(ctx, id)?;
        if delete {
            for sql in [
                "DELETE FROM events WHERE message_id = ?1",
                "DELETE FROM parts WHERE message_id = ?1",
                "DELETE FROM inbound_parts WHERE message_id = ?1",
                "DELETE FROM messages WHERE id = ?1",
            ] {
                execute(ctx, sql, &[id])?;
            }
            if let Ok(id) = uuid::Uuid::parse_str(id) {
                let keys = MessageKeys::new(
                    &candidate.peer,
                    candidate.reference.as_deref(),
                    &candidate.api_key,
                    candidate.idempotency_key.as_deref(),
                );
                deleted.extend(keys.keys(id));
            }
        }
        Ok(delete)
    })?;
    super::keys::forget(ctx.conn, deleted).map_err(DB)?;
    Ok(walked)
}

/// Walks up to `limit` webhook events after `after`, deleting each with its attempts; returns as [`walk`]
/// does.
fn prune_outbox(
    ctx: &WriteCtx<'_>,
    cutoff_ms: i64,
    after: i64,
    limit: i64,
) -> Result<(usize, i64, bool)> {
    let rows: Vec<(i64, i64, ())> = ctx
        .conn
        .prepare_cached(
            "SELECT id, created_at FROM webhook_outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .and_then(|mut st| {
            st.query_map(params![after, limit], |row| {
                Ok((row.get(0)?, row.get(1)?, ()))
            })?
            .collect()
        })
        .map_err(DB)?;
    walk(rows, after, limit, cutoff_ms, |id, ()| {
        execute(
            ctx,
            "DELETE FROM webhook_attempts WHERE outbox_id = ?1",
            &[&id],
        )?;
        execute(ctx, "DELETE FROM webhook_outbox WHERE id = ?1", &[&id])?;
        Ok(true)
    })
}

/// Goes through `rows` (row number, when written, what `prune` needs), read after row `after` in row order
/// at most `limit` of them, until the first written at or after the cutoff; `prune` says whether it deleted
/// each. Returns (deleted, the last row looked at, whether the walk reached the cutoff or the table's end).
fn walk<T>(
    rows: Vec<(i64, i64, T)>,
    after: i64,
    limit: i64,
    cutoff_ms: i64,
    mut prune: impl FnMut(i64, T) -> Result<bool>,
) -> Result<(usize, i64, bool)> {
    let mut done = i64::try_from(rows.len()).unwrap_or(i64::MAX) < limit;
    let (mut last, mut deleted) = (after, 0);
    for (row, written, item) in rows {
        if written >= cutoff_ms {
            done = true;
            break;
        }
        last = row;
        deleted += usize::from(prune(row, item)?);
    }
    Ok((deleted, last, done))
}

/// Whether an opt-out's audit names message `id` as the one that asked for it.
fn is_optout_evidence(ctx: &WriteCtx<'_>, id: &str) -> Result<bool> {
    ctx.conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM optout_audit WHERE source_message = ?1)")
        .and_then(|mut st| st.query_row([id], |row| row.get(0)))
        .map_err(DB)
}

fn execute(ctx: &WriteCtx<'_>, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Result<usize> {
    ctx.conn
        .prepare_cached(sql)
        .and_then(|mut st| st.execute(params))
        .map_err(DB)
}

/// The contact-cap history by its time index, at most `limit` rows per call; once it is done, the daily
/// counters by day and received parts that never made a message (small sets). Returns (rows deleted,
/// whether history is left for another call).
fn prune_by_index(ctx: &WriteCtx<'_>, cutoff: Timestamp, limit: i64) -> Result<(usize, bool)> {
    let cutoff_ms = ms(cutoff);
    let history = execute(
        ctx,
        "DELETE FROM recipient_sends WHERE id IN \
         (SELECT id FROM recipient_sends WHERE at < ?1 ORDER BY at LIMIT ?2)",
        &[&cutoff_ms, &limit],
    )?;
    if i64::try_from(history).unwrap_or(i64::MAX) >= limit {
        return Ok((history, true));
    }
    // Days are named in the cap zone; a day before the cutoff's UTC date ended before it anywhere.
    let day = cutoff
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .yesterday()
        .map_or_else(|_| String::new(), |d| d.to_string());
    let counters = execute(
        ctx,
        "DELETE FROM sim_daily_counters WHERE day < ?1",
        &[&day],
    )?;
    let orphans = execute(
        ctx,
        "DELETE FROM inbound_parts WHERE message_id IS NULL AND received_at < ?1",
        &[&cutoff_ms],
    )?;
    Ok((history + counters + orphans, false))
}
