//! The simulator driven over real ptys with tokio-serial, as a DTE would: raw bytes in and out, no
//! `modemgate::at` or `modemgate::modem` involved. Every wait is on an event (bytes arriving, a watch
//! channel); the only timeouts are failure guards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use modemgate::pdu;
use modemgate::sim::{self, FailNext, Faults, Inbound, Profile, SendOutcome, SimConfig, SimHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialPortBuilderExt;

/// Guard against a test hanging forever; never used to wait for something to happen.
const GUARD: Duration = Duration::from_secs(10);

/// A DTE on a serial port, keeping bytes read past the last answer.
struct Dte {
    port: tokio_serial::SerialStream,
    buf: Vec<u8>,
}

fn is_final(line: &str) -> bool {
    matches!(line, "OK" | "ERROR" | "COMMAND NOT SUPPORT")
        || line.starts_with("+CME ERROR:")
        || line.starts_with("+CMS ERROR:")
}

/// Split on CR/LF, dropping empty lines.
fn lines(text: &str) -> Vec<String> {
    text.split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Dte {
    async fn open(path: &Path) -> Dte {
        let port = tokio_serial::new(path.to_string_lossy(), 115200)
            .open_native_async()
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        Dte {
            port,
            buf: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.port.write_all(bytes).await.unwrap();
    }

    /// Read until `end` finds the end of what we want in the bytes so far; return those bytes and keep the
    /// rest.
    async fn read_until(&mut self, what: &str, end: impl Fn(&[u8]) -> Option<usize>) -> Vec<u8> {
        let read = async {
            loop {
                if let Some(n) = end(&self.buf) {
                    return self.buf.drain(..n).collect::<Vec<u8>>();
                }
                let mut chunk = [0u8; 512];
                let n = self
                    .port
                    .read(&mut chunk)
                    .await
                    .expect("read from the modem");
                assert!(n > 0, "modem closed while waiting for {what}");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        match tokio::time::timeout(GUARD, read).await {
            Ok(bytes) => bytes,
            Err(_) => panic!(
                "no {what} within {GUARD:?}; got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Lines up to and including a line satisfying `done`.
    async fn lines_until(&mut self, what: &str, done: impl Fn(&str) -> bool) -> Vec<String> {
        let bytes = self
            .read_until(what, |buf| {
                let mut start = 0;
                for (i, &b) in buf.iter().enumerate() {
                    if b == b'\n' {
                        let line = String::from_utf8_lossy(&buf[start..i]);
                        if done(line.trim_matches(['\r', '\n'])) {
                            return Some(i + 1);
                        }
                        start = i + 1;
                    }
                }
                None
            })
            .await;
        lines(&String::from_utf8_lossy(&bytes))
    }

    /// Send a command line and return every line up to and including the final result.
    async fn cmd(&mut self, command: &str) -> Vec<String> {
        self.write(format!("{command}\r").as_bytes()).await;
        self.lines_until(&format!("the answer to {command}"), is_final)
            .await
    }

    /// Send a command and return the information lines, asserting it ended OK (echo must be off).
    async fn ok(&mut self, command: &str) -> Vec<String> {
        let mut lines = self.cmd(command).await;
        assert_eq!(lines.pop().as_deref(), Some("OK"), "{command}: {lines:?}");
        lines
    }

    async fn prompt(&mut self) {
        self.read_until("the > prompt", |b| {
            b.windows(4).position(|w| w == b"\r\n> ").map(|i| i + 4)
        })
        .await;
    }
}

/// Await `f`, failing the test after [`GUARD`] instead of hanging.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, f)
        .await
        .expect("event did not happen in time")
}

fn instant(profile: Profile) -> SimConfig {
    SimConfig::instant(profile)
}

async fn start(config: SimConfig) -> (SimHandle, Dte) {
    let sim = sim::spawn(config).unwrap();
    let dte = Dte::open(&sim.device()).await;
    (sim, dte)
}

/// A started modem with echo off, past any "SIM busy" period (its boot burst may still be unread).
async fn ready(config: SimConfig) -> (SimHandle, Dte) {
    let (sim, mut dte) = start(config).await;
    dte.cmd("ATE0").await;
    while dte.cmd("AT+CMEE=1").await.last().map(String::as_str) != Some("OK") {}
    (sim, dte)
}

#[tokio::test]
async fn echo_until_ate0_and_identity() {
    let (_sim, mut dte) = start(instant(Profile::Plain)).await;
    assert_eq!(dte.cmd("AT").await, ["AT", "OK"]);
    assert_eq!(dte.cmd("ATE0").await, ["ATE0", "OK"]);
    assert_eq!(dte.cmd("AT").await, ["OK"]);
    assert_eq!(dte.ok("AT+CGMI").await, ["GENERIC"]);
    assert_eq!(dte.ok("AT+CGMM").await, ["GSM MODEM 27005"]);
    assert_eq!(dte.ok("AT+CGSN").await, ["861234050123456"]);
    assert_eq!(dte.ok("AT+CIMI").await, ["001010123456789"]);
    assert_eq!(dte.ok("AT+CCID").await, ["+CCID: 8901260123456789012"]);
    assert_eq!(dte.ok("ATI").await.len(), 3);
    assert_eq!(dte.cmd("AT+NOPE").await, ["ERROR"]);
    assert_eq!(dte.cmd("hello").await, ["ERROR"]);
    // ATZ restores the power-on settings, echo included.
    assert_eq!(dte.cmd("ATZ").await, ["OK"]);
    assert_eq!(dte.cmd("AT").await, ["AT", "OK"]);
}

#[tokio::test]
async fn plain_modem_answers_the_27005_and_27007_set() {
    let (_sim, mut dte) = ready(instant(Profile::Plain)).await;
    assert_eq!(dte.ok("AT+CMEE=1;+CMGF=0").await, Vec::<String>::new());
    assert_eq!(dte.ok("AT+CMGF?").await, ["+CMGF: 0"]);
    assert_eq!(dte.ok("AT+CPIN?").await, ["+CPIN: READY"]);
    assert_eq!(dte.ok("AT+CSQ").await, ["+CSQ: 20,99"]);
    assert_eq!(dte.ok("AT+CREG?").await, ["+CREG: 0,1"]);
    dte.ok("AT+CREG=2").await;
    assert_eq!(
        dte.ok("AT+CREG?").await,
        ["+CREG: 2,1,\"5E25\",\"0605F01\",7"]
    );
    assert_eq!(dte.ok("AT+CGREG?").await, ["+CGREG: 0,1"]);
    assert_eq!(dte.ok("AT+CEREG?").await, ["+CEREG: 0,1"]);
    assert_eq!(dte.ok("AT+COPS?").await, ["+COPS: 0,0,\"SIMNET\",7"]);
    assert_eq!(dte.ok("AT+CSCA?").await, ["+CSCA: \"+15550109999\",145"]);
    assert_eq!(dte.ok("AT+CSCS=\"GSM\"").await, Vec::<String>::new());
    assert_eq!(dte.ok("AT+CSCS?").await, ["+CSCS: \"GSM\""]);
    assert_eq!(
        dte.ok("AT+CPMS=\"SM\",\"SM\",\"SM\"").await,
        ["+CPMS: 0,30,0,30,0,30"]
    );
    assert_eq!(
        dte.ok("AT+CPMS?").await,
        ["+CPMS: \"SM\",0,30,\"SM\",0,30,\"SM\",0,30"]
    );
    assert_eq!(dte.cmd("AT+CPMS=\"XX\"").await, ["+CMS ERROR: 302"]);
    assert_eq!(dte.ok("AT+CSMS=1").await, ["+CSMS: 1,1,1"]);
    assert_eq!(dte.ok("AT+CSMS?").await, ["+CSMS: 1,1,1,1"]);
    dte.ok("AT+CNMI=2,1,0,1,0").await;
    assert_eq!(dte.ok("AT+CNMI?").await, ["+CNMI: 2,1,0,1,0"]);
    assert_eq!(dte.cmd("AT+CNMI=9").await, ["+CMS ERROR: 303"]);
    assert_eq!(dte.cmd("AT+CNMA").await, ["+CMS ERROR: 340"]);
    dte.ok("AT+CMMS=2").await;
    assert_eq!(
        dte.ok("AT+CNUM").await,
        ["+CNUM: \"\",\"+15550100001\",145"]
    );
    assert_eq!(dte.cmd("AT+CMGR=1").await, ["+CMS ERROR: 321"]);
    assert_eq!(dte.ok("AT+CMGL=4").await, Vec::<String>::new());
    assert_eq!(dte.cmd("AT+CMGS=3").await, ["+CMS ERROR: 304"]);
    dte.ok("AT+CMEE=2").await;
    dte.ok("AT+CMGF=1").await;
    assert_eq!(dte.cmd("AT+CMGS=20").await, ["+CMS ERROR: 303"]);
}

#[tokio::test]
async fn pin_gates_commands_until_entered() {
    let mut config = instant(Profile::Plain);
    config.pin = Some("1234".into());
    let (_sim, mut dte) = ready(config).await;
    assert_eq!(dte.ok("AT+CPIN?").await, ["+CPIN: SIM PIN"]);
    assert_eq!(dte.cmd("AT+CSQ").await, ["+CME ERROR: 11"]);
    assert_eq!(dte.cmd("AT+CMGF=0").await, ["+CME ERROR: 11"]);
    assert_eq!(dte.ok("AT+CGMI").await, ["GENERIC"]);
    assert_eq!(dte.cmd("AT+CPIN=\"0000\"").await, ["+CME ERROR: 16"]);
    dte.ok("AT+CMEE=2").await;
    assert_eq!(dte.cmd("AT+CSQ").await, ["+CME ERROR: SIM PIN required"]);
    dte.ok("AT+CMEE=0").await;
    assert_eq!(dte.cmd("AT+CSQ").await, ["ERROR"]);
    dte.ok("AT+CPIN=\"1234\"").await;
    assert_eq!(dte.ok("AT+CPIN?").await, ["+CPIN: READY"]);
    assert_eq!(dte.ok("AT+CSQ").await, ["+CSQ: 20,99"]);
    dte.ok("AT+CMEE=1").await;
    assert_eq!(dte.cmd("AT+CPIN=\"1234\"").await, ["+CME ERROR: 3"]);
}

#[tokio::test]
async fn ec25_boots_with_a_burst_and_is_busy_at_first() {
    let mut config = instant(Profile::Ec25);
    config.pin = Some("0000".into());
    let (_sim, mut dte) = start(config).await;
    let boot = dte
        .lines_until("the boot burst", |l| l.starts_with("+CPIN:"))
        .await;
    assert_eq!(boot, ["RDY", "+CFUN: 1", "+CPIN: SIM PIN"]);
    assert_eq!(dte.cmd("ATE0").await, ["ATE0", "OK"]);
    // SIM busy for the first two extended commands after boot.
    assert_eq!(dte.cmd("AT+CPIN?").await, ["+CME ERROR: 14"]);
    assert_eq!(dte.cmd("AT+CPIN?").await, ["+CME ERROR: 14"]);
    assert_eq!(dte.ok("AT+CPIN?").await, ["+CPIN: SIM PIN"]);
    // The SIM-ready burst follows the OK of the PIN entry.
    let after = {
        dte.write(b"AT+CPIN=\"0000\"\r").await;
        dte.lines_until("the SIM-ready burst", |l| l == "+QIND: PB DONE")
            .await
    };
    assert_eq!(
        after,
        [
            "OK",
            "+CPIN: READY",
            "+QUSIM: 1",
            "+QIND: SMS DONE",
            "+QIND: PB DONE"
        ]
    );
    assert_eq!(dte.ok("AT+CGMI").await, ["Quectel"]);
}

#[tokio::test]
async fn sim7600_advertises_cnmi_ds1_but_refuses_it() {
    let (_sim, mut dte) = start(instant(Profile::Sim7600)).await;
    let boot = dte.lines_until("the boot burst", |l| l == "PB DONE").await;
    assert_eq!(boot, ["RDY", "+CPIN: READY", "SMS DONE", "PB DONE"]);
    dte.cmd("ATE0").await;
    let test = dte.ok("AT+CNMI=?").await;
    assert_eq!(test, ["+CNMI: (0-2),(0-3),(0-3),(0-2),(0-1)"]);
    assert_eq!(dte.cmd("AT+CNMI=2,1,2,1,0").await, ["+CMS ERROR: 303"]);
    dte.ok("AT+CNMI=2,1,2,2,0").await;
    assert_eq!(dte.ok("AT+CNMI?").await, ["+CNMI: 2,1,2,2,0"]);
}

#[tokio::test]
async fn huawei_speaks_its_dialect_and_makes_noise() {
    let mut config = instant(Profile::Huawei);
    config.noise_interval = Some(Duration::from_millis(20));
    let (_sim, mut dte) = start(config).await;
    let boot = dte
        .lines_until("the boot noise", |l| l.starts_with("^RSSI"))
        .await;
    assert_eq!(boot, ["^BOOT:20952551,0,0,0,75", "^RSSI:18"]);
    dte.write(b"ATE0\r").await;
    dte.lines_until("OK", |l| l == "OK").await;
    // Information lines end CR CR LF.
    dte.write(b"AT+CGMI\r").await;
    let raw = dte
        .read_until("the CGMI answer", |b| {
            b.windows(6).position(|w| w == b"\r\nOK\r\n").map(|i| i + 6)
        })
        .await;
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("huawei\r\r\n"), "{raw:?}");
    let unsupported = dte.cmd("AT+WIND?").await;
    assert_eq!(
        unsupported.last().map(String::as_str),
        Some("COMMAND NOT SUPPORT")
    );
    let cmms = dte.cmd("AT+CMMS=2").await;
    assert_eq!(cmms.last().map(String::as_str), Some("COMMAND NOT SUPPORT"));
    dte.cmd("AT+CREG=2").await;
    let creg = dte.cmd("AT+CREG?").await;
    assert!(
        creg.contains(&"+CREG: 2,1,4CA,81DE445".to_string()),
        "{creg:?}"
    );
    // Periodic noise keeps coming.
    dte.lines_until("more noise", |l| l == "^RSSI:18").await;
}

#[tokio::test]
async fn registration_loss_is_announced_and_fails_sends() {
    let (sim, mut dte) = ready(instant(Profile::Plain)).await;
    dte.ok("AT+CREG=1").await;
    dte.ok("AT+CEREG=2").await;
    sim.update_faults(|f| f.registration_lost = true).unwrap();
    let urcs = dte
        .lines_until("the registration URCs", |l| l.starts_with("+CEREG"))
        .await;
    assert_eq!(urcs, ["+CREG: 2", "+CEREG: 2"]);
    assert_eq!(dte.ok("AT+CSQ").await, ["+CSQ: 99,99"]);
    assert_eq!(dte.ok("AT+COPS?").await, ["+COPS: 0"]);
    assert_eq!(dte.ok("AT+CREG?").await, ["+CREG: 1,2"]);
    sim.update_faults(|f| f.registration_lost = false).unwrap();
    let urcs = dte
        .lines_until("the registration URCs", |l| l.starts_with("+CEREG"))
        .await;
    assert_eq!(urcs, ["+CREG: 1", "+CEREG: 1,\"5E25\",\"0605F01\",7"]);
}

#[tokio::test]
async fn hang_answers_nothing_until_the_port_is_reopened() {
    let (sim, mut dte) = ready(instant(Profile::Plain)).await;
    sim.update_faults(|f| f.hang = true).unwrap();
    within(sim.wait_faults(|f| f.hang)).await.unwrap();
    // Swallowed: no echo, no answer, ever.
    dte.write(b"AT+CGMI\r").await;
    drop(dte);
    let mut dte = Dte::open(&sim.device()).await;
    within(sim.wait_faults(|f| !f.hang)).await.unwrap();
    // The first thing on the line is the answer to the new command, not to the swallowed one.
    assert_eq!(dte.cmd("AT+CGMM").await, ["GSM MODEM 27005", "OK"]);
}

#[tokio::test]
async fn garbage_and_interleaved_urcs_reach_the_line() {
    let (sim, mut dte) = ready(instant(Profile::Plain)).await;
    sim.inject_garbage(vec![0xff, 0x00, 0xfe, b'\r', b'\n'])
        .unwrap();
    let raw = dte
        .read_until("the garbage", |b| {
            b.windows(3)
                .position(|w| w == [0xff, 0x00, 0xfe])
                .map(|i| i + 3)
        })
        .await;
    assert!(raw.ends_with(&[0xff, 0x00, 0xfe]));
    sim.update_faults(|f| f.interleave_urcs = true).unwrap();
    within(sim.wait_faults(|f| f.interleave_urcs))
        .await
        .unwrap();
    let answer = dte.cmd("AT+CSQ").await;
    assert!(
        answer.ends_with(&["+CIEV: 2,4".to_string(), "OK".to_string()]),
        "{answer:?}"
    );
}

#[tokio::test]
async fn storage_full_refuses_writes_with_322() {
    let (sim, mut dte) = ready(instant(Profile::Plain)).await;
    // CMGW stores whatever PDU of the right length it is given.
    let pdu = "0001000B915155210000F00000";
    let tpdu_len = pdu.len() / 2 - 1;
    dte.write(format!("AT+CMGW={tpdu_len}\r").as_bytes()).await;
    dte.prompt().await;
    dte.write(format!("{pdu}\x1a").as_bytes()).await;
    let answer = dte.lines_until("CMGW", is_final).await;
    assert_eq!(answer, ["+CMGW: 1", "OK"]);
    assert_eq!(
        dte.ok("AT+CMGL=4").await,
        [format!("+CMGL: 1,2,,{tpdu_len}"), pdu.to_string()]
    );
    sim.update_faults(|f| f.storage_full = true).unwrap();
    within(sim.wait_faults(|f| f.storage_full)).await.unwrap();
    assert_eq!(
        dte.ok("AT+CPMS?").await,
        ["+CPMS: \"SM\",30,30,\"SM\",30,30,\"SM\",30,30"]
    );
    dte.write(format!("AT+CMGW={tpdu_len}\r").as_bytes()).await;
    dte.prompt().await;
    dte.write(format!("{pdu}\x1a").as_bytes()).await;
    assert_eq!(dte.lines_until("CMGW", is_final).await, ["+CMS ERROR: 322"]);
}

#[tokio::test]
async fn cmgs_escape_aborts_and_wrong_length_is_304() {
    let (sim, mut dte) = ready(instant(Profile::Plain)).await;
    dte.write(b"AT+CMGS=12\r").await;
    dte.prompt().await;
    dte.write(b"0011\x1b").await;
    assert_eq!(dte.lines_until("OK", is_final).await, ["OK"]);
    // Five TPDU octets announced as twelve.
    dte.write(b"AT+CMGS=12\r").await;
    dte.prompt().await;
    dte.write(b"000100000000\x1a").await;
    assert_eq!(dte.lines_until("304", is_final).await, ["+CMS ERROR: 304"]);
    // Not hex at all.
    dte.write(b"AT+CMGS=7\r").await;
    dte.prompt().await;
    dte.write(b"0\x1a").await;
    assert_eq!(dte.lines_until("304", is_final).await, ["+CMS ERROR: 304"]);
    assert!(sim.sends().is_empty());
    // With echo on, the PDU is echoed too.
    dte.ok("ATE1").await;
    dte.write(b"AT+CMGS=12\r").await;
    dte.prompt().await;
    dte.write(b"0011\x1b").await;
    assert_eq!(dte.lines_until("OK", is_final).await, ["0011", "OK"]);
}

#[tokio::test]
async fn port_vanishes_and_comes_back_on_a_new_pty_behind_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = instant(Profile::Sim7600);
    config.link = Some(dir.path().join("modem0"));
    let (sim, mut dte) = start(config).await;
    dte.lines_until("boot", |l| l == "PB DONE").await;
    let old = sim.path();
    assert_eq!(std::fs::read_link(sim.device()).unwrap(), old);
    // A hung modem is cured by the reset that makes the port vanish.
    sim.update_faults(|f| f.hang = true).unwrap();
    within(sim.wait_faults(|f| f.hang)).await.unwrap();
    sim.vanish(Duration::ZERO).unwrap();
    // The open port dies: reads fail or hit end of file.
    let mut chunk = [0u8; 64];
    let dead = tokio::time::timeout(GUARD, dte.port.read(&mut chunk))
        .await
        .unwrap();
    assert!(matches!(dead, Err(_) | Ok(0)), "{dead:?}");
    let new = within(sim.wait_new_path(&old)).await.unwrap();
    within(sim.wait_faults(|f| !f.hang)).await.unwrap();
    assert_ne!(new, old);
    assert_eq!(std::fs::read_link(sim.device()).unwrap(), new);
    let mut dte = Dte::open(&sim.device()).await;
    let boot = dte.lines_until("boot", |l| l == "PB DONE").await;
    assert_eq!(boot[0], "RDY");
    assert_eq!(dte.cmd("AT").await, ["AT", "OK"]);
    sim.shutdown().await;
    assert!(!sim.device().exists(), "the link goes with the modem");
}

// ---- PDU mode: sends, inbound, status reports ------------------------------------------------------------

fn submit_parts(to: &str, text: &str, report: bool) -> Vec<pdu::EncodedPart> {
    let opts = pdu::SubmitOptions {
        status_report: report,
        concat_reference: 7,
        ..pdu::SubmitOptions::default()
    };
    pdu::encode_submit(to, text, &opts).unwrap()
}

impl Dte {
    /// `AT+CMGS` one part: the command, the prompt, the PDU and Ctrl-Z; returns the answer lines.
    async fn send_part(&mut self, part: &pdu::EncodedPart) -> Vec<String> {
        self.write(format!("AT+CMGS={}\r", part.tpdu_length).as_bytes())
            .await;
        self.prompt().await;
        self.write(format!("{}\x1a", part.hex()).as_bytes()).await;
        self.lines_until("the CMGS result", is_final).await
    }

    /// The PDU line following a header line such as `+CMGR: 0,,24` or `+CMT: ,24`.
    async fn urc_with_pdu(&mut self, header: &str) -> (String, pdu::Pdu) {
        let lines = self
            .lines_until(&format!("{header} and its PDU"), |l| {
                !l.is_empty() && !l.starts_with(['+', '^'])
            })
            .await;
        let pos = lines
            .iter()
            .position(|l| l.starts_with(header))
            .unwrap_or_else(|| panic!("no {header} in {lines:?}"));
        let pdu_line = lines[pos + 1].clone();
        (lines[pos].clone(), pdu::decode_hex(&pdu_line).unwrap())
    }
}

fn text_of(pdu: &pdu::Pdu) -> (String, String, Option<pdu::Concat>) {
    match &pdu.tpdu {
        pdu::Tpdu::Deliver(d) => match &d.user_data {
            pdu::UserData::Text(t) => (d.sender.value.clone(), t.clone(), d.concat),
            other => panic!("binary deliver {other:?}"),
        },
        other => panic!("not a deliver: {other:?}"),
    }
}

fn report_of(pdu: &pdu::Pdu) -> &pdu::StatusReport {
    match &pdu.tpdu {
        pdu::Tpdu::StatusReport(r) => r,
        other => panic!("not a status report: {other:?}"),
    }
}

#[tokio::test]
async fn cmgs_sends_with_incrementing_reference_and_logs_the_decoded_pdu() {
    let mut config = instant(Profile::Ec25);
    config.first_reference = 254;
    let (sim, mut dte) = ready(config).await;
    let first = &submit_parts("+15551234567", "Hello from the test", false)[0];
    assert_eq!(dte.send_part(first).await, ["+CMGS: 254", "OK"]);
    let long = "x".repeat(200);
    let parts = submit_parts("+15557654321", &long, false);
    assert_eq!(parts.len(), 2);
    assert_eq!(dte.send_part(&parts[0]).await, ["+CMGS: 255", "OK"]);
    assert_eq!(dte.send_part(&parts[1]).await, ["+CMGS: 0", "OK"]);
    let log = within(sim.wait_sends(3)).await.unwrap();
    assert_eq!(log[0].pdu_hex, first.hex());
    assert_eq!(log[0].length, first.tpdu_length);
    assert_eq!(log[0].submit.recipient.value, "+15551234567");
    assert_eq!(
        log[0].submit.user_data,
        pdu::UserData::Text("Hello from the test".into())
    );
    assert_eq!(log[0].outcome, SendOutcome::Sent { reference: 254 });
    let concat = log[2].submit.concat.unwrap();
    assert_eq!((concat.part, concat.parts), (2, 2));
    assert_eq!(log[2].outcome, SendOutcome::Sent { reference: 0 });
    // A PDU that is not an SMS-SUBMIT is refused like a malformed one.
    let deliver = pdu::encode_deliver(
        None,
        "+15551234567",
        "hi",
        pdu::EncodingChoice::Auto,
        &jiff::Zoned::now(),
        0,
    )
    .unwrap();
    let fake = pdu::EncodedPart {
        tpdu_length: deliver[0].len() - 1,
        bytes: deliver[0].clone(),
    };
    assert_eq!(dte.send_part(&fake).await, ["+CMS ERROR: 304"]);
    assert_eq!(sim.sends().len(), 3);
}

#[tokio::test]
async fn send_faults_fail_sends_with_the_chosen_codes() {
    let (sim, mut dte) = ready(instant(Profile::Plain)).await;
    let part = &submit_parts("+15551234567", "retry me", false)[0];
    sim.update_faults(|f| f.fail_next = Some(FailNext { count: 2, code: 42 }))
        .unwrap();
    within(sim.wait_faults(|f| f.fail_next.is_some()))
        .await
        .unwrap();
    assert_eq!(dte.send_part(part).await, ["+CMS ERROR: 42"]);
    assert_eq!(dte.send_part(part).await, ["+CMS ERROR: 42"]);
    // Failed sends use no message reference.
    assert_eq!(dte.send_part(part).await[0], "+CMGS: 1");
    sim.set_faults(Faults {
        permanent_rate: 1.0,
        ..Faults::default()
    })
    .unwrap();
    within(sim.wait_faults(|f| f.permanent_rate > 0.0))
        .await
        .unwrap();
    let permanent = dte.send_part(part).await;
    assert!(
        ["+CMS ERROR: 1", "+CMS ERROR: 27"].contains(&permanent[0].as_str()),
        "{permanent:?}"
    );
    sim.set_faults(Faults {
        transient_rate: 1.0,
        ..Faults::default()
    })
    .unwrap();
    within(sim.wait_faults(|f| f.transient_rate > 0.0))
        .await
        .unwrap();
    let transient = dte.send_part(part).await;
    assert!(
        ["+CMS ERROR: 500", "+CMS ERROR: 38", "+CMS ERROR: 42"].contains(&transient[0].as_str()),
        "{transient:?}"
    );
    sim.set_faults(Faults {
        registration_lost: true,
        ..Faults::default()
    })
    .unwrap();
    within(sim.wait_faults(|f| f.registration_lost))
        .await
        .unwrap();
    assert_eq!(dte.send_part(part).await, ["+CMS ERROR: 331"]);
    let log = within(sim.wait_sends(6)).await.unwrap();
    assert_eq!(log[0].outcome, SendOutcome::Failed { cms: 42 });
    assert_eq!(log[5].outcome, SendOutcome::Failed { cms: 331 });
    // Interleaved URCs arrive before the prompt too.
    sim.set_faults(Faults {
        interleave_urcs: true,
        ..Faults::default()
    })
    .unwrap();
    within(sim.wait_faults(|f| f.interleave_urcs))
        .await
        .unwrap();
    dte.write(format!("AT+CMGS={}\r", part.tpdu_length).as_bytes())
        .await;
    let before_prompt = dte
        .read_until("the prompt", |b| {
            b.windows(4).position(|w| w == b"\r\n> ").map(|i| i + 4)
        })
        .await;
    assert_eq!(
        String::from_utf8_lossy(&before_prompt),
        "\r\n+CIEV: 2,4\r\n\r\n> "
    );
    dte.write(b"\x1b").await;
    dte.lines_until("OK", |l| l == "OK").await;
}

#[tokio::test]
async fn cmti_then_cmgr_cmgl_cmgd() {
    let (sim, mut dte) = ready(instant(Profile::Plain)).await;
    dte.ok("AT+CNMI=2,1,0,0,0").await;
    assert_eq!(
        sim.inject(Inbound::new("+15551230000", "PAY 20"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        dte.lines_until("CMTI", |l| l.starts_with("+CMTI")).await,
        ["+CMTI: \"SM\",1"]
    );
    dte.write(b"AT+CMGR=1\r").await;
    let (header, pdu) = dte.urc_with_pdu("+CMGR:").await;
    assert!(header.starts_with("+CMGR: 0,,"), "{header}");
    assert_eq!(dte.lines_until("OK", is_final).await, ["OK"]);
    let (sender, text, _) = text_of(&pdu);
    assert_eq!((sender.as_str(), text.as_str()), ("+15551230000", "PAY 20"));
    // Read once: now REC READ.
    dte.write(b"AT+CMGR=1\r").await;
    let (header, _) = dte.urc_with_pdu("+CMGR:").await;
    assert!(header.starts_with("+CMGR: 1,,"), "{header}");
    dte.lines_until("OK", is_final).await;

    // Multipart UCS-2 from an alphanumeric sender.
    let long = "Привет! ".repeat(12);
    let inbound = Inbound {
        from: "BANK".into(),
        text: long.clone(),
        encoding: sim::TextEncoding::Ucs2,
    };
    assert_eq!(sim.inject(inbound).await.unwrap(), 2);
    assert_eq!(
        dte.lines_until("CMTIs", |l| l == "+CMTI: \"SM\",3").await,
        ["+CMTI: \"SM\",2", "+CMTI: \"SM\",3"]
    );
    let listed = dte.ok("AT+CMGL=0").await;
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(listed[0].starts_with("+CMGL: 2,0,,"));
    let mut joined = String::new();
    for line in [&listed[1], &listed[3]] {
        let pdu = pdu::decode_hex(line).unwrap();
        let (sender, text, concat) = text_of(&pdu);
        assert_eq!(sender, "BANK");
        assert_eq!(concat.unwrap().parts, 2);
        match &pdu.tpdu {
            pdu::Tpdu::Deliver(d) => assert_eq!(d.encoding, pdu::Encoding::Ucs2),
            _ => unreachable!(),
        }
        joined.push_str(&text);
    }
    assert_eq!(joined, long);
    assert!(
        dte.ok("AT+CMGL=0").await.is_empty(),
        "listed messages are read now"
    );
    assert_eq!(dte.ok("AT+CMGL=4").await.len(), 6);
    dte.ok("AT+CMGD=1").await;
    assert_eq!(dte.cmd("AT+CMGR=1").await, ["+CMS ERROR: 321"]);
    dte.ok("AT+CMGD=1,4").await;
    assert!(dte.ok("AT+CMGL=4").await.is_empty());
}

#[tokio::test]
async fn storage_full_holds_inbound_then_floods() {
    let (sim, mut dte) = ready(instant(Profile::Plain)).await;
    dte.ok("AT+CNMI=2,1,0,0,0").await;
    sim.update_faults(|f| f.storage_full = true).unwrap();
    within(sim.wait_faults(|f| f.storage_full)).await.unwrap();
    sim.inject(Inbound::new("+15551230000", "one"))
        .await
        .unwrap();
    sim.inject(Inbound::new("+15551230000", "two"))
        .await
        .unwrap();
    // Nothing was announced: the OK is the first thing on the line.
    assert_eq!(dte.cmd("AT").await, ["OK"]);
    sim.update_faults(|f| f.storage_full = false).unwrap();
    assert_eq!(
        dte.lines_until("the flood", |l| l == "+CMTI: \"SM\",2")
            .await,
        ["+CMTI: \"SM\",1", "+CMTI: \"SM\",2"]
    );
}

#[tokio::test]
async fn cmt_needs_cnma_and_is_redelivered_without_it() {
    let mut config = instant(Profile::Plain);
    config.cnma_timeout = Duration::from_millis(200);
    let (sim, mut dte) = ready(config).await;
    dte.ok("AT+CSMS=1").await;
    dte.ok("AT+CNMI=2,2,0,0,0").await;
    sim.inject(Inbound::new("+15551230000", "ack me"))
        .await
        .unwrap();
    let (first, pdu) = dte.urc_with_pdu("+CMT:").await;
    assert!(first.starts_with("+CMT: ,"), "{first}");
    assert_eq!(text_of(&pdu).1, "ack me");
    // No acknowledgement: the network delivers it again.
    let (again, pdu_again) = dte.urc_with_pdu("+CMT:").await;
    assert_eq!((again, pdu_again), (first, pdu));
    let ack = dte.cmd("AT+CNMA").await;
    assert_eq!(ack.last().map(String::as_str), Some("OK"), "{ack:?}");
    assert_eq!(dte.cmd("AT+CNMA").await, ["+CMS ERROR: 340"]);
    // With CSMS=0 no acknowledgement is expected at all.
    dte.ok("AT+CSMS=0").await;
    sim.inject(Inbound::new("+15551230000", "fire and forget"))
        .await
        .unwrap();
    dte.urc_with_pdu("+CMT:").await;
    assert_eq!(dte.cmd("AT+CNMA").await, ["+CMS ERROR: 340"]);
}

#[tokio::test]
async fn cmt_waits_for_the_previous_acknowledgement() {
    let (sim, mut dte) = ready(instant(Profile::Plain)).await;
    dte.ok("AT+CSMS=1").await;
    dte.ok("AT+CNMI=2,2,0,0,0").await;
    sim.inject(Inbound::new("+15551230000", "first"))
        .await
        .unwrap();
    sim.inject(Inbound::new("+15551230000", "second"))
        .await
        .unwrap();
    let (_, pdu) = dte.urc_with_pdu("+CMT:").await;
    assert_eq!(text_of(&pdu).1, "first");
    // Only the OK comes back: the second waits for this acknowledgement.
    assert_eq!(dte.cmd("AT+CNMA").await, ["OK"]);
    let (_, pdu) = dte.urc_with_pdu("+CMT:").await;
    assert_eq!(text_of(&pdu).1, "second");
    assert_eq!(dte.cmd("AT+CNMA").await, ["OK"]);
}

#[tokio::test]
async fn status_reports_routed_with_cds_or_stored_with_cdsi() {
    let mut config = instant(Profile::Plain);
    config.undeliverable = vec!["+15550000000".into()];
    let (_sim, mut dte) = ready(config).await;
    dte.ok("AT+CNMI=2,1,0,1,0").await;
    let part = &submit_parts("+15551234567", "report please", true)[0];
    assert_eq!(dte.send_part(part).await, ["+CMGS: 1", "OK"]);
    let (header, pdu) = dte.urc_with_pdu("+CDS:").await;
    assert!(header.starts_with("+CDS: "), "{header}");
    let report = report_of(&pdu);
    assert_eq!((report.reference, report.status), (1, 0));
    assert_eq!(report.recipient.value, "+15551234567");
    // A number chosen to fail gets a permanent-error report.
    let part = &submit_parts("+15550000000", "doomed", true)[0];
    assert_eq!(dte.send_part(part).await, ["+CMGS: 2", "OK"]);
    let (_, pdu) = dte.urc_with_pdu("+CDS:").await;
    let report = report_of(&pdu);
    assert_eq!(
        (report.reference, report.status),
        (2, sim::STATUS_UNDELIVERABLE)
    );
    // No report unless asked for: the next thing on the line is the answer to AT.
    let part = &submit_parts("+15551234567", "no report", false)[0];
    assert_eq!(dte.send_part(part).await, ["+CMGS: 3", "OK"]);
    assert_eq!(dte.cmd("AT").await, ["OK"]);
}

#[tokio::test]
async fn ec25_stores_status_reports_in_sr_and_announces_cdsi() {
    let (_sim, mut dte) = ready(instant(Profile::Ec25)).await;
    dte.ok("AT+CNMI=2,1,0,2,0").await;
    let part = &submit_parts("+15551234567", "report please", true)[0];
    assert_eq!(dte.send_part(part).await, ["+CMGS: 1", "OK"]);
    assert_eq!(
        dte.lines_until("CDSI", |l| l.starts_with("+CDSI")).await,
        ["+CDSI: \"SR\",1"]
    );
    dte.ok("AT+CPMS=\"SR\"").await;
    dte.write(b"AT+CMGR=1\r").await;
    let (_, pdu) = dte.urc_with_pdu("+CMGR:").await;
    assert_eq!(report_of(&pdu).reference, 1);
    dte.lines_until("OK", is_final).await;
}

/// The shared corpus: `../shared/corpus` beside the checkout, or `../../shared/corpus` from a worktree.
fn corpus() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        root.join("../shared/corpus"),
        root.join("../../shared/corpus"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .expect("the shared corpus (../shared/corpus) is missing")
}

#[tokio::test]
async fn every_corpus_submit_pdu_is_accepted_and_logged_decoded() {
    let (sim, mut dte) = ready(instant(Profile::Plain)).await;
    let mut sent = 0;
    for file in std::fs::read_dir(corpus().join("pdu")).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        for line in text.lines() {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            if entry["kind"] != "submit" {
                continue;
            }
            let hex = entry["pdu"].as_str().unwrap();
            let bytes = hex::decode(hex).unwrap();
            let part = pdu::EncodedPart {
                tpdu_length: bytes.len() - 1 - usize::from(bytes[0]),
                bytes,
            };
            let answer = dte.send_part(&part).await;
            assert_eq!(
                answer.last().map(String::as_str),
                Some("OK"),
                "{hex}: {answer:?}"
            );
            sent += 1;
            let log = within(sim.wait_sends(sent)).await.unwrap();
            let logged = &log[sent - 1];
            assert_eq!(logged.pdu_hex, hex.to_ascii_uppercase());
            assert_eq!(
                logged.submit.recipient.value, entry["expect"]["recipient"],
                "{}",
                entry["source"]
            );
        }
    }
    assert_eq!(sent, 47, "the corpus README counts 47 submit PDUs");
}

// ---- control API and CLI -----------------------------------------------------------------------------------

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(GUARD, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test]
async fn control_api_injects_flips_faults_and_reads_the_log() {
    let sims = std::sync::Arc::new(vec![
        sim::spawn(instant(Profile::Plain)).unwrap(),
        sim::spawn(instant(Profile::Huawei)).unwrap(),
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, sim::control::router(sims.clone())).into_future());

    let (status, body) = http(addr, "GET", "/modems", "").await;
    assert_eq!(status, 200);
    let modems: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(modems[1]["profile"], "huawei");
    let path = PathBuf::from(modems[0]["device"].as_str().unwrap());
    let mut dte = Dte::open(&path).await;
    dte.cmd("ATE0").await;
    dte.ok("AT+CNMI=2,1,0,0,0").await;

    let (status, body) = http(
        addr,
        "POST",
        "/modems/0/inbound",
        r#"{"from": "+15551230000", "text": "via http"}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"parts":1}"#));
    assert_eq!(
        dte.lines_until("CMTI", |l| l.starts_with("+CMTI")).await,
        ["+CMTI: \"SM\",1"]
    );

    let (status, _) = http(
        addr,
        "PUT",
        "/modems/0/faults",
        r#"{"fail_next": {"count": 1, "code": 500}}"#,
    )
    .await;
    assert_eq!(status, 200);
    within(sims[0].wait_faults(|f| f.fail_next.is_some()))
        .await
        .unwrap();
    let (_, body) = http(addr, "GET", "/modems/0/faults", "").await;
    let faults: Faults = serde_json::from_str(&body).unwrap();
    assert_eq!(
        faults.fail_next,
        Some(FailNext {
            count: 1,
            code: 500
        })
    );
    let part = &submit_parts("+15551234567", "over http", false)[0];
    assert_eq!(dte.send_part(part).await, ["+CMS ERROR: 500"]);
    assert_eq!(dte.send_part(part).await, ["+CMGS: 1", "OK"]);
    within(sims[0].wait_sends(2)).await.unwrap();
    let (status, body) = http(addr, "GET", "/modems/0/sends", "").await;
    assert_eq!(status, 200);
    let sends: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        sends[0]["outcome"],
        serde_json::json!({"failed": {"cms": 500}})
    );
    assert_eq!(
        sends[1]["outcome"],
        serde_json::json!({"sent": {"reference": 1}})
    );
    assert_eq!(sends[1]["recipient"], "+15551234567");
    assert_eq!(sends[1]["text"], "over http");
    assert_eq!(sends[1]["pdu"], part.hex());

    let (status, _) = http(addr, "POST", "/modems/0/garbage", r#"{"hex": "FFFE"}"#).await;
    assert_eq!(status, 204);
    dte.read_until("garbage", |b| {
        b.windows(2).position(|w| w == [0xff, 0xfe]).map(|i| i + 2)
    })
    .await;

    let (status, body) = http(addr, "GET", "/modems/9/faults", "").await;
    assert_eq!(status, 404);
    assert!(body.contains("no_such_modem"), "{body}");
    let (status, body) = http(addr, "PUT", "/modems/0/faults", r#"{"hnag": true}"#).await;
    assert_eq!(status, 400);
    assert!(body.contains("bad_request"), "{body}");

    let (status, _) = http(addr, "POST", "/modems/0/vanish", r#"{"seconds": 0}"#).await;
    assert_eq!(status, 204);
    within(sims[0].wait_new_path(&path)).await.unwrap();
}

#[tokio::test]
async fn simulate_cli_prints_paths_and_serves_until_sigterm() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_modemgate"))
        .args([
            "simulate",
            "--modems",
            "2",
            "--send-delay",
            "0",
            "--profile",
            "ec25,huawei",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let printed = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .take(3)
            .collect::<Result<Vec<String>, _>>()
    });
    let printed = tokio::time::timeout(GUARD, printed)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(printed.len(), 3, "{printed:?}");
    let link0 = dir.path().join("modem0");
    assert_eq!(printed[0], link0.display().to_string());
    assert_eq!(printed[1], dir.path().join("modem1").display().to_string());
    assert!(std::fs::read_link(&link0).unwrap().starts_with("/dev/pts"));
    let control: std::net::SocketAddr = printed[2]
        .strip_prefix("control http://")
        .unwrap()
        .parse()
        .unwrap();
    let mut dte = Dte::open(&link0).await;
    assert_eq!(dte.lines_until("boot", |l| l == "RDY").await, ["RDY"]);
    let (status, body) = http(control, "GET", "/modems", "").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"ec25\"") && body.contains("\"huawei\""),
        "{body}"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!link0.exists(), "links are removed on shutdown");
}

#[test]
fn numbered_modems_look_like_distinct_sims() {
    let sim = |n| SimConfig::new(Profile::Plain).numbered(n);
    let (a, b) = (sim(1), sim(2));
    assert_ne!(a.iccid, b.iccid, "per-SIM caps key on the ICCID");
    assert_ne!(a.imsi, b.imsi);
    assert_ne!(a.imei, b.imei);
    assert_ne!(a.own_number, b.own_number);
    assert_eq!(a.iccid.len(), 19);
}
