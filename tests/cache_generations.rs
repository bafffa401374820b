//! `CachedRepository` over a cache shared by two instances, where a cache call the
//! client gave up on is still applied later (as a Redis command that timed out on
//! one instance may be): a read that could not confirm its generation must not
//! store, or a late generation would make the old value current again after another
//! instance's write returned. Deterministic: the "late" call is held back by the
//! test and applied when it says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kasama::cache::{Cache, CacheStats, CachedRepository, MemoryCache};
use kasama::prelude::*;

/// A shared `MemoryCache` seen through a flaky link: while `hold` is on, a `set` of
/// a generation key fails for the caller but is kept, to be applied by `release`.
#[derive(Debug)]
struct LateLink {
    shared: Arc<MemoryCache>,
    hold: Mutex<bool>,
    held: Mutex<Vec<(String, Bytes, Option<Duration>)>>,
}

impl LateLink {
    fn new(shared: Arc<MemoryCache>) -> Self {
        Self {
            shared,
            hold: Mutex::new(false),
            held: Mutex::new(Vec::new()),
        }
    }

    fn hold(&self, on: bool) {
        *self.hold.lock().unwrap() = on;
    }

    /// Applies the held sets now, as a late network would.
    fn release(&self) -> usize {
        let held = std::mem::take(&mut *self.held.lock().unwrap());
        let n = held.len();
        for (k, v, t) in held {
            self.shared.set_now(&k, v, t).unwrap();
        }
        n
    }
}

#[async_trait]
impl Cache for LateLink {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.shared.get(key).await
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        if *self.hold.lock().unwrap() && key.contains(":gen:") {
            self.held.lock().unwrap().push((key.into(), value, ttl));
            return Err(Error::Backend {
                what: "test cache".into(),
                retryable: true,
                source: "no answer in time".into(),
            });
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

#[tokio::test]
async fn a_generation_stored_late_never_brings_back_an_old_value() {
    let repo = Arc::new(InMemoryRepository::new());
    let shared = Arc::new(MemoryCache::new());
    let ttl = Duration::from_secs(300);
    // Instance 1 reaches the shared cache over the flaky link; instance 2 directly.
    let one = CachedRepository::new(repo.clone(), LateLink::new(shared.clone()), ttl);
    let two = CachedRepository::new(repo.clone(), shared.clone(), ttl);

    // A user no instance has cached anything of yet: no generation exists.
    let u = UserId::new();
    repo.create_profile(
        Actor::Service,
        NewProfile::new(u, format!("{u}@example.com"), "old name"),
    )
    .await
    .unwrap();
    let me = Actor::User(u);

    // Instance 1 reads: its new generation's SET "fails" (but is on its way), and
    // it loads the old name.
    one.cache().hold(true);
    let before = one.get_profile(me, u).await.unwrap();
    assert_eq!(before.display_name, "old name");

    // Instance 2 writes; the write returns.
    let update = ProfileUpdate {
        display_name: Some("new name".into()),
        ..ProfileUpdate::default()
    };
    two.update_profile(me, u, update).await.unwrap();

    // Now instance 1's SET of its generation arrives after all.
    assert!(one.cache().release() >= 1, "the held generation SET");
    one.cache().hold(false);

    // Every later read, on either instance, sees the write.
    for r in [&two.get_profile(me, u).await, &one.get_profile(me, u).await] {
        assert_eq!(r.as_ref().unwrap().display_name, "new name");
    }
}

#[tokio::test]
async fn a_cache_that_fails_on_generations_still_answers_from_the_repository() {
    let repo = Arc::new(InMemoryRepository::new());
    let link = LateLink::new(Arc::new(MemoryCache::new()));
    link.hold(true);
    let cached = CachedRepository::new(repo.clone(), link, Duration::from_secs(300));
    let u = UserId::new();
    cached
        .create_profile(
            Actor::Service,
            NewProfile::new(u, format!("{u}@example.com"), "A"),
        )
        .await
        .unwrap();
    for name in ["B", "C"] {
        let update = ProfileUpdate {
            display_name: Some(name.into()),
            ..ProfileUpdate::default()
        };
        cached
            .update_profile(Actor::User(u), u, update)
            .await
            .unwrap();
        let p = cached.get_profile(Actor::User(u), u).await.unwrap();
        assert_eq!(p.display_name, name);
    }
}
