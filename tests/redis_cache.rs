//! `RedisCache` against a real Redis (the local one on 127.0.0.1:6379, and a
//! throwaway `redis-server` this test starts and stops): the `Cache` contract, the
//! size limit, key prefixes that keep deployments apart, a Redis that goes away
//! (calls fail with `Backend` errors, never hang, and `CachedRepository` answers from
//! the repository) and comes back, and a URL password that never shows.
//!
//! Real time, not tokio's paused clock: the cache talks to a real server. The only
//! durations asserted are "expired 2 s after a 1 s TTL" and "no call outlives a
//! 5 s guard".
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kasama::RedisCache;
use kasama::cache::{Cache, CachedRepository};
use kasama::prelude::*;

mod common;

use common::redis::{Throwaway, free_port, fresh_prefix, require_redis};

const REDIS: &str = "redis://127.0.0.1:6379";

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn cache(prefix: &str) -> RedisCache {
    RedisCache::builder(REDIS)
        .prefix(prefix)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// The raw value under a full key, read with the `redis` crate directly.
async fn raw_get(key: &str) -> Option<Vec<u8>> {
    let client = redis::Client::open(REDIS).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

async fn raw_pttl(key: &str) -> i64 {
    let client = redis::Client::open(REDIS).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn get_set_remove_and_counters() {
    require_redis().await;
    let p = fresh_prefix();
    let c = cache(&p);
    assert_eq!(c.get("k").await.unwrap(), None);
    c.set("k", b("v1"), None).await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), Some(b("v1")));
    c.set("k", b("v2"), None).await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), Some(b("v2")));
    // Binary values survive as they are.
    let bin = Bytes::from(vec![0u8, 255, 10, 13, 0]);
    c.set("bin", bin.clone(), None).await.unwrap();
    assert_eq!(c.get("bin").await.unwrap(), Some(bin));
    assert!(c.remove("k").await.unwrap());
    assert!(!c.remove("k").await.unwrap());
    assert_eq!(c.get("k").await.unwrap(), None);
    // Every key is under the prefix.
    assert_eq!(
        raw_get(&format!("{p}:bin")).await,
        Some(vec![0, 255, 10, 13, 0])
    );
    assert_eq!(raw_get("bin").await, None);
    let s = c.stats();
    assert_eq!((s.hits, s.misses), (3, 2), "{s:?}");
    assert_eq!((s.entries, s.bytes), (0, 0), "not known per instance");
    assert_eq!(c.errors(), 0);
    assert_eq!(c.last_error(), None);
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    require_redis().await;
    let p = fresh_prefix();
    let c = RedisCache::builder(REDIS)
        .prefix(&p)
        .default_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    c.set("default", b("v"), None).await.unwrap();
    c.set("short", b("v"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    c.set("long", b("v"), Some(Duration::from_secs(600)))
        .await
        .unwrap();
    // The TTL is Redis' own (SET … PX).
    let pttl = raw_pttl(&format!("{p}:long")).await;
    assert!(pttl > 1_000 && pttl <= 600_000, "{pttl}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.get("default").await.unwrap(), None);
    assert_eq!(c.get("short").await.unwrap(), None);
    assert_eq!(c.get("long").await.unwrap(), Some(b("v")));
    let e = c.set("k", b("v"), Some(Duration::ZERO)).await.unwrap_err();
    assert_eq!(e.invalid_field(), Some("ttl"));
}

#[tokio::test]
async fn a_value_over_the_limit_is_refused() {
    require_redis().await;
    let c = RedisCache::builder(REDIS)
        .prefix(fresh_prefix())
        .max_value_bytes(10)
        .build()
        .unwrap();
    c.set("fits", Bytes::from(vec![1u8; 10]), None)
        .await
        .unwrap();
    let e = c
        .set("big", Bytes::from(vec![1u8; 11]), None)
        .await
        .unwrap_err();
    assert_eq!(e.invalid_field(), Some("value"), "{e:?}");
    assert!(e.to_string().contains("value"), "{e}");
    assert_eq!(c.get("big").await.unwrap(), None);
    assert_eq!(c.get("fits").await.unwrap().map(|v| v.len()), Some(10));
    assert_eq!(c.errors(), 0, "a refusal is not a Redis failure");
}

#[tokio::test]
async fn two_prefixes_do_not_see_each_other() {
    require_redis().await;
    let (a, b2) = (cache(&fresh_prefix()), cache(&fresh_prefix()));
    a.set("k", b("a"), None).await.unwrap();
    assert_eq!(b2.get("k").await.unwrap(), None);
    b2.set("k", b("b"), None).await.unwrap();
    assert_eq!(a.get("k").await.unwrap(), Some(b("a")));
    assert_eq!(b2.get("k").await.unwrap(), Some(b("b")));
    assert!(!b2.remove("other").await.unwrap());
    assert!(b2.remove("k").await.unwrap());
    assert_eq!(a.get("k").await.unwrap(), Some(b("a")));
    // Two clients with the same prefix are one cache (as two instances).
    let p = fresh_prefix();
    let (one, two) = (cache(&p), cache(&p));
    one.set("shared", b("x"), None).await.unwrap();
    assert_eq!(two.get("shared").await.unwrap(), Some(b("x")));
}

/// A call that must end within 5 s whatever Redis does.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("a call never hangs on a dead Redis")
}

fn is_backend(e: &Error) -> bool {
    matches!(e, Error::Backend { .. }) && e.is_retryable()
}

#[tokio::test]
async fn when_redis_goes_away_calls_fail_fast_and_reads_go_to_the_repository() {
    let port = free_port();
    let server = Throwaway::start(port);
    server.wait_ready().await;
    let url = format!("redis://127.0.0.1:{port}");
    let c = Arc::new(
        RedisCache::builder(&url)
            .prefix(fresh_prefix())
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    );
    let repo = Arc::new(InMemoryRepository::new());
    let cached = CachedRepository::new(repo.clone(), c.clone(), Duration::from_secs(300));
    let u = UserId::new();
    let me = Actor::User(u);
    cached
        .create_profile(
            Actor::Service,
            NewProfile::new(u, format!("{u}@example.com"), "A"),
        )
        .await
        .unwrap();
    assert_eq!(cached.get_profile(me, u).await.unwrap().display_name, "A");
    assert_eq!(cached.get_profile(me, u).await.unwrap().display_name, "A");
    assert!(c.stats().hits >= 2, "served from Redis: {:?}", c.stats());
    c.set("k", b("v"), None).await.unwrap();

    drop(server);
    for _ in 0..3 {
        let e = bounded(c.get("k")).await.unwrap_err();
        assert!(is_backend(&e), "{e:?}");
        let e = bounded(c.set("k", b("w"), None)).await.unwrap_err();
        assert!(is_backend(&e), "{e:?}");
        let e = bounded(c.remove("k")).await.unwrap_err();
        assert!(is_backend(&e), "{e:?}");
    }
    assert!(c.errors() >= 9, "{}", c.errors());
    assert!(c.last_error().is_some());
    // The repository still answers, reads and writes alike (a cache failure is a
    // miss), and a write is seen at once.
    assert_eq!(
        bounded(cached.get_profile(me, u))
            .await
            .unwrap()
            .display_name,
        "A"
    );
    let update = ProfileUpdate {
        display_name: Some("B".into()),
        ..ProfileUpdate::default()
    };
    bounded(cached.update_profile(me, u, update)).await.unwrap();
    assert_eq!(
        bounded(cached.get_profile(me, u))
            .await
            .unwrap()
            .display_name,
        "B"
    );

    // Back: the same cache works again once Redis answers (a fresh server, empty).
    let server = Throwaway::start(port);
    server.wait_ready().await;
    let mut back = false;
    for _ in 0..100 {
        if bounded(c.set("k", b("again"), None)).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "the cache works again once Redis answers: {:?}",
        c.last_error()
    );
    assert_eq!(c.get("k").await.unwrap(), Some(b("again")));
    let hits = c.stats().hits;
    assert_eq!(cached.get_profile(me, u).await.unwrap().display_name, "B");
    assert_eq!(cached.get_profile(me, u).await.unwrap().display_name, "B");
    assert!(c.stats().hits > hits, "cached again: {:?}", c.stats());
}

#[tokio::test]
async fn nothing_listening_is_a_backend_error_not_a_hang() {
    let c = RedisCache::builder(&format!("redis://127.0.0.1:{}", free_port()))
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let e = bounded(c.get("k")).await.unwrap_err();
    assert!(is_backend(&e), "{e:?}");
}

#[tokio::test]
async fn the_password_never_shows() {
    require_redis().await;
    // The local Redis has no password: AUTH fails, which must not quote it either.
    let url = "redis://:s3cret-pw@127.0.0.1:6379";
    let builder = RedisCache::builder(url).prefix(fresh_prefix());
    let shown = format!("{builder:?}");
    let c = builder.build().unwrap();
    let e = c.get("k").await.err();
    let e2 = c.set("k", b("v"), None).await.err();
    let shown = format!(
        "{shown} {c:?} {e:?} {e2:?} {} {:?}",
        e.as_ref().map(|e| e.to_string()).unwrap_or_default(),
        c.last_error()
    );
    assert!(e.is_some(), "AUTH with a password the server lacks fails");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("RedisCache"), "{shown}");
    let e = RedisCache::connect("not a url :s3cret-pw@").unwrap_err();
    assert!(!format!("{e} {e:?}").contains("s3cret"));
}
