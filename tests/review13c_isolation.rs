//! Review of issue 13 (third round): `kasama_budget_reserve` counts on READ COMMITTED
//! (and only `kasama_budget_hold` commits asynchronously).
//!
//! Migration 0011 queues one user's reservations on an advisory lock and reads what is
//! spent and held in the statement after it, trusting that statement to see every
//! reservation committed while it waited. That holds only under READ COMMITTED. Where
//! the database (or the app's role) defaults to REPEATABLE READ — a common DBA setting
//! — the whole call runs on the snapshot taken before the lock was granted: two
//! reservations of one user queued from two instances both see no hold, and both are
//! granted past the cap. (Under SERIALIZABLE one of them fails, closed.) Fixed: the
//! reservation refuses any other isolation level, and `PgRepository`'s pools set READ
//! COMMITTED on every connection.
//!
//! Real PostgreSQL (fails without it).

use std::time::Duration;

use kasama::pipeline::{Budgets, PgBudget};
use kasama::prelude::*;

mod common;

async fn require_pg() -> common::TestDb {
    common::pg()
        .await
        .expect("these tests need PostgreSQL at 127.0.0.1:5432")
}

/// A pool of its own (another instance).
fn budget_on(db: &common::TestDb) -> PgBudget {
    let repo = PgRepository::connect(&db.app_config()).unwrap();
    PgBudget::new(repo.pool().clone())
        .timeout(Duration::from_secs(20))
        .unwrap()
}

/// Waits until `n` sessions wait for an advisory lock.
async fn waiting_on_advisory_locks(admin: &tokio_postgres::Client, n: i64) {
    for _ in 0..400 {
        let w: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if w >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the reservations never queued on the user's lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_defaulting_to_repeatable_read_does_not_let_two_instances_pass_a_cap() {
    let db = require_pg().await;
    let admin = db.admin().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_isolation = 'repeatable read'",
            db.name
        ))
        .await
        .unwrap();
    let u = UserId::new();
    let caps = Budgets {
        free_user_daily: Some(1_500),
        ..Budgets::unlimited()
    };
    let (a, b) = (budget_on(&db), budget_on(&db));
    // Something else of this user's is being reserved (here: the DBA holds the lock),
    // so both instances' reservations queue behind it.
    let blocker = db.admin().await;
    blocker.batch_execute("BEGIN").await.unwrap();
    blocker
        .execute(
            "SELECT 1 FROM (SELECT pg_advisory_xact_lock(1801548641, hashtext($1::uuid::text))) l",
            &[&u.as_uuid()],
        )
        .await
        .unwrap();
    let (ra, rb) = {
        let fa = a.reserve_within(u, SubscriptionTier::Free, 1_000, &caps);
        let fb = b.reserve_within(u, SubscriptionTier::Free, 1_000, &caps);
        let release = async {
            waiting_on_advisory_locks(&admin, 2).await;
            blocker.batch_execute("COMMIT").await.unwrap();
        };
        let (ra, rb, ()) = tokio::join!(fa, fb, release);
        (ra, rb)
    };
    let granted = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    for r in [&ra, &rb] {
        assert!(
            matches!(r, Ok(_) | Err(Error::BudgetExceeded { .. })),
            "neither held nor refused: {r:?}"
        );
    }
    let held = a.spent(u).await.unwrap().held;
    assert_eq!(
        granted, 1,
        "two reservations of 1000 n$ under a cap of 1500 n$ were both granted \
         (now holding {held} n$): each read the holds with the snapshot taken before it \
         got the user's lock"
    );
    drop((ra, rb));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reservation_refuses_to_decide_under_repeatable_read() {
    let db = require_pg().await;
    let app = db.app().await;
    app.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let e = app
        .query_one(
            "SELECT kasama_budget_reserve(gen_random_uuid(), gen_random_uuid(), current_date, \
             1, false, 1000, 100, NULL, NULL, NULL)",
            &[],
        )
        .await
        .unwrap_err();
    app.batch_execute("ROLLBACK").await.unwrap();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("READ COMMITTED"), "{e:?}");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_pg_budgets_own_reservation_commits_without_waiting_for_the_disk() {
    let db = require_pg().await;
    let app = db.app().await;
    // kasama_budget_hold (PgBudget's statement of its own) commits asynchronously;
    // kasama_budget_reserve, which a host may call inside its own transaction, leaves
    // that transaction's durability alone.
    for (f, expected) in [
        ("kasama_budget_hold", "off"),
        ("kasama_budget_reserve", "on"),
    ] {
        app.batch_execute("BEGIN").await.unwrap();
        app.execute(
            &format!(
                "SELECT {f}(gen_random_uuid(), gen_random_uuid(), current_date, 1, false, \
                 1000, NULL, NULL, NULL, NULL)"
            ),
            &[],
        )
        .await
        .unwrap();
        let sync: String = app
            .query_one("SELECT current_setting('synchronous_commit')", &[])
            .await
            .unwrap()
            .get(0);
        app.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(sync, expected, "{f}");
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asynchronous_reservation_refuses_a_transaction_that_has_written() {
    let db = require_pg().await;
    let app = db.app().await;
    app.batch_execute("BEGIN").await.unwrap();
    // A host's write (here: a settlement, which is durable on its own) ...
    app.batch_execute(
        "SELECT kasama_budget_settle(gen_random_uuid(), gen_random_uuid(), current_date, 0)",
    )
    .await
    .unwrap();
    // ... is not made asynchronous by a reservation in the same transaction.
    let e = app
        .batch_execute(
            "SELECT kasama_budget_hold(gen_random_uuid(), gen_random_uuid(), current_date, \
             1, false, 1000, NULL, NULL, NULL, NULL)",
        )
        .await
        .unwrap_err();
    app.batch_execute("ROLLBACK").await.unwrap();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("asynchronously"), "{e:?}");
    db.finish().await;
}
