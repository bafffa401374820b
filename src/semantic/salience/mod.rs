//! The salience check: two questions may be close in embedding space yet ask about
//! different things. Before a stored answer is served, the salient content of the
//! two questions must agree:
//!
//! - **numbers** (digits, the number words two to twelve, and twice, double, half),
//! - **identifiers**: `backticked` text, `snake_case`, `CamelCase`, `dotted.names`,
//!   letter-digit mixes — each must also appear in the other text (ignoring case,
//!   spaces and symbols),
//! - **names**: capitalised words inside a sentence — refused when one name was
//!   swapped for another (each text has a name the other lacks),
//! - **negation** (not, no, never, without, non-, n't, absence, …): present in both
//!   or in neither,
//! - **the people involved** (partner, parents, ex, boss, kids, …): the same set.
//!
//! The check only ever rejects; it never turns a miss into a hit. [`contrast`] adds
//! the coaching contrast rules (polarity, time, feeling, general vs mine, added or
//! swapped content); the word lists both use are in `lists.rs`.

use std::collections::BTreeSet;

use crate::text::words;

mod lists;

use lists::{
    FEELINGS, FUNCTION_WORDS, NEGATIONS, NUMBER_WORDS, ORDINALS, PEOPLE, POLARITY, SELF_WORDS,
    SYNONYMS, TIME,
};

/// What the check compares, extracted from one text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Salient {
    /// Numbers, normalised (`"two"` → `"2"`, `"1,000"` → `"1000"`).
    pub numbers: BTreeSet<String>,
    /// Identifiers (`backticked`, `snake_case`, `CamelCase`, `dotted.names`,
    /// letter-digit mixes), lowercased: each must appear in the other text.
    pub identifiers: BTreeSet<String>,
    /// Capitalised words inside a sentence (names), lowercased: the texts conflict
    /// when each has a name the other lacks (one name swapped for another).
    pub names: BTreeSet<String>,
    /// Whether the text negates.
    pub negated: bool,
    /// People involved, singular.
    pub people: BTreeSet<&'static str>,
}

fn is_identifier(tok: &str) -> bool {
    let has_upper_inside =
        tok.chars().skip(1).any(|c| c.is_uppercase()) && tok.chars().any(|c| c.is_lowercase());
    let has_digit = tok.chars().any(|c| c.is_ascii_digit());
    let has_alpha = tok.chars().any(|c| c.is_alphabetic());
    tok.contains('_')
        || has_upper_inside
        || (has_digit && has_alpha)
        || (tok.contains('.')
            && !tok.ends_with('.')
            && tok.chars().filter(|c| *c == '.').count() >= 1
            && has_alpha)
}

/// Extracts the salient content of `text`.
pub fn extract(text: &str) -> Salient {
    let mut s = Salient::default();
    // Backticked spans are identifiers whatever they look like.
    let mut rest = text;
    while let Some(a) = rest.find('`') {
        let Some(b) = rest[a + 1..].find('`') else {
            break;
        };
        let inner = rest[a + 1..a + 1 + b].trim();
        if !inner.is_empty() {
            s.identifiers.insert(inner.to_lowercase());
        }
        rest = &rest[a + 2 + b..];
    }
    let mut sentence_start = true;
    let text = text.replace('\u{2019}', "'");
    for raw in text.split_whitespace() {
        let tok =
            raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '_' && c != '-' && c != '\'');
        let ends_sentence = raw.ends_with(['.', '?', '!', ':']) || raw.starts_with("```");
        let list_marker = raw.ends_with(')')
            && raw
                .trim_start_matches('(')
                .trim_end_matches(')')
                .chars()
                .all(|c| c.is_ascii_digit());
        if !tok.is_empty() {
            let lower = tok.to_lowercase();
            if is_identifier(tok) {
                s.identifiers
                    .insert(lower.trim_end_matches('.').to_string());
            } else if !sentence_start
                && tok.chars().next().is_some_and(char::is_uppercase)
                && tok
                    .chars()
                    .skip(1)
                    .all(|c| c.is_lowercase() || c == '\'' || c == '-')
                && tok.len() > 1
            {
                s.names.insert(lower.trim_end_matches("'s").to_string());
            }
            // Hyphenated words count part by part: "two-step", "no-code", "non-streaming".
            for part in lower.split('-') {
                if part.is_empty() {
                    continue;
                }
                if !list_marker
                    && part
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == ',' || c == '.')
                    && part.chars().any(|c| c.is_ascii_digit())
                {
                    let digits: String = part
                        .chars()
                        .filter(|c| c.is_ascii_digit() || *c == '.')
                        .collect();
                    s.numbers.insert(digits.trim_matches('.').to_string());
                } else if let Some((_, n)) = NUMBER_WORDS.iter().find(|(w, _)| *w == part) {
                    s.numbers.insert((*n).to_string());
                }
                if NEGATIONS.contains(&part) || part.ends_with("n't") {
                    s.negated = true;
                }
            }
            let base = lower.trim_end_matches("'s").trim_end_matches('\'');
            if let Some((_, p)) = PEOPLE.iter().find(|(w, _)| *w == base) {
                s.people.insert(p);
            }
        }
        sentence_start = ends_sentence;
    }
    s
}

/// Why two texts must not share an answer, or `None` when their salient content
/// agrees.
pub fn conflict(a_text: &str, a: &Salient, b_text: &str, b: &Salient) -> Option<&'static str> {
    if a.numbers != b.numbers {
        return Some("numbers differ");
    }
    if a.negated != b.negated {
        return Some("negation differs");
    }
    if a.people != b.people {
        return Some("people differ");
    }
    let a_words: BTreeSet<String> = words(a_text).collect();
    let b_words: BTreeSet<String> = words(b_text).collect();
    let (a_flat, b_flat) = (compact(a_text), compact(b_text));
    // Identifiers: each must appear in the other text (ignoring spaces and symbols).
    let ident_in = |id: &str, flat: &str| {
        let c = compact(id);
        c.is_empty() || flat.contains(&c)
    };
    if a.identifiers.iter().any(|i| !ident_in(i, &b_flat))
        || b.identifiers.iter().any(|i| !ident_in(i, &a_flat))
    {
        return Some("identifiers differ");
    }
    // Names: a conflict only when one name was swapped for another.
    let name_in = |n: &str, ws: &BTreeSet<String>, flat: &str| {
        flat.contains(&compact(n))
            || ws.iter().any(|w| {
                w.len() >= 4 && n.len() >= 4 && (w.starts_with(n) || n.starts_with(w.as_str()))
            })
    };
    let a_missing = a.names.iter().any(|n| !name_in(n, &b_words, &b_flat));
    let b_missing = b.names.iter().any(|n| !name_in(n, &a_words, &a_flat));
    if a_missing && b_missing {
        return Some("names differ");
    }
    None
}

/// Lowercased words with `n't` spelled out as `not`, apostrophes kept inside words.
fn contrast_words(text: &str) -> Vec<String> {
    let t = text
        .to_lowercase()
        .replace('\u{2019}', "'")
        .replace("n't", " not");
    t.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '-'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn contrast_stem(w: &str) -> &str {
    for suf in ["ing", "ed", "es", "s"] {
        if w.len() > 4
            && let Some(s) = w.strip_suffix(suf)
        {
            return s;
        }
    }
    w
}

#[derive(Default)]
struct Contrast {
    negated: bool,
    polarity: BTreeSet<&'static str>,
    time: BTreeSet<&'static str>,
    ordinals: BTreeSet<&'static str>,
    feelings: BTreeSet<&'static str>,
    first_person: bool,
    own: bool,
    raw: BTreeSet<String>,
    content: BTreeSet<String>,
}

fn classify(words: &[String]) -> Contrast {
    let mut c = Contrast::default();
    let look = |table: &[(&'static str, &'static str)], w: &str| {
        table.iter().find(|(k, _)| *k == w).map(|(_, v)| *v)
    };
    for w in words {
        let w = w.as_str();
        c.negated |= NEGATIONS.contains(&w);
        if let Some(p) = look(POLARITY, w) {
            c.polarity.insert(p);
        }
        if let Some(p) = look(TIME, w.trim_end_matches("'s")) {
            c.time.insert(p);
        }
        if let Some(o) = ORDINALS.iter().find(|o| **o == w) {
            c.ordinals.insert(o);
        }
        if let Some(f) = look(FEELINGS, w) {
            c.feelings.insert(f);
        }
        c.first_person |= SELF_WORDS.contains(&w);
        c.own |= w == "own" || w == "myself";
        c.raw.insert(w.to_string());
        if !FUNCTION_WORDS.contains(&w) {
            c.content.insert(contrast_stem(w).to_string());
        }
    }
    c
}

fn synonyms(a: &str, b: &str) -> bool {
    SYNONYMS
        .iter()
        .any(|set| set.contains(&a) && set.contains(&b))
}

/// The coaching-domain contrast check, beyond [`conflict`]: two questions that a
/// sentence embedding puts close together are refused when they differ in
///
/// - **negation** or **polarity** (`not`, `never`, `less`/`more`, `only`/`both`,
///   `stop`/`start`), or an antonym by prefix (`healthy`/`unhealthy`),
/// - **time** (`before`/`after`/`during`, nights/weekends, months/years, occasions),
/// - **ordinals** (first / third),
/// - **feeling** (hurt / furious / lonely / trapped, by group),
/// - **general vs mine**: one asks in the first person singular, the other does not,
///   or one says `own`/`myself`,
/// - **added content**: one question adds content words to the other's (more
///   specific), or exactly one content word was swapped for another (not a listed
///   synonym) while at least three are shared — look-alikes differ in few words, and
///   those few carry the meaning.
///
/// Returns why they must not share an answer, or `None`. Like [`conflict`], it only
/// ever rejects.
pub fn contrast(a: &str, b: &str) -> Option<&'static str> {
    let (wa, wb) = (contrast_words(a), contrast_words(b));
    let (ca, cb) = (classify(&wa), classify(&wb));
    if ca.negated != cb.negated {
        return Some("negation differs");
    }
    if ca.polarity != cb.polarity {
        return Some("polarity differs");
    }
    for x in &ca.raw {
        for y in &cb.raw {
            for p in ["un", "in", "dis", "im", "ir", "il"] {
                if x.strip_prefix(p) == Some(y.as_str()) || y.strip_prefix(p) == Some(x.as_str()) {
                    return Some("antonyms");
                }
            }
        }
    }
    if ca.time != cb.time {
        return Some("time differs");
    }
    if ca.ordinals != cb.ordinals {
        return Some("numbers differ");
    }
    if ca.feelings != cb.feelings {
        return Some("feeling differs");
    }
    if ca.first_person != cb.first_person || ca.own != cb.own {
        return Some("general vs mine");
    }
    let only_a: Vec<&String> = ca
        .content
        .difference(&cb.content)
        .filter(|x| !cb.content.iter().any(|y| synonyms(x, y)))
        .collect();
    let only_b: Vec<&String> = cb
        .content
        .difference(&ca.content)
        .filter(|y| !ca.content.iter().any(|x| synonyms(x, y)))
        .collect();
    let shared = ca.content.intersection(&cb.content).count();
    if shared >= 2 && only_a.is_empty() != only_b.is_empty() {
        return Some("one adds content");
    }
    if shared >= 3 && only_a.len() == 1 && only_b.len() == 1 {
        return Some("a word swapped");
    }
    None
}

/// Lowercase letters and digits only.
fn compact(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// [`conflict`] on two raw texts.
pub fn texts_conflict(a: &str, b: &str) -> Option<&'static str> {
    conflict(a, &extract(a), b, &extract(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_are_told_apart() {
        let cases = [
            (
                "How do I stop arguing with my partner?",
                "How do I stop arguing with my partner's parents?",
            ),
            (
                "How can we plan 2 date nights a month?",
                "How can we plan 3 date nights a month?",
            ),
            (
                "Should I tell Sarah about the gift?",
                "Should I tell Emma about the gift?",
            ),
            (
                "Why does my partner listen to me?",
                "Why doesn't my partner listen to me?",
            ),
            (
                "The `cache_dir` parameter defaults to none.",
                "The `download_mode` parameter defaults to none.",
            ),
        ];
        for (a, b) in cases {
            assert!(texts_conflict(a, b).is_some(), "{a} / {b}");
        }
    }

    #[test]
    fn paraphrases_pass() {
        let cases = [
            (
                "How do I stop arguing with my partner?",
                "What can I do to stop fighting with my partner?",
            ),
            (
                "How can we plan two date nights a month?",
                "What's a way to schedule 2 date nights each month?",
            ),
            (
                "Transformers supports PyTorch and TensorFlow.",
                "PyTorch and TensorFlow are supported by Transformers.",
            ),
            (
                "What should I tell Sarah tonight?",
                "Tonight, what should I say to Sarah?",
            ),
        ];
        for (a, b) in cases {
            assert_eq!(texts_conflict(a, b), None, "{a} / {b}");
        }
    }
}
