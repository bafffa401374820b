//! The cost of `MetricsSink::record` on `InMemoryMetrics`, beside a bare atomic counter
//! increment in the same run (target ≤ 200 ns an event on this machine).
//!
//! ```text
//! cargo bench --bench metrics
//! ```

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kasama::metrics::{CacheOutcome, CacheTier, InMemoryMetrics, MetricEvent, MetricsSink};
use kasama::prelude::*;

fn benches(c: &mut Criterion) {
    let m = InMemoryMetrics::new();
    let counter = AtomicU64::new(0);
    let ai = MetricEvent::Ai {
        agent: AgentType::LearningCoach,
        backend: Some("sim".into()),
        input_tokens: 100,
        output_tokens: 40,
        cost_nanos: 4_400_000,
        saved_nanos: 0,
        latency: Duration::from_millis(812),
        cache: CacheTier::Miss,
        error: None,
    };
    let api = MetricEvent::Api {
        endpoint: "/goals/{id}".into(),
        method: "GET",
        status: 200,
        latency: Duration::from_micros(1830),
        user: None,
    };
    let db = MetricEvent::Database {
        operation: "get_goal",
        latency: Duration::from_micros(95),
        ok: true,
    };
    let cache = MetricEvent::Cache {
        tier: "query",
        outcome: CacheOutcome::Hit,
    };
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("atomic_counter", |b| {
        b.iter(|| counter.fetch_add(black_box(1), Ordering::Relaxed))
    });
    g.bench_function("in_memory/ai", |b| b.iter(|| m.record(black_box(&ai))));
    g.bench_function("in_memory/api", |b| b.iter(|| m.record(black_box(&api))));
    g.bench_function("in_memory/db", |b| b.iter(|| m.record(black_box(&db))));
    g.bench_function("in_memory/cache", |b| {
        b.iter(|| m.record(black_box(&cache)))
    });
    g.finish();
    c.bench_function("snapshot", |b| b.iter(|| black_box(m.snapshot())));
}

criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(group);
