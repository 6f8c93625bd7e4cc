//! The dispatcher task: owns the in-memory queue, the modems' limits and counts, and the jobs in flight,
//! and reacts to whatever happens first (a command, a finished job, a modem change, a timer).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use jiff::Timestamp;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::affinity::Affinity;
use super::gate::{Decision, Gate};
use super::handover::is_channel_of;
use super::limits::{Limiter, after};
use super::queue::{Lane, NewItem};
use super::window::Window;
use super::{Command, Settings};
use crate::modem::job::{JobOutcome, JobPart, ModemHealth, ModemId, SendError, SendJob};
use crate::store::{
    Clock, DailyCounts, Handback, MessageState, PartFailure, QueueEntry, Requeued, Store,
    StoreError,
};

pub(super) struct Modem {
    pub(super) id: ModemId,
    pub(super) jobs: mpsc::Sender<SendJob>,
    pub(super) ready: watch::Receiver<bool>,
    /// The worker's health, for the SIM it reports.
    pub(super) health: watch::Receiver<ModemHealth>,
    /// The SIM `sent_today` counts for (`None`: the one the store saw last in it).
    pub(super) counted_sim: Option<String>,
    pub(super) limiter: Limiter,
    pub(super) cap: Option<u32>,
    /// Parts handed to it today (from the store at start, then counted at hand-off).
    pub(super) sent_today: u32,
    /// No message it may take fits in what is left of its cap today: closed (its sticky recipients go
    /// elsewhere) until a message that fits comes, the next cap day, or another SIM. Smaller messages use
    /// up the rest; parts no message fits are given up rather than let one overshoot the cap.
    pub(super) closed_today: bool,
    /// Jobs handed over and not finished.
    pub(super) in_flight: usize,
    /// Its rate limit refused a permit until then.
    pub(super) paced_until: Option<Timestamp>,
}

impl Modem {
    fn online(&self) -> bool {
        *self.ready.borrow() && !self.jobs.is_closed()
    }

    fn under_cap(&self) -> bool {
        !self.closed_today && self.cap.is_none_or(|cap| self.sent_today < cap)
    }

    /// Takes today's count for the SIM it holds from the store's (`daily_sent`); reopens it.
    fn recount(&mut self, counts: &DailyCounts) {
        self.sent_today = counts.of(&self.id, self.counted_sim.as_deref());
        self.closed_today = false;
    }

    /// The ICCID its worker reports now, when it is not the one `sent_today` counts for. Runs at every
    /// turn of the dispatcher's loop, so it clones only on a change.
    fn swapped_sim(&self) -> Option<String> {
        let health = self.health.borrow();
        health
            .identity
            .iccid
            .as_ref()
            .filter(|&sim| self.counted_sim.as_ref() != Some(sim))
            .cloned()
    }

    /// The most parts it may still send today (`None`: no cap).
    fn room(&self) -> Option<u16> {
        self.cap
            .map(|cap| u16::try_from(cap.saturating_sub(self.sent_today)).unwrap_or(u16::MAX))
    }

    /// Whether it can send at all now; if not, messages sticky to it may fall back to another modem.
    fn usable(&self) -> bool {
        self.online() && self.under_cap()
    }

    fn why_unusable(&self) -> &'static str {
        if !self.online() {
            "offline"
        } else {
            "daily cap reached"
        }
    }
}

/// How long to wait before trying a failed store read or write again.
pub(super) const STORE_RETRY: Duration = Duration::from_secs(5);

/// A job handed to a modem, and what to remember to handle its outcome.
pub(super) struct Flight {
    entry: QueueEntry,
    modem: ModemId,
    /// The modem's job channel: which of the dispatcher's modems it is, if any still is (see `handover`).
    channel: mpsc::WeakSender<SendJob>,
    first_part: u16,
}

pub(super) type Landing = Pin<Box<dyn Future<Output = (Flight, Option<JobOutcome>)> + Send>>;

pub(super) struct Dispatcher {
    pub(super) store: Store,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) gate: Arc<dyn Gate>,
    pub(super) settings: Settings,
    pub(super) modems: Vec<Modem>,
    pub(super) global: Option<Limiter>,
    pub(super) global_paced_until: Option<Timestamp>,
    pub(super) affinity: Affinity,
    /// The head of the queue; the rest is paged in from the store (`paging`).
    pub(super) window: Window,
    pub(super) flights: FuturesUnordered<Landing>,
    /// Messages of the jobs in flight: never loaded from the store again while they fly.
    pub(super) flying: HashSet<Uuid>,
    /// Reload the window's heads from the store at this time: a handle was rebound to this dispatcher
    /// (messages accepted meanwhile were announced to no one), or memory let go of a message the store
    /// could not take a write for (it is still pending there, before the due edge, where paging does not
    /// look again).
    pub(super) rescan_at: Option<Timestamp>,
    /// Job outcomes the store could not record (unavailable), to record again then. Their messages stay
    /// `sending` in the store, where no page finds them: memory is all that brings them back before a
    /// restart (whose recovery settles them otherwise: never sent, back to the queue; maybe sent, unknown).
    pub(super) unsettled: Vec<(Timestamp, Flight, Option<JobOutcome>)>,
    /// When to next expire overdue messages the window does not hold.
    pub(super) next_sweep: Timestamp,
    /// A page could not be read: try again then.
    pub(super) paging_paused_until: Option<Timestamp>,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    /// `false` once every handle is dropped (the channel would otherwise report closed forever).
    pub(super) commands_open: bool,
    pub(super) readiness: mpsc::UnboundedReceiver<usize>,
    /// Forward each modem's readiness changes; aborted when the dispatcher ends.
    pub(super) _watchers: JoinSet<()>,
    pub(super) shutdown: CancellationToken,
    pub(super) stopping: bool,
    /// When the daily cap counts reset.
    pub(super) day_ends: Timestamp,
    pub(super) flushes: Vec<oneshot::Sender<()>>,
    /// A reload asked this dispatcher to hand over: it stops at the top of its next turn.
    pub(super) successor: Option<oneshot::Sender<super::Inheritance>>,
}

impl Dispatcher {
    pub(super) async fn run(mut self) {
        loop {
            if let Some(successor) = self.successor.take() {
                tracing::info!(
                    in_flight = self.flights.len(),
                    "dispatcher handing over to its successor"
                );
                for flush in self.flushes.drain(..) {
                    let _ = flush.send(());
                }
                let _ = successor.send(self.bequest());
                return;
            }
            let now = self.clock.now();
            self.new_day(now).await;
            self.follow_sims(now).await;
            self.settle_again(now).await;
            self.expire(now).await;
            self.release_due(now);
            if !self.stopping {
                self.page_in(now).await;
                self.hand_out(now).await;
            }
            for flush in self.flushes.drain(..) {
                let _ = flush.send(());
            }
            if self.stopping && self.flights.is_empty() {
                break;
            }
            let sleep: Pin<Box<dyn Future<Output = ()> + Send>> = match self.next_wake(now) {
                Some(at) => self.clock.sleep_until(at),
                None => Box::pin(std::future::pending()),
            };
            tokio::select! {
                biased;
                Some((flight, outcome)) = self.flights.next(), if !self.flights.is_empty() => {
                    self.landed(flight, outcome).await;
                }
                _ = self.shutdown.cancelled(), if !self.stopping => {
                    tracing::info!(in_flight = self.flights.len(), "dispatcher stopping");
                    self.stopping = true;
                }
                command = self.commands.recv(), if self.commands_open => match command {
                    Some(command) => {
                        // Take every command already waiting, so a burst of new messages is indexed
                        // before any of it is handed out (priorities hold, `more_waiting` is right).
                        let mut burst = vec![command];
                        while let Ok(command) = self.commands.try_recv() {
                            burst.push(command);
                        }
                        self.commands(burst).await;
                    }
                    None => self.commands_open = false,
                },
                // A modem that comes back may take work (and may hold another SIM: `follow_sims`).
                Some(_) = self.readiness.recv() => {}
                () = sleep => {}
            }
        }
        tracing::info!("dispatcher stopped");
    }

    async fn commands(&mut self, burst: Vec<Command>) {
        let now = self.clock.now();
        let history = self.new_entries_history(&burst, now).await;
        for command in burst {
            match command {
                Command::Enqueue(entry) => {
                    // Already known (paged in meanwhile, or in flight): memory is the fresher.
                    if !self.known(entry.id) {
                        let history = history.get(&entry.to).and_then(|m| self.affinity.modem(m));
                        self.enqueue(entry, None, history, now);
                    }
                }
                Command::Forget(id) => {
                    self.window.queue.remove(id);
                }
                Command::Rescan => self.rescan_at = Some(now),
                Command::Flush(done) => self.flushes.push(done),
                Command::HandOver(successor) => self.successor = Some(successor),
            }
        }
    }

    pub(super) fn known(&self, id: Uuid) -> bool {
        self.window.queue.get(id).is_some() || self.flying.contains(&id)
    }

    /// Puts a message in the window if it falls inside (returns whether it did); the store keeps it
    /// otherwise.
    pub(super) fn enqueue(
        &mut self,
        mut entry: QueueEntry,
        avoid: Option<usize>,
        history: Option<usize>,
        now: Timestamp,
    ) -> bool {
        if entry
            .pinned_modem
            .as_deref()
            .is_some_and(|id| self.affinity.modem(id).is_none())
        {
            // The modem that sent its first parts is no longer configured. A phone joins parts only from
            // one sender, so the rest from another number would never show: the whole message goes again
            // (the store sets its parts pending again when another modem claims it).
            entry.pinned_modem = None;
            entry.parts = entry.part_count;
        }
        let lane = self.affinity.lane(&entry, avoid, history);
        let due = entry.not_before.is_none_or(|at| at <= now);
        let parts = entry.parts;
        let item = NewItem {
            entry,
            avoid,
            history,
        };
        let held = self.window.insert(item, now, lane);
        if held && due {
            self.reopen_for(lane, parts);
        }
        held
    }

    /// A modem closed for want of a message small enough for the rest of its cap reopens for a due one of
    /// `parts` parts in `lane`, if it may take it.
    fn reopen_for(&mut self, lane: Lane, parts: u16) {
        for index in 0..self.modems.len() {
            let modem = &self.modems[index];
            if modem.closed_today
                && modem.room().is_some_and(|room| parts <= room)
                && self.lanes(index).contains(&lane)
            {
                self.modems[index].closed_today = false;
            }
        }
    }

    /// Memory let go of a pending message after a failed store write: the heads are read again once the
    /// store may be back, so it is found wherever it lies.
    pub(super) fn rescan_later(&mut self, now: Timestamp) {
        let at = after(now, STORE_RETRY);
        self.rescan_at = Some(self.rescan_at.map_or(at, |earlier| earlier.min(at)));
    }

    /// A modem reporting another SIM than the one its count is for (swapped while it was offline) takes
    /// that SIM's count from the store. The SIM is the worker's word, not the store's record of it, which
    /// the event hub may not have written yet when the modem is ready again. Parts in flight on it land
    /// first: the store has not counted them yet.
    async fn follow_sims(&mut self, now: Timestamp) {
        let swapped: Vec<(usize, String)> = self
            .modems
            .iter()
            .enumerate()
            .filter(|(_, modem)| modem.in_flight == 0)
            .filter_map(|(index, modem)| modem.swapped_sim().map(|sim| (index, sim)))
            .collect();
        if swapped.is_empty() {
            return;
        }
        match self.store.daily_sent(now).await {
            Ok(counts) => {
                for (index, sim) in swapped {
                    let modem = &mut self.modems[index];
                    modem.counted_sim = Some(sim);
                    modem.recount(&counts);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read daily counts; keeping the ones in memory")
            }
        }
    }

    /// A new cap day: reload the counts (the store's are the truth across restarts).
    async fn new_day(&mut self, now: Timestamp) {
        if now < self.day_ends {
            return;
        }
        match self.store.daily_sent(now).await {
            Ok(counts) => {
                for modem in &mut self.modems {
                    modem.recount(&counts);
                }
                self.day_ends = self.store.cap_day(now).ends;
            }
            Err(error) => {
                tracing::error!(%error, "cannot read daily counts; retrying in 5 s");
                self.day_ends = after(now, Duration::from_secs(5));
            }
        }
    }

    async fn expire(&mut self, now: Timestamp) {
        for id in self.window.queue.take_expired(now) {
            self.expire_one(id, now).await;
        }
    }

    /// Expires a message memory has let go of; if the store is unavailable, a rescan finds it again.
    pub(super) async fn expire_one(&mut self, id: Uuid, now: Timestamp) {
        if let Err(error) = self.store.expire(id).await {
            self.expire_failed(id, &error, now);
        }
    }

    pub(super) fn expire_failed(&mut self, id: Uuid, error: &StoreError, now: Timestamp) {
        tracing::warn!(%id, %error, "could not expire message");
        if error.is_unavailable() {
            self.rescan_later(now);
        }
    }

    /// Records again the outcomes the store could not take earlier, once their time has come.
    async fn settle_again(&mut self, now: Timestamp) {
        if self.unsettled.iter().all(|(at, ..)| *at > now) {
            return;
        }
        let (due, later) = std::mem::take(&mut self.unsettled)
            .into_iter()
            .partition(|(at, ..)| *at <= now);
        self.unsettled = later;
        for (_, flight, outcome) in due {
            self.settle(flight, outcome).await;
        }
    }

    fn release_due(&mut self, now: Timestamp) {
        for item in self.window.queue.take_due(now) {
            let mut entry = item.entry;
            entry.not_before = None;
            self.enqueue(entry, item.avoid, item.history, now);
        }
    }

    fn next_wake(&self, now: Timestamp) -> Option<Timestamp> {
        let mut wake = self.window.queue.next_wake();
        wake = wake.into_iter().chain(self.paging_wake()).min();
        if self.window.queue.has_ready() {
            let paced = self
                .modems
                .iter()
                .filter_map(|m| m.paced_until)
                .chain(self.global_paced_until)
                .filter(|&at| at > now);
            wake = wake.into_iter().chain(paced).min();
        }
        if self.modems.iter().any(|m| m.cap.is_some()) {
            wake = wake.into_iter().chain([self.day_ends]).min();
        }
        let unsettled = self.unsettled.iter().map(|(at, ..)| *at);
        wake.into_iter().chain(unsettled).min()
    }

    /// Gives each free modem one job per round, least busy first, round after round, until nothing more
    /// can go out now.
    async fn hand_out(&mut self, now: Timestamp) {
        let mut order: Vec<usize> = (0..self.modems.len()).collect();
        loop {
            let mut progressed = false;
            order.sort_by_key(|&i| self.modems[i].in_flight);
            for &modem in &order {
                if self.can_take(modem, now) && self.hand_one(modem, now).await {
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn can_take(&self, index: usize, now: Timestamp) -> bool {
        let modem = &self.modems[index];
        modem.usable()
            && modem.in_flight < self.settings.pipeline.get()
            && modem.paced_until.is_none_or(|at| at <= now)
            && self.global_paced_until.is_none_or(|at| at <= now)
    }

    /// The lanes `modem` takes from: its own, anyone's, those avoiding another modem, those sticky to a
    /// modem that cannot send now, and its own avoid lane when no other modem can send.
    fn lanes(&self, modem: usize) -> Vec<Lane> {
        let others_usable = self
            .modems
            .iter()
            .enumerate()
            .any(|(i, m)| i != modem && m.usable());
        let mut lanes = vec![Lane::Pinned(modem), Lane::Sticky(modem), Lane::Any];
        for (i, other) in self.modems.iter().enumerate() {
            if i != modem {
                lanes.push(Lane::Avoid(i));
                if !other.usable() {
                    lanes.push(Lane::Sticky(i));
                }
            }
        }
        if !others_usable {
            lanes.push(Lane::Avoid(modem));
        }
        lanes
    }

    /// The best due message `modem` may send of at most `room` parts (`None`: any size), and the lane it
    /// came from.
    fn pick(&mut self, modem: usize, room: Option<u16>) -> Option<(Uuid, Lane)> {
        let lanes = self.lanes(modem);
        loop {
            let (key, lane) = lanes
                .iter()
                .filter_map(|&lane| self.window.queue.head(lane, room).map(|key| (key, lane)))
                .min_by_key(|&(key, _)| key)?;
            let id = key.1;
            let item = self.window.queue.get(id)?;
            let wanted = self.affinity.lane(&item.entry, item.avoid, item.history);
            if wanted == lane {
                return Some((id, lane));
            }
            // The recipient got a sticky modem since this message was queued.
            self.window.queue.relane(id, wanted);
        }
    }

    /// Tries to hand one message to `modem`; `true` if something happened (sent, held, blocked, expired).
    async fn hand_one(&mut self, index: usize, now: Timestamp) -> bool {
        let room = self.modems[index].room();
        let Some((id, lane)) = self.pick(index, room) else {
            if room.is_some() && self.pick(index, None).is_some() {
                let modem = &mut self.modems[index];
                modem.closed_today = true;
                tracing::info!(modem = %modem.id, sent_today = modem.sent_today,
                    "daily cap too small for any message it may take: modem closed until the next cap day");
                return true;
            }
            return false;
        };
        let Some(item) = self.window.queue.get(id) else {
            return false;
        };
        let (entry, avoid, history) = (item.entry.clone(), item.avoid, item.history);
        if entry.expires_at.is_some_and(|at| at <= now) {
            self.window.queue.remove(id);
            self.expire_one(id, now).await;
            return true;
        }
        let modem_id = self.modems[index].id.clone();
        match self.gate.check(&entry, &modem_id, now) {
            Decision::Allow => {}
            Decision::Hold {
                until,
                reason,
                rule,
            } => {
                // A hold must end in the future, or the message would be judged again at once, forever.
                let until = until.max(after(now, Duration::from_secs(1)));
                let held = self.store.hold(id, until, &reason, rule.as_deref()).await;
                self.window.queue.remove(id);
                match held {
                    Ok(()) => {
                        let entry = QueueEntry {
                            not_before: Some(until),
                            ..entry
                        };
                        self.enqueue(entry, avoid, history, now);
                    }
                    Err(error) => self.store_failed(id, error, entry, avoid, history, now),
                }
                return true;
            }
            Decision::Block { code, reason, rule } => {
                self.window.queue.remove(id);
                if let Err(error) = self.store.block(id, &code, &reason, rule.as_deref()).await {
                    self.store_failed(id, error, entry, avoid, history, now);
                }
                return true;
            }
        }
        let cells = u32::from(entry.parts.max(1));
        if let Err(at) = self.modems[index].limiter.take(cells) {
            self.modems[index].paced_until = Some(at);
            return false;
        }
        // A modem permit taken just before the global limit refuses is lost: at worst that modem waits one
        // interval longer, never faster than its rate.
        if let Some(global) = &mut self.global
            && let Err(at) = global.take(cells)
        {
            self.global_paced_until = Some(at);
            return false;
        }
        self.window.queue.remove(id);
        let note = match lane {
            Lane::Sticky(sticky) if sticky != index => Some(format!(
                "fallback from sticky modem {}: {}",
                self.modems[sticky].id,
                self.modems[sticky].why_unusable()
            )),
            Lane::Avoid(failed) if failed == index => Some(format!(
                "retry on modem {}, which failed or could not take it before: no other could take it",
                self.modems[failed].id
            )),
            Lane::Avoid(failed) => Some(format!(
                "retry away from modem {}, which failed or could not take it",
                self.modems[failed].id
            )),
            _ => None,
        };
        let parts = match self.store.claim(id, &modem_id, note).await {
            Ok(parts) => parts,
            Err(error) => {
                self.store_failed(id, error, entry, avoid, history, now);
                return true;
            }
        };
        let Some(first_part) = parts.first().map(|p| p.part) else {
            tracing::warn!(%id, "claimed a message with no part left to send");
            return true;
        };
        let (done, landing) = oneshot::channel();
        let job = SendJob {
            message_id: id,
            recipient: entry.to.clone(),
            parts: parts
                .iter()
                .map(|p| JobPart {
                    part: p.part,
                    tpdu_length: p.tpdu_length,
                    pdu_hex: p.pdu_hex.clone(),
                })
                .collect(),
            more_waiting: self.window.queue.has_ready(),
            send_by: self.gate.send_by(&entry, now),
            done,
        };
        let modem = &mut self.modems[index];
        let flight = Flight {
            entry,
            modem: modem_id.clone(),
            channel: modem.jobs.downgrade(),
            first_part,
        };
        if let Err(error) = modem.jobs.try_send(job) {
            tracing::warn!(%id, modem = %modem_id, %error, "modem would not take the job");
            let outcome = match error {
                TrySendError::Full(_) => Some(JobOutcome::NotAttempted),
                TrySendError::Closed(_) => None,
            };
            self.settle(flight, outcome).await;
            return true;
        }
        modem.in_flight += 1;
        self.gate.handed_out(&flight.entry, now);
        self.flying.insert(id);
        modem.sent_today += parts.len() as u32;
        self.affinity.sent(&flight.entry.to, index);
        self.flights
            .push(Box::pin(async move { (flight, landing.await.ok()) }));
        true
    }

    /// A store write failed: drop the message if its state forbids the step (cancelled meanwhile...),
    /// else try again a little later.
    fn store_failed(
        &mut self,
        id: Uuid,
        error: StoreError,
        entry: QueueEntry,
        avoid: Option<usize>,
        history: Option<usize>,
        now: Timestamp,
    ) {
        if error.is_unavailable() {
            // The writer logs the store's failure itself; a line per message every 5 s would flood.
            tracing::debug!(%id, %error, "store unavailable; retrying the message later");
            let entry = QueueEntry {
                not_before: Some(after(now, STORE_RETRY)),
                ..entry
            };
            if !self.enqueue(entry, avoid, history, now) {
                // Beyond a full waiting window: the store still has it pending, due at its old time.
                self.rescan_later(now);
            }
        } else {
            tracing::info!(%id, %error, "message left the queue");
        }
    }

    async fn landed(&mut self, flight: Flight, outcome: Option<JobOutcome>) {
        if let Some(index) = self.slot_of(&flight) {
            let modem = &mut self.modems[index];
            modem.in_flight = modem.in_flight.saturating_sub(1);
        }
        self.settle(flight, outcome).await;
    }

    /// The position of the modem a job was handed to; `None` once a reload removed or re-opened it.
    fn slot_of(&self, flight: &Flight) -> Option<usize> {
        self.modems
            .iter()
            .position(|modem| is_channel_of(&flight.channel, &modem.jobs))
    }

    /// Records what became of a job (`None`: the worker dropped it) and acts on it. While the store is
    /// unavailable the outcome is kept and recorded again later.
    async fn settle(&mut self, flight: Flight, outcome: Option<JobOutcome>) {
        let id = flight.entry.id;
        self.flying.remove(&id);
        if matches!(
            outcome,
            Some(JobOutcome::Sent | JobOutcome::Unknown { .. } | JobOutcome::Failed { .. })
        ) {
            self.gate.went_out(&flight.entry, self.clock.now());
        }
        let written = match &outcome {
            Some(JobOutcome::Sent) => Ok(()),
            Some(JobOutcome::Failed { part, error }) => self.failed(&flight, *part, error).await,
            Some(JobOutcome::Unknown { part, reason }) => {
                self.store
                    .part_unknown(id, *part, &flight.modem, reason)
                    .await
            }
            Some(JobOutcome::NotAttempted) => {
                self.requeue(
                    &flight,
                    "not attempted: the modem could not take it, or the store could not record it as submitting",
                    Handback::NothingWritten,
                )
                .await
            }
            Some(JobOutcome::Withdrawn { reason }) => self.withdrawn(&flight, reason).await,
            None => {
                self.requeue(
                    &flight,
                    "the modem worker dropped the job",
                    Handback::Unsure,
                )
                .await
            }
        };
        match written {
            Ok(()) => {}
            Err(error) if error.is_unavailable() => {
                tracing::debug!(%id, %error, "store unavailable; recording the job's outcome again later");
                self.flying.insert(id);
                let at = after(self.clock.now(), STORE_RETRY);
                self.unsettled.push((at, flight, outcome));
            }
            Err(error) => tracing::error!(%id, %error, "could not record the job's outcome"),
        }
    }

    /// The job came back with its part unwritten (or, `Unsure`, with no word): back to the queue,
    /// avoiding its modem, unless parts of it went out there, which the rest must then follow.
    async fn requeue(
        &mut self,
        flight: &Flight,
        reason: &str,
        handback: Handback,
    ) -> Result<(), StoreError> {
        let (id, modem) = (flight.entry.id, self.slot_of(flight));
        let requeued = self
            .store
            .requeue(id, &flight.modem, reason, handback, None)
            .await?;
        let Requeued::Queued {
            parts,
            pinned_modem,
        } = requeued
        else {
            tracing::warn!(%id, "not requeued: a part may have gone out");
            return Ok(());
        };
        self.came_back_unsent(flight, parts, pinned_modem.is_none());
        let now = self.clock.now();
        let entry = QueueEntry {
            attempts: flight.entry.attempts + 1,
            not_before: None,
            parts,
            pinned_modem,
            ..flight.entry.clone()
        };
        self.enqueue(entry, modem, modem, now);
        Ok(())
    }

    /// `parts` of a job came back unwritten: they are no part of its modem's day, and if nothing of the
    /// message went out (`no_contact`) it does not count against its recipient's caps.
    fn came_back_unsent(&mut self, flight: &Flight, parts: u16, no_contact: bool) {
        if no_contact {
            self.gate.returned(&flight.entry);
        }
        if let Some(index) = self.slot_of(flight) {
            let modem = &mut self.modems[index];
            modem.sent_today = modem.sent_today.saturating_sub(u32::from(parts));
        }
    }

    /// Nothing was written because the message may no longer go now: back to the queue with no attempt
    /// counted and no modem avoided, where the gate judges it again at once (an opt-out blocks it, quiet
    /// hours hold it, an expiry closes it). A cancelled message has nothing to go back to. The store
    /// withdraws a message only before its first part, so none of it has gone out.
    async fn withdrawn(&mut self, flight: &Flight, reason: &str) -> Result<(), StoreError> {
        let id = flight.entry.id;
        self.came_back_unsent(flight, flight.entry.parts, true);
        let reason = format!("withdrawn before its PDU was written: {reason}");
        let requeued = self
            .store
            .requeue(id, &flight.modem, &reason, Handback::NothingWritten, None)
            .await;
        match requeued {
            Ok(Requeued::Queued { .. }) => {
                let now = self.clock.now();
                let entry = QueueEntry {
                    not_before: None,
                    ..flight.entry.clone()
                };
                self.enqueue(entry, None, None, now);
                Ok(())
            }
            Ok(Requeued::Unknown) => {
                tracing::warn!(%id, "not requeued: a part may have gone out");
                Ok(())
            }
            Err(StoreError::InvalidTransition { state, .. }) if state.is_final() => {
                tracing::info!(%id, %state, "{reason}");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn failed(
        &mut self,
        flight: &Flight,
        part: u16,
        error: &SendError,
    ) -> Result<(), StoreError> {
        let id = flight.entry.id;
        let index = self.slot_of(flight);
        let now = self.clock.now();
        let attempts = flight.entry.attempts + 1;
        let retry_at = (error.is_transient() && attempts < self.settings.max_attempts.get())
            .then(|| after(now, self.backoff(attempts)));
        let code = match *error {
            SendError::Cms(code) | SendError::Cme(code) => Some(i64::from(code)),
            SendError::Error | SendError::NoPrompt => None,
        };
        let failure = PartFailure {
            id,
            part,
            modem: flight.modem.to_string(),
            code,
            detail: error.to_string(),
            retry_at,
        };
        if self.store.part_failed(failure).await? == MessageState::Queued {
            // Parts before the failed one went out on this modem: the rest must follow them there.
            let pinned = if part > flight.first_part {
                Some(flight.modem.to_string())
            } else {
                flight.entry.pinned_modem.clone()
            };
            let entry = QueueEntry {
                attempts,
                not_before: retry_at,
                pinned_modem: pinned,
                parts: flight
                    .entry
                    .parts
                    .saturating_sub(part.saturating_sub(flight.first_part)),
                ..flight.entry.clone()
            };
            self.enqueue(entry, index, index, now);
        }
        Ok(())
    }

    /// `retry_backoff` doubled for each attempt after the first, at most `retry_backoff_max`.
    fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(20);
        self.settings
            .retry_backoff
            .saturating_mul(1 << doublings)
            .min(self.settings.retry_backoff_max)
    }
}
