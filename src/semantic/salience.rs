//! The salience check: two questions may be close in embedding space yet ask about
//! different things. Before a stored answer is served, the salient content of the
//! two questions must agree:
//!
//! - **numbers** (digits, and the number words two to twelve),
//! - **identifiers**: `backticked` text, `snake_case`, `CamelCase`, `dotted.names`,
//!   letter-digit mixes — each must also appear in the other text (ignoring case,
//!   spaces and symbols),
//! - **names**: capitalised words inside a sentence — refused when one name was
//!   swapped for another (each text has a name the other lacks),
//! - **negation** (not, no, never, without, non-, n't, absence, …): present in both
//!   or in neither,
//! - **the people involved** (partner, parents, ex, boss, kids, …): the same set.
//!
//! The check only ever rejects; it never turns a miss into a hit.

use std::collections::BTreeSet;

use crate::text::words;

/// Number words ("one" and "once" are left out: mostly a pronoun, an article or "when").
const NUMBER_WORDS: &[(&str, &str)] = &[
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("twice", "2"),
    ("double", "2"),
    ("half", "0.5"),
];

const NEGATIONS: &[&str] = &[
    "not", "no", "non", "never", "without", "nobody", "nothing", "neither", "nor", "none",
    "cannot", "absence", "absent", "lack", "lacks", "lacking",
];

/// People a coaching question can be about; plurals fold to the singular.
const PEOPLE: &[(&str, &str)] = &[
    ("partner", "partner"),
    ("partners", "partner"),
    ("spouse", "partner"),
    ("wife", "wife"),
    ("wives", "wife"),
    ("husband", "husband"),
    ("husbands", "husband"),
    ("boyfriend", "boyfriend"),
    ("girlfriend", "girlfriend"),
    ("fiance", "fiance"),
    ("fiancee", "fiance"),
    ("ex", "ex"),
    ("parent", "parent"),
    ("parents", "parent"),
    ("mother", "mother"),
    ("mom", "mother"),
    ("mum", "mother"),
    ("father", "father"),
    ("dad", "father"),
    ("in-laws", "in-law"),
    ("inlaws", "in-law"),
    ("in-law", "in-law"),
    ("child", "child"),
    ("children", "child"),
    ("kid", "child"),
    ("kids", "child"),
    ("son", "son"),
    ("sons", "son"),
    ("daughter", "daughter"),
    ("daughters", "daughter"),
    ("baby", "child"),
    ("sibling", "sibling"),
    ("siblings", "sibling"),
    ("brother", "brother"),
    ("brothers", "brother"),
    ("sister", "sister"),
    ("sisters", "sister"),
    ("friend", "friend"),
    ("friends", "friend"),
    ("boss", "boss"),
    ("manager", "boss"),
    ("colleague", "colleague"),
    ("colleagues", "colleague"),
    ("coworker", "colleague"),
    ("coworkers", "colleague"),
    ("roommate", "roommate"),
    ("roommates", "roommate"),
    ("family", "family"),
    ("therapist", "therapist"),
    ("grandparents", "grandparent"),
    ("grandparent", "grandparent"),
    ("stepchild", "stepchild"),
    ("stepkids", "stepchild"),
    ("stepson", "stepchild"),
    ("stepdaughter", "stepchild"),
];

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
