//! Write-behind recording of AI interactions: buffered in memory, written in batches
//! (one round trip each) by a background task, never in an answer's path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::domain::{Actor, NewAiInteraction};
use crate::error::{Error, Result};
use crate::repository::Repository;

/// Write-behind settings. Defaults on each field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecorderConfig {
    /// Rows per write. Default: 500.
    pub batch: usize,
    /// A partial batch is written after this long. Default: 1 s.
    pub interval: Duration,
    /// Rows buffered at most; beyond it new rows are dropped and counted
    /// ([`RecorderStats::dropped`]) rather than holding up answers. Default: 100,000.
    pub capacity: usize,
    /// Attempts per batch before it is given up (logged and counted). Default: 5.
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

/// The recorder's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Rows written.
    pub written: u64,
    /// Batch writes (round trips).
    pub writes: u64,
    /// Rows dropped because the buffer was full.
    pub dropped: u64,
    /// Rows lost because the repository kept failing.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    writes: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// Buffers interactions and writes them in batches through a [`Repository`].
#[derive(Debug)]
pub struct Recorder {
    tx: Option<mpsc::Sender<NewAiInteraction>>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Recorder {
    /// Starts the background writer (needs a tokio runtime).
    pub fn start(repo: Arc<dyn Repository>, cfg: RecorderConfig) -> Self {
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
                write(&*repo, &mut buf, cfg.attempts, &c).await;
            }
            // Closed: everything received has been written.
        });
        Self {
            tx: Some(tx),
            task: Some(task),
            counters,
        }
    }

    /// Queues one row; never waits. A full buffer drops the row (counted).
    pub fn record(&self, row: NewAiInteraction) {
        if let Some(tx) = &self.tx
            && tx.try_send(row).is_err()
        {
            self.counters.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Stops taking rows and waits until every buffered row is written.
    ///
    /// # Errors
    /// [`Error::Backend`] when rows could not be written (how many is in
    /// [`Recorder::stats`]).
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
        if s.failed > 0 || s.dropped > 0 {
            return Err(Error::Backend {
                what: "interaction recorder".into(),
                retryable: false,
                source: format!("{} rows not written, {} dropped", s.failed, s.dropped).into(),
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
        }
    }
}

async fn write(
    repo: &dyn Repository,
    buf: &mut Vec<NewAiInteraction>,
    attempts: u32,
    c: &Counters,
) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=attempts.max(1) {
        match repo.record_interactions(Actor::Service, buf).await {
            Ok(n) => {
                c.written.fetch_add(n, Relaxed);
                c.writes.fetch_add(1, Relaxed);
                buf.clear();
                return;
            }
            Err(e) if e.is_retryable() && attempt < attempts => {
                tracing::warn!(error = %e, attempt, "recording interactions failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                // Rows carry ids, so a retry after an unseen commit would conflict
                // rather than duplicate; a permanent error loses this batch.
                tracing::error!(error = %e, rows = buf.len(), "recording interactions failed");
                c.failed.fetch_add(buf.len() as u64, Relaxed);
                buf.clear();
                return;
            }
        }
    }
}
