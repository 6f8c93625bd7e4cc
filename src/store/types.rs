//! The records the store keeps and the states they move through.
//!
//! States are enums stored as their snake_case names, so a row can only hold a state this build knows, and
//! the API shows exactly the strings in the HTTP contract.

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

/// Declares a string-backed enum: `as_str` for SQL and JSON, `parse` for reading rows back.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!("unknown {} {text:?}", stringify!($name)).into(),
                    )
                })
            }
        }
    };
}

text_enum! {
    /// Where a message is in its life (the `status` of the HTTP contract).
    MessageState {
        Queued = "queued",
        /// Accepted with a future `send_at`, or held by a rule until a later time.
        Scheduled = "scheduled",
        /// Claimed by a modem; parts are being submitted.
        Sending = "sending",
        Sent = "sent",
        Delivered = "delivered",
        Failed = "failed",
        Cancelled = "cancelled",
        Expired = "expired",
        /// A part was written to a modem but no answer came: the network may or may not have it.
        Unknown = "unknown",
        /// An inbound message.
        Received = "received",
    }
}

text_enum! {
    /// How an opt-out came about, recorded with it, in its audit trail and in `optout.created`. It decides
    /// who may lift it: the debtor's own word (a keyword, or a reply under review) is lifted by an opt-in
    /// word from the same number; one recorded through the API (a cease-communication letter, an
    /// attorney's notice) only through the API.
    OptOutSource {
        /// An opt-out keyword (STOP, BAJA...).
        Keyword = "keyword",
        /// A reply that only mentions an opt-out word ("please stop texting me"): treated as an opt-out
        /// until a person reviews it.
        Review = "review",
        /// Added through the API.
        Api = "api",
    }
}

impl MessageState {
    /// No transition leaves these states, except a delivery report turning `sent` into delivered/failed.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            MessageState::Queued | MessageState::Scheduled | MessageState::Sending
        )
    }

    /// States the dispatcher still has work for.
    pub fn is_pending(self) -> bool {
        matches!(self, MessageState::Queued | MessageState::Scheduled)
    }
}

text_enum! {
    /// One SMS-SUBMIT part's progress.
    PartState {
        Pending = "pending",
        /// Durably recorded as about to be written to a modem; the PDU may be on its way.
        Submitting = "submitting",
        Sent = "sent",
        Delivered = "delivered",
        Failed = "failed",
        Unknown = "unknown",
    }
}

text_enum! {
    Direction {
        Outbound = "outbound",
        Inbound = "inbound",
    }
}

text_enum! {
    /// Character set of a stored message (mirrors [`crate::pdu::Encoding`], which has no parser).
    TextEncoding {
        Gsm7 = "gsm7",
        Ucs2 = "ucs2",
        EightBit = "8bit",
        /// An inbound PDU that could not be decoded: kept raw.
        Undecoded = "undecoded",
    }
}

text_enum! {
    /// Who an outbound message is for, as far as the collections rules care.
    #[derive(Default)]
    Category {
        /// A collection text from the CMS: every rule applies.
        #[default]
        Standard = "standard",
        /// An automatic answer to a reply-menu keyword: the rules apply as to any collection text.
        AutoReply = "auto_reply",
        /// The gateway's own answer the person asked for (opt-out or opt-in confirmation, HELP reply):
        /// exempt from opt-out, quiet hours and contact caps.
        Confirmation = "confirmation",
    }
}

impl Category {
    /// Whether the collections gate lets it through unconditionally.
    pub fn is_exempt(self) -> bool {
        self == Category::Confirmation
    }

    /// Skips the field when hashing an idempotent request body, so bodies stored before categories
    /// existed keep their hash.
    fn is_standard(&self) -> bool {
        *self == Category::Standard
    }
}

impl From<crate::pdu::Encoding> for TextEncoding {
    fn from(encoding: crate::pdu::Encoding) -> Self {
        match encoding {
            crate::pdu::Encoding::Gsm7 => TextEncoding::Gsm7,
            crate::pdu::Encoding::Ucs2 => TextEncoding::Ucs2,
            crate::pdu::Encoding::EightBit => TextEncoding::EightBit,
        }
    }
}

/// An outbound message as the API hands it over, already validated and encoded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewMessage {
    /// Name of the API key that sent it: idempotency keys are scoped to it.
    pub api_key: String,
    pub idempotency_key: Option<String>,
    /// E.164 recipient.
    pub to: String,
    pub text: String,
    pub encoding: TextEncoding,
    /// Encoded SMS-SUBMIT parts, in order (at least one).
    pub parts: Vec<NewPart>,
    /// Higher goes first.
    pub priority: i32,
    pub send_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// The client's own reference (searchable).
    pub reference: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// Recipient's IANA time zone, for quiet hours.
    pub tz: Option<String>,
    /// The region of the recipient's address (ISO 3166-1 `MX` or 3166-2 `US-MA`), for its quiet hours
    /// and caps. Left out of the idempotency fingerprint when absent, as before it existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Category::is_standard")]
    pub category: Category,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewPart {
    /// Value for `AT+CMGS=<length>`.
    pub tpdu_length: usize,
    /// Whole PDU in hex, SMSC field included.
    pub pdu_hex: String,
}

/// The answer to an accept: the message is on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub id: Uuid,
    pub state: MessageState,
    pub to: String,
    pub parts: usize,
    pub encoding: TextEncoding,
    /// An earlier request with the same idempotency key and body: this is the original message.
    pub duplicate: bool,
}

/// A stored message without its parts and events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub id: Uuid,
    pub direction: Direction,
    pub state: MessageState,
    /// The other party: recipient of an outbound message, sender of an inbound one.
    pub peer: String,
    pub text: String,
    pub encoding: TextEncoding,
    pub part_count: u16,
    pub priority: i32,
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub send_at: Option<Timestamp>,
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub expires_at: Option<Timestamp>,
    pub reference: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub tz: Option<String>,
    /// The region of the recipient's address, as the sender gave it.
    pub region: Option<String>,
    /// The modem that sent (last claimed) or received it.
    pub modem: Option<String>,
    /// That modem's SIM number, when the modem reported one (`AT+CNUM`; many SIMs store none): the
    /// number the debtor saw or wrote to.
    pub modem_number: Option<String>,
    /// How many times the dispatcher claimed it.
    pub attempts: u32,
    /// Not before this time (retry back-off or a rule's hold).
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub not_before: Option<Timestamp>,
    pub hold_reason: Option<String>,
    pub error_code: Option<i64>,
    pub error: Option<String>,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub updated_at: Timestamp,
    /// Outbound only (inbound messages are `standard`).
    pub category: Category,
    /// The `[[api_keys]]` name that sent it (`rules` for the gateway's own answers); empty for a reply.
    pub api_key: String,
    /// When its last part was sent, once it is `sent` or `delivered`: when it was said, which for a
    /// scheduled or long-queued message is not when it was accepted. For a reply, when the sender's phone
    /// sent it (the SMSC's timestamp; `created_at` is when it reached us).
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub sent_at: Option<Timestamp>,
    /// When the last delivery report came, once it is `delivered`.
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub delivered_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    /// 1-based.
    pub part: u16,
    pub state: PartState,
    pub modem: Option<String>,
    /// TP-MR the network gave this part.
    pub tp_mr: Option<u8>,
    pub error_code: Option<i64>,
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub submitted_at: Option<Timestamp>,
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub sent_at: Option<Timestamp>,
    /// TP-ST of the delivery report.
    pub report_status: Option<u8>,
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub reported_at: Option<Timestamp>,
    pub tpdu_length: usize,
    pub pdu_hex: String,
}

/// One entry of a message's append-only history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub at: Timestamp,
    /// Who caused it: `api`, `dispatcher`, `modem:ID`, `system`, `rules`.
    pub actor: String,
    /// What happened, e.g. `accepted`, `part_sent`, `fallback`.
    pub kind: String,
    /// The message state after the event.
    pub state: MessageState,
    pub part: Option<u16>,
    pub detail: Option<String>,
    /// The collections rule that caused a hold or block.
    pub rule: Option<String>,
}

/// A message with everything `GET /v1/messages/{id}` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageDetail {
    pub message: Message,
    pub parts: Vec<Part>,
    pub events: Vec<Event>,
}

/// One page of a listing; `next` is the cursor for the following page, `None` on the last.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub messages: Vec<Message>,
    pub next: Option<String>,
}

/// Filters of `GET /v1/messages`; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub direction: Option<Direction>,
    pub peer: Option<String>,
    pub state: Option<MessageState>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub reference: Option<String>,
    /// Page size; clamped to 1..=1000, 100 when absent.
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// The store's answer when a worker is about to write a part's PDU ([`crate::store::Store::part_submitting`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// Recorded as submitting: the PDU may be written.
    Recorded,
    /// Nothing of the message has gone out and it may no longer go now, for this reason: since it was
    /// handed to the modem (which takes the next job only when its current send ends, seconds later) the
    /// recipient opted out (the message failed, as the gate fails it), it expired (expired), it was
    /// cancelled, or the recipient's sending window closed (still `sending`: the dispatcher takes it back
    /// and holds it). No part was recorded as submitting.
    Withdrawn(String),
}

/// What is known of a job handed back to the store unsent ([`crate::store::Store::requeue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handback {
    /// The worker wrote no PDU for the part it was on (the port failed before it, or the job never reached
    /// the modem): a part recorded as submitting may be sent again, on this modem or another.
    NothingWritten,
    /// No word from the worker (it dropped the job): a part recorded as submitting may have gone out.
    Unsure,
}

/// Where a job handed back unsent left its message ([`crate::store::Store::requeue`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeued {
    /// Back in the queue with `parts` parts still to send. `pinned_modem`: the modem that sent the
    /// others (a job that ended between two parts), where the rest must follow so the phone can join
    /// them; `None` when nothing of it has gone out.
    Queued {
        parts: u16,
        pinned_modem: Option<String>,
    },
    /// A part may have gone out: the message is `unknown` and is not sent again.
    Unknown,
}

/// An inbound SMS-DELIVER part as read from a modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPart {
    pub modem: String,
    /// The PDU as the modem printed it: kept raw, and the key that makes re-reads harmless.
    pub pdu_hex: String,
    pub content: InboundContent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundContent {
    Decoded {
        sender: String,
        text: String,
        encoding: TextEncoding,
        /// Service-centre timestamp (TP-SCTS); `None` when the network's was no valid date.
        sent_at: Option<Timestamp>,
        concat: Option<ConcatInfo>,
    },
    /// Stored as a received message with no text and the error, so nothing is lost.
    Undecodable { error: String },
}

/// Concatenation header of an inbound part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcatInfo {
    pub reference: u16,
    /// 1-based.
    pub part: u8,
    pub parts: u8,
}

/// What recording an inbound part led to.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundOutcome {
    /// The message is complete (a single part, or the last missing part of a concatenated one).
    Complete(Box<Message>),
    /// Stored; the message still misses parts.
    Partial { have: u8, parts: u8 },
    /// This exact PDU was already stored (a re-read): nothing changed.
    Duplicate,
}

/// A delivery report as the worker decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportIn {
    pub modem: String,
    /// TP-MR of the part reported on.
    pub tp_mr: u8,
    pub recipient: String,
    /// TP-ST.
    pub status: u8,
    pub discharged_at: Option<Timestamp>,
}

/// What a delivery report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    Matched {
        id: Uuid,
        part: u16,
        /// The message state after the report.
        state: MessageState,
    },
    /// No part sent from that modem with that TP-MR and recipient within the window.
    Unmatched,
}

/// A failed part and what the dispatcher decided to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartFailure {
    pub id: Uuid,
    pub part: u16,
    pub modem: String,
    /// The `+CMS ERROR`/`+CME ERROR` code when there is one.
    pub code: Option<i64>,
    pub detail: String,
    /// `Some`: transient, back to the queue not before this time. `None`: the message fails.
    pub retry_at: Option<Timestamp>,
}

/// A position in the dispatcher's order: higher priority first, then older (ids are time-ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueKey {
    pub priority: i32,
    pub id: Uuid,
}

/// A queue entry read from the store for the dispatcher, with the modem its recipient last heard from
/// (sticky senders), so no recipient map has to be held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagedEntry {
    pub entry: QueueEntry,
    pub last_modem: Option<String>,
}

/// An outbound message waiting for the dispatcher: the light entry its in-memory index keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: Uuid,
    pub to: String,
    pub priority: i32,
    /// Not before this time (send_at, retry back-off or hold); `None` = now.
    pub not_before: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub tz: Option<String>,
    /// The region of the recipient's address (see [`NewMessage::region`]).
    pub region: Option<String>,
    /// The modem that already sent (or may have sent) some of its parts: the rest must go out on it too.
    pub pinned_modem: Option<String>,
    pub attempts: u32,
    /// Parts still to send (rate limits count parts).
    pub parts: u16,
    /// All its parts: what goes out again when the modem that sent the first ones is no longer configured.
    pub part_count: u16,
    /// Which collections rules apply.
    pub category: Category,
}

impl QueueEntry {
    /// The entry for a message just accepted, for [`crate::dispatch::DispatchHandle::enqueue`].
    pub fn for_accepted(message: &NewMessage, accepted: &Accepted) -> QueueEntry {
        QueueEntry {
            id: accepted.id,
            to: accepted.to.clone(),
            priority: message.priority,
            not_before: message.send_at,
            expires_at: message.expires_at,
            tz: message.tz.clone(),
            region: message.region.clone(),
            pinned_modem: None,
            attempts: 0,
            parts: u16::try_from(accepted.parts).unwrap_or(u16::MAX),
            part_count: u16::try_from(accepted.parts).unwrap_or(u16::MAX),
            category: message.category,
        }
    }
}

/// A part still to send, as the dispatcher puts it into a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPart {
    pub part: u16,
    pub tpdu_length: usize,
    pub pdu_hex: String,
}

/// Counts the group-commit writer keeps: `requests / commits` is the batching factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct WriterStats {
    /// Write requests answered (an `accept_batch` is one).
    pub requests: u64,
    /// Transactions committed (synced to disk before their callers hear of them; a sync may cover several).
    pub commits: u64,
    /// Batches refused by SQLite or the disk, since the store was opened.
    pub refused: u64,
    /// Of those, the ones since the last commit: more than 0 while the store refuses writes.
    pub failing: u64,
}
