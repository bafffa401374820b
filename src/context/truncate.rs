//! Fitting a context into a token budget, deterministically.
//!
//! The size of a context is `estimate_tokens(canonical_json(context))`. When it is
//! over the budget — or its canonical JSON is over the [`MAX_JSON_BYTES`] a request's
//! context may have (a character can take four bytes, so a large budget over
//! non-Latin text could pass the first and not the second) — the context is cut in this order, each step choosing the least
//! cut that fits (found by bisection, so the result depends only on the context and
//! the budget):
//!
//! 1. **Lists**: every list (array), at any depth, is cut to its first `k` elements,
//!    `k` the largest from 1 up that fits. Lists in a context are newest first (answers:
//!    by question id), so the oldest entries go first.
//! 2. **Strings**: with every list at one element, every string longer than `m`
//!    characters is cut to its first `m - 1` characters and `…`, `m` the largest from
//!    [`MIN_STRING_CHARS`] up that fits.
//! 3. **Empty lists**: every list emptied, strings cut as in step 2.
//! 4. **Nothing**: when even that does not fit, only the marker is left.
//!
//! Before any of these, whatever the budget, a list or object nested deeper than a
//! request may carry (see [`MAX_JSON_DEPTH`]; the context sits a few levels above
//! the user's own values, which were each valid when stored) is replaced by `"…"`,
//! so the user's data never makes their request invalid.
//!
//! Whenever anything was cut, the top-level object carries `"truncated": true`
//! (counted in the size).

use serde_json::{Map, Value};

use crate::agent::estimate_tokens;
use crate::agent::prompt::canonical_json;
use crate::domain::validate::{MAX_JSON_BYTES, MAX_JSON_DEPTH};

/// The shortest a string is cut to (step 2).
pub const MIN_STRING_CHARS: usize = 16;

/// The marker key set on a cut context.
pub const TRUNCATED: &str = "truncated";

/// The context's size in estimated tokens.
#[cfg(test)]
pub(crate) fn tokens(v: &Value) -> u32 {
    estimate_tokens(&canonical_json(v))
}

/// Whether `v` is within `budget` tokens and within the [`MAX_JSON_BYTES`] a
/// request's context may have.
fn within(v: &Value, budget: u32) -> bool {
    let text = canonical_json(v);
    text.len() <= MAX_JSON_BYTES && estimate_tokens(&text) <= budget
}

/// `ctx` cut to fit `budget` tokens (see the module docs).
pub(crate) fn fit(mut ctx: Value, budget: u32) -> Value {
    // One level is kept free for `mark`'s wrapper of a context that is no object.
    let deep = cap_depth(&mut ctx, 0, MAX_JSON_DEPTH - 1);
    let whole = if deep { mark(ctx.clone()) } else { ctx.clone() };
    let fits = |v: &Value| within(v, budget);
    if fits(&whole) {
        return whole;
    }
    let cut = |k: usize, m: Option<usize>| {
        let mut v = ctx.clone();
        cap(&mut v, k, m);
        mark(v)
    };
    // 1. Lists.
    let longest_list = max_len(&ctx, &|v| v.as_array().map(Vec::len));
    if longest_list > 1
        && let Some(k) = largest(1, longest_list - 1, |k| fits(&cut(k, None)))
    {
        return cut(k, None);
    }
    // 2. and 3. Strings, with lists at one element, then empty.
    let longest_string = max_len(&ctx, &|v| v.as_str().map(|s| s.chars().count()));
    for k in [1, 0] {
        if fits(&cut(k, None)) {
            return cut(k, None);
        }
        if longest_string > MIN_STRING_CHARS
            && let Some(m) = largest(MIN_STRING_CHARS, longest_string - 1, |m| {
                fits(&cut(k, Some(m)))
            })
        {
            return cut(k, Some(m));
        }
    }
    // 4. Nothing.
    mark(Value::Object(Map::new()))
}

/// Replaces every list or object at nesting `depth` or deeper (the top level is 0) by
/// `"…"`; whether any was.
fn cap_depth(v: &mut Value, depth: usize, limit: usize) -> bool {
    match v {
        Value::Array(_) | Value::Object(_) if depth >= limit => {
            *v = Value::from("…");
            true
        }
        Value::Array(a) => a
            .iter_mut()
            .fold(false, |cut, x| cap_depth(x, depth + 1, limit) | cut),
        Value::Object(o) => o
            .values_mut()
            .fold(false, |cut, x| cap_depth(x, depth + 1, limit) | cut),
        _ => false,
    }
}

/// The largest `n` in `lo..=hi` with `ok(n)`, assuming `ok` holds up to some point
/// and not after; `None` when not even `ok(lo)`.
fn largest(lo: usize, hi: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
    if lo > hi || !ok(lo) {
        return None;
    }
    let (mut good, mut bad) = (lo, hi + 1);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if ok(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Some(good)
}

/// The largest `len` of any value in `v` (0 when none has one).
fn max_len(v: &Value, len: &dyn Fn(&Value) -> Option<usize>) -> usize {
    let here = len(v).unwrap_or(0);
    let below = match v {
        Value::Array(a) => a.iter().map(|x| max_len(x, len)).max().unwrap_or(0),
        Value::Object(o) => o.values().map(|x| max_len(x, len)).max().unwrap_or(0),
        _ => 0,
    };
    here.max(below)
}

/// Cuts every list to `k` elements and, with `m`, every string to `m` characters.
fn cap(v: &mut Value, k: usize, m: Option<usize>) {
    match v {
        Value::Array(a) => {
            a.truncate(k);
            for x in a {
                cap(x, k, m);
            }
        }
        Value::Object(o) => {
            for x in o.values_mut() {
                cap(x, k, m);
            }
        }
        Value::String(s) => {
            if let Some(m) = m
                && s.chars().count() > m
            {
                *s = crate::text::cut_chars(s, m);
            }
        }
        _ => {}
    }
}

/// `v` with the marker (an object; anything else is wrapped under `"data"`).
fn mark(v: Value) -> Value {
    let mut o = match v {
        Value::Object(o) => o,
        other => {
            let mut o = Map::new();
            o.insert("data".into(), other);
            o
        }
    };
    o.insert(TRUNCATED.into(), Value::Bool(true));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_context_that_fits_is_untouched() {
        let v = json!({"a": [1, 2, 3], "s": "short"});
        assert_eq!(fit(v.clone(), 100), v);
    }

    #[test]
    fn lists_are_cut_from_their_end_to_the_most_that_fit() {
        let v = json!({"xs": (0..100).map(|i| format!("item {i:03}")).collect::<Vec<_>>()});
        let out = fit(v, 60);
        assert!(tokens(&out) <= 60, "{out}");
        let xs = out["xs"].as_array().unwrap();
        assert_eq!(xs[0], "item 000");
        assert_eq!(out[TRUNCATED], true);
        // One more element would not fit.
        let mut more = out.clone();
        more["xs"]
            .as_array_mut()
            .unwrap()
            .push(json!(format!("item {:03}", xs.len())));
        assert!(tokens(&more) > 60);
    }

    #[test]
    fn long_strings_are_cut_when_lists_are_not_enough() {
        let v = json!({"note": "x".repeat(4000), "xs": [1, 2]});
        let out = fit(v.clone(), 100);
        assert!(tokens(&out) <= 100, "{out}");
        assert_eq!(out["xs"], json!([1]));
        let note = out["note"].as_str().unwrap();
        assert!(note.ends_with('…') && note.chars().count() > MIN_STRING_CHARS);
        assert_eq!(fit(v, 100), out, "deterministic");
    }

    #[test]
    fn a_budget_nothing_fits_leaves_only_the_marker() {
        let v = json!({"a": "y".repeat(100), "b": "z".repeat(100), "c": "w".repeat(100)});
        assert_eq!(fit(v, 6), json!({"truncated": true}));
    }
}
