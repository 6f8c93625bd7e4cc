//! Recipient-local sending windows (Reg F 1006.6(b)(1)(i): not before 08:00 or after 21:00 at the consumer's
//! location; stricter regional rules such as Ontario's).
//!
//! A window is open from `start` (inclusive) to `end` (exclusive) local time on its days, evaluated with jiff
//! in each zone the recipient may be in. When the number spans several zones, only instants open in all of
//! them are allowed, as Reg F asks for conflicting location data. The clock is passed in, never read.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use super::zones::{self, Location};

/// Days of the week a window applies to (bit 0 = Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Days(u8);

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Days {
    pub const EVERY_DAY: Days = Days(0x7F);
    pub const MONDAY_TO_SATURDAY: Days = Days(0x3F);
    pub const SUNDAY: Days = Days(0x40);

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.to_monday_zero_offset()) != 0
    }
}

impl TryFrom<String> for Days {
    type Error = String;

    /// `mon-sun`, `mon-sat`, `sun`, `sat-sun`, `fri-mon` (wrapping), `mon,wed,fri`, or a mix.
    fn try_from(text: String) -> Result<Self, String> {
        let day = |name: &str| {
            let name = name.trim().to_ascii_lowercase();
            DAY_NAMES.iter().position(|d| *d == name).ok_or_else(|| {
                format!("unknown day {name:?} in {text:?} (use mon, tue, wed, thu, fri, sat, sun)")
            })
        };
        let mut bits = 0u8;
        for item in text.split(',') {
            match item.split_once('-') {
                Some((from, to)) => {
                    let (mut d, to) = (day(from)?, day(to)?);
                    loop {
                        bits |= 1 << d;
                        if d == to {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => bits |= 1 << day(item)?,
            }
        }
        Ok(Days(bits))
    }
}

/// One sending window: on `days`, from `start` up to (not including) `end`, local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawWindow")]
pub struct Window {
    days: Days,
    start: Time,
    end: Time,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    days: Days,
    #[serde(deserialize_with = "clock_time")]
    start: Time,
    #[serde(deserialize_with = "clock_time")]
    end: Time,
}

/// A local time of day as `HH:MM`, with an error that says what is expected (the time library's own
/// speaks of "two digit integers" and parameter ranges).
fn clock_time<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Time, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid time `{text}`: expected HH:MM from 00:00 to 23:59"
        ))
    })
}

impl TryFrom<RawWindow> for Window {
    type Error = String;

    fn try_from(raw: RawWindow) -> Result<Self, String> {
        Window::new(raw.days, raw.start, raw.end)
    }
}

impl Window {
    /// A window must end after it starts (windows across midnight are two windows).
    pub fn new(days: Days, start: Time, end: Time) -> Result<Self, String> {
        if start >= end {
            return Err(format!("window start {start} is not before its end {end}"));
        }
        Ok(Window { days, start, end })
    }

    fn hours(days: Days, start: i8, end: i8) -> Self {
        Window {
            days,
            start: Time::constant(start, 0, 0, 0),
            end: Time::constant(end, 0, 0, 0),
        }
    }
}

/// Windows for one region: an ISO 3166-1 country (`MX`) or an ISO 3166-2 subdivision (`CA-ON`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionWindows {
    pub region: String,
    pub windows: Vec<Window>,
}

/// `[quiet_hours]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuietHoursConfig {
    /// `false`: no recipient-local windows at all (internal traffic, benchmarks).
    pub enabled: bool,
    /// Windows where no region rule applies. Default: every day 08:00-21:00.
    pub windows: Vec<Window>,
    /// Region rules; a subdivision rule beats its country's. Listing any replaces the built-in list:
    /// MX every day 07:00-22:00; CA-ON and CA-BC Mon-Sat 07:00-21:00 and Sun 13:00-17:00; CA-QC Mon-Sat
    /// 08:00-20:00.
    pub regions: Vec<RegionWindows>,
    /// The zone assumed when neither the message's `tz` nor its number tells one. `None` (the default):
    /// such messages are held (`tz_unresolved`), since guessing a zone is how texts land at 3 a.m.
    #[serde(deserialize_with = "zone")]
    pub default_tz: Option<TimeZone>,
}

fn zone<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<TimeZone>, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse::<crate::config::TimeZoneName>()
        .map(|name| Some(name.zone))
        .map_err(serde::de::Error::custom)
}

impl Default for QuietHoursConfig {
    fn default() -> Self {
        let canada_west = vec![
            Window::hours(Days::MONDAY_TO_SATURDAY, 7, 21),
            Window::hours(Days::SUNDAY, 13, 17),
        ];
        QuietHoursConfig {
            enabled: true,
            windows: vec![Window::hours(Days::EVERY_DAY, 8, 21)],
            regions: vec![
                RegionWindows {
                    region: "MX".into(),
                    windows: vec![Window::hours(Days::EVERY_DAY, 7, 22)],
                },
                RegionWindows {
                    region: "CA-ON".into(),
                    windows: canada_west.clone(),
                },
                RegionWindows {
                    region: "CA-BC".into(),
                    windows: canada_west,
                },
                RegionWindows {
                    region: "CA-QC".into(),
                    windows: vec![Window::hours(Days::MONDAY_TO_SATURDAY, 8, 20)],
                },
            ],
            default_tz: None,
        }
    }
}

/// Why a message waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// Outside the recipient's sending window.
    QuietHours,
    /// No zone is known for the recipient: it needs an explicit `tz`.
    TzUnresolved,
    /// The recipient's candidate zones never share an open instant within a week: it needs an explicit `tz`.
    NoCommonWindow,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::QuietHours => "quiet_hours",
            HoldReason::TzUnresolved => "tz_unresolved",
            HoldReason::NoCommonWindow => "no_common_window",
        }
    }
}

/// The verdict for sending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Wait until this instant, the first at which every candidate zone is inside a window.
    HoldUntil(Timestamp, HoldReason),
    /// No instant can be computed: hold until someone supplies a time zone.
    Hold(HoldReason),
}

/// How far ahead to look for a common window before giving up.
const HORIZON: SignedDuration = SignedDuration::from_hours(8 * 24);

impl QuietHoursConfig {
    /// The windows for a region: its own rule, else its country's, else the default windows.
    pub fn windows_for(&self, region: Option<&str>) -> &[Window] {
        let find = |name: &str| {
            self.regions
                .iter()
                .find(|r| r.region.eq_ignore_ascii_case(name))
        };
        region
            .and_then(|r| {
                find(r).or_else(|| r.split_once('-').and_then(|(country, _)| find(country)))
            })
            .map_or(&self.windows, |rule| &rule.windows)
    }

    /// Resolve the recipient (explicit zone, else by number; `address`, the region of their address,
    /// adds its rules) and check.
    pub fn check_recipient(
        &self,
        now: Timestamp,
        e164: &str,
        tz: Option<&str>,
        address: Option<&str>,
    ) -> Decision {
        if !self.enabled {
            return Decision::Allowed;
        }
        match self.locate(e164, tz, address) {
            Some(location) => self.check(now, &location),
            None => Decision::Hold(HoldReason::TzUnresolved),
        }
    }

    /// For a recipient [`check_recipient`](Self::check_recipient) allows at `now`: the first instant at
    /// which one of their candidate zones leaves its window (`None` when quiet hours are off or the zone
    /// is unknown and no default applies). Windows that touch count as separate: the answer may come
    /// early, never late.
    pub fn window_closes(
        &self,
        now: Timestamp,
        e164: &str,
        tz: Option<&str>,
        address: Option<&str>,
    ) -> Option<Timestamp> {
        if !self.enabled {
            return None;
        }
        let location = self.locate(e164, tz, address)?;
        let sets = self.window_sets(&location);
        location
            .zones
            .iter()
            .flat_map(|zone| sets.iter().map(move |windows| (*windows, zone)))
            .filter_map(|(windows, zone)| window_end(windows, zone, now))
            .min()
    }

    /// Where the recipient is: the explicit zone, else by number, else the default zone if one is set.
    fn locate(&self, e164: &str, tz: Option<&str>, address: Option<&str>) -> Option<Location> {
        let mut location = match (zones::locate(e164, tz), &self.default_tz) {
            (Ok(location), _) => location,
            (Err(_), Some(zone)) => Location {
                region: None,
                zones: vec![zone.clone()],
                address: None,
            },
            (Err(_), None) => return None,
        };
        location.address = address.map(str::to_owned);
        Some(location)
    }

    /// The windows that must all be open: the number's region's, and its address's when that has other
    /// rules (an Ontario resident with a New York mobile keeps Ontario's Sunday hours).
    fn window_sets(&self, location: &Location) -> Vec<&[Window]> {
        let number = self.windows_for(location.region.as_deref());
        let mut sets = vec![number];
        if let Some(address) = location.address.as_deref() {
            let windows = self.windows_for(Some(address));
            if windows != number {
                sets.push(windows);
            }
        }
        sets
    }

    /// May a message go to someone at `location` at `now`, and if not, from when?
    pub fn check(&self, now: Timestamp, location: &Location) -> Decision {
        if !self.enabled {
            return Decision::Allowed;
        }
        if location.zones.is_empty() {
            return Decision::Hold(HoldReason::TzUnresolved);
        }
        let sets = self.window_sets(location);
        let horizon = now.checked_add(HORIZON).unwrap_or(Timestamp::MAX);
        // Jump to the latest next opening among closed (zone, windows) pairs until all are open at once.
        // No instant skipped can be open everywhere: the pair that set the jump is closed throughout it.
        let mut at = now;
        while at <= horizon {
            let mut latest = at;
            for zone in &location.zones {
                for windows in &sets {
                    if is_open(windows, zone, at) {
                        continue;
                    }
                    match next_open(windows, zone, at) {
                        Some(opening) => latest = latest.max(opening),
                        None => return Decision::Hold(HoldReason::NoCommonWindow),
                    }
                }
            }
            if latest == at {
                return if at == now {
                    Decision::Allowed
                } else {
                    Decision::HoldUntil(at, HoldReason::QuietHours)
                };
            }
            at = latest;
        }
        Decision::Hold(HoldReason::NoCommonWindow)
    }
}

/// The end of the latest-ending window open in `zone` at `at`, if one is open.
fn window_end(windows: &[Window], zone: &TimeZone, at: Timestamp) -> Option<Timestamp> {
    let local = at.to_zoned(zone.clone());
    let (day, time) = (local.weekday(), local.time());
    windows
        .iter()
        .filter(|w| w.days.contains(day) && w.start <= time && time < w.end)
        .filter_map(|w| local.date().to_datetime(w.end).to_zoned(zone.clone()).ok())
        .map(|end| end.timestamp())
        .max()
}

fn is_open(windows: &[Window], zone: &TimeZone, at: Timestamp) -> bool {
    let local = at.to_zoned(zone.clone());
    let (day, time) = (local.weekday(), local.time());
    windows
        .iter()
        .any(|w| w.days.contains(day) && w.start <= time && time < w.end)
}

/// The first window start after `after` in `zone`, looking a week ahead. A start that falls in a DST gap
/// moves forward to the first instant that exists, as jiff's compatible disambiguation does.
fn next_open(windows: &[Window], zone: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    let mut date = after.to_zoned(zone.clone()).date();
    for _ in 0..8 {
        let opening = windows
            .iter()
            .filter(|w| w.days.contains(date.weekday()))
            .filter_map(|w| date.to_datetime(w.start).to_zoned(zone.clone()).ok())
            .map(|zoned| zoned.timestamp())
            .filter(|&start| start > after)
            .min();
        if opening.is_some() {
            return opening;
        }
        date = date.tomorrow().ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse::<jiff::Zoned>().unwrap().timestamp()
    }

    fn local(zone: &str) -> Location {
        Location {
            region: None,
            zones: vec![TimeZone::get(zone).unwrap()],
            address: None,
        }
    }

    #[test]
    fn last_second_before_21_goes_and_21_waits_until_08_next_day() {
        let config = QuietHoursConfig::default();
        let ny = local("America/New_York");
        assert_eq!(
            config.check(at("2026-06-10T20:59:59[America/New_York]"), &ny),
            Decision::Allowed
        );
        assert_eq!(
            config.check(at("2026-06-10T21:00:00[America/New_York]"), &ny),
            Decision::HoldUntil(
                at("2026-06-11T08:00:00[America/New_York]"),
                HoldReason::QuietHours
            )
        );
        assert_eq!(
            config.check(at("2026-06-11T07:59:59[America/New_York]"), &ny),
            Decision::HoldUntil(
                at("2026-06-11T08:00:00[America/New_York]"),
                HoldReason::QuietHours
            )
        );
        assert_eq!(
            config.check(at("2026-06-11T08:00:00[America/New_York]"), &ny),
            Decision::Allowed
        );
    }

    #[test]
    fn the_window_closes_at_the_earliest_end_among_the_recipients_zones() {
        let config = QuietHoursConfig::default();
        // 219 spans Central and Eastern time: 21:00 Eastern comes first.
        assert_eq!(
            config.window_closes(
                at("2026-06-10T12:00:00[America/Chicago]"),
                "+12195550123",
                None,
                None
            ),
            Some(at("2026-06-10T21:00:00[America/New_York]"))
        );
        // An explicit zone among the number's narrows them to itself.
        assert_eq!(
            config.window_closes(
                at("2026-06-10T12:00:00[America/Chicago]"),
                "+12195550123",
                Some("America/Chicago"),
                None
            ),
            Some(at("2026-06-10T21:00:00[America/Chicago]"))
        );
        // One that conflicts with the number joins its zones: a New York number said to be in Los Angeles
        // closes at 21:00 New York time.
        assert_eq!(
            config.window_closes(
                at("2026-06-10T12:00:00[America/New_York]"),
                "+12125550123",
                Some("America/Los_Angeles"),
                None
            ),
            Some(at("2026-06-10T21:00:00[America/New_York]"))
        );
        let off = QuietHoursConfig {
            enabled: false,
            ..QuietHoursConfig::default()
        };
        assert_eq!(
            off.window_closes(
                at("2026-06-10T12:00:00[America/Chicago]"),
                "+12195550123",
                None,
                None
            ),
            None
        );
    }

    #[test]
    fn split_area_code_uses_the_overlap_of_its_zones() {
        let config = QuietHoursConfig::default();
        // 219 (northwest Indiana) spans Central and Eastern time.
        let indiana = zones::locate("+12195550123", None).unwrap();
        assert_eq!(indiana.zones.len(), 2);
        // 08:30 Eastern is 07:30 Central: wait for 08:00 Central.
        assert_eq!(
            config.check(at("2026-06-10T08:30:00[America/New_York]"), &indiana),
            Decision::HoldUntil(
                at("2026-06-10T08:00:00[America/Chicago]"),
                HoldReason::QuietHours
            )
        );
        // 20:30 Central is 21:30 Eastern: wait for the next morning, 08:00 Central.
        assert_eq!(
            config.check(at("2026-06-10T20:30:00[America/Chicago]"), &indiana),
            Decision::HoldUntil(
                at("2026-06-11T08:00:00[America/Chicago]"),
                HoldReason::QuietHours
            )
        );
        assert_eq!(
            config.check(at("2026-06-10T12:00:00[America/Chicago]"), &indiana),
            Decision::Allowed
        );
    }

    #[test]
    fn unknown_zone_holds() {
        let config = QuietHoursConfig::default();
        let now = at("2026-06-10T12:00:00[UTC]");
        assert_eq!(
            config.check_recipient(now, "+18005550123", None, None),
            Decision::Hold(HoldReason::TzUnresolved)
        );
        assert_eq!(
            config.check_recipient(now, "not a number", None, None),
            Decision::Hold(HoldReason::TzUnresolved)
        );
        assert_eq!(
            config.check_recipient(now, "+14165550123", Some("Nowhere/Atlantis"), None),
            Decision::Hold(HoldReason::TzUnresolved)
        );
        let fallback = QuietHoursConfig {
            default_tz: Some(TimeZone::get("America/Denver").unwrap()),
            ..QuietHoursConfig::default()
        };
        assert_eq!(
            fallback.check_recipient(now, "+18005550123", None, None),
            Decision::HoldUntil(
                at("2026-06-10T08:00:00[America/Denver]"),
                HoldReason::QuietHours
            )
        );
        let disabled = QuietHoursConfig {
            enabled: false,
            ..QuietHoursConfig::default()
        };
        assert_eq!(
            disabled.check_recipient(now, "+18005550123", None, None),
            Decision::Allowed
        );
    }

    #[test]
    fn dst_transitions_keep_local_wall_clock_windows() {
        let config = QuietHoursConfig::default();
        let ny = local("America/New_York");
        // Spring forward (2026-03-08 02:00 EST -> 03:00 EDT): the next opening is 08:00 EDT = 12:00 UTC.
        assert_eq!(
            config.check(at("2026-03-07T21:30:00[America/New_York]"), &ny),
            Decision::HoldUntil(at("2026-03-08T12:00:00+00:00[UTC]"), HoldReason::QuietHours)
        );
        // Fall back (2026-11-01 02:00 EDT -> 01:00 EST): 08:00 EST = 13:00 UTC.
        assert_eq!(
            config.check(at("2026-10-31T23:00:00[America/New_York]"), &ny),
            Decision::HoldUntil(at("2026-11-01T13:00:00+00:00[UTC]"), HoldReason::QuietHours)
        );
        // A window starting inside the gap opens at the first instant that exists.
        let night = QuietHoursConfig {
            windows: vec![
                Window::new(
                    Days::EVERY_DAY,
                    Time::constant(2, 30, 0, 0),
                    Time::constant(4, 0, 0, 0),
                )
                .unwrap(),
            ],
            regions: Vec::new(),
            ..QuietHoursConfig::default()
        };
        assert_eq!(
            night.check(at("2026-03-08T01:00:00[America/New_York]"), &ny),
            Decision::HoldUntil(
                at("2026-03-08T03:30:00[America/New_York]"),
                HoldReason::QuietHours
            )
        );
    }

    #[test]
    fn regional_rules_ontario_sunday_and_mexico() {
        let config = QuietHoursConfig::default();
        let toronto = zones::locate("+14165550123", None).unwrap();
        // Saturday 2026-06-13 at 21:00: Sunday's window opens at 13:00.
        assert_eq!(
            config.check(at("2026-06-13T21:00:00[America/Toronto]"), &toronto),
            Decision::HoldUntil(
                at("2026-06-14T13:00:00[America/Toronto]"),
                HoldReason::QuietHours
            )
        );
        assert_eq!(
            config.check(at("2026-06-15T07:00:00[America/Toronto]"), &toronto),
            Decision::Allowed
        );
        let cdmx = zones::locate("+525512345678", Some("America/Mexico_City")).unwrap();
        assert_eq!(cdmx.region.as_deref(), Some("MX"));
        assert_eq!(
            config.check(at("2026-06-10T21:30:00[America/Mexico_City]"), &cdmx),
            Decision::Allowed
        );
        assert_eq!(config.windows_for(Some("US-MA")), config.windows.as_slice());
        assert_eq!(
            config.windows_for(Some("MX-CMX")),
            config.regions[0].windows.as_slice()
        );
    }

    #[test]
    fn zones_with_no_common_window_hold() {
        let config = QuietHoursConfig {
            windows: vec![Window::hours(Days::EVERY_DAY, 9, 10)],
            regions: Vec::new(),
            ..QuietHoursConfig::default()
        };
        // 09:00-10:00 in UTC and in Tokyo (UTC+9) never overlap.
        let apart = Location {
            region: None,
            zones: vec![
                TimeZone::get("Etc/UTC").unwrap(),
                TimeZone::get("Asia/Tokyo").unwrap(),
            ],
            address: None,
        };
        assert_eq!(
            config.check(at("2026-06-10T12:00:00+00:00[UTC]"), &apart),
            Decision::Hold(HoldReason::NoCommonWindow)
        );
    }

    #[test]
    fn days_parse() {
        assert_eq!(Days::try_from("mon-sun".to_owned()), Ok(Days::EVERY_DAY));
        assert_eq!(
            Days::try_from("Mon-Sat".to_owned()),
            Ok(Days::MONDAY_TO_SATURDAY)
        );
        assert_eq!(Days::try_from("sun".to_owned()), Ok(Days::SUNDAY));
        assert_eq!(Days::try_from("sat-mon".to_owned()), Ok(Days(0b110_0001)));
        assert_eq!(Days::try_from("mon,wed".to_owned()), Ok(Days(0b101)));
        assert!(Days::try_from("funday".to_owned()).is_err());
    }
}
