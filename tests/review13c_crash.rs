//! Review of issue 13 (third round): a PostgreSQL crash while calls are in flight.
//!
//! Found with the holds in an UNLOGGED table (the first form of migration 0011): a
//! crash — or one backend killed, which makes the server recover — forgot every hold,
//! so a user whose whole cap was held by a call in flight was granted more and ended
//! past their cap; and an instance not yet upgraded, settling with the 0007
//! two-argument function, booked nothing for a hold that was gone. Holds are logged
//! again: a reservation commits asynchronously, so only holds reserved in the WAL
//! writer's last flush interval (200 ms) can be lost. Here the WAL is flushed before
//! each crash (`CHECKPOINT`, as the WAL writer does within that interval).
//!
//! Real PostgreSQL clusters of their own (initdb, crashed with `pg_ctl -m immediate`);
//! fails, never skips, where one cannot be made.

use std::time::Duration;

use kasama::pipeline::{Budgets, PgBudget};
use kasama::prelude::*;

mod common;

fn cluster() -> common::cluster::Cluster {
    common::cluster::Cluster::create()
        .expect("could not create a throwaway PostgreSQL cluster (needs root, runuser and initdb)")
}

/// Flushes the WAL (what the WAL writer does within `wal_writer_delay`), then crashes
/// the server and starts it again.
async fn crash_and_restart(cluster: &common::cluster::Cluster) {
    let dba = common::connect(&cluster.url()).await.unwrap();
    dba.batch_execute("CHECKPOINT").await.unwrap();
    drop(dba);
    assert!(cluster.crash(), "{}", cluster.log());
    assert!(cluster.start(), "{}", cluster.log());
}

async fn connect_retrying(conn: &str) -> tokio_postgres::Client {
    for _ in 0..100 {
        if let Ok(c) = common::connect(conn).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the restarted server does not answer");
}

const CAP: u64 = 1_000;

/// A server of the test's own with database `dbname` (and the app role's URL), a budget
/// on it, a user capped at [`CAP`] a day, and a call of that user holding the whole cap.
async fn whole_cap_in_flight(
    dbname: &str,
) -> (
    common::cluster::Cluster,
    String,
    PgBudget,
    UserId,
    Budgets,
    kasama::pipeline::BudgetHold,
) {
    let cluster = cluster();
    let (_, app) = common::provision(&cluster.url(), dbname).await;
    let pool = PgRepository::connect(&PgConfig::new(app.clone()))
        .unwrap()
        .pool()
        .clone();
    let b = PgBudget::new(pool)
        .timeout(Duration::from_millis(500))
        .unwrap();
    let u = UserId::new();
    let caps = Budgets {
        free_user_daily: Some(CAP),
        ..Budgets::unlimited()
    };
    let first = b
        .reserve_within(u, SubscriptionTier::Free, CAP, &caps)
        .await
        .unwrap();
    (cluster, app, b, u, caps, first)
}

/// Once the server answers again: whether a second call worth `cap` is granted, and
/// what the user's day comes to when both calls end at their exact cost.
async fn second_call(
    b: &PgBudget,
    u: UserId,
    cap: u64,
    caps: &Budgets,
    first: kasama::pipeline::BudgetHold,
) -> (bool, u64) {
    let mut second = None;
    for _ in 0..100 {
        match b.reserve_within(u, SubscriptionTier::Free, cap, caps).await {
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
            r => {
                second = Some(r);
                break;
            }
        }
    }
    let second = second.expect("the server answers again after its crash recovery");
    let granted = second.is_ok();
    first.settle(cap);
    if let Ok(h) = second {
        h.settle(cap);
    }
    b.flush().await;
    (granted, b.spent(u).await.unwrap().day)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_a_user_whose_cap_is_held_in_flight_is_still_refused() {
    // A call worth the whole cap is in flight.
    let (cluster, _, b, u, caps, first) = whole_cap_in_flight("kasama_r13c_crash_cap").await;
    let cap = CAP;
    // Before the crash a second is refused, as it must be.
    match b
        .reserve_within(u, SubscriptionTier::Free, cap, &caps)
        .await
    {
        Err(Error::BudgetExceeded { .. }) => {}
        other => panic!("before the crash: expected BudgetExceeded, got {other:?}"),
    }

    // PostgreSQL crashes and comes back while the call is still running.
    crash_and_restart(&cluster).await;

    // The next reservation of the same user, once the pool has reconnected.
    let (granted, spent) = second_call(&b, u, cap, &caps, first).await;
    assert!(
        !granted,
        "after a crash the call in flight no longer counts: a second call worth the whole cap \
         was granted, and the user's day ends at {spent} n$ against a cap of {cap} n$"
    );
    assert!(spent <= cap, "spent {spent} past the cap {cap}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_instance_settling_after_a_crash_books_its_cost() {
    let cluster = cluster();
    let dbname = "kasama_r13c_crash_old";
    let (_, app) = common::provision(&cluster.url(), dbname).await;
    let u = uuid::Uuid::new_v4();
    let hold = uuid::Uuid::new_v4();
    // An instance not yet upgraded reserves through kasama_budget_reserve (replaced by
    // 0011 under the same signature) ...
    let old = common::connect(&app).await.unwrap();
    let refused: Option<String> = old
        .query_one(
            "SELECT kasama_budget_reserve($1, $2, (now() AT TIME ZONE 'UTC')::date, 700, \
             false, 300000, 10000, NULL, NULL, NULL)",
            &[&hold, &u],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refused, None, "held");
    drop(old);

    // ... PostgreSQL crashes while its call runs ...
    crash_and_restart(&cluster).await;

    // ... and the call ends: the old instance settles it as 0007 taught it to.
    let old = connect_retrying(&app).await;
    let booked: bool = old
        .query_one("SELECT kasama_budget_settle($1, 700)", &[&hold])
        .await
        .unwrap()
        .get(0);
    let dba = connect_retrying(&format!(
        "host=127.0.0.1 port={} user=postgres dbname={dbname}",
        cluster.port
    ))
    .await;
    let spent: i64 = dba
        .query_one(
            "SELECT coalesce(sum(spent_nanos), 0)::bigint FROM ai_budget_spend \
             WHERE user_id = $1 AND period = 'day'",
            &[&u],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (booked, spent),
        (true, 700),
        "the old instance's call cost 700 n$ but the shared ledger booked {spent} n$ \
         (its 2-argument settlement found no hold after the crash)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_backend_killed_by_the_oom_killer_forgets_no_flushed_hold() {
    // Not even a crash of the server: PostgreSQL answers the death of any one backend
    // (the kernel's OOM killer, a segfault) with crash recovery.
    let (cluster, app, b, u, caps, first) = whole_cap_in_flight("kasama_r13c_oom").await;
    let cap = CAP;
    // The WAL writer flushes the hold; then an unrelated session (a report, another
    // service) is killed with SIGKILL.
    let dba = common::connect(&cluster.url()).await.unwrap();
    dba.batch_execute("CHECKPOINT").await.unwrap();
    drop(dba);
    let other = common::connect(&app).await.unwrap();
    let pid: i32 = other
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(other);

    let (granted, spent) = second_call(&b, u, cap, &caps, first).await;
    assert!(
        !granted,
        "a backend killed elsewhere reset the holds: a second call worth the whole cap was \
         granted, and the user's day ends at {spent} n$ against a cap of {cap} n$"
    );
}
