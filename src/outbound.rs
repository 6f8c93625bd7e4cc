//! Making an outbound message: encoding a text into SMS-SUBMIT parts ([`compose`]), for the API's sends and
//! the rules' own replies alike, and handing it to the store and the dispatcher ([`submit`]).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU8, Ordering};

use jiff::Timestamp;
use serde_json::Value;

use crate::dispatch::DispatchHandle;
use crate::pdu::{self, EncodingChoice, PduError, SubmitOptions};
use crate::store::{Accepted, Category, NewMessage, NewPart, QueueEntry, Store, StoreError};

/// Everything about a send but its recipient and text.
#[derive(Debug, Clone)]
pub struct ComposeOptions {
    /// The API key's name (idempotency keys are scoped to it); `rules` for the rules' own replies.
    pub api_key: String,
    pub idempotency_key: Option<String>,
    /// Higher goes first.
    pub priority: i32,
    pub send_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub reference: Option<String>,
    pub metadata: Option<Value>,
    /// The recipient's IANA time zone, for quiet hours.
    pub tz: Option<String>,
    /// The region of the recipient's address (`US-MA`), for its quiet hours and caps.
    pub region: Option<String>,
    pub category: Category,
    pub encoding: EncodingChoice,
    /// Replace look-alike characters so the text stays GSM 7-bit (`[pdu] smart_encoding`).
    pub smart: bool,
    /// Ask for delivery reports (`[pdu] status_reports`).
    pub status_report: bool,
}

impl Default for ComposeOptions {
    fn default() -> Self {
        ComposeOptions {
            api_key: String::new(),
            idempotency_key: None,
            priority: 5,
            send_at: None,
            expires_at: None,
            reference: None,
            metadata: None,
            tz: None,
            region: None,
            category: Category::Standard,
            encoding: EncodingChoice::Auto,
            smart: true,
            status_report: true,
        }
    }
}

/// Why a text could not be made into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot encode the message to {to}: {source}")]
    Encode {
        to: String,
        #[source]
        source: PduError,
    },
}

/// The concatenation reference of a multi-part message. Parts of different messages to one phone must not
/// share one, or it may stitch them together: successive messages take successive values. With an
/// idempotency key it is derived from the key instead, so a repeated request encodes to the same bytes
/// and the store recognises the repeat.
fn concat_reference(opts: &ComposeOptions) -> u8 {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    match &opts.idempotency_key {
        Some(key) => {
            let mut hasher = DefaultHasher::new();
            (&opts.api_key, key).hash(&mut hasher);
            hasher.finish().to_le_bytes()[0]
        }
        None => NEXT.fetch_add(1, Ordering::Relaxed),
    }
}

/// Encodes `text` for `to` (E.164) into the message the store accepts. The text stored is the one sent
/// (after smart replacement): the log must show what the phone showed.
pub fn compose(to: &str, text: &str, opts: ComposeOptions) -> Result<NewMessage, ComposeError> {
    let fail = |source| ComposeError::Encode {
        to: to.to_owned(),
        source,
    };
    let plan = pdu::segments(text, opts.encoding, opts.smart).map_err(fail)?;
    let submit = SubmitOptions {
        encoding: opts.encoding,
        smart: opts.smart,
        status_report: opts.status_report,
        message_reference: 0,
        concat_reference: concat_reference(&opts),
        validity: None,
    };
    let parts = pdu::encode_submit(to, text, &submit).map_err(fail)?;
    Ok(NewMessage {
        api_key: opts.api_key,
        idempotency_key: opts.idempotency_key,
        to: to.to_owned(),
        text: plan.text,
        encoding: plan.encoding.into(),
        parts: parts
            .iter()
            .map(|part| NewPart {
                tpdu_length: part.tpdu_length,
                pdu_hex: part.hex(),
            })
            .collect(),
        priority: opts.priority,
        send_at: opts.send_at,
        expires_at: opts.expires_at,
        reference: opts.reference,
        metadata: opts.metadata,
        tz: opts.tz,
        region: opts.region,
        category: opts.category,
    })
}

/// Stores the message durably, then wakes the dispatcher for it (unless it repeats an idempotent request,
/// whose original is already queued).
pub async fn submit(
    store: &Store,
    dispatch: &DispatchHandle,
    message: NewMessage,
) -> Result<Accepted, StoreError> {
    submit_on(store, dispatch, message, None).await
}

/// [`submit`], sent from `modem` only (an answer goes out from the number the person texted).
pub(crate) async fn submit_on(
    store: &Store,
    dispatch: &DispatchHandle,
    message: NewMessage,
    modem: Option<&str>,
) -> Result<Accepted, StoreError> {
    let accepted = store.accept(message.clone()).await?;
    if !accepted.duplicate {
        let entry = QueueEntry {
            pinned_modem: modem.map(str::to_owned),
            ..QueueEntry::for_accepted(&message, &accepted)
        };
        dispatch.enqueue(entry);
    }
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TextEncoding;

    #[test]
    fn compose_encodes_parts_and_keeps_the_options() {
        let opts = ComposeOptions {
            api_key: "cms".into(),
            reference: Some("case-1".into()),
            metadata: Some(serde_json::json!({"paymentLink": "https://pay.example/1"})),
            tz: Some("America/Chicago".into()),
            category: Category::AutoReply,
            ..ComposeOptions::default()
        };
        let message = compose("+14155550100", "Pay here \u{201c}now\u{201d}", opts).unwrap();
        assert_eq!(message.text, "Pay here \"now\"");
        assert_eq!(message.encoding, TextEncoding::Gsm7);
        assert_eq!(message.parts.len(), 1);
        let decoded = pdu::decode_hex(&message.parts[0].pdu_hex).unwrap();
        assert!(
            matches!(decoded.tpdu, pdu::Tpdu::Submit(ref s) if s.recipient.value == "+14155550100")
        );
        assert_eq!(message.category, Category::AutoReply);
        assert_eq!(message.reference.as_deref(), Some("case-1"));

        let long = compose("+14155550100", &"é".repeat(71), ComposeOptions::default()).unwrap();
        assert_eq!(long.encoding, TextEncoding::Gsm7);
        let ucs2 = compose("+14155550100", &"ж".repeat(71), ComposeOptions::default()).unwrap();
        assert_eq!((ucs2.encoding, ucs2.parts.len()), (TextEncoding::Ucs2, 2));
        assert!(matches!(
            compose(
                "+14155550100",
                "ж",
                ComposeOptions {
                    encoding: EncodingChoice::Gsm7,
                    ..ComposeOptions::default()
                }
            ),
            Err(ComposeError::Encode { .. })
        ));
    }
}
