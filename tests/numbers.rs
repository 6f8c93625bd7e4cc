//! Recipient numbers are read exactly as libphonenumber reads them.
//!
//! `tests/data/phonenumbers.tsv` holds inputs in fifteen default regions, as collection systems export
//! them and as they go wrong (other countries' numbers with `+` and `00`, trunk prefixes, national numbers
//! that begin like a country code, numbers a digit too long, extensions, full-width digits, vanity
//! letters, `tel:` URIs), each with the answer of Google's libphonenumber (its Python port `phonenumbers`,
//! of the version whose numbering plans `assets/numbering` bundles): the E.164 number, or `-` when it is
//! refused. `tests/data/make_phonenumbers_fixture.py` regenerates it.

use modemgate::msisdn::{Msisdn, Region};

#[test]
fn every_number_is_read_as_libphonenumber_reads_it() {
    let fixture = include_str!("data/phonenumbers.tsv");
    // Both name their libphonenumber version in their first line: answers under other numbering plans
    // would test the data, not the reading.
    let version = |text: &'static str, after: &str| {
        let words: Vec<&str> = text
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        words
            .windows(2)
            .find(|pair| pair[0] == after)
            .map(|pair| pair[1].trim_end_matches([';', ',']))
    };
    let bundled = include_str!("../assets/numbering/PhoneNumberMetadata.xml");
    assert_eq!(
        version(fixture, "phonenumbers"),
        version(bundled, "version"),
        "tests/data and assets/numbering hold different libphonenumber versions: regenerate both"
    );
    assert!(version(fixture, "phonenumbers").is_some());
    let (mut checked, mut accepted) = (0, 0);
    let mut wrong = Vec::new();
    for line in fixture
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split('\t').collect();
        let [region, input, expected] = fields[..] else {
            panic!("malformed fixture line {line:?}");
        };
        let region: Region = region.parse().unwrap();
        let input: String = serde_json::from_str(input).unwrap();
        let expected = (expected != "-").then_some(expected);
        let ours = Msisdn::parse(&input, Some(region)).ok();
        if ours.as_ref().map(Msisdn::as_str) != expected {
            wrong.push(format!(
                "{region:?} {input:?}: ours {:?}, libphonenumber {expected:?}",
                ours.as_ref().map(Msisdn::as_str)
            ));
        }
        checked += 1;
        accepted += usize::from(expected.is_some());
    }
    assert!(
        checked > 5_000 && accepted > 1_500 && checked - accepted > 1_500,
        "{checked} inputs, {accepted} accepted: too few to mean much"
    );
    assert!(
        wrong.is_empty(),
        "{} of {checked} read differently:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(40)].join("\n")
    );
}
