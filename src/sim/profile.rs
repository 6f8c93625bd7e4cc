//! Modem dialects: the identity strings and quirks each simulated modem reproduces.
//!
//! The quirks are the ones ENGINEERING.md lists as seen in the field, spread over four profiles so that one
//! driver must cope with all of them:
//!
//! | profile | boot | quirks |
//! |---|---|---|
//! | `plain` | silent | none: a by-the-book 27.005/27.007 modem |
//! | `ec25` | `RDY`, `+CFUN: 1`, `+CPIN: READY`, `+QUSIM: 1`, `+QIND: SMS DONE`, `+QIND: PB DONE` | `+CME ERROR: 14` (SIM busy) for the first 2 commands after boot; status reports stored in `SR` |
//! | `sim7600` | `RDY`, `+CPIN: READY`, `SMS DONE`, `PB DONE` | CNMI `ds=1` advertised by `AT+CNMI=?` but refused with `+CMS ERROR: 303` |
//! | `huawei` | `^BOOT`, `^RSSI` | information lines end `\r\r\n`; `COMMAND NOT SUPPORT` instead of `ERROR`; `+CREG: 2,1,4CA,81DE445` (unquoted hex); periodic `^RSSI`/`^BOOT` noise; refuses `AT+CMMS` |

use std::fmt;
use std::str::FromStr;

/// Which dialect a simulated modem speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A plain 3GPP TS 27.005 modem with no quirks.
    Plain,
    /// A Quectel EC25-like LTE module.
    Ec25,
    /// A SIMCom SIM7600-like LTE module.
    Sim7600,
    /// A Huawei-like USB stick (E3372h in stick mode).
    Huawei,
}

impl Profile {
    pub const ALL: [Profile; 4] = [
        Profile::Plain,
        Profile::Ec25,
        Profile::Sim7600,
        Profile::Huawei,
    ];

    /// The name used in `sim:NAME` device strings and on the command line.
    pub fn name(self) -> &'static str {
        self.dialect().name
    }

    /// The profile of a `sim:PROFILE` device string (`sim:ec25`), `None` when `device` is not a simulator.
    pub fn from_device(device: &str) -> Option<Result<Profile, UnknownProfile>> {
        device.strip_prefix("sim:").map(str::parse)
    }

    pub(crate) fn dialect(self) -> &'static Dialect {
        match self {
            Profile::Plain => &PLAIN,
            Profile::Ec25 => &EC25,
            Profile::Sim7600 => &SIM7600,
            Profile::Huawei => &HUAWEI,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A profile name that is not one of [`Profile::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown simulator profile {0:?} (expected plain, ec25, sim7600 or huawei)")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownProfile(s.to_owned()))
    }
}

/// How `+CREG`/`+CGREG`/`+CEREG` print location area and cell id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CregStyle {
    /// `+CREG: 2,1,"5E25","605F",7`
    Quoted,
    /// `+CREG: 2,1,4CA,81DE445` (Huawei)
    UnquotedHex,
}

/// The data behind a [`Profile`]; plain data so the engine has no per-profile branches.
#[derive(Debug)]
pub(crate) struct Dialect {
    pub name: &'static str,
    pub manufacturer: &'static str,
    pub model: &'static str,
    pub revision: &'static str,
    /// URCs printed at power-on, before the SIM state is known.
    pub boot: &'static [&'static str],
    /// Whether the modem announces `+CPIN: <state>` at boot and after PIN entry.
    pub announces_cpin: bool,
    /// URCs printed once the SIM is ready (at boot without PIN, else after PIN entry).
    pub sim_ready: &'static [&'static str],
    /// Terminator of information lines (final results always end `\r\n`).
    pub info_eol: &'static str,
    /// Final result for a command the modem does not know.
    pub unsupported: &'static str,
    /// How many commands after boot are answered `+CME ERROR: 14` (SIM busy).
    pub busy_after_boot: u32,
    pub creg_style: CregStyle,
    pub cnmi_test: &'static str,
    /// `ds=1` is advertised by `AT+CNMI=?` but refused.
    pub cnmi_refuses_ds1: bool,
    /// Storage status reports go to (and are announced from) with CNMI `ds=2`.
    pub report_storage: &'static str,
    pub cpms_test: &'static str,
    /// Periodic vendor noise, printed every `noise_interval` when configured.
    pub noise: &'static [&'static str],
    /// A harmless URC used by the "URCs between a command and its answer" fault.
    pub interleaved_urc: &'static str,
    pub supports_cmms: bool,
}

const PLAIN: Dialect = Dialect {
    name: "plain",
    manufacturer: "GENERIC",
    model: "GSM MODEM 27005",
    revision: "1.0.0",
    boot: &[],
    announces_cpin: false,
    sim_ready: &[],
    info_eol: "\r\n",
    unsupported: "ERROR",
    busy_after_boot: 0,
    creg_style: CregStyle::Quoted,
    cnmi_test: "+CNMI: (0-2),(0-3),(0-3),(0-2),(0,1)",
    cnmi_refuses_ds1: false,
    report_storage: "SM",
    cpms_test: "+CPMS: (\"SM\",\"ME\"),(\"SM\",\"ME\"),(\"SM\",\"ME\")",
    noise: &[],
    interleaved_urc: "+CIEV: 2,4",
    supports_cmms: true,
};

const EC25: Dialect = Dialect {
    name: "ec25",
    manufacturer: "Quectel",
    model: "EC25",
    revision: "EC25EFAR06A06M4G",
    boot: &["RDY", "+CFUN: 1"],
    announces_cpin: true,
    sim_ready: &["+QUSIM: 1", "+QIND: SMS DONE", "+QIND: PB DONE"],
    info_eol: "\r\n",
    unsupported: "ERROR",
    busy_after_boot: 2,
    creg_style: CregStyle::Quoted,
    cnmi_test: "+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)",
    cnmi_refuses_ds1: false,
    report_storage: "SR",
    cpms_test: "+CPMS: (\"SM\",\"ME\",\"MT\",\"SR\"),(\"SM\",\"ME\",\"MT\"),(\"SM\",\"ME\",\"MT\")",
    noise: &[],
    interleaved_urc: "+QIND: \"csq\",20,99",
    supports_cmms: true,
};

const SIM7600: Dialect = Dialect {
    name: "sim7600",
    manufacturer: "SIMCOM INCORPORATED",
    model: "SIMCOM_SIM7600E-H",
    revision: "LE20B04SIM7600M22",
    boot: &["RDY"],
    announces_cpin: true,
    sim_ready: &["SMS DONE", "PB DONE"],
    info_eol: "\r\n",
    unsupported: "ERROR",
    busy_after_boot: 0,
    creg_style: CregStyle::Quoted,
    cnmi_test: "+CNMI: (0-2),(0-3),(0-3),(0-2),(0-1)",
    cnmi_refuses_ds1: true,
    report_storage: "SM",
    cpms_test: "+CPMS: (\"ME\",\"SM\",\"SR\"),(\"ME\",\"SM\"),(\"ME\",\"SM\")",
    noise: &[],
    interleaved_urc: "+CIEV: 2,4",
    supports_cmms: true,
};

const HUAWEI: Dialect = Dialect {
    name: "huawei",
    manufacturer: "huawei",
    model: "E3372",
    revision: "21.180.01.00.00",
    boot: &["^BOOT:20952551,0,0,0,75", "^RSSI:18"],
    announces_cpin: false,
    sim_ready: &[],
    info_eol: "\r\r\n",
    unsupported: "COMMAND NOT SUPPORT",
    busy_after_boot: 0,
    creg_style: CregStyle::UnquotedHex,
    cnmi_test: "+CNMI: (0,1,2),(0,1,2,3),(0,2),(0,1,2),(0,1)",
    cnmi_refuses_ds1: false,
    report_storage: "SM",
    cpms_test: "+CPMS: (\"ME\",\"MT\",\"SM\",\"SR\"),(\"ME\",\"MT\",\"SM\",\"SR\"),(\"ME\",\"MT\",\"SM\",\"SR\")",
    noise: &["^RSSI:18", "^BOOT:20952551,0,0,0,75"],
    interleaved_urc: "^RSSI:17",
    supports_cmms: false,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
        }
        assert_eq!("EC25".parse::<Profile>(), Ok(Profile::Ec25));
        assert!("nokia".parse::<Profile>().is_err());
        assert_eq!(
            Profile::from_device("sim:huawei"),
            Some(Ok(Profile::Huawei))
        );
        assert!(matches!(Profile::from_device("sim:x"), Some(Err(_))));
        assert_eq!(Profile::from_device("/dev/ttyUSB2"), None);
    }
}
