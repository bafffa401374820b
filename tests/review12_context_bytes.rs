//! A context cut to its token budget must also fit the bytes a request's context may
//! have (`MAX_JSON_BYTES`): tokens are estimated from characters, and a character may
//! take four bytes, so a host's larger budget over text in emoji (or any non-Latin
//! script) produced a context `AiRequest::validate` refused — every request of that
//! user a 400.

use std::sync::Arc;

use kasama::domain::validate::MAX_JSON_BYTES;
use kasama::prelude::*;
use serde_json::json;

#[tokio::test]
async fn a_context_within_its_token_budget_is_within_the_request_bytes() {
    let repo: Arc<dyn Repository> = Arc::new(InMemoryRepository::new());
    let u = UserId::new();
    repo.create_profile(Actor::Service, NewProfile::new(u, "a@example.com", "A"))
        .await
        .unwrap();
    for i in 0..10 {
        repo.create_goal(
            Actor::User(u),
            NewGoal {
                user_id: u,
                title: format!("goal {i}"),
                description: "💬".repeat(9_000),
                category: "communication".into(),
                target_date: None,
                milestones: vec![],
            },
        )
        .await
        .unwrap();
    }
    let input = json!({"question": "How am I doing?"});
    for budget in [1_500, 20_000, 1_000_000] {
        let ctx = ContextProvider::new(repo.clone())
            .token_budget(budget)
            .context_for(u, AgentType::ProgressTracker, &input)
            .await
            .unwrap();
        let bytes = serde_json::to_string(&ctx).unwrap().len();
        assert!(bytes <= MAX_JSON_BYTES, "budget {budget}: {bytes} bytes");
        AiRequest::new(u, AgentType::ProgressTracker, input.clone())
            .with_context(ctx.clone())
            .validate()
            .unwrap_or_else(|e| panic!("budget {budget}: {e}"));
        // Still as much as fits: some goal text is there.
        assert!(
            !ctx["active_goals"].as_array().unwrap().is_empty(),
            "budget {budget}"
        );
    }
}
