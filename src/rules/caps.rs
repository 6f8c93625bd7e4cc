//! Contact caps: at most N messages per recipient in a rolling window (e.g. Massachusetts: 2 collector-initiated
//! texts per 7 days), globally or for numbers under given prefixes.
//!
//! A send at instant `t` counts while `now - window < t`: it stops counting exactly `window` after it was sent.

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

/// One cap.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawCapRule")]
pub struct CapRule {
    prefixes: Vec<String>,
    regions: Vec<String>,
    max: u32,
    window: SignedDuration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapRule {
    /// E.164 prefixes (`+1413`) the cap applies to; with no prefixes and no regions, every recipient.
    #[serde(default)]
    prefixes: Vec<String>,
    /// Regions of the recipient's address (a send's `region`: `US-MA`, or a whole country `US`) the cap
    /// applies to as well, whatever the number.
    #[serde(default)]
    regions: Vec<String>,
    max: u32,
    /// Length of the rolling window, e.g. `"168h"` or `"7d"`, read as every duration in the config is.
    #[serde(deserialize_with = "crate::config::values::duration")]
    window: std::time::Duration,
}

impl TryFrom<RawCapRule> for CapRule {
    type Error = String;

    fn try_from(raw: RawCapRule) -> Result<Self, String> {
        let window = SignedDuration::try_from(raw.window)
            .map_err(|_| format!("window {:?} is too long", raw.window))?;
        CapRule::new(raw.prefixes, raw.max, window)?.for_regions(raw.regions)
    }
}

impl CapRule {
    /// `max` must be at least 1 (a cap of 0 is a block list, not a cap) and `window` positive.
    pub fn new(prefixes: Vec<String>, max: u32, window: SignedDuration) -> Result<Self, String> {
        if max == 0 {
            return Err("max must be at least 1".into());
        }
        if !window.is_positive() {
            return Err(format!("window {window:#} must be positive"));
        }
        if let Some(bad) = prefixes.iter().find(|p| !is_e164_prefix(p)) {
            return Err(format!("prefix {bad:?} is not + followed by digits"));
        }
        Ok(CapRule {
            prefixes,
            regions: Vec::new(),
            max,
            window,
        })
    }

    /// The rule, applying also to recipients whose address is in one of `regions` (ISO 3166-1 or -2).
    pub fn for_regions(mut self, regions: Vec<String>) -> Result<Self, String> {
        if let Some(bad) = regions.iter().find(|r| !crate::rules::is_region(r)) {
            return Err(format!(
                "region {bad:?} is not an ISO 3166 code such as \"US\" or \"US-MA\""
            ));
        }
        self.regions = regions.iter().map(|r| r.to_ascii_uppercase()).collect();
        Ok(self)
    }

    /// The address regions it applies to, as configured (upper case).
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// Whether the cap counts sends to `recipient`, whose address is in one of `regions` as far as the
    /// sender said (on this message or on the earlier ones counted).
    fn applies_to(&self, recipient: &str, regions: &[&str]) -> bool {
        (self.prefixes.is_empty() && self.regions.is_empty())
            || self
                .prefixes
                .iter()
                .any(|p| recipient.starts_with(p.as_str()))
            || regions.iter().any(|region| {
                self.regions.iter().any(|r| {
                    region.eq_ignore_ascii_case(r)
                        || region
                            .split_once('-')
                            .is_some_and(|(country, _)| country.eq_ignore_ascii_case(r))
                })
            })
    }

    /// When this rule lets the next message go, given earlier sends to the recipient.
    fn wait_until(&self, previous: &[Timestamp], now: Timestamp) -> Option<Timestamp> {
        let since = now.checked_sub(self.window).unwrap_or(Timestamp::MIN);
        let mut counted: Vec<Timestamp> = previous.iter().copied().filter(|&t| t > since).collect();
        let excess = counted.len().checked_sub(self.max as usize)?;
        counted.sort_unstable();
        // Once the oldest `excess + 1` counted sends have left, one fewer than `max` remain.
        let leaving = counted.get(excess)?;
        Some(leaving.checked_add(self.window).unwrap_or(Timestamp::MAX))
    }
}

fn is_e164_prefix(prefix: &str) -> bool {
    prefix
        .strip_prefix('+')
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// `[caps]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapsConfig {
    /// Every rule that applies must allow the send. Default: Massachusetts area codes, 2 per 168 hours.
    pub rules: Vec<CapRule>,
}

/// At most two collector-initiated communications per 7 days (940 CMR 7.04(1)(f)), for these area codes.
pub const MASSACHUSETTS: [&str; 9] = [
    "+1339", "+1351", "+1413", "+1508", "+1617", "+1774", "+1781", "+1857", "+1978",
];
/// The region of a Massachusetts address.
pub const MASSACHUSETTS_REGION: &str = "US-MA";
const MASSACHUSETTS_MAX: u32 = 2;
const MASSACHUSETTS_WINDOW: SignedDuration = SignedDuration::from_hours(7 * 24);

impl Default for CapsConfig {
    fn default() -> Self {
        CapsConfig {
            rules: vec![CapRule {
                prefixes: MASSACHUSETTS.iter().map(|p| (*p).to_owned()).collect(),
                regions: vec![MASSACHUSETTS_REGION.to_owned()],
                max: MASSACHUSETTS_MAX,
                window: MASSACHUSETTS_WINDOW,
            }],
        }
    }
}

/// The verdict of the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapDecision {
    Allowed,
    /// Every applicable cap allows a send from this instant on.
    WaitUntil(Timestamp),
}

impl CapsConfig {
    /// How far back sends can matter: the longest window of any rule (zero without rules).
    pub fn longest_window(&self) -> SignedDuration {
        self.rules
            .iter()
            .map(|rule| rule.window)
            .max()
            .unwrap_or(SignedDuration::ZERO)
    }

    /// Whether every Massachusetts number is still capped at least as tightly as the built-in rule (two per
    /// seven days), which configured rules replace rather than join.
    pub fn caps_massachusetts_numbers(&self) -> bool {
        MASSACHUSETTS
            .iter()
            .all(|prefix| self.keeps_massachusetts(&format!("{prefix}5550100"), &[]))
    }

    /// Whether a number from elsewhere sent with `region` US-MA is capped as tightly as the built-in rule.
    pub fn caps_massachusetts_addresses(&self) -> bool {
        self.keeps_massachusetts("+12125550100", &[MASSACHUSETTS_REGION])
    }

    fn keeps_massachusetts(&self, number: &str, regions: &[&str]) -> bool {
        self.rules.iter().any(|rule| {
            rule.applies_to(number, regions)
                && rule.max <= MASSACHUSETTS_MAX
                && rule.window >= MASSACHUSETTS_WINDOW
        })
    }

    /// May a message go to `recipient` (E.164) at `now`, given the instants of earlier sends to it? Its
    /// address is in each of `regions`, as the sender said on this message or on the earlier sends
    /// counted: a CMS that gives `US-MA` on some texts to a person and not on others has said where they
    /// live.
    pub fn check(
        &self,
        recipient: &str,
        regions: &[&str],
        previous: &[Timestamp],
        now: Timestamp,
    ) -> CapDecision {
        self.rules
            .iter()
            .filter(|rule| rule.applies_to(recipient, regions))
            .filter_map(|rule| rule.wait_until(previous, now))
            .max()
            .map_or(CapDecision::Allowed, CapDecision::WaitUntil)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl CapsConfig {
        /// Both halves of the built-in rule kept, as check-config asks.
        fn caps_massachusetts(&self) -> bool {
            self.caps_massachusetts_numbers() && self.caps_massachusetts_addresses()
        }
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn configured_rules_are_checked_for_the_massachusetts_cap_they_replace() {
        let week = SignedDuration::from_hours(7 * 24);
        let rules = |rules: Vec<CapRule>| CapsConfig { rules };
        assert!(CapsConfig::default().caps_massachusetts());
        let everyone = |max| CapRule::new(vec![], max, week).unwrap();
        assert!(rules(vec![everyone(2)]).caps_massachusetts());
        assert!(!rules(vec![everyone(3)]).caps_massachusetts());
        let boston_only = CapRule::new(vec!["+1617".into()], 2, week).unwrap();
        assert!(!rules(vec![boston_only]).caps_massachusetts());
        // The numbers but not the addresses (a rule written before `regions`): not enough.
        let numbers_only = CapRule::new(MASSACHUSETTS.map(String::from).to_vec(), 2, week).unwrap();
        assert!(!rules(vec![numbers_only.clone()]).caps_massachusetts());
        let both = numbers_only.for_regions(vec!["us-ma".into()]).unwrap();
        assert!(rules(vec![both]).caps_massachusetts());
    }

    #[test]
    fn a_massachusetts_address_is_capped_whatever_its_number() {
        let caps = CapsConfig::default();
        let new_york = "+12125550123";
        let sent = [ts("2026-06-01T15:00:00Z"), ts("2026-06-03T10:00:00Z")];
        let now = ts("2026-06-05T12:00:00Z");
        assert_eq!(caps.check(new_york, &[], &sent, now), CapDecision::Allowed);
        assert_eq!(
            caps.check(new_york, &["US-MA"], &sent, now),
            CapDecision::WaitUntil(ts("2026-06-08T15:00:00Z"))
        );
        assert_eq!(
            caps.check(new_york, &["US-NY"], &sent, now),
            CapDecision::Allowed
        );
        // A rule for a whole country covers its subdivisions.
        let us = CapRule::new(vec![], 1, SignedDuration::from_hours(24))
            .unwrap()
            .for_regions(vec!["US".into()])
            .unwrap();
        let country = CapsConfig { rules: vec![us] };
        let later = ts("2026-06-03T12:00:00Z");
        assert!(matches!(
            country.check("+442071234567", &["US-TX"], &sent[1..], later),
            CapDecision::WaitUntil(_)
        ));
        assert_eq!(
            country.check("+442071234567", &[], &sent[1..], later),
            CapDecision::Allowed,
            "a rule with regions only does not cap everyone"
        );
        assert!(
            CapRule::new(vec![], 1, SignedDuration::from_hours(1))
                .unwrap()
                .for_regions(vec!["Massachusetts".into()])
                .is_err()
        );
    }

    #[test]
    fn third_message_in_168_hours_waits_exactly_until_the_oldest_leaves() {
        let caps = CapsConfig::default();
        let boston = "+16175550123";
        let sent = [ts("2026-06-01T15:00:00Z"), ts("2026-06-03T10:00:00Z")];
        let now = ts("2026-06-05T12:00:00Z");
        assert_eq!(
            caps.check(boston, &[], &sent[..1], now),
            CapDecision::Allowed
        );
        let until = ts("2026-06-08T15:00:00Z");
        assert_eq!(
            caps.check(boston, &[], &sent, now),
            CapDecision::WaitUntil(until)
        );
        // One nanosecond before 168 hours the oldest still counts; at exactly 168 hours it has left.
        let just_before = until.checked_sub(SignedDuration::from_nanos(1)).unwrap();
        assert_eq!(
            caps.check(boston, &[], &sent, just_before),
            CapDecision::WaitUntil(until)
        );
        assert_eq!(caps.check(boston, &[], &sent, until), CapDecision::Allowed);
        // Other states are not capped by default.
        assert_eq!(
            caps.check("+12125550123", &[], &sent, now),
            CapDecision::Allowed
        );
    }

    #[test]
    fn global_and_prefix_caps_combine_to_the_latest_wait() {
        let caps = CapsConfig {
            rules: vec![
                CapRule::new(vec![], 3, SignedDuration::from_hours(24)).unwrap(),
                CapRule::new(vec!["+1617".into()], 1, SignedDuration::from_hours(168)).unwrap(),
            ],
        };
        let sent = [
            ts("2026-06-01T00:00:00Z"),
            ts("2026-06-05T09:00:00Z"),
            ts("2026-06-05T10:00:00Z"),
        ];
        let now = ts("2026-06-05T11:00:00Z");
        // Elsewhere, the global cap: 2 in the last 24 h, fine.
        assert_eq!(
            caps.check("+12125550123", &[], &sent, now),
            CapDecision::Allowed
        );
        // In 617, 3 in the last 168 h with a cap of 1: wait until all three, the newest last, have left.
        assert_eq!(
            caps.check("+16175550123", &[], &sent, now),
            CapDecision::WaitUntil(ts("2026-06-12T10:00:00Z"))
        );
        let busy = [now, now, now];
        assert_eq!(
            caps.check("+12125550123", &[], &busy, now),
            CapDecision::WaitUntil(ts("2026-06-06T11:00:00Z"))
        );
    }

    #[test]
    fn rules_are_validated() {
        assert!(CapRule::new(vec![], 0, SignedDuration::from_hours(1)).is_err());
        assert!(CapRule::new(vec![], 1, SignedDuration::ZERO).is_err());
        assert!(CapRule::new(vec!["1617".into()], 1, SignedDuration::from_hours(1)).is_err());
    }
}
