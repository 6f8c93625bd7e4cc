//! Conversions between SQL values and our types, shared by the writer and the readers.

use jiff::Timestamp;
use rusqlite::Row;
use rusqlite::types::{Type, ValueRef};
use uuid::Uuid;

use super::types::{Event, Message, MessageState, Part};

pub fn ms(ts: Timestamp) -> i64 {
    ts.as_millisecond()
}

pub fn opt_ms(ts: Option<Timestamp>) -> Option<i64> {
    ts.map(ms)
}

fn conversion(
    index: usize,
    ty: Type,
    error: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, ty, Box::new(error))
}

pub fn ts(row: &Row<'_>, index: usize) -> rusqlite::Result<Timestamp> {
    let value: i64 = row.get(index)?;
    Timestamp::from_millisecond(value).map_err(|e| conversion(index, Type::Integer, e))
}

pub fn opt_ts(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Timestamp>> {
    match row.get::<_, Option<i64>>(index)? {
        None => Ok(None),
        Some(value) => Timestamp::from_millisecond(value)
            .map(Some)
            .map_err(|e| conversion(index, Type::Integer, e)),
    }
}

pub fn uuid(row: &Row<'_>, index: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(index)?;
    Uuid::parse_str(&text).map_err(|e| conversion(index, Type::Text, e))
}

fn json(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<serde_json::Value>> {
    match row.get::<_, Option<String>>(index)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| conversion(index, Type::Text, e)),
    }
}

/// Columns of `messages` in the order [`message`] reads them (the last from `modems`: the queries that use
/// them read `FROM messages` without an alias).
pub const MESSAGE_COLUMNS: &str = "id, direction, state, peer, text, encoding, part_count, priority, send_at, \
     expires_at, reference, metadata, tz, modem, attempts, not_before, hold_reason, error_code, error, \
     created_at, updated_at, category, \
     coalesce(sim_number, (SELECT own_number FROM modems WHERE modems.id = messages.modem)), \
     CASE direction WHEN 'inbound' \
         THEN (SELECT max(sent_at) FROM inbound_parts WHERE inbound_parts.message_id = messages.id) \
         ELSE (SELECT max(sent_at) FROM parts WHERE parts.message_id = messages.id) END, \
     (SELECT max(reported_at) FROM parts WHERE parts.message_id = messages.id), api_key, region";

pub fn message(row: &Row<'_>) -> rusqlite::Result<Message> {
    let state: MessageState = row.get(2)?;
    Ok(Message {
        id: uuid(row, 0)?,
        direction: row.get(1)?,
        state,
        peer: row.get(3)?,
        text: row.get(4)?,
        encoding: row.get(5)?,
        part_count: row.get(6)?,
        priority: row.get(7)?,
        send_at: opt_ts(row, 8)?,
        expires_at: opt_ts(row, 9)?,
        reference: row.get(10)?,
        metadata: json(row, 11)?,
        tz: row.get(12)?,
        modem: row.get(13)?,
        attempts: row.get(14)?,
        not_before: opt_ts(row, 15)?,
        hold_reason: row.get(16)?,
        error_code: row.get(17)?,
        error: row.get(18)?,
        created_at: ts(row, 19)?,
        updated_at: ts(row, 20)?,
        category: row.get(21)?,
        modem_number: row.get(22)?,
        // The whole message went out when its last part did (a part sent of a message that then failed
        // is in its parts, not here); a reply, when the sender's phone sent its last part, by the SMSC's
        // timestamp.
        sent_at: match state {
            MessageState::Sent | MessageState::Delivered | MessageState::Received => {
                opt_ts(row, 23)?
            }
            _ => None,
        },
        delivered_at: match state {
            MessageState::Delivered => opt_ts(row, 24)?,
            _ => None,
        },
        api_key: row.get(25)?,
        region: row.get(26)?,
    })
}

pub const PART_COLUMNS: &str = "part, state, modem, tp_mr, error_code, submitted_at, sent_at, report_status, \
     reported_at, tpdu_length, pdu";

pub fn part(row: &Row<'_>) -> rusqlite::Result<Part> {
    Ok(Part {
        part: row.get(0)?,
        state: row.get(1)?,
        modem: row.get(2)?,
        tp_mr: row.get(3)?,
        error_code: row.get(4)?,
        submitted_at: opt_ts(row, 5)?,
        sent_at: opt_ts(row, 6)?,
        report_status: row.get(7)?,
        reported_at: opt_ts(row, 8)?,
        tpdu_length: row.get::<_, u32>(9)? as usize,
        pdu_hex: pdu_hex(row, 10)?,
    })
}

/// A part's PDU in hex. Parts keep it as bytes: half the size of the hex text, in a table whose rows
/// are copied whole into its interior pages (a `WITHOUT ROWID` table), so an accept writes and splits
/// fewer pages. Parts accepted before keep the hex text they were written with (no migration rewrites
/// the history); both read the same, as the PDU encoder writes upper-case hex.
pub fn pdu_hex(row: &Row<'_>, index: usize) -> rusqlite::Result<String> {
    match row.get_ref(index)? {
        ValueRef::Blob(bytes) => Ok(hex::encode_upper(bytes)),
        other => other.as_str().map(str::to_owned).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(index, other.data_type(), Box::new(e))
        }),
    }
}

pub const EVENT_COLUMNS: &str = "at, actor, kind, state, part, detail, rule";

pub fn event(row: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        at: ts(row, 0)?,
        actor: row.get(1)?,
        kind: row.get(2)?,
        state: row.get(3)?,
        part: row.get(4)?,
        detail: row.get(5)?,
        rule: row.get(6)?,
    })
}
