//! Time to first chunk of a streamed answer, through the pipeline and from the agent
//! called directly, in the same run (issue 12: the pipeline must add < 50 µs at p50).
//!
//! The agent streams instantly (eight deltas, then the answer, all ready at once), so
//! what is measured is the pipeline's own path to the first chunk: validation, rate
//! limit, budget hold, the driver task, the router's pick and the channel hop. No
//! semantic cache (every request is a miss anyway); streams skip the batcher. Each
//! stream is read to its end outside the timing, so every call is settled as a
//! completed one.
//!
//! - `first_chunk/agent_direct` vs `first_chunk/pipeline`: criterion's figures;
//! - then 20,000 interleaved streams measured from a task on a runtime worker (where a
//!   host's handlers run), printing both p50s and the difference in µs.
//!
//! ```text
//! cargo bench --bench stream
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use kasama::agent::{AiAgent, AiRequest, AiResponse, AiStream, StreamEvent, Usage};
use kasama::pipeline::{AiPipeline, Budgets, OutcomeStream, RateLimitConfig};
use kasama::prelude::*;
use serde_json::json;
use tokio::runtime::Runtime;

const DELTAS: [&str; 8] = [
    "Start ",
    "with ",
    "what ",
    "you ",
    "noticed, ",
    "then ",
    "ask ",
    "gently.",
];

/// A backend whose whole stream is ready at once.
struct Instant8;

fn answer() -> AiResponse {
    AiResponse {
        output: json!({ "text": DELTAS.concat() }),
        usage: Usage {
            input_tokens: 40,
            output_tokens: 8,
        },
        usage_estimated: false,
        model: "instant-1".into(),
        backend: "instant".into(),
        latency: Duration::ZERO,
    }
}

#[async_trait]
impl AiAgent for Instant8 {
    fn name(&self) -> &str {
        "instant"
    }
    async fn complete(&self, _: &AiRequest) -> kasama::Result<AiResponse> {
        Ok(answer())
    }
    async fn stream(&self, _: &AiRequest) -> kasama::Result<AiStream> {
        let events = DELTAS
            .iter()
            .map(|d| Ok(StreamEvent::Delta((*d).to_string())))
            .chain([Ok(StreamEvent::Done(answer()))]);
        Ok(AiStream::new(futures_util::stream::iter(
            events.collect::<Vec<_>>(),
        )))
    }
}

/// Reads what is left of a pipeline stream.
async fn finish(mut s: OutcomeStream) {
    while let Some(item) = s.next().await {
        black_box(item.unwrap());
    }
}

/// Reads what is left of an agent's stream.
async fn finish_direct(mut s: AiStream) {
    while let Some(item) = s.next().await {
        black_box(item.unwrap());
    }
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let repo: Arc<dyn Repository> = Arc::new(InMemoryRepository::new());
    let users: Vec<UserId> = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..100 {
            let u = UserId::new();
            repo.create_profile(
                Actor::Service,
                NewProfile::new(u, format!("s{i}@example.com"), "S"),
            )
            .await
            .unwrap();
            v.push(u);
        }
        v
    });
    let agent = Arc::new(Instant8);
    let p = {
        let _g = rt.enter();
        Arc::new(
            AiPipeline::builder(repo.clone())
                .rate_limits(RateLimitConfig::unlimited())
                .budgets(Budgets::unlimited())
                .backend(agent.clone())
                .build()
                .unwrap(),
        )
    };
    let req = move |i: usize| {
        AiRequest::new(
            users[i % 100],
            AgentType::CommunicationAdvisor,
            format!("question number {i}"),
        )
    };

    let mut g = c.benchmark_group("first_chunk");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("agent_direct", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let a = agent.clone();
            let reqs: Vec<AiRequest> = (0..iters)
                .map(|_| {
                    i += 1;
                    req(i)
                })
                .collect();
            async move {
                let mut took = Duration::ZERO;
                for r in reqs {
                    let t = Instant::now();
                    let mut s = a.stream(&r).await.unwrap();
                    black_box(s.next().await.unwrap().unwrap());
                    took += t.elapsed();
                    finish_direct(s).await;
                }
                took
            }
        })
    });
    let mut j = 0usize;
    g.bench_function("pipeline", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let p = p.clone();
            let reqs: Vec<AiRequest> = (0..iters)
                .map(|_| {
                    j += 1;
                    req(j)
                })
                .collect();
            async move {
                let mut took = Duration::ZERO;
                for r in reqs {
                    let t = Instant::now();
                    let mut s = p.stream(r, SubscriptionTier::Free).await.unwrap();
                    black_box(s.next().await.unwrap().unwrap());
                    took += t.elapsed();
                    finish(s).await;
                }
                took
            }
        })
    });
    g.finish();

    // Interleaved, from a task on a runtime worker.
    let (mut direct, mut piped) = rt.block_on({
        let (p, agent) = (p.clone(), agent.clone());
        async move {
            tokio::spawn(async move {
                let (mut direct, mut piped) = (Vec::new(), Vec::new());
                for k in 0..20_000usize {
                    let r = req(1_000_000_000 + k);
                    let t = Instant::now();
                    let mut s = agent.stream(&r).await.unwrap();
                    black_box(s.next().await.unwrap().unwrap());
                    direct.push(t.elapsed());
                    finish_direct(s).await;
                    let t = Instant::now();
                    let mut s = p.stream(r, SubscriptionTier::Free).await.unwrap();
                    black_box(s.next().await.unwrap().unwrap());
                    piped.push(t.elapsed());
                    finish(s).await;
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
        "\nfirst chunk (20,000 interleaved streams): direct p50 {:.2} µs, pipeline p50 {:.2} µs, added {:.2} µs at p50 (p99: {:.2} vs {:.2} µs)",
        us(direct[10_000]),
        us(piped[10_000]),
        us(piped[10_000]) - us(direct[10_000]),
        us(direct[19_800]),
        us(piped[19_800]),
    );
    rt.block_on(p.shutdown()).unwrap();
}

criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(group);
