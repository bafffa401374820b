//! A text answer of a kind that answers in structure (`ModelParams::text_only`): an LLM
//! judge asking as the assessment analyst gets its YES (no analysis `response_format`
//! is sent), and through the pipeline such an answer is neither refused nor served to a
//! request that wants the analysis.
#![cfg(feature = "openai")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::pipeline::{builder, memory, users};
use kasama::agent::{OpenAiCompatibleAgent, Price, Usage};
use kasama::pipeline::BatchConfig;
use kasama::prelude::*;
use kasama::semantic::{
    CacheTier, Candidate, HashingEmbedder, LlmJudgeVerifier, SemanticCache, Verdict, Verifier,
};

fn completion(text: &str) -> Value {
    json!({
        "model": "judge-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 80, "completion_tokens": 1}
    })
}

#[tokio::test]
async fn a_judge_asking_as_the_analyst_gets_its_yes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("YES")))
        .mount(&server)
        .await;
    let agent = Arc::new(
        OpenAiCompatibleAgent::builder(server.uri())
            .build()
            .unwrap(),
    );
    let judge = LlmJudgeVerifier::new(
        agent,
        Price {
            input_micros_per_1k: 1_000,
            output_micros_per_1k: 1_000,
        },
        AgentType::AssessmentAnalyst,
        UserId::new(),
    );
    let answer =
        json!({"insights": [], "strengths": [], "growth_areas": [], "suggested_practices": []});
    let verdict = judge
        .verify(&Candidate {
            question: "What do my results say?",
            stored_question: "What do my results mean?",
            stored_answer: &answer,
            similarity: 0.95,
        })
        .await
        .unwrap();
    assert_eq!(verdict, Verdict::Accept);
    let sent: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert!(sent.get("response_format").is_none(), "{sent}");

    // Without text_only the analyst's request asks for the analysis.
    let mut req = AiRequest::new(UserId::new(), AgentType::AssessmentAnalyst, "Hm?");
    assert!(req.wants_structured());
    req.params.text_only = true;
    assert!(!req.wants_structured());
}

/// Answers `{"text": "YES"}` whatever it is asked.
struct Yes;

#[async_trait]
impl AiAgent for Yes {
    fn name(&self) -> &str {
        "yes"
    }
    async fn complete(&self, _: &AiRequest) -> Result<AiResponse> {
        Ok(AiResponse {
            output: json!({"text": "YES"}),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 1,
            },
            usage_estimated: false,
            model: "sim-1".into(),
            backend: "yes".into(),
            latency: Duration::from_millis(1),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_text_answer_of_the_analyst_is_cached_in_its_own_scope() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .build()
        .unwrap();
    let p = builder(repo)
        .backend(Arc::new(Yes))
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .semantic_cache(Arc::new(cache))
        .build()
        .unwrap();
    let text = || {
        let mut r = AiRequest::new(u, AgentType::AssessmentAnalyst, "Is this done?");
        r.params.text_only = true;
        r
    };
    let o = p.complete(text(), SubscriptionTier::Premium).await.unwrap();
    assert_eq!(o.cache, CacheTier::Miss);
    assert_eq!(o.response.output, json!({"text": "YES"}));
    let o = p.complete(text(), SubscriptionTier::Premium).await.unwrap();
    assert_eq!(
        o.cache,
        CacheTier::Exact,
        "stored, and served to the same request"
    );
    // A request that wants the analysis is not served the text: it asks the backend,
    // whose text is then the wrong shape.
    let structured = AiRequest::new(u, AgentType::AssessmentAnalyst, "Is this done?");
    let e = p
        .complete(structured, SubscriptionTier::Premium)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("wrong shape"), "{e}");
    assert_eq!(p.cache_errors(), 0);
}
