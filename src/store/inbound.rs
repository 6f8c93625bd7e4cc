//! What comes back from the network: inbound parts (reassembled) and delivery reports (matched to parts).

use std::time::Duration;

use jiff::Timestamp;
use rusqlite::params;
use uuid::Uuid;

use super::error::{Result, StoreError};
use super::keys::MessageKeys;
use super::outbox;
use super::rows::{self, ms, opt_ms};
use super::types::*;
use super::write::{Ev, append_event, first_event, settle};
use super::writer::WriteCtx;

const DB: fn(rusqlite::Error) -> StoreError =
    |e| StoreError::sqlite("recording inbound traffic")(e);

/// The concatenation header if it describes a real multipart message (a malformed one is treated as a
/// single part rather than waiting forever for parts that cannot exist).
fn multipart(concat: Option<ConcatInfo>) -> Option<ConcatInfo> {
    concat.filter(|c| c.parts > 1 && c.part >= 1 && c.part <= c.parts)
}

pub(crate) fn record_inbound(ctx: &WriteCtx<'_>, inbound: &InboundPart) -> Result<InboundOutcome> {
    let (sender, text, encoding, sent_at, concat) = match &inbound.content {
        InboundContent::Decoded {
            sender,
            text,
            encoding,
            sent_at,
            concat,
        } => (
            Some(sender.as_str()),
            Some(text.as_str()),
            Some(*encoding),
            *sent_at,
            multipart(*concat),
        ),
        InboundContent::Undecodable { .. } => (None, None, None, None, None),
    };
    let inserted = ctx
        .conn
        .prepare_cached(
            "INSERT INTO inbound_parts (modem, pdu, sender, concat_ref, part, parts, text, encoding, sent_at, \
             received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (modem, pdu) DO NOTHING",
        )
        .and_then(|mut st| {
            st.execute(params![
                inbound.modem,
                inbound.pdu_hex,
                sender,
                concat.map(|c| c.reference),
                concat.map(|c| c.part),
                concat.map(|c| c.parts),
                text,
                encoding,
                opt_ms(sent_at),
                ms(ctx.now())
            ])
        })
        .map_err(DB)?;
    if inserted == 0 {
        return Ok(InboundOutcome::Duplicate);
    }
    let row_id = ctx.conn.last_insert_rowid();
    let (sender, text, encoding, error) = match &inbound.content {
        InboundContent::Undecodable { error } => (
            "",
            String::new(),
            TextEncoding::Undecoded,
            Some(error.as_str()),
        ),
        InboundContent::Decoded {
            sender,
            text,
            encoding,
            ..
        } => match concat {
            None => (sender.as_str(), text.clone(), *encoding, None),
            Some(concat) => match assemble(ctx, &inbound.modem, sender, concat)? {
                Assembly::Missing(have) => {
                    return Ok(InboundOutcome::Partial {
                        have,
                        parts: concat.parts,
                    });
                }
                Assembly::Complete(text, rows) => {
                    let message = create_received(
                        ctx,
                        &inbound.modem,
                        sender,
                        &text,
                        *encoding,
                        None,
                        rows.len(),
                    )?;
                    link_parts(ctx, &rows, message.id)?;
                    outbox::message_reached(ctx, message.id, MessageState::Received)?;
                    return Ok(InboundOutcome::Complete(Box::new(message)));
                }
            },
        },
    };
    let message = create_received(ctx, &inbound.modem, sender, &text, encoding, error, 1)?;
    link_parts(ctx, &[row_id], message.id)?;
    outbox::message_reached(ctx, message.id, MessageState::Received)?;
    Ok(InboundOutcome::Complete(Box::new(message)))
}

enum Assembly {
    /// How many distinct parts are in.
    Missing(u8),
    /// The text in part order and the rows used.
    Complete(String, Vec<i64>),
}

fn assemble(ctx: &WriteCtx<'_>, modem: &str, sender: &str, concat: ConcatInfo) -> Result<Assembly> {
    let mut st = ctx
        .conn
        .prepare_cached(
            "SELECT id, part, text FROM inbound_parts WHERE modem = ?1 AND sender = ?2 AND concat_ref = ?3 \
             AND parts = ?4 AND message_id IS NULL ORDER BY part, id",
        )
        .map_err(DB)?;
    let found: Vec<(i64, u8, String)> = st
        .query_map(
            params![modem, sender, concat.reference, concat.parts],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .and_then(Iterator::collect)
        .map_err(DB)?;
    // The same part number twice with a different PDU (a resent part): the first one wins.
    let mut text = String::new();
    let mut rows = Vec::new();
    let mut last = 0;
    for (row, part, piece) in found {
        if part != last {
            text.push_str(&piece);
            rows.push(row);
            last = part;
        }
    }
    let have = rows.len() as u8;
    Ok(if have == concat.parts {
        Assembly::Complete(text, rows)
    } else {
        Assembly::Missing(have)
    })
}

/// Concatenated messages still missing parts whose first part came before `cutoff`: each is released as
/// received with the parts that did arrive (a `[…]` where a part is missing, the gap named in `error`), so a
/// part the network lost never hides a debtor's reply. A missing part that turns up later starts a group
/// of its own and is released the same way.
pub(crate) fn release_incomplete(ctx: &WriteCtx<'_>, cutoff: Timestamp) -> Result<Vec<Message>> {
    let groups: Vec<(String, String, u8, u8)> = ctx
        .conn
        .prepare_cached(
            "SELECT modem, sender, concat_ref, parts FROM inbound_parts \
             WHERE message_id IS NULL AND parts IS NOT NULL AND sender IS NOT NULL \
             GROUP BY modem, sender, concat_ref, parts HAVING min(received_at) <= ?1",
        )
        .and_then(|mut st| {
            st.query_map([ms(cutoff)], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .and_then(Iterator::collect)
        })
        .map_err(DB)?;
    let mut released = Vec::with_capacity(groups.len());
    for (modem, sender, reference, parts) in groups {
        let found: Vec<(i64, u8, String, TextEncoding)> = ctx
            .conn
            .prepare_cached(
                "SELECT id, part, text, encoding FROM inbound_parts WHERE modem = ?1 AND sender = ?2 \
                 AND concat_ref = ?3 AND parts = ?4 AND message_id IS NULL ORDER BY part, id",
            )
            .and_then(|mut st| {
                st.query_map(params![modem, sender, reference, parts], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .and_then(Iterator::collect)
            })
            .map_err(DB)?;
        let Some(encoding) = found.first().map(|(_, _, _, encoding)| *encoding) else {
            continue;
        };
        let mut text = String::new();
        let mut missing = Vec::new();
        let mut rows = Vec::new();
        for part in 1..=parts {
            // The same part number twice (a resent part): the first one wins, as in `assemble`.
            match found.iter().find(|(_, number, _, _)| *number == part) {
                Some((row, _, piece, _)) => {
                    text.push_str(piece);
                    rows.push(*row);
                }
                None => {
                    text.push_str("[…]");
                    missing.push(part.to_string());
                }
            }
        }
        let error = format!(
            "incomplete: {} of {parts} parts arrived; {} {} never came",
            rows.len(),
            if missing.len() == 1 { "part" } else { "parts" },
            missing.join(", ")
        );
        let message = create_received(
            ctx,
            &modem,
            &sender,
            &text,
            encoding,
            Some(&error),
            rows.len(),
        )?;
        link_parts(ctx, &rows, message.id)?;
        outbox::message_reached(ctx, message.id, MessageState::Received)?;
        released.push(message);
    }
    Ok(released)
}

fn link_parts(ctx: &WriteCtx<'_>, rows: &[i64], message: Uuid) -> Result<()> {
    let mut st = ctx
        .conn
        .prepare_cached("UPDATE inbound_parts SET message_id = ?2 WHERE id = ?1")
        .map_err(DB)?;
    for row in rows {
        st.execute(params![row, message.to_string()]).map_err(DB)?;
    }
    Ok(())
}

fn create_received(
    ctx: &WriteCtx<'_>,
    modem: &str,
    sender: &str,
    text: &str,
    encoding: TextEncoding,
    error: Option<&str>,
    parts: usize,
) -> Result<Message> {
    let id = ctx.new_id();
    ctx.conn
        .prepare_cached(
            "INSERT INTO messages (id, direction, state, peer, text, encoding, part_count, modem, error, \
             created_at, updated_at, sim_number) VALUES (?1, 'inbound', 'received', ?2, ?3, ?4, ?5, ?6, ?7, \
             ?8, ?8, (SELECT own_number FROM modems WHERE id = ?6))",
        )
        .and_then(|mut st| {
            st.execute(params![
                id.to_string(),
                sender,
                text,
                encoding,
                parts as i64,
                modem,
                error,
                ms(ctx.now())
            ])
        })
        .map_err(DB)?;
    ctx.created(
        id,
        MessageKeys::number(sender),
        MessageState::Received,
        Some(modem),
    );
    ctx.conn
        .prepare_cached(
            "INSERT INTO modems (id, first_seen, last_seen, received) VALUES (?1, ?2, ?2, 1) \
             ON CONFLICT (id) DO UPDATE SET received = received + 1, last_seen = ?2",
        )
        .and_then(|mut st| st.execute(params![modem, ms(ctx.now())]))
        .map_err(DB)?;
    let actor = format!("modem:{modem}");
    let mut ev = Ev::new(&actor, "received", MessageState::Received);
    ev.detail = error;
    first_event(ctx, id, ev)?;
    // Until the reply rules have run on it (see `Store::rules_applied`).
    ctx.conn
        .prepare_cached("INSERT INTO inbound_rules_pending (message_id) VALUES (?1)")
        .and_then(|mut st| st.execute([id.to_string()]))
        .map_err(DB)?;
    ctx.conn
        .query_row(
            &format!(
                "SELECT {} FROM messages WHERE id = ?1",
                rows::MESSAGE_COLUMNS
            ),
            [id.to_string()],
            rows::message,
        )
        .map_err(DB)
}

/// Whether a report's recipient is the number a part was sent to. Reports may carry the national form of
/// an international number, so the shorter digit string must end the longer one (and be a real number).
fn same_number(report: &str, sent_to: &str) -> bool {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let (a, b) = (digits(report), digits(sent_to));
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.len() >= 6 && long.ends_with(&short)
}

/// TP-ST classes (23.040 9.2.3.15).
enum ReportClass {
    Delivered,
    /// The SC is still trying.
    Pending,
    Failed,
}

fn classify(status: u8) -> ReportClass {
    match status & 0x7F {
        0x00..=0x1F => ReportClass::Delivered,
        0x20..=0x3F => ReportClass::Pending,
        _ => ReportClass::Failed,
    }
}

/// Matches a report to the latest part sent from the modem with that TP-MR to that recipient within
/// `window`, and moves the part (and, when it decides it, the message) on. A report no sent part claims
/// may be for a part left `unknown` (see [`unknown_part_for`]).
pub(crate) fn record_report(
    ctx: &WriteCtx<'_>,
    report: &ReportIn,
    window: Duration,
    at: Option<Timestamp>,
) -> Result<ReportOutcome> {
    let at = at.unwrap_or(ctx.now());
    let since =
        ctx.now().as_millisecond() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
    let sent = parts_to_recipient(
        ctx,
        report,
        "WHERE p.modem = ?1 AND p.tp_mr = ?2 AND p.sent_at >= ?3 AND p.state = 'sent' \
         ORDER BY p.sent_at DESC",
        params![report.modem, report.tp_mr, since],
    )?
    .into_iter()
    .next();
    match sent {
        Some((id, part, state)) => apply_report(ctx, report, at, (id, part, state), None),
        None => match unknown_part_for(ctx, report, since)? {
            Some(found) => apply_report(
                ctx,
                report,
                at,
                found,
                Some("matched by its recipient: the part's TP-MR was never learnt"),
            ),
            None => Ok(ReportOutcome::Unmatched),
        },
    }
}

/// The part a report is for when no sent part claims it: the one part from that modem to that recipient
/// left `unknown` within the window, with no TP-MR (its PDU was written but the `+CMGS` answer was lost:
/// the port vanished, the daemon crashed). Its report is then the proof of what happened, which turns an
/// `unknown` into `delivered` or `failed`. Two such parts to one recipient cannot be told apart: neither
/// is matched.
fn unknown_part_for(
    ctx: &WriteCtx<'_>,
    report: &ReportIn,
    since: i64,
) -> Result<Option<(Uuid, u16, MessageState)>> {
    let mut theirs = parts_to_recipient(
        ctx,
        report,
        "WHERE p.modem = ?1 AND p.state = 'unknown' AND p.tp_mr IS NULL AND p.submitted_at >= ?2",
        params![report.modem, since],
    )?
    .into_iter();
    Ok(match (theirs.next(), theirs.next()) {
        (Some(part), None) => Some(part),
        _ => None,
    })
}

/// The parts `condition` (a `WHERE` on parts `p`, with any `ORDER BY`) selects whose message went to the
/// report's recipient, in that order: (message id, part, message state).
fn parts_to_recipient(
    ctx: &WriteCtx<'_>,
    report: &ReportIn,
    condition: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(Uuid, u16, MessageState)>> {
    let candidates: Vec<(Uuid, u16, String, MessageState)> = ctx
        .conn
        .prepare_cached(&format!(
            "SELECT p.message_id, p.part, m.peer, m.state FROM parts p \
             JOIN messages m ON m.id = p.message_id {condition}"
        ))
        .and_then(|mut st| {
            st.query_map(params, |row| {
                Ok((rows::uuid(row, 0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect()
        })
        .map_err(DB)?;
    Ok(candidates
        .into_iter()
        .filter(|(_, _, peer, _)| same_number(&report.recipient, peer))
        .map(|(id, part, _, state)| (id, part, state))
        .collect())
}

/// Records `report`, which came at `at`, on part `part` of message `id` (now in `state`); `how` says how
/// it was matched when that was not by its TP-MR.
fn apply_report(
    ctx: &WriteCtx<'_>,
    report: &ReportIn,
    at: Timestamp,
    (id, part, state): (Uuid, u16, MessageState),
    how: Option<&str>,
) -> Result<ReportOutcome> {
    let (part_state, kind) = match classify(report.status) {
        ReportClass::Delivered => (PartState::Delivered, "part_delivered"),
        ReportClass::Pending => (PartState::Sent, "report_pending"),
        ReportClass::Failed => (PartState::Failed, "part_undeliverable"),
    };
    ctx.conn
        .prepare_cached(
            "UPDATE parts SET state = ?3, report_status = ?4, reported_at = ?5, \
             tp_mr = coalesce(tp_mr, ?6) WHERE message_id = ?1 AND part = ?2",
        )
        .and_then(|mut st| {
            st.execute(params![
                id.to_string(),
                part,
                part_state,
                report.status,
                ms(at),
                report.tp_mr
            ])
        })
        .map_err(DB)?;
    if part_state == PartState::Failed {
        ctx.conn
            .prepare_cached("UPDATE messages SET error_code = ?2, error = ?3 WHERE id = ?1")
            .and_then(|mut st| {
                st.execute(params![
                    id.to_string(),
                    report.status,
                    format!("delivery failed: TP-ST {:#04x}", report.status)
                ])
            })
            .map_err(DB)?;
    }
    // Reports can overtake the last part's +CMGS answer: a message still sending is settled when it is
    // sent. An unknown one is settled once no part of it is left unaccounted for.
    let new_state = match state {
        MessageState::Sent | MessageState::Delivered => settle(ctx, id)?,
        MessageState::Unknown if all_parts_accounted(ctx, id)? => settle(ctx, id)?,
        _ => state,
    };
    let actor = format!("modem:{}", report.modem);
    let mut detail = match report.discharged_at {
        Some(at) => format!("TP-ST {:#04x}, discharged {at}", report.status),
        None => format!("TP-ST {:#04x}", report.status),
    };
    if let Some(how) = how {
        detail = format!("{detail}; {how}");
    }
    let mut ev = Ev::new(&actor, kind, new_state);
    ev.part = Some(part);
    ev.detail = Some(&detail);
    if new_state != state {
        // An unknown message found sent keeps no error of that: its `error` said why it was unknown.
        let clear_error = state == MessageState::Unknown && new_state != MessageState::Failed;
        ctx.conn
            .prepare_cached(
                "UPDATE messages SET state = ?2, updated_at = ?3, \
                 error = CASE WHEN ?4 THEN NULL ELSE error END WHERE id = ?1",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id.to_string(),
                    new_state,
                    ms(ctx.now()),
                    clear_error
                ])
            })
            .map_err(DB)?;
    }
    append_event(ctx, id, ev)?;
    if new_state != state {
        outbox::message_reached(ctx, id, new_state)?;
    }
    Ok(ReportOutcome::Matched {
        id,
        part,
        state: new_state,
    })
}

/// Whether every part of message `id` is sent, delivered or failed: none pending, submitting or unknown.
fn all_parts_accounted(ctx: &WriteCtx<'_>, id: Uuid) -> Result<bool> {
    ctx.conn
        .prepare_cached(
            "SELECT NOT EXISTS (SELECT 1 FROM parts WHERE message_id = ?1 \
             AND state NOT IN ('sent', 'delivered', 'failed'))",
        )
        .and_then(|mut st| st.query_row([id.to_string()], |row| row.get(0)))
        .map_err(DB)
}
