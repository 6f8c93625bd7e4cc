//! Who each message is to or from, for the look-ups by number (a conversation, the list's `to`, reply
//! menus, an opt-out's blocking of queued texts): a table the writer merges new messages into in key
//! order, not an index on `messages`.
//!
//! An index on `messages (peer, id)` puts each new message on its recipient's leaf page, so a batch to
//! 1,000 debtors dirties 1,000 index pages per commit, and the commit writes each dirtied page whole to
//! the log: ~4 KB of WAL per message, which halved the writer's throughput (BENCHMARKS.md, "Store").
//! Here the writer keeps new messages' keys in memory and, once [`MergePolicy::rows`] wait (or
//! [`MergePolicy::every`] has passed), starts a *run*: it sorts them and inserts them into
//! `message_peers` a slice per batch, inside each batch's transaction. A recipient's page is then dirtied
//! once per run instead of once per commit, and no batch waits for a whole run.
//!
//! `message_peers_merged.upto` is the newest id whose key, and every older one's, is in the table; it
//! moves when a run ends. A look-up reads the table, then the messages after `upto` for its number
//! through the id order ([`ids_of`]; a key a run has inserted already is found twice, and `IN` counts it
//! once), so it is exact whenever it runs and reads at most two runs' worth of rows past the table. Ids
//! only grow (the writer's clock context, continued across restarts), so "after `upto`" holds every
//! message not merged. A run cut short by a stop is simply done again at the next start.
//!
//! A message deleted by retention while its key still waits would leave a row naming no message; the
//! look-ups join on `messages`, so it is never seen, and retention only deletes messages days old.

use std::time::{Duration, Instant};

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

/// A merge under way: its keys in key order, how many are in the table, the newest id it covers.
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
        let mut insert =
            conn.prepare_cached("INSERT OR IGNORE INTO message_peers (peer, id) VALUES (?1, ?2)")?;
        for (peer, id) in &run.keys[run.done..end] {
            insert.execute(params![peer, id.to_string()])?;
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

/// Drops a deleted message from the look-up (retention).
pub(crate) fn forget(conn: &Connection, peer: &str, id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM message_peers WHERE peer = ?1 AND id = ?2")?
        .execute([peer, id])?;
    Ok(())
}

/// An SQL condition on `messages`: the row is to or from the number bound to parameter `?{param}`.
pub(crate) fn ids_of(param: usize) -> String {
    format!(
        "id IN (SELECT id FROM message_peers WHERE peer = ?{param} UNION ALL \
         SELECT id FROM messages WHERE peer = ?{param} AND id > (SELECT upto FROM message_peers_merged))"
    )
}
