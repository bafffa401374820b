//! Serves kasama's metrics at `http://127.0.0.1:9464/metrics` (Prometheus text format)
//! while a simulated workload runs through the AI pipeline.
//!
//! ```text
//! cargo run --features metrics-facade --example metrics_exporter -- [--port 9464] [--seconds 30]
//! curl -s http://127.0.0.1:9464/metrics | grep kasama_
//! ```

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::{AiRequest, SimulatedAgent};
use kasama::metrics::MetricsFacadeSink;
use kasama::pipeline::{AiPipeline, Budgets};
use kasama::prelude::*;
use kasama::repository::MeteredRepository;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 9464u16;
    let mut seconds = 30u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--port", Some(v)) => port = v.parse()?,
            ("--seconds", Some(v)) => seconds = v.parse()?,
            _ => return Err("usage: metrics_exporter [--port N] [--seconds N]".into()),
        }
    }
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    let sink = Arc::new(MetricsFacadeSink::new());
    let repo: Arc<dyn Repository> = Arc::new(MeteredRepository::new(
        InMemoryRepository::new(),
        sink.clone(),
    ));
    let users: Vec<UserId> = (0..20).map(|_| UserId::new()).collect();
    for (i, u) in users.iter().enumerate() {
        repo.create_profile(
            Actor::Service,
            NewProfile::new(*u, format!("u{i}@example.com"), "U"),
        )
        .await?;
    }
    let agent = SimulatedAgent::builder("sim")
        .latency(Duration::from_millis(40), Duration::from_millis(120))
        .failure_rate(0.05)
        .build()?;
    let pipeline = AiPipeline::builder(repo.clone())
        .backend(Arc::new(agent))
        .budgets(Budgets::unlimited())
        .metrics(sink)
        .build()?;
    println!("serving http://{addr}/metrics for {seconds} s");
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut i = 0usize;
    while tokio::time::Instant::now() < end {
        let u = users[i % users.len()];
        let r = AiRequest::new(u, AgentType::ALL[i % 5], format!("question {}", i % 50));
        let _ = pipeline.complete(r, SubscriptionTier::Enterprise).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pipeline.shutdown().await?;
    Ok(())
}
