//! Durable delivery of events to the CMS's webhooks.
//!
//! # Wire format
//! Each delivery is `POST <url>` with `Content-Type: application/json` and the body
//! `{"id": "<uuid>", "type": "message.delivered", "created_at": "<RFC 3339>", "data": {...}}`.
//! The header `Modemgate-Signature: t=<unix seconds>,v1=<hex>` carries HMAC-SHA256, keyed with the webhook's
//! `secret`, over the bytes `<t>.<body>`. Receivers recompute it, compare in constant time, and reject a `t`
//! too far from their clock (replay protection); [`verify`] does exactly that. `id` is the event's id: the
//! same event retried keeps its id, so receivers de-duplicate on it.
//!
//! # Delivery
//! Events are written to the store's outbox (one row per event and subscribed webhook) in the same commit as
//! the state change that caused them, so none is lost in a crash. The [`Deliverer`] then posts due rows, each
//! webhook's in a loop of its own ([`Lane`]), so a receiver that is down or slow to answer delays only its
//! own events: 2xx marks a row delivered; anything else (or no answer in time) records the attempt and
//! schedules the next after an exponential back-off with jitter ([`Backoff`], 1 s doubling to 1 h by
//! default). Rows of one message go out in order: [`OutboxStore::next_due`] offers only the oldest
//! undelivered row of each message in a lane.
//!
//! `https://` URLs are verified against the system's CA store (rustls with ring); `http://` is for loopback
//! and test rigs (check-config warns about it).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use hyper::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// The event types a webhook can subscribe to (`[[webhooks]] events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    MessageSent,
    MessageDelivered,
    MessageFailed,
    MessageExpired,
    MessageUnknown,
    MessageReceived,
    OptoutCreated,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::MessageSent,
        EventKind::MessageDelivered,
        EventKind::MessageFailed,
        EventKind::MessageExpired,
        EventKind::MessageUnknown,
        EventKind::MessageReceived,
        EventKind::OptoutCreated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageSent => "message.sent",
            EventKind::MessageDelivered => "message.delivered",
            EventKind::MessageFailed => "message.failed",
            EventKind::MessageExpired => "message.expired",
            EventKind::MessageUnknown => "message.unknown",
            EventKind::MessageReceived => "message.received",
            EventKind::OptoutCreated => "optout.created",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// `[[webhooks]] events` names event types as they appear in payloads.
impl<'de> serde::Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        EventKind::parse(&name).ok_or_else(|| {
            let names: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown webhook event `{name}`: expected one of {}",
                names.join(", ")
            ))
        })
    }
}

/// `data` of the `message.*` status events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageEvent {
    pub message_id: Uuid,
    /// E.164 recipient.
    pub to: String,
    pub parts: usize,
    pub modem: Option<String>,
    /// The client's `reference` and `metadata`, echoed so the CMS can match without a lookup.
    pub reference: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// Why it failed or is unknown.
    pub error: Option<String>,
    /// The modem's `+CMS ERROR` code (or a delivery report's TP-Status) when one caused it.
    pub error_code: Option<i64>,
}

/// `data` of `message.received`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedEvent {
    pub message_id: Uuid,
    pub from: String,
    /// Our modem's number when known.
    pub to: Option<String>,
    /// The whole text, reassembled from its parts.
    pub text: String,
    pub parts: usize,
    /// The modem it came in on.
    pub modem: String,
    /// The SMSC timestamp of the first part.
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub sent_at: Option<Timestamp>,
    /// What the reply asks for, when a rule recognised it: `opt_out`, `opt_in`, `help`, `optout_review`
    /// (mentions an opt-out word: treated as one until reviewed), or a reply menu's intent.
    pub intent: Option<String>,
    /// No rule fully handled it: a person should read it.
    pub needs_agent: bool,
}

/// `data` of `optout.created`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptoutEvent {
    pub number: String,
    /// `keyword` (a reply such as STOP), `review` (a reply that mentions an opt-out word) or `api`.
    pub source: String,
    /// The keyword, for `keyword`.
    pub keyword: Option<String>,
    /// The reply, for `review`.
    pub text: Option<String>,
    /// The admin's note, for `api`.
    pub note: Option<String>,
    /// The inbound message that caused it (`keyword` and `review`).
    pub message_id: Option<Uuid>,
}

/// An event and its data; the type decides the data's shape, so they cannot disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "message.sent")]
    MessageSent(MessageEvent),
    #[serde(rename = "message.delivered")]
    MessageDelivered(MessageEvent),
    #[serde(rename = "message.failed")]
    MessageFailed(MessageEvent),
    #[serde(rename = "message.expired")]
    MessageExpired(MessageEvent),
    #[serde(rename = "message.unknown")]
    MessageUnknown(MessageEvent),
    #[serde(rename = "message.received")]
    MessageReceived(ReceivedEvent),
    #[serde(rename = "optout.created")]
    OptoutCreated(OptoutEvent),
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::MessageSent(_) => EventKind::MessageSent,
            Event::MessageDelivered(_) => EventKind::MessageDelivered,
            Event::MessageFailed(_) => EventKind::MessageFailed,
            Event::MessageExpired(_) => EventKind::MessageExpired,
            Event::MessageUnknown(_) => EventKind::MessageUnknown,
            Event::MessageReceived(_) => EventKind::MessageReceived,
            Event::OptoutCreated(_) => EventKind::OptoutCreated,
        }
    }

    /// The message whose events must arrive in order, if any.
    pub fn message_id(&self) -> Option<Uuid> {
        match self {
            Event::MessageSent(m)
            | Event::MessageDelivered(m)
            | Event::MessageFailed(m)
            | Event::MessageExpired(m)
            | Event::MessageUnknown(m) => Some(m.message_id),
            Event::MessageReceived(r) => Some(r.message_id),
            Event::OptoutCreated(_) => None,
        }
    }
}

/// The delivered JSON: `{"id", "type", "created_at", "data"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    pub id: Uuid,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub created_at: Timestamp,
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    pub fn new(event: Event, created_at: Timestamp) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            created_at,
            event,
        }
    }

    /// The JSON the outbox stores and every attempt posts (so retries are byte-identical).
    pub fn payload(&self) -> Value {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Why a webhook setting or signature is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook url {0:?} is not a valid http:// or https:// URL")]
    BadUrl(String),
    #[error("webhook secret is empty")]
    EmptySecret,
    #[error("Modemgate-Signature header is malformed")]
    MalformedSignature,
    #[error("Modemgate-Signature timestamp is outside the tolerance")]
    StaleSignature,
    #[error("Modemgate-Signature does not match the body")]
    BadSignature,
}

fn keyed_mac(secret: &[u8]) -> Result<HmacSha256, WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::EmptySecret);
    }
    HmacSha256::new_from_slice(secret).map_err(|_| WebhookError::EmptySecret)
}

fn signed_mac(mac: &HmacSha256, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = mac.clone();
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a `Modemgate-Signature` header as a receiver should: the MAC over `t.body` in constant time, and
/// `t` within `tolerance` of `now`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: Timestamp,
    tolerance: Duration,
) -> Result<(), WebhookError> {
    let mut timestamp = None;
    let mut signature = None;
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", hex_mac)) => signature = hex::decode(hex_mac).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(WebhookError::MalformedSignature);
    };
    if now.as_second().abs_diff(timestamp) > tolerance.as_secs() {
        return Err(WebhookError::StaleSignature);
    }
    signed_mac(&keyed_mac(secret)?, timestamp, body)
        .verify_slice(&signature)
        .map_err(|_| WebhookError::BadSignature)
}

/// One configured webhook (`[[webhooks]]`).
#[derive(Clone)]
pub struct Target {
    url: Uri,
    /// What logs and `/metrics` call it (see [`labels`]).
    label: String,
    /// Its `name` in the config: what identifies it when its URL changes.
    name: Option<String>,
    mac: HmacSha256,
    /// Subscribed events; every event when `None`.
    events: Option<Vec<EventKind>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("label", &self.label)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A webhook at `url` (http or https) signing with `secret`; `events: None` subscribes to every event.
    pub fn new(
        url: &str,
        secret: &str,
        events: Option<Vec<EventKind>>,
    ) -> Result<Target, WebhookError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| WebhookError::BadUrl(url.to_owned()))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => {}
            _ => return Err(WebhookError::BadUrl(url.to_owned())),
        }
        Ok(Target {
            label: default_label(&uri),
            name: None,
            url: uri,
            mac: keyed_mac(secret.as_bytes())?,
            events,
        })
    }

    /// The same webhook under another label in logs, attempts and `/metrics`.
    pub fn labelled(mut self, label: impl Into<String>) -> Target {
        self.label = label.into();
        self
    }

    /// Its configured name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// What logs and `/metrics` call this webhook.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The URL its outbox rows are addressed to.
    pub fn url(&self) -> String {
        self.url.to_string()
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        subscribes(self.events.as_deref(), kind)
    }

    /// What the outbox needs to know of this webhook to write its rows.
    pub fn subscription(&self) -> Subscription {
        Subscription {
            url: self.url.to_string(),
            name: self.name.clone(),
            events: self.events.clone(),
        }
    }

    /// Whether an outbox row addressed to `url` is this webhook's.
    fn is(&self, url: &str) -> bool {
        self.url == url
    }

    /// The `Modemgate-Signature` value for `body` sent at `timestamp` (unix seconds).
    pub fn signature(&self, timestamp: i64, body: &[u8]) -> String {
        let mac = signed_mac(&self.mac, timestamp, body)
            .finalize()
            .into_bytes();
        format!("t={timestamp},v1={}", hex::encode(mac))
    }
}

/// The `[[webhooks]]` entries as delivery targets, each under its label ([`labels`]); an empty event
/// list subscribes to every event.
pub fn targets(webhooks: &[crate::config::Webhook]) -> Result<Vec<Target>, WebhookError> {
    webhooks
        .iter()
        .zip(labels(webhooks))
        .map(|(webhook, label)| {
            let events = (!webhook.events.is_empty()).then(|| webhook.events.to_vec());
            let mut target =
                Target::new(&webhook.url.to_string(), webhook.secret.expose(), events)?
                    .labelled(label);
            target.name = webhook.name.as_ref().map(|name| name.as_str().to_owned());
            Ok(target)
        })
        .collect()
}

/// What logs and `/metrics` call each `[[webhooks]]` entry: its `name`, else its scheme
/// and host, never its path or query, where receivers often put a token. Unnamed webhooks on one host are
/// told apart by their position in the file (`https://cms.example#2`).
pub fn labels(webhooks: &[crate::config::Webhook]) -> Vec<String> {
    let hosts: Vec<String> = webhooks.iter().map(|w| default_label(&w.url)).collect();
    webhooks
        .iter()
        .zip(&hosts)
        .enumerate()
        .map(|(i, (webhook, host))| match &webhook.name {
            Some(name) => name.as_str().to_owned(),
            None if hosts.iter().filter(|h| *h == host).count() > 1 => format!("{host}#{}", i + 1),
            None => host.clone(),
        })
        .collect()
}

/// What logs call the webhook at `url` when no configured name is known: its scheme and host.
pub fn label_of(url: &str) -> String {
    url.parse::<Uri>().map_or_else(
        |_| "an unreadable webhook URL".to_owned(),
        |uri| default_label(&uri),
    )
}

/// `scheme://host[:port]`: the URL without credentials, path or query.
fn default_label(url: &Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("http");
    let host = url.host().unwrap_or("");
    match url.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// A webhook as the outbox sees it: each event gets a row of its own for every webhook subscribed to its
/// type, so a receiver that is down delays and repeats only its own deliveries, not the others'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The webhook's URL, as the outbox rows name it.
    pub url: String,
    /// Its configured name, recorded with its rows so they can follow it to a new URL.
    pub name: Option<String>,
    /// Subscribed events; every event when `None`.
    pub events: Option<Vec<EventKind>>,
}

impl Subscription {
    pub fn wants(&self, kind: EventKind) -> bool {
        subscribes(self.events.as_deref(), kind)
    }
}

/// Whether a webhook subscribed to `events` (every event when `None`) wants `kind`.
fn subscribes(events: Option<&[EventKind]>, kind: EventKind) -> bool {
    events.is_none_or(|events| events.contains(&kind))
}

/// The outbox rows one delivery loop posts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    /// The rows of the webhook at this URL.
    Webhook(String),
    /// Rows written before rows were per webhook: each goes to every webhook subscribed to its type.
    Shared,
}

impl Lane {
    /// The outbox's `target` for this lane's rows.
    pub fn target(&self) -> Option<&str> {
        match self {
            Lane::Webhook(url) => Some(url),
            Lane::Shared => None,
        }
    }
}

/// An outbox row due for delivery: one event for one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    pub kind: EventKind,
    /// The exact bytes to post (the stored [`Envelope`]).
    pub body: Vec<u8>,
    /// Attempts made so far.
    pub attempts: u32,
    /// The webhook it is for; `None` for a row written before rows were per webhook, which goes to every
    /// webhook subscribed to its type.
    pub target: Option<String>,
}

/// How an attempt ended for the webhooks that did not accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A receiver answered with this (non-2xx) status.
    Status(u16),
    /// No answer: connection refused, timeout, unknown event type.
    Error(String),
}

/// One failed attempt, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub at: Timestamp,
    pub outcome: AttemptOutcome,
    pub next_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook outbox: {0}")]
pub struct OutboxError(pub String);

pub type OutboxResult<'a, T> = BoxFuture<'a, Result<T, OutboxError>>;

/// The outbox storage (the store's `webhook_outbox` table). Rows are added with the state change that
/// caused them, as an [`Envelope`] with its [`EventKind`], message id and webhook.
pub trait OutboxStore: Send + Sync + 'static {
    /// `lane`'s undelivered rows due at `now`, oldest first, at most `limit`, and only the oldest
    /// undelivered row of each message: a message's later event waits for its earlier one to reach that
    /// webhook, even when due, and for no other webhook.
    fn next_due(
        &self,
        lane: &Lane,
        now: Timestamp,
        limit: usize,
    ) -> OutboxResult<'_, Vec<OutboxItem>>;
    /// Records a failed attempt and when to try again.
    fn record_attempt(&self, id: i64, attempt: Attempt) -> OutboxResult<'_, ()>;
    /// Records the successful attempt; the row is never offered again.
    fn mark_delivered(&self, id: i64, at: Timestamp, status: u16) -> OutboxResult<'_, ()>;
}

/// Exponential back-off with jitter: attempt n waits `min(cap, base * 2^(n-1))`, then a random-looking half
/// of that is kept ("equal jitter"), so receivers coming back up are not hit by every retry at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    /// Delay after the `attempts`-th failure of row `id`. The jitter is a hash of both, so it is spread
    /// across rows yet reproducible in tests.
    pub fn delay(&self, id: i64, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(31);
        let full = self.base.saturating_mul(1u32 << exponent).min(self.cap);
        let mut hasher = DefaultHasher::new();
        (id, attempts).hash(&mut hasher);
        let fraction = (hasher.finish() % 1_000_000) as f64 / 1_000_000.0;
        full / 2 + full.mul_f64(fraction / 2.0)
    }
}

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
}

/// TLS for https webhooks, trusting the system's CA store (so an agency's internal CA, installed on the
/// box, is trusted like any other). With no readable CA store, https calls fail per attempt with a logged
/// error and are retried; plain http keeps working.
fn tls(connector: HttpConnector) -> HttpsConnector<HttpConnector> {
    let builder = match HttpsConnectorBuilder::new().with_native_roots() {
        Ok(builder) => builder,
        Err(error) => {
            tracing::warn!(%error, "no system CA certificates: https webhooks will fail until some are installed");
            HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    };
    builder
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector)
}

impl Deliverer {
    pub fn new(store: Arc<dyn OutboxStore>, targets: Vec<Target>, backoff: Backoff) -> Deliverer {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.enforce_http(false);
        Deliverer {
            store,
            targets,
            client: Client::builder(TokioExecutor::new()).build(tls(connector)),
            backoff,
            timeout: Duration::from_secs(15),
            poll: Duration::from_secs(1),
            batch: 32,
            wake: Arc::new(Notify::new()),
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
            .map(|target| Lane::Webhook(target.url.to_string()))
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
                    ?outcome,
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

    async fn post(&self, target: &Target, body: &[u8]) -> AttemptOutcome {
        let signature = target.signature(Timestamp::now().as_second(), body);
        let request = hyper::Request::post(target.url.clone())
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
            Ok(Err(e)) => AttemptOutcome::Error(format!("{}: {e}", target.label)),
            Err(_) => AttemptOutcome::Error(format!(
                "{}: no answer within {:?}",
                target.label, self.timeout
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

    fn sent() -> Event {
        Event::MessageSent(MessageEvent {
            message_id: Uuid::nil(),
            to: "+4915123456789".into(),
            parts: 1,
            modem: Some("m1".into()),
            reference: Some("case-7".into()),
            metadata: None,
            error: None,
            error_code: None,
        })
    }

    #[test]
    fn envelope_has_id_type_created_at_and_data() {
        let env = Envelope::new(sent(), "2026-11-22T12:00:00Z".parse().unwrap());
        let json = env.payload();
        assert_eq!(json["type"], "message.sent");
        assert_eq!(json["created_at"], "2026-11-22T12:00:00.000Z");
        assert_eq!(json["id"], env.id.to_string());
        assert_eq!(json["data"]["to"], "+4915123456789");
        assert_eq!(json["data"]["reference"], "case-7");
    }

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let target = Target::new("http://127.0.0.1:9/hook", "s3cret", None).unwrap();
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let header = target.signature(now.as_second(), b"{}");
        assert!(header.starts_with(&format!("t={},v1=", now.as_second())));
        let tolerance = Duration::from_secs(300);
        assert_eq!(verify(b"s3cret", &header, b"{}", now, tolerance), Ok(()));
        assert_eq!(
            verify(b"s3cret", &header, b"{ }", now, tolerance),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(b"other", &header, b"{}", now, tolerance),
            Err(WebhookError::BadSignature)
        );
        let later = now.checked_add(Duration::from_secs(301)).unwrap();
        assert_eq!(
            verify(b"s3cret", &header, b"{}", later, tolerance),
            Err(WebhookError::StaleSignature)
        );
        assert_eq!(
            verify(b"s3cret", "v1=zz", b"{}", now, tolerance),
            Err(WebhookError::MalformedSignature)
        );
    }

    #[test]
    fn known_answer_signature() {
        // HMAC-SHA256(key="key", "1.{}") computed independently (Python hmac module).
        let target = Target::new("http://h/", "key", None).unwrap();
        assert_eq!(
            target.signature(1, b"{}"),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }

    #[test]
    fn targets_validate_and_filter_events() {
        assert!(Target::new("https://cms/hook", "s", None).is_ok());
        assert!(matches!(
            Target::new("ftp://cms/hook", "s", None),
            Err(WebhookError::BadUrl(_))
        ));
        assert!(matches!(
            Target::new("cms/hook", "s", None),
            Err(WebhookError::BadUrl(_))
        ));
        assert_eq!(
            Target::new("http://cms/", "", None).unwrap_err(),
            WebhookError::EmptySecret
        );
        let only =
            Target::new("http://cms/a", "s", Some(vec![EventKind::MessageDelivered])).unwrap();
        assert!(only.wants(EventKind::MessageDelivered));
        assert!(!only.wants(EventKind::MessageSent));
        assert!(
            Target::new("http://cms/b", "s", None)
                .unwrap()
                .wants(EventKind::OptoutCreated)
        );
    }

    #[test]
    fn config_webhooks_subscribe_by_event_type() {
        let config: crate::config::Webhook = toml::from_str(
            "url = \"http://cms.local/hook\"\nsecret = \"s3cret-s3cret-s3cret\"\nevents = [\"message.delivered\"]",
        )
        .unwrap();
        let target = targets(std::slice::from_ref(&config)).unwrap().remove(0);
        assert!(target.wants(EventKind::MessageDelivered));
        assert!(!target.wants(EventKind::MessageSent) && !target.wants(EventKind::OptoutCreated));
        let status_name: Result<crate::config::Webhook, _> = toml::from_str(
            "url = \"http://cms.local/hook\"\nsecret = \"s3cret-s3cret-s3cret\"\nevents = [\"delivered\"]",
        );
        assert!(
            status_name
                .unwrap_err()
                .to_string()
                .contains("unknown webhook event `delivered`")
        );
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn webhooks_are_labelled_by_name_else_by_host_without_credentials_path_or_query() {
        let hook = |name: Option<&str>, url: &str| crate::config::Webhook {
            name: name.map(|n| n.parse().unwrap()),
            url: url.parse().unwrap(),
            secret: "s3cret-s3cret-s3cret".parse().unwrap(),
            events: Vec::new(),
        };
        let webhooks = [
            hook(Some("cms"), "https://cms.example/hooks?token=abc"),
            hook(None, "https://user:pw@archive.example:8443/a/T0KEN"),
            hook(None, "http://10.0.0.5/one"),
            hook(None, "http://10.0.0.5/two?key=k"),
        ];
        let expected = [
            "cms",
            "https://archive.example:8443",
            "http://10.0.0.5#3",
            "http://10.0.0.5#4",
        ];
        assert_eq!(labels(&webhooks), expected);
        let targets = targets(&webhooks).unwrap();
        assert_eq!(
            targets.iter().map(Target::label).collect::<Vec<_>>(),
            expected
        );
        assert_eq!(targets[0].url(), "https://cms.example/hooks?token=abc");
        assert!(!format!("{:?}", targets[1]).contains("T0KEN"));
        assert_eq!(
            label_of("https://user:pw@gone.example:8443/a/T0KEN?k=1"),
            "https://gone.example:8443"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let b = Backoff::default();
        for attempts in 1..=40u32 {
            let full = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(31)).min(b.cap);
            let d = b.delay(7, attempts);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempts}: {d:?} outside {full:?}/2..{full:?}"
            );
        }
        assert!(b.delay(7, 40) <= Duration::from_secs(3600));
        // Different rows do not retry in lock-step.
        let spread: std::collections::HashSet<_> = (0..20).map(|id| b.delay(id, 5)).collect();
        assert!(spread.len() > 10);
    }
}
