//! The command interpreter: one line from the DTE, each command on it, the information lines and final
//! result, or the `> ` prompt.

use super::{Cnmi, Engine, Final, Out, Phase, PromptKind, REG_COMMANDS, Reply, Settings};
use crate::sim::command::{Command, Op, parse_line};
use crate::sim::profile::CregStyle;
use crate::sim::storage::{Mem, Stat};

impl Engine {
    pub(super) fn exec_line(&mut self, line: &str, out: &mut Out) {
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

    pub(super) fn exec(&mut self, cmd: &Command) -> Reply {
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

    pub(super) fn int_setting(
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

    pub(super) fn enter_pin(&mut self, pin: &str) -> Reply {
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

    pub(super) fn registration_command(&mut self, name: &str, op: &Op) -> Reply {
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
    pub(super) fn registration(&self, name: &str, n: u32, unsolicited: bool) -> String {
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

    pub(super) fn cpms(&mut self, cmd: &Command, op: &Op) -> Reply {
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

    pub(super) fn cnmi(&mut self, cmd: &Command, op: &Op) -> Reply {
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
    pub(super) fn cnma(&mut self) -> Reply {
        if self.settings.csms != 1 || self.pending_ack.take().is_none() {
            return Reply::Fail(Final::Cms(340));
        }
        Reply::Lines(Vec::new())
    }

    pub(super) fn cmgr(&mut self, cmd: &Command) -> Reply {
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

    pub(super) fn cmgl(&mut self, cmd: &Command) -> Reply {
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
    pub(super) fn cmgd(&mut self, cmd: &Command) -> Reply {
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
