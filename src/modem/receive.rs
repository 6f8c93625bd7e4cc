//! Receiving: stored messages (+CMTI/+CDSI and the periodic +CMGL sweep), routed ones (+CMT/+CDS), and
//! registration URCs. A stored message is deleted from the SIM only after the daemon acknowledged storing
//! it; a routed one is acknowledged to the network (+CNMA) only then, so the network redelivers otherwise.

use crate::{
    at::{
        CmsError, Final, Urc, command,
        response::{MessageHeader, cnmi_setting, in_text_mode, pdu_listing},
    },
    pdu::{self, Pdu, Tpdu},
};

use super::{
    health,
    job::WorkerEvent,
    session::{Expect, Response, Session, SessionError, Unsolicited},
    worker::Worker,
};

/// What became of a PDU handed to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandOver {
    /// The daemon has it: safe to delete or acknowledge.
    Stored,
    /// No ack (store failure, shutdown): leave it on the SIM for the next sweep.
    NotStored,
    /// An SMS-SUBMIT copy in storage (stat 2/3): not ours to take or delete.
    NotInbound,
}

/// How soon a message the daemon could not store is looked for again on the SIM.
const UNSTORED_SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// Health polls (a minute apart when idle) at which a modem that refused every `AT+CNMI` setting is
/// asked again: a modem opened before its SMS stack was ready takes one within minutes.
pub(super) const CNMI_RETRIES: u32 = 10;

impl Worker {
    pub(super) async fn unsolicited(
        &mut self,
        session: &mut Session,
        u: Unsolicited,
    ) -> Result<(), SessionError> {
        match u {
            Unsolicited::Urc(Urc::Cmti { memory, index }) => {
                self.read_stored(session, &memory, index).await.map(drop)
            }
            Unsolicited::Urc(Urc::Cdsi { memory, index }) => {
                // Some modems keep reports in "SR" but announce them in "SM": look there too, at once,
                // rather than leave the report to the next sweep.
                if !self.read_stored(session, &memory, index).await?
                    && let Some(reports) = self.report_memory.clone().filter(|m| *m != memory)
                {
                    self.read_stored(session, &reports, index).await?;
                }
                Ok(())
            }
            Unsolicited::Routed { urc, pdu_hex } => {
                let handed = match (&urc, pdu::decode_hex(&pdu_hex)) {
                    // A report nobody can read is no reply from anyone: stored as one, it reached the CMS
                    // as an empty message from no number. Acknowledged, so the network stops sending it.
                    (Urc::Cds { .. }, Err(error)) => {
                        tracing::warn!(modem = %self.cfg.id, %error, pdu = %pdu_hex, "a status report that cannot be decoded: acknowledged, not stored");
                        HandOver::Stored
                    }
                    (_, decoded) => self.hand_over(&pdu_hex, decoded).await,
                };
                if self.cnma_required && handed == HandOver::Stored {
                    let r = session
                        .command(command::CNMA, Expect::NOTHING, self.cfg.timeouts.command)
                        .await?;
                    match r.result {
                        Final::Ok => {}
                        // "No +CNMA acknowledgement expected": the modem acknowledged it itself, as some
                        // do for what arrives while they initialise. Nothing is lost.
                        Final::Cms(CmsError(340)) => {
                            tracing::debug!(modem = %self.cfg.id, %urc, "CNMA not expected")
                        }
                        _ => {
                            tracing::warn!(modem = %self.cfg.id, %urc, result = %r.result, "CNMA refused")
                        }
                    }
                }
                Ok(())
            }
            // The SIM reset on its own (a loose contact, a SIM toolkit refresh) and may want its PIN
            // again: sends would fail with "SIM PIN required" until it is initialised anew.
            Unsolicited::Info(info) if info.name == "+CPIN" && info.body != "READY" => {
                tracing::warn!(modem = %self.cfg.id, state = %info.body, "the SIM reset; initialising the modem again");
                self.restarted = Some(format!("+CPIN: {}", info.body));
                Ok(())
            }
            Unsolicited::Info(info) => {
                let mut h = self.health.clone();
                health::apply_urc(&mut h, &info.name, &info.body);
                if h.state != super::job::ModemState::Paused {
                    h.state = health::state_of(&h);
                }
                self.publish(h).await;
                Ok(())
            }
            Unsolicited::Urc(Urc::Boot(notice)) => {
                tracing::info!(modem = %self.cfg.id, %notice, "modem start-up notice");
                self.restarted = Some(notice);
                Ok(())
            }
            Unsolicited::Urc(other) => {
                tracing::trace!(modem = %self.cfg.id, urc = ?other, "unsolicited");
                Ok(())
            }
        }
    }

    /// Sets the new-message indications chosen at initialisation again when the modem no longer has them:
    /// after a routed message it thinks went unacknowledged, a modem turns routing off (27.005 3.4.1), and
    /// then replies wait for the sweep and delivery reports never come. Only the indications for messages
    /// (`mt`) and reports (`ds`) are compared: those are what a modem changes on its own. A modem that
    /// cannot say (`AT+CNMI?` refused or unreadable) has them set again at every poll: one command a
    /// minute is cheap next to replies that wait five minutes for the sweep.
    ///
    /// A modem that refused every setting at initialisation (one opened before its SMS stack was up)
    /// is asked again at each of the next [`CNMI_RETRIES`] polls (a modem without indications at all
    /// is left to the sweep after that). Whenever indications are set anew, the storage is swept: what
    /// arrived while they were off was stored without a word.
    pub(super) async fn keep_indications(
        &mut self,
        session: &mut Session,
    ) -> Result<(), SessionError> {
        let Some(chosen) = self.cnmi else {
            if self.cnmi_retries == 0 {
                return Ok(());
            }
            self.cnmi_retries -= 1;
            self.cnmi = super::init::choose_cnmi(session, &self.cfg.timeouts).await?;
            if let Some(chosen) = self.cnmi {
                tracing::info!(modem = %self.cfg.id, ?chosen, "the modem takes new-message indications now");
                self.sweep(session).await?;
            }
            return Ok(());
        };
        let r = session
            .command(
                command::CNMI_READ,
                Expect::info("+CNMI"),
                self.cfg.timeouts.command,
            )
            .await?;
        let now = r.info("+CNMI").next().and_then(|body| cnmi_setting(&body));
        match now {
            Some(now) if (now[1], now[3]) == (chosen[1], chosen[3]) => return Ok(()),
            Some(now) => {
                tracing::warn!(modem = %self.cfg.id, ?now, ?chosen, "the modem changed its new-message indications; setting them again");
            }
            None => {
                tracing::debug!(modem = %self.cfg.id, answer = ?r, "AT+CNMI? unreadable; setting the indications again");
            }
        }
        session
            .command(
                &command::cnmi(chosen),
                Expect::NOTHING,
                self.cfg.timeouts.command,
            )
            .await?;
        if now.is_some() {
            // They were really off: look for what came meanwhile. (Unreadable ones are set blind at
            // every poll, and a sweep each time would cost more than the five-minute sweep saves.)
            self.sweep(session).await?;
        }
        Ok(())
    }

    /// Hands over and acknowledges the routed messages and reports read so far, leaving the other
    /// unsolicited lines queued for later.
    pub(super) async fn acknowledge_routed(
        &mut self,
        session: &mut Session,
    ) -> Result<(), SessionError> {
        while let Some(routed) = session.take_routed() {
            self.unsolicited(session, routed).await?;
        }
        Ok(())
    }

    /// `AT+CMGL=4` on the message memory, and on "SR" where status reports are kept apart: catches what
    /// arrived while the URC was lost (a dropped line, a restart, the port away).
    pub(super) async fn sweep(&mut self, session: &mut Session) -> Result<(), SessionError> {
        self.unstored = None;
        let memories: Vec<String> = std::iter::once(self.memory.clone())
            .chain(self.report_memory.clone())
            .collect();
        for memory in memories {
            if !self.select(session, &memory).await? {
                continue;
            }
            let r = self
                .read_in_pdu_mode(
                    session,
                    command::CMGL_ALL,
                    Expect::info("+CMGL"),
                    self.cfg.timeouts.cmgs_result,
                )
                .await?;
            if r.is_ok() {
                for entry in pdu_listing(&r.lines) {
                    let MessageHeader {
                        index: Some(index),
                        stat,
                        ..
                    } = entry.header
                    else {
                        continue;
                    };
                    if !matches!(stat, Some(2 | 3)) {
                        self.stored(session, &memory, index, entry.pdu_hex).await?;
                    }
                }
            } else {
                tracing::warn!(modem = %self.cfg.id, memory, result = %r.result, "CMGL sweep refused");
            }
            self.restore(session, &memory).await?;
        }
        Ok(())
    }

    /// Read one stored message announced by a URC; whether there was one.
    async fn read_stored(
        &mut self,
        session: &mut Session,
        memory: &str,
        index: u32,
    ) -> Result<bool, SessionError> {
        if !self.select(session, memory).await? {
            return Ok(false);
        }
        let r = self
            .read_in_pdu_mode(
                session,
                &command::cmgr(index),
                Expect::info("+CMGR"),
                self.cfg.timeouts.command,
            )
            .await?;
        let entry = if r.is_ok() {
            pdu_listing(&r.lines).into_iter().next()
        } else {
            None
        };
        let found = entry.is_some();
        match entry {
            Some(entry) if !matches!(entry.header.stat, Some(2 | 3)) => {
                self.stored(session, memory, index, entry.pdu_hex).await?
            }
            Some(_) => {}
            // Empty (bare OK) or +CMS ERROR 321: nothing there, maybe already swept.
            None => {
                tracing::debug!(modem = %self.cfg.id, memory, index, result = %r.result, "nothing to read")
            }
        }
        self.restore(session, memory).await?;
        Ok(found)
    }

    /// A read or listing (`read`); answered in text mode, PDU mode is set again and it is asked once more.
    /// Read as text, a message could be neither handed over nor deleted, and would hold its slot for good.
    async fn read_in_pdu_mode(
        &self,
        session: &mut Session,
        read: &str,
        expect: Expect,
        timeout: std::time::Duration,
    ) -> Result<Response, SessionError> {
        let r = session.command(read, expect, timeout).await?;
        if !(r.is_ok() && in_text_mode(&r.lines)) {
            return Ok(r);
        }
        tracing::warn!(modem = %self.cfg.id, read, "the modem answered in text mode; setting PDU mode again");
        session
            .command(
                command::PDU_MODE,
                Expect::NOTHING,
                self.cfg.timeouts.command,
            )
            .await?;
        session.command(read, expect, timeout).await
    }

    /// Point reads and deletes at `memory` when it is not the usual one; `false` if the modem refuses.
    async fn select(&mut self, session: &mut Session, memory: &str) -> Result<bool, SessionError> {
        if memory == self.memory {
            return Ok(true);
        }
        let r = session
            .command(
                &self.cpms_reading(memory),
                Expect::info("+CPMS"),
                self.cfg.timeouts.command,
            )
            .await?;
        if !r.is_ok() {
            tracing::warn!(modem = %self.cfg.id, memory, "cannot select memory; the sweep will retry");
        }
        Ok(r.is_ok())
    }

    /// Undo [`Worker::select`].
    async fn restore(&mut self, session: &mut Session, memory: &str) -> Result<(), SessionError> {
        if memory != self.memory {
            session
                .command(
                    &self.cpms_reading(&self.memory),
                    Expect::info("+CPMS"),
                    self.cfg.timeouts.command,
                )
                .await?;
        }
        Ok(())
    }

    /// `AT+CPMS` pointing reads and deletes at `memory` and leaving the others on the usual one, with as
    /// many memories as the modem took at start-up: a modem that wants three (Brovi E3372-325) refuses one.
    fn cpms_reading(&self, memory: &str) -> String {
        let mut memories = vec![self.memory.as_str(); self.memory_count.max(1)];
        memories[0] = memory;
        command::cpms(&memories)
    }

    /// Hand over a stored message (unless it already was) and delete it once the daemon has it.
    async fn stored(
        &mut self,
        session: &mut Session,
        memory: &str,
        index: u32,
        pdu_hex: String,
    ) -> Result<(), SessionError> {
        let key = (memory.to_owned(), index);
        if self.undeleted.get(&key) != Some(&pdu_hex) {
            if self.hand_over(&pdu_hex, pdu::decode_hex(&pdu_hex)).await != HandOver::Stored {
                return Ok(());
            }
            // Remembered until the delete succeeds: if it is refused, or the port dies first, the next read
            // of this slot finds the same PDU and only deletes it.
            self.undeleted.insert(key.clone(), pdu_hex);
        }
        let r = session
            .command(
                &command::cmgd(index),
                Expect::NOTHING,
                self.cfg.timeouts.command,
            )
            .await?;
        if r.is_ok() {
            self.undeleted.remove(&key);
        } else {
            tracing::warn!(modem = %self.cfg.id, memory, index, result = %r.result, "delete refused; will retry");
        }
        Ok(())
    }

    /// Hands the PDU the modem printed, decoded by the caller (a routed one is looked at first), to the
    /// daemon.
    async fn hand_over(&mut self, pdu_hex: &str, decoded: Result<Pdu, pdu::PduError>) -> HandOver {
        let modem = self.cfg.id.clone();
        match decoded {
            Ok(Pdu {
                tpdu: Tpdu::StatusReport(report),
                ..
            }) => {
                let _ = self
                    .events
                    .send(WorkerEvent::StatusReport { modem, report })
                    .await;
                HandOver::Stored
            }
            Ok(Pdu {
                tpdu: Tpdu::Submit(_),
                ..
            }) => HandOver::NotInbound,
            decoded => {
                let pdu_hex = pdu_hex.to_owned();
                if self
                    .acked(|ack| WorkerEvent::Inbound {
                        modem,
                        pdu_hex,
                        decoded,
                        ack,
                    })
                    .await
                    .is_some()
                {
                    HandOver::Stored
                } else {
                    self.unstored
                        .get_or_insert_with(|| tokio::time::Instant::now() + UNSTORED_SWEEP);
                    HandOver::NotStored
                }
            }
        }
    }
}
