//! Who each message is to or from, for the look-ups by number (a conversation, the list's `to`, reply
//! menus, an opt-out's blocking of queued texts): a table the writer merges new messages into, a row per
//! number per merge, not an index on `messages`.
//!
//! An index on `messages (peer, id)` puts each new message on its recipient's leaf page, so a batch to
//! 1,000 debtors dirties 1,000 index pages per commit, and the commit writes each dirtied page whole to
//! the log: ~4 KB of WAL per message, which halved the writer's throughput (BENCHMARKS.md, "Store").
//! Here the writer keeps new messages' keys in memory and, once [`MergePolicy::rows`] wait (or
//! [`MergePolicy::every`] has passed), starts a *run*: it sorts them by number and writes one row per
//! number with that number's ids packed in order, a slice per batch, inside each batch's transaction.
//! A number's page is then dirtied once per run instead of once per commit, a number texted 50 times
//! in a run costs one row instead of 50, and no batch waits for a whole run.
//!
//! `message_peers_merged.upto` is the newest id whose key, and every older one's, is in the table; it
//! moves when a run ends. A look-up ([`ids`]) reads the number's rows and the messages after `upto` for
//! it through the id order, in one statement (one snapshot), so it is exact whenever it runs and reads at
//! most two runs' worth of rows past the table. Ids only grow (the writer's clock context, continued
//! across restarts), so "after `upto`" holds every message not merged. A run cut short by a stop is done
//! again at the next start: its rows are replaced or duplicated, and a look-up drops duplicates.
//! Retention takes deleted messages' ids out of their rows ([`forget`]).

use std::rc::Rc;
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, params};
use uuid::Uuid;

/// When the writer merges new messages into the look-up by number.
#[derive(Clone, Copy, Debug)]
pub struct MergePolicy {
    /// Start a run once this many new messages wait: with the run, it bounds what a look-up reads past
    /// the table.
    pub rows: usize,
    /// Start a run at the first batch this long after the last began, if any message waits.
    pub every: Duration,
    /// The fewest keys a batch inserts while a run is on; a batch inserts twice the messages it adds if
    /// that is more, so runs keep ahead of any accept rate.
    pub slice: usize,
}

impl Default for MergePolicy {
    fn default() -> Self {
        MergePolicy {
            rows: 50_000,
            every: Duration::from_secs(5),
            slice: 2_000,
        }
    }
}

/// A message's key in the look-up.
pub(crate) type Key = (Box<str>, Uuid);

/// The writer's side of the look-up: keys committed but not in the table yet.
pub(crate) struct Merger {
    policy: MergePolicy,
    /// Committed keys not in a run, in id order.
    waiting: Vec<Key>,
    run: Option<Run>,
    started: Instant,
}

/// A merge under way: its keys in key order, how many are in the table, the newest id it covers (the
/// watermark once it ends).
struct Run {
    keys: Vec<Key>,
    done: usize,
    target: Uuid,
}

/// How far a batch's slice took the run; the writer hands it back once the batch is committed.
#[must_use]
pub(crate) struct Slice(usize);

impl Merger {
    /// Reads the keys not merged yet (those of a run the last stop cut short among them).
    pub fn start(conn: &Connection, policy: MergePolicy) -> rusqlite::Result<Merger> {
        let waiting = conn
            .prepare(
                "SELECT peer, id FROM messages WHERE id > (SELECT upto FROM message_peers_merged) \
                 ORDER BY id",
            )?
            .query_map([], |row| {
                let peer: String = row.get(0)?;
                let id: String = row.get(1)?;
                Ok(Uuid::parse_str(&id)
                    .ok()
                    .map(|id| (peer.into_boxed_str(), id)))
            })?
            .filter_map(Result::transpose)
            .collect::<rusqlite::Result<_>>()?;
        Ok(Merger {
            policy,
            waiting,
            run: None,
            started: Instant::now(),
        })
    }

    /// Inserts the next slice of the run (starting one if it is due) inside the batch's open
    /// transaction; `added` is how many messages the batch created.
    pub fn slice(&mut self, conn: &Connection, added: usize) -> rusqlite::Result<Slice> {
        if self.run.is_none() && self.due() {
            let mut keys = std::mem::take(&mut self.waiting);
            // Ids only grow: the last key is the newest.
            let target = keys.last().map(|(_, id)| *id).unwrap_or_default();
            keys.sort_unstable();
            self.run = Some(Run {
                keys,
                done: 0,
                target,
            });
            self.started = Instant::now();
        }
        let Some(run) = &self.run else {
            return Ok(Slice(0));
        };
        let end = run
            .keys
            .len()
            .min(run.done + self.policy.slice.max(2 * added).max(1));
        let mut insert = conn.prepare_cached(
            "INSERT OR REPLACE INTO message_peers (peer, first, ids) VALUES (?1, ?2, ?3)",
        )?;
        for keys in run.keys[run.done..end].chunk_by(|(a, _), (b, _)| a == b) {
            let packed: Vec<u8> = keys.iter().flat_map(|(_, id)| *id.as_bytes()).collect();
            insert.execute(params![keys[0].0, keys[0].1.to_string(), packed])?;
        }
        if end == run.keys.len() {
            conn.prepare_cached("UPDATE message_peers_merged SET upto = ?1")?
                .execute([run.target.to_string()])?;
        }
        Ok(Slice(end - run.done))
    }

    /// Takes in what a committed batch did: its slice, and the keys of the messages it created.
    pub fn committed(&mut self, slice: Slice, created: Vec<Key>) {
        if let Some(run) = &mut self.run {
            run.done += slice.0;
            if run.done >= run.keys.len() {
                self.run = None;
            }
        }
        self.waiting.extend(created);
    }

    fn due(&self) -> bool {
        !self.waiting.is_empty()
            && (self.waiting.len() >= self.policy.rows
                || self.started.elapsed() >= self.policy.every)
    }
}

/// Every message id to or from `peer`, oldest first, as text for `id IN rarray(?)`.
pub(crate) fn ids(conn: &Connection, peer: &str) -> rusqlite::Result<Rc<Vec<Value>>> {
    let mut ids = Vec::new();
    let mut st = conn.prepare_cached(
        "SELECT ids, NULL FROM message_peers WHERE peer = ?1 UNION ALL \
         SELECT NULL, id FROM messages WHERE peer = ?1 AND id > (SELECT upto FROM message_peers_merged)",
    )?;
    let mut rows = st.query([peer])?;
    while let Some(row) = rows.next()? {
        match row.get_ref(0)?.as_blob_or_null()? {
            Some(packed) => ids.extend(
                packed
                    .chunks_exact(16)
                    .filter_map(|bytes| Uuid::from_slice(bytes).ok()),
            ),
            None => ids.extend(Uuid::parse_str(row.get_ref(1)?.as_str()?).ok()),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(Rc::new(
        ids.into_iter()
            .map(|id| Value::Text(id.to_string()))
            .collect(),
    ))
}

/// Takes messages retention deleted, all to or from `peer`, out of the number's rows.
pub(crate) fn forget(conn: &Connection, peer: &str, deleted: &[Uuid]) -> rusqlite::Result<()> {
    let Some(newest) = deleted.iter().max() else {
        return Ok(());
    };
    let rows: Vec<(String, Vec<u8>)> = conn
        .prepare_cached("SELECT first, ids FROM message_peers WHERE peer = ?1 AND first <= ?2")?
        .query_map(params![peer, newest.to_string()], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (first, packed) in rows {
        let kept: Vec<u8> = packed
            .chunks_exact(16)
            .filter(|bytes| Uuid::from_slice(bytes).is_ok_and(|id| !deleted.contains(&id)))
            .flatten()
            .copied()
            .collect();
        if kept.len() == packed.len() {
            continue;
        }
        if kept.is_empty() {
            conn.prepare_cached("DELETE FROM message_peers WHERE peer = ?1 AND first = ?2")?
                .execute([peer, &first])?;
        } else {
            conn.prepare_cached(
                "UPDATE message_peers SET ids = ?3 WHERE peer = ?1 AND first = ?2",
            )?
            .execute(params![peer, first, kept])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrations;

    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map([], |row| row.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A look-up must read the number's rows by key, only the newest messages by id, and then each
    /// message it found by id: a plan that scanned `messages` would read the whole log for every
    /// conversation and every STOP.
    #[test]
    fn a_look_up_reads_by_key_and_by_id_never_the_whole_log() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations::migrate(&mut conn, migrations::LATEST).unwrap();
        rusqlite::vtab::array::load_module(&conn).unwrap();
        let found = plan(
            &conn,
            "SELECT ids, NULL FROM message_peers WHERE peer = '+1' UNION ALL SELECT NULL, id \
             FROM messages WHERE peer = '+1' AND id > (SELECT upto FROM message_peers_merged)",
        );
        assert!(
            found.contains(&"SEARCH message_peers USING PRIMARY KEY (peer=?)".to_owned()),
            "{found:?}"
        );
        assert!(
            found.contains(
                &"SEARCH messages USING INDEX sqlite_autoindex_messages_1 (id>?)".to_owned()
            ),
            "{found:?}"
        );
        let by_id = plan(
            &conn,
            "SELECT id FROM messages WHERE id IN rarray(NULL) AND direction = 'outbound' ORDER BY id",
        );
        assert!(
            by_id.iter().all(|step| !step.starts_with("SCAN messages")),
            "{by_id:?}"
        );
        assert!(
            by_id.contains(
                &"SEARCH messages USING INDEX sqlite_autoindex_messages_1 (id=?)".to_owned()
            ),
            "{by_id:?}"
        );
    }
}
