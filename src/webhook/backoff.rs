//! When a failed delivery is tried again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

/// Exponential back-off with jitter: attempt n waits `min(cap, base * 2^(n-1))`, then a random-looking half
/// of that is kept ("equal jitter"), so receivers coming back up are not hit by every retry at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    /// Delay after the `attempts`-th failure of row `id`. The jitter is a hash of both, so it is spread
    /// across rows yet reproducible in tests.
    pub fn delay(&self, id: i64, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(31);
        let full = self.base.saturating_mul(1u32 << exponent).min(self.cap);
        let mut hasher = DefaultHasher::new();
        (id, attempts).hash(&mut hasher);
        let fraction = (hasher.finish() % 1_000_000) as f64 / 1_000_000.0;
        full / 2 + full.mul_f64(fraction / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let b = Backoff::default();
        for attempts in 1..=40u32 {
            let full = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(31)).min(b.cap);
            let d = b.delay(7, attempts);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempts}: {d:?} outside {full:?}/2..{full:?}"
            );
        }
        assert!(b.delay(7, 40) <= Duration::from_secs(3600));
        // Different rows do not retry in lock-step.
        let spread: std::collections::HashSet<_> = (0..20).map(|id| b.delay(id, 5)).collect();
        assert!(spread.len() > 10);
    }
}
