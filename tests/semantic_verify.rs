//! The verification tier and the safe defaults of the semantic cache: exact repeats
//! only on the lexical embedder unless the host opts in, the rule verifier refusing
//! the coaching look-alikes of issue 14, custom and LLM-judge verifiers (cost counted,
//! failure is a miss). The error-budget mode is tested in `semantic_budget.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kasama::agent::{AiAgent, AiRequest, AiResponse, Usage};
use kasama::pipeline::Price;
use kasama::prelude::*;
use kasama::semantic::{
    CacheTier, Candidate, HashingEmbedder, LlmJudgeVerifier, Lookup, RuleVerifier, SemanticCache,
    Verdict, Verifier,
};
use serde_json::json;

mod common;

use common::semantic::{answer, ask, served};

const STORED: &str = "How can I listen better to my partner?";
const PARAPHRASE: &str = "How can I better listen to my partner?";

async fn cache_with_one(b: kasama::semantic::SemanticCacheBuilder) -> (SemanticCache, UserId) {
    let cache = b.build().unwrap();
    let u = UserId::new();
    cache
        .store(&ask(u, STORED), &answer("reflect back"), None)
        .await
        .unwrap();
    (cache, u)
}

#[tokio::test]
async fn the_lexical_embedder_serves_exact_repeats_only_unless_the_host_opts_in() {
    let (cache, u) = cache_with_one(SemanticCache::builder(Arc::new(HashingEmbedder::new()))).await;
    assert!(!cache.serves_semantic_hits());
    assert_eq!(
        served(
            &cache
                .lookup(&ask(u, "  how can I listen better to my partner "))
                .await
                .unwrap()
        ),
        Some((CacheTier::Exact, "reflect back".into()))
    );
    assert_eq!(
        served(&cache.lookup(&ask(u, PARAPHRASE)).await.unwrap()),
        None
    );
    let d = cache.decide(STORED, PARAPHRASE).await.unwrap();
    assert!(!d.hit && d.score < 1.0, "{d:?}");
    assert_eq!(d.rejected, Some("exact repeats only"));
    assert!(cache.decide(STORED, STORED).await.unwrap().hit);

    // Opting in: the paraphrase is served.
    let (cache, u) = cache_with_one(
        SemanticCache::builder(Arc::new(HashingEmbedder::new())).semantic_hits(true),
    )
    .await;
    assert_eq!(
        served(&cache.lookup(&ask(u, PARAPHRASE)).await.unwrap()),
        Some((CacheTier::Semantic, "reflect back".into()))
    );
    assert_eq!(cache.decide(STORED, PARAPHRASE).await.unwrap().score, 1.0);
}

#[test]
fn the_rules_refuse_the_coaching_look_alikes_of_the_issue() {
    let refused = [
        (
            "How do I tell my partner I want kids?",
            "How do I tell my partner I don't want kids?",
        ),
        (
            "How do I prepare before a difficult conversation?",
            "How do I recover after a difficult conversation?",
        ),
        (
            "We've been married 6 months and fight a lot. Is that normal?",
            "We've been married 25 years and fight a lot. Is that normal?",
        ),
        (
            "How do I plan a date night with my partner?",
            "How do I cancel a date night with my partner?",
        ),
        (
            "What does emotional intelligence mean?",
            "What does my emotional intelligence result mean?",
        ),
        (
            "How do I tell my partner I feel lonely?",
            "How do I tell my partner I feel angry?",
        ),
        (
            "Is it normal to have less sex after ten years?",
            "Is it normal to have more sex after ten years?",
        ),
        (
            "What's a healthy way to argue?",
            "What's an unhealthy way to argue?",
        ),
        (
            "How do I talk about wanting to get married?",
            "How do I talk about wanting to get married next month?",
        ),
    ];
    for (a, b) in refused {
        assert!(RuleVerifier::check(a, b).is_some(), "{a} / {b}");
        assert!(RuleVerifier::check(b, a).is_some(), "{b} / {a}");
    }
    let passed = [
        (
            "How do I stop arguing with my partner?",
            "What can I do to stop fighting with my partner?",
        ),
        (
            "How can I listen better to my partner?",
            "How can I better listen to my partner?",
        ),
        (
            "How can couples fight fairly?",
            "What are the rules for a respectful disagreement as a couple?",
        ),
    ];
    for (a, b) in passed {
        assert_eq!(RuleVerifier::check(a, b), None, "{a} / {b}");
    }
}

/// Refuses everything, or fails.
struct Stubborn {
    fail: bool,
    calls: AtomicUsize,
}

#[async_trait]
impl Verifier for Stubborn {
    fn name(&self) -> &str {
        "stubborn"
    }
    async fn verify(&self, c: &Candidate<'_>) -> kasama::Result<Verdict> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        assert_eq!(c.stored_answer["advice"], "reflect back");
        if self.fail {
            Err(kasama::Error::invalid("verifier", "down"))
        } else {
            Ok(Verdict::Reject("stubborn"))
        }
    }
}

#[tokio::test]
async fn an_added_verifier_turns_would_be_hits_into_misses_and_its_failure_is_a_miss() {
    for (fail, why) in [(false, "stubborn"), (true, "verifier failed")] {
        let v = Arc::new(Stubborn {
            fail,
            calls: AtomicUsize::new(0),
        });
        let (cache, u) = cache_with_one(
            SemanticCache::builder(Arc::new(HashingEmbedder::new()))
                .semantic_hits(true)
                .verifier(v.clone()),
        )
        .await;
        match cache.lookup(&ask(u, PARAPHRASE)).await.unwrap() {
            Lookup::Miss { rejected, .. } => assert_eq!(rejected, Some(why)),
            hit => panic!("served despite the verifier: {hit:?}"),
        }
        assert_eq!(v.calls.load(Ordering::SeqCst), 1);
        // Exact repeats do not ask verifiers.
        assert!(served(&cache.lookup(&ask(u, STORED)).await.unwrap()).is_some());
        assert_eq!(v.calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats().salience_rejections, 1);
    }
}

/// A judge model: "YES" when both questions mention listening, else "NO"; or fails.
struct Judge {
    mode: &'static str,
    seen: std::sync::Mutex<Vec<AiRequest>>,
}

#[async_trait]
impl AiAgent for Judge {
    fn name(&self) -> &str {
        "judge"
    }
    async fn complete(&self, r: &AiRequest) -> kasama::Result<AiResponse> {
        self.seen.lock().unwrap().push(r.clone());
        let text = r.question();
        let reply = match self.mode {
            "fail" => {
                return Err(kasama::Error::Timeout {
                    what: "judge".into(),
                });
            }
            "mumble" => "Perhaps",
            _ if text.matches("listen").count() == 2 => "YES",
            _ => "NO",
        };
        Ok(AiResponse {
            output: json!({ "text": reply }),
            usage: Usage {
                input_tokens: 100,
                output_tokens: 1,
            },
            usage_estimated: false,
            model: "judge-mini".into(),
            backend: "judge".into(),
            latency: Duration::from_millis(300),
        })
    }
}

#[tokio::test]
async fn the_llm_judge_decides_and_its_cost_is_counted() {
    let price = Price {
        input_micros_per_1k: 150,
        output_micros_per_1k: 600,
    };
    for (mode, expect_hit, failures) in [("yes", true, 0), ("fail", false, 1), ("mumble", false, 1)]
    {
        let agent = Arc::new(Judge {
            mode,
            seen: Default::default(),
        });
        let judge = Arc::new(
            LlmJudgeVerifier::new(
                agent.clone(),
                price,
                AgentType::InsightGenerator,
                UserId::new(),
            )
            .model("judge-mini"),
        );
        let (cache, u) = cache_with_one(
            SemanticCache::builder(Arc::new(HashingEmbedder::new()))
                .semantic_hits(true)
                .verifier(judge.clone()),
        )
        .await;
        let l = cache.lookup(&ask(u, PARAPHRASE)).await.unwrap();
        assert_eq!(served(&l).is_some(), expect_hit, "{mode}: {l:?}");
        let cost = judge.cost();
        assert_eq!((cost.calls, cost.failures), (1, failures), "{mode}");
        if mode == "fail" {
            assert_eq!(cost.cost_nanos, 0);
        } else {
            assert_eq!((cost.input_tokens, cost.output_tokens), (100, 1));
            assert_eq!(cost.cost_nanos, 100 * 150 + 600);
        }
        let seen = agent.seen.lock().unwrap();
        assert_eq!(seen[0].params.model, "judge-mini");
        assert_eq!(seen[0].params.temperature, 0.0);
        assert!(seen[0].question().contains(STORED));
    }
    // A look-alike the rules let through is refused by the judge ("NO").
    let agent = Arc::new(Judge {
        mode: "yes",
        seen: Default::default(),
    });
    let judge = Arc::new(LlmJudgeVerifier::new(
        agent,
        price,
        AgentType::InsightGenerator,
        UserId::new(),
    ));
    let (cache, u) = cache_with_one(
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .semantic_hits(true)
            .threshold(0.3)
            .salience_check(false)
            .verifier(judge.clone()),
    )
    .await;
    let l = cache
        .lookup(&ask(u, "How can I talk better to my partner?"))
        .await
        .unwrap();
    assert!(
        matches!(
            l,
            Lookup::Miss {
                rejected: Some("judge said no"),
                ..
            }
        ),
        "{l:?}"
    );
}

/// Holds a verification open until released.
struct Gate {
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait]
impl Verifier for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    async fn verify(&self, _: &Candidate<'_>) -> kasama::Result<Verdict> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(Verdict::Accept)
    }
}

#[tokio::test]
async fn an_answer_forgotten_while_it_is_verified_is_not_served() {
    let gate = Arc::new(Gate {
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let (cache, u) = cache_with_one(
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .semantic_hits(true)
            .verifier(gate.clone()),
    )
    .await;
    let cache = Arc::new(cache);
    let c = cache.clone();
    let lookup = tokio::spawn(async move { c.lookup(&ask(u, PARAPHRASE)).await });
    gate.entered.notified().await;
    assert_eq!(cache.forget_user(u), 1);
    gate.release.notify_one();
    let l = lookup.await.unwrap().unwrap();
    assert!(served(&l).is_none(), "served a forgotten answer: {l:?}");
}
