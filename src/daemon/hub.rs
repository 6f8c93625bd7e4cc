//! The hub: the only consumer of the workers' shared event channel. It applies each event to the store
//! (through [`crate::dispatch::events::apply`], which keeps the worker contract's acks) and then does what
//! follows from it: a complete inbound message goes through the reply rules and out as `message.received`.
//! Status webhooks are not sent from here: the store queues them in the same transaction as the change.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use crate::dispatch::events::{Applied, apply};
use crate::modem::job::{ModemId, WorkerEvent};
use crate::msisdn::{Region, Sender};
use crate::store::{InboundOutcome, Message, Store};
use crate::webhook::{Envelope, Event, ReceivedEvent};

use super::registry::Modems;

pub struct Hub {
    pub store: Store,
    pub modems: Arc<Modems>,
    /// Wakes the webhook deliverer when the outbox gains an entry.
    pub webhooks: Arc<Notify>,
    /// How to show inbound senders given as national numbers in logs.
    pub default_region: Region,
}

impl Hub {
    /// Handle events until every worker has dropped its sender.
    pub async fn run(self, mut events: mpsc::Receiver<WorkerEvent>) {
        while let Some(event) = events.recv().await {
            let modem = event_modem(&event).clone();
            match apply(&self.store, event).await {
                Ok(Applied::Inbound(InboundOutcome::Complete(message))) => {
                    self.received(&modem, &message).await
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

    /// A whole inbound message: the CMS hears of it.
    async fn received(&self, modem: &ModemId, message: &Message) {
        let from = Sender::classify(&message.peer, self.default_region);
        info!(%modem, from = %from.masked(), parts = message.part_count, "message received");
        let data = ReceivedEvent {
            message_id: message.id,
            from: message.peer.clone(),
            to: self.modems.own_number(modem),
            text: message.text.clone(),
            parts: usize::from(message.part_count),
            modem: modem.to_string(),
            sent_at: Some(message.created_at),
            intent: None,
            needs_agent: true,
        };
        enqueue(&self.store, &self.webhooks, Event::MessageReceived(data)).await;
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

/// Queue a webhook event in the durable outbox and wake the deliverer.
pub async fn enqueue(store: &Store, webhooks: &Notify, event: Event) {
    let message_id = event.message_id();
    let kind = event.kind().as_str();
    let envelope = Envelope::new(event, store.now());
    match store
        .enqueue_webhook(kind, message_id, envelope.payload())
        .await
    {
        Ok(_) => webhooks.notify_one(),
        Err(error) => warn!(kind, %error, "could not queue a webhook event"),
    }
}
