//! The set of opted-out numbers, held in memory so the gate can consult it synchronously at every hand-off,
//! and written through to the store (with its audit trail) on every change.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use tokio::sync::watch;
use uuid::Uuid;

pub use crate::store::OptOutSource;
use crate::store::{OptOutChange, OptOutRecord, Store, StoreError};

/// Where a change came from, for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Origin<'a> {
    /// `rules` for replies, `api:KEY` for the API.
    pub actor: &'a str,
    /// The inbound message that caused it.
    pub message_id: Option<Uuid>,
    /// The modem that message came in on.
    pub modem: Option<&'a str>,
    /// The keyword, the reviewed text, an admin's note.
    pub detail: Option<String>,
}

/// The opted-out numbers (E.164). Shared through an `Arc` by the gate, the API and the inbound rules.
pub struct OptOuts {
    store: Store,
    /// Each with how it came about. A std lock, not an async one: `contains` runs on the dispatcher's task
    /// and must not await; writers hold it only to insert or remove one number.
    numbers: RwLock<HashMap<String, Suppressed>>,
    /// How many numbers are [`Suppressed::Held`]: an admin's sign that opt-outs are enforced from memory
    /// alone, with nothing on record yet (`/metrics`), and a test's to wait for a hold.
    held: watch::Sender<usize>,
}

/// Why a number is suppressed.
#[derive(Debug, Clone, Copy)]
enum Suppressed {
    /// An opt-out on record.
    Recorded(OptOutSource),
    /// In memory only, as the source would have it: no opt-out is on record yet, so the next
    /// [`OptOuts::add`] for the number writes one rather than being turned away as a repeat. Through
    /// [`OptOuts::hold`] (a reply the store refused, as a reply under review) or an `add` whose write
    /// failed.
    Held(OptOutSource),
}

impl Suppressed {
    fn source(self) -> OptOutSource {
        match self {
            Suppressed::Recorded(source) | Suppressed::Held(source) => source,
        }
    }
}

impl OptOuts {
    /// Loads every active opt-out from the store.
    pub async fn load(store: &Store) -> Result<OptOuts, StoreError> {
        let numbers = store
            .optouts()
            .await?
            .into_iter()
            // A source this build does not know is kept as the strictest: lifted only through the API.
            .map(|r| {
                let source = r.source.unwrap_or(OptOutSource::Api);
                (r.number, Suppressed::Recorded(source))
            })
            .collect();
        Ok(OptOuts {
            store: store.clone(),
            numbers: RwLock::new(numbers),
            held: watch::Sender::new(0),
        })
    }

    /// How many numbers are suppressed with no opt-out on record: held for a reply the store refused
    /// ([`OptOuts::hold`]), or left so by an [`OptOuts::add`] whose write failed.
    pub fn unrecorded(&self) -> usize {
        *self.held.borrow()
    }

    /// Waits until the count of [`OptOuts::unrecorded`] numbers satisfies `until`, and returns it.
    pub async fn unrecorded_until(&self, until: impl Fn(usize) -> bool) -> usize {
        let mut held = self.held.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        held.wait_for(|n| until(*n)).await.map_or(0, |n| *n)
    }

    /// Counts a number that became held (`+1`) or stopped being held (`-1`).
    fn count_held(&self, change: isize) {
        self.held
            .send_modify(|n| *n = n.saturating_add_signed(change));
    }

    pub fn contains(&self, number: &str) -> bool {
        self.numbers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(number)
    }

    /// How `number`'s opt-out came about, if it is opted out.
    pub fn source(&self, number: &str) -> Option<OptOutSource> {
        self.numbers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(number)
            .map(|suppressed| suppressed.source())
    }

    /// Records an opt-out; returns whether it is new. A number already opted out keeps its original
    /// record (when, which message, which modem), unless the new one is firmer: a STOP replaces a reply
    /// under review, and the agency's opt-out replaces either. The number is suppressed in memory before
    /// the store is written, so no hand-off slips through while the write is in flight. If the write
    /// fails it stays suppressed until restart, and when nothing was on record before it is held
    /// (counted in [`OptOuts::unrecorded`]): the next `add` for it writes it.
    pub async fn add(
        &self,
        number: &str,
        source: OptOutSource,
        origin: Origin<'_>,
    ) -> Result<bool, StoreError> {
        let before = {
            let mut numbers = self.numbers.write().unwrap_or_else(PoisonError::into_inner);
            let before = numbers.get(number).copied();
            match before {
                // Not on record: this is the opt-out the hold stood in for.
                Some(Suppressed::Held(_)) => self.count_held(-1),
                // A reply under review confirmed by a STOP (or by the agency) becomes that opt-out: the
                // messages it only held fail now. An agency's opt-out (a cease-communication letter)
                // replaces a STOP too, so that a START can no longer lift it.
                Some(Suppressed::Recorded(existing)) if outranks(source, existing) => {}
                Some(Suppressed::Recorded(_)) => return Ok(false),
                None => {}
            }
            numbers.insert(number.to_owned(), Suppressed::Recorded(source));
            before
        };
        let written = self
            .store
            .set_optout(OptOutChange {
                number: number.to_owned(),
                opted_out: Some(source),
                actor: origin.actor.to_owned(),
                source_message: origin.message_id,
                modem: origin.modem.map(str::to_owned),
                detail: origin.detail,
            })
            .await;
        if written.is_err() && !matches!(before, Some(Suppressed::Recorded(_))) {
            let mut numbers = self.numbers.write().unwrap_or_else(PoisonError::into_inner);
            // Unless something changed it meanwhile (a removal, another source).
            if let Some(entry @ Suppressed::Recorded(_)) = numbers.get_mut(number)
                && entry.source() == source
            {
                *entry = Suppressed::Held(source);
                self.count_held(1);
            }
        }
        written?;
        Ok(true)
    }

    /// Suppresses `number` in memory only, as a reply under review would: for a reply that reads as an
    /// opt-out but could not be stored (a full disk). It stays on the SIM, is read again and recorded once
    /// the store takes writes (as a STOP or as a reply under review, either replacing the hold); until then
    /// nothing goes to the number. Returns whether it was not suppressed already.
    pub fn hold(&self, number: &str) -> bool {
        let mut numbers = self.numbers.write().unwrap_or_else(PoisonError::into_inner);
        if numbers.contains_key(number) {
            return false;
        }
        numbers.insert(number.to_owned(), Suppressed::Held(OptOutSource::Review));
        self.count_held(1);
        true
    }

    /// Records an opt-in (consent given again, or an admin's removal); returns whether the number was
    /// opted out. It stays suppressed until the store has the change.
    pub async fn remove(&self, number: &str, origin: Origin<'_>) -> Result<bool, StoreError> {
        // Nothing to lift: no audit entry and no `optout.removed` for a change that did not happen.
        if !self.contains(number) {
            return Ok(false);
        }
        self.store
            .set_optout(OptOutChange {
                number: number.to_owned(),
                opted_out: None,
                actor: origin.actor.to_owned(),
                source_message: origin.message_id,
                modem: origin.modem.map(str::to_owned),
                detail: origin.detail,
            })
            .await?;
        let removed = self
            .numbers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(number);
        if let Some(Suppressed::Held(_)) = removed {
            self.count_held(-1);
        }
        Ok(true)
    }

    /// Every active opt-out with its latest audit entry (for the API's listing).
    pub async fn list(&self) -> Result<Vec<OptOutRecord>, StoreError> {
        self.store.optouts().await
    }
}

/// Whether an opt-out from `new` replaces one from `existing`: a reply under review is the weakest (a
/// person may lift it), a STOP is lifted by a START, and the agency's is lifted only by the agency.
fn outranks(new: OptOutSource, existing: OptOutSource) -> bool {
    let firmness = |source| match source {
        OptOutSource::Review => 0,
        OptOutSource::Keyword => 1,
        OptOutSource::Api => 2,
    };
    firmness(new) > firmness(existing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ManualClock, OpenOptions};
    use std::sync::Arc;

    /// A reply under review, then a STOP: the opt-out becomes the keyword's (stored, so a reload keeps
    /// it); a further review or STOP changes nothing.
    #[tokio::test]
    async fn a_stop_after_a_reply_under_review_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db"), OpenOptions::default()).unwrap();
        let optouts = OptOuts::load(&store).await.unwrap();
        let number = "+14155550100";
        let rules = || Origin {
            actor: "rules",
            ..Origin::default()
        };
        for (source, new) in [
            (OptOutSource::Review, true),
            (OptOutSource::Review, false),
            (OptOutSource::Keyword, true),
            (OptOutSource::Review, false),
            (OptOutSource::Keyword, false),
        ] {
            let added = optouts.add(number, source, rules()).await.unwrap();
            assert_eq!(added, new, "{source:?}");
        }
        assert_eq!(optouts.source(number), Some(OptOutSource::Keyword));
        let reloaded = OptOuts::load(&store).await.unwrap();
        assert_eq!(reloaded.source(number), Some(OptOutSource::Keyword));
        // A cease-communication letter after the STOP: the agency's opt-out, which no START lifts.
        let api = || Origin {
            actor: "api:ops",
            detail: Some("cease letter".into()),
            ..Origin::default()
        };
        assert!(optouts.add(number, OptOutSource::Api, api()).await.unwrap());
        assert!(
            !optouts
                .add(number, OptOutSource::Keyword, rules())
                .await
                .unwrap()
        );
        assert!(!optouts.add(number, OptOutSource::Api, api()).await.unwrap());
        let reloaded = OptOuts::load(&store).await.unwrap();
        assert_eq!(reloaded.source(number), Some(OptOutSource::Api));
        let listed = reloaded.list().await.unwrap();
        assert_eq!(listed[0].detail.as_deref(), Some("cease letter"));
    }

    /// A reply held in memory because the store refused it ([`OptOuts::hold`]) is recorded when it is read
    /// again, even as a reply under review, which the hold itself looks like: else the number would be
    /// suppressed only until the next restart, with no audit entry.
    #[tokio::test]
    async fn a_held_reply_is_recorded_when_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db"), OpenOptions::default()).unwrap();
        let optouts = OptOuts::load(&store).await.unwrap();
        let rules = || Origin {
            actor: "rules",
            detail: Some("please stop texting me".into()),
            ..Origin::default()
        };
        for source in [OptOutSource::Review, OptOutSource::Keyword] {
            let number = match source {
                OptOutSource::Review => "+14155550100",
                _ => "+14155550101",
            };
            assert!(optouts.hold(number));
            assert!(!optouts.hold(number), "held twice");
            assert!(optouts.contains(number));
            assert_eq!(optouts.unrecorded(), 1);
            assert!(optouts.add(number, source, rules()).await.unwrap());
            assert_eq!(optouts.unrecorded(), 0);
            assert!(!optouts.add(number, source, rules()).await.unwrap());
            let reloaded = OptOuts::load(&store).await.unwrap();
            assert_eq!(reloaded.source(number), Some(source), "{source:?}");
        }
        // Lifted while held (an admin's removal): nothing of the hold is left to record later.
        assert!(optouts.hold("+14155550102"));
        assert!(optouts.remove("+14155550102", rules()).await.unwrap());
        assert!(!optouts.contains("+14155550102"));
        assert_eq!(optouts.unrecorded(), 0);
        assert!(optouts.hold("+14155550102"));
        assert_eq!(optouts.unrecorded_until(|n| n == 1).await, 1);
    }

    /// An opt-out the store refused stays suppressed and is held, not taken for recorded: the next
    /// request for it writes it instead of being turned away as a repeat.
    #[tokio::test]
    async fn an_opt_out_the_store_refused_is_written_by_the_next_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path, OpenOptions::default()).unwrap();
        let optouts = OptOuts::load(&store).await.unwrap();
        let beside = rusqlite::Connection::open(&path).unwrap();
        beside
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON optouts \
                 BEGIN SELECT RAISE(ABORT, 'no space left'); END;",
            )
            .unwrap();
        let stop = || Origin {
            actor: "rules",
            detail: Some("STOP".into()),
            ..Origin::default()
        };
        let number = "+14155550100";
        assert!(
            optouts
                .add(number, OptOutSource::Keyword, stop())
                .await
                .is_err()
        );
        assert!(optouts.contains(number));
        assert_eq!(optouts.source(number), Some(OptOutSource::Keyword));
        assert_eq!(optouts.unrecorded(), 1);
        beside.execute_batch("DROP TRIGGER refuse;").unwrap();
        assert!(
            optouts
                .add(number, OptOutSource::Keyword, stop())
                .await
                .unwrap()
        );
        assert_eq!(optouts.unrecorded(), 0);
        let reloaded = OptOuts::load(&store).await.unwrap();
        assert_eq!(reloaded.source(number), Some(OptOutSource::Keyword));
    }

    #[tokio::test]
    async fn changes_are_written_through_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new("2026-06-10T12:00:00Z".parse().unwrap());
        let options = OpenOptions {
            clock: Arc::new(clock.clone()),
            ..OpenOptions::default()
        };
        let store = Store::open(dir.path().join("db"), options).unwrap();
        let optouts = OptOuts::load(&store).await.unwrap();
        let rules = |detail: &str| Origin {
            actor: "rules",
            message_id: None,
            modem: Some("m1"),
            detail: Some(detail.into()),
        };
        assert!(!optouts.contains("+14155550100"));
        assert!(
            optouts
                .add("+14155550100", OptOutSource::Keyword, rules("stop"))
                .await
                .unwrap()
        );
        assert!(
            !optouts
                .add("+14155550100", OptOutSource::Keyword, rules("stop"))
                .await
                .unwrap()
        );
        optouts
            .add(
                "+14155550101",
                OptOutSource::Api,
                Origin {
                    actor: "api:ops",
                    ..Origin::default()
                },
            )
            .await
            .unwrap();
        assert!(optouts.contains("+14155550100"));
        assert!(store.is_opted_out("+14155550100").await.unwrap());

        let reloaded = OptOuts::load(&store).await.unwrap();
        assert!(reloaded.contains("+14155550100") && reloaded.contains("+14155550101"));
        assert!(
            reloaded
                .remove("+14155550101", rules("start"))
                .await
                .unwrap()
        );
        assert!(!reloaded.contains("+14155550101"));
        let listed = reloaded.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].number, "+14155550100");
        assert_eq!(listed[0].actor, "rules");
        assert_eq!(listed[0].detail.as_deref(), Some("stop"));
        assert_eq!(listed[0].modem.as_deref(), Some("m1"));
    }
}
