//! Review of issue 13: a paid verifier's hold through `PgBudget` is booked in the
//! shared ledger exactly as in the instance's own ledger (and released when the
//! caller goes away mid-lookup, its judge spend still booked). Real PostgreSQL (fails
//! without it); real time, no assertion on durations.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use async_trait::async_trait;
use kasama::agent::{AiAgent, AiRequest, AiResponse, Usage};
use kasama::pipeline::{PgBudget, Price};
use kasama::prelude::*;
use kasama::semantic::{LlmJudgeVerifier, SemanticCache};
use serde_json::json;

mod common;

use common::pipeline::{ONE_CALL, builder, users};
use common::semantic::{Dial, answer, ask};

const JUDGE_PRICE: Price = Price {
    input_micros_per_1k: 500,
    output_micros_per_1k: 1_500,
};

/// A judge that says NO after `latency`, 120 input tokens and 1 output token a call.
struct Judge {
    latency: Duration,
    calls: AtomicUsize,
}

#[async_trait]
impl AiAgent for Judge {
    fn name(&self) -> &str {
        "judge"
    }
    async fn complete(&self, _: &AiRequest) -> kasama::Result<AiResponse> {
        self.calls.fetch_add(1, SeqCst);
        tokio::time::sleep(self.latency).await;
        Ok(AiResponse {
            output: json!("NO"),
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
        Ok(AiResponse {
            output: json!({ "advice": "fresh" }),
            usage: ONE_CALL,
            usage_estimated: false,
            model: "scripted-1".into(),
            backend: "backend".into(),
            latency: Duration::from_millis(1),
        })
    }
}

async fn setup(
    judge_ms: u64,
) -> (
    common::TestDb,
    UserId,
    Arc<PgBudget>,
    Arc<LlmJudgeVerifier>,
    kasama::pipeline::AiPipeline,
) {
    let db = common::pg()
        .await
        .expect("these tests need PostgreSQL at 127.0.0.1:5432");
    let repo: Arc<dyn Repository> = Arc::new(db.repo.clone());
    let u = users(&repo, 1).await[0];
    let judge = Arc::new(Judge {
        latency: Duration::from_millis(judge_ms),
        calls: AtomicUsize::new(0),
    });
    let v = Arc::new(LlmJudgeVerifier::new(
        judge,
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
    for n in [1, 2] {
        cache
            .store(&ask(u, &format!("0.95 {n}")), &answer("stored"), None)
            .await
            .unwrap();
    }
    let pg = PgRepository::connect(&db.app_config()).unwrap();
    let budget = Arc::new(PgBudget::new(pg.pool().clone()));
    let p = builder(repo)
        .backend(Arc::new(Backend))
        .semantic_cache(cache)
        .shared_budget(budget.clone())
        .build()
        .unwrap();
    (db, u, budget, v, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_and_the_call_are_booked_in_pg_as_in_the_ledger() {
    let (db, u, budget, v, p) = setup(5).await;
    let o = p
        .complete(ask(u, "anchor"), SubscriptionTier::Premium)
        .await
        .unwrap();
    p.shutdown().await.unwrap();
    let shared = budget.spent(u).await.unwrap();
    assert!(v.cost().cost_nanos > 0, "the judge was paid");
    assert_eq!(shared.held, 0);
    assert_eq!(shared.day, p.ledger().user_today(u));
    assert_eq!(shared.day, o.cost_nanos);
    assert_eq!(budget.status().abandoned, 0);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gone_mid_lookup_leaves_the_judge_spend_booked_in_pg() {
    let (db, u, budget, v, p) = setup(300).await;
    let gone = tokio::time::timeout(
        Duration::from_millis(450),
        p.complete(ask(u, "anchor"), SubscriptionTier::Premium),
    )
    .await;
    assert!(gone.is_err(), "the caller gave up mid-lookup");
    p.shutdown().await.unwrap();
    let shared = budget.spent(u).await.unwrap();
    assert!(v.cost().cost_nanos > 0, "a judge call was billed");
    assert_eq!(shared.held, 0);
    assert_eq!(shared.day, v.cost().cost_nanos);
    assert_eq!(shared.day, p.ledger().user_today(u));
    db.finish().await;
}
