//! Review of issue 13: many concurrent reservations and settlements from three
//! instances (pools) for several users under a global daily and monthly cap, with
//! sweeps running alongside: no deadlock or other database error, and everyone
//! together stops less than one call past the global cap. Real PostgreSQL (fails
//! without it); real time, no assertion on durations.

use std::sync::Arc;

use kasama::pipeline::{Budgets, PgBudget};
use kasama::prelude::*;

mod common;

const CALL: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_caps_hold_under_concurrent_load_from_three_instances() {
    let db = common::pg()
        .await
        .expect("these tests need PostgreSQL at 127.0.0.1:5432");
    let budgets: Vec<Arc<PgBudget>> = (0..3)
        .map(|_| {
            let repo = PgRepository::connect(&db.app_config()).unwrap();
            Arc::new(PgBudget::new(repo.pool().clone()))
        })
        .collect();
    let caps = Budgets {
        global_daily: Some(150 * CALL),
        global_monthly: Some(10_000 * CALL),
        free_user_daily: Some(1_000 * CALL),
        free_user_monthly: Some(1_000 * CALL),
        ..Budgets::unlimited()
    };
    let users: Vec<UserId> = (0..6).map(|_| UserId::new()).collect();
    let mut tasks = Vec::new();
    for t in 0..24 {
        let b = budgets[t % 3].clone();
        let u = users[t % users.len()];
        tasks.push(tokio::spawn(async move {
            let mut paid = 0u64;
            loop {
                match b.reserve(u, SubscriptionTier::Free, CALL, &caps).await {
                    Ok(h) => {
                        h.settle(CALL);
                        paid += CALL;
                    }
                    Err(Error::BudgetExceeded { scope }) => {
                        assert_eq!(scope, "global daily");
                        return paid;
                    }
                    Err(e) => panic!("{e:?}"),
                }
                if t % 8 == 0 {
                    b.sweep().await.unwrap();
                }
            }
        }));
    }
    let mut paid = 0;
    for t in tasks {
        paid += t.await.unwrap();
    }
    for b in &budgets {
        b.flush().await;
        let s = b.status();
        assert_eq!(s.abandoned, 0, "{s:?}");
        assert!(s.last_error.is_none(), "{s:?}");
    }
    let g = budgets[0].global_spent().await.unwrap();
    assert_eq!(g.day, paid);
    assert_eq!(g.held, 0);
    assert!(paid >= 150 * CALL, "{paid}");
    assert!(paid < 151 * CALL, "more than one call past the cap: {paid}");
    db.finish().await;
}
