//! What one worker needs to know; the daemon's config module maps `[[modems]]` onto it.

use std::{path::PathBuf, time::Duration};

use super::job::ModemId;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: ModemId,
    /// Serial device (a pty in tests). Re-opened by path after the port vanishes.
    pub device: PathBuf,
    pub baud: u32,
    /// Entered once when the SIM asks for it; never retried after a rejection (three wrong PINs lock the SIM).
    pub pin: Option<String>,
    /// SMS centre (`+` and digits) written into every PDU sent, instead of the SIM's own.
    pub smsc: Option<String>,
    pub timeouts: Timeouts,
    /// How often `AT+CMGL=4` looks for messages whose URC was missed.
    pub sweep_interval: Duration,
    /// How often signal, registration and operator are polled.
    pub health_interval: Duration,
    /// The same while the modem is `degraded`, so one back on the network (or past a run of failed sends)
    /// is used again soon.
    pub degraded_health_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Any ordinary command.
    pub command: Duration,
    /// From `AT+CMGS=<len>` to the `> ` prompt (ModemManager uses 10 s).
    pub cmgs_prompt: Duration,
    /// From Ctrl-Z to `+CMGS:` (Quectel documents up to 120 s).
    pub cmgs_result: Duration,
    /// Longest pause between attempts to re-open a vanished port or re-initialise a failing modem.
    pub max_backoff: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(10),
            cmgs_prompt: Duration::from_secs(10),
            cmgs_result: Duration::from_secs(120),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl WorkerConfig {
    /// Defaults for everything but the identity and the device.
    pub fn new(id: impl Into<ModemId>, device: impl Into<PathBuf>) -> Self {
        WorkerConfig {
            id: id.into(),
            device: device.into(),
            baud: 115_200,
            pin: None,
            smsc: None,
            timeouts: Timeouts::default(),
            sweep_interval: Duration::from_secs(300),
            health_interval: Duration::from_secs(60),
            degraded_health_interval: Duration::from_secs(10),
        }
    }
}
