//! Forgetting a user (`SemanticCache::forget_user`, what a host does on erasure) drops
//! their personal entries — but since issue 12 a *shared* agent's prompt carries the
//! asking user's own data (`ContextProvider`: goals, profile, practice notes), and the
//! shared entry stored for it (question, answer over that data) stayed: in memory and
//! in PostgreSQL's `semantic_entries`, after the user was erased, served to anyone
//! whose data match. Now a shared entry remembers the user whose request stored it,
//! and forgetting that user drops it too — on this instance, in the table, and on the
//! other instances.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::AiResponse;
use kasama::prelude::*;
use kasama::semantic::{HashingEmbedder, Lookup, SemanticCache};
use kasama::semantic_store::{PgSemanticStore, PgSemanticStoreConfig};
use serde_json::json;

fn answer() -> AiResponse {
    common::semantic::response(json!({"text": "Keep your weekly date night with Sam."}))
}

/// A shared agent's request over the user's own data.
fn ask(user: UserId) -> AiRequest {
    AiRequest::new(user, AgentType::ProgressTracker, "How am I doing?").with_context(
        json!({"active_goals": [{"title": "Weekly date night with Sam"}], "statistics": null}),
    )
}

fn missed(l: &Lookup) -> bool {
    matches!(l, Lookup::Miss { .. })
}

#[tokio::test]
async fn forgetting_a_user_drops_the_shared_entries_over_their_data() {
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .shared(AgentType::ProgressTracker)
        .build()
        .unwrap();
    let (a, b) = (UserId::new(), UserId::new());
    cache.store(&ask(a), &answer(), None).await.unwrap();
    cache
        .store(
            &AiRequest::new(b, AgentType::ProgressTracker, "What next?"),
            &answer(),
            None,
        )
        .await
        .unwrap();
    assert!(!missed(&cache.lookup(&ask(a)).await.unwrap()));
    cache.forget_user(a);
    assert!(
        missed(&cache.lookup(&ask(a)).await.unwrap()),
        "the shared entry over the forgotten user's data is still served"
    );
    // Another user's shared entry stays.
    assert!(
        !missed(
            &cache
                .lookup(&AiRequest::new(b, AgentType::ProgressTracker, "What next?"))
                .await
                .unwrap()
        ),
        "another user's shared entry was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_user_deletes_their_shared_rows_everywhere() {
    let db = common::pg()
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 is required for this test");
    let instance = async || {
        let repo = PgRepository::connect(&db.app_config()).unwrap();
        let store =
            PgSemanticStore::start(repo, PgSemanticStoreConfig::new(db.app_config().url)).unwrap();
        assert!(store.wait_listening(Duration::from_secs(10)).await);
        let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .shared(AgentType::ProgressTracker)
            .build_shared(store.clone())
            .await
            .unwrap();
        (store, cache)
    };
    let (_s1, one) = instance().await;
    let (_s2, two) = instance().await;
    let a = UserId::new();
    one.store(&ask(a), &answer(), None).await.unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while missed(&two.lookup(&ask(a)).await.unwrap()) {
        assert!(tokio::time::Instant::now() < end, "never shared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    one.forget_user_everywhere(a).await.unwrap();
    let rows: i64 = db
        .admin()
        .await
        .query_one("SELECT count(*) FROM semantic_entries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "the shared row over the erased user's data stayed");
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while !missed(&two.lookup(&ask(a)).await.unwrap()) {
        assert!(
            tokio::time::Instant::now() < end,
            "another instance still serves the shared entry over the forgotten user's data"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.finish().await;
}
