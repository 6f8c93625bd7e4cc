//! Classifying inbound replies: opt-out, opt-in, help, a menu keyword, or text that merely mentions an opt-out
//! word (which a human should look at: a consumer who writes "please stop texting me" has revoked consent
//! under Reg F 1006.6(e) just as much as one who writes STOP).
//!
//! Matching is on a normalised form: lower case, accents folded (`Bája` = `baja`), punctuation turned into
//! spaces, whitespace collapsed. A class matches when the whole normalised text is one of its words.

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The language of a keyword, so confirmations can answer in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Es,
    Fr,
}

/// What an inbound text asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keyword {
    /// Revoke consent: stop all messages to this number.
    OptOut {
        language: Language,
    },
    /// Consent given again after an opt-out.
    OptIn {
        language: Language,
    },
    /// Asks who is texting and how to stop.
    Help {
        language: Language,
    },
    /// A configured menu keyword, normalised (e.g. `1`, `pay`).
    Menu(String),
    /// Contains an opt-out word without being one (e.g. "please stop texting me"): flag for review and
    /// treat as an opt-out until a human says otherwise.
    LooksLikeOptOut {
        language: Language,
        word: String,
    },
    Other,
}

/// A word added in configuration to one of the keyword classes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordEntry {
    pub word: String,
    pub language: Language,
}

/// `[keywords]`: words on top of the built-in lists, and the menu keywords the CMS answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeywordsConfig {
    pub opt_out: Vec<KeywordEntry>,
    pub opt_in: Vec<KeywordEntry>,
    pub help: Vec<KeywordEntry>,
    /// Menu keywords, e.g. `["1", "PAY"]`.
    pub menu: Vec<String>,
}

/// Opt-out words: TCPA/FCC and CTIA (English), and those in use in Spanish and French.
const OPT_OUT: &[(&str, Language)] = &[
    ("stop", Language::En),
    ("stopall", Language::En),
    ("unsubscribe", Language::En),
    ("cancel", Language::En),
    ("end", Language::En),
    ("quit", Language::En),
    ("revoke", Language::En),
    ("optout", Language::En),
    ("opt out", Language::En),
    ("baja", Language::Es),
    ("alto", Language::Es),
    ("parar", Language::Es),
    ("cancelar", Language::Es),
    ("no mas", Language::Es),
    ("para", Language::Es),
    ("basta", Language::Es),
    ("quitar", Language::Es),
    ("detener", Language::Es),
    ("desuscribir", Language::Es),
    ("arret", Language::Fr),
    ("arreter", Language::Fr),
    ("desabonner", Language::Fr),
];

/// Opt-in words: CTIA's START and UNSTOP, not its YES. A debtor's "yes" answers whatever they were last
/// asked (a payment plan, "is this John?"), and must not lift an opt-out.
const OPT_IN: &[(&str, Language)] = &[
    ("start", Language::En),
    ("unstop", Language::En),
    ("alta", Language::Es),
];

/// Revocations in plain words without an opt-out keyword ("please remove me", "don't text me again"):
/// consent may be revoked by any reasonable means (FCC 2024 TCPA order), so these are treated as a reply
/// that mentions an opt-out word: suppressed, not confirmed, flagged for a person. Normalised form.
const REVOCATIONS: &[(&str, Language)] = &[
    ("remove me", Language::En),
    ("take me off", Language::En),
    ("do not text", Language::En),
    ("don t text", Language::En),
    ("dont text", Language::En),
    ("stop texting", Language::En),
    ("stop messaging", Language::En),
    ("stop contacting", Language::En),
    ("do not contact", Language::En),
    ("don t contact", Language::En),
    ("dont contact", Language::En),
    ("no more texts", Language::En),
    ("no more messages", Language::En),
    ("leave me alone", Language::En),
    ("lose my number", Language::En),
    ("no me escriba", Language::Es),
    ("no me contacte", Language::Es),
    // A reassigned number: texting its new owner about someone's debt is a third-party disclosure
    // (Reg F 1006.6(d)) and a TCPA risk, so it stops until a person looks.
    ("wrong number", Language::En),
    ("wrong person", Language::En),
    ("numero equivocado", Language::Es),
    ("cease and desist", Language::En),
    ("do not call", Language::En),
    ("don t call", Language::En),
    ("dont call", Language::En),
    ("stop calling", Language::En),
];

/// Opt-out words that are everyday words inside a sentence ("at the end of the month", "can I cancel the
/// plan", "es para mañana"): alone they opt out, but a reply merely containing one is not held for review,
/// or every other debtor trying to arrange a payment would be suppressed until a person looks.
const ORDINARY_WORDS: &[&str] = &[
    "end", "cancel", "quit", "alto", "para", "cancelar", "quitar", "detener",
];

const HELP: &[(&str, Language)] = &[
    ("help", Language::En),
    ("info", Language::En),
    ("ayuda", Language::Es),
    ("aide", Language::Fr),
];

/// The classifier, with the built-in and configured words normalised once.
#[derive(Debug, Clone)]
pub struct Keywords {
    opt_out: Vec<(String, Language)>,
    opt_in: Vec<(String, Language)>,
    help: Vec<(String, Language)>,
    menu: Vec<String>,
}

impl Default for Keywords {
    fn default() -> Self {
        Keywords::new(&KeywordsConfig::default())
    }
}

impl Keywords {
    pub fn new(config: &KeywordsConfig) -> Self {
        let merge =
            |builtin: &[(&str, Language)], extra: &[KeywordEntry]| -> Vec<(String, Language)> {
                builtin
                    .iter()
                    .map(|&(word, language)| (normalize(word), language))
                    .chain(extra.iter().map(|e| (normalize(&e.word), e.language)))
                    .filter(|(word, _)| !word.is_empty())
                    .collect()
            };
        Keywords {
            opt_out: merge(OPT_OUT, &config.opt_out),
            opt_in: merge(OPT_IN, &config.opt_in),
            help: merge(HELP, &config.help),
            menu: config
                .menu
                .iter()
                .map(|m| normalize(m))
                .filter(|m| !m.is_empty())
                .collect(),
        }
    }

    /// Classify an inbound text. Opt-out is checked first, so a menu keyword can never shadow it.
    pub fn classify(&self, text: &str) -> Keyword {
        let text = normalize(text);
        let exact =
            |words: &[(String, Language)]| words.iter().find(|(w, _)| *w == text).map(|&(_, l)| l);
        if let Some(language) = exact(&self.opt_out) {
            return Keyword::OptOut { language };
        }
        let plain = undisguise(&text);
        if let Some(&(_, language)) = self.opt_out.iter().find(|(w, _)| squeeze(w) == plain) {
            return Keyword::OptOut { language };
        }
        if let Some(language) = exact(&self.opt_in) {
            return Keyword::OptIn { language };
        }
        if let Some(language) = exact(&self.help) {
            return Keyword::Help { language };
        }
        if let Some(menu) = self.menu.iter().find(|m| **m == text) {
            return Keyword::Menu(menu.clone());
        }
        // Whole words only: "stopwatch" does not contain the word "stop".
        let padded = format!(" {text} ");
        let mentioned = self
            .opt_out
            .iter()
            .map(|(word, language)| (word.as_str(), *language))
            .filter(|(word, _)| !ORDINARY_WORDS.contains(word))
            .chain(REVOCATIONS.iter().copied())
            .find(|(word, _)| padded.contains(&format!(" {word} ")));
        match mentioned {
            Some((word, language)) => Keyword::LooksLikeOptOut {
                language,
                word: word.to_owned(),
            },
            None => Keyword::Other,
        }
    }
}

/// The word a disguised opt-out spells, for opt-out matching only: letters typed apart (`S T O P`,
/// `S.T.O.P`), digits standing in for letters inside a word (`St0p`, `QU1T`), one word repeated
/// (`stop stop stop`), or a letter held down (`STOPP`). Consent may be revoked by any reasonable means,
/// and a consumer who dodges a keyword filter has plainly revoked it. Opt-ins are never undisguised:
/// lifting an opt-out on a guess is the costly mistake. Takes the normalised form; compare the result with
/// [`squeeze`]d words.
fn undisguise(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let joined = if words.len() > 2 && words.iter().all(|w| w.chars().count() == 1) {
        words.concat()
    } else if words.len() > 1 && words.iter().all(|w| *w == words[0]) {
        words[0].to_owned()
    } else {
        text.to_owned()
    };
    if !joined.chars().any(|c| c.is_alphabetic()) {
        // "1" or "0" alone answers a menu; it spells nothing.
        return joined;
    }
    let plain: String = joined
        .chars()
        .map(|c| match c {
            '0' => 'o',
            '1' => 'i',
            '3' => 'e',
            '4' => 'a',
            '5' => 's',
            '7' => 't',
            _ => c,
        })
        .collect();
    squeeze(&plain)
}

/// One letter of each run (`Stoooop` → `stop`, `stopall` → `stopal`): a letter held down, compared with a
/// word squeezed the same way.
fn squeeze(word: &str) -> String {
    let mut letters: Vec<char> = word.chars().collect();
    letters.dedup();
    letters.into_iter().collect()
}

/// Lower case, full-width letters and digits as ASCII (`ＳＴＯＰ`, from East Asian keyboards), accents
/// folded (typed precomposed or as a combining mark after the letter), punctuation as spaces, whitespace
/// collapsed and trimmed.
pub fn normalize(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    let ascii = |c: char| match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        _ => c,
    };
    // Every send with a configured notice is normalised to look for it: ASCII, most of them, has nothing
    // to compose.
    let letters: std::borrow::Cow<'_, str> = if text.is_ascii() {
        text.into()
    } else {
        text.nfc().filter(|&c| !is_combining_mark(c)).collect()
    };
    for c in letters.chars().map(ascii).flat_map(char::to_lowercase) {
        match fold_accent(c) {
            Some(plain) => folded.push_str(plain),
            None if c.is_alphanumeric() => folded.push(c),
            None => folded.push(' '),
        }
    }
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The unaccented form of the Latin letters used in English, Spanish, French and their neighbours.
fn fold_accent(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'ç' | 'ć' | 'č' => "c",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' => "i",
        'ñ' | 'ń' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => "u",
        'ý' | 'ÿ' => "y",
        'œ' => "oe",
        'æ' => "ae",
        'ß' => "ss",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(text: &str) -> Keyword {
        Keywords::default().classify(text)
    }

    #[test]
    fn opt_out_words_match_whatever_the_case_accents_and_punctuation() {
        for text in [
            "baja", "Bája!", "NO MÁS", " stop ", "Stop.", "STOPALL", "opt-out", "Opt Out", "Arrêt",
        ] {
            assert!(
                matches!(classify(text), Keyword::OptOut { .. }),
                "{text:?}: {:?}",
                classify(text)
            );
        }
        assert_eq!(
            classify("NO MÁS"),
            Keyword::OptOut {
                language: Language::Es
            }
        );
        assert_eq!(
            classify("Stop."),
            Keyword::OptOut {
                language: Language::En
            }
        );
        assert_eq!(
            classify("ARRÊT"),
            Keyword::OptOut {
                language: Language::Fr
            }
        );
    }

    #[test]
    fn opt_out_mentioned_in_a_sentence_is_flagged() {
        assert_eq!(
            classify("please stop texting me"),
            Keyword::LooksLikeOptOut {
                language: Language::En,
                word: "stop".into()
            }
        );
        assert!(matches!(
            classify("Ya no más mensajes por favor"),
            Keyword::LooksLikeOptOut {
                language: Language::Es,
                ..
            }
        ));
    }

    #[test]
    fn revocations_in_plain_words_are_flagged_and_full_width_letters_read_as_ascii() {
        for text in [
            "Please remove me from your list",
            "Don't text me again!",
            "no more texts",
            "Leave me alone",
            "no me escriba más",
            "Wrong number",
            "you have the wrong number, I'm not Maria",
            "Cease and desist",
            "Número equivocado",
        ] {
            assert!(
                matches!(classify(text), Keyword::LooksLikeOptOut { .. }),
                "{text:?}: {:?}",
                classify(text)
            );
        }
        assert_eq!(
            classify("ＳＴＯＰ"),
            Keyword::OptOut {
                language: Language::En
            }
        );
        assert_eq!(classify("I will text you my new number"), Keyword::Other);
    }

    #[test]
    fn disguised_opt_outs_are_opt_outs_and_disguised_opt_ins_are_not() {
        for text in [
            "S T O P",
            "s.t.o.p",
            "St0p",
            "5TOP",
            "QU1T",
            "STOP STOP STOP",
            "3nd",
            "b a j a",
            "STOPP",
            "Stoooop!",
            "Désabonnnner",
            "S T O P A L L",
            "PARA",
            "Basta",
            "arrêter",
            "Désabonner",
        ] {
            assert!(
                matches!(classify(text), Keyword::OptOut { .. }),
                "{text:?}: {:?}",
                classify(text)
            );
        }
        assert_eq!(
            classify("b a j a"),
            Keyword::OptOut {
                language: Language::Es
            }
        );
        for text in ["S T A R T", "st4rt", "start start"] {
            assert!(
                !matches!(classify(text), Keyword::OptIn { .. }),
                "{text:?}: {:?}",
                classify(text)
            );
        }
        // Two letters, a number, or different words spell nothing.
        assert_eq!(classify("o k"), Keyword::Other);
        assert_eq!(classify("10"), Keyword::Other);
        assert_eq!(classify("5 0"), Keyword::Other);
        assert_eq!(classify("I paid 500 today"), Keyword::Other);
    }

    #[test]
    fn words_that_only_contain_an_opt_out_word_are_not_flagged() {
        assert_eq!(classify("stopwatch"), Keyword::Other);
        // Everyday words that are opt-out words only alone.
        for text in [
            "I can pay at the end of the month",
            "can I cancel the payment plan and pay in full?",
            "el pago es para el viernes",
            "I quit my job last week",
        ] {
            assert_eq!(classify(text), Keyword::Other, "{text}");
        }
        assert!(matches!(classify("End."), Keyword::OptOut { .. }));
        assert!(matches!(classify("Para"), Keyword::OptOut { .. }));
        assert_eq!(classify("I paid yesterday"), Keyword::Other);
    }

    #[test]
    fn opt_in_help_and_menu() {
        assert_eq!(
            classify("Start"),
            Keyword::OptIn {
                language: Language::En
            }
        );
        assert_eq!(
            classify("alta"),
            Keyword::OptIn {
                language: Language::Es
            }
        );
        assert_eq!(
            classify("HELP?"),
            Keyword::Help {
                language: Language::En
            }
        );
        assert_eq!(
            classify("Ayuda"),
            Keyword::Help {
                language: Language::Es
            }
        );
        let config = KeywordsConfig {
            menu: vec!["1".into(), "PAY".into(), "stop".into()],
            opt_out: vec![KeywordEntry {
                word: "Détente".into(),
                language: Language::Fr,
            }],
            ..KeywordsConfig::default()
        };
        let keywords = Keywords::new(&config);
        assert_eq!(keywords.classify(" pay! "), Keyword::Menu("pay".into()));
        assert_eq!(keywords.classify("1"), Keyword::Menu("1".into()));
        // A menu keyword never shadows an opt-out.
        assert_eq!(
            keywords.classify("STOP"),
            Keyword::OptOut {
                language: Language::En
            }
        );
        assert_eq!(
            keywords.classify("detente"),
            Keyword::OptOut {
                language: Language::Fr
            }
        );
    }

    #[test]
    fn normalize_collapses_and_folds() {
        assert_eq!(normalize("  ¡No   MÁS!!  "), "no mas");
        assert_eq!(normalize("Œuvre—fin"), "oeuvre fin");
        assert_eq!(normalize(""), "");
        // Accents typed as combining marks fold like precomposed ones.
        assert_eq!(normalize("Ba\u{301}ja"), "baja");
        assert_eq!(normalize("ARRE\u{302}T"), "arret");
    }
}
