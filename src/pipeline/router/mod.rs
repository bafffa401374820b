//! Performance-based routing across backends: power of two choices (two backends
//! drawn at random among those serving the agent whose breaker lets a call through;
//! the cheaper of the two by a cost that multiplies peak-EWMA latency, in-flight
//! calls plus one, recent errors and price); a circuit breaker per backend; retries
//! of retryable errors, on a backend not yet tried for the request while one is left
//! (else on one already tried), with jittered exponential backoff, all within one
//! deadline per request.
//!
//! [`load`] keeps what the router knows of each backend and picks one; [`retry`] is
//! the retry loop around it; [`stream`] opens streamed answers (retried only until
//! their first event).

mod load;
mod retry;
mod stream;

pub(crate) use retry::CatchUnwind;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{BreakerConfig, BreakerState};
use crate::agent::{AiAgent, Price};
use crate::domain::AgentType;
use crate::error::{Error, Result};
use crate::metrics::MetricsSink;
use load::Backend;

/// Routing settings. Defaults on each field.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RouterConfig {
    /// Most attempts per request (the first included; for a member of a batch, the
    /// batch call is its first). Default: 3.
    pub max_attempts: u32,
    /// Everything, retries included, must finish within this. Default: 30 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub deadline: Duration,
    /// First backoff before a retry; doubles each time up to `backoff_max`. Each wait
    /// is jittered: up to twice as long, at random. Default: 100 ms.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub backoff_min: Duration,
    /// Longest backoff before jitter (a wait is at most twice this, unless a backend's
    /// `Retry-After` asks for longer). Default: 2 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub backoff_max: Duration,
    /// Decay time of the latency and error averages: a sample's weight falls by `e`
    /// each `ewma_decay`, and an idle backend's estimates decay towards zero (so it
    /// is tried again). Default: 10 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub ewma_decay: Duration,
    /// The circuit breakers' settings (in a document, a table whose missing fields
    /// take their defaults).
    pub breaker: BreakerConfig,
}

impl RouterConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// `InvalidInput` naming the field: zero attempts, a zero deadline or latency
    /// decay (the decay divides), a zero backoff or one whose minimum passes its
    /// maximum, a duration past [`MAX_DURATION`](super::MAX_DURATION), or an invalid
    /// [`BreakerConfig`].
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::invalid("routing.max_attempts", "must be at least 1"));
        }
        if self.deadline.is_zero() {
            return Err(Error::invalid("routing.deadline", "must be positive"));
        }
        if self.ewma_decay.is_zero() {
            return Err(Error::invalid("routing.ewma_decay", "must be positive"));
        }
        if self.backoff_min.is_zero() {
            return Err(Error::invalid("routing.backoff_min", "must be positive"));
        }
        if self.backoff_min > self.backoff_max {
            return Err(Error::invalid(
                "routing.backoff_max",
                format!(
                    "{:?}, must not be below backoff_min ({:?})",
                    self.backoff_max, self.backoff_min
                ),
            ));
        }
        for (field, d) in [
            ("routing.deadline", self.deadline),
            ("routing.backoff_min", self.backoff_min),
            ("routing.backoff_max", self.backoff_max),
            ("routing.ewma_decay", self.ewma_decay),
        ] {
            super::check_duration(field, d)?;
        }
        self.breaker.validate()
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            deadline: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ewma_decay: Duration::from_secs(10),
            breaker: BreakerConfig::default(),
        }
    }
}

/// A backend's state, for dashboards and tests.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendStatus {
    /// Its name.
    pub name: String,
    /// Its breaker's state.
    pub breaker: BreakerState,
    /// Times its breaker opened.
    pub trips: u64,
    /// Calls sent to it (batches count once).
    pub calls: u64,
    /// Peak-EWMA latency estimate (decayed since its last call).
    pub latency: Duration,
    /// Decayed error share, 0–1.
    pub error_rate: f64,
    /// Calls in flight.
    pub in_flight: usize,
}

/// Picks a backend per call and retries retryable failures, on another backend while
/// one is left (see the module docs).
pub struct Router {
    backends: Vec<Backend>,
    cfg: RouterConfig,
    metrics: Arc<dyn MetricsSink>,
    rng: AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("backends", &self.status())
            .finish()
    }
}

impl Router {
    /// A router over `backends` (each with its price).
    ///
    /// # Errors
    /// `InvalidInput` when there is no backend, two share a name, or `cfg` is invalid
    /// ([`RouterConfig::validate`]).
    pub fn new(
        backends: Vec<(Arc<dyn AiAgent>, Price)>,
        cfg: RouterConfig,
        metrics: Arc<dyn MetricsSink>,
    ) -> Result<Self> {
        if backends.is_empty() {
            return Err(Error::invalid("backends", "at least one is needed"));
        }
        let mut names: Vec<&str> = backends.iter().map(|b| b.0.name()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::invalid("backends", "names must be unique"));
        }
        cfg.validate()?;
        let now = Instant::now();
        Ok(Self {
            backends: backends
                .into_iter()
                .map(|(agent, price)| Backend::new(agent, price, cfg.breaker, now))
                .collect(),
            cfg,
            metrics,
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        })
    }

    /// The backend a call for `agent` would go to now (what the router's pick costs is
    /// measured in `benches/pipeline.rs`).
    pub fn choose(&self, agent: AgentType) -> Option<&str> {
        self.pick(agent, &[], &[])
            .map(|i| self.backends[i].agent.name())
    }

    /// The highest price, input and output each, among the backends serving `agent`
    /// (what a call for it may cost per token at worst, wherever it is routed).
    pub fn max_price(&self, agent: AgentType) -> Option<Price> {
        self.backends
            .iter()
            .filter(|b| b.agent.serves(agent))
            .map(|b| b.price)
            .reduce(|a, b| Price {
                input_micros_per_1k: a.input_micros_per_1k.max(b.input_micros_per_1k),
                output_micros_per_1k: a.output_micros_per_1k.max(b.output_micros_per_1k),
            })
    }

    /// The price of the backend called `name`.
    pub fn price_of(&self, name: &str) -> Option<Price> {
        self.backends
            .iter()
            .find(|b| b.agent.name() == name)
            .map(|b| b.price)
    }

    /// Every backend's state.
    pub fn status(&self) -> Vec<BackendStatus> {
        let now = Instant::now();
        self.backends
            .iter()
            .map(|b| {
                let br = b.breaker();
                let (latency, errors) = b.ewma().at(now, self.cfg.ewma_decay.as_secs_f64());
                BackendStatus {
                    name: b.agent.name().to_string(),
                    breaker: br.state(),
                    trips: br.trips,
                    calls: b.calls.load(Relaxed),
                    latency: Duration::from_secs_f64(latency),
                    error_rate: errors,
                    in_flight: b.in_flight.load(Relaxed),
                }
            })
            .collect()
    }
}
