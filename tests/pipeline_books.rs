//! The AI pipeline keeps its books on every path (tokio's paused clock throughout):
//! coalesced calls are paid once, a dropped caller is still billed, one bad row never
//! loses the others, a failing part degrades instead of failing requests, refusals are
//! not failures, the ledger and configuration stay bounded and valid, and a global
//! refusal uses up nothing of the user's allowance.

mod common;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kasama::agent::{AiAgent, AiRequest, AiResponse, SimulatedAgent, Usage};
use kasama::health::{Check, HealthMonitor, Status};
use kasama::metrics::{InMemoryMetrics, MetricsSink, NoopMetrics};
use kasama::pipeline::{
    AiPipeline, BatchConfig, BreakerConfig, BreakerState, Budgets, Ledger, Price, PriceTable,
    Quota, RateLimitConfig, RateLimits, Recorder, RecorderConfig, Router, RouterConfig,
};
use kasama::prelude::*;
use kasama::semantic::{Embedder, SemanticCache};
use serde_json::json;
use tokio::time::Instant;

/// What every answer of a [`Scripted`] backend uses.
const ONE_CALL: Usage = Usage {
    input_tokens: 120,
    output_tokens: 200,
};

const PRICE: Price = Price {
    input_micros_per_1k: 25_000,
    output_micros_per_1k: 75_000,
};

fn cost(u: Usage) -> u64 {
    u64::from(u.input_tokens) * 25_000 + u64::from(u.output_tokens) * 75_000
}

/// A backend with a fixed latency whose behaviour a test switches: answer, fail
/// retryably, panic, or answer with a NUL and an over-long model name.
struct Scripted {
    name: String,
    latency: Duration,
    mode: Mutex<Mode>,
    calls: AtomicUsize,
    /// Usage of every answer it gave (what its provider would bill).
    input: AtomicU64,
    output: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Answer,
    Fail,
    PanicOnce,
    Dirty,
    /// `complete_batch` fails every member retryably; `complete` answers.
    BatchFails,
}

impl Scripted {
    fn new(name: &str, latency_ms: u64, mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            latency: Duration::from_millis(latency_ms),
            mode: Mutex::new(mode),
            calls: AtomicUsize::new(0),
            input: AtomicU64::new(0),
            output: AtomicU64::new(0),
        })
    }
    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    fn billed(&self) -> Usage {
        Usage {
            input_tokens: self.input.load(SeqCst) as u32,
            output_tokens: self.output.load(SeqCst) as u32,
        }
    }
}

fn flaky() -> Error {
    Error::Backend {
        what: "scripted".into(),
        retryable: true,
        source: "scripted failure".into(),
    }
}

#[async_trait]
impl AiAgent for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    async fn complete(&self, req: &AiRequest) -> kasama::Result<AiResponse> {
        self.calls.fetch_add(1, SeqCst);
        tokio::time::sleep(self.latency).await;
        let mode = *self.mode.lock().unwrap();
        let (output, model) = match mode {
            Mode::Fail => return Err(flaky()),
            Mode::PanicOnce => {
                self.set(Mode::Answer);
                panic!("the backend fell over");
            }
            Mode::Dirty => (json!({ "text": "nul \0 here" }), "m".repeat(150)),
            Mode::Answer | Mode::BatchFails => (
                json!({ "text": format!("answer to {}", req.input) }),
                "scripted-1".to_string(),
            ),
        };
        let usage = ONE_CALL;
        self.input.fetch_add(u64::from(usage.input_tokens), SeqCst);
        self.output
            .fetch_add(u64::from(usage.output_tokens), SeqCst);
        Ok(AiResponse {
            output,
            usage,
            usage_estimated: false,
            model,
            backend: String::new(),
            latency: self.latency,
        })
    }
    async fn complete_batch(&self, reqs: &[AiRequest]) -> Vec<kasama::Result<AiResponse>> {
        if *self.mode.lock().unwrap() == Mode::BatchFails {
            self.calls.fetch_add(1, SeqCst);
            tokio::time::sleep(self.latency).await;
            return reqs.iter().map(|_| Err(flaky())).collect();
        }
        let mut out = Vec::new();
        for r in reqs {
            out.push(self.complete(r).await);
        }
        out
    }
}

async fn users(repo: &Arc<dyn Repository>, n: usize) -> Vec<UserId> {
    let mut v = Vec::new();
    for i in 0..n {
        let u = UserId::new();
        repo.create_profile(
            Actor::Service,
            NewProfile::new(u, format!("b{i}-{u}@example.com"), format!("B{i}")),
        )
        .await
        .unwrap();
        v.push(u);
    }
    v
}

fn memory() -> Arc<dyn Repository> {
    Arc::new(InMemoryRepository::new())
}

fn builder(repo: Arc<dyn Repository>) -> kasama::pipeline::AiPipelineBuilder {
    AiPipeline::builder(repo)
        .rate_limits(RateLimitConfig::unlimited())
        .budgets(Budgets::unlimited())
        .prices(PriceTable {
            default: PRICE,
            ..Default::default()
        })
}

async fn rows(repo: &Arc<dyn Repository>, u: UserId) -> Vec<AiInteraction> {
    repo.list_interactions(
        Actor::Service,
        u,
        Page {
            limit: 500,
            offset: 0,
        },
    )
    .await
    .unwrap()
}

// ---- 1. coalesced calls are paid once ----

#[tokio::test(start_paused = true)]
async fn ten_identical_concurrent_requests_are_paid_once() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Scripted::new("a", 300, Mode::Answer);
    let p = Arc::new(
        builder(repo.clone())
            .backend(agent.clone())
            .build()
            .unwrap(),
    );
    let req = AiRequest::new(u, AgentType::LearningCoach, "How do I listen better?");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (p, r) = (p.clone(), req.clone());
            tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(agent.calls.load(SeqCst), 1);
    let call = cost(agent.billed());
    assert!(call > 0);
    let payers: Vec<_> = outcomes.iter().filter(|o| !o.coalesced).collect();
    assert_eq!(payers.len(), 1, "one request caused the call");
    assert_eq!((payers[0].cost_nanos, payers[0].saved_nanos), (call, 0));
    for o in outcomes.iter().filter(|o| o.coalesced) {
        assert_eq!((o.cost_nanos, o.saved_nanos), (0, call));
    }
    let total = p.ledger().total();
    assert_eq!(
        (
            total.requests,
            total.cost_nanos,
            total.saved_nanos,
            total.coalesced
        ),
        (10, call, 9 * call, 9)
    );
    assert_eq!(total.saved_by_coalescing_nanos, 9 * call);
    assert_eq!(
        p.ledger().user_today(u),
        call,
        "the budget sees the real spend"
    );
    assert_eq!(p.batch_stats().coalesced, 9);
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 10);
    assert_eq!(rows.iter().map(|r| r.cost_nanos).sum::<i64>(), call as i64);
    assert_eq!(rows.iter().filter(|r| r.cost_nanos == 0).count(), 9);
    assert_eq!(
        rows.iter().map(|r| r.saved_nanos).sum::<i64>(),
        9 * call as i64
    );
}

// ---- 2. a dropped caller does not hide a cost ----

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_is_still_billed_and_recorded() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Scripted::new("a", 500, Mode::Answer);
    let p = Arc::new(
        builder(repo.clone())
            .backend(agent.clone())
            .build()
            .unwrap(),
    );
    let mut expected = 0;
    for i in 0..5 {
        let r = AiRequest::new(u, AgentType::LearningCoach, format!("question {i}"));
        // A client that disconnects after 200 ms (the call is in flight by then).
        let gave_up = tokio::time::timeout(
            Duration::from_millis(200),
            p.complete(r, SubscriptionTier::Free),
        )
        .await;
        assert!(gave_up.is_err(), "the caller gave up before the answer");
        tokio::time::sleep(Duration::from_secs(1)).await;
        expected = cost(agent.billed());
        assert_eq!(p.ledger().user_today(u), expected, "after call {i}");
        assert_eq!(p.ledger().user_reserved(u), 0, "nothing left held");
    }
    assert_eq!(agent.calls.load(SeqCst), 5);
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows.iter().map(|r| r.cost_nanos).sum::<i64>(),
        expected as i64
    );
    assert!(rows.iter().all(|r| r.success));
}

#[tokio::test(start_paused = true)]
async fn disconnecting_does_not_let_a_user_spend_past_the_budget() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Scripted::new("a", 500, Mode::Answer);
    let one_call = cost(ONE_CALL);
    let p = builder(repo)
        .backend(agent.clone())
        .budgets(Budgets {
            free_user_daily: Some(3 * one_call),
            ..Budgets::unlimited()
        })
        .build()
        .unwrap();
    let mut refused = None;
    for i in 0..20 {
        let r = AiRequest::new(u, AgentType::LearningCoach, format!("q {i}"));
        match tokio::time::timeout(
            Duration::from_millis(200),
            p.complete(r, SubscriptionTier::Free),
        )
        .await
        {
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            Ok(Err(e)) => {
                refused = Some((i, e));
                break;
            }
            Ok(Ok(_)) => panic!("answered within 200 ms"),
        }
    }
    let (i, e) = refused.expect("the budget bit");
    assert!(matches!(e, Error::BudgetExceeded { .. }), "{e:?}");
    assert_eq!(
        i, 3,
        "three calls, each billed though nobody waited, fill the budget"
    );
    assert_eq!(agent.calls.load(SeqCst), 3);
    assert!(p.ledger().user_today(u) >= 3 * one_call);
}

// ---- 3. one bad row never loses the others ----

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
    let Some(db) = common::pg().await else { return };
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
impl common::RecordHook for LostAnswers {
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
    let repo = Arc::new(common::Hooked {
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
    let repo: Arc<dyn Repository> = Arc::new(common::Hooked {
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

// ---- 4. a failing part degrades ----

/// An embedder that fails, or never answers.
struct BrokenEmbedder {
    hang: bool,
}

#[async_trait]
impl Embedder for BrokenEmbedder {
    fn name(&self) -> &str {
        "broken"
    }
    fn dimension(&self) -> usize {
        8
    }
    fn default_threshold(&self) -> f32 {
        0.9
    }
    async fn embed(&self, _: &[String]) -> kasama::Result<Vec<Vec<f32>>> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(Error::Backend {
            what: "embedder".into(),
            retryable: true,
            source: "embedding service down".into(),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_embedder_that_fails_or_hangs_is_a_cache_miss_not_a_failed_request() {
    for hang in [false, true] {
        let repo = memory();
        let u = users(&repo, 1).await[0];
        let cache = SemanticCache::builder(Arc::new(BrokenEmbedder { hang }))
            .build()
            .unwrap();
        let p = builder(repo)
            .backend(Scripted::new("a", 50, Mode::Answer))
            .semantic_cache(Arc::new(cache))
            .cache_timeout(Duration::from_millis(300))
            .batching(BatchConfig {
                window: Duration::ZERO,
                ..Default::default()
            })
            .build()
            .unwrap();
        let t = Instant::now();
        let o = p
            .complete(
                AiRequest::new(u, AgentType::LearningCoach, "hello there"),
                SubscriptionTier::Free,
            )
            .await
            .expect("answered by the backend");
        assert_eq!(o.cache, kasama::metrics::CacheTier::Miss);
        assert_eq!(p.cache_errors(), 1, "hang = {hang}");
        let waited = if hang { 300 } else { 0 };
        assert_eq!(
            t.elapsed(),
            Duration::from_millis(waited + 50),
            "hang = {hang}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_backend_fails_its_waiters_and_leaves_no_dead_entry() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Scripted::new("a", 100, Mode::PanicOnce);
    let p = Arc::new(
        builder(repo.clone())
            .backend(agent.clone())
            .build()
            .unwrap(),
    );
    let req = AiRequest::new(u, AgentType::LearningCoach, "same question");
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (p, r) = (p.clone(), req.clone());
            tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    }
    // The same request again is answered, not parked behind the dead call.
    let t = Instant::now();
    p.complete(req, SubscriptionTier::Free).await.unwrap();
    assert_eq!(t.elapsed(), Duration::from_millis(150 + 100));
    assert_eq!(p.ledger().user_reserved(u), 0);
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows.iter().filter(|r| !r.success).count(), 3);
}

fn router(agent: Arc<Scripted>, cfg: RouterConfig) -> Arc<Router> {
    Arc::new(
        Router::new(
            vec![(agent as Arc<dyn AiAgent>, PRICE)],
            cfg,
            Arc::new(NoopMetrics),
        )
        .unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_half_open_probe_is_given_back() {
    let agent = Scripted::new("a", 1000, Mode::Fail);
    let r = router(
        agent.clone(),
        RouterConfig {
            max_attempts: 1,
            breaker: BreakerConfig {
                consecutive_failures: 1,
                cool_down: Duration::from_secs(10),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let req = AiRequest::new(UserId::new(), AgentType::LearningCoach, "probe me");
    assert!(r.call(&req).await.is_err());
    assert_eq!(
        (r.status()[0].breaker, r.status()[0].trips),
        (BreakerState::Open, 1)
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    agent.set(Mode::Answer);
    let probe = {
        let (r, req) = (r.clone(), req.clone());
        tokio::spawn(async move { r.call(&req).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.status()[0].breaker, BreakerState::HalfOpen);
    probe.abort();
    let _ = probe.await;
    assert_eq!(
        (r.status()[0].breaker, r.status()[0].trips),
        (BreakerState::Open, 1)
    );
    // The probe is free again at once: no second cool-down.
    let t = Instant::now();
    r.call(&req).await.unwrap();
    assert_eq!(t.elapsed(), Duration::from_secs(1));
    assert_eq!(r.status()[0].breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failed_batch_members_are_retried_together_within_the_batchs_deadline() {
    let reqs: Vec<AiRequest> = (0..5)
        .map(|i| AiRequest::new(UserId::new(), AgentType::LearningCoach, format!("q{i}")))
        .collect();
    // Retries run side by side: 1 s for the batch, 1 s for all five retries.
    let agent = Scripted::new("a", 1000, Mode::BatchFails);
    let r = router(agent.clone(), RouterConfig::default());
    let t = Instant::now();
    let out = r.call_batch(&reqs).await;
    assert!(out.iter().all(|o| o.is_ok()), "{out:?}");
    assert_eq!(t.elapsed(), Duration::from_secs(2));
    assert_eq!(agent.calls.load(SeqCst), 1 + 5);
    // The batch's deadline covers its retries.
    let r = router(
        Scripted::new("b", 1000, Mode::BatchFails),
        RouterConfig {
            deadline: Duration::from_millis(1500),
            ..Default::default()
        },
    );
    let t = Instant::now();
    let out = r.call_batch(&reqs).await;
    assert!(
        out.iter().all(|o| matches!(o, Err(Error::Timeout { .. }))),
        "{out:?}"
    );
    assert_eq!(t.elapsed(), Duration::from_millis(1500));
}

// ---- 5. errors counted as what they are ----

#[tokio::test(start_paused = true)]
async fn refusals_are_not_ai_failures_and_failed_calls_are_recorded() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let metrics = Arc::new(InMemoryMetrics::new());
    let health = HealthMonitor::new(metrics.clone());
    let agent = Scripted::new("a", 10, Mode::Answer);
    let p = AiPipeline::builder(repo.clone())
        .backend(agent.clone())
        .budgets(Budgets::unlimited())
        .metrics(metrics.clone() as Arc<dyn MetricsSink>)
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap(); // free users: bursts of 5
    let mut refused = 0;
    for i in 0..25 {
        match p
            .complete(
                AiRequest::new(u, AgentType::LearningCoach, format!("q{i}")),
                SubscriptionTier::Free,
            )
            .await
        {
            Ok(_) => {}
            Err(Error::RateLimited { .. }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(refused, 20);
    let s = metrics.snapshot();
    assert_eq!((s.ai.count, s.ai_refused), (5, 20));
    assert_eq!(s.ai.error_rate, 0.0);
    let report = health.evaluate().await;
    let c = report
        .checks
        .iter()
        .find(|c| c.check == Check::AiErrorRate)
        .unwrap();
    assert_eq!(c.status, Status::Healthy);

    // A failed backend call is recorded, with success = false and no cost.
    agent.set(Mode::Fail);
    tokio::time::advance(Duration::from_secs(60)).await;
    let e = p
        .complete(
            AiRequest::new(u, AgentType::LearningCoach, "this one fails"),
            SubscriptionTier::Free,
        )
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    let s = metrics.snapshot();
    assert_eq!((s.ai.count, s.ai_refused), (6, 20));
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 6);
    let failed: Vec<_> = rows.iter().filter(|r| !r.success).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].cost_nanos, failed[0].input_tokens), (0, 0));
}

// ---- 6. bounded and validated ----

#[test]
fn the_ledger_forgets_past_days_over_a_month_of_100000_users() {
    let day = Arc::new(AtomicU64::new(0));
    let d = day.clone();
    let start = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let ledger = Ledger::with_clock(Budgets::unlimited(), move || {
        start + chrono::Days::new(d.load(SeqCst))
    });
    let users: Vec<UserId> = (0..100_000).map(|_| UserId::new()).collect();
    // A third of the users are active each day.
    let active = |t: u64| users.iter().skip((t % 3) as usize).step_by(3);
    for today in 0..30u64 {
        day.store(today, SeqCst);
        for u in active(today) {
            let r = ledger.reserve(*u, SubscriptionTier::Free, 1_000).unwrap();
            ledger.settle(r, AgentType::LearningCoach, 7);
        }
        // Today's and yesterday's lines and per-user totals, two global days and two
        // (empty) global reservation days: nothing older.
        let days = if today == 0 {
            vec![0]
        } else {
            vec![today - 1, today]
        };
        let held: usize = days.iter().map(|&t| 2 * active(t).count() + 2).sum();
        assert_eq!(ledger.tracked(), held, "day {today}");
    }
    let total = ledger.total();
    let expected: u64 = (0..30u64).map(|t| active(t).count() as u64).sum();
    assert_eq!((total.requests, total.cost_nanos), (expected, 7 * expected));
    let yesterday = start + chrono::Days::new(28);
    let old = start + chrono::Days::new(27);
    let someone = users[(28 % 3) as usize];
    assert_eq!(
        ledger
            .line(someone, AgentType::LearningCoach, yesterday)
            .cost_nanos,
        7
    );
    let someone_older = users[(27 % 3) as usize];
    assert_eq!(
        ledger
            .line(someone_older, AgentType::LearningCoach, old)
            .requests,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn settings_that_would_misbehave_are_refused_naming_the_field() {
    let repo = memory();
    let a = || Arc::new(SimulatedAgent::instant("a")) as Arc<dyn AiAgent>;
    let field = |r: kasama::Result<AiPipeline>| match r {
        Err(Error::InvalidInput { field, .. }) => field.to_string(),
        other => panic!("accepted: {other:?}"),
    };
    let routing = |f: fn(&mut RouterConfig)| {
        let mut c = RouterConfig::default();
        f(&mut c);
        AiPipeline::builder(repo.clone())
            .backend(a())
            .routing(c)
            .build()
    };
    assert_eq!(
        field(routing(|c| c.ewma_decay = Duration::ZERO)),
        "routing.ewma_decay"
    );
    assert_eq!(
        field(routing(|c| c.deadline = Duration::ZERO)),
        "routing.deadline"
    );
    assert_eq!(
        field(routing(|c| c.backoff_min = Duration::ZERO)),
        "routing.backoff_min"
    );
    assert_eq!(
        field(routing(|c| c.backoff_max = Duration::from_millis(1))),
        "routing.backoff_max"
    );
    assert_eq!(
        field(routing(|c| c.max_attempts = 0)),
        "routing.max_attempts"
    );
    assert_eq!(
        field(routing(|c| c.breaker.error_rate = f64::NAN)),
        "breaker.error_rate"
    );
    assert_eq!(
        field(routing(|c| c.breaker.error_rate = 0.0)),
        "breaker.error_rate"
    );
    assert_eq!(
        field(routing(|c| c.breaker.window = Duration::ZERO)),
        "breaker.window"
    );
    assert_eq!(
        field(routing(|c| c.breaker.cool_down = Duration::ZERO)),
        "breaker.cool_down"
    );
    assert_eq!(
        field(routing(|c| c.breaker.consecutive_failures = 0)),
        "breaker.consecutive_failures"
    );
    assert_eq!(
        field(routing(|c| c.breaker.min_calls = 0)),
        "breaker.min_calls"
    );
    let batching = |c: BatchConfig| {
        AiPipeline::builder(repo.clone())
            .backend(a())
            .batching(c)
            .build()
    };
    assert_eq!(
        field(batching(BatchConfig {
            window: Duration::ZERO,
            max_batch: 0,
            ..Default::default()
        })),
        "batch.max_batch"
    );
    assert_eq!(
        field(batching(BatchConfig {
            max_queue: 0,
            ..Default::default()
        })),
        "batch.max_queue"
    );
    let recording = |c: RecorderConfig| {
        AiPipeline::builder(repo.clone())
            .backend(a())
            .recording(c)
            .build()
    };
    assert_eq!(
        field(recording(RecorderConfig {
            batch: 0,
            interval: Duration::ZERO,
            ..Default::default()
        })),
        "recording.batch"
    );
    assert_eq!(
        field(recording(RecorderConfig {
            interval: Duration::ZERO,
            ..Default::default()
        })),
        "recording.interval"
    );
    assert_eq!(
        field(recording(RecorderConfig {
            attempts: 0,
            ..Default::default()
        })),
        "recording.attempts"
    );
    assert_eq!(
        field(recording(RecorderConfig {
            capacity: 0,
            ..Default::default()
        })),
        "recording.capacity"
    );
    assert_eq!(
        field(
            AiPipeline::builder(repo.clone())
                .backend(a())
                .cache_timeout(Duration::ZERO)
                .build()
        ),
        "cache_timeout"
    );
    assert!(
        AiPipeline::builder(repo.clone())
            .backend(a())
            .build()
            .is_ok()
    );
}

#[test]
fn dated_model_names_find_their_price_and_costs_never_wrap() {
    let mini = Price {
        input_micros_per_1k: 150,
        output_micros_per_1k: 600,
    };
    let four = Price {
        input_micros_per_1k: 2_500,
        output_micros_per_1k: 10_000,
    };
    let t = PriceTable::default()
        .with("gpt-4o-mini", mini)
        .with("gpt-4o", four)
        .with("claude-3-5-sonnet", four)
        .with("gpt-4", four);
    assert_eq!(t.price("gpt-4o-mini-2024-07-18"), mini);
    assert_eq!(t.price("gpt-4o-2024-08-06"), four);
    assert_eq!(t.price("claude-3-5-sonnet-20241022"), four);
    assert_eq!(t.price("gpt-4-0613"), four);
    assert_eq!(t.price("gpt-4o-mini"), mini);
    assert_eq!(t.price("o1-preview"), t.default);
    assert_eq!(
        t.price("gpt-4o-mini-tts"),
        t.default,
        "not a date: no match"
    );

    let huge = Price {
        input_micros_per_1k: u64::MAX / 2,
        output_micros_per_1k: u64::MAX / 2,
    };
    let u = Usage {
        input_tokens: u32::MAX,
        output_tokens: u32::MAX,
    };
    assert_eq!(huge.checked_cost_nanos(u), None);
    assert_eq!(huge.cost_nanos(u), u64::MAX, "saturates, never wraps");
    assert_eq!(PRICE.checked_cost_nanos(u), Some(cost(u)));
}

#[tokio::test(start_paused = true)]
async fn an_absurd_price_saturates_instead_of_overflowing() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let huge = Price {
        input_micros_per_1k: u64::MAX / 4,
        output_micros_per_1k: u64::MAX / 4,
    };
    let p = builder(repo)
        .backend(Scripted::new("a", 10, Mode::Answer))
        .prices(PriceTable {
            default: huge,
            ..Default::default()
        })
        .build()
        .unwrap();
    let o = p
        .complete(
            AiRequest::new(u, AgentType::LearningCoach, "hi"),
            SubscriptionTier::Free,
        )
        .await
        .unwrap();
    assert_eq!(o.cost_nanos, u64::MAX);
    assert_eq!(p.ledger().total().cost_nanos, u64::MAX);
}

// ---- 7. a global refusal does not use up the user's allowance ----

#[tokio::test(start_paused = true)]
async fn a_global_refusal_leaves_the_users_allowance_alone() {
    let per_hour = |n: u32| Quota::per_hour(NonZeroU32::new(n).unwrap());
    let limits = RateLimits::new(RateLimitConfig {
        global_ai: Quota::per_minute(NonZeroU32::new(1).unwrap()),
        ai_per_user: kasama::pipeline::TierQuotas {
            free: per_hour(2).allow_burst(NonZeroU32::new(2).unwrap()),
            premium: per_hour(2),
            enterprise: per_hour(2),
        },
        ..RateLimitConfig::default()
    });
    let (a, b) = (UserId::new(), UserId::new());
    limits.check_ai(a, SubscriptionTier::Free).unwrap();
    for _ in 0..5 {
        let e = limits.check_ai(a, SubscriptionTier::Free).unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(60)));
    }
    tokio::time::advance(Duration::from_secs(60)).await;
    // `a` still has the second cell of its burst.
    limits.check_ai(a, SubscriptionTier::Free).unwrap();
    // And a user refused by their own limit does not use up everyone's allowance.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(matches!(
        limits.check_ai(a, SubscriptionTier::Free),
        Err(Error::RateLimited { retry_after }) if retry_after > Duration::from_secs(60)
    ));
    limits.check_ai(b, SubscriptionTier::Free).unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_calls_whose_callers_went_away() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Scripted::new("a", 500, Mode::Answer);
    let p = builder(repo.clone())
        .backend(agent.clone())
        .build()
        .unwrap();
    let r = AiRequest::new(u, AgentType::LearningCoach, "anyone there?");
    assert!(
        tokio::time::timeout(
            Duration::from_millis(200),
            p.complete(r, SubscriptionTier::Free)
        )
        .await
        .is_err()
    );
    // Shut down while the call is still in flight: it is settled and written first.
    let s = p.shutdown().await.unwrap();
    assert_eq!(s.written, 1);
    assert_eq!(p.ledger().user_today(u), cost(ONE_CALL));
    assert_eq!(rows(&repo, u).await[0].cost_nanos, cost(ONE_CALL) as i64);
}
