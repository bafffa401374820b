//! Review of issue 13 (fourth round): the 0007 fallback outlives the migration.
//!
//! `PgBudget` falls back to the 0007 functions when `kasama_budget_hold` or the
//! four-argument `kasama_budget_settle` is missing (undefined_function), and records
//! that in `legacy`, an `AtomicBool` that is never cleared. An instance that made one
//! reservation while the database was at 0010 — every instance of a rolling deploy
//! that ships the build before the migration, the example server without
//! `KASAMA_MIGRATION_URL`, or any instance that reserved during the seconds 0011 was
//! being applied (its `CREATE FUNCTION` is invisible until it commits) — keeps the
//! 0007 path after the database reaches 0011, until the process restarts: its
//! reservations stay synchronous (the performance the change is for), and its
//! settlements skip `ai_budget_settled` and, for a hold that is gone, book nothing
//! (the 0007 settlement), which is what 0011 was written to fix. The CHANGELOG says
//! "on a database not yet at 0011 the budget uses the 0007 functions", not "on a
//! database that was not at 0011 when the process first reserved".
//!
//! Real PostgreSQL (fails without it).

use std::time::Duration;

use kasama::pipeline::{Budgets, PgBudget};
use kasama::prelude::*;
use kasama::repository::postgres::MIGRATIONS;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_saw_the_database_at_0010_uses_0011_once_it_is_applied() {
    let db = common::pg()
        .await
        .expect("these tests need PostgreSQL at 127.0.0.1:5432");
    let (name, mut owner) = db.database_at("kasama_r13d_legacy", 10).await;

    let app = common::conn_string(&db.base, Some(common::APP_LOGIN), &name);
    let pool = PgRepository::connect(&PgConfig::new(app))
        .unwrap()
        .pool()
        .clone();
    let b = PgBudget::new(pool)
        .settle_patience(Duration::from_secs(2))
        .unwrap();
    let u = UserId::new();
    let caps = Budgets::unlimited();
    // At 0010: the 0007 functions (as intended).
    let h = b.reserve(u, SubscriptionTier::Free, 1_000, &caps).await;
    let before = h.is_ok();
    if let Ok(h) = h {
        h.settle(600);
    }
    b.flush().await;

    // The operator applies 0011 while the instance runs.
    let m11 = MIGRATIONS.iter().find(|m| m.version == 11).unwrap();
    let tx = owner.transaction().await.unwrap();
    tx.batch_execute(m11.sql).await.unwrap();
    tx.commit().await.unwrap();
    drop(owner);

    // Now at 0011: the settlement should be 0011's (a durable record per hold).
    let h = b.reserve(u, SubscriptionTier::Free, 1_000, &caps).await;
    let after = h.is_ok();
    if let Ok(h) = h {
        h.settle(700);
    }
    b.flush().await;
    let status = b.status();
    let spent = b.spent(u).await;

    let su = common::connect(&common::conn_string(&db.base, None, &name))
        .await
        .unwrap();
    let records: i64 = su
        .query_one("SELECT count(*) FROM ai_budget_settled", &[])
        .await
        .unwrap()
        .get(0);
    drop(su);
    drop(b);
    db.drop_database(&name).await;
    db.finish().await;

    assert!(before && after, "{status:?}");
    assert_eq!(spent.unwrap().day, 1_300, "{status:?}");
    assert_eq!(
        records, 1,
        "after migration 0011 the instance still settles through the 0007 function \
         (no ai_budget_settled record): the fallback chosen at 0010 never ends ({status:?})"
    );
}
