//! Why a queued message is not moving, for `GET /v1/messages/{id}` and the lists of messages.
//!
//! A message the dispatcher cannot hand to any modem stays `queued`, which is true but tells the CMS
//! nothing: its texts may sit there until tomorrow because every SIM reached its daily cap, or until
//! someone plugs a modem back in. The dispatcher writes nothing per message for that (a campaign may hold
//! a hundred thousand queued messages when the caps close), so the reason is worked out when the message
//! is read, from the same facts the dispatcher acts on: each modem's state and what is left of its cap.

use jiff::Timestamp;

use super::backend::PartView;
use super::gateway::LiveModem;
use crate::modem::job::ModemState;
use crate::store::PartState;

/// Why no modem can take the message's remaining parts now, or `None` when one can (it then waits only
/// its turn, its modem's pace or the global pace).
///
/// The rest of a message that went out in part must come from the modem that sent its first parts (the
/// debtor's phone joins parts only from one sender), so that modem alone counts while it is configured;
/// otherwise any modem does. `modems` pairs each with the parts its SIM sent today; `cap_day_ends` is
/// when the caps count again from zero.
pub fn why_waiting(
    parts: &[PartView],
    modems: &[(LiveModem, u32)],
    cap_day_ends: Timestamp,
) -> Option<String> {
    let remaining = parts
        .iter()
        .filter(|p| p.status == PartState::Pending)
        .count();
    let remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
    let first_parts_from = parts
        .iter()
        .find(|p| matches!(p.status, PartState::Sent | PartState::Delivered))
        .and_then(|p| p.modem.as_deref());
    why(remaining, first_parts_from, modems, cap_day_ends)
}

/// [`why_waiting`] for a message none of whose `parts` has gone out (any modem may take it whole), read
/// without its part rows: what a list shows of a single-part message, or of one no modem ever took.
pub fn why_waiting_whole(
    parts: u16,
    modems: &[(LiveModem, u32)],
    cap_day_ends: Timestamp,
) -> Option<String> {
    why(u32::from(parts), None, modems, cap_day_ends)
}

fn why(
    remaining: u32,
    first_parts_from: Option<&str>,
    modems: &[(LiveModem, u32)],
    cap_day_ends: Timestamp,
) -> Option<String> {
    if let Some(pinned) = first_parts_from.and_then(|id| modems.iter().find(|(m, _)| m.id == id)) {
        return obstacle(pinned, remaining, cap_day_ends).map(|why| {
            format!(
                "waiting for modem {id}, which sent its first parts and must send the rest: {why} \
                 (removed from the config, the whole message goes again from another modem)",
                id = pinned.0.id
            )
        });
    }
    if modems.is_empty() {
        return Some("waiting: no modem is configured".to_owned());
    }
    let obstacles = modems
        .iter()
        .map(|m| obstacle(m, remaining, cap_day_ends).map(|why| format!("{} {why}", m.0.id)))
        .collect::<Option<Vec<_>>>()?;
    Some(format!(
        "waiting: no modem can send it now ({})",
        obstacles.join("; ")
    ))
}

/// What keeps `modem` (with what its SIM sent today) from taking `parts` more parts now, if anything.
fn obstacle(
    (modem, sent_today): &(LiveModem, u32),
    parts: u32,
    cap_day_ends: Timestamp,
) -> Option<String> {
    let state = match modem.health.state {
        ModemState::Ready => None,
        ModemState::Initialising => Some("is initialising"),
        ModemState::Degraded => Some("is degraded"),
        ModemState::Offline => Some("is offline"),
        ModemState::Paused => Some("is paused"),
    };
    if let Some(state) = state {
        return Some(match &modem.health.last_error {
            Some(error) if modem.health.state != ModemState::Paused => format!("{state}: {error}"),
            _ => state.to_owned(),
        });
    }
    let cap = modem.daily_cap?.get();
    let left = cap.saturating_sub(*sent_today);
    if left >= parts {
        return None;
    }
    let cap = counted(cap);
    Some(if left == 0 {
        format!("reached its daily cap of {cap} until {cap_day_ends}")
    } else {
        format!(
            "has {left} of its daily cap of {cap} left until {cap_day_ends}, and the message needs {parts}"
        )
    })
}

fn counted(parts: u32) -> String {
    match parts {
        1 => "1 part".to_owned(),
        n => format!("{n} parts"),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::modem::job::ModemHealth;

    fn modem(id: &str, state: ModemState, sent_today: u32, cap: Option<u32>) -> (LiveModem, u32) {
        let modem = LiveModem {
            id: id.to_owned(),
            health: ModemHealth::new(state),
            daily_cap: cap.and_then(NonZeroU32::new),
        };
        (modem, sent_today)
    }

    fn part(part: u16, status: PartState, modem: Option<&str>) -> PartView {
        PartView {
            part,
            status,
            modem: modem.map(str::to_owned),
            reference: None,
            sent_at: None,
            report_status: None,
            reported_at: None,
        }
    }

    fn midnight() -> Timestamp {
        "2026-11-24T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_message_one_modem_can_take_waits_for_nothing_worth_saying() {
        let parts = [part(1, PartState::Pending, None)];
        let modems = [
            modem("m1", ModemState::Offline, 0, None),
            modem("m2", ModemState::Ready, 99, Some(100)),
        ];
        assert_eq!(why_waiting(&parts, &modems, midnight()), None);
    }

    #[test]
    fn every_modem_out_of_reach_is_named_with_its_reason() {
        let parts = [
            part(1, PartState::Pending, None),
            part(2, PartState::Pending, None),
        ];
        let modems = [
            modem("m1", ModemState::Offline, 0, None),
            modem("m2", ModemState::Paused, 0, None),
            modem("m3", ModemState::Ready, 500, Some(500)),
            modem("m4", ModemState::Ready, 99, Some(100)),
        ];
        assert_eq!(
            why_waiting(&parts, &modems, midnight()).as_deref(),
            Some(
                "waiting: no modem can send it now (m1 is offline; m2 is paused; m3 reached its daily \
                 cap of 500 parts until 2026-11-24T00:00:00Z; m4 has 1 of its daily cap of 100 parts \
                 left until 2026-11-24T00:00:00Z, and the message needs 2)"
            )
        );
    }

    #[test]
    fn a_modems_last_error_says_why_it_is_offline() {
        let mut m1 = modem("m1", ModemState::Offline, 0, None);
        m1.0.health.last_error = Some("initialisation: SIM PIN required".into());
        let waiting = why_waiting(&[part(1, PartState::Pending, None)], &[m1], midnight());
        assert_eq!(
            waiting.as_deref(),
            Some(
                "waiting: no modem can send it now (m1 is offline: initialisation: SIM PIN required)"
            )
        );
    }

    #[test]
    fn the_rest_of_a_message_waits_for_the_modem_that_sent_its_first_parts() {
        let parts = [
            part(1, PartState::Sent, Some("m1")),
            part(2, PartState::Pending, None),
        ];
        let modems = [
            modem("m1", ModemState::Offline, 0, None),
            modem("m2", ModemState::Ready, 0, None),
        ];
        assert_eq!(
            why_waiting(&parts, &modems, midnight()).as_deref(),
            Some(
                "waiting for modem m1, which sent its first parts and must send the rest: is offline \
                 (removed from the config, the whole message goes again from another modem)"
            )
        );
        let back = [modem("m1", ModemState::Ready, 0, None)];
        assert_eq!(why_waiting(&parts, &back, midnight()), None);
    }

    #[test]
    fn the_rest_of_a_message_whose_modem_was_removed_may_go_anywhere() {
        let parts = [
            part(1, PartState::Delivered, Some("gone")),
            part(2, PartState::Pending, None),
        ];
        let modems = [modem("m2", ModemState::Ready, 0, None)];
        assert_eq!(why_waiting(&parts, &modems, midnight()), None);
    }

    #[test]
    fn no_modem_configured_is_said_plainly() {
        let parts = [part(1, PartState::Pending, None)];
        assert_eq!(
            why_waiting(&parts, &[], midnight()).as_deref(),
            Some("waiting: no modem is configured")
        );
    }
}
