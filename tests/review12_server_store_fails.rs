//! The database failing to store a conversation's question after the pipeline has
//! started the answer: the backend call is already the user's (its input is billed
//! once a backend has it, the whole answer once it completes), so the answer must
//! reach them. It was an HTTP error instead — the stream dropped, the user charged
//! for an answer they never got.
#![cfg(feature = "server")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream;
use kasama::agent::{AiStream, StreamEvent, Usage};
use kasama::health::HealthMonitor;
use kasama::metrics::{InMemoryMetrics, MetricsSink};
use kasama::pipeline::{AiPipeline, BatchConfig, Budgets, RateLimitConfig};
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime};
use kasama::server::{AppState, JwtConfig, router, token};
use serde_json::{Value, json};
use tokio::sync::Notify;

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes";

/// Answers "Hello world" as a stream, noting that it was called.
struct Scripted {
    called: Arc<Notify>,
}

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
    async fn stream(&self, _req: &AiRequest) -> Result<AiStream> {
        self.called.notify_one();
        Ok(AiStream::new(stream::iter([
            Ok(StreamEvent::Delta("Hello ".into())),
            Ok(StreamEvent::Delta("world".into())),
            Ok(StreamEvent::Done(answer())),
        ])))
    }
}

/// The in-memory store whose `add_message` fails (as a database gone down would)
/// once `down` is set — after the backend has the request.
struct Failing {
    inner: InMemoryRepository,
    down: AtomicBool,
    waited: AtomicBool,
    called: Arc<Notify>,
}

macro_rules! fail_adds {
    ($s:ident, add_message($a:ident, $n:ident)) => {{
        if $s.down.load(Ordering::SeqCst) {
            // The first failure comes once the backend has the request.
            if !$s.waited.swap(true, Ordering::SeqCst) {
                $s.called.notified().await;
            }
            Err(Error::Backend {
                what: "database".into(),
                retryable: true,
                source: "connection refused".into(),
            })
        } else {
            $s.inner.add_message($a, $n).await
        }
    }};
    ($s:ident, $name:ident($($a:ident),*)) => {{ $s.inner.$name($($a),*).await }};
}
kasama::__forward_repository!(impl[] Failing => fail_adds);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_that_cannot_be_stored_is_still_answered_once_paid_for() {
    let called = Arc::new(Notify::new());
    let failing = Arc::new(Failing {
        inner: InMemoryRepository::new(),
        down: AtomicBool::new(false),
        waited: AtomicBool::new(false),
        called: called.clone(),
    });
    let repo: Arc<dyn Repository> = failing.clone();
    let metrics = Arc::new(InMemoryMetrics::new());
    let sink: Arc<dyn MetricsSink> = metrics.clone();
    let hub = Hub::new(64);
    let pipeline = Arc::new(
        AiPipeline::builder(repo.clone())
            .backend(Arc::new(Scripted { called }))
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
        pipeline: pipeline.clone(),
        realtime: Arc::new(MemoryRealtime::new(hub)),
        metrics: metrics.clone(),
        sink,
        health: Arc::new(HealthMonitor::new(metrics)),
        jwt: JwtConfig::new(SECRET).unwrap(),
        render_metrics: None,
        ws: kasama::server::WsSockets::with_defaults(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });

    let u = UserId::new();
    repo.create_profile(Actor::Service, NewProfile::new(u, "a@example.com", "A"))
        .await
        .unwrap();
    let t = token(SECRET, u, Duration::from_secs(3600));
    let http = reqwest::Client::new();
    let c: Value = http
        .post(format!("{base}/api/conversations"))
        .bearer_auth(&t)
        .json(&json!({"agent": "communication_advisor"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    failing.down.store(true, Ordering::SeqCst);
    let resp = http
        .post(format!(
            "{base}/api/conversations/{}/messages",
            c["id"].as_str().unwrap()
        ))
        .bearer_auth(&t)
        .json(&json!({"content": "We argue at night."}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .unwrap()
        .unwrap();
    pipeline.shutdown().await.unwrap();
    let charged = pipeline.ledger().user_today(u);
    assert!(charged > 0, "the backend call is the user's");
    assert_eq!(status, 200, "charged {charged} for: {body}");
    assert!(body.contains("event: done"), "{body}");
    assert!(body.contains("Hello world"), "{body}");
}
