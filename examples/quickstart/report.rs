//! The report of the day: built from what the run left behind, printed as text and
//! written as JSON (`--json`).

use std::collections::BTreeMap;

use kasama::health::Alert;
use kasama::metrics::InMemoryMetrics;
use serde::Serialize;

use crate::day::{Conversations, Outcomes};
use crate::stack::Ai;

#[derive(Serialize)]
/// Everything the run printed, as `--json` writes it.
pub(crate) struct Report {
    seed: u64,
    store: &'static str,
    clock: &'static str,
    users: usize,
    users_by_tier: BTreeMap<&'static str, usize>,
    requests: usize,
    answered: usize,
    refused_or_failed: BTreeMap<String, usize>,
    conversations: Conversations,
    cache: CacheReport,
    backend: BackendReport,
    cost: CostReport,
    latency_ms: BTreeMap<String, Percentiles>,
    realtime_events: u64,
    breaker_trips: BTreeMap<String, u64>,
    alerts: Vec<String>,
    interactions_recorded: u64,
}

#[derive(Serialize)]
/// The semantic cache's lookups.
pub(crate) struct CacheReport {
    exact_hits: u64,
    semantic_hits: u64,
    misses: u64,
    hit_rate: f64,
    exact_hit_rate: f64,
    semantic_hit_rate: f64,
}

#[derive(Serialize)]
/// What reached the backends.
pub(crate) struct BackendReport {
    requests_reaching_batcher: u64,
    coalesced: u64,
    distinct_sent: u64,
    batches: u64,
    backend_calls_including_retries: u64,
    calls_saved_vs_one_call_per_request: f64,
}

#[derive(Serialize)]
/// Money, in US dollars.
pub(crate) struct CostReport {
    spent_usd: f64,
    saved_by_cache_usd: f64,
    saved_by_coalescing_usd: f64,
    without_optimisations_usd: f64,
    per_user_per_month_usd: f64,
    per_user_per_month_without_optimisations_usd: f64,
    target_per_user_per_month_usd: f64,
}

#[derive(Serialize)]
/// A latency distribution, in milliseconds.
pub(crate) struct Percentiles {
    count: u64,
    p50: f64,
    p95: f64,
    p99: f64,
}

/// What the day left behind, besides what the metrics and the AI side hold.
pub(crate) struct Day {
    pub(crate) seed: u64,
    pub(crate) postgres: bool,
    /// Backend latencies were divided by this; AI latencies are multiplied back.
    pub(crate) scale: u64,
    pub(crate) users: usize,
    pub(crate) users_by_tier: BTreeMap<&'static str, usize>,
    pub(crate) requests: usize,
    pub(crate) outcomes: Outcomes,
    pub(crate) conversations: Conversations,
    pub(crate) realtime_events: u64,
    pub(crate) alerts: Vec<Alert>,
    pub(crate) recorded: u64,
}

/// The report of day `d`, with the figures of `metrics` and `ai`.
pub(crate) fn build(d: Day, metrics: &InMemoryMetrics, ai: &Ai) -> Report {
    let snap = metrics.snapshot();
    let cs = ai.cache.stats();
    let bs = ai.pipeline.batch_stats();
    let (answered, failed) = d.outcomes;
    let total_calls = ai.backend_calls();
    let spend = ai.pipeline.ledger().total();
    let lookups = cs.exact_hits + cs.semantic_hits + cs.misses;
    let rate = |n: u64| {
        if lookups == 0 {
            0.0
        } else {
            n as f64 / lookups as f64
        }
    };
    let usd = |n: f64| n / 1e9;
    // Exact, from the ledger: each coalesced request saved what its shared call cost.
    let coalesce_saved = spend.saved_by_coalescing_nanos as f64;
    let cache_saved = (spend.saved_nanos - spend.saved_by_coalescing_nanos) as f64;
    let without = spend.cost_nanos as f64 + spend.saved_nanos as f64;
    let month = |n: f64| usd(n) / d.users as f64 * 30.0;
    let pct = |s: &kasama::metrics::LatencySummary| Percentiles {
        count: s.count,
        p50: s.p50_ms * d.scale as f64,
        p95: s.p95_ms * d.scale as f64,
        p99: s.p99_ms * d.scale as f64,
    };
    let mut latency = BTreeMap::new();
    latency.insert("ai end to end".to_string(), pct(&snap.ai));
    latency.insert("ai answered by a backend".to_string(), {
        let n: u64 = snap.ai_backends.iter().map(|b| b.latency.count).sum();
        let w = |f: fn(&kasama::metrics::LatencySummary) -> f64| {
            if n == 0 {
                0.0
            } else {
                snap.ai_backends
                    .iter()
                    .map(|b| f(&b.latency) * b.latency.count as f64)
                    .sum::<f64>()
                    / n as f64
                    * d.scale as f64
            }
        };
        // A count-weighted blend of the backends' percentiles (an approximation).
        Percentiles {
            count: n,
            p50: w(|l| l.p50_ms),
            p95: w(|l| l.p95_ms),
            p99: w(|l| l.p99_ms),
        }
    });
    for b in &snap.ai_backends {
        latency.insert(format!("backend {}", b.name), pct(&b.latency));
    }
    // Time to the first chunk of the streamed answers (conversation turns).
    latency.insert(
        "ai first token (backend)".to_string(),
        pct(&snap.ai_first_token.backend),
    );
    latency.insert(
        "ai first token (cache)".to_string(),
        pct(&snap.ai_first_token.cache),
    );
    latency.insert(
        "database".to_string(),
        Percentiles {
            count: snap.db.count,
            p50: snap.db.p50_ms,
            p95: snap.db.p95_ms,
            p99: snap.db.p99_ms,
        },
    );
    if snap.realtime.count > 0 {
        latency.insert(
            "realtime delivery".to_string(),
            Percentiles {
                count: snap.realtime.count,
                p50: snap.realtime.p50_ms,
                p95: snap.realtime.p95_ms,
                p99: snap.realtime.p99_ms,
            },
        );
    }
    Report {
        seed: d.seed,
        store: if d.postgres {
            "postgresql"
        } else {
            "in-memory"
        },
        clock: if d.postgres {
            "real time: backend latencies ÷ 20 (AI figures scaled back ×20), the day squeezed into 20 s"
        } else {
            "tokio's paused clock: a simulated day, in which computation (cache lookups, the in-memory store) takes no simulated time"
        },
        users: d.users,
        users_by_tier: d.users_by_tier,
        requests: d.requests,
        answered,
        refused_or_failed: failed,
        conversations: d.conversations,
        cache: CacheReport {
            exact_hits: cs.exact_hits,
            semantic_hits: cs.semantic_hits,
            misses: cs.misses,
            hit_rate: rate(cs.exact_hits + cs.semantic_hits),
            exact_hit_rate: rate(cs.exact_hits),
            semantic_hit_rate: rate(cs.semantic_hits),
        },
        backend: BackendReport {
            requests_reaching_batcher: bs.logical_requests,
            coalesced: bs.coalesced,
            distinct_sent: bs.distinct_requests,
            batches: bs.backend_calls,
            backend_calls_including_retries: total_calls,
            calls_saved_vs_one_call_per_request: 1.0 - total_calls as f64 / d.requests as f64,
        },
        cost: CostReport {
            spent_usd: usd(spend.cost_nanos as f64),
            saved_by_cache_usd: usd(cache_saved),
            saved_by_coalescing_usd: usd(coalesce_saved),
            without_optimisations_usd: usd(without),
            per_user_per_month_usd: month(spend.cost_nanos as f64),
            per_user_per_month_without_optimisations_usd: month(without),
            target_per_user_per_month_usd: 0.10,
        },
        latency_ms: latency,
        realtime_events: d.realtime_events,
        breaker_trips: ai
            .pipeline
            .backends()
            .iter()
            .map(|b| (b.name.clone(), b.trips))
            .collect(),
        alerts: d
            .alerts
            .iter()
            .map(|a| format!("{:?} {:?} ({:?}): {}", a.kind, a.check, a.status, a.message))
            .collect(),
        interactions_recorded: d.recorded,
    }
}

/// The report as text, on stdout.
pub(crate) fn print(r: &Report) {
    println!(
        "\nkasama quickstart — one simulated day (seed {}, {} store; {})",
        r.seed, r.store, r.clock
    );
    println!(
        "users: {} ({})",
        r.users,
        r.users_by_tier
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "AI requests: {}  answered {}  refused/failed {}",
        r.requests,
        r.answered,
        if r.refused_or_failed.is_empty() {
            "none".to_string()
        } else {
            r.refused_or_failed
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let v = &r.conversations;
    println!(
        "conversations: {} started, {} turns streamed ({} with earlier turns in the prompt), {} answers stored",
        v.started, v.turns, v.with_history, v.answers_stored
    );
    let c = &r.cache;
    println!(
        "semantic cache: hit rate {:.1} % (exact {:.1} %, paraphrase {:.1} %); {} misses",
        100.0 * c.hit_rate,
        100.0 * c.exact_hit_rate,
        100.0 * c.semantic_hit_rate,
        c.misses
    );
    let b = &r.backend;
    println!(
        "backends: {} requests reached the batcher, {} coalesced into in-flight twins, {} sent in {} batches; {} backend calls in all (retries included): {:.1} % fewer than one per request",
        b.requests_reaching_batcher,
        b.coalesced,
        b.distinct_sent,
        b.batches,
        b.backend_calls_including_retries,
        100.0 * b.calls_saved_vs_one_call_per_request
    );
    let k = &r.cost;
    println!(
        "cost: ${:.4} spent; ${:.4} saved by the cache, ${:.4} by coalescing; ${:.4} without them",
        k.spent_usd, k.saved_by_cache_usd, k.saved_by_coalescing_usd, k.without_optimisations_usd
    );
    println!(
        "projected per user per month: ${:.4} (without optimisations ${:.4}) — target < ${:.2}: {}",
        k.per_user_per_month_usd,
        k.per_user_per_month_without_optimisations_usd,
        k.target_per_user_per_month_usd,
        if k.per_user_per_month_usd < k.target_per_user_per_month_usd {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("latency (ms)              count       p50       p95       p99");
    for (name, p) in &r.latency_ms {
        println!(
            "  {name:<22} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            p.count, p.p50, p.p95, p.p99
        );
    }
    println!("realtime: {} change events delivered", r.realtime_events);
    println!(
        "breaker trips: {}",
        r.breaker_trips
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("interactions recorded: {}", r.interactions_recorded);
    if r.alerts.is_empty() {
        println!("alerts: none");
    } else {
        println!("alerts: {}", r.alerts.len());
        for a in r.alerts.iter().take(8) {
            println!("  {a}");
        }
        if r.alerts.len() > 8 {
            println!("  … and {} more (all in --json)", r.alerts.len() - 8);
        }
    }
}
