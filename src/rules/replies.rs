//! What the gateway says on its own: opt-out and opt-in confirmations, the HELP reply, the optional opt-out
//! notice on outbound texts (`[optout]`), and reply menus (`[[reply_rules]]`) whose answers are templates
//! filled from the metadata of the last message sent to the person.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::keywords::{Keyword, Keywords, Language, normalize};

/// One text per language; a language without its own text uses the English one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawTexts")]
pub struct Texts {
    en: String,
    es: Option<String>,
    fr: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTexts {
    en: String,
    es: Option<String>,
    fr: Option<String>,
}

impl TryFrom<RawTexts> for Texts {
    type Error = String;

    fn try_from(raw: RawTexts) -> Result<Self, String> {
        Texts::new(raw.en, raw.es, raw.fr)
    }
}

impl Texts {
    /// Every text must say something: an empty confirmation would still be sent, and say nothing.
    pub fn new(en: String, es: Option<String>, fr: Option<String>) -> Result<Self, String> {
        for (language, text) in [("en", Some(&en)), ("es", es.as_ref()), ("fr", fr.as_ref())] {
            if text.is_some_and(|t| t.trim().is_empty()) {
                return Err(format!("the `{language}` text is empty"));
            }
        }
        Ok(Texts { en, es, fr })
    }

    fn of(en: &str, es: &str, fr: &str) -> Self {
        Texts {
            en: en.to_owned(),
            es: Some(es.to_owned()),
            fr: Some(fr.to_owned()),
        }
    }

    /// The text for `language`, else the English one.
    pub fn get(&self, language: Language) -> &str {
        let own = match language {
            Language::En => None,
            Language::Es => self.es.as_deref(),
            Language::Fr => self.fr.as_deref(),
        };
        own.unwrap_or(&self.en)
    }

    /// Every text given, each with its language.
    pub fn all(&self) -> impl Iterator<Item = (Language, &str)> {
        [
            (Language::En, Some(self.en.as_str())),
            (Language::Es, self.es.as_deref()),
            (Language::Fr, self.fr.as_deref()),
        ]
        .into_iter()
        .filter_map(|(language, text)| text.map(|t| (language, t)))
    }
}

/// What to do with an outbound text that lacks the opt-out notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeMode {
    /// Append it when that does not add an SMS part; refuse the send otherwise.
    #[default]
    Append,
    /// Refuse the send: the CMS must write the notice itself.
    Require,
}

/// `[optout]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptOutConfig {
    /// The one confirmation an opt-out gets (TCPA: no other content, in particular nothing about the debt).
    pub confirmation: Texts,
    /// The answer to START/UNSTOP/ALTA from an opted-out number.
    pub opt_in_confirmation: Texts,
    /// The answer to HELP/INFO/AYUDA: who is texting, how to reach them, how to stop.
    pub help: Texts,
    /// A repeated opt-out from a number within this long of its confirmation gets no second one.
    #[serde(deserialize_with = "crate::config::values::duration")]
    pub repeat_window: std::time::Duration,
    /// The opt-out notice every outbound text must carry (Reg F 1006.6(e)); none when absent.
    pub notice: Option<Texts>,
    pub notice_mode: NoticeMode,
}

impl Default for OptOutConfig {
    fn default() -> Self {
        OptOutConfig {
            confirmation: Texts::of(
                "You will no longer receive text messages from this number. Reply START to opt back in.",
                "No recibirá más mensajes de este número. Responda ALTA para volver.",
                "Vous ne recevrez plus de SMS de ce numéro. Répondez START pour les recevoir à nouveau.",
            ),
            opt_in_confirmation: Texts::of(
                "You will receive text messages from this number again. Reply STOP to stop them.",
                "Volverá a recibir mensajes de este número. Responda BAJA para parar.",
                "Vous recevrez à nouveau des SMS de ce numéro. Répondez ARRET pour ne plus en recevoir.",
            ),
            help: Texts::of(
                "Reply STOP to stop texts to this number.",
                "Responda BAJA para no recibir más mensajes en este número.",
                "Répondez ARRET pour ne plus recevoir de SMS à ce numéro.",
            ),
            repeat_window: std::time::Duration::from_secs(24 * 3600),
            notice: None,
            notice_mode: NoticeMode::Append,
        }
    }
}

/// A template with `{field}` placeholders, checked when the config is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Template {
    text: String,
}

impl TryFrom<String> for Template {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let template = Template { text };
        template.pieces()?;
        if template.text.trim().is_empty() {
            return Err("the template is empty".into());
        }
        Ok(template)
    }
}

enum Piece<'t> {
    Literal(&'t str),
    Field(&'t str),
}

impl Template {
    /// The template as written, placeholders and all.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn pieces(&self) -> Result<Vec<Piece<'_>>, String> {
        let mut pieces = Vec::new();
        let mut rest = self.text.as_str();
        while let Some(open) = rest.find(['{', '}']) {
            let (literal, tail) = rest.split_at(open);
            pieces.push(Piece::Literal(literal));
            let Some(after) = tail.strip_prefix('{') else {
                return Err(format!("unmatched `}}` in template {:?}", self.text));
            };
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in template {:?}", self.text))?;
            let name = after.get(..close).unwrap_or_default();
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
            if !valid {
                return Err(format!(
                    "placeholder {{{name}}} in template {:?}: use letters, digits, `_`, `-` or `.`",
                    self.text
                ));
            }
            pieces.push(Piece::Field(name));
            rest = after.get(close + 1..).unwrap_or_default();
        }
        pieces.push(Piece::Literal(rest));
        Ok(pieces)
    }

    /// The text with every placeholder replaced by the metadata field of that name (strings as they are,
    /// numbers and booleans written out); `Err(name)` names the first field missing, not a scalar, or a
    /// string with a control character the API would have refused in a text (metadata is not checked for
    /// them when it is accepted, and a reply must not go out with a NUL in it).
    pub fn fill(&self, metadata: Option<&Map<String, Value>>) -> Result<String, String> {
        let mut out = String::with_capacity(self.text.len());
        for piece in self.pieces()? {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Field(name) => match metadata.and_then(|m| m.get(name)) {
                    Some(Value::String(s)) if crate::pdu::stray_control(s, false).is_none() => {
                        out.push_str(s)
                    }
                    Some(value @ (Value::Number(_) | Value::Bool(_))) => {
                        out.push_str(&value.to_string())
                    }
                    _ => return Err(name.to_owned()),
                },
            }
        }
        Ok(out)
    }
}

/// One `[[reply_rules]]` entry: replies matching one of `keywords` get `template`, and the webhook event
/// carries `intent`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawReplyRule")]
pub struct ReplyRule {
    keywords: Vec<String>,
    pub intent: String,
    pub template: Template,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplyRule {
    keywords: Vec<String>,
    intent: String,
    template: Template,
}

impl TryFrom<RawReplyRule> for ReplyRule {
    type Error = String;

    fn try_from(raw: RawReplyRule) -> Result<Self, String> {
        ReplyRule::new(raw.keywords, raw.intent, raw.template)
    }
}

impl ReplyRule {
    /// A keyword must mean something once normalised, and must not be an opt-out, opt-in or help word:
    /// those are matched first, so the rule could never fire.
    pub fn new(keywords: Vec<String>, intent: String, template: Template) -> Result<Self, String> {
        if keywords.is_empty() {
            return Err("`keywords` is empty".into());
        }
        if intent.trim().is_empty() {
            return Err("`intent` is empty".into());
        }
        let builtin = Keywords::default();
        let mut normalised = Vec::with_capacity(keywords.len());
        for word in &keywords {
            let plain = normalize(word);
            if plain.is_empty() {
                return Err(format!("keyword {word:?} has no letters or digits"));
            }
            match builtin.classify(&plain) {
                Keyword::OptOut { .. } | Keyword::OptIn { .. } | Keyword::Help { .. } => {
                    return Err(format!(
                        "keyword {word:?} is an opt-out, opt-in or help word, which always wins"
                    ));
                }
                _ => normalised.push(plain),
            }
        }
        Ok(ReplyRule {
            keywords: normalised,
            intent,
            template,
        })
    }

    /// Its keywords, normalised.
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> Result<Template, String> {
        Template::try_from(text.to_owned())
    }

    #[test]
    fn templates_fill_from_metadata() {
        let t = template("Pay {amount} at {paymentLink}. Ref {case.id}").unwrap();
        let metadata: Map<String, Value> = serde_json::from_str(
            r#"{"amount": 125.5, "paymentLink": "https://pay.example/x1", "case.id": "C-9"}"#,
        )
        .unwrap();
        assert_eq!(
            t.fill(Some(&metadata)).unwrap(),
            "Pay 125.5 at https://pay.example/x1. Ref C-9"
        );
        let partial: Map<String, Value> =
            serde_json::from_str(r#"{"amount": {"nested": 1}}"#).unwrap();
        assert_eq!(t.fill(Some(&partial)), Err("amount".into()));
        assert_eq!(t.fill(None), Err("amount".into()));
        let control: Map<String, Value> =
            serde_json::from_str(r#"{"amount": "12\u0000", "paymentLink": "x", "case.id": "C"}"#)
                .unwrap();
        assert_eq!(t.fill(Some(&control)), Err("amount".into()));
        assert_eq!(
            template("no fields").unwrap().fill(None).unwrap(),
            "no fields"
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(
            template("Pay at {paymentLink")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            template("Pay at paymentLink}")
                .unwrap_err()
                .contains("unmatched")
        );
        assert!(template("Pay at {}").unwrap_err().contains("placeholder"));
        assert!(template("Pay {a b}").unwrap_err().contains("placeholder"));
        assert!(template("  ").unwrap_err().contains("empty"));
    }

    #[test]
    fn reply_rules_refuse_words_that_can_never_match() {
        let t = template("x").unwrap();
        assert!(ReplyRule::new(vec!["STOP".into()], "pay".into(), t.clone()).is_err());
        assert!(ReplyRule::new(vec!["Ayuda".into()], "pay".into(), t.clone()).is_err());
        assert!(ReplyRule::new(vec!["!!".into()], "pay".into(), t.clone()).is_err());
        assert!(ReplyRule::new(vec![], "pay".into(), t.clone()).is_err());
        assert!(ReplyRule::new(vec!["1".into()], " ".into(), t.clone()).is_err());
        let rule = ReplyRule::new(vec!["1".into(), "Pay!".into()], "pay".into(), t).unwrap();
        assert_eq!(rule.keywords(), ["1", "pay"]);
    }

    #[test]
    fn default_answers_fit_one_sms_each() {
        let config = OptOutConfig::default();
        for texts in [
            &config.confirmation,
            &config.opt_in_confirmation,
            &config.help,
        ] {
            for (language, text) in texts.all() {
                let parts = crate::pdu::segments(text, crate::pdu::EncodingChoice::Auto, true)
                    .unwrap()
                    .parts;
                assert_eq!(parts, 1, "{language:?}: {text}");
            }
        }
    }

    #[test]
    fn texts_fall_back_to_english() {
        let texts = Texts::new("Stopped.".into(), Some("Baja.".into()), None).unwrap();
        assert_eq!(texts.get(Language::Es), "Baja.");
        assert_eq!(texts.get(Language::Fr), "Stopped.");
        assert_eq!(texts.all().count(), 2);
        assert!(Texts::new("x".into(), Some(" ".into()), None).is_err());
        let config: OptOutConfig = toml::from_str(
            "notice = { en = \"Reply STOP to opt out\" }\nnotice_mode = \"require\"\nrepeat_window = \"5m\"",
        )
        .unwrap();
        assert_eq!(config.notice_mode, NoticeMode::Require);
        assert_eq!(config.repeat_window.as_secs(), 300);
        assert_eq!(config.confirmation, OptOutConfig::default().confirmation);
    }
}
