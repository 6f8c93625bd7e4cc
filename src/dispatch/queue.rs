//! The dispatcher's in-memory index of the pending messages its window holds (see `window`), kept in step
//! with the store, so choosing the next message never touches the database.
//!
//! Messages due now sit in lanes by where they may go: any modem, the recipient's sticky modem, the modem
//! that already sent part of them (pinned), or any modem but the one that just failed them (avoid). Each lane
//! is ordered by priority, then age (ids are time-ordered). Messages not yet due wait in a timer set.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use jiff::Timestamp;
use uuid::Uuid;

use crate::store::QueueEntry;

/// Where a due message may be sent; modems are numbered by their position in the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    Any,
    /// The recipient last heard from this modem.
    Sticky(usize),
    /// Part of the message went out on this modem: the rest must too.
    Pinned(usize),
    /// This modem just failed it: any other, this one only if no other can.
    Avoid(usize),
}

/// Priority first (higher first), then the time-ordered id (older first).
pub(crate) type Key = (Reverse<i32>, Uuid);

pub(crate) struct Item {
    pub entry: QueueEntry,
    /// The modem to avoid on the next attempt.
    pub avoid: Option<usize>,
    /// The modem the recipient last heard from as the store knew when the entry was loaded (sends since
    /// are in the dispatcher's affinity).
    pub history: Option<usize>,
    place: Place,
}

/// What the dispatcher knows of a message it puts in the queue.
pub(crate) struct NewItem {
    pub entry: QueueEntry,
    pub avoid: Option<usize>,
    pub history: Option<usize>,
}

impl Item {
    /// The entry as it would be put back.
    pub fn into_new(self) -> NewItem {
        NewItem {
            entry: self.entry,
            avoid: self.avoid,
            history: self.history,
        }
    }
}

#[derive(Clone, Copy)]
enum Place {
    Ready(Lane),
    Waiting(Timestamp),
}

#[derive(Default)]
pub(crate) struct Queue {
    items: HashMap<Uuid, Item>,
    lanes: HashMap<Lane, BTreeSet<Key>>,
    /// Entries in `lanes`.
    ready: usize,
    waiting: BTreeSet<(Timestamp, Uuid)>,
    expiries: BTreeSet<(Timestamp, Uuid)>,
}

pub(crate) fn key(entry: &QueueEntry) -> Key {
    (Reverse(entry.priority), entry.id)
}

impl Queue {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn get(&self, id: Uuid) -> Option<&Item> {
        self.items.get(&id)
    }

    /// Due entries (in lanes).
    pub fn ready_len(&self) -> usize {
        self.ready
    }

    /// Entries waiting for their time.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// The last due entry in the dispatcher's order.
    pub fn ready_tail(&self) -> Option<Key> {
        self.lanes
            .values()
            .filter_map(|set| set.last())
            .max()
            .copied()
    }

    /// The waiting entry due last.
    pub fn waiting_tail(&self) -> Option<(Timestamp, Uuid)> {
        self.waiting.last().copied()
    }

    /// Adds (or replaces) a message: due now into `lane`, else into the timer set.
    pub fn insert(&mut self, item: NewItem, now: Timestamp, lane: Lane) {
        let NewItem {
            entry,
            avoid,
            history,
        } = item;
        self.remove(entry.id);
        let place = match entry.not_before {
            Some(at) if at > now => {
                self.waiting.insert((at, entry.id));
                Place::Waiting(at)
            }
            _ => {
                self.lanes.entry(lane).or_default().insert(key(&entry));
                self.ready += 1;
                Place::Ready(lane)
            }
        };
        if let Some(at) = entry.expires_at {
            self.expiries.insert((at, entry.id));
        }
        self.items.insert(
            entry.id,
            Item {
                entry,
                avoid,
                history,
                place,
            },
        );
    }

    pub fn remove(&mut self, id: Uuid) -> Option<Item> {
        let item = self.items.remove(&id)?;
        match item.place {
            Place::Ready(lane) => {
                if let Some(set) = self.lanes.get_mut(&lane)
                    && set.remove(&key(&item.entry))
                {
                    self.ready = self.ready.saturating_sub(1);
                }
            }
            Place::Waiting(at) => {
                self.waiting.remove(&(at, id));
            }
        }
        if let Some(at) = item.entry.expires_at {
            self.expiries.remove(&(at, id));
        }
        Some(item)
    }

    /// Moves a due message to another lane (its recipient's sticky modem changed since it was queued).
    pub fn relane(&mut self, id: Uuid, lane: Lane) {
        let Some(item) = self.items.get_mut(&id) else {
            return;
        };
        if let Place::Ready(old) = item.place {
            let k = key(&item.entry);
            if let Some(set) = self.lanes.get_mut(&old) {
                set.remove(&k);
            }
            self.lanes.entry(lane).or_default().insert(k);
            item.place = Place::Ready(lane);
        }
    }

    /// Messages whose time has come, for the caller to place in lanes.
    pub fn take_due(&mut self, now: Timestamp) -> Vec<Item> {
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.waiting.first() {
            if at > now {
                break;
            }
            if let Some(item) = self.remove(id) {
                due.push(item);
            }
        }
        due
    }

    /// Removes and returns messages whose `expires_at` has passed.
    pub fn take_expired(&mut self, now: Timestamp) -> Vec<Uuid> {
        let mut expired = Vec::new();
        while let Some(&(at, id)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.remove(id);
            expired.push(id);
        }
        expired
    }

    /// When the next waiting message becomes due or the next one expires.
    pub fn next_wake(&self) -> Option<Timestamp> {
        let waiting = self.waiting.first().map(|&(at, _)| at);
        let expiry = self.expiries.first().map(|&(at, _)| at);
        waiting.into_iter().chain(expiry).min()
    }

    pub fn has_ready(&self) -> bool {
        self.lanes.values().any(|set| !set.is_empty())
    }

    /// The best due message of a lane with at most `parts` parts (`None`: any size). A bound is given
    /// only for a modem near its daily cap, so the walk past bigger messages is rare and short-lived.
    pub fn head(&self, lane: Lane, parts: Option<u16>) -> Option<Key> {
        let set = self.lanes.get(&lane)?;
        match parts {
            None => set.first().copied(),
            Some(room) => set
                .iter()
                .find(|(_, id)| {
                    self.items
                        .get(id)
                        .is_some_and(|item| item.entry.parts <= room)
                })
                .copied(),
        }
    }
}
