//! Sending one job: each part recorded durably (the `Submitting` ack) before its PDU goes out, then
//! `AT+CMGS`, with the outcome classified for dispatch.

use crate::at::{CmeError, Final, command};

use super::{
    job::{
        Clearance, FAILED_SENDS_DEGRADE, JobOutcome, ModemState, SendError, SendJob, WorkerEvent,
    },
    session::{Expect, Session, SessionError, SubmitError},
    worker::{Cmms, Worker},
};

impl Worker {
    /// Send `job` and report its outcome. `Err` only when the conversation broke down (the outcome has
    /// been reported already: `Unknown` if a PDU was written, `NotAttempted` if not).
    pub(super) async fn send_job(
        &mut self,
        session: &mut Session,
        job: SendJob,
    ) -> Result<(), SessionError> {
        let t = self.cfg.timeouts;
        let SendJob {
            message_id,
            parts,
            more_waiting,
            send_by,
            done,
            ..
        } = job;
        if (parts.len() > 1 || more_waiting) && self.cmms == Cmms::Unasked {
            match session
                .command(&command::cmms(2), Expect::NOTHING, t.command)
                .await
            {
                Ok(r) if r.is_ok() => self.cmms = Cmms::Set,
                Ok(_) => self.cmms = Cmms::Refused,
                Err(e) => {
                    let _ = done.send(JobOutcome::NotAttempted);
                    return Err(e);
                }
            }
        }
        let mut any_sent = false;
        for part in parts {
            let modem = self.cfg.id.clone();
            let submitting = |ack| WorkerEvent::Submitting {
                modem,
                message_id,
                part: part.part,
                send_by,
                ack,
            };
            let clearance = if any_sent {
                self.acked_even_if_stopping(submitting).await
            } else {
                self.acked(submitting).await
            };
            match clearance {
                Some(Clearance::Write) => {}
                Some(Clearance::Withdraw(reason)) => {
                    let _ = done.send(JobOutcome::Withdrawn { reason });
                    return Ok(());
                }
                None => {
                    let _ = done.send(JobOutcome::NotAttempted);
                    return Ok(());
                }
            }
            let error = match self.routed(&part.pdu_hex) {
                Err(error) => error,
                Ok(pdu) => match session
                    .submit(part.tpdu_length, &pdu, t.cmgs_prompt, t.cmgs_result)
                    .await
                {
                    Ok(reference) => {
                        let modem = self.cfg.id.clone();
                        let sent = WorkerEvent::PartSent {
                            modem,
                            message_id,
                            part: part.part,
                            reference,
                        };
                        let _ = self.events.send(sent).await;
                        any_sent = true;
                        // A routed message or report that came during this part is acknowledged now,
                        // not after the last part: the network stops waiting for AT+CNMA (and the modem
                        // stops routing) well within a long message's minutes.
                        if let Err(e) = self.acknowledge_routed(session).await {
                            let _ = done.send(JobOutcome::NotAttempted);
                            return Err(e);
                        }
                        continue;
                    }
                    Err(SubmitError::Rejected(result)) => send_error(result),
                    Err(SubmitError::NoPrompt) => SendError::NoPrompt,
                    // The modem's own word for a malformed PDU; no modem would take it.
                    Err(SubmitError::InvalidPdu(_)) => SendError::Cms(304),
                    Err(SubmitError::NoReference) => {
                        let reason =
                            "modem answered OK without a readable +CMGS reference".to_owned();
                        let _ = done.send(JobOutcome::Unknown {
                            part: part.part,
                            reason,
                        });
                        return Ok(());
                    }
                    Err(SubmitError::Lost { written, cause }) => {
                        let outcome = if written {
                            JobOutcome::Unknown {
                                part: part.part,
                                reason: cause.to_string(),
                            }
                        } else {
                            JobOutcome::NotAttempted
                        };
                        let _ = done.send(outcome);
                        return Err(cause);
                    }
                },
            };
            tracing::info!(modem = %self.cfg.id, %message_id, part = part.part, %error, "part failed");
            let transient = error.is_transient();
            let mut h = self.health.clone();
            h.last_error = Some(error.to_string());
            // A permanent error is the number's or the message's, not the modem's. One about the SIM's
            // subscription (barred, not provisioned) is conclusive at once: degraded, so it takes no
            // more jobs until a health poll gives it another try.
            if error.blames_subscription() {
                h.failed_sends = h.failed_sends.max(FAILED_SENDS_DEGRADE);
            } else if transient {
                h.failed_sends = h.failed_sends.saturating_add(1);
            }
            self.publish(h).await;
            let _ = done.send(JobOutcome::Failed {
                part: part.part,
                error,
            });
            // A transient failure often means registration changed (CMS 331, 500): let dispatch see it now
            // rather than at the next poll.
            if transient {
                self.refresh_health(session).await?;
            }
            return Ok(());
        }
        // Before the outcome, so whoever hears "sent" sees the count start over and the failure gone.
        if self.health.failed_sends > 0 || self.health.last_error.is_some() {
            let mut h = self.health.clone();
            h.failed_sends = 0;
            h.last_error = None;
            self.publish(h).await;
        }
        let _ = done.send(JobOutcome::Sent);
        // Sending works again: a degraded state from an earlier failure is probably over.
        if self.health.state == ModemState::Degraded {
            self.refresh_health(session).await?;
        }
        Ok(())
    }
}

impl Worker {
    /// The stored PDU with the configured SMSC in its SMSC field, or as stored when none is configured.
    /// A PDU that cannot take it fails as the modem would fail it (`+CMS ERROR: 304`).
    fn routed<'a>(&self, pdu_hex: &'a str) -> Result<std::borrow::Cow<'a, str>, SendError> {
        let Some(smsc) = &self.cfg.smsc else {
            return Ok(pdu_hex.into());
        };
        crate::pdu::with_smsc(pdu_hex, smsc)
            .map(Into::into)
            .map_err(|error| {
                tracing::warn!(modem = %self.cfg.id, %error, "cannot put the configured SMSC in the PDU");
                SendError::Cms(304)
            })
    }
}

fn send_error(result: Final) -> SendError {
    match result {
        Final::Cms(e) => SendError::Cms(e.code()),
        Final::Cme(CmeError::Code(code)) => SendError::Cme(code),
        Final::Cme(CmeError::Text(_))
        | Final::Ok
        | Final::Error
        | Final::NotSupported
        | Final::Call(_) => SendError::Error,
    }
}
