//! The appliance around the daemon: `modemgate check-config` run as the real binary on good and bad files,
//! the shipped configs, and the library loader the daemon uses on them.

use std::path::{Path, PathBuf};
use std::process::Command;

use modemgate::config::{Config, Credential, Device};
use modemgate::sim::Profile;

/// What one run of `modemgate check-config` did.
struct Checked {
    status: i32,
    lines: Vec<String>,
    path: PathBuf,
}

fn check_file(path: &Path) -> Checked {
    let output = Command::new(env!("CARGO_BIN_EXE_modemgate"))
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    Checked {
        status: output.status.code().unwrap(),
        lines: stdout.lines().map(str::to_owned).collect(),
        path: path.to_owned(),
    }
}

/// Write `text` to a fresh file and check it; the tempdir lives as long as the result needs the path.
fn check_text(text: &str) -> (Checked, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("modemgate.toml");
    std::fs::write(&path, text).unwrap();
    (check_file(&path), dir)
}

impl Checked {
    /// The lines that are errors (not warnings, not the final "ok").
    fn errors(&self) -> Vec<&str> {
        let prefix = format!("{}:", self.path.display());
        self.lines
            .iter()
            .filter(|l| {
                l.starts_with(&prefix) && !l.contains(": warning: ") && !l.ends_with(": ok")
            })
            .map(String::as_str)
            .collect()
    }

    fn warnings(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.contains(": warning: "))
            .map(String::as_str)
            .collect()
    }
}

/// Assert the file fails with exactly one error, `PATH:LINE: ...FRAGMENT...`.
fn assert_one_error(text: &str, line: usize, fragment: &str) {
    let (checked, _dir) = check_text(text);
    assert_eq!(
        checked.status, 1,
        "exit status; output: {:#?}",
        checked.lines
    );
    let errors = checked.errors();
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    let expected_prefix = format!("{}:{line}: ", checked.path.display());
    assert!(
        errors[0].starts_with(&expected_prefix),
        "wanted line {line}: {}",
        errors[0]
    );
    assert!(
        errors[0].contains(fragment),
        "wanted {fragment:?} in {}",
        errors[0]
    );
}

const MODEM: &str = "[[modems]]\nid = \"m1\"\ndevice = \"/dev/ttyUSB2\"\n";
const KEY: &str = "[[api_keys]]\nname = \"cms\"\ntoken = \"t0ken\"\nscopes = [\"send\"]\n";

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

/// The only warnings are for its four example modems, whose USB paths are not plugged in here.
#[test]
fn shipped_production_config_passes_check_config_without_other_warnings() {
    let checked = check_file(&shipped("modemgate.toml"));
    assert_eq!(checked.status, 0, "{:#?}", checked.lines);
    assert!(checked.errors().is_empty(), "{:#?}", checked.lines);
    let warnings = checked.warnings();
    assert_eq!(warnings.len(), 4, "{warnings:#?}");
    for warning in warnings {
        assert!(
            warning.contains("device `/dev/modemgate/") && warning.contains("does not exist now"),
            "{warning}"
        );
    }
    assert_eq!(
        checked.lines.last(),
        Some(&format!("{}: ok", checked.path.display()))
    );
}

/// A device path that is missing, or is not a character device, draws a warning at its line; a real
/// character device (here /dev/null, which a serial port is like) draws none.
#[test]
fn check_config_warns_about_a_missing_or_non_serial_device() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-tty");
    std::fs::write(&file, "").unwrap();
    let modem =
        |id: &str, device: &str| format!("[[modems]]\nid = \"{id}\"\ndevice = \"{device}\"\n");
    let text = format!(
        "{KEY}{}{}{}",
        modem("gone", "/dev/modemgate/nothing-here"),
        modem("file", &file.display().to_string()),
        modem("char", "/dev/null"),
    );
    let config = dir.path().join("c.toml");
    std::fs::write(&config, text).unwrap();
    let checked = check_file(&config);
    assert_eq!(checked.status, 0, "{:#?}", checked.lines);
    // Besides the ones this minimal config draws anyway (no opt-out notice).
    let warnings: Vec<_> = checked
        .warnings()
        .into_iter()
        .filter(|w| w.contains("warning: modem `"))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].contains(
            ":7: warning: modem `gone`: device `/dev/modemgate/nothing-here` does not exist now"
        ),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].contains(":10: warning: modem `file`:")
            && warnings[1].contains("is not a character device"),
        "{warnings:#?}"
    );
}

#[test]
fn shipped_demo_config_passes_check_config() {
    let checked = check_file(&shipped("demo.toml"));
    assert_eq!(checked.status, 0, "{:#?}", checked.lines);
    assert!(checked.errors().is_empty(), "{:#?}", checked.lines);
    // The one warning is the deliberate one, explained in the file.
    let warnings = checked.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("quiet hours are off"),
        "{}",
        warnings[0]
    );
}

#[test]
fn shipped_configs_load_into_the_types_the_daemon_uses() {
    let production = Config::load(&shipped("modemgate.toml")).unwrap();
    assert_eq!(production.modems.len(), 4);
    assert!(
        production
            .modems
            .iter()
            .all(|m| matches!(&m.device, Device::Serial(p) if p.starts_with("/dev/modemgate/")))
    );
    assert!(production.quiet_hours.enabled);
    let rules = production.rules();
    assert_eq!(rules.reply_rules.len(), 2);
    assert!(rules.optout.notice.is_some() && rules.quiet_hours.default_tz.is_none());
    assert_eq!(rules.caps, modemgate::rules::CapsConfig::default());
    assert!(
        production
            .api_keys
            .iter()
            .all(|k| matches!(k.credential, Credential::Sha256(_)))
    );
    assert_eq!(production.modems[0].rate.to_string(), "6/min");

    let demo = Config::load(&shipped("demo.toml")).unwrap();
    assert_eq!(demo.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(demo.storage.path, Path::new("data/modemgate.db"));
    assert!(!demo.quiet_hours.enabled);
    let profiles: Vec<_> = demo.modems.iter().map(|m| m.device.clone()).collect();
    assert!(
        profiles.contains(&Device::Sim(Profile::Ec25)),
        "{profiles:?}"
    );
    assert!((2..=4).contains(&demo.modems.len()));
    // Debug output (what a careless `{config:?}` in a log line prints) hides every secret.
    assert!(!format!("{production:?}").contains("replace-with-a-long-random-secret"));
    assert!(!format!("{demo:?}").contains("demo-token"));
    let key = &demo.api_keys[0];
    assert!(key.credential.matches("demo-token"));
    assert_eq!(key.scopes.len(), 3);
}

#[test]
fn toml_syntax_error_is_reported_at_its_line() {
    assert_one_error(
        &format!("{KEY}{MODEM}[server]\nlisten = \"127.0.0.1:8080\n"),
        9,
        "string",
    );
}

#[test]
fn unknown_key_is_an_error_at_its_line() {
    assert_one_error(
        &format!("{KEY}{MODEM}baudrate = 9600\n"),
        8,
        "unknown field `baudrate`",
    );
}

#[test]
fn unknown_section_is_an_error_at_its_line() {
    assert_one_error(
        &format!("{KEY}{MODEM}\n[quiet_hour]\nenabled = false\n"),
        9,
        "unknown field `quiet_hour`",
    );
}

#[test]
fn bad_rate_is_an_error_at_its_line() {
    assert_one_error(
        &format!("{KEY}{MODEM}rate = \"6/fortnight\"\n"),
        8,
        "invalid rate `6/fortnight`",
    );
}

#[test]
fn bad_duration_is_an_error_at_its_line() {
    assert_one_error(
        &format!("{KEY}{MODEM}[dispatch]\nmax_attempts = 3\nretry_backoff = \"30 seconds\"\n"),
        10,
        "invalid duration",
    );
}

#[test]
fn bad_region_is_an_error_at_its_line() {
    assert_one_error(
        &format!("{KEY}{MODEM}[server]\ndefault_region = \"XX\"\n"),
        9,
        "unknown region `XX`",
    );
}

#[test]
fn bad_time_zone_is_an_error_at_its_line() {
    assert_one_error(
        &format!("{KEY}{MODEM}[quiet_hours]\ndefault_tz = \"America/Gotham\"\n"),
        9,
        "unknown time zone",
    );
}

#[test]
fn bad_quiet_hours_window_is_an_error_at_its_line() {
    assert_one_error(
        &format!(
            "{KEY}{MODEM}[quiet_hours]\nenabled = true\nwindows = [{{ days = \"mon-fri\", start = \"21:00\", end = \"08:00\" }}]\n"
        ),
        10,
        "not before its end",
    );
}

#[test]
fn bad_contact_cap_is_an_error_at_its_line() {
    assert_one_error(
        &format!("{KEY}{MODEM}[[caps.rules]]\nprefixes = [\"1617\"]\nmax = 2\nwindow = \"168h\"\n"),
        8,
        "prefix \"1617\" is not + followed by digits",
    );
}

#[test]
fn bad_keyword_language_is_an_error_at_its_line() {
    assert_one_error(
        &format!("{KEY}{MODEM}[keywords]\nopt_out = [{{ word = \"halt\", language = \"de\" }}]\n"),
        9,
        "unknown variant `de`",
    );
}

#[test]
fn bad_optout_setting_is_an_error_at_its_line() {
    assert_one_error(
        &format!(
            "{KEY}{MODEM}[optout]\nconfirmation = {{ en = \"Stopped.\" }}\nnotice_mode = \"sometimes\"\n"
        ),
        10,
        "unknown variant `sometimes`",
    );
}

#[test]
fn bad_reply_rule_template_is_an_error_at_its_line() {
    assert_one_error(
        &format!(
            "{KEY}{MODEM}[[reply_rules]]\nkeywords = [\"1\"]\nintent = \"pay\"\ntemplate = \"Pay at {{paymentLink\"\n"
        ),
        11,
        "unclosed `{`",
    );
}

#[test]
fn reply_keyword_used_twice_is_an_error_at_the_second_rule() {
    let rule = "[[reply_rules]]\nkeywords = [\"1\", \"PAY\"]\nintent = \"pay\"\ntemplate = \"x\"\n";
    let text = format!("{KEY}{MODEM}{rule}{}", rule.replace("\"1\", ", ""));
    assert_one_error(&text, 13, "reply keyword `pay` is already used");
    assert_one_error(
        &format!(
            "{KEY}{MODEM}[keywords]\nopt_out = [{{ word = \"pay\", language = \"en\" }}]\n{rule}"
        ),
        11,
        "reply keyword `pay` is also a [keywords] opt-out",
    );
}

#[test]
fn duplicate_modem_id_is_an_error_at_the_second() {
    let text = format!("{KEY}{MODEM}{}", MODEM.replace("ttyUSB2", "ttyUSB6"));
    assert_one_error(&text, 9, "duplicate modem id `m1` (first at line 6)");
}

#[test]
fn a_webhook_url_twice_or_a_webhook_name_twice_is_an_error_at_the_second() {
    let hook = |name: &str, path: &str| {
        format!(
            "[[webhooks]]\nname = \"{name}\"\nurl = \"https://cms.example/{path}?token=abc\"\nsecret = \"0123456789abcdef\"\n"
        )
    };
    let base = format!("{KEY}{MODEM}{}", hook("cms", "events"));
    assert_one_error(
        &format!("{base}{}", hook("archive", "events")),
        14,
        "webhook url already configured at line 10: list every event it wants in one entry",
    );
    assert_one_error(
        &format!("{base}{}", hook("cms", "archive")),
        13,
        "duplicate webhook name `cms` (first at line 9)",
    );
    let (checked, _dir) = check_text(&format!("{base}{}", hook("archive", "archive")));
    assert_eq!(checked.status, 0, "{:#?}", checked.lines);
}

#[test]
fn duplicate_modem_device_is_an_error_at_the_second() {
    let text = format!("{KEY}{MODEM}{}", MODEM.replace("m1", "m2"));
    assert_one_error(
        &text,
        10,
        "device `/dev/ttyUSB2` is already used by modem `m1`",
    );
}

#[test]
fn simulated_modems_may_share_a_profile() {
    let sim = "[[modems]]\nid = \"a\"\ndevice = \"sim:ec25\"\n[[modems]]\nid = \"b\"\ndevice = \"sim:ec25\"\n";
    let (checked, _dir) = check_text(&format!("{KEY}{sim}"));
    assert_eq!(checked.status, 0, "{:#?}", checked.lines);
}

#[test]
fn empty_token_is_an_error_at_its_line() {
    assert_one_error(
        &format!("{}{MODEM}", KEY.replace("t0ken", "")),
        3,
        "token is empty",
    );
}

#[test]
fn bad_token_sha256_is_an_error_at_its_line() {
    let key = KEY.replace("token = \"t0ken\"", "token_sha256 = \"abc123\"");
    assert_one_error(&format!("{key}{MODEM}"), 3, "invalid token_sha256");
}

#[test]
fn api_key_needs_exactly_one_token_form() {
    let key = KEY.replace("token = \"t0ken\"\n", "");
    assert_one_error(
        &format!("{MODEM}{key}"),
        4,
        "set exactly one of `token` or `token_sha256`",
    );
}

#[test]
fn missing_required_key_is_an_error_at_its_table() {
    assert_one_error(
        &format!("{KEY}\n[[modems]]\nid = \"m1\"\nrate = \"6/min\"\n"),
        6,
        "missing field `device`",
    );
}

#[test]
fn every_problem_in_a_file_is_reported_in_one_run() {
    let text = "\
[server]
default_region = \"XX\"
[[api_keys]]
name = \"cms\"
token = \"\"
scopes = [\"send\", \"write\"]
[[modems]]
id = \"m1\"
device = \"sim:nokia\"
rate = \"fast\"
[dispatch]
retry_backoff = \"soon\"
";
    let (checked, _dir) = check_text(text);
    assert_eq!(checked.status, 1);
    let lines: Vec<usize> = checked
        .errors()
        .iter()
        .map(|e| {
            e.rsplit_once(".toml:")
                .unwrap()
                .1
                .split(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    // Each bad value once, at its own line; no echoes for the tables that lost a key.
    assert_eq!(lines, vec![2, 5, 6, 9, 10, 12], "{:#?}", checked.lines);
}

const TLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");

/// The TLS files are read by check-config: each problem is an error at the line of the key it is about,
/// and a sound pair lets the API listen beyond loopback without the warning.
#[test]
fn tls_files_are_checked_where_they_are_named() {
    let server = |cert: &str, key: &str| {
        format!("{MODEM}{KEY}[server]\nlisten = \"0.0.0.0:8443\"\n{cert}{key}")
    };
    let cert = format!("tls_cert = \"{TLS}/cert.pem\"\n");
    let key = format!("tls_key = \"{TLS}/key.pem\"\n");

    let (sound, _dir) = check_text(&server(&cert, &key));
    assert_eq!(sound.status, 0, "{:#?}", sound.lines);
    assert!(
        sound.warnings().iter().all(|w| !w.contains("listening on")),
        "{:#?}",
        sound.lines
    );
    let config = Config::load(&sound.path).unwrap();
    let files = config.server.tls.expect("TLS configured");
    assert!(files.cert.ends_with("cert.pem") && files.key.ends_with("key.pem"));

    // A key every user of the box can read is a warning at its line; one kept to its group is not.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("key.pem");
    std::fs::copy(format!("{TLS}/key.pem"), &copy).unwrap();
    let with_copy = server(&cert, &format!("tls_key = \"{}\"\n", copy.display()));
    for (mode, warned) in [(0o644, true), (0o640, false)] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(mode)).unwrap();
        let (checked, _dir) = check_text(&with_copy);
        assert_eq!(checked.status, 0, "{:#?}", checked.lines);
        let place = format!(
            "{}:11: warning: {} is readable by every user",
            checked.path.display(),
            copy.display()
        );
        assert_eq!(
            checked.warnings().iter().any(|w| w.starts_with(&place)),
            warned,
            "mode {mode:o}: {:#?}",
            checked.lines
        );
    }

    let cases = [
        (
            server(&cert, ""),
            "`tls_cert` needs `tls_key`, the file with its private key",
        ),
        (
            server(&cert, &format!("tls_key = \"{TLS}/absent.pem\"\n")),
            "cannot read",
        ),
        (
            server(&cert, &format!("tls_key = \"{TLS}/cert.pem\"\n")),
            "holds no PEM private key",
        ),
        (
            server(&cert, &format!("tls_key = \"{TLS}/other-key.pem\"\n")),
            "other-key.pem is not the private key of the certificate in",
        ),
        (
            server(&format!("tls_cert = \"{TLS}/key.pem\"\n"), &key),
            "holds no PEM certificate",
        ),
    ];
    for (text, expected) in cases {
        let (checked, _dir) = check_text(&text);
        assert_eq!(checked.status, 1, "{text}\n{:#?}", checked.lines);
        let errors = checked.errors();
        assert_eq!(errors.len(), 1, "{text}\n{errors:#?}");
        assert!(errors[0].contains(expected), "{text}\n{errors:#?}");
        // The line of the key at fault: the certificate's (line 10) unless the key is to blame (11); a
        // missing key is reported at the [server] table (line 8).
        let line = match expected {
            "cannot read"
            | "holds no PEM private key"
            | "other-key.pem is not the private key of the certificate in" => 11,
            "holds no PEM certificate" => 10,
            _ => 8,
        };
        let place = format!("{}:{line}: ", checked.path.display());
        assert!(errors[0].starts_with(&place), "{place}\n{errors:#?}");
    }
}

/// The write-ahead log's limit is a whole number of megabytes from 64 up; anything else is an error at
/// its line.
#[test]
fn the_log_limit_is_checked_at_its_line() {
    for (value, ok) in [
        ("64", true),
        ("4096", true),
        ("10", false),
        ("-1", false),
        ("\"2GB\"", false),
    ] {
        let (checked, _dir) =
            check_text(&format!("{MODEM}{KEY}[storage]\nwal_limit_mb = {value}\n"));
        assert_eq!(checked.status == 0, ok, "{value}: {:#?}", checked.lines);
        if !ok {
            let place = format!("{}:9: ", checked.path.display());
            let error = checked.errors()[0];
            assert!(error.starts_with(&place), "{value}: {:#?}", checked.lines);
            // The allowed range, whatever was written instead.
            assert!(error.contains("64-1048576"), "{value}: {error}");
        }
    }
}

/// Retention is a whole number of days; less than Reg F's three years is allowed with a warning at its line.
#[test]
fn retention_is_checked_at_its_line_and_warns_below_three_years() {
    for (value, ok, warns) in [
        ("1095", true, false),
        ("3650", true, false),
        ("30", true, true),
        ("0", false, false),
        ("\"3y\"", false, false),
    ] {
        let (checked, _dir) =
            check_text(&format!("{MODEM}{KEY}[storage]\nretain_days = {value}\n"));
        assert_eq!(checked.status == 0, ok, "{value}: {:#?}", checked.lines);
        let place = format!("{}:9: ", checked.path.display());
        if ok {
            let warned = checked
                .warnings()
                .iter()
                .any(|w| w.starts_with(&format!("{place}warning: retain_days")));
            assert_eq!(warned, warns, "{value}: {:#?}", checked.lines);
        } else {
            let error = checked.errors()[0];
            assert!(error.starts_with(&place), "{value}: {:#?}", checked.lines);
            assert!(error.contains("1-36500"), "{value}: {error}");
        }
    }
    // Shorter than the default Massachusetts cap's 7 days: the caps would forget sends.
    let (checked, _dir) = check_text(&format!("{MODEM}{KEY}[storage]\nretain_days = 6\n"));
    assert_ne!(checked.status, 0, "{:#?}", checked.lines);
    let error = checked.errors()[0];
    let place = format!("{}:9: ", checked.path.display());
    assert!(
        error.starts_with(&place) && error.contains("longest [caps] window (7 days)"),
        "{error}"
    );
}

#[test]
fn risky_settings_warn_without_failing() {
    let (checked, _dir) = check_text(&format!("{MODEM}[server]\nlisten = \"0.0.0.0:8080\"\n"));
    assert_eq!(checked.status, 0, "{:#?}", checked.lines);
    let warnings = checked.warnings();
    let prefix = checked.path.display().to_string();
    assert!(
        warnings.contains(
            &format!("{prefix}:1: warning: no [[api_keys]]: no client can use the API").as_str()
        ),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&format!("{prefix}:5: warning: listening on 0.0.0.0:8080"))),
        "{warnings:#?}"
    );
}

#[test]
fn unreadable_file_fails_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let checked = check_file(&dir.path().join("absent.toml"));
    assert_eq!(checked.status, 1);
    assert!(
        checked.errors()[0].ends_with(
            "absent.toml: cannot read config file: No such file or directory (os error 2)"
        ),
        "{:#?}",
        checked.lines
    );
}

#[test]
fn load_returns_the_same_errors_as_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, format!("{KEY}{MODEM}rate = \"6/fortnight\"\n")).unwrap();
    let errors = Config::load(&path).unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    assert_eq!(errors.errors[0].line, Some(8));
    assert!(
        errors
            .to_string()
            .starts_with(&format!("{}:8: invalid rate", path.display())),
        "{errors}"
    );
}

#[test]
fn unit_and_package_use_the_default_config_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let default = modemgate::config::DEFAULT_PATH;
    let unit = std::fs::read_to_string(root.join("systemd/modemgate.service")).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart=/usr/bin/modemgate serve --config {default}\n"
        )),
        "{unit}"
    );
    assert!(
        unit.contains(&format!(
            "ExecReload=/usr/bin/modemgate check-config --config {default}\n"
        )),
        "{unit}"
    );
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let installed_as = default.trim_start_matches('/');
    assert!(
        manifest.contains(&format!(
            "[\"config/modemgate.toml\", \"{installed_as}\", \"640\"]"
        )),
        "Cargo.toml deb assets"
    );
    assert!(
        manifest.contains(&format!("conf-files = [\"{default}\"]")),
        "Cargo.toml conf-files"
    );
}
