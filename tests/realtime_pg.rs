//! The PostgreSQL change feed against real servers: commit order, rollbacks, isolation,
//! a killed listener, a restarted server (a throwaway cluster), slow subscribers, and
//! rows far larger than a NOTIFY payload may be.

mod common;

use std::time::Duration;

use common::cluster::Cluster;

use common::fixtures::{new_goal, own_feed};
use kasama::prelude::*;
use kasama::realtime::{
    ChangeEvent, ChangeOp, ChangeTable, Channel, FeedState, PgRealtime, PgRealtimeConfig, Realtime,
    RealtimeEvent, Subscription,
};

fn cfg(url: String) -> PgRealtimeConfig {
    PgRealtimeConfig {
        url,
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        heartbeat: Duration::from_millis(500),
        heartbeat_timeout: Duration::from_secs(2),
        buffer: 4,
        allow_rls_bypass: false,
    }
}

async fn next(s: &mut Subscription) -> RealtimeEvent {
    tokio::time::timeout(Duration::from_secs(10), s.next_event())
        .await
        .expect("an event within 10 s")
        .expect("the feed is alive")
}

async fn change(s: &mut Subscription) -> ChangeEvent {
    match next(s).await {
        RealtimeEvent::Change(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

/// A fresh database, a connected feed on it, and one user.
async fn feed() -> Option<(common::TestDb, PgRealtime, UserId)> {
    let db = common::pg().await?;
    let rt = PgRealtime::start(cfg(db.app_config().url)).unwrap();
    assert!(rt.wait_connected(Duration::from_secs(10)).await);
    let u = users(&db.repo, 1).await[0];
    Some((db, rt, u))
}

/// Everything of `u`'s.
fn mine(u: UserId) -> Channel {
    Channel::User {
        user: u,
        table: None,
    }
}

async fn users(repo: &PgRepository, n: usize) -> Vec<UserId> {
    let mut v = Vec::new();
    for i in 0..n {
        let u = UserId::new();
        repo.create_profile(
            Actor::Service,
            NewProfile::new(u, format!("rt{i}-{u}@example.com"), "U"),
        )
        .await
        .unwrap();
        v.push(u);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_order_rollbacks_and_isolation() {
    let Some(db) = common::pg().await else { return };
    let rt = PgRealtime::start(cfg(db.app_config().url)).unwrap();
    assert!(rt.wait_connected(Duration::from_secs(10)).await);
    let us = users(&db.repo, 2).await;
    let (a, b) = (us[0], us[1]);
    let mut sa = own_feed(&rt, a, None);
    let mut sb = own_feed(&rt, b, None);
    let mut all = rt
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

    let g1 = db
        .repo
        .create_goal(Actor::User(a), new_goal(a, "g1"))
        .await
        .unwrap();
    let g2 = db
        .repo
        .create_goal(Actor::User(b), new_goal(b, "g2"))
        .await
        .unwrap();
    db.repo
        .set_goal_progress(Actor::User(a), g1.id, 30)
        .await
        .unwrap();

    let e = change(&mut sa).await;
    assert_eq!(
        (e.table, e.op, e.id, e.user_id),
        (ChangeTable::Goals, ChangeOp::Insert, g1.id.0, a)
    );
    let e = change(&mut sa).await;
    assert_eq!((e.op, e.id), (ChangeOp::Update, g1.id.0));
    let e = change(&mut sb).await;
    assert_eq!((e.id, e.user_id), (g2.id.0, b));
    let order: Vec<uuid::Uuid> = vec![
        change(&mut all).await.id,
        change(&mut all).await.id,
        change(&mut all).await.id,
    ];
    assert_eq!(order, [g1.id.0, g2.id.0, g1.id.0], "commit order");

    // A rolled-back write sends nothing: the next event is the committed one after it.
    let mut raw = db.app().await;
    let tx = raw.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true)",
        &[&a.to_string()],
    )
    .await
    .unwrap();
    tx.execute("INSERT INTO goals (id, user_id, title, category) VALUES (gen_random_uuid(), $1, 'never', 'c')", &[&a.0]).await.unwrap();
    tx.rollback().await.unwrap();
    // Two rows in one transaction arrive in the order written, after the commit.
    let tx = raw.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true)",
        &[&a.to_string()],
    )
    .await
    .unwrap();
    let first = uuid::Uuid::new_v4();
    let second = uuid::Uuid::new_v4();
    for id in [first, second] {
        tx.execute(
            "INSERT INTO goals (id, user_id, title, category) VALUES ($1, $2, 't', 'c')",
            &[&id, &a.0],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(change(&mut sa).await.id, first);
    assert_eq!(change(&mut sa).await.id, second);
    // b saw nothing of a's.
    let g3 = db
        .repo
        .create_goal(Actor::User(b), new_goal(b, "g3"))
        .await
        .unwrap();
    assert_eq!(change(&mut sb).await.id, g3.id.0);
    let st = rt.status();
    assert_eq!(
        (st.state, st.subscribers, st.reconnects),
        (FeedState::Connected, 3, 0)
    );
    assert!(st.last_event.is_some());
    drop(rt);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_reconnects_resyncs_and_delivers_again() {
    let Some((db, rt, u)) = feed().await else {
        return;
    };
    let mut s = rt.subscribe(Actor::User(u), mine(u)).unwrap();
    let pid = rt.status().backend_pid.unwrap();
    let admin = db.admin().await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    assert_eq!(next(&mut s).await, RealtimeEvent::Resync);
    let st = rt.status();
    assert_eq!((st.state, st.reconnects), (FeedState::Connected, 1));
    assert_ne!(st.backend_pid, Some(pid));
    let g = db
        .repo
        .create_goal(Actor::User(u), new_goal(u, "after"))
        .await
        .unwrap();
    assert_eq!(change(&mut s).await.id, g.id.0);
    // The heartbeat runs (every 500 ms here) and reports its round trip.
    tokio::time::timeout(Duration::from_secs(5), async {
        while rt.status().last_heartbeat.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a heartbeat within 5 s");
    drop(rt);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_does_not_stall_the_others() {
    let Some((db, rt, u)) = feed().await else {
        return;
    };
    let mut stuck = rt.subscribe(Actor::User(u), mine(u)).unwrap();
    let mut reader = rt
        .subscribe(Actor::Service, Channel::Table(ChangeTable::Goals))
        .unwrap();
    for i in 0..20 {
        db.repo
            .create_goal(Actor::User(u), new_goal(u, &format!("g{i}")))
            .await
            .unwrap();
        // The reader keeps up (buffers are 4 here); the stuck one never reads.
        change(&mut reader).await;
    }
    assert_eq!(next(&mut stuck).await, RealtimeEvent::Lagged { missed: 16 });
    drop(rt);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_with_megabytes_of_json_still_notifies() {
    let Some((db, rt, u)) = feed().await else {
        return;
    };
    let mut s = own_feed(&rt, u, Some(ChangeTable::Notifications));
    // 2 MB of JSON, written past the repository's own 64 KiB limit.
    let admin = db.admin().await;
    let big = serde_json::json!({ "blob": "x".repeat(2_000_000) });
    let id = uuid::Uuid::new_v4();
    admin
        .execute("INSERT INTO notifications (id, user_id, kind, title, data) VALUES ($1, $2, 'system', 'big', $3)", &[&id, &u.0, &big])
        .await
        .expect("the NOTIFY payload stays under 8000 bytes");
    assert_eq!(change(&mut s).await.id, id);
    drop(rt);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_while_subscribed_reconnects_and_resyncs() {
    let Some(cluster) = Cluster::create() else {
        if std::env::var("KASAMA_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
            panic!(
                "could not create a throwaway PostgreSQL cluster (needs root, runuser and initdb)"
            );
        }
        eprintln!("SKIPPED (no throwaway PostgreSQL cluster)");
        return;
    };
    let (_, app) = common::provision(&cluster.url(), "kasama_restart").await;
    let repo = PgRepository::connect(&PgConfig::new(app.clone())).unwrap();
    let rt = PgRealtime::start(cfg(app)).unwrap();
    assert!(rt.wait_connected(Duration::from_secs(10)).await);
    let u = users(&repo, 1).await[0];
    let mut s = rt.subscribe(Actor::User(u), mine(u)).unwrap();
    let before = repo
        .create_goal(Actor::User(u), new_goal(u, "before"))
        .await
        .unwrap();
    assert_eq!(change(&mut s).await.id, before.id.0);

    assert!(cluster.stop());
    tokio::time::timeout(Duration::from_secs(10), async {
        while rt.status().state == FeedState::Connected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the feed notices the server is gone");
    assert!(cluster.start());
    assert_eq!(next(&mut s).await, RealtimeEvent::Resync);
    // The pool's old connections died with the server; a fresh call may need a retry.
    let mut after = None;
    for _ in 0..20 {
        match repo.create_goal(Actor::User(u), new_goal(u, "after")).await {
            Ok(g) => {
                after = Some(g);
                break;
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(change(&mut s).await.id, after.unwrap().id.0);
    assert!(rt.status().reconnects >= 1);
    drop(rt);
}
