//! Metrics: exact percentiles, windows rolling over on tokio's paused clock, bounded
//! series, alerts raised once and resolved once, the metered repository and the
//! pipeline's events.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::fixtures::new_assessment;
use kasama::agent::{AiRequest, SimulatedAgent};
use kasama::health::{AlertKind, Check, HealthMonitor, Status, Thresholds};
use kasama::metrics::{InMemoryMetrics, MetricEvent, MetricsSink};
use kasama::pipeline::{AiPipeline, Budgets};
use kasama::prelude::*;
use kasama::repository::MeteredRepository;

fn api(ms: f64, status: u16) -> MetricEvent {
    MetricEvent::Api {
        endpoint: "/goals/{id}".into(),
        method: "GET",
        status,
        latency: Duration::from_secs_f64(ms / 1000.0),
        user: Some(UserId::new()),
    }
}

#[tokio::test(start_paused = true)]
async fn percentiles_of_a_known_distribution_are_exact() {
    let m = InMemoryMetrics::new();
    // 1, 2, …, 1000 µs, shuffled.
    for i in 0..1000u64 {
        let us = (i * 617) % 1000 + 1;
        m.record(&api(us as f64 / 1000.0, 200));
    }
    let s = m.snapshot().api;
    assert_eq!(s.count, 1000);
    assert_eq!(
        (s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms),
        (0.5, 0.95, 0.99, 1.0)
    );
    assert!((s.mean_ms - 0.5005).abs() < 1e-9, "{}", s.mean_ms);
    assert_eq!(s.error_rate, 0.0);
}

#[tokio::test(start_paused = true)]
async fn windows_roll_over_and_show_the_previous_window() {
    let m = InMemoryMetrics::new();
    // One API request a second for two minutes, every tenth a 500.
    for i in 0..120 {
        m.record(&api(5.0, if i % 10 == 0 { 500 } else { 200 }));
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let one = m
        .snapshot()
        .windows
        .into_iter()
        .find(|w| w.window == "1m")
        .unwrap();
    assert_eq!(one.api_rps, 1.0);
    assert!((one.api_error_rate - 0.1).abs() < 1e-9);
    assert_eq!(one.previous.as_ref().unwrap().api_rps, 1.0);
    // A quiet minute: the current window empties, the previous one holds the traffic.
    tokio::time::advance(Duration::from_secs(60)).await;
    let one = m
        .snapshot()
        .windows
        .into_iter()
        .find(|w| w.window == "1m")
        .unwrap();
    assert_eq!(one.api_rps, 0.0);
    assert_eq!(one.previous.unwrap().api_rps, 1.0);
    let five = m
        .snapshot()
        .windows
        .into_iter()
        .find(|w| w.window == "5m")
        .unwrap();
    assert_eq!(five.api_rps, 120.0 / 300.0);
}

#[tokio::test(start_paused = true)]
async fn series_stay_bounded_whatever_the_users_and_routes() {
    let m = InMemoryMetrics::new();
    for i in 0..5000 {
        m.record(&MetricEvent::Api {
            endpoint: format!("/raw/path/{i}"),
            method: "GET",
            status: 200,
            latency: Duration::from_millis(1),
            user: Some(UserId::new()),
        });
    }
    let s = m.snapshot();
    assert_eq!(s.api.count, 5000);
    assert_eq!(
        s.api_routes.len(),
        kasama::metrics::MAX_KEYS + 1,
        "64 routes and \"other\""
    );
    assert_eq!(
        s.api_routes
            .iter()
            .find(|r| r.name == "other")
            .unwrap()
            .latency
            .count,
        5000 - 64
    );
}

#[tokio::test(start_paused = true)]
async fn an_alert_is_raised_once_and_resolved_once() {
    let m = Arc::new(InMemoryMetrics::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let monitor = HealthMonitor::new(m.clone()).on_alert(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    let mut alerts = monitor.subscribe();
    // Too little data: healthy, no alert.
    for _ in 0..5 {
        m.record(&api(900.0, 200));
    }
    assert_eq!(monitor.evaluate().await.overall, Status::Healthy);
    // p95 over 500 ms: critical; one alert, however often it is evaluated.
    for _ in 0..30 {
        m.record(&api(900.0, 200));
    }
    for _ in 0..3 {
        let r = monitor.evaluate().await;
        let api = r
            .checks
            .iter()
            .find(|c| c.check == Check::ApiLatencyP95)
            .unwrap();
        assert_eq!(api.status, Status::Critical);
        assert!(
            api.recommendation
                .as_ref()
                .unwrap()
                .contains("200 ms target")
        );
    }
    let a = alerts.try_recv().unwrap();
    assert_eq!(
        (a.check, a.kind, a.status),
        (Check::ApiLatencyP95, AlertKind::Raised, Status::Critical)
    );
    assert!(alerts.try_recv().is_err(), "no flood");
    // Five minutes later only fast requests are recent: resolved, once.
    tokio::time::advance(Duration::from_secs(6 * 60)).await;
    for _ in 0..30 {
        m.record(&api(20.0, 200));
    }
    monitor.evaluate().await;
    monitor.evaluate().await;
    let a = alerts.try_recv().unwrap();
    assert_eq!(
        (a.check, a.kind, a.status),
        (Check::ApiLatencyP95, AlertKind::Resolved, Status::Healthy)
    );
    assert!(alerts.try_recv().is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn error_rate_and_cache_hit_rate_checks() {
    let m = Arc::new(InMemoryMetrics::new());
    let monitor = HealthMonitor::new(m.clone()).with_thresholds(Thresholds {
        min_samples: 10,
        ..Default::default()
    });
    for i in 0..20 {
        m.record(&api(10.0, if i % 5 == 0 { 503 } else { 200 }));
    }
    for i in 0..20 {
        m.record(&MetricEvent::Ai {
            agent: AgentType::LearningCoach,
            backend: Some("sim".into()),
            input_tokens: 10,
            output_tokens: 10,
            cost_nanos: 100,
            saved_nanos: 0,
            latency: Duration::from_millis(800),
            cache: if i % 5 == 0 {
                kasama::metrics::CacheTier::Exact
            } else {
                kasama::metrics::CacheTier::Miss
            },
            error: None,
        });
    }
    let r = monitor.evaluate().await;
    let by = |c: Check| r.checks.iter().find(|x| x.check == c).unwrap().clone();
    assert_eq!(by(Check::ApiErrorRate).status, Status::Critical); // 20 % ≥ 15 %
    assert_eq!(by(Check::ApiErrorRate).value, Some(0.2));
    assert_eq!(by(Check::AiLatencyMean).status, Status::Healthy);
    let cache = by(Check::CacheHitRate);
    assert_eq!((cache.status, cache.value), (Status::Critical, Some(0.2))); // 20 % < 25 %
    assert!(cache.recommendation.unwrap().contains("70 % target"));
    assert_eq!(r.overall, Status::Critical);
}

#[tokio::test]
async fn the_metered_repository_and_the_pipeline_report_their_figures() {
    let m = Arc::new(InMemoryMetrics::new());
    let repo: Arc<dyn Repository> =
        Arc::new(MeteredRepository::new(InMemoryRepository::new(), m.clone()));
    let u = UserId::new();
    repo.create_profile(Actor::Service, NewProfile::new(u, "m@example.com", "M"))
        .await
        .unwrap();
    assert!(repo.get_goal(Actor::User(u), GoalId::new()).await.is_err());
    let p = AiPipeline::builder(repo.clone())
        .backend(Arc::new(SimulatedAgent::instant("sim")))
        .budgets(Budgets::unlimited())
        .metrics(m.clone())
        .build()
        .unwrap();
    let mut total = 0;
    for i in 0..3 {
        total += p
            .complete(
                AiRequest::new(u, AgentType::LearningCoach, format!("q{i}")),
                SubscriptionTier::Free,
            )
            .await
            .unwrap()
            .cost_nanos;
    }
    p.shutdown().await.unwrap();
    let s = m.snapshot();
    let ops: Vec<&str> = s.db_operations.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(ops, ["create_profile", "get_goal", "record_interactions"]);
    assert_eq!(s.db.count, 3);
    assert_eq!(
        s.db.errors, 0,
        "not found is the caller's answer, not a database failure"
    );
    assert_eq!(s.ai.count, 3);
    assert_eq!(s.ai_cost_nanos, total);
    assert_eq!(
        s.ai_backends
            .iter()
            .map(|b| (b.name.as_str(), b.latency.count))
            .collect::<Vec<_>>(),
        [("sim", 3)]
    );
    let coach = s
        .ai_agents
        .iter()
        .find(|a| a.agent == AgentType::LearningCoach)
        .unwrap();
    assert_eq!(coach.cost_nanos, total);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["ai"]["count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_includes_the_databases_own_figures() {
    let Some(db) = common::pg().await else { return };
    let m = Arc::new(InMemoryMetrics::new());
    // A brand-new database has read few blocks, so its buffer hit ratio says nothing yet:
    // this test judges the partitions only.
    let monitor = HealthMonitor::new(m)
        .with_thresholds(Thresholds {
            db_buffer_hit_ratio: 0.0,
            ..Default::default()
        })
        .with_repository(Arc::new(db.repo.clone()))
        // Read the figures on every evaluation: the second one must see the new row.
        .with_database_refresh(Duration::ZERO);
    let r = monitor.evaluate().await;
    let figures = r.database.clone().expect("PostgreSQL reports its figures");
    assert_eq!(figures.default_partition_rows, 0);
    assert_eq!(
        figures.partitions, 2,
        "the template has only the DEFAULT partitions"
    );
    assert!(figures.size_bytes > 0 && figures.connections >= 1);
    let check = r
        .checks
        .iter()
        .find(|c| c.check == Check::Database)
        .unwrap();
    assert_eq!(check.status, Status::Healthy, "{check:?}");
    // A row in a DEFAULT partition: the check warns and says what to do.
    let u = UserId::new();
    db.repo
        .create_profile(Actor::Service, NewProfile::new(u, "h@example.com", "H"))
        .await
        .unwrap();
    db.repo
        .create_assessment(Actor::Service, new_assessment(u, "x", "T", None))
        .await
        .unwrap();
    let r = monitor.evaluate().await;
    let check = r
        .checks
        .iter()
        .find(|c| c.check == Check::Database)
        .unwrap();
    assert_eq!(check.status, Status::Warning);
    assert!(
        check
            .recommendation
            .as_ref()
            .unwrap()
            .contains("ensure_partitions")
    );
    db.finish().await;
}

/// Counts the database calls a [`MeteredRepository`] makes, by operation.
#[derive(Default)]
struct CountCalls(std::sync::Mutex<Vec<&'static str>>);

impl CountCalls {
    fn of(&self, op: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|o| **o == op).count()
    }
}

impl MetricsSink for CountCalls {
    fn record(&self, e: &MetricEvent) {
        if let MetricEvent::Database { operation, .. } = e {
            self.0.lock().unwrap().push(operation);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_database_figures_are_read_at_most_once_per_refresh_interval() {
    let calls = Arc::new(CountCalls::default());
    let repo = Arc::new(MeteredRepository::new(
        InMemoryRepository::new(),
        calls.clone(),
    ));
    let monitor = Arc::new(
        HealthMonitor::new(Arc::new(InMemoryMetrics::new())).with_repository(repo.clone()),
    );
    assert_eq!(
        HealthMonitor::DEFAULT_DATABASE_REFRESH,
        Duration::from_secs(30)
    );
    // 50 evaluations within the window, some of them concurrent: one read.
    for _ in 0..10 {
        monitor.evaluate().await;
    }
    futures_util::future::join_all((0..40).map(|_| monitor.evaluate())).await;
    assert_eq!(calls.of("system_health"), 1);
    tokio::time::advance(Duration::from_millis(29_999)).await;
    monitor.evaluate().await;
    assert_eq!(calls.of("system_health"), 1, "still inside the 30 s window");
    tokio::time::advance(Duration::from_millis(1)).await;
    futures_util::future::join_all((0..10).map(|_| monitor.evaluate())).await;
    assert_eq!(calls.of("system_health"), 2, "one read for the next window");

    // Another interval, and none at all.
    let calls = Arc::new(CountCalls::default());
    let repo = Arc::new(MeteredRepository::new(
        InMemoryRepository::new(),
        calls.clone(),
    ));
    let m = Arc::new(InMemoryMetrics::new());
    let every_5s = HealthMonitor::new(m.clone())
        .with_repository(repo.clone())
        .with_database_refresh(Duration::from_secs(5));
    for _ in 0..4 {
        every_5s.evaluate().await;
        tokio::time::advance(Duration::from_secs(2)).await;
    }
    // t = 0 (read), 2, 4, 6 (read): two reads.
    assert_eq!(calls.of("system_health"), 2);
    let always = HealthMonitor::new(m)
        .with_repository(repo)
        .with_database_refresh(Duration::ZERO);
    for _ in 0..3 {
        always.evaluate().await;
    }
    assert_eq!(calls.of("system_health"), 5);
}

#[tokio::test(start_paused = true)]
async fn a_failed_database_read_is_reported_and_kept_for_the_interval() {
    // A database nobody listens for: every call fails at once (connection refused).
    let down = PgRepository::connect(&PgConfig::new(
        "host=127.0.0.1 port=1 user=nobody dbname=none sslmode=disable",
    ))
    .unwrap();
    let calls = Arc::new(CountCalls::default());
    let repo = Arc::new(MeteredRepository::new(down, calls.clone()));
    let monitor = HealthMonitor::new(Arc::new(InMemoryMetrics::new())).with_repository(repo);
    for _ in 0..5 {
        let r = monitor.evaluate().await;
        let c = r
            .checks
            .iter()
            .find(|c| c.check == Check::Database)
            .unwrap();
        assert_eq!(c.status, Status::Critical);
        assert_eq!(r.overall, Status::Critical);
    }
    assert_eq!(calls.of("system_health"), 1);
    tokio::time::advance(Duration::from_secs(30)).await;
    monitor.evaluate().await;
    assert_eq!(
        calls.of("system_health"),
        2,
        "asked again after the interval"
    );
}
