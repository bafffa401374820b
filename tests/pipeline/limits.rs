//! Limits and queues: a reached budget is refused before any backend call, one user's
//! flood is rate-limited while another is served, the queue is bounded and priorities
//! decide when a batch leaves, and a waiter that gives up breaks nothing.

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::AiRequest;
use kasama::pipeline::{AiPipeline, BatchConfig, Budgets, RateLimitConfig};
use kasama::prelude::*;
use tokio::time::Instant;

use super::sim;
use crate::common::pipeline::{memory, relaxed, users};

#[tokio::test(start_paused = true)]
async fn a_reached_budget_is_refused_before_any_backend_call() {
    let repo = memory();
    let us = users(&repo, 2).await;
    let agent = sim("a", 10, 0.0);
    let budgets = Budgets {
        free_user_daily: Some(40_000_000),
        ..Budgets::unlimited()
    };
    let p = AiPipeline::builder(repo)
        .backend(agent.clone())
        .rate_limits(RateLimitConfig::unlimited())
        .budgets(budgets)
        .build()
        .unwrap();
    let mut answered = 0;
    let refused = loop {
        let r = AiRequest::new(
            us[0],
            AgentType::LearningCoach,
            format!("question {answered}"),
        );
        let before = agent.calls();
        match p.complete(r, SubscriptionTier::Free).await {
            Ok(_) => answered += 1,
            Err(e) => {
                assert_eq!(
                    agent.calls(),
                    before,
                    "no backend call for a refused request"
                );
                break e;
            }
        }
        assert!(answered < 100);
    };
    assert!(
        matches!(refused, Error::BudgetExceeded { .. }),
        "{refused:?}"
    );
    assert!(answered >= 2, "{answered}");
    let spent = p.ledger().user_today(us[0]);
    assert!(
        spent >= 40_000_000,
        "refused only once the budget was reached: {spent}"
    );
    assert!(
        spent < 40_000_000 + 40_000_000,
        "passed by at most one call's cost: {spent}"
    );
    // Another user's budget is untouched.
    p.complete(
        AiRequest::new(us[1], AgentType::LearningCoach, "hello"),
        SubscriptionTier::Free,
    )
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_flood_from_one_free_user_is_limited_while_another_is_served() {
    let repo = memory();
    let us = users(&repo, 2).await;
    let p = AiPipeline::builder(repo)
        .backend(sim("a", 5, 0.0))
        .budgets(Budgets::unlimited())
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap(); // default limits: free users 10 a minute, bursts of 5
    let mut ok = 0;
    let mut wait = None;
    for i in 0..20 {
        match p
            .complete(
                AiRequest::new(us[0], AgentType::LearningCoach, format!("flood {i}")),
                SubscriptionTier::Free,
            )
            .await
        {
            Ok(_) => ok += 1,
            Err(Error::RateLimited { retry_after }) => {
                wait.get_or_insert(retry_after);
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 5, "the burst");
    let wait = wait.unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(6),
        "{wait:?}"
    );
    p.complete(
        AiRequest::new(us[1], AgentType::LearningCoach, "I am not flooding"),
        SubscriptionTier::Free,
    )
    .await
    .unwrap();
    tokio::time::advance(wait).await;
    p.complete(
        AiRequest::new(us[0], AgentType::LearningCoach, "after waiting"),
        SubscriptionTier::Free,
    )
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_bounded_and_priorities_decide_when_a_batch_leaves() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = sim("a", 1000, 0.0);
    let p = Arc::new(
        relaxed(repo)
            .backend(agent.clone())
            .batching(BatchConfig {
                max_queue: 2,
                ..Default::default()
            })
            .build()
            .unwrap(),
    );
    let spawn = |q: &str, prio: PriorityLevel| {
        let p = p.clone();
        let mut r = AiRequest::new(u, AgentType::LearningCoach, q.to_string());
        r.priority = prio;
        tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await })
    };
    let low = spawn("low one", PriorityLevel::Low);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        agent.calls(),
        0,
        "a low-priority request waits for the 150 ms window"
    );
    let high = spawn("urgent one", PriorityLevel::High);
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        agent.calls(),
        2,
        "a high-priority request flushes the batch at once"
    );
    // Two waiting: the third distinct request is refused at once.
    let t = Instant::now();
    let third = p
        .complete(
            AiRequest::new(u, AgentType::LearningCoach, "third"),
            SubscriptionTier::Free,
        )
        .await;
    assert!(matches!(third, Err(Error::Overloaded { .. })), "{third:?}");
    assert_eq!(t.elapsed(), Duration::ZERO);
    low.await.unwrap().unwrap();
    high.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_gives_up_does_not_break_the_batch_for_the_others() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = sim("a", 500, 0.0);
    let p = Arc::new(relaxed(repo).backend(agent.clone()).build().unwrap());
    let req = AiRequest::new(u, AgentType::LearningCoach, "same question");
    let mk = || {
        let (p, r) = (p.clone(), req.clone());
        tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await })
    };
    let (a, b, c) = (mk(), mk(), mk());
    tokio::time::sleep(Duration::from_millis(200)).await; // the batch is in flight
    b.abort();
    assert!(a.await.unwrap().is_ok());
    assert!(c.await.unwrap().is_ok());
    assert_eq!(agent.calls(), 1);
}
