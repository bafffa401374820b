//! What [`InMemoryMetrics::snapshot`](super::InMemoryMetrics::snapshot) returns:
//! plain, serialisable summaries.

use serde::Serialize;

use crate::domain::AgentType;

/// Latency percentiles of one series, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Events.
    pub count: u64,
    /// Of which failed.
    pub errors: u64,
    /// `errors ÷ count`; 0 without events.
    pub error_rate: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// A named series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamedSummary {
    /// Its name (`"GET /goals"`, a backend, an operation).
    pub name: String,
    /// Its latencies.
    pub latency: LatencySummary,
}

/// One agent's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentSummary {
    /// The agent.
    pub agent: AgentType,
    /// Latencies (cache hits included).
    pub latency: LatencySummary,
    /// Cost in nano-dollars.
    pub cost_nanos: u64,
    /// Saved by cache hits and coalescing, in nano-dollars.
    pub saved_nanos: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
}

/// A cache's counters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheSummary {
    /// Which cache (tier).
    pub tier: String,
    /// Hits.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// Evictions.
    pub evictions: u64,
    /// `hits ÷ (hits + misses)`; 0 without lookups.
    pub hit_rate: f64,
}

/// Throughput and errors over a rolling window, with the previous window beside it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowStats {
    /// `"1m"`, `"5m"` or `"1h"`.
    pub window: &'static str,
    /// API requests per second.
    pub api_rps: f64,
    /// API error rate (status ≥ 500).
    pub api_error_rate: f64,
    /// AI requests per second.
    pub ai_rps: f64,
    /// AI error rate.
    pub ai_error_rate: f64,
    /// Database calls per second.
    pub db_rps: f64,
    /// Database error rate.
    pub db_error_rate: f64,
    /// The same figures for the window before this one.
    pub previous: Option<Box<WindowStats>>,
}

/// Everything [`InMemoryMetrics`](super::InMemoryMetrics) knows, at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// Seconds since the sink was created.
    pub uptime_secs: u64,
    /// All API requests.
    pub api: LatencySummary,
    /// Per method and route.
    pub api_routes: Vec<NamedSummary>,
    /// All AI requests.
    pub ai: LatencySummary,
    /// Per agent, with cost.
    pub ai_agents: Vec<AgentSummary>,
    /// Per backend (cache hits excluded).
    pub ai_backends: Vec<NamedSummary>,
    /// AI requests by how the semantic cache answered, and the hit rate.
    pub ai_cache: CacheSummary,
    /// All database calls.
    pub db: LatencySummary,
    /// Per repository operation.
    pub db_operations: Vec<NamedSummary>,
    /// Realtime deliveries (commit to subscriber).
    pub realtime: LatencySummary,
    /// Realtime reconnects.
    pub realtime_reconnects: u64,
    /// Other caches, per tier.
    pub caches: Vec<CacheSummary>,
    /// Rolling windows (1 min, 5 min, 1 h) with their previous windows (the trend).
    pub windows: Vec<WindowStats>,
    /// Latencies of the last five minutes only: API, AI, database, realtime.
    pub recent: RecentLatency,
    /// Circuit-breaker state changes.
    pub breaker_transitions: u64,
    /// Total AI cost in nano-dollars.
    pub ai_cost_nanos: u64,
    /// AI requests refused for the caller's own reasons (rate limit, budget, invalid
    /// input): not failures, not in latencies or error rates.
    pub ai_refused: u64,
    /// Interaction rows the recorder could not write: dropped (buffer full), failed
    /// (repository kept failing), rejected (invalid row).
    pub interactions_lost: InteractionsLost,
    /// Time to first token of streamed answers ([`MetricEvent::FirstToken`](crate::metrics::MetricEvent::FirstToken)).
    pub ai_first_token: FirstTokenSummary,
    /// Streamed answers whose client went away before they ended (billed for what
    /// was produced; not in latencies or error rates).
    pub ai_cancelled: u64,
}

/// Time to first token of streamed answers, in milliseconds: all of them, and apart
/// those a backend answered (cache misses, or no cache) and those the cache replayed
/// (a replay's first chunk comes almost at once, and would hide the backends'
/// figure among them).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FirstTokenSummary {
    /// Every streamed answer.
    pub all: LatencySummary,
    /// Answered by a backend.
    pub backend: LatencySummary,
    /// Replayed from the semantic cache.
    pub cache: LatencySummary,
}

/// Interaction rows lost by the write-behind recorder, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InteractionsLost {
    /// The buffer was full.
    pub dropped: u64,
    /// The repository kept failing.
    pub failed: u64,
    /// The repository refused the row as invalid (the rest of its batch was written).
    pub rejected: u64,
}

/// Latencies over the last five minutes (what health checks judge).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecentLatency {
    /// API.
    pub api: LatencySummary,
    /// AI.
    pub ai: LatencySummary,
    /// Database.
    pub db: LatencySummary,
    /// Realtime delivery.
    pub realtime: LatencySummary,
}
