//! `OpenAiCompatibleAgent::stream` against real HTTP servers on loopback: wiremock for
//! whole SSE bodies (the request's body, usage reported or not, an error event
//! mid-stream, a body cut before `[DONE]`, HTTP errors before the stream), and a tiny
//! hand-written server for what wiremock cannot do — dribble chunks with delays, go
//! silent, and notice that the client went away.
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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
async fn a_body_cut_before_done_is_a_retryable_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse(sse_body(true, false)))
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

// ---- a tiny HTTP/1.1 server that dribbles -------------------------------------------

/// Reads one request (headers and a `content-length` body) from `sock`.
async fn read_request(sock: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = sock.read(&mut tmp).await.unwrap();
        assert!(n > 0, "client closed before sending its request");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut tmp).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&tmp[..n]);
            }
            return;
        }
    }
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    (l, base)
}

#[tokio::test]
async fn dropping_a_slow_stream_closes_the_connection() {
    let (listener, base) = listener().await;
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<usize>();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        read_request(&mut sock).await;
        sock.write_all(SSE_HEAD).await.unwrap();
        let (mut rd, mut wr) = sock.into_split();
        // The client never sends more: a read returns only when it closes.
        let closed = tokio::spawn(async move {
            let mut b = [0u8; 64];
            matches!(rd.read(&mut b).await, Ok(0) | Err(_))
        });
        let mut written = 0;
        for i in 0..500 {
            let ev = format!("data: {}\n\n", chunk(&format!(" piece{i}")));
            if wr.write_all(ev.as_bytes()).await.is_err() {
                break;
            }
            written += 1;
            if closed.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(closed.await.unwrap(), "the server saw the socket closed");
        let _ = closed_tx.send(written);
    });

    let a = agent_at(&base);
    let mut s = a.stream(&req()).await.unwrap();
    for i in 0..3 {
        match s.next().await {
            Some(Ok(StreamEvent::Delta(d))) => assert_eq!(d, format!(" piece{i}")),
            other => panic!("expected a delta, got {other:?}"),
        }
    }
    drop(s);
    let written = tokio::time::timeout(Duration::from_secs(10), closed_rx)
        .await
        .expect("the server notices the client went away")
        .unwrap();
    assert!(
        written < 100,
        "the server stopped soon after the drop ({written} chunks written)"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn a_long_stream_that_keeps_arriving_outlives_the_timeout() {
    // Timeout 500 ms; the stream takes about a second in pieces 100 ms apart.
    let (listener, base) = listener().await;
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        read_request(&mut sock).await;
        sock.write_all(SSE_HEAD).await.unwrap();
        for i in 0..10 {
            let ev = format!("data: {}\n\n", chunk(&format!("{i}")));
            sock.write_all(ev.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sock.write_all(b"data: [DONE]\n\n").await.unwrap();
    });
    let start = std::time::Instant::now();
    let items = collect(agent_at(&base).stream(&req()).await.unwrap()).await;
    assert!(start.elapsed() > Duration::from_millis(500));
    assert_eq!(deltas(&items).concat(), "0123456789");
    assert!(done(&items).usage_estimated);
}

#[tokio::test]
async fn a_stream_that_goes_silent_times_out() {
    let (listener, base) = listener().await;
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        read_request(&mut sock).await;
        sock.write_all(SSE_HEAD).await.unwrap();
        let ev = format!("data: {}\n\n", chunk("Hi"));
        sock.write_all(ev.as_bytes()).await.unwrap();
        // Silent until the test is over.
        let _ = release_rx.await;
    });
    let a = OpenAiCompatibleAgent::builder(format!("{base}/v1"))
        .timeout(Duration::from_secs(5))
        .stream_idle_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let items = collect(a.stream(&req()).await.unwrap()).await;
    assert_eq!(deltas(&items), ["Hi"]);
    assert!(
        matches!(items.last().unwrap(), Err(Error::Timeout { .. })),
        "{items:?}"
    );
    let _ = release_tx.send(());
}

#[tokio::test]
async fn no_headers_within_the_timeout_is_a_timeout() {
    let (listener, base) = listener().await;
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        read_request(&mut sock).await;
        let _ = release_rx.await;
    });
    let e = agent_at(&base).stream(&req()).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    let _ = release_tx.send(());

    assert_eq!(
        OpenAiCompatibleAgent::builder("http://localhost")
            .stream_idle_timeout(Duration::ZERO)
            .build()
            .unwrap_err()
            .invalid_field(),
        Some("stream_idle_timeout")
    );
}
