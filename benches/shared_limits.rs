//! `RedisRateLimits` checks against a bare Redis `INCR` round trip on the same kind of
//! connection (the `redis` crate's async connection manager), in the same run, on the
//! local Redis (127.0.0.1:6379). Issue 13's bar: a shared check costs at most 1.3× the
//! bare round trip.
//!
//! ```text
//! cargo bench --features redis --bench shared_limits
//! ```

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kasama::pipeline::{RateLimitConfig, RedisRateLimits};
use kasama::prelude::*;
use tokio::runtime::Runtime;

const REDIS: &str = "redis://127.0.0.1:6379";

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let prefix = format!("kasama-bench-{}", uuid::Uuid::new_v4().simple());
    let (mut conn, limits) = rt.block_on(async {
        let client = redis::Client::open(REDIS).unwrap();
        let conn = redis::aio::ConnectionManager::new(client)
            .await
            .expect("the bench needs Redis on 127.0.0.1:6379");
        // Limits that never refuse, so every check does the whole script.
        let l = RedisRateLimits::new(REDIS, &prefix, RateLimitConfig::unlimited()).unwrap();
        (conn, l)
    });
    let user = UserId::new();
    let incr_key = format!("{prefix}:incr");
    let mut g = c.benchmark_group("shared_limits");
    g.bench_function("bare_incr_round_trip", |b| {
        b.to_async(&rt).iter(|| {
            let mut c = conn.clone();
            let k = incr_key.clone();
            async move {
                let n: i64 = redis::cmd("INCR")
                    .arg(&k)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                black_box(n)
            }
        })
    });
    g.bench_function("check_api_one_key", |b| {
        b.to_async(&rt).iter(|| async {
            limits
                .check_api(user, SubscriptionTier::Free)
                .await
                .unwrap()
        })
    });
    g.bench_function("check_ai_user_and_global_keys", |b| {
        b.to_async(&rt)
            .iter(|| async { limits.check_ai(user, SubscriptionTier::Free).await.unwrap() })
    });
    g.finish();
    assert_eq!(
        limits.status().fallbacks,
        0,
        "every check was decided by Redis"
    );
    rt.block_on(async {
        let _: () = redis::cmd("DEL")
            .arg(&incr_key)
            .query_async(&mut conn)
            .await
            .unwrap();
    });
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
