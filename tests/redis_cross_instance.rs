//! Read-after-write across instances: two `CachedRepository`s, each with its own
//! `RedisCache` client (separate memory, as two app instances) over ONE PostgreSQL
//! repository (a fresh database, as the application role). A writer on instance 2
//! raises a goal's and a profile's version again and again; after each write has
//! returned, a read on instance 1 must see that version or a newer one, never an
//! older one — from the writer itself and from readers running on instance 1 all the
//! while. Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379; fails
//! without either.
#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use common::fixtures::new_goal;
use kasama::RedisCache;
use kasama::cache::CachedRepository;
use kasama::prelude::*;

const WRITES: u64 = 150;
const READERS: usize = 3;

fn version(s: &str) -> u64 {
    s.strip_prefix('v')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a version: {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_instance_is_seen_at_once_on_the_other() {
    assert!(
        tokio::net::TcpStream::connect("127.0.0.1:6379")
            .await
            .is_ok(),
        "this test needs Redis on 127.0.0.1:6379"
    );
    // PostgreSQL must be there: no silent skip.
    let db = common::pg().await.expect("this test needs PostgreSQL");
    let repo = Arc::new(db.repo.clone());
    let prefix = format!("kasama-x-{}", uuid::Uuid::new_v4().simple());
    let instance = |prefix: &str| {
        let cache = RedisCache::builder("redis://127.0.0.1:6379")
            .prefix(prefix)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        Arc::new(CachedRepository::new(
            repo.clone(),
            cache,
            Duration::from_secs(300),
        ))
    };
    let (one, two) = (instance(&prefix), instance(&prefix));

    let u = UserId::new();
    let me = Actor::User(u);
    two.create_profile(
        Actor::Service,
        NewProfile::new(u, format!("{u}@example.com"), "v0"),
    )
    .await
    .unwrap();
    let g = two.create_goal(me, new_goal(u, "v0")).await.unwrap().id;

    // The newest version whose write has returned, per record.
    let goal_done = Arc::new(AtomicU64::new(0));
    let profile_done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let (one, goal_done, profile_done, stop) = (
            one.clone(),
            goal_done.clone(),
            profile_done.clone(),
            stop.clone(),
        );
        readers.push(tokio::spawn(async move {
            let (mut reads, mut stale) = (0u64, Vec::new());
            while !stop.load(SeqCst) {
                // The floor is taken before the read starts: a write that returned
                // before then must show.
                let floor = goal_done.load(SeqCst);
                let seen = version(&one.get_goal(me, g).await.unwrap().title);
                if seen < floor {
                    stale.push(("goal", floor, seen));
                }
                let floor = profile_done.load(SeqCst);
                let seen = version(&one.get_profile(me, u).await.unwrap().display_name);
                if seen < floor {
                    stale.push(("profile", floor, seen));
                }
                reads += 2;
            }
            (reads, stale)
        }));
    }

    let mut stale = Vec::new();
    for i in 1..=WRITES {
        let title = format!("v{i}");
        let update = GoalUpdate {
            title: Some(title.clone()),
            ..GoalUpdate::default()
        };
        two.update_goal(me, g, update).await.unwrap();
        goal_done.store(i, SeqCst);
        let seen = version(&one.get_goal(me, g).await.unwrap().title);
        if seen < i {
            stale.push(("goal after write", i, seen));
        }
        let update = ProfileUpdate {
            display_name: Some(title),
            ..ProfileUpdate::default()
        };
        two.update_profile(me, u, update).await.unwrap();
        profile_done.store(i, SeqCst);
        let seen = version(&one.get_profile(me, u).await.unwrap().display_name);
        if seen < i {
            stale.push(("profile after write", i, seen));
        }
        // Reads between writes, so instance 1 really serves from the cache.
        for _ in 0..2 {
            let _ = one.get_goal(me, g).await.unwrap();
        }
    }
    stop.store(true, SeqCst);
    let mut reads = 0;
    for r in readers {
        let (n, s) = r.await.unwrap();
        reads += n;
        stale.extend(s);
    }
    assert!(stale.is_empty(), "stale reads: {stale:?}");
    assert!(reads > 0, "the readers ran");
    // Instance 1 really serves from Redis: of two reads in a row, the second finds
    // its entry (three hits: two generations and one entry, at least).
    let before = one.cache().stats().hits;
    for _ in 0..2 {
        assert_eq!(
            one.get_goal(me, g).await.unwrap().title,
            format!("v{WRITES}")
        );
    }
    let hits = one.cache().stats().hits - before;
    assert!(hits >= 3, "{hits} hits");
    assert_eq!(one.cache().errors() + two.cache().errors(), 0);
    db.finish().await;
}
