//! Which part of the queue the dispatcher holds in memory: the head, not the backlog.
//!
//! The store is the queue; memory holds a window of it of at most `size` due entries (the first ones in
//! the dispatcher's order: priority, then age) and `size` waiting ones (the first to come due). Each window
//! has an [`Edge`]: everything pending in the store up to it is in memory (or in flight), nothing after it
//! need be. The dispatcher pages due entries in after the edge when fewer than half the window are left,
//! and when time passes the waiting window's edge it loads what came due meanwhile at or before the due
//! edge (the rest is found by paging) and the next waiting window. An entry offered beyond an edge is not
//! held: the store has it and paging will bring it. When a window overflows (a burst of new messages while
//! the whole queue was in memory), its tail is dropped and the edge moves back.
//!
//! What memory knows that the store does not (the modem a retry should avoid) is kept, bounded, for
//! entries dropped from the window, and given back when they are paged in again.

use std::num::NonZeroUsize;

use jiff::Timestamp;
use uuid::Uuid;

use super::queue::{Item, Key, Lane, NewItem, Queue, key};
use super::recent::Recent;
use crate::store::{QueueEntry, QueueKey};

/// The production window: due entries held (and as many waiting ones). A few thousand covers minutes of
/// sending at any plausible rate (1,000 modems at 4 parts/s drain it in a second; paging a window reads
/// ~4 MB), keeps memory to a few MB whatever the backlog, and a page costs one index range scan.
pub const WINDOW: NonZeroUsize = NonZeroUsize::new(4096).unwrap();

/// A position in the waiting window's order: due time, then id.
pub(crate) type At = (Timestamp, Uuid);

/// How far into the store's order memory reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge<K> {
    /// Everything of this kind in the store is in memory.
    All,
    /// Everything up to and including this position is; what comes after may not be.
    Upto(K),
}

impl<K: Ord + Copy> Edge<K> {
    pub fn admits(self, position: K) -> bool {
        match self {
            Edge::All => true,
            Edge::Upto(edge) => position <= edge,
        }
    }

    /// Moves the edge back to `position` if it is further.
    fn tighten(&mut self, position: K) {
        if self.admits(position) {
            *self = Edge::Upto(position);
        }
    }
}

pub(crate) fn store_key((priority, id): Key) -> QueueKey {
    QueueKey {
        priority: priority.0,
        id,
    }
}

pub(crate) struct Window {
    pub queue: Queue,
    size: usize,
    due: Edge<Key>,
    later: Edge<At>,
    /// The modem to avoid, for entries dropped from memory with one.
    avoids: Recent<Uuid, usize>,
}

impl Window {
    /// An empty window over an empty store: the first loads set the edges.
    pub fn new(size: NonZeroUsize) -> Self {
        Window {
            queue: Queue::default(),
            size: size.get(),
            due: Edge::All,
            later: Edge::All,
            avoids: Recent::new(size.get()),
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the store may hold pending entries memory does not.
    pub fn partial(&self) -> bool {
        self.due != Edge::All || self.later != Edge::All
    }

    /// Holds `item` if it falls inside its window (due at `now` or waiting), in `lane`; else remembers
    /// what only memory knows of it. Returns whether it is held.
    pub fn insert(&mut self, item: NewItem, now: Timestamp, lane: Lane) -> bool {
        let id = item.entry.id;
        if !self.would_hold(&item.entry, now) {
            self.forget(item);
            return false;
        }
        self.queue.insert(item, now, lane);
        while self.queue.ready_len() > self.size {
            self.drop_ready_tail();
        }
        while self.queue.waiting_len() > self.size {
            self.drop_waiting_tail();
        }
        self.queue.get(id).is_some()
    }

    /// Whether `entry` falls inside its window at `now`.
    pub fn would_hold(&self, entry: &QueueEntry, now: Timestamp) -> bool {
        match entry.not_before {
            Some(at) if at > now => self.later.admits((at, entry.id)),
            _ => self.due.admits(key(entry)),
        }
    }

    /// When time reaches the waiting window's edge (and what came due after it must be looked for).
    pub fn later_edge_time(&self) -> Option<Timestamp> {
        match self.later {
            Edge::All => None,
            Edge::Upto((at, _)) => Some(at),
        }
    }

    /// The modem to avoid for an entry paged in again after it was dropped.
    pub fn take_avoid(&mut self, id: Uuid) -> Option<usize> {
        self.avoids.remove(&id)
    }

    fn forget(&mut self, item: NewItem) {
        if let Some(avoid) = item.avoid {
            self.avoids.insert(item.entry.id, avoid);
        }
    }

    fn drop_item(&mut self, id: Uuid) {
        if let Some(item) = self.queue.remove(id) {
            self.forget(Item::into_new(item));
        }
    }

    fn drop_ready_tail(&mut self) {
        if let Some(tail) = self.queue.ready_tail() {
            self.drop_item(tail.1);
            if let Some(new_tail) = self.queue.ready_tail() {
                self.due.tighten(new_tail);
            }
        }
    }

    fn drop_waiting_tail(&mut self) {
        if let Some(tail) = self.queue.waiting_tail() {
            self.drop_item(tail.1);
            if let Some(new_tail) = self.queue.waiting_tail() {
                self.later.tighten(new_tail);
            }
        }
    }

    /// Moves the due edge back to `edge`, dropping what lies beyond.
    fn restrict_due(&mut self, edge: Key) {
        self.due.tighten(edge);
        while let Some(tail) = self.queue.ready_tail()
            && !self.due.admits(tail)
        {
            self.drop_item(tail.1);
        }
    }

    fn restrict_later(&mut self, edge: At) {
        self.later.tighten(edge);
        while let Some(tail) = self.queue.waiting_tail()
            && !self.later.admits(tail)
        {
            self.drop_item(tail.1);
        }
    }

    /// When due entries run low and the store has more: the key to page after, and how many to read.
    pub fn wants_page(&self) -> Option<(QueueKey, usize)> {
        match self.due {
            Edge::Upto(edge) if self.queue.ready_len() * 2 < self.size => {
                Some((store_key(edge), self.size - self.queue.ready_len()))
            }
            _ => None,
        }
    }

    /// A page read after the due edge: `last` is its last key, `full` whether it was as long as asked
    /// (else the store has nothing more due). Like every `*_paged`, call it before inserting the page's
    /// entries, so they are judged against the new edge.
    pub fn paged(&mut self, last: Option<Key>, full: bool) {
        self.due = match last {
            Some(last) if full => Edge::Upto(last),
            _ => Edge::All,
        };
    }

    /// A page read from the head of the store's due entries (at start, or to find entries accepted while
    /// no dispatcher listened): tightens the edge to its end if it was full, else everything due is known.
    pub fn head_paged(&mut self, last: Option<Key>, full: bool) {
        match last {
            Some(last) if full => self.restrict_due(last),
            _ => self.due = Edge::All,
        }
    }

    /// Once time reaches the waiting window's edge: entries the store has that came due since the edge's
    /// time, at or before the due edge, must be loaded (from, upto: `None` for anywhere).
    pub fn wants_catch_up(&self, now: Timestamp) -> Option<(Timestamp, Option<QueueKey>)> {
        match self.later {
            Edge::Upto((at, _)) if at <= now => Some((
                at,
                match self.due {
                    Edge::All => None,
                    Edge::Upto(edge) => Some(store_key(edge)),
                },
            )),
            _ => None,
        }
    }

    /// The entries that came due were read: if there were as many as asked, only up to the last.
    pub fn caught_up(&mut self, last: Option<Key>, full: bool) {
        if let Some(last) = last
            && full
        {
            self.restrict_due(last);
        }
    }

    /// The next waiting window was read (entries due after `now`).
    pub fn later_paged(&mut self, now: Timestamp, last: Option<At>, full: bool) {
        match last {
            Some(last) if full => {
                // An edge whose time has passed was covered by the catch-up: the new one replaces it.
                if matches!(self.later, Edge::Upto((at, _)) if at <= now) {
                    self.later = Edge::All;
                }
                self.restrict_later(last);
            }
            _ => self.later = Edge::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Category;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn entry(n: u128, priority: i32, at: Option<i64>) -> NewItem {
        NewItem {
            entry: QueueEntry {
                id: Uuid::from_u128(n),
                to: format!("+1555000{n:04}"),
                priority,
                not_before: at.map(t),
                expires_at: None,
                tz: None,
                region: None,
                pinned_modem: None,
                attempts: 0,
                parts: 1,
                part_count: 1,
                category: Category::Standard,
            },
            avoid: None,
            history: None,
        }
    }

    fn k(n: u128, priority: i32) -> Key {
        (std::cmp::Reverse(priority), Uuid::from_u128(n))
    }

    fn window(size: usize) -> Window {
        Window::new(NonZeroUsize::new(size).unwrap())
    }

    #[test]
    fn an_overflow_drops_the_tail_and_moves_the_edge_back() {
        let mut w = window(3);
        for n in 1..=3 {
            assert!(w.insert(entry(n, 0, None), t(0), Lane::Any));
        }
        assert!(!w.partial());
        // A higher priority enters; the youngest of priority 0 leaves and the edge is before it.
        assert!(w.insert(entry(4, 5, None), t(0), Lane::Any));
        assert_eq!(w.queue.ready_len(), 3);
        assert!(w.queue.get(Uuid::from_u128(3)).is_none());
        assert_eq!(w.due, Edge::Upto(k(2, 0)));
        // Beyond the edge: not held (the store has it). Before it: held, and the tail goes again.
        assert!(!w.insert(entry(5, 0, None), t(0), Lane::Any));
        assert!(w.insert(entry(6, 1, None), t(0), Lane::Any));
        assert_eq!(w.due, Edge::Upto(k(1, 0)));
        assert_eq!(w.queue.ready_tail(), Some(k(1, 0)));
    }

    #[test]
    fn paging_asks_below_half_the_window_and_ends_with_a_short_page() {
        let mut w = window(4);
        w.head_paged(Some(k(4, 0)), true);
        assert_eq!(
            w.wants_page().map(|(key, n)| (key.id, n)),
            Some((Uuid::from_u128(4), 4))
        );
        for n in 1..=4 {
            w.insert(entry(n, 0, None), t(0), Lane::Any);
        }
        assert_eq!(w.wants_page(), None);
        w.queue.remove(Uuid::from_u128(1));
        w.queue.remove(Uuid::from_u128(2));
        assert_eq!(w.wants_page(), None, "half the window is still there");
        w.queue.remove(Uuid::from_u128(3));
        let (after, room) = w.wants_page().unwrap();
        assert_eq!((after.id, room), (Uuid::from_u128(4), 3));
        w.paged(Some(k(7, 0)), true);
        assert!(w.insert(entry(7, 0, None), t(0), Lane::Any));
        assert!(!w.insert(entry(8, 0, None), t(0), Lane::Any));
        w.paged(Some(k(8, 0)), false);
        assert!(w.insert(entry(9, 0, None), t(0), Lane::Any));
        assert_eq!(w.wants_page(), None);
    }

    #[test]
    fn waiting_entries_are_bounded_by_time_and_caught_up_when_time_passes_the_edge() {
        let mut w = window(2);
        for (n, at) in [(1, 10), (2, 20), (3, 30)] {
            w.insert(entry(n, 0, Some(at)), t(0), Lane::Any);
        }
        assert_eq!(w.queue.waiting_len(), 2);
        assert_eq!(w.later, Edge::Upto((t(20), Uuid::from_u128(2))));
        assert!(!w.insert(entry(4, 0, Some(25)), t(0), Lane::Any));
        assert_eq!(w.wants_catch_up(t(19)), None);
        let (from, upto) = w.wants_catch_up(t(20)).unwrap();
        assert_eq!((from, upto), (t(20), None));
        // The next waiting window replaces a passed edge.
        w.later_paged(t(20), Some((t(40), Uuid::from_u128(5))), true);
        assert_eq!(w.later, Edge::Upto((t(40), Uuid::from_u128(5))));
        w.later_paged(t(20), None, false);
        assert_eq!(w.later, Edge::All);
    }

    #[test]
    fn a_dropped_entry_keeps_the_modem_it_should_avoid() {
        let mut w = window(1);
        w.insert(entry(1, 0, None), t(0), Lane::Any);
        let mut retry = entry(2, 0, None);
        retry.avoid = Some(3);
        assert!(!w.insert(retry, t(0), Lane::Avoid(3)));
        assert_eq!(w.take_avoid(Uuid::from_u128(2)), Some(3));
        assert_eq!(w.take_avoid(Uuid::from_u128(2)), None);
    }

    #[test]
    fn a_full_catch_up_or_head_page_restricts_the_due_edge() {
        let mut w = window(8);
        for n in 1..=5 {
            w.insert(entry(n, 0, None), t(0), Lane::Any);
        }
        w.caught_up(Some(k(3, 0)), true);
        assert_eq!(w.queue.ready_len(), 3);
        assert_eq!(w.due, Edge::Upto(k(3, 0)));
        w.caught_up(Some(k(9, 0)), false);
        assert_eq!(w.due, Edge::Upto(k(3, 0)));
        w.head_paged(Some(k(2, 0)), true);
        assert_eq!(w.queue.ready_len(), 2);
        w.head_paged(None, false);
        assert_eq!(w.due, Edge::All);
    }
}
