//! One AT conversation over a port: one command at a time, each with a hard deadline, and everything the
//! modem says on its own set aside for the worker.
//!
//! The deadline is fixed when the command is written: URC floods, echo and garbage never extend it, because
//! a modem that only produces noise is as stuck as one that says nothing. Unsolicited lines are queued (not
//! handled through a callback) so the worker deals with them between commands, when it may send its own.

use std::{collections::VecDeque, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::{Instant, timeout_at},
};

use crate::at::{
    Final, Frame, Framer, Info, Line, Urc, command, parse_line,
    response::{Cmgs, pdu_line},
};

/// How long a command may still be answered after a restart notice (`RDY`) is read during it. A modem
/// that restarted under the command never answers it; but a notice printed just before the command, and
/// only read after it was written, is followed by the answer at once, which must not be left to be taken
/// for the next command's.
const RESTART_GRACE: Duration = Duration::from_secs(2);

/// Anything a session can talk over: a serial port, a pty, or an in-memory pipe in tests.
pub trait Port: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Port for T {}

/// Why a conversation broke down: after any of these the worker probes or re-opens the port.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no answer to {command} within {after:?}")]
    Timeout { command: String, after: Duration },
    /// The modem restarted while the command was in flight ([`Urc::is_restart`]): no answer will come,
    /// and the modem has lost its settings.
    #[error("the modem restarted during {command}")]
    Restarted { command: String },
    #[error("port closed")]
    Closed,
    #[error("port I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// What the modem said on its own, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsolicited {
    Urc(Urc),
    /// `+CMT`/`+CDS` with the PDU line that followed it.
    Routed {
        urc: Urc,
        pdu_hex: String,
    },
    /// A `+NAME:` line nobody asked for (a `+CREG:` URC, a late answer).
    Info(Info),
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Information lines (those with the expected prefix) and plain text lines, in order; echo excluded.
    pub lines: Vec<String>,
    pub result: Final,
}

/// A command the modem answered with something other than OK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command} answered {result:?}")]
pub struct Rejected {
    pub command: String,
    pub result: Final,
}

impl Response {
    pub fn is_ok(&self) -> bool {
        self.result == Final::Ok
    }

    /// The bodies of the lines named `name` (e.g. `+CSQ`).
    pub fn info<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        self.lines.iter().filter_map(move |l| match parse_line(l) {
            Line::Info(i) if i.name == name => Some(i.body),
            _ => None,
        })
    }
}

/// How `AT+CMGS` ended when no reference came back.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The modem refused the command or the PDU (`+CMS ERROR`, `ERROR`...). Nothing was sent.
    #[error("rejected: {0:?}")]
    Rejected(Final),
    /// The prompt never came; ESC was sent and acknowledged. Nothing was sent.
    #[error("no prompt")]
    NoPrompt,
    /// OK came back without a readable `+CMGS:` line: the network took the PDU, but there is no TP-MR to
    /// match a status report with.
    #[error("OK without a readable +CMGS reference")]
    NoReference,
    /// The PDU is not hex: refused before anything was written.
    #[error(transparent)]
    InvalidPdu(#[from] command::CommandError),
    /// The conversation broke down. `written`: the PDU had been written, so the network may have it.
    #[error("{cause} (PDU written: {written})")]
    Lost { written: bool, cause: SessionError },
}

/// What a command expects back, besides its final result.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Information lines with this prefix are the answer; others are unsolicited.
    pub prefix: Option<&'static str>,
    /// Some modems (Wavecom) answer `AT+CPIN?` with the information line and no OK: once such a line is in,
    /// wait only this long for the final result.
    pub info_is_final_after: Option<Duration>,
}

impl Expect {
    pub const NOTHING: Expect = Expect {
        prefix: None,
        info_is_final_after: None,
    };

    pub const fn info(prefix: &'static str) -> Self {
        Expect {
            prefix: Some(prefix),
            info_is_final_after: None,
        }
    }
}

enum Event {
    Prompt,
    Line(Line, String),
}

pub struct Session {
    port: Box<dyn Port>,
    framer: Framer,
    unsolicited: VecDeque<Unsolicited>,
    /// A `+CMT`/`+CDS` header whose PDU line has not arrived yet.
    awaiting_pdu: Option<Urc>,
    /// When a restart notice was read since the running command was written: the wait for its answer
    /// ends [`RESTART_GRACE`] later instead of at the deadline (up to the `+CMGS` result timeout).
    restart_seen: Option<Instant>,
}

impl Session {
    pub fn new(port: Box<dyn Port>) -> Self {
        Session {
            port,
            framer: Framer::new(),
            unsolicited: VecDeque::new(),
            awaiting_pdu: None,
            restart_seen: None,
        }
    }

    /// The oldest unsolicited event not yet taken.
    pub fn take_unsolicited(&mut self) -> Option<Unsolicited> {
        self.unsolicited.pop_front()
    }

    /// The oldest routed `+CMT`/`+CDS` not yet taken, the rest left in order.
    pub fn take_routed(&mut self) -> Option<Unsolicited> {
        let at = self
            .unsolicited
            .iter()
            .position(|u| matches!(u, Unsolicited::Routed { .. }))?;
        self.unsolicited.remove(at)
    }

    /// Drops the start-up notices (`RDY`, `SMS DONE`...) and SIM state lines read so far: those of the
    /// start an initialisation just answered. Everything else stays queued.
    pub fn forget_start_up_notices(&mut self) {
        self.unsolicited.retain(|u| match u {
            Unsolicited::Urc(crate::at::Urc::Boot(_)) => false,
            // The SIM's state as it came up (`+CPIN: READY` after `RDY`): initialisation has read it.
            Unsolicited::Info(info) => info.name != "+CPIN",
            _ => true,
        });
    }

    pub fn has_unsolicited(&self) -> bool {
        !self.unsolicited.is_empty()
    }

    /// Read until the modem says something on its own. Cancel-safe: nothing read is lost if dropped.
    pub async fn wait_unsolicited(&mut self) -> Result<(), SessionError> {
        loop {
            self.drain_idle();
            if self.has_unsolicited() {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Run one command with a hard deadline.
    pub async fn command(
        &mut self,
        cmd: &str,
        expect: Expect,
        timeout: Duration,
    ) -> Result<Response, SessionError> {
        self.drain_idle();
        let deadline = Instant::now() + timeout;
        self.write(format!("{cmd}\r").as_bytes(), deadline, cmd, timeout)
            .await?;
        self.wait_final(expect, deadline, cmd, timeout).await
    }

    /// ESC, then up to `grace` for a final result. A process killed between `AT+CMGS=` and Ctrl-Z leaves
    /// the modem at its PDU prompt, where every later command is swallowed as PDU text until ESC or
    /// Ctrl-Z; ESC cancels that (the modem answers OK) and is ignored in command mode. `true` when the
    /// modem answered, i.e. a prompt was pending.
    pub async fn abort_prompt(&mut self, grace: Duration) -> Result<bool, SessionError> {
        self.drain_idle();
        let deadline = Instant::now() + grace;
        self.write(&[command::ESC], deadline, "ESC", grace).await?;
        match self
            .wait_final(Expect::NOTHING, deadline, "ESC", grace)
            .await
        {
            Ok(_) => Ok(true),
            Err(SessionError::Timeout { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `AT+CMGS=<len>`, prompt, PDU, Ctrl-Z; the TP-MR on success.
    pub async fn submit(
        &mut self,
        tpdu_length: usize,
        pdu_hex: &str,
        prompt_timeout: Duration,
        result_timeout: Duration,
    ) -> Result<u8, SubmitError> {
        let body = command::pdu_body(pdu_hex)?;
        let cmd = command::cmgs(tpdu_length);
        let lost = |written, cause| SubmitError::Lost { written, cause };
        self.drain_idle();
        let deadline = Instant::now() + prompt_timeout;
        self.write(
            format!("{cmd}\r").as_bytes(),
            deadline,
            &cmd,
            prompt_timeout,
        )
        .await
        .map_err(|e| lost(false, e))?;
        match self
            .wait_prompt(deadline, &cmd)
            .await
            .map_err(|e| lost(false, e))?
        {
            PromptOutcome::Prompt => {}
            PromptOutcome::Final(result) if result != Final::Ok => {
                return Err(SubmitError::Rejected(result));
            }
            // No prompt, or an OK instead of one: abort whatever state the modem is in.
            PromptOutcome::Final(_) | PromptOutcome::TimedOut => {
                let deadline = Instant::now() + prompt_timeout;
                self.write(&[command::ESC], deadline, "ESC", prompt_timeout)
                    .await
                    .map_err(|e| lost(false, e))?;
                return match self
                    .wait_final(Expect::NOTHING, deadline, "ESC", prompt_timeout)
                    .await
                {
                    Ok(_) => Err(SubmitError::NoPrompt),
                    Err(e) => Err(lost(false, e)),
                };
            }
        }
        let deadline = Instant::now() + result_timeout;
        self.write(&body, deadline, &cmd, result_timeout)
            .await
            .map_err(|e| lost(true, e))?;
        let response = self
            .wait_final(Expect::info("+CMGS"), deadline, &cmd, result_timeout)
            .await
            .map_err(|e| lost(true, e))?;
        if response.result != Final::Ok {
            return Err(SubmitError::Rejected(response.result));
        }
        // The last `+CMGS:` line that reads: line noise can look like one (`+CMGS: ?`), and the modem's own
        // comes just before its OK.
        response
            .info("+CMGS")
            .filter_map(|body| Cmgs::parse(&body).ok())
            .last()
            .map(|cmgs| cmgs.reference)
            .ok_or(SubmitError::NoReference)
    }

    async fn wait_prompt(
        &mut self,
        deadline: Instant,
        cmd: &str,
    ) -> Result<PromptOutcome, SessionError> {
        loop {
            while let Some(event) = self.next_event() {
                match event {
                    Event::Prompt => return Ok(PromptOutcome::Prompt),
                    Event::Line(Line::Final(Final::Call(_)), _) => {}
                    Event::Line(Line::Final(result), _) => return Ok(PromptOutcome::Final(result)),
                    Event::Line(line, _) => self.set_aside(line),
                }
            }
            if !self.fill_until(deadline, cmd).await? {
                return Ok(PromptOutcome::TimedOut);
            }
        }
    }

    /// Collect the answer until a final result or the deadline.
    async fn wait_final(
        &mut self,
        expect: Expect,
        deadline: Instant,
        cmd: &str,
        timeout: Duration,
    ) -> Result<Response, SessionError> {
        let mut lines = Vec::new();
        let mut deadline_now = deadline;
        loop {
            while let Some(event) = self.next_event() {
                match event {
                    Event::Line(Line::Final(Final::Call(_)), _)
                    | Event::Line(Line::Echo(_), _)
                    | Event::Prompt => {}
                    Event::Line(Line::Final(result), _) => return Ok(Response { lines, result }),
                    Event::Line(Line::Info(info), raw)
                        if expect.prefix == Some(info.name.as_str()) =>
                    {
                        lines.push(raw);
                        if let Some(grace) = expect.info_is_final_after {
                            deadline_now = deadline_now.min(Instant::now() + grace);
                        }
                    }
                    Event::Line(Line::Text(text), _) => lines.push(text),
                    Event::Line(line, _) => self.set_aside(line),
                }
            }
            if !self.fill_until(deadline_now, cmd).await? {
                // The information line was the whole answer (see `Expect::info_is_final_after`).
                if deadline_now < deadline {
                    return Ok(Response {
                        lines,
                        result: Final::Ok,
                    });
                }
                return Err(SessionError::Timeout {
                    command: cmd.to_owned(),
                    after: timeout,
                });
            }
        }
    }

    /// Process what is buffered while no command is running: URCs and unasked-for information lines are
    /// queued; stray finals (a late OK) and text are dropped, so they cannot be taken for the next answer.
    fn drain_idle(&mut self) {
        while let Some(event) = self.next_event() {
            match event {
                Event::Line(line @ (Line::Urc(_) | Line::Info(_)), _) => self.set_aside(line),
                Event::Line(_, raw) => tracing::debug!(line = %raw, "dropped stray line"),
                Event::Prompt => tracing::debug!("dropped stray prompt"),
            }
        }
        // A restart before this point ends no command: it is queued for the worker like any notice.
        self.restart_seen = None;
    }

    /// Reads more of the answer to `cmd`; `false` when `deadline` passed first. A restart notice read
    /// during the command cuts the wait to [`RESTART_GRACE`] after it, and then `Restarted`.
    async fn fill_until(&mut self, deadline: Instant, cmd: &str) -> Result<bool, SessionError> {
        let cut = self.restart_seen.map(|at| at + RESTART_GRACE);
        match timeout_at(cut.map_or(deadline, |c| c.min(deadline)), self.fill()).await {
            Ok(read) => read.map(|()| true),
            Err(_) if cut.is_some_and(|c| c <= deadline) => Err(SessionError::Restarted {
                command: cmd.to_owned(),
            }),
            Err(_) => Ok(false),
        }
    }

    fn set_aside(&mut self, line: Line) {
        match line {
            Line::Urc(urc) => self.unsolicited.push_back(Unsolicited::Urc(urc)),
            Line::Info(info) => self.unsolicited.push_back(Unsolicited::Info(info)),
            Line::Final(_) | Line::Echo(_) | Line::Text(_) => {}
        }
    }

    /// The next frame, with URCs and the PDU lines of `+CMT`/`+CDS` already taken out.
    fn next_event(&mut self) -> Option<Event> {
        loop {
            let raw = match self.framer.next()? {
                Frame::Prompt => return Some(Event::Prompt),
                Frame::Line(raw) => raw,
            };
            if let Some(urc) = self.awaiting_pdu.take() {
                if let Some(pdu) = pdu_line(&raw) {
                    self.unsolicited.push_back(Unsolicited::Routed {
                        urc,
                        pdu_hex: pdu.to_owned(),
                    });
                    continue;
                }
                tracing::warn!(%urc, line = %raw, "routed message without a PDU line");
            }
            match parse_line(&raw) {
                Line::Urc(urc) if urc.pdu_follows() => self.awaiting_pdu = Some(urc),
                Line::Urc(urc) => {
                    if urc.is_restart() && self.restart_seen.is_none() {
                        self.restart_seen = Some(Instant::now());
                    }
                    self.unsolicited.push_back(Unsolicited::Urc(urc));
                }
                line => return Some(Event::Line(line, raw)),
            }
        }
    }

    async fn fill(&mut self) -> Result<(), SessionError> {
        let mut buf = [0u8; 1024];
        match self.port.read(&mut buf).await? {
            0 => Err(SessionError::Closed),
            n => {
                self.framer.push(buf.get(..n).unwrap_or_default());
                Ok(())
            }
        }
    }

    async fn write(
        &mut self,
        bytes: &[u8],
        deadline: Instant,
        cmd: &str,
        timeout: Duration,
    ) -> Result<(), SessionError> {
        let write = async {
            self.port.write_all(bytes).await?;
            self.port.flush().await
        };
        match timeout_at(deadline, write).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SessionError::Timeout {
                command: cmd.to_owned(),
                after: timeout,
            }),
        }
    }
}

enum PromptOutcome {
    Prompt,
    Final(Final),
    TimedOut,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::at::CmsError;
    use tokio::io::{DuplexStream, duplex};

    const SECOND: Duration = Duration::from_secs(1);

    fn pair() -> (Session, DuplexStream) {
        let (ours, modem) = duplex(4096);
        (Session::new(Box::new(ours)), modem)
    }

    /// Read what the host wrote up to and including `end` (`\r` for commands, Ctrl-Z or ESC after a prompt).
    async fn read_until(modem: &mut DuplexStream, ends: &[u8]) -> String {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while modem.read_exact(&mut byte).await.is_ok() {
            got.push(byte[0]);
            if ends.contains(&byte[0]) {
                break;
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn answer_lines_are_kept_and_urcs_set_aside() {
        let (mut s, mut modem) = pair();
        let fake = tokio::spawn(async move {
            assert_eq!(read_until(&mut modem, b"\r").await, "AT+CSQ\r");
            modem
                .write_all(b"AT+CSQ\r\r\n+CMTI: \"SM\",3\r\n+CREG: 1\r\n+CSQ: 20,99\r\n^RSSI:5\r\n\r\nOK\r\n")
                .await
                .unwrap();
            modem
        });
        let r = s
            .command("AT+CSQ", Expect::info("+CSQ"), SECOND)
            .await
            .unwrap();
        assert_eq!(r.lines, vec!["+CSQ: 20,99"]);
        assert!(r.is_ok());
        assert_eq!(
            s.take_unsolicited(),
            Some(Unsolicited::Urc(Urc::Cmti {
                memory: "SM".into(),
                index: 3
            }))
        );
        assert!(matches!(s.take_unsolicited(), Some(Unsolicited::Info(i)) if i.name == "+CREG"));
        assert!(
            matches!(s.take_unsolicited(), Some(Unsolicited::Urc(Urc::Other { name, .. })) if name == "^RSSI")
        );
        assert_eq!(s.take_unsolicited(), None);
        fake.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn noise_does_not_extend_the_deadline() {
        let (mut s, mut modem) = pair();
        tokio::spawn(async move {
            read_until(&mut modem, b"\r").await;
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if modem.write_all(b"^RSSI:9\r\n").await.is_err() {
                    return;
                }
            }
        });
        let start = Instant::now();
        let err = s
            .command("AT", Expect::NOTHING, 5 * SECOND)
            .await
            .unwrap_err();
        assert!(matches!(err, SessionError::Timeout { .. }), "{err}");
        assert!(
            start.elapsed() < 6 * SECOND,
            "deadline stretched to {:?}",
            start.elapsed()
        );
        assert!(s.has_unsolicited());
    }

    #[tokio::test(start_paused = true)]
    async fn esc_cancels_a_pending_prompt_and_is_silent_otherwise() {
        let (mut s, mut modem) = pair();
        let fake = tokio::spawn(async move {
            // At the prompt: PDU text is swallowed, ESC answers OK.
            assert_eq!(read_until(&mut modem, &[0x1b]).await, "\x1b");
            modem.write_all(b"\r\nOK\r\n").await.unwrap();
            // In command mode: ESC gets no answer at all.
            assert_eq!(read_until(&mut modem, &[0x1b]).await, "\x1b");
            modem
        });
        assert!(s.abort_prompt(SECOND).await.unwrap());
        assert!(!s.abort_prompt(SECOND).await.unwrap());
        let _modem = fake.await.unwrap();
    }

    /// `RDY` while a command waits ends it soon after (not at its deadline) when no answer follows; one
    /// printed before the command was written, or a later start-up notice, is only queued; and an answer
    /// that does follow the notice is the command's, not left for the next one.
    #[tokio::test(start_paused = true)]
    async fn a_restart_notice_ends_the_command_in_flight() {
        let (mut s, mut modem) = pair();
        let fake = tokio::spawn(async move {
            modem.write_all(b"\r\nRDY\r\n").await.unwrap();
            assert_eq!(read_until(&mut modem, b"\r").await, "AT\r");
            let answers: [(&str, &[u8]); 3] = [
                ("ATE0\r", b"\r\nSMS DONE\r\n\r\nOK\r\n"),
                ("AT+CGMI\r", b"\r\nRDY\r\n\r\nOK\r\n"),
                ("AT+CGMM\r", b"\r\nEC25\r\n\r\nOK\r\n"),
            ];
            modem.write_all(b"\r\nOK\r\n").await.unwrap();
            for (command, answer) in answers {
                assert_eq!(read_until(&mut modem, b"\r").await, command);
                modem.write_all(answer).await.unwrap();
            }
            assert_eq!(read_until(&mut modem, b"\r").await, "AT+CSQ\r");
            modem.write_all(b"\r\nRDY\r\n").await.unwrap();
            modem
        });
        // Read while idle, as the worker does between commands.
        s.wait_unsolicited().await.unwrap();
        s.command("AT", Expect::NOTHING, SECOND).await.unwrap();
        s.command("ATE0", Expect::NOTHING, SECOND).await.unwrap();
        // The notice comes with the answer (a modem that was up): the answer is this command's.
        assert!(
            s.command("AT+CGMI", Expect::NOTHING, SECOND)
                .await
                .unwrap()
                .is_ok()
        );
        let model = s.command("AT+CGMM", Expect::NOTHING, SECOND).await.unwrap();
        assert_eq!(model.lines, ["EC25"]);
        let start = Instant::now();
        let err = s
            .command("AT+CSQ", Expect::info("+CSQ"), 100 * SECOND)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SessionError::Restarted { command } if command == "AT+CSQ"),
            "{err}"
        );
        // Virtual time: the grace, not the command's 100 s.
        assert_eq!(start.elapsed(), RESTART_GRACE);
        let notices: Vec<_> = std::iter::from_fn(|| s.take_unsolicited()).collect();
        assert_eq!(notices.len(), 4, "{notices:?}");
        let _modem = fake.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn info_line_ends_a_command_when_ok_never_follows() {
        let (mut s, mut modem) = pair();
        tokio::spawn(async move {
            read_until(&mut modem, b"\r").await;
            modem.write_all(b"+CPIN: READY\r\n").await.unwrap();
            std::future::pending::<()>().await;
        });
        let expect = Expect {
            prefix: Some("+CPIN"),
            info_is_final_after: Some(Duration::from_millis(500)),
        };
        let r = s.command("AT+CPIN?", expect, 10 * SECOND).await.unwrap();
        assert_eq!(r.info("+CPIN").collect::<Vec<_>>(), vec!["READY"]);
    }

    #[tokio::test]
    async fn a_garbled_cmgs_line_before_the_real_one_is_passed_over() {
        let (mut s, mut modem) = pair();
        let fake = tokio::spawn(async move {
            read_until(&mut modem, b"\r").await;
            modem.write_all(b"\r\n> ").await.unwrap();
            read_until(&mut modem, &[0x1a]).await;
            modem
                .write_all(b"\r\n+CMGS: ?\r\n\r\n+CMGS: 41\r\n\r\nOK\r\n")
                .await
                .unwrap();
        });
        assert_eq!(s.submit(1, "00AA", SECOND, SECOND).await.unwrap(), 41);
        fake.await.unwrap();
    }

    #[tokio::test]
    async fn submit_returns_the_reference_through_urc_noise() {
        let (mut s, mut modem) = pair();
        let fake = tokio::spawn(async move {
            assert_eq!(read_until(&mut modem, b"\r").await, "AT+CMGS=5\r");
            modem
                .write_all(b"\r\n+ZPASR: \"UMTS\"\r\n\r\n> ")
                .await
                .unwrap();
            assert_eq!(read_until(&mut modem, &[0x1a]).await, "00AABBCCDDEE\x1a");
            modem
                .write_all(b"\r\n+CMTI: \"SM\",1\r\n+CMGS: 77\r\n\r\nOK\r\n")
                .await
                .unwrap();
        });
        assert_eq!(
            s.submit(5, "00AABBCCDDEE", SECOND, SECOND).await.unwrap(),
            77
        );
        assert!(matches!(
            s.take_unsolicited(),
            Some(Unsolicited::Urc(Urc::Other { .. }))
        ));
        assert_eq!(
            s.take_unsolicited(),
            Some(Unsolicited::Urc(Urc::Cmti {
                memory: "SM".into(),
                index: 1
            }))
        );
        fake.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn missing_prompt_is_aborted_with_esc() {
        let (mut s, mut modem) = pair();
        let fake = tokio::spawn(async move {
            read_until(&mut modem, b"\r").await;
            assert_eq!(read_until(&mut modem, &[0x1b]).await, "\x1b");
            modem.write_all(b"\r\nOK\r\n").await.unwrap();
        });
        let err = s.submit(5, "00AA", 10 * SECOND, SECOND).await.unwrap_err();
        assert!(matches!(err, SubmitError::NoPrompt), "{err}");
        fake.await.unwrap();
    }

    #[tokio::test]
    async fn cms_error_after_the_pdu_is_a_rejection() {
        let (mut s, mut modem) = pair();
        tokio::spawn(async move {
            read_until(&mut modem, b"\r").await;
            modem.write_all(b"\r\n> ").await.unwrap();
            read_until(&mut modem, &[0x1a]).await;
            modem.write_all(b"\r\n+CMS ERROR: 500\r\n").await.unwrap();
            std::future::pending::<()>().await;
        });
        let err = s.submit(1, "00AA", SECOND, SECOND).await.unwrap_err();
        assert!(
            matches!(err, SubmitError::Rejected(Final::Cms(CmsError(500)))),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silence_after_the_pdu_is_lost_with_pdu_written() {
        let (mut s, mut modem) = pair();
        tokio::spawn(async move {
            read_until(&mut modem, b"\r").await;
            modem.write_all(b"\r\n> ").await.unwrap();
            read_until(&mut modem, &[0x1a]).await;
            std::future::pending::<()>().await;
        });
        let err = s.submit(1, "00AA", SECOND, 120 * SECOND).await.unwrap_err();
        assert!(
            matches!(
                err,
                SubmitError::Lost {
                    written: true,
                    cause: SessionError::Timeout { .. }
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn routed_message_is_paired_with_its_pdu_line() {
        let (mut s, mut modem) = pair();
        modem.write_all(b"\r\n+CMT: ,23\r\n").await.unwrap();
        modem
            .write_all(b"0791AABB\r\n+CDS: 25\r\nBAD\r\nRING\r\n")
            .await
            .unwrap();
        s.wait_unsolicited().await.unwrap();
        assert_eq!(
            s.take_unsolicited(),
            Some(Unsolicited::Routed {
                urc: Urc::Cmt {
                    alpha: None,
                    length: Some(23)
                },
                pdu_hex: "0791AABB".into()
            })
        );
        drop(modem);
        // "BAD" is not a PDU: the +CDS is dropped, RING still arrives, then the port closes.
        let mut rest = Vec::new();
        loop {
            while let Some(u) = s.take_unsolicited() {
                rest.push(u);
            }
            if let Err(e) = s.wait_unsolicited().await {
                assert!(matches!(e, SessionError::Closed), "{e}");
                break;
            }
        }
        assert_eq!(rest, vec![Unsolicited::Urc(Urc::Ring)]);
    }
}
