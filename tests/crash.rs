//! Crash safety of the real binary (issue 4): `modemgate serve` with four modems simulated in a separate
//! `modemgate simulate` process, 1,000 accepted messages, SIGKILL mid-run, a restart on the same database,
//! and an audit from both sides: the simulators' send logs (what the "network" got) and the API (what the
//! gateway believes). Every accepted message must have gone out exactly once or be `unknown` (at most one
//! per modem: the send in flight at the kill), and none may be lost or sent twice.
//!
//! The simulators outlive the daemon as real modems would; the kill and the restart are synchronised on
//! what the daemon announces as it happens (its readiness notice to systemd, its webhooks as messages are
//! sent or settled, its log as modems come up), never on sleeps or polls.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Http, TOKEN, WEBHOOK_SECRET, WebhookReceiver};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;

const MODEMS: usize = 4;
const MESSAGES: usize = 1000;
const BATCH: usize = 250;
/// Sends seen by the simulators before the kill: far enough in that every modem is busy, far enough from
/// the end that the restarted daemon has most of the queue left to send.
const KILL_AFTER: usize = 300;
/// Bound on every wait; the whole test takes a few seconds on an idle box.
const DEADLINE: Duration = Duration::from_secs(40);

/// A child process that is killed (and reaped) when the test ends, whether it passes or panics.
struct Reaped(Child);

impl Reaped {
    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.0.id()).unwrap())
    }

    /// SIGKILL: no shutdown path runs, exactly like a power cut or the OOM killer.
    fn sigkill(mut self) {
        kill(self.pid(), Signal::SIGKILL).unwrap();
        let status = self.0.wait().unwrap();
        assert!(!status.success(), "the daemon should have died by SIGKILL");
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_modemgate")
}

/// `modemgate simulate` with links DIR/modem0..; returns the process, its stdout (kept open so it never
/// writes into a closed pipe) and the control API's address.
fn start_simulators(dir: &Path, modems: usize) -> (Reaped, BufReader<ChildStdout>, SocketAddr) {
    let log = std::fs::File::create(dir.join("simulate.log")).unwrap();
    let mut child = Command::new(binary())
        .args(["simulate", "--modems", &modems.to_string(), "--dir"])
        .arg(dir.join("sims"))
        .args(["--send-delay", "0.01", "--send-jitter", "0.02"])
        .args(["--report-delay", "0.05", "--control", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let sims = Reaped(child);
    let mut line = String::new();
    for i in 0..modems {
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(
            Path::new(line.trim_end()),
            dir.join("sims").join(format!("modem{i}")),
            "simulate printed an unexpected device path"
        );
    }
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let control = line
        .trim_end()
        .strip_prefix("control http://")
        .unwrap_or_else(|| panic!("no control address from simulate: {line:?}"))
        .parse()
        .unwrap();
    (sims, stdout, control)
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The daemon's config: `modems` simulated modems and, if given, a webhook for every event.
fn write_config(dir: &Path, listen: SocketAddr, modems: usize, webhook: Option<&str>) -> PathBuf {
    let mut config = format!(
        r#"
[server]
listen = "{listen}"
default_region = "US"
[storage]
path = "{db}"
[[api_keys]]
name = "cms"
token = "{TOKEN}"
scopes = ["admin"]
[quiet_hours]
enabled = false
[logging]
level = "info"
"#,
        db = dir.join("gw.db").display()
    );
    for i in 0..modems {
        config.push_str(&format!(
            "[[modems]]\nid = \"m{i}\"\ndevice = \"{}\"\nrate = \"100/s\"\n",
            dir.join("sims").join(format!("modem{i}")).display()
        ));
    }
    if let Some(url) = webhook {
        config.push_str(&format!(
            "[[webhooks]]\nurl = \"{url}\"\nsecret = \"{WEBHOOK_SECRET}\"\n"
        ));
    }
    let path = dir.join("modemgate.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// `modemgate serve` as a child: its log (stderr) copied line by line to `dir/serve-RUN.log` and handed to
/// the test as it is written, and its notices to systemd received on a socket of the test's
/// (`NOTIFY_SOCKET`), as systemd would.
struct Daemon {
    process: Reaped,
    lines: mpsc::UnboundedReceiver<String>,
    /// Lines taken in while waiting for something else, for [`Daemon::next_line`].
    held: VecDeque<String>,
    notices: UnixDatagram,
}

impl Daemon {
    fn start(dir: &Path, config: &Path, run: u32) -> Daemon {
        let socket = dir.join(format!("notify-{run}.sock"));
        let notices = UnixDatagram::bind(&socket).unwrap();
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env("NOTIFY_SOCKET", &socket)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut log = std::fs::File::create(dir.join(format!("serve-{run}.log"))).unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        // Ends when the daemon's stderr closes, that is when it exits: the channel then says so.
        std::thread::spawn(move || {
            use std::io::Write;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                let _ = tx.send(line);
            }
        });
        Daemon {
            process: Reaped(child),
            lines,
            held: Default::default(),
            notices,
        }
    }

    /// The daemon's next log line; panics if it exits first or writes nothing until the deadline.
    async fn next_line(&mut self, dir: &Path) -> String {
        if let Some(line) = self.held.pop_front() {
            return line;
        }
        match tokio::time::timeout(DEADLINE, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "the daemon exited ({:?})\n{}",
                self.process.0.try_wait(),
                logs(dir)
            ),
            Err(_) => panic!("the daemon logged nothing for {DEADLINE:?}\n{}", logs(dir)),
        }
    }

    /// Until the daemon tells systemd it is ready (the API listens, the queue is loaded); its exit
    /// first fails the test.
    async fn ready(&mut self, dir: &Path) {
        let mut notice = [0u8; 4096];
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                tokio::select! {
                    received = self.notices.recv(&mut notice) => {
                        let n = received.unwrap();
                        if String::from_utf8_lossy(&notice[..n]).lines().any(|l| l == "READY=1") {
                            return;
                        }
                    }
                    line = self.lines.recv() => match line {
                        Some(line) => self.held.push_back(line),
                        None => panic!("the daemon exited before it was ready\n{}", logs(dir)),
                    },
                }
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "the daemon was not ready in time\n{}",
            logs(dir)
        );
    }

    /// Until the last state each of `modems` modems logged is `Ready`.
    async fn modems_ready(&mut self, modems: usize, dir: &Path) {
        let mut ready = HashSet::new();
        while ready.len() < modems {
            let line = self.next_line(dir).await;
            if !line.contains("modem state changed") {
                continue;
            }
            let Some(modem) = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("modem="))
            else {
                continue;
            };
            if line.split_whitespace().any(|field| field == "state=Ready") {
                ready.insert(modem.to_owned());
            } else {
                ready.remove(modem);
            }
        }
    }
}

/// Takes webhooks in until `until` distinct messages have reached a state the gateway settles them in
/// (sent, failed, expired or unknown), adding their ids to `settled`. `sent_only` counts only
/// `message.sent`.
async fn settle(
    hooks: &mut WebhookReceiver,
    settled: &mut HashSet<String>,
    until: usize,
    sent_only: bool,
) {
    let counted: &[&str] = if sent_only {
        &["message.sent"]
    } else {
        &[
            "message.sent",
            "message.failed",
            "message.expired",
            "message.unknown",
        ]
    };
    while settled.len() < until {
        let event = hooks.next_any().await;
        if counted.iter().any(|kind| event["type"] == *kind) {
            settled.insert(event["data"]["message_id"].as_str().unwrap().to_owned());
        }
    }
}

/// The last lines of every log in `dir`, for failure messages.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        out.push_str(&format!("--- {}\n", path.display()));
        for line in &lines[lines.len().saturating_sub(30)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every successful send in the simulators' logs, as text → how many times it went out.
async fn sent_texts(control: &Http) -> HashMap<String, usize> {
    let mut texts = HashMap::new();
    for sends in send_logs(control).await {
        for send in sends.as_array().unwrap() {
            if send["outcome"].get("sent").is_some() {
                let text = send["text"].as_str().unwrap().to_owned();
                *texts.entry(text).or_default() += 1;
            }
        }
    }
    texts
}

/// How many sends each simulator has logged (successful or not).
async fn sends_per_modem(control: &Http) -> Vec<usize> {
    send_logs(control)
        .await
        .iter()
        .map(|sends| sends.as_array().unwrap().len())
        .collect()
}

/// Each simulated modem's send log, in modem order.
async fn send_logs(control: &Http) -> Vec<Value> {
    let modems = control.get("/modems").await.as_array().unwrap().len();
    let mut logs = Vec::with_capacity(modems);
    for i in 0..modems {
        logs.push(control.get(&format!("/modems/{i}/sends")).await);
    }
    logs
}

/// Accept all messages through the batch endpoint; returns id → text.
async fn accept_all(api: &Http) -> HashMap<String, String> {
    let mut accepted = HashMap::new();
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(BATCH) {
        let messages: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"to": format!("+1415890{i:04}"), "text": format!("msg-{i:04}")}))
            .collect();
        let (status, body) = api
            .post("/v1/messages/batch", json!({ "messages": messages }))
            .await;
        assert_eq!(status.as_u16(), 200, "{body}");
        for (result, i) in body["results"].as_array().unwrap().iter().zip(chunk) {
            assert_eq!(result["http_status"], 202, "{result}");
            let id = result["accepted"]["id"].as_str().unwrap().to_owned();
            accepted.insert(id, format!("msg-{i:04}"));
        }
    }
    assert_eq!(accepted.len(), MESSAGES, "ids must be distinct");
    accepted
}

/// Whether any message still waits for or is in a send.
async fn unsettled(api: &Http) -> usize {
    let mut count = 0;
    for status in ["queued", "scheduled", "sending"] {
        let page = api
            .get(&format!("/v1/messages?status={status}&limit=1000"))
            .await;
        count += page["messages"].as_array().unwrap().len();
    }
    count
}

/// Every message in the log: id → (status, text), following the cursor to the end.
async fn all_messages(api: &Http) -> HashMap<String, (String, String)> {
    let mut messages = HashMap::new();
    let mut path = "/v1/messages?limit=1000".to_owned();
    loop {
        let page = api.get(&path).await;
        for m in page["messages"].as_array().unwrap() {
            let id = m["id"].as_str().unwrap().to_owned();
            let entry = (
                m["status"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
            );
            assert!(messages.insert(id, entry).is_none(), "a page repeated {m}");
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/messages?limit=1000&after={next}"),
            None => return messages,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_nothing_and_sends_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t0 = Instant::now();
    let (_sims, _sims_stdout, control) = start_simulators(dir, MODEMS);
    let control = Http::new(control);
    let listen = free_port();
    let mut hooks = WebhookReceiver::start().await;
    let config = write_config(dir, listen, MODEMS, Some(&hooks.url));

    // First run: accept everything, then kill the daemon once it has announced some hundreds sent.
    let mut daemon = Daemon::start(dir, &config, 1);
    daemon.ready(dir).await;
    let accepted = accept_all(&Http::new(listen)).await;
    let mut settled = HashSet::new();
    settle(&mut hooks, &mut settled, KILL_AFTER, true).await;
    daemon.process.sigkill();
    let killed_at = t0.elapsed();
    let sent_before_kill: usize = sent_texts(&control).await.values().sum();
    assert!(
        sent_before_kill < MESSAGES,
        "the kill should land mid-run, but all {sent_before_kill} were already sent"
    );

    // The sends in flight at the kill finish on the simulators meanwhile; this count may still grow.
    let logged_at_kill = sends_per_modem(&control).await;

    // Second run on the same database and the same (still running) simulators: it drains the rest, and
    // its webhooks (the first run's not yet delivered among them) settle every message.
    let mut daemon = Daemon::start(dir, &config, 2);
    daemon.ready(dir).await;
    let api = Http::new(listen);
    let restarted_at = t0.elapsed();
    settle(&mut hooks, &mut settled, MESSAGES, false).await;
    let drained_at = t0.elapsed();
    let left = unsettled(&api).await;
    assert_eq!(
        left,
        0,
        "messages still queued, scheduled or sending once all were settled\n{}",
        logs(dir)
    );
    // The restarted daemon did the draining, and every port was re-opened: each modem is ready again
    // (whether it got a share of the drain depends on how fast it came back, which is timing, not a
    // property of the gateway).
    let logged = sends_per_modem(&control).await;
    assert!(
        logged.iter().sum::<usize>() > logged_at_kill.iter().sum::<usize>(),
        "nothing was sent after the restart ({logged_at_kill:?} then {logged:?})\n{}",
        logs(dir)
    );
    daemon.modems_ready(MODEMS, dir).await;
    let modems = api.get("/v1/modems").await;
    let ready = modems["modems"]
        .as_array()
        .map(|list| list.iter().filter(|m| m["state"] == "ready").count())
        .unwrap_or(0);
    assert_eq!(ready, MODEMS, "{modems:#}\n{}", logs(dir));

    // The audit. The simulators' logs are final: the daemon has nothing left to hand them.
    let network = sent_texts(&control).await;
    let gateway = all_messages(&api).await;
    let mut by_status: HashMap<&str, usize> = HashMap::new();
    let mut unknown_sent = 0;
    for (id, text) in &accepted {
        let (status, stored_text) = gateway
            .get(id)
            .unwrap_or_else(|| panic!("accepted message {id} ({text}) is missing from the API"));
        assert_eq!(stored_text, text, "message {id} changed its text");
        let times = network.get(text).copied().unwrap_or(0);
        match status.as_str() {
            "sent" | "delivered" => {
                assert_eq!(times, 1, "{text} is {status} but went out {times} times")
            }
            "unknown" => {
                assert!(times <= 1, "{text} is unknown but went out {times} times");
                unknown_sent += times;
            }
            other => panic!("{text} ended {other}, not sent, delivered or unknown"),
        }
        *by_status.entry(status.as_str()).or_default() += 1;
    }
    let unknown = by_status.get("unknown").copied().unwrap_or(0);
    let expected: HashSet<&String> = accepted.values().collect();
    let strays: Vec<_> = network
        .keys()
        .filter(|text| !expected.contains(text))
        .collect();
    let twice: Vec<_> = network.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "accepted {} · sent before the kill {sent_before_kill} · final {by_status:?} · unknown that \
         did reach a simulator {unknown_sent} · distinct texts on the air {}",
        accepted.len(),
        network.len()
    );
    println!(
        "killed at {killed_at:?}, answering again at {restarted_at:?}, drained at {drained_at:?}"
    );
    assert_eq!(
        gateway.len(),
        MESSAGES,
        "the API lists messages nobody sent"
    );
    assert!(
        unknown <= MODEMS,
        "{unknown} unknown: more than one per modem was in flight"
    );
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert!(strays.is_empty(), "texts nobody accepted: {strays:?}");
    assert_eq!(
        network.len(),
        MESSAGES - unknown + unknown_sent,
        "every sent/delivered message went out, and only those and some unknown ones"
    );
}

/// The kill can land between `AT+CMGS=` and Ctrl-Z, leaving the modem at its PDU prompt, where it takes
/// every later command for PDU text. The crash test hits that window only now and then; this one always
/// does: a stand-in for the killed daemon opens the port, asks for a prompt, writes half a PDU and
/// vanishes. The real daemon must then still get the modem back and send through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modem_left_at_the_pdu_prompt_by_a_killed_daemon_sends_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_sims, _sims_stdout, control) = start_simulators(dir, 1);
    let control = Http::new(control);
    {
        let device = dir.join("sims/modem0");
        let mut port =
            tokio_serial::SerialStream::open(&tokio_serial::new(device.to_string_lossy(), 115_200))
                .unwrap();
        port.write_all(b"AT+CMGS=20\r").await.unwrap();
        let mut seen = Vec::new();
        tokio::time::timeout(DEADLINE, async {
            while !seen.ends_with(b"> ") {
                let mut buf = [0u8; 256];
                let n = port.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no prompt: {:?}", String::from_utf8_lossy(&seen)));
        port.write_all(b"0011000B91").await.unwrap();
    }

    let listen = free_port();
    let mut hooks = WebhookReceiver::start().await;
    let config = write_config(dir, listen, 1, Some(&hooks.url));
    let mut daemon = Daemon::start(dir, &config, 1);
    daemon.ready(dir).await;
    let api = Http::new(listen);
    let (status, accepted) = api
        .post(
            "/v1/messages",
            json!({"to": "+14158906431", "text": "after the prompt"}),
        )
        .await;
    assert_eq!(status.as_u16(), 202, "{accepted}");
    let sent = hooks.next("message.sent").await;
    assert_eq!(sent["data"]["message_id"], accepted["id"], "{sent}");
    assert_eq!(
        sent_texts(&control).await.get("after the prompt"),
        Some(&1),
        "{}",
        logs(dir)
    );
    daemon.process.sigkill();
}

/// A clean stop (SIGTERM, as systemd sends at every restart and upgrade) takes each modem offline without
/// a warning: an admin alerting on the journal's warnings is paged for real trouble only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_logs_no_modem_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_sims, _sims_stdout, _control) = start_simulators(dir, 2);
    let listen = free_port();
    let config = write_config(dir, listen, 2, None);
    let mut daemon = Daemon::start(dir, &config, 1);
    daemon.ready(dir).await;
    daemon.modems_ready(2, dir).await;
    kill(daemon.process.pid(), Signal::SIGTERM).unwrap();
    let status = daemon.process.0.wait().unwrap();
    assert!(status.success(), "{status}\n{}", logs(dir));
    // The copy of its log is complete once its stderr has closed.
    while daemon.lines.recv().await.is_some() {}
    let log = std::fs::read_to_string(dir.join("serve-1.log")).unwrap();
    let offline: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("modem state changed") && l.contains("Offline"))
        .collect();
    assert_eq!(offline.len(), 2, "{log}");
    assert!(
        offline
            .iter()
            .all(|l| l.contains("INFO") && !l.contains("WARN")),
        "{offline:#?}"
    );
}
