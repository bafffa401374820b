//! Memory stays bounded when instances share a semantic cache: entries from other
//! instances, and those loaded at start, count against the receiving cache's capacity
//! (the oldest go first). Real PostgreSQL (fails without it).

mod common;

use std::sync::Arc;
use std::time::Duration;

use kasama::prelude::*;
use kasama::semantic::{CacheTier, HashingEmbedder, SemanticCache};
use kasama::semantic_store::{PgSemanticStore, PgSemanticStoreConfig};

use common::semantic::{answer, ask, served};

async fn cache(db: &common::TestDb, capacity: usize) -> Arc<SemanticCache> {
    let store = PgSemanticStore::start(
        PgRepository::connect(&db.app_config()).unwrap(),
        PgSemanticStoreConfig::new(db.app_config().url),
    )
    .unwrap();
    assert!(store.wait_listening(Duration::from_secs(10)).await);
    SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .capacity(capacity)
        .build_shared(store)
        .await
        .unwrap()
}

async fn hit(c: &SemanticCache, u: UserId, q: &str) -> bool {
    served(&c.lookup(&ask(u, q)).await.unwrap()).is_some_and(|(t, _)| t == CacheTier::Exact)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_and_loaded_entries_respect_the_receiving_capacity() {
    let db = common::pg()
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 is required for this test");
    let big = cache(&db, 100).await;
    let small = cache(&db, 2).await;
    let u = UserId::new();
    let qs = ["first question", "second question", "third question"];
    for q in qs {
        big.store(&ask(u, q), &answer(q), None).await.unwrap();
        // One at a time, so the order the small cache hears them in is the store order.
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        while !hit(&small, u, q).await {
            assert!(tokio::time::Instant::now() < end, "{q} never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(small.stats().entries, 2);
    assert_eq!(small.stats().evictions, 1);
    assert!(!hit(&small, u, qs[0]).await, "the oldest went");
    assert_eq!(big.stats().entries, 3);

    // A fresh small instance loads the newest two.
    let fresh = cache(&db, 2).await;
    assert_eq!(fresh.stats().entries, 2);
    assert!(!hit(&fresh, u, qs[0]).await);
    assert!(hit(&fresh, u, qs[1]).await);
    assert!(hit(&fresh, u, qs[2]).await);
    db.finish().await;
}
