//! The optional opt-out notice on outbound texts (Reg F 1006.6(e): every electronic message needs a clear
//! way to opt out). A text that already carries the notice of any configured language passes unchanged;
//! otherwise the notice of its language is appended when that costs no extra SMS part, or the send is
//! refused with `optout_notice_missing` so the CMS can shorten it or add the notice itself.

use crate::pdu::{self, EncodingChoice};

use super::keywords::{Language, normalize};
use super::replies::{NoticeMode, OptOutConfig};

/// Why a text cannot go out as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    #[error("the text lacks the opt-out notice {notice:?} and notice_mode is `require`")]
    Required { notice: String },
    #[error(
        "the text lacks the opt-out notice {notice:?}, and appending it would take {with} SMS parts instead of {without}"
    )]
    DoesNotFit {
        notice: String,
        without: usize,
        with: usize,
    },
    #[error("the text cannot be encoded: {0}")]
    Unencodable(#[from] pdu::PduError),
}

/// `text` as it must be sent: unchanged when no notice is configured or it already carries one, else with
/// the notice for `language` appended on a new line. `encoding` and `smart` are the send's, so the part
/// count is the one the message will really have.
pub fn apply(
    config: &OptOutConfig,
    text: &str,
    language: Language,
    encoding: EncodingChoice,
    smart: bool,
) -> Result<String, NoticeError> {
    let Some((notice, with_notice)) = completed(config, text, language)? else {
        return Ok(text.to_owned());
    };
    let without = pdu::segments(text, encoding, smart)?.parts;
    let with = pdu::segments(&with_notice, encoding, smart)?.parts;
    if with > without {
        return Err(NoticeError::DoesNotFit {
            notice: notice.to_owned(),
            without,
            with,
        });
    }
    Ok(with_notice)
}

/// [`apply`] for the rules' answer to a reply menu choice (a payment link, a balance): the debtor asked
/// for it, so the notice goes on even when it costs an extra part; `require` still refuses a template
/// written without it.
pub fn apply_to_answer(
    config: &OptOutConfig,
    text: &str,
    language: Language,
) -> Result<String, NoticeError> {
    Ok(completed(config, text, language)?.map_or_else(|| text.to_owned(), |(_, with)| with))
}

/// Whether `text` already carries a configured notice, in any of its languages.
pub fn carries_notice(config: &OptOutConfig, text: &str) -> bool {
    notice_language(config, text).is_some()
}

/// The language of the configured notice `text` carries (the longest, should one contain another), if it
/// carries one: a reply-menu answer takes the language of the message the debtor answered, which the
/// store does not keep otherwise.
pub fn notice_language(config: &OptOutConfig, text: &str) -> Option<Language> {
    let plain = normalize(text);
    config
        .notice
        .as_ref()?
        .all()
        .map(|(language, notice)| (language, normalize(notice)))
        .filter(|(_, notice)| plain.contains(notice.as_str()))
        .max_by_key(|(_, notice)| notice.len())
        .map(|(language, _)| language)
}

/// The notice to add and the text with it, or `None` when there is nothing to add.
fn completed<'c>(
    config: &'c OptOutConfig,
    text: &str,
    language: Language,
) -> Result<Option<(&'c str, String)>, NoticeError> {
    let Some(notices) = &config.notice else {
        return Ok(None);
    };
    if carries_notice(config, text) {
        return Ok(None);
    }
    let notice = notices.get(language);
    if config.notice_mode == NoticeMode::Require {
        return Err(NoticeError::Required {
            notice: notice.to_owned(),
        });
    }
    Ok(Some((notice, format!("{}\n{notice}", text.trim_end()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::replies::Texts;

    fn config(mode: NoticeMode) -> OptOutConfig {
        OptOutConfig {
            notice: Some(
                Texts::new(
                    "Reply STOP to stop texts to this number.".into(),
                    Some("Responda BAJA para no recibir más mensajes.".into()),
                    None,
                )
                .unwrap(),
            ),
            notice_mode: mode,
            ..OptOutConfig::default()
        }
    }

    fn apply_en(config: &OptOutConfig, text: &str) -> Result<String, NoticeError> {
        apply(config, text, Language::En, EncodingChoice::Auto, true)
    }

    #[test]
    fn no_notice_configured_leaves_text_alone() {
        assert_eq!(
            apply_en(&OptOutConfig::default(), "Your balance is due.").unwrap(),
            "Your balance is due."
        );
    }

    #[test]
    fn notice_already_present_in_any_language_passes() {
        let config = config(NoticeMode::Require);
        let text = "Balance due. reply stop to stop texts to this number";
        assert_eq!(apply_en(&config, text).unwrap(), text);
        let spanish = "Saldo pendiente. Responda BAJA para no recibir mas mensajes.";
        assert_eq!(apply_en(&config, spanish).unwrap(), spanish);
    }

    #[test]
    fn notice_is_appended_when_it_fits_the_same_parts() {
        let config = config(NoticeMode::Append);
        assert_eq!(
            apply_en(&config, "Your balance is due. ").unwrap(),
            "Your balance is due.\nReply STOP to stop texts to this number."
        );
        assert_eq!(
            apply(
                &config,
                "Su saldo vence hoy.",
                Language::Es,
                EncodingChoice::Auto,
                true
            )
            .unwrap(),
            "Su saldo vence hoy.\nResponda BAJA para no recibir más mensajes."
        );
        // 150 characters: the notice would need a second part.
        let long = "x".repeat(150);
        let error = apply_en(&config, &long).unwrap_err();
        assert_eq!(
            error,
            NoticeError::DoesNotFit {
                notice: "Reply STOP to stop texts to this number.".into(),
                without: 1,
                with: 2
            }
        );
    }

    #[test]
    fn an_answer_gets_the_notice_even_at_the_cost_of_a_part() {
        let long = "x".repeat(150);
        let answered = apply_to_answer(&config(NoticeMode::Append), &long, Language::En).unwrap();
        assert_eq!(
            answered,
            format!("{long}\nReply STOP to stop texts to this number.")
        );
        assert_eq!(
            apply_to_answer(
                &config(NoticeMode::Append),
                "Paid. Reply STOP to stop texts to this number.",
                Language::En
            )
            .unwrap(),
            "Paid. Reply STOP to stop texts to this number."
        );
        assert!(matches!(
            apply_to_answer(
                &config(NoticeMode::Require),
                "Pay at https://pay.example",
                Language::En
            ),
            Err(NoticeError::Required { .. })
        ));
        assert_eq!(
            apply_to_answer(&OptOutConfig::default(), "Pay here", Language::En).unwrap(),
            "Pay here"
        );
    }

    #[test]
    fn require_mode_refuses_instead_of_appending() {
        let error = apply_en(&config(NoticeMode::Require), "Your balance is due.").unwrap_err();
        assert!(matches!(error, NoticeError::Required { .. }));
    }
}
