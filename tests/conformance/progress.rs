//! Progress entries and learning paths.

use kasama::prelude::*;

use super::{Repo, S, at, entry, field, practice, user};
use crate::common::fixtures::new_goal;

pub(super) async fn progress_and_paths(repo: Repo) {
    let a = user(&repo, 1).await;
    let b = user(&repo, 2).await;
    let ua = Actor::User(a);
    let p1 = practice(&repo, "One", "c", DifficultyLevel::Beginner, &[]).await;
    let p2 = practice(&repo, "Two", "c", DifficultyLevel::Beginner, &[]).await;
    let p3 = practice(&repo, "Three", "c", DifficultyLevel::Beginner, &[]).await;
    let gb = repo.create_goal(S, new_goal(b, "B's")).await.unwrap();

    let mut e = entry(a, p1.id, at(2026, 3, 1, 10), 25, true);
    e.rating = Some(4);
    e.mood_before = Some(3);
    e.mood_after = Some(8);
    e.notes = Some("went well".into());
    let logged = repo.log_progress(ua, e).await.unwrap();
    assert_eq!(logged.created_at, at(2026, 3, 1, 10));
    assert_eq!(logged.completed_at, Some(at(2026, 3, 1, 10)));
    assert_eq!(logged.rating, Some(4));

    // References must exist and be the same user's.
    let bad = NewProgress {
        goal_id: Some(gb.id),
        ..entry(a, p1.id, at(2026, 3, 2, 10), 5, false)
    };
    assert_eq!(
        field(repo.log_progress(ua, bad).await.unwrap_err()),
        "goal_id"
    );
    let bad = entry(a, PracticeId::new(), at(2026, 3, 2, 10), 5, false);
    assert_eq!(
        field(repo.log_progress(ua, bad).await.unwrap_err()),
        "practice_id"
    );

    let path = repo
        .create_learning_path(
            ua,
            NewLearningPath {
                user_id: a,
                title: "Basics".into(),
                description: "Start here".into(),
                practice_ids: vec![p1.id, p2.id, p3.id],
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (path.current_step, path.progress, path.completed),
        (0, 0, false)
    );
    let e = repo
        .create_learning_path(
            ua,
            NewLearningPath {
                user_id: a,
                title: "X".into(),
                description: String::new(),
                practice_ids: vec![p1.id, PracticeId::new()],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(field(e), "practice_ids");
    let step2 = repo.advance_learning_path(ua, path.id, 2).await.unwrap();
    assert_eq!(
        (step2.current_step, step2.progress, step2.completed),
        (2, 66, false)
    );
    let end = repo.advance_learning_path(ua, path.id, 3).await.unwrap();
    assert_eq!(
        (end.current_step, end.progress, end.completed),
        (3, 100, true)
    );
    assert!(end.completed_at.is_some());
    assert_eq!(
        field(
            repo.advance_learning_path(ua, path.id, 4)
                .await
                .unwrap_err()
        ),
        "current_step"
    );
    assert_eq!(
        field(
            repo.advance_learning_path(ua, path.id, -1)
                .await
                .unwrap_err()
        ),
        "current_step"
    );
    let back = repo.advance_learning_path(ua, path.id, 1).await.unwrap();
    assert_eq!(
        (back.progress, back.completed, back.completed_at),
        (33, false, None)
    );
    assert_eq!(repo.get_learning_path(ua, path.id).await.unwrap(), back);
    assert_eq!(
        repo.list_learning_paths(ua, a, Page::default())
            .await
            .unwrap(),
        vec![back.clone()]
    );

    let on_path = NewProgress {
        practice_id: None,
        learning_path_id: Some(path.id),
        ..entry(a, p1.id, at(2026, 3, 5, 10), 10, false)
    };
    let on_path = repo.log_progress(ua, on_path).await.unwrap();
    let r = DateRange {
        from: at(2026, 3, 2, 0),
        to: at(2026, 4, 1, 0),
    };
    assert_eq!(
        repo.list_progress(ua, a, Some(r), Page::default())
            .await
            .unwrap(),
        vec![on_path.clone()]
    );
    assert_eq!(
        repo.list_progress(ua, a, None, Page::default())
            .await
            .unwrap(),
        vec![on_path, logged]
    );
}
