//! Bringing a freshly opened modem into the state the worker relies on: echo off, numeric errors, SIM
//! unlocked, PDU mode, new-message indications, storage, identity. Every step has the fallbacks real
//! modems need; only what makes SMS impossible (no PDU mode, a locked SIM) fails initialisation.

use std::time::Duration;

use crate::at::{
    CmsError, Final, command,
    response::{CnmiSupport, Cpms, MemoryUsage, PinStatus, csms_service, own_number},
};

use super::{
    config::Timeouts,
    job::ModemIdentity,
    session::{Expect, Rejected, Response, Session, SessionError},
};

/// CNMI settings in order of preference: all of them announce stored messages with +CMTI; the first two
/// also route status reports (+CDS, or +CDSI when stored), the last gives up on reports.
pub const CNMI_VARIANTS: [[u8; 5]; 3] = [[2, 1, 2, 1, 0], [2, 1, 2, 2, 0], [2, 1, 0, 0, 0]];

/// How often and how long to wait on SIM busy / device busy right after power-up.
const BUSY_ATTEMPTS: u32 = 20;
const BUSY_PAUSE: Duration = Duration::from_millis(500);
/// Attempts at the first `AT`: UART modems that autobaud swallow the first one.
const PROBE_ATTEMPTS: u32 = 3;
/// How long a modem gets to answer the ESC that cancels a pending prompt: it answers from its own state,
/// without the network, so at once.
const ABORT_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error("SIM PIN required but none configured")]
    PinRequired,
    #[error("configured PIN was rejected; not retrying (the SIM locks after three wrong PINs)")]
    PinRejected,
    #[error("SIM not usable: {0}")]
    SimLocked(String),
    #[error("invalid PIN in configuration: {0}")]
    InvalidPin(#[from] command::CommandError),
}

/// What initialisation learnt.
#[derive(Debug, Clone)]
pub struct Initialised {
    pub identity: ModemIdentity,
    /// `AT+CSMS` service 1: routed `+CMT`/`+CDS` must be acknowledged with `AT+CNMA`.
    pub cnma_required: bool,
    /// The memory messages are read from and delivered to.
    pub memory: String,
    /// "SR" when the modem keeps status reports there: swept as well.
    pub report_memory: Option<String>,
    /// Its use after selection, when the modem said.
    pub storage: Option<MemoryUsage>,
    /// How many memories the modem took in `AT+CPMS` (3, 2 or 1): some refuse fewer than they were
    /// given at start-up, so later selections give as many.
    pub memory_count: usize,
    /// The CNMI setting accepted, if any (none: only the sweep finds new messages).
    pub cnmi: Option<[u8; 5]>,
}

/// Run the whole sequence. `pin_tried` is the worker's memory that the PIN was already refused once.
pub async fn initialise(
    session: &mut Session,
    t: &Timeouts,
    pin: Option<&str>,
    pin_rejected: &mut bool,
) -> Result<Initialised, InitError> {
    probe(session, t).await?;
    // Both are best-effort: a modem that keeps echoing or prints bare ERROR still works.
    busy_retry(session, command::ECHO_OFF, Expect::NOTHING, t).await?;
    busy_retry(session, command::CMEE_NUMERIC, Expect::NOTHING, t).await?;
    unlock_sim(session, t, pin, pin_rejected).await?;
    ok(
        busy_retry(session, command::PDU_MODE, Expect::NOTHING, t).await?,
        command::PDU_MODE,
    )?;
    // Phase 2+ makes the network redeliver a routed +CDS/+CMT until we acknowledge it after storing: no
    // report is lost if we stop in between. Refused: stay in phase 2, where none needs acknowledging.
    session
        .command("AT+CSMS=1", Expect::info("+CSMS"), t.command)
        .await?;
    let cnmi = choose_cnmi(session, t).await?;
    let storage = select_storage(session, t).await?;
    let cnma_required = match session
        .command("AT+CSMS?", Expect::info("+CSMS"), t.command)
        .await?
    {
        r if r.is_ok() => r.info("+CSMS").next().and_then(|b| csms_service(&b).ok()) == Some(1),
        _ => false,
    };
    let identity = read_identity(session, t).await?;
    session
        .command(command::COPS_FORMAT_LONG, Expect::NOTHING, t.command)
        .await?;
    Ok(Initialised {
        identity,
        cnma_required,
        memory: storage.memory,
        report_memory: storage.report_memory,
        memory_count: storage.count,
        storage: storage.usage,
        cnmi,
    })
}

/// `AT` until answered. After a silent attempt, ESC: a modem left at the PDU prompt by a killed process
/// answers nothing else until the prompt is cancelled. Then `ATQ0V1`, whatever it answers: a modem whose
/// saved profile turned result codes off or numeric would otherwise never seem to answer.
async fn probe(session: &mut Session, t: &Timeouts) -> Result<(), SessionError> {
    let mut last = None;
    for _ in 0..PROBE_ATTEMPTS {
        match session
            .command(command::PROBE, Expect::NOTHING, t.command)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e @ SessionError::Timeout { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
        if session.abort_prompt(ABORT_GRACE).await? {
            tracing::warn!("cancelled a PDU prompt left open on the modem (by a killed process?)");
        }
        match session
            .command(command::VERBOSE_RESULTS, Expect::NOTHING, ABORT_GRACE)
            .await
        {
            Ok(_) | Err(SessionError::Timeout { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(SessionError::Closed))
}

/// Retry while the SIM or the device says it is busy, as they do for a few seconds after power-up.
pub async fn busy_retry(
    session: &mut Session,
    cmd: &str,
    expect: Expect,
    t: &Timeouts,
) -> Result<Response, SessionError> {
    let mut attempt = 1;
    loop {
        let r = session.command(cmd, expect, t.command).await?;
        let busy = match &r.result {
            Final::Cme(e) => e.is_busy(),
            Final::Cms(CmsError(314)) => true,
            _ => false,
        };
        if !busy || attempt >= BUSY_ATTEMPTS {
            return Ok(r);
        }
        attempt += 1;
        tokio::time::sleep(BUSY_PAUSE).await;
    }
}

fn ok(r: Response, cmd: &str) -> Result<Response, Rejected> {
    if r.is_ok() {
        Ok(r)
    } else {
        Err(Rejected {
            command: cmd.to_owned(),
            result: r.result,
        })
    }
}

async fn unlock_sim(
    session: &mut Session,
    t: &Timeouts,
    pin: Option<&str>,
    pin_rejected: &mut bool,
) -> Result<(), InitError> {
    let expect = Expect {
        prefix: Some("+CPIN"),
        info_is_final_after: Some(Duration::from_millis(500)),
    };
    let mut entered = false;
    loop {
        let r = busy_retry(session, command::PIN_QUERY, expect, t).await?;
        let status = match (&r.result, r.info("+CPIN").next()) {
            (Final::Ok, Some(body)) => PinStatus::parse(&body),
            // A modem that answers OK and no status has no PIN to ask for.
            (Final::Ok, None) => PinStatus::Ready,
            (Final::Cme(e), _) if e.needs_pin() => PinStatus::SimPin,
            (Final::Cme(e), _) => return Err(InitError::SimLocked(e.to_string())),
            (other, _) => {
                return Err(Rejected {
                    command: command::PIN_QUERY.into(),
                    result: other.clone(),
                }
                .into());
            }
        };
        match status {
            PinStatus::Ready => return Ok(()),
            PinStatus::SimPin if entered => {
                // Accepted but not effective yet: the SIM takes a moment.
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            PinStatus::SimPin => {
                let pin = pin.ok_or(InitError::PinRequired)?;
                if *pin_rejected {
                    return Err(InitError::PinRejected);
                }
                let cmd = command::cpin(pin)?;
                let r = busy_retry(session, &cmd, Expect::NOTHING, t).await?;
                if !r.is_ok() {
                    *pin_rejected = true;
                    return Err(InitError::PinRejected);
                }
                entered = true;
            }
            PinStatus::SimPuk => return Err(InitError::SimLocked("SIM PUK required".into())),
            PinStatus::Other(what) => return Err(InitError::SimLocked(what)),
        }
    }
}

/// Try the CNMI variants in order, skipping those `AT+CNMI=?` says are not offered (offered ones may still
/// be refused, hence the fallback on error).
pub(super) async fn choose_cnmi(
    session: &mut Session,
    t: &Timeouts,
) -> Result<Option<[u8; 5]>, SessionError> {
    let test = session
        .command(command::CNMI_TEST, Expect::info("+CNMI"), t.command)
        .await?;
    let support = test
        .info("+CNMI")
        .next()
        .and_then(|b| CnmiSupport::parse(&b).ok());
    let offered = CNMI_VARIANTS
        .iter()
        .filter(|v| support.as_ref().is_none_or(|s| s.allows(&v[..])));
    // If the test answer rules everything out, it is wrong somewhere: try them all.
    let candidates: Vec<[u8; 5]> = match offered.copied().collect::<Vec<_>>() {
        v if v.is_empty() => CNMI_VARIANTS.to_vec(),
        v => v,
    };
    for values in candidates {
        if busy_retry(session, &command::cnmi(values), Expect::NOTHING, t)
            .await?
            .is_ok()
        {
            return Ok(Some(values));
        }
    }
    tracing::warn!(
        "no CNMI setting accepted: new messages will only be found by the periodic sweep"
    );
    Ok(None)
}

/// The storage choice: where messages are read from and delivered to, and where reports are kept apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Storage {
    memory: String,
    report_memory: Option<String>,
    usage: Option<MemoryUsage>,
    /// How many memories `AT+CPMS` took.
    count: usize,
}

/// Prefer the SIM ("SM") for all three memories, else the first the modem offers; some modems refuse three
/// memories, so fall back to two, then one. "SR", when offered for reading, is swept for reports too.
async fn select_storage(session: &mut Session, t: &Timeouts) -> Result<Storage, SessionError> {
    let test = session
        .command(command::CPMS_TEST, Expect::info("+CPMS"), t.command)
        .await?;
    let readable = match test.info("+CPMS").next().and_then(|b| Cpms::parse(&b).ok()) {
        Some(Cpms::Supported(mut groups)) if !groups.is_empty() => groups.swap_remove(0),
        _ => Vec::new(),
    };
    let memory = match readable.first() {
        Some(first) if !readable.iter().any(|m| m == "SM") => first.clone(),
        _ => "SM".to_owned(),
    };
    let report_memory =
        (memory != "SR" && readable.iter().any(|m| m == "SR")).then(|| "SR".to_owned());
    for count in (1..=3).rev() {
        let memories = vec![memory.as_str(); count];
        let r = busy_retry(session, &command::cpms(&memories), Expect::info("+CPMS"), t).await?;
        if r.is_ok() {
            let usage = match r.info("+CPMS").next().and_then(|b| Cpms::parse(&b).ok()) {
                Some(Cpms::Usage(u)) => u.into_iter().next(),
                _ => None,
            };
            return Ok(Storage {
                memory,
                report_memory,
                usage,
                count,
            });
        }
    }
    tracing::warn!(
        memory,
        "no CPMS selection accepted; using the modem's default storage"
    );
    Ok(Storage {
        memory,
        report_memory,
        usage: None,
        count: 1,
    })
}

async fn read_identity(session: &mut Session, t: &Timeouts) -> Result<ModemIdentity, SessionError> {
    Ok(ModemIdentity {
        manufacturer: value(session, t, command::MANUFACTURER, "+CGMI").await?,
        model: value(session, t, command::MODEL, "+CGMM").await?,
        revision: value(session, t, command::REVISION, "+CGMR").await?,
        imei: value(session, t, command::IMEI, "+CGSN").await?,
        imsi: value(session, t, command::IMSI, "+CIMI").await?,
        iccid: match value(session, t, command::ICCID, "+CCID").await? {
            Some(v) => Some(v),
            None => value(session, t, "AT+ICCID", "+ICCID").await?,
        },
        own_number: {
            let r = session
                .command(command::OWN_NUMBER, Expect::info("+CNUM"), t.command)
                .await?;
            r.info("+CNUM")
                .next()
                .and_then(|b| own_number(&b).ok().flatten())
        },
    })
}

/// A one-value answer, bare (`867...`) or prefixed (`+CGSN: 867...`, `+ICCID: 89...`); `None` on error.
async fn value(
    session: &mut Session,
    t: &Timeouts,
    cmd: &str,
    prefix: &'static str,
) -> Result<Option<String>, SessionError> {
    let r = session
        .command(cmd, Expect::info(prefix), t.command)
        .await?;
    if !r.is_ok() {
        return Ok(None);
    }
    Ok(r.lines.iter().find_map(|l| {
        let l = l.trim();
        let l = l
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(':'))
            .unwrap_or(l);
        let v = l.trim().trim_matches('"').trim();
        (!v.is_empty()).then(|| v.to_owned())
    }))
}
