//! The verification tier and the safe defaults of the semantic cache: exact repeats
//! only on the lexical embedder unless the host opts in, the rule verifier refusing
//! the coaching look-alikes of issue 14, custom and LLM-judge verifiers (cost counted,
//! failure is a miss), and the error-budget mode on a simulated stream with known
//! truth (tokio's paused clock).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kasama::agent::{AiAgent, AiRequest, AiResponse, Usage};
use kasama::pipeline::Price;
use kasama::prelude::*;
use kasama::semantic::{
    CacheTier, Candidate, Embedder, ErrorBudget, HashingEmbedder, LlmJudgeVerifier, Lookup,
    RuleVerifier, SemanticCache, Verdict, Verifier,
};
use serde_json::json;

fn answer(text: &str) -> AiResponse {
    AiResponse {
        output: json!({ "advice": text }),
        usage: Usage {
            input_tokens: 20,
            output_tokens: 40,
        },
        usage_estimated: false,
        model: "sim-1".into(),
        backend: "sim".into(),
        latency: Duration::from_millis(5),
    }
}

fn ask(user: UserId, q: &str) -> AiRequest {
    AiRequest::new(user, AgentType::CommunicationAdvisor, q)
}

fn served(l: &Lookup) -> Option<(CacheTier, String)> {
    match l {
        Lookup::Hit { answer, tier, .. } => {
            Some((*tier, answer.output["advice"].as_str().unwrap().to_string()))
        }
        Lookup::Miss { .. } => None,
    }
}

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
        let text = r.prompt_text();
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
        assert!(seen[0].prompt_text().contains(STORED));
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

// ---- error budget on a simulated stream ----

/// splitmix64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn gauss(seed: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let u1 = ((mix(seed ^ (2 * i as u64)) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let u2 = (mix(seed ^ (2 * i as u64 + 1)) >> 11) as f64 / (1u64 << 53) as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

const DIM: usize = 64;

/// Texts "intent I variant J": intents come in sibling pairs (2k, 2k+1) whose base
/// vectors are close (cosine ≈ 0.9), and variants spread around their intent, so
/// same-intent and sibling similarities overlap: no fixed threshold is obviously right.
struct Intents;

fn base(intent: u64) -> Vec<f32> {
    let root = unit(gauss(1_000 + intent / 2, DIM));
    if intent.is_multiple_of(2) {
        return root;
    }
    let noise = unit(gauss(5_000 + intent, DIM));
    unit(root.iter().zip(&noise).map(|(a, b)| a + 0.35 * b).collect())
}

#[async_trait]
impl Embedder for Intents {
    fn name(&self) -> &str {
        "intents"
    }
    fn dimension(&self) -> usize {
        DIM
    }
    fn default_threshold(&self) -> f32 {
        0.8
    }
    async fn embed(&self, texts: &[String]) -> kasama::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let w: Vec<u64> = t.split(' ').filter_map(|x| x.parse().ok()).collect();
                let (i, j) = (w[0], w[1]);
                let spread = 0.2 + 0.1 * (j % 8) as f32;
                let noise = unit(gauss(9_000_000 + i * 1_000 + j, DIM));
                unit(
                    base(i)
                        .iter()
                        .zip(&noise)
                        .map(|(a, b)| a + spread * b)
                        .collect(),
                )
            })
            .collect())
    }
}

struct Outcome {
    served: Vec<(usize, bool)>,
    lookups: usize,
}

/// Runs `n` requests through `cache`: a hit is served (right when it answers the
/// asked intent); a miss asks the "backend" (answers the true intent), resolves any
/// audit against the truth, and stores the fresh answer. One request per second.
async fn stream(cache: &SemanticCache, n: usize) -> Outcome {
    let u = UserId::new();
    let mut out = Outcome {
        served: Vec::new(),
        lookups: 0,
    };
    for step in 0..n {
        let r = mix(step as u64 ^ 0xABCD);
        let intent = (r % 200) * (1 + (r >> 8) % 2) % 200; // some intents more frequent
        let variant = (r >> 16) % 400;
        let req = ask(u, &format!("intent {intent} variant {variant}"));
        let truth = intent.to_string();
        out.lookups += 1;
        match cache.lookup(&req).await.unwrap() {
            Lookup::Hit { answer, tier, .. } => {
                if tier == CacheTier::Semantic {
                    out.served
                        .push((step, answer.output["advice"] == truth.as_str()));
                }
            }
            Lookup::Miss {
                embedding, audit, ..
            } => {
                if let Some(t) = audit {
                    let correct = t.stored_answer["advice"] == truth.as_str();
                    cache.resolve_audit(t, correct);
                }
                cache.store(&req, &answer(&truth), embedding).await.unwrap();
            }
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    out
}

#[tokio::test(start_paused = true)]
async fn an_error_budget_keeps_wrong_answers_within_it_while_the_hit_rate_climbs() {
    let budget = ErrorBudget {
        audit_share: 0.1,
        ..ErrorBudget::new(0.05)
    };
    let cache = SemanticCache::builder(Arc::new(Intents))
        .salience_check(false)
        .ttl(Duration::from_secs(3 * 3600))
        .error_budget(budget)
        .seed(7)
        .build()
        .unwrap();
    assert_eq!(
        cache
            .error_estimate(AgentType::CommunicationAdvisor, "")
            .unwrap()
            .threshold,
        None
    );
    let n = 6_000;
    let out = stream(&cache, n).await;
    let wrong = out.served.iter().filter(|(_, ok)| !ok).count();
    let total = out.served.len();
    let quarter = |q: usize| {
        out.served
            .iter()
            .filter(|(s, _)| *s >= q * n / 4 && *s < (q + 1) * n / 4)
            .count()
    };
    let window = |from: usize| {
        out.served
            .iter()
            .filter(|(s, _)| *s >= from && *s < from + 500)
            .count()
    };
    let (first, last) = (window(0), window(n - 500));
    println!(
        "served {total} semantic hits of {} lookups, {wrong} wrong; per quarter {} {} {} {}; \
         first 500 requests {first}, last 500 {last}",
        out.lookups,
        quarter(0),
        quarter(1),
        quarter(2),
        quarter(3)
    );
    assert!(total > 500, "the budget let something through: {total}");
    assert!(
        (wrong as f64) <= 0.05 * total as f64,
        "observed wrong share {wrong}/{total} exceeds the 5 % budget"
    );
    assert!(last > 2 * first, "the hit rate climbs: {first} → {last}");
    assert!(quarter(3) >= quarter(0), "and stays up");
    let est = cache
        .error_estimate(AgentType::CommunicationAdvisor, "")
        .unwrap();
    println!("{est:?}");
    let t = est.threshold.expect("a threshold was learned");
    assert!(est.upper_bound <= 0.05, "{est:?}");
    assert!(est.above >= 30 && est.audited >= est.above, "{est:?}");
    assert!(cache.stats().audits > 0);

    // The same stream at a fixed threshold at the budget's floor: wrong answers over
    // the budget — which is what the learned threshold prevents.
    assert!(t > budget.floor, "{t}");
    let fixed = SemanticCache::builder(Arc::new(Intents))
        .salience_check(false)
        .semantic_hits(true)
        .threshold(budget.floor)
        .ttl(Duration::from_secs(3 * 3600))
        .build()
        .unwrap();
    let out = stream(&fixed, n).await;
    let wrong = out.served.iter().filter(|(_, ok)| !ok).count();
    println!(
        "fixed threshold {:.2}: {wrong}/{} wrong",
        budget.floor,
        out.served.len()
    );
    assert!(
        wrong as f64 > 0.05 * out.served.len() as f64,
        "the simulated stream is too easy to show anything: {wrong}/{}",
        out.served.len()
    );
    // Outside error-budget mode audits are ignored and no estimate exists.
    assert!(
        fixed
            .error_estimate(AgentType::CommunicationAdvisor, "")
            .is_none()
    );
}

#[tokio::test]
async fn bad_error_budgets_are_refused_at_build() {
    for b in [ErrorBudget::new(0.0), ErrorBudget::new(f64::NAN)] {
        assert!(
            SemanticCache::builder(Arc::new(HashingEmbedder::new()))
                .error_budget(b)
                .build()
                .is_err()
        );
    }
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
