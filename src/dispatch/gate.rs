//! The hook where collections rules (quiet hours, frequency caps, opt-out re-check) judge a message at the
//! moment it would be handed to a modem.

use jiff::Timestamp;

use crate::store::QueueEntry;

/// What a gate decides about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not now: try again at `until` (e.g. the recipient's quiet hours end then).
    Hold {
        until: Timestamp,
        reason: String,
        /// The rule that decided it, recorded in the event history.
        rule: Option<String>,
    },
    /// Never: the message fails with `code` (e.g. the recipient opted out).
    Block {
        code: String,
        reason: String,
        rule: Option<String>,
    },
}

/// Consulted before every hand-off; must be quick and must not block (it runs on the dispatcher's task).
pub trait Gate: Send + Sync + 'static {
    fn check(&self, message: &QueueEntry, modem: &str, now: Timestamp) -> Decision;

    /// For a message just allowed at `now`: when the permission lapses, if it does (the recipient's
    /// sending window closes). The modem may reach the message only when its current send ends; after
    /// this instant the message is withdrawn unsent and judged again.
    fn send_by(&self, _message: &QueueEntry, _now: Timestamp) -> Option<Timestamp> {
        None
    }

    /// A message allowed at `now` is on its way to a modem (called after `check` allowed it and the
    /// modem's rate limits let it go): the moment it counts against contact caps.
    fn handed_out(&self, _message: &QueueEntry, _now: Timestamp) {}

    /// A handed-out message's parts went out (or may have), the last by `at`: its contact counts from
    /// then when that is later than its hand-off (it may have waited minutes at a busy modem).
    fn went_out(&self, _message: &QueueEntry, _at: Timestamp) {}

    /// A handed-out message came back with nothing written (the modem could not take it, or it was
    /// withdrawn before its first PDU): it no longer counts as a contact.
    fn returned(&self, _message: &QueueEntry) {}
}

/// Lets everything through: the default until the rules are wired in.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Gate for AllowAll {
    fn check(&self, _message: &QueueEntry, _modem: &str, _now: Timestamp) -> Decision {
        Decision::Allow
    }
}
