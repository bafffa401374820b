//! Keeping the books of one backend call: charging it, recording it, counting it and
//! caching its answer — done by the task that owns the call, never by a caller's
//! future, so a caller that goes away (a client disconnects, a timeout layer fires)
//! cannot hide a cost, and N callers waiting on one call pay for it once.
//!
//! The mechanism is two types: a [`Claim`] is one caller's stake in a backend call
//! (its request, its budget reservation, when it started, the embedding its cache
//! lookup computed); [`Books::settle`] takes every claim on a call and the call's
//! result, and charges the first claim (the request that caused the call) the call's
//! cost, the others nothing (counted as coalesced, with what they saved), records one
//! interaction per claim (`success = false` on failure), emits the metrics and stores
//! the answer in the semantic cache once (when the first claim's lookup computed an
//! embedding: a failed lookup means the embedder is down, so the store is skipped).
//! Whatever drives a backend call (the batcher,
//! or a stream's driver task) holds the claims and calls `settle` when the call
//! ends, whether or not anyone is still listening. A call that failed after the
//! backend produced (and billed) part of an answer is settled as [`Ended::Failed`]
//! with what was billed: the first claim pays that, and its row holds it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::time::Instant;

use super::AiOutcome;
use super::cost::{Ledger, PriceTable, Reservation};
use super::recorder::Recorder;
use super::router::Router;
use crate::agent::{AiRequest, AiResponse};
use crate::domain::validate::MAX_JSON_BYTES;
use crate::domain::{InteractionId, NewAiInteraction};
use crate::error::{Error, Result};
use crate::metrics::{CacheTier, MetricEvent, MetricsSink};
use crate::semantic::{AuditTicket, SemanticCache};

/// One caller's stake in a backend call.
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) req: AiRequest,
    /// The budget held for this request; settled or released by [`Books::settle`].
    pub(crate) hold: Option<Reservation>,
    pub(crate) start: Instant,
    /// The question's embedding, from the cache lookup's miss.
    pub(crate) embedding: Option<Vec<f32>>,
    /// The would-be hit held back for audit (error-budget mode): judged against the
    /// backend's answer once it arrives.
    pub(crate) audit: Option<AuditTicket>,
    /// What verifying this request's cache lookup cost (already in the ledger): part
    /// of its outcome's cost and of its recorded row.
    pub(crate) verified: u64,
}

/// How a backend call ended, for [`Books::settle`].
#[derive(Debug)]
pub(crate) enum Ended {
    /// With an answer.
    Answered(AiResponse),
    /// Without one.
    Failed {
        /// What the callers get.
        error: Error,
        /// What the backend billed (an answer of the wrong shape, the part of a
        /// streamed answer produced before it failed or its client went away): the
        /// first claim pays its cost. `None`: not billed, the hold is released.
        billed: Option<AiResponse>,
        /// The client went away (a stream's): recorded and counted as
        /// [`CANCELLED`](crate::metrics::CANCELLED), not as `error`'s kind.
        cancelled: bool,
    },
}

impl From<Result<AiResponse>> for Ended {
    fn from(r: Result<AiResponse>) -> Self {
        match r {
            Ok(r) => Ended::Answered(r),
            Err(error) => Ended::Failed {
                error,
                billed: None,
                cancelled: false,
            },
        }
    }
}

/// Longest model name a recorded row keeps (the repository's limit).
const MODEL_CHARS: usize = 100;

/// The parts a settlement writes to.
pub(crate) struct Books {
    pub(crate) ledger: Ledger,
    pub(crate) prices: PriceTable,
    pub(crate) router: Arc<Router>,
    pub(crate) cache: Option<Arc<SemanticCache>>,
    pub(crate) cache_timeout: Duration,
    pub(crate) recorder: Mutex<Option<Recorder>>,
    pub(crate) metrics: Arc<dyn MetricsSink>,
    pub(crate) cache_errors: std::sync::atomic::AtomicU64,
    /// Requests and verification tasks in flight: shutdown waits for them.
    pub(crate) inflight: Inflight,
    /// The budgets shared through PostgreSQL, if any.
    pub(crate) shared_budget: Option<Arc<super::PgBudget>>,
}

/// What is in flight, and whether shutdown has begun.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    n: std::sync::atomic::AtomicUsize,
    closing: std::sync::atomic::AtomicBool,
    idle: tokio::sync::Notify,
}

/// One request or task in flight; dropping it (however the work ends) counts it out.
#[derive(Debug)]
pub(crate) struct InflightGuard(Arc<Books>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let f = &self.0.inflight;
        if f.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            f.idle.notify_waiters();
        }
    }
}

/// Enters `books` as one more piece of work in flight; `None` once shutdown began
/// (unless `always`: a task a request in flight started).
pub(crate) fn enter(books: &Arc<Books>, always: bool) -> Option<InflightGuard> {
    use std::sync::atomic::Ordering::SeqCst;
    books.inflight.n.fetch_add(1, SeqCst);
    let guard = InflightGuard(books.clone());
    if !always && books.inflight.closing.load(SeqCst) {
        return None;
    }
    Some(guard)
}

impl Inflight {
    /// Refuses new work, then waits until nothing is in flight.
    pub(crate) async fn close_and_wait(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.closing.store(true, SeqCst);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.n.load(SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl std::fmt::Debug for Books {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Books")
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

impl Books {
    pub(crate) fn tier(&self) -> CacheTier {
        if self.cache.is_some() {
            CacheTier::Miss
        } else {
            CacheTier::Off
        }
    }

    /// What `response` cost: the model's price, else the backend's, else the default.
    pub(crate) fn cost_of(&self, response: &AiResponse) -> u64 {
        let price = self
            .prices
            .listed(&response.model)
            .or_else(|| self.router.price_of(&response.backend))
            .unwrap_or(self.prices.default);
        price.cost_nanos(response.usage)
    }

    /// Settles one backend call for every claim on it (the first claim caused it) and
    /// hands each claim's answer to `deliver`, with the value that came with the claim
    /// (where its answer goes: a channel to a waiting caller, a stream's sink, …).
    pub(crate) async fn settle<T>(
        &self,
        mut claims: Vec<(Claim, T)>,
        ended: impl Into<Ended>,
        mut deliver: impl FnMut(T, Result<AiOutcome>),
    ) {
        let n = claims.len();
        // An answer of the wrong shape (a structured answer that is not one) was
        // billed by the provider but is no answer: the first claim pays for it, and
        // it is neither delivered nor cached.
        let ended = match (ended.into(), claims.first()) {
            (Ended::Answered(r), Some((first, _))) => {
                match crate::agent::structured::check_output(first.req.agent, &r.output) {
                    Ok(()) => Ended::Answered(r),
                    Err(error) => {
                        tracing::warn!(error = %error, backend = %r.backend, "an answer of the wrong shape");
                        Ended::Failed {
                            error,
                            billed: Some(r),
                            cancelled: false,
                        }
                    }
                }
            }
            (ended, _) => ended,
        };
        match ended {
            Ended::Answered(response) => {
                let cost = self.cost_of(&response);
                // Stored before anyone is answered, so the next identical request hits.
                // A claim without an embedding had a failed lookup: the embedder is
                // down or slow, so the store (which would need it) is skipped.
                if let Some(cache) = &self.cache
                    && let Some((first, _)) = claims.first_mut()
                    && let Some(embedding) = first.embedding.take()
                {
                    let store = cache.store(&first.req, &response, Some(embedding));
                    match tokio::time::timeout(self.cache_timeout, store).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            self.cache_error();
                            tracing::warn!(error = %e, "semantic cache: answer not stored");
                        }
                        Err(_) => {
                            self.cache_error();
                            tracing::warn!("semantic cache: storing the answer timed out");
                        }
                    }
                }
                let tier = self.tier();
                let mut judged = false;
                let mut response = Some(response);
                for (i, (mut c, to)) in claims.into_iter().enumerate() {
                    let coalesced = i > 0;
                    let (paid, saved) = if coalesced { (0, cost) } else { (cost, 0) };
                    if let Some(hold) = c.hold.take() {
                        if coalesced {
                            self.ledger.settle_coalesced(hold, c.req.agent, cost);
                        } else {
                            self.ledger.settle(hold, c.req.agent, cost);
                        }
                    }
                    // The last claim takes the answer; the others get a copy.
                    let mut response = if i + 1 == n {
                        response.take().expect("one answer")
                    } else {
                        response.as_ref().expect("one answer").clone()
                    };
                    if coalesced {
                        response.latency = c.start.elapsed();
                    }
                    // One backend answer is one observation: only the first audited
                    // claim on this call is judged; coalesced twins' tickets lapse.
                    if let (Some(ticket), Some(cache)) = (c.audit.take(), &self.cache)
                        && !judged
                    {
                        judged = true;
                        self.judge_audit(cache.clone(), ticket, &c.req, &response.output);
                    }
                    let outcome =
                        self.answered(&c.req, response, tier, paid + c.verified, saved, coalesced);
                    deliver(to, Ok(outcome));
                }
            }
            Ended::Failed {
                error,
                billed,
                cancelled,
            } => {
                let kind = if cancelled {
                    crate::metrics::CANCELLED
                } else {
                    error.kind()
                };
                let billed_cost = billed.as_ref().map_or(0, |r| self.cost_of(r));
                let mut e = Some(error);
                for (i, (c, to)) in claims.into_iter().enumerate() {
                    let err = if i + 1 == n {
                        e.take().expect("one error")
                    } else {
                        e.as_ref().expect("one error").duplicate()
                    };
                    // The reservation is released: a failed call is not billed —
                    // unless the backend billed it (an answer of the wrong shape, a
                    // stream cut short), which its first claim pays.
                    let (cost, part) = if i == 0 {
                        (billed_cost, billed.as_ref())
                    } else {
                        (0, None)
                    };
                    match c.hold {
                        Some(hold) if part.is_some() => self.ledger.settle(hold, c.req.agent, cost),
                        hold => drop(hold),
                    }
                    let spent = c.verified.saturating_add(cost);
                    self.failed_with(&c.req, c.start, kind, spent, part);
                    deliver(to, Err(err));
                }
            }
        }
    }

    /// Judges an audit in its own task (a comparer may be slow; the answer is not
    /// held for it), within the cache timeout.
    fn judge_audit(
        &self,
        cache: Arc<SemanticCache>,
        ticket: AuditTicket,
        req: &AiRequest,
        fresh: &Value,
    ) {
        let (question, fresh, limit) = (req.question(), fresh.clone(), self.cache_timeout);
        tokio::spawn(async move {
            let judged = cache.judge_audit(ticket, &question, &fresh);
            if tokio::time::timeout(limit, judged).await.is_err() {
                tracing::warn!("semantic cache: judging an audit timed out; not counted");
            }
        });
    }

    pub(crate) fn cache_error(&self) {
        self.cache_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records and counts an answered request (from a backend or the cache).
    pub(crate) fn answered(
        &self,
        req: &AiRequest,
        response: AiResponse,
        cache: CacheTier,
        cost: u64,
        saved: u64,
        coalesced: bool,
    ) -> AiOutcome {
        let hit = matches!(cache, CacheTier::Exact | CacheTier::Semantic);
        self.record(row(
            req,
            &response.model,
            response.output.clone(),
            response.usage.input_tokens,
            response.usage.output_tokens,
            cost,
            saved,
            response.latency,
            hit,
            true,
        ));
        self.metrics.record(&MetricEvent::Ai {
            agent: req.agent,
            backend: Some(response.backend.clone()),
            input_tokens: response.usage.input_tokens,
            output_tokens: response.usage.output_tokens,
            cost_nanos: cost,
            saved_nanos: saved,
            latency: response.latency,
            cache,
            error: None,
        });
        AiOutcome {
            response,
            cache,
            cost_nanos: cost,
            saved_nanos: saved,
            coalesced,
        }
    }

    /// Records a verification of `req`'s cache lookup that cost `spent` and reached
    /// no row of the request's own (it was refused afterwards, or went on without
    /// waiting for it). Nothing when it cost nothing.
    pub(crate) fn verified_alone(&self, req: &AiRequest, spent: u64, latency: Duration) {
        if spent == 0 {
            return;
        }
        self.record(row(
            req,
            "semantic-cache-verifier",
            serde_json::json!({ "verification": "a would-be cache hit, judged" }),
            0,
            0,
            spent,
            0,
            latency,
            false,
            true,
        ));
    }

    /// Records and counts a request whose backend call failed with an error of kind
    /// `kind` (`spent`: what it cost — its cache lookup's verification, and what the
    /// backend billed of `billed`, the part of an answer it produced, if any).
    fn failed_with(
        &self,
        req: &AiRequest,
        start: Instant,
        kind: &'static str,
        spent: u64,
        billed: Option<&AiResponse>,
    ) {
        let latency = start.elapsed();
        let (model, usage, backend) = match billed {
            Some(r) => (r.model.as_str(), r.usage, Some(r.backend.clone())),
            None => (req.params.model.as_str(), Default::default(), None),
        };
        let mut output = serde_json::json!({ "error": kind });
        if let Some(r) = billed {
            // What the user was billed for: the text produced (cut to the log's
            // bound if need be).
            output["text"] = Value::String(crate::agent::output_text(&r.output));
        }
        self.record(row(
            req,
            model,
            output,
            usage.input_tokens,
            usage.output_tokens,
            spent,
            0,
            latency,
            false,
            false,
        ));
        self.metrics.record(&MetricEvent::Ai {
            agent: req.agent,
            backend,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_nanos: spent,
            saved_nanos: 0,
            latency,
            cache: self.tier(),
            error: Some(kind),
        });
    }

    /// Whether the recorder was taken away by shutdown.
    pub(crate) fn recorder_gone(&self) -> bool {
        self.recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    fn record(&self, row: NewAiInteraction) {
        if let Some(r) = self
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            r.record(row);
        } else {
            // Only a cache hit racing shutdown gets here (backend calls are refused
            // once the batcher is closed): its row is lost, and counted as such.
            self.metrics.record(&MetricEvent::InteractionsLost {
                rows: 1,
                reason: "dropped",
            });
        }
    }
}

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
fn row(
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
