//! Review of issue 13 (third round): the new `PgBudget` beside a schema of another
//! version.
//!
//! The new code settles through `kasama_budget_settle(uuid, uuid, date, bigint)`, which
//! only migration 0011 creates, but still reserves through the 0007 signature. An
//! instance of the new build that starts before the migration is applied (a rolling
//! deploy, or the example server, which runs no migration without
//! `KASAMA_MIGRATION_URL`) is granted every reservation, makes the calls, and then
//! every settlement fails and is abandoned: the spend is never booked in the shared
//! ledger ("money is never spent unaccounted", README), and the holds count until
//! they expire.
//!
//! And the operator is not told why: `SharedBudgetStatus::last_error` (and the
//! warning logged per attempt) says only "shared budget failed" — `pg_error` puts
//! PostgreSQL's code and message in the error's source, which `Error`'s `Display`
//! leaves out.
//!
//! Real PostgreSQL (fails without it).

use std::time::Duration;

use kasama::pipeline::{Budgets, PgBudget};
use kasama::prelude::*;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_build_on_a_database_at_0010_books_every_call_through_the_0007_functions() {
    let db = common::pg()
        .await
        .expect("these tests need PostgreSQL at 127.0.0.1:5432");
    // A database migrated up to 0010 (what every instance ran before this change).
    let (name, owner) = db.database_at("kasama_r13c_mixed", 10).await;
    drop(owner);

    let app = common::conn_string(&db.base, Some(common::APP_LOGIN), &name);
    let pool = PgRepository::connect(&PgConfig::new(app))
        .unwrap()
        .pool()
        .clone();
    let b = PgBudget::new(pool)
        .settle_patience(Duration::from_secs(1))
        .unwrap();
    let u = UserId::new();
    let caps = Budgets {
        free_user_daily: Some(10_000),
        ..Budgets::unlimited()
    };
    let r = b.reserve(u, SubscriptionTier::Free, 1_000, &caps).await;
    // Refusing (fail closed) would be fine; granted, the call is made and costs 600 n$.
    let granted = r.is_ok();
    let mut seen = None;
    if let Ok(hold) = r {
        hold.settle(600);
        b.flush().await;
        seen = Some((b.spent(u).await.unwrap(), b.status()));
    }
    db.drop_database(&name).await;
    db.finish().await;
    let (spent, status) = seen.expect("the 0007 reservation grants the call");
    assert!(granted);
    assert_eq!(
        (spent.day, spent.held, status.abandoned),
        (600, 0, 0),
        "a call admitted on a database at 0010 must be booked ({status:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_failing_on_a_database_error_reports_what_postgresql_said() {
    let db = common::pg()
        .await
        .expect("these tests need PostgreSQL at 127.0.0.1:5432");
    // The schema owner removes both settlements (the 0011 one, and the 0007 one the
    // budget falls back to on a database that predates 0011).
    let owner = db.owner().await;
    owner
        .batch_execute(
            "DROP FUNCTION kasama_budget_settle(uuid, uuid, date, bigint); \
             DROP FUNCTION kasama_budget_settle(uuid, bigint)",
        )
        .await
        .unwrap();
    let repo = PgRepository::connect(&db.app_config()).unwrap();
    let b = PgBudget::new(repo.pool().clone())
        .settle_patience(Duration::from_millis(200))
        .unwrap();
    let h = b
        .reserve(
            UserId::new(),
            SubscriptionTier::Free,
            1_000,
            &Budgets::unlimited(),
        )
        .await
        .unwrap();
    h.settle(600);
    b.flush().await;
    let status = b.status();
    db.finish().await;
    assert_eq!(status.abandoned, 1, "{status:?}");
    let e = status.last_error.unwrap_or_default();
    assert!(
        e.contains("42883") || e.contains("does not exist"),
        "the last error does not say what PostgreSQL said (42883: function \
         kasama_budget_settle(...) does not exist): {e:?}"
    );
}
