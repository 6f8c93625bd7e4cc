//! Faults a simulated modem can be told to show, switchable at run time, and the seeded random source
//! behind the probabilistic ones (so a failing run can be replayed with the same seed).

use std::time::Duration;

/// Transient network causes drawn by [`Faults::transient_rate`]: unknown error (usually "not registered for
/// SMS"), network out of order, congestion.
pub const TRANSIENT_CMS: [u16; 3] = [500, 38, 42];
/// Permanent causes drawn by [`Faults::permanent_rate`]: short message rejected, unidentified subscriber.
pub const PERMANENT_CMS: [u16; 2] = [1, 27];

/// The fault switches of one simulated modem. All off by default. Serialised as the control API's
/// `/modems/{i}/faults` body; absent fields mean "off".
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability (0..=1) that a send fails with a transient `+CMS ERROR` from [`TRANSIENT_CMS`].
    pub transient_rate: f64,
    /// Probability (0..=1) that a send fails with a permanent `+CMS ERROR` from [`PERMANENT_CMS`].
    pub permanent_rate: f64,
    /// Fail the next `count` sends with `+CMS ERROR: code`; counts down as sends fail.
    pub fail_next: Option<FailNext>,
    /// Answer nothing at all (no echo, no results, no URCs) until the port is re-opened or this is cleared.
    pub hang: bool,
    /// Not registered: `+CREG: x,2`, `+CSQ: 99,99`, sends fail with `+CMS ERROR: 331`.
    pub registration_lost: bool,
    /// Message storage full: `+CPMS` reports it full, `AT+CMGW` fails with `+CMS ERROR: 322`, and inbound
    /// messages are held by "the network" and delivered in a flood once space frees up.
    pub storage_full: bool,
    /// Print a URC between every command and its answer, and before the CMGS prompt.
    pub interleave_urcs: bool,
    /// Extra time every send takes, on top of the configured send delay (JSON: milliseconds).
    #[serde(with = "millis")]
    pub slow_send: Duration,
}

/// "Fail the next `count` sends with `+CMS ERROR: code`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailNext {
    pub count: u32,
    pub code: u16,
}

impl Faults {
    /// The `+CMS ERROR` code the next send fails with, if any, consuming one `fail_next` count.
    pub(crate) fn send_failure(&mut self, rng: &mut Rng) -> Option<u16> {
        if self.registration_lost {
            return Some(331);
        }
        if let Some(fail) = self.fail_next.as_mut() {
            fail.count = fail.count.saturating_sub(1);
            let code = fail.code;
            if fail.count == 0 {
                self.fail_next = None;
            }
            return Some(code);
        }
        if rng.chance(self.permanent_rate) {
            return rng.pick(&PERMANENT_CMS);
        }
        if rng.chance(self.transient_rate) {
            return rng.pick(&TRANSIENT_CMS);
        }
        None
    }
}

/// `Duration` as integer milliseconds in JSON (`"slow_send": 2500`).
mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_millis)
    }
}

/// xorshift64*: small, seeded, good enough for fault dice and send jitter.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Zero is xorshift's fixed point.
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.unit() < probability
    }

    /// A uniformly chosen element, `None` for an empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let len = u64::try_from(items.len()).ok().filter(|&n| n > 0)?;
        items
            .get(usize::try_from(self.next_u64() % len).ok()?)
            .copied()
    }

    /// Uniform in [0, max].
    pub fn duration_up_to(&mut self, max: Duration) -> Duration {
        max.mul_f64(self.unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_counts_down_then_clears() {
        let mut rng = Rng::new(7);
        let mut f = Faults {
            fail_next: Some(FailNext { count: 2, code: 42 }),
            ..Faults::default()
        };
        assert_eq!(f.send_failure(&mut rng), Some(42));
        assert_eq!(f.fail_next, Some(FailNext { count: 1, code: 42 }));
        assert_eq!(f.send_failure(&mut rng), Some(42));
        assert_eq!(f.fail_next, None);
        assert_eq!(f.send_failure(&mut rng), None);
    }

    #[test]
    fn rates_draw_from_their_code_sets() {
        let mut rng = Rng::new(1);
        let mut f = Faults {
            transient_rate: 1.0,
            ..Faults::default()
        };
        for _ in 0..50 {
            let code = f.send_failure(&mut rng).unwrap();
            assert!(TRANSIENT_CMS.contains(&code), "{code}");
        }
        f = Faults {
            permanent_rate: 1.0,
            ..Faults::default()
        };
        let code = f.send_failure(&mut rng).unwrap();
        assert!(PERMANENT_CMS.contains(&code));
        // A half rate fails some and passes some.
        f = Faults {
            transient_rate: 0.5,
            ..Faults::default()
        };
        let failed = (0..200)
            .filter(|_| f.send_failure(&mut rng).is_some())
            .count();
        assert!((50..150).contains(&failed), "{failed}");
    }

    #[test]
    fn faults_json_defaults_absent_fields() {
        let f: Faults = serde_json::from_str(r#"{"hang": true, "slow_send": 1500}"#).unwrap();
        assert!(f.hang);
        assert_eq!(f.slow_send, Duration::from_millis(1500));
        assert_eq!(f.transient_rate, 0.0);
        assert!(serde_json::from_str::<Faults>(r#"{"hnag": true}"#).is_err());
    }
}
