//! Command builders. Each returns the command without its terminating `\r`, which the session adds.
//!
//! Parameters that come from configuration or the queue (PIN, PDU) are validated here, because a stray `\r`
//! or `"` in them would end the command early and run the rest as another one.

/// Ends the PDU after the prompt: submit.
pub const CTRL_Z: u8 = 0x1A;
/// Sent instead of the PDU to abort `AT+CMGS` when the prompt never came.
pub const ESC: u8 = 0x1B;

pub const PROBE: &str = "AT";
pub const ECHO_OFF: &str = "ATE0";
/// Result codes on (`Q0`) and as words (`V1`): a modem whose saved profile has `ATQ1` says nothing, and one
/// with `ATV0` answers `0` for OK, which no line parser takes for a result.
pub const VERBOSE_RESULTS: &str = "ATQ0V1";
/// Numeric `+CME ERROR: <n>` instead of a bare `ERROR`.
pub const CMEE_NUMERIC: &str = "AT+CMEE=1";
pub const PIN_QUERY: &str = "AT+CPIN?";
pub const PDU_MODE: &str = "AT+CMGF=0";
pub const CNMI_TEST: &str = "AT+CNMI=?";
/// The new-message indications in force.
pub const CNMI_READ: &str = "AT+CNMI?";
pub const CPMS_TEST: &str = "AT+CPMS=?";
pub const CPMS_QUERY: &str = "AT+CPMS?";
pub const SIGNAL: &str = "AT+CSQ";
pub const CREG_QUERY: &str = "AT+CREG?";
pub const CGREG_QUERY: &str = "AT+CGREG?";
pub const CEREG_QUERY: &str = "AT+CEREG?";
/// Operator as a long alphanumeric name.
pub const COPS_FORMAT_LONG: &str = "AT+COPS=3,0";
pub const COPS_QUERY: &str = "AT+COPS?";
pub const SMSC_QUERY: &str = "AT+CSCA?";
pub const MANUFACTURER: &str = "AT+CGMI";
pub const MODEL: &str = "AT+CGMM";
pub const REVISION: &str = "AT+CGMR";
pub const IMEI: &str = "AT+CGSN";
pub const IMSI: &str = "AT+CIMI";
pub const ICCID: &str = "AT+CCID";
pub const OWN_NUMBER: &str = "AT+CNUM";
/// Acknowledge a directly routed `+CMT`/`+CDS` (needed after `AT+CSMS=1`).
pub const CNMA: &str = "AT+CNMA";

/// A parameter that would corrupt the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("PIN must be 4 to 8 digits")]
    InvalidPin,
    #[error("PDU must be non-empty hex with an even number of digits")]
    InvalidPdu,
}

/// `AT+CPIN="<pin>"`.
pub fn cpin(pin: &str) -> Result<String, CommandError> {
    if !(4..=8).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::InvalidPin);
    }
    Ok(format!("AT+CPIN=\"{pin}\""))
}

/// `AT+CNMI=<mode>,<mt>,<bm>,<ds>,<bfr>`.
pub fn cnmi(values: [u8; 5]) -> String {
    let [mode, mt, bm, ds, bfr] = values;
    format!("AT+CNMI={mode},{mt},{bm},{ds},{bfr}")
}

/// `AT+CPMS="<mem1>","<mem2>",...`: memories to read/delete, write/send and receive into.
pub fn cpms(memories: &[&str]) -> String {
    let list: Vec<String> = memories.iter().map(|m| format!("\"{m}\"")).collect();
    format!("AT+CPMS={}", list.join(","))
}

/// `AT+CMGS=<length>`, length in TPDU octets (SMSC field excluded).
pub fn cmgs(tpdu_length: usize) -> String {
    format!("AT+CMGS={tpdu_length}")
}

/// The PDU and Ctrl-Z, written after the prompt.
pub fn pdu_body(pdu_hex: &str) -> Result<Vec<u8>, CommandError> {
    if !super::response::is_pdu_hex(pdu_hex) {
        return Err(CommandError::InvalidPdu);
    }
    let mut body = pdu_hex.trim().as_bytes().to_vec();
    body.push(CTRL_Z);
    Ok(body)
}

/// `AT+CMGR=<index>`.
pub fn cmgr(index: u32) -> String {
    format!("AT+CMGR={index}")
}

/// `AT+CMGD=<index>`.
pub fn cmgd(index: u32) -> String {
    format!("AT+CMGD={index}")
}

/// `AT+CMGL=4`: every stored message, in PDU mode.
pub const CMGL_ALL: &str = "AT+CMGL=4";

/// `AT+CMMS=<n>`: 2 keeps the link open between sends, 0 lets it close.
pub fn cmms(n: u8) -> String {
    format!("AT+CMMS={n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        assert_eq!(cnmi([2, 1, 2, 1, 0]), "AT+CNMI=2,1,2,1,0");
        assert_eq!(cpms(&["SM", "SM", "SM"]), "AT+CPMS=\"SM\",\"SM\",\"SM\"");
        assert_eq!(cmgs(23), "AT+CMGS=23");
        assert_eq!(pdu_body("00AB").unwrap(), b"00AB\x1a");
        assert_eq!(pdu_body("00A\r"), Err(CommandError::InvalidPdu));
        assert_eq!(cpin("1234").unwrap(), "AT+CPIN=\"1234\"");
        assert_eq!(cpin("12\"4"), Err(CommandError::InvalidPin));
    }
}
