//! The AI pipeline: validate → rate limits → semantic cache → budget → batcher →
//! router → agent → cost → cache store → record, as the README's architecture draws it.
//!
//! A cache hit costs nothing, so the budget is checked after the cache: a user over
//! budget still gets answers the cache already holds, and no backend call is made
//! without a budget reservation.

mod batch;
mod breaker;
mod cost;
mod limits;
mod recorder;
mod router;

pub use batch::{BatchConfig, BatchStats, Batcher};
pub use breaker::{BreakerConfig, BreakerState};
pub use cost::{Budgets, Ledger, Price, PriceTable, Reservation, Spend};
pub use limits::{RateLimitConfig, RateLimits, TierQuotas, TokioClock};
pub use recorder::{Recorder, RecorderConfig, RecorderStats};
pub use router::{BackendStatus, Router, RouterConfig};

/// governor's quota type, re-exported for [`RateLimitConfig`].
pub use governor::Quota;

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::time::Instant;

use crate::agent::{AiAgent, AiRequest, AiResponse, estimate_tokens};
use crate::domain::{InteractionId, NewAiInteraction, SubscriptionTier};
use crate::error::Result;
use crate::metrics::{CacheTier, MetricEvent, MetricsSink, NoopMetrics};
use crate::repository::Repository;
use crate::semantic::{HitTier, Lookup, SemanticCache};

/// What [`AiPipeline::complete`] returns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AiOutcome {
    /// The answer (from a backend or the cache).
    pub response: AiResponse,
    /// How the cache answered.
    pub cache: CacheTier,
    /// What the call cost, in nano-dollars (0 for a cache hit).
    pub cost_nanos: u64,
    /// What a cache hit saved, in nano-dollars.
    pub saved_nanos: u64,
}

/// Builder for [`AiPipeline`]; every part has the documented default.
#[must_use]
pub struct AiPipelineBuilder {
    repo: Arc<dyn Repository>,
    backends: Vec<(Arc<dyn AiAgent>, Option<crate::pipeline::Price>)>,
    cache: Option<Arc<SemanticCache>>,
    prices: PriceTable,
    budgets: Budgets,
    limits: RateLimitConfig,
    batch: BatchConfig,
    router: RouterConfig,
    recorder: RecorderConfig,
    metrics: Arc<dyn MetricsSink>,
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

    /// Builds the pipeline and starts its recorder (needs a tokio runtime).
    ///
    /// # Errors
    /// `InvalidInput` for no backend, duplicate backend names or invalid settings.
    pub fn build(self) -> Result<AiPipeline> {
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
        let batcher = Batcher::new(router.clone(), self.batch, personal)?;
        Ok(AiPipeline {
            limits: RateLimits::new(self.limits),
            ledger: Ledger::new(self.budgets),
            prices: self.prices,
            cache: self.cache,
            router,
            batcher,
            recorder: Mutex::new(Some(Recorder::start(self.repo, self.recorder))),
            metrics: self.metrics,
        })
    }
}

/// The AI request path, composed (see the module docs).
pub struct AiPipeline {
    limits: RateLimits,
    ledger: Ledger,
    prices: PriceTable,
    cache: Option<Arc<SemanticCache>>,
    router: Arc<Router>,
    batcher: Arc<Batcher>,
    recorder: Mutex<Option<Recorder>>,
    metrics: Arc<dyn MetricsSink>,
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
        }
    }

    /// Answers `req` for a user on `tier`.
    ///
    /// # Errors
    /// `InvalidInput`, `RateLimited { retry_after }`, `BudgetExceeded` (before any
    /// backend call), `Overloaded`, `CircuitOpen`, `Timeout`, `Backend`.
    pub async fn complete(&self, req: AiRequest, tier: SubscriptionTier) -> Result<AiOutcome> {
        let start = Instant::now();
        let agent = req.agent;
        let result = self.run(req, tier, start).await;
        if let Err(e) = &result {
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
        }
        result
    }

    async fn run(
        &self,
        req: AiRequest,
        tier: SubscriptionTier,
        start: Instant,
    ) -> Result<AiOutcome> {
        req.validate()?;
        self.limits.check_ai(req.user_id, tier)?;

        let mut embedding = None;
        if let Some(cache) = &self.cache {
            match cache.lookup(&req).await? {
                Lookup::Hit {
                    answer, tier: hit, ..
                } => {
                    let saved = self.prices.price(&answer.model).cost_nanos(answer.usage);
                    let response = AiResponse {
                        output: answer.output,
                        usage: answer.usage,
                        usage_estimated: false,
                        model: answer.model,
                        backend: "semantic-cache".into(),
                        latency: start.elapsed(),
                    };
                    let tier = match hit {
                        HitTier::Exact => CacheTier::Exact,
                        HitTier::Semantic => CacheTier::Semantic,
                    };
                    self.ledger.record_hit(req.user_id, req.agent, saved);
                    return Ok(self.finish(&req, response, tier, 0, saved));
                }
                Lookup::Miss { embedding: e, .. } => embedding = e,
            }
        }

        // The worst case this call can cost, held against the budgets until it ends.
        let price = self.prices.price(&req.params.model);
        // Input: the question plus up to 200 tokens of system prompt and framing.
        let worst = u64::from(estimate_tokens(&req.prompt_text()) + 200)
            * price.input_micros_per_1k
            + u64::from(req.params.max_tokens) * price.output_micros_per_1k;
        let reservation = self.ledger.reserve(req.user_id, tier, worst)?;

        let response = self.batcher.submit(req.clone()).await?;
        let price = self
            .prices
            .models
            .get(&response.model)
            .copied()
            .or_else(|| self.router.price_of(&response.backend))
            .unwrap_or(self.prices.default);
        let cost = price.cost_nanos(response.usage);
        self.ledger.settle(reservation, req.agent, cost);
        if let Some(cache) = &self.cache
            && let Err(e) = cache.store(&req, &response, embedding).await
        {
            tracing::warn!(error = %e, "semantic cache: answer not stored");
        }
        let tier = if self.cache.is_some() {
            CacheTier::Miss
        } else {
            CacheTier::Off
        };
        Ok(self.finish(&req, response, tier, cost, 0))
    }

    fn finish(
        &self,
        req: &AiRequest,
        response: AiResponse,
        cache: CacheTier,
        cost: u64,
        saved: u64,
    ) -> AiOutcome {
        let hit = matches!(cache, CacheTier::Exact | CacheTier::Semantic);
        let latency_ms = i32::try_from(response.latency.as_millis()).unwrap_or(i32::MAX);
        if let Some(r) = self
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            r.record(NewAiInteraction {
                id: Some(InteractionId::new()),
                user_id: req.user_id,
                agent_type: req.agent,
                model: if response.model.is_empty() {
                    "unknown".into()
                } else {
                    response.model.clone()
                },
                input: req.input.clone(),
                output: response.output.clone(),
                input_tokens: i32::try_from(response.usage.input_tokens).unwrap_or(i32::MAX),
                output_tokens: i32::try_from(response.usage.output_tokens).unwrap_or(i32::MAX),
                cost_nanos: i64::try_from(cost).unwrap_or(i64::MAX),
                saved_nanos: i64::try_from(saved).unwrap_or(i64::MAX),
                latency_ms,
                cache_hit: hit,
                success: true,
                created_at: None,
            });
        }
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
        }
    }

    /// Stops recording and writes every buffered interaction; call it on graceful
    /// shutdown. Later answers are not recorded.
    ///
    /// # Errors
    /// `Backend` when rows could not be written.
    pub async fn shutdown(&self) -> Result<RecorderStats> {
        let rec = self
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
        &self.ledger
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

    /// The recorder's counters.
    pub fn recorder_stats(&self) -> RecorderStats {
        self.recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Recorder::stats)
            .unwrap_or_default()
    }
}
