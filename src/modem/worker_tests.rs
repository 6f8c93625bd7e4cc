//! Worker behaviour against a small scripted modem over an in-memory pipe, in paused time: the ordering
//! rules (delete only after the store's ack, no duplicate after a failed delete) and start-up fallbacks,
//! which are easier to pin down here than over a pty. The full dialect/fault matrix runs against the
//! simulator in tests/modem_worker.rs.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex},
    sync::{mpsc, oneshot, watch},
};
use tokio_util::sync::CancellationToken;

use super::{
    Opener, WorkerConfig,
    job::{Clearance, JobOutcome, JobPart, ModemState, SendJob, WorkerEvent},
    session::Port,
    spawn_with_opener,
};

/// A gammu atgen SMS-DELIVER ("Test" from +48694... ), as a modem prints it.
const DELIVER: &str = "07918497483252F0040B918496445078F700007121320144744004D4F29C0E";

#[derive(Default)]
struct FakeState {
    /// Stored messages by index.
    stored: BTreeMap<u32, String>,
    /// Commands received, in order (PDUs excluded).
    log: Vec<String>,
    /// Answer this many of the first commands after `AT` with `+CME ERROR: 14`.
    busy: u32,
    /// Refuse this many `AT+CMGD` with `+CMS ERROR: 300`.
    refuse_delete: u32,
    next_reference: u8,
    /// `AT+CSMS?` service: 1 means routed messages need `AT+CNMA`.
    csms: u8,
    /// Close the line as soon as a PDU has been written (a USB reset mid-send).
    die_after_pdu: bool,
    /// Restart in place once, when this command comes (`PDU`: once a PDU has been written), as a UART
    /// modem does after a brown-out: no answer, only `RDY`, and the indications are lost.
    restart_on: Option<&'static str>,
    /// Refuse an `AT+CPMS` setting with fewer memories than this (Brovi E3372-325 wants three).
    cpms_min: usize,
    /// ... or with more than this (0: no limit); some modems refuse three.
    cpms_max: usize,
    /// Say nothing to this many first `AT`s, as a UART modem does while it finds the baud rate.
    swallow_at: u32,
    /// Numeric result codes (a saved `ATV0` profile): `0` for OK, `4` for ERROR, until `ATQ0V1`.
    numeric: bool,
    /// Answer reads in text mode until `AT+CMGF=0` (a modem that left PDU mode).
    text_mode: bool,
    /// Offer "SR" for reading, where `reports` are kept; `reading` is the memory `AT+CPMS` chose.
    offer_sr: bool,
    reports: BTreeMap<u32, String>,
    reading: String,
    /// The `AT+CNMI` setting in force, as `AT+CNMI?` tells it.
    cnmi: String,
    /// Answer `AT+CNMI?` with `ERROR`, as some modems do.
    cnmi_unreadable: bool,
    /// Refuse every `AT+CNMI=` setting, as a modem opened before its SMS stack is up does.
    cnmi_refused: bool,
}

impl FakeState {
    /// Whether `what` is the moment to restart; if so, the restart's loss of settings.
    fn restarts_on(&mut self, what: &str) -> bool {
        if self.restart_on != Some(what) {
            return false;
        }
        self.restart_on = None;
        self.cnmi = "0,0,0,0,0".into();
        true
    }

    /// The memory reads and deletes go to.
    fn read_memory(&mut self) -> &mut BTreeMap<u32, String> {
        if self.reading == "SR" {
            &mut self.reports
        } else {
            &mut self.stored
        }
    }
}

type Shared = Arc<Mutex<FakeState>>;

/// The scripted modem: answers line by line; `urcs` lets a test make it speak on its own.
async fn fake_modem(
    mut io: DuplexStream,
    state: Shared,
    log_tx: watch::Sender<usize>,
    mut urcs: mpsc::UnboundedReceiver<String>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let mut in_pdu = false;
    loop {
        tokio::select! {
            urc = urcs.recv() => match urc {
                Some(urc) => { if io.write_all(urc.as_bytes()).await.is_err() { return; } }
                None => return,
            },
            n = io.read(&mut chunk) => {
                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == b'\r' || b == 0x1a || b == 0x1b) {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    let reply = {
                        let mut s = state.lock().unwrap();
                        if in_pdu && s.die_after_pdu {
                            return;
                        }
                        if in_pdu {
                            in_pdu = false;
                            if s.restarts_on("PDU") {
                                "\r\nRDY\r\n".to_owned()
                            } else if line.last() == Some(&0x1a) {
                                s.next_reference = s.next_reference.wrapping_add(1);
                                format!("\r\n+CMGS: {}\r\n\r\nOK\r\n", s.next_reference)
                            } else {
                                "\r\nOK\r\n".to_owned()
                            }
                        } else {
                            let cmd = String::from_utf8_lossy(&line[..line.len() - 1]).trim().to_owned();
                            s.log.push(cmd.clone());
                            log_tx.send_replace(s.log.len());
                            let (reply, pdu) = if s.restarts_on(&cmd) {
                                ("\r\nRDY\r\n".to_owned(), false)
                            } else {
                                answer(&mut s, &cmd)
                            };
                            in_pdu = pdu;
                            reply
                        }
                    };
                    if io.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn answer(s: &mut FakeState, cmd: &str) -> (String, bool) {
    if cmd == "ATQ0V1" {
        s.numeric = false;
    }
    if s.numeric {
        return ("0\r".into(), false);
    }
    let ok = |body: &str| (format!("{body}\r\nOK\r\n"), false);
    if cmd != "AT" && s.busy > 0 {
        s.busy -= 1;
        return ("\r\n+CME ERROR: 14\r\n".into(), false);
    }
    if cmd == "AT+CMGF=0" {
        s.text_mode = false;
    }
    if let Some(setting) = cmd.strip_prefix("AT+CNMI=").filter(|v| *v != "?") {
        if s.cnmi_refused {
            return ("\r\n+CMS ERROR: 500\r\n".into(), false);
        }
        s.cnmi = setting.to_owned();
    }
    if cmd == "AT+CNMI?" && s.cnmi_unreadable {
        return ("\r\nERROR\r\n".into(), false);
    }
    if cmd == "AT+CNMI?" {
        return (format!("\r\n+CNMI: {}\r\nOK\r\n", s.cnmi), false);
    }
    if s.text_mode
        && let Some(i) = cmd
            .strip_prefix("AT+CMGR=")
            .and_then(|i| i.parse::<u32>().ok())
        && s.stored.contains_key(&i)
    {
        let text =
            "\r\n+CMGR: \"REC UNREAD\",\"+393312345678\",,\"16/05/10,10:33:31+08\"\r\nTest\r\n";
        return (format!("{text}OK\r\n"), false);
    }
    if cmd == "AT" && s.swallow_at > 0 {
        s.swallow_at -= 1;
        return (String::new(), false);
    }
    if let Some(memories) = cmd.strip_prefix("AT+CPMS=").filter(|m| *m != "?") {
        let count = memories.split(',').count();
        if count < s.cpms_min || (s.cpms_max > 0 && count > s.cpms_max) {
            return ("\r\nERROR\r\n".into(), false);
        }
        s.reading = memories
            .split(',')
            .next()
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned();
    }
    match cmd {
        "AT+CPIN?" => ok("\r\n+CPIN: READY\r\n"),
        "AT+CSMS?" => ok(&format!("\r\n+CSMS: {},1,1,1\r\n", s.csms)),
        "AT+CNMI=?" => ok("\r\n+CNMI: (0-2),(0-3),(0-3),(0-2),(0,1)\r\n"),
        "AT+CPMS=?" if s.offer_sr => ok("\r\n+CPMS: (\"SM\",\"SR\"),(\"SM\"),(\"SM\")\r\n"),
        "AT+CPMS=?" => ok("\r\n+CPMS: (\"SM\"),(\"SM\"),(\"SM\")\r\n"),
        "AT+CGSN" => ok("\r\n861234050123456\r\n"),
        "AT+CSQ" => ok("\r\n+CSQ: 17,99\r\n"),
        "AT+CREG?" => ok("\r\n+CREG: 0,1\r\n"),
        "AT+CEREG?" => ok("\r\n+CEREG: 0,1\r\n"),
        "AT+COPS?" => ok("\r\n+COPS: 0,0,\"FAKE\",7\r\n"),
        "AT+CMGL=4" => {
            let list: String = s
                .read_memory()
                .iter()
                .map(|(i, pdu)| format!("\r\n+CMGL: {i},0,,23\r\n{pdu}"))
                .collect();
            ok(&list)
        }
        _ => {
            if let Some(i) = cmd
                .strip_prefix("AT+CMGR=")
                .and_then(|i| i.parse::<u32>().ok())
            {
                return match s.read_memory().get(&i) {
                    Some(pdu) => ok(&format!("\r\n+CMGR: 0,,23\r\n{pdu}")),
                    None => ("\r\n+CMS ERROR: 321\r\n".into(), false),
                };
            }
            if let Some(i) = cmd
                .strip_prefix("AT+CMGD=")
                .and_then(|i| i.parse::<u32>().ok())
            {
                if s.refuse_delete > 0 {
                    s.refuse_delete -= 1;
                    return ("\r\n+CMS ERROR: 300\r\n".into(), false);
                }
                s.read_memory().remove(&i);
                return ok("");
            }
            if cmd.starts_with("AT+CMGS=") {
                return ("\r\n> ".into(), true);
            }
            if cmd.starts_with("AT+CGMI")
                || cmd.starts_with("AT+CGMM")
                || cmd.starts_with("AT+CGMR")
            {
                return ok("\r\nFAKE");
            }
            if [
                "AT",
                "ATE0",
                "AT+CMEE=1",
                "AT+CMGF=0",
                "AT+COPS=3,0",
                "AT+CMMS=2",
            ]
            .contains(&cmd)
                || cmd.starts_with("AT+CNMI=")
                || cmd.starts_with("AT+CPMS=")
            {
                return ok("");
            }
            ("\r\nERROR\r\n".into(), false)
        }
    }
}

struct Rig {
    state: Shared,
    log: watch::Receiver<usize>,
    urcs: mpsc::UnboundedSender<String>,
    events: mpsc::Receiver<WorkerEvent>,
    health: watch::Receiver<super::job::ModemHealth>,
    handle: super::WorkerHandle,
    cancel: CancellationToken,
}

fn rig(state: FakeState) -> Rig {
    let state = Arc::new(Mutex::new(state));
    let (log_tx, log) = watch::channel(0);
    let (urcs, urc_rx) = mpsc::unbounded_channel();
    let mut pieces = Some((state.clone(), log_tx, urc_rx));
    let opener: Opener = Box::new(move || {
        let (ours, theirs) = duplex(8192);
        let (state, log_tx, urc_rx) = pieces
            .take()
            .ok_or_else(|| std::io::Error::other("the fake modem opens once"))?;
        tokio::spawn(fake_modem(theirs, state, log_tx, urc_rx));
        Ok(Box::new(ours) as Box<dyn Port>)
    });
    let mut cfg = WorkerConfig::new("fake", "/dev/null");
    cfg.sweep_interval = Duration::from_secs(60);
    let (tx, events) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let (handle, _task) = spawn_with_opener(cfg, tx, cancel.clone(), opener);
    let health = handle.health();
    Rig {
        state,
        log,
        urcs,
        events,
        health,
        handle,
        cancel,
    }
}

/// A rig whose worker has finished its start-up conversation and reports `Ready`.
async fn ready_rig() -> Rig {
    ready_rig_with(FakeState::default()).await
}

/// [`ready_rig`] with a fake modem of `state`'s quirks.
async fn ready_rig_with(state: FakeState) -> Rig {
    let mut rig = rig(state);
    rig.health
        .wait_for(|h| h.state == ModemState::Ready)
        .await
        .unwrap();
    rig
}

/// [`ready_rig_with`] for a modem that takes some coaxing: ready within two (virtual) minutes, or fail.
async fn ready_within_two_minutes(state: FakeState) -> Rig {
    tokio::time::timeout(Duration::from_secs(120), ready_rig_with(state))
        .await
        .expect("never ready")
}

impl Rig {
    /// Hands the worker a one-part job and returns its `Submitting` ack and the job's outcome.
    async fn one_part_submitting(
        &mut self,
    ) -> (oneshot::Sender<Clearance>, oneshot::Receiver<JobOutcome>) {
        let (done, outcome) = oneshot::channel();
        self.handle.send(one_part_job(done)).await;
        let WorkerEvent::Submitting { ack, .. } = self.event().await else {
            panic!("expected submitting")
        };
        (ack, outcome)
    }

    /// The next event that is not a health update.
    async fn event(&mut self) -> WorkerEvent {
        loop {
            match self.events.recv().await.expect("worker stopped") {
                WorkerEvent::Health { .. } => continue,
                other => return other,
            }
        }
    }

    async fn wait_log(&mut self, cmd: &str) {
        self.wait_logged(cmd, 1).await;
    }

    /// Until the fake modem has received `cmd` at least `times` times.
    async fn wait_logged(&mut self, cmd: &str, times: usize) {
        let state = self.state.clone();
        self.log
            .wait_for(|_| count(&state, cmd) >= times)
            .await
            .unwrap();
    }

    fn logged(&self, cmd: &str) -> usize {
        count(&self.state, cmd)
    }
}

fn count(state: &Shared, cmd: &str) -> usize {
    state
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|c| *c == cmd)
        .count()
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[tokio::test(start_paused = true)]
async fn sim_busy_at_start_is_waited_out() {
    let mut rig = rig(FakeState {
        busy: 4,
        ..FakeState::default()
    });
    let h = rig
        .health
        .wait_for(|h| h.state == ModemState::Ready)
        .await
        .unwrap()
        .clone();
    assert_eq!(h.identity.imei.as_deref(), Some("861234050123456"));
    assert_eq!((h.signal, h.operator.as_deref()), (Some(17), Some("FAKE")));
    // All four busy answers went to ATE0, retried until it took; nothing after it saw one.
    assert_eq!(rig.logged("ATE0"), 5);
    assert_eq!(rig.logged("AT+CMEE=1"), 1);
    assert_eq!(rig.logged("AT+CMGF=0"), 1);
    assert_eq!(rig.logged("AT+CNMI=2,1,2,1,0"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stored_message_is_deleted_only_after_the_store_acks() {
    let stored = BTreeMap::from([(3, DELIVER.to_owned())]);
    let mut rig = rig(FakeState {
        stored,
        ..FakeState::default()
    });
    let WorkerEvent::Inbound {
        pdu_hex,
        decoded,
        ack,
        ..
    } = rig.event().await
    else {
        panic!("expected inbound")
    };
    assert_eq!(pdu_hex, DELIVER);
    assert!(decoded.is_ok());
    // Time passes; without the ack, nothing is deleted.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(rig.logged("AT+CMGD=3"), 0);
    ack.send(()).unwrap();
    rig.wait_log("AT+CMGD=3").await;
    assert!(rig.state.lock().unwrap().stored.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refused_delete_is_retried_without_handing_the_message_over_twice() {
    let stored = BTreeMap::from([(1, DELIVER.to_owned())]);
    let mut rig = rig(FakeState {
        stored,
        refuse_delete: 1,
        ..FakeState::default()
    });
    let WorkerEvent::Inbound { ack, .. } = rig.event().await else {
        panic!("expected inbound")
    };
    ack.send(()).unwrap();
    rig.wait_log("AT+CMGD=1").await;
    // The next sweep (60 s later) lists it again: it is deleted again, not handed over again.
    let state = rig.state.clone();
    rig.log
        .wait_for(|_| state.lock().unwrap().stored.is_empty())
        .await
        .unwrap();
    assert_eq!(rig.logged("AT+CMGD=1"), 2);
    // A new message announced by +CMTI is the next event: the old one never came back.
    rig.state
        .lock()
        .unwrap()
        .stored
        .insert(2, DELIVER.replace("C0E", "C0F"));
    rig.urcs.send("\r\n+CMTI: \"SM\",2\r\n".into()).unwrap();
    let WorkerEvent::Inbound { pdu_hex, ack, .. } = rig.event().await else {
        panic!("expected inbound")
    };
    assert!(pdu_hex.ends_with("C0F"));
    ack.send(()).unwrap();
    rig.wait_log("AT+CMGD=2").await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_submitting_ack_means_nothing_is_sent() {
    let mut rig = ready_rig().await;
    let (done, outcome) = oneshot::channel();
    let part = JobPart {
        part: 1,
        tpdu_length: 23,
        pdu_hex: format!("00{}", &DELIVER[16..]),
    };
    let job = SendJob {
        message_id: uuid::Uuid::now_v7(),
        recipient: "+15551234567".into(),
        parts: vec![part.clone(), JobPart { part: 2, ..part }],
        more_waiting: false,
        send_by: None,
        done,
    };
    rig.handle.send(job).await;
    let WorkerEvent::Submitting { part: 1, ack, .. } = rig.event().await else {
        panic!("expected submitting")
    };
    ack.send(Clearance::Write).unwrap();
    let WorkerEvent::PartSent {
        part: 1,
        reference: 1,
        ..
    } = rig.event().await
    else {
        panic!("expected sent")
    };
    let WorkerEvent::Submitting { part: 2, ack, .. } = rig.event().await else {
        panic!("expected submitting")
    };
    drop(ack);
    assert_eq!(outcome.await.unwrap(), JobOutcome::NotAttempted);
    let cmgs = rig
        .state
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|c| c.starts_with("AT+CMGS="))
        .count();
    assert_eq!(cmgs, 1, "part 2 was never offered to the modem");
    assert_eq!(rig.logged("AT+CMMS=2"), 1);
}

/// A worker stopped (a reload removing its modem, SIGTERM) between two parts of a message still sends
/// the rest: the debtor gets the whole message, from one number.
#[tokio::test(start_paused = true)]
async fn a_worker_stopped_between_two_parts_sends_the_rest_first() {
    let mut rig = ready_rig().await;
    let (done, outcome) = oneshot::channel();
    let mut job = one_part_job(done);
    job.parts.push(JobPart {
        part: 2,
        ..job.parts[0].clone()
    });
    rig.handle.send(job).await;
    let WorkerEvent::Submitting { part: 1, ack, .. } = rig.event().await else {
        panic!("expected submitting")
    };
    ack.send(Clearance::Write).unwrap();
    assert!(matches!(
        rig.event().await,
        WorkerEvent::PartSent { part: 1, .. }
    ));
    let WorkerEvent::Submitting { part: 2, ack, .. } = rig.event().await else {
        panic!("expected submitting")
    };
    rig.cancel.cancel();
    ack.send(Clearance::Write).unwrap();
    assert!(matches!(
        rig.event().await,
        WorkerEvent::PartSent { part: 2, .. }
    ));
    assert_eq!(outcome.await.unwrap(), JobOutcome::Sent);
    assert_eq!(rig.logged("AT+CMGS=23"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_paused_worker_hands_jobs_back_until_resumed() {
    let mut rig = ready_rig().await;
    rig.handle.pause();
    // Shown paused at once, before the worker has said so.
    assert_eq!(rig.handle.health().borrow().state, ModemState::Ready);
    assert_eq!(rig.handle.shown_health().state, ModemState::Paused);
    rig.health
        .wait_for(|h| h.state == ModemState::Paused)
        .await
        .unwrap();
    let (done, outcome) = oneshot::channel();
    rig.handle.send(one_part_job(done)).await;
    assert_eq!(outcome.await.unwrap(), JobOutcome::NotAttempted);
    rig.handle.resume();
    assert_eq!(rig.handle.shown_health().state, ModemState::Ready);
    rig.health
        .wait_for(|h| h.state == ModemState::Ready)
        .await
        .unwrap();
    let (ack, outcome) = rig.one_part_submitting().await;
    ack.send(Clearance::Write).unwrap();
    assert_eq!(outcome.await.unwrap(), JobOutcome::Sent);
}

/// A modem paused in the middle of a send stops looking ready to the dispatcher at once, not when the
/// worker gets to report it.
#[tokio::test(start_paused = true)]
async fn a_pause_makes_a_busy_modem_unready_at_once() {
    let mut rig = ready_rig().await;
    let mut ready = rig.handle.readiness();
    assert!(*ready.borrow());
    let (ack, outcome) = rig.one_part_submitting().await;
    rig.handle.pause();
    // The worker waits for its ack: nothing else moves, so a timeout here means readiness waited for it.
    tokio::time::timeout(Duration::from_secs(1), ready.wait_for(|r| !*r))
        .await
        .expect("still ready while paused")
        .unwrap();
    assert_eq!(rig.health.borrow().state, ModemState::Ready);
    ack.send(Clearance::Write).unwrap();
    assert_eq!(outcome.await.unwrap(), JobOutcome::Sent);
}

#[tokio::test(start_paused = true)]
async fn a_withdrawn_job_writes_nothing_and_says_why() {
    let mut rig = ready_rig().await;
    let (ack, outcome) = rig.one_part_submitting().await;
    ack.send(Clearance::Withdraw("the recipient opted out".into()))
        .unwrap();
    assert_eq!(
        outcome.await.unwrap(),
        JobOutcome::Withdrawn {
            reason: "the recipient opted out".into()
        }
    );
    assert_eq!(rig.logged("AT+CMGS="), 0);
}

fn one_part_job(done: oneshot::Sender<JobOutcome>) -> SendJob {
    SendJob {
        message_id: uuid::Uuid::now_v7(),
        recipient: "+15551234567".into(),
        parts: vec![JobPart {
            part: 1,
            tpdu_length: 23,
            pdu_hex: format!("00{}", &DELIVER[16..]),
        }],
        more_waiting: false,
        send_by: None,
        done,
    }
}

#[tokio::test(start_paused = true)]
async fn a_routed_message_is_acknowledged_only_after_it_is_stored() {
    let mut rig = ready_rig_with(FakeState {
        csms: 1,
        ..FakeState::default()
    })
    .await;
    rig.urcs
        .send(format!("\r\n+CMT: ,23\r\n{DELIVER}\r\n"))
        .unwrap();
    let WorkerEvent::Inbound { pdu_hex, ack, .. } = rig.event().await else {
        panic!("expected inbound")
    };
    assert_eq!(pdu_hex, DELIVER);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        rig.logged("AT+CNMA"),
        0,
        "acknowledged before the store had it"
    );
    ack.send(()).unwrap();
    rig.wait_log("AT+CNMA").await;
}

/// A routed report that cannot be decoded is acknowledged and not handed over: stored, it showed as an
/// empty reply from no number.
#[tokio::test(start_paused = true)]
async fn an_undecodable_routed_report_is_acknowledged_not_stored_as_a_reply() {
    let mut rig = ready_rig_with(FakeState {
        csms: 1,
        ..FakeState::default()
    })
    .await;
    rig.urcs
        .send("\r\n+CDS: 6\r\n0006D60B91\r\n".into())
        .unwrap();
    rig.wait_log("AT+CNMA").await;
    // A message after it is the next event: nothing was handed over for the report.
    rig.urcs
        .send(format!("\r\n+CMT: ,23\r\n{DELIVER}\r\n"))
        .unwrap();
    let WorkerEvent::Inbound { pdu_hex, .. } = rig.event().await else {
        panic!("expected inbound")
    };
    assert_eq!(pdu_hex, DELIVER);
}

#[tokio::test(start_paused = true)]
async fn a_port_lost_after_the_pdu_was_written_ends_unknown() {
    let mut rig = ready_rig_with(FakeState {
        die_after_pdu: true,
        ..FakeState::default()
    })
    .await;
    let (ack, outcome) = rig.one_part_submitting().await;
    ack.send(Clearance::Write).unwrap();
    assert!(matches!(
        outcome.await.unwrap(),
        JobOutcome::Unknown { part: 1, .. }
    ));
    rig.health
        .wait_for(|h| h.state == ModemState::Offline)
        .await
        .unwrap();
    // Offline reads offline even when paused: the unplugged modem is what the admin must act on.
    rig.handle.pause();
    assert_eq!(rig.handle.shown_health().state, ModemState::Offline);
    rig.handle.resume();
    // Offline: the next job is handed back untouched.
    let (done, outcome) = oneshot::channel();
    rig.handle.send(one_part_job(done)).await;
    assert_eq!(outcome.await.unwrap(), JobOutcome::NotAttempted);
}

/// A modem that restarts while a PDU is out will never answer `AT+CMGS`: its `RDY` ends the wait soon
/// after (not at the two-minute result timeout), the part is unknown (the network may have it), and the modem
/// is initialised again on the same port.
#[tokio::test(start_paused = true)]
async fn a_restart_during_a_send_ends_it_at_once_and_initialises_again() {
    let mut rig = ready_rig_with(FakeState {
        restart_on: Some("PDU"),
        ..FakeState::default()
    })
    .await;
    let initialised = rig.logged("ATE0");
    let start = tokio::time::Instant::now();
    let (ack, outcome) = rig.one_part_submitting().await;
    ack.send(Clearance::Write).unwrap();
    let JobOutcome::Unknown { part: 1, reason } = outcome.await.unwrap() else {
        panic!("expected unknown")
    };
    assert!(reason.contains("restarted"), "{reason}");
    rig.wait_logged("ATE0", initialised + 1).await;
    rig.health
        .wait_for(|h| h.state == ModemState::Ready)
        .await
        .unwrap();
    // Virtual time: it moves only while every task waits, so this measures the waits, not the machine.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "waited {:?}",
        start.elapsed()
    );
    assert_ne!(rig.state.lock().unwrap().cnmi, "0,0,0,0,0");
    let (ack, outcome) = rig.one_part_submitting().await;
    ack.send(Clearance::Write).unwrap();
    assert_eq!(outcome.await.unwrap(), JobOutcome::Sent);
}

/// A modem that restarts while it is being initialised (opened as it powers up) is initialised again from
/// the start, at once, and is never reported offline for it.
#[tokio::test(start_paused = true)]
async fn a_restart_during_initialisation_starts_it_over() {
    let mut rig = rig(FakeState {
        restart_on: Some("AT+CMGF=0"),
        ..FakeState::default()
    });
    loop {
        match rig.events.recv().await.expect("worker stopped") {
            WorkerEvent::Health { health, .. } => match health.state {
                ModemState::Ready => break,
                ModemState::Offline => panic!("reported offline: {:?}", health.last_error),
                _ => {}
            },
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rig.logged("ATE0"), 2);
    assert_ne!(rig.state.lock().unwrap().cnmi, "0,0,0,0,0");
}

/// A modem that takes `AT+CPMS` only with three memories: a message announced in another memory is read
/// there with three, and the usual memory is restored with three.
#[tokio::test(start_paused = true)]
async fn a_modem_that_wants_three_memories_gets_three_when_reading_another() {
    let mut rig = ready_rig_with(FakeState {
        cpms_min: 3,
        ..FakeState::default()
    })
    .await;
    rig.state.lock().unwrap().stored.insert(3, DELIVER.into());
    rig.urcs.send("\r\n+CMTI: \"ME\",3\r\n".into()).unwrap();
    let WorkerEvent::Inbound { ack, .. } = rig.event().await else {
        panic!("expected inbound")
    };
    ack.send(()).unwrap();
    rig.wait_log("AT+CMGD=3").await;
    rig.wait_log("AT+CPMS=\"SM\",\"SM\",\"SM\"").await;
    assert_eq!(rig.logged("AT+CPMS=\"ME\",\"SM\",\"SM\""), 1);
    let log = rig.state.lock().unwrap().log.clone();
    let read = log.iter().position(|c| c == "AT+CMGR=3").unwrap();
    assert_eq!(log[read - 1], "AT+CPMS=\"ME\",\"SM\",\"SM\"", "{log:#?}");
    assert_eq!(
        log.last().unwrap(),
        "AT+CPMS=\"SM\",\"SM\",\"SM\"",
        "{log:#?}"
    );
}

/// A routed message that arrives while a long message goes out is stored and acknowledged between its
/// parts, not after the last one: the network would give up waiting for AT+CNMA.
#[tokio::test(start_paused = true)]
async fn a_routed_message_during_a_multipart_send_is_acknowledged_between_parts() {
    let mut rig = ready_rig_with(FakeState {
        csms: 1,
        ..FakeState::default()
    })
    .await;
    let (done, outcome) = oneshot::channel();
    let part = |part| JobPart {
        part,
        tpdu_length: 23,
        pdu_hex: format!("00{}", &DELIVER[16..]),
    };
    rig.handle
        .send(SendJob {
            message_id: uuid::Uuid::now_v7(),
            recipient: "+15551234567".into(),
            parts: vec![part(1), part(2), part(3)],
            more_waiting: false,
            send_by: None,
            done,
        })
        .await;
    for part in 1..=2 {
        let ack = loop {
            match rig.event().await {
                WorkerEvent::Submitting { ack, .. } => break ack,
                WorkerEvent::PartSent { .. } => continue,
                other => panic!("part {part}: unexpected {other:?}"),
            }
        };
        if part == 2 {
            // Read by the worker while it sends part 2.
            rig.urcs
                .send(format!("\r\n+CMT: ,23\r\n{DELIVER}\r\n"))
                .unwrap();
        }
        ack.send(Clearance::Write).unwrap();
    }
    let stored = loop {
        match rig.event().await {
            WorkerEvent::PartSent { .. } => continue,
            WorkerEvent::Inbound { ack, .. } => break ack,
            other => panic!("expected the routed message before part 3, got {other:?}"),
        }
    };
    stored.send(()).unwrap();
    rig.wait_log("AT+CNMA").await;
    let WorkerEvent::Submitting { ack, .. } = rig.event().await else {
        panic!("expected part 3")
    };
    ack.send(Clearance::Write).unwrap();
    assert_eq!(outcome.await.unwrap(), JobOutcome::Sent);
    let log = rig.state.lock().unwrap().log.clone();
    let cnma = log.iter().position(|c| c == "AT+CNMA").unwrap();
    let sends: Vec<usize> = (0..log.len())
        .filter(|&i| log[i].starts_with("AT+CMGS="))
        .collect();
    assert!(sends[1] < cnma && cnma < sends[2], "{log:#?}");
}

/// A UART modem that autobauds swallows the first `AT`: the worker asks again and starts.
#[tokio::test(start_paused = true)]
async fn a_modem_that_swallows_the_first_at_is_asked_again() {
    let rig = ready_within_two_minutes(FakeState {
        swallow_at: 1,
        ..FakeState::default()
    })
    .await;
    assert!(rig.logged("AT") >= 2);
}

/// A modem whose saved profile answers in numbers (`ATV0`: `0` for OK) is switched to words and starts.
#[tokio::test(start_paused = true)]
async fn a_modem_with_numeric_result_codes_is_switched_to_words() {
    let rig = ready_within_two_minutes(FakeState {
        numeric: true,
        ..FakeState::default()
    })
    .await;
    assert_eq!(rig.logged("ATQ0V1"), 1);
}

/// A modem that refuses three memories in `AT+CPMS` is set with two, and read with two.
#[tokio::test(start_paused = true)]
async fn a_modem_that_refuses_three_memories_is_set_and_read_with_two() {
    let mut rig = ready_rig_with(FakeState {
        cpms_max: 2,
        ..FakeState::default()
    })
    .await;
    assert_eq!(rig.logged("AT+CPMS=\"SM\",\"SM\",\"SM\""), 1, "tried first");
    assert!(rig.logged("AT+CPMS=\"SM\",\"SM\"") >= 1);
    rig.state.lock().unwrap().stored.insert(4, DELIVER.into());
    rig.urcs.send("\r\n+CMTI: \"ME\",4\r\n".into()).unwrap();
    let WorkerEvent::Inbound { ack, .. } = rig.event().await else {
        panic!("expected inbound")
    };
    ack.send(()).unwrap();
    rig.wait_log("AT+CMGD=4").await;
    assert_eq!(rig.logged("AT+CPMS=\"ME\",\"SM\""), 1);
}

/// A modem that answers a read in text mode (it left PDU mode) is set back to PDU mode and read again, so
/// the message is handed over and its slot freed rather than held for good.
#[tokio::test(start_paused = true)]
async fn a_read_answered_in_text_mode_sets_pdu_mode_again_and_reads_once_more() {
    let mut rig = ready_rig().await;
    {
        let mut state = rig.state.lock().unwrap();
        state.stored.insert(5, DELIVER.into());
        state.text_mode = true;
    }
    let modes_set = rig.logged("AT+CMGF=0");
    rig.urcs.send("\r\n+CMTI: \"SM\",5\r\n".into()).unwrap();
    let WorkerEvent::Inbound { pdu_hex, ack, .. } = rig.event().await else {
        panic!("expected inbound")
    };
    assert_eq!(pdu_hex, DELIVER);
    ack.send(()).unwrap();
    rig.wait_log("AT+CMGD=5").await;
    assert_eq!(rig.logged("AT+CMGF=0"), modes_set + 1);
    assert_eq!(rig.logged("AT+CMGR=5"), 2);
}

/// A modem that keeps status reports in "SR" but announces them as `+CDSI: "SM",n`: the report is read
/// from "SR" at once, not left to the next sweep.
#[tokio::test(start_paused = true)]
async fn a_report_announced_in_the_wrong_memory_is_read_from_sr_at_once() {
    const REPORT: &str = "079124603050020006E80C91666666666666909070618422809090706184628000";
    let mut rig = ready_rig_with(FakeState {
        offer_sr: true,
        ..FakeState::default()
    })
    .await;
    // The start-up sweep reads SR and then selects SM again (its second selection after initialisation).
    rig.wait_logged("AT+CPMS=\"SM\",\"SM\",\"SM\"", 2).await;
    let swept = rig.logged("AT+CPMS=\"SR\",\"SM\",\"SM\"");
    assert_eq!(swept, 1, "SR is swept at start");
    rig.state.lock().unwrap().reports.insert(2, REPORT.into());
    let announced = tokio::time::Instant::now();
    rig.urcs.send("\r\n+CDSI: \"SM\",2\r\n".into()).unwrap();
    let WorkerEvent::StatusReport { .. } = rig.event().await else {
        panic!("expected the status report")
    };
    // Paused time: what passed is the worker's own waiting, and the sweep would come a minute later.
    assert!(
        announced.elapsed() < Duration::from_secs(30),
        "{:?}",
        announced.elapsed()
    );
    rig.wait_log("AT+CMGD=2").await;
    assert!(rig.state.lock().unwrap().reports.is_empty());
    assert_eq!(rig.logged("AT+CPMS=\"SR\",\"SM\",\"SM\""), swept + 1);
}

/// A modem that turned its routing of reports off on its own (after a routed report it thinks went
/// unacknowledged) has the indications set again at the next health poll, and not before it changed them.
#[tokio::test(start_paused = true)]
async fn indications_the_modem_dropped_are_set_again_at_the_health_poll() {
    let mut rig = ready_rig().await;
    let chosen = rig.state.lock().unwrap().cnmi.clone();
    let set = format!("AT+CNMI={chosen}");
    assert_eq!(rig.logged(&set), 1);
    // A poll with the indications as chosen changes nothing.
    tokio::time::sleep(Duration::from_secs(61)).await;
    rig.wait_log("AT+CNMI?").await;
    assert_eq!(rig.logged(&set), 1);
    // The modem drops routed reports (ds 0); the next poll sets them again.
    let mut dropped: Vec<&str> = chosen.split(',').collect();
    dropped[3] = "0";
    rig.state.lock().unwrap().cnmi = dropped.join(",");
    rig.wait_logged(&set, 2).await;
    assert_eq!(rig.state.lock().unwrap().cnmi, chosen);
}

/// A modem that will not tell its indications has them set again at every health poll.
#[tokio::test(start_paused = true)]
async fn indications_a_modem_will_not_tell_are_set_again_at_every_health_poll() {
    let mut rig = ready_rig_with(FakeState {
        cnmi_unreadable: true,
        ..FakeState::default()
    })
    .await;
    let set = format!("AT+CNMI={}", rig.state.lock().unwrap().cnmi);
    assert_eq!(rig.logged(&set), 1);
    for polls in 1..=2 {
        tokio::time::sleep(Duration::from_secs(61)).await;
        // Virtual seconds: well before the next poll.
        tokio::time::timeout(Duration::from_secs(30), rig.wait_logged(&set, 1 + polls))
            .await
            .expect("not set again by this poll");
        assert_eq!(rig.logged("AT+CNMI?"), polls);
    }
}

/// A modem that refused every indication setting at start (its SMS stack not up yet) is asked again at
/// the next health poll, and what arrived meanwhile is swept at once.
#[tokio::test(start_paused = true)]
async fn indications_refused_at_start_are_asked_for_again_and_followed_by_a_sweep() {
    let mut rig = ready_rig_with(FakeState {
        cnmi_refused: true,
        ..FakeState::default()
    })
    .await;
    assert_eq!(rig.state.lock().unwrap().cnmi, "", "nothing was accepted");
    rig.state.lock().unwrap().cnmi_refused = false;
    tokio::time::sleep(Duration::from_secs(61)).await;
    tokio::time::timeout(Duration::from_secs(30), rig.wait_logged("AT+CMGL=4", 2))
        .await
        .expect("no sweep after the indications were set");
    let state = rig.state.lock().unwrap();
    assert!(!state.cnmi.is_empty(), "indications set at the poll");
    let set = state
        .log
        .iter()
        .rposition(|c| *c == format!("AT+CNMI={}", state.cnmi))
        .unwrap();
    let next: Vec<&str> = state.log[set + 1..]
        .iter()
        .map(String::as_str)
        .take(3)
        .collect();
    assert!(next.contains(&"AT+CMGL=4"), "{:#?}", state.log);
}

/// A SIM that resets on its own says so (`+CPIN: SIM PIN`, `+CPIN: NOT READY`): the modem is initialised
/// again, which reads the SIM state and enters the PIN, rather than failing every send with "SIM PIN
/// required". `+CPIN: READY` printed as the modem came up is not taken for a reset.
#[tokio::test(start_paused = true)]
async fn a_sim_that_resets_on_its_own_has_the_modem_initialised_again() {
    let mut rig = ready_rig_with(FakeState::default()).await;
    let asked = rig.logged("AT+CPIN?");
    rig.urcs.send("\r\n+CPIN: READY\r\n".into()).unwrap();
    rig.urcs.send("\r\n+CPIN: NOT READY\r\n".into()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        rig.wait_logged("AT+CPIN?", asked + 1),
    )
    .await
    .expect("not initialised again");
    rig.health
        .wait_for(|h| h.state == ModemState::Ready)
        .await
        .unwrap();
    assert_eq!(rig.logged("AT+CPIN?"), asked + 1, "one new initialisation");
}
