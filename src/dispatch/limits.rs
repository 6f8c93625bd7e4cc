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
    /// What it enforces, so a reload that keeps a modem's rate can keep its limiter (and what it has
    /// already let through) rather than start a fresh burst.
    quota: Quota,
    /// Permits a message longer than the burst went out without: taken before anything else goes.
    owed: u32,
}

impl Limiter {
    pub fn new(quota: Quota, clock: Arc<dyn Clock>) -> Self {
        let clock = RateClock(clock);
        Limiter {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            burst: quota.burst_size().get(),
            quota,
            owed: 0,
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Takes `cells` permits, or says from when they can be had, on the injected clock. Never sleeps.
    ///
    /// A message of more parts than the burst could never have all its permits at once: it goes with
    /// a burst's worth and owes the rest, which the next message waits for, so parts keep to the rate
    /// (a 3-part message at 6/min with no burst holds the modem for 30 s, not 10).
    ///
    /// An instant, not a wait: a wait measured from a later reading of the clock than the caller's own
    /// `now` and added to that `now` came out early, zero when the permit fell between the two readings,
    /// and a dispatcher with nothing else to wake it then slept with messages ready (a 95 s stall seen in
    /// a soak run).
    pub fn take(&mut self, cells: u32) -> Result<(), Timestamp> {
        while self.owed > 0 {
            let paid = self.owed.min(self.burst);
            self.check(paid)?;
            self.owed -= paid;
        }
        let cells = cells.max(1);
        let now = cells.min(self.burst);
        self.check(now)?;
        self.owed = cells - now;
        Ok(())
    }

    /// `cells` (1 to the burst) permits now, or the instant they can be had.
    fn check(&self, cells: u32) -> Result<(), Timestamp> {
        let cells = std::num::NonZeroU32::new(cells).unwrap_or(std::num::NonZeroU32::MIN);
        match self.limiter.check_n(cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(timestamp(not_until.earliest_possible())),
            // Unreachable: callers never ask for more than the burst. Waiting one second is safe.
            Err(_) => Err(after(self.clock.0.now(), Duration::from_secs(1))),
        }
    }
}

/// governor's instant (nanoseconds since the Unix epoch, see [`RateClock`]) as a time on our clock.
fn timestamp(at: Nanos) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(at.as_u64())).unwrap_or(Timestamp::MAX)
}

/// `at + wait` on the injected clock's time line.
pub(crate) fn after(at: Timestamp, wait: Duration) -> Timestamp {
    at.checked_add(wait).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::store::ManualClock;

    /// 6/min with no burst on a manual clock: a permit every 10 s.
    fn six_a_minute() -> (Timestamp, ManualClock, Limiter) {
        let start: Timestamp = "2026-03-02T15:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        let limiter = Limiter::new(
            Quota::per_minute(NonZeroU32::new(6).unwrap()).allow_burst(NonZeroU32::MIN),
            Arc::new(clock.clone()),
        );
        (start, clock, limiter)
    }

    #[test]
    fn a_refusal_names_the_instant_the_permit_comes_whenever_the_clock_is_read() {
        let (start, clock, mut limiter) = six_a_minute();
        assert_eq!(limiter.take(1), Ok(()));
        let due = start + jiff::SignedDuration::from_secs(10);
        assert_eq!(limiter.take(1), Err(due));
        // Read later, the answer is the same instant, not a shorter wait from a later reading.
        clock.advance(Duration::from_millis(9_999));
        assert_eq!(limiter.take(1), Err(due));
        clock.advance(Duration::from_millis(1));
        assert_eq!(limiter.take(1), Ok(()));
    }

    #[test]
    fn a_message_longer_than_the_burst_makes_the_next_wait_for_all_its_parts() {
        let (start, clock, mut limiter) = six_a_minute();
        assert_eq!(limiter.take(3), Ok(()));
        // Its second and third parts take the next two 10 s slots; the next message the third.
        assert!(limiter.take(1).is_err());
        clock.advance(Duration::from_secs(10));
        assert!(limiter.take(1).is_err());
        clock.advance(Duration::from_secs(10));
        let due = start + jiff::SignedDuration::from_secs(30);
        assert_eq!(limiter.take(1), Err(due));
        clock.advance(Duration::from_secs(10));
        assert_eq!(limiter.take(1), Ok(()));
    }
}
