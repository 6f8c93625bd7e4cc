//! Pacing: governor rate limiters that read the store's injected clock, so tests move them with the rest.

use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use jiff::Timestamp;

use crate::store::Clock;

/// The injected clock as governor sees it: nanoseconds since the Unix epoch.
#[derive(Clone)]
pub(crate) struct RateClock(pub Arc<dyn Clock>);

impl GovernorClock for RateClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let nanos = self.0.now().as_nanosecond().max(0);
        Nanos::from(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }
}

/// A direct (unkeyed) limiter on the injected clock.
pub(crate) struct Limiter {
    limiter: RateLimiter<NotKeyed, InMemoryState, RateClock, NoOpMiddleware<Nanos>>,
    clock: RateClock,
    burst: u32,
}

impl Limiter {
    pub fn new(quota: Quota, clock: Arc<dyn Clock>) -> Self {
        let clock = RateClock(clock);
        Limiter {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            burst: quota.burst_size().get(),
        }
    }

    /// Takes `cells` permits (at most the burst, so a long message is never refused forever), or says
    /// how long to wait. Never sleeps.
    pub fn take(&self, cells: u32) -> Result<(), Duration> {
        let cells = std::num::NonZeroU32::new(cells.clamp(1, self.burst))
            .unwrap_or(std::num::NonZeroU32::MIN);
        match self.limiter.check_n(cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // Unreachable after the clamp; waiting one second is a safe answer.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }
}

/// `at + wait` on the injected clock's time line.
pub(crate) fn after(at: Timestamp, wait: Duration) -> Timestamp {
    at.checked_add(wait).unwrap_or(Timestamp::MAX)
}
