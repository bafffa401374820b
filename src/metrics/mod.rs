//! Where measurements go: the [`MetricsSink`] trait and its events. Recording is a
//! plain synchronous call on the hot path: it never awaits and does no I/O, but it
//! may take a short lock ([`InMemoryMetrics`] holds one mutex for a few counter and
//! histogram updates, so recorders on other threads can wait that long).
//!
//! - [`InMemoryMetrics`]: HDR histograms, rolling windows, a serialisable snapshot.
//! - `MetricsFacadeSink` (feature `metrics-facade`): forwards to the `metrics` crate,
//!   so any exporter (Prometheus, …) the host installs sees kasama's figures.
//!
//! What reads these figures sits above this module: `kasama::health::HealthMonitor`
//! (the product's targets, alerts) and `kasama::repository::MeteredRepository` (times
//! every repository call).

#[cfg(feature = "metrics-facade")]
mod facade;
mod memory;

#[cfg(feature = "metrics-facade")]
pub use facade::MetricsFacadeSink;
pub use memory::{
    AgentSummary, CacheSummary, FirstTokenSummary, InMemoryMetrics, InteractionsLost,
    LatencySummary, MAX_KEYS, MetricsSnapshot, NamedSummary, RecentLatency, WindowStats,
};

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use crate::agent::CacheTier;
use crate::domain::{AgentType, UserId};

/// Whether an error kind ([`crate::Error::kind`]) is a refusal of the caller's request
/// (its input, its rate or its budget) rather than a failure of the AI path.
pub fn is_refusal(kind: &str) -> bool {
    matches!(
        kind,
        "rate_limited" | "budget_exceeded" | "invalid_input" | "forbidden"
    )
}

/// The error kind ([`MetricEvent::Ai`]'s `error`) of a streamed answer whose client
/// went away before it ended: billed for what the backend produced and recorded, but
/// neither a refusal nor a failure of the AI path (it counts in cost and tokens, not
/// in latencies or error rates).
pub const CANCELLED: &str = "cancelled";

/// What happened in a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum CacheOutcome {
    /// Found.
    Hit,
    /// Not found.
    Miss,
    /// An entry was pushed out.
    Eviction,
}

/// One measurement. Sinks must not key series by user: `user` fields are for logs.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum MetricEvent {
    /// An API request finished.
    Api {
        /// The route template (e.g. `/goals/{id}`), never the raw path, so series stay few.
        endpoint: String,
        /// The HTTP method.
        method: &'static str,
        /// The response status.
        status: u16,
        /// How long it took.
        latency: Duration,
        /// Who asked (not a series key).
        user: Option<UserId>,
    },
    /// A database call finished.
    Database {
        /// The operation (a repository method name).
        operation: &'static str,
        /// How long it took.
        latency: Duration,
        /// Whether it succeeded (refusals of bad input count as success of the database).
        ok: bool,
    },
    /// A cache lookup or eviction.
    Cache {
        /// Which cache: `"query"` (the
        /// [`CachedRepository`](crate::cache::CachedRepository)), or a host's own.
        /// The semantic cache does not send these: its hits and misses are the
        /// `cache` field of [`MetricEvent::Ai`].
        tier: &'static str,
        /// What happened.
        outcome: CacheOutcome,
    },
    /// A change event reached a subscriber.
    RealtimeDelivery {
        /// From commit to delivery.
        latency: Duration,
    },
    /// The realtime listener reconnected.
    RealtimeReconnect,
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
        /// Saved by a cache hit or by joining an identical request's backend call
        /// (coalescing), in nano-dollars.
        saved_nanos: u64,
        /// End-to-end latency.
        latency: Duration,
        /// How the cache answered.
        cache: CacheTier,
        /// `None` when answered, else the error's kind (`"rate_limited"`, …). Refusals
        /// of the caller ([`is_refusal`]: `rate_limited`, `budget_exceeded`,
        /// `invalid_input`, `forbidden`) are not AI failures: they count neither in
        /// error rates nor in latencies; nor is [`CANCELLED`] (a streaming client that
        /// went away), whose cost counts.
        error: Option<&'static str>,
    },
    /// The first piece of a streamed answer reached the caller's stream (time to
    /// first token): from the request's start to the first chunk handed over — the
    /// first text, or the whole answer when it has none. Cache hits replayed as a
    /// stream send it too (with their tier).
    FirstToken {
        /// The agent kind.
        agent: AgentType,
        /// From the request's start to its first chunk.
        latency: Duration,
        /// How the cache answered: a hit's tier, else `Miss` (`Off` without a cache).
        cache: CacheTier,
    },
    /// Interaction rows the write-behind recorder could not write.
    InteractionsLost {
        /// How many.
        rows: u64,
        /// `"dropped"` (the buffer was full, or the recorder was already shut down),
        /// `"failed"` (the repository kept failing) or `"rejected"` (the repository
        /// refused the row as invalid).
        reason: &'static str,
    },
    /// A circuit breaker changed state.
    Breaker {
        /// The backend.
        backend: String,
        /// `"open"`, `"half_open"` or `"closed"`.
        state: &'static str,
    },
}

/// Receives [`MetricEvent`]s. `record` is called on the hot path: it must be cheap,
/// never await and never block on I/O (a short lock is fine).
pub trait MetricsSink: Send + Sync + 'static {
    /// Records one event.
    fn record(&self, event: &MetricEvent);
}

fn _object_safe(_: &dyn MetricsSink) {}

impl std::fmt::Debug for dyn MetricsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsSink")
    }
}

impl<S: MetricsSink + ?Sized> MetricsSink for Arc<S> {
    fn record(&self, event: &MetricEvent) {
        (**self).record(event);
    }
}

/// Sends every event to several sinks, in order.
#[derive(Debug, Clone, Default)]
pub struct FanOut(pub Vec<Arc<dyn MetricsSink>>);

impl MetricsSink for FanOut {
    fn record(&self, event: &MetricEvent) {
        for s in &self.0 {
            s.record(event);
        }
    }
}

/// Discards everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopMetrics;

impl MetricsSink for NoopMetrics {
    fn record(&self, _event: &MetricEvent) {}
}
