//! Time and shutdown: a few seconds of database restart lose no row, durations past
//! the clock are refused, nothing is charged uncounted after shutdown, and a
//! high-priority request is never held back by the batch window.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use async_trait::async_trait;
use kasama::pipeline::{BatchConfig, BreakerConfig, RouterConfig};
use kasama::prelude::*;
use tokio::time::Instant;

use super::{Act, Agent, ask};
use crate::common::pipeline::{builder, memory, rows, users};

// ---- the recorder gives up during a routine database restart ----

/// `record_interactions` fails as a restarting PostgreSQL does (connection refused,
/// retryable) until `up_at`.
struct Restarting {
    up_at: Instant,
    refused: AtomicUsize,
}

#[async_trait]
impl crate::common::RecordHook for Restarting {
    async fn record_interactions(
        &self,
        inner: &InMemoryRepository,
        a: Actor,
        b: &[NewAiInteraction],
    ) -> kasama::Result<u64> {
        if Instant::now() < self.up_at {
            self.refused.fetch_add(1, SeqCst);
            return Err(Error::Backend {
                what: "database connection".into(),
                retryable: true,
                source: "connection refused".into(),
            });
        }
        inner.record_interactions(a, b).await
    }
}

/// PostgreSQL restarting for 3 s (a minor-version upgrade, a failover, a container
/// restart) with the buffer nearly empty: the recorder's default 5 attempts back off
/// 0.1 + 0.2 + 0.4 + 0.8 s = 1.5 s and give the rows up as "failed". Every
/// interaction (and its cost) made during a few seconds of database downtime is lost,
/// though the buffer (100,000 rows) had all the room to hold them until it came back.
#[tokio::test(start_paused = true)]
async fn a_three_second_database_restart_loses_no_interaction() {
    let repo = Arc::new(crate::common::Hooked {
        inner: InMemoryRepository::new(),
        hook: Restarting {
            up_at: Instant::now() + Duration::from_secs(3),
            refused: AtomicUsize::new(0),
        },
    });
    let dynrepo: Arc<dyn Repository> = repo.clone();
    let u = users(&dynrepo, 1).await[0];
    let p = builder(dynrepo.clone())
        .backend(Agent::new("a", 10, Act::Answer))
        .build()
        .unwrap();
    for i in 0..10 {
        p.complete(ask(u, &format!("question {i}")), SubscriptionTier::Free)
            .await
            .unwrap();
    }
    let spent = p.ledger().total().cost_nanos;
    let s = p.shutdown().await;
    assert!(repo.hook.refused.load(SeqCst) > 0, "the restart happened");
    let rows = rows(&dynrepo, u).await;
    assert_eq!(
        (
            rows.len(),
            rows.iter().map(|r| r.cost_nanos as u64).sum::<u64>()
        ),
        (10, spent),
        "rows made during a 3 s restart; recorder: {s:?}"
    );
}

// ---- durations too long for the clock ----

/// `window: Duration::MAX` ("only send full batches") passes `build()`; the first
/// request's `Instant::now() + window` then panics in `Batcher::enqueue` — after its
/// claim (and budget reservation) went into the waiters map and `pending`. The
/// reservation is never settled nor released, and `shutdown()` waits for ever.
#[tokio::test(start_paused = true)]
async fn a_batch_window_past_the_clock_is_refused_or_leaks_nothing() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let built = builder(repo)
        .backend(Agent::new("a", 10, Act::Answer))
        .batching(BatchConfig {
            window: Duration::MAX,
            max_batch: 2,
            ..Default::default()
        })
        .build();
    let Ok(p) = built else { return }; // refused, naming the field: fine
    let p = Arc::new(p);
    let joined = {
        let p = p.clone();
        tokio::spawn(async move { p.complete(ask(u, "alone"), SubscriptionTier::Free).await }).await
    };
    let held = p.ledger().user_reserved(u);
    let shut = tokio::time::timeout(Duration::from_secs(60), p.shutdown()).await;
    assert!(
        joined.is_ok() && held == 0 && shut.is_ok(),
        "complete panicked: {}; {held} n$ still reserved; shutdown finished: {}",
        joined.is_err(),
        shut.is_ok()
    );
}

/// `routing.deadline = Duration::MAX` ("no overall deadline") and
/// `breaker.cool_down = Duration::MAX` ("stay open until restarted") pass `build()`,
/// then `Instant::now() + …` panics on every call (deadline) or on the first trip
/// (cool-down): every request fails as "the backend call panicked". `build()` should
/// refuse them naming the field, as it does a zero.
#[tokio::test(start_paused = true)]
async fn durations_past_the_clock_are_refused_by_build() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let deadline = builder(repo.clone())
        .backend(Agent::new("a", 10, Act::Answer))
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .routing(RouterConfig {
            deadline: Duration::MAX,
            ..Default::default()
        })
        .build();
    if let Ok(p) = deadline {
        let r = p
            .complete(ask(u, "any deadline"), SubscriptionTier::Free)
            .await;
        panic!("routing.deadline = Duration::MAX accepted; a request then ends {r:?}");
    }
    let cool = builder(repo)
        .backend(Agent::new("b", 10, Act::Fail))
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .routing(RouterConfig {
            max_attempts: 1,
            breaker: BreakerConfig {
                consecutive_failures: 1,
                cool_down: Duration::MAX,
                ..Default::default()
            },
            ..Default::default()
        })
        .build();
    if let Ok(p) = cool {
        let r = p.complete(ask(u, "trip me"), SubscriptionTier::Free).await;
        panic!("breaker.cool_down = Duration::MAX accepted; a failing call then ends {r:?}");
    }
}

// ---- shutdown: later requests are answered and billed, their rows lost uncounted ----

/// After `shutdown()` the pipeline still takes requests: it calls the backend, charges
/// the ledger, and drops the row on the floor (the recorder is gone) without counting
/// it anywhere — not in `RecorderStats`, not in `interactions_lost`. A host that shuts
/// the pipeline down before its HTTP server drains (the usual order is the other way,
/// but nothing enforces it) bills users for calls the books never hold.
#[tokio::test(start_paused = true)]
async fn a_request_after_shutdown_is_refused_or_its_lost_row_counted() {
    use kasama::metrics::InMemoryMetrics;
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let metrics = Arc::new(InMemoryMetrics::new());
    let p = builder(repo.clone())
        .backend(Agent::new("a", 10, Act::Answer))
        .metrics(metrics.clone())
        .build()
        .unwrap();
    p.shutdown().await.unwrap();
    let r = p
        .complete(ask(u, "late question"), SubscriptionTier::Free)
        .await;
    if r.is_err() {
        return; // refused after shutdown: fine
    }
    let lost = metrics.snapshot().interactions_lost;
    let rows = rows(&repo, u).await.len();
    assert!(
        rows == 1 || lost.dropped + lost.failed == 1,
        "answered and charged {} n$ after shutdown: {rows} rows, lost counted {lost:?}",
        p.ledger().total().cost_nanos
    );
}

// ---- a high-priority request that joins a queued identical one waits for the window ----

/// "High priority flushes at once" — unless an identical medium request is already
/// queued: the high one joins its waiters and waits out the 150 ms window with it.
#[tokio::test(start_paused = true)]
async fn a_high_priority_request_joining_a_queued_one_is_not_held_back() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let p = Arc::new(
        builder(repo)
            .backend(Agent::new("a", 100, Act::Answer))
            .build()
            .unwrap(),
    );
    let medium = {
        let p = p.clone();
        tokio::spawn(async move {
            p.complete(ask(u, "same question"), SubscriptionTier::Free)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut high = ask(u, "same question");
    high.priority = PriorityLevel::High;
    let t = Instant::now();
    p.complete(high, SubscriptionTier::Free).await.unwrap();
    assert_eq!(
        t.elapsed(),
        Duration::from_millis(100),
        "a high-priority request held back by the batch window"
    );
    medium.await.unwrap().unwrap();
}
