//! The PDU codec against the shared corpus (real captures and other projects' vectors, decoded by libgammu),
//! the `modemgate pdu` CLI as a process, and property tests of the round trip and of arbitrary input.

use std::path::{Path, PathBuf};
use std::process::Command;

use modemgate::pdu::{self, EncodingChoice, PduError, SubmitOptions, Tpdu, UserData};
use proptest::prelude::*;
use serde_json::Value;

/// The corpus sits beside the checkout: `../shared/corpus` from a main-like checkout, `../../shared/corpus`
/// from a worktree under /work/wt/NAME. A missing corpus fails the test.
/// A decoded time stamp as the expectations write it: RFC 3339, or null when it was no valid date.
fn stamp(time: &Option<jiff::Zoned>) -> Value {
    time.as_ref()
        .map_or(Value::Null, |t| pdu::rfc3339(t).into())
}

fn corpus_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["../shared/corpus", "../../shared/corpus"]
        .iter()
        .map(|relative| root.join(relative))
        .find(|dir| dir.join("pdu").is_dir())
        .expect("corpus not found at ../shared/corpus or ../../shared/corpus")
}

struct Entry {
    file: String,
    line: usize,
    json: Value,
}

impl Entry {
    fn source(&self) -> &str {
        self.json["source"].as_str().unwrap_or("?")
    }
    fn pdu(&self) -> &str {
        self.json["pdu"].as_str().unwrap()
    }
    fn kind(&self) -> &str {
        self.json["kind"].as_str().unwrap()
    }
    fn expect(&self) -> &Value {
        &self.json["expect"]
    }
}

fn corpus() -> Vec<Entry> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir().join("pdu"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut entries = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for (i, line) in std::fs::read_to_string(&path).unwrap().lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let json =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{file}:{}: {e}", i + 1));
            entries.push(Entry {
                file: file.clone(),
                line: i + 1,
                json,
            });
        }
    }
    entries
}

/// Where we knowingly read a PDU differently from libgammu: (source, field, libgammu's value, ours, why).
/// Every entry must be hit, so a stale one fails the test too.
const DEVIATIONS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "gammu tests/at-sms/04.dump",
        "sender",
        "O2\u{11}",
        "O2_",
        "the sender field holds 3 septets; the third, 0x11, is '_' in the GSM default alphabet and we map every \
         septet through the table, where libgammu returns it as the raw control character U+0011",
    ),
    (
        "python-gsmmodem-new 0.13.0 test/test_pdu.py TestSmsPdu.test_decode",
        "recipient",
        "+08427829207025",
        "+#08427829207025",
        "the ZTE capture's recipient starts with a 0xB semi-octet, which 23.040 9.1.2.3 defines as '#'; \
         libgammu drops it",
    ),
];

/// The field comparisons for one valid entry; returns (field, expected, ours) for each disagreement.
fn compare(entry: &Entry, decoded: &pdu::Pdu) -> Vec<(String, Value, Value)> {
    let expect = entry.expect();
    let mut diffs = Vec::new();
    let mut check = |field: &str, expected: &Value, ours: Value| {
        if *expected != ours {
            diffs.push((field.to_owned(), expected.clone(), ours));
        }
    };
    let smsc = decoded
        .smsc
        .as_ref()
        .map(|a| Value::from(a.value.clone()))
        .unwrap_or(Value::Null);
    check("smsc", &expect["smsc"], smsc);
    let text_and_udh = |check: &mut dyn FnMut(&str, &Value, Value),
                        encoding: pdu::Encoding,
                        concat: Option<pdu::Concat>,
                        user_data: &UserData| {
        check(
            "coding",
            &expect["coding"],
            serde_json::to_value(encoding).unwrap(),
        );
        match user_data {
            // libgammu's text is cut at the first NUL (see the corpus README); a real text never holds NUL
            // in these PDUs, so ours must equal it whole.
            UserData::Text(text) => check("text", &expect["text"], Value::from(text.clone())),
            UserData::Binary(data) => check(
                "data_hex",
                &expect["data_hex"],
                Value::from(hex::encode_upper(data)),
            ),
        }
        let udh = &expect["udh"];
        let expected_concat = match udh.get("ref") {
            Some(reference) => serde_json::json!([reference, udh["part"], udh["parts"]]),
            None => Value::Null,
        };
        let ours = concat.map_or(Value::Null, |c| {
            serde_json::json!([c.reference, c.part, c.parts])
        });
        check("udh ref/part/parts", &expected_concat, ours);
    };
    match &decoded.tpdu {
        Tpdu::Deliver(d) => {
            check("type", &Value::from(entry.kind()), "deliver".into());
            check("sender", &expect["sender"], d.sender.value.clone().into());
            check("timestamp", &expect["timestamp"], stamp(&d.timestamp));
            text_and_udh(&mut check, d.encoding, d.concat, &d.user_data);
        }
        Tpdu::Submit(s) => {
            check("type", &Value::from(entry.kind()), "submit".into());
            check(
                "recipient",
                &expect["recipient"],
                s.recipient.value.clone().into(),
            );
            check("reference", &expect["reference"], s.reference.into());
            text_and_udh(&mut check, s.encoding, s.concat, &s.user_data);
        }
        Tpdu::StatusReport(r) => {
            check("type", &Value::from(entry.kind()), "status_report".into());
            check(
                "recipient",
                &expect["recipient"],
                r.recipient.value.clone().into(),
            );
            check("reference", &expect["reference"], r.reference.into());
            check("submitted", &expect["submitted"], stamp(&r.submitted));
            check("discharged", &expect["discharged"], stamp(&r.discharged));
            check("status", &expect["status"], r.status.into());
            let class = match r.class() {
                pdu::StatusClass::Delivered => "delivered",
                pdu::StatusClass::Completed => "completed",
                pdu::StatusClass::Retrying => "temporary_error_retrying",
                pdu::StatusClass::Failed if r.status < 0x60 => "permanent_error",
                pdu::StatusClass::Failed => "temporary_error_stopped",
                pdu::StatusClass::Reserved => "reserved",
            };
            check("status_class", &expect["status_class"], class.into());
        }
    }
    diffs
}

#[test]
fn every_corpus_pdu_decodes_to_its_expectation_or_is_refused() {
    let entries = corpus();
    assert_eq!(entries.len(), 118, "the corpus README promises 118 PDUs");
    let mut failures = Vec::new();
    let mut deviations_hit = vec![false; DEVIATIONS.len()];
    let (mut valid, mut invalid, mut allowed) = (0, 0, 0);
    for entry in &entries {
        let place = format!("{}:{} ({})", entry.file, entry.line, entry.source());
        let result = pdu::decode_hex(entry.pdu());
        if entry.kind() == "invalid" {
            match result {
                Err(error) => {
                    let message = error.to_string();
                    assert!(
                        !message.is_empty() && !message.contains('\n'),
                        "{place}: {message:?}"
                    );
                    if entry.expect()["error"] == "NOT_HEX" {
                        assert!(
                            matches!(
                                error,
                                PduError::NotHex { .. } | PduError::OddHexLength { .. }
                            ),
                            "{place}: {error}"
                        );
                    }
                    invalid += 1;
                }
                Ok(decoded) => failures.push(format!(
                    "{place}: refused by libgammu, decoded by us: {decoded:?}"
                )),
            }
            continue;
        }
        let decoded = match result {
            Ok(decoded) => decoded,
            Err(error) => {
                failures.push(format!("{place}: {error}"));
                continue;
            }
        };
        let mut entry_ok = true;
        for (field, expected, ours) in compare(entry, &decoded) {
            let known = DEVIATIONS.iter().position(|&(source, f, theirs, mine, _)| {
                source == entry.source() && f == field && expected == theirs && ours == mine
            });
            match known {
                Some(i) => {
                    deviations_hit[i] = true;
                    allowed += 1;
                }
                None => {
                    entry_ok = false;
                    failures.push(format!(
                        "{place}: {field}: libgammu {expected}, ours {ours}"
                    ));
                }
            }
        }
        if entry_ok {
            valid += 1;
        }
    }
    for (hit, deviation) in deviations_hit.iter().zip(DEVIATIONS) {
        assert!(hit, "allow-list entry not hit any more: {deviation:?}");
    }
    println!(
        "corpus: {} entries; {valid} valid PDUs decode as expected ({allowed} field(s) on the allow-list), \
         {invalid} invalid PDUs refused",
        entries.len()
    );
    assert!(
        failures.is_empty(),
        "{} corpus failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- 3GPP TS 23.040 / 23.038 vectors -------------------------------------------------------------------

#[test]
fn septet_packing_matches_the_23_038_hellohello_example() {
    // 23.038 6.1.2.1.1: "hellohello" packs to E8 32 9B FD 46 97 D9 EC 37.
    let parts = pdu::encode_submit("+1234", "hellohello", &SubmitOptions::default()).unwrap();
    assert!(
        parts[0].hex().ends_with("0AE8329BFD4697D9EC37"),
        "{}",
        parts[0].hex()
    );
}

#[test]
fn concatenated_gsm7_parts_carry_a_udh_with_one_fill_bit() {
    let text = "a".repeat(153) + &"b".repeat(8);
    let opts = SubmitOptions {
        concat_reference: 0x42,
        ..SubmitOptions::default()
    };
    let parts = pdu::encode_submit("+15125551234", &text, &opts).unwrap();
    assert_eq!(parts.len(), 2);
    let first = parts[0].hex();
    // UDHI set, UDL 160 septets, UDH 05 00 03 42 02 01, then 'a' (0x61) shifted by one fill bit.
    assert!(
        first.starts_with("0041000B915121551532F40000A0050003420201C2"),
        "{first}"
    );
    assert_eq!(parts[0].tpdu_length, 13 + 140);
    let second = pdu::decode(&parts[1].bytes).unwrap();
    let Tpdu::Submit(s) = second.tpdu else {
        panic!()
    };
    assert_eq!(s.user_data, UserData::Text("b".repeat(8)));
    assert_eq!(
        s.concat.map(|c| (c.reference, c.part, c.parts)),
        Some((0x42, 2, 2))
    );
}

#[test]
fn deliver_and_status_report_encoders_round_trip() {
    let time: jiff::Zoned = "2026-11-22T13:45:10-06:00[America/Mexico_City]"
        .parse()
        .unwrap();
    let text = "Pago recibido, gracias. ¿Dudas? Responde AYUDA. ".repeat(4);
    let pdus = pdu::encode_deliver(
        Some("+5215500000000"),
        "+5215512345678",
        &text,
        EncodingChoice::Auto,
        &time,
        77,
    )
    .unwrap();
    assert_eq!(pdus.len(), 2);
    let mut joined = String::new();
    for (i, bytes) in pdus.iter().enumerate() {
        let decoded = pdu::decode(bytes).unwrap();
        assert_eq!(decoded.smsc.unwrap().value, "+5215500000000");
        let Tpdu::Deliver(d) = decoded.tpdu else {
            panic!()
        };
        assert_eq!(d.sender.value, "+5215512345678");
        let stamped = d.timestamp.expect("a valid time stamp");
        assert_eq!(stamped.timestamp(), time.timestamp());
        assert_eq!(pdu::rfc3339(&stamped), "2026-11-22T13:45:10-06:00");
        assert_eq!(
            d.concat.map(|c| (c.reference, c.part, c.parts)),
            Some((77, i as u8 + 1, 2))
        );
        let UserData::Text(t) = d.user_data else {
            panic!()
        };
        joined.push_str(&t);
    }
    assert_eq!(joined, text);

    let alpha = pdu::encode_deliver(None, "MiBanco", "ok", EncodingChoice::Ucs2, &time, 0).unwrap();
    let Tpdu::Deliver(d) = pdu::decode(&alpha[0]).unwrap().tpdu else {
        panic!()
    };
    assert_eq!(
        (d.sender.value.as_str(), d.sender.type_of_number),
        ("MiBanco", 5)
    );
    assert_eq!(d.encoding, pdu::Encoding::Ucs2);

    let later: jiff::Zoned = "2026-11-22T13:45:20-06:00[America/Mexico_City]"
        .parse()
        .unwrap();
    let report = pdu::encode_status_report(None, 214, "+31628870634", &time, &later, 0x46).unwrap();
    let Tpdu::StatusReport(r) = pdu::decode(&report).unwrap().tpdu else {
        panic!()
    };
    assert_eq!(
        (r.reference, r.recipient.value.as_str(), r.status),
        (214, "+31628870634", 0x46)
    );
    assert_eq!(r.class(), pdu::StatusClass::Failed);
    assert_eq!(r.discharged.map(|d| d.timestamp()), Some(later.timestamp()));
}

#[test]
fn decode_errors_name_field_and_offset() {
    let cases: &[(&str, &str)] = &[
        ("", "SMSC length at octet 0"),
        ("0", "odd number of digits (1)"),
        ("00ZZ", "non-hex character 'Z' at position 2"),
        ("0C91", "SMSC length at octet 0: 12 octets"),
        ("0004", "TP-OA at octet 2: needs 1"),
        ("00041591", "TP-OA at octet 2: length 21 semi-octets"),
        (
            "0004039121",
            "TP-OA at octet 4: needs 2 octet(s), only 1 left",
        ),
        ("000403912143000070503070400422", "TP-UDL at octet 15"),
        (
            "00040391214300007050307040042205C8",
            "TP-UD at octet 16: needs 5 octet(s), only 1 left",
        ),
        (
            "0044039121430004705030704004220303000201",
            "TP-UDHL at octet 16: a header of 3 octets runs past",
        ),
        ("00FF", "TP-MTI at octet 1: message type 3"),
        (
            "0004039121430000705030704022",
            "TP-SCTS at octet 8: needs 7 octet(s), only 6 left",
        ),
    ];
    for (hex, wanted) in cases {
        let error = pdu::decode_hex(hex).unwrap_err().to_string();
        assert!(
            error.contains(wanted),
            "{hex}: {error:?} does not contain {wanted:?}"
        );
    }
    // A header element that runs past the header is ignored with the whole header (23.040 9.2.3.24).
    let Tpdu::Deliver(d) = pdu::decode_hex("0044039121430004705030704004220403000301")
        .unwrap()
        .tpdu
    else {
        panic!("not a deliver")
    };
    assert_eq!(d.concat, None);
    // A time stamp that is there but no date (A4 is not BCD) costs the time, not the message.
    let Tpdu::Deliver(d) = pdu::decode_hex("00040391214300007050307040A42200")
        .unwrap()
        .tpdu
    else {
        panic!("not a deliver")
    };
    assert_eq!(d.timestamp, None);
}

// ---- the CLI as a process ---------------------------------------------------------------------------

fn modemgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_modemgate"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_encode_prints_one_json_line_per_part_that_decodes_back() {
    // A text may start with `-` without being taken for an option.
    let text = format!(
        "-5% off. {}",
        "Your balance is €250. Reply STOP to stop texts. ".repeat(4)
    );
    let out = modemgate(&[
        "pdu",
        "encode",
        "--to",
        "+15125551234",
        "--text",
        &text,
        "--report",
        "--ref",
        "200",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    let mut joined = String::new();
    for (i, line) in lines.iter().enumerate() {
        let part: Value = serde_json::from_str(line).unwrap();
        let hex = part["pdu"].as_str().unwrap();
        assert!(hex.starts_with("00"), "SMSC field must be 00: {hex}");
        assert_eq!(part["length"].as_u64().unwrap() as usize, hex.len() / 2 - 1);

        let out = modemgate(&["pdu", "decode", hex]);
        assert!(out.status.success());
        let decoded: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(decoded["type"], "submit");
        assert_eq!(decoded["smsc"], Value::Null);
        assert_eq!(decoded["recipient"], "+15125551234");
        assert_eq!(decoded["encoding"], "gsm7");
        assert_eq!(decoded["reference"], 200);
        assert_eq!(
            decoded["udh"],
            serde_json::json!({"ref": 200, "part": i + 1, "parts": 2})
        );
        joined.push_str(decoded["text"].as_str().unwrap());
    }
    assert_eq!(joined, text);
}

#[test]
fn cli_encode_options_pick_the_encoding() {
    let encoding_of = |args: &[&str]| {
        let mut all = vec!["pdu", "encode", "--to", "5551234"];
        all.extend_from_slice(args);
        let out = modemgate(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let part: Value = serde_json::from_slice(&out.stdout).unwrap();
        let decoded = modemgate(&["pdu", "decode", part["pdu"].as_str().unwrap()]);
        let decoded: Value = serde_json::from_slice(&decoded.stdout).unwrap();
        (
            decoded["encoding"].as_str().unwrap().to_owned(),
            decoded["text"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(
        encoding_of(&["--text", "it\u{2019}s"]),
        ("ucs2".into(), "it\u{2019}s".into())
    );
    assert_eq!(
        encoding_of(&["--text", "it\u{2019}s", "--smart"]),
        ("gsm7".into(), "it's".into())
    );
    assert_eq!(
        encoding_of(&["--text", "hi", "--encoding", "ucs2"]),
        ("ucs2".into(), "hi".into())
    );
    let out = modemgate(&[
        "pdu",
        "encode",
        "--to",
        "5551234",
        "--text",
        "ж",
        "--encoding",
        "gsm7",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn cli_decode_prints_deliver_fields() {
    let out = modemgate(&[
        "pdu",
        "decode",
        "0791448720003023240DD0E474D81C0EBB010000111011315214000BE474D81C0EBB5DE3771B",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["type"], "deliver");
    assert_eq!(json["smsc"], "+447802000332");
    assert_eq!(json["sender"], "diafaan");
    assert_eq!(json["encoding"], "gsm7");
    assert_eq!(json["text"], "diafaan.com");
    assert_eq!(json["timestamp"], "2011-01-11T13:25:41+00:00");
    assert_eq!(json["udh"], Value::Null);
}

#[test]
fn cli_decode_refuses_garbage_with_exit_1_and_one_stderr_line() {
    for garbage in [
        "zz",
        "0",
        "0791448720003023240D",
        "00FFFFFF",
        "not a pdu at all",
    ] {
        let out = modemgate(&["pdu", "decode", garbage]);
        assert_eq!(out.status.code(), Some(1), "{garbage}");
        assert!(out.stdout.is_empty(), "{garbage}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{garbage}: {stderr:?}");
        assert!(
            stderr.starts_with("modemgate: cannot decode PDU: "),
            "{stderr:?}"
        );
    }
}

// ---- properties ---------------------------------------------------------------------------------------

/// Texts mixing ASCII, GSM extension characters, GSM accents, non-GSM letters and emoji, long enough to need
/// several parts.
fn text_strategy() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        4 => "[ -~]{1,20}",
        2 => "[€\\[\\]{}~^|\\\\\u{0C}]{1,4}",
        1 => "[@£¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\n\r]{1,6}",
        1 => "[жçáœ\u{2019}\u{00A0}]{1,3}",
        1 => "[😀🎉👍🏽]{1,3}",
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_text_round_trips_through_submit(text in text_strategy(), reference: u8, ucs2: bool) {
        let opts = SubmitOptions {
            encoding: if ucs2 { EncodingChoice::Ucs2 } else { EncodingChoice::Auto },
            message_reference: reference,
            concat_reference: reference,
            ..SubmitOptions::default()
        };
        let parts = pdu::encode_submit("+447700900123", &text, &opts).unwrap();
        let info = pdu::segments(&text, opts.encoding, false).unwrap();
        prop_assert_eq!(parts.len(), info.parts);
        let mut joined = String::new();
        for (i, part) in parts.iter().enumerate() {
            prop_assert!(part.tpdu_length <= 13 + 140 + 1);
            let Tpdu::Submit(s) = pdu::decode(&part.bytes).unwrap().tpdu else { panic!("not a submit") };
            prop_assert_eq!(s.reference, reference);
            prop_assert_eq!(s.encoding, info.encoding);
            prop_assert_eq!(s.recipient.value.as_str(), "+447700900123");
            match (parts.len(), s.concat) {
                (1, None) => {}
                (n, Some(c)) => {
                    let numbers = (c.reference, usize::from(c.part), usize::from(c.parts));
                    prop_assert_eq!(numbers, (u16::from(reference), i + 1, n));
                }
                (n, c) => prop_assert!(false, "{} parts but concat {:?}", n, c),
            }
            let UserData::Text(t) = s.user_data else { panic!("binary") };
            joined.push_str(&t);
        }
        prop_assert_eq!(joined, text);
    }

    #[test]
    fn smart_text_decodes_to_what_segments_promised(text in text_strategy()) {
        let info = pdu::segments(&text, EncodingChoice::Auto, true).unwrap();
        let opts = SubmitOptions { smart: true, ..SubmitOptions::default() };
        let parts = pdu::encode_submit("12345", &text, &opts).unwrap();
        prop_assert_eq!(parts.len(), info.parts);
        let mut joined = String::new();
        for part in &parts {
            let Tpdu::Submit(s) = pdu::decode(&part.bytes).unwrap().tpdu else { panic!("not a submit") };
            let UserData::Text(t) = s.user_data else { panic!("binary") };
            joined.push_str(&t);
        }
        prop_assert_eq!(joined, info.text);
    }

    #[test]
    fn any_text_round_trips_through_deliver(
        text in text_strategy(),
        reference: u8,
        // 1990-01-02 to 2089-12-31: the years a two-digit time stamp can hold.
        seconds in 631_238_400i64..3_786_825_600,
    ) {
        let chicago = jiff::tz::TimeZone::get("America/Chicago").unwrap();
        let time = jiff::Timestamp::from_second(seconds).unwrap().to_zoned(chicago);
        let pdus = pdu::encode_deliver(Some("+13125550000"), "Cobranza", &text, EncodingChoice::Auto, &time, reference)
            .unwrap();
        let mut joined = String::new();
        for (i, bytes) in pdus.iter().enumerate() {
            let Tpdu::Deliver(d) = pdu::decode(bytes).unwrap().tpdu else { panic!("not a deliver") };
            prop_assert_eq!(d.sender.value.as_str(), "Cobranza");
            prop_assert_eq!(d.timestamp.map(|t| t.timestamp()), Some(time.timestamp()));
            if pdus.len() > 1 {
                let concat = d.concat.map(|c| (c.reference, usize::from(c.part)));
                prop_assert_eq!(concat, Some((u16::from(reference), i + 1)));
            }
            let UserData::Text(t) = d.user_data else { panic!("binary") };
            joined.push_str(&t);
        }
        prop_assert_eq!(joined, text);
    }

    #[test]
    fn status_reports_round_trip(reference: u8, status: u8, number in "\\+?[0-9]{1,20}") {
        let time: jiff::Zoned = "2026-02-03T04:05:06+05:30[Asia/Kolkata]".parse().unwrap();
        let bytes = pdu::encode_status_report(None, reference, &number, &time, &time, status).unwrap();
        let Tpdu::StatusReport(r) = pdu::decode(&bytes).unwrap().tpdu else { panic!("not a status report") };
        prop_assert_eq!((r.reference, r.status, r.recipient.value), (reference, status, number));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = pdu::decode(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_plausible_header_never_panic(
        first in any::<u8>(),
        tail in prop::collection::vec(any::<u8>(), 0..180),
    ) {
        // Get past the SMSC field and a short address so the user data paths are exercised too.
        let mut bytes = vec![0x00, first, 0x00, 0x04, 0x91, 0x21, 0x43];
        bytes.extend(tail);
        let _ = pdu::decode(&bytes);
    }

    #[test]
    fn arbitrary_strings_never_panic_the_hex_decoder(s in ".{0,80}") {
        let _ = pdu::decode_hex(&s);
    }
}
