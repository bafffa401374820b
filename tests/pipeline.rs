//! The AI pipeline end to end (tokio's paused clock where time matters): coalescing,
//! personal scopes, breakers and failover, budgets, rate limits, bounded queues,
//! priorities, and exact recording of every interaction.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use kasama::agent::{AiAgent, AiRequest, AiResponse, SimulatedAgent};
use kasama::metrics::CacheTier;
use kasama::pipeline::{
    AiPipeline, BatchConfig, BreakerState, Budgets, Price, PriceTable, RateLimitConfig,
    RecorderConfig,
};
use kasama::prelude::*;
use kasama::semantic::{HashingEmbedder, SemanticCache};
use tokio::time::Instant;

fn sim(name: &str, latency_ms: u64, failure_rate: f64) -> Arc<SimulatedAgent> {
    let l = Duration::from_millis(latency_ms);
    Arc::new(
        SimulatedAgent::builder(name)
            .latency(l, l * 2)
            .failure_rate(failure_rate)
            .build()
            .unwrap(),
    )
}

async fn users(repo: &Arc<dyn Repository>, n: usize) -> Vec<UserId> {
    let mut v = Vec::new();
    for i in 0..n {
        let u = UserId::new();
        repo.create_profile(
            Actor::Service,
            NewProfile::new(u, format!("u{i}-{u}@example.com"), format!("U{i}")),
        )
        .await
        .unwrap();
        v.push(u);
    }
    v
}

/// A pipeline builder whose rate limits and budgets never bite.
fn relaxed(repo: Arc<dyn Repository>) -> kasama::pipeline::AiPipelineBuilder {
    AiPipeline::builder(repo)
        .rate_limits(RateLimitConfig::unlimited())
        .budgets(Budgets::unlimited())
}

fn memory() -> Arc<dyn Repository> {
    Arc::new(InMemoryRepository::new())
}

#[tokio::test(start_paused = true)]
async fn a_hundred_identical_concurrent_requests_make_one_backend_call() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = sim("a", 300, 0.0);
    let p = Arc::new(
        relaxed(repo.clone())
            .backend(agent.clone())
            .build()
            .unwrap(),
    );
    let req = AiRequest::new(u, AgentType::LearningCoach, "How do I listen better?");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (p, r) = (p.clone(), req.clone());
            tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await })
        })
        .collect();
    let mut outputs = Vec::new();
    for t in tasks {
        outputs.push(t.await.unwrap().unwrap().response.output);
    }
    assert_eq!(agent.calls(), 1);
    assert!(outputs.iter().all(|o| *o == outputs[0]));
    let s = p.batch_stats();
    assert_eq!(
        (
            s.logical_requests,
            s.distinct_requests,
            s.coalesced,
            s.backend_calls
        ),
        (100, 1, 99, 1)
    );
    assert_eq!(p.shutdown().await.unwrap().written, 100);
}

#[tokio::test(start_paused = true)]
async fn a_personal_agent_never_answers_one_user_with_anothers_call() {
    let repo = memory();
    let us = users(&repo, 2).await;
    let agent = sim("a", 50, 0.0);
    let cache = Arc::new(
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .build()
            .unwrap(),
    );
    let p = AiPipeline::builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache)
        .rate_limits(RateLimitConfig::unlimited())
        .build()
        .unwrap();
    let q = |u| {
        AiRequest::new(
            u,
            AgentType::InsightGenerator,
            "What patterns do you see in my week?",
        )
    };
    let a = p.complete(q(us[0]), SubscriptionTier::Free).await.unwrap();
    let b = p.complete(q(us[1]), SubscriptionTier::Free).await.unwrap();
    assert_eq!(agent.calls(), 2, "two users, two backend calls");
    assert_eq!((a.cache, b.cache), (CacheTier::Miss, CacheTier::Miss));
    let again = p.complete(q(us[0]), SubscriptionTier::Free).await.unwrap();
    assert_eq!(again.cache, CacheTier::Exact);
    assert_eq!(again.response.output, a.response.output);
    assert_eq!(again.cost_nanos, 0);
    assert_eq!(
        again.saved_nanos, a.cost_nanos,
        "a hit saves what the call cost"
    );
    assert_eq!(agent.calls(), 2);
    p.shutdown().await.unwrap();
    let rows = repo
        .list_interactions(Actor::Service, us[0], Page::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.iter().filter(|r| r.cache_hit).count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_backend_trips_its_breaker_and_traffic_moves_to_the_healthy_one() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let (bad, good) = (sim("bad", 20, 1.0), sim("good", 20, 0.0));
    let p = relaxed(repo)
        .backend(bad.clone())
        .backend(good.clone())
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap();
    let p = Arc::new(p);
    // Waves of concurrent requests: load on the healthy backend keeps the failing one
    // in the power-of-two draw until its breaker opens.
    for wave in 0..10 {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let p = p.clone();
                let r = AiRequest::new(
                    u,
                    AgentType::ProgressTracker,
                    format!("wave {wave} summary {i}"),
                );
                tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await })
            })
            .collect();
        for t in tasks {
            t.await
                .unwrap()
                .expect("every request is answered, by failover if need be");
        }
    }
    let st = p.backends();
    let (b, g) = (&st[0], &st[1]);
    assert_eq!(b.name, "bad");
    assert!(b.trips >= 1, "the failing backend's breaker opened: {b:?}");
    assert_eq!(g.breaker, BreakerState::Closed);
    assert_eq!(
        good.calls(),
        200,
        "every request ended on the healthy backend"
    );
    assert!(
        bad.calls() <= 20,
        "traffic moved away: {} calls to the failing one",
        bad.calls()
    );
    assert!(b.error_rate > g.error_rate);
}

#[tokio::test(start_paused = true)]
async fn with_every_backend_down_the_answer_is_circuit_open_at_once() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let p = relaxed(repo)
        .backend(sim("x", 10, 1.0))
        .backend(sim("y", 10, 1.0))
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap();
    let mut i = 0;
    loop {
        i += 1;
        let r = AiRequest::new(u, AgentType::LearningCoach, format!("q{i}"));
        let t = Instant::now();
        match p.complete(r, SubscriptionTier::Free).await {
            Err(Error::CircuitOpen { .. }) => {
                assert_eq!(t.elapsed(), Duration::ZERO, "refused without waiting");
                break;
            }
            Err(e) => assert!(e.is_retryable(), "{e:?}"),
            Ok(_) => panic!("a dead backend answered"),
        }
        assert!(i < 20, "breakers never opened");
    }
    assert!(p.backends().iter().all(|b| b.breaker == BreakerState::Open));
}

#[tokio::test(start_paused = true)]
async fn a_reached_budget_is_refused_before_any_backend_call() {
    let repo = memory();
    let us = users(&repo, 2).await;
    let agent = sim("a", 10, 0.0);
    let budgets = Budgets {
        free_user_daily: Some(40_000_000),
        ..Budgets::unlimited()
    };
    let p = AiPipeline::builder(repo)
        .backend(agent.clone())
        .rate_limits(RateLimitConfig::unlimited())
        .budgets(budgets)
        .build()
        .unwrap();
    let mut answered = 0;
    let refused = loop {
        let r = AiRequest::new(
            us[0],
            AgentType::LearningCoach,
            format!("question {answered}"),
        );
        let before = agent.calls();
        match p.complete(r, SubscriptionTier::Free).await {
            Ok(_) => answered += 1,
            Err(e) => {
                assert_eq!(
                    agent.calls(),
                    before,
                    "no backend call for a refused request"
                );
                break e;
            }
        }
        assert!(answered < 100);
    };
    assert!(
        matches!(refused, Error::BudgetExceeded { .. }),
        "{refused:?}"
    );
    assert!(answered >= 2, "{answered}");
    let spent = p.ledger().user_today(us[0]);
    assert!(
        spent >= 40_000_000,
        "refused only once the budget was reached: {spent}"
    );
    assert!(
        spent < 40_000_000 + 40_000_000,
        "passed by at most one call's cost: {spent}"
    );
    // Another user's budget is untouched.
    p.complete(
        AiRequest::new(us[1], AgentType::LearningCoach, "hello"),
        SubscriptionTier::Free,
    )
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_flood_from_one_free_user_is_limited_while_another_is_served() {
    let repo = memory();
    let us = users(&repo, 2).await;
    let p = AiPipeline::builder(repo)
        .backend(sim("a", 5, 0.0))
        .budgets(Budgets::unlimited())
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap(); // default limits: free users 10 a minute, bursts of 5
    let mut ok = 0;
    let mut wait = None;
    for i in 0..20 {
        match p
            .complete(
                AiRequest::new(us[0], AgentType::LearningCoach, format!("flood {i}")),
                SubscriptionTier::Free,
            )
            .await
        {
            Ok(_) => ok += 1,
            Err(Error::RateLimited { retry_after }) => {
                wait.get_or_insert(retry_after);
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 5, "the burst");
    let wait = wait.unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(6),
        "{wait:?}"
    );
    p.complete(
        AiRequest::new(us[1], AgentType::LearningCoach, "I am not flooding"),
        SubscriptionTier::Free,
    )
    .await
    .unwrap();
    tokio::time::advance(wait).await;
    p.complete(
        AiRequest::new(us[0], AgentType::LearningCoach, "after waiting"),
        SubscriptionTier::Free,
    )
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_bounded_and_priorities_decide_when_a_batch_leaves() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = sim("a", 1000, 0.0);
    let p = Arc::new(
        relaxed(repo)
            .backend(agent.clone())
            .batching(BatchConfig {
                max_queue: 2,
                ..Default::default()
            })
            .build()
            .unwrap(),
    );
    let spawn = |q: &str, prio: PriorityLevel| {
        let p = p.clone();
        let mut r = AiRequest::new(u, AgentType::LearningCoach, q.to_string());
        r.priority = prio;
        tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await })
    };
    let low = spawn("low one", PriorityLevel::Low);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        agent.calls(),
        0,
        "a low-priority request waits for the 150 ms window"
    );
    let high = spawn("urgent one", PriorityLevel::High);
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        agent.calls(),
        2,
        "a high-priority request flushes the batch at once"
    );
    // Two waiting: the third distinct request is refused at once.
    let t = Instant::now();
    let third = p
        .complete(
            AiRequest::new(u, AgentType::LearningCoach, "third"),
            SubscriptionTier::Free,
        )
        .await;
    assert!(matches!(third, Err(Error::Overloaded { .. })), "{third:?}");
    assert_eq!(t.elapsed(), Duration::ZERO);
    low.await.unwrap().unwrap();
    high.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_gives_up_does_not_break_the_batch_for_the_others() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = sim("a", 500, 0.0);
    let p = Arc::new(relaxed(repo).backend(agent.clone()).build().unwrap());
    let req = AiRequest::new(u, AgentType::LearningCoach, "same question");
    let mk = || {
        let (p, r) = (p.clone(), req.clone());
        tokio::spawn(async move { p.complete(r, SubscriptionTier::Free).await })
    };
    let (a, b, c) = (mk(), mk(), mk());
    tokio::time::sleep(Duration::from_millis(200)).await; // the batch is in flight
    b.abort();
    assert!(a.await.unwrap().is_ok());
    assert!(c.await.unwrap().is_ok());
    assert_eq!(agent.calls(), 1);
}

/// Wraps a backend and adds up the usage of every answer it gives: what its provider
/// would bill.
struct Billed {
    inner: SimulatedAgent,
    input: AtomicU64,
    output: AtomicU64,
}

impl Billed {
    fn new(inner: SimulatedAgent) -> Arc<Self> {
        Arc::new(Self {
            inner,
            input: AtomicU64::new(0),
            output: AtomicU64::new(0),
        })
    }

    fn bill(&self, r: &kasama::Result<AiResponse>) {
        if let Ok(r) = r {
            self.input
                .fetch_add(u64::from(r.usage.input_tokens), SeqCst);
            self.output
                .fetch_add(u64::from(r.usage.output_tokens), SeqCst);
        }
    }

    fn cost(&self, p: Price) -> u64 {
        self.input.load(SeqCst) * p.input_micros_per_1k
            + self.output.load(SeqCst) * p.output_micros_per_1k
    }
}

#[async_trait::async_trait]
impl AiAgent for Billed {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn complete(&self, req: &AiRequest) -> kasama::Result<AiResponse> {
        let r = self.inner.complete(req).await;
        self.bill(&r);
        r
    }
    async fn complete_batch(&self, reqs: &[AiRequest]) -> Vec<kasama::Result<AiResponse>> {
        let rs = self.inner.complete_batch(reqs).await;
        rs.iter().for_each(|r| self.bill(r));
        rs
    }
}

/// 10,000 requests — 30 % of them duplicates of a request in flight, 5 % from callers
/// that go away before the answer, one backend failing a third of its calls — make
/// 10,000 rows, and the money recorded (ledger, rows) is exactly what the backends'
/// own usage costs, to the nano-dollar.
async fn ten_thousand_recorded_exactly(repo: Arc<dyn Repository>) {
    let us = users(&repo, 100).await;
    let price = Price {
        input_micros_per_1k: 25_000,
        output_micros_per_1k: 75_000,
    };
    let latency = |b: kasama::agent::SimulatedAgentBuilder| {
        b.latency(Duration::from_millis(2), Duration::from_millis(4))
    };
    let steady = Billed::new(latency(SimulatedAgent::builder("steady")).build().unwrap());
    let flaky = Billed::new(
        latency(SimulatedAgent::builder("flaky"))
            .failure_rate(0.3)
            .seed(11)
            .build()
            .unwrap(),
    );
    let p = Arc::new(
        AiPipeline::builder(repo.clone())
            .backend(steady.clone())
            .backend(flaky.clone())
            .prices(PriceTable {
                default: price,
                ..Default::default()
            })
            .rate_limits(RateLimitConfig::unlimited())
            .budgets(Budgets::unlimited())
            .batching(BatchConfig {
                window: Duration::from_millis(5),
                ..Default::default()
            })
            .recording(RecorderConfig {
                batch: 500,
                ..Default::default()
            })
            .build()
            .unwrap(),
    );
    let workers: Vec<_> = us
        .iter()
        .map(|&u| {
            let p = p.clone();
            tokio::spawn(async move {
                let (mut answered, mut failed, mut gone) = (0u64, 0u64, 0u64);
                // 70 slots: 30 send a request and its duplicate side by side, 40 send
                // one — 100 requests; in 5 slots a caller goes away after 1 ms.
                for slot in 0..70usize {
                    let req = AiRequest::new(
                        u,
                        AgentType::ALL[slot % 5],
                        format!("question {slot} from {u}"),
                    );
                    let twin = slot % 7 < 3;
                    let drop_one = slot % 14 == 5;
                    let ask = |r: AiRequest, drop: bool| {
                        let p = p.clone();
                        async move {
                            let f = p.complete(r, SubscriptionTier::Free);
                            if drop {
                                tokio::time::timeout(Duration::from_millis(1), f).await.ok()
                            } else {
                                Some(f.await)
                            }
                        }
                    };
                    let outs = if twin {
                        let (a, b) = tokio::join!(ask(req.clone(), false), ask(req, drop_one));
                        vec![a, b]
                    } else {
                        vec![ask(req, drop_one).await]
                    };
                    for o in outs {
                        match o {
                            None => gone += 1,
                            Some(Ok(o)) => {
                                answered += 1;
                                let c = u64::from(o.response.usage.input_tokens) * 25_000
                                    + u64::from(o.response.usage.output_tokens) * 75_000;
                                if o.coalesced {
                                    assert_eq!((o.cost_nanos, o.saved_nanos), (0, c));
                                } else {
                                    assert_eq!((o.cost_nanos, o.saved_nanos), (c, 0));
                                }
                            }
                            Some(Err(e)) => {
                                assert!(e.is_retryable(), "{e:?}");
                                failed += 1;
                            }
                        }
                    }
                }
                (answered, failed, gone)
            })
        })
        .collect();
    let (mut answered, mut failed, mut gone) = (0, 0, 0);
    for w in workers {
        let (a, f, g) = w.await.unwrap();
        (answered, failed, gone) = (answered + a, failed + f, gone + g);
    }
    assert_eq!(answered + failed + gone, 10_000);
    assert!(gone >= 450, "{gone} callers went away");
    let stats = p.shutdown().await.unwrap();
    assert_eq!(stats.written, 10_000, "every request has its row");
    assert!(
        stats.writes <= 10_000 / 500 + 200,
        "{} writes",
        stats.writes
    );
    let billed = steady.cost(price) + flaky.cost(price);
    assert!(billed > 0 && flaky.cost(price) > 0);
    let spend = p.ledger().total();
    assert_eq!(
        spend.cost_nanos, billed,
        "the ledger holds what the backends billed"
    );
    assert!(spend.coalesced >= 2_000, "{} coalesced", spend.coalesced);
    assert_eq!(p.batch_stats().pending, 0);
    let day = DateRange {
        from: chrono::Utc::now() - chrono::Duration::hours(1),
        to: chrono::Utc::now() + chrono::Duration::hours(1),
    };
    let c = repo
        .ai_cost_analysis(Actor::Service, None, Some(day))
        .await
        .unwrap();
    assert_eq!(c.total_requests, 10_000);
    assert_eq!(
        c.total_cost_nanos as u64, billed,
        "the rows hold what the backends billed"
    );
    assert_eq!(c.successful_requests as u64, spend.requests);
    assert!(c.successful_requests as u64 >= answered);
    assert!((c.total_requests - c.successful_requests) as u64 >= failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_are_recorded_exactly_in_memory() {
    ten_thousand_recorded_exactly(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_are_recorded_exactly_in_postgres() {
    let Some(db) = common::pg().await else { return };
    ten_thousand_recorded_exactly(Arc::new(db.repo.clone())).await;
    db.finish().await;
}
