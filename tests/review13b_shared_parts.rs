//! Review of issue 13 item 5: `SharedParts::connect` from configuration. It must not
//! panic or hang whatever the configuration and the state of the servers, and must
//! never show a URL's password. Redis "down" is a free port nobody listens on; the
//! database URL points at a closed port too (nothing is reached before first use).
//! Real time (real sockets); the only duration is a 5 s guard against hangs.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use kasama::cache::CachedRepository;
use kasama::pipeline::{RateLimitConfig, SharedConfig, SharedParts};
use kasama::prelude::*;

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_only(url: String) -> SharedConfig {
    SharedConfig {
        redis_url: Some(url),
        ..SharedConfig::default()
    }
}

/// `connect` is a plain (not async) function, so a host may well call it while
/// assembling its configuration, before a runtime runs. `RedisCache::build` already
/// answers that with a `Config` error; the rate limiter built just before it
/// (`RedisRateLimits::new`, whose connection manager starts a task) must not panic.
#[test]
fn connect_with_redis_outside_a_runtime_is_an_error_not_a_panic() {
    let config = redis_only("redis://127.0.0.1:6379".into());
    let r = std::panic::catch_unwind(|| {
        SharedParts::connect(&config, None, RateLimitConfig::default()).map(|_| ())
    });
    match r {
        Ok(Err(e)) => assert!(matches!(e, Error::Config { .. }), "{e:?}"),
        Ok(Ok(())) => {}
        Err(_) => panic!("SharedParts::connect with REDIS_URL panicked outside a Tokio runtime"),
    }
}

/// The same with `DATABASE_URL`: the semantic store's listener is started in the
/// background; outside a runtime that must be an error, not a panic.
#[test]
fn connect_with_a_database_outside_a_runtime_is_an_error_not_a_panic() {
    let config = SharedConfig {
        database_url: Some(format!(
            "postgres://kasama_test_login@127.0.0.1:{}/x",
            closed_port()
        )),
        ..SharedConfig::default()
    };
    let r = std::panic::catch_unwind(|| {
        SharedParts::connect(&config, None, RateLimitConfig::default()).map(|_| ())
    });
    match r {
        Ok(Err(e)) => assert!(matches!(e, Error::Config { .. }), "{e:?}"),
        Ok(Ok(())) => {}
        Err(_) => {
            panic!("SharedParts::connect with DATABASE_URL panicked outside a Tokio runtime")
        }
    }
}

/// Redis down at start: `connect` returns at once, and a `CachedRepository` over the
/// shared query cache keeps answering reads and writes from the repository.
#[tokio::test]
async fn redis_down_at_start_neither_hangs_nor_stops_requests() {
    let config = redis_only(format!("redis://127.0.0.1:{}", closed_port()));
    let parts = SharedParts::connect(&config, None, RateLimitConfig::default()).unwrap();
    let cache = parts
        .query_cache
        .clone()
        .expect("a query cache with REDIS_URL");
    let repo = Arc::new(InMemoryRepository::new());
    let cached = CachedRepository::new(repo.clone(), cache, Duration::from_secs(300));
    let u = UserId::new();
    let me = Actor::User(u);
    let guard = Duration::from_secs(5);
    tokio::time::timeout(guard, async {
        cached
            .create_profile(me, NewProfile::new(u, "d@example.com", "D"))
            .await
            .unwrap();
        assert_eq!(cached.get_profile(me, u).await.unwrap().display_name, "D");
        let upd = ProfileUpdate {
            display_name: Some("E".into()),
            ..ProfileUpdate::default()
        };
        cached.update_profile(me, u, upd).await.unwrap();
        assert_eq!(cached.get_profile(me, u).await.unwrap().display_name, "E");
    })
    .await
    .expect("no request hangs on a Redis that is down");
    assert!(
        parts.query_cache.unwrap().errors() > 0,
        "the failures are counted"
    );
}

/// Passwords in either URL never show: not in `SharedConfig`'s or `SharedParts`'
/// `Debug`, not in an error for a URL that cannot be used.
#[tokio::test]
async fn passwords_never_show_in_debug_or_errors() {
    let secret = "hunter2-review13b";
    let good = SharedConfig {
        database_url: Some(format!(
            "postgres://kasama_test_login:{secret}@127.0.0.1:{}/x",
            closed_port()
        )),
        redis_url: Some(format!("redis://:{secret}@127.0.0.1:{}", closed_port())),
        redis_prefix: String::new(),
    };
    assert!(!format!("{good:?}").contains(secret));
    let parts = SharedParts::connect(&good, None, RateLimitConfig::default()).unwrap();
    assert!(!format!("{parts:?}").contains(secret), "{parts:?}");
    if let Some(c) = &parts.query_cache {
        use kasama::cache::Cache;
        let e = c.get("k").await.unwrap_err();
        assert!(!format!("{e} {e:?}").contains(secret), "{e:?}");
        assert!(!c.last_error().unwrap_or_default().contains(secret));
    }
    for bad in [
        SharedConfig {
            redis_url: Some(format!("redis://:{secret}@127.0.0.1:notaport")),
            ..SharedConfig::default()
        },
        SharedConfig {
            redis_url: Some(format!("http://:{secret}@127.0.0.1:6379")),
            ..SharedConfig::default()
        },
        SharedConfig {
            database_url: Some(format!("postgres://u:{secret}@127.0.0.1:notaport/x")),
            ..SharedConfig::default()
        },
        SharedConfig {
            database_url: Some(format!(
                "postgres://u:{secret}@127.0.0.1:5432/x?sslmode=bogus"
            )),
            ..SharedConfig::default()
        },
    ] {
        match SharedParts::connect(&bad, None, RateLimitConfig::default()) {
            Ok(p) => assert!(!format!("{p:?}").contains(secret), "{p:?}"),
            Err(e) => assert!(!format!("{e} {e:?}").contains(secret), "{e:?}"),
        }
    }
}

/// An invalid `KASAMA_REDIS_PREFIX` is refused naming the field, not accepted by one
/// shared part and refused by the other.
#[tokio::test]
async fn a_bad_prefix_is_refused_naming_the_prefix() {
    for p in ["has space", "ünï", &"x".repeat(65)] {
        let config = SharedConfig {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            redis_prefix: p.into(),
            ..SharedConfig::default()
        };
        let e = SharedParts::connect(&config, None, RateLimitConfig::default()).unwrap_err();
        assert_eq!(e.invalid_field(), Some("prefix"), "{p:?}: {e:?}");
    }
}
