//! Applying modem workers' events to the store, keeping the worker contract's ordering promises: a part is
//! acknowledged as `Submitting` only once that is on disk, and an inbound message only once it is stored.

use futures_util::future::{BoxFuture, FutureExt, TryFutureExt};

use crate::modem::job::{Clearance, ModemHealth, ModemIdentity, WorkerEvent};
use crate::pdu::{Pdu, Tpdu, UserData};
use crate::store::{
    ConcatInfo, InboundContent, InboundOutcome, InboundPart, MessageState, ReportIn, ReportOutcome,
    Store, StoreError, Submission,
};

/// What an event did, for the caller to act on (rules on inbound messages, webhooks, modem state).
#[derive(Debug)]
pub enum Applied {
    /// Answered: the worker may write the PDU, or was told the message is withdrawn.
    Submitting,
    /// The message state after the part was recorded as sent.
    PartSent(MessageState),
    Inbound(InboundOutcome),
    Report(ReportOutcome),
    /// The modem's health; its identity was recorded if it reported one.
    Health(Box<ModemHealth>),
}

/// Stores what a worker reported. The write is queued at once, in the order events are applied, and the
/// returned future settles it: the caller may await several together (so they share a commit) without
/// reordering one modem's events. On a store error the ack is dropped, so the worker does not write the
/// PDU (`Submitting`) or delete the message from the SIM (`Inbound`).
pub fn apply(store: &Store, event: WorkerEvent) -> BoxFuture<'static, Result<Applied, StoreError>> {
    apply_at(store, event, None)
}

/// [`apply`] for an event that happened at `at` and is recorded late (the store refused it then): a part
/// sent keeps the time the network took it.
pub fn apply_at(
    store: &Store,
    event: WorkerEvent,
    at: Option<jiff::Timestamp>,
) -> BoxFuture<'static, Result<Applied, StoreError>> {
    match event {
        WorkerEvent::Submitting {
            modem,
            message_id,
            part,
            send_by,
            ack,
        } => {
            let written = store.part_submitting(message_id, part, &modem, send_by);
            async move {
                let clearance = match written.await? {
                    Submission::Recorded => Clearance::Write,
                    Submission::Withdrawn(reason) => Clearance::Withdraw(reason),
                };
                let _ = ack.send(clearance);
                Ok(Applied::Submitting)
            }
            .boxed()
        }
        WorkerEvent::PartSent {
            modem,
            message_id,
            part,
            reference,
        } => store
            .part_sent_at(message_id, part, &modem, reference, at)
            .map_ok(Applied::PartSent)
            .boxed(),
        WorkerEvent::Inbound {
            modem,
            pdu_hex,
            decoded,
            ack,
        } => {
            let written = match decoded {
                Ok(Pdu {
                    tpdu: Tpdu::StatusReport(report),
                    ..
                }) => store
                    .record_report(report_in(&modem, &report))
                    .map_ok(Applied::Report)
                    .boxed(),
                decoded => {
                    let part = InboundPart {
                        modem: modem.to_string(),
                        pdu_hex,
                        content: inbound_content(decoded),
                    };
                    store.record_inbound(part).map_ok(Applied::Inbound).boxed()
                }
            };
            async move {
                let applied = written.await?;
                let _ = ack.send(());
                Ok(applied)
            }
            .boxed()
        }
        WorkerEvent::StatusReport { modem, report } => store
            .record_report_at(report_in(&modem, &report), at)
            .map_ok(Applied::Report)
            .boxed(),
        WorkerEvent::Health { modem, health } => {
            let identity = (health.identity != ModemIdentity::default())
                .then(|| store.upsert_modem(&modem, health.identity.clone()));
            async move {
                if let Some(written) = identity {
                    written.await?;
                }
                Ok(Applied::Health(Box::new(health)))
            }
            .boxed()
        }
    }
}

fn report_in(modem: &str, report: &crate::pdu::StatusReport) -> ReportIn {
    ReportIn {
        modem: modem.to_owned(),
        tp_mr: report.reference,
        recipient: report.recipient.value.clone(),
        status: report.status,
        discharged_at: report.discharged.as_ref().map(jiff::Zoned::timestamp),
    }
}

fn inbound_content(decoded: Result<Pdu, crate::pdu::PduError>) -> InboundContent {
    match decoded {
        Ok(Pdu {
            tpdu: Tpdu::Deliver(deliver),
            ..
        }) => InboundContent::Decoded {
            sender: deliver.sender.value,
            text: match deliver.user_data {
                UserData::Text(text) => text,
                // 8-bit data (WAP push, binary SMS) is kept as hex: nothing is lost, nothing mis-rendered.
                UserData::Binary(bytes) => hex::encode_upper(bytes),
            },
            encoding: deliver.encoding.into(),
            sent_at: deliver.timestamp.as_ref().map(jiff::Zoned::timestamp),
            concat: deliver.concat.map(|c| ConcatInfo {
                reference: c.reference,
                part: c.part,
                parts: c.parts,
            }),
        },
        Ok(Pdu { tpdu, .. }) => InboundContent::Undecodable {
            error: format!("expected an SMS-DELIVER, got {}", tpdu_kind(&tpdu)),
        },
        Err(error) => InboundContent::Undecodable {
            error: error.to_string(),
        },
    }
}

fn tpdu_kind(tpdu: &Tpdu) -> &'static str {
    match tpdu {
        Tpdu::Deliver(_) => "SMS-DELIVER",
        Tpdu::Submit(_) => "SMS-SUBMIT",
        Tpdu::StatusReport(_) => "SMS-STATUS-REPORT",
    }
}
