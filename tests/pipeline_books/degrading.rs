//! A failing part degrades instead of failing requests (an embedder that fails or
//! hangs, a panicking backend, an abandoned breaker probe, failed batch members), and
//! refusals are not counted as AI failures.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use async_trait::async_trait;
use kasama::agent::{AiAgent, AiRequest};
use kasama::health::{Check, HealthMonitor, Status};
use kasama::metrics::{InMemoryMetrics, MetricsSink, NoopMetrics};
use kasama::pipeline::{
    AiPipeline, BatchConfig, BreakerConfig, BreakerState, Budgets, Router, RouterConfig,
};
use kasama::prelude::*;
use kasama::semantic::{Embedder, SemanticCache};
use tokio::time::Instant;

use super::{Mode, Scripted};
use crate::common::pipeline::{PRICE, builder, memory, rows, users};

// ---- a failing part degrades ----

/// An embedder that fails, or never answers.
struct BrokenEmbedder {
    hang: bool,
}

#[async_trait]
impl Embedder for BrokenEmbedder {
    fn name(&self) -> &str {
        "broken"
    }
    fn dimension(&self) -> usize {
        8
    }
    fn default_threshold(&self) -> f32 {
        0.9
    }
    async fn embed(&self, _: &[String]) -> kasama::Result<Vec<Vec<f32>>> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(Error::Backend {
            what: "embedder".into(),
            retryable: true,
            source: "embedding service down".into(),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_embedder_that_fails_or_hangs_is_a_cache_miss_not_a_failed_request() {
    for hang in [false, true] {
        let repo = memory();
        let u = users(&repo, 1).await[0];
        let cache = SemanticCache::builder(Arc::new(BrokenEmbedder { hang }))
            .build()
            .unwrap();
        let p = builder(repo)
            .backend(Scripted::new("a", 50, Mode::Answer))
            .semantic_cache(Arc::new(cache))
            .cache_timeout(Duration::from_millis(300))
            .batching(BatchConfig {
                window: Duration::ZERO,
                ..Default::default()
            })
            .build()
            .unwrap();
        let t = Instant::now();
        let o = p
            .complete(
                AiRequest::new(u, AgentType::LearningCoach, "hello there"),
                SubscriptionTier::Free,
            )
            .await
            .expect("answered by the backend");
        assert_eq!(o.cache, kasama::metrics::CacheTier::Miss);
        assert_eq!(p.cache_errors(), 1, "hang = {hang}");
        let waited = if hang { 300 } else { 0 };
        assert_eq!(
            t.elapsed(),
            Duration::from_millis(waited + 50),
            "hang = {hang}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_backend_fails_its_waiters_and_leaves_no_dead_entry() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Scripted::new("a", 100, Mode::PanicOnce);
    let p = Arc::new(
        builder(repo.clone())
            .backend(agent.clone())
            .build()
            .unwrap(),
    );
    let req = AiRequest::new(u, AgentType::LearningCoach, "same question");
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (p, r) = (p.clone(), req.clone());
            tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    }
    // The same request again is answered, not parked behind the dead call.
    let t = Instant::now();
    p.complete(req, SubscriptionTier::Free).await.unwrap();
    assert_eq!(t.elapsed(), Duration::from_millis(150 + 100));
    assert_eq!(p.ledger().user_reserved(u), 0);
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows.iter().filter(|r| !r.success).count(), 3);
}

fn router(agent: Arc<Scripted>, cfg: RouterConfig) -> Arc<Router> {
    Arc::new(
        Router::new(
            vec![(agent as Arc<dyn AiAgent>, PRICE)],
            cfg,
            Arc::new(NoopMetrics),
        )
        .unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_half_open_probe_is_given_back() {
    let agent = Scripted::new("a", 1000, Mode::Fail);
    let r = router(
        agent.clone(),
        RouterConfig {
            max_attempts: 1,
            breaker: BreakerConfig {
                consecutive_failures: 1,
                cool_down: Duration::from_secs(10),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let req = AiRequest::new(UserId::new(), AgentType::LearningCoach, "probe me");
    assert!(r.call(&req).await.is_err());
    assert_eq!(
        (r.status()[0].breaker, r.status()[0].trips),
        (BreakerState::Open, 1)
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    agent.set(Mode::Answer);
    let probe = {
        let (r, req) = (r.clone(), req.clone());
        tokio::spawn(async move { r.call(&req).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.status()[0].breaker, BreakerState::HalfOpen);
    probe.abort();
    let _ = probe.await;
    assert_eq!(
        (r.status()[0].breaker, r.status()[0].trips),
        (BreakerState::Open, 1)
    );
    // The probe is free again at once: no second cool-down.
    let t = Instant::now();
    r.call(&req).await.unwrap();
    assert_eq!(t.elapsed(), Duration::from_secs(1));
    assert_eq!(r.status()[0].breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failed_batch_members_are_retried_together_within_the_batchs_deadline() {
    let reqs: Vec<AiRequest> = (0..5)
        .map(|i| AiRequest::new(UserId::new(), AgentType::LearningCoach, format!("q{i}")))
        .collect();
    // Retries run side by side: 1 s for the batch, 1 s for all five retries.
    let agent = Scripted::new("a", 1000, Mode::BatchFails);
    let r = router(agent.clone(), RouterConfig::default());
    let t = Instant::now();
    let out = r.call_batch(&reqs).await;
    assert!(out.iter().all(|o| o.is_ok()), "{out:?}");
    assert_eq!(t.elapsed(), Duration::from_secs(2));
    assert_eq!(agent.calls.load(SeqCst), 1 + 5);
    // The batch's deadline covers its retries.
    let r = router(
        Scripted::new("b", 1000, Mode::BatchFails),
        RouterConfig {
            deadline: Duration::from_millis(1500),
            ..Default::default()
        },
    );
    let t = Instant::now();
    let out = r.call_batch(&reqs).await;
    assert!(
        out.iter().all(|o| matches!(o, Err(Error::Timeout { .. }))),
        "{out:?}"
    );
    assert_eq!(t.elapsed(), Duration::from_millis(1500));
}

// ---- errors counted as what they are ----

#[tokio::test(start_paused = true)]
async fn refusals_are_not_ai_failures_and_failed_calls_are_recorded() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let metrics = Arc::new(InMemoryMetrics::new());
    let health = HealthMonitor::new(metrics.clone());
    let agent = Scripted::new("a", 10, Mode::Answer);
    let p = AiPipeline::builder(repo.clone())
        .backend(agent.clone())
        .budgets(Budgets::unlimited())
        .metrics(metrics.clone() as Arc<dyn MetricsSink>)
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap(); // free users: bursts of 5
    let mut refused = 0;
    for i in 0..25 {
        match p
            .complete(
                AiRequest::new(u, AgentType::LearningCoach, format!("q{i}")),
                SubscriptionTier::Free,
            )
            .await
        {
            Ok(_) => {}
            Err(Error::RateLimited { .. }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(refused, 20);
    let s = metrics.snapshot();
    assert_eq!((s.ai.count, s.ai_refused), (5, 20));
    assert_eq!(s.ai.error_rate, 0.0);
    let report = health.evaluate().await;
    let c = report
        .checks
        .iter()
        .find(|c| c.check == Check::AiErrorRate)
        .unwrap();
    assert_eq!(c.status, Status::Healthy);

    // A failed backend call is recorded, with success = false and no cost.
    agent.set(Mode::Fail);
    tokio::time::advance(Duration::from_secs(60)).await;
    let e = p
        .complete(
            AiRequest::new(u, AgentType::LearningCoach, "this one fails"),
            SubscriptionTier::Free,
        )
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    let s = metrics.snapshot();
    assert_eq!((s.ai.count, s.ai_refused), (6, 20));
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 6);
    let failed: Vec<_> = rows.iter().filter(|r| !r.success).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].cost_nanos, failed[0].input_tokens), (0, 0));
}
