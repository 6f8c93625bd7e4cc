//! The daemon's [`Backend`]: the store for messages and opt-outs, the dispatcher for new and cancelled
//! work, and the modem workers (through [`ModemControl`]) for live health and pausing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::backend::{
    Accepted, Backend, BackendError, BackendResult, ListFilter, MessageDetail, MessageView,
    ModemCounters, ModemView, NewMessage, Optout, Page,
};
use super::metrics::{Metrics, ModemGauges, ModemTraffic, WebhookGauges};
use super::waiting;
use crate::dispatch::DispatchHandle;
use crate::modem::job::ModemHealth;
use crate::msisdn::Msisdn;
use crate::outbound::{self, ComposeOptions};
use crate::rules::notice;
use crate::rules::optouts::{OptOutSource, OptOuts, Origin};
use crate::rules::replies::OptOutConfig;
use crate::store::{self, MessageState, QueueEntry, Store};

/// A configured modem as the daemon runs it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveModem {
    pub id: String,
    pub health: ModemHealth,
    /// Its SIM's daily cap in parts, from the config.
    pub daily_cap: Option<NonZeroU32>,
}

/// Live modem state and the admin's pause switch, owned by the daemon (it hears the workers' health).
pub trait ModemControl: Send + Sync + 'static {
    /// Every configured modem, in config order, with its latest health.
    fn modems(&self) -> Vec<LiveModem>;
    /// Pauses or resumes `id`; `false` when there is no such modem.
    fn set_paused(&self, id: &str, paused: bool) -> bool;
}

/// [`Backend`] over the real daemon parts.
pub struct Gateway {
    store: Store,
    dispatch: DispatchHandle,
    modems: Arc<dyn ModemControl>,
    /// Opted-out numbers, shared with the dispatcher's gate and the inbound rules so a change made here is
    /// honoured there at once.
    optouts: Arc<OptOuts>,
    /// `[optout]`: the notice every outbound text must carry, when configured.
    optout: OptOutConfig,
    /// `[pdu] status_reports`: ask the SMSC for delivery reports (TP-SRR), so `delivered` can be known.
    status_reports: bool,
    /// The configured webhooks as (URL, label).
    webhooks: Vec<(String, String)>,
}

/// The `/metrics` label of events queued before outbox rows were per webhook: each goes to every webhook
/// subscribed to its type.
const SHARED_LABEL: &str = "*";

impl Gateway {
    pub fn new(
        store: Store,
        dispatch: DispatchHandle,
        modems: Arc<dyn ModemControl>,
        optouts: Arc<OptOuts>,
        optout: OptOutConfig,
        status_reports: bool,
    ) -> Gateway {
        Gateway {
            store,
            dispatch,
            modems,
            optouts,
            optout,
            status_reports,
            webhooks: Vec::new(),
        }
    }

    /// The configured webhooks as (URL, label), for their backlog in `/metrics`.
    pub fn with_webhooks(mut self, webhooks: Vec<(String, String)>) -> Gateway {
        self.webhooks = webhooks;
        self
    }

    /// Suppression at accept time (422 `opted_out`); the dispatcher's gate checks again at hand-off.
    /// `Some` is the answer already due: a repeat of a request accepted before the opt-out still gets that
    /// message (a CMS retrying after a timeout must not read a refusal of what it sent), and a changed
    /// body with the same key still conflicts (409).
    async fn suppress(
        &self,
        message: &store::NewMessage,
    ) -> Option<Result<store::Accepted, BackendError>> {
        if !self.optouts.contains(&message.to) {
            return None;
        }
        Some(match self.store.replay(message.clone()).await {
            Ok(Some(original)) => Ok(original),
            Ok(None) => Err(BackendError::OptedOut(message.to.clone())),
            Err(error) => Err(error.into()),
        })
    }

    /// Encodes the PDUs the store keeps, with the opt-out notice when one is configured.
    fn encode(&self, message: NewMessage) -> Result<store::NewMessage, BackendError> {
        let request = message.request;
        // The opt-out notice (`[optout] notice`), appended when it fits or required, in the recipient's
        // language when the request gives one (English otherwise, and where none is configured for it).
        let text = notice::apply(
            &self.optout,
            &request.text,
            request.language,
            request.encoding,
            request.smart,
        )
        .map_err(BackendError::Refused)?;
        let options = ComposeOptions {
            api_key: message.api_key,
            idempotency_key: message.idempotency_key,
            priority: i32::from(request.priority.get()),
            send_at: request.send_at,
            expires_at: request.expires_at,
            reference: request.reference,
            metadata: request.metadata.map(Value::Object),
            tz: request.tz,
            region: request.region,
            category: store::Category::Standard,
            encoding: request.encoding,
            smart: request.smart,
            status_report: self.status_reports,
        };
        outbound::compose(request.to.as_str(), &text, options)
            .map_err(|e| BackendError::Invalid(e.to_string()))
    }

    /// Stores `message` and hands it to the dispatcher in a task of its own. A client that hangs up
    /// (its timeout) drops the request's future: between the commit and the hand-off, that left a
    /// message stored, answered `202` to a retry, and never sent until the next restart.
    async fn commit(&self, message: store::NewMessage) -> Result<store::Accepted, BackendError> {
        let (store, dispatch) = (self.store.clone(), self.dispatch.clone());
        let committed = tokio::spawn(async move {
            let accepted = store.accept(message.clone()).await?;
            enqueue(&dispatch, &message, &accepted);
            Ok::<_, store::StoreError>(accepted)
        });
        Ok(committed.await.map_err(lost)??)
    }

    /// [`Gateway::commit`] for a batch: one commit, then each new message to the dispatcher, together.
    async fn commit_batch(
        &self,
        messages: Vec<store::NewMessage>,
    ) -> Result<Vec<Result<store::Accepted, store::StoreError>>, BackendError> {
        let (store, dispatch) = (self.store.clone(), self.dispatch.clone());
        let committed = tokio::spawn(async move {
            let results = store.accept_batch(messages.clone()).await?;
            for (message, result) in messages.iter().zip(&results) {
                if let Ok(accepted) = result {
                    enqueue(&dispatch, message, accepted);
                }
            }
            Ok::<_, store::StoreError>(results)
        });
        Ok(committed.await.map_err(lost)??)
    }

    async fn modem_views(&self) -> Result<Vec<ModemView>, BackendError> {
        let mut counters: HashMap<String, ModemCounters> = self
            .store
            .modems()
            .await?
            .into_iter()
            .map(|r| {
                let counters = ModemCounters {
                    parts_sent: r.parts_sent,
                    parts_failed: r.parts_failed,
                    received: r.received,
                };
                (r.id, counters)
            })
            .collect();
        Ok(self
            .modems_today()
            .await?
            .into_iter()
            .map(|(modem, sent_today)| ModemView {
                counters: counters.remove(&modem.id).unwrap_or_default(),
                sent_today,
                daily_cap: modem.daily_cap,
                id: modem.id,
                health: modem.health,
            })
            .collect())
    }

    /// Fills `error` for the queued messages of a page, as `GET /v1/messages/{id}` does, so a CMS listing
    /// its queue sees why it is not moving. Only a multipart message a modem once took may be half sent
    /// (and then wait for that modem alone), so only such a message is read again, for its parts.
    async fn explain_waiting(&self, messages: &mut [MessageView]) -> Result<(), BackendError> {
        let is_waiting = |m: &MessageView| m.status == MessageState::Queued && m.error.is_none();
        if !messages.iter().any(is_waiting) {
            return Ok(());
        }
        let modems = self.modems_today().await?;
        let day_ends = self.store.cap_day(self.store.clock().now()).ends;
        for message in messages.iter_mut() {
            if !is_waiting(message) {
                continue;
            }
            message.error = if message.parts > 1 && message.modem.is_some() {
                match self.store.get(message.id).await? {
                    Some(detail) => {
                        let parts = MessageDetail::from(detail).part_list;
                        waiting::why_waiting(&parts, &modems, day_ends)
                    }
                    None => None,
                }
            } else {
                waiting::why_waiting_whole(message.parts, &modems, day_ends)
            };
        }
        Ok(())
    }

    /// Every configured modem as the daemon runs it now, with the parts its SIM sent today.
    async fn modems_today(&self) -> Result<Vec<(LiveModem, u32)>, BackendError> {
        let today = self.store.daily_sent(self.store.clock().now()).await?;
        Ok(self
            .modems
            .modems()
            .into_iter()
            .map(|modem| {
                let sent = sent_today(&today, &modem);
                (modem, sent)
            })
            .collect())
    }
}

/// A batch item on its way: answered already (invalid, suppressed or a replay), or for the store.
enum Item {
    Answered(Result<store::Accepted, BackendError>),
    Stored,
}

/// A new message (not a repeat of one already queued) to the dispatcher.
fn enqueue(dispatch: &DispatchHandle, message: &store::NewMessage, accepted: &store::Accepted) {
    if !accepted.duplicate {
        dispatch.enqueue(QueueEntry::for_accepted(message, accepted));
    }
}

/// The commit task panicked or was cancelled at shutdown: whether it committed is unknown to this request.
fn lost(error: tokio::task::JoinError) -> BackendError {
    BackendError::Unavailable(format!("the write did not finish: {error}"))
}

/// What `modem`'s SIM has sent today, as its daily cap counts: the SIM its worker reports now.
fn sent_today(today: &store::DailyCounts, modem: &LiveModem) -> u32 {
    today.of(&modem.id, modem.health.identity.iccid.as_deref())
}

impl Backend for Gateway {
    fn accept(&self, message: NewMessage) -> BackendResult<'_, Accepted> {
        Box::pin(async move {
            let message = self.encode(message)?;
            if let Some(answer) = self.suppress(&message).await {
                return Ok(answer?.into());
            }
            Ok(self.commit(message).await?.into())
        })
    }

    fn accepted_at(
        &self,
        api_key: String,
        key: String,
    ) -> BackendResult<'_, Option<jiff::Timestamp>> {
        Box::pin(async move { Ok(self.store.accepted_at(&api_key, &key).await?) })
    }

    fn accept_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> BackendResult<'_, Vec<Result<Accepted, BackendError>>> {
        Box::pin(async move {
            // Items that cannot be encoded or are suppressed get their answer; the rest go to the store
            // in one commit.
            let mut items = Vec::with_capacity(messages.len());
            let mut valid = Vec::with_capacity(messages.len());
            for message in messages {
                let item = match self.encode(message) {
                    Err(error) => Item::Answered(Err(error)),
                    Ok(message) => match self.suppress(&message).await {
                        Some(answer) => Item::Answered(answer),
                        None => {
                            valid.push(message);
                            Item::Stored
                        }
                    },
                };
                items.push(item);
            }
            let mut stored = self.commit_batch(valid).await?.into_iter();
            Ok(items
                .into_iter()
                .map(|item| {
                    if let Item::Answered(answer) = item {
                        return Ok(answer?.into());
                    }
                    let accepted = stored.next().ok_or_else(|| {
                        BackendError::Unavailable("the store answered fewer items than sent".into())
                    })??;
                    Ok(accepted.into())
                })
                .collect())
        })
    }

    fn message(&self, id: Uuid) -> BackendResult<'_, MessageDetail> {
        Box::pin(async move {
            let detail = self.store.get(id).await?;
            let mut detail = detail
                .map(MessageDetail::from)
                .ok_or_else(|| BackendError::NotFound(format!("message {id}")))?;
            let message = &mut detail.message;
            if message.status == MessageState::Queued && message.error.is_none() {
                let modems = self.modems_today().await?;
                let day_ends = self.store.cap_day(self.store.clock().now()).ends;
                message.error = waiting::why_waiting(&detail.part_list, &modems, day_ends);
            }
            Ok(detail)
        })
    }

    fn list(&self, filter: ListFilter) -> BackendResult<'_, Page> {
        Box::pin(async move {
            let filter = store::ListFilter {
                direction: filter.direction,
                peer: filter.to.map(|n| n.as_str().to_owned()),
                state: filter.status,
                since: filter.since,
                until: filter.until,
                reference: filter.reference,
                limit: u32::try_from(filter.limit).ok(),
                after: filter.after,
            };
            let mut page: Page = self.store.list(filter).await?.into();
            self.explain_waiting(&mut page.messages).await?;
            Ok(page)
        })
    }

    fn conversation(
        &self,
        number: Msisdn,
        limit: usize,
        after: Option<String>,
    ) -> BackendResult<'_, Page> {
        Box::pin(async move {
            let page = self
                .store
                .conversation(number.as_str(), u32::try_from(limit).ok(), after)
                .await?;
            let mut page: Page = page.into();
            self.explain_waiting(&mut page.messages).await?;
            Ok(page)
        })
    }

    fn cancel(&self, id: Uuid, actor: String) -> BackendResult<'_, MessageView> {
        Box::pin(async move {
            let cancelled = self.dispatch.cancel(id, &actor).await;
            let detail = self.store.get(id).await?;
            // A repeat (a client retrying a cancel whose answer it lost) is answered with the message,
            // not refused: it is cancelled, as asked. Nothing more is recorded.
            let already = detail
                .as_ref()
                .is_some_and(|d| d.message.state == MessageState::Cancelled);
            if !already {
                cancelled?;
            }
            detail
                .map(|d| MessageView::from(d.message))
                .ok_or_else(|| BackendError::NotFound(format!("message {id}")))
        })
    }

    fn modems(&self) -> BackendResult<'_, Vec<ModemView>> {
        Box::pin(self.modem_views())
    }

    fn set_paused(&self, modem: String, paused: bool) -> BackendResult<'_, ModemView> {
        Box::pin(async move {
            if !self.modems.set_paused(&modem, paused) {
                return Err(BackendError::NotFound(format!("modem {modem:?}")));
            }
            self.modem_views()
                .await?
                .into_iter()
                .find(|m| m.id == modem)
                .ok_or_else(|| BackendError::NotFound(format!("modem {modem:?}")))
        })
    }

    fn optouts(&self) -> BackendResult<'_, Vec<Optout>> {
        Box::pin(async move {
            Ok(self
                .optouts
                .list()
                .await?
                .into_iter()
                .map(Optout::from)
                .collect())
        })
    }

    fn optout_audit(
        &self,
        number: Option<Msisdn>,
    ) -> BackendResult<'_, Vec<store::OptOutAuditEntry>> {
        Box::pin(async move {
            Ok(self
                .store
                .optout_audit(number.map(|n| n.as_str().to_owned()))
                .await?)
        })
    }

    fn add_optout(
        &self,
        number: Msisdn,
        actor: String,
        note: Option<String>,
    ) -> BackendResult<'_, (Optout, bool)> {
        Box::pin(async move {
            let origin = Origin {
                actor: &actor,
                message_id: None,
                modem: None,
                detail: note,
            };
            let new = self
                .optouts
                .add(number.as_str(), OptOutSource::Api, origin)
                .await?;
            // The record as stored: for a number already opted out, the original (when, by whom, why).
            let record = self
                .store
                .optout(number.as_str())
                .await?
                .ok_or_else(|| BackendError::NotFound("opt-out".into()))?;
            Ok((Optout::from(record), new))
        })
    }

    fn remove_optout(&self, number: Msisdn, actor: String) -> BackendResult<'_, ()> {
        Box::pin(async move {
            let origin = Origin {
                actor: &actor,
                message_id: None,
                modem: None,
                detail: None,
            };
            if self.optouts.remove(number.as_str(), origin).await? {
                Ok(())
            } else {
                Err(BackendError::NotFound("opt-out".into()))
            }
        })
    }

    fn refresh_metrics<'a>(&'a self, metrics: &'a Metrics) -> BackendResult<'a, ()> {
        Box::pin(async move {
            metrics.set_store(
                self.store.check().is_ok(),
                self.store.writer_stats().refused,
            );
            metrics.set_optouts_unrecorded(self.optouts.unrecorded());
            // The modems' own gauges are current even when the store cannot count their sends.
            let today = self.store.daily_sent(self.store.clock().now()).await;
            let records = self.store.modems().await;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            // `None` when the store could not say; a modem it never saw (its port never opened) has sent
            // nothing.
            let traffic =
                |id: &str| {
                    let records = records.as_ref().ok()?;
                    Some(records.iter().find(|r| r.id == id).map_or_else(
                        ModemTraffic::default,
                        |r| ModemTraffic {
                            parts_sent: count(r.parts_sent),
                            parts_failed: count(r.parts_failed),
                            received: count(r.received),
                        },
                    ))
                };
            metrics.set_modems(self.modems.modems().into_iter().map(|modem| {
                let gauges = ModemGauges {
                    state: modem.health.state,
                    signal: modem.health.signal,
                    sent_today: today.as_ref().ok().map(|t| sent_today(t, &modem)),
                    daily_cap: modem.daily_cap.map(NonZeroU32::get),
                    storage_used: modem.health.storage_used,
                    storage_total: modem.health.storage_total,
                    answered_at: modem.health.answered_at,
                    traffic: traffic(&modem.id),
                };
                (modem.id, gauges)
            }));
            today.map_err(BackendError::from)?;
            let disk = self.store.disk_usage();
            metrics.set_database_bytes(disk.database, disk.log);
            let totals = self.store.totals().await.map_err(BackendError::from)?;
            metrics.set_messages(totals.messages.into_iter().map(|(state, modem, n)| {
                ((state.as_str().to_owned(), modem.unwrap_or_default()), n)
            }));
            let now = self.store.clock().now();
            let pending = |target: Option<&str>| {
                totals
                    .webhooks
                    .iter()
                    .find(|w| w.target.as_deref() == target)
                    .map_or(WebhookGauges::default(), |w| WebhookGauges {
                        pending: w.pending,
                        oldest_seconds: w
                            .oldest
                            .map_or(0.0, |at| now.duration_since(at).as_secs_f64().max(0.0)),
                    })
            };
            let mut webhooks: Vec<(String, WebhookGauges)> = self
                .webhooks
                .iter()
                .map(|(url, label)| (label.clone(), pending(Some(url))))
                .collect();
            // Events queued before outbox rows were per webhook (migration 9), for every webhook.
            let shared = pending(None);
            if shared.pending > 0 {
                webhooks.push((SHARED_LABEL.to_owned(), shared));
            }
            metrics.set_webhooks(webhooks);
            Ok(())
        })
    }

    fn ready(&self) -> BackendResult<'_, ()> {
        // Not ready while the store refuses writes (every send would be a 503); then a read through the
        // reader pool proves the database answers, not just that it was opened.
        Box::pin(async move {
            self.store.check()?;
            self.store
                .modems()
                .await
                .map(|_| ())
                .map_err(BackendError::from)
        })
    }
}
