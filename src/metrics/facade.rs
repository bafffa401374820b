//! `MetricsFacadeSink`: forwards events to the `metrics` crate facade.

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

use super::{CacheOutcome, CacheTier, MetricEvent, MetricsSink};

/// Forwards every [`MetricEvent`] to the `metrics` facade, so whatever recorder the
/// host installs (e.g. `metrics-exporter-prometheus`) exports kasama's figures.
///
/// Names are stable and prefixed `kasama_`; durations are histograms in seconds;
/// money is in nano-dollars; labels are low-cardinality (agent, backend, cache tier,
/// outcome, method, route template, status class, operation) — never a user.
///
/// | name | kind | labels |
/// |---|---|---|
/// | `kasama_api_requests_total` | counter | method, endpoint, status (`2xx`…) |
/// | `kasama_api_request_duration_seconds` | histogram | method, endpoint |
/// | `kasama_ai_requests_total` | counter | agent, cache, outcome |
/// | `kasama_ai_request_duration_seconds` | histogram | agent, cache |
/// | `kasama_ai_backend_requests_total` | counter | backend |
/// | `kasama_ai_tokens_total` | counter | agent, direction (`input`/`output`) |
/// | `kasama_ai_cost_nanodollars_total` | counter | agent |
/// | `kasama_ai_saved_nanodollars_total` | counter | agent |
/// | `kasama_ai_first_token_seconds` | histogram | agent, cache |
/// | `kasama_db_queries_total` | counter | operation, outcome |
/// | `kasama_db_query_duration_seconds` | histogram | operation |
/// | `kasama_cache_events_total` | counter | tier, outcome |
/// | `kasama_realtime_delivery_seconds` | histogram | |
/// | `kasama_realtime_reconnects_total` | counter | |
/// | `kasama_breaker_transitions_total` | counter | backend, state |
#[derive(Debug, Clone, Copy)]
pub struct MetricsFacadeSink;

impl MetricsFacadeSink {
    /// Describes the metrics (units, help texts) to the installed recorder and returns
    /// the sink. Install the recorder first.
    pub fn new() -> Self {
        describe_counter!(
            "kasama_api_requests_total",
            Unit::Count,
            "API requests answered"
        );
        describe_histogram!(
            "kasama_api_request_duration_seconds",
            Unit::Seconds,
            "API request latency"
        );
        describe_counter!(
            "kasama_ai_requests_total",
            Unit::Count,
            "AI requests, by cache tier and outcome"
        );
        describe_histogram!(
            "kasama_ai_request_duration_seconds",
            Unit::Seconds,
            "AI request latency, end to end"
        );
        describe_counter!(
            "kasama_ai_backend_requests_total",
            Unit::Count,
            "AI requests answered by each backend"
        );
        describe_counter!("kasama_ai_tokens_total", Unit::Count, "Tokens billed");
        describe_counter!(
            "kasama_ai_cost_nanodollars_total",
            Unit::Count,
            "AI cost in nano-dollars"
        );
        describe_counter!(
            "kasama_ai_saved_nanodollars_total",
            Unit::Count,
            "AI cost saved by cache hits, in nano-dollars"
        );
        describe_histogram!(
            "kasama_ai_first_token_seconds",
            Unit::Seconds,
            "Time to the first chunk of a streamed AI answer"
        );
        describe_counter!("kasama_db_queries_total", Unit::Count, "Repository calls");
        describe_histogram!(
            "kasama_db_query_duration_seconds",
            Unit::Seconds,
            "Repository call latency"
        );
        describe_counter!(
            "kasama_cache_events_total",
            Unit::Count,
            "Cache hits, misses and evictions"
        );
        describe_histogram!(
            "kasama_realtime_delivery_seconds",
            Unit::Seconds,
            "Commit-to-subscriber latency"
        );
        describe_counter!(
            "kasama_realtime_reconnects_total",
            Unit::Count,
            "Realtime listener reconnects"
        );
        describe_counter!(
            "kasama_breaker_transitions_total",
            Unit::Count,
            "Circuit-breaker state changes"
        );
        Self
    }
}

impl Default for MetricsFacadeSink {
    fn default() -> Self {
        Self::new()
    }
}

fn tier(t: CacheTier) -> &'static str {
    match t {
        CacheTier::Exact => "exact",
        CacheTier::Semantic => "semantic",
        CacheTier::Miss => "miss",
        CacheTier::Off => "off",
    }
}

fn status_class(s: u16) -> &'static str {
    match s {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl MetricsSink for MetricsFacadeSink {
    fn record(&self, event: &MetricEvent) {
        match event {
            MetricEvent::Api {
                endpoint,
                method,
                status,
                latency,
                ..
            } => {
                counter!("kasama_api_requests_total", "method" => *method, "endpoint" => endpoint.clone(), "status" => status_class(*status)).increment(1);
                histogram!("kasama_api_request_duration_seconds", "method" => *method, "endpoint" => endpoint.clone()).record(latency.as_secs_f64());
            }
            MetricEvent::Ai {
                agent,
                backend,
                input_tokens,
                output_tokens,
                cost_nanos,
                saved_nanos,
                latency,
                cache,
                error,
            } => {
                let a = agent.as_str();
                counter!("kasama_ai_requests_total", "agent" => a, "cache" => tier(*cache), "outcome" => error.unwrap_or("ok")).increment(1);
                histogram!("kasama_ai_request_duration_seconds", "agent" => a, "cache" => tier(*cache)).record(latency.as_secs_f64());
                if let Some(b) = backend {
                    counter!("kasama_ai_backend_requests_total", "backend" => b.clone())
                        .increment(1);
                }
                counter!("kasama_ai_tokens_total", "agent" => a, "direction" => "input")
                    .increment(u64::from(*input_tokens));
                counter!("kasama_ai_tokens_total", "agent" => a, "direction" => "output")
                    .increment(u64::from(*output_tokens));
                counter!("kasama_ai_cost_nanodollars_total", "agent" => a).increment(*cost_nanos);
                counter!("kasama_ai_saved_nanodollars_total", "agent" => a).increment(*saved_nanos);
            }
            MetricEvent::FirstToken {
                agent,
                latency,
                cache,
            } => {
                histogram!("kasama_ai_first_token_seconds", "agent" => agent.as_str(), "cache" => tier(*cache)).record(latency.as_secs_f64());
            }
            MetricEvent::Database {
                operation,
                latency,
                ok,
            } => {
                counter!("kasama_db_queries_total", "operation" => *operation, "outcome" => if *ok { "ok" } else { "error" }).increment(1);
                histogram!("kasama_db_query_duration_seconds", "operation" => *operation)
                    .record(latency.as_secs_f64());
            }
            MetricEvent::Cache { tier, outcome } => {
                let o = match outcome {
                    CacheOutcome::Hit => "hit",
                    CacheOutcome::Miss => "miss",
                    CacheOutcome::Eviction => "eviction",
                };
                counter!("kasama_cache_events_total", "tier" => *tier, "outcome" => o).increment(1);
            }
            MetricEvent::RealtimeDelivery { latency } => {
                histogram!("kasama_realtime_delivery_seconds").record(latency.as_secs_f64());
            }
            MetricEvent::RealtimeReconnect => {
                counter!("kasama_realtime_reconnects_total").increment(1)
            }
            MetricEvent::Breaker { backend, state } => {
                counter!("kasama_breaker_transitions_total", "backend" => backend.clone(), "state" => *state).increment(1);
            }
            MetricEvent::InteractionsLost { rows, reason } => {
                counter!("kasama_ai_interactions_lost_total", "reason" => *reason).increment(*rows);
            }
        }
    }
}
