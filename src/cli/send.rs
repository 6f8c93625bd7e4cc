//! `modemgate send`: a test message from the shell through the same API the CMS uses, optionally followed
//! to its final status, so an operator can prove the whole path (API, queue, modem, network) in one command.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::{ApiArgs, ApiClient};
use crate::config::Scope;
use crate::store::MessageState;

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Recipient: +E164, or national digits in the config's default region.
    #[arg(long)]
    pub to: String,
    /// Message text (it may start with `-`: `--text "-5 degrees"`).
    #[arg(long, allow_hyphen_values = true)]
    pub text: String,
    /// Follow the message until it is sent, delivered, failed or unknown; exit 1 unless sent or delivered.
    /// `sent` means the network took it, not that the phone got it: see --delivered.
    #[arg(long)]
    pub wait: bool,
    /// Follow it on to its delivery report; exit 0 only when it was delivered (implies --wait).
    #[arg(long)]
    pub delivered: bool,
    /// Give up waiting after this many seconds (a send normally takes a few; Quectel allows 120 per part).
    #[arg(long, default_value_t = 180)]
    pub wait_timeout: u64,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Between two looks at a message being waited for: quick enough to feel live, slow enough to cost the
/// daemon nothing.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

pub async fn run(args: SendArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let client = ApiClient::resolve(&args.api, Scope::Send)?;
    let accepted = client
        .post("/v1/messages", &json!({"to": args.to, "text": args.text}))
        .await?;
    let id = text(&accepted, "id");
    let mut status = text(&accepted, "status");
    for field in ["id", "status", "to", "parts", "encoding"] {
        writeln!(out, "{field:<9} {}", text(&accepted, field))?;
    }
    if !args.wait && !args.delivered {
        return Ok(());
    }

    let path = format!("/v1/messages/{id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_timeout);
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    loop {
        ticks.tick().await;
        let message = client.get(&path).await?;
        let now = text(&message, "status");
        if now != status {
            status = now;
            writeln!(out, "{:<9} {status}", "status")?;
        }
        match MessageState::parse(&status) {
            Some(state) if ends_wait(state, args.delivered) => {
                return finished(&message, state, args.delivered, out);
            }
            Some(MessageState::Sent) if tokio::time::Instant::now() >= deadline => anyhow::bail!(
                "message {id} was sent, but no delivery report came within {}s (the network may \
                 send none, or [pdu] status_reports is off)",
                args.wait_timeout
            ),
            _ if tokio::time::Instant::now() >= deadline => {
                // A queued message no modem can take says why (every modem offline, paused, capped).
                let why = match message.get("error").and_then(Value::as_str) {
                    Some(error) => format!(": {error}"),
                    None => String::new(),
                };
                anyhow::bail!(
                    "message {id} is still {status} after {}s{why}",
                    args.wait_timeout
                )
            }
            _ => {}
        }
    }
}

/// Where following a message ends: at `sent` unless its delivery report is waited for.
fn ends_wait(state: MessageState, delivered: bool) -> bool {
    match state {
        MessageState::Sent => !delivered,
        state => state.is_final(),
    }
}

/// Print where it went; a message that did not go out (or, waiting for the report, was not delivered) is
/// an error (exit 1), so scripts can rely on it.
fn finished(
    message: &Value,
    state: MessageState,
    delivered: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let modem = message.get("modem").and_then(Value::as_str);
    if let Some(modem) = modem {
        writeln!(out, "{:<9} {modem}", "modem")?;
    }
    match state {
        MessageState::Delivered => Ok(()),
        MessageState::Sent if !delivered => {
            writeln!(
                out,
                "{:<9} not waited for (the network took it; --delivered waits for the report)",
                "delivery"
            )?;
            Ok(())
        }
        _ => {
            let error = message
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason recorded");
            anyhow::bail!(
                "message {} {}: {error}",
                text(message, "id"),
                state.as_str()
            )
        }
    }
}

/// A field as printed: strings bare, numbers as digits, missing as `-`.
fn text(value: &Value, field: &str) -> String {
    match value.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_ends_at_sent_only_when_the_report_is_not_waited_for() {
        assert!(ends_wait(MessageState::Sent, false));
        assert!(!ends_wait(MessageState::Sent, true));
        for delivered in [false, true] {
            assert!(ends_wait(MessageState::Delivered, delivered));
            assert!(ends_wait(MessageState::Failed, delivered));
            assert!(!ends_wait(MessageState::Sending, delivered));
        }
    }
}
