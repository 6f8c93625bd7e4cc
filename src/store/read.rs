//! Readers: queries on their own connections, so reads never wait for the writer's batches.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;
use rusqlite::types::ToSql;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use uuid::Uuid;

use super::error::{Result, StoreError};
use super::keys::{self, KeyKind};
use super::rows::{self, ms};
use super::types::*;
use crate::modem::job::ModemIdentity;

const DB: fn(rusqlite::Error) -> StoreError = |e| StoreError::sqlite("reading")(e);

/// Idle read connections, opened on demand and kept for reuse.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// How many idle connections to keep; more are opened under load and closed after use.
const IDLE_READERS: usize = 4;

impl Readers {
    pub fn new(path: PathBuf) -> Self {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    fn open(&self) -> Result<Connection> {
        let fail = |source| StoreError::Open {
            path: self.path.clone(),
            source: std::sync::Arc::new(source),
        };
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        conn.pragma_update(None, "query_only", true).map_err(fail)?;
        rusqlite::vtab::array::load_module(&conn).map_err(fail)?;
        Ok(conn)
    }
}

pub(crate) fn message(conn: &Connection, id: Uuid) -> Result<Option<MessageDetail>> {
    let id_text = id.to_string();
    let Some(message) = conn
        .prepare_cached(&format!(
            "SELECT {} FROM messages WHERE id = ?1",
            rows::MESSAGE_COLUMNS
        ))
        .and_then(|mut st| st.query_row([&id_text], rows::message).optional())
        .map_err(DB)?
    else {
        return Ok(None);
    };
    let parts = conn
        .prepare_cached(&format!(
            "SELECT {} FROM parts WHERE message_id = ?1 ORDER BY part",
            rows::PART_COLUMNS
        ))
        .and_then(|mut st| st.query_map([&id_text], rows::part)?.collect())
        .map_err(DB)?;
    let events = conn
        .prepare_cached(&format!(
            "SELECT {} FROM events WHERE message_id = ?1 ORDER BY seq",
            rows::EVENT_COLUMNS
        ))
        .and_then(|mut st| st.query_map([&id_text], rows::event)?.collect())
        .map_err(DB)?;
    Ok(Some(MessageDetail {
        message,
        parts,
        events,
    }))
}

/// Messages in time order (ids are time-ordered), filtered, one page after the cursor.
pub(crate) fn list(conn: &Connection, filter: &ListFilter) -> Result<Page> {
    let mut clauses = Vec::new();
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    // The filters by key read their look-up first, then the messages it names by id.
    for (kind, value) in [
        (KeyKind::Peer, &filter.peer),
        (KeyKind::Reference, &filter.reference),
    ] {
        if let Some(value) = value {
            args.push(Box::new(keys::ids(conn, kind, value).map_err(DB)?));
            clauses.push(format!("id IN rarray(?{})", args.len()));
        }
    }
    let mut push = |clause: &str, value: Box<dyn ToSql>| {
        args.push(value);
        clauses.push(format!("{clause} ?{}", args.len()));
    };
    if let Some(direction) = filter.direction {
        push("direction =", Box::new(direction));
    }
    if let Some(state) = filter.state {
        push("state =", Box::new(state));
    }
    // Ids are UUIDv7 stamped with the creation time: a time range is an id range, on the primary key.
    if let Some(since) = filter.since {
        push("id >=", Box::new(first_id_at(since)));
    }
    if let Some(until) = filter.until {
        push("id <", Box::new(first_id_at(until)));
    }
    if let Some(after) = &filter.after {
        let cursor =
            Uuid::parse_str(after).map_err(|_| StoreError::InvalidCursor(after.clone()))?;
        push("id >", Box::new(cursor.to_string()));
    }
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000) as usize;
    let condition = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM messages {condition} ORDER BY id LIMIT {}",
        rows::MESSAGE_COLUMNS,
        limit + 1
    );
    let mut messages: Vec<Message> = conn
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_map(rusqlite::params_from_iter(args.iter()), rows::message)?
                .collect()
        })
        .map_err(DB)?;
    let next = if messages.len() > limit {
        messages.truncate(limit);
        messages.last().map(|m| m.id.to_string())
    } else {
        None
    };
    Ok(Page { messages, next })
}

/// The smallest UUIDv7 (as stored) created at `at`.
fn first_id_at(at: Timestamp) -> String {
    let ms = u64::try_from(at.as_millisecond()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10])
        .into_uuid()
        .to_string()
}

/// What the dispatcher needs of a pending message, and its recipient's last modem (sticky senders),
/// `WHERE` the caller's conditions. `?1` is always `now`.
const QUEUE_SELECT: &str = "SELECT id, peer, priority, max(coalesce(send_at, 0), coalesce(not_before, 0)), \
     expires_at, tz, \
     (SELECT max(p.modem) FROM parts p WHERE p.message_id = m.id \
      AND p.state IN ('submitting', 'sent', 'delivered')), \
     attempts, (SELECT count(*) FROM parts p WHERE p.message_id = m.id AND p.state = 'pending'), \
     category, \
     (SELECT r.modem FROM recipient_sends r WHERE r.recipient = m.peer ORDER BY r.at DESC, r.id DESC LIMIT 1), \
     part_count, region \
     FROM messages m WHERE state IN ('queued', 'scheduled') AND direction = 'outbound'";

/// When a pending message may go: the later of `send_at` and `not_before`, 0 for now. Written exactly as
/// the `messages_queue_time` index (migration 6) so the planner uses it.
const DUE_AT: &str = "max(coalesce(send_at, 0), coalesce(not_before, 0))";

/// The condition of the `messages_queue_time` index (migration 24), written exactly as there so the
/// planner may use it: a message with neither time is due at once (0), which no query by due time wants.
const TIMED: &str = "(send_at IS NOT NULL OR not_before IS NOT NULL)";

/// The dispatcher's order: priority first, then age.
const KEY_ORDER: &str = "ORDER BY priority DESC, id";

fn paged(row: &rusqlite::Row<'_>) -> rusqlite::Result<PagedEntry> {
    let not_before: i64 = row.get(3)?;
    Ok(PagedEntry {
        entry: QueueEntry {
            id: rows::uuid(row, 0)?,
            to: row.get(1)?,
            priority: row.get(2)?,
            not_before: if not_before > 0 {
                rows::opt_ts(row, 3)?
            } else {
                None
            },
            expires_at: rows::opt_ts(row, 4)?,
            tz: row.get(5)?,
            pinned_modem: row.get(6)?,
            attempts: row.get(7)?,
            parts: row.get(8)?,
            part_count: row.get(11)?,
            category: row.get(9)?,
            region: row.get(12)?,
        },
        last_modem: row.get(10)?,
    })
}

fn queue_query(
    conn: &Connection,
    condition: &str,
    order: &str,
    args: &[&dyn ToSql],
    limit: Option<usize>,
) -> Result<Vec<PagedEntry>> {
    let limit = limit.map_or_else(|| "-1".to_owned(), |n| n.to_string());
    let sql = format!("{QUEUE_SELECT} {condition} {order} LIMIT {limit}");
    conn.prepare_cached(&sql)
        .and_then(|mut st| st.query_map(args, paged)?.collect())
        .map_err(DB)
}

/// Every outbound message still to send, in id order (tests and tools; the dispatcher pages).
pub(crate) fn queue(conn: &Connection) -> Result<Vec<QueueEntry>> {
    let all = queue_query(conn, "", "ORDER BY id", &[], None)?;
    Ok(all.into_iter().map(|p| p.entry).collect())
}

/// Up to `limit` messages due at `now`, in the dispatcher's order, after `after` (from the head when
/// `None`). Two range scans of the `messages_queue_order` index: the rest of `after`'s priority, then the
/// lower ones.
pub(crate) fn queue_due(
    conn: &Connection,
    now: Timestamp,
    after: Option<QueueKey>,
    limit: usize,
) -> Result<Vec<PagedEntry>> {
    let now = ms(now);
    let due = format!("AND {DUE_AT} <= ?1");
    let Some(after) = after else {
        return queue_query(conn, &due, KEY_ORDER, &[&now], Some(limit));
    };
    let id = after.id.to_string();
    let mut page = queue_query(
        conn,
        &format!("{due} AND priority = ?2 AND id > ?3"),
        KEY_ORDER,
        &[&now, &after.priority, &id],
        Some(limit),
    )?;
    if page.len() < limit {
        page.extend(queue_query(
            conn,
            &format!("{due} AND priority < ?2"),
            KEY_ORDER,
            &[&now, &after.priority],
            Some(limit - page.len()),
        )?);
    }
    Ok(page)
}

/// Up to `limit` messages that became due between `from` and `now` (both included), at or before `upto`
/// in the dispatcher's order (anywhere when `None`), in that order: those the dispatcher's time window
/// had no room for.
pub(crate) fn queue_became_due(
    conn: &Connection,
    from: Timestamp,
    now: Timestamp,
    upto: Option<QueueKey>,
    limit: usize,
) -> Result<Vec<PagedEntry>> {
    let (now, from) = (ms(now), ms(from));
    let range = format!("AND {TIMED} AND {DUE_AT} >= ?2 AND {DUE_AT} <= ?1");
    match upto {
        None => queue_query(conn, &range, KEY_ORDER, &[&now, &from], Some(limit)),
        Some(upto) => queue_query(
            conn,
            &format!("{range} AND (priority > ?3 OR (priority = ?3 AND id <= ?4))"),
            KEY_ORDER,
            &[&now, &from, &upto.priority, &upto.id.to_string()],
            Some(limit),
        ),
    }
}

/// The `limit` messages due soonest after `now`, in (due time, id) order: a range scan of the
/// `messages_queue_time` index.
pub(crate) fn queue_later(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<PagedEntry>> {
    queue_query(
        conn,
        &format!("AND {TIMED} AND {DUE_AT} > ?1"),
        &format!("ORDER BY {DUE_AT}, id"),
        &[&ms(now)],
        Some(limit),
    )
}

/// Up to `limit` pending messages whose `expires_at` has passed (the `messages_queue_expiry` index).
pub(crate) fn overdue(conn: &Connection, now: Timestamp, limit: usize) -> Result<Vec<Uuid>> {
    conn.prepare_cached(
        "SELECT id FROM messages WHERE state IN ('queued', 'scheduled') AND direction = 'outbound' \
         AND expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2",
    )
    .and_then(|mut st| {
        st.query_map(params![ms(now), limit as i64], |row| rows::uuid(row, 0))?
            .collect()
    })
    .map_err(DB)
}

/// Parts sent per modem on `day` (`YYYY-MM-DD`, UTC): the per-SIM daily caps, across restarts.
///
/// Counts are kept per SIM (`iccid:<ICCID>`) once a modem has reported its ICCID, else per modem id; each
/// modem gets the count of the SIM it reported last, so a SIM moved to another port brings its count along
/// and a fresh SIM in a busy port starts from its own.
pub(crate) fn daily_sent(conn: &Connection, day: &str) -> Result<DailyCounts> {
    let counts: HashMap<String, u32> = conn
        .prepare_cached("SELECT modem, sent FROM sim_daily_counters WHERE day = ?1")
        .and_then(|mut st| {
            st.query_map([day], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(DB)?;
    let last_sims: HashMap<String, String> = conn
        .prepare_cached("SELECT id, iccid FROM modems WHERE iccid IS NOT NULL")
        .and_then(|mut st| {
            st.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(DB)?;
    Ok(DailyCounts { counts, last_sims })
}

/// Parts sent on one cap day. They are counted per SIM (by ICCID) once a modem has reported one, and per
/// modem before that, so a SIM moved to another port takes its count along.
#[derive(Debug, Clone, Default)]
pub struct DailyCounts {
    /// Keyed `iccid:<ICCID>` or by modem id.
    counts: HashMap<String, u32>,
    /// The ICCID each modem reported last, as the store has it.
    last_sims: HashMap<String, String>,
}

impl DailyCounts {
    /// What `modem` has sent today with the SIM `iccid` in it, or, when its worker has not said which SIM
    /// it holds, the one it reported last. Parts it sent before it ever reported an ICCID (the day of an
    /// upgrade) count too.
    pub fn of(&self, modem: &str, iccid: Option<&str>) -> u32 {
        let port = self.counts.get(modem).copied().unwrap_or(0);
        let sim = iccid
            .or_else(|| self.last_sims.get(modem).map(String::as_str))
            .and_then(|iccid| self.counts.get(&format!("iccid:{iccid}")))
            .copied()
            .unwrap_or(0);
        port + sim
    }
}

/// The modem each of `recipients` last heard from, for those that heard from one: an index lookup each.
pub(crate) fn last_modems_of(
    conn: &Connection,
    recipients: &[String],
) -> Result<HashMap<String, String>> {
    let mut st = conn
        .prepare_cached(
            "SELECT modem FROM recipient_sends WHERE recipient = ?1 ORDER BY at DESC, id DESC LIMIT 1",
        )
        .map_err(DB)?;
    let mut found = HashMap::new();
    for recipient in recipients {
        if let Some(modem) = st
            .query_row([recipient], |row| row.get::<_, String>(0))
            .optional()
            .map_err(DB)?
        {
            found.insert(recipient.clone(), modem);
        }
    }
    Ok(found)
}

/// One message a modem sent: when its last part went, and how many parts it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemSend {
    pub modem: String,
    pub at: Timestamp,
    pub parts: u32,
}

/// Messages sent since `since`, oldest first (the rate limiters pick up from them at start).
pub(crate) fn modem_sends_since(conn: &Connection, since: Timestamp) -> Result<Vec<ModemSend>> {
    conn.prepare_cached(
        "SELECT r.modem, r.at, m.part_count FROM recipient_sends r JOIN messages m ON m.id = r.message_id \
         WHERE r.at >= ?1 ORDER BY r.at, r.id",
    )
    .and_then(|mut st| {
        st.query_map([ms(since)], |row| {
            Ok(ModemSend {
                modem: row.get(0)?,
                at: rows::ts(row, 1)?,
                parts: row.get(2)?,
            })
        })?
        .collect()
    })
    .map_err(DB)
}

/// Messages sent to `recipient` since `since` (frequency caps).
pub(crate) fn sends_since(conn: &Connection, recipient: &str, since: Timestamp) -> Result<u32> {
    conn.prepare_cached("SELECT count(*) FROM recipient_sends WHERE recipient = ?1 AND at >= ?2")
        .and_then(|mut st| st.query_row(params![recipient, ms(since)], |row| row.get(0)))
        .map_err(DB)
}

pub(crate) fn is_opted_out(conn: &Connection, number: &str) -> Result<bool> {
    conn.prepare_cached("SELECT active FROM optouts WHERE number = ?1")
        .and_then(|mut st| st.query_row([number], |row| row.get(0)).optional())
        .map(|active| active.unwrap_or(false))
        .map_err(DB)
}

/// A modem as the store knows it: identity and lifetime counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModemRecord {
    pub id: String,
    pub identity: ModemIdentity,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub first_seen: Timestamp,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub last_seen: Timestamp,
    pub parts_sent: i64,
    pub parts_failed: i64,
    pub received: i64,
}

pub(crate) fn modems(conn: &Connection) -> Result<Vec<ModemRecord>> {
    conn.prepare_cached(
        "SELECT id, manufacturer, model, revision, imei, imsi, iccid, own_number, first_seen, last_seen, \
         parts_sent, parts_failed, received FROM modems ORDER BY id",
    )
    .and_then(|mut st| {
        st.query_map([], |row| {
            Ok(ModemRecord {
                id: row.get(0)?,
                identity: ModemIdentity {
                    manufacturer: row.get(1)?,
                    model: row.get(2)?,
                    revision: row.get(3)?,
                    imei: row.get(4)?,
                    imsi: row.get(5)?,
                    iccid: row.get(6)?,
                    own_number: row.get(7)?,
                },
                first_seen: rows::ts(row, 8)?,
                last_seen: rows::ts(row, 9)?,
                parts_sent: row.get(10)?,
                parts_failed: row.get(11)?,
                received: row.get(12)?,
            })
        })?
        .collect()
    })
    .map_err(DB)
}

/// What `/metrics` shows about the whole store, read at scrape time so it can never drift.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Messages by current state and modem (`None`: not yet on a modem). A pair that had messages once
    /// stays listed with 0, so a gauge falls to zero instead of going stale.
    pub messages: Vec<(MessageState, Option<String>, u64)>,
    /// Undelivered webhook events, by the webhook they are addressed to.
    pub webhooks: Vec<WebhookBacklog>,
}

/// The undelivered outbox rows of one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookBacklog {
    /// The webhook's URL; `None` for rows from before rows were per webhook (for every webhook).
    pub target: Option<String>,
    pub pending: u64,
    /// When the oldest of them was queued.
    pub oldest: Option<Timestamp>,
}

pub(crate) fn totals(conn: &Connection) -> Result<Totals> {
    let messages = conn
        .prepare_cached(
            "SELECT state, nullif(modem, ''), n FROM message_counts ORDER BY state, modem",
        )
        .and_then(|mut st| {
            st.query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get::<_, i64>(2)?.unsigned_abs(),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(DB)?;
    let webhooks = conn
        .prepare_cached(
            "SELECT target, count(*), min(created_at) FROM webhook_outbox \
             WHERE delivered_at IS NULL GROUP BY target",
        )
        .and_then(|mut st| {
            st.query_map([], |row| {
                Ok(WebhookBacklog {
                    target: row.get(0)?,
                    pending: row.get::<_, i64>(1)?.unsigned_abs(),
                    oldest: rows::opt_ts(row, 2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(DB)?;
    Ok(Totals { messages, webhooks })
}

/// An opted-out number and its latest audit entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OptOutRecord {
    pub number: String,
    /// When it (last) opted out.
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub since: Timestamp,
    /// Who recorded it: `rules` for a reply, `api:KEY` for an admin.
    pub actor: String,
    /// What was recorded with it (the keyword, a note).
    pub detail: Option<String>,
    /// The inbound message that caused it.
    pub source_message: Option<Uuid>,
    pub modem: Option<String>,
    /// How it came about (none on a row a newer build wrote with a source this one does not know).
    pub source: Option<OptOutSource>,
}

/// Opted-out numbers with their latest audit entry; `{}` is the rest of the WHERE clause.
const OPTOUTS: &str = "SELECT o.number, o.updated_at, a.actor, a.detail, o.source_message, o.modem, o.source \
     FROM optouts o \
     LEFT JOIN optout_audit a ON a.id = (SELECT max(id) FROM optout_audit WHERE number = o.number) \
     WHERE o.active";

fn optout_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<OptOutRecord> {
    let source: Option<String> = row.get(4)?;
    Ok(OptOutRecord {
        number: row.get(0)?,
        since: rows::ts(row, 1)?,
        actor: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
        detail: row.get(3)?,
        source_message: source.and_then(|id| Uuid::parse_str(&id).ok()),
        modem: row.get(5)?,
        source: row
            .get::<_, Option<String>>(6)?
            .and_then(|s| OptOutSource::parse(&s)),
    })
}

/// Every number currently opted out, in number order.
pub(crate) fn optouts(conn: &Connection) -> Result<Vec<OptOutRecord>> {
    conn.prepare_cached(&format!("{OPTOUTS} ORDER BY o.number"))
        .and_then(|mut st| st.query_map([], optout_record)?.collect())
        .map_err(DB)
}

/// One change to a number's opt-out, as the audit trail recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OptOutAuditEntry {
    pub number: String,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub at: Timestamp,
    /// `true`: it opted out; `false`: the opt-out was lifted.
    pub opted_out: bool,
    /// `rules` for a reply, `api:KEY` for the API.
    pub actor: String,
    /// The reply that asked (STOP, START...), kept by retention as the evidence.
    pub message_id: Option<Uuid>,
    pub modem: Option<String>,
    /// The keyword, the reply under review (`review: ...`), an admin's note.
    pub detail: Option<String>,
}

/// The opt-out audit trail, oldest first: every number's, or `number`'s.
pub(crate) fn optout_audit(
    conn: &Connection,
    number: Option<&str>,
) -> Result<Vec<OptOutAuditEntry>> {
    conn.prepare_cached(
        "SELECT number, at, active, actor, source_message, modem, detail FROM optout_audit \
         WHERE ?1 IS NULL OR number = ?1 ORDER BY id",
    )
    .and_then(|mut st| {
        st.query_map([number], |row| {
            let message: Option<String> = row.get(4)?;
            Ok(OptOutAuditEntry {
                number: row.get(0)?,
                at: rows::ts(row, 1)?,
                opted_out: row.get(2)?,
                actor: row.get(3)?,
                message_id: message.and_then(|id| Uuid::parse_str(&id).ok()),
                modem: row.get(5)?,
                detail: row.get(6)?,
            })
        })?
        .collect()
    })
    .map_err(DB)
}

/// Received messages still waiting for the reply rules, in the order they were received.
pub(crate) fn rules_pending(conn: &Connection) -> Result<Vec<Message>> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM messages WHERE id IN (SELECT message_id FROM inbound_rules_pending) ORDER BY id",
        rows::MESSAGE_COLUMNS
    ))
    .and_then(|mut st| st.query_map([], rows::message)?.collect())
    .map_err(DB)
}

/// `number`'s opt-out, if it is opted out.
pub(crate) fn optout(conn: &Connection, number: &str) -> Result<Option<OptOutRecord>> {
    conn.prepare_cached(&format!("{OPTOUTS} AND o.number = ?1"))
        .and_then(|mut st| st.query_row([number], optout_record).optional())
        .map_err(DB)
}

/// A message that counted against its recipient's contact caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentSend {
    pub recipient: String,
    pub message_id: Uuid,
    pub at: Timestamp,
    /// The region the send gave for the recipient's address, if it gave one.
    pub region: Option<String>,
}

/// Sends completed after `since`, the gateway's own confirmations excluded (they never count).
pub(crate) fn recent_sends(conn: &Connection, since: Timestamp) -> Result<Vec<RecentSend>> {
    conn.prepare_cached(
        "SELECT r.recipient, r.message_id, r.at, m.region FROM recipient_sends r JOIN messages m ON m.id = r.message_id \
         WHERE r.at > ?1 AND m.category != 'confirmation' ORDER BY r.at",
    )
    .and_then(|mut st| {
        st.query_map([ms(since)], |row| {
            Ok(RecentSend {
                recipient: row.get(0)?,
                message_id: rows::uuid(row, 1)?,
                at: rows::ts(row, 2)?,
                region: row.get(3)?,
            })
        })?
        .collect()
    })
    .map_err(DB)
}

/// The latest collection text (not an automatic answer) that went out to `peer`: reply menus fill their
/// templates from its metadata.
pub(crate) fn last_sent_to(conn: &Connection, peer: &str) -> Result<Option<Message>> {
    let ids = keys::ids(conn, KeyKind::Peer, peer).map_err(DB)?;
    conn.prepare_cached(&format!(
        "SELECT {} FROM messages WHERE id IN rarray(?1) AND direction = 'outbound' \
         AND category = 'standard' AND state IN ('sent', 'delivered') ORDER BY id DESC LIMIT 1",
        rows::MESSAGE_COLUMNS,
    ))
    .and_then(|mut st| st.query_row([ids], rows::message).optional())
    .map_err(DB)
}

/// The first answer the reply rules queued to `peer` after the reply `after` arrived (ids are time-ordered).
pub(crate) fn rules_answer_after(
    conn: &Connection,
    peer: &str,
    after: Uuid,
) -> Result<Option<Uuid>> {
    let ids = keys::ids(conn, KeyKind::Peer, peer).map_err(DB)?;
    conn.prepare_cached(
        "SELECT id FROM messages WHERE id IN rarray(?1) AND id > ?2 AND direction = 'outbound' \
         AND api_key = 'rules' ORDER BY id LIMIT 1",
    )
    .and_then(|mut st| {
        st.query_row(params![ids, after.to_string()], |row| rows::uuid(row, 0))
            .optional()
    })
    .map_err(DB)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each page the dispatcher reads is an index range scan in the order asked for, never a sort of the
    /// whole queue: the plan names the index and has no temporary B-tree for the ORDER BY.
    #[test]
    fn queue_pages_are_index_range_scans() {
        let conn = super::super::migrations::in_memory();
        let plan = |sql: &str| -> String {
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows: Vec<String> = st
                .query_map([], |row| row.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows.join("\n")
        };
        let main = |condition: &str, order: &str| {
            let sql = format!("{QUEUE_SELECT} {condition} {order} LIMIT 10");
            // Only the outer query's lines: the sub-queries have their own (indexed) plans.
            plan(
                &sql.replace("?1", "0")
                    .replace("?2", "0")
                    .replace("?3", "'x'")
                    .replace("?4", "'x'"),
            )
        };
        let due = format!("AND {DUE_AT} <= ?1");
        for (name, got, index) in [
            ("head", main(&due, KEY_ORDER), "messages_queue_order"),
            (
                "after",
                main(&format!("{due} AND priority = ?2 AND id > ?3"), KEY_ORDER),
                "messages_queue_order",
            ),
            (
                "lower",
                main(&format!("{due} AND priority < ?2"), KEY_ORDER),
                "messages_queue_order",
            ),
            (
                "later",
                main(
                    &format!("AND {TIMED} AND {DUE_AT} > ?1"),
                    &format!("ORDER BY {DUE_AT}, id"),
                ),
                "messages_queue_time",
            ),
        ] {
            assert!(got.contains(index), "{name}: {got}");
            assert!(!got.contains("TEMP B-TREE"), "{name}: {got}");
        }
        let overdue = plan(
            "SELECT id FROM messages WHERE state IN ('queued', 'scheduled') AND direction = 'outbound' \
             AND expires_at IS NOT NULL AND expires_at <= 0 LIMIT 10",
        );
        assert!(overdue.contains("messages_queue_expiry"), "{overdue}");
        let last = plan(
            "SELECT modem FROM recipient_sends WHERE recipient = 'x' ORDER BY at DESC, id DESC LIMIT 1",
        );
        assert!(last.contains("recipient_sends_recipient"), "{last}");
        assert!(!last.contains("TEMP B-TREE"), "{last}");
        let recent = plan(
            "SELECT r.recipient, r.message_id, r.at FROM recipient_sends r JOIN messages m \
             ON m.id = r.message_id WHERE r.at > 0 AND m.category != 'confirmation' ORDER BY r.at",
        );
        assert!(recent.contains("recipient_sends_at"), "{recent}");
    }
}
