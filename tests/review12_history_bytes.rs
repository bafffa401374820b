//! A history within its token budget must also be within the bytes a request's
//! history may have (`MAX_HISTORY_BYTES`): tokens are estimated from characters, and
//! a character may take four bytes, so a host's larger history budget over turns in
//! emoji (or any non-Latin script) gave a history `AiRequest::validate` refused —
//! every later message of the conversation a 400.

use std::sync::Arc;

use kasama::agent::MAX_HISTORY_BYTES;
use kasama::prelude::*;

#[tokio::test]
async fn a_history_within_its_token_budget_is_within_the_request_bytes() {
    let repo: Arc<dyn Repository> = Arc::new(InMemoryRepository::new());
    let u = UserId::new();
    repo.create_profile(Actor::Service, NewProfile::new(u, "a@example.com", "A"))
        .await
        .unwrap();
    let c = repo
        .create_conversation(
            Actor::User(u),
            NewConversation {
                user_id: u,
                agent: AgentType::CommunicationAdvisor,
                title: "t".into(),
            },
        )
        .await
        .unwrap();
    for i in 0..12 {
        let m = NewConversationMessage {
            conversation_id: c.id,
            role: if i % 2 == 0 {
                MessageRole::User
            } else {
                MessageRole::Assistant
            },
            content: format!("{i} {}", "💬".repeat(9_000)),
        };
        repo.add_message(Actor::User(u), m).await.unwrap();
    }
    let h = ContextProvider::new(repo)
        .history_for(u, c.id, 100_000)
        .await
        .unwrap();
    let bytes: usize = h.iter().map(|m| m.content.len()).sum();
    assert!(bytes <= MAX_HISTORY_BYTES, "{bytes} bytes");
    // The newest turns, as many as fit.
    assert_eq!(h.len(), MAX_HISTORY_BYTES / (9_000 * 4 + 3));
    assert!(h.last().unwrap().content.starts_with("11 "));
    AiRequest::new(u, AgentType::CommunicationAdvisor, "so?")
        .with_history(h)
        .validate()
        .expect("a history from history_for is valid");
}
