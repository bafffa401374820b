//! A blank question is refused whatever shape the input has. `AiRequest::validate`
//! refused a blank string input but not an object whose question field is blank
//! (`{"question": "  ", "mood": 3}`): the model was sent an empty user message, and
//! the semantic cache, which cannot embed an empty text, failed the lookup and the
//! store — counted in `cache_errors` (an operator's alarm) by any user at will.

use std::sync::Arc;
use std::time::Duration;

use kasama::pipeline::BatchConfig;
use kasama::prelude::*;
use kasama::semantic::{HashingEmbedder, SemanticCache};
use serde_json::json;

mod common;

use common::pipeline::{builder, memory, users};

#[tokio::test(start_paused = true)]
async fn a_blank_question_field_is_invalid_input_not_a_cache_error() {
    let u = UserId::new();
    for input in [
        json!({"question": "   ", "mood": 3}),
        json!({"message": "\n\t"}),
        json!({"text": ""}),
    ] {
        let e = AiRequest::new(u, AgentType::CommunicationAdvisor, input.clone())
            .validate()
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidInput { field, .. } if field == "input"),
            "{input}: {e:?}"
        );
    }
    // A question field that is not blank is fine, and so is an input with none.
    for input in [
        json!({"question": "Why?", "text": ""}),
        json!({"scores": {"communication": 97}}),
    ] {
        AiRequest::new(u, AgentType::InsightGenerator, input)
            .validate()
            .unwrap();
    }

    let repo = memory();
    let u = users(&repo, 1).await[0];
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .build()
        .unwrap();
    let p = builder(repo)
        .backend(Arc::new(SimulatedAgent::instant("sim")))
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .semantic_cache(Arc::new(cache))
        .build()
        .unwrap();
    let r = p
        .complete(
            AiRequest::new(
                u,
                AgentType::CommunicationAdvisor,
                json!({"question": "  ", "mood": 3}),
            ),
            SubscriptionTier::Premium,
        )
        .await;
    assert!(matches!(r, Err(Error::InvalidInput { .. })), "{r:?}");
    assert_eq!(p.cache_errors(), 0);
    p.shutdown().await.unwrap();
}
