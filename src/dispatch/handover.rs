//! Hand-over at a configuration reload: the dispatcher a reload replaces passes its jobs in flight and
//! what it counted to the one that replaces it, so no modem waits for another's send to finish before
//! new work is handed out.
//!
//! Jobs in flight are told apart by their modem's job channel, not its id or position: a modem re-opened
//! under the same id (another device, baud or PIN) is a new channel, and a job of the old one landing
//! later must not free a pipeline slot of the new one.

use std::collections::HashSet;

use futures_util::stream::FuturesUnordered;
use jiff::Timestamp;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::actor::{Dispatcher, Flight, Landing, Modem};
use super::affinity::Affinity;
use super::limits::Limiter;
use crate::modem::job::{JobOutcome, ModemId, SendJob};

/// What a replaced dispatcher leaves to its successor; opaque outside the dispatcher.
pub struct Inheritance {
    flights: FuturesUnordered<Landing>,
    flying: HashSet<Uuid>,
    unsettled: Vec<(Timestamp, Flight, Option<JobOutcome>)>,
    modems: Vec<Carried>,
    global: Option<Limiter>,
    affinity: Affinity,
    /// The end of the cap day its counts are for.
    day_ends: Timestamp,
}

/// One modem as the replaced dispatcher counted it.
struct Carried {
    id: ModemId,
    channel: mpsc::WeakSender<SendJob>,
    in_flight: usize,
    counted_sim: Option<String>,
    sent_today: u32,
    closed_today: bool,
    limiter: Limiter,
}

impl Dispatcher {
    /// Everything the successor needs; the in-memory queue is not among it (the store holds it, and the
    /// successor loads its head as any new dispatcher does).
    pub(super) fn bequest(self) -> Inheritance {
        Inheritance {
            flights: self.flights,
            flying: self.flying,
            unsettled: self.unsettled,
            modems: self
                .modems
                .into_iter()
                .map(|modem| Carried {
                    id: modem.id,
                    channel: modem.jobs.downgrade(),
                    in_flight: modem.in_flight,
                    counted_sim: modem.counted_sim,
                    sent_today: modem.sent_today,
                    closed_today: modem.closed_today,
                    limiter: modem.limiter,
                })
                .collect(),
            global: self.global,
            affinity: self.affinity,
            day_ends: self.day_ends,
        }
    }

    /// Takes over a replaced dispatcher's jobs in flight and, for each modem it keeps, its count of jobs
    /// in flight, today's sends (while the SIM is the same) and the pace its rate limiter set, so a reload
    /// neither overfills a modem nor grants it a fresh burst.
    pub(super) fn inherit(&mut self, old: Inheritance) {
        self.flights = old.flights;
        self.flying = old.flying;
        self.unsettled = old.unsettled;
        self.affinity.inherit(old.affinity);
        if let (Some(global), Some(old_global)) = (&mut self.global, old.global) {
            global.take_over(old_global);
        }
        let same_day = old.day_ends == self.day_ends;
        let mut reopened = Vec::new();
        for carried in old.modems {
            match self
                .modems
                .iter_mut()
                .find(|m| is_channel_of(&carried.channel, &m.jobs))
            {
                Some(modem) => modem.take_over(carried, same_day),
                None => reopened.push(carried),
            }
        }
        // A modem re-opened under the same id (another device, baud or PIN) is a new channel with nothing
        // in flight on it, but most likely the same SIM: it keeps the pace its last sends set.
        for carried in reopened {
            if let Some(modem) = self.modems.iter_mut().find(|m| m.id == carried.id) {
                modem.limiter.take_over(carried.limiter);
            }
        }
    }
}

impl Modem {
    fn take_over(&mut self, carried: Carried, same_day: bool) {
        self.in_flight = carried.in_flight;
        if same_day && carried.counted_sim == self.counted_sim {
            // The store learns of a part only once sent: the old count also holds the parts in flight.
            self.sent_today = carried.sent_today;
            self.closed_today = carried.closed_today;
        }
        // Its `paced_until` is not carried: the limiter answers the next request, at the new rate if the
        // rate changed.
        self.limiter.take_over(carried.limiter);
    }
}

/// Whether a job channel remembered weakly is `jobs` (a modem the dispatcher has now).
pub(super) fn is_channel_of(
    channel: &mpsc::WeakSender<SendJob>,
    jobs: &mpsc::Sender<SendJob>,
) -> bool {
    channel
        .upgrade()
        .is_some_and(|channel| channel.same_channel(jobs))
}
