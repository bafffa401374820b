//! `OpenAiCompatibleAgent::stream` against a real HTTP server on loopback (wiremock)
//! answering whole SSE bodies: the request's body, usage reported or not, an error
//! event mid-stream, a body cut before `[DONE]`, HTTP errors before the stream. What
//! wiremock cannot do (dribble, go silent, notice the client leaving) is in
//! `openai_stream_loopback.rs`.
#![cfg(feature = "openai")]

use std::time::Duration;

use futures_util::StreamExt;
use kasama::agent::prompt::canonical_json;
use kasama::agent::{
    AiAgent, AiRequest, AiResponse, AiStream, ChatMessage, OpenAiCompatibleAgent, Role,
    StreamEvent, estimate_tokens, structured,
};
use kasama::prelude::*;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn agent_at(base: &str) -> OpenAiCompatibleAgent {
    OpenAiCompatibleAgent::builder(format!("{base}/v1"))
        .api_key("sk-test-secret")
        .model_for(AgentType::LearningCoach, "coach-model")
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn req() -> AiRequest {
    AiRequest::new(
        UserId::new(),
        AgentType::LearningCoach,
        "How do I listen better?",
    )
    .with_context(json!({"scores": {"communication": 97, "conflict": 40}}))
    .with_history(vec![
        ChatMessage::new(Role::User, "We argue at night."),
        ChatMessage::new(Role::Assistant, "What usually starts it?"),
        ChatMessage::new(Role::User, "Dishes, mostly."),
    ])
}

fn chunk(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "coach-model-2026",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    })
}

const PIECES: [&str; 5] = ["Reflect", " back", " what", " you", " heard."];

/// An SSE body: the role chunk, the text in `PIECES`, the finish chunk, optionally the
/// usage chunk, then `[DONE]` — with a keep-alive comment and CRLF line ends mixed in.
fn sse_body(usage: bool, done: bool) -> String {
    let mut events = vec![json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "coach-model-2026",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]
    })];
    events.extend(PIECES.iter().map(|p| chunk(p)));
    events.push(json!({
        "id": "chatcmpl-1", "model": "coach-model-2026",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    }));
    if usage {
        events.push(json!({
            "id": "chatcmpl-1", "model": "coach-model-2026", "choices": [],
            "usage": {"prompt_tokens": 131, "completion_tokens": 6, "total_tokens": 137}
        }));
    }
    let mut body = String::from(": keep-alive\n\n");
    for (i, e) in events.iter().enumerate() {
        let eol = if i % 2 == 0 { "\n" } else { "\r\n" };
        body.push_str(&format!("data: {e}{eol}{eol}"));
    }
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    body
}

fn sse(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

async fn collect(mut s: AiStream) -> Vec<Result<StreamEvent>> {
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        out.push(item);
    }
    out
}

fn deltas(items: &[Result<StreamEvent>]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(StreamEvent::Delta(d)) => Some(d.as_str()),
            _ => None,
        })
        .collect()
}

fn done(items: &[Result<StreamEvent>]) -> &AiResponse {
    match items.last() {
        Some(Ok(StreamEvent::Done(r))) => r,
        other => panic!("expected Done last, got {other:?}"),
    }
}

async fn sent_body(server: &MockServer) -> Value {
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    serde_json::from_slice(&reqs[0].body).unwrap()
}

#[tokio::test]
async fn the_request_carries_context_history_and_stream_options() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test-secret"))
        .and(header("accept", "text/event-stream"))
        .respond_with(sse(sse_body(true, true)))
        .expect(1)
        .mount(&server)
        .await;
    let r = req();
    let items = collect(agent_at(&server.uri()).stream(&r).await.unwrap()).await;
    assert_eq!(deltas(&items).concat(), PIECES.concat());

    let body = sent_body(&server).await;
    assert_eq!(body["stream"], json!(true));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["model"], json!("coach-model"));
    assert_eq!(body["max_tokens"], json!(512));
    assert!(
        body.get("response_format").is_none(),
        "the coach answers in text"
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 5, "system, three turns, the question");
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap();
    assert!(
        system.contains(&canonical_json(&r.context)),
        "the user's data is in the system message: {system}"
    );
    assert!(system.contains(r#"{"communication":97,"conflict":40}"#));
    let turns: Vec<(&str, &str)> = messages[1..]
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        turns,
        [
            ("user", "We argue at night."),
            ("assistant", "What usually starts it?"),
            ("user", "Dishes, mostly."),
            ("user", "How do I listen better?"),
        ]
    );

    // complete sends the same body, without the stream fields.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}
        })))
        .mount(&server)
        .await;
    agent_at(&server.uri()).complete(&r).await.unwrap();
    let mut whole = sent_body(&server).await;
    let mut streamed = body;
    streamed.as_object_mut().unwrap().remove("stream");
    streamed.as_object_mut().unwrap().remove("stream_options");
    whole.as_object_mut().unwrap().remove("stream");
    assert_eq!(whole, streamed);
}

#[tokio::test]
async fn the_assessment_analyst_asks_for_its_schema_and_gets_an_object() {
    let server = MockServer::start().await;
    let analysis = json!({
        "insights": ["You listen well."], "strengths": ["Repair"],
        "growth_areas": ["Naming needs"], "suggested_practices": ["Daily check-in"]
    });
    let text = analysis.to_string();
    let (a, b) = text.split_at(text.len() / 2);
    let body = format!(
        "data: {}\n\ndata: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        chunk(a),
        chunk(b),
        json!({"choices": [], "usage": {"prompt_tokens": 300, "completion_tokens": 40}})
    );
    Mock::given(method("POST"))
        .respond_with(sse(body))
        .mount(&server)
        .await;
    let r = AiRequest::new(
        UserId::new(),
        AgentType::AssessmentAnalyst,
        "What do my results say?",
    )
    .with_context(json!({"assessment": {"answers": [3, 4, 1]}}));
    let items = collect(agent_at(&server.uri()).stream(&r).await.unwrap()).await;
    assert_eq!(deltas(&items), [a, b]);
    let d = done(&items);
    assert_eq!(d.output, analysis);
    assert_eq!((d.usage.input_tokens, d.usage.output_tokens), (300, 40));

    let sent = sent_body(&server).await;
    assert_eq!(
        sent["response_format"],
        structured::response_format(AgentType::AssessmentAnalyst).unwrap()
    );
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(
        sent["response_format"]["json_schema"]["name"],
        "assessment_analysis"
    );
    assert!(
        sent["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains(r#"{"answers":[3,4,1]}"#)
    );
}

#[tokio::test]
async fn deltas_add_up_to_the_text_and_done_has_the_exact_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse(sse_body(true, true)))
        .mount(&server)
        .await;
    let items = collect(agent_at(&server.uri()).stream(&req()).await.unwrap()).await;
    assert_eq!(
        deltas(&items),
        PIECES,
        "one delta per content chunk, none for empty ones"
    );
    assert_eq!(items.len(), PIECES.len() + 1);
    let d = done(&items);
    assert_eq!(d.output, json!({"text": "Reflect back what you heard."}));
    assert_eq!((d.usage.input_tokens, d.usage.output_tokens), (131, 6));
    assert!(!d.usage_estimated);
    assert_eq!(d.model, "coach-model-2026");
    assert_eq!(d.backend, "openai");
}

#[tokio::test]
async fn without_a_usage_chunk_the_tokens_are_estimated() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse(sse_body(false, true)))
        .mount(&server)
        .await;
    let r = req();
    let items = collect(agent_at(&server.uri()).stream(&r).await.unwrap()).await;
    let d = done(&items);
    assert!(d.usage_estimated);
    assert_eq!(d.usage.output_tokens, estimate_tokens(&PIECES.concat()));
    let prompt: u32 = r
        .messages()
        .iter()
        .map(|m| estimate_tokens(&m.content))
        .sum();
    assert_eq!(d.usage.input_tokens, prompt);
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_it_with_an_error() {
    let server = MockServer::start().await;
    let a = agent_at(&server.uri());
    let cases = [
        (
            json!({"error": {"message": "The server had an error", "type": "server_error", "code": null}}),
            true,
        ),
        (
            json!({"error": {"message": "Overloaded", "code": 529}}),
            true,
        ),
        (
            json!({"error": {"message": "Incorrect API key provided: sk-test-secret", "type": "invalid_request_error", "code": "invalid_api_key"}}),
            false,
        ),
        (
            json!({"error": {"message": "Flagged", "type": "content_filter"}}),
            false,
        ),
    ];
    for (error, retryable) in cases {
        server.reset().await;
        let body = format!(
            "data: {}\n\ndata: {}\n\ndata: {error}\n\ndata: {}\n\ndata: [DONE]\n\n",
            chunk("Reflect"),
            chunk(" back"),
            chunk(" never seen"),
        );
        Mock::given(method("POST"))
            .respond_with(sse(body))
            .mount(&server)
            .await;
        let items = collect(a.stream(&req()).await.unwrap()).await;
        assert_eq!(deltas(&items), ["Reflect", " back"], "{error}");
        assert_eq!(items.len(), 3, "the error is the last item: {items:?}");
        let e = items[2].as_ref().unwrap_err();
        assert!(
            matches!(e, Error::Backend { retryable: r, .. } if *r == retryable),
            "{error}: {e:?}"
        );
        let shown = format!("{e:?} {}", std::error::Error::source(e).unwrap());
        assert!(
            !shown.contains("sk-test-secret"),
            "the key never shows: {shown}"
        );
    }

    // An `event: error` with a non-JSON payload.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(sse(format!(
            "data: {}\n\nevent: error\ndata: upstream went away\n\n",
            chunk("Hi")
        )))
        .mount(&server)
        .await;
    let items = collect(a.stream(&req()).await.unwrap()).await;
    assert_eq!(deltas(&items), ["Hi"]);
    assert!(items.last().unwrap().is_err());
}

#[tokio::test]
async fn a_body_cut_before_the_finish_is_a_retryable_error() {
    let server = MockServer::start().await;
    // Finished (finish reason, usage) but no `[DONE]`: a whole answer, as OpenAI's
    // clients take it.
    Mock::given(method("POST"))
        .respond_with(sse(sse_body(true, false)))
        .mount(&server)
        .await;
    let items = collect(agent_at(&server.uri()).stream(&req()).await.unwrap()).await;
    assert_eq!(deltas(&items), PIECES);
    match items.last().unwrap() {
        Ok(StreamEvent::Done(r)) => {
            assert_eq!(r.usage.input_tokens, 131);
            assert!(!r.usage_estimated);
        }
        other => panic!("{other:?}"),
    }

    // Cut before the finish chunk: an error.
    server.reset().await;
    let mut cut = String::new();
    for p in PIECES {
        cut.push_str(&format!("data: {}\n\n", chunk(p)));
    }
    Mock::given(method("POST"))
        .respond_with(sse(cut))
        .mount(&server)
        .await;
    let items = collect(agent_at(&server.uri()).stream(&req()).await.unwrap()).await;
    assert_eq!(deltas(&items), PIECES);
    assert_eq!(items.len(), PIECES.len() + 1);
    let e = items.last().unwrap().as_ref().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Backend {
                retryable: true,
                ..
            }
        ),
        "{e:?}"
    );

    // Malformed JSON in an event.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(sse(format!(
            "data: {}\n\ndata: {{not json\n\ndata: [DONE]\n\n",
            chunk("Hi")
        )))
        .mount(&server)
        .await;
    let items = collect(agent_at(&server.uri()).stream(&req()).await.unwrap()).await;
    assert!(matches!(
        items.last().unwrap(),
        Err(Error::Backend {
            retryable: true,
            ..
        })
    ));
}

#[tokio::test]
async fn http_errors_before_the_stream_map_like_complete() {
    let server = MockServer::start().await;
    let a = agent_at(&server.uri());
    type Check = fn(&Error) -> bool;
    let cases: Vec<(ResponseTemplate, Check)> = vec![
        (
            ResponseTemplate::new(429).insert_header("retry-after", "7"),
            |e| matches!(e, Error::RateLimited { retry_after } if *retry_after == Duration::from_secs(7)),
        ),
        (ResponseTemplate::new(503), |e| {
            matches!(
                e,
                Error::Backend {
                    retryable: true,
                    ..
                }
            )
        }),
        (ResponseTemplate::new(400), |e| {
            matches!(
                e,
                Error::Backend {
                    retryable: false,
                    ..
                }
            )
        }),
        (ResponseTemplate::new(401), |e| {
            matches!(
                e,
                Error::Backend {
                    retryable: false,
                    ..
                }
            )
        }),
    ];
    for (i, (resp, check)) in cases.into_iter().enumerate() {
        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(resp)
            .mount(&server)
            .await;
        let e = a.stream(&req()).await.unwrap_err();
        assert!(check(&e), "case {i}: {e:?}");
        assert!(!format!("{e:?}").contains("sk-test-secret"));
    }
}

#[tokio::test]
async fn a_server_that_ignores_stream_answers_in_one_chunk() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "coach-model-2026",
            "choices": [{"message": {"role": "assistant", "content": "Whole answer."}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 3}
        })))
        .mount(&server)
        .await;
    let items = collect(agent_at(&server.uri()).stream(&req()).await.unwrap()).await;
    assert_eq!(deltas(&items), ["Whole answer."]);
    let d = done(&items);
    assert_eq!(d.output, json!({"text": "Whole answer."}));
    assert_eq!((d.usage.input_tokens, d.usage.output_tokens), (20, 3));
}
