//! [`AiPipelineBuilder`]: the pipeline's parts, each with its documented default.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(feature = "redis")]
use super::RedisRateLimits;
use super::batch::Batcher;
use super::settle::{self, Books};
use super::{
    AiPipeline, BatchConfig, Budgets, Ledger, PgBudget, Price, PriceTable, RateLimitConfig,
    RateLimits, Recorder, RecorderConfig, Router, RouterConfig, SharedParts, check_duration,
};
use crate::agent::AiAgent;
use crate::error::{Error, Result};
use crate::metrics::{MetricsSink, NoopMetrics};
use crate::repository::Repository;
use crate::semantic::SemanticCache;

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
    /// duration past [`MAX_DURATION`](super::MAX_DURATION), an error rate outside 0–1, …), naming the field.
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
}
