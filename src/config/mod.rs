//! The TOML configuration: types, defaults, and validation with line-accurate diagnostics.
//!
//! Every table denies unknown keys, because a misspelt key that is silently ignored (`quiet_hour.enabled`)
//! is how a collections gateway ends up texting at 3 a.m. Values are parsed into typed forms
//! ([`values`]) while deserializing, so a bad value is reported at its own line; checks that span several
//! values (duplicate modems, backoff ordering) run afterwards in `diagnose`. The daemon ([`Config::load`])
//! and `modemgate check-config` ([`check::check_config_cli`]) share that one path, so what check-config
//! accepts is exactly what the daemon will run with.

pub mod check;
mod diagnose;
pub mod values;

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use diagnose::{ConfigErrors, Diagnostic, Report, Severity};
pub use values::{
    Credential, Device, LogFilter, ModemName, Pin, Rate, Region, RetainDays, Scope, Secret,
    TimeZoneName, Token, TokenSha256, ValueError, WalLimit, WebhookName, parse_duration,
};

use crate::msisdn::ServiceNumber;
use crate::rules::{
    CapsConfig, KeywordsConfig, OptOutConfig, QuietHoursConfig, ReplyRule, RulesConfig,
};

/// Where `serve` and `check-config` look when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/modemgate/modemgate.toml";

/// The whole configuration file. Every section may be omitted and takes its defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: the HTTP listener.
    pub server: Server,
    /// `[storage]`: the SQLite database.
    pub storage: Storage,
    /// `[[api_keys]]`: who may call the API.
    pub api_keys: Vec<ApiKey>,
    /// `[[modems]]`: the modems, in the order the dispatcher prefers them.
    pub modems: Vec<Modem>,
    /// `[dispatch]`: retries and global pacing.
    pub dispatch: Dispatch,
    /// `[quiet_hours]`: recipient-local sending windows.
    pub quiet_hours: QuietHoursConfig,
    /// `[caps]`: contact caps per recipient.
    pub caps: CapsConfig,
    /// `[keywords]`: reply words on top of the built-in opt-out, opt-in and help words.
    pub keywords: KeywordsConfig,
    /// `[optout]`: confirmations, the HELP reply, the opt-out notice.
    pub optout: OptOutConfig,
    /// `[[reply_rules]]`: reply menus answered automatically.
    pub reply_rules: Vec<ReplyRule>,
    /// `[[webhooks]]`: where events are POSTed.
    pub webhooks: Vec<Webhook>,
    /// `[logging]`.
    pub logging: Logging,
    /// `[pdu]`: encoding choices.
    pub pdu: PduOptions,
}

impl Config {
    /// Read and validate a config file, as the daemon does at start and on SIGHUP. Warnings are dropped:
    /// use [`Report::from_file`] to see them.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Report::from_file(path).into_result()
    }

    /// The collections rules' part of the configuration.
    pub fn rules(&self) -> RulesConfig {
        RulesConfig {
            keywords: self.keywords.clone(),
            quiet_hours: self.quiet_hours.clone(),
            caps: self.caps.clone(),
            optout: self.optout.clone(),
            reply_rules: self.reply_rules.clone(),
        }
    }

    /// Validate config text that is not in a file (tests, generated configs); messages name it `<string>`.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Report::from_text(Path::new("<string>"), text).into_result()
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "RawServer")]
pub struct Server {
    /// Address and port of the HTTP API. Loopback by default: the CMS usually runs on the same LAN host
    /// or reaches us through a reverse proxy that terminates TLS.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes: a message is a few KiB, a batch of 1,000 about 300 KB.
    pub body_limit: NonZeroUsize,
    /// Region whose national format applies to numbers sent without `+` (CMS exports often drop it).
    pub default_region: Region,
    /// `tls_cert` and `tls_key`: serve HTTPS instead of HTTP, for a CMS on another host.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit: const { NonZeroUsize::new(1024 * 1024).unwrap() },
            default_region: Region::default(),
            tls: None,
        }
    }
}

/// `[server]` as written: the TLS files are two keys, one pair.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: SocketAddr,
    body_limit: NonZeroUsize,
    default_region: Region,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl Default for RawServer {
    fn default() -> Self {
        let server = Server::default();
        RawServer {
            listen: server.listen,
            body_limit: server.body_limit,
            default_region: server.default_region,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl TryFrom<RawServer> for Server {
    type Error = ValueError;

    fn try_from(raw: RawServer) -> Result<Self, ValueError> {
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ValueError::new(
                    "`tls_cert` needs `tls_key`, the file with its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(ValueError::new(
                    "`tls_key` needs `tls_cert`, the file with its certificate",
                ));
            }
        };
        Ok(Server {
            listen: raw.listen,
            body_limit: raw.body_limit,
            default_region: raw.default_region,
            tls,
        })
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// The SQLite database file; relative paths are relative to the working directory.
    pub path: PathBuf,
    /// Whether messages left `unknown` by a crash mid-send are queued again at start. Off by default:
    /// the modem may already have sent them, and a duplicate collection text is a complaint.
    pub resend_unknown_on_start: bool,
    /// How large the write-ahead log may grow under a bulk load (default 256 MB): the disk space to leave.
    pub wal_limit_mb: WalLimit,
    /// Finished messages older than this are deleted (see `store::retention`); absent keeps everything.
    pub retain_days: Option<RetainDays>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            path: PathBuf::from("/var/lib/modemgate/modemgate.db"),
            resend_unknown_on_start: false,
            wal_limit_mb: WalLimit::default(),
            retain_days: None,
        }
    }
}

/// One `[[api_keys]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawApiKey")]
pub struct ApiKey {
    /// Who this key belongs to; recorded in the audit trail of every message it submits.
    pub name: String,
    /// How the bearer token is checked.
    pub credential: Credential,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// Per-key request limit (answered with 429 and Retry-After); unlimited when absent.
    pub rate: Option<Rate>,
}

/// `[[api_keys]]` as written: `token` and `token_sha256` are both optional here and folded into one
/// [`Credential`] by `TryFrom`, so an [`ApiKey`] with both or neither cannot exist.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    name: String,
    token: Option<Token>,
    token_sha256: Option<TokenSha256>,
    scopes: Vec<Scope>,
    rate: Option<Rate>,
}

impl TryFrom<RawApiKey> for ApiKey {
    type Error = ValueError;

    fn try_from(raw: RawApiKey) -> Result<Self, ValueError> {
        if raw.name.trim().is_empty() {
            return Err(ValueError::new("api key `name` is empty"));
        }
        let credential = match (raw.token, raw.token_sha256) {
            (Some(token), None) => Credential::Token(token),
            (None, Some(digest)) => Credential::Sha256(digest),
            _ => {
                return Err(ValueError::new(format!(
                    "api key `{}`: set exactly one of `token` or `token_sha256`",
                    raw.name
                )));
            }
        };
        if raw.scopes.is_empty() {
            return Err(ValueError::new(format!(
                "api key `{}`: `scopes` is empty",
                raw.name
            )));
        }
        Ok(ApiKey {
            name: raw.name,
            credential,
            scopes: raw.scopes,
            rate: raw.rate,
        })
    }
}

/// One `[[modems]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modem {
    /// Stable id used in the API, the store and metrics.
    pub id: ModemName,
    /// The AT port, or a simulator profile.
    pub device: Device,
    /// Serial speed; USB modems ignore it, UART modules (SIM800) need the right one.
    #[serde(default = "default_baud", deserialize_with = "baud")]
    pub baud: u32,
    /// Sustained sending rate. Operators flag SIMs that send faster than a person could.
    #[serde(default = "default_modem_rate")]
    pub rate: Rate,
    /// How many sends may go back to back before pacing applies; 1 (even spacing) when absent.
    #[serde(default)]
    pub burst: Option<NonZeroU32>,
    /// Most messages this modem sends per local day (prepaid SIM plans cap them); unlimited when absent.
    #[serde(default)]
    pub daily_cap: Option<NonZeroU32>,
    /// SIM PIN, entered if the SIM asks for one.
    #[serde(default)]
    pub pin: Option<Pin>,
    /// SMS centre number, when the SIM's is missing or wrong; the SIM's is used when absent.
    #[serde(default, deserialize_with = "smsc")]
    pub smsc: Option<ServiceNumber>,
    /// `false`: the port is not opened at all (modem removed, SIM pulled).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `true`: the port is opened and inbound traffic is read, but nothing is sent (e.g. a SIM under review).
    #[serde(default)]
    pub paused: bool,
}

const STANDARD_BAUDS: [u32; 8] = [
    9600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 921_600,
];

fn default_baud() -> u32 {
    115_200
}

fn default_modem_rate() -> Rate {
    Rate {
        count: const { NonZeroU32::new(6).unwrap() },
        per: Duration::from_secs(60),
    }
}

fn yes() -> bool {
    true
}

fn baud<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let baud = u32::deserialize(deserializer)?;
    if STANDARD_BAUDS.contains(&baud) {
        Ok(baud)
    } else {
        Err(serde::de::Error::custom(format!(
            "unsupported baud rate {baud}: expected one of {STANDARD_BAUDS:?}"
        )))
    }
}

/// The SMSC must be written in international form: it is dialled as-is, whatever the default region. It need
/// not be in a subscriber range (many operators' centres are not).
fn smsc<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ServiceNumber>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if !text.trim_start().starts_with('+') {
        return Err(serde::de::Error::custom(format!(
            "invalid smsc `{text}`: write it in international form, +CC..."
        )));
    }
    ServiceNumber::parse(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid smsc `{text}`: {e}")))
}

/// `[dispatch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dispatch {
    /// Sends of one message before it is `failed` (transient errors only; permanent ones fail at once).
    pub max_attempts: NonZeroU32,
    /// Wait before the first retry; doubled for each further attempt.
    #[serde(deserialize_with = "values::duration")]
    pub retry_backoff: Duration,
    /// Ceiling on the doubled wait.
    #[serde(deserialize_with = "values::duration")]
    pub retry_backoff_max: Duration,
    /// Ceiling on the whole box's sending rate, over all modems; none when absent.
    pub global_rate: Option<Rate>,
    /// Send to a recipient from the modem that last texted them, so replies thread on their phone.
    pub sticky: bool,
}

impl Default for Dispatch {
    fn default() -> Self {
        Dispatch {
            max_attempts: const { NonZeroU32::new(5).unwrap() },
            retry_backoff: Duration::from_secs(30),
            retry_backoff_max: Duration::from_secs(30 * 60),
            global_rate: None,
            sticky: true,
        }
    }
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// What logs and `/metrics` call it; its scheme and host when absent (the path and query are never
    /// shown: receivers often put a token there). Recorded attempts keep the exact URL that was called.
    #[serde(default)]
    pub name: Option<WebhookName>,
    /// Where events are POSTed (http or https).
    #[serde(deserialize_with = "webhook_url")]
    pub url: hyper::Uri,
    /// HMAC-SHA256 key for the signature header, so the CMS can tell our calls from forgeries.
    pub secret: Secret,
    /// Which events to send (`message.sent`, `message.delivered`, ..., `optout.created`); every event when
    /// empty or absent.
    #[serde(default)]
    pub events: Vec<crate::webhook::EventKind>,
}

fn webhook_url<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<hyper::Uri, D::Error> {
    let text = String::deserialize(deserializer)?;
    let bad = || {
        serde::de::Error::custom(format!(
            "invalid webhook url `{text}`: expected http://HOST/... or https://HOST/..."
        ))
    };
    let uri: hyper::Uri = text.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err(bad()),
    }
}

/// `[logging]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// Tracing filter; `RUST_LOG`, when set, wins.
    pub level: LogFilter,
}

/// `[pdu]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PduOptions {
    /// Replace characters outside GSM 7-bit with look-alikes (curly quotes, dashes) instead of switching
    /// the whole message to UCS-2, which would cut a part from 160 to 70 characters.
    pub smart_encoding: bool,
    /// Ask for delivery reports (TP-SRR), so `delivered` can be known.
    pub status_reports: bool,
}

impl Default for PduOptions {
    fn default() -> Self {
        PduOptions {
            smart_encoding: true,
            status_reports: true,
        }
    }
}
