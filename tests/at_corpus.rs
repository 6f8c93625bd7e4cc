//! The AT codec on real modem output from the shared corpus (gammu dumps, atgen scripts, python-gsmmodem
//! exchanges), plus "never panics" properties on arbitrary bytes.

use std::path::PathBuf;

use modemgate::at::{
    CallResult, CmeError, CmsError, Final, Frame, Framer, Info, Line, Urc, parse_line,
    response::{
        Cmgs, CnmiSupport, Cpms, MemoryUsage, MessageHeader, Operator, PinStatus, RegStatus,
        RegistrationReport, SignalQuality, Smsc, in_text_mode, pdu_listing,
    },
};
use proptest::prelude::*;

/// The corpus sits beside the checkout (`../shared/corpus`) or, from a worktree, two levels up.
fn corpus() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        root.join("../shared/corpus"),
        root.join("../../shared/corpus"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .expect("corpus not found at ../shared/corpus or ../../shared/corpus")
}

fn read(rel: &str) -> Vec<u8> {
    let path = corpus().join("at").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn frames_of(bytes: &[u8]) -> Vec<Frame> {
    let mut f = Framer::new();
    f.push(bytes);
    std::iter::from_fn(|| f.next()).collect()
}

/// The lines of a corpus file (prompts dropped).
fn lines(rel: &str) -> Vec<String> {
    frames_of(&read(rel))
        .into_iter()
        .filter_map(|f| match f {
            Frame::Line(l) => Some(l),
            Frame::Prompt => None,
        })
        .collect()
}

/// The body of the first information response named `name` in a file.
fn info(rel: &str, name: &str) -> String {
    infos(rel, name)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {name} in {rel}"))
}

fn infos(rel: &str, name: &str) -> Vec<String> {
    lines(rel)
        .iter()
        .filter_map(|l| match parse_line(l) {
            Line::Info(Info { name: n, body }) if n == name => Some(body),
            _ => None,
        })
        .collect()
}

fn classified(rel: &str) -> Vec<Line> {
    lines(rel).iter().map(|l| parse_line(l)).collect()
}

fn finals(rel: &str) -> Vec<Final> {
    classified(rel)
        .into_iter()
        .filter_map(|l| match l {
            Line::Final(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn urcs(rel: &str) -> Vec<Urc> {
    classified(rel)
        .into_iter()
        .filter_map(|l| match l {
            Line::Urc(u) => Some(u),
            _ => None,
        })
        .collect()
}

#[test]
fn every_corpus_file_frames_the_same_whole_or_byte_by_byte() {
    let mut files = 0;
    for dir in ["gammu", "python-gsmmodem"] {
        for entry in std::fs::read_dir(corpus().join("at").join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let whole = frames_of(&bytes);
            assert!(!whole.is_empty(), "{}: no frames", path.display());
            for chunk in [1, 3, 7] {
                let mut f = Framer::new();
                let mut got = Vec::new();
                for piece in bytes.chunks(chunk) {
                    f.push(piece);
                    got.extend(std::iter::from_fn(|| f.next()));
                }
                assert_eq!(got, whole, "{} in chunks of {chunk}", path.display());
                assert!(
                    f.pending().is_empty(),
                    "{}: unterminated tail",
                    path.display()
                );
            }
            for frame in whole {
                if let Frame::Line(l) = frame {
                    assert!(!l.is_empty());
                    assert!(!l.contains(['\r', '\n']));
                    parse_line(&l);
                }
            }
            files += 1;
        }
    }
    assert!(files >= 141, "only {files} corpus files");
}

#[test]
fn crcrlf_lines_and_padded_model() {
    assert_eq!(
        lines("gammu/at-model-06.txt"),
        vec!["AT+CGMM", " MULTIBAND  900E  1800 ", "OK"]
    );
    assert_eq!(parse_line("AT+CGMM"), Line::Echo("AT+CGMM".into()));
}

#[test]
fn creg_formats() {
    let huawei =
        RegistrationReport::parse("+CREG", &info("gammu/at-creg-huawei.txt", "+CREG")).unwrap();
    assert_eq!(
        huawei,
        RegistrationReport {
            n: Some(2),
            stat: RegStatus::Home,
            lac: Some(0x4CA),
            cell_id: Some(0x81DE445),
            act: None
        }
    );
    let telit =
        RegistrationReport::parse("+CREG", &info("gammu/at-creg-telit.txt", "+CREG")).unwrap();
    assert_eq!(
        telit,
        RegistrationReport {
            n: Some(0),
            stat: RegStatus::Home,
            lac: Some(0x5E25),
            cell_id: Some(0x605F),
            act: Some(2)
        }
    );
    let sierra =
        RegistrationReport::parse("+CREG", &info("gammu/at-creg-sierra312u.txt", "+CREG")).unwrap();
    assert_eq!(
        (sierra.stat, sierra.cell_id, sierra.act),
        (RegStatus::Roaming, Some(0x0B88E350), Some(2))
    );
    assert!(sierra.stat.is_registered());
    let siemens =
        RegistrationReport::parse("+CREG", &info("gammu/at-creg-siemens.txt", "+CREG")).unwrap();
    assert_eq!(
        (siemens.n, siemens.lac, siemens.act),
        (Some(0), Some(0x5E25), None)
    );
    let none =
        RegistrationReport::parse("+CREG", &info("gammu/at-creg-none.txt", "+CREG")).unwrap();
    assert_eq!((none.n, none.stat), (Some(0), RegStatus::NotRegistered));
    assert!(!none.stat.is_registered());
    let empty_lac = RegistrationReport::parse(
        "+CREG",
        &info("gammu/at-creg-corner-empty-lac.txt", "+CREG"),
    )
    .unwrap();
    assert_eq!((empty_lac.lac, empty_lac.cell_id), (None, Some(0x605F)));
    for broken in [
        "gammu/at-creg-corner-mismatched-quotes.txt",
        "gammu/at-creg-corner-single-quote.txt",
    ] {
        assert!(
            RegistrationReport::parse("+CREG", &info(broken, "+CREG")).is_err(),
            "{broken}"
        );
    }
    assert!(infos("gammu/at-creg-empty.txt", "+CREG").is_empty());
    assert_eq!(finals("gammu/at-creg-empty.txt"), vec![Final::Ok]);
}

#[test]
fn cpms_supported_lists_with_and_without_parentheses() {
    let sm_me = || vec!["SM".to_string(), "ME".to_string()];
    assert_eq!(
        Cpms::parse(&info("gammu/at-cpms-generic.txt", "+CPMS")).unwrap(),
        Cpms::Supported(vec![sm_me(), sm_me(), sm_me()])
    );
    assert_eq!(
        Cpms::parse(&info("gammu/at-cpms-sm-iwow.txt", "+CPMS")).unwrap(),
        Cpms::Supported(vec![vec!["SM".to_string()]; 3])
    );
    let Cpms::Supported(alcatel) =
        Cpms::parse(&info("gammu/at-cpms-alcatel-s320.txt", "+CPMS")).unwrap()
    else {
        panic!("alcatel")
    };
    assert_eq!(alcatel.len(), 3);
    assert_eq!(alcatel[0], vec!["SM", "ME", "SM_P", "ME_P", "MT"]);
    assert_eq!(
        Cpms::parse(&info("gammu/at-cpms-sr-generic.txt", "+CPMS")).unwrap(),
        Cpms::Supported(vec![
            vec!["ME".to_string(), "SR".to_string()],
            vec!["ME".to_string(), "SR".to_string()],
            vec!["ME".to_string()]
        ])
    );
    assert_eq!(
        Cpms::parse(&info("gammu/at-cpms-samsung-j700.txt", "+CPMS")).unwrap(),
        Cpms::Supported(vec![])
    );
    let Cpms::Supported(brovi) =
        Cpms::parse(&info("gammu/at-cpms-brovi-e3372-325.txt", "+CPMS")).unwrap()
    else {
        panic!("brovi")
    };
    assert_eq!(brovi.len(), 3);
}

#[test]
fn cpms_usage_forms() {
    let usage = |m: Option<&str>, used, total| MemoryUsage {
        memory: m.map(str::to_owned),
        used,
        total,
    };
    assert_eq!(
        Cpms::parse(&infos("gammu/atgen-cpms-three-param-status.txt", "+CPMS")[1]).unwrap(),
        Cpms::Usage(vec![usage(Some("ME"), 4, 40); 3])
    );
    assert_eq!(
        Cpms::parse(&infos("gammu/atgen-get-sms-location.txt", "+CPMS")[1]).unwrap(),
        Cpms::Usage(vec![
            usage(None, 2, 4),
            usage(None, 0, 4),
            usage(None, 0, 4)
        ])
    );
    assert_eq!(
        Cpms::parse(&info(
            "gammu/atgen-get-next-sms-supported-range-stops-at-reported-count.txt",
            "+CPMS"
        ))
        .unwrap(),
        Cpms::Usage(vec![usage(None, 1, 5000)])
    );
    let Cpms::Usage(full) = Cpms::parse("\"SM\",30,30,\"SM\",30,30,\"SM\",30,30").unwrap() else {
        panic!()
    };
    assert!(full[0].is_full());
}

#[test]
fn cmgl_listing_pairs_headers_with_pdus() {
    let listing = pdu_listing(&lines("python-gsmmodem/cmgl-pdu-all.txt"));
    assert_eq!(listing.len(), 3);
    assert_eq!(
        listing
            .iter()
            .map(|m| (m.header.index, m.header.stat, m.header.length))
            .collect::<Vec<_>>(),
        vec![
            (Some(0), Some(0), 35),
            (Some(1), Some(1), 161),
            (Some(2), Some(1), 159)
        ]
    );
    assert!(listing[0].pdu_hex.starts_with("07917248014000F3240B91"));
    assert!(listing[0].pdu_hex.ends_with("F034"));

    let garbage = pdu_listing(&lines("python-gsmmodem/cmgl-pdu-garbage-line.txt"));
    assert_eq!(
        garbage, listing,
        "a garbage line between header and PDU is skipped"
    );

    // A +CMTI URC in the middle of a +CMGL listing is a URC, not part of it.
    let stored = lines("gammu/atgen-smsd-cmt-then-stored-copy.txt");
    let cmgl: Vec<_> = pdu_listing(&stored)
        .into_iter()
        .filter(|m| m.header.index.is_some())
        .collect();
    assert_eq!(cmgl.len(), 1);
    assert_eq!(cmgl[0].header.alpha, None);
    assert!(
        urcs("gammu/atgen-smsd-cmt-then-stored-copy.txt").contains(&Urc::Cmti {
            memory: "ME".into(),
            index: 1
        })
    );

    // A text-mode listing is not misread as PDU entries.
    assert!(pdu_listing(&lines("python-gsmmodem/cmgl-text-all.txt")).is_empty());
}

#[test]
fn cmgr_header_variants_from_captures() {
    let header = |rel: &str| MessageHeader::parse_cmgr(&info(rel, "+CMGR")).unwrap();
    let h = header("gammu/at-sms-07.txt");
    assert_eq!((h.stat, h.alpha.as_deref(), h.length), (Some(0), None, 23));
    let h = header("gammu/at-sms-26.txt");
    assert_eq!((h.stat, h.length), (Some(1), 151));
    let h = header("gammu/at-sms-38.txt");
    assert_eq!((h.stat, h.length), (None, 24));
    let h = header("gammu/at-sms-39.txt");
    assert_eq!((h.stat, h.length), (None, 92));
    let h = header("python-gsmmodem/cmti-pdu-alpha-unquoted-spaces.txt");
    assert_eq!(h.alpha.as_deref(), Some("Test User 123"));
    let h = header("python-gsmmodem/cmti-pdu-alpha-empty-quoted.txt");
    assert_eq!((h.alpha, h.length), (None, 29));
    let h = header("python-gsmmodem/cdsi-zte-missing-stat.txt");
    assert_eq!((h.stat, h.length), (None, 27));

    let read = pdu_listing(&lines("gammu/at-sms-03.txt"));
    assert_eq!(read.len(), 1);
    assert!(read[0].pdu_hex.starts_with("07"));
    // gammu at-sms-04's PDU line ends with a stray quote: the PDU is read without it (left, the slot would
    // never be read or deleted), and is the one libgammu decodes.
    let stray = pdu_listing(&lines("gammu/at-sms-04.txt"));
    assert_eq!(stray.len(), 1);
    assert!(stray[0].pdu_hex.starts_with("07914487200030230406D04F5904"));
    assert!(stray[0].pdu_hex.ends_with("DC653C1DD4A6A301"));
    let decoded = modemgate::pdu::decode_hex(&stray[0].pdu_hex).unwrap();
    assert!(matches!(decoded.tpdu, modemgate::pdu::Tpdu::Deliver(_)));
    // Text-mode answers arriving in PDU mode are refused, not guessed at, and recognised as text mode (the
    // worker then sets PDU mode again and reads once more).
    assert!(
        MessageHeader::parse_cmgr(&info("gammu/atgen-get-sms-text-fallback-read.txt", "+CMGR"))
            .is_err()
    );
    for capture in [
        "gammu/atgen-get-sms-text-fallback-read.txt",
        "gammu/atgen-get-sms-text-fallback-unread.txt",
    ] {
        assert!(in_text_mode(&lines(capture)), "{capture}");
    }
    assert!(!in_text_mode(&lines("gammu/at-sms-03.txt")));
    assert!(in_text_mode(&[
        r#"+CMGL: 1,"REC UNREAD","+14155550101",,"26/03/02,15:00:00+00""#
    ]));
    assert!(!in_text_mode(&["+CMGL: 1,0,,23"]));
}

#[test]
fn cms_and_cme_codes_from_scripts() {
    assert!(
        finals("gammu/atgen-get-next-sms-supported-range-bounds-overreported-count.txt")
            .contains(&Final::Cms(CmsError(321)))
    );
    assert!(!CmsError(321).is_transient());
    assert!(
        finals("gammu/atgen-smsd-cmt-multipart-delete-retry.txt")
            .contains(&Final::Cms(CmsError(300)))
    );
    assert!(CmsError(300).is_transient());
    assert_eq!(
        finals("gammu/atgen-get-next-sms-sim-security-error-does-not-use-legacy-scan.txt"),
        vec![Final::Ok, Final::Cms(CmsError(311)), Final::Error]
    );
    assert!(
        finals("gammu/atgen-get-next-sms-cme-operation-not-allowed-uses-legacy-scan.txt")
            .contains(&Final::Cme(CmeError::Code(3)))
    );
    assert!(
        finals("gammu/atgen-get-next-sms-cms-operation-not-allowed-uses-legacy-scan.txt")
            .contains(&Final::Cms(CmsError(302)))
    );
}

#[test]
fn sms_urcs_and_their_pdu_lines() {
    let cds = classified("gammu/atgen-incoming-cds.txt");
    assert_eq!(cds[0], Line::Urc(Urc::Cds { length: 25 }));
    let Line::Urc(u) = &cds[0] else { panic!() };
    assert!(u.pdu_follows());
    assert!(matches!(&cds[1], Line::Text(pdu) if pdu.starts_with("07914875215652F006")));
    let bad = classified("gammu/atgen-incoming-cds-bad.txt");
    assert_eq!(bad[1], Line::Text("BAD".into()));

    assert_eq!(
        urcs("gammu/atgen-incoming-cmti-sr-0-and-cdsi.txt"),
        vec![
            Urc::Cdsi {
                memory: "SR".into(),
                index: 0
            },
            Urc::Cmti {
                memory: "SR".into(),
                index: 0
            }
        ]
    );
    let cmt = classified("gammu/atgen-smsd-cmt-multipart-delete-retry.txt");
    assert_eq!(
        cmt[0],
        Line::Urc(Urc::Cmt {
            alpha: None,
            length: Some(30)
        })
    );
    assert!(matches!(&cmt[1], Line::Text(pdu) if pdu.ends_with("41")));
    assert_eq!(
        urcs("python-gsmmodem/cmgs-then-cdsi.txt"),
        vec![Urc::Cdsi {
            memory: "SM".into(),
            index: 3
        }]
    );
}

#[test]
fn call_and_vendor_noise_is_unsolicited() {
    let lines = classified("gammu/atgen-smsd-cancel-call-remote-end.txt");
    assert!(lines.contains(&Line::Urc(Urc::Ring)));
    assert!(lines.contains(&Line::Final(Final::Call(CallResult::NoCarrier))));
    assert!(
        lines
            .iter()
            .any(|l| matches!(l, Line::Urc(Urc::Other { name, .. }) if name == "+CLIP"))
    );
    assert!(lines.contains(&Line::Info(Info {
        name: "+CPIN".into(),
        body: "READY".into()
    })));
    assert_eq!(
        urcs("gammu/atgen-smsd-cusd-code-only.txt"),
        vec![Urc::Other {
            name: "+CUSD".into(),
            body: "2".into()
        }]
    );
}

#[test]
fn cmgs_prompt_amid_zte_noise() {
    let frames = frames_of(&read("python-gsmmodem/cmgs-zte-urc-noise.txt"));
    let prompt_at = frames
        .iter()
        .position(|f| *f == Frame::Prompt)
        .expect("prompt");
    assert_eq!(prompt_at, 3);
    let noise = urcs("python-gsmmodem/cmgs-zte-urc-noise.txt");
    assert_eq!(noise.len(), 6);
    assert!(
        noise
            .iter()
            .all(|u| matches!(u, Urc::Other { name, .. } if name.starts_with("+Z")))
    );
    assert_eq!(
        Cmgs::parse(&info("python-gsmmodem/cmgs-zte-urc-noise.txt", "+CMGS"))
            .unwrap()
            .reference,
        142
    );
    // python-gsmmodem's fake ends the prompt with CR LF: still one prompt.
    let ucs2 = frames_of(&read("python-gsmmodem/cmgs-pdu-ucs2.txt"));
    assert_eq!(ucs2.iter().filter(|f| **f == Frame::Prompt).count(), 1);
    assert_eq!(
        Cmgs::parse(&info("python-gsmmodem/cmgs-pdu-ucs2.txt", "+CMGS"))
            .unwrap()
            .reference,
        141
    );
}

#[test]
fn cnmi_test_answers() {
    let c = CnmiSupport::parse(&info("gammu/at-cnmi-01.txt", "+CNMI")).unwrap();
    assert_eq!(
        c.0,
        vec![vec![2], vec![0, 1, 3], vec![0, 2], vec![0, 1], vec![0]]
    );
    assert!(c.allows(&[2, 1, 2, 1, 0]));
    assert!(!c.allows(&[2, 2, 2, 1, 0]), "mt=2 is not offered");
    assert!(!c.allows(&[2, 1, 2, 2, 0]), "ds=2 is not offered");
    let c = CnmiSupport::parse(&info("gammu/at-cnmi-03.txt", "+CNMI")).unwrap();
    assert!(c.allows(&[2, 1, 2, 1, 0]));
    let c = CnmiSupport::parse(&info("gammu/atgen-cnmi-test-0-9.txt", "+CNMI")).unwrap();
    assert_eq!(c.0.len(), 5);
    assert_eq!(c.0[0], (0..=9).collect::<Vec<u8>>());
    assert!(matches!(
        classified("gammu/atgen-cnmi-test-0-9.txt")[0],
        Line::Echo(_)
    ));
}

#[test]
fn smsc_numbers_including_ucs2_hex() {
    let smsc = |rel| Smsc::parse(&info(rel, "+CSCA")).unwrap();
    // INDEX.md reads "+972541200032"; the captured hex holds one 0 fewer.
    assert_eq!(
        smsc("gammu/at-smsc-01.txt").number.as_deref(),
        Some("+97254120032")
    );
    assert_eq!(
        smsc("gammu/at-smsc-02.txt").number.as_deref(),
        Some("+79168999100")
    );
    assert_eq!(smsc("gammu/at-smsc-02.txt").type_of_address, Some(145));
    assert_eq!(
        smsc("gammu/at-smsc-03.txt").number.as_deref(),
        Some("6281100000")
    );
    assert_eq!(
        smsc("gammu/at-smsc-05.txt").number.as_deref(),
        Some("+447802092035")
    );
    assert_eq!(smsc("gammu/at-smsc-failing-04.txt").number, None);
}

#[test]
fn pin_busy_and_signal_from_profiles() {
    let profile: serde_json::Value = serde_json::from_slice(
        &std::fs::read(corpus().join("profiles/wavecom-multiband-900e-1800.json")).unwrap(),
    )
    .unwrap();
    let cpin = profile["responses"]["AT+CPIN?\r"][0].as_str().unwrap();
    // Wavecom answers +CPIN: READY with no OK after it.
    assert_eq!(
        profile["responses"]["AT+CPIN?\r"].as_array().unwrap().len(),
        1
    );
    let Line::Info(i) = parse_line(cpin.trim_end()) else {
        panic!("{cpin:?}")
    };
    assert_eq!(PinStatus::parse(&i.body), PinStatus::Ready);
    let locked = profile["pin_locked"]["AT+CPIN?\r"][0].as_str().unwrap();
    let Line::Info(i) = parse_line(locked.trim_end()) else {
        panic!()
    };
    assert_eq!(PinStatus::parse(&i.body), PinStatus::SimPin);
    for (key, code) in [("sim_busy", 14), ("device_busy", 515)] {
        let line = profile["errors"][key][0].as_str().unwrap();
        let Line::Final(Final::Cme(e)) = parse_line(line.trim_end()) else {
            panic!("{line:?}")
        };
        assert_eq!(e.code(), Some(code));
        assert!(e.is_busy());
    }
    let other = profile["pin_locked"]["other_commands"][0].as_str().unwrap();
    let Line::Final(Final::Cme(e)) = parse_line(other.trim_end()) else {
        panic!()
    };
    assert!(e.needs_pin());

    assert_eq!(SignalQuality::parse("15,99").unwrap().rssi(), Some(15));
    assert_eq!(SignalQuality::parse("99,99").unwrap().rssi(), None);
    let op = Operator::parse("0,0,\"vodafone ES\",7").unwrap();
    assert_eq!((op.name.as_deref(), op.act), (Some("vodafone ES"), Some(7)));
    assert_eq!(Operator::parse("0").unwrap().name, None);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut f = Framer::new();
        for chunk in &chunks {
            f.push(chunk);
            while let Some(frame) = f.next() {
                if let Frame::Line(l) = frame
                    && let Line::Info(i) = parse_line(&l)
                {
                    let _ = RegistrationReport::parse("+CREG", &i.body);
                    let _ = Cpms::parse(&i.body);
                    let _ = MessageHeader::parse_cmgl(&i.body);
                    let _ = MessageHeader::parse_cmgr(&i.body);
                    let _ = CnmiSupport::parse(&i.body);
                    let _ = Smsc::parse(&i.body);
                    let _ = Operator::parse(&i.body);
                    let _ = Cmgs::parse(&i.body);
                    let _ = SignalQuality::parse(&i.body);
                }
            }
        }
    }

    #[test]
    fn at_shaped_text_never_panics(s in "[+^A-Z:0-9,\"() \\-]{0,60}") {
        parse_line(&s);
        let _ = RegistrationReport::parse("+CREG", &s);
        let _ = Cpms::parse(&s);
        let _ = MessageHeader::parse_cmgr(&s);
        let _ = CnmiSupport::parse(&s);
        let _ = Smsc::parse(&s);
        let _ = pdu_listing(&[format!("+CMGL: {s}"), s.clone()]);
    }
}
