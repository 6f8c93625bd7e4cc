//! Each region's numbering plan, compiled once from libphonenumber's data ([`numbering`], read with the
//! `phonenumber` crate's loader), and the questions [`super::parse`] and validation ask of it, answered as
//! libphonenumber answers them.
//!
//! The crate's own answers differ from libphonenumber's where it matters to us: its `is_valid` matches a
//! type's pattern against the start of the number only (so a number with digits too many passes), and it
//! looks up every pattern in a shared LRU cache (a mutex and a SipHash of the pattern per match, two
//! thirds of its validation time). Here patterns must match the whole number, and each region's are
//! compiled on first use and matched directly.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use phonenumber::metadata::{DATABASE, Database, Descriptor, Metadata};
use regex::{Regex, RegexBuilder};

/// libphonenumber's numbering plans as `assets/numbering/PhoneNumberMetadata.xml` has them (regenerated
/// from the newest release by the script beside it: the crate's bundled copy is as old as its last
/// release, and a number in a range assigned since is refused); the crate's copy should that file not
/// load (a test makes sure it does).
pub(super) fn numbering() -> &'static Database {
    static LOADED: LazyLock<Option<Database>> = LazyLock::new(|| {
        Database::parse(include_str!(
            "../../assets/numbering/PhoneNumberMetadata.xml"
        ))
        .ok()
    });
    LOADED.as_ref().unwrap_or(&DATABASE)
}

/// Whether the numbering plan of country calling code `code` assigns the national significant number
/// `national` (leading zeros included): libphonenumber's `isValidNumber`.
pub(super) fn is_valid(code: u16, national: &str) -> bool {
    // The code's regions, main region first (non-geographic codes have one, "001").
    let metas = numbering().by_code(&code).unwrap_or_default();
    let meta = match metas.as_slice() {
        [] => None,
        [meta] => Some(*meta),
        shared => {
            // The first region whose leading digits start the number; a region without them is picked
            // when the number has a type there, which makes it valid.
            let mut picked = None;
            for &meta in shared {
                let Some(plan) = Plan::of(meta) else {
                    continue;
                };
                match &plan.leading_digits {
                    Some(leading) if leading.is_match(national) => {
                        picked = Some(meta);
                        break;
                    }
                    Some(_) => {}
                    None if plan.has_type(national) => return true,
                    None => {}
                }
            }
            picked
        }
    };
    meta.and_then(Plan::of)
        .is_some_and(|plan| plan.has_type(national))
}

/// A region's metadata, by its id as the crate spells it (`US`, `GB`).
pub(super) fn region_meta(region: &str) -> Option<&'static Metadata> {
    numbering().by_id(region)
}

/// The metadata a number of calling code `code` is read with: its main region's (the crate lists it
/// first), or the code's own for non-geographic codes (+800, +882, ...).
pub(super) fn code_meta(code: u16) -> Option<&'static Metadata> {
    numbering()
        .by_code(&code)
        .and_then(|metas| metas.into_iter().next())
}

/// What libphonenumber's `testNumberLength` says of a national number's length in a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Length {
    Possible,
    /// Only diallable within an area (a US number without its area code).
    LocalOnly,
    TooShort,
    TooLong,
    /// Between the shortest and the longest, but not one of the lengths in use.
    Invalid,
}

/// One region's patterns, compiled.
pub(super) struct Plan {
    general: Pattern,
    /// Every type libphonenumber tells apart (premium rate, toll free, ..., fixed line, mobile): a number
    /// is valid when one of them matches.
    types: Vec<Pattern>,
    /// The lengths of all types together: libphonenumber computes them when it builds its metadata, the
    /// crate leaves them empty.
    lengths: Vec<u16>,
    local_lengths: Vec<u16>,
    leading_digits: Option<Regex>,
    /// Anchored at the start: the international (IDD) prefix dialled from this region (`011`, `00`).
    idd: Option<Regex>,
    /// Anchored at the start: the national (trunk) prefix as written before a national number (`0`, `8`,
    /// `1`, or a pattern with carrier codes), and how to rewrite what it matched, when the region says.
    national_prefix: Option<Regex>,
    transform: Option<String>,
}

impl Plan {
    /// The compiled plan for `meta`; `None` for a region whose patterns would not compile (never seen with
    /// the bundled metadata): its numbers are refused.
    pub(super) fn of(meta: &'static Metadata) -> Option<Arc<Plan>> {
        let known = PLANS
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|plans| plans.get(&address(meta)).cloned());
        known.unwrap_or_else(|| {
            let plan = Plan::compile(meta).map(Arc::new);
            PLANS
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(HashMap::new)
                .insert(address(meta), plan.clone());
            plan
        })
    }

    fn compile(meta: &Metadata) -> Option<Plan> {
        let d = meta.descriptors();
        let types: Vec<&Descriptor> = [
            d.premium_rate(),
            d.toll_free(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
            d.fixed_line(),
            d.mobile(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut lengths: Vec<u16> = types
            .iter()
            .flat_map(|t| t.possible_length().iter().copied())
            .collect();
        lengths.sort_unstable();
        lengths.dedup();
        let mut local_lengths: Vec<u16> = types
            .iter()
            .flat_map(|t| t.possible_local_length().iter().copied())
            .filter(|length| !lengths.contains(length))
            .collect();
        local_lengths.sort_unstable();
        local_lengths.dedup();
        // Without a pattern for parsing, the national prefix itself is what is stripped.
        let national_prefix = meta
            .national_prefix_for_parsing()
            .map(|regex| regex.as_str())
            .or(meta.national_prefix())
            .filter(|pattern| !pattern.trim().is_empty());
        Some(Plan {
            general: Pattern::compile(d.general())?,
            types: types
                .into_iter()
                .map(Pattern::compile)
                .collect::<Option<_>>()?,
            lengths,
            local_lengths,
            leading_digits: optional(meta.leading_digits().map(|r| r.as_str()))?,
            idd: optional(meta.international_prefix().map(|r| r.as_str()))?,
            national_prefix: optional(national_prefix)?,
            transform: meta
                .national_prefix_transform_rule()
                .map(replacement_syntax),
        })
    }

    /// libphonenumber's `getNumberTypeHelper(..) != UNKNOWN`.
    fn has_type(&self, national: &str) -> bool {
        self.general.matches(national) && self.types.iter().any(|t| t.matches(national))
    }

    /// Whether the region's general pattern matches the whole number (libphonenumber's
    /// `matchNationalNumber` on the general description: lengths are not looked at).
    pub(super) fn general_pattern_matches(&self, national: &str) -> bool {
        self.general.regex.is_match(national)
    }

    /// libphonenumber's `testNumberLength` against the general description.
    pub(super) fn length(&self, national: &str) -> Length {
        let length = u16::try_from(national.len()).unwrap_or(u16::MAX);
        let (Some(&shortest), Some(&longest)) = (self.lengths.first(), self.lengths.last()) else {
            return Length::Invalid;
        };
        if self.local_lengths.contains(&length) {
            Length::LocalOnly
        } else if length < shortest {
            Length::TooShort
        } else if length > longest {
            Length::TooLong
        } else if self.lengths.contains(&length) {
            Length::Possible
        } else {
            Length::Invalid
        }
    }

    /// The digits after this region's international prefix, when `number` starts with it and what follows
    /// does not start with 0 (no calling code does): libphonenumber's `parsePrefixAsIdd`.
    pub(super) fn after_idd<'a>(&self, number: &'a str) -> Option<&'a str> {
        let found = self.idd.as_ref()?.find(number)?;
        let rest = number.get(found.end()..)?;
        (!rest.starts_with('0')).then_some(rest)
    }

    /// `number` without the national prefix it starts with, rewritten as the region says: libphonenumber's
    /// `maybeStripNationalPrefixAndCarrierCode`. `None` when there is none, or when the number matched the
    /// region's pattern before and would not after.
    pub(super) fn strip_national_prefix(&self, number: &str) -> Option<String> {
        let prefix = self.national_prefix.as_ref()?;
        let captures = prefix.captures(number)?;
        let whole = captures.get(0)?;
        let viable_before = self.general_pattern_matches(number);
        let last_group = prefix.captures_len().saturating_sub(1);
        let stripped = match &self.transform {
            Some(rule) if last_group > 0 && captures.get(last_group).is_some() => {
                let mut rewritten = String::new();
                captures.expand(rule, &mut rewritten);
                rewritten.push_str(number.get(whole.end()..)?);
                rewritten
            }
            _ => number.get(whole.end()..)?.to_owned(),
        };
        if viable_before && !self.general_pattern_matches(&stripped) {
            return None;
        }
        Some(stripped)
    }
}

/// A descriptor's possible lengths and national-number pattern.
struct Pattern {
    lengths: Vec<u16>,
    /// Anchored at both ends: libphonenumber matches the whole number.
    regex: Regex,
}

impl Pattern {
    fn compile(descriptor: &Descriptor) -> Option<Pattern> {
        Some(Pattern {
            lengths: descriptor.possible_length().to_vec(),
            regex: compile(&format!("^(?:{})$", descriptor.national_number().as_str()))?,
        })
    }

    /// libphonenumber's `isNumberMatchingDesc`: a possible length (when any are listed), and the pattern
    /// matching the whole number.
    fn matches(&self, national: &str) -> bool {
        let length = u16::try_from(national.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&length)) && self.regex.is_match(national)
    }
}

/// A pattern anchored at the start (libphonenumber's `lookingAt`), when the metadata has one; `None` when
/// it does not compile.
fn optional(pattern: Option<&str>) -> Option<Option<Regex>> {
    match pattern {
        Some(pattern) => compile(&format!("^(?:{pattern})")).map(Some),
        None => Some(None),
    }
}

/// The metadata's patterns are written with insignificant whitespace, which libphonenumber removes.
fn compile(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern)
        .ignore_whitespace(true)
        .build()
        .ok()
}

/// A transform rule in Java's replacement syntax (`9$1`) in the regex crate's (`9${1}`): `$1` followed by
/// a digit would otherwise name group 10 and up.
fn replacement_syntax(rule: &str) -> String {
    let mut out = String::with_capacity(rule.len() + 4);
    let mut chars = rule.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('$', Some(digit)) if digit.is_ascii_digit() => {
                out.push_str("${");
                out.push(*digit);
                out.push('}');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// Compiled plans by region, filled on first use; `None` for a region whose patterns would not compile.
/// Keyed by the metadata's address in the crate's static database: every non-geographic code (+800,
/// +882, ...) has its own metadata under the same id, "001".
static PLANS: RwLock<Option<HashMap<usize, Option<Arc<Plan>>>>> = RwLock::new(None);

fn address(meta: &'static Metadata) -> usize {
    std::ptr::from_ref(meta) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_numbering_plans_load_and_are_newer_than_the_crates() {
        let loaded = numbering();
        assert!(
            !std::ptr::eq(loaded, &*DATABASE),
            "assets/numbering did not load"
        );
        // Canada's area code 273 was assigned after the crate's copy (9.0.33) was made.
        let ca = |database: &'static Database| Plan::of(database.by_id("CA").unwrap()).unwrap();
        assert!(ca(loaded).has_type("2736542143") && is_valid(1, "2736542143"));
        assert!(!ca(&DATABASE).has_type("2736542143"));
    }

    #[test]
    fn every_region_compiles_with_lengths() {
        let mut regions = 0;
        for code in 1..=999u16 {
            for meta in numbering().by_code(&code).unwrap_or_default() {
                let plan =
                    Plan::of(meta).unwrap_or_else(|| panic!("{} does not compile", meta.id()));
                assert!(!plan.lengths.is_empty(), "{} has no lengths", meta.id());
                regions += 1;
            }
        }
        assert!(regions > 240, "{regions}");
    }

    #[test]
    fn validity_needs_the_whole_number_to_match() {
        // A German mobile, then the same with a digit too many: the crate's start-only match took both.
        assert!(is_valid(49, "15123456789"));
        assert!(!is_valid(49, "151234567890"));
        assert!(!is_valid(49, "90012345675"));
        // NANP: a US and a Canadian number under one code, and an unassigned area code.
        assert!(is_valid(1, "4158906431") && is_valid(1, "6135550123"));
        assert!(!is_valid(1, "0118906431"));
        // Italian landlines keep their leading zero.
        assert!(is_valid(39, "0612345678"));
        assert!(!is_valid(999, "12345678"));
    }

    #[test]
    fn national_prefixes_are_stripped_as_the_region_says() {
        let plan = |region| Plan::of(region_meta(region).unwrap()).unwrap();
        // Russia has no pattern for parsing: its national prefix, 8, is the pattern.
        assert_eq!(
            plan("RU").strip_national_prefix("89123456789").as_deref(),
            Some("9123456789")
        );
        // Not when the number was viable before and would not be after: St Petersburg's 812 area code.
        assert_eq!(plan("RU").strip_national_prefix("8123456789"), None);
        // Argentina rewrites a mobile's 0 ... 15 into 9 ...: the transform rule, in this crate's syntax.
        assert_eq!(
            plan("AR").strip_national_prefix("0111512345678").as_deref(),
            Some("91112345678")
        );
        assert_eq!(replacement_syntax("9$1"), "9${1}");
        assert_eq!(replacement_syntax("$15"), "${1}5");
    }

    #[test]
    fn lengths_are_judged_against_every_type_together() {
        let us = Plan::of(region_meta("US").unwrap()).unwrap();
        assert_eq!(us.length("4158906431"), Length::Possible);
        assert_eq!(us.length("8906431"), Length::LocalOnly);
        assert_eq!(us.length("41589064311"), Length::TooLong);
        assert_eq!(us.length("415"), Length::TooShort);
        assert_eq!(us.after_idd("01144791112345"), Some("44791112345"));
        assert_eq!(us.after_idd("0110791112345"), None);
    }
}
