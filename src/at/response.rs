//! Typed parsers for the information responses the worker reads, each taking the body after `+NAME:`.
//!
//! Each accepts the dialects seen in the field (see the corpus under `shared/corpus/at`) and refuses what it
//! cannot read with a [`ParseError`] rather than guessing.

use nom::{
    IResult, Parser,
    bytes::complete::tag,
    character::complete::{char, digit1, space0},
    combinator::{map_res, opt},
    multi::separated_list0,
    sequence::{delimited, preceded},
};

use super::{
    ParseError,
    fields::{self, Field},
};

/// `+CMGS: <mr>[,<scts>]`: the TP-MR the network will quote in the status report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cmgs {
    pub reference: u8,
}

impl Cmgs {
    pub fn parse(body: &str) -> Result<Self, ParseError> {
        let f = fields::split("+CMGS", body)?;
        let reference = f
            .first()
            .and_then(|r| r.int())
            .ok_or_else(|| ParseError::new("+CMGS", body, "message reference is not 0-255"))?;
        Ok(Cmgs { reference })
    }
}

/// The header line of a PDU-mode `+CMGL` or `+CMGR` entry; the PDU is the next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// Storage index (`+CMGL` only; `+CMGR` answers for the index asked).
    pub index: Option<u32>,
    /// `<stat>`: 0 received unread, 1 received read, 2 stored unsent, 3 stored sent. Some modems omit it.
    pub stat: Option<u8>,
    pub alpha: Option<String>,
    /// `<length>` as printed: TPDU octets, often wrong in the wild, so never trusted to cut the PDU.
    pub length: u32,
}

impl MessageHeader {
    /// `+CMGL: <index>,<stat>,[<alpha>],<length>`.
    pub fn parse_cmgl(body: &str) -> Result<Self, ParseError> {
        let f = fields::split("+CMGL", body)?;
        let err = |reason| ParseError::new("+CMGL", body, reason);
        let (index, stat, alpha) = match f.as_slice() {
            [i, s, _] => (i, s, None),
            [i, s, a, _] => (i, s, Some(a)),
            _ => return Err(err("expected 3 or 4 fields (PDU mode)")),
        };
        Ok(MessageHeader {
            index: Some(index.int().ok_or_else(|| err("index is not a number"))?),
            stat: stat_field(stat).map_err(|_| err("stat is not a number"))?,
            alpha: alpha.and_then(|a| a.non_empty()).map(str::to_owned),
            length: length_field(&f).ok_or_else(|| err("length is not a number"))?,
        })
    }

    /// `+CMGR: <stat>,[<alpha>],<length>`, also `<length>` alone, `<stat>,<length>`, and four fields with an
    /// extra value before `<stat>` (all in the corpus).
    pub fn parse_cmgr(body: &str) -> Result<Self, ParseError> {
        let f = fields::split("+CMGR", body)?;
        let err = |reason| ParseError::new("+CMGR", body, reason);
        let (stat, alpha) = match f.as_slice() {
            [_] => (None, None),
            [s, _] => (Some(s), None),
            [s, a, _] | [_, s, a, _] => (Some(s), Some(a)),
            _ => return Err(err("expected 1 to 4 fields (PDU mode)")),
        };
        Ok(MessageHeader {
            index: None,
            stat: match stat {
                Some(s) => stat_field(s).map_err(|_| err("stat is not a number"))?,
                None => None,
            },
            alpha: alpha.and_then(|a| a.non_empty()).map(str::to_owned),
            length: length_field(&f).ok_or_else(|| err("length is not a number"))?,
        })
    }
}

fn stat_field(f: &Field<'_>) -> Result<Option<u8>, ()> {
    match f.non_empty() {
        None => Ok(None),
        Some(_) => f.int().map(Some).ok_or(()),
    }
}

fn length_field(f: &[Field<'_>]) -> Option<u32> {
    f.last()?.int()
}

/// Whether a line is a plausible PDU: non-empty, even-length hex. Used to skip garbage between a
/// `+CMGL`/`+CMGR` header and its PDU.
pub fn is_pdu_hex(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && t.len().is_multiple_of(2) && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The PDU a line carries, if it is one: trimmed, and without the stray quote some modems print around it
/// (gammu's at-sms-04 capture ends its PDU line with `"`).
pub fn pdu_line(line: &str) -> Option<&str> {
    let pdu = line.trim().trim_matches('"');
    is_pdu_hex(pdu).then_some(pdu)
}

/// Whether a `+CMGR`/`+CMGL` answer is in text mode (`+CMGR: "REC READ","+39...",,"16/05/10,..."`): the
/// modem left PDU mode (a reset, or a modem that falls back on its own, as gammu's FT4232H captures show).
pub fn in_text_mode<S: AsRef<str>>(lines: &[S]) -> bool {
    lines.iter().any(|line| {
        let line = line.as_ref().trim();
        line.strip_prefix("+CMGR:")
            .or_else(|| {
                line.strip_prefix("+CMGL:")
                    .map(|b| b.split_once(',').map_or(b, |(_, rest)| rest))
            })
            .is_some_and(|rest| rest.trim_start().starts_with('"'))
    })
}

/// One stored message from a `+CMGL` listing or a `+CMGR` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub header: MessageHeader,
    /// The PDU hex as printed, SMSC field included.
    pub pdu_hex: String,
}

/// Pair each `+CMGL:`/`+CMGR:` header among `lines` with the PDU line after it. Garbage between a header and
/// its PDU is skipped; a header with no PDU before the next header is dropped, and so is an unreadable header
/// (text mode) together with the line after it, so one bad entry never shifts the others.
pub fn pdu_listing<S: AsRef<str>>(lines: &[S]) -> Vec<StoredMessage> {
    let mut out = Vec::new();
    let mut header: Option<MessageHeader> = None;
    for line in lines {
        let line = line.as_ref().trim();
        let parsed = if let Some(body) = line.strip_prefix("+CMGL:") {
            Some(MessageHeader::parse_cmgl(body))
        } else {
            line.strip_prefix("+CMGR:").map(MessageHeader::parse_cmgr)
        };
        match (parsed, pdu_line(line)) {
            (Some(h), _) => header = h.ok(),
            (None, Some(pdu)) => {
                if let Some(header) = header.take() {
                    out.push(StoredMessage {
                        header,
                        pdu_hex: pdu.to_owned(),
                    });
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// `+CSQ: <rssi>,<ber>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalQuality {
    /// 0-31, 99 = not known.
    pub rssi: u8,
    pub ber: u8,
}

impl SignalQuality {
    pub fn parse(body: &str) -> Result<Self, ParseError> {
        match fields::split("+CSQ", body)?.as_slice() {
            [r, b] => match (r.int(), b.int()) {
                (Some(rssi), Some(ber)) => Ok(SignalQuality { rssi, ber }),
                _ => Err(ParseError::new(
                    "+CSQ",
                    body,
                    "rssi and ber must be numbers",
                )),
            },
            _ => Err(ParseError::new("+CSQ", body, "expected 2 fields")),
        }
    }

    /// RSSI when known.
    pub fn rssi(&self) -> Option<u8> {
        (self.rssi != 99).then_some(self.rssi)
    }
}

/// 27.007 `<stat>` of +CREG/+CGREG/+CEREG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegStatus {
    NotRegistered,
    Home,
    Searching,
    Denied,
    Unknown,
    Roaming,
    /// 6 home SMS only, 7 roaming SMS only, 8 emergency only, 9/10 CSFB not preferred, and anything newer.
    Other(u8),
}

impl RegStatus {
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => RegStatus::NotRegistered,
            1 => RegStatus::Home,
            2 => RegStatus::Searching,
            3 => RegStatus::Denied,
            4 => RegStatus::Unknown,
            5 => RegStatus::Roaming,
            other => RegStatus::Other(other),
        }
    }

    /// Registered somewhere SMS can go (8, emergency only, cannot).
    pub fn is_registered(&self) -> bool {
        matches!(
            self,
            RegStatus::Home | RegStatus::Roaming | RegStatus::Other(6 | 7 | 9 | 10)
        )
    }
}

/// One +CREG/+CGREG/+CEREG line, answer (`<n>,<stat>[,...]`) or URC (`<stat>[,...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationReport {
    /// `<n>`: present in answers to `AT+CREG?`, absent in URCs.
    pub n: Option<u8>,
    pub stat: RegStatus,
    /// Location/tracking area code, hex on the wire (quoted or, on Huawei, not).
    pub lac: Option<u32>,
    pub cell_id: Option<u32>,
    /// `<AcT>`: 0 GSM, 2 UTRAN, 7 E-UTRAN...
    pub act: Option<u8>,
}

impl RegistrationReport {
    /// Parse the body of `name` (`+CREG`, `+CGREG` or `+CEREG`, for error messages).
    pub fn parse(name: &'static str, body: &str) -> Result<Self, ParseError> {
        let f = fields::split(name, body)?;
        let err = |reason| ParseError::new(name, body, reason);
        // Answers carry <n> first. They are told from URCs by field count, and with four fields by the second
        // one: a small bare number is a <stat>, anything else is a LAC (`<stat>,<lac>,<ci>,<act>`).
        let is_answer = match f.len() {
            0 => return Err(err("empty")),
            1 | 3 => false,
            2 => true,
            4 => f
                .get(1)
                .and_then(|s| s.int::<u8>())
                .is_some_and(|s| s <= 11),
            _ => true,
        };
        let (n, rest) = match f.split_first() {
            Some((n, rest)) if is_answer => (
                Some(n.int().ok_or_else(|| err("<n> is not a number"))?),
                rest,
            ),
            _ => (None, f.as_slice()),
        };
        let (stat, location) = rest.split_first().ok_or_else(|| err("no <stat>"))?;
        let stat = RegStatus::from_code(stat.int().ok_or_else(|| err("<stat> is not a number"))?);
        let hex = |i: usize| -> Result<Option<u32>, ParseError> {
            match location.get(i).and_then(|f| f.non_empty()) {
                None => Ok(None),
                Some(_) => location
                    .get(i)
                    .and_then(|f| f.hex())
                    .map(Some)
                    .ok_or_else(|| err("bad hex")),
            }
        };
        Ok(RegistrationReport {
            n,
            stat,
            lac: hex(0)?,
            cell_id: hex(1)?,
            act: location.get(2).and_then(|a| a.int()),
        })
    }
}

/// `+COPS: <mode>[,<format>,<oper>[,<AcT>]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub mode: u8,
    pub name: Option<String>,
    pub act: Option<u8>,
}

impl Operator {
    pub fn parse(body: &str) -> Result<Self, ParseError> {
        let f = fields::split("+COPS", body)?;
        let mode = f
            .first()
            .and_then(|m| m.int())
            .ok_or_else(|| ParseError::new("+COPS", body, "<mode> is not a number"))?;
        Ok(Operator {
            mode,
            name: f
                .get(2)
                .and_then(|n| n.non_empty())
                .map(|n| n.trim().to_owned()),
            act: f.get(3).and_then(|a| a.int()),
        })
    }
}

/// Use of one message storage, from `+CPMS:` answers to `AT+CPMS?` or `AT+CPMS=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Given in answers to `AT+CPMS?`, absent in answers to a selection.
    pub memory: Option<String>,
    pub used: u32,
    pub total: u32,
}

impl MemoryUsage {
    pub fn is_full(&self) -> bool {
        self.total > 0 && self.used >= self.total
    }
}

/// The three shapes of `+CPMS:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cpms {
    /// `AT+CPMS=?`: the memories each of `<mem1>`, `<mem2>`, `<mem3>` accepts, with or without parentheses.
    Supported(Vec<Vec<String>>),
    /// `AT+CPMS?` (`"SM",3,30,...`) or a selection (`2,4,0,4,0,4`).
    Usage(Vec<MemoryUsage>),
}

impl Cpms {
    pub fn parse(body: &str) -> Result<Self, ParseError> {
        let body = body.trim();
        if body.is_empty() {
            return Ok(Cpms::Supported(Vec::new()));
        }
        if body.starts_with('(') {
            return Ok(Cpms::Supported(supported_groups(body)));
        }
        let f = fields::split("+CPMS", body)?;
        if f.iter().all(|f| f.quoted) {
            return Ok(Cpms::Supported(
                f.iter().map(|m| vec![m.text.to_owned()]).collect(),
            ));
        }
        let err = || ParseError::new("+CPMS", body, "expected memory/used/total values");
        let stride = if f.first().is_some_and(|m| m.quoted) {
            3
        } else {
            2
        };
        if !f.len().is_multiple_of(stride) {
            return Err(err());
        }
        f.chunks(stride)
            .map(|c| match c {
                [m, u, t] => Some(MemoryUsage {
                    memory: Some(m.text.to_owned()),
                    used: u.int()?,
                    total: t.int()?,
                }),
                [u, t] => Some(MemoryUsage {
                    memory: None,
                    used: u.int()?,
                    total: t.int()?,
                }),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(Cpms::Usage)
            .ok_or_else(err)
    }
}

/// Parenthesised groups, read tolerantly: a missing quote (`(ME", "SR")`, in the corpus) loses nothing.
fn supported_groups(body: &str) -> Vec<Vec<String>> {
    body.split('(')
        .filter_map(|g| g.split(')').next())
        .filter(|g| !g.trim().is_empty())
        .map(|g| {
            g.split(',')
                .map(|m| m.trim().trim_matches('"').trim().to_owned())
                .filter(|m| !m.is_empty())
                .collect()
        })
        .collect()
}

/// `+CPIN: <code>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinStatus {
    Ready,
    SimPin,
    SimPuk,
    /// Anything else (`PH-SIM PIN`, `SIM PIN2`, ...): the SIM is locked in a way we cannot fix.
    Other(String),
}

impl PinStatus {
    pub fn parse(body: &str) -> Self {
        match body.trim().trim_matches('"') {
            "READY" => PinStatus::Ready,
            "SIM PIN" => PinStatus::SimPin,
            "SIM PUK" => PinStatus::SimPuk,
            other => PinStatus::Other(other.to_owned()),
        }
    }
}

/// `+CSCA: <sca>,<tosca>`: the SMSC number, or `None` when none is configured (`""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smsc {
    pub number: Option<String>,
    pub type_of_address: Option<u8>,
}

impl Smsc {
    pub fn parse(body: &str) -> Result<Self, ParseError> {
        let f = fields::split("+CSCA", body)?;
        let number = f
            .first()
            .and_then(|n| n.non_empty())
            .map(|n| ucs2_hex_number(n).unwrap_or_else(|| n.to_owned()));
        Ok(Smsc {
            number,
            type_of_address: f.get(1).and_then(|t| t.int()),
        })
    }
}

/// With `AT+CSCS="UCS2"` modems print numbers as UTF-16 hex (`002B0039...`); decode only when the result is
/// a plausible number, so a national number made of digits is never mistaken for hex.
fn ucs2_hex_number(s: &str) -> Option<String> {
    if s.len() < 8 || !s.len().is_multiple_of(4) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let units = (0..s.len())
        .step_by(4)
        .map(|i| {
            s.get(i..i + 4)
                .and_then(|u| u16::from_str_radix(u, 16).ok())
        })
        .collect::<Option<Vec<u16>>>()?;
    let text = String::from_utf16(&units).ok()?;
    text.chars()
        .all(|c| c.is_ascii_digit() || c == '+')
        .then_some(text)
}

/// `+CSMS: <service>,<mt>,<mo>,<bm>`: service 1 (phase 2+) means routed `+CMT`/`+CDS` need `AT+CNMA`.
pub fn csms_service(body: &str) -> Result<u8, ParseError> {
    fields::split("+CSMS", body)?
        .first()
        .and_then(|s| s.int())
        .ok_or_else(|| ParseError::new("+CSMS", body, "<service> is not a number"))
}

/// `+CNUM: [<alpha>],<number>,<type>`: the subscriber's own number, when the SIM knows it.
pub fn own_number(body: &str) -> Result<Option<String>, ParseError> {
    let f = fields::split("+CNUM", body)?;
    match f.get(1) {
        Some(n) => Ok(n.non_empty().map(str::to_owned)),
        None => Err(ParseError::new(
            "+CNUM",
            body,
            "expected <alpha>,<number>,<type>",
        )),
    }
}

/// `+CNMI: 2,1,2,1,0` (the answer to `AT+CNMI?`): the setting in force, fields left out read as 0.
pub fn cnmi_setting(body: &str) -> Option<[u8; 5]> {
    let mut setting = [0u8; 5];
    let fields: Vec<&str> = body.split(',').map(str::trim).collect();
    if fields.is_empty() || fields.len() > 5 {
        return None;
    }
    for (slot, field) in setting.iter_mut().zip(fields) {
        *slot = field.parse().ok()?;
    }
    Some(setting)
}

/// `+CNMI: (...),(...),...`: the values each `AT+CNMI` parameter accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnmiSupport(pub Vec<Vec<u8>>);

impl CnmiSupport {
    pub fn parse(body: &str) -> Result<Self, ParseError> {
        let list = |i| -> IResult<&str, Vec<u8>> {
            let (i, ranges) = delimited(
                char('('),
                separated_list0(
                    (space0, char(','), space0),
                    (number, opt(preceded(char('-'), number))),
                ),
                char(')'),
            )
            .parse(i)?;
            Ok((
                i,
                ranges
                    .into_iter()
                    .flat_map(|(a, b)| a..=b.unwrap_or(a))
                    .collect(),
            ))
        };
        let (rest, params) = preceded(space0, separated_list0((space0, tag(","), space0), list))
            .parse(body)
            .map_err(|_| ParseError::new("+CNMI", body, "expected parenthesised value lists"))?;
        if !rest.trim().is_empty() {
            return Err(ParseError::new("+CNMI", body, "text after the value lists"));
        }
        Ok(CnmiSupport(params))
    }

    /// Whether every value of `AT+CNMI=<values>` is advertised. Advertised is not accepted (some modems
    /// advertise `ds=1` and refuse it), so callers still fall back on an error.
    pub fn allows(&self, values: &[u8]) -> bool {
        values
            .iter()
            .enumerate()
            .all(|(i, v)| self.0.get(i).is_none_or(|allowed| allowed.contains(v)))
    }
}

fn number(i: &str) -> IResult<&str, u8> {
    map_res(digit1, str::parse).parse(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmgr_header_variants() {
        let h = MessageHeader::parse_cmgr("0,Test User 123,29").unwrap();
        assert_eq!(
            (h.stat, h.alpha.as_deref(), h.length),
            (Some(0), Some("Test User 123"), 29)
        );
        let h = MessageHeader::parse_cmgr(",,92").unwrap();
        assert_eq!((h.stat, h.alpha, h.length), (None, None, 92));
        assert_eq!(MessageHeader::parse_cmgr("24").unwrap().length, 24);
        assert_eq!(MessageHeader::parse_cmgr("4,1,,151").unwrap().stat, Some(1));
        assert!(MessageHeader::parse_cmgr("\"REC UNREAD\",\"+1\",,\"x\"").is_err());
    }

    #[test]
    fn registration_forms() {
        let r = RegistrationReport::parse("+CREG", "1,\"5E25\",\"605F\",7").unwrap();
        assert_eq!(
            (r.n, r.stat, r.lac, r.act),
            (None, RegStatus::Home, Some(0x5E25), Some(7))
        );
        let r = RegistrationReport::parse("+CREG", "5").unwrap();
        assert_eq!((r.n, r.stat), (None, RegStatus::Roaming));
        let r = RegistrationReport::parse("+CEREG", "0,1").unwrap();
        assert_eq!((r.n, r.stat, r.lac), (Some(0), RegStatus::Home, None));
    }

    #[test]
    fn csms_and_cnum() {
        assert_eq!(csms_service("1,1,1,1").unwrap(), 1);
        assert_eq!(
            own_number("\"Own\",\"+4915112345678\",145")
                .unwrap()
                .as_deref(),
            Some("+4915112345678")
        );
        assert_eq!(own_number(",\"\",129").unwrap(), None);
    }

    #[test]
    fn cnmi_allows() {
        let c = CnmiSupport::parse("(0-2),(0,1,3),(0),(0,1),(0,1)").unwrap();
        assert_eq!(c.0[1], vec![0, 1, 3]);
        assert!(c.allows(&[2, 1, 0, 1, 0]));
        assert!(!c.allows(&[2, 2, 0, 0, 0]));
    }

    #[test]
    fn cnmi_setting_reads_the_setting_in_force() {
        assert_eq!(cnmi_setting("2,1,2,1,0"), Some([2, 1, 2, 1, 0]));
        assert_eq!(cnmi_setting(" 2, 1, 0"), Some([2, 1, 0, 0, 0]));
        assert_eq!(cnmi_setting("2,1,x,1,0"), None);
        assert_eq!(cnmi_setting("1,2,3,4,5,6"), None);
    }
}
