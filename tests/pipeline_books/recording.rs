//! One bad row never loses the others: rows are cleaned or set aside one by one, a
//! retry after a lost commit answer writes nothing twice, and rows lost to a down
//! repository reach the metrics and the health check.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use async_trait::async_trait;
use kasama::agent::AiRequest;
use kasama::health::{Check, HealthMonitor, Status};
use kasama::metrics::InMemoryMetrics;
use kasama::pipeline::{Recorder, RecorderConfig};
use kasama::prelude::*;
use serde_json::json;

use super::{Mode, Scripted, flaky};
use crate::common::pipeline::{builder, memory, rows, users};

// ---- one bad row never loses the others ----

fn row(user: UserId, i: usize) -> NewAiInteraction {
    NewAiInteraction {
        id: Some(InteractionId::new()),
        user_id: user,
        agent_type: AgentType::LearningCoach,
        model: "m".into(),
        input: json!({ "q": i }),
        output: json!({ "a": i }),
        input_tokens: 1,
        output_tokens: 1,
        cost_nanos: i as i64,
        saved_nanos: 0,
        latency_ms: 1,
        cache_hit: false,
        success: true,
        created_at: Some(chrono::Utc::now()),
    }
}

async fn bad_rows_are_set_aside(repo: Arc<dyn Repository>) {
    let us = users(&repo, 2).await;
    let metrics = Arc::new(InMemoryMetrics::new());
    let health = HealthMonitor::new(metrics.clone());
    let mut rec =
        Recorder::start_with_metrics(repo.clone(), RecorderConfig::default(), metrics.clone());
    let mut batch: Vec<NewAiInteraction> = (0..500).map(|i| row(us[i % 2], i)).collect();
    batch[17].user_id = UserId::new(); // a user without a profile
    batch[250].output = json!({ "text": "a \0 in the answer" });
    batch[499].model = "x".repeat(101);
    for r in batch {
        rec.record(r);
    }
    let stats = rec.shutdown().await.unwrap_err();
    assert!(matches!(stats, Error::Backend { .. }));
    let s = rec.stats();
    assert_eq!((s.written, s.rejected, s.failed, s.dropped), (497, 3, 0, 0));
    let written: usize = {
        let mut n = 0;
        for u in &us {
            n += rows(&repo, *u).await.len();
        }
        n
    };
    assert_eq!(written, 497);
    let lost = metrics.snapshot().interactions_lost;
    assert_eq!((lost.rejected, lost.failed, lost.dropped), (3, 0, 0));
    let report = health.evaluate().await;
    let c = report
        .checks
        .iter()
        .find(|c| c.check == Check::Recording)
        .unwrap();
    assert_eq!((c.status, c.value), (Status::Warning, Some(3.0)));
}

#[tokio::test(start_paused = true)]
async fn one_bad_row_never_loses_the_other_499_in_memory() {
    bad_rows_are_set_aside(memory()).await;
}

#[tokio::test]
async fn one_bad_row_never_loses_the_other_499_in_postgres() {
    let Some(db) = crate::common::pg().await else {
        return;
    };
    bad_rows_are_set_aside(Arc::new(db.repo.clone())).await;
    db.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_model_answer_with_a_nul_and_a_long_model_name_is_recorded_clean() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let p = builder(repo.clone())
        .backend(Scripted::new("a", 10, Mode::Dirty))
        .build()
        .unwrap();
    p.complete(
        AiRequest::new(u, AgentType::LearningCoach, "hi"),
        SubscriptionTier::Free,
    )
    .await
    .unwrap();
    let s = p.shutdown().await.unwrap();
    assert_eq!((s.written, s.rejected), (1, 0));
    let r = &rows(&repo, u).await[0];
    assert_eq!(r.output, json!({ "text": "nul  here" }));
    assert_eq!(r.model, "m".repeat(100));
}

/// `record_interactions` commits and then reports a retryable failure `unseen` times
/// (a commit whose answer was lost), then fails retryably `down` times without
/// committing.
struct LostAnswers {
    unseen: AtomicUsize,
    down: AtomicUsize,
}

#[async_trait]
impl crate::common::RecordHook for LostAnswers {
    async fn record_interactions(
        &self,
        inner: &InMemoryRepository,
        a: Actor,
        b: &[NewAiInteraction],
    ) -> kasama::Result<u64> {
        if self.down.load(SeqCst) > 0 {
            self.down.fetch_sub(1, SeqCst);
            return Err(flaky());
        }
        let n = inner.record_interactions(a, b).await?;
        if self.unseen.load(SeqCst) > 0 {
            self.unseen.fetch_sub(1, SeqCst);
            return Err(flaky());
        }
        Ok(n)
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_an_unseen_commit_does_not_duplicate_rows() {
    let repo = Arc::new(crate::common::Hooked {
        inner: InMemoryRepository::new(),
        hook: LostAnswers {
            unseen: AtomicUsize::new(1),
            down: AtomicUsize::new(0),
        },
    });
    let dynrepo: Arc<dyn Repository> = repo.clone();
    let u = users(&dynrepo, 1).await[0];
    let p = Arc::new(
        builder(dynrepo.clone())
            .backend(Scripted::new("a", 10, Mode::Answer))
            .build()
            .unwrap(),
    );
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                p.complete(
                    AiRequest::new(u, AgentType::LearningCoach, format!("q{i}")),
                    SubscriptionTier::Free,
                )
                .await
                .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = p.shutdown().await.unwrap();
    assert_eq!((s.written, s.failed, s.rejected), (20, 0, 0));
    assert_eq!(repo.hook.unseen.load(SeqCst), 0, "the lost answer happened");
    assert_eq!(rows(&dynrepo, u).await.len(), 20, "no row twice");
}

#[tokio::test(start_paused = true)]
async fn rows_lost_to_a_down_repository_reach_the_metrics_and_the_health_check() {
    let repo: Arc<dyn Repository> = Arc::new(crate::common::Hooked {
        inner: InMemoryRepository::new(),
        hook: LostAnswers {
            unseen: AtomicUsize::new(0),
            down: AtomicUsize::new(usize::MAX),
        },
    });
    let u = users(&repo, 1).await[0];
    let metrics = Arc::new(InMemoryMetrics::new());
    let health = HealthMonitor::new(metrics.clone());
    let p = builder(repo)
        .backend(Scripted::new("a", 10, Mode::Answer))
        .metrics(metrics.clone())
        .recording(RecorderConfig {
            attempts: 2,
            ..Default::default()
        })
        .build()
        .unwrap();
    for i in 0..3 {
        p.complete(
            AiRequest::new(u, AgentType::LearningCoach, format!("q{i}")),
            SubscriptionTier::Free,
        )
        .await
        .unwrap();
    }
    assert!(p.shutdown().await.is_err());
    assert_eq!(
        p.recorder_stats().failed,
        0,
        "the recorder is gone after shutdown"
    );
    let lost = metrics.snapshot().interactions_lost;
    assert_eq!((lost.failed, lost.rejected, lost.dropped), (3, 0, 0));
    let report = health.evaluate().await;
    let c = report
        .checks
        .iter()
        .find(|c| c.check == Check::Recording)
        .unwrap();
    assert_eq!((c.status, c.value), (Status::Critical, Some(3.0)));
    // Nothing lost since: healthy again.
    let report = health.evaluate().await;
    let c = report
        .checks
        .iter()
        .find(|c| c.check == Check::Recording)
        .unwrap();
    assert_eq!(c.status, Status::Healthy);
}
