//! The store's notion of now, injected so tests (and the dispatcher's) control time.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

/// A future that completes at a time on a [`Clock`]'s time line.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where every timestamp the store writes, and every wait the dispatcher makes, comes from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Completes once `now() >= at`. The default sleeps on tokio's timer for the difference.
    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let wait = at
            .duration_since(self.now())
            .try_into()
            .unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// Wall-clock time: production.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told: tests. Sleepers wake when it is moved past their time.
#[derive(Debug, Clone)]
pub struct ManualClock(watch::Sender<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(watch::Sender::new(start))
    }

    pub fn advance(&self, by: Duration) {
        self.0
            .send_modify(|now| *now = now.checked_add(by).unwrap_or(Timestamp::MAX));
    }

    pub fn set(&self, to: Timestamp) {
        self.0.send_replace(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.borrow()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let mut now = self.0.subscribe();
        Box::pin(async move {
            while *now.borrow_and_update() < at {
                if now.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

/// Wall-clock time that follows tokio's clock from a fixed start: under `tokio::time::pause` it advances
/// exactly as the runtime's timers do.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: Timestamp,
    origin: tokio::time::Instant,
}

impl TokioClock {
    pub fn new(start: Timestamp) -> Self {
        TokioClock {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.start
            .checked_add(self.origin.elapsed())
            .unwrap_or(Timestamp::MAX)
    }
}
