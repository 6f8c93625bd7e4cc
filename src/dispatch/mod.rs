//! The dispatcher: decides which pending message goes to which modem, and when.
//!
//! Event-driven: one task wakes on a new message, a finished job, a modem coming or going, or the earliest
//! of the times it is waiting for (a `send_at`, a retry, an expiry, a rate-limit permit, the day's cap
//! reset). The store is the queue: memory holds a bounded window of its head ([`Settings::window`] due
//! messages and as many waiting ones), paged in from SQLite as it drains, so memory and start-up time do
//! not grow with the backlog. The store is written at each step (claim, failure, hold...) so a restart
//! resumes from disk.
//!
//! # Layout
//! - [`gate`]: the hook where collections rules hold or block a message at hand-off.
//! - `actor`: the dispatcher task; `queue`: its in-memory index; `window`: which part of the queue that
//!   index holds; `paging`: filling it from the store; `affinity`: sticky senders; `recent`: the bounded
//!   map they and retries remember things in; `limits`: governor limiters on the injected clock.
//! - [`events`]: applying the modem workers' events to the store (the worker contract's acks).

mod actor;
mod affinity;
pub mod events;
pub mod gate;
mod handover;
mod limits;
mod paging;
mod queue;
mod recent;
mod window;

use std::collections::HashSet;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use governor::Quota;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::modem::job::{ModemHealth, ModemId, SendJob};
use crate::store::{QueueEntry, Store, StoreError};
use affinity::Affinity;
pub use gate::{AllowAll, Decision, Gate};
pub use handover::Inheritance;
use limits::Limiter;
pub use window::WINDOW;
use window::Window;

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
    /// Due messages held in memory (and as many waiting ones); the rest stay in the store until paged
    /// in. [`WINDOW`] by default; tests make it tiny.
    pub window: NonZeroUsize,
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
            window: WINDOW,
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
    /// The worker's health: the SIM it reports decides whose daily count applies.
    pub health: watch::Receiver<ModemHealth>,
    /// Its `rate` and `burst`: `modem.rate.quota(modem.burst)` from `[[modems]]`.
    pub quota: Quota,
    /// Most parts it sends per day (in the store's cap zone), counted across restarts.
    pub daily_cap: Option<NonZeroU32>,
}

enum Command {
    Enqueue(QueueEntry),
    Forget(Uuid),
    /// Reload the head of the queue: messages may have been accepted while no dispatcher listened.
    Rescan,
    Flush(oneshot::Sender<()>),
    /// Stop and pass the jobs in flight and the counts to a successor (a configuration reload).
    HandOver(oneshot::Sender<Inheritance>),
}

/// How the API and the daemon talk to a running dispatcher; cheap to clone.
#[derive(Clone)]
pub struct DispatchHandle {
    /// Shared by every clone, so [`DispatchHandle::rebind`] moves them all to a restarted dispatcher.
    commands: Arc<std::sync::RwLock<mpsc::UnboundedSender<Command>>>,
    store: Store,
}

impl DispatchHandle {
    /// A message was accepted (and is on disk): consider it for sending.
    pub fn enqueue(&self, entry: QueueEntry) {
        self.command(Command::Enqueue(entry));
    }

    /// Cancels a pending message; an [`StoreError::InvalidTransition`] once it is sending or done.
    pub async fn cancel(&self, id: Uuid, actor: &str) -> Result<(), StoreError> {
        self.store.cancel(id, actor).await?;
        self.command(Command::Forget(id));
        Ok(())
    }

    /// Point this handle, and every clone of it, at `to` (a dispatcher started after a configuration
    /// reload). Messages announced to the old one after it stopped are on disk but were heard by no one:
    /// the new dispatcher reloads the head of the queue once rebound and pages in the rest as usual.
    pub fn rebind(&self, to: &DispatchHandle) {
        let next = to
            .commands
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        *self.commands.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.command(Command::Rescan);
    }

    /// `false` when the dispatcher has stopped.
    fn command(&self, command: Command) -> bool {
        self.commands
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .send(command)
            .is_ok()
    }

    /// Stops the dispatcher at once, its jobs in flight still flying, and returns what its successor
    /// takes over (`None` if it had stopped already). Messages announced after this are on disk; see
    /// [`DispatchHandle::rebind`].
    pub async fn hand_over(&self) -> Option<Inheritance> {
        let (successor, inheritance) = oneshot::channel();
        if !self.command(Command::HandOver(successor)) {
            return None;
        }
        inheritance.await.ok()
    }

    /// Returns once the dispatcher has acted on everything sent to it before, and on the current time
    /// (tests use it to know the dispatcher has settled).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.command(Command::Flush(done)) {
            let _ = wait.await;
        }
    }
}

/// Loads the head of the queue (one window, whatever the backlog) and the caps from the store and starts
/// the dispatcher task. It stops handing out work when `shutdown` fires and ends once the jobs in flight
/// have finished. `previous`: what the dispatcher it replaces handed over ([`DispatchHandle::hand_over`]).
pub async fn start(
    store: Store,
    slots: Vec<ModemSlot>,
    settings: Settings,
    gate: Arc<dyn Gate>,
    shutdown: CancellationToken,
    previous: Option<Inheritance>,
) -> Result<(DispatchHandle, tokio::task::JoinHandle<()>), StoreError> {
    let clock = store.clock();
    let now = clock.now();
    let day = store.cap_day(now);
    let sent_today = store.daily_sent(now).await?;
    // The last sends of each modem, so its limiter resumes the pace they set (a restart is no fresh
    // burst).
    let lookback = slots
        .iter()
        .map(|slot| slot.quota)
        .chain(settings.global)
        .map(limits::lookback)
        .max()
        .unwrap_or_default();
    let recent = store
        .modem_sends_since(limits::before(now, lookback))
        .await?;
    let sends_of = |modem: Option<&str>| -> Vec<_> {
        recent
            .iter()
            .filter(|send| modem.is_none_or(|m| send.modem == m))
            .map(|send| (send.at, send.parts))
            .collect()
    };

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
        let sim = slot.health.borrow().identity.iccid.clone();
        modems.push(actor::Modem {
            sent_today: sent_today.of(&slot.id, sim.as_deref()),
            counted_sim: sim,
            health: slot.health,
            closed_today: false,
            limiter: Limiter::resuming(slot.quota, clock.clone(), sends_of(Some(&slot.id))),
            cap: slot.daily_cap.map(NonZeroU32::get),
            in_flight: 0,
            paced_until: None,
            id: slot.id,
            jobs: slot.jobs,
            ready: slot.ready,
        });
    }
    let affinity = Affinity::new(settings.sticky, modems.iter().map(|m| m.id.clone()));
    let window = Window::new(settings.window);
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let mut dispatcher = actor::Dispatcher {
        global: settings
            .global
            .map(|q| Limiter::resuming(q, clock.clone(), sends_of(None))),
        global_paced_until: None,
        store: store.clone(),
        clock,
        gate,
        settings,
        modems,
        affinity,
        window,
        flights: FuturesUnordered::new(),
        flying: HashSet::new(),
        rescan_at: None,
        unsettled: Vec::new(),
        next_sweep: now,
        paging_paused_until: None,
        commands,
        commands_open: true,
        readiness,
        _watchers: watchers,
        shutdown,
        stopping: false,
        day_ends: day.ends,
        flushes: Vec::new(),
        successor: None,
    };
    if let Some(previous) = previous {
        dispatcher.inherit(previous);
    }
    dispatcher.load_heads(now).await?;
    tracing::info!(
        in_memory = dispatcher.window.queue.len(),
        "dispatcher started"
    );
    let task = tokio::spawn(dispatcher.run());
    Ok((
        DispatchHandle {
            commands: Arc::new(std::sync::RwLock::new(commands_tx)),
            store,
        },
        task,
    ))
}
