//! Partition maintenance: idempotent, concurrent-safe, Monday-aligned weeks, and rows
//! that landed in a DEFAULT partition are moved out (answers included).

mod common;

use chrono::{Datelike, NaiveDate, TimeZone, Utc, Weekday};
use kasama::prelude::*;
use serde_json::json;

const S: Actor = Actor::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_partitions_moves_default_rows_and_is_idempotent() {
    let Some(db) = common::pg().await else { return };
    let repo = &db.repo;
    let a = UserId::new();
    repo.create_profile(S, NewProfile::new(a, "a@example.com", "A"))
        .await
        .unwrap();
    let old = Utc.with_ymd_and_hms(2024, 3, 15, 10, 0, 0).unwrap();
    let asmt = repo
        .create_assessment(
            Actor::User(a),
            NewAssessment {
                user_id: a,
                assessment_type: "x".into(),
                title: "Old".into(),
                created_at: Some(old),
            },
        )
        .await
        .unwrap();
    repo.answer_assessment(
        Actor::User(a),
        asmt.id,
        vec![NewAnswer {
            question_id: "q1".into(),
            answer: json!(3),
            score: Some(60),
        }],
    )
    .await
    .unwrap();
    repo.record_interaction(
        S,
        NewAiInteraction {
            id: None,
            user_id: a,
            agent_type: AgentType::LearningCoach,
            model: "m".into(),
            input: json!(null),
            output: json!(null),
            input_tokens: 1,
            output_tokens: 1,
            cost_nanos: 1,
            saved_nanos: 0,
            latency_ms: 1,
            cache_hit: false,
            success: true,
            created_at: Some(Utc.with_ymd_and_hms(2024, 3, 13, 10, 0, 0).unwrap()),
        },
    )
    .await
    .unwrap();
    let health = repo.system_health(S).await.unwrap().database.unwrap();
    assert_eq!((health.default_partition_rows, health.partitions), (2, 2));

    // Two callers at once: together they create each partition exactly once —
    // 4 months (this one and 3 ahead) + 2024-03, 9 weeks (this one and 8 ahead) + the
    // week of 2024-03-11.
    let (x, y) = tokio::join!(repo.ensure_partitions(3, 8), repo.ensure_partitions(3, 8));
    assert_eq!(x.unwrap() + y.unwrap(), 15);
    assert_eq!(repo.ensure_partitions(3, 8).await.unwrap(), 0);
    let health = repo.system_health(S).await.unwrap().database.unwrap();
    assert_eq!((health.default_partition_rows, health.partitions), (0, 17));

    // The moved rows are intact and still isolated.
    assert_eq!(
        repo.get_assessment(Actor::User(a), asmt.id).await.unwrap(),
        asmt
    );
    let answers = repo.list_answers(Actor::User(a), asmt.id).await.unwrap();
    assert_eq!((answers.len(), answers[0].score), (1, Some(60)));
    assert_eq!(
        repo.list_interactions(Actor::User(a), a, Page::default())
            .await
            .unwrap()
            .len(),
        1
    );

    let admin = db.admin().await;
    let rows = admin
        .query(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'ai_interactions'::regclass AND c.relname <> 'ai_interactions_default'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 10);
    for r in rows {
        let name: String = r.get(0);
        let day = NaiveDate::parse_from_str(name.trim_start_matches("ai_interactions_p"), "%Y%m%d")
            .unwrap();
        assert_eq!(day.weekday(), Weekday::Mon, "{name}");
        let bound: String = r.get(1);
        assert!(
            bound.contains(&day.format("%Y-%m-%d 00:00:00+00").to_string()),
            "{bound}"
        );
    }
    assert_eq!(
        field_of(repo.ensure_partitions(121, 0).await.unwrap_err()),
        "ahead"
    );
    db.finish().await;
}

fn field_of(e: Error) -> String {
    e.invalid_field().expect("InvalidInput").to_string()
}
