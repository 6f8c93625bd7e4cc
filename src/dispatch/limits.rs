//! Pacing: governor rate limiters that read the store's injected clock, so tests move them with the rest.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use jiff::Timestamp;

use crate::store::Clock;

/// How many of a modem's last messages [`Limiter::resuming`] replays, after a rate change at a reload or
/// at the daemon's start: enough for any burst an operator configures for a SIM.
const REMEMBERED: usize = 16;

/// The injected clock as governor sees it: nanoseconds since the Unix epoch.
///
/// It can be pinned to an instant in the past for a moment, so a successor limiter can be put in the
/// state its predecessor's sends leave it (governor has no other way to set a limiter's state).
#[derive(Clone)]
struct RateClock {
    clock: Arc<dyn Clock>,
    /// Nanoseconds since the epoch it reads while pinned; 0: not pinned.
    pinned: Arc<AtomicU64>,
}

impl RateClock {
    fn timestamp(&self) -> Timestamp {
        self.clock.now()
    }

    fn pin(&self, at: Timestamp) {
        self.pinned.store(nanos(at).as_u64(), Ordering::Relaxed);
    }

    fn unpin(&self) {
        self.pinned.store(0, Ordering::Relaxed);
    }
}

impl GovernorClock for RateClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self.pinned.load(Ordering::Relaxed) {
            0 => nanos(self.clock.now()),
            pinned => Nanos::from(Duration::from_nanos(pinned)),
        }
    }
}

fn nanos(at: Timestamp) -> Nanos {
    let nanos = at.as_nanosecond().max(1);
    Nanos::from(Duration::from_nanos(
        u64::try_from(nanos).unwrap_or(u64::MAX),
    ))
}

type Governor = RateLimiter<NotKeyed, InMemoryState, RateClock, NoOpMiddleware<Nanos>>;

/// A direct (unkeyed) limiter on the injected clock.
pub(crate) struct Limiter {
    limiter: Governor,
    clock: RateClock,
    burst: u32,
    /// What it enforces, so a reload that keeps a modem's rate can keep its limiter (and what it has
    /// already let through) rather than start a fresh burst.
    quota: Quota,
    /// Permits a message longer than the burst went out without: taken before anything else goes.
    owed: u32,
    /// The last messages let through (when, and how many parts), oldest first.
    recent: VecDeque<(Timestamp, u32)>,
}

impl Limiter {
    pub fn new(quota: Quota, clock: Arc<dyn Clock>) -> Self {
        let clock = RateClock {
            clock,
            pinned: Arc::new(AtomicU64::new(0)),
        };
        Limiter {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            burst: quota.burst_size().get(),
            quota,
            owed: 0,
            recent: VecDeque::with_capacity(REMEMBERED),
        }
    }

    /// Goes on from where `old` (the same SIM's limiter before a reload) left off: `old` itself when
    /// the rate is the same (what it let through stays spent: no fresh burst), else a limiter for this
    /// one's rate that counts from `old`'s last messages. So the first sends after a rate change come
    /// neither closer together than the new rate allows nor later than it asks (sends the old rate let
    /// through are not charged again at the new one).
    pub fn take_over(&mut self, old: Limiter) {
        *self = if old.quota == self.quota {
            old
        } else {
            Limiter::resuming(self.quota, self.clock.clock.clone(), old.recent)
        };
    }

    /// A limiter for `quota` that counts from `sends` (when each message went and how many parts it had,
    /// oldest first): the first send comes no sooner than `quota` allows after them. The daemon's start
    /// passes the store's record of the last sends, so a restart is no fresh burst either.
    pub fn resuming(
        quota: Quota,
        clock: Arc<dyn Clock>,
        sends: impl IntoIterator<Item = (Timestamp, u32)>,
    ) -> Self {
        let mut recent: VecDeque<(Timestamp, u32)> = sends.into_iter().collect();
        recent.drain(..recent.len().saturating_sub(REMEMBERED));
        let mut new = Limiter::new(quota, clock);
        let interval = quota.replenish_interval();
        let tolerance = interval.saturating_mul(quota.burst_size().get() - 1);
        // GCRA's theoretical arrival time under the new rate: each message moves it on by its parts. Each
        // went out under the old rate, so none is charged more than the new rate would have let it go
        // with (`at + tolerance`): sends the old, faster rate allowed are no debt under a slower one.
        let due = recent.iter().fold(None, |due, &(at, parts)| {
            let from = due.map_or(at, |due: Timestamp| due.min(after(at, tolerance)).max(at));
            Some(after(from, interval.saturating_mul(parts)))
        });
        let now = new.clock.timestamp();
        if let Some(due) = due
            && due > now
        {
            // One permit at `due - interval` leaves governor's state at `due`. Governor measures from
            // the instant it is built and rounds anything earlier up to it, so it is built no later.
            let first = due.checked_sub(interval).unwrap_or(due);
            new.clock.pin(first.min(now));
            new.limiter = RateLimiter::direct_with_clock(quota, new.clock.clone());
            new.clock.pin(first);
            let _first_permit = new.limiter.check();
            new.clock.unpin();
        }
        new.recent = recent;
        new
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
        if self.recent.len() == REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back((self.clock.timestamp(), cells));
        Ok(())
    }

    /// `cells` (1 to the burst) permits now, or the instant they can be had.
    fn check(&self, cells: u32) -> Result<(), Timestamp> {
        let cells = std::num::NonZeroU32::new(cells).unwrap_or(std::num::NonZeroU32::MIN);
        match self.limiter.check_n(cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(timestamp(not_until.earliest_possible())),
            // Unreachable: callers never ask for more than the burst. Waiting one second is safe.
            Err(_) => Err(after(self.clock.timestamp(), Duration::from_secs(1))),
        }
    }
}

/// governor's instant (nanoseconds since the Unix epoch, see [`RateClock`]) as a time on our clock.
fn timestamp(at: Nanos) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(at.as_u64())).unwrap_or(Timestamp::MAX)
}

/// How far back sends can still hold up a limiter for `quota`: a burst's worth and the longest message
/// of the sends [`Limiter::resuming`] replays. At most an hour, so a very slow rate does not make the
/// daemon's start read a day of every modem's sends (a send an hour ago holds up no rate of one an hour
/// or faster).
pub(crate) fn lookback(quota: Quota) -> Duration {
    let cells = quota.burst_size().get().saturating_add(REMEMBERED as u32);
    quota
        .replenish_interval()
        .saturating_mul(cells)
        .min(Duration::from_secs(3600))
}

/// `at - wait` on the injected clock's time line.
pub(crate) fn before(at: Timestamp, wait: Duration) -> Timestamp {
    at.checked_sub(wait).unwrap_or(Timestamp::MIN)
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

    fn start_clock() -> ManualClock {
        ManualClock::new("2026-03-02T15:00:00Z".parse().unwrap())
    }

    /// 6/min with no burst on a manual clock: a permit every 10 s.
    fn six_a_minute() -> (Timestamp, ManualClock, Limiter) {
        let clock = start_clock();
        let start = clock.now();
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

    fn per_minute(clock: &ManualClock, rate: u32, burst: u32) -> Limiter {
        let quota = Quota::per_minute(NonZeroU32::new(rate).unwrap())
            .allow_burst(NonZeroU32::new(burst).unwrap());
        Limiter::new(quota, Arc::new(clock.clone()))
    }

    /// `old` handed to a limiter for `rate`/min with `burst`, as a reload that changes the rate does.
    fn changed_to(old: Limiter, clock: &ManualClock, rate: u32, burst: u32) -> Limiter {
        let mut new = per_minute(clock, rate, burst);
        new.take_over(old);
        new
    }

    fn secs(n: i64) -> jiff::SignedDuration {
        jiff::SignedDuration::from_secs(n)
    }

    #[test]
    fn a_slower_rate_counts_from_the_last_send() {
        let (start, clock, mut old) = six_a_minute();
        assert_eq!(old.take(1), Ok(()));
        clock.advance(Duration::from_secs(10));
        // The old rate would allow one now; once a minute asks for a minute since the last send.
        let mut new = changed_to(old, &clock, 1, 1);
        assert_eq!(new.take(1), Err(start + secs(60)));
        clock.advance(Duration::from_secs(50));
        assert_eq!(new.take(1), Ok(()));
    }

    #[test]
    fn sends_a_faster_old_rate_allowed_are_no_debt_under_the_slower_new_one() {
        let clock = start_clock();
        let mut old = per_minute(&clock, 60, 1);
        for _ in 0..5 {
            assert_eq!(old.take(1), Ok(()));
            clock.advance(Duration::from_secs(1));
        }
        let last = clock.now() - secs(1);
        let mut new = changed_to(old, &clock, 20, 1);
        // 3 s after the last send, not 3 s for each of the five.
        assert_eq!(new.take(1), Err(last + secs(3)));
    }

    #[test]
    fn a_faster_rate_lets_the_next_send_go_one_new_interval_after_the_last() {
        let clock = start_clock();
        let start = clock.now();
        let mut old = per_minute(&clock, 1, 1);
        assert_eq!(old.take(1), Ok(()));
        clock.advance(Duration::from_secs(1));
        // Neither a fresh limiter's "at once" nor the old rate's minute: 2 s after the last send.
        let mut new = changed_to(old, &clock, 30, 1);
        assert_eq!(new.take(1), Err(start + secs(2)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(new.take(1), Ok(()));
        assert_eq!(new.take(1), Err(start + secs(4)));
    }

    #[test]
    fn a_limiter_idle_for_longer_than_the_new_interval_passes_nothing_on() {
        let (_, clock, mut old) = six_a_minute();
        assert_eq!(old.take(1), Ok(()));
        clock.advance(Duration::from_secs(3600));
        let mut new = changed_to(old, &clock, 1, 1);
        assert_eq!(new.take(1), Ok(()));
    }

    #[test]
    fn parts_owed_and_a_burst_carry_over_at_the_new_rate() {
        let (start, clock, mut old) = six_a_minute();
        // Three parts at once, then the change: at 12/min they hold the modem 15 s.
        assert_eq!(old.take(3), Ok(()));
        let mut new = changed_to(old, &clock, 12, 1);
        assert_eq!(new.take(1), Err(start + secs(15)));

        // Far in debt with a burst of 2: the first permit comes a burst's worth before the debt is
        // paid (3 parts at 1/min: due at +3 min, so the next may go at +2 min), not at once.
        let mut old = per_minute(&clock, 1, 1);
        assert_eq!(old.take(3), Ok(()));
        let mut new = changed_to(old, &clock, 1, 2);
        assert_eq!(new.take(1), Err(start + secs(120)));
    }

    #[test]
    fn the_same_rate_keeps_the_limiter_and_what_it_let_through() {
        let clock = start_clock();
        let mut old = per_minute(&clock, 6, 3);
        for _ in 0..3 {
            assert_eq!(old.take(1), Ok(()));
        }
        let mut new = changed_to(old, &clock, 6, 3);
        assert!(new.take(1).is_err(), "a reload is no fresh burst");
    }
}
