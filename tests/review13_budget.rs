//! Review of issue 13 (`PgBudget`): ways the shared budget breaks.
//!
//! - A reservation whose wait for PostgreSQL ends early (the budget's own timeout, or
//!   a caller that goes away) still lands in the database: its hold then counts
//!   against the user until it expires (5 min by default), though no call was made
//!   and the request was refused or abandoned.
//! - Amounts past `i64::MAX` overflow the reservation's arithmetic in SQL: a refusal
//!   becomes a retryable "database unavailable" error.
//! - The SQL functions end with `set_config('app.service', '', true)`: called inside
//!   a host's service transaction they switch it out of service mode.
//!
//! Real PostgreSQL (fails without it); real time, polled with generous deadlines, no
//! assertion on durations.

use std::sync::Arc;
use std::time::Duration;

use kasama::pipeline::{Budgets, Ledger, PgBudget};
use kasama::prelude::*;

mod common;

use common::pipeline::{builder, users};

async fn require_pg() -> common::TestDb {
    common::pg()
        .await
        .expect("these tests need PostgreSQL at 127.0.0.1:5432")
}

fn budget_on(db: &common::TestDb) -> PgBudget {
    let repo = PgRepository::connect(&db.app_config()).unwrap();
    PgBudget::new(repo.pool().clone())
}

/// Takes `user`'s reservation lock (the advisory lock `kasama_budget_reserve` takes,
/// as the DBA, in an open transaction), so that a reservation for `user` waits on it.
async fn lock_day_line(db: &common::TestDb, user: UserId) -> tokio_postgres::Client {
    let blocker = db.admin().await;
    blocker.batch_execute("BEGIN").await.unwrap();
    blocker
        .execute(
            "SELECT 1 FROM (SELECT pg_advisory_xact_lock(1801548641, hashtext($1::uuid::text))) l",
            &[&user.as_uuid()],
        )
        .await
        .unwrap();
    blocker
}

/// Waits until no reservation statement is running in the database any more.
async fn reservations_done(db: &common::TestDb) {
    let admin = db.admin().await;
    for _ in 0..200 {
        let running: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND state = 'active' \
                 AND query LIKE '%kasama_budget_reserve%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if running == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("a reservation is still running");
}

/// What `user` holds in the shared ledger once any release has had time to land.
async fn held_after_release(budget: &PgBudget, user: UserId) -> u64 {
    let mut held = 0;
    for _ in 0..40 {
        budget.flush().await;
        held = budget.spent(user).await.unwrap().held;
        if held == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_that_timed_out_leaves_no_hold_behind() {
    let db = require_pg().await;
    let u = UserId::new();
    let caps = Budgets {
        free_user_daily: Some(1_000),
        ..Budgets::unlimited()
    };
    let budget = budget_on(&db).timeout(Duration::from_millis(500)).unwrap();
    // A first call makes the user's day line (and costs nothing).
    budget
        .reserve(u, SubscriptionTier::Free, 1_000, &caps)
        .await
        .unwrap()
        .settle(0);
    budget.flush().await;

    // PostgreSQL is slow for this user (here: a lock) past the budget's timeout.
    let blocker = lock_day_line(&db, u).await;
    let r = budget
        .reserve(u, SubscriptionTier::Free, 1_000, &caps)
        .await;
    assert!(
        matches!(r, Err(Error::Timeout { .. })),
        "the reservation timed out: {r:?}"
    );
    // The database gets to it after all.
    blocker.batch_execute("COMMIT").await.unwrap();
    reservations_done(&db).await;

    // The request was refused (503) and no call was made: nothing may stay held.
    assert_eq!(
        held_after_release(&budget, u).await,
        0,
        "a timed-out reservation's hold stays in the shared ledger until it expires"
    );
    // So the user is not locked out of a budget they never spent.
    let again = budget
        .reserve(u, SubscriptionTier::Free, 1_000, &caps)
        .await;
    assert!(again.is_ok(), "refused without having spent: {again:?}");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gone_during_the_shared_reservation_leaves_no_hold_behind() {
    let db = require_pg().await;
    let repo: Arc<dyn Repository> = Arc::new(db.repo.clone());
    let u = users(&repo, 1).await[0];
    let budget = Arc::new(budget_on(&db));
    let p = builder(repo)
        .backend(Arc::new(SimulatedAgent::instant("sim")))
        .shared_budget(budget.clone())
        .build()
        .unwrap();
    let ask = |i: usize| AiRequest::new(u, AgentType::LearningCoach, format!("question {i}"));
    // A first call makes the user's day line.
    p.complete(ask(0), SubscriptionTier::Free).await.unwrap();
    budget.flush().await;
    let before = budget.spent(u).await.unwrap();
    assert_eq!(before.held, 0);

    // The caller (an HTTP client that hung up) goes away while the pipeline waits for
    // PostgreSQL's reservation.
    let blocker = lock_day_line(&db, u).await;
    let gone = tokio::time::timeout(
        Duration::from_millis(300),
        p.complete(ask(1), SubscriptionTier::Free),
    )
    .await;
    assert!(gone.is_err(), "the caller gave up first");
    blocker.batch_execute("COMMIT").await.unwrap();
    reservations_done(&db).await;

    assert_eq!(
        held_after_release(&budget, u).await,
        0,
        "a reservation whose caller went away stays held in the shared ledger until it expires"
    );
    p.shutdown().await.unwrap();
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_reservation_is_refused_not_reported_as_an_outage() {
    let db = require_pg().await;
    let u = UserId::new();
    let caps = Budgets {
        free_user_daily: Some(1_000_000),
        ..Budgets::unlimited()
    };
    let budget = budget_on(&db);
    budget
        .reserve(u, SubscriptionTier::Free, 1_000, &caps)
        .await
        .unwrap()
        .settle(500);
    budget.flush().await;
    // As the in-memory ledger does (saturating), a worst case past every cap is
    // refused by the cap.
    let local = Ledger::new(caps);
    assert!(matches!(
        local.reserve_within(u, SubscriptionTier::Free, u64::MAX),
        Err(Error::BudgetExceeded { .. })
    ));
    match budget
        .reserve_within(u, SubscriptionTier::Free, u64::MAX, &caps)
        .await
    {
        Err(Error::BudgetExceeded { scope }) => assert_eq!(scope, "user daily"),
        other => panic!("expected BudgetExceeded(user daily), got {other:?}"),
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_huge_hold_does_not_turn_every_later_reservation_into_an_error() {
    let db = require_pg().await;
    let u = UserId::new();
    let caps = Budgets {
        free_user_daily: Some(1_000_000),
        ..Budgets::unlimited()
    };
    let budget = budget_on(&db);
    budget
        .reserve(u, SubscriptionTier::Free, 1_000, &caps)
        .await
        .unwrap()
        .settle(500);
    budget.flush().await;
    // Soft cap: spent + held (500) is below the cap, so a huge hold is granted (the
    // in-memory ledger grants it too).
    let _huge = budget
        .reserve(u, SubscriptionTier::Free, u64::MAX, &caps)
        .await
        .unwrap();
    // Now the user is over budget: the next reservation is refused by the cap, not
    // failed as if the database were down.
    match budget.reserve(u, SubscriptionTier::Free, 1, &caps).await {
        Err(Error::BudgetExceeded { scope }) => assert_eq!(scope, "user daily"),
        other => panic!("expected BudgetExceeded(user daily), got {other:?}"),
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_functions_leave_a_callers_service_flag_as_they_found_it() {
    let db = require_pg().await;
    let app = db.app().await;
    // A host's service transaction that also settles a hold (or reserves one).
    for call in [
        "SELECT kasama_budget_settle(gen_random_uuid(), 0)",
        "SELECT kasama_budget_settle(gen_random_uuid(), gen_random_uuid(), current_date, 0)",
        "SELECT kasama_budget_reserve(gen_random_uuid(), gen_random_uuid(), current_date, \
         1, false, 1000, NULL, NULL, NULL, NULL)",
        "SELECT kasama_budget_sweep()",
    ] {
        app.batch_execute("BEGIN; SELECT set_config('app.service', 'on', true)")
            .await
            .unwrap();
        app.batch_execute(call).await.unwrap();
        let flag: String = app
            .query_one("SELECT current_setting('app.service', true)", &[])
            .await
            .unwrap()
            .get(0);
        app.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(
            flag, "on",
            "{call} switched the caller's transaction out of service mode"
        );
    }
    db.finish().await;
}
