//! One behaviour suite, run against every `Repository`: the in-memory store and
//! PostgreSQL (a fresh database per test, as the non-owner application role).
//! Each check asserts the exact value a user would see, so both implementations
//! must agree to pass.
//!
//! This file is the harness: which repositories run the suite (the `conformance!`
//! macro: in memory, through the cache, on PostgreSQL, and — feature `redis` —
//! through a Redis cache over memory and over PostgreSQL) and the helpers every part
//! shares. Each aggregate's checks are in a module of their own.

#[path = "../common/mod.rs"]
mod common;

mod analytics;
mod assessments;
mod bad_input;
mod conversations;
mod erase;
mod goals;
mod interactions;
mod isolation;
mod notifications;
mod practices;
mod profiles;
mod progress;

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use kasama::prelude::*;
use serde_json::json;

// The suite, one function per part (each runs on every repository below).
use analytics::{cost_analysis, recommendations, statistics, system_health};
use assessments::assessments;
use bad_input::bad_input;
use conversations::{conversation_bad_input, conversation_isolation, conversations};
use erase::erase;
use goals::goals;
use interactions::interactions;
use isolation::isolation;
use notifications::notifications;
use practices::practices;
use profiles::profiles;
use progress::progress_and_paths;

/// The repository under test, whichever it is.
type Repo = Arc<dyn Repository>;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(std::sync::Arc::new(kasama::InMemoryRepository::new())).await;
                }
            )*
        }
        /// The same behaviour through the read-through cache: caching must not change
        /// what any call returns.
        mod cached {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(std::sync::Arc::new(kasama::CachedRepository::new(
                        kasama::InMemoryRepository::new(),
                        kasama::MemoryCache::new(),
                        std::time::Duration::from_secs(300),
                    )))
                    .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::common::pg().await else { return };
                    super::$name(std::sync::Arc::new(db.repo.clone())).await;
                    db.finish().await;
                }
            )*
        }
        /// Through the cache again, the cache being Redis (a fresh key prefix per test,
        /// as one deployment each).
        #[cfg(feature = "redis")]
        mod redis_cached {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(std::sync::Arc::new(kasama::CachedRepository::new(
                        kasama::InMemoryRepository::new(),
                        crate::redis_cache().await,
                        std::time::Duration::from_secs(300),
                    )))
                    .await;
                }
            )*
        }
        /// PostgreSQL behind a Redis cache: the set-up of several app instances.
        #[cfg(feature = "redis")]
        mod postgres_redis_cached {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::common::pg().await else { return };
                    super::$name(std::sync::Arc::new(kasama::CachedRepository::new(
                        db.repo.clone(),
                        crate::redis_cache().await,
                        std::time::Duration::from_secs(300),
                    )))
                    .await;
                    db.finish().await;
                }
            )*
        }
    };
}

conformance!(
    profiles,
    assessments,
    practices,
    goals,
    progress_and_paths,
    notifications,
    interactions,
    statistics,
    recommendations,
    cost_analysis,
    system_health,
    bad_input,
    isolation,
    erase,
    conversations,
    conversation_bad_input,
    conversation_isolation,
);

/// Defence in depth: the isolation suite again, on a role for which row-level
/// security does not apply (`BYPASSRLS`, with the explicit opt-out). The repository's
/// own filters must keep users apart on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_holds_where_rls_does_not_apply() {
    let Some(db) = common::pg().await else { return };
    let repo = db.bypass_repo();
    // First prove RLS is off for this role: scoped as nobody, it still sees a row.
    let a = user(&(Arc::new(repo.clone()) as Repo), 7).await;
    let raw = common::connect(
        &db.app_config()
            .url
            .replace(common::APP_LOGIN, common::BYPASS_LOGIN),
    )
    .await
    .unwrap();
    raw.batch_execute("SELECT set_config('app.user_id', '', false)")
        .await
        .unwrap();
    let seen: i64 = raw
        .query_one("SELECT count(*) FROM profiles WHERE id = $1", &[&a.0])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1, "the bypass role must really bypass RLS");
    isolation(Arc::new(repo.clone())).await;
    conversation_isolation(Arc::new(repo)).await;
    db.finish().await;
}

/// A `RedisCache` on the local Redis under a key prefix no other test uses; fails
/// (never skips) when Redis is not there.
#[cfg(feature = "redis")]
async fn redis_cache() -> kasama::RedisCache {
    assert!(
        tokio::net::TcpStream::connect("127.0.0.1:6379")
            .await
            .is_ok(),
        "the redis_cached suites need Redis on 127.0.0.1:6379"
    );
    kasama::RedisCache::builder("redis://127.0.0.1:6379")
        .prefix(format!("kasama-conf-{}", uuid::Uuid::new_v4().simple()))
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap()
}

// ---- Helpers the parts share ----

/// The service actor (the backend itself, not a user).
const S: Actor = Actor::Service;

/// `y-m-d h:00:00` UTC.
fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

/// A new user with a profile (`n` only tells users apart in their email and name).
async fn user(repo: &Repo, n: u32) -> UserId {
    let id = UserId::new();
    repo.create_profile(
        S,
        NewProfile::new(id, format!("user{n}-{id}@example.com"), format!("User {n}")),
    )
    .await
    .unwrap();
    id
}

/// The field an `InvalidInput` error names; panics on any other error.
fn field(e: Error) -> String {
    match e {
        Error::InvalidInput { field, .. } => field.into_owned(),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

/// A catalogue practice of 15 minutes, created by the service.
async fn practice(
    repo: &Repo,
    title: &str,
    category: &str,
    d: DifficultyLevel,
    tags: &[&str],
) -> Practice {
    repo.create_practice(
        S,
        NewPractice {
            title: title.into(),
            description: format!("{title}: a practice for couples"),
            category: category.into(),
            difficulty: d,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            duration_minutes: 15,
        },
    )
    .await
    .unwrap()
}

/// A practice session of `user` logged at `t`; completed at `t` when `done`.
fn entry(user: UserId, p: PracticeId, t: DateTime<Utc>, minutes: i32, done: bool) -> NewProgress {
    NewProgress {
        completed: done,
        completed_at: done.then_some(t),
        created_at: Some(t),
        ..NewProgress::practice(user, p, minutes)
    }
}

/// A successful interaction of `user` with `agent` costing `cost` n$, at `t` (`None`:
/// now).
fn interaction(
    user: UserId,
    agent: AgentType,
    cost: i64,
    t: Option<DateTime<Utc>>,
) -> NewAiInteraction {
    NewAiInteraction {
        id: None,
        user_id: user,
        agent_type: agent,
        model: "gpt-4o-mini".into(),
        input: json!({"q": "How do I listen better?"}),
        output: json!({"a": "Reflect back what you heard."}),
        input_tokens: 100,
        output_tokens: 50,
        cost_nanos: cost,
        saved_nanos: 0,
        latency_ms: 100,
        cache_hit: false,
        success: true,
        created_at: t,
    }
}
