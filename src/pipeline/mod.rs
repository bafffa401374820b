//! The AI pipeline: validate → rate limits → semantic cache → budget → batcher →
//! router → agent → cost → cache store → record, as the README's architecture draws it.
//!
//! A cache hit costs nothing, so the budget is checked after the cache: a user over
//! budget still gets answers the cache already holds, and no backend call is made
//! without a budget reservation. The one cost a lookup can have — a paid verifier
//! such as an LLM judge — is held against the budget before the lookup (a user whose
//! budget cannot hold it gets exact repeats and free verification only) and charged
//! to the user at what it cost. An audited would-be hit (error-budget mode) is judged
//! against the backend's answer once it arrives.
//!
//! # Settings from a file (feature `config`)
//!
//! [`BatchConfig`], [`BreakerConfig`], [`RouterConfig`], [`RecorderConfig`],
//! [`RateLimitConfig`] (with [`TierQuotas`]), [`Budgets`] and [`PriceTable`] derive
//! `serde::Deserialize`: a missing field takes its documented default, an unknown one
//! is refused (naming it), durations are human strings (`"150ms"`, `"30s"`, `"2h"`),
//! and a rate limit quota reads `{ "rate": 10, "per": "1m", "burst": 5 }`.
//! Deserialising checks only the shape: call the struct's `validate()` (where it has
//! one) to check the values, as [`AiPipelineBuilder::build`] does for all of them.
//!
//! ```
//! # #[cfg(feature = "config")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kasama::pipeline::RouterConfig;
//!
//! let cfg: RouterConfig = serde_json::from_str(
//!     r#"{ "deadline": "10s", "breaker": { "cool_down": "1m" } }"#,
//! )?;
//! cfg.validate()?;
//! assert_eq!(cfg.deadline, std::time::Duration::from_secs(10));
//! assert_eq!(cfg.max_attempts, RouterConfig::default().max_attempts);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "config"))]
//! # fn main() {}
//! ```

mod batch;
mod breaker;
mod budgets;
mod builder;
mod cost;
mod limits;
mod lookup;
mod pg_budget;
mod recorder;
#[cfg(feature = "redis")]
mod redis_limits;
mod router;
mod rows;
mod settle;
mod shared;
mod stream;

pub use crate::agent::Price;
pub use batch::{BatchConfig, BatchStats};
pub use breaker::{BreakerConfig, BreakerState};
pub use builder::AiPipelineBuilder;
pub use cost::{Budgets, Ledger, PriceTable, Reservation, Spend};
pub use limits::{RateLimitConfig, RateLimits, TierQuotas, TokioClock};
pub use pg_budget::{BudgetHold, PgBudget, SharedBudgetStatus, SharedSpend};
pub use recorder::{Recorder, RecorderConfig, RecorderStats};
#[cfg(feature = "redis")]
pub use redis_limits::{DEFAULT_REDIS_TIMEOUT, RedisRateLimits, SharedLimitStatus};
pub use router::{BackendStatus, Router, RouterConfig};
pub use shared::{SharedConfig, SharedParts};
pub use stream::{CHANNEL as STREAM_CHANNEL, OutcomeStream, StreamItem};

/// governor's quota type, re-exported for [`RateLimitConfig`].
pub use governor::Quota;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;
use tokio::time::Instant;

use crate::agent::{AiRequest, AiResponse};
use crate::domain::SubscriptionTier;
use crate::error::{Error, Result};
use crate::metrics::{CacheTier, MetricEvent, MetricsSink};
use crate::semantic::SemanticCache;

use batch::Batcher;

/// The longest duration any pipeline setting takes (366 days; `build()` refuses a
/// longer one, naming the field).
pub use crate::domain::validate::MAX_DURATION;
pub(crate) use crate::domain::validate::duration as check_duration;
use settle::{Books, Claim};

/// What [`AiPipeline::complete`] returns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AiOutcome {
    /// The answer (from a backend or the cache).
    pub response: AiResponse,
    /// How the cache answered.
    pub cache: CacheTier,
    /// What the call cost, in nano-dollars (0 for a cache hit).
    pub cost_nanos: u64,
    /// What a cache hit or coalescing saved, in nano-dollars.
    pub saved_nanos: u64,
    /// Whether the request was answered by joining an identical request's backend
    /// call (it then costs nothing; `saved_nanos` is what the call cost).
    pub coalesced: bool,
}

/// The AI request path, composed (see the module docs).
pub struct AiPipeline {
    limits: RateLimits,
    #[cfg(feature = "redis")]
    shared_limits: Option<Arc<RedisRateLimits>>,
    books: Arc<Books>,
    cache: Option<Arc<SemanticCache>>,
    router: Arc<Router>,
    batcher: Arc<Batcher>,
    metrics: Arc<dyn MetricsSink>,
    prompts: Option<Arc<crate::agent::PromptTemplates>>,
}

impl std::fmt::Debug for AiPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiPipeline")
            .field("router", &self.router)
            .field("batcher", &self.batcher)
            .finish_non_exhaustive()
    }
}

impl AiPipeline {
    /// Answers `req` for a user on `tier`.
    ///
    /// Once the request is handed to a backend, its books are kept by the task that
    /// owns the backend call: dropping this future (a client that disconnects, a
    /// timeout layer) stops the waiting, not the call, and the call is still charged to
    /// the user's budget and recorded. Identical requests in flight share one call,
    /// which is charged once, to the request that caused it; the others cost nothing
    /// and are counted as coalesced, with what they saved.
    ///
    /// # Errors
    /// `InvalidInput`, `RateLimited { retry_after }`, `BudgetExceeded` (before any
    /// backend call), `Overloaded` (also after [`AiPipeline::shutdown`]: nothing is
    /// answered, charged or recorded then), `CircuitOpen`, `Timeout`, `Backend`.
    pub async fn complete(&self, req: AiRequest, tier: SubscriptionTier) -> Result<AiOutcome> {
        let start = Instant::now();
        let req = self.stamp(req);
        // Counted in flight until this future ends (or is dropped): shutdown waits.
        let _inflight = self.admit(&req, tier, start).await?;

        let (embedding, audit, verified) = match self.look_up(&req, tier, start).await {
            lookup::Looked::Answered(outcome) => return Ok(outcome),
            lookup::Looked::Go {
                embedding,
                audit,
                verified,
            } => (embedding, audit, verified),
        };

        // The worst case this call can cost, held against the budgets until it is
        // settled.
        let hold = self.hold_call(&req, tier, start, verified).await?;
        let claim = Claim {
            req,
            hold: Some(hold),
            start,
            embedding,
            audit,
            verified,
        };
        let agent = claim.req.agent;
        // From here the claim is the batcher's: whatever happens to this future, the
        // call's task settles and records it.
        let (user_req, verified) = ((verified > 0).then(|| claim.req.clone()), claim.verified);
        let ticket = match self.batcher.enqueue(claim) {
            Ok(t) => t,
            Err(e) => {
                if let Some(r) = user_req {
                    self.books.verified_alone(&r, verified, start.elapsed());
                }
                self.metrics.record(&MetricEvent::Ai {
                    agent,
                    backend: None,
                    input_tokens: 0,
                    output_tokens: 0,
                    cost_nanos: 0,
                    saved_nanos: 0,
                    latency: start.elapsed(),
                    cache: CacheTier::Miss,
                    error: Some(e.kind()),
                });
                return Err(e);
            }
        };
        ticket.await.unwrap_or_else(|_| {
            Err(Error::Backend {
                what: "AI batch".into(),
                retryable: true,
                source: "the batch ended without an answer".into(),
            })
        })
    }

    /// `req` with its kind's template as its system prompt when it has none and the
    /// pipeline was given [`prompts`](AiPipelineBuilder::prompts).
    pub(crate) fn stamp(&self, mut req: AiRequest) -> AiRequest {
        if req.params.system_prompt.is_none()
            && let Some(p) = &self.prompts
        {
            req.params.system_prompt = Some(p.get(req.agent).system.clone());
        }
        req
    }

    /// Admits one API request for `user` by the API rate limit: shared through Redis
    /// when the pipeline was given [`shared_rate_limits`](AiPipelineBuilder::shared_rate_limits)
    /// (feature `redis`), else this instance's ([`AiPipeline::rate_limits`]). The
    /// server's authentication layer calls it.
    ///
    /// # Errors
    /// [`Error::RateLimited`].
    pub async fn check_api(
        &self,
        user: crate::domain::UserId,
        tier: SubscriptionTier,
    ) -> Result<()> {
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.shared_limits {
            return shared.check_api(user, tier).await;
        }
        self.limits.check_api(user, tier)
    }

    /// The AI rate limit: shared through Redis when configured, else this instance's.
    async fn check_ai_limit(&self, req: &AiRequest, tier: SubscriptionTier) -> Result<()> {
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.shared_limits {
            return shared.check_ai(req.user_id, tier).await;
        }
        self.limits.check_ai(req.user_id, tier)
    }

    /// Refuses work once [`AiPipeline::shutdown`] began (its recorder is gone: an
    /// answer then would be charged and never recorded).
    fn check_open(&self) -> Result<()> {
        if self.books.recorder_gone() {
            return Err(batch::shut_down());
        }
        Ok(())
    }

    /// Counts a request that ended before reaching a backend.
    fn unanswered(&self, req: &AiRequest, start: Instant, e: &Error) {
        self.metrics.record(&MetricEvent::Ai {
            agent: req.agent,
            backend: None,
            input_tokens: 0,
            output_tokens: 0,
            cost_nanos: 0,
            saved_nanos: 0,
            latency: start.elapsed(),
            cache: CacheTier::Miss,
            error: Some(e.kind()),
        });
    }

    /// Waits for every backend call queued or in flight to be settled (callers that
    /// went away included), then stops recording and writes every buffered
    /// interaction; call it on graceful shutdown. Requests made from then on are
    /// refused with `Overloaded` (shut down) before anything is charged.
    ///
    /// # Errors
    /// `Backend` when rows could not be written (failed, dropped or rejected).
    pub async fn shutdown(&self) -> Result<RecorderStats> {
        // Requests already admitted (and lookups paying a judge) finish first.
        self.books.inflight.close_and_wait().await;
        self.batcher.close();
        self.batcher.idle().await;
        // Every settlement of the shared ledger is written (or given up).
        if let Some(shared) = &self.books.shared_budget {
            shared.flush().await;
        }
        let rec = self
            .books
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match rec {
            Some(mut r) => r.shutdown().await,
            None => Ok(RecorderStats::default()),
        }
    }

    /// The rate limiters (hosts also use them for API requests).
    pub fn rate_limits(&self) -> &RateLimits {
        &self.limits
    }

    /// The cost ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.books.ledger
    }

    /// The shared budgets, if the pipeline has them.
    pub fn shared_budget(&self) -> Option<&Arc<PgBudget>> {
        self.books.shared_budget.as_ref()
    }

    /// Semantic-cache lookups and stores that failed or timed out (each served as a
    /// miss).
    pub fn cache_errors(&self) -> u64 {
        self.books.cache_errors.load(Relaxed)
    }

    /// The batcher's counters.
    pub fn batch_stats(&self) -> BatchStats {
        self.batcher.stats()
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The backends' state.
    pub fn backends(&self) -> Vec<BackendStatus> {
        self.router.status()
    }

    /// The semantic cache, if any.
    pub fn semantic_cache(&self) -> Option<&Arc<SemanticCache>> {
        self.cache.as_ref()
    }

    /// The recorder's counters (all zero once [`AiPipeline::shutdown`] took the
    /// recorder: `shutdown` returns the final ones).
    pub fn recorder_stats(&self) -> RecorderStats {
        self.books
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Recorder::stats)
            .unwrap_or_default()
    }
}
