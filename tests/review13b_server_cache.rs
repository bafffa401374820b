//! Review of issue 13 item 5, the example server's composition: the repository is
//! `CachedRepository<MeteredRepository<_>, RedisCache>` when `REDIS_URL` is set.
//! Three "instances" (three routers, each its own `RedisCache` client and its own
//! plan cache in the authenticator) over one repository (as one database) and one
//! Redis. The authenticator reads the caller's plan through the cached repository;
//! a plan the service changed on instance 1 must be the one a fresh instance uses for
//! the rate limit, and the profile route must show it on every instance.
//!
//! Needs Redis on 127.0.0.1:6379 (fails without it); a fresh key prefix; requests go
//! through `tower::ServiceExt::oneshot` (no sockets); real time (a real Redis), no
//! duration asserted.
#![cfg(all(feature = "server", feature = "metrics-facade", feature = "redis"))]

use std::sync::Arc;
use std::time::Duration;

use kasama::RedisCache;
use kasama::cache::CachedRepository;
use kasama::metrics::InMemoryMetrics;
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime};
use kasama::repository::MeteredRepository;
use kasama::server::{WsSockets, router};

mod common;

use common::ws::{HOUR, app_state, call, tok};

fn instance(repo: &Arc<InMemoryRepository>, prefix: &str) -> axum::Router {
    let cache = RedisCache::builder("redis://127.0.0.1:6379")
        .prefix(prefix)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let metered = MeteredRepository::new(repo.clone(), Arc::new(InMemoryMetrics::new()));
    let cached: Arc<dyn Repository> = Arc::new(CachedRepository::new(
        metered,
        cache,
        Duration::from_secs(300),
    ));
    let state = app_state(
        cached,
        Arc::new(MemoryRealtime::new(Hub::new(16))),
        WsSockets::with_defaults(),
    );
    router(state)
}

#[tokio::test]
async fn a_plan_changed_on_one_instance_is_the_plan_on_the_others() {
    assert!(
        tokio::net::TcpStream::connect("127.0.0.1:6379")
            .await
            .is_ok(),
        "this test needs Redis on 127.0.0.1:6379"
    );
    let prefix = format!("review13b-srv-{}", uuid::Uuid::new_v4().simple());
    let repo = Arc::new(InMemoryRepository::new());
    let two = instance(&repo, &prefix);
    let u = UserId::new();
    repo.create_profile(Actor::Service, NewProfile::new(u, "p@example.com", "P"))
        .await
        .unwrap();
    let t = tok(u, HOUR);

    // Instance 2 serves the free user (and caches the profile in Redis).
    let (s, _, body) = call(&two, "GET", "/api/profile", Some(&t)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["subscription_tier"], "free", "{body}");

    // The service upgrades the plan through instance 1's repository.
    let upgrade = ProfileUpdate {
        subscription_tier: Some(SubscriptionTier::Premium),
        ..ProfileUpdate::default()
    };
    // Instance 1: the service's side (a billing hook), same Redis and prefix.
    let one = {
        let cache = RedisCache::builder("redis://127.0.0.1:6379")
            .prefix(&prefix)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        CachedRepository::new(repo.clone(), cache, Duration::from_secs(300))
    };
    one.update_profile(Actor::Service, u, upgrade)
        .await
        .unwrap();

    // Instance 2's profile route shows the new plan at once.
    let (s, _, body) = call(&two, "GET", "/api/profile", Some(&t)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["subscription_tier"], "premium", "{body}");

    // A fresh instance reads the plan through the shared cache: the premium burst
    // (60 by default) admits 40 requests in a row, the free one (30) would not.
    let three = instance(&repo, &prefix);
    let mut refused = 0;
    for _ in 0..40 {
        let (s, _, _) = call(&three, "GET", "/api/profile", Some(&t)).await;
        if s == 429 {
            refused += 1;
        } else {
            assert_eq!(s, 200);
        }
    }
    assert_eq!(
        refused, 0,
        "a fresh instance limited the upgraded user on the free plan"
    );
}
