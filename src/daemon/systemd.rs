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

/// How often a long start-up step tells systemd it is still going.
const STILL_STARTING_EVERY: Duration = Duration::from_secs(20);

/// Runs a start-up step that can take minutes (migrating a large database, recovering after a crash)
/// while telling systemd every 20 s that start-up goes on. Without it `TimeoutStartSec` (90 s by default)
/// kills the daemon mid-migration, and as each migration is one transaction the restart begins it again:
/// a restart loop on exactly the databases that keep years of history. Each notice extends the start
/// timeout by three intervals, so one late notice does no harm; `doing` goes to `systemctl status`.
pub async fn extending_start<T>(doing: &str, step: impl Future<Output = T>) -> T {
    let extend = (STILL_STARTING_EVERY * 3).as_micros() as u32;
    while_pending(step, STILL_STARTING_EVERY, || {
        notify(&[
            NotifyState::ExtendTimeoutUsec(extend),
            NotifyState::Status(doing),
        ])
    })
    .await
}

/// Awaits `step`, calling `tick` every `every` until it is done (not at once: quick steps say nothing).
async fn while_pending<T>(
    step: impl Future<Output = T>,
    every: Duration,
    mut tick: impl FnMut(),
) -> T {
    tokio::pin!(step);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            biased;
            done = &mut step => return done,
            _ = ticks.tick() => tick(),
        }
    }
}

fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "could not notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_long_step_is_announced_every_interval_and_a_quick_one_not_at_all() {
        let mut ticks = 0;
        let slow = async {
            tokio::time::sleep(Duration::from_secs(50)).await;
            "migrated"
        };
        let done = while_pending(slow, Duration::from_secs(20), || ticks += 1).await;
        assert_eq!((done, ticks), ("migrated", 2));

        let mut ticks = 0;
        let quick = while_pending(async { 7 }, Duration::from_secs(20), || ticks += 1).await;
        assert_eq!((quick, ticks), (7, 0));
    }
}
