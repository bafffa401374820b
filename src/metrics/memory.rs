//! [`InMemoryMetrics`]: HDR histograms, rolling windows and a snapshot.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use super::{CacheOutcome, CacheTier, MetricEvent, MetricsSink};
use crate::domain::AgentType;

/// Most distinct keys per family (routes, backends, operations, caches); further ones
/// are counted under `"other"`, so memory stays bounded whatever hosts send.
pub const MAX_KEYS: usize = 64;
/// Seconds of per-second counters kept: the 1 h window and the hour before it.
const RING: u64 = 7200;
/// Minutes of latency histograms kept for the recent view used by health checks.
const RECENT_MINUTES: u64 = 5;

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
    /// Saved by cache hits, in nano-dollars.
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

/// Everything [`InMemoryMetrics`] knows, at one moment.
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

#[derive(Debug)]
struct Series {
    hist: Histogram<u32>,
    errors: u64,
}

impl Series {
    fn new() -> Self {
        Self {
            hist: Histogram::new(3).expect("3 significant figures is valid"),
            errors: 0,
        }
    }

    fn record(&mut self, d: Duration, ok: bool) {
        // One hour at most; `record` grows the (auto-resizing) histogram as needed.
        let us = (d.as_micros().min(3_600_000_000) as u64).max(1);
        if self.hist.record(us).is_err() {
            self.hist.saturating_record(us);
        }
        if !ok {
            self.errors += 1;
        }
    }

    fn summary(&self) -> LatencySummary {
        summarise(&self.hist, self.errors)
    }
}

fn summarise(h: &Histogram<u32>, errors: u64) -> LatencySummary {
    let n = h.len();
    if n == 0 {
        return LatencySummary::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        count: n,
        errors,
        error_rate: errors as f64 / n as f64,
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// Per-minute histograms of the last few minutes.
#[derive(Debug, Default)]
struct Recent {
    slots: Vec<(u64, Series)>,
}

impl Recent {
    fn record(&mut self, minute: u64, d: Duration, ok: bool) {
        let i = (minute % RECENT_MINUTES) as usize;
        if self.slots.len() < RECENT_MINUTES as usize {
            self.slots
                .resize_with(RECENT_MINUTES as usize, || (u64::MAX, Series::new()));
        }
        let slot = &mut self.slots[i];
        if slot.0 != minute {
            *slot = (minute, Series::new());
        }
        slot.1.record(d, ok);
    }

    fn summary(&self, minute: u64) -> LatencySummary {
        let mut h = Histogram::<u32>::new(3).expect("valid");
        let mut errors = 0;
        for (m, s) in &self.slots {
            if *m != u64::MAX && *m + RECENT_MINUTES > minute && *m <= minute {
                h.add(&s.hist).ok();
                errors += s.errors;
            }
        }
        summarise(&h, errors)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    sec: u64,
    counts: [[u32; 2]; 3],
}

const API: usize = 0;
const AI: usize = 1;
const DB: usize = 2;

#[derive(Debug)]
struct State {
    api: Series,
    routes: HashMap<String, Series>,
    ai: Series,
    agents: Vec<(Series, [u64; 4])>,
    backends: HashMap<String, Series>,
    ai_cache: [u64; 4],
    db: Series,
    ops: HashMap<&'static str, Series>,
    realtime: Series,
    reconnects: u64,
    caches: HashMap<&'static str, [u64; 3]>,
    recent: [Recent; 4],
    ring: Vec<Bucket>,
    breaker_transitions: u64,
    ai_refused: u64,
    lost: InteractionsLost,
}

/// An in-process [`MetricsSink`]: HDR histograms (3 significant figures, in
/// microseconds) per series with p50/p95/p99/max; per-second counters for rolling 1 min,
/// 5 min and 1 h windows with the window before each (the trend); cache hit rates per
/// tier; AI cost per agent. No series per user, and at most [`MAX_KEYS`] routes,
/// backends, operations or caches each: memory stays bounded.
///
/// Recording takes one uncontended mutex; see `benches/metrics.rs` for its cost.
/// Time is tokio's clock, so windows roll over under `tokio::time::pause`.
#[derive(Debug)]
pub struct InMemoryMetrics {
    start: Instant,
    state: Mutex<State>,
}

impl Default for InMemoryMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn keyed<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, Series>,
    key: K,
    other: K,
) -> &mut Series {
    if !map.contains_key(&key) && map.len() >= MAX_KEYS {
        return map.entry(other).or_insert_with(Series::new);
    }
    map.entry(key).or_insert_with(Series::new)
}

fn agent_index(a: AgentType) -> usize {
    AgentType::ALL.iter().position(|x| *x == a).unwrap_or(0)
}

fn cache_index(t: CacheTier) -> usize {
    match t {
        CacheTier::Exact => 0,
        CacheTier::Semantic => 1,
        CacheTier::Miss => 2,
        CacheTier::Off => 3,
    }
}

impl InMemoryMetrics {
    /// An empty sink.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            state: Mutex::new(State {
                api: Series::new(),
                routes: HashMap::new(),
                ai: Series::new(),
                agents: (0..AgentType::ALL.len())
                    .map(|_| (Series::new(), [0; 4]))
                    .collect(),
                backends: HashMap::new(),
                ai_cache: [0; 4],
                db: Series::new(),
                ops: HashMap::new(),
                realtime: Series::new(),
                reconnects: 0,
                caches: HashMap::new(),
                recent: Default::default(),
                ring: vec![
                    Bucket {
                        sec: u64::MAX,
                        ..Default::default()
                    };
                    RING as usize
                ],
                breaker_transitions: 0,
                ai_refused: 0,
                lost: InteractionsLost::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A serialisable picture of everything recorded.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let now = Instant::now()
            .saturating_duration_since(self.start)
            .as_secs();
        let s = self.lock();
        let named = |m: &HashMap<String, Series>| {
            let mut v: Vec<NamedSummary> = m
                .iter()
                .map(|(k, s)| NamedSummary {
                    name: k.clone(),
                    latency: s.summary(),
                })
                .collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        let mut ops: Vec<NamedSummary> = s
            .ops
            .iter()
            .map(|(k, v)| NamedSummary {
                name: (*k).to_string(),
                latency: v.summary(),
            })
            .collect();
        ops.sort_by(|a, b| a.name.cmp(&b.name));
        let mut caches: Vec<CacheSummary> = s
            .caches
            .iter()
            .map(|(k, c)| cache_summary(k, c[0], c[1], c[2]))
            .collect();
        caches.sort_by(|a, b| a.tier.cmp(&b.tier));
        let hits = s.ai_cache[0] + s.ai_cache[1];
        let minute = now / 60;
        MetricsSnapshot {
            uptime_secs: now,
            api: s.api.summary(),
            api_routes: named(&s.routes),
            ai: s.ai.summary(),
            ai_agents: AgentType::ALL
                .iter()
                .zip(&s.agents)
                .map(|(a, (series, n))| AgentSummary {
                    agent: *a,
                    latency: series.summary(),
                    cost_nanos: n[0],
                    saved_nanos: n[1],
                    input_tokens: n[2],
                    output_tokens: n[3],
                })
                .collect(),
            ai_backends: named(&s.backends),
            ai_cache: cache_summary("semantic", hits, s.ai_cache[2], 0),
            db: s.db.summary(),
            db_operations: ops,
            realtime: s.realtime.summary(),
            realtime_reconnects: s.reconnects,
            caches,
            windows: [("1m", 60), ("5m", 300), ("1h", 3600)]
                .into_iter()
                .map(|(name, w)| window(&s.ring, name, now, w))
                .collect(),
            recent: RecentLatency {
                api: s.recent[0].summary(minute),
                ai: s.recent[1].summary(minute),
                db: s.recent[2].summary(minute),
                realtime: s.recent[3].summary(minute),
            },
            breaker_transitions: s.breaker_transitions,
            ai_cost_nanos: s.agents.iter().map(|a| a.1[0]).sum(),
            ai_refused: s.ai_refused,
            interactions_lost: s.lost,
        }
    }
}

fn cache_summary(tier: &str, hits: u64, misses: u64, evictions: u64) -> CacheSummary {
    let n = hits + misses;
    CacheSummary {
        tier: tier.to_string(),
        hits,
        misses,
        evictions,
        hit_rate: if n == 0 { 0.0 } else { hits as f64 / n as f64 },
    }
}

/// Sums the last `w` full seconds (`[now - w, now)`, the current second left out as
/// it is still filling) and the `w` before them.
fn window(ring: &[Bucket], name: &'static str, now: u64, w: u64) -> WindowStats {
    let sum = |from: u64, to: u64| {
        let mut c = [[0u64; 2]; 3];
        for b in ring {
            if b.sec != u64::MAX && b.sec >= from && b.sec < to {
                for (acc, n) in c.iter_mut().zip(&b.counts) {
                    acc[0] += u64::from(n[0]);
                    acc[1] += u64::from(n[1]);
                }
            }
        }
        c
    };
    let stats = |c: [[u64; 2]; 3], previous| {
        let rate = |k: usize| {
            if c[k][0] == 0 {
                0.0
            } else {
                c[k][1] as f64 / c[k][0] as f64
            }
        };
        WindowStats {
            window: name,
            api_rps: c[API][0] as f64 / w as f64,
            api_error_rate: rate(API),
            ai_rps: c[AI][0] as f64 / w as f64,
            ai_error_rate: rate(AI),
            db_rps: c[DB][0] as f64 / w as f64,
            db_error_rate: rate(DB),
            previous,
        }
    };
    let end = now;
    let prev = (end >= 2 * w).then(|| Box::new(stats(sum(end - 2 * w, end - w), None)));
    stats(sum(end.saturating_sub(w), end), prev)
}

impl State {
    fn tick(&mut self, sec: u64, family: usize, ok: bool) {
        let b = &mut self.ring[(sec % RING) as usize];
        if b.sec != sec {
            *b = Bucket {
                sec,
                counts: [[0; 2]; 3],
            };
        }
        b.counts[family][0] += 1;
        if !ok {
            b.counts[family][1] += 1;
        }
    }
}

impl MetricsSink for InMemoryMetrics {
    fn record(&self, event: &MetricEvent) {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        let sec = elapsed.as_secs();
        let minute = sec / 60;
        let mut s = self.lock();
        match event {
            MetricEvent::Api {
                endpoint,
                method,
                status,
                latency,
                ..
            } => {
                let ok = *status < 500;
                s.api.record(*latency, ok);
                s.recent[0].record(minute, *latency, ok);
                keyed(
                    &mut s.routes,
                    format!("{method} {endpoint}"),
                    "other".to_string(),
                )
                .record(*latency, ok);
                s.tick(sec, API, ok);
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
                if error.is_some_and(super::is_refusal) {
                    // The caller's own limit or mistake: not an AI failure.
                    s.ai_refused += 1;
                    return;
                }
                let ok = error.is_none();
                s.ai.record(*latency, ok);
                s.recent[1].record(minute, *latency, ok);
                let a = &mut s.agents[agent_index(*agent)];
                a.0.record(*latency, ok);
                a.1[0] += cost_nanos;
                a.1[1] += saved_nanos;
                a.1[2] += u64::from(*input_tokens);
                a.1[3] += u64::from(*output_tokens);
                if ok {
                    s.ai_cache[cache_index(*cache)] += 1;
                }
                if let Some(b) = backend
                    && !matches!(cache, CacheTier::Exact | CacheTier::Semantic)
                {
                    keyed(&mut s.backends, b.clone(), "other".to_string()).record(*latency, ok);
                }
                s.tick(sec, AI, ok);
            }
            MetricEvent::Database {
                operation,
                latency,
                ok,
            } => {
                s.db.record(*latency, *ok);
                s.recent[2].record(minute, *latency, *ok);
                keyed(&mut s.ops, *operation, "other").record(*latency, *ok);
                s.tick(sec, DB, *ok);
            }
            MetricEvent::Cache { tier, outcome } => {
                let full = s.caches.len() >= MAX_KEYS && !s.caches.contains_key(tier);
                let c = s
                    .caches
                    .entry(if full { "other" } else { tier })
                    .or_insert([0; 3]);
                match outcome {
                    CacheOutcome::Hit => c[0] += 1,
                    CacheOutcome::Miss => c[1] += 1,
                    CacheOutcome::Eviction => c[2] += 1,
                }
            }
            MetricEvent::RealtimeDelivery { latency } => {
                s.realtime.record(*latency, true);
                s.recent[3].record(minute, *latency, true);
            }
            MetricEvent::RealtimeReconnect => s.reconnects += 1,
            MetricEvent::Breaker { .. } => s.breaker_transitions += 1,
            MetricEvent::InteractionsLost { rows, reason } => match *reason {
                "dropped" => s.lost.dropped += rows,
                "rejected" => s.lost.rejected += rows,
                _ => s.lost.failed += rows,
            },
        }
    }
}
