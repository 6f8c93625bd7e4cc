//! Collections-safety rules: opt-outs, quiet hours, contact caps, reply menus.
//!
//! Pure logic (no I/O; the clock is always an argument):
//! - [`keywords`]: classify inbound replies (opt-out in English, Spanish and French, opt-in, help, menu
//!   keywords, and sentences that mention an opt-out word).
//! - [`quiet_hours`]: recipient-local sending windows per region, over every zone the recipient may be in.
//! - `zones`: where a recipient is, from an explicit IANA zone or their E.164 number (calling code; area code
//!   for +1), with the tables `country_zones.txt` and `nanp_area_codes.txt`.
//! - [`caps`]: at most N messages per recipient in a rolling window.
//! - [`replies`]: what the gateway says itself (confirmations, HELP, the opt-out notice, menu templates).
//! - [`notice`]: the opt-out notice on outbound texts.
//!
//! Wired into the daemon:
//! - [`optouts`]: the opted-out numbers, in memory and written through to the store.
//! - [`gate`]: the dispatcher's [`crate::dispatch::Gate`] at hand-off (opt-out, quiet hours, caps).
//! - [`inbound`]: what happens to a complete inbound message (opt-out, opt-in, HELP, menus).
//!
//! [`RulesConfig`] gathers their configuration; the config module holds the same types.

pub mod caps;
pub mod gate;
pub mod inbound;
pub mod keywords;
pub mod notice;
pub mod optouts;
pub mod quiet_hours;
pub mod replies;
mod zones;

pub use caps::{CapDecision, CapRule, CapsConfig};
pub use keywords::{Keyword, KeywordEntry, Keywords, KeywordsConfig, Language};
pub use quiet_hours::{Days, Decision, HoldReason, QuietHoursConfig, RegionWindows, Window};
pub use replies::{NoticeMode, OptOutConfig, ReplyRule, Template, Texts};
pub use zones::{
    Location, RegionName, Unresolved, is_fixed_offset, is_region, is_us_subdivision_code, locate,
    region_name,
};

use serde::Deserialize;

/// Configuration of all the rules. Every table is optional; missing ones take the defaults documented on
/// each type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    pub keywords: KeywordsConfig,
    pub quiet_hours: QuietHoursConfig,
    pub caps: CapsConfig,
    pub optout: OptOutConfig,
    pub reply_rules: Vec<ReplyRule>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_the_defaults() {
        let config: RulesConfig = toml::from_str("").unwrap();
        assert_eq!(config, RulesConfig::default());
        assert!(config.quiet_hours.enabled);
        assert_eq!(config.caps.rules.len(), 1);
    }

    #[test]
    fn full_config_parses() {
        let text = r#"
            [keywords]
            opt_out = [{ word = "detener", language = "es" }]
            menu = ["1", "PAY"]

            [quiet_hours]
            enabled = true
            windows = [{ days = "mon-sun", start = "08:00", end = "21:00" }]

            [[quiet_hours.regions]]
            region = "CA-ON"
            windows = [
                { days = "mon-sat", start = "07:00", end = "21:00" },
                { days = "sun", start = "13:00", end = "17:00" },
            ]

            [[caps.rules]]
            prefixes = ["+1617"]
            max = 2
            window = "7d"

            [optout]
            confirmation = { en = "Stopped.", es = "Baja confirmada." }

            [[reply_rules]]
            keywords = ["1", "PAY"]
            intent = "pay"
            template = "Pay here: {paymentLink}"
        "#;
        let config: RulesConfig = toml::from_str(text).unwrap();
        assert_eq!(config.keywords.menu, vec!["1", "PAY"]);
        assert_eq!(
            config.optout.confirmation.get(Language::Es),
            "Baja confirmada."
        );
        assert_eq!(config.reply_rules[0].intent, "pay");
        assert_eq!(config.quiet_hours.regions.len(), 1);
        assert_eq!(
            config.quiet_hours.windows,
            QuietHoursConfig::default().windows
        );
        assert_eq!(
            config.caps.rules,
            vec![
                CapRule::new(
                    vec!["+1617".into()],
                    2,
                    jiff::SignedDuration::from_hours(168)
                )
                .unwrap()
            ]
        );
    }

    #[test]
    fn mistakes_are_refused() {
        for (text, wanted) in [
            ("[quiet_hours]\nenable = true", "unknown field"),
            (
                "[quiet_hours]\nwindows = [{ days = \"mon\", start = \"21:00\", end = \"08:00\" }]",
                "not before",
            ),
            (
                "[quiet_hours]\nwindows = [{ days = \"noday\", start = \"08:00\", end = \"21:00\" }]",
                "unknown day",
            ),
            ("[[caps.rules]]\nmax = 0\nwindow = \"1h\"", "at least 1"),
            (
                "[[caps.rules]]\nmax = 2\nwindow = \"1h30m\"",
                "an integer and a unit",
            ),
            ("[optout]\nnotice_mode = \"maybe\"", "unknown variant"),
            (
                "[[reply_rules]]\nkeywords = [\"1\"]\nintent = \"pay\"\ntemplate = \"{x\"",
                "unclosed",
            ),
            (
                "[keywords]\nopt_out = [{ word = \"x\", language = \"de\" }]",
                "unknown variant",
            ),
        ] {
            let error = toml::from_str::<RulesConfig>(text).unwrap_err().to_string();
            assert!(error.contains(wanted), "{text:?}: {error}");
        }
    }
}
