//! Partition maintenance: idempotent, concurrent-safe, Monday-aligned weeks, and rows
//! that landed in a DEFAULT partition are moved out (answers included).

mod common;

use chrono::{Datelike, NaiveDate, TimeZone, Utc, Weekday};
use common::fixtures::{new_answer, new_assessment};
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
        .create_assessment(Actor::User(a), new_assessment(a, "x", "Old", Some(old)))
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
        common::one_nano_interaction(
            a,
            Some(Utc.with_ymd_and_hms(2024, 3, 13, 10, 0, 0).unwrap()),
        ),
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

/// Every partition's bounds as UTC instants, per parent, in order.
async fn bounds(admin: &tokio_postgres::Client, parent: &str) -> Vec<(String, String, String)> {
    admin.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    admin
        .query(
            "SELECT c.relname::text,
                    (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1],
                    (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = $1::text::regclass AND c.relname NOT LIKE '%\\_default'
             ORDER BY 2",
            &[&parent],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Bounds are UTC whatever the session's time zone: maintenance run from sessions in
/// New York and Sydney (opposite DST calendars, both changes within the 60 weeks
/// ahead) agrees with itself, leaves no gap or overlap, and rows at the DST edges land
/// in their partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_bounds_are_utc_in_any_session_time_zone() {
    let Some(db) = common::pg().await else { return };
    let app = db.app().await;
    let mut created = 0;
    for zone in ["America/New_York", "Australia/Sydney", "Europe/Berlin"] {
        app.batch_execute(&format!("SET TimeZone = '{zone}'"))
            .await
            .unwrap();
        let n: i32 = app
            .query_one("SELECT kasama_ensure_partitions(14, 60)", &[])
            .await
            .unwrap_or_else(|e| panic!("{zone}: {e}"))
            .get(0);
        created += n;
    }
    // The first zone created them all (15 months, 61 weeks); the others found them.
    assert_eq!(created, 15 + 61);
    let admin = db.admin().await;
    let weeks = bounds(&admin, "ai_interactions").await;
    let months = bounds(&admin, "assessments").await;
    assert_eq!((months.len(), weeks.len()), (15, 61));
    for parts in [&weeks, &months] {
        for w in parts.windows(2) {
            assert_eq!(
                w[0].2, w[1].1,
                "gap or overlap between {} and {}",
                w[0].0, w[1].0
            );
        }
    }
    for (name, from, to) in &weeks {
        let day = NaiveDate::parse_from_str(name.trim_start_matches("ai_interactions_p"), "%Y%m%d")
            .unwrap();
        assert_eq!(day.weekday(), Weekday::Mon, "{name}");
        assert_eq!(
            from,
            &format!("{} 00:00:00+00", day.format("%Y-%m-%d")),
            "{name}"
        );
        let next = day + chrono::Duration::days(7);
        assert_eq!(
            to,
            &format!("{} 00:00:00+00", next.format("%Y-%m-%d")),
            "{name}"
        );
    }
    for (name, from, _) in &months {
        assert!(from.ends_with("-01 00:00:00+00"), "{name}: {from}");
    }

    // Rows written at the DST changes of the coming year land in a partition, not in
    // DEFAULT (the first Sunday of November and the second of March in New York; the
    // first Sunday of April and of October in Sydney).
    let a = UserId::new();
    db.repo
        .create_profile(S, NewProfile::new(a, "tz@example.com", "TZ"))
        .await
        .unwrap();
    let year = Utc::now().year() + 1;
    let edges = [
        Utc.with_ymd_and_hms(year, 3, 14, 6, 59, 59).unwrap(),
        Utc.with_ymd_and_hms(year, 4, 4, 15, 59, 59).unwrap(),
        Utc.with_ymd_and_hms(year, 10, 3, 16, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(year - 1, 11, 30, 23, 59, 59).unwrap(),
    ]
    .into_iter()
    .filter(|t| *t > Utc::now() && *t < Utc::now() + chrono::Duration::weeks(60))
    .collect::<Vec<_>>();
    assert!(!edges.is_empty());
    for t in &edges {
        db.repo
            .record_interaction(S, common::one_nano_interaction(a, Some(*t)))
            .await
            .unwrap();
    }
    let in_default: i64 = admin
        .query_one("SELECT count(*) FROM ai_interactions_default", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_default, 0);
    db.finish().await;
}

/// An answer committed while its assessment moves out of the DEFAULT partition is
/// kept: the move waits for the writer (before 0006 the move cascaded it away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_written_during_a_partition_move_is_kept() {
    let Some(db) = common::pg().await else { return };
    let a = UserId::new();
    db.repo
        .create_profile(S, NewProfile::new(a, "mover@example.com", "M"))
        .await
        .unwrap();
    let asmt = db
        .repo
        .create_assessment(
            Actor::User(a),
            new_assessment(
                a,
                "x",
                "Far ahead",
                Some(Utc.with_ymd_and_hms(2032, 7, 10, 12, 0, 0).unwrap()),
            ),
        )
        .await
        .unwrap();
    // The writer does what answer_assessment does, and holds its transaction open.
    let mut writer = db.app().await;
    let tx = writer.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true)",
        &[&a.to_string()],
    )
    .await
    .unwrap();
    let row = tx
        .query_one(
            "SELECT created_at FROM assessments WHERE id = $1 FOR UPDATE",
            &[&asmt.id.0],
        )
        .await
        .unwrap();
    let created: chrono::DateTime<Utc> = row.get(0);
    tx.execute(
        "INSERT INTO assessment_answers (id, assessment_id, assessment_created_at, user_id, question_id, answer)
         VALUES ($1, $2, $3, $4, 'q-during-move', '1')",
        &[&uuid::Uuid::new_v4(), &asmt.id.0, &created, &a.0],
    )
    .await
    .unwrap();

    let repo = db.repo.clone();
    let mover = tokio::spawn(async move { repo.ensure_partitions(0, 0).await });
    // Wait until the move is blocked on the writer's locks.
    let admin = db.admin().await;
    let mut waited = false;
    for _ in 0..200 {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND query LIKE '%kasama_ensure_partitions%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            waited = true;
            break;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(waited, "the move waits for the writer");
    tx.commit().await.unwrap();
    assert!(mover.await.unwrap().unwrap() >= 1);

    let answers = db.repo.list_answers(Actor::User(a), asmt.id).await.unwrap();
    assert_eq!(answers.len(), 1, "the answer survived the move");
    assert_eq!(answers[0].question_id, "q-during-move");
    let in_default: i64 = admin
        .query_one("SELECT count(*) FROM assessments_default", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_default, 0);
    db.finish().await;
}

/// Retention drops whole partitions older than the cut-off (assessments with their
/// answers, AI interactions) and keeps everything newer and the DEFAULT partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_partitions_only() {
    let Some(db) = common::pg().await else { return };
    let repo = &db.repo;
    let a = UserId::new();
    repo.create_profile(S, NewProfile::new(a, "old@example.com", "O"))
        .await
        .unwrap();
    let ua = Actor::User(a);
    let mut ids = Vec::new();
    for t in [
        Utc.with_ymd_and_hms(2024, 1, 15, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2024, 6, 15, 0, 0, 0).unwrap(),
        Utc::now(),
    ] {
        let asmt = repo
            .create_assessment(ua, new_assessment(a, "x", "T", Some(t)))
            .await
            .unwrap();
        repo.answer_assessment(ua, asmt.id, vec![new_answer("q", json!(1))])
            .await
            .unwrap();
        repo.record_interaction(ua, common::one_nano_interaction(a, Some(t)))
            .await
            .unwrap();
        ids.push(asmt.id);
    }
    repo.ensure_partitions(1, 1).await.unwrap();
    assert_eq!(
        field_of(
            repo.drop_partitions_before(Utc::now() + chrono::Duration::days(1))
                .await
                .unwrap_err()
        ),
        "before"
    );
    let cut = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
    let dropped = repo.drop_partitions_before(cut).await.unwrap();
    assert_eq!(
        dropped,
        ["ai_interactions_p20240115", "assessments_p202401"]
    );
    assert!(repo.drop_partitions_before(cut).await.unwrap().is_empty());
    assert!(
        repo.get_assessment(ua, ids[0])
            .await
            .unwrap_err()
            .is_not_found()
    );
    for id in &ids[1..] {
        assert_eq!(repo.list_answers(ua, *id).await.unwrap().len(), 1);
    }
    assert_eq!(
        repo.list_interactions(ua, a, Page::default())
            .await
            .unwrap()
            .len(),
        2
    );
    let admin = db.admin().await;
    let answers: i64 = admin
        .query_one("SELECT count(*) FROM assessment_answers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(answers, 2);
    db.finish().await;
}
