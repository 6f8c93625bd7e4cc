//! `AT+CMGS`/`AT+CMGW` after the prompt: checking the PDU, the send delay and its outcome, and the status
//! report the simulated SMSC returns later.

use super::{
    Engine, Final, LoggedSend, Out, Phase, PromptKind, Routed, STATUS_UNDELIVERABLE, SendOutcome,
    Timer,
};
use crate::pdu;
use crate::sim::storage::{Stat, StoreError, Stored, tpdu_len};

impl Engine {
    /// Ctrl-Z ended the prompt: check the PDU like a modem does, then send (after the delay) or store.
    pub(super) fn submit(&mut self, out: &mut Out) {
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
        out.started += 1;
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

    pub(super) fn finish_send(&mut self, id: u64, out: &mut Out) {
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

    pub(super) fn status_report(
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
}
