//! Write-behind recording of AI interactions: buffered in memory, written in batches
//! (one round trip each) by a background task, never in an answer's path.
//!
//! One bad row never loses the others: when the repository refuses a batch, the row
//! it names is set aside (or, when it names none, the batch is halved until the bad
//! rows stand alone), counted as rejected, and the rest is written. Rows carry an id
//! and a timestamp fixed when they were made, so a retry after a commit the recorder
//! did not see conflicts instead of duplicating; such rows are counted as written.
//!
//! A database that is away for a while (a restart, a failover) loses nothing as long
//! as the buffer does not fill meanwhile: a batch whose write fails transiently is
//! retried with backoff (100 ms, doubling, capped at 5 s) for as long as the buffer
//! behind it still has room. Once the buffer is full, new rows are dropped (counted
//! as dropped) and the batch is given up (counted as failed) at its next failed try, so
//! the buffer drains; during shutdown a batch is given up after `attempts` more
//! tries. Errors that are not retryable are never retried: they set rows aside as
//! above.

use backon::BackoffBuilder;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::domain::{Actor, NewAiInteraction};
use crate::error::{Error, Result};
use crate::metrics::{MetricEvent, MetricsSink, NoopMetrics};
use crate::repository::{MAX_INTERACTIONS_PER_BATCH, Repository};

/// Write-behind settings. Defaults on each field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RecorderConfig {
    /// Rows per write. Default: 500.
    pub batch: usize,
    /// A partial batch is written after this long. Default: 1 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub interval: Duration,
    /// Rows waiting at most, besides the batch being written; beyond it new rows are
    /// dropped and counted ([`RecorderStats::dropped`]) rather than holding up
    /// answers. Default: 100,000.
    pub capacity: usize,
    /// Attempts per batch before it may be given up (logged and counted). Past them
    /// a transient failure is still retried while the buffer has room (and, once
    /// shutdown began, for this many more tries). Default: 5.
    pub attempts: u32,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            batch: 500,
            interval: Duration::from_secs(1),
            capacity: 100_000,
            attempts: 5,
        }
    }
}

impl RecorderConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// `InvalidInput` naming the field: a zero `batch`, `capacity` or `attempts`, a
    /// `batch` over the repository's limit, or a zero `interval` or one past
    /// [`MAX_DURATION`](super::MAX_DURATION).
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.batch > MAX_INTERACTIONS_PER_BATCH {
            return Err(Error::invalid(
                "recording.batch",
                format!("{}, must be 1–{MAX_INTERACTIONS_PER_BATCH}", self.batch),
            ));
        }
        if self.interval.is_zero() {
            return Err(Error::invalid("recording.interval", "must be positive"));
        }
        super::check_duration("recording.interval", self.interval)?;
        if self.capacity == 0 {
            return Err(Error::invalid("recording.capacity", "must be at least 1"));
        }
        if self.attempts == 0 {
            return Err(Error::invalid("recording.attempts", "must be at least 1"));
        }
        Ok(())
    }
}

/// The recorder's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Rows written (a row whose retry found it already written counts here).
    pub written: u64,
    /// Successful batch writes (one round trip each; failed attempts not counted).
    pub writes: u64,
    /// Rows dropped because the buffer was full.
    pub dropped: u64,
    /// Rows lost because the repository kept failing.
    pub failed: u64,
    /// Rows the repository refused as invalid, set aside so the rest of their batch
    /// was written.
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    writes: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
}

/// Buffers interactions and writes them in batches through a [`Repository`].
#[derive(Debug)]
pub struct Recorder {
    tx: Option<mpsc::Sender<NewAiInteraction>>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    metrics: Arc<dyn MetricsSink>,
}

impl Recorder {
    /// Starts the background writer (needs a tokio runtime).
    pub fn start(repo: Arc<dyn Repository>, cfg: RecorderConfig) -> Self {
        Self::start_with_metrics(repo, cfg, Arc::new(NoopMetrics))
    }

    /// As [`Recorder::start`], reporting rows it could not write to `metrics`
    /// ([`MetricEvent::InteractionsLost`]).
    pub fn start_with_metrics(
        repo: Arc<dyn Repository>,
        cfg: RecorderConfig,
        metrics: Arc<dyn MetricsSink>,
    ) -> Self {
        let cfg = RecorderConfig {
            batch: cfg.batch.clamp(1, MAX_INTERACTIONS_PER_BATCH),
            attempts: cfg.attempts.max(1),
            ..cfg
        };
        let m = metrics.clone();
        let (tx, mut rx) = mpsc::channel::<NewAiInteraction>(cfg.capacity.max(1));
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            let mut buf = Vec::with_capacity(cfg.batch);
            loop {
                // Wait for the first row, then gather until the batch is full or the
                // interval has passed.
                let Some(first) = rx.recv().await else { break };
                buf.push(first);
                let until = tokio::time::Instant::now() + cfg.interval;
                while buf.len() < cfg.batch {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(r)) => buf.push(r),
                        Ok(None) | Err(_) => break,
                    }
                }
                // Past its attempts, a failing batch is retried while rows still fit
                // behind it; once shutdown closed the buffer, for `attempts` more tries.
                let room = || Room {
                    free: rx.capacity() > 0,
                    closed: rx.is_closed(),
                };
                write(
                    &*repo,
                    std::mem::take(&mut buf),
                    cfg.attempts,
                    &room,
                    &c,
                    &*m,
                )
                .await;
            }
            // Closed: everything received has been written.
        });
        Self {
            tx: Some(tx),
            task: Some(task),
            counters,
            metrics,
        }
    }

    /// Queues one row; never waits. A full buffer drops the row (counted).
    pub fn record(&self, row: NewAiInteraction) {
        if let Some(tx) = &self.tx
            && tx.try_send(row).is_err()
        {
            self.counters.dropped.fetch_add(1, Relaxed);
            self.metrics.record(&MetricEvent::InteractionsLost {
                rows: 1,
                reason: "dropped",
            });
        }
    }

    /// Stops taking rows and waits until every buffered row is written.
    ///
    /// # Errors
    /// [`Error::Backend`] when rows could not be written — failed, dropped or
    /// rejected (how many is in [`Recorder::stats`]).
    pub async fn shutdown(&mut self) -> Result<RecorderStats> {
        self.tx = None;
        if let Some(t) = self.task.take() {
            t.await.map_err(|e| Error::Backend {
                what: "interaction recorder".into(),
                retryable: false,
                source: Box::new(e),
            })?;
        }
        let s = self.stats();
        if s.failed > 0 || s.dropped > 0 || s.rejected > 0 {
            return Err(Error::Backend {
                what: "interaction recorder".into(),
                retryable: false,
                source: format!(
                    "{} rows not written, {} dropped, {} rejected as invalid",
                    s.failed, s.dropped, s.rejected
                )
                .into(),
            });
        }
        Ok(s)
    }

    /// The counters.
    pub fn stats(&self) -> RecorderStats {
        RecorderStats {
            written: self.counters.written.load(Relaxed),
            writes: self.counters.writes.load(Relaxed),
            dropped: self.counters.dropped.load(Relaxed),
            failed: self.counters.failed.load(Relaxed),
            rejected: self.counters.rejected.load(Relaxed),
        }
    }
}

/// The state of the buffer behind the batch being written.
#[derive(Clone, Copy, Debug)]
struct Room {
    /// A new row would still fit.
    free: bool,
    /// Shutdown began: no new rows come.
    closed: bool,
}

/// Writes `rows`, setting bad rows aside (see the module docs).
async fn write(
    repo: &dyn Repository,
    rows: Vec<NewAiInteraction>,
    attempts: u32,
    room: &(dyn Fn() -> Room + Sync),
    c: &Counters,
    metrics: &dyn MetricsSink,
) {
    let lost = |rows: u64, reason: &'static str| {
        metrics.record(&MetricEvent::InteractionsLost { rows, reason });
    };
    // Each part to write, and whether an earlier attempt at its rows may have
    // committed unseen.
    let mut todo = VecDeque::from([(rows, false)]);
    while let Some((mut rows, earlier)) = todo.pop_front() {
        if rows.is_empty() {
            continue;
        }
        let (result, unseen) = write_with_retries(repo, &rows, attempts, room).await;
        let unseen = unseen || earlier;
        match result {
            Ok(n) => {
                c.written.fetch_add(n, Relaxed);
                c.writes.fetch_add(1, Relaxed);
            }
            Err(e) if e.is_retryable() => {
                tracing::error!(error = %e, rows = rows.len(), "recording interactions failed");
                c.failed.fetch_add(rows.len() as u64, Relaxed);
                lost(rows.len() as u64, "failed");
            }
            Err(e) => {
                if let Some(i) = bad_row(&e).filter(|&i| i < rows.len()) {
                    // The repository named the row: set it aside, write the rest.
                    let bad = rows.remove(i);
                    reject(&e, &bad, c, &lost);
                    todo.push_front((rows, unseen));
                } else if rows.len() > 1 {
                    let tail = rows.split_off(rows.len() / 2);
                    todo.push_front((tail, unseen));
                    todo.push_front((rows, unseen));
                } else if unseen && matches!(e, Error::Conflict { .. }) {
                    // Its id and timestamp are already there: an earlier attempt
                    // committed without our seeing it.
                    c.written.fetch_add(1, Relaxed);
                } else {
                    reject(&e, &rows[0], c, &lost);
                }
            }
        }
    }
}

fn reject(e: &Error, row: &NewAiInteraction, c: &Counters, lost: &impl Fn(u64, &'static str)) {
    tracing::warn!(error = %e, id = ?row.id, agent = row.agent_type.as_str(), "interaction row refused; the rest of its batch is written");
    c.rejected.fetch_add(1, Relaxed);
    lost(1, "rejected");
}

/// The row an `InvalidInput` error names (`"[3].model"` → 3).
fn bad_row(e: &Error) -> Option<usize> {
    match e {
        Error::InvalidInput { field, .. } => {
            field.strip_prefix('[')?.split(']').next()?.parse().ok()
        }
        _ => None,
    }
}

/// Writes `rows` in one call, retrying retryable errors with backoff (capped at 5 s):
/// `attempts` times, then on while `room` says the buffer has room (after shutdown
/// began, `attempts` more times). Says whether an attempt failed in a way that may
/// have committed unseen.
async fn write_with_retries(
    repo: &dyn Repository,
    rows: &[NewAiInteraction],
    attempts: u32,
    room: &(dyn Fn() -> Room + Sync),
) -> (Result<u64>, bool) {
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build();
    let mut unseen = false;
    let mut attempt = 1;
    let mut after_close = 0;
    let mut again = |attempt: u32| {
        if attempt < attempts {
            return true;
        }
        let r = room();
        if r.closed {
            after_close += 1;
            after_close <= attempts
        } else {
            r.free
        }
    };
    loop {
        match repo.record_interactions(Actor::Service, rows).await {
            Err(e) if e.is_retryable() && again(attempt) => {
                tracing::warn!(error = %e, attempt, "recording interactions failed; retrying");
                unseen = true;
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
                attempt = attempt.saturating_add(1);
            }
            r => return (r, unseen || attempt > 1),
        }
    }
}
