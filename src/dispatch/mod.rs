//! The dispatcher: decides which pending message goes to which modem, and when.
//!
//! Event-driven: one task wakes on a new message, a finished job, a modem coming or going, or the earliest
//! of the times it is waiting for (a `send_at`, a retry, an expiry, a rate-limit permit, the day's cap
//! reset). It never polls the database: an in-memory index ([`queue`]) loaded at start holds what is
//! pending, and the store is written at each step (claim, failure, hold...) so a restart resumes from disk.
//!
//! # Layout
//! - [`gate`]: the hook where collections rules hold or block a message at hand-off.
//! - `queue`: the in-memory index; `limits`: governor limiters on the injected clock.
//! - [`events`]: applying the modem workers' events to the store (the worker contract's acks).

mod affinity;
pub mod events;
pub mod gate;
mod limits;
mod queue;

use std::future::Future;
use std::num::{NonZeroU32, NonZeroUsize};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use governor::Quota;
use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::modem::job::{JobOutcome, JobPart, ModemId, SendError, SendJob};
use crate::store::{Clock, MessageState, PartFailure, QueueEntry, Store, StoreError};
use affinity::Affinity;
pub use gate::{AllowAll, Decision, Gate};
use limits::{Limiter, after};
use queue::{Lane, Queue};

/// How the dispatcher paces and retries (`[dispatch]` in the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sends of one message before it fails (transient errors only; permanent ones fail at once).
    pub max_attempts: NonZeroU32,
    /// Wait before the first retry; doubled for each further attempt up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// Ceiling on the whole box's sending rate.
    pub global: Option<Quota>,
    /// Send to a recipient from the modem that last texted them.
    pub sticky: bool,
    /// Jobs a modem holds at once: 2 means the next job waits at the modem while one is sent, so it starts
    /// the instant the modem is free. The slot's channel must hold at least this many.
    pub pipeline: NonZeroUsize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_attempts: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            retry_backoff: Duration::from_secs(30),
            retry_backoff_max: Duration::from_secs(30 * 60),
            global: None,
            sticky: true,
            pipeline: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl Settings {
    /// From `[dispatch]`; `pipeline` stays at its default.
    pub fn from_config(config: &crate::config::Dispatch) -> Self {
        Settings {
            max_attempts: config.max_attempts,
            retry_backoff: config.retry_backoff,
            retry_backoff_max: config.retry_backoff_max,
            global: config.global_rate.map(|rate| rate.quota(None)),
            sticky: config.sticky,
            ..Settings::default()
        }
    }
}

/// One modem as the dispatcher sees it: where its jobs go, whether it can take them, and its limits.
pub struct ModemSlot {
    pub id: ModemId,
    /// The worker's job channel.
    pub jobs: mpsc::Sender<SendJob>,
    /// `true` while the worker can send (state `Ready`).
    pub ready: watch::Receiver<bool>,
    /// Its `rate` and `burst`: `modem.rate.quota(modem.burst)` from `[[modems]]`.
    pub quota: Quota,
    /// Most parts it sends per day (in the store's cap zone), counted across restarts.
    pub daily_cap: Option<NonZeroU32>,
}

enum Command {
    Enqueue(QueueEntry),
    Forget(Uuid),
    Flush(oneshot::Sender<()>),
}

/// How the API and the daemon talk to a running dispatcher; cheap to clone.
#[derive(Clone)]
pub struct DispatchHandle {
    commands: mpsc::UnboundedSender<Command>,
    store: Store,
}

impl DispatchHandle {
    /// A message was accepted (and is on disk): consider it for sending.
    pub fn enqueue(&self, entry: QueueEntry) {
        let _ = self.commands.send(Command::Enqueue(entry));
    }

    /// Cancels a pending message; an [`StoreError::InvalidTransition`] once it is sending or done.
    pub async fn cancel(&self, id: Uuid, actor: &str) -> Result<(), StoreError> {
        self.store.cancel(id, actor).await?;
        let _ = self.commands.send(Command::Forget(id));
        Ok(())
    }

    /// Returns once the dispatcher has acted on everything sent to it before, and on the current time
    /// (tests use it to know the dispatcher has settled).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Loads the pending work, caps and sticky map from the store and starts the dispatcher task. It stops
/// handing out work when `shutdown` fires and ends once the jobs in flight have finished.
pub async fn start(
    store: Store,
    slots: Vec<ModemSlot>,
    settings: Settings,
    gate: Arc<dyn Gate>,
    shutdown: CancellationToken,
) -> Result<(DispatchHandle, tokio::task::JoinHandle<()>), StoreError> {
    let clock = store.clock();
    let now = clock.now();
    let pending = store.queue().await?;
    let last_modems = store.last_modems().await?;
    let day = store.cap_day(now);
    let sent_today = store.daily_sent(now).await?;

    let (readiness_tx, readiness) = mpsc::unbounded_channel();
    let mut watchers = JoinSet::new();
    let mut modems = Vec::with_capacity(slots.len());
    for (index, slot) in slots.into_iter().enumerate() {
        let mut ready = slot.ready.clone();
        let tx = readiness_tx.clone();
        watchers.spawn(async move {
            while ready.changed().await.is_ok() {
                if tx.send(index).is_err() {
                    break;
                }
            }
        });
        modems.push(Modem {
            sent_today: sent_today.get(&*slot.id).copied().unwrap_or(0),
            limiter: Limiter::new(slot.quota, clock.clone()),
            cap: slot.daily_cap.map(NonZeroU32::get),
            in_flight: 0,
            paced_until: None,
            id: slot.id,
            jobs: slot.jobs,
            ready: slot.ready,
        });
    }
    let affinity = Affinity::new(
        settings.sticky,
        modems.iter().map(|m| m.id.clone()),
        last_modems,
    );
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let mut dispatcher = Dispatcher {
        global: settings.global.map(|q| Limiter::new(q, clock.clone())),
        global_paced_until: None,
        store: store.clone(),
        clock,
        gate,
        settings,
        modems,
        affinity,
        queue: Queue::default(),
        flights: FuturesUnordered::new(),
        commands,
        commands_open: true,
        readiness,
        _watchers: watchers,
        shutdown,
        stopping: false,
        day_ends: day.ends,
        flushes: Vec::new(),
    };
    for entry in pending {
        dispatcher.enqueue(entry, None, now);
    }
    tracing::info!(pending = dispatcher.queue.len(), "dispatcher started");
    let task = tokio::spawn(dispatcher.run());
    Ok((
        DispatchHandle {
            commands: commands_tx,
            store,
        },
        task,
    ))
}

struct Modem {
    id: ModemId,
    jobs: mpsc::Sender<SendJob>,
    ready: watch::Receiver<bool>,
    limiter: Limiter,
    cap: Option<u32>,
    /// Parts handed to it today (from the store at start, then counted at hand-off).
    sent_today: u32,
    /// Jobs handed over and not finished.
    in_flight: usize,
    /// Its rate limit refused a permit until then.
    paced_until: Option<Timestamp>,
}

impl Modem {
    fn online(&self) -> bool {
        *self.ready.borrow() && !self.jobs.is_closed()
    }

    fn under_cap(&self) -> bool {
        self.cap.is_none_or(|cap| self.sent_today < cap)
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

/// A job handed to a modem, and what to remember to handle its outcome.
struct Flight {
    entry: QueueEntry,
    modem: usize,
    first_part: u16,
}

type Landing = Pin<Box<dyn Future<Output = (Flight, Option<JobOutcome>)> + Send>>;

struct Dispatcher {
    store: Store,
    clock: Arc<dyn Clock>,
    gate: Arc<dyn Gate>,
    settings: Settings,
    modems: Vec<Modem>,
    global: Option<Limiter>,
    global_paced_until: Option<Timestamp>,
    affinity: Affinity,
    queue: Queue,
    flights: FuturesUnordered<Landing>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// `false` once every handle is dropped (the channel would otherwise report closed forever).
    commands_open: bool,
    readiness: mpsc::UnboundedReceiver<usize>,
    /// Forward each modem's readiness changes; aborted when the dispatcher ends.
    _watchers: JoinSet<()>,
    shutdown: CancellationToken,
    stopping: bool,
    /// When the daily cap counts reset.
    day_ends: Timestamp,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Dispatcher {
    async fn run(mut self) {
        loop {
            let now = self.clock.now();
            self.new_day(now).await;
            self.expire(now).await;
            self.release_due(now);
            if !self.stopping {
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
                        self.command(command);
                        while let Ok(command) = self.commands.try_recv() {
                            self.command(command);
                        }
                    }
                    None => self.commands_open = false,
                },
                Some(_) = self.readiness.recv() => {}
                () = sleep => {}
            }
        }
        tracing::info!("dispatcher stopped");
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Enqueue(entry) => {
                let now = self.clock.now();
                self.enqueue(entry, None, now);
            }
            Command::Forget(id) => {
                self.queue.remove(id);
            }
            Command::Flush(done) => self.flushes.push(done),
        }
    }

    fn enqueue(&mut self, entry: QueueEntry, avoid: Option<usize>, now: Timestamp) {
        let lane = self.affinity.lane(&entry, avoid);
        self.queue.insert(entry, avoid, now, lane);
    }

    /// A new cap day: reload the counts (the store's are the truth across restarts).
    async fn new_day(&mut self, now: Timestamp) {
        if now < self.day_ends {
            return;
        }
        match self.store.daily_sent(now).await {
            Ok(counts) => {
                for modem in &mut self.modems {
                    modem.sent_today = counts.get(&*modem.id).copied().unwrap_or(0);
                }
                self.day_ends = self.store.cap_day(now).ends;
            }
            Err(error) => tracing::error!(%error, "cannot read daily counts; retrying"),
        }
    }

    async fn expire(&mut self, now: Timestamp) {
        for id in self.queue.take_expired(now) {
            if let Err(error) = self.store.expire(id).await {
                tracing::warn!(%id, %error, "could not expire message");
            }
        }
    }

    fn release_due(&mut self, now: Timestamp) {
        for item in self.queue.take_due(now) {
            let mut entry = item.entry;
            entry.not_before = None;
            self.enqueue(entry, item.avoid, now);
        }
    }

    fn next_wake(&self, now: Timestamp) -> Option<Timestamp> {
        let mut wake = self.queue.next_wake();
        if self.queue.has_ready() {
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
        wake
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

    /// The best due message `modem` may send, and the lane it came from.
    fn pick(&mut self, modem: usize) -> Option<(Uuid, Lane)> {
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
        loop {
            let (key, lane) = lanes
                .iter()
                .filter_map(|&lane| self.queue.head(lane).map(|key| (key, lane)))
                .min_by_key(|&(key, _)| key)?;
            let id = key.1;
            let item = self.queue.get(id)?;
            let wanted = self.affinity.lane(&item.entry, item.avoid);
            if wanted == lane {
                return Some((id, lane));
            }
            // The recipient got a sticky modem since this message was queued.
            self.queue.relane(id, wanted);
        }
    }

    /// Tries to hand one message to `modem`; `true` if something happened (sent, held, blocked, expired).
    async fn hand_one(&mut self, index: usize, now: Timestamp) -> bool {
        let Some((id, lane)) = self.pick(index) else {
            return false;
        };
        let Some(item) = self.queue.get(id) else {
            return false;
        };
        let (entry, avoid) = (item.entry.clone(), item.avoid);
        if entry.expires_at.is_some_and(|at| at <= now) {
            self.queue.remove(id);
            if let Err(error) = self.store.expire(id).await {
                tracing::warn!(%id, %error, "could not expire message");
            }
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
                let held = self.store.hold(id, until, &reason, rule.as_deref()).await;
                self.queue.remove(id);
                match held {
                    Ok(()) => {
                        let entry = QueueEntry {
                            not_before: Some(until),
                            ..entry
                        };
                        self.enqueue(entry, avoid, now);
                    }
                    Err(error) => self.store_failed(id, error, entry, avoid, now),
                }
                return true;
            }
            Decision::Block { code, reason, rule } => {
                self.queue.remove(id);
                if let Err(error) = self.store.block(id, &code, &reason, rule.as_deref()).await {
                    self.store_failed(id, error, entry, avoid, now);
                }
                return true;
            }
        }
        let cells = u32::from(entry.parts.max(1));
        if let Err(wait) = self.modems[index].limiter.take(cells) {
            self.modems[index].paced_until = Some(after(now, wait));
            return false;
        }
        if let Some(global) = &self.global
            && let Err(wait) = global.take(cells)
        {
            self.global_paced_until = Some(after(now, wait));
            return false;
        }
        self.queue.remove(id);
        let note = match lane {
            Lane::Sticky(sticky) if sticky != index => Some(format!(
                "fallback from sticky modem {}: {}",
                self.modems[sticky].id,
                self.modems[sticky].why_unusable()
            )),
            Lane::Avoid(failed) => Some(format!(
                "retry after a failure on modem {}",
                self.modems[failed].id
            )),
            _ => None,
        };
        let parts = match self.store.claim(id, &modem_id, note).await {
            Ok(parts) => parts,
            Err(error) => {
                self.store_failed(id, error, entry, avoid, now);
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
            more_waiting: self.queue.has_ready(),
            done,
        };
        let modem = &mut self.modems[index];
        if let Err(error) = modem.jobs.try_send(job) {
            tracing::warn!(%id, modem = %modem_id, %error, "modem would not take the job");
            self.requeue(id, index, "the modem's job queue refused it", entry)
                .await;
            return true;
        }
        modem.in_flight += 1;
        modem.sent_today += parts.len() as u32;
        self.affinity.sent(&entry.to, index);
        let flight = Flight {
            entry,
            modem: index,
            first_part,
        };
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
        now: Timestamp,
    ) {
        if error.is_unavailable() {
            tracing::error!(%id, %error, "store unavailable; retrying the message later");
            let entry = QueueEntry {
                not_before: Some(after(now, Duration::from_secs(5))),
                ..entry
            };
            self.enqueue(entry, avoid, now);
        } else {
            tracing::info!(%id, %error, "message left the queue");
        }
    }

    /// The job never reached the network: back to the queue, avoiding `modem`.
    async fn requeue(&mut self, id: Uuid, modem: usize, reason: &str, entry: QueueEntry) {
        let modem_id = self.modems[modem].id.clone();
        match self.store.requeue(id, &modem_id, reason, None).await {
            Ok(MessageState::Queued) => {
                let now = self.clock.now();
                let entry = QueueEntry {
                    attempts: entry.attempts + 1,
                    not_before: None,
                    ..entry
                };
                self.enqueue(entry, Some(modem), now);
            }
            Ok(state) => tracing::warn!(%id, %state, "not requeued"),
            Err(error) => tracing::error!(%id, %error, "could not requeue"),
        }
    }

    async fn landed(&mut self, flight: Flight, outcome: Option<JobOutcome>) {
        let index = flight.modem;
        self.modems[index].in_flight = self.modems[index].in_flight.saturating_sub(1);
        let id = flight.entry.id;
        let modem_id = self.modems[index].id.clone();
        match outcome {
            Some(JobOutcome::Sent) => {}
            Some(JobOutcome::Failed { part, error }) => self.failed(flight, part, error).await,
            Some(JobOutcome::Unknown { part, reason }) => {
                if let Err(error) = self.store.part_unknown(id, part, &modem_id, &reason).await {
                    tracing::error!(%id, %error, "could not record an unknown outcome");
                }
            }
            Some(JobOutcome::NotAttempted) => {
                self.requeue(
                    id,
                    index,
                    "not attempted: the modem could not take it",
                    flight.entry,
                )
                .await;
            }
            None => {
                self.requeue(id, index, "the modem worker dropped the job", flight.entry)
                    .await;
            }
        }
    }

    async fn failed(&mut self, flight: Flight, part: u16, error: SendError) {
        let id = flight.entry.id;
        let index = flight.modem;
        let now = self.clock.now();
        let attempts = flight.entry.attempts + 1;
        let retry_at = (error.is_transient() && attempts < self.settings.max_attempts.get())
            .then(|| after(now, self.backoff(attempts)));
        let code = match error {
            SendError::Cms(code) | SendError::Cme(code) => Some(i64::from(code)),
            SendError::Error | SendError::NoPrompt => None,
        };
        let failure = PartFailure {
            id,
            part,
            modem: self.modems[index].id.to_string(),
            code,
            detail: error.to_string(),
            retry_at,
        };
        match self.store.part_failed(failure).await {
            Ok(MessageState::Queued) => {
                // Parts before the failed one went out on this modem: the rest must follow them there.
                let pinned = if part > flight.first_part {
                    Some(self.modems[index].id.to_string())
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
                    ..flight.entry
                };
                self.enqueue(entry, Some(index), now);
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%id, %error, "could not record a failed part"),
        }
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
