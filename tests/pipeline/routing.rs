//! Coalescing and routing: identical requests in flight make one backend call (never
//! across users for a personal agent), a failing backend trips its breaker and traffic
//! moves to the healthy one, and with every backend down the answer is `CircuitOpen` at
//! once.

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::AiRequest;
use kasama::metrics::CacheTier;
use kasama::pipeline::{AiPipeline, BatchConfig, BreakerState, RateLimitConfig};
use kasama::prelude::*;
use kasama::semantic::{HashingEmbedder, SemanticCache};
use tokio::time::Instant;

use super::sim;
use crate::common::pipeline::{memory, relaxed, users};

#[tokio::test(start_paused = true)]
async fn a_hundred_identical_concurrent_requests_make_one_backend_call() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = sim("a", 300, 0.0);
    let p = Arc::new(
        relaxed(repo.clone())
            .backend(agent.clone())
            .build()
            .unwrap(),
    );
    let req = AiRequest::new(u, AgentType::LearningCoach, "How do I listen better?");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (p, r) = (p.clone(), req.clone());
            tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await })
        })
        .collect();
    let mut outputs = Vec::new();
    for t in tasks {
        outputs.push(t.await.unwrap().unwrap().response.output);
    }
    assert_eq!(agent.calls(), 1);
    assert!(outputs.iter().all(|o| *o == outputs[0]));
    let s = p.batch_stats();
    assert_eq!(
        (
            s.logical_requests,
            s.distinct_requests,
            s.coalesced,
            s.backend_calls
        ),
        (100, 1, 99, 1)
    );
    assert_eq!(p.shutdown().await.unwrap().written, 100);
}

#[tokio::test(start_paused = true)]
async fn a_personal_agent_never_answers_one_user_with_anothers_call() {
    let repo = memory();
    let us = users(&repo, 2).await;
    let agent = sim("a", 50, 0.0);
    let cache = Arc::new(
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .build()
            .unwrap(),
    );
    let p = AiPipeline::builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache)
        .rate_limits(RateLimitConfig::unlimited())
        .build()
        .unwrap();
    let q = |u| {
        AiRequest::new(
            u,
            AgentType::InsightGenerator,
            "What patterns do you see in my week?",
        )
    };
    let a = p.complete(q(us[0]), SubscriptionTier::Free).await.unwrap();
    let b = p.complete(q(us[1]), SubscriptionTier::Free).await.unwrap();
    assert_eq!(agent.calls(), 2, "two users, two backend calls");
    assert_eq!((a.cache, b.cache), (CacheTier::Miss, CacheTier::Miss));
    let again = p.complete(q(us[0]), SubscriptionTier::Free).await.unwrap();
    assert_eq!(again.cache, CacheTier::Exact);
    assert_eq!(again.response.output, a.response.output);
    assert_eq!(again.cost_nanos, 0);
    assert_eq!(
        again.saved_nanos, a.cost_nanos,
        "a hit saves what the call cost"
    );
    assert_eq!(agent.calls(), 2);
    p.shutdown().await.unwrap();
    let rows = repo
        .list_interactions(Actor::Service, us[0], Page::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.iter().filter(|r| r.cache_hit).count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_backend_trips_its_breaker_and_traffic_moves_to_the_healthy_one() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let (bad, good) = (sim("bad", 20, 1.0), sim("good", 20, 0.0));
    let p = relaxed(repo)
        .backend(bad.clone())
        .backend(good.clone())
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap();
    let p = Arc::new(p);
    // Waves of concurrent requests: load on the healthy backend keeps the failing one
    // in the power-of-two draw until its breaker opens.
    for wave in 0..10 {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let p = p.clone();
                let r = AiRequest::new(
                    u,
                    AgentType::ProgressTracker,
                    format!("wave {wave} summary {i}"),
                );
                tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await })
            })
            .collect();
        for t in tasks {
            t.await
                .unwrap()
                .expect("every request is answered, by failover if need be");
        }
    }
    let st = p.backends();
    let (b, g) = (&st[0], &st[1]);
    assert_eq!(b.name, "bad");
    assert!(b.trips >= 1, "the failing backend's breaker opened: {b:?}");
    assert_eq!(g.breaker, BreakerState::Closed);
    assert_eq!(
        good.calls(),
        200,
        "every request ended on the healthy backend"
    );
    assert!(
        bad.calls() <= 20,
        "traffic moved away: {} calls to the failing one",
        bad.calls()
    );
    assert!(b.error_rate > g.error_rate);
}

#[tokio::test(start_paused = true)]
async fn with_every_backend_down_the_answer_is_circuit_open_at_once() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let p = relaxed(repo)
        .backend(sim("x", 10, 1.0))
        .backend(sim("y", 10, 1.0))
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap();
    let mut i = 0;
    loop {
        i += 1;
        let r = AiRequest::new(u, AgentType::LearningCoach, format!("q{i}"));
        let t = Instant::now();
        match p.complete(r, SubscriptionTier::Free).await {
            Err(Error::CircuitOpen { .. }) => {
                assert_eq!(t.elapsed(), Duration::ZERO, "refused without waiting");
                break;
            }
            Err(e) => assert!(e.is_retryable(), "{e:?}"),
            Ok(_) => panic!("a dead backend answered"),
        }
        assert!(i < 20, "breakers never opened");
    }
    assert!(p.backends().iter().all(|b| b.breaker == BreakerState::Open));
}
