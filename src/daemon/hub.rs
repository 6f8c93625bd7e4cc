//! The hub: the only consumer of the workers' shared event channel. It applies each event to the store
//! (through [`crate::dispatch::events::apply`], which keeps the worker contract's acks) and then does what
//! follows from it. Webhooks are not sent from here: the store queues each event in the same transaction as
//! the change that causes it (`message.received` with the reassembled message), and the hub only wakes the
//! deliverer.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use crate::dispatch::events::{Applied, apply};
use crate::modem::job::{ModemId, WorkerEvent};
use crate::msisdn::{Region, Sender};
use crate::store::{InboundOutcome, Store};

pub struct Hub {
    pub store: Store,
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
                    let from = Sender::classify(&message.peer, self.default_region);
                    info!(%modem, from = %from.masked(), parts = message.part_count, "message received");
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

fn event_modem(event: &WorkerEvent) -> &ModemId {
    match event {
        WorkerEvent::Submitting { modem, .. }
        | WorkerEvent::PartSent { modem, .. }
        | WorkerEvent::Inbound { modem, .. }
        | WorkerEvent::StatusReport { modem, .. }
        | WorkerEvent::Health { modem, .. } => modem,
    }
}
