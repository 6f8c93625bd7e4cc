//! Splitting the body of an information response into its comma-separated fields.
//!
//! Fields may be quoted (`"SM"`), bare (`4CA`) or empty (`0,,29`); commas inside quotes do not split. A quote
//! left open or text glued to a closing quote is an error, not a guess: gammu crashed on exactly that
//! (`"0B,"0100701"`), and a wrong LAC is worse than none.

use super::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// The text without its quotes, untrimmed inside quotes, trimmed outside.
    pub text: &'a str,
    pub quoted: bool,
}

impl<'a> Field<'a> {
    /// `None` for an empty field (`,,` or `""`), which 27.007 uses for "not given".
    pub fn non_empty(self) -> Option<&'a str> {
        (!self.text.is_empty()).then_some(self.text)
    }

    pub fn int<T: std::str::FromStr>(self) -> Option<T> {
        if self.quoted {
            return None;
        }
        self.text.parse().ok()
    }

    /// A hexadecimal value such as a LAC or cell id, quoted or not.
    pub fn hex(self) -> Option<u32> {
        u32::from_str_radix(self.text, 16).ok()
    }
}

pub(crate) fn split<'a>(what: &'static str, body: &'a str) -> Result<Vec<Field<'a>>, ParseError> {
    let err = |reason| ParseError::new(what, body, reason);
    let mut fields = Vec::new();
    let mut rest = body.trim();
    if rest.is_empty() {
        return Ok(fields);
    }
    loop {
        let trimmed = rest.trim_start();
        let (field, after) = if let Some(inner) = trimmed.strip_prefix('"') {
            let close = inner.find('"').ok_or_else(|| err("unterminated quote"))?;
            let (text, after) = inner.split_at(close);
            let after = after.get(1..).unwrap_or("").trim_start();
            (Field { text, quoted: true }, after)
        } else {
            let end = trimmed.find(',').unwrap_or(trimmed.len());
            let (text, after) = trimmed.split_at(end);
            if text.contains('"') {
                return Err(err("stray quote in a bare field"));
            }
            (
                Field {
                    text: text.trim(),
                    quoted: false,
                },
                after,
            )
        };
        fields.push(field);
        match after.strip_prefix(',') {
            Some(next) => rest = next,
            None if after.is_empty() => return Ok(fields),
            None => return Err(err("text after a closing quote")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(text: &str, quoted: bool) -> Field<'_> {
        Field { text, quoted }
    }

    #[test]
    fn splits_quoted_bare_and_empty_fields() {
        assert_eq!(
            split("t", r#"0,"a,b", x y ,,"""#).unwrap(),
            vec![
                f("0", false),
                f("a,b", true),
                f("x y", false),
                f("", false),
                f("", true)
            ]
        );
        assert_eq!(split("t", "  ").unwrap(), vec![]);
    }

    #[test]
    fn rejects_broken_quoting() {
        assert!(split("t", r#"2,1,"0B,"0100701",7"#).is_err());
        assert!(split("t", r#"2,1,"5E25"#).is_err());
        assert!(split("t", r#"ME", "SR""#).is_err());
    }
}
