//! A shared (non-personal) agent's cached answers are reused across users — but only
//! over the same data: an answer computed over one user's context is never served to
//! another whose data differ, through the server's path (`ContextProvider` then the
//! pipeline), while two users whose data are the same do share it.

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::CacheTier;
use kasama::pipeline::BatchConfig;
use kasama::prelude::*;
use kasama::semantic::{HashingEmbedder, SemanticCache};
use serde_json::json;

mod common;

use common::pipeline::{builder, memory, users};

#[tokio::test(start_paused = true)]
async fn a_shared_agent_shares_answers_only_over_the_same_data() {
    let repo = memory();
    let us = users(&repo, 3).await;
    let (a, b, c) = (us[0], us[1], us[2]);
    // a has an active goal; b and c have none.
    repo.create_goal(
        Actor::User(a),
        NewGoal {
            user_id: a,
            title: "Weekly date night".into(),
            description: "Every Friday".into(),
            category: "connection".into(),
            target_date: None,
            milestones: vec![],
        },
    )
    .await
    .unwrap();
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .shared(AgentType::ProgressTracker)
        .build()
        .unwrap();
    let p = builder(repo.clone())
        .backend(Arc::new(SimulatedAgent::instant("sim")))
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .semantic_cache(Arc::new(cache))
        .build()
        .unwrap();
    let contexts = ContextProvider::new(repo.clone());
    let ask = async |u: UserId| {
        let input = json!({"question": "How am I doing?"});
        let ctx = contexts
            .context_for(u, AgentType::ProgressTracker, &input)
            .await
            .unwrap();
        let req = AiRequest::new(u, AgentType::ProgressTracker, input).with_context(ctx);
        p.complete(req, SubscriptionTier::Premium).await.unwrap()
    };
    let oa = ask(a).await;
    assert_eq!(oa.cache, CacheTier::Miss);
    let ob = ask(b).await;
    assert_eq!(ob.cache, CacheTier::Miss, "b's data differ from a's");
    let oc = ask(c).await;
    assert_eq!(oc.cache, CacheTier::Exact, "c's data are b's: shared");
    assert_eq!(oc.response.output, ob.response.output);
    p.shutdown().await.unwrap();
}
