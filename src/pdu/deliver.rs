//! SMS-DELIVER (3GPP TS 23.040 9.2.2.1): what the network hands a modem, and what the simulator injects.

use jiff::Zoned;

use super::reader::Reader;
use super::{Deliver, EncodingChoice, PduError, UDHI, address, segment, timestamp, udh, user_data};

/// TP-MTI of SMS-DELIVER.
const MTI_DELIVER: u8 = 0x00;
/// TP-MMS: set means *no* more messages are waiting, as networks send it.
const NO_MORE_MESSAGES: u8 = 0x04;
/// TP-SRI: a status report will be returned to the sender.
const SRI: u8 = 0x20;

pub(crate) fn decode(r: &mut Reader, first: u8) -> Result<Deliver, PduError> {
    let sender = address::decode_tp(r, "TP-OA")?;
    r.u8("TP-PID")?;
    let dcs_offset = r.offset();
    let encoding = user_data::encoding_from_dcs(r.u8("TP-DCS")?, dcs_offset)?;
    let timestamp = timestamp::decode_or_none(r, "TP-SCTS")?;
    let decoded = user_data::decode(r, encoding, first & UDHI != 0)?;
    Ok(Deliver {
        sender,
        timestamp,
        encoding,
        concat: decoded.concat,
        user_data: decoded.user_data,
        status_report_indication: first & SRI != 0,
    })
}

pub(crate) fn encode(
    smsc: Option<&str>,
    sender: &str,
    text: &str,
    encoding: EncodingChoice,
    time: &Zoned,
    concat_reference: u8,
) -> Result<Vec<Vec<u8>>, PduError> {
    let plan = segment::plan(text, encoding, false)?;
    // Everything between the first octet and TP-UDL is the same in every part.
    let mut originator = Vec::with_capacity(24);
    address::encode_sender(&mut originator, sender)?;
    originator.extend_from_slice(&[0x00, user_data::dcs_for(plan.coding)]);
    timestamp::encode(&mut originator, time)?;
    let parts = plan.parts();
    let total = parts.len();
    let mut pdus = Vec::with_capacity(total);
    for (index, part_text) in parts.enumerate() {
        let mut pdu = Vec::with_capacity(176);
        address::encode_smsc(&mut pdu, smsc)?;
        let header = if total > 1 {
            pdu.push(MTI_DELIVER | NO_MORE_MESSAGES | UDHI);
            udh::concat_8bit(concat_reference, index as u8 + 1, total as u8).to_vec()
        } else {
            pdu.push(MTI_DELIVER | NO_MORE_MESSAGES);
            Vec::new()
        };
        pdu.extend_from_slice(&originator);
        user_data::encode_into(&mut pdu, plan.coding, &header, part_text)?;
        pdus.push(pdu);
    }
    Ok(pdus)
}
