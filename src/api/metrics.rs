//! Prometheus metrics, written by hand in the text exposition format (0.0.4).
//!
//! A handful of series does not justify a metrics framework: this keeps one mutex-guarded registry that the
//! daemon updates as events happen and `/metrics` renders on scrape. The mutex is a `std` one because no
//! update ever awaits while holding it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::modem::job::ModemState;

/// Upper bounds (seconds) of the send-latency buckets: `AT+CMGS` takes 2-4 s typically, tails of 30 s+.
const LATENCY_BUCKETS: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

const MODEM_STATES: [(ModemState, &str); 5] = [
    (ModemState::Initialising, "initialising"),
    (ModemState::Ready, "ready"),
    (ModemState::Degraded, "degraded"),
    (ModemState::Offline, "offline"),
    (ModemState::Paused, "paused"),
];

#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// What `/metrics` shows of one modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModemGauges {
    pub state: ModemState,
    /// `+CSQ` RSSI; 99 or `None` (unknown) is not exported.
    pub signal: Option<u8>,
    /// Parts its SIM sent today, as its daily cap counts them (`None`: the store could not say).
    pub sent_today: Option<u32>,
    pub daily_cap: Option<u32>,
    /// Messages in its message storage, and the storage's size (`None`: not reported).
    pub storage_used: Option<u32>,
    pub storage_total: Option<u32>,
    /// When it last answered a health poll (`None`: not yet).
    pub answered_at: Option<jiff::Timestamp>,
    /// Parts it sent and parts that failed on it, and messages received on it, since it was first seen
    /// (kept in the store across restarts; `None`: the store could not say).
    pub traffic: Option<ModemTraffic>,
}

/// A modem's lifetime counts, as `GET /v1/modems` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModemTraffic {
    pub parts_sent: u64,
    pub parts_failed: u64,
    pub received: u64,
}

impl ModemGauges {
    /// Whether it can send a one-part message now: ready (not paused, degraded or offline) and under
    /// its daily cap, as far as the store could count.
    fn available(&self) -> bool {
        self.state == ModemState::Ready
            && match (self.sent_today, self.daily_cap) {
                (Some(sent), Some(cap)) => sent < cap,
                _ => true,
            }
    }
}

/// What `/metrics` shows of one webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WebhookGauges {
    /// Events not yet acknowledged by it.
    pub pending: u64,
    /// How long the oldest of them has waited; 0 when none.
    pub oldest_seconds: f64,
}

#[derive(Debug, Default)]
struct Registry {
    /// (status, modem) → messages in that status now.
    messages: BTreeMap<(String, String), u64>,
    queue_depth: u64,
    send_latency: Histogram,
    /// By modem id; replaced whole at each refresh, so a modem a reload removed disappears.
    modems: BTreeMap<String, ModemGauges>,
    /// By webhook label; replaced whole at each refresh.
    webhooks: BTreeMap<String, WebhookGauges>,
    /// The TLS listener's count of failed handshakes; `None` when the API serves plain HTTP.
    tls_handshake_failures: Option<Arc<AtomicU64>>,
    /// The database file and its write-ahead log, in bytes.
    database_bytes: (u64, u64),
    /// Messages and webhook events retention deleted since start.
    retention_deleted: (u64, u64),
    /// Whether the store takes writes, and the write batches it refused since start.
    store: (bool, u64),
    /// Numbers suppressed in memory with no opt-out on record (see `OptOuts::unrecorded`).
    optouts_unrecorded: usize,
}

/// API answers by HTTP status (100-599) since start: counted on every request, so without a lock.
#[derive(Debug)]
struct StatusCounts(Box<[AtomicU64]>);

impl Default for StatusCounts {
    fn default() -> Self {
        StatusCounts((100..600).map(|_| AtomicU64::new(0)).collect())
    }
}

impl StatusCounts {
    fn slot(&self, status: u16) -> Option<&AtomicU64> {
        self.0.get(usize::from(status).checked_sub(100)?)
    }
}

/// The daemon's metrics. Shared as `Arc<Metrics>`; every method is cheap and never blocks for long.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
    responses: StatusCounts,
    /// Woken when a retention pass has counted what it deleted.
    retention_counted: tokio::sync::Notify,
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic elsewhere while holding the lock leaves plain numbers behind: still fine to use.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Messages by current status and modem (`""`: not on a modem yet), replacing the previous counts; the
    /// queue depth is what is queued, scheduled or sending.
    pub fn set_messages(&self, counts: impl IntoIterator<Item = ((String, String), u64)>) {
        let messages: BTreeMap<_, _> = counts.into_iter().collect();
        let mut registry = self.lock();
        registry.queue_depth = messages
            .iter()
            .filter(|((status, _), _)| {
                matches!(status.as_str(), "queued" | "scheduled" | "sending")
            })
            .map(|(_, n)| n)
            .sum();
        registry.messages = messages;
    }

    /// Time from a message being queued to its last part accepted by the network.
    pub fn observe_send_latency(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let mut registry = self.lock();
        let histogram = &mut registry.send_latency;
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(bucket) = histogram.buckets.get_mut(slot) {
            *bucket += 1;
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }

    /// Every configured modem's gauges, replacing the previous set.
    pub fn set_modems(&self, modems: impl IntoIterator<Item = (String, ModemGauges)>) {
        self.lock().modems = modems.into_iter().collect();
    }

    /// Every webhook's backlog, by label, replacing the previous set.
    pub fn set_webhooks(&self, webhooks: impl IntoIterator<Item = (String, WebhookGauges)>) {
        self.lock().webhooks = webhooks.into_iter().collect();
    }

    /// The database file's and its write-ahead log's sizes now.
    pub fn set_database_bytes(&self, database: u64, log: u64) {
        self.lock().database_bytes = (database, log);
    }

    /// Whether the store takes writes now (see `Store::check`), and the batches it refused since start.
    pub fn set_store(&self, writable: bool, refused_batches: u64) {
        self.lock().store = (writable, refused_batches);
    }

    /// Numbers suppressed in memory with no opt-out on record yet.
    pub fn set_optouts_unrecorded(&self, numbers: usize) {
        self.lock().optouts_unrecorded = numbers;
    }

    /// Counts an API answer.
    pub fn count_response(&self, status: u16) {
        if let Some(slot) = self.responses.slot(status) {
            slot.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Counts what a retention pass deleted.
    pub fn add_retention_deleted(&self, messages: u64, webhook_events: u64) {
        {
            let mut registry = self.lock();
            registry.retention_deleted.0 += messages;
            registry.retention_deleted.1 += webhook_events;
        }
        self.retention_counted.notify_waiters();
    }

    /// The messages and webhook events retention has deleted, once `until` holds for them: checked now
    /// and each time a pass counts more (for tests and tools, instead of reading `/metrics` in a loop).
    pub async fn retention_deleted_until(&self, until: impl Fn(u64, u64) -> bool) -> (u64, u64) {
        crate::notified::until(
            &self.retention_counted,
            || self.lock().retention_deleted,
            |&(messages, webhook_events)| until(messages, webhook_events),
        )
        .await
    }

    /// Export the TLS listener's count of failed handshakes (the API serves HTTPS).
    pub fn watch_tls_handshake_failures(&self, failures: Arc<AtomicU64>) {
        self.lock().tls_handshake_failures = Some(failures);
    }

    /// The exposition text for `GET /metrics`.
    pub fn render(&self) -> String {
        let registry = self.lock();
        let mut out = String::new();
        header(
            &mut out,
            "modemgate_messages",
            "gauge",
            "Messages in each status now, by modem.",
        );
        for ((status, modem), n) in &registry.messages {
            sample(
                &mut out,
                "modemgate_messages",
                &[("status", status), ("modem", modem)],
                *n as f64,
            );
        }
        header(
            &mut out,
            "modemgate_queue_depth",
            "gauge",
            "Messages queued, scheduled or sending.",
        );
        sample(
            &mut out,
            "modemgate_queue_depth",
            &[],
            registry.queue_depth as f64,
        );

        let (database, log) = registry.database_bytes;
        by_label(
            &mut out,
            ("modemgate_database_bytes", "gauge"),
            "The SQLite database file and its write-ahead log on disk.",
            "file",
            &[("database", database), ("wal", log)],
        );
        let (writable, refused) = registry.store;
        header(
            &mut out,
            "modemgate_store_writable",
            "gauge",
            "1 while the store takes writes; 0 while it refuses them (disk full, I/O error: a 503 for \
             every send), its file was deleted or replaced, or its disk has under 16 MiB free.",
        );
        sample(
            &mut out,
            "modemgate_store_writable",
            &[],
            f64::from(u8::from(writable)),
        );
        header(
            &mut out,
            "modemgate_store_refused_batches_total",
            "counter",
            "Write batches (each a commit of one or more requests) the store refused since start.",
        );
        sample(
            &mut out,
            "modemgate_store_refused_batches_total",
            &[],
            refused as f64,
        );
        header(
            &mut out,
            "modemgate_optouts_unrecorded",
            "gauge",
            "Numbers nothing is sent to although no opt-out is on record: a reply that reads as one, or an \
             opt-out, the store refused. Each is recorded when its reply is read again from the SIM or its \
             rules run again.",
        );
        sample(
            &mut out,
            "modemgate_optouts_unrecorded",
            &[],
            registry.optouts_unrecorded as f64,
        );
        let codes: Vec<(String, u64)> = (100u16..600)
            .filter_map(|code| {
                let n = self
                    .responses
                    .slot(code)?
                    .load(std::sync::atomic::Ordering::Relaxed);
                (n > 0).then(|| (code.to_string(), n))
            })
            .collect();
        let codes: Vec<(&str, u64)> = codes.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        by_label(
            &mut out,
            ("modemgate_http_responses_total", "counter"),
            "API answers by HTTP status since start (503: the store refused; 429: a key over its rate). \
             Connections the HTTP layer refuses before a request is read (408, 431) are not counted.",
            "code",
            &codes,
        );
        let (messages, events) = registry.retention_deleted;
        by_label(
            &mut out,
            ("modemgate_retention_deleted_total", "counter"),
            "Finished messages and webhook events deleted by [storage] retain_days since start.",
            "kind",
            &[("messages", messages), ("webhook_events", events)],
        );

        let name = "modemgate_send_latency_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Time from acceptance to the last part sent.",
        );
        let histogram = &registry.send_latency;
        let mut cumulative = 0;
        for (i, count) in histogram.buckets.iter().enumerate() {
            cumulative += count;
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or("+Inf".to_owned(), |b| b.to_string());
            sample(
                &mut out,
                &format!("{name}_bucket"),
                &[("le", &le)],
                cumulative as f64,
            );
        }
        sample(&mut out, &format!("{name}_sum"), &[], histogram.sum);
        sample(
            &mut out,
            &format!("{name}_count"),
            &[],
            histogram.count as f64,
        );

        header(
            &mut out,
            "modemgate_modem_state",
            "gauge",
            "1 for each modem's current state, 0 for the others.",
        );
        for (modem, gauges) in &registry.modems {
            for (state, label) in MODEM_STATES {
                let value = if state == gauges.state { 1.0 } else { 0.0 };
                sample(
                    &mut out,
                    "modemgate_modem_state",
                    &[("modem", modem), ("state", label)],
                    value,
                );
            }
        }
        header(
            &mut out,
            "modemgate_modems_available",
            "gauge",
            "Modems that can send now (ready and under their daily cap): 0 with a queue means nothing goes out.",
        );
        let available = registry.modems.values().filter(|g| g.available()).count();
        sample(
            &mut out,
            "modemgate_modems_available",
            &[],
            available as f64,
        );
        header(
            &mut out,
            "modemgate_modem_signal_rssi",
            "gauge",
            "Last +CSQ RSSI (0-31) per modem.",
        );
        let per_modem = |out: &mut String, name: &str, value: fn(&ModemGauges) -> Option<f64>| {
            for (modem, gauges) in &registry.modems {
                if let Some(value) = value(gauges) {
                    sample(out, name, &[("modem", modem)], value);
                }
            }
        };
        per_modem(&mut out, "modemgate_modem_signal_rssi", |g| {
            g.signal.filter(|rssi| *rssi != 99).map(f64::from)
        });
        header(
            &mut out,
            "modemgate_modem_sent_today",
            "gauge",
            "Parts each modem's SIM sent on today's cap day (what its daily cap counts).",
        );
        per_modem(&mut out, "modemgate_modem_sent_today", |g| {
            g.sent_today.map(f64::from)
        });
        header(
            &mut out,
            "modemgate_modem_daily_cap",
            "gauge",
            "Each capped modem's daily cap in parts.",
        );
        per_modem(&mut out, "modemgate_modem_daily_cap", |g| {
            g.daily_cap.map(f64::from)
        });
        header(
            &mut out,
            "modemgate_modem_storage_used",
            "gauge",
            "Messages in each modem's message storage; equal to its total, no SMS (no reply) can arrive.",
        );
        per_modem(&mut out, "modemgate_modem_storage_used", |g| {
            g.storage_used.map(f64::from)
        });
        header(
            &mut out,
            "modemgate_modem_storage_total",
            "gauge",
            "Each modem's message storage size.",
        );
        per_modem(&mut out, "modemgate_modem_storage_total", |g| {
            g.storage_total.map(f64::from)
        });
        header(
            &mut out,
            "modemgate_modem_answered_timestamp_seconds",
            "gauge",
            "When each modem last answered a health poll (Unix time; 0 if it has not since the daemon \
             started): a modem that hangs while idle still reads ready until its next poll times out, so \
             alert on time() minus this.",
        );
        // 0 rather than no sample for a modem dead since the start, so that alert fires for it too.
        per_modem(
            &mut out,
            "modemgate_modem_answered_timestamp_seconds",
            |g| {
                Some(
                    g.answered_at
                        .map_or(0.0, |at| at.as_millisecond() as f64 / 1000.0),
                )
            },
        );
        // Counters, so a failure rate can be alerted on: rate(...{outcome="failed"}[15m]) against sent.
        header(
            &mut out,
            "modemgate_modem_parts_total",
            "counter",
            "SMS parts each modem sent, and parts that failed on it (a +CMS ERROR or no prompt), since it was first seen.",
        );
        for (modem, gauges) in &registry.modems {
            if let Some(traffic) = gauges.traffic {
                for (outcome, n) in [
                    ("sent", traffic.parts_sent),
                    ("failed", traffic.parts_failed),
                ] {
                    let labels = [("modem", modem.as_str()), ("outcome", outcome)];
                    sample(&mut out, "modemgate_modem_parts_total", &labels, n as f64);
                }
            }
        }
        header(
            &mut out,
            "modemgate_modem_received_total",
            "counter",
            "Messages received on each modem (replies, a STOP included), since it was first seen.",
        );
        per_modem(&mut out, "modemgate_modem_received_total", |g| {
            g.traffic.map(|t| t.received as f64)
        });
        let per_webhook =
            |out: &mut String, name: &str, help: &str, value: fn(&WebhookGauges) -> f64| {
                header(out, name, "gauge", help);
                for (webhook, gauges) in &registry.webhooks {
                    sample(out, name, &[("webhook", webhook)], value(gauges));
                }
            };
        per_webhook(
            &mut out,
            "modemgate_webhook_backlog",
            "Webhook events waiting or retrying, by webhook (\"*\": queued before an upgrade, for every webhook).",
            |g| g.pending as f64,
        );
        if let Some(failures) = &registry.tls_handshake_failures {
            header(
                &mut out,
                "modemgate_tls_handshake_failures_total",
                "counter",
                "TLS handshakes that failed or timed out: clients that do not trust the certificate, or \
                 speak plain HTTP to the HTTPS port.",
            );
            let failures = failures.load(std::sync::atomic::Ordering::Relaxed);
            sample(
                &mut out,
                "modemgate_tls_handshake_failures_total",
                &[],
                failures as f64,
            );
        }
        per_webhook(
            &mut out,
            "modemgate_webhook_oldest_pending_seconds",
            "How long each webhook's oldest unacknowledged event has waited (0: none): alert on it.",
            |g| g.oldest_seconds,
        );
        out
    }
}

/// A metric with one sample per value of one label.
fn by_label(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) {
    header(out, name, kind, help);
    for (value, n) in values {
        sample(out, name, &[(label, value)], *n as f64);
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{label}=\"{escaped}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiter for retention's count wakes when a pass counts enough, not before, and is not lost to
    /// a count made before it waited.
    #[tokio::test]
    async fn a_wait_for_the_retention_count_wakes_when_a_pass_counts_enough() {
        let metrics = Arc::new(Metrics::default());
        metrics.add_retention_deleted(1, 0);
        assert_eq!(metrics.retention_deleted_until(|m, _| m >= 1).await, (1, 0));
        let waiter = tokio::spawn({
            let metrics = metrics.clone();
            async move {
                metrics
                    .retention_deleted_until(|m, e| m >= 3 && e >= 1)
                    .await
            }
        });
        metrics.add_retention_deleted(1, 0);
        metrics.add_retention_deleted(1, 1);
        assert_eq!(waiter.await.unwrap(), (3, 1));
    }

    #[test]
    fn database_size_store_health_and_retention_counts_are_rendered() {
        let metrics = Metrics::default();
        metrics.set_database_bytes(4096, 512);
        metrics.add_retention_deleted(3, 1);
        metrics.add_retention_deleted(2, 0);
        metrics.set_store(false, 7);
        metrics.set_optouts_unrecorded(2);
        metrics.count_response(202);
        metrics.count_response(503);
        metrics.count_response(202);
        let text = metrics.render();
        for line in [
            "modemgate_database_bytes{file=\"database\"} 4096",
            "modemgate_database_bytes{file=\"wal\"} 512",
            "modemgate_retention_deleted_total{kind=\"messages\"} 5",
            "modemgate_retention_deleted_total{kind=\"webhook_events\"} 1",
            "modemgate_store_writable 0",
            "modemgate_store_refused_batches_total 7",
            "modemgate_optouts_unrecorded 2",
            "modemgate_http_responses_total{code=\"202\"} 2",
            "modemgate_http_responses_total{code=\"503\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn renders_counters_gauges_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.set_messages([
            (("sent".to_owned(), "m1".to_owned()), 2),
            (("queued".to_owned(), String::new()), 5),
            (("sending".to_owned(), "m1".to_owned()), 2),
        ]);
        m.observe_send_latency(Duration::from_millis(1500));
        m.observe_send_latency(Duration::from_secs(3));
        m.observe_send_latency(Duration::from_secs(900));
        let gauges = |state, signal, sent_today, daily_cap| ModemGauges {
            state,
            signal,
            sent_today,
            daily_cap,
            storage_used: Some(30),
            storage_total: Some(30),
            // A modem with a reading has answered a poll.
            answered_at: signal.map(|_| jiff::Timestamp::from_second(1_795_000_000).unwrap()),
            traffic: signal.map(|_| ModemTraffic {
                parts_sent: 1_204,
                parts_failed: 7,
                received: 93,
            }),
        };
        m.set_modems([(
            "gone".to_owned(),
            gauges(ModemState::Ready, None, None, None),
        )]);
        m.set_modems([
            (
                "m1".to_owned(),
                gauges(ModemState::Ready, Some(21), Some(187), Some(200)),
            ),
            (
                "m2".to_owned(),
                gauges(ModemState::Offline, Some(99), Some(4), None),
            ),
        ]);
        m.set_webhooks([(
            "gone".to_owned(),
            WebhookGauges {
                pending: 9,
                oldest_seconds: 1.0,
            },
        )]);
        m.set_webhooks([
            (
                "cms".to_owned(),
                WebhookGauges {
                    pending: 3,
                    oldest_seconds: 42.5,
                },
            ),
            ("archive".to_owned(), WebhookGauges::default()),
        ]);
        let text = m.render();
        for line in [
            "# TYPE modemgate_messages gauge",
            "modemgate_messages{status=\"sent\",modem=\"m1\"} 2",
            "modemgate_messages{status=\"queued\",modem=\"\"} 5",
            "modemgate_queue_depth 7",
            "modemgate_send_latency_seconds_bucket{le=\"1\"} 0",
            "modemgate_send_latency_seconds_bucket{le=\"2\"} 1",
            "modemgate_send_latency_seconds_bucket{le=\"5\"} 2",
            "modemgate_send_latency_seconds_bucket{le=\"300\"} 2",
            "modemgate_send_latency_seconds_bucket{le=\"+Inf\"} 3",
            "modemgate_send_latency_seconds_sum 904.5",
            "modemgate_send_latency_seconds_count 3",
            "modemgate_modem_state{modem=\"m1\",state=\"ready\"} 1",
            "modemgate_modem_state{modem=\"m1\",state=\"offline\"} 0",
            "modemgate_modem_state{modem=\"m2\",state=\"offline\"} 1",
            "modemgate_modems_available 1",
            "modemgate_modem_signal_rssi{modem=\"m1\"} 21",
            "modemgate_modem_sent_today{modem=\"m1\"} 187",
            "modemgate_modem_sent_today{modem=\"m2\"} 4",
            "modemgate_modem_daily_cap{modem=\"m1\"} 200",
            "modemgate_modem_storage_used{modem=\"m1\"} 30",
            "modemgate_modem_storage_total{modem=\"m2\"} 30",
            "modemgate_modem_answered_timestamp_seconds{modem=\"m1\"} 1795000000",
            "# TYPE modemgate_modem_parts_total counter",
            "modemgate_modem_parts_total{modem=\"m1\",outcome=\"sent\"} 1204",
            "modemgate_modem_parts_total{modem=\"m1\",outcome=\"failed\"} 7",
            "modemgate_modem_received_total{modem=\"m1\"} 93",
            "modemgate_webhook_backlog{webhook=\"cms\"} 3",
            "modemgate_webhook_backlog{webhook=\"archive\"} 0",
            "modemgate_webhook_oldest_pending_seconds{webhook=\"cms\"} 42.5",
            "modemgate_webhook_oldest_pending_seconds{webhook=\"archive\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("webhook=\"gone\""),
            "a webhook no longer configured disappears"
        );
        assert!(
            !text.contains("modem_signal_rssi{modem=\"m2\"}"),
            "RSSI 99 means unknown"
        );
        assert!(!text.contains("daily_cap{modem=\"m2\"}"), "m2 has no cap");
        assert!(
            !text.contains("\"gone\""),
            "a modem no longer configured is gone"
        );
        assert!(
            !text.contains("tls_handshake"),
            "no TLS failures counted where the API serves plain HTTP"
        );
        let failures = Arc::new(AtomicU64::new(3));
        m.watch_tls_handshake_failures(failures);
        let text = m.render();
        assert!(
            text.lines()
                .any(|l| l == "modemgate_tls_handshake_failures_total 3"),
            "{text}"
        );
        // Every sample's metric has HELP and TYPE lines.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} has no TYPE"
            );
        }
    }

    #[test]
    fn a_modem_at_its_daily_cap_or_not_ready_is_not_available() {
        let m = Metrics::default();
        let gauges = |state, sent_today| ModemGauges {
            state,
            signal: None,
            sent_today,
            daily_cap: Some(200),
            storage_used: None,
            storage_total: None,
            answered_at: None,
            traffic: None,
        };
        m.set_modems([
            ("capped".to_owned(), gauges(ModemState::Ready, Some(200))),
            ("paused".to_owned(), gauges(ModemState::Paused, Some(0))),
            ("degraded".to_owned(), gauges(ModemState::Degraded, Some(0))),
        ]);
        let text = m.render();
        assert!(text.lines().any(|l| l == "modemgate_modems_available 0"));
        // Never answered since the start: 0, so `time() - this > 180` fires for it too.
        assert!(
            text.lines()
                .any(|l| l == "modemgate_modem_answered_timestamp_seconds{modem=\"capped\"} 0"),
            "{text}"
        );
        // A count the store could not give does not make a ready modem look closed.
        m.set_modems([("uncounted".to_owned(), gauges(ModemState::Ready, None))]);
        assert!(
            m.render()
                .lines()
                .any(|l| l == "modemgate_modems_available 1")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.set_messages([(("failed".to_owned(), "we\"ird\\modem\n".to_owned()), 1)]);
        assert!(
            m.render()
                .contains(r#"modemgate_messages{status="failed",modem="we\"ird\\modem\n"} 1"#),
            "{}",
            m.render()
        );
    }
}
