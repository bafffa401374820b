//! Users never see, change or learn of each other's rows (also run on a role
//! that bypasses RLS, from `main.rs`).

use chrono::Utc;
use kasama::prelude::*;
use kasama::realtime::{ChangeEvent, ChangeOp, ChangeTable, hydrate};
use serde_json::json;

use super::{Repo, at, entry, field, interaction, practice, user};
use crate::common::fixtures::{
    new_answer, new_assessment, new_goal, new_learning_path, new_reminder,
};

pub(super) async fn isolation(repo: Repo) {
    let a = user(&repo, 1).await;
    let b = user(&repo, 2).await;
    let (ua, ub) = (Actor::User(a), Actor::User(b));
    let p = practice(&repo, "P", "c", DifficultyLevel::Beginner, &[]).await;
    let asmt = repo
        .create_assessment(ua, new_assessment(a, "x", "T", None))
        .await
        .unwrap();
    let goal = repo
        .create_goal(
            ua,
            NewGoal {
                milestones: vec!["m".into()],
                ..new_goal(a, "G")
            },
        )
        .await
        .unwrap();
    let path = repo
        .create_learning_path(ua, new_learning_path(a, vec![p.id]))
        .await
        .unwrap();
    let note = repo
        .create_notification(ua, new_reminder(a, "N"))
        .await
        .unwrap();
    let logged = repo
        .log_progress(ua, entry(a, p.id, at(2026, 1, 1, 0), 5, true))
        .await
        .unwrap();
    repo.record_interaction(ua, interaction(a, AgentType::LearningCoach, 5, None))
        .await
        .unwrap();
    repo.answer_assessment(
        ua,
        asmt.id,
        vec![NewAnswer {
            question_id: "q0".into(),
            answer: json!("a's answer"),
            score: Some(3),
        }],
    )
    .await
    .unwrap();

    // b reads nothing of a's: single rows are "not found", lists are refused.
    assert!(
        repo.get_progress_entry(ub, logged.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        repo.get_notification(ub, note.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Hydrating a's change events as b yields nothing, for every table.
    for (table, id) in [
        (ChangeTable::Assessments, asmt.id.0),
        (ChangeTable::Goals, goal.id.0),
        (ChangeTable::LearningPaths, path.id.0),
        (ChangeTable::Notifications, note.id.0),
        (ChangeTable::Progress, logged.id.0),
    ] {
        let event = ChangeEvent {
            table,
            op: ChangeOp::Update,
            id,
            user_id: a,
            seq: 1,
            at: Utc::now(),
        };
        assert_eq!(
            hydrate(repo.as_ref(), ub, &event).await.unwrap(),
            None,
            "{table:?}"
        );
        assert!(
            hydrate(repo.as_ref(), ua, &event).await.unwrap().is_some(),
            "{table:?}"
        );
    }
    assert!(
        repo.ai_cost_analysis(ub, Some(a), None)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(repo.erase_user(ub, a).await.unwrap_err().is_forbidden());
    assert!(repo.get_profile(ub, a).await.unwrap_err().is_not_found());
    assert!(
        repo.get_assessment(ub, asmt.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        repo.list_answers(ub, asmt.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(repo.get_goal(ub, goal.id).await.unwrap_err().is_not_found());
    assert!(
        repo.get_learning_path(ub, path.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let pg = Page::default();
    assert!(
        repo.list_assessments(ub, a, &AssessmentFilter::default(), pg)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(repo.list_goals(ub, a, pg).await.unwrap_err().is_forbidden());
    assert!(
        repo.list_progress(ub, a, None, pg)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.list_learning_paths(ub, a, pg)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.list_unread_notifications(ub, a, pg)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.list_interactions(ub, a, pg)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.user_statistics(ub, a, None)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.learning_recommendations(ub, a, 5)
            .await
            .unwrap_err()
            .is_forbidden()
    );

    // b changes nothing of a's.
    let nf = |r: Result<_>| assert!(r.unwrap_err().is_not_found());
    nf(repo
        .answer_assessment(ub, asmt.id, vec![new_answer("q", json!(1))])
        .await
        .map(|_| ()));
    nf(repo
        .complete_assessment(ub, asmt.id, 1, json!(null))
        .await
        .map(|_| ()));
    nf(repo
        .update_goal(
            ub,
            goal.id,
            GoalUpdate {
                title: Some("mine".into()),
                ..Default::default()
            },
        )
        .await
        .map(|_| ()));
    nf(repo.set_goal_progress(ub, goal.id, 100).await.map(|_| ()));
    nf(repo.complete_milestone(ub, goal.id, 0).await.map(|_| ()));
    nf(repo.delete_goal(ub, goal.id).await);
    nf(repo.advance_learning_path(ub, path.id, 1).await.map(|_| ()));
    nf(repo
        .update_profile(
            ub,
            a,
            ProfileUpdate {
                display_name: Some("B was here".into()),
                ..Default::default()
            },
        )
        .await
        .map(|_| ()));
    assert!(
        repo.mark_notifications_read(ub, a, &[note.id])
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert_eq!(
        repo.mark_notifications_read(ub, b, &[note.id])
            .await
            .unwrap(),
        0
    );
    // ... nor writes rows in a's name, nor points at a's rows.
    assert!(
        repo.log_progress(ub, entry(a, p.id, at(2026, 1, 2, 0), 5, true))
            .await
            .unwrap_err()
            .is_forbidden()
    );
    let sneaky = NewProgress {
        goal_id: Some(goal.id),
        ..entry(b, p.id, at(2026, 1, 2, 0), 5, true)
    };
    assert_eq!(
        field(repo.log_progress(ub, sneaky).await.unwrap_err()),
        "goal_id"
    );

    // a's data is untouched.
    assert_eq!(
        repo.get_profile(ua, a).await.unwrap().display_name,
        "User 1"
    );
    assert_eq!(
        repo.list_answers(ua, asmt.id).await.unwrap()[0].answer,
        json!("a's answer")
    );
    assert_eq!(
        repo.get_progress_entry(ua, logged.id).await.unwrap(),
        logged
    );
    assert_eq!(repo.get_notification(ua, note.id).await.unwrap(), note);
    assert_eq!(repo.get_goal(ua, goal.id).await.unwrap(), goal);
    assert_eq!(repo.get_learning_path(ua, path.id).await.unwrap(), path);
    assert_eq!(repo.get_assessment(ua, asmt.id).await.unwrap(), asmt);
    assert_eq!(
        repo.list_unread_notifications(ua, a, pg)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(repo.list_progress(ua, a, None, pg).await.unwrap().len(), 1);
    assert_eq!(
        repo.ai_cost_analysis(ub, Some(b), None)
            .await
            .unwrap()
            .total_requests,
        0
    );
}
