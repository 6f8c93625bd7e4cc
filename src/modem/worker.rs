//! The worker task: owns one port, runs the session, and survives what modems do.
//!
//! Life cycle: open → initialise → serve (jobs, URCs, sweeps, health) until the conversation breaks; then
//! probe with `AT`, and if that fails too, re-open the port with a growing back-off. A modem that restarts
//! in place (its start-up notices, even in the middle of a command) is initialised again over the same
//! port. Jobs arriving while the modem is offline or paused are answered `NotAttempted` at once so
//! dispatch can use another modem.

use std::{collections::HashMap, io, time::Duration};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior, interval_at},
};
use tokio_util::sync::CancellationToken;

use crate::at::command;

use super::{
    config::WorkerConfig,
    health,
    init::{self, InitError},
    job::{FAILED_SENDS_DEGRADE, JobOutcome, ModemHealth, ModemState, SendJob, WorkerEvent},
    session::{Expect, Port, Session, SessionError},
};

/// First pause before re-opening a port; doubled up to `Timeouts::max_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// Opens the port; replaced in tests.
pub type Opener = Box<dyn FnMut() -> io::Result<Box<dyn Port>> + Send + Sync>;

/// `AT+CMMS=2` (keep the radio link open between back-to-back sends) on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cmms {
    Unasked,
    Set,
    /// Refused once: not asked again on this connection.
    Refused,
}

/// The daemon's side of one worker.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    jobs: mpsc::Sender<SendJob>,
    paused: watch::Sender<bool>,
    health: watch::Receiver<ModemHealth>,
}

impl WorkerHandle {
    /// Queue a job. If the worker has stopped, the job ends at once as `NotAttempted`.
    pub async fn send(&self, job: SendJob) {
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job).await {
            let _ = job.done.send(JobOutcome::NotAttempted);
        }
    }

    /// Stop taking jobs (they are answered `NotAttempted`); receiving carries on.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    pub fn health(&self) -> watch::Receiver<ModemHealth> {
        self.health.clone()
    }

    /// The health an admin is shown: the worker's last report with the pause switch applied at once. The
    /// worker itself reports a pause only between commands, after its start-up conversation, so a modem
    /// paused in the config would read "initialising", and the answer to a pause request its old state.
    /// An offline modem reads offline whatever the switch: that is the fact to act on.
    pub fn shown_health(&self) -> ModemHealth {
        let mut shown = self.health.borrow().clone();
        shown.state = match (*self.paused.borrow(), shown.state) {
            (_, ModemState::Offline) => ModemState::Offline,
            (true, _) => ModemState::Paused,
            // Resumed, and the worker has not said so yet: what its last report means unpaused.
            (false, ModemState::Paused) => health::state_of(&shown),
            (false, state) => state,
        };
        shown
    }

    /// The job channel itself, for a dispatcher that watches its capacity and closure.
    pub fn jobs(&self) -> mpsc::Sender<SendJob> {
        self.jobs.clone()
    }

    /// `true` while the worker can take jobs (state `Ready`, not paused), updated as its health changes
    /// and at once when it is paused: the worker reports a pause only between commands, and a dispatcher
    /// that went by that alone handed a just-paused modem jobs it could only hand back.
    pub fn readiness(&self) -> watch::Receiver<bool> {
        let mut health = self.health.clone();
        let mut paused = self.paused.subscribe();
        let is_ready = |h: &ModemHealth, paused: bool| h.state == ModemState::Ready && !paused;
        let (tx, rx) = watch::channel(is_ready(&health.borrow(), *paused.borrow()));
        tokio::spawn(async move {
            // Ends when the worker drops its health sender, the handle its pause switch, or nobody
            // watches any more.
            loop {
                tokio::select! {
                    changed = health.changed() => if changed.is_err() { break },
                    changed = paused.changed() => if changed.is_err() { break },
                    () = tx.closed() => break,
                }
                let ready = is_ready(&health.borrow_and_update(), *paused.borrow_and_update());
                tx.send_if_modified(|old| std::mem::replace(old, ready) != ready);
            }
        });
        rx
    }
}

/// Start a worker on the serial device named in `cfg`.
pub fn spawn_worker(
    cfg: WorkerConfig,
    events: mpsc::Sender<WorkerEvent>,
    cancel: CancellationToken,
) -> (WorkerHandle, JoinHandle<()>) {
    let (device, baud) = (cfg.device.clone(), cfg.baud);
    let opener: Opener = Box::new(move || {
        let port =
            tokio_serial::SerialStream::open(&tokio_serial::new(device.to_string_lossy(), baud))?;
        Ok(Box::new(port) as Box<dyn Port>)
    });
    spawn_with_opener(cfg, events, cancel, opener)
}

/// Start a worker that opens its port with `opener` (tests use in-memory pipes).
pub fn spawn_with_opener(
    cfg: WorkerConfig,
    events: mpsc::Sender<WorkerEvent>,
    cancel: CancellationToken,
    opener: Opener,
) -> (WorkerHandle, JoinHandle<()>) {
    let (jobs_tx, jobs) = mpsc::channel(16);
    let (paused_tx, paused) = watch::channel(false);
    let initial = ModemHealth::new(ModemState::Initialising);
    let (health_tx, health_rx) = watch::channel(initial.clone());
    let worker = Worker {
        cfg,
        events,
        cancel,
        jobs,
        paused,
        health_tx,
        health: initial,
        opener,
        cnma_required: false,
        memory: "SM".into(),
        report_memory: None,
        memory_count: 1,
        cnmi: None,
        cnmi_retries: 0,
        undeleted: HashMap::new(),
        cmms: Cmms::Unasked,
        pin_rejected: false,
        restarted: None,
        unstored: None,
    };
    let task = tokio::spawn(worker.run());
    (
        WorkerHandle {
            jobs: jobs_tx,
            paused: paused_tx,
            health: health_rx,
        },
        task,
    )
}

pub(super) struct Worker {
    pub(super) cfg: WorkerConfig,
    pub(super) events: mpsc::Sender<WorkerEvent>,
    pub(super) cancel: CancellationToken,
    jobs: mpsc::Receiver<SendJob>,
    paused: watch::Receiver<bool>,
    health_tx: watch::Sender<ModemHealth>,
    /// What was last published; compared to avoid flooding the daemon with identical health events.
    pub(super) health: ModemHealth,
    opener: Opener,
    /// Routed `+CMT`/`+CDS` must be acknowledged with `AT+CNMA` (learnt at initialisation).
    pub(super) cnma_required: bool,
    /// The memory `+CMGR`/`+CMGD`/`+CMGL` address.
    pub(super) memory: String,
    /// Where status reports are kept apart ("SR"), when the modem has such a memory: swept too.
    pub(super) report_memory: Option<String>,
    /// How many memories `AT+CPMS` takes on this modem (learnt at initialisation).
    pub(super) memory_count: usize,
    /// The new-message indications set at initialisation, kept by the health poll.
    pub(super) cnmi: Option<[u8; 5]>,
    /// Health polls left to ask again a modem that refused every indication setting at initialisation.
    pub(super) cnmi_retries: u32,
    /// Messages the store has acknowledged but the modem refused to delete, by memory and index: a re-read
    /// of the same slot and PDU is not handed over again, only deleted again.
    pub(super) undeleted: HashMap<(String, u32), String>,
    /// Whether `AT+CMMS=2` is in force on this connection. Mode 2 stays set after the radio link times
    /// out (27.005 3.5.6), so it is asked for once per connection, not before every job (an AT round trip
    /// each, tens of milliseconds on real modems).
    pub(super) cmms: Cmms,
    /// The configured PIN was refused: never enter it again (three wrong PINs lock the SIM).
    pin_rejected: bool,
    /// A start-up notice seen since the last initialisation (see [`Exit::Restarted`]).
    pub(super) restarted: Option<String>,
    /// When to sweep again for messages left on the SIM because the daemon could not store them (a full
    /// disk): sooner than the periodic sweep, so a STOP is not kept waiting minutes after the store
    /// recovers.
    pub(super) unstored: Option<Instant>,
}

enum Wake {
    Cancelled,
    Unsolicited(Result<(), SessionError>),
    Job(Option<SendJob>),
    Sweep,
    Health,
    PauseChanged,
}

/// Why serving a connection stopped.
enum Exit {
    Cancelled,
    Lost(String),
    /// The modem printed a start-up notice: it restarted with the port open (a UART modem's brown-out)
    /// and lost echo, error format, new-message indications and storage; initialise it again.
    Restarted(String),
}

impl Worker {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        // A modem that restarted in place is initialised again over the port it kept.
        let mut kept: Option<Session> = None;
        while !self.cancel.is_cancelled() {
            let opened = match kept.take() {
                Some(session) => Ok(session),
                None => (self.opener)().map(Session::new),
            };
            let mut session = match opened {
                Ok(session) => session,
                Err(e) => {
                    self.set_state(
                        ModemState::Offline,
                        Some(format!("cannot open {}: {e}", self.cfg.device.display())),
                    )
                    .await;
                    if !self.idle(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(self.cfg.timeouts.max_backoff);
                    continue;
                }
            };
            // After a failure the modem stays `offline` until it is back, not `initialising` at every try.
            if self.health.state != ModemState::Offline {
                self.set_state(ModemState::Initialising, None).await;
            }
            let t = self.cfg.timeouts;
            let init = tokio::select! {
                _ = self.cancel.cancelled() => break,
                r = init::initialise(&mut session, &t, self.cfg.pin.as_deref(), &mut self.pin_rejected) => r,
            };
            match init {
                Ok(init) => {
                    // Plain values, not Rust's debug forms: this line is read in the journal by admins.
                    let cnmi = init
                        .cnmi
                        .map_or_else(|| "none".to_owned(), |c| c.map(|v| v.to_string()).join(","));
                    let storage = init.storage.as_ref().map_or_else(
                        || "unknown".to_owned(),
                        |s| format!("{}/{}", s.used, s.total),
                    );
                    tracing::info!(modem = %self.cfg.id, %cnmi, memory = %init.memory, %storage, cnma = init.cnma_required, "initialised");
                    self.health.identity = init.identity;
                    // Whatever kept it from starting is over.
                    self.health.last_error = None;
                    self.cnma_required = init.cnma_required;
                    self.memory = init.memory;
                    self.report_memory = init.report_memory;
                    self.memory_count = init.memory_count;
                    self.cnmi = init.cnmi;
                    self.cnmi_retries = super::receive::CNMI_RETRIES;
                    self.cmms = Cmms::Unasked;
                    // Notices printed before and while it initialised belong to the start this one
                    // answered; one printed after it means the modem started again. (`restarted` is
                    // always taken by `serve` before it returns, so nothing older is left there.)
                    session.forget_start_up_notices();
                    backoff = MIN_BACKOFF;
                }
                // Opened while it was starting up (or it restarted meanwhile): what it was asked before
                // its `RDY` is lost, so the whole sequence starts over, at once and on the same port.
                Err(InitError::Session(e @ SessionError::Restarted { .. })) => {
                    tracing::info!(modem = %self.cfg.id, error = %e, "initialising again");
                    kept = Some(session);
                    continue;
                }
                Err(InitError::Session(e)) => {
                    tracing::warn!(modem = %self.cfg.id, error = %e, retry_in = ?backoff, "initialisation failed");
                    self.set_state(ModemState::Offline, Some(format!("initialisation: {e}")))
                        .await;
                    if !self.idle(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(self.cfg.timeouts.max_backoff);
                    continue;
                }
                Err(e) => {
                    // The modem answers but cannot do SMS (SIM locked, PDU mode refused): retry slowly.
                    tracing::warn!(modem = %self.cfg.id, error = %e, "cannot send SMS; retrying slowly");
                    self.set_state(ModemState::Degraded, Some(e.to_string()))
                        .await;
                    if !self.idle(self.cfg.timeouts.max_backoff).await {
                        break;
                    }
                    continue;
                }
            }
            match self.serve(&mut session).await {
                Exit::Cancelled => break,
                Exit::Restarted(notice) => {
                    tracing::warn!(modem = %self.cfg.id, %notice, "the modem restarted; initialising it again");
                    kept = Some(session);
                }
                Exit::Lost(why) => {
                    tracing::warn!(modem = %self.cfg.id, %why, "connection lost; re-opening");
                    self.set_state(ModemState::Offline, Some(why)).await;
                    drop(session);
                    if !self.idle(backoff).await {
                        break;
                    }
                }
            }
        }
        // Stopped on purpose: no error to report, an old one least of all.
        self.health.last_error = None;
        self.set_state(ModemState::Offline, None).await;
    }

    /// Wait out a back-off, answering jobs `NotAttempted` meanwhile; `false` when the worker should stop
    /// (cancelled, or every handle dropped).
    async fn idle(&mut self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return false,
                _ = tokio::time::sleep_until(until) => return true,
                job = self.jobs.recv() => match job {
                    Some(job) => { let _ = job.done.send(JobOutcome::NotAttempted); }
                    None => return false,
                },
            }
        }
    }

    async fn serve(&mut self, session: &mut Session) -> Exit {
        if let Err(e) = self.refresh_health(session).await {
            return Exit::Lost(e.to_string());
        }
        if let Err(e) = self.sweep(session).await {
            return Exit::Lost(e.to_string());
        }
        let mut sweep = interval_at(
            Instant::now() + self.cfg.sweep_interval,
            self.cfg.sweep_interval,
        );
        let mut health = interval_at(
            Instant::now() + self.cfg.health_interval,
            self.cfg.health_interval,
        );
        // While degraded, health is polled more often, so a modem back on the network sends again soon.
        let mut degraded_health = interval_at(
            Instant::now() + self.cfg.degraded_health_interval,
            self.cfg.degraded_health_interval,
        );
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        degraded_health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut was_degraded = false;
        loop {
            let mut result = Ok(());
            while result.is_ok()
                && let Some(u) = session.take_unsolicited()
            {
                result = self.unsolicited(session, u).await;
            }
            if let Some(notice) = self.restarted.take() {
                return Exit::Restarted(notice);
            }
            // The fast poll counts from the moment the modem became degraded, not from an old tick.
            let degraded = self.health.state == ModemState::Degraded;
            if degraded && !was_degraded {
                degraded_health.reset();
            }
            was_degraded = degraded;
            if result.is_ok() {
                let paused = *self.paused.borrow();
                let wake = tokio::select! {
                    _ = self.cancel.cancelled() => Wake::Cancelled,
                    r = session.wait_unsolicited() => Wake::Unsolicited(r),
                    changed = self.paused.changed() => match changed {
                        Ok(()) => Wake::PauseChanged,
                        // Every handle is gone: nobody can send jobs or read health any more.
                        Err(_) => Wake::Cancelled,
                    },
                    job = self.jobs.recv() => Wake::Job(job),
                    _ = sweep.tick() => Wake::Sweep,
                    _ = tokio::time::sleep_until(self.unstored.unwrap_or_else(Instant::now)), if self.unstored.is_some() => Wake::Sweep,
                    _ = health.tick() => Wake::Health,
                    _ = degraded_health.tick(), if self.health.state == ModemState::Degraded => Wake::Health,
                };
                result = match wake {
                    Wake::Cancelled | Wake::Job(None) => return Exit::Cancelled,
                    Wake::Unsolicited(r) => r,
                    Wake::PauseChanged => self.refresh_health(session).await,
                    Wake::Job(Some(job)) if paused => {
                        let _ = job.done.send(JobOutcome::NotAttempted);
                        Ok(())
                    }
                    Wake::Job(Some(job)) => self.send_job(session, job).await,
                    Wake::Sweep => self.sweep(session).await,
                    Wake::Health => self.poll_health(session).await,
                };
            }
            if let Err(e) = result
                && let Err(lost) = self.recover(session, e).await
            {
                return Exit::Lost(lost);
            }
        }
    }

    /// After a missed deadline, `AT` decides between "carry on" and "re-open"; a closed port re-opens.
    async fn recover(&mut self, session: &mut Session, e: SessionError) -> Result<(), String> {
        tracing::warn!(modem = %self.cfg.id, error = %e, "session error");
        // The notice that ended the command is queued: `serve` takes it next and initialises again, on
        // the same port.
        if matches!(e, SessionError::Restarted { .. }) {
            return Ok(());
        }
        if !matches!(e, SessionError::Timeout { .. }) {
            return Err(e.to_string());
        }
        let probe = session.command(command::PROBE, Expect::NOTHING, self.cfg.timeouts.command);
        match probe.await {
            Ok(_) => {
                let mut h = self.health.clone();
                h.last_error = Some(e.to_string());
                self.publish(h).await;
                Ok(())
            }
            Err(probe) => Err(format!("{e}; probe: {probe}")),
        }
    }

    pub(super) async fn refresh_health(
        &mut self,
        session: &mut Session,
    ) -> Result<(), SessionError> {
        self.refresh_from(session, self.health.clone()).await
    }

    /// The periodic poll: also gives a modem degraded by failed sends one more try, so one whose trouble
    /// has passed is used again without a person stepping in, and one whose trouble goes on costs one
    /// message a retry per poll, not three.
    async fn poll_health(&mut self, session: &mut Session) -> Result<(), SessionError> {
        self.keep_indications(session).await?;
        let mut h = self.health.clone();
        h.failed_sends = h.failed_sends.min(FAILED_SENDS_DEGRADE - 1);
        self.refresh_from(session, h).await
    }

    /// `h` with fresh readings (signal, registration, operator, message storage) and the state they make,
    /// published.
    async fn refresh_from(
        &mut self,
        session: &mut Session,
        mut h: ModemHealth,
    ) -> Result<(), SessionError> {
        health::poll(session, &self.cfg.timeouts, &mut h).await?;
        h.answered_at = Some(jiff::Timestamp::now());
        if let Some(warning) = health::storage_warning(&h) {
            if health::storage_warning(&self.health).is_none() {
                tracing::warn!(modem = %self.cfg.id, %warning, "message storage full");
            }
            h.last_error = Some(warning);
        }
        h.state = if *self.paused.borrow() {
            ModemState::Paused
        } else {
            health::state_of(&h)
        };
        self.publish(h).await;
        Ok(())
    }

    pub(super) async fn set_state(&mut self, state: ModemState, error: Option<String>) {
        let mut h = self.health.clone();
        h.state = state;
        if error.is_some() {
            h.last_error = error;
        }
        if state == ModemState::Offline {
            // Readings from a modem that is gone are not its state now.
            h.signal = None;
            h.operator = None;
            h.cs = None;
            h.ps = None;
            h.eps = None;
            h.storage_used = None;
            h.storage_total = None;
        }
        self.publish(h).await;
    }

    /// Record `h` and tell the daemon if anything changed.
    pub(super) async fn publish(&mut self, h: ModemHealth) {
        if h == self.health {
            return;
        }
        // Each change of state once, with why: an admin reading the journal sees a modem go offline
        // (a port that cannot be opened, say) or lose the network without polling `status`.
        // A worker told to stop (shutdown, or the modem removed from the config) goes offline with no
        // error: that is no trouble to warn about.
        if h.state != self.health.state {
            match (&h.state, h.last_error.as_deref()) {
                (ModemState::Offline | ModemState::Degraded, Some(error)) => {
                    tracing::warn!(modem = %self.cfg.id, state = ?h.state, error, "modem state changed")
                }
                _ => tracing::info!(modem = %self.cfg.id, state = ?h.state, "modem state changed"),
            }
        }
        self.health = h.clone();
        self.health_tx.send_replace(h.clone());
        let _ = self
            .events
            .send(WorkerEvent::Health {
                modem: self.cfg.id.clone(),
                health: h,
            })
            .await;
    }

    /// Hand an event to the daemon and wait for its ack; `None` when it never comes (dropped or shutdown).
    pub(super) async fn acked<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> WorkerEvent,
    ) -> Option<T> {
        tokio::select! {
            r = self.acked_even_if_stopping(make) => r,
            _ = self.cancel.cancelled() => None,
        }
    }

    /// [`Worker::acked`] that waits out the worker being stopped too (its stop's grace still bounds it).
    /// Once part of a message is out the rest must follow: giving up between two parts left the debtor
    /// half a message, and let the job's outcome reach the dispatcher before the daemon had recorded the
    /// part already sent, so the message went back to the queue unpinned (the rest then came from
    /// another modem, seen when a reload removed the modem mid-message).
    pub(super) async fn acked_even_if_stopping<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> WorkerEvent,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        if self.events.send(make(tx)).await.is_err() {
            return None;
        }
        rx.await.ok()
    }
}
