//! Input validation shared by every store (the repository implementations), so the
//! in-memory and PostgreSQL stores refuse exactly the same input.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::{Error, Result};

/// Longest accepted title or name, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest accepted free text (descriptions, notes, notification bodies), in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Largest accepted JSON document, serialised, in bytes.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// The longest duration any setting takes: 366 days. A longer one (such as
/// `Duration::MAX` for "never") would overflow the clock when added to the current
/// instant, so settings refuse it, naming the field (see [`duration`]).
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 60 * 60);

/// Refuses a duration setting past [`MAX_DURATION`], naming `field`.
pub fn duration(field: &'static str, d: std::time::Duration) -> Result<()> {
    if d > MAX_DURATION {
        return Err(Error::invalid(
            field,
            format!("{d:?}, must be at most 366 days"),
        ));
    }
    Ok(())
}

/// Most tags on a practice.
pub const MAX_TAGS: usize = 20;
/// Most milestones on a goal.
pub const MAX_MILESTONES: usize = 50;
/// Longest accepted email address (RFC 5321).
pub const MAX_EMAIL_CHARS: usize = 254;

/// A title or name: non-blank, at most [`MAX_TITLE_CHARS`].
pub fn title(field: &'static str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    text(field, s, MAX_TITLE_CHARS)
}

/// Free text of at most `max` characters, without NUL (PostgreSQL refuses it).
pub fn text(field: &'static str, s: &str, max: usize) -> Result<()> {
    let n = s.chars().count();
    if n > max {
        return Err(Error::invalid(
            field,
            format!("{n} characters, at most {max} allowed"),
        ));
    }
    if s.contains('\0') {
        return Err(Error::invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// A JSON document of at most [`MAX_JSON_BYTES`] serialised (compact, as
/// `serde_json::to_string` writes it), nested at most [`MAX_JSON_DEPTH`] arrays or
/// objects deep (as serde_json parses; PostgreSQL refuses much deeper documents with a
/// stack-depth error, and serialising one could overflow a task's stack), without NUL
/// characters in its strings or keys (PostgreSQL's `jsonb` cannot hold them). The text
/// `\u0000` — a backslash and `u0000` — is an ordinary string and accepted.
pub fn json(field: &'static str, v: &Value) -> Result<()> {
    // The walk is iterative and runs first: the size count below serialises, which
    // recurses once per level.
    match shape(v) {
        Shape::TooDeep => {
            return Err(Error::invalid(
                field,
                format!("nested more than {MAX_JSON_DEPTH} levels deep"),
            ));
        }
        Shape::Nul => return Err(Error::invalid(field, "must not contain NUL characters")),
        Shape::Fine => {}
    }
    if serialised_len_exceeds(v, MAX_JSON_BYTES) {
        return Err(Error::invalid(
            field,
            format!("more than {MAX_JSON_BYTES} bytes of JSON, at most {MAX_JSON_BYTES} allowed"),
        ));
    }
    Ok(())
}

/// The deepest nesting of arrays and objects [`json`] accepts: 128, serde_json's own
/// limit when it parses a document.
pub const MAX_JSON_DEPTH: usize = 128;

/// Whether `v`, serialised, is longer than `max` bytes. Counts what the serialiser
/// writes, without keeping it, and stops once past `max`.
fn serialised_len_exceeds(v: &Value, max: usize) -> bool {
    /// Accepts up to `left` bytes, then fails every write.
    struct Budget {
        left: usize,
    }
    impl std::io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            match self.left.checked_sub(buf.len()) {
                Some(left) => {
                    self.left = left;
                    Ok(buf.len())
                }
                None => Err(std::io::ErrorKind::WriteZero.into()),
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // Serialising a `Value` fails only when the budget runs out.
    serde_json::to_writer(&mut Budget { left: max }, v).is_err()
}

enum Shape {
    Fine,
    Nul,
    TooDeep,
}

/// Whether a string or a key anywhere in `v` holds a NUL character, or `v` nests past
/// [`MAX_JSON_DEPTH`]; without recursion, so any depth is safe to look at.
fn shape(v: &Value) -> Shape {
    let mut todo: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, depth)) = todo.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return Shape::Nul,
            Value::Array(_) | Value::Object(_) if depth >= MAX_JSON_DEPTH => {
                return Shape::TooDeep;
            }
            Value::Array(a) => todo.extend(a.iter().map(|x| (x, depth + 1))),
            Value::Object(o) => {
                for (k, x) in o {
                    if k.contains('\0') {
                        return Shape::Nul;
                    }
                    todo.push((x, depth + 1));
                }
            }
            _ => {}
        }
    }
    Shape::Fine
}

/// An integer within `lo..=hi`.
pub fn range(field: &'static str, v: i64, lo: i64, hi: i64) -> Result<()> {
    if v < lo || v > hi {
        return Err(Error::invalid(field, format!("{v} is outside {lo}..={hi}")));
    }
    Ok(())
}

/// An optional integer within `lo..=hi`.
pub fn opt_range(field: &'static str, v: Option<i64>, lo: i64, hi: i64) -> Result<()> {
    v.map_or(Ok(()), |v| range(field, v, lo, hi))
}

/// `completed` is true exactly when `completed_at` is set.
pub fn completion(completed: bool, completed_at: Option<DateTime<Utc>>) -> Result<()> {
    match (completed, completed_at) {
        (true, None) => Err(Error::invalid(
            "completed_at",
            "must be set when completed is true",
        )),
        (false, Some(_)) => Err(Error::invalid(
            "completed_at",
            "must be empty when completed is false",
        )),
        _ => Ok(()),
    }
}

/// A plausible email address: one `@`, a non-empty local part of at most 64
/// characters, a domain of dot-separated labels (letters, digits, hyphens) with at
/// least one dot, no whitespace. Deliberately stricter than RFC 5322 (no quoted
/// local parts, no IP literals) and looser than a deliverability check.
pub fn email(s: &str) -> Result<()> {
    let bad = |reason: &str| Err(Error::invalid("email", reason.to_string()));
    if s.chars().count() > MAX_EMAIL_CHARS {
        return bad("longer than 254 characters");
    }
    let Some((local, domain)) = s.split_once('@') else {
        return bad("missing @");
    };
    if domain.contains('@') {
        return bad("more than one @");
    }
    if local.is_empty() || local.len() > 64 {
        return bad("local part must be 1 to 64 characters");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return bad("misplaced dot in local part");
    }
    if !local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c))
    {
        return bad("invalid character in local part");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return bad("domain needs a dot");
    }
    for l in &labels {
        if l.is_empty() || l.len() > 63 || l.starts_with('-') || l.ends_with('-') {
            return bad("invalid domain label");
        }
        if !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return bad("invalid character in domain");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in [
            "a@b.co",
            "first.last+tag@example.org",
            "x_y@sub.domain-1.io",
        ] {
            assert!(email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "plain", "@b.co", "a@", "a@b", "a b@c.de", "a@@b.co", "a@b..co", ".a@b.co",
            "a@-b.co", "a@b_c.co",
        ] {
            assert_eq!(
                email(bad).unwrap_err().invalid_field(),
                Some("email"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sizes() {
        assert!(title("title", "  ").is_err());
        assert!(text("notes", &"x".repeat(MAX_TEXT_CHARS), MAX_TEXT_CHARS).is_ok());
        assert!(text("notes", &"x".repeat(MAX_TEXT_CHARS + 1), MAX_TEXT_CHARS).is_err());
        let big = Value::String("y".repeat(MAX_JSON_BYTES));
        assert!(json("data", &big).is_err());
        // Exactly the limit, serialised (two quotes), is accepted; one byte more is not.
        let fits = Value::String("y".repeat(MAX_JSON_BYTES - 2));
        assert!(json("data", &fits).is_ok());
        let fits = serde_json::json!([{"k": "y".repeat(MAX_JSON_BYTES - 10)}]);
        assert_eq!(serde_json::to_string(&fits).unwrap().len(), MAX_JSON_BYTES);
        assert!(json("data", &fits).is_ok());
        let over = serde_json::json!([{"kk": "y".repeat(MAX_JSON_BYTES - 10)}]);
        assert_eq!(
            serde_json::to_string(&over).unwrap().len(),
            MAX_JSON_BYTES + 1
        );
        assert_eq!(
            json("data", &over).unwrap_err().invalid_field(),
            Some("data")
        );
        assert!(range("score", 101, 0, 100).is_err());
        assert!(range("score", 0, 0, 100).is_ok());
    }

    #[test]
    fn json_nesting_is_bounded_without_recursing() {
        let nest = |levels: usize| {
            let mut v = Value::Null;
            for _ in 0..levels {
                v = Value::Array(vec![v]);
            }
            v
        };
        assert!(json("data", &nest(MAX_JSON_DEPTH)).is_ok());
        let deep = nest(MAX_JSON_DEPTH + 1);
        assert_eq!(
            json("data", &deep).unwrap_err().invalid_field(),
            Some("data")
        );
        // Far deeper than a stack could serialise, refused without overflowing it. The
        // value is leaked: dropping it would recurse once per level.
        let very = std::mem::ManuallyDrop::new(nest(100_000));
        assert!(json("data", &very).is_err());
    }

    #[test]
    fn json_sizes_count_escapes_as_serialised() {
        // A control character is written as six bytes (`\u0001`), a quote as two.
        let n = MAX_JSON_BYTES / 6 + 1;
        let controls = Value::String("\u{1}".repeat(n));
        assert_eq!(serde_json::to_string(&controls).unwrap().len(), 6 * n + 2);
        assert!(json("data", &controls).is_err());
        let quotes = Value::String("\"".repeat(MAX_JSON_BYTES / 2));
        assert!(json("data", &quotes).is_err());
        let plain = Value::String("a".repeat(MAX_JSON_BYTES / 2));
        assert!(json("data", &plain).is_ok());
    }

    #[test]
    fn json_refuses_real_nul_in_strings_and_keys_only() {
        use serde_json::json as j;
        for bad in [
            j!("a\u{0}b"),
            j!({"s": "a\u{0}b"}),
            j!({"a\u{0}b": 1}),
            j!([1, [2, {"deep": ["\u{0}"]}]]),
        ] {
            assert_eq!(
                json("data", &bad).unwrap_err().invalid_field(),
                Some("data"),
                "{bad:?}"
            );
        }
        // The text `\u0000` (a backslash, then u0000) is no NUL, as a value or a key.
        for ok in [
            j!("\\u0000"),
            j!({"s": "\\u0000", "\\u0000": ["x\\u0000y"]}),
            j!(null),
            j!(0),
            j!({}),
        ] {
            assert!(json("data", &ok).is_ok(), "{ok:?}");
        }
        assert_eq!(
            serde_json::to_string(&j!("\\u0000")).unwrap(),
            r#""\\u0000""#
        );
    }
}
