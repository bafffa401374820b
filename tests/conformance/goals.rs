//! Goals and their milestones.

use chrono::NaiveDate;
use kasama::prelude::*;

use super::{Repo, at, entry, field, practice, user};

pub(super) async fn goals(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let g = repo
        .create_goal(
            ua,
            NewGoal {
                user_id: a,
                title: "Weekly check-ins".into(),
                description: "Talk every Sunday".into(),
                category: "communication".into(),
                target_date: NaiveDate::from_ymd_opt(2027, 1, 31),
                milestones: vec!["First talk".into(), "Four in a row".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(g.progress, 0);
    assert_eq!(g.milestones.len(), 2);
    assert!(!g.milestones[0].completed);

    let u = repo
        .update_goal(
            ua,
            g.id,
            GoalUpdate {
                title: Some("Sunday check-ins".into()),
                target_date: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.title, "Sunday check-ins");
    assert_eq!(u.target_date, None);
    assert_eq!(u.description, "Talk every Sunday");

    let m = repo.complete_milestone(ua, g.id, 1).await.unwrap();
    assert!(m.milestones[1].completed && m.milestones[1].completed_at.is_some());
    assert!(!m.milestones[0].completed);
    let m2 = repo.complete_milestone(ua, g.id, 1).await.unwrap();
    assert_eq!(
        m2.milestones, m.milestones,
        "completing twice changes nothing"
    );
    assert_eq!(
        field(repo.complete_milestone(ua, g.id, 2).await.unwrap_err()),
        "milestone"
    );

    let done = repo.set_goal_progress(ua, g.id, 100).await.unwrap();
    assert!(done.completed);
    assert!(done.completed_at.is_some());
    let done2 = repo.set_goal_progress(ua, g.id, 100).await.unwrap();
    assert_eq!(
        done2.completed_at, done.completed_at,
        "completion time is kept"
    );
    let reopened = repo.set_goal_progress(ua, g.id, 60).await.unwrap();
    assert!(!reopened.completed);
    assert_eq!(reopened.completed_at, None);
    assert_eq!(reopened.progress, 60);
    assert_eq!(
        field(repo.set_goal_progress(ua, g.id, 101).await.unwrap_err()),
        "progress"
    );

    assert_eq!(
        repo.list_goals(ua, a, Page::default()).await.unwrap(),
        vec![reopened.clone()]
    );

    // A goal-only progress entry goes with the goal; a practice entry keeps its practice.
    let p = practice(
        &repo,
        "Check-in",
        "communication",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;
    let only_goal = NewProgress {
        practice_id: None,
        goal_id: Some(g.id),
        ..entry(a, p.id, at(2026, 2, 1, 8), 5, false)
    };
    repo.log_progress(ua, only_goal).await.unwrap();
    let both = NewProgress {
        goal_id: Some(g.id),
        ..entry(a, p.id, at(2026, 2, 2, 8), 5, false)
    };
    let both = repo.log_progress(ua, both).await.unwrap();
    repo.delete_goal(ua, g.id).await.unwrap();
    assert!(repo.get_goal(ua, g.id).await.unwrap_err().is_not_found());
    assert!(repo.delete_goal(ua, g.id).await.unwrap_err().is_not_found());
    let left = repo
        .list_progress(ua, a, None, Page::default())
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, both.id);
    assert_eq!(left[0].goal_id, None);
    assert_eq!(left[0].practice_id, Some(p.id));
}
