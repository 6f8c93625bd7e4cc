//! The dispatcher against fake modems and a real SQLite store, with a manual clock: rate limits, daily caps
//! across a restart, scheduling, expiry, cancel, retries on another modem, permanent failures, stickiness
//! with fallback, priorities, gates and utilisation.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
use jiff::Timestamp;
use modemgate::dispatch::{self, AllowAll, Decision, DispatchHandle, Gate, ModemSlot, Settings};
use modemgate::modem::job::{
    Clearance, JobOutcome, ModemHealth, ModemIdentity, ModemState, SendError, SendJob, WorkerEvent,
};
use modemgate::rules::gate::CollectionsGate;
use modemgate::rules::optouts::{OptOutSource, OptOuts, Origin};
use modemgate::rules::{CapRule, CapsConfig, QuietHoursConfig};
use modemgate::store::*;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn start_time() -> Timestamp {
    "2026-03-02T15:00:00Z".parse().unwrap()
}

fn fast() -> Quota {
    Quota::per_second(NonZeroU32::new(1000).unwrap()).allow_burst(NonZeroU32::new(1000).unwrap())
}

/// A modem that does exactly what the test tells it.
struct Fake {
    id: String,
    jobs: mpsc::Receiver<SendJob>,
    ready: watch::Sender<bool>,
    /// What its worker reports (the SIM in it).
    health: watch::Sender<ModemHealth>,
    /// Jobs taken and still "being sent": dropping one would tell the dispatcher the worker lost it.
    sending: Vec<SendJob>,
    /// Its end of the job channel the dispatcher holds: a successor after a reload gets the same one.
    sender: mpsc::Sender<SendJob>,
}

impl Fake {
    /// The next job already handed over, if any.
    fn job(&mut self) -> Option<SendJob> {
        self.jobs.try_recv().ok()
    }

    #[track_caller]
    fn take(&mut self) -> SendJob {
        match self.job() {
            Some(job) => job,
            None => panic!("modem {} has no job", self.id),
        }
    }

    /// Takes the next job and keeps it in progress; returns its message.
    #[track_caller]
    fn take_id(&mut self) -> Uuid {
        let job = self.take();
        let id = job.message_id;
        self.sending.push(job);
        id
    }

    fn waiting(&self) -> usize {
        self.jobs.len()
    }
}

struct Spec {
    id: &'static str,
    quota: Quota,
    cap: Option<u32>,
}

fn spec(id: &'static str) -> Spec {
    Spec {
        id,
        quota: fast(),
        cap: None,
    }
}

struct Running {
    handle: DispatchHandle,
    fakes: Vec<Fake>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Modems that take anything at once, default settings, no gate.
async fn plain(rig: &Rig, ids: &[&'static str]) -> Running {
    let specs: Vec<Spec> = ids.iter().map(|&id| spec(id)).collect();
    run(&rig.store, &specs, Settings::default(), Arc::new(AllowAll)).await
}

async fn run(store: &Store, specs: &[Spec], settings: Settings, gate: Arc<dyn Gate>) -> Running {
    let mut slots = Vec::new();
    let mut fakes = Vec::new();
    for spec in specs {
        let (jobs_tx, jobs) = mpsc::channel(8);
        let ready = watch::Sender::new(true);
        let health = watch::Sender::new(ModemHealth::new(ModemState::Ready));
        fakes.push(Fake {
            id: spec.id.into(),
            jobs,
            ready,
            health,
            sending: Vec::new(),
            sender: jobs_tx,
        });
        slots.push(fakes[fakes.len() - 1].slot(spec));
    }
    launch(store, slots, fakes, settings, gate, None).await
}

impl Fake {
    /// A new job channel, as a reload that re-opens the modem gives its new worker.
    fn reopen(&mut self) {
        (self.sender, self.jobs) = mpsc::channel(8);
    }

    fn slot(&self, spec: &Spec) -> ModemSlot {
        ModemSlot {
            id: spec.id.into(),
            jobs: self.sender.clone(),
            ready: self.ready.subscribe(),
            health: self.health.subscribe(),
            quota: spec.quota,
            daily_cap: spec.cap.and_then(NonZeroU32::new),
        }
    }
}

async fn launch(
    store: &Store,
    slots: Vec<ModemSlot>,
    fakes: Vec<Fake>,
    settings: Settings,
    gate: Arc<dyn Gate>,
    previous: Option<dispatch::Inheritance>,
) -> Running {
    let stop = CancellationToken::new();
    let (handle, task) =
        dispatch::start(store.clone(), slots, settings, gate, stop.clone(), previous)
            .await
            .unwrap();
    handle.flush().await;
    Running {
        handle,
        fakes,
        stop,
        task,
    }
}

impl Running {
    /// A configuration reload: this dispatcher hands over to a new one over the modems of `specs` (those
    /// already here keep their fakes and channels, by id), rebinding the handle as the daemon does.
    async fn reload(self, store: &Store, specs: &[Spec]) -> Running {
        let previous = self.handle.hand_over().await;
        assert!(previous.is_some(), "the dispatcher did not hand over");
        self.task.await.unwrap();
        let mut fakes: Vec<Fake> = Vec::new();
        let mut old = self.fakes;
        for spec in specs {
            let index = old.iter().position(|f| f.id == spec.id).unwrap();
            fakes.push(old.swap_remove(index));
        }
        let slots = specs.iter().zip(&fakes).map(|(s, f)| f.slot(s)).collect();
        let next = launch(
            store,
            slots,
            fakes,
            Settings::default(),
            Arc::new(AllowAll),
            previous,
        )
        .await;
        self.handle.rebind(&next.handle);
        // The modems the reload removed stay with the test (their jobs in flight may still land).
        let mut next = next;
        next.fakes.extend(old);
        next
    }

    /// Stops the dispatcher; jobs the fakes still hold are dropped, as a dying worker would.
    async fn stop(self) {
        drop(self.fakes);
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the dispatcher did not stop")
            .unwrap();
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    clock: ManualClock,
    store: Store,
}

fn rig() -> Rig {
    rig_opened_with(store_options)
}

fn rig_opened_with(options: impl FnOnce(&ManualClock) -> OpenOptions) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start_time());
    let store = Store::open(&path, options(&clock)).unwrap();
    Rig {
        _dir: dir,
        path,
        clock,
        store,
    }
}

fn store_options(clock: &ManualClock) -> OpenOptions {
    OpenOptions {
        clock: Arc::new(clock.clone()),
        cap_zone: jiff::tz::TimeZone::UTC,
        ..OpenOptions::default()
    }
}

fn new_message(to: &str, parts: usize) -> NewMessage {
    NewMessage {
        api_key: "cms".into(),
        idempotency_key: None,
        to: to.into(),
        text: "hello".into(),
        encoding: TextEncoding::Gsm7,
        parts: (1..=parts)
            .map(|i| NewPart {
                tpdu_length: 20,
                pdu_hex: format!("00{i:02X}"),
            })
            .collect(),
        priority: 0,
        send_at: None,
        expires_at: None,
        reference: None,
        metadata: None,
        tz: None,
        region: None,
        category: Category::Standard,
    }
}

/// Accepts a message and tells the dispatcher, as the API does.
async fn submit(store: &Store, handle: &DispatchHandle, message: NewMessage) -> Uuid {
    let accepted = store.accept(message.clone()).await.unwrap();
    handle.enqueue(QueueEntry::for_accepted(&message, &accepted));
    accepted.id
}

/// Plays the worker's part through the event glue: every part submitted and sent, then the outcome; or
/// nothing sent and `Withdrawn` when the store withdraws the message at its first part.
async fn complete(store: &Store, modem: &str, job: SendJob, tp_mr: u8) {
    for part in &job.parts {
        let (ack, acked) = oneshot::channel();
        dispatch::events::apply(
            store,
            WorkerEvent::Submitting {
                modem: modem.into(),
                message_id: job.message_id,
                part: part.part,
                send_by: job.send_by,
                ack,
            },
        )
        .await
        .unwrap();
        if let Clearance::Withdraw(reason) = acked.await.unwrap() {
            job.done.send(JobOutcome::Withdrawn { reason }).unwrap();
            return;
        }
        dispatch::events::apply(
            store,
            WorkerEvent::PartSent {
                modem: modem.into(),
                message_id: job.message_id,
                part: part.part,
                reference: tp_mr,
            },
        )
        .await
        .unwrap();
    }
    job.done.send(JobOutcome::Sent).unwrap();
}

/// The worker sends the first of a two-part job and records the second as submitting; returns the job's
/// outcome channel and the second part's number, for the test to say how the job ends.
async fn first_of_two_sent(
    store: &Store,
    modem: &str,
    mut job: SendJob,
) -> (oneshot::Sender<JobOutcome>, u16) {
    let done = job.done;
    let second = job.parts.pop().unwrap();
    let (first_only, _outcome_of_part_one) = oneshot::channel();
    let id = job.message_id;
    complete(
        store,
        modem,
        SendJob {
            done: first_only,
            ..job
        },
        9,
    )
    .await;
    store
        .part_submitting(id, second.part, modem, None)
        .await
        .unwrap();
    (done, second.part)
}

/// The worker submits the first part and the network refuses it.
async fn fail(store: &Store, modem: &str, job: SendJob, error: SendError) {
    let part = job.parts[0].part;
    store
        .part_submitting(job.message_id, part, modem, None)
        .await
        .unwrap();
    job.done.send(JobOutcome::Failed { part, error }).unwrap();
}

async fn detail(store: &Store, id: Uuid) -> MessageDetail {
    store.get(id).await.unwrap().unwrap()
}

async fn state(store: &Store, id: Uuid) -> MessageState {
    detail(store, id).await.message.state
}

#[tokio::test]
async fn a_modem_rate_limit_spaces_its_sends() {
    let rig = rig();
    let six_per_minute = Quota::with_period(Duration::from_secs(10)).unwrap();
    let mut d = run(
        &rig.store,
        &[Spec {
            id: "m1",
            quota: six_per_minute,
            cap: None,
        }],
        Settings::default(),
        Arc::new(AllowAll),
    )
    .await;
    let ids = [
        submit(&rig.store, &d.handle, new_message("+15550000001", 1)).await,
        submit(&rig.store, &d.handle, new_message("+15550000002", 1)).await,
        submit(&rig.store, &d.handle, new_message("+15550000003", 1)).await,
    ];
    d.handle.flush().await;
    let first = d.fakes[0].take();
    assert_eq!(first.message_id, ids[0]);
    assert!(
        d.fakes[0].job().is_none(),
        "the second send needs a new permit"
    );
    complete(&rig.store, "m1", first, 1).await;

    rig.clock.advance(Duration::from_secs(9));
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none(), "9 s is too early at 6/min");
    rig.clock.advance(Duration::from_secs(1));
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), ids[1]);
    rig.clock.advance(Duration::from_secs(10));
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), ids[2]);
    d.stop().await;
}

#[tokio::test]
async fn a_global_pace_limits_all_modems_together() {
    let rig = rig();
    let settings = Settings {
        global: Some(Quota::with_period(Duration::from_secs(5)).unwrap()),
        ..Settings::default()
    };
    let d = run(
        &rig.store,
        &[spec("m1"), spec("m2")],
        settings,
        Arc::new(AllowAll),
    )
    .await;
    for i in 0..3 {
        submit(
            &rig.store,
            &d.handle,
            new_message(&format!("+1555000010{i}"), 1),
        )
        .await;
    }
    d.handle.flush().await;
    let handed = |d: &Running| d.fakes.iter().map(Fake::waiting).sum::<usize>();
    assert_eq!(handed(&d), 1);
    rig.clock.advance(Duration::from_secs(5));
    d.handle.flush().await;
    assert_eq!(handed(&d), 2);
    d.stop().await;
}

#[tokio::test]
async fn the_daily_cap_holds_across_a_restart_and_resets_the_next_day() {
    let rig = rig();
    let capped = || Spec {
        id: "m1",
        quota: fast(),
        cap: Some(2),
    };
    let mut d = run(
        &rig.store,
        &[capped()],
        Settings::default(),
        Arc::new(AllowAll),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            submit(
                &rig.store,
                &d.handle,
                new_message(&format!("+1555000020{i}"), 1),
            )
            .await,
        );
    }
    d.handle.flush().await;
    let (a, b) = (d.fakes[0].take(), d.fakes[0].take());
    assert!(d.fakes[0].job().is_none(), "the cap is 2 a day");
    complete(&rig.store, "m1", a, 1).await;
    complete(&rig.store, "m1", b, 2).await;
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none());
    d.stop().await;

    // A restart (new store handle and dispatcher) still knows 2 parts went out today.
    drop(rig.store);
    let store = Store::open(&rig.path, store_options(&rig.clock)).unwrap();
    let mut d = run(&store, &[capped()], Settings::default(), Arc::new(AllowAll)).await;
    assert!(d.fakes[0].job().is_none(), "the cap survived the restart");
    assert_eq!(state(&store, ids[2]).await, MessageState::Queued);

    rig.clock.set("2026-03-03T00:00:00Z".parse().unwrap());
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), ids[2]);
    d.stop().await;
}

#[tokio::test]
async fn a_multipart_message_never_overshoots_the_daily_cap_and_smaller_ones_use_the_rest() {
    let rig = rig();
    let spec = Spec {
        id: "m1",
        quota: fast(),
        cap: Some(3),
    };
    let mut d = run(&rig.store, &[spec], Settings::default(), Arc::new(AllowAll)).await;
    let first = submit(&rig.store, &d.handle, new_message("+15550000301", 2)).await;
    let second = submit(&rig.store, &d.handle, new_message("+15550000302", 2)).await;
    d.handle.flush().await;
    let a = d.fakes[0].take();
    assert_eq!(a.message_id, first);
    // 2 of 3 used: the next two-part message would make 4.
    assert!(d.fakes[0].job().is_none(), "the cap is 3 parts a day");
    // A single-part message that comes later fits in the last part, ahead of the older one.
    let single = submit(&rig.store, &d.handle, new_message("+15550000303", 1)).await;
    d.handle.flush().await;
    let b = d.fakes[0].take();
    assert_eq!(b.message_id, single, "the last part of the cap is used");
    complete(&rig.store, "m1", a, 1).await;
    complete(&rig.store, "m1", b, 2).await;
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none(), "the cap is 3 parts a day");
    assert_eq!(state(&rig.store, second).await, MessageState::Queued);

    rig.clock.set("2026-03-03T00:00:00Z".parse().unwrap());
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), second);
    d.stop().await;
}

#[tokio::test]
async fn a_sim_swapped_while_offline_brings_its_own_daily_count() {
    let rig = rig();
    let sim = |iccid: &str| ModemIdentity {
        iccid: Some(iccid.into()),
        ..ModemIdentity::default()
    };
    let capped = |id| Spec {
        id,
        quota: fast(),
        cap: Some(2),
    };
    rig.store.upsert_modem("m1", sim("89A")).await.unwrap();
    rig.store.upsert_modem("m2", sim("89B")).await.unwrap();
    let mut d = run(
        &rig.store,
        &[capped("m1"), capped("m2")],
        Settings::default(),
        Arc::new(AllowAll),
    )
    .await;
    let report = |fake: &Fake, iccid: &str| {
        fake.health
            .send_modify(|health| health.identity.iccid = Some(iccid.into()))
    };
    report(&d.fakes[0], "89A");
    d.fakes[1].ready.send(false).unwrap();
    // SIM A sends its two parts for the day in m1.
    for to in ["+15550000401", "+15550000402"] {
        submit(&rig.store, &d.handle, new_message(to, 1)).await;
    }
    d.handle.flush().await;
    for tp_mr in [1, 2] {
        let job = d.fakes[0].take();
        complete(&rig.store, "m1", job, tp_mr).await;
    }
    d.handle.flush().await;

    // The SIMs trade ports while both modems are down. Each comes back reporting its new SIM before the
    // event hub has stored it (the store still has A in m1, B in m2): the worker's word decides.
    d.fakes[0].ready.send(false).unwrap();
    report(&d.fakes[0], "89B");
    report(&d.fakes[1], "89A");
    d.fakes[0].ready.send(true).unwrap();
    d.fakes[1].ready.send(true).unwrap();
    let mut ids = Vec::new();
    for to in ["+15550000403", "+15550000404"] {
        ids.push(submit(&rig.store, &d.handle, new_message(to, 1)).await);
    }
    d.handle.flush().await;
    assert!(
        d.fakes[1].job().is_none(),
        "SIM A, now in m2, has used its cap today"
    );
    assert_eq!(
        (d.fakes[0].take_id(), d.fakes[0].take_id()),
        (ids[0], ids[1]),
        "SIM B, now in m1, has sent nothing today"
    );
    d.stop().await;
}

#[tokio::test]
async fn scheduled_messages_wait_for_send_at_and_priority_goes_first() {
    let rig = rig();
    let mut d = plain(&rig, &["m1"]).await;
    d.fakes[0].ready.send(false).unwrap();
    let mut later = new_message("+15550000301", 1);
    later.send_at = Some(start_time() + jiff::SignedDuration::from_hours(1));
    let later = submit(&rig.store, &d.handle, later).await;
    assert_eq!(state(&rig.store, later).await, MessageState::Scheduled);
    let low = submit(&rig.store, &d.handle, new_message("+15550000302", 1)).await;
    let mut urgent = new_message("+15550000303", 1);
    urgent.priority = 10;
    let urgent = submit(&rig.store, &d.handle, urgent).await;
    // Both in the dispatcher's window before the modem is back: else it may hand `low` out alone, its
    // loop having yielded (on a store read) after taking `low` in and before `urgent` was announced.
    d.handle.flush().await;

    d.fakes[0].ready.send(true).unwrap();
    d.handle.flush().await;
    let (first, second) = (d.fakes[0].take(), d.fakes[0].take());
    assert_eq!((first.message_id, second.message_id), (urgent, low));
    complete(&rig.store, "m1", first, 1).await;
    complete(&rig.store, "m1", second, 2).await;
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none());

    rig.clock.advance(Duration::from_secs(3599));
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none(), "not before send_at");
    rig.clock.advance(Duration::from_secs(1));
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), later);
    d.stop().await;
}

#[tokio::test]
async fn messages_expire_instead_of_going_out_late() {
    let rig = rig();
    let mut d = plain(&rig, &["m1"]).await;
    d.fakes[0].ready.send(false).unwrap();
    let mut waiting = new_message("+15550000401", 1);
    waiting.expires_at = Some(start_time() + jiff::SignedDuration::from_mins(10));
    let waiting = submit(&rig.store, &d.handle, waiting).await;
    // Scheduled after its own expiry: it expires without ever becoming due.
    let mut too_late = new_message("+15550000402", 1);
    too_late.send_at = Some(start_time() + jiff::SignedDuration::from_hours(2));
    too_late.expires_at = Some(start_time() + jiff::SignedDuration::from_hours(1));
    let too_late = submit(&rig.store, &d.handle, too_late).await;

    rig.clock.advance(Duration::from_secs(600));
    d.handle.flush().await;
    assert_eq!(state(&rig.store, waiting).await, MessageState::Expired);
    assert_eq!(state(&rig.store, too_late).await, MessageState::Scheduled);
    rig.clock.advance(Duration::from_secs(3000));
    d.handle.flush().await;
    assert_eq!(state(&rig.store, too_late).await, MessageState::Expired);
    d.fakes[0].ready.send(true).unwrap();
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none());
    d.stop().await;
}

#[tokio::test]
async fn cancel_takes_a_message_out_until_its_first_part_is_written() {
    let rig = rig();
    let mut d = plain(&rig, &["m1"]).await;
    d.fakes[0].ready.send(false).unwrap();
    let pending = submit(&rig.store, &d.handle, new_message("+15550000501", 1)).await;
    let handed = submit(&rig.store, &d.handle, new_message("+15550000502", 1)).await;
    let sending = submit(&rig.store, &d.handle, new_message("+15550000503", 1)).await;
    d.handle.cancel(pending, "api").await.unwrap();
    d.fakes[0].ready.send(true).unwrap();
    d.handle.flush().await;
    assert_eq!(state(&rig.store, pending).await, MessageState::Cancelled);
    // Handed to the modem, which has not reached it yet (it is busy with the job before): still cancelled,
    // and the modem is told to write nothing.
    let job = d.fakes[0].take();
    assert_eq!(job.message_id, handed);
    d.handle.cancel(handed, "api").await.unwrap();
    complete(&rig.store, "m1", job, 8).await;
    d.handle.flush().await;
    let cancelled = detail(&rig.store, handed).await;
    assert_eq!(cancelled.message.state, MessageState::Cancelled);
    assert!(cancelled.events.iter().all(|e| e.kind != "submitting"));
    assert_eq!(cancelled.parts[0].state, PartState::Pending);
    // Once a part is being written, it is too late.
    let job = d.fakes[0].take();
    assert_eq!(job.message_id, sending);
    assert!(d.fakes[0].job().is_none());
    rig.store
        .part_submitting(sending, 1, "m1", None)
        .await
        .unwrap();
    assert!(matches!(
        d.handle.cancel(sending, "api").await,
        Err(StoreError::InvalidTransition {
            state: MessageState::Sending,
            ..
        })
    ));
    rig.store.part_sent(sending, 1, "m1", 9).await.unwrap();
    job.done.send(JobOutcome::Sent).unwrap();
    d.handle.flush().await;
    assert_eq!(state(&rig.store, sending).await, MessageState::Sent);
    d.stop().await;
}

/// One modem behind the daemon's own collections gate (default quiet hours, no caps), with its opt-outs.
async fn behind_the_collections_gate(rig: &Rig, caps: CapsConfig) -> (Arc<OptOuts>, Running) {
    let optouts = Arc::new(OptOuts::load(&rig.store).await.unwrap());
    let gate = CollectionsGate::load(
        &rig.store,
        optouts.clone(),
        QuietHoursConfig::default(),
        caps,
    )
    .await
    .unwrap();
    let running = run(
        &rig.store,
        &[spec("m1")],
        Settings::default(),
        Arc::new(gate),
    )
    .await;
    (optouts, running)
}

/// A modem takes its next job only when its current send ends, seconds after the dispatcher judged it;
/// what changed meanwhile is looked at again before the first PDU is written.
#[tokio::test]
async fn a_message_handed_out_is_withdrawn_unsent_if_the_recipient_opts_out_or_it_expires_meanwhile()
 {
    let rig = rig();
    let (optouts, mut d) = behind_the_collections_gate(&rig, CapsConfig::default()).await;
    // New York, 10:00 local: inside the 08:00-21:00 window.
    let opting_out = submit(&rig.store, &d.handle, new_message("+12125550601", 1)).await;
    let mut expiring = new_message("+12125550602", 1);
    expiring.expires_at = Some(start_time() + jiff::SignedDuration::from_mins(1));
    let expiring = submit(&rig.store, &d.handle, expiring).await;
    d.handle.flush().await;
    let first = d.fakes[0].take();
    let second = d.fakes[0].take();
    assert_eq!(
        (first.message_id, second.message_id),
        (opting_out, expiring)
    );

    let origin = Origin {
        actor: "rules",
        ..Origin::default()
    };
    optouts
        .add("+12125550601", OptOutSource::Keyword, origin)
        .await
        .unwrap();
    complete(&rig.store, "m1", first, 1).await;
    rig.clock.advance(Duration::from_secs(61));
    complete(&rig.store, "m1", second, 2).await;
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none());

    let failed = detail(&rig.store, opting_out).await;
    assert_eq!(failed.message.state, MessageState::Failed);
    assert_eq!(
        failed.message.error.as_deref(),
        Some("opted_out: the recipient opted out")
    );
    let blocked = failed.events.last().unwrap();
    assert_eq!(
        (blocked.kind.as_str(), blocked.rule.as_deref()),
        ("blocked", Some("optout"))
    );
    let expired = detail(&rig.store, expiring).await;
    assert_eq!(expired.message.state, MessageState::Expired);
    for withdrawn in [&failed, &expired] {
        assert!(withdrawn.events.iter().all(|e| e.kind != "submitting"));
        assert_eq!(withdrawn.parts[0].state, PartState::Pending);
    }
    d.stop().await;
}

/// A message cancelled while it waited at a busy modem was never sent: it does not use up its
/// recipient's contact cap.
#[tokio::test]
async fn a_message_withdrawn_unsent_is_no_contact() {
    let rig = rig();
    let once_a_day = CapsConfig {
        rules: vec![CapRule::new(vec![], 1, jiff::SignedDuration::from_hours(24)).unwrap()],
    };
    let (_optouts, mut d) = behind_the_collections_gate(&rig, once_a_day).await;
    let debtor = "+12125550611";
    let cancelled = submit(&rig.store, &d.handle, new_message(debtor, 1)).await;
    d.handle.flush().await;
    let job = d.fakes[0].take();
    d.handle.cancel(cancelled, "api").await.unwrap();
    complete(&rig.store, "m1", job, 1).await;
    d.handle.flush().await;
    assert_eq!(state(&rig.store, cancelled).await, MessageState::Cancelled);

    let next = submit(&rig.store, &d.handle, new_message(debtor, 1)).await;
    d.handle.flush().await;
    assert_eq!(
        d.fakes[0].take_id(),
        next,
        "held by a cap the cancelled message used"
    );
    // That one was handed out: the cap holds the one after it.
    let third = submit(&rig.store, &d.handle, new_message(debtor, 1)).await;
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none());
    let events = detail(&rig.store, third).await.events;
    assert_eq!(events.last().unwrap().rule.as_deref(), Some("contact_cap"));
    d.stop().await;
}

/// The dispatcher hands a message over with the end of the recipient's sending window; a modem that
/// reaches it later writes nothing, and the message waits for the window to open again.
#[tokio::test]
async fn a_message_reaching_its_modem_after_the_window_closed_waits_for_the_next() {
    let rig = rig();
    let (_optouts, mut d) = behind_the_collections_gate(&rig, CapsConfig::default()).await;
    // 20:59:30 in New York (EST): half a minute of the 08:00-21:00 window left.
    let evening: Timestamp = "2026-03-03T01:59:30Z".parse().unwrap();
    rig.clock.set(evening);
    let id = submit(&rig.store, &d.handle, new_message("+12125550603", 1)).await;
    d.handle.flush().await;
    let job = d.fakes[0].take();
    assert_eq!(job.send_by, Some("2026-03-03T02:00:00Z".parse().unwrap()));
    rig.clock.advance(Duration::from_secs(45));
    complete(&rig.store, "m1", job, 3).await;
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none());
    let held = detail(&rig.store, id).await;
    assert_eq!(held.message.state, MessageState::Scheduled);
    let kinds: Vec<&str> = held.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["accepted", "claimed", "requeued", "held"]);
    assert_eq!(
        held.events[2].detail.as_deref(),
        Some("withdrawn before its PDU was written: the recipient's sending window closed")
    );
    // 08:00 the next morning in New York.
    rig.clock.set("2026-03-03T13:00:00Z".parse().unwrap());
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), id);
    d.stop().await;
}

/// Modems m1 and m2 with `settings`, and a message to `to` whose first attempt, on m1, failed with a
/// transient `+CMS ERROR: 42`.
async fn failed_once_on_m1(rig: &Rig, settings: Settings, to: &str) -> (Running, Uuid) {
    let mut d = run(
        &rig.store,
        &[spec("m1"), spec("m2")],
        settings,
        Arc::new(AllowAll),
    )
    .await;
    let id = submit(&rig.store, &d.handle, new_message(to, 1)).await;
    d.handle.flush().await;
    let job = d.fakes[0].take();
    fail(&rig.store, "m1", job, SendError::Cms(42)).await;
    d.handle.flush().await;
    (d, id)
}

#[tokio::test]
async fn transient_errors_retry_with_back_off_on_another_modem_then_give_up() {
    let rig = rig();
    let settings = Settings {
        max_attempts: NonZeroU32::new(3).unwrap(),
        retry_backoff: Duration::from_secs(30),
        retry_backoff_max: Duration::from_secs(45),
        ..Settings::default()
    };
    let (mut d, id) = failed_once_on_m1(&rig, settings, "+15550000601").await;
    assert_eq!(state(&rig.store, id).await, MessageState::Queued);
    assert!(
        d.fakes.iter_mut().all(|f| f.job().is_none()),
        "back-off first"
    );

    rig.clock.advance(Duration::from_secs(30));
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none(), "not on the modem that failed");
    let job = d.fakes[1].take();
    let events = detail(&rig.store, id).await.events;
    let claimed = events.iter().rev().find(|e| e.kind == "claimed").unwrap();
    assert!(
        claimed
            .detail
            .as_deref()
            .unwrap()
            .contains("retry away from modem m1"),
        "{claimed:?}"
    );
    fail(&rig.store, "m2", job, SendError::Cms(42)).await;
    d.handle.flush().await;

    // Second back-off is doubled but capped at 45 s; the third attempt is the last.
    rig.clock.advance(Duration::from_secs(44));
    d.handle.flush().await;
    assert!(d.fakes.iter_mut().all(|f| f.job().is_none()));
    rig.clock.advance(Duration::from_secs(1));
    d.handle.flush().await;
    let job = d.fakes[0].take();
    fail(&rig.store, "m1", job, SendError::Cms(42)).await;
    d.handle.flush().await;
    let message = detail(&rig.store, id).await.message;
    assert_eq!(message.state, MessageState::Failed);
    assert_eq!(message.error_code, Some(42));
    assert_eq!(message.attempts, 3);
    d.stop().await;
}

#[tokio::test]
async fn a_message_sent_on_a_retry_keeps_no_error() {
    let rig = rig();
    let settings = Settings {
        retry_backoff: Duration::from_secs(30),
        ..Settings::default()
    };
    let (mut d, id) = failed_once_on_m1(&rig, settings, "+15550000651").await;
    let waiting = detail(&rig.store, id).await.message;
    assert_eq!(
        (waiting.state, waiting.error_code),
        (MessageState::Queued, Some(42)),
        "while it waits, the error says why"
    );
    rig.clock.advance(Duration::from_secs(30));
    d.handle.flush().await;
    let job = d.fakes[1].take();
    complete(&rig.store, "m2", job, 3).await;
    d.handle.flush().await;
    let sent = detail(&rig.store, id).await;
    assert_eq!(
        (
            sent.message.state,
            sent.message.error,
            sent.message.error_code
        ),
        (MessageState::Sent, None, None)
    );
    let retry = sent.events.iter().find(|e| e.kind == "retry").unwrap();
    assert!(
        retry.detail.as_deref().unwrap().contains("42"),
        "the failure stays in the history: {retry:?}"
    );
    d.stop().await;
}

#[tokio::test]
async fn a_permanent_error_fails_the_message_with_its_code() {
    let rig = rig();
    let mut d = plain(&rig, &["m1", "m2"]).await;
    let id = submit(&rig.store, &d.handle, new_message("+15550000701", 1)).await;
    let other = submit(&rig.store, &d.handle, new_message("+15550000702", 1)).await;
    d.handle.flush().await;
    let job = d.fakes[0].take();
    assert_eq!(job.message_id, id);
    fail(&rig.store, "m1", job, SendError::Cms(1)).await;
    d.handle.flush().await;
    let message = detail(&rig.store, id).await.message;
    assert_eq!(message.state, MessageState::Failed);
    assert_eq!(message.error_code, Some(1));
    assert_eq!(
        message.error.as_deref(),
        Some("+CMS ERROR: 1 (unassigned (unallocated) number)"),
        "the cause by name, not only its number"
    );
    // The failing number did not hold up the other one.
    let job = d.fakes[1].take();
    assert_eq!(job.message_id, other);
    complete(&rig.store, "m2", job, 3).await;
    d.handle.flush().await;
    assert_eq!(state(&rig.store, other).await, MessageState::Sent);
    d.stop().await;
}

#[tokio::test]
async fn a_multipart_message_failing_after_its_first_part_says_the_debtor_has_that_part() {
    let rig = rig();
    let mut d = plain(&rig, &["m1"]).await;
    let id = submit(&rig.store, &d.handle, new_message("+15550000711", 2)).await;
    d.handle.flush().await;
    let (done, second) = first_of_two_sent(&rig.store, "m1", d.fakes[0].take()).await;
    done.send(JobOutcome::Failed {
        part: second,
        error: SendError::Cms(1),
    })
    .unwrap();
    d.handle.flush().await;
    let message = detail(&rig.store, id).await.message;
    assert_eq!(
        (message.state, message.error.as_deref()),
        (
            MessageState::Failed,
            Some(
                "part 2 of 2: +CMS ERROR: 1 (unassigned (unallocated) number); 1 of its parts had been sent"
            )
        )
    );
    d.stop().await;
}

/// A modem lost between two parts of a message (its port failed before the second was written): the
/// rest waits for that modem, so the phone can join the parts, rather than come from another number.
#[tokio::test]
async fn the_rest_of_a_message_cut_off_between_its_parts_follows_on_its_modem() {
    let rig = rig();
    let mut d = plain(&rig, &["m1", "m2"]).await;
    let id = submit(&rig.store, &d.handle, new_message("+15550000712", 2)).await;
    d.handle.flush().await;
    let (done, _) = first_of_two_sent(&rig.store, "m1", d.fakes[0].take()).await;
    d.fakes[0].ready.send(false).unwrap();
    done.send(JobOutcome::NotAttempted).unwrap();
    d.handle.flush().await;
    assert_eq!(state(&rig.store, id).await, MessageState::Queued);
    assert!(d.fakes[1].job().is_none(), "part 2 from another number");

    d.fakes[0].ready.send(true).unwrap();
    d.handle.flush().await;
    let rest = d.fakes[0].take();
    let parts: Vec<u16> = rest.parts.iter().map(|p| p.part).collect();
    assert_eq!((rest.message_id, parts), (id, vec![2]));
    complete(&rig.store, "m1", rest, 10).await;
    d.handle.flush().await;
    assert_eq!(state(&rig.store, id).await, MessageState::Sent);
    d.stop().await;
}

/// The modem that sent a message's first part is removed from the config before the rest goes: the rest
/// alone, from another number, would never join the first part on the phone, so the whole message goes
/// again from a modem still configured, counted whole against its cap, and its history says why.
#[tokio::test]
async fn a_message_begun_on_a_modem_since_removed_goes_again_whole_from_another() {
    let rig = rig();
    let mut d = plain(&rig, &["m1", "m2"]).await;
    let id = submit(&rig.store, &d.handle, new_message("+15550000713", 2)).await;
    d.handle.flush().await;
    let (done, _) = first_of_two_sent(&rig.store, "m1", d.fakes[0].take()).await;
    d.fakes[0].ready.send(false).unwrap();
    done.send(JobOutcome::NotAttempted).unwrap();
    d.handle.flush().await;
    assert!(d.fakes[1].job().is_none(), "part 2 from another number");

    // With room for one part today, m2 cannot take the whole message; with room for two it can.
    let capped = |cap| Spec {
        cap: Some(cap),
        ..spec("m2")
    };
    let mut d = d.reload(&rig.store, &[capped(1)]).await;
    assert!(
        d.fakes[0].job().is_none(),
        "the whole message overshoots m2's cap"
    );
    let mut d = d.reload(&rig.store, &[capped(2)]).await;
    let again = d.fakes[0].take();
    let parts: Vec<u16> = again.parts.iter().map(|p| p.part).collect();
    assert_eq!((again.message_id, parts), (id, vec![1, 2]));
    complete(&rig.store, "m2", again, 11).await;
    d.handle.flush().await;

    let detail = detail(&rig.store, id).await;
    assert_eq!(detail.message.state, MessageState::Sent);
    let sent_on: Vec<_> = detail.parts.iter().map(|p| p.modem.as_deref()).collect();
    assert_eq!(sent_on, [Some("m2"), Some("m2")]);
    let restarted = detail
        .events
        .iter()
        .find(|e| e.kind == "restarted")
        .expect("no restarted event");
    assert_eq!(
        restarted.detail.as_deref(),
        Some(
            "part 1 went out on modem m1, which is no longer configured: the whole message goes again \
             from modem m2, since a phone joins parts only from one sender"
        )
    );
    // The first send of part 1 stays in the history.
    let first_sends: Vec<_> = detail
        .events
        .iter()
        .filter(|e| e.kind == "part_sent" || e.kind == "sent")
        .map(|e| (e.actor.as_str(), e.part))
        .collect();
    assert!(
        first_sends.contains(&("modem:m1", Some(1))),
        "{first_sends:?}"
    );
    // Both parts counted against m2's cap: the next message waits for tomorrow.
    let next = submit(&rig.store, &d.handle, new_message("+15550000714", 1)).await;
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none());
    assert_eq!(state(&rig.store, next).await, MessageState::Queued);
    d.stop().await;
}

#[tokio::test]
async fn a_recipient_sticks_to_its_modem_and_falls_back_with_a_reason() {
    let rig = rig();
    let settings = Settings {
        pipeline: NonZeroUsize::new(1).unwrap(),
        ..Settings::default()
    };
    let mut d = run(
        &rig.store,
        &[spec("m1"), spec("m2")],
        settings,
        Arc::new(AllowAll),
    )
    .await;
    let x = "+15550000801";
    submit(&rig.store, &d.handle, new_message(x, 1)).await;
    d.handle.flush().await;
    let first = d.fakes[0].take();
    complete(&rig.store, "m1", first, 1).await;
    d.handle.flush().await;

    // m1 busy with someone else: the next message to x waits for m1 although m2 is free.
    let busy = submit(&rig.store, &d.handle, new_message("+15550000802", 1)).await;
    d.handle.flush().await;
    let busy_job = d.fakes[0].take();
    assert_eq!(busy_job.message_id, busy);
    let to_x = submit(&rig.store, &d.handle, new_message(x, 1)).await;
    d.handle.flush().await;
    assert!(d.fakes[1].job().is_none(), "x sticks to m1");
    complete(&rig.store, "m1", busy_job, 2).await;
    d.handle.flush().await;
    let job = d.fakes[0].take();
    assert_eq!(job.message_id, to_x);
    complete(&rig.store, "m1", job, 3).await;

    // m1 goes offline: x falls back to m2, and the history says why.
    d.fakes[0].ready.send(false).unwrap();
    let fallback = submit(&rig.store, &d.handle, new_message(x, 1)).await;
    d.handle.flush().await;
    assert_eq!(d.fakes[1].take_id(), fallback);
    let events = detail(&rig.store, fallback).await.events;
    let claimed = events.iter().find(|e| e.kind == "claimed").unwrap();
    assert_eq!(
        claimed.detail.as_deref(),
        Some("modem m2: fallback from sticky modem m1: offline")
    );
    d.stop().await;
}

#[tokio::test]
async fn a_modem_over_its_cap_hands_sticky_recipients_to_another() {
    let rig = rig();
    let mut d = run(
        &rig.store,
        &[
            Spec {
                id: "m1",
                quota: fast(),
                cap: Some(1),
            },
            spec("m2"),
        ],
        Settings::default(),
        Arc::new(AllowAll),
    )
    .await;
    let x = "+15550000901";
    submit(&rig.store, &d.handle, new_message(x, 1)).await;
    d.handle.flush().await;
    let job = d.fakes[0].take();
    complete(&rig.store, "m1", job, 1).await;
    let next = submit(&rig.store, &d.handle, new_message(x, 1)).await;
    d.handle.flush().await;
    assert_eq!(d.fakes[1].take_id(), next);
    let events = detail(&rig.store, next).await.events;
    assert!(
        events.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.ends_with("fallback from sticky modem m1: daily cap reached"))),
        "{events:?}"
    );
    d.stop().await;
}

struct QuietFor(&'static str, Timestamp);

impl Gate for QuietFor {
    fn check(&self, message: &QueueEntry, _modem: &str, now: Timestamp) -> Decision {
        if message.to == "+15550001099" {
            Decision::Block {
                code: "opted_out".into(),
                reason: "recipient replied STOP".into(),
                rule: Some("optout".into()),
            }
        } else if message.to == self.0 && now < self.1 {
            Decision::Hold {
                until: self.1,
                reason: "quiet hours".into(),
                rule: Some("reg_f_0800_2100".into()),
            }
        } else {
            Decision::Allow
        }
    }
}

#[tokio::test]
async fn the_gate_holds_and_blocks_at_hand_off() {
    let rig = rig();
    let until = start_time() + jiff::SignedDuration::from_hours(2);
    let mut d = run(
        &rig.store,
        &[spec("m1")],
        Settings::default(),
        Arc::new(QuietFor("+15550001001", until)),
    )
    .await;
    let held = submit(&rig.store, &d.handle, new_message("+15550001001", 1)).await;
    let blocked = submit(&rig.store, &d.handle, new_message("+15550001099", 1)).await;
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none());
    let held_detail = detail(&rig.store, held).await;
    assert_eq!(held_detail.message.state, MessageState::Scheduled);
    let event = held_detail.events.last().unwrap();
    assert_eq!(event.kind, "held");
    assert_eq!(event.rule.as_deref(), Some("reg_f_0800_2100"));
    let blocked_detail = detail(&rig.store, blocked).await;
    assert_eq!(blocked_detail.message.state, MessageState::Failed);
    assert_eq!(
        blocked_detail.events.last().unwrap().rule.as_deref(),
        Some("optout")
    );

    rig.clock.set(until);
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), held);
    d.stop().await;
}

#[tokio::test]
async fn four_modems_stay_busy_with_the_next_job_waiting() {
    let rig = rig();
    let mut d = plain(&rig, &["m1", "m2", "m3", "m4"]).await;
    let total = 40;
    let batch: Vec<NewMessage> = (0..total)
        .map(|i| new_message(&format!("+155500011{i:02}"), 1))
        .collect();
    for (message, accepted) in batch
        .iter()
        .zip(rig.store.accept_batch(batch.clone()).await.unwrap())
    {
        d.handle
            .enqueue(QueueEntry::for_accepted(message, &accepted.unwrap()));
    }
    d.handle.flush().await;
    for fake in &d.fakes {
        assert_eq!(
            fake.waiting(),
            2,
            "{}: one job to send, the next waiting",
            fake.id
        );
    }
    let mut sent = 0;
    let mut gaps = 0;
    while sent < total {
        for index in 0..d.fakes.len() {
            let Some(job) = d.fakes[index].job() else {
                continue;
            };
            // The modem starts this job; the next one must already be waiting for it.
            let remaining = total - sent - 1;
            if remaining >= d.fakes.len() && d.fakes[index].waiting() == 0 {
                gaps += 1;
            }
            if remaining >= d.fakes.len() {
                assert!(job.more_waiting, "more work is queued");
            }
            let id = d.fakes[index].id.clone();
            complete(&rig.store, &id, job, 1).await;
            sent += 1;
        }
        d.handle.flush().await;
    }
    assert_eq!(gaps, 0, "a modem finished with no job waiting");
    let page = rig
        .store
        .list(ListFilter {
            state: Some(MessageState::Sent),
            limit: Some(100),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), total);
    let mut per_modem = std::collections::HashMap::new();
    for message in &page.messages {
        *per_modem.entry(message.modem.clone().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(per_modem.len(), 4);
    assert!(per_modem.values().all(|&n| n == 10), "{per_modem:?}");
    d.stop().await;
}

#[tokio::test]
async fn a_job_the_modem_never_attempted_goes_to_another_modem() {
    let rig = rig();
    let mut d = plain(&rig, &["m1", "m2"]).await;
    let id = submit(&rig.store, &d.handle, new_message("+15550001201", 1)).await;
    d.handle.flush().await;
    let job = d.fakes[0].take();
    d.fakes[0].ready.send(false).unwrap();
    job.done.send(JobOutcome::NotAttempted).unwrap();
    d.handle.flush().await;
    assert_eq!(d.fakes[1].take_id(), id);
    // A job lost after its part was submitting is never resent: it becomes unknown.
    let lost = submit(&rig.store, &d.handle, new_message("+15550001202", 1)).await;
    d.handle.flush().await;
    let job = d.fakes[1].take();
    assert_eq!(job.message_id, lost);
    rig.store
        .part_submitting(lost, 1, "m2", None)
        .await
        .unwrap();
    drop(job);
    d.handle.flush().await;
    let lost = detail(&rig.store, lost).await;
    assert_eq!(lost.message.state, MessageState::Unknown);
    assert_eq!(
        lost.message.error.as_deref(),
        Some("part 1: the modem worker dropped the job, while part 1 was being submitted"),
        "an unknown message says why"
    );
    // A part recorded as submitting whose PDU the worker says it never wrote (the port failed before it)
    // is pending again: not unknown, and sent whole on the other modem.
    let unwritten = submit(&rig.store, &d.handle, new_message("+15550001203", 1)).await;
    d.handle.flush().await;
    let job = d.fakes[1].take();
    assert_eq!(job.message_id, unwritten);
    rig.store
        .part_submitting(unwritten, 1, "m2", None)
        .await
        .unwrap();
    d.fakes[1].ready.send(false).unwrap();
    d.fakes[0].ready.send(true).unwrap();
    job.done.send(JobOutcome::NotAttempted).unwrap();
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), unwritten);
    let back = detail(&rig.store, unwritten).await;
    assert_eq!(
        (back.message.state, back.parts[0].state, back.message.error),
        (MessageState::Sending, PartState::Pending, None)
    );
    let requeued = back.events.iter().find(|e| e.kind == "requeued").unwrap();
    assert_eq!(
        requeued.detail.as_deref(),
        Some(
            "not attempted: the modem could not take it, or the store could not record it as submitting; no PDU was written for part 1"
        )
    );
    d.stop().await;
}

/// A worker's inbound event, as it would build it from a PDU the modem printed.
fn inbound_event(pdu: &[u8]) -> (WorkerEvent, oneshot::Receiver<()>) {
    let pdu_hex = hex::encode_upper(pdu);
    let (ack, acked) = oneshot::channel();
    let event = WorkerEvent::Inbound {
        modem: "m1".into(),
        decoded: modemgate::pdu::decode_hex(&pdu_hex),
        pdu_hex,
        ack,
    };
    (event, acked)
}

#[tokio::test]
async fn worker_events_store_inbound_messages_and_reports_before_acking() {
    use dispatch::events::{Applied, apply};
    use modemgate::pdu::{self, EncodingChoice};
    let rig = rig();
    let sent_at = start_time().to_zoned(jiff::tz::TimeZone::UTC);
    let long = "Can I pay half now and the rest on the 15th? ".repeat(5);
    let parts = pdu::encode_deliver(
        None,
        "+15557654321",
        &long,
        EncodingChoice::Auto,
        &sent_at,
        42,
    )
    .unwrap();
    assert!(parts.len() > 1);

    // Last part first, then a re-read of it, then the rest: one message, acked at every step.
    let mut order: Vec<&Vec<u8>> = parts.iter().rev().collect();
    order.insert(1, &parts[parts.len() - 1]);
    let mut complete = None;
    for pdu in order {
        let (event, acked) = inbound_event(pdu);
        let applied = apply(&rig.store, event).await.unwrap();
        acked.await.expect("acked only after storing");
        if let Applied::Inbound(InboundOutcome::Complete(message)) = applied {
            assert!(complete.is_none(), "completed twice");
            complete = Some(message);
        }
    }
    let message = complete.expect("all parts in");
    assert_eq!(message.text, long);
    assert_eq!(message.peer, "+15557654321");

    // Garbage is kept, raw, as a message with the decoding error.
    let (event, acked) = inbound_event(&[0x00, 0xFF, 0x01]);
    let Applied::Inbound(InboundOutcome::Complete(garbage)) =
        apply(&rig.store, event).await.unwrap()
    else {
        panic!("undecodable PDUs are stored");
    };
    acked.await.unwrap();
    assert_eq!(garbage.encoding, TextEncoding::Undecoded);
    assert!(garbage.error.is_some());

    // A delivery report for a part sent with TP-MR 77 closes the loop.
    let id = rig
        .store
        .accept(new_message("+15550001301", 1))
        .await
        .unwrap()
        .id;
    rig.store.claim(id, "m1", None).await.unwrap();
    rig.store.part_submitting(id, 1, "m1", None).await.unwrap();
    rig.store.part_sent(id, 1, "m1", 77).await.unwrap();
    let report =
        pdu::encode_status_report(None, 77, "+15550001301", &sent_at, &sent_at, 0).unwrap();
    let pdu::Tpdu::StatusReport(report) = pdu::decode(&report).unwrap().tpdu else {
        panic!("a status report");
    };
    let applied = apply(
        &rig.store,
        WorkerEvent::StatusReport {
            modem: "m1".into(),
            report,
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        applied,
        Applied::Report(ReportOutcome::Matched {
            state: MessageState::Delivered,
            ..
        })
    ));

    // A Submitting for a message that is not sending is refused and never acked: the PDU is not written.
    let (ack, acked) = oneshot::channel();
    let refused = apply(
        &rig.store,
        WorkerEvent::Submitting {
            modem: "m1".into(),
            message_id: id,
            part: 1,
            send_by: None,
            ack,
        },
    )
    .await;
    assert!(refused.is_err());
    assert!(acked.await.is_err());
}

// ---- a queue larger than the dispatcher's window ----

/// One modem, one job at a time, a window of `window` due messages: the order of hand-offs is exactly
/// the dispatcher's choice.
fn windowed(window: usize) -> Settings {
    Settings {
        window: NonZeroUsize::new(window).unwrap(),
        pipeline: NonZeroUsize::new(1).unwrap(),
        ..Settings::default()
    }
}

/// The dispatcher's order: priority first, then age (ids are time-ordered).
fn in_key_order(store_order: &mut [(i32, Uuid)]) -> Vec<Uuid> {
    store_order.sort_by_key(|&(priority, id)| (std::cmp::Reverse(priority), id));
    store_order.iter().map(|&(_, id)| id).collect()
}

/// Completes whatever the modems were handed until nothing more comes (at most `limit` jobs); returns
/// the messages in hand-off order with the modem that got each.
async fn drain(d: &mut Running, store: &Store, limit: usize) -> Vec<(Uuid, usize)> {
    let mut sent = Vec::new();
    while sent.len() < limit {
        d.handle.flush().await;
        let mut any = false;
        for index in 0..d.fakes.len() {
            while let Some(job) = d.fakes[index].job() {
                sent.push((job.message_id, index));
                let modem = d.fakes[index].id.clone();
                complete(store, &modem, job, (sent.len() % 256) as u8).await;
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    sent
}

async fn claims(store: &Store, id: Uuid) -> usize {
    let events = detail(store, id).await.events;
    events.iter().filter(|e| e.kind == "claimed").count()
}

#[tokio::test]
async fn a_backlog_far_beyond_the_window_goes_out_once_each_in_order() {
    let rig = rig();
    let hour = jiff::SignedDuration::from_hours(1);
    // 150 due now and 50 scheduled an hour on, priorities mixed, all on disk before the dispatcher
    // starts (as after a restart): it holds 8 due and 8 waiting at a time.
    let mut due = Vec::new();
    let mut scheduled = Vec::new();
    for i in 0..200 {
        let mut message = new_message(&format!("+1555100{i:04}"), 1);
        message.priority = [0, 3, 1, 0, 2][i % 5];
        if i % 4 == 3 {
            message.send_at = Some(start_time() + hour + jiff::SignedDuration::from_secs(i as i64));
        }
        let id = rig.store.accept(message.clone()).await.unwrap().id;
        match message.send_at {
            None => due.push((message.priority, id)),
            Some(_) => scheduled.push((message.priority, id)),
        }
    }
    let mut d = run(&rig.store, &[spec("m1")], windowed(8), Arc::new(AllowAll)).await;

    let mut first = drain(&mut d, &rig.store, 40).await;
    assert_eq!(first.len(), 40);
    // The 41st is handed over as the 40th lands: keep it in the modem while new messages arrive.
    d.handle.flush().await;
    let held = d.fakes[0].take();
    first.push((held.message_id, 0));
    // While the rest is paged in: urgent and ordinary new messages, and messages the dispatcher already
    // knows (paged in, or sent) announced again as a racing API would.
    let mut late = Vec::new();
    for i in 0..10 {
        let mut message = new_message(&format!("+1555200{i:04}"), 1);
        message.priority = if i % 2 == 0 { 9 } else { 0 };
        let id = submit(&rig.store, &d.handle, message.clone()).await;
        late.push((message.priority, id));
    }
    for &(priority, id) in due.iter().step_by(7) {
        d.handle.enqueue(QueueEntry {
            id,
            to: "+15551000000".into(),
            priority,
            not_before: None,
            expires_at: None,
            tz: None,
            region: None,
            pinned_modem: None,
            attempts: 0,
            parts: 1,
            part_count: 1,
            category: Category::Standard,
        });
    }
    complete(&rig.store, "m1", held, 41).await;
    let rest = drain(&mut d, &rig.store, 1000).await;

    let mut expected_first = due.clone();
    let expected_first: Vec<Uuid> = in_key_order(&mut expected_first)[..41].to_vec();
    assert_eq!(
        first.iter().map(|&(id, _)| id).collect::<Vec<_>>(),
        expected_first
    );
    let mut remaining: Vec<(i32, Uuid)> = due
        .iter()
        .filter(|(_, id)| !expected_first.contains(id))
        .copied()
        .chain(late.iter().copied())
        .collect();
    assert_eq!(
        rest.iter().map(|&(id, _)| id).collect::<Vec<_>>(),
        in_key_order(&mut remaining)
    );
    assert!(d.fakes[0].job().is_none());

    // An hour later the scheduled ones come due, through the waiting window 8 at a time, in order
    // (their send_at differ by seconds; all have passed).
    rig.clock.advance(Duration::from_secs(3600 + 200));
    let later = drain(&mut d, &rig.store, 1000).await;
    assert_eq!(
        later.iter().map(|&(id, _)| id).collect::<Vec<_>>(),
        in_key_order(&mut scheduled.clone())
    );
    for &(_, id) in due.iter().chain(&scheduled).chain(&late) {
        assert_eq!(state(&rig.store, id).await, MessageState::Sent, "{id}");
        assert_eq!(claims(&rig.store, id).await, 1, "{id} was claimed once");
    }
    d.stop().await;
}

#[tokio::test]
async fn scheduled_messages_beyond_the_waiting_window_come_due_one_by_one_in_time() {
    let rig = rig();
    let mut at = Vec::new();
    for i in 0..30 {
        let mut message = new_message(&format!("+1555300{i:04}"), 1);
        // Due every 10 s, stored in reverse time order.
        message.send_at = Some(start_time() + jiff::SignedDuration::from_secs(300 - 10 * i));
        at.push((300 - 10 * i, rig.store.accept(message).await.unwrap().id));
    }
    at.sort();
    let mut d = run(&rig.store, &[spec("m1")], windowed(4), Arc::new(AllowAll)).await;
    assert!(d.fakes[0].job().is_none());
    for &(seconds, id) in &at {
        let due = start_time() + jiff::SignedDuration::from_secs(seconds);
        let wait = Duration::try_from(due.duration_since(rig.clock.now())).unwrap();
        rig.clock.advance(wait - Duration::from_millis(1));
        d.handle.flush().await;
        assert!(d.fakes[0].job().is_none(), "not before its send_at");
        rig.clock.advance(Duration::from_millis(1));
        let sent = drain(&mut d, &rig.store, 10).await;
        assert_eq!(sent.iter().map(|&(id, _)| id).collect::<Vec<_>>(), [id]);
    }
    d.stop().await;
}

#[tokio::test]
async fn a_message_beyond_the_window_expires_on_time_and_never_goes_out() {
    let rig = rig();
    let mut ids = Vec::new();
    let mut expiring = None;
    for i in 0..20 {
        let mut message = new_message(&format!("+1555400{i:04}"), 1);
        if i == 15 {
            message.expires_at = Some(start_time() + jiff::SignedDuration::from_mins(10));
        }
        let id = rig.store.accept(message).await.unwrap().id;
        if i == 15 {
            expiring = Some(id);
        } else {
            ids.push(id);
        }
    }
    let expiring = expiring.unwrap();
    let mut d = run(&rig.store, &[spec("m1")], windowed(4), Arc::new(AllowAll)).await;
    d.fakes[0].ready.send(false).unwrap();
    // Jobs handed out before the modem went offline.
    let early = drain(&mut d, &rig.store, 10).await;

    rig.clock.advance(Duration::from_secs(9 * 60));
    d.handle.flush().await;
    assert_eq!(state(&rig.store, expiring).await, MessageState::Queued);
    // The sweep runs a minute after the last: within a minute of expires_at.
    rig.clock.advance(Duration::from_secs(60));
    d.handle.flush().await;
    assert_eq!(state(&rig.store, expiring).await, MessageState::Expired);
    let events = detail(&rig.store, expiring).await.events;
    assert!(events.iter().any(|e| e.kind == "expired"), "{events:?}");

    d.fakes[0].ready.send(true).unwrap();
    let sent: Vec<Uuid> = early
        .into_iter()
        .chain(drain(&mut d, &rig.store, 100).await)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        sent, ids,
        "everything else, in order, once; never the expired one"
    );
    d.stop().await;
}

#[tokio::test]
async fn a_recipient_paged_in_late_still_sticks_to_its_modem() {
    let rig = rig();
    let (x, y, w) = ("+15555000001", "+15555000002", "+15555000003");
    // Earlier life: x and w last heard from m2, y from m1.
    {
        let mut d = run(
            &rig.store,
            &[spec("m1"), spec("m2")],
            windowed(4),
            Arc::new(AllowAll),
        )
        .await;
        d.fakes[0].ready.send(false).unwrap();
        submit(&rig.store, &d.handle, new_message(x, 1)).await;
        submit(&rig.store, &d.handle, new_message(w, 1)).await;
        assert_eq!(drain(&mut d, &rig.store, 10).await.len(), 2);
        d.fakes[0].ready.send(true).unwrap();
        d.fakes[1].ready.send(false).unwrap();
        submit(&rig.store, &d.handle, new_message(y, 1)).await;
        assert_eq!(drain(&mut d, &rig.store, 10).await.len(), 1);
        d.stop().await;
    }
    // A backlog with x and y at its end, far beyond a window of 4.
    for i in 0..20 {
        rig.store
            .accept(new_message(&format!("+1555600{i:04}"), 1))
            .await
            .unwrap();
    }
    let to_x = rig.store.accept(new_message(x, 1)).await.unwrap().id;
    let to_y = rig.store.accept(new_message(y, 1)).await.unwrap().id;
    let mut d = run(
        &rig.store,
        &[spec("m1"), spec("m2")],
        windowed(4),
        Arc::new(AllowAll),
    )
    .await;
    let sent = drain(&mut d, &rig.store, 100).await;
    assert_eq!(sent.len(), 22);
    assert!(sent.contains(&(to_x, 1)), "x goes out on m2: {sent:?}");
    assert!(sent.contains(&(to_y, 0)), "y goes out on m1: {sent:?}");
    // A new message to w (not texted since start), announced by the API: its modem is looked up too.
    let to_w = submit(&rig.store, &d.handle, new_message(w, 1)).await;
    assert_eq!(drain(&mut d, &rig.store, 10).await, [(to_w, 1)]);
    d.stop().await;
}

#[tokio::test]
async fn a_restart_or_a_rebind_mid_backlog_resumes_without_losing_or_repeating() {
    let rig = rig();
    let mut backlog = Vec::new();
    for i in 0..30 {
        let mut message = new_message(&format!("+1555700{i:04}"), 1);
        message.priority = i % 3;
        let id = rig.store.accept(message.clone()).await.unwrap().id;
        backlog.push((message.priority, id));
    }
    let order = in_key_order(&mut backlog.clone());
    let mut d = run(&rig.store, &[spec("m1")], windowed(4), Arc::new(AllowAll)).await;
    let first = drain(&mut d, &rig.store, 10).await;
    assert_eq!(first.len(), 10);
    // One more handed over and lost with the dying worker: it goes back to the queue.
    d.handle.flush().await;
    let lost = d.fakes[0].take_id();
    d.stop().await;
    assert_eq!(lost, order[10]);
    assert_eq!(state(&rig.store, lost).await, MessageState::Queued);

    // Restart: the rest, in order, from the one that was lost.
    let mut d = run(&rig.store, &[spec("m1")], windowed(4), Arc::new(AllowAll)).await;
    let mut second = drain(&mut d, &rig.store, 4).await;
    d.handle.flush().await;
    let fifth = d.fakes[0].take();
    second.push((fifth.message_id, 0));
    d.fakes[0].ready.send(false).unwrap();
    complete(&rig.store, "m1", fifth, 5).await;
    d.handle.flush().await;
    assert_eq!(
        second.iter().map(|&(id, _)| id).collect::<Vec<_>>(),
        order[10..15]
    );

    // Reload: a new dispatcher starts (and hands out the next message at once); an urgent message is
    // announced to the old one after it stopped (lost) before the handle is rebound. The new one finds it
    // when rebound.
    d.stop.cancel();
    d.task.await.unwrap();
    let mut next = run(&rig.store, &[spec("m1")], windowed(4), Arc::new(AllowAll)).await;
    let held = next.fakes[0].take();
    assert_eq!(held.message_id, order[15]);
    let mut urgent = new_message("+15557009999", 1);
    urgent.priority = 9;
    let urgent = submit(&rig.store, &d.handle, urgent).await;
    d.handle.rebind(&next.handle);
    next.handle.flush().await;
    complete(&rig.store, "m1", held, 16).await;
    let third = drain(&mut next, &rig.store, 100).await;
    let mut expected = vec![urgent];
    expected.extend(&order[16..]);
    assert_eq!(
        third.iter().map(|&(id, _)| id).collect::<Vec<_>>(),
        expected
    );
    for id in order.iter().chain([&urgent]) {
        assert_eq!(state(&rig.store, *id).await, MessageState::Sent);
    }
    assert_eq!(
        claims(&rig.store, lost).await,
        2,
        "claimed, lost, claimed again"
    );
    next.stop().await;
}

/// A reload neither waits for the jobs in flight nor forgets them: the new dispatcher records how they
/// end, does not overfill the modem still busy with them, and keeps counting its daily cap.
#[tokio::test]
async fn a_reload_takes_over_the_jobs_in_flight_and_the_modems_counts() {
    let rig = rig();
    let specs = [
        Spec {
            id: "m1",
            quota: fast(),
            cap: Some(3),
        },
        spec("m2"),
    ];
    let mut d = run(&rig.store, &specs, Settings::default(), Arc::new(AllowAll)).await;
    // m2 is away: m1 takes two jobs (its pipeline), both still being sent at the reload.
    d.fakes[1].ready.send(false).unwrap();
    let a1 = submit(&rig.store, &d.handle, new_message("+15558000001", 1)).await;
    let a2 = submit(&rig.store, &d.handle, new_message("+15558000002", 1)).await;
    d.handle.flush().await;
    let (job1, job2) = (d.fakes[0].take(), d.fakes[0].take());
    assert_eq!((job1.message_id, job2.message_id), (a1, a2));
    d.fakes[1].ready.send(true).unwrap();

    let mut d = d.reload(&rig.store, &specs).await;
    // m1 is still full: the next message goes to m2.
    let b = submit(&rig.store, &d.handle, new_message("+15558000003", 1)).await;
    d.handle.flush().await;
    assert_eq!(d.fakes[0].waiting(), 0, "m1 holds two jobs already");
    assert_eq!(d.fakes[1].take_id(), b);

    // m1's jobs end after the reload: the new dispatcher records them and frees m1's pipeline.
    complete(&rig.store, "m1", job1, 1).await;
    complete(&rig.store, "m1", job2, 2).await;
    d.handle.flush().await;
    assert_eq!(state(&rig.store, a1).await, MessageState::Sent);
    assert_eq!(state(&rig.store, a2).await, MessageState::Sent);
    // Two of m1's three a day are spent (handed out before the reload): it takes one more, m2 the rest.
    for i in 4..8 {
        submit(
            &rig.store,
            &d.handle,
            new_message(&format!("+1555800000{i}"), 1),
        )
        .await;
    }
    d.handle.flush().await;
    assert_eq!(d.fakes[0].waiting(), 1, "m1 is at its daily cap of 3");
    assert_eq!(d.fakes[1].waiting(), 1, "m2 holds b and one more");
    d.stop().await;
}

/// A reload that keeps a modem's rate keeps what the limiter already let through (no fresh burst); one
/// that changes it counts the new rate from the last send; a modem re-opened under the same id (its SIM
/// most likely the same) keeps its pace too.
#[tokio::test]
async fn a_reload_keeps_a_modems_pace_and_a_new_rate_counts_from_the_last_send() {
    let rig = rig();
    let every = |secs| {
        [Spec {
            id: "m1",
            quota: Quota::with_period(Duration::from_secs(secs)).unwrap(),
            cap: None,
        }]
    };
    let mut d = run(
        &rig.store,
        &every(10),
        Settings::default(),
        Arc::new(AllowAll),
    )
    .await;
    submit(&rig.store, &d.handle, new_message("+15558100001", 1)).await;
    d.handle.flush().await;
    let job = d.fakes[0].take();
    complete(&rig.store, "m1", job, 1).await;

    let mut d = d.reload(&rig.store, &every(10)).await;
    let b = submit(&rig.store, &d.handle, new_message("+15558100002", 1)).await;
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none(), "a reload is no fresh burst");
    rig.clock.advance(Duration::from_secs(10));
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), b);

    // Faster: 4 s from b, not at once and not 10 s.
    let c = submit(&rig.store, &d.handle, new_message("+15558100003", 1)).await;
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none(), "still 10 s between sends");
    let mut d = d.reload(&rig.store, &every(4)).await;
    assert!(d.fakes[0].job().is_none(), "4 s from the last send");
    rig.clock.advance(Duration::from_secs(4));
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), c, "the new rate, from the last send");

    // Re-opened (another device path, say): a new job channel, the same pace.
    let e = submit(&rig.store, &d.handle, new_message("+15558100004", 1)).await;
    d.fakes[0].reopen();
    let mut d = d.reload(&rig.store, &every(4)).await;
    assert!(
        d.fakes[0].job().is_none(),
        "a re-opened modem is no fresh burst"
    );
    rig.clock.advance(Duration::from_secs(4));
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), e);
    d.stop().await;
}

/// A restart is no fresh burst either: each modem's limiter resumes from the store's record of its last
/// sends.
#[tokio::test]
async fn a_restart_resumes_each_modems_pace_from_its_last_sends() {
    let rig = rig();
    let every_ten_seconds = [Spec {
        id: "m1",
        quota: Quota::with_period(Duration::from_secs(10)).unwrap(),
        cap: None,
    }];
    let start = || {
        run(
            &rig.store,
            &every_ten_seconds,
            Settings::default(),
            Arc::new(AllowAll),
        )
    };
    let mut d = start().await;
    submit(&rig.store, &d.handle, new_message("+15558110001", 1)).await;
    d.handle.flush().await;
    let job = d.fakes[0].take();
    complete(&rig.store, "m1", job, 1).await;
    d.stop().await;

    rig.clock.advance(Duration::from_secs(4));
    let mut d = start().await;
    let b = submit(&rig.store, &d.handle, new_message("+15558110002", 1)).await;
    d.handle.flush().await;
    assert!(d.fakes[0].job().is_none(), "6 s of the 10 are still to run");
    rig.clock.advance(Duration::from_secs(6));
    d.handle.flush().await;
    assert_eq!(d.fakes[0].take_id(), b);
    d.stop().await;
}

/// A recipient handed to a modem just before a reload (nothing in the store says so yet) stays with it.
#[tokio::test]
async fn a_recipient_keeps_its_modem_across_a_reload() {
    let rig = rig();
    let specs = [spec("m1"), spec("m2")];
    let mut d = run(&rig.store, &specs, Settings::default(), Arc::new(AllowAll)).await;
    d.fakes[0].ready.send(false).unwrap();
    submit(&rig.store, &d.handle, new_message("+15558300001", 1)).await;
    d.handle.flush().await;
    let first = d.fakes[1].take();
    d.fakes[0].ready.send(true).unwrap();

    let mut d = d.reload(&rig.store, &specs).await;
    let again = submit(&rig.store, &d.handle, new_message("+15558300001", 1)).await;
    d.handle.flush().await;
    assert_eq!(
        d.fakes[0].waiting(),
        0,
        "m1 is free, but the recipient hears from m2"
    );
    assert_eq!(d.fakes[1].take_id(), again);
    complete(&rig.store, "m2", first, 1).await;
    d.stop().await;
}

/// A job on a modem the reload removed still lands: the new dispatcher records the failure and retries
/// the message on a modem it has.
#[tokio::test]
async fn a_job_on_a_modem_a_reload_removed_is_recorded_and_retried_on_another() {
    let rig = rig();
    let mut d = plain(&rig, &["m1", "m2"]).await;
    d.fakes[0].ready.send(false).unwrap();
    let x = submit(&rig.store, &d.handle, new_message("+15558200001", 1)).await;
    d.handle.flush().await;
    let job = d.fakes[1].take();
    d.fakes[0].ready.send(true).unwrap();

    let mut d = d.reload(&rig.store, &[spec("m1")]).await;
    fail(&rig.store, "m2", job, SendError::Cms(38)).await;
    d.handle.flush().await;
    assert_eq!(state(&rig.store, x).await, MessageState::Queued);
    assert!(
        d.fakes[0].job().is_none(),
        "the retry waits for its back-off"
    );
    rig.clock.advance(Duration::from_secs(30));
    d.handle.flush().await;
    let retry = d.fakes[0].take();
    assert_eq!(retry.message_id, x);
    complete(&rig.store, "m1", retry, 7).await;
    let detail = detail(&rig.store, x).await;
    assert_eq!(detail.message.state, MessageState::Sent);
    assert_eq!(detail.message.modem.as_deref(), Some("m1"));
    d.stop().await;
}

/// A rig whose writes give up after 50 ms on a locked database, and another connection to lock it with
/// (as another process holding the write lock would: reads still work, every write fails).
fn outage_rig() -> (Rig, rusqlite::Connection) {
    let rig = rig_opened_with(|clock| OpenOptions {
        busy_timeout: Duration::from_millis(50),
        ..store_options(clock)
    });
    let locker = rusqlite::Connection::open(&rig.path).unwrap();
    (rig, locker)
}

#[tokio::test]
async fn messages_the_store_could_not_claim_in_an_outage_go_out_after_it() {
    let (rig, locker) = outage_rig();
    let a = rig
        .store
        .accept(new_message("+15556000001", 1))
        .await
        .unwrap()
        .id;
    let b = rig
        .store
        .accept(new_message("+15556000002", 1))
        .await
        .unwrap()
        .id;
    let mut scheduled = new_message("+15556000003", 1);
    scheduled.send_at = Some(start_time() + jiff::SignedDuration::from_secs(3));
    let c = rig.store.accept(scheduled).await.unwrap().id;

    // Every claim fails while the lock is held. The retries (5 s on) fall beyond the one-entry waiting
    // window, which holds c: memory lets go of a and b, which the store still has due at their old time.
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut d = run(&rig.store, &[spec("m1")], windowed(1), Arc::new(AllowAll)).await;
    d.handle.flush().await;
    d.handle.flush().await;
    locker.execute_batch("ROLLBACK").unwrap();
    assert!(d.fakes[0].job().is_none());
    assert_eq!(state(&rig.store, a).await, MessageState::Queued);

    rig.clock.advance(Duration::from_secs(3));
    let sent = drain(&mut d, &rig.store, 10).await;
    assert_eq!(sent.iter().map(|&(id, _)| id).collect::<Vec<_>>(), [c]);
    // When the claims' retry time comes, the store's heads are read again and both are found.
    rig.clock.advance(Duration::from_secs(2));
    let sent = drain(&mut d, &rig.store, 10).await;
    assert_eq!(sent.iter().map(|&(id, _)| id).collect::<Vec<_>>(), [a, b]);
    for id in [a, b, c] {
        assert_eq!(state(&rig.store, id).await, MessageState::Sent, "{id}");
        assert_eq!(claims(&rig.store, id).await, 1, "{id} was claimed once");
    }
    d.stop().await;
}

#[tokio::test]
async fn a_job_outcome_the_store_could_not_record_is_recorded_after_the_outage() {
    let (rig, locker) = outage_rig();
    let mut d = plain(&rig, &["m1", "m2"]).await;
    let id = submit(&rig.store, &d.handle, new_message("+15556000004", 1)).await;
    d.handle.flush().await;
    let job = d.fakes[0].take();
    assert_eq!(job.message_id, id);

    // m1 hands the job back untried while nothing can be written: the requeue fails, the message stays
    // `sending` in the store (where no page would find it), and memory keeps the outcome.
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    job.done.send(JobOutcome::NotAttempted).unwrap();
    d.handle.flush().await;
    locker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(state(&rig.store, id).await, MessageState::Sending);
    assert!(d.fakes[1].job().is_none());

    rig.clock.advance(Duration::from_secs(5));
    d.handle.flush().await;
    let again = d.fakes[1].take();
    assert_eq!(
        again.message_id, id,
        "requeued, then sent on the other modem"
    );
    let events = detail(&rig.store, id).await.events;
    assert_eq!(events.iter().filter(|e| e.kind == "claimed").count(), 2);
    drop(again);
    d.stop().await;
}

/// The API's backend with no live modems to show: only its writes matter here.
struct NoModems;

impl modemgate::api::gateway::ModemControl for NoModems {
    fn modems(&self) -> Vec<modemgate::api::gateway::LiveModem> {
        Vec::new()
    }
    fn set_paused(&self, _id: &str, _paused: bool) -> bool {
        false
    }
}

/// A CMS that hangs up (its timeout) drops its request's future in the server: a send whose write had
/// begun is committed anyway, and must reach the dispatcher, or it sits `queued` until a restart while a
/// retry with the same key answers 202.
#[tokio::test]
async fn a_send_whose_request_is_dropped_mid_write_still_reaches_the_dispatcher() {
    use futures_util::FutureExt;
    use modemgate::api::backend::{Backend, NewMessage as ApiMessage};
    use modemgate::api::extract::Fields;
    use modemgate::api::validate::Validator;
    let rig = rig();
    let mut d = plain(&rig, &["m1"]).await;
    let optouts = Arc::new(OptOuts::load(&rig.store).await.unwrap());
    let gateway = modemgate::api::gateway::Gateway::new(
        rig.store.clone(),
        d.handle.clone(),
        Arc::new(NoModems),
        optouts,
        Default::default(),
        true,
    );
    let validator = Validator {
        now: start_time(),
        default_region: None,
        smart_default: true,
    };
    let body = serde_json::json!({"to": "+14158906431", "text": "abandoned"});
    let request = validator
        .send_request(Fields::from_value(body, None).unwrap())
        .unwrap();
    let message = ApiMessage {
        request,
        idempotency_key: Some("k1".into()),
        api_key: "cms".into(),
    };
    // One poll starts the write; then the server drops the future, as it does for a closed connection.
    assert!(gateway.accept(message).now_or_never().is_none());
    let job = tokio::time::timeout(Duration::from_secs(30), d.fakes[0].jobs.recv())
        .await
        .expect("the committed message never reached the dispatcher")
        .unwrap();
    let stored = rig.store.get(job.message_id).await.unwrap().unwrap();
    assert_eq!(stored.message.text, "abandoned");
}
