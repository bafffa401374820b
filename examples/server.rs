//! The example host: an axum server composed from kasama (see `kasama::server`).
//!
//! ```text
//! cargo run --features server,metrics-facade --example server
//! ```
//!
//! Environment:
//!
//! - `KASAMA_JWT_SECRET` (required): the HS256 secret, at least 32 bytes; without it,
//!   or with a shorter one, the server refuses to start (exit code 2).
//!   `KASAMA_JWT_ISSUER` / `KASAMA_JWT_AUDIENCE`: when set, tokens must carry them.
//! - `DATABASE_URL`: PostgreSQL as the application login (not the tables' owner, not a
//!   superuser), e.g. `postgres://kasama_login:…@db:5432/app?sslmode=verify-full&sslrootcert=/etc/kasama/db-ca.pem`.
//!   Unset: everything in memory. A superuser, a `BYPASSRLS` role or the tables'
//!   owner is refused (exit code 2). Partitions are kept ahead by a daily maintenance
//!   task. The AI budgets (`PgBudget`) and the semantic cache's answers
//!   (`PgSemanticStore`) are then kept in the database too: every instance of this
//!   server enforces the same daily and monthly caps, across restarts, and answers
//!   from what any instance cached.
//! - `KASAMA_MIGRATION_URL`: the schema owner's URL, used only to apply the migrations
//!   at start-up. Unset: migrations are not run (apply them beforehand, e.g. with
//!   `examples/migrate.rs`).
//! - `KASAMA_ADDR`: where to listen. Default `127.0.0.1:8080`.
//! - `REDIS_URL` (built with feature `redis`): the AI and API rate limits and the
//!   query cache (`CachedRepository` over `RedisCache`) are held in Redis and shared
//!   by every instance of this server (keys under `KASAMA_REDIS_PREFIX`, default
//!   `kasama`); unset, each instance limits and caches alone. A Redis that goes away
//!   makes each instance fall back to its own limits (a cache that fails is a miss),
//!   and `/health` critical until it answers again.
//!
//! On start it creates a demo user and prints a token for it, and an operator token
//! for `/health`'s details and `/api/metrics`, so `curl -H "Authorization: Bearer
//! $TOKEN" localhost:8080/api/profile` works; the dashboard is at
//! `/dashboard#token=<operator token>` (printed), Prometheus text at `/metrics`, the
//! change feed at `ws://…/realtime?token=…`. Ctrl-C shuts down gracefully and writes
//! every buffered AI interaction.

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::SimulatedAgent;
use kasama::health::HealthMonitor;
use kasama::metrics::{FanOut, InMemoryMetrics, MetricsFacadeSink, MetricsSink};
use kasama::pipeline::{AiPipeline, RateLimitConfig, SharedConfig, SharedParts};
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime, PgRealtime, PgRealtimeConfig, Realtime};
use kasama::repository::MeteredRepository;
use kasama::repository::postgres::{MaintenanceConfig, spawn_partition_maintenance};
use kasama::semantic::{HashingEmbedder, SemanticCache};
use kasama::server::{AppState, JwtConfig, router};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Checked first: nothing starts with a missing or guessable token secret.
    let jwt = match JwtConfig::from_env() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("kasama server: refusing to start: {e}");
            std::process::exit(2);
        }
    };
    let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let metrics = Arc::new(InMemoryMetrics::new());
    let sink: Arc<dyn MetricsSink> = Arc::new(FanOut(vec![
        metrics.clone(),
        Arc::new(MetricsFacadeSink::new()),
    ]));
    let mut maintenance = None;
    let mut shared_db = None;
    let (repo, realtime): (Arc<dyn Repository>, Arc<dyn Realtime>) = match env("DATABASE_URL") {
        Some(url) => {
            match env("KASAMA_MIGRATION_URL") {
                Some(owner) => {
                    let r = kasama::repository::postgres::migrate_url(&owner).await?;
                    println!("migrations applied: {:?}", r.applied);
                }
                None => println!("KASAMA_MIGRATION_URL not set: migrations not run"),
            }
            let pg = PgRepository::connect(&PgConfig::new(url.clone()))?;
            // Refuses a role that bypasses row-level security (a superuser, BYPASSRLS,
            // the tables' owner) before anything is served.
            if let Err(e) = pg.verify().await {
                eprintln!("kasama server: refusing to start: {e}");
                std::process::exit(2);
            }
            // Partitions ahead now and daily (kept alive until the server stops).
            maintenance = Some(spawn_partition_maintenance(
                Arc::new(pg.clone()),
                MaintenanceConfig::default(),
            )?);
            shared_db = Some(pg.clone());
            let feed = PgRealtime::start_with_metrics(
                PgRealtimeConfig {
                    url,
                    ..Default::default()
                },
                sink.clone(),
            )?;
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
    // Budgets and semantic-cache entries in PostgreSQL (with DATABASE_URL); rate limits
    // and the query cache in Redis (with REDIS_URL): one line chooses them.
    let shared = SharedParts::connect(
        &SharedConfig::from_env(),
        shared_db,
        RateLimitConfig::default(),
    )?;
    // The Redis query cache only over a shared (PostgreSQL) repository: instances
    // with data of their own must not serve each other's reads.
    #[cfg(feature = "redis")]
    let repo: Arc<dyn Repository> = match shared
        .query_cache
        .as_ref()
        .filter(|_| shared.repository().is_some())
    {
        Some(c) => {
            eprintln!(
                "query cache and rate limits shared through Redis (keys under {}:)",
                c.prefix()
            );
            Arc::new(CachedRepository::new(
                repo,
                c.clone(),
                Duration::from_secs(300),
            ))
        }
        None => repo,
    };
    let l = |ms| Duration::from_millis(ms);
    let pipeline = AiPipeline::builder(repo.clone())
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
        .semantic_cache(
            shared
                .semantic_cache(SemanticCache::builder(Arc::new(HashingEmbedder::new())))
                .await?,
        )
        .shared(&shared)
        .metrics(sink.clone());
    let health = HealthMonitor::new(metrics.clone())
        .with_repository(repo.clone())
        .with_shared(&shared);
    let pipeline = Arc::new(pipeline.build()?);
    let demo = UserId::new();
    repo.create_profile(
        Actor::Service,
        NewProfile::new(demo, format!("demo-{demo}@example.com"), "Demo"),
    )
    .await?;
    let operator = jwt.operator_token("demo-operator", Duration::from_secs(24 * 3600));
    println!(
        "demo user {demo}\ntoken: {}\noperator token (/health details, /api/metrics): {operator}",
        jwt.token(demo, Duration::from_secs(24 * 3600)),
    );
    let state = AppState {
        repo: repo.clone(),
        pipeline: pipeline.clone(),
        realtime,
        metrics: metrics.clone(),
        sink,
        health: Arc::new(health),
        jwt,
        render_metrics: Some(Arc::new(move || handle.render())),
        ws: kasama::server::WsSockets::with_defaults(),
    };
    let addr = std::env::var("KASAMA_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr} (dashboard: http://{addr}/dashboard#token={operator})");
    // Not plain `axum::serve`: a connection must send its request head within
    // `header_read_timeout` (10 s), or it is closed before it can hold a file for ever.
    kasama::server::serve(
        listener,
        router(state),
        kasama::server::ServeConfig::default(),
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await?;
    drop(maintenance);
    let written = pipeline.shutdown().await?;
    println!("shut down; {} AI interactions written", written.written);
    Ok(())
}
