//! `ContextProvider::history_for` reads no more messages than can be kept: every
//! message costs at least `1 + MESSAGE_OVERHEAD_TOKENS` tokens and at most
//! `MAX_HISTORY` are kept, so reading 500 (up to 5 MB of text, cached whole in a
//! `CachedRepository` on every message posted) for a 2,000-token history is waste.

use std::sync::{Arc, Mutex};

use kasama::agent::MAX_HISTORY;
use kasama::context::MESSAGE_OVERHEAD_TOKENS;
use kasama::prelude::*;

/// Notes the `limit` of every `recent_messages` call, then passes it on.
struct Noting {
    inner: InMemoryRepository,
    limits: Mutex<Vec<u32>>,
}

macro_rules! note_then_pass_on {
    ($s:ident, recent_messages($a:ident, $c:ident, $l:ident)) => {{
        $s.limits.lock().unwrap().push($l);
        $s.inner.recent_messages($a, $c, $l).await
    }};
    ($s:ident, $name:ident($($a:ident),*)) => {{ $s.inner.$name($($a),*).await }};
}
kasama::__forward_repository!(impl[] Noting => note_then_pass_on);

#[tokio::test]
async fn the_history_reads_only_what_it_could_keep() {
    let noting = Arc::new(Noting {
        inner: InMemoryRepository::new(),
        limits: Mutex::new(Vec::new()),
    });
    let repo: Arc<dyn Repository> = noting.clone();
    let u = UserId::new();
    repo.create_profile(Actor::Service, NewProfile::new(u, "a@example.com", "A"))
        .await
        .unwrap();
    let c = repo
        .create_conversation(
            Actor::User(u),
            NewConversation {
                user_id: u,
                agent: AgentType::LearningCoach,
                title: "t".into(),
            },
        )
        .await
        .unwrap();
    for i in 0..30 {
        let m = NewConversationMessage {
            conversation_id: c.id,
            role: if i % 2 == 0 {
                MessageRole::User
            } else {
                MessageRole::Assistant
            },
            content: format!("turn {i}"),
        };
        repo.add_message(Actor::User(u), m).await.unwrap();
    }
    let contexts = ContextProvider::new(repo.clone());
    let min_cost = 1 + MESSAGE_OVERHEAD_TOKENS;
    for budget in [0, 4, 5, 50, 2_000, 100_000] {
        noting.limits.lock().unwrap().clear();
        let h = contexts.history_for(u, c.id, budget).await.unwrap();
        let limits = noting.limits.lock().unwrap().clone();
        assert_eq!(limits.len(), 1, "one read");
        let most = (budget / min_cost).clamp(1, MAX_HISTORY as u32);
        assert!(
            limits[0] <= most,
            "budget {budget}: read {} > {most}",
            limits[0]
        );
        // Still every message that fits: "turn NN" is 2 tokens + overhead.
        let fits = (budget / (2 + MESSAGE_OVERHEAD_TOKENS)).min(30) as usize;
        assert_eq!(h.len(), fits, "budget {budget}");
        if fits > 0 {
            assert_eq!(h.last().unwrap().content, "turn 29");
        }
    }
}
