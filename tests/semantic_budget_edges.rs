//! The error budget's edges, from the second review of issue 14 (each test failed on
//! the code it was written against): a busy bad level is not outvoted by quiet good
//! ones (outcomes are weighed by traffic), a stationary stream within the budget
//! raises no drift alarms, absurd settings are refused, and a paid judge's money
//! survives shutdown and a panicking judge. Each test's "Observed" is what the review
//! saw before the fix. Tokio's paused clock, fixed seeds.

use std::sync::Arc;
use std::time::Duration;

use kasama::prelude::*;
use kasama::semantic::{ErrorBudget, SemanticCache};

mod common;

use common::semantic::{Dial, anchored, answer, ask, dial_cache, dial_run, mix};

/// [`dial_run`] 100 ms apart.
async fn run(
    cache: &SemanticCache,
    u: UserId,
    from: u64,
    n: u64,
    pick: impl Fn(u64) -> (f32, bool),
) -> (u64, u64) {
    dial_run(cache, u, (from, n), Duration::from_millis(100), pick).await
}

/// Promise (issue 14): "the observed wrong-answer rate stays within the budget".
/// A stationary stream, budget 2 %: half the requests sit at similarity 0.99 and
/// are wrong 5 % of the time; the other half are spread over 0.90..0.98 and always
/// right. Served at any threshold ≤ 0.90 the wrong share is 2.5 % — over budget —
/// and at 0.99 alone 5 %, so a valid learner serves (almost) nothing. The learner
/// keeps at most `window` (1,000) outcomes PER LEVEL, so the heavy 0.99 level
/// weighs as much as each thin one: its 1,000 outcomes (≈50 wrong) are diluted by
/// 9,000 right ones from the thin levels, the walk accepts 0.90 with an "upper
/// bound" of ≈1.1 %, and everything is served. The drift check fires now and then,
/// the evidence is relearned, and the same threshold comes back.
/// Observed (min_audits 300, 80,000 requests): 38,542 served, 954 wrong = 2.48 %
/// (budget allows 770); `error_estimate` meanwhile reports rate ≈0.9 %, upper
/// bound ≈1.1 % at threshold 0.9. (With the default min_audits 30: 2.51 % over
/// 120,000 requests.)
#[tokio::test(start_paused = true)]
async fn a_busy_bad_level_is_not_outvoted_by_quiet_good_ones() {
    let cache = dial_cache(ErrorBudget {
        min_audits: 300,
        ..ErrorBudget::new(0.02)
    });
    let u = anchored(&cache).await;
    let pick = |i: u64| {
        let r = mix(i ^ 0xFEED);
        if r % 100 < 50 {
            (0.99, mix(r) % 100 < 5)
        } else {
            (0.90 + ((r >> 20) % 9) as f32 / 100.0, false)
        }
    };
    let (served, bad) = run(&cache, u, 0, 80_000, pick).await;
    let est = cache
        .error_estimate(&cache.scope_of(&ask(u, "anchor")))
        .unwrap();
    println!("served {served}, wrong {bad}; {est:?}");
    // A single threshold cannot leave out the busy, bad top level, so a correct
    // learner serves (almost) nothing here; what it serves stays within budget.
    assert!(
        bad * 50 <= served,
        "served wrong share {bad}/{served} = {:.2} % over the 2 % budget",
        100.0 * bad as f64 / served as f64
    );
}

/// Promise (budget.rs module docs, "Drift"): evidence is dropped only when the
/// served-class audits show "at the budget's confidence" (95 %) a wrong share above
/// the budget; the hit rate on a stationary stream within budget should not keep
/// collapsing. The test is a sliding window of `min_audits` (30) re-run at every
/// audit with no correction for the repetition, so on a stream that NEVER changes
/// — every question at 0.95, wrong 0.5 % of the time, a quarter of the 2 % budget —
/// any two wrong audits within 30 raise a "drift" (Wilson lower bound of 2/30 is
/// 2.2 %), and all evidence (1,000 audits) is thrown away each time.
/// Observed: 100,000 requests, `drifts` = 5 (at 1 % wrong: 13).
#[tokio::test(start_paused = true)]
async fn a_stationary_stream_at_a_quarter_of_the_budget_raises_no_drift_alarm() {
    let cache = dial_cache(ErrorBudget::new(0.02));
    let u = anchored(&cache).await;
    let pick = |i: u64| (0.95, mix(mix(i ^ 0xD1F7)) % 1000 < 5);
    let (served, bad) = run(&cache, u, 0, 100_000, pick).await;
    let est = cache
        .error_estimate(&cache.scope_of(&ask(u, "anchor")))
        .unwrap();
    println!("served {served}, wrong {bad}; {est:?}");
    assert!(
        bad * 50 <= served,
        "the stream is within budget: {bad}/{served}"
    );
    assert_eq!(
        est.drifts, 0,
        "a stream that never changed was declared drifted {} times",
        est.drifts
    );
}

/// House rule: no panics (or aborts) on bad input; ErrorBudget::validate accepts
/// any positive `window`. A budget with `window` = usize::MAX / 2 builds; the first
/// audit resolved allocates the level's ring up front (`vec![0u64; cap/64]`,
/// 2^60 bytes) and the process aborts (memory allocation failed). Observed: the
/// test process dies with SIGABRT at the first `resolve_audit`.
#[tokio::test(start_paused = true)]
async fn a_huge_window_is_refused_at_build() {
    // Fixed: refused when the cache is built, naming the field.
    let e = SemanticCache::builder(Arc::new(Dial))
        .error_budget(ErrorBudget {
            window: usize::MAX / 2,
            ..ErrorBudget::new(0.05)
        })
        .build()
        .unwrap_err();
    assert_eq!(e.invalid_field(), Some("window"));
}

// ---- money: a paid judge through the pipeline ----

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use async_trait::async_trait;
use kasama::agent::{AiAgent, AiRequest, AiResponse, Usage};
use kasama::pipeline::Price;
use kasama::semantic::LlmJudgeVerifier;
use serde_json::json;

use common::pipeline::{ONE_CALL, builder, memory, users};

const JUDGE_PRICE: Price = Price {
    input_micros_per_1k: 500,
    output_micros_per_1k: 1_500,
};

/// A judge: says YES (or NO) after `latency`, 120 input tokens and 1 output token a call;
/// panics on call number `panic_on` (1-based; 0 never).
struct Judge {
    latency: Duration,
    panic_on: usize,
    yes: bool,
    calls: AtomicUsize,
}

#[async_trait]
impl AiAgent for Judge {
    fn name(&self) -> &str {
        "judge"
    }
    async fn complete(&self, _: &AiRequest) -> kasama::Result<AiResponse> {
        let n = self.calls.fetch_add(1, SeqCst) + 1;
        tokio::time::sleep(self.latency).await;
        assert!(n != self.panic_on, "the judge's client panicked");
        Ok(AiResponse {
            output: json!(if self.yes { "YES" } else { "NO" }),
            usage: Usage {
                input_tokens: 120,
                output_tokens: 1,
            },
            usage_estimated: false,
            model: "judge-1".into(),
            backend: "judge".into(),
            latency: self.latency,
        })
    }
}

struct Backend;

#[async_trait]
impl AiAgent for Backend {
    fn name(&self) -> &str {
        "backend"
    }
    async fn complete(&self, _: &AiRequest) -> kasama::Result<AiResponse> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(AiResponse {
            output: json!({ "advice": "fresh" }),
            usage: ONE_CALL,
            usage_estimated: false,
            model: "scripted-1".into(),
            backend: "backend".into(),
            latency: Duration::from_millis(100),
        })
    }
}

fn judged(judge: &Arc<Judge>) -> (Arc<LlmJudgeVerifier>, Arc<SemanticCache>) {
    let v = Arc::new(LlmJudgeVerifier::new(
        judge.clone(),
        JUDGE_PRICE,
        AgentType::InsightGenerator,
        UserId::new(),
    ));
    let cache = Arc::new(
        SemanticCache::builder(Arc::new(Dial))
            .salience_check(false)
            .semantic_hits(true)
            .threshold(0.5)
            .verifier(v.clone())
            .build()
            .unwrap(),
    );
    (v, cache)
}

/// House rule "money counted exactly once: ledger = recorded rows"; `shutdown`'s
/// docs: requests after it are refused "before anything is charged", and it waits
/// for "every backend call queued or in flight to be settled". A judged lookup is a
/// paid call the batcher does not know about: `shutdown` returns while the judge is
/// still thinking (500 ms, under the 1 s cache timeout), the judge then answers YES,
/// its spend is settled into the ledger and the semantic hit's row goes to a
/// recorder that is gone (counted only as `InteractionsLost`).
/// Observed: `complete` returns Ok (a semantic hit whose outcome costs 61,500 n$)
/// after `shutdown` returned; ledger `user_today` 61,500 n$, recorded rows 0.
#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_a_judged_lookup_and_its_row() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let judge = Arc::new(Judge {
        latency: Duration::from_millis(500),
        panic_on: 0,
        yes: true,
        calls: AtomicUsize::new(0),
    });
    let (v, cache) = judged(&judge);
    cache
        .store(&ask(u, "anchor"), &answer("stored"), None)
        .await
        .unwrap();
    let p = Arc::new(
        builder(repo.clone())
            .backend(Arc::new(Backend))
            .semantic_cache(cache.clone())
            .build()
            .unwrap(),
    );
    let caller = {
        let p = p.clone();
        tokio::spawn(async move {
            p.complete(ask(u, "0.95 1"), SubscriptionTier::Premium)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(judge.calls.load(SeqCst), 1, "the judge is asked");
    p.shutdown().await.unwrap();
    let o = caller.await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ledger = p.ledger().user_today(u);
    let rows = common::pipeline::rows(&repo, u).await;
    let recorded: i64 = rows.iter().map(|r| r.cost_nanos).sum();
    println!(
        "outcome {:?}; judge {:?}; ledger {ledger}; rows {} summing to {recorded}",
        o.as_ref().map(|o| (o.cache, o.cost_nanos)),
        v.cost(),
        rows.len()
    );
    assert_eq!(
        u64::try_from(recorded).unwrap(),
        ledger,
        "{ledger} n$ charged for a judge, {recorded} n$ recorded"
    );
}

/// House rules "a dropped caller still billed for what was produced" / money "never
/// not at all", and the pipeline's comment "the task panicked (a verifier did): its
/// hold was released". Two stored look-alikes (0.95, 0.94): the judge answers NO to the
/// first (paid: 61,500 n$ in `LlmJudgeVerifier::cost()`) — say it then panics on the
/// second. The lookup task dies, its hold is released without settling what the
/// first call cost, the request goes on as a miss and is answered by the backend.
/// Observed: judge asked twice, `cost()` 61,500 n$; the request answered as a miss
/// (outcome cost 18,000,000 n$, the backend only); ledger `verification_nanos` 0; the judge's
/// spend is in no row and no ledger.
#[tokio::test(start_paused = true)]
async fn a_judge_that_panics_after_a_paid_call_still_has_it_billed() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let judge = Arc::new(Judge {
        latency: Duration::from_millis(10),
        panic_on: 2,
        yes: false,
        calls: AtomicUsize::new(0),
    });
    let (v, cache) = judged(&judge);
    for q in ["0.95 1", "0.94 2"] {
        cache
            .store(&ask(u, q), &answer("stored"), None)
            .await
            .unwrap();
    }
    let p = builder(repo.clone())
        .backend(Arc::new(Backend))
        .semantic_cache(cache.clone())
        .build()
        .unwrap();
    let o = p
        .complete(ask(u, "anchor"), SubscriptionTier::Premium)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let line = p.ledger().line(
        u,
        AgentType::CommunicationAdvisor,
        chrono::Utc::now().date_naive(),
    );
    println!(
        "outcome {:?}; judge calls {}, {:?}; line {line:?}",
        o.as_ref().map(|o| (o.cache, o.cost_nanos)),
        judge.calls.load(SeqCst),
        v.cost()
    );
    assert!(v.cost().cost_nanos > 0, "a judge call was paid for");
    assert_eq!(
        line.verification_nanos,
        v.cost().cost_nanos,
        "the judge's paid call is in no ledger"
    );
    p.shutdown().await.unwrap();
}
