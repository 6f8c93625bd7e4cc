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
    /// Message text.
    #[arg(long)]
    pub text: String,
    /// Follow the message until it is sent, delivered, failed or unknown; exit 1 unless sent or delivered.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (a send normally takes a few; Quectel allows 120 per part).
    #[arg(long, default_value_t = 180, requires = "wait")]
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
    if !args.wait {
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
            Some(state) if state.is_final() => return finished(&message, state, out),
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

/// Print where it went; a message that did not go out is an error (exit 1), so scripts can rely on it.
fn finished(message: &Value, state: MessageState, out: &mut impl Write) -> anyhow::Result<()> {
    let modem = message.get("modem").and_then(Value::as_str);
    if let Some(modem) = modem {
        writeln!(out, "{:<9} {modem}", "modem")?;
    }
    match state {
        MessageState::Sent | MessageState::Delivered => Ok(()),
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
