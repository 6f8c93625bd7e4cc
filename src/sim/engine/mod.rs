//! The modem's brain without I/O: bytes from the DTE go in, bytes for the DTE, timers to arm and send-log
//! entries come out through [`Out`]. The actor ([`super::actor`]) owns the pty and the clock and feeds this.
//!
//! Keeping it free of I/O means the whole command set can be reasoned about as a state machine: one
//! [`Phase`] at a time (command line, `> ` prompt, send in flight), URCs held back while a prompt or a send is
//! open (unless the interleaving fault is on), and every delayed thing (send completion, status report,
//! `+CNMA` timeout) a [`Timer`] the actor fires back in.

mod commands;
mod routing;
mod sending;

use std::collections::VecDeque;
use std::time::Duration;

use super::fault::{Faults, Rng};
use super::profile::Dialect;
use super::storage::{Mem, Storage};
use super::{Inbound, SimConfig, SimError};
use crate::pdu;

/// How often an unacknowledged `+CMT`/`+CDS` is re-delivered before the modem gives up, turns direct routing
/// off and stores the message instead (what real modems do when the TE never acknowledges).
const MAX_REDELIVERIES: u32 = 3;
/// Longest command line kept; longer input is dropped like a modem's overflowing buffer.
const MAX_LINE: usize = 1024;
/// TP-ST the simulated SMSC reports for numbers configured as undeliverable (permanent error,
/// "incompatible destination"; delivered is 0).
pub const STATUS_UNDELIVERABLE: u8 = 0x41;

/// One `AT+CMGS` the modem finished (successfully or not): the send log tests and the control API read.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedSend {
    /// The PDU hex as the DTE sent it (SMSC field included).
    pub pdu_hex: String,
    /// The `<length>` given to `AT+CMGS`.
    pub length: usize,
    pub submit: pdu::Submit,
    pub outcome: SendOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SendOutcome {
    /// Answered `+CMGS: <reference>`.
    Sent { reference: u8 },
    /// Answered `+CMS ERROR: <code>`.
    Failed { cms: u16 },
}

/// Something to do later; the actor sleeps for the given delay and hands it back to [`Engine::fire`].
#[derive(Debug, Clone)]
pub(crate) enum Timer {
    SendDone {
        id: u64,
    },
    StatusReport {
        reference: u8,
        recipient: String,
        submitted: jiff::Zoned,
        status: u8,
    },
    AckTimeout {
        id: u64,
    },
}

/// What one step of the engine produced.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub bytes: Vec<u8>,
    pub timers: Vec<(Duration, Timer)>,
    pub sends: Vec<LoggedSend>,
    /// Sends the modem took a PDU for in this step (each finishes later, in `sends`).
    pub started: usize,
}

#[derive(Debug)]
enum Final {
    Ok,
    Error,
    Unsupported,
    Cme(u16),
    Cms(u16),
}

enum Reply {
    Lines(Vec<String>),
    Prompt(PromptKind, usize),
    Fail(Final),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PromptKind {
    /// `AT+CMGS`: send to the network.
    Send,
    /// `AT+CMGW`: write to storage.
    Write,
}

#[derive(Debug)]
enum Phase {
    Command,
    Prompt {
        kind: PromptKind,
        length: usize,
        hex: String,
    },
    Sending {
        id: u64,
        send: LoggedSend,
        report: Option<Timer>,
    },
}

/// What a directly routed URC carries, so it can be stored if it is never acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routed {
    Deliver,
    Report,
}

#[derive(Debug, Clone)]
struct PendingAck {
    id: u64,
    kind: Routed,
    pdu: Vec<u8>,
    tries: u32,
}

/// `AT+CNMI` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cnmi {
    mode: u32,
    mt: u32,
    bm: u32,
    ds: u32,
    bfr: u32,
}

/// Settings that `ATZ` and a reboot restore.
#[derive(Debug, Clone)]
struct Settings {
    echo: bool,
    cmee: u32,
    cmgf: u32,
    cscs: String,
    /// mem1 (read/list/delete), mem2 (write), mem3 (receive).
    cpms: [Mem; 3],
    cnmi: Cnmi,
    csms: u32,
    /// `n` of +CREG, +CGREG, +CEREG.
    reg: [u32; 3],
}

impl Settings {
    fn power_on() -> Self {
        Settings {
            echo: true,
            cmee: 1,
            cmgf: 0,
            cscs: "GSM".into(),
            cpms: [Mem::Sm; 3],
            cnmi: Cnmi {
                mode: 0,
                mt: 0,
                bm: 0,
                ds: 0,
                bfr: 0,
            },
            csms: 0,
            reg: [0; 3],
        }
    }
}

const REG_COMMANDS: [&str; 3] = ["+CREG", "+CGREG", "+CEREG"];

pub(crate) struct Engine {
    cfg: SimConfig,
    dialect: &'static Dialect,
    pub faults: Faults,
    rng: Rng,
    settings: Settings,
    pin_ok: bool,
    busy_left: u32,
    next_reference: u8,
    concat_reference: u8,
    next_id: u64,
    phase: Phase,
    line: Vec<u8>,
    /// Bytes received while a send was in flight, processed after it completes.
    pending_input: Vec<u8>,
    /// URCs held back during a prompt or a send.
    deferred: Vec<Vec<String>>,
    storage: Storage,
    pending_ack: Option<PendingAck>,
    /// Directly routed messages waiting for the previous one's `+CNMA`.
    ack_queue: VecDeque<(Routed, Vec<u8>)>,
    /// Messages "the network" holds while storage is full.
    held: VecDeque<(Routed, Vec<u8>)>,
    /// URCs to print right after the current command's final result (`+CPIN: READY` after PIN entry).
    after_final: Vec<Vec<String>>,
}

impl Engine {
    pub fn new(cfg: SimConfig) -> Self {
        Engine {
            dialect: cfg.profile.dialect(),
            faults: cfg.faults.clone(),
            rng: Rng::new(cfg.seed),
            settings: Settings::power_on(),
            pin_ok: cfg.pin.is_none(),
            busy_left: 0,
            next_reference: cfg.first_reference,
            concat_reference: 0,
            next_id: 0,
            phase: Phase::Command,
            line: Vec::new(),
            pending_input: Vec::new(),
            deferred: Vec::new(),
            storage: Storage::new(cfg.storage_capacity),
            pending_ack: None,
            ack_queue: VecDeque::new(),
            held: VecDeque::new(),
            after_final: Vec::new(),
            cfg,
        }
    }

    /// Power-on: settings back to defaults, the boot burst printed. Storage (the SIM) survives; messages
    /// waiting for an acknowledgement are stored so a reboot loses nothing. A reboot cures a hang.
    pub fn boot(&mut self, out: &mut Out) {
        self.faults.hang = false;
        self.settings = Settings::power_on();
        self.pin_ok = self.cfg.pin.is_none();
        self.busy_left = self.dialect.busy_after_boot;
        self.phase = Phase::Command;
        self.line.clear();
        self.pending_input.clear();
        self.deferred.clear();
        let unacked = self.pending_ack.take().map(|p| (p.kind, p.pdu));
        for (kind, pdu) in unacked
            .into_iter()
            .chain(self.ack_queue.drain(..))
            .collect::<Vec<_>>()
        {
            self.store_routed(kind, pdu, false, out);
        }
        for line in self.dialect.boot {
            self.urc(vec![(*line).to_owned()], out);
        }
        if self.dialect.announces_cpin {
            self.urc(vec![self.cpin_state().to_owned()], out);
        }
        if self.pin_ok {
            self.sim_ready_burst(out);
        }
    }

    fn sim_ready_burst(&mut self, out: &mut Out) {
        for line in self.dialect.sim_ready {
            self.urc(vec![(*line).to_owned()], out);
        }
    }

    fn cpin_state(&self) -> &'static str {
        if self.pin_ok {
            "+CPIN: READY"
        } else {
            "+CPIN: SIM PIN"
        }
    }

    /// Bytes from the DTE.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Out) {
        if self.faults.hang {
            return;
        }
        for (i, &b) in bytes.iter().enumerate() {
            match &mut self.phase {
                Phase::Sending { .. } => {
                    self.pending_input
                        .extend_from_slice(bytes.get(i..).unwrap_or_default());
                    return;
                }
                Phase::Prompt { hex, .. } => match b {
                    0x1b => {
                        self.phase = Phase::Command;
                        self.final_result(Final::Ok, out);
                    }
                    0x1a => self.submit(out),
                    b if b.is_ascii_hexdigit() => {
                        if hex.len() < MAX_LINE {
                            hex.push(char::from(b));
                        }
                        self.echo(b, out);
                    }
                    _ => self.echo(b, out),
                },
                Phase::Command => match b {
                    b'\r' => {
                        self.echo(b, out);
                        let line = std::mem::take(&mut self.line);
                        self.exec_line(&String::from_utf8_lossy(&line), out);
                    }
                    b'\n' | 0x1a | 0x1b => {}
                    0x08 => {
                        self.line.pop();
                        self.echo(b, out);
                    }
                    b => {
                        if self.line.len() < MAX_LINE {
                            self.line.push(b);
                        }
                        self.echo(b, out);
                    }
                },
            }
        }
    }

    fn echo(&self, b: u8, out: &mut Out) {
        if self.settings.echo {
            out.bytes.push(b);
        }
    }

    /// A timer armed earlier has expired.
    pub fn fire(&mut self, timer: Timer, out: &mut Out) {
        match timer {
            Timer::SendDone { id } => self.finish_send(id, out),
            Timer::StatusReport {
                reference,
                recipient,
                submitted,
                status,
            } => self.status_report(reference, &recipient, &submitted, status, out),
            Timer::AckTimeout { id } => self.ack_timeout(id, out),
        }
    }

    /// Periodic vendor noise (Huawei `^RSSI`/`^BOOT`).
    pub fn noise(&mut self, out: &mut Out) {
        for line in self.dialect.noise {
            self.urc(vec![(*line).to_owned()], out);
        }
    }

    /// Replace the fault switches, printing what a real modem would on the changes (registration URCs).
    pub fn set_faults(&mut self, faults: Faults, out: &mut Out) {
        let registration_changed = faults.registration_lost != self.faults.registration_lost;
        self.faults = faults;
        if registration_changed {
            for (i, name) in REG_COMMANDS.iter().enumerate() {
                let n = self.settings.reg.get(i).copied().unwrap_or(0);
                if n > 0 {
                    let line = self.registration(name, n, true);
                    self.urc(vec![line], out);
                }
            }
        }
        self.settle_if_idle(out);
    }

    /// A message from "the network": encoded as SMS-DELIVER part(s) and routed as CNMI says. Returns the
    /// number of parts.
    pub fn inject(&mut self, inbound: &Inbound, out: &mut Out) -> Result<usize, SimError> {
        let now = jiff::Zoned::now();
        self.concat_reference = self.concat_reference.wrapping_add(1);
        let parts = pdu::encode_deliver(
            Some(&self.cfg.smsc),
            &inbound.from,
            &inbound.text,
            inbound.encoding.into(),
            &now,
            self.concat_reference,
        )
        .map_err(SimError::Encode)?;
        let count = parts.len();
        for part in parts {
            self.route(Routed::Deliver, part, out);
        }
        Ok(count)
    }

    // ---- output -----------------------------------------------------------------------------------------

    /// An unsolicited result: printed now, or held back while a prompt or a send is open (unless the
    /// interleaving fault is on, which is exactly what it breaks).
    fn urc(&mut self, lines: Vec<String>, out: &mut Out) {
        if self.faults.hang {
            return;
        }
        if matches!(self.phase, Phase::Command) || self.faults.interleave_urcs {
            self.write_urc(&lines, out);
        } else {
            self.deferred.push(lines);
        }
    }

    fn write_urc(&self, lines: &[String], out: &mut Out) {
        out.bytes.extend_from_slice(b"\r\n");
        for line in lines {
            out.bytes.extend_from_slice(line.as_bytes());
            out.bytes.extend_from_slice(b"\r\n");
        }
    }

    fn write_info(&self, lines: &[String], out: &mut Out) {
        if lines.is_empty() {
            return;
        }
        out.bytes.extend_from_slice(b"\r\n");
        for line in lines {
            out.bytes.extend_from_slice(line.as_bytes());
            out.bytes
                .extend_from_slice(self.dialect.info_eol.as_bytes());
        }
    }

    fn final_result(&mut self, result: Final, out: &mut Out) {
        if self.faults.interleave_urcs {
            self.write_urc(&[self.dialect.interleaved_urc.to_owned()], out);
        }
        let text = match result {
            Final::Ok => "OK".to_owned(),
            Final::Error => "ERROR".to_owned(),
            Final::Unsupported => self.dialect.unsupported.to_owned(),
            Final::Cme(code) => match self.settings.cmee {
                0 => "ERROR".to_owned(),
                1 => format!("+CME ERROR: {code}"),
                _ => format!("+CME ERROR: {}", cme_text(code)),
            },
            Final::Cms(code) => format!("+CMS ERROR: {code}"),
        };
        out.bytes
            .extend_from_slice(format!("\r\n{text}\r\n").as_bytes());
        for lines in std::mem::take(&mut self.deferred) {
            self.write_urc(&lines, out);
        }
        self.settle(out);
    }
}

fn cme_text(code: u16) -> &'static str {
    match code {
        3 => "operation not allowed",
        10 => "SIM not inserted",
        11 => "SIM PIN required",
        14 => "SIM busy",
        16 => "incorrect password",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Profile;

    #[test]
    fn send_takes_delay_plus_jitter_plus_slow_send_and_queues_input_meanwhile() {
        let mut cfg = SimConfig::instant(Profile::Plain);
        cfg.send_delay = Duration::from_secs(2);
        cfg.send_jitter = Duration::from_secs(2);
        cfg.faults.slow_send = Duration::from_secs(5);
        let mut engine = Engine::new(cfg);
        let mut out = Out::default();
        engine.feed(b"ATE0\r", &mut out);
        let part =
            &pdu::encode_submit("+15551234567", "hi", &pdu::SubmitOptions::default()).unwrap()[0];
        let mut delays = Vec::new();
        for reference in 1..=20u8 {
            let mut out = Out::default();
            let input = format!("AT+CMGS={}\r{}\x1aAT\r", part.tpdu_length, part.hex());
            engine.feed(input.as_bytes(), &mut out);
            assert_eq!(out.bytes, b"\r\n> ", "nothing but the prompt while sending");
            let Some((delay, Timer::SendDone { id })) = out.timers.pop() else {
                panic!("no send timer: {:?}", out.timers);
            };
            delays.push(delay);
            let mut done = Out::default();
            engine.fire(Timer::SendDone { id }, &mut done);
            assert_eq!(
                String::from_utf8_lossy(&done.bytes),
                format!("\r\n+CMGS: {reference}\r\n\r\nOK\r\n\r\nOK\r\n"),
                "the result, then the answer to the AT typed during the send"
            );
            assert_eq!(done.sends.len(), 1);
        }
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*min >= Duration::from_secs(7) && *max <= Duration::from_secs(9));
        assert!(max > min, "jitter varies the delay: {delays:?}");
    }

    #[test]
    fn stale_send_timer_after_reboot_is_ignored() {
        let mut engine = Engine::new(SimConfig::instant(Profile::Plain));
        let part =
            &pdu::encode_submit("+15551234567", "hi", &pdu::SubmitOptions::default()).unwrap()[0];
        let mut out = Out::default();
        engine.feed(
            format!("AT+CMGS={}\r{}\x1a", part.tpdu_length, part.hex()).as_bytes(),
            &mut out,
        );
        let Some((_, timer)) = out.timers.pop() else {
            panic!("no timer")
        };
        engine.boot(&mut Out::default());
        let mut after = Out::default();
        engine.fire(timer, &mut after);
        assert!(after.bytes.is_empty() && after.sends.is_empty());
    }
}
