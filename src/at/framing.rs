//! Byte stream → frames: CR/LF-terminated lines and the bare `> ` prompt of `AT+CMGS`.
//!
//! Modems end lines with `\r\n`, some with `\r\r\n`, a few text bodies carry a bare `\n`: every CR or LF ends a
//! line and empty lines are dropped, so all of these frame the same way. The prompt is the one thing a modem
//! prints with no line ending after it, so it is recognised by its first two bytes at the start of a line.
//! "Not enough bytes yet" is ordinary control flow ([`Framer::next`] returns `None`), never an error, and no
//! input can make framing fail: undecodable bytes become U+FFFD and NULs are dropped.

/// Longest line kept whole. A modem that streams bytes without ever ending a line (a hang spewing noise)
/// must not make us buffer without bound; the longest legitimate line (a +CMGL PDU line) is under 400 bytes.
pub const MAX_LINE: usize = 4096;

/// One unit of modem output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A line without its terminator (never empty).
    Line(String),
    /// The `> ` prompt inviting the PDU after `AT+CMGS=<len>`.
    Prompt,
}

/// Incremental framer: feed it whatever the port gave with [`Framer::push`], then drain [`Framer::next`].
#[derive(Debug, Default)]
pub struct Framer {
    /// Bytes received but not yet framed. Always starts at a line boundary once leading CR/LF are skipped.
    buf: Vec<u8>,
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes read from the port.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held back waiting for a line end (a partial line).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Forget everything buffered: used after re-opening a port, when half a line from before is garbage.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The next complete frame, or `None` until more bytes arrive.
    #[allow(clippy::should_implement_trait)] // not an Iterator: `None` means "not yet", not "finished"
    pub fn next(&mut self) -> Option<Frame> {
        loop {
            let start = self
                .buf
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            if self.buf.is_empty() {
                return None;
            }
            if self.buf.starts_with(b"> ") {
                self.buf.drain(..2);
                return Some(Frame::Prompt);
            }
            let end = match self.buf.iter().position(|&b| b == b'\r' || b == b'\n') {
                Some(end) => end,
                None if self.buf.len() >= MAX_LINE => MAX_LINE,
                None => return None,
            };
            let raw: Vec<u8> = self.buf.drain(..end).filter(|&b| b != 0).collect();
            let line = String::from_utf8_lossy(&raw).into_owned();
            if !line.is_empty() {
                return Some(Frame::Line(line));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut f = Framer::new();
        f.push(input);
        std::iter::from_fn(|| f.next()).collect()
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.to_owned())
    }

    #[test]
    fn crlf_crcrlf_and_bare_lf_all_end_lines() {
        assert_eq!(
            frames(b"AT+CGMM\r\r\n MODEL \r\n\r\nOK\r\nA\nB\r\n"),
            vec![
                line("AT+CGMM"),
                line(" MODEL "),
                line("OK"),
                line("A"),
                line("B")
            ]
        );
    }

    #[test]
    fn prompt_without_line_end_is_a_frame() {
        let mut f = Framer::new();
        f.push(b"\r\n> ");
        assert_eq!(f.next(), Some(Frame::Prompt));
        assert_eq!(f.next(), None);
        f.push(b"\r\n+CMGS: 12\r\nOK\r\n");
        assert_eq!(f.next(), Some(line("+CMGS: 12")));
        assert_eq!(f.next(), Some(line("OK")));
    }

    #[test]
    fn partial_line_waits_for_its_end() {
        let mut f = Framer::new();
        f.push(b"+CSQ: 1");
        assert_eq!(f.next(), None);
        assert_eq!(f.pending(), b"+CSQ: 1");
        f.push(b"5,99\r");
        assert_eq!(f.next(), Some(line("+CSQ: 15,99")));
        f.push(b"\n");
        assert_eq!(f.next(), None);
        assert!(f.pending().is_empty());
    }

    #[test]
    fn garbage_bytes_are_tolerated() {
        assert_eq!(
            frames(b"\x00\xff\xfeOK\x00\r\n\x00\x00\r\n"),
            vec![line("\u{fffd}\u{fffd}OK")]
        );
    }

    #[test]
    fn endless_line_is_cut_at_max_line() {
        let mut f = Framer::new();
        f.push(&vec![b'x'; MAX_LINE + 10]);
        assert_eq!(f.next(), Some(Frame::Line("x".repeat(MAX_LINE))));
        assert_eq!(f.next(), None);
        assert_eq!(f.pending().len(), 10);
    }
}
