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

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::agent::{AiAgent, AiRequest, AiResponse};
use crate::domain::SubscriptionTier;
use crate::error::{Error, Result};
use crate::metrics::{CacheTier, MetricEvent, MetricsSink, NoopMetrics};
use crate::repository::Repository;
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

/// Builder for [`AiPipeline`]; every part has the documented default.
#[must_use]
pub struct AiPipelineBuilder {
    repo: Arc<dyn Repository>,
    backends: Vec<(Arc<dyn AiAgent>, Option<crate::agent::Price>)>,
    cache: Option<Arc<SemanticCache>>,
    prices: PriceTable,
    budgets: Budgets,
    limits: RateLimitConfig,
    batch: BatchConfig,
    router: RouterConfig,
    recorder: RecorderConfig,
    metrics: Arc<dyn MetricsSink>,
    cache_timeout: Duration,
    #[cfg(feature = "redis")]
    shared_limits: Option<Arc<RedisRateLimits>>,
    shared_budget: Option<Arc<PgBudget>>,
    prompts: Option<Arc<crate::agent::PromptTemplates>>,
}

impl std::fmt::Debug for AiPipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiPipelineBuilder")
            .field(
                "backends",
                &self
                    .backends
                    .iter()
                    .map(|b| b.0.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl AiPipelineBuilder {
    /// Adds a backend, priced by the price table (its model's price).
    pub fn backend(mut self, agent: Arc<dyn AiAgent>) -> Self {
        self.backends.push((agent, None));
        self
    }

    /// Adds a backend with its own price (used by the router to prefer cheaper ones).
    pub fn backend_priced(mut self, agent: Arc<dyn AiAgent>, price: Price) -> Self {
        self.backends.push((agent, Some(price)));
        self
    }

    /// The semantic cache. Default: none (every request goes to a backend).
    pub fn semantic_cache(mut self, cache: Arc<SemanticCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Longest wait for the semantic cache (embedding the question, storing an
    /// answer). A lookup that fails or takes longer is a miss (counted in
    /// [`AiPipeline::cache_errors`]), never a failed request. Default: 1 s.
    pub fn cache_timeout(mut self, t: Duration) -> Self {
        self.cache_timeout = t;
        self
    }

    /// Prices per model. Default: [`PriceTable::default`].
    pub fn prices(mut self, p: PriceTable) -> Self {
        self.prices = p;
        self
    }

    /// Spending caps. Default: [`Budgets::default`].
    pub fn budgets(mut self, b: Budgets) -> Self {
        self.budgets = b;
        self
    }

    /// Rate limits. Default: [`RateLimitConfig::default`].
    pub fn rate_limits(mut self, l: RateLimitConfig) -> Self {
        self.limits = l;
        self
    }

    /// Batching. Default: [`BatchConfig::default`] (150 ms window, batches of 10).
    pub fn batching(mut self, b: BatchConfig) -> Self {
        self.batch = b;
        self
    }

    /// Routing, retries and breakers. Default: [`RouterConfig::default`].
    pub fn routing(mut self, r: RouterConfig) -> Self {
        self.router = r;
        self
    }

    /// Write-behind recording. Default: [`RecorderConfig::default`].
    pub fn recording(mut self, r: RecorderConfig) -> Self {
        self.recorder = r;
        self
    }

    /// Where metric events go. Default: [`NoopMetrics`].
    pub fn metrics(mut self, m: Arc<dyn MetricsSink>) -> Self {
        self.metrics = m;
        self
    }

    /// The AI rate limits held in Redis and shared by every instance (feature
    /// `redis`), instead of this instance's own: see [`RedisRateLimits`]. Its quotas
    /// are the ones it was built with; [`rate_limits`](Self::rate_limits) then sets
    /// only the local limiter, which [`AiPipeline::rate_limits`] still reports.
    #[cfg(feature = "redis")]
    pub fn shared_rate_limits(mut self, limits: Arc<RedisRateLimits>) -> Self {
        self.shared_limits = Some(limits);
        self
    }

    /// The budgets held in PostgreSQL and shared by every instance, on top of this
    /// instance's [`Ledger`]: see [`PgBudget`]. The caps are the pipeline's
    /// [`budgets`](Self::budgets).
    pub fn shared_budget(mut self, budget: Arc<PgBudget>) -> Self {
        self.shared_budget = Some(budget);
        self
    }

    /// The prompt templates of the agent kinds: a request without its own
    /// `system_prompt` is sent with its kind's template from `prompts` (the cache
    /// scope covers it). Default: none given, so each backend uses the shipped
    /// templates ([`PromptTemplates::default`](crate::agent::PromptTemplates)).
    pub fn prompts(mut self, prompts: crate::agent::PromptTemplates) -> Self {
        self.prompts = Some(Arc::new(prompts));
        self
    }

    /// Takes every part `parts` holds (budgets, rate limits) in place of this
    /// instance's own; parts it does not hold stay as they are. The semantic cache is
    /// given separately ([`SharedParts::semantic_cache`] builds it).
    pub fn shared(mut self, parts: &SharedParts) -> Self {
        if let Some(b) = &parts.budget {
            self.shared_budget = Some(b.clone());
        }
        #[cfg(feature = "redis")]
        if let Some(l) = &parts.rate_limits {
            self.shared_limits = Some(l.clone());
        }
        self
    }

    /// Builds the pipeline and starts its recorder (needs a tokio runtime).
    ///
    /// # Errors
    /// `InvalidInput` for no backend, duplicate backend names, or a setting that would
    /// make no sense (a zero batch size or queue, a zero or NaN-producing duration, a
    /// duration past [`MAX_DURATION`], an error rate outside 0–1, …), naming the field.
    pub fn build(self) -> Result<AiPipeline> {
        if self.cache_timeout.is_zero() {
            return Err(Error::invalid("cache_timeout", "must be positive"));
        }
        check_duration("cache_timeout", self.cache_timeout)?;
        self.recorder.validate()?;
        if let Some(p) = &self.prompts {
            for a in crate::domain::AgentType::ALL {
                crate::domain::validate::text(
                    "prompts.system",
                    &p.get(*a).system,
                    crate::domain::validate::MAX_TEXT_CHARS,
                )?;
            }
        }
        let backends = self
            .backends
            .into_iter()
            .map(|(a, p)| {
                let price = p.unwrap_or(self.prices.default);
                (a, price)
            })
            .collect();
        let router = Arc::new(Router::new(backends, self.router, self.metrics.clone())?);
        let cache = self.cache.clone();
        let personal: Arc<dyn Fn(crate::domain::AgentType) -> bool + Send + Sync> =
            Arc::new(move |a| cache.as_ref().is_none_or(|c| c.is_personal(a)));
        let books = Arc::new(Books {
            ledger: Ledger::new(self.budgets),
            prices: self.prices,
            router: router.clone(),
            cache: self.cache.clone(),
            cache_timeout: self.cache_timeout,
            recorder: Mutex::new(None),
            metrics: self.metrics.clone(),
            cache_errors: AtomicU64::new(0),
            inflight: settle::Inflight::default(),
            shared_budget: self.shared_budget,
        });
        let batcher = Batcher::new(router.clone(), books.clone(), self.batch, personal)?;
        *books.recorder.lock().unwrap_or_else(|e| e.into_inner()) = Some(
            Recorder::start_with_metrics(self.repo, self.recorder, self.metrics.clone()),
        );
        Ok(AiPipeline {
            limits: RateLimits::new(self.limits),
            #[cfg(feature = "redis")]
            shared_limits: self.shared_limits,
            books,
            cache: self.cache,
            router,
            batcher,
            metrics: self.metrics,
            prompts: self.prompts,
        })
    }
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
    /// A builder recording interactions through `repo`.
    pub fn builder(repo: Arc<dyn Repository>) -> AiPipelineBuilder {
        AiPipelineBuilder {
            repo,
            backends: Vec::new(),
            cache: None,
            prices: PriceTable::default(),
            budgets: Budgets::default(),
            limits: RateLimitConfig::default(),
            batch: BatchConfig::default(),
            router: RouterConfig::default(),
            recorder: RecorderConfig::default(),
            metrics: Arc::new(NoopMetrics),
            cache_timeout: Duration::from_secs(1),
            #[cfg(feature = "redis")]
            shared_limits: None,
            shared_budget: None,
            prompts: None,
        }
    }

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
