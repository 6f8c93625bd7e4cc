//! The modem worker against the simulator over real pseudo-terminals: every dialect profile, and the faults
//! modems show in the field. Tests synchronise on worker events, the health watch and the simulator's send
//! log, never on sleeps; each wait has a generous guard so a bug fails the test instead of hanging it.

use std::{future::Future, time::Duration};

use modemgate::{
    modem::{
        Timeouts, WorkerConfig, WorkerHandle,
        job::{
            Clearance, JobOutcome, JobPart, ModemHealth, ModemState, Registration, SendError,
            SendJob, WorkerEvent,
        },
        spawn_worker,
    },
    pdu::{self, SubmitOptions, Tpdu, UserData},
    sim::{self, FailNext, Inbound, Profile, SendOutcome, SimConfig, SimHandle},
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const GUARD: Duration = Duration::from_secs(30);

async fn guarded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// What the fake daemon saw, with the acks already given.
#[derive(Debug)]
enum Seen {
    Submitting {
        part: u16,
    },
    PartSent {
        message_id: Uuid,
        part: u16,
        reference: u8,
    },
    Inbound {
        text: Option<String>,
    },
    StatusReport {
        reference: u8,
        status: u8,
    },
    /// Every health report, in order: the watch channel keeps only the latest.
    Health(Box<ModemHealth>),
}

struct Rig {
    sim: SimHandle,
    worker: WorkerHandle,
    health: watch::Receiver<ModemHealth>,
    seen: mpsc::UnboundedReceiver<Seen>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

fn worker_config(device: std::path::PathBuf) -> WorkerConfig {
    let mut cfg = WorkerConfig::new("m1", device);
    cfg.timeouts = Timeouts {
        command: Duration::from_secs(2),
        cmgs_prompt: Duration::from_secs(2),
        cmgs_result: Duration::from_secs(5),
        max_backoff: Duration::from_millis(500),
    };
    // Sweeps and polls happen at every (re)connection; the periodic ones would only add noise here.
    cfg.sweep_interval = Duration::from_secs(3600);
    cfg.health_interval = Duration::from_secs(3600);
    cfg.degraded_health_interval = Duration::from_secs(3600);
    cfg
}

async fn rig_with(
    profile: Profile,
    edit_sim: impl FnOnce(&mut SimConfig),
    edit: impl FnOnce(&mut WorkerConfig),
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mut sim_cfg = SimConfig::instant(profile);
    sim_cfg.link = Some(dir.path().join("modem0"));
    edit_sim(&mut sim_cfg);
    let sim = sim::spawn(sim_cfg).unwrap();
    let mut cfg = worker_config(sim.device());
    edit(&mut cfg);
    let (events_tx, mut events) = mpsc::channel(64);
    let (seen_tx, seen) = mpsc::unbounded_channel();
    // The fake daemon: acks everything at once and reports what it saw.
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let seen = match event {
                WorkerEvent::Submitting { part, ack, .. } => {
                    let _ = ack.send(Clearance::Write);
                    Seen::Submitting { part }
                }
                WorkerEvent::PartSent {
                    message_id,
                    part,
                    reference,
                    ..
                } => Seen::PartSent {
                    message_id,
                    part,
                    reference,
                },
                WorkerEvent::Inbound { decoded, ack, .. } => {
                    let _ = ack.send(());
                    let text = match decoded {
                        Ok(pdu::Pdu {
                            tpdu: Tpdu::Deliver(d),
                            ..
                        }) => match d.user_data {
                            UserData::Text(t) => Some(t),
                            UserData::Binary(_) => None,
                        },
                        _ => None,
                    };
                    Seen::Inbound { text }
                }
                WorkerEvent::StatusReport { report, .. } => Seen::StatusReport {
                    reference: report.reference,
                    status: report.status,
                },
                WorkerEvent::Health { health, .. } => Seen::Health(Box::new(health)),
            };
            if seen_tx.send(seen).is_err() {
                return;
            }
        }
    });
    let cancel = CancellationToken::new();
    let (worker, _task) = spawn_worker(cfg, events_tx, cancel.clone());
    let health = worker.health();
    Rig {
        sim,
        worker,
        health,
        seen,
        cancel,
        _dir: dir,
    }
}

async fn rig(profile: Profile) -> Rig {
    rig_with(profile, |_| {}, |_| {}).await
}

impl Rig {
    /// The simulator answers the next `count` sends with `+CMS ERROR: code`.
    fn fail_next(&self, count: u32, code: u16) {
        self.sim
            .update_faults(|f| f.fail_next = Some(FailNext { count, code }))
            .unwrap();
    }

    async fn wait_state(&mut self, state: ModemState) -> ModemHealth {
        let h = guarded(
            &format!("state {state:?}"),
            self.health.wait_for(|h| h.state == state),
        )
        .await;
        h.unwrap().clone()
    }

    async fn next_seen(&mut self, what: &str, mut keep: impl FnMut(&Seen) -> bool) -> Seen {
        guarded(what, async {
            loop {
                let seen = self.seen.recv().await.expect("worker events ended");
                if keep(&seen) {
                    return seen;
                }
            }
        })
        .await
    }

    /// Send `text` to `to` and wait for the outcome.
    async fn send(&self, to: &str, text: &str, report: bool) -> (Uuid, JobOutcome) {
        let opts = SubmitOptions {
            status_report: report,
            concat_reference: 7,
            ..SubmitOptions::default()
        };
        let parts = pdu::encode_submit(to, text, &opts).unwrap();
        let (done, outcome) = oneshot::channel();
        let message_id = Uuid::now_v7();
        let job = SendJob {
            message_id,
            recipient: to.to_owned(),
            parts: parts
                .iter()
                .enumerate()
                .map(|(i, p)| JobPart {
                    part: i as u16 + 1,
                    tpdu_length: p.tpdu_length,
                    pdu_hex: p.hex(),
                })
                .collect(),
            more_waiting: false,
            send_by: None,
            done,
        };
        self.worker.send(job).await;
        (message_id, guarded("job outcome", outcome).await.unwrap())
    }

    async fn inbound_text(&mut self) -> String {
        match self
            .next_seen("inbound", |s| matches!(s, Seen::Inbound { .. }))
            .await
        {
            Seen::Inbound { text, .. } => text.expect("decoded text"),
            _ => unreachable!(),
        }
    }

    fn sent_count(&self) -> usize {
        self.sim
            .sends()
            .iter()
            .filter(|s| matches!(s.outcome, SendOutcome::Sent { .. }))
            .count()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

const LONG: &str = "This message is long enough to need two parts: the worker must send both in order, record a \
                    TP-MR for each, and the simulator must log exactly two submissions, no more, no less.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_initialises_sends_receives_and_reports() {
    for profile in Profile::ALL {
        let mut rig = rig(profile).await;
        let health = rig.wait_state(ModemState::Ready).await;
        assert_eq!(
            health.identity.imei.as_deref(),
            Some("861234050123456"),
            "{profile}"
        );
        assert_eq!(
            health.identity.imsi.as_deref(),
            Some("001010123456789"),
            "{profile}"
        );
        let identity = &health.identity;
        assert_eq!(
            identity.iccid.as_deref(),
            Some("8901260123456789012"),
            "{profile}"
        );
        assert_eq!(
            identity.own_number.as_deref(),
            Some("+15550100001"),
            "{profile}"
        );
        assert_eq!(health.cs, Some(Registration::Home), "{profile}");
        assert_eq!(health.ps, Some(Registration::Home), "{profile}");
        assert_eq!(health.eps, Some(Registration::Home), "{profile}");
        assert_eq!(health.operator.as_deref(), Some("SIMNET"), "{profile}");
        assert_eq!(health.signal, Some(20), "{profile}");

        let (id, outcome) = rig.send("+15551234567", LONG, true).await;
        assert_eq!(outcome, JobOutcome::Sent, "{profile}");
        let sends = guarded("sim log", rig.sim.wait_sends(2)).await.unwrap();
        assert_eq!(sends.len(), 2, "{profile}: sent exactly twice");
        // Each part is recorded (Submitting, acked) before it is sent, in order.
        let mut refs = Vec::new();
        for part in 1..=2 {
            let keep = |s: &Seen| matches!(s, Seen::Submitting { .. } | Seen::PartSent { .. });
            match rig.next_seen("submitting", keep).await {
                Seen::Submitting { part: p } => assert_eq!(p, part, "{profile}"),
                other => panic!("{profile}: expected Submitting, got {other:?}"),
            }
            match rig.next_seen("part sent", keep).await {
                Seen::PartSent {
                    message_id,
                    part: p,
                    reference,
                } => {
                    assert_eq!((message_id, p), (id, part), "{profile}");
                    refs.push(reference);
                }
                other => panic!("{profile}: expected PartSent, got {other:?}"),
            }
        }
        let logged: Vec<u8> = sends
            .iter()
            .map(|s| match s.outcome {
                SendOutcome::Sent { reference } => reference,
                SendOutcome::Failed { cms } => panic!("{profile}: failed {cms}"),
            })
            .collect();
        assert_eq!(refs, logged, "{profile}: TP-MR recorded per part");

        // Both parts asked for a report: each arrives (+CDS or +CDSI, per profile) with its TP-MR.
        let mut reported = Vec::new();
        for _ in 0..2 {
            if let Seen::StatusReport { reference, status } = rig
                .next_seen("status report", |s| matches!(s, Seen::StatusReport { .. }))
                .await
            {
                assert_eq!(status, 0, "{profile}");
                reported.push(reference);
            }
        }
        reported.sort_unstable();
        refs.sort_unstable();
        assert_eq!(reported, refs, "{profile}");

        rig.sim
            .inject(Inbound::new("+15557654321", "Hello from the network"))
            .await
            .unwrap();
        assert_eq!(
            rig.inbound_text().await,
            "Hello from the network",
            "{profile}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cms_errors_are_classified_and_the_modem_keeps_working() {
    let mut rig = rig(Profile::Plain).await;
    rig.wait_state(ModemState::Ready).await;

    rig.fail_next(1, 500);
    let (_, outcome) = rig.send("+15551234567", "transient", false).await;
    assert_eq!(
        outcome,
        JobOutcome::Failed {
            part: 1,
            error: SendError::Cms(500)
        }
    );
    assert!(SendError::Cms(500).is_transient());

    rig.fail_next(1, 21);
    let (_, outcome) = rig.send("+15551234567", "permanent", false).await;
    assert_eq!(
        outcome,
        JobOutcome::Failed {
            part: 1,
            error: SendError::Cms(21)
        }
    );
    assert!(!SendError::Cms(21).is_transient());

    let (_, outcome) = rig.send("+15551234567", "fine again", false).await;
    assert_eq!(outcome, JobOutcome::Sent);
    assert_eq!(rig.sent_count(), 1);
    assert_eq!(rig.health.borrow().state, ModemState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_smsc_goes_in_every_pdu_and_the_sims_own_otherwise() {
    let mut routed = rig_with(
        Profile::Ec25,
        |_| {},
        |cfg| cfg.smsc = Some("+27381000015".into()),
    )
    .await;
    routed.wait_state(ModemState::Ready).await;
    let (_, outcome) = routed.send("+15551234567", LONG, false).await;
    assert_eq!(outcome, JobOutcome::Sent);
    let sends = routed.sim.sends();
    assert_eq!(sends.len(), 2);
    for send in &sends {
        let decoded = pdu::decode_hex(&send.pdu_hex).unwrap();
        assert_eq!(
            decoded.smsc.map(|a| a.value).as_deref(),
            Some("+27381000015")
        );
        // AT+CMGS counts the TPDU only: the longer SMSC field does not change it.
        assert_eq!(send.length, send.pdu_hex.len() / 2 - 8);
    }
    drop(routed);

    let mut plain = rig(Profile::Ec25).await;
    plain.wait_state(ModemState::Ready).await;
    let (_, outcome) = plain.send("+15551234567", "hi", false).await;
    assert_eq!(outcome, JobOutcome::Sent);
    let sent = &plain.sim.sends()[0];
    assert!(sent.pdu_hex.starts_with("00"), "{}", sent.pdu_hex);
    assert_eq!(pdu::decode_hex(&sent.pdu_hex).unwrap().smsc, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_modem_is_recovered_by_reopening_the_port() {
    let mut rig = rig(Profile::Ec25).await;
    rig.wait_state(ModemState::Ready).await;
    rig.sim.update_faults(|f| f.hang = true).unwrap();
    guarded("hang switched on", rig.sim.wait_faults(|f| f.hang))
        .await
        .unwrap();

    // The prompt never comes; ESC gets no answer either: nothing was written, so nothing may be lost.
    let (_, outcome) = rig.send("+15551234567", "into the void", false).await;
    assert_eq!(outcome, JobOutcome::NotAttempted);
    // Re-opening the port clears the hang; the worker initialises again and sends.
    guarded("hang cleared", rig.sim.wait_faults(|f| !f.hang))
        .await
        .unwrap();
    rig.wait_state(ModemState::Ready).await;
    let (_, outcome) = rig.send("+15551234567", "after recovery", false).await;
    assert_eq!(outcome, JobOutcome::Sent);
    assert_eq!(
        rig.sent_count(),
        1,
        "the failed attempt never reached the network"
    );
}

/// `answered_at` tells how fresh the state is: every poll the modem answers moves it on, and a modem that
/// hangs while idle keeps the time it last answered, also once it is found offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_at_moves_with_each_answered_poll_and_stays_when_the_modem_hangs() {
    let started = jiff::Timestamp::now();
    let mut rig = rig_with(
        Profile::Ec25,
        |_| {},
        |cfg| cfg.health_interval = Duration::from_millis(100),
    )
    .await;
    let first = rig
        .wait_state(ModemState::Ready)
        .await
        .answered_at
        .expect("the first poll was answered");
    assert!(first >= started, "{first} is before the test began");
    let polled = guarded(
        "a later poll answered",
        rig.health.wait_for(|h| h.answered_at > Some(first)),
    )
    .await
    .unwrap()
    .answered_at
    .unwrap();

    rig.sim.update_faults(|f| f.hang = true).unwrap();
    guarded("hang switched on", rig.sim.wait_faults(|f| f.hang))
        .await
        .unwrap();
    let hung = jiff::Timestamp::now();
    let Seen::Health(offline) = rig
        .next_seen(
            "the hung modem reported offline",
            |s| matches!(s, Seen::Health(h) if h.state == ModemState::Offline),
        )
        .await
    else {
        unreachable!("next_seen returns what it was asked for")
    };
    let last = offline.answered_at.expect("it answered before it hung");
    assert!(
        polled <= last && last <= hung,
        "last answered {last}, not between the poll seen at {polled} and the hang at {hung}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_port_is_reopened_when_it_returns() {
    let mut rig = rig(Profile::Sim7600).await;
    let ready = rig.wait_state(ModemState::Ready).await;
    assert!(ready.signal.is_some() && ready.cs.is_some());
    rig.sim.vanish(Duration::from_millis(1500)).unwrap();
    let offline = rig.wait_state(ModemState::Offline).await;
    assert_eq!(
        (offline.signal, offline.operator, offline.cs, offline.eps),
        (None, None, None, None),
        "no readings kept from a modem that is gone"
    );
    // While offline, jobs are handed back at once for another modem.
    let (_, outcome) = rig.send("+15551234567", "while away", false).await;
    assert_eq!(outcome, JobOutcome::NotAttempted);

    // The worker re-opens the stable link (the pty behind it is a new one) and initialises again.
    rig.wait_state(ModemState::Ready).await;
    let (_, outcome) = rig.send("+15551234567", "back again", false).await;
    assert_eq!(outcome, JobOutcome::Sent);
    rig.sim
        .inject(Inbound::new("+15557654321", "welcome back"))
        .await
        .unwrap();
    assert_eq!(rig.inbound_text().await, "welcome back");
    assert_eq!(rig.sent_count(), 1);
}

/// A modem that restarts with its port open (a UART modem's brown-out) loses echo-off, numeric errors and
/// its new-message indications; its start-up notices make the worker initialise it again, so a reply is
/// announced at once rather than found by the five-minute sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modem_that_restarts_in_place_is_initialised_again() {
    let mut rig = rig(Profile::Sim7600).await;
    rig.wait_state(ModemState::Ready).await;
    // A send answered means the worker is between commands: the restart then lands while it listens.
    let (_, outcome) = rig.send("+15551234567", "before the restart", false).await;
    assert_eq!(outcome, JobOutcome::Sent);
    rig.sim.reboot().unwrap();
    // Seen through the events, which keep every state (the health watch may skip a brief one).
    rig.next_seen(
        "initialising again",
        |s| matches!(s, Seen::Health(h) if h.state == ModemState::Initialising),
    )
    .await;
    rig.wait_state(ModemState::Ready).await;
    rig.sim
        .inject(Inbound::new("+15557654321", "after the restart"))
        .await
        .unwrap();
    assert_eq!(rig.inbound_text().await, "after the restart");
    let (_, outcome) = rig.send("+15551234567", "still sending", false).await;
    assert_eq!(outcome, JobOutcome::Sent);
}

/// A restart while the modem holds a PDU ends the send at its `RDY`, not at the result timeout (an hour
/// here, so the guard would fail first): the part is unknown, and the modem is initialised again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_a_send_ends_it_at_once() {
    let hour = Duration::from_secs(3600);
    let mut rig = rig_with(
        Profile::Sim7600,
        |sim| sim.send_delay = hour,
        |cfg| cfg.timeouts.cmgs_result = hour,
    )
    .await;
    rig.wait_state(ModemState::Ready).await;
    let (sent, rebooted) = tokio::join!(rig.send("+15551234567", "cut off", false), async {
        guarded("the send to start", rig.sim.wait_started(1))
            .await
            .unwrap();
        rig.sim.reboot()
    });
    rebooted.unwrap();
    assert!(
        matches!(&sent.1, JobOutcome::Unknown { part: 1, reason } if reason.contains("restarted")),
        "{:?}",
        sent.1
    );
    rig.next_seen(
        "initialising again",
        |s| matches!(s, Seen::Health(h) if h.state == ModemState::Initialising),
    )
    .await;
    rig.wait_state(ModemState::Ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urcs_inside_answers_and_garbage_bytes_do_not_confuse_the_worker() {
    let mut rig = rig(Profile::Huawei).await;
    rig.wait_state(ModemState::Ready).await;
    rig.sim.update_faults(|f| f.interleave_urcs = true).unwrap();
    rig.sim
        .inject_garbage(b"\x00\xff\xfe\x1b garbage \x00\r\n\xc3(\r\n".to_vec())
        .unwrap();
    let (_, outcome) = rig.send("+15551234567", LONG, false).await;
    assert_eq!(outcome, JobOutcome::Sent);
    rig.sim
        .inject_garbage(b"\r\nNOISE\x07\r\n".to_vec())
        .unwrap();
    rig.sim
        .inject(Inbound::new("+15557654321", "through the noise"))
        .await
        .unwrap();
    assert_eq!(rig.inbound_text().await, "through the noise");
    let (_, outcome) = rig.send("+15551234567", "and once more", false).await;
    assert_eq!(outcome, JobOutcome::Sent);
    assert_eq!(rig.sent_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_after_storage_full_is_drained_without_duplicates() {
    let mut rig = rig(Profile::Ec25).await;
    let ready = rig.wait_state(ModemState::Ready).await;
    assert!(ready.storage_total.is_some_and(|total| total > 0));
    rig.sim.update_faults(|f| f.storage_full = true).unwrap();
    // The next health poll (a pause makes one) shows the admin why no reply can arrive.
    rig.worker.pause();
    let full = guarded(
        "storage reported full",
        rig.health
            .wait_for(|h| h.storage_used.is_some() && h.storage_used == h.storage_total),
    )
    .await
    .unwrap()
    .clone();
    assert!(
        full.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("message storage full")),
        "{full:?}"
    );
    rig.worker.resume();
    rig.wait_state(ModemState::Ready).await;
    for i in 0..5 {
        rig.sim
            .inject(Inbound::new("+15557654321", format!("held {i}")))
            .await
            .unwrap();
    }
    rig.sim.update_faults(|f| f.storage_full = false).unwrap();
    let mut texts = Vec::new();
    for _ in 0..5 {
        texts.push(rig.inbound_text().await);
    }
    texts.sort();
    assert_eq!(
        texts,
        (0..5).map(|i| format!("held {i}")).collect::<Vec<_>>()
    );

    // Re-connecting sweeps storage: everything was deleted after the acks, so nothing comes twice; the
    // next message after the sweep is the first thing seen.
    rig.sim.vanish(Duration::from_millis(200)).unwrap();
    rig.wait_state(ModemState::Offline).await;
    rig.wait_state(ModemState::Ready).await;
    rig.sim
        .inject(Inbound::new("+15557654321", "after the flood"))
        .await
        .unwrap();
    assert_eq!(rig.inbound_text().await, "after the flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_status_reports_are_acknowledged_with_cnma() {
    // The simulator holds the next routed +CDS until the previous one is acknowledged; with a CNMA timeout
    // longer than the test guard, the second report only arrives if the worker sent AT+CNMA.
    let mut rig = rig_with(
        Profile::Plain,
        |s| s.cnma_timeout = Duration::from_secs(600),
        |_| {},
    )
    .await;
    rig.wait_state(ModemState::Ready).await;
    for text in ["first", "second"] {
        let (_, outcome) = rig.send("+15551234567", text, true).await;
        assert_eq!(outcome, JobOutcome::Sent);
    }
    let mut reports = Vec::new();
    for _ in 0..2 {
        if let Seen::StatusReport { reference, .. } = rig
            .next_seen("status report", |s| matches!(s, Seen::StatusReport { .. }))
            .await
        {
            reports.push(reference);
        }
    }
    reports.sort_unstable();
    reports.dedup();
    assert_eq!(
        reports.len(),
        2,
        "two distinct reports, no redelivered duplicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_pin_is_entered_when_configured_and_reported_when_not() {
    let mut rig = rig_with(
        Profile::Plain,
        |s| s.pin = Some("1234".into()),
        |w| w.pin = Some("1234".into()),
    )
    .await;
    rig.wait_state(ModemState::Ready).await;
    assert_eq!(
        rig.send("+15551234567", "unlocked", false).await.1,
        JobOutcome::Sent
    );

    let mut rig = rig_with(Profile::Plain, |s| s.pin = Some("1234".into()), |_| {}).await;
    let health = rig.wait_state(ModemState::Degraded).await;
    assert!(health.last_error.unwrap().contains("PIN"));
    assert_eq!(
        rig.send("+15551234567", "locked", false).await.1,
        JobOutcome::NotAttempted
    );
}

/// One `+CMS ERROR: 8` (operator determined barring: our SIM, cut off for non-payment or as a suspected
/// spammer) is enough: the modem is degraded at once, and the message is free to go on another modem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barred_sim_degrades_its_modem_at_the_first_refusal() {
    let mut rig = rig_with(Profile::Plain, |_| {}, |_| {}).await;
    rig.wait_state(ModemState::Ready).await;
    rig.fail_next(1, 8);
    let (_, outcome) = rig.send("+15551234567", "barred", false).await;
    let JobOutcome::Failed { error, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(error.is_transient(), "{error}: another modem may send it");
    let health = rig.wait_state(ModemState::Degraded).await;
    assert_eq!(
        health.last_error.as_deref(),
        Some("+CMS ERROR: 8 (operator determined barring)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modem_whose_sends_keep_failing_is_degraded_until_a_health_poll_tries_it_again() {
    let mut rig = rig_with(
        Profile::Plain,
        |_| {},
        |cfg| cfg.degraded_health_interval = Duration::from_millis(300),
    )
    .await;
    rig.wait_state(ModemState::Ready).await;
    // A number's own trouble (a permanent error) does not count against the modem.
    rig.fail_next(1, 21);
    rig.send("+15551234567", "unknown number", false).await;
    assert_eq!(rig.health.borrow().failed_sends, 0);
    rig.fail_next(3, 500);
    for _ in 0..2 {
        rig.send("+15551234567", "fails", false).await;
        assert_eq!(rig.health.borrow().state, ModemState::Ready);
    }
    rig.send("+15551234567", "fails a third time", false).await;
    let health = rig.wait_state(ModemState::Degraded).await;
    assert_eq!(
        (health.failed_sends, health.cs),
        (3, Some(Registration::Home)),
        "registered, yet every send fails"
    );
    // The next poll gives it one more try: one more failure and it is degraded again at once.
    let health = rig.wait_state(ModemState::Ready).await;
    assert_eq!(health.failed_sends, 2);
    rig.fail_next(1, 500);
    rig.send("+15551234567", "fails once more", false).await;
    rig.wait_state(ModemState::Degraded).await;
    // The fault is spent: after the next poll its send works, and the count starts over.
    rig.wait_state(ModemState::Ready).await;
    let (_, outcome) = rig.send("+15551234567", "works again", false).await;
    assert_eq!(outcome, JobOutcome::Sent);
    assert_eq!(rig.health.borrow().failed_sends, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_registration_degrades_and_recovers() {
    let mut rig = rig(Profile::Plain).await;
    rig.wait_state(ModemState::Ready).await;
    rig.sim
        .update_faults(|f| f.registration_lost = true)
        .unwrap();
    let (_, outcome) = rig.send("+15551234567", "no network", false).await;
    assert_eq!(
        outcome,
        JobOutcome::Failed {
            part: 1,
            error: SendError::Cms(331)
        }
    );
    let health = rig.wait_state(ModemState::Degraded).await;
    assert_eq!(health.cs, Some(Registration::Searching));
    assert!(health.last_error.unwrap().contains("331"));

    rig.sim
        .update_faults(|f| f.registration_lost = false)
        .unwrap();
    let (_, outcome) = rig.send("+15551234567", "network back", false).await;
    assert_eq!(outcome, JobOutcome::Sent);
    let health = rig.wait_state(ModemState::Ready).await;
    assert_eq!(health.cs, Some(Registration::Home));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_without_answer_ends_unknown_and_is_never_resent() {
    let mut rig = rig(Profile::Ec25).await;
    rig.wait_state(ModemState::Ready).await;
    // Longer than the 5 s result deadline: the PDU was written, the answer never came in time.
    rig.sim
        .update_faults(|f| f.slow_send = Duration::from_secs(8))
        .unwrap();
    let (_, outcome) = rig.send("+15551234567", "slow", false).await;
    assert!(
        matches!(outcome, JobOutcome::Unknown { part: 1, .. }),
        "{outcome:?}"
    );
    rig.sim
        .update_faults(|f| f.slow_send = Duration::ZERO)
        .unwrap();
    // The busy modem may not answer the probe either, so the worker may re-open it: jobs handed back
    // meanwhile are retried as dispatch would, once the health changes.
    let outcome = loop {
        match rig.send("+15551234567", "fast", false).await {
            (_, JobOutcome::NotAttempted) => guarded("health change", rig.health.changed())
                .await
                .unwrap(),
            (_, outcome) => break outcome,
        }
    };
    assert_eq!(outcome, JobOutcome::Sent);
    let slow = rig
        .sim
        .sends()
        .iter()
        .filter(|s| matches!(&s.submit.user_data, UserData::Text(t) if t == "slow"))
        .count();
    assert!(slow <= 1, "the unknown part was submitted {slow} times");
    assert_eq!(rig.health.borrow().state, ModemState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_that_arrive_while_the_port_is_away_are_swept_up() {
    // ec25 keeps reports in "SR", plain in "SM": both must be swept after the port comes back.
    for profile in [Profile::Ec25, Profile::Plain] {
        let mut rig = rig_with(
            profile,
            |s| s.report_delay = Duration::from_millis(500),
            |_| {},
        )
        .await;
        rig.wait_state(ModemState::Ready).await;
        let (_, outcome) = rig.send("+15551234567", "report me later", true).await;
        assert_eq!(outcome, JobOutcome::Sent, "{profile}");
        let Seen::PartSent { reference, .. } = rig
            .next_seen("part sent", |s| matches!(s, Seen::PartSent { .. }))
            .await
        else {
            unreachable!()
        };
        // Away for longer than the report takes: its URC is lost, the modem stores it on reboot.
        rig.sim.vanish(Duration::from_secs(2)).unwrap();
        rig.wait_state(ModemState::Offline).await;
        rig.wait_state(ModemState::Ready).await;
        let Seen::StatusReport {
            reference: reported,
            status,
        } = rig
            .next_seen("swept report", |s| matches!(s, Seen::StatusReport { .. }))
            .await
        else {
            unreachable!()
        };
        assert_eq!((reported, status), (reference, 0), "{profile}");
    }
}
