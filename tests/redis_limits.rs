//! `RedisRateLimits` against a real Redis (the local one on 127.0.0.1:6379, and a
//! throwaway `redis-server` this test starts and stops): three limiters with separate
//! memory share one allowance; a refusal uses up nothing of the global allowance;
//! when Redis goes away checks fall back to the local limits at once and report it,
//! and go back to Redis when it returns; the URL's password never shows.
//!
//! Real time, not tokio's paused clock: the limiter talks to a real server (a paused
//! clock would fire its timeouts while the runtime waits on the socket). No figure
//! here depends on how long anything takes, except that each test runs well within
//! the quotas' intervals (12 s and more).
#![cfg(feature = "redis")]

use std::num::NonZeroU32;
use std::time::Duration;

use kasama::pipeline::{Quota, RateLimitConfig, RedisRateLimits, TierQuotas};
use kasama::prelude::*;

mod common;

use common::redis::{Throwaway, free_port, fresh_prefix, require_redis};

const REDIS: &str = "redis://127.0.0.1:6379";

fn per_minute(n: u32, burst: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap()).allow_burst(NonZeroU32::new(burst).unwrap())
}

/// Free users: 5 AI calls a minute (bursts of 5) and 3 API requests; everything else
/// unlimited.
fn config() -> RateLimitConfig {
    let mut c = RateLimitConfig::unlimited();
    c.ai_per_user = TierQuotas {
        free: per_minute(5, 5),
        ..c.ai_per_user
    };
    c.api_per_user = TierQuotas {
        free: per_minute(3, 3),
        ..c.api_per_user
    };
    c
}

#[tokio::test]
async fn three_instances_share_one_allowance() {
    require_redis().await;
    let prefix = fresh_prefix();
    let instances: Vec<_> = (0..3)
        .map(|_| RedisRateLimits::new(REDIS, &prefix, config()).unwrap())
        .collect();
    let u = UserId::new();
    let mut admitted = 0;
    for i in 0..15 {
        match instances[i % 3].check_ai(u, SubscriptionTier::Free).await {
            Ok(()) => admitted += 1,
            Err(Error::RateLimited { retry_after }) => {
                assert!(
                    retry_after > Duration::ZERO && retry_after <= Duration::from_secs(12),
                    "{retry_after:?}"
                );
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(admitted, 5, "one allowance across three instances");
    let api: usize = {
        let mut n = 0;
        for i in 0..9 {
            n += usize::from(
                instances[i % 3]
                    .check_api(u, SubscriptionTier::Free)
                    .await
                    .is_ok(),
            );
        }
        n
    };
    assert_eq!(api, 3);
    // Another user has their own allowance.
    let v = UserId::new();
    assert!(
        instances[2]
            .check_ai(v, SubscriptionTier::Free)
            .await
            .is_ok()
    );
    for l in &instances {
        let s = l.status();
        assert!(!s.degraded && s.fallbacks == 0 && s.shared > 0, "{s:?}");
    }
}

#[tokio::test]
async fn a_refusal_uses_up_nothing_of_the_global_allowance() {
    require_redis().await;
    let prefix = fresh_prefix();
    let mut c = config();
    c.global_ai = per_minute(3, 3);
    c.ai_per_user.free = per_minute(1, 1);
    let a = RedisRateLimits::new(REDIS, &prefix, c).unwrap();
    let b = RedisRateLimits::new(REDIS, &prefix, c).unwrap();
    let first = UserId::new();
    assert!(a.check_ai(first, SubscriptionTier::Free).await.is_ok());
    for _ in 0..5 {
        assert!(b.check_ai(first, SubscriptionTier::Free).await.is_err());
    }
    // Five refusals later the global allowance still has two calls.
    assert!(
        a.check_ai(UserId::new(), SubscriptionTier::Free)
            .await
            .is_ok()
    );
    assert!(
        b.check_ai(UserId::new(), SubscriptionTier::Free)
            .await
            .is_ok()
    );
    let e = a.check_ai(UserId::new(), SubscriptionTier::Free).await;
    assert!(matches!(e, Err(Error::RateLimited { .. })), "{e:?}");
}

#[tokio::test]
async fn when_redis_goes_away_checks_fall_back_at_once_and_come_back() {
    let port = free_port();
    let server = Throwaway::start(port);
    server.wait_ready().await;
    let url = format!("redis://127.0.0.1:{port}");
    let l = RedisRateLimits::new(&url, &fresh_prefix(), config())
        .unwrap()
        .timeout(Duration::from_millis(200))
        .cooldown(Duration::from_millis(50));
    let u = UserId::new();
    assert!(l.check_api(u, SubscriptionTier::Free).await.is_ok());
    assert!(!l.status().degraded);
    assert_eq!(l.status().shared, 1);

    drop(server);
    // Requests keep flowing under this instance's own limits (3 API requests), and
    // none waits on the dead server for long.
    let v = UserId::new();
    let mut admitted = 0;
    for _ in 0..6 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            l.check_api(v, SubscriptionTier::Free),
        )
        .await
        .expect("a check never hangs on a dead Redis");
        match r {
            Ok(()) => admitted += 1,
            Err(Error::RateLimited { .. }) => {}
            Err(e) => panic!("a Redis failure reached the caller: {e:?}"),
        }
    }
    assert_eq!(admitted, 3, "the local limits apply while Redis is away");
    let s = l.status();
    assert!(s.degraded && s.fallbacks >= 6, "{s:?}");
    assert!(s.last_error.is_some());

    let server = Throwaway::start(port);
    server.wait_ready().await;
    let w = UserId::new();
    let mut back = false;
    for _ in 0..100 {
        let _ = l.check_api(w, SubscriptionTier::Free).await;
        if !l.status().degraded {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "back to shared limits once Redis answers: {:?}",
        l.status()
    );
    let shared = l.status().shared;
    let _ = l.check_api(UserId::new(), SubscriptionTier::Free).await;
    assert_eq!(l.status().shared, shared + 1);
}

#[tokio::test]
async fn the_password_never_shows() {
    require_redis().await;
    // The local Redis has no password: AUTH fails, which must not quote it either.
    let l = RedisRateLimits::new(
        "redis://:s3cret-pw@127.0.0.1:6379",
        &fresh_prefix(),
        config(),
    )
    .unwrap();
    let _ = l.check_api(UserId::new(), SubscriptionTier::Free).await;
    let shown = format!("{l:?} {:?}", l.status());
    assert!(!shown.contains("s3cret"), "{shown}");
}

/// Two pipelines with separate memory, as two instances of a host's server, sharing
/// their AI limit through Redis: a free user spraying requests across both gets one
/// allowance (5 a minute), not two.
#[tokio::test]
async fn two_pipelines_share_one_ai_allowance() {
    use std::sync::Arc;

    use kasama::agent::{AiRequest, SimulatedAgent};
    use kasama::pipeline::{AiPipeline, BatchConfig, Budgets};

    require_redis().await;
    let prefix = fresh_prefix();
    let repo = common::pipeline::memory();
    let u = common::pipeline::users(&repo, 1).await[0];
    let pipeline = || {
        AiPipeline::builder(repo.clone())
            .backend(Arc::new(SimulatedAgent::instant("sim")))
            .budgets(Budgets::unlimited())
            .batching(BatchConfig {
                window: Duration::ZERO,
                ..BatchConfig::default()
            })
            .shared_rate_limits(Arc::new(
                RedisRateLimits::new(REDIS, &prefix, config()).unwrap(),
            ))
            .build()
            .unwrap()
    };
    let (a, b) = (pipeline(), pipeline());
    let mut answered = 0;
    for i in 0..12 {
        let req = AiRequest::new(u, AgentType::LearningCoach, format!("question {i}"));
        let p = if i % 2 == 0 { &a } else { &b };
        match p.complete(req, SubscriptionTier::Free).await {
            Ok(_) => answered += 1,
            Err(Error::RateLimited { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(answered, 5, "one allowance across both instances");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Two servers with separate memory, as two instances behind a load balancer,
/// sharing their limits through Redis: a free user's API requests spread over both
/// get one allowance (3 a minute), not two.
#[cfg(feature = "server")]
#[tokio::test]
async fn two_servers_share_one_api_allowance() {
    use std::sync::Arc;

    use kasama::realtime::{Hub, MemoryRealtime};
    use kasama::server::{JwtConfig, WsConfig, WsSockets, router};

    require_redis().await;
    let prefix = fresh_prefix();
    let repo = common::pipeline::memory();
    let u = common::pipeline::users(&repo, 1).await[0];
    let server = || {
        let shared = Arc::new(RedisRateLimits::new(REDIS, &prefix, config()).unwrap());
        router(common::ws::app_state_with(
            repo.clone(),
            Arc::new(MemoryRealtime::new(Hub::new(16))),
            WsSockets::new(WsConfig::default()).unwrap(),
            |b| b.rate_limits(config()).shared_rate_limits(shared),
        ))
    };
    let (a, b) = (server(), server());
    let token = JwtConfig::new(common::ws::SECRET).unwrap().token_with_tier(
        u,
        SubscriptionTier::Free,
        common::ws::HOUR,
    );
    let mut codes = Vec::new();
    for i in 0..8 {
        let app = if i % 2 == 0 { &a } else { &b };
        let (status, _, _) = common::ws::call(app, "GET", "/api/goals", Some(&token)).await;
        codes.push(status);
    }
    assert_eq!(
        codes.iter().filter(|c| **c == 200).count(),
        3,
        "one allowance across both servers: {codes:?}"
    );
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
}

/// The shared-limits check of one evaluation of `monitor`.
async fn shared_limits_check(
    monitor: &kasama::health::HealthMonitor,
) -> kasama::health::CheckStatus {
    let report = monitor.evaluate().await;
    report
        .checks
        .into_iter()
        .find(|c| c.check == kasama::health::Check::SharedLimits)
        .expect("reported")
}

/// The health check reports shared limits that fell back to per-instance limits as
/// critical (and raises an alert), and healthy while Redis answers.
#[tokio::test]
async fn health_reports_shared_limits_that_fell_back() {
    use std::sync::Arc;

    use kasama::health::{Check, HealthMonitor, Status};
    use kasama::metrics::InMemoryMetrics;

    require_redis().await;
    let ok = Arc::new(RedisRateLimits::new(REDIS, &fresh_prefix(), config()).unwrap());
    ok.check_api(UserId::new(), SubscriptionTier::Free)
        .await
        .unwrap();
    let monitor = HealthMonitor::new(Arc::new(InMemoryMetrics::new())).with_shared_limits(ok);
    let c = shared_limits_check(&monitor).await;
    assert_eq!(c.status, Status::Healthy);

    // Nothing listens on the port: every check falls back.
    let dead = Arc::new(
        RedisRateLimits::new(
            &format!("redis://127.0.0.1:{}", free_port()),
            &fresh_prefix(),
            config(),
        )
        .unwrap(),
    );
    assert!(
        dead.check_api(UserId::new(), SubscriptionTier::Free)
            .await
            .is_ok()
    );
    let monitor =
        HealthMonitor::new(Arc::new(InMemoryMetrics::new())).with_shared_limits(dead.clone());
    let mut alerts = monitor.subscribe();
    let c = shared_limits_check(&monitor).await;
    assert_eq!(c.status, Status::Critical, "{c:?}");
    assert!(
        c.recommendation
            .as_deref()
            .is_some_and(|r| r.contains("own rate limits")),
        "{c:?}"
    );
    let alert = alerts.try_recv().expect("an alert was raised");
    assert_eq!(alert.check, Check::SharedLimits);
}
