//! systemd integration (`Type=notify`): readiness, reload and stop notices, and watchdog keep-alives.
//!
//! Every call is a no-op outside systemd (no `NOTIFY_SOCKET`), so `modemgate serve` behaves the same from a
//! shell. Keep-alives come from the daemon's main loop on purpose: if that loop wedges, systemd restarts us.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tell systemd the daemon is up: the API listens and the queue is loaded.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// A configuration reload has started; [`ready`] ends it.
pub fn reloading() {
    notify(&[NotifyState::Reloading]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// How often to send keep-alives: half the unit's `WatchdogSec`, or `None` when there is no watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

pub fn keep_alive() {
    notify(&[NotifyState::Watchdog]);
}

fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "could not notify systemd");
    }
}
