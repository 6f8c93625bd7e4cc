//! modemgate: an on-premises SMS gateway for USB GSM/LTE modems.
//!
//! # Layout
//! - [`pdu`]: 3GPP TS 23.040/23.038 SMS PDU codec (GSM 7-bit, UCS-2, UDH, SUBMIT/DELIVER/STATUS-REPORT).
//! - [`at`]: AT protocol framing, response and URC parsing, command builders.
//! - [`config`]: the TOML configuration, its typed values, and `check-config`'s line-accurate diagnostics.
//! - [`msisdn`]: phone numbers (E.164 recipients, inbound senders) and their masking for logs.
//! - [`logging`]: the tracing subscriber and what may be logged.
//! - [`modem`]: one worker per modem over tokio-serial, and its contract with the daemon ([`modem::job`]).
//! - [`store`]: SQLite store: durable accept with group commit, message life cycle, events, inbound, caps.
//! - [`dispatch`]: which pending message goes to which modem, when: limits, caps, stickiness, retries.
//! - [`sim`]: a modem simulator on pseudo-terminals (tests, demos, `modemgate simulate`).
//! - [`api`]: the HTTP API (axum): routes, auth, errors, metrics, OpenAPI.
//! - [`webhook`]: signed event delivery to the CMS from a durable outbox.
//! - [`rules`]: collections-safety rules: opt-outs, quiet hours, contact caps, reply menus; the dispatcher's
//!   gate and the inbound rules.
//! - [`outbound`]: composing and submitting outbound messages (the API's sends and the rules' answers).
//! - [`daemon`]: `modemgate serve`: everything above wired together, signals and systemd.
//! - [`cli`]: the subcommands of the `modemgate` binary, one library function each.
//! - [`tls`]: TLS for the HTTP API (`[server] tls_cert`), and the https clients of the CLI and webhooks.
//! - [`allocator`]: mimalloc, for every binary built on this crate, and its settings.
//! - [`wire_time`]: how times are written in API answers, exports and webhooks.

pub mod allocator;
pub mod api;
pub mod at;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod logging;
pub mod modem;
pub mod msisdn;
mod notified;
pub mod outbound;
pub mod pdu;
pub mod rules;
pub mod sim;
pub mod store;
pub mod tls;
pub mod webhook;
pub mod wire_time;
