//! The semantic cache's own books through the pipeline: an audited would-be hit is
//! judged against the backend's answer (error-budget mode learns from real traffic),
//! and a paid verifier (an LLM judge) is asked only within the user's budget and
//! charged to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use async_trait::async_trait;
use kasama::agent::{AiAgent, AiRequest, AiResponse, Usage};
use kasama::pipeline::{Budgets, Price};
use kasama::prelude::*;
use kasama::semantic::{CacheTier, ErrorBudget, HashingEmbedder, LlmJudgeVerifier, SemanticCache};
use serde_json::json;

use super::{Mode, Scripted, cost};
use crate::common::pipeline::{builder, memory, users};

const STORED: &str = "How can I listen better to my partner?";
const PARAPHRASE: &str = "How can I better listen to my partner?";

/// The audit's outcome reaches the cache: the pipeline asks the backend, compares
/// (the default comparer: the scripted backend answers each question differently,
/// so the stored answer counts as wrong) and reports it once.
#[tokio::test(start_paused = true)]
async fn an_audited_request_teaches_the_cache_through_the_pipeline() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Scripted::new("a", 100, Mode::Answer);
    let cache = Arc::new(
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .salience_check(false)
            .error_budget(ErrorBudget::new(0.05))
            .build()
            .unwrap(),
    );
    let p = builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache.clone())
        .build()
        .unwrap();
    let ask = |q: &str| AiRequest::new(u, AgentType::CommunicationAdvisor, q);
    p.complete(ask(STORED), SubscriptionTier::Free)
        .await
        .unwrap();
    let o = p
        .complete(ask(PARAPHRASE), SubscriptionTier::Free)
        .await
        .unwrap();
    assert_eq!(
        o.cache,
        CacheTier::Miss,
        "no evidence yet: audited, not served"
    );
    assert_eq!(cache.stats().audits, 1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let est = cache
        .error_estimate(&cache.scope_of(&ask(PARAPHRASE)))
        .unwrap();
    assert_eq!(est.audited, 1, "the audit was judged and counted: {est:?}");
    assert_eq!(agent.calls.load(SeqCst), 2);
    p.shutdown().await.unwrap();
}

/// A judge that says yes, billing 120 input tokens and 1 output token a call.
struct Judge {
    calls: AtomicUsize,
}

const JUDGE_USAGE: Usage = Usage {
    input_tokens: 120,
    output_tokens: 1,
};

const JUDGE_PRICE: Price = Price {
    input_micros_per_1k: 500,
    output_micros_per_1k: 1_500,
};

#[async_trait]
impl AiAgent for Judge {
    fn name(&self) -> &str {
        "judge"
    }
    async fn complete(&self, _: &AiRequest) -> kasama::Result<AiResponse> {
        self.calls.fetch_add(1, SeqCst);
        Ok(AiResponse {
            output: json!("YES"),
            usage: JUDGE_USAGE,
            usage_estimated: false,
            model: "judge-1".into(),
            backend: "judge".into(),
            latency: Duration::ZERO,
        })
    }
}

/// The judge's spend is the user's: charged to their ledger line (counted apart as
/// verification, no extra request), seen by their budget; a user at their cap gets
/// exact repeats but no judge call.
#[tokio::test(start_paused = true)]
async fn a_paid_judge_is_charged_to_the_user_and_asked_only_within_the_budget() {
    let repo = memory();
    let us = users(&repo, 2).await;
    let (rich, poor) = (us[0], us[1]);
    let agent = Scripted::new("a", 100, Mode::Answer);
    let judge = Arc::new(Judge {
        calls: AtomicUsize::new(0),
    });
    let verifier = Arc::new(LlmJudgeVerifier::new(
        judge.clone(),
        JUDGE_PRICE,
        AgentType::InsightGenerator,
        UserId::new(),
    ));
    let cache = Arc::new(
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .salience_check(false)
            .semantic_hits(true)
            .threshold(0.5)
            .shared(AgentType::LearningCoach)
            .verifier(verifier.clone())
            .build()
            .unwrap(),
    );
    assert!(cache.max_verification_cost() > JUDGE_PRICE.cost_nanos(JUDGE_USAGE));
    let call = cost(crate::common::pipeline::ONE_CALL);
    let p = builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache.clone())
        .budgets(Budgets {
            // The rich user stays far below it; the poor one passes it with one call.
            free_user_daily: Some(call / 2),
            premium_user_daily: None,
            ..Budgets::unlimited()
        })
        .build()
        .unwrap();
    let coach = |u: UserId, q: &str| AiRequest::new(u, AgentType::LearningCoach, q);

    p.complete(coach(rich, STORED), SubscriptionTier::Premium)
        .await
        .unwrap();
    let o = p
        .complete(coach(rich, PARAPHRASE), SubscriptionTier::Premium)
        .await
        .unwrap();
    assert_eq!(o.cache, CacheTier::Semantic);
    assert_eq!(judge.calls.load(SeqCst), 1);
    let judged = JUDGE_PRICE.cost_nanos(JUDGE_USAGE);
    assert_eq!(verifier.cost().cost_nanos, judged);
    let day = chrono::Utc::now().date_naive();
    let line = p.ledger().line(rich, AgentType::LearningCoach, day);
    assert_eq!(
        (line.requests, line.cost_nanos, line.verification_nanos),
        (2, call + judged, judged)
    );
    assert_eq!(p.ledger().user_today(rich), call + judged);
    assert_eq!(p.ledger().user_reserved(rich), 0, "no hold left behind");

    // The poor user reaches the cap with one call of their own…
    p.complete(
        coach(poor, "What is a love language?"),
        SubscriptionTier::Free,
    )
    .await
    .unwrap();
    assert!(p.ledger().user_today(poor) >= call / 2);
    // …then an exact repeat is still answered, free, without the judge…
    let o = p
        .complete(coach(poor, STORED), SubscriptionTier::Free)
        .await
        .unwrap();
    assert_eq!((o.cache, o.cost_nanos), (CacheTier::Exact, 0));
    // …and a paraphrase is not judged at their expense: refused for the budget.
    let e = p
        .complete(coach(poor, PARAPHRASE), SubscriptionTier::Free)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BudgetExceeded { .. }), "{e:?}");
    assert_eq!(
        judge.calls.load(SeqCst),
        1,
        "the judge was asked for a user at the cap"
    );
    assert_eq!(
        p.ledger()
            .line(poor, AgentType::LearningCoach, day)
            .verification_nanos,
        0
    );
    p.shutdown().await.unwrap();
}
