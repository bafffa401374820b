//! Issue 15's break-it review, kept as regression tests: paying users are never held to
//! the free limit while their plan is unknown (no cache, or evicted), creating a profile
//! is rate limited before the database, a rate-limit document that loads never panics
//! when used, and `validate::json` bounds nesting without overflowing a stack (and the
//! stores agree on deep documents). Each failed before its fix.
#![cfg(all(feature = "server", feature = "metrics-facade"))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use kasama::agent::SimulatedAgent;
use kasama::metrics::{MetricEvent, MetricsSink};
use kasama::pipeline::{AiPipeline, RateLimitConfig};
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime};
use kasama::repository::MeteredRepository;
use kasama::server::{AppState, AuthConfig, WsSockets, router_with};
use serde_json::{Value, json};

use common::ws::{HOUR, app_state_limited, call, jwt};

/// Counts every repository call (through `MeteredRepository`).
#[derive(Default)]
struct DbCalls(AtomicU64);

impl MetricsSink for DbCalls {
    fn record(&self, e: &MetricEvent) {
        if let MetricEvent::Database { .. } = e {
            self.0.fetch_add(1, SeqCst);
        }
    }
}

struct Rig {
    state: AppState,
    app: axum::Router,
    calls: Arc<DbCalls>,
}

fn rig(auth: AuthConfig) -> Rig {
    let calls = Arc::new(DbCalls::default());
    let repo: Arc<dyn Repository> = Arc::new(MeteredRepository::new(
        InMemoryRepository::new(),
        calls.clone(),
    ));
    let state = app_state_limited(
        repo,
        Arc::new(MemoryRealtime::new(Hub::new(16))),
        WsSockets::with_defaults(),
        RateLimitConfig::default(),
    );
    Rig {
        app: router_with(state.clone(), auth),
        state,
        calls,
    }
}

impl Rig {
    async fn user(&self, tier: SubscriptionTier) -> UserId {
        let u = UserId::new();
        let mut p = NewProfile::new(u, format!("{u}@example.com"), "U");
        p.subscription_tier = tier;
        self.state
            .repo
            .create_profile(Actor::Service, p)
            .await
            .unwrap();
        u
    }

    async fn send(&self, method: &str, path: &str, tok: &str) -> u16 {
        call(&self.app, method, path, Some(tok)).await.0
    }
}

/// Problem 1a. `AuthConfig::tier_ttl = 0` ("no caching") makes every request a cache
/// miss, and each miss is first charged to the FREE plan's limiter: a premium user is
/// then held to the free plan's burst (30) instead of premium's (60) — a wrong 429.
#[tokio::test(start_paused = true)]
async fn review15_a_premium_user_is_not_held_to_the_free_limit_when_the_tier_is_not_cached() {
    let r = rig(AuthConfig {
        tier_ttl: Duration::ZERO,
        ..AuthConfig::default()
    });
    let u = r.user(SubscriptionTier::Premium).await;
    let t = jwt().token(u, HOUR);
    for i in 0..60 {
        assert_eq!(
            r.send("GET", "/api/goals", &t).await,
            200,
            "premium request {i} (premium's burst is 60; free's is 30)"
        );
    }
}

/// Problem 1b. The same with caching on, once more users are active than the cache
/// holds (`tier_cache_capacity`; here 1 with two users taking turns): every request is
/// a miss, charged to the free limiter first, so premium users get free's burst.
#[tokio::test(start_paused = true)]
async fn review15_premium_users_evicted_from_the_tier_cache_keep_their_premium_limit() {
    let r = rig(AuthConfig {
        tier_cache_capacity: 1,
        ..AuthConfig::default()
    });
    let a = r.user(SubscriptionTier::Premium).await;
    let b = r.user(SubscriptionTier::Premium).await;
    let (ta, tb) = (jwt().token(a, HOUR), jwt().token(b, HOUR));
    for i in 0..60 {
        assert_eq!(
            r.send("GET", "/api/goals", &ta).await,
            200,
            "a's request {i}"
        );
        assert_eq!(
            r.send("GET", "/api/goals", &tb).await,
            200,
            "b's request {i}"
        );
    }
}

/// Problem 1c. `POST /api/profile` skips the layer's rate limit (only the token is
/// checked), so one valid token can send unlimited requests that each reach the
/// database (a write attempt: 409 after the first) — against "no request reaches the
/// database before a limit has admitted it". Now that a user without a profile is
/// simply on the free plan, the free limit could guard this route too.
#[tokio::test(start_paused = true)]
async fn review15_profile_creation_is_rate_limited_before_the_database() {
    let r = rig(AuthConfig::default());
    let t = jwt().token(UserId::new(), HOUR);
    let mut statuses = Vec::new();
    for _ in 0..200 {
        statuses.push(r.send("POST", "/api/profile", &t).await);
    }
    let db = r.calls.0.load(SeqCst);
    assert!(
        statuses.contains(&429),
        "200 POSTs of one user were never limited ({} reached the database); statuses: {:?}",
        db,
        &statuses[..5]
    );
    // The free plan's burst of 30 creations, and one plan lookup (none yet: free).
    assert!(
        db <= 31,
        "{db} database calls for one free user's 200 requests"
    );
}

/// A deep JSON value (`[[[…1…]]]`, `depth` arrays) and its compact size.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// Runs `f` on a thread with a 256 MiB stack (building and dropping a deep `Value` is
/// recursive; that is not what these tests look at).
fn on_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// Problem 5a. `validate::json` passes a 40 KB document nested 20,000 deep (under the
/// 64 KiB limit, no NUL), the in-memory store keeps it, but PostgreSQL's jsonb refuses
/// it ("stack depth limit exceeded", SQLSTATE 54001, with the default 2 MB
/// max_stack_depth): the two stores disagree and the PostgreSQL caller gets a
/// backend error (502 over HTTP), not `InvalidInput`. A depth limit in
/// `validate::json` (e.g. 128, serde_json's own parse limit) would refuse it in both.
#[test]
fn review15_a_deeply_nested_document_is_invalid_input_on_postgresql_too() {
    on_big_stack(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_stack_size(256 << 20)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let Some(db) = common::pg().await else { return };
                let deep = nested(20_000);
                assert!(serde_json::to_string(&deep).unwrap().len() < 64 * 1024);
                let u = UserId::new();
                let mut p = NewProfile::new(u, format!("{u}@example.com"), "U");
                p.preferences = deep;
                let mem = InMemoryRepository::new()
                    .create_profile(Actor::User(u), p.clone())
                    .await;
                let pg = db.repo.create_profile(Actor::User(u), p).await;
                let pg_kind = pg.as_ref().map(|_| "ok").map_err(|e| e.kind());
                let mem_kind = mem.as_ref().map(|_| "ok").map_err(|e| e.kind());
                db.finish().await;
                assert_eq!(
                    pg_kind, mem_kind,
                    "memory and PostgreSQL disagree on a 20,000-deep document: pg {pg:?}"
                );
                assert_eq!(
                    pg_kind,
                    Err("invalid_input"),
                    "a document jsonb cannot hold should be refused as invalid input"
                );
            })
    });
}

/// Problem 5b (child): `validate::json` serialises recursively; on an ordinary 2 MiB
/// thread (tokio's worker default) a document deep enough but under 64 KiB overflows
/// the stack and aborts the whole process.
#[test]
#[ignore = "run by review15_validate_json_does_not_overflow_the_stack in a child process"]
fn review15_child_validate_deep_on_2mib_stack() {
    let deep = on_big_stack(|| nested(30_000));
    let deep = Arc::new(deep);
    let d = deep.clone();
    let r = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || kasama::domain::validate::json("data", &d).is_ok())
        .unwrap()
        .join()
        .unwrap();
    println!("validate returned ok={r}");
    // Drop the deep value on a big stack.
    on_big_stack(move || drop(deep));
}

/// Problem 5b. See the child above: the process must not die.
#[test]
fn review15_validate_json_does_not_overflow_the_stack() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "review15_child_validate_deep_on_2mib_stack",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "validate::json on a 30,000-deep value (60 KB) crashed the process: {:?}\n{}",
        out.status,
        stderr.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
}

/// Problem 3. A rate-limit document that deserialises (feature `config`) but panics
/// when the limits are built (`AiPipeline::builder(..).build()` → `RateLimits::new` →
/// governor): a period over 584 years ("Duration is longer than 584 years"), or a
/// period × (burst − 1) past u64 nanoseconds (`Nanos * u64` overflows: a panic in
/// debug, a wrapped, wrong tolerance in release). `RateLimitConfig` has no
/// `validate()`; the quota reader checks only a zero period.
#[cfg(feature = "config")]
#[tokio::test]
async fn review15_a_rate_limit_document_that_loads_does_not_panic_when_used() {
    let mut panicked = Vec::new();
    for doc in [
        r#"{"api_per_user": {"free": {"rate": 1, "per": "600years"}}}"#,
        r#"{"ai_per_user": {"premium": {"rate": 1, "per": "1year", "burst": 1000}}}"#,
    ] {
        let Ok(c) = serde_json::from_str::<RateLimitConfig>(doc) else {
            continue; // refused at load: fine
        };
        let built = std::panic::catch_unwind(move || {
            AiPipeline::builder(Arc::new(InMemoryRepository::new()))
                .backend(Arc::new(SimulatedAgent::instant("sim")))
                .rate_limits(c)
                .build()
                .map(|_| ())
        });
        if built.is_err() {
            panicked.push(doc);
        }
    }
    assert!(
        panicked.is_empty(),
        "loaded as a RateLimitConfig, then building the pipeline panicked: {panicked:#?}"
    );
}

/// Probe for item 6 (PASSES: no disagreement found): the analytics of memory and PostgreSQL compared exactly on cases
/// the conformance suite does not choose — a user with no rows at all, a user whose
/// every interaction failed (zero cost, equal-cost agents tied, one second before
/// midnight UTC and at midnight), and the statistics of a user with no progress.
#[tokio::test]
async fn review15_probe_analytics_agree_on_empty_and_all_failed_users() {
    use chrono::TimeZone;
    let Some(db) = common::pg().await else { return };
    let mem: Arc<dyn Repository> = Arc::new(InMemoryRepository::new());
    let pg: Arc<dyn Repository> = Arc::new(db.repo.clone());
    let t = |d, h, m, s| chrono::Utc.with_ymd_and_hms(2026, 3, d, h, m, s).unwrap();
    let range = Some(DateRange {
        from: t(1, 0, 0, 0),
        to: t(3, 0, 0, 0),
    });
    let mut out = Vec::new();
    for repo in [&mem, &pg] {
        let (empty, failed) = (UserId::new(), UserId::new());
        for u in [empty, failed] {
            repo.create_profile(Actor::Service, NewProfile::new(u, format!("{u}@x.io"), "U"))
                .await
                .unwrap();
        }
        let row = |agent, at| NewAiInteraction {
            id: None,
            user_id: failed,
            agent_type: agent,
            model: "m".into(),
            input: json!({}),
            output: json!({}),
            input_tokens: 0,
            output_tokens: 0,
            cost_nanos: 0,
            saved_nanos: 0,
            latency_ms: 7,
            cache_hit: false,
            success: false,
            created_at: Some(at),
        };
        repo.record_interactions(
            Actor::Service,
            &[
                row(AgentType::LearningCoach, t(1, 23, 59, 59)),
                row(AgentType::InsightGenerator, t(2, 0, 0, 0)),
                row(AgentType::CommunicationAdvisor, t(2, 23, 59, 59)),
            ],
        )
        .await
        .unwrap();
        let mut v = Vec::new();
        for u in [empty, failed] {
            let mut c = serde_json::to_value(
                repo.ai_cost_analysis(Actor::User(u), Some(u), range)
                    .await
                    .unwrap(),
            )
            .unwrap();
            c["user_id"] = Value::Null;
            let mut s = serde_json::to_value(
                repo.user_statistics(Actor::User(u), u, range)
                    .await
                    .unwrap(),
            )
            .unwrap();
            s["user_id"] = Value::Null;
            v.push((c, s));
        }
        out.push(v);
    }
    db.finish().await;
    assert_eq!(
        out[0], out[1],
        "memory (left) and PostgreSQL (right) disagree"
    );
}
