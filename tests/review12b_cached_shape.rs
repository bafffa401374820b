//! The assessment analyst's answers are checked for their shape on arrival and never
//! cached when wrong — but an entry reaching the cache by another way (a host's
//! `SemanticCache::store`, or a row in the shared PostgreSQL table written by an older
//! or foreign writer and loaded at warm start / over NOTIFY) was served as is: a
//! `{"text": …}` answer came back from `complete` and `stream` as an assessment
//! analysis. Now such an entry is refused at the door (never held, never served).

mod common;

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::{AiResponse, CacheTier};
use kasama::pipeline::{BatchConfig, StreamItem};
use kasama::prelude::*;
use kasama::semantic::{Embedder, HashingEmbedder, Lookup, SemanticCache};
use kasama::semantic_store::{PgSemanticStore, PgSemanticStoreConfig};
use serde_json::json;

use common::pipeline::{builder, memory, users};

fn wrong_shape() -> AiResponse {
    common::semantic::response(json!({"text": "You communicate well."}))
}

fn analyse(user: UserId) -> AiRequest {
    AiRequest::new(
        user,
        AgentType::AssessmentAnalyst,
        "What do my results say about how I communicate?",
    )
    .with_context(json!({"assessment": {"score": 97}}))
}

#[tokio::test(start_paused = true)]
async fn a_wrong_shaped_analysis_put_in_the_cache_is_never_served() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let cache = Arc::new(
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .build()
            .unwrap(),
    );
    // Refused (or at least not kept) by the cache itself.
    let _ = cache.store(&analyse(u), &wrong_shape(), None).await;
    assert!(
        matches!(
            cache.lookup(&analyse(u)).await.unwrap(),
            Lookup::Miss { .. }
        ),
        "a wrong-shaped analysis was held by the cache"
    );

    let p = builder(repo.clone())
        .backend(Arc::new(SimulatedAgent::instant("sim")))
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .semantic_cache(cache)
        .build()
        .unwrap();
    let out = p
        .complete(analyse(u), SubscriptionTier::Premium)
        .await
        .unwrap();
    assert_eq!(out.cache, CacheTier::Miss);
    kasama::agent::structured::check_output(AgentType::AssessmentAnalyst, &out.response.output)
        .unwrap();
    // The backend's (well-shaped) answer is the one cached now, and served as a stream.
    let mut s = p
        .stream(analyse(u), SubscriptionTier::Premium)
        .await
        .unwrap();
    let mut done = None;
    while let Some(item) = futures_util::StreamExt::next(&mut s).await {
        if let StreamItem::Done(o) = item.unwrap() {
            done = Some(o);
        }
    }
    let done = done.expect("a done item");
    assert_eq!(done.cache, CacheTier::Exact);
    assert_eq!(done.response.output, out.response.output);
    p.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_shaped_analysis_in_the_shared_table_is_not_loaded() {
    let db = common::pg()
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 is required for this test");
    let u = UserId::new();
    let req = analyse(u);
    // A row of the analyst's scope with a wrong-shaped answer, as an older or
    // foreign writer would leave it; written with the exact scope a request has.
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .build()
        .unwrap();
    let scope = cache.scope_of(&req);
    let admin = db.admin().await;
    admin
        .execute(
            "INSERT INTO semantic_entries (id, agent, model, params, context, user_id, embedder,
                 norm, question, embedding, answer, expires_at)
             VALUES ($1, 'assessment_analyst', $2, $3, $4, $5, $6, $7, $8, $9, $10,
                     now() + interval '1 hour')",
            &[
                &uuid::Uuid::new_v4(),
                &scope.model,
                &scope.params,
                &scope.context,
                &u.as_uuid(),
                &HashingEmbedder::new().name(),
                &req.question().to_lowercase(),
                &req.question(),
                &HashingEmbedder::new()
                    .embed(&[req.question()])
                    .await
                    .unwrap()
                    .remove(0),
                &json!({"output": {"text": "You communicate well."}, "model": "sim-1",
                        "usage": {"input_tokens": 20, "output_tokens": 40},
                        "question": req.question()}),
            ],
        )
        .await
        .unwrap();
    let repo = PgRepository::connect(&db.app_config()).unwrap();
    let store =
        PgSemanticStore::start(repo, PgSemanticStoreConfig::new(db.app_config().url)).unwrap();
    let warm = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .build_shared(store.clone())
        .await
        .unwrap();
    assert!(
        matches!(warm.lookup(&req).await.unwrap(), Lookup::Miss { .. }),
        "a wrong-shaped analysis loaded from PostgreSQL was served"
    );
    drop(store);
    db.finish().await;
}
