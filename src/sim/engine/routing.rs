//! Messages and status reports from the network: routed as `AT+CNMI` says, acknowledged with `AT+CNMA`
//! or re-delivered, and held back while storage is full.

use super::{Engine, MAX_REDELIVERIES, Out, PendingAck, Phase, Routed, Timer};
use crate::sim::storage::{Mem, Stat, Stored, tpdu_len};

impl Engine {
    /// Deliver a message or a status report the way `AT+CNMI` asks: directly (`+CMT`/`+CDS`), or stored
    /// with (`+CMTI`/`+CDSI`) or without an indication.
    pub(super) fn route(&mut self, kind: Routed, pdu: Vec<u8>, out: &mut Out) {
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

    pub(super) fn deliver_direct(&mut self, kind: Routed, pdu: Vec<u8>, tries: u32, out: &mut Out) {
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
    pub(super) fn ack_timeout(&mut self, id: u64, out: &mut Out) {
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

    pub(super) fn store_routed(
        &mut self,
        kind: Routed,
        pdu: Vec<u8>,
        indicate: bool,
        out: &mut Out,
    ) {
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
    pub(super) fn settle(&mut self, out: &mut Out) {
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

    pub(super) fn settle_if_idle(&mut self, out: &mut Out) {
        if matches!(self.phase, Phase::Command) {
            self.settle(out);
        }
    }
}
