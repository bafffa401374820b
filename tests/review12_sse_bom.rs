//! A server-sent event stream may begin with a UTF-8 byte order mark, which the
//! format (WHATWG, "UTF-8 decode") strips. Kept, it made the first line's field
//! `"\u{FEFF}data"`, an unknown field: the first event — here the answer's first
//! words — was silently dropped.
#![cfg(feature = "openai")]

use std::time::Duration;

use futures_util::StreamExt;
use kasama::agent::{AiAgent, AiRequest, OpenAiCompatibleAgent, StreamEvent};
use kasama::prelude::*;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn a_leading_byte_order_mark_loses_no_text() {
    let server = MockServer::start().await;
    let chunk = |t: &str| json!({"model": "m", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]});
    let mut body = vec![0xEF, 0xBB, 0xBF];
    body.extend_from_slice(
        format!(
            "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
            chunk("Listen "),
            chunk("first.")
        )
        .as_bytes(),
    );
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let agent = OpenAiCompatibleAgent::builder(format!("{}/v1", server.uri()))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let req = AiRequest::new(UserId::new(), AgentType::LearningCoach, "Hi");
    let mut s = agent.stream(&req).await.unwrap();
    let mut text = String::new();
    let mut done = None;
    while let Some(item) = s.next().await {
        match item.unwrap() {
            StreamEvent::Delta(d) => text.push_str(&d),
            StreamEvent::Done(r) => done = Some(r),
        }
    }
    assert_eq!(text, "Listen first.");
    assert_eq!(done.unwrap().output, json!({"text": "Listen first."}));
}
