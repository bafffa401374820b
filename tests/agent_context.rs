//! Everything that shapes an answer reaches the model and the cache key: the same
//! question over different data (input fields, the user's data, the conversation so
//! far, the system prompt) is a cache miss, over the same data a hit — whatever the
//! key order or whitespace of the JSON it came in; templates reach the backend; the
//! assessment analyst's structured answer is checked, and a wrong one is an error that
//! is billed and never cached.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use common::pipeline::{builder, memory, rows, users};
use kasama::agent::{ChatMessage, PromptTemplate, PromptTemplates, Role, Usage};
use kasama::pipeline::{AiPipeline, BatchConfig};
use kasama::prelude::*;
use kasama::semantic::{CacheTier, HashingEmbedder, SemanticCache};

/// A backend that answers `{"advice": "answer n"}` (or what it was told to) and keeps
/// every request it was sent.
struct Recording {
    seen: Mutex<Vec<AiRequest>>,
    output: Mutex<Option<Value>>,
}

impl Recording {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Vec::new()),
            output: Mutex::new(None),
        })
    }
    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn last(&self) -> AiRequest {
        self.seen.lock().unwrap().last().unwrap().clone()
    }
}

#[async_trait]
impl AiAgent for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    async fn complete(&self, req: &AiRequest) -> Result<AiResponse> {
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(req.clone());
            seen.len()
        };
        let output = self
            .output
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| json!({ "advice": format!("answer {n}") }));
        Ok(AiResponse {
            output,
            usage: Usage {
                input_tokens: 100,
                output_tokens: 50,
            },
            usage_estimated: false,
            model: "sim-1".into(),
            backend: "recording".into(),
            latency: Duration::from_millis(1),
        })
    }
}

async fn pipeline(agent: Arc<Recording>) -> (AiPipeline, Arc<dyn Repository>, UserId) {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .build()
        .unwrap();
    let p = builder(repo.clone())
        .backend(agent)
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .semantic_cache(Arc::new(cache))
        .build()
        .unwrap();
    (p, repo, u)
}

async fn ask(p: &AiPipeline, req: AiRequest) -> (CacheTier, Value) {
    let o = p.complete(req, SubscriptionTier::Premium).await.unwrap();
    (o.cache, o.response.output)
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_same_question_over_other_data_is_a_miss_and_over_the_same_data_a_hit() {
    let agent = Recording::new();
    let (p, _, u) = pipeline(agent.clone()).await;
    let low = parsed(
        r#"{"question": "What do my results say about how I communicate?", "scores": {"communication": 12, "trust": 80}}"#,
    );
    let high = parsed(
        r#"{"question": "What do my results say about how I communicate?", "scores": {"communication": 97, "trust": 80}}"#,
    );
    // The same data as `low`, in another key order and with other whitespace.
    let low_again = parsed(
        "{\n  \"scores\" : { \"trust\":80,\n \"communication\" : 12 },\n  \"question\": \"What do my results say about how I communicate?\"\n}",
    );

    let (tier, first) = ask(&p, AiRequest::new(u, AgentType::InsightGenerator, low)).await;
    assert_eq!(tier, CacheTier::Miss);
    // The model saw the scores, not only the question.
    let seen = agent.last();
    let system = &seen.messages()[0].content;
    assert!(system.contains(r#""communication":12"#), "{system}");

    let (tier, second) = ask(&p, AiRequest::new(u, AgentType::InsightGenerator, high)).await;
    assert_eq!(
        tier,
        CacheTier::Miss,
        "other data must not be served the first answer"
    );
    assert_ne!(first, second);
    assert_eq!(agent.calls(), 2);

    let (tier, third) = ask(
        &p,
        AiRequest::new(u, AgentType::InsightGenerator, low_again),
    )
    .await;
    assert_eq!(
        tier,
        CacheTier::Exact,
        "the same data is a hit, whatever its layout"
    );
    assert_eq!(third, first);
    assert_eq!(agent.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_users_data_and_the_conversation_so_far_scope_the_answer() {
    let agent = Recording::new();
    let (p, _, u) = pipeline(agent.clone()).await;
    let req = |ctx: Value, history: Vec<ChatMessage>| {
        AiRequest::new(
            u,
            AgentType::CommunicationAdvisor,
            "and what about with my mother?",
        )
        .with_context(ctx)
        .with_history(history)
    };
    let partner = vec![
        ChatMessage::new(Role::User, "How do I bring up chores with my partner?"),
        ChatMessage::new(Role::Assistant, "Start with how it makes you feel."),
    ];
    let sister = vec![
        ChatMessage::new(Role::User, "My sister keeps cancelling our plans."),
        ChatMessage::new(Role::Assistant, "Ask her what makes planning hard."),
    ];
    let data = json!({"goals": [{"title": "Talk calmly", "status": "active"}]});

    assert_eq!(
        ask(&p, req(data.clone(), partner.clone())).await.0,
        CacheTier::Miss
    );
    // The model got the history in order, between the system message and the question.
    let m = agent.last().messages();
    assert_eq!(m.len(), 4);
    assert_eq!(
        (m[1].role, m[1].content.as_str()),
        (Role::User, partner[0].content.as_str())
    );
    assert_eq!(m[2].role, Role::Assistant);
    assert_eq!(m[3].content, "and what about with my mother?");
    assert!(m[0].content.contains("Talk calmly"));

    // The follow-up in another conversation is never answered from the first one's.
    assert_eq!(
        ask(&p, req(data.clone(), sister.clone())).await.0,
        CacheTier::Miss
    );
    // Nor with the same conversation over changed data.
    let changed = json!({"goals": [{"title": "Talk calmly", "status": "completed"}]});
    assert_eq!(
        ask(&p, req(changed, partner.clone())).await.0,
        CacheTier::Miss
    );
    // Nor without the conversation.
    assert_eq!(
        ask(&p, req(data.clone(), Vec::new())).await.0,
        CacheTier::Miss
    );
    assert_eq!(agent.calls(), 4);
    // The same conversation over the same data is a hit.
    assert_eq!(ask(&p, req(data, partner)).await.0, CacheTier::Exact);
    assert_eq!(agent.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_hosts_template_reaches_the_backend_and_scopes_the_cache() {
    let agent = Recording::new();
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let cache = Arc::new(
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .build()
            .unwrap(),
    );
    let prompts = PromptTemplates::default().set(
        AgentType::LearningCoach,
        PromptTemplate::new("Coach in the style of our brand. Data: {context}"),
    );
    let templated = builder(repo.clone())
        .backend(agent.clone())
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .semantic_cache(cache.clone())
        .prompts(prompts)
        .build()
        .unwrap();
    let plain = builder(repo)
        .backend(agent.clone())
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .semantic_cache(cache)
        .build()
        .unwrap();
    let q = || {
        AiRequest::new(u, AgentType::LearningCoach, "What should I practise?")
            .with_context(json!({"path": "Listening"}))
    };
    assert_eq!(ask(&templated, q()).await.0, CacheTier::Miss);
    let system = agent.last().messages()[0].content.clone();
    assert_eq!(
        system,
        r#"Coach in the style of our brand. Data: {"data":{"path":"Listening"}}"#
    );
    // The shipped template is another scope, though the cache is the same.
    assert_eq!(ask(&plain, q()).await.0, CacheTier::Miss);
    assert!(
        agent.last().messages()[0]
            .content
            .starts_with("You are a relationship coach")
    );
    assert_eq!(ask(&templated, q()).await.0, CacheTier::Exact);
    assert_eq!(agent.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_wrong_structured_answer_is_an_error_billed_and_never_cached() {
    let agent = Recording::new();
    let (p, repo, u) = pipeline(agent.clone()).await;
    let analyse = || AiRequest::new(u, AgentType::AssessmentAnalyst, "What do my results mean?");
    *agent.output.lock().unwrap() = Some(json!({"text": "You are doing great!"}));
    let e = p
        .complete(analyse(), SubscriptionTier::Premium)
        .await
        .unwrap_err();
    let why = std::error::Error::source(&e).map(ToString::to_string);
    assert!(
        e.to_string().contains("wrong shape")
            && why
                .as_deref()
                .is_some_and(|w| w.contains("not an assessment analysis")),
        "a clear error: {e}: {why:?}"
    );
    assert!(!e.is_retryable());
    // The provider billed the call: the user pays for it.
    let cost = common::pipeline::PRICE.cost_nanos(Usage {
        input_tokens: 100,
        output_tokens: 50,
    });
    assert_eq!(p.ledger().user_today(u), cost);

    // Nothing was cached: a right answer next is a backend call, and is cached.
    let good = json!({
        "insights": ["You listen well."],
        "strengths": ["Patience"],
        "growth_areas": ["Saying what you need"],
        "suggested_practices": ["Daily check-in"],
    });
    *agent.output.lock().unwrap() = Some(good.clone());
    let (tier, out) = ask(&p, analyse()).await;
    assert_eq!((tier, &out), (CacheTier::Miss, &good));
    assert_eq!(ask(&p, analyse()).await, (CacheTier::Exact, good));
    assert_eq!(agent.calls(), 2);

    p.shutdown().await.unwrap();
    let recorded = rows(&repo, u).await;
    assert_eq!(recorded.len(), 3);
    let failed: Vec<_> = recorded.iter().filter(|r| !r.success).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].cost_nanos, cost as i64);
}
