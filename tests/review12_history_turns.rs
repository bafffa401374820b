//! A long conversation of short turns must stay answerable: the history that
//! `ContextProvider::history_for` keeps within a token budget must also be one that
//! `AiRequest::validate` accepts (at most `MAX_HISTORY` turns), or every later message
//! of the conversation is refused as invalid input.

use std::sync::Arc;

use futures_util::StreamExt;
use kasama::agent::{AiRequest, MAX_HISTORY, SimulatedAgent};
use kasama::pipeline::{AiPipeline, StreamItem};
use kasama::prelude::*;

async fn long_conversation(turns: usize) -> (Arc<dyn Repository>, UserId, ConversationId) {
    let repo: Arc<dyn Repository> = Arc::new(InMemoryRepository::new());
    let user = UserId::new();
    repo.create_profile(
        Actor::Service,
        NewProfile::new(user, "ana@example.com", "Ana"),
    )
    .await
    .unwrap();
    let c = repo
        .create_conversation(
            Actor::User(user),
            NewConversation {
                user_id: user,
                agent: AgentType::CommunicationAdvisor,
                title: "chat".into(),
            },
        )
        .await
        .unwrap();
    for i in 0..turns {
        let role = if i % 2 == 0 {
            MessageRole::User
        } else {
            MessageRole::Assistant
        };
        repo.add_message(
            Actor::User(user),
            NewConversationMessage {
                conversation_id: c.id,
                role,
                content: "ok".into(),
            },
        )
        .await
        .unwrap();
    }
    (repo, user, c.id)
}

#[tokio::test]
async fn a_history_within_its_token_budget_never_has_more_turns_than_a_request_may_carry() {
    let (repo, user, id) = long_conversation(300).await;
    // The server's history budget: 2,000 tokens; "ok" costs 1 + 4 tokens.
    let history = ContextProvider::new(repo.clone())
        .history_for(user, id, 2_000)
        .await
        .unwrap();
    assert_eq!(
        history.len(),
        MAX_HISTORY,
        "the newest turns, as many as allowed"
    );
    assert_eq!(history.last().unwrap().role, kasama::agent::Role::Assistant);
    let req =
        AiRequest::new(user, AgentType::CommunicationAdvisor, "and now?").with_history(history);
    req.validate().expect("a history from history_for is valid");

    // And the conversation is still answered through the pipeline.
    let pipeline = AiPipeline::builder(repo)
        .backend(Arc::new(SimulatedAgent::instant("sim")))
        .build()
        .unwrap();
    let mut s = pipeline
        .stream(req, SubscriptionTier::Free)
        .await
        .expect("a long conversation is still answered");
    let mut done = false;
    while let Some(item) = s.next().await {
        if let StreamItem::Done(_) = item.unwrap() {
            done = true;
        }
    }
    assert!(done);
    pipeline.shutdown().await.unwrap();
}
