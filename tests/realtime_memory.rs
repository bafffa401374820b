//! The in-memory change feed: the same events as PostgreSQL's, isolation, bounded
//! buffers, unsubscribe on drop, hydration.

mod common;

use std::sync::Arc;

use common::fixtures::{new_goal, new_reminder, own_feed};
use kasama::prelude::*;
use kasama::realtime::{
    ChangeOp, ChangeTable, ChangedRow, Channel, Hub, MemoryRealtime, Realtime, RealtimeEvent,
    hydrate,
};

fn setup(buffer: usize) -> (Arc<InMemoryRepository>, MemoryRealtime) {
    let hub = Hub::new(buffer);
    (
        Arc::new(InMemoryRepository::new().with_change_feed(hub.clone())),
        MemoryRealtime::new(hub),
    )
}

async fn user(repo: &InMemoryRepository) -> UserId {
    let u = UserId::new();
    repo.create_profile(
        Actor::Service,
        NewProfile::new(u, format!("{u}@example.com"), "U"),
    )
    .await
    .unwrap();
    u
}

fn change(e: Option<RealtimeEvent>) -> kasama::realtime::ChangeEvent {
    match e {
        Some(RealtimeEvent::Change(c)) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_publish_ordered_events_only_to_their_owner() {
    let (repo, rt) = setup(64);
    let (a, b) = (user(&repo).await, user(&repo).await);
    let mut sa = own_feed(&rt, a, None);
    let mut goals_only = own_feed(&rt, a, Some(ChangeTable::Goals));
    let mut all_goals = rt
        .subscribe(Actor::Service, Channel::Table(ChangeTable::Goals))
        .unwrap();
    assert!(
        rt.subscribe(
            Actor::User(a),
            Channel::User {
                user: b,
                table: None
            }
        )
        .unwrap_err()
        .is_forbidden()
    );
    assert!(
        rt.subscribe(Actor::User(a), Channel::Table(ChangeTable::Goals))
            .unwrap_err()
            .is_forbidden()
    );

    repo.create_goal(Actor::User(b), new_goal(b, "b's"))
        .await
        .unwrap();
    let g = repo
        .create_goal(Actor::User(a), new_goal(a, "a's"))
        .await
        .unwrap();
    repo.set_goal_progress(Actor::User(a), g.id, 50)
        .await
        .unwrap();
    let n = repo
        .create_notification(Actor::Service, new_reminder(a, "t"))
        .await
        .unwrap();
    repo.delete_goal(Actor::User(a), g.id).await.unwrap();

    let got: Vec<(ChangeTable, ChangeOp)> = (0..4)
        .map(|_| {
            let c = change(futures_util::FutureExt::now_or_never(sa.next_event()).flatten());
            assert_eq!(c.user_id, a, "never another user's events");
            (c.table, c.op)
        })
        .collect();
    assert_eq!(
        got,
        [
            (ChangeTable::Goals, ChangeOp::Insert),
            (ChangeTable::Goals, ChangeOp::Update),
            (ChangeTable::Notifications, ChangeOp::Insert),
            (ChangeTable::Goals, ChangeOp::Delete),
        ]
    );
    let first = change(goals_only.next_event().await);
    assert_eq!((first.table, first.id), (ChangeTable::Goals, g.id.0));
    assert_eq!(change(goals_only.next_event().await).op, ChangeOp::Update);
    assert_eq!(
        change(goals_only.next_event().await).op,
        ChangeOp::Delete,
        "the notification was filtered out"
    );
    // The service's table channel sees both users' goals, in order.
    assert_eq!(change(all_goals.next_event().await).user_id, b);
    assert_eq!(change(all_goals.next_event().await).user_id, a);
    let _ = n;
}

#[tokio::test]
async fn a_subscriber_that_never_reads_lags_without_stalling_others() {
    let (repo, rt) = setup(4);
    let u = user(&repo).await;
    let mut stuck = own_feed(&rt, u, None);
    let mut reader = rt
        .subscribe(Actor::Service, Channel::Table(ChangeTable::Goals))
        .unwrap();
    let mut seen = 0;
    for i in 0..20 {
        repo.create_goal(Actor::User(u), new_goal(u, &format!("g{i}")))
            .await
            .unwrap();
        // The reader keeps up; the stuck one does not read at all.
        change(reader.next_event().await);
        seen += 1;
    }
    assert_eq!(seen, 20);
    assert_eq!(
        stuck.next_event().await,
        Some(RealtimeEvent::Lagged { missed: 16 })
    );
    for _ in 0..4 {
        change(stuck.next_event().await);
    }
    assert_eq!(rt.status().subscribers, 2);
    drop(stuck);
    assert_eq!(
        rt.status().subscribers,
        1,
        "dropping the stream unsubscribes"
    );
}

#[tokio::test]
async fn hydration_reads_as_the_subscriber() {
    let (repo, rt) = setup(16);
    let (a, b) = (user(&repo).await, user(&repo).await);
    let mut s = rt
        .subscribe(Actor::Service, Channel::Table(ChangeTable::Goals))
        .unwrap();
    let g = repo
        .create_goal(Actor::User(a), new_goal(a, "mine"))
        .await
        .unwrap();
    let e = change(s.next_event().await);
    match hydrate(&*repo, Actor::User(a), &e).await.unwrap() {
        Some(ChangedRow::Goal(x)) => assert_eq!(x, g),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        hydrate(&*repo, Actor::User(b), &e).await.unwrap(),
        None,
        "another user reads nothing"
    );
}

#[tokio::test]
async fn limit_buffer_lowers_one_subscriptions_bound_and_never_raises_it() {
    let (repo, rt) = setup(4);
    let u = user(&repo).await;
    let mine = Channel::User {
        user: u,
        table: None,
    };
    let mut small = rt.subscribe(Actor::User(u), mine).unwrap();
    small.limit_buffer(2);
    let mut raised = rt.subscribe(Actor::User(u), mine).unwrap();
    raised.limit_buffer(1000);
    let mut ids = Vec::new();
    for i in 0..10 {
        let g = repo
            .create_goal(Actor::User(u), new_goal(u, &format!("g{i}")))
            .await
            .unwrap();
        ids.push(g.id.0);
    }
    assert_eq!(
        small.next_event().await,
        Some(RealtimeEvent::Lagged { missed: 8 })
    );
    assert_eq!(change(small.next_event().await).id, ids[0]);
    assert_eq!(change(small.next_event().await).id, ids[1]);
    assert_eq!(
        raised.next_event().await,
        Some(RealtimeEvent::Lagged { missed: 6 }),
        "the hub's bound of 4 still applies"
    );
    // Drained, the queue takes new events again, in order.
    let g = repo
        .create_goal(Actor::User(u), new_goal(u, "after"))
        .await
        .unwrap();
    assert_eq!(change(small.next_event().await).id, g.id.0);
}

#[tokio::test]
async fn a_subscription_ends_when_its_feed_is_dropped() {
    let hub = Hub::new(4);
    let rt = MemoryRealtime::new(hub.clone());
    let u = UserId::new();
    let mut s = own_feed(&rt, u, None);
    let waiting = tokio::spawn(async move { s.next_event().await });
    tokio::task::yield_now().await;
    drop(rt);
    drop(hub);
    assert_eq!(waiting.await.unwrap(), None);
}
