//! Partition maintenance on a timer: partitions created ahead, DEFAULT partitions
//! drained, and — with a retention — old partitions dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::PgRepository;
use crate::error::{Error, Result};

/// Settings of [`spawn_partition_maintenance`]. Defaults on each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Time between two successful runs. Default: 24 h.
    pub every: Duration,
    /// Monthly `assessments` partitions kept ahead of this month. Default: 3.
    pub months_ahead: u32,
    /// Weekly `ai_interactions` partitions kept ahead of this week. Default: 8.
    pub weeks_ahead: u32,
    /// Partitions whose whole range ended longer ago than this are detached and
    /// dropped, with their rows (assessments with their answers, AI interactions).
    /// Default: `None`, nothing is ever dropped.
    pub retention: Option<Duration>,
    /// First retry after a failed run; doubles per failure, up to `every`.
    /// Default: 60 s.
    pub retry: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(24 * 3600),
            months_ahead: 3,
            weeks_ahead: 8,
            retention: None,
            retry: Duration::from_secs(60),
        }
    }
}

impl MaintenanceConfig {
    /// # Errors
    /// [`Error::InvalidInput`] naming the field: an `every` or `retry` of zero or over
    /// 366 days, more than 120 months or 520 weeks ahead, a retention under 7 days (a
    /// week's partition could go while it is still written to) or over 100 years.
    pub fn validate(&self) -> Result<()> {
        for (field, d) in [("every", self.every), ("retry", self.retry)] {
            if d.is_zero() || d > crate::domain::validate::MAX_DURATION {
                return Err(Error::invalid(
                    field,
                    "must be more than zero and at most 366 days",
                ));
            }
        }
        if self.months_ahead > 120 {
            return Err(Error::invalid("months_ahead", "at most 120"));
        }
        if self.weeks_ahead > 520 {
            return Err(Error::invalid("weeks_ahead", "at most 520"));
        }
        if let Some(r) = self.retention
            && (r < Duration::from_secs(7 * 24 * 3600)
                || r > Duration::from_secs(100 * 366 * 24 * 3600))
        {
            return Err(Error::invalid(
                "retention",
                "at least 7 days and at most 100 years",
            ));
        }
        Ok(())
    }
}

/// What one maintenance run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Partitions created (ahead, or for rows found in a DEFAULT partition).
    pub created: u32,
    /// Partitions dropped under the retention, oldest first.
    pub dropped: Vec<String>,
}

/// What the maintenance task does on each run; [`PgRepository`] is the real one.
#[async_trait]
pub trait PartitionMaintainer: Send + Sync + 'static {
    /// One run: create ahead, drain DEFAULT, apply the retention.
    ///
    /// # Errors
    /// The database's.
    async fn maintain(&self, config: &MaintenanceConfig) -> Result<MaintenanceReport>;
}

#[async_trait]
impl PartitionMaintainer for PgRepository {
    async fn maintain(&self, config: &MaintenanceConfig) -> Result<MaintenanceReport> {
        let created = self
            .ensure_partitions(config.months_ahead, config.weeks_ahead)
            .await?;
        let dropped = match config.retention {
            Some(r) => {
                let keep = chrono::Duration::from_std(r)
                    .map_err(|_| Error::invalid("retention", "too long"))?;
                match Utc::now().checked_sub_signed(keep) {
                    Some(before) => self.drop_partitions_before(before).await?,
                    None => Vec::new(),
                }
            }
            None => Vec::new(),
        };
        Ok(MaintenanceReport { created, dropped })
    }
}

impl PgRepository {
    /// Detaches and drops every partition of `assessments` (with their answers) and
    /// of `ai_interactions` whose whole range ends at or before `before`; the DEFAULT
    /// partitions are never touched. Returns the dropped partitions' names, oldest
    /// first. Idempotent.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a time in the future; `Backend` on database errors.
    pub async fn drop_partitions_before(&self, before: DateTime<Utc>) -> Result<Vec<String>> {
        if before > Utc::now() {
            return Err(Error::invalid("before", "must be in the past"));
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT kasama_drop_partitions_before($1)")
            .await
            .map_err(super::db_err)?;
        let row = client
            .query_one(&stmt, &[&before])
            .await
            .map_err(super::db_err)?;
        Ok(row.get(0))
    }
}

/// What the maintenance task has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceStatus {
    /// Successful runs.
    pub runs: u64,
    /// Failed runs.
    pub failures: u64,
    /// The last successful run's report.
    pub last_report: Option<MaintenanceReport>,
    /// The last failure's message, cleared by the next success.
    pub last_error: Option<String>,
}

/// The running maintenance task: dropping it stops the task.
#[derive(Debug)]
pub struct MaintenanceTask {
    status: Arc<Mutex<MaintenanceStatus>>,
    task: JoinHandle<()>,
}

impl MaintenanceTask {
    /// What it has done so far.
    pub fn status(&self) -> MaintenanceStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for MaintenanceTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Spawns partition maintenance: one run at once, then one every
/// [`MaintenanceConfig::every`]; a failed run (an error or a panic: logged, counted)
/// is retried after [`MaintenanceConfig::retry`], doubling up to `every`. Runs on tokio's clock, so a
/// paused clock drives it in tests. Hosts spawn it beside the server, e.g.:
///
/// ```no_run
/// # async fn f(repo: kasama::PgRepository) -> kasama::Result<()> {
/// use std::sync::Arc;
/// use kasama::repository::postgres::{MaintenanceConfig, spawn_partition_maintenance};
/// let cfg = MaintenanceConfig {
///     retention: Some(std::time::Duration::from_secs(400 * 24 * 3600)),
///     ..MaintenanceConfig::default()
/// };
/// let task = spawn_partition_maintenance(Arc::new(repo), cfg)?; // keep it alive
/// # drop(task); Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] for an invalid configuration (see
/// [`MaintenanceConfig::validate`]).
pub fn spawn_partition_maintenance(
    maintainer: Arc<dyn PartitionMaintainer>,
    config: MaintenanceConfig,
) -> Result<MaintenanceTask> {
    config.validate()?;
    let status = Arc::new(Mutex::new(MaintenanceStatus::default()));
    let st = status.clone();
    let task = tokio::spawn(async move {
        let mut backoff = None;
        loop {
            // Each run in a task of its own, so a panicking run is a failure to retry,
            // not the silent end of maintenance.
            let (m, c) = (maintainer.clone(), config.clone());
            let result = match tokio::spawn(async move { m.maintain(&c).await }).await {
                Ok(r) => r,
                Err(e) => Err(Error::Backend {
                    what: "partition maintenance".into(),
                    retryable: true,
                    source: format!("the run panicked: {e}").into(),
                }),
            };
            let wait = {
                let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(report) => {
                        if !report.dropped.is_empty() {
                            tracing::info!(dropped = ?report.dropped, "partition maintenance: retention applied");
                        }
                        s.runs += 1;
                        s.last_report = Some(report);
                        s.last_error = None;
                        backoff = None;
                        config.every
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "partition maintenance failed; retrying");
                        s.failures += 1;
                        s.last_error = Some(e.to_string());
                        backoff
                            .get_or_insert_with(|| {
                                backon::ExponentialBuilder::default()
                                    .with_min_delay(config.retry)
                                    .with_max_delay(config.every)
                                    .without_max_times()
                                    .build()
                            })
                            .next()
                            .unwrap_or(config.every)
                    }
                }
            };
            let now = Instant::now();
            tokio::time::sleep_until(now.checked_add(wait).unwrap_or(now + config.every)).await;
        }
    });
    Ok(MaintenanceTask { status, task })
}
