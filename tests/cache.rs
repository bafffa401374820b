//! `MemoryCache` bounds, expiry and counters (tokio's paused clock), and
//! `CachedRepository`'s promise: a read after a write never returns the old value.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::fixtures::new_goal;
use kasama::cache::{Cache, CacheStats, CachedRepository, MemoryCache};
use kasama::prelude::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_ttl() {
    let c = MemoryCache::new();
    c.set("k", b("v"), None).await.unwrap();
    c.set("short", b("v"), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(c.get("short").await.unwrap(), Some(b("v")));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(c.get("short").await.unwrap(), None);
    tokio::time::advance(Duration::from_secs(289)).await; // 299 s: default TTL is 300 s
    assert_eq!(c.get("k").await.unwrap(), Some(b("v")));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(c.get("k").await.unwrap(), None);
    assert_eq!(
        c.stats(),
        CacheStats {
            hits: 2,
            misses: 2,
            evictions: 0,
            expirations: 2,
            entries: 0,
            bytes: 0
        }
    );
}

#[tokio::test]
async fn the_entry_bound_evicts_the_least_recently_used() {
    let c = MemoryCache::builder()
        .max_entries(3)
        .shards(1)
        .build()
        .unwrap();
    for k in ["a", "b", "c"] {
        c.set(k, b(k), None).await.unwrap();
    }
    c.get("a").await.unwrap(); // a is now the most recently used
    c.set("d", b("d"), None).await.unwrap();
    assert_eq!(c.get("b").await.unwrap(), None);
    for k in ["a", "c", "d"] {
        assert_eq!(c.get(k).await.unwrap(), Some(b(k)));
    }
    // Replacing a key is not an eviction.
    c.set("a", b("A"), None).await.unwrap();
    let s = c.stats();
    assert_eq!((s.evictions, s.entries, s.bytes), (1, 3, 6));
    assert!(c.remove("a").await.unwrap());
    assert!(!c.remove("a").await.unwrap());
    assert_eq!(c.stats().entries, 2);
}

#[tokio::test]
async fn the_byte_bound_evicts_until_the_new_entry_fits() {
    let c = MemoryCache::builder()
        .max_bytes(100)
        .shards(1)
        .build()
        .unwrap();
    for k in ["k1", "k2", "k3"] {
        c.set(k, Bytes::from(vec![0u8; 28]), None).await.unwrap(); // 30 bytes each
    }
    c.set("k4", Bytes::from(vec![0u8; 48]), None).await.unwrap(); // 50: two must go
    let s = c.stats();
    assert_eq!((s.entries, s.bytes, s.evictions), (2, 80, 2));
    assert_eq!(c.get("k1").await.unwrap(), None);
    assert_eq!(c.get("k2").await.unwrap(), None);
    assert!(c.get("k3").await.unwrap().is_some());
    // An entry larger than the cache is refused, not silently dropped.
    let e = c
        .set("huge", Bytes::from(vec![0u8; 200]), None)
        .await
        .unwrap_err();
    assert_eq!(e.invalid_field(), Some("value"));
    assert_eq!(c.stats().entries, 2);
}

#[tokio::test]
async fn builder_refuses_impossible_settings() {
    assert_eq!(
        MemoryCache::builder()
            .shards(0)
            .build()
            .unwrap_err()
            .invalid_field(),
        Some("shards")
    );
    assert_eq!(
        MemoryCache::builder()
            .max_entries(4)
            .shards(8)
            .build()
            .unwrap_err()
            .invalid_field(),
        Some("shards")
    );
    assert_eq!(
        MemoryCache::builder()
            .default_ttl(Duration::ZERO)
            .build()
            .unwrap_err()
            .invalid_field(),
        Some("default_ttl")
    );
    let c = MemoryCache::new();
    assert_eq!(
        c.set("k", b("v"), Some(Duration::ZERO))
            .await
            .unwrap_err()
            .invalid_field(),
        Some("ttl")
    );
}

fn cached() -> CachedRepository<InMemoryRepository, Arc<MemoryCache>> {
    CachedRepository::new(
        InMemoryRepository::new(),
        Arc::new(MemoryCache::new()),
        Duration::from_secs(300),
    )
}

async fn setup(repo: &impl Repository) -> (UserId, Goal) {
    let u = UserId::new();
    repo.create_profile(
        Actor::Service,
        NewProfile::new(u, format!("{u}@example.com"), "U"),
    )
    .await
    .unwrap();
    let g = repo
        .create_goal(Actor::User(u), new_goal(u, "v0"))
        .await
        .unwrap();
    (u, g)
}

#[tokio::test]
async fn reads_are_served_from_the_cache_until_a_write() {
    let repo = cached();
    let (u, g) = setup(&repo).await;
    let me = Actor::User(u);
    assert_eq!(repo.get_goal(me, g.id).await.unwrap().title, "v0");
    let hits = repo.cache().stats().hits;
    assert_eq!(repo.get_goal(me, g.id).await.unwrap().title, "v0");
    assert_eq!(
        repo.list_goals(me, u, Page::default()).await.unwrap().len(),
        1
    );
    assert_eq!(
        repo.list_goals(me, u, Page::default()).await.unwrap().len(),
        1
    );
    // Two hits on entries plus one per read on the generation.
    assert_eq!(repo.cache().stats().hits, hits + 2 + 3);

    // The user's own write.
    repo.update_goal(
        me,
        g.id,
        GoalUpdate {
            title: Some("v1".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(repo.get_goal(me, g.id).await.unwrap().title, "v1");
    // The service's write to the user's data.
    repo.set_goal_progress(Actor::Service, g.id, 40)
        .await
        .unwrap();
    assert_eq!(repo.get_goal(me, g.id).await.unwrap().progress, 40);
    // A new row shows in the cached list.
    repo.create_goal(Actor::Service, new_goal(u, "second"))
        .await
        .unwrap();
    assert_eq!(
        repo.list_goals(me, u, Page::default()).await.unwrap().len(),
        2
    );
    // Deletion by the service.
    repo.delete_goal(Actor::Service, g.id).await.unwrap();
    assert!(repo.get_goal(me, g.id).await.unwrap_err().is_not_found());
    assert_eq!(
        repo.list_goals(me, u, Page::default()).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_lost_generation_hides_old_entries_instead_of_reviving_them() {
    let cache = Arc::new(MemoryCache::new());
    let repo = CachedRepository::new(
        InMemoryRepository::new(),
        cache.clone(),
        Duration::from_secs(300),
    );
    let (u, g) = setup(&repo).await;
    let me = Actor::User(u);
    repo.get_goal(me, g.id).await.unwrap();
    // Evict the generation by hand, then change the row behind the cache's back.
    assert!(cache.remove(&format!("kasama:gen:u:{u}")).await.unwrap());
    repo.inner()
        .update_goal(
            me,
            g.id,
            GoalUpdate {
                title: Some("behind".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(repo.get_goal(me, g.id).await.unwrap().title, "behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_never_see_a_value_older_than_the_last_finished_write() {
    let repo = Arc::new(cached());
    let (u, g) = setup(&*repo).await;
    let me = Actor::User(u);
    let writer = {
        let repo = repo.clone();
        tokio::spawn(async move {
            for i in 1..=200 {
                repo.set_goal_progress(me, g.id, i % 100).await.unwrap();
                // Right after the write returns, every read must see it.
                let seen = repo.get_goal(me, g.id).await.unwrap().progress;
                assert_eq!(seen, i % 100, "stale read after write {i}");
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move {
                for _ in 0..500 {
                    repo.get_goal(me, g.id).await.unwrap();
                    repo.list_goals(me, u, Page::default()).await.unwrap();
                }
            })
        })
        .collect();
    writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
}
