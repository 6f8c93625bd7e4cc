#!/usr/bin/env python3
"""Build the phone-number test fixture phonenumbers.tsv, judged by the Python `phonenumbers` package.

Run with the phonenumbers version whose data assets/numbering/PhoneNumberMetadata.xml holds (its first line
names it), so that both read numbers with the same numbering plans and only the reading is compared:

    pip install phonenumbers==VERSION   # in a virtualenv of your choice
    python3 tests/data/make_phonenumbers_fixture.py [OUTDIR]

Standard library + phonenumbers only; deterministic (every random choice uses a string-seeded
random.Random, which does not depend on PYTHONHASHSEED).

Output (OUTDIR defaults to this script's directory):
  phonenumbers.tsv               line 1: '# ...' header (version, command, format); then one case a line:
                                 REGION <TAB> INPUT as a JSON string literal (ASCII only) <TAB> EXPECTED
                                 EXPECTED = E.164 if parse(INPUT, REGION) succeeds and is_valid_number(),
                                 '-' if parse raises NumberParseException or the number is invalid.
  phonenumbers.cats.tsv          the same cases in the same order as CATEGORY:SUB <TAB> REGION <TAB> INPUT
                                 (why each case is there; not needed by the test).
Statistics go to stderr.
"""
import collections
import json
import os
import random
import re
import sys

import phonenumbers as pn
from phonenumbers import PhoneNumberFormat as F, PhoneNumberType as T

# The version of the numbering plans modemgate bundles (assets/numbering/make_metadata.py writes it there).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "assets", "numbering",
                       "PhoneNumberMetadata.xml"), encoding="utf-8") as _bundled:
    WANT_VERSION = re.search(r"version (\S+) ", _bundled.readline()).group(1)
REGIONS = ["US", "GB", "DE", "FR", "IN", "BR", "MX", "AU", "ES", "IT", "RU", "AR", "ZA", "NG", "CA"]
# how each default region dials abroad (a usable spelling of its international prefix)
IDD = {"US": "011", "CA": "011", "GB": "00", "DE": "00", "FR": "00", "IN": "00", "BR": "0015", "MX": "00",
       "AU": "0011", "ES": "00", "IT": "00", "RU": "810", "AR": "00", "ZA": "00", "NG": "009"}
TYPES = [T.FIXED_LINE, T.MOBILE, T.TOLL_FREE, T.PREMIUM_RATE, T.SHARED_COST, T.VOIP,
         T.PERSONAL_NUMBER, T.PAGER, T.UAN, T.VOICEMAIL]
TNAME = {v: k for k, v in vars(T).items() if k.isupper()}
FULLWIDTH = str.maketrans("0123456789+", "０１２３４５６７８９＋")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
DEVANAGARI = str.maketrans("0123456789", "०१२३४५६७८९")
ALL_REGIONS = sorted(pn.SUPPORTED_REGIONS)
NONGEO = sorted(pn.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
# the spots a letter can stand for (keypad), used to write vanity numbers
KEYPAD = {"2": "ABC", "3": "DEF", "4": "GHI", "5": "JKL", "6": "MNO", "7": "PQRS", "8": "TUV", "9": "WXYZ"}

# Disagreement categories found by the earlier differential run (daemon vs libphonenumber), each of which
# gets a quota per region; then the "ordinary" categories where the two already agreed.
QUOTA = {
    "other_cc_trunk": 14, "own_trunk": 10, "nsn_starts_with_cc": 8, "prefix_only_validity": 10,
    "fullwidth": 8, "rfc3966_tel": 10, "nbsp_separators": 8, "letters_vanity": 10, "extensions": 16,
    "example_core": 1000, "example_forms": 60, "random": 90, "other_country": 80, "mutated": 24, "misc": 26,
}
# e.g. RU 8 800 ... (national number starting with the trunk prefix '8'), IT 06 ... (no trunk prefix, NSN '0...')
KEEP_ALL = {"nsn_starts_with_trunk", "random_nsn_starts_with_trunk", "national_keeps_cc_digits"}
ALL_CC_REGIONS = ["US", "DE", "RU"]  # every calling code's example number (E.164 + last digit mutated)

MISC = ["1-800-FLOWERS", "1800FLOWERS", "+1 800 FLOWERS", "800-FLOWERS", "1-800-GOT-JUNK",
        "1 (800) MATTRES", "0800-FLOWERS", "0800 CALLNOW", "+44 800 FLOWERS", "+49 800 FLOWERS1",
        "+1-800-flowers", "1-800-FLOWERS x12", "+61 1300 FLOWER", "call 1-800-FLOWERS",
        "ABC", "+1 ABCDEFGHIJ", "0", "+", "", "++14155552671", "+ 1 415 555 2671",
        "+1 415 555 2671 +1", "415-555-2671 / 415-555-2672", "(415) 555-2671", "tel:",
        "+1415555267a", "1 415 555 2671", "+1-415-555-2671", "001-415-555-2671",
        "011-44-20-7946-0958", "+44 020 7946 0958", "+44 (0)20 7946 0958", "0044 20 7946 0958",
        "+49 (0)30 123456", "0049 30 901820", "+91 98765 43210", "+91 098765 43210",
        "+55 11 91234-5678", "+55 (11) 91234-5678", "+55 0 11 91234 5678", "055 11 91234 5678",
        "0 11 91234 5678", "+54 9 11 1234 5678", "+54 11 1234 5678", "+54 9 11 15 1234 5678",
        "011 15 1234 5678", "11 15 1234 5678", "+52 1 55 1234 5678", "+52 55 1234 5678",
        "044 55 1234 5678", "045 55 1234 5678", "01 55 1234 5678", "+7 8 912 345 6789",
        "8 912 345 6789", "8 10 44 20 7946 0958", "+27 0 82 123 4567", "+234 0 803 123 4567",
        "+61 (0) 412 345 678", "+33 (0)6 12 34 56 78", "+34 612 34 56 78", "+39 06 1234 5678",
        "+39 312 345 6789", "+39 0 312 345 6789", "+1 (0) 415 555 2671",
        "   ", "+0", "+00", "+999 123 456 789", "123", "12345", "+1 2", "(", "--", "+ABC",
        "tel:+", "tel:;ext=1", "#123", "x123", "+1 x123", "112", "911", "999", "000",
        "1" * 17, "9" * 30, "+" + "1" * 17, "+" + "9" * 250]

NON_NPE = []  # (region, input, repr(exception)) for anything other than NumberParseException


# ---------------------------------------------------------------------------------------------- helpers
def e164(n):
    return pn.format_number(n, F.E164)


def judge(s, region):
    try:
        n = pn.parse(s, region)
    except pn.NumberParseException:
        return None
    except Exception as exc:  # must not happen; reported
        NON_NPE.append((region, s, repr(exc)))
        return None
    try:
        return e164(n) if pn.is_valid_number(n) else None
    except Exception as exc:
        NON_NPE.append((region, s, repr(exc)))
        return None


def parse_or_none(s, region):
    try:
        return pn.parse(s, region)
    except pn.NumberParseException:
        return None


def meta(region):
    return pn.PhoneMetadata.metadata_for_region(region)


def examples(region, types=TYPES):
    out = []
    for t in types:
        n = pn.example_number_for_type(region, t)
        if n is not None:
            out.append((TNAME[t], n))
    return out


def nsn_of(n):
    return pn.national_significant_number(n)


def rdigits(rng, k):
    return "".join(rng.choice("0123456789") for _ in range(k))


def possible_lengths(region):
    return sorted(set(meta(region).general_desc.possible_length or [])) or [10]


# Validity as a PREFIX match of the type patterns (what the Rust crate's is_valid did in the earlier run):
# used only to pick inputs that separate full-match from prefix-match validation.
_PTYPES = ["premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan",
           "voicemail", "fixed_line", "mobile"]


def _desc_match(desc, nsn):
    if desc is None or desc.national_number_pattern is None:
        return False
    lengths = desc.possible_length or ()
    if lengths and len(nsn) not in lengths:
        return False
    return re.match(desc.national_number_pattern, nsn) is not None


def prefix_valid(n):
    nsn = nsn_of(n)
    regions = pn.region_codes_for_country_code(n.country_code)
    if regions == ("001",):
        m = pn.PhoneMetadata.metadata_for_nongeo_region(n.country_code)
    else:
        m = None
        for r in regions:
            mr = meta(r)
            if mr is None:
                continue
            if mr.leading_digits:
                if re.match(mr.leading_digits, nsn):
                    m = mr
                    break
            elif any(_desc_match(getattr(mr, t), nsn) for t in _PTYPES) and _desc_match(mr.general_desc, nsn):
                return True
        else:
            return False
    if m is None:
        return False
    return _desc_match(m.general_desc, nsn) and any(_desc_match(getattr(m, t), nsn) for t in _PTYPES)


def prefix_only(s, region):
    n = parse_or_none(s, region)
    return n is not None and not pn.is_valid_number(n) and prefix_valid(n)


# ---------------------------------------------------------------------------------------------- forms
def forms(region, n):
    """The spellings of number n used by the earlier run (gen.py), as (form, text)."""
    cc = str(n.country_code)
    nsn = nsn_of(n)
    intl = pn.format_number(n, F.INTERNATIONAL)
    nat = pn.format_number(n, F.NATIONAL)
    prefix = meta(region).national_prefix or ""
    parts = intl.split(" ")
    out = [("e164", e164(n)), ("intl_spaces", intl), ("intl_dashes", intl.replace(" ", "-")),
           ("intl_dots", intl.replace(" ", ".")), ("intl_nosep_after_cc", "+" + cc + " " + nsn)]
    if len(parts) >= 3:
        out.append(("intl_parens", f"{parts[0]} ({parts[1]}) {' '.join(parts[2:])}"))
    out += [("national_fmt", nat), ("national_fmt_dashes", nat.replace(" ", "-")),
            ("national_fmt_dots", nat.replace(" ", ".").replace("(", "").replace(")", "")),
            ("nsn_digits", nsn)]
    if prefix:
        out += [("prefix+nsn", prefix + nsn), ("prefix+nsn_spaced", prefix + " " + nsn)]
    out += [("idd00", "00" + cc + nsn), ("idd00_spaced", "00 " + cc + " " + nsn), ("idd011", "011" + cc + nsn),
            ("idd_region", IDD[region] + " " + cc + " " + nsn),
            ("plus_idd00", "+00" + cc + nsn), ("plus_idd011", "+011" + cc + nsn),
            ("ws_lead_trail", "  " + e164(n) + " "), ("ws_tab_nl", "\t" + nat + "\n"),
            ("short_e164", e164(n)[:-1]), ("short_nsn", nsn[:-1]), ("short_national_fmt", nat[:-1])]
    return out


# ------------------------------------------------------------------------------ disagreement categories
def gen_other_cc_trunk(region, rng):
    """Other countries' numbers written with +CC / IDD where a trunk prefix is involved: the dialled
    country's national number starts with the DEFAULT region's trunk prefix (must not be stripped),
    '+CC (0) NSN' spellings of the dialled country's own trunk prefix, and dialled numbers whose national
    number starts with the dialled country's own trunk prefix (e.g. +7 800, +375 8...)."""
    P = meta(region).national_prefix
    own_cc = meta(region).country_code
    out = []
    for other in ALL_REGIONS:
        if other == region:
            continue
        om = meta(other)
        for tname, n in examples(other):
            if n.country_code == own_cc:
                continue
            cc, nsn = str(n.country_code), nsn_of(n)
            intl = pn.format_number(n, F.INTERNATIONAL)
            if P and nsn.startswith(P):
                out.append(("nsn_starts_with_default_prefix", rng.choice(
                    [e164(n), intl, IDD[region] + cc + nsn, f"{IDD[region]} {intl[1:]}"])))
            if om.national_prefix and nsn.startswith(om.national_prefix):
                out.append(("nsn_starts_with_dialled_prefix", rng.choice([e164(n), intl, IDD[region] + cc + nsn])))
            if tname in ("MOBILE", "FIXED_LINE") and om.national_prefix:
                tp = om.national_prefix
                out.append(("plus_cc_dialled_trunk", rng.choice(
                    [f"+{cc} ({tp}) {nsn}", f"+{cc}{tp}{nsn}", f"+{cc} {tp} {nsn}",
                     f"{IDD[region]}{cc}{tp}{nsn}", f"{IDD[region]} {cc} ({tp}) {nsn}"])))
            if tname == "MOBILE" and not om.national_prefix:
                out.append(("plus_cc_0_no_trunk", rng.choice([f"+{cc} (0) {nsn}", f"+{cc}0{nsn}"])))
    for _ in range(300):  # random +CC numbers of other countries whose NSN starts with the default prefix
        if not P:
            break
        other = rng.choice(ALL_REGIONS)
        occ = pn.country_code_for_region(other)
        if occ == own_cc:
            continue
        L = rng.choice(possible_lengths(other))
        if L <= len(P):
            continue
        s = f"+{occ}{P}{rdigits(rng, L - len(P))}"
        if judge(s, region) or rng.random() < 0.2:
            out.append(("random_nsn_starts_with_default_prefix", s))
    return out


def gen_own_trunk(region, rng):
    """The default region's own trunk prefix: national numbers that begin with the trunk prefix digits
    (must not be stripped twice), doubled trunk prefixes, '+CC (0)'/'+CC 0' spellings of the region's
    own numbers, and trunk-prefixed random numbers."""
    m = meta(region)
    P = m.national_prefix
    cc = str(m.country_code)
    out = []
    for tname, n in examples(region):
        nsn, nat = nsn_of(n), pn.format_number(n, F.NATIONAL)
        tp = P or "0"
        out.append(("plus_cc_trunk", rng.choice([f"+{cc} ({tp}) {nsn}", f"+{cc}{tp}{nsn}", f"+{cc} {tp} {nsn}",
                                                  f"+{cc} ({tp}){nat.lstrip(tp) if nat.startswith(tp) else nat}"])))
        if P:
            out.append(("double_trunk", rng.choice([P + P + nsn, f"{P} {P}{nsn}", P + P + " " + nat.lstrip(P)])))
            if nsn.startswith(P):
                for s in (nsn, P + nsn, nat, "+" + cc + nsn, "+" + cc + " " + nsn, "tel:+" + cc + nsn):
                    out.append(("nsn_starts_with_trunk", s))
        else:
            out.append(("zero_before_nsn", "0" + nsn))
    # random valid numbers of the region whose national number starts with the trunk prefix
    # (or with '0' where there is no trunk prefix), in national / trunk-prefixed / +CC form
    tp = P or "0"
    found = 0
    for _ in range(20000):
        if found >= 8:
            break
        L = rng.choice(possible_lengths(region))
        nsn = tp + rdigits(rng, L - len(tp))
        n = parse_or_none("+" + cc + nsn, None)
        if n is None or not pn.is_valid_number(n) or nsn_of(n) != nsn:
            continue
        found += 1
        out.append(("random_nsn_starts_with_trunk", rng.choice([nsn, tp + nsn, "+" + cc + nsn, tp + " " + nsn])))
    for _ in range(12):  # trunk prefix + random digits; doubled trunk prefix + random digits
        L = rng.choice(possible_lengths(region))
        out.append(("random_trunk_prefixed", tp + rdigits(rng, L)))
        out.append(("random_double_trunk", tp + tp + rdigits(rng, max(L - len(tp), 4))))
    return out


def gen_nsn_starts_with_cc(region, rng):
    """National numbers whose first digits equal the region's country code (must be read as national),
    and CC+NSN written without '+'."""
    m = meta(region)
    cc = str(m.country_code)
    out = []
    for tname, n in examples(region):
        out.append(("cc+nsn_noplus", cc + nsn_of(n)))
        out.append(("cc+nsn_noplus_spaced", cc + " " + pn.format_number(n, F.NATIONAL).lstrip(m.national_prefix or "")))
    caps = {"national_keeps_cc_digits": 8, "national_strips_cc": 4, "valid_only_with_plus": 8, "neither": 3}
    found = collections.defaultdict(list)
    for _ in range(30000):
        if all(len(found[k]) >= v for k, v in caps.items()):
            break
        L = rng.choice(possible_lengths(region) + [len(cc) + x for x in possible_lengths(region)])
        if L <= len(cc):
            continue
        s = cc + rdigits(rng, L - len(cc))
        a, b = judge(s, region), judge("+" + s, region)
        if a == "+" + cc + s:  # libphonenumber reads the CC digits as part of the national number
            tag = "national_keeps_cc_digits"
        elif a:
            tag = "national_strips_cc"
        elif b:
            tag = "valid_only_with_plus"
        else:
            tag = "neither"
        if len(found[tag]) < caps[tag]:
            found[tag].append((tag, s))
    return out + [x for k in caps for x in found[k]]


def gen_prefix_only_validity(region, rng):
    """Numbers valid only if a type pattern is allowed to match a PREFIX of the national number
    (over-long example numbers, unassigned ranges): libphonenumber refuses all of them."""
    m = meta(region)
    cc = str(m.country_code)
    P = m.national_prefix or ""
    out = []
    for tname, n in examples(region):
        nsn = nsn_of(n)
        for extra in (rdigits(rng, 1), rdigits(rng, 2), rdigits(rng, 3)):
            long_nsn = nsn + extra
            cand = rng.choice(["+" + cc + long_nsn, long_nsn, P + long_nsn,
                               pn.format_number(n, F.NATIONAL) + extra, pn.format_number(n, F.INTERNATIONAL) + extra])
            out.append(("long_example" if prefix_only(cand, region) else "long_example_not_prefix_valid", cand))
    found = collections.Counter()
    for _ in range(40000):
        if found["random_own"] >= 12 and found["random_other_cc"] >= 6:
            break
        if rng.random() < 0.7:
            L = rng.choice(possible_lengths(region))
            nsn = rdigits(rng, L)
            s, tag = rng.choice(["+" + cc + nsn, P + nsn if P else nsn, nsn]), "random_own"
        else:
            other = rng.choice(ALL_REGIONS)
            L = rng.choice(possible_lengths(other))
            s, tag = f"+{pn.country_code_for_region(other)}{rdigits(rng, L)}", "random_other_cc"
        if found[tag] < 12 and prefix_only(s, region):
            found[tag] += 1
            out.append((tag, s))
    return out


def gen_fullwidth(region, rng):
    """Full-width digits and plus sign (also Arabic-Indic and Devanagari digits, and mixed widths)."""
    out = []
    for tname, n in examples(region):
        intl, nat = pn.format_number(n, F.INTERNATIONAL), pn.format_number(n, F.NATIONAL)
        out.append(("e164", e164(n).translate(FULLWIDTH)))
        out.append(("e164_ascii_plus", "+" + e164(n)[1:].translate(FULLWIDTH)))
        out.append(("intl", intl.translate(FULLWIDTH)))
        out.append(("national", nat.translate(FULLWIDTH)))
        k = len(nat) // 2
        out.append(("mixed_width", nat[:k] + nat[k:].translate(FULLWIDTH)))
        out.append(("arabic_indic", e164(n)[0] + e164(n)[1:].translate(ARABIC_INDIC)))
        out.append(("devanagari", nat.translate(DEVANAGARI)))
        out.append(("long_fullwidth", (e164(n) + "7").translate(FULLWIDTH)))
    return out


def gen_rfc3966(region, rng):
    """RFC 3966 forms: ';ext=' and ';isub=' after an unseparated or formatted number, tel: URIs,
    phone-context (global and domain), malformed URIs."""
    cc = str(meta(region).country_code)
    out = []
    for tname, n in examples(region):
        E, nsn = e164(n), nsn_of(n)
        intl, nat = pn.format_number(n, F.INTERNATIONAL), pn.format_number(n, F.NATIONAL)
        x = str(rng.randint(1, 99999))
        out += [("e164;ext", f"{E};ext={x}"), ("tel:e164;ext", f"tel:{E};ext={x}"),
                ("e164;isub", f"{E};isub={x}"), ("tel:e164;isub", f"tel:{E};isub={x}"),
                ("tel:e164", rng.choice([f"tel:{E}", f"TEL:{E}", f"tel:{intl.replace(' ', '-')}"])),
                ("intl;ext", f"{intl.replace(' ', '-')};ext={x}"),
                ("national;ext", f"{nat};ext={x}"),
                ("tel:context", f"tel:{nsn};phone-context=+{cc}"),
                ("tel:context;ext", f"tel:{nsn};ext={x};phone-context=+{cc}"),
                ("tel:domain_context", f"tel:{nsn};phone-context=example.com"),
                ("tel:bad_context", rng.choice([f"tel:{nsn};phone-context=", f"tel:{nsn};phone-context=+",
                                                f"tel:{nsn};phone-context=+{cc}x"])),
                ("tel:isub;ext", f"tel:{E};isub=12;ext={x}"),
                ("ext_too_long", f"{E};ext={rdigits(rng, 21)}")]
    return out


def gen_nbsp(region, rng):
    """No-break space (U+00A0) and other Unicode spaces, alone or mixed with '-', '.', '/', parentheses."""
    out = []
    for tname, n in examples(region):
        intl, nat = pn.format_number(n, F.INTERNATIONAL), pn.format_number(n, F.NATIONAL)
        out += [("intl_nbsp_for_spaces", intl.replace(" ", "\u00a0")),
                ("national_nbsp_for_spaces", nat.replace(" ", "\u00a0")),
                ("nbsp_and_dashes", intl.replace(" ", "\u00a0-", 1).replace(" ", "-")),
                ("nbsp_and_dots", intl.replace(" ", ".").replace(".", "\u00a0", 1)),
                ("nbsp_edges", "\u00a0" + nat + "\u00a0"),
                ("nbsp_paren", nat.replace(") ", ")\u00a0").replace(" ", "-")),
                ("other_unicode_space", intl.replace(" ", rng.choice(["\u2007", "\u2009", "\u202f", "\u3000",
                                                                      "\u200b", "\u2060", "\u00ad"])))]
    return out


def vanity(digits, rng, k):
    """Replace the last k keypad digits (2-9) of `digits` by letters."""
    out, left = list(digits), k
    for i in range(len(out) - 1, -1, -1):
        if left == 0:
            break
        if out[i] in KEYPAD:
            out[i] = rng.choice(KEYPAD[out[i]])
            left -= 1
    return "".join(out) if left == 0 else None


def gen_letters(region, rng):
    """Letters in the number: 1-2 letters (not converted by libphonenumber: dropped or refused) vs
    3+ letters (vanity: converted by the keypad), lower/upper case, trailing letters, Cyrillic."""
    out = []
    for tname, n in examples(region):
        nsn, E = nsn_of(n), e164(n)
        cc = str(n.country_code)
        nat = pn.format_number(n, F.NATIONAL)
        for k, tag in ((1, "1_letter"), (2, "2_letters"), (3, "3_letters"), (rng.randint(4, 7), "4+_letters")):
            v = vanity(nsn, rng, k)
            if v is None:
                continue
            v = v.lower() if rng.random() < 0.3 else v
            out.append((tag, rng.choice(["+" + cc + v, "+" + cc + " " + v, v, (meta(region).national_prefix or "") + v])))
        out.append(("trailing_letter", E + rng.choice("abcXYZ")))
        out.append(("trailing_2_letters", nat + " " + rng.choice(["ab", "XY", "Qz"])))
        out.append(("inner_letter", E[:-3] + rng.choice("ABCDEFGH") + E[-3:]))
        out.append(("cyrillic", rng.choice([E[:-1] + "\u041e", nat + " \u0434\u043e\u043c",  # 'О', ' дом'
                                            "\u0442\u0435\u043b " + E, E[:-2] + "\u0437\u0437\u0437"])))
    return out


EXT_STYLES = [("x", " x{}"), ("x_nospace", "x{}"), ("X", " X {}"), ("ext", " ext {}"), ("ext.", " ext. {}"),
              ("ext:", " ext:{}"), ("extn", " extn {}"), ("extension", " extension {}"),
              ("extension_accent", " extensi\u00f3n {}"), ("fullwidth_ext", " \uff45\uff58\uff54 {}"),
              ("dob", " \u0434\u043e\u0431 {}"), ("anexo", " anexo {}"), ("hash", " #{}"), ("hash_trailing", " #{}#"),
              ("fullwidth_hash", " \uff03{}"), ("tilde", " ~{}"), ("int", " int {}"), ("comma", ", {}"),
              ("double_comma", ",,{}"), ("semicolon", ";{}"), ("dash_hash", " - {}#"), ("ext_dash", " ext-{}"),
              ("rfc", ";ext={}")]


def gen_extensions(region, rng):
    """Extensions in every style libphonenumber knows, after E.164 / international / national spellings,
    with lengths around each style's limit (20 explicit, 9 ambiguous, 6 for 'N#', 15 for ',,' / ';')."""
    out = []
    exs = examples(region)
    for style, fmt in EXT_STYLES:
        tname, n = rng.choice(exs)
        base = rng.choice([e164(n), pn.format_number(n, F.INTERNATIONAL), pn.format_number(n, F.NATIONAL)])
        L = rng.choice([1, 3, 4, 6, 7, 9, 10, 15, 16, 20, 21])
        out.append((style, base + fmt.format(rdigits(rng, L))))
    return out


# ------------------------------------------------------------------------------------ ordinary categories
CORE_FORMS = ("e164", "intl_spaces", "national_fmt", "nsn_digits")


def gen_example_core(region, rng):
    """Every type's example number as E.164, international, national and digits only (all kept)."""
    return [(f"{tname}:{form}", s) for tname, n in examples(region) for form, s in forms(region, n)
            if form in CORE_FORMS]


def gen_example_forms(region, rng):
    """A sample of the other spellings of the example numbers."""
    return [(f"{tname}:{form}", s) for tname, n in examples(region) for form, s in forms(region, n)
            if form not in CORE_FORMS]


def gen_random(region, rng):
    m = meta(region)
    cc = str(m.country_code)
    out = []
    for _ in range(60):
        out.append(("digits", rdigits(rng, rng.randint(5, 16))))
        out.append(("plus", "+" + str(rng.randint(1, 9)) + rdigits(rng, rng.randint(5, 15))))
        out.append(("prefixed", (m.national_prefix or "") + rdigits(rng, rng.randint(6, 12))))
        out.append(("own_cc", f"+{cc}" + rdigits(rng, rng.randint(6, 12))))
    # random numbers of the region's possible lengths (a good share of them valid)
    for _ in range(60):
        L = rng.choice(possible_lengths(region))
        nsn = rdigits(rng, L)
        out.append(("possible_length", rng.choice([nsn, "+" + cc + nsn, (m.national_prefix or "") + nsn])))
    return out


def gen_other_country(region, rng):
    """Numbers of other countries (all types) written with '+', with 00, with 011 and with the region's IDD."""
    out = []
    for other in ALL_REGIONS:
        if other == region:
            continue
        for tname, n in examples(other, [T.MOBILE, T.FIXED_LINE, T.TOLL_FREE]):
            cc, nsn = str(n.country_code), nsn_of(n)
            intl = pn.format_number(n, F.INTERNATIONAL)
            tag = tname if tname != "TOLL_FREE" else "TOLL_FREE"
            out += [(f"{tag}:e164", e164(n)), (f"{tag}:intl", intl), (f"{tag}:idd00", "00" + cc + nsn),
                    (f"{tag}:idd011", "011 " + intl[1:]), (f"{tag}:idd_region", IDD[region] + cc + nsn),
                    (f"{tag}:idd_region_fmt", IDD[region] + " " + intl[1:])]
    for code in NONGEO:
        n = pn.example_number_for_non_geo_entity(code)
        if n is not None:
            out += [("nongeo:e164", e164(n)), ("nongeo:intl", pn.format_number(n, F.INTERNATIONAL)),
                    ("nongeo:idd_region", IDD[region] + str(code) + nsn_of(n))]
    return out


def gen_mutated(region, rng):
    m = meta(region)
    out = []
    for tname, n in examples(region, [T.MOBILE, T.FIXED_LINE, T.TOLL_FREE]):
        nsn = nsn_of(n)
        for i in range(len(nsn)):
            for d in rng.sample([d for d in "0123456789" if d != nsn[i]], 3):
                mm = nsn[:i] + d + nsn[i + 1:]
                out.append((f"{tname}:e164", f"+{n.country_code}{mm}"))
                out.append((f"{tname}:nsn", mm))
                if m.national_prefix:
                    out.append((f"{tname}:prefix", m.national_prefix + mm))
    return out


def gen_misc(region, rng):
    return [("misc", s) for s in MISC]


def all_cc_examples():
    """One example number per supported region and non-geographic entity (covers every calling code)."""
    out = []
    for r in ALL_REGIONS:
        n = pn.example_number(r)
        if n is None:
            n = next((x for _, x in examples(r)), None)
        if n is not None:
            out.append((r, n))
    for code in NONGEO:
        n = pn.example_number_for_non_geo_entity(code)
        if n is not None:
            out.append((f"001/{code}", n))
    return out


def gen_all_cc(region, rng):
    """E.164 and last-digit-mutated E.164 of every example; every third one also truncated by a digit."""
    out = []
    for i, (src, n) in enumerate(all_cc_examples()):
        E = e164(n)
        last = str((int(E[-1]) + rng.randint(1, 9)) % 10)
        out.append(("e164", E))
        out.append(("e164_last_digit_mutated", E[:-1] + last))
        if i % len(ALL_CC_REGIONS) == ALL_CC_REGIONS.index(region):
            out.append(("e164_truncated", E[:-1]))
    return out


GENERATORS = [("other_cc_trunk", gen_other_cc_trunk), ("own_trunk", gen_own_trunk),
              ("nsn_starts_with_cc", gen_nsn_starts_with_cc), ("prefix_only_validity", gen_prefix_only_validity),
              ("fullwidth", gen_fullwidth), ("rfc3966_tel", gen_rfc3966), ("nbsp_separators", gen_nbsp),
              ("letters_vanity", gen_letters), ("extensions", gen_extensions),
              ("example_core", gen_example_core),
              ("example_forms", gen_example_forms), ("random", gen_random), ("other_country", gen_other_country),
              ("mutated", gen_mutated), ("misc", gen_misc)]


def stratified(items, k, rng):
    """k items, spread evenly over the sub-categories (round robin over shuffled groups)."""
    groups = collections.OrderedDict()
    for it in items:
        groups.setdefault(it[0], []).append(it)
    for g in groups.values():
        rng.shuffle(g)
    order = list(groups)
    rng.shuffle(order)  # so that with fewer picks than sub-categories, each region gets a different subset
    groups = collections.OrderedDict((key, groups[key]) for key in order)
    out = []
    while len(out) < k and any(groups.values()):
        for g in groups.values():
            if g and len(out) < k:
                out.append(g.pop())
    return out


def main():
    args = [a for a in sys.argv[1:] if a != "-v"]
    outdir = args[0] if args else os.path.dirname(os.path.abspath(__file__))
    if pn.__version__ != WANT_VERSION:
        sys.exit(f"phonenumbers {pn.__version__} found, {WANT_VERSION} wanted (pip install phonenumbers=={WANT_VERSION})")
    cases, seen = [], set()
    for region in REGIONS:
        plan = ([("all_cc", gen_all_cc)] if region in ALL_CC_REGIONS else []) + list(GENERATORS)
        for cat, gen in plan:
            rng = random.Random(f"fixture-{region}-{cat}")
            pool, pool_seen = [], set()
            for sub, s in gen(region, rng):
                if s not in pool_seen and (region, s) not in seen:
                    pool_seen.add(s)
                    pool.append((sub, s))
            if cat == "all_cc":
                picked = pool
            else:  # KEEP_ALL sub-categories are rare, region-specific and important: all kept, beyond the quota
                picked = [x for x in pool if x[0] in KEEP_ALL]
                picked += stratified([x for x in pool if x[0] not in KEEP_ALL], QUOTA[cat], rng)
            for sub, s in picked:
                seen.add((region, s))
                cases.append((region, f"{cat}:{sub}", s))
    base = "phonenumbers"
    cmd = "python3 tests/data/make_phonenumbers_fixture.py"
    stats, substats = collections.Counter(), collections.Counter()
    with open(os.path.join(outdir, base + ".tsv"), "w", encoding="ascii", newline="\n") as f, \
            open(os.path.join(outdir, base + ".cats.tsv"), "w", encoding="ascii", newline="\n") as c:
        f.write(f"# phonenumbers {pn.__version__}; generated by: {cmd}; format: REGION<TAB>INPUT (JSON string)"
                f"<TAB>EXPECTED (E.164 if phonenumbers.parse(INPUT, REGION) is_valid_number, else -)\n")
        for region, cat, s in cases:
            exp = judge(s, region)
            lit = json.dumps(s, ensure_ascii=True)
            assert "\t" not in lit and "\n" not in lit
            f.write(f"{region}\t{lit}\t{exp or '-'}\n")
            c.write(f"{cat}\t{region}\t{lit}\n")
            top = cat.split(":")[0]
            stats[(top, bool(exp))] += 1
            sub = cat.split(":", 1)[1] if top not in ("example_core", "example_forms", "mutated", "other_country") \
                else cat.split(":")[-1]
            substats[(top, sub, bool(exp))] += 1
            substats[(top, sub)] += 0
    print(f"cases {len(cases)}  accepted {sum(v for (k, a), v in stats.items() if a)}  "
          f"refused {sum(v for (k, a), v in stats.items() if not a)}", file=sys.stderr)
    for cat in [g for g, _ in GENERATORS] + ["all_cc"]:
        a, r = stats[(cat, True)], stats[(cat, False)]
        print(f"  {cat:22s} {a + r:5d}  accepted {a:5d}  refused {r:5d}", file=sys.stderr)
        if "-v" in sys.argv[1:]:
            for sub in sorted({k[1] for k in substats if k[0] == cat}):
                print(f"      {sub:40s} {substats[(cat, sub, True)]:4d} {substats[(cat, sub, False)]:4d}",
                      file=sys.stderr)
    ccs = {pn.parse(s, None).country_code for reg, cat, s in cases if cat.startswith("all_cc:") and s.startswith("+")}
    print(f"calling codes covered by all_cc: {len(ccs)} of {len(pn.COUNTRY_CODE_TO_REGION_CODE)}", file=sys.stderr)
    print(f"non-NumberParseException exceptions: {len(NON_NPE)}", file=sys.stderr)
    for x in NON_NPE:
        print("  ", x, file=sys.stderr)


if __name__ == "__main__":
    main()
