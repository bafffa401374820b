//! `GET /api/conversations` takes `limit` but had no paging: an `offset` (which the
//! other listings take, from the same query struct) was silently ignored, so a client
//! paging with `?limit=2&offset=2` got the first page again — forever, if it pages
//! until a short page. Now an `offset` is refused with a clear 400 (conversations are
//! listed newest first, up to `limit`); `offset=0` is the first page as before.
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
