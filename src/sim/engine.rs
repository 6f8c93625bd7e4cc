//! The modem's brain without I/O: bytes from the DTE go in, bytes for the DTE, timers to arm and send-log
//! entries come out through [`Out`]. The actor ([`super::actor`]) owns the pty and the clock and feeds this.
//!
//! Keeping it free of I/O means the whole command set can be reasoned about as a state machine: one
//! [`Phase`] at a time (command line, `> ` prompt, send in flight), URCs held back while a prompt or a send is
//! open (unless the interleaving fault is on), and every delayed thing (send completion, status report,
//! `+CNMA` timeout) a [`Timer`] the actor fires back in.

use std::collections::VecDeque;
use std::time::Duration;

use super::command::{Command, Op, parse_line};
use super::fault::{Faults, Rng};
use super::profile::{CregStyle, Dialect};
use super::storage::{Mem, Stat, Storage, StoreError, Stored, tpdu_len};
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
        self.release_held(out);
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

    // ---- command line -------------------------------------------------------------------------------

    fn exec_line(&mut self, line: &str, out: &mut Out) {
        if line.trim().is_empty() {
            return;
        }
        let commands = match parse_line(line) {
            Ok(c) => c,
            Err(_) => return self.final_result(Final::Error, out),
        };
        if self.busy_left > 0 && commands.iter().any(|c| c.name.starts_with('+')) {
            self.busy_left -= 1;
            return self.final_result(Final::Cme(14), out);
        }
        let mut lines = Vec::new();
        for command in &commands {
            match self.exec(command) {
                Reply::Lines(l) => lines.extend(l),
                Reply::Prompt(kind, length) => {
                    self.write_info(&lines, out);
                    if self.faults.interleave_urcs {
                        self.write_urc(&[self.dialect.interleaved_urc.to_owned()], out);
                    }
                    out.bytes.extend_from_slice(b"\r\n> ");
                    self.phase = Phase::Prompt {
                        kind,
                        length,
                        hex: String::new(),
                    };
                    return;
                }
                Reply::Fail(f) => {
                    self.write_info(&lines, out);
                    return self.final_result(f, out);
                }
            }
        }
        self.write_info(&lines, out);
        self.final_result(Final::Ok, out);
    }

    fn exec(&mut self, cmd: &Command) -> Reply {
        let name = cmd.name.as_str();
        if !self.pin_ok && !allowed_without_pin(name) {
            return Reply::Fail(Final::Cme(11));
        }
        let d = self.dialect;
        let ok = || Reply::Lines(Vec::new());
        let one = |s: String| Reply::Lines(vec![s]);
        match (name, &cmd.op) {
            ("E", _) => {
                self.settings.echo = cmd.int_arg(0).unwrap_or(0) != 0;
                ok()
            }
            ("Z" | "&F", _) => {
                self.settings = Settings::power_on();
                ok()
            }
            ("V" | "Q" | "X" | "&C" | "&D" | "&W", _) => ok(),
            (s, _) if s.starts_with('S') && s.len() > 1 => ok(),
            ("I", _) => Reply::Lines(vec![
                d.manufacturer.into(),
                d.model.into(),
                format!("Revision: {}", d.revision),
            ]),
            ("+CGMI" | "+GMI", Op::Exec) => one(d.manufacturer.into()),
            ("+CGMM" | "+GMM", Op::Exec) => one(d.model.into()),
            ("+CGMR" | "+GMR", Op::Exec) => one(d.revision.into()),
            ("+CGSN" | "+GSN", Op::Exec) => one(self.cfg.imei.clone()),
            ("+CIMI", Op::Exec) => one(self.cfg.imsi.clone()),
            ("+CCID" | "+QCCID" | "+ICCID" | "^ICCID", Op::Exec | Op::Read) => {
                one(format!("{name}: {}", self.cfg.iccid))
            }
            ("+CMEE", op) => self.int_setting(op, name, 2, |s| &mut s.cmee),
            ("+CMGF", op) => self.int_setting(op, name, 1, |s| &mut s.cmgf),
            ("+CPIN", Op::Read) => one(self.cpin_state().into()),
            ("+CPIN", Op::Set(_)) => self.enter_pin(cmd.str_arg(0).unwrap_or_default()),
            ("+CFUN", Op::Read) => one("+CFUN: 1".into()),
            ("+CFUN", _) => ok(),
            ("+CSQ", Op::Exec) => {
                let rssi = if self.faults.registration_lost {
                    99
                } else {
                    self.cfg.rssi
                };
                one(format!("+CSQ: {rssi},99"))
            }
            ("+CSQ", Op::Test) => one("+CSQ: (0-31,99),(0-7,99)".into()),
            ("+CREG" | "+CGREG" | "+CEREG", op) => self.registration_command(name, op),
            ("+COPS", Op::Read) => one(if self.faults.registration_lost {
                "+COPS: 0".into()
            } else {
                format!("+COPS: 0,0,\"{}\",7", self.cfg.operator)
            }),
            ("+COPS", Op::Test) => one(format!(
                "+COPS: (2,\"{0}\",\"{0}\",\"00101\",7),,(0-4),(0-2)",
                self.cfg.operator
            )),
            ("+COPS", _) => ok(),
            ("+CSCA", Op::Read) => one(format!("+CSCA: \"{}\",145", self.cfg.smsc)),
            ("+CSCA", Op::Set(_)) => {
                if let Some(smsc) = cmd.str_arg(0).filter(|s| !s.is_empty()) {
                    self.cfg.smsc = smsc.to_owned();
                }
                ok()
            }
            ("+CSCS", Op::Read) => one(format!("+CSCS: \"{}\"", self.settings.cscs)),
            ("+CSCS", Op::Test) => one("+CSCS: (\"GSM\",\"IRA\",\"UCS2\")".into()),
            ("+CSCS", Op::Set(_)) => match cmd.str_arg(0).map(str::to_ascii_uppercase) {
                Some(set) if ["GSM", "IRA", "UCS2"].contains(&set.as_str()) => {
                    self.settings.cscs = set;
                    ok()
                }
                _ => Reply::Fail(Final::Error),
            },
            ("+CPMS", op) => self.cpms(cmd, op),
            ("+CNMI", op) => self.cnmi(cmd, op),
            ("+CSMS", Op::Read) => one(format!("+CSMS: {},1,1,1", self.settings.csms)),
            ("+CSMS", Op::Test) => one("+CSMS: (0,1)".into()),
            ("+CSMS", Op::Set(_)) => match cmd.int_arg(0) {
                Some(service @ 0..=1) => {
                    self.settings.csms = service;
                    one("+CSMS: 1,1,1".into())
                }
                _ => Reply::Fail(Final::Cms(303)),
            },
            ("+CNMA", Op::Exec | Op::Set(_)) => self.cnma(),
            ("+CMMS", _) if !d.supports_cmms => Reply::Fail(Final::Unsupported),
            ("+CMMS", Op::Read) => one("+CMMS: 0".into()),
            ("+CMMS", _) => ok(),
            ("+CNUM", Op::Exec) => one(format!("+CNUM: \"\",\"{}\",145", self.cfg.own_number)),
            ("+CMGS" | "+CMGW", Op::Set(_)) => {
                if self.settings.cmgf != 0 {
                    // Text mode is not simulated: the gateway speaks PDU mode only.
                    return Reply::Fail(Final::Cms(303));
                }
                match cmd.int_arg(0) {
                    Some(len @ 7..=164) => {
                        let kind = if name == "+CMGS" {
                            PromptKind::Send
                        } else {
                            PromptKind::Write
                        };
                        Reply::Prompt(kind, len as usize)
                    }
                    _ => Reply::Fail(Final::Cms(304)),
                }
            }
            ("+CMGR", Op::Set(_)) => self.cmgr(cmd),
            ("+CMGL", Op::Exec | Op::Set(_)) => self.cmgl(cmd),
            ("+CMGD", Op::Set(_)) => self.cmgd(cmd),
            _ => Reply::Fail(Final::Unsupported),
        }
    }

    fn int_setting(
        &mut self,
        op: &Op,
        name: &str,
        max: u32,
        field: impl Fn(&mut Settings) -> &mut u32,
    ) -> Reply {
        match op {
            Op::Read => Reply::Lines(vec![format!("{name}: {}", field(&mut self.settings))]),
            Op::Test => Reply::Lines(vec![format!("{name}: (0-{max})")]),
            Op::Set(args) => match args.first().and_then(|a| a.parse::<u32>().ok()) {
                Some(v) if v <= max => {
                    *field(&mut self.settings) = v;
                    Reply::Lines(Vec::new())
                }
                _ => Reply::Fail(Final::Error),
            },
            Op::Exec => Reply::Fail(Final::Error),
        }
    }

    fn enter_pin(&mut self, pin: &str) -> Reply {
        match &self.cfg.pin {
            _ if self.pin_ok => Reply::Fail(Final::Cme(3)),
            Some(expected) if expected == pin => {
                self.pin_ok = true;
                // Printed after the OK, as real modems do.
                if self.dialect.announces_cpin {
                    self.after_final.push(vec!["+CPIN: READY".into()]);
                }
                for line in self.dialect.sim_ready {
                    self.after_final.push(vec![(*line).to_owned()]);
                }
                Reply::Lines(Vec::new())
            }
            _ => Reply::Fail(Final::Cme(16)),
        }
    }

    fn registration_command(&mut self, name: &str, op: &Op) -> Reply {
        let Some(i) = REG_COMMANDS.iter().position(|r| *r == name) else {
            return Reply::Fail(Final::Unsupported);
        };
        match op {
            Op::Read => {
                let n = self.settings.reg.get(i).copied().unwrap_or(0);
                Reply::Lines(vec![self.registration(name, n, false)])
            }
            Op::Test => Reply::Lines(vec![format!("{name}: (0-2)")]),
            Op::Set(args) => match (
                args.first().and_then(|a| a.parse().ok()),
                self.settings.reg.get_mut(i),
            ) {
                (Some(n @ 0..=2), Some(slot)) => {
                    *slot = n;
                    Reply::Lines(Vec::new())
                }
                _ => Reply::Fail(Final::Error),
            },
            Op::Exec => Reply::Fail(Final::Error),
        }
    }

    /// `+CREG: <n>,<stat>[,<lac>,<ci>[,<AcT>]]` (read) or `+CREG: <stat>[,...]` (unsolicited).
    fn registration(&self, name: &str, n: u32, unsolicited: bool) -> String {
        let stat = if self.faults.registration_lost { 2 } else { 1 };
        let head = if unsolicited {
            format!("{name}: {stat}")
        } else {
            format!("{name}: {n},{stat}")
        };
        if n < 2 || self.faults.registration_lost {
            return head;
        }
        match self.dialect.creg_style {
            CregStyle::Quoted => format!("{head},\"5E25\",\"0605F01\",7"),
            CregStyle::UnquotedHex => format!("{head},4CA,81DE445"),
        }
    }

    fn cpms(&mut self, cmd: &Command, op: &Op) -> Reply {
        let counts = |e: &Engine, mem: Mem| {
            let total = e.storage.capacity(mem);
            let used = if e.faults.storage_full {
                total
            } else {
                e.storage.used(mem)
            };
            (used, total)
        };
        match op {
            Op::Test => Reply::Lines(vec![self.dialect.cpms_test.into()]),
            Op::Read => {
                let parts: Vec<String> = self
                    .settings
                    .cpms
                    .iter()
                    .map(|&m| {
                        let (u, t) = counts(self, m);
                        format!("\"{}\",{u},{t}", m.name())
                    })
                    .collect();
                Reply::Lines(vec![format!("+CPMS: {}", parts.join(","))])
            }
            Op::Set(args) => {
                let mut chosen = self.settings.cpms;
                for (i, arg) in args.iter().enumerate().take(3) {
                    match (Mem::parse(arg), chosen.get_mut(i)) {
                        (Some(mem), Some(slot)) => *slot = mem,
                        _ => return Reply::Fail(Final::Cms(302)),
                    }
                }
                if args.is_empty() || cmd.str_arg(0).is_some_and(str::is_empty) {
                    return Reply::Fail(Final::Cms(302));
                }
                self.settings.cpms = chosen;
                let parts: Vec<String> = chosen
                    .iter()
                    .map(|&m| {
                        let (u, t) = counts(self, m);
                        format!("{u},{t}")
                    })
                    .collect();
                Reply::Lines(vec![format!("+CPMS: {}", parts.join(","))])
            }
            Op::Exec => Reply::Fail(Final::Error),
        }
    }

    fn cnmi(&mut self, cmd: &Command, op: &Op) -> Reply {
        let c = self.settings.cnmi;
        match op {
            Op::Test => Reply::Lines(vec![self.dialect.cnmi_test.into()]),
            Op::Read => Reply::Lines(vec![format!(
                "+CNMI: {},{},{},{},{}",
                c.mode, c.mt, c.bm, c.ds, c.bfr
            )]),
            Op::Set(_) => {
                let arg = |i: usize, current: u32| cmd.int_arg(i).unwrap_or(current);
                let new = Cnmi {
                    mode: arg(0, c.mode),
                    mt: arg(1, c.mt),
                    bm: arg(2, c.bm),
                    ds: arg(3, c.ds),
                    bfr: arg(4, c.bfr),
                };
                let in_range =
                    new.mode <= 3 && new.mt <= 3 && new.bm <= 3 && new.ds <= 2 && new.bfr <= 1;
                if !in_range || (self.dialect.cnmi_refuses_ds1 && new.ds == 1) {
                    return Reply::Fail(Final::Cms(303));
                }
                self.settings.cnmi = new;
                Reply::Lines(Vec::new())
            }
            Op::Exec => Reply::Fail(Final::Error),
        }
    }

    /// Acknowledge the directly routed message; the next queued one follows the OK (see [`Engine::settle`]).
    fn cnma(&mut self) -> Reply {
        if self.settings.csms != 1 || self.pending_ack.take().is_none() {
            return Reply::Fail(Final::Cms(340));
        }
        Reply::Lines(Vec::new())
    }

    fn cmgr(&mut self, cmd: &Command) -> Reply {
        if self.settings.cmgf != 0 {
            return Reply::Fail(Final::Cms(303));
        }
        let mem = self.settings.cpms[0];
        let index = cmd.int_arg(0).map_or(0, |i| i as usize);
        match self.storage.read(mem, index) {
            Ok(stored) => Reply::Lines(vec![
                format!("+CMGR: {},,{}", stored.stat.code(), stored.tpdu_len()),
                hex::encode_upper(&stored.pdu),
            ]),
            Err(e) => Reply::Fail(Final::Cms(e.cms())),
        }
    }

    fn cmgl(&mut self, cmd: &Command) -> Reply {
        if self.settings.cmgf != 0 {
            return Reply::Fail(Final::Cms(303));
        }
        let filter = match cmd.int_arg(0).unwrap_or(0) {
            0 => Some(Stat::RecUnread),
            1 => Some(Stat::RecRead),
            2 => Some(Stat::StoUnsent),
            3 => Some(Stat::StoSent),
            4 => None,
            _ => return Reply::Fail(Final::Cms(302)),
        };
        let mem = self.settings.cpms[0];
        let mut lines = Vec::new();
        for (index, stored) in self.storage.list(mem, filter) {
            lines.push(format!(
                "+CMGL: {index},{},,{}",
                stored.stat.code(),
                stored.tpdu_len()
            ));
            lines.push(hex::encode_upper(&stored.pdu));
        }
        Reply::Lines(lines)
    }

    /// Freed space lets held messages in after the OK (see [`Engine::settle`]).
    fn cmgd(&mut self, cmd: &Command) -> Reply {
        let mem = self.settings.cpms[0];
        let result = match cmd.int_arg(1).unwrap_or(0) {
            0 => self
                .storage
                .delete(mem, cmd.int_arg(0).map_or(0, |i| i as usize)),
            flag @ 1..=4 => {
                self.storage.delete_by_flag(mem, flag);
                Ok(())
            }
            _ => return Reply::Fail(Final::Cms(302)),
        };
        match result {
            Ok(()) => Reply::Lines(Vec::new()),
            Err(e) => Reply::Fail(Final::Cms(e.cms())),
        }
    }

    // ---- sending ------------------------------------------------------------------------------------

    /// Ctrl-Z ended the prompt: check the PDU like a modem does, then send (after the delay) or store.
    fn submit(&mut self, out: &mut Out) {
        let Phase::Prompt { kind, length, hex } =
            std::mem::replace(&mut self.phase, Phase::Command)
        else {
            return;
        };
        let Some(bytes) = hex::decode(&hex)
            .ok()
            .filter(|b| tpdu_len(b) == Some(length))
        else {
            return self.final_result(Final::Cms(304), out);
        };
        if kind == PromptKind::Write {
            let stored = Stored {
                stat: Stat::StoUnsent,
                pdu: bytes,
            };
            let result = if self.faults.storage_full {
                Err(StoreError::Full)
            } else {
                self.storage.store(self.settings.cpms[1], stored)
            };
            return match result {
                Ok(index) => {
                    self.write_info(&[format!("+CMGW: {index}")], out);
                    self.final_result(Final::Ok, out);
                }
                Err(e) => self.final_result(Final::Cms(e.cms()), out),
            };
        }
        let submit = match pdu::decode(&bytes) {
            Ok(pdu::Pdu {
                tpdu: pdu::Tpdu::Submit(submit),
                ..
            }) => submit,
            _ => return self.final_result(Final::Cms(304), out),
        };
        let outcome = match self.faults.send_failure(&mut self.rng) {
            Some(cms) => SendOutcome::Failed { cms },
            None => {
                let reference = self.next_reference;
                self.next_reference = reference.wrapping_add(1);
                SendOutcome::Sent { reference }
            }
        };
        let report = match outcome {
            SendOutcome::Sent { reference } if submit.status_report_request => {
                let recipient = submit.recipient.value.clone();
                let status = if self.cfg.undeliverable.contains(&recipient) {
                    STATUS_UNDELIVERABLE
                } else {
                    0
                };
                Some(Timer::StatusReport {
                    reference,
                    recipient,
                    submitted: jiff::Zoned::now(),
                    status,
                })
            }
            _ => None,
        };
        let delay = self.cfg.send_delay
            + self.rng.duration_up_to(self.cfg.send_jitter)
            + self.faults.slow_send;
        self.next_id += 1;
        let id = self.next_id;
        self.phase = Phase::Sending {
            id,
            send: LoggedSend {
                pdu_hex: hex.to_ascii_uppercase(),
                length,
                submit,
                outcome,
            },
            report,
        };
        out.timers.push((delay, Timer::SendDone { id }));
    }

    fn finish_send(&mut self, id: u64, out: &mut Out) {
        if !matches!(self.phase, Phase::Sending { id: current, .. } if current == id) {
            // A send from before a reboot: its answer is lost with the port.
            return;
        }
        let Phase::Sending { send, report, .. } =
            std::mem::replace(&mut self.phase, Phase::Command)
        else {
            return;
        };
        match send.outcome {
            SendOutcome::Sent { reference } => {
                self.write_info(&[format!("+CMGS: {reference}")], out);
                self.final_result(Final::Ok, out);
            }
            SendOutcome::Failed { cms } => self.final_result(Final::Cms(cms), out),
        }
        out.sends.push(send);
        if let Some(report) = report {
            out.timers.push((self.cfg.report_delay, report));
        }
        let input = std::mem::take(&mut self.pending_input);
        self.feed(&input, out);
    }

    fn status_report(
        &mut self,
        reference: u8,
        recipient: &str,
        submitted: &jiff::Zoned,
        status: u8,
        out: &mut Out,
    ) {
        let discharged = jiff::Zoned::now();
        match pdu::encode_status_report(
            Some(&self.cfg.smsc),
            reference,
            recipient,
            submitted,
            &discharged,
            status,
        ) {
            Ok(report) => self.route(Routed::Report, report, out),
            Err(e) => {
                tracing::warn!(error = %e, recipient, "simulator cannot encode a status report")
            }
        }
    }

    // ---- routing of messages from the network ---------------------------------------------------------

    /// Deliver a message or a status report the way `AT+CNMI` asks: directly (`+CMT`/`+CDS`), or stored
    /// with (`+CMTI`/`+CDSI`) or without an indication.
    fn route(&mut self, kind: Routed, pdu: Vec<u8>, out: &mut Out) {
        let cnmi = self.settings.cnmi;
        let direct = match kind {
            Routed::Deliver => cnmi.mt == 2,
            Routed::Report => cnmi.ds == 1,
        };
        if direct {
            if self.settings.csms == 1 && self.pending_ack.is_some() {
                self.ack_queue.push_back((kind, pdu));
            } else {
                self.deliver_direct(kind, pdu, 0, out);
            }
            return;
        }
        let indicate = match kind {
            Routed::Deliver => matches!(cnmi.mt, 1 | 3),
            Routed::Report => cnmi.ds == 2,
        };
        self.store_routed(kind, pdu, indicate, out);
    }

    fn deliver_direct(&mut self, kind: Routed, pdu: Vec<u8>, tries: u32, out: &mut Out) {
        let len = tpdu_len(&pdu).unwrap_or(0);
        let header = match kind {
            Routed::Deliver => format!("+CMT: ,{len}"),
            Routed::Report => format!("+CDS: {len}"),
        };
        self.urc(vec![header, hex::encode_upper(&pdu)], out);
        if self.settings.csms == 1 {
            self.next_id += 1;
            let id = self.next_id;
            self.pending_ack = Some(PendingAck {
                id,
                kind,
                pdu,
                tries,
            });
            out.timers
                .push((self.cfg.cnma_timeout, Timer::AckTimeout { id }));
        }
    }

    /// No `+CNMA` in time: the network re-delivers (a duplicate) and, after [`MAX_REDELIVERIES`], the modem
    /// turns direct routing off and stores the message.
    fn ack_timeout(&mut self, id: u64, out: &mut Out) {
        let Some(pending) = self.pending_ack.take_if(|p| p.id == id) else {
            return;
        };
        if pending.tries < MAX_REDELIVERIES {
            return self.deliver_direct(pending.kind, pending.pdu, pending.tries + 1, out);
        }
        self.settings.cnmi.mt = self.settings.cnmi.mt.min(1);
        self.settings.cnmi.ds = 0;
        self.store_routed(pending.kind, pending.pdu, false, out);
        for (kind, pdu) in self.ack_queue.drain(..).collect::<Vec<_>>() {
            self.route(kind, pdu, out);
        }
    }

    fn store_routed(&mut self, kind: Routed, pdu: Vec<u8>, indicate: bool, out: &mut Out) {
        let mem = match kind {
            Routed::Deliver => self.settings.cpms[2],
            Routed::Report => Mem::parse(self.dialect.report_storage).unwrap_or(Mem::Sm),
        };
        if self.faults.storage_full {
            self.held.push_back((kind, pdu));
            return;
        }
        let stored = Stored {
            stat: Stat::RecUnread,
            pdu,
        };
        match self.storage.store(mem, stored.clone()) {
            Ok(index) if indicate => {
                let urc = match kind {
                    Routed::Deliver => "+CMTI",
                    Routed::Report => "+CDSI",
                };
                self.urc(vec![format!("{urc}: \"{}\",{index}", mem.name())], out);
            }
            Ok(_) => {}
            Err(_) => self.held.push_back((kind, stored.pdu)),
        }
    }

    /// After a final result: print URCs promised for after it, let held messages in if there is room, and
    /// send the next directly routed message if the previous one was acknowledged.
    fn settle(&mut self, out: &mut Out) {
        for lines in std::mem::take(&mut self.after_final) {
            self.urc(lines, out);
        }
        if !self.faults.storage_full {
            for (kind, pdu) in std::mem::take(&mut self.held) {
                if self.held.is_empty() {
                    self.route(kind, pdu, out);
                } else {
                    // Full again: the rest stay held, in order.
                    self.held.push_back((kind, pdu));
                }
            }
        }
        if self.pending_ack.is_none()
            && let Some((kind, pdu)) = self.ack_queue.pop_front()
        {
            self.route(kind, pdu, out);
        }
    }

    fn release_held(&mut self, out: &mut Out) {
        if matches!(self.phase, Phase::Command) {
            self.settle(out);
        }
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

fn allowed_without_pin(name: &str) -> bool {
    !name.starts_with(['+', '^'])
        || matches!(
            name,
            "+CPIN"
                | "+CMEE"
                | "+CFUN"
                | "+CGMI"
                | "+GMI"
                | "+CGMM"
                | "+GMM"
                | "+CGMR"
                | "+GMR"
                | "+CGSN"
                | "+GSN"
        )
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
