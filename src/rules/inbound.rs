//! What the rules do with a complete inbound message: opt-outs first (recorded, confirmed once), then
//! opt-ins, HELP, reply menus (a templated answer from the last message's metadata), and everything else
//! left for a person. Each decision is appended to the inbound message's event history with the rule
//! that made it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::{SignedDuration, Timestamp};

use crate::config::{Config, PduOptions};
use crate::dispatch::DispatchHandle;
use crate::modem::job::ModemId;
use crate::msisdn::{Region, Sender};
use crate::outbound::{self, ComposeOptions};
use crate::store::{Category, Message, Store};

use super::keywords::{Keyword, Keywords, Language, normalize};
use super::notice;
use super::optouts::{OptOutSource, OptOuts, Origin};
use super::replies::{OptOutConfig, ReplyRule};

/// An opt-out confirmation later than this is no longer the prompt answer the FCC allows: drop it.
pub const CONFIRMATION_DEADLINE: SignedDuration = SignedDuration::from_mins(5);

/// The rules' verdict on a reply, for the `message.received` event. (`optout.created` needs no help: the
/// store writes it in the same commit as the opt-out.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RulesOutcome {
    /// `opt_out`, `opt_in`, `help`, `optout_review`, a reply menu's intent, or a `[keywords] menu` word.
    pub intent: Option<String>,
    /// No rule fully handled it: a person should read it.
    pub needs_agent: bool,
    /// An opt-out or opt-in could not be stored: the reply must stay pending, so its rules run again at
    /// the next start (the number stays suppressed in memory meanwhile).
    pub unrecorded: bool,
}

impl RulesOutcome {
    fn handled(intent: &str) -> Self {
        RulesOutcome {
            intent: Some(intent.to_owned()),
            ..RulesOutcome::default()
        }
    }

    fn for_agent(intent: Option<&str>) -> Self {
        RulesOutcome {
            intent: intent.map(str::to_owned),
            needs_agent: true,
            ..RulesOutcome::default()
        }
    }
}

/// What a reply says, from its sender and text alone: the label `message.received` carries. Actions (an
/// opt-in from a number never opted out, a menu choice from one that is) are decided by [`InboundRules`]
/// and recorded as events on the message.
pub struct Classifier {
    keywords: Keywords,
    reply_rules: Vec<ReplyRule>,
    region: Region,
}

impl Classifier {
    pub fn new(config: &Config) -> Self {
        // Reply-rule keywords join the menu words, so the classifier reports them as menu choices.
        let mut keywords = config.keywords.clone();
        keywords.menu.extend(
            config
                .reply_rules
                .iter()
                .flat_map(|r| r.keywords().iter().cloned()),
        );
        Classifier {
            keywords: Keywords::new(&keywords),
            reply_rules: config.reply_rules.clone(),
            region: config.server.default_region,
        }
    }

    /// `(intent, needs_agent)` for a reply from `sender`: opt-outs, opt-ins, HELP and menu choices are
    /// handled by the rules; look-alike opt-outs, unmatched text and replies from short codes or
    /// alphanumeric senders go to a person.
    pub fn verdict(&self, sender: &str, text: &str) -> (Option<String>, bool) {
        if !matches!(Sender::classify(sender, self.region), Sender::Msisdn(_)) {
            return (None, true);
        }
        let handled = |intent: &str| (Some(intent.to_owned()), false);
        match self.keywords.classify(text) {
            Keyword::OptOut { .. } => handled("opt_out"),
            Keyword::LooksLikeOptOut { .. } => (Some("optout_review".to_owned()), true),
            Keyword::OptIn { .. } => handled("opt_in"),
            Keyword::Help { .. } => handled("help"),
            Keyword::Menu(word) => match self.rule(&word) {
                Some(rule) => handled(&rule.intent),
                None => handled(&word),
            },
            Keyword::Other => (None, true),
        }
    }

    fn rule(&self, word: &str) -> Option<&ReplyRule> {
        self.reply_rules
            .iter()
            .find(|r| r.keywords().iter().any(|k| k == word))
    }
}

/// The inbound rules, built once from the configuration.
pub struct InboundRules {
    classifier: Classifier,
    optout: OptOutConfig,
    optouts: Arc<OptOuts>,
    dispatch: DispatchHandle,
    /// Encoding and delivery-report choices for the answers (`[pdu]`).
    pdu: PduOptions,
    /// When each number was last sent an opt-out confirmation, so a repeated STOP within
    /// `repeat_window` gets no second one. In memory: after a restart one more confirmation may go.
    confirmed: Mutex<HashMap<String, Timestamp>>,
}

impl InboundRules {
    pub fn new(config: &Config, optouts: Arc<OptOuts>, dispatch: DispatchHandle) -> Self {
        InboundRules {
            classifier: Classifier::new(config),
            optout: config.optout.clone(),
            optouts,
            dispatch,
            pdu: config.pdu.clone(),
            confirmed: Mutex::new(HashMap::new()),
        }
    }

    /// Applies the rules to a complete inbound message from `message.peer`, received on `modem`. Only
    /// subscribers are answered or opted out: short codes and alphanumeric senders (carrier notices) are
    /// left for a person.
    pub async fn apply(&self, store: &Store, modem: &ModemId, message: &Message) -> RulesOutcome {
        self.run(store, modem, message, Arrival::Live).await
    }

    /// Applies the rules again to a message a crash interrupted them on. Recording an opt-out twice is
    /// harmless, but an answer already queued before the crash is not queued again.
    pub async fn replay(&self, store: &Store, modem: &ModemId, message: &Message) -> RulesOutcome {
        self.run(store, modem, message, Arrival::Replayed).await
    }

    /// For a reply the store could not take (a full disk): when it reads as an opt-out, its sender is
    /// suppressed in memory at once (see [`OptOuts::hold`]), so no text goes to them between the store
    /// recovering and the reply being read again from the SIM. Returns whether the number was held now.
    pub fn hold_unstored(&self, sender: &str, text: &str) -> bool {
        let Sender::Msisdn(number) = Sender::classify(sender, self.classifier.region) else {
            return false;
        };
        match self.classifier.keywords.classify(text) {
            Keyword::OptOut { .. } | Keyword::LooksLikeOptOut { .. } => {
                self.optouts.hold(number.as_str())
            }
            _ => false,
        }
    }

    async fn run(
        &self,
        store: &Store,
        modem: &ModemId,
        message: &Message,
        arrival: Arrival,
    ) -> RulesOutcome {
        let number = match Sender::classify(&message.peer, self.classifier.region) {
            Sender::Msisdn(number) => number.as_str().to_owned(),
            Sender::ShortCode(_) | Sender::Alphanumeric(_) => return RulesOutcome::for_agent(None),
        };
        let ctx = Reply {
            store,
            modem,
            message,
            number,
            arrival,
            unrecorded: std::sync::atomic::AtomicBool::new(false),
        };
        let mut outcome = match self.classifier.keywords.classify(&message.text) {
            Keyword::OptOut { language } => self.opt_out(&ctx, language).await,
            Keyword::LooksLikeOptOut { word, .. } => self.review(&ctx, &word).await,
            Keyword::OptIn { language } => self.opt_in(&ctx, language).await,
            Keyword::Help { language } => {
                let text = self.optout.help.get(language).to_owned();
                ctx.answer(self, &text, Category::Confirmation, None, "help", None)
                    .await;
                RulesOutcome::handled("help")
            }
            Keyword::Menu(word) => self.menu(&ctx, &word).await,
            Keyword::Other => RulesOutcome::for_agent(None),
        };
        outcome.unrecorded = ctx.unrecorded.into_inner();
        outcome
    }

    async fn opt_out(&self, ctx: &Reply<'_>, language: Language) -> RulesOutcome {
        let keyword = normalize(&ctx.message.text);
        let number = &ctx.number;
        let new = ctx
            .record_opt_out(&self.optouts, OptOutSource::Keyword, &keyword)
            .await;
        let detail = if new {
            format!("opted out by the reply {keyword:?}")
        } else {
            format!("repeated opt-out {keyword:?} from a number already opted out")
        };
        ctx.event("opt_out", &detail, "optout").await;
        let now = ctx.store.now();
        if self.first_confirmation(number, now) {
            let text = self.optout.confirmation.get(language).to_owned();
            let deadline = now.checked_add(CONFIRMATION_DEADLINE).ok();
            ctx.answer(
                self,
                &text,
                Category::Confirmation,
                deadline,
                "optout",
                None,
            )
            .await;
        } else {
            ctx.event(
                "confirmation_skipped",
                "a confirmation was already sent within the repeat window",
                "optout",
            )
            .await;
        }
        RulesOutcome::handled("opt_out")
    }

    /// Whether an opt-out from `number` at `now` gets a confirmation; if so, remembers it was sent.
    fn first_confirmation(&self, number: &str, now: Timestamp) -> bool {
        let mut confirmed = self
            .confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let window =
            SignedDuration::try_from(self.optout.repeat_window).unwrap_or(SignedDuration::MAX);
        confirmed.retain(|_, &mut at| now.duration_since(at) < window);
        let recent = confirmed.contains_key(number);
        if !recent {
            confirmed.insert(number.to_owned(), now);
        }
        !recent
    }

    /// A reply that mentions an opt-out word: suppressed like an opt-out (Reg F: an opt-out counts however
    /// it is phrased), not confirmed (it may not be one), and flagged for a person.
    async fn review(&self, ctx: &Reply<'_>, word: &str) -> RulesOutcome {
        ctx.record_opt_out(&self.optouts, OptOutSource::Review, &ctx.message.text)
            .await;
        let detail = format!(
            "mentions the opt-out word {word:?}: treated as an opt-out until a person reviews it"
        );
        ctx.event("needs_review", &detail, "optout").await;
        RulesOutcome::for_agent(Some("optout_review"))
    }

    async fn opt_in(&self, ctx: &Reply<'_>, language: Language) -> RulesOutcome {
        let number = &ctx.number;
        let keyword = normalize(&ctx.message.text);
        match self.optouts.source(number) {
            // START... from someone who never opted out is an ordinary answer.
            None => return RulesOutcome::for_agent(None),
            // A cease-communication letter or an attorney's notice entered through the API is not
            // undone by a text: the agency lifts it, and a person sees the reply.
            Some(OptOutSource::Api) => {
                ctx.event(
                    "opt_in_refused",
                    &format!(
                        "the reply {keyword:?} does not lift an opt-out recorded through the API"
                    ),
                    "optout",
                )
                .await;
                return RulesOutcome::for_agent(Some("opt_in"));
            }
            Some(OptOutSource::Keyword | OptOutSource::Review) => {}
        }
        let origin = Origin {
            actor: "rules",
            message_id: Some(ctx.message.id),
            modem: Some(ctx.modem),
            detail: Some(keyword.to_owned()),
        };
        if let Err(error) = self.optouts.remove(number, origin).await {
            tracing::error!(id = %ctx.message.id, %error, "could not record an opt-in");
            ctx.unrecorded
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return RulesOutcome::for_agent(Some("opt_in"));
        }
        self.confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(number);
        ctx.event(
            "opt_in",
            &format!("opted back in by the reply {keyword:?}"),
            "optout",
        )
        .await;
        let text = self.optout.opt_in_confirmation.get(language).to_owned();
        ctx.answer(self, &text, Category::Confirmation, None, "optout", None)
            .await;
        RulesOutcome::handled("opt_in")
    }

    async fn menu(&self, ctx: &Reply<'_>, word: &str) -> RulesOutcome {
        let Some(rule) = self.classifier.rule(word) else {
            // A `[keywords] menu` word: the CMS answers it.
            return RulesOutcome::handled(word);
        };
        let intent = rule.intent.as_str();
        if self.optouts.contains(&ctx.number) {
            ctx.event(
                "auto_reply_skipped",
                "the number opted out: no automatic reply",
                "reply_menu",
            )
            .await;
            return RulesOutcome::for_agent(Some(intent));
        }
        let last = match ctx.store.last_sent_to(&ctx.number).await {
            Ok(last) => last,
            Err(error) => {
                tracing::error!(id = %ctx.message.id, %error, "cannot read the last message sent");
                return RulesOutcome::for_agent(Some(intent));
            }
        };
        let metadata = last
            .as_ref()
            .and_then(|m| m.metadata.as_ref())
            .and_then(|m| m.as_object());
        // A payment link or a balance is a communication about the debt like any other: it carries the
        // opt-out notice (Reg F 1006.6(e)), in the language of the message answered.
        let language = last
            .as_ref()
            .and_then(|m| notice::notice_language(&self.optout, &m.text))
            .unwrap_or(Language::En);
        let filled = rule.template.fill(metadata).map(|text| {
            notice::apply_to_answer(&self.optout, &text, language).map_err(|e| e.to_string())
        });
        match filled {
            Ok(Err(refused)) => {
                ctx.event("auto_reply_skipped", &refused, "reply_menu")
                    .await;
                RulesOutcome::for_agent(Some(intent))
            }
            Ok(Ok(text)) => {
                let sent = ctx
                    .answer(
                        self,
                        &text,
                        Category::AutoReply,
                        None,
                        "reply_menu",
                        last.as_ref(),
                    )
                    .await;
                if sent {
                    RulesOutcome::handled(intent)
                } else {
                    RulesOutcome::for_agent(Some(intent))
                }
            }
            Err(field) => {
                let detail = match &last {
                    Some(last) => format!(
                        "no usable `{field}` in the metadata of message {} (missing, not a scalar, or \
                         with a control character)",
                        last.id
                    ),
                    None => {
                        "no message was sent to this number to take the reply's fields from".into()
                    }
                };
                ctx.event("auto_reply_skipped", &detail, "reply_menu").await;
                RulesOutcome::for_agent(Some(intent))
            }
        }
    }

    fn compose_options(&self, category: Category, expires_at: Option<Timestamp>) -> ComposeOptions {
        ComposeOptions {
            api_key: "rules".into(),
            // Answers go before queued collection texts: a person is waiting for them.
            priority: 9,
            expires_at,
            category,
            smart: self.pdu.smart_encoding,
            status_report: self.pdu.status_reports,
            ..ComposeOptions::default()
        }
    }
}

/// Whether the rules see a reply for the first time, or again after a crash cut them short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    Live,
    Replayed,
}

/// The inbound message being handled, and where answers go.
struct Reply<'a> {
    store: &'a Store,
    modem: &'a ModemId,
    message: &'a Message,
    /// The sender in E.164.
    number: String,
    arrival: Arrival,
    /// An opt-out or opt-in the store refused.
    unrecorded: std::sync::atomic::AtomicBool,
}

impl Reply<'_> {
    /// Appends a rules event to the inbound message; a failure is logged, the rest still runs.
    async fn event(&self, kind: &str, detail: &str, rule: &str) {
        if let Err(error) = self
            .store
            .rule_event(self.message.id, kind, detail, rule)
            .await
        {
            tracing::error!(id = %self.message.id, %error, kind, "could not record a rules event");
        }
    }

    /// Records an opt-out from the sender; returns whether it is new. A store failure is logged: the number
    /// stays suppressed in memory regardless.
    async fn record_opt_out(&self, optouts: &OptOuts, source: OptOutSource, detail: &str) -> bool {
        let origin = Origin {
            actor: "rules",
            message_id: Some(self.message.id),
            modem: Some(self.modem),
            detail: Some(detail.to_owned()),
        };
        match optouts.add(&self.number, source, origin).await {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(id = %self.message.id, %error, "could not store an opt-out; the reply's rules run again at the next start");
                self.unrecorded
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
        }
    }

    /// Sends `text` to the sender from the modem they wrote to, and notes it on the inbound message.
    async fn answer(
        &self,
        rules: &InboundRules,
        text: &str,
        category: Category,
        expires_at: Option<Timestamp>,
        rule: &str,
        // The message the debtor answered: its `tz` and `region` (where the debtor lives) apply to the
        // answer's quiet hours and caps as to any text.
        answering: Option<&Message>,
    ) -> bool {
        let to = &self.number;
        if self.arrival == Arrival::Replayed {
            // Only on a replay: live, a later reply's answer may legitimately follow this one's.
            match self.store.rules_answer_after(to, self.message.id).await {
                Ok(Some(earlier)) => {
                    let detail =
                        format!("already answered with message {earlier} before a restart");
                    self.event("answer_skipped", &detail, rule).await;
                    return true;
                }
                Ok(None) => {}
                Err(error) => {
                    // Better a second confirmation than none: answer.
                    tracing::warn!(id = %self.message.id, %error, "cannot tell whether a replayed reply was answered");
                }
            }
        }
        let mut options = rules.compose_options(category, expires_at);
        if let Some(answered) = answering {
            options.tz = answered.tz.clone();
            options.region = answered.region.clone();
        }
        let message = match outbound::compose(to, text, options) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(id = %self.message.id, %error, "cannot encode an answer");
                self.event("answer_failed", &error.to_string(), rule).await;
                return false;
            }
        };
        match outbound::submit_on(self.store, &rules.dispatch, message, Some(self.modem)).await {
            Ok(accepted) => {
                let detail = format!("answered with message {} ({category})", accepted.id);
                self.event("answered", &detail, rule).await;
                true
            }
            Err(error) => {
                tracing::error!(id = %self.message.id, %error, "cannot store an answer");
                false
            }
        }
    }
}
