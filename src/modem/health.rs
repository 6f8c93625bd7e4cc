//! Polling signal, registration (CS, PS and EPS separately: SMS can fail on LTE while data works),
//! operator and message storage, and deriving the coarse state shown to admins and used by dispatch.

use crate::at::command;
use crate::at::response::{Cpms, Operator, RegStatus, RegistrationReport, SignalQuality};

use super::{
    config::Timeouts,
    job::{FAILED_SENDS_DEGRADE, ModemHealth, ModemState, Registration},
    session::{Expect, Session, SessionError},
};

pub fn registration(stat: RegStatus) -> Registration {
    match stat {
        RegStatus::NotRegistered => Registration::NotRegistered,
        RegStatus::Home => Registration::Home,
        RegStatus::Searching => Registration::Searching,
        RegStatus::Denied => Registration::Denied,
        RegStatus::Unknown => Registration::Unknown,
        RegStatus::Roaming => Registration::Roaming,
        other if other.is_registered() => Registration::RegisteredOther,
        RegStatus::Other(_) => Registration::Unknown,
    }
}

fn is_registered(r: Registration) -> bool {
    matches!(
        r,
        Registration::Home | Registration::Roaming | Registration::RegisteredOther
    )
}

/// Ready when registered on CS or EPS (SMS over SGs/IMS), or when the modem reports no registration at all
/// (some do not implement the queries); degraded when it reports and none is registered, or when its last
/// [`FAILED_SENDS_DEGRADE`] sends all failed for reasons of its own (a registered modem whose every send
/// fails, e.g. with `+CMS ERROR: 500`, would otherwise keep taking jobs and costing each a retry).
pub fn state_of(h: &ModemHealth) -> ModemState {
    let reported: Vec<Registration> = [h.cs, h.eps].into_iter().flatten().collect();
    let registered = reported.is_empty() || reported.into_iter().any(is_registered);
    if registered && h.failed_sends < FAILED_SENDS_DEGRADE {
        ModemState::Ready
    } else {
        ModemState::Degraded
    }
}

/// Refresh signal, registrations, operator and storage in `h`; each query is best-effort.
pub async fn poll(
    session: &mut Session,
    t: &Timeouts,
    h: &mut ModemHealth,
) -> Result<(), SessionError> {
    let csq = session
        .command("AT+CSQ", Expect::info("+CSQ"), t.command)
        .await?;
    h.signal = csq
        .info("+CSQ")
        .next()
        .and_then(|b| SignalQuality::parse(&b).ok())
        .and_then(|q| q.rssi());
    h.cs = reg(session, t, "AT+CREG?", "+CREG").await?;
    h.ps = reg(session, t, "AT+CGREG?", "+CGREG").await?;
    h.eps = reg(session, t, "AT+CEREG?", "+CEREG").await?;
    let cops = session
        .command("AT+COPS?", Expect::info("+COPS"), t.command)
        .await?;
    h.operator = cops
        .info("+COPS")
        .next()
        .and_then(|b| Operator::parse(&b).ok())
        .and_then(|o| o.name);
    let cpms = session
        .command(command::CPMS_QUERY, Expect::info("+CPMS"), t.command)
        .await?;
    let usage = match cpms.info("+CPMS").next().map(|b| Cpms::parse(&b)) {
        Some(Ok(Cpms::Usage(usage))) => usage.into_iter().next(),
        _ => None,
    };
    h.storage_used = usage.as_ref().map(|u| u.used);
    h.storage_total = usage.as_ref().map(|u| u.total);
    Ok(())
}

/// What to tell an admin about the message storage, when it is full.
pub fn storage_warning(h: &ModemHealth) -> Option<String> {
    match (h.storage_used, h.storage_total) {
        (Some(used), Some(total)) if total > 0 && used >= total => Some(format!(
            "message storage full ({used}/{total}): no new SMS, replies included, can arrive until it has room"
        )),
        _ => None,
    }
}

async fn reg(
    session: &mut Session,
    t: &Timeouts,
    cmd: &str,
    name: &'static str,
) -> Result<Option<Registration>, SessionError> {
    let r = session.command(cmd, Expect::info(name), t.command).await?;
    Ok(r.info(name)
        .next()
        .and_then(|b| RegistrationReport::parse(name, &b).ok())
        .map(|r| registration(r.stat)))
}

/// Apply a `+CREG:`-family URC (`AT+CREG=1/2` modems report changes on their own).
pub fn apply_urc(h: &mut ModemHealth, name: &str, body: &str) {
    let (slot, name) = match name {
        "+CREG" => (&mut h.cs, "+CREG"),
        "+CGREG" => (&mut h.ps, "+CGREG"),
        "+CEREG" => (&mut h.eps, "+CEREG"),
        _ => return,
    };
    if let Ok(r) = RegistrationReport::parse(name, body) {
        *slot = Some(registration(r.stat));
    }
}
