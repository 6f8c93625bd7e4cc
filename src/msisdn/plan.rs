//! Numbering-plan validity, with each region's patterns compiled once.
//!
//! Gives exactly `phonenumber::is_valid`'s answer over the same metadata, and the equivalence test below
//! holds it to that. The library looks up every pattern it matches in a shared LRU cache (a mutex, a
//! SipHash of the whole pattern text, a move to the front of the list): perf put that at about two thirds
//! of its validation time, and validation at a quarter of the API's CPU for a batch of sends. It also
//! types a +1 number twice, once to pick the NANP region and once to validate it there. Here each region's
//! patterns are compiled on first use and matched directly, and the region is typed once.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use phonenumber::PhoneNumber;
use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use regex::{Regex, RegexBuilder};

/// Whether the numbering plan assigns `number`: `phonenumber::is_valid(number)`, faster.
pub(super) fn is_valid(number: &PhoneNumber) -> bool {
    judge(number).unwrap_or_else(|| phonenumber::is_valid(number))
}

/// The library's `is_valid`, step for step; `None` when a region's patterns would not compile here (never
/// seen with the bundled metadata), which leaves the number to the library.
fn judge(number: &PhoneNumber) -> Option<bool> {
    let code = number.code().value();
    // The national number as the library validates it: with an Italian leading zero, if any.
    let national = number.national().to_string();
    let Some(regions) = DATABASE.region(&code) else {
        return Some(false);
    };
    let meta = match regions.as_slice() {
        ["001"] => DATABASE
            .by_code(&code)
            .and_then(|metas| metas.into_iter().next()),
        [region] => region_meta(region),
        shared => {
            // The first region whose leading digits start the number; a region without them is picked
            // when the number has a type there, which makes it valid.
            let mut picked = None;
            for meta in shared.iter().filter_map(|region| region_meta(region)) {
                let plan = plan_of(meta)?;
                match &plan.leading_digits {
                    Some(leading) if starts(leading, &national) => {
                        picked = Some(meta);
                        break;
                    }
                    Some(_) => {}
                    None if plan.has_type(&national) => return Some(true),
                    None => {}
                }
            }
            picked
        }
    };
    match meta {
        Some(meta) => Some(plan_of(meta)?.has_type(&national)),
        None => Some(false),
    }
}

/// A region's metadata, for a region id the library knows (as its own lookup requires).
fn region_meta(region: &str) -> Option<&'static Metadata> {
    region
        .parse::<phonenumber::country::Id>()
        .ok()
        .and_then(|id| DATABASE.by_id(id.as_ref()))
}

/// One region's patterns, compiled.
struct Plan {
    general: Pattern,
    /// Every type the library tells apart (premium rate, toll free, ..., fixed line, mobile): a number is
    /// valid when one of them matches.
    types: Vec<Pattern>,
    leading_digits: Option<Regex>,
}

impl Plan {
    fn compile(meta: &Metadata) -> Option<Plan> {
        let d = meta.descriptors();
        let types = [
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
        ];
        Some(Plan {
            general: Pattern::compile(d.general())?,
            types: types
                .into_iter()
                .flatten()
                .map(Pattern::compile)
                .collect::<Option<_>>()?,
            leading_digits: match meta.leading_digits() {
                Some(leading) => Some(compile(leading.as_str())?),
                None => None,
            },
        })
    }

    /// The library's `number_type(..) != Unknown`.
    fn has_type(&self, national: &str) -> bool {
        self.general.is_match(national) && self.types.iter().any(|t| t.is_match(national))
    }
}

/// A descriptor's possible lengths and national-number pattern.
struct Pattern {
    lengths: Vec<u16>,
    regex: Regex,
}

impl Pattern {
    fn compile(descriptor: &Descriptor) -> Option<Pattern> {
        Some(Pattern {
            lengths: descriptor.possible_length().to_vec(),
            regex: compile(descriptor.national_number().as_str())?,
        })
    }

    /// The library's `Descriptor::is_match`: a possible length (when any are listed), and the pattern
    /// matching from the first digit.
    fn is_match(&self, national: &str) -> bool {
        let length = u16::try_from(national.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&length)) && starts(&self.regex, national)
    }
}

/// The metadata's patterns are written with insignificant whitespace, as the library compiles them.
fn compile(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern)
        .ignore_whitespace(true)
        .build()
        .ok()
}

fn starts(regex: &Regex, text: &str) -> bool {
    regex.find(text).is_some_and(|m| m.start() == 0)
}

/// Compiled plans by region, filled on first use; `None` for a region whose patterns would not compile.
/// Keyed by the metadata's address in the library's static database: every non-geographic code (+800,
/// +882, ...) has its own metadata under the same id, "001".
static PLANS: RwLock<Option<HashMap<usize, Option<Arc<Plan>>>>> = RwLock::new(None);

fn plan_of(meta: &'static Metadata) -> Option<Arc<Plan>> {
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

fn address(meta: &'static Metadata) -> usize {
    std::ptr::from_ref(meta) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An example national number and numbers near it: a digit less, two digits more, three other leading
    /// digits, the last digit changed. Near misses are where validators disagree.
    fn around(example: &str) -> Vec<String> {
        let mut near = vec![
            example.to_owned(),
            example[..example.len() - 1].to_owned(),
            format!("{example}0"),
            format!("{example}7"),
        ];
        for digit in ['1', '5', '9'] {
            near.push(format!("{digit}{}", &example[1..]));
        }
        let last = example.as_bytes()[example.len() - 1];
        near.push(format!(
            "{}{}",
            &example[..example.len() - 1],
            char::from(b'0' + (last - b'0' + 3) % 10)
        ));
        near
    }

    #[test]
    fn answers_as_the_library_does_for_every_region() {
        let (mut checked, mut valid) = (0, 0);
        for code in 1..=999u16 {
            for meta in DATABASE.by_code(&code).unwrap_or_default() {
                let d = meta.descriptors();
                let kinds = [
                    Some(d.general()),
                    d.fixed_line(),
                    d.mobile(),
                    d.toll_free(),
                    d.premium_rate(),
                    d.shared_cost(),
                    d.personal_number(),
                    d.voip(),
                    d.pager(),
                    d.uan(),
                    d.voicemail(),
                ];
                let examples = kinds.into_iter().flatten().filter_map(Descriptor::example);
                for national in examples.filter(|e| e.len() > 1).flat_map(around) {
                    let text = format!("+{code}{national}");
                    let Ok(number) = phonenumber::parse(None, &text) else {
                        continue;
                    };
                    let expected = phonenumber::is_valid(&number);
                    assert_eq!(judge(&number), Some(expected), "{text}");
                    checked += 1;
                    valid += usize::from(expected);
                }
            }
        }
        // Enough of both answers, in every region, for the comparison to mean something.
        assert!(
            checked > 8_000 && valid > 3_000 && checked - valid > 3_000,
            "{checked} numbers checked, {valid} valid"
        );
    }
}
