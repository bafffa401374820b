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

use serde_json::Value;
use tokio::time::Instant;

use super::AiOutcome;
use super::cost::{Ledger, PriceTable, Reservation};
use super::recorder::Recorder;
use super::router::Router;
use super::rows::row;
use crate::agent::{AiRequest, AiResponse};
use crate::domain::NewAiInteraction;
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
        self.price_for(&response.model, Some(&response.backend))
            .cost_nanos(response.usage)
    }

    /// The price a call of `model` on `backend` is charged at: the model's listed
    /// price, else the backend's own, else the default.
    pub(crate) fn price_for(&self, model: &str, backend: Option<&str>) -> crate::agent::Price {
        self.prices
            .listed(model)
            .or_else(|| backend.and_then(|b| self.router.price_of(b)))
            .unwrap_or(self.prices.default)
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
                match crate::agent::structured::check_answer(&first.req, &r.output) {
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
