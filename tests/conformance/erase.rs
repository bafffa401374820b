//! Erasing a user removes every row of theirs and nothing of anyone else's.

use kasama::prelude::*;
use serde_json::json;

use super::{Repo, S, at, entry, interaction, practice, user};
use crate::common::fixtures::{
    new_answer, new_assessment, new_goal, new_learning_path, new_reminder,
};

pub(super) async fn erase(repo: Repo) {
    let a = user(&repo, 1).await;
    let b = user(&repo, 2).await;
    let p = practice(&repo, "P", "c", DifficultyLevel::Beginner, &[]).await;
    for u in [a, b] {
        let ua = Actor::User(u);
        for month in [1, 6] {
            let asmt = repo
                .create_assessment(ua, new_assessment(u, "x", "T", Some(at(2026, month, 3, 0))))
                .await
                .unwrap();
            repo.answer_assessment(
                ua,
                asmt.id,
                vec![new_answer("q1", json!(1)), new_answer("q2", json!(2))],
            )
            .await
            .unwrap();
        }
        let goal = repo.create_goal(ua, new_goal(u, "G")).await.unwrap();
        repo.create_learning_path(ua, new_learning_path(u, vec![p.id]))
            .await
            .unwrap();
        for d in 1..=3 {
            let e = NewProgress {
                goal_id: Some(goal.id),
                ..entry(u, p.id, at(2026, 1, d, 0), 5, true)
            };
            repo.log_progress(ua, e).await.unwrap();
        }
        repo.create_notification(ua, new_reminder(u, "N"))
            .await
            .unwrap();
        // Interactions in two different weeks (two partitions on PostgreSQL).
        let batch = [
            interaction(u, AgentType::LearningCoach, 5, Some(at(2026, 1, 5, 0))),
            interaction(u, AgentType::LearningCoach, 5, Some(at(2026, 3, 5, 0))),
        ];
        repo.record_interactions(ua, &batch).await.unwrap();
        let conv = repo
            .create_conversation(
                ua,
                NewConversation {
                    user_id: u,
                    agent: AgentType::LearningCoach,
                    title: "C".into(),
                },
            )
            .await
            .unwrap();
        for role in [MessageRole::User, MessageRole::Assistant] {
            let m = NewConversationMessage {
                conversation_id: conv.id,
                role,
                content: "hello".into(),
            };
            repo.add_message(ua, m).await.unwrap();
        }
    }

    // Only the service erases.
    assert!(
        repo.erase_user(Actor::User(a), a)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    let report = repo.erase_user(S, a).await.unwrap();
    assert_eq!(
        report,
        ErasureReport {
            profiles: 1,
            assessments: 2,
            answers: 4,
            goals: 1,
            progress: 3,
            learning_paths: 1,
            notifications: 1,
            ai_interactions: 2,
            conversations: 1,
            conversation_messages: 2,
        }
    );
    assert_eq!(report.total(), 18);
    // Nothing of a's is left, not even for the service.
    assert!(repo.get_profile(S, a).await.unwrap_err().is_not_found());
    let pg = Page::default();
    assert!(
        repo.list_assessments(S, a, &AssessmentFilter::default(), pg)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(repo.list_goals(S, a, pg).await.unwrap().is_empty());
    assert!(repo.list_progress(S, a, None, pg).await.unwrap().is_empty());
    assert!(repo.list_learning_paths(S, a, pg).await.unwrap().is_empty());
    assert!(
        repo.list_unread_notifications(S, a, pg)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(repo.list_interactions(S, a, pg).await.unwrap().is_empty());
    assert!(repo.list_conversations(S, a, 10).await.unwrap().is_empty());
    assert_eq!(
        repo.ai_cost_analysis(S, Some(a), None)
            .await
            .unwrap()
            .total_requests,
        0
    );
    // b keeps everything.
    let ub = Actor::User(b);
    assert_eq!(
        repo.list_assessments(ub, b, &AssessmentFilter::default(), pg)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(repo.list_progress(ub, b, None, pg).await.unwrap().len(), 3);
    assert_eq!(repo.list_interactions(ub, b, pg).await.unwrap().len(), 2);
    let kept = repo.list_conversations(ub, b, 10).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        repo.recent_messages(ub, kept[0].id, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    // a's email is free again; erasing twice is harmless.
    assert_eq!(
        repo.erase_user(S, a).await.unwrap(),
        ErasureReport::default()
    );
    repo.create_profile(
        S,
        NewProfile::new(a, format!("user1-{a}@example.com"), "Again"),
    )
    .await
    .unwrap();
}
