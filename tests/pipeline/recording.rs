//! Exact recording: 10,000 requests (duplicates, callers that go away, a flaky
//! backend) make 10,000 rows whose money is what the backends' usage costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use kasama::agent::{AiAgent, AiRequest, AiResponse, SimulatedAgent};
use kasama::pipeline::{
    AiPipeline, BatchConfig, Budgets, Price, PriceTable, RateLimitConfig, RecorderConfig,
};
use kasama::prelude::*;

use crate::common::pipeline::{memory, users};

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
    let Some(db) = crate::common::pg().await else {
        return;
    };
    ten_thousand_recorded_exactly(Arc::new(db.repo.clone())).await;
    db.finish().await;
}
