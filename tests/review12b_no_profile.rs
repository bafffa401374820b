//! A signed-in user with no data at all — not even a profile (the server serves such a
//! user on the free plan) — asks each agent kind: the context is empty parts, never an
//! error. Before the fix the communication advisor's context read the profile and
//! failed with `NotFound`, so `POST /api/agents/communication_advisor` answered 404 to
//! a user every other agent answered. On memory and on PostgreSQL as the app role.

mod common;

use std::sync::Arc;

use kasama::prelude::*;
use serde_json::json;

async fn no_data_anywhere(repo: Arc<dyn Repository>) {
    let cp = ContextProvider::new(repo);
    let user = UserId::new();
    let q = json!({"question": "How should I start a hard talk?"});
    for agent in AgentType::ALL.iter().copied() {
        let ctx = cp
            .context_for(user, agent, &q)
            .await
            .unwrap_or_else(|e| panic!("{agent}: a user with no data got {e}"));
        assert!(ctx.is_object(), "{agent}: {ctx}");
    }
    let ctx = cp
        .context_for(user, AgentType::CommunicationAdvisor, &q)
        .await
        .unwrap();
    assert_eq!(ctx, json!({"profile": null, "active_goals": []}));
}

#[tokio::test]
async fn memory_a_user_without_a_profile_gets_an_empty_context() {
    no_data_anywhere(Arc::new(kasama::InMemoryRepository::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_user_without_a_profile_gets_an_empty_context() {
    let Some(db) = common::pg().await else { return };
    no_data_anywhere(Arc::new(db.repo.clone())).await;
    db.finish().await;
}
