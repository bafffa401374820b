//! The partition-maintenance task's schedule, on tokio's paused clock: a run at once,
//! then one per period; a failure is retried with a doubling delay, then the period
//! resumes; dropping the task stops it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kasama::Error;
use kasama::repository::postgres::{
    MaintenanceConfig, MaintenanceReport, PartitionMaintainer, spawn_partition_maintenance,
};
use tokio::time::Instant;

/// Records when it ran; fails the runs whose numbers are in `fail`.
struct Fake {
    start: Instant,
    runs: Mutex<Vec<Duration>>,
    fail: Vec<usize>,
}

#[async_trait]
impl PartitionMaintainer for Fake {
    async fn maintain(&self, cfg: &MaintenanceConfig) -> kasama::Result<MaintenanceReport> {
        let mut runs = self.runs.lock().unwrap();
        runs.push(self.start.elapsed());
        if self.fail.contains(&runs.len()) {
            return Err(Error::Timeout {
                what: "database statement".into(),
            });
        }
        Ok(MaintenanceReport {
            created: cfg.months_ahead,
            dropped: Vec::new(),
        })
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const MIN: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn runs_daily_and_retries_failures_with_backoff() {
    let fake = Arc::new(Fake {
        start: Instant::now(),
        runs: Mutex::new(Vec::new()),
        // The 2nd and 3rd runs fail.
        fail: vec![2, 3],
    });
    let task = spawn_partition_maintenance(fake.clone(), MaintenanceConfig::default()).unwrap();
    // Three days and a bit; the paused clock jumps from timer to timer, so each run
    // happens exactly at its deadline.
    tokio::time::sleep(72 * HOUR + 10 * MIN).await;
    let runs = fake.runs.lock().unwrap().clone();
    assert_eq!(
        runs,
        [
            Duration::ZERO,
            24 * HOUR,           // fails
            24 * HOUR + MIN,     // fails again: the delay doubles
            24 * HOUR + 3 * MIN, // succeeds
            48 * HOUR + 3 * MIN, // and the daily period resumes
            72 * HOUR + 3 * MIN,
        ]
    );
    let st = task.status();
    assert_eq!((st.runs, st.failures), (4, 2));
    assert_eq!(st.last_error, None);
    assert_eq!(st.last_report.unwrap().created, 3);

    drop(task);
    tokio::time::sleep(48 * HOUR).await;
    assert_eq!(
        fake.runs.lock().unwrap().len(),
        6,
        "a dropped task runs no more"
    );
}

#[tokio::test]
async fn invalid_settings_are_refused_with_the_field_named() {
    let fake = Arc::new(Fake {
        start: Instant::now(),
        runs: Mutex::new(Vec::new()),
        fail: vec![],
    });
    for (cfg, field) in [
        (
            MaintenanceConfig {
                every: Duration::ZERO,
                ..Default::default()
            },
            "every",
        ),
        (
            MaintenanceConfig {
                retry: Duration::ZERO,
                ..Default::default()
            },
            "retry",
        ),
        (
            MaintenanceConfig {
                retention: Some(HOUR),
                ..Default::default()
            },
            "retention",
        ),
        (
            MaintenanceConfig {
                weeks_ahead: 521,
                ..Default::default()
            },
            "weeks_ahead",
        ),
    ] {
        let e = spawn_partition_maintenance(fake.clone(), cfg).unwrap_err();
        assert_eq!(e.invalid_field(), Some(field));
    }
    assert!(fake.runs.lock().unwrap().is_empty());
}
