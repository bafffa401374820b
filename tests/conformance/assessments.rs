//! Assessments and their answers: lifecycle, filters and pages.

use kasama::prelude::*;
use serde_json::json;

use super::{Repo, at, field, user};

pub(super) async fn assessments(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let year_ago = at(2025, 11, 20, 9);
    let old = repo
        .create_assessment(
            ua,
            NewAssessment {
                user_id: a,
                assessment_type: "love_language".into(),
                title: "Love languages".into(),
                created_at: Some(year_ago),
            },
        )
        .await
        .unwrap();
    assert_eq!(old.created_at, year_ago);
    let cur = repo
        .create_assessment(
            ua,
            NewAssessment {
                user_id: a,
                assessment_type: "attachment_style".into(),
                title: "Attachment".into(),
                created_at: None,
            },
        )
        .await
        .unwrap();
    assert!(!cur.completed);
    assert_eq!(cur.completed_at, None);

    let answers = repo
        .answer_assessment(
            ua,
            cur.id,
            vec![
                NewAnswer {
                    question_id: "q2".into(),
                    answer: json!("often"),
                    score: Some(40),
                },
                NewAnswer {
                    question_id: "q1".into(),
                    answer: json!({"choice": 3}),
                    score: None,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        answers
            .iter()
            .map(|x| x.question_id.as_str())
            .collect::<Vec<_>>(),
        ["q2", "q1"]
    );
    assert!(
        answers
            .iter()
            .all(|x| x.user_id == a && x.assessment_id == cur.id)
    );
    // Answering again replaces.
    let again = repo
        .answer_assessment(
            ua,
            cur.id,
            vec![NewAnswer {
                question_id: "q2".into(),
                answer: json!("rarely"),
                score: Some(80),
            }],
        )
        .await
        .unwrap();
    assert_eq!(again[0].id, answers[0].id);
    let listed = repo.list_answers(ua, cur.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].question_id, "q1");
    assert_eq!(listed[1].answer, json!("rarely"));
    assert_eq!(listed[1].score, Some(80));
    assert_eq!(repo.list_answers(ua, old.id).await.unwrap(), vec![]);

    let done = repo
        .complete_assessment(ua, cur.id, 72, json!({"style": "secure"}))
        .await
        .unwrap();
    assert!(done.completed);
    assert!(done.completed_at.is_some());
    assert_eq!(done.score, Some(72));
    assert_eq!(done.insights, json!({"style": "secure"}));
    assert_eq!(repo.get_assessment(ua, cur.id).await.unwrap(), done);
    assert_eq!(
        field(
            repo.complete_assessment(ua, cur.id, 50, json!(null))
                .await
                .unwrap_err()
        ),
        "assessment"
    );
    let e = repo
        .answer_assessment(
            ua,
            cur.id,
            vec![NewAnswer {
                question_id: "q3".into(),
                answer: json!(1),
                score: None,
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(field(e), "assessment");
    assert!(
        repo.complete_assessment(ua, AssessmentId::new(), 50, json!(null))
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Filters and pagination.
    let all = repo
        .list_assessments(ua, a, &AssessmentFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|x| x.id).collect::<Vec<_>>(),
        [cur.id, old.id]
    );
    let by_type = AssessmentFilter {
        assessment_type: Some("love_language".into()),
        ..Default::default()
    };
    assert_eq!(
        repo.list_assessments(ua, a, &by_type, Page::default())
            .await
            .unwrap(),
        vec![old.clone()]
    );
    let open = AssessmentFilter {
        completed: Some(false),
        ..Default::default()
    };
    assert_eq!(
        repo.list_assessments(ua, a, &open, Page::default())
            .await
            .unwrap(),
        vec![old.clone()]
    );
    let recent = AssessmentFilter {
        from: Some(at(2026, 1, 1, 0)),
        ..Default::default()
    };
    assert_eq!(
        repo.list_assessments(ua, a, &recent, Page::default())
            .await
            .unwrap(),
        vec![done.clone()]
    );
    let before = AssessmentFilter {
        to: Some(at(2026, 1, 1, 0)),
        ..Default::default()
    };
    assert_eq!(
        repo.list_assessments(ua, a, &before, Page::default())
            .await
            .unwrap(),
        vec![old.clone()]
    );
    let p2 = repo
        .list_assessments(
            ua,
            a,
            &AssessmentFilter::default(),
            Page {
                limit: 1,
                offset: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(p2, vec![old.clone()]);
}
