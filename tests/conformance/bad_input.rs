//! Bad input is refused with `InvalidInput` naming the field, by every call.

use kasama::prelude::*;
use serde_json::json;

use super::{Repo, S, at, entry, field, interaction, practice, user};

pub(super) async fn bad_input(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let p = practice(&repo, "P", "c", DifficultyLevel::Beginner, &[]).await;
    let long = "x".repeat(10_001);
    let big = json!({"blob": "y".repeat(70_000)});

    for (email, _) in [
        ("no-at.example.com", 0),
        ("a@b", 0),
        ("", 0),
        ("a b@c.de", 0),
    ] {
        let e = repo
            .create_profile(S, NewProfile::new(UserId::new(), email, "N"))
            .await
            .unwrap_err();
        assert_eq!(field(e), "email", "{email:?}");
    }
    let mut np = NewProfile::new(UserId::new(), "ok@example.com", "N");
    np.preferences = big.clone();
    assert_eq!(
        field(repo.create_profile(S, np).await.unwrap_err()),
        "preferences"
    );
    assert_eq!(
        field(
            repo.create_profile(S, NewProfile::new(UserId::new(), "ok@example.com", " "))
                .await
                .unwrap_err()
        ),
        "display_name"
    );

    let asmt = repo
        .create_assessment(
            ua,
            NewAssessment {
                user_id: a,
                assessment_type: "x".into(),
                title: "T".into(),
                created_at: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        field(
            repo.complete_assessment(ua, asmt.id, 101, json!(null))
                .await
                .unwrap_err()
        ),
        "score"
    );
    assert_eq!(
        field(
            repo.complete_assessment(ua, asmt.id, -1, json!(null))
                .await
                .unwrap_err()
        ),
        "score"
    );
    let e = repo
        .create_assessment(
            ua,
            NewAssessment {
                user_id: a,
                assessment_type: "Bad Type".into(),
                title: "T".into(),
                created_at: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(field(e), "assessment_type");
    // A multi-row write with one bad row writes nothing.
    let answers = vec![
        NewAnswer {
            question_id: "q1".into(),
            answer: json!(1),
            score: Some(10),
        },
        NewAnswer {
            question_id: "q2".into(),
            answer: json!(2),
            score: Some(101),
        },
    ];
    assert_eq!(
        field(
            repo.answer_assessment(ua, asmt.id, answers)
                .await
                .unwrap_err()
        ),
        "score"
    );
    let dup = vec![
        NewAnswer {
            question_id: "q1".into(),
            answer: json!(1),
            score: None,
        },
        NewAnswer {
            question_id: "q1".into(),
            answer: json!(2),
            score: None,
        },
    ];
    assert_eq!(
        field(repo.answer_assessment(ua, asmt.id, dup).await.unwrap_err()),
        "question_id"
    );
    assert_eq!(
        field(
            repo.answer_assessment(ua, asmt.id, vec![])
                .await
                .unwrap_err()
        ),
        "answers"
    );
    assert_eq!(repo.list_answers(ua, asmt.id).await.unwrap(), vec![]);

    let base = entry(a, p.id, at(2026, 1, 1, 0), 10, true);
    let cases: Vec<(NewProgress, &str)> = vec![
        (
            NewProgress {
                rating: Some(6),
                ..base.clone()
            },
            "rating",
        ),
        (
            NewProgress {
                rating: Some(0),
                ..base.clone()
            },
            "rating",
        ),
        (
            NewProgress {
                mood_before: Some(0),
                ..base.clone()
            },
            "mood_before",
        ),
        (
            NewProgress {
                mood_after: Some(11),
                ..base.clone()
            },
            "mood_after",
        ),
        (
            NewProgress {
                duration_minutes: -1,
                ..base.clone()
            },
            "duration_minutes",
        ),
        (
            NewProgress {
                completed_at: None,
                ..base.clone()
            },
            "completed_at",
        ),
        (
            NewProgress {
                completed: false,
                ..base.clone()
            },
            "completed_at",
        ),
        (
            NewProgress {
                practice_id: None,
                ..base.clone()
            },
            "activity",
        ),
        (
            NewProgress {
                notes: Some(long.clone()),
                ..base.clone()
            },
            "notes",
        ),
        (
            NewProgress {
                notes: Some("nul\0byte".into()),
                ..base.clone()
            },
            "notes",
        ),
    ];
    for (e, f) in cases {
        assert_eq!(field(repo.log_progress(ua, e).await.unwrap_err()), f);
    }
    assert_eq!(
        repo.list_progress(ua, a, None, Page::default())
            .await
            .unwrap(),
        vec![]
    );

    let g = NewGoal {
        user_id: a,
        title: "G".into(),
        description: long.clone(),
        category: "c".into(),
        target_date: None,
        milestones: vec![],
    };
    assert_eq!(
        field(repo.create_goal(ua, g).await.unwrap_err()),
        "description"
    );
    let g = NewGoal {
        user_id: a,
        title: "G".into(),
        description: String::new(),
        category: "c".into(),
        target_date: None,
        milestones: vec![String::new()],
    };
    assert_eq!(
        field(repo.create_goal(ua, g).await.unwrap_err()),
        "milestones"
    );
    let n = NewNotification {
        user_id: a,
        kind: NotificationType::System,
        priority: PriorityLevel::Low,
        title: "T".into(),
        body: String::new(),
        data: big.clone(),
    };
    assert_eq!(
        field(repo.create_notification(ua, n).await.unwrap_err()),
        "data"
    );
    let n = NewNotification {
        user_id: a,
        kind: NotificationType::System,
        priority: PriorityLevel::Low,
        title: "T".into(),
        body: String::new(),
        data: json!({"s": "a\u{0}b"}),
    };
    assert_eq!(
        field(repo.create_notification(ua, n).await.unwrap_err()),
        "data"
    );
    let mut i = interaction(a, AgentType::LearningCoach, -1, None);
    assert_eq!(
        field(repo.record_interaction(ua, i.clone()).await.unwrap_err()),
        "[0].cost_nanos"
    );
    i.cost_nanos = 1;
    i.output = big;
    assert_eq!(
        field(repo.record_interaction(ua, i).await.unwrap_err()),
        "[0].output"
    );

    assert_eq!(
        field(
            repo.list_goals(
                ua,
                a,
                Page {
                    limit: 0,
                    offset: 0
                }
            )
            .await
            .unwrap_err()
        ),
        "limit"
    );
    assert_eq!(
        field(
            repo.list_goals(
                ua,
                a,
                Page {
                    limit: 501,
                    offset: 0
                }
            )
            .await
            .unwrap_err()
        ),
        "limit"
    );
    assert_eq!(
        field(
            repo.search_practices(ua, "  ", Page::default())
                .await
                .unwrap_err()
        ),
        "query"
    );
    let backwards = DateRange {
        from: at(2026, 2, 1, 0),
        to: at(2026, 1, 1, 0),
    };
    assert_eq!(
        field(
            repo.user_statistics(ua, a, Some(backwards))
                .await
                .unwrap_err()
        ),
        "range"
    );
    let e = repo
        .create_assessment(
            ua,
            NewAssessment {
                user_id: UserId::new(),
                assessment_type: "x".into(),
                title: "T".into(),
                created_at: None,
            },
        )
        .await
        .unwrap_err();
    assert!(e.is_forbidden(), "{e:?}");
    let e = repo
        .create_assessment(
            S,
            NewAssessment {
                user_id: UserId::new(),
                assessment_type: "x".into(),
                title: "T".into(),
                created_at: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(field(e), "user_id");
}
