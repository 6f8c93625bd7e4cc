//! The write operations: each runs inside the writer's batch transaction and appends the events it causes.

use std::sync::Arc;

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::accepted_rows::AcceptedRows;
use super::error::{Result, StoreError};
use super::keys::{self, KeyKind, MessageKeys};
use super::outbox;
use super::rows::{self, ms, opt_ms};
use super::types::*;
use super::writer::WriteCtx;

const DB: fn(rusqlite::Error) -> StoreError = |e| StoreError::sqlite("writing")(e);

/// One entry for the event history.
pub(crate) struct Ev<'a> {
    pub actor: &'a str,
    pub kind: &'a str,
    pub state: MessageState,
    pub part: Option<u16>,
    pub detail: Option<&'a str>,
    pub rule: Option<&'a str>,
}

impl<'a> Ev<'a> {
    pub fn new(actor: &'a str, kind: &'a str, state: MessageState) -> Self {
        Ev {
            actor,
            kind,
            state,
            part: None,
            detail: None,
            rule: None,
        }
    }

    fn part(mut self, part: u16) -> Self {
        self.part = Some(part);
        self
    }

    pub fn detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }

    fn rule(mut self, rule: Option<&'a str>) -> Self {
        self.rule = rule;
        self
    }
}

/// Appends `ev` to message `id`'s history, numbered after its last event.
pub(crate) fn append_event(ctx: &WriteCtx<'_>, id: Uuid, ev: Ev<'_>) -> Result<()> {
    const INSERT: &str = "INSERT INTO events (message_id, seq, at, actor, kind, state, part, detail, rule) \
        VALUES (?1, coalesce((SELECT max(seq) FROM events WHERE message_id = ?1), 0) + 1, \
        ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    insert_event(ctx, INSERT, id, ev)
}

/// Starts the history of message `id`, created in this operation: its first event has nothing before it
/// to look up. Were there one, the insert would fail rather than renumber it.
pub(crate) fn first_event(ctx: &WriteCtx<'_>, id: Uuid, ev: Ev<'_>) -> Result<()> {
    const INSERT: &str = "INSERT INTO events (message_id, seq, at, actor, kind, state, part, detail, rule) \
        VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    insert_event(ctx, INSERT, id, ev)
}

fn insert_event(ctx: &WriteCtx<'_>, sql: &'static str, id: Uuid, ev: Ev<'_>) -> Result<()> {
    ctx.with_statement(sql, |st| {
        st.execute(params![
            &*id.hyphenated().encode_lower(&mut Uuid::encode_buffer()),
            ms(ctx.now()),
            ev.actor,
            ev.kind,
            ev.state,
            ev.part,
            ev.detail,
            ev.rule
        ])
    })
    .map_err(DB)?;
    Ok(())
}

/// Moves a message to `state`, records why, and queues the webhook event that state announces (if any) in
/// the same transaction: every state change goes through here, so none can go unannounced.
fn transition(ctx: &WriteCtx<'_>, id: Uuid, ev: Ev<'_>) -> Result<()> {
    const UPDATE: &str = "UPDATE messages SET state = ?2, updated_at = ?3 WHERE id = ?1";
    let state = ev.state;
    ctx.with_statement(UPDATE, |st| {
        st.execute(params![id.to_string(), state, ms(ctx.now())])
    })
    .map_err(DB)?;
    append_event(ctx, id, ev)?;
    outbox::message_reached(ctx, id, state)
}

fn state_of(ctx: &WriteCtx<'_>, id: Uuid) -> Result<MessageState> {
    ctx.conn
        .prepare_cached("SELECT state FROM messages WHERE id = ?1")
        .and_then(|mut st| st.query_row([id.to_string()], |row| row.get(0)).optional())
        .map_err(DB)?
        .ok_or(StoreError::NotFound(id))
}

/// The message's state, if it is one of `allowed`; else the typed refusal.
fn require(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    allowed: &[MessageState],
    action: &'static str,
) -> Result<MessageState> {
    let state = state_of(ctx, id)?;
    if allowed.contains(&state) {
        Ok(state)
    } else {
        Err(StoreError::InvalidTransition { id, state, action })
    }
}

/// A message with its idempotency fingerprint and its look-up keys, made by the caller, off the writer
/// thread.
///
/// [`accept`] shares it with the rows it holds back (see [`accepted_rows`]) and shares its keys, and
/// leaves it for the caller to drop on its own thread (see [`Job::run`] for why the writer frees nothing
/// its callers allocated).
///
/// [`Job::run`]: super::writer::Job::run
/// [`accepted_rows`]: super::accepted_rows
pub(crate) struct Fingerprinted {
    pub(super) message: NewMessage,
    pub(super) hash: Option<Vec<u8>>,
    keys: MessageKeys,
    /// Each part's PDU as bytes, as the parts table keeps them (see [`rows::pdu_hex`]).
    pub(super) pdus: Vec<Vec<u8>>,
    /// The metadata as the messages table keeps it: JSON text.
    pub(super) metadata: Option<String>,
}

impl Fingerprinted {
    /// Hashes the whole request when it carries an idempotency key: a repeat must match it exactly.
    pub fn new(message: NewMessage) -> Result<Self> {
        let hash = match message.idempotency_key {
            None => None,
            Some(_) => {
                // Sized for the whole body at once: grown from empty, its copies were a tenth of the
                // time an accept spends off the writer (the store bench's profile).
                let strings = message.text.len()
                    + message.parts.iter().map(|p| p.pdu_hex.len()).sum::<usize>();
                let mut body = Vec::with_capacity(512 + strings);
                serde_json::to_writer(&mut body, &message)
                    .map_err(|e| StoreError::Invalid(format!("message not serialisable: {e}")))?;
                Some(Sha256::digest(&body).to_vec())
            }
        };
        let keys = MessageKeys::new(
            &message.to,
            message.reference.as_deref(),
            &message.api_key,
            message.idempotency_key.as_deref(),
        );
        let pdus = message
            .parts
            .iter()
            .enumerate()
            .map(|(index, part)| {
                // Into its final size: `hex::decode` grows a vector a byte at a time.
                let mut pdu = vec![0; part.pdu_hex.len() / 2];
                hex::decode_to_slice(&part.pdu_hex, &mut pdu).map_err(|e| {
                    StoreError::Invalid(format!("part {} is not a hex PDU: {e}", index + 1))
                })?;
                Ok(pdu)
            })
            .collect::<Result<_>>()?;
        let metadata = message.metadata.as_ref().map(serde_json::Value::to_string);
        Ok(Fingerprinted {
            message,
            pdus,
            hash,
            keys,
            metadata,
        })
    }
}

/// Creates the message, or finds the one an earlier request with the same idempotency key created. Its
/// rows are held back, for the writer to write with the batch's others (see [`accepted_rows`]).
///
/// [`accepted_rows`]: super::accepted_rows
pub(crate) fn accept(ctx: &WriteCtx<'_>, request: &Arc<Fingerprinted>) -> Result<Accepted> {
    let message = &request.message;
    let parts = message.parts.len();
    if parts == 0 || parts > usize::from(u8::MAX) {
        return Err(StoreError::Invalid(format!(
            "a message needs 1 to 255 parts, not {parts}"
        )));
    }
    if let Some(original) = replay(ctx, request)? {
        return Ok(original);
    }
    let id = ctx.new_id();
    let state = match message.send_at {
        Some(at) if at > ctx.now() => MessageState::Scheduled,
        _ => MessageState::Queued,
    };
    // Shares the keys' text (a reference count each), which the store keeps until they are merged.
    ctx.created(id, request.keys.clone(), state, None);
    ctx.hold(AcceptedRows {
        id,
        state,
        at: ctx.now(),
        request: request.clone(),
    });
    Ok(Accepted {
        id,
        state,
        to: message.to.clone(),
        parts,
        encoding: message.encoding,
        duplicate: false,
    })
}

/// The message an earlier request with the same key created, if any and its body was the same; a
/// conflict if not.
pub(crate) fn replay(ctx: &WriteCtx<'_>, request: &Fingerprinted) -> Result<Option<Accepted>> {
    match (
        &request.message.idempotency_key,
        &request.hash,
        request.keys.idempotency(),
    ) {
        (Some(key), Some(hash), Some(joined)) => {
            idempotent_original(ctx, &request.message.api_key, key, hash, joined)
        }
        _ => Ok(None),
    }
}

/// `(value, value_hash)` is the key as the look-ups know it, and its hash (see
/// [`MessageKeys::idempotency`]).
fn idempotent_original(
    ctx: &WriteCtx<'_>,
    api_key: &str,
    key: &str,
    hash: &[u8],
    (value, value_hash): (&str, i64),
) -> Result<Option<Accepted>> {
    let candidates = ctx.idempotent(value, value_hash).map_err(DB)?;
    if !candidates.is_empty() {
        // One may be this batch's, its row still held back.
        ctx.write_held().map_err(DB)?;
    }
    let mut st = ctx
        .conn
        .prepare_cached(
            "SELECT body_hash, state, peer, part_count, encoding FROM messages \
             WHERE id = ?1 AND api_key = ?2 AND idempotency_key = ?3",
        )
        .map_err(DB)?;
    let mut found = None;
    for id in candidates {
        found = st
            .query_row(params![id.to_string(), api_key, key], |row| {
                Ok((
                    row.get::<_, Option<Vec<u8>>>(0)?,
                    Accepted {
                        id,
                        state: row.get(1)?,
                        to: row.get(2)?,
                        parts: row.get::<_, u32>(3)? as usize,
                        encoding: row.get(4)?,
                        duplicate: true,
                    },
                ))
            })
            .optional()
            .map_err(DB)?;
        if found.is_some() {
            break;
        }
    }
    match found {
        None => Ok(None),
        Some((Some(stored), accepted)) if stored == hash => Ok(Some(accepted)),
        Some((_, original)) => Err(StoreError::IdempotencyConflict {
            key: key.to_owned(),
            original: original.id,
        }),
    }
}

fn pending_parts(ctx: &WriteCtx<'_>, id: Uuid) -> Result<Vec<PendingPart>> {
    let mut st = ctx
        .conn
        .prepare_cached(
            "SELECT part, tpdu_length, pdu FROM parts WHERE message_id = ?1 AND state = 'pending' ORDER BY part",
        )
        .map_err(DB)?;
    st.query_map([id.to_string()], |row| {
        Ok(PendingPart {
            part: row.get(0)?,
            tpdu_length: row.get::<_, u32>(1)? as usize,
            pdu_hex: rows::pdu_hex(row, 2)?,
        })
    })
    .and_then(Iterator::collect)
    .map_err(DB)
}

/// Queued/scheduled → sending on `modem`; returns the parts still to send, in order.
pub(crate) fn claim(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    modem: &str,
    note: Option<&str>,
) -> Result<Vec<PendingPart>> {
    let state = require(
        ctx,
        id,
        &[MessageState::Queued, MessageState::Scheduled],
        "claim it for sending",
    )?;
    ctx.conn
        .prepare_cached(
            "UPDATE messages SET modem = ?2, attempts = attempts + 1, not_before = NULL, hold_reason = NULL \
             WHERE id = ?1",
        )
        .and_then(|mut st| st.execute(params![id.to_string(), modem]))
        .map_err(DB)?;
    restart_elsewhere(ctx, id, modem, state)?;
    let detail = match note {
        Some(note) => format!("modem {modem}: {note}"),
        None => format!("modem {modem}"),
    };
    transition(
        ctx,
        id,
        Ev::new("dispatcher", "claimed", MessageState::Sending).detail(&detail),
    )?;
    pending_parts(ctx, id)
}

/// A message whose first parts another modem sent starts over, whole, on `modem`: a phone joins parts
/// only from one sender, so the rest alone would never show. The dispatcher hands such a message to
/// another modem only once the first is no longer configured. The parts' first sends stay in the event
/// history; their rows now follow the new ones (a late report of a first send matches nothing).
fn restart_elsewhere(ctx: &WriteCtx<'_>, id: Uuid, modem: &str, state: MessageState) -> Result<()> {
    let id_text = id.to_string();
    let sent: Vec<(u16, String)> = ctx
        .conn
        .prepare_cached(
            "SELECT part, modem FROM parts WHERE message_id = ?1 AND state IN ('sent', 'delivered') \
             AND modem IS NOT ?2 ORDER BY part",
        )
        .and_then(|mut st| {
            st.query_map(params![id_text, modem], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(DB)?;
    let Some((_, first_modem)) = sent.first() else {
        return Ok(());
    };
    ctx.conn
        .prepare_cached(
            "UPDATE parts SET state = 'pending', modem = NULL, tp_mr = NULL, error_code = NULL, \
             submitted_at = NULL, sent_at = NULL, report_status = NULL, reported_at = NULL \
             WHERE message_id = ?1",
        )
        .and_then(|mut st| st.execute([&id_text]))
        .map_err(DB)?;
    let parts: Vec<String> = sent.iter().map(|(part, _)| part.to_string()).collect();
    let detail = format!(
        "part {} went out on modem {first_modem}, which is no longer configured: the whole message goes \
         again from modem {modem}, since a phone joins parts only from one sender",
        parts.join(", ")
    );
    append_event(
        ctx,
        id,
        Ev::new("dispatcher", "restarted", state).detail(&detail),
    )
}

fn part_state(ctx: &WriteCtx<'_>, id: Uuid, part: u16) -> Result<PartState> {
    ctx.conn
        .prepare_cached("SELECT state FROM parts WHERE message_id = ?1 AND part = ?2")
        .and_then(|mut st| {
            st.query_row(params![id.to_string(), part], |row| row.get(0))
                .optional()
        })
        .map_err(DB)?
        .ok_or(StoreError::NoSuchPart { id, part })
}

fn set_part(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    part: u16,
    sql_set: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<()> {
    let sql = format!("UPDATE parts SET {sql_set} WHERE message_id = ?1 AND part = ?2");
    let mut all: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(args.len() + 2);
    let id_text = id.to_string();
    all.push(&id_text);
    all.push(&part);
    all.extend_from_slice(args);
    ctx.conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.execute(all.as_slice()))
        .map_err(DB)?;
    Ok(())
}

fn actor(modem: &str) -> String {
    format!("modem:{modem}")
}

/// Recorded before the PDU is written: after a crash this part is `unknown`, never silently resent. Before
/// the first part goes out the message is looked at once more, because the dispatcher judged it when it
/// handed it over and the modem may have taken it only when its previous send ended: an opt-out, a cancel
/// or an expiry since then, or `send_by` (the end of the recipient's sending window) passing, withdraws it.
/// Once a part is out the rest follow, so a recipient never gets half a message.
pub(crate) fn part_submitting(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    part: u16,
    modem: &str,
    send_by: Option<Timestamp>,
) -> Result<Submission> {
    let (state, first) = (state_of(ctx, id)?, !started(ctx, id)?);
    if state == MessageState::Cancelled && first {
        return Ok(Submission::Withdrawn("it was cancelled".into()));
    }
    if state != MessageState::Sending {
        let action = "submit a part";
        return Err(StoreError::InvalidTransition { id, state, action });
    }
    if part_state(ctx, id, part)? != PartState::Pending {
        return Err(StoreError::InvalidTransition {
            id,
            state,
            action: "submit a part that is not pending",
        });
    }
    if first && let Some(withdrawn) = withdraw_unsendable(ctx, id, modem, send_by)? {
        return Ok(withdrawn);
    }
    set_part(
        ctx,
        id,
        part,
        "state = 'submitting', modem = ?3, submitted_at = ?4",
        &[&modem, &ms(ctx.now())],
    )?;
    // The record of why it could go now: the window it went out in, as the gate worked it out.
    let window = first
        .then_some(send_by)
        .flatten()
        .map(|by| format!("within the recipient's sending window, which closes at {by}"));
    let by = actor(modem);
    let mut event = Ev::new(&by, "submitting", MessageState::Sending).part(part);
    if let Some(window) = &window {
        event = event.detail(window).rule(Some("quiet_hours"));
    }
    append_event(ctx, id, event)?;
    Ok(Submission::Recorded)
}

/// Whether any part of the message has been written to a modem.
fn started(ctx: &WriteCtx<'_>, id: Uuid) -> Result<bool> {
    ctx.conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM parts WHERE message_id = ?1 AND state != 'pending')",
        )
        .and_then(|mut st| st.query_row([id.to_string()], |row| row.get(0)))
        .map_err(DB)
}

/// A message not yet started that may not go out now: one whose recipient opted out fails as the gate
/// would have failed it, an expired one expires, and one whose sending window closed is left to the
/// dispatcher to take back and hold.
fn withdraw_unsendable(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    modem: &str,
    send_by: Option<Timestamp>,
) -> Result<Option<Submission>> {
    let (expires_at, opted_out): (Option<i64>, bool) = ctx
        .conn
        .prepare_cached(
            "SELECT m.expires_at, m.category != 'confirmation' AND EXISTS \
             (SELECT 1 FROM optouts o WHERE o.number = m.peer AND o.active = 1) \
             FROM messages m WHERE m.id = ?1",
        )
        .and_then(|mut st| st.query_row([id.to_string()], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(DB)?;
    let (now, actor) = (ms(ctx.now()), actor(modem));
    let reason = if opted_out {
        fail_blocked(ctx, id, &actor, &OPTED_OUT)?;
        "the recipient opted out"
    } else if expires_at.is_some_and(|at| at <= now) {
        let mut ev = Ev::new(&actor, "expired", MessageState::Expired);
        ev.detail = Some(EXPIRED);
        transition(ctx, id, ev)?;
        "it expired"
    } else if send_by.is_some_and(|by| ms(by) <= now) {
        "the recipient's sending window closed"
    } else {
        return Ok(None);
    };
    Ok(Some(Submission::Withdrawn(reason.into())))
}

fn bump_modem(ctx: &WriteCtx<'_>, modem: &str, column: &'static str) -> Result<()> {
    let sql = format!(
        "INSERT INTO modems (id, first_seen, last_seen, {column}) VALUES (?1, ?2, ?2, 1) \
         ON CONFLICT (id) DO UPDATE SET {column} = {column} + 1, last_seen = ?2"
    );
    ctx.conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.execute(params![modem, ms(ctx.now())]))
        .map_err(DB)?;
    Ok(())
}

pub(crate) fn part_sent(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    part: u16,
    modem: &str,
    tp_mr: u8,
    day: &str,
    at: Timestamp,
) -> Result<MessageState> {
    // A late report of a part sent before its job failed or was lost is still recorded (its TP-MR matches
    // delivery reports); only a message still sending moves on.
    let state = state_of(ctx, id)?;
    part_state(ctx, id, part)?;
    set_part(
        ctx,
        id,
        part,
        "state = 'sent', modem = ?3, tp_mr = ?4, sent_at = ?5",
        &[&modem, &tp_mr, &ms(at)],
    )?;
    bump_modem(ctx, modem, "parts_sent")?;
    count_contact(ctx.conn, id, modem, at)?;
    // The SIM's number now, for the log: it must not change when the SIM or the port does.
    ctx.conn
        .prepare_cached(
            "UPDATE messages SET sim_number = (SELECT own_number FROM modems WHERE id = ?2) WHERE id = ?1",
        )
        .and_then(|mut st| st.execute(params![id.to_string(), modem]))
        .map_err(DB)?;
    // Counted against the SIM (its ICCID, once the modem has reported one), so a SIM moved to another
    // port keeps its count; by modem id until then.
    ctx.conn
        .prepare_cached(
            "INSERT INTO sim_daily_counters (modem, day, sent) VALUES (coalesce((SELECT 'iccid:' || iccid \
             FROM modems WHERE id = ?1 AND iccid IS NOT NULL), ?1), ?2, 1) \
             ON CONFLICT (modem, day) DO UPDATE SET sent = sent + 1",
        )
        .and_then(|mut st| st.execute(params![modem, day]))
        .map_err(DB)?;
    let detail = if at == ctx.now() {
        format!("TP-MR {tp_mr}")
    } else {
        format!(
            "TP-MR {tp_mr}; taken by the network at {at}, recorded late (the store refused it then)"
        )
    };
    append_event(
        ctx,
        id,
        Ev::new(&actor(modem), "part_sent", state)
            .part(part)
            .detail(&detail),
    )?;
    let unsent: u32 = ctx
        .conn
        .prepare_cached(
            "SELECT count(*) FROM parts WHERE message_id = ?1 AND state NOT IN ('sent', 'delivered')",
        )
        .and_then(|mut st| st.query_row([id.to_string()], |row| row.get(0)))
        .map_err(DB)?;
    if unsent > 0 || state != MessageState::Sending {
        return Ok(state);
    }
    let settled = settle(ctx, id)?;
    if settled != MessageState::Failed {
        // An earlier attempt's error is history (the events keep it), not why this message is as it is.
        ctx.conn
            .prepare_cached("UPDATE messages SET error = NULL, error_code = NULL WHERE id = ?1")
            .and_then(|mut st| st.execute([id.to_string()]))
            .map_err(DB)?;
    }
    if settled != MessageState::Sent {
        // Delivery reports overtook the last part's answer: the CMS still hears `sent` first.
        outbox::message_reached(ctx, id, MessageState::Sent)?;
    }
    transition(ctx, id, Ev::new(&actor(modem), "sent", settled))?;
    Ok(settled)
}

/// Records a contact with the message's recipient for the caps (the history loaded at start): once a part
/// may have reached their phone, sent or unknown, whether or not the rest follows. Once per send of the
/// message: a late answer for a part already counted adds nothing, a message sent again from its first
/// part (moved to another modem) counts again.
pub(crate) fn count_contact(
    conn: &rusqlite::Connection,
    id: Uuid,
    modem: &str,
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO recipient_sends (recipient, modem, message_id, at) \
         SELECT peer, ?2, id, ?3 FROM messages WHERE id = ?1 AND NOT EXISTS \
         (SELECT 1 FROM recipient_sends r WHERE r.message_id = ?1 AND r.at >= \
          coalesce((SELECT submitted_at FROM parts WHERE message_id = ?1 AND part = 1), 0))",
    )
    .and_then(|mut st| st.execute(params![id.to_string(), modem, ms(now)]))
    .map_err(DB)?;
    Ok(())
}

/// The state a fully submitted message is in, given its parts' delivery reports so far.
pub(crate) fn settle(ctx: &WriteCtx<'_>, id: Uuid) -> Result<MessageState> {
    let (total, delivered, failed): (u32, u32, u32) = ctx
        .conn
        .prepare_cached(
            "SELECT count(*), count(*) FILTER (WHERE state = 'delivered'), \
             count(*) FILTER (WHERE state = 'failed') FROM parts WHERE message_id = ?1",
        )
        .and_then(|mut st| {
            st.query_row([id.to_string()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
        })
        .map_err(DB)?;
    Ok(if failed > 0 {
        MessageState::Failed
    } else if delivered == total {
        MessageState::Delivered
    } else {
        MessageState::Sent
    })
}

pub(crate) fn part_failed(ctx: &WriteCtx<'_>, failure: &PartFailure) -> Result<MessageState> {
    require(
        ctx,
        failure.id,
        &[MessageState::Sending],
        "record a failed part",
    )?;
    part_state(ctx, failure.id, failure.part)?;
    bump_modem(ctx, &failure.modem, "parts_failed")?;
    let id_text = failure.id.to_string();
    let (state, kind) = match failure.retry_at {
        Some(at) => {
            set_part(
                ctx,
                failure.id,
                failure.part,
                "state = 'pending', error_code = ?3",
                &[&failure.code],
            )?;
            ctx.conn
                .prepare_cached("UPDATE messages SET not_before = ?2, error_code = ?3, error = ?4 WHERE id = ?1")
                .and_then(|mut st| st.execute(params![id_text, ms(at), failure.code, failure.detail]))
                .map_err(DB)?;
            (MessageState::Queued, "retry")
        }
        None => {
            set_part(
                ctx,
                failure.id,
                failure.part,
                "state = 'failed', error_code = ?3",
                &[&failure.code],
            )?;
            // A multipart message can fail after some of its parts went out: the debtor has those.
            let (total, sent): (u32, u32) = ctx
                .conn
                .prepare_cached(
                    "SELECT count(*), count(*) FILTER (WHERE state IN ('sent', 'delivered')) \
                     FROM parts WHERE message_id = ?1",
                )
                .and_then(|mut st| st.query_row([&id_text], |row| Ok((row.get(0)?, row.get(1)?))))
                .map_err(DB)?;
            let error = if sent > 0 {
                format!(
                    "part {} of {total}: {}; {sent} of its parts had been sent",
                    failure.part, failure.detail
                )
            } else {
                failure.detail.clone()
            };
            ctx.conn
                .prepare_cached("UPDATE messages SET error_code = ?2, error = ?3 WHERE id = ?1")
                .and_then(|mut st| st.execute(params![id_text, failure.code, error]))
                .map_err(DB)?;
            (MessageState::Failed, "failed")
        }
    };
    let detail = match failure.retry_at {
        Some(at) => format!("{}; retry not before {at}", failure.detail),
        None => failure.detail.clone(),
    };
    transition(
        ctx,
        failure.id,
        Ev::new(&actor(&failure.modem), kind, state)
            .part(failure.part)
            .detail(&detail),
    )?;
    Ok(state)
}

/// The modem may or may not have sent `part`: the message becomes `unknown` and is never resent silently.
pub(crate) fn part_unknown(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    part: u16,
    modem: &str,
    reason: &str,
) -> Result<()> {
    require(
        ctx,
        id,
        &[MessageState::Sending],
        "record an unknown outcome",
    )?;
    part_state(ctx, id, part)?;
    set_part(ctx, id, part, "state = 'unknown'", &[])?;
    count_contact(ctx.conn, id, modem, ctx.now())?;
    // The message's `error` says why, for the API and the `message.unknown` webhook (written just after).
    set_error(ctx, id, &format!("part {part}: {reason}"))?;
    transition(
        ctx,
        id,
        Ev::new(&actor(modem), "unknown", MessageState::Unknown)
            .part(part)
            .detail(reason),
    )
}

fn set_error(ctx: &WriteCtx<'_>, id: Uuid, error: &str) -> Result<()> {
    ctx.conn
        .prepare_cached("UPDATE messages SET error = ?2 WHERE id = ?1")
        .and_then(|mut st| st.execute(params![id.to_string(), error]))
        .map_err(DB)?;
    Ok(())
}

/// The job came back unsent: back to the queue, not before `retry_at` when given. A part recorded as
/// submitting is pending again when the worker says it wrote no PDU for it; without that word it may have
/// gone out, and the message is `unknown` instead, never resent.
pub(crate) fn requeue(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    modem: &str,
    reason: &str,
    handback: Handback,
    retry_at: Option<Timestamp>,
) -> Result<Requeued> {
    require(ctx, id, &[MessageState::Sending], "requeue")?;
    let submitting: Option<u16> = ctx
        .conn
        .prepare_cached(
            "SELECT min(part) FROM parts WHERE message_id = ?1 AND state = 'submitting'",
        )
        .and_then(|mut st| st.query_row([id.to_string()], |row| row.get(0)))
        .map_err(DB)?;
    let mut detail = reason.to_owned();
    if let Some(part) = submitting {
        match handback {
            Handback::Unsure => {
                let why = format!("{reason}, while part {part} was being submitted");
                part_unknown(ctx, id, part, modem, &why)?;
                return Ok(Requeued::Unknown);
            }
            Handback::NothingWritten => {
                set_part(
                    ctx,
                    id,
                    part,
                    "state = 'pending', modem = NULL, submitted_at = NULL",
                    &[],
                )?;
                detail = format!("{reason}; no PDU was written for part {part}");
            }
        }
    }
    ctx.conn
        .prepare_cached("UPDATE messages SET not_before = ?2 WHERE id = ?1")
        .and_then(|mut st| st.execute(params![id.to_string(), opt_ms(retry_at)]))
        .map_err(DB)?;
    transition(
        ctx,
        id,
        Ev::new(&actor(modem), "requeued", MessageState::Queued).detail(&detail),
    )?;
    let (parts, pinned_modem) = ctx
        .conn
        .prepare_cached(
            "SELECT count(*) FILTER (WHERE state = 'pending'), \
             max(modem) FILTER (WHERE state IN ('sent', 'delivered')) \
             FROM parts WHERE message_id = ?1",
        )
        .and_then(|mut st| st.query_row([id.to_string()], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(DB)?;
    Ok(Requeued::Queued {
        parts,
        pinned_modem,
    })
}

/// Queued/scheduled → `to` (cancelled, expired), with who did it and why. A cancel also takes a message
/// handed to a modem as long as none of its parts has been written: the modem's `Submitting` then finds
/// it cancelled and writes nothing.
pub(crate) fn close_pending(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    to: MessageState,
    actor: &str,
    detail: Option<&str>,
) -> Result<()> {
    let (action, allowed): (_, &[MessageState]) = match to {
        MessageState::Cancelled => (
            "cancel",
            &[
                MessageState::Queued,
                MessageState::Scheduled,
                MessageState::Sending,
            ],
        ),
        MessageState::Expired => ("expire", &[MessageState::Queued, MessageState::Scheduled]),
        _ => ("close", &[MessageState::Queued, MessageState::Scheduled]),
    };
    let state = require(ctx, id, allowed, action)?;
    if state == MessageState::Sending && started(ctx, id)? {
        return Err(StoreError::InvalidTransition { id, state, action });
    }
    let mut ev = Ev::new(actor, to.as_str(), to);
    ev.detail = detail;
    transition(ctx, id, ev)
}

/// A rule or the dispatcher holds the message until `until`.
pub(crate) fn hold(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    until: Timestamp,
    reason: &str,
    rule: Option<&str>,
) -> Result<()> {
    require(
        ctx,
        id,
        &[MessageState::Queued, MessageState::Scheduled],
        "hold",
    )?;
    ctx.conn
        .prepare_cached("UPDATE messages SET not_before = ?2, hold_reason = ?3 WHERE id = ?1")
        .and_then(|mut st| st.execute(params![id.to_string(), ms(until), reason]))
        .map_err(DB)?;
    let detail = format!("{reason}; until {until}");
    transition(
        ctx,
        id,
        Ev::new("dispatcher", "held", MessageState::Scheduled)
            .detail(&detail)
            .rule(rule),
    )
}

/// A rule refuses the message for good (e.g. the recipient opted out).
pub(crate) fn block(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    code: &str,
    reason: &str,
    rule: Option<&str>,
) -> Result<()> {
    require(
        ctx,
        id,
        &[MessageState::Queued, MessageState::Scheduled],
        "block",
    )?;
    fail_blocked(ctx, id, "dispatcher", &Block { code, reason, rule })
}

/// Why a rule refuses a message for good.
pub(crate) struct Block<'a> {
    pub code: &'a str,
    pub reason: &'a str,
    pub rule: Option<&'a str>,
}

/// The refusal of a recipient who opted out, as the collections gate words it.
pub(crate) const OPTED_OUT: Block<'static> = Block {
    code: "opted_out",
    reason: "the recipient opted out",
    rule: Some("optout"),
};

/// What an expired message's event says.
pub(crate) const EXPIRED: &str = "expires_at passed before it could be sent";

/// Fails every message still waiting for `number` (queued or scheduled, the gateway's own confirmations
/// excluded) as its hand-off would once the number opted out, so the CMS hears now, not at each one's send
/// time. Returns how many.
pub(crate) fn block_pending_to(ctx: &WriteCtx<'_>, number: &str, actor: &str) -> Result<usize> {
    let to_number = keys::ids(ctx.conn, KeyKind::Peer, number).map_err(DB)?;
    let ids: Vec<Uuid> = ctx
        .conn
        .prepare_cached(
            "SELECT id FROM messages WHERE id IN rarray(?1) AND direction = 'outbound' \
             AND state IN ('queued', 'scheduled') AND category != 'confirmation'",
        )
        .and_then(|mut st| {
            st.query_map([to_number], |row| super::rows::uuid(row, 0))?
                .collect()
        })
        .map_err(DB)?;
    for &id in &ids {
        fail_blocked(ctx, id, actor, &OPTED_OUT)?;
    }
    Ok(ids.len())
}

fn fail_blocked(ctx: &WriteCtx<'_>, id: Uuid, actor: &str, block: &Block<'_>) -> Result<()> {
    let error = format!("{}: {}", block.code, block.reason);
    set_error(ctx, id, &error)?;
    transition(
        ctx,
        id,
        Ev::new(actor, "blocked", MessageState::Failed)
            .detail(&error)
            .rule(block.rule),
    )
}

/// An event with no state change (e.g. why the sticky modem was passed over).
pub(crate) fn note(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    actor: &str,
    kind: &str,
    detail: &str,
) -> Result<()> {
    let state = state_of(ctx, id)?;
    append_event(ctx, id, Ev::new(actor, kind, state).detail(detail))
}

/// An event by the collections rules, with no state change.
pub(crate) fn rule_event(
    ctx: &WriteCtx<'_>,
    id: Uuid,
    kind: &str,
    detail: &str,
    rule: &str,
) -> Result<()> {
    let state = state_of(ctx, id)?;
    append_event(
        ctx,
        id,
        Ev::new("rules", kind, state)
            .detail(detail)
            .rule(Some(rule)),
    )
}
