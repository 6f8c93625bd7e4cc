//! Where a recipient probably is: an explicit IANA zone, or the zones and region their E.164 number points
//! to (country calling code; for +1, the area code). Tables: `country_zones.txt`, `nanp_area_codes.txt`.

use std::sync::LazyLock;

use jiff::tz::TimeZone;

/// A row of one of the tables: a calling code or area code, its regions (main one first) and its zones.
struct Row {
    key: &'static str,
    regions: Vec<&'static str>,
    zones: Vec<&'static str>,
}

fn parse_table(text: &'static str) -> Vec<Row> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (key, regions, zones) = (fields.next()?, fields.next()?, fields.next()?);
            Some(Row {
                key,
                regions: regions.split(',').filter(|r| *r != "-").collect(),
                zones: zones.split(',').collect(),
            })
        })
        .collect()
}

static COUNTRIES: LazyLock<Vec<Row>> =
    LazyLock::new(|| parse_table(include_str!("country_zones.txt")));
static NANP: LazyLock<Vec<Row>> =
    LazyLock::new(|| parse_table(include_str!("nanp_area_codes.txt")));

/// Where a recipient may be: every zone they could be in, and their region (ISO 3166-2 such as `CA-ON` for
/// US and Canadian numbers, else ISO 3166-1 such as `MX`) when the number tells.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub region: Option<String>,
    pub zones: Vec<TimeZone>,
    /// The region of the recipient's address, when the sender gave one (a send's `region`): its rules
    /// apply too, in the same zones.
    pub address: Option<String>,
}

/// Why no zone could be found for a recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("{0:?} is not an E.164 number (+ and 8-15 digits)")]
    NotE164(String),
    #[error("no time zone is known for {0}")]
    UnknownNumber(String),
    #[error("{0:?} is not an IANA time zone")]
    UnknownZone(String),
}

fn lookup(e164: &str) -> Result<&'static Row, Unresolved> {
    let digits = e164
        .strip_prefix('+')
        .filter(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Unresolved::NotE164(e164.to_owned()))?;
    let unknown = || Unresolved::UnknownNumber(e164.to_owned());
    if let Some(national) = digits.strip_prefix('1') {
        let area_code = national.get(..3).ok_or_else(unknown)?;
        return NANP
            .iter()
            .find(|row| row.key == area_code)
            .ok_or_else(unknown);
    }
    // Calling codes are prefix-free: at most one of the 1-3 digit prefixes is a code.
    (1..=3)
        .filter_map(|len| digits.get(..len))
        .find_map(|code| COUNTRIES.iter().find(|row| row.key == code))
        .ok_or_else(unknown)
}

/// What a region name in the configuration (`[[quiet_hours.regions]]`) can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionName {
    /// Numbers are located in it, or in one of its subdivisions (`US`, `CA`).
    Located,
    /// A region whose calling code it shares with a bigger one: its numbers are located in `main`, so a
    /// rule for it never applies (Jersey's `+44` numbers read as `GB`).
    SharedCode { main: &'static str },
    /// Not a region any number is located in (a typo, or a subdivision outside the US and Canada).
    Unknown,
}

/// How `name` (any case) relates to the regions [`locate`] gives.
pub fn region_name(name: &str) -> RegionName {
    let rows = || NANP.iter().chain(COUNTRIES.iter());
    let main_regions = || rows().filter_map(|row| row.regions.first().copied());
    let located = main_regions().any(|main| {
        main.eq_ignore_ascii_case(name)
            || main
                .split_once('-')
                .is_some_and(|(country, _)| country.eq_ignore_ascii_case(name))
    });
    if located {
        return RegionName::Located;
    }
    rows()
        .find(|row| row.regions.iter().any(|r| r.eq_ignore_ascii_case(name)))
        .and_then(|row| row.regions.first())
        .map_or(RegionName::Unknown, |&main| RegionName::SharedCode { main })
}

/// Locate a recipient. An explicit zone (from the API's `tz`, say the debtor's address) that is one of the
/// number's zones narrows them to itself. One that is not conflicts with the number (a mobile number
/// travels with its owner), and with conflicting location data only times that fit every candidate zone
/// are safe (Reg F 1006.6(b)(1)(i)): it joins the number's zones. It stands alone for a number no zone is
/// known for. The region comes from the number when it can, so regional rules (Ontario, Quebec) keep
/// applying.
pub fn locate(e164: &str, explicit_tz: Option<&str>) -> Result<Location, Unresolved> {
    let zone =
        |name: &str| TimeZone::get(name).map_err(|_| Unresolved::UnknownZone(name.to_owned()));
    let row = lookup(e164);
    let region = row
        .as_ref()
        .ok()
        .and_then(|row| row.regions.first())
        .map(|r| (*r).to_owned());
    let explicit = explicit_tz.map(zone).transpose()?;
    let numbers = match (row, &explicit) {
        (Ok(row), _) => row
            .zones
            .iter()
            .map(|name| zone(name))
            .collect::<Result<Vec<_>, _>>()?,
        (Err(_), Some(_)) => Vec::new(),
        (Err(unresolved), None) => return Err(unresolved),
    };
    let zones = match explicit {
        Some(explicit) if numbers.contains(&explicit) => vec![explicit],
        Some(explicit) => std::iter::once(explicit).chain(numbers).collect(),
        None => numbers,
    };
    Ok(Location {
        region,
        zones,
        address: None,
    })
}

/// A zone name that is a fixed offset rather than a place (`EST`, `MST`, `UTC`, `Etc/GMT+5`): it has no
/// summer time, so in July "21:00 EST" is 22:00 in New York, past Reg F's window.
pub fn is_fixed_offset(name: &str) -> bool {
    !name.contains('/') || name.starts_with("Etc/")
}

/// ISO 3166-2 subdivisions of the countries whose rules name them (quiet hours, the Massachusetts cap):
/// a code outside these (`US-ON`, `CA-ONT`) is a mistake, not a place.
const SUBDIVISIONS: [(&str, &[&str]); 3] = [
    (
        "US",
        &[
            "AK", "AL", "AR", "AS", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "GU", "HI",
            "IA", "ID", "IL", "IN", "KS", "KY", "LA", "MA", "MD", "ME", "MI", "MN", "MO", "MP",
            "MS", "MT", "NC", "ND", "NE", "NH", "NJ", "NM", "NV", "NY", "OH", "OK", "OR", "PA",
            "PR", "RI", "SC", "SD", "TN", "TX", "UM", "UT", "VA", "VI", "VT", "WA", "WI", "WV",
            "WY",
        ],
    ),
    (
        "CA",
        &[
            "AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT",
        ],
    ),
    (
        "MX",
        &[
            "AGU", "BCN", "BCS", "CAM", "CHH", "CHP", "CMX", "COA", "COL", "DUR", "GRO", "GUA",
            "HID", "JAL", "MEX", "MIC", "MOR", "NAY", "NLE", "OAX", "PUE", "QUE", "ROO", "SIN",
            "SLP", "SON", "TAB", "TAM", "TLA", "VER", "YUC", "ZAC",
        ],
    ),
];

/// Whether `code` (any case, no country) is a US state's or territory's code: `MA` alone is Morocco, and
/// check-config asks whether `US-MA` was meant.
pub fn is_us_subdivision_code(code: &str) -> bool {
    SUBDIVISIONS
        .iter()
        .find(|(country, _)| *country == "US")
        .is_some_and(|(_, known)| known.iter().any(|s| s.eq_ignore_ascii_case(code)))
}

/// Whether `code` (any case) names a place as a send's `region` and `[[caps.rules]] regions` take it: a
/// country some number is located in (`MX`, `US`), or a subdivision of one (`US-MA`, `CA-ON`, `MX-CMX`;
/// for the US, Canada and Mexico only their real ones). `MA` alone is Morocco: Massachusetts is `US-MA`.
pub fn is_region(code: &str) -> bool {
    let (country, subdivision) = match code.split_once('-') {
        Some((country, subdivision)) => (country, Some(subdivision)),
        None => (code, None),
    };
    let country_known = country.len() == 2
        && country.bytes().all(|b| b.is_ascii_alphabetic())
        && region_name(country) != RegionName::Unknown;
    let Some(subdivision) = subdivision else {
        return country_known;
    };
    match SUBDIVISIONS
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(country))
    {
        Some((_, known)) => known.iter().any(|s| s.eq_ignore_ascii_case(subdivision)),
        None => {
            country_known
                && (1..=3).contains(&subdivision.len())
                && subdivision.bytes().all(|b| b.is_ascii_alphanumeric())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_zone_is_in_the_bundled_tz_database() {
        assert!(NANP.len() >= 400, "{} area codes", NANP.len());
        assert!(COUNTRIES.len() >= 200, "{} calling codes", COUNTRIES.len());
        for row in NANP.iter().chain(COUNTRIES.iter()) {
            assert!(!row.zones.is_empty(), "{}", row.key);
            for zone in &row.zones {
                assert!(TimeZone::get(zone).is_ok(), "{}: {zone}", row.key);
            }
        }
    }

    #[test]
    fn regions_are_real_places() {
        for good in [
            "US", "us-ma", "CA-ON", "CA-PE", "MX", "MX-CMX", "MA", "DE-BE", "PR",
        ] {
            assert!(is_region(good), "{good}");
        }
        for bad in [
            "", "USA-MA", "US_MA", "US-ON", "CA-ONT", "MX-XX", "ZZ", "ZZ-QQ", "ON", "1",
        ] {
            assert!(!is_region(bad), "{bad}");
        }
    }

    #[test]
    fn region_names_are_those_numbers_are_located_in() {
        for located in ["MX", "ca-on", "US-TX", "US", "CA", "FR", "GB", "PR"] {
            assert_eq!(region_name(located), RegionName::Located, "{located}");
        }
        assert_eq!(region_name("JE"), RegionName::SharedCode { main: "GB" });
        assert_eq!(region_name("KZ"), RegionName::SharedCode { main: "RU" });
        for unknown in ["XX", "CA-ONT", "ZZ-QQ", "FR-75", ""] {
            assert_eq!(region_name(unknown), RegionName::Unknown, "{unknown}");
        }
    }

    #[test]
    fn numbers_resolve_by_area_code_or_calling_code() {
        let toronto = locate("+14165550123", None).unwrap();
        assert_eq!(toronto.region.as_deref(), Some("CA-ON"));
        assert_eq!(
            toronto.zones,
            vec![TimeZone::get("America/Toronto").unwrap()]
        );
        let boston = locate("+16175550123", None).unwrap();
        assert_eq!(boston.region.as_deref(), Some("US-MA"));
        let indiana = locate("+12195550123", None).unwrap();
        assert_eq!(indiana.zones.len(), 2, "219 spans Central and Eastern time");
        let mexico = locate("+525512345678", None).unwrap();
        assert_eq!(mexico.region.as_deref(), Some("MX"));
        assert!(
            mexico
                .zones
                .contains(&TimeZone::get("America/Mexico_City").unwrap())
        );
        let paris = locate("+33612345678", None).unwrap();
        assert_eq!(
            (paris.region.as_deref(), paris.zones.len()),
            (Some("FR"), 1)
        );
    }

    #[test]
    fn explicit_zone_narrows_or_joins_the_numbers_zones_and_keeps_the_region() {
        let zone = |name| TimeZone::get(name).unwrap();
        // Indiana's 219 spans Central and Eastern: Chicago narrows it.
        let loc = locate("+12195550123", Some("America/Chicago")).unwrap();
        assert_eq!(loc.zones, vec![zone("America/Chicago")]);
        assert_eq!(loc.region.as_deref(), Some("US-IN"));
        // A New York number whose owner lives in Los Angeles: both count.
        let loc = locate("+12125550123", Some("America/Los_Angeles")).unwrap();
        assert_eq!(
            loc.zones,
            vec![zone("America/Los_Angeles"), zone("America/New_York")]
        );
        assert_eq!(loc.region.as_deref(), Some("US-NY"));
        // A UK mobile whose owner is said to be in New York: London still counts.
        let loc = locate("+447911123457", Some("America/New_York")).unwrap();
        assert_eq!(loc.zones.first(), Some(&zone("America/New_York")));
        assert!(loc.zones.contains(&zone("Europe/London")), "{loc:?}");
        // A number no zone is known for: the explicit zone alone.
        let loc = locate("+18005550123", Some("America/Denver")).unwrap();
        assert_eq!(
            (loc.region, loc.zones),
            (None, vec![zone("America/Denver")])
        );
    }

    /// Overlays over area codes that span zones, or whose metadata disagreed, with the codes they overlay
    /// (NANPA's planning letters): an overlay serves the same ground, so it must not open earlier.
    const OVERLAYS: &[(&str, &[&str])] = &[
        ("364", &["270"]),
        ("930", &["812"]),
        ("448", &["850"]),
        ("458", &["541"]),
        ("986", &["208"]),
        ("729", &["423"]),
        ("624", &["716"]),
        ("639", &["306"]),
        ("474", &["306"]),
        ("778", &["604", "250"]),
        ("236", &["604", "250"]),
        ("672", &["604", "250"]),
        ("581", &["418"]),
        ("367", &["418"]),
        ("879", &["709"]),
    ];

    #[test]
    fn overlays_have_the_zones_and_region_of_the_codes_they_overlay() {
        let row = |code: &str| NANP.iter().find(|r| r.key == code).expect(code);
        for (overlay, parents) in OVERLAYS {
            let mut expected: Vec<&str> =
                parents.iter().flat_map(|p| row(p).zones.clone()).collect();
            expected.sort_unstable();
            expected.dedup();
            let mut zones = row(overlay).zones.clone();
            zones.sort_unstable();
            assert_eq!(zones, expected, "{overlay} over {parents:?}");
            assert_eq!(row(overlay).regions, row(parents[0]).regions, "{overlay}");
        }
    }

    #[test]
    fn unknown_numbers_and_zones_do_not_resolve() {
        assert!(matches!(
            locate("+18005550123", None),
            Err(Unresolved::UnknownNumber(_))
        ));
        assert!(matches!(
            locate("5550123", None),
            Err(Unresolved::NotE164(_))
        ));
        assert!(matches!(locate("+1800", None), Err(Unresolved::NotE164(_))));
        assert!(matches!(
            locate("+14165550123", Some("Mars/Olympus")),
            Err(Unresolved::UnknownZone(_))
        ));
    }
}
