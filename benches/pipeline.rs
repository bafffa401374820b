//! The AI pipeline's own cost and savings, each beside its baseline:
//!
//! - `overhead`: `AiPipeline::complete` with an instant agent, a zero batch window, no
//!   semantic cache, against calling the same agent directly (interleaved p50s are
//!   printed with the difference in µs);
//! - duplicates: 10,000 requests of which 30 % repeat an earlier one (same user and
//!   text), sent 50 at a time, with the semantic cache: backend calls made vs requests;
//! - `router_pick`: choosing a backend among 4 by power of two choices;
//! - rate-limiter memory: 100,000 distinct users admitted once, before and after
//!   pruning (tracked keys and resident memory).
//!
//! ```text
//! cargo bench --bench pipeline
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kasama::agent::{AiAgent, AiRequest, SimulatedAgent};
use kasama::pipeline::{AiPipeline, BatchConfig, Budgets, RateLimitConfig, RateLimits};
use kasama::prelude::*;
use kasama::semantic::{HashingEmbedder, SemanticCache};
use tokio::runtime::Runtime;

fn pipeline(
    rt: &Runtime,
    repo: Arc<dyn Repository>,
    agents: Vec<Arc<dyn AiAgent>>,
    cache: bool,
) -> AiPipeline {
    let _g = rt.enter();
    let mut b = AiPipeline::builder(repo)
        .rate_limits(RateLimitConfig::unlimited())
        .budgets(Budgets::unlimited())
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        });
    for a in agents {
        b = b.backend(a);
    }
    if cache {
        b = b.semantic_cache(Arc::new(
            SemanticCache::builder(Arc::new(HashingEmbedder::new()))
                .build()
                .unwrap(),
        ));
    }
    b.build().unwrap()
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// 100,000 distinct users through the per-user limiter, then idle until their allowance
/// is full again, then a prune — on a paused clock, so the idle time is simulated.
fn limiter_memory() {
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    paused.block_on(async {
        let limits = RateLimits::new(RateLimitConfig { prune_every: u64::MAX, ..RateLimitConfig::default() });
        let before = rss_bytes();
        for _ in 0..100_000 {
            let _ = limits.check_ai(UserId::new(), SubscriptionTier::Free);
        }
        let filled = rss_bytes();
        let tracked = limits.tracked();
        // A free user's allowance (5 at 10 a minute) is full again after 30 s.
        tokio::time::advance(Duration::from_secs(31)).await;
        limits.prune();
        let pruned = rss_bytes();
        println!(
            "rate limiter: 100,000 distinct users → {tracked} tracked keys, RSS +{:.1} MiB; 31 s later, after a prune → {} keys, RSS {:+.1} MiB from the start",
            filled.saturating_sub(before) as f64 / 1048576.0,
            limits.tracked(),
            (pruned as f64 - before as f64) / 1048576.0,
        );
    });
}

fn benches(c: &mut Criterion) {
    limiter_memory();
    let rt = Runtime::new().unwrap();
    let repo: Arc<dyn Repository> = Arc::new(InMemoryRepository::new());
    let users: Vec<UserId> = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..100 {
            let u = UserId::new();
            repo.create_profile(
                Actor::Service,
                NewProfile::new(u, format!("b{i}@example.com"), "B"),
            )
            .await
            .unwrap();
            v.push(u);
        }
        v
    });
    let agent = Arc::new(SimulatedAgent::instant("sim"));
    let p = pipeline(&rt, repo.clone(), vec![agent.clone()], false);
    let req = |i: usize| {
        AiRequest::new(
            users[i % 100],
            AgentType::LearningCoach,
            format!("question number {i}"),
        )
    };

    // --- overhead
    let mut g = c.benchmark_group("overhead");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("agent_direct", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let r = req(i);
            let a = agent.clone();
            async move { black_box(a.complete(&r).await.unwrap()) }
        })
    });
    let mut j = 0usize;
    g.bench_function("pipeline", |b| {
        b.to_async(&rt).iter(|| {
            j += 1;
            let r = req(j);
            let p = &p;
            async move { black_box(p.complete(r, SubscriptionTier::Free).await.unwrap()) }
        })
    });
    g.finish();
    // Measured from a task on a runtime worker, where a host's request handlers run
    // (criterion's async iteration above drives futures from outside the workers, so
    // every task the pipeline spawns costs a cross-thread hand-off there).
    let p = Arc::new(p);
    let (mut direct, mut piped) = rt.block_on({
        let (p, agent, users) = (p.clone(), agent.clone(), users.clone());
        async move {
            tokio::spawn(async move {
                let (mut direct, mut piped) = (Vec::new(), Vec::new());
                for k in 0..20_000usize {
                    let r = AiRequest::new(
                        users[k % 100],
                        AgentType::LearningCoach,
                        format!("question number {}", 1_000_000 + k),
                    );
                    let t = Instant::now();
                    black_box(agent.complete(&r).await.unwrap());
                    direct.push(t.elapsed());
                    let t = Instant::now();
                    black_box(p.complete(r, SubscriptionTier::Free).await.unwrap());
                    piped.push(t.elapsed());
                }
                (direct, piped)
            })
            .await
            .unwrap()
        }
    });
    direct.sort();
    piped.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "\noverhead (20,000 interleaved calls): direct p50 {:.2} µs, pipeline p50 {:.2} µs, added {:.2} µs at p50 (p99: {:.2} vs {:.2} µs)",
        us(direct[10_000]),
        us(piped[10_000]),
        us(piped[10_000]) - us(direct[10_000]),
        us(direct[19_800]),
        us(piped[19_800]),
    );
    rt.block_on(p.shutdown()).unwrap();

    // --- duplicates
    let counted = Arc::new(
        SimulatedAgent::builder("counted")
            .latency(Duration::from_millis(2), Duration::from_millis(5))
            .build()
            .unwrap(),
    );
    let dp = Arc::new(pipeline(&rt, repo.clone(), vec![counted.clone()], true));
    let n = 10_000usize;
    // Every request whose index ends in 3, 6 or 9 repeats the one whose index ends in
    // 0 in the same ten (the same user and text): exactly 30 % duplicates, some still in
    // flight when repeated (coalesced), some already answered (cache hits).
    let workload: Vec<AiRequest> = (0..n)
        .map(|k| {
            let src = if matches!(k % 10, 3 | 6 | 9) {
                k - k % 10
            } else {
                k
            };
            AiRequest::new(
                users[src % 100],
                AgentType::ALL[src % 5],
                format!("How do we handle topic {src} as a couple?"),
            )
        })
        .collect();
    let t = Instant::now();
    rt.block_on(async {
        for chunk in workload.chunks(50) {
            let tasks: Vec<_> = chunk
                .iter()
                .cloned()
                .map(|r| {
                    let dp = dp.clone();
                    tokio::spawn(
                        async move { dp.complete(r, SubscriptionTier::Free).await.unwrap() },
                    )
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
    });
    let took = t.elapsed();
    let cache = dp.semantic_cache().unwrap().stats();
    let bs = dp.batch_stats();
    println!(
        "duplicates: {n} requests (30 % repeats) → {} backend calls ({:.1} % saved); cache exact {} / semantic {}; coalesced in flight {}; {:.2} s",
        counted.calls(),
        100.0 * (n as f64 - counted.calls() as f64) / n as f64,
        cache.exact_hits,
        cache.semantic_hits,
        bs.coalesced,
        took.as_secs_f64()
    );
    rt.block_on(dp.shutdown()).unwrap();

    // --- router pick
    let four: Vec<Arc<dyn AiAgent>> = (0..4)
        .map(|k| Arc::new(SimulatedAgent::instant(format!("b{k}"))) as Arc<dyn AiAgent>)
        .collect();
    let rp = pipeline(&rt, repo.clone(), four, false);
    c.bench_function("router_pick/4_backends", |b| {
        b.iter(|| black_box(rp.router().choose(AgentType::LearningCoach)))
    });
}

criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(group);
