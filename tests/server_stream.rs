//! The server's streamed answers used as a client would, over HTTP on loopback:
//! `/api/agents/{agent}/stream` sends each chunk as it is produced (the test holds the
//! backend between chunks and reads the first before the second exists), ends with a
//! `done` event carrying usage, cost and cache tier, and a client that goes away
//! mid-answer leaves a recorded, billed interaction; conversations are created, read
//! and answered with their history and the user's data, and another user can do none
//! of it.
#![cfg(feature = "server")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream;
use kasama::agent::{AiStream, StreamEvent, Usage};
use kasama::health::HealthMonitor;
use kasama::metrics::{InMemoryMetrics, MetricsSink};
use kasama::pipeline::{AiPipeline, BatchConfig, Budgets, Price, PriceTable, RateLimitConfig};
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime};
use kasama::server::{AppState, JwtConfig, router, token};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes";
const PRICE: Price = Price {
    input_micros_per_1k: 25_000,
    output_micros_per_1k: 75_000,
};

/// A backend that streams `"Hello "`, then waits for a permit of `gate`, then
/// streams `"world"` and ends; it keeps every request and notes when a stream is
/// dropped.
struct Gated {
    gate: Arc<Semaphore>,
    seen: Mutex<Vec<AiRequest>>,
    dropped: Arc<AtomicBool>,
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn response(text: &str) -> AiResponse {
    AiResponse {
        output: json!({ "text": text }),
        usage: Usage {
            input_tokens: 100,
            output_tokens: 20,
        },
        usage_estimated: false,
        model: "sim-1".into(),
        backend: "gated".into(),
        latency: Duration::from_millis(1),
    }
}

#[async_trait]
impl AiAgent for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    async fn complete(&self, req: &AiRequest) -> Result<AiResponse> {
        self.seen.lock().unwrap().push(req.clone());
        Ok(response("Hello world"))
    }
    async fn stream(&self, req: &AiRequest) -> Result<AiStream> {
        self.seen.lock().unwrap().push(req.clone());
        let (gate, flag) = (self.gate.clone(), DropFlag(self.dropped.clone()));
        let events = stream::unfold((0, gate, flag), |(i, gate, flag)| async move {
            let ev = match i {
                0 => StreamEvent::Delta("Hello ".into()),
                1 => {
                    gate.acquire().await.unwrap().forget();
                    StreamEvent::Delta("world".into())
                }
                2 => StreamEvent::Done(response("Hello world")),
                _ => return None,
            };
            Some((Ok(ev), (i + 1, gate, flag)))
        });
        Ok(AiStream::new(events))
    }
}

struct Server {
    base: String,
    repo: Arc<dyn Repository>,
    agent: Arc<Gated>,
    pipeline: Arc<AiPipeline>,
}

async fn start() -> Server {
    let metrics = Arc::new(InMemoryMetrics::new());
    let sink: Arc<dyn MetricsSink> = metrics.clone();
    let hub = Hub::new(64);
    let repo: Arc<dyn Repository> =
        Arc::new(InMemoryRepository::new().with_change_feed(hub.clone()));
    let agent = Arc::new(Gated {
        gate: Arc::new(Semaphore::new(0)),
        seen: Mutex::new(Vec::new()),
        dropped: Arc::new(AtomicBool::new(false)),
    });
    let pipeline = Arc::new(
        AiPipeline::builder(repo.clone())
            .backend(agent.clone())
            .rate_limits(RateLimitConfig::unlimited())
            .budgets(Budgets::unlimited())
            .prices(PriceTable {
                default: PRICE,
                ..Default::default()
            })
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
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    Server {
        base: format!("http://{addr}"),
        repo,
        agent,
        pipeline,
    }
}

async fn user(s: &Server) -> (UserId, String) {
    let u = UserId::new();
    let p = NewProfile::new(u, format!("{u}@example.com"), "U");
    s.repo.create_profile(Actor::Service, p).await.unwrap();
    (u, token(SECRET, u, Duration::from_secs(3600)))
}

/// Reads server-sent events from a response, one at a time.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    fn new(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event as (name, data); keep-alive comments are skipped.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn post(s: &Server, token: &str, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", s.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Waits (up to 10 s) until `f` holds.
async fn until(mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 10 s");
}

async fn rows(s: &Server, u: UserId) -> Vec<AiInteraction> {
    s.repo
        .list_interactions(Actor::Service, u, Page::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_arrive_as_they_are_produced_and_end_with_usage_cost_and_tier() {
    let s = start().await;
    let (u, t) = user(&s).await;
    let resp = post(
        &s,
        &t,
        "/api/agents/learning_coach/stream",
        json!({"question": "How do I listen better?"}),
    )
    .await;
    let mut ev = Events::new(resp);
    // The first chunk arrives while the backend is held before the second.
    assert_eq!(
        ev.next().await,
        Some(("delta".into(), json!({"text": "Hello "})))
    );
    s.agent.gate.add_permits(1);
    assert_eq!(
        ev.next().await,
        Some(("delta".into(), json!({"text": "world"})))
    );
    let (name, done) = ev.next().await.unwrap();
    assert_eq!(name, "done");
    let cost = PRICE.cost_nanos(Usage {
        input_tokens: 100,
        output_tokens: 20,
    });
    assert_eq!(done["output"], json!({"text": "Hello world"}));
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 100, "output_tokens": 20})
    );
    assert_eq!(done["cost_nanos"], cost);
    assert_eq!(done["cache"], "Off");
    assert_eq!(ev.next().await, None, "the stream ends after done");
    assert_eq!(s.pipeline.ledger().user_today(u), cost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_answer_leaves_a_recorded_billed_interaction() {
    let s = start().await;
    let (u, t) = user(&s).await;
    let resp = post(
        &s,
        &t,
        "/api/agents/learning_coach/stream",
        json!({"question": "How do I listen better?"}),
    )
    .await;
    let mut ev = Events::new(resp);
    assert_eq!(ev.next().await.unwrap().0, "delta");
    drop(ev); // the client disconnects while the backend is held

    // The backend call is cancelled, what it produced billed and recorded.
    until(async || s.agent.dropped.load(Ordering::SeqCst)).await;
    until(async || !rows(&s, u).await.is_empty()).await;
    let r = rows(&s, u).await;
    assert_eq!(r.len(), 1);
    assert!(!r[0].success);
    assert!(
        r[0].cost_nanos > 0,
        "what was produced is billed: {:?}",
        r[0]
    );
    assert_eq!(s.pipeline.ledger().user_today(u), r[0].cost_nanos as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_is_answered_with_its_history_and_the_users_data() {
    let s = start().await;
    let (u, t) = user(&s).await;
    s.repo
        .create_goal(
            Actor::User(u),
            NewGoal {
                user_id: u,
                title: "Talk calmly about money".into(),
                description: String::new(),
                category: "communication".into(),
                target_date: None,
                milestones: Vec::new(),
            },
        )
        .await
        .unwrap();
    let r = post(
        &s,
        &t,
        "/api/conversations",
        json!({"agent": "communication_advisor", "title": "Money talks"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    let id = c["id"].as_str().unwrap().to_string();

    // Two turns; the second is asked with the first in its history.
    for (i, q) in [
        "How do I bring up our budget?",
        "and what about with my mother?",
    ]
    .into_iter()
    .enumerate()
    {
        s.agent.gate.add_permits(1);
        let resp = post(
            &s,
            &t,
            &format!("/api/conversations/{id}/messages"),
            json!({"content": q}),
        )
        .await;
        let mut ev = Events::new(resp);
        let mut text = String::new();
        loop {
            match ev.next().await.unwrap() {
                (n, d) if n == "delta" => text.push_str(d["text"].as_str().unwrap()),
                (n, _) if n == "done" => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(text, "Hello world");
        let seen = s.agent.seen.lock().unwrap().last().unwrap().clone();
        assert_eq!(seen.question(), q);
        assert_eq!(seen.history.len(), 2 * i, "turn {i}");
        assert!(
            seen.system_message().contains("Talk calmly about money"),
            "the user's data reaches the model"
        );
    }
    let seen = s.agent.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(seen.history[0].content, "How do I bring up our budget?");
    assert_eq!(seen.history[1].content, "Hello world");

    // Read back: four messages, oldest first.
    let r = reqwest::Client::new()
        .get(format!("{}/api/conversations/{id}", s.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(body["conversation"]["title"], "Money talks");
    assert_eq!(body["conversation"]["user_id"], json!(u));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_can_neither_read_nor_continue_a_conversation() {
    let s = start().await;
    let (_, ta) = user(&s).await;
    let (_, tb) = user(&s).await;
    let c: Value = post(
        &s,
        &ta,
        "/api/conversations",
        json!({"agent": "learning_coach"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = c["id"].as_str().unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/api/conversations/{id}", s.base))
        .bearer_auth(&tb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = post(
        &s,
        &tb,
        &format!("/api/conversations/{id}/messages"),
        json!({"content": "what did they ask?"}),
    )
    .await;
    assert_eq!(r.status(), 404);
    assert!(s.agent.seen.lock().unwrap().is_empty(), "no backend call");
    // Bad input is refused before anything is asked or stored.
    let r = post(
        &s,
        &ta,
        &format!("/api/conversations/{id}/messages"),
        json!({"content": ""}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post(&s, &ta, "/api/conversations", json!({"agent": "oracle"})).await;
    assert_eq!(r.status(), 400);
    assert!(s.agent.seen.lock().unwrap().is_empty());
}
