//! Turning a config file into a [`Config`] and a list of every problem in it, each with its line.
//!
//! serde stops at the first error, but an operator fixing a file wants them all at once. So the document
//! is parsed into toml's spanned tree, deserialized, and on each error the offending entry (the bad key or
//! value, or the `[[table]]` that cannot stand without it) is pruned from a working copy and deserialization
//! retried. Each round removes at least one node, so the loop ends. Checks across several values run on
//! what survives, with their spans looked up in the same working copy.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::{Config, Device, RetainDays};

/// How bad a finding is: errors stop the daemon from starting, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The file cannot be used as it is.
    Error,
    /// The file works, but a setting is risky.
    Warning,
}

/// One finding, at a 1-based line of the file or about the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line of the offending key or value (line 1 when the finding is about something absent);
    /// `None` when the file itself could not be read, so no line of it is to blame.
    pub line: Option<usize>,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in the operator's terms.
    pub message: String,
}

/// A config file that could not be loaded, with every error found in it.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    /// The file, as named to the loader.
    pub path: PathBuf,
    /// Its errors, in line order (never empty).
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.errors.iter().map(|d| render(&self.path, d)).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// `PATH:LINE: message`, or `PATH:LINE: warning: message`: the format editors and CI logs link to
/// (`PATH: message` for a file that could not be read).
fn render(path: &Path, diagnostic: &Diagnostic) -> String {
    let severity = match diagnostic.severity {
        Severity::Error => "",
        Severity::Warning => "warning: ",
    };
    let place = match diagnostic.line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    };
    format!("{place}: {severity}{}", diagnostic.message)
}

/// The outcome of checking one config file.
#[derive(Debug, Clone)]
pub struct Report {
    /// The file, as named.
    pub path: PathBuf,
    /// The configuration, present only when there are no errors.
    pub config: Option<Config>,
    /// Errors and warnings, in line order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Read and check a file. An unreadable file is one error about the whole file.
    pub fn from_file(path: &Path) -> Report {
        match std::fs::read_to_string(path) {
            Ok(text) => Report::from_text(path, &text),
            Err(e) => Report {
                path: path.to_owned(),
                config: None,
                diagnostics: vec![Diagnostic {
                    line: None,
                    severity: Severity::Error,
                    message: format!("cannot read config file: {e}"),
                }],
            },
        }
    }

    /// Check config text; `path` only names it in messages.
    pub fn from_text(path: &Path, text: &str) -> Report {
        let (config, diagnostics) = diagnose(text);
        Report {
            path: path.to_owned(),
            config,
            diagnostics,
        }
    }

    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// Every finding as `PATH:LINE: message`, one per line.
    pub fn render(&self) -> Vec<String> {
        self.diagnostics
            .iter()
            .map(|d| render(&self.path, d))
            .collect()
    }

    /// The configuration, or the errors (warnings dropped).
    pub fn into_result(self) -> Result<Config, ConfigErrors> {
        match self.config {
            Some(config) => Ok(config),
            None => Err(ConfigErrors {
                path: self.path,
                errors: self
                    .diagnostics
                    .into_iter()
                    .filter(|d| d.severity == Severity::Error)
                    .collect(),
            }),
        }
    }
}

fn error(line: usize, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        line: Some(line),
        severity: Severity::Error,
        message: message.into(),
    }
}

fn warning(line: usize, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        line: Some(line),
        severity: Severity::Warning,
        message: message.into(),
    }
}

/// Parse, deserialize with pruning, cross-check, warn. The config is returned only if nothing is an error.
fn diagnose(text: &str) -> (Option<Config>, Vec<Diagnostic>) {
    let at = |span: Option<Range<usize>>| span.map_or(1, |span| line_of(text, span.start));
    let (mut doc, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        // A broken document has no reliable structure left to check. The parser's recovery can add an
        // echo on the line it already reported (`[server` then "duplicate key"): the first error per line
        // is the one that names the mistake.
        let mut diagnostics: Vec<Diagnostic> = Vec::new();
        for e in &syntax_errors {
            let line = at(e.span());
            if diagnostics.iter().all(|d| d.line != Some(line)) {
                diagnostics.push(error(line, name_the_key(e.message(), text, line)));
            }
        }
        return (None, diagnostics);
    }

    let mut diagnostics = Vec::new();
    // Tables that lost an entry to pruning: errors about the table as a whole ("missing field", a refused
    // combination) are then echoes of the one already reported for the entry.
    let mut pruned_tables: Vec<Range<usize>> = Vec::new();
    let config = loop {
        match Config::deserialize(toml::de::Deserializer::from(doc.clone())) {
            Ok(config) => break Some(config),
            Err(e) => {
                let span = e
                    .span()
                    .map(|span| culprit_element(&doc, &span, e.message()).unwrap_or(span));
                let echo = span.as_ref().is_some_and(|s| pruned_tables.contains(s));
                if !echo {
                    diagnostics.push(error(at(span.clone()), in_plain_words(e.message())));
                }
                let doc_span = doc.span();
                let pruned = span
                    .is_some_and(|s| prune_table(doc.get_mut(), doc_span, &s, &mut pruned_tables));
                if !pruned {
                    break None;
                }
            }
        }
    };

    if let Some(config) = &config {
        let doc = Doc {
            table: doc.get_ref(),
            text,
        };
        // With errors, a value may hold its default only because pruning removed what was written: checks
        // that defaults could trip run only on a file that is otherwise sound.
        let sound = diagnostics.is_empty();
        cross_check(config, &doc, sound, &mut diagnostics);
        warn(config, &doc, sound, &mut diagnostics);
    }
    diagnostics.sort_by_key(|d| (d.line, d.severity));
    let config = config.filter(|_| !diagnostics.iter().any(|d| d.severity == Severity::Error));
    (config, diagnostics)
}

/// serde's words for what a value should have been, in the words of the file: an admin knows a list and a
/// whole number, not a sequence, a `u32` or the struct behind a table.
fn in_plain_words(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        (
            "expected struct RawWindow",
            "expected a window such as { days = \"mon-fri\", start = \"08:00\", end = \"21:00\" }",
        ),
        ("expected a sequence", "expected a list in [ ]"),
        (
            "expected a nonzero u32",
            "expected a whole number from 1 up",
        ),
        (
            "expected a nonzero u64",
            "expected a whole number from 1 up",
        ),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number from 0 up"),
        ("expected u64", "expected a whole number from 0 up"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected a map", "expected a table"),
        (
            "invalid socket address syntax",
            "invalid address: expected IP:PORT, such as 127.0.0.1:8080 (port 1-65535)",
        ),
    ];
    let mut plain = message.to_owned();
    for (serde, ours) in WORDS {
        if let Some(at) = plain.find(serde)
            && !plain[at + serde.len()..].starts_with(|c: char| c.is_alphanumeric())
        {
            plain.replace_range(at..at + serde.len(), ours);
        }
    }
    if let Some(at) = plain.find("expected struct ") {
        plain.truncate(at);
        plain.push_str("expected a table");
    }
    plain
}

/// The parser says "duplicate key" without naming it; the line does.
fn name_the_key(message: &str, text: &str, line: usize) -> String {
    let key = text
        .lines()
        .nth(line.saturating_sub(1))
        .and_then(|l| l.split_once('='))
        .map(|(key, _)| key.trim())
        .filter(|key| !key.is_empty() && !key.starts_with('['));
    match key {
        Some(key) if message == "duplicate key" => {
            format!("duplicate key `{key}`: it is already set earlier in this table")
        }
        _ => message.to_owned(),
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// An error the deserializer blames on a whole array of tables (it gives the first `[[name]]` header for
/// a refused element, such as an API key with two tokens): the element that makes the same error alone,
/// so it is reported at its own line and pruned alone, and the other elements are still checked.
fn culprit_element(
    doc: &Spanned<DeTable<'_>>,
    span: &Range<usize>,
    message: &str,
) -> Option<Range<usize>> {
    let (path, items) = array_at(doc.get_ref(), span)?;
    if items.len() < 2 {
        return None;
    }
    items.iter().find_map(|item| {
        let mut alone = doc.clone();
        let mut only = DeArray::new();
        only.push(item.clone());
        *array_mut(&mut alone, &path)?.get_mut() = DeValue::Array(only);
        let err = Config::deserialize(toml::de::Deserializer::from(alone)).err()?;
        (err.message() == message).then(|| item.span())
    })
}

/// The array of tables whose key is written at `span`, and the keys leading to it.
fn array_at<'a, 'i>(
    table: &'a DeTable<'i>,
    span: &Range<usize>,
) -> Option<(Vec<String>, &'a DeArray<'i>)> {
    table.iter().find_map(|(key, value)| match value.get_ref() {
        // The span given is the header, `[[api_keys]]`; the key's is the name inside it.
        DeValue::Array(items) if contains(span, &key.span()) => {
            Some((vec![key.get_ref().to_string()], items))
        }
        DeValue::Table(inner) => array_at(inner, span).map(|(mut path, items)| {
            path.insert(0, key.get_ref().to_string());
            (path, items)
        }),
        _ => None,
    })
}

fn array_mut<'a, 'i>(
    doc: &'a mut Spanned<DeTable<'i>>,
    path: &[String],
) -> Option<&'a mut Spanned<DeValue<'i>>> {
    let (last, tables) = path.split_last()?;
    let mut table = doc.get_mut();
    for key in tables {
        match table.get_mut(key.as_str())?.get_mut() {
            DeValue::Table(inner) => table = inner,
            _ => return None,
        }
    }
    table.get_mut(last.as_str())
}

/// Remove the deepest entry of `table` whose key or value holds `span`. Returns whether anything was removed.
fn prune_table(
    table: &mut DeTable<'_>,
    table_span: Range<usize>,
    span: &Range<usize>,
    pruned: &mut Vec<Range<usize>>,
) -> bool {
    let mut culprit = None;
    for (key, value) in table.iter_mut() {
        if prune_value(value, span, pruned) {
            return true;
        }
        if contains(&key.span(), span) || contains(&value.span(), span) {
            culprit = Some(key.get_ref().to_string());
            break;
        }
    }
    match culprit {
        Some(culprit) => {
            table.remove(culprit.as_str());
            pruned.push(table_span);
            true
        }
        None => false,
    }
}

/// Prune inside a table or an array of tables; an element table that holds `span` but none of whose
/// entries does (a missing field, a refused combination) is dropped whole.
fn prune_value(
    value: &mut Spanned<DeValue<'_>>,
    span: &Range<usize>,
    pruned: &mut Vec<Range<usize>>,
) -> bool {
    let value_span = value.span();
    match value.get_mut() {
        DeValue::Table(table) => prune_table(table, value_span, span, pruned),
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                if prune_value(item, span, pruned) {
                    return true;
                }
            }
            let Some(index) = items
                .iter()
                .position(|item| item.get_ref().is_table() && contains(&item.span(), span))
            else {
                return false;
            };
            let mut kept = DeArray::new();
            for (i, item) in items.iter().enumerate() {
                if i != index {
                    kept.push(item.clone());
                }
            }
            *items = kept;
            true
        }
        _ => false,
    }
}

/// The surviving document, for looking up where a value was written.
struct Doc<'a, 'i> {
    table: &'a DeTable<'i>,
    text: &'a str,
}

impl Doc<'_, '_> {
    /// Line of `section.key`, or of `section[index].key` for arrays of tables; line 1 if it is not written.
    fn line(&self, section: &str, index: Option<usize>, key: &str) -> usize {
        let section = self.table.get(section).map(|v| v.get_ref());
        let table = match (section, index) {
            (Some(DeValue::Array(items)), Some(i)) => {
                items.get(i).and_then(|t| t.get_ref().as_table())
            }
            (Some(DeValue::Table(table)), None) => Some(table),
            _ => None,
        };
        table
            .and_then(|t| t.get(key))
            .map_or(1, |value| line_of(self.text, value.span().start))
    }

    /// Line of `section.array[index].key` (`[[quiet_hours.regions]]`); line 1 if it is not written.
    fn nested_line(&self, section: &str, array: &str, index: usize, key: &str) -> usize {
        self.table
            .get(section)
            .and_then(|v| v.get_ref().as_table())
            .and_then(|t| t.get(array))
            .and_then(|v| v.get_ref().as_array())
            .and_then(|items| items.get(index))
            .and_then(|t| t.get_ref().as_table())
            .and_then(|t| t.get(key))
            .map_or(1, |value| line_of(self.text, value.span().start))
    }
}

/// A quiet-hours region rule must name a region recipients are located in: a misspelt one (`CA-ONT`)
/// would never apply, and listing regions replaces the built-in rules, so that region's stricter window
/// would be silently lost. A rule twice is refused too: only the first would apply.
fn quiet_hour_regions(config: &Config, doc: &Doc<'_, '_>, out: &mut Vec<Diagnostic>) {
    use crate::rules::{RegionName, region_name};
    let regions = &config.quiet_hours.regions;
    for (i, rule) in regions.iter().enumerate() {
        let line = doc.nested_line("quiet_hours", "regions", i, "region");
        let name = &rule.region;
        if let Some(first) = regions[..i]
            .iter()
            .position(|r| r.region.eq_ignore_ascii_case(name))
        {
            out.push(error(
                line,
                format!(
                    "quiet hours region `{name}` is already listed at line {}",
                    doc.nested_line("quiet_hours", "regions", first, "region")
                ),
            ));
            continue;
        }
        match region_name(name) {
            RegionName::Located => {}
            RegionName::SharedCode { main } => out.push(warning(
                line,
                format!(
                    "quiet hours region `{name}` never applies: its numbers share a calling code with \
                     `{main}` and are located there; give `{main}` the stricter window"
                ),
            )),
            RegionName::Unknown => out.push(error(
                line,
                format!(
                    "unknown quiet hours region `{name}`: use an ISO 3166-1 country code (`MX`) or, \
                     for the US and Canada, an ISO 3166-2 subdivision (`CA-ON`, `US-TX`)"
                ),
            )),
        }
    }
}

/// `path` with `.` and `..` resolved without touching the disk (the device may be unplugged while the
/// config is checked): `/dev/../dev/ttyUSB0` is `/dev/ttyUSB0`. Links (udev's names) are not followed.
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Checks that involve more than one value.
fn cross_check(config: &Config, doc: &Doc<'_, '_>, sound: bool, out: &mut Vec<Diagnostic>) {
    for (i, modem) in config.modems.iter().enumerate() {
        let earlier = &config.modems[..i];
        if let Some(first) = earlier.iter().position(|m| m.id == modem.id) {
            out.push(error(
                doc.line("modems", Some(i), "id"),
                format!(
                    "duplicate modem id `{}` (first at line {})",
                    modem.id,
                    doc.line("modems", Some(first), "id")
                ),
            ));
        }
        // Simulators each get their own pty, so only real devices can clash.
        if let Device::Serial(path) = &modem.device
            && let Some(first) = earlier.iter().find(|m| match &m.device {
                Device::Serial(other) => lexical(other) == lexical(path),
                Device::Sim(_) => false,
            })
        {
            out.push(error(
                doc.line("modems", Some(i), "device"),
                format!(
                    "device `{}` is already used by modem `{}`",
                    path.display(),
                    first.id
                ),
            ));
        }
    }
    if config.storage.path.as_os_str().is_empty() {
        out.push(error(
            doc.line("storage", None, "path"),
            "[storage] path is empty: name the database file",
        ));
    }
    for (i, key) in config.api_keys.iter().enumerate() {
        // A request with that token would be one key or the other, its name and scopes a coin toss.
        if let Some(first) = config.api_keys[..i]
            .iter()
            .find(|k| k.name != key.name && k.credential.digest() == key.credential.digest())
        {
            out.push(error(
                doc.line("api_keys", Some(i), "name"),
                format!(
                    "api key `{}` has the same token as `{}`: give each key its own",
                    key.name, first.name
                ),
            ));
        }
        if config.api_keys[..i].iter().any(|k| k.name == key.name) {
            out.push(error(
                doc.line("api_keys", Some(i), "name"),
                format!("duplicate api key name `{}`", key.name),
            ));
        }
    }
    for (i, hook) in config.webhooks.iter().enumerate() {
        let earlier = &config.webhooks[..i];
        // One URL twice would get every event twice over: each entry's rows posted by both.
        if let Some(first) = earlier.iter().position(|h| h.url == hook.url) {
            out.push(error(
                doc.line("webhooks", Some(i), "url"),
                format!(
                    "webhook url already configured at line {}: list every event it wants in one entry",
                    doc.line("webhooks", Some(first), "url")
                ),
            ));
        }
        if let Some(name) = &hook.name
            && let Some(first) = earlier.iter().position(|h| h.name.as_ref() == Some(name))
        {
            out.push(error(
                doc.line("webhooks", Some(i), "name"),
                format!(
                    "duplicate webhook name `{}` (first at line {})",
                    name.as_str(),
                    doc.line("webhooks", Some(first), "name")
                ),
            ));
        }
    }
    reply_rule_keywords(config, doc, out);
    reply_rule_notice(config, doc, out);
    quiet_hour_regions(config, doc, out);
    tls_files(config, doc, out);
    let dispatch = &config.dispatch;
    if sound && dispatch.retry_backoff > dispatch.retry_backoff_max {
        out.push(error(
            doc.line("dispatch", None, "retry_backoff"),
            "retry_backoff is longer than retry_backoff_max",
        ));
    }
}

/// The TLS certificate and key are read now, so a missing file, a key that is not the certificate's or
/// a file of the wrong kind is an error at its line rather than a daemon that will not start.
fn tls_files(config: &Config, doc: &Doc<'_, '_>, out: &mut Vec<Diagnostic>) {
    let Some(files) = &config.server.tls else {
        return;
    };
    if let Err(e) = crate::tls::certified_key(files) {
        let key = match &e {
            crate::tls::TlsError::Read { path, .. } if *path == files.key => "tls_key",
            crate::tls::TlsError::NoKey { .. } | crate::tls::TlsError::Mismatch { .. } => "tls_key",
            _ => "tls_cert",
        };
        out.push(error(doc.line("server", None, key), e.to_string()));
        return;
    }
    // Whoever reads the key can pose as the gateway to the CMS and read what it sends.
    if let Ok(meta) = std::fs::metadata(&files.key) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o004 != 0 {
            out.push(warning(
                doc.line("server", None, "tls_key"),
                format!(
                    "{} is readable by every user of the box (mode {mode:04o}): chmod 0640 and chgrp \
                     modemgate",
                    files.key.display()
                ),
            ));
        }
    }
}

/// A reply-rule keyword must be used once, and must not be a configured opt-out, opt-in or help word
/// (those always win, so the rule would never fire; the built-in words are refused when the rule is read).
fn reply_rule_keywords(config: &Config, doc: &Doc<'_, '_>, out: &mut Vec<Diagnostic>) {
    use crate::rules::{Keyword, Keywords};
    let classifier = Keywords::new(&config.keywords);
    let mut seen: Vec<&str> = Vec::new();
    for (i, rule) in config.reply_rules.iter().enumerate() {
        let line = doc.line("reply_rules", Some(i), "keywords");
        for word in rule.keywords() {
            if seen.contains(&word.as_str()) {
                out.push(error(
                    line,
                    format!("reply keyword `{word}` is already used by an earlier reply rule"),
                ));
            }
            seen.push(word);
            if matches!(
                classifier.classify(word),
                Keyword::OptOut { .. } | Keyword::OptIn { .. } | Keyword::Help { .. }
            ) {
                out.push(error(
                    line,
                    format!("reply keyword `{word}` is also a [keywords] opt-out, opt-in or help word, which always wins"),
                ));
            }
        }
    }
}

/// What is wrong with a modem's device path as the box stands now, if anything. Only a warning: a modem
/// unplugged for the moment is expected, and its worker opens the device when it comes back.
fn device_problem(path: &std::path::Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(
            "does not exist now: the modem stays offline until it appears (check the cable, and \
             `ls /dev/modemgate/` for the names the udev rules made)",
        ),
        Err(_) => None,
        Ok(meta) if !meta.file_type().is_char_device() => {
            Some("is not a character device: a serial port it cannot be")
        }
        Ok(_) => None,
    }
}

/// What keeps `serve` from using the database at `path`, as the box stands now and for the user running
/// check-config (the service's user may differ), if anything.
fn storage_problem(path: &std::path::Path) -> Option<String> {
    use nix::unistd::{AccessFlags, access};
    if let Some(lock) = crate::daemon::lock::left_behind(path) {
        return Some(format!(
            "is missing, but {} shows modemgate served it before: it was moved or deleted, and serve \
             refuses to start until it is back (or that lock file is deleted, for a new, empty database)",
            lock.display()
        ));
    }
    // The file if it is there, and the nearest directory that is (serve creates the ones missing, and
    // SQLite its log beside the file).
    let dir = path
        .parent()
        .into_iter()
        .flat_map(std::path::Path::ancestors)
        .map(|p| {
            if p.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                p
            }
        })
        .find(|p| p.exists());
    let file = path.exists().then_some(path);
    file.into_iter()
        .chain(dir)
        .find_map(|target| match access(target, AccessFlags::W_OK) {
            Ok(()) => None,
            Err(nix::errno::Errno::EROFS) => Some(format!(
                "cannot be written: {} is on a read-only file system",
                target.display()
            )),
            Err(errno) => Some(format!(
                "cannot be written by this user: {}: {}",
                target.display(),
                errno.desc()
            )),
        })
}

/// With `notice_mode = "require"`, a reply rule's answer must carry the notice itself: the rules append
/// none then, so one written without it could never be sent.
fn reply_rule_notice(config: &Config, doc: &Doc<'_, '_>, out: &mut Vec<Diagnostic>) {
    use crate::rules::notice::carries_notice;
    if config.optout.notice_mode != crate::rules::NoticeMode::Require {
        return;
    }
    for (i, rule) in config.reply_rules.iter().enumerate() {
        if !carries_notice(&config.optout, rule.template.text()) {
            out.push(error(
                doc.line("reply_rules", Some(i), "template"),
                "this answer lacks the [optout] notice, which notice_mode = \"require\" needs in every \
                 text: add it to the template, or the rule's answers are never sent",
            ));
        }
    }
}

/// Settings that work but deserve a second look.
fn warn(config: &Config, doc: &Doc<'_, '_>, sound: bool, out: &mut Vec<Diagnostic>) {
    let listen = config.server.listen;
    if !listen.ip().is_loopback() && config.server.tls.is_none() {
        out.push(warning(
            doc.line("server", None, "listen"),
            format!(
                "listening on {listen}, beyond loopback, without TLS: set tls_cert and tls_key, or \
                 firewall it, or put a TLS proxy in front"
            ),
        ));
    }
    if sound && config.api_keys.is_empty() {
        out.push(warning(1, "no [[api_keys]]: no client can use the API"));
    }
    if sound && config.modems.is_empty() {
        out.push(warning(1, "no [[modems]]: nothing can be sent or received"));
    }
    if !config.quiet_hours.enabled {
        out.push(warning(
            doc.line("quiet_hours", None, "enabled"),
            "quiet hours are off: messages may reach recipients at any local hour",
        ));
    }
    // `MA` alone is Morocco, `DE` Germany: a US state written without its country is a cap on nobody.
    for region in config.caps.rules.iter().flat_map(|rule| rule.regions()) {
        if crate::rules::is_us_subdivision_code(region) {
            out.push(warning(
                doc.line("caps", None, "rules"),
                format!(
                    "caps region \"{region}\" is the country {region}, not the US state: write \"US-{region}\" \
                     for the state"
                ),
            ));
        }
    }
    let (numbers, addresses) = (
        config.caps.caps_massachusetts_numbers(),
        config.caps.caps_massachusetts_addresses(),
    );
    if sound && !(numbers && addresses) {
        let missing = match (numbers, addresses) {
            (false, false) => "Massachusetts numbers or Massachusetts addresses",
            (false, true) => "Massachusetts numbers",
            _ => "Massachusetts addresses (sends with region US-MA from numbers elsewhere)",
        };
        out.push(warning(
            doc.line("caps", None, "rules"),
            format!(
                "[caps] rules replace the built-in Massachusetts cap (2 texts per 7 days, 940 CMR 7.04), \
                 and none caps {missing} that tightly: give a rule of at most 2 per 168h with prefixes {} \
                 and regions = [\"{}\"] if you text Massachusetts residents",
                crate::rules::caps::MASSACHUSETTS.join(", "),
                crate::rules::caps::MASSACHUSETTS_REGION
            ),
        ));
    }
    // `EST`, `MST`, `Etc/GMT+5`: fixed offsets with no daylight saving, so in summer "21:00 EST" is
    // 22:00 in New York, past Reg F's window.
    if let Some(zone) = &config.quiet_hours.default_tz
        && let Some(name) = zone.iana_name()
        && crate::rules::is_fixed_offset(name)
    {
        out.push(warning(
            doc.line("quiet_hours", None, "default_tz"),
            format!(
                "default_tz = {name:?} is a fixed offset with no daylight saving: use the zone of a place \
                 (America/New_York, Europe/London) so quiet hours follow its summer time"
            ),
        ));
    }
    if sound && config.optout.notice.is_none() && !config.modems.is_empty() {
        out.push(warning(
            doc.line("optout", None, "notice"),
            "no [optout] notice: Reg F 1006.6(e) wants every text to a debtor to say how to opt out \
             (\"Reply STOP to stop texts to this number.\"); set one to have it appended or required",
        ));
    }
    // CTIA's handbook: a HELP answer names the sender and how to reach it. The built-in one cannot.
    if sound
        && !config.modems.is_empty()
        && config.optout.help == crate::rules::OptOutConfig::default().help
    {
        out.push(warning(
            doc.line("optout", None, "help"),
            "no [optout] help: a debtor texting HELP gets only \"Reply STOP to stop texts to this \
             number.\"; set one that names the agency and how to reach it (\"Acme Recovery, \
             1-800-555-0100\")",
        ));
    }
    // Retention deletes the contact history (and the messages it counts) by the same cutoff, so a
    // shorter retention would let a cap's window forget sends it must still count.
    let window = config.caps.longest_window();
    if let Some(retain) = config.storage.retain_days
        && jiff::SignedDuration::try_from(retain.span()).is_ok_and(|kept| kept < window)
    {
        out.push(error(
            doc.line("storage", None, "retain_days"),
            format!(
                "retain_days = {} is shorter than the longest [caps] window ({:.0} days): the caps \
                 would forget sends they must count",
                retain.days(),
                window.as_secs_f64() / 86_400.0
            ),
        ));
    }
    if let Some(retain) = config.storage.retain_days
        && retain.days() < RetainDays::REG_F_DAYS
    {
        out.push(warning(
            doc.line("storage", None, "retain_days"),
            format!(
                "retain_days = {} deletes finished messages sooner than Reg F's three years ({} days) of \
                 records a debt collector must keep; export them first if you must",
                retain.days(),
                RetainDays::REG_F_DAYS
            ),
        ));
    }
    if let Some(problem) = storage_problem(&config.storage.path) {
        out.push(warning(
            doc.line("storage", None, "path"),
            format!("database `{}` {problem}", config.storage.path.display()),
        ));
    }
    // Simulated modems have no carrier watching them.
    let real_modems = config
        .modems
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m.device, Device::Serial(_)));
    for (i, modem) in real_modems {
        if let Device::Serial(path) = &modem.device
            && let Some(problem) = device_problem(path)
        {
            out.push(warning(
                doc.line("modems", Some(i), "device"),
                format!(
                    "modem `{}`: device `{}` {problem}",
                    modem.id,
                    path.display()
                ),
            ));
        }
        let per_minute = u64::from(modem.rate.count.get()) * 60 / modem.rate.per.as_secs().max(1);
        if per_minute > 20 {
            out.push(warning(
                doc.line("modems", Some(i), "rate"),
                format!("modem `{}` rate {} is above the 10-20/min modems sustain; carriers flag such SIMs", modem.id, modem.rate),
            ));
        }
    }
    for (i, hook) in config.webhooks.iter().enumerate() {
        let local = matches!(hook.url.host(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if hook.url.scheme_str() == Some("http") && !local {
            out.push(warning(
                doc.line("webhooks", Some(i), "url"),
                "webhook over plain http: message content and numbers cross the network unencrypted",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Report {
        Report::from_text(Path::new("t.toml"), text)
    }

    #[test]
    fn serde_words_become_the_files_words() {
        let errors = |text: &str| -> Vec<String> {
            check(text)
                .render()
                .into_iter()
                .filter(|l| !l.contains("warning:"))
                .collect()
        };
        let window = errors("[quiet_hours]\nwindows = [\"21:00-08:00\"]\n");
        assert!(
            window[0].starts_with("t.toml:2: ")
                && window[0].contains("expected a window such as {"),
            "{window:#?}"
        );
        let list = errors("[quiet_hours]\nwindows = \"08:00-21:00\"\n");
        assert!(list[0].contains("expected a list in [ ]"), "{list:#?}");
        let cap = errors("[[modems]]\nid = \"m1\"\ndevice = \"sim:plain\"\ndaily_cap = -1\n");
        assert!(
            cap[0].starts_with("t.toml:4: ")
                && cap[0].contains("expected a whole number from 1 up"),
            "{cap:#?}"
        );
        let listen = errors("[server]\nlisten = \"127.0.0.1:80800\"\n");
        assert!(listen[0].contains("expected IP:PORT"), "{listen:#?}");
        let twice = errors("[server]\nlisten = \"127.0.0.1:8080\"\nlisten = \"127.0.0.1:8081\"\n");
        assert_eq!(
            twice,
            ["t.toml:3: duplicate key `listen`: it is already set earlier in this table"]
        );
        for rendered in [window, list, cap, listen] {
            assert!(
                !rendered
                    .iter()
                    .any(|l| l.contains("struct") || l.contains("u32") || l.contains("sequence")),
                "{rendered:#?}"
            );
        }
    }

    #[test]
    fn a_missing_notice_or_help_answer_draws_a_warning_each() {
        let modem = "[[api_keys]]\nname = \"a\"\ntoken = \"t\"\nscopes = [\"send\"]\n\
                     [[modems]]\nid = \"m1\"\ndevice = \"sim:plain\"\n";
        let warned = |text: &str, what: &str| {
            check(text)
                .render()
                .iter()
                .any(|l| l.contains(&format!("warning: no [optout] {what}")))
        };
        assert!(warned(modem, "notice") && warned(modem, "help"));
        let set = format!(
            "{modem}[optout]\nnotice = {{ en = \"Reply STOP to end.\" }}\n\
             help = {{ en = \"Acme, 1-800-555-0100. Reply STOP to end.\" }}\n"
        );
        assert!(!warned(&set, "notice") && !warned(&set, "help"));
    }

    #[test]
    fn a_required_notice_must_be_in_every_reply_rule_template() {
        let rules = "[[reply_rules]]\nkeywords = [\"1\"]\nintent = \"pay\"\ntemplate = \"Pay at {link}\"\n\
                     [[reply_rules]]\nkeywords = [\"2\"]\nintent = \"plan\"\n\
                     template = \"Plans at {link}. Reply STOP to end texts.\"\n";
        let optout = |mode: &str| {
            format!(
                "[optout]\nnotice = {{ en = \"Reply STOP to end texts.\" }}\nnotice_mode = \"{mode}\"\n"
            )
        };
        let report = check(&format!("{}{rules}", optout("require")));
        let errors: Vec<_> = report
            .render()
            .into_iter()
            .filter(|l| l.contains("lacks the [optout] notice"))
            .collect();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].starts_with("t.toml:7: "), "{errors:#?}");
        // Appended, it needs no writing into the template.
        let report = check(&format!("{}{rules}", optout("append")));
        assert!(
            !report
                .render()
                .iter()
                .any(|l| l.contains("lacks the [optout] notice")),
            "{:#?}",
            report.render()
        );
    }

    #[test]
    fn the_same_device_written_two_ways_is_a_duplicate() {
        let report = check(
            "[[modems]]\nid = \"a\"\ndevice = \"/dev/ttyUSB0\"\n\
             [[modems]]\nid = \"b\"\ndevice = \"/dev/../dev/./ttyUSB0\"\n",
        );
        let rendered = report.render();
        assert!(
            rendered.iter().any(|l| l.starts_with(
                "t.toml:6: device `/dev/../dev/./ttyUSB0` is already used by modem `a`"
            )),
            "{rendered:#?}"
        );
    }

    #[test]
    fn a_database_that_cannot_be_written_or_has_gone_draws_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let warning_for = |path: &std::path::Path| {
            let report = check(&format!("[storage]\npath = \"{}\"\n", path.display()));
            report
                .render()
                .into_iter()
                .find(|l| l.starts_with("t.toml:2: warning: database"))
        };
        // A directory to be created under one that can be written: fine.
        assert_eq!(warning_for(&dir.path().join("new/gw.db")), None);
        // Served before (its lock file is there), and gone.
        let db = dir.path().join("gw.db");
        std::fs::write(crate::daemon::lock::path_for(&db), "").unwrap();
        let gone = warning_for(&db).unwrap();
        assert!(gone.contains("is missing"), "{gone}");
    }

    #[test]
    fn a_caps_region_that_is_a_us_state_without_its_country_draws_a_warning() {
        let report = check(
            "[[caps.rules]]\nprefixes = [\"+1617\"]\nregions = [\"MA\", \"US-MA\", \"MX\"]\nmax = 2\n\
             window = \"168h\"\n",
        );
        let rendered = report.render();
        let warned: Vec<_> = rendered
            .iter()
            .filter(|l| l.contains("is the country"))
            .collect();
        assert_eq!(warned.len(), 1, "{rendered:#?}");
        assert!(warned[0].contains("\"US-MA\""), "{rendered:#?}");
        // The numbers capped, the addresses not: the warning says which half is missing.
        let numbers_only = check(&format!(
            "[[caps.rules]]\nprefixes = [{}]\nmax = 2\nwindow = \"168h\"\n",
            crate::rules::caps::MASSACHUSETTS
                .map(|p| format!("\"{p}\""))
                .join(", ")
        ));
        let rendered = numbers_only.render();
        assert!(
            rendered
                .iter()
                .any(|l| l.contains("none caps Massachusetts addresses")),
            "{rendered:#?}"
        );
    }

    #[test]
    fn a_fixed_offset_default_zone_draws_a_warning() {
        for (zone, warns) in [
            ("EST", true),
            ("Etc/GMT+5", true),
            ("America/New_York", false),
        ] {
            let report = check(&format!("[quiet_hours]\ndefault_tz = \"{zone}\"\n"));
            let warned = report
                .render()
                .iter()
                .any(|l| l.starts_with("t.toml:2: warning: default_tz"));
            assert_eq!(warned, warns, "{zone}: {:#?}", report.render());
        }
    }

    #[test]
    fn an_empty_storage_path_and_a_token_shared_by_two_keys_are_errors() {
        let report = check(
            "[storage]\npath = \"\"\n\
             [[api_keys]]\nname = \"cms\"\ntoken = \"same-token\"\nscopes = [\"send\"]\n\
             [[api_keys]]\nname = \"ops\"\n\
             token_sha256 = \"bd3c5b4e5ad3f1c7d12c8c6e5f0c6a8b7e0c6b2b1a6f3e4d5c6b7a8f9e0d1c2b\"\n\
             scopes = [\"admin\"]\n\
             [[api_keys]]\nname = \"admin\"\ntoken = \"same-token\"\nscopes = [\"admin\"]\n",
        );
        let rendered = report.render();
        assert!(
            rendered
                .contains(&"t.toml:2: [storage] path is empty: name the database file".to_owned()),
            "{rendered:#?}"
        );
        assert!(
            rendered.contains(
                &"t.toml:12: api key `admin` has the same token as `cms`: give each key its own"
                    .to_owned()
            ),
            "{rendered:#?}"
        );
        assert!(
            !rendered.iter().any(|l| l.contains("`ops`")),
            "{rendered:#?}"
        );
    }

    /// An element of an array of tables refused as a whole (two tokens, a bad prefix) is reported at its
    /// own `[[...]]`, once, and the elements after it are still checked.
    #[test]
    fn refused_elements_of_arrays_of_tables_are_reported_at_their_own_lines() {
        let report = check(
            "[[api_keys]]\nname = \"cms\"\ntoken = \"abc\"\nscopes = [\"send\"]\n\n\
             [[api_keys]]\nname = \"ops\"\ntoken = \"x\"\n\
             token_sha256 = \"8368bb6f9fe3f6e195c5a9eb50a3a7f4ce3ca7f97232c9a1cab1f07b0c5738d0\"\n\
             scopes = [\"admin\"]\n\n\
             [[api_keys]]\nname = \"ro\"\ntoken = \"   \"\nscopes = [\"read\"]\n\n\
             [[caps.rules]]\nprefixes = [\"+1617\"]\nmax = 2\nwindow = \"7d\"\n\n\
             [[caps.rules]]\nprefixes = [\"1508\"]\nmax = 2\nwindow = \"7d\"\n",
        );
        assert_eq!(
            report.render(),
            [
                "t.toml:6: api key `ops`: set exactly one of `token` or `token_sha256`",
                "t.toml:14: token is empty",
                "t.toml:22: prefix \"1508\" is not + followed by digits",
            ]
        );
    }

    #[test]
    fn an_empty_file_is_all_defaults_with_warnings_about_what_is_missing() {
        let report = check("");
        let config = report.config.clone().unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.server.body_limit.get(), 1024 * 1024);
        assert!(config.quiet_hours.enabled && config.dispatch.sticky && config.pdu.smart_encoding);
        assert!(!config.storage.resend_unknown_on_start);
        assert_eq!(config.dispatch.max_attempts.get(), 5);
        assert_eq!(
            report.render(),
            [
                "t.toml:1: warning: no [[api_keys]]: no client can use the API",
                "t.toml:1: warning: no [[modems]]: nothing can be sent or received"
            ]
        );
    }

    #[test]
    fn modem_defaults_apply_per_modem() {
        let report = check(
            "[[api_keys]]\nname = \"a\"\ntoken = \"t\"\nscopes = [\"read\"]\n[[modems]]\nid = \"m1\"\ndevice = \"sim:plain\"\n",
        );
        let modem = &report.config.unwrap().modems[0];
        assert_eq!(
            (modem.baud, modem.rate.to_string().as_str()),
            (115_200, "6/min")
        );
        assert!(modem.enabled && !modem.paused && modem.pin.is_none() && modem.smsc.is_none());
    }

    #[test]
    fn quiet_hour_regions_must_be_ones_numbers_are_located_in() {
        let rule = |region: &str| {
            format!(
                "[[quiet_hours.regions]]\nregion = \"{region}\"\nwindows = [{{ days = \"mon-sun\", start = \"08:00\", end = \"20:00\" }}]\n"
            )
        };
        let text = ["CA-ON", "CA-ONT", "JE", "ca-on"].map(rule).concat();
        let report = check(&format!("[quiet_hours]\n{text}"));
        let findings: Vec<String> = report
            .render()
            .into_iter()
            .filter(|line| line.contains("quiet hours region"))
            .collect();
        assert_eq!(findings.len(), 3, "{findings:?}");
        assert!(findings[0].starts_with("t.toml:6: unknown quiet hours region `CA-ONT`"));
        assert!(
            findings[1].starts_with("t.toml:9: warning: quiet hours region `JE` never applies")
        );
        assert!(
            findings[2]
                .starts_with("t.toml:12: quiet hours region `ca-on` is already listed at line 3")
        );
        assert!(report.has_errors());
    }

    #[test]
    fn a_window_time_out_of_range_says_what_is_expected() {
        let report = check(
            "[quiet_hours]\nwindows = [{ days = \"mon-sun\", start = \"25:00\", end = \"20:00\" }]\n",
        );
        assert_eq!(
            report.render(),
            ["t.toml:2: invalid time `25:00`: expected HH:MM from 00:00 to 23:59"]
        );
    }

    #[test]
    fn a_syntax_error_is_reported_once_per_line() {
        let report = check("[server]\nlisten = \"127.0.0.1:8080\"\n[server\n");
        assert_eq!(report.render(), ["t.toml:3: unclosed table, expected `]`"]);
    }

    #[test]
    fn a_pruned_required_key_is_reported_once() {
        // `device` is required: removing the bad value must not add "missing field `device`".
        let report = check("[[modems]]\nid = \"m1\"\ndevice = \"ttyUSB2\"\n");
        assert_eq!(
            report.render(),
            [
                "t.toml:3: invalid device `ttyUSB2`: expected an absolute serial device path or sim:PROFILE"
            ]
        );
        assert!(report.config.is_none());
    }

    #[test]
    fn smsc_must_be_international() {
        let report =
            check("[[modems]]\nid = \"m1\"\ndevice = \"sim:plain\"\nsmsc = \"2063130004\"\n");
        assert!(
            report.render()[0].starts_with("t.toml:4: invalid smsc"),
            "{:?}",
            report.render()
        );
        let smsc_of = |written: &str| {
            check(&format!(
                "[[modems]]\nid = \"m1\"\ndevice = \"sim:plain\"\nsmsc = \"{written}\"\n"
            ))
            .config
            .unwrap()
            .modems[0]
                .smsc
                .as_ref()
                .map(|s| s.as_str().to_owned())
        };
        assert_eq!(smsc_of("+12063130004"), Some("+12063130004".into()));
        // An operator's centre outside every subscriber range (South Africa's) is still an SMSC.
        assert_eq!(smsc_of("+27 38 100 0015"), Some("+27381000015".into()));
    }

    #[test]
    fn parse_names_the_text_as_a_string() {
        let errors = Config::parse("[server]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(
            errors
                .to_string()
                .starts_with("<string>:2: invalid address: expected IP:PORT"),
            "{errors}"
        );
        assert!(
            !Config::parse("[pdu]\nstatus_reports = false\n")
                .unwrap()
                .pdu
                .status_reports
        );
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
