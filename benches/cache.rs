//! `MemoryCache` get/set against a bare `lru::LruCache` behind a `Mutex`, in the same
//! run: single-threaded, and with 2 threads hammering the same cache.
//!
//! ```text
//! cargo bench --bench cache
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

criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(group);
