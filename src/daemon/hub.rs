//! The hub: the only consumer of the workers' shared event channel. It applies each event to the store
//! (through [`crate::dispatch::events::apply`], which keeps the worker contract's acks) and then does what
//! follows from it: a complete inbound message goes through the reply rules (opt-out first). Webhooks are
//! not sent from here: the store queues each event in the same transaction as the change that causes it
//! (`message.received` with the reassembled message), and the hub only wakes the deliverer. While the
//! store refuses writes (a full disk) the hub keeps what the workers will not report again, a part sent
//! and a status report, and writes it again every 5 s until the store takes it.
//!
//! Events are written in arrival order but not one commit at a time: every modem's `Submitting` ack waits
//! for an fsync, and with several modems sending in step a serial hub made each wait behind the others'
//! commits. The writes are queued as they arrive and settled together (they share group commits); what
//! follows from them is handled in arrival order, and the reply rules run in a task of their own, one
//! message at a time, so a STOP and a START from the same phone keep their order.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::FutureExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use crate::api::Metrics;
use crate::dispatch::events::{Applied, apply_at};
use crate::modem::job::{ModemId, WorkerEvent};
use crate::msisdn::{Region, Sender};
use crate::rules::inbound::{Arrival, InboundRules};
use crate::store::{InboundOutcome, Message, MessageState, ReportOutcome, Store, StoreError};

/// How long the parts of a concatenated inbound message may take to arrive before what came is released
/// as received. Networks deliver the parts seconds apart, rarely minutes; a part lost for good must not
/// hide the reply for long.
const INCOMPLETE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often to look for such messages.
const INCOMPLETE_SWEEP: Duration = Duration::from_secs(60);

/// How long after the store refused an event it is written again (the dispatcher waits as long).
const RETRY_UNRECORDED: Duration = Duration::from_secs(5);

/// The most refused events kept to write again: a full disk stops every new send at its `Submitting`
/// write, so what is kept is the parts in flight then and the reports that come in meanwhile.
const KEEP_UNRECORDED: usize = 10_000;

/// Where complete inbound messages go for the reply rules, with the modem they came in on.
type Complete = mpsc::UnboundedSender<(ModemId, Message, Arrival)>;

pub struct Hub {
    pub store: Store,
    /// Where the send-latency histogram lives.
    pub metrics: Arc<Metrics>,
    /// Wakes the webhook deliverer when the outbox gains an entry.
    pub webhooks: Arc<Notify>,
    /// How to show inbound senders given as national numbers in logs.
    pub default_region: Region,
    /// Opt-outs, opt-ins, HELP and menu replies, run on every complete inbound message; replaced whole by
    /// a configuration reload (each message uses the rules current when it completes).
    pub rules: Arc<RwLock<Arc<InboundRules>>>,
}

/// An applied event, with what its follow-up needs to know about it.
struct Settled {
    modem: ModemId,
    sent_message: Option<uuid::Uuid>,
    result: Result<Applied, StoreError>,
    /// A copy to write again if the store could not take it (see [`Unrecorded`]).
    copy: Option<Kept>,
    /// A one-part reply's sender and text, for [`InboundRules::hold_unstored`] if the store refuses it.
    reply: Option<(String, String)>,
}

/// An event kept to be written again, how often the store has refused it, and when it first came (a
/// part recorded late keeps the time the network took it).
struct Kept {
    event: WorkerEvent,
    refusals: u32,
    at: Option<jiff::Timestamp>,
}

/// Events the store refused while it was unavailable (a full disk), written again every
/// [`RETRY_UNRECORDED`] in the order they came. Only events the worker will not send again: a part the
/// network took (dropped, its message would stay `sending`, then `unknown` at the next start) and a status
/// report (lost). Events with an ack are not kept: the worker keeps what they carry until it is stored.
#[derive(Default)]
struct Unrecorded {
    events: Vec<Kept>,
    due: Option<tokio::time::Instant>,
    /// Events dropped for want of room, logged at the 1st, 2nd, 4th...
    lost: u64,
    /// Senders whose reply the store refused, already warned of: the SIM is read again every 10 s, and
    /// each read would warn again. Forgotten once the store takes a write.
    warned: std::collections::HashSet<String>,
}

impl Unrecorded {
    fn keep(&mut self, kept: Kept) {
        if self.events.len() >= KEEP_UNRECORDED {
            self.lost += 1;
            if self.lost.is_power_of_two() {
                warn!(
                    lost = self.lost,
                    "the store still refuses writes: modem events are lost"
                );
            }
            return;
        }
        self.events.push(kept);
        self.due
            .get_or_insert_with(|| tokio::time::Instant::now() + RETRY_UNRECORDED);
    }

    /// Whether a part the network took waits among them.
    fn parts_waiting(&self) -> bool {
        self.events
            .iter()
            .any(|kept| matches!(kept.event, WorkerEvent::PartSent { .. }))
    }

    fn take(&mut self) -> Vec<Kept> {
        self.due = None;
        std::mem::take(&mut self.events)
    }
}

impl Hub {
    /// Handle events until every worker has dropped its sender, then finish what is in hand.
    pub async fn run(self, mut events: mpsc::Receiver<WorkerEvent>) {
        let (inbound, complete) = mpsc::unbounded_channel();
        let rules = tokio::spawn(run_rules(
            self.store.clone(),
            self.rules.clone(),
            self.default_region,
            complete,
        ));
        self.replay_pending_rules(&inbound).await;
        let mut settling = FuturesOrdered::new();
        let mut unrecorded = Unrecorded::default();
        let mut sweep = tokio::time::interval(INCOMPLETE_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry_at = unrecorded.due.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                biased;
                Some(settled) = settling.next(), if !settling.is_empty() => {
                    if let Some(kept) = self.follow_up(settled, &inbound, &mut unrecorded) {
                        unrecorded.keep(kept);
                    }
                }
                event = events.recv() => match event {
                    Some(event) => settling.push_back(self.settle(Kept { event, refusals: 0, at: None })),
                    None => break,
                },
                _ = tokio::time::sleep_until(retry_at), if unrecorded.due.is_some() => {
                    for kept in unrecorded.take() {
                        settling.push_back(self.settle(kept));
                    }
                }
                _ = sweep.tick() => self.release_incomplete(&inbound).await,
            }
        }
        while let Some(settled) = settling.next().await {
            if let Some(kept) = self.follow_up(settled, &inbound, &mut unrecorded) {
                unrecorded.keep(kept);
            }
        }
        // One last try: the store may take writes again by now.
        for kept in unrecorded.take() {
            let settled = self.settle(kept).await;
            if let Some(kept) = self.follow_up(settled, &inbound, &mut unrecorded) {
                unrecorded.keep(kept);
            }
        }
        if !unrecorded.events.is_empty() {
            warn!(
                events = unrecorded.events.len(),
                "stopping with modem events the store refused: their parts stay unknown, their reports unmatched"
            );
        }
        drop(inbound);
        let _ = rules.await;
    }

    /// Queues the event's store write now; the future settles it.
    fn settle(&self, kept: Kept) -> impl Future<Output = Settled> + Send + 'static {
        let Kept {
            mut event,
            refusals,
            at,
        } = kept;
        // A kept event is written with the time it first came.
        let late = at;
        let at = at.unwrap_or_else(|| self.store.now());
        normalise_sender(&mut event, self.default_region);
        let modem = event_modem(&event).clone();
        let sent_message = match &event {
            WorkerEvent::PartSent { message_id, .. } => Some(*message_id),
            _ => None,
        };
        let copy = copy_unacked(&event).map(|event| Kept {
            event,
            refusals,
            at: Some(at),
        });
        let reply = one_part_reply(&event);
        apply_at(&self.store, event, late).map(move |result| Settled {
            modem,
            sent_message,
            result,
            copy,
            reply,
        })
    }

    /// Acts on an applied event; returns the event to write again when the store could not take it, or,
    /// while parts the network took wait in `unrecorded` to be written again, a report that matched no
    /// part: its part may be one of them.
    fn follow_up(
        &self,
        settled: Settled,
        inbound: &Complete,
        unrecorded: &mut Unrecorded,
    ) -> Option<Kept> {
        let parts_waiting = unrecorded.parts_waiting();
        let Settled {
            modem,
            sent_message,
            result,
            copy,
            reply,
        } = settled;
        if let Some(Kept { refusals, .. }) = &copy
            && *refusals > 0
            && result.is_ok()
        {
            info!(%modem, refusals, "recorded a modem event the store had refused");
        }
        let mut again = None;
        if result.is_ok() {
            unrecorded.warned.clear();
        }
        match result {
            Ok(Applied::PartSent(MessageState::Sent)) => {
                if let Some(id) = sent_message {
                    tokio::spawn(observe_latency(
                        self.store.clone(),
                        self.metrics.clone(),
                        id,
                    ));
                }
            }
            Ok(Applied::Inbound(InboundOutcome::Complete(message))) => {
                let from = Sender::classify(&message.peer, self.default_region);
                info!(%modem, from = %from.masked(), parts = message.part_count, "message received");
                let _ = inbound.send((modem, *message, Arrival::Live));
            }
            Ok(Applied::Inbound(InboundOutcome::Partial { have, parts })) => {
                debug!(%modem, have, parts, "inbound part stored, waiting for the rest")
            }
            Ok(Applied::Report(ReportOutcome::Unmatched)) => match copy {
                Some(kept) if parts_waiting => again = Some(kept),
                _ => info!(%modem, "a delivery report matched no part sent from this modem"),
            },
            Ok(_) => {}
            Err(error) => match copy {
                Some(Kept {
                    event,
                    refusals,
                    at,
                }) if error.is_unavailable() => {
                    if refusals == 0 {
                        warn!(%modem, %error, "could not record a modem event; writing it again in 5 s");
                    }
                    again = Some(Kept {
                        event,
                        refusals: refusals + 1,
                        at,
                    });
                }
                // The ack was dropped: the worker neither writes the PDU nor deletes the SIM copy.
                _ => match reply {
                    Some((sender, text)) => {
                        let from = Sender::classify(&sender, self.default_region);
                        if unrecorded.warned.insert(sender.clone()) {
                            warn!(%modem, from = %from.masked(), %error, "could not store a reply: it stays on the SIM and is read again every 10 s");
                        }
                        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
                        if rules.hold_unstored(&sender, &text) {
                            warn!(%modem, from = %from.masked(), "the reply reads as an opt-out: nothing goes to the number until it is stored");
                        }
                    }
                    None => warn!(%modem, %error, "could not record a modem event"),
                },
            },
        }
        // Status changes queue their webhooks inside the store; wake the deliverer for them too.
        self.webhooks.notify_one();
        again
    }
}

/// The sender and text of a one-part reply (a STOP is one part).
fn one_part_reply(event: &WorkerEvent) -> Option<(String, String)> {
    match event {
        WorkerEvent::Inbound {
            decoded:
                Ok(crate::pdu::Pdu {
                    tpdu: crate::pdu::Tpdu::Deliver(deliver),
                    ..
                }),
            ..
        } if deliver.concat.is_none() => match &deliver.user_data {
            crate::pdu::UserData::Text(text) => Some((deliver.sender.value.clone(), text.clone())),
            crate::pdu::UserData::Binary(_) => None,
        },
        _ => None,
    }
}

/// A copy of an event that has no ack, so the worker will not send it again if the store drops it.
fn copy_unacked(event: &WorkerEvent) -> Option<WorkerEvent> {
    match event {
        WorkerEvent::PartSent {
            modem,
            message_id,
            part,
            reference,
        } => Some(WorkerEvent::PartSent {
            modem: modem.clone(),
            message_id: *message_id,
            part: *part,
            reference: *reference,
        }),
        WorkerEvent::StatusReport { modem, report } => Some(WorkerEvent::StatusReport {
            modem: modem.clone(),
            report: report.clone(),
        }),
        WorkerEvent::Submitting { .. }
        | WorkerEvent::Inbound { .. }
        | WorkerEvent::Health { .. } => None,
    }
}

impl Hub {
    /// Messages stored before a crash that the reply rules never finished with (a STOP among them would
    /// otherwise stay unhonoured): ahead of anything received from now on.
    async fn replay_pending_rules(&self, inbound: &Complete) {
        match self.store.rules_pending().await {
            Ok(pending) => {
                for message in pending {
                    let modem = ModemId::from(message.modem.as_deref().unwrap_or_default());
                    warn!(%modem, id = %message.id, "reply rules had not run on this message before the restart; running them now");
                    let _ = inbound.send((modem, message, Arrival::Replayed));
                }
            }
            Err(error) => warn!(%error, "could not read the messages waiting for the reply rules"),
        }
    }

    async fn release_incomplete(&self, inbound: &Complete) {
        match self.store.release_incomplete(INCOMPLETE_AFTER).await {
            Ok(released) => {
                for message in released {
                    let from = Sender::classify(&message.peer, self.default_region);
                    let modem = ModemId::from(message.modem.as_deref().unwrap_or_default());
                    warn!(%modem, from = %from.masked(), parts = message.part_count, error = message.error.as_deref().unwrap_or(""), "incomplete message released");
                    let _ = inbound.send((modem, message, Arrival::Live));
                    self.webhooks.notify_one();
                }
            }
            Err(error) => warn!(%error, "could not release incomplete inbound messages"),
        }
    }
}

/// A reply's sender in E.164 when it is a subscriber number given in national form (`4158906451`, as some
/// networks deliver it), so the reply is found by the number the CMS sends to: in its conversation, the
/// list's `to` filter, next to the opt-out it asked for. Short codes and alphanumeric senders stay as they
/// came, and the raw PDU keeps the original.
fn normalise_sender(event: &mut WorkerEvent, region: Region) {
    if let WorkerEvent::Inbound {
        decoded:
            Ok(crate::pdu::Pdu {
                tpdu: crate::pdu::Tpdu::Deliver(deliver),
                ..
            }),
        ..
    } = event
        && let Sender::Msisdn(number) = Sender::classify(&deliver.sender.value, region)
    {
        deliver.sender.value = number.as_str().to_owned();
    }
}

/// The reply rules, one complete inbound message at a time, in the order they completed.
async fn run_rules(
    store: Store,
    rules: Arc<RwLock<Arc<InboundRules>>>,
    default_region: Region,
    mut complete: mpsc::UnboundedReceiver<(ModemId, Message, Arrival)>,
) {
    while let Some((modem, message, arrival)) = complete.recv().await {
        let current = rules.read().unwrap_or_else(|p| p.into_inner()).clone();
        let outcome = match arrival {
            Arrival::Live => current.apply(&store, &modem, &message).await,
            Arrival::Replayed => current.replay(&store, &modem, &message).await,
        };
        if outcome.unrecorded {
            warn!(id = %message.id, "an opt-out or opt-in was not stored: the reply rules run again on this message at the next start");
        } else if let Err(error) = store.rules_applied(message.id).await {
            // They run again at the next start: an opt-out is recorded once, an answer is not repeated.
            warn!(id = %message.id, %error, "could not record that the reply rules ran");
        }
        let from = Sender::classify(&message.peer, default_region);
        debug!(%modem, from = %from.masked(), intent = ?outcome.intent, needs_agent = outcome.needs_agent, "reply rules applied");
    }
}

/// Acceptance to the last part taken by the network: what a CMS waits for.
async fn observe_latency(store: Store, metrics: Arc<Metrics>, id: uuid::Uuid) {
    if let Ok(Some(detail)) = store.get(id).await
        && let Ok(span) = store
            .now()
            .duration_since(detail.message.created_at)
            .try_into()
    {
        metrics.observe_send_latency(span);
    }
}

fn event_modem(event: &WorkerEvent) -> &ModemId {
    match event {
        WorkerEvent::Submitting { modem, .. }
        | WorkerEvent::PartSent { modem, .. }
        | WorkerEvent::Inbound { modem, .. }
        | WorkerEvent::StatusReport { modem, .. }
        | WorkerEvent::Health { modem, .. } => modem,
    }
}
