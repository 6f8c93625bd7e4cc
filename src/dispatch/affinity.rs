//! Sticky sender: a recipient keeps hearing from the same modem, so replies thread on their phone and the
//! conversation stays on one number.

use std::collections::HashMap;

use crate::modem::job::ModemId;
use crate::store::QueueEntry;

use super::queue::Lane;

pub(crate) struct Affinity {
    enabled: bool,
    /// Configured modems by id, to their position.
    index: HashMap<String, usize>,
    /// The modem each recipient last heard from.
    last: HashMap<String, usize>,
}

impl Affinity {
    /// `history` is the store's recipient → modem id map; recipients of modems no longer configured are
    /// free to go anywhere.
    pub fn new(
        enabled: bool,
        modems: impl Iterator<Item = ModemId>,
        history: HashMap<String, String>,
    ) -> Self {
        let index: HashMap<String, usize> = modems
            .enumerate()
            .map(|(i, id)| (id.to_string(), i))
            .collect();
        let last = history
            .into_iter()
            .filter_map(|(recipient, modem)| index.get(&modem).map(|&i| (recipient, i)))
            .collect();
        Affinity {
            enabled,
            index,
            last,
        }
    }

    /// Where a due message may go: the modem holding its first parts, any but the one that just failed it,
    /// its recipient's modem, or anywhere.
    pub fn lane(&self, entry: &QueueEntry, avoid: Option<usize>) -> Lane {
        if let Some(pinned) = entry
            .pinned_modem
            .as_deref()
            .and_then(|id| self.index.get(id))
        {
            return Lane::Pinned(*pinned);
        }
        if let Some(avoid) = avoid {
            return Lane::Avoid(avoid);
        }
        match self.last.get(&entry.to) {
            Some(&modem) if self.enabled => Lane::Sticky(modem),
            _ => Lane::Any,
        }
    }

    /// `recipient` was just handed to `modem`.
    pub fn sent(&mut self, recipient: &str, modem: usize) {
        if self.enabled {
            self.last.insert(recipient.to_owned(), modem);
        }
    }
}
