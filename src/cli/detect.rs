//! `modemgate modems detect`: which serial ports have a modem behind them, and a `[[modems]]` block for each,
//! so an admin setting up a box copies config instead of guessing which of four ttyUSB ports speaks AT.
//!
//! Ports are probed concurrently, each under one hard deadline, through the same [`Session`] the daemon
//! uses (framing, echo and URC handling, per-command deadlines), so a silent port or a GPS port spewing
//! NMEA costs the deadline and nothing more.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::{Instant, timeout_at};

use crate::at::response::{PinStatus, SignalQuality};
use crate::at::{Final, Line, command, parse_line};
use crate::modem::Timeouts;
use crate::modem::init::busy_retry;
use crate::modem::session::{Expect, Response, Session, SessionError};

#[derive(Debug, clap::Subcommand)]
pub enum ModemsCommand {
    /// Find serial ports that answer AT and print a ready `[[modems]]` block for each.
    Detect(DetectArgs),
}

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Ports to probe (default: /dev/serial/by-path/*, /dev/ttyUSB*, /dev/ttyACM*).
    #[arg(long, num_args = 1..)]
    pub ports: Vec<PathBuf>,
    /// Deadline per port, in seconds (fractions allowed); ports are probed at the same time.
    #[arg(long, default_value = "5", value_parser = seconds)]
    pub timeout: Duration,
}

fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("expected a positive number of seconds, got {text:?}"))
}

/// The names our udev rules give the AT ports of the modems they know (`/dev/modemgate/<usb-path>-if<NN>`):
/// what the shipped config and the unit's device policy expect.
const UDEV_NAMES: &str = "/dev/modemgate";
/// Where udev keeps stable names for every USB serial port: the USB path and interface, the same after
/// every reboot and replug.
const BY_PATH: &str = "/dev/serial/by-path";
/// Kernel names of USB serial ports: option/qcserial modems are ttyUSB, CDC-ACM ones ttyACM.
const KERNEL_PREFIXES: [&str; 2] = ["ttyUSB", "ttyACM"];
/// Serial speed for the probe: USB modems ignore it; UART modules autobaud from the first `AT`.
const BAUD: u32 = 115_200;
/// Part of the deadline the first command (`ATE0`) may use, so a modem that swallows the first command
/// while it autobauds still has time to answer `AT`.
const FIRST_TRY_SHARE: u32 = 3;

/// A port to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    /// What is opened, as given or found.
    open: PathBuf,
    /// What goes into `device =`: a stable link to the same tty when there is one.
    device: PathBuf,
}

/// What a port turned out to be.
#[derive(Debug)]
enum Outcome {
    /// Someone else holds it (exclusive open refused): the daemon, ModemManager, a terminal program.
    Busy,
    OpenFailed(String),
    /// Nothing answered `AT` with OK before the deadline.
    NoAnswer,
    Answered(Found),
}

/// What a modem told us; whatever the deadline or a lost port left unknown stays `None`.
#[derive(Debug, Default)]
struct Found {
    manufacturer: Option<String>,
    model: Option<String>,
    imei: Option<String>,
    sim: Option<String>,
    signal: Option<SignalQuality>,
    /// Why the queries stopped early, if they did.
    cut_short: Option<String>,
}

pub async fn run(args: DetectArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let by_path = list_dir(Path::new(BY_PATH), |_| true);
    let ports = if args.ports.is_empty() {
        let mut ports = by_path.clone();
        ports.extend(list_dir(Path::new("/dev"), |name| {
            KERNEL_PREFIXES.iter().any(|p| name.starts_with(p))
        }));
        ports
    } else {
        args.ports
    };
    // Our own names first: a modem the rules know gets the name they made for it.
    let mut stable = list_dir(Path::new(UDEV_NAMES), |_| true);
    stable.extend(by_path);
    let candidates = candidates(ports, &stable);
    let outcomes = join_all(candidates.iter().map(|c| probe(&c.open, args.timeout))).await;
    let results: Vec<(Candidate, Outcome)> = candidates.into_iter().zip(outcomes).collect();
    out.write_all(render(&results, args.timeout).as_bytes())?;
    Ok(())
}

/// Entries of `dir` whose names pass `keep`, in natural order (ttyUSB2 before ttyUSB10); none if the
/// directory is missing (no USB serial device plugged in has no by-path directory at all).
fn list_dir(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_str().is_some_and(&keep))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    paths.sort_by_key(|p| natural_key(p));
    paths
}

/// `(stem, number)`: the name without its trailing digits, and those digits as a number.
fn natural_key(path: &Path) -> (String, u64) {
    let name = path.to_string_lossy();
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let number = name.get(stem.len()..).and_then(|d| d.parse().ok());
    (stem.to_owned(), number.unwrap_or(0))
}

/// One candidate per tty (a by-path link and the ttyUSB it points to are the same port), named by the
/// first of the `stable` links that points to it, when one does.
fn candidates(ports: Vec<PathBuf>, stable: &[PathBuf]) -> Vec<Candidate> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let links: Vec<(PathBuf, &PathBuf)> = stable.iter().map(|l| (real(l), l)).collect();
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for port in ports {
        let target = real(&port);
        if seen.contains(&target) {
            continue;
        }
        let device = links
            .iter()
            .find(|(t, _)| *t == target)
            .map_or_else(|| port.clone(), |(_, link)| (*link).clone());
        seen.push(target);
        out.push(Candidate { open: port, device });
    }
    out
}

async fn probe(path: &Path, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let port =
        match tokio_serial::SerialStream::open(&tokio_serial::new(path.to_string_lossy(), BAUD)) {
            Ok(port) => port,
            Err(e) if e.kind == tokio_serial::ErrorKind::NoDevice => return Outcome::Busy,
            Err(e) => return Outcome::OpenFailed(e.to_string()),
        };
    let mut session = Session::new(Box::new(port));
    if !answers(&mut session, deadline, timeout).await {
        return Outcome::NoAnswer;
    }
    let mut found = Found::default();
    let t = Timeouts {
        command: deadline.saturating_duration_since(Instant::now()),
        ..Timeouts::default()
    };
    found.cut_short = match timeout_at(deadline, query(&mut session, &t, &mut found)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("deadline of {}s reached", timeout.as_secs_f64())),
    };
    Outcome::Answered(found)
}

/// `ATE0` (it also wakes an autobauding UART) and `ATQ0V1` (a saved profile with numeric or no result
/// codes would leave the AT unanswered), both best effort, then `AT`, which must say OK.
async fn answers(session: &mut Session, deadline: Instant, timeout: Duration) -> bool {
    for setting in [command::ECHO_OFF, command::VERBOSE_RESULTS] {
        match session
            .command(setting, Expect::NOTHING, timeout / FIRST_TRY_SHARE)
            .await
        {
            // A port opened as the modem starts up: its RDY cuts the command short, and it answers the AT.
            Ok(_) | Err(SessionError::Timeout { .. } | SessionError::Restarted { .. }) => {}
            Err(_) => return false,
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    matches!(
        session.command(command::PROBE, Expect::NOTHING, left).await,
        Ok(Response {
            result: Final::Ok,
            ..
        })
    )
}

/// Identity, SIM and signal, filled in as they come so a deadline keeps what was learnt.
async fn query(session: &mut Session, t: &Timeouts, found: &mut Found) -> Result<(), SessionError> {
    found.manufacturer = value(session, t, command::MANUFACTURER, "+CGMI").await?;
    found.model = value(session, t, command::MODEL, "+CGMM").await?;
    found.imei = value(session, t, command::IMEI, "+CGSN").await?;
    // Some modems (Wavecom) answer `AT+CPIN?` with the status line and no OK.
    let cpin = Expect {
        prefix: Some("+CPIN"),
        info_is_final_after: Some(Duration::from_millis(500)),
    };
    let r = busy_retry(session, command::PIN_QUERY, cpin, t).await?;
    found.sim = Some(match (&r.result, r.info("+CPIN").next()) {
        (Final::Ok, Some(body)) => sim_text(&PinStatus::parse(&body)),
        (Final::Ok, None) => "SIM ready".into(),
        (Final::Cme(e), _) => format!("SIM {e}"),
        (other, _) => format!("SIM state unknown ({other:?})"),
    });
    let r = busy_retry(session, command::SIGNAL, Expect::info("+CSQ"), t).await?;
    found.signal = r.info("+CSQ").find_map(|b| SignalQuality::parse(&b).ok());
    Ok(())
}

fn sim_text(status: &PinStatus) -> String {
    match status {
        PinStatus::Ready => "SIM ready".into(),
        PinStatus::SimPin => "SIM PIN required".into(),
        PinStatus::SimPuk => "SIM PUK required".into(),
        PinStatus::Other(what) => format!("SIM {what}"),
    }
}

/// A one-value answer, bare (`EC25`) or prefixed (`+CGMM: EC25`), quotes removed; `None` if refused.
async fn value(
    session: &mut Session,
    t: &Timeouts,
    cmd: &str,
    prefix: &'static str,
) -> Result<Option<String>, SessionError> {
    let r = busy_retry(session, cmd, Expect::info(prefix), t).await?;
    if !r.is_ok() {
        return Ok(None);
    }
    Ok(r.lines.iter().find_map(|raw| {
        let text = match parse_line(raw) {
            Line::Info(info) if info.name == prefix => info.body,
            Line::Text(text) => text,
            _ => return None,
        };
        let text = text.trim().trim_matches('"').trim();
        (!text.is_empty()).then(|| text.to_owned())
    }))
}

/// The report: a `[[modems]]` block per modem, a comment per port that is not one.
fn render(results: &[(Candidate, Outcome)], timeout: Duration) -> String {
    let answered = results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Answered(_)))
        .count();
    let mut text = String::new();
    if results.is_empty() {
        let _ = writeln!(
            text,
            "# modemgate modems detect: no serial ports found in {BY_PATH}, /dev/ttyUSB*, /dev/ttyACM*"
        );
        return text;
    }
    let _ = writeln!(
        text,
        "# modemgate modems detect: {} port(s) probed, {answered} answered AT",
        results.len()
    );
    let mut ids: Vec<String> = Vec::new();
    for (n, (candidate, outcome)) in results.iter().enumerate() {
        let device = candidate.device.display().to_string();
        let note = match outcome {
            Outcome::Busy => {
                "busy (held open by another program: modemgate, ModemManager, a terminal)"
                    .to_owned()
            }
            Outcome::OpenFailed(e) => format!("cannot open: {e}"),
            Outcome::NoAnswer => format!("no answer within {}s", timeout.as_secs_f64()),
            Outcome::Answered(found) => {
                let id = unique(modem_id(found, n + 1), &ids);
                ids.push(id.clone());
                let _ = write!(text, "\n# {}: {}\n", comment(&device), describe(found));
                let _ = write!(
                    text,
                    "[[modems]]\nid = {}\ndevice = {}\n",
                    toml_string(&id),
                    toml_string(&device)
                );
                // Inside the block: a line above its header would belong to the table before it.
                if found.sim.as_deref() == Some("SIM PIN required") {
                    text.push_str("# pin = \"0000\"    # the SIM asks for a PIN: set it here\n");
                }
                continue;
            }
        };
        let _ = write!(text, "\n# {}: {note}\n", comment(&device));
    }
    text
}

fn describe(found: &Found) -> String {
    let unknown = || "?".to_owned();
    let mut parts = vec![
        format!(
            "{} {}",
            found.manufacturer.clone().unwrap_or_else(unknown),
            found.model.clone().unwrap_or_else(unknown)
        ),
        format!("IMEI {}", found.imei.clone().unwrap_or_else(unknown)),
        found.sim.clone().unwrap_or_else(|| "SIM ?".into()),
        match found.signal.and_then(|s| s.rssi()) {
            Some(rssi) => format!("signal {} dBm (rssi {rssi})", -113 + 2 * i32::from(rssi)),
            None => "signal unknown".into(),
        },
    ];
    if let Some(why) = &found.cut_short {
        parts.push(format!("queries stopped: {why}"));
    }
    comment(&parts.join(", "))
}

/// `model-1234`: the model (lowercased, limited to what an id may hold) and the IMEI's last four digits,
/// which tell two modems of one model apart and stay the same when the modem moves to another port.
/// Without an IMEI, the port's position in the report stands in.
fn modem_id(found: &Found, ordinal: usize) -> String {
    let mut model = String::new();
    for c in found.model.as_deref().unwrap_or("modem").chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '_' {
            model.push(c);
        } else if !model.is_empty() && !model.ends_with('-') {
            model.push('-');
        }
    }
    let mut model = model.trim_end_matches('-').to_owned();
    if model.is_empty() {
        model = "modem".into();
    }
    model.truncate(26);
    let digits: Vec<char> = found
        .imei
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let suffix = match digits.len() {
        0..4 => ordinal.to_string(),
        n => digits.get(n - 4..).unwrap_or_default().iter().collect(),
    };
    format!("{}-{suffix}", model.trim_end_matches('-'))
}

/// `id`, or `id-2`, `id-3`... when taken (two modems whose IMEIs end alike).
fn unique(id: String, taken: &[String]) -> String {
    if !taken.contains(&id) {
        return id;
    }
    (2..)
        .map(|n| format!("{id}-{n}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or(id)
}

/// Text from a modem or a file name made safe for a one-line comment.
fn comment(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(model: Option<&str>, imei: Option<&str>) -> Found {
        Found {
            model: model.map(str::to_owned),
            imei: imei.map(str::to_owned),
            ..Found::default()
        }
    }

    #[test]
    fn ids_are_model_and_imei_tail() {
        assert_eq!(
            modem_id(&found(Some("EC25"), Some("861234050123456")), 1),
            "ec25-3456"
        );
        assert_eq!(
            modem_id(&found(Some("SIMCOM_SIM7600E-H"), Some("8612")), 1),
            "simcom_sim7600e-h-8612"
        );
        assert_eq!(
            modem_id(&found(Some("  E3372 (stick) "), None), 3),
            "e3372-stick-3"
        );
        assert_eq!(modem_id(&found(None, Some("x")), 2), "modem-2");
        let long = modem_id(&found(Some(&"A".repeat(60)), Some("123456")), 1);
        assert!(long.len() <= 32, "{long}");
        assert_eq!(
            unique("ec25-3456".into(), &["ec25-3456".into()]),
            "ec25-3456-2"
        );
    }

    #[test]
    fn natural_order_puts_usb2_before_usb10() {
        let mut ports = vec![
            PathBuf::from("/dev/ttyUSB10"),
            PathBuf::from("/dev/ttyACM0"),
            PathBuf::from("/dev/ttyUSB2"),
        ];
        ports.sort_by_key(|p| natural_key(p));
        assert_eq!(
            ports,
            ["/dev/ttyACM0", "/dev/ttyUSB2", "/dev/ttyUSB10"].map(PathBuf::from)
        );
    }

    #[test]
    fn a_by_path_link_names_its_tty_once() {
        let dir = tempfile::tempdir().unwrap();
        let tty = dir.path().join("ttyUSB2");
        std::fs::write(&tty, "").unwrap();
        let link = dir.path().join("pci-0000:00:14.0-usb-0:2:1.2-port0");
        std::os::unix::fs::symlink(&tty, &link).unwrap();
        let other = dir.path().join("ttyUSB3");
        let by_path = [link.clone()];
        let got = candidates(vec![link.clone(), tty.clone(), other.clone()], &by_path);
        assert_eq!(
            got,
            [
                Candidate {
                    open: link.clone(),
                    device: link.clone()
                },
                Candidate {
                    open: other.clone(),
                    device: other
                },
            ]
        );
        // Given only the kernel name, the config still gets the stable one.
        assert_eq!(candidates(vec![tty.clone()], &by_path)[0].device, link);
        // The udev rules' own name, listed first, wins over the by-path one.
        let ours = dir.path().join("pci-0000:00:14.0-usb-0:2:1-if02");
        std::os::unix::fs::symlink(&tty, &ours).unwrap();
        let got = candidates(vec![link.clone(), tty], &[ours.clone(), link.clone()]);
        assert_eq!(
            got,
            [Candidate {
                open: link,
                device: ours
            }]
        );
    }

    #[test]
    fn the_report_is_valid_toml_with_a_pin_hint_and_notes() {
        let port = |p: &str| Candidate {
            open: PathBuf::from(p),
            device: PathBuf::from(p),
        };
        let results = [
            (
                port("/dev/ttyUSB2"),
                Outcome::Answered(Found {
                    sim: Some("SIM PIN required".into()),
                    cut_short: Some("deadline of 5s reached".into()),
                    ..found(Some("EC25"), Some("861234050123456"))
                }),
            ),
            (port("/dev/ttyUSB3"), Outcome::Busy),
            (port("/dev/ttyUSB4"), Outcome::NoAnswer),
            (
                port("/dev/ttyUSB5"),
                Outcome::Answered(found(Some("EC25"), Some("3456"))),
            ),
        ];
        let text = render(&results, Duration::from_secs(5));
        assert!(text.contains("# pin = \"0000\""), "{text}");
        assert!(
            text.contains("queries stopped: deadline of 5s reached"),
            "{text}"
        );
        assert!(
            text.contains("# /dev/ttyUSB4: no answer within 5s\n"),
            "{text}"
        );
        let config = crate::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let ids: Vec<&str> = config.modems.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["ec25-3456", "ec25-3456-2"]);
        // Uncommented, the PIN belongs to the modem whose SIM asked for it, and to no other.
        let uncommented = text.replace("# pin = ", "pin = ");
        let config = crate::config::Config::parse(&uncommented)
            .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        let pins: Vec<bool> = config.modems.iter().map(|m| m.pin.is_some()).collect();
        assert_eq!(pins, [true, false], "{uncommented}");
    }

    #[test]
    fn strings_are_valid_toml() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("x\ny"), r#""x\u000Ay""#);
    }
}
