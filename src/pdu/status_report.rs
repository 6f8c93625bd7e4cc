//! SMS-STATUS-REPORT (3GPP TS 23.040 9.2.2.3): the SMSC telling us what became of a message we sent.

use jiff::Zoned;

use super::reader::Reader;
use super::{PduError, StatusReport, address, timestamp};

/// TP-MTI of SMS-STATUS-REPORT, with TP-MMS set (no more messages), as networks send it.
const FIRST_OCTET: u8 = 0x06;

/// Reads the report up to TP-ST. What follows (TP-PI and the TP-PID, TP-DCS and TP-UD it announces) is
/// optional (23.040 9.2.2.3) and unused here, so it is not read: networks send it cut short, padded with
/// `FF`, or with a compressed DCS, and a report refused for that would leave its message never confirmed
/// (libgammu takes such reports too).
pub(crate) fn decode(r: &mut Reader) -> Result<StatusReport, PduError> {
    let reference = r.u8("TP-MR")?;
    let recipient = address::decode_tp(r, "TP-RA")?;
    let submitted = timestamp::decode_or_none(r, "TP-SCTS")?;
    let discharged = timestamp::decode_or_none(r, "TP-DT")?;
    let status = r.u8("TP-ST")?;
    Ok(StatusReport {
        reference,
        recipient,
        submitted,
        discharged,
        status,
    })
}

pub(crate) fn encode(
    smsc: Option<&str>,
    reference: u8,
    recipient: &str,
    submitted: &Zoned,
    discharged: &Zoned,
    status: u8,
) -> Result<Vec<u8>, PduError> {
    let mut pdu = Vec::with_capacity(40);
    address::encode_smsc(&mut pdu, smsc)?;
    pdu.extend_from_slice(&[FIRST_OCTET, reference]);
    address::encode_number(&mut pdu, recipient)?;
    timestamp::encode(&mut pdu, submitted)?;
    timestamp::encode(&mut pdu, discharged)?;
    pdu.push(status);
    Ok(pdu)
}

/// What TP-ST (23.040 9.2.3.15) says about the message, as the dispatcher needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusClass {
    /// 0x00: received by the recipient.
    Delivered,
    /// 0x01-0x1F: completed without confirmed delivery (forwarded, replaced).
    Completed,
    /// 0x20-0x3F: temporary error, the SMSC is still trying: not final.
    Retrying,
    /// 0x40-0x7F: permanent error, or a temporary one the SMSC gave up on: final failure.
    Failed,
    /// 0x80-0xFF: reserved values.
    Reserved,
}

impl StatusReport {
    pub fn class(&self) -> StatusClass {
        match self.status {
            0x00 => StatusClass::Delivered,
            0x01..=0x1F => StatusClass::Completed,
            0x20..=0x3F => StatusClass::Retrying,
            0x40..=0x7F => StatusClass::Failed,
            _ => StatusClass::Reserved,
        }
    }
}
