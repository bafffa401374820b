//! The rows [`Books`](super::settle::Books) records: one clean
//! [`NewAiInteraction`] per request, whatever a backend returned — no NUL
//! character (PostgreSQL refuses them), a model name within the repository's limit,
//! an output within the interaction log's JSON bound (cut and marked past it), counts
//! in range.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use crate::agent::AiRequest;
use crate::domain::validate::MAX_JSON_BYTES;
use crate::domain::{InteractionId, NewAiInteraction};

/// Longest model name a recorded row keeps (the repository's limit).
const MODEL_CHARS: usize = 100;

/// Whether any string (or key) of `v` holds a NUL character.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// `v` without NUL characters in any string (PostgreSQL's text and jsonb refuse them;
/// a model's output may hold one). Copies only what it must.
fn clean(v: &Value) -> Value {
    if has_nul(v) {
        without_nul(v.clone())
    } else {
        v.clone()
    }
}

fn without_nul(v: Value) -> Value {
    match v {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "")),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nul).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k.replace('\0', ""), without_nul(v)))
                .collect(),
        ),
        v => v,
    }
}

/// `v` if its JSON fits the interaction log's bound ([`MAX_JSON_BYTES`]); otherwise
/// `{"text": <its text, cut at a character boundary>, "truncated": true,
/// "original_bytes": n}` that does — the text being `v["text"]` when that is a
/// string, else `v`'s JSON. A long answer is billed: its row (and cost) must be kept,
/// so its output is shortened rather than the row refused.
fn bounded(v: Value) -> Value {
    let len = serde_json::to_string(&v).map_or(usize::MAX, |s| s.len());
    if len <= MAX_JSON_BYTES {
        return v;
    }
    let text = match v {
        Value::Object(mut o) => match o.remove("text") {
            Some(Value::String(t)) => t,
            Some(other) => {
                o.insert("text".into(), other);
                Value::Object(o).to_string()
            }
            None => Value::Object(o).to_string(),
        },
        other => other.to_string(),
    };
    // Room for the wrapper; escapes may lengthen the text, so shrink until it fits.
    let mut keep = MAX_JSON_BYTES - 128;
    loop {
        let mut end = keep.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let out = serde_json::json!({
            "text": &text[..end],
            "truncated": true,
            "original_bytes": len,
        });
        let size = out.to_string().len();
        if size <= MAX_JSON_BYTES || end == 0 {
            return out;
        }
        // Shrink in proportion (escapes grow evenly enough), at least by one byte.
        keep = (end * (MAX_JSON_BYTES - 128) / size).min(end - 1);
    }
}

/// A clean row: an id and a timestamp fixed now (so a retried write conflicts
/// instead of duplicating), no NUL, a model name within the limit, an output within
/// the JSON bound (cut and marked `"truncated": true` past it), counts in range.
#[allow(clippy::too_many_arguments)]
pub(super) fn row(
    req: &AiRequest,
    model: &str,
    output: Value,
    input_tokens: u32,
    output_tokens: u32,
    cost: u64,
    saved: u64,
    latency: Duration,
    cache_hit: bool,
    success: bool,
) -> NewAiInteraction {
    let model: String = if model.contains('\0') || model.len() > MODEL_CHARS {
        model
            .chars()
            .filter(|c| *c != '\0')
            .take(MODEL_CHARS)
            .collect()
    } else {
        model.to_string()
    };
    let model = if model.trim().is_empty() {
        "unknown".to_string()
    } else {
        model
    };
    NewAiInteraction {
        id: Some(InteractionId::new()),
        user_id: req.user_id,
        agent_type: req.agent,
        model,
        input: clean(&req.input),
        output: bounded(if has_nul(&output) {
            without_nul(output)
        } else {
            output
        }),
        input_tokens: i32::try_from(input_tokens).unwrap_or(i32::MAX),
        output_tokens: i32::try_from(output_tokens).unwrap_or(i32::MAX),
        cost_nanos: i64::try_from(cost).unwrap_or(i64::MAX),
        saved_nanos: i64::try_from(saved).unwrap_or(i64::MAX),
        latency_ms: i32::try_from(latency.as_millis()).unwrap_or(i32::MAX),
        cache_hit,
        success,
        created_at: Some(Utc::now()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_past_the_bound_is_cut_to_fit_and_marked() {
        // Quotes and control characters take more room escaped than raw.
        for filler in ["x", "\"", "\u{1}", "é"] {
            let text = filler.repeat(MAX_JSON_BYTES);
            let out = bounded(serde_json::json!({ "text": text, "other": 1 }));
            let size = out.to_string().len();
            assert!(size <= MAX_JSON_BYTES, "{filler:?}: {size} bytes");
            assert_eq!(out["truncated"], true);
            assert!(out["text"].as_str().unwrap().len() > MAX_JSON_BYTES / 8);
            crate::domain::validate::json("output", &out).unwrap();
        }
        let array = Value::Array(vec![Value::from("y".repeat(1000)); 100]);
        let out = bounded(array);
        assert!(out.to_string().len() <= MAX_JSON_BYTES);
        assert_eq!(out["truncated"], true);
        let small = serde_json::json!({ "text": "short" });
        assert_eq!(bounded(small.clone()), small);
    }
}
