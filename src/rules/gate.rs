//! The collections rules at hand-off: the dispatcher asks [`CollectionsGate`] about every message just before
//! a modem gets it. In order: the opt-out re-check (an opt-out that arrived while the message was queued
//! blocks it), the recipient's quiet hours (hold until the window opens), and contact caps (hold until a
//! send leaves the rolling window, or fail if the message would expire first).
//!
//! The gate runs on the dispatcher's task, so it never touches the store: opt-outs come from the shared
//! in-memory [`OptOuts`], and sends counted against caps from an in-memory log loaded at start, appended
//! to when the dispatcher hands a message to a modem, moved on to when its parts went out, and taken back
//! when one returns unsent (so a message cancelled or expired while it waited at a busy modem does not use
//! up its recipient's cap). Each send keeps the region it gave for the recipient's address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::dispatch::gate::{Decision, Gate};
use crate::store::{OPTED_OUT, QueueEntry, Store, StoreError};

use super::caps::{CapDecision, CapsConfig};
use super::optouts::OptOuts;
use super::quiet_hours::{self, QuietHoursConfig};

/// How long a message whose recipient has no usable time zone waits before it is looked at again. Nothing
/// about it changes by itself, but a hold must end somewhere, and its `expires_at` still applies.
pub const UNRESOLVED_RECHECK: SignedDuration = SignedDuration::from_hours(6);
/// Time allowed for each part of a message before its recipient's window closes: a send takes 2-4 s, with
/// a tail of 20-30 s on a busy network.
pub const PART_TIME: SignedDuration = SignedDuration::from_secs(30);

/// A send counted against a recipient's caps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Counted {
    /// When it counts from: its hand-off, then when its parts went out (later, if it waited at a modem).
    at: Timestamp,
    id: Uuid,
    /// The region it gave for the recipient's address.
    region: Option<String>,
}

/// Sends counted per recipient, oldest first.
type SendLog = HashMap<String, Vec<Counted>>;

/// The [`Gate`] the daemon gives the dispatcher.
pub struct CollectionsGate {
    optouts: Arc<OptOuts>,
    quiet_hours: QuietHoursConfig,
    caps: CapsConfig,
    /// Sends that count against caps, within the longest cap window. A std mutex: `check` is synchronous
    /// and holds it only to read and append one recipient's entries.
    log: Mutex<SendLog>,
}

impl CollectionsGate {
    /// Loads the sends still inside the longest cap window from the store.
    pub async fn load(
        store: &Store,
        optouts: Arc<OptOuts>,
        quiet_hours: QuietHoursConfig,
        caps: CapsConfig,
    ) -> Result<CollectionsGate, StoreError> {
        let since = store
            .now()
            .checked_sub(caps.longest_window())
            .unwrap_or(Timestamp::MIN);
        let mut log = SendLog::new();
        for send in store.recent_sends(since).await? {
            log.entry(send.recipient).or_default().push(Counted {
                at: send.at,
                id: send.message_id,
                region: send.region,
            });
        }
        Ok(CollectionsGate {
            optouts,
            quiet_hours,
            caps,
            log: Mutex::new(log),
        })
    }

    /// Takes over the hand-offs `previous` counted (a configuration reload replaces the gate): the store
    /// knows a send only once the modem has confirmed it, so a message handed out just before the reload
    /// would otherwise not count against a cap.
    pub fn carry_over(&self, previous: &CollectionsGate) {
        let earlier = previous.log.lock().unwrap_or_else(PoisonError::into_inner);
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        for (recipient, sends) in earlier.iter() {
            let known = log.entry(recipient.clone()).or_default();
            for send in sends {
                if !known.iter().any(|seen| seen.id == send.id) {
                    known.push(send.clone());
                }
            }
            known.sort_unstable();
        }
    }

    fn quiet_hours(&self, entry: &QueueEntry, now: Timestamp) -> Option<Decision> {
        let (until, reason) = match self.quiet_hours.check_recipient(
            now,
            &entry.to,
            entry.tz.as_deref(),
            entry.region.as_deref(),
        ) {
            quiet_hours::Decision::Allowed => self.closing_soon(entry, now)?,
            quiet_hours::Decision::HoldUntil(until, reason) => (until, reason),
            quiet_hours::Decision::Hold(reason) => (
                now.checked_add(UNRESOLVED_RECHECK)
                    .unwrap_or(Timestamp::MAX),
                reason,
            ),
        };
        Some(Decision::Hold {
            until,
            reason: reason.as_str().to_owned(),
            rule: Some("quiet_hours".into()),
        })
    }

    /// A message allowed now whose parts could not all go out before the window closes: held until the
    /// window after. The window is checked before the first part only (the rest of a message begun must
    /// follow, or the debtor gets half of it), so the last part of an 8-part text handed out at 20:59:50
    /// would go out after 21:00. The rest of a message already begun is never held here.
    fn closing_soon(
        &self,
        entry: &QueueEntry,
        now: Timestamp,
    ) -> Option<(Timestamp, quiet_hours::HoldReason)> {
        if entry.pinned_modem.is_some() {
            return None;
        }
        let closes = self.quiet_hours.window_closes(
            now,
            &entry.to,
            entry.tz.as_deref(),
            entry.region.as_deref(),
        )?;
        let needed = PART_TIME * i32::from(entry.parts.max(1));
        if closes.duration_since(now) >= needed {
            return None;
        }
        match self.quiet_hours.check_recipient(
            closes,
            &entry.to,
            entry.tz.as_deref(),
            entry.region.as_deref(),
        ) {
            // Another window starts where this one ends.
            quiet_hours::Decision::Allowed => None,
            quiet_hours::Decision::HoldUntil(until, reason) => Some((until, reason)),
            quiet_hours::Decision::Hold(reason) => Some((
                now.checked_add(UNRESOLVED_RECHECK)
                    .unwrap_or(Timestamp::MAX),
                reason,
            )),
        }
    }

    /// Checks the caps against the sends counted so far (see [`Gate::handed_out`]).
    fn caps(&self, entry: &QueueEntry, now: Timestamp) -> Option<Decision> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let sends = log.get_mut(&entry.to)?;
        let horizon = now
            .checked_sub(self.caps.longest_window())
            .unwrap_or(Timestamp::MIN);
        sends.retain(|send| send.at > horizon);
        // The same message seen again (a retry after its send failed) counts once.
        let earlier = || sends.iter().filter(|send| send.id != entry.id);
        let previous: Vec<Timestamp> = earlier().map(|send| send.at).collect();
        // Where the recipient lives, as this message and the earlier ones said.
        let regions: Vec<&str> = entry
            .region
            .iter()
            .chain(earlier().filter_map(|send| send.region.as_ref()))
            .map(String::as_str)
            .collect();
        match self.caps.check(&entry.to, &regions, &previous, now) {
            CapDecision::Allowed => None,
            CapDecision::WaitUntil(until) if entry.expires_at.is_some_and(|at| at <= until) => {
                Some(Decision::Block {
                    code: "contact_cap".into(),
                    reason: format!(
                        "contact cap reached; the next send is allowed at {until}, after the message expires"
                    ),
                    rule: Some("contact_cap".into()),
                })
            }
            CapDecision::WaitUntil(until) => Some(Decision::Hold {
                until,
                reason: "contact_cap".into(),
                rule: Some("contact_cap".into()),
            }),
        }
    }
}

impl Gate for CollectionsGate {
    fn check(&self, entry: &QueueEntry, _modem: &str, now: Timestamp) -> Decision {
        if entry.category.is_exempt() {
            return Decision::Allow;
        }
        if self.optouts.contains(&entry.to) {
            return Decision::Block {
                code: OPTED_OUT.code.into(),
                reason: OPTED_OUT.reason.into(),
                rule: OPTED_OUT.rule.map(Into::into),
            };
        }
        self.quiet_hours(entry, now)
            .or_else(|| self.caps(entry, now))
            .unwrap_or(Decision::Allow)
    }

    fn send_by(&self, entry: &QueueEntry, now: Timestamp) -> Option<Timestamp> {
        if entry.category.is_exempt() {
            return None;
        }
        self.quiet_hours
            .window_closes(now, &entry.to, entry.tz.as_deref(), entry.region.as_deref())
    }

    fn handed_out(&self, entry: &QueueEntry, now: Timestamp) {
        if entry.category.is_exempt() {
            return;
        }
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let sends = log.entry(entry.to.clone()).or_default();
        sends.retain(|send| send.id != entry.id);
        sends.push(Counted {
            at: now,
            id: entry.id,
            region: entry.region.clone(),
        });
    }

    fn went_out(&self, entry: &QueueEntry, at: Timestamp) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(send) = log
            .get_mut(&entry.to)
            .and_then(|sends| sends.iter_mut().find(|send| send.id == entry.id))
        {
            send.at = send.at.max(at);
        }
    }

    fn returned(&self, entry: &QueueEntry) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sends) = log.get_mut(&entry.to) {
            sends.retain(|send| send.id != entry.id);
            if sends.is_empty() {
                log.remove(&entry.to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::caps::CapRule;
    use crate::rules::optouts::{OptOutSource, Origin};
    use crate::store::{Category, ManualClock, OpenOptions};

    fn at(text: &str) -> Timestamp {
        text.parse::<jiff::Zoned>().unwrap().timestamp()
    }

    fn entry(to: &str, category: Category) -> QueueEntry {
        QueueEntry {
            id: Uuid::now_v7(),
            to: to.into(),
            priority: 0,
            not_before: None,
            expires_at: None,
            tz: None,
            region: None,
            pinned_modem: None,
            attempts: 0,
            parts: 1,
            part_count: 1,
            category,
        }
    }

    async fn gate(caps: CapsConfig) -> (tempfile::TempDir, Arc<OptOuts>, CollectionsGate) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(at("2026-06-10T12:00:00[UTC]"));
        let options = OpenOptions {
            clock: Arc::new(clock),
            ..OpenOptions::default()
        };
        let store = Store::open(dir.path().join("db"), options).unwrap();
        let optouts = Arc::new(OptOuts::load(&store).await.unwrap());
        let gate =
            CollectionsGate::load(&store, optouts.clone(), QuietHoursConfig::default(), caps)
                .await
                .unwrap();
        (dir, optouts, gate)
    }

    #[tokio::test]
    async fn a_reloaded_gate_counts_what_the_previous_one_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = at("2026-06-10T12:00:00[America/New_York]");
        let options = OpenOptions {
            clock: Arc::new(ManualClock::new(t0)),
            ..OpenOptions::default()
        };
        let store = Store::open(dir.path().join("db"), options).unwrap();
        let optouts = Arc::new(OptOuts::load(&store).await.unwrap());
        let caps = CapsConfig {
            rules: vec![CapRule::new(vec![], 2, SignedDuration::from_hours(168)).unwrap()],
        };
        let load = || {
            CollectionsGate::load(
                &store,
                optouts.clone(),
                QuietHoursConfig::default(),
                caps.clone(),
            )
        };
        let before = load().await.unwrap();
        let to = "+16175550123";
        for _ in 0..2 {
            let handed = entry(to, Category::Standard);
            assert_eq!(before.check(&handed, "m1", t0), Decision::Allow);
            before.handed_out(&handed, t0);
        }
        // Neither send is confirmed yet, so the store has none of them.
        let after = load().await.unwrap();
        assert_eq!(
            after.check(&entry(to, Category::Standard), "m1", t0),
            Decision::Allow,
            "a gate that only reads the store lets a third through"
        );
        let after = load().await.unwrap();
        after.carry_over(&before);
        after.carry_over(&before);
        assert!(matches!(
            after.check(&entry(to, Category::Standard), "m1", t0),
            Decision::Hold { .. }
        ));
    }

    #[tokio::test]
    async fn opt_out_blocks_everything_but_confirmations() {
        let (_dir, optouts, gate) = gate(CapsConfig::default()).await;
        let boston = "+16175550123";
        let noon = at("2026-06-10T12:00:00[America/New_York]");
        assert_eq!(
            gate.check(&entry(boston, Category::Standard), "m1", noon),
            Decision::Allow
        );
        optouts
            .add(
                boston,
                OptOutSource::Keyword,
                Origin {
                    actor: "rules",
                    ..Origin::default()
                },
            )
            .await
            .unwrap();
        for category in [Category::Standard, Category::AutoReply] {
            assert_eq!(
                gate.check(&entry(boston, category), "m1", noon),
                Decision::Block {
                    code: "opted_out".into(),
                    reason: "the recipient opted out".into(),
                    rule: Some("optout".into())
                }
            );
        }
        // At 23:00 local, past the cap: a confirmation still goes.
        let late = at("2026-06-10T23:00:00[America/New_York]");
        assert_eq!(
            gate.check(&entry(boston, Category::Confirmation), "m1", late),
            Decision::Allow
        );
    }

    #[tokio::test]
    async fn quiet_hours_hold_until_the_window_opens() {
        let (_dir, _optouts, gate) = gate(CapsConfig::default()).await;
        let ny = "+12125550123";
        let morning = Decision::Hold {
            until: at("2026-06-11T08:00:00[America/New_York]"),
            reason: "quiet_hours".into(),
            rule: Some("quiet_hours".into()),
        };
        // Each part needs 30 s before 21:00, so the whole message is out before the window closes.
        let check = |parts: u16, pinned: bool, time: &str| {
            let mut entry = entry(ny, Category::Standard);
            entry.parts = parts;
            entry.pinned_modem = pinned.then(|| "m1".to_owned());
            gate.check(
                &entry,
                "m1",
                at(&format!("2026-06-10T{time}[America/New_York]")),
            )
        };
        assert_eq!(check(1, false, "20:59:30"), Decision::Allow);
        assert_eq!(check(1, false, "20:59:31"), morning);
        assert_eq!(check(8, false, "20:56:00"), Decision::Allow);
        assert_eq!(check(8, false, "20:56:01"), morning);
        // The rest of a message begun follows whatever the time: half a message is worse.
        assert_eq!(check(5, true, "20:59:59"), Decision::Allow);
        assert_eq!(
            gate.check(
                &entry(ny, Category::AutoReply),
                "m1",
                at("2026-06-10T21:00:00[America/New_York]")
            ),
            Decision::Hold {
                until: at("2026-06-11T08:00:00[America/New_York]"),
                reason: "quiet_hours".into(),
                rule: Some("quiet_hours".into())
            }
        );
        let now = at("2026-06-10T12:00:00[UTC]");
        assert_eq!(
            gate.check(&entry("+18005550123", Category::Standard), "m1", now),
            Decision::Hold {
                until: now.checked_add(UNRESOLVED_RECHECK).unwrap(),
                reason: "tz_unresolved".into(),
                rule: Some("quiet_hours".into())
            }
        );
    }

    /// A message that waited at a busy modem counts from when it went out, not from its hand-off: the
    /// rolling window is about texts the debtor got.
    #[tokio::test]
    async fn a_send_counts_from_when_it_went_out() {
        let caps = CapsConfig {
            rules: vec![CapRule::new(vec![], 1, SignedDuration::from_hours(24)).unwrap()],
        };
        let (_dir, _optouts, gate) = gate(caps).await;
        let to = "+12125550123";
        let t0 = at("2026-06-10T12:00:00[America/New_York]");
        let first = entry(to, Category::Standard);
        gate.handed_out(&first, t0);
        let out = t0.checked_add(SignedDuration::from_mins(10)).unwrap();
        gate.went_out(&first, out);
        let day_after_hand_off = t0.checked_add(SignedDuration::from_hours(24)).unwrap();
        assert_eq!(
            gate.check(&entry(to, Category::Standard), "m1", day_after_hand_off),
            Decision::Hold {
                until: out.checked_add(SignedDuration::from_hours(24)).unwrap(),
                reason: "contact_cap".into(),
                rule: Some("contact_cap".into()),
            }
        );
    }

    #[tokio::test]
    async fn caps_count_each_message_once_and_block_what_would_expire() {
        let caps = CapsConfig {
            rules: vec![CapRule::new(vec![], 2, SignedDuration::from_hours(168)).unwrap()],
        };
        let (_dir, _optouts, gate) = gate(caps).await;
        let to = "+12125550123";
        let t0 = at("2026-06-10T12:00:00[America/New_York]");
        let first = entry(to, Category::Standard);
        assert_eq!(gate.check(&first, "m1", t0), Decision::Allow);
        gate.handed_out(&first, t0);
        // Handed out again (a retry after its send failed): still one contact.
        assert_eq!(gate.check(&first, "m1", t0), Decision::Allow);
        gate.handed_out(&first, t0);
        let t1 = at("2026-06-11T12:00:00[America/New_York]");
        let second = entry(to, Category::Standard);
        assert_eq!(gate.check(&second, "m1", t1), Decision::Allow);
        gate.handed_out(&second, t1);
        let third = entry(to, Category::Standard);
        let until = t0.checked_add(SignedDuration::from_hours(168)).unwrap();
        let held = Decision::Hold {
            until,
            reason: "contact_cap".into(),
            rule: Some("contact_cap".into()),
        };
        assert_eq!(gate.check(&third, "m1", t1), held);
        let expiring = QueueEntry {
            expires_at: Some(until),
            ..entry(to, Category::Standard)
        };
        assert!(matches!(
            gate.check(&expiring, "m1", t1),
            Decision::Block { code, .. } if code == "contact_cap"
        ));
        // Confirmations neither wait for nor count against the cap.
        let confirmation = entry(to, Category::Confirmation);
        assert_eq!(gate.check(&confirmation, "m1", t1), Decision::Allow);
        gate.handed_out(&confirmation, t1);
        assert_eq!(gate.check(&third, "m1", t1), held);
        // Allowed but never handed out (a rate limit refused it), or handed back unsent: no contact.
        gate.returned(&second);
        assert_eq!(gate.check(&third, "m1", t1), Decision::Allow);
        assert_eq!(gate.check(&third, "m1", t1), Decision::Allow);
        gate.handed_out(&third, t1);
        assert!(matches!(
            gate.check(&entry(to, Category::Standard), "m1", t1),
            Decision::Hold { .. }
        ));
        assert_eq!(
            gate.check(&entry(to, Category::Standard), "m1", until),
            Decision::Allow
        );
    }
}
