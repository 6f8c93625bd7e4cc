//! What a crash left behind, settled once at open before anything else runs.
//!
//! A part left `submitting` may or may not have reached the network: it becomes `unknown` (or, only when
//! configured, goes back to the queue). A message claimed for sending whose parts were not yet submitting is
//! safe to send again and returns to the queue. Queued and scheduled work is untouched.

use rusqlite::{Connection, params};
use uuid::Uuid;

use super::error::{Result, StoreError};
use super::keys::Merger;
use super::outbox::{self, Wanted};
use super::rows::{self, ms};
use super::types::MessageState;
use super::write::{self, Ev};
use super::writer::{NewMessages, WriteCtx};

/// What recovery did at open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Messages whose in-flight part may or may not have been sent.
    pub unknown: Vec<Uuid>,
    /// Messages put back into the queue.
    pub requeued: Vec<Uuid>,
}

const DB: fn(rusqlite::Error) -> StoreError =
    |e| StoreError::sqlite("recovering after a restart")(e);

/// Messages a crash left `sending`, and whether one of their parts was being submitted.
const LEFT_SENDING: &str = "SELECT id, EXISTS (SELECT 1 FROM parts p WHERE p.message_id = m.id \
     AND p.state = 'submitting') FROM messages m WHERE state = 'sending'";

pub(crate) fn recover(
    conn: &mut Connection,
    now: jiff::Timestamp,
    resend_submitting: bool,
    wanted: &Wanted,
    merger: &Merger,
) -> Result<Recovery> {
    let tx = conn.transaction().map_err(DB)?;
    let sending: Vec<(Uuid, bool)> = tx
        .prepare(LEFT_SENDING)
        .and_then(|mut st| {
            st.query_map([], |row| Ok((rows::uuid(row, 0)?, row.get(1)?)))
                .and_then(Iterator::collect)
        })
        .map_err(DB)?;
    let mut recovery = Recovery::default();
    let ids = uuid::ContextV7::new();
    // Recovery creates no message, so there is nothing to tally.
    let created = NewMessages::default();
    let ctx = WriteCtx::new(&tx, now, &ids, wanted, &created, merger);
    for (id, in_flight) in sending {
        let (part_state, state, detail) = match (in_flight, resend_submitting) {
            (true, false) => (
                "unknown",
                MessageState::Unknown,
                "restarted while a part was being submitted: it may or may not have been sent",
            ),
            (true, true) => (
                "pending",
                MessageState::Queued,
                "restarted while a part was being submitted: resending as configured",
            ),
            (false, _) => (
                "pending",
                MessageState::Queued,
                "restarted before any part was submitted",
            ),
        };
        let id_text = id.to_string();
        tx.execute(
            "UPDATE parts SET state = ?2 WHERE message_id = ?1 AND state = 'submitting'",
            params![id_text, part_state],
        )
        .and_then(|_| {
            // An unknown message's `error` says why (the API and `message.unknown` show it).
            let error = (state == MessageState::Unknown).then_some(detail);
            tx.execute(
                "UPDATE messages SET state = ?2, updated_at = ?3, error = coalesce(?4, error) WHERE id = ?1",
                params![id_text, state, ms(now), error],
            )
        })
        .map_err(DB)?;
        write::append_event(
            &ctx,
            id,
            Ev::new("system", "recovered", state).detail(detail),
        )?;
        if state == MessageState::Unknown {
            // The part may have reached the phone: it counts against the caps as a send would.
            let modem: String = tx
                .query_row(
                    "SELECT coalesce(max(modem), '') FROM parts WHERE message_id = ?1 AND state = 'unknown'",
                    [&id_text],
                    |row| row.get(0),
                )
                .map_err(DB)?;
            write::count_contact(&tx, id, &modem, now)?;
            outbox::message_reached(&ctx, id, state)?;
            recovery.unknown.push(id);
        } else {
            recovery.requeued.push(id);
        }
    }
    drop(ctx);
    tx.commit().map_err(DB)?;
    Ok(recovery)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrations;

    /// Recovery runs at every start: it reads the index of messages in flight, not the table. Up to
    /// schema 7 no index could answer `state = 'sending'` and every start read every message ever kept
    /// (0.3 s and the page cache's worth of memory per million).
    #[test]
    fn recovery_reads_the_in_flight_index_not_the_table() {
        let conn = migrations::in_memory();
        let outer: String = conn
            .query_row(&format!("EXPLAIN QUERY PLAN {LEFT_SENDING}"), [], |row| {
                row.get(3)
            })
            .unwrap();
        assert!(outer.ends_with("INDEX messages_sending"), "{outer}");
    }
}
