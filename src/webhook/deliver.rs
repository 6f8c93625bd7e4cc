//! The loops that post due outbox rows to their webhooks and record how each attempt ended.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::event::EventKind;
use super::outbox::{Attempt, AttemptOutcome, Lane, OutboxError, OutboxItem, OutboxStore};
use super::target::Target;

/// Posts due outbox rows until cancelled, in a loop per [`Lane`].
///
/// A row is delivered when its webhook answered 2xx; otherwise it is retried. A webhook may still see an
/// event twice (its answer lost, or a shared row from before per-webhook rows that another webhook
/// refused): receivers de-duplicate on the envelope `id` (delivery is at least once, as with any webhook).
pub struct Deliverer {
    store: Arc<dyn OutboxStore>,
    targets: Vec<Target>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    backoff: Backoff,
    /// Longest wait for a receiver's answer.
    timeout: Duration,
    /// Longest sleep between rounds: how late a retry scheduled by an earlier run can be.
    poll: Duration,
    /// Rows fetched (and posted concurrently, all of different messages) per round of a lane.
    batch: usize,
    /// Poked when new rows are committed, so they go out without waiting for the next poll; passed on to
    /// every lane.
    wake: Arc<Notify>,
    failing: Failing,
}

/// Webhooks whose last attempt failed, by label: the first failure is a warning, the retries that follow
/// (one per queued event) are not, so a receiver that is down does not flood the journal.
#[derive(Default)]
struct Failing(std::sync::Mutex<HashSet<String>>);

/// A webhook's change of health, worth a log line.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Failing,
    Recovered,
}

impl Failing {
    fn note(&self, webhook: &str, answered: bool) -> Option<Change> {
        let mut failing = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match answered {
            true => failing.remove(webhook).then_some(Change::Recovered),
            false => failing
                .insert(webhook.to_owned())
                .then_some(Change::Failing),
        }
    }
}

impl Deliverer {
    pub fn new(store: Arc<dyn OutboxStore>, targets: Vec<Target>, backoff: Backoff) -> Deliverer {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        Deliverer {
            store,
            targets,
            // https webhooks trust the system's CA store.
            client: Client::builder(TokioExecutor::new())
                .build(crate::tls::https_connector(connector, None)),
            backoff,
            timeout: Duration::from_secs(15),
            poll: Duration::from_secs(1),
            batch: 32,
            wake: Arc::new(Notify::new()),
            failing: Failing::default(),
        }
    }

    /// How long a receiver may take to answer (15 s unless set).
    pub fn with_timeout(mut self, timeout: Duration) -> Deliverer {
        self.timeout = timeout;
        self
    }

    /// Whether any webhook wants `kind`: if not, do not enqueue it at all.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.targets.iter().any(|t| t.wants(kind))
    }

    /// Notify this after committing outbox rows.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Delivers until `cancel` fires: a loop per webhook, and one for rows from before rows were per
    /// webhook.
    pub async fn run(self, cancel: CancellationToken) {
        let this = Arc::new(self);
        let mut lanes: Vec<Lane> = this
            .targets
            .iter()
            .map(|target| Lane::Webhook(target.url()))
            .collect();
        // check-config refuses two entries for one URL; were there two, one loop would post their rows.
        lanes.sort();
        lanes.dedup();
        lanes.push(Lane::Shared);
        let wakes: Vec<Arc<Notify>> = lanes.iter().map(|_| Arc::new(Notify::new())).collect();
        let mut loops = tokio::task::JoinSet::new();
        for (lane, wake) in lanes.into_iter().zip(&wakes) {
            loops.spawn(
                this.clone()
                    .deliver_lane(lane, wake.clone(), cancel.clone()),
            );
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = this.wake.notified() => wakes.iter().for_each(|wake| wake.notify_one()),
            }
        }
        while loops.join_next().await.is_some() {}
    }

    /// One lane's loop. Store errors are logged and retried on the next round. A round in flight is
    /// finished before `cancel` is heeded (a post waits at most the answer timeout), so what was answered
    /// is recorded.
    async fn deliver_lane(
        self: Arc<Self>,
        lane: Lane,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        loop {
            let mut wait = self.poll;
            match self.deliver_due(&lane).await {
                Ok(round) if round.rows >= self.batch => continue,
                Ok(round) => {
                    if let Some(at) = round.earliest_retry {
                        let until = Duration::try_from(at.duration_since(Timestamp::now()))
                            .unwrap_or_default();
                        wait = wait.min(until);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "webhook delivery round failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round of `lane`: posts every due row (concurrently: they are of different messages).
    pub async fn deliver_due(&self, lane: &Lane) -> Result<Round, OutboxError> {
        let items = self
            .store
            .next_due(lane, Timestamp::now(), self.batch)
            .await?;
        let rows = items.len();
        let results: Vec<Result<Option<Timestamp>, OutboxError>> =
            futures_util::stream::iter(items)
                .map(|item| self.deliver(item))
                .buffer_unordered(8)
                .collect()
                .await;
        let mut earliest_retry: Option<Timestamp> = None;
        for result in results {
            if let Some(at) = result? {
                earliest_retry = Some(earliest_retry.map_or(at, |e| e.min(at)));
            }
        }
        Ok(Round {
            rows,
            earliest_retry,
        })
    }

    /// Posts one row to its webhook (a row of a webhook no longer configured, or no longer subscribed to the
    /// type, is closed with status 0); the retry time when it failed.
    async fn deliver(&self, item: OutboxItem) -> Result<Option<Timestamp>, OutboxError> {
        let targets: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| t.wants(item.kind) && item.target.as_deref().is_none_or(|url| t.is(url)))
            .collect();
        let outcomes =
            futures_util::future::join_all(targets.iter().map(|t| self.post(t, &item.body))).await;
        let now = Timestamp::now();
        let failure = outcomes
            .iter()
            .find(|o| !matches!(o, AttemptOutcome::Status(200..=299)));
        for (target, outcome) in targets.iter().zip(&outcomes) {
            self.note_health(target.label(), outcome);
        }
        match failure.cloned() {
            None => {
                // The first receiver's status; 0 when no webhook subscribes to this type any more.
                let status = match outcomes.first() {
                    Some(AttemptOutcome::Status(status)) => *status,
                    _ => 0,
                };
                self.store.mark_delivered(item.id, now, status).await?;
                Ok(None)
            }
            Some(outcome) => {
                let attempts = item.attempts.saturating_add(1);
                let next_at = now
                    .checked_add(self.backoff.delay(item.id, attempts))
                    .unwrap_or(now);
                let webhook = match &item.target {
                    None => "every subscribed webhook",
                    Some(_) => targets.first().map_or("", |t| t.label()),
                };
                tracing::info!(
                    id = item.id,
                    webhook,
                    %outcome,
                    attempts,
                    "webhook attempt failed"
                );
                let attempt = Attempt {
                    at: now,
                    outcome,
                    next_at,
                };
                self.store.record_attempt(item.id, attempt).await?;
                Ok(Some(next_at))
            }
        }
    }

    /// Logs a webhook starting to fail (a warning) and answering again, once each.
    fn note_health(&self, webhook: &str, outcome: &AttemptOutcome) {
        let answered = matches!(outcome, AttemptOutcome::Status(200..=299));
        match self.failing.note(webhook, answered) {
            Some(Change::Failing) => tracing::warn!(
                webhook,
                %outcome,
                "webhook failing: its events wait and are retried with back-off"
            ),
            Some(Change::Recovered) => tracing::info!(webhook, "webhook answering again"),
            None => {}
        }
    }

    async fn post(&self, target: &Target, body: &[u8]) -> AttemptOutcome {
        let signature = target.signature(Timestamp::now().as_second(), body);
        let request = hyper::Request::post(target.uri().clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("modemgate/", env!("CARGO_PKG_VERSION")),
            )
            .header("Modemgate-Signature", signature)
            .body(Full::new(Bytes::copy_from_slice(body)));
        let request = match request {
            Ok(request) => request,
            Err(e) => return AttemptOutcome::Error(e.to_string()),
        };
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => AttemptOutcome::Status(response.status().as_u16()),
            Ok(Err(e)) => AttemptOutcome::Error(format!("{}: {e}", target.label())),
            Err(_) => AttemptOutcome::Error(format!(
                "{}: no answer within {:?}",
                target.label(),
                self.timeout
            )),
        }
    }
}

/// What one delivery round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Rows attempted.
    pub rows: usize,
    /// The earliest retry scheduled in this round.
    pub earliest_retry: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_is_reported_failing_once_and_recovered_once() {
        let failing = Failing::default();
        assert_eq!(failing.note("crm", true), None);
        assert_eq!(failing.note("crm", false), Some(Change::Failing));
        assert_eq!(failing.note("crm", false), None);
        assert_eq!(failing.note("archive", false), Some(Change::Failing));
        assert_eq!(failing.note("crm", true), Some(Change::Recovered));
        assert_eq!(failing.note("crm", true), None);
        assert_eq!(failing.note("crm", false), Some(Change::Failing));
    }
}
