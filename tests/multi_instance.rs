//! Three app instances in one process, each with its own memory, sharing one
//! PostgreSQL and the local Redis (127.0.0.1:6379) — chosen the one-line way,
//! `SharedParts::connect(&SharedConfig { database_url, redis_url, .. })` — hold the
//! guarantees of one: a free user spraying requests across the three gets one
//! allowance; a nearly spent budget cannot be passed by spreading calls (exact
//! money); a question answered through instance 1 is a cache hit on instance 3; a
//! write through instance 2 is never followed by a stale read on instance 1.
//!
//! Real time: real servers. Fails (never skips) without PostgreSQL or Redis.
#![cfg(feature = "redis")]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use kasama::agent::SimulatedAgent;
use kasama::metrics::CacheTier;
use kasama::pipeline::{
    AiPipeline, Budgets, Quota, RateLimitConfig, SharedConfig, SharedParts, TierQuotas,
};
use kasama::prelude::*;
use kasama::semantic::{HashingEmbedder, SemanticCache};

mod common;

use common::pipeline::{builder, users};

struct Instance {
    parts: SharedParts,
    pipeline: AiPipeline,
    repo: Arc<dyn Repository>,
}

/// Free users: 4 AI calls a minute (bursts of 4); every other quota unlimited.
fn limits() -> RateLimitConfig {
    let q = Quota::per_minute(NonZeroU32::new(4).unwrap()).allow_burst(NonZeroU32::new(4).unwrap());
    let mut c = RateLimitConfig::unlimited();
    c.ai_per_user = TierQuotas {
        free: q,
        ..c.ai_per_user
    };
    c
}

async fn instance(config: &SharedConfig, agent: Arc<SimulatedAgent>, budgets: Budgets) -> Instance {
    let parts = SharedParts::connect(config, None, limits()).unwrap();
    let pg = parts
        .repository()
        .expect("a database is configured")
        .clone();
    let cache = parts.query_cache.clone().expect("Redis is configured");
    // The query cache in Redis: generations shared, so reads follow writes.
    let repo: Arc<dyn Repository> =
        Arc::new(CachedRepository::new(pg, cache, Duration::from_secs(300)));
    let semantic = parts
        .semantic_cache(SemanticCache::builder(Arc::new(HashingEmbedder::new())))
        .await
        .unwrap();
    let pipeline = builder(repo.clone())
        .backend(agent)
        .semantic_cache(semantic)
        .budgets(budgets)
        .rate_limits(RateLimitConfig::unlimited())
        .shared(&parts)
        .build()
        .unwrap();
    Instance {
        parts,
        pipeline,
        repo,
    }
}

async fn three(budgets: Budgets) -> (common::TestDb, Vec<Instance>, Arc<SimulatedAgent>) {
    assert!(
        tokio::net::TcpStream::connect("127.0.0.1:6379")
            .await
            .is_ok(),
        "these tests need Redis on 127.0.0.1:6379 (`.ci/run` starts it)"
    );
    let db = common::pg().await.expect("these tests need PostgreSQL");
    let config = SharedConfig {
        database_url: Some(db.app_config().url),
        redis_url: Some("redis://127.0.0.1:6379".into()),
        redis_prefix: format!("kasama-test-{}", uuid::Uuid::new_v4().simple()),
    };
    let agent = Arc::new(SimulatedAgent::instant("sim"));
    let mut v = Vec::new();
    for _ in 0..3 {
        v.push(instance(&config, agent.clone(), budgets).await);
    }
    for i in &v {
        assert!(
            i.parts
                .semantic_store
                .as_ref()
                .unwrap()
                .wait_listening(Duration::from_secs(10))
                .await
        );
    }
    (db, v, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_user_spraying_three_instances_gets_one_allowance() {
    let (db, v, agent) = three(Budgets::unlimited()).await;
    let u = users(&v[0].repo, 1).await[0];
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..12 {
        let r = AiRequest::new(
            u,
            AgentType::LearningCoach,
            format!("distinct question {i}"),
        );
        match v[i % 3].pipeline.complete(r, SubscriptionTier::Free).await {
            Ok(_) => ok += 1,
            Err(Error::RateLimited { .. }) => limited += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((ok, limited), (4, 8), "one allowance of 4, not three");
    assert_eq!(agent.calls(), 4);
    for i in &v {
        assert_eq!(i.parts.rate_limits.as_ref().unwrap().status().fallbacks, 0);
        i.pipeline.shutdown().await.unwrap();
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_spent_budget_cannot_be_passed_by_spreading_calls() {
    // A budget the first call fills (a soft cap of 1 n$: a call is admitted while the
    // spend is below it), whatever that call costs.
    let budgets = Budgets {
        free_user_daily: Some(1),
        ..Budgets::unlimited()
    };
    let (db, v, agent) = three(budgets).await;
    let u = users(&v[0].repo, 1).await[0];
    let mut paid = 0;
    let mut answered = Vec::new();
    // Sequential, on instances 1, 2, 3, 1: each of the three alone would admit its
    // first call (three answered); together only the very first passes.
    for i in 0..4 {
        let r = AiRequest::new(u, AgentType::LearningCoach, format!("spend {i}"));
        match v[i % 3].pipeline.complete(r, SubscriptionTier::Free).await {
            Ok(o) => {
                paid += o.cost_nanos;
                answered.push(i);
            }
            Err(Error::BudgetExceeded { .. }) => {}
            Err(Error::RateLimited { .. }) => panic!("the rate limit is not under test here"),
            Err(e) => panic!("{e:?}"),
        }
        v[i % 3].parts.budget.as_ref().unwrap().flush().await;
    }
    assert_eq!(answered, [0], "one budget for the three instances");
    assert_eq!(agent.calls(), 1);
    let spent = v[0].parts.budget.as_ref().unwrap().spent(u).await.unwrap();
    assert!(paid > 0);
    assert_eq!(
        (spent.day, spent.month, spent.held),
        (paid, paid, 0),
        "the shared ledger holds exactly what was paid"
    );
    for i in &v {
        i.pipeline.shutdown().await.unwrap();
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_through_instance_1_is_a_hit_on_instance_3_and_writes_are_read_everywhere() {
    let (db, v, agent) = three(Budgets::unlimited()).await;
    let u = users(&v[0].repo, 1).await[0];
    let q = || AiRequest::new(u, AgentType::LearningCoach, "How do I listen better?");
    let first = v[0]
        .pipeline
        .complete(q(), SubscriptionTier::Free)
        .await
        .unwrap();
    assert_eq!(first.cache, CacheTier::Miss);
    // Delivered over NOTIFY: wait until instance 3's index holds it (a deadline,
    // not a timing assertion), then ask through its pipeline.
    let cache3 = v[2].pipeline.semantic_cache().unwrap().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !matches!(
        cache3.lookup(&q()).await.unwrap(),
        kasama::semantic::Lookup::Hit { .. }
    ) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached instance 3"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hit = v[2]
        .pipeline
        .complete(q(), SubscriptionTier::Free)
        .await
        .unwrap();
    assert_eq!(hit.cache, CacheTier::Exact, "{hit:?}");
    assert_eq!(hit.response.output, first.response.output);
    assert_eq!(hit.cost_nanos, 0);

    // Read-after-write across instances, through the Redis query cache: every read
    // on instance 1 after a write on instance 2 returned sees that write.
    let p = v[0].repo.get_profile(Actor::User(u), u).await.unwrap();
    for n in 0..30 {
        let name = format!("name {n}");
        // Warm instance 1's cache with the current value first.
        v[0].repo.get_profile(Actor::User(u), u).await.unwrap();
        let upd = ProfileUpdate {
            display_name: Some(name.clone()),
            ..Default::default()
        };
        v[1].repo
            .update_profile(Actor::User(u), u, upd)
            .await
            .unwrap();
        let seen = v[0].repo.get_profile(Actor::User(u), u).await.unwrap();
        assert_eq!(seen.display_name, name, "stale read after write {n}");
    }
    assert_eq!(p.id, u);
    assert!(agent.calls() >= 1);
    for i in &v {
        i.pipeline.shutdown().await.unwrap();
    }
    db.finish().await;
}

#[test]
fn connecting_outside_a_runtime_is_an_error_and_nothing_configured_is_all_in_memory() {
    let config = SharedConfig {
        database_url: Some("postgres://kasama_login:secret@127.0.0.1/app".into()),
        redis_url: Some("redis://:secret@127.0.0.1:6379".into()),
        redis_prefix: String::new(),
    };
    let e = SharedParts::connect(&config, None, RateLimitConfig::default()).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e:?}");
    assert!(!format!("{config:?}").contains("secret"));
    let none =
        SharedParts::connect(&SharedConfig::default(), None, RateLimitConfig::default()).unwrap();
    assert!(none.budget.is_none() && none.semantic_store.is_none() && none.repository().is_none());
    assert!(none.rate_limits.is_none() && none.query_cache.is_none());
}
