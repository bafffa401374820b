//! A whole (non-streamed) completion is bounded like a streamed one: a server sending
//! an endless body cannot make the client buffer without bound (the stream's 8 MiB;
//! before, `complete` read any body whole into memory).
#![cfg(feature = "openai")]

use std::time::Duration;

use kasama::agent::{AiAgent, AiRequest, OpenAiCompatibleAgent};
use kasama::prelude::*;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn a_huge_completion_body_is_refused_not_buffered() {
    let server = MockServer::start().await;
    let huge = "x".repeat(12 << 20);
    let body = json!({
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": huge}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1}
    });
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let agent = OpenAiCompatibleAgent::builder(format!("{}/v1", server.uri()))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let req = AiRequest::new(UserId::new(), AgentType::LearningCoach, "Hi");
    match agent.complete(&req).await {
        Err(Error::Backend { source, .. }) => {
            assert!(source.to_string().contains("longer than"), "{source}")
        }
        Ok(r) => panic!(
            "a {} byte answer was read whole",
            r.output["text"].as_str().map_or(0, str::len)
        ),
        Err(e) => panic!("{e:?}"),
    }
}
