//! The events a webhook receives and the envelope they travel in.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::store::Category;

/// The event types a webhook can subscribe to (`[[webhooks]] events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    MessageSent,
    MessageDelivered,
    MessageFailed,
    MessageExpired,
    MessageUnknown,
    MessageReceived,
    OptoutCreated,
    OptoutRemoved,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::MessageSent,
        EventKind::MessageDelivered,
        EventKind::MessageFailed,
        EventKind::MessageExpired,
        EventKind::MessageUnknown,
        EventKind::MessageReceived,
        EventKind::OptoutCreated,
        EventKind::OptoutRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageSent => "message.sent",
            EventKind::MessageDelivered => "message.delivered",
            EventKind::MessageFailed => "message.failed",
            EventKind::MessageExpired => "message.expired",
            EventKind::MessageUnknown => "message.unknown",
            EventKind::MessageReceived => "message.received",
            EventKind::OptoutCreated => "optout.created",
            EventKind::OptoutRemoved => "optout.removed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// `[[webhooks]] events` names event types as they appear in payloads.
impl<'de> serde::Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        EventKind::parse(&name).ok_or_else(|| {
            let names: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown webhook event `{name}`: expected one of {}",
                names.join(", ")
            ))
        })
    }
}

/// `data` of the `message.*` status events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageEvent {
    pub message_id: Uuid,
    /// E.164 recipient.
    pub to: String,
    pub parts: usize,
    pub modem: Option<String>,
    /// The client's `reference` and `metadata`, echoed so the CMS can match without a lookup.
    pub reference: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// Why it failed or is unknown.
    pub error: Option<String>,
    /// The modem's `+CMS ERROR` code (or a delivery report's TP-Status) when one caused it.
    pub error_code: Option<i64>,
    /// `standard` for the CMS's own texts; `confirmation` and `auto_reply` for the gateway's answers
    /// (STOP/START/HELP, reply menus), whose ids the CMS never created.
    pub category: Category,
}

/// `data` of `message.received`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedEvent {
    pub message_id: Uuid,
    pub from: String,
    /// Our modem's number when known.
    pub to: Option<String>,
    /// The whole text, reassembled from its parts.
    pub text: String,
    pub parts: usize,
    /// The modem it came in on.
    pub modem: String,
    /// The SMSC timestamp of the first part.
    #[serde(serialize_with = "crate::wire_time::serialize_option")]
    pub sent_at: Option<Timestamp>,
    /// What the reply asks for, when a rule recognised it: `opt_out`, `opt_in`, `help`, `optout_review`
    /// (mentions an opt-out word: treated as one until reviewed), or a reply menu's intent.
    pub intent: Option<String>,
    /// No rule fully handled it: a person should read it.
    pub needs_agent: bool,
}

/// `data` of `optout.created`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptoutEvent {
    pub number: String,
    /// `keyword` (a reply such as STOP), `review` (a reply that mentions an opt-out word) or `api`.
    pub source: String,
    /// The keyword, for `keyword`.
    pub keyword: Option<String>,
    /// The reply, for `review`.
    pub text: Option<String>,
    /// The admin's note, for `api`.
    pub note: Option<String>,
    /// The inbound message that caused it (`keyword` and `review`).
    pub message_id: Option<Uuid>,
}

/// An event and its data; the type decides the data's shape, so they cannot disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "message.sent")]
    MessageSent(MessageEvent),
    #[serde(rename = "message.delivered")]
    MessageDelivered(MessageEvent),
    #[serde(rename = "message.failed")]
    MessageFailed(MessageEvent),
    #[serde(rename = "message.expired")]
    MessageExpired(MessageEvent),
    #[serde(rename = "message.unknown")]
    MessageUnknown(MessageEvent),
    #[serde(rename = "message.received")]
    MessageReceived(ReceivedEvent),
    #[serde(rename = "optout.created")]
    OptoutCreated(OptoutEvent),
    /// The number opted back in: a START reply, or an admin through the API.
    #[serde(rename = "optout.removed")]
    OptoutRemoved(OptoutEvent),
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::MessageSent(_) => EventKind::MessageSent,
            Event::MessageDelivered(_) => EventKind::MessageDelivered,
            Event::MessageFailed(_) => EventKind::MessageFailed,
            Event::MessageExpired(_) => EventKind::MessageExpired,
            Event::MessageUnknown(_) => EventKind::MessageUnknown,
            Event::MessageReceived(_) => EventKind::MessageReceived,
            Event::OptoutCreated(_) => EventKind::OptoutCreated,
            Event::OptoutRemoved(_) => EventKind::OptoutRemoved,
        }
    }

    /// What this event must arrive in order with: the events of its message, or those of its number for
    /// opt-outs (a STOP then a START must not reach the CMS the other way round).
    pub fn in_order_of(&self) -> String {
        match self {
            Event::MessageSent(m)
            | Event::MessageDelivered(m)
            | Event::MessageFailed(m)
            | Event::MessageExpired(m)
            | Event::MessageUnknown(m) => m.message_id.to_string(),
            Event::MessageReceived(r) => r.message_id.to_string(),
            Event::OptoutCreated(o) | Event::OptoutRemoved(o) => format!("optout:{}", o.number),
        }
    }
}

/// The delivered JSON: `{"id", "type", "created_at", "data"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    pub id: Uuid,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub created_at: Timestamp,
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    pub fn new(event: Event, created_at: Timestamp) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            created_at,
            event,
        }
    }

    /// The JSON the outbox stores and every attempt posts (so retries are byte-identical).
    pub fn payload(&self) -> Value {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> Event {
        Event::MessageSent(MessageEvent {
            message_id: Uuid::nil(),
            to: "+4915123456789".into(),
            parts: 1,
            modem: Some("m1".into()),
            reference: Some("case-7".into()),
            metadata: None,
            error: None,
            error_code: None,
            category: Category::Standard,
        })
    }

    #[test]
    fn envelope_has_id_type_created_at_and_data() {
        let env = Envelope::new(sent(), "2026-11-22T12:00:00Z".parse().unwrap());
        let json = env.payload();
        assert_eq!(json["type"], "message.sent");
        assert_eq!(json["created_at"], "2026-11-22T12:00:00.000Z");
        assert_eq!(json["id"], env.id.to_string());
        assert_eq!(json["data"]["to"], "+4915123456789");
        assert_eq!(json["data"]["reference"], "case-7");
    }

    #[test]
    fn event_kinds_parse_as_they_are_written() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
    }
}
