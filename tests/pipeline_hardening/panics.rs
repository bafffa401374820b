//! A backend's panic fails only the call it hit and trips its breaker like any
//! failure; a Retry-After past the clock is an error, not a panic.

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::AiAgent;
use kasama::metrics::NoopMetrics;
use kasama::pipeline::{BatchConfig, Router, RouterConfig};
use kasama::prelude::*;

use super::{Act, Agent, ask, cost};
use crate::common::pipeline::{ONE_CALL, PRICE, builder, memory, users};

// ---- a panic while retrying one member wipes its batch mates' billed answers ----

/// A batch of two goes to the backend; member 0 is answered (the provider bills it),
/// member 1 fails retryably and its retry panics. The panic is caught around the whole
/// `call_batch`, so member 0's answer is thrown away: its caller gets an error and the
/// ledger never sees a cost the provider billed.
#[tokio::test(start_paused = true)]
async fn a_panic_while_retrying_one_member_does_not_wipe_its_batch_mates_answer() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let a = Agent::new("a", 100, Act::Panic);
    a.script_batch(vec![Act::Answer, Act::Fail]);
    let p = builder(repo.clone())
        .backend(a.clone())
        .batching(BatchConfig {
            window: Duration::from_millis(50),
            max_batch: 2,
            ..Default::default()
        })
        .build()
        .unwrap();
    let (r0, r1) = tokio::join!(
        p.complete(ask(u, "question zero"), SubscriptionTier::Free),
        p.complete(ask(u, "question one"), SubscriptionTier::Free),
    );
    assert!(r1.is_err());
    let billed = a.billed(PRICE);
    assert_eq!(
        billed,
        cost(PRICE, ONE_CALL),
        "the provider billed member 0"
    );
    let _ = p.shutdown().await;
    assert!(r0.is_ok(), "member 0 was answered by the backend: {r0:?}");
    assert_eq!(
        p.ledger().total().cost_nanos,
        billed,
        "the ledger holds what the backend billed"
    );
}

// ---- a backend that panics every time is never tripped and stays preferred ----

/// A backend that fails (an `Err`) is tripped after 5 consecutive failures and its
/// requests are retried on the other backend. One that *panics* is neither: the
/// abandoned call guard treats every panic as "caller went away", so the breaker never
/// counts it, the EWMA never sees it (it stays the fastest-looking backend) and the
/// request is not retried elsewhere.
#[tokio::test(start_paused = true)]
async fn a_backend_that_always_panics_is_tripped_and_avoided_like_one_that_fails() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let bad = Agent::new("bad", 0, Act::Panic);
    let good = Agent::new("good", 100, Act::Answer);
    let p = builder(repo)
        .backend(bad.clone())
        .backend(good.clone())
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap();
    let mut failed = 0;
    for i in 0..30 {
        if p.complete(ask(u, &format!("question {i}")), SubscriptionTier::Free)
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    let status = p.backends();
    let bad_status = status.iter().find(|b| b.name == "bad").unwrap();
    assert!(
        failed <= 5 && bad_status.trips >= 1,
        "{failed} of 30 requests failed on a backend that panics every time \
         (a backend that returns errors instead: 0 failed); its status: {bad_status:?}"
    );
}

// ---- a huge Retry-After panics the router ----

/// `Retry-After: 18446744073709551615` (OpenAiCompatibleAgent parses it to
/// `Duration::from_secs(u64::MAX)`) makes `Instant::now() + wait` overflow in
/// `Router::call_until`: a panic, not a `RateLimited` error (inside a batch it also
/// wipes the batch mates' answers, see above).
#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_from_a_backend_is_an_error_not_a_panic() {
    let a = Agent::new("a", 10, Act::RateLimited(Duration::from_secs(u64::MAX)));
    let r = Arc::new(
        Router::new(
            vec![(a as Arc<dyn AiAgent>, PRICE)],
            RouterConfig::default(),
            Arc::new(NoopMetrics),
        )
        .unwrap(),
    );
    let req = ask(UserId::new(), "slow down?");
    let out = tokio::spawn(async move { r.call(&req).await }).await;
    let out = out.expect("Router::call panicked on a backend's Retry-After");
    assert!(matches!(out, Err(Error::RateLimited { .. })), "{out:?}");
}
