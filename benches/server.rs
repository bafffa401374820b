//! The example server under load on loopback: `GET /api/goals` (auth, rate limit,
//! repository read, JSON) for 1,000 users, 64 requests in flight, against a bare axum
//! handler returning the same body in the same run. Prints p50/p95/p99 and
//! throughput. API target: p95 < 200 ms.
//!
//! ```text
//! cargo bench --features server,metrics-facade --bench server
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use kasama::agent::SimulatedAgent;
use kasama::health::HealthMonitor;
use kasama::metrics::{InMemoryMetrics, NoopMetrics};
use kasama::pipeline::AiPipeline;
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime};
use kasama::server::{AppState, JwtConfig, router, token};

const REQUESTS: usize = 20_000;
const IN_FLIGHT: usize = 64;

async fn load(urls: Vec<(String, Option<String>)>) -> (Vec<Duration>, Duration) {
    let client = reqwest::Client::new();
    let urls = Arc::new(urls);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, urls, next) = (client.clone(), urls.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= REQUESTS {
                        break;
                    }
                    let (url, tok) = &urls[i % urls.len()];
                    let mut r = client.get(url);
                    if let Some(t) = tok {
                        r = r.bearer_auth(t);
                    }
                    let t = Instant::now();
                    let resp = r.send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    resp.bytes().await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let took = start.elapsed();
    all.sort();
    (all, took)
}

fn show(name: &str, lat: &[Duration], took: Duration) -> f64 {
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    println!(
        "{name:<28} p50 {:>7.3} ms  p95 {:>7.3} ms  p99 {:>7.3} ms  {:>7.0} req/s",
        p(0.5),
        p(0.95),
        p(0.99),
        lat.len() as f64 / took.as_secs_f64()
    );
    p(0.95)
}

#[tokio::main]
async fn main() {
    // kasama's server.
    let secret = b"a-bench-secret-of-at-least-32-bytes".to_vec();
    let hub = Hub::new(64);
    let repo: Arc<dyn Repository> =
        Arc::new(InMemoryRepository::new().with_change_feed(hub.clone()));
    let mut urls = Vec::new();
    let metrics = Arc::new(InMemoryMetrics::new());
    let pipeline = Arc::new(
        AiPipeline::builder(repo.clone())
            .backend(Arc::new(SimulatedAgent::instant("sim")))
            .build()
            .unwrap(),
    );
    let state = AppState {
        repo: repo.clone(),
        pipeline,
        realtime: Arc::new(MemoryRealtime::new(hub)),
        metrics: metrics.clone(),
        sink: Arc::new(NoopMetrics),
        health: Arc::new(HealthMonitor::new(metrics)),
        jwt: JwtConfig::new(secret.clone()).unwrap(),
        render_metrics: None,
        ws: kasama::server::WsSockets::with_defaults(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    for i in 0..1000 {
        let u = UserId::new();
        let mut p = NewProfile::new(u, format!("load{i}@example.com"), "L");
        p.subscription_tier = SubscriptionTier::Enterprise;
        repo.create_profile(Actor::Service, p).await.unwrap();
        for g in 0..3 {
            repo.create_goal(
                Actor::User(u),
                NewGoal {
                    user_id: u,
                    title: format!("goal {g}"),
                    description: "weekly".into(),
                    category: "communication".into(),
                    target_date: None,
                    milestones: vec![],
                },
            )
            .await
            .unwrap();
        }
        urls.push((
            format!("http://{addr}/api/goals"),
            Some(token(&secret, u, Duration::from_secs(3600))),
        ));
    }
    // The baseline: bare axum sending the bytes kasama sends for a user's three goals,
    // with no auth, limits or data layer.
    let goals_json = reqwest::Client::new()
        .get(&urls[0].0)
        .bearer_auth(urls[0].1.as_ref().expect("a token"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let bare = axum::Router::new().route(
        "/api/goals",
        get(move || {
            let b = goals_json.clone();
            async move { ([("content-type", "application/json")], b) }
        }),
    );
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr2 = l2.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l2, bare).await.unwrap() });
    let bare_urls = vec![(format!("http://{addr2}/api/goals"), None)];

    // Warm both, then measure alternately.
    load(bare_urls.clone()).await;
    load(urls.clone()).await;
    let (b, bt) = load(bare_urls).await;
    let (k, kt) = load(urls).await;
    println!(
        "\n{REQUESTS} requests, {IN_FLIGHT} in flight, loopback, client and server on the same 2 cores:"
    );
    let pb = show("bare axum (same body)", &b, bt);
    let pk = show("kasama GET /api/goals", &k, kt);
    println!("p95 ratio kasama / bare: {:.2}", pk / pb);
}
