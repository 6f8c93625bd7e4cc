//! The simulator driven over real ptys with tokio-serial, as a DTE would: raw bytes in and out, no
//! `modemgate::at` or `modemgate::modem` involved. Every wait is on an event (bytes arriving, a watch
//! channel); the only timeouts are failure guards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use modemgate::sim::{self, FailNext, Faults, Inbound, Profile, SimConfig, SimHandle};
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

fn instant(profile: Profile) -> SimConfig {
    SimConfig::instant(profile)
}

async fn start(config: SimConfig) -> (SimHandle, Dte) {
    let sim = sim::spawn(config).unwrap();
    let dte = Dte::open(&sim.device()).await;
    (sim, dte)
}

/// A started modem with echo off and the boot burst consumed up to `last_boot_line`.
async fn ready(config: SimConfig) -> (SimHandle, Dte) {
    let (sim, mut dte) = start(config).await;
    let _ = dte.cmd("ATE0").await;
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
    sim.wait_faults(|f| f.hang).await.unwrap();
    // Swallowed: no echo, no answer, ever.
    dte.write(b"AT+CGMI\r").await;
    drop(dte);
    let mut dte = Dte::open(&sim.device()).await;
    sim.wait_faults(|f| !f.hang).await.unwrap();
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
    sim.wait_faults(|f| f.interleave_urcs).await.unwrap();
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
    sim.wait_faults(|f| f.storage_full).await.unwrap();
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
    sim.vanish(Duration::ZERO).unwrap();
    // The open port dies: reads fail or hit end of file.
    let mut chunk = [0u8; 64];
    let dead = tokio::time::timeout(GUARD, dte.port.read(&mut chunk))
        .await
        .unwrap();
    assert!(matches!(dead, Err(_) | Ok(0)), "{dead:?}");
    let new = sim.wait_new_path(&old).await.unwrap();
    assert_ne!(new, old);
    assert_eq!(std::fs::read_link(sim.device()).unwrap(), new);
    let mut dte = Dte::open(&sim.device()).await;
    let boot = dte.lines_until("boot", |l| l == "PB DONE").await;
    assert_eq!(boot[0], "RDY");
    assert_eq!(dte.cmd("AT").await, ["AT", "OK"]);
    sim.shutdown().await;
    assert!(!sim.device().exists(), "the link goes with the modem");
}

fn _unused(_: PathBuf, _: FailNext, _: Faults, _: Inbound) {}
