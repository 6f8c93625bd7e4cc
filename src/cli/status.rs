//! `modemgate status`: the modems and the queue at a glance, from the running daemon's API, so an operator
//! on the box sees what the CMS sees without writing curl commands.

use std::io::Write;

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

use super::client::{ApiArgs, ApiClient, ClientError};
use crate::config::Scope;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Page size when counting the queue, and the most messages counted per status: past this the number
/// matters less than the fact that the queue is long, and counting must stay quick.
const PAGE: usize = 1000;
const COUNT_CAP: usize = 10 * PAGE;

/// `GET /v1/modems` entry, as much of it as the table shows. Everything optional: an older or newer daemon
/// may leave fields out, and a status command must still print what it has.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Modem {
    id: String,
    state: String,
    signal: Option<u8>,
    operator: Option<String>,
    cs: Option<String>,
    ps: Option<String>,
    eps: Option<String>,
    counters: Counters,
    /// Parts its SIM sent today, and the cap they count against.
    sent_today: Option<u32>,
    daily_cap: Option<u32>,
    /// When it last answered a health poll: how fresh `state` is.
    answered_at: Option<jiff::Timestamp>,
    last_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Counters {
    parts_sent: i64,
    parts_failed: i64,
    received: i64,
}

pub async fn run(args: StatusArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let client = ApiClient::resolve(&args.api, Scope::Read)?;
    let modems = client.get("/v1/modems").await?;
    let modems: Vec<Modem> = match modems.get("modems") {
        Some(list) => serde_json::from_value(list.clone())
            .context("GET /v1/modems: unexpected shape of `modems`")?,
        None => anyhow::bail!("GET /v1/modems: no `modems` in the answer"),
    };
    let since = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24)).to_string();
    let mut queue = Vec::new();
    for (status, since) in [
        ("queued", None),
        ("scheduled", None),
        ("sending", None),
        ("failed", Some(since.as_str())),
        ("unknown", Some(since.as_str())),
    ] {
        queue.push((status, count(&client, status, since).await?));
    }
    // Whether sends are taken now: a full disk or a database moved away shows nowhere else.
    let store = match client.get("/readyz").await {
        Ok(_) => "store: ready".to_owned(),
        Err(ClientError::Api { message, .. }) => format!("store: NOT READY: {message}"),
        Err(error) => return Err(error.into()),
    };
    writeln!(out, "modemgate at {}", client.base())?;
    out.write_all(modem_table(&modems, jiff::Timestamp::now()).as_bytes())?;
    writeln!(out, "{}", queue_line(&queue))?;
    writeln!(out, "{store}")?;
    Ok(())
}

/// Messages in `status` (created at or after `since`), counted page by page up to [`COUNT_CAP`].
async fn count(
    client: &ApiClient,
    status: &str,
    since: Option<&str>,
) -> Result<Count, ClientError> {
    let mut total = 0;
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/messages?status={status}&limit={PAGE}");
        if let Some(since) = since {
            path.push_str(&format!("&since={}", query_escape(since)));
        }
        if let Some(cursor) = &after {
            path.push_str(&format!("&after={}", query_escape(cursor)));
        }
        let page = client.get(&path).await?;
        total += page
            .get("messages")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        after = page.get("next").and_then(Value::as_str).map(str::to_owned);
        match after {
            None => return Ok(Count::Exact(total)),
            Some(_) if total >= COUNT_CAP => return Ok(Count::AtLeast(total)),
            Some(_) => {}
        }
    }
}

fn query_escape(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Exact(usize),
    /// Counting stopped at the cap.
    AtLeast(usize),
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::Exact(n) => write!(f, "{n}"),
            Count::AtLeast(n) => write!(f, "{n}+"),
        }
    }
}

fn queue_line(counts: &[(&str, Count)]) -> String {
    let (now, day) = counts.split_at(counts.len().min(3));
    let join = |items: &[(&str, Count)]| {
        items
            .iter()
            .map(|(status, n)| format!("{n} {status}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("queue: {}; last 24 h: {}", join(now), join(day))
}

const HEADERS: [&str; 11] = [
    "MODEM",
    "STATE",
    "ANSWERED",
    "SIGNAL",
    "OPERATOR",
    "CS/PS/EPS",
    "TODAY/CAP",
    "SENT",
    "FAILED",
    "RECEIVED",
    "LAST ERROR",
];

/// The modems as aligned columns, with how long ago each answered as of `now`; the last column is left
/// ragged (errors are long).
fn modem_table(modems: &[Modem], now: jiff::Timestamp) -> String {
    let dash = || "-".to_owned();
    let rows: Vec<[String; 11]> = modems
        .iter()
        .map(|m| {
            [
                m.id.clone(),
                m.state.clone(),
                m.answered_at.map_or_else(dash, |at| ago(now, at)),
                signal(m.signal),
                m.operator.clone().unwrap_or_else(dash),
                [&m.cs, &m.ps, &m.eps]
                    .map(|r| registration(r.as_deref()))
                    .join("/"),
                today(m.sent_today, m.daily_cap),
                m.counters.parts_sent.to_string(),
                m.counters.parts_failed.to_string(),
                m.counters.received.to_string(),
                m.last_error
                    .as_deref()
                    .map(|e| e.replace(['\r', '\n'], " "))
                    .unwrap_or_else(dash),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    let headers = HEADERS.map(str::to_owned);
    for row in std::iter::once(&headers).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    if rows.is_empty() {
        table.push_str("(no modems configured)\n");
    }
    table
}

/// `+CSQ` RSSI as bars and dBm (27.007: 0 is -113 dBm or less, each step 2 dB, 31 is -51 dBm or more).
fn signal(rssi: Option<u8>) -> String {
    match rssi {
        Some(rssi @ 0..=31) => {
            // Thresholds as ModemManager and most vendor tools draw them.
            let bars = match rssi {
                0..=1 => 0,
                2..=9 => 1,
                10..=14 => 2,
                15..=19 => 3,
                _ => 4,
            };
            let dbm = -113 + 2 * i32::from(rssi);
            format!("{}{} {dbm} dBm", "#".repeat(bars), ".".repeat(4 - bars))
        }
        _ => "-".into(),
    }
}

/// How long before `now` the modem answered, coarsely (`12 s ago`, `3 min ago`, `2 h ago`): a modem that
/// reads `ready` but answered minutes ago has likely hung.
fn ago(now: jiff::Timestamp, at: jiff::Timestamp) -> String {
    let seconds = now.duration_since(at).as_secs().max(0);
    match seconds {
        0..120 => format!("{seconds} s ago"),
        120..7200 => format!("{} min ago", seconds / 60),
        _ => format!("{} h ago", seconds / 3600),
    }
}

/// Parts sent today against the daily cap: `187/200`, `187` with no cap, `-` from a daemon that does not
/// say.
fn today(sent: Option<u32>, cap: Option<u32>) -> String {
    match (sent, cap) {
        (Some(sent), Some(cap)) => format!("{sent}/{cap}"),
        (Some(sent), None) => sent.to_string(),
        (None, _) => "-".into(),
    }
}

/// Registration in a few letters, so three of them fit one column.
fn registration(value: Option<&str>) -> &str {
    match value {
        None => "-",
        Some("home") => "home",
        Some("roaming") => "roam",
        Some("not_registered") => "no",
        Some("searching") => "search",
        Some("denied") => "denied",
        Some("registered_other") => "other",
        Some(_) => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_is_bars_and_dbm() {
        assert_eq!(signal(Some(20)), "#### -73 dBm");
        assert_eq!(signal(Some(12)), "##.. -89 dBm");
        assert_eq!(signal(Some(0)), ".... -113 dBm");
        assert_eq!(signal(Some(99)), "-");
        assert_eq!(signal(None), "-");
    }

    #[test]
    fn table_columns_line_up() {
        let modems = [
            Modem {
                id: "m1".into(),
                state: "ready".into(),
                signal: Some(20),
                operator: Some("SIMNET".into()),
                cs: Some("home".into()),
                ps: Some("roaming".into()),
                eps: None,
                counters: Counters {
                    parts_sent: 12,
                    parts_failed: 1,
                    received: 3,
                },
                sent_today: Some(7),
                daily_cap: Some(200),
                answered_at: Some("2026-11-23T12:00:00Z".parse().unwrap()),
                last_error: None,
            },
            Modem {
                id: "long-modem-id".into(),
                state: "offline".into(),
                last_error: Some("port gone\nreopening".into()),
                ..Modem::default()
            },
        ];
        let now: jiff::Timestamp = "2026-11-23T12:00:42Z".parse().unwrap();
        let table = modem_table(&modems, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let state_col = lines[0].find("STATE").unwrap();
        assert_eq!(lines[1].find("ready"), Some(state_col));
        assert_eq!(lines[2].find("offline"), Some(state_col));
        assert!(lines[1].contains("home/roam/-"), "{table}");
        let today_col = lines[0].find("TODAY/CAP").unwrap();
        assert_eq!(lines[1].find("7/200"), Some(today_col), "{table}");
        assert_eq!(today(Some(7), None), "7");
        assert_eq!(today(None, Some(200)), "-");
        assert!(lines[2].ends_with("port gone reopening"), "{table}");
        let answered_col = lines[0].find("ANSWERED").unwrap();
        assert_eq!(lines[1].find("42 s ago"), Some(answered_col), "{table}");
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(ago(now, at("2026-11-23T11:55:00Z")), "5 min ago");
        assert_eq!(ago(now, at("2026-11-23T09:00:00Z")), "3 h ago");
    }

    #[test]
    fn queue_line_separates_the_last_day() {
        let line = queue_line(&[
            ("queued", Count::Exact(3)),
            ("scheduled", Count::Exact(0)),
            ("sending", Count::Exact(1)),
            ("failed", Count::AtLeast(10000)),
            ("unknown", Count::Exact(0)),
        ]);
        assert_eq!(
            line,
            "queue: 3 queued, 0 scheduled, 1 sending; last 24 h: 10000+ failed, 0 unknown"
        );
    }
}
