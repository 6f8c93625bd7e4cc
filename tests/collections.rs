//! Collections safety end to end: a real SQLite file, a simulated modem on a real pty driven by the modem
//! worker through tokio-serial, the dispatcher with the collections gate, and the inbound rules applied to
//! every complete reply, all on a manual clock.
//!
//! The chain is assembled here the way the daemon must assemble it: opt-outs loaded from the store, the
//! gate given to the dispatcher, and every complete inbound message passed to `InboundRules::apply`.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use modemgate::config::Config;
use modemgate::daemon::modems::{self, ModemRuntime};
use modemgate::dispatch::events::{Applied, apply};
use modemgate::dispatch::{self, DispatchHandle, ModemSlot};
use modemgate::modem::job::ModemId;
use modemgate::outbound::{self, ComposeOptions};
use modemgate::pdu::UserData;
use modemgate::rules::gate::{CollectionsGate, UNRESOLVED_RECHECK};
use modemgate::rules::inbound::{InboundRules, RulesOutcome};
use modemgate::rules::optouts::OptOuts;
use modemgate::rules::optouts::{OptOutSource, Origin};
use modemgate::sim::{Inbound, LoggedSend, SimHandle};
use modemgate::store::{
    Category, Direction, InboundOutcome, ListFilter, ManualClock, Message, MessageState,
    OpenOptions, Store,
};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Guards against a hang; never reached when the code works.
const PATIENCE: Duration = Duration::from_secs(20);

struct Gateway {
    store: Store,
    clock: ManualClock,
    dispatch: DispatchHandle,
    optouts: Arc<OptOuts>,
    runtime: ModemRuntime,
    /// What the rules made of each complete inbound message, in order.
    outcomes: mpsc::UnboundedReceiver<(Message, RulesOutcome)>,
    /// Counts the worker events the hub has applied, so tests can wait for the store to catch up.
    applied: watch::Receiver<u64>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

fn at(text: &str) -> Timestamp {
    text.parse::<jiff::Zoned>().unwrap().timestamp()
}

impl Gateway {
    async fn start(rules: &str, now: Timestamp) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(&format!(
            "[[modems]]\nid = \"m1\"\ndevice = \"sim:plain\"\nrate = \"600/min\"\nburst = 50\n{rules}"
        ))
        .unwrap();
        let clock = ManualClock::new(now);
        let options = OpenOptions {
            clock: Arc::new(clock.clone()),
            ..OpenOptions::default()
        };
        let store = Store::open(dir.path().join("gw.db"), options).unwrap();
        let shutdown = CancellationToken::new();
        let (events_tx, mut events) = mpsc::channel(256);
        let modem = &config.modems[0];
        let runtime = modems::start(modem, 0, true, events_tx, &shutdown).unwrap();

        let rules = config.rules();
        let optouts = Arc::new(OptOuts::load(&store).await.unwrap());
        let gate = CollectionsGate::load(
            &store,
            optouts.clone(),
            rules.quiet_hours.clone(),
            rules.caps.clone(),
        )
        .await
        .unwrap();
        let slot = ModemSlot {
            id: runtime.id.clone(),
            jobs: runtime.handle.jobs(),
            ready: runtime.handle.readiness(),
            health: runtime.handle.health(),
            quota: modem.rate.quota(modem.burst),
            daily_cap: None,
        };
        let (dispatch, _task) = dispatch::start(
            store.clone(),
            vec![slot],
            dispatch::Settings::default(),
            Arc::new(gate),
            shutdown.child_token(),
            None,
        )
        .await
        .unwrap();
        let inbound = InboundRules::new(&config, optouts.clone(), dispatch.clone());

        // The hub: worker events into the store, complete replies through the rules.
        let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
        let (applied_tx, applied) = watch::channel(0u64);
        let hub_store = store.clone();
        let modem_id: ModemId = runtime.id.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Ok(Applied::Inbound(InboundOutcome::Complete(message))) =
                    apply(&hub_store, event).await
                {
                    let outcome = inbound.apply(&hub_store, &modem_id, &message).await;
                    let _ = outcomes_tx.send((*message, outcome));
                }
                applied_tx.send_modify(|n| *n += 1);
            }
        });
        Gateway {
            store,
            clock,
            dispatch,
            optouts,
            runtime,
            outcomes,
            applied,
            shutdown,
            _dir: dir,
        }
    }

    fn sim(&self) -> &SimHandle {
        self.runtime.sim().unwrap()
    }

    async fn send(&self, to: &str, text: &str, opts: ComposeOptions) -> Uuid {
        let message = outbound::compose(
            to,
            text,
            ComposeOptions {
                api_key: "cms".into(),
                ..opts
            },
        )
        .unwrap();
        outbound::submit(&self.store, &self.dispatch, message)
            .await
            .unwrap()
            .id
    }

    async fn reply(&mut self, from: &str, text: &str) -> (Message, RulesOutcome) {
        self.sim().inject(Inbound::new(from, text)).await.unwrap();
        let got = tokio::time::timeout(PATIENCE, self.outcomes.recv())
            .await
            .expect("the reply reached the rules")
            .unwrap();
        // Whatever the rules queued is now with the dispatcher.
        self.dispatch.flush().await;
        got
    }

    async fn sends(&self, n: usize) -> Vec<LoggedSend> {
        tokio::time::timeout(PATIENCE, self.sim().wait_sends(n))
            .await
            .expect("the modem sent them")
            .unwrap()
    }

    async fn set_clock(&self, to: Timestamp) {
        self.clock.set(to);
        self.dispatch.flush().await;
    }

    async fn message(&self, id: Uuid) -> Message {
        self.store.get(id).await.unwrap().unwrap().message
    }

    /// Where `id` stands and why: its state, hold reason and the time it waits for.
    async fn hold(&self, id: Uuid) -> (MessageState, Option<String>, Option<Timestamp>) {
        let m = self.message(id).await;
        (m.state, m.hold_reason, m.not_before)
    }

    /// Waits until the store shows `id` sent (or already delivered: the simulator reports at once). The
    /// worker's events reach the store through the hub.
    async fn wait_sent(&mut self, id: Uuid) {
        let wait = async {
            loop {
                let state = self.message(id).await.state;
                if matches!(state, MessageState::Sent | MessageState::Delivered) {
                    return;
                }
                self.applied.changed().await.unwrap();
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("{id} was never sent"));
    }

    /// The gateway's own answers to `number`, oldest first.
    async fn answers(&self, number: &str) -> Vec<Message> {
        let page = self
            .store
            .list(ListFilter {
                peer: Some(number.into()),
                direction: Some(Direction::Outbound),
                ..ListFilter::default()
            })
            .await
            .unwrap();
        page.messages
            .into_iter()
            .filter(|m| m.category != Category::Standard)
            .collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.runtime.stop(Duration::from_secs(5)).await;
    }
}

fn text(send: &LoggedSend) -> &str {
    match &send.submit.user_data {
        UserData::Text(text) => text,
        UserData::Binary(_) => panic!("binary send"),
    }
}

const DEBTOR: &str = "+12125550123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_reply_blocks_five_queued_messages_and_sends_one_confirmation() {
    let now = at("2026-06-10T12:00:00[America/New_York]");
    let mut gw = Gateway::start("", now).await;
    let later = now.checked_add(SignedDuration::from_hours(1)).unwrap();
    let mut queued = Vec::new();
    for i in 0..5 {
        let opts = ComposeOptions {
            send_at: Some(later),
            ..ComposeOptions::default()
        };
        queued.push(
            gw.send(DEBTOR, &format!("Balance reminder {i}"), opts)
                .await,
        );
    }

    let (stop, outcome) = gw.reply(DEBTOR, "STOP").await;
    assert_eq!(outcome.intent.as_deref(), Some("opt_out"));
    assert!(!outcome.needs_agent);
    assert!(gw.optouts.contains(DEBTOR));
    let sends = gw.sends(1).await;
    assert_eq!(sends[0].submit.recipient.value, DEBTOR);
    assert_eq!(
        text(&sends[0]),
        "You will no longer receive text messages from this number. Reply START to opt back in."
    );

    // A second STOP is recorded but not confirmed again.
    let (_, again) = gw.reply(DEBTOR, "stop").await;
    assert_eq!(again.intent.as_deref(), Some("opt_out"));
    assert_eq!(gw.answers(DEBTOR).await.len(), 1);

    // The five fail at once, so the CMS hears now rather than at each one's send time; reaching it
    // changes nothing.
    for &id in &queued {
        let state = gw.store.get(id).await.unwrap().unwrap().message.state;
        assert_eq!(state, MessageState::Failed, "{id}");
    }
    gw.set_clock(later).await;
    for id in queued {
        let detail = gw.store.get(id).await.unwrap().unwrap();
        assert_eq!(detail.message.state, MessageState::Failed, "{id}");
        assert!(detail.message.error.unwrap().starts_with("opted_out"));
        let last = detail.events.last().unwrap();
        assert_eq!(
            (last.kind.as_str(), last.rule.as_deref()),
            ("blocked", Some("optout"))
        );
    }
    assert_eq!(gw.sim().sends().len(), 1);

    // The opt-out is on record with the message and the modem, and on the STOP's history.
    let record = &gw.store.optouts().await.unwrap()[0];
    assert_eq!(
        (
            record.number.as_str(),
            record.source_message,
            record.modem.as_deref()
        ),
        (DEBTOR, Some(stop.id), Some("m1"))
    );
    let history = gw.store.get(stop.id).await.unwrap().unwrap().events;
    assert!(
        history
            .iter()
            .any(|e| e.kind == "opt_out" && e.rule.as_deref() == Some("optout")),
        "{history:#?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanish_and_accented_opt_outs_and_start_re_enables() {
    let now = at("2026-06-10T12:00:00[America/New_York]");
    let mut gw = Gateway::start("", now).await;
    let numbers = ["+12125550101", "+12125550102", "+12125550103"];
    for (number, word) in numbers.iter().zip(["baja", "Bája!", "NO MÁS"]) {
        let (_, outcome) = gw.reply(number, word).await;
        assert_eq!(outcome.intent.as_deref(), Some("opt_out"), "{word}");
        assert!(gw.optouts.contains(number), "{word}");
    }
    let sends = gw.sends(3).await;
    for send in &sends {
        assert!(
            text(send).starts_with("No recibirá más mensajes"),
            "a Spanish confirmation: {}",
            text(send)
        );
    }

    // START re-enables: a confirmation, then collection texts go out again.
    let (_, outcome) = gw.reply(numbers[0], "Start").await;
    assert_eq!(outcome.intent.as_deref(), Some("opt_in"));
    assert!(!gw.optouts.contains(numbers[0]));
    let sends = gw.sends(4).await;
    assert!(text(&sends[3]).starts_with("You will receive text messages from this number again"));
    let id = gw
        .send(
            numbers[0],
            "Your balance is due.",
            ComposeOptions::default(),
        )
        .await;
    gw.wait_sent(id).await;
    assert_eq!(text(&gw.sends(5).await[4]), "Your balance is due.");

    // START from someone who never opted out is an ordinary answer, for a person; so is YES from someone
    // who did (it answers whatever they were last asked), and they stay opted out.
    let (_, outcome) = gw.reply("+12125550199", "start").await;
    assert_eq!((outcome.intent, outcome.needs_agent), (None, true));
    let (_, outcome) = gw.reply(numbers[1], "yes").await;
    assert_eq!((outcome.intent, outcome.needs_agent), (None, true));
    assert!(gw.optouts.contains(numbers[1]));

    // An opt-out the agency recorded through the API (a cease-communication letter) is not lifted by a
    // START: the reply goes to a person, with the refusal on its history, and nothing is answered. The
    // letter came after the debtor had texted STOP: it still takes over from the STOP.
    let letter = "+12125550177";
    let (_, outcome) = gw.reply(letter, "STOP").await;
    assert_eq!(outcome.intent.as_deref(), Some("opt_out"));
    let confirmed = gw.answers(letter).await.len();
    let api = Origin {
        actor: "api:ops",
        detail: Some("cease-communication letter".into()),
        ..Origin::default()
    };
    assert!(
        gw.optouts
            .add(letter, OptOutSource::Api, api)
            .await
            .unwrap(),
        "the letter replaces the STOP"
    );
    let (start, outcome) = gw.reply(letter, "START").await;
    assert_eq!(
        (outcome.intent.as_deref(), outcome.needs_agent),
        (Some("opt_in"), true)
    );
    assert!(gw.optouts.contains(letter));
    let history = gw.store.get(start.id).await.unwrap().unwrap().events;
    assert!(
        history.iter().any(|e| e.kind == "opt_in_refused"),
        "{history:#?}"
    );
    assert_eq!(
        gw.answers(letter).await.len(),
        confirmed,
        "START not answered"
    );

    // A sender in national format opts out its E.164 number; a short code's STOP is no opt-out.
    let (_, outcome) = gw.reply("2125550188", "stop").await;
    assert_eq!(outcome.intent.as_deref(), Some("opt_out"));
    assert!(gw.optouts.contains("+12125550188"));
    assert_eq!(gw.sends(7).await[6].submit.recipient.value, "+12125550188");
    let (_, outcome) = gw.reply("72975", "STOP").await;
    assert_eq!((outcome.intent, outcome.needs_agent), (None, true));
    assert!(!gw.optouts.contains("72975"));
    gw.stop().await;
}

const MENU: &str = r#"
[[reply_rules]]
keywords = ["1", "PAY"]
intent = "pay"
template = "Pay securely at {paymentLink}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_1_gets_the_payment_link_from_the_last_message() {
    let now = at("2026-06-10T12:00:00[America/New_York]");
    let mut gw = Gateway::start(MENU, now).await;
    let opts = ComposeOptions {
        metadata: Some(json!({"paymentLink": "https://pay.example/a1"})),
        ..ComposeOptions::default()
    };
    let first = gw.send(DEBTOR, "Reply 1 to pay, 2 for a plan.", opts).await;
    gw.wait_sent(first).await;

    let (reply, outcome) = gw.reply(DEBTOR, " 1 ").await;
    assert_eq!(outcome.intent.as_deref(), Some("pay"));
    assert!(!outcome.needs_agent);
    let sends = gw.sends(2).await;
    assert_eq!(text(&sends[1]), "Pay securely at https://pay.example/a1");
    let answers = gw.answers(DEBTOR).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].category, Category::AutoReply);
    let history = gw.store.get(reply.id).await.unwrap().unwrap().events;
    assert!(
        history
            .iter()
            .any(|e| e.kind == "answered" && e.rule.as_deref() == Some("reply_menu"))
    );

    // Unmatched: for a person.
    let (_, outcome) = gw.reply(DEBTOR, "I lost my job").await;
    assert_eq!((outcome.intent, outcome.needs_agent), (None, true));

    // A sentence that mentions STOP: suppressed, flagged, not confirmed.
    let (flagged, outcome) = gw.reply(DEBTOR, "Please stop texting me").await;
    assert_eq!(outcome.intent.as_deref(), Some("optout_review"));
    assert!(outcome.needs_agent);
    assert!(gw.optouts.contains(DEBTOR));
    let record = &gw.store.optouts().await.unwrap()[0];
    assert_eq!(
        record.detail.as_deref(),
        Some("review: Please stop texting me")
    );
    let history = gw.store.get(flagged.id).await.unwrap().unwrap().events;
    assert!(history.iter().any(|e| e.kind == "needs_review"));

    // Menus obey opt-outs: no answer now.
    let (_, outcome) = gw.reply(DEBTOR, "PAY").await;
    assert_eq!(outcome.intent.as_deref(), Some("pay"));
    assert!(outcome.needs_agent);
    assert_eq!(gw.answers(DEBTOR).await.len(), 1);
    gw.stop().await;
}

/// A menu answer (a payment link) is a text about the debt like any other: it carries the opt-out notice,
/// even when that costs a part. (With `notice_mode = "require"`, a template without it is refused by
/// check-config, so it never gets this far.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn menu_answers_carry_the_opt_out_notice() {
    let now = at("2026-06-10T12:00:00[America/New_York]");
    let notice = "Reply STOP to stop texts to this number.";
    let config =
        format!("[optout]\nnotice = {{ en = \"{notice}\", es = \"{NOTICE_ES}\" }}\n{MENU}");
    let mut gw = Gateway::start(&config, now).await;
    let link = format!("https://pay.example/{}", "a".repeat(100));
    let opts = ComposeOptions {
        metadata: Some(json!({ "paymentLink": link })),
        ..ComposeOptions::default()
    };
    let first = gw
        .send(DEBTOR, &format!("Reply 1 to pay. {notice}"), opts)
        .await;
    gw.wait_sent(first).await;
    let (_, outcome) = gw.reply(DEBTOR, "1").await;
    assert!(!outcome.needs_agent);
    let answers = gw.answers(DEBTOR).await;
    assert_eq!(answers.len(), 1);
    // 158 characters with the notice: two parts, where the API would have refused to append it.
    assert_eq!(answers[0].text, format!("Pay securely at {link}\n{notice}"));
    assert_eq!(answers[0].part_count, 2);

    // A debtor texted in Spanish gets the answer's notice in Spanish.
    let spanish = "+14158906499";
    let first = gw
        .send(
            spanish,
            &format!("Responda 1 para pagar. {NOTICE_ES}"),
            ComposeOptions {
                metadata: Some(json!({ "paymentLink": "https://pay.example/es" })),
                region: Some("US-MA".into()),
                tz: Some("America/New_York".into()),
                ..ComposeOptions::default()
            },
        )
        .await;
    gw.wait_sent(first).await;
    gw.reply(spanish, "1").await;
    let answers = gw.answers(spanish).await;
    assert_eq!(
        answers[0].text,
        format!("Pay securely at https://pay.example/es\n{NOTICE_ES}")
    );
    // It is a text to the same person: their address's region and zone rule it as they rule any.
    assert_eq!(
        (answers[0].region.as_deref(), answers[0].tz.as_deref()),
        (Some("US-MA"), Some("America/New_York"))
    );
    gw.stop().await;
}

const NOTICE_ES: &str = "Responda STOP para no recibir más mensajes.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_in_the_recipients_zone() {
    let mut gw = Gateway::start("", at("2026-06-10T20:59:30[America/New_York]")).await;
    let goes = gw
        .send(DEBTOR, "before nine", ComposeOptions::default())
        .await;
    gw.wait_sent(goes).await;

    gw.set_clock(at("2026-06-10T21:00:00[America/New_York]"))
        .await;
    let waits = gw.send(DEBTOR, "at nine", ComposeOptions::default()).await;
    // 219 spans Central and Eastern time: only the overlap, from 08:00 Central, is safe.
    let split = gw
        .send("+12195550123", "split zone", ComposeOptions::default())
        .await;
    let unknown = gw
        .send("+18005550123", "no zone", ComposeOptions::default())
        .await;
    gw.dispatch.flush().await;
    let held = gw.message(waits).await;
    assert_eq!(held.state, MessageState::Scheduled);
    assert_eq!(held.hold_reason.as_deref(), Some("quiet_hours"));
    assert_eq!(
        held.not_before,
        Some(at("2026-06-11T08:00:00[America/New_York]"))
    );
    assert_eq!(
        gw.message(split).await.not_before,
        Some(at("2026-06-11T08:00:00[America/Chicago]"))
    );
    let unresolved = gw.message(unknown).await;
    assert_eq!(unresolved.hold_reason.as_deref(), Some("tz_unresolved"));
    assert_eq!(
        unresolved.not_before,
        at("2026-06-10T21:00:00[America/New_York]")
            .checked_add(UNRESOLVED_RECHECK)
            .ok()
    );
    let events = gw.store.get(waits).await.unwrap().unwrap().events;
    assert_eq!(events.last().unwrap().rule.as_deref(), Some("quiet_hours"));

    gw.set_clock(at("2026-06-11T07:59:59[America/New_York]"))
        .await;
    assert_eq!(gw.message(waits).await.state, MessageState::Scheduled);
    gw.set_clock(at("2026-06-11T08:00:00[America/New_York]"))
        .await;
    gw.wait_sent(waits).await;
    assert_eq!(gw.message(split).await.state, MessageState::Scheduled);
    gw.set_clock(at("2026-06-11T08:00:00[America/Chicago]"))
        .await;
    gw.wait_sent(split).await;
    assert_eq!(gw.message(unknown).await.state, MessageState::Scheduled);
    gw.stop().await;
}

/// The region a send gives for the debtor's address brings its rules whatever the number: a
/// Massachusetts resident with a New York mobile is capped at two texts a week (the built-in rule), and an
/// Ontario resident with one keeps Ontario's Sunday hours (13:00-17:00), stored and restored with the
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_of_the_address_brings_its_cap_and_its_hours() {
    // A Sunday, 12:00 in New York and Toronto.
    let t0 = at("2026-06-07T12:00:00[America/New_York]");
    let hours = |h: i64| t0.checked_add(SignedDuration::from_hours(h)).unwrap();
    let mut gw = Gateway::start("", t0).await;
    let in_boston = ComposeOptions {
        region: Some("US-MA".into()),
        ..ComposeOptions::default()
    };
    let new_york = "+12125550123";
    for (n, text) in ["one", "two"].into_iter().enumerate() {
        gw.set_clock(hours(n as i64)).await;
        let sent = gw.send(new_york, text, in_boston.clone()).await;
        gw.wait_sent(sent).await;
    }
    let third = gw.send(new_york, "three", in_boston).await;
    // A text to that number that does not repeat the region is capped too: the earlier ones said where
    // the person lives. Another New York number with no region is not capped.
    let region_left_out = gw
        .send(new_york, "no region", ComposeOptions::default())
        .await;
    let unknown_address = gw
        .send("+12125550124", "no region", ComposeOptions::default())
        .await;
    gw.dispatch.flush().await;
    let held = (
        MessageState::Scheduled,
        Some("contact_cap".into()),
        Some(hours(168)),
    );
    assert_eq!(gw.hold(third).await, held);
    assert_eq!(gw.hold(region_left_out).await, held);
    assert_eq!(gw.message(third).await.region.as_deref(), Some("US-MA"));
    gw.wait_sent(unknown_address).await;

    // Sunday 12:00: New York's window is open, Ontario's opens at 13:00.
    gw.set_clock(hours(0)).await;
    let ontario = gw
        .send(
            "+12125550188",
            "Sunday",
            ComposeOptions {
                region: Some("CA-ON".into()),
                ..ComposeOptions::default()
            },
        )
        .await;
    gw.dispatch.flush().await;
    assert_eq!(
        gw.hold(ontario).await,
        (
            MessageState::Scheduled,
            Some("quiet_hours".into()),
            Some(hours(1))
        )
    );
    gw.set_clock(hours(1)).await;
    gw.wait_sent(ontario).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_cap_counts_hand_offs_to_the_168_hour_boundary() {
    let caps = "[quiet_hours]\nenabled = false\n[[caps.rules]]\nprefixes = [\"+1617\"]\nmax = 2\nwindow = \"168h\"\n";
    let t0 = at("2026-06-01T15:00:00[UTC]");
    let hours = |h: i64| t0.checked_add(SignedDuration::from_hours(h)).unwrap();
    let mut gw = Gateway::start(caps, t0).await;
    let boston = "+16175550123";
    let first = gw.send(boston, "one", ComposeOptions::default()).await;
    gw.wait_sent(first).await;
    gw.set_clock(hours(1)).await;
    let second = gw.send(boston, "two", ComposeOptions::default()).await;
    gw.wait_sent(second).await;

    gw.set_clock(hours(2)).await;
    let third = gw.send(boston, "three", ComposeOptions::default()).await;
    let expiring = gw
        .send(
            boston,
            "expires first",
            ComposeOptions {
                expires_at: Some(hours(100)),
                ..ComposeOptions::default()
            },
        )
        .await;
    // Other numbers are not capped.
    let elsewhere = gw
        .send(DEBTOR, "not capped", ComposeOptions::default())
        .await;
    gw.dispatch.flush().await;
    let held = (
        MessageState::Scheduled,
        Some("contact_cap".into()),
        Some(hours(168)),
    );
    assert_eq!(gw.hold(third).await, held);
    let blocked = gw.message(expiring).await;
    assert_eq!(blocked.state, MessageState::Failed);
    assert!(blocked.error.unwrap().starts_with("contact_cap"));
    gw.wait_sent(elsewhere).await;

    let just_before = hours(168)
        .checked_sub(SignedDuration::from_millis(1))
        .unwrap();
    gw.set_clock(just_before).await;
    assert_eq!(gw.message(third).await.state, MessageState::Scheduled);
    gw.set_clock(hours(168)).await;
    gw.wait_sent(third).await;
    gw.stop().await;
}
