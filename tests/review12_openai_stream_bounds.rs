//! A hostile OpenAI-compatible server cannot make a streamed answer buffer without
//! bound: the answer's text is capped (8 MiB), and so must be everything else the
//! stream accumulates — here a refusal streamed in many deltas.
#![cfg(feature = "openai")]

use std::time::Duration;

use futures_util::StreamExt;
use kasama::agent::{AiAgent, AiRequest, OpenAiCompatibleAgent, StreamEvent};
use kasama::prelude::*;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn an_endless_refusal_is_cut_like_an_endless_answer() {
    let server = MockServer::start().await;
    // 12 MiB of refusal in 64 KiB deltas (each event well under the 1 MiB event cap),
    // then a proper end.
    let piece = "no ".repeat(64 * 1024 / 3);
    let event = json!({
        "model": "m", "choices": [{"index": 0, "delta": {"refusal": piece}, "finish_reason": null}]
    });
    let mut body = String::new();
    for _ in 0..(12 * 1024 * 1024 / piece.len()) {
        body.push_str(&format!("data: {event}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let agent = OpenAiCompatibleAgent::builder(format!("{}/v1", server.uri()))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let req = AiRequest::new(UserId::new(), AgentType::LearningCoach, "Hi");
    let mut s = agent.stream(&req).await.unwrap();
    let mut last = None;
    while let Some(item) = s.next().await {
        last = Some(item);
    }
    match last {
        Some(Err(Error::Backend { source, .. })) => {
            assert!(source.to_string().contains("longer than"), "{source}");
        }
        Some(Ok(StreamEvent::Done(r))) => panic!(
            "a {} byte refusal was accepted",
            r.output["refusal"].as_str().map_or(0, str::len)
        ),
        other => panic!("{other:?}"),
    }
}
