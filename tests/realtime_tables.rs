//! The change feed delivers an event for every table it promises — insert, update and
//! delete — naming the table (not a partition), on PostgreSQL and in memory alike; rows
//! that partition maintenance moves send nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::fixtures::{
    new_answer, new_assessment, new_goal, new_learning_path, new_reminder, own_feed,
};
use kasama::prelude::*;
use kasama::realtime::{
    ChangeOp as Op, ChangeTable as T, Hub, MemoryRealtime, PgRealtime, PgRealtimeConfig, Realtime,
    RealtimeEvent, Subscription,
};
use serde_json::json;

const S: Actor = Actor::Service;

async fn next_change(s: &mut Subscription) -> (T, Op, uuid::Uuid) {
    match tokio::time::timeout(Duration::from_secs(10), s.next_event()).await {
        Ok(Some(RealtimeEvent::Change(e))) => (e.table, e.op, e.id),
        other => panic!("expected a change within 10 s, got {other:?}"),
    }
}

/// Takes as many changes as `want` has, in any order (one statement's row events
/// come in an order PostgreSQL does not promise).
async fn expect_set(s: &mut Subscription, want: &[(T, Op, uuid::Uuid)]) {
    let mut got = Vec::new();
    for _ in want {
        got.push(next_change(s).await);
    }
    let key = |v: &[(T, Op, uuid::Uuid)]| {
        let mut v = v.to_vec();
        v.sort_by_key(|(t, o, id)| (format!("{t:?}{o:?}"), *id));
        v
    };
    assert_eq!(key(&got), key(want), "got {got:?}");
}

/// Takes as many changes as `want` has and checks them in order of (table, op), with
/// the ids of each (table, op) compared as sets.
async fn expect(s: &mut Subscription, want: &[(T, Op, uuid::Uuid)]) {
    let mut got = Vec::new();
    for _ in want {
        got.push(next_change(s).await);
    }
    let key = |v: &[(T, Op, uuid::Uuid)]| {
        let mut v = v.to_vec();
        v.sort_by_key(|(t, o, id)| (format!("{t:?}{o:?}"), *id));
        v
    };
    assert_eq!(key(&got), key(want), "got {got:?}");
    let kinds = |v: &[(T, Op, uuid::Uuid)]| v.iter().map(|(t, o, _)| (*t, *o)).collect::<Vec<_>>();
    assert_eq!(kinds(&got), kinds(want));
}

/// Every table, every operation; `maintain` moves rows between partitions (PostgreSQL)
/// and must produce no event.
async fn every_table<F, Fut>(repo: Arc<dyn Repository>, rt: &dyn Realtime, maintain: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let u = UserId::new();
    repo.create_profile(S, NewProfile::new(u, format!("{u}@example.com"), "U"))
        .await
        .unwrap();
    let me = Actor::User(u);
    let practice = repo
        .create_practice(
            S,
            NewPractice {
                title: "Listen".into(),
                description: String::new(),
                category: "communication".into(),
                difficulty: DifficultyLevel::Beginner,
                tags: vec![],
                duration_minutes: 5,
            },
        )
        .await
        .unwrap();
    let mut s = own_feed(rt, u, None);

    // assessments: insert, update (in this month's partition on PostgreSQL).
    let a1 = repo
        .create_assessment(me, new_assessment(u, "communication", "Now", None))
        .await
        .unwrap();
    repo.complete_assessment(me, a1.id, 70, json!({}))
        .await
        .unwrap();
    expect(
        &mut s,
        &[
            (T::Assessments, Op::Insert, a1.id.0),
            (T::Assessments, Op::Update, a1.id.0),
        ],
    )
    .await;

    // goals and progress: insert, update, delete (delete_goal deletes goal-only
    // progress and unlinks the rest).
    let g = repo.create_goal(me, new_goal(u, "G")).await.unwrap();
    repo.update_goal(
        me,
        g.id,
        GoalUpdate {
            title: Some("G2".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let p1 = repo
        .log_progress(
            me,
            NewProgress {
                goal_id: Some(g.id),
                ..NewProgress::practice(u, practice.id, 5)
            },
        )
        .await
        .unwrap();
    let p2 = repo
        .log_progress(
            me,
            NewProgress {
                practice_id: None,
                goal_id: Some(g.id),
                ..NewProgress::practice(u, practice.id, 5)
            },
        )
        .await
        .unwrap();
    repo.delete_goal(me, g.id).await.unwrap();
    expect(
        &mut s,
        &[
            (T::Goals, Op::Insert, g.id.0),
            (T::Goals, Op::Update, g.id.0),
            (T::Progress, Op::Insert, p1.id.0),
            (T::Progress, Op::Insert, p2.id.0),
        ],
    )
    .await;
    expect_set(
        &mut s,
        &[
            (T::Progress, Op::Delete, p2.id.0),
            (T::Goals, Op::Delete, g.id.0),
            (T::Progress, Op::Update, p1.id.0),
        ],
    )
    .await;

    // notifications and learning paths: insert, update.
    let n = repo
        .create_notification(me, new_reminder(u, "N"))
        .await
        .unwrap();
    repo.mark_notifications_read(me, u, &[n.id]).await.unwrap();
    let l = repo
        .create_learning_path(me, new_learning_path(u, vec![practice.id]))
        .await
        .unwrap();
    repo.advance_learning_path(me, l.id, 1).await.unwrap();
    // ai_interactions (its feed switched on): insert. (Interactions are never updated.)
    let i = repo
        .record_interaction(me, common::one_nano_interaction(u, None))
        .await
        .unwrap();
    expect(
        &mut s,
        &[
            (T::Notifications, Op::Insert, n.id.0),
            (T::Notifications, Op::Update, n.id.0),
            (T::LearningPaths, Op::Insert, l.id.0),
            (T::LearningPaths, Op::Update, l.id.0),
            (T::AiInteractions, Op::Insert, i.id.0),
        ],
    )
    .await;

    // An assessment far ahead lands in the DEFAULT partition; maintenance then moves
    // it into a partition of its own, which is no change and sends nothing.
    let later = repo
        .create_assessment(
            me,
            new_assessment(
                u,
                "communication",
                "Later",
                Some(Utc.with_ymd_and_hms(2031, 5, 4, 3, 2, 1).unwrap()),
            ),
        )
        .await
        .unwrap();
    repo.answer_assessment(me, later.id, vec![new_answer("q", json!(1))])
        .await
        .unwrap();
    expect(&mut s, &[(T::Assessments, Op::Insert, later.id.0)]).await;
    maintain().await;
    assert_eq!(repo.list_answers(me, later.id).await.unwrap().len(), 1);

    // Deletes: erasing the user removes a row of every table.
    let report = repo.erase_user(S, u).await.unwrap();
    assert_eq!(report.assessments, 2);
    expect(
        &mut s,
        &[
            (T::Assessments, Op::Delete, a1.id.0),
            (T::Assessments, Op::Delete, later.id.0),
            (T::Progress, Op::Delete, p1.id.0),
            (T::LearningPaths, Op::Delete, l.id.0),
            (T::Notifications, Op::Delete, n.id.0),
            (T::AiInteractions, Op::Delete, i.id.0),
        ],
    )
    .await;
    // Nothing else is pending (the move sent nothing): the next event is a new write.
    let marker = repo
        .create_profile(S, NewProfile::new(u, format!("again-{u}@example.com"), "U"))
        .await
        .unwrap();
    let g2 = repo
        .create_goal(me, new_goal(marker.id, "after"))
        .await
        .unwrap();
    assert_eq!(next_change(&mut s).await, (T::Goals, Op::Insert, g2.id.0));
}

#[tokio::test]
async fn in_memory_every_table_insert_update_delete() {
    let hub = Hub::new(64);
    let repo = Arc::new(
        InMemoryRepository::new()
            .with_change_feed(hub.clone())
            .with_ai_interactions_feed(true),
    );
    let rt = MemoryRealtime::new(hub);
    every_table(repo, &rt, || async {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_every_table_insert_update_delete() {
    let Some(db) = common::pg().await else { return };
    db.repo.ensure_partitions(1, 1).await.unwrap();
    db.repo.set_ai_interactions_feed(true).await.unwrap();
    let rt = PgRealtime::start(PgRealtimeConfig {
        url: db.app_config().url,
        ..Default::default()
    })
    .unwrap();
    assert!(rt.wait_connected(Duration::from_secs(10)).await);
    let repo = db.repo.clone();
    every_table(Arc::new(db.repo.clone()), &rt, || async move {
        // Creates the partition for May 2031 and moves the row (and its answer) there.
        assert!(repo.ensure_partitions(1, 1).await.unwrap() >= 1);
    })
    .await;
    drop(rt);
    db.finish().await;
}
