//! Phone numbers: recipients as validated E.164 [`Msisdn`]s, inbound senders as [`Sender`]s.
//!
//! Numbers are personal data in a debt-collection log, so neither type implements `Display`: the full
//! number must be asked for with `as_str()` (for the modem, the store, the API), and `Debug` and
//! [`Msisdn::masked`] show only enough to tell numbers apart in logs (`+1415***6431`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod parse;
mod plan;

/// An ISO 3166 region whose national numbering applies to numbers written without `+`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region(pub phonenumber::country::Id);

impl Default for Region {
    /// The United States: the collection systems we integrate with export 10-digit NANP numbers.
    fn default() -> Self {
        Region(phonenumber::country::Id::US)
    }
}

/// Why a region name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region `{0}`: expected a two-letter ISO 3166 code such as \"US\"")]
pub struct UnknownRegion(String);

impl FromStr for Region {
    type Err = UnknownRegion;

    fn from_str(text: &str) -> Result<Self, UnknownRegion> {
        let unknown = || UnknownRegion(text.to_owned());
        if text.len() != 2 {
            return Err(unknown());
        }
        text.to_ascii_uppercase()
            .parse()
            .map(Region)
            .map_err(|_| unknown())
    }
}

/// Why text is not a usable phone number. Carries no digits: errors end up in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MsisdnError {
    /// Not shaped like a phone number at all.
    #[error("not a phone number")]
    NotANumber,
    /// Written without `+` and no default region to read it in.
    #[error("not in international form (+CC...) and no default region")]
    NoRegion,
    /// Shaped like one, but not a number the numbering plan assigns (wrong length, unused prefix).
    #[error("not a valid number in its numbering plan")]
    Invalid,
}

/// A mobile subscriber number in E.164 form (`+14158906431`), valid in its country's numbering plan.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msisdn {
    /// `+`, country code, national number: nothing else.
    e164: String,
    /// Digits in the country code (1 to 3), for masking and area lookups.
    country_code_len: usize,
}

impl Msisdn {
    /// Parse a number as a CMS or an operator writes it: international (`+1 415 890 6431`, `+14158906431`)
    /// or national in `default_region` (`4158906431`, `(415) 890-6431` with region US).
    pub fn parse(input: &str, default_region: Option<Region>) -> Result<Msisdn, MsisdnError> {
        let region = default_region.and_then(|region| plan::region_meta(region.0.as_ref()));
        let parse::Parsed { code, national } = parse::parse(input.trim(), region)?;
        if !plan::is_valid(code, &national) {
            return Err(MsisdnError::Invalid);
        }
        let code = code.to_string();
        Ok(Msisdn {
            e164: format!("+{code}{national}"),
            country_code_len: code.len(),
        })
    }

    /// Loads the numbering-plan database and runs the region's patterns once. The library does both
    /// lazily, so without this the first request after a start pays for it (~0.2 s measured).
    pub fn warm_up(region: Region) {
        let example = plan::region_meta(region.0.as_ref())
            .and_then(|metadata| metadata.descriptors().mobile())
            .and_then(|mobile| mobile.example())
            .map(str::to_owned);
        if let Some(example) = example {
            let _ = Msisdn::parse(&example, Some(region));
        }
    }

    /// The full E.164 form, `+` included.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The country calling code (1 for NANP, 44 for the UK).
    pub fn country_code(&self) -> u16 {
        self.e164
            .get(1..=self.country_code_len)
            .and_then(|cc| cc.parse().ok())
            .unwrap_or(0)
    }

    /// The national significant number: the digits after the country code.
    pub fn national(&self) -> &str {
        self.e164.get(1 + self.country_code_len..).unwrap_or("")
    }

    /// The number for logs: country code, the first three national digits (area code in NANP), `***`,
    /// the last four. Short national numbers keep only their last two.
    pub fn masked(&self) -> String {
        let cc = self.e164.get(..=self.country_code_len).unwrap_or("+");
        let national = self.national();
        let len = national.len();
        match (national.get(..3), national.get(len.saturating_sub(4)..)) {
            (Some(head), Some(tail)) if len >= 8 => format!("{cc}{head}***{tail}"),
            _ => format!(
                "{cc}***{}",
                national.get(len.saturating_sub(2)..).unwrap_or("")
            ),
        }
    }
}

impl fmt::Debug for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Msisdn({})", self.masked())
    }
}

impl Serialize for Msisdn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.e164)
    }
}

/// Deserializes only the international form: data that has already been normalised once.
impl<'de> Deserialize<'de> for Msisdn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Msisdn::parse(&text, None).map_err(serde::de::Error::custom)
    }
}

/// A service's number in international form, such as an SMS centre's: read like a recipient's, but not held to
/// the numbering plan, which lists subscriber ranges only (`+27381000015`, a South African operator's SMSC,
/// is in none of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNumber(String);

impl ServiceNumber {
    /// `+`, a known country code, and a national part of 2 to 17 digits, however punctuated.
    pub fn parse(input: &str) -> Result<ServiceNumber, MsisdnError> {
        // Without a region, anything but an international number is refused (NoRegion) by the parser.
        let parse::Parsed { code, national } = parse::parse(input.trim(), None)?;
        Ok(ServiceNumber(format!("+{code}{national}")))
    }

    /// `+` and digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who an inbound message is from: a subscriber we can reply to, or a service that cannot be answered
/// like one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Sender {
    /// A subscriber number.
    Msisdn(Msisdn),
    /// A digits-only service number (carrier notices, `611`, US short codes such as `72975`).
    ShortCode(String),
    /// Anything else, kept verbatim: alphanumeric senders (`"Verizon"`) and numbers no plan recognises.
    Alphanumeric(String),
}

impl Sender {
    /// Classify a sender address as the modem reported it. Never fails: an inbound message is kept
    /// whatever its sender looks like.
    pub fn classify(raw: &str, default_region: Region) -> Sender {
        let raw = raw.trim();
        let digits = raw.strip_prefix('+').unwrap_or(raw);
        let numeric = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        if numeric {
            if let Ok(msisdn) = Msisdn::parse(raw, Some(default_region)) {
                return Sender::Msisdn(msisdn);
            }
            if !raw.starts_with('+') && digits.len() <= 8 {
                return Sender::ShortCode(raw.to_owned());
            }
        }
        Sender::Alphanumeric(raw.to_owned())
    }

    /// The sender as stored and shown to the CMS (E.164 for subscribers).
    pub fn as_str(&self) -> &str {
        match self {
            Sender::Msisdn(msisdn) => msisdn.as_str(),
            Sender::ShortCode(code) | Sender::Alphanumeric(code) => code,
        }
    }

    /// The sender for logs: subscribers masked, services (which are not personal data) as they are.
    pub fn masked(&self) -> String {
        match self {
            Sender::Msisdn(msisdn) => msisdn.masked(),
            Sender::ShortCode(code) | Sender::Alphanumeric(code) => code.clone(),
        }
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sender::Msisdn(msisdn) => write!(f, "{msisdn:?}"),
            Sender::ShortCode(code) => write!(f, "ShortCode({code})"),
            Sender::Alphanumeric(name) => write!(f, "Alphanumeric({name})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Option<Region> = Some(Region(phonenumber::country::Id::US));

    #[test]
    fn ten_digit_us_exports_become_e164() {
        let number = Msisdn::parse("4158906431", US).unwrap();
        assert_eq!(number.as_str(), "+14158906431");
        for written in [
            "+14158906431",
            "+1 (415) 890-6431",
            "(415) 890-6431",
            "415.890.6431",
            " 14158906431 ",
        ] {
            assert_eq!(Msisdn::parse(written, US).unwrap(), number, "{written:?}");
        }
        assert_eq!(number.country_code(), 1);
        assert_eq!(number.national(), "4158906431");
    }

    #[test]
    fn international_numbers_ignore_the_default_region() {
        let uk = Msisdn::parse("+44 7911 123456", US).unwrap();
        assert_eq!(uk.as_str(), "+447911123456");
        assert_eq!(uk.country_code(), 44);
        let mx = Msisdn::parse("+52 55 1234 5678", None).unwrap();
        assert_eq!(mx.as_str(), "+525512345678");
    }

    #[test]
    fn bad_numbers_are_refused_with_the_reason() {
        assert_eq!(Msisdn::parse("hello", US), Err(MsisdnError::NotANumber));
        assert_eq!(
            Msisdn::parse("4158906431", None),
            Err(MsisdnError::NoRegion)
        );
        assert_eq!(Msisdn::parse("415890643", US), Err(MsisdnError::Invalid));
        assert_eq!(
            Msisdn::parse("+1 011 890 6431", US),
            Err(MsisdnError::Invalid)
        );
    }

    #[test]
    fn masking_keeps_area_code_and_last_four() {
        assert_eq!(
            Msisdn::parse("4158906431", US).unwrap().masked(),
            "+1415***6431"
        );
        assert_eq!(
            Msisdn::parse("+447911123456", None).unwrap().masked(),
            "+44791***3456"
        );
        let debug = format!("{:?}", Msisdn::parse("4158906431", US).unwrap());
        assert!(!debug.contains("8906431"), "{debug}");
    }

    #[test]
    fn senders_are_classified() {
        let us = Region::default();
        assert!(matches!(
            Sender::classify("+14158906431", us),
            Sender::Msisdn(_)
        ));
        assert!(matches!(
            Sender::classify("4158906431", us),
            Sender::Msisdn(_)
        ));
        assert_eq!(
            Sender::classify("72975", us),
            Sender::ShortCode("72975".into())
        );
        assert_eq!(Sender::classify("611", us), Sender::ShortCode("611".into()));
        assert_eq!(
            Sender::classify("Verizon", us),
            Sender::Alphanumeric("Verizon".into())
        );
        assert_eq!(
            Sender::classify("+999", us),
            Sender::Alphanumeric("+999".into())
        );
        assert_eq!(Sender::classify("72975", us).masked(), "72975");
        assert_eq!(
            Sender::classify("+14158906431", us).masked(),
            "+1415***6431"
        );
        assert_eq!(
            Sender::classify("+14158906431", us).as_str(),
            "+14158906431"
        );
    }

    #[test]
    fn service_numbers_need_a_country_code_not_a_subscriber_range() {
        let smsc = ServiceNumber::parse(" +27 38 100 0015 ").unwrap();
        assert_eq!(smsc.as_str(), "+27381000015");
        assert_eq!(
            Msisdn::parse("+27381000015", None),
            Err(MsisdnError::Invalid)
        );
        assert_eq!(
            ServiceNumber::parse("0381000015"),
            Err(MsisdnError::NoRegion)
        );
        assert!(ServiceNumber::parse("+999 1234").is_err());
    }

    proptest::proptest! {
        /// Phone-shaped text of every kind is read without a panic, and an accepted number's E.164 form
        /// reads back as itself in any region (libphonenumber's round trip).
        #[test]
        fn accepted_numbers_read_back_as_themselves(
            input in proptest::prop_oneof![
                "[+＋]?[0-9０-９ ()./x#;,A-Za-z\u{a0}-]{0,24}",
                // Shaped like real numbers, so that many are accepted and the round trip is exercised.
                "(\\+|00|011|0|8)?(1|7|39|44|49|54|55|91)?[ -]?[1-9][0-9]{5,11}",
            ],
            region in proptest::sample::select(vec!["US", "GB", "DE", "IN", "BR", "RU", "AR", "IT"]),
        ) {
            let region: Region = region.parse().unwrap();
            if let Ok(number) = Msisdn::parse(&input, Some(region)) {
                let e164 = number.as_str();
                proptest::prop_assert!(e164.starts_with('+') && e164[1..].bytes().all(|b| b.is_ascii_digit()));
                proptest::prop_assert_eq!(Msisdn::parse(e164, None), Ok(number.clone()));
                proptest::prop_assert_eq!(Msisdn::parse(e164, Some(Region::default())), Ok(number.clone()));
            }
        }
    }

    #[test]
    fn serde_round_trips_e164_only() {
        let number = Msisdn::parse("4158906431", US).unwrap();
        let json = serde_json::to_string(&number).unwrap();
        assert_eq!(json, "\"+14158906431\"");
        assert_eq!(serde_json::from_str::<Msisdn>(&json).unwrap(), number);
        assert!(serde_json::from_str::<Msisdn>("\"4158906431\"").is_err());
    }

    #[test]
    fn regions_parse_case_insensitively() {
        assert_eq!(
            "gb".parse::<Region>().unwrap(),
            Region(phonenumber::country::Id::GB)
        );
        assert!("ZZ".parse::<Region>().is_err());
        assert!("USA".parse::<Region>().is_err());
    }
}
