#!/usr/bin/env python3
"""Write PhoneNumberMetadata.xml (libphonenumber's numbering plans) from the Python port `phonenumbers`.

The `phonenumber` crate bundles libphonenumber's data as of its own release (9.0.33); numbering plans change
every few weeks (new area codes, new mobile ranges), and a number in a range the data does not know is
refused. This regenerates the data modemgate reads, in the XML form the crate's loader parses, from the newest
`phonenumbers` on PyPI (a faithful port, shipping the same data as libphonenumber's release of the same
version):

    pip install phonenumbers==VERSION          # in a virtualenv of your choice
    python3 assets/numbering/make_metadata.py  # writes assets/numbering/PhoneNumberMetadata.xml

Then regenerate tests/data's fixture with the same version (tests/data/make_phonenumbers_fixture.py) and run
`cargo test --test numbers`. Only what parsing and validation use is written: territories' prefixes and
flags and each number type's pattern and lengths (no formats). Standard library + phonenumbers only;
the output is deterministic for a given phonenumbers version.
"""
import os
import re
import sys
from xml.sax.saxutils import escape, quoteattr

import phonenumbers as pn
from phonenumbers import PhoneMetadata

# The element the crate's loader expects for each number type, and the Python attribute holding it.
TYPES = [
    ("generalDesc", "general_desc"),
    ("fixedLine", "fixed_line"),
    ("mobile", "mobile"),
    ("pager", "pager"),
    ("tollFree", "toll_free"),
    ("premiumRate", "premium_rate"),
    ("sharedCost", "shared_cost"),
    ("personalNumber", "personal_number"),
    ("voip", "voip"),
    ("uan", "uan"),
    ("voicemail", "voicemail"),
    ("noInternationalDialling", "no_international_dialling"),
]


def lengths(values):
    return ",".join(str(v) for v in values)


def descriptor(element, desc, required):
    if desc is None or desc.national_number_pattern is None:
        if required:
            sys.exit(f"a territory without {element}")
        return ""
    national = tuple(desc.possible_length or ())
    if national == (-1,) and not required:
        return ""  # not applicable in this territory
    out = [f"      <{element}>"]
    attrs = []
    if national and national != (-1,):
        attrs.append(f"national={quoteattr(lengths(national))}")
    if desc.possible_length_local_only:
        attrs.append(f"localOnly={quoteattr(lengths(desc.possible_length_local_only))}")
    if attrs:
        out.append(f"<possibleLengths {' '.join(attrs)}/>")
    if desc.example_number:
        out.append(f"<exampleNumber>{escape(desc.example_number)}</exampleNumber>")
    out.append(f"<nationalNumberPattern>{escape(desc.national_number_pattern)}</nationalNumberPattern>")
    out.append(f"</{element}>\n")
    return "".join(out)


def java_replacement(rule):
    """Python's `\\1` group references back to Java's `$1`, as in libphonenumber's own XML."""
    return re.sub(r"\\(\d)", r"$\1", rule)


def territory(meta):
    attrs = [("id", meta.id), ("countryCode", str(meta.country_code))]
    for name, value in [
        ("internationalPrefix", meta.international_prefix),
        ("preferredInternationalPrefix", meta.preferred_international_prefix),
        ("nationalPrefix", meta.national_prefix),
        ("preferredExtnPrefix", meta.preferred_extn_prefix),
        ("nationalPrefixForParsing", meta.national_prefix_for_parsing),
        ("nationalPrefixTransformRule",
         java_replacement(meta.national_prefix_transform_rule) if meta.national_prefix_transform_rule else None),
        ("leadingDigits", meta.leading_digits),
    ]:
        if value is not None:
            attrs.append((name, value))
    if meta.main_country_for_code:
        attrs.append(("mainCountryForCode", "true"))
    if meta.mobile_number_portable_region:
        attrs.append(("mobileNumberPortableRegion", "true"))
    head = " ".join(f"{name}={quoteattr(value)}" for name, value in attrs)
    body = "".join(descriptor(element, getattr(meta, attr), element == "generalDesc") for element, attr in TYPES)
    return f"    <territory {head}>\n{body}    </territory>\n"


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "PhoneNumberMetadata.xml")
    parts = [
        f"<!-- libphonenumber's numbering plans, version {pn.__version__} (Apache License 2.0, "
        "https://github.com/google/libphonenumber), written from the Python port phonenumbers by "
        "assets/numbering/make_metadata.py: territories and number types only, no formats. -->\n",
        "<phoneNumberMetadata>\n  <territories>\n",
    ]
    count = 0
    for code in sorted(pn.COUNTRY_CODE_TO_REGION_CODE):
        for region in pn.COUNTRY_CODE_TO_REGION_CODE[code]:
            if region == "001":
                meta = PhoneMetadata.metadata_for_nongeo_region(code)
            else:
                meta = PhoneMetadata.metadata_for_region(region)
            if meta is None:
                sys.exit(f"no metadata for {region} (+{code})")
            parts.append(territory(meta))
            count += 1
    parts.append("  </territories>\n</phoneNumberMetadata>\n")
    # No XML declaration: the crate's loader does not accept one.
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(parts))
    print(f"{out}: {count} territories, phonenumbers {pn.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
