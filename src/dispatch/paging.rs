//! Paging the queue in from the store as the window (see `window`) asks, and expiring what it does not
//! hold.
//!
//! Reads run on the dispatcher's task, between its steps: nothing the dispatcher does interleaves with a
//! page, so an entry it holds, or has in flight, is never loaded twice (memory, the fresher, wins). A
//! message accepted while a page is read may be both in the page and announced by its handle: the second
//! is ignored the same way. The store's state checks (`claim` takes only queued or scheduled messages) are
//! the last guard.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use jiff::Timestamp;

use super::Command;
use super::actor::{Dispatcher, STORE_RETRY};
use super::limits::after;
use super::queue::key;
use super::window::At;
use crate::store::{PagedEntry, StoreError};

/// How often overdue messages the window does not hold are expired. Those it holds expire on time; these
/// would expire anyway when paged in, never go out late, but the CMS hears of them within a minute.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Most messages expired per sweep; the next takes the rest.
const SWEEP_BATCH: usize = 512;

fn last_key(rows: &[PagedEntry]) -> Option<super::queue::Key> {
    rows.last().map(|row| key(&row.entry))
}

fn last_at(rows: &[PagedEntry]) -> Option<At> {
    rows.last()
        .and_then(|row| row.entry.not_before.map(|at| (at, row.entry.id)))
}

impl Dispatcher {
    /// Loads the head of the due queue and the first waiting entries. At start, and when a handle was
    /// rebound to this dispatcher.
    pub(super) async fn load_heads(&mut self, now: Timestamp) -> Result<(), StoreError> {
        let size = self.window.size();
        let rows = self.store.queue_due(now, None, size).await?;
        self.window.head_paged(last_key(&rows), rows.len() == size);
        self.take_rows(rows, now);
        self.load_later(now).await
    }

    async fn load_later(&mut self, now: Timestamp) -> Result<(), StoreError> {
        let size = self.window.size();
        let rows = self.store.queue_later(now, size).await?;
        self.window
            .later_paged(now, last_at(&rows), rows.len() == size);
        self.take_rows(rows, now);
        Ok(())
    }

    fn take_rows(&mut self, rows: Vec<PagedEntry>, now: Timestamp) {
        for PagedEntry { entry, last_modem } in rows {
            if self.known(entry.id) {
                continue;
            }
            let history = last_modem.and_then(|modem| self.affinity.modem(&modem));
            let avoid = self.window.take_avoid(entry.id);
            self.enqueue(entry, avoid, history, now);
        }
    }

    /// Whatever the window needs from the store now; on a read error, tries again a little later.
    pub(super) async fn page_in(&mut self, now: Timestamp) {
        if self.paging_paused_until.is_some_and(|at| at > now) {
            return;
        }
        self.paging_paused_until = None;
        if let Err(error) = self.try_page_in(now).await {
            tracing::error!(%error, "cannot read the queue from the store; retrying in 5 s");
            self.paging_paused_until = Some(after(now, STORE_RETRY));
        }
    }

    async fn try_page_in(&mut self, now: Timestamp) -> Result<(), StoreError> {
        if self.rescan_at.is_some_and(|at| at <= now) {
            self.load_heads(now).await?;
            self.rescan_at = None;
        }
        if let Some((from, upto)) = self.window.wants_catch_up(now) {
            let size = self.window.size();
            let rows = self.store.queue_became_due(from, now, upto, size).await?;
            self.window.caught_up(last_key(&rows), rows.len() == size);
            self.take_rows(rows, now);
            self.load_later(now).await?;
        }
        while let Some((after_key, room)) = self.window.wants_page() {
            let rows = self.store.queue_due(now, Some(after_key), room).await?;
            self.window.paged(last_key(&rows), rows.len() == room);
            self.take_rows(rows, now);
        }
        if self.window.partial() && now >= self.next_sweep {
            self.sweep(now).await?;
            self.next_sweep = after(now, SWEEP_EVERY);
        }
        Ok(())
    }

    /// Expires pending messages past their `expires_at`, with their events and webhooks, in one group
    /// commit.
    async fn sweep(&mut self, now: Timestamp) -> Result<(), StoreError> {
        let overdue = self.store.overdue(now, SWEEP_BATCH).await?;
        let store = &self.store;
        let results = join_all(overdue.iter().map(|&id| store.expire(id))).await;
        for (id, result) in overdue.into_iter().zip(results) {
            self.window.queue.remove(id);
            if let Err(error) = result {
                self.expire_failed(id, &error, now);
            }
        }
        Ok(())
    }

    /// When paging has something to do without any other event: the waiting window's edge, the next
    /// sweep, the end of a pause after a failed read.
    pub(super) fn paging_wake(&self) -> Option<Timestamp> {
        if self.stopping {
            return None;
        }
        if let Some(at) = self.paging_paused_until {
            return Some(at);
        }
        let sweep = self.window.partial().then_some(self.next_sweep);
        [self.window.later_edge_time(), sweep, self.rescan_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The store's sticky modem for the recipients of new messages in `burst` the window will hold (those
    /// texted since start are known already).
    pub(super) async fn new_entries_history(
        &mut self,
        burst: &[Command],
        now: Timestamp,
    ) -> HashMap<String, String> {
        let mut recipients: Vec<String> = burst
            .iter()
            .filter_map(|command| match command {
                Command::Enqueue(entry)
                    if !self.known(entry.id)
                        && self.window.would_hold(entry, now)
                        && self.affinity.wants_history(&entry.to) =>
                {
                    Some(entry.to.clone())
                }
                _ => None,
            })
            .collect();
        if recipients.is_empty() {
            return HashMap::new();
        }
        recipients.sort_unstable();
        recipients.dedup();
        match self.store.last_modems_of(recipients).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "cannot look up sticky modems; new messages may go anywhere");
                HashMap::new()
            }
        }
    }
}
