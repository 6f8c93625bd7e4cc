//! The operator commands as an admin runs them: the real binary against an in-process gateway with
//! simulated modems (`status`, `send`), and `modems detect` against real ptys (a simulator, a silent one,
//! one held open by someone else).

mod common;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Http, TOKEN};
use modemgate::config::Config;
use modemgate::daemon::{self, Running, StartOptions};
use modemgate::sim::{self, Profile, SimConfig};
use nix::sys::termios;
use serde_json::json;

/// Writes the config file the commands read their token (and, without `--url`, their URL) from.
fn write_config(dir: &Path, listen: &str) -> PathBuf {
    write_config_with(dir, listen, "")
}

/// [`write_config`] with `m1_extra` appended to modem m1's table.
fn write_config_with(dir: &Path, listen: &str, m1_extra: &str) -> PathBuf {
    let path = dir.join("modemgate.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "{listen}"
default_region = "US"
[storage]
path = "{db}"
[[api_keys]]
name = "ops"
token = "{TOKEN}"
scopes = ["send", "read"]
[[modems]]
id = "m1"
device = "sim:ec25"
rate = "600/min"
daily_cap = 300
{m1_extra}
[quiet_hours]
enabled = false
"#,
            db = dir.join("gw.db").display()
        ),
    )
    .unwrap();
    path
}

async fn gateway(dir: &Path) -> (Running, PathBuf) {
    gateway_with(dir, "").await
}

async fn gateway_with(dir: &Path, m1_extra: &str) -> (Running, PathBuf) {
    let path = write_config_with(dir, "127.0.0.1:0", m1_extra);
    (start(&path).await, path)
}

/// The daemon in-process on the config at `path`, with simulators that answer at once.
async fn start(path: &Path) -> Running {
    let config = Config::load(path).unwrap();
    daemon::start(
        &config,
        StartOptions {
            instant_sims: true,
            ..StartOptions::default()
        },
    )
    .await
    .unwrap()
}

/// Run `modemgate ARGS...` off the runtime's threads, so the gateway and simulators keep serving it.
async fn modemgate(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_modemgate"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// `modemgate send --to TO --text TEXT [EXTRA...]` against the gateway at `url`, with the token from `config`.
async fn send(config: &Path, url: &str, to: &str, text: &str, extra: &[&str]) -> Output {
    let mut list = args(&["send", "--to", to, "--text", text]);
    list.extend(args(extra));
    list.extend(args(&["--config", config.to_str().unwrap(), "--url", url]));
    modemgate(list).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The value of `key` in `send`'s `key value` lines; the last one for `status`, which repeats as it changes.
fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .rev()
        .filter_map(|l| l.strip_prefix(key))
        .find(|rest| rest.starts_with(' '))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_waits_for_the_sim_and_status_shows_the_modem_and_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, config) = gateway(dir.path()).await;
    let url = format!("http://{}", gateway.addr);
    let sent = send(
        &config,
        &url,
        "4158906431",
        "Test from the shell",
        &["--wait"],
    )
    .await;
    let config = config.to_str().unwrap();
    let out = stdout(&sent);
    assert!(sent.status.success(), "{out}{}", stderr(&sent));
    assert_eq!(field(&out, "to"), Some("+14158906431"), "{out}");
    assert_eq!(field(&out, "parts"), Some("1"), "{out}");
    assert_eq!(field(&out, "encoding"), Some("gsm7"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["status", "queued"])),
        "{out}"
    );
    let status = field(&out, "status").unwrap();
    assert!(["sent", "delivered"].contains(&status), "{out}");
    assert_eq!(field(&out, "modem"), Some("m1"), "{out}");
    // The id printed is the message the modem sent.
    let id = field(&out, "id").unwrap();
    let message = Http::new(gateway.addr)
        .get(&format!("/v1/messages/{id}"))
        .await;
    assert_eq!(message["text"], "Test from the shell");
    let sends = gateway.sim("m1").unwrap().sends();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].submit.recipient.value, "+14158906431");

    // One message held for an hour shows in the queue counts.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    let (code, held) = Http::new(gateway.addr)
        .post(
            "/v1/messages",
            json!({"to": "+14158906432", "text": "later", "send_at": later}),
        )
        .await;
    assert_eq!(code.as_u16(), 202, "{held}");
    assert_eq!(held["status"], "scheduled");

    let shown = modemgate(args(&["status", "--config", config, "--url", &url])).await;
    let out = stdout(&shown);
    assert!(shown.status.success(), "{out}{}", stderr(&shown));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(format!("modemgate at {url}").as_str()));
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "MODEM",
            "STATE",
            "ANSWERED",
            "SIGNAL",
            "OPERATOR",
            "CS/PS/EPS",
            "TODAY/CAP",
            "SENT",
            "FAILED",
            "RECEIVED",
            "LAST",
            "ERROR"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["m1", "ready"], "{out}");
    // It answered its last health poll since it became ready, seconds ago.
    assert_eq!(row[3..5], ["s", "ago"], "{out}");
    assert!(row[2].parse::<u32>().is_ok_and(|s| s < 120), "{out}");
    assert_eq!(row[5..8], ["####", "-73", "dBm"], "{out}");
    assert_eq!(row[8], "SIMNET", "{out}");
    assert_eq!(row[10..14], ["1/300", "1", "0", "0"], "{out}");
    assert_eq!(
        lines.next(),
        Some("queue: 0 queued, 1 scheduled, 0 sending; last 24 h: 0 failed, 0 unknown"),
        "{out}"
    );
    assert_eq!(lines.next(), Some("store: ready"), "{out}");
    gateway.stop().await;
}

/// `send --delivered` follows the message past `sent` to its delivery report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_delivered_waits_for_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, config) = gateway(dir.path()).await;
    let url = format!("http://{}", gateway.addr);
    let output = send(
        &config,
        &url,
        "4158906431",
        "reached the phone?",
        &["--delivered"],
    )
    .await;
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert_eq!(field(&out, "status"), Some("delivered"), "{out}");
    assert!(!out.contains("not waited for"), "{out}");
    gateway.stop().await;
}

/// `send --wait` that runs out of time says why the message is still queued, as the API does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_no_modem_can_take_says_why_when_the_wait_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, config) = gateway_with(dir.path(), "paused = true").await;
    let url = format!("http://{}", gateway.addr);
    let output = send(
        &config,
        &url,
        "4158906431",
        "held",
        &["--wait", "--wait-timeout", "1"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let id = field(&stdout(&output), "id").unwrap().to_owned();
    assert_eq!(
        stderr(&output).trim_end(),
        format!(
            "modemgate: message {id} is still queued after 1s: waiting: no modem can send it now \
             (m1 is paused)"
        )
    );
    assert!(gateway.sim("m1").unwrap().sends().is_empty());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_prints_the_api_code_and_field_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, config) = gateway(dir.path()).await;
    let url = format!("http://{}", gateway.addr);
    let output = send(&config, &url, "12", "hi", &[]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty());
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("modemgate: POST /v1/messages: HTTP 422 invalid_number (field `to`): "),
        "{err}"
    );
    // A wrong token is the API's 401, also one line.
    let output = modemgate(args(&[
        "status",
        "--url",
        &url,
        "--token",
        "wrong",
        "--config",
        "/nonexistent",
    ]))
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("HTTP 401"), "{}", stderr(&output));
    gateway.stop().await;
}

#[tokio::test]
async fn status_and_send_say_so_when_the_daemon_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(dir.path(), &format!("127.0.0.1:{port}"));
    let config = config.to_str().unwrap();
    for command in [
        args(&["status", "--config", config]),
        args(&[
            "send",
            "--to",
            "+14158906431",
            "--text",
            "x",
            "--config",
            config,
        ]),
    ] {
        let output = modemgate(command).await;
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            stderr(&output).trim_end(),
            format!(
                "modemgate: modemgate is not running at http://127.0.0.1:{port}: connection refused"
            )
        );
    }
}

/// A raw pty nobody answers on; both ends stay open while it lives.
struct SilentPty {
    _master: OwnedFd,
    slave: OwnedFd,
}

impl SilentPty {
    fn open() -> SilentPty {
        let pair = nix::pty::openpty(None, None).unwrap();
        let mut attrs = termios::tcgetattr(&pair.slave).unwrap();
        termios::cfmakeraw(&mut attrs);
        termios::tcsetattr(&pair.slave, termios::SetArg::TCSANOW, &attrs).unwrap();
        SilentPty {
            _master: pair.master,
            slave: pair.slave,
        }
    }

    fn path(&self) -> PathBuf {
        nix::unistd::ttyname(&self.slave).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_prints_a_config_block_for_the_modem_and_names_the_others() {
    let modem = sim::spawn(SimConfig::instant(Profile::Ec25)).unwrap();
    let silent = SilentPty::open();
    let held = SilentPty::open();
    let _holder = tokio_serial::SerialStream::open(&tokio_serial::new(
        held.path().to_string_lossy(),
        115_200,
    ))
    .unwrap();
    let (modem_path, silent_path, held_path) = (
        modem.path().display().to_string(),
        silent.path().display().to_string(),
        held.path().display().to_string(),
    );

    let output = modemgate(args(&[
        "modems",
        "detect",
        "--ports",
        &modem_path,
        &silent_path,
        &held_path,
        "--timeout",
        "3",
    ]))
    .await;
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert!(
        out.starts_with("# modemgate modems detect: 3 port(s) probed, 1 answered AT\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "# {modem_path}: Quectel EC25, IMEI 861234050123456, SIM ready, signal -73 dBm (rssi 20)\n\
             [[modems]]\nid = \"ec25-3456\"\ndevice = \"{modem_path}\"\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("# {silent_path}: no answer within 3s\n")),
        "{out}"
    );
    assert!(out.contains(&format!("# {held_path}: busy (")), "{out}");

    // What it printed is a valid config, as pasted under the rest of one.
    let pasted = format!("[[api_keys]]\nname = \"ops\"\ntoken = \"t\"\nscopes = [\"read\"]\n{out}");
    let config = Config::parse(&pasted).unwrap_or_else(|e| panic!("{e}\n{pasted}"));
    assert_eq!(config.modems.len(), 1);
    assert_eq!(config.modems[0].id.as_str(), "ec25-3456");
    assert_eq!(
        config.modems[0].device,
        modemgate::config::Device::Serial(modem.path())
    );
    modem.shutdown().await;
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    // `modemgate pdu decode ... | head -0`: the reader is gone before the first write.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_modemgate"))
        .args([
            "pdu",
            "decode",
            "0791448720003023240DD0E474D81C0EBB010000111011315214000BE474D81C0EBB5DE3771B",
        ])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(
        (output.status.success(), stderr(&output)),
        (true, String::new())
    );
}

/// Against a daemon serving TLS, `status` takes the URL and the certificate to trust from the config (the
/// daemon is reached at 127.0.0.1, which a real certificate for the box's name would not cover); a URL
/// given with --url is checked against the system's CA store, which does not hold the test certificate,
/// and the refusal says it is about trust, not a daemon that is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_trusts_the_certificate_the_config_names() {
    let dir = tempfile::tempdir().unwrap();
    let tls = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");
    let with_tls = |listen: &str| {
        let path = write_config(dir.path(), listen);
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "default_region = \"US\"\n",
            &format!(
                "default_region = \"US\"\ntls_cert = \"{tls}/cert.pem\"\ntls_key = \"{tls}/key.pem\"\n"
            ),
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let gateway = start(&with_tls("127.0.0.1:0")).await;
    // What the CLI reads: the port the daemon got.
    let path = with_tls(&gateway.addr.to_string());
    let config = path.to_str().unwrap();

    let shown = modemgate(args(&["status", "--config", config])).await;
    let out = stdout(&shown);
    assert!(shown.status.success(), "{out}{}", stderr(&shown));
    let url = format!("https://{}", gateway.addr);
    assert_eq!(
        out.lines().next(),
        Some(format!("modemgate at {url}").as_str())
    );
    assert!(out.lines().nth(2).unwrap().starts_with("m1 "), "{out}");

    let refused = modemgate(args(&["status", "--config", config, "--url", &url])).await;
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr(&refused);
    assert!(
        err.starts_with(&format!("modemgate: modemgate at {url} refused over TLS: ")),
        "{err}"
    );
    gateway.stop().await;
}
