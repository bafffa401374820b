//! `MemoryCache` get/set against a bare `lru::LruCache` behind a `Mutex`, in the same
//! run: single-threaded, and with 2 threads hammering the same cache. With feature
//! `redis`: `RedisCache::get` against a bare Redis `GET` round trip on the same kind
//! of connection (the `redis` crate's connection manager), on the local Redis
//! (127.0.0.1:6379), same key and 256-byte value.
//!
//! ```text
//! cargo bench --bench cache
//! cargo bench --features redis --bench cache -- redis_get
//! ```

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kasama::cache::MemoryCache;
use lru::LruCache;

const KEYS: usize = 10_000;

fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("kasama:u:{i:08}:goal:{}", i * 7919))
        .collect()
}

fn value() -> Bytes {
    Bytes::from(vec![7u8; 256])
}

fn filled() -> (MemoryCache, Mutex<LruCache<String, Bytes>>) {
    let m = MemoryCache::builder()
        .max_entries(2 * KEYS)
        .build()
        .unwrap();
    let l = Mutex::new(LruCache::new(NonZeroUsize::new(2 * KEYS).unwrap()));
    for k in keys() {
        m.set_now(&k, value(), None).unwrap();
        l.lock().unwrap().put(k, value());
    }
    (m, l)
}

/// Runs `op(i)` `iters` times on each of `threads` threads; returns the wall time
/// divided by the thread count (time per op per thread, as criterion expects).
fn threaded(threads: usize, iters: u64, op: &(dyn Fn(usize) + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..iters as usize {
                    op(i.wrapping_mul(31).wrapping_add(t * 4999) % KEYS);
                }
            });
        }
    });
    start.elapsed() / threads as u32
}

fn benches(c: &mut Criterion) {
    let ks = keys();
    let (m, l) = filled();
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("get/{threads}_thread"));
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function("mutex_lru", |b| {
            b.iter_custom(|n| {
                threaded(threads, n, &|i| {
                    black_box(l.lock().unwrap().get(&ks[i]).cloned());
                })
            })
        });
        // The bare map plus the one thing MemoryCache adds per lookup that costs:
        // reading tokio's clock for the entry's expiry.
        g.bench_function("mutex_lru_plus_clock_read", |b| {
            b.iter_custom(|n| {
                threaded(threads, n, &|i| {
                    black_box(tokio::time::Instant::now());
                    black_box(l.lock().unwrap().get(&ks[i]).cloned());
                })
            })
        });
        g.bench_function("memory_cache", |b| {
            b.iter_custom(|n| {
                threaded(threads, n, &|i| {
                    black_box(m.get_now(&ks[i]));
                })
            })
        });
        g.finish();
        let mut g = c.benchmark_group(format!("set/{threads}_thread"));
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function("mutex_lru", |b| {
            b.iter_custom(|n| {
                threaded(threads, n, &|i| {
                    l.lock().unwrap().put(ks[i].clone(), value());
                })
            })
        });
        g.bench_function("memory_cache", |b| {
            b.iter_custom(|n| {
                threaded(threads, n, &|i| {
                    m.set_now(&ks[i], value(), None).unwrap();
                })
            })
        });
        g.finish();
    }
}

#[cfg(feature = "redis")]
fn redis_benches(c: &mut Criterion) {
    use kasama::RedisCache;
    use kasama::cache::Cache;

    const REDIS: &str = "redis://127.0.0.1:6379";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let prefix = format!("kasama-bench-{}", uuid::Uuid::new_v4().simple());
    let (cache, conn) = rt.block_on(async {
        let cache = RedisCache::builder(REDIS).prefix(&prefix).build().unwrap();
        let client = redis::Client::open(REDIS).unwrap();
        let conn = redis::aio::ConnectionManager::new(client)
            .await
            .expect("the bench needs Redis on 127.0.0.1:6379");
        cache.set("k", value(), None).await.unwrap();
        (cache, conn)
    });
    let full_key = format!("{prefix}:k");
    let mut g = c.benchmark_group("redis_get");
    g.throughput(Throughput::Elements(1));
    g.bench_function("bare_get_round_trip", |b| {
        b.to_async(&rt).iter(|| {
            let mut c = conn.clone();
            let k = full_key.clone();
            async move {
                let v: Option<Vec<u8>> =
                    redis::cmd("GET").arg(&k).query_async(&mut c).await.unwrap();
                black_box(v.expect("present"))
            }
        })
    });
    g.bench_function("redis_cache_get", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cache.get("k").await.unwrap().expect("present")) })
    });
    g.finish();
    assert_eq!(cache.errors(), 0, "every get was answered by Redis");
    rt.block_on(async {
        cache.remove("k").await.unwrap();
    });
}

#[cfg(not(feature = "redis"))]
criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
#[cfg(feature = "redis")]
criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches, redis_benches
}
criterion_main!(group);
