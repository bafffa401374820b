//! [`SharedParts`]: what several app instances share, chosen from configuration in
//! one line.

use std::sync::Arc;

use super::limits::RateLimitConfig;
use super::pg_budget::PgBudget;
#[cfg(feature = "redis")]
use super::redis_limits::RedisRateLimits;
use crate::error::Result;
use crate::repository::{PgConfig, PgRepository};
use crate::semantic::{SemanticCache, SemanticCacheBuilder};
use crate::semantic_store::{PgSemanticStore, PgSemanticStoreConfig};

/// Where the shared parts live: `DATABASE_URL` and `REDIS_URL`.
///
/// Secrets: the URLs may carry passwords; `Debug` shows neither URL.
#[derive(Clone, Default)]
pub struct SharedConfig {
    /// PostgreSQL as the application login (not the tables' owner, not a superuser):
    /// budgets ([`PgBudget`]) and the semantic cache's entries ([`PgSemanticStore`]).
    /// `None`: both stay in this instance's memory.
    pub database_url: Option<String>,
    /// Redis (feature `redis`): rate limits ([`RedisRateLimits`]) and the query cache
    /// ([`RedisCache`](crate::cache::RedisCache)). `None`: both stay in memory.
    pub redis_url: Option<String>,
    /// The Redis key prefix, one per deployment. Default (empty): `kasama`.
    pub redis_prefix: String,
}

impl std::fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConfig")
            .field("database", &self.database_url.is_some())
            .field("redis", &self.redis_url.is_some())
            .field("redis_prefix", &self.prefix())
            .finish()
    }
}

impl SharedConfig {
    /// From the environment: `DATABASE_URL`, `REDIS_URL`, `KASAMA_REDIS_PREFIX` (an
    /// unset or empty variable is `None`).
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        Self {
            database_url: env("DATABASE_URL"),
            redis_url: env("REDIS_URL"),
            redis_prefix: env("KASAMA_REDIS_PREFIX").unwrap_or_default(),
        }
    }

    fn prefix(&self) -> &str {
        if self.redis_prefix.is_empty() {
            "kasama"
        } else {
            &self.redis_prefix
        }
    }
}

/// The parts several instances share, each present when its engine is configured:
/// give them to the pipeline with [`AiPipelineBuilder::shared`](super::AiPipelineBuilder::shared),
/// to the health monitor with `HealthMonitor::with_shared`, and build the semantic
/// cache with [`SharedParts::semantic_cache`].
///
/// ```no_run
/// # async fn run() -> kasama::Result<()> {
/// use std::sync::Arc;
/// use kasama::pipeline::{AiPipeline, RateLimitConfig, SharedConfig, SharedParts};
/// use kasama::semantic::{HashingEmbedder, SemanticCache};
///
/// let shared = SharedParts::connect(&SharedConfig::from_env(), None, RateLimitConfig::default())?;
/// let repo: Arc<dyn kasama::Repository> = match shared.repository() {
///     Some(pg) => Arc::new(pg.clone()),
///     None => Arc::new(kasama::InMemoryRepository::new()),
/// };
/// let cache = shared
///     .semantic_cache(SemanticCache::builder(Arc::new(HashingEmbedder::new())))
///     .await?;
/// let pipeline = AiPipeline::builder(repo).semantic_cache(cache).shared(&shared).build()?;
/// # drop(pipeline);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct SharedParts {
    repository: Option<PgRepository>,
    /// Budgets in PostgreSQL.
    pub budget: Option<Arc<PgBudget>>,
    /// The semantic cache's entries in PostgreSQL.
    pub semantic_store: Option<Arc<PgSemanticStore>>,
    /// Rate limits in Redis.
    #[cfg(feature = "redis")]
    pub rate_limits: Option<Arc<RedisRateLimits>>,
    /// A query cache in Redis, for [`CachedRepository`](crate::CachedRepository).
    #[cfg(feature = "redis")]
    pub query_cache: Option<Arc<crate::cache::RedisCache>>,
}

impl SharedParts {
    /// Nothing shared: every guard and cache in this instance's memory.
    pub fn none() -> Self {
        Self::default()
    }

    /// Connects what `config` names (lazily: nothing is reached before first use,
    /// except the semantic store's listener, which starts connecting in the
    /// background). `repository` is the PostgreSQL repository to share a pool with;
    /// `None` builds one from `database_url`. `limits` are the quotas the Redis rate
    /// limiter enforces (and falls back to locally).
    ///
    /// # Errors
    /// `InvalidInput` or `Config` for a URL that cannot be used; `InvalidInput` for
    /// `REDIS_URL` without the `redis` feature; `Config` when called outside a tokio
    /// runtime with anything to connect (the connections run as tasks).
    pub fn connect(
        config: &SharedConfig,
        repository: Option<PgRepository>,
        limits: RateLimitConfig,
    ) -> Result<Self> {
        let mut parts = Self::default();
        if (config.database_url.is_some() || config.redis_url.is_some())
            && tokio::runtime::Handle::try_current().is_err()
        {
            return Err(crate::error::Error::Config {
                what: "shared parts".into(),
                reason: "connect them inside a tokio runtime".into(),
            });
        }
        if let Some(url) = &config.database_url {
            let repo = match repository {
                Some(r) => r,
                None => PgRepository::connect(&PgConfig::new(url.clone()))?,
            };
            parts.budget = Some(Arc::new(PgBudget::new(repo.pool().clone())));
            parts.semantic_store = Some(PgSemanticStore::start(
                repo.clone(),
                PgSemanticStoreConfig::new(url.clone()),
            )?);
            parts.repository = Some(repo);
        }
        if let Some(url) = &config.redis_url {
            #[cfg(feature = "redis")]
            {
                parts.rate_limits = Some(Arc::new(RedisRateLimits::new(
                    url,
                    config.prefix(),
                    limits,
                )?));
                parts.query_cache = Some(Arc::new(
                    crate::cache::RedisCache::builder(url)
                        .prefix(config.prefix())
                        .build()?,
                ));
            }
            #[cfg(not(feature = "redis"))]
            {
                let _ = (url, limits);
                return Err(crate::error::Error::invalid(
                    "redis_url",
                    "set, but kasama was built without the `redis` feature",
                ));
            }
        }
        #[cfg(not(feature = "redis"))]
        let _ = limits;
        Ok(parts)
    }

    /// The PostgreSQL repository the shared parts use, if a database is configured.
    pub fn repository(&self) -> Option<&PgRepository> {
        self.repository.as_ref()
    }

    /// Builds the semantic cache: shared through PostgreSQL when a database is
    /// configured ([`SemanticCacheBuilder::build_shared`]), else in memory.
    ///
    /// # Errors
    /// The builder's.
    pub async fn semantic_cache(
        &self,
        builder: SemanticCacheBuilder,
    ) -> Result<Arc<SemanticCache>> {
        match &self.semantic_store {
            Some(store) => {
                builder
                    .build_shared(store.clone() as Arc<dyn crate::semantic::SemanticStore>)
                    .await
            }
            None => Ok(Arc::new(builder.build()?)),
        }
    }
}
