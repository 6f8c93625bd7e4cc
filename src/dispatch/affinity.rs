//! Sticky sender: a recipient keeps hearing from the same modem, so replies thread on their phone and the
//! conversation stays on one number.
//!
//! Nothing here grows with the number of recipients ever texted: entries loaded from the store carry their
//! recipient's last modem (the store looks it up as it pages them in), and only sends made since the
//! dispatcher started are remembered, in a bounded map that forgets the least recently texted.

use std::collections::HashMap;

use crate::modem::job::ModemId;
use crate::store::QueueEntry;

use super::queue::Lane;
use super::recent::Recent;

/// Recipients whose latest send since start is remembered. An entry loaded before its recipient was
/// texted again and forgotten here falls back to the modem the store knew at load time.
const REMEMBERED: usize = 65_536;

pub(crate) struct Affinity {
    enabled: bool,
    /// Configured modems by id, to their position.
    index: HashMap<String, usize>,
    /// The modem each recently texted recipient last heard from.
    last: Recent<String, usize>,
}

impl Affinity {
    pub fn new(enabled: bool, modems: impl Iterator<Item = ModemId>) -> Self {
        let index: HashMap<String, usize> = modems
            .enumerate()
            .map(|(i, id)| (id.to_string(), i))
            .collect();
        Affinity {
            enabled,
            index,
            last: Recent::new(REMEMBERED),
        }
    }

    /// A configured modem's position; recipients of modems no longer configured may go anywhere.
    pub fn modem(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Whether a sticky modem must be looked up in the store for `recipient`.
    pub fn wants_history(&self, recipient: &str) -> bool {
        self.enabled && self.last.get(recipient).is_none()
    }

    /// Where a due message may go: the modem holding its first parts, any but the one that just failed it,
    /// its recipient's modem (texted since start, else `history` from the store), or anywhere.
    pub fn lane(&self, entry: &QueueEntry, avoid: Option<usize>, history: Option<usize>) -> Lane {
        if let Some(pinned) = entry.pinned_modem.as_deref().and_then(|id| self.modem(id)) {
            return Lane::Pinned(pinned);
        }
        if let Some(avoid) = avoid {
            return Lane::Avoid(avoid);
        }
        match self.last.get(entry.to.as_str()).or(history) {
            Some(modem) if self.enabled => Lane::Sticky(modem),
            _ => Lane::Any,
        }
    }

    /// Takes over what a dispatcher replaced at a reload remembered, for the modems still configured.
    pub fn inherit(&mut self, old: Affinity) {
        if !self.enabled {
            return;
        }
        let mut ids = vec![None; old.index.len()];
        for (id, position) in &old.index {
            if let Some(slot) = ids.get_mut(*position) {
                *slot = self.modem(id);
            }
        }
        for (recipient, position) in old.last.into_entries() {
            if let Some(&Some(modem)) = ids.get(position) {
                self.last.insert(recipient, modem);
            }
        }
    }

    /// `recipient` was just handed to `modem`.
    pub fn sent(&mut self, recipient: &str, modem: usize) {
        if self.enabled {
            self.last.insert(recipient.to_owned(), modem);
        }
    }
}
