//! Calls are paid for exactly: coalesced twins once, a caller that goes away still
//! (and within its budget), and shutdown waits for calls nobody waits for any more.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use kasama::agent::AiRequest;
use kasama::pipeline::Budgets;
use kasama::prelude::*;

use super::{Mode, Scripted, cost};
use crate::common::pipeline::{ONE_CALL, builder, memory, rows, users};

// ---- coalesced calls are paid once ----

#[tokio::test(start_paused = true)]
async fn ten_identical_concurrent_requests_are_paid_once() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Scripted::new("a", 300, Mode::Answer);
    let p = Arc::new(
        builder(repo.clone())
            .backend(agent.clone())
            .build()
            .unwrap(),
    );
    let req = AiRequest::new(u, AgentType::LearningCoach, "How do I listen better?");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (p, r) = (p.clone(), req.clone());
            tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(agent.calls.load(SeqCst), 1);
    let call = cost(agent.billed());
    assert!(call > 0);
    let payers: Vec<_> = outcomes.iter().filter(|o| !o.coalesced).collect();
    assert_eq!(payers.len(), 1, "one request caused the call");
    assert_eq!((payers[0].cost_nanos, payers[0].saved_nanos), (call, 0));
    for o in outcomes.iter().filter(|o| o.coalesced) {
        assert_eq!((o.cost_nanos, o.saved_nanos), (0, call));
    }
    let total = p.ledger().total();
    assert_eq!(
        (
            total.requests,
            total.cost_nanos,
            total.saved_nanos,
            total.coalesced
        ),
        (10, call, 9 * call, 9)
    );
    assert_eq!(total.saved_by_coalescing_nanos, 9 * call);
    assert_eq!(
        p.ledger().user_today(u),
        call,
        "the budget sees the real spend"
    );
    assert_eq!(p.batch_stats().coalesced, 9);
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 10);
    assert_eq!(rows.iter().map(|r| r.cost_nanos).sum::<i64>(), call as i64);
    assert_eq!(rows.iter().filter(|r| r.cost_nanos == 0).count(), 9);
    assert_eq!(
        rows.iter().map(|r| r.saved_nanos).sum::<i64>(),
        9 * call as i64
    );
}

// ---- a dropped caller does not hide a cost ----

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_is_still_billed_and_recorded() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Scripted::new("a", 500, Mode::Answer);
    let p = Arc::new(
        builder(repo.clone())
            .backend(agent.clone())
            .build()
            .unwrap(),
    );
    let mut expected = 0;
    for i in 0..5 {
        let r = AiRequest::new(u, AgentType::LearningCoach, format!("question {i}"));
        // A client that disconnects after 200 ms (the call is in flight by then).
        let gave_up = tokio::time::timeout(
            Duration::from_millis(200),
            p.complete(r, SubscriptionTier::Free),
        )
        .await;
        assert!(gave_up.is_err(), "the caller gave up before the answer");
        tokio::time::sleep(Duration::from_secs(1)).await;
        expected = cost(agent.billed());
        assert_eq!(p.ledger().user_today(u), expected, "after call {i}");
        assert_eq!(p.ledger().user_reserved(u), 0, "nothing left held");
    }
    assert_eq!(agent.calls.load(SeqCst), 5);
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows.iter().map(|r| r.cost_nanos).sum::<i64>(),
        expected as i64
    );
    assert!(rows.iter().all(|r| r.success));
}

#[tokio::test(start_paused = true)]
async fn disconnecting_does_not_let_a_user_spend_past_the_budget() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Scripted::new("a", 500, Mode::Answer);
    let one_call = cost(ONE_CALL);
    let p = builder(repo)
        .backend(agent.clone())
        .budgets(Budgets {
            free_user_daily: Some(3 * one_call),
            ..Budgets::unlimited()
        })
        .build()
        .unwrap();
    let mut refused = None;
    for i in 0..20 {
        let r = AiRequest::new(u, AgentType::LearningCoach, format!("q {i}"));
        match tokio::time::timeout(
            Duration::from_millis(200),
            p.complete(r, SubscriptionTier::Free),
        )
        .await
        {
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            Ok(Err(e)) => {
                refused = Some((i, e));
                break;
            }
            Ok(Ok(_)) => panic!("answered within 200 ms"),
        }
    }
    let (i, e) = refused.expect("the budget bit");
    assert!(matches!(e, Error::BudgetExceeded { .. }), "{e:?}");
    assert_eq!(
        i, 3,
        "three calls, each billed though nobody waited, fill the budget"
    );
    assert_eq!(agent.calls.load(SeqCst), 3);
    assert!(p.ledger().user_today(u) >= 3 * one_call);
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_calls_whose_callers_went_away() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Scripted::new("a", 500, Mode::Answer);
    let p = builder(repo.clone())
        .backend(agent.clone())
        .build()
        .unwrap();
    let r = AiRequest::new(u, AgentType::LearningCoach, "anyone there?");
    assert!(
        tokio::time::timeout(
            Duration::from_millis(200),
            p.complete(r, SubscriptionTier::Free)
        )
        .await
        .is_err()
    );
    // Shut down while the call is still in flight: it is settled and written first.
    let s = p.shutdown().await.unwrap();
    assert_eq!(s.written, 1);
    assert_eq!(p.ledger().user_today(u), cost(ONE_CALL));
    assert_eq!(rows(&repo, u).await[0].cost_nanos, cost(ONE_CALL) as i64);
}
