//! Typed configuration values and their parsers.
//!
//! Each value type parses from the string an operator writes, and deserializes through that parser, so a bad
//! value fails inside serde with the value's span attached and check-config can point at its line.

use crate::sim::Profile;
use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::msisdn::Region;

/// Why a configuration value was refused; the message names the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

impl ValueError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Deserialize any `FromStr` type from a TOML string, turning its error into a serde error.
fn from_toml_str<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = ValueError>,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(D::Error::custom)
}

/// Implements `Deserialize` through `FromStr` for the value types below.
macro_rules! deserialize_via_from_str {
    ($($ty:ty),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                from_toml_str(deserializer)
            }
        }
    )*};
}

deserialize_via_from_str!(
    Rate,
    Device,
    TimeZoneName,
    Token,
    TokenSha256,
    Pin,
    Secret,
    ModemName,
    WebhookName,
    LogFilter
);

/// Split `"30s"` into `(30, "s")`; the number must be a plain decimal integer.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    Some((number.parse().ok()?, unit.trim()))
}

/// Parse a duration written as an integer and one unit: `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`.
///
/// One unit only: compound forms like `1h30m` invite misreading in a file an auditor reads.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    let bad = || {
        ValueError::new(format!(
            "invalid duration `{text}`: expected an integer and a unit (ms, s, m, h, d), e.g. \"30s\" or \"5m\""
        ))
    };
    let (number, unit) = split_number(text.trim()).ok_or_else(bad)?;
    let unit_secs = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    number
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// `deserialize_with` adapter for [`parse_duration`].
pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(D::Error::custom)
}

/// A rate limit: `count` events per `per`, written `"6/min"`, `"200/s"`, `"100/h"`, `"1000/day"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many events the window allows; never zero (a zero rate is `enabled = false`/`paused = true`).
    pub count: NonZeroU32,
    /// The window the count applies to.
    pub per: Duration,
}

impl Rate {
    /// The steady spacing between events: `per / count`, never zero (the parser refuses such rates).
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }

    /// The governor quota for this rate: one cell every [`Rate::interval`], bursting up to `burst`
    /// (default 1: evenly spaced, which is what carriers' spam filters like).
    pub fn quota(&self, burst: Option<NonZeroU32>) -> governor::Quota {
        let burst = burst.unwrap_or(NonZeroU32::MIN);
        governor::Quota::with_period(self.interval())
            .unwrap_or_else(|| governor::Quota::per_second(self.count))
            .allow_burst(burst)
    }
}

impl FromStr for Rate {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let bad = || {
            ValueError::new(format!(
                "invalid rate `{text}`: expected COUNT/UNIT with UNIT s, min, h or day, e.g. \"6/min\""
            ))
        };
        let (count, unit) = text.split_once('/').ok_or_else(bad)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        let rate = Rate { count, per };
        if rate.interval().is_zero() {
            return Err(ValueError::new(format!(
                "rate `{text}` is too high to pace"
            )));
        }
        Ok(rate)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => "day",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Where a modem is: a serial device, or a simulator the daemon starts itself on a pseudo-terminal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Device {
    /// An absolute path to a tty: `/dev/modemgate/...` from our udev rules, `/dev/ttyUSB2`, or a pty.
    Serial(PathBuf),
    /// `sim:PROFILE`: an in-process simulated modem (demos, integrators' test rigs).
    Sim(Profile),
}

impl FromStr for Device {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        if let Some(profile) = text.strip_prefix("sim:") {
            return Profile::ALL
                .into_iter()
                .find(|p| p.name() == profile)
                .map(Device::Sim)
                .ok_or_else(|| {
                    let names: Vec<_> = Profile::ALL.iter().map(|p| p.name()).collect();
                    ValueError::new(format!(
                        "unknown simulator profile `{profile}`: expected sim:{}",
                        names.join(", sim:")
                    ))
                });
        }
        if text.starts_with('/') {
            Ok(Device::Serial(PathBuf::from(text)))
        } else {
            Err(ValueError::new(format!(
                "invalid device `{text}`: expected an absolute serial device path or sim:PROFILE"
            )))
        }
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(D::Error::custom)
    }
}

/// An IANA time zone, checked against jiff's bundled database when the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZoneName {
    /// The name as written (`America/New_York`), for messages and the API.
    pub name: String,
    /// The resolved zone with its DST rules.
    pub zone: jiff::tz::TimeZone,
}

impl FromStr for TimeZoneName {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        jiff::tz::TimeZone::get(text)
            .map(|zone| TimeZoneName {
                name: text.to_owned(),
                zone,
            })
            .map_err(|_| {
                ValueError::new(format!(
                    "unknown time zone `{text}`: expected an IANA name such as \"America/New_York\""
                ))
            })
    }
}

/// A plain-text API token (non-empty). Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl FromStr for Token {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        if text.trim().is_empty() {
            Err(ValueError::new("token is empty"))
        } else {
            Ok(Token(text.to_owned()))
        }
    }
}

/// The SHA-256 of an API token, written as 64 hex digits, so the config file holds no usable secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSha256(pub [u8; 32]);

impl FromStr for TokenSha256 {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(text, &mut digest).map_err(|_| {
            ValueError::new(format!(
                "invalid token_sha256: expected 64 hex digits (sha256sum of the token), got {} characters",
                text.chars().count()
            ))
        })?;
        Ok(TokenSha256(digest))
    }
}

/// How an API key's bearer token is checked. Exactly one form per key, so both-or-neither cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The token itself is in the config file (demos, quick setups).
    Token(Token),
    /// Only its SHA-256 is (production).
    Sha256(TokenSha256),
}

impl Credential {
    /// The SHA-256 of the token, however it was given: two keys with the same one are the same key.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            Credential::Token(Token(token)) => Sha256::digest(token.as_bytes()).into(),
            Credential::Sha256(TokenSha256(digest)) => *digest,
        }
    }

    /// Whether a presented bearer token matches, in constant time so timing reveals nothing of the secret.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        match self {
            // Compare digests rather than strings: equal lengths, so the comparison time is independent of both.
            Credential::Token(Token(token)) => {
                let expected: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                bool::from(digest.ct_eq(&expected))
            }
            Credential::Sha256(TokenSha256(expected)) => bool::from(digest.ct_eq(expected)),
        }
    }
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Submit and cancel messages.
    Send,
    /// Read messages, conversations, modems and metrics.
    Read,
    /// Pause modems, manage opt-outs and other operator actions.
    Admin,
}

/// A shared secret (webhook HMAC key): at least 16 characters. Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret, for computing signatures only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        if text.chars().count() < 16 {
            Err(ValueError::new(
                "secret is too short: use at least 16 characters",
            ))
        } else {
            Ok(Secret(text.to_owned()))
        }
    }
}

/// A SIM PIN: 4 to 8 digits (3GPP TS 22.030). Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

impl Pin {
    /// The digits, for `AT+CPIN="..."` only.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(***)")
    }
}

impl FromStr for Pin {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        if (4..=8).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Pin(text.to_owned()))
        } else {
            Err(ValueError::new("invalid pin: expected 4 to 8 digits"))
        }
    }
}

/// A modem id: short, and safe in URLs, metrics labels and log lines.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModemName(String);

impl ModemName {
    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModemName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ModemName {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        short_name(text, "modem id").map(ModemName)
    }
}

/// A webhook's `name`: what logs and `/metrics` call it instead of its URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookName(String);

impl WebhookName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for WebhookName {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        short_name(text, "webhook name").map(WebhookName)
    }
}

/// 1 to 32 letters, digits, `-` or `_`: safe in URLs, metrics labels and log lines as it is.
fn short_name(text: &str, what: &str) -> Result<String, ValueError> {
    let valid = (1..=32).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(ValueError::new(format!(
            "invalid {what} `{text}`: expected 1 to 32 letters, digits, `-` or `_`"
        )))
    }
}

/// A tracing filter (`"info"`, `"modemgate=debug,info"`), checked when the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

impl LogFilter {
    /// The filter directives as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for LogFilter {
    fn default() -> Self {
        LogFilter("info".to_owned())
    }
}

impl FromStr for LogFilter {
    type Err = ValueError;

    /// A level (`info`) or `target=level` directives separated by commas. Checked by hand: `EnvFilter`
    /// would take a misspelt level (`"verbose"`) as a target name and silently log nothing.
    fn from_str(text: &str) -> Result<Self, ValueError> {
        let level_ok = |level: &str| level.parse::<tracing::level_filters::LevelFilter>().is_ok();
        let directive_ok = |directive: &str| match directive.rsplit_once('=') {
            Some((target, level)) => !target.is_empty() && level_ok(level),
            None => level_ok(directive),
        };
        if !text.is_empty() && text.split(',').all(|d| directive_ok(d.trim())) {
            Ok(LogFilter(text.to_owned()))
        } else {
            Err(ValueError::new(format!(
                "invalid log level `{text}`: expected trace, debug, info, warn, error or off, \
                 or directives like \"modemgate=debug,info\""
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_one_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "30",
            "s",
            "1h30m",
            "-5s",
            "5 minutes",
            "3.5s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn rates_parse_count_and_window() {
        let rate: Rate = "6/min".parse().unwrap();
        assert_eq!((rate.count.get(), rate.per), (6, Duration::from_secs(60)));
        assert_eq!(rate.interval(), Duration::from_secs(10));
        assert_eq!(
            "200/s".parse::<Rate>().unwrap().interval(),
            Duration::from_millis(5)
        );
        assert_eq!(
            "100/h".parse::<Rate>().unwrap().per,
            Duration::from_secs(3600)
        );
        assert_eq!(
            "1000/day".parse::<Rate>().unwrap().per,
            Duration::from_secs(86_400)
        );
        assert_eq!("6/min".parse::<Rate>().unwrap().to_string(), "6/min");
        for bad in [
            "",
            "6",
            "0/min",
            "6/fortnight",
            "six/min",
            "-1/s",
            "4294967295/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn rate_quota_spaces_cells_evenly() {
        let quota = "6/min".parse::<Rate>().unwrap().quota(None);
        assert_eq!(quota.replenish_interval(), Duration::from_secs(10));
        assert_eq!(quota.burst_size().get(), 1);
    }

    #[test]
    fn devices_are_paths_or_sim_profiles() {
        assert_eq!("sim:ec25".parse(), Ok(Device::Sim(Profile::Ec25)));
        assert_eq!(
            "/dev/ttyUSB2".parse(),
            Ok(Device::Serial("/dev/ttyUSB2".into()))
        );
        assert!(
            "sim:nokia"
                .parse::<Device>()
                .unwrap_err()
                .to_string()
                .contains("sim:plain")
        );
        assert!("ttyUSB2".parse::<Device>().is_err());
    }

    #[test]
    fn time_zones_are_checked() {
        assert_eq!(
            "America/Chicago".parse::<TimeZoneName>().unwrap().name,
            "America/Chicago"
        );
        assert!("Mars/Olympus".parse::<TimeZoneName>().is_err());
    }

    #[test]
    fn credentials_match_only_their_token() {
        let plain = Credential::Token("s3cret".parse().unwrap());
        assert!(plain.matches("s3cret"));
        assert!(!plain.matches("s3cret "));
        let hashed: TokenSha256 =
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
                .parse()
                .unwrap();
        assert!(Credential::Sha256(hashed).matches("secret"));
        assert!(!Credential::Sha256(hashed).matches("Secret"));
        assert!("abc".parse::<TokenSha256>().is_err());
        assert!("".parse::<Token>().is_err());
        assert_eq!(format!("{plain:?}"), "Token(Token(***))");
    }

    #[test]
    fn pins_modem_ids_and_log_filters() {
        assert_eq!("1234".parse::<Pin>().unwrap().digits(), "1234");
        assert!("12a4".parse::<Pin>().is_err());
        assert!("123".parse::<Pin>().is_err());
        assert!("m-1_a".parse::<ModemName>().is_ok());
        assert!("m 1".parse::<ModemName>().is_err());
        assert_eq!("cms-1".parse::<WebhookName>().unwrap().as_str(), "cms-1");
        assert_eq!(
            "crm/x".parse::<WebhookName>().unwrap_err().to_string(),
            "invalid webhook name `crm/x`: expected 1 to 32 letters, digits, `-` or `_`"
        );
        assert!("".parse::<ModemName>().is_err());
        assert!("modemgate=debug,info".parse::<LogFilter>().is_ok());
        assert!("loud".parse::<LogFilter>().is_err());
    }
}

/// `[storage] wal_limit_mb`: how large the write-ahead log may grow under writes that never pause before
/// the writer makes it start over (see `store::checkpoint`), and so the disk space to leave for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalLimit {
    megabytes: u32,
}

impl WalLimit {
    /// Below this a campaign's catch-ups (each an fsync of the database, 5-130 ms) would come every second.
    pub const MIN_MB: u32 = 64;
    /// 1 TB: beyond any disk such a box has, and still a whole number of 4 KB frames in a `u32`.
    pub const MAX_MB: u32 = 1 << 20;

    pub fn new(megabytes: i64) -> Result<Self, ValueError> {
        match u32::try_from(megabytes) {
            Ok(megabytes) if (Self::MIN_MB..=Self::MAX_MB).contains(&megabytes) => {
                Ok(WalLimit { megabytes })
            }
            _ => Err(ValueError::new(format!(
                "wal_limit_mb must be {}-{} (megabytes), not {megabytes}",
                Self::MIN_MB,
                Self::MAX_MB
            ))),
        }
    }

    /// The limit in 4 KB frames, as the store counts the log.
    pub fn frames(self) -> u32 {
        self.megabytes * 256
    }
}

impl Default for WalLimit {
    fn default() -> Self {
        WalLimit { megabytes: 256 }
    }
}

impl<'de> Deserialize<'de> for WalLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Says what is wanted when something else is written ("2GB" is the likely slip).
        whole_number(deserializer, WalLimit::new, |f| {
            write!(
                f,
                "a whole number of megabytes ({}-{}), e.g. 512",
                WalLimit::MIN_MB,
                WalLimit::MAX_MB
            )
        })
    }
}

/// `[storage] retain_days`: how long finished messages are kept before they are deleted. The record is the
/// agency's proof of what was said, so nothing is deleted unless the admin sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainDays {
    days: u32,
}

impl RetainDays {
    /// Reg F (12 CFR 1006.100) has a debt collector keep its records for three years after its last
    /// collection activity on a debt: less draws a warning, not a refusal (other work has other rules).
    pub const REG_F_DAYS: u32 = 3 * 365;
    /// 100 years: a typo's guard, not a policy.
    pub const MAX_DAYS: u32 = 36_500;

    pub fn new(days: i64) -> Result<Self, ValueError> {
        match u32::try_from(days) {
            Ok(days) if (1..=Self::MAX_DAYS).contains(&days) => Ok(RetainDays { days }),
            _ => Err(ValueError::new(format!(
                "retain_days must be 1-{} (days), not {days}; leave it out to keep everything",
                Self::MAX_DAYS
            ))),
        }
    }

    pub fn days(self) -> u32 {
        self.days
    }

    /// How long, as a span of whole days.
    pub fn span(self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.days) * 86_400)
    }
}

impl<'de> Deserialize<'de> for RetainDays {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        whole_number(deserializer, RetainDays::new, |f| {
            write!(
                f,
                "a whole number of days (1-{}), e.g. {}",
                RetainDays::MAX_DAYS,
                RetainDays::REG_F_DAYS
            )
        })
    }
}

/// Reads a TOML integer through `make`, saying what `expecting` writes when something else is there.
fn whole_number<'de, D, T>(
    deserializer: D,
    make: fn(i64) -> Result<T, ValueError>,
    expecting: fn(&mut fmt::Formatter<'_>) -> fmt::Result,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Whole<T> {
        make: fn(i64) -> Result<T, ValueError>,
        expecting: fn(&mut fmt::Formatter<'_>) -> fmt::Result,
    }

    impl<T> serde::de::Visitor<'_> for Whole<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            (self.expecting)(f)
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<T, E> {
            (self.make)(value).map_err(E::custom)
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<T, E> {
            self.visit_i64(i64::try_from(value).unwrap_or(i64::MAX))
        }
    }

    deserializer.deserialize_i64(Whole { make, expecting })
}
