//! Classifying one framed line: final result, unsolicited result code, information response, or other text.
//!
//! Classification needs no context, so it can run on every line as it arrives; deciding what a line *means*
//! (the answer to the pending command, or noise to route elsewhere) is the session's job. Lines that are both
//! answers and URCs depending on the moment (`+CREG:`, `+CPIN:`) are returned as [`Line::Info`] for that
//! reason. `+CMT` and `+CDS` are followed by a PDU line: see [`Urc::pdu_follows`].

use nom::{
    IResult, Parser,
    bytes::complete::take_while1,
    character::complete::{char, one_of},
    combinator::{opt, recognize},
};

use super::{CmeError, CmsError, fields};

/// A final result code: the command is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    Ok,
    Error,
    /// `COMMAND NOT SUPPORT` (SIMCom and others), an `ERROR` in all but name.
    NotSupported,
    Cme(CmeError),
    Cms(CmsError),
    /// `NO CARRIER`, `BUSY`, `NO ANSWER`, `NO DIALTONE`: results of calls. An SMS gateway never dials, so
    /// the session treats these as noise when they arrive on their own after a remote hang-up.
    Call(CallResult),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    NoCarrier,
    Busy,
    NoAnswer,
    NoDialtone,
}

/// An unsolicited result code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Urc {
    /// `+CMTI: <mem>,<index>`: a new message was stored.
    Cmti {
        memory: String,
        index: u32,
    },
    /// `+CDSI: <mem>,<index>`: a status report was stored.
    Cdsi {
        memory: String,
        index: u32,
    },
    /// `+CMT: [<alpha>],<length>`: a message routed directly; the PDU is the next line.
    /// `length` is `None` for the text-mode form, whose body also follows on the next line.
    Cmt {
        alpha: Option<String>,
        length: Option<u32>,
    },
    /// `+CDS: <length>`: a status report routed directly; the PDU is the next line.
    Cds {
        length: u32,
    },
    Ring,
    /// Start-up notices: `RDY`, `SMS DONE`, `PB DONE`, `Call Ready`, `SMS Ready`.
    Boot(String),
    /// Any other URC: vendor noise (`^RSSI:`, `^BOOT:`, `+ZDONR:`), call and USSD notices.
    Other {
        name: String,
        body: String,
    },
}

impl Urc {
    /// The next line is the message (PDU or text) this URC announces.
    pub fn pdu_follows(&self) -> bool {
        matches!(self, Urc::Cmt { .. } | Urc::Cds { .. })
    }

    /// The modem has just restarted (`RDY`, the first line Quectel and SIMCom modems print once their
    /// UART is up), so a command in flight will never be answered. The later notices (`SMS DONE`...)
    /// can come while a modem that booted moments ago already answers commands, so they end no command.
    pub fn is_restart(&self) -> bool {
        matches!(self, Urc::Boot(notice) if notice.eq_ignore_ascii_case("RDY"))
    }
}

/// The result as the modem wrote it, for logs an admin reads.
impl std::fmt::Display for Final {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Final::Ok => f.write_str("OK"),
            Final::Error => f.write_str("ERROR"),
            Final::NotSupported => f.write_str("COMMAND NOT SUPPORT"),
            Final::Cme(error) => error.fmt(f),
            Final::Cms(error) => error.fmt(f),
            Final::Call(CallResult::NoCarrier) => f.write_str("NO CARRIER"),
            Final::Call(CallResult::Busy) => f.write_str("BUSY"),
            Final::Call(CallResult::NoAnswer) => f.write_str("NO ANSWER"),
            Final::Call(CallResult::NoDialtone) => f.write_str("NO DIALTONE"),
        }
    }
}

/// The notice as the modem wrote it (without a routed message's PDU line), for logs.
impl std::fmt::Display for Urc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Urc::Cmti { memory, index } => write!(f, "+CMTI: \"{memory}\",{index}"),
            Urc::Cdsi { memory, index } => write!(f, "+CDSI: \"{memory}\",{index}"),
            Urc::Cmt { alpha, length } => {
                write!(f, "+CMT: {}", alpha.as_deref().unwrap_or(""))?;
                length.map_or(Ok(()), |length| write!(f, ",{length}"))
            }
            Urc::Cds { length } => write!(f, "+CDS: {length}"),
            Urc::Ring => f.write_str("RING"),
            Urc::Boot(notice) => f.write_str(notice),
            Urc::Other { name, body } => write!(f, "{name}: {body}"),
        }
    }
}

/// An information response `+NAME: body`, typed by the parsers in [`super::response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The prefix with its `+`, e.g. `+CSQ`.
    pub name: String,
    /// What follows the colon, trimmed.
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Final(Final),
    Urc(Urc),
    Info(Info),
    /// The modem repeating our command (echo on).
    Echo(String),
    /// Anything else: PDU hex, identity digits, message text, garbage.
    Text(String),
}

/// Prefixes that only ever arrive unsolicited.
const URC_NAMES: &[&str] = &[
    "+CLIP", "+CRING", "+CUSD", "+CIEV", "+CCWA", "+CGEV", "+CUSATP", "+STIN", "+QIND", "+QUSIM",
    "+ZDONR", "+ZPASR", "+ZEND", "+ZUSIMR", "+PACSP", "+CTZV", "+CTZE", "+NITZ",
];

const BOOT_NOTICES: &[&str] = &["RDY", "SMS DONE", "PB DONE", "CALL READY", "SMS READY"];

/// Classify one line (without its terminator).
pub fn parse_line(line: &str) -> Line {
    let t = line.trim();
    if let Some(fin) = final_result(t) {
        return Line::Final(fin);
    }
    let upper = t.to_ascii_uppercase();
    if upper == "RING" {
        return Line::Urc(Urc::Ring);
    }
    if BOOT_NOTICES.contains(&upper.as_str()) {
        return Line::Urc(Urc::Boot(t.to_owned()));
    }
    if let Ok((body, name)) = prefixed_name(t) {
        let body = body.trim();
        if name.starts_with('^') || URC_NAMES.contains(&name) {
            return Line::Urc(other(name, body));
        }
        if let Some(urc) = message_urc(name, body) {
            return Line::Urc(urc);
        }
        return Line::Info(Info {
            name: name.to_owned(),
            body: body.to_owned(),
        });
    }
    if upper.starts_with("AT") {
        return Line::Echo(t.to_owned());
    }
    Line::Text(line.to_owned())
}

fn final_result(t: &str) -> Option<Final> {
    let fin = match t {
        "OK" => Final::Ok,
        "ERROR" => Final::Error,
        "COMMAND NOT SUPPORT" => Final::NotSupported,
        "NO CARRIER" => Final::Call(CallResult::NoCarrier),
        "BUSY" => Final::Call(CallResult::Busy),
        "NO ANSWER" => Final::Call(CallResult::NoAnswer),
        "NO DIALTONE" | "NO DIAL TONE" => Final::Call(CallResult::NoDialtone),
        _ => {
            if let Some(body) = t.strip_prefix("+CME ERROR") {
                let body = body.trim_start().strip_prefix(':').unwrap_or(body);
                Final::Cme(CmeError::parse(body))
            } else if let Some(body) = t.strip_prefix("+CMS ERROR") {
                let body = body.trim_start().strip_prefix(':').unwrap_or(body).trim();
                Final::Cms(
                    body.parse()
                        .map_or_else(|_| CmsError::from_text(body), CmsError::from_code),
                )
            } else {
                return None;
            }
        }
    };
    Some(fin)
}

/// `+NAME:` or `^NAME:` (the colon is optional for a few vendor lines such as `^BOOT`).
fn prefixed_name(i: &str) -> IResult<&str, &str> {
    let (i, name) = recognize((
        one_of("+^"),
        take_while1(|c: char| c.is_ascii_alphanumeric() || c == '_'),
    ))
    .parse(i)?;
    let (i, colon) = opt(char(':')).parse(i)?;
    if colon.is_none() && !(name.starts_with('^') || i.is_empty()) {
        return Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Char,
        )));
    }
    Ok((i, name))
}

fn other(name: &str, body: &str) -> Urc {
    Urc::Other {
        name: name.to_owned(),
        body: body.to_owned(),
    }
}

/// The SMS URCs; a malformed one still comes back as a URC (`Other`) so it is never taken for an answer.
fn message_urc(name: &str, body: &str) -> Option<Urc> {
    let fallback = || other(name, body);
    let urc = match name {
        "+CMTI" | "+CDSI" => {
            let Some((memory, index)) = stored_at(body) else {
                return Some(fallback());
            };
            if name == "+CMTI" {
                Urc::Cmti { memory, index }
            } else {
                Urc::Cdsi { memory, index }
            }
        }
        "+CMT" => match fields::split("+CMT", body) {
            Ok(f) if f.len() <= 2 => match f.last().and_then(|l| l.int()) {
                Some(length) => Urc::Cmt {
                    alpha: f
                        .first()
                        .filter(|_| f.len() == 2)
                        .and_then(|a| a.non_empty())
                        .map(str::to_owned),
                    length: Some(length),
                },
                None => Urc::Cmt {
                    alpha: None,
                    length: None,
                },
            },
            _ => Urc::Cmt {
                alpha: None,
                length: None,
            },
        },
        "+CDS" => match body.parse() {
            Ok(length) => Urc::Cds { length },
            // The text-mode +CDS is a single line with the report's fields.
            Err(_) => fallback(),
        },
        _ => return None,
    };
    Some(urc)
}

fn stored_at(body: &str) -> Option<(String, u32)> {
    let f = fields::split("+CMTI", body).ok()?;
    match f.as_slice() {
        [memory, index] => Some((memory.text.to_owned(), index.int()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs show results and notices as the modem wrote them (an error code with its meaning after it).
    #[test]
    fn results_and_notices_display_as_the_modem_writes_them() {
        for line in [
            "OK",
            "ERROR",
            "COMMAND NOT SUPPORT",
            "NO CARRIER",
            "+CMS ERROR: 500",
            "+CME ERROR: 10",
            "+CMTI: \"SM\",3",
            "+CDSI: \"SR\",0",
            "+CMT: ,24",
            "+CDS: 25",
            "RDY",
        ] {
            let shown = match parse_line(line) {
                Line::Final(result) => result.to_string(),
                Line::Urc(urc) => urc.to_string(),
                other => panic!("{line}: {other:?}"),
            };
            assert!(shown.starts_with(line), "{line} shown as {shown}");
        }
        assert_eq!(
            Final::Cms(CmsError(500)).to_string(),
            "+CMS ERROR: 500 (unknown error)"
        );
    }

    #[test]
    fn finals_including_vendor_and_text_forms() {
        assert_eq!(parse_line("OK"), Line::Final(Final::Ok));
        assert_eq!(
            parse_line("COMMAND NOT SUPPORT"),
            Line::Final(Final::NotSupported)
        );
        assert_eq!(
            parse_line("+CME ERROR: SIM busy"),
            Line::Final(Final::Cme(CmeError::Code(14)))
        );
        assert_eq!(
            parse_line("+CMS ERROR: 500"),
            Line::Final(Final::Cms(CmsError(500)))
        );
        assert_eq!(
            parse_line("+CMS ERROR:322"),
            Line::Final(Final::Cms(CmsError(322)))
        );
        assert_eq!(
            parse_line("NO CARRIER"),
            Line::Final(Final::Call(CallResult::NoCarrier))
        );
    }

    #[test]
    fn urcs_and_vendor_noise() {
        assert_eq!(
            parse_line("+CMTI: \"SM\",3"),
            Line::Urc(Urc::Cmti {
                memory: "SM".into(),
                index: 3
            })
        );
        assert_eq!(parse_line("+CDS:25"), Line::Urc(Urc::Cds { length: 25 }));
        assert_eq!(
            parse_line("+CMT: ,23"),
            Line::Urc(Urc::Cmt {
                alpha: None,
                length: Some(23)
            })
        );
        assert_eq!(
            parse_line("^RSSI:15"),
            Line::Urc(Urc::Other {
                name: "^RSSI".into(),
                body: "15".into()
            })
        );
        assert_eq!(
            parse_line("^BOOT"),
            Line::Urc(Urc::Other {
                name: "^BOOT".into(),
                body: "".into()
            })
        );
        assert_eq!(
            parse_line("SMS DONE"),
            Line::Urc(Urc::Boot("SMS DONE".into()))
        );
        assert!(matches!(
            parse_line("+CMTI: junk"),
            Line::Urc(Urc::Other { .. })
        ));
    }

    #[test]
    fn info_echo_and_text() {
        assert_eq!(
            parse_line("+CSQ: 15,99"),
            Line::Info(Info {
                name: "+CSQ".into(),
                body: "15,99".into()
            })
        );
        assert_eq!(parse_line("AT+CSQ"), Line::Echo("AT+CSQ".into()));
        assert_eq!(parse_line("0791AB"), Line::Text("0791AB".into()));
        assert_eq!(parse_line("+ 12"), Line::Text("+ 12".into()));
    }
}
