//! The hub: the only consumer of the workers' shared event channel. It applies each event to the store
//! (through [`crate::dispatch::events::apply`], which keeps the worker contract's acks) and then does what
//! follows from it: a complete inbound message goes through the reply rules (opt-out first). Webhooks are not sent from here: the store queues each event in the same transaction as
//! the change that causes it (`message.received` with the reassembled message), and the hub only wakes the
//! deliverer.

use std::sync::{Arc, RwLock};

use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use crate::api::Metrics;
use crate::dispatch::events::{Applied, apply};
use crate::modem::job::{ModemId, WorkerEvent};
use crate::msisdn::{Region, Sender};
use crate::rules::inbound::InboundRules;
use crate::store::{InboundOutcome, MessageState, Store};

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

impl Hub {
    /// Handle events until every worker has dropped its sender.
    pub async fn run(self, mut events: mpsc::Receiver<WorkerEvent>) {
        while let Some(event) = events.recv().await {
            let modem = event_modem(&event).clone();
            let sent_message = match &event {
                WorkerEvent::PartSent { message_id, .. } => Some(*message_id),
                _ => None,
            };
            match apply(&self.store, event).await {
                Ok(Applied::PartSent(MessageState::Sent)) => {
                    if let Some(id) = sent_message {
                        self.observe_latency(id).await;
                    }
                }
                Ok(Applied::Inbound(InboundOutcome::Complete(message))) => {
                    let from = Sender::classify(&message.peer, self.default_region);
                    info!(%modem, from = %from.masked(), parts = message.part_count, "message received");
                    let rules = self.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
                    let outcome = rules.apply(&self.store, &modem, &message).await;
                    debug!(%modem, intent = ?outcome.intent, needs_agent = outcome.needs_agent, "reply rules applied");
                }
                Ok(Applied::Inbound(InboundOutcome::Partial { have, parts })) => {
                    debug!(%modem, have, parts, "inbound part stored, waiting for the rest")
                }
                Ok(_) => {}
                // The ack was dropped: the worker neither writes the PDU nor deletes the SIM copy.
                Err(error) => warn!(%modem, %error, "could not record a modem event"),
            }
            // Status changes queue their webhooks inside the store; wake the deliverer for them too.
            self.webhooks.notify_one();
        }
    }
}

impl Hub {
    /// Acceptance to the last part taken by the network: what a CMS waits for.
    async fn observe_latency(&self, id: uuid::Uuid) {
        if let Ok(Some(detail)) = self.store.get(id).await
            && let Ok(span) = self
                .store
                .now()
                .duration_since(detail.message.created_at)
                .try_into()
        {
            self.metrics.observe_send_latency(span);
        }
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
