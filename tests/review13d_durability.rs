//! Review of issue 13 (fourth round): is spend durable whatever the database's
//! default commit mode?
//!
//! The CHANGELOG and migration 0011 promise "Spend stays durable: a settlement commits
//! synchronously" — but `kasama_budget_settle` commits "as the caller's transaction is
//! set", and neither it nor `PgRepository`'s pools (which now force the session's
//! isolation level "whatever the database's default") set `synchronous_commit`. A
//! database (or role, or server) tuned with `synchronous_commit = off` — a common
//! setting, and exactly what migration 0011 itself chose for reservations — makes
//! every settlement asynchronous: a crash (or one backend killed, which makes the
//! server recover) then forgets settlements already reported written, and their cost
//! is never booked ("money counted not at all"), with no retry left to book it.
//!
//! Deterministic: the WAL writer is paused (SIGSTOP) while the settlement is written,
//! then killed (SIGKILL), which makes PostgreSQL recover. A synchronous commit flushes
//! its own WAL and does not need the WAL writer; an asynchronous one is still in
//! shared memory and is lost.
//!
//! Real PostgreSQL cluster of its own; fails, never skips, where one cannot be made.

use std::time::Duration;

use kasama::pipeline::{Budgets, PgBudget};
use kasama::prelude::*;

mod common;

fn signal(sig: &str, pid: i32) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_cost_survives_a_crash_on_a_database_defaulting_to_asynchronous_commit() {
    let cluster = common::cluster::Cluster::create()
        .expect("could not create a throwaway PostgreSQL cluster (needs root, runuser and initdb)");
    let name = "kasama_r13d_async_default";
    let (_, app) = common::provision(&cluster.url(), name).await;
    let dba = common::connect(&cluster.url()).await.unwrap();
    // The DBA's tuning: this database commits asynchronously by default.
    dba.batch_execute(&format!(
        "ALTER DATABASE {name} SET synchronous_commit = off"
    ))
    .await
    .unwrap();
    let pool = PgRepository::connect(&PgConfig::new(app.clone()))
        .unwrap()
        .pool()
        .clone();
    let b = PgBudget::new(pool)
        .timeout(Duration::from_millis(500))
        .unwrap()
        .settle_patience(Duration::from_secs(5))
        .unwrap();
    let u = UserId::new();
    let hold = b
        .reserve(u, SubscriptionTier::Free, 1_000, &Budgets::unlimited())
        .await
        .unwrap();
    // The hold is flushed (so only the settlement is at stake).
    dba.batch_execute("CHECKPOINT").await.unwrap();
    let walwriter: i32 = dba
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    drop(dba);
    signal("-STOP", walwriter);
    // The call cost 600 n$; the settlement is written and reported so.
    hold.settle(600);
    b.flush().await;
    let status = b.status();
    // One backend dies (here the WAL writer): PostgreSQL recovers from its WAL.
    signal("-KILL", walwriter);
    let mut spent = None;
    for _ in 0..150 {
        match b.spent(u).await {
            Ok(s) => {
                spent = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let spent = spent.expect("the server answers again after its crash recovery");
    assert_eq!(status.settled, 1, "{status:?}");
    assert_eq!(
        spent.day, 600,
        "a settlement reported written (status {status:?}) was forgotten by the crash: \
         the call's 600 n$ are booked nowhere in the shared ledger ({spent:?})"
    );
}
