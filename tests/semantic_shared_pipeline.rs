//! Three `AiPipeline`s (separate memory) sharing one PostgreSQL: a question answered
//! through pipeline 1 is a cache hit on pipeline 3, and the backend is called once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::AiRequest;
use kasama::pipeline::{AiPipeline, Budgets, RateLimitConfig};
use kasama::prelude::*;
use kasama::semantic::{CacheTier, HashingEmbedder, Lookup, SemanticCache};
use kasama::semantic_store::{PgSemanticStore, PgSemanticStoreConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_answered_through_pipeline_one_is_a_hit_on_pipeline_three() {
    let db = common::pg()
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 is required for this test");
    let repo: Arc<dyn Repository> = Arc::new(db.repo.clone());
    let u = UserId::new();
    repo.create_profile(
        Actor::Service,
        NewProfile::new(u, format!("{u}@example.com"), "U"),
    )
    .await
    .unwrap();
    // One backend behind all three, so its call count is the cluster's.
    let agent = Arc::new(
        SimulatedAgent::builder("sim")
            .latency(Duration::from_millis(5), Duration::from_millis(10))
            .build()
            .unwrap(),
    );
    let mut pipelines = Vec::new();
    for _ in 0..3 {
        let store = PgSemanticStore::start(
            PgRepository::connect(&db.app_config()).unwrap(),
            PgSemanticStoreConfig::new(db.app_config().url),
        )
        .unwrap();
        assert!(store.wait_listening(Duration::from_secs(10)).await);
        let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .build_shared(store)
            .await
            .unwrap();
        pipelines.push(
            AiPipeline::builder(repo.clone())
                .backend(agent.clone())
                .semantic_cache(cache)
                .rate_limits(RateLimitConfig::unlimited())
                .budgets(Budgets::unlimited())
                .build()
                .unwrap(),
        );
    }
    let req = || {
        AiRequest::new(
            u,
            AgentType::CommunicationAdvisor,
            "How do I bring up chores without a fight?",
        )
    };

    let first = pipelines[0]
        .complete(req(), SubscriptionTier::Free)
        .await
        .unwrap();
    assert_eq!(first.cache, CacheTier::Miss);
    assert_eq!(agent.calls(), 1);

    // Wait (through the cache, not the pipeline, which would ask the backend on a
    // miss) until instance 3 has heard of the answer.
    let three = pipelines[2].semantic_cache().unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while !matches!(three.lookup(&req()).await.unwrap(), Lookup::Hit { .. }) {
        assert!(tokio::time::Instant::now() < end, "no hit on pipeline 3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let third = pipelines[2]
        .complete(req(), SubscriptionTier::Free)
        .await
        .unwrap();
    assert_eq!(third.cache, CacheTier::Exact);
    assert_eq!(third.response.output, first.response.output);
    assert_eq!(third.cost_nanos, 0);
    assert_eq!(agent.calls(), 1, "the backend was called once");
    db.finish().await;
}
