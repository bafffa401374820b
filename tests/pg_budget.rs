//! `PgBudget`: budgets shared by every instance through PostgreSQL (as the app role,
//! under forced RLS). Three pipelines with separate memory on one database hold one
//! user to one budget, to the nano-dollar; a pipeline started afresh mid-day still
//! refuses an over-budget user; a hold left by a dead instance counts until it
//! expires; monthly caps; users read only their own lines; a PostgreSQL restart in
//! the middle of a call loses no money and counts none twice, and a reservation while
//! it is down is refused (fail closed).
//!
//! Real time: the ledger talks to a real server. No figure depends on how long
//! anything takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use async_trait::async_trait;
use kasama::agent::{AiResponse, Usage};
use kasama::pipeline::{AiPipeline, Budgets, PgBudget};
use kasama::prelude::*;

mod common;

use common::pipeline::{PRICE, builder, users};

/// One answer's usage and cost.
const USAGE: Usage = Usage {
    input_tokens: 100,
    output_tokens: 100,
};

fn one_call() -> u64 {
    PRICE.cost_nanos(USAGE)
}

/// A backend that answers with [`USAGE`] once `gate` lets it (or at once when open).
struct Gated {
    calls: AtomicU64,
    gate: tokio::sync::Semaphore,
}

impl Gated {
    fn open() -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicU64::new(0),
            gate: tokio::sync::Semaphore::new(tokio::sync::Semaphore::MAX_PERMITS),
        })
    }
    fn closed() -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicU64::new(0),
            gate: tokio::sync::Semaphore::new(0),
        })
    }
}

#[async_trait]
impl AiAgent for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    async fn complete(&self, req: &AiRequest) -> kasama::Result<AiResponse> {
        self.calls.fetch_add(1, SeqCst);
        self.gate.acquire().await.unwrap().forget();
        Ok(AiResponse {
            output: serde_json::json!({ "text": format!("answer to {}", req.question()) }),
            usage: USAGE,
            usage_estimated: false,
            model: "m".into(),
            backend: "gated".into(),
            latency: Duration::from_millis(1),
        })
    }
}

fn pipeline(
    repo: Arc<dyn Repository>,
    agent: Arc<Gated>,
    budget: Arc<PgBudget>,
    budgets: Budgets,
) -> AiPipeline {
    builder(repo)
        .backend(agent)
        .budgets(budgets)
        .shared_budget(budget)
        .build()
        .unwrap()
}

async fn require_pg() -> common::TestDb {
    common::pg()
        .await
        .expect("these tests need PostgreSQL (`.ci/run` starts it)")
}

fn ask(u: UserId, i: usize) -> AiRequest {
    AiRequest::new(u, AgentType::LearningCoach, format!("question {i}"))
}

/// A pool of its own per instance (separate memory, separate connections).
fn budget_on(db: &common::TestDb) -> Arc<PgBudget> {
    let repo = PgRepository::connect(&db.app_config()).unwrap();
    Arc::new(PgBudget::new(repo.pool().clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_hold_one_user_to_one_budget_to_the_nano_dollar() {
    let db = require_pg().await;
    let repo: Arc<dyn Repository> = Arc::new(db.repo.clone());
    let u = users(&repo, 1).await[0];
    let budgets = Budgets {
        free_user_daily: Some(5 * one_call()),
        ..Budgets::unlimited()
    };
    let agent = Gated::open();
    let budgets_of: Vec<_> = (0..3).map(|_| budget_on(&db)).collect();
    let ps: Vec<_> = budgets_of
        .iter()
        .map(|b| pipeline(repo.clone(), agent.clone(), b.clone(), budgets))
        .collect();
    // Rounds of ten concurrent requests sprayed across the three, until a whole
    // round is refused.
    let mut paid = 0u64;
    let mut refused = 0;
    for round in 0..30 {
        let calls = (0..10).map(|i| {
            let p = &ps[i % 3];
            p.complete(ask(u, round * 10 + i), SubscriptionTier::Free)
        });
        let mut answered = 0;
        for r in futures_util::future::join_all(calls).await {
            match r {
                Ok(o) => {
                    paid += o.cost_nanos;
                    answered += 1;
                }
                Err(Error::BudgetExceeded { scope }) => {
                    assert_eq!(scope, "user daily");
                    refused += 1;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        for b in &budgets_of {
            b.flush().await;
        }
        if answered == 0 {
            break;
        }
    }
    for p in &ps {
        p.shutdown().await.unwrap();
    }
    let spent = budgets_of[0].spent(u).await.unwrap();
    assert_eq!(
        spent.day, paid,
        "the shared ledger holds exactly what was paid"
    );
    assert_eq!(spent.month, paid);
    assert_eq!(spent.held, 0, "every hold settled");
    // Together they kept the cap: calls are admitted while spent + held (each hold
    // the call's worst case) is below it, so the spend ends at or past the cap by
    // less than one call — as one instance alone would.
    assert!(paid >= 5 * one_call(), "the budget was used: {paid}");
    assert!(
        paid < 6 * one_call(),
        "less than one call past the cap: {paid}"
    );
    assert!(refused >= 10, "{refused} refused");
    assert_eq!(agent.calls.load(SeqCst) * one_call(), paid);
    let total_local: u64 = ps.iter().map(|p| p.ledger().user_today(u)).sum();
    assert_eq!(total_local, paid, "each call booked once, on one instance");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_calls_across_instances_stop_exactly_at_the_cap() {
    let db = require_pg().await;
    let repo: Arc<dyn Repository> = Arc::new(db.repo.clone());
    let u = users(&repo, 1).await[0];
    let budgets = Budgets {
        free_user_daily: Some(3 * one_call()),
        ..Budgets::unlimited()
    };
    let agent = Gated::open();
    let ps: Vec<_> = (0..3)
        .map(|_| pipeline(repo.clone(), agent.clone(), budget_on(&db), budgets))
        .collect();
    let mut answered = 0;
    for i in 0..9 {
        let p = &ps[i % 3];
        match p.complete(ask(u, i), SubscriptionTier::Free).await {
            Ok(_) => {
                answered += 1;
                // The settlement is written by a task: wait for it before the next.
                p.shared_budget().unwrap().flush().await;
            }
            Err(Error::BudgetExceeded { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        answered, 3,
        "one instance alone would have allowed 3 each (9 in all)"
    );
    // An instance started afresh (a restart: nothing in memory) still refuses.
    let fresh = pipeline(repo.clone(), agent.clone(), budget_on(&db), budgets);
    assert_eq!(
        fresh.ledger().user_today(u),
        0,
        "a new process remembers nothing"
    );
    let e = fresh
        .complete(ask(u, 100), SubscriptionTier::Free)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BudgetExceeded { .. }), "{e:?}");
    assert_eq!(agent.calls.load(SeqCst), 3);
    // Another user is not affected.
    let v = users(&repo, 1).await[0];
    fresh
        .complete(ask(v, 0), SubscriptionTier::Free)
        .await
        .unwrap();
    for p in ps.iter().chain([&fresh]) {
        p.shutdown().await.unwrap();
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_left_by_a_dead_instance_counts_until_it_expires() {
    let db = require_pg().await;
    let repo: Arc<dyn Repository> = Arc::new(db.repo.clone());
    let u = users(&repo, 1).await[0];
    let budgets = Budgets {
        free_user_daily: Some(one_call()),
        ..Budgets::unlimited()
    };
    let admin = db.admin().await;
    // What an instance that died mid-call leaves: a live hold for the whole budget.
    admin
        .execute(
            "INSERT INTO ai_budget_holds (id, user_id, day, amount_nanos, expires_at) \
             VALUES (gen_random_uuid(), $1, (now() AT TIME ZONE 'UTC')::date, $2, now() + interval '1 hour')",
            &[&u.as_uuid(), &(one_call() as i64)],
        )
        .await
        .unwrap();
    let agent = Gated::open();
    let p = pipeline(repo.clone(), agent.clone(), budget_on(&db), budgets);
    let e = p
        .complete(ask(u, 0), SubscriptionTier::Free)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BudgetExceeded { .. }), "{e:?}");
    // Once expired, it no longer counts.
    admin
        .execute(
            "UPDATE ai_budget_holds SET expires_at = now() - interval '1 second' WHERE user_id = $1",
            &[&u.as_uuid()],
        )
        .await
        .unwrap();
    let o = p.complete(ask(u, 1), SubscriptionTier::Free).await.unwrap();
    assert_eq!(o.cost_nanos, one_call());
    p.shutdown().await.unwrap();
    let spent = p.shared_budget().unwrap().spent(u).await.unwrap();
    assert_eq!((spent.day, spent.held), (one_call(), 0));
    assert_eq!(agent.calls.load(SeqCst), 1);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monthly_cap_binds_across_days_and_a_new_month_starts_afresh() {
    let db = require_pg().await;
    let repo: Arc<dyn Repository> = Arc::new(db.repo.clone());
    let u = users(&repo, 1).await[0];
    let budgets = Budgets {
        free_user_daily: Some(2 * one_call()),
        free_user_monthly: Some(3 * one_call()),
        ..Budgets::unlimited()
    };
    let day = Arc::new(std::sync::Mutex::new(
        chrono::NaiveDate::from_ymd_opt(2026, 3, 30).unwrap(),
    ));
    let pool = PgRepository::connect(&db.app_config())
        .unwrap()
        .pool()
        .clone();
    let b = {
        let day = day.clone();
        PgBudget::with_clock(pool, move || *day.lock().unwrap())
    };
    let mut got = Vec::new();
    for d in [(3, 30), (3, 31), (4, 1)] {
        *day.lock().unwrap() = chrono::NaiveDate::from_ymd_opt(2026, d.0, d.1).unwrap();
        for _ in 0..3 {
            match b
                .reserve(u, SubscriptionTier::Free, one_call(), &budgets)
                .await
            {
                Ok(h) => {
                    h.settle(one_call());
                    b.flush().await;
                    got.push("ok".to_string());
                }
                Err(Error::BudgetExceeded { scope }) => got.push(scope.to_string()),
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    assert_eq!(
        got,
        [
            "ok",
            "ok",
            "user daily", // March 30: the daily cap
            "ok",
            "user monthly",
            "user monthly", // March 31: the month's third call
            "ok",
            "ok",
            "user daily", // April: a new month
        ]
    );
    let spent = b.spent(u).await.unwrap();
    assert_eq!(
        (spent.day, spent.month, spent.held),
        (2 * one_call(), 2 * one_call(), 0)
    );
    // A premium user's caps are not the free tier's.
    assert!(
        b.reserve(u, SubscriptionTier::Premium, one_call(), &budgets)
            .await
            .is_ok()
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_settlement_books_nothing_twice_and_users_read_only_their_own_lines() {
    let db = require_pg().await;
    let repo: Arc<dyn Repository> = Arc::new(db.repo.clone());
    let ids = users(&repo, 2).await;
    let (u, v) = (ids[0], ids[1]);
    let b = budget_on(&db);
    let budgets = Budgets::unlimited();
    b.reserve(u, SubscriptionTier::Free, 500, &budgets)
        .await
        .unwrap()
        .settle(70);
    b.reserve(v, SubscriptionTier::Free, 500, &budgets)
        .await
        .unwrap()
        .settle(5);
    // A dropped hold is released: nothing booked.
    drop(
        b.reserve(u, SubscriptionTier::Free, 500, &budgets)
            .await
            .unwrap(),
    );
    b.flush().await;
    assert_eq!(
        b.spent(u).await.unwrap(),
        kasama::pipeline::SharedSpend {
            day: 70,
            month: 70,
            held: 0
        }
    );
    assert_eq!(b.global_spent().await.unwrap().day, 75);
    // The 0007 settlement (kept for instances not yet upgraded): settling a hold that
    // is gone books nothing.
    let app = db.app().await;
    let again: bool = app
        .query_one("SELECT kasama_budget_settle(gen_random_uuid(), 1000)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!again);
    assert_eq!(b.global_spent().await.unwrap().day, 75);
    // A settlement whose hold is gone (forgotten by a crash) books its cost, once: a
    // retry after a lost reply books nothing.
    let lost = uuid::Uuid::new_v4();
    for (attempt, booked) in [(1, true), (2, false)] {
        let r: bool = app
            .query_one(
                "SELECT kasama_budget_settle($1, $2, (now() AT TIME ZONE 'UTC')::date, 5)",
                &[&lost, &u.as_uuid()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(r, booked, "attempt {attempt}");
    }
    assert_eq!(b.spent(u).await.unwrap().day, 75);
    assert_eq!(b.global_spent().await.unwrap().day, 80);
    // As user u (RLS): u's own lines only; no writes.
    let mut c = db.app().await;
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true), set_config('app.service', '', true)",
        &[&u.to_string()],
    )
    .await
    .unwrap();
    let seen: Vec<uuid::Uuid> = tx
        .query("SELECT DISTINCT user_id FROM ai_budget_spend", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, vec![u.as_uuid()]);
    let n = tx
        .execute("UPDATE ai_budget_spend SET spent_nanos = 0", &[])
        .await
        .unwrap();
    assert_eq!(n, 0, "a user cannot rewrite their spend");
    tx.rollback().await.unwrap();
    db.finish().await;
}

/// A throwaway server of the test's own (to stop or crash), with a database `dbname`
/// and a budget on it as the app role.
async fn own_cluster(dbname: &str) -> (common::cluster::Cluster, Arc<PgBudget>) {
    let Some(cluster) = common::cluster::Cluster::create() else {
        panic!("could not create a throwaway PostgreSQL cluster (needs root, runuser and initdb)");
    };
    let (_, app) = common::provision(&cluster.url(), dbname).await;
    let pool = PgRepository::connect(&PgConfig::new(app))
        .unwrap()
        .pool()
        .clone();
    let b = PgBudget::new(pool).timeout(Duration::from_millis(500));
    (cluster, Arc::new(b.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_call_loses_no_money_and_counts_none_twice() {
    let (cluster, b) = own_cluster("kasama_budget_restart").await;
    // Interactions are recorded in memory here: this test is about the budget.
    let repo = common::pipeline::memory();
    let u = users(&repo, 1).await[0];
    let agent = Gated::closed();
    // No caps: this test is about the books, not the refusals.
    let budgets = Budgets::unlimited();
    let p = Arc::new(pipeline(repo.clone(), agent.clone(), b.clone(), budgets));
    let first = tokio::spawn({
        let p = p.clone();
        async move { p.complete(ask(u, 0), SubscriptionTier::Free).await }
    });
    // The call is held (its reservation is in the database) when the server stops.
    while agent.calls.load(SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(cluster.stop());
    // While it is down, no call is made without a reservation: refused, retryable.
    let e = p
        .complete(ask(u, 1), SubscriptionTier::Free)
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(!matches!(e, Error::BudgetExceeded { .. }), "{e:?}");
    assert_eq!(agent.calls.load(SeqCst), 1);
    assert_eq!(b.status().unavailable, 1);
    // The held call answers while the server is down: its settlement waits.
    agent.gate.add_permits(1);
    let o = first.await.unwrap().unwrap();
    assert_eq!(o.cost_nanos, one_call());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The call's settlement, and the release of the reservation that failed (it
    // might have landed after all), wait for the database.
    assert_eq!(b.status().pending, 2, "{:?}", b.status());
    let monitor =
        kasama::health::HealthMonitor::new(Arc::new(kasama::metrics::InMemoryMetrics::new()))
            .with_shared_budget(b.clone());
    let check = |r: kasama::health::HealthReport| {
        r.checks
            .into_iter()
            .find(|c| c.check == kasama::health::Check::SharedBudget)
            .expect("the shared budget is checked")
            .status
    };
    assert_eq!(
        check(monitor.evaluate().await),
        kasama::health::Status::Critical
    );
    assert!(cluster.start());
    b.flush().await;
    assert_eq!(
        check(monitor.evaluate().await),
        kasama::health::Status::Healthy
    );
    let s = b.status();
    assert_eq!((s.settled, s.abandoned, s.pending), (2, 0, 0), "{s:?}");
    let spent = b.spent(u).await.unwrap();
    assert_eq!(
        spent,
        kasama::pipeline::SharedSpend {
            day: one_call(),
            month: one_call(),
            held: 0
        }
    );
    // And calls flow again (the pool replaces its dead connections).
    agent.gate.add_permits(100);
    let mut ok = None;
    for i in 0..20 {
        match p.complete(ask(u, 10 + i), SubscriptionTier::Free).await {
            Ok(o) => {
                ok = Some(o);
                break;
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        ok.expect("answered after the restart").cost_nanos,
        one_call()
    );
    p.shutdown().await.unwrap();
    assert_eq!(b.spent(u).await.unwrap().day, 2 * one_call());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_mid_call_keeps_the_flushed_hold_and_books_the_cost_once() {
    let (cluster, b) = own_cluster("kasama_budget_crash").await;
    let dba_url = cluster
        .url()
        .replace("dbname=postgres", "dbname=kasama_budget_crash");
    let repo = common::pipeline::memory();
    let u = users(&repo, 1).await[0];
    let agent = Gated::closed();
    let budgets = Budgets {
        free_user_daily: Some(10 * one_call()),
        ..Budgets::unlimited()
    };
    let p = Arc::new(pipeline(repo.clone(), agent.clone(), b.clone(), budgets));
    let first = tokio::spawn({
        let p = p.clone();
        async move { p.complete(ask(u, 0), SubscriptionTier::Free).await }
    });
    while agent.calls.load(SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(b.spent(u).await.unwrap().held > 0, "the call is held");
    // The WAL writer flushes the asynchronously committed hold (within 200 ms; here a
    // checkpoint), then PostgreSQL crashes while the call is held, and recovers.
    let dba = common::connect(&dba_url).await.unwrap();
    dba.batch_execute("CHECKPOINT").await.unwrap();
    drop(dba);
    assert!(cluster.crash());
    assert!(cluster.start(), "{}", cluster.log());
    let dba = common::connect(&dba_url).await.unwrap();
    let holds: i64 = dba
        .query_one("SELECT count(*) FROM ai_budget_holds", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(holds, 1, "the flushed hold survives the crash");
    agent.gate.add_permits(1);
    let o = first.await.unwrap().unwrap();
    assert_eq!(o.cost_nanos, one_call());
    b.flush().await; // its settlement books the cost though its hold is gone
    let s = b.status();
    assert_eq!((s.settled, s.abandoned, s.pending), (1, 0, 0), "{s:?}");
    assert_eq!(
        b.spent(u).await.unwrap(),
        kasama::pipeline::SharedSpend {
            day: one_call(),
            month: one_call(),
            held: 0
        }
    );
    assert_eq!(b.global_spent().await.unwrap().day, one_call());
    // Calls flow again (once the pool has replaced a connection the crash closed).
    agent.gate.add_permits(100);
    for i in 0.. {
        match p.complete(ask(u, 10 + i), SubscriptionTier::Free).await {
            Err(e) if e.is_retryable() && i < 20 => {}
            r => {
                assert_eq!(r.unwrap().cost_nanos, one_call());
                break;
            }
        }
    }
    p.shutdown().await.unwrap();
    assert_eq!(b.spent(u).await.unwrap().day, 2 * one_call());
}
