//! Review of issue 13 item 3 (`CachedRepository` generations across instances), the
//! parts that need no server: two "instances" are two `CachedRepository`s over one
//! `InMemoryRepository` and one shared `MemoryCache` (as two app instances over one
//! database and one Redis). Tokio's paused clock: the slow cache link below sleeps
//! for one simulated round trip, and nothing asserts on durations.
//!
//! Each test names a way a read after a committed write can still be stale, or a
//! setting that panics instead of being refused.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kasama::cache::{Cache, CacheStats, CachedRepository, MemoryCache};
use kasama::prelude::*;
use kasama::realtime::{ChangeTable, Channel, Hub, RealtimeEvent};

/// The shared cache seen over a network: every `set` of a generation key takes one
/// round trip (`rtt`) before it is applied, as a `SET` to Redis does.
#[derive(Debug)]
struct SlowLink {
    shared: Arc<MemoryCache>,
    rtt: Duration,
}

#[async_trait]
impl Cache for SlowLink {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.shared.get(key).await
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        if key.contains(":gen:") {
            tokio::time::sleep(self.rtt).await;
        }
        self.shared.set(key, value, ttl).await
    }
    async fn remove(&self, key: &str) -> Result<bool> {
        self.shared.remove(key).await
    }
    fn stats(&self) -> CacheStats {
        self.shared.stats()
    }
}

fn goal(user: UserId) -> NewGoal {
    NewGoal {
        user_id: user,
        title: "g".into(),
        description: String::new(),
        category: "c".into(),
        target_date: None,
        milestones: vec![],
    }
}

/// Instance 1: writes over a slow link.
type One = CachedRepository<Arc<InMemoryRepository>, SlowLink>;
/// Instance 2: reads over a fast one.
type Two = CachedRepository<Arc<InMemoryRepository>, Arc<MemoryCache>>;

/// Instance 1 writes over a slow link; instance 2 reads over a fast one; both share
/// one cache and one repository.
fn two_instances(repo: Arc<InMemoryRepository>) -> (One, Two) {
    let shared = Arc::new(MemoryCache::new());
    let one = CachedRepository::new(
        repo.clone(),
        SlowLink {
            shared: shared.clone(),
            rtt: Duration::from_millis(5),
        },
        Duration::from_secs(300),
    );
    let two = CachedRepository::new(repo, shared, Duration::from_secs(300));
    (one, two)
}

/// A write whose caller goes away after the write committed (an HTTP client that
/// disconnects, a handler timeout, a `select!` that picks another branch) must still
/// invalidate: the data changed, and other instances must not keep serving the old
/// value for the whole TTL (300 s here). Today the invalidation is awaited inside the
/// caller's future, after the commit, so dropping the future there skips it.
#[tokio::test(start_paused = true)]
async fn a_write_whose_caller_gave_up_after_the_commit_still_invalidates() {
    let repo = Arc::new(InMemoryRepository::new());
    let (one, two) = two_instances(repo.clone());
    let u = UserId::new();
    let me = Actor::User(u);
    repo.create_profile(Actor::Service, NewProfile::new(u, "a@example.com", "A"))
        .await
        .unwrap();
    let g = repo.create_goal(me, goal(u)).await.unwrap();
    // Instance 2 caches the goal at 0 %.
    assert_eq!(two.get_goal(me, g.id).await.unwrap().progress, 0);

    // The caller of instance 1 gives up after 1 ms: the write has committed by then
    // (the in-memory store answers at once), the invalidation is still in flight.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(1),
        one.set_goal_progress(me, g.id, 50),
    )
    .await;
    assert!(gave_up.is_err(), "the caller gave up mid-write");
    assert_eq!(
        repo.get_goal(me, g.id).await.unwrap().progress,
        50,
        "the write committed"
    );

    // Any later read, on any instance, must see 50 %.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        two.get_goal(me, g.id).await.unwrap().progress,
        50,
        "instance 2 serves the goal cached before a committed write"
    );
}

/// The change feed reports a write at its commit; a client that re-reads on the
/// event (what the feed is for) reaches whichever instance the load balancer picks.
/// That read comes after the commit, so it must not be served from the cache as it
/// was before the commit. Today the event is out before the writing instance has
/// replaced the generation, so another instance serves the old value.
#[ignore = "known gap (issue 13): the change event goes out at commit, one cache round trip before the writer replaces the generation; documented on CachedRepository"]
#[tokio::test(start_paused = true)]
async fn a_read_prompted_by_the_change_feed_is_not_stale_on_another_instance() {
    let hub = Hub::new(64);
    let repo = Arc::new(InMemoryRepository::new().with_change_feed(hub.clone()));
    let (one, two) = two_instances(repo.clone());
    let u = UserId::new();
    let me = Actor::User(u);
    repo.create_profile(Actor::Service, NewProfile::new(u, "b@example.com", "B"))
        .await
        .unwrap();
    let g = repo.create_goal(me, goal(u)).await.unwrap();
    assert_eq!(two.get_goal(me, g.id).await.unwrap().progress, 0);

    let mut feed = hub.subscribe(Channel::User {
        user: u,
        table: Some(ChangeTable::Goals),
    });
    let writer = tokio::spawn(async move { one.set_goal_progress(me, g.id, 70).await });
    // The client hears of the change and re-reads through instance 2.
    match feed.next_event().await {
        Some(RealtimeEvent::Change(e)) => assert_eq!(e.id, g.id.0),
        other => panic!("expected the goal's change, got {other:?}"),
    }
    let seen = two.get_goal(me, g.id).await.unwrap().progress;
    writer.await.unwrap().unwrap();
    assert_eq!(
        seen, 70,
        "a read made after the change event served the value from before the write"
    );
}

/// `CachedRepository::new` takes any TTL; a huge one (a host meaning "never
/// expire") must be refused or capped, not panic on the first read (the generation's
/// TTL is `ttl * 4`, which overflows).
#[tokio::test(start_paused = true)]
async fn a_huge_ttl_is_not_a_panic_on_the_first_read() {
    let repo = Arc::new(InMemoryRepository::new());
    let cached = CachedRepository::new(
        repo.clone(),
        Arc::new(MemoryCache::new()),
        Duration::from_secs(u64::MAX / 2),
    );
    let u = UserId::new();
    repo.create_profile(Actor::Service, NewProfile::new(u, "c@example.com", "C"))
        .await
        .unwrap();
    let read = tokio::spawn(async move { cached.get_profile(Actor::User(u), u).await });
    match read.await {
        Ok(r) => assert_eq!(r.unwrap().id, u),
        Err(e) => panic!("a read with a huge TTL panicked: {e}"),
    }
}

/// `MemoryCache::set` with a huge TTL (refused by `RedisCache` only when zero, capped
/// there otherwise) must not panic either: `Instant::now() + ttl` overflows.
#[tokio::test(start_paused = true)]
async fn memory_cache_set_with_a_huge_ttl_is_not_a_panic() {
    let set = tokio::spawn(async move {
        let c = MemoryCache::new();
        c.set("k", Bytes::from_static(b"v"), Some(Duration::MAX))
            .await
            .map(|()| c)
    });
    match set.await {
        Ok(Ok(c)) => assert_eq!(c.get("k").await.unwrap(), Some(Bytes::from_static(b"v"))),
        Ok(Err(e)) => assert!(e.invalid_field().is_some(), "{e:?}"),
        Err(e) => panic!("MemoryCache::set with Duration::MAX panicked: {e}"),
    }
}
