//! `modemgate serve`: wires config, store, modem workers (and in-process simulators), the hub, the
//! dispatcher, the HTTP API and the webhook deliverer, and runs them until SIGTERM.
//!
//! # Layout
//! - [`modems`]: one worker per `[[modems]]` entry, a simulator behind each `sim:PROFILE` device.
//! - [`hub`]: worker events → store → rules and webhooks.
//! - [`registry`]: the running modems as the API sees them (live health, pause).
//! - [`systemd`]: readiness, reload/stop notices and watchdog keep-alives.
//!
//! [`start`] assembles a running gateway from a [`Config`] and returns handles on its parts, so integration
//! tests drive exactly what `serve` runs; [`serve`] adds signals and systemd around it.

mod http;
pub use http::HttpLimits;
pub mod hub;
pub mod lock;
pub mod modems;
pub mod registry;
mod retention;
mod store_watch;
pub mod systemd;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::gateway::Gateway;
use crate::api::{AppState, Auth, Metrics};
use crate::config::Config;
use crate::dispatch::{self, DispatchHandle, ModemSlot};
use crate::modem::job::ModemHealth;
use crate::rules::gate::CollectionsGate;
use crate::rules::inbound::{Classifier, InboundRules};
use crate::rules::optouts::OptOuts;
use crate::sim::SimHandle;
use crate::store::{self, Clock, Store};
use crate::tls::{ServedCertificate, TlsListener};
use crate::webhook::{self, Backoff, Deliverer, Subscription, Target};

use modems::ModemRuntime;
use registry::Modems;

/// How long in-flight modem commands may take to finish at shutdown (a CMGS can take tens of seconds; the
/// message is `unknown`, never lost, if it is cut short).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How long a modem removed or re-configured by a reload may take to finish its current job: a whole
/// message, every part of it (a worker stopped mid-message leaves the debtor half of it). The `+CMGS` result
/// timeout covers a 10-part message at the usual 2-5 s a part; the watchdog is kept alive meanwhile.
const RELOAD_GRACE: Duration = Duration::from_secs(120);

/// What can be injected when starting (tests use a manual clock).
#[derive(Clone)]
pub struct StartOptions {
    pub clock: Arc<dyn Clock>,
    /// Simulated modems answer at once instead of taking 2-4 s per send (tests).
    pub instant_sims: bool,
    /// The API server's time limits (shorter in tests).
    pub http: HttpLimits,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            clock: Arc::new(store::SystemClock),
            instant_sims: false,
            http: HttpLimits::default(),
        }
    }
}

/// A running gateway.
pub struct Running {
    pub store: Store,
    pub dispatch: DispatchHandle,
    /// Where the API listens (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    pub modems: Arc<Modems>,
    /// What `/metrics` shows, for waiting on what the daemon counts.
    pub metrics: Arc<Metrics>,
    config: Config,
    options: StartOptions,
    optouts: Arc<OptOuts>,
    /// How the store labels replies in `message.received`; replaced on reload.
    classifier: Arc<RwLock<Classifier>>,
    /// The hub's reply rules; replaced on reload.
    rules: Arc<RwLock<Arc<InboundRules>>>,
    auth: Arc<Auth>,
    /// Kept so a reload can start new workers; dropped at stop so the hub can end.
    events: mpsc::Sender<crate::modem::job::WorkerEvent>,
    runtimes: Vec<ModemRuntime>,
    shutdown: CancellationToken,
    /// Stops only the dispatcher: it hands out nothing more and ends when jobs in flight have finished.
    dispatch_stop: CancellationToken,
    dispatcher: JoinHandle<()>,
    /// The dispatcher's collections gate: a reload's new gate takes over what it counted.
    gate: Arc<CollectionsGate>,
    hub: JoinHandle<()>,
    api: JoinHandle<()>,
    /// Deletes what `[storage] retain_days` no longer keeps; absent without it.
    retention: Option<JoinHandle<()>>,
    store_watch: JoinHandle<()>,
    /// The certificate the API presents, when it serves TLS: a reload reads its files again.
    certificate: Option<Arc<ServedCertificate>>,
    deliverer: JoinHandle<()>,
    /// This daemon's hold on the database, released when it has stopped (see [`lock`]).
    _lock: lock::DatabaseLock,
}

/// A named webhook given a new URL takes its undelivered events along.
async fn follow_renamed_webhooks(store: &Store, targets: &[Target]) {
    let named = targets
        .iter()
        .filter_map(|target| Some((target.name()?.to_owned(), target.url())))
        .collect();
    match store.follow_renamed_webhooks(named).await {
        Ok(moved) => {
            for (webhook, events) in moved {
                info!(
                    webhook,
                    events, "undelivered events follow the webhook to its new URL"
                );
            }
        }
        Err(error) => warn!(%error, "could not move undelivered events to renamed webhooks' URLs"),
    }
}

/// Events addressed to a webhook no longer configured (removed, or moved to another URL) are kept, not
/// posted and not dropped: delivered if that URL is configured again. Said at start, so the admin knows.
async fn warn_of_unconfigured_webhooks(store: &Store, targets: &[Target]) {
    let Ok(totals) = store.totals().await else {
        return;
    };
    for (webhook, pending) in unconfigured_backlogs(&totals.webhooks, targets) {
        warn!(
            webhook,
            pending,
            "events kept for a webhook no longer configured: posted if its URL is configured again"
        );
    }
}

/// The label and count of each backlog addressed to a URL no target has. Rows from before rows were per
/// webhook (no URL) belong to every webhook, so they are never unconfigured.
fn unconfigured_backlogs(
    backlogs: &[store::WebhookBacklog],
    targets: &[Target],
) -> Vec<(String, u64)> {
    backlogs
        .iter()
        .filter_map(|backlog| {
            let url = backlog.target.as_deref()?;
            (backlog.pending > 0 && !targets.iter().any(|target| target.url() == url))
                .then(|| (webhook::label_of(url), backlog.pending))
        })
        .collect()
}

/// The configuration in effect after a reload to `new`: all of `new` but the sections read only at
/// start, which stay as they run (so a later reload compares with what is in effect, not with what was
/// last read), and the names of those that differ, to warn about.
fn after_reload(running: &Config, new: &Config) -> (Config, Vec<&'static str>) {
    fn keep<T: PartialEq + Clone>(
        unapplied: &mut Vec<&'static str>,
        section: &'static str,
        slot: &mut T,
        running: &T,
    ) {
        if slot != running {
            unapplied.push(section);
            slot.clone_from(running);
        }
    }
    let mut effective = new.clone();
    let mut unapplied = Vec::new();
    // The TLS files can change while TLS stays on (a renewed certificate, a new path): the running
    // listener presents them from the next handshake. Only turning TLS on or off waits for a restart.
    let tls_toggled = new.server.tls.is_some() != running.server.tls.is_some();
    effective.server.tls.clone_from(&running.server.tls);
    keep(
        &mut unapplied,
        "[server]",
        &mut effective.server,
        &running.server,
    );
    if !tls_toggled {
        effective.server.tls.clone_from(&new.server.tls);
    } else if !unapplied.contains(&"[server]") {
        unapplied.push("[server]");
    }
    keep(
        &mut unapplied,
        "[storage]",
        &mut effective.storage,
        &running.storage,
    );
    keep(
        &mut unapplied,
        "[[webhooks]]",
        &mut effective.webhooks,
        &running.webhooks,
    );
    keep(
        &mut unapplied,
        "[logging]",
        &mut effective.logging,
        &running.logging,
    );
    keep(&mut unapplied, "[pdu]", &mut effective.pdu, &running.pdu);
    (effective, unapplied)
}

/// Assemble and start everything the config describes; returns once the API listens and the queue is
/// loaded (the moment systemd is told READY).
pub async fn start(config: &Config, options: StartOptions) -> anyhow::Result<Running> {
    let targets = webhook::targets(&config.webhooks).context("webhook configuration")?;
    // Only events some webhook wants are written to the outbox, once for each webhook that wants them.
    let wanted = targets.iter().map(Target::subscription).collect();
    // message.received is written with the message: the reply rules label it there (and follow reloads).
    let classifier = Arc::new(RwLock::new(Classifier::new(config)));
    let verdict = {
        let classifier = classifier.clone();
        Arc::new(move |sender: &str, text: &str| {
            classifier
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .verdict(sender, text)
        })
    };
    let (store, lock) = open_store(config, &options, wanted, verdict).await?;
    // Off the runtime's threads (it takes a while, far longer in a debug build) and alongside the rest of
    // the start; awaited before the API listens, so the first request does not pay for it.
    let region = config.server.default_region;
    let numbers_warm = tokio::task::spawn_blocking(move || crate::msisdn::Msisdn::warm_up(region));
    let shutdown = CancellationToken::new();
    let (events_tx, events) = mpsc::channel(256);

    let mut runtimes = Vec::new();
    for (ordinal, modem) in config.modems.iter().enumerate().filter(|(_, m)| m.enabled) {
        let runtime = modems::start(
            modem,
            ordinal,
            options.instant_sims,
            events_tx.clone(),
            &shutdown,
        )
        .with_context(|| format!("starting modem {}", modem.id))?;
        runtimes.push(runtime);
    }
    let modems = Arc::new(Modems::default());
    modems.replace(&runtimes);

    let webhook_labels: Vec<(String, String)> = targets
        .iter()
        .map(|target| (target.url(), target.label().to_owned()))
        .collect();
    follow_renamed_webhooks(&store, &targets).await;
    warn_of_unconfigured_webhooks(&store, &targets).await;
    let deliverer = Deliverer::new(Arc::new(store.clone()), targets, Backoff::default());
    let webhooks = deliverer.waker();
    let deliverer = tokio::spawn(deliverer.run(shutdown.clone()));

    let optouts = Arc::new(OptOuts::load(&store).await.context("loading opt-outs")?);
    let dispatch_stop = shutdown.child_token();
    let gate = gate(&store, &optouts, config, None).await?;
    let (dispatch, dispatcher) = dispatch::start(
        store.clone(),
        slots(&runtimes),
        dispatch_settings(config),
        gate.clone(),
        dispatch_stop.clone(),
        None,
    )
    .await
    .context("starting the dispatcher")?;

    let metrics = Arc::new(Metrics::default());
    let retention = config.storage.retain_days.map(|retain| {
        tokio::spawn(retention::run(
            store.clone(),
            retain,
            metrics.clone(),
            shutdown.clone(),
        ))
    });
    let store_watch = tokio::spawn(store_watch::run(store.clone(), shutdown.clone()));
    let rules = Arc::new(RwLock::new(Arc::new(InboundRules::new(
        config,
        optouts.clone(),
        dispatch.clone(),
    ))));
    let hub = tokio::spawn(
        hub::Hub {
            store: store.clone(),
            metrics: metrics.clone(),
            webhooks: webhooks.clone(),
            default_region: config.server.default_region,
            rules: rules.clone(),
        }
        .run(events),
    );

    let gateway = Gateway::new(
        store.clone(),
        dispatch.clone(),
        modems.clone(),
        optouts.clone(),
        config.optout.clone(),
        config.pdu.status_reports,
    )
    .with_webhooks(webhook_labels);
    let state = AppState::from_config(config, Arc::new(gateway), metrics.clone());
    let auth = state.auth.clone();
    let _ = numbers_warm.await;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let app = crate::api::router(state);
    let (api, certificate, scheme) = match &config.server.tls {
        Some(files) => {
            let (tls, certificate) =
                crate::tls::server_config(files).context("[server] tls_cert and tls_key")?;
            let listener = TlsListener::new(listener, tls)?;
            metrics.watch_tls_handshake_failures(listener.failures());
            let api = http::serve(listener, app, options.http, shutdown.clone());
            (api, Some(certificate), "https")
        }
        None => (
            http::serve(listener, app, options.http, shutdown.clone()),
            None,
            "http",
        ),
    };
    info!(%addr, scheme, modems = runtimes.len(), "modemgate is up");

    Ok(Running {
        store,
        dispatch,
        addr,
        modems,
        metrics,
        config: config.clone(),
        options,
        optouts,
        classifier,
        rules,
        auth,
        events: events_tx,
        runtimes,
        shutdown,
        dispatch_stop,
        dispatcher,
        gate,
        hub,
        api,
        certificate,
        deliverer,
        retention,
        store_watch,
        _lock: lock,
    })
}

impl Running {
    /// The simulator behind a `sim:PROFILE` modem, for tests and demos.
    pub fn sim(&self, modem: &str) -> Option<&SimHandle> {
        self.runtimes
            .iter()
            .find(|r| &*r.id == modem)
            .and_then(ModemRuntime::sim)
    }

    /// A modem worker's health as it changes (state, signal, SIM), for tests and demos to wait on.
    pub fn health(&self, modem: &str) -> Option<watch::Receiver<ModemHealth>> {
        self.runtimes
            .iter()
            .find(|r| &*r.id == modem)
            .map(|r| r.handle.health())
    }

    /// Waits until the count of numbers suppressed with no opt-out on record (`/metrics`'
    /// `modemgate_optouts_unrecorded`) satisfies `until`: for tests to wait on a hold, not on time.
    pub async fn optouts_unrecorded_until(&self, until: impl Fn(usize) -> bool) -> usize {
        self.optouts.unrecorded_until(until).await
    }

    /// Apply a new configuration without dropping the queue: API keys are swapped; modems are added,
    /// removed, re-opened (device, baud or PIN changed), paused or resumed; rates, daily caps, quiet
    /// hours, contact caps, `[dispatch]`, keywords, opt-out texts and reply rules take effect through a
    /// new dispatcher (which takes over the old one's jobs in flight) and new rules; the TLS certificate
    /// and key are read again. Sections read only at start (`[server]` but its TLS files, `[storage]`,
    /// `[[webhooks]]`, `[logging]`, `[pdu]`) are reported by name when changed and left as they are.
    pub async fn reload(&mut self, config: &Config) -> anyhow::Result<()> {
        let (effective, unapplied) = after_reload(&self.config, config);
        for section in unapplied {
            warn!(
                section,
                "changed in the configuration: takes effect at the next restart"
            );
        }
        self.auth.replace(&config.api_keys);
        if let (Some(certificate), Some(files)) = (&self.certificate, &effective.server.tls) {
            // Read again even when the paths are the same: that is how a renewed certificate arrives.
            match certificate.reload(files) {
                Ok(()) => info!(cert = %files.cert.display(), "TLS certificate read again"),
                Err(error) => warn!(%error, "TLS certificate not replaced; the current one stays"),
            }
        }
        *self.classifier.write().unwrap_or_else(|p| p.into_inner()) = Classifier::new(config);
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(InboundRules::new(
            config,
            self.optouts.clone(),
            self.dispatch.clone(),
        ));

        // Modems removed or re-opened (device, baud or PIN changed) stop first, while the running
        // dispatcher still hands work to the others and records what their last jobs became: a modem
        // that hangs delays only the reload, not the sends of the rest.
        let (mut kept, retiring): (Vec<_>, Vec<_>) = std::mem::take(&mut self.runtimes)
            .into_iter()
            .partition(|runtime| {
                config.modems.iter().any(|m| {
                    m.enabled
                        && m.id == runtime.config.id
                        && m.device == runtime.config.device
                        && m.baud == runtime.config.baud
                        && m.pin == runtime.config.pin
                })
            });
        let reopened: Vec<Arc<str>> = retiring
            .iter()
            .filter(|runtime| config.modems.iter().any(|m| m.id.as_str() == &*runtime.id))
            .map(|runtime| runtime.id.clone())
            .collect();
        let stopping = retiring.into_iter().map(|runtime| {
            info!(modem = %runtime.id, "removed or re-configured: stopping its worker");
            // Paused first, so the dispatcher hands it nothing more while it finishes its message.
            runtime.handle.pause();
            runtime.stop(RELOAD_GRACE)
        });
        futures_util::future::join_all(stopping).await;

        // The running dispatcher stops between two steps and hands its jobs in flight to the new one.
        let inheritance = self.dispatch.hand_over().await;
        self.dispatch_stop.cancel();
        let _ = (&mut self.dispatcher).await;

        for (ordinal, modem) in config.modems.iter().enumerate().filter(|(_, m)| m.enabled) {
            let (mut runtime, was_paused) = match kept.iter().position(|r| r.config.id == modem.id)
            {
                Some(index) => {
                    let runtime = kept.swap_remove(index);
                    let was_paused = runtime.config.paused;
                    (runtime, Some(was_paused))
                }
                None => {
                    if reopened.iter().any(|id| **id == *modem.id.as_str()) {
                        info!(modem = %modem.id, "opening the re-configured modem again");
                    } else {
                        info!(modem = %modem.id, "starting a modem added by the configuration");
                    }
                    let runtime = modems::start(
                        modem,
                        ordinal,
                        self.options.instant_sims,
                        self.events.clone(),
                        &self.shutdown,
                    )
                    .with_context(|| format!("starting modem {}", modem.id))?;
                    (runtime, None)
                }
            };
            // A modem paused or resumed through the API stays so unless its own `paused` setting changed.
            if was_paused != Some(modem.paused) {
                if modem.paused {
                    runtime.handle.pause();
                } else {
                    runtime.handle.resume();
                }
            }
            runtime.config = modem.clone();
            self.runtimes.push(runtime);
        }
        self.modems.replace(&self.runtimes);

        self.dispatch_stop = self.shutdown.child_token();
        self.gate = gate(&self.store, &self.optouts, config, Some(&self.gate)).await?;
        let (dispatch, task) = dispatch::start(
            self.store.clone(),
            slots(&self.runtimes),
            dispatch_settings(config),
            self.gate.clone(),
            self.dispatch_stop.clone(),
            inheritance,
        )
        .await
        .context("restarting the dispatcher")?;
        // Messages accepted while the handle still pointed at the stopped dispatcher are on disk: once
        // rebound, the new dispatcher reloads the head of the queue and pages in the rest itself.
        self.dispatch.rebind(&dispatch);
        self.dispatcher = task;
        self.config = effective;
        info!(modems = self.runtimes.len(), "configuration reloaded");
        Ok(())
    }

    /// Stop accepting, let in-flight modem commands finish (bounded), flush, and wait for every task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.api.await;
        let _ = self.dispatcher.await;
        for runtime in self.runtimes {
            runtime.stop(SHUTDOWN_GRACE).await;
        }
        drop(self.events);
        let _ = self.hub.await;
        let _ = self.deliverer.await;
        let _ = self.store_watch.await;
        if let Some(retention) = self.retention {
            let _ = retention.await;
        }
        drop(self.dispatch_stop);
        match self.store.checkpoint().await {
            Ok(true) => {}
            Ok(false) => warn!("the write-ahead log is still in use; the next start will read it"),
            Err(error) => warn!(%error, "could not checkpoint the write-ahead log"),
        }
        info!("modemgate stopped");
    }
}

async fn open_store(
    config: &Config,
    options: &StartOptions,
    webhooks: Vec<Subscription>,
    inbound_verdict: store::Verdict,
) -> anyhow::Result<(Store, lock::DatabaseLock)> {
    let path = config.storage.path.clone();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the database directory {}", dir.display()))?;
    }
    // A database that was served before and is gone now was moved or deleted: starting a new, empty one
    // in its place would forget the opt-outs, and texts would go to people who said STOP.
    if let Some(lock_file) = lock::left_behind(&path) {
        anyhow::bail!(
            "the database {} is missing, but {} shows that modemgate served it before: it was moved or \
             deleted. Put it back; or, to start with a new, empty database (no message history and no \
             opt-outs), delete {}",
            path.display(),
            lock_file.display(),
            lock_file.display()
        );
    }
    // Before the store opens: its start-up recovery must never run under another daemon's feet.
    let lock = lock::DatabaseLock::acquire(&path)?;
    let open = store::OpenOptions {
        clock: options.clock.clone(),
        resend_submitting: config.storage.resend_unknown_on_start,
        wal_limit_frames: config.storage.wal_limit_mb.frames(),
        webhooks,
        inbound_verdict: Some(inbound_verdict),
        ..store::OpenOptions::default()
    };
    let opening = tokio::task::spawn_blocking(move || Store::open(&path, open));
    let store = systemd::extending_start("opening the database (migrating or recovering)", opening)
        .await?
        .with_context(|| format!("opening the database {}", config.storage.path.display()))?;
    Ok((store, lock))
}

fn slots(runtimes: &[ModemRuntime]) -> Vec<ModemSlot> {
    runtimes
        .iter()
        .map(|r| ModemSlot {
            id: r.id.clone(),
            jobs: r.handle.jobs(),
            ready: r.handle.readiness(),
            health: r.handle.health(),
            quota: r.config.rate.quota(r.config.burst),
            daily_cap: r.config.daily_cap,
        })
        .collect()
}

/// The collections rules at hand-off: opt-outs, quiet hours in the recipient's zone, contact caps.
/// The collections gate for `config`, counting what `previous` (the gate a reload replaces) handed out.
async fn gate(
    store: &Store,
    optouts: &Arc<OptOuts>,
    config: &Config,
    previous: Option<&CollectionsGate>,
) -> anyhow::Result<Arc<CollectionsGate>> {
    let gate = CollectionsGate::load(
        store,
        optouts.clone(),
        config.quiet_hours.clone(),
        config.caps.clone(),
    )
    .await
    .context("loading the contact-cap history")?;
    if let Some(previous) = previous {
        gate.carry_over(previous);
    }
    Ok(Arc::new(gate))
}

fn dispatch_settings(config: &Config) -> dispatch::Settings {
    let d = &config.dispatch;
    dispatch::Settings {
        max_attempts: d.max_attempts,
        retry_backoff: d.retry_backoff,
        retry_backoff_max: d.retry_backoff_max,
        global: d.global_rate.as_ref().map(|rate| rate.quota(None)),
        sticky: d.sticky,
        ..dispatch::Settings::default()
    }
}

/// `modemgate serve --config PATH`.
pub async fn serve(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    crate::logging::init(&config.logging.level)?;
    let mut running = start(&config, StartOptions::default()).await?;
    // Handlers before the readiness notice: systemd may stop or reload the service as soon as it hears
    // it, and a SIGTERM landing before them killed the daemon outright instead of stopping it cleanly
    // (`tests/crash.rs`, a_clean_stop_logs_no_modem_warning, once in ~15 runs once it waited for READY).
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hangup = signal(tokio::signal::unix::SignalKind::hangup())?;
    systemd::ready();
    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);
    let mut failed = None;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                systemd::reloading();
                match Config::load(path) {
                    Ok(config) => {
                        // Part-way, the old dispatcher is gone and the new one may not have started: a
                        // daemon that accepts and never sends is worse than a restart (the queue is on disk;
                        // systemd's Restart=on-failure starts it again with the new configuration).
                        let reload = running.reload(&config);
                        if let Err(error) = keeping_alive(reload, &mut watchdog, systemd::keep_alive).await {
                            error!(error = format!("{error:#}"), "configuration reload failed part-way; stopping to be restarted");
                            failed = Some(error.context("configuration reload failed part-way"));
                            break;
                        }
                    }
                    // One journal line per problem, each with its PATH:LINE, as check-config prints them.
                    Err(errors) => {
                        for problem in errors.to_string().lines() {
                            error!(problem, "configuration reload refused; the running configuration stays");
                        }
                    }
                }
                systemd::ready();
            }
            _ = tick(&mut watchdog) => {
                systemd::keep_alive();
            }
        }
    }
    info!("stopping");
    systemd::stopping();
    running.stop().await;
    failed.map_or(Ok(()), Err)
}

fn signal(kind: tokio::signal::unix::SignalKind) -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).context("installing a signal handler")
}

/// Runs `work` while still telling systemd the daemon is alive: a reload waits up to 20 s for a modem's
/// command to finish, and, added to up to half a watchdog interval since the last keep-alive, that
/// outlasted `WatchdogSec=30s`, so systemd killed a daemon that was only reloading.
async fn keeping_alive<T>(
    work: impl Future<Output = T>,
    watchdog: &mut Option<tokio::time::Interval>,
    mut keep_alive: impl FnMut(),
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tick(watchdog) => keep_alive(),
        }
    }
}

/// The next watchdog tick, or never when systemd set no watchdog.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20-s reload under a 15-s keep-alive interval still sends one every 15 s.
    #[tokio::test(start_paused = true)]
    async fn keep_alives_go_on_while_a_reload_waits() {
        let mut watchdog = Some(tokio::time::interval(Duration::from_secs(15)));
        let mut sent = Vec::new();
        let start = tokio::time::Instant::now();
        let reload = tokio::time::sleep(Duration::from_secs(20));
        keeping_alive(reload, &mut watchdog, || sent.push(start.elapsed())).await;
        assert_eq!(sent, [Duration::ZERO, Duration::from_secs(15)]);
    }

    fn backlog(target: Option<&str>, pending: u64) -> store::WebhookBacklog {
        store::WebhookBacklog {
            target: target.map(str::to_owned),
            pending,
            oldest: None,
        }
    }

    #[test]
    fn reload_names_each_changed_section_it_cannot_apply() {
        let base =
            "[[webhooks]]\nurl = \"https://cms.example/hook\"\nsecret = \"one-secret-of-16+\"\n";
        let old = Config::parse(base).unwrap();
        let same = Config::parse(&format!(
            "[[api_keys]]\nname = \"k\"\ntoken = \"t\"\nscopes = [\"send\"]\n{base}"
        ))
        .unwrap();
        assert!(after_reload(&old, &same).1.is_empty(), "API keys reload");
        let new = Config::parse(
            "[server]\ndefault_region = \"GB\"\n[logging]\nlevel = \"debug\"\n\
             [[webhooks]]\nurl = \"https://cms.example/hook\"\nsecret = \"two-secret-of-16+\"\n",
        )
        .unwrap();
        let (effective, unapplied) = after_reload(&old, &new);
        assert_eq!(
            unapplied,
            ["[server]", "[[webhooks]]", "[logging]"],
            "a new secret alone is a change, though it is never printed"
        );
        // What runs is compared next time: going back to it is no change, repeating the edit still is.
        assert_eq!(effective.server, old.server);
        assert!(after_reload(&effective, &old).1.is_empty());
        assert_eq!(after_reload(&effective, &new).1.len(), 3);
    }

    /// The config's default log limit is the store's own: one is not allowed to drift from the other.
    #[test]
    fn the_default_log_limit_is_the_stores() {
        let config = Config::parse("").unwrap();
        assert_eq!(
            config.storage.wal_limit_mb.frames(),
            store::OpenOptions::default().wal_limit_frames
        );
        let small = Config::parse("[storage]\nwal_limit_mb = 64\n").unwrap();
        assert_eq!(small.storage.wal_limit_mb.frames(), 16_384);
    }

    /// New TLS files apply at a reload (a renewed certificate); turning TLS on or off waits for a restart.
    #[test]
    fn a_reload_takes_new_tls_files_but_not_tls_turned_on_or_off() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");
        let server = |extra: &str, cert: &str| {
            let pair =
                format!("tls_cert = \"{dir}/{cert}cert.pem\"\ntls_key = \"{dir}/{cert}key.pem\"\n");
            Config::parse(&format!("[server]\n{extra}{pair}")).unwrap()
        };
        let first = server("", "");
        let renewed = server("", "renewed-");
        let (effective, unapplied) = after_reload(&first, &renewed);
        assert!(unapplied.is_empty(), "{unapplied:?}");
        assert_eq!(effective.server.tls, renewed.server.tls);

        let plain = Config::parse("").unwrap();
        let (effective, unapplied) = after_reload(&plain, &first);
        assert_eq!((unapplied, effective.server.tls), (vec!["[server]"], None));
        let (effective, unapplied) = after_reload(&first, &plain);
        assert_eq!(unapplied, ["[server]"]);
        assert_eq!(effective.server.tls, first.server.tls);

        // Another [server] change waits, named once; the new files still apply.
        let both = server("default_region = \"GB\"\n", "renewed-");
        let (effective, unapplied) = after_reload(&first, &both);
        assert_eq!(unapplied, ["[server]"]);
        assert_eq!(effective.server.default_region, first.server.default_region);
        assert_eq!(effective.server.tls, renewed.server.tls);
    }

    #[test]
    fn only_backlogs_of_urls_no_webhook_has_are_unconfigured() {
        let targets = [Target::new("https://cms.example/hook", "s3cret", None).unwrap()];
        let configured = targets[0].url();
        let backlogs = [
            backlog(Some(&configured), 3),
            backlog(Some("https://old.example:8443/hook?token=abc"), 2),
            backlog(Some("https://gone.example/hook"), 0),
            backlog(None, 5),
        ];
        assert_eq!(
            unconfigured_backlogs(&backlogs, &targets),
            vec![("https://old.example:8443".to_owned(), 2)]
        );
    }
}
