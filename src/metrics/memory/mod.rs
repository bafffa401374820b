//! [`InMemoryMetrics`]: HDR histograms, rolling windows and a snapshot.
//!
//! `summary.rs` holds the snapshot's public types, `series.rs` the histograms and
//! counters they are computed from; this file routes events into them.

mod series;
mod summary;

pub use summary::{
    AgentSummary, CacheSummary, FirstTokenSummary, InteractionsLost, LatencySummary,
    MetricsSnapshot, NamedSummary, RecentLatency, WindowStats,
};

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

use super::{CacheOutcome, CacheTier, MetricEvent, MetricsSink};
use crate::domain::AgentType;
use series::{AI, API, Bucket, DB, Recent, Series, cache_summary, window};

/// Most distinct keys per family (routes, backends, operations, caches); further ones
/// are counted under one more key, `"other"`, so memory stays bounded whatever hosts
/// send.
pub const MAX_KEYS: usize = 64;
/// Seconds of per-second counters kept: the 1 h window and the hour before it.
const RING: u64 = 7200;

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
    ai_cancelled: u64,
    lost: InteractionsLost,
    /// Time to first token: all, from a backend, from the cache.
    first_token: [Series; 3],
}

/// An in-process [`MetricsSink`]: HDR histograms (3 significant figures, in
/// microseconds) per series with p50/p95/p99/max; per-second counters for rolling 1 min,
/// 5 min and 1 h windows with the window before each (the trend); cache hit rates per
/// tier; AI cost per agent. No series per user, and at most [`MAX_KEYS`] routes,
/// backends, operations or caches each (plus their `"other"`): memory stays bounded.
///
/// Recording takes one mutex, held for a few counter and histogram updates (no I/O,
/// no await): recorders on other threads wait that long. See `benches/metrics.rs`
/// for its cost. Time is tokio's clock, so windows roll over under
/// `tokio::time::pause`.
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
                ai_cancelled: 0,
                lost: InteractionsLost::default(),
                first_token: [Series::new(), Series::new(), Series::new()],
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
            ai_first_token: FirstTokenSummary {
                all: s.first_token[0].summary(),
                backend: s.first_token[1].summary(),
                cache: s.first_token[2].summary(),
            },
            ai_cancelled: s.ai_cancelled,
        }
    }
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
                if *error == Some(super::CANCELLED) {
                    // The client went away: what was produced is paid for, but it is
                    // neither a latency nor a failure of the AI path.
                    s.ai_cancelled += 1;
                    let a = &mut s.agents[agent_index(*agent)].1;
                    a[0] += cost_nanos;
                    a[2] += u64::from(*input_tokens);
                    a[3] += u64::from(*output_tokens);
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
            MetricEvent::FirstToken { latency, cache, .. } => {
                let hit = matches!(cache, CacheTier::Exact | CacheTier::Semantic);
                s.first_token[0].record(*latency, true);
                s.first_token[if hit { 2 } else { 1 }].record(*latency, true);
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
