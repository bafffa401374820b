//! The context finds a user's active goal and current learning path however many
//! completed ones are newer (more than a page of them).

use std::sync::Arc;

use kasama::prelude::*;
use serde_json::Value;

fn goal(u: UserId, title: &str) -> NewGoal {
    NewGoal {
        user_id: u,
        title: title.into(),
        description: String::new(),
        category: "communication".into(),
        target_date: None,
        milestones: Vec::new(),
    }
}

#[tokio::test]
async fn an_active_goal_older_than_a_page_of_completed_ones_is_in_the_context() {
    let repo: Arc<dyn Repository> = Arc::new(InMemoryRepository::new());
    let u = UserId::new();
    let me = Actor::User(u);
    repo.create_profile(me, NewProfile::new(u, format!("{u}@example.com"), "U"))
        .await
        .unwrap();
    repo.create_goal(me, goal(u, "Talk calmly about money"))
        .await
        .unwrap();
    for i in 0..Page::MAX_LIMIT + 1 {
        let g = repo
            .create_goal(me, goal(u, &format!("done {i}")))
            .await
            .unwrap();
        repo.set_goal_progress(me, g.id, 100).await.unwrap();
    }
    let ctx = ContextProvider::new(repo)
        .context_for(u, AgentType::ProgressTracker, &Value::Null)
        .await
        .unwrap();
    let titles: Vec<&str> = ctx["active_goals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Talk calmly about money"], "{ctx}");
}
