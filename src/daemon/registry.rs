//! The running modems as the API sees them: live health read from each worker's watch channel (never a
//! copy that could go stale) and the admin's pause switch.

use std::sync::RwLock;

use crate::api::gateway::ModemControl;
use crate::modem::WorkerHandle;
use crate::modem::job::{ModemHealth, ModemId};

#[derive(Default)]
pub struct Modems {
    /// In config order. A `std::sync::RwLock`: every access is a short copy with no `.await`, and a reload
    /// replaces the list while requests read it.
    entries: RwLock<Vec<(ModemId, WorkerHandle)>>,
}

impl Modems {
    pub fn replace(&self, entries: Vec<(ModemId, WorkerHandle)>) {
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = entries;
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&WorkerHandle) -> T) -> Option<T> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .find(|(entry, _)| &**entry == id)
            .map(|(_, handle)| f(handle))
    }
}

impl ModemControl for Modems {
    fn health(&self) -> Vec<(String, ModemHealth)> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .map(|(id, handle)| (id.to_string(), handle.shown_health()))
            .collect()
    }

    fn set_paused(&self, id: &str, paused: bool) -> bool {
        self.with(id, |handle| {
            if paused {
                handle.pause();
            } else {
                handle.resume();
            }
        })
        .is_some()
    }
}
