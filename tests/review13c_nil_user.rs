//! Review of issue 13 (third round): the nil uuid as a user.
//!
//! The shared ledger keeps everyone's totals under the nil uuid, and migration 0011's
//! `kasama_budget_settle` refuses it ("the nil uuid is not a user") — but
//! `kasama_budget_reserve` grants it (checking its "user" caps against everyone's
//! spend), and `UserId` (so a token whose subject is the nil uuid) accepts it. A call
//! of that user is admitted, then every settlement raises, is retried for the
//! settlement patience and abandoned: its cost is never booked, not even in the
//! global totals.
//!
//! Real PostgreSQL (fails without it).

use std::time::Duration;

use kasama::pipeline::{Budgets, PgBudget};
use kasama::prelude::*;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_of_the_nil_user_is_admitted_and_its_cost_never_booked() {
    let db = common::pg()
        .await
        .expect("these tests need PostgreSQL at 127.0.0.1:5432");
    let repo = PgRepository::connect(&db.app_config()).unwrap();
    let b = PgBudget::new(repo.pool().clone())
        .settle_patience(Duration::from_secs(1))
        .unwrap();
    let nil: UserId = "00000000-0000-0000-0000-000000000000"
        .parse()
        .expect("a user id parses");
    let caps = Budgets {
        free_user_daily: Some(10_000),
        global_daily: Some(1_000_000),
        ..Budgets::unlimited()
    };
    let r = b.reserve(nil, SubscriptionTier::Free, 1_000, &caps).await;
    assert!(
        matches!(&r, Err(e) if e.invalid_field() == Some("user")),
        "the nil user is refused before the database: {r:?}"
    );
    // Refused, nothing was held or booked (no call is made without a hold).
    let global = b.global_spent().await.unwrap();
    let status = b.status();
    db.finish().await;
    assert_eq!((global.day, status.reserved), (0, 0), "{status:?}");
}
