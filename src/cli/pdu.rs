//! `modemgate pdu encode|decode`: the codec from a shell, so integrators can see exactly what the gateway
//! writes to a modem and how it reads what a modem prints.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;

use crate::pdu::{self, Encoding, EncodingChoice, SubmitOptions, Tpdu, UserData};

#[derive(Debug, clap::Subcommand)]
pub enum PduCommand {
    /// Encode a text as SMS-SUBMIT PDUs: one JSON line per part, `{"length": N, "pdu": "HEX"}`.
    Encode(EncodeArgs),
    /// Decode one PDU (SMSC field included, as +CMGR/+CMGL/+CMT/+CDS print it) to one JSON object.
    Decode(DecodeArgs),
}

#[derive(Debug, clap::Args)]
pub struct EncodeArgs {
    /// Recipient: +E164, national digits or a short code.
    #[arg(long)]
    pub to: String,
    /// Message text (it may start with `-`: `--text "-5 degrees"`).
    #[arg(long, allow_hyphen_values = true)]
    pub text: String,
    #[arg(long, value_enum, default_value_t = EncodingArg::Auto)]
    pub encoding: EncodingArg,
    /// Replace look-alike Unicode (curly quotes, dashes, ...) with GSM characters when that avoids UCS-2.
    #[arg(long)]
    pub smart: bool,
    /// Ask the SMSC for a status report (TP-SRR).
    #[arg(long)]
    pub report: bool,
    /// TP-MR, also used as the concatenation reference of a multipart message.
    #[arg(long = "ref", default_value_t = 0)]
    pub reference: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EncodingArg {
    Auto,
    Gsm7,
    Ucs2,
}

impl From<EncodingArg> for EncodingChoice {
    fn from(arg: EncodingArg) -> Self {
        match arg {
            EncodingArg::Auto => EncodingChoice::Auto,
            EncodingArg::Gsm7 => EncodingChoice::Gsm7,
            EncodingArg::Ucs2 => EncodingChoice::Ucs2,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// The PDU in hex.
    pub hex: String,
}

pub fn run(command: PduCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        PduCommand::Encode(args) => encode(&args, out),
        PduCommand::Decode(args) => decode(&args, out),
    }
}

#[derive(Serialize)]
struct PartJson {
    length: usize,
    pdu: String,
}

pub fn encode(args: &EncodeArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let opts = SubmitOptions {
        encoding: args.encoding.into(),
        smart: args.smart,
        status_report: args.report,
        message_reference: args.reference,
        concat_reference: args.reference,
        validity: None,
    };
    let parts = pdu::encode_submit(&args.to, &args.text, &opts).context("cannot encode")?;
    for part in parts {
        let line = PartJson {
            length: part.tpdu_length,
            pdu: part.hex(),
        };
        serde_json::to_writer(&mut *out, &line)?;
        writeln!(out)?;
    }
    Ok(())
}

/// `udh` in the decode output: the concatenation facts, when there are any.
#[derive(Serialize)]
struct UdhJson {
    #[serde(rename = "ref")]
    reference: u16,
    part: u8,
    parts: u8,
}

/// The decode output. Fields that only one message type has are left out of the others.
#[derive(Serialize)]
struct DecodedJson {
    #[serde(rename = "type")]
    kind: &'static str,
    smsc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient: Option<String>,
    text: Option<String>,
    /// 8-bit user data, which has no text.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_hex: Option<String>,
    encoding: Option<Encoding>,
    timestamp: Option<String>,
    udh: Option<UdhJson>,
    /// TP-MR: of the message itself (submit) or of the message reported on (status report).
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_class: Option<pdu::StatusClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    discharge_time: Option<String>,
}

impl DecodedJson {
    fn new(kind: &'static str, smsc: Option<String>) -> Self {
        DecodedJson {
            kind,
            smsc,
            sender: None,
            recipient: None,
            text: None,
            data_hex: None,
            encoding: None,
            timestamp: None,
            udh: None,
            reference: None,
            status: None,
            status_class: None,
            discharge_time: None,
        }
    }

    fn with_user_data(
        mut self,
        encoding: Encoding,
        concat: Option<pdu::Concat>,
        user_data: UserData,
    ) -> Self {
        self.encoding = Some(encoding);
        match user_data {
            UserData::Text(text) => self.text = Some(text),
            UserData::Binary(data) => self.data_hex = Some(hex::encode_upper(data)),
        }
        self.udh = concat.map(|c| UdhJson {
            reference: c.reference,
            part: c.part,
            parts: c.parts,
        });
        self
    }
}

pub fn decode(args: &DecodeArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let decoded = pdu::decode_hex(&args.hex).context("cannot decode PDU")?;
    let smsc = decoded.smsc.map(|a| a.value);
    let json = match decoded.tpdu {
        Tpdu::Deliver(d) => DecodedJson {
            sender: Some(d.sender.value),
            timestamp: d.timestamp.as_ref().map(pdu::rfc3339),
            ..DecodedJson::new("deliver", smsc)
        }
        .with_user_data(d.encoding, d.concat, d.user_data),
        Tpdu::Submit(s) => DecodedJson {
            recipient: Some(s.recipient.value),
            reference: Some(s.reference),
            ..DecodedJson::new("submit", smsc)
        }
        .with_user_data(s.encoding, s.concat, s.user_data),
        Tpdu::StatusReport(r) => DecodedJson {
            recipient: Some(r.recipient.value.clone()),
            timestamp: r.submitted.as_ref().map(pdu::rfc3339),
            reference: Some(r.reference),
            status: Some(r.status),
            status_class: Some(r.class()),
            discharge_time: r.discharged.as_ref().map(pdu::rfc3339),
            ..DecodedJson::new("status_report", smsc)
        },
    };
    serde_json::to_writer(&mut *out, &json)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_to_json(hex: &str) -> serde_json::Value {
        let mut out = Vec::new();
        decode(
            &DecodeArgs {
                hex: hex.to_owned(),
            },
            &mut out,
        )
        .unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn decode_prints_a_status_report_with_integers() {
        let json = decode_to_json("0006D60B911326880736F4111011719551401110117195714000");
        assert_eq!(json["type"], "status_report");
        assert_eq!(json["smsc"], serde_json::Value::Null);
        assert_eq!(json["recipient"], "+31628870634");
        assert_eq!(json["reference"], 214);
        assert_eq!(json["status"], 0);
        assert_eq!(json["timestamp"], "2011-01-11T17:59:15+01:00");
        assert_eq!(json["discharge_time"], "2011-01-11T17:59:17+01:00");
    }

    #[test]
    fn encode_prints_one_line_per_part() {
        let args = EncodeArgs {
            to: "+15125551234".into(),
            text: "x".repeat(200),
            encoding: EncodingArg::Auto,
            smart: false,
            report: true,
            reference: 9,
        };
        let mut out = Vec::new();
        encode(&args, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2);
        for line in text.lines() {
            let part: serde_json::Value = serde_json::from_str(line).unwrap();
            let pdu = part["pdu"].as_str().unwrap();
            assert_eq!(part["length"].as_u64().unwrap() as usize, pdu.len() / 2 - 1);
        }
    }
}
