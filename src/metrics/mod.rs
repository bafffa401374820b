//! Where measurements go: the [`MetricsSink`] trait and its events. Recording is a
//! plain, synchronous, non-blocking call on the hot path.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::domain::AgentType;

/// How the semantic cache answered an AI request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum CacheTier {
    /// Same text.
    Exact,
    /// A paraphrase.
    Semantic,
    /// Not cached: a backend answered.
    Miss,
    /// No semantic cache configured.
    Off,
}

/// One measurement.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum MetricEvent {
    /// An AI request finished (answered or failed).
    Ai {
        /// The agent kind.
        agent: AgentType,
        /// The backend that answered, if one did.
        backend: Option<String>,
        /// Input tokens billed.
        input_tokens: u32,
        /// Output tokens billed.
        output_tokens: u32,
        /// Cost in nano-dollars.
        cost_nanos: u64,
        /// Saved by a cache hit, in nano-dollars.
        saved_nanos: u64,
        /// End-to-end latency.
        latency: Duration,
        /// How the cache answered.
        cache: CacheTier,
        /// `None` when answered, else the error's kind (`"rate_limited"`, …).
        error: Option<&'static str>,
    },
    /// A circuit breaker changed state.
    Breaker {
        /// The backend.
        backend: String,
        /// `"open"`, `"half_open"` or `"closed"`.
        state: &'static str,
    },
}

/// Receives [`MetricEvent`]s. `record` must be cheap and never block on I/O.
pub trait MetricsSink: Send + Sync + 'static {
    /// Records one event.
    fn record(&self, event: &MetricEvent);
}

fn _object_safe(_: &dyn MetricsSink) {}

impl<S: MetricsSink + ?Sized> MetricsSink for Arc<S> {
    fn record(&self, event: &MetricEvent) {
        (**self).record(event);
    }
}

/// Discards everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopMetrics;

impl MetricsSink for NoopMetrics {
    fn record(&self, _event: &MetricEvent) {}
}
