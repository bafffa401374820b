//! The example host: an axum server composed from kasama (see `kasama::server`).
//!
//! ```text
//! cargo run --features server,metrics-facade --example server
//! ```
//!
//! In memory by default, PostgreSQL with `DATABASE_URL`. Listens on `127.0.0.1:8080`
//! (`KASAMA_ADDR`); tokens are HS256 with `KASAMA_JWT_SECRET` (a fixed development
//! secret when unset). On start it creates a demo user and prints a token for it, so
//! `curl -H "Authorization: Bearer $TOKEN" localhost:8080/api/profile` works; the
//! dashboard is at `/dashboard`, Prometheus text at `/metrics`, the change feed at
//! `ws://…/realtime?token=…`. Ctrl-C shuts down gracefully and writes every buffered
//! AI interaction.

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::SimulatedAgent;
use kasama::metrics::{FanOut, HealthMonitor, InMemoryMetrics, MetricsFacadeSink, MetricsSink};
use kasama::pipeline::AiPipeline;
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime, PgRealtime, PgRealtimeConfig, Realtime};
use kasama::repository::MeteredRepository;
use kasama::semantic::{HashingEmbedder, SemanticCache};
use kasama::server::{AppState, router, token};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let metrics = Arc::new(InMemoryMetrics::new());
    let sink: Arc<dyn MetricsSink> = Arc::new(FanOut(vec![
        metrics.clone(),
        Arc::new(MetricsFacadeSink::new()),
    ]));
    let (repo, realtime): (Arc<dyn Repository>, Arc<dyn Realtime>) =
        match std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty()) {
            Some(url) => {
                kasama::repository::postgres::migrate_url(&url).await?;
                let pg = PgRepository::connect(&PgConfig::new(url.clone()))?;
                pg.ensure_partitions(3, 8).await?;
                let feed = PgRealtime::start_with_metrics(
                    PgRealtimeConfig {
                        url,
                        ..Default::default()
                    },
                    sink.clone(),
                );
                (
                    Arc::new(MeteredRepository::new(pg, sink.clone())),
                    Arc::new(feed),
                )
            }
            None => {
                let hub = Hub::new(256);
                let mem = InMemoryRepository::new().with_change_feed(hub.clone());
                (
                    Arc::new(MeteredRepository::new(mem, sink.clone())),
                    Arc::new(MemoryRealtime::new(hub)),
                )
            }
        };
    let l = |ms| Duration::from_millis(ms);
    let pipeline = Arc::new(
        AiPipeline::builder(repo.clone())
            .backend(Arc::new(
                SimulatedAgent::builder("primary")
                    .latency(l(300), l(900))
                    .build()?,
            ))
            .backend(Arc::new(
                SimulatedAgent::builder("secondary")
                    .latency(l(500), l(1500))
                    .failure_rate(0.1)
                    .build()?,
            ))
            .semantic_cache(Arc::new(
                SemanticCache::builder(Arc::new(HashingEmbedder::new())).build()?,
            ))
            .metrics(sink.clone())
            .build()?,
    );
    let secret = std::env::var("KASAMA_JWT_SECRET").unwrap_or_else(|_| {
        eprintln!("KASAMA_JWT_SECRET is not set: using a development secret");
        "kasama-development-secret".into()
    });
    let demo = UserId::new();
    repo.create_profile(
        Actor::Service,
        NewProfile::new(demo, format!("demo-{demo}@example.com"), "Demo"),
    )
    .await?;
    println!(
        "demo user {demo}\ntoken: {}",
        token(secret.as_bytes(), demo, Duration::from_secs(24 * 3600))
    );
    let state = AppState {
        repo: repo.clone(),
        pipeline: pipeline.clone(),
        realtime,
        metrics: metrics.clone(),
        sink,
        health: Arc::new(HealthMonitor::new(metrics).with_repository(repo)),
        jwt_secret: Arc::new(secret.into_bytes()),
        render_metrics: Some(Arc::new(move || handle.render())),
        ws: kasama::server::WsSockets::with_defaults(),
    };
    let addr = std::env::var("KASAMA_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr} (dashboard: /dashboard)");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let written = pipeline.shutdown().await?;
    println!("shut down; {} AI interactions written", written.written);
    Ok(())
}
