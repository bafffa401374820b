//! The parts the simulation runs on: the store and its change feed, the three
//! simulated backends behind the AI pipeline with its semantic cache, and the health
//! monitor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kasama::agent::SimulatedAgent;
use kasama::health::{Alert, HealthMonitor};
use kasama::metrics::{InMemoryMetrics, MetricsSink};
use kasama::pipeline::{AiPipeline, Price, PriceTable};
use kasama::prelude::*;
use kasama::realtime::{
    ChangeTable, Channel, Hub, MemoryRealtime, PgRealtime, PgRealtimeConfig, Realtime,
    RealtimeEvent,
};
use kasama::repository::MeteredRepository;
use kasama::semantic::{HashingEmbedder, SemanticCache};

type BoxError = Box<dyn std::error::Error>;

/// How simulated time maps to the clock the run is on.
#[derive(Clone, Copy)]
pub(crate) struct Scale {
    /// Backend latencies are divided by this (and AI latencies in the report
    /// multiplied back).
    pub(crate) latency: u64,
    /// The day (and the outage, and the monitor's period) is divided by this.
    pub(crate) day: u64,
}

impl Scale {
    /// Paused clock in memory: as simulated. Real time on PostgreSQL: backend latencies
    /// ÷ 20, and the day squeezed into 20 s.
    pub(crate) fn new(postgres: bool) -> Scale {
        if postgres {
            Scale {
                latency: 20,
                day: 4320,
            }
        } else {
            Scale { latency: 1, day: 1 }
        }
    }
}

/// The repository (metered) and its change feed: in memory, or on PostgreSQL at `pg`
/// (migrated first as `KASAMA_MIGRATION_URL` when that is set).
pub(crate) async fn store(
    pg: Option<&str>,
    metrics: &Arc<InMemoryMetrics>,
) -> Result<(Arc<dyn Repository>, Box<dyn Realtime>), BoxError> {
    Ok(match pg {
        None => {
            let hub = Hub::new(100_000);
            let inner = InMemoryRepository::new().with_change_feed(hub.clone());
            (
                Arc::new(MeteredRepository::new(inner, metrics.clone())),
                Box::new(MemoryRealtime::new(hub)),
            )
        }
        Some(url) => {
            if let Some(owner) = std::env::var("KASAMA_MIGRATION_URL")
                .ok()
                .filter(|s| !s.is_empty())
            {
                kasama::repository::postgres::migrate_url(&owner).await?;
            }
            let pgr = PgRepository::connect(&PgConfig::new(url))?;
            pgr.verify().await?;
            pgr.ensure_partitions(3, 8).await?;
            let feed = PgRealtime::start_with_metrics(
                PgRealtimeConfig {
                    url: url.to_string(),
                    buffer: 100_000,
                    ..Default::default()
                },
                metrics.clone(),
            )?;
            feed.wait_connected(Duration::from_secs(10)).await;
            (
                Arc::new(MeteredRepository::new(pgr, metrics.clone())),
                Box::new(feed),
            )
        }
    })
}

/// Counts the change events of four tables, as a dashboard listening to them would.
pub(crate) fn count_changes(realtime: &dyn Realtime) -> Result<Arc<AtomicU64>, BoxError> {
    let mut feeds = Vec::new();
    for t in [
        ChangeTable::Assessments,
        ChangeTable::Progress,
        ChangeTable::Goals,
        ChangeTable::Notifications,
    ] {
        feeds.push(realtime.subscribe(Actor::Service, Channel::Table(t))?);
    }
    let events = Arc::new(AtomicU64::new(0));
    for mut f in feeds {
        let ev = events.clone();
        tokio::spawn(async move {
            while let Some(e) = f.next_event().await {
                if matches!(e, RealtimeEvent::Change(_)) {
                    ev.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    Ok(events)
}

/// The AI side: three backends, the semantic cache and the pipeline over them.
pub(crate) struct Ai {
    pub(crate) backends: [Arc<SimulatedAgent>; 3],
    pub(crate) cache: Arc<SemanticCache>,
    pub(crate) pipeline: Arc<AiPipeline>,
}

impl Ai {
    /// Three backends, seeded from `seed`; the cheapest is flaky and has an outage.
    pub(crate) fn build(
        seed: u64,
        scale: Scale,
        repo: Arc<dyn Repository>,
        metrics: Arc<InMemoryMetrics>,
    ) -> Result<Ai, BoxError> {
        let ms = |m: u64| Duration::from_millis(m / scale.latency);
        let primary = Arc::new(
            SimulatedAgent::builder("primary")
                .seed(seed)
                .latency(ms(700), ms(1600))
                .model("coach-large")
                .build()?,
        );
        let secondary = Arc::new(
            SimulatedAgent::builder("secondary")
                .seed(seed + 1)
                .latency(ms(900), ms(2200))
                .model("coach-medium")
                .build()?,
        );
        let flaky = Arc::new(
            SimulatedAgent::builder("flaky")
                .seed(seed + 2)
                .latency(ms(500), ms(1200))
                .failure_rate(0.25)
                .outage(
                    Duration::from_millis(3 * 3_600_000 / scale.day),
                    Duration::from_millis(1_800_000 / scale.day),
                )
                .model("coach-small")
                .build()?,
        );
        let p = |i, o| Price {
            input_micros_per_1k: i,
            output_micros_per_1k: o,
        };
        let prices = PriceTable::default()
            .with("coach-large", p(20_000, 60_000))
            .with("coach-medium", p(15_000, 45_000))
            .with("coach-small", p(10_000, 30_000));
        let cache = Arc::new(
            SemanticCache::builder(Arc::new(HashingEmbedder::new()))
                .shared(AgentType::LearningCoach)
                .shared(AgentType::InsightGenerator)
                .build()?,
        );
        let pipeline = Arc::new(
            AiPipeline::builder(repo)
                .backend_priced(primary.clone(), p(20_000, 60_000))
                .backend_priced(secondary.clone(), p(15_000, 45_000))
                .backend_priced(flaky.clone(), p(10_000, 30_000))
                .prices(prices)
                .semantic_cache(cache.clone())
                .metrics(metrics as Arc<dyn MetricsSink>)
                .build()?,
        );
        Ok(Ai {
            backends: [primary, secondary, flaky],
            cache,
            pipeline,
        })
    }

    /// Calls made to all three backends, retries included.
    pub(crate) fn backend_calls(&self) -> u64 {
        self.backends.iter().map(|b| b.calls()).sum()
    }
}

/// The health monitor over the metrics and the repository, collecting every alert,
/// evaluated every ten simulated minutes by a task of its own (the handle).
pub(crate) fn monitor(
    metrics: Arc<InMemoryMetrics>,
    repo: Arc<dyn Repository>,
    scale: Scale,
) -> (
    Arc<HealthMonitor>,
    Arc<Mutex<Vec<Alert>>>,
    tokio::task::JoinHandle<()>,
) {
    let alerts: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let al = alerts.clone();
    let monitor = Arc::new(
        HealthMonitor::new(metrics)
            .with_repository(repo)
            .on_alert(move |a| al.lock().unwrap().push(a.clone())),
    );
    let task = monitor
        .clone()
        .spawn(Duration::from_millis(600_000 / scale.day));
    (monitor, alerts, task)
}
