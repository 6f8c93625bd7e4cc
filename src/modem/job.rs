//! The contract between a modem worker and the rest of the daemon.
//!
//! A worker owns its serial port; everyone else talks to it through these typed messages. Two events carry an
//! `ack` the worker waits for, because durability depends on ordering: a part is recorded as `submitting` on
//! disk *before* its PDU is written to the modem (so a crash can never resend it silently), and an inbound
//! message is deleted from the SIM only *after* it is stored (so a crash can never lose it).

use jiff::Timestamp;
use tokio::sync::oneshot;
use uuid::Uuid;

/// A modem's configured id (`[[modems]] id`).
pub type ModemId = std::sync::Arc<str>;

/// One message to send, all parts on this modem, in order.
#[derive(Debug)]
pub struct SendJob {
    pub message_id: Uuid,
    /// E.164 recipient, used to match status reports.
    pub recipient: String,
    pub parts: Vec<JobPart>,
    /// More jobs are waiting for this modem: keep the radio link open with `AT+CMMS=2`.
    pub more_waiting: bool,
    /// When the recipient's sending window closes (quiet hours), if it does: a job that reaches the modem
    /// later is withdrawn rather than sent.
    pub send_by: Option<Timestamp>,
    /// Where the worker reports how the job ended.
    pub done: oneshot::Sender<JobOutcome>,
}

/// One SMS-SUBMIT part.
#[derive(Debug, Clone)]
pub struct JobPart {
    /// 1-based part number within the message.
    pub part: u16,
    /// Value for `AT+CMGS=<length>` (TPDU octets, SMSC field excluded).
    pub tpdu_length: usize,
    /// Whole PDU in hex, SMSC field included.
    pub pdu_hex: String,
}

/// How a job ended. Parts already reported as sent stay sent whatever the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Every part was accepted by the network.
    Sent,
    /// Part `part` failed; later parts were not attempted.
    Failed { part: u16, error: SendError },
    /// Part `part` was written to the modem but no answer came (deadline missed, port lost): the network may
    /// or may not have it. Never resend silently.
    Unknown { part: u16, reason: String },
    /// The job never reached the modem (worker offline/shutting down): safe to give to another modem.
    NotAttempted,
    /// The daemon withdrew the job before its first PDU was written (the reason is its answer to
    /// `Submitting`): nothing was sent.
    Withdrawn { reason: String },
}

/// The daemon's answer to [`WorkerEvent::Submitting`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clearance {
    /// Recorded: write the PDU.
    Write,
    /// Do not send the message (nothing of it has gone out), for this reason.
    Withdraw(String),
}

/// Why a part could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Shown with the cause's name when the code is known (`+CMS ERROR: 28 (unidentified subscriber)`):
    /// the text is what the API and the webhooks carry as `error`.
    #[error("{}", crate::at::CmsError(*.0))]
    Cms(u16),
    #[error("{}", crate::at::CmeError::Code(*.0))]
    Cme(u16),
    #[error("modem answered ERROR")]
    Error,
    /// The `> ` prompt never came; ESC was sent, nothing was submitted.
    #[error("no prompt for AT+CMGS")]
    NoPrompt,
}

impl SendError {
    /// Transient errors are retried (possibly on another modem); permanent ones fail the message.
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Cms(code) => crate::at::CmsError::from_code(*code).is_transient(),
            SendError::Cme(_) | SendError::Error | SendError::NoPrompt => true,
        }
    }

    /// The modem's SIM is barred or not subscribed for SMS: every send from it would fail the same way.
    pub fn blames_subscription(&self) -> bool {
        matches!(self, SendError::Cms(code) if crate::at::CmsError::from_code(*code).is_subscription())
    }
}

/// What a worker tells the daemon, on one channel shared by all workers.
#[derive(Debug)]
pub enum WorkerEvent {
    /// About to write `part` of `message_id`: record it durably, then answer on `ack`. If `ack` is
    /// dropped, the worker must not send the part (report `NotAttempted`); if it says
    /// [`Clearance::Withdraw`], nothing may be sent (report `Withdrawn`).
    Submitting {
        modem: ModemId,
        message_id: Uuid,
        part: u16,
        /// The job's [`SendJob::send_by`], passed back for the daemon's last look.
        send_by: Option<Timestamp>,
        ack: oneshot::Sender<Clearance>,
    },
    /// The network accepted the part with this TP-MR.
    PartSent {
        modem: ModemId,
        message_id: Uuid,
        part: u16,
        reference: u8,
    },
    /// A message read from the modem (from +CMTI/+CMGR, +CMT or a +CMGL sweep). Store it, then send on `ack`;
    /// the worker deletes it from the SIM only after the ack.
    Inbound {
        modem: ModemId,
        /// The PDU as the modem printed it (SMSC field included): stored raw so nothing is ever lost.
        pdu_hex: String,
        /// The decoded PDU, or why it could not be decoded.
        decoded: Result<crate::pdu::Pdu, crate::pdu::PduError>,
        ack: oneshot::Sender<()>,
    },
    /// A status report (SMS-STATUS-REPORT) from +CDS or a stored report.
    StatusReport {
        modem: ModemId,
        report: crate::pdu::StatusReport,
    },
    /// The modem's health changed (state, signal, registration, identity).
    Health { modem: ModemId, health: ModemHealth },
}

/// Coarse state of a modem, as shown in `GET /v1/modems`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModemState {
    Initialising,
    Ready,
    /// Answers, but cannot send SMS right now (not registered, SIM problem, repeated errors).
    Degraded,
    /// Port gone or not answering; the worker is backing off and will re-open it.
    Offline,
    /// Paused by an admin: finishes nothing new.
    Paused,
}

/// Registration status as reported by +CREG/+CGREG/+CEREG (27.007 `<stat>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    NotRegistered,
    Home,
    Searching,
    Denied,
    Unknown,
    Roaming,
    /// Registered for SMS only (stat 6/7) or any other registered variant.
    RegisteredOther,
}

/// Identity read at initialisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModemIdentity {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub revision: Option<String>,
    pub imei: Option<String>,
    pub imsi: Option<String>,
    pub iccid: Option<String>,
    pub own_number: Option<String>,
}

/// Everything `GET /v1/modems` shows about one modem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModemHealth {
    pub state: ModemState,
    /// `+CSQ` RSSI (0-31, 99 = unknown).
    pub signal: Option<u8>,
    pub operator: Option<String>,
    pub cs: Option<Registration>,
    pub ps: Option<Registration>,
    pub eps: Option<Registration>,
    pub identity: ModemIdentity,
    /// Messages in the storage replies are read from, and its size (`AT+CPMS?`). Full, the modem takes no
    /// new SMS: replies (a STOP among them) wait at the network until it has room.
    pub storage_used: Option<u32>,
    pub storage_total: Option<u32>,
    /// Last error worth showing an admin (e.g. "SIM PIN required", "+CMS ERROR: 500").
    pub last_error: Option<String>,
    /// When the modem last answered a health poll. The state is only as fresh as this: a modem that hangs
    /// while idle reads `ready` until the next poll (every minute) times out, so an admin or an alert
    /// compares this with the clock (`null` until the first poll).
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub answered_at: Option<Timestamp>,
    /// Sends that failed in a row with a transient error (the modem's or the network's trouble, not the
    /// number's); from [`FAILED_SENDS_DEGRADE`] on, the modem is `degraded` and gets no jobs until a health
    /// poll gives it another try.
    pub failed_sends: u32,
}

/// Transient send failures in a row that make a modem `degraded` (see [`ModemHealth::failed_sends`]).
pub const FAILED_SENDS_DEGRADE: u32 = 3;

impl ModemHealth {
    /// A modem in `state` of which nothing has been read yet (signal, network, identity).
    pub fn new(state: ModemState) -> ModemHealth {
        ModemHealth {
            state,
            signal: None,
            operator: None,
            cs: None,
            ps: None,
            eps: None,
            identity: ModemIdentity::default(),
            storage_used: None,
            storage_total: None,
            last_error: None,
            answered_at: None,
            failed_sends: 0,
        }
    }
}
