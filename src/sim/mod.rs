//! A modem simulator on pseudo-terminals: a modem that behaves like real hardware (3GPP TS 27.005/27.007,
//! PDU mode) for tests, demos and integrators, driven through a real pty exactly like a serial port.
//!
//! # Use
//! [`spawn`] starts one simulated modem (inside a tokio runtime) and returns a [`SimHandle`]: open
//! [`SimHandle::device`] with tokio-serial, talk AT to it, and use the handle to inject inbound messages,
//! switch [`Faults`], read the log of sends ([`LoggedSend`]) and await "n sends logged" without sleeping.
//! The `simulate` subcommand ([`cli`]) runs several with a small HTTP control API ([`control`]).
//!
//! # The port disappearing
//! [`SimHandle::vanish`] closes the pty (the DTE's reads fail as on a USB reset), removes the stable link,
//! and after the given time creates a *new* pty (a new `/dev/pts/N`) and boots again. With
//! [`SimConfig::link`] set (the CLI's `--dir DIR` gives `DIR/modem0`, `DIR/modem1`, ...) the link is
//! re-pointed at the new pty, as udev names do on real boxes: drivers open the link. Without a link,
//! [`SimHandle::wait_new_path`] gives the new path.
//!
//! # Layout
//! - [`profile`]: the dialects (plain, ec25, sim7600, huawei) and their quirks.
//! - [`fault`]: the run-time fault switches.
//! - `command`: parsing the DTE's command lines (the simulator does not use `crate::at`).
//! - `engine`: the modem state machine, free of I/O.
//! - `storage`: SM/ME/SR message storages.
//! - `pty`, `actor`: the pty and the task that owns it.
//! - [`control`]: the HTTP control API; [`cli`]: `modemgate simulate`.

mod actor;
pub mod cli;
mod command;
pub mod control;
mod engine;
pub mod fault;
pub mod profile;
mod pty;
mod storage;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use engine::{LoggedSend, STATUS_UNDELIVERABLE, SendOutcome};
pub use fault::{FailNext, Faults};
pub use profile::Profile;

use actor::{Actor, Control, Published};

/// Everything about one simulated modem that is fixed at start. [`SimConfig::new`] gives realistic timing
/// (for demos), [`SimConfig::instant`] zero delays (for tests).
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub profile: Profile,
    /// A stable symlink kept pointing at the current pty slave (see the module docs).
    pub link: Option<PathBuf>,
    /// SIM PIN; when set, commands are refused with `+CME ERROR: 11` until `AT+CPIN="<pin>"`.
    pub pin: Option<String>,
    /// Time from Ctrl-Z to `+CMGS`.
    pub send_delay: Duration,
    /// Uniform extra time in `0..=send_jitter` added to each send.
    pub send_jitter: Duration,
    /// Time from `+CMGS` to the status report, for sends that asked for one.
    pub report_delay: Duration,
    /// How long a directly routed `+CMT`/`+CDS` waits for `AT+CNMA` (with `AT+CSMS=1`) before the network
    /// re-delivers it.
    pub cnma_timeout: Duration,
    /// Period of the profile's vendor noise (`^RSSI`/`^BOOT` on huawei); `None` for none.
    pub noise_interval: Option<Duration>,
    /// Recipients whose status reports say "failed" ([`STATUS_UNDELIVERABLE`]), as printed in the decoded
    /// PDU (`+15551234567`).
    pub undeliverable: Vec<String>,
    pub own_number: String,
    pub smsc: String,
    pub operator: String,
    pub imei: String,
    pub imsi: String,
    pub iccid: String,
    /// `+CSQ` rssi while registered.
    pub rssi: u8,
    /// Slots in each storage (SM, ME, SR).
    pub storage_capacity: usize,
    /// TP-MR of the first successful send; each `+CMGS: <mr>` takes the next (wrapping). Failed sends take none.
    pub first_reference: u8,
    /// Seed of the fault dice and send jitter.
    pub seed: u64,
    /// Faults switched on from the start.
    pub faults: Faults,
}

impl SimConfig {
    /// The n-th simulated modem's own numbers (number, IMEI, IMSI, ICCID, random seed), so several
    /// simulated modems look like distinct SIMs, as real ones are: per-SIM counts key on the ICCID.
    pub fn numbered(mut self, n: usize) -> Self {
        let n = n % 1000;
        self.own_number = format!("+1555010{n:04}");
        self.imei = format!("861234050{n:06}");
        self.imsi = format!("001010123{n:06}");
        self.iccid = format!("8901260123{n:09}");
        self.seed = n as u64 + 1;
        self
    }

    /// Realistic timing: sends take 2-4 s, status reports come 5 s later, huawei noise every 10 s.
    pub fn new(profile: Profile) -> Self {
        SimConfig {
            profile,
            link: None,
            pin: None,
            send_delay: Duration::from_secs(2),
            send_jitter: Duration::from_secs(2),
            report_delay: Duration::from_secs(5),
            cnma_timeout: Duration::from_secs(10),
            noise_interval: (profile == Profile::Huawei).then_some(Duration::from_secs(10)),
            undeliverable: Vec::new(),
            own_number: "+15550100001".into(),
            smsc: "+15550109999".into(),
            operator: "SIMNET".into(),
            imei: "861234050123456".into(),
            imsi: "001010123456789".into(),
            iccid: "8901260123456789012".into(),
            rssi: 20,
            storage_capacity: 30,
            first_reference: 1,
            seed: 1,
            faults: Faults::default(),
        }
    }

    /// No delays and no periodic noise: tests synchronise on the modem's answers alone.
    pub fn instant(profile: Profile) -> Self {
        SimConfig {
            send_delay: Duration::ZERO,
            send_jitter: Duration::ZERO,
            report_delay: Duration::ZERO,
            noise_interval: None,
            ..SimConfig::new(profile)
        }
    }
}

/// Alphabet for an injected inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextEncoding {
    /// GSM 7-bit when every character fits, else UCS-2.
    #[default]
    Auto,
    Gsm7,
    Ucs2,
}

impl From<TextEncoding> for crate::pdu::EncodingChoice {
    fn from(e: TextEncoding) -> Self {
        match e {
            TextEncoding::Auto => crate::pdu::EncodingChoice::Auto,
            TextEncoding::Gsm7 => crate::pdu::EncodingChoice::Gsm7,
            TextEncoding::Ucs2 => crate::pdu::EncodingChoice::Ucs2,
        }
    }
}

/// A message "the network" delivers to the simulated modem; long texts become concatenated parts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Inbound {
    /// A number (`+15551234567`, `12345`) or an alphanumeric sender (`BANK`).
    pub from: String,
    pub text: String,
    #[serde(default)]
    pub encoding: TextEncoding,
}

impl Inbound {
    pub fn new(from: impl Into<String>, text: impl Into<String>) -> Self {
        Inbound {
            from: from.into(),
            text: text.into(),
            encoding: TextEncoding::Auto,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator: cannot create a pseudo-terminal: {0}")]
    Pty(#[source] std::io::Error),
    #[error("simulator: cannot point {link} at the pty: {source}")]
    Link {
        link: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("simulator: cannot encode the message: {0}")]
    Encode(#[source] crate::pdu::PduError),
    #[error("simulator: the modem task has stopped")]
    Stopped,
}

/// Control of one running simulated modem. Dropping it (or [`SimHandle::shutdown`]) stops the modem.
pub struct SimHandle {
    profile: Profile,
    link: Option<PathBuf>,
    control: mpsc::UnboundedSender<Control>,
    path: watch::Receiver<PathBuf>,
    sends: watch::Receiver<Vec<LoggedSend>>,
    started: watch::Receiver<usize>,
    faults: watch::Receiver<Faults>,
    /// Taken by the first [`SimHandle::shutdown`].
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Start a simulated modem on a new pty. Must be called inside a tokio runtime; the boot burst is written
/// at once and waits in the pty for the DTE to open the port.
pub fn spawn(config: SimConfig) -> Result<SimHandle, SimError> {
    let pty = pty::Pty::open().map_err(SimError::Pty)?;
    if let Some(link) = &config.link {
        pty::point_link(link, pty.path()).map_err(|source| SimError::Link {
            link: link.clone(),
            source,
        })?;
    }
    let (path_tx, path) = watch::channel(pty.path().to_owned());
    let (sends_tx, sends) = watch::channel(Vec::new());
    let (started_tx, started) = watch::channel(0);
    let (faults_tx, faults) = watch::channel(config.faults.clone());
    let (control, control_rx) = mpsc::unbounded_channel();
    let actor = Actor {
        pty: Some(pty),
        link: config.link.clone(),
        noise_interval: config.noise_interval,
        control: control_rx,
        published: Published {
            path: path_tx,
            sends: sends_tx,
            started: started_tx,
            faults: faults_tx,
        },
        engine: engine::Engine::new(config.clone()),
    };
    let task = tokio::spawn(actor.run());
    Ok(SimHandle {
        profile: config.profile,
        link: config.link,
        control,
        path,
        sends,
        started,
        faults,
        task: Mutex::new(Some(task)),
    })
}

impl SimHandle {
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The current pty slave (`/dev/pts/N`); changes when the port vanishes and comes back.
    pub fn path(&self) -> PathBuf {
        self.path.borrow().clone()
    }

    /// The stable link, when configured.
    pub fn link(&self) -> Option<&Path> {
        self.link.as_deref()
    }

    /// What a driver should open: the stable link if there is one, else the current pty.
    pub fn device(&self) -> PathBuf {
        self.link.clone().unwrap_or_else(|| self.path())
    }

    /// Wait until the modem is back on a pty other than `old`, and return its path.
    pub async fn wait_new_path(&self, old: &Path) -> Result<PathBuf, SimError> {
        let mut rx = self.path.clone();
        let path = rx
            .wait_for(|p| p != old)
            .await
            .map_err(|_| SimError::Stopped)?;
        Ok(path.clone())
    }

    /// Deliver a message from the network; returns the number of parts.
    pub async fn inject(&self, inbound: Inbound) -> Result<usize, SimError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Inject(inbound, tx))?;
        rx.await.map_err(|_| SimError::Stopped)?
    }

    /// The current fault switches (a `fail_next` count goes down as sends fail).
    pub fn faults(&self) -> Faults {
        self.faults.borrow().clone()
    }

    /// Wait until the fault switches satisfy `done` (e.g. the hang cleared by a re-open) and return them.
    pub async fn wait_faults(&self, done: impl Fn(&Faults) -> bool) -> Result<Faults, SimError> {
        let mut rx = self.faults.clone();
        let faults = rx
            .wait_for(|f| done(f))
            .await
            .map_err(|_| SimError::Stopped)?;
        Ok(faults.clone())
    }

    /// Replace the fault switches.
    pub fn set_faults(&self, faults: Faults) -> Result<(), SimError> {
        self.send(Control::SetFaults(faults))
    }

    /// Change some fault switches, keeping the others.
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) -> Result<(), SimError> {
        let mut faults = self.faults();
        change(&mut faults);
        self.set_faults(faults)
    }

    /// The port disappears now and comes back (rebooted, on a new pty) after `away`.
    pub fn vanish(&self, away: Duration) -> Result<(), SimError> {
        self.send(Control::Vanish(away))
    }

    /// Restart now with the port kept open, as a UART modem does after a brown-out: settings back to
    /// power-on (echo on, no new-message indications), the start-up notices printed, storage kept.
    pub fn reboot(&self) -> Result<(), SimError> {
        self.send(Control::Reboot)
    }

    /// Write these bytes to the line now, as line noise would.
    pub fn inject_garbage(&self, bytes: Vec<u8>) -> Result<(), SimError> {
        self.send(Control::Garbage(bytes))
    }

    /// Every send finished so far, oldest first.
    pub fn sends(&self) -> Vec<LoggedSend> {
        self.sends.borrow().clone()
    }

    /// Wait until at least `n` sends have finished and return the log.
    pub async fn wait_sends(&self, n: usize) -> Result<Vec<LoggedSend>, SimError> {
        let mut rx = self.sends.clone();
        let log = rx
            .wait_for(|log| log.len() >= n)
            .await
            .map_err(|_| SimError::Stopped)?;
        Ok(log.clone())
    }

    /// Wait until the modem has taken the PDU of at least `n` sends (in progress or finished): the
    /// moment a gateway can no longer take a send back.
    pub async fn wait_started(&self, n: usize) -> Result<(), SimError> {
        let mut rx = self.started.clone();
        rx.wait_for(|started| *started >= n)
            .await
            .map_err(|_| SimError::Stopped)?;
        Ok(())
    }

    /// Stop the modem and wait for it; its pty closes and its link is removed.
    pub async fn shutdown(&self) {
        let _ = self.control.send(Control::Shutdown);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn send(&self, control: Control) -> Result<(), SimError> {
        self.control.send(control).map_err(|_| SimError::Stopped)
    }
}
