//! The running modems as the API sees them: live health read from each worker's watch channel (never a
//! copy that could go stale), the admin's pause switch, and each one's daily cap from the config.

use std::num::NonZeroU32;
use std::sync::RwLock;

use super::modems::ModemRuntime;
use crate::api::gateway::{LiveModem, ModemControl};
use crate::modem::WorkerHandle;
use crate::modem::job::ModemId;

struct Entry {
    id: ModemId,
    handle: WorkerHandle,
    daily_cap: Option<NonZeroU32>,
}

#[derive(Default)]
pub struct Modems {
    /// In config order. A `std::sync::RwLock`: every access is a short copy with no `.await`, and a reload
    /// replaces the list while requests read it.
    entries: RwLock<Vec<Entry>>,
}

impl Modems {
    /// The modems running now (at start, and after each reload).
    pub fn replace(&self, runtimes: &[ModemRuntime]) {
        let entries = runtimes
            .iter()
            .map(|r| Entry {
                id: r.id.clone(),
                handle: r.handle.clone(),
                daily_cap: r.config.daily_cap,
            })
            .collect();
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = entries;
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&WorkerHandle) -> T) -> Option<T> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .find(|entry| &*entry.id == id)
            .map(|entry| f(&entry.handle))
    }
}

impl ModemControl for Modems {
    fn modems(&self) -> Vec<LiveModem> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .map(|entry| LiveModem {
                id: entry.id.to_string(),
                health: entry.handle.shown_health(),
                daily_cap: entry.daily_cap,
            })
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
