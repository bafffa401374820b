//! Conversations through the example server, used as a client would over HTTP on
//! loopback, where the review of issue 12 tried to break them: a backend failing
//! mid-answer (the client gets an `error` event and the stream ends, no hang; the
//! user's message stays, no answer is stored), a long conversation of short turns
//! (still answered), list limits and unknown agent kinds (clear 400s); and on
//! PostgreSQL as the least-privilege app role, another user can neither read nor
//! continue a conversation, nor see it listed.
#![cfg(feature = "server")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, stream};
use kasama::agent::{AiStream, StreamEvent, Usage};
use kasama::health::HealthMonitor;
use kasama::metrics::{InMemoryMetrics, MetricsSink};
use kasama::pipeline::{AiPipeline, BatchConfig, Budgets, RateLimitConfig};
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime};
use kasama::server::{AppState, JwtConfig, router, token};
use serde_json::{Value, json};

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes";

/// Streams "Hello " then "world" and the answer — or, when the question starts with
/// "fail", an error after "Hello ".
struct Scripted;

fn answer() -> AiResponse {
    AiResponse {
        output: json!({ "text": "Hello world" }),
        usage: Usage {
            input_tokens: 100,
            output_tokens: 20,
        },
        usage_estimated: false,
        model: "m".into(),
        backend: "scripted".into(),
        latency: Duration::from_millis(1),
    }
}

#[async_trait]
impl AiAgent for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    async fn complete(&self, _req: &AiRequest) -> Result<AiResponse> {
        Ok(answer())
    }
    async fn stream(&self, req: &AiRequest) -> Result<AiStream> {
        let first = stream::iter([Ok(StreamEvent::Delta("Hello ".into()))]);
        let rest = if req.question().starts_with("fail") {
            vec![Err(Error::Backend {
                what: "scripted".into(),
                retryable: false,
                source: "broke mid-answer".into(),
            })]
        } else {
            vec![
                Ok(StreamEvent::Delta("world".into())),
                Ok(StreamEvent::Done(answer())),
            ]
        };
        Ok(AiStream::new(first.chain(stream::iter(rest))))
    }
}

struct Server {
    base: String,
    repo: Arc<dyn Repository>,
}

async fn start() -> Server {
    let hub = Hub::new(64);
    let repo: Arc<dyn Repository> =
        Arc::new(InMemoryRepository::new().with_change_feed(hub.clone()));
    start_on(repo, hub).await
}

async fn start_on(repo: Arc<dyn Repository>, hub: Arc<Hub>) -> Server {
    let metrics = Arc::new(InMemoryMetrics::new());
    let sink: Arc<dyn MetricsSink> = metrics.clone();
    let pipeline = Arc::new(
        AiPipeline::builder(repo.clone())
            .backend(Arc::new(Scripted))
            .rate_limits(RateLimitConfig::unlimited())
            .budgets(Budgets::unlimited())
            .batching(BatchConfig {
                window: Duration::ZERO,
                ..Default::default()
            })
            .metrics(sink.clone())
            .build()
            .unwrap(),
    );
    let state = AppState {
        repo: repo.clone(),
        pipeline,
        realtime: Arc::new(MemoryRealtime::new(hub)),
        metrics: metrics.clone(),
        sink,
        health: Arc::new(HealthMonitor::new(metrics)),
        jwt: JwtConfig::new(SECRET).unwrap(),
        render_metrics: None,
        ws: kasama::server::WsSockets::with_defaults(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    Server {
        base: format!("http://{addr}"),
        repo,
    }
}

async fn user(s: &Server) -> (UserId, String) {
    let u = UserId::new();
    let p = NewProfile::new(u, format!("{u}@example.com"), "U");
    s.repo.create_profile(Actor::Service, p).await.unwrap();
    (u, token(SECRET, u, Duration::from_secs(3600)))
}

async fn post(s: &Server, t: &str, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", s.base))
        .bearer_auth(t)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get(s: &Server, t: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", s.base))
        .bearer_auth(t)
        .send()
        .await
        .unwrap()
}

/// Every event of a whole response body, as (name, data); within 10 s.
async fn events(resp: reqwest::Response) -> Vec<(String, Value)> {
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .expect("the stream ends within 10 s")
        .unwrap();
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            (!data.is_empty()).then(|| (name, serde_json::from_str(&data).unwrap()))
        })
        .collect()
}

async fn conversation(s: &Server, t: &str) -> String {
    let resp = post(
        s,
        t,
        "/api/conversations",
        json!({"agent": "communication_advisor"}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_mid_answer_ends_the_conversations_stream_with_an_error_event() {
    let s = start().await;
    let (_, t) = user(&s).await;
    let id = conversation(&s, &t).await;
    let path = format!("/api/conversations/{id}/messages");
    let ev = events(post(&s, &t, &path, json!({"content": "fail please"})).await).await;
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["delta", "error"], "{ev:?}");
    // The question stays, no answer is stored; the conversation goes on.
    let ev = events(post(&s, &t, &path, json!({"content": "and now?"})).await).await;
    assert_eq!(ev.last().unwrap().0, "done");
    let read: Value = get(&s, &t, &format!("/api/conversations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let contents: Vec<&str> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["fail please", "and now?", "Hello world"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_conversation_of_short_turns_is_still_answered() {
    let s = start().await;
    let (u, t) = user(&s).await;
    let id = conversation(&s, &t).await;
    let cid: ConversationId = id.parse().unwrap();
    for i in 0..260 {
        let role = if i % 2 == 0 {
            MessageRole::User
        } else {
            MessageRole::Assistant
        };
        s.repo
            .add_message(
                Actor::User(u),
                NewConversationMessage {
                    conversation_id: cid,
                    role,
                    content: "ok".into(),
                },
            )
            .await
            .unwrap();
    }
    let resp = post(
        &s,
        &t,
        &format!("/api/conversations/{id}/messages"),
        json!({"content": "so?"}),
    )
    .await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let ev = events(resp).await;
    assert_eq!(ev.last().unwrap().0, "done", "{ev:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_limits_and_unknown_agents_are_clear_400s() {
    let s = start().await;
    let (_, t) = user(&s).await;
    for q in ["limit=0", "limit=501"] {
        let resp = get(&s, &t, &format!("/api/conversations?{q}")).await;
        assert_eq!(resp.status(), 400, "{q}");
    }
    let resp = post(&s, &t, "/api/conversations", json!({"agent": "astrologer"})).await;
    assert_eq!(resp.status(), 400);
    let resp = post(
        &s,
        &t,
        "/api/agents/astrologer/stream",
        json!({"question": "hi"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    // Blank messages are refused before anything is stored or billed.
    let id = conversation(&s, &t).await;
    let resp = post(
        &s,
        &t,
        &format!("/api/conversations/{id}/messages"),
        json!({"content": " \n\t "}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let read: Value = get(&s, &t, &format!("/api/conversations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["messages"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_another_user_can_neither_read_nor_continue_nor_list_a_conversation() {
    let db = common::pg()
        .await
        .expect("this test needs PostgreSQL (`.ci/run` starts it)");
    let s = start_on(Arc::new(db.repo.clone()), Hub::new(64)).await;
    let (_, ta) = user(&s).await;
    let (_, tb) = user(&s).await;
    let id = conversation(&s, &ta).await;
    let path = format!("/api/conversations/{id}/messages");
    let ev = events(post(&s, &ta, &path, json!({"content": "We argue at night."})).await).await;
    assert_eq!(ev.last().unwrap().0, "done", "{ev:?}");

    assert_eq!(
        get(&s, &tb, &format!("/api/conversations/{id}"))
            .await
            .status(),
        404
    );
    let resp = post(&s, &tb, &path, json!({"content": "and with my mother?"})).await;
    assert_eq!(resp.status(), 404);
    let listed: Value = get(&s, &tb, "/api/conversations")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]));
    // The owner's conversation is untouched by the attempts.
    let read: Value = get(&s, &ta, &format!("/api/conversations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let contents: Vec<&str> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["We argue at night.", "Hello world"]);
    db.finish().await;
}

/// An `offset` on the conversation list (which the other listings take, from the same
/// query struct) was silently ignored, so a client paging with `?limit=2&offset=2` got
/// the first page again — forever, if it pages until a short page. Now it is refused
/// with a clear 400; `offset=0` is the first page as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_on_the_conversation_list_is_refused_not_ignored() {
    let s = start().await;
    let (_, t) = user(&s).await;
    for _ in 0..3 {
        conversation(&s, &t).await;
    }
    let first: Vec<Value> = get(&s, &t, "/api/conversations?limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let resp = get(&s, &t, "/api/conversations?limit=2&offset=2").await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        status, 400,
        "an offset must not be ignored (the first page again): {body}"
    );
    assert!(body.to_string().contains("offset"), "{body}");
    // offset=0 is the first page.
    let zero: Vec<Value> = get(&s, &t, "/api/conversations?limit=2&offset=0")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(zero, first);
}
