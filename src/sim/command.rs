//! Parsing a command line from the DTE (`AT...` up to the `\r`), as a modem's command interpreter does.
//!
//! The simulator deliberately does not use `crate::at` (the driver's side): a bug shared by both sides would
//! go unnoticed. A line may hold several commands: basic ones run together (`ATE0V1`) and extended ones
//! separated by `;` (`AT+CMEE=1;+CMGF=0`).

/// What the command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `AT+CMD` or a basic command without a value.
    Exec,
    /// `AT+CMD?`
    Read,
    /// `AT+CMD=?`
    Test,
    /// `AT+CMD=a,b` or `ATE0`: the arguments, unquoted.
    Set(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    /// Upper-case name: `+CMGS`, `^ICCID`, `E`, `&F`, `S0`.
    pub name: String,
    pub op: Op,
}

impl Command {
    /// The `i`th argument as an integer, `None` when absent, empty or not a number.
    pub fn int_arg(&self, i: usize) -> Option<u32> {
        match &self.op {
            Op::Set(args) => args.get(i).and_then(|a| a.trim().parse().ok()),
            _ => None,
        }
    }

    pub fn str_arg(&self, i: usize) -> Option<&str> {
        match &self.op {
            Op::Set(args) => args.get(i).map(String::as_str),
            _ => None,
        }
    }
}

/// The line does not start with `AT` or is malformed: the modem answers `ERROR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadLine;

/// Parse one command line (without its `\r`). `Ok(vec![])` is a bare `AT`.
pub(crate) fn parse_line(line: &str) -> Result<Vec<Command>, BadLine> {
    let line = line.trim();
    let rest = match line.get(..2) {
        Some(prefix) if prefix.eq_ignore_ascii_case("AT") => &line[2..],
        _ => return Err(BadLine),
    };
    let mut commands = Vec::new();
    let mut chars = rest.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            ';' | ' ' => {
                chars.next();
            }
            '+' | '^' | '$' | '%' => {
                let end = extended_end(rest, start);
                commands.push(parse_extended(&rest[start..end])?);
                while chars.peek().is_some_and(|&(i, _)| i < end) {
                    chars.next();
                }
            }
            c if c.is_ascii_alphabetic() || c == '&' => {
                chars.next();
                let mut name = c.to_ascii_uppercase().to_string();
                if c == '&' {
                    match chars.next() {
                        Some((_, l)) if l.is_ascii_alphabetic() => {
                            name.push(l.to_ascii_uppercase())
                        }
                        _ => return Err(BadLine),
                    }
                }
                let mut digits = String::new();
                while let Some(&(_, d)) = chars.peek() {
                    if !d.is_ascii_digit() {
                        break;
                    }
                    digits.push(d);
                    chars.next();
                }
                let op = if name == "S" {
                    // S-registers: `S0=0` / `S0?`; the register number is part of the name.
                    name.push_str(&digits);
                    match chars.peek() {
                        Some(&(_, '?')) => {
                            chars.next();
                            Op::Read
                        }
                        Some(&(_, '=')) => {
                            chars.next();
                            let mut value = String::new();
                            while let Some(&(_, d)) = chars.peek() {
                                if !d.is_ascii_digit() {
                                    break;
                                }
                                value.push(d);
                                chars.next();
                            }
                            Op::Set(vec![value])
                        }
                        _ => Op::Exec,
                    }
                } else if digits.is_empty() {
                    Op::Exec
                } else {
                    Op::Set(vec![digits])
                };
                commands.push(Command { name, op });
            }
            _ => return Err(BadLine),
        }
    }
    Ok(commands)
}

/// End (exclusive) of the extended command starting at `start`: the first `;` outside quotes.
fn extended_end(s: &str, start: usize) -> usize {
    let mut quoted = false;
    for (i, c) in s[start..].char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return start + i,
            _ => {}
        }
    }
    s.len()
}

fn parse_extended(text: &str) -> Result<Command, BadLine> {
    let name_end = text
        .char_indices()
        .skip(1)
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(text.len(), |(i, _)| i);
    let name = text[..name_end].to_ascii_uppercase();
    if name.len() < 2 {
        return Err(BadLine);
    }
    let tail = &text[name_end..];
    let op = if tail.is_empty() {
        Op::Exec
    } else if tail == "?" {
        Op::Read
    } else if tail == "=?" {
        Op::Test
    } else if let Some(args) = tail.strip_prefix('=') {
        Op::Set(split_args(args))
    } else {
        return Err(BadLine);
    };
    Ok(Command { name, op })
}

/// Split `a,"b,c",d` into `["a", "b,c", "d"]`.
fn split_args(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in args.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut current).trim().to_owned()),
            c => current.push(c),
        }
    }
    out.push(current.trim().to_owned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, args: &[&str]) -> Command {
        Command {
            name: name.into(),
            op: Op::Set(args.iter().map(|a| a.to_string()).collect()),
        }
    }

    #[test]
    fn parses_basic_extended_and_chained_commands() {
        assert_eq!(parse_line("AT"), Ok(vec![]));
        assert_eq!(parse_line("ate0"), Ok(vec![set("E", &["0"])]));
        assert_eq!(
            parse_line("ATE0V1&F"),
            Ok(vec![
                set("E", &["0"]),
                set("V", &["1"]),
                Command {
                    name: "&F".into(),
                    op: Op::Exec
                }
            ])
        );
        assert_eq!(
            parse_line("AT+CMEE=1;+CMGF=0"),
            Ok(vec![set("+CMEE", &["1"]), set("+CMGF", &["0"])])
        );
        assert_eq!(
            parse_line("AT+CPMS=\"SM\",\"SM\",\"SM\""),
            Ok(vec![set("+CPMS", &["SM", "SM", "SM"])])
        );
        assert_eq!(
            parse_line("AT+CPIN?"),
            Ok(vec![Command {
                name: "+CPIN".into(),
                op: Op::Read
            }])
        );
        assert_eq!(
            parse_line("AT+CNMI=?"),
            Ok(vec![Command {
                name: "+CNMI".into(),
                op: Op::Test
            }])
        );
        assert_eq!(
            parse_line("AT^ICCID?").map(|c| c[0].name.clone()),
            Ok("^ICCID".into())
        );
    }

    #[test]
    fn rejects_lines_that_are_not_commands() {
        assert_eq!(parse_line("hello"), Err(BadLine));
        assert_eq!(parse_line(""), Err(BadLine));
        assert_eq!(parse_line("AT+"), Err(BadLine));
        assert_eq!(parse_line("AT+CSQ!"), Err(BadLine));
        assert_eq!(parse_line("AT\u{e9}"), Err(BadLine));
    }

    #[test]
    fn int_args() {
        let c = &parse_line("AT+CNMI=2,1,,2,0").unwrap()[0];
        assert_eq!(c.int_arg(0), Some(2));
        assert_eq!(c.int_arg(2), None);
        assert_eq!(c.int_arg(3), Some(2));
        assert_eq!(c.int_arg(9), None);
    }
}
