//! `ContextProvider`: each agent kind gets the user's own data, read as the user;
//! the same data gives the same context (and request fingerprint), changed data
//! another; the budget is kept deterministically; another user's ids are refused;
//! the history keeps the newest turns that fit. On memory, through the cache, and
//! on PostgreSQL as the least-privilege application role.

#[path = "../common/mod.rs"]
mod common;

mod agents;
mod budget;
mod isolation;

use std::sync::Arc;

use kasama::prelude::*;
use serde_json::{Value, json};

use agents::{changed_data_changes_the_context_and_the_fingerprint, each_agent_gets_its_data};
use budget::{
    a_follow_up_is_keyed_by_its_conversation, history_keeps_the_newest_turns_that_fit,
    truncation_is_deterministic_and_within_budget,
};
use isolation::another_users_ids_are_refused;

type Repo = Arc<dyn Repository>;
const S: Actor = Actor::Service;

macro_rules! on_every_repository {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(std::sync::Arc::new(kasama::InMemoryRepository::new())).await;
                }
            )*
        }
        /// Through the read-through cache: a write must show in the next context.
        mod cached {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(std::sync::Arc::new(kasama::CachedRepository::new(
                        kasama::InMemoryRepository::new(),
                        kasama::MemoryCache::new(),
                        std::time::Duration::from_secs(300),
                    )))
                    .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::common::pg().await else { return };
                    super::$name(std::sync::Arc::new(db.repo.clone())).await;
                    db.finish().await;
                }
            )*
        }
    };
}

on_every_repository!(
    each_agent_gets_its_data,
    changed_data_changes_the_context_and_the_fingerprint,
    truncation_is_deterministic_and_within_budget,
    another_users_ids_are_refused,
    history_keeps_the_newest_turns_that_fit,
    a_follow_up_is_keyed_by_its_conversation,
);

/// A user with a profile whose preferences hold a relationship status, a partner's
/// name and an unrelated setting.
async fn user(repo: &Repo, name: &str) -> UserId {
    let id = UserId::new();
    let mut p = NewProfile::new(id, format!("{name}-{id}@example.com"), name);
    p.preferences =
        json!({"relationship_status": "married", "partner_name": "Sam", "theme": "dark"});
    repo.create_profile(S, p).await.unwrap();
    id
}

async fn practice(repo: &Repo, title: &str, category: &str) -> Practice {
    repo.create_practice(
        S,
        NewPractice {
            title: title.into(),
            description: format!("{title}, for couples"),
            category: category.into(),
            difficulty: DifficultyLevel::Beginner,
            tags: vec![],
            duration_minutes: 15,
        },
    )
    .await
    .unwrap()
}

fn session(user: UserId, p: PracticeId, minutes: i32, notes: Option<String>) -> NewProgress {
    NewProgress {
        rating: Some(4),
        notes,
        ..NewProgress::practice(user, p, minutes)
    }
}

fn fingerprint(user: UserId, agent: AgentType, input: &Value, ctx: &Value) -> String {
    AiRequest::new(user, agent, input.clone())
        .with_context(ctx.clone())
        .fingerprint()
}

fn question(q: &str) -> Value {
    json!({ "question": q })
}
