//! Operations: [`HealthMonitor`] checks the product's targets on recent metrics (and the
//! database's own figures), and raises an alert once when a check leaves "healthy" and
//! once when it comes back — no flood while it stays bad.
//!
//! Longer than 600 lines because every check is evaluated in one place, in the order
//! the report lists them, with the monitor's settings beside them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::domain::{Actor, DatabaseHealth};
use crate::metrics::{InMemoryMetrics, InteractionsLost, LatencySummary};
use crate::repository::Repository;

/// How a check stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Status {
    /// Within target (or too little data to judge).
    Healthy,
    /// Past the warning threshold.
    Warning,
    /// Past the critical threshold.
    Critical,
}

/// What is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Check {
    /// API p95 latency, last 5 minutes.
    ApiLatencyP95,
    /// API error rate (5xx), last 5 minutes.
    ApiErrorRate,
    /// AI mean latency, last 5 minutes.
    AiLatencyMean,
    /// AI error rate, last 5 minutes.
    AiErrorRate,
    /// Database call p95 latency, last 5 minutes.
    DbLatencyP95,
    /// Realtime delivery p95 latency, last 5 minutes.
    RealtimeLatencyP95,
    /// Semantic-cache hit rate of AI requests.
    CacheHitRate,
    /// The database's own figures (rows in DEFAULT partitions, buffer hit ratio).
    Database,
    /// Interaction rows the recorder lost since the previous evaluation: critical when
    /// rows were dropped or failed, a warning when rows were rejected as invalid.
    Recording,
    /// Rate limits shared through Redis (feature `redis`,
    /// [`HealthMonitor::with_shared_limits`]): critical while Redis does not answer and
    /// each instance applies its own limits.
    SharedLimits,
    /// Budgets shared through PostgreSQL ([`HealthMonitor::with_shared_budget`]):
    /// critical while settlements wait for the database or since one was given up
    /// (its cost is missing from the shared ledger).
    SharedBudget,
}

/// Thresholds: `(warning, critical)` per check. Defaults are the product's targets.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Thresholds {
    /// Default: 200 ms and 500 ms (target: API p95 < 200 ms).
    #[cfg_attr(
        feature = "config",
        serde(deserialize_with = "crate::config_serde::duration_pair")
    )]
    pub api_p95: (Duration, Duration),
    /// Default: 2 s and 5 s (target: AI answers < 2 s on average).
    #[cfg_attr(
        feature = "config",
        serde(deserialize_with = "crate::config_serde::duration_pair")
    )]
    pub ai_mean: (Duration, Duration),
    /// Default: 50 ms and 200 ms (target: complex queries < 50 ms).
    #[cfg_attr(
        feature = "config",
        serde(deserialize_with = "crate::config_serde::duration_pair")
    )]
    pub db_p95: (Duration, Duration),
    /// Default: 100 ms and 500 ms (target: realtime < 100 ms).
    #[cfg_attr(
        feature = "config",
        serde(deserialize_with = "crate::config_serde::duration_pair")
    )]
    pub realtime_p95: (Duration, Duration),
    /// Default: 5 % and 15 %.
    pub error_rate: (f64, f64),
    /// Below these the cache hit rate warns / is critical. Default: 50 % and 25 %
    /// (target 70 %: below it the check stays healthy but recommends tuning).
    pub cache_hit_rate: (f64, f64),
    /// The cache-hit-rate target. Default: 70 %.
    pub cache_hit_target: f64,
    /// Fewer events than this in the window: not judged. Default: 20.
    pub min_samples: u64,
    /// DB buffer hit ratio below this warns. Default: 0.90.
    pub db_buffer_hit_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            api_p95: (Duration::from_millis(200), Duration::from_millis(500)),
            ai_mean: (Duration::from_secs(2), Duration::from_secs(5)),
            db_p95: (Duration::from_millis(50), Duration::from_millis(200)),
            realtime_p95: (Duration::from_millis(100), Duration::from_millis(500)),
            error_rate: (0.05, 0.15),
            cache_hit_rate: (0.50, 0.25),
            cache_hit_target: 0.70,
            min_samples: 20,
            db_buffer_hit_ratio: 0.90,
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckStatus {
    /// The check.
    pub check: Check,
    /// Its status.
    pub status: Status,
    /// The measured value (ms for latencies, 0–1 for rates), if there was enough data.
    pub value: Option<f64>,
    /// What to do about it, when there is something to do.
    pub recommendation: Option<String>,
}

/// Every check at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthReport {
    /// The worst status of any check.
    pub overall: Status,
    /// Each check.
    pub checks: Vec<CheckStatus>,
    /// The database's figures, when a PostgreSQL repository is attached.
    pub database: Option<DatabaseHealth>,
}

/// Whether an alert opens or closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AlertKind {
    /// The check left "healthy".
    Raised,
    /// The check is healthy again.
    Resolved,
}

/// An alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// The check.
    pub check: Check,
    /// Raised or resolved.
    pub kind: AlertKind,
    /// The status that caused it.
    pub status: Status,
    /// The measured value.
    pub value: Option<f64>,
    /// A sentence for a person.
    pub message: String,
}

type Callback = Arc<dyn Fn(&Alert) + Send + Sync>;

/// The database figures last read, and when (on tokio's clock).
struct DbReading {
    at: tokio::time::Instant,
    /// The figures, or why the database did not answer.
    result: std::result::Result<Option<DatabaseHealth>, String>,
}

/// Checks health on demand ([`HealthMonitor::evaluate`]) or on a timer
/// ([`HealthMonitor::spawn`]) and delivers alerts to callbacks and subscribers.
///
/// The database's figures (one `Repository::system_health` call, which counts rows)
/// are read at most once per [refresh interval](HealthMonitor::with_database_refresh)
/// (default 30 s, on tokio's clock) however often `evaluate` is called; concurrent
/// callers share one read. A failed read is kept for the interval too, so a database
/// in trouble is not asked again by every probe.
pub struct HealthMonitor {
    metrics: Arc<InMemoryMetrics>,
    thresholds: Thresholds,
    repo: Option<Arc<dyn Repository>>,
    db_refresh: Duration,
    db_reading: tokio::sync::Mutex<Option<DbReading>>,
    last: Mutex<HashMap<Check, Status>>,
    lost: Mutex<InteractionsLost>,
    tx: broadcast::Sender<Alert>,
    callbacks: Vec<Callback>,
    #[cfg(feature = "redis")]
    shared_limits: Option<Arc<crate::pipeline::RedisRateLimits>>,
    shared_budget: Option<Arc<crate::pipeline::PgBudget>>,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

fn latency_check(
    check: Check,
    s: &LatencySummary,
    value_ms: f64,
    (warn, crit): (Duration, Duration),
    min: u64,
    what: &str,
) -> CheckStatus {
    if s.count < min {
        return CheckStatus {
            check,
            status: Status::Healthy,
            value: None,
            recommendation: None,
        };
    }
    let (w, c) = (warn.as_secs_f64() * 1000.0, crit.as_secs_f64() * 1000.0);
    let status = if value_ms >= c {
        Status::Critical
    } else if value_ms >= w {
        Status::Warning
    } else {
        Status::Healthy
    };
    let recommendation = (status != Status::Healthy)
        .then(|| format!("{what} is {value_ms:.0} ms, over the {w:.0} ms target"));
    CheckStatus {
        check,
        status,
        value: Some(value_ms),
        recommendation,
    }
}

fn rate_check(
    check: Check,
    s: &LatencySummary,
    (warn, crit): (f64, f64),
    min: u64,
    what: &str,
) -> CheckStatus {
    if s.count < min {
        return CheckStatus {
            check,
            status: Status::Healthy,
            value: None,
            recommendation: None,
        };
    }
    let v = s.error_rate;
    let status = if v >= crit {
        Status::Critical
    } else if v >= warn {
        Status::Warning
    } else {
        Status::Healthy
    };
    let recommendation = (status != Status::Healthy).then(|| {
        format!(
            "{what} error rate is {:.1} %, over {:.0} %: check backends and recent deploys",
            v * 100.0,
            warn * 100.0
        )
    });
    CheckStatus {
        check,
        status,
        value: Some(v),
        recommendation,
    }
}

impl HealthMonitor {
    /// Default of [`HealthMonitor::with_database_refresh`]: 30 s.
    pub const DEFAULT_DATABASE_REFRESH: Duration = Duration::from_secs(30);

    /// A monitor over `metrics` with the default thresholds.
    pub fn new(metrics: Arc<InMemoryMetrics>) -> Self {
        let (tx, _) = broadcast::channel(64);
        Self {
            metrics,
            thresholds: Thresholds::default(),
            repo: None,
            db_refresh: Self::DEFAULT_DATABASE_REFRESH,
            db_reading: tokio::sync::Mutex::new(None),
            last: Mutex::new(HashMap::new()),
            lost: Mutex::new(InteractionsLost::default()),
            tx,
            callbacks: Vec::new(),
            #[cfg(feature = "redis")]
            shared_limits: None,
            shared_budget: None,
        }
    }

    /// Also reports every shared part `parts` holds ([`Check::SharedBudget`],
    /// [`Check::SharedLimits`]).
    #[must_use]
    pub fn with_shared(mut self, parts: &crate::pipeline::SharedParts) -> Self {
        if let Some(b) = &parts.budget {
            self.shared_budget = Some(b.clone());
        }
        #[cfg(feature = "redis")]
        if let Some(l) = &parts.rate_limits {
            self.shared_limits = Some(l.clone());
        }
        self
    }

    /// Also reports the budgets shared through PostgreSQL ([`Check::SharedBudget`]).
    #[must_use]
    pub fn with_shared_budget(mut self, budget: Arc<crate::pipeline::PgBudget>) -> Self {
        self.shared_budget = Some(budget);
        self
    }

    /// Also reports the rate limits shared through Redis ([`Check::SharedLimits`]).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn with_shared_limits(mut self, limits: Arc<crate::pipeline::RedisRateLimits>) -> Self {
        self.shared_limits = Some(limits);
        self
    }

    /// Other thresholds.
    #[must_use]
    pub fn with_thresholds(mut self, t: Thresholds) -> Self {
        self.thresholds = t;
        self
    }

    /// Includes the database's own figures (`Repository::system_health`, which
    /// `PgRepository` fills from `get_system_health_metrics()`).
    #[must_use]
    pub fn with_repository(mut self, repo: Arc<dyn Repository>) -> Self {
        self.repo = Some(repo);
        self
    }

    /// How long the database's figures are reused before they are read again.
    /// Default: 30 s ([`Self::DEFAULT_DATABASE_REFRESH`]); `Duration::ZERO` reads them on
    /// every evaluation.
    #[must_use]
    pub fn with_database_refresh(mut self, every: Duration) -> Self {
        self.db_refresh = every;
        self
    }

    /// Calls `f` for every alert.
    #[must_use]
    pub fn on_alert(mut self, f: impl Fn(&Alert) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Arc::new(f));
        self
    }

    /// A channel of every alert from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.tx.subscribe()
    }

    /// Evaluates every check now and delivers the alerts its changes cause.
    pub async fn evaluate(&self) -> HealthReport {
        let snap = self.metrics.snapshot();
        let t = &self.thresholds;
        let r = &snap.recent;
        let mut checks = vec![
            latency_check(
                Check::ApiLatencyP95,
                &r.api,
                r.api.p95_ms,
                t.api_p95,
                t.min_samples,
                "API p95 latency",
            ),
            rate_check(
                Check::ApiErrorRate,
                &r.api,
                t.error_rate,
                t.min_samples,
                "API",
            ),
            latency_check(
                Check::AiLatencyMean,
                &r.ai,
                r.ai.mean_ms,
                t.ai_mean,
                t.min_samples,
                "AI mean latency",
            ),
            rate_check(Check::AiErrorRate, &r.ai, t.error_rate, t.min_samples, "AI"),
            latency_check(
                Check::DbLatencyP95,
                &r.db,
                r.db.p95_ms,
                t.db_p95,
                t.min_samples,
                "Database p95 latency",
            ),
            latency_check(
                Check::RealtimeLatencyP95,
                &r.realtime,
                r.realtime.p95_ms,
                t.realtime_p95,
                t.min_samples,
                "Realtime p95 delivery",
            ),
        ];
        let c = &snap.ai_cache;
        checks.push(if c.hits + c.misses < t.min_samples {
            CheckStatus { check: Check::CacheHitRate, status: Status::Healthy, value: None, recommendation: None }
        } else {
            let v = c.hit_rate;
            let status = if v < t.cache_hit_rate.1 {
                Status::Critical
            } else if v < t.cache_hit_rate.0 {
                Status::Warning
            } else {
                Status::Healthy
            };
            let recommendation = (v < t.cache_hit_target).then(|| {
                format!(
                    "cache hit rate is {:.0} %, below the {:.0} % target: share non-personal agents' answers or lower their thresholds",
                    v * 100.0,
                    t.cache_hit_target * 100.0
                )
            });
            CheckStatus { check: Check::CacheHitRate, status, value: Some(v), recommendation }
        });
        checks.push({
            let now = snap.interactions_lost;
            let before = std::mem::replace(
                &mut *self.lost.lock().unwrap_or_else(|e| e.into_inner()),
                now,
            );
            let lost = (now.dropped - before.dropped) + (now.failed - before.failed);
            let rejected = now.rejected - before.rejected;
            let status = if lost > 0 {
                Status::Critical
            } else if rejected > 0 {
                Status::Warning
            } else {
                Status::Healthy
            };
            CheckStatus {
                check: Check::Recording,
                status,
                value: Some((lost + rejected) as f64),
                recommendation: (status != Status::Healthy).then(|| {
                    format!(
                        "{} interaction rows dropped (buffer full), {} failed (repository down), {} rejected as invalid since the last check",
                        now.dropped - before.dropped,
                        now.failed - before.failed,
                        rejected
                    )
                }),
            }
        });
        let mut database = None;
        if let Some(repo) = &self.repo {
            // Held across the read: callers arriving meanwhile wait for it and reuse it.
            // If this caller is dropped mid-read, the lock is released unchanged and the
            // next caller reads.
            let mut reading = self.db_reading.lock().await;
            let fresh = reading
                .as_ref()
                .is_some_and(|r| r.at.elapsed() < self.db_refresh);
            if !fresh {
                let result = repo
                    .system_health(Actor::Service)
                    .await
                    .map(|h| h.database)
                    .map_err(|e| e.to_string());
                *reading = Some(DbReading {
                    at: tokio::time::Instant::now(),
                    result,
                });
            }
            match reading.as_ref().map(|r| &r.result) {
                Some(Ok(d)) => database = d.clone(),
                Some(Err(e)) => checks.push(CheckStatus {
                    check: Check::Database,
                    status: Status::Critical,
                    value: None,
                    recommendation: Some(format!("the database did not answer: {e}")),
                }),
                None => {}
            }
        }
        if let Some(db) = &database {
            let mut problems = Vec::new();
            if db.default_partition_rows > 0 {
                problems.push(format!(
                    "{} rows sit in DEFAULT partitions: run ensure_partitions",
                    db.default_partition_rows
                ));
            }
            if let Some(r) = db.buffer_hit_ratio
                && r < t.db_buffer_hit_ratio
            {
                problems.push(format!(
                    "buffer hit ratio {:.0} %: the working set does not fit shared_buffers",
                    r * 100.0
                ));
            }
            checks.push(CheckStatus {
                check: Check::Database,
                status: if problems.is_empty() {
                    Status::Healthy
                } else {
                    Status::Warning
                },
                value: db.buffer_hit_ratio,
                recommendation: (!problems.is_empty()).then(|| problems.join("; ")),
            });
        }
        #[cfg(feature = "redis")]
        if let Some(l) = &self.shared_limits {
            let s = l.status();
            checks.push(CheckStatus {
                check: Check::SharedLimits,
                status: if s.degraded {
                    Status::Critical
                } else {
                    Status::Healthy
                },
                value: Some(s.fallbacks as f64),
                recommendation: s.degraded.then(|| {
                    format!(
                        "Redis does not answer ({}): each instance applies its own rate limits, so N instances admit up to N allowances",
                        s.last_error.unwrap_or_default()
                    )
                }),
            });
        }
        if let Some(b) = &self.shared_budget {
            let s = b.status();
            let bad = s.pending > 0 || s.abandoned > 0;
            checks.push(CheckStatus {
                check: Check::SharedBudget,
                status: if bad { Status::Critical } else { Status::Healthy },
                value: Some(s.pending as f64),
                recommendation: bad.then(|| {
                    format!(
                        "{} settlements wait for PostgreSQL, {} given up (their cost is missing from the shared budgets): {}",
                        s.pending,
                        s.abandoned,
                        s.last_error.unwrap_or_default()
                    )
                }),
            });
        }
        self.alerts(&checks);
        HealthReport {
            overall: checks
                .iter()
                .map(|c| c.status)
                .max()
                .unwrap_or(Status::Healthy),
            checks,
            database,
        }
    }

    fn alerts(&self, checks: &[CheckStatus]) {
        let mut fired = Vec::new();
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            for c in checks {
                let before = last.insert(c.check, c.status).unwrap_or(Status::Healthy);
                let kind = match (before == Status::Healthy, c.status == Status::Healthy) {
                    (true, false) => AlertKind::Raised,
                    (false, true) => AlertKind::Resolved,
                    _ => continue,
                };
                fired.push(Alert {
                    check: c.check,
                    kind,
                    status: c.status,
                    value: c.value,
                    message: match kind {
                        AlertKind::Raised => c
                            .recommendation
                            .clone()
                            .unwrap_or_else(|| format!("{:?} is {:?}", c.check, c.status)),
                        AlertKind::Resolved => format!("{:?} is healthy again", c.check),
                    },
                });
            }
        }
        for a in fired {
            tracing::warn!(check = ?a.check, kind = ?a.kind, "{}", a.message);
            for cb in &self.callbacks {
                cb(&a);
            }
            let _ = self.tx.send(a);
        }
    }

    /// Evaluates every `every` (on tokio's clock) until the monitor is dropped.
    pub fn spawn(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(m) = weak.upgrade() else { break };
                m.evaluate().await;
            }
        })
    }
}
