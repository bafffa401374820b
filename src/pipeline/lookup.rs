//! The steps [`AiPipeline::complete`] and [`AiPipeline::stream`] share before a
//! backend is asked: admission (in flight, open, valid, within the rate limit); the
//! semantic-cache lookup, a paid verifier's hold and settlement, and a hit answered
//! from the cache; and the budget holds (this instance's ledger and the shared one)
//! the lookup and the call take, with the worst case a backend call is held at.

use futures_util::FutureExt;
use tokio::time::Instant;

use super::cost::Reservation;
use super::{AiOutcome, AiPipeline, batch, settle};
use crate::agent::{AiRequest, AiResponse, Price, Usage, estimate_tokens};
use crate::domain::SubscriptionTier;
use crate::error::{Error, Result};
use crate::semantic::{AuditTicket, Lookup};

/// The estimated input tokens of `req`: every message the backend receives (the
/// system prompt with the context, the history, the question), by
/// [`estimate_tokens`]. What a streamed answer cut short is billed for its input.
pub(super) fn input_tokens(req: &AiRequest) -> u32 {
    req.messages()
        .iter()
        .fold(0u32, |n, m| n.saturating_add(estimate_tokens(&m.content)))
}

/// What the lookup decided.
pub(super) enum Looked {
    /// Answered from the cache.
    Answered(AiOutcome),
    /// On to the backend, with what the lookup left for it.
    Go {
        embedding: Option<Vec<f32>>,
        audit: Option<AuditTicket>,
        /// What verifying the lookup cost (already in the ledger).
        verified: u64,
    },
}

impl AiPipeline {
    /// Looks `req` up in the semantic cache, if there is one (see the module docs).
    pub(super) async fn look_up(
        &self,
        req: &AiRequest,
        tier: SubscriptionTier,
        start: Instant,
    ) -> Looked {
        let (mut embedding, mut audit, mut verified) = (None, None, 0u64);
        if let Some(cache) = &self.cache {
            // A paid verifier (an LLM judge) is asked only within the user's budget:
            // its worst case is held first, and settled at what it cost.
            let worst = cache.max_verification_cost();
            let verify_hold = if worst > 0 {
                self.reserve(req, tier, worst, true).await.ok()
            } else {
                None
            };
            let looked = match verify_hold {
                None => {
                    let lookup = cache.lookup_within(req, false);
                    tokio::time::timeout(self.books.cache_timeout, lookup).await
                }
                // A lookup that may pay a judge runs in its own task, which settles
                // the hold at what the judge calls cost: a timeout or a caller that
                // goes away stops the waiting, not the books. The spend goes into
                // this request's row when the answer reaches it in time, else into a
                // row of its own.
                Some(hold) => {
                    let (cache, r, books) = (cache.clone(), req.clone(), self.books.clone());
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let guard = settle::enter(&self.books, true);
                    tokio::spawn(async move {
                        let _guard = guard;
                        let began = Instant::now();
                        // What the judge calls cost, counted as they return, so a
                        // verifier that panics after a paid call still pays for it.
                        let metered = std::sync::atomic::AtomicU64::new(0);
                        let looked =
                            std::panic::AssertUnwindSafe(cache.lookup_metered(&r, true, &metered))
                                .catch_unwind()
                                .await
                                .unwrap_or_else(|_| {
                                    Err(Error::Backend {
                                        what: "semantic cache".into(),
                                        retryable: true,
                                        source: "a verifier panicked".into(),
                                    })
                                });
                        let spent = metered.load(std::sync::atomic::Ordering::Relaxed);
                        books.ledger.settle_verification(hold, r.agent, spent);
                        if tx.send((looked, spent)).is_err() {
                            books.verified_alone(&r, spent, began.elapsed());
                        }
                    });
                    match tokio::time::timeout(self.books.cache_timeout, rx).await {
                        Ok(Ok((looked, spent))) => {
                            verified = spent;
                            Ok(looked)
                        }
                        // The task panicked (a verifier did): its hold was released.
                        Ok(Err(_)) => Ok(Err(Error::Backend {
                            what: "semantic cache".into(),
                            retryable: true,
                            source: "the lookup task failed".into(),
                        })),
                        Err(elapsed) => Err(elapsed),
                    }
                }
            };
            match looked {
                Ok(Ok(Lookup::Hit { answer, tier, .. })) => {
                    // What the call cost, priced as it was charged.
                    let saved = self
                        .books
                        .price_for(&answer.model, answer.backend.as_deref())
                        .cost_nanos(answer.usage);
                    let response = AiResponse {
                        output: answer.output,
                        usage: answer.usage,
                        usage_estimated: false,
                        model: answer.model,
                        backend: "semantic-cache".into(),
                        latency: start.elapsed(),
                    };
                    self.books.ledger.record_hit(req.user_id, req.agent, saved);
                    return Looked::Answered(
                        self.books
                            .answered(req, response, tier, verified, saved, false),
                    );
                }
                Ok(Ok(Lookup::Miss {
                    embedding: e,
                    audit: a,
                    ..
                })) => (embedding, audit) = (e, a),
                // A cache that fails or is slow is a miss, not a failed request.
                Ok(Err(e)) => {
                    self.books.cache_error();
                    tracing::warn!(error = %e, "semantic cache lookup failed; treated as a miss");
                }
                Err(_) => {
                    self.books.cache_error();
                    tracing::warn!("semantic cache lookup timed out; treated as a miss");
                }
            }
        }

        Looked::Go {
            embedding,
            audit,
            verified,
        }
    }
}

impl AiPipeline {
    /// Admits `req` (already [`stamp`](Self::stamp)ed): counted in flight (the guard
    /// counts it out when dropped), then checked — not shut down, valid, within the
    /// AI rate limit. A refusal is counted.
    ///
    /// # Errors
    /// `Overloaded` (shut down), `InvalidInput`, `RateLimited`.
    pub(crate) async fn admit(
        &self,
        req: &AiRequest,
        tier: SubscriptionTier,
        start: Instant,
    ) -> Result<settle::InflightGuard> {
        let Some(inflight) = settle::enter(&self.books, false) else {
            let e = batch::shut_down();
            self.unanswered(req, start, &e);
            return Err(e);
        };
        let checked = match self.check_open().and_then(|()| req.validate()) {
            Ok(()) => self.check_ai_limit(req, tier).await,
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            self.unanswered(req, start, &e);
            return Err(e);
        }
        Ok(inflight)
    }

    /// The worst case a backend call for `req` can cost: priced at the dearest of the
    /// requested model's price and every backend that may serve it (the call is
    /// charged at the price of the backend it lands on), so concurrent calls pass a
    /// budget by at most one call's cost; its input is every message the backend
    /// receives (system prompt with the context, history, question) and up to 200
    /// tokens of framing, its output `max_tokens`.
    pub(super) fn worst_case(&self, req: &AiRequest) -> u64 {
        let listed = self.books.prices.price(&req.params.model);
        let price = match self.router.max_price(req.agent) {
            Some(b) => Price {
                input_micros_per_1k: listed.input_micros_per_1k.max(b.input_micros_per_1k),
                output_micros_per_1k: listed.output_micros_per_1k.max(b.output_micros_per_1k),
            },
            None => listed,
        };
        price.cost_nanos(Usage {
            input_tokens: input_tokens(req).saturating_add(200),
            output_tokens: req.params.max_tokens,
        })
    }

    /// Holds [`worst_case`](Self::worst_case) of a backend call for `req` against the
    /// budgets until the call is settled (what [`AiPipeline::complete`] and
    /// [`AiPipeline::stream`] do before a backend is asked). A refusal is counted
    /// and, when verifying the lookup cost something (`verified`), that spend is
    /// recorded in a row of its own.
    ///
    /// # Errors
    /// `BudgetExceeded` (or the shared budget's error).
    pub(super) async fn hold_call(
        &self,
        req: &AiRequest,
        tier: SubscriptionTier,
        start: Instant,
        verified: u64,
    ) -> Result<Reservation> {
        let worst = self.worst_case(req);
        self.reserve(req, tier, worst, false)
            .await
            .inspect_err(|e| {
                self.unanswered(req, start, e);
                self.books.verified_alone(req, verified, start.elapsed());
            })
    }

    /// Holds `amount` in this instance's ledger and, when the pipeline has one, in the
    /// shared one (`whole`: see [`Ledger::reserve_within`]).
    pub(super) async fn reserve(
        &self,
        req: &AiRequest,
        tier: SubscriptionTier,
        amount: u64,
        whole: bool,
    ) -> Result<Reservation> {
        let ledger = &self.books.ledger;
        let mut hold = if whole {
            ledger.reserve_within(req.user_id, tier, amount)?
        } else {
            ledger.reserve(req.user_id, tier, amount)?
        };
        if let Some(shared) = &self.books.shared_budget {
            let h = shared
                .hold(req.user_id, tier, amount, whole, ledger.budgets())
                .await?;
            hold.attach(h);
        }
        Ok(hold)
    }
}
